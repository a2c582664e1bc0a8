//! Read-only views of the RIB for operators (`show routes`).

use super::loc::{Route, LLGR_STALE, REJECTED, SELECTED, STALE};
use super::Rib;
use crate::wire::nlri::Prefix;

/// One path as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathView {
    pub route: Route,
    /// The best path of its prefix.
    pub best: bool,
    /// In the multipath set.
    pub selected: bool,
    /// Kept from a session that went down (RFC 4724), or past the restart
    /// time (RFC 9494).
    pub stale: bool,
}

impl Rib {
    /// Every accepted path of every prefix (or of one prefix), best first.
    /// Paths refused by import policy are not shown.
    pub fn paths_view(&self, only: Option<Prefix>) -> Vec<(Prefix, Vec<PathView>)> {
        let mut out = Vec::new();
        for (prefix, paths) in self.table.iter() {
            if only.is_some_and(|o| o != prefix) {
                continue;
            }
            let v: Vec<PathView> = paths
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.has(REJECTED))
                .map(|(i, p)| PathView {
                    route: Route::of(prefix, p),
                    best: i == 0 && p.has(SELECTED),
                    selected: p.has(SELECTED),
                    stale: p.has(STALE) || p.has(LLGR_STALE),
                })
                .collect();
            if !v.is_empty() {
                out.push((prefix, v));
            }
        }
        out
    }
}
