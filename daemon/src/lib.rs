//! petreld, the node daemon, and petrelctl, its operator tool.

pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod fib;
