//! What the FIB writer believes the kernel holds, and the rules that change
//! that belief: sans-IO.
//!
//! [`FibState`] decides, for each Loc-RIB change, which kernel operation a
//! prefix needs ([`FibState::decide`]), and settles each operation once the
//! kernel has answered ([`FibState::settle`]). The socket, the message
//! encoding and the route MTU live in [`super::Fib`], which drives this
//! state; everything here is plain data, so the rules for kernel failures
//! (a refused install, a delete of a route already gone, lost replies) are
//! unit-tested without root.
//!
//! Held deletes. A peer's death withdraws all its routes, which all use
//! one next-hop set. Deleting the set's kernel nexthop object removes them
//! in one pass, at a tenth of the kernel's cost of a million single
//! deletes (docs/benchmarks/history.md, "withdrawal by nexthop object").
//! So the writer may hold a delete back ([`FibState::hold`]: the route
//! stays installed, marked doomed); once a set's doomed routes are all of
//! its routes ([`FibState::flushable`]), the object goes and so do they
//! ([`FibState::drop_doomed`]). Any later change of a doomed prefix
//! cancels its hold; the driver sends what is still held as plain deletes
//! when the burst ends ([`FibState::take_held`]).
//!
//! Invariants: every set id held in `installed`, `unresolved`, `last_hop`
//! or an in-flight [`Pending`] holds one reference in `sets`; a prefix in
//! `stale` is a route of ours in the kernel, of a previous run or of a
//! failed write, whose content is unknown; a doomed route is one whose
//! `installed` value carries [`HELD`] (never the blackhole), counted in
//! its set's [`SetRoutes::doomed`] and in `held`.

use super::msg::{self, ErrorMsg, KernelRoute};
use super::table::{Installed, PrefixMap, PrefixSet, Sets, BLACKHOLE, MAX_VALUE};
use super::{FibError, Hop, OnLink, Op, Report};
use petrel_bgp::rib::{AttrSet, FibChange, Via};
use petrel_bgp::wire::attr::mp::NextHop;
use petrel_bgp::wire::Prefix;
use std::net::IpAddr;
use std::sync::Arc;

/// One route message sent and not answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub prefix: Prefix,
    /// The next-hop set installed, holding a reference; `None` for a
    /// delete.
    pub new: Option<u32>,
}

/// The kernel operation one Loc-RIB change needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A later change of the same prefix in the same batch wins.
    Superseded,
    /// The kernel already holds what the change asks for.
    Unchanged,
    /// No route can be written (no usable next hop); reported per prefix.
    Refused(&'static str),
    /// Delete our route of the prefix.
    Delete,
    /// Install (create or replace) next-hop set `id`; the decision holds a
    /// reference on it for the message.
    Install(u32),
    /// A blackhole of ours is in the way: delete it, then install `id`. A
    /// blackhole carries its own metric, so the kernel's replace would
    /// leave both.
    DeleteThenInstall(u32),
}

/// The FIB's bookkeeping. See the module docs.
#[derive(Default)]
pub struct FibState {
    /// Our routes in the kernel: prefix → next-hop set id.
    installed: PrefixMap,
    stale: PrefixSet,
    /// The next-hop sets the maps and pending messages name.
    sets: Sets,
    /// The last single next hop resolved and its set (holding a
    /// reference): a table's routes share a few next hops, so most routes
    /// skip resolving and interning.
    last_hop: Option<(NextHop, u32)>,
    /// The prefixes of one batch seen so far (the last change wins).
    seen: PrefixSet,
    /// Routes the kernel refused (a next hop not reachable yet, a link
    /// down): retried when links or addresses change.
    unresolved: PrefixMap,
    hops: Vec<Hop>,
    onlink: Vec<OnLink>,
    /// Installed routes whose delete is held back (see the module docs):
    /// those whose value in `installed` carries [`HELD`] (a bit, not a
    /// set of its own: a full table's hold costs no memory).
    held: usize,
    /// By set id: what `installed` holds of it.
    per_set: Vec<SetRoutes>,
}

/// The bit of an `installed` value marking a held delete; set ids stay
/// below it.
pub const HELD: u32 = MAX_VALUE >> 1;

/// One next-hop set's share of the installed routes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetRoutes {
    /// Routes in `installed` with this set.
    pub routes: u32,
    /// Of those, the doomed ones.
    pub doomed: u32,
    /// A route of the set was written without its nexthop object since
    /// the set last had no route (the object does not hold every route).
    pub classic: bool,
}

impl std::fmt::Debug for FibState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FibState")
            .field("installed", &self.installed.len())
            .field("stale", &self.stale.len())
            .field("unresolved", &self.unresolved.len())
            .field("sets", &self.sets.len())
            .field("held", &self.held)
            .finish()
    }
}

impl FibState {
    /// Next hops inside `onlink` networks are installed on that link with
    /// RTNH_F_ONLINK; others are left to the kernel to resolve.
    pub fn new(onlink: Vec<OnLink>) -> Self {
        Self {
            onlink,
            ..Self::default()
        }
    }

