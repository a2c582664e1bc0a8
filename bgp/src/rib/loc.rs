//! The route table: every path of every prefix, and the Loc-RIB selection.
//!
//! One ordered map from prefix to the paths known for it, as in BIRD's and
//! GoBGP's tables. Each `Path` carries its Adj-RIB-In state (the
//! pre-policy attributes, and the import result: accepted attributes or
//! rejected) and its Loc-RIB state (selected or not), so a route costs one
//! map entry and one small vector element whatever view asks for it. The
//! selected paths sit at the front of the vector, best first, which makes
//! reading the Loc-RIB free and lets a change be detected by comparing the
//! front before and after the decision process.

use super::attrs::AttrSet;
use super::decision::{self, Candidate, DecisionConfig, PeerKind, Ranked};
use super::prefix_map::PrefixMap;
use super::PeerId;
use crate::wire::nlri::Prefix;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use thin_vec::ThinVec;

/// Import policy or loop detection refused the path.
pub(crate) const REJECTED: u8 = 1;
/// RFC 4724: kept from a session that went down, awaiting End-of-RIB.
pub(crate) const STALE: u8 = 2;
/// RFC 9494: kept past the restart time, least preferred.
pub(crate) const LLGR_STALE: u8 = 4;
/// In the multipath set (the first such path is the best).
pub(crate) const SELECTED: u8 = 8;
/// Gone, but still part of the recorded selection: removed by the next
/// decision, which runs before any call returns.
pub(crate) const WITHDRAWN: u8 = 16;

/// One path for one prefix, from one peer (and ADD-PATH path id).
#[derive(Clone, Debug)]
pub(crate) struct Path {
    /// The attributes after import policy (before it when rejected); when
    /// policy changed them, they hold the received ones in `pre`.
    pub attrs: Arc<AttrSet>,
    pub path_id: u32,
    pub peer: PeerId,
    pub flags: u8,
}

impl Path {
    /// The attributes as received (soft reconfiguration).
    pub fn pre(&self) -> &Arc<AttrSet> {
        self.attrs.pre.as_ref().unwrap_or(&self.attrs)
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    /// RFC 9494 §4.3: stale by our own timer, or received with the
    /// LLGR_STALE community from a helper that kept it.
    pub fn llgr_stale(&self) -> bool {
        self.has(LLGR_STALE) || self.attrs.llgr_stale()
    }

    fn same_path(&self, peer: PeerId, path_id: u32) -> bool {
        self.peer == peer && self.path_id == path_id
    }
}

/// A selected route as the rest of petrel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    /// [`PeerId::LOCAL`] for locally originated routes.
    pub peer: PeerId,
    pub path_id: u32,
    pub attrs: Arc<AttrSet>,
    /// RFC 9494: kept past the restart time.
    pub llgr_stale: bool,
}

impl Route {
    pub(crate) fn of(prefix: Prefix, p: &Path) -> Self {
        Self {
            prefix,
            peer: p.peer,
            path_id: p.path_id,
            attrs: p.attrs.clone(),
            llgr_stale: p.llgr_stale(),
        }
    }
}

/// A change of one prefix's Loc-RIB entry: the FIB stream, and the input of
/// Adj-RIB-Out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocRibChange {
    /// A new best path or multipath set. `multipath` is the whole ECMP set,
    /// best first, when it holds more than the best; empty when the best
    /// is alone (ECMP off, or one path), so that a change costs no
    /// allocation of its own: a full table is a million of them, made on
    /// the speaker's thread and freed on the FIB writer's.
    /// [`LocRibChange::paths`] gives the set either way.
    Best {
        prefix: Prefix,
        best: Route,
        multipath: Vec<Route>,
    },
    /// No usable path left.
    Unreachable { prefix: Prefix },
}

impl LocRibChange {
    pub fn prefix(&self) -> Prefix {
        match self {
            LocRibChange::Best { prefix, .. } | LocRibChange::Unreachable { prefix } => *prefix,
        }
    }

