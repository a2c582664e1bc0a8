//! Prometheus metrics, `/healthz` and `/readyz` over a minimal HTTP/1.1
//! server.
//!
//! The values live where they change (the FIB writer's atomics, the
//! datastore wrapper's counters, [`Health`], the MTU status); a scrape
//! reads them and asks the speaker for its peers, so nothing is sampled on
//! a timer. [`render`] is a pure function over a [`Snapshot`], tested
//! without sockets.
//!
//! The server answers one request per connection (`Connection: close`), at
//! most [`MAX_CONNECTIONS`] at once (more wait in the kernel's accept
//! queue), with a [`IO_TIMEOUT`] per connection: a scraper, not a web
//! server.

//!
//! Parts: [`store`] counts and times the datastore calls (the
//! instrumented store), [`render`] writes the exposition text, [`http`]
//! serves it with the health endpoints.

pub mod http;
pub mod render;
pub mod store;

pub use crate::cluster::IpamGauges;
pub use http::{bind, serve, IO_TIMEOUT, MAX_CONNECTIONS};
pub use render::{render, Snapshot};
pub use store::{InstrumentedStore, Records, StoreMetrics, StoreOp};

use crate::fib::mtu::MtuStatus;
use crate::fib::FibCounters;
use crate::health::Health;
use std::sync::{Arc, Mutex};

/// The default `[metrics] address`: loopback only, so that nothing is
/// exposed until an operator chooses to.
pub const DEFAULT_ADDRESS: &str = crate::config::DEFAULT_METRICS_ADDRESS;

/// Everything a scrape reads, shared with the parts that update it.
#[derive(Clone)]
pub struct Metrics {
    pub health: Arc<Health>,
    pub fib: Arc<FibCounters>,
    pub mtu: Arc<Mutex<MtuStatus>>,
    pub store: Arc<StoreMetrics>,
    pub ipam: Arc<IpamGauges>,
    pub node: String,
}
