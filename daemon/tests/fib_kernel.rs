//! The FIB writer against a real kernel, each test in a network namespace
//! of its own: an interface `d0` (192.0.2.1/24, 2001:db8::1/64) and
//! `d1` (198.51.100.1/24, 2001:db8:1::1/64) hold the next hops' networks.

use petrel_bgp::rib::{AttrSet, FibChange, LocRibChange, PeerId, Route};
use petrel_bgp::wire::attr::mp::NextHop;
use petrel_bgp::wire::{PathAttributes, Prefix};
use petrel_daemon::fib::{self, Event, Fib, FibConfig, Monitor, OnLink};
use petrel_tests::lab::{require_lab, Lab, Netns};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn lab(tag: &str) -> Option<(Lab, Netns)> {
    if !require_lab(&[]) {
        return None;
    }
    let lab = Lab::new(tag).unwrap();
    let ns = lab.netns("fib").unwrap();
    for (dev, v4, v6) in [
        ("d0", "192.0.2.1/24", "2001:db8::1/64"),
        ("d1", "198.51.100.1/24", "2001:db8:1::1/64"),
    ] {
        // This kernel has no dummy driver: a veth pair with both ends up.
        let peer = format!("{dev}p");
        ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer])
            .unwrap();
        ns.ip(&["link", "set", &peer, "up"]).unwrap();
        ns.add_addr(dev, v4).unwrap();
        ns.add_addr(dev, v6).unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    Some((lab, ns))
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn route(prefix: &str, peer: u16, nh: &str) -> Route {
    let next_hop = match nh.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => NextHop::V4(a),
        IpAddr::V6(a) => NextHop::V6 {
            global: a,
            link_local: None,
        },
    };
    Route {
        prefix: p(prefix),
        peer: PeerId(peer),
        path_id: 0,
        attrs: Arc::new(AttrSet::new(PathAttributes::default(), Some(next_hop))),
        llgr_stale: false,
    }
}

fn best(prefix: &str, nh: &str) -> FibChange {
    let r = route(prefix, 1, nh);
    LocRibChange::Best {
        prefix: p(prefix),
        best: r.clone(),
        multipath: vec![r],
    }
    .into()
}

fn ecmp(prefix: &str, nhs: &[&str]) -> FibChange {
    let set: Vec<Route> = nhs
        .iter()
        .enumerate()
        .map(|(i, nh)| route(prefix, i as u16 + 1, nh))
        .collect();
    LocRibChange::Best {
        prefix: p(prefix),
        best: set[0].clone(),
        multipath: set,
    }
    .into()
}

fn gone(prefix: &str) -> FibChange {
    LocRibChange::Unreachable { prefix: p(prefix) }.into()
}

fn cfg() -> FibConfig {
    FibConfig {
        mtu: Some(1400),
        ..FibConfig::default()
    }
}

/// The configuration of a test run in either mode: classic routes, or
/// routes by kernel nexthop object.
fn cfg_in(nh: bool) -> FibConfig {
    FibConfig {
        nexthop_objects: if nh {
            fib::NexthopObjects::Auto
        } else {
            fib::NexthopObjects::Off
        },
        ..cfg()
    }
}

/// Runs a test body once per mode, each in a test of its own.
macro_rules! both_paths {
    ($name:ident) => {
        mod $name {
            #[test]
            fn classic() {
                super::$name(false)
            }
            #[test]
            fn nexthop_objects() {
                super::$name(true)
            }
        }
    };
}

/// Asserts that the route uses a nexthop object exactly in nexthop mode.
fn assert_mode(r: &Value, nh: bool) {
    assert_eq!(
        r["nhid"].is_u64(),
        nh,
        "route by nexthop id iff nh mode: {r}"
    );
}

/// The nexthop objects of protocol 202 (`ip -j -d nexthop show`; the
/// protocol shows by name where rt_protos.d names it).
fn objects(ns: &Netns) -> Vec<Value> {
    let text = ns.ip(&["-j", "-d", "nexthop", "show"]).unwrap();
    let v: Value = serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text }).unwrap();
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o["protocol"] == "petrel" || o["protocol"] == "202" || o["protocol"] == 202)
        .collect()
}

/// `ip -j route show` for both families, with extra selectors.
fn kernel(ns: &Netns, extra: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let mut a = vec!["-j", "-d", fam, "route", "show"];
        a.extend_from_slice(extra);
        let text = ns.ip(&a).unwrap();
        let v: Value =
            serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text }).unwrap();
        out.extend(v.as_array().cloned().unwrap_or_default());
    }
    out
}

fn find<'a>(routes: &'a [Value], dst: &str) -> Option<&'a Value> {
    routes.iter().find(|r| r["dst"] == dst)
}

fn ours(ns: &Netns) -> Vec<Value> {
    kernel(ns, &["proto", "202"])
}

fn mtu_of(r: &Value) -> Option<u64> {
    r["metrics"]
        .as_array()?
        .iter()
        .find_map(|m| m["mtu"].as_u64())
}

fn gateways(r: &Value) -> Vec<String> {
    match r["nexthops"].as_array() {
        Some(hops) => hops
            .iter()
            .filter_map(|h| h["gateway"].as_str().map(String::from))
            .collect(),
        None => r["gateway"]
            .as_str()
            .or(r["via"]["host"].as_str())
            .map(String::from)
            .into_iter()
            .collect(),
    }
}

