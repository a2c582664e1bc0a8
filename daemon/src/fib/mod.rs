//! The kernel FIB writer: Loc-RIB changes in, batched rtnetlink out.
//!
//! Design. [`Fib`] owns one NETLINK_ROUTE socket and a map of what it
//! installed. [`Fib::apply`] coalesces a slice of Loc-RIB changes per prefix
//! (the last change wins), turns each into one RTM_NEWROUTE (create +
//! replace, our protocol, our table, RTAX_MTU where it is not the egress
//! link's MTU already ([`egress`]), RTA_MULTIPATH for ECMP sets)
//! or RTM_DELROUTE, and packs them into datagrams of up to
//! [`FibConfig::batch_bytes`]. Only the last message of a datagram asks for
//! an ACK: the kernel processes a datagram synchronously inside `sendmsg`
//! and sends NLMSG_ERROR only for the messages that failed, so one `recv`
//! that ends at the ACK collects every error, matched back to its prefix by
//! sequence number. Routes whose next hops are unchanged are not re-sent.
//! Messages are built and parsed by [`msg`], a sans-IO module; [`sock`] holds
//! the system calls. Nothing here panics on a kernel reply.
//!
//! Routes of other protocols are never touched: deletes carry our protocol,
//! which the kernel matches, and the start-up dump asks only for ours.
//!
//! With [`NexthopObjects::Auto`] on a kernel that has them (Linux 5.3),
//! routes carry RTA_NH_ID instead of their next hops: [`nexthop`] keeps one
//! kernel object per hop and one group per ECMP set, created (in a small
//! datagram of their own) before the first route using them and deleted
//! after the last; the kernel then skips building a next hop per route.
//! Blackholes, and sets with a hop no connected network or on-link rule
//! gives an interface, stay classic routes.
//!
//! A dead peer's routes all go at once, and all use its next hop's object:
//! in a burst of deletes the writer holds them back and deletes the object
//! when every route of it is to go, one RTM_DELNEXTHOP that the kernel
//! carries out in a single pass over its trie (~0.2 s of system time for
//! a million routes, against ~2.3 s deleted one by one: the trie's
//! rebalancing after each delete). IPv4 only: the kernel deletes an
//! object's IPv6 routes one by one, slower than our own deletes
//! (`Fib::hold_delete`). What a burst leaves held is sent as plain deletes
//! when it ends ([`Fib::release_held`]). The rules are [`state`]'s.
//!
//! # Kernel behaviour relied on
//!
//! - An IPv4 gateway must sit on a connected network (or be marked on-link):
//!   the kernel does not resolve it through other gateway routes, and
//!   refuses with ENETUNREACH ("Nexthop has invalid gateway"); IPv6 answers
//!   EHOSTUNREACH. A "recursive" next hop here is one given without an
//!   interface, which the kernel resolves through its connected routes.
//! - RTM_DELROUTE with a protocol deletes only a route of that protocol;
//!   deleting a route that is gone answers ESRCH (IPv4) or ENOENT (IPv6),
//!   both counted as removed.
//! - Route notifications carry the requesting socket's port id, which is
//!   how our own changes are told from someone else's.
//! - An IPv4 route over an IPv6 next hop (RFC 8950) needs RTA_VIA, not
//!   RTA_GATEWAY.
//! - Deleting a nexthop object deletes the routes using it (notified as
//!   RTM_DELNEXTHOP when someone asked for it); a link going down deletes
//!   its objects and their routes silently.
//! - IPv4 keeps a route's RTAX_MTU when it is replaced by a route of the
//!   same nexthop object without RTA_METRICS (6.18; IPv6 drops it, as IPv4
//!   does for classic routes): such a route is deleted first.
//!
//! # How petreld drives it
//!
//! ```text
//! write_rt_protos_name("petrel", fib_cfg.protocol)?; // once, at start
//! let mut fib = Fib::open(fib_cfg)?;    // protocol, table, MTU, on-link nets
//! let mut monitor = Monitor::open()?;   // before the first write: no gap
//! fib.dump_own()?;                      // our routes of a previous run: stale
//! for block in own_blocks { fib.install_blackhole(block)?; }
//! // A dedicated thread (the Fib blocks in short system calls; never in a
//! // tokio worker) owns `fib` and receives the speaker's Vec<FibChange>
//! // batches from its bounded channel with `blocking_recv`:
//! //     let report = fib.apply(&batch)?;   // log report.errors per prefix
//! // When BGP has converged (End-of-RIB from every GR peer, or the timeout):
//! //     fib.sweep_stale()?;
//! // When no batch came for a moment and `fib.held_deletes() > 0` (deletes held
//! // back in a burst, see below), unless the speaker marks a dead peer's
//! // sweep as under way (`FibStream::sweeping`: its end is then waited for):
//! //     fib.release_held(chunk)?;
//! // The monitor runs in a tokio task: `monitor.next().await` yields
//! // batches of events; forward them over a bounded channel to the Fib
//! // thread, which calls `fib.on_event(&ev)` for each: a route of ours
//! // deleted or changed by someone else is re-installed at once. On
//! // `Event::Overrun` call `fib.resync()`. Link and address events call
//! // for MTU re-detection (`mtu::detect`), and a new MTU goes to
//! // `fib.set_mtu(m)` (which re-installs every route with it). A link
//! // coming up calls for `fib.resync()`: IPv4 flushes the routes over a
//! // link that goes down without a notification.
//! // `fib.counters()` is an Arc of atomics for the metrics endpoint.
//! // On a graceful-restart stop: just drop the Fib; the routes stay.
//! ```

pub mod egress;
pub mod monitor;
pub mod msg;
pub mod mtu;
pub mod nexthop;
pub mod sock;
pub mod state;
pub mod table;
pub mod task;

