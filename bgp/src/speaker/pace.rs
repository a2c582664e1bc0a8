//! When the speaker's driver runs the prefix decisions that plain UPDATEs
//! leave for later ([`super::core::SpeakerCore::decide_some`]).
//!
//! Two ways, each right for one load:
//! - *Paced by the FIB*: decide as soon as the FIB writer has taken the
//!   last decisions, so that it never idles while a table arrives (one
//!   peer's full table: the writer is the bottleneck).
//! - *Coalesced*: decide after a pause in the UPDATEs, or, under a steady
//!   stream, each prefix once it has waited a while ([`Ages`]). When several peers send the same prefixes at once (a
//!   route reflector's sources, a node's ToRs after a restart), deciding
//!   early picks one source's path, then the next's as it arrives, and
//!   every interim best goes to every peer the prefix is exported to: 64
//!   clients × 100k prefixes from 4 sources received 15.5 M paths instead
//!   of 6.3 M, and took 4.0–5.7 s instead of 0.95 s
//!   (docs/benchmarks/history.md, tenth and eleventh rounds).
//!
//! With a FIB, coalesced when more than one peer announces routes within
//! [`SEVERAL_WITHIN`] of each other while at least one of them is sending
//! a table ([`SENDING_A_TABLE`] prefixes within [`SEVERAL_WITHIN`]; see
//! [`Senders`]); paced otherwise. Churn from several peers, a few
//! thousand prefixes a second each, is paced: coalescing it would only
//! hold each change back.
//!
//! Without one (a reflector with its FIB disabled), coalesced while any
//! peer is sending a table ([`Senders::table`]), one or several: nothing
//! is lost by waiting for a table's other sources, and under load a
//! reflector may read its sources' tables one after the other, so that
//! "several at once" would not be seen. Churn is decided as it comes:
//! until the thirteenth stop a FIB-less reflector coalesced always, and
//! every change it reflected waited for a 50 ms pause or 200 ms (one
//! client's churn at 1,000 UPDATEs a second: p50 201 ms to the other
//! clients, BIRD 1.4 ms, FRR 31 ms; docs/benchmarks/history.md,
//! thirteenth round).
//!
//! Why one table and not two: the driver does not serve peers in turn,
//! and under a burst one peer's UPDATEs tend to be read for a while
//! before another's, so a second source's rate as the driver sees it can
//! fall short in the middle of its table. Requiring two tables coalesced
//! less in the ten-peer race (settled 1.27–1.54 s in five runs against
//! 0.83–1.36 s with the old rule, alternated; docs/benchmarks/history.md,
//! twelfth round).

use std::collections::VecDeque;
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
/// ... and, under a steady stream of UPDATEs, each decision once it has
/// waited this long (only those: see [`due`]) ...
///
/// Long enough for the same prefix to come from every source of a race:
/// the driver reads the sources' tables largely one after another (ten
/// peers × 100k: ~45 ms a table, the last finished 0.9–1.0 s in), so
/// with 200 ms the first four sources' prefixes were decided before the
/// last were read, and when a late source held best paths 35–90k
/// prefixes were written to the kernel twice (settled 0.46–1.13 s run to
/// run). With 500 ms each prefix is written once and the table settles
/// at 0.70–0.80 s in every run, its first complete FIB ~0.3 s later than
/// before (docs/benchmarks/history.md, fifteenth round).
pub(super) const UNDECIDED_WAIT: Duration = Duration::from_millis(500);
/// ... and a backlog as large as this (8 MiB of IPv4 keys, 17 of IPv6):
/// deciding once what several sources' tables bring needs all of them in.
pub(super) const UNPACED_MAX: usize = 4 * UNDECIDED_MAX;
/// The window in which a peer's announced prefixes are counted (see
/// [`SENDING_A_TABLE`]): as long as the coalesced pause.
pub(super) const SEVERAL_WITHIN: Duration = UNPACED_IDLE;

