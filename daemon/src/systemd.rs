//! systemd's notification protocol (sd_notify(3)) without libsystemd: one
//! datagram of `KEY=VALUE` lines to the unix socket named by NOTIFY_SOCKET
//! (a path, or an abstract name written with a leading `@`).
//!
//! petreld sends READY=1 once [`crate::health::Health`] is ready, STATUS=
//! lines with the peer and route counts, WATCHDOG=1 at half of
//! WATCHDOG_USEC from the main loop's heartbeat (only after the speaker and
//! the FIB task answered, so a stuck daemon is restarted), and STOPPING=1
//! when it begins to stop. Without NOTIFY_SOCKET every call does nothing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;
use tracing::debug;

/// Where notifications go; `None` inside when not run by systemd.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, and removes them
    /// from the environment so that no child inherits them.
    pub fn from_env() -> io::Result<Self> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        let target = match socket {
            None => None,
            Some(s) => {
                let addr = parse_addr(&s.to_string_lossy())?;
                Some((UnixDatagram::unbound()?, addr))
            }
        };
        Ok(Self {
            target,
            watchdog: watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    /// Whether NOTIFY_SOCKET was set.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send WATCHDOG=1 (half of WATCHDOG_USEC), when asked.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (newline-separated assignments).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some((sock, addr)) = &self.target else {
            return Ok(());
        };
        debug!(state, "sd_notify");
        sock.send_to_addr(state.as_bytes(), addr).map(drop)
    }

    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    pub fn status(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", one_line(status)))
    }

    /// WATCHDOG=1, only when systemd asked for it (WATCHDOG_USEC).
    pub fn watchdog(&self) -> io::Result<()> {
        if self.watchdog.is_none() {
            return Ok(());
        }
        self.notify("WATCHDOG=1")
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1\nSTATUS=stopping")
    }

    /// SIGHUP: systemd shows "reloading" until the next READY=1.
    pub fn reloading(&self) -> io::Result<()> {
        self.notify("RELOADING=1")
    }
}

/// The STATUS= line: peers, routes, and what is wrong if anything.
pub fn status_line(
    peers: &[petrel_bgp::speaker::PeerSnapshot],
    routes: usize,
    health: &crate::health::Health,
) -> String {
    let up = peers
        .iter()
        .filter(|p| p.state == petrel_bgp::fsm::State::Established)
        .count();
    let mut s = format!("{up}/{} peers established, {routes} routes", peers.len());
    let reasons = health.degraded_reasons();
    if !reasons.is_empty() {
        let word = if health.is_ready() {
            "degraded"
        } else {
            "starting"
        };
        s += &format!("; {word}: {}", reasons.join(", "));
    }
    s
}

/// STATUS= ends at a newline: keep the text on one line.
fn one_line(s: &str) -> String {
    s.replace('\n', "; ")
}

/// NOTIFY_SOCKET: an absolute path, or `@name` for the abstract namespace.
fn parse_addr(s: &str) -> io::Result<SocketAddr> {
    if let Some(name) = s.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if s.starts_with('/') {
        SocketAddr::from_pathname(s)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={s:?}: expected an absolute path or @abstract-name"),
        ))
    }
}

/// Half of WATCHDOG_USEC (sd_watchdog_enabled(3) recommends pinging at
/// half the timeout), when it is set for this process (WATCHDOG_PID unset
/// or equal to `own_pid`).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let us: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(us / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_and_for_us_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn addresses() {
        assert!(parse_addr("/run/systemd/notify").is_ok());
        assert!(parse_addr("@petrel-test").is_ok());
        let e = parse_addr("relative").unwrap_err().to_string();
        assert!(e.contains("absolute path or @abstract-name"), "{e}");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("petrel-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                parse_addr(&format!("@{name}")).unwrap(),
            )),
            watchdog: None,
        };
        n.ready("2 of 3 peers\nestablished").unwrap();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=2 of 3 peers; established"
        );
    }
}
