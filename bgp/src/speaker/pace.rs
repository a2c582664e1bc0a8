//! When the speaker's driver runs the prefix decisions that plain UPDATEs
//! leave for later ([`super::core::SpeakerCore::decide_some`]).
//!
//! Two ways, each right for one load:
//! - *Paced by the FIB*: decide as soon as the FIB writer has taken the
//!   last decisions, so that it never idles while a table arrives (one
//!   peer's full table: the writer is the bottleneck).
//! - *Coalesced*: decide after a pause in the UPDATEs, or a while under a
//!   steady stream. When several peers send the same prefixes at once (a
//!   route reflector's sources, a node's ToRs after a restart), deciding
//!   early picks one source's path, then the next's as it arrives, and
//!   every interim best goes to every peer the prefix is exported to: 64
//!   clients × 100k prefixes from 4 sources received 15.5 M paths instead
//!   of 6.3 M, and took 4.0–5.7 s instead of 0.95 s
//!   (docs/benchmarks/history.md, tenth and eleventh rounds).
//!
//! Coalesced when no FIB consumes the decisions (a reflector with its FIB
//! disabled), or when more than one peer's UPDATEs announce routes within
//! [`SEVERAL_WITHIN`] of each other ([`Senders`]); paced otherwise.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Prefix decisions left for later (see
/// [`super::core::SpeakerCore::decide_some`]) before they run whatever
/// else is queued: the window in which a prefix several peers send is
/// decided once.
pub(super) const UNDECIDED_MAX: usize = 1 << 18;
/// Prefix decisions run at once when the FIB consumer's queue is empty
/// (about one netlink apply's worth) ...
pub(super) const UNDECIDED_REFILL: usize = 2048;
/// ... and all of them once no event has come for this long.
pub(super) const UNDECIDED_IDLE: Duration = Duration::from_millis(1);
/// Coalesced, decisions wait for a longer pause (a table arriving from
/// several sources has gaps of a millisecond or more, at its start above
/// all) ...
pub(super) const UNPACED_IDLE: Duration = Duration::from_millis(50);
/// ... and at most this long under a steady stream of UPDATEs ...
pub(super) const UNDECIDED_WAIT: Duration = Duration::from_millis(200);
/// ... and a backlog as large as this (8 MiB of IPv4 keys, 17 of IPv6):
/// deciding once what several sources' tables bring needs all of them in.
pub(super) const UNPACED_MAX: usize = 4 * UNDECIDED_MAX;
/// UPDATEs from two peers this close together: several peers are sending.
/// As long as the coalesced pause, so that sources whose tables start a
/// few milliseconds apart are seen together.
pub(super) const SEVERAL_WITHIN: Duration = UNPACED_IDLE;

/// Whether the decisions left for later are due while UPDATEs keep coming:
/// `queued` of them, the oldest waiting for `waited`; `paced`: paced by
/// the FIB, whose writer has taken all it was given when `drained`.
pub(super) fn decisions_due(queued: usize, paced: bool, drained: bool, waited: Duration) -> bool {
    if paced {
        queued >= UNDECIDED_MAX || drained
    } else {
        queued >= UNPACED_MAX || waited >= UNDECIDED_WAIT
    }
}

/// The last two distinct peers that announced routes, and when.
#[derive(Debug, Default)]
pub(super) struct Senders {
    last: Option<(IpAddr, Instant)>,
    before: Option<(IpAddr, Instant)>,
}

impl Senders {
    /// An UPDATE announcing routes from `peer` at `now`.
    pub fn update_from(&mut self, peer: IpAddr, now: Instant) {
        match self.last {
            Some((p, _)) if p == peer => {}
            last => self.before = last,
        }
        self.last = Some((peer, now));
    }

    /// Whether two peers have sent UPDATEs within [`SEVERAL_WITHIN`] of
    /// `now`.
    pub fn several(&self, now: Instant) -> bool {
        let recent = |s: Option<(IpAddr, Instant)>| {
            s.is_some_and(|(_, t)| now.saturating_duration_since(t) < SEVERAL_WITHIN)
        };
        recent(self.last) && recent(self.before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paced by a FIB, decisions run as soon as it has taken the last ones;
    /// coalesced, after a pause (the driver's idle branch) or
    /// [`UNDECIDED_WAIT`] under a steady stream; a backlog at the bound is
    /// decided either way.
    #[test]
    fn decisions_wait_for_the_fib_or_a_while_when_coalesced() {
        let zero = Duration::ZERO;
        assert!(decisions_due(1, true, true, zero));
        assert!(!decisions_due(1, true, false, Duration::from_secs(10)));
        assert!(!decisions_due(1, false, true, zero));
        let just_before = UNDECIDED_WAIT - Duration::from_millis(1);
        assert!(!decisions_due(UNPACED_MAX - 1, false, true, just_before));
        assert!(decisions_due(1, false, true, UNDECIDED_WAIT));
        assert!(decisions_due(UNPACED_MAX, false, true, zero));
        assert!(decisions_due(UNDECIDED_MAX, true, false, zero));
    }

    /// One peer's table, however long, is one sender; a second peer's
    /// UPDATE makes several until one of the two has been quiet for
    /// `SEVERAL_WITHIN`.
    #[test]
    fn several_senders_are_two_peers_within_the_window() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Senders::default();
        assert!(!s.several(t0));
        for i in 0..100 {
            s.update_from(a, t0 + ms(i));
            assert!(!s.several(t0 + ms(i)), "one peer alone");
        }
        s.update_from(b, t0 + ms(100));
        assert!(s.several(t0 + ms(100)));
        s.update_from(b, t0 + ms(120));
        assert!(s.several(t0 + ms(120)), "a sent 21 ms ago");
        assert!(!s.several(t0 + ms(99) + SEVERAL_WITHIN), "a quiet too long");
        s.update_from(b, t0 + ms(200));
        assert!(!s.several(t0 + ms(200)), "b alone again");
        s.update_from(a, t0 + ms(210));
        assert!(s.several(t0 + ms(210)), "a is back");
    }
}
