//! The thin tokio driver around the sans-IO [`Registry`]: UDP sockets, the
//! clock, and a bounded command channel.
//!
//! - Receive: one socket per listen address and encapsulation, on UDP 3784
//!   (RFC 5881 single-hop) and 4784 (RFC 5883 multi-hop), with
//!   `IP_RECVTTL` / `IPV6_RECVHOPLIMIT` so the registry can apply the TTL
//!   rules (RFC 5881 §5) to each packet.
//! - Send: one socket per session, bound to a source port in 49152–65535
//!   that no other session uses (RFC 5881 §4), TTL / Hop Limit 255.
//! - It runs on a thread of its own with a current-thread runtime: a
//!   full-table load keeps petreld's other workers busy for seconds, and a
//!   BFD packet sent late is a false failure at the peer.
//!
//! Channels, all bounded: commands (64; callers wait), received datagrams
//! from the socket readers (1024; a reader waits, and the kernel's socket
//! buffer holds or drops what comes meanwhile). A session's state reaches
//! its clients through a `watch` channel: the latest state, never a queue,
//! so a slow client never holds BFD back, and its flap counter shows a
//! Down that came and went between two looks.

use super::auth::AuthKind;
use super::packet::{Diag, State};
use super::registry::{PeerKey, Registry, RxError};
use super::session::{Event, SessionConfig, StateChange, Stats};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// RFC 5881 §4: "BFD Control packets MUST be transmitted in UDP packets
/// with destination port 3784".
pub const SINGLE_HOP_PORT: u16 = 3784;
/// RFC 5883 §5: destination port 4784.
pub const MULTIHOP_PORT: u16 = 4784;
/// RFC 5881 §4: "The source port MUST be in the range 49152 through 65535."
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

const COMMAND_QUEUE: usize = 64;
/// Authentication failures of a session are logged the first time and then
/// once in this many.
const AUTH_LOG_EVERY: u64 = 6000;
const DATAGRAM_QUEUE: usize = 1024;

/// Where the driver listens and sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdConfig {
    /// Addresses to listen on; the unspecified address of a family listens
    /// on all of its addresses.
    pub listen: Vec<IpAddr>,
    /// The ports, ours and the peers' (only tests change them).
    pub single_hop_port: u16,
    pub multihop_port: u16,
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            single_hop_port: SINGLE_HOP_PORT,
            multihop_port: MULTIHOP_PORT,
        }
    }
}

/// One session to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    pub key: PeerKey,
    /// Our source address; the kernel picks one if `None`.
    pub local: Option<IpAddr>,
    pub session: SessionConfig,
    /// Multi-hop only: the least TTL accepted (RFC 5883 §5 leaves it to
    /// configuration; single-hop always takes 255 only).
    pub min_ttl: u8,
}

impl SessionOptions {
    pub fn new(key: PeerKey, session: SessionConfig) -> Self {
        Self {
            key,
            local: None,
            session,
            min_ttl: 1,
        }
    }
}

/// What a client of a session (BGP) watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    pub local_diag: Diag,
    /// Transitions out of Up so far.
    pub flaps: u64,
    pub last_change: Option<StateChange>,
    /// The latest change out of Up: its remote state tells a remote
    /// AdminDown, which is not a failure (RFC 5882 §3.2), from a Down that is.
    pub last_down: Option<StateChange>,
}

/// A session as `petrelctl show bfd` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub key: PeerKey,
    pub local: Option<IpAddr>,
    pub source_port: u16,
    pub state: State,
    pub remote_state: State,
    pub local_diag: Diag,
    pub remote_diag: Diag,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// Configured.
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    /// Negotiated (§6.8.2, §6.8.4).
    pub tx_interval: Duration,
    pub remote_min_rx: Duration,
    pub remote_desired_min_tx: Duration,
    pub remote_detect_mult: u8,
    pub detection_time: Option<Duration>,
    pub uptime: Option<Duration>,
    pub stats: Stats,
    pub auth: Option<AuthKind>,
    pub control_plane_independent: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("BFD has stopped")]
    Stopped,
    #[error("cannot listen for BFD on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot open a BFD socket to {peer}: {source}")]
    Socket { peer: IpAddr, source: io::Error },
    #[error("no BFD session with {0:?}")]
    NoSuchSession(PeerKey),
    #[error("cannot start the BFD thread: {0}")]
    Thread(io::Error),
}

