//! Routes in the pipe-separated format of `bgpdump -m`, one line per prefix,
//! so that petrel's decoding can be diffed against bgpdump's.
//!
//! `TYPE|TIME|A|PEER|PEER_AS|PREFIX|AS_PATH|ORIGIN|NEXT_HOP|LOCAL_PREF|MED|COMMUNITIES|AG/NAG|AGGREGATOR|`
//! for announcements and RIB entries (`B`), `TYPE|TIME|W|PEER|PEER_AS|PREFIX`
//! for withdrawals and `TYPE|TIME|STATE|PEER|PEER_AS|OLD|NEW` for state
//! changes. The type is `BGP4MP`, with `_ET` for extended timestamps,
//! `_LOCAL` for messages the collector sent and `_AP` for RFC 8050 ADD-PATH
//! subtypes, or `TABLE_DUMP`, `TABLE_DUMP2`, `TABLE_DUMP2_AP`; ADD-PATH
//! routes carry their path identifier after the prefix. Like bgpdump, it
//! prints nothing for multicast and RIB_GENERIC RIB records. Absent
//! attributes print as bgpdump's defaults: 0 for numbers, `INCOMPLETE` for
//! ORIGIN, `255.255.255.255` for the next hop.

use super::reader::{RawRecord, BGP4MP_ET, TABLE_DUMP, TABLE_DUMP_V2};
use super::record::{
    is_add_path, is_local, PeerIndexTable, Record, RibRecord, RIB_IPV4_UNICAST,
    RIB_IPV4_UNICAST_ADDPATH, RIB_IPV6_UNICAST, RIB_IPV6_UNICAST_ADDPATH,
};
use crate::wire::attr::community::{NO_ADVERTISE, NO_EXPORT, NO_EXPORT_SUBCONFED};
use crate::wire::attr::{NextHop, PathAttributes};
use crate::wire::family::Family;
use crate::wire::nlri::NlriEntry;
use crate::wire::Message;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// bgpdump's NEXT_HOP when a route has none (its INADDR_NONE default).
const NO_NEXT_HOP: IpAddr = IpAddr::V4(Ipv4Addr::BROADCAST);

/// Formats the lines of one record into `out`. `peers` is the last
/// PEER_INDEX_TABLE seen, needed for TABLE_DUMP_V2 RIB records.
pub fn format_record(
    raw: &RawRecord,
    record: &Record,
    peers: Option<&PeerIndexTable>,
    out: &mut String,
) {
    let time = match raw.microseconds {
        Some(us) => format!("{}.{:06}", raw.timestamp, us),
        None => raw.timestamp.to_string(),
    };
    let kind = bgp4mp_kind(raw);
    match record {
        Record::StateChange(s) => {
            let _ = writeln!(
                out,
                "{kind}|{time}|STATE|{}|{}|{}|{}",
                Addr(s.peer_ip),
                s.peer_as,
                s.old_state,
                s.new_state
            );
        }
        Record::Message(m) => {
            let Ok(Message::Update(u)) = &m.message else {
                return;
            };
            let four = m.ctx.four_octet_as;
            let head = format!("{kind}|{time}");
            let (peer, peer_as) = (Addr(m.peer_ip), m.peer_as);
            for (_, e) in u.withdrawals() {
                let _ = write!(
                    out,
                    "{head}|W|{peer}|{peer_as}|{}/{}",
                    Addr(e.prefix.addr()),
                    e.prefix.len()
                );
                let _ = match e.path_id {
                    Some(id) => writeln!(out, "|{id}"),
                    None => writeln!(out),
                };
            }
            let attrs = effective(&u.attrs, four);
            for e in u.nlri.iter() {
                let nh = u.attrs.next_hop.map(IpAddr::V4);
                route_line(out, &head, "A", peer, peer_as, e, &attrs, nh);
            }
            if let Some(mp) = &u.mp_reach {
                let nh = mp_next_hop(&mp.next_hop, &u.attrs);
                for e in mp.nlri.iter() {
                    route_line(out, &head, "A", peer, peer_as, e, &attrs, nh);
                }
            }
        }
        Record::Rib(r) => rib_lines(raw, r, peers, &time, out),
        Record::PeerIndexTable(_) | Record::Other => {}
    }
}

/// `BGP4MP`, then `_ET` for extended timestamps, `_LOCAL` for messages the
/// collector sent and `_AP` for ADD-PATH subtypes, as bgpdump names them.
fn bgp4mp_kind(raw: &RawRecord) -> String {
    let mut kind = String::from("BGP4MP");
    if raw.mrt_type == BGP4MP_ET {
        kind += "_ET";
    }
    if is_local(raw.subtype) {
        kind += "_LOCAL";
    }
    if is_add_path(raw) {
        kind += "_AP";
    }
    kind
}

