//! Every MRT dump in ../shared/data decodes with zero errors, its counts
//! match those of two independent decoders (bgpdump and mrtparse, recorded in
//! reference/counts.mrtparse-2.2.0.jsonl), and petrel's bgpdump-format output
//! equals the recorded `bgpdump -m` output line for line. (The live
//! comparison against Debian's bgpdump binary is in daemon/tests/mrt_cli.rs.)

use flate2::read::GzDecoder;
use petrel_bgp::mrt::summary::summarize;
use petrel_bgp::mrt::{bgpdump, open, MrtError, PeerIndexTable, Record};
use petrel_tests::data;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;

const FILES: &[&str] = &[
    "ris-rrc21.updates.20160811.1600.gz",
    "pch.updates-et.20151023.0201.gz",
    "routeviews-jinx.updates.20150401.0000.bz2",
    "routeviews2.rib.20140523.0600.firstMB.bz2",
    "routeviews2.rib.20140523.0600.firstMB.complete-records.mrt.bz2",
    "routeviews6.rib6.20151101.0600.firstMB.bz2",
    "routeviews6.rib6.20151101.0600.firstMB.complete-records.mrt.bz2",
];

fn reference_counts(dir: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(dir.join("reference/counts.mrtparse-2.2.0.jsonl")).expect("counts");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[test]
fn counts_match_the_reference_decoders() {
    let Some(dir) = data() else { return };
    for r in reference_counts(&dir) {
        let file = r["file"].as_str().unwrap();
        let s = summarize(file, open(&dir.join(file)).unwrap());
        assert_eq!(s.error_count(), 0, "{file}: {:?}", s.errors);
        assert!(s.rfc7606.is_empty(), "{file}: {:?}", s.rfc7606);
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        assert_eq!(s.records, n("records"), "{file} records");
        assert_eq!(s.announced_v4, n("announced_v4"), "{file} announced_v4");
        assert_eq!(s.announced_mp, n("announced_mp"), "{file} announced_mp");
        assert_eq!(s.withdrawn_v4, n("withdrawn_v4"), "{file} withdrawn_v4");
        assert_eq!(s.withdrawn_mp, n("withdrawn_mp"), "{file} withdrawn_mp");
        assert_eq!(s.rib_entries, n("rib_entries"), "{file} rib_entries");
        assert_eq!(s.rib_prefix_records, n("rib_prefix_records"), "{file}");
        assert_eq!(s.peer_index_peers, n("peer_index_peers"), "{file}");
        for (k, key) in [
            ("distinct_announced_prefixes", s.distinct_announced_prefixes),
            ("distinct_withdrawn_prefixes", s.distinct_withdrawn_prefixes),
            ("distinct_rib_prefixes", s.distinct_rib_prefixes),
        ] {
            if r.get(k).is_some() {
                assert_eq!(key, n(k), "{file} {k}");
            }
        }
        let types: std::collections::BTreeMap<String, u64> = r["mrt_types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(s.mrt_types, types, "{file}");
        if let Some(m) = r.get("bgp_msg_types").and_then(Value::as_object) {
            let m: std::collections::BTreeMap<String, u64> = m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect();
            assert_eq!(s.bgp_msg_types, m, "{file}");
        }
        // The truncated streams are reported, never fatal.
        assert_eq!(
            s.truncated.is_some(),
            r.get("truncated_stream").is_some(),
            "{file}: {:?}",
            s.truncated
        );
    }
}

/// Formats a whole file as `bgpdump -m` would.
pub fn petrel_lines(path: &Path) -> Vec<String> {
    let mut peers: Option<PeerIndexTable> = None;
    let mut text = String::new();
    for item in open(path).unwrap() {
        let raw = match item {
            Ok(r) => r,
            Err(MrtError::Truncated { .. } | MrtError::Io { .. }) => break,
            Err(e) => panic!("{e}"),
        };
        match Record::parse(&raw).unwrap() {
            Record::PeerIndexTable(t) => peers = Some(t),
            rec => bgpdump::format_record(&raw, &rec, peers.as_ref(), &mut text),
        }
    }
    text.lines().map(str::to_string).collect()
}

#[test]
fn bgpdump_format_equals_recorded_bgpdump_output() {
    let Some(dir) = data() else { return };
    for file in FILES {
        let reference = dir.join(format!(
            "reference/{}.bgpdump-m.txt.gz",
            file.replace(".complete-records.mrt", "")
        ));
        let expected: Vec<String> =
            BufReader::new(GzDecoder::new(std::fs::File::open(&reference).unwrap()))
                .lines()
                .map(Result::unwrap)
                .collect();
        let ours = petrel_lines(&dir.join(file));
        let mismatch = ours.iter().zip(&expected).position(|(a, b)| a != b);
        if let Some(i) = mismatch {
            panic!(
                "{file} line {}:\n petrel:   {}\n bgpdump:  {}",
                i + 1,
                ours[i],
                expected[i]
            );
        }
        assert_eq!(ours.len(), expected.len(), "{file}: line counts differ");
    }
}
