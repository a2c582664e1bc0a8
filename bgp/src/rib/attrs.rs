//! Attribute interning: every route with equal attributes shares one
//! `Arc<AttrSet>`.
//!
//! A full table holds a million routes but only a few thousand distinct
//! attribute sets, so routes point into an [`AttrTable`], a hash-consing set
//! of `Arc`s. An entry lives as long as some route holds it: the table keeps
//! one reference of its own and [`AttrTable::sweep`] forgets entries nobody
//! else holds. Sweeps run by themselves whenever the table has doubled since
//! the last one, so the cost is amortised over inserts and the table never
//! grows beyond twice the live sets (plus a small floor).
//!
//! Peers choose what is hashed here, so the hash is keyed (a colliding set
//! of attributes for every petreld cannot be precomputed): aHash with keys
//! from the OS's random source, a fresh key per table. aHash documents
//! itself as DoS-resistant for in-memory maps (it is not a MAC, and a peer
//! sees no hash value or iteration order of this table). It replaced
//! SipHash (`std`'s `RandomState`): interning cost 12–14% of a table
//! load's instructions with it, 2% now (docs/benchmarks/history.md). Each
//! set is hashed once per intern, found or inserted.

use super::decision::path_facts;
use crate::wire::attr::community::LLGR_STALE;
use crate::wire::attr::{Community, NextHop, PathAttributes};
use hashbrown::HashTable;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// What a route carries besides its prefix: the path attributes and the next
/// hop. IPv4 routes learned with a classic NEXT_HOP and routes learned in
/// MP_REACH_NLRI look the same here: `attrs.next_hop` is always `None`, the
/// next hop lives in `next_hop`, and the encoder puts it back where the
/// family needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttrSet {
    pub attrs: PathAttributes,
    pub next_hop: NextHop,
    /// For a set an import policy produced: the set as received, kept for
    /// soft reconfiguration. It lives here rather than in every path (8
    /// bytes a route) because policy-changed routes are the exception; it
    /// is part of the set's identity.
    pub pre: Option<Arc<AttrSet>>,
    /// What the decision process reads of AS_PATH and COMMUNITIES, worked
    /// out when the set is interned. Not part of the set's identity.
    pub facts: RankFacts,
}

/// The AS_PATH length and neighbour AS (RFC 4271 §9.1.2.2 (a), (c)) and
/// whether COMMUNITIES holds LLGR_STALE (RFC 9494 §4.3): the decision
/// process reads them of every candidate, and each sits behind a pointer
/// of its own (a cache miss per candidate, a third of `decide_in`'s time
/// while ten peers send the same table), so [`AttrTable::intern`] works
/// them out once per set. Five bytes, in the room left by moving the
/// Partial bits to the rare attributes: a set stays 168 bytes.
///
/// Unknown until interned, and unknown again in a clone: a clone is how a
/// changed set begins (policy, LLGR marking), and the facts of the set it
/// was cloned from would be wrong for it. Equal and hashed as nothing, so
/// that a set's identity is its attributes alone.
#[repr(C, packed)]
#[derive(Default)]
pub struct RankFacts {
    neighbour_as: u32,
    /// [`RankFacts::KNOWN`], [`RankFacts::LLGR_STALE`],
    /// [`RankFacts::NEIGHBOUR_AS`], and the AS_PATH length in the low bits.
    bits: u8,
}

impl RankFacts {
    const KNOWN: u8 = 0x80;
    const LLGR_STALE: u8 = 0x40;
    const NEIGHBOUR_AS: u8 = 0x20;
    /// Longer paths (prepending beyond 30) are walked each time.
    const LEN_MASK: u8 = 0x1f;

    fn of(a: &PathAttributes) -> Self {
        let (len, neighbour_as) = a.as_path.as_ref().map_or((0, None), path_facts);
        let Ok(len @ 0..=30) = u8::try_from(len) else {
            return Self::default();
        };
        let llgr = llgr_community(a);
        Self {
            neighbour_as: neighbour_as.unwrap_or(0),
            bits: Self::KNOWN
                | if llgr { Self::LLGR_STALE } else { 0 }
                | if neighbour_as.is_some() {
                    Self::NEIGHBOUR_AS
                } else {
                    0
                }
                | len,
        }
    }
}

