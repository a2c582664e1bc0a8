//! An ordered map from prefix to a small value, with packed keys.
//!
//! [`Prefix`] is an 18-byte enum sized for IPv6; an IPv4 table keyed by it
//! spends most of each B-tree node on padding. Here IPv4 keys are one `u64`
//! (address << 8 | length) and IPv6 keys `(u128, u8)`, in two trees. Both
//! packings sort exactly as `Prefix` does (address, then length; IPv4
//! before IPv6), so iteration order, and with it the order UPDATEs are
//! built in, is the same as a `BTreeMap<Prefix, V>`'s.
//!
//! A table arrives mostly in prefix order, and a B-tree that grows at its
//! right edge splits its last leaf in two: every leaf left behind is about
//! half full, doubling the memory per entry. So the map rebuilds its trees
//! whenever it has doubled since the last rebuild, from their sorted
//! contents, which packs the nodes full (`BTreeMap::from_iter` on sorted
//! input builds bottom-up). Amortised that is at most two moves per entry,
//! and at any size at least the older half of the entries sits in full
//! nodes.

use crate::wire::nlri::Prefix;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug)]
pub(crate) struct PrefixMap<V> {
    v4: BTreeMap<u64, V>,
    v6: BTreeMap<(u128, u8), V>,
    /// The size at which the trees are rebuilt next.
    rebuild_at: usize,
}

/// Below this many entries the map does not bother rebuilding.
const REBUILD_FLOOR: usize = 4096;

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
            rebuild_at: REBUILD_FLOOR,
        }
    }
}

fn v4_key(addr: Ipv4Addr, len: u8) -> u64 {
    (u64::from(u32::from(addr)) << 8) | u64::from(len)
}

fn v4_prefix(k: u64) -> Prefix {
    Prefix::V4 {
        addr: Ipv4Addr::from((k >> 8) as u32),
        len: k as u8,
    }
}

fn v6_prefix(&(addr, len): &(u128, u8)) -> Prefix {
    Prefix::V6 {
        addr: Ipv6Addr::from(addr),
        len,
    }
}

impl<V> PrefixMap<V> {
    pub fn get(&self, p: &Prefix) -> Option<&V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.get(&v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.get(&(u128::from(addr), len)),
        }
    }

    pub fn get_mut(&mut self, p: &Prefix) -> Option<&mut V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.get_mut(&v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.get_mut(&(u128::from(addr), len)),
        }
    }

    /// The value of `p`, inserted with its default first if missing.
    pub fn get_or_default(&mut self, p: Prefix) -> &mut V
    where
        V: Default,
    {
        self.grow();
        match p {
            Prefix::V4 { addr, len } => self.v4.entry(v4_key(addr, len)).or_default(),
            Prefix::V6 { addr, len } => self.v6.entry((u128::from(addr), len)).or_default(),
        }
    }

    pub fn insert(&mut self, p: Prefix, v: V) -> Option<V> {
        self.grow();
        match p {
            Prefix::V4 { addr, len } => self.v4.insert(v4_key(addr, len), v),
            Prefix::V6 { addr, len } => self.v6.insert((u128::from(addr), len), v),
        }
    }

    pub fn remove(&mut self, p: &Prefix) -> Option<V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.remove(&v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.remove(&(u128::from(addr), len)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Before an insert: rebuilds the trees packed once they have doubled.
    fn grow(&mut self) {
        let len = self.len();
        if len < self.rebuild_at {
            return;
        }
        self.rebuild();
        self.rebuild_at = (2 * len).max(REBUILD_FLOOR);
    }

    /// Rebuilds both trees with full nodes. The old tree's nodes are freed
    /// as it is read, so the peak is about the new tree plus one sorted
    /// vector of the entries.
    fn rebuild(&mut self) {
        self.v4 = std::mem::take(&mut self.v4).into_iter().collect();
        self.v6 = std::mem::take(&mut self.v6).into_iter().collect();
    }

    /// Every entry in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &V)> + '_ {
        let v4 = self.v4.iter().map(|(k, v)| (v4_prefix(*k), v));
        let v6 = self.v6.iter().map(|(k, v)| (v6_prefix(k), v));
        v4.chain(v6)
    }

    /// The entries after `after` (all with `None`) in prefix order, values
    /// writable.
    pub fn iter_mut_after(
        &mut self,
        after: Option<Prefix>,
    ) -> impl Iterator<Item = (Prefix, &mut V)> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        let (b4, b6) = match after {
            None => (Unbounded, Unbounded),
            Some(Prefix::V4 { addr, len }) => (Excluded(v4_key(addr, len)), Unbounded),
            // Every IPv4 prefix comes before: skip them all.
            Some(Prefix::V6 { addr, len }) => {
                (Excluded(u64::MAX), Excluded((u128::from(addr), len)))
            }
        };
        let v4 = self
            .v4
            .range_mut((b4, Unbounded))
            .map(|(k, v)| (v4_prefix(*k), v));
        let v6 = self
            .v6
            .range_mut((b6, Unbounded))
            .map(|(k, v)| (v6_prefix(k), v));
        v4.chain(v6)
    }
}

/// A queue of prefixes with packed keys (8 bytes per IPv4 prefix instead
/// of 18), taken from the front: IPv4 first, then IPv6, each in the order
/// pushed.
#[derive(Debug, Default)]
pub(crate) struct PrefixQueue {
    v4: Vec<u64>,
    v6: Vec<(u128, u8)>,
    /// How many of each were taken.
    taken: (usize, usize),
}

