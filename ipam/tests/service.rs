//! The plugin's forward path: `petrel-ipam` exec'd as a runtime does,
//! handing its invocation to the IPAM service running in this test process
//! (as petreld runs it) over a real unix socket, against a real etcd or a
//! real embedded store file; and Debian's `bridge` plugin in front of it
//! for a real network namespace.
//!
//! To tell the forward path from the fallback, most configs name a
//! datastore the plugin itself cannot use (an etcd endpoint nothing
//! listens on): only the service, with its own store, can succeed.

use petrel_ipam::ipam::Ipam;
use petrel_ipam::model::{Encapsulation, Pool, PoolUse};
use petrel_ipam::service::{Service, ServiceConfig, ServiceError};
use petrel_ipam::store::embedded::EmbeddedStore;
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::testing::{etcd_binary, is_root, require, EtcdServer};
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const BRIDGE: &str = "/usr/lib/cni/bridge";
/// Nothing listens here: a plugin that falls back fails.
const DEAD_ETCD: &str = "http://127.0.0.1:9";

#[derive(Debug)]
struct Outcome {
    ok: bool,
    out: Value,
    stdout: String,
    stderr: String,
}

fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_petrel-ipam"))
}

/// Run a CNI plugin the way a runtime does (blocking).
fn run(bin: &Path, command: &str, cid: &str, netns: &str, conf: &Value) -> Outcome {
    let dir = plugin().parent().expect("dir").display().to_string();
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", format!("{dir}:/usr/lib/cni"))
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
        .write_all(conf.to_string().as_bytes())
        .expect("write config");
    let o = child.wait_with_output().expect("plugin output");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    Outcome {
        ok: o.status.success(),
        out: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

/// The same, off the async runtime that serves the service.
async fn exec(command: &str, cid: &str, conf: &Value) -> Outcome {
    let (command, cid, conf) = (command.to_string(), cid.to_string(), conf.clone());
    tokio::task::spawn_blocking(move || {
        run(&plugin(), &command, &cid, "/var/run/netns/none", &conf)
    })
    .await
    .expect("join")
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

fn pool(name: &str, cidr: &str, bs: u8) -> Pool {
    Pool {
        name: name.into(),
        cidr: cidr.parse().expect("cidr"),
        block_size: bs,
        disabled: false,
        node_selector: String::new(),
        allowed_uses: vec![PoolUse::Workload],
        encapsulation: Encapsulation::None,
    }
}

fn conf(plugin_type: &str, datastore: Value, dir: &Path, extra: Value) -> Value {
    let mut ipam = json!({
        "type": "petrel-ipam",
        "datastore": datastore,
        "node_name": "node-s",
        "mtu_file": dir.join("pod-mtu"),
        "lock_file": dir.join("ipam.lock"),
        "daemon_socket": dir.join("ipam.sock"),
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        ipam[k] = v.clone();
    }
    json!({
        "cniVersion": "1.1.0",
        "name": "svcnet",
        "type": plugin_type,
        "bridge": format!("ptrs{}", std::process::id() % 100000),
        "isGateway": false,
        "ipMasq": false,
        "ipam": ipam,
    })
}

/// Addresses held by pods: the node's gateways (`"gateway": "block"`,
/// the default) stay when the pods go.
async fn pod_addresses(ipam: &Ipam) -> usize {
    let snap = ipam.snapshot().await.expect("snapshot");
    snap.blocks
        .iter()
        .flat_map(|(b, _)| b.allocations.values())
        .filter(|a| !petrel_ipam::gateway::is_gateway_handle(&a.handle))
        .count()
}

async fn etcd_ipam(etcd: &EtcdServer) -> Ipam {
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint.clone()]))
        .await
        .expect("connect");
    Ipam::new(Arc::new(store))
}

fn start(path: &Path, ipam: Ipam) -> tokio::task::JoinHandle<()> {
    let svc = Service::bind(path, Arc::new(ipam), ServiceConfig::default()).expect("bind");
    tokio::spawn(svc.run())
}

fn have_etcd() -> bool {
    require("etcd (Debian: etcd-server)", etcd_binary().is_some())
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

/// bridge → petrel-ipam → service → etcd: ADD, CHECK, GC, DEL twice, all
/// through the service (the plugin's own datastore is unreachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_through_the_service_add_check_gc_del() {
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    if !require("root (network namespaces)", is_root())
        || !have_etcd()
        || !require(
            "the bridge plugin (Debian: containernetworking-plugins)",
            Path::new(BRIDGE).is_file(),
        )
        || !require("iproute2", has_ip)
    {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let ipam = etcd_ipam(&etcd).await;
    ipam.add_pool(&pool("v4", "10.253.0.0/24", 26))
        .await
        .expect("pool");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pod-mtu"), "1400\n").expect("mtu");
    let sock = dir.path().join("ipam.sock");
    let svc = start(&sock, ipam.clone());
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "root only: {mode:o}");

    let pid = std::process::id();
    let ns = format!("petrel-svc-{pid}");
    let mut cleanup = Cleanup {
        netns: Vec::new(),
        bridge: format!("ptrs{}", pid % 100000),
    };
    sh(&["ip", "netns", "add", &ns]);
    cleanup.netns.push(ns.clone());
    let netns = format!("/var/run/netns/{ns}");
    let mut c = conf(
        "bridge",
        json!({ "etcd_endpoints": [DEAD_ETCD] }),
        dir.path(),
        json!({}),
    );
    c["cniVersion"] = json!("1.0.0");
    let bridge = Path::new(BRIDGE).to_path_buf();
    let (b, n, cc) = (bridge.clone(), netns.clone(), c.clone());
    let add = tokio::task::spawn_blocking(move || run(&b, "ADD", "ctr1", &n, &cc))
        .await
        .expect("join");
    assert!(add.ok, "bridge ADD: {} {}", add.stdout, add.stderr);
    let addrs = addrs_of(&add.out);
    assert_eq!(addrs.len(), 1, "{}", add.out);
    let affs = ipam.node_affinities("node-s").await.expect("affinities");
    assert!(affs.iter().any(|(a, _)| a.cidr.contains(&addrs[0])));
    let shown = sh(&["ip", "netns", "exec", &ns, "ip", "addr", "show", "eth0"]);
    assert!(shown.contains(&addrs[0].to_string()), "{shown}");

    let mut check = c.clone();
    check["prevResult"] = add.out.clone();
    let (b, n) = (bridge.clone(), netns.clone());
    let out = tokio::task::spawn_blocking(move || run(&b, "CHECK", "ctr1", &n, &check))
        .await
        .expect("join");
    assert!(out.ok, "bridge CHECK: {} {}", out.stdout, out.stderr);

    // GC through the service: a leaked attachment goes, ctr1 stays.
    let direct = conf(
        "petrel-ipam",
        json!({ "etcd_endpoints": [DEAD_ETCD] }),
        dir.path(),
        json!({}),
    );
    let leak = exec("ADD", "leaked", &direct).await;
    assert!(leak.ok, "{} {}", leak.stdout, leak.stderr);
    assert_eq!(leak.out["routes"][0]["mtu"], 1400, "{}", leak.out);
    let mut gc = direct.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "ctr1", "ifname": "eth0" }]);
    let out = exec("GC", "", &gc).await;
    assert!(out.ok, "GC: {} {}", out.stdout, out.stderr);
    assert!(ipam
        .addrs_of_handle("svcnet.leaked.eth0")
        .await
        .expect("read")
        .is_empty());
    assert_eq!(
        ipam.addrs_of_handle("svcnet.ctr1.eth0")
            .await
            .expect("read"),
        addrs
    );
    let out = exec("STATUS", "", &direct).await;
    assert!(out.ok, "STATUS: {} {}", out.stdout, out.stderr);

    // DEL twice, the second after the netns is gone.
    for round in 0..2 {
        let (b, n, cc) = (bridge.clone(), netns.clone(), c.clone());
        let del = tokio::task::spawn_blocking(move || run(&b, "DEL", "ctr1", &n, &cc))
            .await
            .expect("join");
        assert!(del.ok, "DEL {round}: {} {}", del.stdout, del.stderr);
        if round == 0 {
            sh(&["ip", "netns", "del", &ns]);
            cleanup.netns.clear();
        }
    }
    let report = ipam.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(pod_addresses(&ipam).await, 0);
    svc.abort();
}

