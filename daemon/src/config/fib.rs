//! `[fib]`: kernel route installation.

use super::ConfigError;
use petrel_bgp::speaker::GracefulRestartSettings;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFib {
    pub(super) enabled: Option<bool>,
    pub(super) protocol: Option<u8>,
    pub(super) table: Option<u32>,
    pub(super) route_mtu: Option<u32>,
    pub(super) sweep_after: Option<u64>,
    pub(super) nexthop_objects: Option<String>,
}

/// Kernel route installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fib {
    pub enabled: bool,
    /// The route protocol number petrel's routes carry (named "petrel" in
    /// /etc/iproute2/rt_protos.d).
    pub protocol: u8,
    pub table: u32,
    /// RTAX_MTU on installed routes; unset: none.
    pub route_mtu: Option<u32>,
    /// After a start, routes of ours from before are removed if not
    /// re-learned within this many seconds.
    pub sweep_after: u64,
    /// `nexthop_objects = "auto"` (the default): routes point at kernel
    /// nexthop objects where the kernel has them (Linux 5.3); `"off"`: each
    /// route carries its next hops.
    pub nexthop_objects: bool,
}

/// Validates `[fib]`; the stale-route sweep defaults to the graceful
/// restart time.
pub(super) fn parse(
    raw: RawFib,
    graceful_restart: Option<GracefulRestartSettings>,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<Fib, ConfigError> {
    let f = raw;
    let protocol = f.protocol.unwrap_or(202);
    // RFC-less but kernel-defined: 0–4 are reserved for the kernel itself.
    if protocol <= 4 || protocol == 255 {
        return Err(bad(
            "fib.protocol".into(),
            format!("{protocol} is reserved by the kernel; use 5..=254 (petrel's default is 202)"),
        ));
    }
    if let Some(m) = f.route_mtu {
        if !(68..=65535).contains(&m) {
            return Err(bad(
                "fib.route_mtu".into(),
                format!("{m} is outside 68..=65535"),
            ));
        }
    }
    let nexthop_objects = match f.nexthop_objects.as_deref() {
        // The default: the kernel installs a route by object id with ~20%
        // less CPU (docs/benchmarks/history.md, "Kernel nexthop objects").
        None | Some("auto") => true,
        Some("off") => false,
        Some(v) => {
            return Err(bad(
                "fib.nexthop_objects".into(),
                format!("{v:?}: use \"auto\" or \"off\""),
            ))
        }
    };
    Ok(Fib {
        nexthop_objects,
        enabled: f.enabled.unwrap_or(true),
        protocol,
        table: f.table.unwrap_or(254),
        route_mtu: f.route_mtu,
        sweep_after: f
            .sweep_after
            .unwrap_or_else(|| graceful_restart.map_or(120, |g| g.restart_time as u64)),
    })
}
