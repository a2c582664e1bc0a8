//! The session driven by plain packets and instants: each test is a rule
//! of RFC 5880, quoted or cited where it decides.

use super::*;
use crate::bfd::auth::{AuthKey, AuthKind};
use crate::bfd::packet::AuthSection;

const LOCAL: u32 = 0x1111_1111;
const REMOTE: u32 = 0x2222_2222;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> SessionConfig {
    SessionConfig::new(ms(300), ms(300), 3)
}

fn session(t0: Instant) -> Session {
    Session::new(cfg(), LOCAL, 42, t0)
}

/// A packet from the remote system in `state`, addressed as the RFC expects
/// (Your Discriminator zero until it has heard from us, i.e. in Down).
fn remote(state: State) -> ControlPacket {
    ControlPacket {
        diag: Diag::NoDiagnostic,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: REMOTE,
        your_discriminator: if matches!(state, State::Down | State::AdminDown) {
            0
        } else {
            LOCAL
        },
        desired_min_tx: 300_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
        auth: None,
    }
}

fn recv(s: &mut Session, now: Instant, p: &ControlPacket) -> Result<(), Discard> {
    s.handle_packet(now, &p.encode())
}

fn sent(s: &mut Session, now: Instant) -> Option<ControlPacket> {
    s.poll_transmit(now)
        .map(|b| ControlPacket::decode(&b).expect("we send what we decode"))
}

fn changes(s: &mut Session) -> Vec<(State, State, Diag)> {
    std::iter::from_fn(|| s.poll_event())
        .map(|Event::StateChange(c)| (c.from, c.to, c.diag))
        .collect()
}

/// A session brought Up by the three-way handshake, its events drained,
/// its Poll for the faster rate answered.
fn up(t0: Instant) -> Session {
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::Down)).unwrap();
    recv(&mut s, t0, &remote(State::Up)).unwrap();
    assert_eq!(s.state(), State::Up);
    changes(&mut s);
    let mut f = remote(State::Up);
    f.final_ = true;
    recv(&mut s, t0, &f).unwrap();
    assert!(!s.polling());
    s
}

#[test]
fn a_new_session_is_down_and_sends_at_once_at_the_slow_rate() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let p = sent(&mut s, t0).expect("the Active role sends first (RFC 5881 §4)");
    assert_eq!(p.state, State::Down);
    assert_eq!(p.your_discriminator, 0, "bfd.RemoteDiscr starts at zero");
    assert_eq!(p.my_discriminator, LOCAL);
    // §6.8.3: not Up, so bfd.DesiredMinTxInterval is at least one second ...
    assert_eq!(p.desired_min_tx, 1_000_000);
    // ... while Required Min RX is what we can take.
    assert_eq!(p.required_min_rx, 300_000);
    assert_eq!(p.required_min_echo_rx, 0, "no Echo function");
    assert!(
        !p.control_plane_independent,
        "C: BFD shares fate with petreld"
    );
    assert!(!p.demand && !p.poll && !p.final_);
    let next = s.poll_timeout().unwrap();
    assert!(
        next >= t0 + ms(750) && next <= t0 + ms(1000),
        "{:?}",
        next - t0
    );
    assert_eq!(sent(&mut s, t0 + ms(700)), None);
}

#[test]
fn down_receiving_down_goes_init() {
    // §6.8.6: "If bfd.SessionState is Down / If received State is Down /
    // Set bfd.SessionState to Init".
    let t0 = Instant::now();
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::Down)).unwrap();
    assert_eq!(s.state(), State::Init);
    assert_eq!(s.remote_discriminator(), REMOTE, "Set bfd.RemoteDiscr");
    assert_eq!(
        changes(&mut s),
        [(State::Down, State::Init, Diag::NoDiagnostic)]
    );
    let p = sent(&mut s, t0).unwrap();
    assert_eq!((p.state, p.your_discriminator), (State::Init, REMOTE));
}

#[test]
fn down_receiving_init_goes_up() {
    // §6.8.6: "Else if received State is Init / Set bfd.SessionState to Up".
    let t0 = Instant::now();
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::Init)).unwrap();
    assert_eq!(
        changes(&mut s),
        [(State::Down, State::Up, Diag::NoDiagnostic)]
    );
}

