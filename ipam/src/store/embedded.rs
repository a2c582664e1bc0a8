//! The embedded backend: one node, no etcd, a crash-safe file.
//!
//! redb gives ACID transactions with copy-on-write pages and a checksummed
//! commit, so a crash leaves either the old or the new state. Each write is
//! one redb transaction that checks the key's stored revision and bumps the
//! store-wide revision counter, which gives the same compare-and-swap
//! semantics as etcd. redb locks the file, so one process at a time owns
//! it; [`EmbeddedStore::open`] waits a bounded time for another process
//! (a concurrent CNI invocation) to let go. Watches see the writes made
//! through this process; a watch from before the store was opened gets
//! [`StoreError::Compacted`].

use super::hub::Hub;
use super::{KeyValue, Listing, Op, Page, Store, StoreError, WatchEvent, WatchReceiver};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Key → 8-byte little-endian mod revision followed by the value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

pub struct EmbeddedStore {
    path: PathBuf,
    db: Arc<Database>,
    /// Serialises writes with the watch hub, so that a watch's backlog and
    /// its live subscription never miss or repeat an event. Holds the
    /// current revision.
    writer: Arc<Mutex<(i64, Hub)>>,
}

impl EmbeddedStore {
    /// Open or create the store at `path`, waiting up to `wait` while
    /// another process holds it.
    pub fn open(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let err = |detail: String| StoreError::Embedded {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(err(e.to_string())),
            }
        };
        let revision = {
            let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
            let rev = {
                // Opening both tables in a write transaction creates them on
                // a fresh file, so reads never see "table does not exist".
                let _kv = tx.open_table(KV).map_err(|e| err(e.to_string()))?;
                let meta = tx.open_table(META).map_err(|e| err(e.to_string()))?;
                let rev = meta
                    .get(REVISION)
                    .map_err(|e| err(e.to_string()))?
                    .map(|g| g.value())
                    .unwrap_or(0);
                rev
            };
            tx.commit().map_err(|e| err(e.to_string()))?;
            rev
        };
        Ok(EmbeddedStore {
            path: path.to_path_buf(),
            db: Arc::new(db),
            writer: Arc::new(Mutex::new((revision, Hub::new(revision)))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
        let db = self.db.clone();
        let writer = self.writer.clone();
        let path = self.path.clone();
        // redb commits fsync; keep them off the async worker threads.
        tokio::task::spawn_blocking(move || {
            let err = |detail: String| StoreError::Embedded {
                path: path.clone(),
                detail,
            };
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
            let rev = w.0 + 1;
            let mut removed_absent = Vec::new();
            {
                let mut kv = tx.open_table(KV).map_err(|e| err(e.to_string()))?;
                for op in &ops {
                    let current = kv
                        .get(op.key())
                        .map_err(|e| err(e.to_string()))?
                        .map(|g| decode_rev(g.value()));
                    // A record too short to hold a revision (corrupt) holds
                    // no conditional op.
                    let ok = match current {
                        None => op.holds(None),
                        Some(Some(cur)) => op.holds(Some(cur)),
                        Some(None) => matches!(op, Op::Put { .. } | Op::Remove { .. }),
                    };
                    if !ok {
                        // Dropping the transaction aborts it.
                        return Err(StoreError::Conflict {
                            key: op.key().into(),
                        });
                    }
                }
                for (i, op) in ops.iter().enumerate() {
                    match op.after() {
                        Some(v) => {
                            let mut buf = Vec::with_capacity(8 + v.len());
                            buf.extend_from_slice(&rev.to_le_bytes());
                            buf.extend_from_slice(v);
                            kv.insert(op.key(), buf.as_slice())
                                .map_err(|e| err(e.to_string()))?;
                        }
                        None => {
                            let was = kv.remove(op.key()).map_err(|e| err(e.to_string()))?;
                            if was.is_none() {
                                removed_absent.push(i);
                            }
                        }
                    }
                }
                let mut meta = tx.open_table(META).map_err(|e| err(e.to_string()))?;
                meta.insert(REVISION, rev).map_err(|e| err(e.to_string()))?;
            }
            tx.commit().map_err(|e| err(e.to_string()))?;
            w.0 = rev;
            for (i, op) in ops.into_iter().enumerate() {
                // etcd reports no event for deleting an absent key.
                if removed_absent.contains(&i) {
                    continue;
                }
                let ev = match op {
                    Op::Create { key, value }
                    | Op::Update { key, value, .. }
                    | Op::Put { key, value } => WatchEvent::Put(KeyValue {
                        key,
                        value,
                        mod_revision: rev,
                    }),
                    Op::Delete { key, .. } | Op::Remove { key } => {
                        WatchEvent::Delete { key, revision: rev }
                    }
                };
                w.1.publish(ev);
            }
            Ok(rev)
        })
        .await
        .map_err(|e| StoreError::Embedded {
            path: self.path.clone(),
            detail: format!("write task failed: {e}"),
        })?
    }

    fn read<T>(
        &self,
        f: impl FnOnce(
            &redb::ReadOnlyTable<&'static str, &'static [u8]>,
        ) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let err = |detail: String| StoreError::Embedded {
            path: self.path.clone(),
            detail,
        };
        let tx = self.db.begin_read().map_err(|e| err(e.to_string()))?;
        let kv = tx.open_table(KV).map_err(|e| err(e.to_string()))?;
        f(&kv).map_err(|e| err(e.to_string()))
    }
}

/// `None` for a record too short to hold a revision: a corrupt record is
/// treated as absent by reads and as a conflict by writes, never a panic.
fn decode_rev(raw: &[u8]) -> Option<i64> {
    let b: [u8; 8] = raw.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

fn decode(key: &str, raw: &[u8]) -> Option<KeyValue> {
    Some(KeyValue {
        key: key.to_string(),
        mod_revision: decode_rev(raw)?,
        value: raw.get(8..)?.to_vec(),
    })
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.read(|kv| Ok(kv.get(key)?.and_then(|g| decode(key, g.value()))))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        self.write(vec![Op::Create {
            key: key.into(),
            value,
        }])
        .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError> {
        self.write(vec![Op::Update {
            key: key.into(),
            value,
            revision,
        }])
        .await
    }

    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        self.write(vec![Op::Delete {
            key: key.into(),
            revision,
        }])
        .await
        .map(|_| ())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
        self.write(ops).await
    }

    /// Pages of the current state: one process owns the file and there is
    /// no response size limit, so `revision` is not honoured; the
    /// whole-list [`Store::list`] below reads one snapshot.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        _revision: i64,
        keys_only: bool,
    ) -> Result<Page, StoreError> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let revision = w.0;
        let (kvs, more) = self.read(|kv| {
            let mut out = Vec::new();
            let range = match after {
                Some(a) => {
                    kv.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
                }
                None => kv.range(prefix..)?,
            };
            for item in range {
                let (k, v) = item?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    return Ok((out, false));
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                if let Some(mut kv) = decode(k, v.value()) {
                    if keys_only {
                        kv.value = Vec::new();
                    }
                    out.push(kv);
                }
            }
            Ok((out, false))
        })?;
        drop(w);
        Ok(Page {
            kvs,
            revision,
            more,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        // The revision is read under the writer lock so that it matches
        // the snapshot: no write can commit between the two.
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let revision = w.0;
        let kvs = self.read(|kv| {
            let mut out = Vec::new();
            for item in kv.range(prefix..)? {
                let (k, v) = item?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    break;
                }
                if let Some(kv) = decode(k, v.value()) {
                    out.push(kv);
                }
            }
            Ok(out)
        })?;
        drop(w);
        Ok(Listing { kvs, revision })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver, StoreError> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.1.watch(prefix, from_revision, w.0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|_| Ok(()))
    }
}
