//! 100 simulated nodes against one real etcd, at once, with a pool small
//! enough that most nodes cannot get a block of their own and must borrow.
//! Afterwards no address has two holders, `check` is clean and every
//! released address is free. Then clients are killed mid-operation: what
//! they leave is reported by `check` and repaired by gc.

use petrel_ipam::check::Problem;
use petrel_ipam::ipam::{AssignRequest, Ipam};
use petrel_ipam::model::{Encapsulation, IpamConfig, Pool, PoolUse};
use petrel_ipam::store::etcd::{EtcdConfig, EtcdStore};
use petrel_ipam::store::{KeyValue, Listing, Op, Store, StoreError, WatchReceiver};
use petrel_ipam::testing::{etcd_binary, require, EtcdServer};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 100;
const PER_NODE: usize = 200;
/// Addresses a node holds at most at once: 100 × 20 = 2000 live addresses
/// in a 4096-address pool of 64 blocks, so 36+ nodes get no block.
const WINDOW: usize = 20;

async fn connect(endpoint: &str) -> Ipam {
    let store = EtcdStore::connect(&EtcdConfig::new(vec![endpoint.to_string()]))
        .await
        .expect("connect");
    Ipam::new(Arc::new(Counting(store)))
}

static CALLS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

struct Counting<S>(S);

