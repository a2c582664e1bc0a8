//! BIRD 2: configuration from a small template, `birdc` queries parsed into
//! [`Route`]s.
//!
//! BIRD waits `connect delay time` (5 s by default) before it first dials,
//! `connect retry time` (120 s) between attempts and `error wait time`
//! (60 s and more) after an error: the template sets all three to a second
//! or two so sessions come up as soon as the other side listens.

use super::{wait_until, Daemon, Lab, Netns, Route};
use anyhow::{anyhow, bail, Result};
use std::fmt::Write;
use std::path::PathBuf;

/// One `protocol bgp` section.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub neighbor: String,
    pub asn: u32,
    /// `local ADDR as ..` (the source address).
    pub source: Option<String>,
    /// Interface, needed for a link-local neighbour.
    pub interface: Option<String>,
    pub passive: bool,
    pub password: Option<String>,
    pub hold_time: Option<u16>,
    /// `graceful restart on` with this restart time.
    pub graceful_restart: Option<u32>,
    pub rr_client: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub next_hop_self: bool,
    /// RFC 8950 on the IPv4 channel.
    pub extended_next_hop: bool,
    /// Export filter of both channels.
    pub export: String,
    /// `add paths` of both channels (RFC 7911): "rx", "tx" or "on".
    pub add_paths: Option<String>,
    /// Extra lines inside the protocol.
    pub extra: String,
}

impl Peer {
    /// A peer exporting this BIRD's own static routes, IPv4 and IPv6.
    pub fn new(name: &str, neighbor: &str, asn: u32) -> Peer {
        Peer {
            name: name.into(),
            neighbor: neighbor.into(),
            asn,
            source: None,
            interface: None,
            passive: false,
            password: None,
            hold_time: None,
            graceful_restart: None,
            rr_client: false,
            ipv4: true,
            ipv6: true,
            next_hop_self: false,
            extended_next_hop: false,
            export: "where proto ~ \"static_*\"".into(),
            add_paths: None,
            extra: String::new(),
        }
    }
    pub fn source(mut self, addr: &str) -> Self {
        self.source = Some(addr.into());
        self
    }
    pub fn interface(mut self, ifname: &str) -> Self {
        self.interface = Some(ifname.into());
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
    pub fn next_hop_self(mut self) -> Self {
        self.next_hop_self = true;
        self
    }
    pub fn extended_next_hop(mut self) -> Self {
        self.extended_next_hop = true;
        self
    }
    /// ADD-PATH on both channels: `"rx"` takes several paths per prefix.
    pub fn add_paths(mut self, mode: &str) -> Self {
        self.add_paths = Some(mode.into());
        self
    }
    /// Export filter, e.g. `"all"` or `"where net ~ [10.0.0.0/8+]"`.
    pub fn export(mut self, filter: &str) -> Self {
        self.export = filter.into();
        self
    }
}

/// A route this BIRD originates (static blackhole with BGP attributes).
#[derive(Clone, Debug)]
pub struct Originate {
    pub prefix: String,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
}

/// A whole `bird.conf`.
#[derive(Clone, Debug)]
pub struct Config {
    pub router_id: String,
    pub asn: u32,
    /// Makes BIRD a route reflector for peers marked `rr_client`.
    pub cluster_id: Option<String>,
    pub originate: Vec<Originate>,
    pub peers: Vec<Peer>,
    /// Export BGP routes to the namespace's kernel FIB.
    pub kernel: bool,
    /// Extra top-level lines.
    pub extra: String,
}

impl Config {
    pub fn new(router_id: &str, asn: u32) -> Config {
        Config {
            router_id: router_id.into(),
            asn,
            cluster_id: None,
            originate: Vec::new(),
            peers: Vec::new(),
            kernel: false,
            extra: String::new(),
        }
    }

