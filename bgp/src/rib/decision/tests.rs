//! One test per decision step, each checked in both directions, then
//! multipath composition and order independence.

use super::*;
use crate::wire::attr::{AsPath, NextHop, Origin, PathAttributes, SegmentType};
use proptest::prelude::*;

/// A candidate description the tests fill in as data.
#[derive(Clone, Debug)]
struct C {
    local_pref: Option<u32>,
    path: AsPath,
    origin: Origin,
    med: Option<u32>,
    kind: PeerKind,
    igp: u32,
    router_id: [u8; 4],
    originator_id: Option<[u8; 4]>,
    cluster_list: usize,
    peer: [u8; 4],
    path_id: u32,
    llgr: bool,
}

fn c() -> C {
    C {
        local_pref: None,
        path: AsPath::from_sequence(&[65001]),
        origin: Origin::Igp,
        med: None,
        kind: PeerKind::Ebgp,
        igp: 0,
        router_id: [10, 0, 0, 1],
        originator_id: None,
        cluster_list: 0,
        peer: [192, 0, 2, 1],
        path_id: 0,
        llgr: false,
    }
}

impl C {
    fn attrs(&self) -> AttrSet {
        AttrSet {
            attrs: PathAttributes {
                origin: Some(self.origin),
                as_path: Some(self.path.clone()),
                local_pref: self.local_pref,
                med: self.med,
                originator_id: self.originator_id.map(Ipv4Addr::from),
                cluster_list: (self.cluster_list > 0)
                    .then(|| vec![Ipv4Addr::new(10, 9, 9, 9); self.cluster_list]),
                ..Default::default()
            },
            next_hop: NextHop::V4(Ipv4Addr::from(self.peer)),
            pre: None,
            facts: Default::default(),
        }
    }
}

fn cand<'a>(c: &C, attrs: &'a AttrSet) -> Candidate<'a> {
    Candidate {
        attrs,
        kind: c.kind,
        router_id: Ipv4Addr::from(c.router_id),
        peer_addr: IpAddr::from(c.peer),
        path_id: c.path_id,
        llgr_stale: c.llgr,
        igp_cost: c.igp,
    }
}

/// Asserts that `win` beats `lose` at `step`, in both argument orders.
fn assert_wins(win: C, lose: C, step: Step, cfg: &DecisionConfig) {
    let (wa, la) = (win.attrs(), lose.attrs());
    let (w, l) = (cand(&win, &wa), cand(&lose, &la));
    assert_eq!(
        compare(&w, &l, cfg),
        (Ordering::Less, step),
        "{win:?} vs {lose:?}"
    );
    assert_eq!(compare(&l, &w, cfg), (Ordering::Greater, step));
    let sel = select(&[l, w], cfg);
    assert_eq!(sel.order[0], 1);
    let sel = select(&[w, l], cfg);
    assert_eq!(sel.order[0], 0);
}

fn cfg() -> DecisionConfig {
    DecisionConfig::default()
}

fn seq(asns: &[u32]) -> AsPath {
    AsPath::from_sequence(asns)
}

#[test]
fn step_llgr_stale_least_preferred() {
    // Even a much better LOCAL_PREF does not save an LLGR-stale route.
    let stale = C {
        llgr: true,
        local_pref: Some(500),
        ..c()
    };
    assert_wins(c(), stale, Step::LlgrStale, &cfg());
}

#[test]
fn step_highest_local_pref() {
    let hi = C {
        local_pref: Some(200),
        kind: PeerKind::Ibgp,
        ..c()
    };
    let lo = C {
        local_pref: Some(150),
        path: seq(&[]),
        ..c()
    };
    assert_wins(hi, lo, Step::LocalPref, &cfg());
}

#[test]
fn step_missing_local_pref_is_the_default() {
    let cfg = DecisionConfig {
        default_local_pref: 300,
        ..cfg()
    };
    let none = C {
        local_pref: None,
        path: seq(&[1, 2, 3]),
        ..c()
    };
    let some = C {
        local_pref: Some(200),
        ..c()
    };
    assert_wins(none, some, Step::LocalPref, &cfg);
}

