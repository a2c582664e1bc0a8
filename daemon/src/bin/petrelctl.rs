//! petrelctl: petrel's operator tool.

use clap::Parser;
use petrel_daemon::ctl::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mrt(cmd) => petrel_daemon::ctl::mrt::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("petrelctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
