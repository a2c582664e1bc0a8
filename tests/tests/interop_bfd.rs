//! BFD (RFC 5880/5881) under BGP (RFC 5882) against FRR's bfdd and BIRD's
//! BFD protocol, single-hop, IPv4 and IPv6; keyed SHA1 authentication
//! (§6.7.4) against BIRD (FRR 8.4's bfdd has none); multi-hop (RFC 5883)
//! across a routed namespace against both.
//!
//! ```text
//!  petrel 10.99.1.1, fd00:99:1::1 ── 10.99.1.2, fd00:99:1::2 peer (FRR or BIRD)
//!  AS 4200000001                     AS 4200000002
//!
//!  multi-hop:
//!  petrel 10.99.1.1 ── .254 router .254 ── 10.99.2.2 peer
//!         fd00:99:1::1 ── ::fe     ::fe ── fd00:99:2::2
//! ```
//!
//! Each test brings BFD Up on both sides under an Established BGP session,
//! then makes the peer fail the way a node fails (its daemons stopped with
//! SIGSTOP, or its link down) and checks that petreld ended the BGP
//! session because BFD went down: the reason is in `show peers`, the
//! diagnostic in `show bfd`. How long it took is printed (for
//! docs/benchmarks.md), not asserted.

use anyhow::{ensure, Result};
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::{bird, frr, require_lab, wait_until, Lab, Netns};
use std::time::Instant;

const PETREL4: &str = "10.99.1.1";
const PEER4: &str = "10.99.1.2";
const PETREL6: &str = "fd00:99:1::1";
const PEER6: &str = "fd00:99:1::2";
const PETREL_AS: u32 = 4200000001;
const PEER_AS: u32 = 4200000002;

fn ready(programs: &[&str]) -> bool {
    require_lab(programs)
        && petrel_tests::have_bin("petreld")
        && petrel_tests::have_bin("petrelctl")
}

/// `petrel` and `peer` on one link, both families; the peer's interface.
fn lab(tag: &str) -> Result<(Lab, Netns, Netns, String)> {
    let lab = Lab::new(tag)?;
    let (p, q) = (lab.netns("petrel")?, lab.netns("peer")?);
    let link = lab.link(
        &p,
        &[&format!("{PETREL4}/24"), &format!("{PETREL6}/64")],
        &q,
        &[&format!("{PEER4}/24"), &format!("{PEER6}/64")],
    )?;
    Ok((lab, p, q, link.b))
}

/// petreld with one BFD-protected peer of the family of `peer`.
fn petrel(lab: &Lab, ns: &Netns, peer: &str) -> Result<Petreld> {
    petrel_with(lab, ns, peer, None)
}

/// [`petrel`] with `[bgp] fast_external_failover` set when given.
fn petrel_with(
    lab: &Lab,
    ns: &Netns,
    peer: &str,
    fast_external_failover: Option<bool>,
) -> Result<Petreld> {
    let v6 = peer.contains(':');
    let (local, family) = if v6 {
        (PETREL6, "ipv6-unicast")
    } else {
        (PETREL4, "ipv4-unicast")
    };
    let mut c = petreld::Config::new(PETREL4, PETREL_AS);
    c.listen(PETREL4).listen(PETREL6);
    c.peer(
        petreld::Peer::new(peer, PEER_AS)
            .local_address(local)
            .families(&[family])
            .bfd(300, 300, 3),
    );
    c.fast_external_failover = fast_external_failover;
    Petreld::start(lab, ns, &c)
}

/// Waits until petreld's BFD session with `peer` is Up at the agreed
/// 300 ms × 3. Right after Up the peer may still advertise its 1 s rate
/// (RFC 5880 §6.8.3) until its Poll Sequence: the detection time follows.
fn wait_bfd_fast(petrel: &Petreld, peer: &str) -> Result<serde_json::Value> {
    wait_until(
        &format!("petreld's BFD with {peer} Up at 300 ms x 3"),
        &[petrel.daemon()],
        || {
            let s = petrel.bfd_session(peer)?;
            Ok((s["state"] == "Up" && s["detection_time_us"] == 900_000).then_some(s))
        },
    )
}

