//! The kernel's own limit: the same prefixes written by a minimal batched
//! netlink loop (RTM_NEWROUTE create|replace, many per datagram, one ACK
//! per datagram), in a fresh namespace, then deleted the same way. No RIB,
//! no BGP: what any daemon's FIB rate is a fraction of. Two limits: routes
//! carrying their next hop (classic, RTA_GATEWAY), and routes pointing at
//! one kernel nexthop object (RTA_NH_ID, Linux 5.3), which the kernel
//! installs with less work (no next hop built per route), as petreld does
//! by default.
//!
//! The messages are petreld's own, octet for octet (built by its FIB
//! writer's `msg` module with the parameters petreld uses in the benchmark:
//! protocol 202, RTA_TABLE main, no RTAX_MTU — the pod MTU it detects, 1500,
//! is the MTU of the veth its next hops leave by, so it leaves the metric
//! out — in datagrams of its default size), so that the rate compared is
//! the kernel's for the same work (RTA_METRICS alone costs the kernel an
//! allocation and an RCU free per route: `fib-bench --mtu none` shows how
//! much).

use anyhow::{bail, Result};
use petrel_bgp::wire::Prefix;
use petrel_daemon::fib::msg::{self, Hop, RouteKind, RouteParams};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// Protocol number of the routes (petrel's default, so they read alike).
const PROTO: u8 = 202;

/// RTAX_MTU: none. petreld detects 1500 on the DUT's veth (no
/// encapsulation), the MTU of the link its next hops leave by, where it
/// writes no metric (daemon/src/fib/egress.rs).
const MTU: Option<u32> = None;
/// Datagram size, as petreld's FIB writer's default.
const BATCH: usize = 128 << 10;

fn open() -> Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for (opt, v) in [
        (libc::SO_RCVBUFFORCE, 8 << 20),
        (libc::SO_SNDBUFFORCE, 8 << 20),
    ] {
        // SAFETY: valid fd, c_int option.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const i32 as *const libc::c_void,
                4,
            )
        };
    }
    // NETLINK_CAP_ACK (10): errors without the echoed request.
    let one = 1i32;
    // SAFETY: as above.
    unsafe { libc::setsockopt(fd.as_raw_fd(), 270, 10, &one as *const i32 as *const _, 4) };
    Ok(fd)
}

/// The nexthop object of the nexthop-id limit.
pub const NEXTHOP_ID: u32 = 1;

/// One RTM_NEWROUTE (create|replace) or RTM_DELROUTE, as petreld's FIB
/// writer builds it; returns the message's offset. `nh`: the route points
/// at that nexthop object instead of carrying `gw`.
pub fn put(
    buf: &mut Vec<u8>,
    seq: u32,
    p: &Prefix,
    gw: IpAddr,
    delete: bool,
    mtu: Option<u32>,
    nh: Option<u32>,
) -> usize {
    let params = RouteParams {
        protocol: PROTO,
        table: petrel_daemon::fib::TABLE_MAIN,
        mtu,
        priority: None,
    };
    if delete {
        msg::put_del_route(buf, seq, &params, p, None)
    } else if let Some(id) = nh {
        msg::put_new_route(buf, seq, &params, p, RouteKind::Nexthop(id))
    } else {
        let hop = Hop {
            gateway: gw,
            ifindex: 0,
            onlink: false,
        };
        msg::put_new_route(buf, seq, &params, p, RouteKind::Unicast(&[hop]))
    }
}

/// Reads until the ACK of `last`; returns the errors counted.
fn wait(fd: &OwnedFd, rx: &mut [u8], last: u32) -> Result<usize> {
    let mut errors = 0;
    loop {
        // SAFETY: writable buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), rx.as_mut_ptr() as *mut _, rx.len(), 0) };
        if n < 0 {
            bail!("recv: {}", std::io::Error::last_os_error());
        }
        let mut b = &rx[..n as usize];
        while b.len() >= 20 {
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
            if len < 16 || len > b.len() {
                break;
            }
            if ty == 2 {
                if i32::from_ne_bytes([b[16], b[17], b[18], b[19]]) != 0 {
                    errors += 1;
                }
                if seq == last {
                    return Ok(errors);
                }
            }
            b = &b[((len + 3) & !3).min(b.len())..];
        }
    }
}

