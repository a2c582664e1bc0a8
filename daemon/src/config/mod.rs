//! petreld's configuration file (TOML).
//!
//! Parsing happens in two steps: serde reads the file into plain structures
//! (rejecting unknown fields, so a typo is an error, not a silently ignored
//! setting), then [`Config::load`] validates values and converts them into
//! typed settings. Every error names the file, the field and what is allowed.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/petrel/petreld.toml";
pub const DEFAULT_SOCKET: &str = "/run/petrel/petreld.sock";
pub const DEFAULT_ASN: u32 = 64512;

mod add_path;
mod bfd;
mod bfd_auth;
mod bgp;
mod datastore;
mod fib;
mod node;
mod ops;
mod peer;

/// The default `[metrics] address`: loopback only, so that nothing is
/// exposed until an operator chooses to.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9179";
pub use add_path::describe as describe_add_path;
pub use bfd::Bfd;
pub use bfd_auth::{BfdAuth, BfdAuthType};
pub use bgp::{families_by_name, family_by_name, Bgp, Originate};
pub use datastore::{Datastore, DEFAULT_IPAM_SOCKET};
pub use fib::Fib;
pub use node::Node;
pub use ops::{Log, LogFormat, Metrics, Mtu, DEFAULT_MTU_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: node::RawNode,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    bgp: bgp::RawBgp,
    #[serde(default)]
    fib: fib::RawFib,
    datastore: Option<datastore::RawDatastore>,
    #[serde(default)]
    mtu: ops::RawMtu,
    #[serde(default)]
    metrics: ops::RawMetrics,
    #[serde(default)]
    log: ops::RawLog,
    ipam: Option<datastore::RawIpam>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: PathBuf,
    pub node: Node,
    pub control_socket: PathBuf,
    pub bgp: Bgp,
    pub fib: Fib,
    /// The cluster datastore; without it petreld runs from this file alone.
    pub datastore: Option<Datastore>,
    /// The IPAM service's socket; `None` when off. Served only with a
    /// datastore.
    pub ipam_socket: Option<PathBuf>,
    pub mtu: Mtu,
    pub metrics: Metrics,
    pub log: Log,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses configuration text; `file` names it in errors. Each section
    /// validates itself (its module); an error names the file and field.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let bad = |field: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field,
            message,
        };
        let node = node::parse(raw.node, &bad)?;
        let bgp = bgp::parse(raw.bgp, node.asn, &bad)?;
        let fib = fib::parse(raw.fib, bgp.graceful_restart, &bad)?;
        let datastore = datastore::parse(raw.datastore, &bad)?;
        let ops = ops::parse(file, raw.mtu, raw.metrics, raw.log)?;
        Ok(Config {
            file: PathBuf::from(file),
            fib,
            mtu: ops.mtu,
            metrics: ops.metrics,
            log: ops.log,
            node,
            datastore,
            ipam_socket: match raw.ipam {
                None => Some(PathBuf::from(DEFAULT_IPAM_SOCKET)),
                Some(i) if i.enabled == Some(false) => None,
                Some(i) => Some(
                    i.socket
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_IPAM_SOCKET)),
                ),
            },
            control_socket: raw
                .control
                .socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            bgp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_bgp::rib::NextHopMode;
    use petrel_bgp::speaker::MaxPrefixAction;
    use petrel_bgp::wire::family::Family;
    use std::time::Duration;

    const GOOD: &str = r#"
