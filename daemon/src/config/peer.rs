//! `[[bgp.peers]]`: one peer, validated into the speaker's own
//! [`PeerSettings`]. There is no configuration-side peer type: what the
//! file says, the speaker runs, and the daemon's intent diffs exactly what
//! it hands the speaker. Where a peer came from (the file or the cluster)
//! is the intent's to know; a BFD key file is read here and only its key
//! goes on.

use super::bgp::{RawGr, RawMaxPrefix};
use super::{add_path, Bfd, ConfigError};
use petrel_bgp::policy::{Policy, Rule};
use petrel_bgp::rib::NextHopMode;
use petrel_bgp::speaker::{MaxPrefixAction, PeerSettings};
use petrel_bgp::wire::family::Family;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) address: String,
    pub(super) asn: u32,
    pub(super) port: Option<u16>,
    pub(super) local_address: Option<String>,
    pub(super) local_port: Option<u16>,
    pub(super) local_as: Option<u32>,
    pub(super) allow_own_as: Option<u8>,
    pub(super) password: Option<String>,
    #[serde(default)]
    pub(super) passive: bool,
    pub(super) hold_time: Option<u16>,
    pub(super) keepalive: Option<u16>,
    pub(super) ttl_security: Option<u8>,
    pub(super) next_hop: Option<String>,
    #[serde(default)]
    pub(super) route_reflector_client: bool,
    #[serde(default)]
    pub(super) local_routes_only: bool,
    pub(super) families: Option<Vec<String>>,
    pub(super) add_path: Option<add_path::RawAddPath>,
    pub(super) graceful_restart: Option<RawGr>,
    pub(super) max_prefix: Option<RawMaxPrefix>,
    pub(super) bfd: Option<Bfd>,
    #[serde(default)]
    pub(super) import: Vec<toml::Value>,
    #[serde(default)]
    pub(super) export: Vec<toml::Value>,
}

