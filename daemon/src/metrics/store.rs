//! The instrumented store: every datastore call counted and timed, bytes
//! read counted per kind of record, and [`Health`] told whether the
//! datastore answers.

use super::render::head;
use crate::health::Health;
use async_trait::async_trait;
use petrel_ipam::store::{
    KeyValue, Listing, Op, Page, Store, StoreError, WatchEvent, WatchReceiver,
    WATCH_CHANNEL_CAPACITY,
};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datastore operations, for the instrumented store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    Create,
    Update,
    Delete,
    Commit,
    List,
    GetMany,
    ListKeys,
    Watch,
    Ping,
    ListPage,
}

impl StoreOp {
    const ALL: [StoreOp; 11] = [
        StoreOp::Get,
        StoreOp::Create,
        StoreOp::Update,
        StoreOp::Delete,
        StoreOp::Commit,
        StoreOp::List,
        StoreOp::GetMany,
        StoreOp::ListKeys,
        StoreOp::Watch,
        StoreOp::Ping,
        StoreOp::ListPage,
    ];
    fn name(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Create => "create",
            StoreOp::Update => "update",
            StoreOp::Delete => "delete",
            StoreOp::Commit => "commit",
            StoreOp::List => "list",
            StoreOp::GetMany => "get_many",
            StoreOp::ListKeys => "list_keys",
            StoreOp::Watch => "watch",
            StoreOp::Ping => "ping",
            StoreOp::ListPage => "list_page",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Debug, Default)]
struct OpStats {
    total: AtomicU64,
    errors: AtomicU64,
    /// Conflicts are answers, not failures: counted apart from errors.
    conflicts: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

/// Which records a key belongs to, for the bytes-read counters: the scale
/// contract is that a node reads block contents only of its own blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    Blocks,
    Affinities,
    Handles,
    Borrowed,
    Nodes,
    IpamConfig,
    Bgp,
    Other,
}

impl Records {
    const ALL: [Records; 8] = [
        Records::Blocks,
        Records::Affinities,
        Records::Handles,
        Records::Borrowed,
        Records::Nodes,
        Records::IpamConfig,
        Records::Bgp,
        Records::Other,
    ];
    pub fn of(key: &str) -> Records {
        use petrel_ipam::keys;
        if key.starts_with(keys::BLOCKS) {
            Records::Blocks
        } else if key.starts_with(keys::AFFINITIES) {
            Records::Affinities
        } else if key.starts_with(keys::HANDLES) {
            Records::Handles
        } else if key.starts_with(keys::BORROWED) {
            Records::Borrowed
        } else if key.starts_with(keys::NODES) {
            Records::Nodes
        } else if key.starts_with(keys::SETTINGS) {
            Records::IpamConfig
        } else if key.starts_with(crate::cluster::model::BGP_ROOT) {
            Records::Bgp
        } else {
            Records::Other
        }
    }
    fn name(self) -> &'static str {
        match self {
            Records::Blocks => "blocks",
            Records::Affinities => "affinities",
            Records::Handles => "handles",
            Records::Borrowed => "borrowed",
            Records::Nodes => "nodes",
            Records::IpamConfig => "ipam-config",
            Records::Bgp => "bgp",
            Records::Other => "other",
        }
    }
}

/// Datastore counters: operations, errors and latency per operation, and
/// bytes read (keys and values) per kind of record, by reads and by
/// watch events.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    ops: [OpStats; StoreOp::ALL.len()],
    read_bytes: [AtomicU64; Records::ALL.len()],
    watch_bytes: [AtomicU64; Records::ALL.len()],
}

impl StoreMetrics {
    /// Bytes of `kv` read by a request.
    pub fn count_read(&self, kv: &KeyValue) {
        self.read_bytes[Records::of(&kv.key) as usize]
            .fetch_add((kv.key.len() + kv.value.len()) as u64, Ordering::Relaxed);
    }
    /// Bytes of a watch event.
    pub fn count_watch(&self, ev: &WatchEvent) {
        let n = match ev {
            WatchEvent::Put(kv) => kv.key.len() + kv.value.len(),
            WatchEvent::Delete { key, .. } => key.len(),
        };
        self.watch_bytes[Records::of(ev.key()) as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Bytes read of `records`, by requests and by watch events.
    pub fn bytes_read(&self, records: Records) -> (u64, u64) {
        (
            self.read_bytes[records as usize].load(Ordering::Relaxed),
            self.watch_bytes[records as usize].load(Ordering::Relaxed),
        )
    }

    /// Records one finished operation.
    pub fn record(&self, op: StoreOp, took: Duration, outcome: Result<(), &StoreError>) {
        let s = &self.ops[op as usize];
        s.total.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                s.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        head(
            out,
            "petrel_datastore_read_bytes_total",
            "counter",
            "Bytes of keys and values read from the datastore, by kind of record and by how (a request, or a watch event).",
        );
        for r in Records::ALL {
            let (read, watch) = self.bytes_read(r);
            let _ = writeln!(
                out,
                "petrel_datastore_read_bytes_total{{records=\"{}\",via=\"request\"}} {read}",
                r.name()
            );
            let _ = writeln!(
                out,
                "petrel_datastore_read_bytes_total{{records=\"{}\",via=\"watch\"}} {watch}",
                r.name()
            );
        }
        head(
            out,
            "petrel_datastore_operations_total",
            "counter",
            "Datastore operations, by operation.",
        );
        for op in StoreOp::ALL {
            let v = self.ops[op as usize].total.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "petrel_datastore_operations_total{{op=\"{}\"}} {v}",
                op.name()
            );
        }
        head(
            out,
            "petrel_datastore_errors_total",
            "counter",
            "Datastore operations that failed (unavailable, timeouts, corrupt data), by operation.",
        );
        for op in StoreOp::ALL {
            let v = self.ops[op as usize].errors.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "petrel_datastore_errors_total{{op=\"{}\"}} {v}",
                op.name()
            );
        }
        head(out, "petrel_datastore_conflicts_total", "counter", "Datastore writes refused because the record changed meanwhile (retried), by operation.");
        for op in StoreOp::ALL {
            let v = self.ops[op as usize].conflicts.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "petrel_datastore_conflicts_total{{op=\"{}\"}} {v}",
                op.name()
            );
        }
        head(
            out,
            "petrel_datastore_operation_duration_seconds",
            "histogram",
            "Datastore operation latency, by operation.",
        );
        for op in StoreOp::ALL {
            let s = &self.ops[op as usize];
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "petrel_datastore_operation_duration_seconds_bucket{{op=\"{}\",le=\"{b}\"}} {cum}", op.name());
            }
            let total = s.total.load(Ordering::Relaxed);
            let _ = writeln!(out, "petrel_datastore_operation_duration_seconds_bucket{{op=\"{}\",le=\"+Inf\"}} {total}", op.name());
            let sum = s.micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "petrel_datastore_operation_duration_seconds_sum{{op=\"{}\"}} {sum}",
                op.name()
            );
            let _ = writeln!(
                out,
                "petrel_datastore_operation_duration_seconds_count{{op=\"{}\"}} {total}",
                op.name()
            );
        }
    }
}

