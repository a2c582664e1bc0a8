//! The decision process of RFC 4271 §9.1.2, with the RFC 4456 and RFC 9494
//! amendments, and ECMP multipath selection.
//!
//! [`compare`] ranks two candidates and says which step decided, so a test or
//! `show route` can tell *why* a path won. [`select`] picks the best path and
//! the multipath set from all usable candidates of one prefix. MED only
//! compares routes from the same neighbour AS, which makes pairwise
//! comparison intransitive; `select` therefore groups candidates by
//! neighbour AS first (Cisco's "deterministic MED", BIRD's `med metric`
//! grouping), ranks inside each group with MED, and ranks the group winners
//! without it. Every step ends in a unique tie-breaker (peer address, then
//! ADD-PATH path id), so the same set of candidates gives the same answer in
//! any arrival order.

use super::attrs::AttrSet;
use crate::wire::attr::{AsPath, SegmentType};
use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};

/// Where a route came from, as far as the decision process cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Originated by this speaker (configuration or the `originate` API).
    Local,
    Ebgp,
    Ibgp,
}

/// The knobs of the decision process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionConfig {
    /// LOCAL_PREF assumed for routes that carry none (all eBGP-learned routes,
    /// RFC 4271 §5.1.5).
    pub default_local_pref: u32,
    /// Compare MED between routes from different neighbour ASes too.
    pub always_compare_med: bool,
    /// The largest multipath set (1 disables ECMP).
    pub max_paths: usize,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            default_local_pref: 100,
            always_compare_med: false,
            max_paths: 1,
        }
    }
}

/// One usable path as the decision process sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub attrs: &'a AttrSet,
    pub kind: PeerKind,
    /// The BGP identifier of the peer the route came from.
    pub router_id: Ipv4Addr,
    pub peer_addr: IpAddr,
    pub path_id: u32,
    /// RFC 9494: kept past the graceful-restart time as LLGR_STALE.
    pub llgr_stale: bool,
    /// Cost to the next hop, from the IGP-cost hook.
    pub igp_cost: u32,
}

/// The step of the decision process that ranked two candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    LlgrStale,
    LocalPref,
    AsPathLen,
    Origin,
    Med,
    PeerKind,
    IgpCost,
    RouterId,
    ClusterListLen,
    PeerAddress,
    PathId,
}

impl Candidate<'_> {
    /// RFC 4271 §9.1.2.2 (c): the neighbour AS is the first AS of the path;
    /// an empty path or one starting with an AS_SET means the local AS
    /// (`None` here).
    pub fn neighbour_as(&self) -> Option<u32> {
        self.attrs.attrs.as_path.as_ref().and_then(|p| p.first_as())
    }
}

/// A candidate with every value the steps compare read out of its
/// attributes once and packed into integers in step order, so that a
/// comparison is a few integer comparisons: `pre` holds the steps before
/// MED, `mid` and `tail` those after it up to the CLUSTER_LIST length.
/// Comparing two packed integers compares their fields in order, and the
/// highest differing bit tells which step decided.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ranked {
    /// LLGR-stale (bit 58), LOCAL_PREF inverted (bits 26..58: higher is
    /// better), AS_PATH length (2..26), ORIGIN (0..2).
    pre: u64,
    med: u32,
    /// Peer kind (bits 32..34), IGP cost (0..32).
    mid: u64,
    /// BGP identifier or ORIGINATOR_ID (bits 32..64), CLUSTER_LIST length
    /// (0..32).
    tail: u64,
    neighbour_as: Option<u32>,
    kind: PeerKind,
    peer_addr: IpAddr,
    path_id: u32,
    /// The caller's index of the candidate (its position in the table).
    pub index: usize,
}

const PRE_LLGR: u32 = 58;
const PRE_LOCAL_PREF: u32 = 26;
const PRE_AS_PATH_LEN: u32 = 2;
/// An AS_PATH this long takes 64 MiB: no message carries one.
const AS_PATH_LEN_MAX: usize = (1 << (PRE_LOCAL_PREF - PRE_AS_PATH_LEN)) - 1;
const MID_KIND: u32 = 32;
const TAIL_ROUTER_ID: u32 = 32;

impl Ranked {
    /// A placeholder for fixed-size buffers; never ranked.
    pub const EMPTY: Ranked = Ranked {
        pre: 0,
        med: 0,
        mid: 0,
        tail: 0,
        neighbour_as: None,
        kind: PeerKind::Local,
        peer_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        path_id: 0,
        index: 0,
    };

