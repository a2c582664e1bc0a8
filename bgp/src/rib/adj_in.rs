//! Adj-RIB-In: what each peer sent, before and after import policy, and the
//! graceful-restart life of those routes (RFC 4271 §9.1, RFC 4724, RFC 9494).
//!
//! Paths live in the shared table ([`super::loc`]); this module decides what
//! goes in. A received route is first checked for loops (our AS in the path
//! more than `allow_own_as` times, RFC 4271 §9.1.2; our router id as
//! ORIGINATOR_ID or our CLUSTER_ID in CLUSTER_LIST, RFC 4456 §8), then run
//! through the peer's import policy. The pre-policy attributes are always
//! kept, so a new import policy is applied without asking the peer to
//! resend (soft reconfiguration).
//!
//! Graceful restart: when a session that negotiated GR drops, the peer's
//! paths in the families it preserved are marked stale and stay in use;
//! End-of-RIB for a family (or the restart timer) sweeps those not
//! refreshed. With LLGR the timer instead demotes them to LLGR_STALE (the
//! community added, least preferred), except routes marked NO_LLGR, until the
//! long-lived stale timer sweeps them. The timers belong to the driver; the
//! RIB is told when they fire.

use super::attrs::AttrSet;
use super::loc::{withdraw_at, Path, Paths, LLGR_STALE, REJECTED, SELECTED, STALE, WITHDRAWN};
use super::prefix_map::PrefixQueue;
use super::{Output, Peer, PeerId, Rib, RibConfig, Session};
use crate::policy::{PeerType, PolicyInput, Verdict};
use crate::wire::attr::community::{LLGR_STALE as LLGR_STALE_COMMUNITY, NO_LLGR};
use crate::wire::attr::Community;
use crate::wire::family::Family;
use crate::wire::nlri::Prefix;
use crate::wire::update::Update;
use std::sync::Arc;

/// Why a route was not accepted into the Loc-RIB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Our AS appears in AS_PATH more often than `allow_own_as`.
    AsPathLoop,
    /// ORIGINATOR_ID is our router id (RFC 4456 §8).
    OriginatorLoop,
    /// CLUSTER_LIST holds our CLUSTER_ID (RFC 4456 §8).
    ClusterLoop,
    Policy,
}

/// One path of a peer's Adj-RIB-In.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjInRoute {
    pub prefix: Prefix,
    pub path_id: u32,
    /// As received.
    pub pre: Arc<AttrSet>,
    /// After import policy; `None` when rejected.
    pub post: Option<Arc<AttrSet>>,
    pub stale: bool,
    pub llgr_stale: bool,
}

/// The loop checks of import, before policy.
fn loop_check(cfg: &RibConfig, peer: &Peer, a: &AttrSet) -> Option<Rejection> {
    let local_as = peer.cfg.local_as.unwrap_or(cfg.local_as);
    let allow = peer.cfg.allow_own_as as usize;
    if let Some(path) = &a.attrs.as_path {
        // RFC 4271 §9.1.2: a route whose AS_PATH contains our AS is excluded
        // (allow-own-as N relaxes it for hub-and-spoke designs).
        let own = path.count(local_as)
            + if local_as != cfg.local_as {
                path.count(cfg.local_as)
            } else {
                0
            };
        if own > allow {
            return Some(Rejection::AsPathLoop);
        }
    }
    // RFC 4456 §8: a route carrying our router id as ORIGINATOR_ID is ignored.
    if a.attrs.originator_id == Some(cfg.router_id) {
        return Some(Rejection::OriginatorLoop);
    }
    // RFC 4456 §8: a route whose CLUSTER_LIST holds our CLUSTER_ID is ignored.
    if a.attrs
        .cluster_list
        .as_ref()
        .is_some_and(|l| l.contains(&cfg.cluster_id()))
    {
        return Some(Rejection::ClusterLoop);
    }
    None
}