fn rib_lines(
    raw: &RawRecord,
    r: &RibRecord,
    peers: Option<&PeerIndexTable>,
    time: &str,
    out: &mut String,
) {
    let Some(prefix) = r.prefix else { return };
    // bgpdump prints the unicast RIB subtypes only: a multicast route would
    // read as a unicast one. The summary counts the others.
    if raw.mrt_type == TABLE_DUMP_V2
        && !matches!(
            raw.subtype,
            RIB_IPV4_UNICAST
                | RIB_IPV6_UNICAST
                | RIB_IPV4_UNICAST_ADDPATH
                | RIB_IPV6_UNICAST_ADDPATH
        )
    {
        return;
    }
    let head = if raw.mrt_type == TABLE_DUMP {
        format!("TABLE_DUMP|{time}")
    } else if is_add_path(raw) {
        format!("TABLE_DUMP2_AP|{time}")
    } else {
        format!("TABLE_DUMP2|{time}")
    };
    for e in &r.entries {
        let Ok(d) = &e.attrs else { continue };
        let (peer, peer_as) = match r.v1_peer {
            Some((a, asn)) => (Addr(a), asn),
            None => match peers.and_then(|t| t.peers.get(e.peer_index as usize)) {
                Some(p) => (Addr(p.addr), p.asn),
                None => continue,
            },
        };
        let attrs = effective(&d.attrs, raw.mrt_type != TABLE_DUMP);
        let nh = match (&d.mp_reach, r.family) {
            (Some(mp), f) if f != Family::IPV4_UNICAST || d.attrs.next_hop.is_none() => {
                mp_next_hop(&mp.next_hop, &d.attrs)
            }
            _ => d.attrs.next_hop.map(IpAddr::V4),
        };
        let e = NlriEntry {
            path_id: e.path_id,
            prefix,
        };
        route_line(out, &head, "B", peer, peer_as, e, &attrs, nh);
    }
}

/// An address as bgpdump prints it: IPv6 compresses the longest run of zero
/// groups even when it is a single group (RFC 5952 §4.2.2 would not), the
/// first run winning ties; IPv4-mapped and IPv4-compatible addresses end in
/// dotted decimal.
#[derive(Clone, Copy)]
pub struct Addr(pub IpAddr);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let IpAddr::V6(a) = self.0 else {
            return write!(f, "{}", self.0);
        };
        let g = a.segments();
        let [.., a6, a7, a8, a9] = a.octets();
        let v4 = Ipv4Addr::new(a6, a7, a8, a9);
        match g {
            // RFC 5952 §5: an IPv4-mapped address (RFC 4291 §2.5.5.2) ends
            // in dotted decimal.
            [0, 0, 0, 0, 0, 0xffff, _, _] => return write!(f, "::ffff:{v4}"),
            // The deprecated IPv4-compatible form (RFC 4291 §2.5.5.1), as
            // bgpdump and inet_ntop print it; `::` and `::1` are not.
            [0, 0, 0, 0, 0, 0, _, _] if u32::from(v4) > 1 => return write!(f, "::{v4}"),
            _ => {}
        }
        let (mut best, mut best_len, mut i) = (usize::MAX, 0, 0);
        while i < 8 {
            if g[i] == 0 {
                let start = i;
                while i < 8 && g[i] == 0 {
                    i += 1;
                }
                if i - start > best_len {
                    best = start;
                    best_len = i - start;
                }
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < 8 {
            if i == best {
                f.write_str(if i == 0 { "::" } else { ":" })?;
                i += best_len;
                continue;
            }
            write!(f, "{:x}", g[i])?;
            if i < 7 {
                f.write_str(":")?;
            }
            i += 1;
        }
        Ok(())
    }
}

fn mp_next_hop(nh: &NextHop, attrs: &PathAttributes) -> Option<IpAddr> {
    nh.addr().or(attrs.next_hop.map(IpAddr::V4))
}

/// The attributes as displayed: AS4_PATH folded in for 2-octet sources
/// (RFC 6793 §4.2.3); a 4-octet source's AS4 attributes are ignored.
fn effective(a: &PathAttributes, four_octet: bool) -> PathAttributes {
    let mut a = a.clone();
    if four_octet {
        a.drop_as4();
    } else {
        a.normalize_as4();
    }
    a
}

#[allow(clippy::too_many_arguments)]
fn route_line(
    out: &mut String,
    head: &str,
    tag: &str,
    peer: Addr,
    peer_as: u32,
    route: NlriEntry,
    a: &PathAttributes,
    nh: Option<IpAddr>,
) {
    let path = a
        .as_path
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let origin = a
        .origin
        .map(|o| o.to_string())
        .unwrap_or_else(|| "INCOMPLETE".into());
    let nh = Addr(nh.unwrap_or(NO_NEXT_HOP));
    let comm = a
        .communities
        .as_ref()
        .map(|c| communities(c))
        .unwrap_or_default();
    let ag = if a.atomic_aggregate { "AG" } else { "NAG" };
    let aggr = a
        .rare()
        .aggregator
        .map(|g| format!("{} {}", g.asn, g.addr))
        .unwrap_or_default();
    let prefix = route.prefix;
    let _ = write!(
        out,
        "{head}|{tag}|{peer}|{peer_as}|{}/{}|",
        Addr(prefix.addr()),
        prefix.len()
    );
    if let Some(id) = route.path_id {
        let _ = write!(out, "{id}|");
    }
    let _ = writeln!(
        out,
        "{path}|{origin}|{nh}|{}|{}|{comm}|{ag}|{aggr}|",
        a.local_pref.unwrap_or(0),
        a.med.unwrap_or(0),
    );
}

/// Communities as bgpdump prints them: names for three well-known ones
/// (RFC 1997), `0:0` rather than Quagga's `internet`.
fn communities(c: &[crate::wire::attr::Community]) -> String {
    let mut s = String::new();
    for (i, x) in c.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        match x.0 {
            NO_EXPORT => s.push_str("no-export"),
            NO_ADVERTISE => s.push_str("no-advertise"),
            NO_EXPORT_SUBCONFED => s.push_str("local-AS"),
            v => {
                let _ = write!(s, "{}:{}", v >> 16, v & 0xffff);
            }
        }
    }
    s
}
