//! The lab's real kube-apiserver (built from source by .ci/setup) on
//! Debian's etcd, in network namespaces: the objects petrel reads and writes
//! in a cluster (Node, a LoadBalancer Service and its status, an
//! EndpointSlice) go through the real API machinery (authentication, RBAC,
//! validation, the service IP and node port allocators, the status
//! subresource) and land in etcd. Needs root, etcd, kubectl, openssl and the
//! apiserver binary.

use anyhow::Result;
use petrel_tests::lab::etcd::Etcd;
use petrel_tests::lab::kube::{require_apiserver, KubeApiserver};
use petrel_tests::lab::{require_lab, Lab};
use serde_json::Value;
use std::time::Instant;

const ETCD_ADDR: &str = "10.99.7.2";
const API_ADDR: &str = "10.99.7.3";

const NODE: &str = r#"{
  "apiVersion": "v1",
  "kind": "Node",
  "metadata": {"name": "node1", "labels": {"rack": "r1"}},
  "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}
}"#;

const SERVICE: &str = r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "web", "namespace": "petrel"},
  "spec": {
    "type": "LoadBalancer",
    "selector": {"app": "web"},
    "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
  }
}"#;

const SLICE: &str = r#"{
  "apiVersion": "discovery.k8s.io/v1",
  "kind": "EndpointSlice",
  "metadata": {
    "name": "web-1",
    "namespace": "petrel",
    "labels": {"kubernetes.io/service-name": "web"}
  },
  "addressType": "IPv4",
  "endpoints": [
    {"addresses": ["10.244.1.5"], "nodeName": "node1", "conditions": {"ready": true}},
    {"addresses": ["10.244.1.6"], "nodeName": "node1", "conditions": {"ready": false}}
  ],
  "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]
}"#;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn ipv4(a: &str) -> [u8; 4] {
    let ip: std::net::Ipv4Addr = a.parse().unwrap_or_else(|_| panic!("not IPv4: {a}"));
    ip.octets()
}

