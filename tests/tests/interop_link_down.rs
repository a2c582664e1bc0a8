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
//! Topology: namespace `dut` (petreld; 10.0.0.1/24 and fd00:a::1/64
//! towards `a`, 10.0.1.1/24 and fd00:b::1/64 towards `b`), `a` (FRR,
//! 10.0.0.11 and fd00:a::11, AS 4200000002), `b` (FRR, 10.0.1.12 and
//! fd00:b::12, AS 4200000003).
//!
//! The same over IPv6: sessions between the links' IPv6 addresses,
//! announcing 2001:db8:77::/48 (IPv6 keeps a link's addresses when its
//! carrier goes, so the peer's address stays "connected": what ends the
//! session is the link's state).

use anyhow::{ensure, Result};
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::{self, View, PETREL_AS};
use petrel_tests::lab::{fib, frr, require_lab, wait_until, Lab};

/// One family's addresses and prefix.
struct Case {
    prefix: &'static str,
    dut_a: &'static str,
    dut_b: &'static str,
    a: &'static str,
    b: &'static str,
    /// petreld's and FRR's name of the family.
    family: &'static str,
    af: &'static str,
}

const V4: Case = Case {
    prefix: "10.77.0.0/24",
    dut_a: "10.0.0.1",
    dut_b: "10.0.1.1",
    a: "10.0.0.11",
    b: "10.0.1.12",
    family: "ipv4-unicast",
    af: "ipv4",
};

const V6: Case = Case {
    prefix: "2001:db8:77::/48",
    dut_a: "fd00:a::1",
    dut_b: "fd00:b::1",
    a: "fd00:a::11",
    b: "fd00:b::12",
    family: "ipv6-unicast",
    af: "ipv6",
};

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

/// FRR in `ns` (router id `router_id`) as `asn`, peering from `local` with
/// petreld at `dut`, announcing the case's prefix (with its AS prepended
/// twice when `prepend`).
fn frr_config(
    c: &Case,
    router_id: &str,
    local: &str,
    asn: u32,
    dut: &str,
    prepend: bool,
) -> String {
    let mut f = frr::Config::new(router_id, asn);
    f.graceful_restart = Some(120);
    f.originate(c.prefix, &[], &[]);
    let v6 = c.af == "ipv6";
    f.neighbor(
        frr::Neighbor::new(dut, PETREL_AS)
            .update_source(local)
            .timers(KEEPALIVE, HOLD)
            .families(!v6, v6),
    );
    if prepend {
        f.extra = format!(
            "router bgp {asn}\n address-family {} unicast\n  neighbor {dut} route-map LONGER out\n exit-address-family\n!\nroute-map LONGER permit 10\n set as-path prepend {asn} {asn}\n!\n",
            c.af
        );
    }
    f.render()
}

/// petreld's kernel route for `prefix`, as its gateways.
fn gateways(ns: &petrel_tests::lab::Netns, prefix: &str) -> Result<Vec<String>> {
    Ok(fib::exact(ns, prefix)?
        .into_iter()
        .filter(|r| r.is_petrel())
        .flat_map(|r| r.gateways)
        .collect())
}

#[test]
fn carrier_loss_moves_routes_to_the_other_peer_before_the_hold_time() -> Result<()> {
    carrier_loss(&V4)
}

#[test]
fn carrier_loss_moves_ipv6_routes_to_the_other_peer_before_the_hold_time() -> Result<()> {
    carrier_loss(&V6)
}

fn carrier_loss(c: &Case) -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let (prefix, a, b) = (c.prefix, c.a, c.b);
    let lab = Lab::new("linkdown")?;
    let (dut, a_ns, b_ns) = (lab.netns("dut")?, lab.netns("a")?, lab.netns("b")?);
    // A keeps its IPv6 address while its link is down, as a router keeps
    // its configuration (Linux flushes a downed link's IPv6 addresses by
    // default, and nothing here would add it back).
    a_ns.exec("sysctl", &["-qw", "net.ipv6.conf.all.keep_addr_on_down=1"])?;
    let link_a = lab.link(
        &dut,
        &["10.0.0.1/24", "fd00:a::1/64"],
        &a_ns,
        &["10.0.0.11/24", "fd00:a::11/64"],
    )?;
    lab.link(
        &dut,
        &["10.0.1.1/24", "fd00:b::1/64"],
        &b_ns,
        &["10.0.1.12/24", "fd00:b::12/64"],
    )?;

    let mut pc = petreld::Config::new("10.0.0.1", PETREL_AS);
    pc.listen(c.dut_a).listen(c.dut_b);
    pc.graceful_restart = Some(120);
    for (addr, asn, local) in [(a, AS_A, c.dut_a), (b, AS_B, c.dut_b)] {
        pc.peer(
            petreld::Peer::new(addr, asn)
                .local_address(local)
                .families(&[c.family])
                .hold_time(HOLD)
                .graceful_restart(120),
        );
    }
    let petrel = Petreld::start(&lab, &dut, &pc)?;
    let fa = frr::Frr::start(
        &lab,
        &a_ns,
        &frr_config(c, "10.0.0.11", a, AS_A, c.dut_a, false),
    )?;
    let fb = frr::Frr::start(
        &lab,
        &b_ns,
        &frr_config(c, "10.0.1.12", b, AS_B, c.dut_b, true),
    )?;
    petrel.wait_established(a)?;
    petrel.wait_established(b)?;
    let daemons = [petrel.daemon(), fa.bgpd(), fb.bgpd()];
    wait_until("the route via A, B's path received too", &daemons, || {
        let via_a = gateways(&dut, prefix)? == [a];
        let from_b = petrel.received(b)?.iter().any(|r| r.prefix == prefix);
        Ok((via_a && from_b).then_some(()))
    })?;
    // RFC 8538: the N bit on both sides, so only a Hard Reset or the link
    // can end A's routes at once.
    let n = fa.neighbor(c.dut_a)?;
    ensure!(
        n["gracefulRestartInfo"]["nBit"].as_bool() == Some(true),
        "petreld offers the N bit to A: {n:#}"
    );

    // A dies: its end of the link goes down, petreld's loses carrier.
    a_ns.ip(&["link", "set", &link_a.b, "down"])?;
    wait_until("the route via B", &daemons, || {
        Ok((gateways(&dut, prefix)? == [b]).then_some(()))
    })?;
    let pa = petrel.peer(a)?;
    ensure!(
        pa.state != "Established"
            && pa
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("link down")),
        "petreld's session with A ended on the link, not its hold timer: {pa:?}"
    );
    ensure!(petrel.received(a)?.is_empty(), "nothing of A's kept stale");
    ensure!(
        petrel.peer(b)?.state == "Established",
        "B's session untouched"
    );

    // A is back: the session returns (petreld held it while the link was
    // down and starts it with the carrier), and so does the route via A.
    a_ns.ip(&["link", "set", &link_a.b, "up"])?;
    petrel.wait_established(a)?;
    wait_until("the route via A again", &daemons, || {
        Ok((gateways(&dut, prefix)? == [a]).then_some(()))
    })?;
    Ok(())
}
