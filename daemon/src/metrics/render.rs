//! The text exposition of one scrape: a pure function of a [`Snapshot`].

use petrel_bgp::bfd::SessionSnapshot as BfdSnapshot;
use petrel_bgp::speaker::PeerSnapshot;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::Metrics;

/// One scrape's values.
pub struct Snapshot<'a> {
    pub m: &'a Metrics,
    pub peers: &'a [PeerSnapshot],
    pub bfd: &'a [BfdSnapshot],
}

pub(super) fn head(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

/// Label values escaped per the exposition format.
pub(super) fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// RFC 4271 §8.2.2's states as numbers, Idle = 1 … Established = 6.
fn state_number(s: petrel_bgp::fsm::State) -> u8 {
    use petrel_bgp::fsm::State::*;
    match s {
        Idle => 1,
        Connect => 2,
        Active => 3,
        OpenSent => 4,
        OpenConfirm => 5,
        Established => 6,
    }
}

/// BFD (RFC 5880): sessions by state, and per session its state, flaps,
/// detection time and packet counters.
fn render_bfd(out: &mut String, sessions: &[BfdSnapshot]) {
    use petrel_bgp::bfd::State;
    head(
        out,
        "petrel_bfd_sessions",
        "gauge",
        "BFD sessions by state (RFC 5880 4.1).",
    );
    for st in [State::AdminDown, State::Down, State::Init, State::Up] {
        let n = sessions.iter().filter(|s| s.state == st).count();
        let _ = writeln!(out, "petrel_bfd_sessions{{state=\"{}\"}} {n}", st.name());
    }
    let label =
        |s: &BfdSnapshot| format!("peer=\"{}\",multihop=\"{}\"", s.key.remote, s.key.multihop);
    head(
        out,
        "petrel_bfd_session_up",
        "gauge",
        "1 while the BFD session is Up.",
    );
    for s in sessions {
        let _ = writeln!(
            out,
            "petrel_bfd_session_up{{{}}} {}",
            label(s),
            (s.state == State::Up) as u8
        );
    }
    head(
        out,
        "petrel_bfd_detection_time_seconds",
        "gauge",
        "The detection time (RFC 5880 6.8.4: the peer's multiplier times the agreed interval); absent before the first packet.",
    );
    for s in sessions {
        if let Some(d) = s.detection_time {
            let _ = writeln!(
                out,
                "petrel_bfd_detection_time_seconds{{{}}} {}",
                label(s),
                d.as_secs_f64()
            );
        }
    }
    for (name, help, get) in [
        (
            "petrel_bfd_flaps_total",
            "Transitions of the BFD session out of Up.",
            (|s: &BfdSnapshot| s.stats.flaps) as fn(&BfdSnapshot) -> u64,
        ),
        (
            "petrel_bfd_packets_sent_total",
            "BFD Control packets sent.",
            |s| s.stats.tx,
        ),
        (
            "petrel_bfd_packets_received_total",
            "BFD Control packets received and accepted.",
            |s| s.stats.rx,
        ),
        (
            "petrel_bfd_packets_discarded_total",
            "BFD Control packets discarded by the rules of RFC 5880 6.8.6 and 6.7.",
            |s| s.stats.discarded,
        ),
        (
            "petrel_bfd_auth_failures_total",
            "BFD Control packets discarded for their authentication (RFC 5880 6.7): a key or type unlike the peer's.",
            |s| s.stats.auth_failures,
        ),
    ] {
        head(out, name, "counter", help);
        for s in sessions {
            let _ = writeln!(out, "{name}{{{}}} {}", label(s), get(s));
        }
    }
}

/// The text exposition (format 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let m = s.m;
    let mut out = String::with_capacity(8 << 10);
    head(
        &mut out,
        "petrel_build_info",
        "gauge",
        "petreld's version; always 1.",
    );
    let _ = writeln!(
        out,
        "petrel_build_info{{version=\"{}\",node=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        esc(&m.node)
    );
    head(
        &mut out,
        "petrel_ready",
        "gauge",
        "1 once the first full sync is done.",
    );
    let _ = writeln!(out, "petrel_ready {}", m.health.is_ready() as u8);
    head(
        &mut out,
        "petrel_degraded",
        "gauge",
        "1 while something is wrong (see /readyz for the reasons).",
    );
    let _ = writeln!(out, "petrel_degraded {}", !m.health.is_healthy() as u8);

    head(&mut out, "petrel_bgp_peer_state", "gauge", "BGP session state (RFC 4271 8.2.2): 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established.");
    for p in s.peers {
        let _ = writeln!(
            out,
            "petrel_bgp_peer_state{{peer=\"{}\",asn=\"{}\"}} {}",
            p.address,
            p.asn,
            state_number(p.state)
        );
    }
    head(
        &mut out,
        "petrel_bgp_peer_established",
        "gauge",
        "1 while the session is Established.",
    );
    for p in s.peers {
        let up = p.state == petrel_bgp::fsm::State::Established;
        let _ = writeln!(
            out,
            "petrel_bgp_peer_established{{peer=\"{}\",asn=\"{}\"}} {}",
            p.address, p.asn, up as u8
        );
    }
    for (name, help, get) in [
        (
            "petrel_bgp_prefixes_received",
            "Prefixes received from the peer.",
            (|p: &PeerSnapshot| p.received) as fn(&PeerSnapshot) -> u64,
        ),
        (
            "petrel_bgp_prefixes_accepted",
            "Prefixes from the peer accepted by import policy.",
            |p| p.accepted,
        ),
        (
            "petrel_bgp_prefixes_advertised",
            "Prefixes advertised to the peer.",
            |p| p.advertised,
        ),
    ] {
        head(&mut out, name, "gauge", help);
        for p in s.peers {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", p.address, get(p));
        }
    }

    render_bfd(&mut out, s.bfd);

    let f = &m.fib;
    for (name, ty, help, v) in [
        (
            "petrel_fib_operations_total",
            "counter",
            "Route messages sent to the kernel.",
            &f.ops,
        ),
        (
            "petrel_fib_errors_total",
            "counter",
            "Route messages the kernel refused.",
            &f.errors,
        ),
        (
            "petrel_fib_batches_total",
            "counter",
            "Netlink datagrams of route messages sent.",
            &f.batches,
        ),
        (
            "petrel_fib_restored_total",
            "counter",
            "Routes of petrel restored after another process deleted or changed them.",
            &f.restored,
        ),
        (
            "petrel_fib_routes",
            "gauge",
            "Routes petrel holds in the kernel FIB (blackholes included).",
            &f.routes,
        ),
    ] {
        head(&mut out, name, ty, help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }

    let mtu = m.mtu.lock().unwrap_or_else(|e| e.into_inner()).clone();
    head(
        &mut out,
        "petrel_pod_mtu",
        "gauge",
        "The pod MTU written for petrel-ipam (0: none).",
    );
    let _ = writeln!(out, "petrel_pod_mtu {}", mtu.pod_mtu.unwrap_or(0));
    head(
        &mut out,
        "petrel_host_mtu",
        "gauge",
        "The host MTU the pod MTU derives from (0: not detected).",
    );
    let _ = writeln!(
        out,
        "petrel_host_mtu{{interface=\"{}\"}} {}",
        esc(mtu.interface.as_deref().unwrap_or("")),
        mtu.host_mtu.unwrap_or(0)
    );

    m.store.render(&mut out);
    head(
        &mut out,
        "petrel_ipam_blocks",
        "gauge",
        "IPAM blocks affine to this node.",
    );
    let _ = writeln!(
        out,
        "petrel_ipam_blocks {}",
        m.ipam.blocks.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "petrel_ipam_addresses",
        "gauge",
        "Addresses allocated on this node.",
    );
    let _ = writeln!(
        out,
        "petrel_ipam_addresses {}",
        m.ipam.addresses.load(Ordering::Relaxed)
    );
    for (name, help, v) in [
        (
            "petrel_cluster_full_syncs_total",
            "Full (paged) reads of the node's datastore records: at start and after a watch was lost.",
            &m.ipam.full_syncs,
        ),
        (
            "petrel_cluster_events_total",
            "Datastore watch events applied to the node's model of the cluster.",
            &m.ipam.events,
        ),
        (
            "petrel_cluster_derivations_total",
            "Times the node derived its peers or its routes again.",
            &m.ipam.derivations,
        ),
    ] {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use std::sync::Arc;
    use std::time::Duration;

    fn metrics() -> Metrics {
        Metrics {
            health: Arc::new(Health::new()),
            fib: Arc::default(),
            mtu: Arc::default(),
            store: Arc::default(),
            ipam: Arc::default(),
            node: "n1".into(),
        }
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map(str::to_string)
    }

    #[test]
    fn renders_peers_fib_mtu_and_ipam() {
        let m = metrics();
        m.fib.ops.store(7, Ordering::Relaxed);
        m.ipam.set(2, 5);
        m.mtu.lock().unwrap().pod_mtu = Some(1480);
        let peers = [PeerSnapshot {
            address: "192.0.2.1".parse().unwrap(),
            asn: 65001,
            state: petrel_bgp::fsm::State::Established,
            uptime: Duration::from_secs(3),
            received: 10,
            accepted: 9,
            advertised: 4,
            last_error: None,
        }];
        let t = render(&Snapshot {
            m: &m,
            peers: &peers,
            bfd: &[],
        });
        assert_eq!(
            value(
                &t,
                "petrel_bgp_peer_state{peer=\"192.0.2.1\",asn=\"65001\"}"
            )
            .as_deref(),
            Some("6")
        );
        assert_eq!(
            value(&t, "petrel_bgp_prefixes_accepted{peer=\"192.0.2.1\"}").as_deref(),
            Some("9")
        );
        assert_eq!(
            value(&t, "petrel_fib_operations_total").as_deref(),
            Some("7")
        );
        assert_eq!(value(&t, "petrel_pod_mtu").as_deref(), Some("1480"));
        assert_eq!(value(&t, "petrel_ipam_addresses").as_deref(), Some("5"));
        assert_eq!(value(&t, "petrel_ready").as_deref(), Some("0"));
        // Every sample line belongs to a declared family.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(t.contains(&format!("# TYPE {family} ")), "{l}");
        }
    }

    #[test]
    fn renders_bfd_sessions() {
        use petrel_bgp::bfd::{Diag, PeerKey, State};
        let m = metrics();
        let snap = |remote: &str, state: State, flaps: u64| BfdSnapshot {
            key: PeerKey::single_hop(remote.parse().unwrap()),
            local: None,
            source_port: 49152,
            state,
            remote_state: state,
            local_diag: Diag::NoDiagnostic,
            remote_diag: Diag::NoDiagnostic,
            local_discriminator: 1,
            remote_discriminator: 2,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            tx_interval: Duration::from_millis(300),
            remote_min_rx: Duration::from_millis(300),
            remote_desired_min_tx: Duration::from_millis(300),
            remote_detect_mult: 3,
            detection_time: (state == State::Up).then_some(Duration::from_millis(900)),
            uptime: None,
            stats: petrel_bgp::bfd::session::Stats {
                tx: 10,
                rx: 9,
                discarded: 1,
                auth_failures: 1,
                flaps,
            },
            auth: None,
            control_plane_independent: false,
        };
        let bfd = [
            snap("192.0.2.1", State::Up, 2),
            snap("192.0.2.2", State::Down, 0),
        ];
        let t = render(&Snapshot {
            m: &m,
            peers: &[],
            bfd: &bfd,
        });
        assert_eq!(
            value(&t, "petrel_bfd_sessions{state=\"Up\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "petrel_bfd_sessions{state=\"AdminDown\"}").as_deref(),
            Some("0")
        );
        let l = "{peer=\"192.0.2.1\",multihop=\"false\"}";
        assert_eq!(
            value(&t, &format!("petrel_bfd_flaps_total{l}")).as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, &format!("petrel_bfd_detection_time_seconds{l}")).as_deref(),
            Some("0.9")
        );
        assert_eq!(
            value(&t, &format!("petrel_bfd_auth_failures_total{l}")).as_deref(),
            Some("1")
        );
        assert!(!t.contains("petrel_bfd_detection_time_seconds{peer=\"192.0.2.2\""));
        for l in t.lines().filter(|l| l.starts_with("petrel_bfd")) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }
}
