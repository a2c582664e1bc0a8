//! The three-node lab end to end (issue 5): real etcd, a real ToR (FRR),
//! three petreld, pods attached by Debian's CNI bridge plugin and
//! petrel-ipam, kernel FIBs in network namespaces.
//!
//! One lab serves every check, in an order where each phase leaves the lab
//! converged for the next, the destructive one last. Timers are short:
//! graceful-restart restart time [`RESTART`] s, hold time 9 s.
//!
//! The lab is dual-stack (issue 15): every check of a block, a route or a
//! ping is made for the IPv4 and the IPv6 block alike, each over its own
//! family's sessions. `PETREL_LAB_IPV4_ONLY=1` runs it IPv4 only;
//! `PETREL_LAB_RFC8950=1` with IPv6 sessions only, the IPv4 blocks
//! carried over them with IPv6 next hops (from the datastore's records,
//! or with `PETREL_LAB_PEERING=file` from petreld.toml).
//!
//! Environment: `PETREL_E2E_ETCD_OUTAGE` (seconds, default 10) is how
//! long etcd stays stopped (the 30 s works the same, only slower);
//! `PETREL_LAB_PEERING=file` runs the lab with file-configured peers
//! instead of the datastore-driven mesh (blackholes are then not checked:
//! petreld originates from the file and installs nothing for it).

use anyhow::{anyhow, ensure, Context, Result};
use petrel_tests::lab::cluster::{
    kernel_route, kernel_routes, ping, ping_refusal, result_address, Cluster, Options, Peering,
    SPARE_ADDR, TOR_ADDR, TOR_ADDR6,
};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::topo::{self, wait_while_holding, Kind, NeighborSpec, PeerSpec};
use petrel_tests::lab::{petreld, remove_named, require_lab, wait_until, Lab};
use petrel_tests::{bin, have_bin};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Graceful-restart restart time of the lab's sessions, seconds.
const RESTART: u16 = 20;
/// The node whose petreld is killed: node1, the lowest address, which
/// dials its mesh peers; restarted, it dials at once. (A node that only
/// listens waits for the others' ConnectRetry, 30 s, longer than this
/// lab's restart time: in a real cluster the restart time, 120 s by
/// default, covers it.)
const VICTIM: usize = 0;
/// The external router the SIGHUP phase adds.
const EXT_AS: u32 = 65010;
const EXT_PREFIX: &str = "10.250.0.0/24";

/// The two tests each build a lab; one at a time keeps them within the
/// machine (and the CI's 2 cores).
static ONE_LAB: Mutex<()> = Mutex::new(());

fn programs() -> Vec<&'static str> {
    let mut p = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    p.extend(Kind::Frr.programs());
    p.extend(Kind::Bird.programs());
    p
}

fn can_run() -> bool {
    require_lab(&programs())
        && have_bin("petreld")
        && have_bin("petrelctl")
        && have_bin("petrel-ipam")
}

fn ipv6() -> bool {
    std::env::var_os("PETREL_LAB_IPV4_ONLY").is_none()
}

fn peering() -> Peering {
    match std::env::var("PETREL_LAB_PEERING").as_deref() {
        Ok("file") => Peering::File,
        _ => Peering::Datastore,
    }
}

fn phase<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f().with_context(|| format!("phase: {name}"));
    eprintln!("e2e phase {name}: {:?} ({:.1?})", r.is_ok(), t.elapsed());
    r
}

#[test]
fn three_node_lab() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let options = Options {
        restart_time: RESTART,
        hold_time: 9,
        peering: peering(),
        log_filter: "info".into(),
        ipv6: ipv6(),
        rfc8950: std::env::var_os("PETREL_LAB_RFC8950").is_some(),
        ..Options::default()
    };
    let mut c = phase("up", || Cluster::up(Lab::new("e2e")?, options))?;
    if c.options.ipv6 {
        ensure!(
            c.nodes
                .iter()
                .all(|n| n.block6.is_some() && n.pods.iter().all(|p| p.address6.is_some())),
            "a dual-stack lab with a node or pod without IPv6"
        );
    }
    phase(
        "converged: sessions, tables, FIBs, MTU, blackholes, pings",
        || converged(&c),
    )?;
    phase("a deleted petrel route comes back", || route_deleted(&c))?;
    phase("SIGHUP adds an external peer", || sighup_new_peer(&mut c))?;
    phase("etcd outage", || etcd_outage(&c))?;
    phase("kill -9 and restart a petreld", || graceful_restart(&mut c))?;
    phase("a petreld gone for good", || gone_for_good(&mut c))?;
    Ok(())
}

