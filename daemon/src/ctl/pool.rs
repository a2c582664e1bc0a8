//! `petrelctl pool`: IP pools, directly in the datastore.

use super::ipam::{block_on, DatastoreArgs};
use clap::{Args, Subcommand};
use ipnet::IpNet;
use petrel_ipam::model::{Encapsulation, Family, Pool, PoolUse};
use std::process::ExitCode;

fn parse_use(s: &str) -> Result<PoolUse, String> {
    match s.trim() {
        "workload" => Ok(PoolUse::Workload),
        "tunnel" => Ok(PoolUse::Tunnel),
        "load-balancer" => Ok(PoolUse::LoadBalancer),
        o => Err(format!(
            "{o:?}: allowed uses are workload, tunnel and load-balancer"
        )),
    }
}

#[derive(Args, Debug)]
pub struct PoolArgs {
    #[command(subcommand)]
    pub command: PoolCmd,
}

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Add a pool. CIDR and block size cannot change afterwards.
    Add {
        cidr: IpNet,
        /// Prefix length of the blocks: v4 20–32 (default 26), v6 116–128
        /// (default 122).
        #[arg(long)]
        block_size: Option<u8>,
        /// Default: derived from the CIDR.
        #[arg(long)]
        name: Option<String>,
        /// Label expression choosing the nodes that may use the pool, e.g.
        /// "zone == 'a' && has(gpu)".
        #[arg(long, default_value = "")]
        node_selector: String,
        #[arg(long, default_value = "none")]
        encapsulation: Encapsulation,
        /// What the pool's addresses are for, comma-separated: workload,
        /// tunnel, load-balancer (petrel-controller allocates Service
        /// load-balancer addresses from the last).
        #[arg(long, value_delimiter = ',', default_value = "workload,tunnel", value_parser = parse_use)]
        allowed_uses: Vec<PoolUse>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a pool holding no assigned addresses.
    Delete { name: String },
    /// Stop assigning from a pool; what it holds stays.
    Disable { name: String },
    /// Undo `disable`.
    Enable { name: String },
}

pub fn run(args: PoolArgs, datastore: DatastoreArgs) -> anyhow::Result<ExitCode> {
    block_on(run_async(args, datastore))?
}

async fn run_async(args: PoolArgs, datastore: DatastoreArgs) -> anyhow::Result<ExitCode> {
    let ipam = datastore.open().await?;
    match args.command {
        PoolCmd::Add {
            cidr,
            block_size,
            name,
            node_selector,
            encapsulation,
            allowed_uses,
        } => {
            let family = Family::of_net(&cidr);
            let pool = Pool {
                name: name.unwrap_or_else(|| cidr.to_string().replace(['/', ':'], "-")),
                cidr,
                block_size: block_size.unwrap_or(family.block_sizes().1),
                disabled: false,
                node_selector,
                allowed_uses,
                encapsulation,
            };
            ipam.add_pool(&pool).await?;
            println!(
                "added pool {} ({}, /{} blocks)",
                pool.name, pool.cidr, pool.block_size
            );
        }
        PoolCmd::List { json } => {
            let pools = ipam.pools().await?;
            if json {
                println!("{}", serde_json::to_string(&pools)?);
            } else {
                println!(
                    "{:<20} {:<24} {:>5} {:<9} {:<10} SELECTOR",
                    "NAME", "CIDR", "BLOCK", "STATE", "ENCAP"
                );
                for p in pools {
                    println!(
                        "{:<20} {:<24} {:>5} {:<9} {:<10} {}",
                        p.name,
                        p.cidr.to_string(),
                        format!("/{}", p.block_size),
                        if p.disabled { "disabled" } else { "enabled" },
                        format!("{:?}", p.encapsulation).to_lowercase(),
                        if p.node_selector.is_empty() {
                            "all()"
                        } else {
                            &p.node_selector
                        }
                    );
                }
            }
        }
        PoolCmd::Delete { name } => {
            ipam.delete_pool(&name).await?;
            println!("deleted pool {name}");
        }
        PoolCmd::Disable { name } => {
            ipam.disable_pool(&name, true).await?;
            println!("disabled pool {name}");
        }
        PoolCmd::Enable { name } => {
            ipam.disable_pool(&name, false).await?;
            println!("enabled pool {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
