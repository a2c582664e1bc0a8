//! petrel-controller against a real kube-apiserver and a real etcd: a
//! LoadBalancer Service gets an address from petrel's load-balancer pool
//! and its status.ingress; a Local-policy Service with an EndpointSlice on
//! node2 gets a record advertised from node2 only; a request outside every
//! pool becomes an Event; deleting the Service gives the address back and
//! removes the record; a second controller stands by and takes over when
//! the first stops. Objects are made with kubectl, as a user would. Needs
//! root, etcd, kubectl, openssl, the apiserver (.ci/kube-apiserver.sh) and
//! the petrel-controller and petrelctl binaries; in CI a missing piece
//! fails the test.

use anyhow::{bail, Result};
use petrel_tests::lab::etcd::Etcd;
use petrel_tests::lab::kube::{require_apiserver, KubeApiserver, SERVICE_CIDR};
use petrel_tests::lab::{require_lab, Daemon, Lab, Netns};
use serde_json::Value;
use std::time::{Duration, Instant};

const ETCD_ADDR: &str = "10.99.8.2";
const API_ADDR: &str = "10.99.8.3";
const LB_POOL: &str = "192.0.2.0/27";

const SERVICE: &str = r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "web", "namespace": "default"},
  "spec": {
    "type": "LoadBalancer",
    "externalTrafficPolicy": "Local",
    "selector": {"app": "web"},
    "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
  }
}"#;

const SLICE: &str = r#"{
  "apiVersion": "discovery.k8s.io/v1",
  "kind": "EndpointSlice",
  "metadata": {
    "name": "web-1",
    "namespace": "default",
    "labels": {"kubernetes.io/service-name": "web"}
  },
  "addressType": "IPv4",
  "endpoints": [
    {"addresses": ["10.244.2.5"], "nodeName": "node2", "conditions": {"ready": true}},
    {"addresses": ["10.244.3.6"], "nodeName": "node3", "conditions": {"ready": false, "serving": false}}
  ],
  "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]
}"#;

const NODE: &str = r#"{
  "apiVersion": "v1",
  "kind": "Node",
  "metadata": {"name": "node1", "labels": {"zone": "z1", "rack": "from-kubernetes"}}
}"#;

const OUTSIDE: &str = r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "far", "namespace": "default",
               "annotations": {"petrel.io/loadBalancerIPs": "203.0.113.9"}},
  "spec": {
    "type": "LoadBalancer",
    "ports": [{"protocol": "TCP", "port": 443}]
  }
}"#;

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < limit {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {limit:?} waiting for {what} (last error: {last})")
}

/// In 192.0.2.0/27.
fn in_pool(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.octets()[..3] == [192, 0, 2] && a.octets()[3] < 32)
}

struct Env<'a> {
    ns: &'a Netns,
    api: &'a KubeApiserver,
    etcd: String,
}