impl Rib {
    /// Builds the path for one received route: loop checks, then import
    /// policy. Keeps `flags` of graceful restart given by the caller.
    fn import_path(
        &mut self,
        id: PeerId,
        prefix: Prefix,
        path_id: u32,
        pre: Arc<AttrSet>,
        flags: u8,
    ) -> Path {
        let mut path = Path {
            attrs: pre,
            path_id,
            peer: id,
            flags: flags | REJECTED,
        };
        let Ok(peer) = self.peer(id) else { return path };
        if loop_check(&self.cfg, peer, &path.attrs).is_some() {
            return path;
        }
        let verdict = peer.cfg.import.evaluate(&PolicyInput {
            prefix,
            attrs: &path.attrs,
            peer_type: Some(match peer.kind(&self.cfg) {
                super::PeerKind::Ibgp => PeerType::Ibgp,
                _ => PeerType::Ebgp,
            }),
            local_as: peer.cfg.local_as.unwrap_or(self.cfg.local_as),
        });
        match verdict {
            Verdict::Reject => {}
            Verdict::Accept(None) => path.flags &= !REJECTED,
            Verdict::Accept(Some(mut post)) => {
                post.pre = Some(path.attrs.clone());
                path.attrs = self.attrs.intern(post);
                path.flags &= !REJECTED;
            }
        }
        path
    }

    /// Why a path of `id` is rejected, for `show` and tests.
    pub fn rejection(&self, id: PeerId, prefix: &Prefix, path_id: u32) -> Option<Rejection> {
        let p = self
            .table
            .paths(prefix)
            .iter()
            .find(|p| p.peer == id && p.path_id == path_id)?;
        if !p.has(REJECTED) {
            return None;
        }
        let peer = self.peer(id).ok()?;
        Some(loop_check(&self.cfg, peer, p.pre()).unwrap_or(Rejection::Policy))
    }

    fn put(&mut self, prefix: Prefix, path: Path) {
        let id = path.peer;
        let accepted = !path.has(REJECTED);
        let old = self.table.set(prefix, path);
        if let Ok(p) = self.peer_mut(id) {
            forget(&mut p.counters, old.as_ref());
            p.counters.received += 1;
            p.counters.accepted += accepted as usize;
        }
    }

    fn drop_path(&mut self, id: PeerId, prefix: Prefix, path_id: u32) -> bool {
        let old = self.table.remove(&prefix, id, path_id);
        if let Ok(p) = self.peer_mut(id) {
            forget(&mut p.counters, old.as_ref());
        }
        old.is_some()
    }

    /// The session reached Established: the peer joins its update group and
    /// is sent the table, then End-of-RIB per family. Stale paths of an
    /// earlier session stay until End-of-RIB or the restart timer.
    pub fn peer_up(&mut self, id: PeerId, session: Session) -> Output {
        let mut out = Output::default();
        let Ok(peer) = self.peer_mut(id) else {
            return out;
        };
        peer.router_id = session.router_id;
        peer.session = Some(session);
        self.leave_group(id);
        self.join_group(id, None, &mut out);
        out
    }

    /// The session went down. Paths in `keep_stale` (the families for which
    /// the peer negotiated graceful restart, RFC 4724 §4.2) are marked stale
    /// and stay in use; every other path of the peer is removed.
    pub fn peer_down(&mut self, id: PeerId, keep_stale: &[Family]) -> Output {
        let mut undecided = self.peer_down_in_steps(id, keep_stale);
        self.decide_all(&mut undecided)
    }

    /// [`Rib::peer_down`] for a driver that forwards the outcome in bounded
    /// steps: the peer leaves its update group at once; its paths are taken
    /// out, and the decision process run, step by step as the driver drains
    /// the result with [`Rib::decide_undecided`]. A full table's withdrawal
    /// then never exists as one list of a million changes (nor of a million
    /// prefixes). Drain it before anything else is fed to the RIB.
    pub fn peer_down_in_steps(&mut self, id: PeerId, keep_stale: &[Family]) -> Undecided {
        if self.peer(id).is_err() {
            return Undecided::default();
        }
        self.leave_group(id);
        if let Ok(p) = self.peer_mut(id) {
            p.session = None;
        }
        Undecided {
            prefixes: PrefixQueue::default(),
            drop: Some(SessionDrop {
                peers: vec![(id, keep_stale.to_vec())],
                late: Vec::new(),
                cursors: None,
            }),
        }
    }

