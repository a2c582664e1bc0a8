//! The datastore edge: a small key-value interface with compare-and-swap
//! semantics, the only thing the allocator needs from etcd.
//!
//! Every write is conditional. A create succeeds only if the key is absent;
//! an update or delete only if the key's modification revision is still the
//! one the caller read. That single rule is what makes concurrent allocators
//! on many nodes safe: whoever loses a race gets [`StoreError::Conflict`],
//! re-reads and decides again. Revisions are store-wide and increase with
//! every write, as in etcd, so a list also returns the revision it was taken
//! at and a watch can resume from exactly there.
//!
//! Backends: [`etcd::EtcdStore`] (many nodes), [`embedded::EmbeddedStore`]
//! (one node, no etcd, persistent) and [`memory::MemoryStore`] (unit tests).

pub mod embedded;
pub mod etcd;
mod hub;
pub mod memory;

use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A stored value with the revision of its last modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The store revision of the write that last changed this key; the token
    /// for [`Store::update`] and [`Store::delete`].
    pub mod_revision: i64,
}

/// The result of a prefix list: the keys in order and the store revision
/// the snapshot was taken at.
#[derive(Debug, Clone)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// One page of a prefix list ([`Store::list_page`]).
#[derive(Debug, Clone)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at: pass it back for the next page
    /// so that all pages come from one snapshot.
    pub revision: i64,
    /// More keys follow the last one of this page.
    pub more: bool,
}

/// Keys and values per page of [`Store::list`]. A block record of a full
/// /26 is about 8 KiB, so a page stays near 1 MiB at worst, far below
/// etcd's 4 MiB default response limit (and gRPC's decoding limit).
pub const LIST_PAGE: usize = 128;
/// Keys per page of [`Store::list_keys`] (no values: ~60 bytes a key).
pub const KEYS_PAGE: usize = 4096;
/// Keys per round trip of [`Store::get_many`]: below etcd's default
/// `--max-txn-ops` of 128.
pub const GET_MANY_CHUNK: usize = 64;

/// One write of a [`Store::commit`]. The first three are conditional and
/// decide races; `Put` and `Remove` are unconditional, for derived records
/// (an index) whose every change rides in the same transaction as a
/// conditional write of the record they derive from, which serializes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Only if absent.
    Create { key: String, value: Vec<u8> },
    /// Only if the mod revision is still `revision`.
    Update {
        key: String,
        value: Vec<u8>,
        revision: i64,
    },
    /// Only if the mod revision is still `revision`.
    Delete { key: String, revision: i64 },
    /// Write whatever is there (or is not).
    Put { key: String, value: Vec<u8> },
    /// Delete if present; absent is not a conflict.
    Remove { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::Delete { key, .. }
            | Op::Put { key, .. }
            | Op::Remove { key } => key,
        }
    }
    /// The value the key holds once the op is applied.
    pub(crate) fn after(&self) -> Option<&[u8]> {
        match self {
            Op::Create { value, .. } | Op::Update { value, .. } | Op::Put { value, .. } => {
                Some(value)
            }
            Op::Delete { .. } | Op::Remove { .. } => None,
        }
    }
    /// Whether the op holds against the key's current mod revision.
    pub(crate) fn holds(&self, current: Option<i64>) -> bool {
        match self {
            Op::Create { .. } => current.is_none(),
            Op::Update { revision, .. } | Op::Delete { revision, .. } => current == Some(*revision),
            Op::Put { .. } | Op::Remove { .. } => true,
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// range end for a prefix); `None` when no such key exists (all 0xff).
pub fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    /// The key and the revision of the delete.
    Delete {
        key: String,
        revision: i64,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Which datastore to open: all a process needs, whatever its own
/// configuration looks like (the daemon's file, a CNI network config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded store at this path (one node, no etcd).
    Embedded(PathBuf),
    Etcd(etcd::EtcdConfig),
}

/// How long opening the embedded store waits while another process holds
/// it.
const EMBEDDED_OPEN_WAIT: Duration = Duration::from_secs(10);

/// Opens the datastore at `at`.
pub async fn open(at: &Location) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match at {
        Location::Embedded(path) => {
            Arc::new(embedded::EmbeddedStore::open(path, EMBEDDED_OPEN_WAIT)?)
        }
        Location::Etcd(cfg) => Arc::new(etcd::EtcdStore::connect(cfg).await?),
    })
}

/// Events of one watch, through a bounded channel: a consumer that does not
/// keep up slows the producer (etcd's stream, or the embedded store's
/// forwarder), and an embedded watcher that falls too far behind gets
/// [`StoreError::Compacted`] and must list again.
pub type WatchReceiver = mpsc::Receiver<Result<WatchEvent, StoreError>>;

