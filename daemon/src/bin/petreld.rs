//! petreld: petrel's node daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "petreld",
    version,
    about = "petrel's node-level BGP route daemon"
)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = petrel_daemon::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match petrel_daemon::config::Config::load(&args.config) {
            Ok(_) => {
                println!("{}: ok", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("petreld: {e}");
                ExitCode::from(1)
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("PETREL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("petreld: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(petrel_daemon::daemon::run(args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("petreld: {e:#}");
            ExitCode::from(1)
        }
    }
}
