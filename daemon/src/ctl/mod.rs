//! petrelctl's commands, one module per command group.

pub mod bgp;
pub mod cni;
pub mod controller;
pub mod ipam;
pub mod mrt;
pub mod pool;
pub mod show;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "petrelctl",
    version,
    about = "Operate petrel: BGP, IPAM and MRT tools"
)]
pub struct Cli {
    /// petreld's control socket.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_SOCKET)]
    pub socket: std::path::PathBuf,
    /// Where the IPAM data is (for `pool` and `ipam`): global flags, so they
    /// may come before or after the command.
    #[command(flatten)]
    pub datastore: ipam::DatastoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read MRT dumps (RFC 6396): summaries and bgpdump-compatible output.
    #[command(subcommand)]
    Mrt(mrt::MrtCmd),
    /// The daemon's state in brief.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show peers or routes of the running petreld.
    #[command(subcommand)]
    Show(show::ShowCmd),
    /// Enable, disable or refresh one BGP session.
    #[command(subcommand)]
    Peer(show::PeerCmd),
    /// IP pools, in the IPAM datastore.
    Pool(pool::PoolArgs),
    /// Inspect, check and repair IPAM, in its datastore.
    Ipam(ipam::IpamArgs),
    /// The cluster's BGP configuration, peers and services, in the datastore.
    #[command(subcommand)]
    Bgp(bgp::BgpCmd),
    /// The cluster's nodes and their labels, in the datastore.
    #[command(subcommand)]
    Node(bgp::NodeCmd),
    /// CNI: install petrel's plugins and a network configuration list.
    #[command(subcommand)]
    Cni(cni::CniCmd),
    /// petrel-controller (Kubernetes): its lease and status, in the datastore.
    #[command(subcommand)]
    Controller(controller::ControllerCmd),
}
