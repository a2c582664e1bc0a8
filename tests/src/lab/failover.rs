//! A node of the lab made dead, and what the rest of the lab sees of it:
//! the failures (its petreld frozen with SIGSTOP, its uplink down), where
//! its blocks still are, when the kernel deleted them (`ip monitor route`,
//! stamped as the events arrive, not polled), and a continuous ping that
//! counts what it lost. Shared by `tests/tests/lab_bfd.rs` (behaviour)
//! and `failover-bench` (how long).

use super::cluster::{kernel_route, kernel_routes, Cluster};
use super::Netns;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a node dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// petreld SIGSTOPped: its TCP connections stay open, it sends
    /// nothing (a hung daemon or host). Only BFD or the hold timer tells.
    Stop,
    /// The node's uplink loses carrier (its port on the ToR's bridge set
    /// down): no packet in or out, no TCP reset.
    LinkDown,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Stop => "sigstop",
            Failure::LinkDown => "link-down",
        }
    }

    /// Makes node `victim` fail this way.
    pub fn apply(self, c: &Cluster, victim: usize) -> Result<()> {
        let n = &c.nodes[victim];
        match self {
            Failure::Stop => n
                .petreld
                .running()
                .ok_or_else(|| anyhow!("{}'s petreld is not running", n.name))?
                .pause(),
            Failure::LinkDown => {
                c.tor_ns
                    .ip(&["link", "set", &uplink_port(&n.name), "down"])?;
            }
        }
        Ok(())
    }

    /// Undoes [`Failure::apply`].
    pub fn undo(self, c: &Cluster, victim: usize) -> Result<()> {
        let n = &c.nodes[victim];
        match self {
            Failure::Stop => n
                .petreld
                .running()
                .ok_or_else(|| anyhow!("{}'s petreld is not running", n.name))?
                .resume(),
            Failure::LinkDown => {
                c.tor_ns.ip(&["link", "set", &uplink_port(&n.name), "up"])?;
            }
        }
        Ok(())
    }
}

/// The ToR-side end of a node's uplink (`cluster::attach` names it).
fn uplink_port(node: &str) -> String {
    format!("p-{node}")
}

/// Where node `victim`'s blocks still are: in the ToR's FIB (via the
/// victim), in another node's FIB (petrel's route), as
/// "10.244.1.0/26 in the ToR's FIB".
pub fn victim_routes(c: &Cluster, victim: usize) -> Result<Vec<String>> {
    let v = &c.nodes[victim];
    let mut present = Vec::new();
    for (block, via) in v.blocks() {
        if kernel_routes(&c.tor_ns, block)?
            .iter()
            .any(|r| r.kind == "unicast" && r.gateways.iter().any(|g| g == via))
        {
            present.push(format!("{block} in the ToR's FIB"));
        }
        for n in c.nodes.iter().filter(|n| n.name != v.name) {
            if kernel_route(&n.ns, block)?.is_some() {
                present.push(format!("{block} in {}'s FIB", n.name));
            }
        }
    }
    Ok(present)
}

/// `ip monitor route` in a namespace: the instant each prefix was last
/// deleted or added, stamped when the event was read.
pub struct RouteMonitor {
    child: Child,
    events: Arc<Mutex<HashMap<String, Stamps>>>,
}

/// When a prefix was last deleted and last added.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stamps {
    pub deleted: Option<Instant>,
    pub added: Option<Instant>,
}

impl RouteMonitor {
    /// Starts watching both families in `ns`; returns once `ip` runs
    /// (events from before are not seen).
    pub fn start(ns: &Netns) -> Result<RouteMonitor> {
        let mut child = ns
            .command("ip")
            .args(["monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("ip monitor: no stdout"))?;
        let events: Arc<Mutex<HashMap<String, Stamps>>> = Arc::default();
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let now = Instant::now();
                if let Some((prefix, deleted)) = parse_monitor_line(&line) {
                    let mut g = ev.lock().unwrap_or_else(|e| e.into_inner());
                    let s = g.entry(prefix).or_default();
                    if deleted {
                        s.deleted = Some(now);
                    } else {
                        s.added = Some(now);
                    }
                }
            }
        });
        // `ip monitor` subscribes before it prints anything; a short wait
        // covers the exec.
        std::thread::sleep(std::time::Duration::from_millis(100));
        Ok(RouteMonitor { child, events })
    }

    /// When `prefix` was last deleted, if it was.
    pub fn deleted(&self, prefix: &str) -> Option<Instant> {
        self.stamps(prefix).deleted
    }

    pub fn stamps(&self, prefix: &str) -> Stamps {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(prefix)
            .copied()
            .unwrap_or_default()
    }

    /// Forgets every event so far.
    pub fn clear(&self) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of `ip monitor route`: (prefix, deleted?) for a unicast
