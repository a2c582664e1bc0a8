//! petreld's session behaviour against real peers, one test per behaviour:
//! refusal at accept, max-prefix, GTSM, connection collision, administrative
//! shutdown, unsupported capability, route refresh, hold timer, NOTIFICATION
//! logging.
//!
//! ```text
//!  petrel 10.99.1.1 ── 10.99.1.2 peer (FRR, a second petreld or the raw speaker)
//!  AS 4200000001          (+ 10.99.1.3, 10.99.1.9 on the same link)
//!                         AS 4200000002
//! ```
//!
//! Every assertion is about what a peer or petreld did; deadlines only turn
//! a hang into a failure.

use anyhow::{bail, ensure, Context, Result};
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::raw::{self, Open, RawSpeaker, SocketOptions};
use petrel_tests::lab::topo::wait_while_holding;
use petrel_tests::lab::topo::View;
use petrel_tests::lab::{frr, require_lab, wait_until, Lab, Netns, Route};
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

const PETREL: &str = "10.99.1.1";
const PEER: &str = "10.99.1.2";
const PEER2: &str = "10.99.1.3";
const STRANGER: &str = "10.99.1.9";
const PETREL_AS: u32 = 4200000001;
const PEER_AS: u32 = 4200000002;

/// The lab and the programs this test needs (besides petreld/petrelctl).
fn ready(programs: &[&str]) -> bool {
    require_lab(programs)
        && petrel_tests::have_bin("petreld")
        && petrel_tests::have_bin("petrelctl")
}

/// Two namespaces on one link: `petrel` (10.99.1.1) and `peer` (10.99.1.2
/// and `extra` addresses).
fn lab(tag: &str, extra: &[&str]) -> Result<(Lab, Netns, Netns)> {
    let lab = Lab::new(tag)?;
    let (p, q) = (lab.netns("petrel")?, lab.netns("peer")?);
    let link = lab.link(&p, &[&format!("{PETREL}/24")], &q, &[&format!("{PEER}/24")])?;
    for a in extra {
        q.add_addr(&link.b, &format!("{a}/24"))?;
    }
    Ok((lab, p, q))
}

/// petreld listening on 10.99.1.1 with these peers (IPv4 unicast).
fn petrel(lab: &Lab, ns: &Netns, peers: Vec<petreld::Peer>) -> Result<Petreld> {
    let mut c = petreld::Config::new(PETREL, PETREL_AS);
    c.listen(PETREL).originate("10.201.0.0/24", &[], &[]);
    for p in peers {
        c.peer(p.local_address(PETREL).families(&["ipv4-unicast"]));
    }
    Petreld::start(lab, ns, &c)
}

fn open() -> Open {
    let mut o = Open::new(PEER_AS, [10, 99, 1, 2]);
    o.ipv6 = false;
    o
}

fn from(addr: &str) -> Result<SocketOptions> {
    Ok(SocketOptions {
        local: Some(addr.parse::<IpAddr>()?),
        ttl: None,
    })
}

/// A NOTIFICATION body's (code, subcode).
fn code(body: &[u8]) -> (u8, u8) {
    (
        body.first().copied().unwrap_or(0),
        body.get(1).copied().unwrap_or(0),
    )
}

/// An UPDATE announcing `prefixes` from the peer.
fn announce(prefixes: &[&str]) -> Result<Vec<u8>> {
    raw::update(&[], &raw::basic_attrs(&[PEER_AS], [10, 99, 1, 2]), prefixes)
}

fn prefixes(routes: &[Route]) -> Vec<&str> {
    routes.iter().map(|r| r.prefix.as_str()).collect()
}

