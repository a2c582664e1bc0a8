//! fib-bench: N IPv4 /24 routes into a fresh namespace's kernel FIB, through
//! petrel's `Fib` and through a minimal batched-netlink loop (the kernel's
//! own limit, issue 6), in one run; then the same routes withdrawn. A third
//! writer, `rawnh`, is the same loop with every route pointing at one kernel
//! nexthop object (RTA_NH_ID, issue 17): the kernel's limit when it need not
//! build a next hop per route. A fourth, `nhdel`, installs as `rawnh` does
//! and withdraws by deleting the nexthop object alone (one RTM_DELNEXTHOP:
//! the kernel removes every route using it), the way petreld's `Fib`
//! removes a dead next hop's routes.
//!
//! ```text
//! fib-bench [--routes N] [--chunk C] [--batch-bytes B] [--mtu M|none] [--listener]
//!           [--nexthop-objects] [--monitor] [--order sequential|scattered|window:W] [--repeat K] [--json]
//! ```
//!
//! `--order`: the order every writer installs and withdraws the routes in:
//! `sequential` (the default: address order, as a table arrives and as
//! petreld's RIB sweeps a peer's routes) or `scattered` (route `i` is the
//! `i·s mod N`-th, `s` ≈ 0.7·N and coprime to N: consecutive writes land far
//! apart). Linux's LC-trie does far less rebalancing in the second
//! (docs/benchmarks/history.md, "the kernel's cost depends on the order").
//! `window:W` scatters only within each run of `W` consecutive routes, as
//! a writer could that reorders a backlog of `W` (it gains nothing for
//! installs: history.md, sixth round).
//!
//! `--nexthop-objects` has `Fib` use kernel nexthop objects (`[fib]
//! nexthop_objects = "auto"`). `--monitor` opens petreld's own netlink
//! monitor beside `Fib`, filtering out `Fib`'s notifications as petreld
//! does (the kernel still copies each to the socket and runs the filter,
//! in the writer's `sendmsg`): what petreld's listener costs its writer.
//!
//! `--chunk` is how many Loc-RIB changes one `Fib::apply` call gets (the
//! speaker's batch); `--batch-bytes` the netlink datagram size of both
//! writers; `--mtu` the RTAX_MTU of both (1450 by default; `none`: no
//! RTA_METRICS, whose kernel cost this shows); `--listener` has a thread in
//! the namespace read every IPv4 route notification meanwhile, as
//! petrel-bench's FIB watcher does (the kernel builds and delivers them in
//! the writer's `sendmsg`). Needs root (network namespaces). Every route is inside a
//! namespace the run creates; they go with it.

use anyhow::{bail, Context, Result};
use petrel_bgp::rib::{AttrSet, FibChange, Via};
use petrel_bgp::wire::attr::mp::NextHop;
use petrel_bgp::wire::{PathAttributes, Prefix};
use petrel_daemon::fib::{Fib, FibConfig, Monitor, NexthopObjects};
use petrel_tests::lab::{self, Lab, Netns};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

const PROTO: u8 = 202;
const MTU: Option<u32> = Some(1450);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The raw loop's nexthop object.
const NEXTHOP_ID: u32 = 1_000_000;

struct Args {
    routes: u32,
    chunk: usize,
    batch_bytes: usize,
    mtu: Option<u32>,
    listener: bool,
    nexthop_objects: bool,
    monitor: bool,
    scattered: bool,
    /// Scatter only within windows of this many consecutive routes.
    window: u32,
    repeat: usize,
    json: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        routes: 1_000_000,
        chunk: 4096,
        batch_bytes: FibConfig::default().batch_bytes,
        mtu: MTU,
        listener: false,
        nexthop_objects: false,
        monitor: false,
        scattered: false,
        window: 0,
        repeat: 1,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--routes" => a.routes = val()?.parse()?,
            "--chunk" => a.chunk = val()?.parse()?,
            "--batch-bytes" => a.batch_bytes = val()?.parse()?,
            "--mtu" => {
                a.mtu = match val()?.as_str() {
                    "none" => None,
                    m => Some(m.parse()?),
                }
            }
            "--repeat" => a.repeat = val()?.parse()?,
            "--json" => a.json = true,
            "--listener" => a.listener = true,
            "--nexthop-objects" => a.nexthop_objects = true,
            "--monitor" => a.monitor = true,
            "--order" => {
                a.scattered = match val()?.as_str() {
                    "sequential" => false,
                    "scattered" => true,
                    w if w.starts_with("window:") => {
                        a.window = w["window:".len()..].parse()?;
                        true
                    }
                    o => bail!("--order {o}: sequential, scattered or window:W"),
                }
            }
            _ => bail!(
                "usage: fib-bench [--routes N] [--chunk C] [--batch-bytes B] [--mtu M|none] [--listener] [--nexthop-objects] [--monitor] [--order sequential|scattered|window:W] [--repeat K] [--json]"
            ),
        }
    }
    if a.routes == 0 || a.routes > 1 << 22 {
        bail!("--routes must be 1..=4194304");
    }
    Ok(a)
}

