//! The cluster's BGP records drive every petreld live: a peer added in the
//! datastore for the nodes a selector picks comes up on those nodes only,
//! relabelling a node moves it, service ranges are advertised by every
//! node, turning the mesh off removes the node-to-node sessions, and none
//! of it resets a session it does not concern. Real etcd, real FRR (ToR)
//! and BIRD (the extra router), real petrelds in namespaces.

use anyhow::{ensure, Result};
use petrel_tests::lab::cluster::{Cluster, Options, SPARE_ADDR};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::topo::{self, Kind, NeighborSpec, PeerSpec};
use petrel_tests::lab::{self, wait_until, Lab};

const EXT_AS: u32 = 65010;
const EXT_PREFIX: &str = "198.51.100.0/24";
const SERVICE_RANGE: &str = "10.96.0.0/12";
const LOCAL_SERVICE: &str = "203.0.113.80/32";

fn ctl(c: &Cluster, args: &[&str]) -> Result<String> {
    let bin = petrel_tests::bin("petrelctl")?;
    let mut a = vec!["--etcd-endpoints", c.etcd.endpoint()];
    a.extend_from_slice(args);
    c.tor_ns.exec(&bin.to_string_lossy(), &a)
}

fn has_peer(c: &Cluster, node: usize, addr: &str) -> Result<bool> {
    Ok(c.nodes[node]
        .petreld
        .peers()?
        .iter()
        .any(|p| p.address == addr))
}