/// RFC 9494 §4.3: the LLGR_STALE community is present.
fn llgr_community(a: &PathAttributes) -> bool {
    a.communities
        .as_ref()
        .is_some_and(|c| c.contains(&Community(LLGR_STALE)))
}

impl Clone for RankFacts {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for RankFacts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RankFacts {}

impl std::hash::Hash for RankFacts {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for RankFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = self.bits;
        f.write_str(if bits & Self::KNOWN != 0 {
            "known"
        } else {
            "unknown"
        })
    }
}

impl AttrSet {
    /// Builds a set, moving a classic NEXT_HOP out of `attrs` when `next_hop`
    /// is not given.
    pub fn new(mut attrs: PathAttributes, next_hop: Option<NextHop>) -> Self {
        let classic = attrs.next_hop.take();
        let next_hop = next_hop
            .or(classic.map(NextHop::V4))
            .unwrap_or(NextHop::V4(Ipv4Addr::UNSPECIFIED));
        Self {
            attrs,
            next_hop,
            pre: None,
            facts: RankFacts::default(),
        }
    }

    /// The AS_PATH length as the decision process counts it and the
    /// neighbour AS (`None`: the local AS), from the interned facts when
    /// known.
    pub fn path_facts(&self) -> (usize, Option<u32>) {
        let RankFacts { neighbour_as, bits } = self.facts;
        if bits & RankFacts::KNOWN == 0 {
            return self.attrs.as_path.as_ref().map_or((0, None), path_facts);
        }
        let first = (bits & RankFacts::NEIGHBOUR_AS != 0).then_some(neighbour_as);
        (usize::from(bits & RankFacts::LEN_MASK), first)
    }

    /// RFC 9494 §4.3: COMMUNITIES holds LLGR_STALE.
    pub fn llgr_stale(&self) -> bool {
        let bits = self.facts.bits;
        if bits & RankFacts::KNOWN != 0 {
            return bits & RankFacts::LLGR_STALE != 0;
        }
        llgr_community(&self.attrs)
    }

    /// The address to forward to (`None` for next hops of other families).
    pub fn next_hop_addr(&self) -> Option<IpAddr> {
        self.next_hop.addr()
    }
}

/// The hash-consing table.
#[derive(Debug, Default)]
pub struct AttrTable {
    set: HashTable<Arc<AttrSet>>,
    keys: ahash::RandomState,
    /// Live entries after the last sweep; the next sweep runs at twice that.
    after_sweep: usize,
}

// A full table holds ~120k sets: every 16 bytes added to a set's
// allocation cost ~2 bytes a route.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<AttrSet>() == 168);

/// Below this many entries the table does not bother sweeping.
const SWEEP_FLOOR: usize = 1024;

