//! rtnetlink messages, sans-IO: builders that append to a byte buffer and
//! parsers that borrow from one.
//!
//! Only what the FIB writer needs: RTM_NEWROUTE/DELROUTE/GETROUTE with the
//! attributes of `ip route` (dst, gateway or via, oif, table, priority,
//! metrics, multipath, nexthop id), kernel nexthop objects
//! (RTM_NEWNEXTHOP/DELNEXTHOP/GETNEXTHOP, include/uapi/linux/nexthop.h),
//! link and address notifications, and NLMSG_ERROR with the extended-ACK
//! message. Parsers never panic on what the kernel sends:
//! a short or malformed message is an error or is skipped.

use ipnet::IpNet;
use petrel_bgp::wire::Prefix;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;
/// On NLMSG_ERROR: TLVs (extended ACK) follow the echoed header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// On NLMSG_ERROR: the request's payload was not echoed (NETLINK_CAP_ACK).
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
/// u32: the kernel nexthop object the route uses (Linux 5.3).
const RTA_NH_ID: u16 = 30;
const RTAX_MTU: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub const RTN_UNICAST: u8 = 1;
pub const RTN_BLACKHOLE: u8 = 6;
const RT_SCOPE_UNIVERSE: u8 = 0;
/// On RTM_DELROUTE, "any scope": IPv4's fib_table_delete otherwise
/// matches only routes of the scope given (IPv6 has no route scope).
const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTNH_F_ONLINK: u8 = 4;
const RTNH_F_DEAD: u8 = 1;

// include/uapi/linux/nexthop.h: `struct nhmsg` { family, scope, protocol,
// resvd, u32 flags (RTNH_F_*) }, then these attributes.
const NHA_ID: u16 = 1;
/// An array of `struct nexthop_grp` { u32 id, u8 weight - 1, u8 weight's
/// high bits (6.12), u16 reserved }.
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
/// The kernel leaves `nh_family` unspecified for groups and blackholes.
const AF_UNSPEC: u8 = 0;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFF_UP: u32 = 1;
const IFF_RUNNING: u32 = 0x40;
const IFF_LOWER_UP: u32 = 0x1_0000;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// All 32 flag bits; the header's `ifa_flags` holds only the low 8.
const IFA_FLAGS: u16 = 8;
/// `ifa_flags` bits (linux/if_addr.h).
pub const IFA_F_TEMPORARY: u32 = 0x01;
pub const IFA_F_DADFAILED: u32 = 0x08;
pub const IFA_F_DEPRECATED: u32 = 0x20;
pub const IFA_F_TENTATIVE: u32 = 0x40;

/// The metric of the node's blackholes for its own blocks: high, so that a
/// connected route of the same prefix (the pods' bridge: metric 0 on IPv4,
/// 256 on IPv6) wins while it exists, and so that `NLM_F_REPLACE` of the
/// blackhole can never replace that connected route (same dst, tos and
/// metric is the kernel's identity of a route).
pub const BLACKHOLE_PRIORITY: u32 = 65535;

/// The common fields of every route this process writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteParams {
    pub protocol: u8,
    pub table: u32,
    /// RTAX_MTU; none when `None` or 0.
    pub mtu: Option<u32>,
    /// RTA_PRIORITY (the metric); the kernel's default when `None`.
    pub priority: Option<u32>,
}

/// One next hop as the kernel takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The gateway; an IPv6 one on an IPv4 route becomes RTA_VIA (RFC 8950).
    pub gateway: IpAddr,
    /// The outgoing interface; 0 lets the kernel resolve the gateway.
    pub ifindex: u32,
    /// RTNH_F_ONLINK: the gateway is on the link whatever the addresses say.
    pub onlink: bool,
}

/// What to install for a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind<'a> {
    Unicast(&'a [Hop]),
    Blackhole,
    /// A unicast route through kernel nexthop object `id` (RTA_NH_ID): no
    /// gateway, interface or multipath of its own.
    Nexthop(u32),
}

/// What a kernel nexthop object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NexthopKind<'a> {
    /// One hop; the kernel requires its interface (`ifindex` not 0).
    Hop(Hop),
    /// An ECMP group of other objects, each with its weight (1..=256).
    Group(&'a [(u32, u16)]),
    Blackhole,
}

/// Appends one netlink attribute (padded to 4 octets).
fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    buf.resize((buf.len() + 3) & !3, 0);
}

fn nest_begin(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&ty.to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Starts a message; returns its offset for [`end_msg`].
pub fn begin_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    at
}

