//! The controller's loop: while leader, it brings the datastore in line
//! with the caches, one changed Service at a time, plus periodic passes
//! for nodes, leaked pod addresses, orphaned load-balancer handles and the
//! status record.
//!
//! It is level-based: a pass reads the cached objects and what it last
//! wrote, never the event that woke it, so a lost or coalesced event costs
//! latency, not correctness; a full pass runs every `resync`. State kept
//! between passes (what is stored, hold-downs, backoffs) is dropped when
//! leadership is lost and rebuilt from the datastore when it is won, so a
//! new leader starts from what the old one wrote.

use super::advert;
use super::grace::Grace;
use super::holddown::HoldDown;
use super::labels;
use super::lbipam::{self, AllocError, Holder};
use super::lbreq::{self, LbRequest};
use super::lease::Fence;
use super::metrics::Metrics;
use super::watch::{Caches, Change, SERVICE_NAME_LABEL};
use super::FINALIZER;
use crate::cluster::model::{self, ControllerStatus, OwnedLabels};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use petrel_ipam::ipam::Ipam;
use petrel_ipam::keys;
use petrel_ipam::model::Block;
use petrel_ipam::store::Store;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

type Key = (String, String);

#[derive(Debug, Clone)]
pub struct Options {
    pub identity: String,
    pub hold_down: Duration,
    pub node_grace: Duration,
    pub leak_grace: Duration,
    pub resync: Duration,
    pub status_every: Duration,
    /// How often nodes and pod leaks are looked at.
    pub gc_every: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identity: "petrel-controller".into(),
            hold_down: super::holddown::DEFAULT_HOLD_DOWN,
            node_grace: Duration::from_secs(600),
            leak_grace: Duration::from_secs(900),
            resync: Duration::from_secs(60),
            status_every: Duration::from_secs(10),
            gc_every: Duration::from_secs(30),
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// A Service whose request failed: retried when the Service changes, or
/// at `retry_at` (exponential, capped), never in a storm.
#[derive(Debug, Clone)]
struct Failure {
    resource_version: String,
    attempts: u32,
    retry_at: Instant,
}

/// A pod address that looks leaked: block, offset and seq identify the
/// assignment exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LeakKey {
    addr: IpAddr,
    seq: u64,
    namespace: String,
    pod: String,
}

/// State of a leader; rebuilt on every election win.
#[derive(Default)]
struct Leading {
    since_ms: u64,
    /// Our service records as stored.
    records: BTreeMap<String, model::Service>,
    holds: HashMap<Key, HoldDown>,
    /// Handle → its addresses, as last read or written.
    held: HashMap<String, Vec<IpAddr>>,
    /// Services known to hold a per-Service handle.
    lb_keys: HashSet<Key>,
    /// Service → the sharing group it was last put in.
    group_of: HashMap<Key, Key>,
    failures: HashMap<Key, Failure>,
    failed_now: HashSet<Key>,
    /// Last Event per Service: (resourceVersion, message), to raise one
    /// Event per distinct failure and object version.
    evented: HashMap<Key, (String, String)>,
    node_labels_seen: HashMap<String, BTreeMap<String, String>>,
    dead_nodes: Option<Grace<String>>,
    leaks: Option<Grace<LeakKey>>,
    next_sweep: Option<Instant>,
    next_gc: Option<Instant>,
    next_resync: Option<Instant>,
    next_status: Option<Instant>,
    reclaimed: u64,
    recent_reclaimed: VecDeque<String>,
    nodes_collected: Vec<String>,
    last_status: Option<ControllerStatus>,
    last_sync_ms: u64,
}