    /// The multipath set, best first; empty when unreachable.
    pub fn paths(&self) -> &[Route] {
        match self {
            LocRibChange::Best {
                best, multipath, ..
            } if multipath.is_empty() => std::slice::from_ref(best),
            LocRibChange::Best { multipath, .. } => multipath,
            LocRibChange::Unreachable { .. } => &[],
        }
    }

    pub fn best(&self) -> Option<&Route> {
        match self {
            LocRibChange::Best { best, .. } => Some(best),
            LocRibChange::Unreachable { .. } => None,
        }
    }
}

/// A Loc-RIB change in the form the FIB stream carries: the prefix and the
/// next hops of its multipath set, nothing the kernel does not need. 48
/// bytes against [`LocRibChange`]'s 88, so that the speaker can run well
/// ahead of a FIB writer stalled in the kernel (Linux's FIB trie rebuilds a
/// large node inside one insert: 0.6 s for a full table) without the
/// changes in flight costing the memory the table itself does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibChange {
    pub prefix: Prefix,
    pub via: Via,
}

/// Where a [`FibChange`]'s prefix goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// No usable path left.
    Unreachable,
    /// The best path is our own ([`PeerId::LOCAL`]): nothing to install
    /// toward a peer.
    Local,
    /// One path: its attributes carry the next hop.
    One(Arc<AttrSet>),
    /// An ECMP set, best first, without our own paths: each one's
    /// attributes carry a next hop.
    Many(Box<[Arc<AttrSet>]>),
}

impl FibChange {
    /// The attribute sets of the paths to install, best first.
    pub fn paths(&self) -> &[Arc<AttrSet>] {
        match &self.via {
            Via::One(a) => std::slice::from_ref(a),
            Via::Many(v) => v,
            Via::Unreachable | Via::Local => &[],
        }
    }
}

impl From<LocRibChange> for FibChange {
    fn from(c: LocRibChange) -> Self {
        match c {
            LocRibChange::Unreachable { prefix } => FibChange {
                prefix,
                via: Via::Unreachable,
            },
            LocRibChange::Best { prefix, best, .. } if best.peer == PeerId::LOCAL => FibChange {
                prefix,
                via: Via::Local,
            },
            LocRibChange::Best {
                prefix,
                best,
                multipath,
            } if multipath.is_empty() => FibChange {
                prefix,
                via: Via::One(best.attrs),
            },
            LocRibChange::Best {
                prefix, multipath, ..
            } => {
                let v: Vec<Arc<AttrSet>> = multipath
                    .into_iter()
                    .filter(|r| r.peer != PeerId::LOCAL)
                    .map(|r| r.attrs)
                    .collect();
                let via = match <[Arc<AttrSet>; 1]>::try_from(v) {
                    Ok([one]) => Via::One(one),
                    Err(v) => Via::Many(v.into_boxed_slice()),
                };
                FibChange { prefix, via }
            }
        }
    }
}

/// What the decision process needs to know about a path's peer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerView {
    pub kind: PeerKind,
    pub router_id: Ipv4Addr,
    pub addr: IpAddr,
}

/// Takes path `i` out: a selected path stays, marked withdrawn, until the
/// decision process has compared the old selection with the new; any other
/// goes at once. Returns (a copy of) the path.
pub(crate) fn withdraw_at(paths: &mut Paths, i: usize) -> Path {
    if paths[i].has(SELECTED) {
        paths[i].flags |= WITHDRAWN;
        paths[i].clone()
    } else {
        // `remove`, not `swap_remove`: the selected paths stay at the front.
        paths.remove(i)
    }
}

/// The paths of one prefix. Almost every prefix has exactly one, kept
/// inline (the enum is no larger than a `Path`), so a route costs no
/// allocation of its own; several live in a growable array.
#[derive(Clone, Debug)]
pub(crate) enum Paths {
    One(Path),
    Many(Many),
}

const _: () = assert!(std::mem::size_of::<Paths>() == std::mem::size_of::<Path>());

impl Default for Paths {
    /// No paths; allocates nothing (an empty `ThinVec` points at a shared
    /// static header). The old `Box<Vec>` allocated here, and every
    /// `mem::take` of a prefix's paths (each push) paid a malloc and a free
    /// for it.
    fn default() -> Self {
        Paths::Many(ThinVec::new())
    }
}

