//! The election's driver: reads the lease record, runs [`Election`], writes
//! what it says, and publishes whether this controller may act.
//!
//! [`Fence`] holds the instant leadership ends unless renewed; every write
//! the controller makes asks it first, so a leader cut off from the
//! datastore stops acting at its deadline even if this task is stuck in a
//! slow read.

use super::election::{Action, Election, Lease};
use crate::cluster::model::CONTROLLER_LEADER;
use petrel_ipam::store::Store;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// Whether this controller may act now.
#[derive(Debug, Default)]
pub struct Fence {
    until: Mutex<Option<Instant>>,
}

impl Fence {
    pub fn acting(&self) -> bool {
        self.until
            .lock()
            .map(|u| u.is_some_and(|u| Instant::now() < u))
            .unwrap_or(false)
    }
    fn set(&self, until: Option<Instant>) {
        if let Ok(mut u) = self.until.lock() {
            *u = until;
        }
    }
}

/// Runs until `shutdown` turns true, then gives the lease up (deletes the
/// record at our revision) so that another controller takes over at once
/// instead of after the lease, as client-go's ReleaseOnCancel.
pub async fn run(
    store: Arc<dyn Store>,
    mut election: Election,
    fence: Arc<Fence>,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let retry = Duration::from_millis(500);
    loop {
        let now = Instant::now();
        let next = match store.get(CONTROLLER_LEADER).await {
            Err(e) => {
                warn!(error = %e, "cannot read the leader lease");
                now + retry
            }
            Ok(kv) => {
                let parsed = match &kv {
                    None => Ok(None),
                    Some(kv) => serde_json::from_slice::<Lease>(&kv.value)
                        .map(|l| Some((l, kv.mod_revision))),
                };
                match parsed {
                    Err(e) => {
                        // A record that does not parse cannot be timed
                        // safely: treat its revision as a holder's.
                        warn!(error = %e, key = CONTROLLER_LEADER, "lease record does not parse; waiting for it to expire");
                        let rev = kv.map(|k| k.mod_revision).unwrap_or(0);
                        let junk = Lease {
                            holder: "?".into(),
                            lease_ms: 10_000,
                            renewed: 0,
                        };
                        act(&*store, &mut election, Some((&junk, rev)), now).await
                    }
                    Ok(rec) => {
                        act(
                            &*store,
                            &mut election,
                            rec.as_ref().map(|(l, r)| (l, *r)),
                            now,
                        )
                        .await
                    }
                }
            }
        };
        fence.set(election.leader_until());
        let is = election.is_leader(Instant::now());
        leading.send_if_modified(|v| {
            if *v != is {
                *v = is;
                true
            } else {
                false
            }
        });
        let mut wake = next;
        if let Some(u) = election.leader_until() {
            wake = wake.min(u);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            fence.set(None);
            let _ = leading.send(false);
            if let Some(rev) = election.resign() {
                match store.delete(CONTROLLER_LEADER, rev).await {
                    Ok(()) => info!("lease given up"),
                    Err(e) => {
                        warn!(error = %e, "could not give the lease up; it expires by itself")
                    }
                }
            }
            return;
        }
    }
}

async fn act(
    store: &dyn Store,
    election: &mut Election,
    rec: Option<(&Lease, i64)>,
    now: Instant,
) -> Instant {
    let was = election.is_leader(now);
    let (lease, result) = match election.observe(rec, now) {
        Action::Wait { until } => return until,
        Action::Create(l) => {
            let r = store
                .create(
                    CONTROLLER_LEADER,
                    serde_json::to_vec(&l).unwrap_or_default(),
                )
                .await;
            (l, r)
        }
        Action::Write { lease, revision } => {
            let r = store
                .update(
                    CONTROLLER_LEADER,
                    serde_json::to_vec(&lease).unwrap_or_default(),
                    revision,
                )
                .await;
            (lease, r)
        }
    };
    match result {
        Ok(rev) => {
            election.written(lease, rev);
            if !was {
                info!(me = election.me(), revision = rev, "leader");
            }
            // Renew on schedule.
            Instant::now()
        }
        Err(e) => {
            let conflict = e.is_conflict();
            if !conflict {
                warn!(error = %e, "lease write failed");
            }
            election.lost(conflict);
            if was && !election.is_leader(Instant::now()) {
                warn!("no longer leader");
            }
            Instant::now() + Duration::from_millis(500)
        }
    }
}