    /// Originates `prefix` with communities `"a:b"` and large `"a:b:c"`.
    pub fn originate(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> &mut Self {
        self.originate.push(Originate {
            prefix: prefix.into(),
            communities: communities.iter().map(|s| s.to_string()).collect(),
            large_communities: large.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    pub fn peer(&mut self, p: Peer) -> &mut Self {
        self.peers.push(p);
        self
    }

    /// The configuration text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "log stderr all;\nrouter id {};", self.router_id);
        c += "protocol device { scan time 10; }\n";
        c += "protocol direct { ipv4; ipv6; }\n";
        if self.kernel {
            for af in ["ipv4", "ipv6"] {
                let _ = writeln!(
                    c,
                    "protocol kernel {{ {af} {{ import none; export where source = RTS_BGP; }}; learn off; merge paths on; }}"
                );
            }
        }
        for (af, v6) in [("ipv4", false), ("ipv6", true)] {
            let _ = writeln!(c, "protocol static static_{af} {{ {af};");
            for o in self
                .originate
                .iter()
                .filter(|o| o.prefix.contains(':') == v6)
            {
                let _ = write!(c, "  route {} blackhole {{", o.prefix);
                for comm in &o.communities {
                    let _ = write!(c, " bgp_community.add(({}));", comm.replace(':', ","));
                }
                for comm in &o.large_communities {
                    let _ = write!(c, " bgp_large_community.add(({}));", comm.replace(':', ","));
                }
                c += " };\n";
            }
            c += "}\n";
        }
        for p in &self.peers {
            let _ = writeln!(c, "protocol bgp {} {{", p.name);
            match &p.source {
                Some(s) => {
                    let _ = writeln!(c, "  local {s} as {};", self.asn);
                }
                None => {
                    let _ = writeln!(c, "  local as {};", self.asn);
                }
            }
            match &p.interface {
                Some(i) => {
                    let _ = writeln!(c, "  neighbor {}%{i} as {};", p.neighbor, p.asn);
                }
                None => {
                    let _ = writeln!(c, "  neighbor {} as {};", p.neighbor, p.asn);
                }
            }
            c += "  connect delay time 1; connect retry time 2; error wait time 1, 4;\n";
            c += "  debug { states, routes, events };\n";
            if p.passive {
                c += "  passive on;\n";
            }
            if let Some(h) = p.hold_time {
                let _ = writeln!(c, "  hold time {h};");
            }
            if let Some(pw) = &p.password {
                let _ = writeln!(c, "  password \"{pw}\";");
            }
            if let Some(t) = p.graceful_restart {
                let _ = writeln!(c, "  graceful restart on; graceful restart time {t};");
            }
            if p.rr_client {
                c += "  rr client;\n";
                if let Some(id) = &self.cluster_id {
                    let _ = writeln!(c, "  rr cluster id {id};");
                }
            }
            for (af, on) in [("ipv4", p.ipv4), ("ipv6", p.ipv6)] {
                if !on {
                    continue;
                }
                let _ = write!(c, "  {af} {{ import all; export {};", p.export);
                if p.next_hop_self {
                    c += " next hop self;";
                }
                if af == "ipv4" && p.extended_next_hop {
                    c += " extended next hop on;";
                }
                if let Some(m) = &p.add_paths {
                    let _ = write!(c, " add paths {m};");
                }
                c += " };\n";
            }
            c += &p.extra;
            c += "}\n";
        }
        c += &self.extra;
        c
    }
}

/// A running BIRD.
pub struct Bird {
    ns: Netns,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Bird {
    /// Writes `config` into a fresh folder and starts BIRD in `ns`; returns
    /// once `birdc` answers.
    pub fn start(lab: &Lab, ns: &Netns, config: &str) -> Result<Bird> {
        let dir = lab.subdir(&format!("bird-{}", ns.name()))?;
        std::fs::write(dir.join("bird.conf"), config)?;
        let mut b = Bird {
            ns: ns.clone(),
            dir,
            daemon: None,
        };
        b.launch(lab, false)?;
        Ok(b)
    }

    fn launch(&mut self, lab: &Lab, graceful: bool) -> Result<()> {
        let d = &self.dir;
        let conf = d.join("bird.conf");
        let sock = d.join("bird.ctl");
        let pidf = d.join("bird.pid");
        let (conf, sock, pidf) = (
            conf.to_string_lossy(),
            sock.to_string_lossy(),
            pidf.to_string_lossy(),
        );
        let mut args = vec!["-f", "-c", &conf, "-s", &sock, "-P", &pidf];
        if graceful {
            // Graceful restart recovery: keep the kernel routes, tell peers.
            args.push("-R");
        }
        let daemon = Daemon::spawn(
            lab,
            &self.ns,
            "bird",
            &d.join("bird.log"),
            "bird",
            &args,
            &[],
        )?;
        wait_until("birdc to answer", &[&daemon], || {
            Ok(self.birdc("show status").ok().map(drop))
        })?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// The daemon (running or not).
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("bird was started")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// Runs one `birdc` command; its output (an error if BIRD reports one).
    pub fn birdc(&self, cmd: &str) -> Result<String> {
        let sock = self.socket();
        let mut args = vec!["-s", sock.to_str().unwrap_or_default()];
        args.extend(cmd.split_whitespace());
        let out = super::netns::run("birdc", &args)?;
        if out.contains("Unable to connect") || out.lines().any(|l| l.starts_with("syntax error")) {
            bail!("birdc {cmd}: {out}");
        }
        Ok(out)
    }

    /// Replaces the configuration and applies it (`birdc configure`).
    pub fn reconfigure(&self, config: &str) -> Result<()> {
        std::fs::write(self.dir.join("bird.conf"), config)?;
        let out = self.birdc("configure")?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("birdc configure: {out}");
        }
        Ok(())
    }

    /// The state line of a protocol in `show protocols` (e.g. `Established`).
    pub fn state(&self, proto: &str) -> Result<String> {
        let out = self.birdc(&format!("show protocols {proto}"))?;
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(proto))
            .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
            .ok_or_else(|| anyhow!("no protocol {proto}: {out}"))
    }

    /// Whether the BGP protocol `proto` is Established.
    pub fn established(&self, proto: &str) -> Result<bool> {
        Ok(self.state(proto)?.starts_with("Established"))
    }

    /// Route updates received from protocol `proto`, over all its channels
    /// (`Import updates: received` of `show protocols all`): grows when the
    /// neighbour resends its routes, e.g. answering a ROUTE-REFRESH.
    pub fn import_updates(&self, proto: &str) -> Result<u64> {
        let out = self.birdc(&format!("show protocols all {proto}"))?;
        let counts: Vec<u64> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Import updates:"))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .collect();
        if counts.is_empty() {
            bail!("no import statistics for {proto}: {out}");
        }
        Ok(counts.iter().sum())
    }

    /// Routes from `show route all <args>` (all tables).
    pub fn show_route(&self, args: &str) -> Result<Vec<Route>> {
        Ok(parse_show_route(
            &self.birdc(&format!("show route all {args}"))?,
        ))
    }

    /// Routes received from (imported through) protocol `proto`.
    pub fn received(&self, proto: &str) -> Result<Vec<Route>> {
        self.show_route(&format!("protocol {proto}"))
    }

    /// Routes BIRD exports to protocol `proto`.
    pub fn exported(&self, proto: &str) -> Result<Vec<Route>> {
        self.show_route(&format!("export {proto}"))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }

    /// `birdc down`-like: SIGTERM and wait for the exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop()?;
        }
        Ok(())
    }

    /// SIGKILL: no NOTIFICATION, sessions just drop.
    pub fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill9();
        }
    }

