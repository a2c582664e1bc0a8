//! Scenarios: what the injectors send. Names are the CLI's `--scenario`.

use super::encode::{self, PeerView};
use super::table::{self, Table};
use anyhow::{bail, Result};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// Injector peers; all send the same prefixes.
    pub peers: usize,
    pub v6: bool,
    /// Steady churn after the table is in: (updates per second, seconds).
    pub churn: Option<(u32, u32)>,
    /// A real RIB dump to replay instead of a synthetic table.
    pub mrt: Option<PathBuf>,
    /// Route reflection (`rr64`): the DUT reflects for this many iBGP
    /// clients, the first `peers` of which are the sources (see
    /// `super::rr`).
    pub rr_clients: Option<usize>,
    /// A failover scenario instead of a load (see `super::failover`).
    pub failover: Option<Failover>,
}

/// The failover scenarios (issue 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failover {
    /// Two peers on links of their own; A's link loses carrier.
    PeerDeath,
    /// The DUT crashes and restarts with graceful restart.
    Restart,
}

/// The scenario names and what each does, for `--help` and the docs.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "v4",
        "1 peer x N IPv4 prefixes (synthetic, diverse attributes)",
    ),
    (
        "v4-10peers",
        "10 peers x the same N IPv4 prefixes, different paths (best-path churn)",
    ),
    ("v6", "1 peer x N IPv6 prefixes"),
    (
        "churn",
        "1 peer x N IPv4, then 10k single-prefix updates/s for 60 s (next hop flips)",
    ),
    (
        "churn2",
        "2 peers x the same N IPv4 (each best for some), then each sends 5k single-prefix \
         updates/s for 30 s: per-update latency to the FIB while several peers announce",
    ),
    (
        "rr64",
        "route reflector: 64 iBGP clients, 4 of them send the same N IPv4 prefixes \
         with different paths; every client must get the best (or with --add-path all 4)",
    ),
    (
        "mrt-v4",
        "1 peer x the IPv4 routes of the RouteViews RIB dump in ../shared/data (at most N)",
    ),
    (
        "mrt-v6",
        "1 peer x the IPv6 routes of the RouteViews v6 RIB dump (at most N)",
    ),
    (
        "peer-death",
        "peers A and B on links of their own, N IPv4 each (B's path longer, or A alone); \
         A's link loses carrier: time to all N via B / none",
    ),
    (
        "restart",
        "1 peer x N IPv4; the DUT is SIGKILLed and restarts with graceful restart while \
         the peer drops 10% and moves 10%: routes missing, time to the exact table",
    ),
];

impl Scenario {
    pub fn parse(name: &str, data: &std::path::Path) -> Result<Scenario> {
        let s = |peers, v6, churn, mrt: Option<&str>| Scenario {
            name: name.to_string(),
            peers,
            v6,
            churn,
            mrt: mrt.map(|f| data.join(f)),
            rr_clients: None,
            failover: None,
        };
        let f = |peers, kind| Scenario {
            failover: Some(kind),
            ..s(peers, false, None, None)
        };
        Ok(match name {
            "v4" => s(1, false, None, None),
            "v4-10peers" => s(10, false, None, None),
            "v6" => s(1, true, None, None),
            "churn" => s(1, false, Some((10_000, 60)), None),
            "churn2" => s(2, false, Some((5_000, 30)), None),
            "rr64" => Scenario {
                rr_clients: Some(64),
                ..s(RR_SOURCES, false, None, None)
            },
            "mrt-v4" => s(
                1,
                false,
                None,
                Some("routeviews2.rib.20140523.0600.firstMB.complete-records.mrt.bz2"),
            ),
            "mrt-v6" => s(
                1,
                true,
                None,
                Some("routeviews6.rib6.20151101.0600.firstMB.complete-records.mrt.bz2"),
            ),
            "peer-death" => f(2, Failover::PeerDeath),
            "restart" => f(1, Failover::Restart),
            _ => bail!(
                "unknown scenario {name:?}; one of: {}",
                SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ),
        })
    }

