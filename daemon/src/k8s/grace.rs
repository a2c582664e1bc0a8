//! Grace timers, sans-IO: something must stay absent for a while, by this
//! controller's own clock, before it is acted on. Used for deleted Nodes
//! (their blocks are collected after `--node-grace`) and for addresses of
//! pods that do not exist (released after `--leak-grace`, Calico's 15
//! minutes). The clock starts when this process first sees the absence, so
//! a restarted or newly elected controller waits a full grace again: it
//! errs towards keeping.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Grace<K: Ord + Clone> {
    grace: Duration,
    since: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Grace<K> {
    pub fn new(grace: Duration) -> Self {
        Grace {
            grace,
            since: BTreeMap::new(),
        }
    }

    /// The candidates seen absent now (all of them: a candidate not in
    /// the list is present again and forgotten). Returns those absent for
    /// the whole grace.
    pub fn observe(&mut self, absent: BTreeSet<K>, now: Instant) -> Vec<K> {
        self.since.retain(|k, _| absent.contains(k));
        for k in absent {
            self.since.entry(k).or_insert(now);
        }
        self.since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= self.grace)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Done with `k` (acted on, or found present by a direct read).
    pub fn forget(&mut self, k: &K) {
        self.since.remove(k);
    }

    pub fn pending(&self) -> usize {
        self.since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acts_only_after_a_whole_grace_of_absence() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut g = Grace::new(10 * s);
        assert!(g.observe(["a", "b"].into(), t).is_empty());
        // b comes back: its clock stops.
        assert!(g.observe(["a"].into(), t + 5 * s).is_empty());
        assert!(g.observe(["a", "b"].into(), t + 6 * s).is_empty());
        assert_eq!(g.observe(["a", "b"].into(), t + 10 * s), vec!["a"]);
        g.forget(&"a");
        assert_eq!(g.observe(["b"].into(), t + 16 * s), vec!["b"]);
        assert_eq!(g.pending(), 1);
    }
}
