//! IPAM benchmark against a real etcd started here on loopback:
//!
//! 1. CNI ADD on one node, sequentially as a node's host lock makes them:
//!    in process (the direct plugin's code path, a fresh datastore client
//!    per ADD as the binary has) and by exec'ing `petrel-ipam` as a
//!    runtime does with no service running (it execs `petrel-ipam-direct`).
//!    Assignments per second, p50 and p99 latency.
//! 2. CNI ADD by exec'ing `petrel-ipam` that forwards to the node-local
//!    IPAM service (run here, as petreld runs it, with one long-lived
//!    etcd client): 1, 2, 4 and 8 invokers at once, as a runtime starting
//!    many pods does. With the phases apart: an exec that does no work
//!    (VERSION: process start), and the service round trip without an
//!    exec. CPU per ADD of the plugin processes, of this process (the
//!    service and the invokers) and of etcd.
//! 3. Block claims per second with 100 nodes claiming at once.
//!
//! Usage: ipam-bench [ADDS] [--service-only [--prefill N]] (default 1000
//! ADDs; the exec parts run min(ADDS, 500) per mode). --service-only runs
//! part 2 alone, after assigning N addresses to the node (parts 1a-1c
//! leave 2.5 × ADDS there, in ADDS / 25 blocks, before part 2).
//! Needs `etcd` on PATH and, for the exec parts, `petrel-ipam` and
//! `petrel-ipam-direct` next to this binary (`cargo build --release -p
//! petrel-ipam -p petrel-tests`).

use petrel_ipam::cni::{self, Env};
use petrel_ipam::ipam::Ipam;
use petrel_ipam::model::{Encapsulation, IpamConfig, Pool, PoolUse};
use petrel_ipam::service::client::{self, Forward};
use petrel_ipam::service::{Service, ServiceConfig};
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::testing::EtcdServer;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    conf_with_socket(endpoint, dir, "")
}