#[test]
fn unconfigured_address_refused_at_accept() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-refuse", &[STRANGER])?;
    let petrel = petrel(&lab, &p, vec![petreld::Peer::new(PEER, PEER_AS).passive()])?;
    let mut peer = RawSpeaker::connect_with(&q, &format!("{PETREL}:179"), &open(), &from(PEER)?)?;
    peer.send_update(&announce(&["10.30.1.0/24"])?)?;
    petrel.wait_routes_from(PEER, "the configured peer's route", &mut |r| r.len() == 1)?;

    // The kernel completes the handshake; petreld must close it unread.
    let mut stranger = RawSpeaker::dial(&q, &format!("{PETREL}:179"), &from(STRANGER)?)?;
    let mut got = Vec::new();
    match stranger.stream().read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => bail!("the stranger's connection was not closed: {e}"),
    }
    ensure!(got.is_empty(), "petrel sent the stranger {got:02x?}");
    ensure!(
        petrel.peers()?.iter().all(|s| s.address != STRANGER),
        "the stranger became a peer"
    );
    wait_until("the refusal in petreld's log", &[petrel.daemon()], || {
        Ok(petrel
            .log()
            .lines()
            .any(|l| l.contains("unconfigured address refused") && l.contains(STRANGER))
            .then_some(()))
    })?;

    // The configured session did not notice.
    peer.send_update(&announce(&["10.30.2.0/24"])?)?;
    petrel.wait_routes_from(PEER, "the second route", &mut |r| r.len() == 2)?;
    peer.still_up(Duration::from_millis(200))?;
    assert_eq!(petrel.peer(PEER)?.state, "Established");
    Ok(())
}

#[test]
fn max_prefix_restart_sends_cease_and_retries() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-maxpfx", &[])?;
    let listener = RawSpeaker::listen(&q, &format!("{PEER}:179"))?;
    let petrel = petrel(
        &lab,
        &p,
        vec![petreld::Peer::new(PEER, PEER_AS).max_prefix(2, "restart", 1)],
    )?;
    let mut peer = RawSpeaker::accept(&listener)?;
    peer.handshake(&open())?;
    peer.send_update(&announce(&[
        "10.30.1.0/24",
        "10.30.2.0/24",
        "10.30.3.0/24",
    ])?)?;
    let n = peer.read_until(raw::NOTIFICATION)?;
    assert_eq!(
        code(&n),
        (6, 1),
        "Cease / Maximum Number of Prefixes Reached: {n:02x?}"
    );
    // RFC 4486 §4: AFI 1, SAFI 1, the upper bound 2.
    assert_eq!(&n[2..], &[0, 1, 1, 0, 0, 0, 2], "NOTIFICATION data");
    // show peers catches up with the session task.
    let down = wait_until("petrel to report the Cease", &[petrel.daemon()], || {
        let s = petrel.peer(PEER)?;
        Ok((s.state != "Established" && s.last_error.is_some()).then_some(s))
    })?;
    let err = down.last_error.as_deref().unwrap_or_default();
    assert!(err.contains("(6/1)"), "show peers: {down:?}");

    // petrel dials again after restart_after, and the session comes back.
    let mut again = RawSpeaker::accept(&listener)?;
    again.handshake(&open())?;
    petrel.wait_established(PEER)?;
    again.send_update(&announce(&["10.30.1.0/24"])?)?;
    petrel.wait_routes_from(PEER, "the route after the restart", &mut |r| r.len() == 1)?;
    Ok(())
}

#[test]
fn max_prefix_warn_keeps_the_session() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-maxwarn", &[])?;
    let petrel = petrel(
        &lab,
        &p,
        vec![petreld::Peer::new(PEER, PEER_AS)
            .passive()
            .max_prefix(2, "warn", 1)],
    )?;
    let mut peer = RawSpeaker::connect_with(&q, &format!("{PETREL}:179"), &open(), &from(PEER)?)?;
    peer.send_update(&announce(&[
        "10.30.1.0/24",
        "10.30.2.0/24",
        "10.30.3.0/24",
    ])?)?;
    petrel.wait_routes_from(PEER, "three routes over the limit", &mut |r| r.len() == 3)?;
    // A later UPDATE is still processed: the session was never torn down.
    peer.send_update(&announce(&["10.30.4.0/24"])?)?;
    let got = petrel.wait_routes_from(PEER, "a fourth route", &mut |r| r.len() == 4)?;
    peer.still_up(Duration::from_millis(200))?;
    let s = petrel.peer(PEER)?;
    assert_eq!(s.state, "Established", "{s:?} {:?}", prefixes(&got));
    Ok(())
}

