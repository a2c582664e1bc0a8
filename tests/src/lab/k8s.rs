//! Kubernetes on top of the three-node lab: a real kube-apiserver on the
//! lab's etcd and a petrel-controller, for `petrel-lab up --kubernetes` and
//! the end-to-end suite `e2e_k8s`.
//!
//! Both run in their own namespace (`<lab>-kube`, [`API_ADDR`] on the
//! ToR's bridge), next to the nodes: the controller reaches etcd and the
//! API server as it would on a control-plane machine. [`KubeLab::start`]
//! then does what an operator does when installing petrel into a cluster
//! (docs/kubernetes.md):
//!
//! - a load-balancer pool ([`LB_POOL`], `petrelctl pool add
//!   --allowed-uses load-balancer`) and the ClusterIP aggregate
//!   (`petrelctl bgp config --service-cluster-ips`), the same range as the
//!   API server's `--service-cluster-ip-range` ([`SERVICE_CIDR`]);
//! - a Node object per lab node, named as its petreld names itself;
//! - a Pod object (namespace `default`) for every lab pod, named as the
//!   lab's CNI ADD named it (`K8S_POD_NAME`): without them the controller
//!   would, rightly, reclaim their addresses after the leak grace. No
//!   kubelet runs, so they stay Pending; only their existence matters;
//! - petrel-controller, with the durations of [`KubeOptions`].

use super::cluster::Cluster;
use super::kube::{kubectl_bin, KubeApiserver};
use super::{wait_until, Daemon, Netns};
use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The API server's (and the controller's) address on the lab's subnet.
pub const API_ADDR: &str = "10.99.0.5";
/// The load-balancer pool `up --kubernetes` adds.
pub const LB_POOL: &str = "198.51.100.0/24";
/// The Service cluster IP range: the API server's and petrel's aggregate.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The controller's identity in the leader lease.
pub const CONTROLLER_ID: &str = "lab-controller";

/// The controller's durations (its flags, docs/kubernetes.md).
#[derive(Clone, Debug)]
pub struct KubeOptions {
    pub endpoint_hold_down: String,
    pub leak_grace: String,
    pub node_grace: String,
    pub gc_interval: String,
    /// The controller's log filter.
    pub log_filter: String,
}

impl Default for KubeOptions {
    /// The controller's own defaults, but a look at nodes and leaks every
    /// 5 s instead of 30 s.
    fn default() -> Self {
        KubeOptions {
            endpoint_hold_down: "3s".into(),
            leak_grace: "15m".into(),
            node_grace: "10m".into(),
            gc_interval: "5s".into(),
            log_filter: "info,kube=warn".into(),
        }
    }
}

/// The API server and the controller of a [`Cluster`]. Drop it before the
/// cluster (its processes die with the lab's namespaces anyway).
pub struct KubeLab {
    pub controller: Daemon,
    pub api: KubeApiserver,
    pub ns: Netns,
    pub options: KubeOptions,
    etcd: String,
}

