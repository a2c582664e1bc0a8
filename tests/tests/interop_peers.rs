//! petrel against BIRD 2, FRR and GoBGP (issue 3, "Interop suite"): every
//! scenario runs once per peer daemon.
//!
//! Topology ([`topo::pair`]): namespace `petrel` (10.99.1.1, fd00:99:1::1,
//! AS 4200000001) and `peer` (10.99.1.2, fd00:99:1::2, AS 4200000002 for
//! eBGP, petrel's AS for iBGP) on one veth link. petrel originates
//! 10.10.1.0/24 or fd00:10:1::/48, the peer 10.20.1.0/24 or fd00:20:1::/48.

use anyhow::{ensure, Context, Result};
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::topo::{
    self, Kind, NeighborSpec, PeerSpec, PEER4, PEER6, PEER_AS, PETREL4, PETREL6, PETREL_AS,
};
use petrel_tests::lab::{fib, frr as lab_frr, require_lab, wait_until, Route};

const OURS4: &str = "10.10.1.0/24";
const OURS6: &str = "fd00:10:1::/48";
const THEIRS4: &str = "10.20.1.0/24";
const THEIRS6: &str = "fd00:20:1::/48";
const PEER_ROUTER_ID: &str = "10.99.1.2";

fn can_run(kind: Kind) -> bool {
    require_lab(kind.programs())
        && petrel_tests::have_bin("petreld")
        && petrel_tests::have_bin("petrelctl")
}

/// Addresses and prefixes of one scenario.
struct Plan {
    petrel: &'static str,
    peer: &'static str,
    ours: &'static str,
    theirs: &'static str,
    family: &'static str,
    peer_as: u32,
}

fn plan(ibgp: bool, v6: bool) -> Plan {
    Plan {
        petrel: if v6 { PETREL6 } else { PETREL4 },
        peer: if v6 { PEER6 } else { PEER4 },
        ours: if v6 { OURS6 } else { OURS4 },
        theirs: if v6 { THEIRS6 } else { THEIRS4 },
        family: if v6 { "ipv6-unicast" } else { "ipv4-unicast" },
        peer_as: if ibgp { PETREL_AS } else { PEER_AS },
    }
}

/// petreld's config for a plan, with a hook for the peer entry.
fn petrel_config(p: &Plan, peer: impl FnOnce(petreld::Peer) -> petreld::Peer) -> petreld::Config {
    let mut c = petreld::Config::new(PETREL4, PETREL_AS);
    c.listen(p.petrel)
        .peer(peer(
            petreld::Peer::new(p.peer, p.peer_as)
                .local_address(p.petrel)
                .families(&[p.family]),
        ))
        .originate(p.ours, &["64512:100"], &["4200000001:1:2"]);
    c
}

/// The peer's spec for a plan, with a hook for its session.
fn peer_spec(p: &Plan, n: impl FnOnce(NeighborSpec) -> NeighborSpec) -> PeerSpec {
    let mut s = PeerSpec::new(PEER_ROUTER_ID, p.peer_as);
    s.neighbors
        .push(n(NeighborSpec::new(p.petrel, PETREL_AS, p.peer)));
    s.originate(p.theirs, &["64512:200"], &["4200000002:3:4"]);
    s
}

fn find<'a>(routes: &'a [Route], prefix: &str) -> Result<&'a Route> {
    Route::find(routes, prefix).with_context(|| format!("no {prefix} in {routes:#?}"))
}