pub use monitor::{Event, Monitor};
pub use msg::{Hop, KernelRoute, RouteParams};

use ipnet::IpNet;
use msg::RouteKind;
use petrel_bgp::rib::FibChange;
#[cfg(doc)]
use petrel_bgp::rib::PeerId;
use petrel_bgp::wire::Prefix;
use sock::NlSocket;
use state::{Decision, FibState, Pending};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use table::{Installed, BLACKHOLE};

/// The main routing table (RT_TABLE_MAIN).
pub const TABLE_MAIN: u32 = 254;
/// petrel's default route protocol number (unassigned in rt_protos).
pub const DEFAULT_PROTOCOL: u8 = 202;

/// Where the FIB writer puts routes and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibConfig {
    /// The route protocol number (`ip route show proto N`).
    pub protocol: u8,
    /// The routing table.
    pub table: u32,
    /// RTAX_MTU of every route; none when `None`.
    pub mtu: Option<u32>,
    /// The route metric; the kernel's default when `None`.
    pub priority: Option<u32>,
    /// Next hops inside these networks are on-link: installed with the
    /// interface and RTNH_F_ONLINK. Others are left to the kernel to resolve
    /// (no interface given). An IPv6 next hop's link-local address is used
    /// when its global one is on-link here.
    pub onlink: Vec<OnLink>,
    /// The largest datagram of route messages.
    pub batch_bytes: usize,
    /// Socket receive and send buffer.
    pub socket_buffer: usize,
    /// Whether routes point at kernel nexthop objects (RTA_NH_ID) rather
    /// than carry their next hops ([`nexthop`]); see
    /// [`Fib::nexthop_objects`].
    pub nexthop_objects: NexthopObjects,
}

/// `[fib] nexthop_objects`: kernel nexthop objects (RTM_NEWNEXTHOP, Linux
/// 5.3) where the kernel has them, or never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NexthopObjects {
    /// Used when [`Fib::open`] finds the kernel answers a nexthop dump.
    Auto,
    #[default]
    Off,
}

impl Default for FibConfig {
    fn default() -> Self {
        Self {
            protocol: DEFAULT_PROTOCOL,
            table: TABLE_MAIN,
            mtu: None,
            priority: None,
            onlink: Vec::new(),
            batch_bytes: 128 << 10,
            socket_buffer: 8 << 20,
            nexthop_objects: NexthopObjects::default(),
        }
    }
}

/// A network whose addresses are reached directly over an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnLink {
    pub net: IpNet,
    pub ifindex: u32,
}

/// What one operation did to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Install,
    Delete,
}

/// A failed operation on one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibError {
    pub prefix: Prefix,
    pub op: Op,
    /// The kernel's errno (ENETUNREACH for a next hop it cannot reach), or 0
    /// when petrel refused the route itself (see `message`).
    pub errno: i32,
    /// The kernel's extended-ACK text, or petrel's reason.
    pub message: Option<String>,
}

impl std::fmt::Display for FibError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.op {
            Op::Install => "install",
            Op::Delete => "delete",
        };
        write!(f, "{what} {}: ", self.prefix)?;
        if self.errno != 0 {
            write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        }
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

/// The outcome of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Routes installed or replaced.
    pub installed: usize,
    /// Routes deleted (or already gone).
    pub removed: usize,
    /// Changes that needed no kernel operation.
    pub unchanged: usize,
    pub errors: Vec<FibError>,
}

/// Counters for the metrics endpoint, shared with other threads.
#[derive(Debug, Default)]
pub struct FibCounters {
    /// Route messages sent.
    pub ops: AtomicU64,
    /// Route messages the kernel refused.
    pub errors: AtomicU64,
    /// Datagrams sent.
    pub batches: AtomicU64,
    /// Routes currently installed by this process.
    pub routes: AtomicU64,
    /// Routes of ours restored after someone else deleted or changed them.
    pub restored: AtomicU64,
}

/// A route as [`Fib::held`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held<'a> {
    Unicast(&'a [Hop]),
    Blackhole,
    /// Found by [`Fib::dump_own`], not re-installed since.
    Stale,
}

/// How many routes ahead of the one at hand the FIB map's memory is
/// prefetched (about the misses a core keeps in flight).
const PREFETCH_AHEAD: usize = 8;

/// With nexthop objects, a batch of at least this many deletes starts
/// holding deletes back (a peer's routes going: see [`Fib::apply`]); a
/// lone delete goes at once.
pub const HOLD_BURST: usize = 64;

/// The kernel FIB writer. See the module docs.
pub struct Fib {
    sock: NlSocket,
    cfg: FibConfig,
    params: RouteParams,
    seq: u32,
    /// What the kernel holds of ours, and the rules that change it.
    state: FibState,
    counters: Arc<FibCounters>,
    out: Vec<u8>,
    /// Offset of the last message in `out`.
    last_at: usize,
    /// Sequence number of the first message in `out`.
    first_seq: u32,
    pending: Vec<Pending>,
    rx: Vec<u8>,
    /// The links and connected networks, for leaving out a route MTU that
    /// equals the egress link's.
    links: egress::Links,
    /// The kernel has nexthop objects and the configuration wants them.
    nexthops: bool,
    /// Our nexthop objects (and a previous run's, to sweep).
    objects: nexthop::Objects,
    nh_ops: Vec<nexthop::NhOp>,
    /// A batch's deletes (reused buffer).
    deletes: Vec<Prefix>,
    /// A set's hops with their egress interfaces (reused buffer).
    resolved: Vec<Hop>,
    /// Sequence numbers of nexthop datagrams: their own counter, so that
    /// a route datagram's numbers stay contiguous around them.
    nh_seq: u32,
}

