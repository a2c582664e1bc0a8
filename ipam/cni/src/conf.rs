//! The network configuration on stdin, as far as petrel-ipam reads it, and
//! the checks every command makes before anything else is touched.

use crate::error::{code, CniError};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const DEFAULT_MTU_FILE: &str = "/run/petrel/pod-mtu";
pub const DEFAULT_LOCK_FILE: &str = "/run/petrel/ipam.lock";
pub const DEFAULT_DAEMON_SOCKET: &str = "/run/petrel/ipam.sock";
/// Longer than the service's own per-request deadline, so that a busy
/// daemon answers "try again later" itself before the plugin gives up.
pub const DEFAULT_DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize, Default)]
pub struct DatastoreConfig {
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub path: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// `ipam.gateway`: what the result says about a gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayMode {
    /// Each address carries its block's gateway, an address reserved for
    /// the node in the block, for bridge plugins with `isGateway`.
    /// Addresses come only from the node's own blocks.
    #[default]
    Block,
    /// No gateway: point-to-point setups (Calico-style), where the pod's
    /// default route goes out of its interface and the host answers ARP.
    None,
}

/// The `ipam` section of the network config.
#[derive(Debug, Clone, Deserialize)]
pub struct IpamSection {
    #[serde(rename = "type")]
    pub kind: String,
    pub datastore: DatastoreConfig,
    pub node_name: Option<String>,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default = "yes")]
    pub assign_ipv4: bool,
    #[serde(default)]
    pub assign_ipv6: bool,
    #[serde(default)]
    pub gateway: GatewayMode,
    pub mtu_file: Option<PathBuf>,
    pub lock_file: Option<PathBuf>,
    /// The daemon's IPAM service; `""` turns forwarding off. Default
    /// [`DEFAULT_DAEMON_SOCKET`].
    pub daemon_socket: Option<PathBuf>,
    /// How long to wait for the daemon's answer once it took the request.
    pub daemon_timeout_secs: Option<f64>,
}

impl IpamSection {
    /// Where to forward invocations, if anywhere.
    pub fn daemon_socket(&self) -> Option<PathBuf> {
        match &self.daemon_socket {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(DEFAULT_DAEMON_SOCKET.into()),
        }
    }

    pub fn daemon_timeout(&self) -> Duration {
        self.daemon_timeout_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)))
            .unwrap_or(DEFAULT_DAEMON_TIMEOUT)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    pub ipam: Option<IpamSection>,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Parse stdin; malformed JSON is code 6, a config petrel cannot use is 7,
/// an unsupported version 1.
pub fn parse(stdin: &[u8]) -> Result<(NetConf, IpamSection), CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CNI version {} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let ipam = conf.ipam.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "no ipam section",
            "add \"ipam\": {\"type\": \"petrel-ipam\", \"datastore\": ...}",
        )
    })?;
    let ds = &ipam.datastore;
    if ds.etcd_endpoints.is_empty() == ds.path.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "ipam.datastore needs exactly one of etcd_endpoints and path",
            format!("got {ds:?}"),
        ));
    }
    if !ipam.assign_ipv4 && !ipam.assign_ipv6 {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "assign_ipv4 and assign_ipv6 are both false",
            "enable at least one",
        ));
    }
    Ok((conf, ipam))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_code_6_and_bad_configs_are_7_or_1() {
        assert_eq!(parse(b"{not json").unwrap_err().code, code::DECODE_FAILURE);
        let no_ipam = br#"{"cniVersion":"1.0.0","name":"n"}"#;
        assert_eq!(parse(no_ipam).unwrap_err().code, code::INVALID_CONFIG);
        let both = br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"petrel-ipam","datastore":{"path":"/x","etcd_endpoints":["http://a"]}}}"#;
        assert_eq!(parse(both).unwrap_err().code, code::INVALID_CONFIG);
        let old = br#"{"cniVersion":"0.2.0","name":"n","ipam":{"type":"petrel-ipam","datastore":{"path":"/x"}}}"#;
        assert_eq!(parse(old).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        let ok = br#"{"cniVersion":"0.4.0","name":"n","ipam":{"type":"petrel-ipam","datastore":{"path":"/x"}}}"#;
        assert!(parse(ok).is_ok());
    }

    #[test]
    fn the_daemon_socket_defaults_and_can_be_turned_off() {
        let conf = |extra: &str| {
            let text = format!(
                r#"{{"cniVersion":"1.1.0","name":"n","ipam":{{"type":"petrel-ipam","datastore":{{"path":"/x"}}{extra}}}}}"#
            );
            parse(text.as_bytes()).expect("valid").1
        };
        let ipam = conf("");
        assert_eq!(ipam.daemon_socket(), Some(DEFAULT_DAEMON_SOCKET.into()));
        assert_eq!(ipam.daemon_timeout(), DEFAULT_DAEMON_TIMEOUT);
        assert_eq!(conf(r#","daemon_socket":"""#).daemon_socket(), None);
        let ipam = conf(r#","daemon_socket":"/s","daemon_timeout_secs":0.5"#);
        assert_eq!(ipam.daemon_socket(), Some("/s".into()));
        assert_eq!(ipam.daemon_timeout(), Duration::from_millis(500));
        let ipam = conf(r#","daemon_timeout_secs":-1"#);
        assert_eq!(ipam.daemon_timeout(), DEFAULT_DAEMON_TIMEOUT);
    }
}
