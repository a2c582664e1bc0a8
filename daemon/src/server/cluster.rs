//! Opening the datastore (retrying while it is down), the node-local IPAM
//! service, and the cluster driver.

use crate::cluster::IpamGauges;
use crate::config::{self, Config};
use crate::health::Health;
use crate::intent::Intent;
use crate::metrics::{InstrumentedStore, StoreMetrics};
use petrel_ipam::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How long a starting petreld waits for the cluster's BGP configuration
/// before going on with the defaults.
const CLUSTER_CONFIG_WAIT: Duration = Duration::from_secs(20);

/// With a datastore: the node's addresses, and the datastore opened with
/// the cluster's BGP configuration read into `cfg` (its AS unless the file
/// sets one, its listen port), waiting up to [`CLUSTER_CONFIG_WAIT`]; a
/// datastore down at start is opened later by [`ClusterStart::run`].
pub(super) async fn open_at_start(
    cfg: &mut Config,
) -> anyhow::Result<(Option<Arc<dyn Store>>, Vec<ipnet::IpNet>)> {
    let mut store = None;
    let mut addresses = Vec::new();
    if let Some(ds) = cfg.datastore.clone() {
        addresses = crate::cluster::node_addresses(&cfg.node)
            .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.file.display()))?;
        let opened = tokio::time::timeout(CLUSTER_CONFIG_WAIT, async {
            let s = crate::cluster::open_store(&ds).await?;
            let c = crate::cluster::initial_bgp_config(&*s, CLUSTER_CONFIG_WAIT).await;
            Ok::<_, petrel_ipam::store::StoreError>((s, c))
        })
        .await;
        match opened {
            Ok(Ok((s, c))) => {
                if let Some(c) = c {
                    if !cfg.node.asn_from_file {
                        cfg.node.asn = c.asn;
                    }
                    if c.listen_port != 179 {
                        for l in cfg.bgp.listen.iter_mut().filter(|l| l.port() == 179) {
                            l.set_port(c.listen_port);
                        }
                    }
                }
                store = Some(s);
            }
            Ok(Err(e)) => {
                warn!(error = %e, "datastore not reachable at start; retrying in the background")
            }
            Err(_) => warn!("datastore not reachable at start; retrying in the background"),
        }
    }
    Ok((store, addresses))
}

/// Opens the datastore (retrying while it is down) and runs the cluster
/// driver.
pub(super) struct ClusterStart {
    pub(super) ds: config::Datastore,
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) store_metrics: Arc<StoreMetrics>,
    pub(super) ipam_gauges: Arc<IpamGauges>,
    pub(super) ipam_socket: Option<PathBuf>,
    pub(super) node: config::Node,
    pub(super) addresses: Vec<ipnet::IpNet>,
    pub(super) rr_cluster_id: Option<std::net::Ipv4Addr>,
    pub(super) graceful_restart: Option<petrel_bgp::speaker::GracefulRestartSettings>,
    pub(super) health: Arc<Health>,
    pub(super) view: crate::cluster::SharedView,
}

impl ClusterStart {
    pub(super) async fn run(self, intent: Arc<tokio::sync::Mutex<Intent>>) {
        self.health.expect_datastore();
        let mut backoff = Duration::from_millis(500);
        let store = match self.store {
            Some(s) => s,
            None => loop {
                match crate::cluster::open_store(&self.ds).await {
                    Ok(s) => break s,
                    Err(e) => {
                        self.health.set_datastore_ok(false);
                        warn!(error = %e, retry_in = ?backoff, "cannot open the datastore");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            },
        };
        let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(
            store,
            self.store_metrics,
            Some(self.health.clone()),
        ));
        // The IPAM service: petrel-ipam forwards CNI calls here and gets
        // this warm allocator (and, with the embedded store, the only
        // process that may open the file).
        if let Some(path) = &self.ipam_socket {
            let ipam = Arc::new(petrel_ipam::Ipam::new(store.clone()));
            match petrel_ipam::service::Service::bind(path, ipam, Default::default()) {
                Ok(svc) => {
                    info!(socket = %path.display(), "IPAM service for petrel-ipam");
                    tokio::spawn(svc.run());
                }
                Err(e) => {
                    error!(error = %e, "IPAM service not started; petrel-ipam goes to the datastore itself");
                    self.health
                        .set_reason("ipam", Some(format!("ipam service: {e}")));
                }
            }
        }
        crate::cluster::Cluster {
            store,
            ipam_gauges: self.ipam_gauges,
            node: self.node,
            addresses: self.addresses,
            rr_cluster_id: self.rr_cluster_id,
            graceful_restart: self.graceful_restart,
            health: self.health,
            view: self.view,
        }
        .run(intent)
        .await
    }
}
