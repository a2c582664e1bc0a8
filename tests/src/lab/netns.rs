//! Network namespaces, veth links and the lab that owns them.

use super::process::Daemon;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// Prefix of every namespace and scratch folder the lab creates:
/// `ptl-<pid>-<n>-<tag>`.
const PREFIX: &str = "ptl-";
static NEXT: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();

/// Runs a command with stdin null; returns stdout, or an error with stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One network namespace (a name; the [`Lab`] owns its lifetime).
#[derive(Clone, Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside the namespace, stdin null.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .stdin(Stdio::null());
        c
    }

    /// Runs `program args` inside the namespace; stdout, or an error with
    /// stderr and the exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", &self.name, program];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs a shell script inside the namespace.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec("sh", &["-c", script])
    }

    /// `ip -n NS args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Adds an address (`10.0.0.1/24`, `fd00::1/64`, `fe80::1/64`) to an
    /// interface, without duplicate address detection.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let mut a = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            a.push("nodad");
        }
        self.ip(&a).map(drop)
    }

    /// A `TcpExt` counter of the namespace's kernel (`/proc/net/netstat`),
    /// e.g. `TCPMD5Failure`, `TCPMD5NotFound`, `TCPMD5Unexpected`.
    pub fn tcp_ext(&self, counter: &str) -> Result<u64> {
        let text = self.exec("cat", &["/proc/net/netstat"])?;
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        if let [names, values, ..] = lines[..] {
            if let Some(i) = names.split_whitespace().position(|n| n == counter) {
                if let Some(v) = values.split_whitespace().nth(i) {
                    return Ok(v.parse()?);
                }
            }
        }
        bail!("no TcpExt counter {counter}")
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// creates live in the namespace and stay usable from any thread.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }
}

/// Both ends of a veth pair.
#[derive(Clone, Debug)]
pub struct Link {
    /// Interface name in the first namespace.
    pub a: String,
    /// Interface name in the second namespace.
    pub b: String,
}

/// A set of namespaces and a scratch folder, removed on drop together with
/// every process still running in them.
pub struct Lab {
    id: String,
    dir: PathBuf,
    namespaces: Mutex<Vec<Netns>>,
    links: AtomicUsize,
    pub(crate) daemons: Mutex<Vec<u32>>,
}

impl Lab {
    /// A new lab; `tag` only makes names readable (`ptl-<pid>-<n>-<tag>`).
    /// Sweeps leftovers of dead earlier runs once per process.
    pub fn new(tag: &str) -> Result<Lab> {
        SWEEP.call_once(|| {
            if let Err(e) = sweep_leftovers() {
                eprintln!("lab: sweep of leftovers failed: {e:#}");
            }
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(20)
            .collect();
        let id = format!("{PREFIX}{}-{n}-{tag}", std::process::id());
        let dir = scratch_root().join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        // FRR runs as user frr and must reach its run directory below this.
        chmod(&scratch_root(), 0o755)?;
        chmod(&dir, 0o755)?;
        Ok(Lab {
            id,
            dir,
            namespaces: Mutex::new(Vec::new()),
            links: AtomicUsize::new(0),
            daemons: Mutex::new(Vec::new()),
        })
    }

    /// A lab with a fixed id (`petrel-lab up`), which must not start with
    /// `ptl-`: [`sweep_leftovers`] leaves it alone, and it can outlive this
    /// process ([`Lab::detach`]). Whatever an earlier lab of that id left
    /// (a crashed `up`) is removed first.
    pub fn named(id: &str) -> Result<Lab> {
        if id.starts_with(PREFIX) || id.is_empty() || id.contains('/') {
            bail!("lab name {id:?}: must be non-empty, without '/', not starting with {PREFIX}");
        }
        remove_named(id)?;
        let dir = scratch_root().join(id);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        chmod(&scratch_root(), 0o755)?;
        chmod(&dir, 0o755)?;
        Ok(Lab {
            id: id.to_string(),
            dir,
            namespaces: Mutex::new(Vec::new()),
            links: AtomicUsize::new(0),
            daemons: Mutex::new(Vec::new()),
        })
    }

    /// Leaves the namespaces, their processes and the scratch folder in
    /// place after this process ends (`petrel-lab up`); [`remove_named`]
    /// takes them down.
    pub fn detach(self) {
        std::mem::forget(self);
    }

    /// The lab's unique id (prefix of its namespace names).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's scratch folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh sub-folder of the scratch folder (mode 755).
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d)?;
        chmod(&d, 0o755)?;
        Ok(d)
    }

