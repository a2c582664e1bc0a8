//! A peer's `add_path` setting (RFC 7911): which families the peer may send
//! us several paths in, and which paths we send it.
//!
//! ```toml
//! add_path = { send = "all" }                  # every family of the peer
//! add_path = { send = { "ipv4-unicast" = "ecmp" }, receive = true }
//! ```
//!
//! The capability is advertised per family as configured; paths go with
//! identifiers only where the peer said it receives them (the rest gets
//! the best path, as without ADD-PATH).

use petrel_bgp::rib::{AddPathConfig, SendMode};
use petrel_bgp::wire::family::Family;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddPath {
    #[serde(default)]
    send: Option<RawSend>,
    /// Take several paths from the peer in each of its families.
    #[serde(default)]
    receive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSend {
    /// One mode for every family of the peer.
    Every(String),
    /// A mode per family.
    PerFamily(BTreeMap<String, String>),
}

fn family(name: &str) -> Option<Family> {
    match name {
        "ipv4-unicast" => Some(Family::IPV4_UNICAST),
        "ipv6-unicast" => Some(Family::IPV6_UNICAST),
        _ => None,
    }
}

/// Validates `raw` for a peer of `families`; an error is (field below
/// `add_path`, message).
pub(super) fn parse(
    raw: RawAddPath,
    families: &[Family],
) -> Result<AddPathConfig, (String, String)> {
    let mode = |field: String, s: &str| s.parse::<SendMode>().map_err(|m| (field, m));
    let send = match raw.send {
        None => Vec::new(),
        Some(RawSend::Every(m)) => {
            let m = mode("send".into(), &m)?;
            families.iter().map(|f| (*f, m)).collect()
        }
        Some(RawSend::PerFamily(v)) => v
            .iter()
            .map(|(name, m)| {
                let field = format!("send.{name}");
                let f = family(name).ok_or_else(|| {
                    (
                        field.clone(),
                        "allowed families are \"ipv4-unicast\" and \"ipv6-unicast\"".to_string(),
                    )
                })?;
                if !families.contains(&f) {
                    return Err((field, "not one of the peer's families".into()));
                }
                Ok((f, mode(field, m)?))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(AddPathConfig {
        receive: if raw.receive {
            families.to_vec()
        } else {
            Vec::new()
        },
        send,
    })
}

/// The setting in the words of the file, for `show peer`: `-` when off.
pub fn describe(c: &AddPathConfig) -> String {
    let mut parts: Vec<String> = c
        .send
        .iter()
        .map(|(f, m)| format!("send {} {f}", m.name()))
        .collect();
    if !c.receive.is_empty() {
        let f: Vec<String> = c.receive.iter().map(|f| f.to_string()).collect();
        parts.push(format!("receive {}", f.join(" ")));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawAddPath {
        toml::from_str(toml_text).unwrap()
    }

    const BOTH: &[Family] = &[Family::IPV4_UNICAST, Family::IPV6_UNICAST];

    #[test]
    fn one_mode_for_every_family_or_one_per_family() {
        let c = parse(raw("send = \"all\"\nreceive = true"), BOTH).unwrap();
        assert_eq!(
            c.send,
            [
                (Family::IPV4_UNICAST, SendMode::All),
                (Family::IPV6_UNICAST, SendMode::All)
            ]
        );
        assert_eq!(c.receive, BOTH);
        assert_eq!(
            describe(&c),
            "send all ipv4-unicast, send all ipv6-unicast, receive ipv4-unicast ipv6-unicast"
        );
        let c = parse(raw("send = { \"ipv6-unicast\" = \"ecmp\" }"), BOTH).unwrap();
        assert_eq!(c.send, [(Family::IPV6_UNICAST, SendMode::Ecmp)]);
        assert!(c.receive.is_empty());
        assert_eq!(describe(&AddPathConfig::default()), "-");
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_values() {
        let e = parse(raw("send = \"every\""), BOTH).unwrap_err();
        assert_eq!(e.0, "send");
        assert!(e.1.contains("\"best\", \"ecmp\" and \"all\""), "{e:?}");
        let e = parse(
            raw("send = { \"ipv6-unicast\" = \"all\" }"),
            &[Family::IPV4_UNICAST],
        )
        .unwrap_err();
        assert_eq!(
            e,
            (
                "send.ipv6-unicast".into(),
                "not one of the peer's families".into()
            )
        );
        let e = parse(raw("send = { \"l2vpn-evpn\" = \"all\" }"), BOTH).unwrap_err();
        assert_eq!(e.0, "send.l2vpn-evpn");
    }
}
