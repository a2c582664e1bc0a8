//! The speaker: the async library API the daemon drives.
//!
//! One central task owns the [`Rib`] and the per-peer bookkeeping; each peer
//! runs in its own session task ([`crate::session`]); listeners hand accepted
//! connections to the peer whose address they come from (any other address
//! is closed at once). Every channel is bounded:
//!
//! - API commands: capacity 64; callers wait when it is full.
//! - Peer events (all sessions into the central task): capacity 64; a
//!   session waits, so it stops reading its socket and TCP flow control
//!   slows that peer.
//! - Commands to one session (encoded UPDATEs): capacity 256 batches; the
//!   central task waits for a slow peer's socket, which in turn slows the
//!   RIB (documented in docs/architecture.md).
//! - Loc-RIB changes to the FIB consumer: capacity 256 batches; a slow
//!   consumer slows route processing rather than growing memory.
//! - Prefixes of received UPDATEs not decided yet (`Core::undecided`): at
//!   most 256k entries; decisions run as the FIB consumer takes their
//!   changes, so while it is busy a prefix several peers send is decided
//!   once.

use crate::bfd::{self, Bfd, BfdConfig, PeerKey, SessionOptions, SessionSnapshot};
use crate::fsm::{FsmConfig, State};
use crate::policy::Policy;
use crate::rib::{self, LocRibChange, NextHopMode, PeerId, Rib, RibConfig, Session};
use crate::session::socket::{self, ConnectOptions};
use crate::session::{
    spawn_peer, PeerCommand, PeerConfig as SessionConfig, PeerEvent, PeerEventKind,
};
use crate::wire::attr::PathAttributes;
use crate::wire::capability::{
    Capability, GracefulRestart as GrCap, GracefulRestartFamily, LlgrFamily,
};
use crate::wire::family::Family;
use crate::wire::notification::{CeaseError, ErrorCode};
use crate::wire::{Notification, Prefix, RouteRefresh, Update};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartSettings {
    pub restart_time: u16,
    pub long_lived_stale_time: Option<u32>,
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
}

/// Capacities of the bounded channels (see the module docs).
const API_QUEUE: usize = 64;
/// Shared by every session: a received UPDATE is decided while its memory
/// is still in cache. 1024 let one session run a thousand UPDATEs ahead of
/// the others and made ten peers' tables 0.1–0.3 s slower (docs/benchmarks.md,
/// fifth round); a session waiting for room stops reading its socket.
const EVENT_QUEUE: usize = 64;
const PEER_QUEUE: usize = 256;
const FIB_QUEUE: usize = 256;
/// Prefixes decided per step of a bulk withdrawal: with FIB_QUEUE batches in
/// flight, at most 128k changes wait for the FIB (about 12 MB) however large
/// the table that went away.
const SWEEP_STEP: usize = 512;
/// Prefix decisions left for later (see `Core::undecided`) before they run
/// whatever else is queued: the window in which a prefix several peers
/// send is decided once.
const UNDECIDED_MAX: usize = 1 << 18;
/// Prefix decisions run at once when the FIB consumer's queue is empty
/// (about one netlink apply's worth) ...
const UNDECIDED_REFILL: usize = 2048;
/// ... and all of them once no event has come for this long.
const UNDECIDED_IDLE: Duration = Duration::from_millis(1);
/// Prefixes decided per step of those: each step's changes are one batch
/// in the FIB queue, so that queue holds at most FIB_QUEUE * 64 changes.
const UNDECIDED_STEP: usize = 64;

