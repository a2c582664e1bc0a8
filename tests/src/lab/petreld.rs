//! petreld, petrel's daemon, driven like the other daemons: a generated
//! TOML config, `petrelctl --socket S show peers|routes --json`.

use super::{wait_until, Daemon, Lab, Netns, Route};
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::PathBuf;

/// One `[[bgp.peers]]`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub address: String,
    pub asn: u32,
    pub port: Option<u16>,
    pub local_address: Option<String>,
    pub password: Option<String>,
    pub passive: bool,
    pub hold_time: Option<u16>,
    pub keepalive: Option<u16>,
    pub ttl_security: Option<u8>,
    /// `"self"` or `"keep"`.
    pub next_hop: Option<String>,
    pub route_reflector_client: bool,
    /// `local_routes_only`: advertise only this node's own routes.
    pub local_routes_only: bool,
    pub families: Vec<String>,
    pub graceful_restart: Option<u32>,
    /// (limit, action "restart"|"warn", restart_after seconds)
    pub max_prefix: Option<(u32, String, u32)>,
    /// BFD (min_rx_ms, min_tx_ms, multiplier).
    pub bfd: Option<(u32, u32, u8)>,
    /// More fields of the `bfd` inline table, e.g. `multihop = true`.
    pub bfd_extra: Vec<String>,
    /// `add_path`: (send mode for every family, receive).
    pub add_path: Option<(Option<String>, bool)>,
}

impl Peer {
    pub fn new(address: &str, asn: u32) -> Peer {
        Peer {
            address: address.into(),
            asn,
            port: None,
            local_address: None,
            password: None,
            passive: false,
            hold_time: None,
            keepalive: None,
            ttl_security: None,
            next_hop: None,
            route_reflector_client: false,
            local_routes_only: false,
            families: vec!["ipv4-unicast".into(), "ipv6-unicast".into()],
            graceful_restart: None,
            max_prefix: None,
            bfd: None,
            bfd_extra: Vec::new(),
            add_path: None,
        }
    }
    pub fn local_address(mut self, a: &str) -> Self {
        self.local_address = Some(a.into());
        self
    }
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.into());
        self
    }
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }
    pub fn hold_time(mut self, s: u16) -> Self {
        self.hold_time = Some(s);
        self
    }
    pub fn keepalive(mut self, s: u16) -> Self {
        self.keepalive = Some(s);
        self
    }
    pub fn ttl_security(mut self, hops: u8) -> Self {
        self.ttl_security = Some(hops);
        self
    }
    pub fn next_hop(mut self, mode: &str) -> Self {
        self.next_hop = Some(mode.into());
        self
    }
    pub fn rr_client(mut self) -> Self {
        self.route_reflector_client = true;
        self
    }
    pub fn local_routes_only(mut self) -> Self {
        self.local_routes_only = true;
        self
    }
    pub fn families(mut self, f: &[&str]) -> Self {
        self.families = f.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn graceful_restart(mut self, restart_time: u32) -> Self {
        self.graceful_restart = Some(restart_time);
        self
    }
    pub fn bfd(mut self, min_rx_ms: u32, min_tx_ms: u32, multiplier: u8) -> Self {
        self.bfd = Some((min_rx_ms, min_tx_ms, multiplier));
        self
    }
    /// Multi-hop BFD (RFC 5883, UDP 4784), with [`Peer::bfd`].
    pub fn bfd_multihop(mut self) -> Self {
        self.bfd_extra.push("multihop = true".into());
        self
    }
    /// BFD authentication (RFC 5880 §6.7): `kind` as petreld.toml names it,
    /// the key in `secret_file`. With [`Peer::bfd`].
    pub fn bfd_auth(mut self, kind: &str, key_id: u8, secret_file: &std::path::Path) -> Self {
        self.bfd_extra.push(format!(
            "auth = {{ type = {kind:?}, key_id = {key_id}, secret_file = {:?} }}",
            secret_file.to_string_lossy()
        ));
        self
    }
    pub fn max_prefix(mut self, limit: u32, action: &str, restart_after: u32) -> Self {
        self.max_prefix = Some((limit, action.into(), restart_after));
        self
    }
    /// ADD-PATH (RFC 7911): send `send` ("best", "ecmp", "all") paths,
    /// take several paths when `receive`.
    pub fn add_path(mut self, send: Option<&str>, receive: bool) -> Self {
        self.add_path = Some((send.map(str::to_string), receive));
        self
    }
}

