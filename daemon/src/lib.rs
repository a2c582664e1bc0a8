//! petreld, the node daemon, and petrelctl, its operator tool.

pub mod cluster;
pub mod config;
pub mod control;
pub mod ctl;
pub mod fib;
pub mod health;
pub mod intent;
pub mod k8s;
pub mod metrics;
pub mod server;
pub mod systemd;
