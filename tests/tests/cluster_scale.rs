//! The scale contract of petreld's datastore driver (issue 14), on real
//! etcd and real petrelds: another node's pod churn costs a node nothing
//! (no block contents read, no full list, no derivation), while a change
//! that concerns it (its own block) reaches it as a watch event. The
//! numbers at 5,000 nodes are in docs/benchmarks.md (`petrel-scale`).

use anyhow::{ensure, Result};
use petrel_tests::lab::cluster::{Cluster, Options};
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{self, wait_until, Lab};
use std::time::Duration;

const BLOCKS_READ: &str = r#"petrel_datastore_read_bytes_total{records="blocks",via="request"}"#;
const BLOCKS_WATCHED: &str = r#"petrel_datastore_read_bytes_total{records="blocks",via="watch"}"#;
const FULL_SYNCS: &str = "petrel_cluster_full_syncs_total";
const DERIVATIONS: &str = "petrel_cluster_derivations_total";

struct Reading {
    blocks: f64,
    syncs: f64,
    derivations: f64,
}

fn reading(c: &Cluster, node: usize) -> Result<Reading> {
    let p = &c.nodes[node].petreld;
    Ok(Reading {
        blocks: p.metric(BLOCKS_READ)? + p.metric(BLOCKS_WATCHED)?,
        syncs: p.metric(FULL_SYNCS)?,
        derivations: p.metric(DERIVATIONS)?,
    })
}

#[test]
fn another_nodes_pod_churn_costs_a_node_nothing() -> Result<()> {
    let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    programs.extend(Kind::Frr.programs());
    if !lab::require_lab(&programs) {
        return Ok(());
    }
    let c = Cluster::up(
        Lab::new("scale")?,
        Options {
            nodes: 3,
            pods_per_node: 0,
            ..Options::default()
        },
    )?;
    // Settle: the start-up sync and the first derivations are done.
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<Reading> = (0..3).map(|i| reading(&c, i)).collect::<Result<_>>()?;
    for (i, r) in before.iter().enumerate() {
        ensure!(
            r.syncs == 1.0,
            "node{} listed its records {} times at start",
            i + 1,
            r.syncs
        );
    }

    // Pod churn on node3: ADD and DEL through the bridge plugin and
    // petrel-ipam, each a write of node3's block.
    let n3 = &c.nodes[2];
    let pod = c.lab.netns("churn")?;
    for i in 0..5 {
        let id = format!("churn-{i}");
        n3.cni_pod("ADD", &pod, &id, c.etcd.endpoint(), c.options.pod_mtu)?;
        n3.cni_pod("DEL", &pod, &id, c.etcd.endpoint(), c.options.pod_mtu)?;
    }
    // node3 hears of its own block's changes, by its block watch.
    wait_until("node3 to see its block change", &c.daemons(), || {
        Ok((reading(&c, 2)?.blocks > before[2].blocks).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    for (i, b) in before.iter().enumerate().take(2) {
        let now = reading(&c, i)?;
        ensure!(
            now.blocks == b.blocks,
            "node{} read {} bytes of block records during node3's churn",
            i + 1,
            now.blocks - b.blocks
        );
        ensure!(
            now.syncs == b.syncs,
            "node{} listed its records again",
            i + 1
        );
        ensure!(
            now.derivations == b.derivations,
            "node{} derived again ({} -> {}) for changes that are not its own",
            i + 1,
            b.derivations,
            now.derivations
        );
    }
    let n3_now = reading(&c, 2)?;
    ensure!(
        n3_now.syncs == before[2].syncs,
        "node3 listed its records again"
    );
    Ok(())
}