/// Which of the decisions left for later to run now, while UPDATEs keep
/// coming ([`due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Up to this many, oldest first.
    Oldest(usize),
    /// Up to [`UNDECIDED_REFILL`] of those queued at or before this
    /// instant, oldest first.
    QueuedBy(Instant),
}

/// Whether decisions left for later are due while UPDATEs keep coming:
/// `queued` of them, the oldest queued at `oldest`; `paced`: paced by the
/// FIB, whose writer has taken all it was given when `drained`.
///
/// Coalesced, only those that have waited [`UNDECIDED_WAIT`] run: under
/// a steady stream of several sources' tables, a prefix queued a moment
/// ago has one source's path so far, and deciding it would send that
/// path to every peer the prefix goes to, then the next source's (the
/// twelfth stop's rule decided every queued prefix once the oldest had
/// waited, and a route reflector sent its 64 clients 7.3–8.6 M paths
/// where 6.3 M is one per client and prefix; docs/benchmarks/history.md,
/// thirteenth round).
pub(super) fn due(
    queued: usize,
    oldest: Option<Instant>,
    paced: bool,
    drained: bool,
    now: Instant,
) -> Option<Due> {
    if queued == 0 {
        return None;
    }
    if paced {
        return (queued >= UNDECIDED_MAX || drained).then_some(Due::Oldest(UNDECIDED_REFILL));
    }
    if queued >= UNPACED_MAX {
        return Some(Due::Oldest(UNDECIDED_REFILL));
    }
    let by = now.checked_sub(UNDECIDED_WAIT)?;
    oldest.filter(|t| *t <= by).map(|_| Due::QueuedBy(by))
}

/// The instants at which the decisions left for later were queued,
/// coarsely: runs of queue positions, each with the instant its first
/// one came. The queue is taken from its front (see
/// [`super::core::SpeakerCore::decide_some`]), so the front run is the
/// oldest still queued. IPv4 is taken before IPv6, so with both queued
/// the ages are those of positions, not exactly of the prefixes taken.
#[derive(Debug, Default)]
pub(super) struct Ages {
    runs: VecDeque<Run>,
    /// The positions recorded so far.
    seen: u64,
}

/// Queue positions below `end` (and from the previous run's `end`) were
/// queued from `start` on, within [`AGE_GRAIN`] of it.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: Instant,
    end: u64,
}

/// How finely [`Ages`] tells queueing instants apart ...
const AGE_GRAIN: Duration = Duration::from_millis(5);
/// ... and the runs it keeps at most (past that, the newest run grows:
/// its positions then count as older than they are, and are decided
/// sooner, never later).
const AGE_RUNS: usize = 256;

impl Ages {
    /// Positions below `pushed` were queued by `now`.
    pub fn queued(&mut self, now: Instant, pushed: u64) {
        if pushed <= self.seen {
            return;
        }
        self.seen = pushed;
        let full = self.runs.len() >= AGE_RUNS;
        if let Some(last) = self.runs.back_mut() {
            if now.saturating_duration_since(last.start) < AGE_GRAIN || full {
                last.end = pushed;
                return;
            }
        }
        self.runs.push_back(Run {
            start: now,
            end: pushed,
        });
    }

    /// Positions below `taken` were taken off the queue.
    pub fn taken(&mut self, taken: u64) {
        while self.runs.front().is_some_and(|r| r.end <= taken) {
            self.runs.pop_front();
        }
    }

    /// When the oldest position still queued was queued.
    pub fn oldest(&self) -> Option<Instant> {
        self.runs.front().map(|r| r.start)
    }

    /// How many positions from `taken` on were queued at or before `by`.
    pub fn queued_by(&self, taken: u64, by: Instant) -> usize {
        let end = self
            .runs
            .iter()
            .take_while(|r| r.start <= by)
            .last()
            .map_or(taken, |r| r.end);
        end.saturating_sub(taken) as usize
    }

    /// The queue was taken whole.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.seen = 0;
    }
}