/// Session up, routes both ways with their attributes, withdrawals both
/// ways, route refresh.
fn basic(kind: Kind, ibgp: bool, v6: bool) -> Result<()> {
    if !can_run(kind) {
        return Ok(());
    }
    let p = plan(ibgp, v6);
    let pair = topo::pair(&format!("{kind:?}-basic"))?;
    let mut petrel = Petreld::start(&pair.lab, &pair.petrel, &petrel_config(&p, |x| x))?;
    let mut peer = topo::start(kind, &pair.lab, &pair.peer, &peer_spec(&p, |n| n))?;
    petrel.wait_established(p.peer)?;
    peer.wait_established(p.petrel)?;

    // petrel -> peer
    let got = peer.wait_routes_from(p.petrel, "petrel's route at the peer", &mut |r| {
        Route::find(r, p.ours).is_some()
    })?;
    let r = find(&got, p.ours)?;
    let want_path = if ibgp {
        String::new()
    } else {
        PETREL_AS.to_string()
    };
    assert_eq!(r.as_path, want_path, "{r:?}");
    assert_eq!(r.next_hop, p.petrel, "{r:?}");
    assert_eq!(r.origin, "IGP");
    assert_eq!(r.communities, ["64512:100"]);
    assert_eq!(r.large_communities, ["4200000001:1:2"]);
    if ibgp {
        assert_eq!(r.local_pref, Some(100), "{r:?}");
    }

    // peer -> petrel
    let got = petrel.wait_routes_from(p.peer, "the peer's route at petrel", &mut |r| {
        Route::find(r, p.theirs).is_some()
    })?;
    let r = find(&got, p.theirs)?;
    let want_path = if ibgp {
        String::new()
    } else {
        PEER_AS.to_string()
    };
    assert_eq!(r.as_path, want_path, "{r:?}");
    assert_eq!(r.next_hop, p.peer, "{r:?}");
    assert_eq!(r.origin, "IGP");
    assert_eq!(r.communities, ["64512:200"]);
    assert_eq!(r.large_communities, ["4200000002:3:4"]);
    assert!(r.best && !r.stale, "{r:?}");
    assert_eq!(r.peer.as_deref(), Some(p.peer));
    let st = petrel.peer(p.peer)?;
    assert_eq!((st.asn, st.state.as_str()), (p.peer_as, "Established"));
    assert!(
        st.received >= 1 && st.accepted >= 1 && st.advertised >= 1,
        "{st:?}"
    );

    // petreld installs the learned route in its kernel FIB, with petrel's
    // own protocol (named in /etc/iproute2/rt_protos.d) and the peer as gateway.
    let k = wait_until(
        "the peer's route in petrel's kernel FIB",
        &[petrel.daemon()],
        || {
            Ok(fib::bgp_routes(&pair.petrel)?
                .into_iter()
                .find(|f| f.dst == p.theirs))
        },
    )?;
    assert_eq!(k.protocol, "petrel", "{k:?}");
    assert_eq!(k.gateways, [p.peer], "{k:?}");
    // Someone deletes petrel's route: petreld puts it back (netlink events).
    pair.petrel.ip(&["route", "del", p.theirs])?;
    wait_until(
        "the deleted route restored in petrel's kernel FIB",
        &[petrel.daemon()],
        || {
            Ok(fib::bgp_routes(&pair.petrel)?
                .into_iter()
                .find(|f| f.dst == p.theirs && f.protocol == "petrel"))
        },
    )?;

    // A withdrawal by the peer reaches petrel; the session stays.
    peer.withdraw(p.theirs)?;
    petrel.wait_routes_from(p.peer, "the peer's withdrawal at petrel", &mut |r| {
        Route::find(r, p.theirs).is_none()
    })?;
    wait_until(
        "the withdrawn route gone from petrel's kernel FIB",
        &[petrel.daemon()],
        || {
            Ok((!fib::bgp_routes(&pair.petrel)?
                .iter()
                .any(|f| f.dst == p.theirs))
            .then_some(()))
        },
    )?;
    peer.announce(p.theirs, &["64512:201"], &[])?;
    let got = petrel.wait_routes_from(p.peer, "the re-announcement at petrel", &mut |r| {
        Route::find(r, p.theirs).is_some_and(|r| r.communities == ["64512:201"])
    })?;
    assert!(find(&got, p.theirs)?.large_communities.is_empty());

    // Route refresh: the peer asks petrel to send its routes again.
    let before = peer.updates_received(p.petrel)?;
    let sent = peer.refresh_in(p.petrel)?;
    if let (Some(before), true) = (before, sent) {
        wait_until(
            "petrel's answer to ROUTE-REFRESH",
            &[peer.daemon(), petrel.daemon()],
            || Ok((peer.updates_received(p.petrel)?.unwrap_or(0) > before).then_some(())),
        )?;
    }
    let got = peer.routes_from(p.petrel)?;
    find(&got, p.ours)?;
    ensure!(
        peer.established(p.petrel)?,
        "session dropped after route refresh"
    );

    // petrel going away (SIGTERM: NOTIFICATION Cease) withdraws its routes.
    petrel.stop()?;
    peer.wait_routes_from(p.petrel, "petrel's routes gone at the peer", &mut |r| {
        Route::find(r, p.ours).is_none()
    })?;
    Ok(())
}