/// The whole petreld config.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub router_id: String,
    pub asn: u32,
    /// Filled in by [`Petreld::start`] when empty.
    pub socket: String,
    pub listen: Vec<String>,
    pub cluster_id: Option<String>,
    /// `bgp.max_paths` (ECMP).
    pub max_paths: Option<usize>,
    pub graceful_restart: Option<u32>,
    /// `[bgp] fast_external_failover` when set (petreld's default: on).
    pub fast_external_failover: Option<bool>,
    pub peers: Vec<Peer>,
    /// (prefix, communities, large communities)
    pub originate: Vec<(String, Vec<String>, Vec<String>)>,
    /// petreld's log filter, `PETREL_LOG` (not part of the TOML); default `info`.
    pub log_filter: String,
    /// `node.addresses` (CIDR), registered in the datastore; none: unset.
    pub addresses: Vec<String>,
    /// `[datastore] etcd_endpoints`; none: no `[datastore]` section.
    pub etcd_endpoints: Vec<String>,
    /// `[fib] route_mtu`.
    pub route_mtu: Option<u32>,
    /// Appended verbatim (further tables).
    pub extra: String,
}

impl Config {
    pub fn new(router_id: &str, asn: u32) -> Config {
        Config {
            name: format!("petrel-{router_id}"),
            router_id: router_id.into(),
            asn,
            socket: String::new(),
            listen: Vec::new(),
            cluster_id: None,
            max_paths: None,
            graceful_restart: None,
            fast_external_failover: None,
            peers: Vec::new(),
            originate: Vec::new(),
            log_filter: "info".into(),
            addresses: Vec::new(),
            etcd_endpoints: Vec::new(),
            route_mtu: None,
            extra: String::new(),
        }
    }
    /// Listen on `ADDR:179` (IPv6 addresses in brackets).
    pub fn listen(&mut self, addr: &str) -> &mut Self {
        self.listen.push(if addr.contains(':') {
            format!("[{addr}]:179")
        } else {
            format!("{addr}:179")
        });
        self
    }
    pub fn peer(&mut self, p: Peer) -> &mut Self {
        self.peers.push(p);
        self
    }
    pub fn originate(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> &mut Self {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        self.originate
            .push((prefix.into(), v(communities), v(large)));
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let mut c = String::new();
        let _ = writeln!(
            c,
            "[node]\nname = {}\nrouter_id = {}\nasn = {}",
            q(&self.name),
            q(&self.router_id),
            self.asn,
        );
        if !self.addresses.is_empty() {
            let _ = writeln!(c, "addresses = {}", list(&self.addresses));
        }
        let _ = writeln!(
            c,
            "\n[control]\nsocket = {}\n\n[bgp]\nlisten = {}",
            q(&self.socket),
            list(&self.listen)
        );
        if let Some(id) = &self.cluster_id {
            let _ = writeln!(c, "cluster_id = {}", q(id));
        }
        if let Some(n) = self.max_paths {
            let _ = writeln!(c, "max_paths = {n}");
        }
        if let Some(t) = self.graceful_restart {
            let _ = writeln!(c, "graceful_restart = {{ restart_time = {t} }}");
        }
        if let Some(on) = self.fast_external_failover {
            let _ = writeln!(c, "fast_external_failover = {on}");
        }
        for p in &self.peers {
            let _ = writeln!(
                c,
                "\n[[bgp.peers]]\naddress = {}\nasn = {}",
                q(&p.address),
                p.asn
            );
            if let Some(x) = p.port {
                let _ = writeln!(c, "port = {x}");
            }
            if let Some(x) = &p.local_address {
                let _ = writeln!(c, "local_address = {}", q(x));
            }
            if let Some(x) = &p.password {
                let _ = writeln!(c, "password = {}", q(x));
            }
            if p.passive {
                c += "passive = true\n";
            }
            if let Some(x) = p.hold_time {
                let _ = writeln!(c, "hold_time = {x}");
            }
            if let Some(x) = p.keepalive {
                let _ = writeln!(c, "keepalive = {x}");
            }
            if let Some(x) = p.ttl_security {
                let _ = writeln!(c, "ttl_security = {x}");
            }
            if let Some(x) = &p.next_hop {
                let _ = writeln!(c, "next_hop = {}", q(x));
            }
            if p.route_reflector_client {
                c += "route_reflector_client = true\n";
            }
            if p.local_routes_only {
                c += "local_routes_only = true\n";
            }
            let _ = writeln!(c, "families = {}", list(&p.families));
            if let Some(t) = p.graceful_restart {
                let _ = writeln!(c, "graceful_restart = {{ restart_time = {t} }}");
            }
            if let Some((rx, tx, m)) = p.bfd {
                let extra: String = p.bfd_extra.iter().map(|e| format!(", {e}")).collect();
                let _ = writeln!(
                    c,
                    "bfd = {{ min_rx_ms = {rx}, min_tx_ms = {tx}, multiplier = {m}{extra} }}"
                );
            }
            if let Some((send, receive)) = &p.add_path {
                let send = send
                    .as_ref()
                    .map(|m| format!("send = {}, ", q(m)))
                    .unwrap_or_default();
                let _ = writeln!(c, "add_path = {{ {send}receive = {receive} }}");
            }
            if let Some((l, a, r)) = &p.max_prefix {
                let _ = writeln!(
                    c,
                    "max_prefix = {{ limit = {l}, action = {}, restart_after = {r} }}",
                    q(a)
                );
            }
        }
        for (p, comms, large) in &self.originate {
            let _ = writeln!(c, "\n[[bgp.originate]]\nprefix = {}", q(p));
            if !comms.is_empty() {
                let _ = writeln!(c, "communities = {}", list(comms));
            }
            if !large.is_empty() {
                let _ = writeln!(c, "large_communities = {}", list(large));
            }
        }
        if let Some(m) = self.route_mtu {
            let _ = writeln!(c, "\n[fib]\nroute_mtu = {m}");
        }
        if !self.etcd_endpoints.is_empty() {
            let _ = writeln!(
                c,
                "\n[datastore]\netcd_endpoints = {}",
                list(&self.etcd_endpoints)
            );
        }
        c + &self.extra
    }
}

/// One entry of `show peers --json`.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    pub address: String,
    pub asn: u32,
    pub state: String,
    pub uptime_seconds: u64,
    pub received: u64,
    pub accepted: u64,
    pub advertised: u64,
    /// Why the session last went down, if it did.
    pub last_error: Option<String>,
}