pub fn end_msg(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Adds flags to an already written message header (NLM_F_ACK on the last
/// message of a batch).
pub fn add_flags(buf: &mut [u8], at: usize, flags: u16) {
    let old = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
    buf[at + 6..at + 8].copy_from_slice(&(old | flags).to_ne_bytes());
}

fn family_of(prefix: &Prefix) -> (u8, u8) {
    match prefix {
        Prefix::V4 { len, .. } => (AF_INET, *len),
        Prefix::V6 { len, .. } => (AF_INET6, *len),
    }
}

#[allow(clippy::too_many_arguments)]
fn rtmsg(buf: &mut Vec<u8>, family: u8, dst_len: u8, table: u32, protocol: u8, rtype: u8) {
    rtmsg_scoped(
        buf,
        family,
        dst_len,
        table,
        protocol,
        rtype,
        RT_SCOPE_UNIVERSE,
    )
}

fn rtmsg_scoped(
    buf: &mut Vec<u8>,
    family: u8,
    dst_len: u8,
    table: u32,
    protocol: u8,
    rtype: u8,
    scope: u8,
) {
    let rtm_table = if table < 256 { table as u8 } else { 0 };
    buf.extend_from_slice(&[family, dst_len, 0, 0, rtm_table, protocol, scope, rtype]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
}

fn put_dst(buf: &mut Vec<u8>, prefix: &Prefix) {
    match prefix {
        Prefix::V4 { addr, .. } => attr(buf, RTA_DST, &addr.octets()),
        Prefix::V6 { addr, .. } => attr(buf, RTA_DST, &addr.octets()),
    }
}

/// The gateway of a hop: RTA_GATEWAY in its own family, RTA_VIA (family +
/// address) for an IPv6 gateway of an IPv4 route.
fn put_gateway(buf: &mut Vec<u8>, route_family: u8, gw: &IpAddr) {
    match gw {
        IpAddr::V4(a) => attr(buf, RTA_GATEWAY, &a.octets()),
        IpAddr::V6(a) if route_family == AF_INET6 => attr(buf, RTA_GATEWAY, &a.octets()),
        IpAddr::V6(a) => {
            let mut via = [0u8; 18];
            via[..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
            via[2..].copy_from_slice(&a.octets());
            attr(buf, RTA_VIA, &via)
        }
    }
}

/// Appends an RTM_NEWROUTE with create + replace semantics.
pub fn put_new_route(
    buf: &mut Vec<u8>,
    seq: u32,
    p: &RouteParams,
    prefix: &Prefix,
    kind: RouteKind,
) -> usize {
    let at = begin_msg(
        buf,
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    );
    let (family, len) = family_of(prefix);
    let rtype = match kind {
        RouteKind::Unicast(_) | RouteKind::Nexthop(_) => RTN_UNICAST,
        RouteKind::Blackhole => RTN_BLACKHOLE,
    };
    rtmsg(buf, family, len, p.table, p.protocol, rtype);
    put_dst(buf, prefix);
    attr(buf, RTA_TABLE, &p.table.to_ne_bytes());
    let prio = match kind {
        RouteKind::Unicast(_) | RouteKind::Nexthop(_) => p.priority,
        RouteKind::Blackhole => Some(BLACKHOLE_PRIORITY),
    };
    if let Some(prio) = prio {
        attr(buf, RTA_PRIORITY, &prio.to_ne_bytes());
    }
    if let Some(mtu) = p.mtu.filter(|m| *m > 0) {
        let n = nest_begin(buf, RTA_METRICS);
        attr(buf, RTAX_MTU, &mtu.to_ne_bytes());
        nest_end(buf, n);
    }
    match kind {
        RouteKind::Blackhole => {}
        RouteKind::Nexthop(id) => attr(buf, RTA_NH_ID, &id.to_ne_bytes()),
        RouteKind::Unicast([hop]) => {
            put_gateway(buf, family, &hop.gateway);
            if hop.ifindex != 0 {
                attr(buf, RTA_OIF, &hop.ifindex.to_ne_bytes());
            }
            if hop.onlink {
                // rtm_flags carries RTNH_F_ONLINK for a single-hop route.
                let f = at + NLMSG_HDRLEN + 8;
                buf[f..f + 4].copy_from_slice(&(RTNH_F_ONLINK as u32).to_ne_bytes());
            }
        }
        RouteKind::Unicast(hops) => {
            let n = nest_begin(buf, RTA_MULTIPATH);
            for hop in hops {
                let h = buf.len();
                buf.extend_from_slice(&[0, 0]);
                buf.push(if hop.onlink { RTNH_F_ONLINK } else { 0 });
                buf.push(0); // rtnh_hops: weight - 1
                buf.extend_from_slice(&hop.ifindex.to_ne_bytes());
                put_gateway(buf, family, &hop.gateway);
                let l = (buf.len() - h) as u16;
                buf[h..h + 2].copy_from_slice(&l.to_ne_bytes());
            }
            nest_end(buf, n);
        }
    }
    end_msg(buf, at);
    at
}

/// Appends an RTM_DELROUTE for our route of `prefix` (the protocol makes
/// the kernel leave other protocols' routes of the same prefix alone).
/// `priority` is the metric of the route to delete; `None` matches any
/// (both IPv4 and IPv6 treat an absent metric as a wildcard on delete).
pub fn put_del_route(
    buf: &mut Vec<u8>,
    seq: u32,
    p: &RouteParams,
    prefix: &Prefix,
    priority: Option<u32>,
) -> usize {
    let at = begin_msg(buf, RTM_DELROUTE, NLM_F_REQUEST, seq);
    let (family, len) = family_of(prefix);
    // Any scope and any type: a stale route of our protocol from a dump
    // may be a link-scope route someone added by hand, which a universe
    // scope would not match (the kernel answers ESRCH, read as "gone").
    rtmsg_scoped(buf, family, len, p.table, p.protocol, 0, RT_SCOPE_NOWHERE);
    put_dst(buf, prefix);
    attr(buf, RTA_TABLE, &p.table.to_ne_bytes());
    if let Some(prio) = priority {
        attr(buf, RTA_PRIORITY, &prio.to_ne_bytes());
    }
    end_msg(buf, at);
    at
}

/// Appends an RTM_NEWNEXTHOP for object `id` of our protocol, with create
/// and replace semantics: an object of that id is changed in place, and
/// the routes using it follow.
pub fn put_new_nexthop(
    buf: &mut Vec<u8>,
    seq: u32,
    protocol: u8,
    id: u32,
    kind: NexthopKind,
) -> usize {
    let at = begin_msg(
        buf,
        RTM_NEWNEXTHOP,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    );
    let (family, flags) = match &kind {
        NexthopKind::Hop(h) if h.gateway.is_ipv4() => (AF_INET, h.onlink),
        NexthopKind::Hop(h) => (AF_INET6, h.onlink),
        _ => (AF_UNSPEC, false),
    };
    let flags = if flags { RTNH_F_ONLINK as u32 } else { 0 };
    buf.extend_from_slice(&[family, 0, protocol, 0]);
    buf.extend_from_slice(&flags.to_ne_bytes());
    attr(buf, NHA_ID, &id.to_ne_bytes());
    match kind {
        NexthopKind::Hop(h) => {
            match h.gateway {
                IpAddr::V4(a) => attr(buf, NHA_GATEWAY, &a.octets()),
                IpAddr::V6(a) => attr(buf, NHA_GATEWAY, &a.octets()),
            }
            attr(buf, NHA_OIF, &h.ifindex.to_ne_bytes());
        }
        NexthopKind::Group(members) => {
            let mut g = Vec::with_capacity(members.len() * 8);
            for (m, w) in members {
                let w = w.clamp(&1, &256) - 1;
                g.extend_from_slice(&m.to_ne_bytes());
                g.push(w as u8);
                g.push((w >> 8) as u8);
                g.extend_from_slice(&[0, 0]);
            }
            attr(buf, NHA_GROUP, &g);
        }
        NexthopKind::Blackhole => attr(buf, NHA_BLACKHOLE, &[]),
    }
    end_msg(buf, at);
    at
}

/// Appends an RTM_DELNEXTHOP of object `id`. The kernel deletes the routes
/// using it with it, and drops it from the groups it is a member of.
pub fn put_del_nexthop(buf: &mut Vec<u8>, seq: u32, id: u32) -> usize {
    let at = begin_msg(buf, RTM_DELNEXTHOP, NLM_F_REQUEST, seq);
    buf.extend_from_slice(&[AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0]);
    attr(buf, NHA_ID, &id.to_ne_bytes());
    end_msg(buf, at);
    at
}

/// Appends a dump request of every nexthop object (the kernel filters only
/// by device or group, not by protocol: the caller does).
pub fn put_nexthop_dump(buf: &mut Vec<u8>, seq: u32) {
    let at = begin_msg(buf, RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, seq);
    buf.extend_from_slice(&[AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0]);
    end_msg(buf, at);
}

/// Appends a route dump request, filtered by the kernel on protocol and
/// table when strict checking is on (NETLINK_GET_STRICT_CHK).
pub fn put_route_dump(buf: &mut Vec<u8>, seq: u32, v6: bool, protocol: u8, table: u32) {
    let at = begin_msg(buf, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let family = if v6 { AF_INET6 } else { AF_INET };
    rtmsg(buf, family, 0, table, protocol, 0);
    attr(buf, RTA_TABLE, &table.to_ne_bytes());
    end_msg(buf, at);
}

/// Appends a link or address dump request.
pub fn put_dump(buf: &mut Vec<u8>, seq: u32, ty: u16) {
    let at = begin_msg(buf, ty, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let body = if ty == RTM_GETLINK { 16 } else { 8 };
    buf.resize(buf.len() + body, 0);
    end_msg(buf, at);
}

/// One netlink message borrowed from a receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// The sender's port id: for notifications, the port of the socket whose
    /// request caused them (0 for the kernel's own changes).
    pub port: u32,
    pub payload: &'a [u8],
}

/// The messages of one datagram. Stops at the first malformed header.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let m = Msg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            port: u32::from_ne_bytes(buf[12..16].try_into().ok()?),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some(m)
    })
}

/// The attributes of a payload after its fixed header. Stops at the first
/// malformed one.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let data = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((ty, data))
    })
}