/// Prefixes one peer announces within [`SEVERAL_WITHIN`] (20,000 a
/// second) at which it counts as sending a table (a session's start, a
/// reflector's source, a ToR after a restart), not churn. Peers churning
/// a few thousand prefixes a second each (a cluster's blocks and Service
/// addresses) do not make decisions coalesced: under the eleventh stop's
/// rule (any two peers announcing within 50 ms) every change was held
/// 50–200 ms (p50 127 ms, p99 229 ms at 5,000 a second from each of two
/// peers, against BIRD's 1.2 / 2.5 ms; docs/benchmarks/history.md,
/// twelfth round), for no interim paths saved, since they announce
/// different prefixes at a time.
pub(super) const SENDING_A_TABLE: usize = 1000;

/// How long a peer counts as sending a table after its last window that
/// reached [`SENDING_A_TABLE`]: longer than the speaker's own pauses (a
/// flush waiting for room in the FIB's or a session's queue, a burst of
/// exports), in which few UPDATEs are read and a window falls short
/// without the table having ended. After the tables, churn is coalesced
/// for this long at most.
pub(super) const TABLE_HOLD: Duration = Duration::from_secs(1);

/// Peers tracked at once (the most recently heard): enough that peers
/// interleaving their tables are each counted, bounded so that a
/// cluster's thousands of peers cost nothing per UPDATE.
const TRACKED: usize = 16;

/// One peer's announcements, counted per [`SEVERAL_WITHIN`] window.
#[derive(Debug, Clone, Copy)]
struct Sender {
    peer: IpAddr,
    /// When it last announced.
    seen: Instant,
    /// The start of its current window, and the prefixes announced in it.
    window: Instant,
    announced: usize,
    /// When its window last reached [`SENDING_A_TABLE`].
    table_at: Option<Instant>,
}

/// The peers that recently announced routes, and which of them are
/// sending tables.
#[derive(Debug, Default)]
pub(super) struct Senders {
    recent: Vec<Sender>,
}

