//! The control socket: petrelctl talks to petreld over a unix stream socket
//! (root-only by default: mode 0600), one JSON request per line, one JSON
//! response per line. Requests and responses are plain serde types, so that
//! scripts can speak the protocol too.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    ShowPeers,
    ShowRoutes {
        prefix: Option<String>,
    },
    PeerEnable {
        address: String,
    },
    PeerDisable {
        address: String,
        message: Option<String>,
    },
    PeerRefresh {
        address: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Peers { peers: Vec<PeerRow> },
    Routes { routes: Vec<RouteRow> },
    Ok,
    Error { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub node: String,
    pub router_id: String,
    pub asn: u32,
    pub version: String,
    pub uptime_seconds: u64,
    pub peers_total: usize,
    pub peers_established: usize,
    pub routes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerRow {
    pub address: String,
    pub asn: u32,
    pub state: String,
    pub uptime_seconds: u64,
    pub received: u64,
    pub accepted: u64,
    pub advertised: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteRow {
    pub prefix: String,
    pub next_hop: String,
    pub as_path: String,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
    pub best: bool,
    pub peer: String,
    pub stale: bool,
}

/// Sends one request and reads one response.
pub async fn call(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach petreld at {}: {e} (is petreld running? is --socket right? the socket is root-only)",
            socket.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut reader = BufReader::new(r);
    let mut resp = String::new();
    reader.read_line(&mut resp).await?;
    if resp.is_empty() {
        anyhow::bail!("petreld closed the control connection without answering");
    }
    Ok(serde_json::from_str(&resp)?)
}