impl std::ops::Deref for Paths {
    type Target = [Path];
    fn deref(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Paths {
    fn deref_mut(&mut self) -> &mut [Path] {
        match self {
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v,
        }
    }
}

impl Paths {
    /// Back to the inline form when one path is left.
    fn settle(mut v: Many) -> Self {
        if v.len() == 1 {
            if let Some(p) = v.pop() {
                return Paths::One(p);
            }
        }
        Paths::Many(v)
    }

    /// Appends. The array grows by half its length at a time: best-path
    /// churn from many peers reallocates every few arrivals, not each one.
    fn push(&mut self, p: Path) {
        *self = match std::mem::take(self) {
            Paths::Many(v) if v.is_empty() => Paths::One(p),
            Paths::One(first) => {
                let mut v = ThinVec::with_capacity(2);
                v.push(first);
                v.push(p);
                Paths::Many(v)
            }
            Paths::Many(mut v) => {
                if v.len() == v.capacity() {
                    v.reserve_exact((v.len() / 2).max(2));
                }
                v.push(p);
                Paths::Many(v)
            }
        }
    }

    fn remove(&mut self, i: usize) -> Path {
        match std::mem::take(self) {
            Paths::One(p) => p,
            Paths::Many(mut v) => {
                let p = v.remove(i);
                *self = Paths::settle(v);
                p
            }
        }
    }

    /// Drops the paths marked withdrawn.
    fn retain_live(&mut self) {
        *self = match std::mem::take(self) {
            Paths::One(p) if p.has(WITHDRAWN) => Paths::default(),
            Paths::One(p) => Paths::One(p),
            Paths::Many(mut v) => {
                v.retain(|p| !p.has(WITHDRAWN));
                Paths::settle(v)
            }
        }
    }
}

/// Several paths: a thin vector (length and capacity live in its heap
/// block), so that [`Paths`] is no larger than the one path it usually
/// holds (the pointer fits beside the path's niche), and reaching the
/// paths is one pointer, not two as through a `Box<Vec>`: in a ten-peer
/// table each arrival and each decision follows it.
type Many = ThinVec<Path>;

#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Packed keys (8 bytes for an IPv4 prefix, not 18): the key is a
    /// third of each entry.
    map: PrefixMap<Paths>,
}

impl Table {
    /// Inserts or replaces the path with the same peer and path id; returns
    /// the replaced one.
    pub fn set(&mut self, prefix: Prefix, mut path: Path) -> Option<Path> {
        let paths = self.map.get_or_default(prefix);
        path.flags &= !(SELECTED | WITHDRAWN);
        let Some(i) = paths
            .iter()
            .position(|p| p.same_path(path.peer, path.path_id) && !p.has(WITHDRAWN))
        else {
            paths.push(path);
            return None;
        };
        let old = &mut paths[i];
        if !old.has(SELECTED) {
            return Some(std::mem::replace(old, path));
        }
        // A selected path coming back unchanged stays selected; a changed
        // one is kept as withdrawn until the decision has seen what it was.
        let unchanged = Arc::ptr_eq(&old.attrs, &path.attrs)
            && (old.flags ^ path.flags) & (LLGR_STALE | REJECTED) == 0;
        if unchanged {
            path.flags |= SELECTED;
            return Some(std::mem::replace(old, path));
        }
        old.flags |= WITHDRAWN;
        let was = old.clone();
        paths.push(path);
        Some(was)
    }

    pub fn remove(&mut self, prefix: &Prefix, peer: PeerId, path_id: u32) -> Option<Path> {
        let paths = self.map.get_mut(prefix)?;
        let i = paths
            .iter()
            .position(|p| p.same_path(peer, path_id) && !p.has(WITHDRAWN))?;
        Some(withdraw_at(paths, i))
    }

    pub fn paths(&self, prefix: &Prefix) -> &[Path] {
        self.map.get(prefix).map_or(&[], |p| &p[..])
    }

    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &Paths)> {
        self.map.iter()
    }

