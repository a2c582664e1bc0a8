//! Hold-down of endpoint-node removals, sans-IO.
//!
//! A node that gains a local endpoint is advertised at once (a new route is
//! harmless); a node that loses its last one is withdrawn only after it has
//! stayed without one for the hold-down. During a rolling update the
//! EndpointSlice of a node often goes empty for a moment between the old
//! pod leaving (it counts while serving-but-terminating, as MetalLB does)
//! and its replacement turning ready; without the hold-down every such
//! moment would be a withdraw and a re-advertisement at every router, and
//! routers with flap damping (RFC 2439) suppress a prefix after a few of
//! those. The default, [`DEFAULT_HOLD_DOWN`] (3 s), covers the gaps of a
//! surge rollout (the replacement is ready before the old pod terminates;
//! the gap is the EndpointSlice controller's batching, about a second)
//! while keeping a node that really lost its endpoints advertised no more
//! than 3 s; kube-proxy drops Local-policy traffic on a node without a
//! local endpoint, so a longer hold-down is a longer black hole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(3);

/// One Service's advertised endpoint nodes.
#[derive(Debug, Clone, Default)]
pub struct HoldDown {
    /// Nodes observed with a ready or serving endpoint.
    observed: BTreeSet<String>,
    /// Nodes advertised although no longer observed, until the instant.
    leaving: BTreeMap<String, Instant>,
}

impl HoldDown {
    /// A fresh state at startup: what is observed is advertised, nothing
    /// is held (there is no earlier advertisement to protect).
    pub fn new(observed: BTreeSet<String>) -> Self {
        HoldDown {
            observed,
            leaving: BTreeMap::new(),
        }
    }

    /// The nodes with an endpoint now.
    pub fn observe(&mut self, nodes: BTreeSet<String>, now: Instant, hold: Duration) {
        for gone in self.observed.difference(&nodes) {
            self.leaving.entry(gone.clone()).or_insert(now + hold);
        }
        for n in &nodes {
            self.leaving.remove(n);
        }
        self.observed = nodes;
    }

    /// Drops holds that have run out; true if the advertised set changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.leaving.len();
        self.leaving.retain(|_, until| *until > now);
        before != self.leaving.len()
    }

    /// What to advertise: observed nodes and those still held.
    pub fn advertised(&self) -> Vec<String> {
        let mut all: BTreeSet<&String> = self.observed.iter().collect();
        all.extend(self.leaving.keys());
        all.into_iter().cloned().collect()
    }

    /// When the next hold runs out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.leaving.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(l: &[&str]) -> BTreeSet<String> {
        l.iter().map(|s| s.to_string()).collect()
    }
    const HOLD: Duration = DEFAULT_HOLD_DOWN;
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn additions_are_immediate_removals_wait_for_the_hold_down() {
        let t = Instant::now();
        let mut h = HoldDown::new(set(&["n1"]));
        h.observe(set(&["n1", "n2"]), t, HOLD);
        assert_eq!(h.advertised(), vec!["n1", "n2"]);
        h.observe(set(&["n2"]), t + S, HOLD);
        assert_eq!(h.advertised(), vec!["n1", "n2"]);
        assert_eq!(h.next_deadline(), Some(t + S + HOLD));
        assert!(!h.expire(t + 3 * S));
        assert!(h.expire(t + 4 * S));
        assert_eq!(h.advertised(), vec!["n2"]);
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_rolling_update_that_returns_within_the_hold_down_never_withdraws() {
        let t = Instant::now();
        let mut h = HoldDown::new(set(&["n1", "n2"]));
        let mut seen = vec![h.advertised()];
        // n1's old pod goes, its replacement turns ready 2 s later.
        h.observe(set(&["n2"]), t, HOLD);
        h.expire(t + S);
        seen.push(h.advertised());
        h.observe(set(&["n1", "n2"]), t + 2 * S, HOLD);
        h.expire(t + 10 * S);
        seen.push(h.advertised());
        assert!(seen.iter().all(|s| s == &vec!["n1", "n2"]), "{seen:?}");
    }

    #[test]
    fn a_second_removal_does_not_extend_the_first_hold() {
        let t = Instant::now();
        let mut h = HoldDown::new(set(&["n1"]));
        h.observe(set(&[]), t, HOLD);
        h.observe(set(&[]), t + 2 * S, HOLD);
        assert!(h.expire(t + HOLD));
        assert!(h.advertised().is_empty());
    }
}