#[test]
fn step_shortest_as_path() {
    let short = C {
        path: seq(&[65001, 65002]),
        ..c()
    };
    let long = C {
        path: seq(&[65001, 65003, 65004]),
        ..c()
    };
    assert_wins(short, long, Step::AsPathLen, &cfg());
}

#[test]
fn step_as_set_counts_one_and_confed_segments_zero() {
    let mut set = AsPath::from_sequence(&[65001]);
    set.push_segment(SegmentType::Set, &[1, 2, 3, 4]);
    let mut confed = AsPath::new();
    confed.push_segment(SegmentType::ConfedSequence, &[7, 8, 9]);
    confed.push_segment(SegmentType::Sequence, &[65001, 65002, 65003]);
    // 2 (sequence + set) beats 3 (confed ignored).
    assert_wins(
        C { path: set, ..c() },
        C {
            path: confed,
            ..c()
        },
        Step::AsPathLen,
        &cfg(),
    );
}

#[test]
fn step_lowest_origin() {
    let igp = C {
        origin: Origin::Igp,
        ..c()
    };
    let egp = C {
        origin: Origin::Egp,
        ..c()
    };
    let inc = C {
        origin: Origin::Incomplete,
        ..c()
    };
    assert_wins(igp, egp.clone(), Step::Origin, &cfg());
    assert_wins(egp, inc, Step::Origin, &cfg());
}

#[test]
fn step_lowest_med_same_neighbour_as() {
    let lo = C {
        med: Some(10),
        peer: [192, 0, 2, 9],
        ..c()
    };
    let hi = C {
        med: Some(20),
        ..c()
    };
    assert_wins(lo, hi, Step::Med, &cfg());
}

#[test]
fn step_missing_med_is_zero() {
    let none = C {
        med: None,
        peer: [192, 0, 2, 9],
        ..c()
    };
    let some = C {
        med: Some(1),
        ..c()
    };
    assert_wins(none, some, Step::Med, &cfg());
}

#[test]
fn step_med_ignored_across_neighbour_as_unless_always_compare() {
    let a = C {
        path: seq(&[65001]),
        med: Some(50),
        peer: [192, 0, 2, 1],
        ..c()
    };
    let b = C {
        path: seq(&[65002]),
        med: Some(10),
        peer: [192, 0, 2, 2],
        ..c()
    };
    // Different neighbour AS: MED skipped, the peer address decides.
    assert_wins(a.clone(), b.clone(), Step::PeerAddress, &cfg());
    let always = DecisionConfig {
        always_compare_med: true,
        ..cfg()
    };
    assert_wins(b, a, Step::Med, &always);
}

#[test]
fn step_ebgp_over_ibgp_and_local_first() {
    let e = C {
        kind: PeerKind::Ebgp,
        peer: [192, 0, 2, 9],
        ..c()
    };
    let i = C {
        kind: PeerKind::Ibgp,
        ..c()
    };
    assert_wins(e.clone(), i, Step::PeerKind, &cfg());
    let l = C {
        kind: PeerKind::Local,
        peer: [192, 0, 2, 9],
        ..c()
    };
    assert_wins(
        l,
        C {
            peer: [192, 0, 2, 1],
            ..e
        },
        Step::PeerKind,
        &cfg(),
    );
}

#[test]
fn step_lowest_igp_cost() {
    let near = C {
        igp: 10,
        peer: [192, 0, 2, 9],
        ..c()
    };
    let far = C { igp: 20, ..c() };
    assert_wins(near, far, Step::IgpCost, &cfg());
}

#[test]
fn step_lowest_router_id() {
    let lo = C {
        router_id: [10, 0, 0, 1],
        peer: [192, 0, 2, 9],
        ..c()
    };
    let hi = C {
        router_id: [10, 0, 0, 2],
        ..c()
    };
    assert_wins(lo, hi, Step::RouterId, &cfg());
}

#[test]
fn step_originator_id_replaces_router_id() {
    // RFC 4456 §9: the reflected route's ORIGINATOR_ID counts, not the
    // reflector's own identifier.
    let a = C {
        router_id: [10, 0, 0, 9],
        originator_id: Some([10, 0, 0, 1]),
        peer: [192, 0, 2, 9],
        ..c()
    };
    let b = C {
        router_id: [10, 0, 0, 2],
        ..c()
    };
    assert_wins(a, b, Step::RouterId, &cfg());
}