/// Validates `bgp.peers[i]`; `earlier` are the peers before it (an
/// address may appear once). `node_asn` tells iBGP from eBGP.
pub(super) fn parse(
    i: usize,
    p: RawPeer,
    node_asn: u32,
    earlier: &[PeerSettings],
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<PeerSettings, ConfigError> {
    let f = |name: &str| format!("bgp.peers[{i}].{name}");
    let address: IpAddr = p.address.parse().map_err(|_| {
        bad(
            f("address"),
            format!("{:?} is not an IP address", p.address),
        )
    })?;
    if earlier.iter().any(|q| q.address == address) {
        return Err(bad(f("address"), format!("{address} is configured twice")));
    }
    if p.asn == 0 || p.asn == 23456 {
        return Err(bad(
            f("asn"),
            format!("{} is reserved (RFC 7607, RFC 6793)", p.asn),
        ));
    }
    let local_address = p
        .local_address
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| bad(f("local_address"), format!("{s:?} is not an IP address")))
        })
        .transpose()?;
    if let Some(pw) = &p.password {
        if pw.is_empty() || pw.len() > 80 {
            return Err(bad(
                f("password"),
                "must be 1 to 80 octets (TCP MD5 key, RFC 2385)".into(),
            ));
        }
    }
    let hold_time = p.hold_time.unwrap_or(90);
    // RFC 4271 §4.2: zero or at least three seconds.
    if hold_time == 1 || hold_time == 2 {
        return Err(bad(
            f("hold_time"),
            "must be 0 or at least 3 seconds (RFC 4271 §4.2)".into(),
        ));
    }
    if let Some(k) = p.keepalive {
        if hold_time > 0 && (k == 0 || k > hold_time / 3) {
            return Err(bad(
                f("keepalive"),
                format!(
                    "must be between 1 and a third of hold_time ({})",
                    hold_time / 3
                ),
            ));
        }
    }
    if let Some(t) = p.ttl_security {
        if t == 0 {
            return Err(bad(
                f("ttl_security"),
                "is a hop count: 1 for directly connected peers, up to 254".into(),
            ));
        }
    }
    if let Some(l) = p.local_as {
        if l == 0 || l == 23456 {
            return Err(bad(
                f("local_as"),
                format!("{l} is reserved (RFC 7607, RFC 6793)"),
            ));
        }
    }
    let allow_own_as = p.allow_own_as.unwrap_or(0);
    if allow_own_as > 10 {
        return Err(bad(
            f("allow_own_as"),
            format!("{allow_own_as}: allowed values are 0..=10"),
        ));
    }
    let ibgp = p.asn == p.local_as.unwrap_or(node_asn);
    let next_hop = match p.next_hop.as_deref() {
        Some("self") => NextHopMode::SelfAddr,
        Some("keep") => NextHopMode::Keep,
        // RFC 4271 §5.1.3: eBGP sets our address; iBGP leaves it.
        None if ibgp => NextHopMode::Keep,
        None => NextHopMode::SelfAddr,
        Some(other) => {
            return Err(bad(
                f("next_hop"),
                format!("{other:?}: allowed values are \"self\" and \"keep\""),
            ))
        }
    };
    if p.route_reflector_client && !ibgp {
        return Err(bad(
            f("route_reflector_client"),
            "only internal peers (same asn as node.asn) can be clients".into(),
        ));
    }
    let families = match p.families {
        None => {
            if address.is_ipv4() {
                vec![Family::IPV4_UNICAST]
            } else {
                vec![Family::IPV6_UNICAST]
            }
        }
        Some(v) => v
            .iter()
            .enumerate()
            .map(|(j, s)| {
                super::family_by_name(s).ok_or_else(|| {
                    bad(
                        format!("bgp.peers[{i}].families[{j}]"),
                        format!("{s:?}: allowed values are \"ipv4-unicast\" and \"ipv6-unicast\""),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let add_path = match p.add_path {
        None => Default::default(),
        Some(raw) => add_path::parse(raw, &families)
            .map_err(|(field, message)| bad(f(&format!("add_path.{field}")), message))?,
    };
    let max_prefix = match p.max_prefix {
        None => None,
        Some(m) => {
            let action = match m.action.as_deref() {
                None | Some("restart") => {
                    MaxPrefixAction::Restart(Duration::from_secs(m.restart_after.unwrap_or(60)))
                }
                Some("warn") => MaxPrefixAction::Warn,
                Some(o) => {
                    return Err(bad(
                        f("max_prefix.action"),
                        format!("{o:?}: allowed values are \"restart\" and \"warn\""),
                    ))
                }
            };
            if m.limit == 0 {
                return Err(bad(f("max_prefix.limit"), "must be at least 1".into()));
            }
            Some((m.limit, action))
        }
    };
    let policy = |v: Vec<toml::Value>, name: &str| -> Result<Policy, ConfigError> {
        let rules: Vec<Rule> = toml::Value::Array(v)
            .try_into()
            .map_err(|e: toml::de::Error| bad(f(name), e.message().to_string()))?;
        let p = Policy { rules };
        p.validate().map_err(|e| bad(f(name), e.to_string()))?;
        Ok(p)
    };
    let import = policy(p.import, "import")?;
    let export = policy(p.export, "export")?;
    let bfd = p
        .bfd
        .map(|b| b.load())
        .transpose()
        .map_err(|(field, m)| bad(f(&format!("bfd.{field}")), m))?;
    Ok(PeerSettings {
        address,
        asn: p.asn,
        port: p.port.unwrap_or(179),
        local_address,
        local_port: p.local_port.unwrap_or(0),
        local_as: p.local_as,
        allow_own_as,
        password: p.password,
        passive: p.passive,
        hold_time,
        keepalive: p.keepalive,
        ttl_security: p.ttl_security,
        next_hop,
        rr_client: p.route_reflector_client,
        local_routes_only: p.local_routes_only,
        families,
        add_path,
        graceful_restart: super::bgp::graceful_restart(
            p.graceful_restart,
            &f("graceful_restart"),
            bad,
        )?,
        max_prefix,
        import,
        export,
        bfd,
    })
}