    /// Adds `id`'s session drop ([`Rib::peer_down_in_steps`]) to the one
    /// `undecided` holds: the peers' paths then go in one walk and each
    /// prefix is decided once, not once per peer (several sessions ending
    /// together: a link, a ToR, a restarting neighbour; with ten peers
    /// sending the same table, the first drops would otherwise move every
    /// best path to the next peer only for the next drop to move it
    /// again). A walk under way takes the peer's paths in the rest of the
    /// table, then walks the part already done again for it alone. False,
    /// and nothing done, when `undecided` holds no session drop or already
    /// `id`'s.
    pub fn merge_peer_down(
        &mut self,
        undecided: &mut Undecided,
        id: PeerId,
        keep_stale: &[Family],
    ) -> bool {
        let Some(d) = &mut undecided.drop else {
            return false;
        };
        if d.peers.iter().chain(&d.late).any(|(p, _)| *p == id) || self.peer(id).is_err() {
            return false;
        }
        self.leave_group(id);
        if let Ok(p) = self.peer_mut(id) {
            p.session = None;
        }
        d.peers.push((id, keep_stale.to_vec()));
        if d.cursors.is_some() {
            d.late.push((id, keep_stale.to_vec()));
        }
        true
    }

    /// Runs the decision process for up to `max` prefixes of `undecided`;
    /// `None` once it is done.
    pub fn decide_undecided(&mut self, undecided: &mut Undecided, max: usize) -> Option<Output> {
        let max = max.max(1);
        // A walk step queues prefixes, or ends the walk (then maybe begins
        // the late peers' one, which may queue nothing at first).
        while undecided.prefixes.len() == 0 {
            let Some(d) = &mut undecided.drop else {
                break;
            };
            let cursors = d.cursors.get_or_insert_with(|| spread_cursors(&self.table));
            let done = self.sweep_spread(&d.peers, cursors, max, &mut undecided.prefixes);
            if done && d.late.is_empty() {
                undecided.drop = None;
            } else if done {
                // Peers that joined the walk under way: the part it had
                // done is walked again for them (the rest of the table
                // holds none of their paths any more).
                d.peers = std::mem::take(&mut d.late);
                d.cursors = None;
            }
        }
        let step = undecided.prefixes.take(max);
        if step.is_empty() {
            return None;
        }
        Some(self.finish(step))
    }

    /// Drains `undecided` in one go.
    fn decide_all(&mut self, undecided: &mut Undecided) -> Output {
        let mut out = Output::default();
        while let Some(o) = self.decide_undecided(undecided, usize::MAX) {
            out.changes.extend(o.changes);
            out.messages.extend(o.messages);
            out.errors.extend(o.errors);
        }
        out
    }

    /// An UPDATE from `id`. End-of-RIB markers are recognised (RFC 4724 §2),
    /// treat-as-withdraw is honoured (RFC 7606 §2), NLRI of families the
    /// session did not negotiate are ignored.
    pub fn receive(&mut self, id: PeerId, update: &Update) -> Output {
        let mut undecided = Undecided::default();
        let out = self.receive_undecided(id, update, &mut undecided);
        if undecided.is_empty() {
            return out;
        }
        self.decide_all(&mut undecided)
    }

