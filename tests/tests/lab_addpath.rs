//! ADD-PATH (RFC 7911) from a reflector node to its clients, configured in
//! the datastore: node1 is a route reflector, node2 and node3 its clients
//! (mesh off). A local-only service has endpoints on node1 and node3, so
//! both advertise its address. Without ADD-PATH node2 hears one path (the
//! reflector's best, its own route); with `petrelctl bgp config
//! --route-reflector-add-path all` it hears both and, with `max_paths = 2`,
//! installs one kernel route through node1 and node3. Real etcd, FRR ToR,
//! petrelds in namespaces (the lab of `lab::cluster`).

use anyhow::{ensure, Result};
use petrel_tests::lab::cluster::{Cluster, Options};
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{self, fib, wait_until, Lab, Netns};

const ANYCAST: &str = "203.0.113.90/32";

fn ctl(c: &Cluster, args: &[&str]) -> Result<String> {
    let bin = petrel_tests::bin("petrelctl")?;
    let mut a = vec!["--etcd-endpoints", c.etcd.endpoint()];
    a.extend_from_slice(args);
    c.tor_ns.exec(&bin.to_string_lossy(), &a)
}

/// The gateways of the anycast address's kernel route in `ns`, sorted.
fn gateways(ns: &Netns) -> Result<Vec<String>> {
    let mut g: Vec<String> = fib::routes(ns)?
        .into_iter()
        .filter(|r| r.dst == ANYCAST)
        .flat_map(|r| r.gateways)
        .collect();
    g.sort();
    Ok(g)
}

#[test]
fn reflector_node_gives_its_clients_ecmp_routes() -> Result<()> {
    let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    programs.extend(Kind::Frr.programs());
    if !lab::require_lab(&programs)
        || !["petreld", "petrelctl", "petrel-ipam"]
            .iter()
            .all(|b| petrel_tests::have_bin(b))
    {
        return Ok(());
    }
    let c = Cluster::up(
        Lab::new("addpath-rr")?,
        Options {
            nodes: 3,
            pods_per_node: 0,
            reflector: Some(0),
            max_paths: Some(2),
            ..Options::default()
        },
    )?;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    ctl(&c, &["bgp", "config", "--mesh", "off"])?;
    wait_until("the client-to-client session gone", &[], || {
        let peers = n2.petreld.peers()?;
        Ok((!peers.iter().any(|p| p.address == n3.address)).then_some(()))
    })?;
    let endpoints = format!("{},{}", n1.name, n3.name);
    ctl(
        &c,
        &[
            "bgp",
            "service",
            "add",
            "anycast",
            "--address",
            ANYCAST,
            "--local-only",
            "--endpoint-node",
            &endpoints,
        ],
    )?;
    // One path: the reflector prefers its own route and sends only that.
    let one = vec![n1.address.clone()];
    wait_until(
        "node2's route through the reflector",
        &[n2.petreld.daemon()],
        || Ok((gateways(&n2.ns)? == one).then_some(())),
    )?;

    // ADD-PATH on: the sessions between the reflector and its clients
    // come back with the capability; node2 gets node3's path as well.
    ctl(&c, &["bgp", "config", "--route-reflector-add-path", "all"])?;
    let mut both = vec![n1.address.clone(), n3.address.clone()];
    both.sort();
    wait_until(
        "node2's ECMP route through node1 and node3",
        &[
            n1.petreld.daemon(),
            n2.petreld.daemon(),
            n3.petreld.daemon(),
        ],
        || Ok((gateways(&n2.ns)? == both).then_some(())),
    )?;
    let to_client = n1.petreld.ctl_json(&["show", "peer", &n2.address])?;
    ensure!(
        to_client["add_path"] == "send all ipv4-unicast",
        "{to_client}"
    );
    let to_rr = n2.petreld.ctl_json(&["show", "peer", &n1.address])?;
    ensure!(to_rr["add_path"] == "receive ipv4-unicast", "{to_rr}");
    // node2 holds two paths for the address, both from the reflector.
    let paths: Vec<_> = n2
        .petreld
        .received(&n1.address)?
        .into_iter()
        .filter(|r| r.prefix == ANYCAST)
        .collect();
    ensure!(paths.len() == 2, "{paths:?}");

    // node3's endpoint goes: its path is withdrawn, one next hop is left.
    ctl(
        &c,
        &[
            "bgp",
            "service",
            "add",
            "anycast",
            "--address",
            ANYCAST,
            "--local-only",
            "--endpoint-node",
            &n1.name,
        ],
    )?;
    wait_until(
        "node2's route back to one next hop",
        &[n2.petreld.daemon()],
        || Ok((gateways(&n2.ns)? == one).then_some(())),
    )?;
    Ok(())
}
