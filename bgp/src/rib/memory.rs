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
    let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1)));
    let peer = rib
        .add_peer(PeerConfig::new([192, 0, 2, 2].into(), 65001))
        .unwrap();
    rib.peer_up(
        peer,
        Session {
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            codec: CodecContext::four_octet(),
            families: vec![Family::IPV4_UNICAST],
            local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            local_v6: None,
            llgr: false,
        },
    );
    let before = live();
    let started = std::time::Instant::now();
    let mut sent = 0;
    for (n, chunk) in (0..ROUTES)
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
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
            med: Some(set),
            ..Default::default()
        };
        // /24s from 16.0.0.0 upwards.
        let prefixes: Vec<Prefix> = chunk
            .iter()
            .map(|&i| Prefix::new(Ipv4Addr::from((16u32 << 24) + ((i as u32) << 8)).into(), 24))
            .collect::<Option<_>>()
            .unwrap();
        let mut u = Update::new(attrs);
        u.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, &prefixes);
        sent += rib.receive(peer, &u).changes.len();
    }
    assert_eq!(sent, ROUTES);
    let elapsed = started.elapsed();
    let total = live() - before;
    // Take the update group (its Adj-RIB-Out) away to see the table alone.
    rib.leave_group(peer);
    let table = live() - before;
    let per = |b: isize| b as f64 / ROUTES as f64;
    println!(
        "{ROUTES} routes, {} attribute sets interned: {:.1} bytes/route for Adj-RIB-In + Loc-RIB, \
         {:.1} with one update group's Adj-RIB-Out (sizes: Path {} B, Prefix {} B, AttrSet {} B, \
         LocRibChange {} B); \
         received, selected and exported in {elapsed:?}",
        rib.attr_sets(),
        per(table),
        per(total),
        std::mem::size_of::<loc::Path>(),
        std::mem::size_of::<Prefix>(),
        std::mem::size_of::<AttrSet>(),
        std::mem::size_of::<LocRibChange>(),
    );
    assert!(rib.attr_sets() <= 2 * ATTR_SETS + 10);
    assert!(per(table) < 100.0, "{:.1} bytes/route", per(table));
}
