//! The borrowed-address index: `borrowed/<node>/<addr>` exists exactly
//! while `<node>` holds `<addr>` in a block that is not affine to it.
//!
//! A node advertises its borrowed addresses as host routes, so it must know
//! them; without the index that meant reading every block of the cluster
//! (O(cluster) per node, the scale defect of issue 14). The index is derived
//! data: every block write appends [`index_ops`] for its changes to the same
//! transaction, whose compare-and-swap on the block serializes them, so the
//! index never disagrees with a committed block. Blocks written by versions
//! without the index are caught up by [`crate::Ipam::reconcile_borrowed_index`]
//! (the online migration, and `petrelctl ipam gc`).

use crate::keys;
use crate::model::Block;
use crate::store::Op;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The index entries a block implies: (node, address) for every allocation
/// of a node other than the block's affine one.
pub fn entries(block: &Block) -> BTreeMap<(String, IpAddr), ()> {
    block
        .allocations
        .iter()
        .filter_map(|(ord, a)| {
            let node = a.attrs.node.as_deref()?;
            (block.affinity.as_deref() != Some(node))
                .then(|| ((node.to_string(), block.addr(*ord)), ()))
        })
        .collect()
}

/// The value of an index entry: the block holding the address, so that a
/// reader need not know the pools to find it.
pub fn value(block: &Block) -> Vec<u8> {
    block.cidr.to_string().into_bytes()
}

/// The unconditional index writes that take the index from what `before`
/// implies to what `after` implies (`None`: the block absent).
pub fn index_ops(before: Option<&Block>, after: Option<&Block>) -> Vec<Op> {
    let old = before.map(entries).unwrap_or_default();
    let new = after.map(entries).unwrap_or_default();
    let mut ops = Vec::new();
    for (node, addr) in old.keys() {
        if !new.contains_key(&(node.clone(), *addr)) {
            ops.push(Op::Remove {
                key: keys::borrowed(node, addr),
            });
        }
    }
    if let Some(b) = after {
        for (node, addr) in new.keys() {
            if !old.contains_key(&(node.clone(), *addr)) {
                ops.push(Op::Put {
                    key: keys::borrowed(node, addr),
                    value: value(b),
                });
            }
        }
    }
    ops
}

/// A block write: the conditional update and the index writes it implies.
pub fn update_ops(before: &Block, after: &Block, revision: i64) -> Vec<Op> {
    let mut ops = vec![Op::Update {
        key: keys::block(&after.cidr),
        value: crate::ipam::encode(after),
        revision,
    }];
    ops.extend(index_ops(Some(before), Some(after)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attributes;

    fn attrs(node: &str) -> Attributes {
        Attributes {
            node: Some(node.into()),
            ..Attributes::default()
        }
    }

    #[test]
    fn only_other_nodes_allocations_are_indexed_and_changes_are_diffs() {
        let mut b = Block::new("10.0.0.0/26".parse().unwrap(), "p", Some("a".into()), 0);
        let before = b.clone();
        let own = b.assign(1, "h-own", &attrs("a"), 0, 0);
        let lent = b.assign(1, "h-lent", &attrs("b"), 0, 0);
        assert_eq!(own.len(), 1);
        let ops = index_ops(Some(&before), Some(&b));
        assert_eq!(
            ops,
            vec![Op::Put {
                key: keys::borrowed("b", &lent[0]),
                value: b"10.0.0.0/26".to_vec(),
            }],
            "node a's own address is covered by the block's aggregate"
        );
        // Nothing changed for the index: no ops.
        let mut again = b.clone();
        again.changed = 7;
        assert!(index_ops(Some(&b), Some(&again)).is_empty());
        // The block given up: b's address now sits in an unaffine block,
        // borrowed by both nodes' standards.
        let mut orphan = b.clone();
        orphan.affinity = None;
        assert_eq!(
            index_ops(Some(&b), Some(&orphan)),
            vec![Op::Put {
                key: keys::borrowed("a", &own[0]),
                value: b"10.0.0.0/26".to_vec(),
            }]
        );
        // The block deleted: every entry goes.
        assert_eq!(
            index_ops(Some(&orphan), None),
            vec![
                Op::Remove {
                    key: keys::borrowed("a", &own[0])
                },
                Op::Remove {
                    key: keys::borrowed("b", &lent[0])
                }
            ]
        );
    }
}
