//! Kernel nexthop objects (RTM_NEWNEXTHOP, Linux 5.3) for the next-hop
//! sets of [`super::table::Sets`]: sans-IO bookkeeping.
//!
//! Design. Each distinct hop of ours is one single-hop object; a set of
//! one hop is that object, an ECMP set is a group object whose members are
//! the hop objects (weight 1 each, as RTA_MULTIPATH had it). Routes then
//! carry only RTA_NH_ID: the kernel shares one next hop among them instead
//! of building one per route. [`Objects::ensure`] says which objects a set
//! needs before its first route is sent; [`Objects::collect`] which ones
//! to delete once no set uses them. Kernel ids are allocated from a range
//! petrel owns ([`ID_BASE`]..), skipping ids found in the kernel from a
//! previous run (those are swept with its stale routes).
//!
//! Kernel behaviour relied on (verified in `tests/fib_kernel.rs`):
//! - An object needs an interface (NHA_OIF): a hop without one gets the
//!   link of the connected network holding its gateway, as the kernel
//!   resolves it for a classic route, once, at install; a set with a hop
//!   no connected network holds stays a classic route (the kernel's error
//!   is then its own), as do blackholes.
//! - Deleting an object deletes the routes using it; deleting a group's
//!   member shrinks the group.
//! - A link going down deletes its objects (and their routes) without a
//!   notification, and they do not come back with the link.
//! - RTM_NEWNEXTHOP with NLM_F_REPLACE changes an object in place, and the
//!   routes using it follow.

use super::msg::Hop;
use std::collections::{HashMap, HashSet};

/// The first kernel nexthop id petrel uses.
pub const ID_BASE: u32 = 0x7e00_0000;
/// How many ids from [`ID_BASE`] on are petrel's.
pub const ID_RANGE: u32 = 1 << 24;

/// One nexthop operation for the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NhOp {
    /// Create or replace single-hop object `id`.
    Hop {
        id: u32,
        hop: Hop,
    },
    /// Create or replace group object `id` (members with weight 1).
    Group {
        id: u32,
        members: Vec<u32>,
    },
    Delete(u32),
}

/// The object standing for one next-hop set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SetObject {
    /// The set it was made for (a set id is reused once free).
    key: Box<[Hop]>,
    /// Its hops with their interfaces (the egress links petrel resolved).
    hops: Box<[Hop]>,
    /// The id routes carry: the hop's object, or the group's.
    id: u32,
    /// The group object's members (empty for a single hop).
    members: Vec<u32>,
}

/// Which kernel objects stand for which sets. See the module docs.
#[derive(Debug, Default)]
pub struct Objects {
    /// By set id.
    sets: Vec<Option<SetObject>>,
    /// Hop → (object id, sets using it).
    hops: HashMap<Hop, (u32, u32)>,
    /// Ids ours or a previous run's: not allocated again.
    used: HashSet<u32>,
    /// Objects of a previous run, to delete with its stale routes.
    stale: Vec<u32>,
    free: Vec<u32>,
    next: u32,
}

/// Whether a set can be a nexthop object: one or more hops, each with its
/// interface (the kernel resolves none itself for an object).
pub fn usable(hops: &[Hop]) -> bool {
    !hops.is_empty() && hops.iter().all(|h| h.ifindex != 0)
}