impl AttrTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `a`.
    pub fn intern(&mut self, mut a: AttrSet) -> Arc<AttrSet> {
        let hash = self.keys.hash_one(&a);
        if let Some(found) = self.set.find(hash, |s| **s == a) {
            return found.clone();
        }
        if self.set.len() >= SWEEP_FLOOR.max(2 * self.after_sweep) {
            self.sweep();
        }
        a.facts = RankFacts::of(&a.attrs);
        let arc = Arc::new(a);
        let keys = &self.keys;
        self.set
            .insert_unique(hash, arc.clone(), |s| keys.hash_one(&**s));
        arc
    }

    /// Forgets entries that no route holds any more.
    pub fn sweep(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.after_sweep = self.set.len();
    }

    /// Entries currently held (live ones and any not yet swept).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attr::{AsPath, Origin};

    fn set(asn: u32) -> AttrSet {
        AttrSet::new(
            PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(&[asn])),
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                ..Default::default()
            },
            None,
        )
    }

    #[test]
    fn equal_sets_share_one_arc() {
        let mut t = AttrTable::new();
        let a = t.intern(set(65001));
        let b = t.intern(set(65001));
        let c = t.intern(set(65002));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(t.len(), 2);
        assert_eq!(a.next_hop, NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(a.attrs.next_hop, None);
    }

    #[test]
    fn a_set_with_empty_rare_attributes_is_the_set_without() {
        // Equal sets must hash alike, or the table holds both.
        let mut t = AttrTable::new();
        let a = t.intern(set(65001));
        let mut b = set(65001);
        b.attrs.rare_mut();
        assert!(b.attrs.rare.is_some());
        assert!(Arc::ptr_eq(&a, &t.intern(b)));
        assert_eq!(t.len(), 1);
    }

    /// The facts an interned set carries are what walking its attributes
    /// gives, for every shape of AS_PATH, and a clone (a changed set in the
    /// making) walks again rather than keep its original's.
    #[test]
    fn interned_facts_are_the_walked_ones() {
        use crate::wire::attr::SegmentType::{ConfedSequence, ConfedSet, Sequence, Set};
        let path = |segs: &[(crate::wire::attr::SegmentType, &[u32])]| {
            let mut p = AsPath::new();
            for (k, asns) in segs {
                p.push_segment(*k, asns);
            }
            p
        };
        let long: Vec<u32> = (1..=31).collect();
        let paths = [
            None,
            Some(AsPath::new()),
            Some(path(&[(Sequence, &[65001, 65002])])),
            Some(path(&[(Set, &[65003, 65004]), (Sequence, &[65005])])),
            Some(path(&[
                (ConfedSequence, &[64512]),
                (Sequence, &[65006, 65007]),
            ])),
            Some(path(&[(ConfedSet, &[64513]), (Set, &[65008])])),
            Some(path(&[(Sequence, &long[..30])])),
            Some(path(&[(Sequence, &long)])),
        ];
        let mut t = AttrTable::new();
        for as_path in paths {
            for communities in [
                None,
                Some(vec![Community(65000 << 16 | 1)]),
                Some(vec![Community(LLGR_STALE)]),
            ] {
                let a = AttrSet::new(
                    PathAttributes {
                        as_path: as_path.clone(),
                        communities: communities.clone(),
                        ..Default::default()
                    },
                    None,
                );
                let walked = (
                    a.attrs.as_path.as_ref().map_or((0, None), path_facts),
                    a.llgr_stale(),
                );
                assert_eq!((a.path_facts(), a.llgr_stale()), walked, "{as_path:?}");
                let i = t.intern(a);
                assert_eq!(
                    (i.path_facts(), i.llgr_stale()),
                    walked,
                    "{as_path:?} interned"
                );
                let known = i.facts.bits & RankFacts::KNOWN != 0;
                assert_eq!(known, walked.0 .0 <= 30, "{as_path:?}");
                // A changed clone must not answer with the original's facts.
                let mut c = (*i).clone();
                c.attrs.as_path = Some(path(&[(Sequence, &[65100, 65101, 65102, 65103])]));
                c.attrs.communities = Some(vec![Community(LLGR_STALE)]);
                assert_eq!((c.path_facts(), c.llgr_stale()), ((4, Some(65100)), true));
            }
        }
    }

    #[test]
    fn sweep_forgets_unused_sets() {
        let mut t = AttrTable::new();
        let keep = t.intern(set(1));
        drop(t.intern(set(2)));
        t.sweep();
        assert_eq!(t.len(), 1);
        assert!(Arc::ptr_eq(&keep, &t.intern(set(1))));
    }

    #[test]
    fn table_stays_bounded_under_churn() {
        let mut t = AttrTable::new();
        for asn in 0..100_000 {
            drop(t.intern(set(asn)));
        }
        assert!(t.len() <= 2 * SWEEP_FLOOR, "{} entries", t.len());
    }
}