/// Everything a converged lab must show.
fn converged(c: &Cluster) -> Result<()> {
    let down = c.sessions_down()?;
    ensure!(down.is_empty(), "sessions not Established: {down:?}");
    let missing = c.missing_routes()?;
    ensure!(missing.is_empty(), "missing: {missing:?}");
    let mtu = c.options.pod_mtu;
    for owner in &c.nodes {
        for (block, _) in owner.blocks() {
            for n in c.nodes.iter().filter(|n| n.name != owner.name) {
                let r = kernel_route(&n.ns, block)?
                    .ok_or_else(|| anyhow!("{block} not in {}'s FIB", n.name))?;
                ensure!(
                    r.mtu == Some(mtu.into()),
                    "{block} in {}'s FIB without route MTU {mtu}: {r:?}",
                    n.name
                );
            }
            if c.options.peering == Peering::Datastore {
                let own = kernel_routes(&owner.ns, block)?;
                ensure!(
                    own.iter().any(|r| r.kind == "blackhole" && r.is_petrel()),
                    "no petrel blackhole for {}'s own block {block}: {own:?}",
                    owner.name,
                );
            }
        }
    }
    let failed: Vec<_> = c.ping_matrix()?.into_iter().filter(|p| !p.ok).collect();
    ensure!(failed.is_empty(), "pings failed: {failed:?}");

    // DF pings at and one byte over the MTU (IPv4 20 or IPv6 40, + ICMP 8
    // octets of headers), from a pod (its eth0 MTU) and from a node, whose
    // uplink is 1500: there only the route MTU petreld set refuses the
    // larger one. (IPv6 has no DF bit, routers never fragment; `-M do`
    // keeps the sender from fragmenting too.)
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    for (dst, headers) in b.pods[0].addresses().into_iter().zip([28, 48]) {
        let fits = mtu - headers;
        for (who, ns) in [("pod", &a.pods[0].ns), ("node", &a.ns)] {
            ensure!(
                ping(ns, dst, Some(fits))?,
                "{who} {}: DF ping of {fits} bytes (MTU {mtu}) to {dst} got no reply",
                a.name
            );
            let refusal = ping_refusal(ns, dst, fits + 1)?.ok_or_else(|| {
                anyhow!("{who}: DF ping one byte over the MTU to {dst} got a reply")
            })?;
            // iputils says `mtu=1450` for IPv4 and `mtu: 1450` for IPv6.
            ensure!(
                refusal.contains(&format!("mtu={mtu}")) || refusal.contains(&format!("mtu: {mtu}")),
                "{who}: refused, but not for MTU {mtu}: {refusal}"
            );
        }
    }
    Ok(())
}

