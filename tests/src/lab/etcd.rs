//! etcd 3.4 (Debian's etcd-server) inside a namespace, listening on one
//! address of it, for the datastore-driven lab.
//!
//! Data lives in the lab's scratch folder so it goes with the lab. An
//! outage is simulated with SIGSTOP/SIGCONT: the listening socket stays,
//! so clients connect and then time out, which is the harder case for them
//! than a refused connection.

use super::netns::kill;
use super::{wait_until, Daemon, Lab, Netns};
use anyhow::Result;

/// A running etcd.
pub struct Etcd {
    daemon: Daemon,
    endpoint: String,
}

impl Etcd {
    /// Starts etcd in `ns` on `addr:2379` (peer port 2380) and waits until
    /// it answers `endpoint health`.
    pub fn start(lab: &Lab, ns: &Netns, addr: &str) -> Result<Etcd> {
        let dir = lab.subdir("etcd")?;
        let client = format!("http://{addr}:2379");
        let peer = format!("http://{addr}:2380");
        let data = dir.join("data");
        let daemon = Daemon::spawn(
            lab,
            ns,
            "etcd",
            &dir.join("etcd.log"),
            "etcd",
            &[
                "--name",
                "lab",
                "--data-dir",
                &data.to_string_lossy(),
                "--logger=zap",
                "--log-outputs=stderr",
                "--log-level=warn",
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("lab={peer}"),
                "--initial-cluster-state",
                "new",
                "--listen-metrics-urls",
                "",
            ],
            &[],
        )?;
        let etcd = Etcd {
            daemon,
            endpoint: client,
        };
        wait_until("etcd healthy", &[&etcd.daemon], || {
            Ok(ns
                .exec(
                    "etcdctl",
                    &[
                        "--endpoints",
                        &etcd.endpoint,
                        "--dial-timeout=1s",
                        "endpoint",
                        "health",
                    ],
                )
                .ok()
                .map(drop))
        })?;
        Ok(etcd)
    }

    /// `http://ADDR:2379`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// SIGSTOP: etcd stops answering but keeps its socket.
    pub fn pause(&self) {
        kill(self.daemon.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) {
        kill(self.daemon.pid(), libc::SIGCONT);
    }
}