impl Speaker {
    /// Starts the speaker: binds the listeners and returns the handle and
    /// the bounded stream of Loc-RIB changes (best paths and ECMP sets).
    pub async fn start(
        cfg: SpeakerConfig,
    ) -> Result<(Speaker, mpsc::Receiver<Vec<LocRibChange>>), SpeakerError> {
        let (tx, rx) = mpsc::channel(API_QUEUE);
        let (fib_tx, fib_rx) = mpsc::channel(FIB_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel::<(TcpStream, SocketAddr)>(64);
        let mut listener_socks = Vec::new();
        for addr in &cfg.listen {
            let l = socket::listen(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            // A second handle on the same socket, to install MD5 keys for
            // peers added later (RFC 2385 keys are per peer, on the listener).
            let dup =
                socket2::SockRef::from(&l)
                    .try_clone()
                    .map_err(|source| SpeakerError::Listen {
                        addr: *addr,
                        source,
                    })?;
            listener_socks.push((*addr, dup));
            let accept_tx = accept_tx.clone();
            let addr = *addr;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, from)) => {
                            if accept_tx.send((s, from)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!(listen = %addr, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            info!(listen = %addr, "listening for BGP");
        }
        let deferral = cfg
            .graceful_restart
            .map(|g| Instant::now() + Duration::from_secs(g.restart_time.max(1) as u64));
        let mut rcfg = RibConfig::new(cfg.local_as, cfg.router_id);
        rcfg.cluster_id = cfg.cluster_id;
        rcfg.decision.max_paths = cfg.max_paths.max(1);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let (converged_tx, converged) = tokio::sync::watch::channel(deferral.is_none());
        let core = Core {
            rib: Rib::new(rcfg),
            cfg,
            peers: HashMap::new(),
            ev_tx,
            fib_tx,
            undecided: rib::Pending::default(),
            started: Instant::now(),
            listener_socks,
            deferral_deadline: None,
            converged: converged_tx,
            bfd: None,
        };
        let mut core = core;
        if let Some(deadline) = deferral {
            core.rib.defer_advertisements();
            core.deferral_deadline = Some(deadline);
        }
        tokio::spawn(core.run(rx, ev_rx, accept_rx));
        Ok((Speaker { tx, converged }, fib_rx))
    }

    /// True once selection deferral is over (RFC 4724 §4.1: End-of-RIB from
    /// every peer, or the deferral timer), at once without graceful restart:
    /// what a FIB writer waits for before sweeping routes of a previous run.
    pub fn converged(&self) -> tokio::sync::watch::Receiver<bool> {
        self.converged.clone()
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
    /// Tells every BFD peer AdminDown and stops BFD, leaving the BGP
    /// sessions alone: for a graceful restart, whose peers must not take
    /// the stop for a forwarding failure (RFC 5882 §3.2).
    pub async fn stop_bfd(&self) -> Result<(), SpeakerError> {
        self.ask(Command::StopBfd).await
    }
}

struct PeerEntry {
    settings: PeerSettings,
    id: PeerId,
    cmd: mpsc::Sender<PeerCommand>,
    state: State,
    up_since: Option<Instant>,
    last_error: Option<String>,
    advertised: u64,
    /// Families the peer may keep stale for us, and we for it (RFC 4724).
    peer_gr: Option<(u16, Vec<Family>)>,
    llgr_families: Vec<Family>,
    restart_deadline: Option<Instant>,
    enabled: bool,
    /// Families negotiated on the current session, and those whose
    /// End-of-RIB has arrived (for selection deferral).
    families_up: Vec<Family>,
    eor_received: Vec<Family>,
    /// The peer's OPEN had the Restart State bit (it is restarting too).
    peer_restarting: bool,
    /// Both sides advertised enhanced route refresh (RFC 7313).
    enhanced_rr: bool,
}

struct Core {
    rib: Rib,
    cfg: SpeakerConfig,
    peers: HashMap<IpAddr, PeerEntry>,
    ev_tx: mpsc::Sender<PeerEvent>,
    fib_tx: mpsc::Sender<Vec<LocRibChange>>,
    /// Prefixes whose paths changed by received UPDATEs, not decided yet:
    /// UNDECIDED_REFILL of them are decided when the FIB queue is empty or
    /// UNDECIDED_MAX wait, all of them after UNDECIDED_IDLE without an
    /// event and before anything other than a plain UPDATE is handled.
    /// While the FIB is busy, a prefix that several UPDATEs change is
    /// decided once.
    undecided: rib::Pending,
    started: Instant,
    /// The listening sockets, to install per-peer MD5 keys on.
    listener_socks: Vec<(SocketAddr, socket2::Socket)>,
    /// RFC 4724 §4.1 selection deferral after our own restart: until every
    /// configured peer has sent End-of-RIB, or this deadline, nothing is
    /// advertised, so peers keep our routes from before the restart.
    deferral_deadline: Option<Instant>,
    /// Set once selection deferral is over (at once without graceful
    /// restart): the Loc-RIB is as complete as it will get after a restart.
    converged: tokio::sync::watch::Sender<bool>,
    /// BFD, started with the first peer that asks for it.
    bfd: Option<Bfd>,
}

impl Core {
    async fn run(
        mut self,
        mut api: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<PeerEvent>,
        mut accepts: mpsc::Receiver<(TcpStream, SocketAddr)>,
    ) {
        loop {
            let next_restart = self
                .peers
                .values()
                .filter_map(|p| p.restart_deadline)
                .chain(self.deferral_deadline)
                .min();
            let restart_timer = async {
                match next_restart {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = api.recv() => match cmd {
                    Some(Command::Shutdown(msg, done)) => {
                        self.decide_undecided().await;
                        for p in self.peers.values() {
                            let _ = p.cmd.send(PeerCommand::Stop { communication: msg.clone() }).await;
                        }
                        if let Some(b) = self.bfd.take() {
                            let _ = b.shutdown().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => {
                        self.decide_undecided().await;
                        self.command(cmd).await
                    }
                    None => return,
                },
                Some(ev) = events.recv() => {
                    self.event(ev).await;
                    // Decisions run when the FIB consumer has taken all it
                    // was given (it would idle otherwise), or when too many
                    // wait; meanwhile UPDATEs keep entering Adj-RIB-In, and a
                    // prefix several of them change is decided once.
                    if !self.undecided.is_empty()
                        && (self.undecided.queued() >= UNDECIDED_MAX
                            || self.fib_tx.capacity() == self.fib_tx.max_capacity())
                    {
                        self.decide_some(UNDECIDED_REFILL).await;
                    }
                }
                // No UPDATE for a moment: decide the rest.
                _ = tokio::time::sleep(UNDECIDED_IDLE), if !self.undecided.is_empty() => {
                    self.decide_undecided().await;
                }
                Some((stream, from)) = accepts.recv() => {
                    self.decide_undecided().await;
                    self.accept(stream, from).await
                }
                _ = restart_timer => {
                    self.decide_undecided().await;
                    self.restart_timers().await;
                    if self.deferral_deadline.is_some_and(|t| t <= Instant::now()) {
                        info!("selection deferral timer expired: advertising");
                        self.end_deferral().await;
                    }
                }
            }
        }
    }

    /// Runs up to `n` of the decisions left for later, oldest first.
    async fn decide_some(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let step = left.min(UNDECIDED_STEP);
            let Some(out) = self.rib.decide_pending(&mut self.undecided, step) else {
                break;
            };
            left -= step;
            self.emit(out).await;
        }
    }

    /// Runs the decisions left for later (see `undecided`).
    async fn decide_undecided(&mut self) {
        if self.undecided.is_empty() {
            return;
        }
        // A fresh queue each time: a burst's buffer goes with it.
        let mut pending = std::mem::take(&mut self.undecided);
        while let Some(out) = self.rib.decide_pending(&mut pending, UNDECIDED_STEP) {
            self.emit(out).await;
        }
    }

    /// Runs a bulk operation's decisions step by step, each step's output
    /// sent before the next is computed: the bounded channels then hold a
    /// full table's withdrawal back instead of one list of every change.
    async fn emit_pending(&mut self, pending: &mut rib::Pending) {
        while let Some(out) = self.rib.decide_pending(pending, SWEEP_STEP) {
            self.emit(out).await;
        }
    }

    /// Sends a RIB output: FIB changes to the consumer, UPDATEs to the peers.
    async fn emit(&mut self, out: rib::Output) {
        for e in &out.errors {
            warn!(error = %e, "routes not advertised");
        }
        if !out.changes.is_empty() {
            let _ = self.fib_tx.send(out.changes).await;
        }
        if out.messages.is_empty() {
            return;
        }
        let mut per_peer: HashMap<PeerId, Vec<Bytes>> = HashMap::new();
        for (id, m) in out.messages {
            per_peer.entry(id).or_default().push(m);
        }
        for p in self.peers.values_mut() {
            if let Some(msgs) = per_peer.remove(&p.id) {
                p.advertised += msgs.len() as u64;
                let _ = p.cmd.send(PeerCommand::Send(msgs)).await;
            }
        }
    }

    fn local_capabilities(&self, p: &PeerSettings) -> Vec<Capability> {
        let mut caps: Vec<Capability> = p
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
        caps.push(Capability::FourOctetAs(
            p.local_as.unwrap_or(self.cfg.local_as),
        ));
        // RFC 8950: IPv4 NLRI over an IPv6 next hop on IPv6 sessions.
        if p.address.is_ipv6() && p.families.contains(&Family::IPV4_UNICAST) {
            caps.push(Capability::ExtendedNextHop(vec![
                crate::wire::capability::ExtendedNextHop {
                    nlri_afi: 1,
                    nlri_safi: 1,
                    next_hop_afi: 2,
                },
            ]));
        }
        caps.extend(p.add_path.capability(&p.families));
        if let Some(gr) = p.graceful_restart.or(self.cfg.graceful_restart) {
            // RFC 4724 §3: the Restart State bit while we are recovering from
            // our own restart (the first restart time after start), and the
            // forwarding-state bit: the kernel routes survive our restarts.
            let restarting = self.started.elapsed() < Duration::from_secs(gr.restart_time as u64);
            caps.push(Capability::GracefulRestart(GrCap {
                flags: if restarting {
                    GrCap::RESTART_STATE | GrCap::NOTIFICATION
                } else {
                    GrCap::NOTIFICATION
                },
                restart_time: gr.restart_time,
                families: p
                    .families
                    .iter()
                    .map(|f| GracefulRestartFamily {
                        family: *f,
                        flags: GracefulRestartFamily::FORWARDING_STATE,
                    })
                    .collect(),
            }));
            if let Some(stale) = gr.long_lived_stale_time {
                caps.push(Capability::LongLivedGracefulRestart(
                    p.families
                        .iter()
                        .map(|f| LlgrFamily {
                            family: *f,
                            flags: 0x80,
                            stale_time: stale,
                        })
                        .collect(),
                ));
            }
        }
        caps
    }

    fn rib_peer_config(&self, p: &PeerSettings) -> rib::PeerConfig {
        let mut c = rib::PeerConfig::new(p.address, p.asn);
        c.local_as = p.local_as;
        c.allow_own_as = p.allow_own_as;
        c.rr_client = p.rr_client;
        c.next_hop = p.next_hop;
        c.local_routes_only = p.local_routes_only;
        c.add_path = p.add_path.clone();
        c.import = p.import.clone();
        c.export = p.export.clone();
        c
    }

    async fn add_peer(&mut self, p: PeerSettings) -> Result<(), SpeakerError> {
        if self.peers.contains_key(&p.address) {
            return Err(SpeakerError::DuplicatePeer(p.address));
        }
        let id = self.rib.add_peer(self.rib_peer_config(&p))?;
        let mut fsm = FsmConfig::new(
            p.local_as.unwrap_or(self.cfg.local_as),
            self.cfg.router_id,
            p.asn,
            self.local_capabilities(&p),
        );
        fsm.hold_time = p.hold_time;
        fsm.keepalive = p.keepalive;
        fsm.passive = p.passive;
        fsm.connect_retry = Duration::from_secs(5);
        fsm.jitter_seed ^= u64::from(u32::from(self.cfg.router_id)) << 32 ^ hash_ip(p.address);
        let md5 = p.password.as_ref().map(|s| s.as_bytes().to_vec());
        if let Some(key) = &md5 {
            // RFC 2385: the listener must know the key to accept the SYN.
            self.install_listener_key(p.address, key);
        }
        let local = match (p.local_address, p.local_port) {
            (Some(a), port) => Some(SocketAddr::new(a, port)),
            (None, 0) => None,
            (None, port) => Some(SocketAddr::new(
                if p.address.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                },
                port,
            )),
        };
        let bfd = match p.bfd.clone() {
            Some(b) => self.bfd_session(&p, b).await,
            None => None,
        };
        let scfg = SessionConfig {
            address: p.address,
            port: p.port,
            fsm,
            connect: ConnectOptions {
                local,
                md5_key: md5,
                gtsm_hops: p.ttl_security,
                timeout: None,
            },
            bfd,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(PEER_QUEUE);
        spawn_peer(scfg, cmd_rx, self.ev_tx.clone());
        let _ = cmd_tx.send(PeerCommand::Start).await;
        info!(peer = %p.address, asn = p.asn, "peer added");
        self.peers.insert(
            p.address,
            PeerEntry {
                settings: p,
                id,
                cmd: cmd_tx,
                state: State::Idle,
                up_since: None,
                last_error: None,
                advertised: 0,
                peer_gr: None,
                llgr_families: Vec::new(),
                restart_deadline: None,
                enabled: true,
                families_up: Vec::new(),
                eor_received: Vec::new(),
                peer_restarting: false,
                enhanced_rr: false,
            },
        );
        Ok(())
    }

    /// Starts the BFD session of a peer (and BFD itself, the first time).
    /// Without it the BGP session still runs, unprotected: a warning says so.
    async fn bfd_session(
        &mut self,
        p: &PeerSettings,
        b: BfdSettings,
    ) -> Option<tokio::sync::watch::Receiver<bfd::SessionStatus>> {
        if self.bfd.is_none() {
            match Bfd::start(self.cfg.bfd.clone()) {
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
        let rx = match (new, self.peers.get(&addr).map(|e| e.settings.clone())) {
            (Some(n), Some(settings)) => self.bfd_session(&settings, n).await,
            _ => None,
        };
        if let Some(p) = self.peers.get(&addr) {
            let _ = p.cmd.send(PeerCommand::Bfd(rx)).await;
        }
    }

    fn install_listener_key(&mut self, peer: IpAddr, key: &[u8]) {
        for (addr, sock) in &self.listener_socks {
            if addr.is_ipv4() != peer.is_ipv4() {
                continue;
            }
            if let Err(e) = socket::set_md5(sock, peer, key) {
                warn!(listen = %addr, %peer, error = %e, "cannot install the TCP MD5 key on the listener");
            }
        }
    }

    fn remove_listener_key(&mut self, peer: IpAddr) {
        for (addr, sock) in &self.listener_socks {
            if addr.is_ipv4() == peer.is_ipv4() {
                let _ = socket::set_md5(sock, peer, &[]);
            }
        }
    }

    async fn remove_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        let p = self
            .peers
            .remove(&addr)
            .ok_or(SpeakerError::NoSuchPeer(addr))?;
        if p.settings.password.is_some() {
            self.remove_listener_key(addr);
        }
        if let (Some(b), Some(h)) = (&p.settings.bfd, self.bfd.as_ref()) {
            let _ = h.remove_session(b.key(addr)).await;
        }
        let _ = p
            .cmd
            .send(PeerCommand::Stop {
                communication: Some("peer de-configured".into()),
            })
            .await;
        let mut pending = self.rib.peer_down_in_steps(p.id, &[]);
        self.emit_pending(&mut pending).await;
        let out = self.rib.remove_peer(p.id)?;
        self.emit(out).await;
        info!(peer = %addr, "peer removed");
        Ok(())
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer(p, done) => {
                let r = self.add_peer(*p).await;
                let _ = done.send(r);
            }
            Command::UpdatePeer(p, done) => {
                let r = match self.peers.get(&p.address) {
                    None => Err(SpeakerError::NoSuchPeer(p.address)),
                    Some(old) if old.settings.session_differs(&p) => {
                        // A session parameter changed: only this peer restarts.
                        let addr = p.address;
                        match self.remove_peer(addr).await {
                            Ok(()) => self.add_peer(*p).await,
                            Err(e) => Err(e),
                        }
                    }
                    Some(old) => {
                        let id = old.id;
                        let old_bfd = old.settings.bfd.clone();
                        let cfg = self.rib_peer_config(&p);
                        let r = self.rib.set_peer_config(id, (&cfg).into());
                        let (addr, new_bfd) = (p.address, p.bfd.clone());
                        if let Some(e) = self.peers.get_mut(&p.address) {
                            e.settings = *p;
                        }
                        self.update_bfd(addr, old_bfd, new_bfd).await;
                        match r {
                            Ok(out) => {
                                self.emit(out).await;
                                Ok(())
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                };
                let _ = done.send(r);
            }
            Command::RemovePeer(addr, done) => {
                let r = self.remove_peer(addr).await;
                let _ = done.send(r);
            }
            Command::Enable(addr, on, msg, done) => {
                let r = match self.peers.get_mut(&addr) {
                    None => Err(SpeakerError::NoSuchPeer(addr)),
                    Some(p) => {
                        p.enabled = on;
                        let c = if on {
                            PeerCommand::Start
                        } else {
                            PeerCommand::Stop { communication: msg }
                        };
                        let _ = p.cmd.send(c).await;
                        Ok(())
                    }
                };
                let _ = done.send(r);
            }
            Command::Refresh(addr, done) => {
                let r = match self.peers.get(&addr) {
                    None => Err(SpeakerError::NoSuchPeer(addr)),
                    Some(p) => {
                        for f in &p.settings.families {
                            let _ = p
                                .cmd
                                .send(PeerCommand::SendMessage(
                                    crate::wire::Message::RouteRefresh(RouteRefresh::request(*f)),
                                ))
                                .await;
                        }
                        Ok(())
                    }
                };
                let _ = done.send(r);
            }
            Command::Originate(prefix, attrs) => {
                let out = self.rib.originate(prefix, *attrs);
                self.emit(out).await;
            }
            Command::Withdraw(prefix) => {
                let out = self.rib.withdraw(prefix);
                self.emit(out).await;
            }
            Command::Peers(reply) => {
                let mut v: Vec<PeerSnapshot> = self
                    .peers
                    .values()
                    .map(|p| {
                        let c = self.rib.counters(p.id).unwrap_or_default();
                        PeerSnapshot {
                            address: p.settings.address,
                            asn: p.settings.asn,
                            state: p.state,
                            uptime: p.up_since.map(|t| t.elapsed()).unwrap_or_default(),
                            received: c.received as u64,
                            accepted: c.accepted as u64,
                            advertised: p.advertised,
                            last_error: p.last_error.clone(),
                        }
                    })
                    .collect();
                v.sort_by_key(|p| p.address);
                let _ = reply.send(v);
            }
            Command::Routes(prefix, reply) => {
                let _ = reply.send(self.routes(prefix));
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

    fn routes(&self, only: Option<Prefix>) -> Vec<RouteSnapshot> {
        let by_id: HashMap<PeerId, IpAddr> = self
            .peers
            .values()
            .map(|p| (p.id, p.settings.address))
            .collect();
        let mut out = Vec::new();
        for (_, paths) in self.rib.paths_view(only) {
            for v in paths {
                let peer = by_id.get(&v.route.peer).copied();
                out.push(RouteSnapshot {
                    route: v.route,
                    peer,
                    best: v.best,
                    stale: v.stale,
                });
            }
        }
        out
    }

    async fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        match self.peers.get(&from.ip()) {
            Some(p) if p.enabled => {
                let _ = p.cmd.send(PeerCommand::Incoming(stream)).await;
            }
            _ => {
                // Connections from unconfigured addresses are refused at accept.
                info!(from = %from, "connection from an unconfigured address refused");
                drop(stream);
            }
        }
    }

    async fn event(&mut self, ev: PeerEvent) {
        // Only a plain UPDATE may leave decisions for later; anything else
        // (a session coming or going, End-of-RIB, a refresh) acts on a
        // Loc-RIB with every decision made.
        let plain_update =
            matches!(&ev.kind, PeerEventKind::Update(u) if u.end_of_rib_family().is_none());
        if !plain_update {
            self.decide_undecided().await;
        }
        let Some(p) = self.peers.get_mut(&ev.peer) else {
            return;
        };
        let id = p.id;
        match ev.kind {
            PeerEventKind::State(s) => p.state = s,
            PeerEventKind::Established { ctx, remote, local } => {
                p.state = State::Established;
                p.up_since = Some(Instant::now());
                p.last_error = None;
                let remote_caps: Vec<Capability> = remote.capabilities().cloned().collect();
                let remote_families: Vec<Family> = remote_caps
                    .iter()
                    .filter_map(|c| match c {
                        Capability::Multiprotocol(f) => Some(*f),
                        _ => None,
                    })
                    .collect();
                // RFC 4760 §8: without any MP capability the peer speaks IPv4 unicast.
                let families: Vec<Family> = p
                    .settings
                    .families
                    .iter()
                    .copied()
                    .filter(|f| {
                        remote_families.contains(f)
                            || (remote_families.is_empty() && *f == Family::IPV4_UNICAST)
                    })
                    .collect();
                p.peer_gr = remote_caps.iter().find_map(|c| match c {
                    Capability::GracefulRestart(g) => Some((
                        g.restart_time,
                        g.families.iter().map(|f| f.family).collect(),
                    )),
                    _ => None,
                });
                p.llgr_families = remote_caps
                    .iter()
                    .filter_map(|c| match c {
                        Capability::LongLivedGracefulRestart(v) => {
                            Some(v.iter().map(|f| f.family).collect::<Vec<_>>())
                        }
                        _ => None,
                    })
                    .flatten()
                    .collect();
                p.restart_deadline = None;
                p.families_up = families.clone();
                p.eor_received.clear();
                p.enhanced_rr = remote_caps
                    .iter()
                    .any(|c| matches!(c, Capability::EnhancedRouteRefresh));
                p.peer_restarting = remote_caps
                    .iter()
                    .any(|c| matches!(c, Capability::GracefulRestart(g) if g.restarting()));
                let session = Session {
                    router_id: remote.bgp_id,
                    codec: ctx,
                    families,
                    local_v4: match local.map(|l| l.ip()) {
                        Some(IpAddr::V4(a)) => Some(a),
                        _ => None,
                    },
                    local_v6: match local.map(|l| l.ip()) {
                        Some(IpAddr::V6(a)) => Some(a),
                        _ => None,
                    },
                    llgr: !p.llgr_families.is_empty(),
                };
                let out = self.rib.peer_up(id, session);
                self.emit(out).await;
                self.maybe_end_deferral().await;
            }
            PeerEventKind::Down {
                reason,
                was_established,
            } => {
                p.state = State::Idle;
                p.up_since = None;
                p.last_error = Some(reason.to_string());
                if was_established {
                    // RFC 4724 §4.2: as helper, keep the peer's routes stale
                    // for the families it preserves, until End-of-RIB or the
                    // restart time. A NOTIFICATION ends the session for good
                    // (RFC 8538's N bit is not negotiated here: no retention).
                    let keep: Vec<Family> = match (&p.peer_gr, &reason) {
                        (Some((_, fams)), crate::fsm::DownReason::ConnectionLost) => fams.clone(),
                        _ => Vec::new(),
                    };
                    if !keep.is_empty() {
                        let t = p.peer_gr.as_ref().map(|g| g.0).unwrap_or(0);
                        p.restart_deadline = Some(Instant::now() + Duration::from_secs(t as u64));
                    }
                    let mut pending = self.rib.peer_down_in_steps(id, &keep);
                    self.emit_pending(&mut pending).await;
                }
            }
            PeerEventKind::Update(u) => {
                if let Some(f) = u.end_of_rib_family() {
                    if !p.eor_received.contains(&f) {
                        p.eor_received.push(f);
                    }
                }
                let out = if plain_update {
                    self.rib.receive_deferred(id, &u, &mut self.undecided)
                } else {
                    self.rib.receive(id, &u)
                };
                self.check_max_prefix(ev.peer, &u).await;
                self.emit(out).await;
                self.maybe_end_deferral().await;
            }
            PeerEventKind::RouteRefresh(r) => {
                use crate::wire::{Message, RefreshSubtype};
                match r.subtype {
                    RefreshSubtype::Request => {
                        // RFC 2918 §4: resend our Adj-RIB-Out for the family;
                        // RFC 7313 §4: bracketed by BoRR and EoRR when the
                        // peer speaks enhanced route refresh.
                        let enhanced = p.enhanced_rr;
                        let cmd = p.cmd.clone();
                        let mark = |subtype| {
                            PeerCommand::SendMessage(Message::RouteRefresh(RouteRefresh {
                                family: r.family,
                                subtype,
                            }))
                        };
                        if enhanced {
                            let _ = cmd.send(mark(RefreshSubtype::BeginningOfRefresh)).await;
                        }
                        let out = self.rib.refresh(id, r.family);
                        self.emit(out).await;
                        if enhanced {
                            let _ = cmd.send(mark(RefreshSubtype::EndOfRefresh)).await;
                        }
                    }
                    RefreshSubtype::BeginningOfRefresh => {
                        let out = self.rib.begin_refresh(id, r.family);
                        self.emit(out).await;
                    }
                    RefreshSubtype::EndOfRefresh => {
                        let out = self.rib.end_refresh(id, r.family);
                        self.emit(out).await;
                    }
                    // RFC 7313 §5: other subtypes are ignored.
                    RefreshSubtype::Reserved(_) => {}
                }
            }
        }
    }

    /// Ends selection deferral once every configured, enabled peer is up and
    /// has sent End-of-RIB for each family it negotiated (RFC 4724 §4.1).
    async fn maybe_end_deferral(&mut self) {
        if self.deferral_deadline.is_none() {
            return;
        }
        // RFC 4724 §4.1: End-of-RIB from all peers, "excluding the ones with
        // the Restart State bit set in the received capability and excluding
        // the ones that do not advertise the graceful restart capability"
        // (two restarting speakers must not wait for each other).
        let all = self.peers.values().filter(|p| p.enabled).all(|p| {
            if p.state == State::Established && (p.peer_gr.is_none() || p.peer_restarting) {
                return true;
            }
            p.state == State::Established
                && p.families_up.iter().all(|f| p.eor_received.contains(f))
        });
        if all {
            info!("End-of-RIB from every peer: selection deferral over, advertising");
            self.end_deferral().await;
        }
    }

    async fn end_deferral(&mut self) {
        self.deferral_deadline = None;
        self.converged.send_replace(true);
        let out = self.rib.end_deferral();
        self.emit(out).await;
    }

    /// After `update` from the peer at `addr`: closes the session (or
    /// warns) when the peer's accepted routes exceed its limit.
    async fn check_max_prefix(&mut self, addr: IpAddr, update: &Update) {
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let Some((limit, action)) = p.settings.max_prefix else {
            return;
        };
        let accepted = self.rib.counters(p.id).map(|c| c.accepted).unwrap_or(0);
        if accepted as u64 <= limit as u64 {
            return;
        }
        match action {
            MaxPrefixAction::Warn => {
                warn!(peer = %addr, accepted, limit, "maximum prefix count exceeded")
            }
            MaxPrefixAction::Restart(after) => {
                warn!(peer = %addr, accepted, limit, "maximum prefix count exceeded: closing the session");
                let fallback = p
                    .families_up
                    .first()
                    .copied()
                    .unwrap_or(Family::IPV4_UNICAST);
                let n = max_prefix_cease(exceeding_family(update, fallback), limit);
                let _ = p
                    .cmd
                    .send(PeerCommand::AdminDown {
                        notification: n,
                        idle: Some(after),
                    })
                    .await;
            }
        }
    }

    async fn restart_timers(&mut self) {
        let now = Instant::now();
        let expired: Vec<(PeerId, IpAddr, Vec<Family>)> = self
            .peers
            .values_mut()
            .filter(|p| p.restart_deadline.is_some_and(|t| t <= now))
            .map(|p| {
                p.restart_deadline = None;
                (p.id, p.settings.address, p.llgr_families.clone())
            })
            .collect();
        for (id, addr, llgr) in expired {
            info!(peer = %addr, "graceful restart time expired: removing stale routes");
            let out = self.rib.restart_timer_expired(id, &llgr);
            self.emit(out).await;
        }
    }
}

/// The family whose routes took a peer over its limit: that of the routes
/// `update` announces (MP_REACH_NLRI's, else the NLRI field's IPv4 unicast),
/// or `fallback` (the session's first family) when it announces none.
fn exceeding_family(update: &Update, fallback: Family) -> Family {
    match &update.mp_reach {
        Some(mp) if !mp.nlri.is_empty() => mp.family,
        _ if !update.nlri.is_empty() => Family::IPV4_UNICAST,
        _ => fallback,
    }
}

/// RFC 4486 §4: Cease / Maximum Number of Prefixes Reached, its data the
/// AFI (2 octets), SAFI (1) and the prefix upper bound (4).
fn max_prefix_cease(family: Family, limit: u32) -> Notification {
    let mut data = Vec::with_capacity(7);
    data.extend_from_slice(&family.afi.to_be_bytes());
    data.push(family.safi);
    data.extend_from_slice(&limit.to_be_bytes());
    Notification::new(
        ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached),
        data,
    )
}

fn hash_ip(a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u64,
        IpAddr::V6(v) => (u128::from(v) as u64) ^ ((u128::from(v) >> 64) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attr::{MpReach, NextHop};
    use crate::wire::nlri::Nlri;

    fn v6_update() -> Update {
        let mut u = Update::new(PathAttributes::default());
        u.mp_reach = Some(MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: NextHop::V6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: Nlri::from_prefixes(Family::IPV6_UNICAST, &["2001:db8:1::/48".parse().unwrap()]),
        });
        u
    }

    /// RFC 4486 §4: the data names the family that exceeded, not IPv4
    /// unicast always: AFI 2, SAFI 1 and the limit 1000 for an IPv6 peer.
    #[test]
    fn max_prefix_notification_names_the_exceeding_family() {
        let n = max_prefix_cease(exceeding_family(&v6_update(), Family::IPV4_UNICAST), 1000);
        assert_eq!(
            n.error,
            ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached)
        );
        assert_eq!(&n.data[..], [0, 2, 1, 0, 0, 0x03, 0xe8]);

        let mut v4 = Update::new(PathAttributes::default());
        v4.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, &["10.0.0.0/8".parse().unwrap()]);
        let n = max_prefix_cease(exceeding_family(&v4, Family::IPV6_UNICAST), 7);
        assert_eq!(&n.data[..], [0, 1, 1, 0, 0, 0, 7]);

        // An UPDATE announcing nothing: the session's family.
        let empty = Update::new(PathAttributes::default());
        assert_eq!(
            exceeding_family(&empty, Family::IPV6_UNICAST),
            Family::IPV6_UNICAST
        );
    }
}
