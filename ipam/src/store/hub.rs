//! Watch fan-out for the in-process backends (memory and embedded): a
//! bounded history of recent events for watches that start in the past,
//! and a broadcast channel for live events.

use super::{StoreError, WatchEvent, WatchReceiver, WATCH_CHANNEL_CAPACITY};
use std::collections::VecDeque;
use tokio::sync::{broadcast, mpsc};

/// How many past events are kept for watches that start in the past; an
/// older start revision gets [`StoreError::Compacted`], as etcd does after
/// compaction.
pub(crate) const HISTORY: usize = 10_000;

pub(crate) struct Hub {
    /// Writes up to this revision happened before this process started
    /// watching (an embedded store opened from disk); they are not in the
    /// history.
    floor: i64,
    history: VecDeque<WatchEvent>,
    live: broadcast::Sender<WatchEvent>,
}

impl Hub {
    pub(crate) fn new(floor: i64) -> Self {
        // Live capacity bounds memory; a watcher that lags behind it is told
        // so (Compacted) rather than silently missing events.
        let (live, _) = broadcast::channel(4096);
        Hub {
            floor,
            history: VecDeque::new(),
            live,
        }
    }

    pub(crate) fn publish(&mut self, ev: WatchEvent) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(ev.clone());
        // No receivers is not an error: nobody is watching.
        let _ = self.live.send(ev);
    }

    /// Must be called with the backend's write lock held, so that no event
    /// falls between the backlog and the live subscription.
    pub(crate) fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
        current_revision: i64,
    ) -> Result<WatchReceiver, StoreError> {
        // Revision 0 means "from now on", as in etcd.
        let from_revision = if from_revision <= 0 {
            current_revision + 1
        } else {
            from_revision
        };
        let oldest = match self.history.front() {
            Some(e) if self.history.len() == HISTORY => e.revision(),
            _ => self.floor + 1,
        };
        if from_revision < oldest {
            return Err(StoreError::Compacted {
                requested: from_revision,
                oldest,
            });
        }
        let backlog: Vec<WatchEvent> = self
            .history
            .iter()
            .filter(|e| e.revision() >= from_revision && e.key().starts_with(prefix))
            .cloned()
            .collect();
        let mut live = self.live.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = from_revision - 1;
            for ev in backlog {
                last = ev.revision();
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev) => {
                        if ev.revision() <= last || !ev.key().starts_with(&prefix) {
                            continue;
                        }
                        last = ev.revision();
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(StoreError::Compacted {
                                requested: last + 1,
                                oldest: last + 2,
                            }))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}
