//! One BFD session (RFC 5880 §6), sans-IO, in quinn-proto's shape.
//!
//! The driver feeds it received packets ([`Session::handle_packet`]) and the
//! passing of time ([`Session::handle_timeout`]), sends what
//! [`Session::poll_transmit`] returns, sleeps until [`Session::poll_timeout`],
//! and reports what [`Session::poll_event`] returns. Nothing here reads a
//! clock or touches a socket, so the tests below drive it with plain values.
//!
//! Asynchronous mode only: we never set the D bit (Demand mode off), though
//! we honour a peer's (§6.8.7). No Echo function: Required Min Echo RX is 0.
//! Always the Active role, as RFC 5881 §4 requires of single-hop sessions.
//!
//! Timers: the state variables of §6.8.1 are what we advertise; the values
//! in force (`tx_in_force`, `rx_in_force`) lag behind them while a Poll
//! Sequence announces a change (§6.8.3), and only where the RFC says so.

use super::auth::{Auth, AuthKey};
use super::packet::{ControlPacket, DecodeError, Diag, State};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// §6.8.3: bfd.DesiredMinTxInterval is "not less than one second" while the
/// session is not Up.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's configuration; [`Session::set_timers`] changes the timers live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.DesiredMinTxInterval once Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
    pub auth: Option<AuthKey>,
    /// The C bit (§4.1). petreld runs BFD in its own process, so false:
    /// a restart of petreld takes BFD down with it (RFC 5882 §4.3).
    pub control_plane_independent: bool,
}

impl SessionConfig {
    pub fn new(desired_min_tx: Duration, required_min_rx: Duration, detect_mult: u8) -> Self {
        Self {
            desired_min_tx,
            required_min_rx,
            detect_mult: detect_mult.max(1),
            auth: None,
            control_plane_independent: false,
        }
    }
}

/// A change of bfd.SessionState, with what explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    /// bfd.LocalDiag after the change.
    pub diag: Diag,
    /// The remote's state and diagnostic as last received: a remote
    /// AdminDown must not be taken as a failure (RFC 5882 §3.2).
    pub remote_state: State,
    pub remote_diag: Diag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    StateChange(StateChange),
}

/// Why a received packet was discarded (§6.8.6, §6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("Your Discriminator {0:#x} is not this session's")]
    UnknownYourDiscriminator(u32),
    #[error("Your Discriminator is zero in a packet in state {0}")]
    ZeroYourDiscriminator(State),
    #[error("the A bit is set but the session uses no authentication")]
    UnexpectedAuth,
    #[error("the A bit is clear but the session uses authentication")]
    MissingAuth,
    #[error("authentication failed: {0}")]
    Auth(#[from] super::auth::AuthError),
    #[error("the session is AdminDown")]
    AdminDown,
}

impl Discard {
    /// Whether the packet was refused for its authentication: a
    /// misconfiguration (or an attack), not a transient.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Discard::UnexpectedAuth | Discard::MissingAuth | Discard::Auth(_)
        )
    }
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub tx: u64,
    pub rx: u64,
    pub discarded: u64,
    /// Of `discarded`: those that failed authentication (§6.7), or carried
    /// an A bit that does not match the session's (§6.8.6): a key or
    /// type that differs from the peer's shows here.
    pub auth_failures: u64,
    /// Transitions out of Up.
    pub flaps: u64,
}

/// Events left undrained beyond this drop the oldest; a driver drains after
/// every input, and one input makes at most two.
const EVENT_QUEUE: usize = 16;

