//! The etcd backend: every write is one transaction conditioned on the
//! key's mod revision (0 for a create), so etcd decides each race.
//!
//! Requests that fail for want of a connection are retried a few times with
//! exponential backoff and then reported as [`StoreError::Unavailable`],
//! naming the endpoints. A conditional write whose answer was lost may have
//! been applied: its retry then reports a conflict, and callers re-read, so
//! the outcome stays correct.

use super::{
    prefix_end, KeyValue, Op, Page, Store, StoreError, WatchEvent, WatchReceiver, GET_MANY_CHUNK,
    WATCH_CHANNEL_CAPACITY,
};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// PEM files for TLS with client certificates; all three or none.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts for a request that cannot reach etcd.
    pub attempts: u32,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            ca: None,
            cert: None,
            key: None,
            timeout: Duration::from_secs(3),
            attempts: 3,
        }
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    /// Balanced over every endpoint: a request's first attempt.
    client: Client,
    /// With several endpoints, one client per member: a request's retries
    /// go to each member in turn (see [`EtcdStore::retry_counted`]).
    members: std::sync::Arc<[Client]>,
    /// Where the next request's retries start among `members`, so that
    /// requests spread their retries over the cluster.
    rotor: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    endpoints: String,
    /// How many endpoints: a refused connection is retried this many
    /// times more (see [`EtcdStore::retry_counted`]).
    endpoint_count: u32,
    attempts: u32,
    /// The last quorum revision and when it was read (the watches' stale
    /// member check).
    quorum: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, i64)>>>,
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| StoreError::Tls {
        path: path.clone(),
        detail: e.to_string(),
    })
}

