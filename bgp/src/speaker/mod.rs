//! The speaker: the async library API the daemon drives.
//!
//! The protocol logic above the sessions (the RIB, graceful restart,
//! selection deferral, max-prefix, route refresh) is the sans-IO
//! [`SpeakerCore`] in [`core`]; this module is its thin tokio driver. One
//! central task owns the core, BFD and the listeners' keys; each peer runs
//! in its own session task ([`crate::session`]); the listeners (`listen`)
//! hand accepted connections to the peer whose address they come from (any
//! other address is closed at once). Every channel is bounded:
//!
//! - API commands: capacity 64; callers wait when it is full.
//! - Peer events (all sessions into the central task): capacity 64; a
//!   session waits, so it stops reading its socket and TCP flow control
//!   slows that peer.
//! - Commands to one session (encoded UPDATEs): capacity 256 batches; the
//!   central task waits for a slow peer's socket, which in turn slows the
//!   RIB (documented in docs/architecture.md).
//! - Loc-RIB changes to the FIB consumer (`fib_queue`): 4k changes in
//!   flight, growing to 192k with a full table (48 bytes each); a slow
//!   consumer slows route processing rather than growing memory.
//! - Prefixes of received UPDATEs not decided yet (in the core): at
//!   most 256k entries; decisions run as the FIB consumer takes their
//!   changes, so while it is busy a prefix several peers send is decided
//!   once.

pub mod core;
mod fib_queue;
mod listen;
mod pace;
#[cfg(test)]
mod sim;

pub use self::core::{Input, Output, SessionCommand, SessionSetup, SpeakerCore};
use crate::bfd::{self, Bfd, BfdConfig, PeerKey, SessionOptions, SessionSnapshot};
use crate::fsm::State;
use crate::policy::Policy;
use crate::rib::{self, FibChange, NextHopMode};
use crate::session::{spawn_peer, PeerCommand, PeerEvent, PeerEventKind, PeerLinks, SessionConfig};
use crate::wire::attr::PathAttributes;
use crate::wire::family::Family;
use crate::wire::Prefix;
use fib_queue::FibSender;
pub use fib_queue::FibStream;
use listen::Listeners;
use pace::{due, Due, Senders, UNDECIDED_IDLE, UNPACED_IDLE};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// Speaker-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeakerConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Being a route reflector: the CLUSTER_ID (RFC 4456 §7).
    pub cluster_id: Option<Ipv4Addr>,
    pub listen: Vec<SocketAddr>,
    /// Our own graceful-restart capability (RFC 4724), if enabled.
    pub graceful_restart: Option<GracefulRestartSettings>,
    /// ECMP: the most paths in a multipath set.
    pub max_paths: usize,
    /// Where BFD listens; it starts with the first peer that has `bfd`.
    pub bfd: BfdConfig,
    /// Threads for the speaker and its sessions: 1 (the default) keeps
    /// them on one, which suits a node; a route reflector with many
    /// clients sends more than one core's worth and is faster with 2
    /// (see [`Speaker::start`]).
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartSettings {
    pub restart_time: u16,
    pub long_lived_stale_time: Option<u32>,
    /// RFC 8538: advertise the N bit, so that (when the peer sets it too)
    /// a NOTIFICATION keeps the routes stale like a lost connection, and an
    /// end for good is sent and honoured as a Hard Reset.
    pub notification: bool,
}

/// A peer's BFD session (RFC 5882): the timers of RFC 5880 §6.8.1 and
/// its authentication (§6.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdSettings {
    /// bfd.RequiredMinRxInterval.
    pub min_rx: Duration,
    /// bfd.DesiredMinTxInterval.
    pub min_tx: Duration,
    /// bfd.DetectMult.
    pub multiplier: u8,
    /// RFC 5883 multi-hop (UDP 4784), for peers not on a shared link.
    pub multihop: bool,
    /// bfd.AuthType and its key (RFC 5880 §6.8.1); `None`: no A bit.
    pub auth: Option<bfd::AuthKey>,
}

