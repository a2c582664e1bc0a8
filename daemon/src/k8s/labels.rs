//! Kubernetes Node labels into petrel's node records, pure.
//!
//! The record's labels have other writers: petreld merges the labels of
//! its petreld.toml on every registration, and operators run `petrelctl
//! node label`. The controller remembers what it copied
//! ([`crate::cluster::model::OwnedLabels`]) and changes or removes only a
//! label whose value is still the one it wrote; a label another writer set
//! to another value is left alone, so the node's own file wins.

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// The record's new labels and the controller's new owned set, from the
/// record's labels, what the controller owned before and the Node's labels.
pub fn merge(record: &Labels, owned: &Labels, node: &Labels) -> (Labels, Labels) {
    let mut out = record.clone();
    let mut now_owned = Labels::new();
    for (k, v) in node {
        match record.get(k) {
            // Ours (or absent): ours to set.
            None => {
                out.insert(k.clone(), v.clone());
                now_owned.insert(k.clone(), v.clone());
            }
            Some(cur) if owned.get(k) == Some(cur) => {
                out.insert(k.clone(), v.clone());
                now_owned.insert(k.clone(), v.clone());
            }
            // Same value set by someone else: leave ownership with them,
            // so a label removed from the Node does not remove theirs.
            Some(_) => {}
        }
    }
    for (k, v) in owned {
        if !node.contains_key(k) && record.get(k) == Some(v) {
            out.remove(k);
        }
    }
    (out, now_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_labels_are_copied_and_the_files_win() {
        // The file set rack=r1; Kubernetes says rack=r9 and zone=a.
        let (rec, owned) = merge(
            &l(&[("rack", "r1")]),
            &l(&[]),
            &l(&[("rack", "r9"), ("zone", "a")]),
        );
        assert_eq!(rec, l(&[("rack", "r1"), ("zone", "a")]));
        assert_eq!(owned, l(&[("zone", "a")]));
        // zone changes in Kubernetes; then it is removed.
        let (rec, owned) = merge(&rec, &owned, &l(&[("zone", "b")]));
        assert_eq!(rec, l(&[("rack", "r1"), ("zone", "b")]));
        let (rec, owned) = merge(&rec, &owned, &l(&[]));
        assert_eq!(rec, l(&[("rack", "r1")]));
        assert!(owned.is_empty());
    }

    #[test]
    fn a_label_an_operator_changed_after_us_is_theirs() {
        let (rec, owned) = merge(&l(&[]), &l(&[]), &l(&[("tier", "edge")]));
        let mut rec = rec;
        rec.insert("tier".into(), "core".into()); // petrelctl node label
        let (rec2, owned2) = merge(&rec, &owned, &l(&[]));
        assert_eq!(rec2, l(&[("tier", "core")]));
        assert!(owned2.is_empty());
    }
}
