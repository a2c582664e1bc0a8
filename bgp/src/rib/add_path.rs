//! ADD-PATH send (RFC 7911): several paths of one prefix to one peer.
//!
//! When we said we send several paths in a family and the peer said it
//! receives them (§4, §5), its update group sends, per the peer's
//! [`SendMode`], the best path, the multipath set or every usable path,
//! each with a Path Identifier of its own (§3). Export policy and the
//! reflection rules apply to each path as to a best path; in `best` and
//! `ecmp`, a best path they keep from the peer keeps the others too (§5,
//! see `adj_out::UpdateGroup::sync_paths`).
//!
//! A best-path group keeps nothing per prefix: what it sent is the export of
//! the Loc-RIB best (see `adj_out`). A group that sends paths cannot work
//! that way, since it must remember which identifier it gave which path:
//! [`Sent`] holds, per prefix, each advertised path's identifier, the path
//! it stands for (peer and received path id) and what was exported. So the
//! memory cost of ADD-PATH is paid by groups that send paths only, about
//! 49 bytes per advertised path (`rib::memory`); the table (38 bytes a
//! route) and best-path groups are unchanged.
//!
//! Identifiers are allocated per prefix, in [`reconcile`]: a path keeps its
//! identifier for as long as the group advertises it, whatever happens to
//! the best path; it is withdrawn by it. A path that comes in takes the
//! identifier of one that went out in the same pass (§5: an advertisement
//! with a prefix and identifier in use replaces that path, one message
//! instead of a withdrawal and an announcement), else the smallest free one.

use super::adj_out::Advertised;
use super::attrs::AttrTable;
use super::prefix_map::PrefixMap;
use crate::wire::capability::{AddPathMode, Capability};
use crate::wire::family::Family;
use crate::wire::nlri::Prefix;
use serde::Deserialize;
use std::sync::Arc;

/// Which paths of a prefix go to a peer that receives several (OpenBGPD's
/// names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendMode {
    /// The best path only (what a peer without ADD-PATH gets), with an
    /// identifier: a new best replaces the old one under its identifier.
    #[default]
    Best,
    /// The multipath set of the best path (`DecisionConfig::max_paths`).
    Ecmp,
    /// Every path that could be selected: accepted by import policy, next
    /// hop resolvable.
    All,
}

impl SendMode {
    pub fn name(self) -> &'static str {
        match self {
            SendMode::Best => "best",
            SendMode::Ecmp => "ecmp",
            SendMode::All => "all",
        }
    }
}

impl std::str::FromStr for SendMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "best" => Ok(SendMode::Best),
            "ecmp" => Ok(SendMode::Ecmp),
            "all" => Ok(SendMode::All),
            _ => Err(format!(
                "{s:?}: allowed values are \"best\", \"ecmp\" and \"all\""
            )),
        }
    }
}

/// One peer's ADD-PATH settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddPathConfig {
    /// Families in which the peer may send us several paths.
    pub receive: Vec<Family>,
    /// Families in which we send the peer several paths, and which.
    pub send: Vec<(Family, SendMode)>,
}

impl AddPathConfig {
    pub fn is_empty(&self) -> bool {
        self.receive.is_empty() && self.send.is_empty()
    }

    pub fn send_mode(&self, family: Family) -> Option<SendMode> {
        self.send
            .iter()
            .find_map(|(f, m)| (*f == family).then_some(*m))
    }

    /// The capability to advertise for the session's `families`, if any.
    /// RFC 7911 §4: one instance, one tuple per family.
    pub fn capability(&self, families: &[Family]) -> Option<Capability> {
        let tuples: Vec<(Family, AddPathMode)> = families
            .iter()
            .filter_map(|&f| {
                let mode = match (self.receive.contains(&f), self.send_mode(f).is_some()) {
                    (true, true) => AddPathMode::Both,
                    (true, false) => AddPathMode::Receive,
                    (false, true) => AddPathMode::Send,
                    (false, false) => return None,
                };
                Some((f, mode))
            })
            .collect();
        (!tuples.is_empty()).then_some(Capability::AddPath(tuples))
    }
}

/// One path as a group advertised it.
#[derive(Clone, Debug)]
pub(crate) struct SentPath {
    /// RFC 7911 §3 Path Identifier, on every session of the group.
    pub id: u32,
    /// The path's received path id; with the peer it came from (the one
    /// its export leaves out, see [`SentPath::same_path`]) it names the path
    /// in the table.
    pub path_id: u32,
    pub adv: Advertised,
}

const _: () = assert!(std::mem::size_of::<SentPath>() == 24);

impl SentPath {
    /// Whether this is the table path `w` stands for. The peer a path came
    /// from is the one its export excludes (split horizon); locally
    /// originated paths exclude none and are one per prefix.
    fn same_path(&self, w: &Wanted) -> bool {
        self.path_id == w.path_id && self.adv.exclude == w.adv.exclude
    }
}

