//! What a Service asks of load-balancer IPAM, derived purely from the
//! object: whether petrel serves it, the addresses or pools it names, the
//! families it wants, its sharing key and ports. No I/O; the allocator
//! ([`super::lbipam`]) acts on the result.

use super::{ANN_LB_IPS, ANN_POOLS, ANN_SHARING_KEY, LB_CLASS};
use k8s_openapi::api::core::v1::Service;
use petrel_ipam::model::Family;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A Service's request for load-balancer addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbRequest {
    /// Addresses asked for by `spec.loadBalancerIP` or the annotation;
    /// empty: any address of the wanted families.
    pub addrs: Vec<IpAddr>,
    /// Pools (names or CIDRs) to draw from; empty: any load-balancer pool.
    pub pools: Vec<String>,
    pub families: FamilyWant,
    pub sharing_key: Option<String>,
    pub ports: BTreeSet<PortKey>,
}

/// `spec.ipFamilyPolicy` with the families in `spec.ipFamilies` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyWant {
    Single(Family),
    /// Both when pools of both exist, else the first.
    Prefer(Family, Family),
    /// Both, or nothing.
    Require(Family, Family),
}

/// A port as clash detection sees it: two Services may share an address
/// only if no (protocol, port) is in both (MetalLB's rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey {
    pub protocol: String,
    pub port: i32,
}

/// Why a Service's request is malformed; the message goes into an Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{what} {value:?} is not an IP address")]
    BadAddress { what: &'static str, value: String },
    #[error("sharing key {0:?}: use letters, digits, '-', '_' and '.' only (at most 200)")]
    BadSharingKey(String),
    #[error("ipFamilyPolicy SingleStack but the requested addresses {0:?} are of both families")]
    FamiliesConflict(Vec<IpAddr>),
    #[error("more than one requested address of the family of {0}: one per family")]
    TwoOfAFamily(IpAddr),
}

/// Whether petrel allocates for this Service: type LoadBalancer, and no
/// `spec.loadBalancerClass` or petrel's (Kubernetes leaves a Service of
/// another class to that implementation).
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == LB_CLASS)
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

