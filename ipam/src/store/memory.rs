//! An in-memory store with the same semantics as etcd, for unit tests and
//! simulations. Nothing persists.

use super::hub::Hub;
use super::{KeyValue, Listing, Op, Page, Store, StoreError, WatchEvent, WatchReceiver};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
struct State {
    kvs: BTreeMap<String, (Vec<u8>, i64)>,
    revision: i64,
}

pub struct MemoryStore {
    inner: Mutex<(State, Hub)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            inner: Mutex::new((State::default(), Hub::new(0))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Hub)> {
        // A panic while holding the lock cannot leave the map half-written
        // (every mutation is a single insert or remove), so poisoning is
        // safe to ignore.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let g = self.lock();
        Ok(g.0.kvs.get(key).map(|(v, r)| KeyValue {
            key: key.to_string(),
            value: v.clone(),
            mod_revision: *r,
        }))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let mut g = self.lock();
        let (state, hub) = &mut *g;
        if state.kvs.contains_key(key) {
            return Err(StoreError::Conflict { key: key.into() });
        }
        state.revision += 1;
        let rev = state.revision;
        state.kvs.insert(key.to_string(), (value.clone(), rev));
        hub.publish(WatchEvent::Put(KeyValue {
            key: key.into(),
            value,
            mod_revision: rev,
        }));
        Ok(rev)
    }

    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError> {
        let mut g = self.lock();
        let (state, hub) = &mut *g;
        match state.kvs.get(key) {
            Some((_, r)) if *r == revision => {}
            _ => return Err(StoreError::Conflict { key: key.into() }),
        }
        state.revision += 1;
        let rev = state.revision;
        state.kvs.insert(key.to_string(), (value.clone(), rev));
        hub.publish(WatchEvent::Put(KeyValue {
            key: key.into(),
            value,
            mod_revision: rev,
        }));
        Ok(rev)
    }

    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        let mut g = self.lock();
        let (state, hub) = &mut *g;
        match state.kvs.get(key) {
            Some((_, r)) if *r == revision => {}
            _ => return Err(StoreError::Conflict { key: key.into() }),
        }
        state.revision += 1;
        state.kvs.remove(key);
        hub.publish(WatchEvent::Delete {
            key: key.into(),
            revision: state.revision,
        });
        Ok(())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
        let mut g = self.lock();
        let (state, hub) = &mut *g;
        for op in &ops {
            let cur = state.kvs.get(op.key()).map(|(_, r)| *r);
            if !op.holds(cur) {
                return Err(StoreError::Conflict {
                    key: op.key().into(),
                });
            }
        }
        state.revision += 1;
        let rev = state.revision;
        for op in ops {
            match op {
                Op::Create { key, value }
                | Op::Update { key, value, .. }
                | Op::Put { key, value } => {
                    state.kvs.insert(key.clone(), (value.clone(), rev));
                    hub.publish(WatchEvent::Put(KeyValue {
                        key,
                        value,
                        mod_revision: rev,
                    }));
                }
                Op::Delete { key, .. } | Op::Remove { key } => {
                    // etcd reports no event for deleting an absent key.
                    if state.kvs.remove(&key).is_some() {
                        hub.publish(WatchEvent::Delete { key, revision: rev });
                    }
                }
            }
        }
        Ok(rev)
    }

    /// Pages of the current state: an in-memory store keeps no history, so
    /// `revision` is not honoured (the whole-list [`Store::list`] below is
    /// one snapshot).
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        _revision: i64,
        keys_only: bool,
    ) -> Result<Page, StoreError> {
        let g = self.lock();
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_string()),
            None => std::ops::Bound::Included(prefix.to_string()),
        };
        let mut it =
            g.0.kvs
                .range((start, std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix));
        let kvs: Vec<KeyValue> = it
            .by_ref()
            .take(limit)
            .map(|(k, (v, r))| KeyValue {
                key: k.clone(),
                value: if keys_only { Vec::new() } else { v.clone() },
                mod_revision: *r,
            })
            .collect();
        let more = it.next().is_some();
        Ok(Page {
            kvs,
            revision: g.0.revision,
            more,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let g = self.lock();
        let kvs =
            g.0.kvs
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, r))| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                    mod_revision: *r,
                })
                .collect();
        Ok(Listing {
            kvs,
            revision: g.0.revision,
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver, StoreError> {
        let g = self.lock();
        g.1.watch(prefix, from_revision, g.0.revision)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{list_paged, Page};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that refuses a page over 4 MiB, as etcd's gRPC client does,
    /// and counts the pages asked for.
    struct Limited(MemoryStore, AtomicUsize);

    #[async_trait]
    impl Store for Limited {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.0.get(key).await
        }
        async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
            self.0.create(key, value).await
        }
        async fn update(&self, k: &str, v: Vec<u8>, r: i64) -> Result<i64, StoreError> {
            self.0.update(k, v, r).await
        }
        async fn delete(&self, key: &str, r: i64) -> Result<(), StoreError> {
            self.0.delete(key, r).await
        }
        async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
            self.0.commit(ops).await
        }
        async fn list_page(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
            revision: i64,
            keys_only: bool,
        ) -> Result<Page, StoreError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let p = self
                .0
                .list_page(prefix, after, limit, revision, keys_only)
                .await?;
            let bytes: usize = p.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
            if bytes > 4 << 20 {
                return Err(StoreError::Etcd {
                    endpoints: "test".into(),
                    detail: format!("decoded message length too large: found {bytes} bytes"),
                });
            }
            Ok(p)
        }
        async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
            list_paged(self, prefix, 128, false).await
        }
        async fn watch(&self, p: &str, from: i64) -> Result<WatchReceiver, StoreError> {
            self.0.watch(p, from).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn pages_grow_for_small_records_and_shrink_when_refused() {
        let s = Limited(MemoryStore::new(), AtomicUsize::new(0));
        // 20,000 small records, then 600 of 16 KiB (9.4 MiB) under the
        // same prefix.
        let mut ops = Vec::new();
        for i in 0..20_000 {
            ops.push(Op::Create {
                key: format!("/p/a/{i:06}"),
                value: vec![b'x'; 100],
            });
        }
        for i in 0..600 {
            ops.push(Op::Create {
                key: format!("/p/b/{i:06}"),
                value: vec![b'y'; 16 << 10],
            });
        }
        s.0.commit(ops).await.unwrap();
        let l = s.list("/p/").await.unwrap();
        assert_eq!(l.kvs.len(), 20_600, "every record, once");
        assert!(l.kvs.windows(2).all(|w| w[0].key < w[1].key), "in order");
        let pages = s.1.load(Ordering::Relaxed);
        // At a fixed 128 a page it would take 161 pages; growing, the small
        // ones come 4,096 at a time and the large ones PAGE_BYTES at a time.
        assert!(pages < 40, "{pages} pages");
    }
}
