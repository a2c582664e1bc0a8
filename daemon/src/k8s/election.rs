//! Leader election through the datastore, sans-IO.
//!
//! One record, `/petrel/controller/v1/leader` ([`Lease`]), changed only by
//! compare-and-swap on its mod revision. The holder rewrites it every
//! [`Timing::renew_every`] (bumping `renewed`, so the revision moves). A
//! candidate never compares clocks across machines: it notes, by its own
//! monotonic clock, when it first saw the record's current revision, and
//! takes over (a CAS at that revision) only once the revision has stayed
//! the same for the record's `lease_ms`. This is client-go's leaderelection
//! (it too times the observed record locally rather than trusting the
//! holder's renewTime).
//!
//! Fencing: the holder counts its lease from the moment it *sent* its last
//! successful write, which is never later than the moment any candidate
//! first saw that write; if it cannot renew within [`Timing::renew_deadline`]
//! (shorter than the lease, as client-go's renewDeadline) it stops acting at
//! once, before any candidate may take over.
//!
//! [`Election`] takes what the driver read and the time, and returns one
//! [`Action`]; the driver reports how the write went with
//! [`Election::written`] or [`Election::lost`].

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The lease record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder's identity (hostname and process id by default).
    pub holder: String,
    /// How long the revision must stay unchanged before another
    /// controller may take over.
    pub lease_ms: u64,
    /// Renewals since the holder took the lease: each one changes the
    /// record, hence its mod revision.
    pub renewed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The lease written into the record.
    pub lease: Duration,
    /// How often the holder renews and a candidate looks.
    pub renew_every: Duration,
    /// A holder that has not renewed for this long stops acting. Less than
    /// `lease`: the margin covers clock rate differences and the time
    /// between sending a write and a candidate seeing it.
    pub renew_deadline: Duration,
}