/// TCP MD5: the right key brings the session up.
fn md5_right_key(kind: Kind) -> Result<()> {
    if !can_run(kind) {
        return Ok(());
    }
    let p = plan(false, false);
    let pair = topo::pair(&format!("{kind:?}-md5ok"))?;
    let petrel = Petreld::start(
        &pair.lab,
        &pair.petrel,
        &petrel_config(&p, |x| x.password("s3cret-lab")),
    )?;
    let peer = topo::start(
        kind,
        &pair.lab,
        &pair.peer,
        &peer_spec(&p, |mut n| {
            n.password = Some("s3cret-lab".into());
            n
        }),
    )?;
    petrel.wait_established(p.peer)?;
    peer.wait_established(p.petrel)?;
    petrel.wait_routes_from(p.peer, "routes over the MD5 session", &mut |r| {
        Route::find(r, p.theirs).is_some()
    })?;
    Ok(())
}

/// TCP MD5: with a wrong key the kernel drops every segment and the
/// session never comes up. "Never" is made concrete: both sides have
/// tried (the kernels counted several bad signatures) and neither is up.
fn md5_wrong_key(kind: Kind) -> Result<()> {
    if !can_run(kind) {
        return Ok(());
    }
    let p = plan(false, false);
    let pair = topo::pair(&format!("{kind:?}-md5bad"))?;
    let petrel = Petreld::start(
        &pair.lab,
        &pair.petrel,
        &petrel_config(&p, |x| x.password("s3cret-lab")),
    )?;
    let peer = topo::start(
        kind,
        &pair.lab,
        &pair.peer,
        &peer_spec(&p, |mut n| {
            n.password = Some("not-the-key".into());
            n
        }),
    )?;
    let failures = || -> Result<u64> {
        Ok(pair.petrel.tcp_ext("TCPMD5Failure")? + pair.peer.tcp_ext("TCPMD5Failure")?)
    };
    wait_until(
        "several MD5 failures",
        &[petrel.daemon(), peer.daemon()],
        || {
            ensure!(
                !peer.established(p.petrel)?,
                "session up with a wrong MD5 key"
            );
            ensure!(
                petrel.peer(p.peer)?.state != "Established",
                "petrel Established with a wrong key"
            );
            Ok((failures()? >= 4).then_some(()))
        },
    )?;
    assert!(!peer.established(p.petrel)?);
    assert_ne!(petrel.peer(p.peer)?.state, "Established");
    assert!(petrel.received(p.peer)?.is_empty());
    Ok(())
}

/// Words in a peer's log that would mean it withdrew `prefix`.
fn withdrawal_logged(kind: Kind, log: &str, prefix: &str) -> bool {
    log.lines().any(|l| {
        l.contains(prefix)
            && match kind {
                Kind::Bird => l.contains(" removed "),
                Kind::Frr => l.contains("withdrawn") || l.contains("Withdraw"),
                Kind::Gobgp => l.contains("withdraw"),
                // petreld logs sessions, not prefixes.
                Kind::Petreld => false,
            }
    })
}

