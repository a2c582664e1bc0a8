//! petreld's operations surface with the real binary in network
//! namespaces: systemd's notification protocol on a real datagram socket,
//! the metrics, /healthz and /readyz endpoints, the pod MTU following a
//! link's MTU into the file and into installed routes, and `petrelctl
//! show fib|mtu`.

use petrel_tests::lab::{require_lab, Lab, Netns};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PETRELD: &str = env!("CARGO_BIN_EXE_petreld");
const PETRELCTL: &str = env!("CARGO_BIN_EXE_petrelctl");
const WAIT: Duration = Duration::from_secs(30);

/// A petreld child, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(ns: &Netns, dir: &Path, toml: &str, env: &[(&str, &str)]) -> Daemon {
        let conf = dir.join("petreld.toml");
        std::fs::write(&conf, toml).unwrap();
        let log = dir.join("petreld.log");
        let mut c = ns.command(PETRELD);
        c.args(["--config", conf.to_str().unwrap()])
            .env("PETREL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        Daemon {
            child: c.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it gives `Some`; panics with the daemon's log after
/// [`WAIT`] or when the daemon dies.
fn wait_for<T>(what: &str, d: &mut Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if !d.alive() || start.elapsed() > WAIT {
            panic!(
                "waiting for {what}: gave up\n--- petreld log ---\n{}",
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(name: &str, router_id: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[node]\nname = \"{name}\"\nrouter_id = \"{router_id}\"\nasn = 64512\n\
         [control]\nsocket = \"{}\"\n\
         [bgp]\nlisten = [\"{router_id}:179\"]\n\
         [fib]\nsweep_after = 5\n\
         {extra}\n",
        dir.join("petreld.sock").display()
    )
}

#[test]
fn systemd_notify_ready_status_watchdog_and_stopping() {
    if !require_lab(&[]) {
        return;
    }
    let lab = Lab::new("notify").unwrap();
    let ns = lab.netns("n").unwrap();
    ns.add_addr("lo", "10.77.0.1/32").unwrap();
    let dir = lab.subdir("n").unwrap();
    // A path socket: reachable from inside the namespace (abstract ones are
    // per network namespace).
    let sock_path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&sock_path).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let toml = config(
        "notify",
        "10.77.0.1",
        &dir,
        &format!(
            "[mtu]\nmode = \"fixed\"\nvalue = 1400\nfile = \"{}\"\n[metrics]\nenabled = false\n",
            dir.join("pod-mtu").display()
        ),
    );
    let mut d = Daemon::start(
        &ns,
        &dir,
        &toml,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "600000"),
        ],
    );
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv = |got: &mut Vec<String>| {
        if let Ok(n) = rx.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let has =
        |got: &[String], needle: &str| got.iter().any(|m| m.lines().any(|l| l.starts_with(needle)));
    wait_for("READY=1, STATUS= and two WATCHDOG=1", &mut d, || {
        recv(&mut got);
        let dogs = got
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        (has(&got, "READY=1") && has(&got, "STATUS=0/0 peers established") && dogs >= 2)
            .then_some(())
    });
    // READY=1 comes once, before any watchdog ping.
    let ready_at = got.iter().position(|m| m.contains("READY=1")).unwrap();
    assert_eq!(
        got.iter().filter(|m| m.contains("READY=1")).count(),
        1,
        "{got:?}"
    );
    assert!(
        got[..ready_at].iter().all(|m| !m.contains("WATCHDOG=1")),
        "watchdog before ready: {got:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pod-mtu")).unwrap(),
        "1400\n"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    got.clear();
    wait_for("STOPPING=1", &mut d, || {
        recv(&mut got);
        has(&got, "STOPPING=1").then_some(())
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < WAIT, "petreld did not exit\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", d.log());
}

/// GET over TCP from inside `ns`: (status code, body).
fn http_get(ns: &Netns, addr: &str, path: &str) -> Option<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    ns.enter(move || {
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        Ok((code, body))
    })
    .ok()
}

/// The value of one sample line of a scrape.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

