//! What routers in the wild send, from ExaBGP (and, for bytes ExaBGP will
//! not produce, the raw speaker), into petrel; GoBGP as a third peer shows
//! what petrel passes on.
//!
//! ```text
//!  exa/raw 10.99.4.4 ── 10.99.4.1 petrel 10.99.3.1 ── 10.99.3.3 gobgp
//!  AS 64999 (2-octet)     AS 4200000001              AS 4200000003
//!  or 4200000004
//! ```

use anyhow::{Context, Result};
use petrel_tests::lab::exabgp::{self, Exabgp};
use petrel_tests::lab::petreld::{self, Petreld};
use petrel_tests::lab::topo::View;
use petrel_tests::lab::topo::PETREL_AS;
use petrel_tests::lab::{gobgp, raw, require_lab, Lab, Netns, Route};
use std::time::Duration;

const EXA: &str = "10.99.4.4";
const PETREL_EXA_SIDE: &str = "10.99.4.1";
const PETREL_GOBGP_SIDE: &str = "10.99.3.1";
const GOBGP: &str = "10.99.3.3";
const GOBGP_AS: u32 = 4200000003;
const EXA_AS4: u32 = 4200000004;
const EXA_AS2: u32 = 64999;

struct Topo {
    lab: Lab,
    exa_ns: Netns,
    petrel: Petreld,
    gobgp: gobgp::Gobgp,
}

/// petrel with one peer at 10.99.4.4 (AS `exa_as`, hold time `hold`) and
/// GoBGP; both sessions up except the first, which the test opens.
fn topo(
    tag: &str,
    exa_as: u32,
    exa_peer: impl FnOnce(petreld::Peer) -> petreld::Peer,
) -> Result<Option<Topo>> {
    if !require_lab(&["exabgp", "gobgpd", "gobgp"])
        || !petrel_tests::have_bin("petreld")
        || !petrel_tests::have_bin("petrelctl")
    {
        return Ok(None);
    }
    let lab = Lab::new(tag)?;
    let (e, p, g) = (lab.netns("exa")?, lab.netns("petrel")?, lab.netns("gobgp")?);
    lab.link(
        &e,
        &[&format!("{EXA}/24")],
        &p,
        &[&format!("{PETREL_EXA_SIDE}/24")],
    )?;
    lab.link(
        &p,
        &[&format!("{PETREL_GOBGP_SIDE}/24")],
        &g,
        &[&format!("{GOBGP}/24")],
    )?;
    let mut pc = petreld::Config::new(PETREL_EXA_SIDE, PETREL_AS);
    pc.listen(PETREL_EXA_SIDE)
        .listen(PETREL_GOBGP_SIDE)
        .peer(exa_peer(
            petreld::Peer::new(EXA, exa_as)
                .local_address(PETREL_EXA_SIDE)
                .families(&["ipv4-unicast"])
                .passive(),
        ))
        .peer(
            petreld::Peer::new(GOBGP, GOBGP_AS)
                .local_address(PETREL_GOBGP_SIDE)
                .families(&["ipv4-unicast"]),
        );
    let petrel = Petreld::start(&lab, &p, &pc)?;
    let mut gc = gobgp::Config::new(GOBGP, GOBGP_AS);
    gc.neighbor(
        gobgp::Neighbor::new(PETREL_GOBGP_SIDE, PETREL_AS)
            .local_address(GOBGP)
            .families(true, false),
    );
    let gobgp = gobgp::Gobgp::start(&lab, &g, &gc)?;
    petrel.wait_established(GOBGP)?;
    Ok(Some(Topo {
        lab,
        exa_ns: e,
        petrel,
        gobgp,
    }))
}

fn exa(t: &Topo, n: exabgp::Neighbor) -> Result<Exabgp> {
    let e = Exabgp::start(&t.lab, &t.exa_ns, &[n])?;
    t.petrel.wait_established(EXA)?;
    Ok(e)
}

fn exa_neighbor(local_as: u32) -> exabgp::Neighbor {
    exabgp::Neighbor::new(PETREL_EXA_SIDE, PETREL_AS, EXA, local_as).families(true, false)
}

fn find<'a>(routes: &'a [Route], prefix: &str) -> Result<&'a Route> {
    Route::find(routes, prefix).with_context(|| format!("no {prefix} in {routes:#?}"))
}

fn established(t: &Topo, addr: &str) -> Result<bool> {
    Ok(t.petrel.peer(addr)?.state == "Established")
}