#[test]
fn apiserver_on_etcd_serves_nodes_services_status_and_endpointslices() -> Result<()> {
    if !require_lab(&["etcd", "etcdctl"]) || !require_apiserver() {
        return Ok(());
    }
    let lab = Lab::new("kube")?;
    let (e, k) = (lab.netns("etcd")?, lab.netns("kube")?);
    lab.link(
        &e,
        &[&format!("{ETCD_ADDR}/24")],
        &k,
        &[&format!("{API_ADDR}/24")],
    )?;
    let etcd = Etcd::start(&lab, &e, ETCD_ADDR)?;
    let t = Instant::now();
    let api = KubeApiserver::start(&lab, &k, API_ADDR, etcd.endpoint())?;
    eprintln!(
        "kube-apiserver ready in {:.1} s, RSS {} MiB",
        t.elapsed().as_secs_f64(),
        api.rss_kib()? / 1024
    );
    assert_eq!(api.endpoint(), format!("https://{API_ADDR}:6443"));
    assert!(api.kubeconfig().is_file());

    // Authentication is real: a wrong token is refused, and so is
    // anonymous access to anything but the public health endpoints.
    let err = api
        .kubectl(&["--token=wrong", "get", "nodes"])
        .expect_err("a wrong token was accepted");
    assert!(
        format!("{err:#}").contains("You must be logged in to the server"),
        "{err:#}"
    );
    let version: Value = serde_json::from_str(&api.kubectl(&["get", "--raw", "/version"])?)?;
    assert_eq!(
        s(&version["gitVersion"]),
        petrel_tests::lab::kube::KUBE_VERSION
    );

    api.kubectl(&["create", "namespace", "petrel"])?;
    api.kubectl_stdin(&["create", "-f", "-"], NODE)?;
    // The kubelet's way: addresses go through the status subresource.
    api.kubectl(&[
        "patch",
        "node",
        "node1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"addresses":[{"type":"InternalIP","address":"10.99.0.11"},{"type":"Hostname","address":"node1"}]}}"#,
    ])?;
    let node = api.get_json(&["node", "node1"])?;
    assert_eq!(s(&node["spec"]["podCIDR"]), "10.244.1.0/24");
    assert_eq!(s(&node["metadata"]["labels"]["rack"]), "r1");
    assert_eq!(s(&node["status"]["addresses"][0]["type"]), "InternalIP");
    assert_eq!(s(&node["status"]["addresses"][0]["address"]), "10.99.0.11");

    // The Service gets a cluster IP from the service range and a node port.
    api.kubectl_stdin(&["create", "-f", "-"], SERVICE)?;
    let svc = api.get_json(&["-n", "petrel", "service", "web"])?;
    assert_eq!(s(&svc["spec"]["type"]), "LoadBalancer");
    let ip = ipv4(s(&svc["spec"]["clusterIP"]));
    assert_eq!(ip[..2], [10, 96], "cluster IP outside 10.96.0.0/16: {svc}");
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{svc}");
    assert_eq!(svc["status"]["loadBalancer"], serde_json::json!({}));

    // Validation is real: a cluster IP outside the range is refused.
    let bad = SERVICE
        .replace("\"web\"", "\"bad\"")
        .replace("\"type\"", "\"clusterIP\": \"192.0.2.1\", \"type\"");
    let err = api
        .kubectl_stdin(&["create", "-f", "-"], &bad)
        .expect_err("a cluster IP outside the service range was accepted");
    assert!(format!("{err:#}").contains("192.0.2.1"), "{err:#}");

    // Status goes through the status subresource only: a patch of the
    // main resource drops it, a patch of status keeps it.
    let ingress = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10","ipMode":"VIP"}]}}}"#;
    api.kubectl(&[
        "-n",
        "petrel",
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        ingress,
    ])?;
    let svc = api.get_json(&["-n", "petrel", "service", "web"])?;
    assert_eq!(svc["status"]["loadBalancer"], serde_json::json!({}));
    api.kubectl(&[
        "-n",
        "petrel",
        "patch",
        "service",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        ingress,
    ])?;
    let svc = api.get_json(&["-n", "petrel", "service", "web"])?;
    let ing = &svc["status"]["loadBalancer"]["ingress"];
    assert_eq!(ing.as_array().map(Vec::len), Some(1), "{svc}");
    assert_eq!(s(&ing[0]["ip"]), "192.0.2.10");
    assert_eq!(s(&ing[0]["ipMode"]), "VIP");
    assert_eq!(ipv4(s(&svc["spec"]["clusterIP"])), ip, "cluster IP changed");

    // The EndpointSlice, found by its service-name label.
    api.kubectl_stdin(&["create", "-f", "-"], SLICE)?;
    let slices = api.get_json(&[
        "-n",
        "petrel",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ])?;
    let items = slices["items"].as_array().unwrap();
    let mine: Vec<&Value> = items
        .iter()
        .filter(|i| i["metadata"]["name"] == "web-1")
        .collect();
    assert_eq!(mine.len(), 1, "{slices}");
    let eps = mine[0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(s(&eps[0]["addresses"][0]), "10.244.1.5");
    assert_eq!(s(&eps[0]["nodeName"]), "node1");
    assert_eq!(eps[0]["conditions"]["ready"], true);
    assert_eq!(eps[1]["conditions"]["ready"], false);
    assert_eq!(mine[0]["ports"][0]["port"], 8080);

    // It all is in etcd, under the API server's prefix.
    let keys = e.exec(
        "etcdctl",
        &[
            "--endpoints",
            etcd.endpoint(),
            "get",
            "--prefix",
            "--keys-only",
            "/registry/",
        ],
    )?;
    for key in [
        "/registry/minions/node1",
        "/registry/services/specs/petrel/web",
        "/registry/endpointslices/petrel/web-1",
    ] {
        assert!(keys.lines().any(|l| l == key), "{key} not in etcd:\n{keys}");
    }

    // An outage and back.
    api.pause();
    assert!(api
        .kubectl(&["get", "--raw", "/readyz", "--request-timeout=1s"])
        .is_err());
    api.resume();
    api.wait_ready()?;
    let svc = api.get_json(&["-n", "petrel", "service", "web"])?;
    assert_eq!(
        s(&svc["status"]["loadBalancer"]["ingress"][0]["ip"]),
        "192.0.2.10"
    );
    api.stop()?;
    assert!(!api.daemon().alive());
    Ok(())
}