impl Default for Timing {
    /// 10 s lease, renewal every 2 s, self-demotion after 8 s without a
    /// renewal: a dead leader is replaced within lease + one look
    /// (< 12 s, the issue asks < 15 s).
    fn default() -> Self {
        Timing {
            lease: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(8),
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the record (it is absent).
    Create(Lease),
    /// Replace the record if its revision is still `revision`: a renewal
    /// of our own lease or a takeover of an expired one.
    Write { lease: Lease, revision: i64 },
    /// Nothing to write; look again at `until` at the latest.
    Wait { until: Instant },
}

/// Our view of the election.
#[derive(Debug, Clone)]
pub struct Election {
    me: String,
    timing: Timing,
    /// The revision we last saw and when we first saw it.
    observed: Option<(i64, Instant)>,
    /// Leading: when we sent the write that last succeeded, and its
    /// revision and record.
    leading: Option<Held>,
    /// A write in flight: when it was sent.
    sent: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Held {
    sent_at: Instant,
    revision: i64,
    lease: Lease,
}

impl Election {
    pub fn new(me: &str, timing: Timing) -> Self {
        Election {
            me: me.to_string(),
            timing,
            observed: None,
            leading: None,
            sent: None,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// True while we hold a lease we renewed recently enough to act on.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leading
            .as_ref()
            .is_some_and(|h| now.saturating_duration_since(h.sent_at) < self.timing.renew_deadline)
    }

    /// When leadership ends unless renewed (for the driver's timer).
    pub fn leader_until(&self) -> Option<Instant> {
        self.leading
            .as_ref()
            .map(|h| h.sent_at + self.timing.renew_deadline)
    }

    fn own_lease(&self, renewed: u64) -> Lease {
        Lease {
            holder: self.me.clone(),
            lease_ms: self.timing.lease.as_millis() as u64,
            renewed,
        }
    }

    /// The record as just read (`None`: absent) with its mod revision.
    pub fn observe(&mut self, record: Option<(&Lease, i64)>, now: Instant) -> Action {
        let Some((lease, revision)) = record else {
            // Absent (never made, or released by a holder that stopped):
            // whoever creates it first leads. A holder that finds its
            // record gone was deposed by an operator: stop acting.
            self.leading = None;
            self.observed = None;
            self.sent = Some(now);
            return Action::Create(self.own_lease(0));
        };
        match &self.leading {
            Some(h) if h.revision == revision && lease.holder == self.me => {
                let due = h.sent_at + self.timing.renew_every;
                if now >= due {
                    self.sent = Some(now);
                    Action::Write {
                        lease: self.own_lease(h.lease.renewed + 1),
                        revision,
                    }
                } else {
                    Action::Wait { until: due }
                }
            }
            _ => {
                // Another holder's record, or ours from an earlier life
                // (a restarted controller with the same identity must not
                // assume it still leads: it waits like anyone else).
                if self.leading.take().is_some() {
                    tracing::warn!(holder = %lease.holder, "lease changed under us: no longer leader");
                }
                let since = match self.observed {
                    Some((r, t)) if r == revision => t,
                    _ => {
                        self.observed = Some((revision, now));
                        now
                    }
                };
                let expires = since + Duration::from_millis(lease.lease_ms);
                if now >= expires {
                    self.sent = Some(now);
                    Action::Write {
                        lease: self.own_lease(0),
                        revision,
                    }
                } else {
                    Action::Wait {
                        until: expires.min(now + self.timing.renew_every),
                    }
                }
            }
        }
    }

    /// The write of the last [`Action::Create`] or [`Action::Write`]
    /// succeeded at `revision`.
    pub fn written(&mut self, lease: Lease, revision: i64) {
        let sent_at = self.sent.take().unwrap_or_else(Instant::now);
        self.observed = Some((revision, sent_at));
        self.leading = Some(Held {
            sent_at,
            revision,
            lease,
        });
    }

    /// The write lost its compare-and-swap (someone else wrote first) or
    /// failed: a leader whose renewal lost is deposed at once; one whose
    /// write merely failed keeps leading until its deadline.
    pub fn lost(&mut self, conflict: bool) {
        self.sent = None;
        if conflict {
            self.leading = None;
        }
    }

    /// Give the lease up (shutdown): the revision to delete at, if we hold it.
    pub fn resign(&mut self) -> Option<i64> {
        self.leading.take().map(|h| h.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }
    const S: Duration = Duration::from_secs(1);

    fn lease(holder: &str, renewed: u64) -> Lease {
        Lease {
            holder: holder.into(),
            lease_ms: 10_000,
            renewed,
        }
    }

    #[test]
    fn absent_record_is_created_and_then_renewed_every_two_seconds() {
        let now = t0();
        let mut e = Election::new("a", Timing::default());
        let Action::Create(l) = e.observe(None, now) else {
            panic!()
        };
        assert!(!e.is_leader(now));
        e.written(l.clone(), 5);
        assert!(e.is_leader(now));
        assert_eq!(
            e.observe(Some((&l, 5)), now + S),
            Action::Wait { until: now + 2 * S }
        );
        assert_eq!(
            e.observe(Some((&l, 5)), now + 2 * S),
            Action::Write {
                lease: lease("a", 1),
                revision: 5
            }
        );
    }

    #[test]
    fn candidate_takes_over_only_after_the_revision_stood_still_for_the_lease_by_its_own_clock() {
        let now = t0();
        let mut b = Election::new("b", Timing::default());
        let held = lease("a", 7);
        // The holder's record says nothing about time: b times it itself.
        assert!(matches!(
            b.observe(Some((&held, 40)), now),
            Action::Wait { .. }
        ));
        assert!(matches!(
            b.observe(Some((&held, 40)), now + 9 * S),
            Action::Wait { .. }
        ));
        // A renewal (new revision) restarts b's count.
        let renewed = lease("a", 8);
        assert!(matches!(
            b.observe(Some((&renewed, 41)), now + 9 * S),
            Action::Wait { .. }
        ));
        assert!(matches!(
            b.observe(Some((&renewed, 41)), now + 18 * S),
            Action::Wait { .. }
        ));
        assert_eq!(
            b.observe(Some((&renewed, 41)), now + 19 * S),
            Action::Write {
                lease: lease("b", 0),
                revision: 41
            }
        );
        b.written(lease("b", 0), 42);
        assert!(b.is_leader(now + 19 * S));
    }

    #[test]
    fn a_leader_that_cannot_renew_demotes_itself_before_anyone_can_take_over() {
        let now = t0();
        let timing = Timing::default();
        let mut a = Election::new("a", timing);
        let Action::Create(l) = a.observe(None, now) else {
            panic!()
        };
        a.written(l, 1);
        // The datastore is unreachable: writes fail (not conflicts).
        a.lost(false);
        assert!(a.is_leader(now + 7 * S));
        assert!(!a.is_leader(now + 8 * S));
        // A candidate that saw revision 1 no earlier than it was written
        // cannot take over before now + 10 s.
        assert!(timing.renew_deadline < timing.lease);
    }

    #[test]
    fn a_renewal_that_loses_its_cas_deposes_at_once() {
        let now = t0();
        let mut a = Election::new("a", Timing::default());
        let Action::Create(l) = a.observe(None, now) else {
            panic!()
        };
        a.written(l.clone(), 1);
        assert!(matches!(
            a.observe(Some((&l, 1)), now + 2 * S),
            Action::Write { .. }
        ));
        a.lost(true);
        assert!(!a.is_leader(now + 2 * S));
    }

    #[test]
    fn someone_elses_record_deposes_and_a_restarted_holder_waits_like_anyone() {
        let now = t0();
        let mut a = Election::new("a", Timing::default());
        let Action::Create(l) = a.observe(None, now) else {
            panic!()
        };
        a.written(l, 1);
        assert!(matches!(
            a.observe(Some((&lease("b", 0), 9)), now + S),
            Action::Wait { .. }
        ));
        assert!(!a.is_leader(now + S));
        // A fresh process with the same name finds "its" record: it waits.
        let mut a2 = Election::new("a", Timing::default());
        assert!(matches!(
            a2.observe(Some((&lease("a", 3), 9)), now),
            Action::Wait { .. }
        ));
        assert!(!a2.is_leader(now));
    }

    #[test]
    fn resign_gives_the_revision_to_delete() {
        let now = t0();
        let mut a = Election::new("a", Timing::default());
        let Action::Create(l) = a.observe(None, now) else {
            panic!()
        };
        a.written(l, 3);
        assert_eq!(a.resign(), Some(3));
        assert!(!a.is_leader(now));
    }
}
