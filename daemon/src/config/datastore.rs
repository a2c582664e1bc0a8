//! `[datastore]` and `[ipam]`: where the cluster's records are, and the
//! node-local IPAM service.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatastore {
    #[serde(default)]
    pub(super) etcd_endpoints: Vec<String>,
    pub(super) etcd_ca: Option<PathBuf>,
    pub(super) etcd_cert: Option<PathBuf>,
    pub(super) etcd_key: Option<PathBuf>,
    pub(super) path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpam {
    pub(super) socket: Option<PathBuf>,
    pub(super) enabled: Option<bool>,
}

/// The node-local IPAM service petrel-ipam forwards CNI calls to.
pub const DEFAULT_IPAM_SOCKET: &str = "/run/petrel/ipam.sock";

/// Where the cluster's records (nodes, BGP configuration and peers, IPAM)
/// are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    Etcd {
        endpoints: Vec<String>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    },
    /// The embedded single-node store file.
    Embedded { path: PathBuf },
}

/// Validates `[datastore]`.
pub(super) fn parse(
    raw: Option<RawDatastore>,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<Option<Datastore>, ConfigError> {
    Ok(match raw {
        None => None,
        Some(d) => Some(match (d.path, d.etcd_endpoints.is_empty()) {
            (Some(path), true) => {
                if d.etcd_ca.is_some() || d.etcd_cert.is_some() || d.etcd_key.is_some() {
                    return Err(bad(
                        "datastore.path".into(),
                        "etcd TLS files given with the embedded store; remove them or use etcd_endpoints".into(),
                    ));
                }
                Datastore::Embedded { path }
            }
            (None, false) => {
                for (i, e) in d.etcd_endpoints.iter().enumerate() {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(bad(
                            format!("datastore.etcd_endpoints[{i}]"),
                            format!("{e:?} is not a URL: use http://HOST:PORT or https://HOST:PORT"),
                        ));
                    }
                }
                if d.etcd_cert.is_some() != d.etcd_key.is_some() {
                    return Err(bad(
                        "datastore.etcd_cert".into(),
                        "etcd_cert and etcd_key go together".into(),
                    ));
                }
                Datastore::Etcd {
                    endpoints: d.etcd_endpoints,
                    ca: d.etcd_ca,
                    cert: d.etcd_cert,
                    key: d.etcd_key,
                }
            }
            (Some(_), false) => {
                return Err(bad(
                    "datastore".into(),
                    "give either etcd_endpoints or path, not both".into(),
                ))
            }
            (None, true) => {
                return Err(bad(
                    "datastore".into(),
                    "give etcd_endpoints = [\"http://HOST:2379\", ...] or path = \"/var/lib/petrel/petrel.db\"".into(),
                ))
            }
        }),
    })
}
