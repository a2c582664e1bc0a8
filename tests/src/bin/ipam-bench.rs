//! IPAM benchmark against a real etcd started here on loopback:
//!
//! 1. CNI ADD on one node, sequentially as a node's host lock makes them:
//!    in process (the plugin's code path, a fresh datastore client per
//!    ADD as the binary has) and by exec'ing the `petrel-ipam` binary as a
//!    runtime does. Assignments per second, p50 and p99 latency.
//! 2. Block claims per second with 100 nodes claiming at once.
//!
//! Usage: ipam-bench [ADDS] (default 1000). Needs `etcd` on PATH and, for
//! the exec part, `petrel-ipam` next to this binary (`cargo build --release
//! -p petrel-ipam -p petrel-tests`).

use petrel_ipam::cni::{self, Env};
use petrel_ipam::ipam::Ipam;
use petrel_ipam::model::{Encapsulation, IpamConfig, Pool, PoolUse};
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::testing::EtcdServer;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pool(name: &str, cidr: &str, block: u8) -> Pool {
    Pool {
        name: name.into(),
        cidr: cidr.parse().expect("cidr"),
        block_size: block,
        disabled: false,
        node_selector: String::new(),
        allowed_uses: vec![PoolUse::Workload],
        encapsulation: Encapsulation::None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut lat: Vec<Duration>, total: Duration) {
    lat.sort();
    println!(
        "{what}: {} in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        total.as_secs_f64(),
        lat.len() as f64 / total.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn conf(endpoint: &str, dir: &std::path::Path) -> Vec<u8> {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "bench",
        "ipam": {
            "type": "petrel-ipam",
            "datastore": { "etcd_endpoints": [endpoint] },
            "node_name": "bench-node",
            "mtu_file": dir.join("pod-mtu"),
            "lock_file": dir.join("ipam.lock"),
        }
    })
    .to_string()
    .into_bytes()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let adds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let etcd = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let ep = etcd.endpoint.clone();
    let admin = Ipam::new(Arc::new(
        EtcdStore::connect(&EtcdConfig::new(vec![ep.clone()])).await?,
    ));
    admin
        .set_config(&IpamConfig {
            max_blocks_per_host: 0,
            ..Default::default()
        })
        .await?;
    admin.add_pool(&pool("bench", "10.64.0.0/12", 26)).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pod-mtu"), "1450")?;
    let conf = conf(&ep, dir.path());

    // 1a. In process, as the binary runs it.
    let mut lat = Vec::with_capacity(adds);
    let t = Instant::now();
    for i in 0..adds {
        let env = Env {
            command: Some("ADD".into()),
            container_id: Some(format!("inproc{i}")),
            ifname: Some("eth0".into()),
            args: None,
        };
        let s = Instant::now();
        cni::invoke(&env, &conf)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        lat.push(s.elapsed());
    }
    report(
        "CNI ADD in process (fresh etcd client each)",
        lat,
        t.elapsed(),
    );

    // 1b. The allocator alone, with one long-lived client (as a daemon
    // serving the plugin would run it): the floor under 1a.
    let node_ipam = Ipam::new(Arc::new(
        EtcdStore::connect(&EtcdConfig::new(vec![ep.clone()])).await?,
    ));
    let mut lat = Vec::with_capacity(adds);
    let t = Instant::now();
    for i in 0..adds {
        let s = Instant::now();
        node_ipam
            .assign(&petrel_ipam::ipam::AssignRequest::new(
                &format!("bench.warm{i}.eth0"),
                "bench-node",
                1,
                0,
            ))
            .await?;
        lat.push(s.elapsed());
    }
    report("assign, one long-lived client", lat, t.elapsed());

    // 1c. Exec'ing the plugin binary.
    let bin = std::env::var_os("PETREL_IPAM_BIN")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::env::current_exe().ok()?.parent()?.join("petrel-ipam")))
        .filter(|p| p.is_file());
    match bin {
        None => println!("CNI ADD exec: skipped, no petrel-ipam binary next to this one"),
        Some(bin) => {
            let n = adds.min(500);
            let mut lat = Vec::with_capacity(n);
            let t = Instant::now();
            for i in 0..n {
                let s = Instant::now();
                let mut child = Command::new(&bin)
                    .env("CNI_COMMAND", "ADD")
                    .env("CNI_CONTAINERID", format!("exec{i}"))
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_NETNS", "/var/run/netns/none")
                    .env("CNI_PATH", "/usr/lib/cni")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()?;
                child
                    .stdin
                    .take()
                    .ok_or_else(|| anyhow::anyhow!("no stdin"))?
                    .write_all(&conf)?;
                let o = child.wait_with_output()?;
                anyhow::ensure!(
                    o.status.success(),
                    "ADD failed: {}",
                    String::from_utf8_lossy(&o.stdout)
                );
                lat.push(s.elapsed());
            }
            report("CNI ADD exec'ing petrel-ipam", lat, t.elapsed());
        }
    }

    // 2. Block claims, 100 nodes at once, 20 each.
    let nodes = 100;
    let each = 20;
    let cfg = admin.config().await?;
    let pools = admin.pools().await?;
    let t = Instant::now();
    let mut joins = Vec::new();
    for n in 0..nodes {
        let ipam = Ipam::new(Arc::new(
            EtcdStore::connect(&EtcdConfig::new(vec![ep.clone()])).await?,
        ));
        let (cfg, pools) = (cfg.clone(), pools.clone());
        joins.push(tokio::spawn(async move {
            let node = format!("claimer-{n:03}");
            let mut lat = Vec::new();
            for _ in 0..each {
                let s = Instant::now();
                match ipam.claim_block(&node, &pools, &cfg).await {
                    Ok(Some(_)) => lat.push(s.elapsed()),
                    Ok(None) => {}
                    Err(e) => return Err(anyhow::anyhow!("{node}: {e}")),
                }
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for j in joins {
        lat.extend(j.await??);
    }
    report(
        &format!("block claims, {nodes} nodes at once"),
        lat,
        t.elapsed(),
    );
    let r = admin.check().await?;
    println!("check after the benchmark: {}", r.human().trim());
    anyhow::ensure!(r.clean, "inconsistent after the benchmark");
    Ok(())
}
