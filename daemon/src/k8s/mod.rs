//! petrel-controller: Kubernetes objects into petrel's datastore records.
//!
//! petreld reads only the datastore; this controller is the one place that
//! watches the Kubernetes API (kube-rs reflectors), so the nodes do not
//! each watch every Service and EndpointSlice of the cluster. Several
//! controllers may run; one acts, chosen by a lease in the datastore
//! ([`election`], [`lease`]).
//!
//! Pure parts, each tested without a cluster: [`election`] (the lease),
//! [`lbreq`] (what a Service asks of load-balancer IPAM), [`advert`]
//! (Service → advertisement records), [`holddown`] (endpoint-node removal
//! hold-down), [`labels`] (Node labels → node records), [`grace`]
//! (timers for dead nodes and leaked pod addresses). Drivers: [`lbipam`]
//! (IPAM calls), [`watch`] (reflectors), [`sync`] (the loop), [`metrics`].

pub mod advert;
pub mod election;
pub mod grace;
pub mod holddown;
pub mod labels;
pub mod lbipam;
pub mod lbreq;
pub mod lease;
pub mod metrics;
pub mod sync;
pub mod watch;

/// `spec.loadBalancerClass` petrel answers to (besides none).
pub const LB_CLASS: &str = "petrel.io/lb";
/// Requested addresses, comma-separated (one per family).
pub const ANN_LB_IPS: &str = "petrel.io/loadBalancerIPs";
/// Pools to allocate from (names or CIDRs), comma-separated.
pub const ANN_POOLS: &str = "petrel.io/pools";
/// Services of one namespace with the same key and no clashing port share
/// one address.
pub const ANN_SHARING_KEY: &str = "petrel.io/sharing-key";
/// The finalizer on Services that hold an address: a Service deleted while
/// no controller runs keeps existing until its address is released.
pub const FINALIZER: &str = "petrel.io/lb";
/// The node load-balancer blocks are affine to. The underscore is not
/// allowed in a Kubernetes node name (an RFC 1123 subdomain), so no real
/// node can ever be confused with it, and node GC never touches it.
pub const LB_NODE: &str = "_load-balancer";
