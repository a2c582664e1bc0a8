//! The operations sections of petreld.toml: `[mtu]`, `[metrics]`, `[log]`.
//! Same two steps as the rest of the file: serde reads plain structures,
//! [`parse`] validates them with errors naming the file, the field and
//! what is allowed.

use super::ConfigError;
use crate::fib::mtu::{Encap, Mode, MIN_POD_MTU};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where petrel-ipam reads the pod MTU (its `mtu_file` default).
pub const DEFAULT_MTU_FILE: &str = "/run/petrel/pod-mtu";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMtu {
    mode: Option<String>,
    value: Option<u32>,
    encapsulation: Option<String>,
    underlay: Option<String>,
    interface: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    enabled: Option<bool>,
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

/// `[mtu]`: how the pod MTU is chosen and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mtu {
    pub mode: Mode,
    pub encapsulation: Encap,
    /// The node-to-node network is IPv6 (larger VXLAN/WireGuard overhead).
    pub underlay_v6: bool,
    /// Interfaces whose smallest MTU is the host MTU; `None`: the interface
    /// holding the node address, else the default route's.
    pub interface: Option<String>,
    pub file: PathBuf,
}

impl Mtu {
    /// The detection settings; without `interface`, the interface holding
    /// `node_address`, else the default route's.
    pub fn settings(&self, node_address: Option<std::net::IpAddr>) -> crate::fib::mtu::MtuSettings {
        use crate::fib::mtu::{MtuSettings, Select};
        MtuSettings {
            mode: self.mode.clone(),
            encap: self.encapsulation,
            underlay_v6: self.underlay_v6,
            select: match &self.interface {
                Some(p) => Select::Pattern(p.clone()),
                None => Select::AddressOrDefaultRoute(node_address),
            },
            file: self.file.clone(),
        }
    }
}

/// `[metrics]`: the Prometheus, /healthz and /readyz endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// `None`: disabled.
    pub address: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter (`info`, `petrel_bgp=debug,info`); PETREL_LOG wins.
    pub level: String,
}

/// The validated operations sections.
#[derive(Debug)]
pub(super) struct Ops {
    pub mtu: Mtu,
    pub metrics: Metrics,
    pub log: Log,
}

