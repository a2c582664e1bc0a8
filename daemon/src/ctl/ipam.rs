//! `petrelctl ipam`: inspect and repair IPAM, directly against the
//! datastore (etcd or the embedded file), without the daemon.

use anyhow::Context;
use clap::{Args, Subcommand};
use petrel_ipam::ipam::Ipam;
use petrel_ipam::model::Block;
use petrel_ipam::store::Store;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit status of `ipam check` when it finds an inconsistency.
pub const EXIT_INCONSISTENT: u8 = 3;

/// Where the IPAM data lives: global flags, before or after the command,
/// e.g. `petrelctl --etcd-endpoints http://127.0.0.1:2379 ipam check`.
#[derive(Args, Debug, Clone)]
pub struct DatastoreArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, global = true, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) for etcd over TLS.
    #[arg(long, global = true)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, global = true)]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, global = true)]
    pub etcd_key: Option<PathBuf>,
    /// The embedded datastore file, for a single node without etcd.
    #[arg(long, global = true)]
    pub datastore_path: Option<PathBuf>,
    /// Take the datastore from petreld's configuration file (its
    /// [datastore] section); the default when no other datastore flag is
    /// given and /etc/petrel/petreld.toml exists.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

impl DatastoreArgs {
    pub async fn open(&self) -> anyhow::Result<Ipam> {
        Ok(Ipam::new(self.open_store().await?))
    }

    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(crate::cluster::open_store(&self.datastore()?).await?)
    }

    /// Where the datastore is: the flags, or petreld's configuration file.
    pub fn datastore(&self) -> anyhow::Result<crate::config::Datastore> {
        let flags = self.datastore_path.is_some() || !self.etcd_endpoints.is_empty();
        let file = match &self.config {
            Some(f) if flags => anyhow::bail!(
                "give either --config {} or --etcd-endpoints/--datastore-path, not both",
                f.display()
            ),
            Some(f) => Some(f.clone()),
            None if !flags && std::path::Path::new(crate::config::DEFAULT_PATH).exists() => {
                Some(PathBuf::from(crate::config::DEFAULT_PATH))
            }
            None => None,
        };
        if let Some(f) = file {
            let cfg = crate::config::Config::load(&f)?;
            return cfg
                .datastore
                .ok_or_else(|| anyhow::anyhow!("{}: has no [datastore] section", f.display()));
        }
        Ok(match (&self.datastore_path, self.etcd_endpoints.is_empty()) {
            (Some(path), true) => crate::config::Datastore::Embedded { path: path.clone() },
            (None, false) => crate::config::Datastore::Etcd {
                endpoints: self.etcd_endpoints.clone(),
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            },
            (Some(_), false) => {
                anyhow::bail!("give either --etcd-endpoints or --datastore-path, not both")
            }
            (None, true) => anyhow::bail!(
                "say where the datastore is: --etcd-endpoints URL[,URL], --datastore-path FILE or --config petreld.toml"
            ),
        })
    }
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

#[derive(Args, Debug)]
pub struct IpamArgs {
    #[command(subcommand)]
    pub command: IpamCmd,
}

