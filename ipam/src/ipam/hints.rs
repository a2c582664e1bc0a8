//! What one process remembers between assignments to save reads: the
//! settings, a node's confirmed blocks, where it last borrowed, when it
//! last found nothing to claim, and (for [`super::batch`]) blocks as last
//! read. Only hints: every decision is still checked against the store, so
//! a stale copy costs a retry, never a wrong answer.

use crate::model::{Block, Family, IpamConfig, Pool};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// The process's hints, shared by the clones of one [`super::Ipam`].
#[derive(Default)]
pub(super) struct Hints {
    inner: std::sync::Mutex<HintState>,
}

#[derive(Default)]
pub(super) struct HintState {
    /// Last block a node borrowed from successfully.
    borrow_from: BTreeMap<(String, Family), IpNet>,
    /// Until when a node skips claiming (nothing was claimable).
    claims_paused: BTreeMap<(String, Family), std::time::Instant>,
    settings: Option<(std::time::Instant, IpamConfig, Vec<Pool>)>,
    /// A node's confirmed blocks, as last read.
    affine: BTreeMap<String, (std::time::Instant, Vec<IpNet>)>,
    /// Blocks as this process last read or wrote them, for group commits
    /// ([`super::batch`]): each write is conditioned on the cached revision, so a
    /// stale copy costs one conflict and a re-read, never a wrong answer.
    pub(super) blocks: BTreeMap<IpNet, (Block, i64)>,
}

/// How long a process trusts its copy of the settings and of a node's
/// affinities. Every assignment still checks the block itself, so a stale
/// copy costs a retry, never a wrong answer.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a node borrows without trying to claim after a claim found
/// nothing.
const CLAIM_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Drops this process's copy of the settings when it goes out of scope:
/// after a write of the settings, the next read sees the write.
pub(super) struct ForgetSettings<'a>(pub(super) &'a Hints);

impl Drop for ForgetSettings<'_> {
    fn drop(&mut self) {
        self.0.forget_settings();
    }
}

impl Hints {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HintState> {
        // Hints are advisory; a poisoned lock still holds usable ones.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(super) fn borrow_from(&self, node: &str, f: Family) -> Option<IpNet> {
        self.lock().borrow_from.get(&(node.to_string(), f)).copied()
    }
    pub(super) fn set_borrow_from(&self, node: &str, f: Family, cidr: IpNet) {
        self.lock().borrow_from.insert((node.to_string(), f), cidr);
    }
    pub(super) fn claim_paused(&self, node: &str, f: Family) -> bool {
        self.lock()
            .claims_paused
            .get(&(node.to_string(), f))
            .is_some_and(|t| std::time::Instant::now() < *t)
    }
    pub(super) fn settings(&self) -> Option<(IpamConfig, Vec<Pool>)> {
        let g = self.lock();
        let (t, c, p) = g.settings.as_ref()?;
        (t.elapsed() < CACHE_TTL).then(|| (c.clone(), p.clone()))
    }
    pub(super) fn set_settings(&self, c: &IpamConfig, p: &[Pool]) {
        self.lock().settings = Some((std::time::Instant::now(), c.clone(), p.to_vec()));
    }
    fn forget_settings(&self) {
        self.lock().settings = None;
    }
    pub(super) fn affine(&self, node: &str) -> Option<Vec<IpNet>> {
        let g = self.lock();
        let (t, v) = g.affine.get(node)?;
        (t.elapsed() < CACHE_TTL).then(|| v.clone())
    }
    pub(super) fn set_affine(&self, node: &str, v: &[IpNet]) {
        self.lock()
            .affine
            .insert(node.to_string(), (std::time::Instant::now(), v.to_vec()));
    }
    pub(super) fn forget_affine(&self, node: &str) {
        self.lock().affine.remove(node);
    }
    pub(super) fn pause_claims(&self, node: &str, f: Family) {
        self.lock().claims_paused.insert(
            (node.to_string(), f),
            std::time::Instant::now() + CLAIM_PAUSE,
        );
    }
}