    /// Starts again with the same configuration (after stop or kill9).
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        self.stop()?;
        let _ = std::fs::remove_file(self.socket());
        self.launch(lab, false)
    }

    /// Starts again as a restarting speaker (`bird -R`: graceful restart
    /// recovery, R bit set towards peers with graceful restart on).
    pub fn restart_graceful(&mut self, lab: &Lab) -> Result<()> {
        self.stop()?;
        let _ = std::fs::remove_file(self.socket());
        self.launch(lab, true)
    }
}

/// Parses `birdc show route all` output.
pub fn parse_show_route(text: &str) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("BIRD ") || line.starts_with("Table ") {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let t = line.trim();
        // Attribute lines are indented with a tab; an alternative route for
        // the same prefix with spaces.
        let route_line = !indented || line.starts_with(' ');
        if route_line {
            // A route line: "PFX  unicast [proto time ...] * (100) [AS65002i]",
            // or an alternative for the same prefix, indented.
            let mut rest = t;
            if !indented {
                let mut it = t.splitn(2, char::is_whitespace);
                prefix = it.next().unwrap_or_default().to_string();
                rest = it.next().unwrap_or_default().trim();
            }
            let mut r = Route {
                prefix: prefix.clone(),
                ..Route::default()
            };
            if let (Some(a), Some(b)) = (rest.find('['), rest.find(']')) {
                let inner = &rest[a + 1..b];
                let mut w = inner.split_whitespace();
                r.peer = w.next().map(str::to_string);
                r.since = w.next().map(str::to_string);
                let after = rest[b + 1..].trim_start();
                r.best = after.starts_with('*');
                // "(100s)": BIRD marks (long-lived) stale routes after the
                // preference; plain GR stale routes look like any other.
                if let (Some(x), Some(y)) = (after.find('('), after.find(')')) {
                    r.stale = x < y && after[x + 1..y].contains('s');
                }
            }
            out.push(r);
            continue;
        }
        let Some(r) = out.last_mut() else { continue };
        if let Some(v) = t.strip_prefix("via ") {
            if let Some(nh) = v.split_whitespace().next() {
                if r.next_hop.is_empty() {
                    r.next_hop = nh.to_string();
                }
            }
        } else if let Some((k, v)) = t.split_once(": ") {
            let v = v.trim();
            match k {
                "BGP.origin" => r.origin = v.to_string(),
                "BGP.as_path" => r.as_path = v.replace(',', " "),
                "BGP.next_hop" => {
                    r.next_hops = v.split_whitespace().map(str::to_string).collect();
                    r.next_hop = r.next_hops.first().cloned().unwrap_or_default();
                }
                "BGP.local_pref" => r.local_pref = v.parse().ok(),
                "BGP.med" => r.med = v.parse().ok(),
                "BGP.community" => r.communities = tuples(v),
                "BGP.large_community" => r.large_communities = tuples(v),
                "BGP.originator_id" => r.originator_id = Some(v.to_string()),
                "BGP.cluster_list" => {
                    r.cluster_list = v.split_whitespace().map(str::to_string).collect()
                }
                _ => {
                    // Unknown attributes: "BGP.f0 [t]: 01 02 03" (code in hex,
                    // t transitive, p partial).
                    if let Some(rest) = k.strip_prefix("BGP.") {
                        let (code, flags) = rest.split_once(' ').unwrap_or((rest, ""));
                        if let Ok(code) = u8::from_str_radix(code, 16) {
                            let mut f = 0x80u8;
                            if flags.contains('t') {
                                f |= 0x40;
                            }
                            if flags.contains('p') {
                                f |= 0x20;
                            }
                            let hex = v.chars().filter(|c| c.is_ascii_hexdigit()).collect();
                            r.unknown.push((code, f, hex));
                        }
                    }
                }
            }
        }
    }
    out
}

/// `(64512,100) (1,2)` → `["64512:100", "1:2"]`.
fn tuples(v: &str) -> Vec<String> {
    v.split(')')
        .map(|s| s.trim().trim_start_matches('('))
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::trim).collect::<Vec<_>>().join(":"))
        .collect()
}

/// The protocol name [`super::topo`] gives the session with `addr`
/// (`n_10_99_1_1`, `n_fd00_99_1__1`).
pub fn proto_name(addr: &str) -> String {
    format!("n_{}", addr.replace(['.', ':'], "_"))
}