/// Waits until petreld's BGP session with `peer` has left Established,
/// returns its reason.
fn wait_bgp_down(petrel: &Petreld, peer: &str, since: Instant) -> Result<String> {
    let err = wait_until(
        &format!("petreld's session with {peer} to go down"),
        &[petrel.daemon()],
        || {
            let p = petrel.peer(peer)?;
            Ok((p.state != "Established").then_some(p.last_error))
        },
    )?;
    eprintln!(
        "measure: BGP with {peer} down {} ms after the failure",
        since.elapsed().as_millis()
    );
    Ok(err.unwrap_or_default())
}

/// The checks common to every failure: BGP ended with Cease / BFD Down
/// (RFC 9384), BFD Down by detection time (RFC 5880 §6.8.4, Diag 1).
fn assert_bfd_teardown(petrel: &Petreld, peer: &str, since: Instant) -> Result<()> {
    let err = wait_bgp_down(petrel, peer, since)?;
    ensure!(
        err.contains("sent NOTIFICATION") && err.contains("BFD down"),
        "petreld's session with {peer} went down for another reason: {err:?}"
    );
    let s = petrel.bfd_session(peer)?;
    ensure!(s["state"] != "Up", "BFD still Up: {s}");
    ensure!(
        s["local_diag"] == "control detection time expired",
        "BFD diagnostic: {s}"
    );
    ensure!(s["flaps"].as_u64() >= Some(1), "no flap counted: {s}");
    Ok(())
}

fn frr_conf(peer_of_frr: &str) -> String {
    let v6 = peer_of_frr.contains(':');
    let mut c = frr::Config::new(PEER4, PEER_AS);
    c.neighbor(
        frr::Neighbor::new(peer_of_frr, PETREL_AS)
            .families(!v6, v6)
            .bfd(),
    );
    c.render()
}

/// FRR's bfdd and petreld come Up (both sides say so, with the timers
/// they agreed), then FRR hangs (bgpd and bfdd SIGSTOPped): petreld ends
/// the session with Cease / BFD Down. FRR resumes: BFD and BGP come back.
fn frr_hang(v6: bool) -> Result<()> {
    let (peer, me) = if v6 {
        (PEER6, PETREL6)
    } else {
        (PEER4, PETREL4)
    };
    let (lab, p, q, _) = lab(if v6 { "bfd-frr6" } else { "bfd-frr4" })?;
    let petrel = petrel(&lab, &p, peer)?;
    let frr = frr::Frr::start_with_bfdd(&lab, &q, &frr_conf(me), "")?;
    frr.wait_established(me)?;
    petrel.wait_established(peer)?;
    let ours = wait_bfd_fast(&petrel, peer)?;
    frr.wait_bfd(me, "up")?;
    let theirs = frr.bfd_peer(me)?;
    // FRR's defaults are 300 ms × 3 too.
    ensure!(ours["remote_multiplier"] == 3, "petreld: {ours}");
    ensure!(
        ours["remote_discriminator"] == theirs["id"],
        "discriminators: petreld {ours} / FRR {theirs}"
    );
    eprintln!("FRR's view: {theirs}");
    // The table operators read.
    let table = petrel.ctl(&["show", "bfd"])?;
    eprintln!("{table}");
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with(peer) && l.contains(" Up ")),
        "show bfd: {table}"
    );

    let t = Instant::now();
    frr.bfdd().expect("started").pause();
    frr.bgpd().pause();
    let r = assert_bfd_teardown(&petrel, peer, t);
    frr.bgpd().resume();
    frr.bfdd().expect("started").resume();
    r?;
    eprintln!("{}", petrel.ctl(&["show", "bfd"])?);
    petrel.wait_bfd(peer, "up")?;
    petrel.wait_established(peer)?;
    frr.wait_established(me)?;
    Ok(())
}

