//! The speaker's protocol core, sans-IO: the [`Rib`] and the per-peer
//! bookkeeping above the sessions.
//!
//! [`SpeakerCore`] takes what the sessions report ([`Input::Session`]: up,
//! down, UPDATE, ROUTE-REFRESH) and the expiry of its own timers
//! ([`Input::Timeout`]), and the management calls as plain methods; it
//! answers with [`Output`]s (Loc-RIB changes for the FIB, commands and
//! encoded messages for the sessions, sessions to create and remove, the
//! end of selection deferral) taken with [`SpeakerCore::poll_output`], and
//! says when it next wants [`Input::Timeout`] with
//! [`SpeakerCore::poll_timeout`] — quinn-proto's shape. It owns no socket,
//! channel or clock: every call is given `now`. The tokio driver in
//! [`crate::speaker`] and the simulation tests drive the same core.
//!
//! What lives here: graceful restart as helper (stale routes kept until
//! End-of-RIB or the restart time, dropped at once for the families the
//! peer's new OPEN does not preserve, RFC 4724 §4.2; across a NOTIFICATION
//! too when both sides set RFC 8538's N bit, but not a Hard Reset) and as
//! restarting speaker
//! (Restart State bit, selection deferral until End-of-RIB from every peer
//! or the deferral timer, §4.1), max-prefix (RFC 4486 Cease / 1), and the
//! route refresh markers (RFC 2918, RFC 7313).
//!
//! Bulk work stays bounded: a session drop's withdrawals are decided a
//! step at a time as [`SpeakerCore::poll_output`] is called, so a driver
//! that sends each output into a bounded channel before polling the next
//! holds a full table's withdrawal back instead of one list of every
//! change. A driver drains `poll_output` before its next call in.

use super::{
    MaxPrefixAction, PeerSettings, PeerSnapshot, RouteSnapshot, SpeakerConfig, SpeakerError,
};
use crate::fsm::{DownReason, FsmConfig, State};
use crate::rib::{self, LocRibChange, PeerId, Rib, RibConfig, Session};
use crate::session::socket::ConnectOptions;
use crate::session::{PeerEvent, PeerEventKind, PeerLinks, SessionId};
use crate::wire::capability::{
    Capability, GracefulRestart as GrCap, GracefulRestartFamily, LlgrFamily,
};
use crate::wire::family::Family;
use crate::wire::notification::{CeaseError, ErrorCode};
use crate::wire::{Message, Notification, RefreshSubtype, RouteRefresh, Update};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Prefixes decided per step of a bulk withdrawal. A step's changes go
/// out as batches of at most [`FIB_BATCH`].
const SWEEP_STEP: usize = 512;
/// Changes per FIB batch at most: the driver's FIB queue bounds the
/// changes in flight (`fib_queue`), which a batch per step would not
/// hold to the bound. A whole step as one batch let 128k wait
/// (a 100k table, 7 MB: the peak of petreld's heap in petrel-bench's 100k
/// run, docs/benchmarks/history.md, issue 17). Smaller steps instead cost
/// the spread withdrawal's export memo its hits (+50% instructions).
const FIB_BATCH: usize = 64;
/// Prefixes decided per step of the decisions left for later: each step's
/// changes are one FIB batch.
pub(super) const UNDECIDED_STEP: usize = 64;

/// What the core is told, besides the management calls.
#[derive(Debug)]
pub enum Input {
    /// A session's report.
    Session(PeerEvent),
    /// `now` has reached [`SpeakerCore::poll_timeout`]'s instant.
    Timeout,
}

/// What a session is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    Start,
    Stop {
        communication: Option<String>,
    },
    /// Send this NOTIFICATION, go down, and come back after `idle` if given.
    AdminDown {
        notification: Notification,
        idle: Option<Duration>,
    },
    /// Encoded messages (UPDATEs) to write, in order, while Established.
    Send(Vec<Bytes>),
    /// A message to encode with the session's context and write (boxed:
    /// an OPEN-sized message would make every queued output that large).
    SendMessage(Box<Message>),
    /// Whether the session's next OPENs carry the graceful-restart Restart
    /// State bit: cleared for good when our restart is over (RFC 4724 §3).
    RestartState(bool),
}

/// What a new session needs: its FSM and its socket options.
#[derive(Clone, Debug)]
pub struct SessionSetup {
    pub settings: PeerSettings,
    /// The number its events carry (see [`SessionId`]).
    pub id: SessionId,
    pub fsm: FsmConfig,
    pub connect: ConnectOptions,
}

/// What the core asks of its driver, in order.
#[derive(Debug)]
pub enum Output {
    /// Loc-RIB changes for the FIB, in prefix order.
    Fib(Vec<LocRibChange>),
    /// Create the session of a new peer (it starts Idle; a
    /// [`SessionCommand::Start`] follows).
    AddSession(Box<SessionSetup>),
    /// The peer is gone: its session was told to stop just before.
    RemoveSession(Box<PeerSettings>),
    Session(IpAddr, SessionCommand),
    /// Selection deferral is over (RFC 4724 §4.1): the Loc-RIB is as
    /// complete as it gets after a restart.
    Converged,
    /// `true`: a peer's paths are being taken out (its session ended, its
    /// link went down, it was removed), a step at a time; the withdrawals
    /// follow. `false`: that is over, every change of it was output
    /// before. A FIB writer may hold the deletes back in between: the
    /// burst's end is then known rather than guessed from a pause.
    Sweeping(bool),
}

/// Work in order: outputs ready, or bulk decisions run a step at a time.
enum Work {
    Out(Output),
    Decide(rib::Undecided, usize),
    /// A peer's paths taken out ([`rib::Rib::peer_down_in_steps`]), a
    /// [`SWEEP_STEP`] at a time between [`Output::Sweeping`] marks; the
    /// flag: the opening mark is out.
    Sweep(rib::Undecided, bool),
    /// Removes a peer from the RIB once its withdrawal has run.
    ForgetPeer(PeerId, IpAddr),
    /// A peer whose session parameters changed, added again once the old
    /// one is gone.
    AddPeer(Instant, Box<PeerSettings>),
    /// An input that came while bulk work was ahead of it.
    Input(Instant, Input),
}

struct PeerEntry {
    settings: PeerSettings,
    id: PeerId,
    /// The session task of this entry: events of any other are dropped.
    session: SessionId,
    state: State,
    up_since: Option<Instant>,
    last_error: Option<String>,
    advertised: u64,
    /// Families the peer may keep stale for us, and we for it (RFC 4724).
    peer_gr: Option<(u16, Vec<Family>)>,
    /// RFC 8538: both OPENs of the session carried the N bit.
    hard_reset: bool,
    llgr_families: Vec<Family>,
    restart_deadline: Option<Instant>,
    /// Families whose routes were kept stale when the last session went
    /// down: the next OPEN's F bits decide whether they stay (RFC 4724 §4.2).
    stale_families: Vec<Family>,
    enabled: bool,
    /// Families negotiated on the current session, and those whose
    /// End-of-RIB has arrived (for selection deferral).
    families_up: Vec<Family>,
    eor_received: Vec<Family>,
    /// The peer's OPEN had the Restart State bit (it is restarting too).
    peer_restarting: bool,
    /// Both sides advertised enhanced route refresh (RFC 7313).
    enhanced_rr: bool,
    /// We told the session to close (max-prefix, or stopped): what it had
    /// already read is not processed (RFC 4271 §6: after a NOTIFICATION the
    /// connection is closed). Cleared by its Down and by a new session.
    closing: bool,
    /// The max-prefix warning was logged for this session.
    over_limit_warned: bool,
}

pub struct SpeakerCore {
    rib: Rib,
    cfg: SpeakerConfig,
    /// Ordered by address: outputs for several peers come in the same order
    /// every run (simulations repeat exactly).
    peers: BTreeMap<IpAddr, PeerEntry>,
    /// Prefixes whose paths changed by received UPDATEs, not decided yet
    /// (see [`SpeakerCore::decide_some`]): while the FIB is busy, a prefix
    /// that several UPDATEs change is decided once.
    undecided: rib::Undecided,
    /// When the decisions in `undecided` were queued.
    ages: super::pace::Ages,
    /// RFC 4724 §4.1 selection deferral after our own restart: until every
    /// configured peer has sent End-of-RIB, or this deadline, nothing is
    /// advertised, so peers keep our routes from before the restart.
    deferral_deadline: Option<Instant>,
    /// Outputs of the bulk step being taken, ahead of `work`.
    ready: VecDeque<Output>,
    work: VecDeque<Work>,
    /// The last [`SessionId`] given out.
    last_session: u64,
    /// The links of directly connected peers, as last told
    /// ([`SpeakerCore::set_links`]).
    links: PeerLinks,
}

