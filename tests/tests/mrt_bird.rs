//! A TABLE_DUMP_V2 RIB dump written by BIRD 2 (`protocol mrt`), made here:
//! petrel's `bgpdump -m` lines must equal bgpdump's, every field of every
//! entry (issue 16: petrel printed IGP, no next hop and LOCAL_PREF 0 for
//! BIRD's entries, and TABLE_DUMP2 for its ADD-PATH ones).
//!
//! Namespace `a` (BIRD, AS 4200000001) sends its static routes, with varied
//! attributes and two paths for one prefix, to namespace `b` (BIRD, AS
//! 4200000002) over two sessions: one over IPv4 with ADD-PATH (RFC 7911), so
//! `b` dumps those routes as RIB_*_ADDPATH entries (RFC 8050 §4), and one
//! over IPv6 without, carrying IPv4 routes with IPv6 next hops (RFC 8950).
//! `b` has static routes of its own, which BIRD dumps with no attributes or
//! with attributes it writes with a zero flags octet.

use anyhow::{ensure, Context, Result};
use petrel_bgp::mrt::summary::summarize;
use petrel_tests::lab::bird::Bird;
use petrel_tests::lab::topo::View;
use petrel_tests::lab::{require_lab, wait_until, Lab};
use petrel_tests::mrt::{bgpdump_lines, first_difference, petrel_lines};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const A: &str = r#"
log stderr all;
router id 10.99.1.1;
protocol device {}
protocol static paths1 { ipv4;
  route 10.201.0.0/24 blackhole;
  route 10.201.1.0/24 blackhole { bgp_origin = ORIGIN_INCOMPLETE; bgp_med = 7;
    bgp_community.add((64512,1)); bgp_community.add((65535,65281)); };
  route 10.201.2.0/24 blackhole { bgp_origin = ORIGIN_EGP;
    bgp_path.prepend(4200000009); bgp_path.prepend(4200000008);
    bgp_large_community.add((1,2,3)); };
}
# A second path for 10.201.0.0/24: ADD-PATH sends both.
protocol static paths2 { ipv4;
  route 10.201.0.0/24 blackhole { bgp_med = 20; bgp_community.add((64512,2)); };
}
protocol static paths6 { ipv6;
  route fd01::/48 blackhole;
  route fd01:1::/48 blackhole { bgp_origin = ORIGIN_INCOMPLETE; bgp_community.add((64512,3)); };
}
protocol bgp b_addpath { local 10.99.1.1 as 4200000001; neighbor 10.99.1.2 as 4200000002;
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  ipv4 { import none; export all; add paths tx; };
  ipv6 { import none; export all; add paths tx; next hop address fd99::1; };
}
protocol bgp b_v6 { local fd99::1 as 4200000001; neighbor fd99::2 as 4200000002;
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  ipv4 { import none; export all; extended next hop on; };
  ipv6 { import none; export all; };
}
"#;

fn b_config(dumps: &Path) -> String {
    format!(
        r#"
log stderr all;
router id 10.99.1.2;
protocol device {{}}
protocol static own4 {{ ipv4;
  route 10.202.0.0/24 blackhole;
  route 10.202.1.0/24 blackhole {{ bgp_origin = ORIGIN_INCOMPLETE; bgp_local_pref = 150;
    bgp_med = 9; bgp_community.add((65535,65281)); bgp_path.prepend(4200000002); }};
  route 10.202.2.0/24 blackhole {{ bgp_next_hop = 10.99.1.7; }};
}}
protocol static own6 {{ ipv6;
  route fd02::/48 blackhole;
  route fd02:1::/48 blackhole {{ bgp_origin = ORIGIN_EGP; bgp_local_pref = 50;
    bgp_next_hop = ::ffff:193.0.0.56; }};
}}
protocol bgp a_addpath {{ local 10.99.1.2 as 4200000002; neighbor 10.99.1.1 as 4200000001;
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  ipv4 {{ import all; export none; add paths rx; }};
  ipv6 {{ import all; export none; add paths rx; }};
}}
protocol bgp a_v6 {{ local fd99::2 as 4200000002; neighbor fd99::1 as 4200000001;
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  ipv4 {{ import all; export none; extended next hop on; }};
  ipv6 {{ import all; export none; }};
}}
protocol mrt dump4 {{ table "master4"; filename "{d}/rib4-%Y%m%d%H%M%S.mrt"; period 1; }}
protocol mrt dump6 {{ table "master6"; filename "{d}/rib6-%Y%m%d%H%M%S.mrt"; period 1; }}
"#,
        d = dumps.display()
    )
}