impl BfdSettings {
    fn key(&self, peer: IpAddr) -> PeerKey {
        if self.multihop {
            PeerKey::multihop(peer)
        } else {
            PeerKey::single_hop(peer)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxPrefixAction {
    Restart(Duration),
    Warn,
}

/// One peer's settings. Changing any of the session fields resets that
/// session (and only it); policy changes are applied without a reset.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSettings {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub local_address: Option<IpAddr>,
    /// Source port of our connections (0: any).
    pub local_port: u16,
    /// The local-AS override: the AS this session speaks as.
    pub local_as: Option<u32>,
    /// Accept paths holding our AS up to this many times (loop detection).
    pub allow_own_as: u8,
    pub password: Option<String>,
    pub passive: bool,
    pub hold_time: u16,
    pub keepalive: Option<u16>,
    pub ttl_security: Option<u8>,
    pub next_hop: NextHopMode,
    pub rr_client: bool,
    /// Advertise only locally originated routes (see
    /// [`rib::PeerConfig::local_routes_only`]).
    pub local_routes_only: bool,
    pub families: Vec<Family>,
    /// RFC 7911 ADD-PATH: families we take and send several paths in.
    pub add_path: rib::AddPathConfig,
    pub graceful_restart: Option<GracefulRestartSettings>,
    pub max_prefix: Option<(u32, MaxPrefixAction)>,
    pub import: Policy,
    pub export: Policy,
    /// BFD protects the session: its Down ends the session at once.
    pub bfd: Option<BfdSettings>,
}

impl PeerSettings {
    pub fn new(address: IpAddr, asn: u32) -> Self {
        Self {
            address,
            port: 179,
            asn,
            local_address: None,
            local_port: 0,
            local_as: None,
            allow_own_as: 0,
            password: None,
            passive: false,
            hold_time: 90,
            keepalive: None,
            ttl_security: None,
            next_hop: NextHopMode::SelfAddr,
            rr_client: false,
            local_routes_only: false,
            families: vec![if address.is_ipv4() {
                Family::IPV4_UNICAST
            } else {
                Family::IPV6_UNICAST
            }],
            add_path: rib::AddPathConfig::default(),
            graceful_restart: None,
            max_prefix: None,
            import: Policy::default(),
            export: Policy::default(),
            bfd: None,
        }
    }

    /// Whether `other` differs in something that needs a new session. BFD
    /// does not: it is turned on, off or re-timed under a running session.
    fn session_differs(&self, other: &PeerSettings) -> bool {
        let strip = |p: &PeerSettings| PeerSettings {
            import: Policy::default(),
            export: Policy::default(),
            max_prefix: None,
            bfd: None,
            ..p.clone()
        };
        strip(self) != strip(other)
    }
}

/// A peer as `show peers` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSnapshot {
    pub address: IpAddr,
    pub asn: u32,
    pub state: State,
    pub uptime: Duration,
    pub received: u64,
    pub accepted: u64,
    pub advertised: u64,
    pub last_error: Option<String>,
}

/// A route as `show routes` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSnapshot {
    pub route: rib::Route,
    /// `None` for locally originated routes.
    pub peer: Option<IpAddr>,
    pub best: bool,
    pub stale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("the speaker has stopped")]
    Stopped,
    #[error("no peer {0}")]
    NoSuchPeer(IpAddr),
    #[error("peer {0} already exists")]
    DuplicatePeer(IpAddr),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Rib(#[from] rib::RibError),
    #[error("cannot start the speaker's thread: {0}")]
    Thread(std::io::Error),
}