#[test]
fn down_receiving_up_stays_down() {
    // §6.8.6 has no rule for Down receiving Up: a stale Up from before a
    // restart must not bring a session up without the handshake.
    let t0 = Instant::now();
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::Up)).unwrap();
    assert_eq!(s.state(), State::Down);
    assert!(changes(&mut s).is_empty());
}

#[test]
fn init_receiving_init_or_up_goes_up() {
    // §6.8.6: "Else if bfd.SessionState is Init / If received State is Init
    // or Up / Set bfd.SessionState to Up".
    for theirs in [State::Init, State::Up] {
        let t0 = Instant::now();
        let mut s = session(t0);
        recv(&mut s, t0, &remote(State::Down)).unwrap();
        recv(&mut s, t0, &remote(theirs)).unwrap();
        assert_eq!(s.state(), State::Up, "{theirs}");
    }
    // ... and Init receiving Down stays Init.
    let t0 = Instant::now();
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::Down)).unwrap();
    recv(&mut s, t0, &remote(State::Down)).unwrap();
    assert_eq!(s.state(), State::Init);
}

#[test]
fn up_receiving_down_goes_down_with_diag_3() {
    // §6.8.6: "Else (bfd.SessionState is Up) / If received State is Down /
    // Set bfd.LocalDiag to 3 (Neighbor signaled session down) / Set
    // bfd.SessionState to Down".
    let t0 = Instant::now();
    let mut s = up(t0);
    recv(&mut s, t0 + ms(100), &remote(State::Down)).unwrap();
    assert_eq!(
        changes(&mut s),
        [(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
    assert_eq!(s.stats().flaps, 1);
    let p = sent(&mut s, t0 + ms(1000)).unwrap();
    assert_eq!(
        (p.state, p.diag),
        (State::Down, Diag::NeighborSignaledSessionDown)
    );
    // §6.8.3: not Up any more, so back to the slow rate.
    assert_eq!(p.desired_min_tx, 1_000_000);
    // The handshake starts over: Down receiving Down goes Init.
    recv(&mut s, t0 + ms(1100), &remote(State::Down)).unwrap();
    assert_eq!(s.state(), State::Init);
}

#[test]
fn received_admin_down_takes_the_session_down_with_diag_3() {
    // §6.8.6: "If received state is AdminDown / If bfd.SessionState is not
    // Down / Set bfd.LocalDiag to 3 / Set bfd.SessionState to Down".
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut p = remote(State::AdminDown);
    p.diag = Diag::AdministrativelyDown;
    recv(&mut s, t0, &p).unwrap();
    let Some(Event::StateChange(c)) = s.poll_event() else {
        panic!()
    };
    assert_eq!(
        (c.to, c.diag),
        (State::Down, Diag::NeighborSignaledSessionDown)
    );
    // RFC 5882 §3.2: the client needs to see that the remote is AdminDown.
    assert_eq!(
        (c.remote_state, c.remote_diag),
        (State::AdminDown, Diag::AdministrativelyDown)
    );
    // From Init too.
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::Down)).unwrap();
    recv(&mut s, t0, &remote(State::AdminDown)).unwrap();
    assert_eq!(s.state(), State::Down);
    assert_eq!(s.local_diag(), Diag::NeighborSignaledSessionDown);
}

#[test]
fn down_receiving_admin_down_changes_nothing() {
    let t0 = Instant::now();
    let mut s = session(t0);
    recv(&mut s, t0, &remote(State::AdminDown)).unwrap();
    assert_eq!(
        (s.state(), s.local_diag()),
        (State::Down, Diag::NoDiagnostic)
    );
    assert!(changes(&mut s).is_empty());
}

#[test]
fn local_admin_down_sends_diag_7_and_discards_what_it_receives() {
    let t0 = Instant::now();
    let mut s = up(t0);
    s.set_admin_down(t0, true);
    assert_eq!(
        changes(&mut s),
        [(State::Up, State::AdminDown, Diag::AdministrativelyDown)]
    );
    let p = sent(&mut s, t0 + ms(300)).unwrap();
    assert_eq!(
        (p.state, p.diag),
        (State::AdminDown, Diag::AdministrativelyDown)
    );
    // §6.8.6: "If bfd.SessionState is AdminDown / Discard the packet" ...
    assert_eq!(
        recv(&mut s, t0 + ms(400), &remote(State::Init)),
        Err(Discard::AdminDown)
    );
    assert_eq!(s.state(), State::AdminDown);
    // ... and it runs no detection timer.
    s.handle_timeout(t0 + ms(60_000));
    assert!(changes(&mut s).is_empty());
    // Back to Down: the handshake starts over.
    s.set_admin_down(t0 + ms(60_000), false);
    assert_eq!(s.state(), State::Down);
    recv(&mut s, t0 + ms(60_001), &remote(State::Down)).unwrap();
    assert_eq!(s.state(), State::Init);
}

#[test]
fn your_discriminator_selects_the_session() {
    // §6.8.6: "If the Your Discriminator field is nonzero, it MUST be used to
    // select the session ... If no session is found, the packet MUST be
    // discarded."
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut p = remote(State::Init);
    p.your_discriminator = 0x3333;
    assert_eq!(
        recv(&mut s, t0, &p),
        Err(Discard::UnknownYourDiscriminator(0x3333))
    );
    assert_eq!(s.stats().discarded, 1);
    assert_eq!(
        s.remote_discriminator(),
        0,
        "a discarded packet teaches nothing"
    );
}

#[test]
fn zero_your_discriminator_only_in_down_or_admin_down() {
    // §6.8.6: "If the Your Discriminator field is zero and the State field is
    // not Down or AdminDown, the packet MUST be discarded."
    let t0 = Instant::now();
    for state in [State::Init, State::Up] {
        let mut s = session(t0);
        let mut p = remote(state);
        p.your_discriminator = 0;
        assert_eq!(
            recv(&mut s, t0, &p),
            Err(Discard::ZeroYourDiscriminator(state))
        );
        assert_eq!(s.state(), State::Down);
    }
}

#[test]
fn the_a_bit_must_match_the_session() {
    let t0 = Instant::now();
    // §6.8.6: "If the A bit is set and no authentication is in use
    // (bfd.AuthType is zero), the packet MUST be discarded."
    let mut s = session(t0);
    let mut p = remote(State::Down);
    p.auth = Some(AuthSection::SimplePassword {
        key_id: 1,
        password: b"x".to_vec(),
    });
    assert_eq!(recv(&mut s, t0, &p), Err(Discard::UnexpectedAuth));
    // §6.8.6: "If the A bit is clear and authentication is in use
    // (bfd.AuthType is nonzero), the packet MUST be discarded."
    let mut c = cfg();
    c.auth = Some(AuthKey::new(AuthKind::KeyedSha1, 1, b"k".to_vec()).unwrap());
    let mut s = Session::new(c, LOCAL, 1, t0);
    assert_eq!(
        recv(&mut s, t0, &remote(State::Down)),
        Err(Discard::MissingAuth)
    );
    assert_eq!(s.state(), State::Down);
    // Counted as an authentication failure: the operator's sign of a
    // peer configured otherwise.
    assert_eq!((s.stats().discarded, s.stats().auth_failures), (1, 1));
}

#[test]
fn a_poll_is_answered_at_once_with_final_and_without_poll() {
    // §6.8.6: "If the Poll (P) bit is set, send a BFD Control packet to the
    // remote system with the Poll (P) bit clear, and the Final (F) bit set";
    // §6.8.7: "without respect to the transmission timer".
    let t0 = Instant::now();
    let mut s = up(t0);
    let t = t0 + ms(10);
    sent(&mut s, t);
    assert_eq!(sent(&mut s, t), None, "the periodic packet is not due");
    let mut p = remote(State::Up);
    p.poll = true;
    recv(&mut s, t, &p).unwrap();
    assert_eq!(s.poll_timeout(), Some(t), "a Final is due now");
    let f = sent(&mut s, t).unwrap();
    assert!(f.final_ && !f.poll, "§6.5: never both P and F");
    assert_eq!(sent(&mut s, t), None, "one Final per Poll");
}

#[test]
fn going_up_polls_for_the_faster_rate() {
    // §6.8.3: leaving the one-second rate changes bfd.DesiredMinTxInterval,
    // and "a Poll Sequence MUST be initiated".
    let t0 = Instant::now();
    let mut s = session(t0);
    assert_eq!(sent(&mut s, t0).unwrap().desired_min_tx, 1_000_000);
    recv(&mut s, t0 + ms(10), &remote(State::Init)).unwrap();
    assert_eq!(s.state(), State::Up);
    // The faster rate is a decrease, so it is in force at once: the next
    // packet goes out within 300 ms of the last one, with P set.
    let next = s.poll_timeout().unwrap();
    assert!(next <= t0 + ms(300), "{:?}", next - t0);
    let p = sent(&mut s, next).unwrap();
    assert!(p.poll);
    assert_eq!((p.state, p.desired_min_tx), (State::Up, 300_000));
    // §6.5: P on every periodic packet until a Final comes back ...
    let next = s.poll_timeout().unwrap();
    assert!(sent(&mut s, next).unwrap().poll);
    let mut f = remote(State::Up);
    f.final_ = true;
    recv(&mut s, next, &f).unwrap();
    // ... "and any subsequent BFD Control packets are sent with the Poll bit cleared".
    let next = s.poll_timeout().unwrap();
    assert!(!sent(&mut s, next).unwrap().poll);
}

#[test]
fn raising_desired_tx_while_up_waits_for_the_final() {
    // §6.8.3: "If bfd.DesiredMinTxInterval is increased and bfd.SessionState
    // is Up, the actual transmission interval used MUST NOT change until the
    // Poll Sequence described above has terminated."
    let t0 = Instant::now();
    let mut s = up(t0);
    s.set_timers(t0, ms(600), ms(300), 3);
    let p = sent(&mut s, t0).unwrap();
    assert!(p.poll);
    assert_eq!(p.desired_min_tx, 600_000, "the new value is announced");
    assert_eq!(s.tx_interval(), ms(300), "but not used yet");
    let mut f = remote(State::Up);
    f.final_ = true;
    recv(&mut s, t0 + ms(5), &f).unwrap();
    assert_eq!(s.tx_interval(), ms(600));
    // The packet already scheduled moves out to the new interval.
    let next = s.poll_timeout().unwrap();
    assert!(next >= t0 + ms(450), "{:?}", next - t0);
}

#[test]
fn lowering_required_rx_while_up_keeps_the_old_detection_time_until_final() {
    // §6.8.3: "If bfd.RequiredMinRxInterval is reduced and bfd.SessionState
    // is Up, the previous value of bfd.RequiredMinRxInterval MUST be used
    // when calculating the Detection Time for the remote system until the
    // Poll Sequence described above has terminated."
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut slow = remote(State::Up);
    slow.desired_min_tx = 100_000;
    recv(&mut s, t0, &slow).unwrap();
    assert_eq!(s.detection_time(), Some(ms(900)));
    s.set_timers(t0, ms(300), ms(100), 3);
    assert_eq!(sent(&mut s, t0).unwrap().required_min_rx, 100_000);
    assert_eq!(
        s.detection_time(),
        Some(ms(900)),
        "old value until the Final"
    );
    slow.final_ = true;
    recv(&mut s, t0 + ms(5), &slow).unwrap();
    assert_eq!(s.detection_time(), Some(ms(300)));
}

#[test]
fn raising_required_rx_lengthens_detection_at_once() {
    let t0 = Instant::now();
    let mut s = up(t0);
    s.set_timers(t0, ms(300), ms(500), 3);
    assert_eq!(s.detection_time(), Some(ms(1500)));
    assert!(s.polling());
}

#[test]
fn a_change_during_a_poll_polls_again() {
    // A Final may answer a Poll that carried the older values; the values
    // in force wait for a Poll sent after the last change.
    let t0 = Instant::now();
    let mut s = up(t0);
    s.set_timers(t0, ms(500), ms(300), 3);
    sent(&mut s, t0).unwrap();
    s.set_timers(t0 + ms(1), ms(800), ms(300), 3);
    let mut f = remote(State::Up);
    f.final_ = true;
    recv(&mut s, t0 + ms(2), &f).unwrap();
    assert!(s.polling(), "a second round for the second change");
    assert_eq!(s.tx_interval(), ms(300));
    let next = s.poll_timeout().unwrap();
    let p = sent(&mut s, next).unwrap();
    assert!(p.poll);
    assert_eq!(p.desired_min_tx, 800_000);
    recv(&mut s, next, &f).unwrap();
    assert!(!s.polling());
    assert_eq!(s.tx_interval(), ms(800));
}

#[test]
fn detection_time_is_their_mult_times_the_slower_of_our_rx_and_their_tx() {
    // §6.8.4: "the value of Detect Mult received from the remote system,
    // multiplied by the agreed transmit interval of the remote system (the
    // greater of bfd.RequiredMinRxInterval and the last received Desired Min
    // TX Interval)".
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut p = remote(State::Up);
    p.detect_mult = 5;
    p.desired_min_tx = 200_000;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(s.detection_time(), Some(ms(1500)), "5 × max(300, 200)");
    p.desired_min_tx = 500_000;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(s.detection_time(), Some(ms(2500)), "5 × max(300, 500)");
}

#[test]
fn detection_time_expiry_takes_the_session_down_with_diag_1() {
    // §6.8.4: "if a period of time equal to the Detection Time passes without
    // receiving a BFD Control packet from the remote system, and
    // bfd.SessionState is Init or Up, ... set bfd.SessionState to Down and
    // bfd.LocalDiag to 1 (Control Detection Time Expired)."
    let t0 = Instant::now();
    let mut s = up(t0);
    assert!(s.poll_timeout().unwrap() <= t0 + ms(900));
    s.handle_timeout(t0 + ms(899));
    assert_eq!(s.state(), State::Up);
    s.handle_timeout(t0 + ms(900));
    assert_eq!(
        changes(&mut s),
        [(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    // §6.8.1: bfd.RemoteDiscr "MUST be set to zero" then.
    assert_eq!(s.remote_discriminator(), 0);
    let p = sent(&mut s, t0 + ms(900)).unwrap();
    assert_eq!(
        (p.your_discriminator, p.diag),
        (0, Diag::ControlDetectionTimeExpired)
    );
}

#[test]
fn init_times_out_too() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut p = remote(State::Down);
    p.desired_min_tx = 1_000_000;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(s.state(), State::Init);
    s.handle_timeout(t0 + ms(3000));
    assert_eq!(
        (s.state(), s.local_diag()),
        (State::Down, Diag::ControlDetectionTimeExpired)
    );
}

#[test]
fn each_packet_restarts_the_detection_timer() {
    let t0 = Instant::now();
    let mut s = up(t0);
    for i in 1..=20 {
        let t = t0 + ms(i * 800);
        recv(&mut s, t, &remote(State::Up)).unwrap();
        s.handle_timeout(t + ms(899));
    }
    assert_eq!(s.state(), State::Up);
}

#[test]
fn transmit_interval_is_the_greater_of_ours_and_their_required_rx() {
    // §6.8.7: "the greater of bfd.DesiredMinTxInterval and
    // bfd.RemoteMinRxInterval".
    let t0 = Instant::now();
    let mut s = up(t0);
    assert_eq!(s.tx_interval(), ms(300));
    let mut p = remote(State::Up);
    p.required_min_rx = 700_000;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(s.tx_interval(), ms(700));
}

fn intervals(mut s: Session, t0: Instant, n: usize) -> Vec<Duration> {
    let mut t = t0;
    let mut last = None;
    let mut out = Vec::new();
    while out.len() < n {
        t = s.poll_timeout().unwrap().max(t);
        s.handle_timeout(t);
        if s.poll_transmit(t).is_some() {
            if let Some(l) = last {
                out.push(t - l);
            }
            last = Some(t);
        }
        // Keep the session Up: a packet from the remote every 100 ms of
        // simulated time would do, but one per transmission is enough here.
        let _ = recv(&mut s, t, &remote(State::Up));
    }
    out
}

#[test]
fn jitter_is_75_to_100_percent_of_the_interval() {
    // §6.8.7: "reduced by a random amount of jitter: 0 to 25%".
    let t0 = Instant::now();
    let got = intervals(up(t0), t0, 2000);
    let (lo, hi) = (got.iter().min().unwrap(), got.iter().max().unwrap());
    assert!(*lo >= ms(225) && *hi <= ms(300), "{lo:?}..{hi:?}");
    assert!(
        *lo < ms(235) && *hi > ms(290),
        "spread over the range: {lo:?}..{hi:?}"
    );
}

#[test]
fn jitter_with_detect_mult_1_is_75_to_90_percent() {
    // §6.8.7: "If bfd.DetectMult is equal to 1, the interval between
    // transmitted BFD Control packets MUST be no more than 90% of the
    // negotiated transmission interval, and MUST be no less than 75%".
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(ms(300), ms(300), 1), LOCAL, 7, t0);
    recv(&mut s, t0, &remote(State::Init)).unwrap();
    let mut f = remote(State::Up);
    f.final_ = true;
    recv(&mut s, t0, &f).unwrap();
    let got = intervals(s, t0, 2000);
    let (lo, hi) = (got.iter().min().unwrap(), got.iter().max().unwrap());
    assert!(*lo >= ms(225) && *hi <= ms(270), "{lo:?}..{hi:?}");
}

#[test]
fn no_periodic_packets_while_their_required_rx_is_zero() {
    // §6.8.7: "A system MUST NOT periodically transmit BFD Control packets if
    // bfd.RemoteMinRxInterval is zero."
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut p = remote(State::Up);
    p.required_min_rx = 0;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(sent(&mut s, t0 + ms(5000)), None);
    // A Poll is still answered (§6.8.7: "without respect to ... any other
    // transmission limitations").
    p.poll = true;
    recv(&mut s, t0 + ms(5000), &p).unwrap();
    assert!(sent(&mut s, t0 + ms(5000)).unwrap().final_);
}

#[test]
fn their_demand_mode_stops_our_periodic_packets_but_not_finals() {
    // §6.8.7: "MUST NOT periodically transmit BFD Control packets if Demand
    // mode is active on the remote system (bfd.RemoteDemandMode is 1,
    // bfd.SessionState is Up, and bfd.RemoteSessionState is Up) and a Poll
    // Sequence is not being transmitted."
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut p = remote(State::Up);
    p.demand = true;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(sent(&mut s, t0 + ms(2000)), None);
    p.poll = true;
    recv(&mut s, t0 + ms(2000), &p).unwrap();
    assert!(sent(&mut s, t0 + ms(2000)).unwrap().final_);
    // Our own Poll Sequence is sent even then.
    s.set_timers(t0 + ms(2000), ms(200), ms(300), 3);
    assert!(sent(&mut s, t0 + ms(2000)).unwrap().poll);
}

fn sha1_cfg() -> SessionConfig {
    let mut c = cfg();
    c.auth = Some(
        AuthKey::new(
            AuthKind::MeticulousKeyedSha1,
            3,
            b"kube-node-secret".to_vec(),
        )
        .unwrap(),
    );
    c
}

/// Two sessions joined by a lossless link, stepped one millisecond at a time.
struct Pair {
    a: Session,
    b: Session,
    t: Instant,
    /// Packets from b reach a.
    b_to_a: bool,
    a_to_b: bool,
}

impl Pair {
    fn new(cfg_a: SessionConfig, cfg_b: SessionConfig) -> Self {
        let t = Instant::now();
        Pair {
            a: Session::new(cfg_a, LOCAL, 11, t),
            b: Session::new(cfg_b, REMOTE, 12, t),
            t,
            b_to_a: true,
            a_to_b: true,
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.t + d;
        while self.t < end {
            self.t += ms(1);
            let t = self.t;
            self.a.handle_timeout(t);
            self.b.handle_timeout(t);
            while let Some(p) = self.a.poll_transmit(t) {
                if self.a_to_b {
                    self.b.handle_packet(t, &p).unwrap();
                }
            }
            while let Some(p) = self.b.poll_transmit(t) {
                if self.b_to_a {
                    self.a.handle_packet(t, &p).unwrap();
                }
            }
        }
    }
}

#[test]
fn two_authenticated_sessions_come_up_and_detect_a_silent_peer() {
    let mut n = Pair::new(sha1_cfg(), sha1_cfg());
    n.run(ms(3000));
    assert_eq!((n.a.state(), n.b.state()), (State::Up, State::Up));
    assert!(!n.a.polling() && !n.b.polling(), "both Polls answered");
    assert_eq!(n.a.tx_interval(), ms(300));
    assert_eq!(n.a.detection_time(), Some(ms(900)));
    changes(&mut n.a);
    changes(&mut n.b);
    // Ten seconds of steady state: no flap, no discard.
    let tx = n.a.stats().tx;
    n.run(ms(10_000));
    assert_eq!((n.a.stats().flaps, n.a.stats().discarded), (0, 0));
    // Packets about every 262 ms on average (300 ms less 0–25 %).
    let tx = n.a.stats().tx - tx;
    assert!((34..=44).contains(&tx), "{tx}");
    // b falls silent (its process stopped): a sees it within the Detection Time.
    n.b_to_a = false;
    let silent_at = n.t;
    let mut down_at = None;
    for _ in 0..2000 {
        n.run(ms(1));
        if n.a.state() == State::Down {
            down_at = Some(n.t);
            break;
        }
    }
    let took = down_at.expect("a went down") - silent_at;
    assert!(took <= ms(900), "{took:?}");
    assert_eq!(
        changes(&mut n.a),
        [(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    // a now says Down: b, still hearing it, goes Down with Diag 3 (and on
    // a's next Down, Init: the handshake starts over on its side).
    n.run(ms(1500));
    assert_eq!(
        changes(&mut n.b)[0],
        (State::Up, State::Down, Diag::NeighborSignaledSessionDown)
    );
    assert_ne!(n.b.state(), State::Up);
    // b speaks again: both come back Up.
    n.b_to_a = true;
    n.run(ms(4000));
    assert_eq!((n.a.state(), n.b.state()), (State::Up, State::Up));
}

#[test]
fn a_replayed_packet_is_discarded_under_meticulous_sha1() {
    let mut n = Pair::new(sha1_cfg(), sha1_cfg());
    n.run(ms(3000));
    let t = n.t + ms(1);
    let p = loop {
        if let Some(p) = n.b.poll_transmit(n.t) {
            break p;
        }
        n.t += ms(1);
    };
    n.a.handle_packet(t, &p).unwrap();
    assert!(matches!(
        n.a.handle_packet(t, &p),
        Err(Discard::Auth(crate::bfd::auth::AuthError::Sequence { .. }))
    ));
}

#[test]
fn the_sequence_is_forgotten_after_twice_the_detection_time() {
    // §6.8.1: bfd.AuthSeqKnown "MUST be set to zero after no packets have
    // been received on this session for at least twice the Detection Time",
    // so a restarted peer with a new random sequence gets back in.
    let mut n = Pair::new(sha1_cfg(), sha1_cfg());
    n.run(ms(3000));
    n.b_to_a = false;
    n.run(ms(2000));
    // b restarts with another sequence (and discriminator).
    n.b = Session::new(sha1_cfg(), 0x4444, 99, n.t);
    n.b_to_a = true;
    n.run(ms(5000));
    assert_eq!((n.a.state(), n.b.state()), (State::Up, State::Up));
}

#[test]
fn mismatched_keys_never_come_up() {
    let mut other = sha1_cfg();
    other.auth = Some(AuthKey::new(AuthKind::MeticulousKeyedSha1, 3, b"wrong".to_vec()).unwrap());
    let mut a = Session::new(sha1_cfg(), LOCAL, 1, Instant::now());
    let mut b = Session::new(other, REMOTE, 2, Instant::now());
    let t = Instant::now();
    let p = b.poll_transmit(t).unwrap();
    assert_eq!(
        a.handle_packet(t, &p),
        Err(Discard::Auth(crate::bfd::auth::AuthError::Hash))
    );
    assert_eq!(a.state(), State::Down);
    assert_eq!((a.stats().rx, a.stats().auth_failures), (0, 1));
    // A discard for another reason is not an authentication failure.
    let mut p = remote(State::Up);
    p.your_discriminator = 0xdead;
    let _ = recv(&mut a, t, &p);
    assert_eq!((a.stats().discarded, a.stats().auth_failures), (2, 1));
}

#[test]
fn an_event_carries_the_remote_view() {
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut p = remote(State::Down);
    p.diag = Diag::ControlDetectionTimeExpired;
    recv(&mut s, t0, &p).unwrap();
    assert_eq!(
        s.poll_event(),
        Some(Event::StateChange(StateChange {
            from: State::Up,
            to: State::Down,
            diag: Diag::NeighborSignaledSessionDown,
            remote_state: State::Down,
            remote_diag: Diag::ControlDetectionTimeExpired,
        }))
    );
}
