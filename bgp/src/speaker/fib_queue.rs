//! The speaker → FIB stream: batches of [`FibChange`]s, bounded by the
//! changes in flight rather than by batches, with a bound that grows with
//! the table.
//!
//! Why it grows: Linux's IPv4 FIB trie rebalances inside the insert that
//! crosses a node's threshold, and for a full table one such insert takes
//! 0.3–0.6 s. A speaker that can decide only 4k changes ahead then blocks
//! on the full queue while the other core idles; one that can decide an
//! eighth of a full table ahead overlaps part of the stall (1M IPv4, A/B
//! alternated, docs/benchmarks/history.md, seventh round: median ~3.1 s
//! instead of ~3.26 s to the FIB). The longest stall comes late (a second
//! and more at 600–800k routes on a slow machine), when a bound of an
//! eighth of the table at 1M (57k at 700k) let the speaker run dry while
//! the other core idled, and decide the rest afterwards against the
//! kernel's inserts: a third of the table (320k at 1M, 156k at 700k) made
//! the load ~10 % faster (medians 5.5 against 6.1 s, 6 alternated pairs,
//! eighth round), but its peak memory rose by 10–14 B/route (to 0.76–0.80×
//! BIRD's): the speaker then also runs ahead of the peers' sessions and
//! fills their queues with encoded UPDATEs. So the bound grows as fast
//! (a third of the table squared over a million) and stops at 192k,
//! reached at ~800k prefixes. A small table has short stalls and no room
//! to spare in its memory per route, so the bound scales with the square
//! of the table: 4k changes up to ~110k prefixes, 80k at 500k, 156k at
//! 700k, 192k from ~800k.
//!
//! A consumer that writes nothing (the FIB disabled: a route reflector, a
//! speaker that forwards nothing) says so ([`FibStream::unpaced`]): the
//! speaker then does not pace its decisions on it (see `Driver` in
//! `speaker/mod.rs`).
//!
//! The stream also carries the core's sweep marks (`Output::Sweeping`): a
//! count of dead peers' sweeps under way, raised before a sweep's first
//! batch and lowered after its last, then an empty batch to wake the
//! consumer. The FIB writer holds a sweep's deletes until its end, to
//! remove the peer's routes with their nexthop object in one kernel pass.

use crate::rib::FibChange;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, Notify, Semaphore};

/// Batches in the channel at most; the change bound below is the one that
/// binds for batches of 64 (`core::FIB_BATCH`).
const BATCHES: usize = 2 * ROOM_MAX / 64;
/// Changes in flight at least: 64 batches of 64, the bound this stream
/// had before it grew with the table (256 batches held 16k, 22 B/route of
/// a 100k table's peak; 64 measured 105–110 instead of 119–124 B/route at
/// 100k IPv4, docs/benchmarks/history.md, issue 17).
const ROOM_MIN: usize = 4096;
/// ... and at most (9 MB of 48-byte changes, a fifth of a full table).
const ROOM_MAX: usize = 192 * 1024;

/// The bound on changes in flight for a table of `prefixes`.
fn room_for(prefixes: usize) -> usize {
    let p = prefixes as u64;
    let room = (p / 3).saturating_mul(p) / (1 << 20);
    (room.min(ROOM_MAX as u64) as usize).max(ROOM_MIN)
}

/// Permits a batch of `len` changes takes (a batch larger than the
/// smallest bound, which the core never makes, takes no more than that,
/// so it cannot wait forever).
fn permits(len: usize) -> u32 {
    len.min(ROOM_MIN) as u32
}

pub(super) fn channel() -> (FibSender, FibStream) {
    let (tx, rx) = mpsc::channel(BATCHES);
    let room = Arc::new(Semaphore::new(ROOM_MIN));
    let waiting = Arc::new(AtomicUsize::new(0));
    let sweeps = Arc::new(AtomicUsize::new(0));
    let unpaced = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(Notify::new());
    (
        FibSender {
            tx,
            room: room.clone(),
            waiting: waiting.clone(),
            sweeps: sweeps.clone(),
            paced: Paced(unpaced.clone()),
            granted: ROOM_MIN,
            drained: drained.clone(),
        },
        FibStream {
            rx,
            room,
            waiting,
            sweeps,
            unpaced,
            drained,
        },
    )
}

/// Whether the FIB's consumer paces decisions ([`FibSender::paces`]).
#[derive(Clone, Debug)]
pub(super) struct Paced(Arc<AtomicBool>);

impl Paced {
    pub fn get(&self) -> bool {
        !self.0.load(Ordering::Relaxed)
    }
}

