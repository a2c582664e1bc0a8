//! `petrelctl show|status|peer`: talk to a running petreld over its control
//! socket. Aligned tables by default, `--json` for scripts.

use crate::control::{call, BfdRow, FibRow, PeerRow, Request, Response, RouteRow};
use crate::fib::mtu::MtuStatus;
use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ShowCmd {
    /// BGP sessions: state, uptime, prefix counts.
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// Routes in the RIB (all paths; `best` marks the selected one).
    Routes {
        /// Only this prefix.
        prefix: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One peer: its session and the settings in effect.
    Peer {
        address: String,
        #[arg(long)]
        json: bool,
    },
    /// The node's IPAM blocks and what it advertises from the cluster.
    Blocks {
        #[arg(long)]
        json: bool,
    },
    /// Service addresses and ranges from the cluster: advertised by this
    /// node or not, and why (traffic policy, local endpoints).
    Services {
        #[arg(long)]
        json: bool,
    },
    /// petrel's routes in the kernel, as the FIB writer holds them.
    Fib {
        #[arg(long)]
        json: bool,
    },
    /// The host and pod MTU, and where they come from.
    Mtu {
        #[arg(long)]
        json: bool,
    },
    /// BFD sessions (RFC 5880): state, diagnostics, negotiated timers.
    Bfd {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Start a disabled session.
    Enable { address: String },
    /// Shut a session down (Cease / Administrative Shutdown, RFC 9003 message).
    Disable {
        address: String,
        #[arg(long)]
        message: Option<String>,
    },
    /// Ask the peer to resend its routes (ROUTE-REFRESH, RFC 2918).
    Refresh { address: String },
}

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn request(socket: &Path, req: Request) -> anyhow::Result<Response> {
    let resp = rt()?.block_on(call(socket, &req))?;
    if let Response::Error { message } = &resp {
        anyhow::bail!("petreld: {message}");
    }
    Ok(resp)
}

pub fn status(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let Response::Status(s) = request(socket, Request::Status)? else {
        anyhow::bail!("unexpected answer")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("node        {}", s.node);
        println!("router id   {}", s.router_id);
        println!("AS          {}", s.asn);
        println!("version     {}", s.version);
        println!("uptime      {}", duration(s.uptime_seconds));
        println!(
            "peers       {} established of {}",
            s.peers_established, s.peers_total
        );
        println!("routes      {}", s.routes);
        println!("ready       {}", if s.ready { "yes" } else { "no" });
        for d in &s.degraded {
            println!("degraded    {d}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(socket: &Path, cmd: ShowCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ShowCmd::Peers { json } => {
            let Response::Peers { peers } = request(socket, Request::ShowPeers)? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                print_peers(&peers);
            }
        }
        ShowCmd::Routes { prefix, json } => {
            let Response::Routes { routes } = request(socket, Request::ShowRoutes { prefix })?
            else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&routes)?);
            } else {
                print_routes(&routes);
            }
        }
        ShowCmd::Peer { address, json } => {
            let Response::Peer(p) = request(socket, Request::ShowPeer { address })? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                let r = &p.session;
                println!("peer          {}  AS {}  ({})", r.address, r.asn, p.source);
                println!("state         {}", r.state);
                println!("uptime        {}", duration(r.uptime_seconds));
                println!(
                    "prefixes      received {}, accepted {}, advertised {}",
                    r.received, r.accepted, r.advertised
                );
                println!("last error    {}", o(r.last_error.clone()));
                println!(
                    "connection    port {}, source {}, {}",
                    p.port,
                    o(p.local_address.clone()),
                    if p.passive { "passive" } else { "active" }
                );
                println!(
                    "timers        hold {} s, keepalive {}",
                    p.hold_time,
                    o(p.keepalive.map(|k| format!("{k} s")))
                );
                println!(
                    "security      md5 {}, ttl-security {}",
                    if p.md5 { "on" } else { "off" },
                    o(p.ttl_security.map(|t| t.to_string()))
                );
                println!("next hop      {}", p.next_hop);
                println!("rr client     {}", p.route_reflector_client);
                println!("families      {}", p.families.join(", "));
                println!("add-path      {}", p.add_path);
                println!(
                    "graceful rst  {}",
                    o(p.graceful_restart_time
                        .map(|t| format!("restart time {t} s")))
                );
            }
        }
        ShowCmd::Blocks { json } => {
            let Response::Blocks(b) = request(socket, Request::ShowBlocks)? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                print_blocks(&b);
            }
        }
        ShowCmd::Services { json } => {
            let Response::Services(v) = request(socket, Request::ShowServices)? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_services(&v);
            }
        }
        ShowCmd::Bfd { json } => {
            let Response::Bfd { sessions } = request(socket, Request::ShowBfd)? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                print_bfd(&sessions);
            }
        }
        ShowCmd::Fib { json } => {
            let Response::Fib { routes } = request(socket, Request::ShowFib)? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&routes)?);
            } else {
                print_fib(&routes);
            }
        }
        ShowCmd::Mtu { json } => {
            let Response::Mtu(m) = request(socket, Request::ShowMtu)? else {
                anyhow::bail!("unexpected answer")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print_mtu(&m);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn peer(socket: &Path, cmd: PeerCmd) -> anyhow::Result<ExitCode> {
    let req = match cmd {
        PeerCmd::Enable { address } => Request::PeerEnable { address },
        PeerCmd::Disable { address, message } => Request::PeerDisable { address, message },
        PeerCmd::Refresh { address } => Request::PeerRefresh { address },
    };
    request(socket, req)?;
    Ok(ExitCode::SUCCESS)
}

fn duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Prints rows as columns aligned to the widest cell.
fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_peers(peers: &[PeerRow]) {
    table(
        &[
            "PEER",
            "AS",
            "STATE",
            "UPTIME",
            "RECEIVED",
            "ACCEPTED",
            "ADVERTISED",
            "LAST ERROR",
        ],
        peers
            .iter()
            .map(|p| {
                vec![
                    p.address.clone(),
                    p.asn.to_string(),
                    p.state.clone(),
                    if p.state == "Established" {
                        duration(p.uptime_seconds)
                    } else {
                        "-".into()
                    },
                    p.received.to_string(),
                    p.accepted.to_string(),
                    p.advertised.to_string(),
                    p.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

fn print_routes(routes: &[RouteRow]) {
    table(
        &[
            "",
            "PREFIX",
            "NEXT HOP",
            "PEER",
            "AS PATH",
            "ORIGIN",
            "LOCPRF",
            "MED",
            "COMMUNITIES",
        ],
        routes
            .iter()
            .map(|r| {
                vec![
                    format!(
                        "{}{}",
                        if r.best { "*" } else { " " },
                        if r.stale { "S" } else { " " }
                    ),
                    r.prefix.clone(),
                    r.next_hop.clone(),
                    r.peer.clone(),
                    r.as_path.clone(),
                    r.origin.clone(),
                    r.local_pref.map(|v| v.to_string()).unwrap_or_default(),
                    r.med.map(|v| v.to_string()).unwrap_or_default(),
                    r.communities
                        .iter()
                        .chain(&r.large_communities)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect(),
    );
}

fn print_blocks(b: &crate::control::Blocks) {
    if !b.cluster {
        println!("petreld runs without a datastore: no blocks");
        return;
    }
    if !b.datastore_ok {
        println!(
            "datastore unreachable ({}): showing the last known state",
            b.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    println!(
        "{:<28} {:<16} {:<9} {:>6} {:>7} {:>6}  AFFINITY",
        "BLOCK", "POOL", "KIND", "TOTAL", "IN USE", "MINE"
    );
    for r in &b.blocks {
        println!(
            "{:<28} {:<16} {:<9} {:>6} {:>7} {:>6}  {}",
            r.cidr, r.pool, r.kind, r.total, r.in_use, r.mine, r.affinity
        );
    }
    println!();
    println!("{:<44} WHY", "ADVERTISED");
    for (p, why) in &b.advertised {
        println!("{p:<44} {why}");
    }
}

fn print_services(v: &crate::control::Services) {
    if !v.cluster {
        println!("petreld runs without a datastore: no services");
        return;
    }
    if !v.datastore_ok {
        println!(
            "datastore unreachable ({}): showing the last known state",
            v.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    println!(
        "{:<40} {:<44} {:<10} WHY",
        "SERVICE", "ADDRESS", "ADVERTISED"
    );
    for r in &v.services {
        println!(
            "{:<40} {:<44} {:<10} {}",
            r.service,
            r.address,
            if r.advertised { "yes" } else { "no" },
            r.why
        );
    }
}

fn print_fib(routes: &[FibRow]) {
    let opt = |m: Option<u32>| m.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    table(
        &["PREFIX", "KIND", "NEXT HOPS", "MTU"],
        routes
            .iter()
            .map(|r| {
                vec![
                    r.prefix.clone(),
                    r.kind.clone(),
                    if r.next_hops.is_empty() {
                        "-".into()
                    } else {
                        r.next_hops.join(", ")
                    },
                    opt(r.mtu),
                ]
            })
            .collect(),
    );
}

fn print_mtu(m: &MtuStatus) {
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    println!("host MTU       {}", opt(m.host_mtu));
    println!("interface      {}", m.interface.as_deref().unwrap_or("-"));
    println!("encapsulation  {}", m.encapsulation);
    println!("overhead       {}", m.overhead);
    println!("pod MTU        {}", opt(m.pod_mtu));
    println!("source         {}", m.source);
    println!("file           {}", m.file);
    if let Some(e) = &m.error {
        println!("error          {e}");
    }
}

/// Milliseconds from microseconds, without a trailing ".0".
fn ms(us: u64) -> String {
    if (us / 1000) * 1000 == us {
        format!("{}", us / 1000)
    } else {
        format!("{:.1}", us as f64 / 1000.0)
    }
}

fn print_bfd(sessions: &[BfdRow]) {
    if sessions.is_empty() {
        println!("no BFD sessions (no peer has bfd)");
        return;
    }
    println!(
        "{:<28} {:<5} {:<9} {:<9} {:>12} {:>7} {:>9} {:>10} {:>5}  {:<21} DIAG",
        "PEER", "HOPS", "STATE", "REMOTE", "TX/RX MS", "MULT", "DETECT", "UPTIME", "FLAPS", "AUTH"
    );
    for b in sessions {
        let diag = if b.state == "Up" {
            "-".to_string()
        } else if b.remote_diag != "no diagnostic"
            && b.local_diag == "neighbor signaled session down"
        {
            format!("{} (peer: {})", b.local_diag, b.remote_diag)
        } else {
            b.local_diag.clone()
        };
        // The type only, and how many packets failed it: never the key.
        let auth = match (&b.auth, b.auth_failures) {
            (None, 0) => "-".to_string(),
            (None, n) => format!("- ({n} failed)"),
            (Some(a), 0) => a.clone(),
            (Some(a), n) => format!("{a} ({n} failed)"),
        };
        println!(
            "{:<28} {:<5} {:<9} {:<9} {:>12} {:>7} {:>9} {:>10} {:>5}  {:<21} {}",
            b.peer,
            if b.multihop { "multi" } else { "one" },
            b.state,
            b.remote_state,
            format!("{}/{}", ms(b.min_tx_us), ms(b.min_rx_us)),
            format!("{}/{}", b.multiplier, b.remote_multiplier),
            b.detection_time_us
                .map_or("-".into(), |d| format!("{} ms", ms(d))),
            b.uptime_seconds.map_or("-".into(), duration),
            b.flaps,
            auth,
            diag
        );
    }
}
