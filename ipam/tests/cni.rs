//! The CNI plugin end to end: Debian's real `bridge` plugin delegating to
//! `petrel-ipam` for real network namespaces, against a real etcd; and the
//! commands bridge 1.1.1 does not speak (GC, STATUS) run directly.
//!
//! No IPAM service runs here (`"daemon_socket": ""`), so every invocation
//! takes the fallback: the exec'd `petrel-ipam` (the forwarder, which has
//! no datastore code) execs `petrel-ipam-direct` from its directory, which
//! goes to the datastore itself.

use petrel_ipam::ipam::Ipam;
use petrel_ipam::model::{Encapsulation, IpamConfig, Pool, PoolUse};
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::testing::{etcd_binary, is_root, require, EtcdServer};
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BRIDGE: &str = "/usr/lib/cni/bridge";

struct Outcome {
    ok: bool,
    out: Value,
    stderr: String,
}

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_petrel-ipam"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Run a CNI plugin the way a runtime does: CNI_* in the environment, the
/// config on stdin.
fn run(plugin: &Path, command: &str, cid: &str, netns: &str, conf: &[u8]) -> Outcome {
    let cni_path = format!("{}:/usr/lib/cni", plugin_dir().display());
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf)
        .expect("write config");
    let o = child.wait_with_output().expect("plugin output");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    Outcome {
        ok: o.status.success(),
        out: serde_json::from_str(&text).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

fn sh(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Namespaces and the bridge this test made, removed however it ends.
struct Cleanup {
    netns: Vec<String>,
    bridge: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn ipam_conf(version: &str, endpoint: &str, dir: &Path, plugin: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "petrelnet",
        "type": plugin,
        "bridge": format!("ptrl{}", std::process::id() % 100000),
        "isGateway": false,
        "ipMasq": false,
        "ipam": {
            "type": "petrel-ipam",
            "datastore": { "etcd_endpoints": [endpoint] },
            "node_name": "node-a",
            "assign_ipv6": true,
            // Point-to-point, as before gateways: the test of `block` is
            // bridge_holds_the_reserved_gateway below.
            "gateway": "none",
            "mtu_file": dir.join("pod-mtu"),
            "lock_file": dir.join("ipam.lock"),
            // The fallback through petrel-ipam-direct: never a petreld that
            // happens to run here.
            "daemon_socket": "",
        }
    })
}

fn addrs_of(result: &Value) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = result["ips"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_delegates_to_petrel_ipam_in_a_netns() {
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    if !require("root (network namespaces)", is_root())
        || !require("etcd (Debian: etcd-server)", etcd_binary().is_some())
        || !require(
            "the bridge plugin (Debian: containernetworking-plugins)",
            Path::new(BRIDGE).is_file(),
        )
        || !require("iproute2", has_ip)
    {
        return;
    }
    let (mut etcd, ipam) = etcd_with_pools("10.251.0.0/24", "fd51::/120").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pod-mtu"), "1400\n").expect("mtu file");
    let pid = std::process::id();
    let mut cleanup = Cleanup {
        netns: Vec::new(),
        bridge: format!("ptrl{}", pid % 100000),
    };
    let petrel = Path::new(env!("CARGO_BIN_EXE_petrel-ipam"));

    // ADD through bridge, for a CNI 1.0.0 and a 0.4.0 config.
    let mut results = Vec::new();
    for (i, version) in ["1.0.0", "0.4.0"].into_iter().enumerate() {
        let ns = format!("petrel-cni-{pid}-{i}");
        sh(&["ip", "netns", "add", &ns]);
        cleanup.netns.push(ns.clone());
        let netns = format!("/var/run/netns/{ns}");
        let cid = format!("ctr{i}");
        let conf = ipam_conf(version, &etcd.endpoint, dir.path(), "bridge");
        let t = Instant::now();
        let add = run(
            Path::new(BRIDGE),
            "ADD",
            &cid,
            &netns,
            conf.to_string().as_bytes(),
        );
        assert!(add.ok, "bridge ADD ({version}): {} {}", add.out, add.stderr);
        eprintln!("bridge+petrel-ipam ADD ({version}) took {:?}", t.elapsed());
        let addrs = addrs_of(&add.out);
        assert_eq!(addrs.len(), 2, "one v4, one v6: {}", add.out);
        assert!(
            add.out["ips"]
                .as_array()
                .is_some_and(|a| a.iter().all(|ip| ip.get("gateway").is_none())),
            "no gateway with \"gateway\": \"none\": {}",
            add.out
        );
        // From node-a's own block.
        let affs = ipam.node_affinities("node-a").await.expect("affinities");
        for a in &addrs {
            assert!(
                affs.iter().any(|(af, _)| af.cidr.contains(a)),
                "{a} not in node-a's blocks"
            );
        }
        // The pod has them.
        let shown = sh(&["ip", "netns", "exec", &ns, "ip", "addr", "show", "eth0"]);
        for a in &addrs {
            assert!(
                shown.contains(&a.to_string()),
                "{a} missing in the pod: {shown}"
            );
        }
        let routes = sh(&["ip", "netns", "exec", &ns, "ip", "route", "show", "default"]);
        assert!(routes.contains("dev eth0"), "default route: {routes}");

        // CHECK with the ADD result as prevResult.
        let mut check_conf = conf.clone();
        check_conf["prevResult"] = add.out.clone();
        let check = run(
            Path::new(BRIDGE),
            "CHECK",
            &cid,
            &netns,
            check_conf.to_string().as_bytes(),
        );
        assert!(
            check.ok,
            "bridge CHECK ({version}): {} {}",
            check.out, check.stderr
        );
        results.push((ns, netns, cid, conf, addrs));
    }

    // The pod MTU, as petrel-ipam reports it for a 1.1.0 config (bridge
    // 1.1.1 builds its own result and cannot carry it).
    let conf11 = ipam_conf("1.1.0", &etcd.endpoint, dir.path(), "petrel-ipam");
    let add = run(
        petrel,
        "ADD",
        "ctr0",
        &results[0].1,
        conf11.to_string().as_bytes(),
    );
    assert!(add.ok, "{}", add.out);
    assert_eq!(
        addrs_of(&add.out),
        results[0].4,
        "a repeated ADD returns the same addresses"
    );
    assert_eq!(add.out["routes"][0]["mtu"], 1400, "{}", add.out);

    // DEL twice succeeds; the second after the netns is gone.
    let (ns, netns, cid, conf, addrs) = results.remove(0);
    let del = run(
        Path::new(BRIDGE),
        "DEL",
        &cid,
        &netns,
        conf.to_string().as_bytes(),
    );
    assert!(del.ok, "DEL: {} {}", del.out, del.stderr);
    sh(&["ip", "netns", "del", &ns]);
    cleanup.netns.retain(|n| *n != ns);
    let del = run(
        Path::new(BRIDGE),
        "DEL",
        &cid,
        &netns,
        conf.to_string().as_bytes(),
    );
    assert!(del.ok, "second DEL: {} {}", del.out, del.stderr);
    assert!(ipam
        .addrs_of_handle(&format!("petrelnet.{cid}.eth0"))
        .await
        .expect("read")
        .is_empty());
    let snap = ipam.snapshot().await.expect("snapshot");
    for a in &addrs {
        assert!(
            !snap
                .blocks
                .iter()
                .any(|(b, _)| b.ord(*a).is_some_and(|o| b.allocations.contains_key(&o))),
            "{a} still assigned after DEL"
        );
    }

    // Malformed JSON: code 6, and nothing changes.
    let before = ipam.check().await.expect("check").addresses_in_use;
    let bad = run(
        petrel,
        "ADD",
        "ctr9",
        &results[0].1,
        b"{\"cniVersion\": \"1.1.0\", \"name\": ",
    );
    assert!(!bad.ok);
    assert_eq!(bad.out["code"], 6, "{}", bad.out);
    assert!(bad.out["msg"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(ipam.check().await.expect("check").addresses_in_use, before);

    // GC: a leaked allocation (its container is gone, DEL never came) is
    // freed; the live one stays.
    let leak = run(
        petrel,
        "ADD",
        "leaked",
        "/var/run/netns/none",
        conf11.to_string().as_bytes(),
    );
    assert!(leak.ok, "{}", leak.out);
    let live_cid = results[0].2.clone();
    let mut gc_conf = conf11.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{ "containerID": live_cid, "ifname": "eth0" }]);
    let gc = run(petrel, "GC", "", "", gc_conf.to_string().as_bytes());
    assert!(gc.ok, "GC: {} {}", gc.out, gc.stderr);
    assert!(
        ipam.addrs_of_handle("petrelnet.leaked.eth0")
            .await
            .expect("read")
            .is_empty(),
        "leak freed"
    );
    assert_eq!(
        ipam.addrs_of_handle(&format!("petrelnet.{live_cid}.eth0"))
            .await
            .expect("read")
            .len(),
        2,
        "live kept"
    );

    // STATUS: fine while etcd runs, code 50 while it is down.
    let st = run(petrel, "STATUS", "", "", conf11.to_string().as_bytes());
    assert!(st.ok, "STATUS: {} {}", st.out, st.stderr);
    etcd.pause();
    let t = Instant::now();
    let st = run(petrel, "STATUS", "", "", conf11.to_string().as_bytes());
    assert!(!st.ok);
    assert_eq!(st.out["code"], 50, "{}", st.out);
    assert!(
        st.out["details"]
            .as_str()
            .is_some_and(|d| d.contains(&etcd.endpoint)),
        "{}",
        st.out
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "STATUS took {:?}",
        t.elapsed()
    );
    etcd.resume().expect("restart etcd");
    let st = run(petrel, "STATUS", "", "", conf11.to_string().as_bytes());
    assert!(st.ok, "STATUS after restart: {} {}", st.out, st.stderr);

    // VERSION.
    let v = run(petrel, "VERSION", "", "", b"{}");
    assert!(v.ok);
    assert!(v.out["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "1.1.0")));

    // The rest goes with bridge DEL; the pool ends empty and consistent.
    let (_, netns, cid, conf, _) = results.remove(0);
    let del = run(
        Path::new(BRIDGE),
        "DEL",
        &cid,
        &netns,
        conf.to_string().as_bytes(),
    );
    assert!(del.ok, "{} {}", del.out, del.stderr);
    let report = ipam.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(report.addresses_in_use, 0);
}

/// Many plugin processes at once on one node with the embedded store: the
/// host lock and the file lock serialise them, each gets its own address,
/// a repeated ADD returns the same one, and DEL frees them all.
#[test]
fn concurrent_invocations_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ipam.db");
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = petrel_ipam::store::embedded::EmbeddedStore::open(&db, Duration::from_secs(1))
            .expect("open");
        let ipam = Ipam::new(Arc::new(store));
        rt.block_on(ipam.add_pool(&Pool {
            name: "p".into(),
            cidr: "10.252.0.0/24".parse().expect("cidr"),
            block_size: 28,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![PoolUse::Workload],
            encapsulation: Encapsulation::None,
        }))
        .expect("pool");
    }
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "local",
        "ipam": {
            "type": "petrel-ipam",
            "datastore": { "path": db },
            "node_name": "solo",
            "lock_file": dir.path().join("ipam.lock"),
            "mtu_file": dir.path().join("absent-mtu"),
            "daemon_socket": "",
        }
    })
    .to_string();
    let petrel = Path::new(env!("CARGO_BIN_EXE_petrel-ipam")).to_path_buf();
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let (petrel, conf) = (petrel.clone(), conf.clone());
            std::thread::spawn(move || {
                run(&petrel, "ADD", &format!("c{i}"), "/none", conf.as_bytes())
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut gateways = Vec::new();
    for t in threads {
        let o = t.join().expect("thread");
        assert!(o.ok, "{} {}", o.out, o.stderr);
        assert!(
            o.out["routes"][0].get("mtu").is_none(),
            "no MTU file, no mtu"
        );
        all.extend(addrs_of(&o.out));
        gateways.push(o.out["ips"][0]["gateway"].clone());
    }
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 12, "12 distinct addresses: {all:?}");
    // One block, one gateway, reserved by whichever process came first.
    gateways.dedup();
    assert_eq!(gateways.len(), 1, "{gateways:?}");
    let gw: IpAddr = gateways[0].as_str().expect("gateway").parse().expect("ip");
    assert!(!all.contains(&gw));
    let again = run(&petrel, "ADD", "c3", "/none", conf.as_bytes());
    assert_eq!(addrs_of(&again.out).len(), 1);
    assert!(
        all.contains(&addrs_of(&again.out)[0]),
        "a repeated ADD returns the same address"
    );
    for i in 0..12 {
        let o = run(&petrel, "DEL", &format!("c{i}"), "/none", conf.as_bytes());
        assert!(o.ok, "{} {}", o.out, o.stderr);
    }
    let store = petrel_ipam::store::embedded::EmbeddedStore::open(&db, Duration::from_secs(1))
        .expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt
        .block_on(Ipam::new(Arc::new(store)).check())
        .expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(report.addresses_in_use, 1, "the gateway outlives the pods");
}

/// `isGateway: true` with petrel-ipam's default `"gateway": "block"`: the
/// bridge holds the gateway petrel-ipam reserved in the node's block, no
/// pod gets it, pods reach it, and it outlives the pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_holds_the_reserved_gateway() {
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    let has_ping = Command::new("ping").arg("-V").output().is_ok();
    if !require("root (network namespaces)", is_root())
        || !require("etcd (Debian: etcd-server)", etcd_binary().is_some())
        || !require(
            "the bridge plugin (Debian: containernetworking-plugins)",
            Path::new(BRIDGE).is_file(),
        )
        || !require("iproute2", has_ip)
        || !require("ping (Debian: iputils-ping)", has_ping)
    {
        return;
    }
    let (etcd, ipam) = etcd_with_pools("10.252.0.0/24", "fd52::/120").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = std::process::id();
    let bridge = format!("ptrg{}", pid % 100000);
    let mut cleanup = Cleanup {
        netns: Vec::new(),
        bridge: bridge.clone(),
    };
    let mut conf = ipam_conf("1.0.0", &etcd.endpoint, dir.path(), "bridge");
    conf["bridge"] = json!(bridge);
    conf["isGateway"] = json!(true);
    conf["isDefaultGateway"] = json!(true);
    // The default: no "gateway" key means "block".
    conf["ipam"]
        .as_object_mut()
        .expect("ipam section")
        .remove("gateway");
    let conf_text = conf.to_string();

    let mut pods = Vec::new();
    for i in 0..2 {
        let ns = format!("petrel-gw-{pid}-{i}");
        sh(&["ip", "netns", "add", &ns]);
        cleanup.netns.push(ns.clone());
        let netns = format!("/var/run/netns/{ns}");
        let cid = format!("gw{i}");
        let add = run(Path::new(BRIDGE), "ADD", &cid, &netns, conf_text.as_bytes());
        assert!(add.ok, "bridge ADD: {} {}", add.out, add.stderr);
        let check_conf = {
            let mut c = conf.clone();
            c["prevResult"] = add.out.clone();
            c.to_string()
        };
        let check = run(
            Path::new(BRIDGE),
            "CHECK",
            &cid,
            &netns,
            check_conf.as_bytes(),
        );
        assert!(check.ok, "bridge CHECK: {} {}", check.out, check.stderr);
        pods.push((ns, netns, cid, add.out));
    }

    // One gateway per family, the same for both pods, and no pod's.
    let gateways = |r: &Value| -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = r["ips"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip["gateway"].as_str()?.parse().ok())
            .collect();
        v.sort();
        v
    };
    let gws = gateways(&pods[0].3);
    assert_eq!(gws.len(), 2, "a gateway per address: {}", pods[0].3);
    assert_eq!(gateways(&pods[1].3), gws);
    let (a0, a1) = (addrs_of(&pods[0].3), addrs_of(&pods[1].3));
    assert!(a0.iter().all(|a| !a1.contains(a)), "{a0:?} {a1:?}");
    assert!(a0.iter().chain(&a1).all(|a| !gws.contains(a)));
    let gw4 = gws[0];

    // Reserved in IPAM under the node's gateway handle for the block: its
    // network address + 1, where the bridge would have put its own.
    let snap = ipam.snapshot().await.expect("snapshot");
    for gw in &gws {
        let (b, _) = snap
            .blocks
            .iter()
            .find(|(b, _)| b.cidr.contains(gw))
            .expect("gateway's block");
        let h = petrel_ipam::gateway::handle("node-a", &b.cidr);
        assert_eq!(b.held_by(&h), Some(*gw), "{h}");
        assert_eq!(b.ord(*gw), Some(1));
    }

    // The bridge holds it with the block's prefix; pods route via it and
    // reach it, and each other.
    let shown = sh(&["ip", "addr", "show", "dev", &bridge]);
    assert!(shown.contains(&format!("{gw4}/26")), "bridge: {shown}");
    assert!(
        shown.contains(&format!("{}/122", gws[1])),
        "bridge: {shown}"
    );
    let route = sh(&[
        "ip", "netns", "exec", &pods[0].0, "ip", "route", "show", "default",
    ]);
    assert!(route.contains(&format!("via {gw4}")), "pod route: {route}");
    let v4_of_pod1 = a1.iter().find(|a| a.is_ipv4()).expect("v4");
    for target in [gw4.to_string(), v4_of_pod1.to_string()] {
        sh(&[
            "ip", "netns", "exec", &pods[0].0, "ping", "-c", "1", "-W", "5", &target,
        ]);
    }
    // IPv6 too, to the gateway and to the other pod (the first pod holds
    // the block's first address). Addresses may still be tentative (DAD):
    // a few probes.
    for target in [gws[1], *a0.iter().find(|a| a.is_ipv6()).expect("v6")] {
        sh(&[
            "ip",
            "netns",
            "exec",
            &pods[1].0,
            "ping",
            "-c",
            "1",
            "-w",
            "10",
            &target.to_string(),
        ]);
    }

    // DEL of both pods frees theirs and leaves the gateways.
    for (ns, netns, cid, _) in pods {
        let del = run(Path::new(BRIDGE), "DEL", &cid, &netns, conf_text.as_bytes());
        assert!(del.ok, "DEL: {} {}", del.out, del.stderr);
        sh(&["ip", "netns", "del", &ns]);
        cleanup.netns.retain(|n| *n != ns);
    }
    let report = ipam.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(report.addresses_in_use, 2, "the two gateways");
    let snap = ipam.snapshot().await.expect("snapshot");
    for gw in &gws {
        assert!(snap.blocks.iter().any(|(b, _)| b
            .ord(*gw)
            .and_then(|o| b.allocations.get(&o))
            .is_some_and(|a| petrel_ipam::gateway::is_gateway_handle(&a.handle))));
    }
}

/// A fresh etcd with IPAM config and a v4 (/26 blocks) and a v6 (/122
/// blocks) workload pool.
async fn etcd_with_pools(v4: &str, v6: &str) -> (EtcdServer, Ipam) {
    let etcd = EtcdServer::start().expect("start etcd");
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint.clone()]))
        .await
        .expect("connect");
    let ipam = Ipam::new(Arc::new(store));
    ipam.set_config(&IpamConfig::default())
        .await
        .expect("config");
    for (name, cidr, bs) in [("v4", v4, 26), ("v6", v6, 122)] {
        ipam.add_pool(&Pool {
            name: name.into(),
            cidr: cidr.parse().expect("cidr"),
            block_size: bs,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![PoolUse::Workload],
            encapsulation: Encapsulation::Vxlan,
        })
        .await
        .expect("pool");
    }
    (etcd, ipam)
}
