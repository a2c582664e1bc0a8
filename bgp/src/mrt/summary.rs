//! Counting what a dump holds: records by type, BGP messages by type,
//! prefixes announced and withdrawn, RIB entries, and decode errors by kind.

use super::reader::{MrtError, MrtReader, RawRecord};
use super::record::{type_name, Record};
use crate::wire::family::Family;
use crate::wire::Message;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub file: String,
    pub records: u64,
    pub mrt_types: BTreeMap<String, u64>,
    pub bgp_msg_types: BTreeMap<String, u64>,
    /// IPv4 unicast NLRI in the UPDATE's own NLRI field.
    pub announced_v4: u64,
    /// NLRI in MP_REACH_NLRI.
    pub announced_mp: u64,
    pub withdrawn_v4: u64,
    pub withdrawn_mp: u64,
    pub announced_ipv4: u64,
    pub announced_ipv6: u64,
    pub withdrawn_ipv4: u64,
    pub withdrawn_ipv6: u64,
    pub peer_index_peers: u64,
    pub rib_prefix_records: u64,
    pub rib_entries: u64,
    /// RIB entries of the RFC 8050 ADD-PATH subtypes, each with a path
    /// identifier.
    pub rib_path_ids: u64,
    /// Announced and withdrawn NLRI carrying a path identifier (RFC 8050
    /// §3: BGP4MP ADD-PATH subtypes).
    pub announced_path_ids: u64,
    pub withdrawn_path_ids: u64,
    pub distinct_announced_prefixes: u64,
    pub distinct_withdrawn_prefixes: u64,
    pub distinct_rib_prefixes: u64,
    /// RFC 7606 outcomes seen in UPDATEs (not decode failures).
    pub rfc7606: BTreeMap<String, u64>,
    /// Decode errors by kind; a clean dump has none.
    pub errors: BTreeMap<String, u64>,
    /// The truncation or read error that ended the stream early, if any.
    pub truncated: Option<String>,
}

impl Summary {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Reads a whole dump and counts it.
pub fn summarize<R: Read>(file: &str, reader: MrtReader<R>) -> Summary {
    let mut s = Summary {
        file: file.to_string(),
        ..Summary::default()
    };
    let mut announced = HashSet::new();
    let mut withdrawn = HashSet::new();
    let mut rib = HashSet::new();
    for item in reader {
        let raw: RawRecord = match item {
            Ok(r) => r,
            Err(e @ (MrtError::Truncated { .. } | MrtError::Io { .. })) => {
                s.truncated = Some(e.to_string());
                break;
            }
            Err(e) => {
                *s.errors.entry(format!("mrt: {e}")).or_default() += 1;
                break;
            }
        };
        s.records += 1;
        *s.mrt_types
            .entry(type_name(raw.mrt_type, raw.subtype))
            .or_default() += 1;
        let record = match Record::parse(&raw) {
            Ok(r) => r,
            Err(e) => {
                *s.errors
                    .entry(format!("record: {}", short(&e.to_string())))
                    .or_default() += 1;
                continue;
            }
        };
        match record {
            Record::PeerIndexTable(t) => s.peer_index_peers += t.peers.len() as u64,
            Record::Rib(r) => {
                s.rib_prefix_records += 1;
                if let Some(p) = r.prefix {
                    rib.insert(p);
                }
                for e in &r.entries {
                    s.rib_entries += 1;
                    s.rib_path_ids += u64::from(e.path_id.is_some());
                    match &e.attrs {
                        Ok(d) => {
                            for err in &d.errors {
                                *s.rfc7606.entry(err.to_string()).or_default() += 1;
                            }
                        }
                        Err(n) => {
                            *s.errors
                                .entry(format!("attributes: {}", n.error))
                                .or_default() += 1
                        }
                    }
                }
            }
            Record::Message(m) => match &m.message {
                Ok(msg) => {
                    *s.bgp_msg_types
                        .entry(msg.type_name().to_string())
                        .or_default() += 1;
                    if let Message::Update(u) = msg {
                        for err in &u.errors {
                            *s.rfc7606.entry(err.to_string()).or_default() += 1;
                        }
                        for (_, e) in u.announced() {
                            s.announced_path_ids += u64::from(e.path_id.is_some());
                        }
                        for (_, e) in u.withdrawals() {
                            s.withdrawn_path_ids += u64::from(e.path_id.is_some());
                        }
                        for e in u.nlri.iter() {
                            s.announced_v4 += 1;
                            s.announced_ipv4 += 1;
                            announced.insert(e.prefix);
                        }
                        for e in u.withdrawn.iter() {
                            s.withdrawn_v4 += 1;
                            s.withdrawn_ipv4 += 1;
                            withdrawn.insert(e.prefix);
                        }
                        if let Some(mp) = &u.mp_reach {
                            for e in mp.nlri.iter() {
                                s.announced_mp += 1;
                                if mp.family.afi == Family::IPV6_UNICAST.afi {
                                    s.announced_ipv6 += 1;
                                } else {
                                    s.announced_ipv4 += 1;
                                }
                                announced.insert(e.prefix);
                            }
                        }
                        if let Some(mp) = &u.mp_unreach {
                            for e in mp.withdrawn.iter() {
                                s.withdrawn_mp += 1;
                                if mp.family.afi == Family::IPV6_UNICAST.afi {
                                    s.withdrawn_ipv6 += 1;
                                } else {
                                    s.withdrawn_ipv4 += 1;
                                }
                                withdrawn.insert(e.prefix);
                            }
                        }
                    }
                }
                Err(n) => *s.errors.entry(format!("message: {}", n.error)).or_default() += 1,
            },
            Record::StateChange(_) | Record::Other => {}
        }
    }
    s.distinct_announced_prefixes = announced.len() as u64;
    s.distinct_withdrawn_prefixes = withdrawn.len() as u64;
    s.distinct_rib_prefixes = rib.len() as u64;
    s
}

fn short(s: &str) -> String {
    // Group errors by kind: drop the offsets that make each one unique.
    s.split(" at offset").next().unwrap_or(s).to_string()
}
