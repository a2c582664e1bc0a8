//! BFD in the three-node lab (issue 15): `Options::bfd` (`petrel-lab up
//! --bfd`) runs BFD at 300 ms × 3 on every session, the mesh and the
//! ToR's, both families, with a BGP hold time of [`HOLD`] s.
//!
//! A node made dead (its petreld SIGSTOPped; then, separately, its uplink
//! down) must lose its blocks from the ToR's FIB and from the other nodes'
//! FIBs within [`GONE_WITHIN`], a ninth of the hold time: only BFD can
//! explain that (the hold timer cannot have expired), and the other
//! nodes' sessions with it say they ended with Cease / BFD Down. Undone,
//! everything comes back, and no session that did not involve the dead
//! node was reset.
//!
//! A petreld killed with SIGKILL and restarted is not a dead node: its
//! TCP connections close with it, so the peers keep its routes under
//! graceful restart (RFC 4724 §4.2). BFD goes down 900 ms later (its C
//! bit is clear: BFD died with the control plane, RFC 5880 §4.1), on a
//! session already in graceful restart. RFC 5882 §4.3.2: with the C bit
//! clear a BFD failure cannot be told apart from the restart, so it is
//! best not to abort a graceful restart in progress. petreld (the other
//! nodes) and FRR do not: they keep the routes, and a ping between pods on
//! different nodes loses nothing, both families. BIRD (2.0.12, `bfd on`)
//! does: its BGP protocol stops on the BFD Down and flushes the stale
//! routes, so with a BIRD ToR only the nodes' FIBs are checked to hold
//! (pod-to-pod traffic between nodes does not cross the ToR's FIB); the
//! ToR's loss is printed.
//!
//! `PETREL_LAB_TOR=bird` runs it with BIRD as the ToR (FRR by default).

use anyhow::{ensure, Context, Result};
use petrel_tests::have_bin;
use petrel_tests::lab::cluster::{Cluster, Options};
use petrel_tests::lab::failover::{victim_routes, Failure, Pinger};
use petrel_tests::lab::topo::{wait_while_holding, Kind};
use petrel_tests::lab::{require_lab, wait_until, Lab};
use std::time::{Duration, Instant};

/// BGP hold time of every session: long, so that a route gone within
/// [`GONE_WITHIN`] was taken down by BFD.
const HOLD: u16 = 90;
/// Graceful-restart restart time.
const RESTART: u16 = 30;
/// A ninth of the hold time: BFD detects in 900 ms, the rest is room for
/// a loaded CI machine.
const GONE_WITHIN: Duration = Duration::from_secs(10);
/// node1: the lowest address, which dials its mesh peers, so it is back
/// as soon as it can dial (see e2e_lab.rs).
const VICTIM: usize = 0;

fn tor() -> Kind {
    match std::env::var("PETREL_LAB_TOR").as_deref() {
        Ok("bird") => Kind::Bird,
        _ => Kind::Frr,
    }
}

fn can_run() -> bool {
    let mut p = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    p.extend(tor().programs());
    if tor() == Kind::Frr {
        p.push("/usr/lib/frr/bfdd");
    }
    require_lab(&p) && have_bin("petreld") && have_bin("petrelctl") && have_bin("petrel-ipam")
}

fn phase<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f().with_context(|| format!("phase: {name}"));
    eprintln!(
        "lab_bfd phase {name}: {:?} ({:.1?})",
        r.is_ok(),
        t.elapsed()
    );
    r
}

#[test]
fn bfd_takes_a_dead_node_out_and_a_restart_loses_nothing() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let options = Options {
        tor: tor(),
        bfd: true,
        hold_time: HOLD,
        restart_time: RESTART,
        ..Options::default()
    };
    let mut c = phase("up with BFD", || Cluster::up(Lab::new("bfd")?, options))?;
    phase("BFD on every session", || bfd_everywhere(&c))?;
    phase("petreld SIGSTOPped", || dead_node(&c, Failure::Stop))?;
    phase("uplink down", || dead_node(&c, Failure::LinkDown))?;
    phase("kill -9 and restart", || kill9_restart(&mut c))?;
    Ok(())
}