impl Fib {
    /// Opens the netlink socket.
    pub fn open(cfg: FibConfig) -> io::Result<Self> {
        let sock = NlSocket::open(cfg.socket_buffer, false)?;
        Ok(Self {
            sock,
            params: RouteParams {
                protocol: cfg.protocol,
                table: cfg.table,
                mtu: cfg.mtu,
                priority: cfg.priority,
            },
            state: FibState::new(cfg.onlink.clone()),
            cfg,
            seq: 1,
            counters: Arc::default(),
            out: Vec::new(),
            last_at: 0,
            first_seq: 0,
            pending: Vec::new(),
            rx: Vec::with_capacity(1 << 20),
            links: egress::Links::default(),
            nexthops: false,
            objects: nexthop::Objects::default(),
            nh_ops: Vec::new(),
            deletes: Vec::new(),
            resolved: Vec::new(),
            nh_seq: 1 << 31,
        })
        .and_then(|mut fib| {
            fib.refresh_links()?;
            if fib.cfg.nexthop_objects == NexthopObjects::Auto {
                if let Some(old) = fib.dump_nexthops()? {
                    fib.nexthops = true;
                    // A previous run's objects: their ids are not ours to
                    // reuse until they are swept with its routes.
                    fib.objects.mark_stale(old.iter().map(|o| o.id));
                }
            }
            Ok(fib)
        })
    }

    /// Whether kernel nexthop objects are in use: configured `Auto` and
    /// the kernel has them.
    pub fn nexthop_objects(&self) -> bool {
        self.nexthops
    }

