//! The BGP finite state machine of RFC 4271 §8, sans-IO.
//!
//! One [`Fsm`] drives one peer's session: it takes [`Event`]s (administrative
//! start and stop, timer expiries, TCP connection events, decoded messages and
//! decode errors) and returns [`Action`]s (connect, disconnect, send a
//! message, arm or stop a timer, session up, session down, a route message
//! for the RIB). It owns no socket and reads no clock: the tokio driver in
//! `session` does both, and the tests drive it with plain values.
//!
//! Beyond RFC 4271 it carries what a session needs to be operated: capability
//! negotiation into a [`CodecContext`] (RFC 5492), the retry without a
//! capability the peer rejected with NOTIFICATION 2/7 (RFC 5492 §5), DelayOpen
//! (§8.1.1 option), jittered connect-retry (§10) and an idle hold time that
//! grows with repeated flaps (damping the "peer oscillation" of §8.1.1).
//!
//! Connection collisions (§6.8) involve two connections, hence two FSMs; the
//! arbiter that picks the survivor is [`crate::session::collision`].

use crate::wire::capability::{Capability, GracefulRestart};
use crate::wire::codec::CodecContext;
use crate::wire::notification::{CeaseError, ErrorCode, FsmError, OpenError};
use crate::wire::open::AS_TRANS;
use crate::wire::{Message, Notification, Open, RouteRefresh, Update};
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    DelayOpen,
    /// Time to stay Idle before an automatic restart (RFC 4271 §8.1.1
    /// IdleHoldTime, with DampPeerOscillations).
    IdleHold,
}

/// What the FSM is told (RFC 4271 §8.1 events, grouped). Events are
/// transient, so a message travels inline rather than boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Events 1 and 4 (passive per configuration).
    ManualStart,
    /// Event 2: with an optional RFC 9003 shutdown communication.
    ManualStop {
        communication: Option<String>,
    },
    /// Events 3 and 5: the automatic restart after IdleHold.
    AutomaticStart,
    /// Stop with a given NOTIFICATION (max-prefix, configuration change) and
    /// stay Idle for `idle`; a restart follows only if `idle` is `Some`.
    AdminDown {
        notification: Notification,
        idle: Option<Duration>,
    },
    /// The link the peer is directly connected through went down (fast
    /// external failover): the session ends at once, without a
    /// NOTIFICATION (nothing crosses a dead link), and stays Idle until
    /// started again.
    LinkDown,
    TimerExpired(Timer),
    /// Event 16: our outgoing connection was established.
    TcpConnected,
    /// Event 17: an incoming connection from the peer was accepted.
    TcpAccepted,
    /// Event 18.
    TcpFails,
    /// Events 19–28: a message decoded from the connection.
    Received(Message),
    /// Events 21, 22, 28: the driver failed to decode a message.
    DecodeError(Notification),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION.
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The TCP connection failed or closed.
    ConnectionLost,
    /// An administrative stop without a NOTIFICATION (no session yet).
    Stopped,
    /// The link to a directly connected peer went down ([`Event::LinkDown`]).
    LinkDown,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION: {n}"),
            DownReason::NotificationReceived(n) => write!(f, "received NOTIFICATION: {n}"),
            DownReason::ConnectionLost => f.write_str("connection lost"),
            DownReason::Stopped => f.write_str("stopped"),
            DownReason::LinkDown => f.write_str("link down (fast external failover)"),
        }
    }
}

/// What the FSM asks its driver (or the RIB) to do.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open an outgoing TCP connection (§8.2.2 Idle → Connect).
    Connect,
    /// Close the TCP connection.
    Disconnect,
    Send(Message),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// The session is up: the codec context to use from now on and the peer's OPEN.
    Established {
        ctx: CodecContext,
        remote: Box<Open>,
    },
    /// The session left Established (or failed to reach it).
    Down {
        reason: DownReason,
        was_established: bool,
    },
    Update(Box<Update>),
    RouteRefresh(RouteRefresh),
}

