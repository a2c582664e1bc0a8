//! The FIB writer's own state, compact: prefix maps with packed keys, and
//! the interned next-hop sets their values name.
//!
//! Design. A full table is a million prefixes over a handful of distinct
//! next-hop sets, so a route is stored as its packed prefix plus the `u32`
//! id of a shared, reference-counted [`Installed`] set kept in [`Sets`].
//! An IPv4 entry is one `u64` (address, length, id), an IPv6 entry 12 bytes
//! (the address's high half, length, id) when the prefix is /64 or shorter
//! and 24 otherwise; a [`PrefixMap`] keeps them in open-addressing tables (linear probing,
//! backward-shift deletion, so an empty slot is all a slot needs besides
//! the entry) at most 80% full: about 17 B per IPv4 route at a million,
//! where a `HashMap<Prefix, Installed>` took about 100. The map is split
//! into [`SHARDS`] tables by the hash's top bits, each growing on its own:
//! a resize briefly holds one shard twice, not the whole map.

use super::msg::Hop;
use petrel_bgp::wire::Prefix;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Values are below this: the 25 bits a short IPv6 entry keeps for them
/// (an IPv4 entry has room for 26). A set is referenced by at least one
/// route, so this many distinct sets would take a FIB of 33 million
/// routes.
pub const MAX_VALUE: u32 = 1 << 25;

/// Tables per map (a power of two): a resize copies one of them.
pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// Slots of a shard's first table.
const MIN_SLOTS: usize = 8;

/// Fibonacci hashing's multiplier: the high bits of `key * K` mix all of
/// the key's bits, and the high bits are the ones used.
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// A hint to the CPU to bring `x`'s cache line in; no effect on results.
#[inline]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory; SSE is part
    // of x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            x as *const T as *const i8,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// One entry of a table, its own "empty" marker included.
trait Slot: Copy + PartialEq {
    const EMPTY: Self;
    fn hash(&self) -> u64;
    fn same_key(&self, other: &Self) -> bool;
    fn value(&self) -> u32;
}

/// An IPv4 entry: address (bits 63..32), length + 1 (31..26; never 0, so
/// no entry is the empty 0), value (25..0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct V4(u64);

impl V4 {
    fn new(addr: Ipv4Addr, len: u8, value: u32) -> Self {
        debug_assert!(len <= 32 && value < MAX_VALUE);
        V4((u32::from(addr) as u64) << 32 | (len as u64 + 1) << 26 | value as u64)
    }
    fn prefix(&self) -> Prefix {
        Prefix::V4 {
            addr: Ipv4Addr::from((self.0 >> 32) as u32),
            len: ((self.0 >> 26) & 0x3f) as u8 - 1,
        }
    }
}

impl Slot for V4 {
    const EMPTY: Self = V4(0);
    fn hash(&self) -> u64 {
        (self.0 >> 26).wrapping_mul(K)
    }
    fn same_key(&self, other: &Self) -> bool {
        self.0 >> 26 == other.0 >> 26
    }
    fn value(&self) -> u32 {
        (self.0 & (MAX_VALUE as u64 - 1)) as u32
    }
}

/// An IPv6 entry of a prefix no longer than /64 whose address has no bit
/// set past the 64th (a routing table's IPv6 prefixes nearly all are):
/// the address's high half, then length + 1 (bits 31..25; never 0) and
/// value (24..0). 12 bytes at 4-byte alignment, where [`V6`] takes 24.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C, packed(4))]
struct V6Short {
    hi: u64,
    meta: u32,
}

impl V6Short {
    /// `None` when the prefix needs a [`V6`].
    fn new(addr: Ipv6Addr, len: u8, value: u32) -> Option<Self> {
        debug_assert!(len <= 128 && value < MAX_VALUE);
        let a = u128::from(addr);
        (len <= 64 && a as u64 == 0).then_some(V6Short {
            hi: (a >> 64) as u64,
            meta: (len as u32 + 1) << 25 | value,
        })
    }
    fn prefix(&self) -> Prefix {
        Prefix::V6 {
            addr: Ipv6Addr::from((self.hi as u128) << 64),
            len: (self.meta >> 25) as u8 - 1,
        }
    }
}