#[test]
fn two_octet_speaker_with_as_trans_and_as4_path() -> Result<()> {
    let Some(t) = topo("exa-as4", EXA_AS2, |p| p)? else {
        return Ok(());
    };
    let e = exa(&t, exa_neighbor(EXA_AS2).asn2())?;
    // ExaBGP sends AS_PATH [64999 23456] and AS4_PATH [64999 4200000009].
    e.announce("10.30.1.0/24", EXA, "as-path [ 64999 4200000009 ]")?;
    let got = t
        .petrel
        .wait_routes_from(EXA, "the route at petrel", &mut |r| {
            Route::find(r, "10.30.1.0/24").is_some()
        })?;
    assert_eq!(find(&got, "10.30.1.0/24")?.as_path, "64999 4200000009");
    let got = t
        .gobgp
        .wait_routes_from(PETREL_GOBGP_SIDE, "the route at GoBGP", &mut |r| {
            Route::find(r, "10.30.1.0/24").is_some()
        })?;
    let r = find(&got, "10.30.1.0/24")?;
    assert_eq!(r.as_path, "4200000001 64999 4200000009", "{r:?}");
    assert!(
        r.unknown.iter().all(|u| u.0 != 17),
        "no AS4_PATH towards a 4-octet peer: {r:?}"
    );
    Ok(())
}

#[test]
fn as_set() -> Result<()> {
    let Some(t) = topo("exa-asset", EXA_AS4, |p| p)? else {
        return Ok(());
    };
    let e = exa(&t, exa_neighbor(EXA_AS4))?;
    e.announce(
        "10.30.2.0/24",
        EXA,
        "as-path [ 4200000004 ( 4200000008 4200000009 ) ]",
    )?;
    let got = t
        .petrel
        .wait_routes_from(EXA, "the route at petrel", &mut |r| {
            Route::find(r, "10.30.2.0/24").is_some()
        })?;
    let r = find(&got, "10.30.2.0/24")?;
    assert_eq!(r.asns(), [4200000004, 4200000008, 4200000009], "{r:?}");
    assert!(r.as_path.contains('{'), "AS_SET in braces: {r:?}");
    let got = t
        .gobgp
        .wait_routes_from(PETREL_GOBGP_SIDE, "the route at GoBGP", &mut |r| {
            Route::find(r, "10.30.2.0/24").is_some()
        })?;
    let r = find(&got, "10.30.2.0/24")?;
    assert_eq!(
        r.as_path_canonical(),
        "4200000001 4200000004 {4200000008 4200000009}",
        "{r:?}"
    );
    Ok(())
}

#[test]
fn unknown_optional_transitive_passed_on_with_partial_bit() -> Result<()> {
    let Some(t) = topo("exa-unknown", EXA_AS4, |p| p)? else {
        return Ok(());
    };
    let e = exa(&t, exa_neighbor(EXA_AS4))?;
    e.announce(
        "10.30.3.0/24",
        EXA,
        "as-path [ 4200000004 ] attribute [ 0xf0 0xc0 0x0102030405 ] attribute [ 0xf1 0x80 0x01 ]",
    )?;
    let got = t
        .gobgp
        .wait_routes_from(PETREL_GOBGP_SIDE, "the route at GoBGP", &mut |r| {
            Route::find(r, "10.30.3.0/24").is_some()
        })?;
    let r = find(&got, "10.30.3.0/24")?;
    let u = r
        .unknown
        .iter()
        .find(|u| u.0 == 0xf0)
        .with_context(|| format!("optional transitive 0xf0 not passed on: {r:?}"))?;
    assert_eq!(u.1 & 0xe0, 0xe0, "optional, transitive and Partial: {u:?}");
    assert!(
        u.2 == "0102030405" || u.2 == "AQIDBAU=",
        "value unchanged: {u:?}"
    );
    assert!(
        r.unknown.iter().all(|u| u.0 != 0xf1),
        "optional non-transitive 0xf1 must not be passed on: {r:?}"
    );
    Ok(())
}

#[test]
fn malformed_attribute_is_treat_as_withdraw() -> Result<()> {
    let Some(t) = topo("exa-malformed", EXA_AS4, |p| p)? else {
        return Ok(());
    };
    let e = exa(&t, exa_neighbor(EXA_AS4))?;
    e.announce("10.30.4.0/24", EXA, "as-path [ 4200000004 ]")?;
    e.announce("10.30.5.0/24", EXA, "as-path [ 4200000004 ]")?;
    t.gobgp
        .wait_routes_from(PETREL_GOBGP_SIDE, "both routes at GoBGP", &mut |r| {
            Route::find(r, "10.30.4.0/24").is_some() && Route::find(r, "10.30.5.0/24").is_some()
        })?;
    // MULTI_EXIT_DISC of 2 octets: RFC 7606 §7.4, treat-as-withdraw.
    e.announce(
        "10.30.4.0/24",
        EXA,
        "as-path [ 4200000004 ] attribute [ 0x04 0x80 0x0001 ]",
    )?;
    t.petrel
        .wait_routes_from(EXA, "treat-as-withdraw at petrel", &mut |r| {
            Route::find(r, "10.30.4.0/24").is_none()
        })?;
    t.gobgp.wait_routes_from(
        PETREL_GOBGP_SIDE,
        "the withdrawal passed on to GoBGP",
        &mut |r| Route::find(r, "10.30.4.0/24").is_none(),
    )?;
    assert!(established(&t, EXA)?, "the session must stay up");
    find(&t.petrel.received(EXA)?, "10.30.5.0/24")?;
    Ok(())
}

