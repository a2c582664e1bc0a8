//! A multiply-rotate hasher (FxHash, as in rustc) for the RIB's per-pass
//! maps keyed by attribute-set pointers and peer ids: small integer keys
//! that no peer chooses (a peer cannot pick where its attributes are
//! allocated), hashed once or twice per route, where SipHash cost a third of
//! a best-path change.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i.into())
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i.into())
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i.into())
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_spread() {
        use std::hash::BuildHasher;
        let b = FxBuild::default();
        let hashes: std::collections::HashSet<u64> = (0..10_000usize)
            .map(|i| b.hash_one((i * 64, 3u16)))
            .collect();
        assert_eq!(hashes.len(), 10_000);
    }
}