#[test]
fn gtsm_drops_a_peer_two_hops_away() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-gtsm", &[PEER2])?;
    let petrel = petrel(
        &lab,
        &p,
        vec![
            petreld::Peer::new(PEER, PEER_AS).passive().ttl_security(1),
            petreld::Peer::new(PEER2, PEER_AS).passive().ttl_security(1),
        ],
    )?;
    // One hop away: TTL 255 arrives as 255.
    let near = SocketOptions {
        ttl: Some(255),
        ..from(PEER)?
    };
    let mut one = RawSpeaker::connect_with(&q, &format!("{PETREL}:179"), &open(), &near)?;
    petrel.wait_established(PEER)?;

    // TTL 254: what a peer one more hop away would send. petrel accepts the
    // TCP connection and sends its OPEN (GTSM is set by then); ours never
    // reaches it.
    let far = SocketOptions {
        ttl: Some(254),
        ..from(PEER2)?
    };
    let drops = p.tcp_ext("TCPMinTTLDrop")?;
    let mut two = RawSpeaker::dial(&q, &format!("{PETREL}:179"), &far)?;
    let petrel_open = two.read_until(raw::OPEN)?;
    ensure!(!petrel_open.is_empty());
    let mut o = open();
    o.router_id = [10, 99, 1, 3];
    two.send(&o.encode())?;
    two.keepalive()?;
    wait_until(
        "the kernel to drop the TTL-254 segments",
        &[petrel.daemon()],
        || Ok((p.tcp_ext("TCPMinTTLDrop")? > drops).then_some(())),
    )?;
    let s = petrel.peer(PEER2)?;
    assert_ne!(s.state, "Established", "{s:?}");
    assert_ne!(s.state, "OpenConfirm", "petrel read our OPEN: {s:?}");
    one.still_up(Duration::from_millis(10))?;
    assert_eq!(petrel.peer(PEER)?.state, "Established");
    Ok(())
}

/// Two petrelds dialling each other with both TCP connections up before
/// either petreld looks: returns once both sessions are Established.
fn collide(tag: &str) -> Result<Option<(Lab, Netns, Petreld, Petreld)>> {
    if !ready(&["ss"]) {
        return Ok(None);
    }
    let lab = Lab::new(tag)?;
    let (a, b) = (lab.netns("petrel-a")?, lab.netns("petrel-b")?);
    let link = lab.link(&a, &[&format!("{PETREL}/24")], &b, &[&format!("{PEER}/24")])?;
    // Each side's frames go to a MAC no one has, so both first SYNs are
    // lost and both connections wait in SYN-SENT.
    let wrong_mac = |ns: &Netns, dev: &str, addr: &str| {
        ns.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            dev,
            "nud",
            "permanent",
        ])
    };
    wrong_mac(&a, &link.a, PEER)?;
    wrong_mac(&b, &link.b, PETREL)?;
    let peer = |addr: &str, asn: u32, local: &str| {
        petreld::Peer::new(addr, asn)
            .local_address(local)
            .families(&["ipv4-unicast"])
            .hold_time(3)
            .keepalive(1)
    };
    let mut ca = petreld::Config::new(PETREL, PETREL_AS);
    ca.listen(PETREL).peer(peer(PEER, PEER_AS, PETREL));
    let mut cb = petreld::Config::new(PEER, PEER_AS);
    cb.listen(PEER).peer(peer(PETREL, PETREL_AS, PEER));
    ca.log_filter = "info,petrel_bgp::session=debug".into();
    cb.log_filter = ca.log_filter.clone();
    let pa = Petreld::start(&lab, &a, &ca)?;
    let pb = Petreld::start(&lab, &b, &cb)?;
    let syn_sent = |ns: &Netns| -> Result<bool> {
        let out = ns.exec("ss", &["-Htn", "state", "syn-sent", "( dport = :179 )"])?;
        Ok(!out.trim().is_empty())
    };
    wait_until(
        "both petrelds dialling",
        &[pa.daemon(), pb.daemon()],
        || Ok((syn_sent(&a)? && syn_sent(&b)?).then_some(())),
    )?;
    // Frozen, neither petreld can pick one connection before the other
    // exists: the kernels complete both (each side's outgoing one, and the
    // other's waiting to be accepted), then both petrelds see both.
    signal(&[&pa, &pb], libc::SIGSTOP);
    a.ip(&["neigh", "del", PEER, "dev", &link.a])?;
    b.ip(&["neigh", "del", PETREL, "dev", &link.b])?;
    let both = |ns: &Netns| -> Result<bool> {
        let out = ns.exec(
            "ss",
            &[
                "-Htn",
                "state",
                "established",
                "( sport = :179 or dport = :179 )",
            ],
        )?;
        Ok(out.lines().count() == 2)
    };
    let crossed = wait_until("two TCP connections", &[], || {
        Ok((both(&a)? && both(&b)?).then_some(()))
    });
    signal(&[&pa, &pb], libc::SIGCONT);
    crossed?;
    pa.wait_established(PEER)?;
    pb.wait_established(PETREL)?;
    Ok(Some((lab, a, pa, pb)))
}

