//! Load-balancer addresses through petrel's IPAM: the same CAS block and
//! handle records as pod addresses (Calico's design), from pools whose
//! `allowed_uses` has `load-balancer`, with blocks affine to the virtual
//! node [`LB_NODE`] (no real node originates them; each address is
//! advertised by its Service record).
//!
//! One handle per Service, `lb.<namespace>.<name>.<uid>` (a Service
//! deleted and created again is a new holder), or per sharing group,
//! `lb-shared.<namespace>.<key>`. [`ensure`] makes a handle hold what a
//! request asks: it keeps the addresses that still fit, releases those that
//! do not, and assigns the missing families.

use super::lbreq::{choose_families, LbRequest};
use super::LB_NODE;
use petrel_ipam::ipam::{AssignRequest, Ipam, IpamError};
use petrel_ipam::model::{Attributes, Family, Pool, PoolUse};
use std::net::IpAddr;

pub const HANDLE_PREFIX: &str = "lb.";
pub const SHARED_PREFIX: &str = "lb-shared.";

pub fn handle(namespace: &str, name: &str, uid: &str) -> String {
    format!("{HANDLE_PREFIX}{namespace}.{name}.{uid}")
}

pub fn shared_handle(namespace: &str, key: &str) -> String {
    format!("{SHARED_PREFIX}{namespace}.{key}")
}

/// What a handle name says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder<'a> {
    Service {
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    },
    Shared {
        namespace: &'a str,
        key: &'a str,
    },
}

pub fn parse_handle(h: &str) -> Option<Holder<'_>> {
    if let Some(rest) = h.strip_prefix(SHARED_PREFIX) {
        let (namespace, key) = rest.split_once('.')?;
        return Some(Holder::Shared { namespace, key });
    }
    let rest = h.strip_prefix(HANDLE_PREFIX)?;
    // Namespaces and Service names are DNS labels: no dots.
    let mut it = rest.splitn(3, '.');
    Some(Holder::Service {
        namespace: it.next()?,
        name: it.next()?,
        uid: it.next()?,
    })
}

/// Why a request cannot be served; the message goes into an Event.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("{0} is in no load-balancer pool (pools with allowed use load-balancer: {1})")]
    OutsidePools(IpAddr, String),
    #[error("{addr} is already held by {holder}")]
    Taken { addr: IpAddr, holder: String },
    #[error("no enabled load-balancer pool of family {family:?}{}", if .named.is_empty() { String::new() } else { format!(" among {:?}", .named) })]
    NoPool { family: Family, named: Vec<String> },
    #[error("ipFamilyPolicy RequireDualStack but there is no load-balancer pool of family {0:?}")]
    NoDualStack(Family),
    #[error("load-balancer pools of family {0:?} are exhausted")]
    Exhausted(Family),
    #[error(transparent)]
    Ipam(IpamError),
}

impl AllocError {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::Ipam(_) => "AllocationError",
            _ => "AllocationFailed",
        }
    }
}

fn lb_pools(all: &[Pool], named: &[String]) -> Vec<Pool> {
    all.iter()
        .filter(|p| {
            !p.disabled
                && p.allowed_uses.contains(&PoolUse::LoadBalancer)
                && (named.is_empty()
                    || named
                        .iter()
                        .any(|n| *n == p.name || *n == p.cidr.to_string()))
        })
        .cloned()
        .collect()
}

