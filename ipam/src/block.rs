//! Pure operations on one block: assign, release, verify. No I/O; the
//! driver reads a block, applies one of these, and writes it back with a
//! compare-and-swap, so two nodes can never both win the same address.

use crate::model::{
    addr_to_u128, net_base, u128_to_addr, Allocation, Attributes, Block, Family, FreeSlot,
};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

/// What a release by address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Freed; the handle that held it.
    Freed { handle: String },
    /// The address was not assigned.
    NotAssigned,
    /// Assigned again since the caller looked (sequence numbers differ):
    /// left alone.
    Reassigned,
    /// Not inside this block.
    OutsideBlock,
}

impl Block {
    pub fn new(cidr: IpNet, pool: &str, affinity: Option<String>, now: u64) -> Block {
        let size = block_len(&cidr);
        Block {
            cidr: cidr.trunc(),
            pool: pool.to_string(),
            affinity,
            changed: now,
            seq: 0,
            allocations: BTreeMap::new(),
            free: (0..size).map(|ord| FreeSlot { ord, since: 0 }).collect(),
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    pub fn size(&self) -> u32 {
        block_len(&self.cidr)
    }

    pub fn addr(&self, ord: u32) -> IpAddr {
        u128_to_addr(self.family(), net_base(&self.cidr) + ord as u128)
    }

    pub fn ord(&self, addr: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&addr) {
            return None;
        }
        u32::try_from(addr_to_u128(addr) - net_base(&self.cidr)).ok()
    }

    pub fn in_use(&self) -> u32 {
        self.allocations.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    /// Addresses that could be handed out at `now` under `cooldown`.
    pub fn available(&self, now: u64, cooldown: u64) -> u32 {
        self.free
            .iter()
            .take_while(|s| s.since == 0 || s.since.saturating_add(cooldown) <= now)
            .count() as u32
    }

    /// Take up to `n` addresses for `handle`, oldest-freed first. Returns
    /// what it took, possibly fewer than `n`.
    pub fn assign(
        &mut self,
        n: u32,
        handle: &str,
        attrs: &Attributes,
        now: u64,
        cooldown: u64,
    ) -> Vec<IpAddr> {
        let mut out = Vec::new();
        while (out.len() as u32) < n {
            let Some(front) = self.free.front() else {
                break;
            };
            // FIFO: if the oldest release is still cooling down, so is
            // every later one.
            if front.since != 0 && front.since.saturating_add(cooldown) > now {
                break;
            }
            let Some(slot) = self.free.pop_front() else {
                break;
            };
            self.seq += 1;
            self.allocations.insert(
                slot.ord,
                Allocation {
                    handle: handle.to_string(),
                    attrs: attrs.clone(),
                    seq: self.seq,
                },
            );
            out.push(self.addr(slot.ord));
        }
        if !out.is_empty() {
            self.changed = now;
        }
        out
    }

    /// Take one specific address, if free.
    pub fn assign_addr(
        &mut self,
        addr: IpAddr,
        handle: &str,
        attrs: &Attributes,
        now: u64,
    ) -> bool {
        let Some(ord) = self.ord(addr) else {
            return false;
        };
        let Some(pos) = self.free.iter().position(|s| s.ord == ord) else {
            return false;
        };
        self.free.remove(pos);
        self.seq += 1;
        self.allocations.insert(
            ord,
            Allocation {
                handle: handle.to_string(),
                attrs: attrs.clone(),
                seq: self.seq,
            },
        );
        self.changed = now;
        true
    }

    /// Free `addr`; with `expected_seq`, only the assignment that had it.
    pub fn release(&mut self, addr: IpAddr, expected_seq: Option<u64>, now: u64) -> Release {
        let Some(ord) = self.ord(addr) else {
            return Release::OutsideBlock;
        };
        match self.allocations.get(&ord) {
            None => return Release::NotAssigned,
            Some(a) if expected_seq.is_some_and(|s| s != a.seq) => return Release::Reassigned,
            Some(_) => {}
        }
        let Some(a) = self.allocations.remove(&ord) else {
            return Release::NotAssigned;
        };
        self.free.push_back(FreeSlot { ord, since: now });
        self.seq += 1;
        self.changed = now;
        Release::Freed { handle: a.handle }
    }

    /// Free every address of `handle`; returns them.
    pub fn release_handle(&mut self, handle: &str, now: u64) -> Vec<IpAddr> {
        let ords: Vec<u32> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.handle == handle)
            .map(|(o, _)| *o)
            .collect();
        let mut out = Vec::new();
        for ord in ords {
            self.allocations.remove(&ord);
            self.free.push_back(FreeSlot { ord, since: now });
            out.push(self.addr(ord));
        }
        if !out.is_empty() {
            self.seq += 1;
            self.changed = now;
        }
        out
    }

    /// Addresses per handle in this block.
    pub fn handle_counts(&self) -> BTreeMap<&str, u32> {
        let mut m = BTreeMap::new();
        for a in self.allocations.values() {
            *m.entry(a.handle.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// Internal consistency: every offset is either allocated or free,
    /// exactly once, and inside the block.
    pub fn verify(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let size = self.size();
        let mut seen_free = BTreeSet::new();
        for s in &self.free {
            if s.ord >= size {
                problems.push(format!("free offset {} outside the block", s.ord));
            }
            if !seen_free.insert(s.ord) {
                problems.push(format!("{} is twice in the free list", self.addr(s.ord)));
            }
            if self.allocations.contains_key(&s.ord) {
                problems.push(format!("{} is both free and assigned", self.addr(s.ord)));
            }
        }
        for ord in self.allocations.keys() {
            if *ord >= size {
                problems.push(format!("allocation offset {ord} outside the block"));
            }
        }
        let accounted = seen_free.len() + self.allocations.len();
        if accounted < size as usize {
            problems.push(format!(
                "{} addresses neither free nor assigned",
                size as usize - accounted
            ));
        }
        problems
    }

    /// Rebuild the free list from the allocations, keeping the order of the
    /// valid free entries: the repair for what `verify` reports.
    pub fn repair_free_list(&mut self) {
        let size = self.size();
        let mut seen = BTreeSet::new();
        let mut free: VecDeque<FreeSlot> = VecDeque::new();
        for s in &self.free {
            if s.ord < size && !self.allocations.contains_key(&s.ord) && seen.insert(s.ord) {
                free.push_back(*s);
            }
        }
        for ord in 0..size {
            if !self.allocations.contains_key(&ord) && seen.insert(ord) {
                free.push_back(FreeSlot { ord, since: 0 });
            }
        }
        self.allocations.retain(|o, _| *o < size);
        self.free = free;
    }
}

fn block_len(cidr: &IpNet) -> u32 {
    let bits = cidr.max_prefix_len() - cidr.prefix_len();
    // Block sizes are at most 12 bits wide (v4 /20, v6 /116).
    1u32 << bits.min(31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Block {
        Block::new("10.0.0.0/30".parse().unwrap(), "p", Some("n1".into()), 100)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn assigns_in_order_and_runs_out() {
        let mut b = block();
        let a = Attributes::default();
        assert_eq!(
            b.assign(3, "h1", &a, 100, 0),
            vec![ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.2")]
        );
        assert_eq!(b.assign(3, "h2", &a, 100, 0), vec![ip("10.0.0.3")]);
        assert!(b.assign(1, "h3", &a, 100, 0).is_empty());
        assert!(b.verify().is_empty());
        assert_eq!(b.handle_counts().get("h1"), Some(&3));
    }

    #[test]
    fn reuse_is_fifo_and_respects_cooldown() {
        let mut b = block();
        let a = Attributes::default();
        b.assign(4, "h", &a, 100, 0);
        assert_eq!(
            b.release(ip("10.0.0.2"), None, 200),
            Release::Freed { handle: "h".into() }
        );
        assert_eq!(
            b.release(ip("10.0.0.0"), None, 201),
            Release::Freed { handle: "h".into() }
        );
        // Cooling down for 60 s: nothing to hand out yet.
        assert!(b.assign(1, "x", &a, 230, 60).is_empty());
        assert_eq!(b.available(230, 60), 0);
        // After it, the first released comes back first.
        assert_eq!(b.assign(1, "x", &a, 260, 60), vec![ip("10.0.0.2")]);
        assert_eq!(b.assign(1, "x", &a, 261, 60), vec![ip("10.0.0.0")]);
    }

    #[test]
    fn release_with_sequence_spares_a_reassigned_address() {
        let mut b = block();
        let a = Attributes::default();
        b.assign(4, "old", &a, 1, 0);
        let seq = b.allocations[&1].seq;
        b.release(ip("10.0.0.1"), None, 2);
        // Drain the rest so that 10.0.0.1 is handed out again.
        b.release(ip("10.0.0.0"), None, 2);
        let got = b.assign(1, "new", &a, 3, 0);
        assert_eq!(got, vec![ip("10.0.0.1")]);
        assert_eq!(b.release(ip("10.0.0.1"), Some(seq), 4), Release::Reassigned);
        assert_eq!(b.allocations[&1].handle, "new");
        let seq_new = b.allocations[&1].seq;
        assert_eq!(
            b.release(ip("10.0.0.1"), Some(seq_new), 4),
            Release::Freed {
                handle: "new".into()
            }
        );
        assert_eq!(b.release(ip("10.0.0.1"), None, 4), Release::NotAssigned);
        assert_eq!(b.release(ip("10.0.1.1"), None, 4), Release::OutsideBlock);
    }

    #[test]
    fn specific_address_and_release_by_handle() {
        let mut b = block();
        let a = Attributes::default();
        assert!(b.assign_addr(ip("10.0.0.3"), "h", &a, 1));
        assert!(!b.assign_addr(ip("10.0.0.3"), "h2", &a, 1), "taken");
        assert!(!b.assign_addr(ip("10.0.0.9"), "h2", &a, 1), "outside");
        b.assign(1, "h", &a, 1, 0);
        b.assign(1, "other", &a, 1, 0);
        let mut freed = b.release_handle("h", 2);
        freed.sort();
        assert_eq!(freed, vec![ip("10.0.0.0"), ip("10.0.0.3")]);
        assert_eq!(b.in_use(), 1);
        assert!(b.verify().is_empty());
    }

    #[test]
    fn verify_finds_and_repair_fixes_corruption() {
        let mut b = block();
        let a = Attributes::default();
        b.assign(1, "h", &a, 1, 0);
        b.free.push_back(FreeSlot { ord: 0, since: 5 });
        b.free.push_back(FreeSlot { ord: 2, since: 5 });
        let p = b.verify();
        assert!(
            p.iter().any(|s| s.contains("both free and assigned")),
            "{p:?}"
        );
        assert!(p.iter().any(|s| s.contains("twice")), "{p:?}");
        b.repair_free_list();
        assert!(b.verify().is_empty());
        assert_eq!(b.free.len(), 3);
    }

    #[test]
    fn v6_blocks_address_by_offset() {
        let b = Block::new("fd00::/122".parse().unwrap(), "p6", None, 0);
        assert_eq!(b.size(), 64);
        assert_eq!(b.addr(63), ip("fd00::3f"));
        assert_eq!(b.ord(ip("fd00::3f")), Some(63));
        assert_eq!(b.ord(ip("fd00::40")), None);
    }
}