/// Parallel exec'd ADDs (group-committed by the service) get distinct
/// addresses, a repeated ADD gets its first answer back, a malformed config
/// is code 6 from the service, and everything DELs clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_execs_through_the_service_get_distinct_addresses() {
    if !have_etcd() {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let ipam = etcd_ipam(&etcd).await;
    ipam.add_pool(&pool("v4", "10.254.0.0/24", 28))
        .await
        .expect("pool");
    ipam.add_pool(&pool("v6", "fd54::/120", 124))
        .await
        .expect("pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = start(&dir.path().join("ipam.sock"), ipam.clone());
    let c = conf(
        "petrel-ipam",
        json!({ "etcd_endpoints": [DEAD_ETCD] }),
        dir.path(),
        json!({ "assign_ipv6": true }),
    );
    // More than one /28 and /124 hold: the service claims blocks on the way.
    let n = 40;
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || run(&plugin(), "ADD", &format!("p{i}"), "/none", &c))
        })
        .collect();
    let mut all = Vec::new();
    for (i, t) in runs.into_iter().enumerate() {
        let o = tokio::task::spawn_blocking(move || t.join().expect("thread"))
            .await
            .expect("join");
        assert!(o.ok, "ADD p{i}: {} {}", o.stdout, o.stderr);
        let got = addrs_of(&o.out);
        assert_eq!(got.len(), 2, "{}", o.out);
        let mut held = ipam
            .addrs_of_handle(&format!("svcnet.p{i}.eth0"))
            .await
            .expect("read");
        held.sort();
        assert_eq!(held, got, "the handle holds what the plugin printed");
        all.extend(got);
    }
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 2 * n, "distinct addresses: {all:?}");
    let again = exec("ADD", "p7", &c).await;
    assert!(again.ok, "{}", again.stdout);
    let mut first = ipam.addrs_of_handle("svcnet.p7.eth0").await.expect("read");
    first.sort();
    assert_eq!(
        addrs_of(&again.out),
        first,
        "a repeated ADD returns the same addresses"
    );

    let mut bad = c.clone();
    bad["ipam"]["assign_ipv4"] = json!(false);
    bad["ipam"]["assign_ipv6"] = json!(false);
    let o = exec("ADD", "bad", &bad).await;
    assert!(!o.ok);
    assert_eq!(o.out["code"], 7, "{}", o.stdout);

    let report = ipam.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(pod_addresses(&ipam).await, 2 * n);
    for i in 0..n {
        let o = exec("DEL", &format!("p{i}"), &c).await;
        assert!(o.ok, "DEL p{i}: {} {}", o.stdout, o.stderr);
    }
    assert_eq!(pod_addresses(&ipam).await, 0);
    svc.abort();
}