enum Command {
    AddPeer(Box<PeerSettings>, oneshot::Sender<Result<(), SpeakerError>>),
    UpdatePeer(Box<PeerSettings>, oneshot::Sender<Result<(), SpeakerError>>),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Enable(
        IpAddr,
        bool,
        Option<String>,
        oneshot::Sender<Result<(), SpeakerError>>,
    ),
    Refresh(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Originate(Prefix, Box<PathAttributes>),
    Withdraw(Prefix),
    Peers(oneshot::Sender<Vec<PeerSnapshot>>),
    Routes(Option<Prefix>, oneshot::Sender<Vec<RouteSnapshot>>),
    BfdSessions(oneshot::Sender<Vec<SessionSnapshot>>),
    /// BFD AdminDown to every BFD peer, BGP untouched (a graceful stop).
    StopBfd(oneshot::Sender<()>),
    Shutdown(Option<String>, oneshot::Sender<()>),
}

/// The handle to a running speaker. Cheap to clone.
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::Sender<Command>,
    converged: tokio::sync::watch::Receiver<bool>,
    /// The links of directly connected peers (fast external failover): a
    /// `watch`, never a queue, so that a link going down reaches the
    /// session at once even while the speaker waits for a slow peer.
    links: Arc<watch::Sender<PeerLinks>>,
    /// Whether the FIB's consumer writes what it is given (see
    /// [`Speaker::fib_paced`]).
    fib_paced: fib_queue::Paced,
}

