//! RFC 4271 §6.8 connection collisions, sans-IO.
//!
//! RFC 4271 models one FSM per connection; petrel runs one [`crate::fsm::Fsm`]
//! per peer, so a second connection with the same peer (ours and the peer's
//! crossing, or one arriving while the session is being set up) is held
//! beside the FSM's until the peer's BGP Identifier decides which stays. The
//! [`Arbiter`] keeps that bookkeeping and makes the decisions; it owns no
//! socket and reads no clock. Its driver (`session::peer`, or a simulation)
//! holds the connections and carries out what it answers:
//!
//! | FSM state              | a new connection                                   |
//! |------------------------|----------------------------------------------------|
//! | Idle                   | refused, unless the peer just won a collision     |
//! | Connect, Active        | becomes the FSM's connection (no collision yet)    |
//! | OpenSent, OpenConfirm  | held as the second; the BGP Identifiers decide     |
//! | Established            | closed with Cease 6/7 (a restart under GR: taken,  |
//! |                        | unless the session came up a moment ago)           |
//!
//! Both speakers apply the same rule to the same two connections, so they
//! keep the same one.

use crate::fsm::State;
use crate::wire::notification::{CeaseError, ErrorCode};
use crate::wire::Notification;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long a second connection may wait for the peer's OPEN.
pub const SECOND_OPEN_WAIT: Duration = Duration::from_secs(30);

/// How long after losing a collision the peer's own connection is still
/// accepted in Idle.
pub const COLLISION_ACCEPT_WAIT: Duration = Duration::from_secs(10);

/// How long after the session reached Established a new connection from
/// a graceful-restart peer is still taken for the other half of a §6.8
/// collision rather than for a restart (RFC 4724 §4.2). Both sides'
/// connection attempts crossed; the one that lost the race is only being
/// handed over from the listener, which takes milliseconds. A peer that
/// really restarts closes its old connection as it goes down (seen first),
/// or takes far longer than this to come back.
pub const RESTART_AFTER_UP: Duration = Duration::from_secs(2);

/// The NOTIFICATION that closes a collision's loser (RFC 4271 §6.8).
pub const COLLISION_CEASE: ErrorCode = ErrorCode::Cease(CeaseError::ConnectionCollisionResolution);

/// RFC 4271 §6.8: when a second connection's OPEN arrives, the one initiated
/// by the speaker with the higher BGP Identifier survives. Returns true when
/// the existing connection is kept (and the new one closed with Cease /
/// Connection Collision Resolution).
pub fn collision_keeps_existing(
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
    existing_is_outgoing: bool,
) -> bool {
    // "If the value of the local BGP Identifier is less than the remote one,
    // the local system closes the BGP connection that ... it initiated";
    // otherwise it closes the one the remote system initiated.
    let keep_remote_initiated = u32::from(local_id) < u32::from(remote_id);
    existing_is_outgoing != keep_remote_initiated
}

/// What to do with a new connection with the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Close it without a word: the session is not started, or holds down
    /// after an error (§8.2.2 Idle).
    Refuse,
    /// It becomes the FSM's connection (TcpAccepted / TcpConnected).
    Accept,
    /// The peer closed ours as the loser of a collision and this is the one
    /// it kept: start the FSM (ManualStart) and accept it.
    StartAndAccept,
    /// RFC 4724 §4.2: the peer restarted under graceful restart; the old
    /// session is gone (TcpFails), the new connection is accepted.
    ReplaceRestarted,
    /// Hold it as the second connection: send our OPEN on it now (a peer in
    /// the same position decides when it reads it) and wait for the peer's
    /// OPEN until [`Arbiter::second_deadline`].
    Second,
    /// Close it with Cease / Connection Collision Resolution.
    Reject,
}