    pub fn table(&self, n: u32) -> Result<Table> {
        match &self.mrt {
            Some(p) => {
                let t = table::from_mrt(p, self.v6, n as usize)?;
                if t.is_empty() {
                    bail!("no routes in {}", p.display());
                }
                Ok(t)
            }
            None => Ok(table::synthetic(n, self.v6, 0x5eed)),
        }
    }
}

/// Injector k's address (the DUT is .1 / ::1 on the same link).
pub fn injector_addr(k: usize, v6: bool) -> IpAddr {
    if v6 {
        format!("fd00::{:x}", 0x11 + k).parse().unwrap()
    } else {
        format!("10.0.0.{}", 11 + k).parse().unwrap()
    }
}

/// The second next hop churn flips to (on the injectors' side of the link).
pub fn churn_next_hop(v6: bool) -> IpAddr {
    if v6 {
        "fd00::111".parse().unwrap()
    } else {
        "10.0.0.111".parse().unwrap()
    }
}

pub const DUT_AS: u32 = 4_200_000_000;
/// The route-reflection scenario's sources: 4 paths per prefix.
pub const RR_SOURCES: usize = 4;
/// What an iBGP source sets (RFC 4271 §5.1.5): the same at every source, so
/// AS_PATH length decides the best path.
pub const RR_LOCAL_PREF: u32 = 100;
pub const MONITOR_AS: u32 = 4_200_000_200;

pub fn injector_as(k: usize) -> u32 {
    4_200_000_101 + k as u32
}

/// Peer k's path length offset for attribute set `id`: with several peers
/// each prefix has a different shortest path and a different winner.
pub fn prepend(peers: usize, k: usize) -> impl Fn(u32) -> usize {
    move |id| {
        if peers == 1 {
            0
        } else {
            ((id as usize).wrapping_mul(7) + k * 3) % 4
        }
    }
}

/// Route reflection: per prefix, the source whose path is best. LOCAL_PREF
/// is equal, so the shortest AS_PATH wins (RFC 4271 §9.1.2.2 (a)); with
/// [`RR_SOURCES`] = 4 sources the offsets `k * 3 % 4` differ, so exactly
/// one path is shortest and no later tie-breaker (router id, which the
/// daemons order differently) decides.
pub fn rr_best(t: &Table, sources: usize) -> Vec<u8> {
    t.attr_of
        .iter()
        .map(|&id| {
            (0..sources)
                .min_by_key(|&k| prepend(sources, k)(id))
                .unwrap_or(0) as u8
        })
        .collect()
}

/// Each injector's byte stream. Route reflection's sources are iBGP
/// peers of the DUT: `injector_as(k)` is then their external neighbour's
/// AS at the front of the path, and they set LOCAL_PREF.
pub fn streams(sc: &Scenario, t: &Table) -> Vec<Vec<u8>> {
    (0..sc.peers)
        .map(|k| {
            let pre = prepend(sc.peers, k);
            let msgs = encode::announce(
                t,
                &PeerView {
                    asn: injector_as(k),
                    local_pref: sc.rr_clients.map(|_| RR_LOCAL_PREF),
                    next_hop: injector_addr(k, sc.v6),
                    prepend: &pre,
                },
            );
            msgs.concat()
        })
        .collect()
}

/// One injector's churn: its messages, and for each the key (as the FIB
/// watcher's) of the prefix whose route it changes in the DUT's FIB, when
/// it does (this injector's path is the prefix's best).
pub struct Churn {
    pub msgs: Vec<Vec<u8>>,
    pub probes: Vec<Option<u128>>,
}