    /// How many nexthop objects of ours the kernel holds (hops and groups).
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Dumps the kernel's nexthop objects of our protocol; `None` when the
    /// kernel has no nexthop objects at all (before Linux 5.3, rtnetlink
    /// answers the unknown RTM_GETNEXTHOP with EOPNOTSUPP). This is the
    /// detection: a dump changes nothing, unlike a probe object.
    pub fn dump_nexthops(&mut self) -> io::Result<Option<Vec<msg::KernelNexthop>>> {
        let seq = self.next_seq();
        let mut req = Vec::new();
        msg::put_nexthop_dump(&mut req, seq);
        self.sock.send(&req)?;
        let mut out = Vec::new();
        loop {
            self.sock.recv(&mut self.rx)?;
            for m in msg::messages(&self.rx) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    msg::NLMSG_DONE => return Ok(Some(out)),
                    msg::NLMSG_ERROR => {
                        let errno = msg::parse_error(&m).map(|e| e.errno).unwrap_or(libc::EIO);
                        return match errno {
                            0 => Ok(Some(out)),
                            libc::EOPNOTSUPP | libc::EINVAL => Ok(None),
                            e => Err(io::Error::from_raw_os_error(e)),
                        };
                    }
                    msg::RTM_NEWNEXTHOP => {
                        if let Some(nh) = msg::parse_nexthop(m.payload) {
                            if nh.protocol == self.params.protocol {
                                out.push(nh);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Reads the links and addresses afresh (at open; again once the
    /// monitor listens, so that no change falls in between) and decides
    /// every set's route MTU again: routes whose RTAX_MTU changes are
    /// re-installed.
    pub fn refresh_links(&mut self) -> io::Result<Report> {
        let (links, addrs) = monitor::links_and_addrs()?;
        self.links = egress::Links::new(&links, &addrs);
        self.redecide_mtu()
    }

    pub fn config(&self) -> &FibConfig {
        &self.cfg
    }

    /// The socket's port id: route notifications carrying it are our own.
    pub fn port(&self) -> u32 {
        self.sock.port()
    }

    pub fn counters(&self) -> Arc<FibCounters> {
        self.counters.clone()
    }

    /// How many routes this process has installed (blackholes included).
    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Routes of ours found by [`Fib::dump_own`] and not re-installed since.
    pub fn stale_count(&self) -> usize {
        self.state.stale_count()
    }

    /// What this process holds, for `petrelctl show fib`: each installed
    /// route, then the stale ones of a previous run not re-installed yet.
    pub fn held(&self) -> impl Iterator<Item = (Prefix, Held<'_>)> + '_ {
        self.state.held()
    }

    /// Heap octets of the routes' state (the maps and the next-hop sets'
    /// ids), for measuring it.
    pub fn state_bytes(&self) -> usize {
        self.state.heap_bytes()
    }

    /// The RTAX_MTU routes are installed with.
    pub fn mtu(&self) -> Option<u32> {
        self.params.mtu
    }

    /// The parameters of set `id`'s routes: RTAX_MTU is the route MTU,
    /// unless every hop leaves by a link of exactly that MTU, where the
    /// kernel uses the link's without the metric's cost (see [`egress`]).
    /// The answer is cached per set until the links or the MTU change.
    fn params_for(&mut self, id: u32) -> RouteParams {
        let Some(m) = self.params.mtu.filter(|m| *m > 0) else {
            return self.params;
        };
        let sets = self.state.sets_mut();
        let redundant = match sets.mtu_redundant(id) {
            Some(r) => r,
            None => {
                let r = self.links.redundant(m, sets.get(id).hops());
                sets.set_mtu_redundant(id, r);
                r
            }
        };
        RouteParams {
            mtu: if redundant { None } else { Some(m) },
            ..self.params
        }
    }

    /// Decides every set's route MTU again and re-installs the routes of
    /// the sets whose answer changed.
    fn redecide_mtu(&mut self) -> io::Result<Report> {
        let mut report = Report::default();
        let Some(m) = self.params.mtu.filter(|m| *m > 0) else {
            return Ok(report);
        };
        let mut flipped = Vec::new();
        let sets = self.state.sets_mut();
        let ids: Vec<u32> = sets.ids().collect();
        for id in ids {
            let now = self.links.redundant(m, sets.get(id).hops());
            if sets.mtu_redundant(id).is_some_and(|was| was != now) {
                flipped.push(id);
            }
            sets.set_mtu_redundant(id, now);
        }
        if flipped.is_empty() {
            return Ok(report);
        }
        for (p, id) in self.state.installed_in(&flipped) {
            self.state.sets_mut().acquire(id);
            self.queue_reinstall(p, id, true, &mut report)?;
        }
        self.flush(&mut report)?;
        Ok(report)
    }

    /// A link or address event from the monitor: when the egress links'
    /// MTUs or the connected networks changed, routes whose RTAX_MTU must
    /// now be written or left out are re-installed (returned report).
    pub fn on_link_event(&mut self, ev: &Event) -> io::Result<Option<Report>> {
        if !self.links.on_event(ev) {
            return Ok(None);
        }
        self.redecide_mtu().map(Some)
    }

    /// True when a next hop of ours lies in the network of `addr` (or
    /// leaves by its link): a new address there may bring routes back.
    pub fn next_hops_in(&self, addr: &msg::AddrInfo) -> bool {
        self.state.next_hops_in(addr)
    }

    /// Applies Loc-RIB changes: per prefix the last change wins; a best path
    /// of ours ([`PeerId::LOCAL`]) is not installed (its blackhole, if any,
    /// stays). Errors are per prefix in the report; `Err` only for the
    /// socket itself failing. What each change needs is
    /// [`FibState::decide`]'s.
    ///
    /// With nexthop objects, a batch of [`HOLD_BURST`] deletes or more (or
    /// any delete while others are held) holds the deletes of routes by an
    /// object back: once every route of a set is to go, deleting its object
    /// removes them in one pass, at a fraction of the kernel's cost of
    /// route-by-route deletes. Held routes stay in the kernel until then or
    /// until [`Fib::release_held`], which the caller must call when the
    /// burst is over ([`Fib::held_deletes`] > 0).
    pub fn apply(&mut self, changes: &[FibChange]) -> io::Result<Report> {
        let mut report = Report::default();
        let mut deletes = std::mem::take(&mut self.deletes);
        deletes.clear();
        let r = self.apply_into(changes, &mut deletes, &mut report);
        self.deletes = deletes;
        r.map(|_| report)
    }

    fn apply_into(
        &mut self,
        changes: &[FibChange],
        deletes: &mut Vec<Prefix>,
        report: &mut Report,
    ) -> io::Result<()> {
        let coalesce = changes.len() > 1;
        // Reverse order, skipping prefixes already seen: the last one wins.
        for (k, c) in changes.iter().enumerate().rev() {
            if let Some(ahead) = k.checked_sub(PREFETCH_AHEAD) {
                self.state.prefetch(&changes[ahead].prefix);
            }
            let prefix = c.prefix;
            match self.state.decide(c, coalesce) {
                Decision::Superseded => {}
                Decision::Unchanged => report.unchanged += 1,
                Decision::Refused(why) => report.errors.push(FibError {
                    prefix,
                    op: Op::Install,
                    errno: 0,
                    message: Some(why.into()),
                }),
                // After the installs (another prefix each: order does not
                // matter), once the batch's count is known.
                Decision::Delete => deletes.push(prefix),
                Decision::Install(id) => self.queue_install(prefix, id, report)?,
                Decision::DeleteThenInstall(id) => {
                    if let Err(e) = self.queue_delete(prefix, report) {
                        self.state.sets_mut().release(id);
                        return Err(e);
                    }
                    self.queue_install(prefix, id, report)?;
                }
            }
        }
        self.state.end_batch();
        let hold = self.nexthops && (deletes.len() >= HOLD_BURST || self.state.held_deletes() > 0);
        for &prefix in deletes.iter() {
            if !(hold && self.hold_delete(prefix)) {
                self.queue_delete(prefix, report)?;
            }
        }
        self.flush(report)?;
        self.flush_by_objects(report)
    }

    /// Holds `prefix`'s delete back if its route is an IPv4 route by a
    /// nexthop object.
    ///
    /// Not IPv6: deleting a nexthop object removes IPv4 routes in one pass
    /// over the trie without a notification each, but IPv6 routes one at a
    /// time, each notified to every listener (`ip6_del_rt`,
    /// `inet6_rt_notify`): 200k IPv6 routes took 0.85 s of the writer's
    /// system time that way, after the speaker's sweep, against 0.54 s for
    /// plain deletes in datagrams, which overlap the sweep
    /// (docs/benchmarks/history.md, ninth round).
    fn hold_delete(&mut self, prefix: Prefix) -> bool {
        if !matches!(prefix, Prefix::V4 { .. }) {
            return false;
        }
        let by_object = self
            .state
            .installed(&prefix)
            .is_some_and(|id| self.objects.id_of(id).is_some());
        by_object && self.state.hold(prefix)
    }

    /// Deletes held back (see [`Fib::apply`]).
    pub fn held_deletes(&self) -> usize {
        self.state.held_deletes()
    }

    /// Deletes the nexthop object of every set all of whose routes are
    /// held for deletion, when no other set uses it: the kernel removes
    /// those routes with it (without a route notification), one trie pass
    /// instead of a delete each.
    fn flush_by_objects(&mut self, report: &mut Report) -> io::Result<()> {
        for id in self.state.flushable() {
            if self.objects.exclusive(id).is_none() {
                continue;
            }
            let mut ops = std::mem::take(&mut self.nh_ops);
            self.objects.retire(id, &mut ops);
            self.nh_ops = ops;
            let n = self.state.set_routes_of(id).doomed;
            if !self.send_nexthops()? {
                // Refused: what the kernel holds is unknown; the routes
                // are deleted one by one (a delete of a route gone answers
                // ESRCH, counted as removed).
                tracing::warn!(set = id, routes = n, "nexthop object delete refused");
                continue;
            }
            tracing::debug!(
                set = id,
                routes = n,
                "routes removed with their nexthop object"
            );
            self.state.drop_doomed(id, report);
            self.counters.ops.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .routes
            .store(self.state.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends up to `max` held deletes (see [`Fib::apply`]): the burst is
    /// over, or has lasted long enough. A bounded `max` keeps the caller's
    /// loop answering between the datagrams of a million deletes.
    pub fn release_held(&mut self, max: usize) -> io::Result<Report> {
        let mut report = Report::default();
        // What can still go with its object first.
        self.flush_by_objects(&mut report)?;
        for p in self.state.take_held(max) {
            self.queue_delete(p, &mut report)?;
        }
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Installs a blackhole for one of the node's own blocks.
    pub fn install_blackhole(&mut self, prefix: Prefix) -> io::Result<Report> {
        let mut report = Report::default();
        // A different metric is a different kernel route: replace would
        // leave a unicast route of ours beside the blackhole.
        if self.state.is_unicast(&prefix) {
            self.queue_delete(prefix, &mut report)?;
        }
        self.queue_install(prefix, BLACKHOLE, &mut report)?;
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Removes our route for `prefix`, whatever it is.
    pub fn remove(&mut self, prefix: Prefix) -> io::Result<Report> {
        let mut report = Report::default();
        self.queue_delete(prefix, &mut report)?;
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Sets the route MTU and re-installs every route with it.
    pub fn set_mtu(&mut self, mtu: Option<u32>) -> io::Result<Report> {
        let had = self.params.mtu.is_some_and(|m| m > 0);
        self.cfg.mtu = mtu;
        self.params.mtu = mtu;
        self.state.sets_mut().forget_mtu_redundant();
        if !(had && self.nexthops) {
            return self.reinstall_all();
        }
        let mut report = Report::default();
        self.repair_objects()?;
        let snapshot = self.state.snapshot(false);
        for (p, _) in snapshot.iter() {
            if let Some(id) = self.state.acquire_held(&p, false) {
                self.queue_reinstall(p, id, true, &mut report)?;
            }
        }
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Queues the re-install of a held route (taking the caller's
    /// reference on `id`). `had_metrics`: the kernel's copy may carry an
    /// RTAX_MTU the route must now be without. Linux (6.18) keeps an IPv4
    /// route's metrics when it is replaced by one of the same nexthop
    /// object without RTA_METRICS (a new object, or a classic route, or
    /// another MTU do replace them; IPv6 does): such a route is deleted
    /// first, in the same datagram.
    fn queue_reinstall(
        &mut self,
        prefix: Prefix,
        id: u32,
        had_metrics: bool,
        report: &mut Report,
    ) -> io::Result<()> {
        if had_metrics
            && self.nexthops
            && matches!(prefix, Prefix::V4 { .. })
            && self.objects.id_of(id).is_some()
            && self.params_for(id).mtu.is_none()
        {
            if let Err(e) = self.queue_delete(prefix, report) {
                self.state.sets_mut().release(id);
                return Err(e);
            }
        }
        self.queue_install(prefix, id, report)
    }

    /// Routes waiting for their next hop (see [`Fib::relink`]).
    pub fn unresolved_count(&self) -> usize {
        self.state.unresolved_count()
    }

    /// A link came up or an address was added: re-installs every route we
    /// hold and retries the refused ones. Needed because IPv4 flushes the
    /// routes of a link that goes down without a notification, so only a
    /// full re-install brings ours back when it returns.
    pub fn relink(&mut self) -> io::Result<Report> {
        let mut report = Report::default();
        // The link's nexthop objects went with it, silently.
        self.repair_objects()?;
        self.requeue(false, &mut report)?;
        self.requeue(true, &mut report)?;
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Retries the routes the kernel refused (an address was added: their
    /// next hops may be reachable now).
    pub fn retry_unresolved(&mut self) -> io::Result<Report> {
        let mut report = Report::default();
        let sets = self.repair_objects()?;
        self.requeue_sets(&sets, &mut report)?;
        self.requeue(true, &mut report)?;
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Re-installs every route we hold (after lost notifications).
    pub fn resync(&mut self) -> io::Result<Report> {
        self.reinstall_all()
    }

    fn reinstall_all(&mut self) -> io::Result<Report> {
        let mut report = Report::default();
        self.repair_objects()?;
        self.requeue(false, &mut report)?;
        self.flush(&mut report)?;
        Ok(report)
    }

    /// Queues every installed (or, with `unresolved`, every refused) route
    /// again, with the set each holds when its turn comes (a full
    /// datagram's flush changes the maps while the copy is walked); those
    /// gone since are skipped.
    fn requeue(&mut self, unresolved: bool, report: &mut Report) -> io::Result<()> {
        let snapshot = self.state.snapshot(unresolved);
        for (p, _) in snapshot.iter() {
            if let Some(id) = self.state.acquire_held(&p, unresolved) {
                self.queue_install(p, id, report)?;
            }
        }
        Ok(())
    }

    /// Queues the installed routes of sets `sets` again.
    fn requeue_sets(&mut self, sets: &[u32], report: &mut Report) -> io::Result<()> {
        if sets.is_empty() {
            return Ok(());
        }
        for (p, _) in self.state.installed_in(sets) {
            if let Some(id) = self.state.acquire_held(&p, false) {
                self.queue_install(p, id, report)?;
            }
        }
        Ok(())
    }

    /// With nexthop objects: re-creates those of ours the kernel lost (a
    /// link down takes its objects along without a notification); returns
    /// the sets whose routes went with them.
    fn repair_objects(&mut self) -> io::Result<Vec<u32>> {
        if !self.nexthops || self.objects.is_empty() {
            return Ok(Vec::new());
        }
        let present: std::collections::HashSet<u32> = self
            .dump_nexthops()?
            .unwrap_or_default()
            .iter()
            .map(|o| o.id)
            .collect();
        let mut ops = std::mem::take(&mut self.nh_ops);
        let sets = self.objects.repair(|id| present.contains(&id), &mut ops);
        self.nh_ops = ops;
        self.send_nexthops()?;
        Ok(sets)
    }

    /// Sends the queued nexthop operations in one datagram and reads up to
    /// its ACK; false when the kernel refused one (logged).
    fn send_nexthops(&mut self) -> io::Result<bool> {
        if self.nh_ops.is_empty() {
            return Ok(true);
        }
        let mut ok = true;
        let mut buf = Vec::new();
        let first = self.nh_seq;
        let mut at = 0;
        for op in self.nh_ops.drain(..) {
            let seq = self.nh_seq;
            self.nh_seq = self.nh_seq.wrapping_add(1) | 1 << 31;
            at = match op {
                nexthop::NhOp::Hop { id, hop } => msg::put_new_nexthop(
                    &mut buf,
                    seq,
                    self.params.protocol,
                    id,
                    msg::NexthopKind::Hop(hop),
                ),
                nexthop::NhOp::Group { id, members } => {
                    let m: Vec<(u32, u16)> = members.iter().map(|m| (*m, 1)).collect();
                    msg::put_new_nexthop(
                        &mut buf,
                        seq,
                        self.params.protocol,
                        id,
                        msg::NexthopKind::Group(&m),
                    )
                }
                nexthop::NhOp::Delete(id) => msg::put_del_nexthop(&mut buf, seq, id),
            };
        }
        let last = self.nh_seq.wrapping_sub(1) | 1 << 31;
        msg::add_flags(&mut buf, at, msg::NLM_F_ACK);
        self.sock.send(&buf)?;
        loop {
            self.sock.recv(&mut self.rx)?;
            for m in msg::messages(&self.rx) {
                if m.ty != msg::NLMSG_ERROR || m.seq.wrapping_sub(first) > last.wrapping_sub(first)
                {
                    continue;
                }
                let Some(e) = msg::parse_error(&m) else {
                    continue;
                };
                // ENOENT: an object to delete is gone already.
                if e.errno != 0 && e.errno != libc::ENOENT {
                    tracing::debug!(errno = e.errno, message = ?e.message, "nexthop object refused");
                    ok = false;
                }
                if m.seq == last {
                    return Ok(ok);
                }
            }
        }
    }

    /// Re-installs our route of `prefix` if we hold one.
    pub fn restore(&mut self, prefix: Prefix) -> io::Result<Report> {
        self.restore_over(prefix, true)
    }

    /// [`Fib::restore`]; `had_metrics`: the kernel's route may carry an
    /// RTAX_MTU (see [`Fib::queue_reinstall`]).
    fn restore_over(&mut self, prefix: Prefix, had_metrics: bool) -> io::Result<Report> {
        let mut report = Report::default();
        if let Some(id) = self.state.acquire_held(&prefix, false) {
            self.queue_reinstall(prefix, id, had_metrics, &mut report)?;
            self.flush(&mut report)?;
            self.counters.restored.fetch_add(1, Ordering::Relaxed);
        }
        Ok(report)
    }

    /// Handles a monitor event: a route of ours that another process deleted
    /// or changed (our protocol and table, a sender other than us) is
    /// restored. Returns the report when it acted. Routes of other protocols
    /// installed over the same prefix are left alone (no fight with the
    /// operator's `ip route replace`).
    pub fn on_event(&mut self, ev: &Event) -> io::Result<Option<Report>> {
        if let Event::Nexthop {
            deleted: true,
            nh,
            sender,
        } = ev
        {
            return self.on_nexthop_deleted(nh, *sender);
        }
        let Event::Route {
            deleted,
            route,
            sender,
        } = ev
        else {
            return Ok(None);
        };
        if *sender == self.port()
            || route.protocol != self.params.protocol
            || route.table != self.params.table
        {
            return Ok(None);
        }
        let Some(want) = self.state.installed(&route.prefix) else {
            return Ok(None);
        };
        if *deleted && self.state.is_held(&route.prefix) {
            // Someone deleted a route we were about to delete: done.
            self.state.forget(&route.prefix);
            return Ok(None);
        }
        let by_object = match (route.nh_id, self.objects.id_of(want)) {
            (Some(k), Some(o)) => Some(k == o),
            (None, None) => None,
            _ => Some(false),
        };
        let same = !*deleted
            && by_object.unwrap_or_else(|| self.state.matches(want, route))
            && route.mtu == self.params_for(want).mtu;
        if same {
            return Ok(None);
        }
        let had_metrics = !*deleted && route.mtu.is_some();
        self.restore_over(route.prefix, had_metrics).map(Some)
    }

    /// Someone deleted a nexthop object of ours (its routes went with it):
    /// re-creates it and re-installs them.
    fn on_nexthop_deleted(
        &mut self,
        nh: &msg::KernelNexthop,
        sender: u32,
    ) -> io::Result<Option<Report>> {
        if sender == self.port()
            || nh.protocol != self.params.protocol
            || !self.nexthops
            || !self.objects.is_ours(nh.id)
        {
            return Ok(None);
        }
        let mut ops = std::mem::take(&mut self.nh_ops);
        let sets = self.objects.repair(|id| id != nh.id, &mut ops);
        self.nh_ops = ops;
        self.send_nexthops()?;
        let mut report = Report::default();
        self.requeue_sets(&sets, &mut report)?;
        // Routes restored before this event (a route's deletion notified
        // first) were refused for want of the object.
        self.requeue(true, &mut report)?;
        self.flush(&mut report)?;
        self.counters
            .restored
            .fetch_add(report.installed as u64, Ordering::Relaxed);
        Ok(Some(report))
    }

    /// Dumps our routes (our protocol, our table) from the kernel. Every one
    /// is kept as stale until re-installed; [`Fib::sweep_stale`] removes the
    /// rest, and our nexthop objects of then with them.
    pub fn dump_own(&mut self) -> io::Result<Vec<KernelRoute>> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let seq = self.next_seq();
            let mut req = Vec::new();
            msg::put_route_dump(&mut req, seq, v6, self.params.protocol, self.params.table);
            self.sock.send(&req)?;
            'dump: loop {
                self.sock.recv(&mut self.rx)?;
                for m in msg::messages(&self.rx) {
                    if m.seq != seq {
                        continue;
                    }
                    match m.ty {
                        msg::NLMSG_DONE => break 'dump,
                        msg::NLMSG_ERROR => {
                            let e = msg::parse_error(&m);
                            let errno = e.map(|e| e.errno).unwrap_or(libc::EIO);
                            if errno != 0 {
                                return Err(io::Error::from_raw_os_error(errno));
                            }
                            break 'dump;
                        }
                        msg::RTM_NEWROUTE => {
                            if let Some(r) = msg::parse_route(m.payload) {
                                if r.protocol == self.params.protocol
                                    && r.table == self.params.table
                                {
                                    out.push(r);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        self.state.mark_stale(&out);
        // A previous run's objects (whatever the mode now): their ids are
        // not reused, and they go with the stale routes.
        if let Some(old) = self.dump_nexthops()? {
            self.objects.mark_stale(old.iter().map(|o| o.id));
        }
        Ok(out)
    }

    /// Deletes the stale routes of [`Fib::dump_own`] that were not
    /// re-installed since.
    pub fn sweep_stale(&mut self) -> io::Result<Report> {
        let mut report = Report::default();
        for p in self.state.take_stale() {
            self.queue_delete(p, &mut report)?;
        }
        self.flush(&mut report)?;
        // Routes re-installed since use objects of this run.
        let old = self.objects.take_stale();
        self.nh_ops
            .extend(old.into_iter().map(nexthop::NhOp::Delete));
        self.send_nexthops()?;
        Ok(report)
    }

    fn next_seq(&mut self) -> u32 {
        // Contiguous through the wrap: replies map to `seq - first`.
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Queues the install of next-hop set `id`, taking the caller's
    /// reference on it.
    fn queue_install(&mut self, prefix: Prefix, id: u32, report: &mut Report) -> io::Result<()> {
        let seq = match self.begin(report) {
            Ok(seq) => seq,
            Err(e) => {
                self.state.sets_mut().release(id);
                return Err(e);
            }
        };
        let params = self.params_for(id);
        // With nexthop objects, the set's object first: the kernel reads
        // it before the route (its own datagram, sent now).
        let mut object = None;
        if self.nexthops {
            let key = self.state.sets().get(id).hops();
            let mut hops = std::mem::take(&mut self.resolved);
            hops.clear();
            hops.extend(key.iter().map(|h| Hop {
                ifindex: self.links.egress(h).unwrap_or(0),
                ..*h
            }));
            if nexthop::usable(&hops) {
                object = self.objects.ensure(id, key, &hops, &mut self.nh_ops);
            }
            self.resolved = hops;
        }
        let sent = match self.send_nexthops() {
            Ok(false) if object.is_some() => {
                // Refused (a gateway the kernel cannot reach yet): this
                // route goes the classic way, so that its error is the
                // kernel's verdict on the next hop itself; the next
                // install of the set tries an object again.
                object = None;
                let mut ops = std::mem::take(&mut self.nh_ops);
                self.objects.retire(id, &mut ops);
                self.nh_ops = ops;
                self.send_nexthops().map(|_| ())
            }
            r => r.map(|_| ()),
        };
        if let Err(e) = sent {
            self.state.sets_mut().release(id);
            return Err(e);
        }
        if object.is_none() {
            self.state.note_classic(id);
        }
        let kind = match (object, self.state.sets().get(id)) {
            (_, Installed::Blackhole) => RouteKind::Blackhole,
            (Some(k), _) => RouteKind::Nexthop(k),
            (None, i) => RouteKind::Unicast(i.hops()),
        };
        self.last_at = msg::put_new_route(&mut self.out, seq, &params, &prefix, kind);
        self.pending.push(Pending {
            prefix,
            new: Some(id),
        });
        Ok(())
    }

    fn queue_delete(&mut self, prefix: Prefix, report: &mut Report) -> io::Result<()> {
        // A blackhole has its own metric, and a stale route from a dump is
        // of unknown metric: delete those by protocol alone.
        let priority = if self.state.is_unicast(&prefix) {
            self.params.priority
        } else {
            None
        };
        let seq = self.begin(report)?;
        self.last_at = msg::put_del_route(&mut self.out, seq, &self.params, &prefix, priority);
        self.pending.push(Pending { prefix, new: None });
        Ok(())
    }

    /// Flushes a full datagram and returns the next message's sequence.
    fn begin(&mut self, report: &mut Report) -> io::Result<u32> {
        if self.out.len() >= self.cfg.batch_bytes {
            self.flush(report)?;
        }
        let seq = self.next_seq();
        if self.pending.is_empty() {
            self.first_seq = seq;
        }
        Ok(seq)
    }

    /// Sends the queued messages, the last one with NLM_F_ACK, and reads the
    /// replies up to that ACK: every NLMSG_ERROR before it is a failure of
    /// the message with its sequence number. [`FibState::settle`] applies
    /// the outcome.
    fn flush(&mut self, report: &mut Report) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        msg::add_flags(&mut self.out, self.last_at, msg::NLM_F_ACK);
        let n = self.pending.len() as u32;
        let first = self.first_seq;
        let last = first.wrapping_add(n - 1);
        let t0 = std::time::Instant::now();
        let sent = self.sock.send(&self.out);
        if tracing::enabled!(tracing::Level::DEBUG) {
            // The kernel applies a datagram inside sendmsg: its time.
            let (deletes, near) = delete_order(&self.pending);
            tracing::debug!(
                messages = n,
                deletes,
                near,
                send_us = t0.elapsed().as_micros() as u64,
                first = ?self.pending.first().map(|p| p.prefix),
                "route datagram"
            );
        }
        self.out.clear();
        let mut pending = std::mem::take(&mut self.pending);
        if let Err(e) = sent {
            self.state.unsent(&pending);
            pending.clear();
            self.pending = pending;
            return Err(e);
        }
        self.counters.ops.fetch_add(n as u64, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        // Index of each failed message, with its error.
        let mut failed: Vec<(usize, msg::ErrorMsg)> = Vec::new();
        let mut done = false;
        while !done {
            if let Err(e) = self.sock.recv(&mut self.rx) {
                // ENOBUFS: replies were lost.
                self.state.settle_unanswered(&pending);
                pending.clear();
                self.pending = pending;
                return Err(e);
            }
            for m in msg::messages(&self.rx) {
                if m.ty != msg::NLMSG_ERROR {
                    continue;
                }
                let idx = m.seq.wrapping_sub(first) as usize;
                if idx >= n as usize {
                    continue; // a late reply to an earlier request
                }
                let Some(e) = msg::parse_error(&m) else {
                    continue;
                };
                if m.seq == last {
                    done = true;
                }
                if e.errno != 0 {
                    failed.push((idx, e));
                }
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        let errors = self.state.settle(&pending, &failed, report);
        self.counters
            .errors
            .fetch_add(errors as u64, Ordering::Relaxed);
        pending.clear();
        self.pending = pending;
        self.counters
            .routes
            .store(self.state.len() as u64, Ordering::Relaxed);
        if self.nexthops {
            // Objects of sets no route uses any more (their routes are
            // settled: none of ours in the kernel points at them).
            let sets = self.state.sets();
            let mut ops = std::mem::take(&mut self.nh_ops);
            self.objects.collect(
                |s| match sets.get(s) {
                    Installed::Blackhole => None,
                    i => Some(i.hops()),
                },
                &mut ops,
            );
            self.nh_ops = ops;
            self.send_nexthops()?;
        }
        Ok(())
    }
}

/// A datagram's deletes, and how many follow a delete of the same IPv4
/// /16 (the trie's locality: address order makes it rebalance the most).
fn delete_order(pending: &[Pending]) -> (usize, usize) {
    let mut last = None;
    let (mut deletes, mut near) = (0, 0);
    for p in pending.iter().filter(|p| p.new.is_none()) {
        deletes += 1;
        if let Prefix::V4 { addr, .. } = p.prefix {
            let hi = u32::from(addr) >> 16;
            near += (last == Some(hi)) as usize;
            last = Some(hi);
        }
    }
    (deletes, near)
}

impl std::fmt::Debug for Fib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fib")
            .field("cfg", &self.cfg)
            .field("routes", &self.state.len())
            .field("stale", &self.state.stale_count())
            .finish()
    }
}

/// Names petrel's protocol number for `ip route` (`proto petrel`): writes
/// `/etc/iproute2/rt_protos.d/petrel.conf`.
pub fn write_rt_protos_name(name: &str, protocol: u8) -> io::Result<()> {
    write_rt_protos_name_in(Path::new("/etc/iproute2/rt_protos.d"), name, protocol)
}

/// [`write_rt_protos_name`] into another folder (created if missing).
pub fn write_rt_protos_name_in(dir: &Path, name: &str, protocol: u8) -> io::Result<()> {
    let text = format!("# written by petreld: its kernel routes\n{protocol}\t{name}\n");
    let path = dir.join(format!("{name}.conf"));
    // Already so (the Debian package writes it at install, and petreld
    // running as its own user may not write there): nothing to do.
    if std::fs::read(&path).is_ok_and(|t| t == text.as_bytes()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    mtu::write_atomic(&path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Replies still find their prefixes when sequence numbers wrap inside
    /// one datagram.
    #[test]
    fn sequence_wrap_in_a_batch() {
        use petrel_tests::lab::{require_lab, Lab};
        if !require_lab(&[]) {
            return;
        }
        let lab = Lab::new("fib-wrap").unwrap();
        let ns = lab.netns("w").unwrap();
        ns.enter(|| {
            let mut fib = Fib::open(FibConfig::default())?;
            fib.seq = u32::MAX - 3;
            let mut rep = Report::default();
            for i in 0..8u8 {
                let p: Prefix = format!("10.{i}.0.0/16").parse().unwrap();
                let hop = Hop {
                    // 10.3/16 and 10.6/16: unreachable next hops.
                    gateway: IpAddr::from([192, 0, 2, if i % 3 == 0 && i > 0 { 1 } else { 0 }]),
                    ifindex: 0,
                    onlink: false,
                };
                if i % 3 == 0 && i > 0 {
                    let id = fib.state.sets_mut().intern(&[hop]).unwrap();
                    fib.queue_install(p, id, &mut rep)?;
                } else {
                    fib.queue_install(p, BLACKHOLE, &mut rep)?;
                }
            }
            fib.flush(&mut rep)?;
            let mut bad: Vec<String> = rep.errors.iter().map(|e| e.prefix.to_string()).collect();
            bad.sort();
            assert_eq!(bad, ["10.3.0.0/16", "10.6.0.0/16"]);
            assert_eq!(rep.installed, 6);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn rt_protos_file() {
        let d = tempfile::tempdir().unwrap();
        write_rt_protos_name_in(d.path(), "petrel", 202).unwrap();
        let t = std::fs::read_to_string(d.path().join("petrel.conf")).unwrap();
        assert!(t.lines().any(|l| l == "202\tpetrel"));
    }
}