/// A [`Store`] that counts and times every call of the store it wraps, and
/// tells [`Health`] whether the datastore answers.
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<StoreMetrics>,
    health: Option<Arc<Health>>,
}

impl InstrumentedStore {
    pub fn new(
        inner: Arc<dyn Store>,
        metrics: Arc<StoreMetrics>,
        health: Option<Arc<Health>>,
    ) -> Self {
        Self {
            inner,
            metrics,
            health,
        }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let t = Instant::now();
        let r = f.await;
        self.metrics.record(op, t.elapsed(), r.as_ref().map(drop));
        if let Some(h) = &self.health {
            match &r {
                Err(e) if e.is_unavailable() => h.set_datastore_ok(false),
                // Any answer, a conflict included, proves the store is up.
                _ => h.set_datastore_ok(true),
            }
        }
        r
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self.timed(StoreOp::Get, self.inner.get(key)).await?;
        if let Some(kv) = &r {
            self.metrics.count_read(kv);
        }
        Ok(r)
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        self.timed(StoreOp::Create, self.inner.create(key, value))
            .await
    }
    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError> {
        self.timed(StoreOp::Update, self.inner.update(key, value, revision))
            .await
    }
    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        self.timed(StoreOp::Delete, self.inner.delete(key, revision))
            .await
    }
    async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
        self.timed(StoreOp::Commit, self.inner.commit(ops)).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
        keys_only: bool,
    ) -> Result<Page, StoreError> {
        let p = self
            .timed(
                StoreOp::ListPage,
                self.inner
                    .list_page(prefix, after, limit, revision, keys_only),
            )
            .await?;
        p.kvs.iter().for_each(|kv| self.metrics.count_read(kv));
        Ok(p)
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let l = self.timed(StoreOp::List, self.inner.list(prefix)).await?;
        l.kvs.iter().for_each(|kv| self.metrics.count_read(kv));
        Ok(l)
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let r = self
            .timed(StoreOp::GetMany, self.inner.get_many(keys))
            .await?;
        r.iter()
            .flatten()
            .for_each(|kv| self.metrics.count_read(kv));
        Ok(r)
    }
    async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let r = self
            .timed(StoreOp::ListKeys, self.inner.list_keys(prefix))
            .await?;
        for (k, _) in &r {
            self.metrics.read_bytes[Records::of(k) as usize]
                .fetch_add(k.len() as u64, Ordering::Relaxed);
        }
        Ok(r)
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver, StoreError> {
        let mut inner = self
            .timed(StoreOp::Watch, self.inner.watch(prefix, from_revision))
            .await?;
        // One more bounded hop, to count what the watch delivers; it ends
        // with either side.
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            while let Some(ev) = inner.recv().await {
                if let Ok(ev) = &ev {
                    metrics.count_watch(ev);
                }
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOp::Ping, self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use std::sync::Arc;

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map(str::to_string)
    }

    #[tokio::test]
    async fn store_wrapper_counts_times_and_reports_health() {
        let inner: Arc<dyn Store> = Arc::new(petrel_ipam::store::memory::MemoryStore::new());
        let sm = Arc::new(StoreMetrics::default());
        let h = Arc::new(Health::new());
        h.expect_datastore();
        let s = InstrumentedStore::new(inner, sm.clone(), Some(h.clone()));
        let rev = s.create("/k", b"v".to_vec()).await.unwrap();
        assert!(s.create("/k", b"v".to_vec()).await.is_err());
        s.get("/k").await.unwrap();
        s.delete("/k", rev).await.unwrap();
        let mut t = String::new();
        sm.render(&mut t);
        assert_eq!(
            value(&t, "petrel_datastore_operations_total{op=\"create\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, "petrel_datastore_conflicts_total{op=\"create\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "petrel_datastore_errors_total{op=\"create\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            value(
                &t,
                "petrel_datastore_operation_duration_seconds_count{op=\"get\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert!(!h
            .degraded_reasons()
            .contains(&"datastore unavailable".to_string()));
    }
}
