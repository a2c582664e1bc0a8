//! The environment of one invocation: the `CNI_*` variables.

use crate::error::{code, CniError};
use serde::{Deserialize, Serialize};

/// The commands petrel-ipam answers.
pub const COMMANDS: &[&str] = &["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];

/// The `CNI_*` variables of one invocation. It travels whole to the
/// daemon's IPAM service, which decides as the plugin would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let v = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
            path: v("CNI_PATH"),
        }
    }

    /// A variable this command needs, or code 4 naming it.
    pub fn need(&self, what: &Option<String>, name: &str) -> Result<String, CniError> {
        what.clone().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("{name} is not set"),
                "the runtime must set it for this command",
            )
        })
    }

    /// `CNI_COMMAND`, if it is one petrel-ipam answers; code 4 otherwise.
    pub fn command(&self) -> Result<String, CniError> {
        let command = self.need(&self.command, "CNI_COMMAND")?;
        if !COMMANDS.contains(&command.as_str()) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {command}"),
                "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
            ));
        }
        Ok(command)
    }

    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS` (`K=V;K=V`).
    pub fn pod(&self) -> (Option<String>, Option<String>) {
        let mut ns = None;
        let mut pod = None;
        for kv in self.args.as_deref().unwrap_or("").split(';') {
            match kv.split_once('=') {
                Some(("K8S_POD_NAMESPACE", v)) => ns = Some(v.to_string()),
                Some(("K8S_POD_NAME", v)) => pod = Some(v.to_string()),
                _ => {}
            }
        }
        (ns, pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_identity_comes_from_cni_args() {
        let env = Env {
            args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0".into()),
            ..Default::default()
        };
        assert_eq!(env.pod(), (Some("ns1".into()), Some("web-0".into())));
    }

    #[test]
    fn a_missing_or_unknown_command_is_code_4() {
        let mut env = Env::default();
        let e = env.command().unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_COMMAND"), "{e:?}");
        env.command = Some("ATTACH".into());
        let e = env.command().unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("ATTACH"), "{e:?}");
        env.command = Some("GC".into());
        assert_eq!(env.command(), Ok("GC".to_string()));
    }
}