    #[inline(always)]
    pub fn new(c: &Candidate, index: usize, cfg: &DecisionConfig) -> Self {
        let a = &c.attrs.attrs;
        let (as_path_len, neighbour_as) = c.attrs.path_facts();
        let local_pref = a.local_pref.unwrap_or(cfg.default_local_pref);
        // A route without ORIGIN never passes the codec's mandatory-attribute
        // check; a local one without it is treated as INCOMPLETE.
        let origin = a.origin.map_or(2, |o| o as u8);
        // RFC 4456 §9: ORIGINATOR_ID stands in for the BGP identifier.
        let router_id = u32::from(a.originator_id.unwrap_or(c.router_id));
        let cluster_list_len = a.cluster_list.as_ref().map_or(0, Vec::len);
        Ranked {
            pre: u64::from(c.llgr_stale) << PRE_LLGR
                | u64::from(!local_pref) << PRE_LOCAL_PREF
                | (as_path_len.min(AS_PATH_LEN_MAX) as u64) << PRE_AS_PATH_LEN
                | u64::from(origin & 3),
            // RFC 4271 §9.1.2.2 (c): a missing MED is the lowest value, 0.
            med: a.med.unwrap_or(0),
            mid: u64::from(c.kind as u8) << MID_KIND | u64::from(c.igp_cost),
            tail: u64::from(router_id) << TAIL_ROUTER_ID
                | u64::from(u32::try_from(cluster_list_len).unwrap_or(u32::MAX)),
            neighbour_as,
            kind: c.kind,
            peer_addr: c.peer_addr,
            path_id: c.path_id,
            index,
        }
    }
}

/// The AS_PATH length (RFC 4271 §9.1.2.2 (a): an AS_SET counts 1,
/// confederation segments 0, RFC 5065 §5.3) and the neighbour AS (see
/// [`Candidate::neighbour_as`]), in one walk over the segments.
pub(crate) fn path_facts(p: &AsPath) -> (usize, Option<u32>) {
    let mut len = 0;
    let mut first = None;
    for s in p.segments() {
        if first.is_none() && !s.kind.is_confed() {
            first = Some((s.kind == SegmentType::Sequence).then(|| s.asns.first().copied()));
        }
        len += match s.kind {
            SegmentType::Sequence => s.asns.len(),
            SegmentType::Set => 1,
            _ => 0,
        };
    }
    (len, first.flatten().flatten())
}

/// Ranks `a` against `b`: `Less` when `a` is preferred. The second value is
/// the step that decided (`PathId` when the two are the same path).
pub fn compare(a: &Candidate, b: &Candidate, cfg: &DecisionConfig) -> (Ordering, Step) {
    let (a, b) = (Ranked::new(a, 0, cfg), Ranked::new(b, 1, cfg));
    compare_with(&a, &b, med_applies(&a, &b, cfg))
}

fn med_applies(a: &Ranked, b: &Ranked, cfg: &DecisionConfig) -> bool {
    cfg.always_compare_med || a.neighbour_as == b.neighbour_as
}

/// The steps of the decision process, in order, on packed values:
/// - RFC 9494 §4.3: LLGR_STALE routes are the least preferred.
/// - RFC 4271 §9.1.1: highest degree of preference (LOCAL_PREF).
/// - RFC 4271 §9.1.2.2 (a): shortest AS_PATH.
/// - RFC 4271 §9.1.2.2 (b): lowest ORIGIN.
/// - RFC 4271 §9.1.2.2 (c): lowest MED among routes from the same AS.
/// - RFC 4271 §9.1.2.2 (d): eBGP over iBGP (locally originated first).
/// - RFC 4271 §9.1.2.2 (e): lowest interior cost to the next hop.
/// - RFC 4271 §9.1.2.2 (f) with RFC 4456 §9: lowest BGP identifier,
///   ORIGINATOR_ID when present.
/// - RFC 4456 §9: shortest CLUSTER_LIST.
/// - RFC 4271 §9.1.2.2 (g): lowest peer address.
/// - RFC 7911: several paths from one peer; lowest path id, so the order
///   is total.
#[inline]
fn order(a: &Ranked, b: &Ranked, with_med: bool) -> Ordering {
    if a.pre != b.pre {
        return a.pre.cmp(&b.pre);
    }
    if with_med && a.med != b.med {
        return a.med.cmp(&b.med);
    }
    if a.mid != b.mid {
        return a.mid.cmp(&b.mid);
    }
    if a.tail != b.tail {
        return a.tail.cmp(&b.tail);
    }
    a.peer_addr
        .cmp(&b.peer_addr)
        .then(a.path_id.cmp(&b.path_id))
}