impl EtcdStore {
    /// Build a client. The connection itself is made lazily, so an etcd
    /// that is down shows up on the first request, as `Unavailable`.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = cfg.endpoints.join(",");
        let mut opts = ConnectOptions::new()
            .with_timeout(cfg.timeout)
            .with_connect_timeout(cfg.timeout.min(Duration::from_secs(2)))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(ca) = &cfg.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read_pem(ca)?));
            match (&cfg.cert, &cfg.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
                }
                (None, None) => {}
                (Some(p), None) | (None, Some(p)) => {
                    return Err(StoreError::Tls {
                        path: p.clone(),
                        detail: "a client certificate needs both etcd_cert and etcd_key".into(),
                    })
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts.clone()))
            .await
            .map_err(|e| classify(&endpoints, e))?;
        // Lazily connected, like the balanced one: a member that is down
        // costs nothing until a retry picks it.
        let mut members = Vec::new();
        if cfg.endpoints.len() > 1 {
            for e in &cfg.endpoints {
                let c = Client::connect([e], Some(opts.clone()))
                    .await
                    .map_err(|err| classify(e, err))?;
                members.push(c);
            }
        }
        Ok(EtcdStore {
            client,
            members: members.into(),
            rotor: Default::default(),
            endpoints,
            endpoint_count: cfg.endpoints.len() as u32,
            // With several endpoints, one more attempt than there are
            // members: the first through the balancer, then one on each
            // member in turn, so a member that lost its leader or its link
            // (it accepts the request and times out) cannot take them all.
            attempts: cfg.attempts.max(1).max(cfg.endpoints.len() as u32 + 1),
            quorum: Default::default(),
        })
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Run `op` with retries while etcd is unreachable.
    async fn retry<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.retry_counted(op).await.map(|(v, _)| v)
    }

    /// Where a request's retries start among the members.
    fn next_start(&self) -> usize {
        self.rotor
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The client for a request's try number `tries` (0 first). The first
    /// goes through the balancer. That picks a member per request and knows
    /// nothing of one whose link is down (its connection looks ready until
    /// the keepalive gives up, 15 s), so it may pick that one again and
    /// again: every later try goes to the next member in turn instead.
    fn pick(&self, start: usize, tries: usize) -> &Client {
        match tries {
            0 => &self.client,
            _ if self.members.is_empty() => &self.client,
            t => &self.members[(start + t - 1) % self.members.len()],
        }
    }

    /// [`Self::retry`], also saying whether an earlier attempt failed (and
    /// so may have been applied without an answer).
    async fn retry_counted<T, F, Fut>(&self, mut op: F) -> Result<(T, bool), StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut pause = Duration::from_millis(50);
        let mut attempt = 1;
        let mut refused = 0;
        let mut tries = 0;
        let start = self.next_start();
        loop {
            let client = self.pick(start, tries);
            tries += 1;
            match op(client.clone()).await {
                Ok(v) => return Ok((v, attempt > 1 || refused > 0)),
                Err(e) => {
                    // A refused connection sent nothing and costs nothing:
                    // with several endpoints the client's balancer can pick
                    // a member that just died (its port closed) several
                    // times in a row, so such an attempt does not count
                    // against `attempts`, up to twice per endpoint.
                    let was_refused = connection_refused(&e);
                    let e = classify(&self.endpoints, e);
                    if was_refused && e.is_unavailable() && refused < 2 * self.endpoint_count {
                        refused += 1;
                        tracing::debug!(refused, error = %e, "etcd connection refused, trying again");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    if !e.is_unavailable() || attempt >= self.attempts {
                        return Err(e);
                    }
                    tracing::debug!(attempt, error = %e, "etcd request failed, retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                    attempt += 1;
                }
            }
        }
    }

    /// Conditional writes as one transaction. When a retried transaction
    /// reports a conflict, the first attempt may have been applied with its
    /// answer lost: finding our own values in place means it was.
    async fn txn_ops(&self, ops: &[Op]) -> Result<i64, StoreError> {
        let mut cmp = Vec::with_capacity(ops.len());
        let mut put = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Create { key, value } => {
                    cmp.push(Compare::version(key.as_str(), CompareOp::Equal, 0));
                    put.push(TxnOp::put(key.as_str(), value.clone(), None));
                }
                Op::Update {
                    key,
                    value,
                    revision,
                } => {
                    cmp.push(Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        *revision,
                    ));
                    put.push(TxnOp::put(key.as_str(), value.clone(), None));
                }
                Op::Delete { key, revision } => {
                    cmp.push(Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        *revision,
                    ));
                    put.push(TxnOp::delete(key.as_str(), None));
                }
                Op::Put { key, value } => put.push(TxnOp::put(key.as_str(), value.clone(), None)),
                Op::Remove { key } => put.push(TxnOp::delete(key.as_str(), None)),
            }
        }
        // On failure, read every key back in the same round trip, to name
        // the one that changed.
        let gets: Vec<TxnOp> = ops.iter().map(|o| TxnOp::get(o.key(), None)).collect();
        let txn = Txn::new().when(cmp).and_then(put).or_else(gets);
        let (resp, retried) = self
            .retry_counted(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
        }
        // (value, mod revision) of each key, from the or-else reads.
        let mut current: Vec<Option<(Vec<u8>, i64)>> = Vec::with_capacity(ops.len());
        for r in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = r {
                current.push(
                    g.kvs()
                        .first()
                        .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                );
            }
        }
        if retried
            && current.len() == ops.len()
            && ops
                .iter()
                .zip(&current)
                .all(|(o, c)| o.after() == c.as_ref().map(|(v, _)| v.as_slice()))
        {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
        }
        let failed = ops
            .iter()
            .zip(&current)
            .find(|(o, c)| !o.holds(c.as_ref().map(|(_, r)| *r)))
            .map(|(o, _)| o.key().to_string())
            .unwrap_or_else(|| ops.first().map(|o| o.key().to_string()).unwrap_or_default());
        Err(StoreError::Conflict { key: failed })
    }

    /// One conditional write. `expect` is the value the key holds after
    /// the write (`None` for a delete): when a retried write reports a
    /// conflict, the first attempt may have been applied with its answer
    /// lost, and finding our own value there means it was.
    async fn txn(&self, key: &str, txn: Txn, expect: Option<&[u8]>) -> Result<i64, StoreError> {
        let (resp, retried) = self
            .retry_counted(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()).unwrap_or(0));
        }
        if retried {
            let now = self.get(key).await?;
            match (now, expect) {
                (Some(kv), Some(v)) if kv.value == v => return Ok(kv.mod_revision),
                (None, None) => return Ok(0),
                _ => {}
            }
        }
        Err(StoreError::Conflict { key: key.into() })
    }
}

