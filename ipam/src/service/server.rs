//! The daemon side of the IPAM service.
//!
//! Connections are read concurrently (each in its own task, at most
//! [`ServiceConfig::max_connections`] at once); parsing and checking an
//! invocation happens there, so a malformed one never waits in line. Valid
//! invocations go through a bounded queue to one worker, which owns the
//! node's writes: it takes everything queued at that moment, commits the
//! new-attachment ADDs among them together
//! ([`crate::ipam::Ipam::assign_new_batch`]) and runs the rest one by one
//! with [`crate::cni::execute`]. Batches form by themselves: while the
//! worker waits on the datastore, the next requests queue up.
//!
//! A full queue, a request older than its deadline and a datastore that
//! does not answer all give a CNI error with code 11 (try again later),
//! which runtimes retry.

use super::proto::{self, Reply, Request};
use crate::cni::{self, code, CniError, Prepared};
use crate::ipam::batch::MAX_BATCH;
use crate::ipam::Ipam;
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Invocations waiting for the worker; one more is refused with code
    /// 11 rather than queued without bound.
    pub queue: usize,
    /// An invocation not answered this long after it arrived gets code 11;
    /// one still queued then is dropped unworked. Shorter than the
    /// plugin's own wait ([`cni::DEFAULT_DAEMON_TIMEOUT`]), so the plugin
    /// hears why.
    pub request_timeout: Duration,
    /// How long a client may take to send its request.
    pub read_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's
    /// listen backlog.
    pub max_connections: usize,
    /// Most invocations the worker takes at once (at most
    /// [`MAX_BATCH`]).
    pub max_batch: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            queue: 256,
            request_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(5),
            max_connections: 512,
            max_batch: 32,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{}: another petrel IPAM service answers there; stop it or set another socket path", .path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; remove it or set another socket path", .path.display())]
    NotASocket { path: PathBuf },
    #[error("{}: cannot {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

/// The bound socket file, removed when the service ends — unless another
/// service has replaced it meanwhile.
struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub struct Service {
    listener: UnixListener,
    socket: SocketFile,
    ipam: Arc<Ipam>,
    cfg: ServiceConfig,
}

impl Service {
    /// Listen on `path`, readable and writable by root only (0600). A
    /// stale socket (nothing accepts on it) is replaced; a live one is
    /// [`ServiceError::InUse`]. Call inside a tokio runtime.
    pub fn bind(path: &Path, ipam: Arc<Ipam>, cfg: ServiceConfig) -> Result<Service, ServiceError> {
        let io = |op: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| ServiceError::Io { path, op, source }
        };
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                return Err(ServiceError::NotASocket { path: path.into() });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServiceError::InUse { path: path.into() });
            }
            tracing::info!(path = %path.display(), "replacing a stale IPAM service socket");
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create the directory", dir))?;
        }
        // Bound under a temporary name, restricted, then renamed into
        // place: the socket is never reachable with wider permissions, and
        // the rename replaces a stale one atomically.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.unwrap_or_else(|| "ipam.sock".into()),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let std_listener =
            std::os::unix::net::UnixListener::bind(&tmp).map_err(io("bind", &tmp))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io("restrict to 0600", &tmp))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(io("rename into place", path)));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let ino = std::fs::symlink_metadata(path)
            .map_err(io("stat", path))?
            .ino();
        let socket = SocketFile {
            path: path.into(),
            ino,
        };
        std_listener
            .set_nonblocking(true)
            .map_err(io("set non-blocking", path))?;
        let listener = UnixListener::from_std(std_listener).map_err(io("register", path))?;
        let mut cfg = cfg;
        cfg.max_batch = cfg.max_batch.clamp(1, MAX_BATCH);
        cfg.queue = cfg.queue.max(1);
        cfg.max_connections = cfg.max_connections.max(1);
        Ok(Service {
            listener,
            socket,
            ipam,
            cfg,
        })
    }

    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Serve until dropped (abort the task to stop; the socket file goes
    /// with it).
    pub async fn run(self) {
        let Service {
            listener,
            socket,
            ipam,
            cfg,
        } = self;
        let _socket = socket;
        let (tx, rx) = mpsc::channel(cfg.queue);
        let worker = tokio::spawn(worker(ipam, rx, cfg.max_batch));
        let _worker = AbortOnDrop(worker);
        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return; // never closed
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (tx, cfg) = (tx.clone(), cfg.clone());
                    tokio::spawn(async move {
                        serve(stream, &tx, &cfg).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: pass, do not spin.
                    tracing::warn!(error = %e, "IPAM service cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Outcome = Result<Option<Value>, CniError>;

struct Job {
    prepared: Prepared,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

async fn serve(stream: UnixStream, tx: &mpsc::Sender<Job>, cfg: &ServiceConfig) {
    let arrived = Instant::now();
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd.take(proto::MAX_REQUEST as u64));
    let mut line = Vec::new();
    match tokio::time::timeout(cfg.read_timeout, reader.read_until(b'\n', &mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => return, // closed before sending anything
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "IPAM service: reading a request failed");
            return;
        }
        Err(_) => {
            tracing::debug!("IPAM service: a client sent no request in time");
            return;
        }
    }
    let reply = answer(&line, tx, cfg, arrived).await;
    let bytes = proto::encode(&reply);
    if tokio::time::timeout(cfg.read_timeout, wr.write_all(&bytes))
        .await
        .is_err()
    {
        tracing::debug!("IPAM service: a client did not take its reply");
    }
}

async fn answer(
    line: &[u8],
    tx: &mpsc::Sender<Job>,
    cfg: &ServiceConfig,
    arrived: Instant,
) -> Reply {
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            let err = CniError::new(
                code::DECODE_FAILURE,
                "malformed request to the petrel IPAM service",
                e.to_string(),
            );
            let (out, exit) = cni::output(&Err(err), b"");
            return Reply::new(out, exit);
        }
    };
    let stdin = req.stdin.as_bytes();
    let outcome = if req.v != proto::VERSION {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "the petrel IPAM service speaks protocol version {}, not {}",
                proto::VERSION,
                req.v
            ),
            "use a petrel-ipam plugin from the same petrel release as petreld",
        ))
    } else if req.env.command.as_deref() == Some("VERSION") {
        Ok(Some(cni::version_result()))
    } else {
        match cni::prepare(&req.env, stdin) {
            Err(e) => Err(e),
            Ok(p) => submit(p, tx, cfg, arrived).await,
        }
    };
    if let Err(e) = &outcome {
        tracing::warn!(command = ?req.env.command, container = ?req.env.container_id, code = e.code, msg = %e.msg, details = %e.details, "IPAM service request failed");
    }
    let (out, exit) = cni::output(&outcome, stdin);
    Reply::new(out, exit)
}