pub(super) struct FibSender {
    tx: mpsc::Sender<Vec<FibChange>>,
    room: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Peers' sweeps under way (`Output::Sweeping`).
    sweeps: Arc<AtomicUsize>,
    /// Cleared by a consumer that writes nothing ([`FibStream::unpaced`]).
    paced: Paced,
    /// The bound now: permits handed to the semaphore so far.
    granted: usize,
    /// Told when the consumer has taken everything it was given.
    drained: Arc<Notify>,
}

impl FibSender {
    /// Waits for room for `batch`, then queues it; false once the FIB
    /// side is gone.
    pub async fn send(&mut self, batch: Vec<FibChange>) -> bool {
        match self.room.acquire_many(permits(batch.len())).await {
            Ok(p) => p.forget(),
            Err(_) => return false,
        }
        let n = batch.len();
        // Counted before it can be received (and subtracted).
        self.waiting.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(batch).await.is_err() {
            self.waiting.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A peer's sweep begins (`on`) or ends (`core::Output::Sweeping`).
    /// The begin is visible to the consumer before the sweep's first
    /// batch, the end only after its last; an end is followed by an empty
    /// batch, which wakes a consumer waiting for the sweep to end.
    pub async fn sweeping(&mut self, on: bool) {
        if on {
            self.sweeps.fetch_add(1, Ordering::Release);
            return;
        }
        let ended = self
            .sweeps
            .fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if ended {
            let _ = self.tx.send(Vec::new()).await;
        }
    }

    /// The consumer has taken everything it was given.
    pub fn is_drained(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity()
    }

    /// Wakes a waiter once the consumer has taken everything it was given
    /// (or at once, if it did since the last waiter was woken: check
    /// [`FibSender::is_drained`] after waking). Paced decisions then run
    /// as soon as the writer is free, not when the next UPDATE or a pause
    /// comes.
    pub fn drained(&self) -> Arc<Notify> {
        self.drained.clone()
    }

    /// Whether the consumer writes what it is given (a FIB), so that
    /// decisions are worth making as soon as it has taken the last ones.
    pub fn paces(&self) -> bool {
        self.paced.get()
    }

    /// A reader of [`FibSender::paces`] for other threads.
    pub fn paced(&self) -> Paced {
        self.paced.clone()
    }

    /// Raises the bound for a table of `prefixes` (it never shrinks: the
    /// memory of a table once held is the process's anyway).
    pub fn fit(&mut self, prefixes: usize) {
        let want = room_for(prefixes);
        if want > self.granted {
            self.room.add_permits(want - self.granted);
            self.granted = want;
        }
    }
}

/// The FIB's end of the stream.
pub struct FibStream {
    rx: mpsc::Receiver<Vec<FibChange>>,
    room: Arc<Semaphore>,
    /// Changes sent and not yet received.
    waiting: Arc<AtomicUsize>,
    sweeps: Arc<AtomicUsize>,
    unpaced: Arc<AtomicBool>,
    drained: Arc<Notify>,
}

impl FibStream {
    /// This consumer only counts what it is given (the FIB disabled): the
    /// speaker need not decide early to keep it busy.
    pub fn unpaced(&self) {
        self.unpaced.store(true, Ordering::Relaxed);
    }

    /// Appends up to `limit` batches to `buf`, waiting for the first; 0
    /// once the speaker is gone. Their room goes back to the speaker.
    pub async fn recv_many(&mut self, buf: &mut Vec<Vec<FibChange>>, limit: usize) -> usize {
        let start = buf.len();
        let n = self.rx.recv_many(buf, limit).await;
        self.release(&buf[start..]);
        n
    }

    /// The next batch; `None` once the speaker is gone.
    pub async fn recv(&mut self) -> Option<Vec<FibChange>> {
        let b = self.rx.recv().await?;
        self.release(std::slice::from_ref(&b));
        Some(b)
    }

    pub fn try_recv(&mut self) -> Result<Vec<FibChange>, TryRecvError> {
        let b = self.rx.try_recv()?;
        self.release(std::slice::from_ref(&b));
        Ok(b)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Whether a peer's paths are being taken out: its withdrawals are
    /// coming, and an empty batch follows the last of them.
    pub fn sweeping(&self) -> bool {
        self.sweeps.load(Ordering::Acquire) > 0
    }

    /// Changes waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn release(&self, batches: &[Vec<FibChange>]) {
        let n: usize = batches.iter().map(Vec::len).sum();
        self.waiting.fetch_sub(n, Ordering::Relaxed);
        let permits: usize = batches.iter().map(|b| permits(b.len()) as usize).sum();
        if permits > 0 {
            self.room.add_permits(permits);
        }
        if self.rx.is_empty() {
            self.drained.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::Via;

    fn batch(n: usize) -> Vec<FibChange> {
        (0..n)
            .map(|i| FibChange {
                prefix: format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap(),
                via: Via::Unreachable,
            })
            .collect()
    }

    /// A consumer that only counts says so, and the speaker sees it.
    #[test]
    fn a_counting_consumer_does_not_pace_decisions() {
        let (tx, rx) = channel();
        assert!(tx.paces());
        rx.unpaced();
        assert!(!tx.paces());
    }

    #[test]
    fn the_bound_grows_with_the_square_of_the_table() {
        assert_eq!(room_for(0), ROOM_MIN);
        assert_eq!(room_for(100_000), ROOM_MIN);
        assert!(room_for(500_000) > 75_000 && room_for(500_000) < 85_000);
        assert_eq!(room_for(110_000), ROOM_MIN);
        assert!(room_for(180_000) > ROOM_MIN);
        assert_eq!(room_for(1 << 20), ROOM_MAX);
        assert_eq!(room_for(usize::MAX / 2), ROOM_MAX);
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_in_changes_and_gets_it_back() {
        let (mut tx, mut rx) = channel();
        for _ in 0..ROOM_MIN / 64 {
            assert!(tx.send(batch(64)).await);
        }
        assert_eq!(rx.waiting(), ROOM_MIN);
        // No room left: the next batch waits ...
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), tx.send(batch(1)));
        assert!(more.await.is_err());
        // ... until the consumer takes some.
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 2).await, 2);
        assert_eq!(rx.waiting(), ROOM_MIN - 128);
        assert!(tx.send(batch(64)).await);
        assert!(tx.send(batch(64)).await);
        assert!(!tx.is_drained());
    }

    #[tokio::test]
    async fn a_larger_table_lets_the_sender_run_further_ahead() {
        let (mut tx, mut rx) = channel();
        tx.fit(1 << 20);
        let fill = async {
            for _ in 0..ROOM_MAX / 64 {
                assert!(tx.send(batch(64)).await);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), fill)
            .await
            .expect("room for a fifth of a full table");
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), tx.send(batch(1)));
        assert!(more.await.is_err());
        let mut buf = Vec::new();
        while !rx.is_empty() {
            rx.recv_many(&mut buf, 64).await;
        }
        assert_eq!(buf.iter().map(Vec::len).sum::<usize>(), ROOM_MAX);
        assert!(tx.is_drained());
        // A smaller table later does not take room back.
        tx.fit(10);
        assert_eq!(rx.room.available_permits(), ROOM_MAX);
    }

    /// A sweep's begin is seen before its batches, its end only after
    /// them, and an empty batch follows the end to wake the consumer.
    #[tokio::test]
    async fn a_sweep_is_marked_around_its_batches() {
        let (mut tx, mut rx) = channel();
        assert!(!rx.sweeping());
        tx.sweeping(true).await;
        assert!(rx.sweeping());
        assert!(tx.send(batch(3)).await);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 8).await, 1);
        assert!(rx.sweeping(), "batches of the sweep may follow");
        // Two peers' sweeps overlap: the marks count.
        tx.sweeping(true).await;
        tx.sweeping(false).await;
        assert!(rx.sweeping());
        tx.sweeping(false).await;
        assert!(!rx.sweeping());
        buf.clear();
        assert_eq!(rx.recv_many(&mut buf, 8).await, 2);
        assert!(buf.iter().all(Vec::is_empty), "{buf:?}");
        assert_eq!(rx.waiting(), 0);
        // An end without a begin changes nothing and sends nothing.
        tx.sweeping(false).await;
        assert!(!rx.sweeping() && rx.is_empty());
    }

    /// The sender is woken when the consumer has taken the last batch, not
    /// when it takes one of several.
    #[tokio::test]
    async fn the_sender_is_told_when_the_consumer_has_taken_everything() {
        let (mut tx, mut rx) = channel();
        let drained = tx.drained();
        assert!(tx.send(batch(1)).await);
        assert!(tx.send(batch(1)).await);
        let short = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(short, drained.notified())
            .await
            .is_err());
        let waiter = tokio::spawn({
            let drained = drained.clone();
            async move { drained.notified().await }
        });
        tokio::task::yield_now().await;
        assert!(rx.recv().await.is_some());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one batch still queued");
        assert!(rx.recv().await.is_some());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken once drained")
            .unwrap();
        assert!(tx.is_drained());
    }
}
