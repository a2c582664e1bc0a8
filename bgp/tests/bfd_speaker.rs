//! BFD under BGP (RFC 5882) with two real speakers on loopback: 127.0.0.1
//! runs BFD for its peer 127.0.0.2; the BFD endpoint at 127.0.0.2 is a
//! hand-driven sans-IO session, so the test decides when it falls silent
//! or says AdminDown while 127.0.0.2's BGP speaker carries on.

use petrel_bgp::bfd::{BfdConfig, Session, SessionConfig, State};
use petrel_bgp::fsm::State as BgpState;
use petrel_bgp::speaker::{BfdSettings, PeerSettings, Speaker, SpeakerConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn ports() -> (u16, u16) {
    let base = 30_000 + (std::process::id() % 2000) as u16 * 4;
    (base, base + 2)
}

async fn speaker(
    local: IpAddr,
    asn: u32,
    bgp_port: u16,
    bfd_port: u16,
    peer: PeerSettings,
) -> Speaker {
    let cfg = SpeakerConfig {
        local_as: asn,
        router_id: match local {
            IpAddr::V4(v) => v,
            _ => unreachable!(),
        },
        cluster_id: None,
        listen: vec![SocketAddr::new(local, bgp_port)],
        graceful_restart: None,
        max_paths: 1,
        threads: 1,
        bfd: BfdConfig {
            listen: vec![local],
            single_hop_port: bfd_port,
            multihop_port: bfd_port + 1,
        },
    };
    let (s, mut fib) = Speaker::start(cfg).await.unwrap();
    tokio::spawn(async move { while fib.recv().await.is_some() {} });
    s.add_peer(peer).await.unwrap();
    s
}

fn peer(addr: IpAddr, asn: u32, port: u16, local: IpAddr) -> PeerSettings {
    let mut p = PeerSettings::new(addr, asn);
    p.port = port;
    p.local_address = Some(local);
    p.hold_time = 30;
    p
}

/// The BFD endpoint of 127.0.0.2, driven by hand.
struct ManualBfd {
    session: Session,
    rx: UdpSocket,
    tx: UdpSocket,
    dest: SocketAddr,
}

impl ManualBfd {
    fn new(port: u16) -> Self {
        let rx = UdpSocket::bind((B, port)).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind((B, 0)).unwrap();
        tx.set_ttl(255).unwrap();
        // 100 ms × 5: room for a loaded machine before a spurious Down.
        let cfg = SessionConfig::new(Duration::from_millis(100), Duration::from_millis(100), 5);
        Self {
            session: Session::new(cfg, 0xb0b, 7, Instant::now()),
            rx,
            tx,
            dest: SocketAddr::new(A, port),
        }
    }

    async fn run(&mut self, d: Duration, speak: bool) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            let now = Instant::now();
            let mut buf = [0u8; 64];
            while let Ok(n) = self.rx.recv(&mut buf) {
                let _ = self.session.handle_packet(now, &buf[..n]);
            }
            self.session.handle_timeout(now);
            while let Some(b) = self.session.poll_transmit(now) {
                if speak {
                    self.tx.send_to(&b, self.dest).unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn bgp_state(s: &Speaker) -> (BgpState, Option<String>) {
    let p = &s.peers().await.unwrap()[0];
    (p.state, p.last_error.clone())
}

/// Runs the manual endpoint until `f` holds for the speaker's peer.
async fn until(
    bfd: &mut ManualBfd,
    s: &Speaker,
    speak: bool,
    within: Duration,
    f: impl Fn(BgpState) -> bool,
) -> (BgpState, Option<String>) {
    let end = Instant::now() + within;
    loop {
        let st = bgp_state(s).await;
        if f(st.0) {
            return st;
        }
        assert!(Instant::now() < end, "timed out in {st:?}");
        bfd.run(Duration::from_millis(50), speak).await;
    }
}

/// Runs the manual endpoint until both ends say Up: the endpoint goes Up
/// on petrel's Init, petrel only on the endpoint's next packet (RFC 5880
/// §6.8.6's three-way handshake), which a loaded machine may delay.
async fn both_up(bfd: &mut ManualBfd, s: &Speaker) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let petrel_up = s
            .bfd_sessions()
            .await
            .unwrap()
            .first()
            .is_some_and(|x| x.state == State::Up);
        if petrel_up && bfd.session.state() == State::Up {
            return;
        }
        assert!(Instant::now() < end, "BFD not Up on both ends within 10 s");
        bfd.run(Duration::from_millis(50), true).await;
    }
}

#[tokio::test]
async fn bfd_down_ends_the_bgp_session_with_cease_bfd_down() {
    let (bgp_port, bfd_port) = ports();
    let mut pa = peer(B, 65002, bgp_port, A);
    pa.bfd = Some(BfdSettings {
        min_rx: Duration::from_millis(100),
        min_tx: Duration::from_millis(100),
        multiplier: 5,
        multihop: false,
        auth: None,
    });
    let a = speaker(A, 65001, bgp_port, bfd_port, pa).await;
    let b = speaker(B, 65002, bgp_port, bfd_port, peer(A, 65001, bgp_port, B)).await;
    let mut bfd = ManualBfd::new(bfd_port);
    let secs = Duration::from_secs(20);
    until(&mut bfd, &a, true, secs, |s| s == BgpState::Established).await;
    both_up(&mut bfd, &a).await;
    let snap = a.bfd_sessions().await.unwrap();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].state, State::Up);
    assert!(!snap[0].control_plane_independent, "C bit clear");
    // The BFD endpoint falls silent; BGP at 127.0.0.2 carries on, so only
    // BFD can tell 127.0.0.1 that something is wrong.
    let (state, err) = until(&mut bfd, &a, false, Duration::from_secs(5), |s| {
        s != BgpState::Established
    })
    .await;
    assert_ne!(state, BgpState::Established);
    let err = err.unwrap();
    assert!(
        err.contains("sent NOTIFICATION") && err.contains("BFD down"),
        "{err}"
    );
    // RFC 9384: the peer is told why.
    let mut err_b = None;
    for _ in 0..100 {
        err_b = bgp_state(&b).await.1;
        if err_b.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err_b = err_b.unwrap();
    assert!(
        err_b.contains("received NOTIFICATION") && err_b.contains("BFD down"),
        "{err_b}"
    );
}

#[tokio::test]
async fn a_peer_going_admin_down_leaves_the_bgp_session_up() {
    let (bgp_port, bfd_port) = ports();
    let (bgp_port, bfd_port) = (bgp_port + 1, bfd_port + 20);
    let mut pa = peer(B, 65002, bgp_port, A);
    pa.bfd = Some(BfdSettings {
        min_rx: Duration::from_millis(100),
        min_tx: Duration::from_millis(100),
        multiplier: 5,
        multihop: false,
        auth: None,
    });
    let a = speaker(A, 65001, bgp_port, bfd_port, pa).await;
    let _b = speaker(B, 65002, bgp_port, bfd_port, peer(A, 65001, bgp_port, B)).await;
    let mut bfd = ManualBfd::new(bfd_port);
    until(&mut bfd, &a, true, Duration::from_secs(20), |s| {
        s == BgpState::Established
    })
    .await;
    both_up(&mut bfd, &a).await;
    // RFC 5882 §3.2: "the receiving system MUST NOT ... declare the session down".
    bfd.session.set_admin_down(Instant::now(), true);
    bfd.run(Duration::from_millis(1500), true).await;
    let snap = a.bfd_sessions().await.unwrap();
    assert_eq!(snap[0].state, State::Down);
    assert_eq!(snap[0].remote_state, State::AdminDown);
    assert_eq!(bgp_state(&a).await.0, BgpState::Established);
}

/// A new key replaces the BFD session under a running BGP session (RFC
/// 5880 §6.7.1 leaves changing authentication in place out of scope):
/// with the endpoint still on the old key, petrel refuses its packets and
/// never comes Up, and BGP carries on; once the endpoint has the new key
/// too, both come Up.
#[tokio::test]
async fn a_new_key_replaces_the_bfd_session_and_leaves_bgp_up() {
    use petrel_bgp::bfd::{AuthKey, AuthKind};
    let key = |k: &[u8]| Some(AuthKey::new(AuthKind::MeticulousKeyedSha1, 1, k.to_vec()).unwrap());
    let (bgp_port, bfd_port) = ports();
    let (bgp_port, bfd_port) = (bgp_port + 3, bfd_port + 40);
    let mut pa = peer(B, 65002, bgp_port, A);
    pa.bfd = Some(BfdSettings {
        min_rx: Duration::from_millis(100),
        min_tx: Duration::from_millis(100),
        multiplier: 5,
        multihop: false,
        auth: key(b"first"),
    });
    let a = speaker(A, 65001, bgp_port, bfd_port, pa.clone()).await;
    let _b = speaker(B, 65002, bgp_port, bfd_port, peer(A, 65001, bgp_port, B)).await;
    let mut bfd = ManualBfd::new(bfd_port);
    let endpoint = |k: &[u8]| {
        let mut cfg = SessionConfig::new(Duration::from_millis(100), Duration::from_millis(100), 5);
        cfg.auth = key(k);
        Session::new(cfg, 0xb0b, 7, Instant::now())
    };
    bfd.session = endpoint(b"first");
    until(&mut bfd, &a, true, Duration::from_secs(20), |s| {
        s == BgpState::Established
    })
    .await;
    both_up(&mut bfd, &a).await;
    let first = a.bfd_sessions().await.unwrap()[0].local_discriminator;

    pa.bfd.as_mut().unwrap().auth = key(b"second");
    a.update_peer(pa).await.unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let snap = loop {
        bfd.run(Duration::from_millis(50), true).await;
        let s = a.bfd_sessions().await.unwrap().remove(0);
        assert_ne!(
            s.state,
            State::Up,
            "Up with a key the endpoint does not have"
        );
        if s.stats.auth_failures >= 3 {
            break s;
        }
        assert!(Instant::now() < end, "no authentication failures: {s:?}");
    };
    assert_ne!(
        snap.local_discriminator, first,
        "the session was not replaced"
    );
    assert_eq!(bgp_state(&a).await.0, BgpState::Established);

    bfd.session = endpoint(b"second");
    both_up(&mut bfd, &a).await;
    assert_eq!(bgp_state(&a).await.0, BgpState::Established);
}