    /// Routes installed (blackholes included).
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    pub fn stale_count(&self) -> usize {
        self.stale.len()
    }

    pub fn unresolved_count(&self) -> usize {
        self.unresolved.len()
    }

    /// The next-hop set installed for `prefix`.
    pub fn installed(&self, prefix: &Prefix) -> Option<u32> {
        self.installed.get(prefix).map(|v| v & !HELD)
    }

    pub fn sets(&self) -> &Sets {
        &self.sets
    }

    pub fn sets_mut(&mut self) -> &mut Sets {
        &mut self.sets
    }

    /// Warms the map's memory for a prefix about to be decided.
    pub fn prefetch(&self, prefix: &Prefix) {
        self.installed.prefetch(prefix);
    }

    /// Whether `prefix` is installed with next hops (not a blackhole).
    pub fn is_unicast(&self, prefix: &Prefix) -> bool {
        self.installed(prefix).is_some_and(|id| id != BLACKHOLE)
    }

    /// The kernel operation `change` needs. With `coalesce`, changes are
    /// handed in reverse order and only the first seen of a prefix counts
    /// (the batch's last); call [`FibState::end_batch`] after the batch.
    /// A best path of ours ([`PeerId::LOCAL`]) is not installed: a
    /// unicast route of ours goes, a blackhole stays.
    pub fn decide(&mut self, change: &FibChange, coalesce: bool) -> Decision {
        let prefix = change.prefix;
        if coalesce && !self.seen.insert(prefix) {
            return Decision::Superseded;
        }
        // A new change of a prefix whose delete is held supersedes it: the
        // route is still in the kernel, and what it needs now is decided
        // from there.
        self.unhold(&prefix);
        match &change.via {
            Via::Local => {
                if self.is_unicast(&prefix) {
                    Decision::Delete
                } else {
                    Decision::Unchanged
                }
            }
            Via::One(_) | Via::Many(_) => {
                let id = match self.resolve(change.paths()) {
                    Ok(id) => id,
                    Err(why) => return Decision::Refused(why),
                };
                let now = self.installed(&prefix);
                if now == Some(id) && !self.stale.contains(&prefix) {
                    self.sets.release(id);
                    Decision::Unchanged
                } else if now == Some(BLACKHOLE) {
                    Decision::DeleteThenInstall(id)
                } else {
                    Decision::Install(id)
                }
            }
            Via::Unreachable => {
                if let Some(old) = self.unresolved.remove(&prefix) {
                    self.sets.release(old);
                }
                // A stale route of a previous run goes too: the Loc-RIB
                // says nothing should be there.
                if self.is_unicast(&prefix)
                    || (self.stale.contains(&prefix) && !self.installed.contains(&prefix))
                {
                    Decision::Delete
                } else {
                    Decision::Unchanged
                }
            }
        }
    }

    /// Ends a batch of [`FibState::decide`] calls.
    pub fn end_batch(&mut self) {
        self.seen.clear();
    }