both_paths!(install_replace_delete_v4_v6);
fn install_replace_delete_v4_v6(nh: bool) {
    let Some((_lab, ns)) = lab("fib-ird") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        assert_eq!(fib.nexthop_objects(), nh);
        let r = fib.apply(&[
            best("10.1.0.0/24", "192.0.2.2"),
            best("fd00:1::/48", "2001:db8::2"),
            best("10.1.1.0/24", "192.0.2.2"),
        ])?;
        assert_eq!((r.installed, r.errors.len()), (3, 0), "{r:?}");
        let k = ours(&n);
        let v4 = find(&k, "10.1.0.0/24").expect("v4 route installed");
        assert_mode(v4, nh);
        assert_eq!(gateways(v4), ["192.0.2.2"]);
        assert_eq!(mtu_of(v4), Some(1400));
        let v6 = find(&k, "fd00:1::/48").expect("v6 route installed");
        assert_mode(v6, nh);
        assert_eq!(gateways(v6), ["2001:db8::2"]);
        // Two distinct hops: one object each, shared by the v4 routes.
        assert_eq!(objects(&n).len(), if nh { 2 } else { 0 });
        assert_eq!(mtu_of(v6), Some(1400));

        // Replace (and coalescing: only the last change of a prefix counts).
        let r = fib.apply(&[
            best("10.1.0.0/24", "192.0.2.7"),
            best("10.1.0.0/24", "192.0.2.3"),
            best("fd00:1::/48", "2001:db8::3"),
            best("10.1.1.0/24", "192.0.2.2"),
        ])?;
        assert_eq!((r.installed, r.unchanged), (2, 1), "{r:?}");
        let k = ours(&n);
        assert_eq!(gateways(find(&k, "10.1.0.0/24").unwrap()), ["192.0.2.3"]);
        assert_eq!(gateways(find(&k, "fd00:1::/48").unwrap()), ["2001:db8::3"]);
        assert_eq!(k.len(), 3, "replace, not add: {k:?}");

        let r = fib.apply(&[
            gone("10.1.0.0/24"),
            gone("fd00:1::/48"),
            gone("10.7.0.0/24"),
        ])?;
        assert_eq!((r.removed, r.unchanged), (2, 1), "{r:?}");
        let k = ours(&n);
        assert_eq!(k.len(), 1, "{k:?}");
        assert!(find(&k, "10.1.1.0/24").is_some());
        let c = fib.counters();
        assert_eq!(c.ops.load(std::sync::atomic::Ordering::Relaxed), 7);
        assert_eq!(fib.len(), 1);
        // The objects of hops no route uses any more are gone, but for the
        // last single hop resolved (192.0.2.3 here): the writer keeps its
        // set interned for the next route, and so its object.
        let gws = |n: &Netns| {
            let mut g: Vec<String> = objects(n)
                .iter()
                .map(|o| o["gateway"].as_str().unwrap_or("").to_string())
                .collect();
            g.sort();
            g
        };
        if nh {
            assert_eq!(gws(&n), ["192.0.2.2", "192.0.2.3"]);
            // The next route resolves another hop: 192.0.2.3's object goes.
            fib.apply(&[best("10.1.2.0/24", "192.0.2.2")])?;
            assert_eq!(gws(&n), ["192.0.2.2"]);
        } else {
            assert!(gws(&n).is_empty());
        }
        Ok(())
    })
    .unwrap();
}

// A next hop's routes all withdrawn in bursts (its peer died): with
// nexthop objects the writer holds the deletes back and deletes the
// object once every route of it is to go, and the kernel takes them with
// it. Routes via other next hops, replaces to another next hop, and an
// ECMP group that had the dead hop as a member come out exactly as
// route-by-route deletes leave them.
both_paths!(a_dead_next_hops_routes_go_with_its_object);
fn a_dead_next_hops_routes_go_with_its_object(nh: bool) {
    let Some((_lab, ns)) = lab("fib-flush") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        let a = |i: usize| format!("10.2.{i}.0/24");
        let mut load: Vec<FibChange> = (0..200).map(|i| best(&a(i), "192.0.2.2")).collect();
        load.extend((0..3).map(|i| best(&format!("10.3.{i}.0/24"), "192.0.2.3")));
        load.extend(
            (0..2).map(|i| ecmp(&format!("10.4.{i}.0/24"), &["192.0.2.2", "198.51.100.2"])),
        );
        let r = fib.apply(&load)?;
        assert_eq!((r.installed, r.errors.len()), (205, 0), "{r:?}");

        // The first half of the dead hop's routes: held with objects (the
        // kernel still has them), deleted without.
        let first: Vec<FibChange> = (0..100).map(|i| gone(&a(i))).collect();
        let r1 = fib.apply(&first)?;
        assert_eq!(r1.errors.len(), 0, "{r1:?}");
        assert_eq!(fib.held_deletes(), if nh { 100 } else { 0 });
        assert_eq!(ours(&n).len(), if nh { 205 } else { 105 });

        // The rest; one held route and one of this batch move to another
        // next hop, and the ECMP routes lose the dead member.
        let mut rest: Vec<FibChange> = (100..200)
            .filter(|i| *i != 150)
            .map(|i| gone(&a(i)))
            .collect();
        rest.push(best(&a(7), "192.0.2.3"));
        rest.push(best(&a(150), "192.0.2.3"));
        rest.extend((0..2).map(|i| best(&format!("10.4.{i}.0/24"), "198.51.100.2")));
        let r2 = fib.apply(&rest)?;
        assert_eq!(r2.errors.len(), 0, "{r2:?}");
        assert_eq!(fib.held_deletes(), 0, "every hold ended");
        if nh {
            // 99 held in the first batch and 99 in this one, removed with
            // the object; 10.2.7.0/24 was replaced, never deleted.
            assert_eq!((r2.removed, r2.installed), (198, 4), "{r2:?}");
        }

        let k = ours(&n);
        let mut got: Vec<(String, Vec<String>)> = k
            .iter()
            .map(|r| (r["dst"].as_str().unwrap().to_string(), gateways(r)))
            .collect();
        got.sort();
        let via = |d: &str, g: &str| (d.to_string(), vec![g.to_string()]);
        assert_eq!(
            got,
            [
                via("10.2.150.0/24", "192.0.2.3"),
                via("10.2.7.0/24", "192.0.2.3"),
                via("10.3.0.0/24", "192.0.2.3"),
                via("10.3.1.0/24", "192.0.2.3"),
                via("10.3.2.0/24", "192.0.2.3"),
                via("10.4.0.0/24", "198.51.100.2"),
                via("10.4.1.0/24", "198.51.100.2"),
            ]
        );
        for r in &k {
            assert_mode(r, nh);
        }
        assert_eq!(fib.len(), 7);
        let gws = |n: &Netns| {
            let mut g: Vec<String> = objects(n)
                .iter()
                .filter_map(|o| o["gateway"].as_str().map(String::from))
                .collect();
            g.sort();
            g
        };
        if nh {
            assert_eq!(
                gws(&n),
                ["192.0.2.3", "198.51.100.2"],
                "the dead hop's object went"
            );
        }

        // The next hop comes back: a new object, its route installed.
        let r = fib.apply(&[best("10.5.0.0/24", "192.0.2.2")])?;
        assert_eq!((r.installed, r.errors.len()), (1, 0), "{r:?}");
        let k = ours(&n);
        let back = find(&k, "10.5.0.0/24").expect("installed");
        assert_mode(back, nh);
        assert_eq!(gateways(back), ["192.0.2.2"]);
        assert_eq!(k.len(), 8);
        Ok(())
    })
    .unwrap();
}

