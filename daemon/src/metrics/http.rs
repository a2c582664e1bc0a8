//! The scrape endpoint: `/metrics`, `/healthz` and `/readyz` over a
//! minimal HTTP/1.1 server, one request per connection.

use petrel_bgp::speaker::Speaker;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{render, Metrics, Snapshot};

pub const MAX_CONNECTIONS: usize = 16;
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read; a scrape's is a few hundred octets.
const MAX_REQUEST: usize = 8 << 10;

/// Binds the listener (so that a bad address fails at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until the process ends. `live_after`: how old the main loop's
/// heartbeat may be for `/healthz` to answer 200.
pub async fn serve(listener: TcpListener, m: Metrics, speaker: Speaker, live_after: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (m, speaker) = (m.clone(), speaker.clone());
        tokio::spawn(async move {
            let r =
                tokio::time::timeout(IO_TIMEOUT, answer(stream, &m, &speaker, live_after)).await;
            if !matches!(r, Ok(Ok(()))) {
                debug!(%peer, "metrics: connection dropped (timeout or I/O error)");
            }
            drop(permit);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    m: &Metrics,
    speaker: &Speaker,
    live_after: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request header too large\n",
                false,
            )
            .await;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "only GET and HEAD\n",
            head_only,
        )
        .await;
    }
    match path {
        "/metrics" => {
            let peers = speaker.peers().await.unwrap_or_default();
            let bfd = speaker.bfd_sessions().await.unwrap_or_default();
            let body = render(&Snapshot {
                m,
                peers: &peers,
                bfd: &bfd,
            });
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/healthz" => {
            let age = m.health.since_beat();
            if age <= live_after {
                respond(&mut stream, 200, "text/plain", "ok\n", head_only).await
            } else {
                let body = format!("main loop silent for {}s\n", age.as_secs());
                respond(&mut stream, 503, "text/plain", &body, head_only).await
            }
        }
        "/readyz" => {
            let reasons = m.health.degraded_reasons();
            if m.health.is_ready() && reasons.is_empty() {
                respond(&mut stream, 200, "text/plain", "ready\n", head_only).await
            } else {
                let body = format!("not ready:\n{}\n", reasons.join("\n"));
                respond(&mut stream, 503, "text/plain", &body, head_only).await
            }
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "try /metrics, /healthz or /readyz\n",
                head_only,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}