/// Creates (or, with `delete`, deletes) nexthop object [`NEXTHOP_ID`]: `gw`
/// out of link `ifindex`. Call from a thread inside the namespace.
pub fn nexthop(gw: IpAddr, ifindex: u32, delete: bool) -> Result<()> {
    let fd = open()?;
    let mut buf = Vec::new();
    let at = if delete {
        msg::put_del_nexthop(&mut buf, 1, NEXTHOP_ID)
    } else {
        let hop = Hop {
            gateway: gw,
            ifindex,
            onlink: false,
        };
        msg::put_new_nexthop(&mut buf, 1, PROTO, NEXTHOP_ID, msg::NexthopKind::Hop(hop))
    };
    msg::add_flags(&mut buf, at, msg::NLM_F_ACK);
    // SAFETY: a valid buffer; the kernel is the default destination.
    if unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr() as *const _, buf.len(), 0) } < 0 {
        bail!("send: {}", std::io::Error::last_os_error());
    }
    let mut rx = vec![0u8; 1 << 16];
    if wait(&fd, &mut rx, 1)? > 0 {
        bail!("the kernel refused nexthop object {NEXTHOP_ID} via {gw}");
    }
    Ok(())
}

/// Writes (or deletes) every prefix as petreld would; (seconds, errors).
/// `nh`: routes point at that nexthop object. Call from a thread inside
/// the target namespace.
pub fn write_all(
    prefixes: &[Prefix],
    gw: IpAddr,
    delete: bool,
    nh: Option<u32>,
) -> Result<(f64, usize)> {
    let fd = open()?;
    let mut buf = Vec::with_capacity(BATCH + 256);
    let mut rx = vec![0u8; 1 << 20];
    let (mut seq, mut errors) = (0u32, 0);
    let start = Instant::now();
    let mut rest = prefixes;
    while !rest.is_empty() {
        // As petreld: messages until the datagram reaches the size, the
        // last one asking for the ACK.
        buf.clear();
        let mut last = 0;
        while buf.len() < BATCH {
            let Some((p, more)) = rest.split_first() else {
                break;
            };
            seq += 1;
            last = put(&mut buf, seq, p, gw, delete, MTU, nh);
            rest = more;
        }
        msg::add_flags(&mut buf, last, msg::NLM_F_ACK);
        // SAFETY: a valid buffer; the kernel is the default destination.
        if unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr() as *const _, buf.len(), 0) } < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        errors += wait(&fd, &mut rx, seq)?;
    }
    Ok((start.elapsed().as_secs_f64(), errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// petreld's IPv4 message: header 16, rtmsg 12, RTA_DST 8, RTA_TABLE 8,
    /// RTA_METRICS 12, RTA_GATEWAY 8; an IPv6 one's RTA_DST and gateway are
    /// 20 each, and no MTU, no RTA_METRICS. A delete: no gateway, no MTU.
    #[test]
    fn messages_are_petrelds() {
        assert_eq!(BATCH, petrel_daemon::fib::FibConfig::default().batch_bytes);
        let mut b = Vec::new();
        let p4 = super::super::table::v4_prefix(3);
        let p6 = super::super::table::v6_prefix(3);
        put(
            &mut b,
            1,
            &p4,
            "10.0.0.11".parse().unwrap(),
            false,
            Some(1500),
            None,
        );
        assert_eq!(b.len(), 16 + 12 + 8 + 8 + 12 + 8);
        let at = put(
            &mut b,
            2,
            &p6,
            "fd00::11".parse().unwrap(),
            false,
            None,
            None,
        );
        assert_eq!(b.len() - at, 16 + 12 + 20 + 8 + 20);
        msg::add_flags(&mut b, at, msg::NLM_F_ACK);
        // The second message's flags: create|replace|request with the ACK.
        assert_eq!(u16::from_ne_bytes([b[at + 6], b[at + 7]]), 0x505);
        assert!(b.len().is_multiple_of(4));
        let at = put(
            &mut b,
            3,
            &p4,
            "10.0.0.11".parse().unwrap(),
            true,
            Some(1500),
            None,
        );
        assert_eq!(b.len() - at, 16 + 12 + 8 + 8);
        // By nexthop id: RTA_NH_ID (8) where RTA_GATEWAY was.
        let at = put(
            &mut b,
            4,
            &p4,
            "10.0.0.11".parse().unwrap(),
            false,
            None,
            Some(NEXTHOP_ID),
        );
        assert_eq!(b.len() - at, 16 + 12 + 8 + 8 + 8);
        assert_eq!(
            u16::from_ne_bytes([b[at + 46], b[at + 47]]),
            30,
            "RTA_NH_ID"
        );
    }
}
