//! `petrelctl pool` and `petrelctl ipam` as an operator runs them: against
//! the embedded datastore file, and against a real etcd.

use petrel_ipam::ipam::{AssignRequest, Ipam};
use petrel_ipam::store::embedded::EmbeddedStore;
use petrel_ipam::store::Op;
use petrel_ipam::testing::{etcd_binary, require, EtcdServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn petrelctl(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_petrelctl"))
        .args(args)
        .output()
        .expect("run petrelctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("petrelctl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

/// Work on the file from this process, then let petrelctl have it.
fn with_store<T>(path: &Path, f: impl FnOnce(Ipam) -> T) -> T {
    let store = EmbeddedStore::open(path, Duration::from_secs(5)).expect("open");
    f(Ipam::new(Arc::new(store)))
}

#[test]
fn pools_show_check_release_gc_on_the_embedded_store() {
    let dir = temp_dir("embedded");
    let db = dir.0.join("ipam.db");
    let ds = db.to_str().expect("utf8 path");
    let (code, out, err) = petrelctl(&[
        "pool",
        "add",
        "10.77.0.0/24",
        "--block-size",
        "28",
        "--name",
        "pods",
        "--datastore-path",
        ds,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = petrelctl(&["pool", "add", "10.77.0.128/25", "--datastore-path", ds]);
    assert_ne!(code, 0);
    assert!(err.contains("overlaps pool pods"), "{err}");
    // The datastore flags are global: before the command works as well.
    let (code, out, _) = petrelctl(&["--datastore-path", ds, "pool", "list", "--json"]);
    assert_eq!(code, 0);
    let pools: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(pools[0]["block_size"], 28);

    // Three pods on node-a, one borrowing node-b.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let addrs = with_store(&db, |ipam| {
        rt.block_on(async {
            let mut v = Vec::new();
            for i in 0..3 {
                v.extend(
                    ipam.assign(&AssignRequest::new(
                        &format!("net.c{i}.eth0"),
                        "node-a",
                        1,
                        0,
                    ))
                    .await
                    .expect("assign"),
                );
            }
            v
        })
    });
    let (code, out, _) = petrelctl(&["ipam", "show", "--json", "--datastore-path", ds]);
    assert_eq!(code, 0);
    let show: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(show["pools"][0]["in_use"], 3);
    assert_eq!(show["pools"][0]["total"], 256);
    assert_eq!(show["blocks"][0]["affinity"], "node-a");
    let (code, out, _) = petrelctl(&["ipam", "show", "--blocks", "--datastore-path", ds]);
    assert_eq!(code, 0);
    assert!(
        out.contains("node-a") && !out.contains("CIDR"),
        "blocks only: {out}"
    );

    let (code, out, _) = petrelctl(&["ipam", "check", "--datastore-path", ds]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent"));

    // A torn record: a handle pointing at nothing.
    with_store(&db, |ipam| {
        rt.block_on(async {
            let h = serde_json::json!({"handle": "ghost", "blocks": {addrs[0].block.to_string(): 1}, "updated": 0});
            ipam.store()
                .commit(vec![Op::Create { key: "/petrel/ipam/v1/handles/ghost".into(), value: h.to_string().into_bytes() }])
                .await
                .expect("write");
            let mut cfg = ipam.config().await.expect("config");
            cfg.pending_grace_secs = 0;
            ipam.set_config(&cfg).await.expect("config");
        })
    });
    let (code, out, _) = petrelctl(&["ipam", "check", "--json", "--datastore-path", ds]);
    assert_eq!(code, 3, "check exits 3 on a problem: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        report["problems"][0]["kind"],
        "handle-counts-missing-addresses"
    );
    let (code, out, err) = petrelctl(&["ipam", "gc", "--datastore-path", ds]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired 1 handle"), "{out}");
    assert_eq!(petrelctl(&["ipam", "check", "--datastore-path", ds]).0, 0);

    let ip = addrs[1].addr.to_string();
    let (code, out, _) = petrelctl(&["ipam", "release", "--ip", &ip, "--datastore-path", ds]);
    assert_eq!((code, out.trim()), (0, format!("released {ip}").as_str()));
    let (code, _, err) = petrelctl(&["ipam", "release", "--ip", &ip, "--datastore-path", ds]);
    assert_ne!(code, 0);
    assert!(err.contains("not assigned"), "{err}");

    // A dead node's addresses and blocks go with gc --dead-node.
    let (code, out, _) = petrelctl(&[
        "ipam",
        "gc",
        "--dead-node",
        "node-a",
        "--datastore-path",
        ds,
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("released 2 address(es), deleted 1 block(s)"),
        "{out}"
    );
    let (code, out, _) = petrelctl(&["pool", "disable", "pods", "--datastore-path", ds]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = petrelctl(&["pool", "delete", "pods", "--datastore-path", ds]);
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = petrelctl(&["pool", "list", "--json", "--datastore-path", ds]);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn pools_in_a_real_etcd_and_a_clear_error_without_one() {
    let (code, _, err) = petrelctl(&["ipam", "check"]);
    assert_ne!(code, 0);
    assert!(err.contains("--etcd-endpoints"), "{err}");
    if !require("etcd (Debian: etcd-server)", etcd_binary().is_some()) {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let endpoint = etcd.endpoint.clone();
    let ep = endpoint.as_str();
    let (code, out, err) = petrelctl(&["pool", "add", "fd00:77::/112", "--etcd-endpoints", ep]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = petrelctl(&["pool", "list", "--etcd-endpoints", ep]);
    assert_eq!(code, 0);
    assert!(
        out.contains("fd00:77::/112") && out.contains("/122"),
        "{out}"
    );
    assert_eq!(petrelctl(&["ipam", "check", "--etcd-endpoints", ep]).0, 0);
    drop(etcd);
    let (code, _, err) = petrelctl(&["pool", "list", "--etcd-endpoints", ep]);
    assert_ne!(code, 0);
    assert!(err.contains(ep) && err.contains("unreachable"), "{err}");
}

/// petrelctl finds the datastore in petreld's configuration file, and the
/// cluster's BGP and node records round-trip through it.
#[test]
fn config_file_datastore_and_cluster_records() {
    let dir = temp_dir("config");
    let db = dir.0.join("petrel.db");
    let conf = dir.0.join("petreld.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"n1\"\naddresses = [\"10.0.0.1/24\"]\n\n[datastore]\npath = {:?}\n",
            db
        ),
    )
    .expect("write config");
    let c = conf.to_str().expect("utf8 path");
    let run = |args: &[&str]| {
        let mut a = vec!["--config", c];
        a.extend_from_slice(args);
        petrelctl(&a)
    };
    let (code, _, err) = run(&["pool", "add", "10.78.0.0/24", "--name", "pods"]);
    assert_eq!(code, 0, "{err}");
    // The same file, named directly, holds the pool.
    let (code, out, err) = petrelctl(&["pool", "list", "--datastore-path", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.78.0.0/24"), "{out}");

    let (code, _, err) = run(&["bgp", "config", "--asn", "65100", "--mesh", "off"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&["bgp", "config", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["asn"].as_u64(), v["node_mesh"].as_bool()),
        (Some(65100), Some(false))
    );

    let (code, _, err) = run(&[
        "bgp",
        "peer",
        "add",
        "tor",
        "--address",
        "10.0.0.254",
        "--asn",
        "65000",
        "--hold-time",
        "2",
    ]);
    assert_ne!(code, 0, "hold time 2 must be refused");
    assert!(err.contains("RFC 4271 §4.2"), "{err}");
    // A policy file with a rule that does not parse is refused, naming it.
    let bad = dir.0.join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"match": {"prefix": {"cidr": "10.0.0.0/8", "op": "sideways"}}, "action": "reject"}]"#,
    )
    .unwrap();
    let (code, _, err) = run(&[
        "bgp",
        "peer",
        "add",
        "tor",
        "--address",
        "10.0.0.254",
        "--asn",
        "65000",
        "--import-policy",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "a bad policy must be refused");
    assert!(err.contains("import policy"), "{err}");
    let good = dir.0.join("import.json");
    std::fs::write(
        &good,
        r#"[{"match": {"prefix": {"cidr": "10.0.0.0/8", "op": "within", "ge": 24, "le": 32}}, "action": "reject"}]"#,
    )
    .unwrap();
    let (code, _, err) = run(&[
        "bgp",
        "peer",
        "add",
        "tor",
        "--address",
        "10.0.0.254",
        "--asn",
        "65000",
        "--node-selector",
        "rack == 'a'",
        "--import-policy",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["bgp", "peer", "list", "--json"]);
    let peers: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(peers[0]["node_selector"], "rack == 'a'");
    assert_eq!(peers[0]["import"][0]["action"], "reject");

    let (code, _, err) = run(&["node", "label", "n1", "rack=a", "zone=z1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["node", "label", "n1", "zone-"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["node", "list", "--json"]);
    let nodes: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(nodes[0]["labels"], serde_json::json!({"rack": "a"}));
    let (code, _, err) = run(&["node", "label", "n1", "nonsense"]);
    assert_ne!(code, 0);
    assert!(err.contains("KEY=VALUE"), "{err}");

    let (code, _, err) = run(&["bgp", "peer", "delete", "tor"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["bgp", "peer", "delete", "tor"]);
    assert_ne!(code, 0);
    assert!(err.contains("no peer named"), "{err}");
}