// IPv6 deletes are never held: the kernel would delete an object's IPv6
// routes one at a time anyway (slower than our datagrams of deletes), so
// a burst of them goes at once, with or without nexthop objects.
both_paths!(ipv6_deletes_go_at_once);
fn ipv6_deletes_go_at_once(nh: bool) {
    let Some((_lab, ns)) = lab("fib-v6-burst") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        let a = |i: usize| format!("fd00:7:{i:x}::/48");
        let load: Vec<FibChange> = (0..100).map(|i| best(&a(i), "2001:db8::2")).collect();
        let r = fib.apply(&load)?;
        assert_eq!((r.installed, r.errors.len()), (100, 0), "{r:?}");
        let r = fib.apply(&(0..80).map(|i| gone(&a(i))).collect::<Vec<_>>())?;
        assert_eq!((r.removed, r.errors.len()), (80, 0), "{r:?}");
        assert_eq!(fib.held_deletes(), 0);
        let k = ours(&n);
        assert_eq!(k.len(), 20, "{k:?}");
        assert!((80..100).all(|i| find(&k, &a(i)).is_some()));
        for r in &k {
            assert_mode(r, nh);
        }
        Ok(())
    })
    .unwrap();
}

// Held deletes that never add up to a whole next hop are sent as plain
// deletes by `release_held`; a held route someone else deletes meanwhile
// is simply gone.
both_paths!(held_deletes_are_released_as_plain_deletes);
fn held_deletes_are_released_as_plain_deletes(nh: bool) {
    let Some((_lab, ns)) = lab("fib-release") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        let a = |i: usize| format!("10.2.{i}.0/24");
        let load: Vec<FibChange> = (0..100).map(|i| best(&a(i), "192.0.2.2")).collect();
        fib.apply(&load)?;
        let mut mon = Monitor::open()?;
        let r = fib.apply(&(0..80).map(|i| gone(&a(i))).collect::<Vec<_>>())?;
        assert_eq!(fib.held_deletes(), if nh { 80 } else { 0 });
        assert_eq!(r.removed, if nh { 0 } else { 80 });
        if nh {
            n.ip(&["route", "del", "10.2.3.0/24", "proto", "202"])
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while fib.held_deletes() == 80 && Instant::now() < deadline {
                for ev in mon.wait(Duration::from_millis(200)).unwrap() {
                    assert_eq!(fib.on_event(&ev).unwrap(), None, "nothing restored");
                }
            }
            assert_eq!(
                fib.held_deletes(),
                79,
                "the route someone deleted is not held"
            );
        }
        let r = fib.release_held(usize::MAX)?;
        assert_eq!(
            (r.removed, r.errors.len()),
            (if nh { 79 } else { 0 }, 0),
            "{r:?}"
        );
        assert_eq!(fib.held_deletes(), 0);
        let k = ours(&n);
        assert_eq!(k.len(), 20, "{k:?}");
        assert!((80..100).all(|i| find(&k, &a(i)).is_some()));
        assert_eq!(fib.len(), 20);
        Ok(())
    })
    .unwrap();
}