#[derive(Subcommand, Debug)]
pub enum IpamCmd {
    /// Per pool and block: total, in use, free, borrowed.
    Show {
        /// Only the pools.
        #[arg(long, conflicts_with = "blocks")]
        pools: bool,
        /// Only the blocks.
        #[arg(long)]
        blocks: bool,
        #[arg(long)]
        json: bool,
    },
    /// Consistency report; exits 3 when it finds a problem.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Release one address, whoever holds it.
    Release {
        #[arg(long)]
        ip: IpAddr,
    },
    /// Repair what `check` reports (handle records, interrupted claims,
    /// damaged free lists) and give back blocks long empty (never a node's
    /// last); with --dead-node, also free everything of a node that no
    /// longer exists.
    Gc {
        #[arg(long)]
        dead_node: Option<String>,
    },
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct Usage {
    pub name: String,
    pub cidr: String,
    pub affinity: Option<String>,
    pub total: u64,
    pub in_use: u64,
    pub free: u64,
    /// In use by pods of another node than the block's.
    pub borrowed: u64,
}

fn block_usage(b: &Block) -> Usage {
    let borrowed = b
        .allocations
        .values()
        .filter(|a| a.attrs.node.is_some() && a.attrs.node != b.affinity)
        .count() as u64;
    Usage {
        name: b.pool.clone(),
        cidr: b.cidr.to_string(),
        affinity: b.affinity.clone(),
        total: b.size() as u64,
        in_use: b.in_use() as u64,
        free: (b.size() - b.in_use()) as u64,
        borrowed,
    }
}

pub fn run(args: IpamArgs, datastore: DatastoreArgs) -> anyhow::Result<ExitCode> {
    block_on(run_async(args, datastore))?
}

async fn run_async(args: IpamArgs, datastore: DatastoreArgs) -> anyhow::Result<ExitCode> {
    let ipam = datastore.open().await?;
    match args.command {
        IpamCmd::Show {
            pools,
            blocks,
            json,
        } => {
            let snap = ipam.snapshot().await?;
            let block_rows: Vec<Usage> = snap.blocks.iter().map(|(b, _)| block_usage(b)).collect();
            let pool_rows: Vec<Usage> = snap
                .pools
                .iter()
                .map(|p| {
                    let mut u = Usage {
                        name: p.name.clone(),
                        cidr: p.cidr.to_string(),
                        total: 1u64 << (p.cidr.max_prefix_len() - p.cidr.prefix_len()).min(63),
                        ..Default::default()
                    };
                    for (b, _) in snap.blocks.iter().filter(|(b, _)| p.cidr.contains(&b.cidr)) {
                        let bu = block_usage(b);
                        u.in_use += bu.in_use;
                        u.borrowed += bu.borrowed;
                    }
                    u.free = u.total - u.in_use;
                    u
                })
                .collect();
            let (show_pools, show_blocks) = (!blocks, !pools);
            if json {
                let mut v = serde_json::Map::new();
                if show_pools {
                    v.insert("pools".into(), serde_json::to_value(&pool_rows)?);
                }
                if show_blocks {
                    v.insert("blocks".into(), serde_json::to_value(&block_rows)?);
                }
                println!("{}", serde_json::Value::Object(v));
                return Ok(ExitCode::SUCCESS);
            }
            if show_pools {
                println!(
                    "{:<16} {:<24} {:>10} {:>8} {:>10} {:>9}",
                    "POOL", "CIDR", "TOTAL", "IN USE", "FREE", "BORROWED"
                );
                for u in &pool_rows {
                    println!(
                        "{:<16} {:<24} {:>10} {:>8} {:>10} {:>9}",
                        u.name, u.cidr, u.total, u.in_use, u.free, u.borrowed
                    );
                }
            }
            if show_blocks {
                if show_pools {
                    println!();
                }
                println!(
                    "{:<24} {:<20} {:<16} {:>6} {:>7} {:>6} {:>9}",
                    "BLOCK", "AFFINITY", "POOL", "TOTAL", "IN USE", "FREE", "BORROWED"
                );
                for u in &block_rows {
                    println!(
                        "{:<24} {:<20} {:<16} {:>6} {:>7} {:>6} {:>9}",
                        u.cidr,
                        u.affinity.as_deref().unwrap_or("-"),
                        u.name,
                        u.total,
                        u.in_use,
                        u.free,
                        u.borrowed
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        IpamCmd::Check { json } => {
            let report = ipam.check().await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.human());
            }
            Ok(if report.clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_INCONSISTENT)
            })
        }
        IpamCmd::Release { ip } => {
            let freed = ipam.release_addrs(&[ip]).await?;
            if freed.is_empty() {
                anyhow::bail!("{ip} is not assigned (or in no pool); nothing released");
            }
            println!("released {ip}");
            Ok(ExitCode::SUCCESS)
        }
        IpamCmd::Gc { dead_node } => {
            if let Some(node) = dead_node {
                let r = ipam.gc_node(&node).await?;
                println!(
                    "node {node}: released {} address(es), deleted {} block(s), unaffined {} block(s), removed {} affinity record(s)",
                    r.released.len(),
                    r.blocks_deleted,
                    r.blocks_fixed,
                    r.affinities_fixed
                );
            }
            let r = ipam.repair().await?;
            println!(
                "repaired {} handle record(s), {} affinity record(s), {} block(s)",
                r.handles_fixed, r.affinities_fixed, r.blocks_fixed
            );
            let released = ipam.release_all_empty_blocks().await?;
            println!("released {released} empty block(s) (never a node's last)");
            Ok(ExitCode::SUCCESS)
        }
    }
}