#[test]
fn step_shortest_cluster_list() {
    let short = C {
        cluster_list: 1,
        peer: [192, 0, 2, 9],
        ..c()
    };
    let long = C {
        cluster_list: 2,
        ..c()
    };
    assert_wins(short, long, Step::ClusterListLen, &cfg());
}

#[test]
fn step_lowest_peer_address() {
    let lo = C {
        peer: [192, 0, 2, 1],
        ..c()
    };
    let hi = C {
        peer: [192, 0, 2, 2],
        ..c()
    };
    assert_wins(lo, hi, Step::PeerAddress, &cfg());
}

#[test]
fn step_lowest_path_id() {
    let lo = C { path_id: 1, ..c() };
    let hi = C { path_id: 2, ..c() };
    assert_wins(lo, hi, Step::PathId, &cfg());
}

#[test]
fn deterministic_med_grouping() {
    // The classic intransitive triple: A beats B on MED (same AS 1), B beats
    // C on peer address, C beats A on peer address (MED not comparable).
    // Grouping by neighbour AS gives A (winner of AS 1) against C: C.
    let a = C {
        path: seq(&[1]),
        med: Some(0),
        peer: [10, 0, 0, 3],
        ..c()
    };
    let b = C {
        path: seq(&[1]),
        med: Some(5),
        peer: [10, 0, 0, 1],
        ..c()
    };
    let cc = C {
        path: seq(&[2]),
        med: Some(0),
        peer: [10, 0, 0, 2],
        ..c()
    };
    let all = [a, b, cc];
    let attrs: Vec<_> = all.iter().map(C::attrs).collect();
    let cands: Vec<_> = all.iter().zip(&attrs).map(|(x, a)| cand(x, a)).collect();
    for perm in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let v: Vec<_> = perm.iter().map(|&i| cands[i]).collect();
        let best = select(&v, &cfg()).order[0];
        assert_eq!(perm[best], 2, "order {perm:?}");
    }
}

fn ecmp_cfg(max: usize) -> DecisionConfig {
    DecisionConfig {
        max_paths: max,
        ..cfg()
    }
}

#[test]
fn multipath_set_composition() {
    // name, candidate, in the multipath set with the first one as best?
    let base = C {
        path: seq(&[65001, 65010]),
        med: Some(5),
        ..c()
    };
    let rows: Vec<(&str, C, bool)> = vec![
        (
            "best",
            C {
                peer: [10, 0, 0, 1],
                ..base.clone()
            },
            true,
        ),
        (
            "equal peer 2",
            C {
                peer: [10, 0, 0, 2],
                ..base.clone()
            },
            true,
        ),
        (
            "different path, same length",
            C {
                peer: [10, 0, 0, 3],
                path: seq(&[65001, 65020]),
                ..base.clone()
            },
            true,
        ),
        (
            "other neighbour AS",
            C {
                peer: [10, 0, 0, 4],
                path: seq(&[65002, 65010]),
                ..base.clone()
            },
            false,
        ),
        (
            "higher MED",
            C {
                peer: [10, 0, 0, 5],
                med: Some(6),
                ..base.clone()
            },
            false,
        ),
        (
            "longer path",
            C {
                peer: [10, 0, 0, 6],
                path: seq(&[65001, 1, 65010]),
                ..base.clone()
            },
            false,
        ),
        (
            "worse origin",
            C {
                peer: [10, 0, 0, 7],
                origin: Origin::Incomplete,
                ..base.clone()
            },
            false,
        ),
        (
            "higher IGP cost",
            C {
                peer: [10, 0, 0, 8],
                igp: 1,
                ..base.clone()
            },
            false,
        ),
        (
            "iBGP",
            C {
                peer: [10, 0, 0, 9],
                kind: PeerKind::Ibgp,
                ..base.clone()
            },
            false,
        ),
    ];
    let attrs: Vec<_> = rows.iter().map(|r| r.1.attrs()).collect();
    let cands: Vec<_> = rows
        .iter()
        .zip(&attrs)
        .map(|(r, a)| cand(&r.1, a))
        .collect();
    let sel = select(&cands, &ecmp_cfg(8));
    assert_eq!(sel.order[0], 0);
    let mut members: Vec<_> = sel.order[..sel.multipath].to_vec();
    members.sort();
    let expected: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|r| r.1 .2)
        .map(|r| r.0)
        .collect();
    assert_eq!(
        members,
        expected,
        "{:?}",
        members.iter().map(|&i| rows[i].0).collect::<Vec<_>>()
    );
    // The maximum bounds the set; the tie-breakers pick the members.
    let sel = select(&cands, &ecmp_cfg(2));
    assert_eq!(sel.order[..sel.multipath], [0, 1]);
    assert_eq!(select(&cands, &ecmp_cfg(1)).multipath, 1);
}

