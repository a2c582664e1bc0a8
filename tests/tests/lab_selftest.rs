//! The lab harness proves its drivers against real daemons, without petrel:
//! BIRD ↔ FRR, GoBGP ↔ BIRD, ExaBGP → BIRD, a raw UPDATE → BIRD, and the
//! kernel FIB. Needs root and the Debian packages of .ci/setup.

use anyhow::Result;
use petrel_tests::lab::topo::View;
use petrel_tests::lab::{bird, exabgp, fib, frr, gobgp, raw, require_lab, Lab, Route};

const BIRD_AS: u32 = 4200000001;
const FRR_AS: u32 = 4200000002;
const GOBGP_AS: u32 = 4200000003;
const EXA_AS: u32 = 64999;

fn route<'a>(routes: &'a [Route], prefix: &str) -> &'a Route {
    Route::find(routes, prefix).unwrap_or_else(|| panic!("no {prefix} in {routes:#?}"))
}

#[test]
fn bird_frr_ebgp_ipv4_ipv6_both_ways_and_withdrawal() -> Result<()> {
    if !require_lab(&["bird", "birdc", "vtysh", "/usr/lib/frr/bgpd"]) {
        return Ok(());
    }
    let lab = Lab::new("bird-frr")?;
    let (a, b) = (lab.netns("bird")?, lab.netns("frr")?);
    lab.link(
        &a,
        &["10.99.1.1/24", "fd00:99:1::1/64"],
        &b,
        &["10.99.1.2/24", "fd00:99:1::2/64"],
    )?;

    let mut bc = bird::Config::new("10.99.1.1", BIRD_AS);
    bc.kernel = true;
    bc.originate("10.201.0.0/24", &["64512:100"], &["4200000001:1:2"])
        .originate("10.201.1.0/24", &[], &[])
        .originate("fd00:201::/48", &["64512:101"], &[])
        .peer(
            bird::Peer::new("frr4", "10.99.1.2", FRR_AS)
                .source("10.99.1.1")
                .families(true, false),
        )
        .peer(
            bird::Peer::new("frr6", "fd00:99:1::2", FRR_AS)
                .source("fd00:99:1::1")
                .families(false, true),
        );
    let mut fc = frr::Config::new("10.99.1.2", FRR_AS);
    fc.originate("10.202.0.0/24", &["64512:200"], &["4200000002:3:4"])
        .originate("fd00:202::/48", &[], &["4200000002:5:6"])
        .neighbor(frr::Neighbor::new("10.99.1.1", BIRD_AS).families(true, false))
        .neighbor(frr::Neighbor::new("fd00:99:1::1", BIRD_AS).families(false, true));
    let bird = bird::Bird::start(&lab, &a, &bc.render())?;
    let frr = frr::Frr::start(&lab, &b, &fc.render())?;
    bird.wait_established("frr4")?;
    bird.wait_established("frr6")?;
    frr.wait_established("10.99.1.1")?;

    // FRR -> BIRD
    let r4 = bird.wait_routes_from("frr4", "FRR's IPv4 route at BIRD", &mut |r| !r.is_empty())?;
    let r = route(&r4, "10.202.0.0/24");
    assert_eq!(r.as_path, FRR_AS.to_string());
    assert_eq!(r.next_hop, "10.99.1.2");
    assert_eq!(r.origin, "IGP");
    assert_eq!(r.communities, ["64512:200"]);
    assert_eq!(r.large_communities, ["4200000002:3:4"]);
    let r6 = bird.wait_routes_from("frr6", "FRR's IPv6 route at BIRD", &mut |r| !r.is_empty())?;
    let r = route(&r6, "fd00:202::/48");
    assert_eq!(r.next_hop, "fd00:99:1::2");
    assert_eq!(r.large_communities, ["4200000002:5:6"]);

    // BIRD -> FRR
    let got = frr.wait_routes_from("10.99.1.1", "BIRD's IPv4 routes at FRR", &mut |r| {
        r.len() == 2
    })?;
    let r = route(&got, "10.201.0.0/24");
    assert_eq!(r.as_path, BIRD_AS.to_string());
    assert_eq!(r.next_hop, "10.99.1.1");
    assert_eq!(r.communities, ["64512:100"]);
    assert_eq!(r.large_communities, ["4200000001:1:2"]);
    assert!(r.best && !r.stale);
    let got = frr.wait_routes_from("fd00:99:1::1", "BIRD's IPv6 route at FRR", &mut |r| {
        !r.is_empty()
    })?;
    let r = route(&got, "fd00:201::/48");
    assert_eq!(r.next_hop, "fd00:99:1::1");
    assert_eq!(r.communities, ["64512:101"]);

    // The kernel FIB of BIRD's namespace has FRR's routes.
    let k = petrel_tests::lab::wait_until("FRR's routes in BIRD's FIB", &[bird.daemon()], || {
        let f = fib::bgp_routes(&a)?;
        Ok((f.iter().any(|r| r.dst == "10.202.0.0/24")
            && f.iter().any(|r| r.dst == "fd00:202::/48"))
        .then_some(f))
    })?;
    let f = k.iter().find(|r| r.dst == "10.202.0.0/24").unwrap();
    assert_eq!(
        (f.gateways.as_slice(), f.protocol.as_str()),
        (&["10.99.1.2".to_string()][..], "bird")
    );

    // Withdrawals both ways.
    frr.configure(&[
        &format!("router bgp {FRR_AS}"),
        "address-family ipv4 unicast",
        "no network 10.202.0.0/24 route-map ORIG0",
    ])?;
    bird.wait_routes_from("frr4", "withdrawal at BIRD", &mut |r| {
        Route::find(r, "10.202.0.0/24").is_none()
    })?;
    bc.originate.retain(|o| o.prefix != "10.201.1.0/24");
    bird.reconfigure(&bc.render())?;
    frr.wait_routes_from("10.99.1.1", "withdrawal at FRR", &mut |r| {
        Route::find(r, "10.201.1.0/24").is_none() && Route::find(r, "10.201.0.0/24").is_some()
    })?;
    assert!(bird.established("frr4")?);
    Ok(())
}

