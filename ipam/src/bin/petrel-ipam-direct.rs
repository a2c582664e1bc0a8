//! petrel-ipam-direct: the CNI IPAM plugin's datastore half. `petrel-ipam`
//! execs it, with the runtime's environment and config, when no IPAM
//! service accepts its connection (petreld not running, or forwarding off
//! in the config); it then opens the datastore itself, under the host lock.
//! Run on its own, it is a complete plugin that never forwards.
//!
//! Reads the network config on stdin and the CNI_* environment, prints a
//! result or a CNI error object on stdout, and logs to stderr (PETREL_LOG
//! sets the level, default warn).

use petrel_cni::output::print;
use petrel_ipam::cni::{self, CniError};
use std::io::Read;
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
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::new(cni::code::IO_FAILURE, "cannot read stdin", e.to_string());
        return print(cni::output(&Err(err), &stdin));
    }
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Err(e) => Err(CniError::new(
            cni::code::IO_FAILURE,
            "cannot start the runtime",
            e.to_string(),
        )),
        Ok(rt) => rt.block_on(cni::invoke(&env, &stdin)),
    };
    if let Err(e) = &outcome {
        tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "failed");
    }
    print(cni::output(&outcome, &stdin))
}
