//! petrel in a Kubernetes cluster, end to end, with real everything: the
//! three-node lab (etcd, an FRR top-of-rack router, three petrelds, pods
//! by CNI), a real kube-apiserver on the lab's etcd and petrel-controller
//! (`lab::k8s::KubeLab`, as `petrel-lab up --kubernetes`). Objects are made
//! with kubectl as a user would; every assertion is at the ToR: FRR's BGP
//! table and its kernel FIB (zebra's routes), plus the datastore for the
//! address pool.
//!
//! Phases, in order, on one lab (each prints what it measured):
//!
//! | phase | what must hold |
//! |---|---|
//! | aggregate | the ClusterIP range 10.96.0.0/12 at the ToR from every node |
//! | local | LB Service, `externalTrafficPolicy: Local`, ready endpoint on node2: its /32 at the ToR via node2 only |
//! | ecmp | endpoints on node2 and node3: via both, two nexthops in the ToR's FIB |
//! | serving | node3's endpoint serving but not ready (terminating): node3's route kept |
//! | hold-down | node3's endpoint gone: node3 withdrawn after the hold-down, not before |
//! | deleted | the Service deleted: the /32 gone from the ToR and every node, the address free |
//! | cluster | `externalTrafficPolicy: Cluster`: via every node |
//! | sharing | two Services with one `petrel.io/sharing-key`, different ports: one address |
//! | outside | an address outside every pool: an `AllocationFailed` Event, nothing else changes |
//! | apiserver outage | kube-apiserver stopped (SIGSTOP) 30 s: no route changes at the ToR; a Service made right after it resumes is routed |
//! | leak | a pod deleted while its CNI DEL was lost: its addresses (both families) reclaimed after the leak grace; a live pod's never |
//!
//! Needs root, etcd, FRR, the CNI bridge plugin, kubectl, openssl, the
//! apiserver (.ci/kube-apiserver.sh) and the workspace binaries; in CI a
//! missing piece fails the test.
//! `PETREL_E2E_KUBE_OUTAGE` sets the outage in seconds (default 30).

use anyhow::{bail, ensure, Result};
use petrel_ipam::model::Block;
use petrel_tests::lab::cluster::{kernel_route, kernel_routes, Cluster, Options};
use petrel_tests::lab::frr::parse_paths;
use petrel_tests::lab::k8s::{KubeLab, KubeOptions, LB_POOL, SERVICE_CIDR};
use petrel_tests::lab::kube::require_apiserver;
use petrel_tests::lab::{require_lab, Lab, Route};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The leak grace the controller runs with here (Calico's is 15 min).
const LEAK_GRACE: Duration = Duration::from_secs(15);
/// The controller's default endpoint hold-down.
const HOLD_DOWN: Duration = Duration::from_secs(3);

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?} waiting for {what} (last error: {last})")
}

/// A LoadBalancer Service.
fn service(name: &str, policy: &str, ports: &[u16], annotations: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": policy,
            "selector": {"app": name},
            "ports": ports.iter().map(|p| json!({
                "name": format!("p{p}"), "protocol": "TCP", "port": p, "targetPort": 8080,
            })).collect::<Vec<_>>(),
        }
    })
    .to_string()
}

/// One endpoint: (pod address, node, ready, serving, terminating).
type Endpoint<'a> = (&'a str, &'a str, bool, bool, bool);

/// The EndpointSlice `<service>-1` of `service` with `endpoints`.
fn slice(service: &str, endpoints: &[Endpoint]) -> String {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"),
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(a, n, ready, serving, terminating)| json!({
            "addresses": [a], "nodeName": n,
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        })).collect::<Vec<_>>(),
        "ports": [{"name": "p80", "protocol": "TCP", "port": 8080}],
    })
    .to_string()
}

struct Env<'a> {
    c: &'a Cluster,
    k: &'a KubeLab,
}