/// Which connection a collision keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The FSM's connection stays; close the second with Cease 6/7.
    KeepExisting,
    /// Close the FSM's connection (if any) with Cease 6/7, tell the FSM it
    /// failed, and carry on on the second; `outgoing` says who initiated it.
    UseSecond { outgoing: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Second {
    outgoing: bool,
    /// A peer that sends no OPEN on it by then loses it.
    deadline: Instant,
}

/// One peer's §6.8 bookkeeping.
#[derive(Clone, Debug)]
pub struct Arbiter {
    local_id: Ipv4Addr,
    second: Option<Second>,
    /// When the peer last closed the FSM's connection in OpenSent or
    /// OpenConfirm with Cease / Connection Collision Resolution: it keeps
    /// the connection it initiated, which may still be on its way here.
    lost_at: Option<Instant>,
    /// When the session last reached Established.
    up_at: Option<Instant>,
}

impl Arbiter {
    pub fn new(local_id: Ipv4Addr) -> Self {
        Self {
            local_id,
            second: None,
            lost_at: None,
            up_at: None,
        }
    }

    /// The session reached Established at `now`.
    pub fn session_up(&mut self, now: Instant) {
        self.up_at = Some(now);
    }

    /// A connection from the peer was accepted while the FSM is in `state`;
    /// `peer_gr`: the current session negotiated graceful restart.
    pub fn incoming(&mut self, now: Instant, state: State, peer_gr: bool) -> Admit {
        match state {
            State::Idle
                if self
                    .lost_at
                    .is_some_and(|t| now.saturating_duration_since(t) < COLLISION_ACCEPT_WAIT) =>
            {
                // §6.8: the peer closed our connection as the loser of a
                // collision, keeping the one it initiated. In the RFC's
                // model that is a second FSM of its own (§8: one FSM per
                // connection), untouched by the loser's going Idle; here it
                // raced the NOTIFICATION and arrives after it. Accepting it
                // is the session coming up on the connection both sides
                // chose, with no connect-retry round.
                self.lost_at = None;
                Admit::StartAndAccept
            }
            State::Idle => Admit::Refuse,
            // Our own attempt is left running: if it completes as well, the
            // two connections collide and one is closed with a NOTIFICATION,
            // rather than ours vanishing unannounced while the peer may have
            // accepted it.
            State::Connect | State::Active => Admit::Accept,
            // RFC 4724 §4.2: a new connection from a peer that negotiated
            // graceful restart means it restarted -- unless the session
            // came up a moment ago: then it is the peer's half of a
            // collision (both speakers connected at once, ours won the
            // race), closed as §6.8 says for Established. Taking it for a
            // restart would end the fresh session, and the peer, seeing
            // that, takes us for restarting in turn.
            State::Established
                if peer_gr
                    && self
                        .up_at
                        .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_AFTER_UP) =>
            {
                Admit::ReplaceRestarted
            }
            State::Established | State::OpenSent | State::OpenConfirm => {
                self.second_connection(now, state, false)
            }
        }
    }

    /// Our outgoing connection completed while the FSM already has one (the
    /// peer's, accepted meanwhile).
    pub fn connected_while_busy(&mut self, now: Instant, state: State) -> Admit {
        self.second_connection(now, state, true)
    }

    fn second_connection(&mut self, now: Instant, state: State, outgoing: bool) -> Admit {
        // §6.8: "a connection collision with an existing BGP connection that
        // is in the Established state causes closing of the newly created
        // connection"; a third connection: what is there stays.
        if self.second.is_some() || state == State::Established {
            return Admit::Reject;
        }
        self.second = Some(Second {
            outgoing,
            deadline: now + SECOND_OPEN_WAIT,
        });
        Admit::Second
    }

    /// Whether a second connection waits for a decision: the peer's OPEN
    /// on either connection is then resolved before the FSM sees it.
    pub fn has_second(&self) -> bool {
        self.second.is_some()
    }

    /// When the second connection's wait for the peer's OPEN ends.
    pub fn second_deadline(&self) -> Option<Instant> {
        self.second.map(|s| s.deadline)
    }

    /// The second connection closed, failed, timed out or was rejected by
    /// the driver: it is forgotten.
    pub fn second_gone(&mut self) {
        self.second = None;
    }

    /// The peer's BGP Identifier is known (its OPEN on either connection, or
    /// the FSM's in OpenConfirm): decides between the FSM's connection, if
    /// there is one and `existing_outgoing` says who initiated it, and the
    /// second. `None` when there is no second connection.
    pub fn resolve(
        &mut self,
        remote_id: Ipv4Addr,
        existing_outgoing: Option<bool>,
    ) -> Option<Resolution> {
        let s = self.second.take()?;
        Some(match existing_outgoing {
            Some(out) if collision_keeps_existing(self.local_id, remote_id, out) => {
                Resolution::KeepExisting
            }
            // With no connection of the FSM's left (the peer closed it,
            // having chosen this one, or it failed) the second carries on.
            _ => Resolution::UseSecond {
                outgoing: s.outgoing,
            },
        })
    }

    /// The peer's NOTIFICATION arrived on the FSM's connection in `state`.
    pub fn notification(&mut self, now: Instant, state: State, n: &Notification) {
        if n.error == COLLISION_CEASE && matches!(state, State::OpenSent | State::OpenConfirm) {
            self.lost_at = Some(now);
        }
    }

    /// The session is up: a second connection left is closed (§6.8,
    /// Established). True when there was one.
    pub fn established(&mut self) -> bool {
        self.second.take().is_some()
    }

    /// An administrative stop: nothing of a collision survives it.
    pub fn reset(&mut self) {
        self.second = None;
        self.lost_at = None;
        self.up_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn higher_identifier_keeps_the_connection_it_initiated() {
        // We have the lower id: keep the connection the peer initiated.
        assert!(!collision_keeps_existing(LOW, HIGH, true));
        assert!(collision_keeps_existing(LOW, HIGH, false));
        // We have the higher id: keep ours.
        assert!(collision_keeps_existing(HIGH, LOW, true));
        assert!(!collision_keeps_existing(HIGH, LOW, false));
    }

    /// Both speakers see the same two connections from opposite ends and
    /// keep the same one: the higher Identifier's outgoing connection.
    #[test]
    fn both_sides_keep_the_same_connection() {
        for (a, b) in [(LOW, HIGH), (HIGH, LOW)] {
            // Connection X is a's outgoing, b's incoming; each side asks
            // with X as its existing connection.
            let a_keeps_x = collision_keeps_existing(a, b, true);
            let b_keeps_x = collision_keeps_existing(b, a, false);
            assert_eq!(a_keeps_x, b_keeps_x);
            assert_eq!(a_keeps_x, u32::from(a) > u32::from(b));
        }
    }

    /// The state table of the module docs, for an accepted connection.
    #[test]
    fn incoming_connection_per_state() {
        let now = Instant::now();
        let cases = [
            (State::Idle, false, Admit::Refuse),
            (State::Connect, false, Admit::Accept),
            (State::Active, false, Admit::Accept),
            (State::OpenSent, false, Admit::Second),
            (State::OpenConfirm, false, Admit::Second),
            (State::Established, false, Admit::Reject),
            (State::Established, true, Admit::ReplaceRestarted),
        ];
        for (state, gr, want) in cases {
            let mut a = Arbiter::new(LOW);
            assert_eq!(a.incoming(now, state, gr), want, "{state:?} gr={gr}");
            assert_eq!(a.has_second(), want == Admit::Second, "{state:?}");
        }
    }

    #[test]
    fn a_third_connection_is_rejected_and_the_second_stays() {
        let now = Instant::now();
        let mut a = Arbiter::new(LOW);
        assert_eq!(a.incoming(now, State::OpenSent, false), Admit::Second);
        assert_eq!(a.connected_while_busy(now, State::OpenSent), Admit::Reject);
        assert_eq!(a.incoming(now, State::OpenSent, false), Admit::Reject);
        assert!(a.has_second());
        assert_eq!(a.second_deadline(), Some(now + SECOND_OPEN_WAIT));
    }

    /// The higher Identifier keeps its own connection, whichever of the two
    /// is the FSM's.
    #[test]
    fn resolution_by_identifier() {
        let now = Instant::now();
        // We (HIGH) hold the peer's connection; ours completes second.
        let mut a = Arbiter::new(HIGH);
        assert_eq!(a.connected_while_busy(now, State::OpenSent), Admit::Second);
        assert_eq!(
            a.resolve(LOW, Some(false)),
            Some(Resolution::UseSecond { outgoing: true })
        );
        assert!(!a.has_second());
        // We (LOW) hold ours; the peer's arrives second.
        let mut a = Arbiter::new(LOW);
        assert_eq!(a.incoming(now, State::OpenConfirm, false), Admit::Second);
        assert_eq!(
            a.resolve(HIGH, Some(true)),
            Some(Resolution::UseSecond { outgoing: false })
        );
        // We (HIGH) hold ours; the peer's is closed.
        let mut a = Arbiter::new(HIGH);
        assert_eq!(a.incoming(now, State::OpenSent, false), Admit::Second);
        assert_eq!(a.resolve(LOW, Some(true)), Some(Resolution::KeepExisting));
        // Nothing to decide without a second connection.
        assert_eq!(a.resolve(LOW, Some(true)), None);
    }

    /// The FSM's connection is gone (the peer closed it, having chosen the
    /// other): the second carries on whatever the Identifiers say.
    #[test]
    fn second_carries_on_when_the_first_is_gone() {
        let mut a = Arbiter::new(HIGH);
        a.incoming(Instant::now(), State::OpenSent, false);
        assert_eq!(
            a.resolve(LOW, None),
            Some(Resolution::UseSecond { outgoing: false })
        );
    }

    /// RFC 4271 §6.8: the loser of a collision is told with Cease subcode 7,
    /// and the winner's connection is accepted in Idle for a while after.
    #[test]
    fn after_losing_a_collision_the_peers_connection_is_accepted_for_a_while() {
        let t0 = Instant::now();
        let cease7 = Notification::bare(COLLISION_CEASE);
        assert_eq!(COLLISION_CEASE.code(), 6);
        assert_eq!(COLLISION_CEASE.subcode(), 7);
        let mut a = Arbiter::new(LOW);
        a.notification(t0, State::OpenConfirm, &cease7);
        let soon = t0 + COLLISION_ACCEPT_WAIT - Duration::from_millis(1);
        assert_eq!(a.incoming(soon, State::Idle, false), Admit::StartAndAccept);
        // Once only.
        assert_eq!(a.incoming(soon, State::Idle, false), Admit::Refuse);

        // After the window: refused.
        a.notification(t0, State::OpenSent, &cease7);
        let late = t0 + COLLISION_ACCEPT_WAIT;
        assert_eq!(a.incoming(late, State::Idle, false), Admit::Refuse);
    }

    /// Only Cease 6/7 in OpenSent/OpenConfirm opens that window: another
    /// Cease is an error (§8.2.2 Idle refuses), and in Established the
    /// collision is over.
    #[test]
    fn other_notifications_do_not_open_the_window() {
        let t0 = Instant::now();
        let mut a = Arbiter::new(LOW);
        let other = Notification::bare(ErrorCode::Cease(CeaseError::OtherConfigurationChange));
        a.notification(t0, State::OpenConfirm, &other);
        assert_eq!(a.incoming(t0, State::Idle, false), Admit::Refuse);
        a.notification(t0, State::Established, &Notification::bare(COLLISION_CEASE));
        assert_eq!(a.incoming(t0, State::Idle, false), Admit::Refuse);
        // A stop forgets a lost collision.
        a.notification(t0, State::OpenSent, &Notification::bare(COLLISION_CEASE));
        a.reset();
        assert_eq!(a.incoming(t0, State::Idle, false), Admit::Refuse);
    }

    /// The race seen in CI with BIRD restarting: both speakers connected
    /// at once, ours reached Established, and the peer's connection was
    /// handed over just after. It is the collision's loser (Cease 6/7), not
    /// a second restart; a connection that comes later is a restart.
    #[test]
    fn a_connection_just_after_established_is_a_collision_not_a_restart() {
        let t0 = Instant::now();
        let mut a = Arbiter::new(LOW);
        a.session_up(t0);
        let soon = t0 + Duration::from_millis(5);
        assert_eq!(a.incoming(soon, State::Established, true), Admit::Reject);
        assert!(!a.has_second());
        let late = t0 + RESTART_AFTER_UP;
        assert_eq!(
            a.incoming(late, State::Established, true),
            Admit::ReplaceRestarted
        );
        // Without graceful restart, Established always keeps what it has.
        assert_eq!(a.incoming(soon, State::Established, false), Admit::Reject);
    }

    #[test]
    fn established_closes_the_second_connection() {
        let mut a = Arbiter::new(LOW);
        assert!(!a.established());
        a.incoming(Instant::now(), State::OpenConfirm, false);
        assert!(a.established());
        assert!(!a.has_second());
    }
}
