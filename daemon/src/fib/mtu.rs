//! The pod MTU: the host MTU (smallest of the up interfaces that match a
//! pattern, or the interface holding a given address) minus the
//! encapsulation's overhead, written atomically to the file petrel-ipam
//! reads. Selection and arithmetic are pure functions over the interface
//! list; [`detect`] feeds them a netlink dump.

use super::msg::{AddrInfo, LinkInfo};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;

/// The encapsulation between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encap {
    #[default]
    None,
    Ipip,
    Vxlan,
    Wireguard,
}

impl Encap {
    /// Octets each packet gains, for an IPv4 or IPv6 underlay.
    pub fn overhead(self, underlay_v6: bool) -> u32 {
        match (self, underlay_v6) {
            (Encap::None, _) => 0,
            // Outer IPv4 header (IPv6-in-IPv6 would be 40; Calico's IPIP is v4).
            (Encap::Ipip, _) => 20,
            // Outer IP + UDP 8 + VXLAN 8 + inner Ethernet 14.
            (Encap::Vxlan, false) => 50,
            (Encap::Vxlan, true) => 70,
            // Outer IP + UDP 8 + WireGuard header 16 + auth tag 16.
            (Encap::Wireguard, false) => 60,
            (Encap::Wireguard, true) => 80,
        }
    }
}

impl Encap {
    pub fn name(self) -> &'static str {
        match self {
            Encap::None => "none",
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
            Encap::Wireguard => "wireguard",
        }
    }
}

/// Which interfaces carry the node's traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    /// Interface names matching a glob (`*` and `?`), e.g. `eth*`.
    Pattern(String),
    /// The interface holding this address (the node address).
    Address(IpAddr),
    /// The interface holding this address when one does, else the
    /// default route's (never "every interface": pod veths carry the pod
    /// MTU, and counting them would shrink the MTU at each detection).
    AddressOrDefaultRoute(Option<IpAddr>),
}

/// The link that sets the host MTU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMtu {
    pub mtu: u32,
    pub interface: String,
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The smallest MTU of the selected interfaces that are up (loopback never
/// counts); `None` when none is selected.
pub fn host_mtu(links: &[LinkInfo], addrs: &[AddrInfo], sel: &Select) -> Option<u32> {
    host_link(links, addrs, None, sel).map(|h| h.mtu)
}

/// The selected link with the smallest MTU; `default_ifindex` is the
/// default route's interface, for [`Select::AddressOrDefaultRoute`].
pub fn host_link(
    links: &[LinkInfo],
    addrs: &[AddrInfo],
    default_ifindex: Option<u32>,
    sel: &Select,
) -> Option<HostMtu> {
    let holds = |l: &LinkInfo, a: &IpAddr| {
        addrs
            .iter()
            .any(|x| x.ifindex == l.ifindex && x.net.addr() == *a)
    };
    let usable = || links.iter().filter(|l| l.up && l.name != "lo" && l.mtu > 0);
    let pick = |it: &mut dyn Iterator<Item = &LinkInfo>| {
        it.min_by_key(|l| l.mtu).map(|l| HostMtu {
            mtu: l.mtu,
            interface: l.name.clone(),
        })
    };
    match sel {
        Select::Pattern(p) => pick(&mut usable().filter(|l| glob(p, &l.name))),
        Select::Address(a) => pick(&mut usable().filter(|l| holds(l, a))),
        Select::AddressOrDefaultRoute(a) => a
            .and_then(|a| pick(&mut usable().filter(|l| holds(l, &a))))
            .or_else(|| pick(&mut usable().filter(|l| Some(l.ifindex) == default_ifindex))),
    }
}

/// The pod MTU for a host MTU.
pub fn pod_mtu(host: u32, encap: Encap, underlay_v6: bool) -> u32 {
    host.saturating_sub(encap.overhead(underlay_v6))
}

/// Detects the pod MTU from the kernel's interfaces.
pub fn detect(sel: &Select, encap: Encap, underlay_v6: bool) -> io::Result<Option<u32>> {
    Ok(detect_host(sel)?.map(|h| pod_mtu(h.mtu, encap, underlay_v6)))
}

/// Detects the host MTU and the interface that sets it.
pub fn detect_host(sel: &Select) -> io::Result<Option<HostMtu>> {
    let (links, addrs) = super::monitor::links_and_addrs()?;
    let default_ifindex = match sel {
        Select::AddressOrDefaultRoute(_) => super::monitor::default_route_ifindex()?,
        _ => None,
    };
    Ok(host_link(&links, &addrs, default_ifindex, sel))
}

/// How the pod MTU is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Detected: host MTU minus the encapsulation's overhead.
    Auto,
    /// As configured.
    Fixed(u32),
}

/// The MTU settings (`[mtu]` in petreld.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtuSettings {
    pub mode: Mode,
    pub encap: Encap,
    pub underlay_v6: bool,
    pub select: Select,
    /// The pod MTU file petrel-ipam reads.
    pub file: std::path::PathBuf,
}

/// The smallest pod MTU petrel writes: petrel-ipam ignores smaller values
/// (IPv4's minimum datagram every host must accept, RFC 791).
pub const MIN_POD_MTU: u32 = 576;

pub use crate::control::MtuStatus;