#[test]
fn ibgp_multipath_may_span_neighbour_as() {
    let a = C {
        kind: PeerKind::Ibgp,
        path: seq(&[1]),
        peer: [10, 0, 0, 1],
        ..c()
    };
    let b = C {
        kind: PeerKind::Ibgp,
        path: seq(&[2]),
        peer: [10, 0, 0, 2],
        ..c()
    };
    let (aa, ba) = (a.attrs(), b.attrs());
    let sel = select(&[cand(&a, &aa), cand(&b, &ba)], &ecmp_cfg(4));
    assert_eq!(sel.multipath, 2);
}

fn arb_c() -> impl Strategy<Value = C> {
    (
        prop::option::of(prop::sample::select(vec![100u32, 200])),
        prop::collection::vec(prop::sample::select(vec![1u32, 2, 3]), 0..3),
        prop::sample::select(vec![Origin::Igp, Origin::Incomplete]),
        prop::option::of(0u32..3),
        prop::sample::select(vec![PeerKind::Ebgp, PeerKind::Ibgp]),
        0u32..2,
        0u8..3,
        0u32..2,
        any::<bool>(),
    )
        .prop_map(|(lp, path, origin, med, kind, igp, rid, path_id, llgr)| C {
            local_pref: lp,
            path: seq(&path),
            origin,
            med,
            kind,
            igp,
            router_id: [10, 0, 0, rid],
            path_id,
            llgr,
            ..c()
        })
}

proptest! {
    /// Same candidates, any order: the same best path and multipath set.
    #[test]
    fn selection_is_order_independent(
        mut rows in prop::collection::vec(arb_c(), 1..8),
        seed in any::<u64>(),
        always in any::<bool>(),
    ) {
        // Unique peers so every candidate is a distinct path.
        for (i, r) in rows.iter_mut().enumerate() {
            r.peer = [192, 0, 2, i as u8];
        }
        let cfg = DecisionConfig { always_compare_med: always, max_paths: 3, ..cfg() };
        let attrs: Vec<_> = rows.iter().map(C::attrs).collect();
        let cands: Vec<_> = rows.iter().zip(&attrs).map(|(r, a)| cand(r, a)).collect();
        let pick = |v: &[Candidate]| {
            let s = select(v, &cfg);
            let mut set: Vec<_> = s.order[..s.multipath].iter().map(|&i| v[i].peer_addr).collect();
            let best = set[0];
            set.sort();
            (best, set)
        };
        let want = pick(&cands);
        // A deterministic shuffle from the seed.
        let mut shuffled = cands.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(pick(&shuffled), want);
    }
}

