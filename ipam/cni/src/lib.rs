//! The std-only half of petrel's CNI IPAM plugin.
//!
//! A runtime execs `petrel-ipam` once per ADD, so what that binary links is
//! paid on every pod start: each crate adds relocations for the dynamic
//! loader and pages to fault in. This crate holds everything the exec'd
//! binary needs and nothing else — the CNI types ([`conf`], [`env`],
//! [`error`], [`output`]), the IPAM service's wire format ([`proto`]) and
//! its blocking client ([`client`]), and the forwarder itself
//! ([`forwarder`]) — with std, serde and libc only.
//!
//! The datastore half (the allocator, etcd, the embedded store, the tokio
//! runtime) is the `petrel-ipam` crate. Its binary `petrel-ipam-direct`,
//! installed beside `petrel-ipam`, is what the forwarder execs when no
//! service accepts its connection; the daemon's service runs the same
//! decision code with a warm datastore client.

pub mod client;
pub mod conf;
pub mod env;
pub mod error;
pub mod forwarder;
pub mod output;
pub mod proto;

pub use conf::{parse, NetConf, SUPPORTED_VERSIONS};
pub use env::Env;
pub use error::{code, CniError};