/// Every session of every node has a BFD session Up at 300 ms × 3 (what
/// `wait_converged` waited for), the ToR's too, and `show bfd` lists
/// them.
fn bfd_everywhere(c: &Cluster) -> Result<()> {
    let down = c.bfd_down()?;
    ensure!(down.is_empty(), "BFD sessions not Up: {down:?}");
    for n in &c.nodes {
        let table = n.petreld.ctl(&["show", "bfd"])?;
        // The ToR's two addresses and two of each other node.
        let up = table.lines().filter(|l| l.contains(" Up ")).count();
        ensure!(up == 6, "{}: {up} sessions Up in\n{table}", n.name);
    }
    Ok(())
}

/// Sessions of `before` that involve node `victim`, as `no_reset` takes
/// them.
fn involving(c: &Cluster, victim: usize) -> Vec<(String, String)> {
    let v = &c.nodes[victim];
    let mut ex: Vec<(String, String)> = c
        .tor_addresses()
        .into_iter()
        .chain(c.nodes.iter().flat_map(|n| n.session_addresses()))
        .map(|a| (v.name.clone(), a.to_string()))
        .collect();
    for n in c.nodes.iter().filter(|n| n.name != v.name) {
        for a in v.session_addresses() {
            ex.push((n.name.clone(), a.to_string()));
        }
    }
    ex
}

/// `failure` on the victim: its blocks leave every FIB within
/// [`GONE_WITHIN`], the other nodes' sessions with it end with Cease /
/// BFD Down; undone, the lab converges again with no other session
/// reset.
fn dead_node(c: &Cluster, failure: Failure) -> Result<()> {
    let before = c.uptimes()?;
    ensure!(
        victim_routes(c, VICTIM)?.len() == 2 * (1 + (c.nodes.len() - 1)),
        "the victim's blocks are not everywhere before the failure: {:?}",
        victim_routes(c, VICTIM)?
    );
    failure.apply(c, VICTIM)?;
    let t = Instant::now();
    let gone = gone_within(c);
    eprintln!(
        "measure: {}: the victim's blocks gone from every FIB after {} ms",
        failure.name(),
        t.elapsed().as_millis()
    );
    let reasons = bfd_reasons(c);
    failure.undo(c, VICTIM)?;
    gone?;
    reasons?;
    c.wait_converged()?;
    let except = involving(c, VICTIM);
    let except: Vec<(&str, &str)> = except
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    c.no_reset(&before, &except)
}

