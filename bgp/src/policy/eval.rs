//! Evaluating a [`Policy`] against one route.

use super::{Match, PeerType, Policy, PrefixMatch, PrefixOp, Rule, Terminal};
use crate::rib::attrs::AttrSet;
use crate::wire::attr::{AsPath, SegmentType};
use crate::wire::nlri::Prefix;
use std::borrow::Cow;

/// The route a policy looks at.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    pub prefix: Prefix,
    pub attrs: &'a AttrSet,
    /// The session the route comes from (import) or goes to (export);
    /// `None` for locally originated routes on import.
    pub peer_type: Option<PeerType>,
    /// The AS a `prepend` without `asn` uses.
    pub local_as: u32,
}

/// Transient (returned, matched, dropped), so the accepted attributes stay
/// inline rather than costing an allocation per modified route.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted; `Some` when the policy changed the attributes.
    Accept(Option<AttrSet>),
    Reject,
}

impl Policy {
    /// Runs the rules in order (see the module docs). Attributes are copied
    /// only when a rule modifies them.
    pub fn evaluate(&self, input: &PolicyInput) -> Verdict {
        let mut attrs: Cow<AttrSet> = Cow::Borrowed(input.attrs);
        for rule in &self.rules {
            if !rule.matches.holds(input, &attrs) {
                continue;
            }
            rule.modify(&mut attrs, input.local_as);
            match rule.action {
                Some(Terminal::Reject) => return Verdict::Reject,
                Some(Terminal::Accept) => break,
                None => {}
            }
        }
        Verdict::Accept(match attrs {
            Cow::Borrowed(_) => None,
            Cow::Owned(a) => Some(a),
        })
    }

    /// Whether the policy accepts everything unchanged without looking.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Match {
    fn holds(&self, input: &PolicyInput, attrs: &AttrSet) -> bool {
        self.prefix.as_ref().is_none_or(|p| p.holds(&input.prefix))
            && self.community.is_none_or(|c| {
                attrs
                    .attrs
                    .communities
                    .as_ref()
                    .is_some_and(|cs| cs.contains(&c))
            })
            && self
                .as_path_prefix
                .as_ref()
                .is_none_or(|want| path_begins_with(attrs.attrs.as_path.as_ref(), want))
            && self.peer_type.is_none_or(|t| input.peer_type == Some(t))
    }
}

impl PrefixMatch {
    fn holds(&self, p: &Prefix) -> bool {
        let (ge, le) = self.range();
        let within = self.cidr.contains(p) && (ge..=le).contains(&p.len());
        match self.op {
            PrefixOp::Exact => *p == self.cidr,
            PrefixOp::Within => within,
            PrefixOp::NotWithin => !within,
        }
    }
}

/// Whether the path's leading AS_SEQUENCE ASes are `want`, in order. The
/// sequence may continue over several segments of the wire encoding (a long
/// sequence is split every 255 ASes).
fn path_begins_with(path: Option<&AsPath>, want: &[u32]) -> bool {
    let Some(path) = path else {
        return want.is_empty();
    };
    let mut leading = path
        .segments()
        .take_while(|s| s.kind == SegmentType::Sequence)
        .flat_map(|s| s.asns.iter().copied());
    want.iter().all(|&w| leading.next() == Some(w))
}

impl Rule {
    fn modify(&self, attrs: &mut Cow<AttrSet>, local_as: u32) {
        if !self.add_communities.is_empty() {
            let missing: Vec<_> = self
                .add_communities
                .iter()
                .filter(|c| {
                    !attrs
                        .attrs
                        .communities
                        .as_ref()
                        .is_some_and(|cs| cs.contains(c))
                })
                .copied()
                .collect();
            if !missing.is_empty() {
                attrs
                    .to_mut()
                    .attrs
                    .communities
                    .get_or_insert_with(Vec::new)
                    .extend(missing);
            }
        }
        if let Some(lp) = self.set_local_pref {
            if attrs.attrs.local_pref != Some(lp) {
                attrs.to_mut().attrs.local_pref = Some(lp);
            }
        }
        if let Some(p) = self.prepend {
            let asn = p.asn.unwrap_or(local_as);
            let a = &mut attrs.to_mut().attrs;
            let path = a.as_path.take().unwrap_or_default();
            a.as_path = Some(path.prepend(asn, p.times as usize));
        }
    }
}