fn ctl_json(dir: &Path, args: &[&str]) -> Option<Value> {
    let sock = dir.join("petreld.sock");
    let out = std::process::Command::new(PETRELCTL)
        .arg("--socket")
        .arg(&sock)
        .args(args)
        .arg("--json")
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// MTU of petreld's kernel route for `dst` in `ns` (protocol petrel).
fn route_mtu(ns: &Netns, dst: &str) -> Option<u64> {
    let out = ns
        .ip(&["-j", "-d", "route", "show", dst, "proto", "202"])
        .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v.as_array()?.first()?["metrics"]
        .as_array()?
        .iter()
        .find_map(|m| m["mtu"].as_u64())
}

#[test]
fn metrics_readiness_and_the_pod_mtu_follow_the_network() {
    if !require_lab(&[]) {
        return;
    }
    let lab = Lab::new("ops").unwrap();
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let link = lab
        .link(&a, &["10.78.0.1/24"], &b, &["10.78.0.2/24"])
        .unwrap();
    let (dir_a, dir_b) = (lab.subdir("a").unwrap(), lab.subdir("b").unwrap());
    let peer =
        |addr: &str| format!("[[bgp.peers]]\naddress = \"{addr}\"\nasn = 64512\nhold_time = 9\n");

    // A: auto MTU with IPIP over the interface holding its router id.
    let mtu_file = dir_a.join("pod-mtu");
    let toml_a = config(
        "a",
        "10.78.0.1",
        &dir_a,
        &format!(
            "[mtu]\nencapsulation = \"ipip\"\nfile = \"{}\"\n[metrics]\naddress = \"127.0.0.1:9179\"\n[log]\nformat = \"json\"\n{}",
            mtu_file.display(),
            peer("10.78.0.2")
        ),
    );
    let mut da = Daemon::start(&a, &dir_a, &toml_a, &[]);
    let m = "127.0.0.1:9179";
    let scrape = || {
        http_get(&a, m, "/metrics")
            .filter(|(c, _)| *c == 200)
            .map(|x| x.1)
    };
    let peer_up = "petrel_bgp_peer_established{peer=\"10.78.0.2\",asn=\"64512\"}";

    // Peer B is not there yet: its session is down in the metrics; A has
    // no datastore and nothing degraded, so it is ready.
    let text = wait_for("a first scrape", &mut da, scrape);
    assert_eq!(sample(&text, peer_up).as_deref(), Some("0"), "{text}");
    assert_eq!(
        sample(&text, "petrel_pod_mtu").as_deref(),
        Some("1480"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&mtu_file).unwrap(), "1480\n");
    wait_for("/readyz 200", &mut da, || {
        http_get(&a, m, "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(http_get(&a, m, "/healthz").map(|x| x.0), Some(200));
    assert_eq!(http_get(&a, m, "/nothing").map(|x| x.0), Some(404));

    // B: its pod MTU file cannot be written, so it is degraded: /readyz
    // answers 503 and names the reason. It originates a prefix for A.
    let toml_b = config(
        "b",
        "10.78.0.2",
        &dir_b,
        &format!(
            "[mtu]\nfile = \"/proc/petrel-no-such-dir/pod-mtu\"\n[[bgp.originate]]\nprefix = \"10.79.0.0/24\"\n{}",
            peer("10.78.0.1")
        ),
    );
    let mut db = Daemon::start(&b, &dir_b, &toml_b, &[]);
    let (code, body) = wait_for("B's /readyz", &mut db, || http_get(&b, m, "/readyz"));
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("mtu: cannot write /proc/petrel-no-such-dir/pod-mtu"),
        "{body}"
    );

    // The session comes up: A's metrics follow, and B's prefix is in A's
    // kernel with the pod MTU as the route MTU.
    let text = wait_for("the peer Established in the metrics", &mut da, || {
        scrape().filter(|t| {
            sample(t, peer_up).as_deref() == Some("1")
                && sample(t, "petrel_bgp_prefixes_received{peer=\"10.78.0.2\"}").as_deref()
                    == Some("1")
        })
    });
    assert_eq!(
        sample(
            &text,
            "petrel_bgp_peer_state{peer=\"10.78.0.2\",asn=\"64512\"}"
        )
        .as_deref(),
        Some("6")
    );
    wait_for("B's prefix in A's kernel with MTU 1480", &mut da, || {
        (route_mtu(&a, "10.79.0.0/24") == Some(1480)).then_some(())
    });
    let text = scrape().unwrap();
    let ops: u64 = sample(&text, "petrel_fib_operations_total")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ops >= 1, "{text}");
    assert_eq!(
        sample(&text, "petrel_fib_routes").as_deref(),
        Some("1"),
        "{text}"
    );

    // The link's MTU drops: the file, the route and `show mtu` follow.
    a.ip(&["link", "set", "dev", &link.a, "mtu", "1400"])
        .unwrap();
    wait_for("pod MTU 1380 in the file", &mut da, || {
        (std::fs::read_to_string(&mtu_file).ok()? == "1380\n").then_some(())
    });
    wait_for("the route's MTU at 1380", &mut da, || {
        (route_mtu(&a, "10.79.0.0/24") == Some(1380)).then_some(())
    });
    let mtu = ctl_json(&dir_a, &["show", "mtu"]).unwrap();
    assert_eq!(mtu["host_mtu"], 1400, "{mtu}");
    assert_eq!(mtu["pod_mtu"], 1380, "{mtu}");
    assert_eq!(mtu["interface"], link.a.as_str(), "{mtu}");
    assert_eq!(
        (mtu["encapsulation"].as_str(), mtu["overhead"].as_u64()),
        (Some("ipip"), Some(20))
    );
    assert_eq!(mtu["source"], "auto");
    let fib = ctl_json(&dir_a, &["show", "fib"]).unwrap();
    let row = &fib.as_array().unwrap()[0];
    assert_eq!(row["prefix"], "10.79.0.0/24", "{fib}");
    assert_eq!(
        (row["kind"].as_str(), row["mtu"].as_u64()),
        (Some("unicast"), Some(1380)),
        "{fib}"
    );
    assert!(
        row["next_hops"][0]
            .as_str()
            .unwrap()
            .starts_with("10.78.0.2"),
        "{fib}"
    );
    assert_eq!(
        sample(&scrape().unwrap(), "petrel_pod_mtu").as_deref(),
        Some("1380")
    );

    // JSON logs: one object per line, peer as a field where logged.
    let log = da.log();
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{log}"
    );
}