/// Whether the request failed because a member refused the connection
/// (its port closed): nothing was sent.
fn connection_refused(e: &etcd_client::Error) -> bool {
    let mut level: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = level {
        let refused = err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused || err.to_string().contains("Connection refused") {
            return true;
        }
        level = err.source();
    }
    false
}

/// How often a watch checks that the member serving it is not behind the
/// cluster (see [`EtcdStore::watch`]): a stale watch ends within one check
/// and [`PROGRESS_DELAY`].
const STALE_CHECK: Duration = Duration::from_secs(15);

/// How long after a quorum read the watch's member is asked for its
/// revision: a healthy follower applies what the quorum committed long
/// before this, so only a member that lost its leader is still below.
const PROGRESS_DELAY: Duration = Duration::from_secs(5);

/// A quorum read is tried this many times, each bounded by
/// [`QUORUM_READ_TIMEOUT`]: the balancer may send it to the very member
/// that lost its quorum, which cannot answer it; the retries go to each
/// member in turn (three members).
const QUORUM_READ_ATTEMPTS: u32 = 4;
const QUORUM_READ_TIMEOUT: Duration = Duration::from_secs(2);

impl EtcdStore {
    /// The cluster's revision from a linearizable read (one that needs a
    /// quorum), shared by every watch of this client for half a check;
    /// `None` when no quorum answers.
    async fn quorum_revision(&self) -> Option<i64> {
        if let Ok(q) = self.quorum.lock() {
            if let Some((at, rev)) = *q {
                if at.elapsed() < STALE_CHECK / 2 {
                    return Some(rev);
                }
            }
        }
        let start = self.next_start();
        for tries in 0..QUORUM_READ_ATTEMPTS as usize {
            let mut c = self.pick(start, tries).clone();
            let read = c.get("/petrel/ping", Some(GetOptions::new().with_count_only()));
            let Ok(Ok(resp)) = tokio::time::timeout(QUORUM_READ_TIMEOUT, read).await else {
                continue;
            };
            let Some(rev) = resp.header().map(|h| h.revision()) else {
                continue;
            };
            if let Ok(mut q) = self.quorum.lock() {
                *q = Some((std::time::Instant::now(), rev));
            }
            return Some(rev);
        }
        None
    }
}

