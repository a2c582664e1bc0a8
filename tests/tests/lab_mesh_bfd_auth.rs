//! BFD with meticulous keyed SHA1 (RFC 5880 §6.7.4) on the node mesh,
//! configured in the datastore with petrelctl: `bgp config --mesh-bfd on
//! --mesh-bfd-auth meticulous-keyed-sha1 --mesh-bfd-auth-key-id 7
//! --mesh-bfd-auth-secret-file FILE`. Every petreld reads the key from the
//! file, and every node-to-node session (both families) comes Up
//! authenticated; the record holds the file's path, never the key. Real
//! etcd, FRR ToR, petrelds in namespaces (the lab of `lab::cluster`).

use anyhow::{ensure, Result};
use petrel_tests::lab::cluster::{Cluster, Options};
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{self, wait_until, Lab};

const KEY: &str = "mesh-bfd-secret";

fn ctl(c: &Cluster, args: &[&str]) -> Result<String> {
    let bin = petrel_tests::bin("petrelctl")?;
    let mut a = vec!["--etcd-endpoints", c.etcd.endpoint()];
    a.extend_from_slice(args);
    c.tor_ns.exec(&bin.to_string_lossy(), &a)
}

#[test]
fn the_mesh_runs_authenticated_bfd_from_the_datastore() -> Result<()> {
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
        Lab::new("mesh-bfd-auth")?,
        Options {
            nodes: 3,
            pods_per_node: 0,
            ..Options::default()
        },
    )?;
    // One file for every node: the namespaces share the filesystem, as
    // the nodes of a cluster share a secret distributed to each.
    let key = c.lab.dir().join("mesh-bfd.key");
    std::fs::write(&key, format!("{KEY}\n"))?;
    let key = key.to_string_lossy().to_string();
    ctl(
        &c,
        &[
            "bgp",
            "config",
            "--mesh-bfd",
            "on",
            "--mesh-bfd-auth",
            "meticulous-keyed-sha1",
            "--mesh-bfd-auth-key-id",
            "7",
            "--mesh-bfd-auth-secret-file",
            &key,
        ],
    )?;
    let cfg = ctl(&c, &["bgp", "config", "--json"])?;
    ensure!(
        cfg.contains(&key) && !cfg.contains(KEY),
        "the record must name the file, not the key: {cfg}"
    );
    for n in &c.nodes {
        for o in c.nodes.iter().filter(|o| o.name != n.name) {
            for addr in o.session_addresses() {
                let s = wait_until(
                    &format!("{}'s authenticated BFD with {addr} Up", n.name),
                    &[n.petreld.daemon()],
                    || {
                        let s = n.petreld.bfd_session(addr)?;
                        Ok((s["state"] == "Up").then_some(s))
                    },
                )?;
                ensure!(
                    s["auth"] == "meticulous-keyed-sha1" && s["auth_failures"] == 0,
                    "{}: {s}",
                    n.name
                );
            }
        }
        let table = n.petreld.ctl(&["show", "bfd"])?;
        ensure!(!table.contains(KEY), "show bfd shows the key: {table}");
    }
    eprintln!("{}", c.nodes[0].petreld.ctl(&["show", "bfd"])?);
    Ok(())
}
