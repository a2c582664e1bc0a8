//! The daemons under test, configured alike: one AS, every peer passive on
//! the DUT's side, routes from injectors imported and not advertised back,
//! everything advertised to the monitor, best routes exported to the
//! namespace's main kernel table, ECMP off (one path per prefix).
//!
//! GoBGP has no FIB code of its own and Debian's gobgpd 3.10 panics against
//! Debian's FRR 8.4 zebra (osrg/gobgp#2681), so its FIB path is a small
//! helper, as in the shared lab: `gobgp monitor global rib --current -j`
//! piped into `ip -batch` (route replace/del). Its timings measure gobgpd
//! plus that helper; its processes count in GoBGP's RSS and CPU.

use anyhow::{bail, Context, Result};
use petrel_tests::lab::{wait_until, Daemon, Lab, Netns};
use std::fmt::Write;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Petreld,
    /// petreld with `[fib] nexthop_objects = "off"`: every route carries
    /// its next hop (to compare the two FIB paths side by side).
    PetreldClassic,
    Bird,
    Frr,
    Gobgp,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "petreld" | "petrel" => Kind::Petreld,
            "petreld-classic" => Kind::PetreldClassic,
            "bird" => Kind::Bird,
            "frr" => Kind::Frr,
            "gobgp" | "gobgpd" => Kind::Gobgp,
            _ => bail!("unknown DUT {s:?} (petreld, petreld-classic, bird, frr, gobgp)"),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Petreld => "petreld",
            Kind::PetreldClassic => "petreld-classic",
            Kind::Bird => "bird",
            Kind::Frr => "frr",
            Kind::Gobgp => "gobgp",
        }
    }
    /// Programs it needs on this machine.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::Petreld | Kind::PetreldClassic => &[],
            Kind::Bird => &["bird", "birdc"],
            Kind::Frr => &["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "vtysh"],
            Kind::Gobgp => &["gobgpd", "gobgp", "python3"],
        }
    }
    /// petreld in either FIB mode.
    pub fn is_petreld(self) -> bool {
        matches!(self, Kind::Petreld | Kind::PetreldClassic)
    }
}

/// The DUT's AS and peers.
#[derive(Clone, Debug)]
pub struct Layout {
    pub asn: u32,
    pub router_id: String,
    pub v6: bool,
    /// (address, ASN) of each injector.
    pub injectors: Vec<(IpAddr, u32)>,
    /// The monitor peer; the failover scenarios run without one (a
    /// restarting DUT would wait for it too).
    pub monitor: Option<(IpAddr, u32)>,
    /// Hold time on the injector sessions (failover scenarios: 9 s, the
    /// fallback when nothing else notices a dead peer); else the DUT's
    /// default.
    pub hold: Option<u16>,
    /// Graceful restart with this restart time, each DUT set to keep its
    /// kernel routes across a crash and sweep the stale ones after (see
    /// docs/benchmarks.md, "Failover and restart"): petreld's
    /// `graceful_restart`; BIRD's `graceful restart` in BGP and kernel
    /// protocols (and `-R` on the restart, [`Dut::restart`]); FRR's
    /// `bgp graceful-restart` with `preserve-fw-state` and zebra's `-K`.
    pub graceful_restart: Option<u16>,
    /// BFD at 300 ms × 3 on every injector session (petreld only; the
    /// endpoint is a BIRD in the injectors' namespace, see
    /// [`bfd_endpoint_conf`]).
    pub bfd: bool,
    /// Route reflection (`super::rr`): every injector is an iBGP client
    /// and there is no monitor; nothing goes into the kernel.
    pub reflector: Option<Reflector>,
}

/// The DUT as a route reflector (RFC 4456) for every injector.
#[derive(Clone, Copy, Debug)]
pub struct Reflector {
    /// Send every path to every client (RFC 7911), not the best alone.
    pub add_path: bool,
    /// petreld's FIB enabled (a node that reflects and forwards); the
    /// other daemons' reflectors export nothing to the kernel either way.
    pub fib: bool,
}

/// The reflector's cluster id (RFC 4456 §7): its router id, as the daemons
/// default to.
const CLUSTER_ID: &str = "10.0.0.1";

