//! RFC 8538 (Notification Message support for BGP Graceful Restart)
//! against FRR: both sides offer the N bit, so a NOTIFICATION that is not
//! a Hard Reset keeps the routes (graceful restart as for a lost
//! connection) and an Administrative Shutdown travels inside a Hard Reset
//! and ends the routes at once.
//!
//! Topology ([`topo::pair`]): namespace `petrel` (10.99.1.1) and `peer`
//! (10.99.1.2, FRR) on one veth link, eBGP; petrel originates
//! 10.10.1.0/24, FRR 10.20.1.0/24. petreld's FIB is watched with
//! `ip monitor route`, so a route removed and put back between two polls
//! is still seen.

use anyhow::{ensure, Context, Result};
use petrel_tests::lab::failover::RouteMonitor;
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::{self, View, PEER4, PEER_AS, PETREL4, PETREL_AS};
use petrel_tests::lab::{fib, frr as lab_frr, require_lab, wait_until, Route};

const OURS: &str = "10.10.1.0/24";
const THEIRS: &str = "10.20.1.0/24";

fn can_run() -> bool {
    require_lab(topo::Kind::Frr.programs())
        && petrel_tests::have_bin("petreld")
        && petrel_tests::have_bin("petrelctl")
}

#[test]
fn frr_n_bit_graceful_notification_and_hard_reset() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let pair = topo::pair("Frr-hardreset")?;
    let mut pc = petreld::Config::new(PETREL4, PETREL_AS);
    pc.listen(PETREL4)
        .peer(
            petreld::Peer::new(PEER4, PEER_AS)
                .local_address(PETREL4)
                .families(&["ipv4-unicast"])
                .graceful_restart(120),
        )
        .originate(OURS, &[], &[]);
    pc.graceful_restart = Some(120);
    let petrel = Petreld::start(&pair.lab, &pair.petrel, &pc)?;
    let mut c = lab_frr::Config::new("10.99.1.2", PEER_AS);
    c.graceful_restart = Some(120);
    c.originate(THEIRS, &[], &[]);
    c.neighbor(lab_frr::Neighbor::new(PETREL4, PETREL_AS).update_source(PEER4));
    let peer = lab_frr::Frr::start(&pair.lab, &pair.peer, &c.render())?;
    petrel.wait_established(PEER4)?;
    let in_petrels_fib = || -> Result<bool> {
        Ok(fib::bgp_routes(&pair.petrel)?
            .iter()
            .any(|r| r.dst == THEIRS && r.protocol == "petrel"))
    };
    wait_until("FRR's route in petrel's FIB", &[petrel.daemon()], || {
        Ok(in_petrels_fib()?.then_some(()))
    })?;
    peer.wait_routes_from(PETREL4, "petrel's route", &mut |r| {
        Route::find(r, OURS).is_some()
    })?;
    // RFC 8538 §2: FRR saw the N bit in petrel's OPEN.
    let n = peer.neighbor(PETREL4)?;
    let n_bit = n["gracefulRestartInfo"]["nBit"]
        .as_bool()
        .with_context(|| format!("no gracefulRestartInfo.nBit in {n:#}"))?;
    ensure!(n_bit, "petrel's OPEN carries the N bit: {n:#}");

    // §4: FRR resets the session with a NOTIFICATION that is not a Hard
    // Reset: Cease / Administrative Reset, which §5.1 leaves to the
    // implementation (FRR 8.4 sends it as a Hard Reset unless told `no bgp
    // hard-administrative-reset`). petrel keeps FRR's route in its FIB
    // throughout, stale until FRR's End-of-RIB.
    peer.configure(&[
        &format!("router bgp {PEER_AS}"),
        "no bgp hard-administrative-reset",
    ])?;
    let monitor = RouteMonitor::start(&pair.petrel)?;
    let error_before = petrel.peer(PEER4)?.last_error;
    // vtysh prints nothing for `clear`, which the helper takes for an
    // error; the wait below shows whether it took effect.
    let _ = peer.vtysh(&format!("clear bgp {PETREL4}"));
    wait_until(
        "petrel to see FRR's Administrative Reset",
        &[petrel.daemon(), peer.bgpd()],
        || {
            let s = petrel.peer(PEER4)?;
            Ok((s.last_error != error_before
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("administrative reset")))
            .then_some(s))
        },
    )
    .map(|s| {
        let e = s.last_error.unwrap_or_default();
        assert!(!e.contains("hard reset"), "not a Hard Reset: {e}");
    })?;
    wait_until(
        "the session back and FRR's route fresh",
        &[petrel.daemon(), peer.bgpd()],
        || {
            let r = petrel.received(PEER4)?;
            Ok((petrel.peer(PEER4)?.state == "Established"
                && Route::find(&r, THEIRS).is_some_and(|r| !r.stale))
            .then_some(()))
        },
    )?;
    ensure!(in_petrels_fib()?, "FRR's route is in petrel's FIB");
    ensure!(
        monitor.deleted(THEIRS).is_none(),
        "petrel kept FRR's route in its FIB across the NOTIFICATION"
    );

    // §3, §5.1: petrel's Administrative Shutdown goes out as a Hard Reset,
    // and FRR drops petrel's route at once instead of keeping it stale.
    petrel.ctl(&["peer", "disable", PEER4])?;
    wait_until("FRR to see petrel gone", &[peer.bgpd()], || {
        Ok((peer.state(PETREL4)? != "Established").then_some(()))
    })?;
    peer.wait_routes_from(PETREL4, "petrel's route withdrawn", &mut |r| {
        Route::find(r, OURS).is_none()
    })?;
    let n = peer.neighbor(PETREL4)?;
    ensure!(
        n["lastNotificationHardReset"].as_bool() == Some(true),
        "FRR saw a Hard Reset: {n:#}"
    );
    let reason = n["lastNotificationReason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("Administrative Shutdown"),
        "the Hard Reset carries the Administrative Shutdown: {n:#}"
    );
    // petrel itself ended the session for good: FRR's route is gone from
    // its FIB too.
    wait_until(
        "FRR's route out of petrel's FIB",
        &[petrel.daemon()],
        || Ok((!in_petrels_fib()?).then_some(())),
    )?;

    // And back: petrel enables the peer, FRR's route returns.
    petrel.ctl(&["peer", "enable", PEER4])?;
    petrel.wait_established(PEER4)?;
    wait_until(
        "FRR's route in petrel's FIB again",
        &[petrel.daemon()],
        || Ok(in_petrels_fib()?.then_some(())),
    )?;
    Ok(())
}
