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

/// glibc's allocator, tuned for a table of a million small long-lived
/// objects built while transient buffers come and go, before any thread
/// exists: a fixed mmap threshold (by default glibc raises it up to 32 MiB
/// after the first large free, after which big transient buffers — a
/// rebuilt B-tree's entries, a growing hash shard, a batch of changes —
/// come from the heap and leave holes the RSS keeps), and one arena (one
/// per runtime thread by default: objects allocated on one worker and
/// freed on another strand memory in each). Measured on 1M routes: peak
/// RSS 150–179 -> 139 bytes per route with two arenas, no change in time;
/// one instead of two: 100k IPv4 149–150 -> 132–139, 1M 93–96 -> 85–87
/// (docs/benchmarks/history.md, issue 17).
#[cfg(target_env = "gnu")]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread runs.
    unsafe {
        // glibc's own variables, when set, win: they are how the settings
        // are measured against others (docs/benchmarks.md).
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(target_env = "gnu"))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
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
    // The log settings come from the file; a broken file is reported by
    // `run` below, with the defaults in the meantime.
    let log = petrel_daemon::config::Config::load(&args.config)
        .map(|c| c.log)
        .unwrap_or(petrel_daemon::config::Log {
            format: petrel_daemon::config::LogFormat::Text,
            level: "info".into(),
        });
    init_logging(&log);
    // Read before any thread starts: it clears systemd's variables from
    // the environment.
    let notifier = match petrel_daemon::systemd::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("petreld: {e}");
            return ExitCode::from(1);
        }
    };
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
    match rt.block_on(petrel_daemon::server::run(args.config, notifier)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("petreld: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `[log]`: text or JSON lines on stderr (journald keeps them); PETREL_LOG,
/// when set, replaces the level.
fn init_logging(log: &petrel_daemon::config::Log) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PETREL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        petrel_daemon::config::LogFormat::Json => {
            b.json().flatten_event(true).with_current_span(false).init()
        }
        petrel_daemon::config::LogFormat::Text => {
            b.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}