pub struct Session {
    cfg: SessionConfig,
    auth: Option<Auth>,
    /// bfd.SessionState.
    state: State,
    /// bfd.RemoteSessionState.
    remote_state: State,
    /// bfd.LocalDiscr.
    local_discr: u32,
    /// bfd.RemoteDiscr.
    remote_discr: u32,
    /// bfd.LocalDiag.
    local_diag: Diag,
    /// The Diag of the last packet received.
    remote_diag: Diag,
    /// bfd.DesiredMinTxInterval, as advertised.
    desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval, as advertised.
    required_min_rx: Duration,
    /// bfd.RemoteMinRxInterval.
    remote_min_rx: Duration,
    /// bfd.RemoteDemandMode.
    remote_demand: bool,
    /// The Desired Min TX Interval and Detect Mult last received.
    remote_desired_min_tx: Duration,
    remote_detect_mult: u8,
    /// A Poll Sequence is being transmitted (§6.5) ...
    polling: bool,
    /// ... and the parameters changed again since it began, so a Final may
    /// answer a Poll that carried older values: one more round follows.
    poll_again: bool,
    /// The DesiredMinTxInterval that paces our packets and the
    /// RequiredMinRxInterval the Detection Time uses (§6.8.3).
    tx_in_force: Duration,
    rx_in_force: Duration,
    /// A Final is owed to a received Poll (§6.8.7).
    final_due: bool,
    last_tx: Option<Instant>,
    /// The jitter drawn for the interval after `last_tx`, in thousandths.
    tx_jitter: u32,
    next_tx: Instant,
    /// When the Detection Time runs out without a packet (§6.8.4).
    detect_at: Option<Instant>,
    /// When bfd.AuthSeqKnown is reset: twice the Detection Time (§6.8.1).
    forget_seq_at: Option<Instant>,
    up_since: Option<Instant>,
    now: Instant,
    events: VecDeque<Event>,
    stats: Stats,
    rng: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

impl Session {
    /// A session in state Down. `local_discr` is bfd.LocalDiscr (nonzero,
    /// unique on this system: the registry picks it); `seed` drives the
    /// transmit jitter and the first authentication sequence number, and
    /// should be random (§6.8.1, §6.8.7).
    pub fn new(cfg: SessionConfig, local_discr: u32, seed: u64, now: Instant) -> Self {
        let mut rng = seed | 1;
        let auth = cfg
            .auth
            .clone()
            .map(|k| Auth::new(k, xorshift(&mut rng) as u32));
        let desired = cfg.desired_min_tx.max(SLOW_TX);
        let required = cfg.required_min_rx;
        Self {
            cfg,
            auth,
            state: State::Down,
            remote_state: State::Down,
            local_discr,
            remote_discr: 0,
            local_diag: Diag::NoDiagnostic,
            remote_diag: Diag::NoDiagnostic,
            desired_min_tx: desired,
            required_min_rx: required,
            // §6.8.1: bfd.RemoteMinRxInterval "MUST be initialized to 1".
            remote_min_rx: Duration::from_micros(1),
            remote_demand: false,
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            polling: false,
            poll_again: false,
            tx_in_force: desired,
            rx_in_force: required,
            final_due: false,
            last_tx: None,
            tx_jitter: 1000,
            next_tx: now,
            detect_at: None,
            forget_seq_at: None,
            up_since: None,
            now,
            events: VecDeque::new(),
            stats: Stats::default(),
            rng,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn remote_state(&self) -> State {
        self.remote_state
    }
    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }
    pub fn remote_diag(&self) -> Diag {
        self.remote_diag
    }
    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn up_since(&self) -> Option<Instant> {
        self.up_since
    }
    /// Whether a Poll Sequence is being transmitted.
    pub fn polling(&self) -> bool {
        self.polling
    }
    /// The Desired Min TX Interval and Detect Mult last received.
    pub fn remote_desired_min_tx(&self) -> Duration {
        self.remote_desired_min_tx
    }
    pub fn remote_detect_mult(&self) -> u8 {
        self.remote_detect_mult
    }
    /// The remote's Required Min RX Interval (bfd.RemoteMinRxInterval).
    pub fn remote_min_rx(&self) -> Duration {
        self.remote_min_rx
    }

    /// §6.8.7: the greater of bfd.DesiredMinTxInterval (the value in force)
    /// and bfd.RemoteMinRxInterval, before jitter.
    pub fn tx_interval(&self) -> Duration {
        self.tx_in_force.max(self.remote_min_rx)
    }

    /// §6.8.4: "the value of Detect Mult received from the remote system,
    /// multiplied by the agreed transmit interval of the remote system (the
    /// greater of bfd.RequiredMinRxInterval and the last received Desired
    /// Min TX Interval)". `None` until a packet has been received.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult > 0).then(|| {
            self.rx_in_force.max(self.remote_desired_min_tx) * self.remote_detect_mult as u32
        })
    }

    /// Decodes and receives one packet (§6.8.6). `Err` says which rule discarded it.
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) -> Result<(), Discard> {
        let p = match ControlPacket::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.discarded += 1;
                return Err(e.into());
            }
        };
        self.handle_control(now, &p, bytes)
    }

    /// Receives a decoded packet; `raw` is its encoding as received (for
    /// authentication). The registry decodes once to demultiplex and calls this.
    pub fn handle_control(
        &mut self,
        now: Instant,
        p: &ControlPacket,
        raw: &[u8],
    ) -> Result<(), Discard> {
        self.now = now;
        let r = self.receive(now, p, raw);
        match r {
            Ok(()) => self.stats.rx += 1,
            Err(e) => {
                self.stats.discarded += 1;
                if e.is_auth() {
                    self.stats.auth_failures += 1;
                }
            }
        }
        r
    }

    fn receive(&mut self, now: Instant, p: &ControlPacket, raw: &[u8]) -> Result<(), Discard> {
        // §6.8.6: "If the Your Discriminator field is nonzero, it MUST be used
        // to select the session ... If no session is found, the packet MUST be
        // discarded."
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return Err(Discard::UnknownYourDiscriminator(p.your_discriminator));
        }
        // §6.8.6: "If the Your Discriminator field is zero and the State field
        // is not Down or AdminDown, the packet MUST be discarded."
        if p.your_discriminator == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Discard::ZeroYourDiscriminator(p.state));
        }
        match (p.auth.is_some(), self.auth.as_mut()) {
            // §6.8.6: "If the A bit is set and no authentication is in use
            // (bfd.AuthType is zero), the packet MUST be discarded."
            (true, None) => return Err(Discard::UnexpectedAuth),
            // §6.8.6: "If the A bit is clear and authentication is in use
            // (bfd.AuthType is nonzero), the packet MUST be discarded."
            (false, Some(_)) => return Err(Discard::MissingAuth),
            // §6.8.6: "If the A bit is set, the packet MUST be authenticated
            // under the rules of section 6.7".
            (true, Some(a)) => a.verify(p, raw)?,
            (false, None) => {}
        }
        // §6.8.6: set bfd.RemoteDiscr, bfd.RemoteSessionState,
        // bfd.RemoteDemandMode and bfd.RemoteMinRxInterval from the packet.
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_rx = Duration::from_micros(p.required_min_rx as u64);
        self.remote_desired_min_tx = Duration::from_micros(p.desired_min_tx as u64);
        self.remote_detect_mult = p.detect_mult;
        self.remote_diag = p.diag;
        // Required Min Echo RX: we send no Echo packets, so nothing ceases.
        // §6.8.6: "If a Poll Sequence is being transmitted by the local system
        // and the Final (F) bit in the received packet is set, the Poll
        // Sequence MUST be terminated."
        if self.polling && p.final_ {
            self.poll_terminated();
        }
        // §6.8.6: "Update the transmit interval as described in section 6.8.2."
        // (The Detection Time is computed from the fields just set.)
        self.reschedule(now);
        // §6.8.6: "If bfd.SessionState is AdminDown: Discard the packet".
        if self.state == State::AdminDown {
            return Err(Discard::AdminDown);
        }
        match (self.state, p.state) {
            // "If received state is AdminDown: If bfd.SessionState is not Down,
            // set bfd.LocalDiag to 3 and bfd.SessionState to Down."
            (State::Down, State::AdminDown) => {}
            (_, State::AdminDown) => self.set_state(State::Down, Diag::NeighborSignaledSessionDown),
            // "If bfd.SessionState is Down: If received State is Down, set
            // bfd.SessionState to Init; else if received State is Init, set
            // bfd.SessionState to Up."
            (State::Down, State::Down) => self.set_state(State::Init, self.local_diag),
            (State::Down, State::Init) => self.set_state(State::Up, Diag::NoDiagnostic),
            // "Else if bfd.SessionState is Init: If received State is Init or
            // Up, set bfd.SessionState to Up."
            (State::Init, State::Init | State::Up) => self.set_state(State::Up, Diag::NoDiagnostic),
            // "Else (bfd.SessionState is Up): If received State is Down, set
            // bfd.LocalDiag to 3 and bfd.SessionState to Down."
            (State::Up, State::Down) => {
                self.set_state(State::Down, Diag::NeighborSignaledSessionDown)
            }
            _ => {}
        }
        // Demand mode (§6.6): the remote's D bit is read where we decide to
        // transmit (`periodic_allowed`); we never ask for it.
        // §6.8.6: "If the Poll (P) bit is set, send a BFD Control packet to the
        // remote system with the Poll (P) bit clear, and the Final (F) bit set".
        if p.poll {
            self.final_due = true;
        }
        // §6.8.6: "If the packet was not discarded, it has been received for
        // purposes of the Detection Time expiration rules in section 6.8.4."
        if let Some(d) = self.detection_time() {
            self.detect_at = Some(now + d);
            if self.auth.is_some() {
                self.forget_seq_at = Some(now + 2 * d);
            }
        }
        Ok(())
    }

    /// Runs the timers due at `now`: detection (§6.8.4) and the reset of
    /// bfd.AuthSeqKnown (§6.8.1). Transmission is [`Session::poll_transmit`]'s.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.detect_at.is_some_and(|t| now >= t) {
            self.detect_at = None;
            // §6.8.1: bfd.RemoteDiscr "MUST be set to zero" when a Detection
            // Time passes without a valid packet.
            self.remote_discr = 0;
            // §6.8.4: "and bfd.SessionState is Init or Up, the session has gone
            // down -- the local system MUST set bfd.SessionState to Down and
            // bfd.LocalDiag to 1 (Control Detection Time Expired)."
            if matches!(self.state, State::Init | State::Up) {
                self.set_state(State::Down, Diag::ControlDetectionTimeExpired);
            }
        }
        if self.forget_seq_at.is_some_and(|t| now >= t) {
            self.forget_seq_at = None;
            if let Some(a) = self.auth.as_mut() {
                a.forget_sequence();
            }
        }
    }

    /// The next packet to send now, if any: a Final owed to a Poll at once,
    /// else the periodic packet when it is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.now = now;
        if self.final_due {
            // §6.8.7: "without respect to the transmission timer or any other
            // transmission limitations"; §6.5: never both P and F.
            self.final_due = false;
            return Some(self.build(false, true));
        }
        if !self.periodic_allowed() || now < self.next_tx {
            return None;
        }
        // §6.5: a Poll Sequence rides on the periodic packets.
        let b = self.build(self.polling, false);
        self.last_tx = Some(now);
        self.tx_jitter = self.draw_jitter();
        self.next_tx = now + self.jittered(self.tx_interval());
        Some(b)
    }

    /// When the driver must call [`Session::handle_timeout`] and
    /// [`Session::poll_transmit`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.final_due {
            return Some(self.now);
        }
        [
            self.periodic_allowed().then_some(self.next_tx),
            self.detect_at,
            self.forget_seq_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A packet now, outside the schedule and without P or F: the last
    /// words of a session being removed, once it is AdminDown (§6.8.16
    /// wants the remote to learn that, and no later packet will tell it).
    pub fn transmit_now(&mut self) -> Vec<u8> {
        self.build(false, false)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// §6.8.16: administrative control. Down → AdminDown with Diag 7, or
    /// back to Down (which starts the three-way handshake again).
    pub fn set_admin_down(&mut self, now: Instant, down: bool) {
        self.now = now;
        if down && self.state != State::AdminDown {
            // AdminDown runs no detection: the packets it receives are discarded.
            self.detect_at = None;
            self.set_state(State::AdminDown, Diag::AdministrativelyDown);
        } else if !down && self.state == State::AdminDown {
            self.set_state(State::Down, self.local_diag);
        }
    }

    /// Changes the timers of a running session. §6.8.3: "If either
    /// bfd.DesiredMinTxInterval is changed or bfd.RequiredMinRxInterval is
    /// changed, a Poll Sequence MUST be initiated".
    pub fn set_timers(
        &mut self,
        now: Instant,
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_mult: u8,
    ) {
        self.now = now;
        self.cfg.desired_min_tx = desired_min_tx;
        self.cfg.required_min_rx = required_min_rx;
        // Detect Mult travels in every packet; the remote uses the new one at once.
        self.cfg.detect_mult = detect_mult.max(1);
        self.params_changed();
        self.reschedule(now);
    }

    fn set_state(&mut self, to: State, diag: Diag) {
        let from = self.state;
        self.state = to;
        self.local_diag = diag;
        if from == State::Up {
            self.stats.flaps += 1;
            self.up_since = None;
        }
        if to == State::Up {
            self.up_since = Some(self.now);
        }
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(Event::StateChange(StateChange {
            from,
            to,
            diag,
            remote_state: self.remote_state,
            remote_diag: self.remote_diag,
        }));
        // The slow rate applies while not Up (§6.8.3), so Up and its end change it.
        self.params_changed();
        self.reschedule(self.now);
    }

    /// Brings the advertised intervals in line with the configuration and
    /// the state, and starts a Poll Sequence if they changed (§6.8.3).
    fn params_changed(&mut self) {
        let desired = if self.state == State::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW_TX)
        };
        let required = self.cfg.required_min_rx;
        if desired == self.desired_min_tx && required == self.required_min_rx {
            return;
        }
        let up = self.state == State::Up;
        // §6.8.3: "If bfd.DesiredMinTxInterval is increased and
        // bfd.SessionState is Up, the actual transmission interval used MUST
        // NOT change until the Poll Sequence described above has terminated."
        self.tx_in_force = if up {
            self.tx_in_force.min(desired)
        } else {
            desired
        };
        // §6.8.3: "If bfd.RequiredMinRxInterval is reduced and
        // bfd.SessionState is Up, the previous value of
        // bfd.RequiredMinRxInterval MUST be used when calculating the
        // Detection Time for the remote system until the Poll Sequence
        // described above has terminated."
        self.rx_in_force = if up {
            self.rx_in_force.max(required)
        } else {
            required
        };
        self.desired_min_tx = desired;
        self.required_min_rx = required;
        if self.polling {
            self.poll_again = true;
        } else {
            self.polling = true;
        }
    }

    fn poll_terminated(&mut self) {
        if self.poll_again {
            self.poll_again = false;
            return;
        }
        self.polling = false;
        self.tx_in_force = self.desired_min_tx;
        self.rx_in_force = self.required_min_rx;
    }

    /// §6.8.7's three "MUST NOT periodically transmit" rules, less the
    /// Passive role, which we never take.
    fn periodic_allowed(&self) -> bool {
        // "if bfd.RemoteMinRxInterval is zero".
        if self.remote_min_rx.is_zero() {
            return false;
        }
        // "if Demand mode is active on the remote system (bfd.RemoteDemandMode
        // is 1, bfd.SessionState is Up, and bfd.RemoteSessionState is Up) and a
        // Poll Sequence is not being transmitted".
        !(self.remote_demand
            && self.state == State::Up
            && self.remote_state == State::Up
            && !self.polling)
    }

    /// Re-times the next periodic packet after a change of the interval:
    /// the jitter drawn at the last packet, applied to the interval now in
    /// force, counted from the last packet (§6.8.7: never sooner than the
    /// jittered interval, and a shorter one takes effect at once).
    fn reschedule(&mut self, now: Instant) {
        if let Some(last) = self.last_tx {
            self.next_tx = (last + self.jittered(self.tx_interval())).max(now);
        }
    }

    fn jittered(&self, d: Duration) -> Duration {
        d * self.tx_jitter / 1000
    }

    /// §6.8.7: "reduced by a random amount of jitter: 0 to 25% ... If
    /// bfd.DetectMult is equal to 1, the interval ... MUST be no more than
    /// 90% of the negotiated transmission interval, and MUST be no less
    /// than 75%". In thousandths.
    fn draw_jitter(&mut self) -> u32 {
        let span = if self.cfg.detect_mult == 1 { 151 } else { 251 };
        750 + (xorshift(&mut self.rng) % span) as u32
    }

    /// §6.8.7: the contents of a transmitted packet.
    fn build(&mut self, poll: bool, final_: bool) -> Vec<u8> {
        let mut p = ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll,
            final_,
            control_plane_independent: self.cfg.control_plane_independent,
            // "A system MUST NOT set the Demand (D) bit unless bfd.DemandMode is 1".
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx: micros(self.desired_min_tx),
            required_min_rx: micros(self.required_min_rx),
            // "zero if the local system does not support the Echo function".
            required_min_echo_rx: 0,
            auth: None,
        };
        self.stats.tx += 1;
        match self.auth.as_mut() {
            Some(a) => a.seal(&mut p),
            None => p.encode(),
        }
    }
}

/// xorshift64*: uniform enough to spread packets apart; not for secrets.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[cfg(test)]
mod tests;