both_paths!(ecmp_multipath_v4_v6_and_onlink);
fn ecmp_multipath_v4_v6_and_onlink(nh: bool) {
    let Some((_lab, ns)) = lab("fib-ecmp") else {
        return;
    };
    let n = ns.clone();
    let d0: u32 = ns
        .exec("cat", &["/sys/class/net/d0/ifindex"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ns.enter(move || {
        let mut fib = Fib::open(FibConfig {
            onlink: vec![OnLink {
                net: "100.64.0.0/24".parse().unwrap(),
                ifindex: d0,
            }],
            ..cfg_in(nh)
        })?;
        let r = fib.apply(&[
            ecmp("10.2.0.0/24", &["192.0.2.2", "198.51.100.2"]),
            ecmp("fd00:2::/48", &["2001:db8::2", "2001:db8:1::2"]),
            // Not a connected network: only on-link makes it installable.
            best("10.3.0.0/24", "100.64.0.1"),
            // RFC 8950: an IPv4 prefix over an IPv6 next hop (RTA_VIA).
            best("10.9.0.0/24", "2001:db8::2"),
        ])?;
        assert!(r.errors.is_empty(), "{r:?}");
        let k = ours(&n);
        assert_mode(find(&k, "10.2.0.0/24").unwrap(), nh);
        let mut g = gateways(find(&k, "10.2.0.0/24").unwrap());
        g.sort();
        assert_eq!(g, ["192.0.2.2", "198.51.100.2"]);
        let mut g = gateways(find(&k, "fd00:2::/48").unwrap());
        g.sort();
        assert_eq!(g, ["2001:db8:1::2", "2001:db8::2"]);
        let onl = find(&k, "10.3.0.0/24").unwrap();
        assert_mode(onl, nh);
        assert_eq!(onl["dev"], "d0");
        assert!(onl["flags"].to_string().contains("onlink"), "{onl}");
        let via = find(&k, "10.9.0.0/24").unwrap();
        assert_mode(via, nh);
        assert_eq!(gateways(via), ["2001:db8::2"], "{via}");
        if nh {
            // Hops 192.0.2.2, 198.51.100.2, 2001:db8::2, 2001:db8:1::2,
            // 100.64.0.1 and the two groups.
            let o = objects(&n);
            assert_eq!(o.len(), 7, "{o:?}");
            let onlink = o.iter().find(|x| x["gateway"] == "100.64.0.1").unwrap();
            assert!(onlink["flags"].to_string().contains("onlink"), "{onlink}");
        }
        // The dump reads back what was written, multipath included.
        let dumped = fib.dump_own()?;
        let mp = dumped
            .iter()
            .find(|r| r.prefix == p("fd00:2::/48"))
            .unwrap();
        assert_eq!(mp.hops.len(), 2);
        assert_eq!(mp.mtu, Some(1400));
        assert_eq!(mp.nh_id.is_some(), nh);

        // ECMP set shrinks to one: a plain route replaces the multipath one.
        let r = fib.apply(&[ecmp("10.2.0.0/24", &["198.51.100.2"])])?;
        assert_eq!(r.installed, 1);
        let k = ours(&n);
        assert_eq!(gateways(find(&k, "10.2.0.0/24").unwrap()), ["198.51.100.2"]);
        assert_mode(find(&k, "10.2.0.0/24").unwrap(), nh);
        // The v4 group went with its last route, and 192.0.2.2's object
        // with it (no other set uses that hop).
        if nh {
            let o = objects(&n);
            assert_eq!(o.len(), 5, "{o:?}");
            assert!(!o.iter().any(|x| x["gateway"] == "192.0.2.2"), "{o:?}");
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn blackhole_and_local_routes() {
    let Some((_lab, ns)) = lab("fib-bh") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg())?;
        let r = fib.install_blackhole(p("10.8.0.0/26"))?;
        assert_eq!(r.installed, 1);
        fib.install_blackhole(p("fd00:8::/122"))?;
        // Our own origination as best path: nothing installed, the
        // blackhole stays.
        let local = route("10.8.0.0/26", 0, "0.0.0.0");
        fib.apply(&[LocRibChange::Best {
            prefix: p("10.8.0.0/26"),
            best: local.clone(),
            multipath: vec![local],
        }
        .into()])?;
        let k = kernel(&n, &["proto", "202", "type", "blackhole"]);
        assert!(find(&k, "10.8.0.0/26").is_some(), "{k:?}");
        assert!(find(&k, "fd00:8::/122").is_some(), "{k:?}");
        let r = fib.remove(p("10.8.0.0/26"))?;
        assert_eq!(r.removed, 1);
        let k = kernel(&n, &["proto", "202", "type", "blackhole"]);
        assert!(find(&k, "10.8.0.0/26").is_none(), "{k:?}");
        Ok(())
    })
    .unwrap();
}

both_paths!(stale_dump_and_sweep_leave_other_protocols_alone);
fn stale_dump_and_sweep_leave_other_protocols_alone(nh: bool) {
    let Some((_lab, ns)) = lab("fib-stale") else {
        return;
    };
    // A previous run's nexthop objects (whatever the mode then), a route
    // using one, and another program's object.
    for args in [
        "id 2113929216 via 192.0.2.2 dev d0 proto 202",
        "id 2113929217 via 198.51.100.2 dev d1 proto 202",
        "id 2113929218 group 2113929216/2113929217 proto 202",
        "id 77 via 192.0.2.2 dev d0 proto static",
    ] {
        let mut a = vec!["nexthop", "add"];
        a.extend(args.split(' '));
        ns.ip(&a).unwrap();
    }
    ns.ip(&[
        "route",
        "add",
        "10.54.0.0/24",
        "nhid",
        "2113929218",
        "proto",
        "202",
    ])
    .unwrap();
    // A previous run's routes, and routes of other protocols.
    for args in [
        "10.50.0.0/24 via 192.0.2.2 proto 202",
        "10.51.0.0/24 via 192.0.2.2 proto 202",
        "fd00:51::/48 via 2001:db8::2 proto 202",
        "10.52.0.0/24 via 192.0.2.2 proto static",
        "10.51.0.0/24 via 192.0.2.5 proto bird metric 50",
        "10.53.0.0/24 via 192.0.2.2 proto 202 table 100",
    ] {
        let mut a = vec!["route", "add"];
        a.extend(args.split(' '));
        ns.ip(&a).unwrap();
    }
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        let mut dumped: Vec<String> = fib
            .dump_own()?
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        dumped.sort();
        assert_eq!(
            dumped,
            [
                "10.50.0.0/24",
                "10.51.0.0/24",
                "10.54.0.0/24",
                "fd00:51::/48"
            ]
        );
        assert_eq!(fib.stale_count(), 4);
        // Convergence re-installs one of them (identical next hop: still
        // written, with our MTU).
        let r = fib.apply(&[best("10.50.0.0/24", "192.0.2.2")])?;
        assert_eq!(r.installed, 1);
        // Until the sweep, the old route keeps forwarding on the old
        // objects (graceful restart), and new objects take other ids.
        assert!(find(&ours(&n), "10.54.0.0/24").is_some());
        assert_eq!(objects(&n).len(), if nh { 4 } else { 3 });
        let r = fib.sweep_stale()?;
        assert_eq!((r.removed, r.errors.len()), (3, 0), "{r:?}");
        let k = ours(&n);
        assert_eq!(k.len(), 1, "{k:?}");
        assert_mode(find(&k, "10.50.0.0/24").unwrap(), nh);
        assert_eq!(mtu_of(find(&k, "10.50.0.0/24").unwrap()), Some(1400));
        // The old objects are swept; ours of now and the other program's
        // stay.
        let o = objects(&n);
        assert_eq!(o.len(), if nh { 1 } else { 0 }, "{o:?}");
        assert!(!o
            .iter()
            .any(|x| x["id"].as_u64() >= Some(2113929216) && x["id"].as_u64() <= Some(2113929218)));
        let all = n.ip(&["-j", "nexthop", "show", "id", "77"])?;
        assert!(
            all.contains("\"id\":77"),
            "another program's object kept: {all}"
        );
        let all = kernel(&n, &[]);
        let other = find(&all, "10.52.0.0/24").expect("static route kept");
        assert_eq!(other["protocol"], "static");
        let bird = find(&all, "10.51.0.0/24").expect("bird's route of a swept prefix kept");
        assert_eq!(bird["protocol"], "bird");
        let t100 = n.ip(&["-j", "-4", "route", "show", "table", "100"])?;
        assert!(t100.contains("10.53.0.0/24"), "other table untouched");
        Ok(())
    })
    .unwrap();
}

both_paths!(unreachable_next_hop_is_reported_per_prefix);
fn unreachable_next_hop_is_reported_per_prefix(nh: bool) {
    let Some((_lab, ns)) = lab("fib-err") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        let r = fib.apply(&[
            best("10.4.0.0/24", "192.0.2.2"),
            best("10.4.1.0/24", "203.0.113.9"),
            best("10.4.2.0/24", "192.0.2.2"),
            best("fd00:4::/48", "2001:db8:99::1"),
            best("fd00:5::/48", "2001:db8::2"),
        ])?;
        assert_eq!(r.installed, 3, "{r:?}");
        let mut bad: Vec<(String, i32)> = r
            .errors
            .iter()
            .map(|e| (e.prefix.to_string(), e.errno))
            .collect();
        bad.sort();
        eprintln!(
            "{}",
            r.errors
                .iter()
                .map(|e| e.to_string() + "\n")
                .collect::<String>()
        );
        assert_eq!(bad[0], ("10.4.1.0/24".into(), libc::ENETUNREACH));
        assert_eq!(bad[1].0, "fd00:4::/48");
        assert_eq!(bad.len(), 2);
        let k = ours(&n);
        assert_eq!(k.len(), 3, "the rest of the batch applied: {k:?}");
        assert_eq!(
            fib.counters()
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        // Once the next hop is reachable, the same change goes in.
        n.add_addr("d1", "203.0.113.1/24")?;
        let r = fib.apply(&[best("10.4.1.0/24", "203.0.113.9")])?;
        assert_eq!((r.installed, r.errors.len()), (1, 0), "{r:?}");
        // A replace that fails leaves the prefix untracked, so the next
        // change is written even if it looks the same.
        let r = fib.apply(&[best("10.4.0.0/24", "203.0.114.9")])?;
        assert_eq!(r.errors.len(), 1);
        let r = fib.apply(&[best("10.4.0.0/24", "192.0.2.2")])?;
        assert_eq!(r.installed, 1, "{r:?}");
        Ok(())
    })
    .unwrap();
}

