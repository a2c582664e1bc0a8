//! etcd 3.4 (Debian's etcd-server) inside namespaces, for the
//! datastore-driven lab: one member ([`Etcd::start`]) or a cluster of
//! several, each member in its own namespace ([`Etcd::start_cluster`]),
//! and `etcd grpc-proxy` in front of them ([`GrpcProxy`]).
//!
//! Data lives in the lab's scratch folder so it goes with the lab. An
//! outage is simulated with SIGSTOP/SIGCONT: the listening socket stays,
//! so clients connect and then time out, which is the harder case for them
//! than a refused connection. A member can also be killed (SIGKILL) and
//! started again on its data, or cut off by taking its link down.
//!
//! Every member serves Prometheus metrics (`/metrics`) on its client URL,
//! which is how the grpc-proxy measurement counts the server's watchers.

use super::netns::kill;
use super::{wait_until, Daemon, Lab, Netns};
use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// Client and peer ports of every member.
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// One member: its namespace, address and process.
struct Member {
    name: String,
    ns: Netns,
    endpoint: String,
    peer_url: String,
    /// A killed member keeps its (dead) process until [`Etcd::restart`]
    /// replaces it.
    daemon: Daemon,
}

/// A running etcd: one member or several.
pub struct Etcd {
    members: Vec<Member>,
    /// Where `etcdctl` runs: the namespace of the only member, or one that
    /// reaches every member (the ToR's) for a cluster.
    ctl_ns: Netns,
    dir_of: Vec<std::path::PathBuf>,
    initial_cluster: String,
}

/// What `etcdctl endpoint status` says about one member.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member: usize,
    pub leader: bool,
    pub raft_term: u64,
    pub revision: i64,
}

impl Etcd {
    /// Starts a single etcd in `ns` on `addr:2379` (peer port 2380) and
    /// waits until it answers `endpoint health`.
    pub fn start(lab: &Lab, ns: &Netns, addr: &str) -> Result<Etcd> {
        Etcd::start_members(lab, &[(ns.clone(), addr.to_string())], ns, true)
    }

    /// Starts one member per (namespace, address), all in one cluster
    /// (`--initial-cluster` of all of them), and waits until every member
    /// is healthy. `ctl_ns` must reach every member (etcdctl runs there).
    pub fn start_cluster(lab: &Lab, members: &[(Netns, String)], ctl_ns: &Netns) -> Result<Etcd> {
        Etcd::start_members(lab, members, ctl_ns, false)
    }