/// The churn messages of every injector: `rate * secs` one-prefix UPDATEs
/// each, walking the table with a stride (each injector from another
/// place), each flipping the prefix's next hop between the injector's
/// address and a second one. Every flip of the best path is a FIB change;
/// with several injectors the others' flips change only a losing path,
/// and keep the DUT hearing several peers announce at once.
pub fn churn_messages(sc: &Scenario, t: &Table, rate: u32, secs: u32) -> Vec<Churn> {
    let total = rate as usize * secs as usize;
    let n = t.len();
    let best = rr_best(t, sc.peers);
    // A stride coprime with n visits every prefix before repeating.
    let stride = (1..)
        .map(|s: usize| 7919 * s)
        .find(|s| gcd(*s, n) == 1)
        .unwrap_or(1);
    (0..sc.peers)
        .map(|k| {
            let pre = prepend(sc.peers, k);
            let views = [injector_addr(k, sc.v6), churn_next_hop(sc.v6)];
            let mut flips = vec![false; n];
            let (msgs, probes) = (0..total)
                .map(|j| {
                    let i = (j * stride + k * n / sc.peers) % n;
                    flips[i] = !flips[i];
                    let nh = views[flips[i] as usize];
                    let id = t.attr_of[i];
                    let msg = encode::announce_one(
                        &t.prefixes[i],
                        &t.attrs[id as usize],
                        &PeerView {
                            asn: injector_as(k),
                            local_pref: None,
                            next_hop: nh,
                            prepend: &pre,
                        },
                        id,
                    );
                    let probe = (best[i] as usize == k).then(|| encode::prefix_key(&t.prefixes[i]));
                    (msg, probe)
                })
                .unzip();
            Churn { msgs, probes }
        })
        .collect()
}

/// Per-update latency: for each probe (key, sent), the time from `sent` to
/// the first change of that key's route the FIB watcher read at or after
/// it (`changes`, in any order); probes with no such change are left out.
pub fn latencies(
    probes: &[(u128, std::time::Instant)],
    changes: &[(u128, std::time::Instant)],
) -> Vec<std::time::Duration> {
    each_latency(probes, changes)
        .into_iter()
        .flatten()
        .collect()
}

/// [`latencies`], one per probe: `None` where no change came.
fn each_latency(
    probes: &[(u128, std::time::Instant)],
    changes: &[(u128, std::time::Instant)],
) -> Vec<Option<std::time::Duration>> {
    let mut by_key: std::collections::HashMap<u128, Vec<std::time::Instant>> =
        std::collections::HashMap::new();
    for (k, t) in changes {
        by_key.entry(*k).or_default().push(*t);
    }
    by_key.values_mut().for_each(|v| v.sort());
    probes
        .iter()
        .map(|(k, sent)| {
            let v = by_key.get(k)?;
            let i = v.partition_point(|t| t < sent);
            v.get(i).map(|t| *t - *sent)
        })
        .collect()
}