/// petrel restarts (kill -9, start again) with graceful restart: the peer
/// keeps petrel's routes as stale, never withdraws them, and clears the
/// stale mark after petrel's End-of-RIB.
fn gr_petrel_restarts(kind: Kind) -> Result<()> {
    if !can_run(kind) {
        return Ok(());
    }
    let p = plan(false, false);
    let pair = topo::pair(&format!("{kind:?}-grp"))?;
    let mut pc = petrel_config(&p, |x| x.graceful_restart(120));
    pc.graceful_restart = Some(120);
    let mut petrel = Petreld::start(&pair.lab, &pair.petrel, &pc)?;
    let spec = peer_spec(&p, |mut n| {
        n.graceful_restart = Some(120);
        n
    });
    let peer = topo::start(kind, &pair.lab, &pair.peer, &spec)?;
    petrel.wait_established(p.peer)?;
    peer.wait_routes_from(p.petrel, "petrel's route", &mut |r| {
        Route::find(r, p.ours).is_some()
    })?;
    let log_mark = peer.log().len();

    petrel.kill9();
    let present = || -> Result<Route> {
        let r = peer.routes_from(p.petrel)?;
        Ok(find(&r, p.ours)
            .context("petrel's route withdrawn during graceful restart")?
            .clone())
    };
    // The peer notices the session is gone and keeps the route (stale).
    topo::wait_while_holding(
        "the peer to see petrel gone",
        &[peer.daemon()],
        || present().map(drop),
        || Ok((!peer.established(p.petrel)?).then_some(())),
    )?;
    if kind != Kind::Bird {
        // BIRD shows no mark for (non long-lived) stale routes.
        topo::wait_while_holding(
            "the route marked stale",
            &[peer.daemon()],
            || present().map(drop),
            || Ok(present()?.stale.then_some(())),
        )?;
    }

    petrel.restart(&pair.lab)?;
    topo::wait_while_holding(
        "stale mark cleared after petrel's End-of-RIB",
        &[peer.daemon(), petrel.daemon()],
        || present().map(drop),
        || Ok((peer.established(p.petrel)? && !present()?.stale).then_some(())),
    )?;
    let log = peer.log();
    assert!(
        !withdrawal_logged(kind, &log[log_mark.min(log.len())..], p.ours),
        "the peer logged a withdrawal of {} during petrel's restart",
        p.ours
    );
    if kind == Kind::Frr {
        let n = peer.updates_received(p.petrel)?;
        assert!(n.is_some_and(|n| n >= 1));
    }
    Ok(())
}

/// The peer restarts (kill -9, start again as a restarting speaker):
/// petrel keeps the peer's routes, marked stale, until the peer's
/// End-of-RIB, with no withdrawal in between.
fn gr_peer_restarts(kind: Kind) -> Result<()> {
    if !can_run(kind) {
        return Ok(());
    }
    let p = plan(false, false);
    let pair = topo::pair(&format!("{kind:?}-grh"))?;
    let mut pc = petrel_config(&p, |x| x.graceful_restart(120));
    pc.graceful_restart = Some(120);
    let petrel = Petreld::start(&pair.lab, &pair.petrel, &pc)?;
    let mut spec = peer_spec(&p, |mut n| {
        n.graceful_restart = Some(120);
        n
    });
    spec.graceful_restart = Some(120);
    let mut peer = topo::start(kind, &pair.lab, &pair.peer, &spec)?;
    petrel.wait_established(p.peer)?;
    petrel.wait_routes_from(p.peer, "the peer's route", &mut |r| {
        Route::find(r, p.theirs).is_some()
    })?;

    peer.kill9();
    let present = || -> Result<Route> {
        let r = petrel.received(p.peer)?;
        Ok(find(&r, p.theirs)
            .context("petrel dropped the peer's route during its restart")?
            .clone())
    };
    topo::wait_while_holding(
        "petrel to mark the route stale",
        &[petrel.daemon()],
        || present().map(drop),
        || Ok((petrel.peer(p.peer)?.state != "Established" && present()?.stale).then_some(())),
    )?;
    peer.restart_graceful(&pair.lab)?;
    topo::wait_while_holding(
        "stale mark cleared after the peer's End-of-RIB",
        &[petrel.daemon(), peer.daemon()],
        || present().map(drop),
        || Ok((petrel.peer(p.peer)?.state == "Established" && !present()?.stale).then_some(())),
    )?;
    Ok(())
}

