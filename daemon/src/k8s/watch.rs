//! The Kubernetes side: one kube-rs watcher and reflector per kind, each
//! reporting what changed through one bounded channel.
//!
//! The channel carries only *which* Service changed (the reflector stores
//! hold the objects), so a burst coalesces: when the channel is full the
//! sender sets [`Caches::overflow`] instead of waiting, and the controller
//! then takes every Service as changed (a level-based pass over the
//! caches is always correct, merely slower).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

use super::metrics::Metrics;

/// Capacity of the change channel.
pub const CHANGES: usize = 4096;

/// The label EndpointSlices name their Service by.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A Service, or one of its EndpointSlices (namespace, name).
    Service(String, String),
    Node,
    /// A watch (re)listed: everything may have changed.
    Resync,
}

pub struct Caches {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub nodes: Store<Node>,
    /// Metadata only: the controller needs to know a pod exists, not its spec.
    pub pods: Store<PartialObjectMeta<Pod>>,
    synced: [Arc<AtomicBool>; 4],
    pub overflow: Arc<AtomicBool>,
}

impl Caches {
    /// Every watch has listed once.
    pub fn synced(&self) -> bool {
        self.synced[..3].iter().all(|s| s.load(Ordering::Relaxed))
    }
    pub fn pods_synced(&self) -> bool {
        self.synced[3].load(Ordering::Relaxed)
    }
}

fn sender(tx: &mpsc::Sender<Change>, overflow: &AtomicBool, c: Change) {
    if tx.try_send(c).is_err() {
        overflow.store(true, Ordering::Relaxed);
    }
}

macro_rules! spawn_watch {
    ($stream:expr, $writer:expr, $synced:expr, $tx:expr, $overflow:expr, $metrics:expr, $what:expr, $change:expr) => {{
        let synced = $synced.clone();
        let tx = $tx.clone();
        let overflow = $overflow.clone();
        let metrics = $metrics.clone();
        let change = $change;
        let stream = $stream.default_backoff().reflect($writer);
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                Metrics::inc(&metrics.watch_events);
                match ev {
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::Delete(o)) => {
                        if let Some(c) = change(&o) {
                            sender(&tx, &overflow, c);
                        }
                    }
                    Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => {}
                    Ok(watcher::Event::InitDone) => {
                        synced.store(true, Ordering::Relaxed);
                        sender(&tx, &overflow, Change::Resync);
                    }
                    Err(e) => {
                        Metrics::inc(&metrics.errors);
                        warn!(what = $what, error = %e, "watch failed; retrying with backoff");
                    }
                }
            }
        });
    }};
}

/// Starts the four watches; they run until the process ends.
pub fn start(client: &Client, tx: mpsc::Sender<Change>, metrics: Arc<Metrics>) -> Caches {
    let synced: [Arc<AtomicBool>; 4] = Default::default();
    let overflow = Arc::new(AtomicBool::new(false));
    let cfg = watcher::Config::default;

    let (services, w) = reflector::store::<Service>();
    spawn_watch!(
        watcher(Api::<Service>::all(client.clone()), cfg()),
        w,
        synced[0],
        tx,
        overflow,
        metrics,
        "services",
        |s: &Service| Some(Change::Service(
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default()
        ))
    );
    let (slices, w) = reflector::store::<EndpointSlice>();
    spawn_watch!(
        watcher(Api::<EndpointSlice>::all(client.clone()), cfg()),
        w,
        synced[1],
        tx,
        overflow,
        metrics,
        "endpointslices",
        |s: &EndpointSlice| {
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))?;
            Some(Change::Service(
                s.metadata.namespace.clone().unwrap_or_default(),
                svc.clone(),
            ))
        }
    );
    let (nodes, w) = reflector::store::<Node>();
    spawn_watch!(
        watcher(Api::<Node>::all(client.clone()), cfg()),
        w,
        synced[2],
        tx,
        overflow,
        metrics,
        "nodes",
        |_: &Node| Some(Change::Node)
    );
    let (pods, w) = reflector::store::<PartialObjectMeta<Pod>>();
    spawn_watch!(
        watcher(Api::<PartialObjectMeta<Pod>>::all(client.clone()), cfg()),
        w,
        synced[3],
        tx,
        overflow,
        metrics,
        "pods",
        |_: &PartialObjectMeta<Pod>| None::<Change>
    );
    Caches {
        services,
        slices,
        nodes,
        pods,
        synced,
        overflow,
    }
}