    /// The prefixes after `after` (all with `None`), paths writable.
    pub fn iter_mut_after(
        &mut self,
        after: Option<Prefix>,
    ) -> impl Iterator<Item = (Prefix, &mut Paths)> {
        self.map.iter_mut_after(after)
    }

    pub fn prefixes(&self) -> usize {
        self.map.len()
    }

    /// The current multipath set of `prefix`, best first.
    pub fn selected(&self, prefix: &Prefix) -> impl Iterator<Item = &Path> {
        self.paths(prefix).iter().take_while(|p| p.has(SELECTED))
    }

    /// Runs the decision process for `prefix` and records the outcome;
    /// returns the change, if any. `peer` describes a path's peer; `cost` is
    /// the IGP-cost hook, `None` for an unreachable next hop.
    #[cfg(test)]
    pub fn decide(
        &mut self,
        prefix: Prefix,
        cfg: &DecisionConfig,
        peer: impl Fn(PeerId) -> Option<PeerView>,
        cost: impl Fn(&Path, &PeerView) -> Option<u32>,
    ) -> Option<LocRibChange> {
        self.decide_from(prefix, cfg, peer, cost).map(|(c, _)| c)
    }

    /// [`Table::decide`], with the best route the change replaces (what
    /// Adj-RIB-Out had exported for the prefix, recomputed from it).
    pub fn decide_from(
        &mut self,
        prefix: Prefix,
        cfg: &DecisionConfig,
        peer: impl Fn(PeerId) -> Option<PeerView>,
        cost: impl Fn(&Path, &PeerView) -> Option<u32>,
    ) -> Option<(LocRibChange, Option<Route>)> {
        let paths = self.map.get_mut(&prefix)?;
        // Almost every prefix has a few paths: rank them in buffers on the
        // stack, and allocate only for a change or a crowd.
        let change = if paths.len() <= INLINE {
            let mut ranked = [Ranked::EMPTY; INLINE];
            let mut chosen = [0; INLINE];
            decide_in(prefix, paths, cfg, &peer, &cost, &mut ranked, &mut chosen)
        } else {
            let mut ranked = vec![Ranked::EMPTY; paths.len()];
            let mut chosen = vec![0; paths.len()];
            decide_in(prefix, paths, cfg, &peer, &cost, &mut ranked, &mut chosen)
        };
        if paths.is_empty() {
            self.map.remove(&prefix);
        }
        change
    }
}

/// Paths of one prefix ranked without allocating.
const INLINE: usize = 16;