#[async_trait::async_trait]
impl<S: Store> Store for Counting<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        CALLS[0].fetch_add(1, Ordering::Relaxed);
        self.0.get(key).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        CALLS[1].fetch_add(1, Ordering::Relaxed);
        let r = self.0.create(key, value).await;
        if r.is_err() {
            CALLS[6].fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError> {
        CALLS[2].fetch_add(1, Ordering::Relaxed);
        let r = self.0.update(key, value, revision).await;
        if r.is_err() {
            CALLS[6].fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        CALLS[3].fetch_add(1, Ordering::Relaxed);
        self.0.delete(key, revision).await
    }
    async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
        CALLS[5].fetch_add(1, Ordering::Relaxed);
        let r = self.0.commit(ops).await;
        if let Err(StoreError::Conflict { key }) = &r {
            CALLS[6].fetch_add(1, Ordering::Relaxed);
            if key.contains("/handles/") {
                CALLS[8].fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        CALLS[4].fetch_add(1, Ordering::Relaxed);
        if prefix.contains("blocks") {
            CALLS[7].fetch_add(1, Ordering::Relaxed);
        }
        self.0.list(prefix).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
        keys_only: bool,
    ) -> Result<petrel_ipam::store::Page, StoreError> {
        self.0
            .list_page(prefix, after, limit, revision, keys_only)
            .await
    }
    async fn watch(&self, prefix: &str, from: i64) -> Result<WatchReceiver, StoreError> {
        self.0.watch(prefix, from).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

type Holders = Arc<Mutex<HashMap<IpAddr, String>>>;

fn hold(holders: &Holders, addr: IpAddr, handle: &str) {
    let mut h = holders.lock().expect("lock");
    if let Some(prev) = h.insert(addr, handle.to_string()) {
        panic!("{addr} handed to {handle} while {prev} holds it");
    }
}

fn unhold(holders: &Holders, addr: IpAddr) {
    holders.lock().expect("lock").remove(&addr);
}

struct NodeStats {
    borrowed: usize,
    held: Vec<(IpAddr, String)>,
}

/// One node: 200 pods come, each taking an address; beyond the window the
/// oldest goes, released alternately by address and by handle.
async fn run_node(
    ipam: Ipam,
    node: String,
    holders: Holders,
    round: usize,
    keep: bool,
) -> NodeStats {
    let mut held: VecDeque<(IpAddr, String)> = VecDeque::new();
    let mut borrowed = 0;
    for i in 0..PER_NODE {
        let handle = format!("k8s.{node}-r{round}-{i}.eth0");
        let got = ipam
            .assign(&AssignRequest::new(&handle, &node, 1, 0))
            .await
            .unwrap_or_else(|e| panic!("{node}: assign {i}: {e}"));
        assert_eq!(got.len(), 1);
        borrowed += got.iter().filter(|a| a.borrowed).count();
        hold(&holders, got[0].addr, &handle);
        held.push_back((got[0].addr, handle));
        if held.len() > WINDOW || (!keep && i + 1 == PER_NODE) {
            while held.len() > if keep { WINDOW } else { 0 } {
                let Some((addr, handle)) = held.pop_front() else {
                    break;
                };
                // Forget it before the release: once released it may go
                // to another node at once.
                unhold(&holders, addr);
                let freed = if held.len().is_multiple_of(2) {
                    ipam.release_addrs(&[addr]).await
                } else {
                    ipam.release_handle(&handle).await
                }
                .unwrap_or_else(|e| panic!("{node}: release {addr}: {e}"));
                assert_eq!(freed, vec![addr], "{node}: release of {addr} by {handle}");
            }
        }
    }
    NodeStats {
        borrowed,
        held: held.into_iter().collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_nodes_contend_borrow_and_survive_dropped_clients() {
    if !require("etcd (Debian: etcd-server)", etcd_binary().is_some()) {
        return;
    }
    let etcd = EtcdServer::start().expect("start etcd");
    let admin = connect(&etcd.endpoint).await;
    admin
        .set_config(&IpamConfig {
            max_blocks_per_host: 2,
            // Short, so that empty blocks do change hands during the run;
            // not zero, so that a block just claimed is not taken before
            // its claimer has confirmed it.
            reclaim_min_age_secs: 2,
            pending_grace_secs: 0,
            ..Default::default()
        })
        .await
        .expect("config");
    admin
        .add_pool(&Pool {
            name: "small".into(),
            cidr: "10.200.0.0/20".parse().expect("cidr"),
            block_size: 26,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![PoolUse::Workload],
            encapsulation: Encapsulation::None,
        })
        .await
        .expect("pool");

    // Round 1: everyone at once, to completion.
    let t = Instant::now();
    let holders: Holders = Arc::default();
    let mut joins = Vec::new();
    for n in 0..NODES {
        let ipam = connect(&etcd.endpoint).await;
        let holders = holders.clone();
        joins.push(tokio::spawn(run_node(
            ipam,
            format!("node-{n:03}"),
            holders,
            1,
            true,
        )));
    }
    let mut borrowed = 0;
    let mut live: Vec<(IpAddr, String)> = Vec::new();
    for j in joins {
        let s = j.await.expect("node task");
        borrowed += s.borrowed;
        live.extend(s.held);
    }
    let round1 = t.elapsed();
    eprintln!(
        "round 1: {} assignments and {} releases in {round1:?}, {borrowed} borrowed",
        NODES * PER_NODE,
        NODES * (PER_NODE - WINDOW)
    );
    eprintln!(
        "calls get/create/update/delete/list/commit/failed-writes/block-lists/handle-conflicts: {:?}",
        CALLS
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    assert!(borrowed > 0, "the pool was meant to force borrowing");

    // Every live address is in exactly one block, held by its handle, and
    // nothing else is held.
    let snap = admin.snapshot().await.expect("snapshot");
    let mut in_blocks: HashMap<IpAddr, String> = HashMap::new();
    for (b, _) in &snap.blocks {
        for (ord, a) in &b.allocations {
            assert!(
                in_blocks.insert(b.addr(*ord), a.handle.clone()).is_none(),
                "two owners"
            );
        }
    }
    let expected: HashMap<IpAddr, String> = live.iter().cloned().collect();
    assert_eq!(expected.len(), NODES * WINDOW);
    assert_eq!(
        in_blocks, expected,
        "the datastore holds exactly the live addresses"
    );
    let report = admin.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert!(snap.blocks.len() <= 64);

    // Release everything; all free afterwards.
    for (i, (addr, handle)) in live.iter().enumerate() {
        let freed = if i.is_multiple_of(2) {
            admin.release_handle(handle).await
        } else {
            admin.release_addrs(&[*addr]).await
        }
        .expect("release");
        assert_eq!(freed, vec![*addr]);
    }
    let report = admin.check().await.expect("check");
    assert!(report.clean, "{}", report.human());
    assert_eq!(report.addresses_in_use, 0);
    assert_eq!(report.handles, 0);

    // Round 2: 40 new nodes on a fresh pool, so their first assignments
    // race to claim blocks; a third of them are killed at staggered times,
    // some in the middle of a claim, some between reads and commits.
    admin.disable_pool("small", true).await.expect("disable");
    admin
        .add_pool(&Pool {
            name: "fresh".into(),
            cidr: "10.210.0.0/21".parse().expect("cidr"),
            block_size: 26,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![PoolUse::Workload],
            encapsulation: Encapsulation::None,
        })
        .await
        .expect("pool");
    let late = |n: usize| format!("late-{n:03}");
    let holders: Holders = Arc::default();
    let mut joins = Vec::new();
    for n in 0..40usize {
        let ipam = connect(&etcd.endpoint).await;
        joins.push((
            n,
            tokio::spawn(run_node(ipam, late(n), holders.clone(), 2, true)),
        ));
    }
    let mut survivors = Vec::new();
    let mut killed = Vec::new();
    for (n, j) in joins {
        if n.is_multiple_of(3) {
            // 0 to ~130 ms in: the first kills land in the opening claim
            // race, the later ones in steady assignment and release.
            tokio::time::sleep(Duration::from_millis(10)).await;
            j.abort();
            killed.push(n);
        } else {
            survivors.push(j);
        }
    }
    let mut live: HashSet<String> = HashSet::new();
    for j in survivors {
        live.extend(j.await.expect("survivor").held.into_iter().map(|(_, h)| h));
    }
    let report = admin.check().await.expect("check");
    eprintln!("after the kills:\n{}", report.human());

    // The killed nodes come back: their next assignment finishes any claim
    // they left pending.
    for n in &killed {
        let ipam = connect(&etcd.endpoint).await;
        let h = format!("k8s.{}-back.eth0", late(*n));
        ipam.assign(&AssignRequest::new(&h, &late(*n), 1, 0))
            .await
            .expect("assign after restart");
        live.insert(h);
    }
    let report = admin.check().await.expect("check");
    eprintln!("after the killed nodes' next claim:\n{}", report.human());
    assert!(
        !report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::StaleAffinityState { .. })),
        "the next claim finishes interrupted claims:\n{}",
        report.human()
    );

    // gc of the records, then CNI-style gc by live attachments on the
    // killed nodes (their old pods are gone).
    admin.repair().await.expect("repair");
    for n in &killed {
        admin
            .gc_attachments(&late(*n), "k8s.", &live)
            .await
            .expect("gc");
    }
    let report = admin.check().await.expect("check");
    assert!(report.clean, "after gc:\n{}", report.human());
    let snap = admin.snapshot().await.expect("snapshot");
    let held: HashSet<String> = snap
        .blocks
        .iter()
        .flat_map(|(b, _)| b.allocations.values().map(|a| a.handle.clone()))
        .collect();
    assert_eq!(held, live, "exactly the survivors' addresses are held");
    let fresh_blocks: Vec<_> = snap
        .blocks
        .iter()
        .filter(|(b, _)| b.pool == "fresh")
        .collect();
    assert!(
        fresh_blocks.iter().all(|(b, _)| b.affinity.is_some()),
        "every block of the fresh pool is owned"
    );
    eprintln!("total {:?}", t.elapsed());
}