    /// [`Rib::receive`] with the decision process left for later: the
    /// UPDATE's paths enter Adj-RIB-In at once and its prefixes join
    /// `undecided`, for [`Rib::decide_undecided`]. A prefix that several UPDATEs
    /// change before then (several peers sending the same table) is decided
    /// once, on all its paths, instead of once per arrival: RFC 4271 §9.1
    /// runs the decision process on the Adj-RIBs-In as they are, and says
    /// nothing of when. An End-of-RIB marker is acted on at once (its
    /// output is returned; otherwise the output is empty).
    pub fn receive_undecided(
        &mut self,
        id: PeerId,
        update: &Update,
        undecided: &mut Undecided,
    ) -> Output {
        let Some(session) = self.peer(id).ok().and_then(|p| p.session.as_ref()) else {
            return Output::default();
        };
        if let Some(family) = update.end_of_rib_family() {
            return self.end_of_rib(id, family);
        }
        // Per UPDATE, so nothing here is copied that need not be: the
        // families are looked up once, and the attributes are copied once
        // (twice only for an UPDATE with both classic and MP NLRI).
        let classic = !update.nlri.is_empty() && session.families.contains(&Family::IPV4_UNICAST);
        let mp = update
            .mp_reach
            .as_ref()
            .filter(|mp| session.families.contains(&mp.family));
        let four_octet = session.codec.four_octet_as;
        let ebgp = self
            .peer(id)
            .is_ok_and(|p| p.kind(&self.cfg) != super::PeerKind::Ibgp);
        let queue = &mut undecided.prefixes;
        for (_, e) in update.withdrawals() {
            if self.drop_path(id, e.prefix, e.path_id.unwrap_or(0)) {
                queue.push(e.prefix);
            }
        }
        if update.treat_as_withdraw() {
            for (_, e) in update.announced() {
                if self.drop_path(id, e.prefix, e.path_id.unwrap_or(0)) {
                    queue.push(e.prefix);
                }
            }
            return Output::default();
        }
        if !classic && mp.is_none() {
            return Output::default();
        }
        let mut attrs = update.attrs.clone();
        if four_octet {
            // RFC 6793 §4.1: between NEW speakers AS4_PATH and AS4_AGGREGATOR
            // are not used; any received are discarded.
            attrs.drop_as4();
        } else {
            attrs.normalize_as4();
        }
        if ebgp {
            // RFC 4271 §5.1.5: a LOCAL_PREF from an external peer is ignored;
            // the route gets the configured default.
            attrs.local_pref = Some(self.cfg.decision.default_local_pref);
        }
        let (classic_set, mp_set) = match mp {
            Some(mp) => {
                let classic_set =
                    classic.then(|| self.attrs.intern(AttrSet::new(attrs.clone(), None)));
                attrs.next_hop = None;
                let set = AttrSet::new(attrs, Some(mp.next_hop.clone()));
                (classic_set, Some((mp, self.attrs.intern(set))))
            }
            None => (Some(self.attrs.intern(AttrSet::new(attrs, None))), None),
        };
        let runs = classic_set
            .map(|a| (update.nlri.iter(), a))
            .into_iter()
            .chain(mp_set.map(|(mp, a)| (mp.nlri.iter(), a)));
        for (entries, pre) in runs {
            for e in entries {
                let path = self.import_path(id, e.prefix, e.path_id.unwrap_or(0), pre.clone(), 0);
                self.put(e.prefix, path);
                undecided.prefixes.push(e.prefix);
            }
        }
        Output::default()
    }

    /// RFC 4724 §4.2: End-of-RIB for `family`: stale paths of the peer in
    /// that family (not refreshed by the new session) are removed.
    pub fn end_of_rib(&mut self, id: PeerId, family: Family) -> Output {
        let mut swept = self.sweep(id, |prefix, p| {
            if prefix.family() == family && p.flags & (STALE | LLGR_STALE) != 0 {
                Keep::No
            } else {
                Keep::Yes
            }
        });
        self.decide_all(&mut swept)
    }

    /// RFC 7313 §4: a Beginning-of-RIB-Route-Refresh for `family`: the
    /// peer's paths of that family become stale (still used) until the
    /// matching End-of-RIB-Route-Refresh.
    pub fn begin_refresh(&mut self, id: PeerId, family: Family) -> Output {
        let mut swept = self.sweep(id, |prefix, p| {
            if prefix.family() == family {
                p.flags |= STALE;
            }
            Keep::Yes
        });
        self.decide_all(&mut swept)
    }

    /// RFC 7313 §4: End-of-RIB-Route-Refresh: paths of `family` that the
    /// refresh did not re-announce are removed.
    pub fn end_refresh(&mut self, id: PeerId, family: Family) -> Output {
        self.end_of_rib(id, family)
    }

