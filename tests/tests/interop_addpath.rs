//! petrel as a route reflector sending several paths per prefix (ADD-PATH,
//! RFC 7911) to FRR and BIRD clients. Two BIRD clients originate the same
//! prefix; petrel reflects both paths, each under its own Path Identifier,
//! to FRR (all paths) and to BIRD (the multipath set). FRR, with
//! `maximum-paths ibgp 2`, installs one route with two next hops in its
//! kernel: ECMP through a reflector, which without ADD-PATH shows its
//! clients one path only.
//!
//! ```text
//!              ┌ c1  BIRD 10.99.0.2 ┐ both originate 10.30.0.0/24
//!   rr: br0    ├ c2  BIRD 10.99.0.3 ┘
//!   10.99.0.1  ├ frr FRR  10.99.0.4   add-path all; receives, ECMP in its FIB
//!   (petreld)  └ brx BIRD 10.99.0.5   add-path ecmp (max_paths 2); add paths rx
//!  (one L2 segment, AS 4200000001 everywhere, cluster id 10.99.0.1)
//! ```

use anyhow::Result;
use petrel_tests::lab::cluster::attach;
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::topo::PETREL_AS;
use petrel_tests::lab::{bird, fib, frr, require_lab, wait_until, Lab, Netns, Route};

const RR: &str = "10.99.0.1";
const C1: &str = "10.99.0.2";
const C2: &str = "10.99.0.3";
const FRR: &str = "10.99.0.4";
const BIRD_RX: &str = "10.99.0.5";
const P: &str = "10.30.0.0/24";

/// A BIRD client of the reflector originating P.
fn originator(lab: &Lab, ns: &Netns, addr: &str) -> Result<bird::Bird> {
    let mut c = bird::Config::new(addr, PETREL_AS);
    c.originate(P, &["64512:30"], &[]).peer(
        bird::Peer::new(&bird::proto_name(RR), RR, PETREL_AS)
            .source(addr)
            .families(true, false)
            .next_hop_self(),
    );
    bird::Bird::start(lab, ns, &c.render())
}

/// The next hops of the paths in `routes` for P, sorted.
fn hops(routes: &[Route]) -> Vec<String> {
    let mut v: Vec<String> = routes
        .iter()
        .filter(|r| r.prefix == P)
        .map(|r| r.next_hop.clone())
        .collect();
    v.sort();
    v
}

/// The gateways of P's kernel route in `ns`, sorted.
fn kernel_hops(ns: &Netns) -> Result<Vec<String>> {
    let mut g: Vec<String> = fib::routes(ns)?
        .into_iter()
        .filter(|r| r.dst == P)
        .flat_map(|r| r.gateways)
        .collect();
    g.sort();
    Ok(g)
}

