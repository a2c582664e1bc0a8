//! GoBGP 3.10: gobgpd from a generated TOML, the `gobgp -j` CLI (run inside
//! the same namespace: its gRPC API listens on the namespace's loopback).
//!
//! Traps: `connect-retry` defaults to 120 s after a failed first dial (set
//! to 1 here); locally added routes default to ORIGIN INCOMPLETE (the
//! driver passes `origin igp`); Go marshals unknown attributes' values as
//! base64.

use super::{wait_until, Daemon, Lab, Netns, Route};
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::PathBuf;

/// One `[[neighbors]]`.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub address: String,
    pub asn: u32,
    pub local_address: Option<String>,
    pub passive: bool,
    pub password: Option<String>,
    pub hold_time: Option<u16>,
    pub graceful_restart: Option<u32>,
    pub rr_client: bool,
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Neighbor {
    pub fn new(address: &str, asn: u32) -> Neighbor {
        Neighbor {
            address: address.into(),
            asn,
            local_address: None,
            passive: false,
            password: None,
            hold_time: None,
            graceful_restart: None,
            rr_client: false,
            ipv4: true,
            ipv6: true,
        }
    }
    pub fn local_address(mut self, a: &str) -> Self {
        self.local_address = Some(a.into());
        self
    }
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.into());
        self
    }
    pub fn hold_time(mut self, s: u16) -> Self {
        self.hold_time = Some(s);
        self
    }
    pub fn graceful_restart(mut self, restart_time: u32) -> Self {
        self.graceful_restart = Some(restart_time);
        self
    }
    pub fn rr_client(mut self) -> Self {
        self.rr_client = true;
        self
    }
    pub fn families(mut self, ipv4: bool, ipv6: bool) -> Self {
        self.ipv4 = ipv4;
        self.ipv6 = ipv6;
        self
    }
}

/// `gobgpd.toml` and the routes to originate after start.
#[derive(Clone, Debug)]
pub struct Config {
    pub router_id: String,
    pub asn: u32,
    pub neighbors: Vec<Neighbor>,
    /// (prefix, communities, large communities), added through the CLI.
    pub originate: Vec<(String, Vec<String>, Vec<String>)>,
    pub extra: String,
}

impl Config {
    pub fn new(router_id: &str, asn: u32) -> Config {
        Config {
            router_id: router_id.into(),
            asn,
            neighbors: Vec::new(),
            originate: Vec::new(),
            extra: String::new(),
        }
    }
    pub fn neighbor(&mut self, n: Neighbor) -> &mut Self {
        self.neighbors.push(n);
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
        let mut c = String::new();
        let _ = writeln!(
            c,
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179\n",
            self.asn, self.router_id
        );
        for n in &self.neighbors {
            let _ = writeln!(
                c,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
                n.address, n.asn
            );
            if let Some(pw) = &n.password {
                let _ = writeln!(c, "    auth-password = \"{pw}\"");
            }
            let _ = writeln!(c, "  [neighbors.timers.config]\n    connect-retry = 1\n    idle-hold-time-after-reset = 1");
            if let Some(h) = n.hold_time {
                let _ = writeln!(
                    c,
                    "    hold-time = {h}\n    keepalive-interval = {}",
                    (h / 3).max(1)
                );
            }
            let _ = writeln!(
                c,
                "  [neighbors.transport.config]\n    passive-mode = {}",
                n.passive
            );
            if let Some(a) = &n.local_address {
                let _ = writeln!(c, "    local-address = \"{a}\"");
            }
            if n.rr_client {
                let _ = writeln!(
                    c,
                    "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{}\"",
                    self.router_id
                );
            }
            if let Some(t) = n.graceful_restart {
                let _ = writeln!(
                    c,
                    "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {t}"
                );
            }
            for (af, on) in [("ipv4-unicast", n.ipv4), ("ipv6-unicast", n.ipv6)] {
                if !on {
                    continue;
                }
                let _ = writeln!(
                    c,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{af}\""
                );
                if n.graceful_restart.is_some() {
                    c += "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n";
                }
            }
        }
        c += &self.extra;
        c
    }
}

