//! The allocator driver: reads records, applies the pure operations of
//! [`crate::block`] and [`crate::claim`], and writes back with
//! compare-and-swap, retrying when another node won a race.
//!
//! Write order is chosen so that a client dying between two writes leaves
//! something `check` reports and `gc` (or the next claim) repairs, never a
//! double allocation: the handle record is raised before a block assigns
//! (so release by handle still finds the block), a block is created only
//! under a pending affinity, and a block is deleted only under a
//! pending-deletion affinity and only at the revision seen empty.
//!
//! One idea per file, in the order an address lives: `pools.rs` (the
//! settings: config, pools, node labels), `assign.rs` (an attachment's
//! addresses: the node's own blocks, then a claim, then a borrow),
//! `claims.rs` (a node takes a block), `release.rs` (addresses, handles
//! and empty blocks go back), `repair.rs` (check, gc, the borrowed-address
//! index); `hints.rs` is the process-local cache they share and
//! [`batch`] the group commit. A write that must land retries through
//! `retry_on_conflict`; one whose loss is an answer matches the
//! conflict where it decides.

use crate::store::{Store, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

mod assign;
pub mod batch;
mod claims;
mod hints;
mod pools;
mod release;
mod repair;
#[cfg(test)]
mod tests;

pub use assign::{AssignRequest, Assigned};
pub use claims::is_virtual_node;
pub use hints::CACHE_TTL;
pub use pools::validate_pool;
pub use repair::{GcReport, MigrationOutcome};

use crate::model::Family;
use crate::selector::SelectorError;
use hints::Hints;

/// Attempts at one compare-and-swap before giving up; each lost race means
/// another writer made progress, so this bounds only pathological storms.
const CAS_ATTEMPTS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: stored record cannot be decoded ({detail}); run `petrelctl ipam check`")]
    Corrupt { key: String, detail: String },
    #[error("no enabled {family:?} pool for node {node}{}; add one with `petrelctl pool add`", if .pools.is_empty() { String::new() } else { format!(" among {:?}", .pools) })]
    NoPool {
        family: Family,
        node: String,
        pools: Vec<String>,
    },
    #[error("only {got} of {wanted} {family:?} address(es) available to node {node}: pools are full{}; add a pool, release addresses or raise max blocks per host", if *.strict { " (strict affinity, or a gateway per block, forbids borrowing)" } else { "" })]
    Exhausted {
        family: Family,
        wanted: u32,
        got: u32,
        node: String,
        strict: bool,
    },
    #[error("invalid pool: {0}")]
    InvalidPool(String),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("pool {0} already exists")]
    PoolExists(String),
    #[error("no pool named {0}; `petrelctl pool list` shows them")]
    NoSuchPool(String),
    #[error("pool {name} still holds {in_use} assigned address(es); release them or disable the pool instead")]
    PoolInUse { name: String, in_use: u32 },
    #[error("{0} is in no pool")]
    NotInPool(IpAddr),
    #[error("{addr} is already assigned (to {handle})")]
    AddressInUse { addr: IpAddr, handle: String },
    #[error("gave up on {key} after {CAS_ATTEMPTS} lost races; the datastore is under unusual contention, retry")]
    Contention { key: String },
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The allocator over one datastore; clones share the store and the hints.
#[derive(Clone)]
pub struct Ipam {
    store: Arc<dyn Store>,
    hints: Arc<Hints>,
}

fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| IpamError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain records with string map keys cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ipam {
            store,
            hints: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some((decode(key, &kv.value)?, kv.mod_revision))),
        }
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(T, i64)>> {
        let l = self.store.list(prefix).await?;
        l.kvs
            .iter()
            .map(|kv| Ok((decode(&kv.key, &kv.value)?, kv.mod_revision)))
            .collect()
    }

    /// Write `value` at `key` whatever is there, creating it if absent.
    async fn overwrite(&self, key: &str, value: &[u8]) -> Result<()> {
        retry_on_conflict(key, || async {
            match self.store.get(key).await? {
                None => self.store.create(key, value.to_vec()).await?,
                Some(kv) => {
                    self.store
                        .update(key, value.to_vec(), kv.mod_revision)
                        .await?
                }
            };
            Ok(())
        })
        .await
    }

    /// Delete `key` at `rev`; a lost race means someone else changed or
    /// removed it, which leaves nothing for this caller to do.
    async fn delete_if(&self, key: &str, rev: i64) -> Result<()> {
        match self.store.delete(key, rev).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs `attempt` (read, decide, one conditional write) until its write
/// lands: a [`StoreError::Conflict`] means another writer changed the key
/// since the attempt read it, so the attempt runs again from a fresh read,
/// at most [`CAS_ATTEMPTS`] times before [`IpamError::Contention`] on
/// `key`. Any other error, and any early answer of the attempt, ends it.
async fn retry_on_conflict<T, F, Fut>(key: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    for _ in 0..CAS_ATTEMPTS {
        match attempt().await {
            Err(IpamError::Store(e)) if e.is_conflict() => continue,
            done => return done,
        }
    }
    Err(IpamError::Contention { key: key.into() })
}
