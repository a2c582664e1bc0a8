//! Netlink notifications: route changes (to restore ours when someone else
//! deletes or changes them), link and address changes (to re-detect the
//! MTU).
//!
//! The queue is the socket's receive buffer, bounded by the kernel; when it
//! overflows the kernel drops notifications and the next read reports
//! [`Event::Overrun`], after which the daemon resynchronises
//! ([`super::Fib::resync`]) instead of trusting a partial stream.

use super::msg::{self, AddrInfo, KernelNexthop, KernelRoute, LinkInfo};
use super::sock::NlSocket;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// Nexthop objects (Linux 5.3; joined only where the kernel has it).
const RTNLGRP_NEXTHOP: u32 = 32;

/// The most events one call returns.
const MAX_EVENTS: usize = 4096;

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A route was added, replaced or deleted. `sender` is the netlink port
    /// of the process that asked (compare with [`super::Fib::port`]); 0 for
    /// the kernel's own changes.
    Route {
        deleted: bool,
        route: KernelRoute,
        sender: u32,
    },
    Link {
        deleted: bool,
        link: LinkInfo,
    },
    Addr {
        deleted: bool,
        addr: AddrInfo,
    },
    /// A nexthop object was added, replaced or deleted (by a request:
    /// the kernel removes a down link's objects without a notification).
    Nexthop {
        deleted: bool,
        nh: KernelNexthop,
        sender: u32,
    },
    /// Notifications were lost (receive buffer full).
    Overrun,
}

struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A socket subscribed to route, link and address notifications.
pub struct Monitor {
    // Declared first: deregistered before the socket closes.
    registered: Option<AsyncFd<Fd>>,
    sock: NlSocket,
    rx: Vec<u8>,
}

impl Monitor {
    /// Opens the socket and joins the groups; notifications queue from now.
    pub fn open() -> io::Result<Self> {
        let m = Self::open_groups(
            &[
                RTNLGRP_LINK,
                RTNLGRP_IPV4_IFADDR,
                RTNLGRP_IPV4_ROUTE,
                RTNLGRP_IPV6_IFADDR,
                RTNLGRP_IPV6_ROUTE,
            ],
            8 << 20,
        )?;
        // A kernel without nexthop objects refuses the group (EINVAL):
        // there is nothing of the kind to watch there.
        let _ = m.sock.join(RTNLGRP_NEXTHOP);
        Ok(m)
    }

    /// Link and address notifications only (MTU re-detection); a small
    /// buffer: an overrun only means "detect again".
    pub fn open_links() -> io::Result<Self> {
        Self::open_groups(
            &[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR],
            1 << 20,
        )
    }

    /// Drops, in the kernel, the notifications of changes that the netlink
    /// socket `port` asked for: the FIB writer's own installs. Without it a
    /// full table is copied back to this socket route by route and parsed
    /// only to be ignored (a classic BPF filter on `nlmsg_pid`; the kernel
    /// sends each route notification as a datagram of its own).
    pub fn ignore_sender(&self, port: u32) -> io::Result<()> {
        // BPF loads words in network byte order; nlmsg_pid (offset 12) is
        // in host order.
        let pid = u32::from_be_bytes(port.to_ne_bytes());
        let prog = [
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: 12,
            },
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: pid,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: u32::MAX,
            },
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: a valid socket, and a filter program that outlives the
        // call (the kernel copies it).
        let r = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &fprog as *const libc::sock_fprog as *const libc::c_void,
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn open_groups(groups: &[u32], buffer: usize) -> io::Result<Self> {
        let sock = NlSocket::open(buffer, true)?;
        for g in groups {
            sock.join(*g)?;
        }
        Ok(Self {
            registered: None,
            sock,
            rx: Vec::with_capacity(1 << 20),
        })
    }