/// The peer restarts (kill -9) but comes back without graceful restart
/// recovery: the Graceful Restart Capability in its new OPEN has the F bit
/// clear. RFC 4724 §4.2: petrel drops the stale routes at Established
/// instead of waiting for End-of-RIB (its log says so), and then has the
/// route again, fresh, from the new session.
fn gr_peer_restarts_cold(kind: Kind) -> Result<()> {
    if !can_run(kind) {
        return Ok(());
    }
    let p = plan(false, false);
    let pair = topo::pair(&format!("{kind:?}-grc"))?;
    let mut pc = petrel_config(&p, |x| x.graceful_restart(120));
    pc.graceful_restart = Some(120);
    let petrel = Petreld::start(&pair.lab, &pair.petrel, &pc)?;
    let mut spec = peer_spec(&p, |mut n| {
        n.graceful_restart = Some(120);
        n
    });
    spec.graceful_restart = Some(120);
    let mut peer = topo::start(kind, &pair.lab, &pair.peer, &spec)?;
    petrel.wait_established(p.peer)?;
    petrel.wait_routes_from(p.peer, "the peer's route", &mut |r| {
        Route::find(r, p.theirs).is_some()
    })?;
    const FLUSHED: &str = "forwarding state not preserved across the restart";
    assert!(!petrel.log().contains(FLUSHED));

    peer.kill9();
    wait_until("petrel to mark the route stale", &[petrel.daemon()], || {
        let r = petrel.received(p.peer)?;
        Ok((petrel.peer(p.peer)?.state != "Established"
            && find(&r, p.theirs).is_ok_and(|r| r.stale))
        .then_some(()))
    })?;
    peer.restart_cold(&pair.lab)?;
    wait_until(
        "the route again, fresh, from the new session",
        &[petrel.daemon(), peer.daemon()],
        || {
            let r = petrel.received(p.peer)?;
            Ok((petrel.peer(p.peer)?.state == "Established"
                && find(&r, p.theirs).is_ok_and(|r| !r.stale))
            .then_some(()))
        },
    )?;
    let log = petrel.log();
    assert!(
        log.lines()
            .any(|l| l.contains(FLUSHED) && l.contains(p.peer)),
        "petrel did not drop the stale routes at Established:\n{log}"
    );
    Ok(())
}

macro_rules! per_peer {
    ($m:ident, $kind:expr) => {
        mod $m {
            use super::*;

            #[test]
            fn ebgp_ipv4() -> Result<()> {
                basic($kind, false, false)
            }

            #[test]
            fn ebgp_ipv6() -> Result<()> {
                basic($kind, false, true)
            }

            #[test]
            fn ibgp_ipv4() -> Result<()> {
                basic($kind, true, false)
            }

            #[test]
            fn ibgp_ipv6() -> Result<()> {
                basic($kind, true, true)
            }

            #[test]
            fn md5_right_key() -> Result<()> {
                super::md5_right_key($kind)
            }

            #[test]
            fn md5_wrong_key() -> Result<()> {
                super::md5_wrong_key($kind)
            }

            #[test]
            fn graceful_restart_petrel_restarts() -> Result<()> {
                gr_petrel_restarts($kind)
            }

            #[test]
            fn graceful_restart_peer_restarts() -> Result<()> {
                gr_peer_restarts($kind)
            }
        }
    };
}

per_peer!(bird, Kind::Bird);
per_peer!(frr, Kind::Frr);
per_peer!(gobgp, Kind::Gobgp);

// FRR has no cold restart with graceful restart configured (see
// `Speaker::restart_cold`).
#[test]
fn bird_graceful_restart_peer_restarts_cold() -> Result<()> {
    gr_peer_restarts_cold(Kind::Bird)
}

#[test]
fn gobgp_graceful_restart_peer_restarts_cold() -> Result<()> {
    gr_peer_restarts_cold(Kind::Gobgp)
}

