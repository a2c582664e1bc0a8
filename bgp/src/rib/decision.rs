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
    fn local_pref(&self, cfg: &DecisionConfig) -> u32 {
        self.attrs
            .attrs
            .local_pref
            .unwrap_or(cfg.default_local_pref)
    }

    fn as_path_len(&self) -> usize {
        self.attrs
            .attrs
            .as_path
            .as_ref()
            .map_or(0, |p| p.path_len())
    }

    fn origin(&self) -> u8 {
        // A route without ORIGIN never passes the codec's mandatory-attribute
        // check; a local one without it is treated as INCOMPLETE.
        self.attrs.attrs.origin.map_or(2, |o| o as u8)
    }

    /// RFC 4271 §9.1.2.2 (c): a missing MED is the lowest value, 0.
    fn med(&self) -> u32 {
        self.attrs.attrs.med.unwrap_or(0)
    }

    /// RFC 4271 §9.1.2.2 (c): the neighbour AS is the first AS of the path;
    /// an empty path or one starting with an AS_SET means the local AS
    /// (`None` here).
    pub fn neighbour_as(&self) -> Option<u32> {
        self.attrs.attrs.as_path.as_ref().and_then(|p| p.first_as())
    }

    /// RFC 4456 §9: ORIGINATOR_ID stands in for the BGP identifier.
    fn effective_router_id(&self) -> Ipv4Addr {
        self.attrs.attrs.originator_id.unwrap_or(self.router_id)
    }

    fn cluster_list_len(&self) -> usize {
        self.attrs.attrs.cluster_list.as_ref().map_or(0, Vec::len)
    }
}

/// Ranks `a` against `b`: `Less` when `a` is preferred. The second value is
/// the step that decided (`PathId` when the two are the same path).
pub fn compare(a: &Candidate, b: &Candidate, cfg: &DecisionConfig) -> (Ordering, Step) {
    compare_with(a, b, cfg, med_applies(a, b, cfg))
}

fn med_applies(a: &Candidate, b: &Candidate, cfg: &DecisionConfig) -> bool {
    cfg.always_compare_med || a.neighbour_as() == b.neighbour_as()
}

fn compare_with(
    a: &Candidate,
    b: &Candidate,
    cfg: &DecisionConfig,
    with_med: bool,
) -> (Ordering, Step) {
    let steps = [
        // RFC 9494 §4.3: LLGR_STALE routes are the least preferred.
        (Step::LlgrStale, a.llgr_stale.cmp(&b.llgr_stale)),
        // RFC 4271 §9.1.1: highest degree of preference (LOCAL_PREF).
        (Step::LocalPref, b.local_pref(cfg).cmp(&a.local_pref(cfg))),
        // RFC 4271 §9.1.2.2 (a): shortest AS_PATH (AS_SET counts 1,
        // confederation segments 0, RFC 5065 §5.3).
        (Step::AsPathLen, a.as_path_len().cmp(&b.as_path_len())),
        // RFC 4271 §9.1.2.2 (b): lowest ORIGIN.
        (Step::Origin, a.origin().cmp(&b.origin())),
        // RFC 4271 §9.1.2.2 (c): lowest MED among routes from the same AS.
        (
            Step::Med,
            if with_med {
                a.med().cmp(&b.med())
            } else {
                Ordering::Equal
            },
        ),
        // RFC 4271 §9.1.2.2 (d): eBGP over iBGP (locally originated first).
        (Step::PeerKind, a.kind.cmp(&b.kind)),
        // RFC 4271 §9.1.2.2 (e): lowest interior cost to the next hop.
        (Step::IgpCost, a.igp_cost.cmp(&b.igp_cost)),
        // RFC 4271 §9.1.2.2 (f) with RFC 4456 §9: lowest BGP identifier,
        // ORIGINATOR_ID when present.
        (
            Step::RouterId,
            a.effective_router_id().cmp(&b.effective_router_id()),
        ),
        // RFC 4456 §9: shortest CLUSTER_LIST.
        (
            Step::ClusterListLen,
            a.cluster_list_len().cmp(&b.cluster_list_len()),
        ),
        // RFC 4271 §9.1.2.2 (g): lowest peer address.
        (Step::PeerAddress, a.peer_addr.cmp(&b.peer_addr)),
        // RFC 7911: several paths from one peer; lowest path id, so the
        // order is total.
        (Step::PathId, a.path_id.cmp(&b.path_id)),
    ];
    steps
        .into_iter()
        .find(|(_, o)| o.is_ne())
        .map_or((Ordering::Equal, Step::PathId), |(s, o)| (o, s))
}

/// Whether `c` may share forwarding with `best`: equal through the IGP-cost
/// step, and from the same neighbour AS when eBGP-learned.
pub fn multipath_equal(best: &Candidate, c: &Candidate, cfg: &DecisionConfig) -> bool {
    best.llgr_stale == c.llgr_stale
        && best.local_pref(cfg) == c.local_pref(cfg)
        && best.as_path_len() == c.as_path_len()
        && best.origin() == c.origin()
        && best.med() == c.med()
        && best.kind == c.kind
        && best.igp_cost == c.igp_cost
        && (best.kind != PeerKind::Ebgp || best.neighbour_as() == c.neighbour_as())
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
    let Some(best) = best_index(cands, cfg) else {
        return Selection {
            order: Vec::new(),
            multipath: 0,
        };
    };
    let mut multi: Vec<usize> = (0..cands.len())
        .filter(|&i| i != best && multipath_equal(&cands[best], &cands[i], cfg))
        .collect();
    // Equal through the IGP-cost step (MED values included), so only the
    // total tie-breakers are left: a safe sort key.
    multi.sort_by(|&x, &y| compare_with(&cands[x], &cands[y], cfg, true).0);
    multi.truncate(cfg.max_paths.max(1) - 1);
    let mut order = Vec::with_capacity(cands.len());
    order.push(best);
    order.extend_from_slice(&multi);
    let multipath = order.len();
    let rest: Vec<usize> = (0..cands.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    Selection { order, multipath }
}

/// Deterministic MED: the best of each neighbour-AS group (with MED), then
/// the best of the group winners (without it).
fn best_index(cands: &[Candidate], cfg: &DecisionConfig) -> Option<usize> {
    let mut winners: Vec<usize> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        let same_group = winners
            .iter_mut()
            .find(|w| cfg.always_compare_med || cands[**w].neighbour_as() == c.neighbour_as());
        match same_group {
            Some(w) => {
                if compare_with(c, &cands[*w], cfg, true).0.is_lt() {
                    *w = i;
                }
            }
            None => winners.push(i),
        }
    }
    winners.into_iter().reduce(
        |w, i| match compare_with(&cands[i], &cands[w], cfg, false).0 {
            Ordering::Less => i,
            _ => w,
        },
    )
}

#[cfg(test)]
mod tests;
