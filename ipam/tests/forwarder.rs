//! The exec'd `petrel-ipam` binary on its own: what it answers itself
//! (VERSION, and the error when it has nowhere to go), and how it hands
//! an invocation to `petrel-ipam-direct` when no IPAM service accepts —
//! found beside it or through CNI_PATH, with the config on stdin whole.
//!
//! The forwarder has no datastore code, so an ADD that succeeds without a
//! service can only have gone through the direct plugin; a copy of the
//! forwarder alone in an empty directory shows what happens without one.

use petrel_ipam::ipam::Ipam;
use petrel_ipam::model::{Encapsulation, Pool, PoolUse};
use petrel_ipam::store::embedded::EmbeddedStore;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct Outcome {
    exit: Option<i32>,
    out: Value,
    stdout: String,
    stderr: String,
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_petrel-ipam"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// A copy of the forwarder alone in a directory of its own.
fn lone_forwarder(dir: &Path) -> PathBuf {
    let bin = dir.join("petrel-ipam");
    std::fs::copy(env!("CARGO_BIN_EXE_petrel-ipam"), &bin).expect("copy the forwarder");
    bin
}

fn run(bin: &Path, command: &str, cid: &str, cni_path: &Path, conf: &[u8]) -> Outcome {
    let spawn = || {
        Command::new(bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", "/var/run/netns/none")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .env_remove("PETREL_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // A binary copied just now (`lone_forwarder`) can be "busy" for a
    // moment: a test on another thread that forks while the copy's file is
    // open hands the open descriptor to its child until that child execs.
    let mut tries = 0;
    let mut child = loop {
        match spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => break r.expect("spawn the plugin"),
        }
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let conf = conf.to_vec();
    // A writer thread: the config may be larger than the pipe.
    let writer = std::thread::spawn(move || stdin.write_all(&conf));
    let o = child.wait_with_output().expect("plugin output");
    writer.join().expect("writer").expect("write the config");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    Outcome {
        exit: o.status.code(),
        out: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

/// An embedded store with one pool, closed again so a plugin can open it.
fn embedded_store(dir: &Path) -> PathBuf {
    let db = dir.join("ipam.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = EmbeddedStore::open(&db, Duration::from_secs(1)).expect("open");
    rt.block_on(Ipam::new(Arc::new(store)).add_pool(&Pool {
        name: "p".into(),
        cidr: "10.246.0.0/24".parse().expect("cidr"),
        block_size: 28,
        disabled: false,
        node_selector: String::new(),
        allowed_uses: vec![PoolUse::Workload],
        encapsulation: Encapsulation::None,
    }))
    .expect("pool");
    db
}

fn handles(db: &Path) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = EmbeddedStore::open(db, Duration::from_secs(1)).expect("open");
    let snap = rt
        .block_on(Ipam::new(Arc::new(store)).snapshot())
        .expect("snapshot");
    let mut v: Vec<String> = snap
        .blocks
        .iter()
        .flat_map(|(b, _)| b.allocations.values().map(|a| a.handle.clone()))
        .filter(|h| !petrel_ipam::gateway::is_gateway_handle(h))
        .collect();
    v.sort();
    v
}

fn conf(version: &str, db: &Path, dir: &Path, socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": "fwd",
        "ipam": {
            "type": "petrel-ipam",
            "datastore": { "path": db },
            "node_name": "node-f",
            "mtu_file": dir.join("absent-mtu"),
            "lock_file": dir.join("ipam.lock"),
            "daemon_socket": socket,
        }
    })
}

#[test]
fn version_is_answered_by_the_forwarder_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = lone_forwarder(dir.path());
    // No direct plugin anywhere it looks: the answer is its own.
    for stdin in [&b"{}"[..], b"", b"not json"] {
        let o = run(&bin, "VERSION", "", dir.path(), stdin);
        assert_eq!(o.exit, Some(0), "{} {}", o.stdout, o.stderr);
        assert_eq!(
            o.out,
            json!({
                "cniVersion": "1.1.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            }),
            "{}",
            o.stdout
        );
        assert!(o.stdout.ends_with('\n'));
    }
}

#[test]
fn without_a_service_or_a_direct_plugin_the_error_says_what_to_install() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = lone_forwarder(dir.path());
    let db = dir.path().join("never-opened.db");
    let absent = dir.path().join("absent.sock");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("stale socket"));
    // No service (no socket file, or one nobody listens on): try again
    // later, in the config's CNI version.
    for socket in [&absent, &stale] {
        let c = conf("0.4.0", &db, dir.path(), socket);
        let o = run(&bin, "ADD", "c1", dir.path(), c.to_string().as_bytes());
        assert_eq!(o.exit, Some(1), "{} {}", o.stdout, o.stderr);
        assert_eq!(o.out["cniVersion"], "0.4.0", "{}", o.stdout);
        assert_eq!(o.out["code"], 11, "{}", o.stdout);
        let msg = o.out["msg"].as_str().expect("msg");
        assert!(msg.contains(&socket.display().to_string()), "{msg}");
        assert!(msg.contains("petrel-ipam-direct"), "{msg}");
        let details = o.out["details"].as_str().expect("details");
        assert!(
            details.contains(&dir.path().display().to_string()),
            "{details}"
        );
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
    // Forwarding off: nothing transient about a missing binary.
    let c = conf("1.1.0", &db, dir.path(), Path::new(""));
    let o = run(&bin, "DEL", "c1", dir.path(), c.to_string().as_bytes());
    assert_eq!(o.exit, Some(1), "{} {}", o.stdout, o.stderr);
    assert_eq!(o.out["code"], 5, "{}", o.stdout);
    assert!(
        o.out["msg"]
            .as_str()
            .is_some_and(|m| m.contains("forwarding is off") && m.contains("petrel-ipam-direct")),
        "{}",
        o.stdout
    );
    assert!(!db.exists(), "nothing opened the datastore");
    // A config no path could use is refused here, without a direct plugin.
    let o = run(&bin, "ADD", "c1", dir.path(), b"{\"cniVersion\": ");
    assert_eq!(o.exit, Some(1));
    assert_eq!(o.out["code"], 6, "{}", o.stdout);
}

/// A copy of the forwarder installed as petrel-ipam-direct: an error
/// naming the mix-up, not an endless chain of execs.
#[test]
fn a_forwarder_installed_as_the_direct_plugin_is_an_error_not_a_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = lone_forwarder(dir.path());
    std::fs::copy(&bin, dir.path().join("petrel-ipam-direct")).expect("copy");
    let c = conf(
        "1.0.0",
        &dir.path().join("db"),
        dir.path(),
        &dir.path().join("absent.sock"),
    );
    let o = run(&bin, "ADD", "c1", dir.path(), c.to_string().as_bytes());
    assert_eq!(o.exit, Some(1), "{} {}", o.stdout, o.stderr);
    assert_eq!(o.out["code"], 5, "{}", o.stdout);
    assert_eq!(o.out["cniVersion"], "1.0.0", "{}", o.stdout);
    assert!(
        o.out["msg"]
            .as_str()
            .is_some_and(|m| m.contains("is the petrel-ipam forwarder")),
        "{}",
        o.stdout
    );
}

/// Installed on its own in a directory, the forwarder finds the direct
/// plugin in another of the runtime's plugin directories; the config
/// reaches it whole however large (here ~250 KiB, far over a pipe's 64).
#[test]
fn the_direct_plugin_is_found_through_cni_path_and_gets_the_whole_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bindir = dir.path().join("bin");
    std::fs::create_dir(&bindir).expect("mkdir");
    let bin = lone_forwarder(&bindir);
    let db = embedded_store(dir.path());
    let cni_path = std::env::join_paths([bindir.as_path(), &target_dir()]).expect("CNI_PATH");
    let c = conf("1.1.0", &db, dir.path(), &dir.path().join("absent.sock"));
    for cid in ["keep", "leak"] {
        let o = run(
            &bin,
            "ADD",
            cid,
            Path::new(&cni_path),
            c.to_string().as_bytes(),
        );
        assert_eq!(o.exit, Some(0), "{} {}", o.stdout, o.stderr);
        assert!(o.out["ips"][0]["address"].is_string(), "{}", o.stdout);
    }
    assert_eq!(handles(&db), ["fwd.keep.eth0", "fwd.leak.eth0"]);

    let mut live: Vec<Value> = (0..5000)
        .map(|i| json!({ "containerID": format!("gone-{i:05}"), "ifname": "eth0" }))
        .collect();
    live.push(json!({ "containerID": "keep", "ifname": "eth0" }));
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!(live);
    let text = gc.to_string();
    assert!(text.len() > 200 * 1024, "{}", text.len());
    let o = run(&bin, "GC", "", Path::new(&cni_path), text.as_bytes());
    assert_eq!(o.exit, Some(0), "GC: {} {}", o.stdout, o.stderr);
    assert_eq!(handles(&db), ["fwd.keep.eth0"], "the leak freed, keep kept");
}
