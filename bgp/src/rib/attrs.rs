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

use crate::wire::attr::{NextHop, PathAttributes};
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
        }
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

/// Below this many entries the table does not bother sweeping.
const SWEEP_FLOOR: usize = 1024;

impl AttrTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `a`.
    pub fn intern(&mut self, a: AttrSet) -> Arc<AttrSet> {
        let hash = self.keys.hash_one(&a);
        if let Some(found) = self.set.find(hash, |s| **s == a) {
            return found.clone();
        }
        if self.set.len() >= SWEEP_FLOOR.max(2 * self.after_sweep) {
            self.sweep();
        }
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
