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

/// Which interfaces carry the node's traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    /// Interface names matching a glob (`*` and `?`), e.g. `eth*`.
    Pattern(String),
    /// The interface holding this address (the node address).
    Address(IpAddr),
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
    links
        .iter()
        .filter(|l| l.up && l.name != "lo" && l.mtu > 0)
        .filter(|l| match sel {
            Select::Pattern(p) => glob(p, &l.name),
            Select::Address(a) => addrs
                .iter()
                .any(|x| x.ifindex == l.ifindex && x.net.addr() == *a),
        })
        .map(|l| l.mtu)
        .min()
}

/// The pod MTU for a host MTU.
pub fn pod_mtu(host: u32, encap: Encap, underlay_v6: bool) -> u32 {
    host.saturating_sub(encap.overhead(underlay_v6))
}

/// Detects the pod MTU from the kernel's interfaces.
pub fn detect(sel: &Select, encap: Encap, underlay_v6: bool) -> io::Result<Option<u32>> {
    let (links, addrs) = super::monitor::links_and_addrs()?;
    Ok(host_mtu(&links, &addrs, sel).map(|m| pod_mtu(m, encap, underlay_v6)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ifindex: u32, name: &str, mtu: u32, up: bool) -> LinkInfo {
        LinkInfo {
            ifindex,
            name: name.into(),
            mtu,
            up,
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