/// A running gobgpd.
pub struct Gobgp {
    ns: Netns,
    dir: PathBuf,
    config: Config,
    daemon: Option<Daemon>,
}

impl Gobgp {
    /// Starts gobgpd with `config` in `ns`, waits for its API and adds the
    /// originated routes.
    pub fn start(lab: &Lab, ns: &Netns, config: &Config) -> Result<Gobgp> {
        let dir = lab.subdir(&format!("gobgp-{}", ns.name()))?;
        std::fs::write(dir.join("gobgpd.toml"), config.render())?;
        let mut g = Gobgp {
            ns: ns.clone(),
            dir,
            config: config.clone(),
            daemon: None,
        };
        g.launch(lab, false)?;
        Ok(g)
    }

    fn launch(&mut self, lab: &Lab, graceful: bool) -> Result<()> {
        let conf = self.dir.join("gobgpd.toml");
        let conf = conf.to_string_lossy();
        let mut args = vec![
            "-f",
            &conf,
            "-p",
            "--api-hosts",
            "127.0.0.1:50051",
            "--pprof-disable",
        ];
        if graceful {
            args.push("-r");
        }
        let d = Daemon::spawn(
            lab,
            &self.ns,
            "gobgpd",
            &self.dir.join("gobgpd.log"),
            "gobgpd",
            &args,
            &[],
        )?;
        wait_until("gobgp API to answer", &[&d], || {
            Ok(self.cli(&["global"]).ok().map(drop))
        })?;
        self.daemon = Some(d);
        for (p, comms, large) in self.config.originate.clone() {
            self.add_route(&p, &comms, &large)?;
        }
        Ok(())
    }

    /// The daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("gobgpd was started")
    }

    /// Runs the `gobgp` CLI inside the namespace.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.ns.exec("gobgp", args)
    }

    /// Runs `gobgp -j args` and parses the answer.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        let out = self.cli(&a)?;
        serde_json::from_str(&out).with_context(|| format!("gobgp {}: {out}", a.join(" ")))
    }

    /// Originates a route (ORIGIN IGP).
    pub fn add_route(&self, prefix: &str, communities: &[String], large: &[String]) -> Result<()> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let mut a = vec!["global", "rib", "add", "-a", af, prefix, "origin", "igp"];
        let c = communities.join(",");
        let l = large.join(",");
        if !c.is_empty() {
            a.extend(["community", &c]);
        }
        if !l.is_empty() {
            a.extend(["large-community", &l]);
        }
        self.cli(&a).map(drop)
    }

    /// Withdraws an originated route.
    pub fn del_route(&self, prefix: &str) -> Result<()> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.cli(&["global", "rib", "del", "-a", af, prefix])
            .map(drop)
    }

    /// `gobgp -j neighbor ADDR`.
    pub fn neighbor(&self, addr: &str) -> Result<Value> {
        self.json(&["neighbor", addr])
    }

    /// The session state in lower case (`established`, `active`, ...).
    pub fn state(&self, addr: &str) -> Result<String> {
        let v = self.neighbor(addr)?;
        let s = &v["state"]["session_state"];
        Ok(match s.as_u64() {
            Some(n) => [
                "unknown",
                "idle",
                "connect",
                "active",
                "opensent",
                "openconfirm",
                "established",
            ]
            .get(n as usize)
            .unwrap_or(&"unknown")
            .to_string(),
            None => s.as_str().unwrap_or("unknown").to_lowercase(),
        })
    }

    /// A received-message counter (`update`, `refresh`, `notification`...).
    pub fn received_messages(&self, addr: &str, kind: &str) -> Result<u64> {
        let v = self.neighbor(addr)?;
        Ok(v["state"]["messages"]["received"][kind]
            .as_u64()
            .unwrap_or(0))
    }

    /// All paths of the global RIB, both families.
    pub fn routes(&self) -> Result<Vec<Route>> {
        let mut out = parse_rib(&self.json(&["global", "rib", "-a", "ipv4"])?);
        out.extend(parse_rib(&self.json(&["global", "rib", "-a", "ipv6"])?));
        Ok(out)
    }

    /// Paths learned from `peer`.
    pub fn received(&self, peer: &str) -> Result<Vec<Route>> {
        let mut r = self.routes()?;
        r.retain(|r| r.peer.as_deref() == Some(peer));
        Ok(r)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    pub fn stop(&mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill9();
        }
    }

    /// Starts again (same config, originated routes re-added).
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        self.stop()?;
        self.launch(lab, false)
    }

    /// Starts again as a restarting speaker (`gobgpd -r`).
    pub fn restart_graceful(&mut self, lab: &Lab) -> Result<()> {
        self.stop()?;
        self.launch(lab, true)
    }

    /// `gobgp neighbor ADDR softresetin`: re-runs import policy over the
    /// Adj-RIB-In GoBGP keeps; it sends no ROUTE-REFRESH.
    pub fn soft_reset_in(&self, addr: &str) -> Result<()> {
        for af in ["ipv4", "ipv6"] {
            self.cli(&["neighbor", addr, "softresetin", "-a", af])?;
        }
        Ok(())
    }
}