impl Env<'_> {
    fn etcd_get(&self, key: &str) -> Result<Option<Value>> {
        let out = self.ns.exec(
            "etcdctl",
            &["--endpoints", &self.etcd, "get", key, "--print-value-only"],
        )?;
        let out = out.trim();
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(out)?))
    }
    fn etcd_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self.ns.exec(
            "etcdctl",
            &[
                "--endpoints",
                &self.etcd,
                "get",
                prefix,
                "--prefix",
                "--keys-only",
            ],
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect())
    }
    fn petrelctl(&self, args: &[&str]) -> Result<String> {
        let bin = petrel_tests::bin("petrelctl")?;
        let mut a = vec!["--etcd-endpoints", &self.etcd];
        a.extend_from_slice(args);
        self.ns.exec(&bin.to_string_lossy(), &a)
    }
    fn ingress(&self, name: &str) -> Result<Option<String>> {
        let v = self.api.get_json(&["service", name, "-n", "default"])?;
        Ok(v["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from))
    }
}

/// etcd, the apiserver and petrel's binaries (in CI a missing piece
/// fails the test).
fn can_run() -> bool {
    require_lab(&["etcd", "etcdctl"])
        && require_apiserver()
        && petrel_tests::have_bin("petrel-controller")
        && petrel_tests::have_bin("petrelctl")
}

/// A lab with etcd and a kube-apiserver on it (`service_cidr` its
/// `--service-cluster-ip-range`), each in its own namespace; the
/// apiserver's namespace is where the tests work. The lab goes last.
fn control_plane(name: &str, service_cidr: &str) -> Result<(Lab, Netns, Etcd, KubeApiserver)> {
    let lab = Lab::new(name)?;
    let (e, k) = (lab.netns("etcd")?, lab.netns("kube")?);
    lab.link(
        &e,
        &[&format!("{ETCD_ADDR}/24")],
        &k,
        &[&format!("{API_ADDR}/24")],
    )?;
    let etcd = Etcd::start(&lab, &e, ETCD_ADDR)?;
    let api = KubeApiserver::start_with(&lab, &k, API_ADDR, etcd.endpoint(), service_cidr)?;
    Ok((lab, k, etcd, api))
}

fn controller(
    lab: &Lab,
    ns: &Netns,
    api: &KubeApiserver,
    etcd: &str,
    id: &str,
    metrics: &str,
) -> Result<Daemon> {
    let bin = petrel_tests::bin("petrel-controller")?;
    let kc = api.kubeconfig().to_string_lossy().into_owned();
    let log = lab.subdir("controller")?.join(format!("{id}.log"));
    Daemon::spawn(
        lab,
        ns,
        id,
        &log,
        &bin.to_string_lossy(),
        &[
            "--kubeconfig",
            &kc,
            "--etcd-endpoints",
            etcd,
            "--identity",
            id,
            "--metrics-listen",
            metrics,
            "--endpoint-hold-down",
            "1s",
            "--node-grace",
            "3s",
            "--gc-interval",
            "1s",
        ],
        &[("RUST_LOG", "info,kube=warn")],
    )
}

#[test]
fn controller_allocates_advertises_reports_and_releases() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let (lab, k, etcd, api) = control_plane("k8sctl", SERVICE_CIDR)?;
    let env = Env {
        ns: &k,
        api: &api,
        etcd: etcd.endpoint().to_string(),
    };
    env.petrelctl(&[
        "pool",
        "add",
        LB_POOL,
        "--name",
        "lb",
        "--block-size",
        "28",
        "--allowed-uses",
        "load-balancer",
    ])?;
    let c1 = controller(&lab, &k, &api, etcd.endpoint(), "ctl-a", "127.0.0.1:9180")?;
    // The first to find no lease leads; the second stands by.
    wait_for("ctl-a to lead", Duration::from_secs(20), || {
        Ok(env
            .etcd_get("/petrel/controller/v1/leader")?
            .filter(|v| v["holder"] == "ctl-a"))
    })?;
    let c2 = controller(&lab, &k, &api, etcd.endpoint(), "ctl-b", "127.0.0.1:9181")?;

    // 1. A LoadBalancer Service gets an address of the pool and its status.
    let t = Instant::now();
    api.kubectl_stdin(&["create", "-f", "-"], SERVICE)?;
    let ip = wait_for(
        "status.loadBalancer.ingress of web",
        Duration::from_secs(30),
        || env.ingress("web"),
    )?;
    eprintln!("web got {ip} in {:.2} s", t.elapsed().as_secs_f64());
    assert!(in_pool(&ip), "{ip} not in {LB_POOL}");
    let svc = api.get_json(&["service", "web", "-n", "default"])?;
    let uid = svc["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(svc["metadata"]["finalizers"][0], "petrel.io/lb", "{svc}");
    let handle_key = format!("/petrel/ipam/v1/handles/lb.default.web.{uid}");
    assert!(
        env.etcd_get(&handle_key)?.is_some(),
        "no handle {handle_key}"
    );

    // 2. Local policy + an EndpointSlice with a ready endpoint on node2
    // (node3's is neither ready nor serving): advertised from node2 only.
    api.kubectl_stdin(&["create", "-f", "-"], SLICE)?;
    let rec_key = "/petrel/bgp/v1/services/k8s.default.web.external";
    let rec = wait_for(
        "the service record with node2",
        Duration::from_secs(30),
        || {
            Ok(env
                .etcd_get(rec_key)?
                .filter(|r| r["endpoint_nodes"] == serde_json::json!(["node2"])))
        },
    )?;
    assert_eq!(rec["local_only"], true, "{rec}");
    assert_eq!(
        rec["addresses"],
        serde_json::json!([format!("{ip}/32")]),
        "{rec}"
    );

    // 3. A request outside every pool: an Event on the Service, no address.
    api.kubectl_stdin(&["create", "-f", "-"], OUTSIDE)?;
    let ev = wait_for(
        "an AllocationFailed Event on far",
        Duration::from_secs(30),
        || {
            let v = api.get_json(&[
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
    let msg = ev["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("203.0.113.9") && msg.contains("no load-balancer pool"),
        "{ev}"
    );
    assert_eq!(env.ingress("far")?, None);

    // 4. The status record, through petrelctl.
    let status = wait_for("the status record", Duration::from_secs(30), || {
        let out = env.petrelctl(&["controller", "status", "--json"])?;
        let v: Value = serde_json::from_str(&out)?;
        Ok((v["status"]["lb_allocated"] == 1 && v["status"]["lb_failed"] == 1).then_some(v))
    })?;
    assert_eq!(status["status"]["leader"], "ctl-a", "{status}");

    // 5. Delete: the address goes back to the pool, the record goes.
    api.kubectl(&["delete", "service", "web", "-n", "default", "--wait=true"])?;
    wait_for(
        "the handle and the record to go",
        Duration::from_secs(30),
        || {
            Ok(
                (env.etcd_get(&handle_key)?.is_none() && env.etcd_get(rec_key)?.is_none())
                    .then_some(()),
            )
        },
    )?;
    for key in env.etcd_keys("/petrel/ipam/v1/blocks/")? {
        let b = env.etcd_get(&key)?.unwrap_or_default();
        let held = b["allocations"].as_object().map_or(0, |m| m.len());
        assert_eq!(held, 0, "{key} still holds {b}");
    }

    // 6. Node labels into the node record; the file's label wins; the
    // Node deleted -> its record collected after the (3 s) grace.
    env.petrelctl(&["node", "label", "node1", "rack=from-file"])?;
    api.kubectl_stdin(&["create", "-f", "-"], NODE)?;
    let rec = wait_for(
        "node1's labels in its record",
        Duration::from_secs(30),
        || {
            Ok(env
                .etcd_get("/petrel/ipam/v1/nodes/node1")?
                .filter(|n| n["labels"]["zone"] == "z1"))
        },
    )?;
    assert_eq!(rec["labels"]["rack"], "from-file", "{rec}");
    let t = Instant::now();
    api.kubectl(&["delete", "node", "node1"])?;
    wait_for("node1's record collected", Duration::from_secs(30), || {
        Ok(env
            .etcd_get("/petrel/ipam/v1/nodes/node1")?
            .is_none()
            .then_some(()))
    })?;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "collected before the grace: {took:?}"
    );
    eprintln!(
        "node1 collected {:.1} s after its delete",
        took.as_secs_f64()
    );

    // 7. Failover: the leader is killed (no chance to give the lease up);
    // the other takes over within 15 s by its own clock and serves a new
    // Service.
    let t = Instant::now();
    c1.kill9();
    wait_for("ctl-b to lead", Duration::from_secs(20), || {
        Ok(env
            .etcd_get("/petrel/controller/v1/leader")?
            .filter(|v| v["holder"] == "ctl-b"))
    })?;
    let took = t.elapsed();
    eprintln!(
        "ctl-b leads {:.2} s after ctl-a was killed",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    api.kubectl_stdin(
        &["create", "-f", "-"],
        &SERVICE.replace("\"web\"", "\"web2\""),
    )?;
    let ip2 = wait_for("web2's address from ctl-b", Duration::from_secs(30), || {
        env.ingress("web2")
    })?;
    assert!(in_pool(&ip2), "{ip2} not in {LB_POOL}");
    // Nothing allocated twice: one handle, one address.
    let handles = env.etcd_keys("/petrel/ipam/v1/handles/lb.")?;
    assert_eq!(handles.len(), 1, "{handles:?}");
    c2.stop()?;
    Ok(())
}

const LB_POOL6: &str = "2001:db8:5::/120";

/// A dual-stack Service of `policy` with `families` in that order.
fn dual_service(name: &str, policy: &str, families: &[&str]) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": policy,
            "ipFamilies": families,
            "selector": {"app": name},
            "ports": [{"protocol": "TCP", "port": 80}]
        }
    })
    .to_string()
}

/// Dual-stack clusters (issue 13: "v4, v6 and dual-stack by
/// ipFamilies/ipFamilyPolicy"): against an apiserver with a v4 and a v6
/// service range, a RequireDualStack Service gets one address of each
/// family in its `ipFamilies` order, a SingleStack IPv6 Service one v6
/// address, a PreferDualStack one both; each address is in its family's
/// load-balancer pool and in the Service's record as /32 or /128. The
/// controller's /metrics, scraped as Prometheus would, counts what it did.
#[test]
fn controller_serves_dual_stack_services_and_counts_them() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let (lab, k, etcd, api) = control_plane("k8sds", "10.96.0.0/16,fd00:96::/112")?;
    let env = Env {
        ns: &k,
        api: &api,
        etcd: etcd.endpoint().to_string(),
    };
    for (cidr, name, size) in [(LB_POOL, "lb4", "28"), (LB_POOL6, "lb6", "124")] {
        env.petrelctl(&[
            "pool",
            "add",
            cidr,
            "--name",
            name,
            "--block-size",
            size,
            "--allowed-uses",
            "load-balancer",
        ])?;
    }
    let metrics_addr = "127.0.0.1:9182";
    let c = controller(&lab, &k, &api, etcd.endpoint(), "ctl-ds", metrics_addr)?;

    let ingress = |name: &str| -> Result<Vec<String>> {
        let v = api.get_json(&["service", name, "-n", "default"])?;
        Ok(v["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|i| i["ip"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    };
    let in_pool6 = |ip: &str| {
        ip.parse::<std::net::Ipv6Addr>().is_ok_and(|a| {
            a.segments()[..7] == [0x2001, 0xdb8, 5, 0, 0, 0, 0] && a.segments()[7] < 0x100
        })
    };
    let cases = [
        ("both", "RequireDualStack", vec!["IPv4", "IPv6"]),
        ("six", "SingleStack", vec!["IPv6"]),
        ("six-first", "PreferDualStack", vec!["IPv6", "IPv4"]),
    ];
    for (name, policy, families) in &cases {
        api.kubectl_stdin(
            &["create", "-f", "-"],
            &dual_service(name, policy, families),
        )?;
    }
    for (name, policy, families) in &cases {
        let ips = wait_for(
            &format!("{name}'s {} ingress addresses", families.len()),
            Duration::from_secs(30),
            || {
                let ips = ingress(name)?;
                Ok((ips.len() == families.len()).then_some(ips))
            },
        )?;
        eprintln!("{name} ({policy} {families:?}): {ips:?}");
        for (ip, family) in ips.iter().zip(families) {
            match *family {
                "IPv4" => assert!(in_pool(ip), "{name}: {ip} not in {LB_POOL}"),
                _ => assert!(in_pool6(ip), "{name}: {ip} not in {LB_POOL6}"),
            }
        }
        // Cluster policy: one record with every address, at full length.
        let key = format!("/petrel/bgp/v1/services/k8s.default.{name}.external");
        let rec = wait_for(&format!("{name}'s record"), Duration::from_secs(30), || {
            env.etcd_get(&key)
        })?;
        let mut want: Vec<String> = ips
            .iter()
            .map(|ip| match ip.contains(':') {
                true => format!("{ip}/128"),
                false => format!("{ip}/32"),
            })
            .collect();
        let mut got: Vec<String> = rec["addresses"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{name}: {rec}");
        assert_eq!(rec["local_only"], false, "{rec}");
    }

    // Metrics: three Services hold addresses, five addresses were
    // assigned, none failed; the caches saw the Services.
    let text = wait_for(
        "the controller's metrics to count the five addresses",
        Duration::from_secs(30),
        || {
            let t = petrel_tests::lab::metrics::scrape(&k, metrics_addr)?;
            let v =
                petrel_tests::lab::metrics::sample(&t, "petrel_controller_lb_allocations_total");
            Ok((v == Some(5.0)).then_some(t))
        },
    )?;
    let s = |n: &str| petrel_tests::lab::metrics::sample(&text, n);
    assert_eq!(s("petrel_controller_leader"), Some(1.0), "{text}");
    assert_eq!(
        s("petrel_controller_lb_services_allocated"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        s("petrel_controller_lb_services_failed"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        s("petrel_controller_lb_releases_total"),
        Some(0.0),
        "{text}"
    );
    // The apiserver's own `kubernetes` Service is in the cache too.
    assert!(
        s("petrel_controller_services").is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        s("petrel_controller_watch_events_total").is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE petrel_controller_lb_allocations_total counter"),
        "{text}"
    );

    // Deleting the dual-stack Service gives both addresses back.
    api.kubectl(&["delete", "service", "both", "-n", "default", "--wait=true"])?;
    wait_for("two releases counted", Duration::from_secs(30), || {
        let t = petrel_tests::lab::metrics::scrape(&k, metrics_addr)?;
        Ok(
            (petrel_tests::lab::metrics::sample(&t, "petrel_controller_lb_releases_total")
                == Some(2.0))
            .then_some(()),
        )
    })?;
    let handles = env.etcd_keys("/petrel/ipam/v1/handles/lb.default.both.")?;
    assert!(handles.is_empty(), "{handles:?}");
    c.stop()?;
    Ok(())
}