impl Slot for V6Short {
    const EMPTY: Self = V6Short { hi: 0, meta: 0 };
    fn hash(&self) -> u64 {
        (self.hi.wrapping_mul(K) ^ (self.meta >> 25) as u64).wrapping_mul(K)
    }
    fn same_key(&self, other: &Self) -> bool {
        let (a, b) = (self.hi, other.hi);
        a == b && self.meta >> 25 == other.meta >> 25
    }
    fn value(&self) -> u32 {
        self.meta & (MAX_VALUE - 1)
    }
}

/// Any other IPv6 entry: address halves, then length + 1 (bits 39..32;
/// never 0) and value (31..0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct V6 {
    hi: u64,
    lo: u64,
    meta: u64,
}

impl V6 {
    fn new(addr: Ipv6Addr, len: u8, value: u32) -> Self {
        debug_assert!(len <= 128);
        let a = u128::from(addr);
        V6 {
            hi: (a >> 64) as u64,
            lo: a as u64,
            meta: (len as u64 + 1) << 32 | value as u64,
        }
    }
    fn prefix(&self) -> Prefix {
        Prefix::V6 {
            addr: Ipv6Addr::from((self.hi as u128) << 64 | self.lo as u128),
            len: (self.meta >> 32) as u8 - 1,
        }
    }
}

impl Slot for V6 {
    const EMPTY: Self = V6 {
        hi: 0,
        lo: 0,
        meta: 0,
    };
    fn hash(&self) -> u64 {
        let h = (self.hi.wrapping_mul(K) ^ self.lo).wrapping_mul(K);
        (h ^ (self.meta >> 32)).wrapping_mul(K)
    }
    fn same_key(&self, other: &Self) -> bool {
        self.hi == other.hi && self.lo == other.lo && self.meta >> 32 == other.meta >> 32
    }
    fn value(&self) -> u32 {
        self.meta as u32
    }
}

/// One shard: open addressing, linear probing. `slots` is empty or a
/// power of two long, never full (at most 80%).
#[derive(Clone)]
struct Shard<S> {
    slots: Vec<S>,
    len: usize,
}

impl<S> Default for Shard<S> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<S: Slot> Shard<S> {
    /// The home slot: the hash bits below the shard's.
    fn home(&self, h: u64) -> usize {
        ((h << SHARD_BITS) >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    /// `Ok(index)` of the entry with `s`'s key, or `Err(index)` of the empty
    /// slot where it would go.
    fn find(&self, s: &S) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(s.hash());
        loop {
            let x = self.slots[i];
            if x == S::EMPTY {
                return Err(i);
            }
            if x.same_key(s) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn get(&self, s: &S) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        self.find(s).ok().map(|i| self.slots[i].value())
    }

    fn insert(&mut self, s: S) -> Option<u32> {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        match self.find(&s) {
            Ok(i) => Some(std::mem::replace(&mut self.slots[i], s).value()),
            Err(i) => {
                self.slots[i] = s;
                self.len += 1;
                None
            }
        }
    }

    fn remove(&mut self, s: &S) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(s).ok()?;
        let old = self.slots[i].value();
        // Backward shift: pull each later entry of the run into the hole
        // when its home is not after the hole, so that every entry stays
        // reachable from its home without tombstones.
        let mask = self.slots.len() - 1;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let x = self.slots[j];
            if x == S::EMPTY {
                break;
            }
            let home = self.home(x.hash());
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = x;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = S::EMPTY;
        self.len -= 1;
        // Give memory back after a withdrawal (a quarter full at most once
        // halved, so no resize back and forth at the border).
        if self.len == 0 {
            self.slots = Vec::new();
        } else if self.len * 8 < self.slots.len() && self.slots.len() > MIN_SLOTS {
            self.resize(self.slots.len() / 2);
        }
        Some(old)
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, vec![S::EMPTY; n]);
        for s in old {
            if s != S::EMPTY {
                if let Err(i) = self.find(&s) {
                    self.slots[i] = s;
                }
            }
        }
    }

    fn clear(&mut self) {
        self.slots.fill(S::EMPTY);
        self.len = 0;
    }
}

/// A family's shards.
#[derive(Clone)]
struct Table<S> {
    shards: Box<[Shard<S>]>,
    len: usize,
}

impl<S: Slot> Default for Table<S> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: 0,
        }
    }
}