/// petreld as a reflector: `route_reflector_client` peers, `add_path` send
/// `all` with ADD-PATH, and `fib.enabled = false` unless `fib`.
pub fn petreld_rr_toml(l: &Layout, r: Reflector, socket: &str) -> String {
    let mut c = format!(
        "[node]\nname = \"bench\"\nrouter_id = \"{}\"\nasn = {}\n\n[control]\nsocket = {socket:?}\n\n\
         [fib]\nenabled = {}\n\n[bgp]\nlisten = [\"0.0.0.0:179\"]\ncluster_id = \"{CLUSTER_ID}\"\nmax_paths = 1\n",
        l.router_id, l.asn, r.fib
    );
    let ap = if r.add_path {
        "add_path = { send = \"all\" }\n"
    } else {
        ""
    };
    for (addr, asn) in &l.injectors {
        let _ = write!(
            c,
            "\n[[bgp.peers]]\naddress = \"{addr}\"\nasn = {asn}\npassive = true\n\
             families = [\"ipv4-unicast\"]\nroute_reflector_client = true\n{ap}"
        );
    }
    c
}

/// BIRD as a reflector: a template with `rr client`, `direct` and `gateway
/// direct` (the clients and their next hops are on the link; BIRD's iBGP
/// defaults, multihop with recursive next hops, would need an IGP table) and `add paths tx` with ADD-PATH; no kernel
/// protocol.
pub fn bird_rr_conf(l: &Layout, r: Reflector) -> String {
    let mut c = format!(
        "log stderr {{ warning, error, fatal, bug }};\nrouter id {};\n\
         protocol device {{ scan time 10; }}\n\
         template bgp rrc {{ local as {}; passive on; direct; rr client; rr cluster id {CLUSTER_ID}; \
         ipv4 {{ import all; export all; gateway direct;{} }}; }}\n",
        l.router_id,
        l.asn,
        if r.add_path { " add paths tx;" } else { "" }
    );
    for (k, (addr, asn)) in l.injectors.iter().enumerate() {
        let _ = writeln!(
            c,
            "protocol bgp c{k} from rrc {{ neighbor {addr} as {asn}; }}"
        );
    }
    c
}

/// FRR as a reflector: a peer group with `route-reflector-client` and
/// `addpath-tx-all-paths` with ADD-PATH; bgpd runs with `-n` (no kernel
/// install, FRR's option for reflectors).
pub fn frr_rr_conf(l: &Layout, r: Reflector) -> String {
    let mut c = format!(
        "hostname bench\nlog stdout warnings\n!\nrouter bgp {}\n bgp router-id {}\n \
         bgp cluster-id {CLUSTER_ID}\n no bgp default ipv4-unicast\n \
         neighbor C peer-group\n neighbor C remote-as internal\n neighbor C passive\n",
        l.asn, l.router_id
    );
    for (addr, _) in &l.injectors {
        let _ = writeln!(c, " neighbor {addr} peer-group C");
    }
    c += " address-family ipv4 unicast\n  maximum-paths ibgp 1\n  neighbor C activate\n  \
          neighbor C route-reflector-client\n";
    if r.add_path {
        c += "  neighbor C addpath-tx-all-paths\n";
    }
    c += " exit-address-family\n!\n";
    c
}

