//! Pre-encoded BGP messages for the injectors (RFC 4271 §4), and the
//! monitor's minimal UPDATE reader.
//!
//! Everything is encoded before the clock starts, so a run streams bytes
//! and the injector's own cost is a `write` loop. Sessions always
//! negotiate 4-octet AS numbers (RFC 6793), so AS_PATH carries 4-octet
//! ASNs and no AS4_PATH is needed.

use super::table::{Attrs, Table};
use petrel_bgp::wire::Prefix;
use std::net::IpAddr;

/// RFC 4271 §4.1: the largest message without RFC 8654.
pub const MAX_MESSAGE: usize = 4096;
const HEADER: usize = 19;

/// A complete message: marker, length, type, body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + body.len());
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&((HEADER + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

pub fn keepalive() -> Vec<u8> {
    message(4, &[])
}

/// OPEN with hold time `hold`, capabilities multiprotocol IPv4 and IPv6
/// unicast (RFC 4760 §8) and 4-octet AS (RFC 6793 §3); AS_TRANS in
/// My Autonomous System when the ASN needs 32 bits.
pub fn open(asn: u32, router_id: [u8; 4], hold: u16) -> Vec<u8> {
    open_with(asn, router_id, hold, OpenOpts::default())
}

/// Optional capabilities of our OPEN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOpts {
    /// The graceful restart capability of a receiving speaker only (RFC
    /// 4724 §3: no <AFI, SAFI> entries, R = 0), so that a restarting DUT
    /// waits for our End-of-RIB before it sweeps (RFC 4724 §4.1).
    pub gr_helper: bool,
    /// The ADD-PATH capability (RFC 7911 §4, code 69): IPv4 unicast,
    /// Send/Receive 1 (we receive).
    pub add_path_receive: bool,
}

/// [`open`] with the capabilities `opts` asks for (graceful restart
/// before ADD-PATH when both).
pub fn open_with(asn: u32, router_id: [u8; 4], hold: u16, opts: OpenOpts) -> Vec<u8> {
    let my_as = if asn > 0xffff { 23456 } else { asn as u16 };
    let mut caps = Vec::new();
    for afi in [1u16, 2] {
        caps.extend_from_slice(&[1, 4]);
        caps.extend_from_slice(&afi.to_be_bytes());
        caps.extend_from_slice(&[0, 1]);
    }
    caps.extend_from_slice(&[65, 4]);
    caps.extend_from_slice(&asn.to_be_bytes());
    if opts.gr_helper {
        // Restart Flags 0, Restart Time 120 s (never used: we never restart).
        caps.extend_from_slice(&[64, 2]);
        caps.extend_from_slice(&120u16.to_be_bytes());
    }
    if opts.add_path_receive {
        caps.extend_from_slice(&[69, 4, 0, 1, 1, 1]);
    }
    let mut b = vec![4];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&router_id);
    // One optional parameter of type 2 (capabilities), RFC 5492 §4.
    b.push((caps.len() + 2) as u8);
    b.extend_from_slice(&[2, caps.len() as u8]);
    b.extend_from_slice(&caps);
    message(1, &b)
}

/// Whether an OPEN body says its sender sends ADD-PATH for IPv4 unicast
/// (RFC 7911 §4: Send/Receive 2 or 3); `None` if the body is malformed.
pub fn open_sends_add_path_v4(body: &[u8]) -> Option<bool> {
    let optlen = *body.get(9)? as usize;
    let mut params = body.get(10..10 + optlen)?;
    let mut sends = false;
    while let [kind, len, rest @ ..] = params {
        let v = rest.get(..*len as usize)?;
        if *kind == 2 {
            let mut caps = v;
            while let [code, clen, crest @ ..] = caps {
                let cv = crest.get(..*clen as usize)?;
                if *code == 69 {
                    sends |= cv
                        .chunks_exact(4)
                        .any(|t| t[..3] == [0, 1, 1] && t[3] & 2 != 0);
                }
                caps = &crest[*clen as usize..];
            }
        }
        params = &rest[*len as usize..];
    }
    Some(sends)
}

