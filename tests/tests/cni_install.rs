//! `petrelctl cni install` as an operator runs it, then the installed
//! configuration list used as a runtime uses it: Debian's real bridge
//! plugin from the bin dir it filled, delegating to the petrel-ipam it
//! copied there, against the lab's real etcd. A second install changes
//! nothing.

use anyhow::{anyhow, ensure, Context, Result};
use petrel_tests::lab::cluster::{result_address, Cluster, Options};
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{self, Lab};
use serde_json::Value;
use std::io::Write;
use std::process::Stdio;

#[test]
fn installed_conflist_gives_a_pod_an_address_through_the_real_bridge_plugin() -> Result<()> {
    let mut programs = vec![
        "etcd",
        "etcdctl",
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/portmap",
    ];
    programs.extend(Kind::Frr.programs());
    if !lab::require_lab(&programs) {
        return Ok(());
    }
    let c = Cluster::up(
        Lab::new("cniinst")?,
        Options {
            nodes: 1,
            pods_per_node: 0,
            ..Options::default()
        },
    )?;
    let n = &c.nodes[0];
    let dir = c.lab.subdir("installed")?;
    let (conf_dir, bin_dir) = (dir.join("net.d"), dir.join("bin"));
    let petrelctl = petrel_tests::bin("petrelctl")?;
    let from = petrelctl
        .parent()
        .ok_or_else(|| anyhow!("petrelctl has no folder"))?;
    let install = || {
        n.ns.exec(
            &petrelctl.to_string_lossy(),
            &[
                "--etcd-endpoints",
                c.etcd.endpoint(),
                "cni",
                "install",
                "--conf-dir",
                &conf_dir.to_string_lossy(),
                "--bin-dir",
                &bin_dir.to_string_lossy(),
                "--node-name",
                &n.name,
                "--from",
                &from.to_string_lossy(),
                // The lab is dual-stack.
                "--ipv6",
            ],
        )
    };
    let first = install()?;
    ensure!(first.contains("10-petrel.conflist"), "{first}");
    for b in ["petrel-ipam", "petrel-ipam-direct", "bridge", "portmap"] {
        ensure!(bin_dir.join(b).is_file(), "{b} not installed: {first}");
    }
    let again = install()?;
    ensure!(again.contains("nothing changed"), "second install: {again}");

    // The runtime's view: each plugin of the list gets the list's name and
    // version with its own config; the first one makes the pod's link.
    let list: Value = serde_json::from_slice(&std::fs::read(conf_dir.join("10-petrel.conflist"))?)?;
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    let pod = c.lab.netns("installed-pod")?;
    let mut child =
        n.ns.command(&bin_dir.join("bridge").to_string_lossy())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "installed-pod")
            .env("CNI_NETNS", format!("/run/netns/{}", pod.name()))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", bin_dir.to_string_lossy().to_string())
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=installed-pod",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run the installed bridge plugin")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "ADD through the installed list failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let res: Value = serde_json::from_str(&stdout)?;
    // One address per family, each in the node's block of that family.
    let blocks = n.blocks();
    ensure!(blocks.len() == 2, "a dual-stack lab: {blocks:?}");
    for (block, _) in blocks {
        let v6 = block.contains(':');
        let addr = result_address(&res, v6)
            .ok_or_else(|| anyhow!("no IPv{} address in {res}", if v6 { 6 } else { 4 }))?;
        ensure!(
            in_block(&addr, block)?,
            "{addr} is not in {}'s block {block}",
            n.name
        );
    }
    Ok(())
}

/// Whether `addr` is inside `block` (CIDR), either family.
fn in_block(addr: &str, block: &str) -> Result<bool> {
    let bits = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        std::net::IpAddr::V6(v) => (u128::from(v), 128),
    };
    let (net, len) = block
        .split_once('/')
        .ok_or_else(|| anyhow!("block {block}"))?;
    let ((a, wa), (b, wb)) = (bits(addr.parse()?), bits(net.parse()?));
    let len: u32 = len.parse()?;
    let shift = wb - len;
    Ok(wa == wb && a.checked_shr(shift) == b.checked_shr(shift))
}
