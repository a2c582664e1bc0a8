//! `petrelctl controller status`: what petrel-controller's leader last
//! reported (its status record) and who holds the lease.

use super::ipam::{block_on, DatastoreArgs};
use crate::cluster::model::{self, ControllerStatus};
use crate::k8s::election::Lease;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ControllerCmd {
    /// Leader, last sync, counts and recent errors.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{:.0} s ago", now.saturating_sub(ms) as f64 / 1000.0)
}

pub fn run(cmd: ControllerCmd, ds: DatastoreArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let store = ds.open_store().await?;
        let ControllerCmd::Status { json } = cmd;
        let lease = model::get::<Lease>(&*store, model::CONTROLLER_LEADER).await?;
        let status = model::get::<ControllerStatus>(&*store, model::CONTROLLER_STATUS).await?;
        if json {
            let v = serde_json::json!({
                "lease": lease.as_ref().map(|(l, _)| l),
                "status": status.as_ref().map(|(s, _)| s),
            });
            println!("{v}");
            return Ok(ExitCode::SUCCESS);
        }
        match &lease {
            Some((l, rev)) => println!(
                "lease:           held by {} (renewals {}, revision {rev}, lease {} ms)",
                l.holder, l.renewed, l.lease_ms
            ),
            None => println!("lease:           none (no controller runs)"),
        }
        let Some((s, _)) = status else {
            println!("status:          none written yet");
            return Ok(ExitCode::SUCCESS);
        };
        println!(
            "leader:          {} (since {})",
            s.leader,
            when(s.leader_since_ms)
        );
        println!("last sync:       {}", when(s.last_sync_ms));
        println!(
            "cached:          {} services, {} endpoint slices, {} nodes, {} pods",
            s.services, s.endpoint_slices, s.nodes, s.pods
        );
        println!(
            "load balancers:  {} with an address, {} failing",
            s.lb_allocated, s.lb_failed
        );
        println!("service records: {}", s.service_records);
        println!("leaks reclaimed: {}", s.leaks_reclaimed);
        for r in &s.recent_reclaimed {
            println!("  {r}");
        }
        if !s.nodes_collected.is_empty() {
            println!("nodes collected: {}", s.nodes_collected.join(", "));
        }
        if s.errors.is_empty() {
            println!("errors:          none");
        } else {
            println!("errors:");
            for e in &s.errors {
                println!("  {e}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })?
}