pub(super) fn parse(
    file: &str,
    mtu: RawMtu,
    metrics: RawMetrics,
    log: RawLog,
) -> Result<Ops, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::Invalid {
        file: file.to_string(),
        field: field.to_string(),
        message,
    };
    let mode = match (mtu.mode.as_deref(), mtu.value) {
        (None | Some("auto"), None) => Mode::Auto,
        (None | Some("auto"), Some(_)) => {
            return Err(bad(
                "mtu.value",
                "is only for mode = \"fixed\" (auto detects the MTU)".into(),
            ))
        }
        (Some("fixed"), None) => {
            return Err(bad(
                "mtu.value",
                format!("mode = \"fixed\" needs a value, the pod MTU ({MIN_POD_MTU}..=65535)"),
            ))
        }
        (Some("fixed"), Some(v)) if !(MIN_POD_MTU..=65535).contains(&v) => {
            return Err(bad(
                "mtu.value",
                format!("{v} is outside {MIN_POD_MTU}..=65535"),
            ))
        }
        (Some("fixed"), Some(v)) => Mode::Fixed(v),
        (Some(o), _) => {
            return Err(bad(
                "mtu.mode",
                format!("{o:?}: allowed values are \"auto\" and \"fixed\""),
            ))
        }
    };
    let encapsulation = match mtu.encapsulation.as_deref() {
        None | Some("none") => Encap::None,
        Some("ipip") => Encap::Ipip,
        Some("vxlan") => Encap::Vxlan,
        Some("wireguard") => Encap::Wireguard,
        Some(o) => {
            return Err(bad(
                "mtu.encapsulation",
                format!(
                    "{o:?}: allowed values are \"none\", \"ipip\", \"vxlan\" and \"wireguard\""
                ),
            ))
        }
    };
    let underlay_v6 = match mtu.underlay.as_deref() {
        None | Some("ipv4") => false,
        Some("ipv6") => true,
        Some(o) => {
            return Err(bad(
                "mtu.underlay",
                format!("{o:?}: allowed values are \"ipv4\" and \"ipv6\""),
            ))
        }
    };
    if let Some(p) = &mtu.interface {
        if p.is_empty() || p.len() > 64 || p.contains(char::is_whitespace) {
            return Err(bad(
                "mtu.interface",
                format!("{p:?}: an interface name or a pattern with * and ?, e.g. \"eth*\""),
            ));
        }
    }
    let mtu_file = mtu.file.unwrap_or_else(|| PathBuf::from(DEFAULT_MTU_FILE));
    if mtu_file.file_name().is_none() || mtu_file.is_relative() {
        return Err(bad(
            "mtu.file",
            format!("{:?}: must be an absolute file path", mtu_file.display()),
        ));
    }

    let address = if metrics.enabled == Some(false) {
        None
    } else {
        let a = metrics
            .address
            .unwrap_or_else(|| super::DEFAULT_METRICS_ADDRESS.to_string());
        Some(a.parse::<SocketAddr>().map_err(|_| {
            bad(
                "metrics.address",
                format!("{a:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"),
            )
        })?)
    };

    let format = match log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(o) => {
            return Err(bad(
                "log.format",
                format!("{o:?}: allowed values are \"text\" and \"json\""),
            ))
        }
    };
    let level = log.level.unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return Err(bad(
            "log.level",
            format!(
                "{level:?}: {e} (a level: error, warn, info, debug, trace; or a filter such as \"petrel_bgp=debug,info\")"
            ),
        ));
    }

    Ok(Ops {
        mtu: Mtu {
            mode,
            encapsulation,
            underlay_v6,
            interface: mtu.interface,
            file: mtu_file,
        },
        metrics: Metrics { address },
        log: Log { format, level },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(text: &str) -> Result<Ops, String> {
        #[derive(Deserialize)]
        struct T {
            #[serde(default)]
            mtu: RawMtu,
            #[serde(default)]
            metrics: RawMetrics,
            #[serde(default)]
            log: RawLog,
        }
        let t: T = toml::from_str(text).map_err(|e| e.to_string())?;
        parse("/etc/petrel/petreld.toml", t.mtu, t.metrics, t.log).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let o = ops("").unwrap();
        assert_eq!(o.mtu.mode, Mode::Auto);
        assert_eq!(o.mtu.encapsulation, Encap::None);
        assert_eq!(o.mtu.file, PathBuf::from("/run/petrel/pod-mtu"));
        assert_eq!(o.metrics.address, Some("127.0.0.1:9179".parse().unwrap()));
        assert_eq!(
            o.log,
            Log {
                format: LogFormat::Text,
                level: "info".into()
            }
        );
    }

    #[test]
    fn a_complete_set() {
        let o = ops(
            "[mtu]\nmode = \"fixed\"\nvalue = 1400\nencapsulation = \"vxlan\"\nunderlay = \"ipv6\"\ninterface = \"eth*\"\nfile = \"/var/run/mtu\"\n\
             [metrics]\naddress = \"[::1]:9100\"\n[log]\nformat = \"json\"\nlevel = \"petrel_bgp=debug,info\"\n",
        )
        .unwrap();
        assert_eq!(o.mtu.mode, Mode::Fixed(1400));
        assert_eq!(
            (o.mtu.encapsulation, o.mtu.underlay_v6),
            (Encap::Vxlan, true)
        );
        assert_eq!(o.mtu.interface.as_deref(), Some("eth*"));
        assert_eq!(o.metrics.address, Some("[::1]:9100".parse().unwrap()));
        assert_eq!(o.log.format, LogFormat::Json);
        assert_eq!(
            ops("[metrics]\nenabled = false\n").unwrap().metrics.address,
            None
        );
    }

    #[test]
    fn errors_name_file_field_and_allowed_values() {
        for (text, want) in [
            (
                "[mtu]\nmode = \"fixed\"\n",
                "mtu.value: mode = \"fixed\" needs a value",
            ),
            (
                "[mtu]\nmode = \"fixed\"\nvalue = 100\n",
                "mtu.value: 100 is outside 576..=65535",
            ),
            (
                "[mtu]\nvalue = 1400\n",
                "mtu.value: is only for mode = \"fixed\"",
            ),
            (
                "[mtu]\nmode = \"guess\"\n",
                "mtu.mode: \"guess\": allowed values are \"auto\" and \"fixed\"",
            ),
            (
                "[mtu]\nencapsulation = \"gre\"\n",
                "mtu.encapsulation: \"gre\": allowed values are \"none\", \"ipip\"",
            ),
            (
                "[mtu]\nfile = \"pod-mtu\"\n",
                "mtu.file: \"pod-mtu\": must be an absolute file path",
            ),
            (
                "[metrics]\naddress = \"localhost\"\n",
                "metrics.address: \"localhost\" is not ADDRESS:PORT",
            ),
            (
                "[log]\nformat = \"xml\"\n",
                "log.format: \"xml\": allowed values are \"text\" and \"json\"",
            ),
            (
                "[log]\nlevel = \"petrel=loud\"\n",
                "log.level: \"petrel=loud\"",
            ),
        ] {
            let e = ops(text).unwrap_err();
            assert!(e.starts_with("/etc/petrel/petreld.toml: "), "{e}");
            assert!(e.contains(want), "{e}\nwanted: {want}");
        }
    }
}

#[cfg(test)]
mod docs {
    /// docs/config.md's complete example is a valid file, with these
    /// sections in it.
    #[test]
    fn the_complete_example_in_the_docs_parses() {
        let doc = include_str!("../../../docs/config.md");
        let start = doc.find("## A complete example").expect("the section");
        let body = &doc[start..];
        let from = body.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let text = &body[from..from + body[from..].find("```").expect("its end")];
        let c = crate::config::Config::parse("docs/config.md", text).unwrap();
        assert_eq!(c.mtu.encapsulation, crate::fib::mtu::Encap::Ipip);
        assert_eq!(c.metrics.address, Some("127.0.0.1:9179".parse().unwrap()));
        assert_eq!(c.log.level, "info");
    }
}
