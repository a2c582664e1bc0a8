//! Decoding every UPDATE of the real update dumps, petrel against
//! bgpkit-parser's BGP message parser as the yardstick (issue 2 §5).
//!
//! The messages are read from the MRT files once, as whole BGP messages
//! (header included) with the 4-octet-AS flag of their record subtype, so
//! both decoders see the same octets and nothing else is timed. "Decoding"
//! means the whole message: both decoders parse the attributes, and every
//! announced and withdrawn prefix (IPv4 fields and MP_REACH / MP_UNREACH) is
//! materialised and folded into a checksum, with the AS path length, ORIGIN
//! and NEXT_HOP read from the attributes.
//!
//! `cargo bench -p petrel-bgp --bench decode`; set `PETREL_DATA` to use a
//! data folder other than `../shared/data`. Without the data the bench says
//! so and exits successfully.

use bgpkit_parser::models::{AsnLength, BgpMessage};
use bgpkit_parser::parser::bgp::messages::parse_bgp_message;
use bytes::Bytes;
use criterion::{black_box, Criterion, Throughput};
use petrel_bgp::mrt::{open, Record};
use petrel_bgp::wire::codec::{CodecContext, MAX_EXTENDED_MESSAGE_LEN};
use petrel_bgp::wire::{Message, Prefix};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The update dumps of ../shared/data (RIB dumps carry no BGP messages).
const DUMPS: &[&str] = &[
    "ris-rrc21.updates.20160811.1600.gz",
    "pch.updates-et.20151023.0201.gz",
    "routeviews-jinx.updates.20150401.0000.bz2",
];

struct Corpus {
    /// Whole messages and whether their session used 4-octet AS numbers.
    messages: Vec<(Bytes, bool)>,
    bytes: u64,
    prefixes: u64,
}

