//! Route policy, modelled on Calico's `BGPFilter`: an ordered list of rules,
//! each a set of matches and actions.
//!
//! Evaluation walks the rules in order. A rule whose matches all hold applies
//! its modifying actions (add communities, set LOCAL_PREF, prepend) and then,
//! if it has a terminal `action` (`accept` or `reject`), ends the walk with
//! that verdict; a rule without one lets the walk continue with the modified
//! route. Later rules see earlier modifications. When no terminal rule
//! matches, the route is accepted (with whatever modifications applied).
//! The same [`Policy`] type serves import (per peer, between Adj-RIB-In and
//! Loc-RIB) and export (per update group).
//!
//! Configuration is data (`serde`), for example in TOML:
//!
//! ```toml
//! [[rules]]
//! match = { prefix = { cidr = "10.0.0.0/8", op = "within", ge = 24, le = 32 }, peer_type = "ebgp" }
//! add_communities = ["64512:100"]
//! set_local_pref = 200
//! action = "accept"
//!
//! [[rules]]
//! match = { as_path_prefix = [64666] }
//! action = "reject"
//! ```
//!
//! Field values that fail to parse name their field in the error, and
//! [`Policy::validate`] checks what the types cannot (length ranges), naming
//! the rule and field.

mod eval;

pub use eval::{PolicyInput, Verdict};

use crate::wire::attr::Community;
use crate::wire::nlri::Prefix;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// An ordered list of rules; the empty policy accepts everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// All given matches must hold; no matches: the rule always applies.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Communities appended (once each) when the rule applies.
    #[serde(default, deserialize_with = "communities")]
    pub add_communities: Vec<Community>,
    #[serde(default)]
    pub set_local_pref: Option<u32>,
    #[serde(default)]
    pub prepend: Option<Prepend>,
    /// Ends the evaluation with this verdict; none: continue.
    #[serde(default)]
    pub action: Option<Terminal>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub prefix: Option<PrefixMatch>,
    /// The route carries this standard community.
    #[serde(default, deserialize_with = "community")]
    pub community: Option<Community>,
    /// The AS_PATH begins with this sequence of ASes.
    #[serde(default)]
    pub as_path_prefix: Option<Vec<u32>>,
    #[serde(default)]
    pub peer_type: Option<PeerType>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixMatch {
    #[serde(deserialize_with = "cidr")]
    pub cidr: Prefix,
    #[serde(default)]
    pub op: PrefixOp,
    /// Shortest matching prefix length (`within` / `not-within`); default
    /// the CIDR's own length.
    #[serde(default)]
    pub ge: Option<u8>,
    /// Longest matching prefix length; default the family's width.
    #[serde(default)]
    pub le: Option<u8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrefixOp {
    /// The route's prefix is the CIDR itself.
    Exact,
    /// The route's prefix lies within the CIDR, its length within `ge..=le`.
    #[default]
    Within,
    /// The negation of `within` (with the same length range).
    NotWithin,
}

/// Which kind of session the route is received from (import) or sent to
/// (export). Locally originated routes count as neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerType {
    Ibgp,
    Ebgp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepend {
    /// How many copies, 1 to 16.
    pub times: u8,
    /// The AS to prepend; default the local AS of the session.
    #[serde(default)]
    pub asn: Option<u32>,
}

/// The most copies one rule may prepend: enough for traffic engineering,
/// small enough that a typo cannot build a path other routers refuse.
pub const MAX_PREPEND: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Terminal {
    Accept,
    Reject,
}

/// A policy that deserialised but cannot work, naming the rule and field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rules[{rule}].{field}: {message}")]
pub struct PolicyError {
    pub rule: usize,
    pub field: &'static str,
    pub message: String,
}

impl Policy {
    /// Checks length ranges and prepend counts.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (i, r) in self.rules.iter().enumerate() {
            let err = |field, message: String| PolicyError {
                rule: i,
                field,
                message,
            };
            if let Some(p) = &r.matches.prefix {
                let width = p.cidr.family().max_prefix_len().unwrap_or(128);
                if p.op == PrefixOp::Exact && (p.ge.is_some() || p.le.is_some()) {
                    return Err(err(
                        "match.prefix",
                        "ge/le apply to `within` and `not-within`, not `exact`".into(),
                    ));
                }
                let (ge, le) = p.range();
                if let Some(g) = p.ge {
                    if g < p.cidr.len() || g > width {
                        return Err(err(
                            "match.prefix.ge",
                            format!("{g} is outside {}..={width}", p.cidr.len()),
                        ));
                    }
                }
                if let Some(l) = p.le {
                    if l > width {
                        return Err(err(
                            "match.prefix.le",
                            format!("{l} exceeds the family's width {width}"),
                        ));
                    }
                }
                if ge > le {
                    return Err(err(
                        "match.prefix.le",
                        format!("le {le} is below ge {ge}: nothing can match"),
                    ));
                }
            }
            if let Some(p) = &r.prepend {
                if p.times == 0 || p.times > MAX_PREPEND {
                    return Err(err(
                        "prepend.times",
                        format!("{} is outside 1..={MAX_PREPEND}", p.times),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl PrefixMatch {
    /// The accepted length range, defaults filled in.
    pub fn range(&self) -> (u8, u8) {
        let width = self.cidr.family().max_prefix_len().unwrap_or(128);
        (self.ge.unwrap_or(self.cidr.len()), self.le.unwrap_or(width))
    }
}

impl fmt::Display for PeerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerType::Ibgp => "ibgp",
            PeerType::Ebgp => "ebgp",
        })
    }
}

fn parse_field<'de, D, T>(d: D, field: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|e| serde::de::Error::custom(format!("{field}: {e}")))
}

fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
    parse_field(d, "match.prefix.cidr")
}

fn community<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Community>, D::Error> {
    parse_field(d, "match.community").map(Some)
}

fn communities<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Community>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| serde::de::Error::custom(format!("add_communities: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
