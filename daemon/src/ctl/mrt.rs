//! `petrelctl mrt`.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum MrtCmd {
    /// Per file: records by type, BGP messages by type, prefixes, decode errors.
    Summary {
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One line per route, in the format of `bgpdump -m`.
    Dump { file: PathBuf },
}

pub fn run(cmd: MrtCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet built: {cmd:?}")
}