impl<S: Slot> Table<S> {
    fn shard(&self, s: &S) -> usize {
        (s.hash() >> (64 - SHARD_BITS)) as usize
    }
    fn get(&self, s: &S) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        self.shards[self.shard(s)].get(s)
    }
    fn prefetch(&self, s: &S) {
        let h = s.hash();
        let shard = &self.shards[(h >> (64 - SHARD_BITS)) as usize];
        if !shard.slots.is_empty() {
            prefetch(&shard.slots[shard.home(h)]);
        }
    }
    fn insert(&mut self, s: S) -> Option<u32> {
        let k = self.shard(&s);
        let old = self.shards[k].insert(s);
        self.len += old.is_none() as usize;
        old
    }
    fn remove(&mut self, s: &S) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let k = self.shard(s);
        let old = self.shards[k].remove(s);
        self.len -= old.is_some() as usize;
        old
    }
    fn iter(&self) -> impl Iterator<Item = &S> + '_ {
        self.shards
            .iter()
            .flat_map(|s| s.slots.iter())
            .filter(|s| **s != S::EMPTY)
    }
    fn slots(&self) -> usize {
        self.shards.iter().map(|s| s.slots.len()).sum()
    }
    /// Empties the table; keeps its memory when small, as a per-batch
    /// scratch set reused many times wants.
    fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        if self.slots() > 1 << 16 {
            *self = Self::default();
        } else {
            self.shards.iter_mut().for_each(Shard::clear);
            self.len = 0;
        }
    }
}

/// Prefix → `u32` (below [`MAX_VALUE`]), both families; an IPv6 prefix in
/// `v6` when it fits a [`V6Short`], in `v6_long` otherwise (a prefix's
/// table depends on the prefix alone, so each prefix is in one).
#[derive(Clone, Default)]
pub struct PrefixMap {
    v4: Table<V4>,
    v6: Table<V6Short>,
    v6_long: Table<V6>,
}

impl PrefixMap {
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len + self.v6_long.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, p: &Prefix) -> Option<u32> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.get(&V4::new(addr, len, 0)),
            Prefix::V6 { addr, len } => match V6Short::new(addr, len, 0) {
                Some(k) => self.v6.get(&k),
                None => self.v6_long.get(&V6::new(addr, len, 0)),
            },
        }
    }

    pub fn contains(&self, p: &Prefix) -> bool {
        self.get(p).is_some()
    }

    /// Starts loading the memory `p`'s lookup will read: at a million
    /// routes the tables are far bigger than the caches, and a lookup that
    /// waits for memory costs more than the rest of a route's user-space
    /// work. Call it a few routes ahead.
    pub fn prefetch(&self, p: &Prefix) {
        match *p {
            Prefix::V4 { addr, len } => self.v4.prefetch(&V4::new(addr, len, 0)),
            Prefix::V6 { addr, len } => match V6Short::new(addr, len, 0) {
                Some(k) => self.v6.prefetch(&k),
                None => self.v6_long.prefetch(&V6::new(addr, len, 0)),
            },
        }
    }

    /// Sets `p`'s value; returns the old one.
    pub fn insert(&mut self, p: Prefix, value: u32) -> Option<u32> {
        match p {
            Prefix::V4 { addr, len } => self.v4.insert(V4::new(addr, len, value)),
            Prefix::V6 { addr, len } => match V6Short::new(addr, len, value) {
                Some(k) => self.v6.insert(k),
                None => self.v6_long.insert(V6::new(addr, len, value)),
            },
        }
    }

    pub fn remove(&mut self, p: &Prefix) -> Option<u32> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.remove(&V4::new(addr, len, 0)),
            Prefix::V6 { addr, len } => match V6Short::new(addr, len, 0) {
                Some(k) => self.v6.remove(&k),
                None => self.v6_long.remove(&V6::new(addr, len, 0)),
            },
        }
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, u32)> + '_ {
        let v4 = self.v4.iter().map(|s| (s.prefix(), s.value()));
        let v6 = self.v6.iter().map(|s| (s.prefix(), s.value()));
        let v6_long = self.v6_long.iter().map(|s| (s.prefix(), s.value()));
        v4.chain(v6).chain(v6_long)
    }

    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
        self.v6_long.clear();
    }

    /// Heap bytes of the tables.
    pub fn heap_bytes(&self) -> usize {
        let shards = 3 * SHARDS * std::mem::size_of::<Shard<V4>>();
        self.v4.slots() * std::mem::size_of::<V4>()
            + self.v6.slots() * std::mem::size_of::<V6Short>()
            + self.v6_long.slots() * std::mem::size_of::<V6>()
            + shards
    }
}