/// BIRD as the injectors' BFD endpoint: one session per injector address
/// with the DUT, at petreld's 300 ms × 3. BIRD speaks no BGP here; its
/// BFD sessions stand alone (RFC 5880 needs no client on this side).
pub fn bfd_endpoint_conf(l: &Layout, dut: IpAddr) -> String {
    let mut c = String::from(
        "log stderr { info, remote, warning, error, fatal, bug };\nrouter id 10.0.0.250;\n\
         protocol device { scan time 10; }\nprotocol bfd {\n  \
         interface \"*\" { interval 300 ms; multiplier 3; };\n",
    );
    for (addr, _) in &l.injectors {
        let _ = writeln!(c, "  neighbor {dut} local {addr};");
    }
    c += "}\n";
    c
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

pub fn petreld_toml(l: &Layout, socket: &str) -> String {
    let mut c = format!(
        "[node]\nname = \"bench\"\nrouter_id = \"{}\"\nasn = {}\n\n[control]\nsocket = {socket:?}\n\n\
         [bgp]\nlisten = [\"{}:179\"]\nmax_paths = 1\n",
        l.router_id,
        l.asn,
        if l.v6 { "[::]" } else { "0.0.0.0" }
    );
    if let Some(t) = l.graceful_restart {
        let _ = writeln!(c, "graceful_restart = {{ restart_time = {t} }}");
    }
    let fam = format!("{}-unicast", family(l.v6));
    let mut bfd = if l.bfd {
        "bfd = { min_rx_ms = 300, min_tx_ms = 300, multiplier = 3 }\n".to_string()
    } else {
        String::new()
    };
    if let Some(h) = l.hold {
        let _ = writeln!(bfd, "hold_time = {h}");
    }
    for (addr, asn) in &l.injectors {
        let _ = writeln!(
            c,
            "\n[[bgp.peers]]\naddress = \"{addr}\"\nasn = {asn}\npassive = true\nfamilies = [\"{fam}\"]\n\
             {bfd}[[bgp.peers.export]]\naction = \"reject\""
        );
    }
    if let Some((addr, asn)) = l.monitor {
        let _ = writeln!(
            c,
            "\n[[bgp.peers]]\naddress = \"{addr}\"\nasn = {asn}\npassive = true\nfamilies = [\"{fam}\"]"
        );
    }
    c
}

pub fn bird_conf(l: &Layout) -> String {
    let f = family(l.v6);
    // Graceful restart: the kernel protocol waits for the recovery's end
    // before it prunes routes it did not export (BIRD started with -R).
    let (gr_global, gr_kernel, gr_bgp) = match l.graceful_restart {
        Some(t) => (
            format!("graceful restart wait {t};\n"),
            " graceful restart on;",
            format!(" graceful restart on; graceful restart time {t};"),
        ),
        None => (String::new(), "", String::new()),
    };
    // The failover scenarios (a hold time set): `check link` ends a
    // direct session when its interface loses carrier (BIRD's own
    // link-down detection, stated rather than left to the default).
    let inj_opts = l
        .hold
        .map(|h| format!(" hold time {h}; check link on;"))
        .unwrap_or_default();
    let mut c = format!(
        "log stderr {{ warning, error, fatal, bug }};\nrouter id {};\n{gr_global}\
         protocol device {{ scan time 10; }}\n\
         protocol kernel {{ {f} {{ import none; export where source = RTS_BGP; }}; learn off; merge paths off;{gr_kernel} }}\n",
        l.router_id
    );
    let peer = |c: &mut String,
                name: &str,
                (addr, asn): (IpAddr, u32),
                export: &str,
                opts: &str| {
        let _ = writeln!(
            c,
            "protocol bgp {name} {{ local as {}; neighbor {addr} as {asn}; passive on;{opts}{gr_bgp} \
             {f} {{ import all; export {export}; }}; }}",
            l.asn
        );
    };
    for (k, p) in l.injectors.iter().enumerate() {
        peer(&mut c, &format!("inj{k}"), *p, "none", &inj_opts);
    }
    if let Some(m) = l.monitor {
        peer(&mut c, "mon", m, "all", "");
    }
    c
}

pub fn frr_conf(l: &Layout) -> String {
    let mut c = format!(
        "hostname bench\nlog stdout warnings\n!\nrouter bgp {}\n bgp router-id {}\n \
         no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n",
        l.asn, l.router_id
    );
    // fast-external-failover (on by default) ends a directly connected
    // eBGP session when zebra reports its interface down.
    if let Some(t) = l.graceful_restart {
        let _ = writeln!(
            c,
            " bgp graceful-restart\n bgp graceful-restart preserve-fw-state\n \
             bgp graceful-restart restart-time {t}"
        );
    }
    let all: Vec<(IpAddr, u32)> = l.injectors.iter().copied().chain(l.monitor).collect();
    for (addr, asn) in &all {
        let _ = writeln!(
            c,
            " neighbor {addr} remote-as {asn}\n neighbor {addr} passive"
        );
    }
    if let Some(h) = l.hold {
        for (addr, _) in &l.injectors {
            let _ = writeln!(c, " neighbor {addr} timers {} {h}", h / 3);
        }
    }
    let _ = writeln!(
        c,
        " address-family {} unicast\n  maximum-paths 1",
        family(l.v6)
    );
    for (addr, _) in &all {
        let _ = writeln!(c, "  neighbor {addr} activate");
    }
    for (addr, _) in &l.injectors {
        let _ = writeln!(c, "  neighbor {addr} route-map NONE out");
    }
    c += " exit-address-family\n!\nroute-map NONE deny 10\n!\n";
    c
}

pub fn gobgp_toml(l: &Layout) -> String {
    let mut c = format!(
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179\n",
        l.asn, l.router_id
    );
    let all: Vec<(IpAddr, u32, bool)> = l
        .injectors
        .iter()
        .map(|(a, n)| (*a, *n, false))
        .chain(l.monitor.map(|(a, n)| (a, n, true)))
        .collect();
    for (addr, asn, export) in all {
        let _ = writeln!(
            c,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {asn}\n  \
             [neighbors.transport.config]\n    passive-mode = true\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{}-unicast\"",
            family(l.v6)
        );
        if !export {
            c +=
                "  [neighbors.apply-policy.config]\n    default-export-policy = \"reject-route\"\n";
        }
    }
    c
}

/// GoBGP's FIB path (see the module docs): best-path changes streamed
/// from gobgpd's API into `ip -batch`, which writes one route per request.
pub const GOBGP_FIB_SYNC: &str = r#"import json, subprocess, sys
fam = sys.argv[1]
mon = subprocess.Popen(['gobgp', 'monitor', 'global', 'rib', '-a', fam, '--current', '-j'],
                       stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
ip = subprocess.Popen(['ip', '-force', '-batch', '-'], stdin=subprocess.PIPE, text=True, bufsize=1 << 20)
for line in mon.stdout:
    try:
        paths = json.loads(line)
    except ValueError:
        continue
    for p in paths if isinstance(paths, list) else [paths]:
        pfx = p.get('nlri', {}).get('prefix')
        if not pfx:
            continue
        if p.get('withdrawal'):
            ip.stdin.write('route del %s proto bgp\n' % pfx)
            continue
        nh = None
        for a in p.get('attrs', []):
            if a.get('type') == 3:
                nh = a.get('nexthop')
            elif a.get('type') == 14:
                nh = a.get('nexthop') or (a.get('value') or {}).get('nexthop')
        if nh:
            ip.stdin.write('route replace %s via %s proto bgp\n' % (pfx, nh))
    ip.stdin.flush()
"#;

/// A started DUT.
pub struct Dut {
    pub kind: Kind,
    pub ns: Netns,
    pub daemons: Vec<Daemon>,
    /// petreld's control socket.
    ctl_socket: Option<String>,
}

impl Dut {
    pub fn start(kind: Kind, lab: &Lab, ns: &Netns, l: &Layout) -> Result<Dut> {
        Self::start_with(kind, lab, ns, l, false)
    }

    /// Starts the DUT again after [`Dut::crash`], recovering as a
    /// restarting speaker: BIRD with `-R`; FRR's zebra keeps the previous
    /// run's kernel routes for `-K` seconds (given at every start with
    /// graceful restart); petreld always keeps its routes and sweeps the
    /// stale ones after End-of-RIB.
    pub fn restart(kind: Kind, lab: &Lab, ns: &Netns, l: &Layout) -> Result<Dut> {
        Self::start_with(kind, lab, ns, l, true)
    }

    fn start_with(kind: Kind, lab: &Lab, ns: &Netns, l: &Layout, recovering: bool) -> Result<Dut> {
        let dir = lab.subdir(&format!("dut-{}", kind.name()))?;
        let log = |n: &str| dir.join(format!("{n}.log"));
        let mut daemons = Vec::new();
        let mut ctl_socket = None;
        match kind {
            Kind::Petreld | Kind::PetreldClassic => {
                let sock = dir.join("petreld.sock").to_string_lossy().into_owned();
                ctl_socket = Some(sock.clone());
                let conf = dir.join("petreld.toml");
                let mut toml = match l.reflector {
                    Some(r) => petreld_rr_toml(l, r, &sock),
                    None => petreld_toml(l, &sock),
                };
                // A reflector has its FIB off (its own `[fib]` table), so
                // the classic FIB path changes nothing there.
                if kind == Kind::PetreldClassic && l.reflector.is_none() {
                    toml += "\n[fib]\nnexthop_objects = \"off\"\n";
                }
                std::fs::write(&conf, toml)?;
                let bin = petrel_tests::bin("petreld")?.to_string_lossy().into_owned();
                let conf = conf.to_string_lossy().into_owned();
                let mut args = vec!["--config", &conf];
                let cg = callgrind_dir()
                    .map(|d| format!("--callgrind-out-file={}/callgrind.out.%p", d.display()));
                let program = match &cg {
                    Some(out) => {
                        args.splice(0..0, ["--tool=callgrind", out, &bin]);
                        "valgrind"
                    }
                    None => &bin,
                };
                let ht = heaptrack_dir().map(|dir| {
                    let raw = dir.join(format!("heaptrack.petreld.{}.raw", std::process::id()));
                    [
                        format!("LD_PRELOAD={HEAPTRACK_PRELOAD}"),
                        format!("DUMP_HEAPTRACK_OUTPUT={}", raw.display()),
                    ]
                });
                let program = match &ht {
                    // heaptrack's preload library writes its raw event
                    // stream into the file. Given through `env`, not to
                    // `ip netns exec`, which would trace itself (the
                    // library unsets the variable for what it execs);
                    // petreld stays the process the bench measures and
                    // signals, as `env` execs it.
                    Some([preload, out]) => {
                        args.splice(0..0, [preload.as_str(), out.as_str(), program]);
                        "env"
                    }
                    None => program,
                };
                let d = Daemon::spawn(
                    lab,
                    ns,
                    "petreld",
                    &log("petreld"),
                    program,
                    &args,
                    // PETREL_BENCH_LOG: another filter for a look inside
                    // (e.g. "warn,petrel_daemon::fib=debug").
                    &[(
                        "PETREL_LOG",
                        &std::env::var("PETREL_BENCH_LOG").unwrap_or("warn".into()),
                    )],
                )?;
                let ctl = petrel_tests::bin("petrelctl")?;
                wait_until("petrelctl to answer", &[&d], || {
                    Ok(super::run(
                        &ctl.to_string_lossy(),
                        &["--socket", &sock, "show", "peers", "--json"],
                    )
                    .ok()
                    .map(drop))
                })?;
                daemons.push(d);
            }
            Kind::Bird => {
                let conf = dir.join("bird.conf");
                let text = match l.reflector {
                    Some(r) => bird_rr_conf(l, r),
                    None => bird_conf(l),
                };
                std::fs::write(&conf, text)?;
                let sock = dir.join("bird.ctl").to_string_lossy().into_owned();
                let conf = conf.to_string_lossy();
                let mut args = vec!["-f", "-c", &conf, "-s", &sock];
                if recovering {
                    args.push("-R");
                }
                let d = Daemon::spawn(lab, ns, "bird", &log("bird"), "bird", &args, &[])?;
                wait_until("birdc to answer", &[&d], || {
                    Ok(super::run("birdc", &["-s", &sock, "show status"])
                        .ok()
                        .map(drop))
                })?;
                daemons.push(d);
            }
            Kind::Frr => {
                let run = dir.join("run");
                std::fs::create_dir_all(&run)?;
                std::fs::write(dir.join("zebra.conf"), "hostname z\nlog stdout warnings\n")?;
                let text = match l.reflector {
                    Some(r) => frr_rr_conf(l, r),
                    None => frr_conf(l),
                };
                std::fs::write(dir.join("bgpd.conf"), text)?;
                super::run("chown", &["-R", "frr:frr", &dir.to_string_lossy()])?;
                // A crashed zebra leaves its socket: wait for the new one.
                let _ = std::fs::remove_file(run.join("zserv.api"));
                let keep = l.graceful_restart.map(|t| t.to_string());
                for which in ["zebra", "bgpd"] {
                    let extra: Vec<&str> = match (&keep, which) {
                        (Some(t), "zebra") => vec!["-K", t],
                        // bgpd -n: no kernel install (the reflector's case).
                        (_, "bgpd") if l.reflector.is_some() => vec!["-n"],
                        _ => vec![],
                    };
                    let d = petrel_tests::lab::frr::spawn_daemon_with(
                        lab,
                        ns,
                        &dir,
                        which,
                        &log(which),
                        &extra,
                    )?;
                    if which == "zebra" {
                        let api = run.join("zserv.api");
                        wait_until("zebra's zserv.api", &[&d], || {
                            Ok(api.exists().then_some(()))
                        })?;
                    } else {
                        let vty = run.to_string_lossy().into_owned();
                        wait_until("vtysh to reach bgpd", &[&d], || {
                            Ok(super::run(
                                "vtysh",
                                &[
                                    "--vty_socket",
                                    &vty,
                                    "-d",
                                    "bgpd",
                                    "-c",
                                    "show bgp summary json",
                                ],
                            )
                            .ok()
                            .filter(|o| o.contains('{'))
                            .map(drop))
                        })?;
                    }
                    daemons.push(d);
                }
            }
            Kind::Gobgp => {
                let conf = dir.join("gobgpd.toml");
                std::fs::write(&conf, gobgp_toml(l))?;
                let d = Daemon::spawn(
                    lab,
                    ns,
                    "gobgpd",
                    &log("gobgpd"),
                    "gobgpd",
                    &[
                        "-f",
                        &conf.to_string_lossy(),
                        "-p",
                        "-l",
                        "warn",
                        "--api-hosts",
                        "127.0.0.1:50051",
                        "--pprof-disable",
                    ],
                    &[],
                )?;
                wait_until("gobgp API to answer", &[&d], || {
                    Ok(ns.exec("gobgp", &["global"]).ok().map(drop))
                })?;
                let script = dir.join("gobgp-fib-sync.py");
                std::fs::write(&script, GOBGP_FIB_SYNC)?;
                let sync = Daemon::spawn(
                    lab,
                    ns,
                    "gobgp-fib-sync",
                    &log("gobgp-fib-sync"),
                    "python3",
                    &[&script.to_string_lossy(), family(l.v6)],
                    &[],
                )?;
                daemons.push(d);
                daemons.push(sync);
            }
        }
        Ok(Dut {
            kind,
            ns: ns.clone(),
            daemons,
            ctl_socket,
        })
    }

    /// petreld's `show bfd --json`: one object per BFD session.
    pub fn bfd_sessions(&self) -> Result<Vec<serde_json::Value>> {
        let Some(sock) = &self.ctl_socket else {
            bail!("{} has no petrelctl", self.kind.name());
        };
        let ctl = petrel_tests::bin("petrelctl")?;
        let out = super::run(
            &ctl.to_string_lossy(),
            &["--socket", sock, "show", "bfd", "--json"],
        )?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Fails with the logs if a DUT process died.
    pub fn check_alive(&self) -> Result<()> {
        for d in &self.daemons {
            if !d.alive() {
                bail!("{} died; log:\n{}", d.name(), d.log_tail(30));
            }
        }
        Ok(())
    }

    /// Memory and CPU of every process in the DUT's namespace (the
    /// daemons and whatever they started).
    pub fn stats(&self) -> Result<ProcStats> {
        let out = super::run("ip", &["netns", "pids", self.ns.name()])?;
        let me = std::process::id();
        let mut s = ProcStats::default();
        for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if pid == me {
                continue;
            }
            if let Ok(p) = proc_stats(pid) {
                s.add(&p);
            }
        }
        Ok(s)
    }

    pub fn stop(self) {
        self.crash();
    }

    /// SIGKILL to every process of the DUT, as a crash: nothing is
    /// cleaned up, its kernel routes stay.
    pub fn crash(&self) {
        for d in self.daemons.iter().rev() {
            if self.kind == Kind::Petreld
                && (callgrind_dir().is_some() || heaptrack_dir().is_some())
            {
                // SIGTERM: callgrind and heaptrack write their last part
                // at exit only.
                let _ = d.stop();
            } else {
                d.kill9();
            }
        }
    }

    /// Under `PETREL_BENCH_CALLGRIND` (petreld only): `Zero` sets
    /// callgrind's counters to zero, `Dump(label)` writes what they
    /// counted since into a file of its own (callgrind.out.PID.N) and
    /// zeroes them, so each phase of a run is counted apart. Does nothing
    /// otherwise.
    pub fn callgrind(&self, what: Callgrind) -> Result<()> {
        if self.kind != Kind::Petreld || callgrind_dir().is_none() {
            return Ok(());
        }
        let pid = self.daemons[0].pid().to_string();
        match what {
            Callgrind::Zero => super::run("callgrind_control", &["-z", &pid])?,
            Callgrind::Dump(label) => {
                super::run("callgrind_control", &[&format!("--dump={label}"), &pid])?
            }
        };
        Ok(())
    }
}

/// What [`Dut::callgrind`] asks of callgrind.
pub enum Callgrind {
    Zero,
    Dump(&'static str),
}

/// `PETREL_BENCH_CALLGRIND=DIR`: petreld runs under `valgrind
/// --tool=callgrind`, its profiles written into DIR, one per phase (see
/// [`Dut::callgrind`]). Instruction counts do not change with the load of
/// the machine, so two builds compare on a busy one; timings under
/// valgrind mean nothing.
pub fn callgrind_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("PETREL_BENCH_CALLGRIND").map(std::path::PathBuf::from)
}

/// `PETREL_BENCH_HEAPTRACK=DIR`: petreld runs with heaptrack's preload
/// library, its raw trace written to DIR/heaptrack.petreld.BENCHPID.raw
/// (one file per bench process: use `--repeat 1`). Read it with
/// `heaptrack_interpret < RAW | gzip > T.gz; heaptrack_print T.gz`.
/// Allocation calls cost more under it, so queues may fill differently.
pub fn heaptrack_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("PETREL_BENCH_HEAPTRACK").map(std::path::PathBuf::from)
}

/// Debian's path of heaptrack's preload library.
const HEAPTRACK_PRELOAD: &str = "/usr/lib/heaptrack/libheaptrack_preload.so";

/// Summed over processes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStats {
    pub rss_bytes: u64,
    /// VmHWM: each process's peak resident set.
    pub hwm_bytes: u64,
    /// utime + stime.
    pub cpu_seconds: f64,
    /// utime alone: the daemon's own work; stime is mostly the kernel
    /// installing routes on its behalf.
    pub user_seconds: f64,
    pub processes: usize,
}