impl Senders {
    /// An UPDATE from `peer` at `now` announcing `prefixes` routes.
    pub fn update_from(&mut self, peer: IpAddr, now: Instant, prefixes: usize) {
        let i = match self.recent.iter().position(|s| s.peer == peer) {
            Some(i) => i,
            None => {
                let fresh = Sender {
                    peer,
                    seen: now,
                    window: now,
                    announced: 0,
                    table_at: None,
                };
                if self.recent.len() < TRACKED {
                    self.recent.push(fresh);
                    self.recent.len() - 1
                } else {
                    // The least recently heard makes room.
                    let (i, _) = self
                        .recent
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.seen)
                        .expect("TRACKED > 0");
                    self.recent[i] = fresh;
                    i
                }
            }
        };
        let s = &mut self.recent[i];
        if now.saturating_duration_since(s.window) >= SEVERAL_WITHIN {
            s.window = now;
            s.announced = 0;
        }
        s.seen = now;
        s.announced += prefixes;
        if s.announced >= SENDING_A_TABLE {
            s.table_at = Some(now);
        }
    }

    /// Whether a peer has sent a table within [`TABLE_HOLD`] of `now`.
    pub fn table(&self, now: Instant) -> bool {
        self.recent.iter().any(|s| {
            s.table_at
                .is_some_and(|t| now.saturating_duration_since(t) < TABLE_HOLD)
        })
    }

    /// Whether at least two peers have announced routes within
    /// [`SEVERAL_WITHIN`] of `now`, one of them sending a table within
    /// [`TABLE_HOLD`].
    pub fn several(&self, now: Instant) -> bool {
        let since = |t: Instant| now.saturating_duration_since(t);
        let mut announcing = self
            .recent
            .iter()
            .filter(|s| since(s.seen) < SEVERAL_WITHIN);
        let (Some(a), Some(b)) = (announcing.next(), announcing.next()) else {
            return false;
        };
        [a, b]
            .into_iter()
            .chain(announcing)
            .any(|s| s.table_at.is_some_and(|t| since(t) < TABLE_HOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paced by a FIB, decisions run as soon as it has taken the last ones;
    /// coalesced, those that waited [`UNDECIDED_WAIT`] run under a steady
    /// stream (the rest after a pause: the driver's idle branch); a
    /// backlog at the bound is decided either way.
    #[test]
    fn decisions_wait_for_the_fib_or_a_while_when_coalesced() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let fresh = Some(now);
        assert_eq!(due(0, None, true, true, now), None);
        assert_eq!(
            due(1, fresh, true, true, now),
            Some(Due::Oldest(UNDECIDED_REFILL))
        );
        assert_eq!(due(1, Some(t0), true, false, now), None);
        assert_eq!(due(1, fresh, false, true, now), None);
        let just_after = Some(now - UNDECIDED_WAIT + Duration::from_millis(1));
        assert_eq!(due(UNPACED_MAX - 1, just_after, false, true, now), None);
        let by = now - UNDECIDED_WAIT;
        assert_eq!(due(1, Some(by), false, true, now), Some(Due::QueuedBy(by)));
        assert_eq!(
            due(UNPACED_MAX, fresh, false, true, now),
            Some(Due::Oldest(UNDECIDED_REFILL))
        );
        assert_eq!(
            due(UNDECIDED_MAX, fresh, true, false, now),
            Some(Due::Oldest(UNDECIDED_REFILL))
        );
    }

    /// A steady stream queued over 300 ms: what was queued by an instant
    /// (the wait's, 100 ms in) is due, and after it is taken the oldest is
    /// younger.
    #[test]
    fn only_what_waited_is_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Ages::default();
        assert_eq!(a.oldest(), None);
        // 100 positions a millisecond for 300 ms.
        for i in 0..=300u64 {
            a.queued(t0 + ms(i), (i + 1) * 100);
        }
        assert_eq!(a.oldest(), Some(t0));
        let now = t0 + ms(300);
        let by = t0 + ms(100);
        let n = a.queued_by(0, by);
        // Queued by 100 ms: 10,100 positions, give or take a grain.
        assert!((10_100..10_100 + 500).contains(&n), "{n}");
        assert!(a.queued_by(0, t0 + ms(400)) == 30_100);
        a.taken(n as u64);
        let oldest = a.oldest().unwrap();
        assert!(oldest > by && oldest <= by + AGE_GRAIN, "{:?}", oldest - t0);
        assert_eq!(a.queued_by(n as u64, by), 0);
        // Taken from the middle of a run: the run stays until its end.
        a.taken(n as u64 + 1);
        assert_eq!(a.oldest(), Some(oldest));
        a.taken(30_100);
        assert_eq!(a.oldest(), None);
        // Pushes that add nothing (the same count) leave no run behind.
        a.queued(now, 30_100);
        assert_eq!(a.oldest(), None);
    }

    /// The runs kept are bounded: past the bound the newest run grows, so
    /// its positions count as older (decided sooner), never younger.
    #[test]
    fn ages_are_bounded() {
        let t0 = Instant::now();
        let mut a = Ages::default();
        for i in 0..10_000u64 {
            a.queued(t0 + AGE_GRAIN * i as u32, i + 1);
        }
        assert_eq!(a.runs.len(), AGE_RUNS);
        assert_eq!(a.queued_by(0, t0 + AGE_GRAIN * 10_000), 10_000);
        let last = a.runs.back().unwrap();
        assert!(last.start < t0 + AGE_GRAIN * 300);
    }

    /// One peer's table, however long, is one sender; a second peer
    /// announcing meanwhile, even a little, makes several until one of the
    /// two has been quiet for `SEVERAL_WITHIN`, or no table has come for
    /// `TABLE_HOLD`.
    #[test]
    fn several_senders_are_two_peers_announcing_while_a_table_comes() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let table = SENDING_A_TABLE;
        let mut s = Senders::default();
        assert!(!s.several(t0));
        for i in 0..100 {
            s.update_from(a, t0 + ms(i), table);
            assert!(!s.several(t0 + ms(i)), "one peer alone");
        }
        s.update_from(b, t0 + ms(100), 1);
        assert!(s.several(t0 + ms(100)), "b announces while a sends a table");
        s.update_from(b, t0 + ms(120), 1);
        assert!(s.several(t0 + ms(120)), "a sent 21 ms ago");
        assert!(!s.several(t0 + ms(99) + SEVERAL_WITHIN), "a quiet too long");
        s.update_from(b, t0 + ms(200), 1);
        assert!(!s.several(t0 + ms(200)), "b alone again");
        s.update_from(a, t0 + ms(210), 1);
        assert!(s.several(t0 + ms(210)), "a is back, its table 111 ms ago");
        // Both keep announcing a prefix at a time: several while a's table
        // is less than TABLE_HOLD old, then churn.
        let mut t = t0 + ms(300);
        while t < t0 + ms(99) + TABLE_HOLD {
            s.update_from(a, t, 1);
            s.update_from(b, t + ms(5), 1);
            assert!(s.several(t + ms(5)), "a's table {:?} ago", t - t0);
            t += ms(10);
        }
        s.update_from(a, t, 1);
        s.update_from(b, t + ms(5), 1);
        assert!(!s.several(t + ms(5)), "no table for TABLE_HOLD: churn");
    }

    /// One peer's table counts for a FIB-less speaker, from the window in
    /// which it reaches `SENDING_A_TABLE` until `TABLE_HOLD` after the
    /// last such window; churn (a prefix at a time) never does.
    #[test]
    fn a_table_is_one_peer_sending_many_prefixes() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut s = Senders::default();
        for i in 0..10_000u64 {
            s.update_from(a, t0 + us(1000 * i), 1);
            assert!(!s.table(t0 + us(1000 * i)), "churn at update {i}");
        }
        let t1 = t0 + us(1000 * 10_000);
        s.update_from(a, t1, SENDING_A_TABLE - 1);
        assert!(!s.table(t1));
        s.update_from(a, t1 + us(10), 1);
        assert!(s.table(t1 + us(10)));
        assert!(s.table(t1 + us(10) + TABLE_HOLD - us(1)));
        assert!(!s.table(t1 + us(10) + TABLE_HOLD));
    }

    /// A table in UPDATEs of a few hundred prefixes counts once they add
    /// up within the window; two peers churning single prefixes at 5,000
    /// a second each (the churn2 benchmark) never do.
    #[test]
    fn churn_from_two_peers_is_not_several_senders() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut s = Senders::default();
        for i in 0..10_000u64 {
            let t = t0 + us(100 * i);
            s.update_from(if i % 2 == 0 { a } else { b }, t, 1);
            assert!(!s.several(t), "churn at update {i}");
        }
        // The same two peers now send tables, 250 prefixes per UPDATE.
        let t1 = t0 + us(100 * 10_000);
        for i in 0..8u64 {
            s.update_from(a, t1 + us(1000 * i), 250);
            s.update_from(b, t1 + us(1000 * i + 500), 250);
        }
        assert!(s.several(t1 + us(8000)));
    }

    /// Ten peers interleaving their tables are all counted; a cluster's
    /// thousands of peers announcing one prefix each are tracked within
    /// the bound and are not several senders.
    #[test]
    fn many_peers_are_tracked_within_the_bound() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let peer = |k: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + k));
        let mut s = Senders::default();
        for i in 0..50u64 {
            for k in 0..10u32 {
                s.update_from(peer(k), t0 + us(i * 1000 + k as u64 * 100), 100);
            }
        }
        assert!(s.several(t0 + us(50_000)));
        let mut s = Senders::default();
        for k in 0..5000u32 {
            let t = t0 + us(k as u64 * 50);
            s.update_from(peer(k), t, 1);
            assert!(!s.several(t));
        }
        assert_eq!(s.recent.len(), TRACKED);
    }
}