    /// Creates a namespace `<lab id>-<name>` with loopback up and IPv6
    /// duplicate address detection off (addresses usable at once).
    pub fn netns(&self, name: &str) -> Result<Netns> {
        let ns = Netns {
            name: format!("{}-{name}", self.id),
        };
        run("ip", &["netns", "add", &ns.name])?;
        self.namespaces.lock().unwrap().push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        Ok(ns)
    }

    /// Joins two namespaces with a veth pair (`vN` at both ends), adds the
    /// addresses (CIDR; IPv6 ones without DAD) and sets both ends up. A
    /// kernel link-local IPv6 address exists on both ends as well.
    pub fn link(&self, a: &Netns, addr_a: &[&str], b: &Netns, addr_b: &[&str]) -> Result<Link> {
        let n = self.links.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            a: format!("v{n}a"),
            b: format!("v{n}b"),
        };
        run(
            "ip",
            &[
                "link", "add", &link.a, "netns", &a.name, "type", "veth", "peer", "name", &link.b,
                "netns", &b.name,
            ],
        )?;
        for (ns, ifname, addrs) in [(a, &link.a, addr_a), (b, &link.b, addr_b)] {
            for cidr in addrs {
                ns.add_addr(ifname, cidr)?;
            }
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(link)
    }

    /// The kernel's link-local IPv6 address of an interface, once it exists.
    pub fn link_local(&self, ns: &Netns, ifname: &str) -> Result<String> {
        super::wait_until("link-local address", &[], || {
            let out = ns.ip(&["-j", "-6", "addr", "show", "dev", ifname, "scope", "link"])?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            Ok(v.pointer("/0/addr_info/0/local")
                .and_then(|a| a.as_str())
                .map(str::to_string))
        })
    }

    pub(crate) fn register(&self, d: &Daemon) {
        self.daemons.lock().unwrap().push(d.pid());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in self.daemons.lock().unwrap().iter() {
            kill(*pid, libc::SIGKILL);
        }
        for ns in self.namespaces.lock().unwrap().iter() {
            remove_netns(&ns.name);
        }
        if std::env::var_os("PETREL_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lab: kept {}", self.dir.display());
        }
    }
}

fn scratch_root() -> PathBuf {
    std::env::temp_dir().join("petrel-lab")
}

fn chmod(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

pub(crate) fn kill(pid: u32, sig: i32) {
    if pid > 1 {
        // SAFETY: plain kill(2) on a pid this lab started.
        unsafe { libc::kill(pid as i32, sig) };
    }
}

/// Kills every process in a namespace, then deletes it.
fn remove_netns(name: &str) {
    for _ in 0..50 {
        let pids = run("ip", &["netns", "pids", name]).unwrap_or_default();
        let pids: Vec<u32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            kill(p, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = run("ip", &["netns", "del", name]);
}

/// Removes every namespace named `<id>-...` (killing the processes in
/// them) and the scratch folder of the lab `id`: `petrel-lab down`, and a
/// new `up` after a crashed one. Finding them by name, not by a recorded
/// pid, is what makes it work after a crash.
pub fn remove_named(id: &str) -> Result<()> {
    let list = run("ip", &["netns", "list"])?;
    let prefix = format!("{id}-");
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(&prefix) {
            remove_netns(name);
        }
    }
    let dir = scratch_root().join(id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("rm -r {}", dir.display()))?;
    }
    Ok(())
}

/// Removes namespaces and scratch folders of lab runs whose process is gone
/// (a crashed or killed test binary), killing the processes left in them.
pub fn sweep_leftovers() -> Result<()> {
    let dead = |name: &str| -> bool {
        name.strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let list = run("ip", &["netns", "list"])?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if dead(name) {
            eprintln!("lab: sweeping leftover namespace {name}");
            remove_netns(name);
        }
    }
    if let Ok(rd) = std::fs::read_dir(scratch_root()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if dead(&n) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}
