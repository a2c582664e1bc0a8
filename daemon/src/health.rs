//! petreld's readiness and liveness, shared by the parts that know (the
//! speaker set-up, the FIB task, the cluster sync) and the parts that tell
//! (systemd's READY=1 and STATUS=, `/readyz`, `/healthz`, `petrelctl`).
//!
//! Ready means the first full sync is done: the speaker runs, the configured
//! peers are added, the FIB writer holds its initial dump, and — when a
//! datastore is configured ([`Health::expect_datastore`]) — the first
//! cluster sync finished. Readiness is latched: once ready, petreld stays
//! ready; trouble afterwards makes it *degraded* (a list of reasons), which
//! changes nothing on the wire but is reported everywhere.
//!
//! Liveness is a heartbeat: the main loop calls [`Health::beat`] after the
//! speaker and the FIB task have both answered, so a stale heartbeat means
//! one of them is stuck.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Shared as `Arc<Health>`.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    speaker_started: AtomicBool,
    peers_configured: AtomicBool,
    fib_ok: AtomicBool,
    datastore_expected: AtomicBool,
    datastore_ok: AtomicBool,
    cluster_synced: AtomicBool,
    ready: AtomicBool,
    /// Milliseconds since `started` of the last heartbeat; 0: none yet.
    last_beat_ms: AtomicU64,
    /// Other reasons to report degraded, by source (e.g. "metrics").
    reasons: Mutex<BTreeMap<String, String>>,
    changed: Notify,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            speaker_started: AtomicBool::new(false),
            peers_configured: AtomicBool::new(false),
            fib_ok: AtomicBool::new(false),
            datastore_expected: AtomicBool::new(false),
            // Unknown until the first datastore operation reports.
            datastore_ok: AtomicBool::new(true),
            cluster_synced: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            last_beat_ms: AtomicU64::new(0),
            reasons: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        }
    }

    fn set(&self, flag: &AtomicBool, v: bool) {
        if flag.swap(v, Ordering::SeqCst) != v {
            self.changed.notify_one();
        }
    }

    pub fn set_speaker_started(&self) {
        self.set(&self.speaker_started, true);
    }

    pub fn set_peers_configured(&self) {
        self.set(&self.peers_configured, true);
    }

    /// The FIB writer holds its initial dump (or the FIB is disabled).
    pub fn set_fib_ok(&self) {
        self.set(&self.fib_ok, true);
    }

    /// A datastore is configured: readiness waits for
    /// [`Health::set_cluster_synced`], and its outages degrade.
    pub fn expect_datastore(&self) {
        self.set(&self.datastore_expected, true);
    }

    /// The datastore answered (true) or failed (false) just now.
    pub fn set_datastore_ok(&self, ok: bool) {
        self.set(&self.datastore_ok, ok);
    }

    /// Whether the first cluster sync is done.
    pub fn cluster_synced(&self) -> bool {
        self.cluster_synced.load(Ordering::SeqCst)
    }

    /// The first sync from the datastore is done.
    pub fn set_cluster_synced(&self) {
        self.set(&self.cluster_synced, true);
    }

    /// Adds (`Some`) or clears (`None`) a degraded reason under `source`.
    pub fn set_reason(&self, source: &str, reason: Option<String>) {
        let mut r = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match reason {
            Some(text) => r.insert(source.to_string(), text.clone()).as_ref() != Some(&text),
            None => r.remove(source).is_some(),
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// Whether the first full sync is done (latched once true).
    pub fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::SeqCst) {
            return true;
        }
        let now = self.speaker_started.load(Ordering::SeqCst)
            && self.peers_configured.load(Ordering::SeqCst)
            && self.fib_ok.load(Ordering::SeqCst)
            && (!self.datastore_expected.load(Ordering::SeqCst)
                || self.cluster_synced.load(Ordering::SeqCst));
        if now {
            self.ready.store(true, Ordering::SeqCst);
        }
        now
    }

    /// What keeps petreld from being ready, or makes it degraded; empty
    /// when all is well.
    pub fn degraded_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.is_ready() {
            for (flag, what) in [
                (&self.speaker_started, "speaker not started"),
                (&self.peers_configured, "peers not configured"),
                (&self.fib_ok, "kernel FIB not synchronised"),
            ] {
                if !flag.load(Ordering::SeqCst) {
                    out.push(what.to_string());
                }
            }
            if self.datastore_expected.load(Ordering::SeqCst)
                && !self.cluster_synced.load(Ordering::SeqCst)
            {
                out.push("first datastore sync not done".into());
            }
        }
        if self.datastore_expected.load(Ordering::SeqCst)
            && !self.datastore_ok.load(Ordering::SeqCst)
        {
            out.push("datastore unavailable".into());
        }
        let r = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        // The reason text names its subject; the source is only a key.
        out.extend(r.values().cloned());
        out
    }

    /// Ready and nothing degraded.
    pub fn is_healthy(&self) -> bool {
        self.is_ready() && self.degraded_reasons().is_empty()
    }

    /// The main loop saw the speaker and the FIB task answer.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_beat_ms.store(ms.max(1), Ordering::SeqCst);
    }

    /// Time since the last heartbeat; since start when none came yet.
    pub fn since_beat(&self) -> Duration {
        let last = self.last_beat_ms.load(Ordering::SeqCst);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// Resolves when something above changed (one waiter: the main loop).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_every_step_and_latched() {
        let h = Health::new();
        assert!(!h.is_ready());
        assert_eq!(h.degraded_reasons().len(), 3);
        h.set_speaker_started();
        h.set_peers_configured();
        assert_eq!(h.degraded_reasons(), ["kernel FIB not synchronised"]);
        h.set_fib_ok();
        assert!(h.is_ready() && h.is_healthy());
    }

    #[test]
    fn datastore_gates_readiness_and_degrades_after() {
        let h = Health::new();
        h.expect_datastore();
        h.set_speaker_started();
        h.set_peers_configured();
        h.set_fib_ok();
        assert!(!h.is_ready());
        assert_eq!(h.degraded_reasons(), ["first datastore sync not done"]);
        h.set_cluster_synced();
        assert!(h.is_ready());
        h.set_datastore_ok(false);
        assert!(h.is_ready() && !h.is_healthy());
        assert_eq!(h.degraded_reasons(), ["datastore unavailable"]);
        h.set_datastore_ok(true);
        h.set_reason(
            "metrics",
            Some("metrics: cannot bind 127.0.0.1:9179".into()),
        );
        assert_eq!(
            h.degraded_reasons(),
            ["metrics: cannot bind 127.0.0.1:9179"]
        );
        h.set_reason("metrics", None);
        assert!(h.is_healthy());
    }
}