/// End-of-RIB (RFC 4724 §2): for IPv4 unicast an UPDATE with no
/// withdrawn routes and no attributes; for IPv6 unicast an empty
/// MP_UNREACH_NLRI.
pub fn end_of_rib(v6: bool) -> Vec<u8> {
    if v6 {
        let mut attrs = Vec::new();
        attr(&mut attrs, 0x80, 15, &[0, 2, 1]);
        update_v4(&attrs, &[])
    } else {
        message(2, &[0, 0, 0, 0])
    }
}

fn attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        // RFC 4271 §4.3: the Extended Length bit for a two-octet length.
        out.extend_from_slice(&[flags | 0x10, code]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

fn put_prefix(out: &mut Vec<u8>, p: &Prefix) {
    let len = p.len();
    out.push(len);
    let n = (len as usize).div_ceil(8);
    match p.addr() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

/// The path attributes of one UPDATE, without MP_REACH_NLRI: ORIGIN,
/// AS_PATH (`first` prepended `prepend + 1` times), NEXT_HOP for IPv4,
/// MED, LOCAL_PREF if given (an iBGP sender's, RFC 4271 §5.1.5), COMMUNITIES.
fn common_attrs(a: &Attrs, peer: &PeerView, id: u32) -> Vec<u8> {
    let (first, prepend, next_hop) = (peer.asn, (peer.prepend)(id), peer.next_hop);
    let mut out = Vec::with_capacity(64);
    attr(&mut out, 0x40, 1, &[a.origin]);
    let mut path: Vec<u32> = vec![first; prepend + 1];
    path.extend_from_slice(&a.path);
    let mut seg = Vec::with_capacity(2 + 4 * path.len());
    for chunk in path.chunks(255) {
        seg.extend_from_slice(&[2, chunk.len() as u8]);
        for asn in chunk {
            seg.extend_from_slice(&asn.to_be_bytes());
        }
    }
    attr(&mut out, 0x40, 2, &seg);
    if let IpAddr::V4(nh) = next_hop {
        attr(&mut out, 0x40, 3, &nh.octets());
    }
    if let Some(med) = a.med {
        attr(&mut out, 0x80, 4, &med.to_be_bytes());
    }
    if let Some(lp) = peer.local_pref {
        attr(&mut out, 0x40, 5, &lp.to_be_bytes());
    }
    if !a.communities.is_empty() {
        let c: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        attr(&mut out, 0xc0, 8, &c);
    }
    out
}

fn update_v4(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + attrs.len() + nlri.len());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    message(2, &b)
}

fn mp_reach_v6(next_hop: IpAddr, nlri: &[u8]) -> Vec<u8> {
    let IpAddr::V6(nh) = next_hop else {
        unreachable!("IPv6 routes get an IPv6 next hop")
    };
    let mut v = vec![0, 2, 1, 16];
    v.extend_from_slice(&nh.octets());
    v.push(0);
    v.extend_from_slice(nlri);
    let mut out = Vec::new();
    attr(&mut out, 0x80, 14, &v);
    out
}

/// How an injector's copy of a table differs from the others': its own AS
/// in front, repeated `1 + prepend(attr id)` times, and its next hop. An
/// iBGP injector (a route reflector's client) puts its external
/// neighbour's AS in front instead and sets LOCAL_PREF.
pub struct PeerView<'a> {
    pub asn: u32,
    pub local_pref: Option<u32>,
    pub next_hop: IpAddr,
    pub prepend: &'a dyn Fn(u32) -> usize,
}