/// Capacities of the bounded channels (see the module docs).
const API_QUEUE: usize = 64;
/// Shared by every session: a received UPDATE is decided while its memory
/// is still in cache. 1024 let one session run a thousand UPDATEs ahead of
/// the others and made ten peers' tables 0.1–0.3 s slower (docs/benchmarks/history.md,
/// fifth round); a session waiting for room stops reading its socket.
const EVENT_QUEUE: usize = 64;
const PEER_QUEUE: usize = 256;
impl Speaker {
    /// Starts the speaker: binds the listeners and returns the handle and
    /// the bounded stream of Loc-RIB changes (best paths and ECMP sets).
    ///
    /// The speaker and its sessions run on a thread of their own, in a
    /// single-threaded runtime, as BIRD's protocols share one loop: a
    /// session decodes an UPDATE and the core decides it on the same core,
    /// with the memory still in cache and no cross-thread wake-up per
    /// event; the FIB writer and the daemon's other tasks (CNI requests,
    /// the datastore) have the other cores. On the daemon's multi-threaded
    /// runtime ten peers' tables took 1.33–1.56 s to a complete FIB and
    /// 1.88–2.22 s of CPU; here 0.31–0.50 s and 1.49–1.87 s, the last best
    /// path in the kernel as before (1.2–1.7 s); a full table from one peer
    /// the same (docs/benchmarks/history.md, seventh round). The core
    /// alone on a thread, its sessions on the runtime, took 2.2 s: each
    /// event then crossed threads.
    ///
    /// With `threads` > 1 the sessions run on that many workers: a route
    /// reflector's writes to 64 clients (most of its CPU is the send
    /// path's system time) then overlap the core's work: 64 clients ×
    /// 100k in 4.9–5.2 s against 6.0–7.4 s on one thread; but ten peers'
    /// tables then take 2.2–2.4 s to a complete FIB.
    ///
    /// Not fair between peers: one peer's table tends to go in whole
    /// before the others', so its prefixes are all reachable early. Our
    /// reading, not verified in tokio's code: a session whose events wait
    /// for room in the core's queue is woken by the core and finds its
    /// socket still full, while the others wait for the I/O driver's turn
    /// (by default every 61 tasks run). Every session is still read at
    /// least that often, so keepalives and hold timers are not starved.
    pub async fn start(cfg: SpeakerConfig) -> Result<(Speaker, FibStream), SpeakerError> {
        let (started_tx, started) = oneshot::channel();
        let threads = cfg.threads;
        std::thread::Builder::new()
            .name("petrel-bgp".into())
            .spawn(move || {
                let mut b = if threads > 1 {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(threads).thread_name("petrel-bgp");
                    b
                } else {
                    tokio::runtime::Builder::new_current_thread()
                };
                let rt = match b.enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(SpeakerError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Self::build(cfg) {
                        Ok((handle, run)) => {
                            let _ = started_tx.send(Ok(handle));
                            run.await;
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(SpeakerError::Thread)?;
        started.await.map_err(|_| SpeakerError::Stopped)?
    }

    /// The speaker's parts, made in the runtime that will run them (the
    /// listeners' sockets register with it).
    #[allow(clippy::type_complexity)]
    fn build(
        cfg: SpeakerConfig,
    ) -> Result<((Speaker, FibStream), impl std::future::Future<Output = ()>), SpeakerError> {
        let (tx, rx) = mpsc::channel(API_QUEUE);
        let (fib_tx, fib_rx) = fib_queue::channel();
        let fib_paced = fib_tx.paced();
        let (listeners, accept_rx) = Listeners::bind(&cfg.listen)?;
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let core = SpeakerCore::new(cfg, Instant::now());
        let (converged_tx, converged) = tokio::sync::watch::channel(core.converged());
        let (links_tx, links_rx) = watch::channel(PeerLinks::new());
        let driver = Driver {
            core,
            sessions: HashMap::new(),
            ev_tx,
            fib_tx,
            listeners,
            converged: converged_tx,
            bfd: None,
            links: links_rx,
            senders: Senders::default(),
        };
        let links = Arc::new(links_tx);
        Ok((
            (
                Speaker {
                    tx,
                    converged,
                    links,
                    fib_paced,
                },
                fib_rx,
            ),
            driver.run(rx, ev_rx, accept_rx),
        ))
    }

    /// True once selection deferral is over (RFC 4724 §4.1: End-of-RIB from
    /// every peer, or the deferral timer), at once without graceful restart:
    /// what a FIB writer waits for before sweeping routes of a previous run.
    pub fn converged(&self) -> tokio::sync::watch::Receiver<bool> {
        self.converged.clone()
    }

    /// Whether the FIB consumer writes what it is given, so that a lone
    /// peer's UPDATEs are decided as soon as it has taken the last
    /// decisions; false for a consumer that only counts them
    /// ([`FibStream::unpaced`]: a route reflector without a FIB), whose
    /// decisions are always coalesced. While several peers announce at
    /// once, decisions are coalesced either way (the `pace` module).
    pub fn fib_paced(&self) -> bool {
        self.fib_paced.get()
    }

    async fn ask<T>(
        &self,
        f: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(f(tx))
            .await
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    pub async fn add_peer(&self, p: PeerSettings) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::AddPeer(Box::new(p), tx)).await?
    }
    /// Replaces a peer's settings; only that peer's session may reset.
    pub async fn update_peer(&self, p: PeerSettings) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::UpdatePeer(Box::new(p), tx)).await?
    }
    pub async fn remove_peer(&self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::RemovePeer(addr, tx)).await?
    }
    pub async fn enable_peer(&self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Enable(addr, true, None, tx)).await?
    }
    /// Administrative shutdown with an RFC 9003 communication.
    pub async fn disable_peer(
        &self,
        addr: IpAddr,
        message: Option<String>,
    ) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Enable(addr, false, message, tx))
            .await?
    }
    /// Asks the peer to resend its routes (RFC 2918) and re-runs import policy.
    pub async fn refresh_peer(&self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Refresh(addr, tx)).await?
    }
    pub async fn originate(
        &self,
        prefix: Prefix,
        attrs: PathAttributes,
    ) -> Result<(), SpeakerError> {
        self.tx
            .send(Command::Originate(prefix, Box::new(attrs)))
            .await
            .map_err(|_| SpeakerError::Stopped)
    }
    pub async fn withdraw(&self, prefix: Prefix) -> Result<(), SpeakerError> {
        self.tx
            .send(Command::Withdraw(prefix))
            .await
            .map_err(|_| SpeakerError::Stopped)
    }
    pub async fn peers(&self) -> Result<Vec<PeerSnapshot>, SpeakerError> {
        self.ask(Command::Peers).await
    }
    pub async fn routes(&self, prefix: Option<Prefix>) -> Result<Vec<RouteSnapshot>, SpeakerError> {
        self.ask(|tx| Command::Routes(prefix, tx)).await
    }
    /// Stops every session with a Cease / Administrative Shutdown.
    pub async fn shutdown(&self, message: Option<String>) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Shutdown(message, tx)).await
    }
    /// The BFD sessions, as `show bfd` reports them.
    pub async fn bfd_sessions(&self) -> Result<Vec<SessionSnapshot>, SpeakerError> {
        self.ask(Command::BfdSessions).await
    }
    /// The link through which the directly connected peer `addr` is
    /// reached went down: its session ends at once and its routes go
    /// (no graceful-restart retention: the link is gone), and it is held
    /// Idle until [`Speaker::link_up`]. Never waits.
    pub fn link_down(&self, addr: IpAddr) {
        self.links.send_if_modified(|l| {
            let s = l.entry(addr).or_default();
            if s.down {
                return false;
            }
            s.down = true;
            s.drops += 1;
            true
        });
    }

    /// The peer's link is back (or the peer no longer has one to wait
    /// for): a session held by [`Speaker::link_down`] starts again.
    pub fn link_up(&self, addr: IpAddr) {
        self.links.send_if_modified(|l| match l.get_mut(&addr) {
            Some(s) if s.down => {
                s.down = false;
                true
            }
            _ => false,
        });
    }

    /// The peer is no longer on a connected network of an up link (the
    /// address or the link went away while up): its session ends once,
    /// as for [`Speaker::link_down`], and then retries as usual.
    pub fn link_lost(&self, addr: IpAddr) {
        self.links.send_modify(|l| {
            let s = l.entry(addr).or_default();
            s.down = false;
            s.drops += 1;
        });
    }

    /// Tells every BFD peer AdminDown and stops BFD, leaving the BGP
    /// sessions alone: for a graceful restart, whose peers must not take
    /// the stop for a forwarding failure (RFC 5882 §3.2).
    pub async fn stop_bfd(&self) -> Result<(), SpeakerError> {
        self.ask(Command::StopBfd).await
    }
}

