//! The CNI IPAM plugin's datastore half (spec 1.1.0; 0.3.x, 0.4.0 and
//! 1.0.0 configs too): running an invocation against the allocator and
//! shaping its result. The CNI types, the config and the error objects are
//! the std-only `petrel-cni` crate's, re-exported here; the binary
//! `petrel-ipam-direct` is a thin main around [`invoke`], and the daemon's
//! IPAM service runs [`execute`] with its warm allocator.
//!
//! A host-wide `flock` serialises direct invocations on one node: the
//! kernel drops the lock when its holder dies, so a crashed invocation
//! cannot wedge the node, and a live holder that never finishes makes later
//! invocations fail with "try again later" after a deadline instead of
//! hanging.

use crate::ipam::{AssignRequest, Ipam, IpamError};
use crate::model::Attributes;
use crate::store::etcd::EtcdConfig;
use crate::store::{Location, Store, StoreError};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use petrel_cni::conf::{
    parse, Attachment, DatastoreConfig, GatewayMode, IpamSection, NetConf, DEFAULT_DAEMON_SOCKET,
    DEFAULT_DAEMON_TIMEOUT, DEFAULT_LOCK_FILE, DEFAULT_MTU_FILE, SUPPORTED_VERSIONS,
};
pub use petrel_cni::output::{output, version_of, version_result};
pub use petrel_cni::{code, CniError, Env};

const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The CNI error for an allocator error; `status` for STATUS, where an
/// unreachable datastore is "not available" (50).
pub fn error_from_ipam(e: IpamError, status: bool) -> CniError {
    match e {
        IpamError::Store(s) => error_from_store(s, status),
        e @ (IpamError::NoPool { .. } | IpamError::Exhausted { .. }) => {
            CniError::new(code::NO_ADDRESS, "no address available", e.to_string())
        }
        e @ IpamError::Contention { .. } => {
            CniError::new(code::TRY_AGAIN_LATER, "datastore contention", e.to_string())
        }
        e => CniError::new(code::DATASTORE, "IPAM datastore error", e.to_string()),
    }
}

/// The CNI error for a datastore error (see [`error_from_ipam`]).
pub fn error_from_store(e: StoreError, status: bool) -> CniError {
    let c = match (&e, status) {
        (_, true) => code::NOT_AVAILABLE,
        (StoreError::Unavailable { .. } | StoreError::Embedded { .. }, false) => {
            code::TRY_AGAIN_LATER
        }
        _ => code::DATASTORE,
    };
    CniError::new(c, "IPAM datastore unavailable", e.to_string())
}

/// Where the network config's datastore section points.
pub fn location(ds: &DatastoreConfig) -> Location {
    match &ds.path {
        Some(path) => Location::Embedded(path.clone()),
        None => {
            let mut cfg = EtcdConfig::new(ds.etcd_endpoints.clone());
            cfg.ca = ds.etcd_ca.clone();
            cfg.cert = ds.etcd_cert.clone();
            cfg.key = ds.etcd_key.clone();
            Location::Etcd(cfg)
        }
    }
}

pub async fn open_store(ds: &DatastoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    crate::store::open(&location(ds)).await
}

/// The host-wide lock, held until dropped (or the process dies).
pub struct HostLock {
    _file: std::fs::File,
}

