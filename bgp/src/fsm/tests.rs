//! The FSM driven by plain events: no sockets, no clocks.

use super::*;
use crate::wire::capability::{AddPathMode, Capability};
use crate::wire::family::Family;
use crate::wire::notification::{CeaseError, ErrorCode, HeaderError, OpenError, UpdateError};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const REMOTE_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn caps() -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::RouteRefresh,
        Capability::FourOctetAs(4_200_000_001),
        Capability::AddPath(vec![(Family::IPV4_UNICAST, AddPathMode::Both)]),
    ]
}

fn fsm() -> Fsm {
    Fsm::new(FsmConfig::new(4_200_000_001, LOCAL_ID, 65002, caps()))
}

fn peer_open(hold: u16) -> Message {
    Message::Open(Open::new(
        65002,
        hold,
        REMOTE_ID,
        vec![
            Capability::FourOctetAs(65002),
            Capability::AddPath(vec![(Family::IPV4_UNICAST, AddPathMode::Send)]),
        ],
    ))
}

fn sent(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn timer(actions: &[Action], t: Timer) -> Option<Duration> {
    actions.iter().rev().find_map(|a| match a {
        Action::StartTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// Drives a fresh FSM to Established and returns it.
fn established() -> Fsm {
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    f.handle(Event::Received(peer_open(90)));
    let a = f.handle(Event::Received(Message::Keepalive));
    assert!(matches!(a.last(), Some(Action::Established { .. })));
    f
}

#[test]
fn active_open_reaches_established() {
    let mut f = fsm();
    let a = f.handle(Event::ManualStart);
    assert_eq!(f.state(), State::Connect);
    assert!(a.contains(&Action::Connect));
    let retry = timer(&a, Timer::ConnectRetry).unwrap();
    // RFC 4271 §10: jitter keeps the timer within [0.75, 1.0] of the configured value.
    assert!(
        retry >= Duration::from_millis(22_500) && retry <= Duration::from_secs(30),
        "{retry:?}"
    );

    let a = f.handle(Event::TcpConnected);
    assert_eq!(f.state(), State::OpenSent);
    let Message::Open(o) = sent(&a)[0] else {
        panic!("OPEN expected")
    };
    assert_eq!(
        (o.my_as, o.asn(), o.hold_time, o.bgp_id),
        (23456, 4_200_000_001, 90, LOCAL_ID)
    );
    assert_eq!(timer(&a, Timer::Hold), Some(Duration::from_secs(240)));

    let a = f.handle(Event::Received(peer_open(30)));
    assert_eq!(f.state(), State::OpenConfirm);
    assert_eq!(sent(&a), [&Message::Keepalive]);
    // RFC 4271 §4.2: the smaller hold time; keepalive a third of it.
    assert_eq!(f.negotiated_hold_time(), 30);
    assert_eq!(timer(&a, Timer::Keepalive), Some(Duration::from_secs(10)));
    assert_eq!(timer(&a, Timer::Hold), Some(Duration::from_secs(30)));

    let a = f.handle(Event::Received(Message::Keepalive));
    assert_eq!(f.state(), State::Established);
    let Some(Action::Established { ctx, remote }) = a.last() else {
        panic!("{a:?}")
    };
    assert!(ctx.four_octet_as);
    assert!(ctx.add_path_rx.contains(Family::IPV4_UNICAST));
    assert!(!ctx.add_path_tx.contains(Family::IPV4_UNICAST));
    assert_eq!(remote.bgp_id, REMOTE_ID);
}

#[test]
fn passive_waits_for_the_peer() {
    let mut cfg = FsmConfig::new(4_200_000_001, LOCAL_ID, 65002, caps());
    cfg.passive = true;
    let mut f = Fsm::new(cfg);
    let a = f.handle(Event::ManualStart);
    assert_eq!(f.state(), State::Active);
    assert!(!a.contains(&Action::Connect));
    f.handle(Event::TcpAccepted);
    assert_eq!(f.state(), State::OpenSent);
}

#[test]
fn connect_retry_and_tcp_failure() {
    let mut f = fsm();
    f.handle(Event::ManualStart);
    // §8.2.2 Connect, event 18: retry timer, go Active.
    let a = f.handle(Event::TcpFails);
    assert_eq!(f.state(), State::Active);
    assert!(timer(&a, Timer::ConnectRetry).is_some());
    // Active, event 9: connect again.
    let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert_eq!(f.state(), State::Connect);
    assert!(a.contains(&Action::Connect));
}

#[test]
fn refused_connections_are_retried_soon_then_backed_off() {
    let mut f = fsm();
    f.handle(Event::ManualStart);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let a = f.handle(Event::TcpFails);
        delays.push(timer(&a, Timer::ConnectRetry).unwrap());
        f.handle(Event::TimerExpired(Timer::ConnectRetry));
    }
    assert!(delays[0] <= Duration::from_secs(2), "{delays:?}");
    assert!(delays[4] > delays[0] * 4, "{delays:?}");
    // Capped by ConnectRetryTime (30 s, with jitter).
    assert!(delays[7] <= Duration::from_secs(31), "{delays:?}");
    assert!(delays[7] >= Duration::from_secs(20), "{delays:?}");
    // A connection resets the backoff.
    f.handle(Event::TcpConnected);
    let mut f = fsm();
    f.handle(Event::ManualStart);
    let a = f.handle(Event::TcpFails);
    assert!(timer(&a, Timer::ConnectRetry).unwrap() <= Duration::from_secs(2));
}

#[test]
fn delay_open_sends_open_when_the_timer_fires_or_the_peer_speaks_first() {
    let mut cfg = FsmConfig::new(4_200_000_001, LOCAL_ID, 65002, caps());
    cfg.delay_open = Some(Duration::from_secs(5));
    let mut f = Fsm::new(cfg.clone());
    f.handle(Event::ManualStart);
    let a = f.handle(Event::TcpConnected);
    assert!(sent(&a).is_empty());
    assert_eq!(timer(&a, Timer::DelayOpen), Some(Duration::from_secs(5)));
    let a = f.handle(Event::TimerExpired(Timer::DelayOpen));
    assert!(matches!(sent(&a)[0], Message::Open(_)));
    assert_eq!(f.state(), State::OpenSent);

    let mut f = Fsm::new(cfg);
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    // §8.2.2 event 20: the peer's OPEN while DelayOpen runs: OPEN + KEEPALIVE.
    let a = f.handle(Event::Received(peer_open(90)));
    let s = sent(&a);
    assert!(matches!(s[0], Message::Open(_)));
    assert_eq!(s[1], &Message::Keepalive);
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn open_checks_rfc4271_6_2() {
    // Wrong peer AS: Bad Peer AS.
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let wrong = Message::Open(Open::new(65099, 90, REMOTE_ID, vec![]));
    let a = f.handle(Event::Received(wrong));
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(n.error, ErrorCode::Open(OpenError::BadPeerAs));
    assert_eq!(f.state(), State::Idle);
    assert!(a.contains(&Action::Disconnect));
    // The session restarts after the idle hold time.
    assert!(timer(&a, Timer::IdleHold).is_some());

    // iBGP peer with our own identifier: Bad BGP Identifier.
    let mut f = Fsm::new(FsmConfig::new(65002, LOCAL_ID, 65002, caps()));
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let a = f.handle(Event::Received(Message::Open(Open::new(
        65002,
        90,
        LOCAL_ID,
        vec![],
    ))));
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(n.error, ErrorCode::Open(OpenError::BadBgpIdentifier));

    // Hold time below our minimum: Unacceptable Hold Time.
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let mut cfg_min = f.config().clone();
    cfg_min.min_hold_time = 10;
    let mut f = Fsm::new(cfg_min);
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let a = f.handle(Event::Received(peer_open(5)));
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(n.error, ErrorCode::Open(OpenError::UnacceptableHoldTime));
}

#[test]
fn hold_time_zero_disables_keepalives() {
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let a = f.handle(Event::Received(peer_open(0)));
    assert_eq!(f.negotiated_hold_time(), 0);
    assert!(timer(&a, Timer::Keepalive).is_none());
    assert!(a.contains(&Action::StopTimer(Timer::Hold)));
    let a = f.handle(Event::Received(Message::Keepalive));
    assert_eq!(f.state(), State::Established);
    assert!(timer(&a, Timer::Hold).is_none());
}

#[test]
fn established_traffic() {
    let mut f = established();
    let u = Update::end_of_rib(Family::IPV4_UNICAST);
    let a = f.handle(Event::Received(Message::Update(u.clone())));
    assert_eq!(a.last(), Some(&Action::Update(Box::new(u))));
    assert_eq!(timer(&a, Timer::Hold), Some(Duration::from_secs(90)));
    let a = f.handle(Event::TimerExpired(Timer::Keepalive));
    assert_eq!(sent(&a), [&Message::Keepalive]);
    assert_eq!(timer(&a, Timer::Keepalive), Some(Duration::from_secs(30)));
    let rr = RouteRefresh::request(Family::IPV4_UNICAST);
    let a = f.handle(Event::Received(Message::RouteRefresh(rr)));
    assert_eq!(a, [Action::RouteRefresh(rr)]);
}

#[test]
fn hold_timer_expiry_sends_notification_4() {
    let mut f = established();
    let a = f.handle(Event::TimerExpired(Timer::Hold));
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(n.error, ErrorCode::HoldTimerExpired);
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Down {
            was_established: true,
            ..
        }
    )));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn unexpected_messages_are_fsm_errors_rfc6608() {
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let a = f.handle(Event::Received(Message::Keepalive));
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(
        n.error,
        ErrorCode::Fsm(FsmError::UnexpectedMessageInOpenSent)
    );

    let mut f = established();
    let a = f.handle(Event::Received(peer_open(90)));
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(
        n.error,
        ErrorCode::Fsm(FsmError::UnexpectedMessageInEstablished)
    );
}

#[test]
fn decode_errors_become_notifications() {
    let mut f = established();
    let n = Notification::bare(ErrorCode::Update(UpdateError::MalformedAttributeList));
    let a = f.handle(Event::DecodeError(n.clone()));
    assert_eq!(sent(&a), [&Message::Notification(n.clone())]);
    assert!(a.contains(&Action::Down {
        reason: DownReason::NotificationSent(n),
        was_established: true
    }));
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    let n = Notification::bare(ErrorCode::MessageHeader(
        HeaderError::ConnectionNotSynchronized,
    ));
    let a = f.handle(Event::DecodeError(n.clone()));
    assert_eq!(sent(&a), [&Message::Notification(n)]);
}

#[test]
fn manual_stop_sends_the_shutdown_communication_rfc9003() {
    let mut f = established();
    let a = f.handle(Event::ManualStop {
        communication: Some("maintenance window".into()),
    });
    let Message::Notification(n) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(
        n.error,
        ErrorCode::Cease(CeaseError::AdministrativeShutdown)
    );
    assert_eq!(n.shutdown_communication(), Some(Ok("maintenance window")));
    // A manual stop does not restart by itself.
    assert!(timer(&a, Timer::IdleHold).is_none());
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn admin_down_for_max_prefix_restarts_after_the_given_time() {
    let mut f = established();
    let n = Notification::bare(ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached));
    let a = f.handle(Event::AdminDown {
        notification: n.clone(),
        idle: Some(Duration::from_secs(30)),
    });
    assert_eq!(sent(&a), [&Message::Notification(n)]);
    let idle = timer(&a, Timer::IdleHold).unwrap();
    assert!(idle <= Duration::from_secs(30) && idle >= Duration::from_millis(22_500));
    f.handle(Event::TimerExpired(Timer::IdleHold));
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn peer_rejecting_a_capability_gets_an_open_without_it_rfc5492_5() {
    let mut f = fsm();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    // The peer names ADD-PATH (69) as unsupported.
    let n = Notification::new(
        ErrorCode::Open(OpenError::UnsupportedCapability),
        vec![69, 4, 0, 1, 1, 3],
    );
    f.handle(Event::Received(Message::Notification(n)));
    assert_eq!(f.state(), State::Idle);
    assert!(!f.capabilities().iter().any(|c| c.code() == 69));
    assert!(f.capabilities().iter().any(|c| c.code() == 65));
    f.handle(Event::TimerExpired(Timer::IdleHold));
    let a = f.handle(Event::TcpConnected);
    let Message::Open(o) = sent(&a)[0] else {
        panic!()
    };
    assert!(!o.capabilities().any(|c| c.code() == 69));
}

/// RFC 4724 §3: the Restart State bit is cleared in the next OPEN once the
/// restart is over, the rest of the capability unchanged; a capability the
/// peer rejected (RFC 5492 §5) does not come back with it.
#[test]
fn restart_state_bit_is_cleared_for_the_next_open() {
    use crate::wire::capability::GracefulRestartFamily;
    let gr = |flags| {
        Capability::GracefulRestart(GracefulRestart {
            flags,
            restart_time: 120,
            families: vec![GracefulRestartFamily {
                family: Family::IPV4_UNICAST,
                flags: GracefulRestartFamily::FORWARDING_STATE,
            }],
        })
    };
    let mut c = caps();
    c.push(gr(
        GracefulRestart::RESTART_STATE | GracefulRestart::NOTIFICATION
    ));
    let mut f = Fsm::new(FsmConfig::new(4_200_000_001, LOCAL_ID, 65002, c));
    f.handle(Event::ManualStart);
    let a = f.handle(Event::TcpConnected);
    let Message::Open(o) = sent(&a)[0] else {
        panic!()
    };
    assert!(o
        .capabilities()
        .any(|c| matches!(c, Capability::GracefulRestart(g) if g.restarting())));
    f.set_restart_state(false);
    f.handle(Event::ManualStop {
        communication: None,
    });
    f.handle(Event::ManualStart);
    let a = f.handle(Event::TcpConnected);
    let Message::Open(o) = sent(&a)[0] else {
        panic!()
    };
    assert!(o
        .capabilities()
        .any(|c| *c == gr(GracefulRestart::NOTIFICATION)));

    // The peer rejects ADD-PATH; clearing the bit keeps it out.
    let n = Notification::new(
        ErrorCode::Open(OpenError::UnsupportedCapability),
        vec![69, 4, 0, 1, 1, 3],
    );
    f.handle(Event::Received(Message::Notification(n)));
    f.set_restart_state(false);
    assert!(!f.capabilities().iter().any(|c| c.code() == 69));
    assert!(f
        .capabilities()
        .contains(&gr(GracefulRestart::NOTIFICATION)));
}

#[test]
fn idle_hold_grows_with_flaps_and_is_capped() {
    let mut f = fsm();
    let mut last = Duration::ZERO;
    let mut holds = Vec::new();
    for _ in 0..10 {
        f.handle(Event::ManualStart);
        f.handle(Event::TcpConnected);
        f.handle(Event::Received(peer_open(90)));
        f.handle(Event::Received(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        let a = f.handle(Event::TcpFails);
        let idle = timer(&a, Timer::IdleHold).unwrap();
        holds.push(idle);
        last = idle;
    }
    assert!(holds[3] > holds[0] * 4, "{holds:?}");
    assert!(last <= Duration::from_secs(120), "{last:?}");
    f.reset_flaps();
    f.handle(Event::ManualStart);
    f.handle(Event::TcpConnected);
    f.handle(Event::Received(peer_open(90)));
    f.handle(Event::Received(Message::Keepalive));
    let a = f.handle(Event::TcpFails);
    assert!(timer(&a, Timer::IdleHold).unwrap() <= Duration::from_secs(2));
}
