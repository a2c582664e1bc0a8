//! `petrelctl cni install`: puts petrel's CNI plugins and a network
//! configuration list where kubelet and containerd look for them by
//! default (`/opt/cni/bin`, `/etc/cni/net.d`), idempotently.
//!
//! The list is the usual chain: `bridge` (or `ptp`) for the pod's link,
//! with `petrel-ipam` as its IPAM, then `portmap` for hostPort. Files are
//! written only when their content differs, through a temporary file and a
//! rename, so a runtime reading the directory never sees half a file and a
//! second run changes nothing.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CniCmd {
    /// Install the plugins and the network configuration list.
    Install(InstallArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LinkPlugin {
    /// A Linux bridge per node (cni0), the pod's gateway on it.
    Bridge,
    /// A veth per pod, routed by the host: no bridge.
    Ptp,
}

impl LinkPlugin {
    fn name(self) -> &'static str {
        match self {
            LinkPlugin::Bridge => "bridge",
            LinkPlugin::Ptp => "ptp",
        }
    }
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Where the runtime reads network configurations.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// Where the runtime finds plugin binaries.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// The plugin that makes the pod's link.
    #[arg(long, value_enum, default_value = "bridge")]
    pub plugin: LinkPlugin,
    /// The network's name (and the conflist's file name).
    #[arg(long, default_value = "petrel")]
    pub network: String,
    /// The node's name as petreld registers it; default: the hostname, as
    /// petrel-ipam assumes.
    #[arg(long)]
    pub node_name: Option<String>,
    /// Where petrel-ipam and petrel-ipam-direct are; default: beside this
    /// petrelctl, else /usr/lib/cni (where the Debian package puts them,
    /// beside Debian's own plugins).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Where the reference plugins (bridge, ptp, portmap) are when the
    /// bin dir lacks them (Debian's containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub reference_plugins: PathBuf,
    /// Leave hostPort support (portmap) out of the chain.
    #[arg(long)]
    pub no_portmap: bool,
    /// Dual-stack pods: an IPv6 address too, from the IPv6 pools
    /// (petrel-ipam's `assign_ipv6`). The bridge gets each family's
    /// gateway.
    #[arg(long)]
    pub ipv6: bool,
}

/// The configuration list, as a runtime reads it.
pub fn conflist(a: &InstallArgs, datastore: &crate::config::Datastore) -> Value {
    let ds = match datastore {
        crate::config::Datastore::Embedded { path } => json!({ "path": path }),
        crate::config::Datastore::Etcd {
            endpoints,
            ca,
            cert,
            key,
        } => {
            let mut v = json!({ "etcd_endpoints": endpoints });
            for (k, p) in [("etcd_ca", ca), ("etcd_cert", cert), ("etcd_key", key)] {
                if let Some(p) = p {
                    v[k] = json!(p);
                }
            }
            v
        }
    };
    let mut ipam = json!({ "type": "petrel-ipam", "datastore": ds });
    if let Some(n) = &a.node_name {
        ipam["node_name"] = json!(n);
    }
    if a.ipv6 {
        ipam["assign_ipv6"] = json!(true);
    }
    let mut link = json!({ "type": a.plugin.name(), "ipam": ipam });
    if a.plugin == LinkPlugin::Bridge {
        link["bridge"] = json!("cni0");
        link["isGateway"] = json!(true);
        // petreld advertises the blocks; no NAT for pod traffic.
        link["ipMasq"] = json!(false);
    }
    let mut plugins = vec![link];
    if !a.no_portmap {
        plugins.push(json!({ "type": "portmap", "capabilities": { "portMappings": true } }));
    }
    json!({
        "cniVersion": "1.0.0",
        "name": a.network,
        "plugins": plugins,
    })
}