#[test]
fn frr_bfdd_ipv4_hang_ends_the_bgp_session() -> Result<()> {
    if !ready(&["vtysh", "/usr/lib/frr/bfdd"]) {
        return Ok(());
    }
    frr_hang(false)
}

#[test]
fn frr_bfdd_ipv6_hang_ends_the_bgp_session() -> Result<()> {
    if !ready(&["vtysh", "/usr/lib/frr/bfdd"]) {
        return Ok(());
    }
    frr_hang(true)
}

/// The peer's interface goes down: no TCP reset reaches petreld. petreld
/// would see its own end lose carrier (fast external failover,
/// interop_link_down.rs), so that is turned off here: only BFD can tell.
/// Both BFD sides go Down.
#[test]
fn frr_bfdd_link_down_ends_the_bgp_session() -> Result<()> {
    if !ready(&["vtysh", "/usr/lib/frr/bfdd"]) {
        return Ok(());
    }
    let (lab, p, q, ifname) = lab("bfd-frr-link")?;
    let petrel = petrel_with(&lab, &p, PEER4, Some(false))?;
    let frr = frr::Frr::start_with_bfdd(&lab, &q, &frr_conf(PETREL4), "")?;
    frr.wait_established(PETREL4)?;
    wait_bfd_fast(&petrel, PEER4)?;
    frr.wait_bfd(PETREL4, "up")?;
    let t = Instant::now();
    q.ip(&["link", "set", &ifname, "down"])?;
    assert_bfd_teardown(&petrel, PEER4, t)?;
    frr.wait_bfd(PETREL4, "down")?;
    Ok(())
}

fn bird_conf(peer_of_bird: &str) -> String {
    let v6 = peer_of_bird.contains(':');
    let mut c = bird::Config::new(PEER4, PEER_AS);
    let mut b = bird::Peer::new("petrel", peer_of_bird, PETREL_AS).families(!v6, v6);
    b.extra = "  bfd on;\n".into();
    c.peer(b);
    c.extra = "protocol bfd {\n  interface \"*\" { interval 300 ms; multiplier 3; };\n}\n".into();
    c.render()
}

/// BIRD's `show bfd sessions` line for `addr`, if any.
fn bird_bfd_line(b: &bird::Bird, addr: &str) -> Result<Option<String>> {
    let out = b.birdc("show bfd sessions")?;
    Ok(out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .map(str::to_string))
}

/// BIRD's BFD and petreld come Up, then BIRD hangs (SIGSTOP).
fn bird_hang(v6: bool) -> Result<()> {
    let (peer, me) = if v6 {
        (PEER6, PETREL6)
    } else {
        (PEER4, PETREL4)
    };
    let (lab, p, q, _) = lab(if v6 { "bfd-bird6" } else { "bfd-bird4" })?;
    let petrel = petrel(&lab, &p, peer)?;
    let b = bird::Bird::start(&lab, &q, &bird_conf(me))?;
    b.wait_established("petrel")?;
    petrel.wait_established(peer)?;
    let ours = wait_bfd_fast(&petrel, peer)?;
    b.wait_bfd(me, "up")?;
    eprintln!("BIRD's view: {}", b.birdc("show bfd sessions")?);
    ensure!(ours["remote_multiplier"] == 3, "petreld: {ours}");

    let t = Instant::now();
    b.daemon().pause();
    let r = assert_bfd_teardown(&petrel, peer, t);
    b.daemon().resume();
    r?;
    petrel.wait_bfd(peer, "up")?;
    petrel.wait_established(peer)?;
    Ok(())
}

#[test]
fn bird_bfd_ipv4_hang_ends_the_bgp_session() -> Result<()> {
    if !ready(&["bird", "birdc"]) {
        return Ok(());
    }
    bird_hang(false)
}