both_paths!(monitor_sees_foreign_delete_and_route_is_restored);
fn monitor_sees_foreign_delete_and_route_is_restored(nh: bool) {
    let Some((_lab, ns)) = lab("fib-mon") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut fib = Fib::open(cfg_in(nh))?;
        let mut mon = Monitor::open()?;
        fib.apply(&[best("10.6.0.0/24", "192.0.2.2")])?;
        // Our own install is seen, and ignored.
        let evs =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), mon.next()).await })??;
        for ev in &evs {
            assert!(fib.on_event(ev)?.is_none(), "own change acted on: {ev:?}");
        }
        n.ip(&["route", "del", "10.6.0.0/24", "proto", "202"])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut restored = false;
        while !restored && Instant::now() < deadline {
            let evs = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), mon.next()).await
            })??;
            for ev in &evs {
                if let Event::Route {
                    deleted: true,
                    route,
                    sender,
                } = ev
                {
                    assert_eq!(route.prefix, p("10.6.0.0/24"));
                    assert_ne!(*sender, fib.port());
                }
                if let Some(r) = fib.on_event(ev)? {
                    assert_eq!(r.installed, 1);
                    restored = true;
                }
            }
        }
        assert!(restored);
        assert_mode(find(&ours(&n), "10.6.0.0/24").unwrap(), nh);
        // A change by someone else (same protocol, other gateway) too.
        n.ip(&[
            "route",
            "replace",
            "10.6.0.0/24",
            "via",
            "192.0.2.9",
            "proto",
            "202",
        ])?;
        let mut evs = Vec::new();
        while evs.is_empty() {
            evs = mon.wait(Duration::from_secs(5))?;
        }
        let acted = evs
            .iter()
            .map(|e| fib.on_event(e))
            .collect::<std::io::Result<Vec<_>>>()?;
        assert!(acted.iter().any(Option::is_some));
        let k = ours(&n);
        assert_eq!(gateways(find(&k, "10.6.0.0/24").unwrap()), ["192.0.2.2"]);
        assert_mode(find(&k, "10.6.0.0/24").unwrap(), nh);
        // Link events: an MTU change on d0.
        n.ip(&["link", "set", "d0", "mtu", "1300"])?;
        let mut seen = false;
        for _ in 0..10 {
            for ev in mon.wait(Duration::from_millis(500))? {
                if let Event::Link { link, .. } = ev {
                    seen |= link.name == "d0" && link.mtu == 1300;
                }
            }
            if seen {
                break;
            }
        }
        assert!(seen, "link MTU change seen");
        Ok(())
    })
    .unwrap();
}

#[test]
fn mtu_detection_in_namespace() {
    let Some((_lab, ns)) = lab("fib-mtu") else {
        return;
    };
    ns.ip(&["link", "set", "d1", "mtu", "1400"]).unwrap();
    ns.enter(|| {
        use fib::mtu::{detect, Encap, Select};
        let pat = Select::Pattern("d?".into());
        assert_eq!(detect(&pat, Encap::None, false)?, Some(1400));
        assert_eq!(detect(&pat, Encap::Vxlan, false)?, Some(1350));
        let by_addr = Select::Address("192.0.2.1".parse().unwrap());
        assert_eq!(detect(&by_addr, Encap::Wireguard, true)?, Some(1420));
        Ok(())
    })
    .unwrap();
}