    /// The restart timer fired (RFC 4724 §4.2). Stale paths in `llgr`
    /// families (the peer negotiated a long-lived stale time for them)
    /// become LLGR_STALE (RFC 9494 §4.2), except those carrying NO_LLGR;
    /// every other stale path is removed.
    pub fn restart_timer_expired(&mut self, id: PeerId, llgr: &[Family]) -> Output {
        let mut demote = Vec::new();
        let mut swept = self.sweep(id, |prefix, p| {
            if !p.has(STALE) {
                return Keep::Yes;
            }
            let no_llgr = p
                .pre()
                .attrs
                .communities
                .as_ref()
                .is_some_and(|c| c.contains(&Community(NO_LLGR)));
            if llgr.contains(&prefix.family()) && !no_llgr {
                demote.push((*prefix, p.path_id));
                Keep::Yes
            } else {
                Keep::No
            }
        });
        let out_of_sweep = self.decide_all(&mut swept);
        let mut dirty: Vec<Prefix> = Vec::new();
        for (prefix, path_id) in demote {
            let Some(p) = self
                .table
                .paths(&prefix)
                .iter()
                .find(|p| p.peer == id && p.path_id == path_id)
            else {
                continue;
            };
            // RFC 9494 §4.2: the route is marked with the LLGR_STALE
            // community; pre- and post-policy alike, so a later import
            // policy change keeps it.
            let pre = self.attrs.intern(with_llgr_stale(p.pre()));
            let flags = (p.flags & !STALE) | LLGR_STALE;
            let path = self.import_path(id, prefix, path_id, pre, flags & !REJECTED);
            self.put(prefix, path);
            dirty.push(prefix);
        }
        let mut out = self.finish(dirty);
        out.changes.extend(out_of_sweep.changes);
        out.messages.splice(0..0, out_of_sweep.messages);
        out.errors.extend(out_of_sweep.errors);
        out
    }

    /// The long-lived stale timer fired (RFC 9494 §4.2): LLGR_STALE paths
    /// of `family` are removed.
    pub fn llgr_timer_expired(&mut self, id: PeerId, family: Family) -> Output {
        let mut swept = self.sweep(id, |prefix, p| {
            if prefix.family() == family && p.has(LLGR_STALE) {
                Keep::No
            } else {
                Keep::Yes
            }
        });
        self.decide_all(&mut swept)
    }

    /// Applies the peer's (new) import policy to its pre-policy paths.
    pub(crate) fn reimport(&mut self, id: PeerId) -> Output {
        let mine: Vec<(Prefix, u32, Arc<AttrSet>, u8)> = self
            .table
            .iter()
            .flat_map(|(prefix, paths)| {
                paths
                    .iter()
                    .filter(|p| p.peer == id)
                    .map(move |p| (prefix, p.path_id, p.pre().clone(), p.flags))
            })
            .collect();
        let mut dirty = Vec::new();
        for (prefix, path_id, pre, flags) in mine {
            let path = self.import_path(id, prefix, path_id, pre, flags & (STALE | LLGR_STALE));
            self.put(prefix, path);
            dirty.push(prefix);
        }
        self.finish(dirty)
    }

    /// The peer's Adj-RIB-In, pre- and post-policy.
    pub fn adj_rib_in(&self, id: PeerId) -> Vec<AdjInRoute> {
        self.table
            .iter()
            .flat_map(|(prefix, paths)| {
                paths
                    .iter()
                    .filter(|p| p.peer == id)
                    .map(move |p| AdjInRoute {
                        prefix,
                        path_id: p.path_id,
                        pre: p.pre().clone(),
                        post: (!p.has(REJECTED)).then(|| p.attrs.clone()),
                        stale: p.has(STALE),
                        llgr_stale: p.has(LLGR_STALE),
                    })
            })
            .collect()
    }

    /// Walks the peer's paths: `f` may change flags that do not affect the
    /// selection (STALE) and says whether to keep each path. Returns the
    /// prefixes whose decision must run.
    fn sweep(&mut self, id: PeerId, f: impl FnMut(&Prefix, &mut Path) -> Keep) -> Undecided {
        let mut prefixes = PrefixQueue::default();
        self.sweep_from(id, None, usize::MAX, &mut prefixes, f);
        Undecided {
            prefixes,
            drop: None,
        }
    }