[node]
name = "petrel-a"
router_id = "10.99.1.1"
asn = 4200000001
[control]
socket = "/tmp/petreld.sock"
[bgp]
listen = ["10.99.1.1:179", "[fd00:99:1::1]:179"]
cluster_id = "10.99.1.1"
graceful_restart = { restart_time = 120 }
[[bgp.peers]]
address = "10.99.1.2"
asn = 65001
password = "secret"
local_port = 10179
allow_own_as = 1
hold_time = 30
ttl_security = 1
families = ["ipv4-unicast", "ipv6-unicast"]
graceful_restart = { restart_time = 120 }
max_prefix = { limit = 1000, action = "restart", restart_after = 30 }
[[bgp.peers]]
address = "fd00:99:1::3"
asn = 4200000001
route_reflector_client = true
add_path = { send = "ecmp", receive = true }
[[bgp.originate]]
prefix = "10.10.1.0/24"
communities = ["64512:100", "no-export"]
large_communities = ["4200000001:1:2"]
"#;

    /// RFC 8538's N bit is offered unless `notification = false`.
    #[test]
    fn graceful_restart_notification_defaults_on() {
        let c = Config::parse("petreld.toml", GOOD).unwrap();
        assert!(c.bgp.graceful_restart.unwrap().notification);
        assert!(c.bgp.peers[0].graceful_restart.unwrap().notification);
        let off = GOOD.replacen(
            "graceful_restart = { restart_time = 120 }",
            "graceful_restart = { restart_time = 120, notification = false }",
            1,
        );
        let c = Config::parse("petreld.toml", &off).unwrap();
        assert!(!c.bgp.graceful_restart.unwrap().notification);
        let e = Config::parse(
            "petreld.toml",
            &GOOD.replacen(
                "restart_time = 120 }",
                "restart_time = 120, notification = 1 }",
                1,
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("notification"), "{e}");
    }

    /// `[bgp] fast_external_failover` is on unless turned off, with or
    /// without a `[bgp]` section; a wrong type names the field.
    #[test]
    fn fast_external_failover_defaults_on() {
        let c = Config::parse("petreld.toml", GOOD).unwrap();
        assert!(c.bgp.fast_external_failover);
        let no_bgp = GOOD.split("[bgp]").next().unwrap();
        assert!(
            Config::parse("petreld.toml", no_bgp)
                .unwrap()
                .bgp
                .fast_external_failover
        );
        let off = GOOD.replacen("[bgp]\n", "[bgp]\nfast_external_failover = false\n", 1);
        assert!(
            !Config::parse("petreld.toml", &off)
                .unwrap()
                .bgp
                .fast_external_failover
        );
        let e = Config::parse(
            "petreld.toml",
            &GOOD.replacen("[bgp]\n", "[bgp]\nfast_external_failover = \"yes\"\n", 1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("petreld.toml") && e.contains("fast_external_failover"),
            "{e}"
        );
    }

    #[test]
    fn bfd_per_peer_with_defaults_and_ranges() {
        let with = |bfd: &str| {
            Config::parse(
                "petreld.toml",
                &GOOD.replace(
                    "route_reflector_client = true",
                    &format!("route_reflector_client = true\nbfd = {bfd}"),
                ),
            )
        };
        let c = with("{ min_rx_ms = 100 }").unwrap();
        assert_eq!(c.bgp.peers[0].bfd, None);
        let b = c.bgp.peers[1].bfd.clone().unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            (b.min_rx, b.min_tx, b.multiplier, b.multihop, b.auth),
            (ms(100), ms(300), 3, false, None)
        );
        let e = with("{ min_tx_ms = 5 }").unwrap_err().to_string();
        assert!(
            e.contains("bgp.peers[1].bfd.min_tx_ms") && e.contains("10..=60000"),
            "{e}"
        );
        let e = with("{ multiplier = 0 }").unwrap_err().to_string();
        assert!(e.contains("bfd.multiplier"), "{e}");
        let e = with("{ interval = 5 }").unwrap_err().to_string();
        assert!(e.contains("interval"), "{e}");
    }

    #[test]
    fn bfd_auth_reads_its_secret_file_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bfd.key");
        std::fs::write(&key, "s3cret\n").unwrap();
        let with = |auth: &str| {
            Config::parse(
                "petreld.toml",
                &GOOD.replace(
                    "route_reflector_client = true",
                    &format!("route_reflector_client = true\nbfd = {{ auth = {auth} }}"),
                ),
            )
        };
        let good = format!(
            "{{ type = \"keyed-sha1\", key_id = 3, secret_file = {:?} }}",
            key.display().to_string()
        );
        let c = with(&good).unwrap();
        let s = c.bgp.peers[1].bfd.as_ref().unwrap();
        let k = s.auth.as_ref().unwrap();
        assert_eq!(
            (k.kind, k.key_id, k.secret.as_slice()),
            (petrel_bgp::bfd::AuthKind::KeyedSha1, 3, &b"s3cret"[..])
        );
        let e = with(&good.replace("keyed-sha1", "keyed-md5"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("petreld.toml") && e.contains("keyed-md5") && e.contains("keyed-sha1"),
            "{e}"
        );
        let e = with(&good.replace("bfd.key", "missing.key"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("petreld.toml: bgp.peers[1].bfd.auth.secret_file")
                && e.contains("missing.key"),
            "{e}"
        );
        let e = with(&good.replace("key_id = 3", "key_id = 300"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key_id"), "{e}");
    }

    #[test]
    fn parses_a_complete_file() {
        let c = Config::parse("petreld.toml", GOOD).unwrap();
        assert_eq!(c.node.asn, 4_200_000_001);
        assert_eq!(c.bgp.listen.len(), 2);
        assert_eq!(c.bgp.peers[0].next_hop, NextHopMode::SelfAddr);
        assert_eq!(c.bgp.peers[1].next_hop, NextHopMode::Keep);
        assert_eq!(
            (
                c.bgp.peers[0].local_port,
                c.bgp.peers[0].allow_own_as,
                c.bgp.peers[0].local_as
            ),
            (10179, 1, None)
        );
        assert_eq!(c.bgp.peers[1].families, [Family::IPV6_UNICAST]);
        assert_eq!(
            c.bgp.peers[1].add_path.send,
            [(Family::IPV6_UNICAST, petrel_bgp::rib::SendMode::Ecmp)]
        );
        assert!(c.bgp.peers[0].add_path.is_empty());
        assert_eq!(
            c.bgp.peers[0].max_prefix,
            Some((1000, MaxPrefixAction::Restart(Duration::from_secs(30))))
        );
        assert_eq!(c.bgp.originate[0].prefix.to_string(), "10.10.1.0/24");
    }

    fn err(text: &str) -> String {
        Config::parse("/etc/petrel/petreld.toml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_field_and_allowed_values() {
        let e = err("[node]\nname = \"a\"\nrouter_id = \"1.2.3\"\n");
        assert_eq!(
            e,
            "/etc/petrel/petreld.toml: node.router_id: \"1.2.3\" is not an IPv4 address"
        );
        let e = err(&GOOD.replace(
            "families = [\"ipv4-unicast\", \"ipv6-unicast\"]",
            "families = [\"ipv4-flowspec\"]",
        ));
        assert!(
            e.contains("bgp.peers[0].families[0]") && e.contains("\"ipv4-unicast\""),
            "{e}"
        );
        let e = err(&GOOD.replace("hold_time = 30", "hold_time = 2"));
        assert!(
            e.contains("bgp.peers[0].hold_time: must be 0 or at least 3"),
            "{e}"
        );
        let e = err(&GOOD.replace("prefix = \"10.10.1.0/24\"", "prefix = \"10.10.1.0/33\""));
        assert!(e.contains("bgp.originate[0].prefix"), "{e}");
        let e = err(&GOOD.replace(
            "restart_time = 120 }\n[[bgp.peers]]",
            "restart_time = 5000 }\n[[bgp.peers]]",
        ));
        assert!(
            e.contains("graceful_restart.restart_time") && e.contains("4095"),
            "{e}"
        );
        // Unknown fields are errors, with the line.
        let e = err(&GOOD
            .replace("passive", "pasive")
            .replace("ttl_security = 1", "ttl_securty = 1"));
        assert!(
            e.starts_with("/etc/petrel/petreld.toml: ") && e.contains("ttl_securty"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "route_reflector_client = true",
            "route_reflector_client = true\nnext_hop = \"selff\"",
        ));
        assert!(e.contains("\"self\" and \"keep\""), "{e}");
        let e = err(&GOOD.replace("send = \"ecmp\"", "send = { \"ipv4-unicast\" = \"all\" }"));
        assert!(
            e.contains("bgp.peers[1].add_path.send.ipv4-unicast: not one of the peer's families"),
            "{e}"
        );
    }

    #[test]
    fn bgp_threads_default_to_one_and_are_bounded() {
        let c = Config::parse("f.toml", GOOD).unwrap();
        assert_eq!(c.bgp.threads, 1);
        let two = GOOD.replace(
            "cluster_id = \"10.99.1.1\"",
            "cluster_id = \"10.99.1.1\"\nthreads = 2",
        );
        assert_eq!(Config::parse("f.toml", &two).unwrap().bgp.threads, 2);
        let e = Config::parse("f.toml", &two.replace("threads = 2", "threads = 0"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f.toml: bgp.threads: 0 is outside 1..=16");
    }

    #[test]
    fn fib_settings_and_defaults() {
        let c = Config::parse("f.toml", GOOD).unwrap();
        assert_eq!(
            c.fib,
            Fib {
                enabled: true,
                protocol: 202,
                table: 254,
                route_mtu: None,
                sweep_after: 120,
                nexthop_objects: true,
            }
        );
        let c = Config::parse(
            "f.toml",
            &format!("{GOOD}\n[fib]\nprotocol = 99\nroute_mtu = 1450\nenabled = false\n"),
        )
        .unwrap();
        assert_eq!(
            (c.fib.protocol, c.fib.route_mtu, c.fib.enabled),
            (99, Some(1450), false)
        );
        let e = Config::parse("f.toml", &format!("{GOOD}\n[fib]\nprotocol = 2\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml: fib.protocol: 2 is reserved"), "{e}");
        let c = Config::parse(
            "f.toml",
            &format!("{GOOD}\n[fib]\nnexthop_objects = \"off\"\n"),
        )
        .unwrap();
        assert!(!c.fib.nexthop_objects);
        let e = Config::parse(
            "f.toml",
            &format!("{GOOD}\n[fib]\nnexthop_objects = \"on\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml: fib.nexthop_objects: \"on\""), "{e}");
    }

    #[test]
    fn peer_policies_parse_and_errors_name_the_field() {
        let with = GOOD.replace(
            "[[bgp.originate]]",
            "[[bgp.peers.import]]\nmatch = { prefix = { cidr = \"10.0.0.0/8\", op = \"within\" } }\naction = \"reject\"\n[[bgp.originate]]",
        );
        let c = Config::parse("f.toml", &with).unwrap();
        assert_eq!(c.bgp.peers[1].import.rules.len(), 1);
        let bad = with.replace("op = \"within\"", "op = \"inside\"");
        let e = Config::parse("f.toml", &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("f.toml: bgp.peers[1].import: ") && e.contains("inside"),
            "{e}"
        );
    }
}
