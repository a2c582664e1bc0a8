//! An ordered map from prefix to a small value, with packed keys.
//!
//! [`Prefix`] is an 18-byte enum sized for IPv6; an IPv4 table keyed by it
//! spends most of each B-tree node on padding. Here IPv4 keys are one `u64`
//! (address << 8 | length) and IPv6 keys a packed 17-byte [`V6Key`], in two
//! trees. (A `(u128, u8)` key is 32 bytes: `u128` is 16-aligned, so the
//! length byte drags 15 of padding with it, in every B-tree slot and queue
//! entry.) Both packings sort exactly as `Prefix` does (address, then
//! length; IPv4 before IPv6), so iteration order, and with it the order
//! UPDATEs are built in, is the same as a `BTreeMap<Prefix, V>`'s.
//!
//! A table arrives mostly in prefix order, and a B-tree that grows at its
//! right edge splits its last leaf 6 + 5: every leaf left behind is about
//! half full, nearly doubling the memory per entry. So the map rebuilds its
//! trees whenever it has grown by half since the last rebuild, from their
//! sorted contents, which packs the nodes full. The rebuild streams (see
//! [`packed`]), so it costs no more memory than the tree itself; amortised
//! it is at most three moves per entry, and at any size at least two thirds
//! of the entries sit in full nodes.

use crate::wire::nlri::Prefix;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug)]
pub(crate) struct PrefixMap<V> {
    v4: BTreeMap<u64, V>,
    v6: BTreeMap<V6Key, V>,
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

/// An IPv6 prefix packed into 17 bytes with no alignment: the address's
/// halves, then the length. Ordered by address, then length, as [`Prefix`].
#[derive(Clone, Copy)]
#[repr(C, packed)]
pub(crate) struct V6Key {
    hi: u64,
    lo: u64,
    len: u8,
}

const _: () = assert!(std::mem::size_of::<V6Key>() == 17);

impl V6Key {
    fn new(addr: Ipv6Addr, len: u8) -> Self {
        let a = u128::from(addr);
        V6Key {
            hi: (a >> 64) as u64,
            lo: a as u64,
            len,
        }
    }

    /// The fields by value (a packed field cannot be borrowed).
    fn parts(self) -> (u64, u64, u8) {
        (self.hi, self.lo, self.len)
    }
}

impl PartialEq for V6Key {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for V6Key {}

impl PartialOrd for V6Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for V6Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl std::fmt::Debug for V6Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", v6_prefix(self))
    }
}

fn v6_prefix(k: &V6Key) -> Prefix {
    let (hi, lo, len) = k.parts();
    Prefix::V6 {
        addr: Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo)),
        len,
    }
}

impl<V> PrefixMap<V> {
    pub fn get(&self, p: &Prefix) -> Option<&V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.get(&v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.get(&V6Key::new(addr, len)),
        }
    }

    pub fn get_mut(&mut self, p: &Prefix) -> Option<&mut V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.get_mut(&v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.get_mut(&V6Key::new(addr, len)),
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
            Prefix::V6 { addr, len } => self.v6.entry(V6Key::new(addr, len)).or_default(),
        }
    }

    pub fn insert(&mut self, p: Prefix, v: V) -> Option<V> {
        self.grow();
        match p {
            Prefix::V4 { addr, len } => self.v4.insert(v4_key(addr, len), v),
            Prefix::V6 { addr, len } => self.v6.insert(V6Key::new(addr, len), v),
        }
    }

    pub fn remove(&mut self, p: &Prefix) -> Option<V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.remove(&v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.remove(&V6Key::new(addr, len)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Before an insert: rebuilds the trees packed once they have grown by
    /// half.
    fn grow(&mut self) {
        let len = self.len();
        if len < self.rebuild_at {
            return;
        }
        self.rebuild();
        self.rebuild_at = (len + len / 2).max(REBUILD_FLOOR);
    }

    /// Rebuilds both trees with full nodes.
    fn rebuild(&mut self) {
        packed(&mut self.v4);
        packed(&mut self.v6);
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
            Some(Prefix::V6 { addr, len }) => (Excluded(u64::MAX), Excluded(V6Key::new(addr, len))),
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

/// Rebuilds `tree` with full nodes, streaming. `BTreeMap::from_iter`
/// would first collect every entry into one vector (at 200k IPv6 routes
/// 6 MiB, a third of the table's own size, all of it in the peak RSS);
/// `append` into a non-empty map instead merges the two trees' sorted
/// iterators straight into new full nodes, and the old tree's nodes are
/// freed as its iterator passes them. (Appending into an empty map would
/// only swap the two, so the smallest entry goes first.)
fn packed<K: Ord, V>(tree: &mut BTreeMap<K, V>) {
    let mut rest = std::mem::take(tree);
    let Some((k, v)) = rest.pop_first() else {
        return;
    };
    tree.insert(k, v);
    tree.append(&mut rest);
}

/// A queue of prefixes with packed keys (8 bytes per IPv4 prefix and 17
/// per IPv6 prefix instead of 18 for either), taken from the front: IPv4 first, then IPv6, each in the order
/// pushed.
#[derive(Debug, Default)]
pub(crate) struct PrefixQueue {
    v4: Vec<u64>,
    v6: Vec<V6Key>,
    /// How many of each were taken.
    taken: (usize, usize),
    /// Prefixes ever pushed (the position of the next one).
    pushed: u64,
}

/// Taken prefixes below this many stay in the queue's vectors.
const COMPACT_FLOOR: usize = 4096;

impl PrefixQueue {
    pub fn push(&mut self, p: Prefix) {
        self.pushed += 1;
        match p {
            Prefix::V4 { addr, len } => self.v4.push(v4_key(addr, len)),
            Prefix::V6 { addr, len } => self.v6.push(V6Key::new(addr, len)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len() - self.taken.0 - self.taken.1
    }

    /// Prefixes ever pushed: the next one's position, counted from the
    /// queue's start (what was taken counts too).
    pub fn pushed(&self) -> u64 {
        self.pushed
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
        self.compact();
        out
    }

    /// Drops the prefixes taken once they are half the vector: a queue fed
    /// as fast as it is drained (a full table arriving while the FIB
    /// writer is behind) then stays within twice what it holds, instead of
    /// keeping every prefix ever pushed until it is dropped. Each move is
    /// paid for by a take, so this is O(1) amortised.
    fn compact(&mut self) {
        fn front<T>(v: &mut Vec<T>, taken: &mut usize) {
            if *taken >= COMPACT_FLOOR && *taken * 2 >= v.len() {
                v.drain(..*taken);
                *taken = 0;
            }
        }
        front(&mut self.v4, &mut self.taken.0);
        front(&mut self.v6, &mut self.taken.1);
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
    /// grows by half.
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
        // At 4096, 6144, 9216 and 13824 entries.
        assert_eq!(rebuilds, 4);
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

    /// A queue drained as it is fed keeps only about what it holds.
    #[test]
    fn queue_drops_what_was_taken() {
        let mut q = PrefixQueue::default();
        let p = |i: u32| Prefix::new(Ipv4Addr::from(i << 8).into(), 24).unwrap();
        let mut next = 0;
        for round in 0..100u32 {
            for i in 0..1000 {
                q.push(p(round * 1000 + i));
            }
            for got in q.take(1000) {
                assert_eq!(got, p(next));
                next += 1;
            }
        }
        assert_eq!(q.len(), 0);
        assert!(q.v4.len() < 2 * COMPACT_FLOOR + 1000, "{}", q.v4.len());
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