impl Objects {
    fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            self.used.insert(id);
            return Some(id);
        }
        while self.next < ID_RANGE {
            let id = ID_BASE + self.next;
            self.next += 1;
            if self.used.insert(id) {
                return Some(id);
            }
        }
        None
    }

    fn release_id(&mut self, id: u32) {
        self.used.remove(&id);
        self.free.push(id);
    }

    /// Objects of our protocol found in the kernel at start: never reused,
    /// deleted by [`Objects::take_stale`]'s caller.
    pub fn mark_stale(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            if self.used.insert(id) {
                self.stale.push(id);
            }
        }
    }

    /// The previous run's objects, once its stale routes are gone. Their
    /// ids are free again afterwards.
    pub fn take_stale(&mut self) -> Vec<u32> {
        let stale = std::mem::take(&mut self.stale);
        for id in &stale {
            self.used.remove(id);
        }
        stale
    }

    /// The object id of set `set` (`key`: its hops as interned; `hops`:
    /// the same with their interfaces, all [`usable`]), appending to `ops`
    /// what the kernel must create first. `None` when petrel's id range is
    /// exhausted: the set stays classic.
    pub fn ensure(
        &mut self,
        set: u32,
        key: &[Hop],
        hops: &[Hop],
        ops: &mut Vec<NhOp>,
    ) -> Option<u32> {
        let i = set as usize;
        if let Some(Some(o)) = self.sets.get(i) {
            if *o.key == *key && *o.hops == *hops {
                return Some(o.id);
            }
        }
        // The set id was freed and reused since: its old object goes.
        self.retire(set, ops);
        let mut members = Vec::with_capacity(hops.len());
        for h in hops {
            let id = match self.hops.get_mut(h) {
                Some((id, refs)) => {
                    *refs += 1;
                    *id
                }
                None => {
                    let Some(id) = self.alloc() else {
                        for h in &hops[..members.len()] {
                            self.unref_hop(h, ops);
                        }
                        return None;
                    };
                    self.hops.insert(*h, (id, 1));
                    ops.push(NhOp::Hop { id, hop: *h });
                    id
                }
            };
            members.push(id);
        }
        let id = if let [one] = members[..] {
            members.clear();
            one
        } else {
            let Some(id) = self.alloc() else {
                for h in hops {
                    self.unref_hop(h, ops);
                }
                return None;
            };
            ops.push(NhOp::Group {
                id,
                members: members.clone(),
            });
            id
        };
        if self.sets.len() <= i {
            self.sets.resize(i + 1, None);
        }
        self.sets[i] = Some(SetObject {
            key: key.into(),
            hops: hops.into(),
            id,
            members,
        });
        Some(id)
    }

    fn unref_hop(&mut self, h: &Hop, ops: &mut Vec<NhOp>) {
        let Some((id, refs)) = self.hops.get_mut(h) else {
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            let id = *id;
            self.hops.remove(h);
            self.release_id(id);
            ops.push(NhOp::Delete(id));
        }
    }

    /// Drops set `set`'s object: the group, and the hop objects no other
    /// set uses.
    pub fn retire(&mut self, set: u32, ops: &mut Vec<NhOp>) {
        let Some(o) = self.sets.get_mut(set as usize).and_then(Option::take) else {
            return;
        };
        if !o.members.is_empty() {
            self.release_id(o.id);
            ops.push(NhOp::Delete(o.id));
        }
        for h in o.hops.iter() {
            self.unref_hop(h, ops);
        }
    }

    /// Deletes the objects of sets no longer in use: `current(set)` is
    /// the hops set `set` holds now (none when free).
    pub fn collect<'a>(&mut self, current: impl Fn(u32) -> Option<&'a [Hop]>, ops: &mut Vec<NhOp>) {
        for set in 0..self.sets.len() as u32 {
            let live = match &self.sets[set as usize] {
                None => continue,
                Some(o) => current(set).is_some_and(|h| *h == *o.key),
            };
            if !live {
                self.retire(set, ops);
            }
        }
    }

    /// The object id routes of set `set` carry, if it has one.
    pub fn id_of(&self, set: u32) -> Option<u32> {
        self.sets.get(set as usize)?.as_ref().map(|o| o.id)
    }

    /// The object whose deletion takes set `set`'s routes and no other
    /// route: the set's group, or its single hop's object when no other
    /// set (no group) uses that hop. Deleting a group's member would
    /// shrink the group under the other sets' routes, so a shared hop has
    /// none.
    pub fn exclusive(&self, set: u32) -> Option<u32> {
        let o = self.sets.get(set as usize)?.as_ref()?;
        if !o.members.is_empty() {
            return Some(o.id);
        }
        let [hop] = &o.hops[..] else { return None };
        match self.hops.get(hop) {
            Some((id, 1)) if *id == o.id => Some(o.id),
            _ => None,
        }
    }

    /// Whether `id` is one of our live objects.
    pub fn is_ours(&self, id: u32) -> bool {
        self.sets
            .iter()
            .flatten()
            .any(|o| o.id == id || o.members.contains(&id))
    }

    /// The kernel holds only the objects `present` (a dump after links
    /// came back, or someone deleted one): appends the re-creation of every
    /// missing one of ours (a group that lost a member is replaced whole),
    /// and returns the sets whose routes must be written again (a route
    /// goes with its object).
    pub fn repair(&mut self, present: impl Fn(u32) -> bool, ops: &mut Vec<NhOp>) -> Vec<u32> {
        let mut lost_hops = HashSet::new();
        for (hop, (id, _)) in &self.hops {
            if !present(*id) {
                lost_hops.insert(*id);
                ops.push(NhOp::Hop { id: *id, hop: *hop });
            }
        }
        let mut sets = Vec::new();
        for (set, o) in self.sets.iter().enumerate() {
            let Some(o) = o else { continue };
            if o.members.is_empty() {
                if lost_hops.contains(&o.id) {
                    sets.push(set as u32);
                }
            } else if !present(o.id) || o.members.iter().any(|m| lost_hops.contains(m)) {
                if !present(o.id) {
                    sets.push(set as u32);
                }
                ops.push(NhOp::Group {
                    id: o.id,
                    members: o.members.clone(),
                });
            }
        }
        sets
    }

    /// Our live object ids.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.hops.values().map(|(id, _)| *id).chain(
            self.sets
                .iter()
                .flatten()
                .filter(|o| !o.members.is_empty())
                .map(|o| o.id),
        )
    }

    /// Objects in use (hops and groups).
    pub fn len(&self) -> usize {
        self.ids().count()
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(last: u8, ifindex: u32) -> Hop {
        Hop {
            gateway: [192, 0, 2, last].into(),
            ifindex,
            onlink: false,
        }
    }

    const A: u32 = ID_BASE;
    const B: u32 = ID_BASE + 1;
    const G: u32 = ID_BASE + 2;

    #[test]
    fn hops_are_shared_and_groups_built_on_them() {
        let mut o = Objects::default();
        let mut ops = Vec::new();
        assert_eq!(o.ensure(1, &[hop(2, 3)], &[hop(2, 3)], &mut ops), Some(A));
        assert_eq!(
            ops,
            [NhOp::Hop {
                id: A,
                hop: hop(2, 3)
            }]
        );
        ops.clear();
        // Known: nothing to create.
        assert_eq!(o.ensure(1, &[hop(2, 3)], &[hop(2, 3)], &mut ops), Some(A));
        assert!(ops.is_empty());
        // An ECMP set reuses the hop object and adds one.
        assert_eq!(
            o.ensure(
                2,
                &[hop(2, 3), hop(3, 3)],
                &[hop(2, 3), hop(3, 3)],
                &mut ops
            ),
            Some(G)
        );
        assert_eq!(
            ops,
            [
                NhOp::Hop {
                    id: B,
                    hop: hop(3, 3)
                },
                NhOp::Group {
                    id: G,
                    members: vec![A, B]
                }
            ]
        );
        assert_eq!(o.len(), 3);
        assert!(o.is_ours(B));
    }

    #[test]
    fn objects_go_after_their_last_set() {
        let mut o = Objects::default();
        let mut ops = Vec::new();
        o.ensure(1, &[hop(2, 3)], &[hop(2, 3)], &mut ops);
        o.ensure(
            2,
            &[hop(2, 3), hop(3, 3)],
            &[hop(2, 3), hop(3, 3)],
            &mut ops,
        );
        ops.clear();
        // Set 2 freed: its group and its own hop go; set 1's hop stays.
        let one = [hop(2, 3)];
        o.collect(|s| (s == 1).then_some(&one[..]), &mut ops);
        assert_eq!(ops, [NhOp::Delete(G), NhOp::Delete(B)]);
        ops.clear();
        // Set 1's id reused for other hops: the old object goes first,
        // its id free again for the new one (the kernel takes them in order).
        assert_eq!(o.ensure(1, &[hop(9, 4)], &[hop(9, 4)], &mut ops), Some(A));
        assert_eq!(
            ops,
            [
                NhOp::Delete(A),
                NhOp::Hop {
                    id: A,
                    hop: hop(9, 4)
                }
            ]
        );
    }

    #[test]
    fn stale_ids_are_skipped_then_swept() {
        let mut o = Objects::default();
        o.mark_stale([A, G]);
        let mut ops = Vec::new();
        assert_eq!(o.ensure(5, &[hop(2, 3)], &[hop(2, 3)], &mut ops), Some(B));
        assert_eq!(o.take_stale(), [A, G]);
        assert!(o.take_stale().is_empty());
    }

    #[test]
    fn repair_recreates_what_the_kernel_lost() {
        let mut o = Objects::default();
        let mut ops = Vec::new();
        o.ensure(1, &[hop(2, 3)], &[hop(2, 3)], &mut ops);
        o.ensure(
            2,
            &[hop(2, 3), hop(3, 4)],
            &[hop(2, 3), hop(3, 4)],
            &mut ops,
        );
        ops.clear();
        // Link 4 went down: hop B gone, group G shrank to A.
        let sets = o.repair(|id| id != B, &mut ops);
        assert_eq!(sets, Vec::<u32>::new(), "routes stay on the shrunk group");
        assert_eq!(
            ops,
            [
                NhOp::Hop {
                    id: B,
                    hop: hop(3, 4)
                },
                NhOp::Group {
                    id: G,
                    members: vec![A, B]
                }
            ]
        );
        ops.clear();
        // Everything gone (link 3 down too): every set's routes went.
        let mut sets = o.repair(|_| false, &mut ops);
        sets.sort();
        assert_eq!(sets, [1, 2]);
        assert_eq!(ops.len(), 3);
    }

    /// A set whose hops resolve to other links (addresses moved) gets a
    /// new object; the set's key is what `collect` compares.
    #[test]
    fn resolution_is_part_of_the_object() {
        let mut o = Objects::default();
        let mut ops = Vec::new();
        let key = [hop(2, 0)];
        assert_eq!(o.ensure(1, &key, &[hop(2, 3)], &mut ops), Some(A));
        ops.clear();
        o.collect(|_| Some(&key[..]), &mut ops);
        assert!(ops.is_empty(), "alive: {ops:?}");
        assert_eq!(o.ensure(1, &key, &[hop(2, 4)], &mut ops), Some(A));
        assert_eq!(
            ops,
            [
                NhOp::Delete(A),
                NhOp::Hop {
                    id: A,
                    hop: hop(2, 4)
                }
            ]
        );
    }

    /// A hop object is the set's own only while no group uses the hop; a
    /// group is always its set's own.
    #[test]
    fn exclusive_objects_take_only_their_sets_routes() {
        let mut o = Objects::default();
        let mut ops = Vec::new();
        o.ensure(1, &[hop(2, 3)], &[hop(2, 3)], &mut ops);
        assert_eq!(o.exclusive(1), Some(A));
        o.ensure(
            2,
            &[hop(2, 3), hop(3, 3)],
            &[hop(2, 3), hop(3, 3)],
            &mut ops,
        );
        assert_eq!(o.exclusive(1), None, "hop A is a member of group G");
        assert_eq!(o.exclusive(2), Some(G));
        assert_eq!(o.exclusive(7), None, "no object");
        o.retire(2, &mut ops);
        assert_eq!(o.exclusive(1), Some(A));
    }

    #[test]
    fn usable_needs_every_interface() {
        assert!(usable(&[hop(1, 2)]));
        assert!(!usable(&[hop(1, 2), hop(2, 0)]));
        assert!(!usable(&[]));
    }
}
