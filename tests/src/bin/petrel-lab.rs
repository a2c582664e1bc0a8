//! `petrel-lab up|down`: petrel's three-node lab in network namespaces on
//! this machine (see docs/lab.md and `petrel_tests::lab::cluster`).
//!
//! `up` builds the lab, waits for it to converge, prints the peers, the
//! routes and a pod-to-pod ping matrix (or, with `--json`, where
//! everything is), and leaves it running. `down` removes it. Both find the
//! lab by its name (`--name`, default `plab`): every namespace it made is
//! called `<name>-...`, so a crashed `up` leaves nothing `up` or `down`
//! cannot find.

use anyhow::{bail, Result};
use petrel_tests::lab::cluster::{Cluster, Options, Peering};
use petrel_tests::lab::k8s::{KubeLab, KubeOptions};
use petrel_tests::lab::kube::require_apiserver;
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{remove_named, require_lab, Lab};
use std::process::ExitCode;

const USAGE: &str =
    "usage: petrel-lab up [--tor frr|bird] [--json] [--name NAME] [--peering datastore|file] [--kubernetes]
                    [--etcd-members 1|3] [--etcd-proxy] [--ipv4-only | --rfc8950] [--bfd]
       petrel-lab down [--name NAME]

The lab is dual-stack (IPv4 and IPv6 pods, sessions and routes) unless
--ipv4-only is given. --rfc8950: IPv6 sessions only, each carrying the
IPv4 routes too, with IPv6 next hops (from the datastore's records, or
with --peering file from petreld.toml). --bfd: BFD (300 ms x 3) on every
session, the mesh and the ToR's (FRR's bfdd, BIRD's protocol bfd), both
families.

Binaries: petreld, petrelctl, petrel-ipam and petrel-ipam-direct beside
this one, or in $PETREL_BIN_DIR (and petrel-controller with --kubernetes,
which adds a kube-apiserver on the lab's etcd and petrel-controller).
Logs and configs: $TMPDIR/petrel-lab/NAME/.";

struct Args {
    command: String,
    tor: Kind,
    json: bool,
    name: String,
    peering: Peering,
    kubernetes: bool,
    etcd_members: usize,
    etcd_proxy: bool,
    ipv4_only: bool,
    rfc8950: bool,
    bfd: bool,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        command: String::new(),
        tor: Kind::Frr,
        json: false,
        name: "plab".into(),
        peering: Peering::Datastore,
        kubernetes: false,
        etcd_members: 1,
        etcd_proxy: false,
        ipv4_only: false,
        rfc8950: false,
        bfd: false,
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => a.json = true,
            "--kubernetes" => a.kubernetes = true,
            "--tor" => {
                a.tor = match it.next().as_deref() {
                    Some("frr") => Kind::Frr,
                    Some("bird") => Kind::Bird,
                    other => bail!("--tor frr|bird, not {other:?}"),
                }
            }
            "--peering" => {
                a.peering = match it.next().as_deref() {
                    Some("datastore") => Peering::Datastore,
                    Some("file") => Peering::File,
                    other => bail!("--peering datastore|file, not {other:?}"),
                }
            }
            "--etcd-members" => {
                a.etcd_members = match it.next().as_deref().map(str::parse) {
                    Some(Ok(n @ 1..=3)) => n,
                    other => bail!("--etcd-members 1|2|3, not {other:?}"),
                }
            }
            "--etcd-proxy" => a.etcd_proxy = true,
            "--ipv4-only" => a.ipv4_only = true,
            "--bfd" => a.bfd = true,
            "--rfc8950" => a.rfc8950 = true,
            "--name" => match it.next() {
                Some(n) => a.name = n,
                None => bail!("--name needs a value"),
            },
            "-h" | "--help" => a.command = "help".into(),
            c if a.command.is_empty() && !c.starts_with('-') => a.command = c.into(),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("petrel-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let args = parse()?;
    match args.command.as_str() {
        "up" => {
            // The binaries beside this one, unless told otherwise.
            if std::env::var_os("PETREL_BIN_DIR").is_none() {
                if let Some(dir) = std::env::current_exe()?.parent() {
                    std::env::set_var("PETREL_BIN_DIR", dir);
                }
            }
            let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
            programs.extend(args.tor.programs());
            if !require_lab(&programs) {
                bail!("this machine cannot run the lab (see above; bash .ci/setup installs what it needs)");
            }
            if args.kubernetes && !require_apiserver() {
                bail!("--kubernetes needs kube-apiserver, kubectl and openssl (see above)");
            }
            if args.ipv4_only && args.rfc8950 {
                bail!("--rfc8950 carries IPv4 over IPv6 sessions: not with --ipv4-only");
            }
            if args.kubernetes && args.peering == Peering::File {
                bail!("--kubernetes needs --peering datastore: service routes come from the datastore");
            }
            let lab = Lab::named(&args.name)?;
            eprintln!(
                "petrel-lab: building {} in {}",
                args.name,
                lab.dir().display()
            );
            let options = Options {
                tor: args.tor,
                peering: args.peering,
                etcd_members: args.etcd_members,
                etcd_proxy: args.etcd_proxy,
                ipv6: !args.ipv4_only,
                rfc8950: args.rfc8950,
                bfd: args.bfd,
                ..Options::default()
            };
            let built = Cluster::build(lab, options).and_then(|c| {
                let kube = match c.wait_converged() {
                    Ok(()) if args.kubernetes => {
                        KubeLab::start(&c, KubeOptions::default()).map(Some)
                    }
                    Ok(()) => Ok(None),
                    Err(e) => Err(e),
                };
                match kube {
                    Ok(k) => Ok((c, k)),
                    Err(e) if std::env::var_os("PETREL_LAB_KEEP").is_some() => {
                        std::mem::forget(c);
                        Err(e)
                    }
                    Err(e) => Err(e),
                }
            });
            let (cluster, kube) = match built {
                Ok(c) => c,
                Err(e) => {
                    // Leave nothing half-built behind, unless asked to
                    // (PETREL_LAB_KEEP=1: to look at it; `down` removes it).
                    if std::env::var_os("PETREL_LAB_KEEP").is_none() {
                        let _ = remove_named(&args.name);
                    }
                    return Err(e);
                }
            };
            if args.json {
                let mut v = cluster.to_json();
                if let Some(k) = &kube {
                    v["kubernetes"] = k.to_json();
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", cluster.report()?);
                if let Some(k) = &kube {
                    let j = k.to_json();
                    println!(
                        "\n== Kubernetes: kube-apiserver {} (netns {}), petrel-controller leading\n\
                         load-balancer pool {}, ClusterIP aggregate {}\n{} get nodes",
                        j["apiserver"].as_str().unwrap_or_default(),
                        j["netns"].as_str().unwrap_or_default(),
                        j["loadbalancer_pool"].as_str().unwrap_or_default(),
                        j["service_cluster_ips"].as_str().unwrap_or_default(),
                        j["kubectl"].as_str().unwrap_or_default(),
                    );
                }
                println!("\nThe lab keeps running; `petrel-lab down` removes it.");
            }
            // Keep every process and namespace after this process ends.
            std::mem::forget(kube);
            std::mem::forget(cluster);
            Ok(ExitCode::SUCCESS)
        }
        "down" => {
            remove_named(&args.name)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}
