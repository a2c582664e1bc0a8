//! The plugin side: hand one invocation to the daemon's service and wait
//! for its answer, with blocking std I/O (no async runtime to start).
//!
//! The rule that keeps forwarding safe: only a failure to *connect* lets
//! the plugin fall back to the datastore itself, because then nothing was
//! sent. Once the service took a request it may act on it, so any later
//! failure is reported as a CNI error ("try again later") and never
//! followed by a second, direct attempt that could assign a second
//! address. The runtime retries an ADD, which returns the address the
//! first attempt took if it landed; DEL is idempotent.

use super::proto::{self, Reply, Request};
use crate::env::Env;
use crate::error::{code, CniError};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug)]
pub enum Forward {
    /// No service accepts at the path (absent, stale socket, refused):
    /// nothing was sent, so the caller may go to the datastore directly.
    NoService(std::io::Error),
    /// The service answered.
    Answered(Reply),
    /// The service took the request and then failed or did not answer in
    /// time: it may have acted on it, so the caller must not retry itself.
    Failed(CniError),
}

pub fn forward(path: &Path, env: &Env, stdin: &str, timeout: Duration) -> Forward {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => return Forward::NoService(e),
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Forward::Failed(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("petrel IPAM service at {}: {what}", path.display()),
            format!(
                "{e}; the request may have been applied, so it was not retried directly \
                 (a repeated ADD returns the same address, DEL is idempotent)"
            ),
        ))
    };
    if let Err(e) = stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
    {
        return failed("cannot set a timeout", &e);
    }
    let req = Request {
        v: proto::VERSION,
        env: env.clone(),
        stdin: stdin.to_string(),
    };
    if let Err(e) = (&stream).write_all(&proto::encode(&req)) {
        return failed("sending the request failed", &e);
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new((&stream).take(proto::MAX_REPLY as u64));
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => return failed("closed the connection without an answer", &"end of stream"),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return failed(&format!("no answer within {timeout:?}"), &e)
        }
        Err(e) => return failed("reading the answer failed", &e),
    }
    match serde_json::from_slice::<Reply>(&line) {
        Ok(r) => Forward::Answered(r),
        Err(e) => failed("answered something that is not a version 1 reply", &e),
    }
}
