//! petrel-ipam: the CNI IPAM plugin as runtimes exec it. It reads the
//! network config on stdin and the CNI_* environment, and hands the
//! invocation to petreld's IPAM service (`ipam.daemon_socket`, default
//! /run/petrel/ipam.sock); when no service accepts, it execs
//! `petrel-ipam-direct` from its own directory, which opens the datastore
//! itself.
//!
//! This binary uses the std-only `petrel-cni` crate and nothing else of
//! this package, so it links neither tokio nor the etcd client: its start
//! is on every ADD's critical path.

fn main() -> std::process::ExitCode {
    petrel_cni::forwarder::main()
}
