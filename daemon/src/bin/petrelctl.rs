//! petrelctl: petrel's operator tool.

use clap::Parser;
use petrel_daemon::ctl::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mrt(cmd) => petrel_daemon::ctl::mrt::run(cmd),
        Command::Pool(args) => petrel_daemon::ctl::pool::run(args, cli.datastore),
        Command::Ipam(args) => petrel_daemon::ctl::ipam::run(args, cli.datastore),
        Command::Bgp(cmd) => petrel_daemon::ctl::bgp::bgp(cmd, cli.datastore),
        Command::Node(cmd) => petrel_daemon::ctl::bgp::node(cmd, cli.datastore),
        Command::Cni(cmd) => petrel_daemon::ctl::cni::run(cmd, cli.datastore),
        Command::Controller(cmd) => petrel_daemon::ctl::controller::run(cmd, cli.datastore),
        Command::Status { json } => petrel_daemon::ctl::show::status(&cli.socket, json),
        Command::Show(cmd) => petrel_daemon::ctl::show::show(&cli.socket, cmd),
        Command::Peer(cmd) => petrel_daemon::ctl::show::peer(&cli.socket, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("petrelctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