both_paths!(relink_restores_routes_after_link_down_and_retries_refused_ones);
/// IPv4 flushes the routes of a link that goes down without telling
/// anyone; `relink` (run when a link comes back up) puts ours back, and a
/// route the kernel refused while its next hop was unreachable is retried.
fn relink_restores_routes_after_link_down_and_retries_refused_ones(nh: bool) {
    let Some((_lab, ns)) = lab("fib-relink") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?;
        fib.apply(&[best("10.7.0.0/24", "192.0.2.2")])?;
        assert!(find(&ours(&n), "10.7.0.0/24").is_some());
        n.ip(&["link", "set", "d0", "down"])?;
        assert!(
            find(&ours(&n), "10.7.0.0/24").is_none(),
            "the kernel flushed the route with its link"
        );
        // While d0 is down its next hop is unreachable: refused, kept.
        let r = fib.apply(&[best("10.7.1.0/24", "192.0.2.3")])?;
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(fib.unresolved_count(), 1);
        n.ip(&["link", "set", "d0", "up"])?;
        let r = fib.relink()?;
        assert!(r.errors.is_empty(), "{r:?}");
        let k = ours(&n);
        assert_eq!(gateways(find(&k, "10.7.0.0/24").unwrap()), ["192.0.2.2"]);
        assert_eq!(gateways(find(&k, "10.7.1.0/24").unwrap()), ["192.0.2.3"]);
        assert_mode(find(&k, "10.7.0.0/24").unwrap(), nh);
        assert_mode(find(&k, "10.7.1.0/24").unwrap(), nh);
        assert_eq!(fib.unresolved_count(), 0);
        // Withdrawn while refused: not retried any more.
        n.ip(&["link", "set", "d0", "down"])?;
        fib.apply(&[best("10.7.2.0/24", "192.0.2.4")])?;
        fib.apply(&[gone("10.7.2.0/24")])?;
        assert_eq!(fib.unresolved_count(), 0);
        Ok(())
    })
    .unwrap();
}

/// With the sender filter, the FIB writer's own installs never reach the
/// monitor, and another process's delete still does.
#[test]
fn monitor_filter_drops_our_own_notifications_only() {
    let Some((_lab, ns)) = lab("fib-filter") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg())?;
        let mut mon = Monitor::open()?;
        mon.ignore_sender(fib.port())?;
        let changes: Vec<_> = (0..200)
            .map(|i| best(&format!("10.9.{i}.0/24"), "192.0.2.2"))
            .collect();
        assert_eq!(fib.apply(&changes)?.installed, 200);
        // The kernel's own routes (IPv6 link-local ones of the lab's links,
        // late on a busy machine) may show up: only ours must not.
        let quiet = mon.wait(Duration::from_millis(300))?;
        let ours = |e: &Event| {
            matches!(e, Event::Route { route, .. }
                if changes.iter().any(|c| c.prefix == route.prefix))
        };
        assert!(
            !quiet.iter().any(ours),
            "own installs reached the monitor: {quiet:?}"
        );
        n.ip(&["route", "del", "10.9.7.0/24", "proto", "202"])?;
        let mut seen = false;
        for _ in 0..10 {
            for ev in mon.wait(Duration::from_millis(300))? {
                if let Event::Route {
                    deleted: true,
                    route,
                    ..
                } = &ev
                {
                    seen |= route.prefix == p("10.9.7.0/24");
                }
            }
            if seen {
                break;
            }
        }
        assert!(seen, "a foreign delete must still be seen");
        Ok(())
    })
    .unwrap();
}

/// Feeds the monitor's events to the FIB until `done` holds of what it
/// re-installed, or 5 s pass; returns the routes re-installed.
fn feed_link_events(fib: &mut Fib, mon: &mut Monitor, done: impl Fn(usize) -> bool) -> usize {
    let mut installed = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(installed) && Instant::now() < deadline {
        for ev in mon.wait(Duration::from_millis(200)).unwrap() {
            if let Some(r) = fib.on_link_event(&ev).unwrap() {
                assert!(r.errors.is_empty(), "{r:?}");
                installed += r.installed;
            }
        }
    }
    installed
}

both_paths!(route_mtu_left_out_where_the_egress_link_has_it);
/// RTAX_MTU is written only where it differs from the egress link's MTU
/// (the kernel uses the link's when a route has none; the metric costs it
/// an allocation per route), and a link's MTU change re-decides.
fn route_mtu_left_out_where_the_egress_link_has_it(nh: bool) {
    let Some((_lab, ns)) = lab("fib-egress") else {
        return;
    };
    ns.ip(&["link", "set", "d1", "mtu", "1400"]).unwrap();
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(nh))?; // route MTU 1400
        let mut mon = Monitor::open()?;
        mon.ignore_sender(fib.port())?;
        let r = fib.apply(&[
            best("10.11.0.0/24", "192.0.2.2"),     // d0: 1500
            best("10.11.1.0/24", "198.51.100.2"),  // d1: 1400
            best("fd00:11::/48", "2001:db8:1::2"), // d1: 1400
            ecmp("10.11.2.0/24", &["192.0.2.2", "198.51.100.2"]),
        ])?;
        assert_eq!((r.installed, r.errors.len()), (4, 0), "{r:?}");
        let k = ours(&n);
        let mtu = |dst: &str| mtu_of(find(&k, dst).expect(dst));
        assert_eq!(mtu("10.11.0.0/24"), Some(1400), "below d0's 1500: written");
        assert_eq!(mtu("10.11.1.0/24"), None, "d1's own MTU: left out");
        assert_eq!(mtu("fd00:11::/48"), None, "d1's own MTU: left out");
        assert_eq!(mtu("10.11.2.0/24"), Some(1400), "one hop over d0: written");
        assert_mode(find(&k, "10.11.2.0/24").unwrap(), nh);
        // The kernel's answer for the route without the metric: d1's 1400.
        let got = n.ip(&["route", "get", "10.11.1.5"])?;
        assert!(!got.contains("mtu"), "{got}");
        // Which new addresses call for re-installing: one where our next
        // hops are, not a pod veth's link-local one.
        let addr = |ifindex: u32, net: &str| fib::msg::AddrInfo {
            ifindex,
            net: net.parse().unwrap(),
            flags: 0,
        };
        assert!(fib.next_hops_in(&addr(999, "192.0.2.77/24")));
        assert!(fib.next_hops_in(&addr(999, "2001:db8:1::9/64")));
        assert!(!fib.next_hops_in(&addr(999, "fe80::1/64")));
        assert!(!fib.next_hops_in(&addr(999, "203.0.113.1/24")));

        // d0 drops to 1400: its routes lose the metric.
        n.ip(&["link", "set", "d0", "mtu", "1400"])?;
        let redone = feed_link_events(&mut fib, &mut mon, |i| i >= 2);
        assert_eq!(redone, 2, "the d0 route and the ECMP route re-installed");
        let k = ours(&n);
        let mtu = |dst: &str| mtu_of(find(&k, dst).expect(dst));
        assert_eq!(mtu("10.11.0.0/24"), None);
        assert_eq!(mtu("10.11.2.0/24"), None);
        // d1 goes up to 9000: its routes need the metric again.
        n.ip(&["link", "set", "d1", "mtu", "9000"])?;
        let redone = feed_link_events(&mut fib, &mut mon, |i| i >= 3);
        assert_eq!(redone, 3);
        let k = ours(&n);
        let mtu = |dst: &str| mtu_of(find(&k, dst).expect(dst));
        assert_eq!(mtu("10.11.0.0/24"), None);
        assert_eq!(mtu("10.11.1.0/24"), Some(1400));
        assert_eq!(mtu("fd00:11::/48"), Some(1400));
        assert_eq!(mtu("10.11.2.0/24"), Some(1400));

        // Someone adds the metric to a route that has none: it is ours as
        // we wrote it no longer, and is restored without it.
        n.ip(&[
            "route",
            "replace",
            "10.11.0.0/24",
            "via",
            "192.0.2.2",
            "proto",
            "202",
            "mtu",
            "1400",
        ])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut restored = false;
        while !restored && Instant::now() < deadline {
            for ev in mon.wait(Duration::from_millis(200))? {
                restored |= fib.on_event(&ev)?.is_some();
            }
        }
        assert!(restored);
        assert_eq!(mtu_of(find(&ours(&n), "10.11.0.0/24").unwrap()), None);
        Ok(())
    })
    .unwrap();
}

