//! The driver over real sockets on loopback: 127.0.0.1 and 127.0.0.2 are
//! two systems (Linux routes all of 127/8 to lo), both on one test port.

use super::*;
use crate::bfd::packet::ControlPacket;
use crate::bfd::session::Session;
use std::sync::atomic::{AtomicU16, Ordering};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A port per test, spread by process so parallel runs rarely meet.
fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1000) as u16 * 16;
    base + NEXT.fetch_add(2, Ordering::Relaxed)
}

fn cfg(listen: IpAddr, port: u16) -> BfdConfig {
    BfdConfig {
        listen: vec![listen],
        single_hop_port: port,
        multihop_port: port + 1,
    }
}

/// 100 ms × 5: a 500 ms detection time, quick enough for a test and with
/// room for a loaded CI machine (a late packet must not flap a session).
fn fast() -> SessionConfig {
    SessionConfig::new(Duration::from_millis(100), Duration::from_millis(100), 5)
}

fn opts(remote: IpAddr, local: IpAddr) -> SessionOptions {
    SessionOptions {
        local: Some(local),
        ..SessionOptions::new(PeerKey::single_hop(remote), fast())
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<SessionStatus>,
    within: Duration,
    f: impl Fn(&SessionStatus) -> bool,
) -> SessionStatus {
    *tokio::time::timeout(within, rx.wait_for(|s| f(s)))
        .await
        .expect("in time")
        .expect("the session lives")
}

#[tokio::test]
async fn two_endpoints_come_up_and_a_shutdown_is_admin_down_not_a_failure() {
    let p = port();
    let a = Bfd::start(cfg(A, p)).unwrap();
    let b = Bfd::start(cfg(B, p)).unwrap();
    let mut ra = a.add_session(opts(B, A)).await.unwrap();
    let mut rb = b.add_session(opts(A, B)).await.unwrap();
    let secs = Duration::from_secs(6);
    wait_for(&mut ra, secs, |s| s.state == State::Up).await;
    wait_for(&mut rb, secs, |s| s.state == State::Up).await;
    let snap = a.sessions().await.unwrap();
    assert_eq!(snap.len(), 1);
    let s = &snap[0];
    assert_eq!(s.state, State::Up);
    assert!(SOURCE_PORTS.contains(&s.source_port), "{}", s.source_port);
    // Right after Up, b may still advertise its 1 s rate (RFC 5880 §6.8.3)
    // and a's detection time be 5 × 1 s: both Polls for the fast rate
    // finish soon after.
    let end = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = a.sessions().await.unwrap().remove(0);
        if s.detection_time == Some(Duration::from_millis(500)) || Instant::now() > end {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s.detection_time, Some(Duration::from_millis(500)));
    assert_eq!(s.tx_interval, Duration::from_millis(100));
    assert_eq!(s.stats.discarded, 0);
    // b stops cleanly: it says AdminDown, and a's Down says so (RFC 5882
    // §3.2: not a failure for BGP).
    b.shutdown().await.unwrap();
    let st = wait_for(&mut ra, secs, |s| s.state != State::Up).await;
    let c = st.last_change.unwrap();
    assert_eq!(c.diag, Diag::NeighborSignaledSessionDown);
    assert_eq!(c.remote_state, State::AdminDown);
    assert_eq!(st.flaps, 1);
}

/// A hand-driven peer at B: a sans-IO session on plain std sockets, so the
/// test decides when it falls silent and with which TTL it speaks.
struct ManualPeer {
    session: Session,
    rx: std::net::UdpSocket,
    tx: std::net::UdpSocket,
    dest: SocketAddr,
}

impl ManualPeer {
    fn new(port: u16, ttl: u32) -> Self {
        let rx = std::net::UdpSocket::bind((B, port)).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind((B, 0)).unwrap();
        tx.set_ttl(ttl).unwrap();
        Self {
            session: Session::new(fast(), 0xb0b, 5, Instant::now()),
            rx,
            tx,
            dest: SocketAddr::new(A, port),
        }
    }

    /// Runs the peer for `d`, speaking while `speak`.
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

#[tokio::test]
async fn a_silent_peer_is_detected_within_the_detection_time() {
    let p = port();
    let a = Bfd::start(cfg(A, p)).unwrap();
    let mut ra = a.add_session(opts(B, A)).await.unwrap();
    let mut peer = ManualPeer::new(p, 255);
    peer.run(Duration::from_secs(4), true).await;
    assert_eq!(ra.borrow().state, State::Up);
    assert_eq!(peer.session.state(), State::Up);
    // The peer falls silent, as a stopped process does.
    let silent = Instant::now();
    let (st, ()) = tokio::join!(
        wait_for(&mut ra, Duration::from_secs(5), |s| s.state != State::Up),
        peer.run(Duration::from_millis(100), false),
    );
    let took = silent.elapsed();
    assert_eq!(st.local_diag, Diag::ControlDetectionTimeExpired);
    assert_eq!(st.last_change.unwrap().remote_state, State::Up);
    // 5 × 100 ms; a loose bound only catches a driver that sleeps through it.
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[tokio::test]
async fn packets_with_a_ttl_below_255_never_reach_a_single_hop_session() {
    // RFC 5881 §5: "All received BFD Control packets that are demultiplexed
    // to the session MUST be discarded if the received TTL or Hop Limit is
    // not equal to 255."
    let p = port();
    let a = Bfd::start(cfg(A, p)).unwrap();
    let ra = a.add_session(opts(B, A)).await.unwrap();
    let mut peer = ManualPeer::new(p, 254);
    peer.run(Duration::from_millis(2500), true).await;
    assert_eq!(ra.borrow().state, State::Down);
    assert_eq!(
        peer.session.state(),
        State::Init,
        "a's packets reached the peer"
    );
    let s = &a.sessions().await.unwrap()[0];
    assert_eq!(s.stats.rx, 0, "every packet of the peer was refused");
}

#[tokio::test]
async fn the_sending_socket_uses_ttl_255_and_a_high_source_port() {
    let p = port();
    let a = Bfd::start(cfg(A, p)).unwrap();
    let _ra = a.add_session(opts(B, A)).await.unwrap();
    let rx = std::net::UdpSocket::bind((B, p)).unwrap();
    set_int(&rx, libc::IPPROTO_IP, libc::IP_RECVTTL, 1).unwrap();
    rx.set_nonblocking(true).unwrap();
    let rx = UdpSocket::from_std(rx).unwrap();
    let mut buf = [0u8; 64];
    let (n, from, ttl) = tokio::time::timeout(
        Duration::from_secs(3),
        rx.async_io(Interest::READABLE, || recv_with_ttl(&rx, &mut buf)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ttl, Some(255));
    assert_eq!(from.ip(), A);
    assert!(SOURCE_PORTS.contains(&from.port()));
    let pkt = ControlPacket::decode(&buf[..n]).unwrap();
    assert_eq!(pkt.state, State::Down);
}

#[tokio::test]
async fn ipv6_sockets_and_hop_limit_work() {
    // One system on ::1 with a session to ::1: it hears itself, which the
    // three-way handshake takes as a peer (Down, then Init, then Up). Enough
    // to show that v6 packets go out with Hop Limit 255 and come in with it
    // read.
    let p = port();
    let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let a = Bfd::start(cfg(lo6, p)).unwrap();
    let mut ra = a.add_session(opts(lo6, lo6)).await.unwrap();
    wait_for(&mut ra, Duration::from_secs(6), |s| s.state == State::Up).await;
}

#[tokio::test]
async fn sessions_have_distinct_source_ports_and_removal_says_admin_down() {
    let p = port();
    let a = Bfd::start(cfg(A, p)).unwrap();
    let b = Bfd::start(cfg(B, p)).unwrap();
    let mut ra = a.add_session(opts(B, A)).await.unwrap();
    let _rb = b.add_session(opts(A, B)).await.unwrap();
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    a.add_session(opts(other, A)).await.unwrap();
    let snap = a.sessions().await.unwrap();
    assert_eq!(snap.len(), 2);
    assert_ne!(snap[0].source_port, snap[1].source_port);
    wait_for(&mut ra, Duration::from_secs(6), |s| s.state == State::Up).await;
    b.remove_session(PeerKey::single_hop(A)).await.unwrap();
    let st = wait_for(&mut ra, Duration::from_secs(3), |s| s.state != State::Up).await;
    assert_eq!(st.last_change.unwrap().remote_state, State::AdminDown);
    assert!(matches!(
        b.remove_session(PeerKey::single_hop(A)).await,
        Err(BfdError::NoSuchSession(_))
    ));
}