#[test]
fn reflector_sends_both_paths_and_frr_installs_ecmp() -> Result<()> {
    if !require_lab(&["bird", "birdc", "vtysh", "/usr/lib/frr/bgpd"])
        || !petrel_tests::have_bin("petreld")
        || !petrel_tests::have_bin("petrelctl")
    {
        return Ok(());
    }
    let lab = Lab::new("addpath")?;
    let rr = lab.netns("rr")?;
    rr.ip(&["link", "add", "br0", "type", "bridge"])?;
    rr.add_addr("br0", &format!("{RR}/24"))?;
    rr.ip(&["link", "set", "br0", "up"])?;
    let (c1, c2, f, b) = (
        lab.netns("c1")?,
        lab.netns("c2")?,
        lab.netns("frr")?,
        lab.netns("brx")?,
    );
    for (name, ns, addr) in [
        ("c1", &c1, C1),
        ("c2", &c2, C2),
        ("frr", &f, FRR),
        ("brx", &b, BIRD_RX),
    ] {
        attach(&rr, name, ns, addr)?;
    }

    let mut pc = petreld::Config::new(RR, PETREL_AS);
    pc.cluster_id = Some(RR.into());
    pc.max_paths = Some(2);
    pc.listen(RR);
    for a in [C1, C2] {
        pc.peer(
            petreld::Peer::new(a, PETREL_AS)
                .families(&["ipv4-unicast"])
                .rr_client(),
        );
    }
    pc.peer(
        petreld::Peer::new(FRR, PETREL_AS)
            .families(&["ipv4-unicast"])
            .rr_client()
            .add_path(Some("all"), false),
    )
    .peer(
        petreld::Peer::new(BIRD_RX, PETREL_AS)
            .families(&["ipv4-unicast"])
            .rr_client()
            .add_path(Some("ecmp"), false),
    );
    let petrel = Petreld::start(&lab, &rr, &pc)?;

    let _b1 = originator(&lab, &c1, C1)?;
    let mut b2 = originator(&lab, &c2, C2)?;

    // FRR advertises ADD-PATH receive on its own; it installs up to two
    // equal iBGP paths.
    let mut fc = frr::Config::new(FRR, PETREL_AS);
    fc.maximum_paths_ibgp = Some(2);
    fc.neighbor(
        frr::Neighbor::new(RR, PETREL_AS)
            .update_source(FRR)
            .families(true, false),
    );
    let frr = frr::Frr::start(&lab, &f, &fc.render())?;

    let mut bc = bird::Config::new(BIRD_RX, PETREL_AS);
    bc.peer(
        bird::Peer::new(&bird::proto_name(RR), RR, PETREL_AS)
            .source(BIRD_RX)
            .families(true, false)
            .add_paths("rx")
            .export("none"),
    );
    let brx = bird::Bird::start(&lab, &b, &bc.render())?;

    for a in [C1, C2, FRR, BIRD_RX] {
        petrel.wait_established(a)?;
    }
    let both = vec![C1.to_string(), C2.to_string()];

    // FRR: two paths for P from the reflector, each with its originator.
    let got = frr.wait_routes_from(RR, "both paths of P at FRR", &mut |r| hops(r) == both)?;
    let mut originators: Vec<_> = got
        .iter()
        .filter(|r| r.prefix == P)
        .filter_map(|r| r.originator_id.clone())
        .collect();
    originators.sort();
    assert_eq!(originators, both, "{got:?}");
    assert!(got.iter().all(|r| r.cluster_list == [RR]), "{got:?}");
    // ... and one kernel route with both next hops.
    wait_until("FRR's ECMP route in its kernel", &[frr.bgpd()], || {
        Ok((kernel_hops(&f)? == both).then_some(()))
    })?;

    // BIRD: both paths too (the multipath set of petrel's two equal paths).
    let proto = bird::proto_name(RR);
    brx.wait_routes_from(&proto, "both paths of P at BIRD", &mut |r| hops(r) == both)?;

    // One originator goes: its path is withdrawn by its identifier; the
    // other stays, at both receivers and in FRR's kernel.
    b2.stop()?;
    let one = vec![C1.to_string()];
    frr.wait_routes_from(RR, "one path of P left at FRR", &mut |r| hops(r) == one)?;
    wait_until(
        "FRR's kernel route down to one next hop",
        &[frr.bgpd()],
        || Ok((kernel_hops(&f)? == one).then_some(())),
    )?;
    brx.wait_routes_from(&proto, "one path of P left at BIRD", &mut |r| {
        hops(r) == one
    })?;

    // It comes back: two paths and ECMP again.
    b2.restart(&lab)?;
    frr.wait_routes_from(RR, "both paths of P at FRR again", &mut |r| hops(r) == both)?;
    wait_until("FRR's ECMP route again", &[frr.bgpd()], || {
        Ok((kernel_hops(&f)? == both).then_some(()))
    })?;
    brx.wait_routes_from(&proto, "both paths at BIRD again", &mut |r| hops(r) == both)?;

    // What FRR says it negotiated, for the record.
    let caps = frr.neighbor(RR)?["neighborCapabilities"]["addPath"].clone();
    eprintln!("FRR's ADD-PATH capability view: {caps}");
    Ok(())
}