async fn submit(
    prepared: Prepared,
    tx: &mpsc::Sender<Job>,
    cfg: &ServiceConfig,
    arrived: Instant,
) -> Outcome {
    let deadline = arrived + cfg.request_timeout;
    let (reply, rx) = oneshot::channel();
    let job = Job {
        prepared,
        deadline,
        reply,
    };
    if let Err(e) = tx.try_send(job) {
        let why = match e {
            mpsc::error::TrySendError::Full(_) => {
                format!("{} invocations are already waiting", cfg.queue)
            }
            mpsc::error::TrySendError::Closed(_) => "the service is stopping".into(),
        };
        return Err(CniError::new(
            code::TRY_AGAIN_LATER,
            "the petrel IPAM service is overloaded",
            why,
        ));
    }
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(outcome)) => outcome,
        // The worker dropped it (its deadline passed in the queue) or the
        // time is up while it works: either way, no answer in time.
        Ok(Err(_)) | Err(_) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "the petrel IPAM service did not finish within {:?}",
                cfg.request_timeout
            ),
            "the datastore is slow or unreachable; a repeated ADD returns any address this one took",
        )),
    }
}

async fn worker(ipam: Arc<Ipam>, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut mtu = cni::MtuFile::default();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // Nobody waits for these any more: doing them could only leave an
        // allocation for a runtime that has already been told it failed.
        let now = Instant::now();
        batch.retain(|j| !j.reply.is_closed() && now < j.deadline);
        run_batch(&ipam, std::mem::take(&mut batch), &mut mtu).await;
    }
}

/// Runs of consecutive ADDs are group-committed; everything else runs
/// alone, in arrival order.
async fn run_batch(ipam: &Ipam, jobs: Vec<Job>, mtu: &mut cni::MtuFile) {
    let mut adds: Vec<Job> = Vec::new();
    for job in jobs {
        if job.prepared.command == "ADD" {
            adds.push(job);
            continue;
        }
        run_adds(ipam, std::mem::take(&mut adds), mtu).await;
        ipam.forget_block_copies();
        let outcome = cni::execute(&job.prepared, ipam).await;
        let _ = job.reply.send(outcome);
    }
    run_adds(ipam, adds, mtu).await;
}

