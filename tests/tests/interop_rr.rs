//! petrel as a route reflector (RFC 4456) for two iBGP clients, BIRD and
//! FRR: each learns the other's route with ORIGINATOR_ID set to the other
//! client's router id and CLUSTER_LIST holding petrel's cluster id.
//!
//! ```text
//!  bird 10.99.1.2 ── 10.99.1.1 petrel 10.99.2.1 ── 10.99.2.2 frr
//!  (AS 4200000001 everywhere; cluster id 10.99.0.1)
//! ```

use anyhow::Result;
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::topo::PETREL_AS;
use petrel_tests::lab::{bird, frr, require_lab, Lab, Route};

const CLUSTER_ID: &str = "10.99.0.1";

#[test]
fn petrel_reflects_between_bird_and_frr_clients() -> Result<()> {
    if !require_lab(&["bird", "birdc", "vtysh", "/usr/lib/frr/bgpd"])
        || !petrel_tests::have_bin("petreld")
        || !petrel_tests::have_bin("petrelctl")
    {
        return Ok(());
    }
    let lab = Lab::new("rr")?;
    let (rr, b, f) = (lab.netns("rr")?, lab.netns("bird")?, lab.netns("frr")?);
    lab.link(&rr, &["10.99.1.1/24"], &b, &["10.99.1.2/24"])?;
    lab.link(&rr, &["10.99.2.1/24"], &f, &["10.99.2.2/24"])?;
    // Each client reaches the other's next hop through petrel's namespace.
    f.ip(&["route", "add", "10.99.1.0/24", "via", "10.99.2.1"])?;

    let mut pc = petreld::Config::new("10.99.0.1", PETREL_AS);
    pc.cluster_id = Some(CLUSTER_ID.into());
    pc.listen("10.99.1.1")
        .listen("10.99.2.1")
        .peer(
            petreld::Peer::new("10.99.1.2", PETREL_AS)
                .local_address("10.99.1.1")
                .families(&["ipv4-unicast"])
                .rr_client(),
        )
        .peer(
            petreld::Peer::new("10.99.2.2", PETREL_AS)
                .local_address("10.99.2.1")
                .families(&["ipv4-unicast"])
                .rr_client(),
        );
    let petrel = Petreld::start(&lab, &rr, &pc)?;

    let mut bc = bird::Config::new("10.99.1.2", PETREL_AS);
    bc.originate("10.21.0.0/24", &["64512:21"], &[]).peer(
        bird::Peer::new(&bird::proto_name("10.99.1.1"), "10.99.1.1", PETREL_AS)
            .source("10.99.1.2")
            .families(true, false)
            .next_hop_self(),
    );
    bc.extra = "protocol static igp4 { ipv4; route 10.99.2.0/24 via 10.99.1.1; }\n".into();
    let bird = bird::Bird::start(&lab, &b, &bc.render())?;

    let mut fc = frr::Config::new("10.99.2.2", PETREL_AS);
    fc.originate("10.22.0.0/24", &["64512:22"], &[]).neighbor(
        frr::Neighbor::new("10.99.2.1", PETREL_AS)
            .update_source("10.99.2.2")
            .families(true, false)
            .next_hop_self(),
    );
    let frr = frr::Frr::start(&lab, &f, &fc.render())?;

    petrel.wait_established("10.99.1.2")?;
    petrel.wait_established("10.99.2.2")?;

    let proto = bird::proto_name("10.99.1.1");
    let got = bird.wait_routes_from(&proto, "FRR's route reflected to BIRD", &mut |r| {
        Route::find(r, "10.22.0.0/24").is_some()
    })?;
    let r = Route::find(&got, "10.22.0.0/24").unwrap();
    assert_eq!(r.originator_id.as_deref(), Some("10.99.2.2"), "{r:?}");
    assert_eq!(r.cluster_list, [CLUSTER_ID], "{r:?}");
    assert_eq!(
        r.next_hop, "10.99.2.2",
        "a reflector keeps the next hop: {r:?}"
    );
    assert_eq!(r.communities, ["64512:22"]);
    assert_eq!(r.as_path, "");

    let got = frr.wait_routes_from("10.99.2.1", "BIRD's route reflected to FRR", &mut |r| {
        Route::find(r, "10.21.0.0/24").is_some()
    })?;
    let r = Route::find(&got, "10.21.0.0/24").unwrap();
    assert_eq!(r.originator_id.as_deref(), Some("10.99.1.2"), "{r:?}");
    assert_eq!(r.cluster_list, [CLUSTER_ID], "{r:?}");
    assert_eq!(r.next_hop, "10.99.1.2", "{r:?}");
    assert_eq!(r.communities, ["64512:21"]);

    // A client never gets its own route back (ORIGINATOR_ID loop check on
    // petrel's side: RFC 4456 §8).
    assert!(Route::find(&bird.received(&proto)?, "10.21.0.0/24").is_none());
    assert!(Route::find(&frr.received("10.99.2.1")?, "10.22.0.0/24").is_none());
    Ok(())
}