    /// [`Rib::sweep`] over the prefixes after `after`, stopping once
    /// `max` prefixes are queued in `queue`; returns the last prefix walked
    /// when it stopped early (where to resume), `None` at the table's end.
    fn sweep_from(
        &mut self,
        id: PeerId,
        after: Option<Prefix>,
        max: usize,
        queue: &mut PrefixQueue,
        mut f: impl FnMut(&Prefix, &mut Path) -> Keep,
    ) -> Option<Prefix> {
        let mut counters = self.peer(id).map(|p| p.counters).unwrap_or_default();
        let mut queued = 0;
        let mut resume = None;
        for (prefix, paths) in self.table.iter_mut_after(after) {
            if drop_paths(id, &prefix, paths, &mut counters, &mut f) {
                queue.push(prefix);
                queued += 1;
                if queued >= max {
                    resume = Some(prefix);
                    break;
                }
            }
        }
        if let Ok(p) = self.peer_mut(id) {
            p.counters = counters;
        }
        resume
    }

    /// A session drop's walk, one step: [`Rib::sweep_from`] over every
    /// cursor's segment in turn, one changed prefix per cursor per round,
    /// until `max` prefixes are queued. Returns whether every segment is
    /// done.
    ///
    /// Why spread: the changes go to the kernel in this order, and Linux's
    /// FIB trie removes routes in address order at several times the cost
    /// of removes spread over the table (it halves and frees a node per few
    /// deletes; measured with fib-bench --order: 2.36 s of system time for
    /// 1M deletes in order, 0.76 s scattered, 1.43 s from 64 interleaved
    /// runs). A table arrives in address order, so without this a dead
    /// peer's withdrawal always hit the slow case.
    ///
    /// Each of `peers` loses its paths, except those of the families it
    /// keeps (RFC 4724 §4.2), which stay marked stale.
    fn sweep_spread(
        &mut self,
        peers: &[(PeerId, Vec<Family>)],
        cursors: &mut Vec<Cursor>,
        max: usize,
        queue: &mut PrefixQueue,
    ) -> bool {
        let mut counters: Vec<_> = peers
            .iter()
            .map(|(id, _)| self.peer(*id).map(|p| p.counters).unwrap_or_default())
            .collect();
        let mut queued = 0;
        while queued < max && !cursors.is_empty() {
            cursors.retain_mut(|c| {
                if queued >= max {
                    return true;
                }
                for (prefix, paths) in self.table.iter_mut_after(c.after) {
                    if c.last.is_some_and(|last| prefix > last) {
                        return false;
                    }
                    c.after = Some(prefix);
                    let mut changed = false;
                    for ((id, keep), counters) in peers.iter().zip(counters.iter_mut()) {
                        changed |= drop_paths(*id, &prefix, paths, counters, &mut |prefix, p| {
                            if keep.contains(&prefix.family()) {
                                p.flags |= STALE;
                                Keep::Yes
                            } else {
                                Keep::No
                            }
                        });
                    }
                    if changed {
                        queue.push(prefix);
                        queued += 1;
                        return c.last != Some(prefix);
                    }
                }
                false
            });
        }
        for ((id, _), c) in peers.iter().zip(counters) {
            if let Ok(p) = self.peer_mut(*id) {
                p.counters = c;
            }
        }
        cursors.is_empty()
    }
}

/// Takes `id`'s paths out of `paths` where `f` says so; whether any went.
fn drop_paths(
    id: PeerId,
    prefix: &Prefix,
    paths: &mut Paths,
    counters: &mut super::PeerCounters,
    f: &mut impl FnMut(&Prefix, &mut Path) -> Keep,
) -> bool {
    let mut i = 0;
    let mut removed = false;
    while i < paths.len() {
        let p = &mut paths[i];
        if p.peer != id || p.has(WITHDRAWN) {
            i += 1;
            continue;
        }
        match f(prefix, p) {
            Keep::Yes => i += 1,
            Keep::No => {
                let selected = p.has(SELECTED);
                forget(counters, Some(p));
                withdraw_at(paths, i);
                removed = true;
                // A selected path stays (marked) until the decision.
                if selected {
                    i += 1;
                }
            }
        }
    }
    removed
}

