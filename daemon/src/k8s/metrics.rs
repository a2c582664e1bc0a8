//! The controller's Prometheus metrics: counters and gauges in atomics,
//! [`render`] as a pure function, and a scrape-only HTTP/1.1 listener (one
//! request per connection, at most [`MAX_CONNECTIONS`] at once, 5 s per
//! connection), the same shape as petreld's.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9180";
const MAX_CONNECTIONS: usize = 8;

#[derive(Debug, Default)]
pub struct Metrics {
    pub leader: AtomicU64,
    pub services: AtomicU64,
    pub endpoint_slices: AtomicU64,
    pub nodes: AtomicU64,
    pub pods: AtomicU64,
    /// Watch events received, all kinds.
    pub watch_events: AtomicU64,
    pub lb_allocated: AtomicU64,
    pub lb_failed: AtomicU64,
    pub allocations: AtomicU64,
    pub releases: AtomicU64,
    pub events_raised: AtomicU64,
    pub record_writes: AtomicU64,
    pub node_label_writes: AtomicU64,
    pub nodes_collected: AtomicU64,
    pub leaks_reclaimed: AtomicU64,
    pub errors: AtomicU64,
    /// Milliseconds from the oldest unprocessed watch event to the end of
    /// the pass that handled it, last pass.
    pub sync_lag_ms: AtomicU64,
    pub passes: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed);
    }
}

/// Prometheus text exposition.
pub fn render(m: &Metrics) -> String {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 18] = [
        (
            "petrel_controller_leader",
            "gauge",
            "1 while this controller acts",
            g(&m.leader),
        ),
        (
            "petrel_controller_services",
            "gauge",
            "Services in the cache",
            g(&m.services),
        ),
        (
            "petrel_controller_endpoint_slices",
            "gauge",
            "EndpointSlices in the cache",
            g(&m.endpoint_slices),
        ),
        (
            "petrel_controller_nodes",
            "gauge",
            "Nodes in the cache",
            g(&m.nodes),
        ),
        (
            "petrel_controller_pods",
            "gauge",
            "Pods in the cache",
            g(&m.pods),
        ),
        (
            "petrel_controller_watch_events_total",
            "counter",
            "Kubernetes watch events received",
            g(&m.watch_events),
        ),
        (
            "petrel_controller_lb_services_allocated",
            "gauge",
            "LoadBalancer Services holding an address",
            g(&m.lb_allocated),
        ),
        (
            "petrel_controller_lb_services_failed",
            "gauge",
            "LoadBalancer Services that cannot get an address",
            g(&m.lb_failed),
        ),
        (
            "petrel_controller_lb_allocations_total",
            "counter",
            "Load-balancer addresses assigned",
            g(&m.allocations),
        ),
        (
            "petrel_controller_lb_releases_total",
            "counter",
            "Load-balancer addresses released",
            g(&m.releases),
        ),
        (
            "petrel_controller_events_total",
            "counter",
            "Kubernetes Events raised",
            g(&m.events_raised),
        ),
        (
            "petrel_controller_record_writes_total",
            "counter",
            "Service record writes and deletes in the datastore",
            g(&m.record_writes),
        ),
        (
            "petrel_controller_node_label_writes_total",
            "counter",
            "Node record label writes",
            g(&m.node_label_writes),
        ),
        (
            "petrel_controller_nodes_collected_total",
            "counter",
            "Nodes garbage-collected after their Node went away",
            g(&m.nodes_collected),
        ),
        (
            "petrel_controller_leaks_reclaimed_total",
            "counter",
            "Addresses of pods that no longer exist released",
            g(&m.leaks_reclaimed),
        ),
        (
            "petrel_controller_errors_total",
            "counter",
            "Errors talking to Kubernetes or the datastore",
            g(&m.errors),
        ),
        (
            "petrel_controller_sync_lag_seconds",
            "gauge",
            "From the oldest watch event of the last pass to its end",
            0,
        ),
        (
            "petrel_controller_passes_total",
            "counter",
            "Reconcile passes",
            g(&m.passes),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        if name == "petrel_controller_sync_lag_seconds" {
            let _ = writeln!(out, "{name} {:.3}", g(&m.sync_lag_ms) as f64 / 1000.0);
        } else {
            let _ = writeln!(out, "{name} {v}");
        }
    }
    out
}

pub async fn serve(listener: TcpListener, m: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (code, body) = if head.starts_with("GET /metrics") {
                    ("200 OK", render(&m))
                } else if head.starts_with("GET /healthz") {
                    ("200 OK", "ok\n".to_string())
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let m = Metrics::default();
        Metrics::set(&m.leader, 1);
        Metrics::set(&m.sync_lag_ms, 1500);
        let t = render(&m);
        assert!(t.contains("petrel_controller_leader 1\n"), "{t}");
        assert!(
            t.contains("petrel_controller_sync_lag_seconds 1.500\n"),
            "{t}"
        );
        assert_eq!(t.matches("# TYPE").count(), 18);
    }
}
