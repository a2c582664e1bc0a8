//! RFC 8950 (IPv4 NLRI with an IPv6 next hop) configured in the datastore:
//! `petrelctl bgp config --mesh-ipv6-families ipv4-unicast,ipv6-unicast`
//! for the node mesh and one ToR record, `tor6`, with `--families
//! ipv4-unicast,ipv6-unicast` (the lab's `--rfc8950`, datastore peering).
//! No IPv4 session is made; every node's IPv4 block reaches the other
//! nodes and the ToR over the IPv6 sessions and is installed in their
//! kernel FIBs with the owner's IPv6 address as the gateway (`ip route`:
//! `via inet6 ...`). Real etcd, FRR ToR, petrelds in namespaces.

use anyhow::{ensure, Result};
use petrel_tests::lab::cluster::{Cluster, Options, Peering};
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{self, Lab};

#[test]
fn ipv4_blocks_over_ipv6_sessions_from_the_datastore() -> Result<()> {
    let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    programs.extend(Kind::Frr.programs());
    if !lab::require_lab(&programs)
        || !["petreld", "petrelctl", "petrel-ipam"]
            .iter()
            .all(|b| petrel_tests::have_bin(b))
    {
        return Ok(());
    }
    // `up` waits until every session is Established, every block is in
    // every FIB by the owner's session address (its IPv6 one here, see
    // `lab::cluster::Node::blocks`) and every pod pings every other.
    let c = Cluster::up(
        Lab::new("rfc8950-ds")?,
        Options {
            nodes: 3,
            pods_per_node: 1,
            peering: Peering::Datastore,
            rfc8950: true,
            ..Options::default()
        },
    )?;
    for n in &c.nodes {
        // No IPv4 session: neither to the ToR nor in the mesh.
        let peers = n.petreld.peers()?;
        let v4: Vec<&str> = peers
            .iter()
            .map(|p| p.address.as_str())
            .filter(|a| !a.contains(':'))
            .collect();
        ensure!(v4.is_empty(), "{}: IPv4 sessions {v4:?}", n.name);
        ensure!(
            peers.len() == c.nodes.len(),
            "{}: {} sessions, want the ToR and {} nodes: {peers:?}",
            n.name,
            peers.len(),
            c.nodes.len() - 1
        );
        // The other nodes' IPv4 blocks, as the kernel shows them.
        let table = n.ns.exec("ip", &["-4", "route", "show"])?;
        eprintln!("{}:\n{table}", n.name);
        for o in c.nodes.iter().filter(|o| o.name != n.name) {
            let a6 = o.address6.as_deref().expect("a dual-stack lab");
            let line = table.lines().find(|l| l.starts_with(&o.block));
            ensure!(
                line.is_some_and(|l| l.contains(&format!("via inet6 {a6} "))),
                "{}: {}'s block {} not via inet6 {a6}:\n{table}",
                n.name,
                o.name,
                o.block
            );
        }
    }
    Ok(())
}