impl MtuSettings {
    /// Detects (or takes the fixed value); never fails: a failure is in
    /// [`MtuStatus::error`].
    pub fn evaluate(&self) -> MtuStatus {
        let overhead = self.encap.overhead(self.underlay_v6);
        let mut st = MtuStatus {
            encapsulation: self.encap.name().into(),
            overhead,
            file: self.file.display().to_string(),
            ..MtuStatus::default()
        };
        match detect_host(&self.select) {
            Ok(Some(h)) => {
                st.host_mtu = Some(h.mtu);
                st.interface = Some(h.interface);
            }
            Ok(None) => st.error = Some(format!("no up interface matches {:?}", self.select)),
            Err(e) => st.error = Some(format!("cannot list interfaces: {e}")),
        }
        match self.mode {
            Mode::Fixed(v) => {
                st.source = "fixed".into();
                st.pod_mtu = Some(v);
                st.error = None;
            }
            Mode::Auto => {
                st.source = "auto".into();
                if let Some(h) = st.host_mtu {
                    let pod = pod_mtu(h, self.encap, self.underlay_v6);
                    if pod >= MIN_POD_MTU {
                        st.pod_mtu = Some(pod);
                    } else {
                        st.error = Some(format!(
                            "host MTU {h} minus {overhead} ({}) is below {MIN_POD_MTU}",
                            self.encap.name()
                        ));
                    }
                }
            }
        }
        st
    }
}

/// Writes a file atomically: a temporary file beside it, synced, renamed
/// over it. Readers see the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Writes the pod MTU (decimal and a newline) atomically.
pub fn write_pod_mtu(path: &Path, mtu: u32) -> io::Result<()> {
    write_atomic(path, format!("{mtu}\n").as_bytes())
}

/// Evaluates the settings, writes the pod MTU file when the pod MTU
/// changed (or `force`), and records the outcome in `status` and in the
/// health's degraded reasons. Returns the new pod MTU when it changed.
pub fn refresh(
    settings: &MtuSettings,
    status: &std::sync::Mutex<MtuStatus>,
    health: &crate::health::Health,
    force: bool,
) -> Option<Option<u32>> {
    let mut new = settings.evaluate();
    let old = status.lock().unwrap_or_else(|e| e.into_inner()).pod_mtu;
    let changed = new.pod_mtu != old;
    if let Some(m) = new.pod_mtu.filter(|_| changed || force) {
        match write_pod_mtu(&settings.file, m) {
            Ok(()) => {
                tracing::info!(pod_mtu = m, host_mtu = ?new.host_mtu, interface = ?new.interface, file = %settings.file.display(), "pod MTU written")
            }
            Err(e) => {
                new.error = Some(format!("cannot write {}: {e}", settings.file.display()));
            }
        }
    }
    if let Some(e) = &new.error {
        tracing::warn!(error = %e, "pod MTU");
    }
    health.set_reason("mtu", new.error.as_ref().map(|e| format!("mtu: {e}")));
    *status.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
    changed.then_some(new.pod_mtu)
}

/// Re-detects on link and address changes (coalesced: a pod start brings
/// a burst of them) and calls `on_change` with each new pod MTU. Runs until
/// the monitor fails; fixed mode needs no watching.
pub async fn watch<F, Fut>(
    settings: MtuSettings,
    status: std::sync::Arc<std::sync::Mutex<MtuStatus>>,
    health: std::sync::Arc<crate::health::Health>,
    mut on_change: F,
) where
    F: FnMut(Option<u32>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut monitor = match super::Monitor::open_links() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch links; the pod MTU is detected at start only");
            return;
        }
    };
    loop {
        if let Err(e) = monitor.next().await {
            tracing::warn!(error = %e, "link monitor failed; detecting the MTU again");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = monitor.poll();
        let changed = tokio::task::block_in_place(|| refresh(&settings, &status, &health, false));
        if let Some(m) = changed {
            on_change(m).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ifindex: u32, name: &str, mtu: u32, up: bool) -> LinkInfo {
        LinkInfo {
            ifindex,
            name: name.into(),
            mtu,
            up,
            carrier: up,
        }
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("eth*", "eth0", true),
            ("eth*", "eth", true),
            ("eth*", "ens3", false),
            ("e*0", "eth10", true),
            ("e?h0", "eth0", true),
            ("*", "anything", true),
            ("eth0", "eth01", false),
            ("*x*y", "axbxcy", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn smallest_up_matching_interface() {
        let links = [
            link(1, "lo", 65536, true),
            link(2, "eth0", 9000, true),
            link(3, "eth1", 1500, true),
            link(4, "eth2", 1280, false),
            link(5, "ens5", 1400, true),
        ];
        let addrs = [AddrInfo {
            ifindex: 5,
            net: "10.0.0.5/24".parse().unwrap(),
            flags: 0,
        }];
        let pat = Select::Pattern("eth*".into());
        assert_eq!(host_mtu(&links, &addrs, &pat), Some(1500));
        let by_addr = Select::Address("10.0.0.5".parse().unwrap());
        assert_eq!(host_mtu(&links, &addrs, &by_addr), Some(1400));
        assert_eq!(
            host_mtu(&links, &addrs, &Select::Pattern("wl*".into())),
            None
        );
    }

    #[test]
    fn overheads() {
        assert_eq!(pod_mtu(1500, Encap::None, false), 1500);
        assert_eq!(pod_mtu(1500, Encap::Ipip, false), 1480);
        assert_eq!(pod_mtu(1500, Encap::Vxlan, false), 1450);
        assert_eq!(pod_mtu(1500, Encap::Vxlan, true), 1430);
        assert_eq!(pod_mtu(1500, Encap::Wireguard, false), 1440);
        assert_eq!(pod_mtu(1500, Encap::Wireguard, true), 1420);
        assert_eq!(pod_mtu(40, Encap::Wireguard, true), 0);
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("mtu");
        write_pod_mtu(&f, 1450).unwrap();
        write_pod_mtu(&f, 1440).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1440\n");
        let leftovers = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(leftovers, 1);
    }
}