/// Sends one datagram of messages with sequence numbers `first..=last`
/// (the last asks for the ACK) and returns the errors before that ACK.
fn send_and_ack(sock: &fib::sock::NlSocket, mut buf: Vec<u8>, at: usize, last: u32) -> Vec<i32> {
    use fib::msg;
    msg::add_flags(&mut buf, at, msg::NLM_F_ACK);
    sock.send(&buf).unwrap();
    let mut rx = Vec::with_capacity(1 << 16);
    let mut errors = Vec::new();
    loop {
        sock.recv(&mut rx).unwrap();
        for m in msg::messages(&rx) {
            if m.ty != msg::NLMSG_ERROR {
                continue;
            }
            let e = msg::parse_error(&m).unwrap();
            if e.errno != 0 {
                errors.push(e.errno);
            }
            if m.seq == last {
                return errors;
            }
        }
    }
}

/// The nexthop messages of `msg` as the kernel takes them: two single-hop
/// objects (one on-link), an ECMP group of them with weights 1 and 3, a
/// route by the group's id with its RTAX_MTU, all in one datagram (the
/// kernel processes it in order); read back by `ip` and by our parsers.
/// Deleting the group deletes the route using it.
#[test]
fn nexthop_objects_detected_and_messages_round_trip() {
    use fib::msg::{self, Hop, NexthopKind, RouteKind, RouteParams};
    let Some((_lab, ns)) = lab("fib-nhmsg") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let off = Fib::open(cfg())?;
        assert!(!off.nexthop_objects(), "off by default");
        let mut fib = Fib::open(FibConfig {
            nexthop_objects: fib::NexthopObjects::Auto,
            ..cfg()
        })?;
        assert!(fib.nexthop_objects(), "Linux >= 5.3 answers the dump");
        assert_eq!(fib.dump_nexthops()?, Some(vec![]));

        // (Not /sys/class/net: that sysfs is the host namespace's.)
        let idx = |dev: &str| -> u32 {
            let name = std::ffi::CString::new(dev).unwrap();
            // SAFETY: a NUL-terminated name.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        };
        let (d0, d1) = (idx("d0"), idx("d1"));
        let h1 = Hop {
            gateway: "192.0.2.2".parse().unwrap(),
            ifindex: d0,
            onlink: false,
        };
        let h2 = Hop {
            gateway: "203.0.113.9".parse().unwrap(),
            ifindex: d1,
            onlink: true,
        };
        let sock = fib::sock::NlSocket::open(1 << 20, false)?;
        let mut buf = Vec::new();
        msg::put_new_nexthop(&mut buf, 1, 202, 1_000_001, NexthopKind::Hop(h1));
        msg::put_new_nexthop(&mut buf, 2, 202, 1_000_002, NexthopKind::Hop(h2));
        let group = [(1_000_001, 1), (1_000_002, 3)];
        msg::put_new_nexthop(&mut buf, 3, 202, 1_000_003, NexthopKind::Group(&group));
        let params = RouteParams {
            protocol: 202,
            table: 254,
            mtu: Some(1400),
            priority: None,
        };
        let at = msg::put_new_route(
            &mut buf,
            4,
            &params,
            &p("10.9.0.0/24"),
            RouteKind::Nexthop(1_000_003),
        );
        assert_eq!(send_and_ack(&sock, buf, at, 4), Vec::<i32>::new());

        let nh: Value =
            serde_json::from_str(&n.ip(&["-j", "-d", "nexthop", "show"]).unwrap()).unwrap();
        let nh = nh.as_array().unwrap();
        assert_eq!(nh.len(), 3, "{nh:?}");
        let g = nh.iter().find(|o| o["id"] == 1_000_003).expect("the group");
        assert_eq!(g["group"][1]["weight"], 3, "{g}");
        let o2 = nh.iter().find(|o| o["id"] == 1_000_002).unwrap();
        assert_eq!(o2["flags"], serde_json::json!(["onlink"]), "{o2}");
        let k = ours(&n);
        let r = find(&k, "10.9.0.0/24").expect("the route by nexthop id");
        assert_eq!(r["nhid"], 1_000_003, "{r}");
        assert_eq!(mtu_of(r), Some(1400));

        // Our parsers read the kernel's own answers.
        let mut dumped = fib.dump_nexthops()?.unwrap();
        dumped.sort_by_key(|o| o.id);
        assert_eq!(
            dumped.iter().map(|o| o.id).collect::<Vec<_>>(),
            [1_000_001, 1_000_002, 1_000_003]
        );
        assert_eq!((dumped[0].hop, dumped[1].hop), (Some(h1), Some(h2)));
        assert_eq!(dumped[2].group, [(1_000_001, 1), (1_000_002, 3)]);
        let routes = fib.dump_own()?;
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].nh_id, Some(1_000_003));
        assert_eq!(routes[0].mtu, Some(1400));
        assert_eq!(
            routes[0].hops.len(),
            2,
            "the kernel expands the group: {routes:?}"
        );

        // Kernel semantics the writer must live with: deleting an object
        // deletes the routes using it.
        let mut buf = Vec::new();
        let at = msg::put_del_nexthop(&mut buf, 5, 1_000_003);
        assert_eq!(send_and_ack(&sock, buf, at, 5), Vec::<i32>::new());
        assert!(
            find(&ours(&n), "10.9.0.0/24").is_none(),
            "route gone with its object"
        );
        Ok(())
    })
    .unwrap();
}