fn describe(pools: &[Pool]) -> String {
    if pools.is_empty() {
        "none".into()
    } else {
        pools
            .iter()
            .map(|p| format!("{} {}", p.name, p.cidr))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What [`plan`] decides for a handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub keep: Vec<IpAddr>,
    /// Families still to assign.
    pub missing: Vec<Family>,
    pub release: Vec<IpAddr>,
}

/// The addresses to keep of `current`, the families still to assign, and
/// the addresses to give back, for `req` given the pools. Pure.
pub fn plan(req: &LbRequest, all_pools: &[Pool], current: &[IpAddr]) -> Result<Plan, AllocError> {
    let pools = lb_pools(all_pools, &req.pools);
    let mut have: Vec<Family> = pools.iter().map(|p| p.family()).collect();
    // A requested address decides that its family is available or fails
    // below with a precise message.
    have.extend(req.addrs.iter().map(Family::of));
    have.sort();
    have.dedup();
    let families = choose_families(&req.families, &have).map_err(AllocError::NoDualStack)?;
    let mut keep = Vec::new();
    let mut missing = Vec::new();
    for f in &families {
        let wanted = req.addrs.iter().find(|a| Family::of(a) == *f);
        let fits = |a: &IpAddr| {
            Family::of(a) == *f
                && wanted.is_none_or(|w| w == a)
                && pools.iter().any(|p| p.cidr.contains(a))
        };
        match current.iter().find(|a| fits(a)) {
            Some(a) => keep.push(*a),
            None => missing.push(*f),
        }
    }
    let release = current
        .iter()
        .filter(|a| !keep.contains(a))
        .copied()
        .collect();
    Ok(Plan {
        keep,
        missing,
        release,
    })
}

/// Make `handle` hold what `req` asks. Returns its addresses. All or
/// nothing for what this call assigns: on failure the new addresses go
/// back (the kept ones stay).
pub async fn ensure(
    ipam: &Ipam,
    handle: &str,
    namespace: &str,
    req: &LbRequest,
    current: &[IpAddr],
) -> Result<Vec<IpAddr>, AllocError> {
    let all = ipam.pools().await.map_err(AllocError::Ipam)?;
    let Plan {
        mut keep,
        missing,
        release,
    } = plan(req, &all, current)?;
    if !release.is_empty() {
        ipam.release_addrs(&release)
            .await
            .map_err(AllocError::Ipam)?;
    }
    let pools = lb_pools(&all, &req.pools);
    let mut new: Vec<IpAddr> = Vec::new();
    let mut areq = AssignRequest::new(handle, LB_NODE, 0, 0);
    areq.pool_use = PoolUse::LoadBalancer;
    areq.pools = req.pools.clone();
    areq.attrs = Attributes {
        node: Some(LB_NODE.to_string()),
        namespace: Some(namespace.to_string()),
        ..Attributes::default()
    };
    let mut result = Ok(());
    for f in missing {
        let r = match req.addrs.iter().find(|a| Family::of(a) == f) {
            Some(a) => {
                if !pools.iter().any(|p| p.cidr.contains(a)) {
                    Err(AllocError::OutsidePools(*a, describe(&pools)))
                } else {
                    match ipam.assign_addr(&areq, *a).await {
                        Ok(x) => Ok(vec![x.addr]),
                        Err(IpamError::AddressInUse { addr, handle: h }) if h == handle => {
                            Ok(vec![addr])
                        }
                        Err(IpamError::AddressInUse { addr, handle }) => Err(AllocError::Taken {
                            addr,
                            holder: handle,
                        }),
                        Err(IpamError::NotInPool(a)) => {
                            Err(AllocError::OutsidePools(a, describe(&pools)))
                        }
                        Err(e) => Err(AllocError::Ipam(e)),
                    }
                }
            }
            None => {
                let mut r = areq.clone();
                match f {
                    Family::V4 => r.num_v4 = 1,
                    Family::V6 => r.num_v6 = 1,
                }
                match ipam.assign(&r).await {
                    Ok(v) => Ok(v.into_iter().map(|a| a.addr).collect()),
                    Err(IpamError::NoPool { family, .. }) => Err(AllocError::NoPool {
                        family,
                        named: req.pools.clone(),
                    }),
                    Err(IpamError::Exhausted { family, .. }) => Err(AllocError::Exhausted(family)),
                    Err(e) => Err(AllocError::Ipam(e)),
                }
            }
        };
        match r {
            Ok(v) => new.extend(v),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if let Err(e) = result {
        if !new.is_empty() {
            if let Err(undo) = ipam.release_addrs(&new).await {
                tracing::warn!(error = %undo, %handle, "could not undo a partial allocation; the orphan sweep will");
            }
        }
        return Err(e);
    }
    keep.extend(new);
    keep.sort();
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::lbreq::FamilyWant;
    use petrel_ipam::store::memory::MemoryStore;
    use std::sync::Arc;

    fn pool(name: &str, cidr: &str, uses: &[PoolUse]) -> Pool {
        let cidr: ipnet::IpNet = cidr.parse().unwrap();
        Pool {
            name: name.into(),
            block_size: if cidr.addr().is_ipv4() { 28 } else { 124 },
            cidr,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: uses.to_vec(),
            encapsulation: Default::default(),
        }
    }

    fn req(addrs: &[&str], families: FamilyWant) -> LbRequest {
        LbRequest {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            pools: vec![],
            families,
            sharing_key: None,
            ports: Default::default(),
        }
    }

    #[test]
    fn handles_name_their_holder() {
        let h = handle("web", "shop", "1f0e-22");
        assert_eq!(
            parse_handle(&h),
            Some(Holder::Service {
                namespace: "web",
                name: "shop",
                uid: "1f0e-22"
            })
        );
        assert_eq!(
            parse_handle(&shared_handle("web", "front.v1")),
            Some(Holder::Shared {
                namespace: "web",
                key: "front.v1"
            })
        );
        assert_eq!(parse_handle("k8s-pod-network.abc.eth0"), None);
    }

    #[test]
    fn plan_keeps_what_fits_and_adds_the_missing_family() {
        let pools = [
            pool("lb4", "192.0.2.0/24", &[PoolUse::LoadBalancer]),
            pool("lb6", "2001:db8::/120", &[PoolUse::LoadBalancer]),
            pool("pods", "10.0.0.0/16", &[PoolUse::Workload]),
        ];
        let cur: Vec<IpAddr> = vec!["192.0.2.5".parse().unwrap()];
        let p = plan(
            &req(&[], FamilyWant::Prefer(Family::V4, Family::V6)),
            &pools,
            &cur,
        )
        .unwrap();
        assert_eq!(
            (p.keep, p.missing, p.release),
            (cur.clone(), vec![Family::V6], vec![])
        );
        // A different requested address replaces the held one.
        let p = plan(
            &req(&["192.0.2.9"], FamilyWant::Single(Family::V4)),
            &pools,
            &cur,
        )
        .unwrap();
        assert_eq!(
            (p.keep, p.missing, p.release),
            (vec![], vec![Family::V4], cur)
        );
        // RequireDualStack without a v6 pool is refused up front.
        let e = plan(
            &req(&[], FamilyWant::Require(Family::V4, Family::V6)),
            &pools[..1],
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, AllocError::NoDualStack(Family::V6)), "{e}");
    }

    #[tokio::test]
    async fn allocates_from_lb_pools_to_a_node_without_a_record_and_reports_failures() {
        let ipam = Ipam::new(Arc::new(MemoryStore::new()));
        ipam.add_pool(&pool("lb4", "192.0.2.0/28", &[PoolUse::LoadBalancer]))
            .await
            .unwrap();
        ipam.add_pool(&pool("pods", "10.0.0.0/24", &[PoolUse::Workload]))
            .await
            .unwrap();
        let h1 = handle("web", "a", "u1");
        let got = ensure(
            &ipam,
            &h1,
            "web",
            &req(&[], FamilyWant::Single(Family::V4)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 1);
        assert!("192.0.2.0/28"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&got[0]));
        assert_eq!(ipam.addrs_of_handle(&h1).await.unwrap(), got);
        // Idempotent.
        let again = ensure(
            &ipam,
            &h1,
            "web",
            &req(&[], FamilyWant::Single(Family::V4)),
            &got,
        )
        .await
        .unwrap();
        assert_eq!(again, got);
        // Taken by another handle.
        let e = ensure(
            &ipam,
            &handle("web", "b", "u2"),
            "web",
            &req(&[&got[0].to_string()], FamilyWant::Single(Family::V4)),
            &[],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AllocError::Taken { .. }), "{e}");
        assert!(e.to_string().contains(&h1), "{e}");
        // Outside every load-balancer pool (a workload pool does not count).
        let e = ensure(
            &ipam,
            &handle("web", "c", "u3"),
            "web",
            &req(&["10.0.0.7"], FamilyWant::Single(Family::V4)),
            &[],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AllocError::OutsidePools(..)), "{e}");
        assert!(e.to_string().contains("lb4 192.0.2.0/28"), "{e}");
        // No v6 pool.
        let e = ensure(
            &ipam,
            &handle("web", "d", "u4"),
            "web",
            &req(&[], FamilyWant::Single(Family::V6)),
            &[],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AllocError::NoPool { .. }), "{e}");
        // Release gives it back.
        assert_eq!(ipam.release_handle(&h1).await.unwrap(), got);
    }
}