/// The UPDATEs that announce `table` as one peer sends it: a message per
/// run of prefixes sharing an attribute set, split at 4096 octets.
pub fn announce(table: &Table, peer: &PeerView) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < table.len() {
        let id = table.attr_of[i];
        let mut j = i;
        while j < table.len() && table.attr_of[j] == id {
            j += 1;
        }
        let a = &table.attrs[id as usize];
        let base = common_attrs(a, peer, id);
        let v6 = peer.next_hop.is_ipv6();
        // Room for NLRI: header, the two length fields, MP_REACH's own
        // header (4) and fixed part (21).
        let room = MAX_MESSAGE - HEADER - 4 - base.len() - if v6 { 25 } else { 0 };
        let mut nlri = Vec::new();
        let flush = |nlri: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| {
            if nlri.is_empty() {
                return;
            }
            if v6 {
                let mut attrs = base.clone();
                attrs.extend_from_slice(&mp_reach_v6(peer.next_hop, nlri));
                out.push(update_v4(&attrs, &[]));
            } else {
                out.push(update_v4(&base, nlri));
            }
            nlri.clear();
        };
        for p in &table.prefixes[i..j] {
            if nlri.len() + 17 > room {
                flush(&mut nlri, &mut out);
            }
            put_prefix(&mut nlri, p);
        }
        flush(&mut nlri, &mut out);
        i = j;
    }
    out
}

/// One UPDATE announcing a single prefix (churn: one change per message).
pub fn announce_one(p: &Prefix, a: &Attrs, peer: &PeerView, id: u32) -> Vec<u8> {
    let base = common_attrs(a, peer, id);
    let mut nlri = Vec::new();
    put_prefix(&mut nlri, p);
    if peer.next_hop.is_ipv6() {
        let mut attrs = base;
        attrs.extend_from_slice(&mp_reach_v6(peer.next_hop, &nlri));
        update_v4(&attrs, &[])
    } else {
        update_v4(&base, &nlri)
    }
}

/// One UPDATE withdrawing a single IPv4 prefix (RFC 4271 §4.3: Withdrawn
/// Routes, no attributes).
pub fn withdraw_one_v4(p: &Prefix) -> Vec<u8> {
    let mut w = Vec::new();
    put_prefix(&mut w, p);
    let mut b = Vec::with_capacity(4 + w.len());
    b.extend_from_slice(&(w.len() as u16).to_be_bytes());
    b.extend_from_slice(&w);
    b.extend_from_slice(&[0, 0]);
    message(2, &b)
}

/// What one UPDATE body changes: prefixes announced and withdrawn, as
/// compact keys (see [`key`]). Only what the monitor needs: IPv4 fields
/// and MP_REACH/MP_UNREACH of IPv4/IPv6 unicast; `None` if malformed.
pub fn update_prefixes(body: &[u8], adv: &mut Vec<u128>, wd: &mut Vec<u128>) -> Option<()> {
    let wl = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let withdrawn = body.get(2..2 + wl)?;
    keys(withdrawn, false, wd)?;
    let p = 2 + wl;
    let al = u16::from_be_bytes([*body.get(p)?, *body.get(p + 1)?]) as usize;
    let mut attrs = body.get(p + 2..p + 2 + al)?;
    keys(body.get(p + 2 + al..)?, false, adv)?;
    while !attrs.is_empty() {
        let flags = attrs[0];
        let code = *attrs.get(1)?;
        let (len, hl) = if flags & 0x10 != 0 {
            (
                u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?]) as usize,
                4,
            )
        } else {
            (*attrs.get(2)? as usize, 3)
        };
        let v = attrs.get(hl..hl + len)?;
        match code {
            14 => {
                let v6 = u16::from_be_bytes([*v.first()?, *v.get(1)?]) == 2;
                let nhl = *v.get(3)? as usize;
                keys(v.get(4 + nhl + 1..)?, v6, adv)?;
            }
            15 => {
                let v6 = u16::from_be_bytes([*v.first()?, *v.get(1)?]) == 2;
                keys(v.get(3..)?, v6, wd)?;
            }
            _ => {}
        }
        attrs = &attrs[hl + len..];
    }
    Some(())
}