/// The i-th /24 from 16.0.0.0 on.
fn prefix_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from((16u32 << 24) + (i << 8))
}

/// User and system CPU seconds of the calling thread.
fn thread_cpu() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

/// Runs `f`, returning its result, wall seconds and the thread's user and
/// system CPU seconds (system: the kernel's work for this thread, less
/// sensitive than wall time to other load on the machine).
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64, (f64, f64))> {
    let (u0, s0) = thread_cpu();
    let t = Instant::now();
    let r = f()?;
    let wall = t.elapsed().as_secs_f64();
    let (u1, s1) = thread_cpu();
    Ok((r, wall, (u1 - u0, s1 - s0)))
}

/// A thread reading the namespace's IPv4 route notifications until dropped
/// (call from inside the namespace: the thread inherits it).
struct Listener {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Octets read, when the thread has ended.
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Listener {
    fn start(on: bool) -> Result<Option<Listener>> {
        if !on {
            return Ok(None);
        }
        let sock = raw::Sock::open()?;
        sock.join_ipv4_routes()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rx, mut read) = (vec![0u8; 1 << 20], 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                read += sock.recv_some(&mut rx);
            }
            read
        });
        Ok(Some(Listener {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if let Ok(n) = t.join() {
                eprintln!("listener: {n} octets of route notifications read");
            }
        }
    }
}

fn namespace(lab: &Lab, name: &str) -> Result<Netns> {
    let ns = lab.netns(name)?;
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"])?;
    ns.ip(&["link", "set", "d0p", "up"])?;
    ns.add_addr("d0", "192.0.2.1/24")?;
    ns.ip(&["link", "set", "d0", "up"])?;
    Ok(ns)
}

fn count_routes(ns: &Netns) -> Result<usize> {
    let out = ns.exec("sh", &["-c", "ip -4 route show proto 202 | wc -l"])?;
    Ok(out.trim().parse()?)
}

/// The minimal batched writer: one socket, messages appended until the
/// datagram is full, NLM_F_ACK on the last one, one recv up to that ACK.
mod raw {
    use super::*;

    pub struct Sock(OwnedFd);

    fn opt(fd: i32, level: i32, name: i32, v: i32) {
        // SAFETY: valid fd, c_int option.
        unsafe { libc::setsockopt(fd, level, name, &v as *const i32 as *const libc::c_void, 4) };
    }

    impl Sock {
        pub fn open() -> Result<Sock> {
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
            // SAFETY: fresh fd.
            let s = Sock(unsafe { OwnedFd::from_raw_fd(fd) });
            opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
            opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
            opt(fd, 270, 10, 1); // NETLINK_CAP_ACK
            Ok(s)
        }

        /// Binds to RTNLGRP_IPV4_ROUTE, with a 100 ms receive timeout so that
        /// a reader can notice it should stop.
        pub fn join_ipv4_routes(&self) -> Result<()> {
            let fd = self.0.as_raw_fd();
            // SAFETY: zeroed sockaddr_nl is valid; groups: RTMGRP_IPV4_ROUTE.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            sa.nl_family = libc::AF_NETLINK as u16;
            sa.nl_groups = 0x40;
            // SAFETY: valid fd and address.
            let r = unsafe {
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r < 0 {
                bail!("bind: {}", std::io::Error::last_os_error());
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: valid fd, a timeval option of its size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const libc::timeval as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            if r < 0 {
                bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
            }
            Ok(())
        }

        /// One datagram's octets, or 0 on a timeout (or ENOBUFS: the
        /// reader fell behind).
        pub fn recv_some(&self, rx: &mut [u8]) -> usize {
            // SAFETY: rx is writable.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    rx.as_mut_ptr() as *mut libc::c_void,
                    rx.len(),
                    0,
                )
            };
            n.max(0) as usize
        }

