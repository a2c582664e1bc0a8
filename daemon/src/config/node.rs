//! `[node]`: who this node is.

use super::{ConfigError, DEFAULT_ASN};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: String,
    pub(super) router_id: Option<String>,
    pub(super) asn: Option<u32>,
    #[serde(default)]
    pub(super) addresses: Vec<String>,
    pub(super) interface: Option<String>,
    #[serde(default)]
    pub(super) labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub router_id: Ipv4Addr,
    /// The AS in effect: the file's, else [`DEFAULT_ASN`] until the
    /// cluster's BGP configuration says otherwise.
    pub asn: u32,
    /// Whether the file set `asn` (then it wins over the cluster's).
    pub asn_from_file: bool,
    /// The node's addresses with their prefix lengths: registered in the
    /// datastore and used for the node-to-node mesh.
    pub addresses: Vec<ipnet::IpNet>,
    /// Take the addresses from this interface instead.
    pub interface: Option<String>,
    /// Labels registered for pool and peer node selectors.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Validates `[node]`.
pub(super) fn parse(
    raw: RawNode,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<Node, ConfigError> {
    if raw.name.trim().is_empty() {
        return Err(bad("node.name".into(), "must not be empty".into()));
    }
    let addresses = raw
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse::<ipnet::IpNet>().map_err(|_| {
                bad(
                    format!("node.addresses[{i}]"),
                    format!("{a:?} is not ADDRESS/PREFIXLEN (e.g. \"10.0.0.5/24\")"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !addresses.is_empty() && raw.interface.is_some() {
        return Err(bad(
            "node.interface".into(),
            "give either node.addresses or node.interface, not both".into(),
        ));
    }
    let router_id: Ipv4Addr = match &raw.router_id {
        Some(r) => r.parse().map_err(|_| {
            bad(
                "node.router_id".into(),
                format!("{r:?} is not an IPv4 address"),
            )
        })?,
        None => addresses
            .iter()
            .find_map(|a| match a.addr() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| {
                bad(
                    "node.router_id".into(),
                    "required unless node.addresses has an IPv4 address to take it from".into(),
                )
            })?,
    };
    let node_asn = raw.asn.unwrap_or(DEFAULT_ASN);
    if router_id.is_unspecified() {
        return Err(bad(
            "node.router_id".into(),
            "0.0.0.0 is not allowed (RFC 6286: non-zero)".into(),
        ));
    }
    if node_asn == 0 || node_asn == 23456 {
        return Err(bad(
            "node.asn".into(),
            format!("{node_asn} is reserved (RFC 7607, RFC 6793)"),
        ));
    }
    Ok(Node {
        name: raw.name,
        router_id,
        asn: node_asn,
        asn_from_file: raw.asn.is_some(),
        addresses,
        interface: raw.interface,
        labels: raw.labels,
    })
}
