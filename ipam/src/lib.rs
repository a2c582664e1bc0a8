//! petrel's IP address management: pools of pod addresses cut into per-node
//! blocks, stored in etcd or an embedded store.
//!
//! Layers, from the inside out: [`model`] (the records), [`block`],
//! [`claim`], [`check`] and [`gateway`] (pure decisions, no I/O), [`store`] (a
//! compare-and-swap key-value interface and its backends), [`ipam`] (the
//! driver that applies decisions to the store, retrying lost races),
//! [`cni`] (the CNI plugin's logic) and [`service`] (the daemon's unix
//! socket endpoint that the plugin forwards invocations to).

pub mod block;
pub mod borrowed;
pub mod check;
pub mod claim;
pub mod cni;
pub mod gateway;
pub mod ipam;
pub mod keys;
pub mod model;
pub mod selector;
pub mod service;
pub mod store;
#[doc(hidden)]
pub mod testing;

pub use ipam::{AssignRequest, Assigned, Ipam, IpamError, MigrationOutcome};