/// Feeds the monitor's events to the FIB until it has re-installed `want`
/// routes or 5 s pass; returns how many it re-installed.
fn feed_events(fib: &mut Fib, mon: &mut Monitor, want: usize) -> usize {
    let mut installed = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while installed < want && Instant::now() < deadline {
        for ev in mon.wait(Duration::from_millis(200)).unwrap() {
            if let Some(r) = fib.on_event(&ev).unwrap() {
                assert!(r.errors.is_empty(), "{r:?}");
                installed += r.installed;
            }
        }
    }
    installed
}

fn object_id(ns: &Netns, gateway: Option<&str>) -> u64 {
    let o = objects(ns);
    let found = o.iter().find(|x| match gateway {
        Some(g) => x["gateway"] == g,
        None => x["group"].is_array(),
    });
    found.unwrap_or_else(|| panic!("no object {gateway:?}: {o:?}"))["id"]
        .as_u64()
        .unwrap()
}

/// Someone deletes our nexthop objects (`ip nexthop del`): the kernel
/// deletes the routes using them, or shrinks the groups they are in; the
/// notification makes the writer re-create them and re-install the routes.
#[test]
fn nexthop_object_deleted_by_someone_is_repaired() {
    let Some((_lab, ns)) = lab("fib-nhdel") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(true))?;
        let mut mon = Monitor::open()?;
        mon.ignore_sender(fib.port())?;
        let r = fib.apply(&[
            best("10.20.0.0/24", "192.0.2.2"),
            ecmp("10.21.0.0/24", &["192.0.2.2", "198.51.100.2"]),
        ])?;
        assert_eq!((r.installed, r.errors.len()), (2, 0), "{r:?}");
        assert_eq!(objects(&n).len(), 3);

        // The shared hop: its single-hop route goes, the group shrinks.
        let hop = object_id(&n, Some("192.0.2.2")).to_string();
        n.ip(&["nexthop", "del", "id", &hop])?;
        assert!(
            find(&ours(&n), "10.20.0.0/24").is_none(),
            "route went with its object"
        );
        assert!(feed_events(&mut fib, &mut mon, 1) >= 1);
        let k = ours(&n);
        let single = find(&k, "10.20.0.0/24").expect("restored");
        assert_eq!(single["nhid"].as_u64(), Some(hop.parse().unwrap()));
        let mut g = gateways(find(&k, "10.21.0.0/24").unwrap());
        g.sort();
        assert_eq!(g, ["192.0.2.2", "198.51.100.2"], "the group whole again");

        // The group itself: its route goes with it.
        let group = object_id(&n, None).to_string();
        n.ip(&["nexthop", "del", "id", &group])?;
        assert!(find(&ours(&n), "10.21.0.0/24").is_none());
        assert!(feed_events(&mut fib, &mut mon, 1) >= 1);
        let k = ours(&n);
        let mut g = gateways(find(&k, "10.21.0.0/24").expect("restored"));
        g.sort();
        assert_eq!(g, ["192.0.2.2", "198.51.100.2"]);
        assert_eq!(objects(&n).len(), 3);
        assert!(
            fib.counters()
                .restored
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 2
        );
        Ok(())
    })
    .unwrap();
}

/// A link going down takes its nexthop objects, the routes using them and
/// its hops in groups along, without a notification; nothing comes back
/// with the link by itself. `relink` re-creates and re-installs them.
#[test]
fn nexthop_objects_come_back_after_link_down_up() {
    let Some((_lab, ns)) = lab("fib-nhlink") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg_in(true))?;
        let r = fib.apply(&[
            best("10.30.0.0/24", "198.51.100.2"),
            best("10.31.0.0/24", "192.0.2.2"),
            ecmp("10.32.0.0/24", &["192.0.2.2", "198.51.100.2"]),
        ])?;
        assert_eq!((r.installed, r.errors.len()), (3, 0), "{r:?}");
        assert_eq!(objects(&n).len(), 3);
        n.ip(&["link", "set", "d1", "down"])?;
        let k = ours(&n);
        assert!(find(&k, "10.30.0.0/24").is_none(), "{k:?}");
        assert_eq!(gateways(find(&k, "10.32.0.0/24").unwrap()), ["192.0.2.2"]);
        assert_eq!(objects(&n).len(), 2, "d1's object gone, the group shrunk");
        n.ip(&["link", "set", "d1", "up"])?;
        assert!(
            find(&ours(&n), "10.30.0.0/24").is_none(),
            "not back by itself"
        );
        let r = fib.relink()?;
        assert!(r.errors.is_empty(), "{r:?}");
        let k = ours(&n);
        for dst in ["10.30.0.0/24", "10.31.0.0/24", "10.32.0.0/24"] {
            assert_mode(find(&k, dst).expect(dst), true);
        }
        let mut g = gateways(find(&k, "10.32.0.0/24").unwrap());
        g.sort();
        assert_eq!(g, ["192.0.2.2", "198.51.100.2"]);
        assert_eq!(objects(&n).len(), 3);
        Ok(())
    })
    .unwrap();
}