/// The paths sent for one prefix. Almost always one, kept inline (no
/// larger than a [`SentPath`]); several in a boxed vector.
#[derive(Debug)]
pub(crate) enum SentPaths {
    One(SentPath),
    Many(Many),
}

/// A boxed vector, so that [`SentPaths`] is no larger than one path (as
/// `loc::Paths`).
type Many = Box<Vec<SentPath>>;

const _: () = assert!(std::mem::size_of::<SentPaths>() == std::mem::size_of::<SentPath>());

impl Default for SentPaths {
    fn default() -> Self {
        SentPaths::Many(Box::default())
    }
}

impl std::ops::Deref for SentPaths {
    type Target = [SentPath];
    fn deref(&self) -> &[SentPath] {
        match self {
            SentPaths::One(p) => std::slice::from_ref(p),
            SentPaths::Many(v) => v,
        }
    }
}

impl SentPaths {
    pub fn from_vec(mut v: Vec<SentPath>) -> Self {
        if v.len() == 1 {
            if let Some(p) = v.pop() {
                return SentPaths::One(p);
            }
        }
        SentPaths::Many(Box::new(v))
    }

    pub fn into_vec(self) -> Vec<SentPath> {
        match self {
            SentPaths::One(p) => vec![p],
            SentPaths::Many(v) => *v,
        }
    }
}

/// What a group that sends paths advertised, per prefix.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub prefixes: PrefixMap<SentPaths>,
    /// The exported attribute sets, interned for as long as some path
    /// holds them (a best-path group interns per pass), so that an
    /// unchanged export is recognised by pointer.
    pub attrs: AttrTable,
}

impl Sent {
    /// Every advertised path, in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &SentPath)> {
        self.prefixes
            .iter()
            .flat_map(|(p, v)| v.iter().map(move |s| (p, s)))
    }

    pub fn paths(&self) -> usize {
        self.prefixes.iter().map(|(_, v)| v.len()).sum()
    }
}

/// A path the group should advertise now: its received path id, and its
/// export (which names the peer it came from).
pub(crate) struct Wanted {
    pub path_id: u32,
    pub adv: Advertised,
}

/// Turns what was sent for one prefix (`sent`) into `wanted`, calling
/// `record(id, old, new)` for every identifier whose advertisement may
/// change; returns what is sent now.
pub(crate) fn reconcile(
    sent: Vec<SentPath>,
    wanted: Vec<Wanted>,
    mut record: impl FnMut(u32, Option<&Advertised>, Option<&Advertised>),
) -> Vec<SentPath> {
    let mut gone = sent;
    let mut now = Vec::with_capacity(wanted.len());
    let mut fresh = Vec::new();
    for w in wanted {
        match gone.iter().position(|s| s.same_path(&w)) {
            // The same path: it keeps its identifier.
            Some(i) => {
                let old = gone.swap_remove(i);
                record(old.id, Some(&old.adv), Some(&w.adv));
                now.push(SentPath { adv: w.adv, ..old });
            }
            None => fresh.push(w),
        }
    }
    // RFC 7911 §5: a new advertisement of a prefix and identifier replaces
    // the previous one, so a new path takes a leaving path's identifier.
    gone.sort_unstable_by_key(|s| s.id);
    let mut gone = gone.into_iter();
    // The identifiers in use, sorted: built only if a new one is needed.
    let mut used: Option<Vec<u32>> = None;
    let (mut next, mut at) = (1u32, 0);
    for w in fresh {
        let id = match gone.next() {
            Some(old) => {
                record(old.id, Some(&old.adv), Some(&w.adv));
                old.id
            }
            None => {
                // The smallest identifier above zero not in use (some
                // implementations read 0 as "no identifier").
                let used = used.get_or_insert_with(|| {
                    let mut v: Vec<u32> = now.iter().map(|s| s.id).collect();
                    v.sort_unstable();
                    v
                });
                loop {
                    while used.get(at).is_some_and(|&u| u < next) {
                        at += 1;
                    }
                    if used.get(at) != Some(&next) {
                        break;
                    }
                    next += 1;
                }
                let id = next;
                next += 1;
                record(id, None, Some(&w.adv));
                id
            }
        };
        now.push(SentPath {
            id,
            path_id: w.path_id,
            adv: w.adv,
        });
    }
    for old in gone {
        record(old.id, Some(&old.adv), None);
    }
    now
}

/// Whether two exports are the same advertisement (same attributes, same
/// peer left out).
pub(crate) fn same(a: &Advertised, b: &Advertised) -> bool {
    Arc::ptr_eq(&a.attrs, &b.attrs) && a.exclude == b.exclude
}

#[cfg(test)]
mod tests;
