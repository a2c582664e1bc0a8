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
use super::PeerId;
use crate::wire::attr::community::LLGR_STALE as LLGR_STALE_COMMUNITY;
use crate::wire::attr::Community;
use crate::wire::nlri::Prefix;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

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
    /// The attributes after import policy (before it when rejected).
    pub attrs: Arc<AttrSet>,
    /// The attributes as received, when policy changed them; kept for soft
    /// reconfiguration.
    pub pre: Option<Arc<AttrSet>>,
    pub path_id: u32,
    pub peer: PeerId,
    pub flags: u8,
}

impl Path {
    pub fn pre(&self) -> &Arc<AttrSet> {
        self.pre.as_ref().unwrap_or(&self.attrs)
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
    /// RFC 9494 §4.3: stale by our own timer, or received with the
    /// LLGR_STALE community from a helper that kept it.
    pub fn llgr_stale(&self) -> bool {
        self.has(LLGR_STALE)
            || self
                .attrs
                .attrs
                .communities
                .as_ref()
                .is_some_and(|c| c.contains(&Community(LLGR_STALE_COMMUNITY)))
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
    /// best first (just the best when ECMP is off).
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

    pub fn best(&self) -> Option<&Route> {
        match self {
            LocRibChange::Best { best, .. } => Some(best),
            LocRibChange::Unreachable { .. } => None,
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
/// allocation of its own; several live in an exactly sized boxed slice.
#[derive(Clone, Debug)]
pub(crate) enum Paths {
    One(Path),
    Many(Box<[Path]>),
}

impl Default for Paths {
    fn default() -> Self {
        Paths::Many(Box::default())
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
    fn from_vec(mut v: Vec<Path>) -> Self {
        match v.pop() {
            Some(p) if v.is_empty() => Paths::One(p),
            Some(p) => {
                v.push(p);
                Paths::Many(v.into_boxed_slice())
            }
            None => Paths::default(),
        }
    }

    fn into_vec(self) -> Vec<Path> {
        match self {
            Paths::One(p) => vec![p],
            Paths::Many(v) => v.into_vec(),
        }
    }

    /// Appends: one reallocation of the exactly sized slice.
    fn push(&mut self, p: Path) {
        *self = match std::mem::take(self) {
            Paths::Many(v) if v.is_empty() => Paths::One(p),
            Paths::One(first) => Paths::Many(Box::new([first, p])),
            Paths::Many(v) => {
                let mut v = v.into_vec();
                v.reserve_exact(1);
                v.push(p);
                Paths::Many(v.into_boxed_slice())
            }
        }
    }

    fn remove(&mut self, i: usize) -> Path {
        let mut v = std::mem::take(self).into_vec();
        let p = v.remove(i);
        *self = Paths::from_vec(v);
        p
    }

    /// Drops the paths marked withdrawn.
    fn retain_live(&mut self) {
        let mut v = std::mem::take(self).into_vec();
        v.retain(|p| !p.has(WITHDRAWN));
        *self = Paths::from_vec(v);
    }
}

/// The table's key: a prefix, ordered as [`Prefix`] orders (IPv4 before
/// IPv6, then address, then length) but with integer comparisons, since a
/// lookup compares a few dozen keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key(Prefix);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0, other.0) {
            (Prefix::V4 { addr: a, len: la }, Prefix::V4 { addr: b, len: lb }) => {
                (u64::from(u32::from(a)) << 8 | u64::from(la))
                    .cmp(&(u64::from(u32::from(b)) << 8 | u64::from(lb)))
            }
            (Prefix::V6 { addr: a, len: la }, Prefix::V6 { addr: b, len: lb }) => {
                (u128::from(a), la).cmp(&(u128::from(b), lb))
            }
            (Prefix::V4 { .. }, Prefix::V6 { .. }) => Ordering::Less,
            (Prefix::V6 { .. }, Prefix::V4 { .. }) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    map: BTreeMap<Key, Paths>,
}

impl Table {
    /// Inserts or replaces the path with the same peer and path id; returns
    /// the replaced one.
    pub fn set(&mut self, prefix: Prefix, mut path: Path) -> Option<Path> {
        let paths = self.map.entry(Key(prefix)).or_default();
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
        let paths = self.map.get_mut(&Key(*prefix))?;
        let i = paths
            .iter()
            .position(|p| p.same_path(peer, path_id) && !p.has(WITHDRAWN))?;
        Some(withdraw_at(paths, i))
    }

    pub fn paths(&self, prefix: &Prefix) -> &[Path] {
        self.map.get(&Key(*prefix)).map_or(&[], |p| &p[..])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Prefix, &Paths)> {
        self.map.iter().map(|(k, v)| (&k.0, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Prefix, &mut Paths)> {
        self.map.iter_mut().map(|(k, v)| (&k.0, v))
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
    pub fn decide(
        &mut self,
        prefix: Prefix,
        cfg: &DecisionConfig,
        peer: impl Fn(PeerId) -> Option<PeerView>,
        cost: impl Fn(&Path, &PeerView) -> Option<u32>,
    ) -> Option<LocRibChange> {
        let paths = self.map.get_mut(&Key(prefix))?;
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
            self.map.remove(&Key(prefix));
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
) -> Option<LocRibChange> {
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
    let multipath: Vec<Route> = paths[..n].iter().map(|p| Route::of(prefix, p)).collect();
    Some(match multipath.first() {
        Some(best) => LocRibChange::Best {
            prefix,
            best: best.clone(),
            multipath,
        },
        None => LocRibChange::Unreachable { prefix },
    })
}

/// Whether two paths make the same [`Route`] (see `Route::same`).
fn same_route(a: &Path, b: &Path) -> bool {
    a.peer == b.peer
        && a.path_id == b.path_id
        && Arc::ptr_eq(&a.attrs, &b.attrs)
        && a.llgr_stale() == b.llgr_stale()
}