enum Command {
    Add(
        Box<SessionOptions>,
        oneshot::Sender<Result<watch::Receiver<SessionStatus>, BfdError>>,
    ),
    Remove(PeerKey, oneshot::Sender<Result<(), BfdError>>),
    AdminDown(PeerKey, bool, oneshot::Sender<Result<(), BfdError>>),
    Timers(
        PeerKey,
        Duration,
        Duration,
        u8,
        oneshot::Sender<Result<(), BfdError>>,
    ),
    Sessions(oneshot::Sender<Vec<SessionSnapshot>>),
    /// AdminDown to every peer, then stop.
    Shutdown(oneshot::Sender<()>),
}

/// The handle to the BFD thread. Cheap to clone; the thread stops when the
/// last handle is dropped or on [`Bfd::shutdown`].
#[derive(Clone)]
pub struct Bfd {
    tx: mpsc::Sender<Command>,
}

impl Bfd {
    /// Binds the listening sockets (so a bind error is reported here) and
    /// starts the BFD thread.
    pub fn start(cfg: BfdConfig) -> Result<Bfd, BfdError> {
        let mut listeners = Vec::new();
        for addr in &cfg.listen {
            for (port, multihop) in [(cfg.single_hop_port, false), (cfg.multihop_port, true)] {
                let sa = SocketAddr::new(*addr, port);
                let s = listen(sa).map_err(|source| BfdError::Listen { addr: sa, source })?;
                listeners.push((s, multihop));
            }
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let seed = random_u64();
        std::thread::Builder::new()
            .name("petrel-bfd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        warn!(error = %e, "cannot start the BFD runtime");
                        return;
                    }
                };
                rt.block_on(Driver::new(cfg, seed).run(listeners, rx));
            })
            .map_err(BfdError::Thread)?;
        Ok(Bfd { tx })
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, BfdError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(|_| BfdError::Stopped)?;
        rx.await.map_err(|_| BfdError::Stopped)
    }

    /// Starts a session (replacing one with the same key) and returns its status.
    pub async fn add_session(
        &self,
        opts: SessionOptions,
    ) -> Result<watch::Receiver<SessionStatus>, BfdError> {
        self.ask(|tx| Command::Add(Box::new(opts), tx)).await?
    }

    /// Ends a session; it tells the peer AdminDown first (RFC 5880 §6.8.16).
    pub async fn remove_session(&self, key: PeerKey) -> Result<(), BfdError> {
        self.ask(|tx| Command::Remove(key, tx)).await?
    }

    pub async fn set_admin_down(&self, key: PeerKey, down: bool) -> Result<(), BfdError> {
        self.ask(|tx| Command::AdminDown(key, down, tx)).await?
    }

    /// Changes a running session's timers (a Poll Sequence, RFC 5880 §6.8.3).
    pub async fn set_timers(
        &self,
        key: PeerKey,
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_mult: u8,
    ) -> Result<(), BfdError> {
        self.ask(|tx| Command::Timers(key, desired_min_tx, required_min_rx, detect_mult, tx))
            .await?
    }

    pub async fn sessions(&self) -> Result<Vec<SessionSnapshot>, BfdError> {
        self.ask(Command::Sessions).await
    }

    /// Tells every peer AdminDown, so that none takes petreld's stopping
    /// for a forwarding failure (RFC 5882 §3.2), and stops the thread.
    pub async fn shutdown(&self) -> Result<(), BfdError> {
        self.ask(Command::Shutdown).await
    }
}

struct Link {
    sock: UdpSocket,
    dest: SocketAddr,
    local: Option<IpAddr>,
    source_port: u16,
    status: watch::Sender<SessionStatus>,
}