pub struct Controller {
    client: Client,
    store: Arc<dyn Store>,
    ipam: Ipam,
    caches: Caches,
    opts: Options,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    errors: VecDeque<String>,
    dirty: BTreeSet<Key>,
    all_dirty: bool,
    nodes_dirty: bool,
    oldest_change: Option<Instant>,
    lead: Option<Leading>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn key_of(s: &Service) -> Key {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

fn ingress_ips(s: &Service) -> Vec<String> {
    let mut v: Vec<String> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|l| l.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    v.dedup();
    v
}

/// `addrs` as `status.loadBalancer.ingress` lists them: the Service's
/// primary family first, in `spec.ipFamilies` order (as `spec.clusterIPs`
/// is), so that a client taking the first address gets the family the
/// Service asked for first.
fn ingress_order(s: &Service, addrs: &[IpAddr]) -> Vec<String> {
    let families = s
        .spec
        .as_ref()
        .and_then(|sp| sp.ip_families.clone())
        .unwrap_or_default();
    let rank = |a: &IpAddr| {
        let f = if a.is_ipv4() { "IPv4" } else { "IPv6" };
        families
            .iter()
            .position(|x| x == f)
            .unwrap_or(families.len())
    };
    let mut v = addrs.to_vec();
    v.sort_by_key(|a| (rank(a), *a));
    v.iter().map(|a| a.to_string()).collect()
}

fn has_finalizer(s: &Service) -> bool {
    s.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

impl Controller {
    pub fn new(
        client: Client,
        store: Arc<dyn Store>,
        caches: Caches,
        opts: Options,
        fence: Arc<Fence>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "petrel-controller".into(),
                instance: Some(opts.identity.clone()),
            },
        );
        Controller {
            ipam: Ipam::new(store.clone()),
            client,
            store,
            caches,
            opts,
            fence,
            metrics,
            recorder,
            errors: VecDeque::new(),
            dirty: BTreeSet::new(),
            all_dirty: true,
            nodes_dirty: true,
            oldest_change: None,
            lead: None,
        }
    }

    fn error(&mut self, what: String) {
        warn!("{what}");
        Metrics::inc(&self.metrics.errors);
        self.errors.push_back(what);
        while self.errors.len() > 5 {
            self.errors.pop_front();
        }
    }

    fn note(&mut self, c: Change) {
        self.oldest_change.get_or_insert_with(Instant::now);
        match c {
            Change::Service(ns, name) => {
                self.dirty.insert((ns, name));
            }
            Change::Node => self.nodes_dirty = true,
            Change::Resync => {
                self.all_dirty = true;
                self.nodes_dirty = true;
            }
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        mut self,
        mut changes: mpsc::Receiver<Change>,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                c = changes.recv() => match c {
                    Some(c) => self.note(c),
                    None => return,
                },
                _ = leading.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if *shutdown.borrow() {
                return;
            }
            // Take what else is queued: one pass for a burst.
            while let Ok(c) = changes.try_recv() {
                self.note(c);
            }
            if self.caches.overflow.swap(false, Ordering::Relaxed) {
                self.all_dirty = true;
            }
            let is_leader = *leading.borrow() && self.fence.acting();
            Metrics::set(&self.metrics.leader, is_leader as u64);
            self.count_caches();
            match (is_leader, self.lead.is_some()) {
                (false, true) => {
                    info!("not leader: standing by");
                    self.lead = None;
                }
                (true, false) if self.caches.synced() => match self.take_over().await {
                    Ok(l) => {
                        info!(
                            records = l.records.len(),
                            handles = l.lb_keys.len(),
                            "leading: state loaded from the datastore"
                        );
                        self.lead = Some(l);
                        self.all_dirty = true;
                        self.nodes_dirty = true;
                    }
                    Err(e) => {
                        self.error(format!("cannot load state to lead: {e:#}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ => {}
            }
            if self.lead.is_some() {
                self.pass().await;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        // At least once a second: the fence may have lapsed, holds expire.
        let mut w = now + Duration::from_secs(1);
        if let Some(l) = &self.lead {
            for t in [l.next_sweep, l.next_gc, l.next_resync, l.next_status]
                .into_iter()
                .flatten()
            {
                w = w.min(t);
            }
            for h in l.holds.values() {
                if let Some(t) = h.next_deadline() {
                    w = w.min(t);
                }
            }
            for f in l.failures.values() {
                w = w.min(f.retry_at);
            }
        }
        w.max(now)
    }

    fn count_caches(&self) {
        let m = &self.metrics;
        Metrics::set(&m.services, self.caches.services.len() as u64);
        Metrics::set(&m.endpoint_slices, self.caches.slices.len() as u64);
        Metrics::set(&m.nodes, self.caches.nodes.len() as u64);
        Metrics::set(&m.pods, self.caches.pods.len() as u64);
    }

    async fn take_over(&self) -> anyhow::Result<Leading> {
        let mut l = Leading {
            since_ms: unix_ms(),
            dead_nodes: Some(Grace::new(self.opts.node_grace)),
            leaks: Some(Grace::new(self.opts.leak_grace)),
            ..Leading::default()
        };
        for s in model::services(&*self.store).await? {
            if s.name.starts_with(advert::RECORD_PREFIX) {
                l.records.insert(s.name.clone(), s);
            }
        }
        let prefix = format!("{}{}", keys::HANDLES, lbipam::HANDLE_PREFIX);
        for (k, _) in self.store.list_keys(&prefix).await? {
            let h = &k[keys::HANDLES.len()..];
            if let Some(Holder::Service {
                namespace, name, ..
            }) = lbipam::parse_handle(h)
            {
                l.lb_keys.insert((namespace.to_string(), name.to_string()));
            }
        }
        let now = Instant::now();
        // At once: handles of Services deleted while no leader ran.
        l.next_sweep = Some(now);
        l.next_gc = Some(now);
        l.next_status = Some(now);
        l.next_resync = Some(now + self.opts.resync);
        Ok(l)
    }

    fn service(&self, k: &Key) -> Option<Arc<Service>> {
        self.caches.services.get(&ObjectRef::new(&k.1).within(&k.0))
    }

    async fn pass(&mut self) {
        let now = Instant::now();
        let Some(mut l) = self.lead.take() else {
            return;
        };
        Metrics::inc(&self.metrics.passes);
        if l.next_resync.is_some_and(|t| now >= t) {
            self.all_dirty = true;
            l.next_resync = Some(now + self.opts.resync);
        }
        if self.all_dirty {
            self.all_dirty = false;
            for s in self.caches.services.state() {
                self.dirty.insert(key_of(&s));
            }
            for name in l.records.keys() {
                if let Some((ns, n)) = advert::record_owner(name) {
                    self.dirty.insert((ns.to_string(), n.to_string()));
                }
            }
            self.dirty.extend(l.lb_keys.iter().cloned());
            self.dirty.extend(l.holds.keys().cloned());
        }
        for (k, h) in l.holds.iter_mut() {
            if h.expire(now) {
                self.dirty.insert(k.clone());
            }
        }
        for (k, f) in &l.failures {
            if now >= f.retry_at {
                self.dirty.insert(k.clone());
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        let had_work = !dirty.is_empty();
        // Sharing groups first: their members' addresses depend on each other.
        let mut groups: BTreeSet<Key> = BTreeSet::new();
        for k in &dirty {
            if let Some(g) = l.group_of.get(k) {
                groups.insert(g.clone());
            }
            if let Some(s) = self.service(k) {
                if let Ok(r) = lbreq::request(&s) {
                    if let Some(key) = r.sharing_key {
                        groups.insert((k.0.clone(), key));
                    }
                }
            }
        }
        let mut shared: HashMap<Key, Vec<IpAddr>> = HashMap::new();
        let mut extra = BTreeSet::new();
        for g in groups {
            if !self.fence.acting() {
                break;
            }
            let members = self.sync_group(&mut l, &g).await;
            for (k, addrs) in members {
                extra.insert(k.clone());
                shared.insert(k, addrs);
            }
        }
        let slices = if had_work {
            self.slice_index()
        } else {
            HashMap::new()
        };
        let mut todo = dirty;
        todo.extend(extra);
        for k in todo {
            if !self.fence.acting() {
                // Demoted mid-pass: leave the rest to the next leader.
                break;
            }
            let s = self.service(&k);
            let addrs = self.sync_lb(&mut l, &k, s.as_deref(), &shared).await;
            self.sync_records(&mut l, &k, s.as_deref(), &addrs, slices.get(&k), now)
                .await;
        }
        if l.next_sweep.is_some_and(|t| now >= t) && self.fence.acting() {
            self.sweep_orphans(&mut l).await;
            l.next_sweep = Some(now + Duration::from_secs(300));
        }
        if (self.nodes_dirty || l.next_gc.is_some_and(|t| now >= t)) && self.fence.acting() {
            self.nodes_dirty = false;
            self.sync_nodes(&mut l).await;
        }
        if l.next_gc.is_some_and(|t| now >= t) && self.fence.acting() {
            self.reclaim_leaks(&mut l).await;
            l.next_gc = Some(now + self.opts.gc_every);
        }
        if let Some(t) = self.oldest_change.take() {
            Metrics::set(&self.metrics.sync_lag_ms, t.elapsed().as_millis() as u64);
        }
        if had_work && self.dirty.is_empty() {
            l.last_sync_ms = unix_ms();
        }
        let failed = l.failed_now.len() as u64;
        Metrics::set(&self.metrics.lb_failed, failed);
        Metrics::set(
            &self.metrics.lb_allocated,
            l.held.values().filter(|a| !a.is_empty()).count() as u64,
        );
        if l.next_status.is_some_and(|t| now >= t) && self.fence.acting() {
            self.write_status(&mut l).await;
            l.next_status = Some(now + self.opts.status_every);
        }
        self.lead = Some(l);
    }

    fn slice_index(&self) -> HashMap<Key, Vec<Arc<EndpointSlice>>> {
        let mut m: HashMap<Key, Vec<Arc<EndpointSlice>>> = HashMap::new();
        for s in self.caches.slices.state() {
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                let k = (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    svc.clone(),
                );
                m.entry(k).or_default().push(s);
            }
        }
        m
    }

    async fn held(&mut self, l: &mut Leading, handle: &str) -> Vec<IpAddr> {
        if let Some(a) = l.held.get(handle) {
            return a.clone();
        }
        match self.ipam.addrs_of_handle(handle).await {
            Ok(mut a) => {
                a.sort();
                l.held.insert(handle.to_string(), a.clone());
                a
            }
            Err(e) => {
                self.error(format!("reading handle {handle}: {e}"));
                Vec::new()
            }
        }
    }

    async fn raise(&mut self, l: &mut Leading, s: &Service, reason: &str, msg: String) {
        let k = key_of(s);
        let rv = s.metadata.resource_version.clone().unwrap_or_default();
        if l.evented.get(&k) == Some(&(rv.clone(), msg.clone())) {
            return;
        }
        warn!(service = %format!("{}/{}", k.0, k.1), reason, "{msg}");
        l.evented.insert(k, (rv, msg.clone()));
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(msg),
            action: "AllocateLoadBalancerIP".into(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &s.object_ref(&())).await {
            Ok(()) => Metrics::inc(&self.metrics.events_raised),
            Err(e) => self.error(format!("cannot raise an Event: {e}")),
        }
    }

    fn backoff(&self, l: &mut Leading, s: &Service) {
        let k = key_of(s);
        let rv = s.metadata.resource_version.clone().unwrap_or_default();
        let attempts = match l.failures.get(&k) {
            Some(f) if f.resource_version == rv => f.attempts + 1,
            _ => 0,
        };
        let d = self
            .opts
            .backoff_min
            .saturating_mul(1u32 << attempts.min(16))
            .min(self.opts.backoff_max);
        l.failures.insert(
            k,
            Failure {
                resource_version: rv,
                attempts,
                retry_at: Instant::now() + d,
            },
        );
    }

    /// Whether a failed Service should wait: unchanged and not yet due.
    fn waiting(l: &Leading, s: &Service) -> bool {
        let rv = s.metadata.resource_version.clone().unwrap_or_default();
        l.failures
            .get(&key_of(s))
            .is_some_and(|f| f.resource_version == rv && Instant::now() < f.retry_at)
    }

    /// A sharing group (namespace, key): the members in creation order,
    /// each admitted if its ports clash with no earlier member's; the
    /// first member's request decides the address. Returns each member's
    /// addresses (empty: not admitted).
    async fn sync_group(&mut self, l: &mut Leading, g: &Key) -> Vec<(Key, Vec<IpAddr>)> {
        let mut members: Vec<(Arc<Service>, LbRequest)> = self
            .caches
            .services
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(g.0.as_str())
                    && s.metadata.deletion_timestamp.is_none()
                    && lbreq::is_ours(s)
            })
            .filter_map(|s| {
                let r = lbreq::request(&s).ok()?;
                (r.sharing_key.as_deref() == Some(g.1.as_str())).then_some((s, r))
            })
            .collect();
        members.sort_by(|a, b| {
            (
                a.0.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &a.0.metadata.name,
            )
                .cmp(&(
                    b.0.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    &b.0.metadata.name,
                ))
        });
        let handle = lbipam::shared_handle(&g.0, &g.1);
        let mut out = Vec::new();
        let Some((first, req)) = members.first().cloned() else {
            // Nobody left: the address goes back.
            if self.held(l, &handle).await.is_empty() {
                l.held.remove(&handle);
            } else {
                self.release(l, &handle).await;
            }
            l.group_of.retain(|_, v| v != g);
            return out;
        };
        let current = self.held(l, &handle).await;
        let addrs = if Self::waiting(l, &first) {
            current
        } else {
            match lbipam::ensure(&self.ipam, &handle, &g.0, &req, &current).await {
                Ok(a) => {
                    if a != current {
                        Metrics::add(&self.metrics.allocations, newly(&a, &current));
                        info!(%handle, addrs = ?a, "shared address");
                    }
                    l.held.insert(handle.clone(), a.clone());
                    l.failures.remove(&key_of(&first));
                    a
                }
                Err(e) => {
                    l.held.remove(&handle);
                    self.raise(l, &first, e.reason(), e.to_string()).await;
                    self.backoff(l, &first);
                    Vec::new()
                }
            }
        };
        let mut taken: BTreeMap<lbreq::PortKey, String> = BTreeMap::new();
        for (i, (s, r)) in members.iter().enumerate() {
            let k = key_of(s);
            l.group_of.insert(k.clone(), g.clone());
            let clash = r.ports.iter().find_map(|p| taken.get(p).map(|o| (p, o)));
            if let Some((p, other)) = clash {
                let msg = format!(
                    "sharing key {:?}: port {}/{} is already used on the shared address by Service {other}",
                    g.1, p.protocol, p.port
                );
                self.raise(l, s, "PortsClash", msg).await;
                l.failed_now.insert(k.clone());
                out.push((k, Vec::new()));
                continue;
            }
            if i > 0 && !r.addrs.is_empty() && r.addrs != req.addrs {
                let msg = format!(
                    "sharing key {:?}: requests {:?} but the group's address is decided by Service {}",
                    g.1,
                    r.addrs,
                    first.metadata.name.as_deref().unwrap_or("")
                );
                self.raise(l, s, "AllocationFailed", msg).await;
                l.failed_now.insert(k.clone());
                out.push((k, Vec::new()));
                continue;
            }
            for p in &r.ports {
                taken.insert(p.clone(), s.metadata.name.clone().unwrap_or_default());
            }
            if addrs.is_empty() {
                l.failed_now.insert(k.clone());
            } else {
                l.failed_now.remove(&k);
            }
            out.push((k, addrs.clone()));
        }
        out
    }

    async fn release(&mut self, l: &mut Leading, handle: &str) {
        match self.ipam.release_handle(handle).await {
            Ok(freed) => {
                if !freed.is_empty() {
                    info!(%handle, ?freed, "released");
                    Metrics::add(&self.metrics.releases, freed.len() as u64);
                }
                l.held.remove(handle);
            }
            Err(e) => self.error(format!("releasing {handle}: {e}")),
        }
    }

    /// Load-balancer IPAM of one Service; returns its addresses.
    async fn sync_lb(
        &mut self,
        l: &mut Leading,
        k: &Key,
        s: Option<&Service>,
        shared: &HashMap<Key, Vec<IpAddr>>,
    ) -> Vec<IpAddr> {
        let wants = s.is_some_and(|s| s.metadata.deletion_timestamp.is_none() && lbreq::is_ours(s));
        let mut addrs = Vec::new();
        let mut holds_own = false;
        if let (true, Some(s)) = (wants, s) {
            let uid = s.metadata.uid.clone().unwrap_or_default();
            let handle = lbipam::handle(&k.0, &k.1, &uid);
            match lbreq::request(s) {
                Err(e) => {
                    // A malformed request keeps what it holds.
                    self.raise(l, s, "InvalidRequest", e.to_string()).await;
                    addrs = self.held(l, &handle).await;
                    holds_own = true;
                    l.failed_now.insert(k.clone());
                }
                Ok(r) if r.sharing_key.is_some() => {
                    addrs = shared.get(k).cloned().unwrap_or_default();
                }
                Ok(r) => {
                    l.group_of.remove(k);
                    holds_own = true;
                    let current = self.held(l, &handle).await;
                    if Self::waiting(l, s) {
                        addrs = current;
                    } else {
                        match lbipam::ensure(&self.ipam, &handle, &k.0, &r, &current).await {
                            Ok(a) => {
                                if a != current {
                                    Metrics::add(&self.metrics.allocations, newly(&a, &current));
                                    info!(service = %format!("{}/{}", k.0, k.1), addrs = ?a, "load-balancer address");
                                }
                                l.held.insert(handle.clone(), a.clone());
                                l.lb_keys.insert(k.clone());
                                l.failures.remove(k);
                                l.failed_now.remove(k);
                                addrs = a;
                            }
                            Err(e) => {
                                // The store may have changed under the
                                // failed call: read the handle again next time.
                                l.held.remove(&handle);
                                l.failed_now.insert(k.clone());
                                if matches!(e, AllocError::Ipam(_)) {
                                    self.error(format!("{}/{}: {e}", k.0, k.1));
                                }
                                self.raise(l, s, e.reason(), e.to_string()).await;
                                self.backoff(l, s);
                            }
                        }
                    }
                }
            }
            if !holds_own && l.lb_keys.contains(k) {
                // Joined a sharing group: its own handle goes.
                self.release(l, &handle).await;
                l.lb_keys.remove(k);
            }
        } else {
            l.failures.remove(k);
            l.failed_now.remove(k);
            l.evented.remove(k);
            if l.lb_keys.remove(k) {
                let prefix = format!("{}{}{}.{}.", keys::HANDLES, lbipam::HANDLE_PREFIX, k.0, k.1);
                match self.store.list_keys(&prefix).await {
                    Ok(hs) => {
                        for (h, _) in hs {
                            self.release(l, &h[keys::HANDLES.len()..]).await;
                        }
                    }
                    Err(e) => {
                        l.lb_keys.insert(k.clone());
                        self.error(format!("listing handles of {}/{}: {e}", k.0, k.1));
                        return addrs;
                    }
                }
            }
        }
        if let Some(s) = s {
            self.sync_object(s, wants, &addrs).await;
        }
        addrs
    }

    /// The Service object: `status.loadBalancer.ingress` and the finalizer.
    async fn sync_object(&mut self, s: &Service, wants: bool, addrs: &[IpAddr]) {
        let (ns, name) = key_of(s);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let want_ips = ingress_order(s, addrs);
        let have_ips = ingress_ips(s);
        // A Service of another class or type keeps whatever its own
        // implementation wrote; ours is cleared only where we wrote it.
        let ours = wants || has_finalizer(s);
        if ours && s.metadata.deletion_timestamp.is_none() && want_ips != have_ips {
            let ingress: Vec<serde_json::Value> = want_ips
                .iter()
                .map(|ip| serde_json::json!({ "ip": ip }))
                .collect();
            let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => debug!(service = %format!("{ns}/{name}"), ?want_ips, "status written"),
                Err(e) => self.error(format!("{ns}/{name}: cannot write status: {e}")),
            }
        }
        let want_fin = wants && !addrs.is_empty();
        if want_fin != has_finalizer(s) && !(want_fin && s.metadata.deletion_timestamp.is_some()) {
            // Strategic merge: finalizers merge as a set, so other
            // controllers' finalizers are untouched and no version race.
            let patch = if want_fin {
                serde_json::json!({ "metadata": { "finalizers": [FINALIZER] } })
            } else {
                serde_json::json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": [FINALIZER] } })
            };
            match api
                .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => debug!(service = %format!("{ns}/{name}"), add = want_fin, "finalizer"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => self.error(format!("{ns}/{name}: cannot update the finalizer: {e}")),
            }
        }
    }

    async fn sync_records(
        &mut self,
        l: &mut Leading,
        k: &Key,
        s: Option<&Service>,
        addrs: &[IpAddr],
        slices: Option<&Vec<Arc<EndpointSlice>>>,
        now: Instant,
    ) {
        let desired = match s {
            Some(s) => {
                let nodes = advert::endpoint_nodes(slices.into_iter().flatten().map(|a| &**a));
                let h = l
                    .holds
                    .entry(k.clone())
                    .or_insert_with(|| HoldDown::new(nodes.clone()));
                h.observe(nodes, now, self.opts.hold_down);
                let adv = h.advertised();
                advert::derive(s, addrs, &adv)
            }
            None => {
                l.holds.remove(k);
                Vec::new()
            }
        };
        let mine: Vec<String> = l
            .records
            .keys()
            .filter(|n| advert::record_owner(n) == Some((k.0.as_str(), k.1.as_str())))
            .cloned()
            .collect();
        for r in &desired {
            if l.records.get(&r.name) != Some(r) {
                self.write_record(l, &r.name, Some(r.clone())).await;
            }
        }
        for n in mine {
            if !desired.iter().any(|r| r.name == n) {
                self.write_record(l, &n, None).await;
            }
        }
    }

    async fn write_record(&mut self, l: &mut Leading, name: &str, rec: Option<model::Service>) {
        if !self.fence.acting() {
            return;
        }
        let key = model::service_key(name);
        let r = model::modify::<model::Service, _>(&*self.store, &key, |_| Ok(rec.clone())).await;
        match r {
            Ok(_) => {
                Metrics::inc(&self.metrics.record_writes);
                debug!(
                    record = name,
                    present = rec.is_some(),
                    "service record written"
                );
                match rec {
                    Some(r) => {
                        l.records.insert(name.to_string(), r);
                    }
                    None => {
                        l.records.remove(name);
                    }
                }
            }
            Err(e) => self.error(format!("writing {key}: {e}")),
        }
    }

    /// Handles whose Service (or sharing group) is gone: released. A
    /// Service is gone only if a direct read says so, not the cache alone.
    async fn sweep_orphans(&mut self, l: &mut Leading) {
        let all = match self.store.list_keys(keys::HANDLES).await {
            Ok(v) => v,
            Err(e) => {
                self.error(format!("listing handles: {e}"));
                return;
            }
        };
        for (k, _) in all {
            let h = k[keys::HANDLES.len()..].to_string();
            let Some(holder) = lbipam::parse_handle(&h) else {
                continue;
            };
            let orphan = match holder {
                Holder::Service {
                    namespace,
                    name,
                    uid,
                } => {
                    let key = (namespace.to_string(), name.to_string());
                    let alive = |s: &Service| {
                        s.metadata.uid.as_deref() == Some(uid)
                            && s.metadata.deletion_timestamp.is_none()
                            && lbreq::is_ours(s)
                            && lbreq::request(s).is_ok_and(|r| r.sharing_key.is_none())
                    };
                    if self.service(&key).is_some_and(|s| alive(&s)) {
                        false
                    } else {
                        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
                        match api.get_opt(name).await {
                            Ok(Some(s)) => !alive(&s),
                            Ok(None) => true,
                            Err(e) => {
                                self.error(format!("reading Service {namespace}/{name}: {e}"));
                                false
                            }
                        }
                    }
                }
                Holder::Shared { namespace, key } => {
                    let g = (namespace.to_string(), key.to_string());
                    !self.caches.services.state().iter().any(|s| {
                        s.metadata.namespace.as_deref() == Some(namespace)
                            && s.metadata.deletion_timestamp.is_none()
                            && lbreq::is_ours(s)
                            && lbreq::request(s)
                                .is_ok_and(|r| r.sharing_key.as_deref() == Some(g.1.as_str()))
                    })
                }
            };
            if orphan && self.fence.acting() {
                info!(handle = %h, "releasing the addresses of a Service that is gone");
                self.release(l, &h).await;
            }
        }
    }

    /// Node labels into node records; nodes gone from Kubernetes
    /// collected after the grace.
    async fn sync_nodes(&mut self, l: &mut Leading) {
        let owned: Vec<OwnedLabels> =
            match model::list(&*self.store, model::CONTROLLER_NODE_LABELS).await {
                Ok(v) => v,
                Err(e) => {
                    self.error(format!("reading owned node labels: {e}"));
                    return;
                }
            };
        let owned: HashMap<String, OwnedLabels> =
            owned.into_iter().map(|o| (o.node.clone(), o)).collect();
        let mut present = BTreeSet::new();
        for n in self.caches.nodes.state() {
            let name = n.metadata.name.clone().unwrap_or_default();
            present.insert(name.clone());
            let node_labels = n.metadata.labels.clone().unwrap_or_default();
            if l.node_labels_seen.get(&name) == Some(&node_labels) && owned.contains_key(&name) {
                continue;
            }
            if !self.fence.acting() {
                return;
            }
            let prev = owned
                .get(&name)
                .map(|o| o.labels.clone())
                .unwrap_or_default();
            let mut new_owned = prev.clone();
            let r = model::modify::<model::Node, _>(&*self.store, &keys::node(&name), |cur| {
                let mut rec = cur.unwrap_or_else(|| model::Node {
                    name: name.clone(),
                    ..Default::default()
                });
                let (merged, o) = labels::merge(&rec.labels, &prev, &node_labels);
                new_owned = o;
                rec.labels = merged;
                Ok(Some(rec))
            })
            .await;
            if let Err(e) = r {
                self.error(format!("node {name}: {e}"));
                continue;
            }
            Metrics::inc(&self.metrics.node_label_writes);
            if owned.get(&name).map(|o| &o.labels) != Some(&new_owned) || !owned.contains_key(&name)
            {
                let rec = OwnedLabels {
                    node: name.clone(),
                    labels: new_owned,
                };
                if let Err(e) = model::modify::<OwnedLabels, _>(
                    &*self.store,
                    &model::controller_node_labels_key(&name),
                    |_| Ok(Some(rec.clone())),
                )
                .await
                {
                    self.error(format!("node {name}: {e}"));
                    continue;
                }
            }
            l.node_labels_seen.insert(name, node_labels);
        }
        // Nodes Kubernetes knew (we copied their labels) and no longer has.
        let absent: BTreeSet<String> = owned
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        let due = l
            .dead_nodes
            .as_mut()
            .map(|g| g.observe(absent, Instant::now()))
            .unwrap_or_default();
        for n in due {
            let api: Api<Node> = Api::all(self.client.clone());
            match api.get_opt(&n).await {
                Ok(Some(_)) => {
                    if let Some(g) = l.dead_nodes.as_mut() {
                        g.forget(&n);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.error(format!("reading Node {n}: {e}"));
                    continue;
                }
            }
            if !self.fence.acting() {
                return;
            }
            match self.ipam.gc_node(&n).await {
                Ok(r) => {
                    info!(node = %n, released = r.released.len(), blocks_deleted = r.blocks_deleted, "node gone from Kubernetes: collected");
                    Metrics::inc(&self.metrics.nodes_collected);
                    l.nodes_collected.push(n.clone());
                    if l.nodes_collected.len() > 10 {
                        l.nodes_collected.remove(0);
                    }
                    let _ = model::modify::<OwnedLabels, _>(
                        &*self.store,
                        &model::controller_node_labels_key(&n),
                        |_| Ok(None),
                    )
                    .await;
                    l.node_labels_seen.remove(&n);
                    if let Some(g) = l.dead_nodes.as_mut() {
                        g.forget(&n);
                    }
                }
                Err(e) => self.error(format!("collecting node {n}: {e}")),
            }
        }
    }

    /// Addresses whose pod does not exist, for the whole leak grace, and
    /// does not exist on a direct read right before the release.
    async fn reclaim_leaks(&mut self, l: &mut Leading) {
        if !self.caches.pods_synced() {
            return;
        }
        let listing = match self.store.list(keys::BLOCKS).await {
            Ok(v) => v,
            Err(e) => {
                self.error(format!("listing blocks: {e}"));
                return;
            }
        };
        let pods: HashSet<(String, String)> = self
            .caches
            .pods
            .state()
            .iter()
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut absent = BTreeSet::new();
        for kv in &listing.kvs {
            let Ok(b) = serde_json::from_slice::<Block>(&kv.value) else {
                continue;
            };
            for (ord, a) in &b.allocations {
                let (Some(ns), Some(pod)) = (&a.attrs.namespace, &a.attrs.pod) else {
                    continue;
                };
                if petrel_ipam::gateway::is_gateway_handle(&a.handle) {
                    continue;
                }
                if !pods.contains(&(ns.clone(), pod.clone())) {
                    absent.insert(LeakKey {
                        addr: b.addr(*ord),
                        seq: a.seq,
                        namespace: ns.clone(),
                        pod: pod.clone(),
                    });
                }
            }
        }
        let due = l
            .leaks
            .as_mut()
            .map(|g| g.observe(absent, Instant::now()))
            .unwrap_or_default();
        for lk in due {
            // Calico #5044 freed addresses of live pods from a stale view:
            // ask the apiserver itself, right before releasing.
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &lk.namespace);
            match api.get_metadata_opt(&lk.pod).await {
                Ok(Some(_)) => {
                    if let Some(g) = l.leaks.as_mut() {
                        g.forget(&lk);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.error(format!("reading pod {}/{}: {e}", lk.namespace, lk.pod));
                    continue;
                }
            }
            if !self.fence.acting() {
                return;
            }
            match self.ipam.release_guarded(&[(lk.addr, Some(lk.seq))]).await {
                Ok(freed) => {
                    if !freed.is_empty() {
                        info!(addr = %lk.addr, pod = %format!("{}/{}", lk.namespace, lk.pod), "leaked address reclaimed");
                        Metrics::inc(&self.metrics.leaks_reclaimed);
                        l.reclaimed += 1;
                        l.recent_reclaimed
                            .push_back(format!("{} ({}/{})", lk.addr, lk.namespace, lk.pod));
                        while l.recent_reclaimed.len() > 10 {
                            l.recent_reclaimed.pop_front();
                        }
                    }
                    if let Some(g) = l.leaks.as_mut() {
                        g.forget(&lk);
                    }
                }
                Err(e) => self.error(format!("releasing {}: {e}", lk.addr)),
            }
        }
    }

    async fn write_status(&mut self, l: &mut Leading) {
        let st = ControllerStatus {
            leader: self.opts.identity.clone(),
            leader_since_ms: l.since_ms,
            last_sync_ms: l.last_sync_ms,
            services: self.caches.services.len() as u64,
            endpoint_slices: self.caches.slices.len() as u64,
            nodes: self.caches.nodes.len() as u64,
            pods: self.caches.pods.len() as u64,
            lb_allocated: l.held.values().filter(|a| !a.is_empty()).count() as u64,
            lb_failed: l.failed_now.len() as u64,
            service_records: l.records.len() as u64,
            leaks_reclaimed: l.reclaimed,
            recent_reclaimed: l.recent_reclaimed.iter().cloned().collect(),
            nodes_collected: l.nodes_collected.clone(),
            errors: self.errors.iter().cloned().collect(),
        };
        if l.last_status.as_ref() == Some(&st) {
            return;
        }
        match model::modify::<ControllerStatus, _>(&*self.store, model::CONTROLLER_STATUS, |_| {
            Ok(Some(st.clone()))
        })
        .await
        {
            Ok(_) => l.last_status = Some(st),
            Err(e) => self.error(format!("writing the status record: {e}")),
        }
    }
}

/// How many of `now`'s addresses `before` did not hold (the allocations
/// counter counts addresses, as its help text says, not Services).
fn newly<T: PartialEq>(now: &[T], before: &[T]) -> u64 {
    now.iter().filter(|a| !before.contains(a)).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn service(families: &[&str]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ip_families: Some(families.iter().map(|f| f.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ingress_lists_the_primary_family_first() {
        let addrs: Vec<IpAddr> = ["2001:db8::2", "192.0.2.9", "10.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            ingress_order(&service(&["IPv6", "IPv4"]), &addrs),
            ["2001:db8::2", "10.0.0.1", "192.0.2.9"]
        );
        assert_eq!(
            ingress_order(&service(&["IPv4", "IPv6"]), &addrs),
            ["10.0.0.1", "192.0.2.9", "2001:db8::2"]
        );
        // No families listed (an older object): addresses in order, v4 first.
        assert_eq!(
            ingress_order(&Service::default(), &addrs),
            ["10.0.0.1", "192.0.2.9", "2001:db8::2"]
        );
    }
}