#[test]
fn gobgp_bird_ebgp_both_ways() -> Result<()> {
    if !require_lab(&["bird", "birdc", "gobgpd", "gobgp"]) {
        return Ok(());
    }
    let lab = Lab::new("gobgp-bird")?;
    let (a, g) = (lab.netns("bird")?, lab.netns("gobgp")?);
    lab.link(
        &a,
        &["10.99.2.1/24", "fd00:99:2::1/64"],
        &g,
        &["10.99.2.3/24", "fd00:99:2::3/64"],
    )?;
    let mut bc = bird::Config::new("10.99.2.1", BIRD_AS);
    bc.originate("10.201.0.0/24", &["64512:100"], &["4200000001:1:2"])
        .peer(
            bird::Peer::new("gobgp", "10.99.2.3", GOBGP_AS)
                .source("10.99.2.1")
                .families(true, false),
        );
    let mut gc = gobgp::Config::new("10.99.2.3", GOBGP_AS);
    gc.neighbor(gobgp::Neighbor::new("10.99.2.1", BIRD_AS).families(true, false))
        .originate("10.203.0.0/24", &["64512:300"], &["4200000003:5:6"]);
    let bird = bird::Bird::start(&lab, &a, &bc.render())?;
    let gobgp = gobgp::Gobgp::start(&lab, &g, &gc)?;
    gobgp.wait_established("10.99.2.1")?;
    bird.wait_established("gobgp")?;

    let got = bird.wait_routes_from("gobgp", "GoBGP's route at BIRD", &mut |r| !r.is_empty())?;
    let r = route(&got, "10.203.0.0/24");
    assert_eq!(
        (r.as_path.as_str(), r.next_hop.as_str()),
        ("4200000003", "10.99.2.3")
    );
    assert_eq!(r.communities, ["64512:300"]);
    assert_eq!(r.large_communities, ["4200000003:5:6"]);
    assert_eq!(r.origin, "IGP");

    let got =
        gobgp.wait_routes_from("10.99.2.1", "BIRD's route at GoBGP", &mut |r| !r.is_empty())?;
    let r = route(&got, "10.201.0.0/24");
    assert_eq!(
        (r.as_path.as_str(), r.next_hop.as_str()),
        ("4200000001", "10.99.2.1")
    );
    assert_eq!(r.communities, ["64512:100"]);
    assert_eq!(r.large_communities, ["4200000001:1:2"]);
    assert!(r.best);

    gobgp.del_route("10.203.0.0/24")?;
    bird.wait_routes_from("gobgp", "withdrawal at BIRD", &mut |r| r.is_empty())?;
    Ok(())
}