/// Capacity of every watch channel.
pub const WATCH_CHANNEL_CAPACITY: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the key exists (create), or changed or
    /// vanished since it was read (update, delete). Re-read and retry.
    #[error("conflict on {key}: it changed since it was read; re-read and retry")]
    Conflict { key: String },
    #[error(
        "etcd unreachable at {endpoints}: {detail}; check that etcd runs, that the endpoints are right and that TLS files match"
    )]
    Unavailable { endpoints: String, detail: String },
    #[error("etcd at {endpoints} refused the request: {detail}")]
    Etcd { endpoints: String, detail: String },
    #[error("embedded datastore {path}: {detail}; check the path is writable and not used by another process", path = .path.display())]
    Embedded { path: PathBuf, detail: String },
    #[error("watch from revision {requested} is no longer possible (history kept from {oldest}); list again and watch from the listing's revision")]
    Compacted { requested: i64, oldest: i64 },
    #[error("TLS file {path}: {detail}", path = .path.display())]
    Tls { path: PathBuf, detail: String },
    #[error("key {key} is not valid UTF-8")]
    BadKey { key: String },
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
    /// True when the store could not be reached at all (as opposed to a
    /// request it answered with a refusal).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Create `key` if it is absent; returns the new mod revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError>;
    /// Replace `key` if its mod revision is still `revision`.
    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError>;
    /// Delete `key` if its mod revision is still `revision`.
    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError>;
    /// Apply every op or none: all conditions hold at one revision, and the
    /// writes land together at the returned revision. A failed condition
    /// gives [`StoreError::Conflict`] naming one failing key. Keys must be
    /// distinct.
    async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError>;
    /// At most `limit` keys starting with `prefix` and sorting after
    /// `after` (from the first when `None`), in key order, read at
    /// `revision` (0: the current one). Values are empty when `keys_only`.
    /// The primitive every list is made of: no response is ever larger
    /// than a page, whatever the datastore holds.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
        keys_only: bool,
    ) -> Result<Page, StoreError>;
    /// Every key starting with `prefix`, in key order, from one snapshot,
    /// fetched [`LIST_PAGE`] at a time.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        list_paged(self, prefix, LIST_PAGE, false).await
    }
    /// Several keys, [`GET_MANY_CHUNK`] per round trip, each chunk from one
    /// snapshot; `None` for an absent key.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }
    /// The keys under `prefix` and their mod revisions, without values:
    /// cheap where values are large; [`KEYS_PAGE`] per round trip.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(list_paged(self, prefix, KEYS_PAGE, true)
            .await?
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect())
    }
    /// Changes to keys under `prefix` with a revision of `from_revision` or
    /// later, then live changes.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver, StoreError>;
    /// A cheap round trip, for health checks (CNI STATUS).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Attempts at a paged list whose snapshot was compacted away between two
/// pages (each attempt starts again at the current revision).
const LIST_ATTEMPTS: usize = 3;

/// The size a page of values aims at: far below the 4 MiB that etcd's
/// server and the gRPC client accept by default.
pub const PAGE_BYTES: usize = 1 << 20;
/// The most records a page of values asks for, however small they are.
pub const MAX_PAGE: usize = 4096;

/// Every page under `prefix`, all at the revision of the first one, so the
/// result is one snapshot as a single range read would be. A snapshot
/// compacted away meanwhile (a long list on a busy etcd) starts over.
///
/// The page size adapts to the records: it doubles while the largest
/// record of a page says twice as many still fit in [`PAGE_BYTES`] (200k
/// handles of ~200 bytes come 4,096 at a time, /26 blocks of up to 8 KiB
/// 128 at a time), and a page refused as too large (small records followed
/// by large ones under one prefix) is asked again at a quarter of the size.
pub async fn list_paged<S: Store + ?Sized>(
    store: &S,
    prefix: &str,
    limit: usize,
    keys_only: bool,
) -> Result<Listing, StoreError> {
    let mut attempt = 0;
    'again: loop {
        attempt += 1;
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut revision = 0;
        let mut limit = limit.max(1);
        loop {
            let after = kvs.last().map(|kv| kv.key.as_str());
            let page = match store
                .list_page(prefix, after, limit, revision, keys_only)
                .await
            {
                Ok(p) => p,
                Err(StoreError::Compacted { .. }) if attempt < LIST_ATTEMPTS => continue 'again,
                Err(StoreError::Etcd { ref detail, .. })
                    if limit > 1 && detail.contains("too large") =>
                {
                    limit = (limit / 4).max(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            revision = page.revision;
            let more = page.more && !page.kvs.is_empty();
            if !keys_only {
                if let Some(biggest) = page
                    .kvs
                    .iter()
                    .map(|kv| kv.key.len() + kv.value.len())
                    .max()
                {
                    limit = (limit * 2)
                        .min(PAGE_BYTES / biggest.max(1))
                        .clamp(1, MAX_PAGE);
                }
            }
            kvs.extend(page.kvs);
            if !more {
                return Ok(Listing { kvs, revision });
            }
        }
    }
}

/// The conformance suite every backend must pass; public so that the
/// integration tests can run it against real etcd and a real file.
#[doc(hidden)]
pub mod conformance;