/// A prefix as one integer: address bits, then the length in the low
/// byte, and bit 127 for IPv6 (no IPv4 key has it).
pub fn key(addr: &[u8], len: u8, v6: bool) -> u128 {
    let mut a = [0u8; 16];
    a[..addr.len()].copy_from_slice(addr);
    let bits = u128::from_be_bytes(a);
    // A /128 would lose its last octet to the length byte: fold it in.
    (bits ^ (bits << 8)) ^ (len as u128) ^ ((v6 as u128) << 127)
}

/// Hashes [`key`]s so that a table arriving in address order is stored
/// nearly in order: prefixes of one length that follow each other in
/// address order go, sixteen at a time, to neighbouring buckets (one
/// hashbrown control group), and the groups are spread by a full mix.
/// With a general-purpose hash every route notification of a million-route
/// load was a cache and TLB miss in the watcher's map (~0.4 s of CPU per
/// load, on the cores the DUT shares with the harness;
/// docs/benchmarks/history.md, eleventh round). Only the harness's own
/// maps use it: their keys come from the DUT's routes, not from anyone
/// choosing collisions.
#[derive(Clone, Copy, Default)]
pub struct KeyHasher(u64);

/// A `BuildHasher` of [`KeyHasher`]s.
pub type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; anything else still gets a fair hash.
        for &b in bytes {
            self.0 = mix64(self.0 ^ b as u64);
        }
    }

    fn write_u128(&mut self, k: u128) {
        self.0 = ordered_hash(k);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A full 64-bit mix (MurmurHash3's finaliser).
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Undoes `x ^ (x << 8)` (in 64 bits).
fn unshift8(x: u64) -> u64 {
    let x = x ^ (x << 8);
    let x = x ^ (x << 16);
    x ^ (x << 32)
}

/// The hash of [`KeyHasher`]: the prefix's number among prefixes of its
/// length (its address's top `len` bits; for IPv6 of the first 64), the
/// low four bits kept, the rest mixed with the length and family.
fn ordered_hash(k: u128) -> u64 {
    let v6 = (k >> 127) as u64;
    let k = k & !(1 << 127);
    let len = (k & 0xff) as u32;
    let top = unshift8((k >> 64) as u64);
    let (n, rest) = if v6 == 0 {
        let a = top >> 32;
        (if len == 0 { 0 } else { a >> (32 - len.min(32)) }, 0)
    } else if len <= 64 {
        (if len == 0 { 0 } else { top >> (64 - len) }, 0)
    } else {
        (top, k as u64)
    };
    let group = mix64((n >> 4) ^ mix64(rest ^ (len as u64) << 1 ^ v6));
    group << 4 | (n & 15)
}

fn keys(mut nlri: &[u8], v6: bool, out: &mut Vec<u128>) -> Option<()> {
    while let Some((&len, rest)) = nlri.split_first() {
        let n = (len as usize).div_ceil(8);
        if len > if v6 { 128 } else { 32 } {
            return None;
        }
        out.push(key(rest.get(..n)?, len, v6));
        nlri = &rest[n..];
    }
    Some(())
}

/// The key of a prefix as [`key`] makes it.
pub fn prefix_key(p: &Prefix) -> u128 {
    let n = (p.len() as usize).div_ceil(8);
    match p.addr() {
        IpAddr::V4(a) => key(&a.octets()[..n], p.len(), false),
        IpAddr::V6(a) => key(&a.octets()[..n], p.len(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::synthetic;
    use super::*;
    use bytes::Bytes;
    use petrel_bgp::wire::{CodecContext, Update};
    use std::collections::HashSet;

    /// Consecutive prefixes of one length share a group of sixteen
    /// buckets; the groups, and prefixes of other lengths or families,
    /// are spread (no two of a few thousand share a hash).
    #[test]
    fn the_key_hash_keeps_neighbours_and_spreads_the_rest() {
        let h = |p: &str| ordered_hash(prefix_key(&p.parse().unwrap()));
        for (a, b) in [
            ("16.0.0.0/24", "16.0.1.0/24"),
            ("200.1.14.0/24", "200.1.15.0/24"),
            ("10.0.0.0/16", "10.1.0.0/16"),
            ("2001:db8::/48", "2001:db8:1::/48"),
        ] {
            assert_eq!(h(b), h(a) + 1, "{a} then {b}");
        }
        assert_ne!(h("16.0.15.0/24") + 1, h("16.0.16.0/24"), "a new group");
        let mut seen = HashSet::new();
        for i in 0..4096u32 {
            let [_, x, y, _] = (i << 8).to_be_bytes();
            for p in [
                format!("16.{x}.{y}.0/24"),
                format!("16.{x}.{y}.0/25"),
                format!("2001:db8:{x}:{y}::/64"),
                format!("2001:db8:{x}:{y}::1/128"),
            ] {
                assert!(seen.insert(h(&p)), "{p} shares a hash");
            }
        }
    }

    fn decode_all(msgs: &[Vec<u8>]) -> Vec<Prefix> {
        let ctx = CodecContext::four_octet();
        let mut out = Vec::new();
        for m in msgs {
            assert!(m.len() <= MAX_MESSAGE);
            assert_eq!(m[18], 2);
            let u = Update::decode(&ctx, &Bytes::copy_from_slice(&m[19..])).expect("decodes");
            assert!(u.errors.is_empty(), "{:?}", u.errors);
            assert!(u.attrs.as_path.is_some());
            out.extend(u.nlri.iter().map(|e| e.prefix));
            if let Some(mp) = &u.mp_reach {
                out.extend(mp.nlri.iter().map(|e| e.prefix));
            }
        }
        out
    }

    #[test]
    fn announcements_decode_to_the_table_with_petrels_codec() {
        for v6 in [false, true] {
            let t = synthetic(20_000, v6, 3);
            let nh: IpAddr = if v6 {
                "fd00::11".parse().unwrap()
            } else {
                "10.0.0.11".parse().unwrap()
            };
            let prepend = |id: u32| (id % 3) as usize;
            let msgs = announce(
                &t,
                &PeerView {
                    asn: 4_200_000_101,
                    local_pref: None,
                    next_hop: nh,
                    prepend: &prepend,
                },
            );
            assert_eq!(decode_all(&msgs), t.prefixes);
            // The monitor's reader agrees with the codec.
            let (mut adv, mut wd) = (Vec::new(), Vec::new());
            for m in &msgs {
                update_prefixes(&m[19..], &mut adv, &mut wd).expect("parses");
            }
            assert!(wd.is_empty());
            let want: Vec<u128> = t.prefixes.iter().map(prefix_key).collect();
            assert_eq!(adv, want);
            assert_eq!(adv.iter().collect::<HashSet<_>>().len(), t.len());
        }
    }

    #[test]
    fn long_runs_split_at_4096_octets() {
        let mut t = synthetic(3000, false, 1);
        t.attr_of.iter_mut().for_each(|a| *a = 0);
        let msgs = announce(
            &t,
            &PeerView {
                asn: 65001,
                local_pref: None,
                next_hop: "10.0.0.11".parse().unwrap(),
                prepend: &|_| 0,
            },
        );
        assert!(msgs.len() > 1 && msgs.iter().all(|m| m.len() <= MAX_MESSAGE));
        assert_eq!(decode_all(&msgs).len(), 3000);
    }

    #[test]
    fn open_carries_as_trans_and_the_capabilities() {
        let o = open(4_200_000_101, [10, 0, 0, 11], 180);
        // Header 19, fixed part 10, parameter header 2, three capabilities
        // of 6: type OPEN, version 4, AS_TRANS.
        assert_eq!(o.len(), 49);
        assert_eq!(&o[16..20], &[0, 49, 1, 4]);
        assert_eq!(&o[20..22], &23456u16.to_be_bytes());
        assert_eq!(&o[o.len() - 6..], &[65, 4, 0xfa, 0x56, 0xea, 0x65]);
    }

    #[test]
    fn add_path_receive_offered_and_send_recognised() {
        let ap = OpenOpts {
            add_path_receive: true,
            ..OpenOpts::default()
        };
        let o = open_with(4_200_000_101, [10, 0, 0, 11], 180, ap);
        assert_eq!(&o[o.len() - 6..], &[69, 4, 0, 1, 1, 1]);
        // Ours says receive (1): not a sender.
        assert_eq!(open_sends_add_path_v4(&o[19..]), Some(false));
        // A peer's: IPv6 send, then IPv4 send/receive (3).
        let mut b = o[19..o.len() - 6].to_vec();
        b.extend_from_slice(&[69, 8, 0, 2, 1, 2, 0, 1, 1, 3]);
        b[9] += 4;
        b[11] += 4;
        assert_eq!(open_sends_add_path_v4(&b), Some(true));
        assert_eq!(open_sends_add_path_v4(&b[..b.len() - 1]), None);
    }

    #[test]
    fn end_of_rib_and_the_helper_capability() {
        let ctx = CodecContext::four_octet();
        for v6 in [false, true] {
            let m = end_of_rib(v6);
            let u = Update::decode(&ctx, &Bytes::copy_from_slice(&m[19..])).unwrap();
            assert!(u.nlri.is_empty() && u.withdrawn.is_empty() && u.mp_reach.is_none());
        }
        assert_eq!(end_of_rib(false), message(2, &[0, 0, 0, 0]));
        // The helper's OPEN is the plain one plus capability 64, length 2.
        let helper = OpenOpts {
            gr_helper: true,
            ..OpenOpts::default()
        };
        let (a, b) = (open(65001, [1; 4], 9), open_with(65001, [1; 4], 9, helper));
        assert_eq!(b.len(), a.len() + 4);
        assert_eq!(&b[b.len() - 4..], &[64, 2, 0, 120]);
        // Both: graceful restart, then ADD-PATH.
        let both = OpenOpts {
            gr_helper: true,
            add_path_receive: true,
        };
        let c = open_with(65001, [1; 4], 9, both);
        assert_eq!(c.len(), a.len() + 10);
        assert_eq!(&c[c.len() - 10..], &[64, 2, 0, 120, 69, 4, 0, 1, 1, 1]);
        assert_eq!(open_sends_add_path_v4(&c[19..]), Some(false));
    }

    #[test]
    fn withdrawals_and_mp_unreach_are_read() {
        // Withdrawn 10.1.0.0/16; MP_UNREACH of 2a00::/16.
        let mut body = vec![0, 3, 16, 10, 1];
        let unreach = [0x80, 15, 6, 0, 2, 1, 16, 0x2a, 0x00];
        body.extend_from_slice(&(unreach.len() as u16).to_be_bytes());
        body.extend_from_slice(&unreach);
        let (mut adv, mut wd) = (Vec::new(), Vec::new());
        update_prefixes(&body, &mut adv, &mut wd).unwrap();
        assert!(adv.is_empty());
        assert_eq!(
            wd,
            vec![key(&[10, 1], 16, false), key(&[0x2a, 0], 16, true)]
        );
        assert_ne!(key(&[10, 1], 16, false), key(&[10, 1], 17, false));
    }

    #[test]
    fn a_one_prefix_withdrawal_reads_back() {
        let p: Prefix = "16.0.3.0/24".parse().unwrap();
        let m = withdraw_one_v4(&p);
        assert_eq!(m.len(), 19 + 2 + 4 + 2);
        let (mut adv, mut wd) = (Vec::new(), Vec::new());
        update_prefixes(&m[19..], &mut adv, &mut wd).unwrap();
        assert!(adv.is_empty());
        assert_eq!(wd, vec![key(&[16, 0, 3], 24, false)]);
    }
}