/// `ip route del` of a petrel route: petreld puts it back at once (each
/// family's).
fn route_deleted(c: &Cluster) -> Result<()> {
    let (n, owner) = (&c.nodes[0], &c.nodes[1]);
    for (block, _) in owner.blocks() {
        n.ns.ip(&["route", "del", block, "proto", "202"])?;
        // The "back within a second": a one-second deadline.
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            if kernel_route(&n.ns, block)?.is_some() {
                break;
            }
            ensure!(
                Instant::now() < end,
                "{block} not back in {}'s FIB within 1 s",
                n.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// An external router added to node1's petreld.toml comes up on SIGHUP;
/// no other session resets.
fn sighup_new_peer(c: &mut Cluster) -> Result<()> {
    let ext_ns = c.lab.netns("ext")?;
    c.attach(&ext_ns, "ext", SPARE_ADDR)?;
    let node = &c.nodes[0];
    let mut spec = PeerSpec::new(SPARE_ADDR, EXT_AS);
    let mut nb = NeighborSpec::new(&node.address, c.nodes[0].petreld.config().asn, SPARE_ADDR);
    nb.passive = true;
    spec.neighbors.push(nb);
    spec.originate(EXT_PREFIX, &[], &[]);
    let ext = topo::start(Kind::Bird, &c.lab, &ext_ns, &spec)?;
    let before = c.uptimes()?;
    ensure!(!before.up.is_empty(), "no sessions before the reload");

    let node = &mut c.nodes[0];
    let mut config = node.petreld.config().clone();
    config.peer(
        petreld::Peer::new(SPARE_ADDR, EXT_AS)
            .local_address(&node.address)
            .families(&["ipv4-unicast"]),
    );
    node.petreld.reload(&config)?;
    let node = &c.nodes[0];
    node.petreld.wait_established(SPARE_ADDR)?;
    ext.wait_established(&node.address)?;
    wait_until(
        "the external router's prefix in node1's FIB",
        &[ext.daemon()],
        || {
            Ok(kernel_route(&node.ns, EXT_PREFIX)?
                .filter(|r| r.gateways == [SPARE_ADDR.to_string()])
                .map(drop))
        },
    )?;
    c.no_reset(&before, &[])?;
    // The lab goes on without it: its session down is expected from here.
    drop(ext);
    let node = &mut c.nodes[0];
    let mut config = node.petreld.config().clone();
    config.peers.retain(|p| p.address != SPARE_ADDR);
    node.petreld.reload(&config)?;
    wait_until("the external peer removed", &[], || {
        Ok((!node
            .petreld
            .peers()?
            .iter()
            .any(|p| p.address == SPARE_ADDR))
        .then_some(()))
    })?;
    c.no_reset(&before, &[])
}

/// Every petrel route of every node, as (node, prefix), both families.
fn petrel_routes(c: &Cluster) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for n in &c.nodes {
        for o in c.nodes.iter().filter(|o| o.name != n.name) {
            for (block, _) in o.blocks() {
                if kernel_route(&n.ns, block)?.is_some() {
                    v.push((n.name.clone(), block.to_string()));
                }
            }
        }
    }
    Ok(v)
}

fn outage() -> Duration {
    let s = std::env::var("PETREL_E2E_ETCD_OUTAGE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(s)
}

/// etcd stopped: nothing changes on the wire or in the FIBs; a CNI ADD
/// fails with a CNI error and works once etcd is back.
fn etcd_outage(c: &Cluster) -> Result<()> {
    let routes = petrel_routes(c)?;
    let sessions = c.uptimes()?;
    let node = &c.nodes[1];
    let pod_ns = c.lab.netns(&format!("{}-late", node.name))?;
    let cid = format!("{}-late", node.name);
    let endpoint = c.etcd.endpoint().to_string();
    let mtu = c.options.pod_mtu;

    c.etcd.pause();
    let stopped = Instant::now();
    let during = (|| -> Result<()> {
        let err = match node.cni_pod("ADD", &pod_ns, &cid, &endpoint, mtu) {
            Ok(v) => return Err(anyhow!("CNI ADD succeeded with etcd stopped: {v}")),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            err.contains("\"code\""),
            "the failed ADD printed no CNI error object: {err}"
        );
        eprintln!("CNI ADD with etcd stopped, as expected: {err}");
        while stopped.elapsed() < outage() {
            ensure!(
                petrel_routes(c)? == routes,
                "a route changed while etcd was stopped"
            );
            let down = c.sessions_down()?;
            ensure!(
                down.is_empty(),
                "sessions down while etcd was stopped: {down:?}"
            );
            let missing = c.missing_routes()?;
            ensure!(
                missing.is_empty(),
                "routes gone while etcd was stopped: {missing:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    })();
    c.etcd.resume();
    during?;
    c.no_reset(&sessions, &[])?;
    ensure!(
        petrel_routes(c)? == routes,
        "routes changed after the outage"
    );

    // A runtime deletes a failed attachment before it retries.
    let daemons = c.daemons();
    wait_until("CNI DEL of the failed attachment", &daemons, || {
        Ok(node
            .cni_pod("DEL", &pod_ns, &cid, &endpoint, mtu)
            .ok()
            .map(drop))
    })?;
    let res = wait_until("CNI ADD after etcd is back", &daemons, || {
        Ok(node.cni_pod("ADD", &pod_ns, &cid, &endpoint, mtu).ok())
    })?;
    let mut addrs = vec![result_address(&res, false)];
    if c.options.ipv6 {
        addrs.push(result_address(&res, true));
    }
    let remote = c.nodes[0].pods[0].addresses();
    for (addr, remote) in addrs.into_iter().zip(remote) {
        let addr = addr.ok_or_else(|| anyhow!("an address missing: {res}"))?;
        wait_until(
            "the new pod reaching a pod of another node",
            &daemons,
            || Ok(ping(&pod_ns, remote, None)?.then_some(())),
        )?;
        eprintln!("pod {addr} added after the outage reaches {remote}");
    }
    Ok(())
}

/// A continuous ping (every 0.2 s) from a namespace.
struct Pinger {
    child: std::process::Child,
}

impl Pinger {
    fn start(ns: &petrel_tests::lab::Netns, dst: &str) -> Result<Pinger> {
        let child = ns
            .command("ping")
            .args(["-n", "-i", "0.2", "-W", "1", dst])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Pinger { child })
    }

    /// Stops it; an error unless every probe but the one possibly in
    /// flight at the stop was answered.
    fn finish(self) -> Result<String> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let seqs: Vec<u64> = text
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect();
        let sent: u64 = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no ping summary: {text}"))?;
        let last = seqs.iter().copied().max().unwrap_or(0);
        let gaps: Vec<u64> = (1..=last).filter(|s| !seqs.contains(s)).collect();
        ensure!(
            gaps.is_empty() && sent.saturating_sub(last) <= 1 && sent > 0,
            "pings lost: {sent} sent, replies up to {last}, missing {gaps:?}\n{text}"
        );
        Ok(format!("{sent} pings, none lost"))
    }
}

/// A petreld killed with SIGKILL: its peers keep its routes (graceful
/// restart) and traffic flows; restarted, it comes back without the ToR
/// ever withdrawing its blocks, IPv4 and IPv6.
fn graceful_restart(c: &mut Cluster) -> Result<()> {
    let victim = VICTIM;
    let (blocks, vname): (Vec<(String, String)>, String) = {
        let v = &c.nodes[victim];
        (
            v.blocks()
                .into_iter()
                .map(|(b, a)| (b.to_string(), a.to_string()))
                .collect(),
            v.name.clone(),
        )
    };
    // One continuous ping per family, node2's pod to the victim's.
    let pingers = c.nodes[victim].pods[0]
        .addresses()
        .into_iter()
        .map(|dst| Pinger::start(&c.nodes[1].pods[0].ns, dst))
        .collect::<Result<Vec<_>>>()?;
    let bgpd_log_before = c.tor.log().len();

    // Its blocks must be everywhere at every poll from here on.
    let everywhere = |c: &Cluster| -> Result<()> {
        for (block, vaddr) in &blocks {
            for n in c.nodes.iter().filter(|n| n.name != vname) {
                ensure!(
                    kernel_route(&n.ns, block)?.is_some(),
                    "{block} left {}'s FIB",
                    n.name
                );
            }
            ensure!(
                c.tor.routes_from(vaddr)?.iter().any(|r| &r.prefix == block),
                "the ToR withdrew {block}"
            );
        }
        Ok(())
    };

    c.nodes[victim].petreld.kill9();
    // A quarter of the restart time with petreld dead: the routes stay.
    // The rest leaves room for the restart on a loaded machine.
    let dead_until = Instant::now() + Duration::from_secs(u64::from(RESTART) / 4);
    {
        let c: &Cluster = c;
        let daemons = c.daemons();
        wait_while_holding(
            "a quarter of the restart time",
            &daemons,
            || everywhere(c),
            || Ok((Instant::now() > dead_until).then_some(())),
        )?;
    }
    {
        let Cluster { nodes, lab, .. } = c;
        nodes[victim].petreld.restart(lab)?;
    }
    let c: &Cluster = c;
    let daemons = c.daemons();
    wait_while_holding(
        "the restarted petreld's sessions and routes back",
        &daemons,
        || everywhere(c),
        || Ok((c.sessions_down()?.is_empty() && c.missing_routes()?.is_empty()).then_some(())),
    )?;
    for p in pingers {
        eprintln!("{}", p.finish()?);
    }
    let log = c.tor.log();
    let after = log.get(bgpd_log_before..).unwrap_or_default();
    for (block, _) in &blocks {
        ensure!(
            !after
                .lines()
                .any(|l| l.contains(block.as_str()) && l.contains("withdrawn")),
            "the ToR logged a withdrawal of {block}:\n{after}"
        );
    }
    Ok(())
}

/// A petreld that does not come back: its routes go once the restart
/// time has passed, everywhere.
fn gone_for_good(c: &mut Cluster) -> Result<()> {
    let victim = VICTIM;
    c.nodes[victim].petreld.kill9();
    let c: &Cluster = c;
    let v = &c.nodes[victim];
    let daemons = c.daemons();
    wait_until("the dead node's routes withdrawn", &daemons, || {
        for (block, vaddr) in v.blocks() {
            for n in c.nodes.iter().filter(|n| n.name != v.name) {
                if kernel_route(&n.ns, block)?.is_some() {
                    return Ok(None);
                }
            }
            if c.tor.routes_from(vaddr)?.iter().any(|r| r.prefix == block) {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    // The others still reach each other.
    let (a, b) = (&c.nodes[1], &c.nodes[2]);
    for dst in b.pods[0].addresses() {
        wait_until("node2's pod reaching node3's", &daemons, || {
            Ok(ping(&a.pods[0].ns, dst, None)?.then_some(()))
        })?;
    }
    Ok(())
}

/// `petrel-lab up --json` then `down`; a second `up` after a killed first
/// one works.
#[test]
fn petrel_lab_up_down() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    // Labs of earlier runs of this test whose process is gone (a crash).
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    for n in String::from_utf8_lossy(&list.stdout).lines() {
        let pid = n
            .strip_prefix("plabt")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            remove_named(&format!("plabt{pid}"))?;
        }
    }
    let name = format!("plabt{}", std::process::id());
    let dir = bin("petreld")?
        .parent()
        .map(|d| d.to_path_buf())
        .unwrap_or_default();
    let lab = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_petrel-lab"))
            .args(args)
            .args(["--name", &name])
            .env("PETREL_BIN_DIR", &dir)
            .stdin(Stdio::null())
            .output()
    };
    let namespaces = || -> Result<Vec<String>> {
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{name}-")))
            .map(str::to_string)
            .collect())
    };

    // A first `up` killed half-way.
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_petrel-lab"))
        .args(["up", "--name", &name])
        .env("PETREL_BIN_DIR", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_until("the first up to make node namespaces", &[], || {
        Ok(namespaces()?
            .iter()
            .any(|n| n.contains("node1"))
            .then_some(()))
    })?;
    first.kill()?;
    first.wait()?;

    let out = lab(&["up", "--json"])?;
    let result = (|| -> Result<()> {
        ensure!(
            out.status.success(),
            "petrel-lab up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(v["tor"]["address"] == TOR_ADDR, "{v}");
        // Dual-stack by default.
        ensure!(v["tor"]["address6"] == TOR_ADDR6, "{v}");
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        ensure!(nodes.len() == 3, "{v}");
        ensure!(
            nodes
                .iter()
                .all(|n| n["address6"].is_string() && n["block6"].is_string()),
            "{v}"
        );
        let pods: Vec<(String, String, String)> = nodes
            .iter()
            .flat_map(|n| n["pods"].as_array().cloned().unwrap_or_default())
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (s("netns"), s("address"), s("address6"))
            })
            .collect();
        ensure!(pods.len() == 6, "{v}");
        // The JSON is enough to test the lab from outside: first pod to
        // last, in each family.
        let (ns, _, _) = &pods[0];
        let (_, dst, dst6) = &pods[5];
        for dst in [dst, dst6] {
            let o = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "2", dst])
                .output()?;
            ensure!(o.status.success(), "ping {dst} from {ns} failed");
        }
        Ok(())
    })();
    let down = lab(&["down"])?;
    result?;
    ensure!(down.status.success(), "petrel-lab down failed");
    let left = namespaces()?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
