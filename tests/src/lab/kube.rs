//! A real kube-apiserver inside a namespace, on etcd, for the suites that
//! talk to Kubernetes: no fake API server.
//!
//! The binary is built from source, once, by `.ci/kube-apiserver.sh` (which
//! `.ci/setup` runs) at [`KUBE_VERSION`] and cached in
//! `target/kube/<version>/kube-apiserver`; `PETREL_KUBE_APISERVER` points
//! elsewhere. Everything it needs is made in the lab's scratch folder: a CA
//! and a serving certificate for `ADDR` (openssl), the service-account
//! signing key pair, a static token file with one admin user in
//! `system:masters`, and a kubeconfig for that token that trusts the CA.
//! Authorization is `Node,RBAC`, as in a real cluster. [`KubeApiserver::kubectl`]
//! runs `kubectl` (see [`kubectl_bin`]) inside the namespace with that
//! kubeconfig.
//!
//! An outage is SIGSTOP/SIGCONT, as for [`super::etcd::Etcd`].

use super::netns::kill;
use super::{wait_until, Daemon, Lab, Netns};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The Kubernetes release `.ci/kube-apiserver.sh` builds (the same version
/// is pinned there).
pub const KUBE_VERSION: &str = "v1.37.2";

/// The port the API server listens on.
pub const PORT: u16 = 6443;

/// The service network the API server allocates cluster IPs from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The kube-apiserver binary: `$PETREL_KUBE_APISERVER`, else
/// `<repo>/target/kube/<KUBE_VERSION>/kube-apiserver`. The error says how
/// to build it.
pub fn apiserver_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("PETREL_KUBE_APISERVER") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target/kube")
            .join(KUBE_VERSION)
            .join("kube-apiserver"),
    };
    if !path.is_file() {
        bail!(
            "kube-apiserver {KUBE_VERSION} not found at {}: run `bash .ci/setup` \
             (it builds it once with .ci/kube-apiserver.sh), or set PETREL_KUBE_APISERVER",
            path.display()
        );
    }
    Ok(path)
}

/// `kubectl` on `PATH`, else the one `.ci/kube-apiserver.sh` builds
/// beside kube-apiserver on a machine without one.
pub fn kubectl_bin() -> Result<PathBuf> {
    if let Some(p) = super::which("kubectl") {
        return Ok(p);
    }
    let built = apiserver_bin()?.with_file_name("kubectl");
    if !built.is_file() {
        bail!(
            "kubectl not on PATH nor at {}: run `bash .ci/setup`",
            built.display()
        );
    }
    Ok(built)
}

/// [`crate::require`] for the API server: `true` when the binary,
/// `kubectl` and `openssl` are there; skips (or fails in CI) otherwise.
pub fn require_apiserver() -> bool {
    if let Err(e) = apiserver_bin().and_then(|_| kubectl_bin()) {
        return crate::require(false, &e.to_string());
    }
    if super::which("openssl").is_none() {
        return crate::require(false, "program openssl");
    }
    true
}