impl Env<'_> {
    /// A `show … json` command to the ToR's bgpd, parsed.
    fn vtysh_json(&self, cmd: &str) -> Result<Value> {
        let run = self
            .c
            .lab
            .dir()
            .join(format!("frr-{}", self.c.tor_ns.name()))
            .join("run");
        let out = self.c.tor_ns.exec(
            "vtysh",
            &[
                "--vty_socket",
                &run.to_string_lossy(),
                "-d",
                "bgpd",
                "-c",
                cmd,
            ],
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The ToR's paths for `prefix` (one vtysh call).
    fn tor_paths(&self, prefix: &str) -> Result<Vec<Route>> {
        let v = self.vtysh_json(&format!("show bgp ipv4 unicast {prefix} json"))?;
        // An unknown prefix answers {} or its nearest cover: only exact.
        if v["prefix"].as_str() != Some(prefix) {
            return Ok(Vec::new());
        }
        Ok(parse_paths(prefix, &v))
    }

    /// The nodes the ToR has a path for `prefix` from.
    fn tor_via(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let paths = self.tor_paths(prefix)?;
        Ok(self
            .c
            .nodes
            .iter()
            .filter(|n| paths.iter().any(|p| p.peer.as_deref() == Some(&n.address)))
            .map(|n| n.name.clone())
            .collect())
    }

    /// The nodes the ToR's kernel route for `prefix` goes to (its
    /// nexthops, mapped to node names).
    fn tor_fib(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for r in kernel_routes(&self.c.tor_ns, prefix)? {
            for g in &r.gateways {
                match self.c.nodes.iter().find(|n| &n.address == g) {
                    Some(n) => out.insert(n.name.clone()),
                    None => out.insert(g.clone()),
                };
            }
        }
        Ok(out)
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Waits until the ToR's table and its FIB both reach `prefix` via
    /// exactly `nodes`; returns (time to the table, time to the FIB) from
    /// `t0`.
    fn wait_at_tor(
        &self,
        prefix: &str,
        nodes: &[&str],
        t0: Instant,
        limit: Duration,
    ) -> Result<(Duration, Duration)> {
        let want = Self::names(nodes);
        let mut rib = None;
        wait_for(&format!("{prefix} at the ToR via {nodes:?}"), limit, || {
            if rib.is_none() && self.tor_via(prefix)? == want {
                rib = Some(t0.elapsed());
            }
            Ok((rib.is_some() && self.tor_fib(prefix)? == want).then_some(()))
        })
        .map_err(|e| {
            let via = self.tor_via(prefix).ok();
            let fib = self.tor_fib(prefix).ok();
            e.context(format!("the ToR's table: {via:?}, its FIB: {fib:?}"))
        })?;
        Ok((rib.unwrap_or_default(), t0.elapsed()))
    }

    fn ingress(&self, name: &str) -> Result<Option<String>> {
        let v = self.k.api.get_json(&["service", name, "-n", "default"])?;
        Ok(v["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from))
    }

    fn wait_ingress(&self, name: &str) -> Result<String> {
        wait_for(
            &format!("status.loadBalancer.ingress of {name}"),
            Duration::from_secs(30),
            || self.ingress(name),
        )
    }

    /// Every allocated address in the datastore → (handle, pod).
    fn allocations(&self) -> Result<BTreeMap<IpAddr, (String, Option<String>)>> {
        let out = self.c.tor_ns.exec(
            "etcdctl",
            &[
                "--endpoints",
                self.c.etcd.endpoint(),
                "get",
                "/petrel/ipam/v1/blocks/",
                "--prefix",
                "--print-value-only",
            ],
        )?;
        let mut m = BTreeMap::new();
        for line in out.lines().filter(|l| l.starts_with('{')) {
            let b: Block = serde_json::from_str(line)?;
            for (ord, a) in &b.allocations {
                m.insert(b.addr(*ord), (a.handle.clone(), a.attrs.pod.clone()));
            }
        }
        Ok(m)
    }

    /// Every path the ToR has from the nodes → when FRR last changed it
    /// (epoch seconds): see [`same_paths`] (one vtysh call per prefix).
    fn tor_snapshot(&self) -> Result<Snapshot> {
        let mut out = BTreeMap::new();
        for n in &self.c.nodes {
            for r in self.c.tor.routes_from(&n.address)? {
                let since = r.since.and_then(|s| s.parse().ok()).unwrap_or(0);
                out.insert((r.prefix, n.name.clone()), since);
            }
        }
        Ok(out)
    }

    /// The ToR's table (prefix, next hop), one vtysh call: cheap enough
    /// to poll every second.
    fn tor_table(&self) -> Result<BTreeSet<(String, String)>> {
        let v = self.vtysh_json("show bgp ipv4 unicast json")?;
        let mut s = BTreeSet::new();
        for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
            for p in paths.as_array().into_iter().flatten() {
                for nh in p["nexthops"].as_array().into_iter().flatten() {
                    s.insert((
                        prefix.clone(),
                        nh["ip"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        Ok(s)
    }

    /// The ToR's kernel routes from BGP.
    fn tor_kernel(&self) -> Result<String> {
        self.c.tor_ns.ip(&["route", "show", "proto", "bgp"])
    }
}

/// (prefix, node) → FRR's lastUpdate epoch.
type Snapshot = BTreeMap<(String, String), u64>;

/// The same paths, none replaced. FRR reports lastUpdate as now less the
/// path's age in whole seconds, so one path read twice may differ by one.
fn same_paths(a: &Snapshot, b: &Snapshot) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, ta), (kb, tb))| ka == kb && ta.abs_diff(*tb) <= 1)
}

/// What each phase measured, printed as it passes and again at the end.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn push(&mut self, line: String) {
        eprintln!("PASS {line}");
        self.0.push(line);
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Everything a Kubernetes lab with a `tor` ToR needs (in CI a missing
/// piece fails the test).
fn can_run(tor: petrel_tests::lab::topo::Kind) -> bool {
    let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    programs.extend(tor.programs());
    require_lab(&programs)
        && require_apiserver()
        && ["petrel-controller", "petrelctl", "petreld", "petrel-ipam"]
            .iter()
            .all(|b| petrel_tests::have_bin(b))
}

/// One Kubernetes lab at a time: two apiservers and six petrelds on two
/// cores would make every wait here a question of load.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn kubernetes_services_reach_the_tor() -> Result<()> {
    if !can_run(petrel_tests::lab::topo::Kind::Frr) {
        return Ok(());
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let outage: u64 = std::env::var("PETREL_E2E_KUBE_OUTAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let c = Cluster::up(Lab::new("k8se2e")?, Options::default())?;
    let t = Instant::now();
    let k = KubeLab::start(
        &c,
        KubeOptions {
            leak_grace: format!("{}s", LEAK_GRACE.as_secs()),
            gc_interval: "1s".into(),
            ..KubeOptions::default()
        },
    )?;
    eprintln!(
        "kube-apiserver and petrel-controller up in {}",
        secs(t.elapsed())
    );
    let env = Env { c: &c, k: &k };
    let mut report = Report::default();
    let (node2, node3) = (c.node("node2")?, c.node("node3")?);
    let (pod2, pod3) = (node2.pods[0].address.clone(), node3.pods[0].address.clone());

    // aggregate: the ClusterIP range from every node.
    env.wait_at_tor(
        SERVICE_CIDR,
        &["node1", "node2", "node3"],
        t,
        Duration::from_secs(30),
    )?;
    report.push(format!("aggregate: {SERVICE_CIDR} via node1-3 at the ToR"));

    // local: the EndpointSlice (ready on node2) first, then the Service:
    // apply -> status.ingress -> the /32 in the ToR's table and its FIB.
    k.apply(&slice("web", &[(&pod2, "node2", true, true, false)]))?;
    let t0 = Instant::now();
    k.apply(&service("web", "Local", &[80], json!({})))?;
    let ip = env.wait_ingress("web")?;
    let t_ingress = t0.elapsed();
    let host = format!("{ip}/32");
    let (t_rib, t_fib) = env.wait_at_tor(&host, &["node2"], t0, Duration::from_secs(30))?;
    report.push(format!(
        "local: apply of web -> ingress {ip} {}, -> /32 via node2 in the ToR's table {}, in its FIB {}",
        secs(t_ingress),
        secs(t_rib),
        secs(t_fib)
    ));
    // node1 learns it over the mesh, via node2.
    wait_for(
        "node1's FIB to reach web via node2",
        Duration::from_secs(10),
        || {
            Ok(kernel_route(&c.node("node1")?.ns, &host)?
                .filter(|r| r.gateways == [node2.address.clone()]))
        },
    )?;

    // ecmp: a ready endpoint on node3 too.
    let t0 = Instant::now();
    k.apply(&slice(
        "web",
        &[
            (&pod2, "node2", true, true, false),
            (&pod3, "node3", true, true, false),
        ],
    ))?;
    let (t_rib, t_fib) =
        env.wait_at_tor(&host, &["node2", "node3"], t0, Duration::from_secs(30))?;
    let npaths = env.tor_paths(&host)?.len();
    let kr = kernel_routes(&c.tor_ns, &host)?;
    assert_eq!(kr.len(), 1, "{kr:?}");
    assert_eq!(kr[0].gateways.len(), 2, "not ECMP in the ToR's FIB: {kr:?}");
    report.push(format!(
        "ecmp: node3's endpoint -> via node2 and node3 in the ToR's table ({npaths} paths) {}, \
         one kernel route with 2 nexthops {}",
        secs(t_rib),
        secs(t_fib)
    ));

    // serving: node3's endpoint terminating, serving, not ready: kept.
    let paths = |r: Vec<Route>| -> Snapshot {
        r.into_iter()
            .map(|r| {
                let since = r.since.and_then(|s| s.parse().ok()).unwrap_or(0);
                ((r.prefix, r.next_hop), since)
            })
            .collect()
    };
    let before = paths(env.tor_paths(&host)?);
    k.apply(&slice(
        "web",
        &[
            (&pod2, "node2", true, true, false),
            (&pod3, "node3", false, true, true),
        ],
    ))?;
    let watch = Instant::now();
    while watch.elapsed() < HOLD_DOWN * 2 {
        let via = env.tor_via(&host)?;
        let fib = env.tor_fib(&host)?;
        let both = Env::names(&["node2", "node3"]);
        assert!(
            via == both && fib == both,
            "serving-but-not-ready endpoint: the ToR has {via:?}, FIB {fib:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = paths(env.tor_paths(&host)?);
    assert!(
        same_paths(&before, &after),
        "paths replaced: {before:?} -> {after:?}"
    );
    report.push(format!(
        "serving: node3's endpoint serving-but-not-ready for {}: both paths kept, unchanged",
        secs(HOLD_DOWN * 2)
    ));

    // hold-down: node3's endpoint gone: withdrawn, not before the hold-down.
    let t0 = Instant::now();
    k.apply(&slice("web", &[(&pod2, "node2", true, true, false)]))?;
    let (t_rib, t_fib) = env.wait_at_tor(&host, &["node2"], t0, Duration::from_secs(30))?;
    assert!(
        t_rib >= HOLD_DOWN - Duration::from_millis(500),
        "node3 withdrawn after {t_rib:?}, before the hold-down of {HOLD_DOWN:?}"
    );
    report.push(format!(
        "hold-down: node3's endpoint removed -> node3's path withdrawn at the ToR after {} (hold-down {}), FIB {}",
        secs(t_rib),
        secs(HOLD_DOWN),
        secs(t_fib)
    ));

    // deleted: withdrawn everywhere; the address back in the pool.
    let t0 = Instant::now();
    k.kubectl(&["delete", "service", "web", "-n", "default", "--wait=true"])?;
    k.kubectl(&["delete", "endpointslice", "web-1", "-n", "default"])?;
    let (t_rib, t_fib) = env.wait_at_tor(&host, &[], t0, Duration::from_secs(30))?;
    wait_for(
        "web's /32 gone from every node's FIB",
        Duration::from_secs(10),
        || {
            for n in &c.nodes {
                if !kernel_routes(&n.ns, &host)?.is_empty() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )?;
    let ip_addr: IpAddr = ip.parse()?;
    wait_for(
        "web's address free in the datastore",
        Duration::from_secs(10),
        || Ok((!env.allocations()?.contains_key(&ip_addr)).then_some(())),
    )?;
    let show: Value = serde_json::from_str(&k.petrelctl(&["ipam", "show", "--json"])?)?;
    report.push(format!(
        "deleted: /32 gone from the ToR's table {}, its FIB {}, every node's FIB; {ip} free",
        secs(t_rib),
        secs(t_fib)
    ));
    eprintln!("petrelctl ipam show --json after the delete: {show}");

    // cluster: Cluster policy, no endpoints needed: every node.
    let t0 = Instant::now();
    k.apply(&service("webc", "Cluster", &[80], json!({})))?;
    let ipc = env.wait_ingress("webc")?;
    let (t_rib, t_fib) = env.wait_at_tor(
        &format!("{ipc}/32"),
        &["node1", "node2", "node3"],
        t0,
        Duration::from_secs(30),
    )?;
    report.push(format!(
        "cluster: apply of webc -> {ipc}/32 via node1-3 in the ToR's table {}, its FIB (3 nexthops) {}",
        secs(t_rib),
        secs(t_fib)
    ));

    // sharing: one key, different ports: one address.
    let share = json!({"petrel.io/sharing-key": "k1"});
    k.apply(&service("share-a", "Cluster", &[80], share.clone()))?;
    k.apply(&service("share-b", "Cluster", &[443], share))?;
    let (a, b) = (env.wait_ingress("share-a")?, env.wait_ingress("share-b")?);
    assert_eq!(a, b, "share-a and share-b have different addresses");
    env.wait_at_tor(
        &format!("{a}/32"),
        &["node1", "node2", "node3"],
        Instant::now(),
        Duration::from_secs(30),
    )?;
    let handles: Vec<String> = env
        .allocations()?
        .into_iter()
        .filter(|(addr, _)| addr.to_string() == a)
        .map(|(_, (h, _))| h)
        .collect();
    assert_eq!(handles, ["lb-shared.default.k1"], "{handles:?}");
    report.push(format!(
        "sharing: share-a (80) and share-b (443) both {a}, one handle {}, routed via node1-3",
        handles[0]
    ));

    // outside: an Event, nothing else changes.
    let snap = env.tor_snapshot()?;
    let allocs = env.allocations()?;
    k.apply(&service(
        "far",
        "Cluster",
        &[8443],
        json!({"petrel.io/loadBalancerIPs": "203.0.113.9"}),
    ))?;
    let ev = wait_for(
        "an AllocationFailed Event on far",
        Duration::from_secs(30),
        || {
            let v = k.api.get_json(&[
                "events",
                "-n",
                "default",
                "--field-selector",
                "involvedObject.name=far",
            ])?;
            Ok(v["items"]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["reason"] == "AllocationFailed"))
                .cloned())
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.ingress("far")?, None);
    assert_eq!(
        env.allocations()?,
        allocs,
        "the datastore's allocations changed"
    );
    let now = env.tor_snapshot()?;
    assert!(
        same_paths(&now, &snap),
        "the ToR's routes changed: {snap:?} -> {now:?}"
    );
    assert!(
        env.tor_paths("203.0.113.9/32")?.is_empty(),
        "203.0.113.9 routed"
    );
    report.push(format!(
        "outside: Event {}: {:?}; no address, no allocation, no route changed",
        ev["reason"].as_str().unwrap_or_default(),
        ev["message"].as_str().unwrap_or_default()
    ));

    // apiserver outage: no route changes; a change right after lands.
    let snap = env.tor_snapshot()?;
    let table = env.tor_table()?;
    let fib = env.tor_kernel()?;
    k.api.pause();
    let t0 = Instant::now();
    let mut polls = 0;
    while t0.elapsed() < Duration::from_secs(outage) {
        let now = env.tor_table();
        if !matches!(&now, Ok(t) if *t == table) {
            k.api.resume();
            bail!("the ToR's table changed during the apiserver outage: {table:?} -> {now:?}");
        }
        if env.tor_kernel()? != fib {
            k.api.resume();
            bail!("the ToR's FIB changed during the apiserver outage");
        }
        polls += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    k.api.resume();
    let t0 = Instant::now();
    k.apply(&service("after", "Cluster", &[80], json!({})))?;
    let t_apply = t0.elapsed();
    let ipa = env.wait_ingress("after")?;
    let t_ingress = t0.elapsed();
    let (t_rib, t_fib) = env.wait_at_tor(
        &format!("{ipa}/32"),
        &["node1", "node2", "node3"],
        t0,
        Duration::from_secs(60),
    )?;
    let mut after = env.tor_snapshot()?;
    after.retain(|(p, _), _| *p != format!("{ipa}/32"));
    assert!(
        same_paths(&after, &snap),
        "routes changed across the outage besides the new one: {snap:?} -> {after:?}"
    );
    report.push(format!(
        "apiserver outage: SIGSTOP {outage} s, {polls} polls: the ToR's table and FIB unchanged; \
         after SIGCONT, apply of `after` (kubectl took {}) -> ingress {}, /32 in the ToR's table {}, FIB {}",
        secs(t_apply),
        secs(t_ingress),
        secs(t_rib),
        secs(t_fib)
    ));

    // leak: a pod whose CNI DEL was lost, and a live one, on node2. In
    // the dual-stack lab each has two addresses, and the leak is both.
    let mut leak_addrs: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for name in ["leaky", "alive"] {
        k.apply(&petrel_tests::lab::k8s::pod_object(name, "node2").to_string())?;
        let pod_ns = c.lab.netns(name)?;
        let res = node2.cni_pod("ADD", &pod_ns, name, c.etcd.endpoint(), 1450)?;
        let addrs = res["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
            .collect::<Vec<IpAddr>>();
        let want = if c.options.ipv6 { 2 } else { 1 };
        assert_eq!(addrs.len(), want, "{name}'s addresses: {res}");
        leak_addrs.insert(name, addrs);
    }
    let allocs = env.allocations()?;
    for (name, addrs) in &leak_addrs {
        for addr in addrs {
            assert_eq!(
                allocs.get(addr).and_then(|(_, p)| p.as_deref()),
                Some(*name),
                "{addr} not recorded for pod {name}"
            );
        }
    }
    let lab_pods: Vec<(IpAddr, String)> = c
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .flat_map(|p| p.addresses().into_iter().map(move |a| (a, p)))
        .map(|(a, p)| Ok((a.parse()?, p.container_id.clone())))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    // No kubelet: a graceful delete would wait for one forever.
    k.kubectl(&[
        "delete",
        "pod",
        "leaky",
        "-n",
        "default",
        "--grace-period=0",
        "--force",
    ])?;
    let leaky = &leak_addrs["leaky"];
    let alive = &leak_addrs["alive"];
    wait_for(
        "leaky's addresses reclaimed",
        LEAK_GRACE + Duration::from_secs(30),
        || {
            let a = env.allocations()?;
            // Never a live pod's address, at any moment.
            if let Some(x) = alive.iter().find(|x| !a.contains_key(x)) {
                bail!("alive's address {x} was released");
            }
            for (addr, pod) in &lab_pods {
                if !a.contains_key(addr) {
                    bail!("lab pod {pod}'s address {addr} was released");
                }
            }
            Ok((!leaky.iter().any(|x| a.contains_key(x))).then_some(()))
        },
    )?;
    let took = t0.elapsed();
    assert!(
        took >= LEAK_GRACE,
        "reclaimed {took:?} after the delete, before the grace"
    );
    // Another look at gc intervals later: the live ones stay.
    std::thread::sleep(Duration::from_secs(3));
    let a = env.allocations()?;
    assert!(alive.iter().all(|x| a.contains_key(x)));
    assert!(lab_pods.iter().all(|(addr, _)| a.contains_key(addr)));
    // The status record follows within a few seconds; it counts addresses.
    let st = wait_for(
        "the reclaim in the controller's status",
        Duration::from_secs(20),
        || {
            let st = k.controller_status()?;
            Ok((st["status"]["leaks_reclaimed"] == leaky.len()).then_some(st))
        },
    )?;
    let list = |v: &[IpAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    report.push(format!(
        "leak: pod leaky ({}) deleted without CNI DEL -> reclaimed after {} (grace {}); \
         alive ({}) and the 6 lab pods kept; controller status: {}",
        list(leaky),
        secs(took),
        secs(LEAK_GRACE),
        list(alive),
        st["status"]["recent_reclaimed"]
    ));

    eprintln!("\n== e2e_k8s, lab pool {LB_POOL}");
    for r in &report.0 {
        eprintln!("{r}");
    }
    drop(k);
    Ok(())
}

/// What a user does with the README's lab: `petrel-lab up --kubernetes
/// --json` (here with the BIRD ToR, the other half of the e2e above), then
/// kubectl with the kubeconfig the JSON names. A LoadBalancer Service gets
/// an address of the `loadbalancer_pool` the JSON names, routed in the
/// ToR's kernel FIB; deleted, the route goes; `down` leaves nothing.
#[test]
fn petrel_lab_up_kubernetes_with_bird() -> Result<()> {
    if !can_run(petrel_tests::lab::topo::Kind::Bird) {
        return Ok(());
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("plabk{}", std::process::id());
    let dir = petrel_tests::bin("petreld")?
        .parent()
        .map(|d| d.to_path_buf())
        .unwrap_or_default();
    let lab = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel-lab"))
            .args(args)
            .args(["--name", &name])
            .env("PETREL_BIN_DIR", &dir)
            .stdin(std::process::Stdio::null())
            .output()
    };
    let out = lab(&["up", "--kubernetes", "--tor", "bird", "--json"])?;
    let result = (|| -> Result<()> {
        if !out.status.success() {
            bail!("petrel-lab up: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let kube = &v["kubernetes"];
        let kubeconfig = kube["kubeconfig"].as_str().unwrap_or_default().to_string();
        let pool = kube["loadbalancer_pool"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let in_pool = |a: std::net::Ipv4Addr| -> Result<bool> {
            let (net, len) = pool
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("loadbalancer_pool {pool:?} in {v}"))?;
            let (net, len): (std::net::Ipv4Addr, u32) = (net.parse()?, len.parse()?);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Ok(u32::from(a) & mask == u32::from(net) & mask)
        };
        let tor_ns = v["tor"]["netns"].as_str().unwrap_or_default().to_string();
        let kube_ns = kube["netns"].as_str().unwrap_or_default().to_string();
        let nodes: BTreeSet<String> = v["nodes"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|n| n["address"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let kubectl = |args: &[&str], input: Option<&str>| -> Result<String> {
            use std::io::Write as _;
            // Inside the apiserver's namespace, as the JSON's `kubectl`
            // says: the lab's addresses exist only in its namespaces.
            let mut child = std::process::Command::new("ip")
                .args(["netns", "exec", &kube_ns])
                .arg(petrel_tests::lab::kube::kubectl_bin()?)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            if let Some(i) = input {
                child.stdin.take().map(|mut s| s.write_all(i.as_bytes()));
            }
            drop(child.stdin.take());
            let o = child.wait_with_output()?;
            if !o.status.success() {
                bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            }
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        };
        ensure!(
            kube["kubectl"]
                .as_str()
                .is_some_and(|k| k.starts_with(&format!("ip netns exec {kube_ns} "))),
            "{v}"
        );
        let got = kubectl(&["get", "nodes", "-o", "name"], None)?;
        assert_eq!(got.lines().count(), 3, "{got}");
        kubectl(
            &["create", "-f", "-"],
            Some(&service("bird-web", "Cluster", &[80], json!({}))),
        )?;
        let ip = wait_for("bird-web's ingress", Duration::from_secs(60), || {
            let o = kubectl(&["get", "service", "bird-web", "-o", "json"], None)?;
            let s: Value = serde_json::from_str(&o)?;
            Ok(s["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .map(String::from))
        })?;
        assert!(in_pool(ip.parse()?)?, "{ip} not in {pool}");
        let route = |dst: &str| -> Result<String> {
            let o = std::process::Command::new("ip")
                .args(["-n", &tor_ns, "route", "show", dst])
                .output()?;
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let dst = format!("{ip}/32");
        // BIRD installs one of the nodes' paths (no `merge paths` in the
        // lab's config): a route via one of them.
        let r = wait_for(
            "the Service's /32 in the ToR's FIB",
            Duration::from_secs(60),
            || {
                let r = route(&dst)?;
                Ok((!r.trim().is_empty()).then_some(r))
            },
        )?;
        assert!(
            nodes.iter().any(|n| r.contains(&format!("via {n} "))),
            "{dst} at the ToR not via a node ({nodes:?}): {r}"
        );
        kubectl(&["delete", "service", "bird-web", "--wait=true"], None)?;
        wait_for(
            "the /32 withdrawn at the ToR",
            Duration::from_secs(60),
            || Ok(route(&dst)?.trim().is_empty().then_some(())),
        )?;
        Ok(())
    })();
    let down = lab(&["down"])?;
    result?;
    assert!(down.status.success(), "petrel-lab down failed");
    Ok(())
}
