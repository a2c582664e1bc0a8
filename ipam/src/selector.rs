//! Node selectors: a small label expression language, a subset of
//! Calico's. Terms joined by `&&`: `all()`, `has(key)`, `!has(key)`,
//! `key == 'value'`, `key != 'value'`. The empty string selects all nodes.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    All,
    Has(String),
    NotHas(String),
    Eq(String, String),
    Ne(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node selector {expr:?}: cannot read {term:?}; use all(), has(k), !has(k), k == 'v', k != 'v' joined by &&")]
pub struct SelectorError {
    pub expr: String,
    pub term: String,
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|x| x.strip_suffix('"')))?;
    Some(inner.to_string())
}

fn key(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    ok.then(|| s.to_string())
}

impl Selector {
    pub fn parse(expr: &str) -> Result<Selector, SelectorError> {
        let mut terms = Vec::new();
        if expr.trim().is_empty() {
            return Ok(Selector(vec![Term::All]));
        }
        for raw in expr.split("&&") {
            let t = raw.trim();
            let bad = || SelectorError {
                expr: expr.to_string(),
                term: t.to_string(),
            };
            let term = if t == "all()" {
                Term::All
            } else if let Some(k) = t.strip_prefix("!has(").and_then(|x| x.strip_suffix(')')) {
                Term::NotHas(key(k).ok_or_else(bad)?)
            } else if let Some(k) = t.strip_prefix("has(").and_then(|x| x.strip_suffix(')')) {
                Term::Has(key(k).ok_or_else(bad)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Term::Ne(key(k).ok_or_else(bad)?, unquote(v).ok_or_else(bad)?)
            } else if let Some((k, v)) = t.split_once("==") {
                Term::Eq(key(k).ok_or_else(bad)?, unquote(v).ok_or_else(bad)?)
            } else {
                return Err(bad());
            };
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::All => true,
            Term::Has(k) => labels.contains_key(k),
            Term::NotHas(k) => !labels.contains_key(k),
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_labels() {
        let labels: BTreeMap<String, String> = [
            ("zone".to_string(), "a".to_string()),
            ("gpu".to_string(), "".to_string()),
        ]
        .into();
        let yes = [
            "",
            "all()",
            "zone == 'a'",
            "has(gpu) && zone != \"b\"",
            "!has(spot)",
        ];
        let no = ["zone == 'b'", "has(spot)", "zone == 'a' && !has(gpu)"];
        for e in yes {
            assert!(Selector::parse(e).unwrap().matches(&labels), "{e}");
        }
        for e in no {
            assert!(!Selector::parse(e).unwrap().matches(&labels), "{e}");
        }
        assert!(Selector::parse("zone = a").is_err());
        assert!(Selector::parse("has()").is_err());
    }
}