#[test]
fn exabgp_announces_to_bird_with_raw_attribute_and_as_trans() -> Result<()> {
    if !require_lab(&["bird", "birdc", "exabgp"]) {
        return Ok(());
    }
    let lab = Lab::new("exa-bird")?;
    let (a, e) = (lab.netns("bird")?, lab.netns("exa")?);
    lab.link(&a, &["10.99.3.1/24"], &e, &["10.99.3.4/24"])?;
    let mut bc = bird::Config::new("10.99.3.1", BIRD_AS);
    bc.peer(
        bird::Peer::new("exa", "10.99.3.4", EXA_AS)
            .source("10.99.3.1")
            .passive()
            .families(true, false),
    );
    let bird = bird::Bird::start(&lab, &a, &bc.render())?;
    // A 2-octet speaker: AS_TRANS in AS_PATH, the real path in AS4_PATH.
    let exa = exabgp::Exabgp::start(
        &lab,
        &e,
        &[
            exabgp::Neighbor::new("10.99.3.1", BIRD_AS, "10.99.3.4", EXA_AS)
                .families(true, false)
                .asn2(),
        ],
    )?;
    bird.wait_established("exa")?;
    exa.announce(
        "10.204.0.0/24",
        "10.99.3.4",
        "as-path [ 64999 4200000009 ] community [ 64999:1 ] attribute [ 0xf0 0xc0 0x0102030405 ]",
    )?;
    exa.announce(
        "10.204.1.0/24",
        "10.99.3.4",
        "as-path [ 64999 ( 64998 64997 ) ] med 5",
    )?;
    let got = bird.wait_routes_from("exa", "ExaBGP's routes at BIRD", &mut |r| r.len() == 2)?;
    let r = route(&got, "10.204.0.0/24");
    assert_eq!(r.as_path, "64999 4200000009", "AS4_PATH merged: {r:?}");
    assert_eq!(r.communities, ["64999:1"]);
    assert_eq!(r.unknown.len(), 1, "{r:?}");
    assert_eq!(
        (r.unknown[0].0, r.unknown[0].2.as_str()),
        (0xf0, "0102030405")
    );
    let r = route(&got, "10.204.1.0/24");
    assert_eq!(r.asns(), [64999, 64998, 64997]);
    assert!(r.as_path.contains('{'), "AS_SET shown in braces: {r:?}");
    assert_eq!(r.med, Some(5));
    exa.withdraw("10.204.1.0/24", "10.99.3.4")?;
    bird.wait_routes_from("exa", "withdrawal at BIRD", &mut |r| r.len() == 1)?;
    Ok(())
}

#[test]
fn raw_update_to_bird() -> Result<()> {
    if !require_lab(&["bird", "birdc"]) {
        return Ok(());
    }
    let lab = Lab::new("raw-bird")?;
    let (a, r) = (lab.netns("bird")?, lab.netns("raw")?);
    lab.link(&a, &["10.99.4.1/24"], &r, &["10.99.4.5/24"])?;
    let mut bc = bird::Config::new("10.99.4.1", BIRD_AS);
    bc.peer(
        bird::Peer::new("raw", "10.99.4.5", 4200000005)
            .passive()
            .families(true, false),
    );
    let bird = bird::Bird::start(&lab, &a, &bc.render())?;
    let mut s = raw::RawSpeaker::connect(
        &r,
        "10.99.4.1:179",
        &raw::Open::new(4200000005, [10, 99, 4, 5]),
    )?;
    bird.wait_established("raw")?;
    let attrs = raw::basic_attrs(&[4200000005, 4200000006], [10, 99, 4, 5]);
    s.send_update(&raw::update(
        &[],
        &attrs,
        &["10.205.0.0/24", "10.205.1.0/25"],
    )?)?;
    let got = bird.wait_routes_from("raw", "raw routes at BIRD", &mut |r| r.len() == 2)?;
    assert_eq!(
        route(&got, "10.205.1.0/25").as_path,
        "4200000005 4200000006"
    );
    // A malformed ORIGIN (value 7): RFC 7606 treat-as-withdraw, session stays.
    let mut bad = raw::attr(0x40, 1, &[7]);
    bad.extend(&attrs[4..]);
    s.send_update(&raw::update(&[], &bad, &["10.205.0.0/24"])?)?;
    bird.wait_routes_from("raw", "treat-as-withdraw at BIRD", &mut |r| r.len() == 1)?;
    s.still_up(std::time::Duration::from_millis(200))?;
    assert!(bird.established("raw")?);
    Ok(())
}