impl KubeLab {
    /// Starts the API server and the controller for `c` and installs
    /// petrel into the cluster (see the module's documentation); returns
    /// once the controller leads and has synced its caches.
    pub fn start(c: &Cluster, options: KubeOptions) -> Result<KubeLab> {
        let ns = c.lab.netns("kube")?;
        c.attach(&ns, "kube", API_ADDR)?;
        let api =
            KubeApiserver::start_with(&c.lab, &ns, API_ADDR, c.etcd.endpoint(), SERVICE_CIDR)?;
        let etcd = c.etcd.endpoint().to_string();
        let ctl = |args: &[&str]| -> Result<String> {
            let bin = crate::bin("petrelctl")?;
            let mut a = vec!["--etcd-endpoints", &etcd];
            a.extend_from_slice(args);
            ns.exec(&bin.to_string_lossy(), &a)
        };
        ctl(&[
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
        ctl(&["bgp", "config", "--service-cluster-ips", SERVICE_CIDR])?;

        let mut objects = vec![json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "default"},
        })];
        for n in &c.nodes {
            objects.push(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name}},
            }));
            for p in &n.pods {
                objects.push(pod_object(&p.container_id, &n.name));
            }
        }
        api.kubectl_stdin(
            &["apply", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string(),
        )
        .context("creating the lab's Nodes and Pods")?;

        let controller = spawn_controller(c, &ns, &api, &options)?;
        let k = KubeLab {
            controller,
            api,
            ns,
            options,
            etcd,
        };
        wait_until(
            "petrel-controller leading and synced",
            &[&k.controller, k.api.daemon()],
            || {
                let v = k.controller_status()?;
                Ok((v["status"]["leader"] == CONTROLLER_ID
                    && v["status"]["last_sync_ms"].as_u64().unwrap_or(0) > 0)
                    .then_some(()))
            },
        )?;
        Ok(k)
    }

    /// `petrelctl --etcd-endpoints … args…` in the controller's namespace.
    pub fn petrelctl(&self, args: &[&str]) -> Result<String> {
        let bin = crate::bin("petrelctl")?;
        let mut a = vec!["--etcd-endpoints", &self.etcd];
        a.extend_from_slice(args);
        self.ns.exec(&bin.to_string_lossy(), &a)
    }

    /// `petrelctl controller status --json`.
    pub fn controller_status(&self) -> Result<Value> {
        let out = self.petrelctl(&["controller", "status", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("controller status: {out}"))
    }

    /// `kubectl apply -f -` of one object (JSON or YAML).
    pub fn apply(&self, object: &str) -> Result<String> {
        self.api.kubectl_stdin(&["apply", "-f", "-"], object)
    }

    /// `kubectl args…` (see [`KubeApiserver::kubectl`]).
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.api.kubectl(args)
    }

    /// `{"kubeconfig", "loadbalancer_pool", "service_cluster_ips",
    /// "netns", "apiserver", "kubectl"}` for `petrel-lab up --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "kubeconfig": self.api.kubeconfig(),
            "loadbalancer_pool": LB_POOL,
            "service_cluster_ips": SERVICE_CIDR,
            "netns": self.ns.name(),
            "apiserver": self.api.endpoint(),
            "kubectl": format!(
                "ip netns exec {} {} --kubeconfig {}",
                self.ns.name(),
                kubectl_bin().map(|p| p.display().to_string()).unwrap_or("kubectl".into()),
                self.api.kubeconfig().display()
            ),
        })
    }
}

/// A Pod object for a pod the lab attached with CNI: the name the CNI
/// ADD used, bound to `node`. Nothing runs it (no kubelet): it exists.
pub fn pod_object(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.invalid/pause:3.10"}],
        },
    })
}

fn spawn_controller(
    c: &Cluster,
    ns: &Netns,
    api: &KubeApiserver,
    o: &KubeOptions,
) -> Result<Daemon> {
    let bin = crate::bin("petrel-controller")?;
    let kc = api.kubeconfig().to_string_lossy().into_owned();
    let log = c.lab.subdir("controller")?.join("petrel-controller.log");
    Daemon::spawn(
        &c.lab,
        ns,
        "petrel-controller",
        &log,
        &bin.to_string_lossy(),
        &[
            "--kubeconfig",
            &kc,
            "--etcd-endpoints",
            c.etcd.endpoint(),
            "--identity",
            CONTROLLER_ID,
            "--metrics-listen",
            &format!("{API_ADDR}:9180"),
            "--endpoint-hold-down",
            &o.endpoint_hold_down,
            "--leak-grace",
            &o.leak_grace,
            "--node-grace",
            &o.node_grace,
            "--gc-interval",
            &o.gc_interval,
        ],
        &[("RUST_LOG", o.log_filter.as_str())],
    )
}