struct Datagram {
    from: SocketAddr,
    multihop: bool,
    ttl: u8,
    len: usize,
    buf: [u8; 64],
}

struct Driver {
    cfg: BfdConfig,
    reg: Registry,
    links: HashMap<PeerKey, Link>,
    rx_errors: u64,
    seed: u64,
}

impl Driver {
    fn new(cfg: BfdConfig, seed: u64) -> Self {
        Self {
            cfg,
            reg: Registry::new(seed),
            links: HashMap::new(),
            rx_errors: 0,
            seed,
        }
    }

    async fn run(mut self, listeners: Vec<(Socket, bool)>, mut commands: mpsc::Receiver<Command>) {
        let (dg_tx, mut datagrams) = mpsc::channel::<Datagram>(DATAGRAM_QUEUE);
        let mut readers = Vec::new();
        for (s, multihop) in listeners {
            let sock = match UdpSocket::from_std(s.into()) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    warn!(error = %e, "BFD listener lost");
                    continue;
                }
            };
            readers.push(tokio::spawn(read_loop(sock, multihop, dg_tx.clone())));
        }
        drop(dg_tx);
        loop {
            let deadline = self.reg.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(d) = datagrams.recv() => self.datagram(d),
                _ = sleep => {
                    let now = Instant::now();
                    self.reg.handle_timeout(now);
                    let keys: Vec<PeerKey> = self.links.keys().copied().collect();
                    for k in keys {
                        self.flush(&k, now);
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.shutdown();
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.command(c),
                    None => {
                        self.shutdown();
                        break;
                    }
                },
            }
        }
        for r in readers {
            r.abort();
        }
    }

    fn datagram(&mut self, d: Datagram) {
        let now = Instant::now();
        let bytes = &d.buf[..d.len];
        match self
            .reg
            .handle_datagram(now, d.from.ip(), d.multihop, d.ttl, bytes)
        {
            Ok(key) => self.flush(&key, now),
            Err(e) => {
                self.rx_errors += 1;
                // A Poll answered or a session gone to Down by the rules
                // before the discard still has output.
                if let RxError::Session(discard) = &e {
                    let key = PeerKey {
                        remote: d.from.ip().to_canonical(),
                        multihop: d.multihop,
                    };
                    if discard.is_auth() {
                        // A key or type that differs from the peer's keeps
                        // the session from ever coming Up: the operator must
                        // hear of it, but not once per packet. The first and
                        // every AUTH_LOG_EVERY-th failure are logged; all
                        // are counted (`show bfd`).
                        let n = self.reg.get(&key).map_or(0, |s| s.stats().auth_failures);
                        if n % AUTH_LOG_EVERY == 1 {
                            warn!(peer = %key.remote, multihop = key.multihop, failures = n, error = %e, "BFD packet failed authentication");
                        }
                    }
                    self.flush(&key, now);
                }
                debug!(from = %d.from, ttl = d.ttl, error = %e, "BFD packet discarded");
            }
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Add(opts, reply) => {
                let _ = reply.send(self.add(*opts, now));
            }
            Command::Remove(key, reply) => {
                let r = if self.links.contains_key(&key) {
                    self.farewell(&key, now);
                    self.reg.remove(&key);
                    self.links.remove(&key);
                    info!(peer = %key.remote, multihop = key.multihop, "BFD session removed");
                    Ok(())
                } else {
                    Err(BfdError::NoSuchSession(key))
                };
                let _ = reply.send(r);
            }
            Command::AdminDown(key, down, reply) => {
                let r = match self.reg.get_mut(&key) {
                    Some(s) => {
                        s.set_admin_down(now, down);
                        Ok(())
                    }
                    None => Err(BfdError::NoSuchSession(key)),
                };
                self.flush(&key, now);
                let _ = reply.send(r);
            }
            Command::Timers(key, tx, rx, mult, reply) => {
                let r = match self.reg.get_mut(&key) {
                    Some(s) => {
                        s.set_timers(now, tx, rx, mult);
                        Ok(())
                    }
                    None => Err(BfdError::NoSuchSession(key)),
                };
                self.flush(&key, now);
                let _ = reply.send(r);
            }
            Command::Sessions(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    fn add(
        &mut self,
        opts: SessionOptions,
        now: Instant,
    ) -> Result<watch::Receiver<SessionStatus>, BfdError> {
        let key = opts.key;
        let port = if key.multihop {
            self.cfg.multihop_port
        } else {
            self.cfg.single_hop_port
        };
        let in_use: Vec<u16> = self
            .links
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, l)| l.source_port)
            .collect();
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let (sock, source_port) =
            sender(key.remote, opts.local, &in_use, self.seed).map_err(|source| {
                BfdError::Socket {
                    peer: key.remote,
                    source,
                }
            })?;
        let sock = UdpSocket::from_std(sock.into()).map_err(|source| BfdError::Socket {
            peer: key.remote,
            source,
        })?;
        self.reg.add(key, opts.session.clone(), opts.min_ttl, now);
        let (status, rx) = watch::channel(SessionStatus {
            state: State::Down,
            local_diag: Diag::NoDiagnostic,
            flaps: 0,
            last_change: None,
            last_down: None,
        });
        self.links.insert(
            key,
            Link {
                sock,
                dest: SocketAddr::new(key.remote, port),
                local: opts.local,
                source_port,
                status,
            },
        );
        info!(
            peer = %key.remote,
            multihop = key.multihop,
            source_port,
            min_tx_ms = opts.session.desired_min_tx.as_millis() as u64,
            min_rx_ms = opts.session.required_min_rx.as_millis() as u64,
            multiplier = opts.session.detect_mult,
            "BFD session added"
        );
        self.flush(&key, now);
        Ok(rx)
    }

    /// Sends what the session has to send and publishes its state changes.
    fn flush(&mut self, key: &PeerKey, now: Instant) {
        let (Some(s), Some(link)) = (self.reg.get_mut(key), self.links.get(key)) else {
            return;
        };
        while let Some(b) = s.poll_transmit(now) {
            // A full socket buffer loses this packet, like the network
            // might; waiting here would delay every other session.
            if let Err(e) = link.sock.try_send_to(&b, link.dest) {
                debug!(peer = %key.remote, error = %e, "BFD send failed");
            }
        }
        while let Some(Event::StateChange(c)) = s.poll_event() {
            let detection_ms = s.detection_time().map(|d| d.as_millis() as u64);
            if c.to == State::Up {
                info!(
                    peer = %key.remote, multihop = key.multihop,
                    from = %c.from, to = %c.to, diag = %c.diag,
                    detection_ms, "BFD session up"
                );
            } else {
                warn!(
                    peer = %key.remote, multihop = key.multihop,
                    from = %c.from, to = %c.to, diag = %c.diag,
                    remote_state = %c.remote_state, remote_diag = %c.remote_diag,
                    "BFD session state change"
                );
            }
            let flaps = s.stats().flaps;
            link.status.send_modify(|st| {
                st.state = c.to;
                st.local_diag = c.diag;
                st.flaps = flaps;
                st.last_change = Some(c);
                if c.from == State::Up {
                    st.last_down = Some(c);
                }
            });
        }
    }

    /// One AdminDown packet now, outside the schedule: the last words of a
    /// session being removed, so the peer does not take it for a failure.
    fn farewell(&mut self, key: &PeerKey, now: Instant) {
        if let Some(s) = self.reg.get_mut(key) {
            s.set_admin_down(now, true);
            let b = s.transmit_now();
            if let Some(link) = self.links.get(key) {
                let _ = link.sock.try_send_to(&b, link.dest);
            }
        }
        self.flush(key, now);
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let keys: Vec<PeerKey> = self.links.keys().copied().collect();
        for k in &keys {
            self.farewell(k, now);
        }
        info!(sessions = keys.len(), "BFD stopped");
    }

    fn snapshot(&self, now: Instant) -> Vec<SessionSnapshot> {
        let mut out: Vec<SessionSnapshot> = self
            .reg
            .iter()
            .filter_map(|(key, s)| {
                let link = self.links.get(key)?;
                let c = s.config();
                Some(SessionSnapshot {
                    key: *key,
                    local: link.local,
                    source_port: link.source_port,
                    state: s.state(),
                    remote_state: s.remote_state(),
                    local_diag: s.local_diag(),
                    remote_diag: s.remote_diag(),
                    local_discriminator: s.local_discriminator(),
                    remote_discriminator: s.remote_discriminator(),
                    desired_min_tx: c.desired_min_tx,
                    required_min_rx: c.required_min_rx,
                    detect_mult: c.detect_mult,
                    tx_interval: s.tx_interval(),
                    remote_min_rx: s.remote_min_rx(),
                    remote_desired_min_tx: s.remote_desired_min_tx(),
                    remote_detect_mult: s.remote_detect_mult(),
                    detection_time: s.detection_time(),
                    uptime: s.up_since().map(|t| now.saturating_duration_since(t)),
                    stats: s.stats(),
                    auth: c.auth.as_ref().map(|k| k.kind),
                    control_plane_independent: c.control_plane_independent,
                })
            })
            .collect();
        out.sort_by_key(|s| s.key);
        out
    }
}

