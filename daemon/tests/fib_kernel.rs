//! The FIB writer against a real kernel, each test in a network namespace
//! of its own: an interface `d0` (192.0.2.1/24, 2001:db8::1/64) and
//! `d1` (198.51.100.1/24, 2001:db8:1::1/64) hold the next hops' networks.

use petrel_bgp::rib::{AttrSet, LocRibChange, PeerId, Route};
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

fn best(prefix: &str, nh: &str) -> LocRibChange {
    let r = route(prefix, 1, nh);
    LocRibChange::Best {
        prefix: p(prefix),
        best: r.clone(),
        multipath: vec![r],
    }
}

fn ecmp(prefix: &str, nhs: &[&str]) -> LocRibChange {
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
}

fn gone(prefix: &str) -> LocRibChange {
    LocRibChange::Unreachable { prefix: p(prefix) }
}

fn cfg() -> FibConfig {
    FibConfig {
        mtu: Some(1400),
        ..FibConfig::default()
    }
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

#[test]
fn install_replace_delete_v4_v6() {
    let Some((_lab, ns)) = lab("fib-ird") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg())?;
        let r = fib.apply(&[
            best("10.1.0.0/24", "192.0.2.2"),
            best("fd00:1::/48", "2001:db8::2"),
            best("10.1.1.0/24", "192.0.2.2"),
        ])?;
        assert_eq!((r.installed, r.errors.len()), (3, 0), "{r:?}");
        let k = ours(&n);
        let v4 = find(&k, "10.1.0.0/24").expect("v4 route installed");
        assert_eq!(gateways(v4), ["192.0.2.2"]);
        assert_eq!(mtu_of(v4), Some(1400));
        let v6 = find(&k, "fd00:1::/48").expect("v6 route installed");
        assert_eq!(gateways(v6), ["2001:db8::2"]);
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
        Ok(())
    })
    .unwrap();
}

#[test]
fn ecmp_multipath_v4_v6_and_onlink() {
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
            ..cfg()
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
        let mut g = gateways(find(&k, "10.2.0.0/24").unwrap());
        g.sort();
        assert_eq!(g, ["192.0.2.2", "198.51.100.2"]);
        let mut g = gateways(find(&k, "fd00:2::/48").unwrap());
        g.sort();
        assert_eq!(g, ["2001:db8:1::2", "2001:db8::2"]);
        let onl = find(&k, "10.3.0.0/24").unwrap();
        assert_eq!(onl["dev"], "d0");
        assert!(onl["flags"].to_string().contains("onlink"), "{onl}");
        let via = find(&k, "10.9.0.0/24").unwrap();
        assert_eq!(gateways(via), ["2001:db8::2"], "{via}");
        // The dump reads back what was written, multipath included.
        let dumped = fib.dump_own()?;
        let mp = dumped
            .iter()
            .find(|r| r.prefix == p("fd00:2::/48"))
            .unwrap();
        assert_eq!(mp.hops.len(), 2);
        assert_eq!(mp.mtu, Some(1400));

        // ECMP set shrinks to one: a plain route replaces the multipath one.
        let r = fib.apply(&[ecmp("10.2.0.0/24", &["198.51.100.2"])])?;
        assert_eq!(r.installed, 1);
        let k = ours(&n);
        assert_eq!(gateways(find(&k, "10.2.0.0/24").unwrap()), ["198.51.100.2"]);
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
        }])?;
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

#[test]
fn stale_dump_and_sweep_leave_other_protocols_alone() {
    let Some((_lab, ns)) = lab("fib-stale") else {
        return;
    };
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
        let mut fib = Fib::open(cfg())?;
        let mut dumped: Vec<String> = fib
            .dump_own()?
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        dumped.sort();
        assert_eq!(dumped, ["10.50.0.0/24", "10.51.0.0/24", "fd00:51::/48"]);
        assert_eq!(fib.stale_count(), 3);
        // Convergence re-installs one of them (identical next hop: still
        // written, with our MTU).
        let r = fib.apply(&[best("10.50.0.0/24", "192.0.2.2")])?;
        assert_eq!(r.installed, 1);
        let r = fib.sweep_stale()?;
        assert_eq!((r.removed, r.errors.len()), (2, 0), "{r:?}");
        let k = ours(&n);
        assert_eq!(k.len(), 1, "{k:?}");
        assert_eq!(mtu_of(find(&k, "10.50.0.0/24").unwrap()), Some(1400));
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

#[test]
fn unreachable_next_hop_is_reported_per_prefix() {
    let Some((_lab, ns)) = lab("fib-err") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg())?;
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

#[test]
fn monitor_sees_foreign_delete_and_route_is_restored() {
    let Some((_lab, ns)) = lab("fib-mon") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut fib = Fib::open(cfg())?;
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
        assert!(find(&ours(&n), "10.6.0.0/24").is_some());
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

/// IPv4 flushes the routes of a link that goes down without telling
/// anyone; `relink` (run when a link comes back up) puts ours back, and a
/// route the kernel refused while its next hop was unreachable is retried.
#[test]
fn relink_restores_routes_after_link_down_and_retries_refused_ones() {
    let Some((_lab, ns)) = lab("fib-relink") else {
        return;
    };
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg())?;
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
        let quiet = mon.wait(Duration::from_millis(300))?;
        assert!(
            !quiet.iter().any(|e| matches!(e, Event::Route { .. })),
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

/// RTAX_MTU is written only where it differs from the egress link's MTU
/// (the kernel uses the link's when a route has none; the metric costs it
/// an allocation per route), and a link's MTU change re-decides.
#[test]
fn route_mtu_left_out_where_the_egress_link_has_it() {
    let Some((_lab, ns)) = lab("fib-egress") else {
        return;
    };
    ns.ip(&["link", "set", "d1", "mtu", "1400"]).unwrap();
    let n = ns.clone();
    ns.enter(move || {
        let mut fib = Fib::open(cfg())?; // route MTU 1400
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