        pub fn send(&self, buf: &[u8]) -> Result<()> {
            // SAFETY: zeroed sockaddr_nl is the kernel's address.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            sa.nl_family = libc::AF_NETLINK as u16;
            // SAFETY: valid buffer and address.
            let r = unsafe {
                libc::sendto(
                    self.0.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    0,
                    &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r < 0 {
                bail!("sendto: {}", std::io::Error::last_os_error());
            }
            Ok(())
        }

        /// Reads until the ACK (or error) of `last`; counts errors.
        pub fn wait(&self, rx: &mut [u8], last: u32) -> Result<usize> {
            let mut errors = 0;
            loop {
                // SAFETY: rx is writable.
                let n = unsafe {
                    libc::recv(
                        self.0.as_raw_fd(),
                        rx.as_mut_ptr() as *mut libc::c_void,
                        rx.len(),
                        0,
                    )
                };
                if n < 0 {
                    bail!("recv: {}", std::io::Error::last_os_error());
                }
                let mut b = &rx[..n as usize];
                while b.len() >= 20 {
                    let len = u32::from_ne_bytes(b[0..4].try_into()?) as usize;
                    let ty = u16::from_ne_bytes([b[4], b[5]]);
                    let seq = u32::from_ne_bytes(b[8..12].try_into()?);
                    if len < 16 || len > b.len() {
                        break;
                    }
                    if ty == 2 {
                        let err = i32::from_ne_bytes(b[16..20].try_into()?);
                        if err != 0 {
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
    }

    fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
        buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(data);
    }

    /// RTM_NEWROUTE (create|replace) or RTM_DELROUTE of the i-th /24.
    /// With `nh`, the route points at that nexthop object instead of
    /// carrying its gateway.
    pub fn put(
        buf: &mut Vec<u8>,
        seq: u32,
        i: u32,
        delete: bool,
        ack: bool,
        mtu: Option<u32>,
        nh: Option<u32>,
    ) {
        let at = buf.len();
        let (ty, mut flags): (u16, u16) = if delete { (25, 1) } else { (24, 0x501) };
        if ack {
            flags |= 4;
        }
        let nh = if delete { None } else { nh };
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        let rtype = if delete { 0 } else { 1 };
        buf.extend_from_slice(&[2, 24, 0, 0, 254, PROTO, 0, rtype, 0, 0, 0, 0]);
        attr(buf, 1, &prefix_addr(i).octets());
        if !delete {
            match nh {
                // RTA_NH_ID
                Some(id) => attr(buf, 30, &id.to_ne_bytes()),
                None => attr(buf, 5, &GATEWAY.octets()),
            }
            if let Some(mtu) = mtu {
                buf.extend_from_slice(&12u16.to_ne_bytes());
                buf.extend_from_slice(&8u16.to_ne_bytes());
                attr(buf, 2, &mtu.to_ne_bytes());
            }
        }
        let len = (buf.len() - at) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// RTM_DELNEXTHOP (ACK) of object `id`.
    fn put_del_nexthop(buf: &mut Vec<u8>, seq: u32, id: u32) {
        let at = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&105u16.to_ne_bytes());
        buf.extend_from_slice(&0x5u16.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        attr(buf, 1, &id.to_ne_bytes()); // NHA_ID
        let len = (buf.len() - at) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Deletes nexthop object `id` (and with it every route using it).
    pub fn delete_object(id: u32) -> Result<usize> {
        let sock = Sock::open()?;
        let mut buf = Vec::new();
        let mut rx = vec![0u8; 1 << 16];
        put_del_nexthop(&mut buf, 1, id);
        sock.send(&buf)?;
        sock.wait(&mut rx, 1)
    }

    /// RTM_NEWNEXTHOP (create|replace, ACK) of object `id`: GATEWAY over
    /// interface `oif`.
    fn put_nexthop(buf: &mut Vec<u8>, seq: u32, id: u32, oif: u32) {
        let at = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&104u16.to_ne_bytes());
        buf.extend_from_slice(&0x505u16.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        // nhmsg: inet, scope, protocol, resvd, flags
        buf.extend_from_slice(&[2, 0, PROTO, 0, 0, 0, 0, 0]);
        attr(buf, 1, &id.to_ne_bytes()); // NHA_ID
        attr(buf, 6, &GATEWAY.octets()); // NHA_GATEWAY
        attr(buf, 5, &oif.to_ne_bytes()); // NHA_OIF
        let len = (buf.len() - at) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Writes routes 0..n; returns the errors. With `nh` (object id,
    /// interface), the object is created first and the routes use it.
    pub fn run(
        n: u32,
        batch_bytes: usize,
        delete: bool,
        mtu: Option<u32>,
        nh: Option<(u32, u32)>,
        scattered: bool,
    ) -> Result<usize> {
        let sock = Sock::open()?;
        let mut buf = Vec::with_capacity(batch_bytes + 256);
        let mut rx = vec![0u8; 1 << 20];
        let mut errors = 0;
        let mut seq = 0u32;
        if let (Some((id, oif)), false) = (nh, delete) {
            seq += 1;
            put_nexthop(&mut buf, seq, id, oif);
            sock.send(&buf)?;
            if sock.wait(&mut rx, seq)? != 0 {
                bail!("the kernel refused nexthop object {id}");
            }
        }
        let nh = nh.map(|(id, _)| id);
        let per = 64;
        let mut i = 0;
        while i < n {
            buf.clear();
            let end = (i + (batch_bytes / per).max(1) as u32).min(n);
            for j in i..end {
                seq += 1;
                put(
                    &mut buf,
                    seq,
                    super::order(j, n, scattered),
                    delete,
                    j + 1 == end,
                    mtu,
                    nh,
                );
            }
            sock.send(&buf)?;
            errors += sock.wait(&mut rx, seq)?;
            i = end;
        }
        Ok(errors)
    }
}

/// The index of the `i`-th route written: `i` in address order, or spread
/// by a stride coprime to `n` (a permutation of 0..n).
fn order(i: u32, n: u32, scattered: bool) -> u32 {
    let w = WINDOW.load(std::sync::atomic::Ordering::Relaxed);
    if scattered && w > 0 && w < n {
        let base = i / w * w;
        return base + order_all(i - base, w.min(n - base), true);
    }
    order_all(i, n, scattered)
}

/// `--order window:W`.
static WINDOW: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn order_all(i: u32, n: u32, scattered: bool) -> u32 {
    if !scattered || n < 3 {
        return i;
    }
    let mut s = (n as u64 * 7 / 10) | 1;
    while gcd(s, n as u64) != 1 {
        s += 2;
    }
    ((i as u64 * s) % n as u64) as u32
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn changes(n: u32, scattered: bool) -> (Vec<FibChange>, Vec<FibChange>) {
    let attrs = Arc::new(AttrSet::new(
        PathAttributes::default(),
        Some(NextHop::V4(GATEWAY)),
    ));
    let mut add = Vec::with_capacity(n as usize);
    let mut del = Vec::with_capacity(n as usize);
    for i in 0..n {
        let prefix = Prefix::V4 {
            addr: prefix_addr(order(i, n, scattered)),
            len: 24,
        };
        add.push(FibChange {
            prefix,
            via: Via::One(attrs.clone()),
        });
        del.push(FibChange {
            prefix,
            via: Via::Unreachable,
        });
    }
    (add, del)
}

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    install_s: f64,
    withdraw_s: f64,
    /// User CPU seconds of the writing thread (the writer's own cost; the
    /// kernel's work is system time).
    /// (user, system) CPU seconds.
    install_cpu: (f64, f64),
    withdraw_cpu: (f64, f64),
    errors: usize,
    in_fib: usize,
}

/// The raw loop; with `by_nexthop`, every route uses one nexthop object;
/// with `by_object` too, the withdrawal deletes that object instead of
/// the routes.
fn run_raw(lab: &Lab, a: &Args, by_nexthop: bool, by_object: bool) -> Result<Run> {
    let ns = namespace(lab, "raw")?;
    let (n, b, m, l, sc) = (a.routes, a.batch_bytes, a.mtu, a.listener, a.scattered);
    let (e1, install_s, install_cpu) = ns.enter(move || {
        let _l = Listener::start(l)?;
        // SAFETY: a NUL-terminated name.
        let oif = unsafe { libc::if_nametoindex(c"d0".as_ptr()) };
        let nh = by_nexthop.then_some((NEXTHOP_ID, oif));
        timed(|| raw::run(n, b, false, m, nh, sc))
    })?;
    let in_fib = count_routes(&ns)?;
    let (e2, withdraw_s, withdraw_cpu) = ns.enter(move || {
        let _l = Listener::start(l)?;
        if by_object {
            timed(|| raw::delete_object(NEXTHOP_ID))
        } else {
            timed(|| raw::run(n, b, true, m, None, sc))
        }
    })?;
    let left = count_routes(&ns)?;
    if left != 0 {
        bail!("{left} routes left in the FIB after the withdrawal");
    }
    Ok(Run {
        install_s,
        withdraw_s,
        install_cpu,
        withdraw_cpu,
        errors: e1 + e2,
        in_fib,
    })
}

fn run_fib(lab: &Lab, a: &Args) -> Result<Run> {
    let ns = namespace(lab, "fib")?;
    let a_nh = a.nexthop_objects;
    let (add, del) = changes(a.routes, a.scattered);
    let (chunk, bb, mtu, l) = (a.chunk.max(1), a.batch_bytes, a.mtu, a.listener);
    let with_monitor = a.monitor;
    let nexthop_objects = if a.nexthop_objects {
        NexthopObjects::Auto
    } else {
        NexthopObjects::Off
    };
    let ((fib, e1), install_s, install_cpu) = ns.enter(move || {
        let _l = Listener::start(l)?;
        let mut fib = Fib::open(FibConfig {
            mtu,
            batch_bytes: bb,
            nexthop_objects,
            ..FibConfig::default()
        })?;
        if a_nh && !fib.nexthop_objects() {
            bail!("--nexthop-objects: this kernel has no nexthop objects");
        }
        let monitor = if with_monitor {
            let m = Monitor::open()?;
            m.ignore_sender(fib.port())?;
            Some(m)
        } else {
            None
        };
        let r = timed(move || {
            let mut errors = 0;
            for c in add.chunks(chunk) {
                errors += fib.apply(c)?.errors.len();
            }
            Ok((fib, errors))
        });
        drop(monitor);
        r
    })?;
    let in_fib = count_routes(&ns)?;
    let (e2, withdraw_s, withdraw_cpu) = ns.enter(move || {
        let _l = Listener::start(l)?;
        let mut fib = fib;
        timed(move || {
            let mut errors = 0;
            for c in del.chunks(chunk) {
                errors += fib.apply(c)?.errors.len();
            }
            // As petreld's FIB task does when the burst is over.
            errors += fib.release_held(usize::MAX)?.errors.len();
            Ok(errors)
        })
    })?;
    let left = count_routes(&ns)?;
    if left != 0 {
        bail!("{left} routes left in the FIB after the withdrawal");
    }
    Ok(Run {
        install_s,
        withdraw_s,
        install_cpu,
        withdraw_cpu,
        errors: e1 + e2,
        in_fib,
    })
}

fn main() -> Result<()> {
    let a = args()?;
    WINDOW.store(a.window, std::sync::atomic::Ordering::Relaxed);
    if let Err(what) = lab::can_run(&[]) {
        bail!("fib-bench needs {what}");
    }
    let mut rows = Vec::new();
    for rep in 0..a.repeat {
        // Rotate which writer goes first.
        let mut order = ["raw", "rawnh", "nhdel", "fib"];
        order.rotate_left(rep % 4);
        for which in order {
            let lab = Lab::new("fib-bench")?;
            let r = match which {
                "raw" => run_raw(&lab, &a, false, false)?,
                "rawnh" => run_raw(&lab, &a, true, false)?,
                "nhdel" => run_raw(&lab, &a, true, true)?,
                _ => run_fib(&lab, &a)?,
            };
            if r.in_fib != a.routes as usize {
                eprintln!(
                    "warning: {which}: {} routes in the FIB, expected {}",
                    r.in_fib, a.routes
                );
            }
            rows.push((rep, which, r));
            drop(lab);
        }
    }
    let n = a.routes as f64;
    let best = |w: &str, f: fn(&Run) -> f64| {
        rows.iter()
            .filter(|(_, x, _)| *x == w)
            .map(|(_, _, r)| n / f(r))
            .fold(0.0, f64::max)
    };
    // Medians: the machine may be shared, and one lucky run is no limit.
    let median = |w: &str, f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|(_, x, _)| *x == w)
            .map(|(_, _, r)| n / f(r))
            .collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            k if k % 2 == 1 => v[k / 2],
            k => (v[k / 2 - 1] + v[k / 2]) / 2.0,
        }
    };
    let (raw_in, fib_in) = (best("raw", |r| r.install_s), best("fib", |r| r.install_s));
    let (raw_out, fib_out) = (best("raw", |r| r.withdraw_s), best("fib", |r| r.withdraw_s));
    let med_in = ["raw", "rawnh", "fib"].map(|w| median(w, |r| r.install_s));
    let med_out = ["raw", "rawnh", "fib", "nhdel"].map(|w| median(w, |r| r.withdraw_s));
    if a.json {
        let runs: Vec<_> = rows
            .iter()
            .map(|(rep, w, r)| {
                serde_json::json!({
                    "repeat": rep, "writer": w, "routes": a.routes,
                    "install_seconds": r.install_s, "withdraw_seconds": r.withdraw_s,
                    "install_routes_per_s": n / r.install_s,
                    "withdraw_routes_per_s": n / r.withdraw_s,
                    "install_user_cpu_seconds": r.install_cpu.0,
                    "install_system_cpu_seconds": r.install_cpu.1,
                    "withdraw_user_cpu_seconds": r.withdraw_cpu.0,
                    "withdraw_system_cpu_seconds": r.withdraw_cpu.1,
                    "errors": r.errors, "in_fib": r.in_fib,
                })
            })
            .collect();
        let out = serde_json::json!({
            "runs": runs,
            "best_install_ratio": fib_in / raw_in,
            "best_withdraw_ratio": fib_out / raw_out,
            "median_install_routes_per_s": {"raw": med_in[0], "rawnh": med_in[1], "fib": med_in[2]},
            "median_withdraw_routes_per_s": {"raw": med_out[0], "rawnh": med_out[1], "fib": med_out[2], "nhdel": med_out[3]},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:>3} {:>5} {:>9} {:>10} {:>12} {:>7} {:>7} {:>10} {:>12} {:>7} {:>7} {:>6}",
            "rep",
            "who",
            "routes",
            "install s",
            "install r/s",
            "user s",
            "sys s",
            "withdraw s",
            "withdraw r/s",
            "user s",
            "sys s",
            "errors"
        );
        for (rep, w, r) in &rows {
            println!(
                "{rep:>3} {w:>5} {:>9} {:>10.3} {:>12.0} {:>7.3} {:>7.3} {:>10.3} {:>12.0} {:>7.3} {:>7.3} {:>6}",
                r.in_fib,
                r.install_s,
                n / r.install_s,
                r.install_cpu.0,
                r.install_cpu.1,
                r.withdraw_s,
                n / r.withdraw_s,
                r.withdraw_cpu.0,
                r.withdraw_cpu.1,
                r.errors
            );
        }
        println!(
            "best: install fib/raw = {:.0}/{:.0} = {:.1}%; withdraw fib/raw = {:.0}/{:.0} = {:.1}%",
            fib_in,
            raw_in,
            100.0 * fib_in / raw_in,
            fib_out,
            raw_out,
            100.0 * fib_out / raw_out
        );
        println!(
            "median install r/s: raw {:.0}, rawnh {:.0} ({:.1}% of raw), fib {:.0}; withdraw r/s: raw {:.0}, rawnh {:.0}, fib {:.0}, nhdel {:.0}",
            med_in[0],
            med_in[1],
            100.0 * med_in[1] / med_in[0],
            med_in[2],
            med_out[0],
            med_out[1],
            med_out[2],
            med_out[3]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--order scattered` writes every route once, and consecutive writes
    /// land far apart.
    #[test]
    fn scattered_order_is_a_permutation() {
        for n in [1u32, 2, 10, 1000, 1_000_000] {
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let k = order(i, n, true) as usize;
                assert!(!seen[k], "n {n}: {k} twice");
                seen[k] = true;
            }
            assert!(seen.iter().all(|s| *s));
        }
        assert_eq!(order(1, 1000, true).abs_diff(order(0, 1000, true)), 701);
        assert_eq!(order(5, 1000, false), 5);
        // window:W: a permutation of each window (the last one shorter).
        WINDOW.store(300, std::sync::atomic::Ordering::Relaxed);
        let n = 1000;
        let mut seen = vec![false; n as usize];
        for i in 0..n {
            let k = order(i, n, true);
            assert_eq!(k / 300, i / 300, "{i} left its window");
            assert!(!seen[k as usize], "{k} twice");
            seen[k as usize] = true;
        }
        WINDOW.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}