/// An NLMSG_ERROR: an ACK when `errno` is 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// Positive errno (the kernel sends it negated).
    pub errno: i32,
    /// The extended-ACK text (NETLINK_EXT_ACK), when the kernel gave one.
    pub message: Option<String>,
}

pub fn parse_error(m: &Msg) -> Option<ErrorMsg> {
    let p = m.payload;
    let errno = -i32::from_ne_bytes(p.get(0..4)?.try_into().ok()?);
    let mut message = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request: its header only when capped, else all of it.
        let echoed = if m.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            p.get(4..8)
                .map(|l| u32::from_ne_bytes(l.try_into().unwrap_or([0; 4])) as usize)
                .unwrap_or(NLMSG_HDRLEN)
        };
        let tlvs = p.get(4 + ((echoed + 3) & !3)..).unwrap_or(&[]);
        for (ty, data) in attrs(tlvs) {
            if ty == NLMSGERR_ATTR_MSG {
                let s = data.split(|b| *b == 0).next().unwrap_or(&[]);
                message = Some(String::from_utf8_lossy(s).into_owned());
            }
        }
    }
    Some(ErrorMsg { errno, message })
}

/// A route as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    pub prefix: Prefix,
    pub table: u32,
    pub protocol: u8,
    pub rtype: u8,
    pub priority: Option<u32>,
    pub mtu: Option<u32>,
    /// One entry per next hop (several for a multipath route). A route by
    /// nexthop object has the object's hops expanded here by the kernel.
    pub hops: Vec<Hop>,
    /// RTA_NH_ID: the nexthop object the route uses.
    pub nh_id: Option<u32>,
}