impl HostLock {
    pub fn acquire(path: &Path, wait: Duration) -> Result<HostLock, CniError> {
        let io = |e: std::io::Error| {
            CniError::new(
                code::IO_FAILURE,
                format!("cannot open lock file {}", path.display()),
                e.to_string(),
            )
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(HostLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            if Instant::now() >= deadline {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!(
                        "another petrel-ipam holds {} for over {:?}",
                        path.display(),
                        wait
                    ),
                    "a live invocation is stuck; a dead one would have released the lock",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn read_mtu(path: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    match s.trim().parse::<u32>() {
        Ok(m) if (576..=65535).contains(&m) => Some(m),
        _ => {
            tracing::warn!(path = %path.display(), content = %s.trim(), "ignoring an MTU file without a valid MTU");
            None
        }
    }
}

/// The pod MTU file as last read, re-read only when it changed: another
/// inode (the daemon replaces it by rename), size or modification time.
/// The IPAM service answers each ADD from here with one `stat` instead of
/// opening and reading the file.
#[derive(Debug, Default)]
pub struct MtuFile {
    seen: std::collections::HashMap<PathBuf, (Stamp, Option<u32>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl MtuFile {
    pub fn read(&mut self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(path) else {
            self.seen.remove(path);
            return None;
        };
        let stamp = Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        };
        match self.seen.get(path) {
            Some((s, mtu)) if *s == stamp => *mtu,
            _ => {
                let mtu = read_mtu(path);
                self.seen.insert(path.to_path_buf(), (stamp, mtu));
                mtu
            }
        }
    }
}

fn node_name(ipam: &IpamSection) -> String {
    if let Some(n) = &ipam.node_name {
        return n.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// One address of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResultIp {
    pub addr: IpAddr,
    /// Its block's.
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
}

impl From<&crate::ipam::Assigned> for ResultIp {
    fn from(a: &crate::ipam::Assigned) -> Self {
        ResultIp {
            addr: a.addr,
            prefix_len: a.block.prefix_len(),
            gateway: a.gateway,
        }
    }
}

/// The IPAM result in the shape of `version`: 0.3.x/0.4.0 ips carry a
/// "version" field; 1.1.0 routes carry the pod MTU. Each address carries
/// its block's prefix length, so the pod gets a connected route for the
/// block, which bridge-style plugins (and their CHECK) expect. With a
/// gateway, the default route names it: the bridge plugin's
/// `isDefaultGateway` then finds a default route and adds no second one.
pub fn result_json(version: &str, addrs: &[ResultIp], mtu: Option<u32>) -> Value {
    let legacy = version.starts_with("0.");
    let ips: Vec<Value> = addrs
        .iter()
        .map(|ip| {
            let addr = format!("{}/{}", ip.addr, ip.prefix_len);
            let mut v = if legacy {
                let fam = if ip.addr.is_ipv4() { "4" } else { "6" };
                json!({ "version": fam, "address": addr })
            } else {
                json!({ "address": addr })
            };
            if let Some(gw) = ip.gateway {
                v["gateway"] = json!(gw.to_string());
            }
            v
        })
        .collect();
    let mut routes = Vec::new();
    for (family_v4, dst) in [(true, "0.0.0.0/0"), (false, "::/0")] {
        let mut of_family = addrs.iter().filter(|ip| ip.addr.is_ipv4() == family_v4);
        if let Some(first) = of_family.next() {
            let mut r = json!({ "dst": dst });
            if let Some(gw) = first.gateway {
                r["gw"] = json!(gw.to_string());
            }
            if let (Some(m), "1.1.0") = (mtu, version) {
                r["mtu"] = json!(m);
            }
            routes.push(r);
        }
    }
    json!({ "cniVersion": version, "ips": ips, "routes": routes, "dns": {} })
}

/// One invocation, parsed and checked, before any datastore is touched.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// ADD, DEL, CHECK, GC or STATUS (VERSION never needs preparing).
    pub command: String,
    pub conf: NetConf,
    pub ipam: IpamSection,
    pub env: Env,
    pub node: String,
}

impl Prepared {
    /// `<network name>.<container id>.<ifname>`, for the commands that
    /// name an attachment.
    pub fn handle(&self) -> Result<String, CniError> {
        let cid = self.env.need(&self.env.container_id, "CNI_CONTAINERID")?;
        let ifname = self.env.need(&self.env.ifname, "CNI_IFNAME")?;
        Ok(format!("{}.{cid}.{ifname}", self.conf.name))
    }

    /// The assignment an ADD asks for.
    pub fn assign_request(&self) -> Result<AssignRequest, CniError> {
        let handle = self.handle()?;
        let (namespace, pod) = self.env.pod();
        Ok(AssignRequest {
            handle,
            node: self.node.clone(),
            attrs: Attributes {
                node: Some(self.node.clone()),
                namespace,
                pod,
                container_id: self.env.container_id.clone(),
                interface: self.env.ifname.clone(),
            },
            num_v4: self.ipam.assign_ipv4 as u32,
            num_v6: self.ipam.assign_ipv6 as u32,
            pools: self.ipam.pools.clone(),
            pool_use: crate::model::PoolUse::Workload,
            gateway: self.ipam.gateway == GatewayMode::Block,
        })
    }

    /// The ADD result for the addresses the handle holds.
    pub fn add_result(&self, mut addrs: Vec<ResultIp>, mtu: Option<u32>) -> Value {
        addrs.sort();
        result_json(&self.conf.cni_version, &addrs, mtu)
    }

    /// Where the pod MTU is read from.
    pub fn mtu_file(&self) -> &Path {
        self.ipam
            .mtu_file
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_MTU_FILE))
    }

    fn is_status(&self) -> bool {
        self.command == "STATUS"
    }
}

/// Check the environment and the config of a command other than VERSION.
pub fn prepare(env: &Env, stdin: &[u8]) -> Result<Prepared, CniError> {
    let command = env.need(&env.command, "CNI_COMMAND")?;
    if !matches!(command.as_str(), "ADD" | "DEL" | "CHECK" | "GC" | "STATUS") {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {command}"),
            "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
        ));
    }
    let (conf, ipam) = parse(stdin)?;
    if ipam.kind != "petrel-ipam" {
        tracing::warn!(kind = %ipam.kind, "ipam.type is not petrel-ipam; going on");
    }
    let node = node_name(&ipam);
    let p = Prepared {
        command,
        conf,
        ipam,
        env: env.clone(),
        node,
    };
    if matches!(p.command.as_str(), "ADD" | "DEL" | "CHECK") {
        p.handle()?;
    }
    Ok(p)
}

/// Run one invocation directly against the datastore the config names,
/// under the host-wide lock. `Ok(Some(v))` is printed on stdout; `Ok(None)`
/// prints nothing (DEL, CHECK, GC, STATUS success).
pub async fn invoke(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command.as_deref() == Some("VERSION") {
        return Ok(Some(version_result()));
    }
    let p = prepare(env, stdin)?;
    let lock_path = p
        .ipam
        .lock_file
        .clone()
        .unwrap_or_else(|| DEFAULT_LOCK_FILE.into());
    // STATUS only reads: it does not queue behind the lock.
    let _lock = if p.is_status() {
        None
    } else {
        Some(HostLock::acquire(&lock_path, LOCK_WAIT)?)
    };
    let store = open_store(&p.ipam.datastore)
        .await
        .map_err(|e| error_from_store(e, p.is_status()))?;
    execute(&p, &Ipam::new(store)).await
}

/// Decide one prepared invocation with `alloc`: the plugin's direct path
/// and the daemon's IPAM service share this.
pub async fn execute(p: &Prepared, alloc: &Ipam) -> Result<Option<Value>, CniError> {
    let status = p.is_status();
    let ipam_err = |e| error_from_ipam(e, status);
    match p.command.as_str() {
        "ADD" => {
            let handle = p.handle()?;
            // A repeated ADD returns what the first one assigned.
            let held = alloc.handle_blocks(&handle).await.map_err(ipam_err)?;
            let mut addrs = Vec::with_capacity(held.len());
            for (addr, block) in held {
                let gateway = match p.ipam.gateway {
                    GatewayMode::Block => alloc
                        .ensure_gateway(&p.node, &block)
                        .await
                        .map_err(ipam_err)?,
                    GatewayMode::None => None,
                };
                addrs.push(ResultIp {
                    addr,
                    prefix_len: block.prefix_len(),
                    gateway,
                });
            }
            if addrs.is_empty() {
                addrs = alloc
                    .assign(&p.assign_request()?)
                    .await
                    .map_err(ipam_err)?
                    .iter()
                    .map(ResultIp::from)
                    .collect();
            }
            Ok(Some(p.add_result(addrs, read_mtu(p.mtu_file()))))
        }
        "DEL" => {
            // Idempotent, and independent of the netns: it may be gone.
            alloc.release_handle(&p.handle()?).await.map_err(ipam_err)?;
            Ok(None)
        }
        "CHECK" => {
            let handle = p.handle()?;
            let mut have = alloc.addrs_of_handle(&handle).await.map_err(ipam_err)?;
            have.sort();
            if have.is_empty() {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    format!("no addresses for {handle}"),
                    "the allocation is gone; delete and re-add the attachment",
                ));
            }
            if let Some(prev) = &p.conf.prev_result {
                let mut want: Vec<IpAddr> = prev["ips"]
                    .as_array()
                    .map(|a| a.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .filter_map(|s| s.split('/').next())
                    .filter_map(|s| s.parse().ok())
                    .collect();
                want.sort();
                if want != have {
                    return Err(CniError::new(
                        code::CHECK_FAILED,
                        format!("{handle} holds {have:?}, prevResult says {want:?}"),
                        "the allocation changed; delete and re-add the attachment",
                    ));
                }
            }
            Ok(None)
        }
        "GC" => {
            let live: HashSet<String> = p
                .conf
                .valid_attachments
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|a| format!("{}.{}.{}", p.conf.name, a.container_id, a.ifname))
                .collect();
            let freed = alloc
                .gc_attachments(&p.node, &format!("{}.", p.conf.name), &live)
                .await
                .map_err(ipam_err)?;
            tracing::info!(released = freed.len(), "gc");
            Ok(None)
        }
        "STATUS" => {
            alloc
                .store()
                .ping()
                .await
                .map_err(|e| error_from_store(e, true))?;
            let pools = alloc.pools().await.map_err(ipam_err)?;
            if !pools.iter().any(|p| !p.disabled) {
                return Err(CniError::new(
                    code::NOT_AVAILABLE,
                    "no enabled IP pool",
                    "add one with `petrelctl pool add`",
                ));
            }
            Ok(None)
        }
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {other}"),
            "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_follow_the_requested_version() {
        let addrs = vec![
            ResultIp {
                addr: "10.0.0.5".parse().unwrap(),
                prefix_len: 26,
                gateway: None,
            },
            ResultIp {
                addr: "fd00::5".parse().unwrap(),
                prefix_len: 122,
                gateway: None,
            },
        ];
        let r = result_json("0.4.0", &addrs, Some(1450));
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["ips"][1]["address"], "fd00::5/122");
        assert!(
            r["routes"][0].get("mtu").is_none(),
            "no mtu field before 1.1.0"
        );
        let r = result_json("1.1.0", &addrs, Some(1450));
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["mtu"], 1450);
        assert_eq!(r["routes"][1]["dst"], "::/0");
    }

    #[test]
    fn a_dead_holder_does_not_wedge_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.lock");
        let held = HostLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let err = HostLock::acquire(&path, Duration::from_millis(50))
            .err()
            .unwrap();
        assert_eq!(err.code, code::TRY_AGAIN_LATER);
        drop(held); // as the kernel does when a holder dies
        assert!(HostLock::acquire(&path, Duration::from_millis(50)).is_ok());
    }

    #[test]
    fn mtu_file_must_hold_a_sane_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mtu");
        assert_eq!(read_mtu(&p), None);
        std::fs::write(&p, "1450\n").unwrap();
        assert_eq!(read_mtu(&p), Some(1450));
        std::fs::write(&p, "12").unwrap();
        assert_eq!(read_mtu(&p), None);
    }

    #[test]
    fn the_mtu_cache_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mtu");
        let mut cache = MtuFile::default();
        assert_eq!(cache.read(&p), None);
        std::fs::write(&p, "1450\n").unwrap();
        assert_eq!(cache.read(&p), Some(1450));
        // Replaced by rename, as petreld writes it: same size, new inode.
        let tmp = dir.path().join("mtu.tmp");
        std::fs::write(&tmp, "1400\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(cache.read(&p), Some(1400));
        // Rewritten in place with another length.
        std::fs::write(&p, "9000").unwrap();
        assert_eq!(cache.read(&p), Some(9000));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(cache.read(&p), None);
        std::fs::write(&p, "junk").unwrap();
        assert_eq!(cache.read(&p), None);
    }
}