/// Polls until the victim's blocks are nowhere; fails after
/// [`GONE_WITHIN`] with where they still are.
fn gone_within(c: &Cluster) -> Result<()> {
    let t = Instant::now();
    loop {
        let left = victim_routes(c, VICTIM)?;
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            t.elapsed() < GONE_WITHIN,
            "after {GONE_WITHIN:?} (hold time {HOLD} s) still {left:?}\n----- ToR log -----\n{}",
            c.tor.daemon().log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The other nodes ended their sessions with the victim because BFD went
/// down (RFC 9384's Cease subcode in `show peers`), and say BFD is not Up.
fn bfd_reasons(c: &Cluster) -> Result<()> {
    let v = &c.nodes[VICTIM];
    for n in c.nodes.iter().filter(|n| n.name != v.name) {
        for a in v.session_addresses() {
            let p = n.petreld.peer(a)?;
            let err = p.last_error.unwrap_or_default();
            ensure!(
                p.state != "Established" && err.contains("BFD down"),
                "{}'s session with {a}: {} ({err})",
                n.name,
                p.state
            );
            let s = n.petreld.bfd_session(a)?;
            ensure!(s["state"] != "Up", "{}'s BFD with {a}: {s}", n.name);
        }
    }
    Ok(())
}

/// SIGKILL the victim's petreld: the peers' BFD with it goes down, yet
/// its blocks stay in every FIB (graceful restart) and pods on other
/// nodes reach its pods without losing a ping, through the restart and
/// until everything is back, both families.
fn kill9_restart(c: &mut Cluster) -> Result<()> {
    // RFC 5882 §4.3.2 (see the module docs): FRR keeps a restarting
    // peer's routes when BFD fails during the restart, BIRD does not.
    let tor_keeps = c.tor.kind() != Kind::Bird;
    let kept = |c: &Cluster| -> Result<Vec<String>> {
        let mut v = victim_routes(c, VICTIM)?;
        v.retain(|r| tor_keeps || !r.contains("the ToR's"));
        Ok(v)
    };
    let everywhere = kept(c)?;
    let pingers = c.nodes[VICTIM].pods[0]
        .addresses()
        .into_iter()
        .map(|dst| Pinger::start(&c.nodes[1].pods[0].ns, dst))
        .collect::<Result<Vec<_>>>()?;
    // A few pings through first.
    std::thread::sleep(Duration::from_millis(500));
    let tor_lost = std::cell::Cell::new(false);
    let holding = |c: &Cluster| -> Result<()> {
        let now = kept(c)?;
        ensure!(now == everywhere, "the victim's blocks left: now {now:?}");
        if !tor_keeps && victim_routes(c, VICTIM)?.len() < 2 * c.nodes.len() {
            tor_lost.set(true);
        }
        Ok(())
    };
    c.nodes[VICTIM].petreld.kill9();
    {
        let c: &Cluster = c;
        let daemons = c.daemons();
        let v = &c.nodes[VICTIM];
        // Every peer's BFD with the dead petreld goes down (no AdminDown
        // from a SIGKILL): detection time, 900 ms.
        wait_while_holding(
            "the peers' BFD with the killed petreld Down",
            &daemons,
            || holding(c),
            || {
                for n in c.nodes.iter().filter(|n| n.name != v.name) {
                    for a in v.session_addresses() {
                        if n.petreld.bfd_session(a)?["state"] == "Up" {
                            return Ok(None);
                        }
                    }
                }
                for a in v.session_addresses() {
                    if c.tor.bfd_state(a)?.as_deref() == Some("up") {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )?;
        // A while longer, dead: what the peers do after BFD Down.
        let until = Instant::now() + Duration::from_secs(3);
        wait_while_holding(
            "3 s more with petreld dead",
            &daemons,
            || holding(c),
            || Ok((Instant::now() > until).then_some(())),
        )?;
    }
    {
        let Cluster { nodes, lab, .. } = c;
        nodes[VICTIM].petreld.restart(lab)?;
    }
    let c: &Cluster = c;
    let daemons = c.daemons();
    wait_while_holding(
        "the restarted petreld's sessions, routes and BFD back",
        &daemons,
        || holding(c),
        || {
            Ok((c.sessions_down()?.is_empty()
                && c.missing_routes()?.is_empty()
                && c.bfd_down()?.is_empty())
            .then_some(()))
        },
    )?;
    if !tor_keeps {
        eprintln!(
            "the BIRD ToR {} the killed node's blocks from its FIB",
            if tor_lost.get() { "dropped" } else { "kept" }
        );
    }
    let mut lost = Vec::new();
    for p in pingers {
        let dst = p.dst.clone();
        let l = p.finish()?;
        eprintln!("ping {dst}: {} sent, {} lost", l.sent, l.lost);
        if l.lost > 0 || l.sent == 0 {
            lost.push(format!("{dst}: {l:?}"));
        }
    }
    ensure!(lost.is_empty(), "pings lost: {lost:?}");
    wait_until("every pod reaching every other pod", &daemons, || {
        Ok(c.ping_matrix()?.iter().all(|p| p.ok).then_some(()))
    })
}