#[test]
fn lab_removes_its_namespaces_and_processes() -> Result<()> {
    if !require_lab(&["sleep"]) {
        return Ok(());
    }
    let lab = Lab::new("cleanup")?;
    let ns = lab.netns("x")?;
    let d = petrel_tests::lab::Daemon::spawn(
        &lab,
        &ns,
        "sleep",
        &lab.dir().join("sleep.log"),
        "sleep",
        &["600"],
        &[],
    )?;
    let pid = d.pid();
    std::mem::forget(d); // as if the driver leaked it: the lab must still kill it
    let name = ns.name().to_string();
    assert!(std::path::Path::new(&format!("/run/netns/{name}")).exists());
    drop(lab);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "process {pid} survived: {stat}"
    );
    Ok(())
}

/// The view the ExaBGP suite relies on, with BIRD in petrel's place:
/// ExaBGP → BIRD → GoBGP; an unknown optional transitive attribute arrives
/// at GoBGP with the Partial bit, a non-transitive one does not, AS_SET
/// and AS4_PATH survive.
#[test]
fn exabgp_through_bird_to_gobgp_third_peer_view() -> Result<()> {
    if !require_lab(&["bird", "birdc", "exabgp", "gobgpd", "gobgp"]) {
        return Ok(());
    }
    let lab = Lab::new("exa-bird-gobgp")?;
    let (e, b, g) = (lab.netns("exa")?, lab.netns("bird")?, lab.netns("gobgp")?);
    lab.link(&e, &["10.99.4.4/24"], &b, &["10.99.4.1/24"])?;
    lab.link(&b, &["10.99.3.1/24"], &g, &["10.99.3.3/24"])?;
    let mut bc = bird::Config::new("10.99.4.1", BIRD_AS);
    bc.peer(
        bird::Peer::new("exa", "10.99.4.4", EXA_AS)
            .source("10.99.4.1")
            .passive()
            .families(true, false),
    )
    .peer(
        bird::Peer::new("gobgp", "10.99.3.3", GOBGP_AS)
            .source("10.99.3.1")
            .families(true, false)
            .export("all"),
    );
    let bird = bird::Bird::start(&lab, &b, &bc.render())?;
    let mut gc = gobgp::Config::new("10.99.3.3", GOBGP_AS);
    gc.neighbor(gobgp::Neighbor::new("10.99.3.1", BIRD_AS).families(true, false));
    let gobgp = gobgp::Gobgp::start(&lab, &g, &gc)?;
    let exa = exabgp::Exabgp::start(
        &lab,
        &e,
        &[
            exabgp::Neighbor::new("10.99.4.1", BIRD_AS, "10.99.4.4", EXA_AS)
                .families(true, false)
                .asn2(),
        ],
    )?;
    bird.wait_established("exa")?;
    exa.announce(
        "10.30.3.0/24",
        "10.99.4.4",
        "as-path [ 64999 4200000009 ( 4200000008 4200000007 ) ] attribute [ 0xf0 0xc0 0x0102030405 ] attribute [ 0xf1 0x80 0x01 ]",
    )?;
    let got = gobgp.wait_routes_from("10.99.3.1", "the route at GoBGP", &mut |r| {
        Route::find(r, "10.30.3.0/24").is_some()
    })?;
    let r = route(&got, "10.30.3.0/24");
    assert_eq!(
        r.as_path_canonical(),
        "4200000001 64999 4200000009 {4200000007 4200000008}",
        "{r:?}"
    );
    let u = r
        .unknown
        .iter()
        .find(|u| u.0 == 0xf0)
        .expect("0xf0 passed on");
    assert_eq!(u.1 & 0xe0, 0xe0, "optional, transitive, Partial: {u:?}");
    assert!(u.2 == "0102030405" || u.2 == "AQIDBAU=", "{u:?}");
    assert!(r.unknown.iter().all(|u| u.0 != 0xf1), "{r:?}");
    Ok(())
}