impl PrefixQueue {
    pub fn push(&mut self, p: Prefix) {
        match p {
            Prefix::V4 { addr, len } => self.v4.push(v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.push((u128::from(addr), len)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len() - self.taken.0 - self.taken.1
    }

    /// Takes up to `n` prefixes.
    pub fn take(&mut self, n: usize) -> Vec<Prefix> {
        let (a4, a6) = self.taken;
        let n4 = n.min(self.v4.len() - a4);
        let n6 = (n - n4).min(self.v6.len() - a6);
        let out = self.v4[a4..a4 + n4]
            .iter()
            .map(|k| v4_prefix(*k))
            .chain(self.v6[a6..a6 + n6].iter().map(v6_prefix))
            .collect();
        self.taken = (a4 + n4, a6 + n6);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Packed keys sort as `Prefix` does, whatever the prefixes.
        #[test]
        fn iterates_in_prefix_order(
            raw in proptest::collection::vec((proptest::bool::ANY, proptest::num::u128::ANY, 0u8..=128), 0..64),
        ) {
            let mut m = PrefixMap::default();
            let mut reference = BTreeMap::new();
            for (i, (v6, addr, len)) in raw.into_iter().enumerate() {
                let p = if v6 {
                    Prefix::new(Ipv6Addr::from(addr).into(), len)
                } else {
                    Prefix::new(Ipv4Addr::from(addr as u32).into(), len % 33)
                }
                .unwrap();
                m.insert(p, i);
                reference.insert(p, i);
            }
            let got: Vec<(Prefix, usize)> = m.iter().map(|(p, v)| (p, *v)).collect();
            let want: Vec<(Prefix, usize)> = reference.into_iter().collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn iteration_resumes_after_a_prefix() {
        let mut m = PrefixMap::default();
        let ps: Vec<Prefix> = [
            "10.0.0.0/8",
            "10.0.0.0/16",
            "192.0.2.0/24",
            "2001:db8::/32",
            "2001:db8::/48",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for (i, p) in ps.iter().enumerate() {
            m.insert(*p, i);
        }
        let after = |m: &mut PrefixMap<usize>, a: Option<usize>| -> Vec<usize> {
            m.iter_mut_after(a.map(|i| ps[i]))
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(after(&mut m, None), [0, 1, 2, 3, 4]);
        assert_eq!(after(&mut m, Some(0)), [1, 2, 3, 4]);
        assert_eq!(after(&mut m, Some(2)), [3, 4]);
        assert_eq!(after(&mut m, Some(3)), [4]);
        assert_eq!(after(&mut m, Some(4)), Vec::<usize>::new());
    }

    /// Rebuilds keep every entry and the order, and happen as the map
    /// doubles.
    #[test]
    fn rebuilds_keep_contents_as_the_map_grows() {
        let mut m = PrefixMap::default();
        let mut reference = BTreeMap::new();
        let mut rebuilds = 0;
        for i in 0..20_000u32 {
            // Mostly ascending, as a table arrives, with some out of order.
            let a = if i % 7 == 0 { 20_000 - i } else { i };
            let p = Prefix::new(Ipv4Addr::from(a << 8).into(), 24).unwrap();
            let before = m.rebuild_at;
            m.insert(p, i);
            reference.insert(p, i);
            if m.rebuild_at != before {
                rebuilds += 1;
            }
        }
        // At 4096, 8192 and 16384 entries.
        assert_eq!(rebuilds, 3);
        assert_eq!(m.len(), reference.len());
        assert!(m
            .iter()
            .map(|(p, v)| (p, *v))
            .eq(reference.iter().map(|(p, v)| (*p, *v))));
        *m.get_or_default(Prefix::new(Ipv4Addr::new(10, 0, 0, 0).into(), 8).unwrap()) = 7;
        assert_eq!(m.get(&"10.0.0.0/8".parse().unwrap()), Some(&7));
    }

    #[test]
    fn queue_gives_back_what_was_pushed() {
        let mut q = PrefixQueue::default();
        let ps: Vec<Prefix> = ["10.0.0.0/8", "2001:db8::/32", "10.1.0.0/16", "::/0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for p in &ps {
            q.push(*p);
        }
        assert_eq!(q.len(), 4);
        assert_eq!(q.take(3), [ps[0], ps[2], ps[1]]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(3), [ps[3]]);
        assert_eq!(q.len(), 0);
        assert!(q.take(3).is_empty());
    }

    #[test]
    fn behaves_as_an_ordered_map_of_prefixes() {
        let prefixes: Vec<Prefix> = [
            "2001:db8::/32",
            "10.0.0.0/8",
            "10.0.0.0/16",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "::/0",
            "2001:db8::/48",
            "192.168.1.0/24",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut m = PrefixMap::default();
        let mut reference = BTreeMap::new();
        for (i, p) in prefixes.iter().enumerate() {
            assert_eq!(m.insert(*p, i), reference.insert(*p, i));
        }
        assert_eq!(m.insert(prefixes[1], 99), reference.insert(prefixes[1], 99));
        assert_eq!(m.len(), reference.len());
        let got: Vec<(Prefix, usize)> = m.iter().map(|(p, v)| (p, *v)).collect();
        let want: Vec<(Prefix, usize)> = reference.iter().map(|(p, v)| (*p, *v)).collect();
        assert_eq!(got, want);
        for p in &prefixes {
            assert_eq!(m.get(p), reference.get(p));
        }
        assert_eq!(m.remove(&prefixes[0]), Some(0));
        assert_eq!(m.remove(&prefixes[0]), None);
        assert_eq!(m.get(&prefixes[0]), None);
        assert_eq!(m.len(), prefixes.len() - 1);
    }
}
