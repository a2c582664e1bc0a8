//! petrel-scale: petreld's datastore cost at cluster scale (issue 14).
//!
//! Writes a synthetic cluster of N nodes into a real etcd with petrel's own
//! model code (pools, node records, confirmed affinities, blocks with
//! allocations, handles; `ipam check`-clean, and checked), runs K real
//! petrelds as further nodes of it, drives pod churn on the synthetic nodes
//! through petrel's IPAM at a given rate, and reports per petreld:
//!
//! - start-up: time to the first full sync, bytes read;
//! - during churn on other nodes: bytes of block records read, all bytes
//!   read, CPU seconds, derivations and full syncs (the goal: 0 bytes of
//!   block contents, no derivation);
//! - a change that concerns it (a new block of its own, committed as a
//!   claim commits it): time from the commit to the block in the node's
//!   advertisements, p50/p99, with the churn running;
//! - RSS.
//!
//! Records only for the N nodes. The mesh is off, as it must be at this
//! size (route reflectors carry the routes); the K petrelds peer with each
//! other through peer records naming them, so a block of one reaches the
//! others' kernel FIBs over real BGP, and the harness times that too
//! (commit → route in another node's FIB). Usage:
//!
//! ```sh
//! petrel-scale [--nodes 5000] [--petrelds 3] [--pods-per-node 40]
//!              [--churn 100] [--seconds 10] [--block-changes 20]
//!              [--churn-via cni|ipam] [--json]
//! ```

use anyhow::{anyhow, bail, Context, Result};
use petrel_daemon::cluster::model::{BgpConfig, BGP_CONFIG};
use petrel_ipam::keys;
use petrel_ipam::model::{Affinity, AffinityState, Attributes, Block, Handle, Node, Pool, PoolUse};
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::store::{Op, Store};
use petrel_ipam::{AssignRequest, Ipam};
use petrel_tests::lab::cluster::{attach, ETCD_ADDR, NODE_AS, SUBNET_LEN};
use petrel_tests::lab::etcd::Etcd;
use petrel_tests::lab::petreld::{Config, Petreld};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::{self, Lab, Netns};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const POOL_CIDR: &str = "10.64.0.0/10";
const BLOCKS_PER_NODE: u32 = 3;
const HUB_ADDR: &str = "10.99.0.1";

struct Args {
    nodes: u32,
    petrelds: u32,
    pods: u32,
    churn: u32,
    seconds: u64,
    block_changes: u32,
    json: bool,
    /// Churn through exec'd `petrel-ipam-direct` (the CNI path) instead
    /// of the IPAM library.
    cni: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        nodes: 1000,
        petrelds: 3,
        pods: 40,
        churn: 100,
        seconds: 10,
        block_changes: 20,
        json: false,
        cni: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut num = || -> Result<u64> {
            it.next()
                .ok_or_else(|| anyhow!("{f} needs a value"))?
                .parse()
                .with_context(|| f.clone())
        };
        match f.as_str() {
            "--nodes" => a.nodes = num()? as u32,
            "--petrelds" => a.petrelds = num()? as u32,
            "--pods-per-node" => a.pods = num()? as u32,
            "--churn" => a.churn = num()? as u32,
            "--seconds" => a.seconds = num()?,
            "--block-changes" => a.block_changes = num()? as u32,
            "--json" => a.json = true,
            "--churn-via" => {
                a.cni = match it.next().as_deref() {
                    Some("cni") => true,
                    Some("ipam") => false,
                    other => bail!("--churn-via: cni or ipam, got {other:?}"),
                }
            }
            other => bail!("unknown argument {other}; see the module doc of petrel-scale"),
        }
    }
    if a.pods > BLOCKS_PER_NODE * 64 {
        bail!(
            "--pods-per-node: at most {} (3 blocks of 64)",
            BLOCKS_PER_NODE * 64
        );
    }
    Ok(a)
}

