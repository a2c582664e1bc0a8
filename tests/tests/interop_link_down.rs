//! Fast external failover (`[bgp] fast_external_failover`, on by default)
//! against FRR: petreld has two directly connected eBGP peers on links of
//! their own, both FRR, both announcing 10.77.0.0/24; B's AS path is two
//! ASNs longer, so the kernel route goes via A. Graceful restart with
//! RFC 8538's N bit is negotiated on both sessions, so a lost connection
//! alone would keep A's route, stale.
//!
//! A's end of its veth is set down: petreld's interface loses carrier and
//! stays administratively up (a dead box, a pulled cable). The hold time is
//! [`HOLD`] s (keepalives every [`KEEPALIVE`] s), so the hold timer cannot
//! expire before 160 s; the wait's deadline ([`petrel_tests::lab::DEADLINE`],
//! 60 s by default) is well below. Within it the kernel route must move to
//! B's next hop, and petreld's session with A must say it ended on the
//! link (its last error), which is what shows the mechanism. Then the link
//! comes back and the session and the route via A return.
//!
//! Topology: namespace `dut` (petreld; 10.0.0.1/24 towards `a`,
//! 10.0.1.1/24 towards `b`), `a` (FRR, 10.0.0.11, AS 4200000002), `b`
//! (FRR, 10.0.1.12, AS 4200000003).

use anyhow::{ensure, Result};
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::{self, View, PETREL_AS};
use petrel_tests::lab::{fib, frr, require_lab, wait_until, Lab};

const PREFIX: &str = "10.77.0.0/24";
const DUT_A: &str = "10.0.0.1";
const DUT_B: &str = "10.0.1.1";
const A: &str = "10.0.0.11";
const B: &str = "10.0.1.12";
const AS_A: u32 = 4200000002;
const AS_B: u32 = 4200000003;
/// Long: only the link can explain a session ending within the wait.
const HOLD: u16 = 240;
const KEEPALIVE: u16 = 80;

fn can_run() -> bool {
    require_lab(topo::Kind::Frr.programs())
        && petrel_tests::have_bin("petreld")
        && petrel_tests::have_bin("petrelctl")
}

/// FRR in `ns` as `asn`, peering with petreld at `dut`, announcing
/// [`PREFIX`] (with its AS prepended twice when `prepend`).
fn frr_config(router_id: &str, asn: u32, dut: &str, prepend: bool) -> String {
    let mut c = frr::Config::new(router_id, asn);
    c.graceful_restart = Some(120);
    c.originate(PREFIX, &[], &[]);
    c.neighbor(
        frr::Neighbor::new(dut, PETREL_AS)
            .update_source(router_id)
            .timers(KEEPALIVE, HOLD),
    );
    if prepend {
        c.extra = format!(
            "router bgp {asn}\n address-family ipv4 unicast\n  neighbor {dut} route-map LONGER out\n exit-address-family\n!\nroute-map LONGER permit 10\n set as-path prepend {asn} {asn}\n!\n"
        );
    }
    c.render()
}

/// petreld's kernel route for [`PREFIX`], as its gateways.
fn gateways(ns: &petrel_tests::lab::Netns) -> Result<Vec<String>> {
    Ok(fib::exact(ns, PREFIX)?
        .into_iter()
        .filter(|r| r.is_petrel())
        .flat_map(|r| r.gateways)
        .collect())
}

#[test]
fn carrier_loss_moves_routes_to_the_other_peer_before_the_hold_time() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let lab = Lab::new("linkdown")?;
    let (dut, a_ns, b_ns) = (lab.netns("dut")?, lab.netns("a")?, lab.netns("b")?);
    let link_a = lab.link(&dut, &["10.0.0.1/24"], &a_ns, &["10.0.0.11/24"])?;
    lab.link(&dut, &["10.0.1.1/24"], &b_ns, &["10.0.1.12/24"])?;

    let mut pc = petreld::Config::new(DUT_A, PETREL_AS);
    pc.listen(DUT_A).listen(DUT_B);
    pc.graceful_restart = Some(120);
    for (addr, asn, local) in [(A, AS_A, DUT_A), (B, AS_B, DUT_B)] {
        pc.peer(
            petreld::Peer::new(addr, asn)
                .local_address(local)
                .families(&["ipv4-unicast"])
                .hold_time(HOLD)
                .graceful_restart(120),
        );
    }
    let petrel = Petreld::start(&lab, &dut, &pc)?;
    let fa = frr::Frr::start(&lab, &a_ns, &frr_config(A, AS_A, DUT_A, false))?;
    let fb = frr::Frr::start(&lab, &b_ns, &frr_config(B, AS_B, DUT_B, true))?;
    petrel.wait_established(A)?;
    petrel.wait_established(B)?;
    let daemons = [petrel.daemon(), fa.bgpd(), fb.bgpd()];
    wait_until("the route via A, B's path received too", &daemons, || {
        let via_a = gateways(&dut)? == [A];
        let from_b = petrel.received(B)?.iter().any(|r| r.prefix == PREFIX);
        Ok((via_a && from_b).then_some(()))
    })?;
    // RFC 8538: the N bit on both sides, so only a Hard Reset or the link
    // can end A's routes at once.
    let n = fa.neighbor(DUT_A)?;
    ensure!(
        n["gracefulRestartInfo"]["nBit"].as_bool() == Some(true),
        "petreld offers the N bit to A: {n:#}"
    );

    // A dies: its end of the link goes down, petreld's loses carrier.
    a_ns.ip(&["link", "set", &link_a.b, "down"])?;
    wait_until("the route via B", &daemons, || {
        Ok((gateways(&dut)? == [B]).then_some(()))
    })?;
    let pa = petrel.peer(A)?;
    ensure!(
        pa.state != "Established"
            && pa
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("link down")),
        "petreld's session with A ended on the link, not its hold timer: {pa:?}"
    );
    ensure!(petrel.received(A)?.is_empty(), "nothing of A's kept stale");
    ensure!(
        petrel.peer(B)?.state == "Established",
        "B's session untouched"
    );

    // A is back: the session returns (petreld held it while the link was
    // down and starts it with the carrier), and so does the route via A.
    a_ns.ip(&["link", "set", &link_a.b, "up"])?;
    petrel.wait_established(A)?;
    wait_until("the route via A again", &daemons, || {
        Ok((gateways(&dut)? == [A]).then_some(()))
    })?;
    Ok(())
}