/// The decision steps written out one by one, straight from the RFC text,
/// as a model for the packed comparison of `compare`.
fn reference_compare(a: &C, b: &C, cfg: &DecisionConfig) -> (Ordering, Step) {
    let lp = |c: &C| c.local_pref.unwrap_or(cfg.default_local_pref);
    let len = |c: &C| c.path.path_len();
    let nas = |c: &C| c.path.first_as();
    let med = |c: &C| c.med.unwrap_or(0);
    let rid = |c: &C| Ipv4Addr::from(c.originator_id.unwrap_or(c.router_id));
    let with_med = cfg.always_compare_med || nas(a) == nas(b);
    let steps = [
        (Step::LlgrStale, a.llgr.cmp(&b.llgr)),
        (Step::LocalPref, lp(b).cmp(&lp(a))),
        (Step::AsPathLen, len(a).cmp(&len(b))),
        (Step::Origin, (a.origin as u8).cmp(&(b.origin as u8))),
        (
            Step::Med,
            if with_med {
                med(a).cmp(&med(b))
            } else {
                Ordering::Equal
            },
        ),
        (Step::PeerKind, a.kind.cmp(&b.kind)),
        (Step::IgpCost, a.igp.cmp(&b.igp)),
        (Step::RouterId, rid(a).cmp(&rid(b))),
        (Step::ClusterListLen, a.cluster_list.cmp(&b.cluster_list)),
        (
            Step::PeerAddress,
            IpAddr::from(a.peer).cmp(&IpAddr::from(b.peer)),
        ),
        (Step::PathId, a.path_id.cmp(&b.path_id)),
    ];
    steps
        .into_iter()
        .find(|(_, o)| o.is_ne())
        .map_or((Ordering::Equal, Step::PathId), |(s, o)| (o, s))
}

/// Candidates that differ in every step, with values at the edges of each
/// field (0, the largest, LLGR both ways, missing attributes).
fn arb_c_wide() -> impl Strategy<Value = C> {
    let edge = || prop::sample::select(vec![0u32, 1, 2, u32::MAX - 1, u32::MAX]);
    (
        (
            prop::option::of(edge()),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        SegmentType::Sequence,
                        SegmentType::Sequence,
                        SegmentType::Set,
                        SegmentType::ConfedSequence,
                        SegmentType::ConfedSet,
                    ]),
                    prop::collection::vec(prop::sample::select(vec![1u32, 2]), 1..3),
                ),
                0..3,
            ),
            prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
            prop::option::of(edge()),
            prop::sample::select(vec![PeerKind::Local, PeerKind::Ebgp, PeerKind::Ibgp]),
            edge(),
        ),
        (
            prop::sample::select(vec![[0u8, 0, 0, 0], [10, 0, 0, 1], [255; 4]]),
            prop::option::of(prop::sample::select(vec![[10u8, 0, 0, 0], [255; 4]])),
            0usize..3,
            prop::sample::select(vec![[0u8, 0, 0, 0], [192, 0, 2, 1], [255; 4]]),
            edge(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (local_pref, path, origin, med, kind, igp),
                (router_id, originator_id, cluster_list, peer, path_id, llgr),
            )| C {
                local_pref,
                path: {
                    let mut p = AsPath::new();
                    for (kind, asns) in &path {
                        p.push_segment(*kind, asns);
                    }
                    p
                },
                origin,
                med,
                kind,
                igp,
                router_id,
                originator_id,
                cluster_list,
                peer,
                path_id,
                llgr,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    /// The packed comparison ranks as the steps do, and names the same step.
    #[test]
    fn compare_matches_the_steps_one_by_one(
        a in arb_c_wide(),
        mut b in arb_c_wide(),
        same in any::<u16>(),
        always in any::<bool>(),
    ) {
        // Fields copied from `a` (a bit each), so that every step is
        // reached with ties before it.
        let copy = |bit: u32| same & (1 << bit) != 0;
        if copy(0) { b.local_pref = a.local_pref; }
        if copy(1) { b.path = a.path.clone(); }
        if copy(2) { b.origin = a.origin; }
        if copy(3) { b.med = a.med; }
        if copy(4) { b.kind = a.kind; }
        if copy(5) { b.igp = a.igp; }
        if copy(6) { b.router_id = a.router_id; }
        if copy(7) { b.originator_id = a.originator_id; }
        if copy(8) { b.cluster_list = a.cluster_list; }
        if copy(9) { b.peer = a.peer; }
        if copy(10) { b.path_id = a.path_id; }
        if copy(11) { b.llgr = a.llgr; }
        let cfg = DecisionConfig { always_compare_med: always, ..cfg() };
        let (aa, ba) = (a.attrs(), b.attrs());
        let (x, y) = (cand(&a, &aa), cand(&b, &ba));
        prop_assert_eq!(compare(&x, &y, &cfg), reference_compare(&a, &b, &cfg));
        prop_assert_eq!(compare(&y, &x, &cfg), reference_compare(&b, &a, &cfg));
    }
}