#[test]
fn connection_collision_leaves_one_stable_session() -> Result<()> {
    let Some((_lab, a, pa, pb)) = collide("sess-collide")? else {
        return Ok(());
    };

    // Stable: both stay Established while the uptime grows past a few hold
    // times' worth of keepalives, and the uptime never resets.
    let last = std::cell::Cell::new((0, 0));
    wait_while_holding(
        "uptime past 4 s on both sides",
        &[pa.daemon(), pb.daemon()],
        || {
            let (sa, sb) = (pa.peer(PEER)?, pb.peer(PETREL)?);
            ensure!(sa.state == "Established" && sb.state == "Established");
            let (la, lb) = last.get();
            ensure!(
                sa.uptime_seconds >= la && sb.uptime_seconds >= lb,
                "a session restarted: {sa:?} {sb:?}"
            );
            last.set((sa.uptime_seconds, sb.uptime_seconds));
            Ok(())
        },
        || {
            let (la, lb) = last.get();
            Ok((la >= 4 && lb >= 4).then_some(()))
        },
    )?;
    let conns = bgp_connections(&a)?;
    assert_eq!(conns.lines().count(), 1, "BGP connections:\n{conns}");
    for (name, p) in [("A", &pa), ("B", &pb)] {
        let log = p.log();
        let ups = log.matches("session established").count();
        assert_eq!(ups, 1, "petreld {name} established {ups} times:\n{log}");
    }
    // Which connection survives: the test below.
    Ok(())
}

/// Of two connections that both exist, one survives (RFC 4271 §6.8): the
/// first session comes up on one of them, with no connect-retry round.
#[test]
fn connection_collision_loses_neither_connection() -> Result<()> {
    let Some((_lab, a, pa, pb)) = collide("sess-collide2")? else {
        return Ok(());
    };
    // When both OPENs crossed and §6.8 decided, the survivor is the
    // connection the higher BGP Identifier (B) initiated, which A accepted
    // on port 179.
    let logs = format!("{}\n{}", pa.log(), pb.log());
    if logs.lines().any(|l| l.contains("collision:")) {
        let conns = wait_until(
            "one BGP connection left",
            &[pa.daemon(), pb.daemon()],
            || {
                let c = bgp_connections(&a)?;
                Ok((c.lines().count() == 1).then_some(c))
            },
        )?;
        let local = conns.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            local.ends_with(":179"),
            "§6.8 kept A's connection: {conns}\n{logs}"
        );
    }
    // Lost: a connection that closed under the FSM, or a connect-retry
    // round (Active back to Connect). The side that switches to the second
    // connection passes through Active on its way, which is not a loss.
    for (name, p) in [("A", &pa), ("B", &pb)] {
        let log = p.log();
        let before: Vec<&str> = log
            .lines()
            .take_while(|l| !l.contains("session established"))
            .filter(|l| {
                l.contains("connection closed")
                    || l.contains("connect failed")
                    || l.contains("from=\"Active\" to=\"Connect\"")
            })
            .collect();
        assert!(
            before.is_empty(),
            "petreld {name} lost its connection before the first session:\n{log}"
        );
    }
    Ok(())
}

