//! The route-reflection scenario of `interop_rr.rs` with GoBGP in petrel's
//! place: proves the clients' side (BIRD resolving a reflected next hop,
//! ORIGINATOR_ID and CLUSTER_LIST as BIRD and FRR report them).

use anyhow::Result;
use petrel_tests::lab::topo::View;
use petrel_tests::lab::{bird, frr, gobgp, require_lab, Lab, Route};

const AS: u32 = 4200000001;

#[test]
fn gobgp_reflects_between_bird_and_frr_clients() -> Result<()> {
    if !require_lab(&[
        "bird",
        "birdc",
        "vtysh",
        "/usr/lib/frr/bgpd",
        "gobgpd",
        "gobgp",
    ]) {
        return Ok(());
    }
    let lab = Lab::new("rr-gobgp")?;
    let (rr, b, f) = (lab.netns("rr")?, lab.netns("bird")?, lab.netns("frr")?);
    lab.link(&rr, &["10.99.1.1/24"], &b, &["10.99.1.2/24"])?;
    lab.link(&rr, &["10.99.2.1/24"], &f, &["10.99.2.2/24"])?;
    f.ip(&["route", "add", "10.99.1.0/24", "via", "10.99.2.1"])?;

    let mut gc = gobgp::Config::new("10.99.0.1", AS);
    gc.neighbor(
        gobgp::Neighbor::new("10.99.1.2", AS)
            .families(true, false)
            .rr_client(),
    )
    .neighbor(
        gobgp::Neighbor::new("10.99.2.2", AS)
            .families(true, false)
            .rr_client(),
    );
    let gobgp = gobgp::Gobgp::start(&lab, &rr, &gc)?;

    let mut bc = bird::Config::new("10.99.1.2", AS);
    bc.originate("10.21.0.0/24", &["64512:21"], &[]).peer(
        bird::Peer::new("reflector", "10.99.1.1", AS)
            .source("10.99.1.2")
            .families(true, false)
            .next_hop_self(),
    );
    bc.extra = "protocol static igp4 { ipv4; route 10.99.2.0/24 via 10.99.1.1; }\n".into();
    let bird = bird::Bird::start(&lab, &b, &bc.render())?;
    let mut fc = frr::Config::new("10.99.2.2", AS);
    fc.originate("10.22.0.0/24", &["64512:22"], &[]).neighbor(
        frr::Neighbor::new("10.99.2.1", AS)
            .update_source("10.99.2.2")
            .families(true, false)
            .next_hop_self(),
    );
    let frr = frr::Frr::start(&lab, &f, &fc.render())?;
    gobgp.wait_established("10.99.1.2")?;
    gobgp.wait_established("10.99.2.2")?;

    let got = bird.wait_routes_from("reflector", "FRR's route reflected to BIRD", &mut |r| {
        Route::find(r, "10.22.0.0/24").is_some()
    })?;
    let r = Route::find(&got, "10.22.0.0/24").unwrap();
    assert_eq!(r.originator_id.as_deref(), Some("10.99.2.2"), "{r:?}");
    assert_eq!(r.cluster_list, ["10.99.0.1"], "{r:?}");
    assert_eq!((r.next_hop.as_str(), r.as_path.as_str()), ("10.99.2.2", ""));
    assert_eq!(r.communities, ["64512:22"]);

    let got = frr.wait_routes_from("10.99.2.1", "BIRD's route reflected to FRR", &mut |r| {
        Route::find(r, "10.21.0.0/24").is_some()
    })?;
    let r = Route::find(&got, "10.21.0.0/24").unwrap();
    assert_eq!(r.originator_id.as_deref(), Some("10.99.1.2"), "{r:?}");
    assert_eq!(r.cluster_list, ["10.99.0.1"], "{r:?}");
    assert_eq!(r.next_hop, "10.99.1.2");
    assert_eq!(r.communities, ["64512:21"]);
    Ok(())
}