/// Writes `content` to `path` unless it holds it already; true if written.
fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    let dir = path
        .parent()
        .with_context(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.petrel-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, content).with_context(|| format!("write {}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    // A rename over a running binary is safe: the old inode lives on for
    // whoever executes it (writing into it would be ETXTBSY).
    std::fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(true)
}

/// Where the Debian package installs petrel's CNI plugins.
const PACKAGED_PLUGINS: &str = "/usr/lib/cni";

pub fn install(a: &InstallArgs, datastore: &crate::config::Datastore) -> Result<Vec<String>> {
    let from = match &a.from {
        Some(d) => d.clone(),
        None => {
            let beside = std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .context("cannot tell where petrelctl is; give --from")?;
            let packaged = PathBuf::from(PACKAGED_PLUGINS);
            if !beside.join("petrel-ipam").is_file() && packaged.join("petrel-ipam").is_file() {
                packaged
            } else {
                beside
            }
        }
    };
    let mut changed = Vec::new();
    for bin in ["petrel-ipam", "petrel-ipam-direct"] {
        let src = from.join(bin);
        let content = std::fs::read(&src).with_context(|| {
            format!(
                "{}: not found; give --from the directory holding petrel's plugins",
                src.display()
            )
        })?;
        let dst = a.bin_dir.join(bin);
        if write_if_changed(&dst, &content, 0o755)? {
            changed.push(dst.display().to_string());
        }
    }
    let mut refs = vec![a.plugin.name()];
    if !a.no_portmap {
        refs.push("portmap");
    }
    for bin in refs {
        let dst = a.bin_dir.join(bin);
        if dst.exists() {
            continue;
        }
        let src = a.reference_plugins.join(bin);
        let content = std::fs::read(&src).with_context(|| {
            format!(
                "the {bin} plugin is in neither {} nor {}: install the CNI reference plugins (Debian: containernetworking-plugins)",
                a.bin_dir.display(),
                src.display()
            )
        })?;
        write_if_changed(&dst, &content, 0o755)?;
        changed.push(dst.display().to_string());
    }
    if a.network.is_empty() || a.network.contains('/') {
        bail!("--network: a name without '/', got {:?}", a.network);
    }
    let list = conflist(a, datastore);
    let mut text = serde_json::to_string_pretty(&list)?;
    text.push('\n');
    // The runtime takes the lexically first file: 10- puts petrel ahead
    // of the usual 87-podman/99-loopback leftovers.
    let conf = a.conf_dir.join(format!("10-{}.conflist", a.network));
    if write_if_changed(&conf, text.as_bytes(), 0o644)? {
        changed.push(conf.display().to_string());
    }
    Ok(changed)
}

pub fn run(cmd: CniCmd, ds: super::ipam::DatastoreArgs) -> Result<std::process::ExitCode> {
    match cmd {
        CniCmd::Install(a) => {
            let datastore = ds.datastore()?;
            let changed = install(&a, &datastore)?;
            if changed.is_empty() {
                println!("already installed; nothing changed");
            } else {
                for c in changed {
                    println!("wrote {c}");
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> InstallArgs {
        InstallArgs {
            conf_dir: dir.join("net.d"),
            bin_dir: dir.join("bin"),
            plugin: LinkPlugin::Bridge,
            network: "petrel".into(),
            node_name: Some("node-a".into()),
            from: Some(dir.join("from")),
            reference_plugins: dir.join("ref"),
            no_portmap: false,
            ipv6: false,
        }
    }

    #[test]
    fn installs_once_then_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        for (d, f) in [
            ("from", "petrel-ipam"),
            ("from", "petrel-ipam-direct"),
            ("ref", "bridge"),
            ("ref", "portmap"),
        ] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
            std::fs::write(t.path().join(d).join(f), format!("#!{f}")).unwrap();
        }
        let a = args(t.path());
        let ds = crate::config::Datastore::Etcd {
            endpoints: vec!["http://10.0.0.2:2379".into()],
            ca: None,
            cert: None,
            key: None,
        };
        let first = install(&a, &ds).unwrap();
        assert_eq!(first.len(), 5, "{first:?}");
        let list: Value = serde_json::from_slice(
            &std::fs::read(t.path().join("net.d/10-petrel.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert_eq!(list["plugins"][0]["ipam"]["type"], "petrel-ipam");
        assert_eq!(list["plugins"][0]["ipam"]["node_name"], "node-a");
        assert_eq!(
            list["plugins"][0]["ipam"]["datastore"]["etcd_endpoints"][0],
            "http://10.0.0.2:2379"
        );
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert!(list["plugins"][0]["ipam"].get("assign_ipv6").is_none());
        assert!(install(&a, &ds).unwrap().is_empty(), "idempotent");
        // Dual-stack pods: petrel-ipam asked for an IPv6 address too.
        let dual = InstallArgs {
            ipv6: true,
            ..args(t.path())
        };
        assert_eq!(
            conflist(&dual, &ds)["plugins"][0]["ipam"]["assign_ipv6"],
            true
        );
        // A newer petrel-ipam is installed again, nothing else.
        std::fs::write(t.path().join("from/petrel-ipam"), "#!new").unwrap();
        let again = install(&a, &ds).unwrap();
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(again[0].ends_with("bin/petrel-ipam"));
    }

    #[test]
    fn ptp_without_portmap_and_a_missing_plugin_is_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("from")).unwrap();
        for f in ["petrel-ipam", "petrel-ipam-direct"] {
            std::fs::write(t.path().join("from").join(f), "x").unwrap();
        }
        let mut a = args(t.path());
        a.plugin = LinkPlugin::Ptp;
        a.no_portmap = true;
        let ds = crate::config::Datastore::Embedded {
            path: "/var/lib/petrel/ipam.redb".into(),
        };
        let e = install(&a, &ds).unwrap_err().to_string();
        assert!(
            e.contains("ptp plugin") && e.contains("containernetworking-plugins"),
            "{e}"
        );
        std::fs::create_dir_all(t.path().join("ref")).unwrap();
        std::fs::write(t.path().join("ref/ptp"), "x").unwrap();
        install(&a, &ds).unwrap();
        let list = conflist(&a, &ds);
        assert_eq!(list["plugins"].as_array().unwrap().len(), 1);
        assert_eq!(list["plugins"][0]["type"], "ptp");
        assert_eq!(
            list["plugins"][0]["ipam"]["datastore"]["path"],
            "/var/lib/petrel/ipam.redb"
        );
    }
}