/// The established BGP connections in `ns`, one `ss` line each.
fn bgp_connections(ns: &Netns) -> Result<String> {
    ns.exec(
        "ss",
        &[
            "-Htn",
            "state",
            "established",
            "( sport = :179 or dport = :179 )",
        ],
    )
}

fn signal(daemons: &[&Petreld], sig: libc::c_int) {
    for d in daemons {
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(d.daemon().pid() as libc::pid_t, sig) };
    }
}

/// petrel and FRR, Established, a route each way.
fn petrel_frr(tag: &str) -> Result<Option<(Lab, Petreld, frr::Frr)>> {
    if !ready(&["vtysh", "bgpd"]) {
        return Ok(None);
    }
    let (lab, p, q) = lab(tag, &[])?;
    let petrel = petrel(&lab, &p, vec![petreld::Peer::new(PEER, PEER_AS)])?;
    let mut fc = frr::Config::new(PEER, PEER_AS);
    fc.originate("10.202.0.0/24", &[], &[]);
    fc.neighbor(
        frr::Neighbor::new(PETREL, PETREL_AS)
            .update_source(PEER)
            .families(true, false),
    );
    let f = frr::Frr::start(&lab, &q, &fc.render())?;
    f.wait_established(PETREL)?;
    petrel.wait_established(PEER)?;
    petrel.wait_routes_from(PEER, "FRR's route", &mut |r| r.len() == 1)?;
    wait_until("petrel's route at FRR", &[f.bgpd()], || {
        Ok(f.prefixes("ipv4")?
            .iter()
            .any(|x| x == "10.201.0.0/24")
            .then_some(()))
    })?;
    Ok(Some((lab, petrel, f)))
}

#[test]
fn admin_shutdown_sends_the_communication() -> Result<()> {
    let Some((_lab, petrel, f)) = petrel_frr("sess-shut")? else {
        return Ok(());
    };
    petrel.ctl(&["peer", "disable", PEER, "--message", "maintenance"])?;
    let n = wait_until("FRR to see the shutdown", &[f.bgpd()], || {
        let n = f.neighbor(PETREL)?;
        Ok((n["bgpState"] != "Established" && !n["lastResetDueTo"].is_null()).then_some(n))
    })?;
    assert_eq!(n["lastResetDueTo"], "BGP Notification received", "{n:#}");
    assert_eq!(
        n["lastNotificationReason"], "Cease/Administrative Shutdown",
        "{n:#}"
    );
    assert_eq!(n["lastShutdownDescription"], "maintenance", "{n:#}");
    // Held down: petrel does not come back on its own.
    assert_ne!(f.state(PETREL)?, "Established");

    petrel.ctl(&["peer", "enable", PEER])?;
    f.wait_established(PETREL)?;
    petrel.wait_routes_from(PEER, "FRR's route again", &mut |r| r.len() == 1)?;
    Ok(())
}

#[test]
fn route_refresh_to_the_peer() -> Result<()> {
    let Some((_lab, petrel, f)) = petrel_frr("sess-refresh")? else {
        return Ok(());
    };
    let before = f.message_stat(PETREL, "routeRefreshRecv")?;
    let updates = f.message_stat(PETREL, "updatesRecv")?;
    petrel.ctl(&["peer", "refresh", PEER])?;
    let petrel_route = |r: &[Route]| r.iter().any(|r| r.prefix == "10.201.0.0/24");
    wait_while_holding(
        "FRR to receive a ROUTE-REFRESH",
        &[f.bgpd(), petrel.daemon()],
        || {
            ensure!(petrel.received(PEER)?.len() == 1, "petrel lost FRR's route");
            ensure!(petrel_route(&f.routes("ipv4")?), "FRR lost petrel's route");
            Ok(())
        },
        || Ok((f.message_stat(PETREL, "routeRefreshRecv")? > before).then_some(())),
    )?;
    // Both directions still hold, and the session never reset.
    assert_eq!(f.state(PETREL)?, "Established");
    assert_eq!(petrel.peer(PEER)?.state, "Established");
    assert!(f.message_stat(PETREL, "updatesRecv")? >= updates);
    assert_eq!(petrel.received(PEER)?.len(), 1);
    Ok(())
}

