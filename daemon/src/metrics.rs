//! Prometheus metrics, `/healthz` and `/readyz` over a minimal HTTP/1.1
//! server.
//!
//! The values live where they change (the FIB writer's atomics, the
//! datastore wrapper's counters, [`Health`], the MTU status); a scrape
//! reads them and asks the speaker for its peers, so nothing is sampled on
//! a timer. [`render`] is a pure function over a [`Snapshot`], tested
//! without sockets.
//!
//! The server answers one request per connection (`Connection: close`), at
//! most [`MAX_CONNECTIONS`] at once (more wait in the kernel's accept
//! queue), with a [`IO_TIMEOUT`] per connection: a scraper, not a web
//! server.

use crate::fib::mtu::MtuStatus;
use crate::fib::FibCounters;
use crate::health::Health;
use async_trait::async_trait;
use petrel_bgp::bfd::SessionSnapshot as BfdSnapshot;
use petrel_bgp::speaker::{PeerSnapshot, Speaker};
use petrel_ipam::store::{
    KeyValue, Listing, Op, Page, Store, StoreError, WatchEvent, WatchReceiver,
    WATCH_CHANNEL_CAPACITY,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// The default `[metrics] address`: loopback only, so that nothing is
/// exposed until an operator chooses to.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9179";
pub const MAX_CONNECTIONS: usize = 16;
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read; a scrape's is a few hundred octets.
const MAX_REQUEST: usize = 8 << 10;

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

    fn render(&self, out: &mut String) {
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

/// This node's IPAM gauges, set by the cluster code, and the cluster
/// driver's counters (the scale harness reads them).
#[derive(Debug, Default)]
pub struct IpamGauges {
    blocks: AtomicU64,
    addresses: AtomicU64,
    /// Full lists of the node's records (start, and after a lost watch).
    pub full_syncs: AtomicU64,
    /// Watch events applied to the local model.
    pub events: AtomicU64,
    /// Times the peers or the routes were derived again.
    pub derivations: AtomicU64,
}

impl IpamGauges {
    /// Affine blocks and allocated addresses of this node.
    pub fn set(&self, blocks: u64, addresses: u64) {
        self.blocks.store(blocks, Ordering::Relaxed);
        self.addresses.store(addresses, Ordering::Relaxed);
    }
}

/// Everything a scrape reads, shared with the parts that update it.
#[derive(Clone)]
pub struct Metrics {
    pub health: Arc<Health>,
    pub fib: Arc<FibCounters>,
    pub mtu: Arc<Mutex<MtuStatus>>,
    pub store: Arc<StoreMetrics>,
    pub ipam: Arc<IpamGauges>,
    pub node: String,
}

/// One scrape's values.
pub struct Snapshot<'a> {
    pub m: &'a Metrics,
    pub peers: &'a [PeerSnapshot],
    pub bfd: &'a [BfdSnapshot],
}

fn head(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

/// Label values escaped per the exposition format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// RFC 4271 §8.2.2's states as numbers, Idle = 1 … Established = 6.
fn state_number(s: petrel_bgp::fsm::State) -> u8 {
    use petrel_bgp::fsm::State::*;
    match s {
        Idle => 1,
        Connect => 2,
        Active => 3,
        OpenSent => 4,
        OpenConfirm => 5,
        Established => 6,
    }
}

/// BFD (RFC 5880): sessions by state, and per session its state, flaps,
/// detection time and packet counters.
fn render_bfd(out: &mut String, sessions: &[BfdSnapshot]) {
    use petrel_bgp::bfd::State;
    head(
        out,
        "petrel_bfd_sessions",
        "gauge",
        "BFD sessions by state (RFC 5880 4.1).",
    );
    for st in [State::AdminDown, State::Down, State::Init, State::Up] {
        let n = sessions.iter().filter(|s| s.state == st).count();
        let _ = writeln!(out, "petrel_bfd_sessions{{state=\"{}\"}} {n}", st.name());
    }
    let label =
        |s: &BfdSnapshot| format!("peer=\"{}\",multihop=\"{}\"", s.key.remote, s.key.multihop);
    head(
        out,
        "petrel_bfd_session_up",
        "gauge",
        "1 while the BFD session is Up.",
    );
    for s in sessions {
        let _ = writeln!(
            out,
            "petrel_bfd_session_up{{{}}} {}",
            label(s),
            (s.state == State::Up) as u8
        );
    }
    head(
        out,
        "petrel_bfd_detection_time_seconds",
        "gauge",
        "The detection time (RFC 5880 6.8.4: the peer's multiplier times the agreed interval); absent before the first packet.",
    );
    for s in sessions {
        if let Some(d) = s.detection_time {
            let _ = writeln!(
                out,
                "petrel_bfd_detection_time_seconds{{{}}} {}",
                label(s),
                d.as_secs_f64()
            );
        }
    }
    for (name, help, get) in [
        (
            "petrel_bfd_flaps_total",
            "Transitions of the BFD session out of Up.",
            (|s: &BfdSnapshot| s.stats.flaps) as fn(&BfdSnapshot) -> u64,
        ),
        (
            "petrel_bfd_packets_sent_total",
            "BFD Control packets sent.",
            |s| s.stats.tx,
        ),
        (
            "petrel_bfd_packets_received_total",
            "BFD Control packets received and accepted.",
            |s| s.stats.rx,
        ),
        (
            "petrel_bfd_packets_discarded_total",
            "BFD Control packets discarded by the rules of RFC 5880 6.8.6 and 6.7.",
            |s| s.stats.discarded,
        ),
        (
            "petrel_bfd_auth_failures_total",
            "BFD Control packets discarded for their authentication (RFC 5880 6.7): a key or type unlike the peer's.",
            |s| s.stats.auth_failures,
        ),
    ] {
        head(out, name, "counter", help);
        for s in sessions {
            let _ = writeln!(out, "{name}{{{}}} {}", label(s), get(s));
        }
    }
}

/// The text exposition (format 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let m = s.m;
    let mut out = String::with_capacity(8 << 10);
    head(
        &mut out,
        "petrel_build_info",
        "gauge",
        "petreld's version; always 1.",
    );
    let _ = writeln!(
        out,
        "petrel_build_info{{version=\"{}\",node=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        esc(&m.node)
    );
    head(
        &mut out,
        "petrel_ready",
        "gauge",
        "1 once the first full sync is done.",
    );
    let _ = writeln!(out, "petrel_ready {}", m.health.is_ready() as u8);
    head(
        &mut out,
        "petrel_degraded",
        "gauge",
        "1 while something is wrong (see /readyz for the reasons).",
    );
    let _ = writeln!(out, "petrel_degraded {}", !m.health.is_healthy() as u8);

    head(&mut out, "petrel_bgp_peer_state", "gauge", "BGP session state (RFC 4271 8.2.2): 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established.");
    for p in s.peers {
        let _ = writeln!(
            out,
            "petrel_bgp_peer_state{{peer=\"{}\",asn=\"{}\"}} {}",
            p.address,
            p.asn,
            state_number(p.state)
        );
    }
    head(
        &mut out,
        "petrel_bgp_peer_established",
        "gauge",
        "1 while the session is Established.",
    );
    for p in s.peers {
        let up = p.state == petrel_bgp::fsm::State::Established;
        let _ = writeln!(
            out,
            "petrel_bgp_peer_established{{peer=\"{}\",asn=\"{}\"}} {}",
            p.address, p.asn, up as u8
        );
    }
    for (name, help, get) in [
        (
            "petrel_bgp_prefixes_received",
            "Prefixes received from the peer.",
            (|p: &PeerSnapshot| p.received) as fn(&PeerSnapshot) -> u64,
        ),
        (
            "petrel_bgp_prefixes_accepted",
            "Prefixes from the peer accepted by import policy.",
            |p| p.accepted,
        ),
        (
            "petrel_bgp_prefixes_advertised",
            "Prefixes advertised to the peer.",
            |p| p.advertised,
        ),
    ] {
        head(&mut out, name, "gauge", help);
        for p in s.peers {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", p.address, get(p));
        }
    }

    render_bfd(&mut out, s.bfd);

    let f = &m.fib;
    for (name, ty, help, v) in [
        (
            "petrel_fib_operations_total",
            "counter",
            "Route messages sent to the kernel.",
            &f.ops,
        ),
        (
            "petrel_fib_errors_total",
            "counter",
            "Route messages the kernel refused.",
            &f.errors,
        ),
        (
            "petrel_fib_batches_total",
            "counter",
            "Netlink datagrams of route messages sent.",
            &f.batches,
        ),
        (
            "petrel_fib_restored_total",
            "counter",
            "Routes of petrel restored after another process deleted or changed them.",
            &f.restored,
        ),
        (
            "petrel_fib_routes",
            "gauge",
            "Routes petrel holds in the kernel FIB (blackholes included).",
            &f.routes,
        ),
    ] {
        head(&mut out, name, ty, help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }

    let mtu = m.mtu.lock().unwrap_or_else(|e| e.into_inner()).clone();
    head(
        &mut out,
        "petrel_pod_mtu",
        "gauge",
        "The pod MTU written for petrel-ipam (0: none).",
    );
    let _ = writeln!(out, "petrel_pod_mtu {}", mtu.pod_mtu.unwrap_or(0));
    head(
        &mut out,
        "petrel_host_mtu",
        "gauge",
        "The host MTU the pod MTU derives from (0: not detected).",
    );
    let _ = writeln!(
        out,
        "petrel_host_mtu{{interface=\"{}\"}} {}",
        esc(mtu.interface.as_deref().unwrap_or("")),
        mtu.host_mtu.unwrap_or(0)
    );

    m.store.render(&mut out);
    head(
        &mut out,
        "petrel_ipam_blocks",
        "gauge",
        "IPAM blocks affine to this node.",
    );
    let _ = writeln!(
        out,
        "petrel_ipam_blocks {}",
        m.ipam.blocks.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "petrel_ipam_addresses",
        "gauge",
        "Addresses allocated on this node.",
    );
    let _ = writeln!(
        out,
        "petrel_ipam_addresses {}",
        m.ipam.addresses.load(Ordering::Relaxed)
    );
    for (name, help, v) in [
        (
            "petrel_cluster_full_syncs_total",
            "Full (paged) reads of the node's datastore records: at start and after a watch was lost.",
            &m.ipam.full_syncs,
        ),
        (
            "petrel_cluster_events_total",
            "Datastore watch events applied to the node's model of the cluster.",
            &m.ipam.events,
        ),
        (
            "petrel_cluster_derivations_total",
            "Times the node derived its peers or its routes again.",
            &m.ipam.derivations,
        ),
    ] {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    out
}

/// Binds the listener (so that a bad address fails at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until the process ends. `live_after`: how old the main loop's
/// heartbeat may be for `/healthz` to answer 200.
pub async fn serve(listener: TcpListener, m: Metrics, speaker: Speaker, live_after: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (m, speaker) = (m.clone(), speaker.clone());
        tokio::spawn(async move {
            let r =
                tokio::time::timeout(IO_TIMEOUT, answer(stream, &m, &speaker, live_after)).await;
            if !matches!(r, Ok(Ok(()))) {
                debug!(%peer, "metrics: connection dropped (timeout or I/O error)");
            }
            drop(permit);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    m: &Metrics,
    speaker: &Speaker,
    live_after: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request header too large\n",
                false,
            )
            .await;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "only GET and HEAD\n",
            head_only,
        )
        .await;
    }
    match path {
        "/metrics" => {
            let peers = speaker.peers().await.unwrap_or_default();
            let bfd = speaker.bfd_sessions().await.unwrap_or_default();
            let body = render(&Snapshot {
                m,
                peers: &peers,
                bfd: &bfd,
            });
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/healthz" => {
            let age = m.health.since_beat();
            if age <= live_after {
                respond(&mut stream, 200, "text/plain", "ok\n", head_only).await
            } else {
                let body = format!("main loop silent for {}s\n", age.as_secs());
                respond(&mut stream, 503, "text/plain", &body, head_only).await
            }
        }
        "/readyz" => {
            let reasons = m.health.degraded_reasons();
            if m.health.is_ready() && reasons.is_empty() {
                respond(&mut stream, 200, "text/plain", "ready\n", head_only).await
            } else {
                let body = format!("not ready:\n{}\n", reasons.join("\n"));
                respond(&mut stream, 503, "text/plain", &body, head_only).await
            }
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "try /metrics, /healthz or /readyz\n",
                head_only,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics {
            health: Arc::new(Health::new()),
            fib: Arc::default(),
            mtu: Arc::default(),
            store: Arc::default(),
            ipam: Arc::default(),
            node: "n1".into(),
        }
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map(str::to_string)
    }

    #[test]
    fn renders_peers_fib_mtu_and_ipam() {
        let m = metrics();
        m.fib.ops.store(7, Ordering::Relaxed);
        m.ipam.set(2, 5);
        m.mtu.lock().unwrap().pod_mtu = Some(1480);
        let peers = [PeerSnapshot {
            address: "192.0.2.1".parse().unwrap(),
            asn: 65001,
            state: petrel_bgp::fsm::State::Established,
            uptime: Duration::from_secs(3),
            received: 10,
            accepted: 9,
            advertised: 4,
            last_error: None,
        }];
        let t = render(&Snapshot {
            m: &m,
            peers: &peers,
            bfd: &[],
        });
        assert_eq!(
            value(
                &t,
                "petrel_bgp_peer_state{peer=\"192.0.2.1\",asn=\"65001\"}"
            )
            .as_deref(),
            Some("6")
        );
        assert_eq!(
            value(&t, "petrel_bgp_prefixes_accepted{peer=\"192.0.2.1\"}").as_deref(),
            Some("9")
        );
        assert_eq!(
            value(&t, "petrel_fib_operations_total").as_deref(),
            Some("7")
        );
        assert_eq!(value(&t, "petrel_pod_mtu").as_deref(), Some("1480"));
        assert_eq!(value(&t, "petrel_ipam_addresses").as_deref(), Some("5"));
        assert_eq!(value(&t, "petrel_ready").as_deref(), Some("0"));
        // Every sample line belongs to a declared family.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(t.contains(&format!("# TYPE {family} ")), "{l}");
        }
    }

    #[test]
    fn renders_bfd_sessions() {
        use petrel_bgp::bfd::{Diag, PeerKey, State};
        let m = metrics();
        let snap = |remote: &str, state: State, flaps: u64| BfdSnapshot {
            key: PeerKey::single_hop(remote.parse().unwrap()),
            local: None,
            source_port: 49152,
            state,
            remote_state: state,
            local_diag: Diag::NoDiagnostic,
            remote_diag: Diag::NoDiagnostic,
            local_discriminator: 1,
            remote_discriminator: 2,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            tx_interval: Duration::from_millis(300),
            remote_min_rx: Duration::from_millis(300),
            remote_desired_min_tx: Duration::from_millis(300),
            remote_detect_mult: 3,
            detection_time: (state == State::Up).then_some(Duration::from_millis(900)),
            uptime: None,
            stats: petrel_bgp::bfd::session::Stats {
                tx: 10,
                rx: 9,
                discarded: 1,
                auth_failures: 1,
                flaps,
            },
            auth: None,
            control_plane_independent: false,
        };
        let bfd = [
            snap("192.0.2.1", State::Up, 2),
            snap("192.0.2.2", State::Down, 0),
        ];
        let t = render(&Snapshot {
            m: &m,
            peers: &[],
            bfd: &bfd,
        });
        assert_eq!(
            value(&t, "petrel_bfd_sessions{state=\"Up\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "petrel_bfd_sessions{state=\"AdminDown\"}").as_deref(),
            Some("0")
        );
        let l = "{peer=\"192.0.2.1\",multihop=\"false\"}";
        assert_eq!(
            value(&t, &format!("petrel_bfd_flaps_total{l}")).as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, &format!("petrel_bfd_detection_time_seconds{l}")).as_deref(),
            Some("0.9")
        );
        assert_eq!(
            value(&t, &format!("petrel_bfd_auth_failures_total{l}")).as_deref(),
            Some("1")
        );
        assert!(!t.contains("petrel_bfd_detection_time_seconds{peer=\"192.0.2.2\""));
        for l in t.lines().filter(|l| l.starts_with("petrel_bfd")) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{l}");
        }
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
