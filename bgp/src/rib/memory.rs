//! Bytes per route, measured with a counting global allocator.
//!
//! Run alone and optimised:
//! `cargo test --release -p petrel-bgp --lib rib::memory -- --ignored --nocapture`
//!
//! The allocator counts requested bytes (what the RIB asks for, not the
//! malloc chunk overhead on top). It is installed for the whole test binary
//! but only this ignored test reads it.

use super::*;
use crate::wire::attr::Origin;
use crate::wire::nlri::Nlri;
use crate::wire::Update;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only
// a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const ROUTES: usize = 1 << 20;
const ATTR_SETS: usize = 1000;
const PER_UPDATE: usize = 100;

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn bytes_per_route_one_peer_full_table() {
    let per = table_bytes_per_route(ROUTES, false);
    assert!(per < 100.0, "{per:.1} bytes/route");
}

/// The IPv6 table of petrel-bench's `v6` scenario: 200k /48s.
#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn bytes_per_route_one_peer_ipv6_table() {
    let per = table_bytes_per_route(200_000, true);
    assert!(per < 150.0, "{per:.1} bytes/route");
}

/// Feeds `routes` prefixes from one eBGP peer in UPDATEs of
/// [`PER_UPDATE`], prints what the RIB holds per route, and returns the
/// table's (Adj-RIB-In + Loc-RIB) bytes per route.
fn table_bytes_per_route(routes: usize, v6: bool) -> f64 {
    let family = if v6 {
        Family::IPV6_UNICAST
    } else {
        Family::IPV4_UNICAST
    };
    let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1)));
    let peer = rib
        .add_peer(PeerConfig::new([192, 0, 2, 2].into(), 65001))
        .unwrap();
    rib.peer_up(
        peer,
        Session {
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            codec: CodecContext::four_octet(),
            families: vec![family],
            local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            local_v6: v6.then(|| "2001:db8::1".parse().unwrap()),
            llgr: false,
        },
    );
    let before = live();
    let started = std::time::Instant::now();
    let mut sent = 0;
    for (n, chunk) in (0..routes)
        .collect::<Vec<_>>()
        .chunks(PER_UPDATE)
        .enumerate()
    {
        let set = (n % ATTR_SETS) as u32;
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(&[
                65001,
                65100 + set,
                65200 + set % 7,
            ])),
            next_hop: (!v6).then(|| Ipv4Addr::new(192, 0, 2, 2)),
            med: Some(set),
            ..Default::default()
        };
        // /24s from 16.0.0.0 upwards, or /48s from 2a00::/16.
        let prefixes: Vec<Prefix> = chunk
            .iter()
            .map(|&i| {
                if v6 {
                    let a = (0x2a00u128 << 112) | ((i as u128) << 80);
                    Prefix::new(std::net::Ipv6Addr::from(a).into(), 48)
                } else {
                    Prefix::new(Ipv4Addr::from((16u32 << 24) + ((i as u32) << 8)).into(), 24)
                }
            })
            .collect::<Option<_>>()
            .unwrap();
        let mut u = Update::new(attrs);
        if v6 {
            u.mp_reach = Some(crate::wire::attr::MpReach {
                family,
                next_hop: crate::wire::attr::mp::NextHop::V6 {
                    global: "2001:db8::2".parse().unwrap(),
                    link_local: None,
                },
                nlri: Nlri::from_prefixes(family, &prefixes),
            });
        } else {
            u.nlri = Nlri::from_prefixes(family, &prefixes);
        }
        sent += rib.receive(peer, &u).changes.len();
    }
    assert_eq!(sent, routes);
    let elapsed = started.elapsed();
    let total = live() - before;
    // Take the update group (its Adj-RIB-Out) away to see the table alone.
    rib.leave_group(peer);
    let table = live() - before;
    let per = |b: isize| b as f64 / routes as f64;
    println!(
        "{routes} {} routes, {} attribute sets interned: {:.1} bytes/route for Adj-RIB-In + \
         Loc-RIB, {:.1} with one update group's Adj-RIB-Out (sizes: Path {} B, Prefix {} B, \
         AttrSet {} B, LocRibChange {} B); received, selected and exported in {elapsed:?}",
        if v6 { "IPv6" } else { "IPv4" },
        rib.attr_sets(),
        per(table),
        per(total),
        std::mem::size_of::<loc::Path>(),
        std::mem::size_of::<Prefix>(),
        std::mem::size_of::<AttrSet>(),
        std::mem::size_of::<LocRibChange>(),
    );
    assert!(rib.attr_sets() <= 2 * ATTR_SETS + 10);
    per(table)
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn bytes_per_path_of_an_add_path_group() {
    // The table of the test above, from one peer; then a peer that
    // receives every path (RFC 7911) joins: its group records what it sent.
    let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1)));
    let session = |id: u8| Session {
        router_id: Ipv4Addr::new(10, 0, 0, id),
        codec: CodecContext::four_octet(),
        families: vec![Family::IPV4_UNICAST],
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        local_v6: None,
        llgr: false,
    };
    let peer = rib
        .add_peer(PeerConfig::new([192, 0, 2, 2].into(), 65001))
        .unwrap();
    rib.peer_up(peer, session(2));
    for (n, chunk) in (0..ROUTES)
        .collect::<Vec<_>>()
        .chunks(PER_UPDATE)
        .enumerate()
    {
        let set = (n % ATTR_SETS) as u32;
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(&[65001, 65100 + set])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
            ..Default::default()
        };
        let prefixes: Vec<Prefix> = chunk
            .iter()
            .map(|&i| Prefix::new(Ipv4Addr::from((16u32 << 24) + ((i as u32) << 8)).into(), 24))
            .collect::<Option<_>>()
            .unwrap();
        let mut u = Update::new(attrs);
        u.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, &prefixes);
        drop(rib.receive(peer, &u));
    }
    let mut cfg = PeerConfig::new([192, 0, 2, 3].into(), 65003);
    cfg.add_path.send = vec![(Family::IPV4_UNICAST, SendMode::All)];
    let rx = rib.add_peer(cfg).unwrap();
    let before = live();
    let mut s = session(3);
    s.codec.add_path_tx.insert(Family::IPV4_UNICAST);
    let started = std::time::Instant::now();
    let out = rib.peer_up(rx, s);
    let elapsed = started.elapsed();
    let messages = out.messages.len();
    drop(out);
    let group = live() - before;
    rib.leave_group(rx);
    println!(
        "an ADD-PATH group (send all) over {ROUTES} single-path prefixes: {:.1} bytes/path \
         (SentPath {} B); built and {messages} UPDATEs encoded in {elapsed:?}; {} bytes left \
         once the group is gone",
        group as f64 / ROUTES as f64,
        std::mem::size_of::<add_path::SentPath>(),
        live() - before,
    );
}