/// The decision process on one prefix's `paths`, with `ranked` and
/// `chosen` as scratch space (at least `paths.len()` each).
fn decide_in(
    prefix: Prefix,
    paths: &mut Paths,
    cfg: &DecisionConfig,
    peer: &impl Fn(PeerId) -> Option<PeerView>,
    cost: &impl Fn(&Path, &PeerView) -> Option<u32>,
    ranked: &mut [Ranked],
    chosen: &mut [usize],
) -> Option<(LocRibChange, Option<Route>)> {
    let mut usable = 0;
    let mut withdrawn = false;
    for (i, p) in paths.iter().enumerate() {
        if p.flags & (REJECTED | WITHDRAWN) != 0 {
            withdrawn |= p.has(WITHDRAWN);
            continue;
        }
        let Some(view) = peer(p.peer) else { continue };
        // RFC 4271 §9.1.2: a route whose NEXT_HOP is unresolvable is
        // excluded from the decision process.
        let Some(igp_cost) = cost(p, &view) else {
            continue;
        };
        let c = Candidate {
            attrs: &p.attrs,
            kind: view.kind,
            router_id: view.router_id,
            peer_addr: view.addr,
            path_id: p.path_id,
            llgr_stale: p.llgr_stale(),
            igp_cost,
        };
        ranked[usable] = Ranked::new(&c, i, cfg);
        usable += 1;
    }
    let n = decision::select_ranked(&ranked[..usable], cfg, &mut chosen[..usable]);
    let chosen = &mut chosen[..n];
    for c in chosen.iter_mut() {
        *c = ranked[*c].index;
    }
    // The recorded selection is the selected paths at the front; compare it
    // with the new one before anything moves.
    let old = paths.iter().take_while(|p| p.has(SELECTED)).count();
    let unchanged = old == n
        && chosen
            .iter()
            .enumerate()
            .all(|(rank, &i)| rank == i || same_route(&paths[rank], &paths[i]));
    let was = (!unchanged && old > 0).then(|| Route::of(prefix, &paths[0]));
    // Selected first, in rank order; the rest keep their relative order.
    // Rotating each chosen path to its rank moves only the paths between.
    for (rank, &i) in chosen.iter().enumerate() {
        // Chosen paths of lower rank that sat behind this one moved in
        // front of it, each pushing it one place back.
        let at = i + chosen[..rank].iter().filter(|&&j| j > i).count();
        paths[rank..=at].rotate_right(1);
    }
    for (rank, p) in paths.iter_mut().enumerate() {
        p.flags = (p.flags & !SELECTED) | if rank < n { SELECTED } else { 0 };
    }
    if withdrawn {
        paths.retain_live();
    }
    if unchanged {
        return None;
    }
    let change = match n {
        0 => LocRibChange::Unreachable { prefix },
        1 => LocRibChange::Best {
            prefix,
            best: Route::of(prefix, &paths[0]),
            multipath: Vec::new(),
        },
        _ => LocRibChange::Best {
            prefix,
            best: Route::of(prefix, &paths[0]),
            multipath: paths[..n].iter().map(|p| Route::of(prefix, p)).collect(),
        },
    };
    Some((change, was))
}

