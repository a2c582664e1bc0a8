//! The routes an injector announces: synthetic tables with realistic
//! attribute diversity, or a real RIB dump replayed.
//!
//! A [`Table`] is prefixes plus an attribute-set index per prefix; runs of
//! prefixes sharing one set become one UPDATE (see [`super::encode`]), as a
//! real table transfer packs them. Synthetic sets are drawn from a seeded
//! generator, so every run and every DUT gets the same bytes.

use anyhow::{Context, Result};
use petrel_bgp::mrt::{self, Record};
use petrel_bgp::wire::{Family, Prefix};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One attribute set, before the injector's own AS is put in front.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// AS_SEQUENCE after the injector's AS.
    pub path: Vec<u32>,
    /// RFC 1997 communities, `asn << 16 | value`.
    pub communities: Vec<u32>,
    /// 0 IGP, 1 EGP, 2 INCOMPLETE.
    pub origin: u8,
    pub med: Option<u32>,
}

/// Prefixes and the attribute set of each.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub prefixes: Vec<Prefix>,
    /// Index into `attrs` per prefix.
    pub attr_of: Vec<u32>,
    pub attrs: Vec<Attrs>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Distinct AS paths and distinct community sets, for the report.
    pub fn diversity(&self) -> (usize, usize) {
        let paths: std::collections::HashSet<&Vec<u32>> =
            self.attrs.iter().map(|a| &a.path).collect();
        let comms: std::collections::HashSet<&Vec<u32>> =
            self.attrs.iter().map(|a| &a.communities).collect();
        (paths.len(), comms.len())
    }
}

/// xorshift64*: small, seeded, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The i-th synthetic IPv4 prefix: distinct /24s from 16.0.0.0 (clear of
/// the lab's 10.x link nets); up to 2^22 of them.
pub fn v4_prefix(i: u32) -> Prefix {
    Prefix::V4 {
        addr: Ipv4Addr::from((16u32 << 24) + (i << 8)),
        len: 24,
    }
}

/// The i-th synthetic IPv6 prefix: distinct /48s from 2a00::/16 (clear of
/// the lab's fd00::/8 link nets).
pub fn v6_prefix(i: u32) -> Prefix {
    Prefix::V6 {
        addr: Ipv6Addr::from((0x2a00u128 << 112) | ((i as u128) << 80)),
        len: 48,
    }
}

/// ASNs the synthetic paths are drawn from: a few thousand public 16-bit
/// and 32-bit numbers, none in the lab's 4200000000+ range (no AS loops).
fn asn_pool(rng: &mut Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..3000)
        .map(|i| {
            if i % 5 == 0 {
                // 32-bit ASNs (RFC 6793) as in a modern table.
                196_608 + rng.below(200_000) as u32
            } else {
                1 + rng.below(64_000) as u32
            }
        })
        .filter(|a| *a != 23456)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A synthetic table of `n` prefixes: runs of 1–16 prefixes share a set;
/// paths of 1–7 ASNs (a few well-connected transit ASNs up front, as in a
/// real table), 0–5 communities for about 60% of the sets, a MED on some.
pub fn synthetic(n: u32, v6: bool, seed: u64) -> Table {
    let mut rng = Rng::new(seed);
    let pool = asn_pool(&mut rng);
    let transit = &pool[..20];
    let mut t = Table {
        prefixes: Vec::with_capacity(n as usize),
        attr_of: Vec::with_capacity(n as usize),
        attrs: Vec::new(),
    };
    let mut i = 0;
    while i < n {
        let run = 1 + rng.below(16) as u32;
        let len = 1 + rng.below(7) as usize;
        let mut path = Vec::with_capacity(len);
        path.push(transit[rng.below(transit.len() as u64) as usize]);
        while path.len() < len {
            path.push(pool[rng.below(pool.len() as u64) as usize]);
        }
        let mut communities = Vec::new();
        if rng.below(10) < 6 {
            for _ in 0..1 + rng.below(5) {
                let asn = path[rng.below(path.len() as u64) as usize] & 0xffff;
                communities.push(asn << 16 | rng.below(1000) as u32);
            }
        }
        let med = (rng.below(4) == 0).then(|| rng.below(500) as u32);
        let id = t.attrs.len() as u32;
        t.attrs.push(Attrs {
            path,
            communities,
            origin: (rng.below(10) == 0) as u8 * 2,
            med,
        });
        for j in i..(i + run).min(n) {
            t.prefixes
                .push(if v6 { v6_prefix(j) } else { v4_prefix(j) });
            t.attr_of.push(id);
        }
        i += run;
    }
    t
}