/// A running petreld.
pub struct Petreld {
    ns: Netns,
    dir: PathBuf,
    config: Config,
    daemon: Option<Daemon>,
}

impl Petreld {
    /// Writes `config` (socket in the lab folder) and starts petreld in
    /// `ns`; returns once petrelctl answers.
    pub fn start(lab: &Lab, ns: &Netns, config: &Config) -> Result<Petreld> {
        let dir = lab.subdir(&format!("petreld-{}", ns.name()))?;
        let mut config = config.clone();
        if config.socket.is_empty() {
            config.socket = dir.join("petreld.sock").to_string_lossy().into_owned();
        }
        std::fs::write(dir.join("petreld.toml"), config.render())?;
        let mut p = Petreld {
            ns: ns.clone(),
            dir,
            config,
            daemon: None,
        };
        p.launch(lab)?;
        Ok(p)
    }

    fn launch(&mut self, lab: &Lab) -> Result<()> {
        let bin = crate::bin("petreld")?;
        let conf = self.dir.join("petreld.toml");
        let _ = std::fs::remove_file(&self.config.socket);
        let d = Daemon::spawn(
            lab,
            &self.ns,
            "petreld",
            &self.dir.join("petreld.log"),
            &bin.to_string_lossy(),
            &["--config", &conf.to_string_lossy()],
            &[("PETREL_LOG", &self.config.log_filter)],
        )?;
        wait_until("petrelctl to answer", &[&d], || {
            Ok(self.peers().ok().map(drop))
        })?;
        self.daemon = Some(d);
        Ok(())
    }

