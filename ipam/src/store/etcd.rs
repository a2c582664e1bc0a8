//! The etcd backend: every write is one transaction conditioned on the
//! key's mod revision (0 for a create), so etcd decides each race.
//!
//! Requests that fail for want of a connection are retried a few times with
//! exponential backoff and then reported as [`StoreError::Unavailable`],
//! naming the endpoints. A conditional write whose answer was lost may have
//! been applied: its retry then reports a conflict, and callers re-read, so
//! the outcome stays correct.

use super::{KeyValue, Listing, Store, StoreError, WatchEvent, WatchReceiver, WATCH_CHANNEL_CAPACITY};
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
    client: Client,
    endpoints: String,
    attempts: u32,
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
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| classify(&endpoints, e))?;
        Ok(EtcdStore {
            client,
            endpoints,
            attempts: cfg.attempts.max(1),
        })
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Run `op` with retries while etcd is unreachable.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut pause = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            match op(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let e = classify(&self.endpoints, e);
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

    async fn txn(&self, key: &str, txn: Txn) -> Result<i64, StoreError> {
        let resp = self
            .retry(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(StoreError::Conflict { key: key.into() });
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }
}

fn classify(endpoints: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = match &e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
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
            .and_then([TxnOp::put(key, value, None)]);
        self.txn(key, txn).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value, None)]);
        self.txn(key, txn).await
    }

    async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::delete(key, None)]);
        self.txn(key, txn).await.map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let resp = self
            .retry(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| convert(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listing { kvs, revision })
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
        tokio::spawn(async move {
            // The watcher cancels the watch when dropped: keep it for as
            // long as the stream is forwarded.
            let _watcher = watcher;
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(classify(&endpoints, e))).await;
                        return;
                    }
                };
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
        self.retry(|mut c| async move { c.get("/petrel/ping", Some(GetOptions::new().with_count_only())).await })
            .await
            .map(|_| ())
    }
}
