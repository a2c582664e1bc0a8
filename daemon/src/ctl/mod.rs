//! petrelctl's commands, one module per command group.

pub mod mrt;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "petrelctl",
    version,
    about = "Operate petrel: BGP, IPAM and MRT tools"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read MRT dumps (RFC 6396): summaries and bgpdump-compatible output.
    #[command(subcommand)]
    Mrt(mrt::MrtCmd),
}