fn classify(endpoints: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    // A read at a revision older than the compaction point (a paged list
    // that straddled a compaction): etcd's ErrCompacted, OutOfRange.
    if let E::GRpcStatus(s) = &e {
        if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted") {
            return StoreError::Compacted {
                requested: 0,
                oldest: 0,
            };
        }
    }
    let unavailable = match &e {
        E::TransportError(_) | E::IoError(_) => true,
        // tonic reports a broken connection as Unknown "transport error".
        E::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || (s.code() == tonic::Code::Unknown && s.message().contains("transport"))
        }
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable {
            endpoints: endpoints.into(),
            detail: e.to_string(),
        }
    } else {
        StoreError::Etcd {
            endpoints: endpoints.into(),
            detail: e.to_string(),
        }
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv.key_str().map_err(|_| StoreError::BadKey {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .retry(|mut c| async move { c.get(key, None).await })
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(convert(kv)?)),
            None => Ok(None),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.clone(), None)]);
        self.txn(key, txn, Some(&value)).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value.clone(), None)]);
        self.txn(key, txn, Some(&value)).await
    }

    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::delete(key, None)]);
        self.txn(key, txn, None).await.map(|_| ())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<i64, StoreError> {
        self.txn_ops(&ops).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
        keys_only: bool,
    ) -> Result<Page, StoreError> {
        // The range [after + "\0", end of prefix): strictly after `after`.
        let start: Vec<u8> = match after {
            Some(a) => {
                let mut k = a.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let mut opts = GetOptions::new().with_limit(limit as i64);
        opts = match prefix_end(prefix) {
            Some(end) => opts.with_range(end),
            None => opts.with_from_key(),
        };
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if keys_only {
            opts = opts.with_keys_only();
        }
        let resp = self
            .retry(|mut c| {
                let (start, opts) = (start.clone(), opts.clone());
                async move { c.get(start, Some(opts)).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(revision);
        let kvs = resp
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            kvs,
            revision,
            more: resp.more(),
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        // A transaction without conditions: each chunk's reads at one
        // revision, in one round trip, and never past etcd's txn op limit.
        for chunk in keys.chunks(GET_MANY_CHUNK) {
            let gets: Vec<TxnOp> = chunk.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
            let txn = Txn::new().and_then(gets);
            let resp = self
                .retry(|mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            for r in resp.op_responses() {
                if let etcd_client::TxnOpResponse::Get(g) = r {
                    out.push(match g.kvs().first() {
                        Some(kv) => Some(convert(kv)?),
                        None => None,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver, StoreError> {
        let mut opts = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let (watcher, mut stream) = self
            .retry(|mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let endpoints = self.endpoints.clone();
        let store = self.clone();
        tokio::spawn(async move {
            // The watcher cancels the watch when dropped: keep it for as
            // long as the stream is forwarded.
            let mut watcher = watcher;
            // A member cut off from its peers but not from us keeps the
            // stream open and silent: etcd ends such watches only for
            // clients that ask with the `hasleader` metadata, which
            // etcd-client 0.14 cannot send. So every STALE_CHECK the
            // cluster's revision is read with a quorum and, PROGRESS_DELAY
            // later, the member is asked for its own (a progress request);
            // a member still below the quorum's serves a stale watch, which
            // ends as unavailable (the caller lists again, through another
            // member).
            let mut check = tokio::time::interval(STALE_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            check.tick().await;
            let mut quorum = None::<i64>;
            let mut progress_at = None::<tokio::time::Instant>;
            loop {
                let ask = async {
                    match progress_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = check.tick() => {
                        quorum = store.quorum_revision().await;
                        progress_at = quorum.map(|_| tokio::time::Instant::now() + PROGRESS_DELAY);
                        continue;
                    }
                    _ = ask => {
                        progress_at = None;
                        // No answer (a proxy that does not forward it) is
                        // no evidence either way.
                        let _ = watcher.request_progress().await;
                        continue;
                    }
                };
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(classify(&endpoints, e))).await;
                        return;
                    }
                };
                let member = msg.header().map(|h| h.revision()).unwrap_or(0);
                // A progress response: no events, not a create or cancel.
                let progress = msg.events().is_empty()
                    && !msg.created()
                    && !msg.canceled()
                    && msg.compact_revision() == 0;
                if progress {
                    if let Some(q) = quorum.filter(|&q| member < q) {
                        let _ = tx
                            .send(Err(StoreError::Unavailable {
                                endpoints: endpoints.clone(),
                                detail: format!(
                                    "the member serving this watch is at revision {member}, \
                                     behind the cluster's {q} of {PROGRESS_DELAY:?} before: it \
                                     lost its quorum"
                                ),
                            }))
                            .await;
                        return;
                    }
                    continue;
                }
                if msg.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            requested: from_revision,
                            oldest: msg.compact_revision(),
                        }))
                        .await;
                    return;
                }
                for ev in msg.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let out = match convert(kv) {
                        Err(e) => Err(e),
                        Ok(kv) => Ok(match ev.event_type() {
                            EventType::Put => WatchEvent::Put(kv),
                            EventType::Delete => WatchEvent::Delete {
                                key: kv.key,
                                revision: kv.mod_revision,
                            },
                        }),
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
                if msg.canceled() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.retry(|mut c| async move {
            c.get("/petrel/ping", Some(GetOptions::new().with_count_only()))
                .await
        })
        .await
        .map(|_| ())
    }
}