fn conf_with_socket(endpoint: &str, dir: &std::path::Path, socket: &str) -> Vec<u8> {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "bench",
        "ipam": {
            "type": "petrel-ipam",
            "datastore": { "etcd_endpoints": [endpoint] },
            "node_name": "bench-node",
            "mtu_file": dir.join("pod-mtu"),
            "lock_file": dir.join("ipam.lock"),
            "daemon_socket": socket,
        }
    })
    .to_string()
    .into_bytes()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let adds: usize = args.iter().find_map(|s| s.parse().ok()).unwrap_or(1000);
    let service_only = args.iter().any(|a| a == "--service-only");
    let prefill: usize = args
        .iter()
        .position(|a| a == "--prefill")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(0);
    println!("load average at the start: {}", loadavg());
    let etcd = EtcdServer::start().map_err(anyhow::Error::msg)?;
    let etcd_pid = etcd.pid();
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
    let bin: Option<PathBuf> = std::env::var_os("PETREL_IPAM_BIN")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::env::current_exe().ok()?.parent()?.join("petrel-ipam")))
        .filter(|p| p.is_file());
    if let Some(b) = &bin {
        println!("plugin: {} ({})", b.display(), linkage(b));
    }
    if service_only {
        let bin = bin.ok_or_else(|| anyhow::anyhow!("no petrel-ipam next to this binary"))?;
        for i in 0..prefill {
            admin
                .assign(&petrel_ipam::ipam::AssignRequest::new(
                    &format!("bench.prefill{i}.eth0"),
                    "bench-node",
                    1,
                    0,
                ))
                .await?;
        }
        service_modes(&bin, &ep, dir.path(), adds.min(500), etcd_pid).await?;
        println!("load average at the end: {}", loadavg());
        return Ok(());
    }

    // 1a. In process, as the binary runs it.
    let mut lat = Vec::with_capacity(adds);
    let t = Instant::now();
    for i in 0..adds {
        let env = Env {
            command: Some("ADD".into()),
            container_id: Some(format!("inproc{i}")),
            ifname: Some("eth0".into()),
            ..Default::default()
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

    // 1c. Exec'ing the plugin binary with no service: the forwarder execs
    // petrel-ipam-direct, which connects to etcd.
    match bin.clone() {
        None => println!("CNI ADD exec: skipped, no petrel-ipam binary next to this one"),
        Some(bin) => {
            let n = adds.min(500);
            let mut lat = Vec::with_capacity(n);
            let t = Instant::now();
            for i in 0..n {
                let s = Instant::now();
                exec(&bin, "ADD", &format!("exec{i}"), &conf)?;
                lat.push(s.elapsed());
            }
            report(
                "CNI ADD exec'ing petrel-ipam, no service (-> petrel-ipam-direct)",
                lat,
                t.elapsed(),
            );
        }
    }

    // 2. Through the node-local service.
    if let Some(bin) = &bin {
        service_modes(bin, &ep, dir.path(), adds.min(500), etcd_pid).await?;
    }

    // 3. Block claims, 100 nodes at once, 20 each.
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
    println!("load average at the end: {}", loadavg());
    Ok(())
}

/// Run the plugin once as a runtime does; fails unless it succeeds.
fn exec(bin: &Path, command: &str, cid: &str, conf: &[u8]) -> anyhow::Result<()> {
    let mut child = Command::new(bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
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
        .write_all(conf)?;
    let o = child.wait_with_output()?;
    anyhow::ensure!(
        o.status.success(),
        "{command} failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    Ok(())
}

/// CPU seconds (user + system) so far of this process, of its waited-for
/// children (the plugin processes: etcd, still running, is not among
/// them) and of etcd. Deltas across a mode are what each burned — a cost
/// that, unlike latency, does not depend on how busy the machine is.
#[derive(Clone, Copy)]
struct Cpu {
    me: f64,
    kids: f64,
    etcd: f64,
}

fn cpu_seconds(etcd: Option<u32>) -> Cpu {
    let get = |who| {
        // SAFETY: getrusage only fills the struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    Cpu {
        me: get(libc::RUSAGE_SELF),
        kids: get(libc::RUSAGE_CHILDREN),
        etcd: etcd.and_then(proc_cpu_seconds).unwrap_or(0.0),
    }
}

/// utime + stime of a process from /proc/PID/stat (clock-tick resolution).
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Print the CPU per operation since `start` (from [`cpu_seconds`]).
fn report_cpu(what: &str, start: Cpu, n: usize, etcd: Option<u32>) {
    let now = cpu_seconds(etcd);
    let per = |a: f64, b: f64| (a - b) * 1e3 / n as f64;
    println!(
        "    CPU per {what}: plugin processes {:.2} ms, this process (service, invokers) {:.2} ms, etcd {:.2} ms",
        per(now.kids, start.kids),
        per(now.me, start.me),
        per(now.etcd, start.etcd),
    );
}

/// Whether an executable needs the dynamic loader: a dynamically linked
/// ELF names its interpreter near the start of the file.
fn linkage(bin: &Path) -> &'static str {
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(bin)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let needle = b"/ld-linux";
    if head[..n].windows(needle.len()).any(|w| w == needle) {
        "dynamically linked"
    } else {
        "static"
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `n` ADDs spread over `invokers` threads, each exec'ing one plugin at a
/// time; latencies of every ADD and the wall time of all.
fn exec_parallel(
    bin: &Path,
    conf: &[u8],
    tag: &str,
    n: usize,
    invokers: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let t = Instant::now();
    let lat = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..invokers)
            .map(|k| {
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut lat = Vec::new();
                    for i in (k..n).step_by(invokers) {
                        let s = Instant::now();
                        exec(bin, "ADD", &format!("{tag}{i}"), conf)?;
                        lat.push(s.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for r in runs {
            all.extend(
                r.join()
                    .map_err(|_| anyhow::anyhow!("invoker panicked"))??,
            );
        }
        anyhow::Ok(all)
    })?;
    Ok((lat, t.elapsed()))
}

async fn service_modes(
    bin: &Path,
    ep: &str,
    dir: &Path,
    n: usize,
    etcd: Option<u32>,
) -> anyhow::Result<()> {
    let ipam = Ipam::new(Arc::new(
        EtcdStore::connect(&EtcdConfig::new(vec![ep.to_string()])).await?,
    ));
    let sock = dir.join("ipam.sock");
    let service = Service::bind(&sock, Arc::new(ipam), ServiceConfig::default())?;
    let served = tokio::spawn(service.run());
    let conf = conf_with_socket(ep, dir, &sock.to_string_lossy());
    let (bin, sock2, conf2) = (bin.to_path_buf(), sock.clone(), conf.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let (bin, sock, conf) = (bin, sock2, conf2);
        // Phase: process start alone (VERSION is answered without I/O).
        let mut lat = Vec::with_capacity(n);
        let t = Instant::now();
        let cpu = cpu_seconds(etcd);
        for _ in 0..n {
            let s = Instant::now();
            exec(&bin, "VERSION", "", &conf)?;
            lat.push(s.elapsed());
        }
        report(
            "  phase: exec petrel-ipam VERSION (process start only)",
            lat,
            t.elapsed(),
        );
        report_cpu("VERSION", cpu, n, etcd);
        // Phase: the service round trip alone, from this process.
        let text = String::from_utf8_lossy(&conf).to_string();
        let mut lat = Vec::with_capacity(n);
        let t = Instant::now();
        let cpu = cpu_seconds(etcd);
        for i in 0..n {
            let env = Env {
                command: Some("ADD".into()),
                container_id: Some(format!("direct{i}")),
                ifname: Some("eth0".into()),
                ..Default::default()
            };
            let s = Instant::now();
            match client::forward(&sock, &env, &text, Duration::from_secs(30)) {
                Forward::Answered(r) if r.exit == 0 => {}
                other => anyhow::bail!("forwarded ADD failed: {other:?}"),
            }
            lat.push(s.elapsed());
        }
        report(
            "  phase: service round trip, no exec, 1 client",
            lat,
            t.elapsed(),
        );
        report_cpu("forwarded ADD", cpu, n, etcd);
        for invokers in [1, 2, 4, 8] {
            let cpu = cpu_seconds(etcd);
            let (lat, total) = exec_parallel(&bin, &conf, &format!("svc{invokers}-"), n, invokers)?;
            report(
                &format!("CNI ADD exec'ing petrel-ipam via the service, {invokers} invoker(s)"),
                lat,
                total,
            );
            report_cpu("exec'd ADD", cpu, n, etcd);
        }
        Ok(())
    })
    .await??;
    served.abort();
    Ok(())
}