#[test]
fn bird_bfd_ipv6_hang_ends_the_bgp_session() -> Result<()> {
    if !ready(&["bird", "birdc"]) {
        return Ok(());
    }
    bird_hang(true)
}

/// The key both ends are given in the authentication tests.
const BFD_KEY: &str = "petrel-bfd-key";

/// petreld with one BFD-protected IPv4 peer, authenticated with `kind`
/// and key id 5, the key read from a file in the lab.
fn petrel_auth(lab: &Lab, ns: &Netns, kind: &str) -> Result<Petreld> {
    let key = lab.dir().join("bfd.key");
    std::fs::write(&key, format!("{BFD_KEY}\n"))?;
    let mut c = petreld::Config::new(PETREL4, PETREL_AS);
    c.listen(PETREL4);
    c.peer(
        petreld::Peer::new(PEER4, PEER_AS)
            .local_address(PETREL4)
            .families(&["ipv4-unicast"])
            .bfd(300, 300, 3)
            .bfd_auth(kind, 5, &key),
    );
    Petreld::start(lab, ns, &c)
}

/// BIRD with BFD on its BGP session to petreld, authenticated as `auth`
/// (BIRD's words) with `key` as key id 5.
fn bird_auth_conf(auth: &str, key: &str) -> String {
    let mut c = bird::Config::new(PEER4, PEER_AS);
    let mut b = bird::Peer::new("petrel", PETREL4, PETREL_AS).families(true, false);
    b.extra = "  bfd on;\n".into();
    c.peer(b);
    c.extra = format!(
        "protocol bfd {{\n  interface \"*\" {{ interval 300 ms; multiplier 3; authentication {auth}; password \"{key}\" {{ id 5; }}; }};\n}}\n"
    );
    c.render()
}

/// RFC 5880 §6.7.4: meticulous keyed SHA1 with the same key and key id
/// on both ends comes Up; `show bfd` names the type, never the key.
#[test]
fn bird_bfd_meticulous_keyed_sha1_with_the_same_key_comes_up() -> Result<()> {
    if !ready(&["bird", "birdc"]) {
        return Ok(());
    }
    let (lab, p, q, _) = lab("bfd-auth-ok")?;
    let petrel = petrel_auth(&lab, &p, "meticulous-keyed-sha1")?;
    let b = bird::Bird::start(&lab, &q, &bird_auth_conf("meticulous keyed sha1", BFD_KEY))?;
    b.wait_established("petrel")?;
    petrel.wait_established(PEER4)?;
    let ours = wait_bfd_fast(&petrel, PEER4)?;
    b.wait_bfd(PETREL4, "up")?;
    eprintln!("BIRD's view: {}", b.birdc("show bfd sessions")?);
    ensure!(ours["auth"] == "meticulous-keyed-sha1", "petreld: {ours}");
    ensure!(ours["auth_failures"] == 0, "petreld: {ours}");
    let table = petrel.ctl(&["show", "bfd"])?;
    eprintln!("{table}");
    ensure!(
        table.contains("meticulous-keyed-sha1") && !table.contains(BFD_KEY),
        "show bfd: {table}"
    );
    // The authenticated session protects BGP as any other: BIRD hangs.
    let t = Instant::now();
    b.daemon().pause();
    let r = assert_bfd_teardown(&petrel, PEER4, t);
    b.daemon().resume();
    r
}

