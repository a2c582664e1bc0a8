//! The kernel's own limit: the same prefixes written by a minimal batched
//! netlink loop (RTM_NEWROUTE create|replace, many per datagram, one ACK
//! per datagram), in a fresh namespace, then deleted the same way. No RIB,
//! no BGP: what any daemon's FIB rate is a fraction of.

use anyhow::{bail, Result};
use petrel_bgp::wire::Prefix;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// Protocol number of the routes (petrel's default, so they read alike).
const PROTO: u8 = 202;
/// Datagram size, as petrel's FIB writer's default.
const BATCH: usize = 64 << 10;

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

fn rta(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// One RTM_NEWROUTE (create|replace) or RTM_DELROUTE.
pub fn put(buf: &mut Vec<u8>, seq: u32, p: &Prefix, gw: IpAddr, delete: bool, ack: bool) {
    let at = buf.len();
    let (ty, mut flags): (u16, u16) = if delete { (25, 0x1) } else { (24, 0x501) };
    if ack {
        flags |= 0x4;
    }
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    let family = if p.addr().is_ipv6() { 10 } else { 2 };
    // rtmsg: family, dst_len, src_len, tos, table main, protocol, scope
    // universe, type unicast, flags.
    buf.extend_from_slice(&[family, p.len(), 0, 0, 254, PROTO, 0, 1, 0, 0, 0, 0]);
    match p.addr() {
        IpAddr::V4(a) => rta(buf, 1, &a.octets()),
        IpAddr::V6(a) => rta(buf, 1, &a.octets()),
    }
    if !delete {
        match gw {
            IpAddr::V4(a) => rta(buf, 5, &a.octets()),
            IpAddr::V6(a) => rta(buf, 5, &a.octets()),
        }
    }
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
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

/// Writes (or deletes) every prefix; (seconds, errors). Call from a
/// thread inside the target namespace.
pub fn write_all(prefixes: &[Prefix], gw: IpAddr, delete: bool) -> Result<(f64, usize)> {
    let fd = open()?;
    let mut buf = Vec::with_capacity(BATCH + 256);
    let mut rx = vec![0u8; 1 << 20];
    let (mut seq, mut errors) = (0u32, 0);
    let start = Instant::now();
    // Sized so a datagram stays under BATCH (an IPv6 message is 64 octets).
    for chunk in prefixes.chunks(BATCH / 64) {
        buf.clear();
        for (k, p) in chunk.iter().enumerate() {
            seq += 1;
            put(&mut buf, seq, p, gw, delete, k + 1 == chunk.len());
        }
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

    #[test]
    fn messages_are_aligned_and_sized() {
        let mut b = Vec::new();
        let p4 = super::super::table::v4_prefix(3);
        let p6 = super::super::table::v6_prefix(3);
        put(&mut b, 1, &p4, "10.0.0.11".parse().unwrap(), false, false);
        assert_eq!(b.len(), 16 + 12 + 8 + 8);
        put(&mut b, 2, &p6, "fd00::11".parse().unwrap(), false, true);
        assert_eq!(b.len(), 44 + 16 + 12 + 20 + 20);
        // The second message's flags: create|replace|request with the ACK.
        assert_eq!(u16::from_ne_bytes([b[50], b[51]]), 0x505);
        assert!(b.len().is_multiple_of(4));
    }
}
