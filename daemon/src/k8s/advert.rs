//! Which addresses of a Service are advertised, and from which nodes: the
//! `/petrel/bgp/v1/services/k8s.<namespace>.<name>.<kind>` records,
//! derived purely from the Service, its load-balancer addresses and its
//! endpoint nodes.
//!
//! | rule | addresses | advertised by |
//! |---|---|---|
//! | `externalTrafficPolicy: Cluster` | LB addresses petrel allocated + `spec.externalIPs`, as /32 or /128 | every node |
//! | `externalTrafficPolicy: Local` | the same | nodes with a ready or serving endpoint (after the hold-down) |
//! | `internalTrafficPolicy: Local` | `spec.clusterIPs` as /32 or /128 | nodes with a ready or serving endpoint |
//! | `internalTrafficPolicy: Cluster` | none here: the ClusterIP range is advertised as an aggregate by every node (`service_cluster_ips` in the BGP config) | every node |
//! | `type: ExternalName` | nothing | — |

use crate::cluster::model;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Every record this controller writes starts with this.
pub const RECORD_PREFIX: &str = "k8s.";

pub fn record_name(namespace: &str, name: &str, kind: &str) -> String {
    format!("{RECORD_PREFIX}{namespace}.{name}.{kind}")
}

/// The namespace and name a record of ours belongs to. Namespaces and
/// Service names are DNS labels (no dots), so the split is exact.
pub fn record_owner(record: &str) -> Option<(&str, &str)> {
    let rest = record.strip_prefix(RECORD_PREFIX)?;
    let mut it = rest.splitn(3, '.');
    Some((it.next()?, it.next()?))
}

/// Nodes with an endpoint that may take traffic: `ready`, or `serving`
/// (serving-but-terminating keeps its node's route during a rollout, as
/// MetalLB does). The API says an unset `ready` means unknown, to be read
/// as ready.
pub fn endpoint_nodes<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in slices {
        for e in s.endpoints.iter().flatten() {
            let c = e.conditions.clone().unwrap_or_default();
            if c.ready.unwrap_or(true) || c.serving.unwrap_or(false) {
                if let Some(n) = &e.node_name {
                    out.insert(n.clone());
                }
            }
        }
    }
    out
}

fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

fn parse_ips<'a>(l: impl IntoIterator<Item = &'a String>) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = l
        .into_iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(host)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The records a Service should have (none for ExternalName, or when it
/// has no address to advertise). `lb_addrs`: the load-balancer addresses
/// petrel holds for it; `endpoint_nodes`: the advertised (held-down) set.
pub fn derive(
    svc: &Service,
    lb_addrs: &[IpAddr],
    endpoint_nodes: &[String],
) -> Vec<model::Service> {
    let (Some(ns), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
        svc.spec.as_ref(),
    ) else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") || svc.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut external = parse_ips(spec.external_ips.iter().flatten());
    external.extend(lb_addrs.iter().copied().map(host));
    external.sort();
    external.dedup();
    if !external.is_empty() {
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        out.push(model::Service {
            name: record_name(ns, name, "external"),
            addresses: external,
            local_only: local,
            // Only a local-only record uses them: leaving them out of the
            // others spares a write per endpoint change.
            endpoint_nodes: if local {
                endpoint_nodes.to_vec()
            } else {
                Vec::new()
            },
        });
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.iter());
        }
        // Headless Services have clusterIP "None", which parses as nothing.
        let internal = parse_ips(ips);
        if !internal.is_empty() {
            out.push(model::Service {
                name: record_name(ns, name, "internal"),
                addresses: internal,
                local_only: true,
                endpoint_nodes: endpoint_nodes.to_vec(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn svc(spec: ServiceSpec) -> Service {
        let mut s = Service {
            spec: Some(spec),
            ..Default::default()
        };
        s.metadata.namespace = Some("web".into());
        s.metadata.name = Some("shop".into());
        s
    }

    fn nets(l: &[&str]) -> Vec<IpNet> {
        l.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn local_lb_service_is_advertised_by_its_endpoint_nodes() {
        let s = svc(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some("Local".into()),
            external_ips: Some(vec!["198.51.100.7".into()]),
            cluster_ips: Some(vec!["10.96.0.10".into()]),
            ..Default::default()
        });
        let r = derive(&s, &["192.0.2.1".parse().unwrap()], &["node2".into()]);
        assert_eq!(
            r,
            vec![model::Service {
                name: "k8s.web.shop.external".into(),
                addresses: nets(&["192.0.2.1/32", "198.51.100.7/32"]),
                local_only: true,
                endpoint_nodes: vec!["node2".into()],
            }]
        );
        assert_eq!(record_owner(&r[0].name), Some(("web", "shop")));
    }

    #[test]
    fn cluster_policy_is_every_node_and_carries_no_endpoint_nodes() {
        let s = svc(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            external_traffic_policy: Some("Cluster".into()),
            ..Default::default()
        });
        let r = derive(&s, &["2001:db8::5".parse().unwrap()], &["node2".into()]);
        assert_eq!(r.len(), 1);
        assert!(!r[0].local_only);
        assert!(r[0].endpoint_nodes.is_empty());
        assert_eq!(r[0].addresses, nets(&["2001:db8::5/128"]));
    }

    #[test]
    fn internal_local_policy_adds_a_cluster_ip_record_headless_and_externalname_none() {
        let s = svc(ServiceSpec {
            type_: Some("ClusterIP".into()),
            internal_traffic_policy: Some("Local".into()),
            cluster_ips: Some(vec!["10.96.0.10".into(), "fd00:96::10".into()]),
            ..Default::default()
        });
        let r = derive(&s, &[], &["n1".into(), "n3".into()]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "k8s.web.shop.internal");
        assert_eq!(r[0].addresses, nets(&["10.96.0.10/32", "fd00:96::10/128"]));
        assert!(r[0].local_only);
        let headless = svc(ServiceSpec {
            internal_traffic_policy: Some("Local".into()),
            cluster_ip: Some("None".into()),
            cluster_ips: Some(vec!["None".into()]),
            ..Default::default()
        });
        assert!(derive(&headless, &[], &[]).is_empty());
        let ext = svc(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_ips: Some(vec!["198.51.100.7".into()]),
            ..Default::default()
        });
        assert!(derive(&ext, &[], &[]).is_empty());
        // A plain ClusterIP Service: only the aggregate, no record.
        assert!(derive(&svc(ServiceSpec::default()), &[], &[]).is_empty());
    }

    #[test]
    fn ready_or_serving_endpoints_count() {
        let ep = |node: &str, ready: Option<bool>, serving: Option<bool>| Endpoint {
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating: None,
            }),
            ..Default::default()
        };
        let slice = EndpointSlice {
            endpoints: Some(vec![
                ep("ready", Some(true), Some(true)),
                ep("terminating", Some(false), Some(true)),
                ep("starting", Some(false), Some(false)),
                ep("unknown", None, None),
            ]),
            ..Default::default()
        };
        let got: Vec<String> = endpoint_nodes([&slice]).into_iter().collect();
        assert_eq!(got, vec!["ready", "terminating", "unknown"]);
    }
}