/// A running kube-apiserver.
pub struct KubeApiserver {
    daemon: Daemon,
    ns: Netns,
    endpoint: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl KubeApiserver {
    /// Starts kube-apiserver in `ns` on `https://addr:6443`, storing in
    /// `etcd_endpoint` (`http://…:2379`), and waits until `/readyz` says
    /// ok through the kubeconfig.
    pub fn start(lab: &Lab, ns: &Netns, addr: &str, etcd_endpoint: &str) -> Result<KubeApiserver> {
        Self::start_with(lab, ns, addr, etcd_endpoint, SERVICE_CIDR)
    }

    /// [`Self::start`] with another `--service-cluster-ip-range` than
    /// [`SERVICE_CIDR`] (the lab's `--kubernetes` uses Kubernetes' usual
    /// 10.96.0.0/12, which petrel advertises as the ClusterIP aggregate).
    pub fn start_with(
        lab: &Lab,
        ns: &Netns,
        addr: &str,
        etcd_endpoint: &str,
        service_cidr: &str,
    ) -> Result<KubeApiserver> {
        let bin = apiserver_bin()?;
        let dir = lab.subdir("kube-apiserver")?;
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        make_pki(&dir, addr)?;
        let token = random_token()?;
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )?;
        let endpoint = format!("https://{addr}:{PORT}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            render_kubeconfig(&endpoint, &p("ca.crt"), &token),
        )?;

        let args = [
            format!("--etcd-servers={etcd_endpoint}"),
            format!("--bind-address={addr}"),
            format!("--advertise-address={addr}"),
            format!("--secure-port={PORT}"),
            format!("--service-cluster-ip-range={service_cidr}"),
            format!("--tls-cert-file={}", p("server.crt")),
            format!("--tls-private-key-file={}", p("server.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--cert-dir={}", p("certs")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The lease reconciler of the `kubernetes` Service's endpoints
        // refuses a loopback address ("may not be in the loopback range").
        if addr
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
        {
            args.push("--endpoint-reconciler-type=none");
        }
        let daemon = Daemon::spawn(
            lab,
            ns,
            "kube-apiserver",
            &dir.join("kube-apiserver.log"),
            &bin.to_string_lossy(),
            &args,
            &[],
        )?;
        let api = KubeApiserver {
            daemon,
            ns: ns.clone(),
            endpoint,
            kubeconfig,
            dir,
        };
        api.wait_ready()?;
        Ok(api)
    }

    /// Waits until `/readyz` answers `ok` (after start or [`Self::resume`]).
    pub fn wait_ready(&self) -> Result<()> {
        wait_until("kube-apiserver ready", &[&self.daemon], || {
            let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=2s"])?;
            Ok((out.trim() == "ok").then_some(()))
        })
    }

    /// `https://ADDR:6443`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A kubeconfig for the admin user (`system:masters`), trusting the
    /// lab's CA.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The folder of its certificates, keys, token file and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// `kubectl --kubeconfig KUBECONFIG args…` inside the namespace: its
    /// stdout, or an error with stderr and the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let kubectl = kubectl_bin()?;
        let kc = self.kubeconfig.to_string_lossy();
        let mut a = vec!["--kubeconfig", &kc];
        a.extend_from_slice(args);
        self.ns.exec(&kubectl.to_string_lossy(), &a)
    }

    /// Like [`Self::kubectl`], with `input` on stdin (`create -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let mut child = self
            .ns
            .command(&kubectl_bin()?.to_string_lossy())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("kubectl stdin"))?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl … -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&a)?;
        serde_json::from_str(&out).with_context(|| format!("kubectl get output: {out}"))
    }

    /// The resident set size of the process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.daemon.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS for pid {}", self.daemon.pid()))
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&self) -> Result<()> {
        self.daemon.stop()
    }

    /// SIGSTOP: the API server stops answering but keeps its socket.
    pub fn pause(&self) {
        kill(self.daemon.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`KubeApiserver::pause`].
    pub fn resume(&self) {
        kill(self.daemon.pid(), libc::SIGCONT);
    }
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// In `dir`: `ca.{crt,key}`, a CA; `server.{crt,key}`, the serving
/// certificate for `addr` signed by it; `sa.{key,pub}`, the
/// service-account signing pair. All P-256.
fn make_pki(dir: &Path, addr: &str) -> Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let mut ca = vec!["req", "-x509", "-new", "-nodes", "-days", "3650"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=petrel-lab-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ]);
    openssl(dir, &ca)?;
    let san = format!(
        "subjectAltName=IP:{addr},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,\
         DNS:kubernetes.default,DNS:kubernetes.default.svc"
    );
    let mut server = vec!["req", "-x509", "-new", "-nodes", "-days", "3650"];
    server.extend_from_slice(&ec);
    server.extend_from_slice(&[
        "-keyout",
        "server.key",
        "-out",
        "server.crt",
        "-subj",
        "/CN=kube-apiserver",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-addext",
        &san,
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=serverAuth",
    ]);
    openssl(dir, &server)?;
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

/// 32 hex digits from /dev/urandom.
fn random_token() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn render_kubeconfig(server: &str, ca: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: lab
  context:
    cluster: lab
    user: admin
current-context: lab
"
    )
}
