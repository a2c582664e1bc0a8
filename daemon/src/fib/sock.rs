//! A raw NETLINK_ROUTE socket: the only place in the FIB writer that makes
//! system calls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

/// A bound NETLINK_ROUTE socket.
#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    port: u32,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setopt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and a c_int option value of the right size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl NlSocket {
    /// Opens and binds a socket with `buf` bytes of receive and send buffer
    /// (forced past `rmem_max` when we may, as root), capped ACKs (errors do
    /// not echo the request), extended ACKs (the kernel's error text) and
    /// strict checking (dump filters applied in the kernel).
    pub fn open(buf: usize, nonblocking: bool) -> io::Result<Self> {
        let mut ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        if nonblocking {
            ty |= libc::SOCK_NONBLOCK;
        }
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = check(unsafe { libc::socket(libc::AF_NETLINK, ty, libc::NETLINK_ROUTE) })?;
        // SAFETY: raw is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = buf.min(i32::MAX as usize) as libc::c_int;
        if setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
            setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, size)?;
        }
        if setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
            setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, size)?;
        }
        // Older kernels lack these; everything works without them, less
        // efficiently or with less detail.
        let _ = setopt(raw, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let _ = setopt(raw, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = setopt(raw, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
        // SAFETY: zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: sa and len describe a sockaddr_nl.
        check(unsafe {
            libc::bind(
                raw,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                len,
            )
        })?;
        // SAFETY: as above, written by the kernel.
        check(unsafe {
            libc::getsockname(
                raw,
                &mut sa as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                &mut len,
            )
        })?;
        Ok(Self {
            fd,
            port: sa.nl_pid,
        })
    }

    /// Our port id: the `nlmsg_pid` of notifications our requests caused.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Joins a multicast group (RTNLGRP_*).
    pub fn join(&self, group: u32) -> io::Result<()> {
        setopt(
            self.fd.as_raw_fd(),
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            group as libc::c_int,
        )
    }

    /// Sends one datagram to the kernel (all of it: netlink datagrams are
    /// never split).
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: buf and sa are valid for the call.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    0,
                    &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one datagram into `buf` (resized to it). ENOBUFS means the
    /// kernel dropped messages for lack of receive buffer.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let cap = buf.capacity().max(1 << 16);
        buf.clear();
        buf.reserve(cap);
        loop {
            // SAFETY: the spare capacity of buf is writable for cap bytes.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.capacity(),
                    0,
                )
            };
            if r >= 0 {
                // SAFETY: the kernel wrote r bytes.
                unsafe { buf.set_len(r as usize) };
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
