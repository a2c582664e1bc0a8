//! petrel-ipam: the CNI IPAM plugin. Reads the network config on stdin and
//! the CNI_* environment, prints a result or a CNI error object on stdout,
//! and logs to stderr (PETREL_LOG sets the level, default warn).
//!
//! When petreld's IPAM service accepts on the config's `daemon_socket`
//! (default /run/petrel/ipam.sock) the invocation is forwarded there;
//! otherwise the plugin opens the datastore itself, under the host lock.
//! The forward path starts no async runtime: it is a blocking round trip
//! on a unix socket, and it is on every ADD's critical path.

use petrel_ipam::cni::{self, CniError};
use petrel_ipam::service::client::{self, Forward};
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
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::new(cni::code::IO_FAILURE, "cannot read stdin", e.to_string());
        return print(cni::output(&Err(err), &stdin));
    }
    if let Some((path, timeout)) = cni::daemon_route(&env, &stdin) {
        // from_utf8 cannot fail here: daemon_route parsed it as JSON.
        let text = String::from_utf8_lossy(&stdin);
        match client::forward(&path, &env, &text, timeout) {
            Forward::Answered(reply) => return print((reply.stdout, reply.exit)),
            Forward::Failed(e) => {
                tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "failed");
                return print(cni::output(&Err(e), &stdin));
            }
            Forward::NoService(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no IPAM service; using the datastore directly");
            }
        }
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

fn print((stdout, exit): (String, u8)) -> ExitCode {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(stdout.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::from(exit)
}