/// Cursors over a session drop's segments of the table.
const SPREAD_CURSORS: usize = 256;
/// Below this many prefixes per segment, fewer segments.
const SPREAD_MIN_SEGMENT: usize = 64;

/// One segment of a spread walk: the prefixes after `after` up to and
/// including `last` (`None`: to the table's end).
#[derive(Debug)]
struct Cursor {
    after: Option<Prefix>,
    last: Option<Prefix>,
}

/// Cuts the table's IPv4 part into up to [`SPREAD_CURSORS`] segments of
/// equal count (reckoned on the whole table): one pass over the IPv4 keys,
/// once per session drop. The IPv6 part (after IPv4 in the table's order)
/// is walked in address order, as the last segment's tail: Linux's IPv6
/// FIB is a radix tree without the IPv4 trie's halving, and deletes in
/// address order touch the nodes the previous one warmed.
fn spread_cursors(table: &super::loc::Table) -> Vec<Cursor> {
    let n = table.prefixes();
    let k = (n / SPREAD_MIN_SEGMENT).clamp(1, SPREAD_CURSORS);
    let per = n.div_ceil(k).max(1);
    let mut cursors = Vec::with_capacity(k);
    let mut after = None;
    for (i, (prefix, _)) in table.iter().enumerate() {
        if !matches!(prefix, Prefix::V4 { .. }) {
            break;
        }
        if (i + 1) % per == 0 && i + 1 < n {
            cursors.push(Cursor {
                after,
                last: Some(prefix),
            });
            after = Some(prefix);
        }
    }
    cursors.push(Cursor { after, last: None });
    cursors
}

/// What a bulk operation left undecided: prefixes whose decision process
/// has not run yet, and possibly a session drop still to walk. See
/// [`Rib::receive_undecided`] and [`Rib::peer_down_in_steps`].
#[derive(Debug, Default)]
#[must_use = "drain it with Rib::decide_undecided: the RIB is not consistent until then"]
pub struct Undecided {
    /// Prefixes whose paths changed since their last decision; one may be
    /// queued more than once.
    prefixes: PrefixQueue,
    drop: Option<SessionDrop>,
}

/// A session drop's walk over the table.
#[derive(Debug)]
struct SessionDrop {
    /// The peers whose sessions ended, each with the families whose paths
    /// stay, as stale (RFC 4724 §4.2).
    peers: Vec<(PeerId, Vec<Family>)>,
    /// Those of `peers` that joined after the walk began: walked again,
    /// alone, once it ends.
    late: Vec<(PeerId, Vec<Family>)>,
    /// The walk's segments, cut at its first step.
    cursors: Option<Vec<Cursor>>,
}

impl Undecided {
    /// Nothing left to decide.
    pub fn is_empty(&self) -> bool {
        self.prefixes.len() == 0 && self.drop.is_none()
    }

    /// Prefix decisions queued (a prefix queued twice counts twice; a
    /// session drop's walk not yet done counts nothing).
    pub fn queued(&self) -> usize {
        self.prefixes.len()
    }

    /// Prefix decisions ever queued here ...
    pub fn pushed(&self) -> u64 {
        self.prefixes.pushed()
    }

    /// ... and of those, taken (run or being run): IPv4 before IPv6, each
    /// in the order queued.
    pub fn taken(&self) -> u64 {
        self.prefixes.pushed() - self.prefixes.len() as u64
    }
}

pub(crate) enum Keep {
    Yes,
    No,
}

/// Takes a path that left the table out of the peer's counters.
fn forget(c: &mut super::PeerCounters, p: Option<&Path>) {
    let Some(p) = p else { return };
    c.received = c.received.saturating_sub(1);
    if !p.has(REJECTED) {
        c.accepted = c.accepted.saturating_sub(1);
    }
}

fn with_llgr_stale(a: &AttrSet) -> AttrSet {
    let mut a = a.clone();
    let c = a.attrs.communities.get_or_insert_with(Vec::new);
    if !c.contains(&Community(LLGR_STALE_COMMUNITY)) {
        c.push(Community(LLGR_STALE_COMMUNITY));
    }
    a
}