    /// The id of an ECMP set's kernel next hops, with a reference for the
    /// caller.
    fn resolve(&mut self, set: &[Arc<AttrSet>]) -> Result<u32, &'static str> {
        if let [attrs] = set {
            if let Some((nh, id)) = &self.last_hop {
                if *nh == attrs.next_hop {
                    let id = *id;
                    self.sets.acquire(id);
                    return Ok(id);
                }
            }
        }
        self.resolve_hops(set);
        if self.hops.is_empty() {
            return Err("no usable next hop");
        }
        let id = self
            .sets
            .intern(&self.hops)
            .ok_or("too many distinct next-hop sets")?;
        if id >= HELD {
            // The top value bit marks held deletes.
            self.sets.release(id);
            return Err("too many distinct next-hop sets");
        }
        if let [attrs] = set {
            self.sets.acquire(id);
            if let Some((_, old)) = self.last_hop.replace((attrs.next_hop.clone(), id)) {
                self.sets.release(old);
            }
        }
        Ok(id)
    }

    /// The kernel next hops of an ECMP set, in order, without duplicates.
    fn resolve_hops(&mut self, set: &[Arc<AttrSet>]) {
        self.hops.clear();
        for attrs in set {
            let hop = match &attrs.next_hop {
                NextHop::V4(a) if !a.is_unspecified() => self.hop(IpAddr::V4(*a), None),
                NextHop::V6 { global, link_local } if !global.is_unspecified() => {
                    self.hop(IpAddr::V6(*global), link_local.map(IpAddr::V6))
                }
                _ => continue,
            };
            if !self.hops.contains(&hop) {
                self.hops.push(hop);
            }
        }
    }

    fn hop(&self, gw: IpAddr, link_local: Option<IpAddr>) -> Hop {
        let onlink = self.onlink.iter().find(|o| o.net.contains(&gw));
        match (onlink, link_local) {
            // An IPv6 next hop on our link: its link-local address, as the
            // kernel's neighbour discovery wants.
            (Some(o), Some(ll)) => Hop {
                gateway: ll,
                ifindex: o.ifindex,
                onlink: false,
            },
            (Some(o), None) => Hop {
                gateway: gw,
                ifindex: o.ifindex,
                onlink: true,
            },
            (None, _) => Hop {
                gateway: gw,
                ifindex: 0,
                onlink: false,
            },
        }
    }

    /// Settles a datagram's messages once the kernel has answered:
    /// `failed` holds the index (into `pending`) and error of each message
    /// the kernel refused, in index order. Returns how many were errors.
    pub fn settle(
        &mut self,
        pending: &[Pending],
        failed: &[(usize, ErrorMsg)],
        report: &mut Report,
    ) -> usize {
        let mut errors = 0;
        let mut f = failed.iter().peekable();
        for (i, p) in pending.iter().enumerate() {
            if let Some(ahead) = pending.get(i + super::PREFETCH_AHEAD) {
                self.installed.prefetch(&ahead.prefix);
            }
            let err = match f.peek() {
                Some((fi, _)) if *fi == i => f.next().map(|(_, e)| e),
                _ => None,
            };
            match (p.new, err) {
                (Some(new), None) => {
                    self.stale.remove(&p.prefix);
                    self.unset_unresolved(&p.prefix);
                    self.set_installed(p.prefix, new);
                    report.installed += 1;
                }
                (None, None) => {
                    self.stale.remove(&p.prefix);
                    self.unset_unresolved(&p.prefix);
                    self.unset_installed(&p.prefix);
                    report.removed += 1;
                }
                // Already gone: IPv4 says ESRCH, IPv6 ENOENT.
                (None, Some(e)) if e.errno == libc::ESRCH || e.errno == libc::ENOENT => {
                    self.stale.remove(&p.prefix);
                    self.unset_installed(&p.prefix);
                    report.removed += 1;
                }
                (new, Some(e)) => {
                    // What the kernel holds now is unknown (a failed replace
                    // keeps the old route, a failed restore leaves none):
                    // untracked and stale, so that the next change of the
                    // prefix is written whatever it is, an Unreachable
                    // deletes what may be left, and a sweep removes it. A
                    // refused install waits in `unresolved` for a link or
                    // address change that may make its next hop reachable.
                    if new.is_some() && self.unset_installed(&p.prefix) {
                        self.stale.insert(p.prefix);
                    }
                    if let Some(n) = new {
                        if let Some(old) = self.unresolved.insert(p.prefix, n) {
                            self.sets.release(old);
                        }
                    }
                    errors += 1;
                    report.errors.push(FibError {
                        prefix: p.prefix,
                        op: if new.is_some() {
                            Op::Install
                        } else {
                            Op::Delete
                        },
                        errno: e.errno,
                        message: e.message.clone(),
                    });
                }
            }
        }
        errors
    }

    /// The kernel's replies were lost (ENOBUFS): what happened is unknown.
    /// The batch is taken as applied; the caller's resync (re-install all)
    /// repairs the difference.
    pub fn settle_unanswered(&mut self, pending: &[Pending]) {
        for p in pending {
            match p.new {
                Some(new) => self.set_installed(p.prefix, new),
                None => {
                    self.unset_installed(&p.prefix);
                }
            }
        }
    }

    /// Nothing of a datagram was sent: its references are dropped.
    pub fn unsent(&mut self, pending: &[Pending]) {
        for p in pending {
            if let Some(id) = p.new {
                self.sets.release(id);
            }
        }
    }

    /// Whether the kernel's `route` (ours by protocol and table) has the
    /// type and next hops of set `id`. The route MTU is the caller's.
    pub fn matches(&self, id: u32, route: &KernelRoute) -> bool {
        match self.sets.get(id) {
            Installed::Blackhole => route.rtype == msg::RTN_BLACKHOLE,
            i => route.rtype == msg::RTN_UNICAST && i.hops() == &route.hops[..],
        }
    }

    /// Routes of ours found in the kernel (a dump at start) are stale
    /// until re-installed.
    pub fn mark_stale<'a>(&mut self, found: impl IntoIterator<Item = &'a KernelRoute>) {
        for r in found {
            if !self.installed.contains(&r.prefix) {
                self.stale.insert(r.prefix);
            }
        }
    }

    /// The stale routes to delete now (those not re-installed since).
    pub fn take_stale(&mut self) -> Vec<Prefix> {
        let stale = std::mem::take(&mut self.stale);
        stale
            .iter()
            .filter(|p| !self.installed.contains(p))
            .collect()
    }

    /// With a reference for the caller: the set installed for `prefix`
    /// (or, with `unresolved`, the one waiting for its next hop).
    pub fn acquire_held(&mut self, prefix: &Prefix, unresolved: bool) -> Option<u32> {
        let id = if unresolved {
            self.unresolved.get(prefix)
        } else {
            self.installed(prefix)
        }?;
        self.sets.acquire(id);
        Some(id)
    }

    /// A copy of the installed routes (or of the unresolved ones), to
    /// write again: a datagram's flush changes the maps while they are
    /// walked.
    pub fn snapshot(&self, unresolved: bool) -> PrefixMap {
        if unresolved {
            self.unresolved.clone()
        } else {
            self.installed.clone()
        }
    }

    /// Installed routes of the sets `ids`, stale ones aside.
    pub fn installed_in(&self, ids: &[u32]) -> Vec<(Prefix, u32)> {
        self.installed
            .iter()
            .map(|(p, v)| (p, v & !HELD))
            .filter(|(p, id)| ids.contains(id) && !self.stale.contains(p))
            .collect()
    }

    /// What is held, for `petrelctl show fib`: each installed route, then
    /// the stale ones not re-installed yet.
    pub fn held(&self) -> impl Iterator<Item = (Prefix, super::Held<'_>)> + '_ {
        let installed = self.installed.iter().map(|(p, v)| {
            let h = match self.sets.get(v & !HELD) {
                Installed::Blackhole => super::Held::Blackhole,
                i => super::Held::Unicast(i.hops()),
            };
            (p, h)
        });
        let stale = self
            .stale
            .iter()
            .filter(|p| !self.installed.contains(p))
            .map(|p| (p, super::Held::Stale));
        installed.chain(stale)
    }

    /// True when a next hop of ours lies in the network of `addr` (or
    /// leaves by its link).
    pub fn next_hops_in(&self, addr: &msg::AddrInfo) -> bool {
        self.sets.ids().any(|id| {
            self.sets.get(id).hops().iter().any(|h| {
                h.ifindex == addr.ifindex || (h.ifindex == 0 && addr.net.contains(&h.gateway))
            })
        })
    }

    /// Heap octets of the routes' state.
    pub fn heap_bytes(&self) -> usize {
        self.installed.heap_bytes()
            + self.stale.heap_bytes()
            + self.unresolved.heap_bytes()
            + self.seen.heap_bytes()
    }

    fn set_installed(&mut self, prefix: Prefix, id: u32) {
        let old = self.installed.insert(prefix, id);
        if old == Some(id | HELD) {
            // The same route written again (a restore, a re-install): a
            // held delete stays held.
            self.installed.insert(prefix, id | HELD);
        }
        if old.is_some_and(|v| v & !HELD == id) {
            self.sets.release(id);
            return;
        }
        if let Some(old) = old {
            // Another route now: a held delete of the old one is moot.
            self.route_gone(old);
        }
        self.set_routes(id).routes += 1;
    }

    fn unset_installed(&mut self, prefix: &Prefix) -> bool {
        match self.installed.remove(prefix) {
            Some(old) => {
                self.route_gone(old);
                true
            }
            None => false,
        }
    }

    /// A route of `installed` value `v` (a set, perhaps [`HELD`]) left it.
    fn route_gone(&mut self, v: u32) {
        let id = v & !HELD;
        if v & HELD != 0 {
            self.held -= 1;
            self.set_routes(id).doomed -= 1;
        }
        let s = self.set_routes(id);
        s.routes -= 1;
        if s.routes == 0 {
            s.classic = false;
        }
        self.sets.release(id);
    }

    fn set_routes(&mut self, id: u32) -> &mut SetRoutes {
        let i = id as usize;
        if self.per_set.len() <= i {
            self.per_set.resize(i + 1, SetRoutes::default());
        }
        &mut self.per_set[i]
    }

    /// What `installed` holds of set `id`.
    pub fn set_routes_of(&self, id: u32) -> SetRoutes {
        self.per_set.get(id as usize).copied().unwrap_or_default()
    }

    /// A route of set `id` is being written without the set's nexthop
    /// object: deleting the object would not take it.
    pub fn note_classic(&mut self, id: u32) {
        if id != BLACKHOLE {
            self.set_routes(id).classic = true;
        }
    }

    /// Holds back the delete of `prefix` (see the module docs): true when
    /// held, false when it must be sent now (not a route of a set, or a
    /// set whose object does not hold all its routes).
    pub fn hold(&mut self, prefix: Prefix) -> bool {
        let Some(v) = self.installed.get(&prefix) else {
            return false;
        };
        if v & HELD != 0 {
            return true;
        }
        if v == BLACKHOLE || self.set_routes_of(v).classic || self.stale.contains(&prefix) {
            return false;
        }
        self.installed.insert(prefix, v | HELD);
        self.held += 1;
        self.set_routes(v).doomed += 1;
        true
    }

    /// Cancels a held delete of `prefix`, if any.
    fn unhold(&mut self, prefix: &Prefix) {
        if self.held == 0 {
            return;
        }
        if let Some(v) = self.installed.get(prefix).filter(|v| v & HELD != 0) {
            let id = v & !HELD;
            self.installed.insert(*prefix, id);
            self.held -= 1;
            self.set_routes(id).doomed -= 1;
        }
    }

    /// `prefix`'s route is gone from the kernel (someone else deleted it).
    pub fn forget(&mut self, prefix: &Prefix) {
        self.unset_installed(prefix);
    }

    /// Deletes held back.
    pub fn held_deletes(&self) -> usize {
        self.held
    }

    /// Whether `prefix`'s delete is held.
    pub fn is_held(&self, prefix: &Prefix) -> bool {
        self.installed.get(prefix).is_some_and(|v| v & HELD != 0)
    }

    /// The sets every installed route of which is doomed: deleting their
    /// nexthop objects removes exactly the routes the Loc-RIB no longer
    /// has. (No install of such a set is in flight: the caller asks
    /// between datagrams.)
    pub fn flushable(&self) -> Vec<u32> {
        if self.held == 0 {
            return Vec::new();
        }
        self.per_set
            .iter()
            .enumerate()
            .filter(|(_, s)| s.doomed > 0 && s.doomed == s.routes && !s.classic)
            .map(|(id, _)| id as u32)
            .collect()
    }

    /// Set `id`'s nexthop object was deleted, and the kernel removed its
    /// routes with it: they are gone here too (each counted as removed).
    pub fn drop_doomed(&mut self, id: u32, report: &mut Report) {
        let s = self.set_routes_of(id);
        if s.routes as usize * 2 > self.installed.len() {
            // Most routes were this set's (a full table from one peer):
            // one pass keeps the others, instead of a removal per route
            // scattered over the map's memory.
            let mut keep = PrefixMap::default();
            for (p, v) in self.installed.iter().filter(|(_, v)| v & !HELD != id) {
                keep.insert(p, v);
            }
            self.installed = keep;
            self.held -= s.doomed as usize;
            for _ in 0..s.routes {
                self.sets.release(id);
            }
            self.per_set[id as usize] = SetRoutes::default();
            report.removed += s.routes as usize;
            return;
        }
        let gone: Vec<Prefix> = self
            .installed
            .iter()
            .filter(|(_, v)| *v == id | HELD)
            .map(|(p, _)| p)
            .collect();
        for p in gone {
            self.unset_installed(&p);
            report.removed += 1;
        }
    }

    /// Ends up to `max` holds (in the map's order, which is scattered over
    /// the address space: the kernel's cheap order): the prefixes whose
    /// delete must now be sent.
    pub fn take_held(&mut self, max: usize) -> Vec<Prefix> {
        if self.held == 0 {
            return Vec::new();
        }
        let taken: Vec<Prefix> = self
            .installed
            .iter()
            .filter(|(_, v)| v & HELD != 0)
            .map(|(p, _)| p)
            .take(max)
            .collect();
        for p in &taken {
            self.unhold(p);
        }
        taken
    }

    fn unset_unresolved(&mut self, prefix: &Prefix) {
        if let Some(old) = self.unresolved.remove(prefix) {
            self.sets.release(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_bgp::rib::{LocRibChange, PeerId, Route};
    use petrel_bgp::wire::attr::PathAttributes;
    use std::net::Ipv4Addr;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn route(prefix: Prefix, peer: PeerId, gw: [u8; 4]) -> Route {
        Route {
            prefix,
            peer,
            path_id: 0,
            attrs: Arc::new(AttrSet::new(
                PathAttributes::default(),
                Some(NextHop::V4(Ipv4Addr::from(gw))),
            )),
            llgr_stale: false,
        }
    }

    fn best(prefix: &str, gw: [u8; 4]) -> FibChange {
        let prefix = p(prefix);
        LocRibChange::Best {
            prefix,
            best: route(prefix, PeerId(1), gw),
            multipath: Vec::new(),
        }
        .into()
    }

    fn gone(prefix: &str) -> FibChange {
        LocRibChange::Unreachable { prefix: p(prefix) }.into()
    }

    /// Decides one change and settles its messages as the kernel would
    /// answer them (`errno` for every message, 0 for success).
    fn apply(st: &mut FibState, c: &FibChange, errno: i32) -> (Decision, Report) {
        let d = st.decide(c, false);
        let prefix = c.prefix;
        let pending: Vec<Pending> = match d {
            Decision::Delete => vec![Pending { prefix, new: None }],
            Decision::Install(id) => vec![Pending {
                prefix,
                new: Some(id),
            }],
            Decision::DeleteThenInstall(id) => vec![
                Pending { prefix, new: None },
                Pending {
                    prefix,
                    new: Some(id),
                },
            ],
            _ => Vec::new(),
        };
        let failed: Vec<(usize, ErrorMsg)> = (0..pending.len())
            .filter(|_| errno != 0)
            .map(|i| {
                (
                    i,
                    ErrorMsg {
                        errno,
                        message: None,
                    },
                )
            })
            .collect();
        let mut report = Report::default();
        st.settle(&pending, &failed, &mut report);
        (d, report)
    }

    /// Installs a blackhole as `Fib::install_blackhole` does.
    fn blackhole(st: &mut FibState, prefix: &str) {
        let pending = [Pending {
            prefix: p(prefix),
            new: Some(BLACKHOLE),
        }];
        st.settle(&pending, &[], &mut Report::default());
    }

    #[test]
    fn a_path_is_installed_once_and_then_unchanged() {
        let mut st = FibState::default();
        let (d, r) = apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        assert!(matches!(d, Decision::Install(_)));
        assert_eq!(r.installed, 1);
        let (d, _) = apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        assert_eq!(d, Decision::Unchanged);
        // A new next hop is a replace.
        let (d, _) = apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 2]), 0);
        assert!(matches!(d, Decision::Install(_)));
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn only_a_unicast_route_goes_when_the_best_path_is_our_own() {
        let mut st = FibState::default();
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        let ours = |prefix: &str| {
            let prefix = p(prefix);
            FibChange::from(LocRibChange::Best {
                prefix,
                best: route(prefix, PeerId::LOCAL, [0, 0, 0, 0]),
                multipath: Vec::new(),
            })
        };
        let (d, r) = apply(&mut st, &ours("10.0.0.0/24"), 0);
        assert_eq!((d, r.removed), (Decision::Delete, 1));
        // Our own block's blackhole stays under our own best path.
        blackhole(&mut st, "10.1.0.0/26");
        assert_eq!(st.decide(&ours("10.1.0.0/26"), false), Decision::Unchanged);
        assert_eq!(st.installed(&p("10.1.0.0/26")), Some(BLACKHOLE));
    }

    #[test]
    fn a_learned_path_over_a_blackhole_deletes_it_first() {
        let mut st = FibState::default();
        blackhole(&mut st, "10.1.0.0/26");
        let (d, r) = apply(&mut st, &best("10.1.0.0/26", [192, 0, 2, 1]), 0);
        assert!(matches!(d, Decision::DeleteThenInstall(_)));
        assert_eq!((r.removed, r.installed), (1, 1));
        assert!(st.is_unicast(&p("10.1.0.0/26")));
    }

    #[test]
    fn unreachable_deletes_ours_and_a_stale_route_but_nothing_else() {
        let mut st = FibState::default();
        assert_eq!(st.decide(&gone("10.0.0.0/24"), false), Decision::Unchanged);
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        assert_eq!(apply(&mut st, &gone("10.0.0.0/24"), 0).0, Decision::Delete);
        assert!(st.is_empty());
        assert_eq!(st.sets().len(), 1, "the last-hop cache keeps its set");

        let found = KernelRoute {
            prefix: p("10.9.0.0/24"),
            table: 254,
            protocol: 202,
            rtype: msg::RTN_UNICAST,
            priority: None,
            mtu: None,
            hops: Vec::new(),
            nh_id: None,
        };
        st.mark_stale([&found]);
        assert_eq!(st.stale_count(), 1);
        let (d, r) = apply(&mut st, &gone("10.9.0.0/24"), 0);
        assert_eq!((d, r.removed, st.stale_count()), (Decision::Delete, 1, 0));
    }

    #[test]
    fn the_last_change_of_a_prefix_in_a_batch_wins() {
        let mut st = FibState::default();
        let batch = [
            best("10.0.0.0/24", [192, 0, 2, 1]),
            gone("10.0.0.0/24"),
            best("10.0.0.0/24", [192, 0, 2, 3]),
        ];
        let ds: Vec<Decision> = batch.iter().rev().map(|c| st.decide(c, true)).collect();
        st.end_batch();
        assert!(matches!(ds[0], Decision::Install(_)));
        assert_eq!(&ds[1..], [Decision::Superseded, Decision::Superseded]);
        // The next batch sees the prefix afresh.
        assert_ne!(st.decide(&gone("10.0.0.0/24"), true), Decision::Superseded);
    }

    #[test]
    fn a_path_without_a_usable_next_hop_is_refused() {
        let mut st = FibState::default();
        let d = st.decide(&best("10.0.0.0/24", [0, 0, 0, 0]), false);
        assert_eq!(d, Decision::Refused("no usable next hop"));
        assert!(st.is_empty());
    }

    #[test]
    fn a_delete_of_a_route_already_gone_counts_as_removed() {
        for errno in [libc::ESRCH, libc::ENOENT] {
            let mut st = FibState::default();
            apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
            let (_, r) = apply(&mut st, &gone("10.0.0.0/24"), errno);
            assert_eq!((r.removed, r.errors.len()), (1, 0), "errno {errno}");
            assert!(st.is_empty());
        }
    }

    #[test]
    fn a_refused_replace_leaves_the_prefix_stale_and_waiting() {
        let mut st = FibState::default();
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        let (_, r) = apply(
            &mut st,
            &best("10.0.0.0/24", [198, 51, 100, 1]),
            libc::ENETUNREACH,
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].errno, libc::ENETUNREACH);
        assert_eq!(r.errors[0].op, Op::Install);
        // What the kernel holds is unknown: untracked, stale (a sweep or
        // an Unreachable removes it), and the refused set waits for a link.
        assert_eq!(st.installed(&p("10.0.0.0/24")), None);
        assert_eq!(st.stale_count(), 1);
        assert_eq!(st.unresolved_count(), 1);
        // The same path again is written, not taken as unchanged.
        let d = st.decide(&best("10.0.0.0/24", [198, 51, 100, 1]), false);
        assert!(matches!(d, Decision::Install(_)), "{d:?}");
    }

    #[test]
    fn a_refused_first_install_waits_without_a_stale_route() {
        let mut st = FibState::default();
        let (_, r) = apply(
            &mut st,
            &best("10.0.0.0/24", [198, 51, 100, 1]),
            libc::ENETUNREACH,
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!((st.stale_count(), st.unresolved_count()), (0, 1));
        // Unreachable drops the waiting route; nothing to delete.
        assert_eq!(st.decide(&gone("10.0.0.0/24"), false), Decision::Unchanged);
        assert_eq!(st.unresolved_count(), 0);
    }

    #[test]
    fn lost_replies_take_the_batch_as_applied() {
        let mut st = FibState::default();
        let d = st.decide(&best("10.0.0.0/24", [192, 0, 2, 1]), false);
        let Decision::Install(id) = d else {
            panic!("{d:?}")
        };
        st.settle_unanswered(&[Pending {
            prefix: p("10.0.0.0/24"),
            new: Some(id),
        }]);
        assert_eq!(st.installed(&p("10.0.0.0/24")), Some(id));
    }

    #[test]
    fn next_hop_sets_are_freed_with_their_last_route() {
        let mut st = FibState::default();
        for i in 0..4u8 {
            apply(
                &mut st,
                &best(&format!("10.0.{i}.0/24"), [192, 0, 2, i + 1]),
                0,
            );
        }
        // Four sets; the last-hop cache holds the fourth.
        assert_eq!(st.sets().len(), 4);
        for i in 0..4u8 {
            apply(&mut st, &gone(&format!("10.0.{i}.0/24")), 0);
        }
        assert_eq!(st.sets().len(), 1);
        // A datagram that was never sent gives its references back.
        let d = st.decide(&best("10.0.9.0/24", [192, 0, 2, 9]), false);
        let Decision::Install(id) = d else {
            panic!("{d:?}")
        };
        st.unsent(&[Pending {
            prefix: p("10.0.9.0/24"),
            new: Some(id),
        }]);
        assert_eq!(st.sets().len(), 1, "only the last-hop cache's set");
    }

    /// Decides `c` (a delete) and holds it back instead of sending it.
    fn hold(st: &mut FibState, c: &FibChange) -> bool {
        assert_eq!(st.decide(c, false), Decision::Delete);
        st.hold(c.prefix)
    }

    #[test]
    fn a_set_is_flushable_once_every_route_of_it_is_held() {
        let mut st = FibState::default();
        for i in 0..3 {
            apply(&mut st, &best(&format!("10.0.{i}.0/24"), [192, 0, 2, 1]), 0);
        }
        apply(&mut st, &best("10.9.0.0/24", [192, 0, 2, 2]), 0);
        let a = st.installed(&p("10.0.0.0/24")).unwrap();
        assert!(hold(&mut st, &gone("10.0.0.0/24")));
        assert!(hold(&mut st, &gone("10.0.1.0/24")));
        assert!(st.flushable().is_empty(), "10.0.2.0/24 still wanted");
        assert!(hold(&mut st, &gone("10.0.2.0/24")));
        assert_eq!(st.flushable(), [a]);
        // Held routes are still in the kernel, so still installed.
        assert_eq!((st.len(), st.held_deletes()), (4, 3));
        // The object went: its routes with it, the other next hop's stay.
        let mut r = Report::default();
        st.drop_doomed(a, &mut r);
        assert_eq!((r.removed, st.len(), st.held_deletes()), (3, 1, 0));
        assert!(st.is_unicast(&p("10.9.0.0/24")));
        assert_eq!(st.set_routes_of(a), SetRoutes::default());
    }

    /// Both ways of forgetting a flushed set's routes (a pass over the
    /// map when they are most of it, a removal each otherwise) leave the
    /// same state; other sets' holds stay.
    #[test]
    fn a_flushed_set_leaves_the_others_alone_either_way() {
        for big in [1, 5] {
            let mut st = FibState::default();
            for i in 0..big {
                apply(&mut st, &best(&format!("10.0.{i}.0/24"), [192, 0, 2, 1]), 0);
            }
            for i in 0..3 {
                apply(&mut st, &best(&format!("10.9.{i}.0/24"), [192, 0, 2, 2]), 0);
            }
            blackhole(&mut st, "10.1.0.0/26");
            let a = st.installed(&p("10.0.0.0/24")).unwrap();
            let b = st.installed(&p("10.9.0.0/24")).unwrap();
            for i in 0..big {
                assert!(hold(&mut st, &gone(&format!("10.0.{i}.0/24"))));
            }
            assert!(hold(&mut st, &gone("10.9.1.0/24")));
            assert_eq!(st.flushable(), [a]);
            let mut r = Report::default();
            st.drop_doomed(a, &mut r);
            assert_eq!(r.removed, big, "{big}");
            assert_eq!((st.len(), st.held_deletes()), (4, 1), "{big}");
            assert!(st.is_held(&p("10.9.1.0/24")));
            assert_eq!(st.set_routes_of(b).routes, 3);
            assert_eq!(st.installed(&p("10.1.0.0/26")), Some(BLACKHOLE));
            assert_eq!(st.installed(&p("10.0.0.0/24")), None);
            // No reference left: the last-hop cache holds the other set.
            assert_eq!(st.sets().refs(a), 0, "{big}");
        }
    }

    #[test]
    fn a_new_change_of_a_held_prefix_cancels_its_hold() {
        let mut st = FibState::default();
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        apply(&mut st, &best("10.0.1.0/24", [192, 0, 2, 1]), 0);
        let a = st.installed(&p("10.0.0.0/24")).unwrap();
        assert!(hold(&mut st, &gone("10.0.0.0/24")));
        assert!(hold(&mut st, &gone("10.0.1.0/24")));
        // The same path back: the kernel still has it; nothing to write,
        // and it must not go with the object.
        let (d, _) = apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        assert_eq!(d, Decision::Unchanged);
        assert!(!st.is_held(&p("10.0.0.0/24")));
        assert!(st.flushable().is_empty());
        // Another next hop for the other: a replace, written; then the
        // first set has no held route left either.
        let (d, _) = apply(&mut st, &best("10.0.1.0/24", [192, 0, 2, 7]), 0);
        assert!(matches!(d, Decision::Install(b) if b != a), "{d:?}");
        assert_eq!((st.held_deletes(), st.set_routes_of(a).routes), (0, 1));
        // Held again, the first set's only route: flushable.
        assert!(hold(&mut st, &gone("10.0.0.0/24")));
        assert_eq!(st.flushable(), [a]);
    }

    #[test]
    fn only_routes_all_by_their_object_are_held() {
        let mut st = FibState::default();
        blackhole(&mut st, "10.1.0.0/26");
        assert!(!st.hold(p("10.1.0.0/26")), "a blackhole has no object");
        assert!(!st.hold(p("10.2.0.0/24")), "not installed");
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        let a = st.installed(&p("10.0.0.0/24")).unwrap();
        // One route of the set went in without the object (refused, or
        // before the link was known): deleting the object would leave it.
        st.note_classic(a);
        assert!(!hold(&mut st, &gone("10.0.0.0/24")));
        // Forgotten once the set has no route left.
        apply(&mut st, &gone("10.0.0.0/24"), 0);
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        assert!(hold(&mut st, &gone("10.0.0.0/24")));
    }

    #[test]
    fn a_released_hold_is_a_plain_delete() {
        let mut st = FibState::default();
        apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        apply(&mut st, &best("10.0.1.0/24", [192, 0, 2, 1]), 0);
        assert!(hold(&mut st, &gone("10.0.0.0/24")));
        assert!(hold(&mut st, &gone("10.0.1.0/24")));
        // Released a bounded number at a time.
        let first = st.take_held(1);
        assert_eq!((first.len(), st.held_deletes()), (1, 1));
        let second = st.take_held(usize::MAX);
        assert_eq!(second.len(), 1);
        assert_ne!(first, second);
        // Sent and answered for one; the other is held again.
        let (sent, other) = if first == [p("10.0.0.0/24")] {
            (first, second)
        } else {
            (second, first)
        };
        assert!(st.hold(other[0]));
        assert_eq!(sent, [p("10.0.0.0/24")]);
        assert_eq!((st.held_deletes(), st.len()), (1, 2));
        let mut r = Report::default();
        st.settle(
            &[Pending {
                prefix: p("10.0.0.0/24"),
                new: None,
            }],
            &[],
            &mut r,
        );
        assert_eq!((r.removed, st.len()), (1, 1));
        // Someone else deleted a held route: gone, not held.
        assert!(hold(&mut st, &gone("10.0.1.0/24")));
        st.forget(&p("10.0.1.0/24"));
        assert_eq!((st.held_deletes(), st.len()), (0, 0));
        assert!(st.flushable().is_empty());
    }

    #[test]
    fn stale_routes_not_reinstalled_are_swept() {
        let mut st = FibState::default();
        let found: Vec<KernelRoute> = ["10.0.0.0/24", "10.0.1.0/24"]
            .iter()
            .map(|s| KernelRoute {
                prefix: p(s),
                table: 254,
                protocol: 202,
                rtype: msg::RTN_UNICAST,
                priority: None,
                mtu: None,
                hops: Vec::new(),
                nh_id: None,
            })
            .collect();
        st.mark_stale(&found);
        // Re-learned after the restart: written again although the same.
        let (d, _) = apply(&mut st, &best("10.0.0.0/24", [192, 0, 2, 1]), 0);
        assert!(matches!(d, Decision::Install(_)));
        assert_eq!(st.take_stale(), vec![p("10.0.1.0/24")]);
        assert_eq!(st.stale_count(), 0);
    }
}