/// A set of prefixes: a [`PrefixMap`] of no values.
#[derive(Clone, Default)]
pub struct PrefixSet(PrefixMap);

impl PrefixSet {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn contains(&self, p: &Prefix) -> bool {
        !self.0.is_empty() && self.0.contains(p)
    }
    /// Whether `p` was not in the set.
    pub fn insert(&mut self, p: Prefix) -> bool {
        self.0.insert(p, 0).is_none()
    }
    /// Whether `p` was in the set.
    pub fn remove(&mut self, p: &Prefix) -> bool {
        self.0.remove(p).is_some()
    }
    pub fn iter(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.0.iter().map(|(p, _)| p)
    }
    pub fn clear(&mut self) {
        self.0.clear()
    }
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

/// What we installed for a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Installed {
    Blackhole,
    One(Hop),
    Many(Box<[Hop]>),
}

impl Installed {
    pub fn of(hops: &[Hop]) -> Self {
        match hops {
            [] => Installed::Blackhole,
            [h] => Installed::One(*h),
            _ => Installed::Many(hops.into()),
        }
    }
    pub fn hops(&self) -> &[Hop] {
        match self {
            Installed::Blackhole => &[],
            Installed::One(h) => std::slice::from_ref(h),
            Installed::Many(h) => h,
        }
    }
}

/// The id of [`Installed::Blackhole`], always there.
pub const BLACKHOLE: u32 = 0;

/// The distinct next-hop sets, interned and reference-counted: an id is
/// valid while someone holds a reference ([`Sets::intern`] or
/// [`Sets::acquire`] one, [`Sets::release`] it); the last release frees
/// the id for reuse.
#[derive(Debug)]
pub struct Sets {
    /// By id; `refs == 0` and `set == Blackhole` when free (id 0 aside).
    sets: Vec<(Installed, u32)>,
    free: Vec<u32>,
    ids: HashMap<Installed, u32>,
    /// By id: whether the route MTU is redundant on this set's links
    /// (`None`: not decided since the set was interned or the links
    /// changed). See `egress::Links::redundant`.
    mtu_redundant: Vec<Option<bool>>,
}

impl Default for Sets {
    fn default() -> Self {
        Self {
            sets: vec![(Installed::Blackhole, 0)],
            free: Vec::new(),
            ids: HashMap::new(),
            mtu_redundant: vec![None],
        }
    }
}

impl Sets {
    /// The id of `hops` (the blackhole when empty), with a reference for
    /// the caller. `None` when [`MAX_VALUE`] sets are in use.
    pub fn intern(&mut self, hops: &[Hop]) -> Option<u32> {
        if hops.is_empty() {
            return Some(BLACKHOLE);
        }
        let set = Installed::of(hops);
        if let Some(&id) = self.ids.get(&set) {
            self.acquire(id);
            return Some(id);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.sets.len() < MAX_VALUE as usize => {
                self.sets.push((Installed::Blackhole, 0));
                self.mtu_redundant.push(None);
                (self.sets.len() - 1) as u32
            }
            None => return None,
        };
        self.sets[id as usize] = (set.clone(), 1);
        self.mtu_redundant[id as usize] = None;
        self.ids.insert(set, id);
        Some(id)
    }

    pub fn get(&self, id: u32) -> &Installed {
        &self.sets[id as usize].0
    }

    pub fn acquire(&mut self, id: u32) {
        if id != BLACKHOLE {
            self.sets[id as usize].1 += 1;
        }
    }

    pub fn release(&mut self, id: u32) {
        if id == BLACKHOLE {
            return;
        }
        let e = &mut self.sets[id as usize];
        debug_assert!(e.1 > 0, "release of free next-hop set {id}");
        e.1 -= 1;
        if e.1 == 0 {
            let set = std::mem::replace(&mut e.0, Installed::Blackhole);
            self.ids.remove(&set);
            self.free.push(id);
        }
    }

    /// The cached answer of `egress::Links::redundant` for `id`.
    pub fn mtu_redundant(&self, id: u32) -> Option<bool> {
        self.mtu_redundant[id as usize]
    }

    pub fn set_mtu_redundant(&mut self, id: u32, redundant: bool) {
        self.mtu_redundant[id as usize] = Some(redundant);
    }