impl ProcStats {
    fn add(&mut self, o: &ProcStats) {
        self.rss_bytes += o.rss_bytes;
        self.hwm_bytes += o.hwm_bytes;
        self.cpu_seconds += o.cpu_seconds;
        self.user_seconds += o.user_seconds;
        self.processes += o.processes;
    }
}

/// `/proc/PID/status` VmRSS and VmHWM, `/proc/PID/stat` utime + stime.
pub fn proc_stats(pid: u32) -> Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc(&status, &stat, clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

pub fn parse_proc(status: &str, stat: &str, hz: f64) -> Result<ProcStats> {
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime field 14, stime field 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> f64 { f.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    Ok(ProcStats {
        rss_bytes: kb("VmRSS:"),
        hwm_bytes: kb("VmHWM:"),
        cpu_seconds: (tick(14) + tick(15)) / hz,
        user_seconds: tick(14) / hz,
        processes: 1,
    })
}

/// Version strings of the DUT programs, for the report.
pub fn version(kind: Kind) -> String {
    let first = |prog: &str, args: &[&str]| -> String {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .map(|o| {
                let t = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                t.lines().next().unwrap_or_default().trim().to_string()
            })
            .unwrap_or_else(|e| format!("? ({e})"))
    };
    match kind {
        Kind::Petreld | Kind::PetreldClassic => {
            let rev = first(
                "git",
                &[
                    "-C",
                    env!("CARGO_MANIFEST_DIR"),
                    "rev-parse",
                    "--short",
                    "HEAD",
                ],
            );
            format!("petreld {} (git {rev})", env!("CARGO_PKG_VERSION"))
        }
        Kind::Bird => first("bird", &["--version"]),
        Kind::Frr => first("/usr/lib/frr/bgpd", &["--version"]),
        Kind::Gobgp => format!(
            "{} + python3 ip -batch FIB helper",
            first("gobgpd", &["--version"])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            asn: 4_200_000_000,
            router_id: "10.0.0.1".into(),
            v6: false,
            injectors: vec![
                ("10.0.0.11".parse().unwrap(), 4_200_000_101),
                ("10.0.0.12".parse().unwrap(), 4_200_000_102),
            ],
            monitor: Some(("10.1.0.2".parse().unwrap(), 4_200_000_200)),
            bfd: false,
            hold: None,
            graceful_restart: None,
            reflector: None,
        }
    }

    #[test]
    fn bfd_on_the_injector_sessions_and_bird_as_their_endpoint() {
        let mut l = layout();
        assert!(!petreld_toml(&l, "s").contains("bfd"));
        l.bfd = true;
        let t = petreld_toml(&l, "s");
        // The injectors' sessions, not the monitor's.
        assert_eq!(
            t.matches("bfd = { min_rx_ms = 300, min_tx_ms = 300, multiplier = 3 }")
                .count(),
            2
        );
        let b = bfd_endpoint_conf(&l, "10.0.0.1".parse().unwrap());
        assert!(b.contains("neighbor 10.0.0.1 local 10.0.0.11;"));
        assert!(b.contains("neighbor 10.0.0.1 local 10.0.0.12;"));
        assert!(b.contains("interval 300 ms; multiplier 3;"));
    }

    #[test]
    fn configs_name_every_peer_and_export_only_to_the_monitor() {
        let l = layout();
        let b = bird_conf(&l);
        assert!(b.contains(
            "neighbor 10.0.0.12 as 4200000102; passive on; ipv4 { import all; export none; }"
        ));
        assert!(b.contains(
            "neighbor 10.1.0.2 as 4200000200; passive on; ipv4 { import all; export all; }"
        ));
        assert!(b.contains("merge paths off"));
        let f = frr_conf(&l);
        assert!(f.contains("  neighbor 10.0.0.11 route-map NONE out"));
        assert!(!f.contains("neighbor 10.1.0.2 route-map"));
        assert!(f.contains("maximum-paths 1"));
        let g = gobgp_toml(&l);
        assert_eq!(g.matches("reject-route").count(), 2);
        let p = petreld_toml(&l, "/tmp/s");
        assert_eq!(p.matches("action = \"reject\"").count(), 2);
        assert!(p.contains("max_paths = 1"));
    }

    #[test]
    fn reflector_configs_make_every_peer_a_client() {
        let l = Layout {
            asn: 4_200_000_000,
            injectors: vec![
                ("10.0.0.11".parse().unwrap(), 4_200_000_000),
                ("10.0.0.12".parse().unwrap(), 4_200_000_000),
            ],
            ..layout()
        };
        for add_path in [false, true] {
            let r = Reflector {
                add_path,
                fib: false,
            };
            let p = petreld_rr_toml(&l, r, "/s");
            let forwarding = petreld_rr_toml(&l, Reflector { fib: true, ..r }, "/s");
            assert!(forwarding.contains("[fib]\nenabled = true"));
            assert_eq!(p.matches("route_reflector_client = true").count(), 2);
            assert_eq!(
                p.matches("add_path = { send = \"all\" }").count(),
                2 * add_path as usize
            );
            assert!(
                p.contains("[fib]\nenabled = false") && p.contains("cluster_id = \"10.0.0.1\"")
            );
            let b = bird_rr_conf(&l, r);
            assert!(b.contains("protocol bgp c1 from rrc { neighbor 10.0.0.12 as 4200000000; }"));
            assert!(b.contains("rr client;") && !b.contains("protocol kernel"));
            assert_eq!(b.contains("add paths tx;"), add_path);
            let f = frr_rr_conf(&l, r);
            assert!(f.contains(" neighbor 10.0.0.11 peer-group C\n"));
            assert!(f.contains("neighbor C route-reflector-client"));
            assert_eq!(f.contains("addpath-tx-all-paths"), add_path);
        }
    }

    #[test]
    fn proc_stat_fields_after_a_command_with_spaces() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let p = parse_proc(status, stat, 100.0).unwrap();
        assert_eq!((p.rss_bytes, p.hwm_bytes), (1 << 20, 2 << 20));
        assert!((p.cpu_seconds - 3.0).abs() < 1e-9);
        assert!((p.user_seconds - 2.5).abs() < 1e-9);
    }
}