fn data_dir() -> PathBuf {
    std::env::var_os("PETREL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

fn load(dir: &Path) -> Corpus {
    let mut messages = Vec::new();
    for name in DUMPS {
        for raw in open(&dir.join(name)).expect("open dump").flatten() {
            if let Ok(Record::Message(m)) = Record::parse(&raw) {
                // RFC 4271 §4.1: octet 18 of the header is the type; 2 is UPDATE.
                if m.raw.get(18) == Some(&2) {
                    messages.push((m.raw.clone(), m.ctx.four_octet_as));
                }
            }
        }
    }
    let bytes = messages.iter().map(|(m, _)| m.len() as u64).sum();
    let mut c = Corpus {
        messages,
        bytes,
        prefixes: 0,
    };
    c.prefixes = petrel_pass(&c).0;
    c
}

fn fold(p: &Prefix, h: u64) -> u64 {
    let a = match p {
        Prefix::V4 { addr, .. } => u32::from(*addr) as u64,
        Prefix::V6 { addr, .. } => (u128::from(*addr) >> 64) as u64,
    };
    h.rotate_left(5) ^ a ^ p.len() as u64
}

/// petrel: decode, then walk every prefix and read the common attributes.
/// Returns (prefixes, checksum).
fn petrel_pass(c: &Corpus) -> (u64, u64) {
    // The contexts the MRT reader decodes BGP4MP messages under.
    let two = CodecContext {
        max_message_len: MAX_EXTENDED_MESSAGE_LEN,
        ..CodecContext::default()
    };
    let four = CodecContext {
        four_octet_as: true,
        ..two.clone()
    };
    let (mut n, mut h) = (0u64, 0u64);
    for (msg, as4) in &c.messages {
        let ctx = if *as4 { &four } else { &two };
        let m = Message::decode(ctx, msg);
        let Ok(Message::Update(u)) = &m else {
            continue;
        };
        for (_, e) in u.announced().chain(u.withdrawals()) {
            h = fold(&e.prefix, h);
            n += 1;
        }
        let a = &u.attrs;
        h ^= a.as_path.as_ref().map_or(0, |p| p.path_len() as u64)
            ^ a.origin.map_or(9, |o| o as u64)
            ^ a.next_hop.map_or(0, |nh| u32::from(nh) as u64);
    }
    (n, h)
}

/// bgpkit-parser: `parse_bgp_message` (which materialises every prefix),
/// then the same walk.
fn bgpkit_pass(c: &Corpus) -> (u64, u64) {
    let (mut n, mut h) = (0u64, 0u64);
    for (msg, as4) in &c.messages {
        let asn_len = if *as4 {
            AsnLength::Bits32
        } else {
            AsnLength::Bits16
        };
        let mut b = msg.clone();
        let Ok(BgpMessage::Update(u)) = parse_bgp_message(&mut b, false, &asn_len) else {
            continue;
        };
        let a = &u.attributes;
        let mp = a
            .get_reachable_nlri()
            .into_iter()
            .chain(a.get_unreachable_nlri())
            .flat_map(|n| n.prefixes.iter());
        for p in u
            .announced_prefixes
            .iter()
            .chain(&u.withdrawn_prefixes)
            .chain(mp)
        {
            let a = match p.prefix.addr() {
                std::net::IpAddr::V4(a) => u32::from(a) as u64,
                std::net::IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
            };
            h = h.rotate_left(5) ^ a ^ p.prefix.prefix_len() as u64;
            n += 1;
        }
        h ^= a.as_path().map_or(0, |p| p.route_len() as u64)
            ^ a.origin() as u64
            ^ match a.next_hop() {
                Some(std::net::IpAddr::V4(nh)) => u32::from(nh) as u64,
                _ => 0,
            };
    }
    (n, h)
}

/// Time this thread has spent on a CPU (CLOCK_THREAD_CPUTIME_ID), so that
/// time spent waiting for a core on a shared machine is not counted.
fn on_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The fastest of `passes` timed passes of each decoder, interleaved so
/// that both see the same load. On-CPU time where the kernel reports it,
/// wall time otherwise.
fn best_of(passes: usize, c: &Corpus) -> [(Duration, u64); 2] {
    let mut best = [(Duration::MAX, 0); 2];
    for _ in 0..passes {
        for (i, f) in [petrel_pass, bgpkit_pass].iter().enumerate() {
            let (t, cpu) = (Instant::now(), on_cpu());
            let n = black_box(f(c)).0;
            let took = match (cpu, on_cpu()) {
                (Some(a), Some(b)) => b - a,
                _ => t.elapsed(),
            };
            best[i] = (best[i].0.min(took), n);
        }
    }
    best
}

fn main() {
    let dir = data_dir();
    if !dir.join("SHA256SUMS").exists() {
        println!(
            "decode bench skipped: no real BGP data at {} (set PETREL_DATA)",
            dir.display()
        );
        return;
    }
    let corpus = load(&dir);
    let (bk_prefixes, _) = bgpkit_pass(&corpus);
    println!(
        "{} UPDATEs, {} prefixes (bgpkit-parser: {}), {:.2} MB",
        corpus.messages.len(),
        corpus.prefixes,
        bk_prefixes,
        corpus.bytes as f64 / 1e6
    );

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(corpus.bytes));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("petrel", |b| b.iter(|| black_box(petrel_pass(&corpus))));
    g.bench_function("bgpkit-parser", |b| {
        b.iter(|| black_box(bgpkit_pass(&corpus)))
    });
    g.finish();
    c.final_summary();

    // Criterion reports MB/s; prefixes/s and the ratio are added here.
    // DECODE_BENCH_PASSES=0 skips this (for profilers).
    let passes = std::env::var("DECODE_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if passes == 0 {
        return;
    }
    let [(tp, np), (tb, nb)] = best_of(passes, &corpus);
    let mb = corpus.bytes as f64 / 1e6;
    let clock = if on_cpu().is_some() { "on-CPU" } else { "wall" };
    println!("\n| decoder | time per pass ({clock}) | prefixes/s | MB/s |");
    println!("|---|---|---|---|");
    for (name, t, n) in [("petrel", tp, np), ("bgpkit-parser", tb, nb)] {
        let s = t.as_secs_f64();
        println!(
            "| {name} | {:.1} ms | {:.2} M | {:.1} |",
            s * 1e3,
            n as f64 / s / 1e6,
            mb / s
        );
    }
    println!(
        "petrel / bgpkit-parser: {:.2}x (fastest of {passes} interleaved passes each)",
        tb.as_secs_f64() / tp.as_secs_f64()
    );
}
