//! The service's wire format, version 1: one request and one reply per
//! connection, each a single line of JSON. serde_json escapes newlines in
//! strings, so a compact message never contains one.
//!
//! Request: `{"v":1,"env":{"command":"ADD","container_id":...},"stdin":"<network config>"}`.
//! Reply: `{"v":1,"stdout":"<what the plugin prints>","exit":0}`.
//! A server that does not speak the request's version answers with a CNI
//! error (code 1, incompatible version) in a version-1 reply.

use crate::env::Env;
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

/// Longest request line the server reads: network configs with a
/// prevResult are a few KiB; this only bounds a misbehaving client.
pub const MAX_REQUEST: usize = 1 << 20;

/// Longest reply line the client reads.
pub const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub env: Env,
    /// The network config as the runtime passed it on stdin.
    pub stdin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    /// Printed verbatim on the plugin's stdout (may be empty).
    pub stdout: String,
    /// The plugin's exit status.
    pub exit: u8,
}

impl Reply {
    pub fn new(stdout: String, exit: u8) -> Reply {
        Reply {
            v: VERSION,
            stdout,
            exit,
        }
    }
}

/// One message as a line.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialise.
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_even_with_newlines_inside() {
        let r = Request {
            v: VERSION,
            env: Env {
                command: Some("ADD".into()),
                ..Default::default()
            },
            stdin: "{\n \"cniVersion\": \"1.0.0\"\n}\n".into(),
        };
        let line = encode(&r);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(*line.last().unwrap(), b'\n');
        let back: Request = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.starts_with(r#"{"v":1,"env":{"command":"ADD"},"stdin":"#),
            "{text}"
        );
    }
}