/// The tokio driver around [`SpeakerCore`]: the API, the sessions' events,
/// accepted connections and the core's timer go in; the core's outputs go
/// out on the bounded channels, each sent (and waited for) before the next
/// is polled. BFD and the listeners' MD5 keys live here, beside the core.
struct Driver {
    core: SpeakerCore,
    /// Each peer's session task.
    sessions: HashMap<IpAddr, mpsc::Sender<PeerCommand>>,
    ev_tx: mpsc::Sender<PeerEvent>,
    fib_tx: FibSender,
    listeners: Listeners,
    /// Set once selection deferral is over (at once without graceful
    /// restart): the Loc-RIB is as complete as it will get after a restart.
    converged: tokio::sync::watch::Sender<bool>,
    /// BFD, started with the first peer that asks for it.
    bfd: Option<Bfd>,
    /// The links of directly connected peers; each session watches a
    /// clone.
    links: watch::Receiver<PeerLinks>,
    /// Who sent the last UPDATEs (see [`Driver::paced`]).
    senders: Senders,
}

impl Driver {
    async fn run(
        mut self,
        mut api: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<PeerEvent>,
        mut accepts: mpsc::Receiver<(TcpStream, SocketAddr)>,
    ) {
        let mut links = self.links.clone();
        let drained = self.fib_tx.drained();
        loop {
            let timeout = self.core.poll_timeout();
            let paced = self.paced(Instant::now());
            let idle = if paced { UNDECIDED_IDLE } else { UNPACED_IDLE };
            // Paced, decisions left for later are due when the FIB writer
            // has taken the last ones: without this, a burst's UPDATEs read
            // while it wrote the first waited for the next UPDATE or the
            // idle pause (one peer's churn, bursts of 100 one-prefix
            // UPDATEs: 3.0 ms from send to kernel at p50, BIRD 1.3;
            // docs/benchmarks/history.md, thirteenth round).
            let wait_drain = paced && self.core.has_undecided() && !self.fib_tx.is_drained();
            let core_timer = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = api.recv() => match cmd {
                    Some(Command::Shutdown(msg, done)) => {
                        self.core.shutdown(msg);
                        self.flush().await;
                        if let Some(b) = self.bfd.take() {
                            let _ = b.shutdown().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => {
                        self.decided().await;
                        self.command(cmd).await;
                        self.flush().await;
                    }
                    None => return,
                },
                Some(ev) = events.recv() => {
                    self.feed(ev);
                    self.flush_joining(&mut events).await;
                    // The events already queued join this decision run: a
                    // burst of UPDATEs read together (ten one-prefix
                    // UPDATEs from a reflector's client) was decided one
                    // UPDATE at a time, and each decision went to every
                    // client as its own write (4.5 writes per burst and
                    // client, twice BIRD's system calls and CPU;
                    // docs/benchmarks/history.md, fourteenth round).
                    // Bounded by the queue and by a decision batch.
                    let mut taken = 1;
                    while taken < EVENT_QUEUE && self.core.undecided() < pace::UNDECIDED_REFILL {
                        let Ok(ev) = events.try_recv() else { break };
                        self.feed(ev);
                        self.flush_joining(&mut events).await;
                        taken += 1;
                    }
                    self.decide_due().await;
                }
                // A stored permit can wake this early: `decide_due` asks
                // the writer again.
                _ = drained.notified(), if wait_drain => self.decide_due().await,
                // No UPDATE for a moment: decide the rest.
                _ = tokio::time::sleep(idle), if self.core.has_undecided() => {
                    self.decided().await;
                }
                Some((stream, from)) = accepts.recv() => {
                    self.decided().await;
                    self.accept(stream, from).await
                }
                _ = core_timer => {
                    self.core.handle(Instant::now(), Input::Timeout);
                    self.flush().await;
                }
                // The sessions act on their own; the core drops what a
                // down link's peers left stale.
                Ok(()) = links.changed() => {
                    let links = links.borrow_and_update().clone();
                    self.decided().await;
                    self.core.set_links(Instant::now(), &links);
                    self.flush().await;
                }
            }
        }
    }

    /// Whether decisions are paced by the FIB writer (or, without a FIB,
    /// made as UPDATEs come) rather than coalesced (see the `pace`
    /// module): with a FIB, unless several peers announce while one sends
    /// a table; without one, unless a peer sends a table.
    fn paced(&self, now: Instant) -> bool {
        if self.fib_tx.paces() {
            !self.senders.several(now)
        } else {
            !self.senders.table(now)
        }
    }

    /// Feeds a session's event to the core, counting who announces.
    fn feed(&mut self, ev: PeerEvent) {
        let now = Instant::now();
        // Announcements only: an End-of-RIB or a withdrawal brings no
        // competing path.
        if let PeerEventKind::Update(u) = &ev.kind {
            let announced = u.announced().count();
            if announced > 0 {
                self.senders.update_from(ev.peer, now, announced);
            }
        }
        self.core.handle(now, Input::Session(ev));
    }

    /// Runs the decisions that are due now (see [`due`]): paced, as many
    /// as the FIB writer has room for once it has taken the last ones;
    /// coalesced, what has waited long enough.
    async fn decide_due(&mut self) {
        let now = Instant::now();
        let decide = due(
            self.core.undecided(),
            self.core.undecided_since(),
            self.paced(now),
            self.fib_tx.is_drained(),
            now,
        );
        match decide {
            None => return,
            Some(Due::Oldest(n)) => self.core.decide_some(n),
            Some(Due::QueuedBy(by)) => self.core.decide_queued_by(by, pace::UNDECIDED_REFILL),
        }
        self.flush().await;
    }

    /// Runs the decisions left for later, before anything other than a
    /// plain UPDATE.
    async fn decided(&mut self) {
        self.core.decide_undecided();
        self.flush().await;
    }

    /// Carries out the core's outputs, one at a time: each waits for room
    /// in its bounded channel before the core computes the next.
    async fn flush(&mut self) {
        while let Some(o) = self.core.poll_output() {
            self.carry_out(o).await;
        }
    }

    /// [`Driver::flush`], taking the sessions' ends already queued while a
    /// dead peer's sweep is queued or runs: they join it
    /// (`SpeakerCore::handle`), so that sessions ending together or a few
    /// milliseconds apart (a ToR, a link, a restarting node's sessions)
    /// have their paths taken out in one walk and each prefix decided, and
    /// written to the kernel, once rather than once per peer. Ends queued
    /// before the walk begins join it before its first step. The first
    /// other event taken is fed too (it waits behind the sweep, as any
    /// would) and ends the taking: at most one UPDATE is held that way.
    async fn flush_joining(&mut self, events: &mut mpsc::Receiver<PeerEvent>) {
        let mut joining = true;
        loop {
            self.core
                .take_ends(Instant::now(), &mut joining, || events.try_recv().ok());
            let Some(o) = self.core.poll_output() else {
                return;
            };
            self.carry_out(o).await;
        }
    }

    async fn carry_out(&mut self, o: Output) {
        match o {
            Output::Fib(changes) => {
                self.fib_tx.fit(self.core.prefixes());
                let batch = changes.into_iter().map(FibChange::from).collect();
                self.fib_tx.send(batch).await;
            }
            Output::Session(addr, c) => {
                let Some(tx) = self.sessions.get(&addr) else {
                    return;
                };
                let c = match c {
                    SessionCommand::Start => PeerCommand::Start,
                    SessionCommand::Stop { communication } => PeerCommand::Stop { communication },
                    SessionCommand::AdminDown { notification, idle } => {
                        PeerCommand::AdminDown { notification, idle }
                    }
                    SessionCommand::Send(m) => PeerCommand::Send(m),
                    SessionCommand::SendMessage(m) => PeerCommand::SendMessage(*m),
                    SessionCommand::RestartState(on) => PeerCommand::RestartState(on),
                };
                let _ = tx.send(c).await;
            }
            Output::AddSession(setup) => self.add_session(*setup).await,
            Output::RemoveSession(settings) => {
                let addr = settings.address;
                if settings.password.is_some() {
                    self.listeners.remove_key(addr);
                }
                if let (Some(b), Some(h)) = (settings.bfd, self.bfd.as_ref()) {
                    let _ = h.remove_session(b.key(addr)).await;
                }
                // The session task ends with its command channel.
                self.sessions.remove(&addr);
            }
            Output::Converged => {
                self.converged.send_replace(true);
            }
            Output::Sweeping(on) => self.fib_tx.sweeping(on).await,
        }
    }

    async fn add_session(&mut self, setup: SessionSetup) {
        let SessionSetup {
            settings: p,
            id,
            fsm,
            connect,
        } = setup;
        if let Some(key) = &connect.md5_key {
            // RFC 2385: the listener must know the key to accept the SYN.
            self.listeners.install_key(p.address, key);
        }
        let bfd = match p.bfd.clone() {
            Some(b) => self.bfd_session(&p, b).await,
            None => None,
        };
        let scfg = SessionConfig {
            address: p.address,
            id,
            port: p.port,
            fsm,
            connect,
            bfd,
            links: Some(self.links.clone()),
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(PEER_QUEUE);
        spawn_peer(scfg, cmd_rx, self.ev_tx.clone());
        self.sessions.insert(p.address, cmd_tx);
    }

    /// Starts the BFD session of a peer (and BFD itself, the first time).
    /// Without it the BGP session still runs, unprotected: a warning says so.
    async fn bfd_session(
        &mut self,
        p: &PeerSettings,
        b: BfdSettings,
    ) -> Option<tokio::sync::watch::Receiver<bfd::SessionStatus>> {
        if self.bfd.is_none() {
            match Bfd::start(self.core.config().bfd.clone()) {
                Ok(h) => {
                    info!("BFD started");
                    self.bfd = Some(h);
                }
                Err(e) => {
                    warn!(peer = %p.address, error = %e, "BFD cannot start: the session runs without it");
                    return None;
                }
            }
        }
        let h = self.bfd.as_ref()?;
        let mut session = bfd::SessionConfig::new(b.min_tx, b.min_rx, b.multiplier);
        session.auth = b.auth.clone();
        // RFC 5880 §4.1 C bit: BFD runs inside petreld and dies with it.
        session.control_plane_independent = false;
        let opts = SessionOptions {
            key: b.key(p.address),
            local: p.local_address,
            session,
            // RFC 5883 §5: multi-hop takes any TTL unless GTSM is asked of
            // the BGP session too, whose hop count then bounds it.
            min_ttl: p.ttl_security.map_or(1, |h| 255u8.saturating_sub(h - 1)),
        };
        match h.add_session(opts).await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(peer = %p.address, error = %e, "no BFD session: the BGP session runs without it");
                None
            }
        }
    }