/// The embedded store allows one writer process: with petreld holding it,
/// the plugin can only go through the service — and it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_works_while_the_service_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ipam.db");
    let store = EmbeddedStore::open(&db, Duration::from_secs(1)).expect("open");
    let ipam = Ipam::new(Arc::new(store));
    ipam.add_pool(&pool("p", "10.250.0.0/24", 28))
        .await
        .expect("pool");
    let svc = start(&dir.path().join("ipam.sock"), ipam.clone());
    let c = conf("petrel-ipam", json!({ "path": db }), dir.path(), json!({}));
    let o = exec("ADD", "solo1", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    assert_eq!(
        ipam.addrs_of_handle("svcnet.solo1.eth0")
            .await
            .expect("read"),
        addrs_of(&o.out)
    );
    let o = exec("DEL", "solo1", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    assert_eq!(pod_addresses(&ipam).await, 0);
    svc.abort();
}

/// No service (never started, stopped, or a stale socket file left by a
/// crash): the plugin goes to the datastore itself. A second service does
/// not take over a live one's socket, but does replace a stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_service_the_plugin_falls_back_to_the_datastore() {
    if !have_etcd() {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let ipam = etcd_ipam(&etcd).await;
    ipam.add_pool(&pool("v4", "10.249.0.0/24", 28))
        .await
        .expect("pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ipam.sock");
    let c = conf(
        "petrel-ipam",
        json!({ "etcd_endpoints": [etcd.endpoint] }),
        dir.path(),
        json!({}),
    );
    // Never started: no socket file.
    let o = exec("ADD", "f1", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);

    // Running, then a second one on the same path is refused.
    let svc = start(&sock, ipam.clone());
    let second = Service::bind(&sock, Arc::new(ipam.clone()), ServiceConfig::default());
    assert!(
        matches!(second, Err(ServiceError::InUse { .. })),
        "{:?}",
        second.err()
    );
    let o = exec("ADD", "f2", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    // Stopped: its socket file goes with it.
    svc.abort();
    let _ = svc.await;
    assert!(!sock.exists(), "socket removed on stop");
    let o = exec("ADD", "f3", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);

    // A stale socket file (a listener gone without cleaning up).
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("stale"));
    assert!(sock.exists());
    let o = exec("ADD", "f4", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    let svc = start(&sock, ipam.clone());
    let o = exec("ADD", "f5", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    svc.abort();

    // A file that is not a socket is left alone.
    let _ = svc.await;
    std::fs::write(&sock, "not a socket").expect("write");
    let r = Service::bind(&sock, Arc::new(ipam.clone()), ServiceConfig::default());
    assert!(matches!(r, Err(ServiceError::NotASocket { .. })));

    let mut all = Vec::new();
    for i in 1..=5 {
        all.extend(
            ipam.addrs_of_handle(&format!("svcnet.f{i}.eth0"))
                .await
                .expect("read"),
        );
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5);
    let report = ipam.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
}

/// A service that took the request and then hangs, or hangs up: the plugin
/// answers "try again later" and does not go to the datastore itself (which
/// it could reach here), so nothing is assigned twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_hangs_or_hangs_up_is_an_error_not_a_second_attempt() {
    if !have_etcd() {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let ipam = etcd_ipam(&etcd).await;
    ipam.add_pool(&pool("v4", "10.248.0.0/24", 28))
        .await
        .expect("pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ipam.sock");
    let c = conf(
        "petrel-ipam",
        json!({ "etcd_endpoints": [etcd.endpoint] }),
        dir.path(),
        json!({ "daemon_timeout_secs": 0.3 }),
    );
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    // Hangs: accepts, reads the request, never answers.
    let hang = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut line).expect("read");
        // Hangs up: accepts, reads, closes.
        let (s2, _) = listener.accept().expect("accept");
        let mut line2 = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&s2), &mut line2).expect("read");
        drop(s2);
        (s, line, line2)
    });
    let o = exec("ADD", "h1", &c).await;
    assert!(!o.ok);
    assert_eq!(o.out["code"], 11, "{}", o.stdout);
    assert!(
        o.out["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no answer")),
        "{}",
        o.stdout
    );
    let o2 = exec("ADD", "h2", &c).await;
    assert!(!o2.ok);
    assert_eq!(o2.out["code"], 11, "{}", o2.stdout);
    let (_held, line, line2) = tokio::task::spawn_blocking(move || hang.join().expect("thread"))
        .await
        .expect("join");
    // The requests did reach the "service", whole.
    let req: Value = serde_json::from_str(&line).expect("request line");
    assert_eq!(req["v"], 1);
    assert_eq!(req["env"]["command"], "ADD");
    assert_eq!(req["env"]["container_id"], "h1");
    assert_eq!(req["env"]["netns"], "/var/run/netns/none");
    assert!(line2.contains("\"h2\""), "{line2}");
    // And nothing was assigned behind them.
    let report = ipam.check().await.expect("check");
    assert_eq!(report.addresses_in_use, 0, "no fallback assignment");
}