/// RFC 8950 with FRR: an IPv6 session carrying IPv4 routes with IPv6 next
/// hops, in both directions, and into FRR's kernel FIB.
#[test]
fn frr_ipv4_routes_over_ipv6_next_hop() -> Result<()> {
    if !can_run(Kind::Frr) {
        return Ok(());
    }
    let pair = topo::pair("frr-rfc8950")?;
    let mut pc = petreld::Config::new(PETREL4, PETREL_AS);
    pc.listen(PETREL6)
        .peer(
            petreld::Peer::new(PEER6, PEER_AS)
                .local_address(PETREL6)
                .families(&["ipv4-unicast", "ipv6-unicast"]),
        )
        .originate(OURS4, &["64512:100"], &[]);
    let petrel = Petreld::start(&pair.lab, &pair.petrel, &pc)?;
    let mut spec = PeerSpec::new(PEER_ROUTER_ID, PEER_AS);
    let mut n = NeighborSpec::new(PETREL6, PETREL_AS, PEER6);
    n.ipv4 = true;
    n.extended_nexthop = true;
    spec.neighbors.push(n);
    spec.originate(THEIRS4, &["64512:200"], &[]);
    let peer = topo::start(Kind::Frr, &pair.lab, &pair.peer, &spec)?;
    petrel.wait_established(PEER6)?;
    peer.wait_established(PETREL6)?;

    let got = petrel.wait_routes_from(PEER6, "FRR's IPv4 route at petrel", &mut |r| {
        Route::find(r, THEIRS4).is_some()
    })?;
    let r = find(&got, THEIRS4)?;
    assert!(r.next_hop.contains(':'), "IPv6 next hop expected: {r:?}");
    let got = peer.wait_routes_from(PETREL6, "petrel's IPv4 route at FRR", &mut |r| {
        Route::find(r, OURS4).is_some()
    })?;
    let r = find(&got, OURS4)?;
    assert!(r.next_hop.contains(':'), "IPv6 next hop expected: {r:?}");
    assert_eq!(r.as_path, PETREL_AS.to_string());
    let k = wait_until("petrel's route in FRR's FIB", &[peer.daemon()], || {
        Ok(fib::bgp_routes(&pair.peer)?
            .into_iter()
            .find(|f| f.dst == OURS4))
    })?;
    assert!(k.gateways.iter().all(|g| g.contains(':')), "{k:?}");
    Ok(())
}

/// RFC 4724 §3 with FRR: petrel sets the Restart State bit only while it
/// is restarting. Its first OPEN after start has R = 1; once FRR's
/// End-of-RIB has ended petrel's selection deferral, a session flap
/// (petrel's peer disabled and enabled) brings a new OPEN with R = 0.
#[test]
fn frr_sees_the_restart_state_bit_clear_after_petrels_restart() -> Result<()> {
    if !can_run(Kind::Frr) {
        return Ok(());
    }
    let p = plan(false, false);
    let pair = topo::pair("Frr-rbit")?;
    let mut pc = petrel_config(&p, |x| x.graceful_restart(120));
    pc.graceful_restart = Some(120);
    let petrel = Petreld::start(&pair.lab, &pair.petrel, &pc)?;
    let mut c = lab_frr::Config::new(PEER_ROUTER_ID, p.peer_as);
    c.graceful_restart = Some(120);
    c.originate(p.theirs, &[], &[]);
    c.neighbor(lab_frr::Neighbor::new(p.petrel, PETREL_AS).update_source(p.peer));
    let peer = lab_frr::Frr::start(&pair.lab, &pair.peer, &c.render())?;
    petrel.wait_established(p.peer)?;
    // petrel advertises only once its deferral is over.
    peer.wait_routes_from(p.petrel, "petrel's route", &mut |r| {
        Route::find(r, p.ours).is_some()
    })?;
    // FRR's `rBit`: the Restart State bit of the OPEN it received.
    let r_bit = || -> Result<bool> {
        let n = peer.neighbor(p.petrel)?;
        n["gracefulRestartInfo"]["rBit"]
            .as_bool()
            .with_context(|| format!("no gracefulRestartInfo.rBit in {n:#}"))
    };
    ensure!(r_bit()?, "petrel's first OPEN after its start has R = 1");
    // A session flap (Administrative Shutdown, sent as an RFC 8538 Hard
    // Reset: interop_hard_reset.rs).
    petrel.ctl(&["peer", "disable", p.peer])?;
    wait_until("FRR to see petrel gone", &[peer.bgpd()], || {
        Ok((peer.state(p.petrel)? != "Established").then_some(()))
    })?;
    petrel.ctl(&["peer", "enable", p.peer])?;
    peer.wait_established(p.petrel)?;
    ensure!(
        !r_bit()?,
        "petrel's restart is over: its new OPEN has R = 0"
    );
    Ok(())
}