/// Parses `gobgp -j global rib` (or `neighbor X adj-in`): `{prefix: [path]}`.
pub fn parse_rib(v: &Value) -> Vec<Route> {
    let mut out = Vec::new();
    let Some(obj) = v.as_object() else {
        return out;
    };
    for (prefix, paths) in obj {
        for p in paths.as_array().into_iter().flatten() {
            let mut r = Route {
                prefix: prefix.clone(),
                best: p["best"].as_bool().unwrap_or(false),
                stale: p["stale"].as_bool().unwrap_or(false),
                peer: p["neighbor-ip"].as_str().map(str::to_string),
                since: p["age"].as_u64().map(|a| a.to_string()),
                ..Route::default()
            };
            for a in p["attrs"].as_array().into_iter().flatten() {
                apply_attr(&mut r, a);
            }
            out.push(r);
        }
    }
    out
}

fn apply_attr(r: &mut Route, a: &Value) {
    let code = a["type"].as_u64().unwrap_or(0);
    match code {
        1 => {
            r.origin = ["IGP", "EGP", "INCOMPLETE"]
                .get(a["value"].as_u64().unwrap_or(9) as usize)
                .unwrap_or(&"?")
                .to_string()
        }
        2 => {
            let mut parts = Vec::new();
            for seg in a["as_paths"].as_array().into_iter().flatten() {
                let asns: Vec<String> = seg["asns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n.to_string())
                    .collect();
                if seg["segment_type"].as_u64() == Some(1) {
                    parts.push(format!("{{{}}}", asns.join(" ")));
                } else {
                    parts.push(asns.join(" "));
                }
            }
            r.as_path = parts.join(" ");
        }
        3 => r.next_hop = a["nexthop"].as_str().unwrap_or_default().to_string(),
        4 => r.med = a["metric"].as_u64().map(|x| x as u32),
        5 => r.local_pref = a["value"].as_u64().map(|x| x as u32),
        8 => {
            r.communities = a["communities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_u64())
                .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                .collect()
        }
        9 => r.originator_id = a["value"].as_str().map(str::to_string),
        10 => {
            r.cluster_list = a["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        }
        14 => {
            if let Some(nh) = a["nexthop"].as_str() {
                r.next_hop = nh.to_string();
            }
        }
        32 => {
            r.large_communities = a["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}:{}:{}", c["ASN"], c["LocalData1"], c["LocalData2"]))
                .collect()
        }
        6 | 7 | 16 | 17 | 18 => {}
        _ => {
            let value = match &a["value"] {
                Value::String(s) => s.clone(),
                Value::Array(b) => b
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| format!("{x:02x}"))
                    .collect(),
                other => other.to_string(),
            };
            r.unknown
                .push((code as u8, a["flags"].as_u64().unwrap_or(0) as u8, value));
        }
    }
    if !r.next_hop.is_empty() && r.next_hops.is_empty() {
        r.next_hops = vec![r.next_hop.clone()];
    }
}