/// A peer's static session parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_as: u32,
    pub local_id: Ipv4Addr,
    /// The AS the peer must announce (§6.2 Bad Peer AS otherwise).
    pub remote_as: u32,
    /// Our proposed hold time in seconds; 0 disables keepalives (§4.2).
    pub hold_time: u16,
    /// Keepalive interval; `None` means a third of the negotiated hold time.
    pub keepalive: Option<u16>,
    /// The smallest hold time we accept from the peer, other than 0.
    pub min_hold_time: u16,
    pub connect_retry: Duration,
    /// Only wait for the peer to connect (§8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// §8.1.1 DelayOpen: wait this long for the peer's OPEN before sending ours.
    pub delay_open: Option<Duration>,
    /// The first idle hold time after a session drops; doubles per flap up to `idle_hold_max`.
    pub idle_hold: Duration,
    pub idle_hold_max: Duration,
    pub capabilities: Vec<Capability>,
    /// Seed for the retry jitter, so tests are deterministic.
    pub jitter_seed: u64,
}

impl FsmConfig {
    pub fn new(
        local_as: u32,
        local_id: Ipv4Addr,
        remote_as: u32,
        capabilities: Vec<Capability>,
    ) -> Self {
        Self {
            local_as,
            local_id,
            remote_as,
            hold_time: 90,
            keepalive: None,
            min_hold_time: 3,
            connect_retry: Duration::from_secs(30),
            passive: false,
            delay_open: None,
            idle_hold: Duration::from_secs(1),
            idle_hold_max: Duration::from_secs(120),
            capabilities,
            jitter_seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    /// Capabilities we still offer: the peer may have rejected some (RFC 5492 §5).
    capabilities: Vec<Capability>,
    ctx: CodecContext,
    remote_open: Option<Open>,
    negotiated_hold: u16,
    connect_retry_counter: u32,
    /// Consecutive sessions that dropped: drives the idle hold time.
    flaps: u32,
    /// Consecutive refused or failed connection attempts: drives the retry
    /// delay, from 1 s doubling up to ConnectRetryTime.
    refused: u32,
    delay_open_running: bool,
    rng: u64,
}

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Self {
        let capabilities = cfg.capabilities.clone();
        let rng = cfg.jitter_seed | 1;
        Self {
            cfg,
            state: State::Idle,
            capabilities,
            ctx: CodecContext::default(),
            remote_open: None,
            negotiated_hold: 0,
            connect_retry_counter: 0,
            flaps: 0,
            refused: 0,
            delay_open_running: false,
            rng,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The codec context for the current connection: RFC 4271 only until
    /// Established.
    pub fn codec(&self) -> &CodecContext {
        &self.ctx
    }

    pub fn remote_open(&self) -> Option<&Open> {
        self.remote_open.as_ref()
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// Capabilities offered in our next OPEN.
    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    /// Sets or clears the Restart State bit of the graceful-restart
    /// capability in our next OPENs (RFC 4724 §3: set only while we are
    /// restarting). A capability the peer rejected stays out.
    pub fn set_restart_state(&mut self, restarting: bool) {
        for c in self
            .cfg
            .capabilities
            .iter_mut()
            .chain(self.capabilities.iter_mut())
        {
            if let Capability::GracefulRestart(g) = c {
                if restarting {
                    g.flags |= GracefulRestart::RESTART_STATE;
                } else {
                    g.flags &= !GracefulRestart::RESTART_STATE;
                }
            }
        }
    }

    pub fn negotiated_hold_time(&self) -> u16 {
        self.negotiated_hold
    }

    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// §10 jitter: a factor in [0.75, 1.0) applied to retry timers.
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64*: plenty for spreading retries apart.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let f = 0.75 + 0.25 * (r as f64 / (1u64 << 53) as f64);
        d.mul_f64(f)
    }

    /// The OPEN this FSM sends (also sent by the driver on a second
    /// connection during a §6.8 collision).
    pub fn local_open(&self) -> Open {
        Open::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.local_id,
            self.capabilities.clone(),
        )
    }

    /// RFC 4271 §8.2.2: the large hold time used while waiting for the OPEN
    /// ("suggested value ... 4 minutes").
    const OPEN_HOLD: Duration = Duration::from_secs(240);

    /// Feeds one event; returns the actions in the order they must happen.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.step(event, &mut out);
        out
    }

    fn step(&mut self, event: Event, out: &mut Vec<Action>) {
        use Event::*;
        use State::*;
        match (self.state, event) {
            // Administrative events in any state.
            (s, ManualStop { communication }) => {
                if matches!(s, OpenSent | OpenConfirm | Established) {
                    // RFC 9003 §2: Administrative Shutdown carries the communication.
                    let n = match communication {
                        Some(text) => {
                            Notification::shutdown(CeaseError::AdministrativeShutdown, &text)
                        }
                        None => {
                            Notification::bare(ErrorCode::Cease(CeaseError::AdministrativeShutdown))
                        }
                    };
                    let n = self.outgoing(n);
                    out.push(Action::Send(Message::Notification(n.clone())));
                    self.enter_idle(out, DownReason::NotificationSent(n), None);
                } else {
                    self.enter_idle(out, DownReason::Stopped, None);
                }
                self.connect_retry_counter = 0;
                self.flaps = 0;
            }
            (s, AdminDown { notification, idle }) => {
                if matches!(s, OpenSent | OpenConfirm | Established) {
                    let notification = self.outgoing(notification);
                    out.push(Action::Send(Message::Notification(notification.clone())));
                    self.enter_idle(out, DownReason::NotificationSent(notification), idle);
                } else {
                    self.enter_idle(out, DownReason::Stopped, idle);
                }
            }
            // RFC 4271 §8.2.2 leaves local detection of a dead path to the
            // implementation; this is ManualStop without its NOTIFICATION
            // (it cannot cross a dead link): drop the connection, go Idle,
            // no automatic restart. The driver starts it again when the
            // link is back.
            (Idle, LinkDown) => {}
            (_, LinkDown) => {
                self.enter_idle(out, DownReason::LinkDown, None);
                self.connect_retry_counter = 0;
            }
            (Idle, ManualStart)
            | (Idle, AutomaticStart)
            | (Idle, TimerExpired(Timer::IdleHold)) => {
                // §8.2.2 Idle, events 1/3 (active) and 4/5 (passive).
                self.connect_retry_counter = 0;
                let t = self.jitter(self.cfg.connect_retry);
                out.push(Action::StartTimer(Timer::ConnectRetry, t));
                if self.cfg.passive {
                    self.state = Active;
                } else {
                    self.state = Connect;
                    out.push(Action::Connect);
                }
            }
            (Idle, _) => {
                // §8.2.2 Idle: other events are ignored.
            }
            (Connect | Active, TimerExpired(Timer::ConnectRetry)) => {
                // §8.2.2 Connect/Active, event 9: drop any attempt, retry.
                out.push(Action::Disconnect);
                let t = self.jitter(self.cfg.connect_retry);
                out.push(Action::StartTimer(Timer::ConnectRetry, t));
                self.delay_open_running = false;
                out.push(Action::StopTimer(Timer::DelayOpen));
                if self.cfg.passive {
                    self.state = Active;
                } else {
                    self.state = Connect;
                    out.push(Action::Connect);
                }
            }
            (Connect | Active, TcpConnected | TcpAccepted) => {
                self.refused = 0;
                out.push(Action::StopTimer(Timer::ConnectRetry));
                self.ctx = CodecContext::default();
                if let Some(d) = self.cfg.delay_open {
                    // §8.2.2 Connect, event 16/17 with DelayOpen set.
                    self.delay_open_running = true;
                    out.push(Action::StartTimer(Timer::DelayOpen, d));
                    self.state = if self.state == Connect {
                        Connect
                    } else {
                        Active
                    };
                } else {
                    out.push(Action::Send(Message::Open(self.local_open())));
                    out.push(Action::StartTimer(Timer::Hold, Self::OPEN_HOLD));
                    self.state = OpenSent;
                }
            }
            (Connect | Active, TimerExpired(Timer::DelayOpen)) if self.delay_open_running => {
                self.delay_open_running = false;
                out.push(Action::Send(Message::Open(self.local_open())));
                out.push(Action::StartTimer(Timer::Hold, Self::OPEN_HOLD));
                self.state = OpenSent;
            }
            (Connect | Active, Received(Message::Open(open))) if self.delay_open_running => {
                // §8.2.2 Connect, event 20: OPEN while DelayOpen runs.
                self.delay_open_running = false;
                out.push(Action::StopTimer(Timer::DelayOpen));
                out.push(Action::Send(Message::Open(self.local_open())));
                self.receive_open(open, out);
            }
            (Connect | Active, TcpFails) => {
                // §8.2.2 Connect/Active, event 18.
                out.push(Action::Disconnect);
                self.delay_open_running = false;
                out.push(Action::StopTimer(Timer::DelayOpen));
                if self.state == Connect {
                    // §8.2.2 leaves the retry delay to us: a peer that
                    // refused is usually restarting (a node's petreld
                    // after an upgrade), so retry soon, then back off to
                    // ConnectRetryTime; waiting the full time at once
                    // can outlast a graceful-restart window.
                    let backoff = Duration::from_secs(1u64 << self.refused.min(16));
                    self.refused = self.refused.saturating_add(1);
                    let t = self.jitter(self.cfg.connect_retry.min(backoff));
                    out.push(Action::StartTimer(Timer::ConnectRetry, t));
                    self.state = Active;
                } else {
                    self.connect_retry_counter += 1;
                    self.enter_idle(out, DownReason::ConnectionLost, Some(self.cfg.idle_hold));
                }
            }
            (Connect | Active, Received(Message::Notification(n))) => {
                // §8.2.2: NOTIFICATION (event 24/25) before our OPEN.
                self.connect_retry_counter += 1;
                out.push(Action::Disconnect);
                self.enter_idle(
                    out,
                    DownReason::NotificationReceived(n),
                    Some(self.cfg.idle_hold),
                );
            }
            (Connect | Active, _) => {
                // §8.2.2: any other event is an FSM error; no session yet, so
                // no NOTIFICATION: drop and restart later.
                self.connect_retry_counter += 1;
                out.push(Action::Disconnect);
                self.enter_idle(out, DownReason::ConnectionLost, Some(self.cfg.idle_hold));
            }
            (OpenSent, Received(Message::Open(open))) => {
                // §8.2.2 OpenSent, event 19.
                self.receive_open(open, out);
            }
            (OpenSent, TcpFails) => {
                // §8.2.2 OpenSent, event 18: back to Active.
                out.push(Action::Disconnect);
                let t = self.jitter(self.cfg.connect_retry);
                out.push(Action::StartTimer(Timer::ConnectRetry, t));
                out.push(Action::StopTimer(Timer::Hold));
                self.state = Active;
            }
            (OpenSent | OpenConfirm | Established, Received(Message::Notification(n))) => {
                self.receive_notification(n, out);
            }
            (OpenSent | OpenConfirm | Established, DecodeError(n)) => {
                self.send_notification(n, out);
            }
            (OpenSent | OpenConfirm | Established, TimerExpired(Timer::Hold)) => {
                // §8.2.2, event 10: Hold Timer Expired.
                self.send_notification(Notification::bare(ErrorCode::HoldTimerExpired), out);
            }
            (OpenConfirm | Established, TimerExpired(Timer::Keepalive)) => {
                out.push(Action::Send(Message::Keepalive));
                if let Some(k) = self.keepalive_interval() {
                    out.push(Action::StartTimer(Timer::Keepalive, k));
                }
            }
            (OpenConfirm, Received(Message::Keepalive)) => {
                // §8.2.2 OpenConfirm, event 26.
                self.restart_hold(out);
                self.state = Established;
                let remote = Box::new(
                    self.remote_open
                        .clone()
                        .unwrap_or_else(|| self.local_open()),
                );
                out.push(Action::Established {
                    ctx: self.ctx.clone(),
                    remote,
                });
            }
            (OpenConfirm | Established, TcpFails)
            | (OpenSent | OpenConfirm | Established, TcpConnected | TcpAccepted) => {
                // A second connection is the driver's collision business
                // (§6.8); reaching here means this connection failed.
                out.push(Action::Disconnect);
                self.enter_idle(out, DownReason::ConnectionLost, Some(self.cfg.idle_hold));
            }
            (Established, Received(Message::Keepalive)) => self.restart_hold(out),
            (Established, Received(Message::Update(u))) => {
                self.restart_hold(out);
                out.push(Action::Update(Box::new(u)));
            }
            (Established, Received(Message::RouteRefresh(r))) => {
                // RFC 2918 §4: a ROUTE-REFRESH resets nothing; hand it on.
                out.push(Action::RouteRefresh(r));
            }
            (OpenSent | OpenConfirm | Established, Received(m)) => {
                // §8.2.2: any other message is a Finite State Machine Error
                // with the RFC 6608 subcode for the state.
                let sub = match self.state {
                    OpenSent => FsmError::UnexpectedMessageInOpenSent,
                    OpenConfirm => FsmError::UnexpectedMessageInOpenConfirm,
                    _ => FsmError::UnexpectedMessageInEstablished,
                };
                let _ = m;
                self.send_notification(Notification::bare(ErrorCode::Fsm(sub)), out);
            }
            (
                OpenSent | OpenConfirm | Established,
                TimerExpired(_) | ManualStart | AutomaticStart,
            ) => {
                // Stale timers and repeated starts are ignored (§8.2.2 lists
                // ManualStart/AutomaticStart as ignored outside Idle).
            }
        }
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        if self.negotiated_hold == 0 {
            return None;
        }
        // RFC 4271 §10: one third of the hold time by default.
        let third = (self.negotiated_hold / 3).max(1);
        let k = self.cfg.keepalive.map_or(third, |k| k.min(third)).max(1);
        Some(Duration::from_secs(k as u64))
    }

    fn restart_hold(&self, out: &mut Vec<Action>) {
        if self.negotiated_hold > 0 {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(self.negotiated_hold as u64),
            ));
        }
    }

    fn receive_open(&mut self, open: Open, out: &mut Vec<Action>) {
        if let Err(n) = self.check_open(&open) {
            self.send_notification(n, out);
            return;
        }
        // RFC 4271 §4.2: the smaller of the two hold times.
        self.negotiated_hold = self.cfg.hold_time.min(open.hold_time);
        let remote_caps: Vec<Capability> = open.capabilities().cloned().collect();
        self.ctx = CodecContext::negotiate(&self.capabilities, &remote_caps);
        self.remote_open = Some(open);
        out.push(Action::StopTimer(Timer::ConnectRetry));
        out.push(Action::Send(Message::Keepalive));
        match self.keepalive_interval() {
            Some(k) => out.push(Action::StartTimer(Timer::Keepalive, k)),
            None => out.push(Action::StopTimer(Timer::Keepalive)),
        }
        if self.negotiated_hold > 0 {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(self.negotiated_hold as u64),
            ));
        } else {
            out.push(Action::StopTimer(Timer::Hold));
        }
        self.state = State::OpenConfirm;
    }

    /// RFC 4271 §6.2 checks that need our configuration.
    fn check_open(&self, open: &Open) -> Result<(), Notification> {
        let asn = open.asn();
        // RFC 6793 §4.1: a 4-octet AS comes in the capability, AS_TRANS in My AS.
        if asn != self.cfg.remote_as || (asn > 0xffff && open.my_as != AS_TRANS) {
            return Err(Notification::new(
                ErrorCode::Open(OpenError::BadPeerAs),
                open.my_as.to_be_bytes().to_vec(),
            ));
        }
        // RFC 6286 §2.2: an internal peer may not use our identifier.
        if self.cfg.remote_as == self.cfg.local_as && open.bgp_id == self.cfg.local_id {
            return Err(Notification::bare(ErrorCode::Open(
                OpenError::BadBgpIdentifier,
            )));
        }
        // §6.2: a hold time we do not accept (1 and 2 are rejected by the codec).
        if open.hold_time != 0 && open.hold_time < self.cfg.min_hold_time {
            return Err(Notification::bare(ErrorCode::Open(
                OpenError::UnacceptableHoldTime,
            )));
        }
        Ok(())
    }

    fn receive_notification(&mut self, n: Notification, out: &mut Vec<Action>) {
        // RFC 5492 §5: the peer does not support some of our capabilities; the
        // data lists them. Offer the next OPEN without them.
        if n.error == ErrorCode::Open(OpenError::UnsupportedCapability)
            && self.state != State::Established
        {
            let rejected = parse_capability_codes(&n.data);
            if rejected.is_empty() {
                // Nothing named: fall back to the capabilities every BGP-4
                // speaker with RFC 5492 understands.
                self.capabilities.retain(|c| {
                    matches!(c, Capability::Multiprotocol(_) | Capability::RouteRefresh)
                });
            } else {
                self.capabilities.retain(|c| !rejected.contains(&c.code()));
            }
        }
        out.push(Action::Disconnect);
        self.enter_idle(
            out,
            DownReason::NotificationReceived(n),
            Some(self.cfg.idle_hold),
        );
    }

    /// RFC 8538 §2: both OPENs of this session carried the graceful-restart
    /// N bit, so a NOTIFICATION keeps the graceful-restart procedures and
    /// ending a session for good takes a Hard Reset.
    pub fn hard_reset_negotiated(&self) -> bool {
        let n_bit = |c: &Capability| matches!(c, Capability::GracefulRestart(g) if g.flags & GracefulRestart::NOTIFICATION != 0);
        self.state == State::Established
            && self.capabilities.iter().any(n_bit)
            && self
                .remote_open
                .as_ref()
                .is_some_and(|o| o.capabilities().any(n_bit))
    }

    /// What goes on the wire for `n`: RFC 8538 §3/§5.1, a NOTIFICATION that
    /// must end the session and its routes for good travels inside a Hard
    /// Reset when the N bit is negotiated (otherwise the peer would keep
    /// our routes stale for its restart time).
    fn outgoing(&self, n: Notification) -> Notification {
        if n.requires_hard_reset() && !n.is_hard_reset() && self.hard_reset_negotiated() {
            Notification::hard_reset(&n)
        } else {
            n
        }
    }

    fn send_notification(&mut self, n: Notification, out: &mut Vec<Action>) {
        let n = self.outgoing(n);
        out.push(Action::Send(Message::Notification(n.clone())));
        out.push(Action::Disconnect);
        self.connect_retry_counter += 1;
        self.enter_idle(
            out,
            DownReason::NotificationSent(n),
            Some(self.cfg.idle_hold),
        );
    }

    /// Enters Idle, stopping every timer. With `restart`, an IdleHold timer
    /// brings the session back (`AutomaticStart`); it grows with repeated flaps.
    fn enter_idle(&mut self, out: &mut Vec<Action>, reason: DownReason, restart: Option<Duration>) {
        let was_established = self.state == State::Established;
        let was_connected = !matches!(self.state, State::Idle);
        if !matches!(out.last(), Some(Action::Disconnect)) && was_connected {
            out.push(Action::Disconnect);
        }
        for t in [
            Timer::ConnectRetry,
            Timer::Hold,
            Timer::Keepalive,
            Timer::DelayOpen,
            Timer::IdleHold,
        ] {
            out.push(Action::StopTimer(t));
        }
        self.delay_open_running = false;
        out.push(Action::Down {
            reason,
            was_established,
        });
        self.state = State::Idle;
        self.ctx = CodecContext::default();
        self.negotiated_hold = 0;
        if let Some(base) = restart {
            if was_established {
                self.flaps += 1;
            }
            // Damp oscillation: base × 2^(flaps-1), capped.
            let factor = 1u32 << self.flaps.saturating_sub(1).min(16);
            let idle = base
                .saturating_mul(factor)
                .min(self.cfg.idle_hold_max.max(base));
            let idle = self.jitter(idle);
            out.push(Action::StartTimer(Timer::IdleHold, idle));
        }
    }

    /// A session that stayed up long enough forgets its flap history.
    pub fn reset_flaps(&mut self) {
        self.flaps = 0;
    }
}

/// The capability codes listed in a NOTIFICATION 2/7's data (RFC 5492 §5:
/// the capabilities as TLVs).
fn parse_capability_codes(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 2 <= data.len() {
        out.push(data[p]);
        p += 2 + data[p + 1] as usize;
    }
    out
}

#[cfg(test)]
mod tests;