/// `routes of networks` from `birdc show route count table T`.
fn route_count(bird: &Bird, table: &str) -> Result<(u32, u32)> {
    let out = bird.birdc(&format!("show route count table {table}"))?;
    let line = out
        .lines()
        .find(|l| l.contains(&format!("in table {table}")))
        .with_context(|| format!("no count for {table}: {out}"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    // "10 of 10 routes for 6 networks in table master4"
    Ok((w[2].parse()?, w[5].parse()?))
}

fn dumps(dir: &Path, family: &str) -> Result<BTreeSet<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(family))
        })
        .collect())
}

/// A dump BIRD finished after the tables were complete: the first file
/// started after `before`, once a later one exists.
fn finished_dump(
    bird: &Bird,
    dir: &Path,
    family: &str,
    before: &BTreeSet<PathBuf>,
) -> Result<PathBuf> {
    wait_until(
        &format!("a finished {family} dump"),
        &[bird.daemon()],
        || {
            let new: Vec<PathBuf> = dumps(dir, family)?.difference(before).cloned().collect();
            Ok((new.len() >= 2).then(|| new[0].clone()))
        },
    )
}

#[test]
fn bird_rib_dump_equals_bgpdump() -> Result<()> {
    if !require_lab(&["bird", "birdc", "bgpdump"]) {
        return Ok(());
    }
    let lab = Lab::new("mrt-bird")?;
    let (a, b) = (lab.netns("a")?, lab.netns("b")?);
    lab.link(
        &a,
        &["10.99.1.1/24", "fd99::1/64"],
        &b,
        &["10.99.1.2/24", "fd99::2/64"],
    )?;
    let dir = lab.subdir("dumps")?;
    let bird_a = Bird::start(&lab, &a, A)?;
    let bird_b = Bird::start(&lab, &b, &b_config(&dir))?;
    for proto in ["a_addpath", "a_v6"] {
        bird_b.wait_established(proto)?;
    }
    // master4: 3 own + 4 paths over ADD-PATH + 3 best paths over IPv6, 6
    // networks; master6: 2 own + 2 + 2, 4 networks.
    for (table, want) in [("master4", (10, 6)), ("master6", (6, 4))] {
        wait_until(
            &format!("all routes in {table}"),
            &[bird_a.daemon(), bird_b.daemon()],
            || Ok((route_count(&bird_b, table)? == want).then_some(())),
        )?;
    }
    let (before4, before6) = (dumps(&dir, "rib4")?, dumps(&dir, "rib6")?);
    let files = [
        finished_dump(&bird_b, &dir, "rib4", &before4)?,
        finished_dump(&bird_b, &dir, "rib6", &before6)?,
    ];

    let mut all = Vec::new();
    for f in &files {
        let s = summarize("bird", petrel_bgp::mrt::open(f)?);
        ensure!(s.error_count() == 0, "{}: {:?}", f.display(), s.errors);
        ensure!(s.rfc7606.is_empty(), "{}: {:?}", f.display(), s.rfc7606);
        let (ours, theirs) = (petrel_lines(f)?, bgpdump_lines(f)?);
        if let Some(d) = first_difference(&ours, &theirs) {
            anyhow::bail!("{} {d}\nbgpdump:\n{}", f.display(), theirs.join("\n"));
        }
        all.extend(ours);
    }
    // The dump holds what this test is about: 16 routes, ADD-PATH entries
    // with their path ids, BIRD's attribute-less and zero-flag entries.
    ensure!(all.len() == 16, "{} lines:\n{}", all.len(), all.join("\n"));
    let count = |pat: &str| all.iter().filter(|l| l.contains(pat)).count();
    ensure!(count("TABLE_DUMP2_AP|") == 6, "{}", all.join("\n"));
    let field = |prefix: &str, n: usize| -> BTreeSet<String> {
        all.iter()
            .filter(|l| l.split('|').nth(5) == Some(prefix))
            .map(|l| l.split('|').nth(n).unwrap_or_default().to_string())
            .collect()
    };
    // Two paths of 10.201.0.0/24 over ADD-PATH, with distinct ids.
    ensure!(
        all.iter()
            .filter(|l| l.starts_with("TABLE_DUMP2_AP") && l.contains("|10.201.0.0/24|"))
            .map(|l| l.split('|').nth(6))
            .collect::<BTreeSet<_>>()
            .len()
            == 2,
        "{}",
        all.join("\n")
    );
    ensure!(
        all.iter()
            .any(|l| l
                .contains("|10.202.1.0/24|4200000002|INCOMPLETE|255.255.255.255|150|9|no-export|")),
        "{}",
        all.join("\n")
    );
    ensure!(field("10.202.0.0/24", 7) == ["INCOMPLETE".to_string()].into());
    ensure!(field("fd02:1::/48", 8) == ["::ffff:193.0.0.56".to_string()].into());
    ensure!(count("|4200000001|INCOMPLETE|10.99.1.1|100|0|64512:1 no-export|") == 1);
    Ok(())
}