/// route of the main table, `None` for anything else ("Deleted
/// 10.244.1.0/26 via 10.99.0.12 dev eth0 proto petrel metric 20",
/// "fd00:10:244::/122 nhid 20 via fd00:99::11 dev br0 proto bgp").
pub fn parse_monitor_line(line: &str) -> Option<(String, bool)> {
    let mut w = line.split_whitespace().peekable();
    let deleted = w.peek() == Some(&"Deleted");
    if deleted {
        w.next();
    }
    let first = w.next()?;
    // Other route types name themselves first; other tables say so.
    if matches!(
        first,
        "blackhole" | "unreachable" | "prohibit" | "local" | "broadcast" | "multicast"
    ) || line.contains(" table ")
    {
        return None;
    }
    let prefix = first.strip_prefix("unicast").map_or(first, str::trim);
    if !prefix.contains('/') {
        return None;
    }
    Some((prefix.to_string(), deleted))
}

/// A continuous ping (every 0.1 s, 1 s timeout) from a namespace.
pub struct Pinger {
    child: Child,
    pub dst: String,
}

/// What a [`Pinger`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingLoss {
    pub sent: u64,
    /// Probes before the last answered one without an answer (the one in
    /// flight when stopped does not count).
    pub lost: u64,
    pub missing: Vec<u64>,
}

impl Pinger {
    pub fn start(ns: &Netns, dst: &str) -> Result<Pinger> {
        let child = ns
            .command("ping")
            .args(["-n", "-i", "0.1", "-W", "1", dst])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Pinger {
            child,
            dst: dst.to_string(),
        })
    }

    /// Stops it (SIGINT, so ping prints its summary) and counts.
    pub fn finish(self) -> Result<PingLoss> {
        super::netns::kill(self.child.id(), libc::SIGINT);
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_ping(&text)
    }
}

/// Counts the lost probes of `ping -n` output: sequence numbers up to the
/// last answered one that got no answer, and more than one unanswered
/// after it (the last may have been in flight when ping stopped).
pub fn parse_ping(text: &str) -> Result<PingLoss> {
    let mut seqs: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let Some(sent) = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    else {
        bail!("no ping summary: {text}");
    };
    let last = seqs.last().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=last)
        .filter(|s| seqs.binary_search(s).is_err())
        .collect();
    let lost = missing.len() as u64 + sent.saturating_sub(last).saturating_sub(1);
    Ok(PingLoss {
        sent,
        lost,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines() {
        assert_eq!(
            parse_monitor_line(
                "Deleted 10.244.1.0/26 via 10.99.0.12 dev eth0 proto petrel metric 20"
            ),
            Some(("10.244.1.0/26".into(), true))
        );
        assert_eq!(
            parse_monitor_line("fd00:10:244:0:1::/122 nhid 20 via fd00:99::11 dev br0 proto bgp metric 20 pref medium"),
            Some(("fd00:10:244:0:1::/122".into(), false))
        );
        assert_eq!(
            parse_monitor_line("blackhole 10.244.1.0/26 proto petrel metric 65535"),
            None
        );
        assert_eq!(
            parse_monitor_line("Deleted local 10.99.0.11 dev eth0 table local proto kernel"),
            None
        );
        // A host route prints no length: not a block.
        assert_eq!(parse_monitor_line("10.99.0.12 dev eth0 scope link"), None);
    }

    #[test]
    fn ping_loss() {
        let text = "PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.
64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.1 ms
64 bytes from 10.244.1.2: icmp_seq=2 ttl=62 time=0.1 ms
64 bytes from 10.244.1.2: icmp_seq=5 ttl=62 time=0.1 ms

--- 10.244.1.2 ping statistics ---
6 packets transmitted, 3 received, 50% packet loss, time 500ms
";
        let l = parse_ping(text).unwrap();
        assert_eq!(l.missing, vec![3, 4]);
        assert_eq!((l.sent, l.lost), (6, 2));
        // Two unanswered after the last answer: one lost, one in flight.
        let l = parse_ping(&text.replace("6 packets", "7 packets")).unwrap();
        assert_eq!(l.lost, 3);
        assert!(parse_ping("nothing").is_err());
    }
}