/// The routes of a TABLE_DUMP_V2 RIB dump, one per prefix (the first
/// entry's attributes, as the first peer of the collector saw them), of
/// one family. Attribute sets are interned; at most `limit` prefixes.
pub fn from_mrt(path: &Path, v6: bool, limit: usize) -> Result<Table> {
    use petrel_bgp::wire::attr::SegmentType;
    let mut t = Table::default();
    let mut ids: HashMap<Attrs, u32> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let reader = mrt::reader::open(path).with_context(|| format!("open {}", path.display()))?;
    for raw in reader {
        let Ok(raw) = raw else { break };
        let Ok(Record::Rib(rib)) = Record::parse(&raw) else {
            continue;
        };
        let Some(prefix) = rib.prefix else { continue };
        let want = if v6 {
            Family::IPV6_UNICAST
        } else {
            Family::IPV4_UNICAST
        };
        // Unicast only (a dump also holds multicast RIBs of the same
        // prefixes), and each prefix once.
        if rib.family != want || !seen.insert(prefix) {
            continue;
        }
        let Some(Ok(decoded)) = rib.entries.first().map(|e| &e.attrs) else {
            continue;
        };
        let mut a = Attrs {
            path: Vec::new(),
            communities: Vec::new(),
            origin: 0,
            med: None,
        };
        let pa = &decoded.attrs;
        a.origin = pa.origin.map(|o| o as u8).unwrap_or(0);
        a.med = pa.med;
        if let Some(p) = &pa.as_path {
            for seg in p.segments() {
                if seg.kind == SegmentType::Sequence {
                    a.path.extend_from_slice(seg.asns);
                }
            }
        }
        if let Some(c) = &pa.communities {
            // Well-known communities (RFC 1997: NO_EXPORT, NO_ADVERTISE, ...)
            // would keep routes from the monitor; the rest are data.
            a.communities = c
                .iter()
                .map(|c| c.0)
                .filter(|c| c >> 16 != 0xffff)
                .collect();
        }
        a.path.retain(|x| *x < 4_200_000_000);
        let next = ids.len() as u32;
        let id = *ids.entry(a.clone()).or_insert_with(|| {
            t.attrs.push(a);
            next
        });
        t.prefixes.push(prefix);
        t.attr_of.push(id);
        if t.len() >= limit {
            break;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_deterministic_distinct_and_diverse() {
        let a = synthetic(100_000, false, 7);
        let b = synthetic(100_000, false, 7);
        assert_eq!(a.prefixes, b.prefixes);
        assert_eq!(a.attrs, b.attrs);
        let distinct: std::collections::HashSet<_> = a.prefixes.iter().collect();
        assert_eq!(distinct.len(), 100_000);
        let (paths, comms) = a.diversity();
        // Runs average 8.5 prefixes: about 11.8k sets, nearly all distinct.
        assert!(paths > 10_000, "{paths} distinct AS paths");
        assert!(comms > 5_000, "{comms} distinct community sets");
        assert!(a.attrs.iter().all(
            |s| !s.path.is_empty() && s.path.iter().all(|x| *x < 4_200_000_000 && *x != 23456)
        ));
    }

    #[test]
    fn prefixes_stay_clear_of_link_nets() {
        assert_eq!(format!("{}", v4_prefix(0)), "16.0.0.0/24");
        assert_eq!(format!("{}", v4_prefix(1_000_000)), "31.66.64.0/24");
        assert_eq!(format!("{}", v6_prefix(1)), "2a00:0:1::/48");
    }
}