/// An IPv6 session between link-local addresses (BIRD ↔ FRR), the kind a
/// node daemon runs towards its top-of-rack switch.
#[test]
fn bird_frr_link_local_ipv6_session() -> Result<()> {
    if !require_lab(&["bird", "birdc", "vtysh", "/usr/lib/frr/bgpd"]) {
        return Ok(());
    }
    let lab = Lab::new("link-local")?;
    let (a, b) = (lab.netns("bird")?, lab.netns("frr")?);
    // The kernel's own link-local addresses, one per interface.
    let link = lab.link(&a, &[], &b, &[])?;
    let (lla, llb) = (lab.link_local(&a, &link.a)?, lab.link_local(&b, &link.b)?);
    let mut bc = bird::Config::new("10.99.5.1", BIRD_AS);
    bc.originate("fd00:201::/48", &[], &[]).peer(
        bird::Peer::new("frr", &llb, FRR_AS)
            .interface(&link.a)
            .families(false, true),
    );
    let mut fc = frr::Config::new("10.99.5.2", FRR_AS);
    fc.originate("fd00:202::/48", &[], &[]).neighbor(
        frr::Neighbor::new(&lla, BIRD_AS)
            .interface(&link.b)
            .families(false, true),
    );
    let bird = bird::Bird::start(&lab, &a, &bc.render())?;
    let frr = frr::Frr::start(&lab, &b, &fc.render())?;
    bird.wait_established("frr")?;
    let got =
        bird.wait_routes_from("frr", "FRR's route over link-local", &mut |r| !r.is_empty())?;
    assert!(route(&got, "fd00:202::/48")
        .next_hops
        .iter()
        .any(|n| n.starts_with("fe80:")));
    let got = frr.wait_routes_from(&lla, "BIRD's route over link-local", &mut |r| !r.is_empty())?;
    assert!(route(&got, "fd00:201::/48")
        .next_hops
        .iter()
        .any(|n| n.starts_with("fe80:")));
    Ok(())
}

/// What a crashed run leaves (a namespace named after a dead process, with
/// a process in it) is swept away.
#[test]
fn sweep_removes_leftovers_of_dead_runs() -> Result<()> {
    if !require_lab(&["sleep"]) {
        return Ok(());
    }
    // Lab::new runs this process's own sweep first, so it cannot race ours.
    let _lab = Lab::new("sweep")?;
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    let dead = (2..pid_max)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid");
    let name = format!("ptl-{dead}-0-crashed");
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).status();
    ip(&["netns", "add", &name])?;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "600"])
        .stdin(std::process::Stdio::null())
        .spawn()?;
    petrel_tests::lab::wait_until("the leftover process in its namespace", &[], || {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &name])
            .output()?;
        Ok((!out.stdout.is_empty()).then_some(()))
    })?;
    petrel_tests::lab::sweep_leftovers()?;
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    let status = child.wait()?;
    assert!(
        !status.success(),
        "the leftover process was killed: {status}"
    );
    Ok(())
}

/// ExaBGP with hold time 0 (no keepalives): BIRD accepts it, routes flow.
#[test]
fn exabgp_hold_time_zero_to_bird() -> Result<()> {
    if !require_lab(&["bird", "birdc", "exabgp"]) {
        return Ok(());
    }
    let lab = Lab::new("exa-hold0")?;
    let (a, e) = (lab.netns("bird")?, lab.netns("exa")?);
    lab.link(&a, &["10.99.6.1/24"], &e, &["10.99.6.4/24"])?;
    let mut bc = bird::Config::new("10.99.6.1", BIRD_AS);
    bc.peer(
        bird::Peer::new("exa", "10.99.6.4", EXA_AS)
            .passive()
            .families(true, false),
    );
    let bird = bird::Bird::start(&lab, &a, &bc.render())?;
    let exa = exabgp::Exabgp::start(
        &lab,
        &e,
        &[
            exabgp::Neighbor::new("10.99.6.1", BIRD_AS, "10.99.6.4", EXA_AS)
                .families(true, false)
                .hold_time(0),
        ],
    )?;
    bird.wait_established("exa")?;
    exa.announce("10.30.8.0/24", "10.99.6.4", "as-path [ 64999 ]")?;
    bird.wait_routes_from("exa", "the route", &mut |r| r.len() == 1)?;
    let detail = bird.birdc("show protocols all exa")?;
    eprintln!("{detail}");
    assert!(
        detail.contains("Hold timer") || detail.contains("hold"),
        "{detail}"
    );
    assert!(bird.established("exa")?);
    Ok(())
}