    /// Forgets every cached answer (the route MTU changed).
    pub fn forget_mtu_redundant(&mut self) {
        self.mtu_redundant.iter_mut().for_each(|r| *r = None);
    }

    /// The ids of the sets in use, the blackhole aside.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.values().copied()
    }

    /// Sets in use, the blackhole aside.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// References held on `id`.
    #[cfg(test)]
    pub fn refs(&self, id: u32) -> u32 {
        self.sets[id as usize].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Std;
    use std::net::IpAddr;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn packed_keys_round_trip() {
        for s in [
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.0.0.0/8",
            "::/0",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "2001:db8::/32",
        ] {
            let mut m = PrefixMap::default();
            assert_eq!(m.insert(p(s), MAX_VALUE - 1), None);
            assert_eq!(m.get(&p(s)), Some(MAX_VALUE - 1), "{s}");
            assert_eq!(m.iter().collect::<Vec<_>>(), [(p(s), MAX_VALUE - 1)]);
        }
    }

    /// IPv6 prefixes up to /64 with nothing set past the 64th bit take
    /// the 12-byte entry; the rest, the 24-byte one. Both round trip, at
    /// the edges of each.
    #[test]
    fn ipv6_entries_short_and_long() {
        assert_eq!(std::mem::size_of::<V6Short>(), 12);
        let short = [
            "::/0",
            "8000::/1",
            "2001:db8::/32",
            "2a00:0:1::/48",
            "ffff:ffff:ffff:ffff::/64",
        ];
        let long = [
            "ffff:ffff:ffff:ffff:8000::/65",
            "2001:db8::1/128",
            "::/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
        ];
        let mut m = PrefixMap::default();
        for (i, s) in short.iter().chain(&long).enumerate() {
            assert_eq!(m.insert(p(s), MAX_VALUE - 1 - i as u32), None, "{s}");
        }
        assert_eq!((m.v6.len, m.v6_long.len), (short.len(), long.len()));
        for (i, s) in short.iter().chain(&long).enumerate() {
            assert_eq!(m.get(&p(s)), Some(MAX_VALUE - 1 - i as u32), "{s}");
        }
        let mut all: Vec<_> = m.iter().map(|(p, _)| p).collect();
        all.sort();
        let mut want: Vec<_> = short.iter().chain(&long).map(|s| p(s)).collect();
        want.sort();
        assert_eq!(all, want);
        // A /64 and a /65 of the same address are two keys in two tables.
        assert_eq!(m.get(&p("ffff:ffff:ffff:ffff::/65")), None);
        assert_eq!(m.insert(p("ffff:ffff:ffff:ffff::/65"), 7), None);
        assert_eq!(m.get(&p("ffff:ffff:ffff:ffff::/64")), Some(MAX_VALUE - 5));
        // A short length with bits set past the 64th (not a canonical
        // prefix, but representable) keeps its address in the long table.
        let odd = Prefix::V6 {
            addr: "2001:db8::1".parse().unwrap(),
            len: 32,
        };
        assert_eq!(m.insert(odd, 9), None);
        assert_eq!(m.get(&odd), Some(9));
        assert_eq!(m.get(&p("2001:db8::/32")), Some(MAX_VALUE - 3));
        assert!(m.iter().any(|x| x == (odd, 9)));
        for s in short.iter().chain(&long) {
            assert!(m.remove(&p(s)).is_some(), "{s}");
        }
        assert_eq!(m.len(), 2);
    }

    /// Same address, other length: another key (0.0.0.0/0 against /1 and
    /// /32 too, whose packed address is the same 0).
    #[test]
    fn length_is_part_of_the_key() {
        let mut m = PrefixMap::default();
        for (i, s) in ["0.0.0.0/0", "0.0.0.0/1", "0.0.0.0/32", "::/0", "::/128"]
            .iter()
            .enumerate()
        {
            assert_eq!(m.insert(p(s), i as u32), None);
        }
        assert_eq!(m.len(), 5);
        assert_eq!(m.get(&p("0.0.0.0/1")), Some(1));
        assert_eq!(m.get(&p("::/128")), Some(4));
        assert_eq!(m.get(&p("0.0.0.0/2")), None);
    }

    /// A random mix of inserts, replaces and removes of many keys agrees
    /// with std's HashMap at every step, through growth and shrinking.
    #[test]
    fn agrees_with_a_hash_map() {
        let mut m = PrefixMap::default();
        let mut model: Std<Prefix, u32> = Std::new();
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3 {
            for _ in 0..60_000 {
                let r = next();
                // A small key space, so keys collide and come back.
                let k = (r >> 8) % 20_000;
                let prefix = if k % 6 == 0 {
                    Prefix::new(IpAddr::from((k as u128).to_be_bytes()), 128).unwrap()
                } else if k % 3 == 0 {
                    Prefix::new(IpAddr::from(((k as u128) << 80).to_be_bytes()), 48).unwrap()
                } else {
                    Prefix::new(IpAddr::from(((k as u32) << 8).to_be_bytes()), 24).unwrap()
                };
                let v = (r % MAX_VALUE as u64) as u32;
                // Growing rounds insert more than they remove; the last
                // one removes everything it can.
                if round < 2 && r % 4 != 0 {
                    assert_eq!(m.insert(prefix, v), model.insert(prefix, v));
                } else {
                    assert_eq!(m.remove(&prefix), model.remove(&prefix));
                }
                assert_eq!(m.len(), model.len());
            }
            for (k, v) in &model {
                assert_eq!(m.get(k), Some(*v));
            }
            let mut all: Vec<_> = m.iter().collect();
            all.sort();
            let mut want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            want.sort();
            assert_eq!(all, want);
        }
        for k in model.keys() {
            assert!(m.remove(k).is_some());
        }
        assert!(m.is_empty());
        // Emptied shards give their memory back.
        assert_eq!(m.v4.slots() + m.v6.slots() + m.v6_long.slots(), 0);
    }

    /// The point of the module: a million IPv4 routes in about 17 octets
    /// each (2^21 slots of 8), against ~100 for a HashMap<Prefix, _>.
    #[test]
    fn a_million_routes_take_under_20_octets_each() {
        let mut m = PrefixMap::default();
        let n = 1_000_000u32;
        for i in 0..n {
            let a = Ipv4Addr::from(0x0100_0000 + (i << 8));
            m.insert(Prefix::V4 { addr: a, len: 24 }, i % 7);
        }
        assert_eq!(m.len(), n as usize);
        let per_route = m.heap_bytes() as f64 / n as f64;
        assert!(per_route < 20.0, "{per_route} B/route");
        // No shard ran away (a poor hash would fill some and leave others).
        let max = m.v4.shards.iter().map(|s| s.slots.len()).max().unwrap();
        assert!(max <= 2 * (1 << 21) / SHARDS, "largest shard {max} slots");
    }

    #[test]
    fn set_of_prefixes() {
        let mut s = PrefixSet::default();
        assert!(s.insert(p("10.0.0.0/24")));
        assert!(!s.insert(p("10.0.0.0/24")));
        assert!(s.contains(&p("10.0.0.0/24")));
        assert!(!s.contains(&p("10.0.0.0/25")));
        s.clear();
        assert!(s.is_empty() && !s.contains(&p("10.0.0.0/24")));
        assert!(s.insert(p("10.0.0.0/24")));
    }

    fn hop(last: u8) -> Hop {
        Hop {
            gateway: IpAddr::from([192, 0, 2, last]),
            ifindex: 0,
            onlink: false,
        }
    }

    #[test]
    fn sets_are_shared_and_freed_at_the_last_release() {
        let mut s = Sets::default();
        let a = s.intern(&[hop(1)]).unwrap();
        let b = s.intern(&[hop(1), hop(2)]).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, BLACKHOLE);
        assert_eq!(s.intern(&[hop(1)]), Some(a));
        assert_eq!(s.refs(a), 2);
        assert_eq!(s.get(b).hops(), [hop(1), hop(2)]);
        assert_eq!(s.intern(&[]), Some(BLACKHOLE));
        assert_eq!(s.get(BLACKHOLE), &Installed::Blackhole);
        s.release(a);
        assert_eq!(s.get(a), &Installed::One(hop(1)));
        s.release(a);
        assert_eq!(s.len(), 1);
        // The freed id names the next new set; the old set is gone.
        let c = s.intern(&[hop(3)]).unwrap();
        assert_eq!(c, a);
        assert_eq!(s.get(c), &Installed::One(hop(3)));
        assert_eq!(s.intern(&[hop(1)]).map(|x| x == c), Some(false));
        // The blackhole is never freed.
        s.release(BLACKHOLE);
        assert_eq!(s.get(BLACKHOLE), &Installed::Blackhole);
    }
}
