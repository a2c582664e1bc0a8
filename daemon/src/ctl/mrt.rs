//! `petrelctl mrt`: read MRT dumps (RFC 6396) through petrel's codec.
//!
//! `summary` counts what a dump holds (and what failed to decode); `dump`
//! prints one line per route in `bgpdump -m` format, so that petrel's view
//! of a dump can be diffed against bgpdump's line for line.

use anyhow::Context;
use clap::Subcommand;
use petrel_bgp::mrt::summary::{summarize, Summary};
use petrel_bgp::mrt::{bgpdump, MrtError, PeerIndexTable, Record};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum MrtCmd {
    /// Per file: records by MRT type, BGP messages by type, prefixes
    /// announced and withdrawn, RIB entries, and decode errors by kind.
    Summary {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per file, one per line.
        #[arg(long)]
        json: bool,
    },
    /// One line per route, in the format of `bgpdump -m`.
    Dump { file: PathBuf },
}

pub fn run(cmd: MrtCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        MrtCmd::Summary { files, json } => summary(&files, json),
        MrtCmd::Dump { file } => dump(&file),
    }
}

fn summary(files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for f in files {
        let reader = petrel_bgp::mrt::open(f)?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let s = summarize(&name, reader);
        failed |= s.error_count() > 0;
        if json {
            writeln!(out, "{}", serde_json::to_string(&s)?)?;
        } else {
            print_human(&mut out, f, &s)?;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_human(out: &mut impl Write, path: &std::path::Path, s: &Summary) -> std::io::Result<()> {
    writeln!(out, "{}", path.display())?;
    writeln!(out, "  records            {}", s.records)?;
    for (k, v) in &s.mrt_types {
        writeln!(out, "    {k:<44} {v}")?;
    }
    if !s.bgp_msg_types.is_empty() {
        writeln!(out, "  BGP messages")?;
        for (k, v) in &s.bgp_msg_types {
            writeln!(out, "    {k:<44} {v}")?;
        }
        writeln!(
            out,
            "  announced          IPv4 {}  IPv6 {}  (NLRI field {}, MP_REACH_NLRI {})",
            s.announced_ipv4, s.announced_ipv6, s.announced_v4, s.announced_mp
        )?;
        writeln!(
            out,
            "  withdrawn          IPv4 {}  IPv6 {}  (withdrawn field {}, MP_UNREACH_NLRI {})",
            s.withdrawn_ipv4, s.withdrawn_ipv6, s.withdrawn_v4, s.withdrawn_mp
        )?;
        writeln!(
            out,
            "  distinct prefixes  announced {}  withdrawn {}",
            s.distinct_announced_prefixes, s.distinct_withdrawn_prefixes
        )?;
        if s.announced_path_ids + s.withdrawn_path_ids > 0 {
            writeln!(
                out,
                "  path identifiers   announced {}  withdrawn {}  (RFC 8050 ADD-PATH)",
                s.announced_path_ids, s.withdrawn_path_ids
            )?;
        }
    }
    if s.rib_prefix_records > 0 {
        writeln!(
            out,
            "  RIB                {} prefixes, {} entries, {} peers",
            s.rib_prefix_records, s.rib_entries, s.peer_index_peers
        )?;
        if s.rib_path_ids > 0 {
            writeln!(
                out,
                "  RIB path ids       {} entries with a path identifier (RFC 8050 ADD-PATH)",
                s.rib_path_ids
            )?;
        }
    }
    for (k, v) in &s.rfc7606 {
        writeln!(out, "  RFC 7606           {k}: {v}")?;
    }
    if s.errors.is_empty() {
        writeln!(out, "  decode errors      none")?;
    }
    for (k, v) in &s.errors {
        writeln!(out, "  decode error       {k}: {v}")?;
    }
    if let Some(t) = &s.truncated {
        writeln!(out, "  truncated          {t}")?;
    }
    Ok(())
}

fn dump(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let reader = petrel_bgp::mrt::open(file)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut peers: Option<PeerIndexTable> = None;
    let mut line = String::with_capacity(1 << 16);
    let mut errors = 0u64;
    for item in reader {
        let raw = match item {
            Ok(r) => r,
            Err(e @ (MrtError::Truncated { .. } | MrtError::Io { .. })) => {
                out.flush()?;
                eprintln!("petrelctl: {}: stream ends early: {e}", file.display());
                break;
            }
            Err(e) => return Err(e).with_context(|| file.display().to_string()),
        };
        match Record::parse(&raw) {
            Ok(Record::PeerIndexTable(t)) => peers = Some(t),
            Ok(record) => {
                line.clear();
                bgpdump::format_record(&raw, &record, peers.as_ref(), &mut line);
                out.write_all(line.as_bytes())?;
            }
            Err(e) => {
                errors += 1;
                eprintln!("petrelctl: {}: {e}", file.display());
            }
        }
    }
    out.flush()?;
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