fn family_of(s: &str) -> Option<Family> {
    match s {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

fn other(f: Family) -> Family {
    match f {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

/// The request of a Service [`is_ours`].
pub fn request(svc: &Service) -> Result<LbRequest, RequestError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut addrs = Vec::new();
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        addrs.push(ip.parse().map_err(|_| RequestError::BadAddress {
            what: "spec.loadBalancerIP",
            value: ip.to_string(),
        })?);
    }
    if let Some(list) = annotation(svc, ANN_LB_IPS) {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let a: IpAddr = s.parse().map_err(|_| RequestError::BadAddress {
                what: ANN_LB_IPS,
                value: s.to_string(),
            })?;
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i].iter().any(|b| Family::of(b) == Family::of(a)) {
            return Err(RequestError::TwoOfAFamily(*a));
        }
    }
    let pools = annotation(svc, ANN_POOLS)
        .map(|l| {
            l.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let sharing_key = match annotation(svc, ANN_SHARING_KEY) {
        None => None,
        Some(k) => {
            let ok = k.len() <= 200
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(RequestError::BadSharingKey(k.to_string()));
            }
            Some(k.to_string())
        }
    };
    let listed: Vec<Family> = spec
        .ip_families
        .unwrap_or_default()
        .iter()
        .filter_map(|f| family_of(f))
        .collect();
    // Requested addresses decide the first family (MetalLB does the same:
    // the address asked for wins over the cluster's default family).
    let first = addrs
        .first()
        .map(Family::of)
        .or(listed.first().copied())
        .unwrap_or(Family::V4);
    let families = match spec.ip_family_policy.as_deref() {
        Some("RequireDualStack") => FamilyWant::Require(first, other(first)),
        Some("PreferDualStack") => FamilyWant::Prefer(first, other(first)),
        // SingleStack, or unset (the apiserver defaults it to SingleStack).
        _ => {
            if addrs.len() > 1 {
                return Err(RequestError::FamiliesConflict(addrs));
            }
            FamilyWant::Single(first)
        }
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| PortKey {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.port,
        })
        .collect();
    Ok(LbRequest {
        addrs,
        pools,
        families,
        sharing_key,
        ports,
    })
}

/// The families to allocate, given which families have a load-balancer
/// pool the request may use; `Err` names the family missing for
/// RequireDualStack.
pub fn choose_families(want: &FamilyWant, have: &[Family]) -> Result<Vec<Family>, Family> {
    match *want {
        FamilyWant::Single(f) => Ok(vec![f]),
        FamilyWant::Prefer(a, b) => {
            if have.contains(&a) && have.contains(&b) {
                Ok(vec![a, b])
            } else if !have.contains(&a) && have.contains(&b) {
                // PreferDualStack "prefers" both; with pools of only the
                // second family that one is better than nothing.
                Ok(vec![b])
            } else {
                Ok(vec![a])
            }
        }
        FamilyWant::Require(a, b) => match (have.contains(&a), have.contains(&b)) {
            (true, true) => Ok(vec![a, b]),
            (false, _) => Err(a),
            (_, false) => Err(b),
        },
    }
}

/// The first port two sets have in common (protocol and port), if any.
pub fn port_clash<'a>(a: &'a BTreeSet<PortKey>, b: &BTreeSet<PortKey>) -> Option<&'a PortKey> {
    a.iter().find(|p| b.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use std::collections::BTreeMap;

    fn svc(spec: ServiceSpec, ann: &[(&str, &str)]) -> Service {
        let mut s = Service {
            spec: Some(spec),
            ..Default::default()
        };
        if !ann.is_empty() {
            s.metadata.annotations = Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        s
    }

    fn lb() -> ServiceSpec {
        ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ..Default::default()
        }
    }

    #[test]
    fn class_and_type_decide_whether_petrel_serves_it() {
        assert!(is_ours(&svc(lb(), &[])));
        let mut other = lb();
        other.load_balancer_class = Some("example.com/other".into());
        assert!(!is_ours(&svc(other, &[])));
        let mut mine = lb();
        mine.load_balancer_class = Some(LB_CLASS.into());
        assert!(is_ours(&svc(mine, &[])));
        let cip = ServiceSpec {
            type_: Some("ClusterIP".into()),
            ..Default::default()
        };
        assert!(!is_ours(&svc(cip, &[])));
    }

    #[test]
    fn requested_addresses_from_spec_and_annotation() {
        let mut s = lb();
        s.load_balancer_ip = Some("192.0.2.10".into());
        s.ip_family_policy = Some("PreferDualStack".into());
        let r = request(&svc(
            s,
            &[(ANN_LB_IPS, "192.0.2.10, 2001:db8::10"), (ANN_POOLS, "a,b")],
        ))
        .unwrap();
        assert_eq!(
            r.addrs,
            vec![
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        assert_eq!(r.pools, vec!["a", "b"]);
        assert_eq!(r.families, FamilyWant::Prefer(Family::V4, Family::V6));
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let e = request(&svc(lb(), &[(ANN_LB_IPS, "10.0.0.300")])).unwrap_err();
        assert!(e.to_string().contains("10.0.0.300"), "{e}");
        let e = request(&svc(lb(), &[(ANN_LB_IPS, "10.0.0.1,2001:db8::1")])).unwrap_err();
        assert!(matches!(e, RequestError::FamiliesConflict(_)), "{e}");
        let e = request(&svc(lb(), &[(ANN_LB_IPS, "10.0.0.1,10.0.0.2")])).unwrap_err();
        assert!(matches!(e, RequestError::TwoOfAFamily(_)), "{e}");
        let e = request(&svc(lb(), &[(ANN_SHARING_KEY, "a/b")])).unwrap_err();
        assert!(matches!(e, RequestError::BadSharingKey(_)), "{e}");
    }

    #[test]
    fn families_follow_the_policy_and_the_pools_that_exist() {
        use Family::*;
        type Row = (FamilyWant, &'static [Family], Result<Vec<Family>, Family>);
        let table: &[Row] = &[
            (FamilyWant::Single(V6), &[V4, V6], Ok(vec![V6])),
            (FamilyWant::Prefer(V4, V6), &[V4, V6], Ok(vec![V4, V6])),
            (FamilyWant::Prefer(V4, V6), &[V4], Ok(vec![V4])),
            (FamilyWant::Prefer(V4, V6), &[V6], Ok(vec![V6])),
            (FamilyWant::Require(V6, V4), &[V4, V6], Ok(vec![V6, V4])),
            (FamilyWant::Require(V4, V6), &[V4], Err(V6)),
        ];
        for (want, have, expect) in table {
            assert_eq!(&choose_families(want, have), expect, "{want:?} {have:?}");
        }
        let mut s = lb();
        s.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        s.ip_family_policy = Some("RequireDualStack".into());
        assert_eq!(
            request(&svc(s, &[])).unwrap().families,
            FamilyWant::Require(V6, V4)
        );
    }

    #[test]
    fn ports_clash_on_protocol_and_port() {
        let ports = |l: &[(&str, i32)]| -> BTreeSet<PortKey> {
            l.iter()
                .map(|(p, n)| PortKey {
                    protocol: p.to_string(),
                    port: *n,
                })
                .collect()
        };
        let web = ports(&[("TCP", 80), ("TCP", 443)]);
        let dns = ports(&[("UDP", 53), ("TCP", 53)]);
        let quic = ports(&[("UDP", 443)]);
        assert_eq!(port_clash(&web, &dns), None);
        assert_eq!(port_clash(&web, &quic), None);
        assert_eq!(
            port_clash(&web, &ports(&[("TCP", 443)])).map(|p| p.port),
            Some(443)
        );
        let mut s = lb();
        s.ports = Some(vec![ServicePort {
            port: 53,
            protocol: Some("UDP".into()),
            ..Default::default()
        }]);
        assert_eq!(request(&svc(s, &[])).unwrap().ports, ports(&[("UDP", 53)]));
    }
}