/// Runs `f` on a thread inside `ns` with a runtime of its own: every socket
/// it opens (etcd's gRPC channel) lives in the namespace.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in {path} panicked"))?
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn connect(endpoint: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(
        EtcdStore::connect(&EtcdConfig::new(vec![endpoint.to_string()])).await?,
    ))
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn synthetic_name(i: u32) -> String {
    format!("syn-{i:05}")
}

/// The ops that make synthetic node `i`: its record, its blocks (with
/// `pods` allocations spread over them), their affinities and the handles.
fn node_ops(pool: &Pool, i: u32, pods: u32, t: u64) -> Vec<Op> {
    let name = synthetic_name(i);
    let addr = format!("10.{}.{}.{}/32", 200 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
    let mut ops = vec![Op::Create {
        key: keys::node(&name),
        value: enc(&Node {
            name: name.clone(),
            labels: BTreeMap::new(),
            addresses: vec![addr.parse().expect("synthetic address")],
            asn: None,
            route_reflector_cluster_id: None,
        }),
    }];
    let attrs = Attributes {
        node: Some(name.clone()),
        namespace: Some("default".into()),
        ..Attributes::default()
    };
    for j in 0..BLOCKS_PER_NODE {
        let cidr = pool.block_at((i * BLOCKS_PER_NODE + j) as u128);
        let mut b = Block::new(cidr, &pool.name, Some(name.clone()), t);
        let here = pods / BLOCKS_PER_NODE + u32::from(j < pods % BLOCKS_PER_NODE);
        for p in 0..here {
            let h = format!("scale.{name}-{j}-{p}.eth0");
            let mut a = attrs.clone();
            a.pod = Some(format!("{name}-{j}-{p}"));
            b.assign(1, &h, &a, t, 0);
            let mut counts = BTreeMap::new();
            counts.insert(cidr, 1);
            ops.push(Op::Create {
                key: keys::handle(&h),
                value: enc(&Handle {
                    handle: h,
                    blocks: counts,
                    updated: t,
                }),
            });
        }
        ops.push(Op::Create {
            key: keys::block(&cidr),
            value: enc(&b),
        });
        ops.push(Op::Create {
            key: keys::affinity(&name, &cidr),
            value: enc(&Affinity {
                node: name.clone(),
                cidr,
                state: AffinityState::Confirmed,
                since: t,
            }),
        });
    }
    ops
}

/// Writes the synthetic cluster, several transactions in flight.
async fn write_cluster(store: Arc<dyn Store>, a: &Args, pool: &Pool) -> Result<Duration> {
    let started = Instant::now();
    let t = petrel_ipam::ipam::now().saturating_sub(3600);
    let mut batches: Vec<Vec<Op>> = Vec::new();
    let mut cur = Vec::new();
    for i in 0..a.nodes {
        let ops = node_ops(pool, i, a.pods, t);
        // etcd's --max-txn-ops default is 128.
        if cur.len() + ops.len() > 120 {
            batches.push(std::mem::take(&mut cur));
        }
        cur.extend(ops);
    }
    batches.push(cur);
    let mut inflight = tokio::task::JoinSet::new();
    for b in batches {
        if inflight.len() >= 8 {
            inflight.join_next().await.expect("a task")??;
        }
        let s = store.clone();
        inflight.spawn(async move { s.commit(b).await.map(|_| ()) });
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

/// Whether `p`'s namespace has a kernel route for exactly `prefix`.
fn kernel_has(p: &Petreld, prefix: &str) -> Result<bool> {
    let out = p.netns().ip(&["-4", "route", "show", "exact", prefix])?;
    Ok(!out.trim().is_empty())
}

/// CPU seconds (user + system) of a process.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the command.
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

const KINDS: [&str; 8] = [
    "blocks",
    "affinities",
    "handles",
    "borrowed",
    "nodes",
    "ipam-config",
    "bgp",
    "other",
];

#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    block_bytes: f64,
    all_bytes: f64,
    cpu: f64,
    derivations: f64,
    syncs: f64,
    events: f64,
}

fn sample(p: &Petreld) -> Result<Sample> {
    let text = p.metrics_text()?;
    let get = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let mut s = Sample::default();
    for k in KINDS {
        for via in ["request", "watch"] {
            let v = get(&format!(
                "petrel_datastore_read_bytes_total{{records=\"{k}\",via=\"{via}\"}}"
            ));
            s.all_bytes += v;
            if k == "blocks" {
                s.block_bytes += v;
            }
        }
    }
    s.derivations = get("petrel_cluster_derivations_total");
    s.syncs = get("petrel_cluster_full_syncs_total");
    s.events = get("petrel_cluster_events_total");
    s.cpu = cpu_secs(p.daemon().pid())?;
    Ok(s)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Pod churn on random synthetic nodes at `a.churn` operations per
/// second for `a.seconds` (or until `stop`): each a release of a pod's
/// handle, or its assignment when it holds nothing. Returns the operations
/// done and their latencies (ms).
fn run_churn(
    hub: &Netns,
    endpoint: &str,
    a: &Args,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(u64, Vec<f64>)> {
    in_netns(hub, || {
        runtime()?.block_on(async {
            let store = connect(endpoint).await?;
            let ipam = Ipam::new(store);
            let cni = if a.cni {
                Some(petrel_tests::bin("petrel-ipam-direct")?)
            } else {
                None
            };
            let mut held = std::collections::HashSet::new();
            let mut ops = 0u64;
            let mut lat = Vec::new();
            let period = Duration::from_secs_f64(1.0 / a.churn.max(1) as f64);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let end = Instant::now() + Duration::from_secs(a.seconds);
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let node = synthetic_name((rng % a.nodes as u64) as u32);
                let h = format!("scale.churn-{node}.eth0");
                let t = Instant::now();
                // A pod on that node comes or goes.
                if let Some(plugin) = &cni {
                    let id = format!("churn-{node}");
                    let del = held.remove(&id);
                    cni_call(
                        plugin,
                        if del { "DEL" } else { "ADD" },
                        &id,
                        &node,
                        endpoint,
                    )
                    .await?;
                    if !del {
                        held.insert(id);
                    }
                } else if ipam.release_handle(&h).await?.is_empty() {
                    let mut r = AssignRequest::new(&h, &node, 1, 0);
                    r.attrs.pod = Some(format!("churn-{node}"));
                    ipam.assign(&r).await?;
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                ops += 1;
            }
            Ok::<_, anyhow::Error>((ops, lat))
        })
    })
}

/// One CNI call of `petrel-ipam-direct`, as a runtime makes it (the IPAM
/// plugin of a chain: CNI_* in the environment, the config on stdin).
async fn cni_call(
    plugin: &std::path::Path,
    command: &str,
    id: &str,
    node: &str,
    endpoint: &str,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "scale",
        "ipam": {
            "type": "petrel-ipam",
            "datastore": { "etcd_endpoints": [endpoint] },
            "node_name": node,
            "daemon_socket": "",
            "lock_file": format!("/tmp/petrel-scale-{node}.lock"),
        }
    });
    let mut child = tokio::process::Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/dev/null")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(conf.to_string().as_bytes())
        .await?;
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "CNI {command} {id} on {node}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    if !lab::require_lab(&["etcd", "etcdctl"]) {
        bail!("petrel-scale needs root, network namespaces and etcd (bash .ci/setup)");
    }
    let lab = Lab::new("scale")?;
    let hub = lab.netns("hub")?;
    hub.ip(&["link", "add", "br0", "type", "bridge"])?;
    hub.add_addr("br0", &format!("{HUB_ADDR}/{SUBNET_LEN}"))?;
    hub.ip(&["link", "set", "br0", "up"])?;
    let etcd_ns = lab.netns("etcd")?;
    attach(&hub, "etcd", &etcd_ns, ETCD_ADDR)?;
    let etcd = Etcd::start(&lab, &etcd_ns, ETCD_ADDR)?;
    let endpoint = etcd.endpoint().to_string();
    let pool = Pool {
        name: "scale".into(),
        cidr: POOL_CIDR.parse()?,
        block_size: 26,
        disabled: false,
        node_selector: String::new(),
        allowed_uses: vec![PoolUse::Workload],
        encapsulation: Default::default(),
    };

    // The synthetic cluster, and its check.
    let (write_time, check_time, check) = in_netns(&hub, || {
        runtime()?.block_on(async {
            let store = connect(&endpoint).await?;
            let ipam = Ipam::new(store.clone());
            ipam.add_pool(&pool).await?;
            let cfg = BgpConfig {
                node_mesh: false,
                ..BgpConfig::default()
            };
            store.create(BGP_CONFIG, enc(&cfg)).await?;
            let w = write_cluster(store.clone(), &a, &pool).await?;
            let t = Instant::now();
            let r = ipam.check().await?;
            let check_time = t.elapsed();
            // The one-time migration to the borrowed index, timed here so
            // that it is not in a petreld's window (the first petreld of a
            // cluster from an older version runs it).
            let t = Instant::now();
            ipam.migrate_borrowed_index("petrel-scale").await?;
            eprintln!(
                "borrowed-index migration over the whole cluster: {:.1} s",
                t.elapsed().as_secs_f64()
            );
            Ok::<_, anyhow::Error>((w, check_time, r))
        })
    })?;
    if !check.clean {
        bail!("the synthetic cluster is not clean: {}", check.human());
    }
    eprintln!(
        "wrote {} nodes ({} blocks, {} addresses) in {:.1} s; ipam check (paged) clean in {:.1} s",
        a.nodes,
        check.blocks,
        check.addresses_in_use,
        write_time.as_secs_f64(),
        check_time.as_secs_f64()
    );

    // K petrelds, peering with each other through peer records that name
    // them (the mesh is off): the lower address dials.
    let reals: Vec<(String, String)> = (0..a.petrelds)
        .map(|k| (format!("real-{k}"), format!("10.99.0.{}", 11 + k)))
        .collect();
    in_netns(&hub, || {
        runtime()?.block_on(async {
            let store = connect(&endpoint).await?;
            for (i, (me, _)) in reals.iter().enumerate() {
                for (j, (other, addr)) in reals.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let peer = json!({
                        "name": format!("{me}-to-{other}"),
                        "address": addr,
                        "asn": NODE_AS,
                        "node": me,
                        "passive": j < i,
                        "advertise_learned": false,
                    });
                    store
                        .create(
                            &petrel_daemon::cluster::model::peer_key(&format!("{me}-to-{other}")),
                            peer.to_string().into_bytes(),
                        )
                        .await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        })
    })?;
    let mut petrelds = Vec::new();
    let mut starts = Vec::new();
    // The highest address first: the lower dials, and a dial refused
    // because its peer is not listening yet waits out ConnectRetry (30 s).
    for k in (0..a.petrelds).rev() {
        let name = format!("real-{k}");
        let address = format!("10.99.0.{}", 11 + k);
        let ns = lab.netns(&name)?;
        attach(&hub, &name, &ns, &address)?;
        let dir = lab.subdir(&format!("node-{name}"))?;
        let mut config = Config::new(&address, NODE_AS);
        config.name = name.clone();
        config.addresses = vec![format!("{address}/{SUBNET_LEN}")];
        config.etcd_endpoints = vec![endpoint.clone()];
        config.listen(&address);
        config.extra = format!(
            "\n[mtu]\nfile = {:?}\n\n[ipam]\nsocket = {:?}\n",
            dir.join("pod-mtu"),
            dir.join("ipam.sock")
        );
        let t0 = Instant::now();
        let p = Petreld::start(&lab, &ns, &config)?;
        starts.push(t0);
        petrelds.push((name, p));
    }
    petrelds.reverse();
    starts.reverse();
    let mut startup = Vec::new();
    for ((name, p), t0) in petrelds.iter().zip(&starts) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(s) = sample(p) {
                if s.syncs >= 1.0 && s.derivations >= 1.0 {
                    startup.push((t0.elapsed(), s, rss_mib(p.daemon().pid())?));
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("{name} did not sync within 120 s:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The sessions among the petrelds.
    for (name, p) in &petrelds {
        for (other, addr) in &reals {
            if other != name {
                p.wait_established(addr)
                    .with_context(|| format!("{name} to {other}"))?;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));

    // Phase 1: churn on the synthetic nodes alone; what it costs each
    // petreld is the window's difference.
    let before: Vec<Sample> = petrelds
        .iter()
        .map(|(_, p)| sample(p))
        .collect::<Result<_>>()?;
    let never = std::sync::atomic::AtomicBool::new(false);
    let (ops, mut churn_lat) = run_churn(&hub, &endpoint, &a, &never)?;
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<Sample> = petrelds
        .iter()
        .map(|(_, p)| sample(p))
        .collect::<Result<_>>()?;

    // Phase 2: K × block changes that concern the petrelds, with the
    // churn running again.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (latencies, fib_latencies) = std::thread::scope(|s| -> Result<_> {
        let churn = s.spawn(|| run_churn(&hub, &endpoint, &a, &stop));
        // Block changes: a block of a petreld's own, committed as a claim
        // commits it (affinity confirmed and block, one transaction).
        let mut latencies: Vec<f64> = Vec::new();
        let mut fib_latencies: Vec<f64> = Vec::new();
        let result = (|| -> Result<()> {
            let mut next_block = a.nodes * BLOCKS_PER_NODE;
            for _ in 0..a.block_changes {
                for (name, p) in &petrelds {
                    let cidr = pool.block_at(next_block as u128);
                    next_block += 1;
                    let ops = vec![
                        Op::Create {
                            key: keys::affinity(name, &cidr),
                            value: enc(&Affinity {
                                node: name.clone(),
                                cidr,
                                state: AffinityState::Confirmed,
                                since: petrel_ipam::ipam::now(),
                            }),
                        },
                        Op::Create {
                            key: keys::block(&cidr),
                            value: enc(&Block::new(cidr, &pool.name, Some(name.clone()), 0)),
                        },
                    ];
                    let before = p.metric("petrel_ipam_blocks")?;
                    let committed = in_netns(&hub, || {
                        runtime()?.block_on(async {
                            let store = connect(&endpoint).await?;
                            // Connect first: the time counts from the commit.
                            store.ping().await?;
                            store.commit(ops).await?;
                            Ok::<_, anyhow::Error>(Instant::now())
                        })
                    })?;
                    let deadline = committed + Duration::from_secs(10);
                    loop {
                        if p.metric("petrel_ipam_blocks")? > before {
                            latencies.push(committed.elapsed().as_secs_f64() * 1e3);
                            break;
                        }
                        if Instant::now() > deadline {
                            bail!("{name} did not advertise {cidr} within 10 s");
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    // And into another petreld's kernel FIB, over BGP.
                    if let Some((_, other)) = petrelds.iter().find(|(n, _)| n != name) {
                        let prefix = cidr.to_string();
                        loop {
                            if kernel_has(other, &prefix)? {
                                fib_latencies.push(committed.elapsed().as_secs_f64() * 1e3);
                                break;
                            }
                            if Instant::now() > deadline {
                                bail!("{prefix} of {name} not in another node's FIB within 10 s");
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn
            .join()
            .map_err(|_| anyhow!("churn thread panicked"))??;
        result?;
        Ok((latencies, fib_latencies))
    })?;

    let mut rows = Vec::new();
    for (i, (name, p)) in petrelds.iter().enumerate() {
        let (b, x) = (before[i], after[i]);
        // Each petreld's own block changes are part of the window: their
        // block bytes and derivations are the "concerns it" share.
        rows.push(json!({
            "petreld": name,
            "startup_sync_s": startup[i].0.as_secs_f64(),
            "startup_bytes_read": startup[i].1.all_bytes,
            "startup_rss_mib": startup[i].2,
            "window_block_bytes_read": x.block_bytes - b.block_bytes,
            "window_bytes_read": x.all_bytes - b.all_bytes,
            "window_cpu_s": x.cpu - b.cpu,
            "window_derivations": x.derivations - b.derivations,
            "window_events": x.events - b.events,
            "window_full_syncs": x.syncs - b.syncs,
            "rss_mib": rss_mib(p.daemon().pid())?,
        }));
    }
    let mut lat = latencies.clone();
    let mut fib = fib_latencies.clone();
    let out = json!({
        "nodes": a.nodes,
        "petrelds": a.petrelds,
        "pods_per_node": a.pods,
        "blocks": check.blocks,
        "addresses": check.addresses_in_use,
        "write_s": write_time.as_secs_f64(),
        "ipam_check_s": check_time.as_secs_f64(),
        "churn_ops": ops,
        "churn_rate_requested": a.churn,
        "churn_op_ms_p50": pct(&mut churn_lat, 0.5),
        "churn_op_ms_p99": pct(&mut churn_lat, 0.99),
        "own_block_to_advertised_ms_p50": pct(&mut lat, 0.5),
        "own_block_to_advertised_ms_p99": pct(&mut lat, 0.99),
        "own_block_changes": latencies.len(),
        "block_to_other_fib_ms_p50": pct(&mut fib.clone(), 0.5),
        "block_to_other_fib_ms_p99": pct(&mut fib, 0.99),
        "churn_via": if a.cni { "cni (petrel-ipam-direct)" } else { "ipam library" },
        "per_petreld": rows,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "N={} nodes ({} blocks, {} addresses), K={} petrelds; churn {} ops in the window (requested {}/s), op p50 {:.1} ms p99 {:.1} ms",
            a.nodes, check.blocks, check.addresses_in_use, a.petrelds, ops, a.churn,
            out["churn_op_ms_p50"].as_f64().unwrap_or(0.0), out["churn_op_ms_p99"].as_f64().unwrap_or(0.0)
        );
        println!(
            "own new block -> advertised: p50 {:.1} ms, p99 {:.1} ms over {}",
            out["own_block_to_advertised_ms_p50"]
                .as_f64()
                .unwrap_or(0.0),
            out["own_block_to_advertised_ms_p99"]
                .as_f64()
                .unwrap_or(0.0),
            latencies.len()
        );
        println!(
            "a node's new block -> another node's kernel FIB (BGP): p50 {:.1} ms, p99 {:.1} ms over {}",
            out["block_to_other_fib_ms_p50"].as_f64().unwrap_or(0.0),
            out["block_to_other_fib_ms_p99"].as_f64().unwrap_or(0.0),
            fib_latencies.len()
        );
        println!("petreld   start(s)  start(bytes)  block-bytes(window)  bytes(window)  cpu(window s)  derivations  syncs  rss(MiB)");
        for r in out["per_petreld"].as_array().into_iter().flatten() {
            println!(
                "{:8} {:8.2} {:13.0} {:20.0} {:14.0} {:14.3} {:12.0} {:6.0} {:9.1}",
                r["petreld"].as_str().unwrap_or(""),
                r["startup_sync_s"].as_f64().unwrap_or(0.0),
                r["startup_bytes_read"].as_f64().unwrap_or(0.0),
                r["window_block_bytes_read"].as_f64().unwrap_or(0.0),
                r["window_bytes_read"].as_f64().unwrap_or(0.0),
                r["window_cpu_s"].as_f64().unwrap_or(0.0),
                r["window_derivations"].as_f64().unwrap_or(0.0),
                r["window_full_syncs"].as_f64().unwrap_or(0.0),
                r["rss_mib"].as_f64().unwrap_or(0.0),
            );
        }
    }
    drop(etcd);
    Ok(())
}