    fn start_members(
        lab: &Lab,
        members: &[(Netns, String)],
        ctl_ns: &Netns,
        single: bool,
    ) -> Result<Etcd> {
        // A single member keeps the layout the lab always had: name "lab",
        // folder etcd/.
        let names: Vec<String> = (0..members.len())
            .map(|i| {
                if single {
                    "lab".to_string()
                } else {
                    format!("etcd{}", i + 1)
                }
            })
            .collect();
        let initial_cluster = names
            .iter()
            .zip(members)
            .map(|(n, (_, addr))| format!("{n}=http://{addr}:{PEER_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut dir_of = Vec::new();
        let mut started = Vec::new();
        for (name, (ns, addr)) in names.iter().zip(members) {
            let dir = lab.subdir(if single { "etcd" } else { name })?;
            let endpoint = format!("http://{addr}:{CLIENT_PORT}");
            let peer_url = format!("http://{addr}:{PEER_PORT}");
            let daemon = spawn(lab, ns, name, &dir, &endpoint, &peer_url, &initial_cluster)?;
            dir_of.push(dir);
            started.push(Member {
                name: name.clone(),
                ns: ns.clone(),
                endpoint,
                peer_url,
                daemon,
            });
        }
        let etcd = Etcd {
            members: started,
            ctl_ns: ctl_ns.clone(),
            dir_of,
            initial_cluster,
        };
        for i in 0..etcd.members.len() {
            etcd.wait_healthy(i)?;
        }
        Ok(etcd)
    }

    /// `http://ADDR:2379` of the first member (the only one of a single
    /// etcd).
    pub fn endpoint(&self) -> &str {
        &self.members[0].endpoint
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// The client URL of member `i`.
    pub fn member_endpoint(&self, i: usize) -> &str {
        &self.members[i].endpoint
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The first member's process.
    pub fn daemon(&self) -> &Daemon {
        &self.members[0].daemon
    }

    /// Member `i`'s process.
    pub fn member_daemon(&self, i: usize) -> &Daemon {
        &self.members[i].daemon
    }

    /// The processes of the members that run (not killed), for waits
    /// that must notice a crash.
    pub fn daemons(&self) -> Vec<&Daemon> {
        self.members
            .iter()
            .map(|m| &m.daemon)
            .filter(|d| d.alive())
            .collect()
    }

    /// SIGSTOP every member: etcd stops answering but keeps its sockets.
    pub fn pause(&self) {
        for i in 0..self.members.len() {
            self.pause_member(i);
        }
    }

    /// SIGCONT every member after [`Etcd::pause`].
    pub fn resume(&self) {
        for i in 0..self.members.len() {
            self.resume_member(i);
        }
    }

    /// SIGSTOP member `i`.
    pub fn pause_member(&self, i: usize) {
        kill(self.members[i].daemon.pid(), libc::SIGSTOP);
    }

    /// SIGCONT member `i`.
    pub fn resume_member(&self, i: usize) {
        kill(self.members[i].daemon.pid(), libc::SIGCONT);
    }

    /// SIGKILL member `i` (its data stays for [`Etcd::restart`]).
    pub fn kill(&self, i: usize) {
        self.members[i].daemon.kill9();
    }

    /// Starts member `i` again on its data after [`Etcd::kill`] and waits
    /// until it is healthy (it has a leader again).
    pub fn restart(&mut self, lab: &Lab, i: usize) -> Result<()> {
        if self.members[i].daemon.alive() {
            bail!("etcd member {} still runs", self.members[i].name);
        }
        let m = &self.members[i];
        let daemon = spawn(
            lab,
            &m.ns,
            &m.name,
            &self.dir_of[i],
            &m.endpoint,
            &m.peer_url,
            &self.initial_cluster,
        )?;
        self.members[i].daemon = daemon;
        self.wait_healthy(i)
    }

    /// Takes member `i`'s link down: no peer and no client reaches it, nor
    /// it them, and its process runs on (a partition, not a crash).
    pub fn partition(&self, i: usize) -> Result<()> {
        self.members[i]
            .ns
            .ip(&["link", "set", "eth0", "down"])
            .map(drop)
    }

    /// Brings member `i`'s link back up after [`Etcd::partition`].
    pub fn heal(&self, i: usize) -> Result<()> {
        self.members[i]
            .ns
            .ip(&["link", "set", "eth0", "up"])
            .map(drop)
    }

    /// Cuts member `i` off from its peers only (iptables drops the peer
    /// port, 2380, both ways, in its namespace): clients still reach it,
    /// and it still answers them from what it has, without a leader.
    pub fn isolate_peers(&self, i: usize) -> Result<()> {
        self.peer_rules(i, "-A")
    }

    /// Undoes [`Etcd::isolate_peers`].
    pub fn rejoin_peers(&self, i: usize) -> Result<()> {
        self.peer_rules(i, "-D")
    }

    fn peer_rules(&self, i: usize, op: &str) -> Result<()> {
        let port = PEER_PORT.to_string();
        for dir in ["--dport", "--sport"] {
            self.members[i].ns.exec(
                "iptables",
                &[op, "INPUT", "-p", "tcp", dir, &port, "-j", "DROP"],
            )?;
        }
        Ok(())
    }

    /// `etcdctl endpoint health` of member `i`, from `ctl_ns`.
    pub fn healthy(&self, i: usize) -> bool {
        self.etcdctl(&[&self.members[i].endpoint], &["endpoint", "health"])
            .is_ok()
    }

    /// Waits until member `i` answers `endpoint health` (which needs a
    /// leader: a quorum).
    pub fn wait_healthy(&self, i: usize) -> Result<()> {
        let what = format!("etcd member {} healthy", self.members[i].name);
        wait_until(&what, &[&self.members[i].daemon], || {
            Ok(self.healthy(i).then_some(()))
        })
    }

    /// `etcdctl endpoint status` of the given members (those that do not
    /// answer within a second are left out).
    pub fn status(&self, members: &[usize]) -> Vec<MemberStatus> {
        let mut out = Vec::new();
        for &i in members {
            let Ok(text) = self.etcdctl(
                &[&self.members[i].endpoint],
                &["endpoint", "status", "-w", "json"],
            ) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let Some(s) = v.as_array().and_then(|a| a.first()).map(|e| &e["Status"]) else {
                continue;
            };
            let id = s["header"]["member_id"].as_u64();
            out.push(MemberStatus {
                member: i,
                leader: id.is_some() && id == s["leader"].as_u64(),
                raft_term: s["raftTerm"].as_u64().unwrap_or(0),
                revision: s["header"]["revision"].as_i64().unwrap_or(0),
            });
        }
        out
    }

    /// The member that is leader, as the running members see it; an
    /// error when none says it is (no quorum, or an election under way).
    pub fn leader(&self) -> Result<usize> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].daemon.alive())
            .collect();
        let status = self.status(&running);
        status
            .iter()
            .find(|s| s.leader)
            .map(|s| s.member)
            .ok_or_else(|| anyhow!("no etcd member is leader: {status:?}"))
    }

    /// Waits until some member is leader; returns it.
    pub fn wait_leader(&self) -> Result<usize> {
        wait_until("an etcd leader", &self.daemons(), || Ok(self.leader().ok()))
    }

    /// The value of one sample of member `i`'s `/metrics`
    /// (`etcd_debugging_mvcc_watcher_total`), summed over its labels.
    pub fn metric(&self, i: usize, name: &str) -> Result<f64> {
        let url = format!("{}/metrics", self.members[i].endpoint);
        let text = self.ctl_ns.exec("curl", &["-s", "--max-time", "2", &url])?;
        metric_value(&text, name).ok_or_else(|| anyhow!("no metric {name} at {url}"))
    }

    /// Runs etcdctl against `endpoints` from `ctl_ns`, with short
    /// timeouts.
    pub fn etcdctl(&self, endpoints: &[&str], args: &[&str]) -> Result<String> {
        let ep = endpoints.join(",");
        let mut a = vec![
            "--endpoints",
            &ep,
            "--dial-timeout=1s",
            "--command-timeout=2s",
        ];
        a.extend_from_slice(args);
        self.ctl_ns.exec("etcdctl", &a)
    }
}

/// The sum of a Prometheus sample's values over its labels.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

fn spawn(
    lab: &Lab,
    ns: &Netns,
    name: &str,
    dir: &std::path::Path,
    client: &str,
    peer: &str,
    initial_cluster: &str,
) -> Result<Daemon> {
    let data = dir.join("data");
    Daemon::spawn(
        lab,
        ns,
        &format!("etcd {name}"),
        &dir.join("etcd.log"),
        "etcd",
        &[
            "--name",
            name,
            "--data-dir",
            &data.to_string_lossy(),
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--listen-metrics-urls",
            "",
        ],
        &[],
    )
}

/// `etcd grpc-proxy start` in a namespace, in front of the members.
pub struct GrpcProxy {
    daemon: Daemon,
    endpoint: String,
    ns: Netns,
}

impl GrpcProxy {
    /// Starts the proxy on `addr:23790` towards `endpoints` and waits
    /// until it answers `endpoint health` through to the cluster.
    pub fn start(lab: &Lab, ns: &Netns, addr: &str, endpoints: &[String]) -> Result<GrpcProxy> {
        let dir = lab.subdir("etcd-grpc-proxy")?;
        let listen = format!("{addr}:23790");
        // The proxy wants host:port, not URLs.
        let upstream: Vec<&str> = endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        let daemon = Daemon::spawn(
            lab,
            ns,
            "etcd grpc-proxy",
            &dir.join("grpc-proxy.log"),
            "etcd",
            &[
                "grpc-proxy",
                "start",
                "--endpoints",
                &upstream.join(","),
                "--listen-addr",
                &listen,
                "--advertise-client-url",
                &listen,
                "--data-dir",
                &dir.join("data").to_string_lossy(),
            ],
            &[],
        )?;
        let proxy = GrpcProxy {
            daemon,
            endpoint: format!("http://{listen}"),
            ns: ns.clone(),
        };
        wait_until("etcd grpc-proxy answering", &[&proxy.daemon], || {
            Ok(proxy
                .ns
                .exec(
                    "etcdctl",
                    &[
                        "--endpoints",
                        &proxy.endpoint,
                        "--dial-timeout=1s",
                        "--command-timeout=2s",
                        "get",
                        "/petrel/ping",
                    ],
                )
                .ok()
                .map(drop))
        })?;
        Ok(proxy)
    }

    /// `http://ADDR:23790`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }
}
