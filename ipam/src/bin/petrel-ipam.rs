//! petrel-ipam: the CNI IPAM plugin. Reads the network config on stdin and
//! the CNI_* environment, prints a result or a CNI error object on stdout,
//! and logs to stderr (PETREL_LOG sets the level, default warn).

use petrel_ipam::cni::{self, CniError};
use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PETREL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut stdin = Vec::new();
    let env = cni::Env::from_process();
    let version = |input: &[u8]| cni::version_of(input);
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err(CniError::new(
            cni::code::IO_FAILURE,
            "cannot read stdin",
            e.to_string(),
        )),
        Ok(_) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Err(e) => Err(CniError::new(
                cni::code::IO_FAILURE,
                "cannot start the runtime",
                e.to_string(),
            )),
            Ok(rt) => rt.block_on(cni::invoke(&env, &stdin)),
        },
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => {
            if writeln!(out, "{v}").is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "failed");
            let _ = writeln!(out, "{}", e.to_json(&version(&stdin)));
            ExitCode::from(1)
        }
    }
}