fn ip_from(family: u8, data: &[u8]) -> Option<IpAddr> {
    match (family, data.len()) {
        (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
        (AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
        _ => None,
    }
}

fn via(data: &[u8]) -> Option<IpAddr> {
    let fam = u16::from_ne_bytes(data.get(0..2)?.try_into().ok()?);
    ip_from(fam as u8, data.get(2..)?)
}

fn u32_of(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(0..4)?.try_into().ok()?))
}

/// Parses an RTM_NEWROUTE/DELROUTE payload; `None` for anything that is not
/// an IPv4 or IPv6 route with a well-formed destination.
pub fn parse_route(payload: &[u8]) -> Option<KernelRoute> {
    let h = payload.get(0..12)?;
    let (family, dst_len, rtm_table, protocol, rtype) = (h[0], h[1], h[4], h[5], h[7]);
    let rtm_flags = u32::from_ne_bytes(h[8..12].try_into().ok()?);
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let mut r = KernelRoute {
        prefix: Prefix::new(
            if family == AF_INET {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
            dst_len,
        )?,
        table: rtm_table as u32,
        protocol,
        rtype,
        priority: None,
        mtu: None,
        hops: Vec::new(),
        nh_id: None,
    };
    let mut single = Hop {
        gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ifindex: 0,
        onlink: rtm_flags & RTNH_F_ONLINK as u32 != 0,
    };
    let mut have_gw = false;
    for (ty, data) in attrs(&payload[12..]) {
        match ty {
            RTA_DST => r.prefix = Prefix::new(ip_from(family, data)?, dst_len)?,
            RTA_TABLE => r.table = u32_of(data)?,
            RTA_PRIORITY => r.priority = u32_of(data),
            RTA_OIF => single.ifindex = u32_of(data).unwrap_or(0),
            RTA_GATEWAY => {
                if let Some(g) = ip_from(family, data) {
                    single.gateway = g;
                    have_gw = true;
                }
            }
            RTA_VIA => {
                if let Some(g) = via(data) {
                    single.gateway = g;
                    have_gw = true;
                }
            }
            RTA_METRICS => {
                for (mt, md) in attrs(data) {
                    if mt == RTAX_MTU {
                        r.mtu = u32_of(md);
                    }
                }
            }
            RTA_MULTIPATH => r.hops = parse_multipath(family, data),
            RTA_NH_ID => r.nh_id = u32_of(data),
            _ => {}
        }
    }
    if r.hops.is_empty() && (have_gw || single.ifindex != 0) {
        r.hops.push(single);
    }
    Some(r)
}

fn parse_multipath(family: u8, mut data: &[u8]) -> Vec<Hop> {
    let mut hops = Vec::new();
    while data.len() >= 8 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        if len < 8 || len > data.len() {
            break;
        }
        let flags = data[2];
        let mut hop = Hop {
            gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ifindex: u32::from_ne_bytes([data[4], data[5], data[6], data[7]]),
            onlink: flags & RTNH_F_ONLINK != 0,
        };
        for (ty, d) in attrs(&data[8..len]) {
            match ty {
                RTA_GATEWAY => hop.gateway = ip_from(family, d).unwrap_or(hop.gateway),
                RTA_VIA => hop.gateway = via(d).unwrap_or(hop.gateway),
                _ => {}
            }
        }
        if flags & RTNH_F_DEAD == 0 || hop.gateway != IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
            hops.push(hop);
        }
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    hops
}

