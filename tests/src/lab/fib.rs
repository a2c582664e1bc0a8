//! The kernel FIB of a namespace, from `ip -j route show`.

use super::Netns;
use anyhow::Result;
use serde_json::Value;

/// One kernel route, as every suite reads it (the only parser of
/// `ip -j route show` in the lab).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelRoute {
    /// `"10.0.0.0/24"`, `"fd00::/48"`; host routes get `/32` or `/128`.
    pub dst: String,
    /// `"unicast"`, `"blackhole"`, ...
    pub kind: String,
    /// `"bird"`, `"bgp"`, `"petrel"`, `"kernel"`, ...
    pub protocol: String,
    /// Gateways (several for a multipath route); IPv4 routes may have an
    /// IPv6 gateway (RFC 8950: `via inet6`).
    pub gateways: Vec<String>,
    pub devs: Vec<String>,
    /// RTAX_MTU, when the route has one.
    pub mtu: Option<u64>,
    pub metric: Option<u64>,
}

impl KernelRoute {
    /// Installed by petreld (its protocol, by name or number).
    pub fn is_petrel(&self) -> bool {
        super::cluster::PROTOCOLS.contains(&self.protocol.as_str())
    }
}

/// IPv4 and IPv6 routes of the main table.
pub fn routes(ns: &Netns) -> Result<Vec<KernelRoute>> {
    let mut out = parse(&ns.ip(&["-j", "-4", "route", "show"])?, false)?;
    out.extend(parse(&ns.ip(&["-j", "-6", "route", "show"])?, true)?);
    Ok(out)
}

/// Routes installed by a routing daemon (protocol bird, bgp, or petrel's).
pub fn bgp_routes(ns: &Netns) -> Result<Vec<KernelRoute>> {
    let mut r = routes(ns)?;
    r.retain(|r| !matches!(r.protocol.as_str(), "kernel" | "boot" | "static" | "ra"));
    Ok(r)
}

/// The main-table routes for exactly `prefix`, of its family (all types:
/// unicast and blackhole); `dst` is `prefix` as given.
pub fn exact(ns: &Netns, prefix: &str) -> Result<Vec<KernelRoute>> {
    let v6 = prefix.contains(':');
    let family = if v6 { "-6" } else { "-4" };
    let json = ns.ip(&[
        "-j", family, "route", "show", "table", "main", "exact", prefix,
    ])?;
    let mut routes = parse(&json, v6)?;
    for r in &mut routes {
        r.dst = prefix.to_string();
    }
    Ok(routes)
}

/// Parses `ip -j route show` for one family.
pub fn parse(json: &str, v6: bool) -> Result<Vec<KernelRoute>> {
    let v: Value = serde_json::from_str(if json.trim().is_empty() { "[]" } else { json })?;
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let mut dst = r["dst"].as_str().unwrap_or_default().to_string();
        if dst == "default" {
            dst = if v6 { "::/0" } else { "0.0.0.0/0" }.into();
        } else if !dst.contains('/') {
            dst += if v6 { "/128" } else { "/32" };
        }
        let mut f = KernelRoute {
            dst,
            kind: r["type"].as_str().unwrap_or("unicast").to_string(),
            protocol: r["protocol"].as_str().unwrap_or("boot").to_string(),
            mtu: r["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|m| m["mtu"].as_u64()),
            metric: r["metric"].as_u64(),
            ..KernelRoute::default()
        };
        let hops: Vec<&Value> = match r["nexthops"].as_array() {
            Some(a) => a.iter().collect(),
            None => vec![r],
        };
        for h in hops {
            if let Some(g) = h["gateway"].as_str().or(h["via"]["host"].as_str()) {
                f.gateways.push(g.to_string());
            }
            if let Some(d) = h["dev"].as_str() {
                f.devs.push(d.to_string());
            }
        }
        out.push(f);
    }
    Ok(out)
}