/// Keyed SHA1 with a key the peer does not share: the session never
/// comes Up on either end, and petreld counts and logs each refusal.
#[test]
fn bird_bfd_keyed_sha1_with_another_key_never_comes_up() -> Result<()> {
    if !ready(&["bird", "birdc"]) {
        return Ok(());
    }
    let (lab, p, q, _) = lab("bfd-auth-bad")?;
    let petrel = petrel_auth(&lab, &p, "keyed-sha1")?;
    let b = bird::Bird::start(&lab, &q, &bird_auth_conf("keyed sha1", "not-the-key"))?;
    // Refusals pile up while the peers send (BIRD at 1 s while not Up,
    // RFC 5880 §6.8.3): ten of them and neither end was ever Up.
    let s = wait_until(
        "petreld to refuse 10 of BIRD's BFD packets",
        &[petrel.daemon(), b.daemon()],
        || {
            let s = petrel.bfd_session(PEER4)?;
            ensure!(s["state"] != "Up", "petreld's BFD Up with a wrong key: {s}");
            Ok((s["auth_failures"].as_u64() >= Some(10)).then_some(s))
        },
    )?;
    eprintln!("petreld: {s}");
    ensure!(
        s["flaps"] == 0 && s["uptime_seconds"].is_null() && s["packets_received"] == 0,
        "petreld took a packet it should have refused: {s}"
    );
    let line = bird_bfd_line(&b, PETREL4)?.unwrap_or_default();
    ensure!(
        !line.contains(" Up "),
        "BIRD's BFD Up with a wrong key: {line}"
    );
    let log = petrel.log();
    ensure!(
        log.contains("BFD packet failed authentication") && !log.contains(BFD_KEY),
        "petreld's log: {log}"
    );
    let table = petrel.ctl(&["show", "bfd"])?;
    eprintln!("{table}");
    ensure!(table.contains("keyed-sha1 ("), "show bfd: {table}");
    Ok(())
}

/// The far side of the multi-hop lab.
const FAR4: &str = "10.99.2.2";
const FAR6: &str = "fd00:99:2::2";

/// `petrel ── router ── peer`, both families, each end's default route
/// through the router (which forwards: `Lab::netns` turns it on), so
/// packets between them cross one routed hop. Returns the router's
/// interface towards the peer: the far link.
fn routed_lab(tag: &str) -> Result<(Lab, Netns, Netns, Netns, String)> {
    let lab = Lab::new(tag)?;
    let (p, r, q) = (
        lab.netns("petrel")?,
        lab.netns("router")?,
        lab.netns("peer")?,
    );
    lab.link(
        &p,
        &[&format!("{PETREL4}/24"), &format!("{PETREL6}/64")],
        &r,
        &["10.99.1.254/24", "fd00:99:1::fe/64"],
    )?;
    let far = lab.link(
        &r,
        &["10.99.2.254/24", "fd00:99:2::fe/64"],
        &q,
        &[&format!("{FAR4}/24"), &format!("{FAR6}/64")],
    )?;
    p.ip(&["route", "add", "default", "via", "10.99.1.254"])?;
    p.ip(&["-6", "route", "add", "default", "via", "fd00:99:1::fe"])?;
    q.ip(&["route", "add", "default", "via", "10.99.2.254"])?;
    q.ip(&["-6", "route", "add", "default", "via", "fd00:99:2::fe"])?;
    Ok((lab, p, r, q, far.a))
}

/// petreld with one eBGP peer two hops away, BFD multi-hop, a hold time
/// of 90 s (so only BFD can end the session soon after a failure).
fn petrel_multihop(lab: &Lab, ns: &Netns, peer: &str) -> Result<Petreld> {
    let v6 = peer.contains(':');
    let (local, family) = if v6 {
        (PETREL6, "ipv6-unicast")
    } else {
        (PETREL4, "ipv4-unicast")
    };
    let mut c = petreld::Config::new(PETREL4, PETREL_AS);
    c.listen(PETREL4).listen(PETREL6);
    c.peer(
        petreld::Peer::new(peer, PEER_AS)
            .local_address(local)
            .families(&[family])
            .hold_time(90)
            .bfd(300, 300, 3)
            .bfd_multihop(),
    );
    Petreld::start(lab, ns, &c)
}