    /// The config it runs with.
    /// The namespace petreld runs in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("petreld was started")
    }

    /// The process, unless it was killed or stopped.
    pub fn running(&self) -> Option<&Daemon> {
        self.daemon.as_ref()
    }

    /// Runs `petrelctl --socket S args --json` and parses the answer.
    pub fn ctl_json(&self, args: &[&str]) -> Result<Value> {
        let bin = crate::bin("petrelctl")?;
        let mut a = vec!["--socket", &self.config.socket];
        a.extend_from_slice(args);
        a.push("--json");
        let out = super::netns::run(&bin.to_string_lossy(), &a)?;
        serde_json::from_str(&out).with_context(|| format!("petrelctl {}: {out}", a.join(" ")))
    }

    /// Runs `petrelctl --socket S args` (a command without JSON output,
    /// e.g. `peer disable ADDR`) and returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let bin = crate::bin("petrelctl")?;
        let mut a = vec!["--socket", &self.config.socket];
        a.extend_from_slice(args);
        super::netns::run(&bin.to_string_lossy(), &a)
    }

    /// `show peers`.
    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        let v = self.ctl_json(&["show", "peers"])?;
        let n = |p: &Value, k: &str| p[k].as_u64().unwrap_or(0);
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|p| PeerStatus {
                address: p["address"].as_str().unwrap_or_default().into(),
                asn: n(p, "asn") as u32,
                state: p["state"].as_str().unwrap_or_default().into(),
                uptime_seconds: n(p, "uptime_seconds"),
                received: n(p, "received"),
                accepted: n(p, "accepted"),
                advertised: n(p, "advertised"),
                last_error: p["last_error"].as_str().map(str::to_string),
            })
            .collect())
    }

    /// `show bfd`: one JSON object per session (control.rs `BfdRow`).
    pub fn bfd(&self) -> Result<Vec<Value>> {
        let v = self.ctl_json(&["show", "bfd"])?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The BFD session with `peer`.
    pub fn bfd_session(&self, peer: &str) -> Result<Value> {
        self.bfd()?
            .into_iter()
            .find(|s| s["peer"] == peer)
            .with_context(|| format!("petreld has no BFD session with {peer}"))
    }

    /// One peer's status.
    pub fn peer(&self, addr: &str) -> Result<PeerStatus> {
        self.peers()?
            .into_iter()
            .find(|p| p.address == addr)
            .with_context(|| format!("petreld has no peer {addr}"))
    }

    /// `show routes` (every path, `best` marks the chosen one).
    pub fn routes(&self) -> Result<Vec<Route>> {
        let v = self.ctl_json(&["show", "routes"])?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(parse_route)
            .collect())
    }

    /// Paths learned from `peer`.
    pub fn received(&self, peer: &str) -> Result<Vec<Route>> {
        let mut r = self.routes()?;
        r.retain(|r| r.peer.as_deref() == Some(peer));
        Ok(r)
    }

    /// petreld's Prometheus text, from its `[metrics]` address (the
    /// default 127.0.0.1:9179 inside its namespace).
    pub fn metrics_text(&self) -> Result<String> {
        super::metrics::scrape(&self.ns, "127.0.0.1:9179")
    }

    /// One sample of petreld's metrics, by its name with labels exactly as
    /// rendered (`petrel_cluster_full_syncs_total`,
    /// `petrel_datastore_read_bytes_total{records="blocks",via="watch"}`).
    pub fn metric(&self, sample: &str) -> Result<f64> {
        super::metrics::sample(&self.metrics_text()?, sample)
            .with_context(|| format!("no sample {sample} in petreld's metrics"))
    }

    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    /// SIGKILL: no NOTIFICATION, no withdrawal.
    pub fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill9();
        }
    }

    /// Writes `config` (keeping the socket) and sends SIGHUP: petreld
    /// reloads it.
    pub fn reload(&mut self, config: &Config) -> Result<()> {
        let mut config = config.clone();
        config.socket = self.config.socket.clone();
        std::fs::write(self.dir.join("petreld.toml"), config.render())?;
        self.config = config;
        super::netns::kill(self.daemon().pid(), libc::SIGHUP);
        Ok(())
    }

    /// Starts again with the same config.
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        self.stop()?;
        self.launch(lab)
    }
}

/// One entry of `show routes --json`.
pub fn parse_route(v: &Value) -> Route {
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let nh = v["next_hop"].as_str().unwrap_or_default().to_string();
    Route {
        prefix: v["prefix"].as_str().unwrap_or_default().into(),
        next_hops: if nh.is_empty() {
            vec![]
        } else {
            vec![nh.clone()]
        },
        next_hop: nh,
        as_path: v["as_path"].as_str().unwrap_or_default().into(),
        origin: v["origin"].as_str().unwrap_or_default().into(),
        local_pref: v["local_pref"].as_u64().map(|x| x as u32),
        med: v["med"].as_u64().map(|x| x as u32),
        communities: strs(&v["communities"]),
        large_communities: strs(&v["large_communities"]),
        originator_id: v["originator_id"].as_str().map(str::to_string),
        cluster_list: strs(&v["cluster_list"]),
        stale: v["stale"].as_bool().unwrap_or(false),
        best: v["best"].as_bool().unwrap_or(false),
        peer: v["peer"].as_str().map(str::to_string),
        since: None,
        unknown: Vec::new(),
    }
}
