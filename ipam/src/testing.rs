//! Test support: a real etcd on a loopback port with a throw-away data
//! directory, and the CI rule for missing capabilities. Used by the
//! integration tests and the benchmark; not by petrel itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// When a test needs something this machine lacks (etcd, root, a CNI
/// plugin): under CI=true it fails, elsewhere it is skipped with a reason.
/// Returns true when the test should go on.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this test needs {what}, which is missing");
    }
    eprintln!("SKIPPED: needs {what}");
    false
}

pub fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// PEM files for an etcd that requires client certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Make a CA, a server certificate for 127.0.0.1 and a client certificate
/// in `dir` with the openssl command.
pub fn make_tls_files(dir: &Path) -> Result<TlsFiles, String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=petrel-test-ca",
        ][..],
    ]
    .concat())?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .map_err(|e| e.to_string())?;
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        run(&[
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN=petrel-{who}"),
            ][..],
        ]
        .concat())?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ])?;
    }
    Ok(TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

/// A running etcd, killed (and its data removed) when dropped.
pub struct EtcdServer {
    child: Option<Child>,
    tls: Option<TlsFiles>,
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

impl EtcdServer {
    /// Start etcd with its data on tmpfs when there is one: the tests
    /// measure petrel, not the disk's fsync.
    pub fn start() -> Result<EtcdServer, String> {
        Self::start_with(None)
    }

    /// The etcd process, while it runs (for measuring its CPU).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An etcd on https that requires client certificates signed by the
    /// CA of `tls`.
    pub fn start_tls(tls: TlsFiles) -> Result<EtcdServer, String> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<TlsFiles>) -> Result<EtcdServer, String> {
        let binary = etcd_binary().ok_or("no etcd on PATH (Debian: etcd-server)")?;
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "petrel-etcd-{}-{}",
            std::process::id(),
            free_port().map_err(|e| e.to_string())?
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut s = EtcdServer {
            child: None,
            tls,
            endpoint: String::new(),
            client_port: free_port().map_err(|e| e.to_string())?,
            peer_port: free_port().map_err(|e| e.to_string())?,
            dir,
            binary,
        };
        let scheme = if s.tls.is_some() { "https" } else { "http" };
        s.endpoint = format!("{scheme}://127.0.0.1:{}", s.client_port);
        s.resume()?;
        Ok(s)
    }

    /// Stop etcd, keeping its data (for "datastore down" tests).
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start (again) on the same ports and data, and wait until it serves.
    pub fn resume(&mut self) -> Result<(), String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.binary);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file").arg(&t.server_cert);
            cmd.arg("--key-file").arg(&t.server_key);
            cmd.arg("--trusted-ca-file").arg(&t.ca);
            cmd.arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "petrel-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=error"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("petrel-test={peer}")])
            .args([
                "--initial-cluster-state",
                "new",
                "--listen-metrics-urls",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        // Wait for the client port, with a deadline, watching that etcd is
        // still alive (a crashed etcd otherwise looks like a slow one).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log =
                        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                    return Err(format!("etcd exited with {status}: {log}"));
                }
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("etcd did not listen within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
