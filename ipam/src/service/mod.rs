//! The node-local IPAM service: petreld answers the `petrel-ipam` plugin's
//! invocations over a unix socket with its warm allocator, so an exec'd
//! ADD costs a process start and one local round trip instead of a new
//! datastore connection and several serialised round trips.
//!
//! The plugin forwards the whole invocation (the `CNI_*` environment and
//! the network config) and prints back exactly what it would have printed
//! itself: the decision code is [`crate::cni::execute`] on both paths.
//! Concurrent ADDs queue in a bounded channel and are group-committed (see
//! [`crate::ipam::batch`]), so N parallel execs overlap their process
//! starts and share one datastore transaction.
//!
//! [`proto`] is the wire format, [`server`] the daemon side ([`Service`]),
//! [`client`] the plugin side (blocking, no async runtime: it runs once per
//! exec and its start-up is on every ADD's critical path). The wire format
//! and the client live in the std-only `petrel-cni` crate, which the
//! exec'd binary is built from, and are re-exported here.

pub use petrel_cni::{client, proto};
pub mod server;

pub use server::{Service, ServiceConfig, ServiceError};