    /// The events queued now, without waiting (empty when none).
    pub fn poll(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        while out.len() < MAX_EVENTS {
            match self.sock.recv(&mut self.rx) {
                Ok(()) => parse_into(&self.rx, &mut out),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(Event::Overrun),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Waits up to `timeout` for events (blocking; for a thread of its own
    /// or for tests). Empty when none came.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<Event>> {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        self.poll()
    }

    /// The next batch of events (never empty), for a tokio task. Must be
    /// called within a tokio runtime.
    pub async fn next(&mut self) -> io::Result<Vec<Event>> {
        if self.registered.is_none() {
            // SAFETY: the fd belongs to `self.sock`, which outlives the
            // registration (field order) and never changes its fd.
            let fd = unsafe {
                AsyncFd::register_with_interest(Fd(self.sock.as_raw_fd()), Interest::READABLE)
            };
            self.registered = Some(fd.map_err(|e| e.into_parts().1)?);
        }
        loop {
            let fd = self.registered.as_ref().ok_or(io::ErrorKind::Other)?;
            let mut guard = fd.readable().await?;
            guard.clear_ready();
            let ev = self.poll()?;
            if !ev.is_empty() {
                return Ok(ev);
            }
        }
    }
}

fn parse_into(buf: &[u8], out: &mut Vec<Event>) {
    for m in msg::messages(buf) {
        let deleted = matches!(
            m.ty,
            msg::RTM_DELROUTE | msg::RTM_DELLINK | msg::RTM_DELADDR | msg::RTM_DELNEXTHOP
        );
        let ev = match m.ty {
            msg::RTM_NEWROUTE | msg::RTM_DELROUTE => {
                msg::parse_route(m.payload).map(|route| Event::Route {
                    deleted,
                    route,
                    sender: m.port,
                })
            }
            msg::RTM_NEWLINK | msg::RTM_DELLINK => {
                msg::parse_link(m.payload).map(|link| Event::Link { deleted, link })
            }
            msg::RTM_NEWADDR | msg::RTM_DELADDR => {
                msg::parse_addr(m.payload).map(|addr| Event::Addr { deleted, addr })
            }
            msg::RTM_NEWNEXTHOP | msg::RTM_DELNEXTHOP => {
                msg::parse_nexthop(m.payload).map(|nh| Event::Nexthop {
                    deleted,
                    nh,
                    sender: m.port,
                })
            }
            msg::NLMSG_OVERRUN => Some(Event::Overrun),
            _ => None,
        };
        out.extend(ev);
    }
}

/// Interfaces and addresses, by netlink dump (for MTU detection).
pub fn links_and_addrs() -> io::Result<(Vec<LinkInfo>, Vec<AddrInfo>)> {
    let sock = NlSocket::open(1 << 20, false)?;
    let mut rx = Vec::with_capacity(1 << 20);
    let mut links = Vec::new();
    let mut addrs = Vec::new();
    for (seq, ty) in [(1, msg::RTM_GETLINK), (2, msg::RTM_GETADDR)] {
        let mut req = Vec::new();
        msg::put_dump(&mut req, seq, ty);
        sock.send(&req)?;
        'dump: loop {
            sock.recv(&mut rx)?;
            for m in msg::messages(&rx) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    msg::NLMSG_DONE => break 'dump,
                    msg::NLMSG_ERROR => {
                        let errno = msg::parse_error(&m).map(|e| e.errno).unwrap_or(libc::EIO);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(errno));
                        }
                        break 'dump;
                    }
                    msg::RTM_NEWLINK => links.extend(msg::parse_link(m.payload)),
                    msg::RTM_NEWADDR => addrs.extend(msg::parse_addr(m.payload)),
                    _ => {}
                }
            }
        }
    }
    Ok((links, addrs))
}

/// The interface of the main table's default route, IPv4 first, then IPv6
/// (for MTU detection when no node address selects an interface).
pub fn default_route_ifindex() -> io::Result<Option<u32>> {
    let sock = NlSocket::open(1 << 20, false)?;
    let mut rx = Vec::with_capacity(1 << 20);
    for (seq, v6) in [(1, false), (2, true)] {
        let mut req = Vec::new();
        // Protocol 0: the kernel ignores it in a non-strict dump; we filter.
        msg::put_route_dump(&mut req, seq, v6, 0, super::TABLE_MAIN);
        sock.send(&req)?;
        let mut found = None;
        'dump: loop {
            sock.recv(&mut rx)?;
            for m in msg::messages(&rx) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    msg::NLMSG_DONE | msg::NLMSG_ERROR => break 'dump,
                    msg::RTM_NEWROUTE => {
                        let Some(r) = msg::parse_route(m.payload) else {
                            continue;
                        };
                        if found.is_none() && r.prefix.is_empty() && r.table == super::TABLE_MAIN {
                            found = r.hops.iter().map(|h| h.ifindex).find(|i| *i != 0);
                        }
                    }
                    _ => {}
                }
            }
        }
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