/// Raw bytes ExaBGP will not send: an ORIGIN of 7 (RFC 7606 §7.1).
#[test]
fn malformed_hex_update_is_treat_as_withdraw() -> Result<()> {
    let Some(t) = topo("raw-malformed", EXA_AS4, |p| p)? else {
        return Ok(());
    };
    let mut s = raw::RawSpeaker::connect(
        &t.exa_ns,
        &format!("{PETREL_EXA_SIDE}:179"),
        &raw::Open::new(EXA_AS4, [10, 99, 4, 4]),
    )?;
    t.petrel.wait_established(EXA)?;
    let attrs = raw::basic_attrs(&[EXA_AS4], [10, 99, 4, 4]);
    s.send_update(&raw::update(
        &[],
        &attrs,
        &["10.30.6.0/24", "10.30.7.0/24"],
    )?)?;
    t.petrel
        .wait_routes_from(EXA, "raw routes at petrel", &mut |r| r.len() == 2)?;
    // 40 01 01 07: ORIGIN, length 1, value 7.
    let mut bad = petrel_tests::unhex("40010107");
    bad.extend_from_slice(&attrs[4..]);
    s.send_update(&raw::update(&[], &bad, &["10.30.6.0/24"])?)?;
    t.petrel
        .wait_routes_from(EXA, "treat-as-withdraw at petrel", &mut |r| {
            Route::find(r, "10.30.6.0/24").is_none()
        })?;
    s.still_up(Duration::from_millis(300))?;
    assert!(established(&t, EXA)?);
    find(&t.petrel.received(EXA)?, "10.30.7.0/24")?;
    Ok(())
}

/// One UPDATE of exactly 4096 octets (RFC 4271 §4: the maximum without
/// RFC 8654): every prefix arrives, the session stays up, and they are
/// passed on.
#[test]
fn maximum_size_update() -> Result<()> {
    let Some(t) = topo("raw-maxsize", EXA_AS4, |p| p)? else {
        return Ok(());
    };
    let mut s = raw::RawSpeaker::connect(
        &t.exa_ns,
        &format!("{PETREL_EXA_SIDE}:179"),
        &raw::Open::new(EXA_AS4, [10, 99, 4, 4]),
    )?;
    t.petrel.wait_established(EXA)?;
    let attrs = raw::basic_attrs(&[EXA_AS4], [10, 99, 4, 4]);
    // 19 header + 2 + 2 + attrs + NLRI = 4096: /24s take 4 octets, /25s 5.
    let room = 4096 - 19 - 4 - attrs.len();
    // Each /25 in place of a /24 adds one octet: room % 4 of them.
    let n25 = room % 4;
    let n24 = (room - 5 * n25) / 4;
    let mut prefixes = Vec::new();
    for i in 0..n24 {
        prefixes.push(format!("10.{}.{}.0/24", 100 + i / 256, i % 256));
    }
    for i in 0..n25 {
        prefixes.push(format!("10.200.{i}.0/25"));
    }
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let body = raw::update(&[], &attrs, &refs)?;
    assert_eq!(19 + body.len(), 4096, "test construction");
    s.send_update(&body)?;
    let n = prefixes.len();
    t.petrel
        .wait_routes_from(EXA, "every prefix at petrel", &mut |r| r.len() == n)?;
    t.gobgp
        .wait_routes_from(PETREL_GOBGP_SIDE, "every prefix at GoBGP", &mut |r| {
            r.len() == n
        })?;
    s.still_up(Duration::from_millis(300))?;
    let st = t.petrel.peer(EXA)?;
    assert_eq!((st.received, st.accepted), (n as u64, n as u64), "{st:?}");
    Ok(())
}

/// Hold time 0 (RFC 4271 §4.2: no keepalives, no hold timer): the session
/// comes up and carries routes.
#[test]
fn hold_time_zero() -> Result<()> {
    let Some(t) = topo("exa-hold0", EXA_AS4, |p| p)? else {
        return Ok(());
    };
    let e = exa(&t, exa_neighbor(EXA_AS4).hold_time(0))?;
    e.announce("10.30.8.0/24", EXA, "as-path [ 4200000004 ]")?;
    t.petrel
        .wait_routes_from(EXA, "the route at petrel", &mut |r| {
            Route::find(r, "10.30.8.0/24").is_some()
        })?;
    t.gobgp
        .wait_routes_from(PETREL_GOBGP_SIDE, "the route at GoBGP", &mut |r| {
            Route::find(r, "10.30.8.0/24").is_some()
        })?;
    assert!(established(&t, EXA)?);
    Ok(())
}