#[test]
fn unsupported_capability_is_dropped_on_retry() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-cap", &[])?;
    let listener = RawSpeaker::listen(&q, &format!("{PEER}:179"))?;
    let petrel = petrel(&lab, &p, vec![petreld::Peer::new(PEER, PEER_AS)])?;

    let mut first = RawSpeaker::accept(&listener)?;
    let o = first.read_until(raw::OPEN)?;
    let caps = raw::open_capabilities(&o);
    // Enhanced Route Refresh (70), or else another optional one petrel sends.
    let code = [70u8, 69, 6, 64]
        .into_iter()
        .find(|c| caps.contains(c))
        .with_context(|| format!("no optional capability to refuse in {caps:?}"))?;
    let tlv = raw::open_capability(&o, code).context("capability TLV")?;
    let mut n = vec![2, 7];
    n.extend(&tlv);
    first.send(&raw::message(raw::NOTIFICATION, &n))?;
    drop(first);

    let mut second = RawSpeaker::accept(&listener)?;
    second.handshake(&open())?;
    let caps2 = raw::open_capabilities(&second.peer_open);
    assert!(
        !caps2.contains(&code),
        "capability {code} still offered: {caps2:?} (first OPEN {caps:?})"
    );
    assert!(caps2.contains(&65), "4-octet AS kept: {caps2:?}");
    petrel.wait_established(PEER)?;
    second.send_update(&announce(&["10.30.1.0/24"])?)?;
    petrel.wait_routes_from(PEER, "a route on the new session", &mut |r| r.len() == 1)?;
    Ok(())
}

#[test]
fn hold_timer_expiry_sends_4_0() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-hold", &[])?;
    let petrel = petrel(
        &lab,
        &p,
        vec![petreld::Peer::new(PEER, PEER_AS).passive().hold_time(3)],
    )?;
    let mut o = open();
    o.hold_time = 3;
    let mut peer = RawSpeaker::connect_with(&q, &format!("{PETREL}:179"), &o, &from(PEER)?)?;
    petrel.wait_established(PEER)?;
    // Silence: read petrel's KEEPALIVEs, send nothing.
    let n = peer.read_until(raw::NOTIFICATION)?;
    assert_eq!(code(&n), (4, 0), "Hold Timer Expired: {n:02x?}");
    let s = wait_until("petrel to report the error", &[petrel.daemon()], || {
        let s = petrel.peer(PEER)?;
        Ok(s.last_error.is_some().then_some(s))
    })?;
    let err = s.last_error.clone().unwrap_or_default().to_lowercase();
    assert!(err.contains("hold"), "show peers: {s:?}");
    assert_ne!(s.state, "Established");
    Ok(())
}

#[test]
fn received_shutdown_communication_is_logged() -> Result<()> {
    if !ready(&[]) {
        return Ok(());
    }
    let (lab, p, q) = lab("sess-notif", &[])?;
    let petrel = petrel(&lab, &p, vec![petreld::Peer::new(PEER, PEER_AS).passive()])?;
    let mut peer = RawSpeaker::connect_with(&q, &format!("{PETREL}:179"), &open(), &from(PEER)?)?;
    petrel.wait_established(PEER)?;
    // RFC 9003: Cease / Administrative Shutdown, length, UTF-8 text.
    let text = "planned work, ticket 4711 ✓";
    let mut n = vec![6, 2, text.len() as u8];
    n.extend(text.as_bytes());
    peer.send(&raw::message(raw::NOTIFICATION, &n))?;
    let line = wait_until(
        "the communication in petreld's log",
        &[petrel.daemon()],
        || {
            Ok(petrel
                .log()
                .lines()
                .find(|l| l.contains(text))
                .map(str::to_string))
        },
    )?;
    println!("petreld: {line}");
    let lower = line.to_lowercase();
    assert!(
        lower.contains("shutdown") || lower.contains("cease"),
        "the decoded meaning: {line}"
    );
    Ok(())
}