/// Both Up over a routed hop, petreld's session a multi-hop one (UDP
/// 4784); then the router's link to the peer goes down, and petreld ends
/// BGP for BFD's reason, not the hold timer's.
fn multihop_far_link_down(
    petrel: &Petreld,
    router: &Netns,
    far_link: &str,
    peer: &str,
    peer_up: impl Fn() -> Result<String>,
) -> Result<()> {
    petrel.wait_established(peer)?;
    let ours = wait_bfd_fast(petrel, peer)?;
    ensure!(ours["multihop"] == true, "petreld: {ours}");
    eprintln!("peer's view: {}", peer_up()?);
    eprintln!("{}", petrel.ctl(&["show", "bfd"])?);
    let t = Instant::now();
    router.ip(&["link", "set", far_link, "down"])?;
    assert_bfd_teardown(petrel, peer, t)
}

fn frr_multihop(v6: bool) -> Result<()> {
    let (peer, me) = if v6 { (FAR6, PETREL6) } else { (FAR4, PETREL4) };
    let (lab, p, r, q, far) = routed_lab(if v6 { "bfd-mh-frr6" } else { "bfd-mh-frr4" })?;
    let petrel = petrel_multihop(&lab, &p, peer)?;
    let mut c = frr::Config::new(FAR4, PEER_AS);
    let mut n = frr::Neighbor::new(me, PETREL_AS)
        .families(!v6, v6)
        .update_source(peer)
        .bfd();
    // eBGP two hops away (FRR's eBGP is one hop by default); bgpd then
    // asks bfdd for a multi-hop session.
    n.extra = format!(" neighbor {me} ebgp-multihop 2\n");
    c.neighbor(n);
    let frr = frr::Frr::start_with_bfdd(&lab, &q, &c.render(), "")?;
    frr.wait_established(me)?;
    multihop_far_link_down(&petrel, &r, &far, peer, || {
        frr.wait_bfd(me, "up")?;
        Ok(frr.bfd_peer(me)?.to_string())
    })
}

#[test]
fn frr_bfdd_ipv4_multihop_far_link_down_ends_the_bgp_session() -> Result<()> {
    if !ready(&["vtysh", "/usr/lib/frr/bfdd"]) {
        return Ok(());
    }
    frr_multihop(false)
}

#[test]
fn frr_bfdd_ipv6_multihop_far_link_down_ends_the_bgp_session() -> Result<()> {
    if !ready(&["vtysh", "/usr/lib/frr/bfdd"]) {
        return Ok(());
    }
    frr_multihop(true)
}

fn bird_multihop(v6: bool) -> Result<()> {
    let (peer, me) = if v6 { (FAR6, PETREL6) } else { (FAR4, PETREL4) };
    let (lab, p, r, q, far) = routed_lab(if v6 { "bfd-mh-bird6" } else { "bfd-mh-bird4" })?;
    let petrel = petrel_multihop(&lab, &p, peer)?;
    let mut c = bird::Config::new(FAR4, PEER_AS);
    let mut b = bird::Peer::new("petrel", me, PETREL_AS)
        .families(!v6, v6)
        .source(peer);
    // `multihop` makes the BFD session BIRD's BGP asks for a multi-hop one.
    b.extra = "  multihop 2;\n  bfd on;\n".into();
    c.peer(b);
    c.extra = "protocol bfd {\n  multihop { interval 300 ms; multiplier 3; };\n}\n".into();
    let bird = bird::Bird::start(&lab, &q, &c.render())?;
    bird.wait_established("petrel")?;
    multihop_far_link_down(&petrel, &r, &far, peer, || {
        bird.wait_bfd(me, "up")?;
        bird.birdc("show bfd sessions")
    })
}

#[test]
fn bird_bfd_ipv4_multihop_far_link_down_ends_the_bgp_session() -> Result<()> {
    if !ready(&["bird", "birdc"]) {
        return Ok(());
    }
    bird_multihop(false)
}

#[test]
fn bird_bfd_ipv6_multihop_far_link_down_ends_the_bgp_session() -> Result<()> {
    if !ready(&["bird", "birdc"]) {
        return Ok(());
    }
    bird_multihop(true)
}