/// A nexthop object as the kernel reports it (RTM_NEWNEXTHOP/DELNEXTHOP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelNexthop {
    pub id: u32,
    pub protocol: u8,
    /// The hop of a single-hop object (`None` for groups and blackholes).
    pub hop: Option<Hop>,
    /// The members of a group, with their weights (1..=65536).
    pub group: Vec<(u32, u32)>,
    pub blackhole: bool,
}

/// Parses an RTM_NEWNEXTHOP/DELNEXTHOP payload; `None` without an id.
pub fn parse_nexthop(payload: &[u8]) -> Option<KernelNexthop> {
    let h = payload.get(0..8)?;
    let (family, protocol) = (h[0], h[2]);
    let flags = u32::from_ne_bytes(h[4..8].try_into().ok()?);
    let mut id = None;
    let mut nh = KernelNexthop {
        id: 0,
        protocol,
        hop: None,
        group: Vec::new(),
        blackhole: false,
    };
    let (mut gateway, mut ifindex) = (None, 0);
    for (ty, data) in attrs(&payload[8..]) {
        match ty {
            NHA_ID => id = u32_of(data),
            NHA_OIF => ifindex = u32_of(data).unwrap_or(0),
            NHA_GATEWAY => gateway = ip_from(family, data),
            NHA_BLACKHOLE => nh.blackhole = true,
            NHA_GROUP => {
                nh.group = data
                    .chunks_exact(8)
                    .map(|e| {
                        let m = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
                        (m, (u32::from(e[5]) << 8 | u32::from(e[4])) + 1)
                    })
                    .collect()
            }
            _ => {}
        }
    }
    nh.id = id.filter(|i| *i != 0)?;
    if let Some(gateway) = gateway {
        nh.hop = Some(Hop {
            gateway,
            ifindex,
            onlink: flags & RTNH_F_ONLINK as u32 != 0,
        });
    }
    Some(nh)
}

/// An interface from RTM_NEWLINK/DELLINK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    pub mtu: u32,
    /// IFF_UP (administratively up).
    pub up: bool,
    /// IFF_LOWER_UP or IFF_RUNNING: the link has carrier. Without either,
    /// the kernel flushes the link's nexthop objects and the routes using
    /// them (nexthop.c, NETDEV_CHANGE), silently, as for a link set down.
    pub carrier: bool,
}

impl LinkInfo {
    /// Up with carrier: routes over the link can be installed and stay.
    pub fn usable(&self) -> bool {
        self.up && self.carrier
    }
}

pub fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    let h = payload.get(0..16)?;
    let mut l = LinkInfo {
        ifindex: u32::from_ne_bytes(h[4..8].try_into().ok()?),
        name: String::new(),
        mtu: 0,
        up: u32::from_ne_bytes(h[8..12].try_into().ok()?) & IFF_UP != 0,
        carrier: u32::from_ne_bytes(h[8..12].try_into().ok()?) & (IFF_RUNNING | IFF_LOWER_UP) != 0,
    };
    for (ty, data) in attrs(&payload[16..]) {
        match ty {
            IFLA_IFNAME => {
                let s = data.split(|b| *b == 0).next().unwrap_or(&[]);
                l.name = String::from_utf8_lossy(s).into_owned();
            }
            IFLA_MTU => l.mtu = u32_of(data).unwrap_or(0),
            _ => {}
        }
    }
    Some(l)
}