/// With etcd down the service answers "try again later" naming etcd, and
/// STATUS says not available (50); once etcd is back ADD works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reports_a_datastore_outage() {
    if !have_etcd() {
        return;
    }
    let mut etcd = EtcdServer::start().expect("etcd");
    let ipam = etcd_ipam(&etcd).await;
    ipam.add_pool(&pool("v4", "10.247.0.0/24", 28))
        .await
        .expect("pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = start(&dir.path().join("ipam.sock"), ipam.clone());
    let c = conf(
        "petrel-ipam",
        json!({ "etcd_endpoints": [DEAD_ETCD] }),
        dir.path(),
        json!({}),
    );
    etcd.pause();
    let o = exec("ADD", "d1", &c).await;
    assert!(!o.ok);
    assert_eq!(o.out["code"], 11, "{}", o.stdout);
    assert!(
        o.out["details"]
            .as_str()
            .is_some_and(|d| d.contains(&etcd.endpoint)),
        "{}",
        o.stdout
    );
    let o = exec("STATUS", "", &c).await;
    assert_eq!(o.out["code"], 50, "{}", o.stdout);
    etcd.resume().expect("resume");
    let o = exec("ADD", "d1", &c).await;
    assert!(o.ok, "{} {}", o.stdout, o.stderr);
    let report = ipam.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(pod_addresses(&ipam).await, 1);
    svc.abort();
}