#[test]
fn cluster_records_apply_live_and_touch_nothing_else() -> Result<()> {
    let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    programs.extend(Kind::Frr.programs());
    programs.extend(Kind::Bird.programs());
    if !lab::require_lab(&programs) {
        return Ok(());
    }
    let c = Cluster::up(
        Lab::new("records")?,
        Options {
            nodes: 2,
            pods_per_node: 0,
            ..Options::default()
        },
    )?;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);

    // The mesh came from the datastore, dialled by the lower address only.
    let detail = n2.petreld.ctl_json(&["show", "peer", &n1.address])?;
    ensure!(detail["source"] == "cluster", "{detail}");
    ensure!(
        detail["passive"] == true,
        "node2 > node1: node1 dials; {detail}"
    );
    let detail = n1.petreld.ctl_json(&["show", "peer", &n2.address])?;
    ensure!(detail["passive"] == false, "{detail}");
    // The ToR hears each block from its owner only: a node does not pass
    // on what it learned from the other nodes to an external peer. Each
    // family's block over that family's session.
    for n in &c.nodes {
        for (block, via) in n.blocks() {
            let from = c.tor.routes_from(via)?;
            let prefixes: Vec<&str> = from.iter().map(|r| r.prefix.as_str()).collect();
            ensure!(
                prefixes == [block],
                "the ToR has {prefixes:?} from {via} ({}), want only its block {block}",
                n.name,
            );
        }
    }
    let nodes = ctl(&c, &["node", "list", "--json"])?;
    for a in n1.addresses().into_iter().chain(n2.addresses()) {
        ensure!(
            nodes.contains(a),
            "both nodes registered with their addresses: {a} missing from {nodes}"
        );
    }

    // An extra router for the nodes labelled rack=b.
    let ext_ns = c.lab.netns("ext")?;
    c.attach(&ext_ns, "ext", SPARE_ADDR)?;
    let mut spec = PeerSpec::new(SPARE_ADDR, EXT_AS);
    for n in &c.nodes {
        let mut nb = NeighborSpec::new(&n.address, n.petreld.config().asn, SPARE_ADDR);
        nb.passive = true;
        spec.neighbors.push(nb);
    }
    spec.originate(EXT_PREFIX, &[], &[]);
    let ext = topo::start(Kind::Bird, &c.lab, &ext_ns, &spec)?;
    let before = c.uptimes()?;
    ensure!(before.up.len() >= 4, "mesh and ToR sessions up: {before:?}");

    ctl(&c, &["node", "label", "node2", "rack=b"])?;
    ctl(
        &c,
        &[
            "bgp",
            "peer",
            "add",
            "ext",
            "--address",
            SPARE_ADDR,
            "--asn",
            &EXT_AS.to_string(),
            "--node-selector",
            "rack == 'b'",
            "--hold-time",
            "9",
        ],
    )?;
    n2.petreld.wait_established(SPARE_ADDR)?;
    ext.wait_established(&n2.address)?;
    ensure!(
        !has_peer(&c, 0, SPARE_ADDR)?,
        "node1 is not rack=b and must not peer with the extra router"
    );
    // node2 learned the extra router's prefix; node1 got it over the mesh.
    wait_until(
        "the extra router's prefix at node1",
        &[ext.daemon()],
        || Ok(lab::cluster::kernel_route(&n1.ns, EXT_PREFIX)?.map(drop)),
    )?;
    c.no_reset(&before, &[])?;

    // Relabelled: the selector no longer picks node2.
    ctl(&c, &["node", "label", "node2", "rack=c"])?;
    wait_until("the extra peer gone from node2", &[], || {
        Ok((!has_peer(&c, 1, SPARE_ADDR)?).then_some(()))
    })?;
    c.no_reset(&before, &[])?;

    // Service ranges: every node advertises them to the ToR.
    ctl(
        &c,
        &["bgp", "config", "--service-cluster-ips", SERVICE_RANGE],
    )?;
    for n in &c.nodes {
        wait_until(
            &format!("{SERVICE_RANGE} from {} at the ToR", n.name),
            &[c.tor.daemon()],
            || {
                Ok(c.tor
                    .routes_from(&n.address)?
                    .iter()
                    .any(|r| r.prefix == SERVICE_RANGE)
                    .then_some(()))
            },
        )?;
    }
    // A local-only service with its endpoint on node2: advertised by node2
    // alone, and each node's `show services` says why.
    ctl(
        &c,
        &[
            "bgp",
            "service",
            "add",
            "web",
            "--address",
            LOCAL_SERVICE,
            "--local-only",
            "--endpoint-node",
            &n2.name,
        ],
    )?;
    wait_until(
        &format!("{LOCAL_SERVICE} from {} at the ToR", n2.name),
        &[c.tor.daemon()],
        || {
            Ok(c.tor
                .routes_from(&n2.address)?
                .iter()
                .any(|r| r.prefix == LOCAL_SERVICE)
                .then_some(()))
        },
    )?;
    ensure!(
        !c.tor
            .routes_from(&n1.address)?
            .iter()
            .any(|r| r.prefix == LOCAL_SERVICE),
        "node1 has no endpoint of the local-only service but advertises it"
    );
    let row = |n: &petrel_tests::lab::cluster::Node| -> Result<serde_json::Value> {
        let v = n.petreld.ctl_json(&["show", "services"])?;
        v["services"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["address"] == LOCAL_SERVICE).cloned())
            .ok_or_else(|| anyhow::anyhow!("no row for {LOCAL_SERVICE} in {v}"))
    };
    let (r1, r2) = (row(n1)?, row(n2)?);
    ensure!(r2["advertised"] == true, "{r2}");
    ensure!(
        r1["advertised"] == false && r1["why"].as_str().unwrap_or("").contains(&n2.name),
        "node1 should say the endpoint is on node2: {r1}"
    );
    ctl(&c, &["bgp", "service", "delete", "web"])?;

    ctl(&c, &["bgp", "config", "--service-cluster-ips", ""])?;
    wait_until("the service range withdrawn", &[c.tor.daemon()], || {
        let any = c.nodes.iter().try_fold(false, |acc, n| {
            Ok::<_, anyhow::Error>(
                acc || c
                    .tor
                    .routes_from(&n.address)?
                    .iter()
                    .any(|r| r.prefix == SERVICE_RANGE),
            )
        })?;
        Ok((!any).then_some(()))
    })?;

    // Mesh off: the node-to-node sessions go (both families), the ToR's
    // stay.
    ctl(&c, &["bgp", "config", "--mesh", "off"])?;
    let mesh: Vec<(&str, &str)> = n2
        .addresses()
        .into_iter()
        .map(|a| ("node1", a))
        .chain(n1.addresses().into_iter().map(|a| ("node2", a)))
        .collect();
    wait_until("the mesh sessions removed", &[], || {
        for (node, addr) in &mesh {
            let i = if *node == "node1" { 0 } else { 1 };
            if has_peer(&c, i, addr)? {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    for tor in c.tor_addresses() {
        ensure!(has_peer(&c, 0, tor)? && has_peer(&c, 1, tor)?);
    }
    c.no_reset(&before, &mesh)?;
    let blocks = n1.petreld.ctl_json(&["show", "blocks"])?;
    ensure!(
        blocks["datastore_ok"] == true
            && blocks["blocks"]
                .as_array()
                .is_some_and(|b| b.iter().any(|r| r["kind"] == "block")),
        "node1 shows its block: {blocks}"
    );
    // A node record deleted behind petreld's back is written again.
    let etcdctl = format!(
        "ETCDCTL_API=3 etcdctl --endpoints {} del /petrel/ipam/v1/nodes/node2",
        c.etcd.endpoint()
    );
    let deleted = c.tor_ns.sh(&etcdctl)?;
    ensure!(deleted.trim() == "1", "etcdctl del: {deleted:?}");
    wait_until("node2 registered again", &[], || {
        let nodes = ctl(&c, &["node", "list", "--json"])?;
        Ok(nodes.contains(&n2.address).then_some(()))
    })?;
    drop(ext);
    Ok(())
}