/// An address from RTM_NEWADDR/DELADDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    pub ifindex: u32,
    pub net: IpNet,
    /// `IFA_F_*`.
    pub flags: u32,
}

pub fn parse_addr(payload: &[u8]) -> Option<AddrInfo> {
    let h = payload.get(0..8)?;
    let (family, plen) = (h[0], h[1]);
    let mut flags = u32::from(h[2]);
    let ifindex = u32::from_ne_bytes(h[4..8].try_into().ok()?);
    let (mut local, mut address) = (None, None);
    for (ty, data) in attrs(&payload[8..]) {
        match ty {
            IFA_LOCAL => local = ip_from(family, data),
            IFA_ADDRESS => address = ip_from(family, data),
            IFA_FLAGS => flags = u32_of(data).unwrap_or(flags),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on point-to-point links.
    let addr = local.or(address)?;
    Some(AddrInfo {
        ifindex,
        net: IpNet::new(addr, plen).ok()?,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ifinfomsg's flags give admin state and
    /// carrier; a link without IFF_LOWER_UP and IFF_RUNNING is not usable.
    #[test]
    fn link_flags_give_admin_state_and_carrier() {
        let msg = |flags: u32| {
            let mut m = vec![0u8; 16];
            m[4..8].copy_from_slice(&3u32.to_ne_bytes());
            m[8..12].copy_from_slice(&flags.to_ne_bytes());
            m
        };
        let l = parse_link(&msg(IFF_UP | IFF_RUNNING | IFF_LOWER_UP)).unwrap();
        assert!(l.up && l.carrier && l.usable());
        let l = parse_link(&msg(IFF_UP)).unwrap(); // NO-CARRIER
        assert!(l.up && !l.carrier && !l.usable());
        let l = parse_link(&msg(IFF_LOWER_UP)).unwrap();
        assert!(!l.up && !l.usable());
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    const PARAMS: RouteParams = RouteParams {
        protocol: 202,
        table: 254,
        mtu: Some(1450),
        priority: None,
    };

    #[test]
    fn new_route_v4_bytes() {
        let mut buf = Vec::new();
        let hop = Hop {
            gateway: "192.0.2.1".parse().unwrap(),
            ifindex: 0,
            onlink: false,
        };
        put_new_route(
            &mut buf,
            7,
            &PARAMS,
            &p("10.1.2.0/24"),
            RouteKind::Unicast(&[hop]),
        );
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &64u32.to_ne_bytes()[..], &24u16.to_ne_bytes(), &0x501u16.to_ne_bytes(),
            &7u32.to_ne_bytes(), &[0, 0, 0, 0],
            // rtmsg: inet /24, table main, proto 202, universe, unicast
            &[2, 24, 0, 0, 254, 202, 0, 1, 0, 0, 0, 0],
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[10, 1, 2, 0],
            &8u16.to_ne_bytes(), &15u16.to_ne_bytes(), &254u32.to_ne_bytes(),
            &12u16.to_ne_bytes(), &8u16.to_ne_bytes(),
            &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), &1450u32.to_ne_bytes(),
            &8u16.to_ne_bytes(), &5u16.to_ne_bytes(), &[192, 0, 2, 1],
        ]
        .concat();
        assert_eq!(buf, want);
        // And it parses back as the kernel would report it.
        let m = messages(&buf).next().unwrap();
        let r = parse_route(m.payload).unwrap();
        assert_eq!(r.prefix, p("10.1.2.0/24"));
        assert_eq!((r.table, r.protocol, r.mtu), (254, 202, Some(1450)));
        assert_eq!(r.hops, vec![hop]);
    }

    #[test]
    fn multipath_v6_and_via_round_trip() {
        let hops = [
            Hop {
                gateway: "fe80::1".parse().unwrap(),
                ifindex: 3,
                onlink: true,
            },
            Hop {
                gateway: "2001:db8::2".parse().unwrap(),
                ifindex: 0,
                onlink: false,
            },
        ];
        let mut buf = Vec::new();
        put_new_route(
            &mut buf,
            1,
            &PARAMS,
            &p("fd00::/48"),
            RouteKind::Unicast(&hops),
        );
        let via4 = [Hop {
            gateway: "2001:db8::9".parse().unwrap(),
            ifindex: 2,
            onlink: false,
        }];
        put_new_route(
            &mut buf,
            2,
            &PARAMS,
            &p("10.0.0.0/8"),
            RouteKind::Unicast(&via4),
        );
        let ms: Vec<_> = messages(&buf).collect();
        assert_eq!(ms.len(), 2);
        let r = parse_route(ms[0].payload).unwrap();
        assert_eq!(r.hops, hops);
        let r = parse_route(ms[1].payload).unwrap();
        assert_eq!(r.hops, via4);
        assert_eq!(ms[1].seq, 2);
    }

    #[test]
    fn blackhole_and_delete() {
        let mut buf = Vec::new();
        let params = RouteParams {
            table: 1000,
            mtu: None,
            priority: Some(20),
            ..PARAMS
        };
        put_new_route(
            &mut buf,
            1,
            &params,
            &p("10.9.0.0/26"),
            RouteKind::Blackhole,
        );
        put_del_route(&mut buf, 2, &params, &p("10.9.0.0/26"), params.priority);
        let ms: Vec<_> = messages(&buf).collect();
        let r = parse_route(ms[0].payload).unwrap();
        assert_eq!(
            (r.rtype, r.table, r.priority),
            (RTN_BLACKHOLE, 1000, Some(BLACKHOLE_PRIORITY))
        );
        assert!(r.hops.is_empty());
        assert_eq!(ms[1].ty, RTM_DELROUTE);
        assert_eq!(parse_route(ms[1].payload).unwrap().protocol, 202);
        // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type.
        assert_eq!(
            (ms[1].payload[6], ms[1].payload[7]),
            (RT_SCOPE_NOWHERE, 0),
            "a delete matches any scope and type"
        );
        assert_eq!(ms[0].payload[6], RT_SCOPE_UNIVERSE);
    }

    /// The bytes of `ip nexthop add id 1000002 via 192.0.2.1 dev <3> onlink
    /// proto 202` (nhmsg and NHA_* per include/uapi/linux/nexthop.h).
    #[test]
    fn new_nexthop_v4_bytes() {
        let hop = Hop {
            gateway: "192.0.2.1".parse().unwrap(),
            ifindex: 3,
            onlink: true,
        };
        let mut buf = Vec::new();
        put_new_nexthop(&mut buf, 5, 202, 1_000_002, NexthopKind::Hop(hop));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &48u32.to_ne_bytes()[..], &104u16.to_ne_bytes(), &0x501u16.to_ne_bytes(),
            &5u32.to_ne_bytes(), &[0, 0, 0, 0],
            // nhmsg: inet, scope 0, proto 202, resvd; flags RTNH_F_ONLINK
            &[2, 0, 202, 0], &4u32.to_ne_bytes(),
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &1_000_002u32.to_ne_bytes(),
            &8u16.to_ne_bytes(), &6u16.to_ne_bytes(), &[192, 0, 2, 1],
            &8u16.to_ne_bytes(), &5u16.to_ne_bytes(), &3u32.to_ne_bytes(),
        ]
        .concat();
        assert_eq!(buf, want);
        let m = messages(&buf).next().unwrap();
        let nh = parse_nexthop(m.payload).unwrap();
        assert_eq!((nh.id, nh.protocol, nh.hop), (1_000_002, 202, Some(hop)));
        assert!(nh.group.is_empty() && !nh.blackhole);
    }

    /// `ip nexthop add id 9 group 7/8,3`: struct nexthop_grp entries carry
    /// weight - 1; the family is unspecified.
    #[test]
    fn nexthop_group_blackhole_and_delete() {
        let mut buf = Vec::new();
        put_new_nexthop(&mut buf, 1, 202, 9, NexthopKind::Group(&[(7, 1), (8, 3)]));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &52u32.to_ne_bytes()[..], &104u16.to_ne_bytes(), &0x501u16.to_ne_bytes(),
            &1u32.to_ne_bytes(), &[0, 0, 0, 0],
            &[0, 0, 202, 0], &0u32.to_ne_bytes(),
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &9u32.to_ne_bytes(),
            &20u16.to_ne_bytes(), &2u16.to_ne_bytes(),
            &7u32.to_ne_bytes(), &[0, 0, 0, 0], &8u32.to_ne_bytes(), &[2, 0, 0, 0],
        ]
        .concat();
        assert_eq!(buf, want);
        put_new_nexthop(&mut buf, 2, 202, 10, NexthopKind::Blackhole);
        put_del_nexthop(&mut buf, 3, 9);
        let ms: Vec<_> = messages(&buf).collect();
        let g = parse_nexthop(ms[0].payload).unwrap();
        assert_eq!(
            (g.id, g.group.as_slice(), g.hop),
            (9, &[(7, 1), (8, 3)][..], None)
        );
        let b = parse_nexthop(ms[1].payload).unwrap();
        assert!(b.blackhole && b.hop.is_none());
        assert_eq!((ms[2].ty, ms[2].flags), (RTM_DELNEXTHOP, NLM_F_REQUEST));
        assert_eq!(parse_nexthop(ms[2].payload).unwrap().id, 9);
    }

    /// A route by nexthop id carries RTA_NH_ID and RTAX_MTU, no gateway.
    #[test]
    fn route_by_nexthop_id() {
        let mut buf = Vec::new();
        put_new_route(
            &mut buf,
            4,
            &PARAMS,
            &p("10.1.0.0/16"),
            RouteKind::Nexthop(1_000_002),
        );
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &64u32.to_ne_bytes()[..], &24u16.to_ne_bytes(), &0x501u16.to_ne_bytes(),
            &4u32.to_ne_bytes(), &[0, 0, 0, 0],
            &[2, 16, 0, 0, 254, 202, 0, 1, 0, 0, 0, 0],
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[10, 1, 0, 0],
            &8u16.to_ne_bytes(), &15u16.to_ne_bytes(), &254u32.to_ne_bytes(),
            &12u16.to_ne_bytes(), &8u16.to_ne_bytes(),
            &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), &1450u32.to_ne_bytes(),
            &8u16.to_ne_bytes(), &30u16.to_ne_bytes(), &1_000_002u32.to_ne_bytes(),
        ]
        .concat();
        assert_eq!(buf, want);
        let r = parse_route(messages(&buf).next().unwrap().payload).unwrap();
        assert_eq!((r.nh_id, r.mtu), (Some(1_000_002), Some(1450)));
        assert!(r.hops.is_empty());
    }

    #[test]
    fn error_with_extended_ack() {
        // NLMSG_ERROR, flags CAPPED|ACK_TLVS, seq 9: -ENETUNREACH, the echoed
        // header, then NLMSGERR_ATTR_MSG "Nexthop has invalid gateway".
        let text = b"Nexthop has invalid gateway\0";
        let mut payload = Vec::new();
        payload.extend_from_slice(&(-101i32).to_ne_bytes());
        payload.extend_from_slice(&[0u8; 16]);
        attr(&mut payload, NLMSGERR_ATTR_MSG, text);
        let mut buf = Vec::new();
        let at = begin_msg(&mut buf, NLMSG_ERROR, 0x300, 9);
        buf.extend_from_slice(&payload);
        end_msg(&mut buf, at);
        let m = messages(&buf).next().unwrap();
        assert_eq!(m.seq, 9);
        let e = parse_error(&m).unwrap();
        assert_eq!(e.errno, 101);
        assert_eq!(e.message.as_deref(), Some("Nexthop has invalid gateway"));
    }

    #[test]
    fn address_flags_from_the_header_and_from_ifa_flags() {
        // ifaddrmsg: family, prefixlen, flags, scope, index.
        let msg = |flags8: u8, extra: Option<u32>| {
            let mut b = vec![AF_INET6, 64, flags8, 0];
            b.extend_from_slice(&7u32.to_ne_bytes());
            let a: Ipv6Addr = "fd00:99::11".parse().unwrap();
            attr(&mut b, IFA_ADDRESS, &a.octets());
            if let Some(f) = extra {
                attr(&mut b, IFA_FLAGS, &f.to_ne_bytes());
            }
            b
        };
        let a = parse_addr(&msg(IFA_F_TEMPORARY as u8, None)).unwrap();
        assert_eq!(a.ifindex, 7);
        assert_eq!(a.net, "fd00:99::11/64".parse::<IpNet>().unwrap());
        assert_eq!(a.flags, IFA_F_TEMPORARY);
        // IFA_FLAGS carries all 32 bits and wins over the header's 8.
        let a = parse_addr(&msg(0, Some(IFA_F_DEPRECATED | 0x200))).unwrap();
        assert_eq!(a.flags, IFA_F_DEPRECATED | 0x200);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 12345;
        for n in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(n % 97) {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                buf.push((x >> 16) as u8);
            }
            if buf.len() >= 4 {
                let l = (buf.len() as u32).to_ne_bytes();
                buf[..4].copy_from_slice(&l);
            }
            for m in messages(&buf) {
                let _ = parse_route(m.payload);
                let _ = parse_link(m.payload);
                let _ = parse_addr(m.payload);
                let _ = parse_nexthop(m.payload);
                let _ = parse_error(&m);
            }
            let _ = parse_route(&buf);
            let _ = parse_link(&buf);
        }
    }
}
