//! petreld, the node daemon, and petrelctl, its operator tool.

pub mod ctl;