/// [`order`], and the step that decided.
fn compare_with(a: &Ranked, b: &Ranked, with_med: bool) -> (Ordering, Step) {
    let top = |x: u64, y: u64| 63 - (x ^ y).leading_zeros();
    let step = if a.pre != b.pre {
        match top(a.pre, b.pre) {
            PRE_LLGR.. => Step::LlgrStale,
            PRE_LOCAL_PREF.. => Step::LocalPref,
            PRE_AS_PATH_LEN.. => Step::AsPathLen,
            _ => Step::Origin,
        }
    } else if with_med && a.med != b.med {
        Step::Med
    } else if a.mid != b.mid {
        match top(a.mid, b.mid) {
            MID_KIND.. => Step::PeerKind,
            _ => Step::IgpCost,
        }
    } else if a.tail != b.tail {
        match top(a.tail, b.tail) {
            TAIL_ROUTER_ID.. => Step::RouterId,
            _ => Step::ClusterListLen,
        }
    } else if a.peer_addr != b.peer_addr {
        Step::PeerAddress
    } else {
        Step::PathId
    };
    (order(a, b, with_med), step)
}

/// Whether `c` may share forwarding with `best`: equal through the IGP-cost
/// step, and from the same neighbour AS when eBGP-learned.
pub fn multipath_equal(best: &Candidate, c: &Candidate, cfg: &DecisionConfig) -> bool {
    ranked_multipath_equal(&Ranked::new(best, 0, cfg), &Ranked::new(c, 1, cfg))
}

fn ranked_multipath_equal(best: &Ranked, c: &Ranked) -> bool {
    // Equal up to MED, in MED, and in peer kind and IGP cost.
    best.pre == c.pre
        && best.med == c.med
        && best.mid == c.mid
        && (best.kind != PeerKind::Ebgp || best.neighbour_as == c.neighbour_as)
}

/// The outcome of [`select`]: indices into the candidates, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// `order[0]` is the best path, `order[..multipath]` the multipath set
    /// (best included); the rest follow in no meaningful order.
    pub order: Vec<usize>,
    pub multipath: usize,
}

/// Picks the best path and the multipath set. Empty input: empty selection.
pub fn select(cands: &[Candidate], cfg: &DecisionConfig) -> Selection {
    let ranked: Vec<Ranked> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| Ranked::new(c, i, cfg))
        .collect();
    let mut order = vec![0; cands.len()];
    let multipath = select_ranked(&ranked, cfg, &mut order);
    order.truncate(multipath);
    let rest: Vec<usize> = (0..cands.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    Selection { order, multipath }
}

/// [`select`] without allocating: writes the positions in `cands` of the
/// multipath set, best first, to `out` and returns its size. `out` must
/// hold `cands.len()` values (it is scratch space too).
pub(crate) fn select_ranked(cands: &[Ranked], cfg: &DecisionConfig, out: &mut [usize]) -> usize {
    let Some(best) = best_index(cands, cfg, out) else {
        return 0;
    };
    out[0] = best;
    let max = cfg.max_paths.max(1);
    if max == 1 {
        return 1;
    }
    let mut n = 1;
    for (i, c) in cands.iter().enumerate() {
        if i != best && ranked_multipath_equal(&cands[best], c) {
            out[n] = i;
            n += 1;
        }
    }
    // Equal through the IGP-cost step (MED values included), so only the
    // total tie-breakers are left: a safe sort key (the position last, as a
    // stable sort would).
    out[1..n].sort_unstable_by(|&x, &y| order(&cands[x], &cands[y], true).then(x.cmp(&y)));
    n.min(max)
}

/// Deterministic MED: the best of each neighbour-AS group (with MED), then
/// the best of the group winners (without it). `winners` is scratch space
/// of `cands.len()` values.
fn best_index(cands: &[Ranked], cfg: &DecisionConfig, winners: &mut [usize]) -> Option<usize> {
    let mut groups = 0;
    for (i, c) in cands.iter().enumerate() {
        let same_group = winners[..groups]
            .iter_mut()
            .find(|w| cfg.always_compare_med || cands[**w].neighbour_as == c.neighbour_as);
        match same_group {
            Some(w) => {
                if order(c, &cands[*w], true).is_lt() {
                    *w = i;
                }
            }
            None => {
                winners[groups] = i;
                groups += 1;
            }
        }
    }
    winners[..groups]
        .iter()
        .copied()
        .reduce(|w, i| match order(&cands[i], &cands[w], false) {
            Ordering::Less => i,
            _ => w,
        })
}

#[cfg(test)]
mod tests;