    /// Applies a change of a peer's BFD settings under its running session.
    async fn update_bfd(
        &mut self,
        addr: IpAddr,
        old: Option<BfdSettings>,
        new: Option<BfdSettings>,
    ) {
        if old == new {
            return;
        }
        if let (Some(o), Some(n), Some(h)) = (&old, &new, self.bfd.as_ref()) {
            // RFC 5880 §6.7.1 leaves changing authentication under a
            // running session out of scope: a new key replaces the session,
            // which the peer sees as a flap.
            if o.multihop == n.multihop && o.auth == n.auth {
                // RFC 5880 §6.8.3: new timers go through a Poll Sequence.
                if let Err(e) = h
                    .set_timers(n.key(addr), n.min_tx, n.min_rx, n.multiplier)
                    .await
                {
                    warn!(peer = %addr, error = %e, "BFD timers not changed");
                }
                return;
            }
        }
        if let (Some(o), Some(h)) = (&old, self.bfd.as_ref()) {
            let _ = h.remove_session(o.key(addr)).await;
        }
        let rx = match (new, self.core.peer_settings(addr).cloned()) {
            (Some(n), Some(settings)) => self.bfd_session(&settings, n).await,
            _ => None,
        };
        if let Some(tx) = self.sessions.get(&addr) {
            let _ = tx.send(PeerCommand::Bfd(rx)).await;
        }
    }

