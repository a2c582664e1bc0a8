//! FRR 8.4: zebra and bgpd in the foreground, each lab's own run folder
//! owned by user `frr`; `vtysh -d bgpd ... json` queries.
//!
//! Traps: vtysh exits 0 even when it reached no daemon (the driver checks
//! the output); eBGP needs `no bgp ebgp-requires-policy`; `network X` needs
//! `no bgp network import-check`; the first connect waits `timers connect`
//! (set to 1 s here).

use super::{wait_until, Daemon, Lab, Netns, Route};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One `neighbor` of `router bgp`.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub address: String,
    pub asn: u32,
    /// For a link-local neighbour: `neighbor ADDR interface IF`.
    pub interface: Option<String>,
    pub update_source: Option<String>,
    pub passive: bool,
    pub password: Option<String>,
    /// (keepalive, hold)
    pub timers: Option<(u16, u16)>,
    pub rr_client: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub next_hop_self: bool,
    /// RFC 8950: IPv4 NLRI with an IPv6 next hop.
    pub extended_nexthop: bool,
    /// Extra lines for `router bgp`.
    pub extra: String,
    /// `neighbor ADDR bfd`: bfdd's session (default 300 ms × 3) protects it.
    pub bfd: bool,
}

impl Neighbor {
    pub fn new(address: &str, asn: u32) -> Neighbor {
        Neighbor {
            address: address.into(),
            asn,
            interface: None,
            update_source: None,
            passive: false,
            password: None,
            timers: None,
            rr_client: false,
            ipv4: true,
            ipv6: true,
            next_hop_self: false,
            extended_nexthop: false,
            extra: String::new(),
            bfd: false,
        }
    }
    pub fn bfd(mut self) -> Self {
        self.bfd = true;
        self
    }
    pub fn interface(mut self, ifname: &str) -> Self {
        self.interface = Some(ifname.into());
        self
    }
    pub fn update_source(mut self, addr: &str) -> Self {
        self.update_source = Some(addr.into());
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
    pub fn timers(mut self, keepalive: u16, hold: u16) -> Self {
        self.timers = Some((keepalive, hold));
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
    pub fn next_hop_self(mut self) -> Self {
        self.next_hop_self = true;
        self
    }
    pub fn extended_nexthop(mut self) -> Self {
        self.extended_nexthop = true;
        self
    }
}

/// A route FRR originates with `network P route-map ..`.
#[derive(Clone, Debug)]
pub struct Originate {
    pub prefix: String,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
}

/// A whole `bgpd.conf`.
#[derive(Clone, Debug)]
pub struct Config {
    pub router_id: String,
    pub asn: u32,
    pub cluster_id: Option<String>,
    /// `bgp graceful-restart` with this restart time.
    pub graceful_restart: Option<u32>,
    pub originate: Vec<Originate>,
    pub neighbors: Vec<Neighbor>,
    /// Log UPDATEs and neighbour events (to the bgpd log).
    pub debug: bool,
    /// `maximum-paths ibgp N` in both address families (iBGP ECMP).
    pub maximum_paths_ibgp: Option<u32>,
    pub extra: String,
}

impl Config {
    pub fn new(router_id: &str, asn: u32) -> Config {
        Config {
            router_id: router_id.into(),
            asn,
            cluster_id: None,
            graceful_restart: None,
            originate: Vec::new(),
            neighbors: Vec::new(),
            debug: true,
            maximum_paths_ibgp: None,
            extra: String::new(),
        }
    }
    pub fn originate(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> &mut Self {
        self.originate.push(Originate {
            prefix: prefix.into(),
            communities: communities.iter().map(|s| s.to_string()).collect(),
            large_communities: large.iter().map(|s| s.to_string()).collect(),
        });
        self
    }
    pub fn neighbor(&mut self, n: Neighbor) -> &mut Self {
        self.neighbors.push(n);
        self
    }

    /// The configuration text.
    pub fn render(&self) -> String {
        let mut c =
            String::from("frr defaults traditional\nhostname lab-bgpd\nlog stdout informational\n");
        if self.debug {
            c += "debug bgp neighbor-events\ndebug bgp updates\ndebug bgp graceful-restart\n";
        }
        for (i, o) in self.originate.iter().enumerate() {
            let _ = writeln!(c, "route-map ORIG{i} permit 10");
            if !o.communities.is_empty() {
                let _ = writeln!(c, " set community {}", o.communities.join(" "));
            }
            if !o.large_communities.is_empty() {
                let _ = writeln!(c, " set large-community {}", o.large_communities.join(" "));
            }
            c += "!\n";
        }
        let _ = writeln!(c, "router bgp {}", self.asn);
        let _ = writeln!(c, " bgp router-id {}", self.router_id);
        c += " no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n";
        if let Some(id) = &self.cluster_id {
            let _ = writeln!(c, " bgp cluster-id {id}");
        }
        if let Some(t) = self.graceful_restart {
            // preserve-fw-state sets the F bit: without it a helper flushes the
            // stale routes as soon as the session is back (RFC 4724 §4.2).
            // notification: RFC 8538's N bit, as petrel offers it.
            let _ = writeln!(
                c,
                " bgp graceful-restart\n bgp graceful-restart restart-time {t}\n bgp graceful-restart preserve-fw-state\n bgp graceful-restart notification"
            );
        }
        for n in &self.neighbors {
            let a = &n.address;
            let _ = writeln!(c, " neighbor {a} remote-as {}", n.asn);
            if let Some(i) = &n.interface {
                let _ = writeln!(c, " neighbor {a} interface {i}");
            }
            let _ = writeln!(c, " neighbor {a} timers connect 1");
            if let Some(s) = &n.update_source {
                let _ = writeln!(c, " neighbor {a} update-source {s}");
            }
            if n.passive {
                let _ = writeln!(c, " neighbor {a} passive");
            }
            if let Some(pw) = &n.password {
                let _ = writeln!(c, " neighbor {a} password {pw}");
            }
            if let Some((k, h)) = n.timers {
                let _ = writeln!(c, " neighbor {a} timers {k} {h}");
            }
            if n.extended_nexthop {
                let _ = writeln!(c, " neighbor {a} capability extended-nexthop");
            }
            if n.bfd {
                let _ = writeln!(c, " neighbor {a} bfd");
            }
            c += &n.extra;
        }
        for (af, v6) in [("ipv4", false), ("ipv6", true)] {
            let _ = writeln!(c, " address-family {af} unicast");
            if let Some(n) = self.maximum_paths_ibgp {
                let _ = writeln!(c, "  maximum-paths ibgp {n}");
            }
            for (i, o) in self.originate.iter().enumerate() {
                if o.prefix.contains(':') == v6 {
                    let _ = writeln!(c, "  network {} route-map ORIG{i}", o.prefix);
                }
            }
            for n in &self.neighbors {
                if (v6 && !n.ipv6) || (!v6 && !n.ipv4) {
                    continue;
                }
                let a = &n.address;
                let _ = writeln!(
                    c,
                    "  neighbor {a} activate\n  neighbor {a} send-community all"
                );
                if n.rr_client {
                    let _ = writeln!(c, "  neighbor {a} route-reflector-client");
                }
                if n.next_hop_self {
                    let _ = writeln!(c, "  neighbor {a} next-hop-self");
                }
            }
            c += " exit-address-family\n";
        }
        c += &self.extra;
        c
    }
}

/// A running FRR (zebra and bgpd, and bfdd when asked).
pub struct Frr {
    ns: Netns,
    dir: PathBuf,
    zebra: Option<Daemon>,
    bfdd: Option<Daemon>,
    bgpd: Option<Daemon>,
}

impl Frr {
    /// Writes the configs into a fresh folder owned by `frr`, starts zebra
    /// and bgpd in `ns`; returns once vtysh reaches bgpd.
    pub fn start(lab: &Lab, ns: &Netns, bgpd_conf: &str) -> Result<Frr> {
        let dir = lab.subdir(&format!("frr-{}", ns.name()))?;
        std::fs::create_dir_all(dir.join("run"))?;
        std::fs::write(
            dir.join("zebra.conf"),
            "hostname lab-zebra\nlog stdout informational\n",
        )?;
        std::fs::write(dir.join("bgpd.conf"), bgpd_conf)?;
        super::netns::run("chown", &["-R", "frr:frr", &dir.to_string_lossy()])?;
        let mut f = Frr {
            ns: ns.clone(),
            dir,
            zebra: None,
            bfdd: None,
            bgpd: None,
        };
        f.launch(lab, true)?;
        Ok(f)
    }

    /// As [`Frr::start`], with bfdd between zebra and bgpd (bgpd's
    /// `neighbor X bfd` reaches bfdd through zebra). `bfdd_conf` is bfdd's
    /// own configuration (profiles, static peers); empty is fine.
    pub fn start_with_bfdd(lab: &Lab, ns: &Netns, bgpd_conf: &str, bfdd_conf: &str) -> Result<Frr> {
        let dir = lab.subdir(&format!("frr-{}", ns.name()))?;
        std::fs::create_dir_all(dir.join("run"))?;
        std::fs::write(
            dir.join("zebra.conf"),
            "hostname lab-zebra\nlog stdout informational\n",
        )?;
        std::fs::write(
            dir.join("bfdd.conf"),
            format!("hostname lab-bfdd\nlog stdout informational\ndebug bfd peer\ndebug bfd zebra\n{bfdd_conf}"),
        )?;
        std::fs::write(dir.join("bgpd.conf"), bgpd_conf)?;
        super::netns::run("chown", &["-R", "frr:frr", &dir.to_string_lossy()])?;
        let mut f = Frr {
            ns: ns.clone(),
            dir,
            zebra: None,
            bfdd: None,
            bgpd: None,
        };
        let z = f.spawn(lab, "zebra")?;
        let api = f.dir.join("run/zserv.api");
        wait_until("zebra's zserv.api", &[&z], || {
            Ok(api.exists().then_some(()))
        })?;
        f.zebra = Some(z);
        let ctl = f.dir.join("run/bfdd.sock");
        let b = spawn_daemon_with(
            lab,
            &f.ns,
            &f.dir,
            "bfdd",
            &f.dir.join("bfdd.log"),
            &["--bfdctl", &ctl.to_string_lossy()],
        )?;
        wait_until("vtysh to reach bfdd", &[&b], || {
            Ok(f.vtysh_on("bfdd", "show bfd peers json").ok().map(drop))
        })?;
        f.bfdd = Some(b);
        f.launch(lab, false)?;
        Ok(f)
    }

    /// bfdd's daemon, if started.
    pub fn bfdd(&self) -> Option<&Daemon> {
        self.bfdd.as_ref()
    }

    /// bfdd's sessions: `show bfd peers json`.
    pub fn bfd_peers(&self) -> Result<Vec<Value>> {
        let out = self.vtysh_on("bfdd", "show bfd peers json")?;
        let v: Value =
            serde_json::from_str(&out).with_context(|| format!("show bfd peers json: {out}"))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// bfdd's session with `peer` (its `status`: "up", "down", ...).
    pub fn bfd_peer(&self, peer: &str) -> Result<Value> {
        self.bfd_peers()?
            .into_iter()
            .find(|p| p["peer"] == peer)
            .ok_or_else(|| anyhow!("bfdd has no session with {peer}"))
    }

    /// bfdd's log so far.
    pub fn bfdd_log(&self) -> String {
        self.bfdd.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    fn spawn(&self, lab: &Lab, which: &str) -> Result<Daemon> {
        spawn_daemon(
            lab,
            &self.ns,
            &self.dir,
            which,
            &self.dir.join(format!("{which}.log")),
        )
    }

    fn launch(&mut self, lab: &Lab, with_zebra: bool) -> Result<()> {
        if with_zebra {
            let z = self.spawn(lab, "zebra")?;
            let api = self.dir.join("run/zserv.api");
            wait_until("zebra's zserv.api", &[&z], || {
                Ok(api.exists().then_some(()))
            })?;
            self.zebra = Some(z);
        }
        let b = self.spawn(lab, "bgpd")?;
        wait_until("vtysh to reach bgpd", &[&b], || {
            Ok(self.vtysh("show bgp summary json").ok().map(drop))
        })?;
        self.bgpd = Some(b);
        Ok(())
    }

    /// bgpd's daemon.
    pub fn bgpd(&self) -> &Daemon {
        self.bgpd.as_ref().expect("bgpd was started")
    }

    /// Runs a vtysh command against bgpd; an error when vtysh reached no
    /// daemon or the command was refused.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        self.vtysh_on("bgpd", cmd)
    }

    /// Runs a vtysh command against one of the daemons (`bgpd`, `bfdd`).
    pub fn vtysh_on(&self, daemon: &str, cmd: &str) -> Result<String> {
        let run = self.dir.join("run");
        let out = self.ns.exec(
            "vtysh",
            &[
                "--vty_socket",
                &run.to_string_lossy(),
                "-d",
                daemon,
                "-c",
                cmd,
            ],
        )?;
        if out.trim().is_empty()
            || out.contains("% Unknown command")
            || out.contains("failed to connect")
            || out.contains("is not running")
        {
            bail!("vtysh -c '{cmd}': {out:?}");
        }
        Ok(out)
    }

    /// Runs configuration commands (`configure terminal` is implied), e.g.
    /// `["router bgp 65001", "address-family ipv4 unicast", "no network 10.0.0.0/24"]`.
    pub fn configure(&self, lines: &[&str]) -> Result<()> {
        let run = self.dir.join("run");
        let run = run.to_string_lossy();
        let mut a = vec![
            "--vty_socket",
            &run,
            "-d",
            "bgpd",
            "-c",
            "configure terminal",
        ];
        for l in lines {
            a.extend(["-c", l]);
        }
        let out = self.ns.exec("vtysh", &a)?;
        if out.contains('%') {
            bail!("vtysh configure {lines:?}: {out}");
        }
        Ok(())
    }

    /// Runs a vtysh command answering JSON.
    pub fn json(&self, cmd: &str) -> Result<Value> {
        let out = self.vtysh(cmd)?;
        serde_json::from_str(&out).with_context(|| format!("vtysh -c '{cmd}': {out}"))
    }

    /// `show bgp neighbors ADDR json`, the neighbour's object.
    pub fn neighbor(&self, addr: &str) -> Result<Value> {
        let v = self.json(&format!("show bgp neighbors {addr} json"))?;
        v.get(addr)
            .or_else(|| v.as_object().and_then(|o| o.values().next()))
            .cloned()
            .ok_or_else(|| anyhow!("no neighbor {addr}: {v}"))
    }

    /// The neighbour's `bgpState`.
    pub fn state(&self, addr: &str) -> Result<String> {
        Ok(self.neighbor(addr)?["bgpState"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// A `messageStats` counter of the neighbour (`updatesRecv`,
    /// `routeRefreshRecv`, ...).
    pub fn message_stat(&self, addr: &str, counter: &str) -> Result<u64> {
        self.neighbor(addr)?["messageStats"][counter]
            .as_u64()
            .ok_or_else(|| anyhow!("no messageStats.{counter}"))
    }

    /// Prefixes in the Loc-RIB of `family` ("ipv4" or "ipv6").
    pub fn prefixes(&self, family: &str) -> Result<Vec<String>> {
        let v = self.json(&format!("show bgp {family} unicast json"))?;
        Ok(v["routes"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Every path of every prefix of `family`, with all attributes (one
    /// vtysh call per prefix: meant for small tables).
    pub fn routes(&self, family: &str) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for p in self.prefixes(family)? {
            out.extend(self.route(family, &p)?);
        }
        Ok(out)
    }

    /// The paths of one prefix.
    pub fn route(&self, family: &str, prefix: &str) -> Result<Vec<Route>> {
        let v = self.json(&format!("show bgp {family} unicast {prefix} json"))?;
        Ok(parse_paths(prefix, &v))
    }

    /// Paths learned from `peer` (both families). The table's summary
    /// names each path's peer, so only the prefixes with a path from
    /// `peer` cost a query of their own (a dual-stack lab's polls asked
    /// for every prefix once per peer).
    pub fn received(&self, peer: &str) -> Result<Vec<Route>> {
        let mut r = Vec::new();
        for family in ["ipv4", "ipv6"] {
            let v = self.json(&format!("show bgp {family} unicast json"))?;
            let from_peer = v["routes"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, paths)| {
                    paths
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["peerId"].as_str() == Some(peer))
                });
            for (prefix, _) in from_peer {
                r.extend(self.route(family, prefix)?);
            }
        }
        r.retain(|r| r.peer.as_deref() == Some(peer));
        Ok(r)
    }

    /// bgpd's log so far.
    pub fn log(&self) -> String {
        self.bgpd.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    /// Stops bgpd (SIGTERM: it sends NOTIFICATIONs), bfdd and zebra.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(b) = self.bgpd.take() {
            b.stop()?;
        }
        if let Some(b) = self.bfdd.take() {
            b.stop()?;
        }
        if let Some(z) = self.zebra.take() {
            z.stop()?;
        }
        Ok(())
    }

    /// SIGKILL bgpd only (zebra keeps running, as after a bgpd crash).
    pub fn kill9(&mut self) {
        if let Some(b) = self.bgpd.take() {
            b.kill9();
        }
    }

    /// Starts bgpd again (and zebra if it was stopped).
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        if let Some(b) = self.bgpd.take() {
            b.stop()?;
        }
        let zebra = !matches!(self.zebra.as_ref(), Some(z) if z.alive());
        self.launch(lab, zebra)
    }
}

/// Parses `show bgp <afi> unicast PREFIX json`.
pub fn parse_paths(prefix: &str, v: &Value) -> Vec<Route> {
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for p in v["paths"].as_array().into_iter().flatten() {
        let next_hops: Vec<String> = p["nexthops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["ip"].as_str().map(str::to_string))
            .collect();
        let peer = p["peer"]["peerId"].as_str().map(str::to_string);
        out.push(Route {
            prefix: prefix.to_string(),
            next_hop: next_hops.first().cloned().unwrap_or_default(),
            next_hops,
            // FRR prints an empty AS_PATH as "Local".
            as_path: match p["aspath"]["string"].as_str().unwrap_or_default() {
                "Local" => String::new(),
                s => s.replace(',', " "),
            },
            origin: p["origin"].as_str().unwrap_or_default().to_uppercase(),
            local_pref: p["locPrf"].as_u64().map(|x| x as u32),
            med: p["metric"].as_u64().map(|x| x as u32),
            communities: strs(&p["community"]["list"]),
            large_communities: strs(&p["largeCommunity"]["list"]),
            originator_id: p["originatorId"].as_str().map(str::to_string),
            cluster_list: strs(&p["clusterList"]["list"]),
            stale: p["stale"].as_bool().unwrap_or(false),
            best: p["bestpath"]["overall"].as_bool().unwrap_or(false),
            peer: peer.filter(|p| p != "(unspec)" && p != "0.0.0.0"),
            since: p["lastUpdate"]["epoch"].as_u64().map(|e| e.to_string()),
            unknown: Vec::new(),
        });
    }
    out
}

/// Starts FRR's `which` (`zebra` or `bgpd`) in `ns` with its config, pid
/// file, zserv socket and vty socket all under `dir` (`dir/which.conf`,
/// `dir/run/`), so that several FRRs on one machine never meet.
pub fn spawn_daemon(lab: &Lab, ns: &Netns, dir: &Path, which: &str, log: &Path) -> Result<Daemon> {
    spawn_daemon_with(lab, ns, dir, which, log, &[])
}

/// [`spawn_daemon`] with further arguments (bfdd's `--bfdctl`).
pub fn spawn_daemon_with(
    lab: &Lab,
    ns: &Netns,
    dir: &Path,
    which: &str,
    log: &Path,
    extra: &[&str],
) -> Result<Daemon> {
    let run = dir.join("run");
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let (conf, pid, zserv, vty) = (
        s(dir.join(format!("{which}.conf"))),
        s(run.join(format!("{which}.pid"))),
        s(run.join("zserv.api")),
        s(run.clone()),
    );
    let mut args = vec![
        "-f",
        &conf,
        "-i",
        &pid,
        "-z",
        &zserv,
        "--vty_socket",
        &vty,
        "-P",
        "0",
        "-u",
        "frr",
        "-g",
        "frr",
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(
        lab,
        ns,
        which,
        log,
        &format!("/usr/lib/frr/{which}"),
        &args,
        &[],
    )
}
