//! `[bgp]`: the speaker, its peers (see [`super::peer`]) and what it
//! originates.

use super::peer::{self, RawPeer};
use super::ConfigError;
use petrel_bgp::speaker::{GracefulRestartSettings, PeerSettings};
use petrel_bgp::wire::attr::{Community, LargeCommunity};
use petrel_bgp::wire::family::Family;
use petrel_bgp::wire::Prefix;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    pub(super) listen: Option<Vec<String>>,
    pub(super) cluster_id: Option<String>,
    pub(super) graceful_restart: Option<RawGr>,
    #[serde(default)]
    pub(super) max_paths: Option<usize>,
    #[serde(default)]
    pub(super) threads: Option<usize>,
    /// On unless turned off (`None` when absent, `[bgp]` included).
    #[serde(default)]
    pub(super) fast_external_failover: Option<bool>,
    #[serde(default)]
    pub(super) peers: Vec<RawPeer>,
    #[serde(default)]
    pub(super) originate: Vec<RawOriginate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGr {
    pub(super) restart_time: u16,
    #[serde(default)]
    pub(super) long_lived_stale_time: Option<u32>,
    /// RFC 8538's N bit; on unless turned off.
    #[serde(default = "yes")]
    pub(super) notification: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaxPrefix {
    pub(super) limit: u32,
    #[serde(default)]
    pub(super) action: Option<String>,
    #[serde(default)]
    pub(super) restart_after: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOriginate {
    pub(super) prefix: String,
    #[serde(default)]
    pub(super) communities: Vec<String>,
    #[serde(default)]
    pub(super) large_communities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bgp {
    pub listen: Vec<SocketAddr>,
    pub cluster_id: Option<Ipv4Addr>,
    pub graceful_restart: Option<GracefulRestartSettings>,
    pub max_paths: usize,
    /// Threads for the speaker and its sessions (see
    /// `petrel_bgp::speaker::SpeakerConfig::threads`).
    pub threads: usize,
    /// Drop the session of a directly connected peer (eBGP or iBGP) at
    /// once when the link it is reached through goes down (FRR's
    /// `fast-external-failover`, BIRD's `check link`).
    pub fast_external_failover: bool,
    /// The peers as the speaker takes them, validated.
    pub peers: Vec<PeerSettings>,
    pub originate: Vec<Originate>,
}

/// A family as `families` names it, in petreld.toml and in the datastore's
/// records.
pub fn family_by_name(name: &str) -> Option<Family> {
    match name {
        "ipv4-unicast" => Some(Family::IPV4_UNICAST),
        "ipv6-unicast" => Some(Family::IPV6_UNICAST),
        _ => None,
    }
}

/// `families` as the datastore's records hold it: names, validated, in
/// order. The error says what is allowed.
pub fn families_by_name(names: &[String]) -> Result<Vec<Family>, String> {
    if names.is_empty() {
        return Err("families must not be empty".into());
    }
    names
        .iter()
        .map(|s| {
            family_by_name(s).ok_or_else(|| {
                format!("family {s:?}: allowed values are \"ipv4-unicast\" and \"ipv6-unicast\"")
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Originate {
    pub prefix: Prefix,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

/// Validates `[bgp]`: listen addresses, reflection, graceful restart,
/// ECMP, the peers and the originations.
pub(super) fn parse(
    raw: RawBgp,
    node_asn: u32,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<Bgp, ConfigError> {
    let listen = match raw.listen {
        None => vec![
            "0.0.0.0:179".parse().unwrap_or_else(|_| unreachable!()),
            "[::]:179".parse().unwrap_or_else(|_| unreachable!()),
        ],
        Some(v) => v
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<SocketAddr>().map_err(|_| {
                    bad(
                        format!("bgp.listen[{i}]"),
                        format!("{s:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let cluster_id = raw
        .cluster_id
        .map(|s| {
            s.parse::<Ipv4Addr>().map_err(|_| {
                bad(
                    "bgp.cluster_id".into(),
                    format!("{s:?} is not an IPv4 address"),
                )
            })
        })
        .transpose()?;
    let graceful_restart = graceful_restart(raw.graceful_restart, "bgp.graceful_restart", bad)?;
    let max_paths = raw.max_paths.unwrap_or(1);
    if !(1..=64).contains(&max_paths) {
        return Err(bad(
            "bgp.max_paths".into(),
            format!("{max_paths} is outside 1..=64"),
        ));
    }

    let threads = raw.threads.unwrap_or(1);
    if !(1..=16).contains(&threads) {
        return Err(bad(
            "bgp.threads".into(),
            format!("{threads} is outside 1..=16"),
        ));
    }

    let mut peers = Vec::new();
    for (i, p) in raw.peers.into_iter().enumerate() {
        let p = peer::parse(i, p, node_asn, &peers, bad)?;
        peers.push(p);
    }

    let mut originate = Vec::new();
    for (i, o) in raw.originate.into_iter().enumerate() {
        let prefix: Prefix = o.prefix.parse().map_err(|e| {
            bad(
                format!("bgp.originate[{i}].prefix"),
                format!("{:?}: {e}", o.prefix),
            )
        })?;
        let communities = o
            .communities
            .iter()
            .enumerate()
            .map(|(j, c)| {
                c.parse::<Community>().map_err(|e| {
                    bad(
                        format!("bgp.originate[{i}].communities[{j}]"),
                        e.to_string(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let large_communities = o
            .large_communities
            .iter()
            .enumerate()
            .map(|(j, c)| {
                c.parse::<LargeCommunity>().map_err(|e| {
                    bad(
                        format!("bgp.originate[{i}].large_communities[{j}]"),
                        e.to_string(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        originate.push(Originate {
            prefix,
            communities,
            large_communities,
        });
    }
    Ok(Bgp {
        listen,
        cluster_id,
        graceful_restart,
        max_paths,
        threads,
        fast_external_failover: raw.fast_external_failover.unwrap_or(true),
        peers,
        originate,
    })
}

/// Validates a `graceful_restart` table at `field`.
pub(super) fn graceful_restart(
    g: Option<RawGr>,
    field: &str,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<Option<GracefulRestartSettings>, ConfigError> {
    match g {
        None => Ok(None),
        // RFC 4724 §3: the restart time is 12 bits.
        Some(g) if g.restart_time > 4095 => Err(bad(
            format!("{field}.restart_time"),
            format!("{} exceeds 4095 seconds (RFC 4724 §3)", g.restart_time),
        )),
        Some(g) if g.long_lived_stale_time.is_some_and(|t| t > 0xff_ffff) => Err(bad(
            format!("{field}.long_lived_stale_time"),
            "exceeds 16777215 seconds (RFC 9494 §2)".into(),
        )),
        Some(g) => Ok(Some(GracefulRestartSettings {
            restart_time: g.restart_time,
            long_lived_stale_time: g.long_lived_stale_time,
            notification: g.notification,
        })),
    }
}