async fn read_loop(sock: Arc<UdpSocket>, multihop: bool, out: mpsc::Sender<Datagram>) {
    loop {
        let mut d = Datagram {
            from: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            multihop,
            ttl: 0,
            len: 0,
            buf: [0; 64],
        };
        let r = sock
            .async_io(Interest::READABLE, || recv_with_ttl(&sock, &mut d.buf))
            .await;
        match r {
            Ok((len, from, ttl)) => {
                d.len = len.min(d.buf.len());
                d.from = from;
                d.ttl = ttl.unwrap_or(0);
                if out.send(d).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn set_int(sock: &impl AsRawFd, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: an integer socket option on a valid fd.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &val as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A receiving socket that reports each packet's TTL / Hop Limit.
fn listen(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        set_int(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
    } else {
        set_int(&s, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(addr))?;
    Ok(s)
}

/// A session's sending socket: TTL 255 (RFC 5881 §5: "MUST be sent with a
/// TTL or Hop Limit value of 255"; multi-hop too, so that the peer may
/// check a minimum) and a source port of its own.
fn sender(
    remote: IpAddr,
    local: Option<IpAddr>,
    in_use: &[u16],
    seed: u64,
) -> io::Result<(Socket, u16)> {
    let v6 = remote.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        set_int(&s, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
    } else {
        set_int(&s, libc::IPPROTO_IP, libc::IP_TTL, 255)?;
    }
    s.set_nonblocking(true)?;
    let ip = local.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let span = (*SOURCE_PORTS.end() - *SOURCE_PORTS.start()) as u64 + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
    for i in 0..256u64 {
        let port = *SOURCE_PORTS.start() + ((seed.wrapping_add(i * 7919)) % span) as u16;
        // RFC 5881 §4: "SHOULD be unique among all BFD sessions on the system".
        if in_use.contains(&port) {
            continue;
        }
        match s.bind(&SockAddr::from(SocketAddr::new(ip, port))) {
            Ok(()) => return Ok((s, port)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `recvmsg` with the TTL (IPv4) or Hop Limit (IPv6) control message.
fn recv_with_ttl(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY: msghdr, sockaddr_storage and the control buffer are plain
    // data; the pointers handed to recvmsg stay valid for the call, and the
    // CMSG macros walk only the control buffer the kernel filled.
    unsafe {
        let mut from: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ttl = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::IPPROTO_IP && ty == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                ttl = Some(v.clamp(0, 255) as u8);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let addr = SockAddr::new(from, msg.msg_namelen)
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP source"))?;
        Ok((n as usize, addr, ttl))
    }
}

/// A random seed from the operating system (discriminators, jitter,
/// sequence numbers), the time if that fails.
fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests;