/// With `PETREL_BENCH_LAT_DUMP=FILE`, writes each probe's send instant
/// (ms from the first) and latency (ms; NaN if no change came) to FILE,
/// one per line: periodic stalls show there that percentiles hide (the
/// fourteenth round's delayed ACKs).
pub fn dump_latencies(
    probes: &[(u128, std::time::Instant)],
    changes: &[(u128, std::time::Instant)],
) {
    let (Ok(file), Some(t0)) = (std::env::var("PETREL_BENCH_LAT_DUMP"), probes.first()) else {
        return;
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let lines: String = probes
        .iter()
        .zip(each_latency(probes, changes))
        .map(|((_, sent), l)| format!("{:.3} {:.3}\n", ms(*sent - t0.1), l.map_or(f64::NAN, ms)))
        .collect();
    if let Err(e) = std::fs::write(&file, lines) {
        eprintln!("PETREL_BENCH_LAT_DUMP {file}: {e}");
    }
}

/// Percentiles of `lat` in milliseconds, for a report:
/// `{"p50", "p90", "p99", "max"}` (NaN when empty).
pub fn latency_ms(mut lat: Vec<std::time::Duration>) -> serde_json::Value {
    lat.sort();
    let ms = |d: Option<&std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN);
    let pct =
        |q: f64| ms(lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))));
    serde_json::json!({"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": ms(lat.last())})
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_parses_and_peers_differ_in_paths() {
        for (name, _) in SCENARIOS {
            Scenario::parse(name, std::path::Path::new("/data")).unwrap();
        }
        assert!(Scenario::parse("nope", std::path::Path::new("/")).is_err());
        let sc = Scenario::parse("v4-10peers", std::path::Path::new("/")).unwrap();
        let t = table::synthetic(1000, false, 1);
        let s = streams(&sc, &t);
        assert_eq!(s.len(), 10);
        assert_ne!(s[0], s[1]);
        // Some attribute set has different lengths at two peers.
        assert!((0..10).any(|id| prepend(10, 0)(id) != prepend(10, 1)(id)));
    }

    #[test]
    fn route_reflection_sources_have_one_shortest_path_per_prefix() {
        let sc = Scenario::parse("rr64", std::path::Path::new("/")).unwrap();
        assert_eq!((sc.peers, sc.rr_clients), (RR_SOURCES, Some(64)));
        let t = table::synthetic(5000, false, 1);
        let best = rr_best(&t, sc.peers);
        for (i, &b) in best.iter().enumerate() {
            let len = |k: usize| prepend(sc.peers, k)(t.attr_of[i]);
            assert!((0..sc.peers).all(|k| k == b as usize || len(k) > len(b as usize)));
        }
        // Every source wins some prefixes.
        assert!((0..sc.peers as u8).all(|k| best.contains(&k)));
        // iBGP: LOCAL_PREF 100 (type 5) in every UPDATE.
        let s = streams(&sc, &t);
        assert_eq!(s.len(), RR_SOURCES);
        assert!(s[0].windows(7).any(|w| w == [0x40, 5, 4, 0, 0, 0, 100]));
    }

    #[test]
    fn churn_flips_next_hops_over_the_whole_table() {
        let sc = Scenario::parse("churn", std::path::Path::new("/")).unwrap();
        let t = table::synthetic(1000, false, 1);
        let c = churn_messages(&sc, &t, 100, 20);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].msgs.len(), 2000);
        let (mut adv, mut wd) = (Vec::new(), Vec::new());
        for (x, probe) in c[0].msgs.iter().zip(&c[0].probes) {
            adv.clear();
            encode::update_prefixes(&x[19..], &mut adv, &mut wd).unwrap();
            // One peer: every update changes the FIB.
            assert_eq!(*probe, Some(adv[0]));
        }
        let distinct: std::collections::HashSet<_> = c[0].probes.iter().collect();
        assert_eq!(distinct.len(), 1000);
    }

    /// Two peers: each churns every prefix, and an update is a probe (a
    /// FIB change) exactly where its sender's path is the best: each
    /// prefix is probed by one of the two.
    #[test]
    fn two_peers_churn_and_only_the_best_paths_flips_are_probes() {
        let sc = Scenario::parse("churn2", std::path::Path::new("/")).unwrap();
        let t = table::synthetic(1000, false, 1);
        let c = churn_messages(&sc, &t, 100, 10);
        assert_eq!(c.len(), 2);
        let best = rr_best(&t, 2);
        let index: std::collections::HashMap<u128, usize> = t
            .prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| (encode::prefix_key(p), i))
            .collect();
        let mut probed_by = std::collections::HashMap::new();
        for (k, churn) in c.iter().enumerate() {
            assert_eq!(churn.msgs.len(), 1000);
            let (mut adv, mut wd) = (Vec::new(), Vec::new());
            for (x, probe) in churn.msgs.iter().zip(&churn.probes) {
                adv.clear();
                encode::update_prefixes(&x[19..], &mut adv, &mut wd).unwrap();
                let key = adv[0];
                let i = index[&key];
                assert_eq!(probe.is_some(), best[i] as usize == k);
                if probe.is_some() {
                    assert_eq!(*probe, Some(key));
                    assert_eq!(*probed_by.entry(key).or_insert(k), k);
                }
            }
        }
        assert_eq!(probed_by.len(), 1000);
        let by_first = probed_by.values().filter(|k| **k == 0).count();
        // prepend(2, k): peer 0's path is the shorter for a quarter.
        assert!(
            (150..350).contains(&by_first),
            "{by_first} of 1000 by peer 0"
        );
    }

    /// A probe's latency is to the first change of its prefix at or after
    /// it was sent; earlier changes and other prefixes do not count.
    #[test]
    fn latency_is_to_the_first_change_after_the_send() {
        let t0 = std::time::Instant::now();
        let ms = |n| t0 + std::time::Duration::from_millis(n);
        let changes = [(1, ms(5)), (2, ms(12)), (1, ms(30)), (1, ms(110))];
        let probes = [
            (1, ms(10)),
            (1, ms(100)),
            (2, ms(11)),
            (3, ms(0)),
            (2, ms(50)),
        ];
        let l: Vec<u128> = latencies(&probes, &changes)
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(l, vec![20, 10, 1]);
    }
}