    async fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::AddPeer(p, done) => {
                let r = self.core.add_peer(now, *p);
                let _ = done.send(r);
            }
            Command::UpdatePeer(p, done) => {
                // A session reset re-creates the BFD session with it;
                // otherwise BFD is changed under the running session.
                let old_bfd = self
                    .core
                    .peer_settings(p.address)
                    .filter(|old| !old.session_differs(&p))
                    .map(|old| old.bfd.clone());
                let (addr, new_bfd) = (p.address, p.bfd.clone());
                let r = self.core.update_peer(now, *p);
                if let Some(old_bfd) = old_bfd {
                    self.flush().await;
                    self.update_bfd(addr, old_bfd, new_bfd).await;
                }
                let _ = done.send(r);
            }
            Command::RemovePeer(addr, done) => {
                let r = self.core.remove_peer(addr);
                let _ = done.send(r);
            }
            Command::Enable(addr, on, msg, done) => {
                let r = self.core.enable_peer(addr, on, msg);
                let _ = done.send(r);
            }
            Command::Refresh(addr, done) => {
                let r = self.core.refresh_peer(addr);
                let _ = done.send(r);
            }
            Command::Originate(prefix, attrs) => self.core.originate(prefix, *attrs),
            Command::Withdraw(prefix) => self.core.withdraw(prefix),
            Command::Peers(reply) => {
                let _ = reply.send(self.core.peers(now));
            }
            Command::Routes(prefix, reply) => {
                let _ = reply.send(self.core.routes(prefix));
            }
            Command::BfdSessions(reply) => {
                let v = match self.bfd.as_ref() {
                    Some(h) => h.sessions().await.unwrap_or_default(),
                    None => Vec::new(),
                };
                let _ = reply.send(v);
            }
            Command::StopBfd(done) => {
                if let Some(h) = self.bfd.take() {
                    let _ = h.shutdown().await;
                }
                let _ = done.send(());
            }
            Command::Shutdown(..) => {}
        }
    }

    async fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        match self.sessions.get(&from.ip()) {
            Some(tx) if self.core.accepts(from.ip()) => {
                let _ = tx.send(PeerCommand::Incoming(stream)).await;
            }
            _ => {
                // Connections from unconfigured addresses are refused at accept.
                info!(from = %from, "connection from an unconfigured address refused");
                drop(stream);
            }
        }
    }
}
