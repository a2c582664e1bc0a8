//! The peer-side mechanics of the petrel scenarios, proved between real
//! daemons: graceful restart as seen by a helper (FRR, GoBGP, BIRD, and
//! petreld through the same [`topo::Speaker`] trait, on either side), route
//! refresh counters, TCP MD5 right and wrong keys, through the same
//! [`topo`] helpers the petrel suites use.

use anyhow::{ensure, Context, Result};
use petrel_tests::lab::topo::{self, Kind, NeighborSpec, PeerSpec};
use petrel_tests::lab::{require_lab, wait_until, Route};

const A: &str = "10.99.1.1";
const B: &str = "10.99.1.2";
const AS_A: u32 = 4200000001;
const AS_B: u32 = 4200000002;
const PREFIX_A: &str = "10.10.1.0/24";
const PREFIX_B: &str = "10.20.1.0/24";

/// `restarter` at 10.99.1.1 and `helper` at 10.99.1.2, eBGP with graceful
/// restart; optional MD5 keys on each side.
fn spec(
    asn: u32,
    me: &str,
    other: &str,
    other_as: u32,
    prefix: &str,
    key: Option<&str>,
) -> PeerSpec {
    let mut s = PeerSpec::new(me, asn);
    let mut n = NeighborSpec::new(other, other_as, me);
    n.graceful_restart = Some(120);
    n.password = key.map(str::to_string);
    s.neighbors.push(n);
    s.graceful_restart = Some(120);
    s.originate(prefix, &["64512:1"], &[]);
    s
}

fn graceful_restart(restarter: Kind, helper: Kind) -> Result<()> {
    let mut progs = restarter.programs().to_vec();
    progs.extend(helper.programs());
    if !require_lab(&progs) {
        return Ok(());
    }
    let pair = topo::pair(&format!("gr-{restarter:?}-{helper:?}"))?;
    let mut r = topo::start(
        restarter,
        &pair.lab,
        &pair.petrel,
        &spec(AS_A, A, B, AS_B, PREFIX_A, None),
    )?;
    let h = topo::start(
        helper,
        &pair.lab,
        &pair.peer,
        &spec(AS_B, B, A, AS_A, PREFIX_B, None),
    )?;
    h.wait_established(A)?;
    h.wait_routes_from(A, "the restarter's route", &mut |x| {
        Route::find(x, PREFIX_A).is_some()
    })?;

    // Route refresh: the helper asks, the restarter answers with UPDATEs.
    let before = h.updates_received(A)?;
    if let (Some(before), true) = (before, h.refresh_in(A)?) {
        wait_until(
            "UPDATEs answering ROUTE-REFRESH",
            &[h.daemon(), r.daemon()],
            || Ok((h.updates_received(A)?.unwrap_or(0) > before).then_some(())),
        )?;
    }

    let mark = h.log().len();
    r.kill9();
    let present = || -> Result<Route> {
        let x = h.routes_from(A)?;
        Ok(Route::find(&x, PREFIX_A)
            .context("route withdrawn during graceful restart")?
            .clone())
    };
    topo::wait_while_holding(
        "the helper to see the session gone",
        &[h.daemon()],
        || present().map(drop),
        || Ok((!h.established(A)?).then_some(())),
    )?;
    if helper != Kind::Bird {
        topo::wait_while_holding(
            "the route marked stale",
            &[h.daemon()],
            || present().map(drop),
            || Ok(present()?.stale.then_some(())),
        )?;
    }
    r.restart_graceful(&pair.lab)?;
    topo::wait_while_holding(
        "stale mark cleared after End-of-RIB",
        &[h.daemon(), r.daemon()],
        || present().map(drop),
        || Ok((h.established(A)? && !present()?.stale).then_some(())),
    )?;
    let log = h.log();
    let after = &log[mark.min(log.len())..];
    ensure!(
        !after
            .lines()
            .any(|l| l.contains(PREFIX_A) && (l.contains(" removed ") || l.contains("withdrawn"))),
        "withdrawal logged by the helper:\n{after}"
    );
    Ok(())
}

#[test]
fn frr_helps_gobgp_restart() -> Result<()> {
    graceful_restart(Kind::Gobgp, Kind::Frr)
}

#[test]
fn gobgp_helps_bird_restart() -> Result<()> {
    graceful_restart(Kind::Bird, Kind::Gobgp)
}

#[test]
fn bird_helps_frr_restart() -> Result<()> {
    graceful_restart(Kind::Frr, Kind::Bird)
}

/// petreld as the restarting speaker, FRR helping: the same scenario as
/// the daemons' own, through the same trait.
#[test]
fn frr_helps_petreld_restart() -> Result<()> {
    graceful_restart(Kind::Petreld, Kind::Frr)
}

/// petreld as the helper of a restarting BIRD.
#[test]
fn petreld_helps_bird_restart() -> Result<()> {
    graceful_restart(Kind::Bird, Kind::Petreld)
}

fn md5(key_a: &str, key_b: &str) -> Result<()> {
    if !require_lab(&["bird", "birdc", "vtysh", "/usr/lib/frr/bgpd"]) {
        return Ok(());
    }
    let pair = topo::pair(if key_a == key_b { "md5-ok" } else { "md5-bad" })?;
    let a = topo::start(
        Kind::Bird,
        &pair.lab,
        &pair.petrel,
        &spec(AS_A, A, B, AS_B, PREFIX_A, Some(key_a)),
    )?;
    let b = topo::start(
        Kind::Frr,
        &pair.lab,
        &pair.peer,
        &spec(AS_B, B, A, AS_A, PREFIX_B, Some(key_b)),
    )?;
    if key_a == key_b {
        b.wait_established(A)?;
        a.wait_routes_from(B, "routes over MD5", &mut |r| !r.is_empty())?;
        return Ok(());
    }
    wait_until(
        "MD5 failures counted by the kernels",
        &[a.daemon(), b.daemon()],
        || {
            ensure!(
                !a.established(B)? && !b.established(A)?,
                "up with a wrong key"
            );
            Ok(
                (pair.petrel.tcp_ext("TCPMD5Failure")? + pair.peer.tcp_ext("TCPMD5Failure")? >= 4)
                    .then_some(()),
            )
        },
    )?;
    Ok(())
}

#[test]
fn md5_right_key_bird_frr() -> Result<()> {
    md5("s3cret-lab", "s3cret-lab")
}

#[test]
fn md5_wrong_key_bird_frr() -> Result<()> {
    md5("s3cret-lab", "not-the-key")
}