async fn run_adds(ipam: &Ipam, jobs: Vec<Job>, mtu: &mut cni::MtuFile) {
    if jobs.is_empty() {
        return;
    }
    let reqs: Result<Vec<_>, _> = jobs.iter().map(|j| j.prepared.assign_request()).collect();
    let fast = match reqs {
        Ok(reqs) => ipam.assign_new_batch(&reqs).await,
        Err(_) => Ok(Err(crate::ipam::batch::Declined::NotUniform)),
    };
    match fast {
        Ok(Ok(results)) => {
            tracing::debug!(adds = jobs.len(), "IPAM service: group commit");
            for (job, got) in jobs.into_iter().zip(results) {
                let addrs = got.iter().map(cni::ResultIp::from).collect();
                let m = mtu.read(job.prepared.mtu_file());
                let _ = job.reply.send(Ok(Some(job.prepared.add_result(addrs, m))));
            }
        }
        Ok(Err(declined)) => {
            tracing::debug!(adds = jobs.len(), ?declined, "IPAM service: one by one");
            ipam.forget_block_copies_with_room();
            for job in jobs {
                let outcome = cni::execute(&job.prepared, ipam).await;
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            let err = cni::error_from_ipam(e, false);
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Env;

    fn prepared(cid: &str) -> Prepared {
        let env = Env {
            command: Some("ADD".into()),
            container_id: Some(cid.into()),
            ifname: Some("eth0".into()),
            ..Default::default()
        };
        let conf = br#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"petrel-ipam","datastore":{"path":"/x"},"node_name":"a"}}"#;
        cni::prepare(&env, conf).unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_and_a_late_answer_are_try_again_later() {
        // A queue of one that nobody works on.
        let (tx, _rx) = mpsc::channel(1);
        let cfg = ServiceConfig {
            queue: 1,
            request_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let first = submit(prepared("a"), &tx, &cfg, Instant::now());
        let second = async {
            tokio::task::yield_now().await;
            submit(prepared("b"), &tx, &cfg, Instant::now()).await
        };
        let (first, second) = tokio::join!(first, second);
        let second = second.unwrap_err();
        assert_eq!(second.code, code::TRY_AGAIN_LATER);
        assert!(second.msg.contains("overloaded"), "{second:?}");
        let first = first.unwrap_err();
        assert_eq!(first.code, code::TRY_AGAIN_LATER);
        assert!(first.msg.contains("did not finish"), "{first:?}");
    }

    #[tokio::test]
    async fn adds_queued_together_land_in_one_transaction() {
        use crate::model::{Encapsulation, Pool, PoolUse};
        use crate::store::memory::MemoryStore;
        let ipam = Arc::new(Ipam::new(Arc::new(MemoryStore::new())));
        ipam.add_pool(&Pool {
            name: "p".into(),
            cidr: "10.7.0.0/24".parse().unwrap(),
            block_size: 26,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![PoolUse::Workload],
            encapsulation: Encapsulation::None,
        })
        .await
        .unwrap();
        // The node's first ADD claims its block the ordinary way.
        cni::execute(&prepared("c0"), &ipam).await.unwrap();
        let before = ipam.store().list("").await.unwrap().revision;
        let (tx, rx) = mpsc::channel(16);
        let mut replies = Vec::new();
        for i in 1..=10 {
            let (reply, rx) = oneshot::channel();
            let deadline = Instant::now() + Duration::from_secs(60);
            let prepared = prepared(&format!("c{i}"));
            tx.try_send(Job {
                prepared,
                deadline,
                reply,
            })
            .unwrap_or_else(|_| panic!("queue"));
            replies.push(rx);
        }
        drop(tx);
        worker(ipam.clone(), rx, 32).await;
        let mut addrs = Vec::new();
        let mut gateways = Vec::new();
        for rx in replies {
            let v = rx.await.unwrap().unwrap().unwrap();
            addrs.push(v["ips"][0]["address"].as_str().unwrap().to_string());
            gateways.push(v["ips"][0]["gateway"].as_str().unwrap().to_string());
        }
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 10, "{addrs:?}");
        // The first ADD reserved the block's gateway; the batch returns it.
        gateways.dedup();
        assert_eq!(gateways, ["10.7.0.1"]);
        assert!(!addrs.contains(&"10.7.0.1/26".to_string()));
        let after = ipam.store().list("").await.unwrap().revision;
        assert_eq!(after - before, 1, "ten ADDs, one transaction");
        let r = ipam.check().await.unwrap();
        assert!(r.clean, "{}", r.human());
        assert_eq!(r.addresses_in_use, 12, "ten pods, c0 and the gateway");
    }

    #[tokio::test]
    async fn requests_in_another_protocol_version_or_garbage_get_cni_errors() {
        let (tx, _rx) = mpsc::channel(1);
        let cfg = ServiceConfig::default();
        let r = answer(b"{not json\n", &tx, &cfg, Instant::now()).await;
        assert_eq!(r.exit, 1);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["code"], code::DECODE_FAILURE);
        let line = br#"{"v":2,"env":{"command":"ADD"},"stdin":"{}"}"#;
        let r = answer(line, &tx, &cfg, Instant::now()).await;
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["code"], code::INCOMPATIBLE_VERSION);
        let line = br#"{"v":1,"env":{"command":"VERSION"},"stdin":"{}"}"#;
        let r = answer(line, &tx, &cfg, Instant::now()).await;
        assert_eq!(r.exit, 0);
        assert!(r.stdout.contains("supportedVersions"), "{}", r.stdout);
    }
}
