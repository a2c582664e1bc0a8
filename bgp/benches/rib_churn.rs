//! Best-path churn in the RIB: P eBGP peers each announce the same N IPv4
//! prefixes with different paths, peer after peer, so every arrival runs
//! the decision process against the paths already there (issue 6).
//!
//! Sans-IO, like the RIB: the UPDATEs are built first, then fed with
//! `Rib::receive` in `feed`, the only part worth measuring. Wall-clock on a
//! shared machine is noisy; count instructions instead:
//!
//! ```text
//! cargo bench -p petrel-bgp --bench rib_churn --no-run   # prints the binary
//! valgrind --tool=callgrind --dump-instr=no --toggle-collect='*feed*' \
//!     target/release/deps/rib_churn-HASH 10 100000
//! ```
//!
//! Arguments: peers (10), prefixes (100000), prefixes per UPDATE (300),
//! and peers that receive every path with ADD-PATH (0; RFC 7911 `all`:
//! what sending several paths costs).
//! As in petrel-bench's `v4-10peers`, each peer is its own neighbour AS and
//! prepends itself 1–4 times depending on the attribute set and the peer,
//! so each prefix has a different winner and the best path changes as the
//! peers arrive; one attribute set in four carries a MED.

use petrel_bgp::rib::{PeerConfig, PeerId, Rib, RibConfig, SendMode, Session};
use petrel_bgp::wire::attr::{AsPath, Origin};
use petrel_bgp::wire::nlri::Nlri;
use petrel_bgp::wire::{CodecContext, Family, PathAttributes, Prefix, Update};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Distinct attribute sets per peer (runs of prefixes share one).
const ATTR_SETS: u32 = 1000;

/// Positional argument `n` (flags such as `cargo bench`'s `--bench` skipped).
fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .map_or(default, |a| a.parse().expect("a number"))
}

fn session(k: usize) -> Session {
    Session {
        router_id: Ipv4Addr::new(10, 0, 1, 11 + k as u8),
        codec: CodecContext::four_octet(),
        families: vec![Family::IPV4_UNICAST],
        local_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        local_v6: None,
        llgr: false,
    }
}

/// Peer `k`'s UPDATEs for `prefixes`, `per` prefixes each.
fn updates(k: usize, peers: usize, prefixes: &[Prefix], per: usize) -> Vec<Update> {
    let asn = 4_200_000_101 + k as u32;
    prefixes
        .chunks(per)
        .enumerate()
        .map(|(n, chunk)| {
            let set = n as u32 % ATTR_SETS;
            let prepend = if peers == 1 {
                0
            } else {
                (set as usize * 7 + k * 3) % 4
            };
            let mut path = vec![asn; prepend + 1];
            path.extend([174, 3356 + set % 13, 64_600 + set]);
            let attrs = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence(&path)),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, 11 + k as u8)),
                med: set.is_multiple_of(4).then_some(set),
                ..Default::default()
            };
            let mut u = Update::new(attrs);
            u.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, chunk);
            u
        })
        .collect()
}

/// The measured part: every UPDATE of every peer, peer after peer.
#[inline(never)]
fn feed(rib: &mut Rib, streams: &[(PeerId, Vec<Update>)]) -> (usize, usize) {
    let (mut changes, mut messages) = (0, 0);
    for (peer, updates) in streams {
        for u in updates {
            let out = rib.receive(*peer, u);
            changes += out.changes.len();
            messages += out.messages.len();
            black_box(&out);
        }
    }
    (changes, messages)
}

fn main() {
    run(arg(0, 10), arg(1, 100_000), arg(2, 300), arg(3, 0));
}

fn run(peers: usize, n: usize, per: usize, add_path: usize) {
    // /24s from 16.0.0.0 upwards.
    let prefixes: Vec<Prefix> = (0..n as u32)
        .map(|i| Prefix::new(Ipv4Addr::from((16 << 24) + (i << 8)).into(), 24).unwrap())
        .collect();
    let mut rib = Rib::new(RibConfig::new(4_200_000_000, Ipv4Addr::new(10, 0, 0, 1)));
    let mut streams = Vec::new();
    for k in 0..peers {
        let addr = Ipv4Addr::new(10, 0, 0, 11 + k as u8);
        let id = rib
            .add_peer(PeerConfig::new(addr.into(), 4_200_000_101 + k as u32))
            .unwrap();
        rib.peer_up(id, session(k));
        streams.push((id, updates(k, peers, &prefixes, per)));
    }
    for k in 0..add_path {
        let addr = Ipv4Addr::new(10, 0, 2, 11 + k as u8);
        let mut cfg = PeerConfig::new(addr.into(), 4_200_000_201);
        cfg.add_path.send = vec![(Family::IPV4_UNICAST, SendMode::All)];
        let id = rib.add_peer(cfg).unwrap();
        let mut s = session(k);
        s.router_id = addr;
        s.codec.add_path_tx.insert(Family::IPV4_UNICAST);
        rib.peer_up(id, s);
    }
    let started = Instant::now();
    let (changes, messages) = feed(&mut rib, &streams);
    let elapsed = started.elapsed();
    let arrivals = peers * n;
    println!(
        "{peers} peers x {n} prefixes, {per} per UPDATE, {add_path} ADD-PATH receivers: \
         {arrivals} arrivals, \
         {changes} Loc-RIB changes, {messages} UPDATEs out, {elapsed:?} \
         ({:.0} ns/arrival)",
        elapsed.as_nanos() as f64 / arrivals as f64
    );
    assert_eq!(rib.best_routes().count(), n);
}