impl SpeakerCore {
    /// A core started at `now`. With graceful restart configured it is a
    /// restarting speaker: selection deferral runs for the restart time.
    pub fn new(cfg: SpeakerConfig, now: Instant) -> Self {
        let deferral = cfg
            .graceful_restart
            .map(|g| now + Duration::from_secs(g.restart_time.max(1) as u64));
        let mut rcfg = RibConfig::new(cfg.local_as, cfg.router_id);
        rcfg.cluster_id = cfg.cluster_id;
        rcfg.decision.max_paths = cfg.max_paths.max(1);
        let mut rib = Rib::new(rcfg);
        if deferral.is_some() {
            rib.defer_advertisements();
        }
        Self {
            rib,
            cfg,
            peers: BTreeMap::new(),
            undecided: rib::Undecided::default(),
            ages: Default::default(),
            deferral_deadline: deferral,
            ready: VecDeque::new(),
            work: VecDeque::new(),
            last_session: 0,
            links: PeerLinks::new(),
        }
    }

    pub fn config(&self) -> &SpeakerConfig {
        &self.cfg
    }

    /// True once selection deferral is over (at once without graceful
    /// restart).
    pub fn converged(&self) -> bool {
        self.deferral_deadline.is_none()
    }

    /// The next output, computing the next step of any bulk work.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.ready.pop_front() {
                return Some(o);
            }
            match self.work.pop_front()? {
                Work::Out(o) => return Some(o),
                Work::Decide(mut pending, step) => {
                    if let Some(out) = self.rib.decide_undecided(&mut pending, step) {
                        self.work.push_front(Work::Decide(pending, step));
                        self.rib_output(out, true);
                    }
                }
                Work::Sweep(pending, false) => {
                    self.work.push_front(Work::Sweep(pending, true));
                    return Some(Output::Sweeping(true));
                }
                Work::Sweep(mut pending, true) => {
                    match self.rib.decide_undecided(&mut pending, SWEEP_STEP) {
                        Some(out) => {
                            self.work.push_front(Work::Sweep(pending, true));
                            self.rib_output(out, true);
                        }
                        None => return Some(Output::Sweeping(false)),
                    }
                }
                Work::ForgetPeer(id, addr) => match self.rib.remove_peer(id) {
                    Ok(out) => {
                        self.rib_output(out, true);
                        info!(peer = %addr, "peer removed");
                    }
                    Err(e) => warn!(peer = %addr, error = %e, "peer not removed from the RIB"),
                },
                Work::AddPeer(now, p) => {
                    let addr = p.address;
                    if let Err(e) = self.add_peer_now(now, *p) {
                        warn!(peer = %addr, error = %e, "peer not added again");
                    }
                }
                Work::Input(now, input) => self.process(now, input),
            }
        }
    }

    /// When the core next wants [`Input::Timeout`]: a helper's restart
    /// timer (RFC 4724 §4.2) or the selection deferral timer (§4.1).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.restart_deadline)
            .chain(self.deferral_deadline)
            .min()
    }

    /// Feeds one input. It acts after any bulk work queued before it (see
    /// the module docs): drain [`SpeakerCore::poll_output`] after each call.
    pub fn handle(&mut self, now: Instant, input: Input) {
        // Only a plain UPDATE may leave decisions for later; anything else
        // (a session coming or going, End-of-RIB, a refresh, a timer) acts
        // on a Loc-RIB with every decision made.
        let plain_update = matches!(&input,
            Input::Session(PeerEvent { kind: PeerEventKind::Update(u), .. })
                if u.end_of_rib_family().is_none());
        if self.joins_sweep(&input) {
            self.process(now, input);
            return;
        }
        if !plain_update {
            self.decide_undecided();
        }
        if self.bulk_queued() {
            self.work.push_back(Work::Input(now, input));
        } else {
            self.process(now, input);
        }
    }

    fn bulk_queued(&self) -> bool {
        self.work.iter().any(|w| !matches!(w, Work::Out(_)))
    }

    fn process(&mut self, now: Instant, input: Input) {
        match input {
            Input::Session(ev) => self.event(now, ev),
            Input::Timeout => {
                self.restart_timers(now);
                if self.deferral_deadline.is_some_and(|t| t <= now) {
                    info!("selection deferral timer expired: advertising");
                    self.end_deferral();
                }
            }
        }
    }

    /// Runs bulk work left unpolled, so that what comes next acts on a
    /// RIB with it done (a driver that drains `poll_output` never leaves any).
    fn settle(&mut self) {
        if !self.bulk_queued() {
            return;
        }
        let mut done = VecDeque::new();
        while let Some(o) = self.poll_output() {
            done.push_back(o);
        }
        self.ready = done;
    }

    /// Prefix decisions left for later by plain UPDATEs.
    pub fn undecided(&self) -> usize {
        self.undecided.queued()
    }

    /// Prefixes with at least one path in the RIB.
    pub fn prefixes(&self) -> usize {
        self.rib.prefixes()
    }

    pub fn has_undecided(&self) -> bool {
        !self.undecided.is_empty()
    }

    /// When the oldest decision left for later was queued (to within a
    /// few milliseconds).
    pub fn undecided_since(&self) -> Option<Instant> {
        self.ages.oldest()
    }

    /// Runs up to `n` of the decisions left for later that were queued at
    /// or before `by`, oldest first.
    pub fn decide_queued_by(&mut self, by: Instant, n: usize) {
        let due = self.ages.queued_by(self.undecided.taken(), by);
        self.decide_some(due.min(n));
    }

    /// Runs up to `n` of the decisions left for later, oldest first (the
    /// driver calls this when its FIB consumer has taken all it was given).
    pub fn decide_some(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let step = left.min(UNDECIDED_STEP);
            let Some(out) = self.rib.decide_undecided(&mut self.undecided, step) else {
                break;
            };
            left -= step;
            self.emit(out);
        }
        self.ages.taken(self.undecided.taken());
    }

    /// Queues every decision left for later, run a step per
    /// [`SpeakerCore::poll_output`]. A driver calls this, and drains the
    /// outputs, before a management call.
    pub fn decide_undecided(&mut self) {
        if self.undecided.is_empty() {
            return;
        }
        // A fresh queue each time: a burst's buffer goes with it.
        let pending = std::mem::take(&mut self.undecided);
        self.ages.clear();
        self.work.push_back(Work::Decide(pending, UNDECIDED_STEP));
    }

    /// Queues the sweep of `id`'s paths (its session ended): into the
    /// sweep queued last, begun or not, so that sessions ending together
    /// are walked once and each prefix decided once
    /// (`Rib::merge_peer_down`), else as a sweep of its own.
    fn sweep_peer(&mut self, id: PeerId, keep: &[Family]) {
        if let Some(Work::Sweep(pending, _)) = self.work.back_mut() {
            if self.rib.merge_peer_down(pending, id, keep) {
                debug!(peer = ?id, "the session's end joins the sweep queued last");
                return;
            }
        }
        let pending = self.rib.peer_down_in_steps(id, keep);
        self.work.push_back(Work::Sweep(pending, false));
    }

    /// Whether `input`, a session's end (or a state change, which ends
    /// come with), can act now, ahead of bulk work, to join the sweep
    /// queued last: only outputs and sweeps are queued, and no decision is
    /// left for later, so no input is overtaken and the session ends on a
    /// Loc-RIB as it would after the bulk work (the paths it takes out are
    /// the same; the decisions are made once).
    fn joins_sweep(&self, input: &Input) -> bool {
        matches!(
            input,
            Input::Session(PeerEvent {
                kind: PeerEventKind::Down { .. } | PeerEventKind::State(_),
                ..
            })
        ) && !self.has_undecided()
            && matches!(self.work.back(), Some(Work::Sweep(..)))
            && self
                .work
                .iter()
                .all(|w| matches!(w, Work::Out(_) | Work::Sweep(..)))
    }

    /// Whether a dead peer's sweep is queued or under way: a session's end
    /// fed now joins it (see [`SpeakerCore::handle`]).
    pub fn sweeping(&self) -> bool {
        self.work.iter().any(|w| matches!(w, Work::Sweep(..)))
    }

    /// While a dead peer's sweep is queued or runs, feeds the events
    /// `next` has ready (the driver's queue) as long as they are sessions'
    /// ends or state changes (which come with ends): they join the sweep,
    /// before its walk begins if they were queued already. The first other
    /// event is fed too (it waits behind the sweep, as any would) and
    /// clears `joining`, ending the taking for this flush.
    pub fn take_ends(
        &mut self,
        now: Instant,
        joining: &mut bool,
        mut next: impl FnMut() -> Option<PeerEvent>,
    ) {
        while *joining && self.sweeping() {
            let Some(ev) = next() else { break };
            *joining = matches!(
                ev.kind,
                PeerEventKind::Down { .. } | PeerEventKind::State(_)
            );
            self.handle(now, Input::Session(ev));
        }
    }

    /// A RIB output into outputs: FIB changes, then UPDATEs per peer.
    fn rib_output(&mut self, out: rib::Output, front: bool) {
        for e in &out.errors {
            warn!(error = %e, "routes not advertised");
        }
        let mut outs = Vec::new();
        if out.changes.len() <= FIB_BATCH {
            if !out.changes.is_empty() {
                outs.push(Output::Fib(out.changes));
            }
        } else {
            let mut changes = out.changes.into_iter();
            while changes.len() > 0 {
                outs.push(Output::Fib(changes.by_ref().take(FIB_BATCH).collect()));
            }
        }
        if !out.messages.is_empty() {
            let mut per_peer: HashMap<PeerId, Vec<Bytes>> = HashMap::new();
            for (id, m) in out.messages {
                per_peer.entry(id).or_default().push(m);
            }
            for p in self.peers.values_mut() {
                if let Some(msgs) = per_peer.remove(&p.id) {
                    p.advertised += msgs.len() as u64;
                    let addr = p.settings.address;
                    outs.push(Output::Session(addr, SessionCommand::Send(msgs)));
                }
            }
        }
        if front {
            self.ready.extend(outs);
        } else {
            self.work.extend(outs.into_iter().map(Work::Out));
        }
    }

    fn emit(&mut self, out: rib::Output) {
        self.rib_output(out, false);
    }

    fn send_session(&mut self, addr: IpAddr, c: SessionCommand) {
        self.work.push_back(Work::Out(Output::Session(addr, c)));
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
            // RFC 4724 §3: R "indicates that the BGP speaker has restarted,
            // and its peer MUST NOT wait for the End-of-RIB marker from the
            // speaker"; §4.1: the Restarting Speaker sets it to re-establish
            // its sessions. We are restarting exactly while selection is
            // deferred (any start with graceful restart configured: a first
            // start cannot be told from a restart); `end_deferral` clears it
            // on every session. Peers that defer too must not wait for us
            // then, and after it a session flap is no restart of ours.
            //
            // N (RFC 8538 §2) when configured: once both OPENs carry it, a
            // NOTIFICATION keeps the routes stale on both sides (see the
            // Down handling below) and the FSM sends the NOTIFICATIONs that
            // must end a session for good as a Hard Reset.
            //
            // F (per family): "the forwarding state ... has indeed been
            // preserved during the previous BGP restart". petreld keeps its
            // kernel routes across its restarts and across session flaps,
            // so it is set; at a first start no peer holds stale routes of
            // ours, so it decides nothing (§4.2 reads it only for them).
            let restarting = self.deferral_deadline.is_some();
            let mut flags = if restarting { GrCap::RESTART_STATE } else { 0 };
            if gr.notification {
                flags |= GrCap::NOTIFICATION;
            }
            caps.push(Capability::GracefulRestart(GrCap {
                flags,
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

    /// Adds a peer: [`Output::AddSession`], then its start.
    pub fn add_peer(&mut self, now: Instant, p: PeerSettings) -> Result<(), SpeakerError> {
        self.settle();
        self.add_peer_now(now, p)
    }

    fn add_peer_now(&mut self, _now: Instant, p: PeerSettings) -> Result<(), SpeakerError> {
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
        let connect = ConnectOptions {
            local,
            md5_key: p.password.as_ref().map(|s| s.as_bytes().to_vec()),
            gtsm_hops: p.ttl_security,
            timeout: None,
        };
        let addr = p.address;
        self.last_session += 1;
        let session = SessionId(self.last_session);
        self.work
            .push_back(Work::Out(Output::AddSession(Box::new(SessionSetup {
                settings: p.clone(),
                id: session,
                fsm,
                connect,
            }))));
        self.send_session(addr, SessionCommand::Start);
        info!(peer = %addr, asn = p.asn, "peer added");
        self.peers.insert(
            addr,
            PeerEntry {
                settings: p,
                id,
                session,
                state: State::Idle,
                up_since: None,
                last_error: None,
                advertised: 0,
                peer_gr: None,
                hard_reset: false,
                llgr_families: Vec::new(),
                restart_deadline: None,
                stale_families: Vec::new(),
                enabled: true,
                families_up: Vec::new(),
                eor_received: Vec::new(),
                peer_restarting: false,
                enhanced_rr: false,
                closing: false,
                over_limit_warned: false,
            },
        );
        Ok(())
    }

    /// Removes a peer: its session stops, its routes are withdrawn (a step
    /// at a time), then [`Output::RemoveSession`].
    pub fn remove_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.settle();
        let p = self
            .peers
            .remove(&addr)
            .ok_or(SpeakerError::NoSuchPeer(addr))?;
        self.send_session(
            addr,
            SessionCommand::Stop {
                communication: Some("peer de-configured".into()),
            },
        );
        self.work
            .push_back(Work::Out(Output::RemoveSession(Box::new(p.settings))));
        let pending = self.rib.peer_down_in_steps(p.id, &[]);
        self.work.push_back(Work::Sweep(pending, false));
        self.work.push_back(Work::ForgetPeer(p.id, addr));
        Ok(())
    }

    /// The session a peer's events must come from.
    #[cfg(test)]
    fn session_of(&self, addr: IpAddr) -> SessionId {
        self.peers[&addr].session
    }

    /// A peer's current settings.
    pub fn peer_settings(&self, addr: IpAddr) -> Option<&PeerSettings> {
        self.peers.get(&addr).map(|p| &p.settings)
    }

    /// Replaces a peer's settings. A session parameter changed: only this
    /// peer restarts (removed and added again). Otherwise the new policy
    /// applies under the running session.
    pub fn update_peer(&mut self, now: Instant, p: PeerSettings) -> Result<(), SpeakerError> {
        self.settle();
        let Some(old) = self.peers.get(&p.address) else {
            return Err(SpeakerError::NoSuchPeer(p.address));
        };
        if old.settings.session_differs(&p) {
            self.remove_peer(p.address)?;
            // The old peer's withdrawal runs before the new one exists.
            self.work.push_back(Work::AddPeer(now, Box::new(p)));
            return Ok(());
        }
        let id = old.id;
        let cfg = self.rib_peer_config(&p);
        let r = self.rib.set_peer_config(id, (&cfg).into());
        if let Some(e) = self.peers.get_mut(&p.address) {
            e.settings = p;
        }
        let out = r?;
        self.emit(out);
        Ok(())
    }

    /// Starts or stops a peer (with an RFC 9003 communication).
    pub fn enable_peer(
        &mut self,
        addr: IpAddr,
        on: bool,
        communication: Option<String>,
    ) -> Result<(), SpeakerError> {
        self.settle();
        let p = self
            .peers
            .get_mut(&addr)
            .ok_or(SpeakerError::NoSuchPeer(addr))?;
        p.enabled = on;
        p.closing |= !on;
        let c = if on {
            SessionCommand::Start
        } else {
            SessionCommand::Stop { communication }
        };
        self.send_session(addr, c);
        Ok(())
    }

    /// Whether a connection from `addr` goes to a session: connections from
    /// unconfigured or disabled peers are refused at accept.
    pub fn accepts(&self, addr: IpAddr) -> bool {
        self.peers.get(&addr).is_some_and(|p| p.enabled)
    }

    /// Asks the peer to resend its routes (RFC 2918).
    pub fn refresh_peer(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.settle();
        let p = self
            .peers
            .get(&addr)
            .ok_or(SpeakerError::NoSuchPeer(addr))?;
        let families = p.settings.families.clone();
        for f in families {
            self.send_session(
                addr,
                SessionCommand::SendMessage(Box::new(Message::RouteRefresh(
                    RouteRefresh::request(f),
                ))),
            );
        }
        Ok(())
    }

    pub fn originate(&mut self, prefix: crate::wire::Prefix, attrs: crate::wire::PathAttributes) {
        self.settle();
        let out = self.rib.originate(prefix, attrs);
        self.emit(out);
    }

    pub fn withdraw(&mut self, prefix: crate::wire::Prefix) {
        self.settle();
        let out = self.rib.withdraw(prefix);
        self.emit(out);
    }

    /// The links of directly connected peers changed (fast external
    /// failover, see [`crate::session::LinkState`]). The sessions end by
    /// themselves, and their Down drops the routes; this drops at once the
    /// routes a peer kept stale from an earlier session (RFC 4724 §4.2
    /// helper) when its link goes: retention rests on the peer's
    /// forwarding state being usable (§1), which it is not across a dead
    /// link. A peer held by its link is not waited for in selection
    /// deferral either.
    pub fn set_links(&mut self, _now: Instant, links: &PeerLinks) {
        self.settle();
        for (addr, l) in links {
            let before = self.links.get(addr).map_or(0, |b| b.drops);
            let Some(p) = self.peers.get_mut(addr) else {
                continue;
            };
            if l.drops <= before || p.state == State::Established || p.stale_families.is_empty() {
                continue;
            }
            info!(peer = %addr, "link down: removing the peer's stale routes (fast external failover)");
            p.stale_families.clear();
            p.restart_deadline = None;
            let id = p.id;
            self.sweep_peer(id, &[]);
        }
        self.links = links.clone();
        self.maybe_end_deferral();
    }

    /// Whether `addr`'s link is down (its session held Idle).
    fn link_down(&self, addr: &IpAddr) -> bool {
        self.links.get(addr).is_some_and(|l| l.down)
    }

    /// Stops every session with a Cease / Administrative Shutdown.
    pub fn shutdown(&mut self, communication: Option<String>) {
        self.decide_undecided();
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in addrs {
            self.send_session(
                a,
                SessionCommand::Stop {
                    communication: communication.clone(),
                },
            );
        }
    }

    pub fn peers(&self, now: Instant) -> Vec<PeerSnapshot> {
        let mut v: Vec<PeerSnapshot> = self
            .peers
            .values()
            .map(|p| {
                let c = self.rib.counters(p.id).unwrap_or_default();
                PeerSnapshot {
                    address: p.settings.address,
                    asn: p.settings.asn,
                    state: p.state,
                    uptime: p
                        .up_since
                        .map(|t| now.saturating_duration_since(t))
                        .unwrap_or_default(),
                    received: c.received as u64,
                    accepted: c.accepted as u64,
                    advertised: p.advertised,
                    last_error: p.last_error.clone(),
                }
            })
            .collect();
        v.sort_by_key(|p| p.address);
        v
    }

    pub fn routes(&self, only: Option<crate::wire::Prefix>) -> Vec<RouteSnapshot> {
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

    fn event(&mut self, now: Instant, ev: PeerEvent) {
        // Only a plain UPDATE may leave decisions for later; anything else
        // (a session coming or going, End-of-RIB, a refresh) acts on a
        // Loc-RIB with every decision made.
        let plain_update =
            matches!(&ev.kind, PeerEventKind::Update(u) if u.end_of_rib_family().is_none());
        let Some(p) = self.peers.get_mut(&ev.peer) else {
            return;
        };
        if p.session != ev.session {
            // The end of a session this peer had before its settings
            // changed: the peer's routes went with the old entry.
            debug!(peer = %ev.peer, "event of an earlier session ignored");
            return;
        }
        let id = p.id;
        match ev.kind {
            PeerEventKind::State(s) => p.state = s,
            // RFC 4271 §6 / RFC 4486: once we decided to close the session,
            // what it read after the deciding message is not applied.
            PeerEventKind::Update(_) | PeerEventKind::RouteRefresh(_) if p.closing => {}
            PeerEventKind::Established { ctx, remote, local } => {
                p.state = State::Established;
                p.closing = false;
                p.over_limit_warned = false;
                p.up_since = Some(now);
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
                // RFC 4724 §4.2 (paraphrased): on the new session the helper
                // deletes at once the stale routes it retains for a family
                // when the OPEN has no Graceful Restart Capability, does not
                // list the family, or lists it with the F bit clear (the
                // peer lost that forwarding state); End-of-RIB may never come.
                // Past the restart time the routes are long-lived stale, and
                // the F bit of the LLGR capability's entry decides instead
                // (RFC 9494, paraphrased; BIRD decides the same way).
                let llgr_phase = p.restart_deadline.is_none();
                let preserved: Vec<Family> = remote_caps
                    .iter()
                    .filter_map(|c| match c {
                        Capability::GracefulRestart(g) if !llgr_phase => Some(
                            g.families
                                .iter()
                                .filter(|f| f.forwarding_preserved())
                                .map(|f| f.family)
                                .collect::<Vec<_>>(),
                        ),
                        Capability::LongLivedGracefulRestart(v) if llgr_phase => Some(
                            v.iter()
                                .filter(|f| f.flags & GracefulRestartFamily::FORWARDING_STATE != 0)
                                .map(|f| f.family)
                                .collect(),
                        ),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                let flush: Vec<Family> = std::mem::take(&mut p.stale_families)
                    .into_iter()
                    .filter(|f| !preserved.contains(f))
                    .collect();
                p.peer_gr = remote_caps.iter().find_map(|c| match c {
                    Capability::GracefulRestart(g) => Some((
                        g.restart_time,
                        g.families.iter().map(|f| f.family).collect(),
                    )),
                    _ => None,
                });
                let ours_n = p
                    .settings
                    .graceful_restart
                    .or(self.cfg.graceful_restart)
                    .is_some_and(|g| g.notification);
                p.hard_reset = ours_n
                    && remote_caps.iter().any(|c| {
                        matches!(c, Capability::GracefulRestart(g) if g.flags & GrCap::NOTIFICATION != 0)
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
                for f in flush {
                    info!(peer = %ev.peer, family = %f, "forwarding state not preserved across the restart: removing stale routes");
                    let out = self.rib.end_of_rib(id, f);
                    self.emit(out);
                }
                let out = self.rib.peer_up(id, session);
                self.emit(out);
                self.maybe_end_deferral();
            }
            PeerEventKind::Down {
                reason,
                was_established,
            } => {
                p.state = State::Idle;
                p.up_since = None;
                p.closing = false;
                p.last_error = Some(reason.to_string());
                if was_established {
                    // RFC 4724 §4.2: as helper, keep the peer's routes stale
                    // for the families it preserves, until End-of-RIB or the
                    // restart time. §4.2 covers the TCP connection's loss
                    // only: without RFC 8538 a NOTIFICATION ends the session
                    // and its routes for good. RFC 8538 §4: with the N bit
                    // negotiated, a NOTIFICATION sent or received is treated
                    // as the connection's loss, except a Hard Reset (§3).
                    //
                    // Fast external failover: the link to the peer is down,
                    // so its forwarding state cannot be used (§1) and the
                    // routes go at once, as BIRD and FRR do. That holds for
                    // a lost connection seen before the link's own report.
                    let link_down = self.links.get(&ev.peer).is_some_and(|l| l.down);
                    let graceful = !link_down
                        && match &reason {
                            DownReason::ConnectionLost => true,
                            DownReason::NotificationSent(n)
                            | DownReason::NotificationReceived(n) => {
                                p.hard_reset && !n.is_hard_reset()
                            }
                            DownReason::Stopped | DownReason::LinkDown => false,
                        };
                    let keep: Vec<Family> = match &p.peer_gr {
                        Some((_, fams)) if graceful => fams.clone(),
                        _ => Vec::new(),
                    };
                    if !keep.is_empty() {
                        let t = p.peer_gr.as_ref().map(|g| g.0).unwrap_or(0);
                        p.restart_deadline = Some(now + Duration::from_secs(t as u64));
                    }
                    p.stale_families = keep.clone();
                    self.sweep_peer(id, &keep);
                }
            }
            PeerEventKind::Update(u) => {
                if let Some(f) = u.end_of_rib_family() {
                    if !p.eor_received.contains(&f) {
                        p.eor_received.push(f);
                    }
                }
                let out = if plain_update {
                    let out = self.rib.receive_undecided(id, &u, &mut self.undecided);
                    self.ages.queued(now, self.undecided.pushed());
                    out
                } else {
                    self.rib.receive(id, &u)
                };
                self.check_max_prefix(ev.peer, &u);
                self.emit(out);
                self.maybe_end_deferral();
            }
            PeerEventKind::RouteRefresh(r) => {
                let enhanced = p.enhanced_rr;
                match r.subtype {
                    RefreshSubtype::Request => {
                        // RFC 2918 §4: resend our Adj-RIB-Out for the family;
                        // RFC 7313 §4: bracketed by BoRR and EoRR when the
                        // peer speaks enhanced route refresh.
                        let mark = |subtype| {
                            SessionCommand::SendMessage(Box::new(Message::RouteRefresh(
                                RouteRefresh {
                                    family: r.family,
                                    subtype,
                                },
                            )))
                        };
                        if enhanced {
                            self.send_session(ev.peer, mark(RefreshSubtype::BeginningOfRefresh));
                        }
                        let out = self.rib.refresh(id, r.family);
                        self.emit(out);
                        if enhanced {
                            self.send_session(ev.peer, mark(RefreshSubtype::EndOfRefresh));
                        }
                    }
                    RefreshSubtype::BeginningOfRefresh => {
                        let out = self.rib.begin_refresh(id, r.family);
                        self.emit(out);
                    }
                    RefreshSubtype::EndOfRefresh => {
                        let out = self.rib.end_refresh(id, r.family);
                        self.emit(out);
                    }
                    // RFC 7313 §5: other subtypes are ignored.
                    RefreshSubtype::Reserved(_) => {}
                }
            }
        }
    }

    /// Ends selection deferral once every configured, enabled peer is up and
    /// has sent End-of-RIB for each family it negotiated (RFC 4724 §4.1).
    fn maybe_end_deferral(&mut self) {
        if self.deferral_deadline.is_none() {
            return;
        }
        // RFC 4724 §4.1: End-of-RIB from all peers, "excluding the ones with
        // the Restart State bit set in the received capability and excluding
        // the ones that do not advertise the graceful restart capability"
        // (two restarting speakers must not wait for each other).
        // A peer held Idle by its link cannot send End-of-RIB; it is not
        // waited for, like a disabled one.
        let all = self
            .peers
            .values()
            .filter(|p| p.enabled && !self.link_down(&p.settings.address))
            .all(|p| {
                if p.state == State::Established && (p.peer_gr.is_none() || p.peer_restarting) {
                    return true;
                }
                p.state == State::Established
                    && p.families_up.iter().all(|f| p.eor_received.contains(f))
            });
        if all {
            info!("End-of-RIB from every peer: selection deferral over, advertising");
            self.end_deferral();
        }
    }

    fn end_deferral(&mut self) {
        self.deferral_deadline = None;
        // RFC 4724 §3: our restart is over; later OPENs say so (R = 0).
        let gr_peers: Vec<IpAddr> = self
            .peers
            .values()
            .filter(|p| {
                p.settings
                    .graceful_restart
                    .or(self.cfg.graceful_restart)
                    .is_some()
            })
            .map(|p| p.settings.address)
            .collect();
        for a in gr_peers {
            self.send_session(a, SessionCommand::RestartState(false));
        }
        self.work.push_back(Work::Out(Output::Converged));
        let out = self.rib.end_deferral();
        self.emit(out);
    }

    /// After `update` from the peer at `addr`: closes the session (or
    /// warns) when the peer's accepted routes exceed its limit.
    fn check_max_prefix(&mut self, addr: IpAddr, update: &Update) {
        let Some(p) = self.peers.get_mut(&addr) else {
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
                if !std::mem::replace(&mut p.over_limit_warned, true) {
                    warn!(peer = %addr, accepted, limit, "maximum prefix count exceeded")
                }
            }
            MaxPrefixAction::Restart(after) => {
                // RFC 4486 §4: one Cease / 1 closes the session; UPDATEs
                // already read behind this one are dropped (`closing`).
                p.closing = true;
                warn!(peer = %addr, accepted, limit, "maximum prefix count exceeded: closing the session");
                let fallback = p
                    .families_up
                    .first()
                    .copied()
                    .unwrap_or(Family::IPV4_UNICAST);
                let n = max_prefix_cease(exceeding_family(update, fallback), limit);
                self.send_session(
                    addr,
                    SessionCommand::AdminDown {
                        notification: n,
                        idle: Some(after),
                    },
                );
            }
        }
    }

    fn restart_timers(&mut self, now: Instant) {
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
            self.emit(out);
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
    use crate::wire::attr::{AsPath, MpReach, NextHop, Origin, PathAttributes};
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

    const T0_GR: super::super::GracefulRestartSettings = super::super::GracefulRestartSettings {
        restart_time: 120,
        long_lived_stale_time: None,
        notification: true,
    };

    fn a(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
    }

    /// A restarting speaker (graceful restart configured) with peers 10.0.0.2
    /// and 10.0.0.3, its outputs so far drained.
    fn restarting_core(now: Instant) -> SpeakerCore {
        let cfg = SpeakerConfig {
            local_as: 65001,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            cluster_id: None,
            listen: Vec::new(),
            graceful_restart: Some(T0_GR),
            max_paths: 1,
            threads: 1,
            bfd: Default::default(),
        };
        let mut core = SpeakerCore::new(cfg, now);
        for i in [2, 3] {
            core.add_peer(now, PeerSettings::new(a(i), 65000 + i as u32))
                .unwrap();
        }
        drain(&mut core);
        core
    }

    fn drain(core: &mut SpeakerCore) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn converged(outs: &[Output]) -> bool {
        outs.iter().any(|o| matches!(o, Output::Converged))
    }

    /// The peer's OPEN: IPv4 unicast, graceful restart with `flags`.
    fn up(core: &mut SpeakerCore, now: Instant, i: u8, gr_flags: Option<u8>) -> Vec<Output> {
        up_f(
            core,
            now,
            i,
            gr_flags,
            GracefulRestartFamily::FORWARDING_STATE,
            None,
        )
    }

    /// [`up`] with IPv4 unicast's per-family flags (the F bit) `family_flags`
    /// and, if `llgr_flags`, an LLGR capability entry with those flags.
    fn up_f(
        core: &mut SpeakerCore,
        now: Instant,
        i: u8,
        gr_flags: Option<u8>,
        family_flags: u8,
        llgr_flags: Option<u8>,
    ) -> Vec<Output> {
        let mut caps = vec![Capability::Multiprotocol(Family::IPV4_UNICAST)];
        if let Some(flags) = gr_flags {
            caps.push(Capability::GracefulRestart(GrCap {
                flags,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    family: Family::IPV4_UNICAST,
                    flags: family_flags,
                }],
            }));
        }
        if let Some(flags) = llgr_flags {
            caps.push(Capability::LongLivedGracefulRestart(vec![LlgrFamily {
                family: Family::IPV4_UNICAST,
                flags,
                stale_time: 3600,
            }]));
        }
        let open = crate::wire::Open::new(65000 + i as u32, 90, Ipv4Addr::new(10, 0, 0, i), caps);
        let ev = PeerEvent {
            peer: a(i),
            session: core.session_of(a(i)),
            kind: PeerEventKind::Established {
                ctx: Default::default(),
                remote: Box::new(open),
                local: Some(SocketAddr::new(a(1), 179)),
            },
        };
        core.handle(now, Input::Session(ev));
        drain(core)
    }

    fn end_of_rib(core: &mut SpeakerCore, now: Instant, i: u8) -> Vec<Output> {
        let ev = PeerEvent {
            peer: a(i),
            session: core.session_of(a(i)),
            kind: PeerEventKind::Update(Box::new(Update::end_of_rib(Family::IPV4_UNICAST))),
        };
        core.handle(now, Input::Session(ev));
        drain(core)
    }

    /// A settings change that needs a new session removes the peer and adds
    /// it again. The old session task reports its end on the same channel,
    /// under the same address, and may do so after the new session is up
    /// (seen in the lab: an ADD-PATH change on a reflector and its client,
    /// both sides resetting at once): that late Down must not take the new
    /// session's state or routes.
    #[test]
    fn an_earlier_sessions_events_do_not_touch_the_new_one() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        up(&mut core, t0, 2, None);
        up(&mut core, t0, 3, None);
        end_of_rib(&mut core, t0, 2);
        end_of_rib(&mut core, t0, 3);
        let old = core.session_of(a(2));

        let mut changed = PeerSettings::new(a(2), 65002);
        changed.hold_time = 30;
        core.update_peer(t0, changed).unwrap();
        let outs = drain(&mut core);
        let new = core.session_of(a(2));
        assert_ne!(old, new);
        assert!(outs.iter().any(
            |o| matches!(o, Output::AddSession(s) if s.settings.address == a(2) && s.id == new)
        ));

        up(&mut core, t0, 2, None);
        announce(&mut core, t0, 2);
        assert_eq!(core.routes(None).len(), 1);

        // The old task's last words, after the new session is up.
        let cease = Notification::bare(ErrorCode::Cease(CeaseError::HardReset));
        for kind in [
            PeerEventKind::Down {
                reason: DownReason::NotificationSent(cease),
                was_established: true,
            },
            PeerEventKind::State(State::Idle),
        ] {
            core.handle(
                t0,
                Input::Session(PeerEvent {
                    peer: a(2),
                    session: old,
                    kind,
                }),
            );
        }
        drain(&mut core);
        let p = core
            .peers(t0)
            .into_iter()
            .find(|p| p.address == a(2))
            .unwrap();
        assert_eq!(p.state, State::Established);
        assert_eq!(core.routes(None).len(), 1, "the new session's route stays");
    }

    /// RFC 4724 §4.1: deferral lasts until every peer that is up has sent
    /// End-of-RIB, not merely until it is up.
    #[test]
    fn deferral_waits_for_end_of_rib_from_every_peer() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        assert!(!core.converged());
        assert!(!converged(&up(&mut core, t0, 2, Some(GrCap::NOTIFICATION))));
        assert!(!converged(&up(&mut core, t0, 3, Some(GrCap::NOTIFICATION))));
        assert!(!converged(&end_of_rib(&mut core, t0, 2)));
        assert!(!core.converged());
        assert!(converged(&end_of_rib(&mut core, t0, 3)));
        assert!(core.converged());
        assert_eq!(core.poll_timeout(), None);
    }

    /// §4.1: peers without graceful restart, and peers restarting too (the
    /// Restart State bit), are not waited for.
    #[test]
    fn deferral_does_not_wait_for_restarting_or_non_gr_peers() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        assert!(!converged(&up(&mut core, t0, 2, None)));
        let outs = up(
            &mut core,
            t0,
            3,
            Some(GrCap::RESTART_STATE | GrCap::NOTIFICATION),
        );
        assert!(converged(&outs));
    }

    /// §4.1: a peer that never comes up holds deferral back only until the
    /// deferral timer (the restart time, 120 s), which `poll_timeout` asks for.
    #[test]
    fn deferral_timer() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        up(&mut core, t0, 2, Some(GrCap::NOTIFICATION));
        end_of_rib(&mut core, t0, 2);
        let deadline = t0 + Duration::from_secs(120);
        assert_eq!(core.poll_timeout(), Some(deadline));
        core.handle(deadline - Duration::from_millis(1), Input::Timeout);
        assert!(!converged(&drain(&mut core)));
        core.handle(deadline, Input::Timeout);
        assert!(converged(&drain(&mut core)));
    }

    /// RFC 4724 §4.2: the helper's restart timer is armed by a lost
    /// connection of a GR peer. A NOTIFICATION arms it only when both
    /// OPENs carried RFC 8538's N bit (§4), and a Hard Reset never (§3).
    #[test]
    fn helper_restart_timer_armed_by_a_lost_connection_or_a_soft_notification() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        up(&mut core, t0, 2, Some(0));
        up(&mut core, t0, 3, Some(GrCap::NOTIFICATION));
        end_of_rib(&mut core, t0, 2);
        end_of_rib(&mut core, t0, 3);
        let t1 = t0 + Duration::from_secs(10);
        let down = |core: &SpeakerCore, peer, reason| PeerEvent {
            peer: a(peer),
            session: core.session_of(a(peer)),
            kind: PeerEventKind::Down {
                reason,
                was_established: true,
            },
        };
        let reset = Notification::bare(ErrorCode::Cease(CeaseError::AdministrativeReset));
        // Peer 2 has no N bit: its NOTIFICATION ends it for good.
        core.handle(
            t1,
            Input::Session(down(
                &core,
                2,
                DownReason::NotificationReceived(reset.clone()),
            )),
        );
        drain(&mut core);
        assert_eq!(core.poll_timeout(), None);
        up(&mut core, t1, 2, Some(0));
        core.handle(
            t1,
            Input::Session(down(&core, 2, DownReason::ConnectionLost)),
        );
        drain(&mut core);
        assert_eq!(core.poll_timeout(), Some(t1 + Duration::from_secs(120)));

        // Peer 3 has it: the same NOTIFICATION keeps its routes stale, a
        // Hard Reset does not.
        let t2 = t1 + Duration::from_secs(1);
        let hard = Notification::hard_reset(&reset);
        core.handle(
            t2,
            Input::Session(down(&core, 3, DownReason::NotificationReceived(hard))),
        );
        drain(&mut core);
        assert_eq!(core.poll_timeout(), Some(t1 + Duration::from_secs(120)));
        up(&mut core, t2, 3, Some(GrCap::NOTIFICATION));
        core.handle(
            t2,
            Input::Session(down(&core, 3, DownReason::NotificationSent(reset))),
        );
        drain(&mut core);
        assert_eq!(core.poll_timeout(), Some(t1 + Duration::from_secs(120)));
        assert!(core.peers[&a(3)].restart_deadline == Some(t2 + Duration::from_secs(120)));
    }

    /// RFC 4724 §4.2, helper: the reconnecting peer's OPEN decides what
    /// happens to the routes kept stale: with the F bit clear for IPv4
    /// unicast (or no capability at all) they go at Established; with it set
    /// they stay until End-of-RIB. Past the restart time (long-lived stale,
    /// RFC 9494) the LLGR capability's F bit decides instead.
    #[test]
    fn reconnecting_peers_f_bit_decides_its_stale_routes() {
        let f = GracefulRestartFamily::FORWARDING_STATE;
        // (back after, GR capability flags, its F, LLGR entry's flags, kept)
        let cases = [
            (5, Some(0), f, None, true),
            (5, Some(0), 0, None, false),
            (5, None, f, None, false),
            (5, Some(0), f, Some(0), true),
            (130, Some(0), f, Some(0), false),
            (130, Some(0), 0, Some(f), true),
        ];
        for (after, gr, family_flags, llgr, kept) in cases {
            let t0 = Instant::now();
            let mut core = restarting_core(t0);
            core.handle(t0 + Duration::from_secs(120), Input::Timeout);
            drain(&mut core);
            up_f(&mut core, t0, 2, Some(0), f, Some(f));
            announce(&mut core, t0, 2);
            core.handle(
                t0,
                Input::Session(PeerEvent {
                    peer: a(2),
                    session: core.session_of(a(2)),
                    kind: PeerEventKind::Down {
                        reason: DownReason::ConnectionLost,
                        was_established: true,
                    },
                }),
            );
            drain(&mut core);
            let t1 = t0 + Duration::from_secs(after);
            core.handle(t1, Input::Timeout);
            drain(&mut core);
            // Kept through the drop: stale, or long-lived stale after 120 s.
            assert_eq!(core.routes(None).len(), 1);

            up_f(&mut core, t1, 2, gr, family_flags, llgr);
            let case = format!("{after} s, {gr:?} {family_flags:#x} {llgr:?}");
            assert_eq!(core.routes(None).len(), usize::from(kept), "{case}");
            end_of_rib(&mut core, t1, 2);
            assert!(core.routes(None).is_empty(), "{case}");
        }
    }

    /// A session drop's withdrawals are decided a step at a time, as outputs
    /// are polled: nothing is computed ahead of the driver, so its bounded
    /// FIB channel holds a whole table back (module docs).
    #[test]
    fn a_dropped_table_is_withdrawn_a_step_at_a_time() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        // Not restarting: past the deferral.
        core.handle(t0 + Duration::from_secs(120), Input::Timeout);
        drain(&mut core);
        up(&mut core, t0, 2, None);
        let mut u = Update::new(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(&[65002])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ..Default::default()
        });
        let n = 3 * SWEEP_STEP + 7;
        let prefixes: Vec<crate::wire::Prefix> = (0..n)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect();
        u.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, &prefixes);
        core.handle(
            t0,
            Input::Session(PeerEvent {
                peer: a(2),
                session: core.session_of(a(2)),
                kind: PeerEventKind::Update(Box::new(u)),
            }),
        );
        core.decide_undecided();
        drain(&mut core);
        assert_eq!(core.routes(None).len(), n);

        let cease = Notification::bare(ErrorCode::Cease(CeaseError::AdministrativeReset));
        core.handle(
            t0,
            Input::Session(PeerEvent {
                peer: a(2),
                session: core.session_of(a(2)),
                kind: PeerEventKind::Down {
                    reason: DownReason::NotificationReceived(cease),
                    was_established: true,
                },
            }),
        );
        assert!(core.ready.is_empty(), "nothing decided before it is polled");
        let outs = drain(&mut core);
        let batches: Vec<usize> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Fib(c) => Some(c.len()),
                _ => None,
            })
            .collect();
        // Bounded batches: the driver's bounded queue bounds memory.
        assert!(batches.iter().all(|b| *b <= FIB_BATCH), "{batches:?}");
        assert_eq!(batches.iter().sum::<usize>(), n);
        assert!(core.routes(None).is_empty());
        // The sweep is marked around its withdrawals, once.
        let mark = |on: bool| {
            outs.iter()
                .position(|o| matches!(o, Output::Sweeping(b) if *b == on))
                .unwrap()
        };
        let fib = |o: &Output| matches!(o, Output::Fib(_));
        let (begin, end) = (mark(true), mark(false));
        assert!(outs[..begin].iter().all(|o| !fib(o)));
        assert!(outs[end..].iter().all(|o| !fib(o)));
        let marks = outs.iter().filter(|o| matches!(o, Output::Sweeping(_)));
        assert_eq!(marks.count(), 2);
    }

    /// Peer `i` announces `prefixes` with an AS path of `len` ASNs.
    fn announce_all(
        core: &mut SpeakerCore,
        now: Instant,
        i: u8,
        len: u32,
        prefixes: &[crate::wire::Prefix],
    ) {
        let ev = update_event(core, i, len, prefixes);
        core.handle(now, Input::Session(ev));
        core.decide_undecided();
        drain(core);
    }

    /// Peer `i`'s UPDATE announcing `prefixes` with an AS path of `len`.
    fn update_event(
        core: &SpeakerCore,
        i: u8,
        len: u32,
        prefixes: &[crate::wire::Prefix],
    ) -> PeerEvent {
        let path: Vec<u32> = (0..len).map(|_| 65000 + i as u32).collect();
        let mut u = Update::new(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(&path)),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, i)),
            ..Default::default()
        });
        u.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, prefixes);
        PeerEvent {
            peer: a(i),
            session: core.session_of(a(i)),
            kind: PeerEventKind::Update(Box::new(u)),
        }
    }

    fn down_event(core: &SpeakerCore, i: u8) -> Input {
        let cease = Notification::bare(ErrorCode::Cease(CeaseError::AdministrativeReset));
        Input::Session(PeerEvent {
            peer: a(i),
            session: core.session_of(a(i)),
            kind: PeerEventKind::Down {
                reason: DownReason::NotificationReceived(cease),
                was_established: true,
            },
        })
    }

    /// Two peers' sessions end together: the second joins the first one's
    /// sweep, before it begins or while it runs, and every prefix goes
    /// once, straight to unreachable, instead of first moving to the
    /// second peer's path.
    #[test]
    fn sessions_ending_together_are_swept_once() {
        for polled_between in [0, 3] {
            let t0 = Instant::now();
            let mut core = restarting_core(t0);
            core.handle(t0 + Duration::from_secs(120), Input::Timeout);
            drain(&mut core);
            up(&mut core, t0, 2, None);
            up(&mut core, t0, 3, None);
            let n = 4 * SWEEP_STEP;
            let prefixes: Vec<crate::wire::Prefix> = (0..n)
                .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
                .collect();
            // 2's path is shorter: best everywhere; 3's the backup.
            announce_all(&mut core, t0, 2, 1, &prefixes);
            announce_all(&mut core, t0, 3, 2, &prefixes);
            assert_eq!(core.routes(None).len(), 2 * n, "both peers' paths");

            let d2 = down_event(&core, 2);
            core.handle(t0, d2);
            // The driver may have carried out a few outputs (the walk
            // begun) before the second end is read.
            let mut outs: Vec<Output> = (0..polled_between)
                .filter_map(|_| core.poll_output())
                .collect();
            assert!(core.sweeping());
            let d3 = down_event(&core, 3);
            core.handle(t0, d3);
            outs.extend(drain(&mut core));
            let (moved, gone) = moved_and_gone(&outs);
            // Begun: the prefixes of its first step had moved to 3's path.
            let early = if polled_between > 0 { SWEEP_STEP } else { 0 };
            assert_eq!(moved, early, "polled {polled_between}");
            assert_eq!(gone, n, "polled {polled_between}");
            assert!(core.routes(None).is_empty());
            let marks = outs.iter().filter(|o| matches!(o, Output::Sweeping(_)));
            assert_eq!(marks.count(), 2, "one sweep");
        }
    }

    /// Under a steady stream (coalesced decisions), what was queued by a
    /// given instant is decided and nothing queued after it: a prefix only
    /// one source has sent so far waits for the others, so no interim best
    /// goes out. 2 sends A, then B 100 ms later; 3 sends A, its path the
    /// better one, 150 ms after the start. Deciding what was queued by
    /// 50 ms decides A once, on both paths, and leaves B.
    #[test]
    fn decisions_due_by_an_instant_take_only_what_was_queued_by_then() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut core = restarting_core(t0);
        core.handle(t0 + Duration::from_secs(120), Input::Timeout);
        drain(&mut core);
        up(&mut core, t0, 2, None);
        up(&mut core, t0, 3, None);
        let p = |i: usize| -> crate::wire::Prefix {
            format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()
        };
        let via3 = Some(a(3));
        let a: Vec<_> = (0..100).map(p).collect();
        let b: Vec<_> = (100..200).map(p).collect();
        let feed =
            |core: &mut SpeakerCore, at: Duration, i: u8, len: u32, ps: &[crate::wire::Prefix]| {
                let ev = update_event(core, i, len, ps);
                core.handle(t0 + at, Input::Session(ev));
            };
        feed(&mut core, ms(0), 2, 2, &a);
        feed(&mut core, ms(100), 2, 2, &b);
        feed(&mut core, ms(150), 3, 1, &a);
        assert!(drain(&mut core)
            .iter()
            .all(|o| !matches!(o, Output::Fib(_))));
        assert_eq!(core.undecided(), 300);
        assert_eq!(core.undecided_since(), Some(t0));

        core.decide_queued_by(t0 + ms(50), usize::MAX);
        let outs = drain(&mut core);
        let best: Vec<_> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Fib(c) => Some(c.iter()),
                _ => None,
            })
            .flatten()
            .map(|c| (c.prefix(), c.best().and_then(|r| r.attrs.next_hop_addr())))
            .collect();
        assert_eq!(best.len(), 100, "A, once each");
        assert!(best.iter().all(|(pfx, nh)| a.contains(pfx) && *nh == via3));
        assert_eq!(core.undecided(), 200, "B and 3's A are left");
        assert_eq!(core.undecided_since(), Some(t0 + ms(100)));

        // Nothing more was queued by 50 ms.
        core.decide_queued_by(t0 + ms(50), usize::MAX);
        assert_eq!(core.undecided(), 200);
        // The rest: B on 2's path; A again, unchanged.
        core.decide_queued_by(t0 + ms(150), usize::MAX);
        let changes: usize = drain(&mut core)
            .iter()
            .filter_map(|o| match o {
                Output::Fib(c) => Some(c.len()),
                _ => None,
            })
            .sum();
        assert_eq!(changes, 100);
        assert!(!core.has_undecided());
        assert_eq!(core.undecided_since(), None);
    }

    /// FIB changes among `outs` that moved a prefix to another path, and
    /// those that left it unreachable.
    fn moved_and_gone(outs: &[Output]) -> (usize, usize) {
        let changes = outs
            .iter()
            .filter_map(|o| match o {
                Output::Fib(c) => Some(c.iter()),
                _ => None,
            })
            .flatten();
        changes.fold((0, 0), |(m, g), c| match c.best() {
            Some(_) => (m + 1, g),
            None => (m, g + 1),
        })
    }

    /// What the driver does with its queue after reading a session's end
    /// (`take_ends` between outputs): the ends and state changes queued
    /// behind it join the sweep before its walk begins; the first other
    /// event (an UPDATE) is fed and ends the taking, so an end queued after
    /// it waits for the next read.
    #[test]
    fn ends_queued_behind_an_end_join_its_sweep_before_the_walk() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        core.add_peer(t0, PeerSettings::new(a(4), 65004)).unwrap();
        core.handle(t0 + Duration::from_secs(120), Input::Timeout);
        drain(&mut core);
        for i in [2, 3, 4] {
            up(&mut core, t0, i, None);
        }
        let n = 4 * SWEEP_STEP;
        let prefixes: Vec<crate::wire::Prefix> = (0..n)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect();
        announce_all(&mut core, t0, 2, 1, &prefixes);
        announce_all(&mut core, t0, 3, 2, &prefixes);
        let event = |input: Input| match input {
            Input::Session(e) => e,
            _ => unreachable!(),
        };
        let late: crate::wire::Prefix = "10.200.0.0/24".parse().unwrap();
        let mut queue: std::collections::VecDeque<PeerEvent> = [
            PeerEvent {
                peer: a(3),
                session: core.session_of(a(3)),
                kind: PeerEventKind::State(crate::fsm::State::Idle),
            },
            event(down_event(&core, 3)),
            update_event(&core, 4, 1, &[late]),
            event(down_event(&core, 4)),
        ]
        .into();
        let d2 = down_event(&core, 2);
        core.handle(t0, d2);
        let mut joining = true;
        let mut outs = Vec::new();
        loop {
            core.take_ends(t0, &mut joining, || queue.pop_front());
            let Some(o) = core.poll_output() else { break };
            outs.push(o);
        }
        assert_eq!(queue.len(), 1, "4's end waits behind its UPDATE");
        // Joined before the walk: nothing moved to 3's path on the way.
        assert_eq!(moved_and_gone(&outs), (0, n));
        let marks = outs.iter().filter(|o| matches!(o, Output::Sweeping(_)));
        assert_eq!(marks.count(), 2, "one sweep");
        // The UPDATE fed behind the sweep is in.
        core.decide_undecided();
        drain(&mut core);
        assert_eq!(core.routes(None).len(), 1);
    }

    /// Peer `i` announces 10.9.0.0/24 and the decision runs.
    fn announce(core: &mut SpeakerCore, now: Instant, i: u8) {
        announce_all(core, now, i, 1, &["10.9.0.0/24".parse().unwrap()]);
    }

    fn session_down(
        core: &mut SpeakerCore,
        now: Instant,
        i: u8,
        reason: DownReason,
    ) -> Vec<Output> {
        core.handle(
            now,
            Input::Session(PeerEvent {
                peer: a(i),
                session: core.session_of(a(i)),
                kind: PeerEventKind::Down {
                    reason,
                    was_established: true,
                },
            }),
        );
        drain(core)
    }

    fn links(down: &[(u8, bool, u64)]) -> PeerLinks {
        down.iter()
            .map(|(i, down, drops)| {
                (
                    a(*i),
                    crate::session::LinkState {
                        down: *down,
                        drops: *drops,
                    },
                )
            })
            .collect()
    }

    /// The withdrawals of 10.9.0.0/24 among `outs`.
    fn withdrawn(outs: &[Output]) -> usize {
        outs.iter()
            .filter_map(|o| match o {
                Output::Fib(c) => Some(c.iter().filter(|c| c.best().is_none()).count()),
                _ => None,
            })
            .sum()
    }

    /// Fast external failover: a session ended because its link went down
    /// drops the peer's routes at once, although graceful restart with
    /// RFC 8538's N bit is negotiated (which keeps them across a lost
    /// connection, the contrast below): the link they were reached through
    /// is gone, so no forwarding state can be preserved (RFC 4724 §1). No
    /// restart timer is armed.
    #[test]
    fn link_down_drops_routes_at_once_despite_graceful_restart() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        core.handle(t0 + Duration::from_secs(120), Input::Timeout);
        drain(&mut core);
        let t1 = t0 + Duration::from_secs(121);
        up(&mut core, t1, 2, Some(GrCap::NOTIFICATION));
        announce(&mut core, t1, 2);
        assert_eq!(core.routes(None).len(), 1);

        // The contrast: a lost connection keeps the route, stale.
        session_down(&mut core, t1, 2, DownReason::ConnectionLost);
        assert_eq!(core.routes(None).len(), 1);
        assert!(core.routes(None)[0].stale);
        assert_eq!(core.poll_timeout(), Some(t1 + Duration::from_secs(120)));
        up(&mut core, t1, 2, Some(GrCap::NOTIFICATION));
        announce(&mut core, t1, 2);
        end_of_rib(&mut core, t1, 2);
        assert_eq!(core.poll_timeout(), None);

        // The session reports the link: the route goes with the Down.
        core.set_links(t1, &links(&[(2, true, 1)]));
        drain(&mut core);
        assert_eq!(core.routes(None).len(), 1, "the session's Down drops it");
        let outs = session_down(&mut core, t1, 2, DownReason::LinkDown);
        assert_eq!(withdrawn(&outs), 1);
        assert!(core.routes(None).is_empty());
        assert_eq!(core.poll_timeout(), None, "no restart timer");
        assert!(core.peers(t1)[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("link down")));
    }

    /// The connection may be seen lost before the session hears of its
    /// link (or a Down with any reason comes while the link is down): the
    /// routes go all the same.
    #[test]
    fn a_lost_connection_while_the_link_is_down_keeps_nothing() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        core.handle(t0 + Duration::from_secs(120), Input::Timeout);
        drain(&mut core);
        up(&mut core, t0, 2, Some(GrCap::NOTIFICATION));
        announce(&mut core, t0, 2);
        core.set_links(t0, &links(&[(2, true, 1)]));
        drain(&mut core);
        let outs = session_down(&mut core, t0, 2, DownReason::ConnectionLost);
        assert_eq!(withdrawn(&outs), 1);
        assert!(core.routes(None).is_empty());
        assert_eq!(core.poll_timeout(), None);
    }

    /// Routes kept stale from an earlier session (its connection lost,
    /// the peer restarting) go at once when the peer's link goes down,
    /// not at the end of the restart time; a drop counted before (the
    /// same count again) removes nothing more.
    #[test]
    fn link_down_removes_routes_kept_stale_from_an_earlier_session() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        core.handle(t0 + Duration::from_secs(120), Input::Timeout);
        drain(&mut core);
        let t1 = t0 + Duration::from_secs(121);
        up(&mut core, t1, 2, Some(GrCap::NOTIFICATION));
        announce(&mut core, t1, 2);
        session_down(&mut core, t1, 2, DownReason::ConnectionLost);
        assert_eq!(core.routes(None).len(), 1);

        // Another peer's link, or this one's without a new drop: kept.
        core.set_links(t1, &links(&[(3, true, 1)]));
        assert_eq!(withdrawn(&drain(&mut core)), 0);
        core.set_links(t1, &links(&[(2, false, 0), (3, true, 1)]));
        assert_eq!(withdrawn(&drain(&mut core)), 0);
        assert_eq!(core.routes(None).len(), 1);

        core.set_links(t1, &links(&[(2, true, 1), (3, true, 1)]));
        assert_eq!(withdrawn(&drain(&mut core)), 1);
        assert!(core.routes(None).is_empty());
        assert_eq!(core.poll_timeout(), None, "the restart timer is off");
    }

    /// RFC 4724 §4.1: a peer held Idle by its link cannot send
    /// End-of-RIB, and selection deferral does not wait for it.
    #[test]
    fn deferral_does_not_wait_for_a_peer_whose_link_is_down() {
        let t0 = Instant::now();
        let mut core = restarting_core(t0);
        up(&mut core, t0, 2, Some(GrCap::NOTIFICATION));
        assert!(!converged(&end_of_rib(&mut core, t0, 2)));
        core.set_links(t0, &links(&[(3, true, 1)]));
        assert!(converged(&drain(&mut core)));
    }
}