/// Whether two paths make the same [`Route`] (see `Route::same`).
fn same_route(a: &Path, b: &Path) -> bool {
    a.peer == b.peer
        && a.path_id == b.path_id
        && Arc::ptr_eq(&a.attrs, &b.attrs)
        && a.llgr_stale() == b.llgr_stale()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attr::community::LLGR_STALE as LLGR_STALE_COMMUNITY;
    use crate::wire::attr::{AsPath, Community, Origin, PathAttributes};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The table as it was before decisions were made in place: a plain
    /// vector per prefix, every Route built and compared. The model for
    /// `Table`.
    #[derive(Default)]
    struct Model {
        map: BTreeMap<Prefix, Vec<Path>>,
    }

    fn route_same(a: &Route, b: &Route) -> bool {
        a.peer == b.peer
            && a.path_id == b.path_id
            && Arc::ptr_eq(&a.attrs, &b.attrs)
            && a.llgr_stale == b.llgr_stale
    }

    impl Model {
        fn set(&mut self, prefix: Prefix, mut path: Path) {
            let paths = self.map.entry(prefix).or_default();
            path.flags &= !(SELECTED | WITHDRAWN);
            let Some(i) = paths
                .iter()
                .position(|p| p.same_path(path.peer, path.path_id) && !p.has(WITHDRAWN))
            else {
                paths.push(path);
                return;
            };
            let old = &mut paths[i];
            if !old.has(SELECTED) {
                *old = path;
                return;
            }
            let unchanged = Arc::ptr_eq(&old.attrs, &path.attrs)
                && (old.flags ^ path.flags) & (LLGR_STALE | REJECTED) == 0;
            if unchanged {
                path.flags |= SELECTED;
                *old = path;
                return;
            }
            old.flags |= WITHDRAWN;
            paths.push(path);
        }

        fn remove(&mut self, prefix: &Prefix, peer: PeerId, path_id: u32) {
            let Some(paths) = self.map.get_mut(prefix) else {
                return;
            };
            let Some(i) = paths
                .iter()
                .position(|p| p.same_path(peer, path_id) && !p.has(WITHDRAWN))
            else {
                return;
            };
            if paths[i].has(SELECTED) {
                paths[i].flags |= WITHDRAWN;
            } else {
                paths.remove(i);
            }
        }

        fn decide(
            &mut self,
            prefix: Prefix,
            cfg: &DecisionConfig,
            peer: impl Fn(PeerId) -> Option<PeerView>,
            cost: impl Fn(&Path, &PeerView) -> Option<u32>,
        ) -> Option<LocRibChange> {
            let paths = self.map.get_mut(&prefix)?;
            let old: Vec<Route> = paths
                .iter()
                .take_while(|p| p.has(SELECTED))
                .map(|p| Route::of(prefix, p))
                .collect();
            let mut usable = Vec::new();
            let mut cands = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                if p.flags & (REJECTED | WITHDRAWN) != 0 {
                    continue;
                }
                let Some(view) = peer(p.peer) else { continue };
                let Some(igp_cost) = cost(p, &view) else {
                    continue;
                };
                usable.push(i);
                cands.push(Candidate {
                    attrs: &p.attrs,
                    kind: view.kind,
                    router_id: view.router_id,
                    peer_addr: view.addr,
                    path_id: p.path_id,
                    llgr_stale: p.llgr_stale(),
                    igp_cost,
                });
            }
            let sel = decision::select(&cands, cfg);
            let chosen: Vec<usize> = sel.order[..sel.multipath]
                .iter()
                .map(|&c| usable[c])
                .collect();
            let mut order = chosen.clone();
            order.extend(
                (0..paths.len()).filter(|i| !chosen.contains(i) && !paths[*i].has(WITHDRAWN)),
            );
            let mut v: Vec<Path> = order
                .iter()
                .enumerate()
                .map(|(rank, &i)| {
                    let mut p = paths[i].clone();
                    p.flags =
                        (p.flags & !SELECTED) | if rank < chosen.len() { SELECTED } else { 0 };
                    p
                })
                .collect();
            std::mem::swap(paths, &mut v);
            let new: Vec<Route> = paths[..chosen.len()]
                .iter()
                .map(|p| Route::of(prefix, p))
                .collect();
            if paths.is_empty() {
                self.map.remove(&prefix);
            }
            if old.len() == new.len() && old.iter().zip(&new).all(|(a, b)| route_same(a, b)) {
                return None;
            }
            Some(match new.first() {
                Some(best) => LocRibChange::Best {
                    prefix,
                    best: best.clone(),
                    multipath: if new.len() > 1 { new } else { Vec::new() },
                },
                None => LocRibChange::Unreachable { prefix },
            })
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// prefix, peer, path id, attribute set, flags
        Set(u8, u16, u32, usize, u8),
        Remove(u8, u16, u32),
        Decide(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..2, 1u16..8, 0u32..2, 0usize..6, prop::sample::select(vec![
                0, 0, 0, REJECTED, STALE, LLGR_STALE, SELECTED | WITHDRAWN,
            ]))
                .prop_map(|(x, p, id, a, f)| Op::Set(x, p, id, a, f)),
            2 => (0u8..2, 1u16..8, 0u32..2).prop_map(|(x, p, id)| Op::Remove(x, p, id)),
            3 => (0u8..2).prop_map(Op::Decide),
        ]
    }

    /// Attribute sets: two neighbour ASes, MEDs, path lengths, one with
    /// the LLGR_STALE community, one with a next hop that does not resolve.
    fn attr_sets() -> Vec<Arc<AttrSet>> {
        let set = |path: &[u32], med: Option<u32>, nh: [u8; 4], llgr: bool| {
            Arc::new(AttrSet::new(
                PathAttributes {
                    origin: Some(Origin::Igp),
                    as_path: Some(AsPath::from_sequence(path)),
                    next_hop: Some(Ipv4Addr::from(nh)),
                    med,
                    communities: llgr.then(|| vec![Community(LLGR_STALE_COMMUNITY)]),
                    ..Default::default()
                },
                None,
            ))
        };
        vec![
            set(&[65001, 1], Some(10), [192, 0, 2, 1], false),
            set(&[65001, 2], Some(5), [192, 0, 2, 1], false),
            set(&[65002, 3], None, [192, 0, 2, 1], false),
            set(&[65002], Some(1), [192, 0, 2, 2], false),
            set(&[65001, 1], Some(10), [192, 0, 2, 1], true),
            set(&[65002, 3], None, [198, 51, 100, 9], false),
        ]
    }

    fn view(id: PeerId) -> Option<PeerView> {
        // Peer 7 is unknown (removed); 5 and 6 are iBGP; identifiers are
        // not in peer order, and two peers share one.
        let rid = [0, 9, 3, 3, 1, 7, 2][..].get(id.0 as usize)?;
        Some(PeerView {
            kind: if id.0 >= 5 {
                PeerKind::Ibgp
            } else {
                PeerKind::Ebgp
            },
            router_id: Ipv4Addr::new(10, 0, 0, *rid),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + id.0 as u8)),
        })
    }

    fn cost(p: &Path, _: &PeerView) -> Option<u32> {
        match p.attrs.next_hop_addr()? {
            IpAddr::V4(a) if a.octets()[0] == 198 => None,
            IpAddr::V4(a) => Some(u32::from(a.octets()[3])),
            IpAddr::V6(_) => None,
        }
    }

    /// Every path of every prefix, in table order: who, flags, attributes.
    type Contents = Vec<(Prefix, Vec<(PeerId, u32, u8, *const AttrSet)>)>;

    fn contents<'a>(it: impl Iterator<Item = (Prefix, &'a [Path])>) -> Contents {
        it.map(|(x, paths)| {
            let v = paths
                .iter()
                .map(|p| (p.peer, p.path_id, p.flags, Arc::as_ptr(&p.attrs)))
                .collect();
            (x, v)
        })
        .collect()
    }

    #[test]
    fn same_route_by_another_path_is_no_change() {
        // A selected path comes back with the LLGR_STALE flag where its
        // attributes already carry the community: a new path in the table
        // (the old one withdrawn), but the same route, so no change.
        let cfg = DecisionConfig::default();
        let stale = attr_sets()[4].clone();
        let prefix: Prefix = "10.0.0.0/24".parse().unwrap();
        let path = |flags| Path {
            attrs: stale.clone(),
            path_id: 0,
            peer: PeerId(1),
            flags,
        };
        let mut table = Table::default();
        table.set(prefix, path(0));
        assert!(table.decide(prefix, &cfg, view, cost).is_some());
        table.set(prefix, path(LLGR_STALE));
        assert_eq!(table.paths(&prefix).len(), 2);
        assert_eq!(table.decide(prefix, &cfg, view, cost), None);
        let left: Vec<u8> = table.paths(&prefix).iter().map(|p| p.flags).collect();
        assert_eq!(left, [LLGR_STALE | SELECTED]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Any sequence of sets, removals and decisions: the same changes
        /// and the same table (order and flags of every path) as the model.
        #[test]
        fn table_decides_as_the_model(
            ops in prop::collection::vec(op(), 1..40),
            max_paths in 1usize..4,
            always_compare_med in any::<bool>(),
        ) {
            let cfg = DecisionConfig { max_paths, always_compare_med, ..Default::default() };
            let sets = attr_sets();
            let prefixes = ["10.0.0.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
            let (mut table, mut model) = (Table::default(), Model::default());
            for op in ops {
                match op {
                    Op::Set(x, peer, path_id, a, flags) => {
                        let path = Path {
                            attrs: sets[a].clone(),
                            path_id,
                            peer: PeerId(peer),
                            flags,
                        };
                        table.set(prefixes[x as usize], path.clone());
                        model.set(prefixes[x as usize], path);
                    }
                    Op::Remove(x, peer, path_id) => {
                        table.remove(&prefixes[x as usize], PeerId(peer), path_id);
                        model.remove(&prefixes[x as usize], PeerId(peer), path_id);
                    }
                    Op::Decide(x) => {
                        let p = prefixes[x as usize];
                        prop_assert_eq!(
                            table.decide(p, &cfg, view, cost),
                            model.decide(p, &cfg, view, cost)
                        );
                    }
                }
                prop_assert_eq!(
                    contents(table.iter().map(|(x, p)| (x, &p[..]))),
                    contents(model.map.iter().map(|(x, p)| (*x, &p[..])))
                );
            }
        }
    }
}
