//! The RIB: Adj-RIB-In, Loc-RIB with the decision process, and Adj-RIB-Out
//! with update groups (RFC 4271 §3.2, §9), sans-IO.
//!
//! [`Rib`] is a plain value. The session driver feeds it what happened
//! (a peer came up or went down, an UPDATE arrived, a graceful-restart timer
//! fired, the operator originated a prefix) and gets back an [`Output`]: the
//! Loc-RIB changes for the FIB stream and the encoded UPDATE messages to
//! send, per peer. It owns no socket, timer or task, so every rule is tested
//! with plain values and the same code runs in the daemon and in simulations.
//!
//! The design in brief:
//! - Attributes are interned ([`attrs`]): routes with equal attributes share
//!   one `Arc`, and equality is a pointer comparison.
//! - One table keyed by prefix holds every path ([`loc`]); each path keeps
//!   its pre-policy attributes (soft reconfiguration without ROUTE-REFRESH),
//!   its import result and its graceful-restart state ([`adj_in`]).
//! - [`decision`] ranks paths (RFC 4271 §9.1.2, RFC 4456 §9, RFC 9494) and
//!   picks the ECMP set; every change of a prefix's selection becomes a
//!   [`LocRibChange`].
//! - Peers whose outbound treatment is identical share an update group
//!   ([`adj_out`]); a group exports each change once (and the route it
//!   replaced, which is what the group had advertised: it keeps no table of
//!   its own), and encodes each UPDATE once for all its members. Groups
//!   whose peers receive several paths per prefix (ADD-PATH, RFC 7911) do
//!   keep what they sent, with each path's identifier ([`add_path`]).
//!
//! Memory: a prefix with one path costs one ordered-map entry (an 8-byte
//! packed key for IPv4, `rib::prefix_map`, whose trees are rebuilt with
//! full nodes each time they double; a 16-byte value, the path inline: the
//! attributes' `Arc`, path id, peer and flags, the pre-policy attributes
//! hanging off the post-policy set when policy changed them) and nothing
//! else of its own; 1M IPv4 /24s from one peer with 1000 attribute sets
//! measure 38 bytes per route for Adj-RIB-In and Loc-RIB together, update
//! groups adding nothing (`rib::memory`, an ignored test run with
//! `--release`; 83 and 151 at the start of issue 6's memory work).
//!
//! Driving it, call by call (each returns an [`Output`] unless noted):
//!
//! | the driver saw | call |
//! |---|---|
//! | a peer configured / removed | [`Rib::add_peer`] (→ `PeerId`), [`Rib::remove_peer`] |
//! | its policy or RR/next-hop settings changed | [`Rib::set_peer_config`] (soft: no reset) |
//! | the session reached Established | [`Rib::peer_up`] with the negotiated [`Session`] |
//! | an UPDATE (End-of-RIB included) | [`Rib::receive`] |
//! | the session went down | [`Rib::peer_down`] with the families to keep as stale (GR) |
//! | the peer's restart timer fired | [`Rib::restart_timer_expired`] with its LLGR families |
//! | the long-lived stale timer fired | [`Rib::llgr_timer_expired`] |
//! | a ROUTE-REFRESH request | [`Rib::refresh`] |
//! | we restarted (GR) | [`Rib::defer_advertisements`], later [`Rib::end_deferral`] |
//! | the operator originates / withdraws | [`Rib::originate`], [`Rib::withdraw`] |
//! | IGP / next-hop reachability changed | [`Rib::set_next_hop_cost`], [`Rib::next_hops_changed`] |
//!
//! `Output::changes` is the FIB stream (locally originated routes carry
//! [`PeerId::LOCAL`] and an unspecified next hop: nothing to install);
//! `Output::messages` are whole UPDATEs to write to each peer's socket, in
//! order. Reads for `show` and metrics: [`Rib::best_routes`], [`Rib::best`],
//! [`Rib::adj_rib_in`], [`Rib::adj_rib_out`], [`Rib::counters`],
//! [`Rib::groups`], [`Rib::rejection`].
//!
//! ```
//! use petrel_bgp::rib::{PeerConfig, Rib, RibConfig, Session};
//! use petrel_bgp::wire::{CodecContext, Family, PathAttributes};
//! use std::net::Ipv4Addr;
//!
//! let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1)));
//! let peer = rib.add_peer(PeerConfig::new("192.0.2.2".parse().unwrap(), 64513)).unwrap();
//! // The FSM reached Established: tell the RIB what was negotiated.
//! let out = rib.peer_up(peer, Session {
//!     router_id: Ipv4Addr::new(10, 0, 0, 2),
//!     codec: CodecContext::four_octet(),
//!     families: vec![Family::IPV4_UNICAST],
//!     local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
//!     local_v6: None,
//!     llgr: false,
//! });
//! // The initial table (empty here) and End-of-RIB, ready to send.
//! assert_eq!(out.messages.len(), 1);
//! // Originate a prefix: one Loc-RIB change, one UPDATE to the peer.
//! let out = rib.originate("10.1.0.0/24".parse().unwrap(), PathAttributes::default());
//! assert_eq!(out.changes.len(), 1);
//! assert_eq!(out.messages.len(), 1);
//! // A received UPDATE: `rib.receive(peer, &update)`; the session dropped:
//! // `rib.peer_down(peer, &[])` (or the families to keep as stale under
//! // graceful restart), and so on.
//! ```

pub mod add_path;
pub mod adj_in;
pub mod adj_out;
pub mod attrs;
pub mod decision;
mod fxhash;
pub mod loc;
mod prefix_map;
pub mod show;

pub use add_path::{AddPathConfig, SendMode};
pub use adj_in::Undecided;
pub use adj_out::{GroupInfo, NextHopMode};
pub use attrs::{AttrSet, AttrTable};
pub use decision::{DecisionConfig, PeerKind};
pub use loc::{FibChange, LocRibChange, Route, Via};

use crate::policy::Policy;
use crate::wire::attr::{AsPath, NextHop, Origin, PathAttributes};
use crate::wire::codec::CodecContext;
use crate::wire::family::Family;
use crate::wire::nlri::Prefix;
use crate::wire::update::TooLarge;
use bytes::Bytes;
use loc::{Path, PeerView, Table};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A peer's handle in the RIB. Small on purpose: every path stores one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u16);

impl PeerId {
    /// The pseudo-peer of locally originated routes.
    pub const LOCAL: PeerId = PeerId(0);
}

/// The most peers one RIB holds (`PeerId` is 16 bits, 0 is local).
pub const MAX_PEERS: usize = u16::MAX as usize;

/// Speaker-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// RFC 4456 §7 CLUSTER_ID; the router id when not set.
    pub cluster_id: Option<Ipv4Addr>,
    pub decision: DecisionConfig,
}

impl RibConfig {
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            router_id,
            cluster_id: None,
            decision: DecisionConfig::default(),
        }
    }

    fn cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }
}

/// A configured peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    /// The peer's AS.
    pub asn: u32,
    /// The local-AS override: the AS this session speaks as.
    pub local_as: Option<u32>,
    /// RFC 4456: the peer is a route-reflector client.
    pub rr_client: bool,
    pub next_hop: NextHopMode,
    /// Accept routes whose AS_PATH holds our AS up to this many times.
    pub allow_own_as: u8,
    /// Advertise only locally originated routes: a node towards its
    /// top-of-rack router sends its own blocks, not what it learned from
    /// the other nodes (the router has those from their owners, with the
    /// right next hop).
    pub local_routes_only: bool,
    /// RFC 7911: what we send (and take) several paths of. Only `send` is
    /// the RIB's business; changing it needs a new session (the OPEN says
    /// it).
    pub add_path: AddPathConfig,
    pub import: Policy,
    pub export: Policy,
}

impl PeerConfig {
    pub fn new(address: IpAddr, asn: u32) -> Self {
        Self {
            address,
            asn,
            local_as: None,
            rr_client: false,
            next_hop: NextHopMode::Auto,
            allow_own_as: 0,
            local_routes_only: false,
            add_path: AddPathConfig::default(),
            import: Policy::default(),
            export: Policy::default(),
        }
    }
}

/// What the session negotiated, given when it reaches Established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    pub codec: CodecContext,
    /// Families both sides negotiated (RFC 4760).
    pub families: Vec<Family>,
    /// Our addresses on the session, for next-hop-self.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// The peer advertised the long-lived GR capability (RFC 9494), so it
    /// may be sent LLGR_STALE routes.
    pub llgr: bool,
}

/// The IGP-cost hook of RFC 4271 §9.1.2.2 (e), also the next-hop
/// resolvability check of §9.1.2: `None` marks the next hop unusable.
pub trait NextHopCost: Send {
    fn cost(&self, next_hop: IpAddr) -> Option<u32>;
}

/// Every next hop reachable at cost 0 (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllReachable;

impl NextHopCost for AllReachable {
    fn cost(&self, _: IpAddr) -> Option<u32> {
        Some(0)
    }
}

impl<F: Fn(IpAddr) -> Option<u32> + Send> NextHopCost for F {
    fn cost(&self, next_hop: IpAddr) -> Option<u32> {
        self(next_hop)
    }
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Loc-RIB changes, in prefix order, for the FIB stream.
    pub changes: Vec<LocRibChange>,
    /// Whole UPDATE messages, headers included, in send order per peer. The
    /// members of an update group receive clones of the same buffer.
    pub messages: Vec<(PeerId, Bytes)>,
    /// Routes that could not be encoded (attributes too large for one
    /// message); they are not advertised.
    pub errors: Vec<EncodeError>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{prefixes} {family} prefixes not advertised to {peers:?}: {error}")]
pub struct EncodeError {
    pub peers: Vec<PeerId>,
    pub family: Family,
    pub prefixes: usize,
    pub error: TooLarge,
}

/// Errors of the management calls.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RibError {
    #[error("no peer with id {0:?}")]
    NoSuchPeer(PeerId),
    #[error("a peer with address {0} already exists")]
    DuplicatePeer(IpAddr),
    #[error("at most {MAX_PEERS} peers")]
    TooManyPeers,
}

/// Per-peer counters for metrics and `show peers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Paths held from the peer (Adj-RIB-In, pre-policy).
    pub received: usize,
    /// Of those, accepted by import policy and loop detection.
    pub accepted: usize,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub cfg: PeerConfig,
    /// The last session's identifier (kept while stale routes remain).
    pub router_id: Ipv4Addr,
    pub session: Option<Session>,
    pub group: Option<usize>,
    pub counters: PeerCounters,
}

impl Peer {
    fn local_as(&self, rib: &RibConfig) -> u32 {
        self.cfg.local_as.unwrap_or(rib.local_as)
    }

    pub(crate) fn kind(&self, rib: &RibConfig) -> PeerKind {
        if self.cfg.asn == self.local_as(rib) {
            PeerKind::Ibgp
        } else {
            PeerKind::Ebgp
        }
    }
}

/// The RIB of one speaker. See the module docs.
pub struct Rib {
    cfg: RibConfig,
    attrs: AttrTable,
    /// Indexed by `PeerId`; slot 0 (local) stays `None`.
    peers: Vec<Option<Peer>>,
    table: Table,
    groups: Vec<Option<adj_out::UpdateGroup>>,
    igp: Box<dyn NextHopCost>,
    /// RFC 4724 §4.1 selection deferral: advertise nothing yet.
    deferring: bool,
}

impl std::fmt::Debug for Rib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rib")
            .field("cfg", &self.cfg)
            .field("prefixes", &self.table.prefixes())
            .field("attr_sets", &self.attrs.len())
            .finish_non_exhaustive()
    }
}

impl Rib {
    pub fn new(cfg: RibConfig) -> Self {
        Self {
            cfg,
            attrs: AttrTable::new(),
            peers: vec![None],
            table: Table::default(),
            groups: Vec::new(),
            igp: Box::new(AllReachable),
            deferring: false,
        }
    }

    /// Installs the IGP-cost / next-hop reachability hook. Call
    /// [`Rib::next_hops_changed`] whenever its answers change.
    pub fn set_next_hop_cost(&mut self, hook: Box<dyn NextHopCost>) -> Output {
        self.igp = hook;
        self.next_hops_changed()
    }

    pub fn config(&self) -> &RibConfig {
        &self.cfg
    }

    /// Adds a peer (no session yet).
    pub fn add_peer(&mut self, cfg: PeerConfig) -> Result<PeerId, RibError> {
        if self
            .peers
            .iter()
            .flatten()
            .any(|p| p.cfg.address == cfg.address)
        {
            return Err(RibError::DuplicatePeer(cfg.address));
        }
        let slot = match self.peers.iter().skip(1).position(Option::is_none) {
            Some(i) => i + 1,
            None if self.peers.len() <= MAX_PEERS => {
                self.peers.push(None);
                self.peers.len() - 1
            }
            None => return Err(RibError::TooManyPeers),
        };
        self.peers[slot] = Some(Peer {
            router_id: Ipv4Addr::UNSPECIFIED,
            cfg,
            session: None,
            group: None,
            counters: PeerCounters::default(),
        });
        Ok(PeerId(slot as u16))
    }

    /// Removes a peer and every path learned from it.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<Output, RibError> {
        self.peer(id)?;
        let mut out = self.peer_down(id, &[]);
        self.peers[id.0 as usize] = None;
        out.messages.retain(|(p, _)| *p != id);
        Ok(out)
    }

    pub fn peer_config(&self, id: PeerId) -> Option<&PeerConfig> {
        self.peer(id).ok().map(|p| &p.cfg)
    }

    /// Prefixes with at least one path in the table.
    pub fn prefixes(&self) -> usize {
        self.table.prefixes()
    }

    pub fn counters(&self, id: PeerId) -> Option<PeerCounters> {
        self.peer(id).ok().map(|p| p.counters)
    }

    pub(crate) fn peer(&self, id: PeerId) -> Result<&Peer, RibError> {
        self.peers
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(RibError::NoSuchPeer(id))
    }

    pub(crate) fn peer_mut(&mut self, id: PeerId) -> Result<&mut Peer, RibError> {
        self.peers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(RibError::NoSuchPeer(id))
    }

    /// Originates `prefix` with `attrs` as the local pseudo-peer: ORIGIN
    /// defaults to IGP and AS_PATH to empty; the next hop becomes the
    /// session's own address on export.
    pub fn originate(&mut self, prefix: Prefix, mut attrs: PathAttributes) -> Output {
        attrs.origin.get_or_insert(Origin::Igp);
        attrs.as_path.get_or_insert_with(AsPath::new);
        let next_hop = match prefix {
            Prefix::V4 { .. } => NextHop::V4(attrs.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            Prefix::V6 { .. } => NextHop::V6 {
                global: Ipv6Addr::UNSPECIFIED,
                link_local: None,
            },
        };
        let set = self.attrs.intern(AttrSet::new(attrs, Some(next_hop)));
        let path = Path {
            attrs: set,
            path_id: 0,
            peer: PeerId::LOCAL,
            flags: 0,
        };
        self.table.set(prefix, path);
        self.finish(vec![prefix])
    }

    /// Withdraws a locally originated prefix.
    pub fn withdraw(&mut self, prefix: Prefix) -> Output {
        if self.table.remove(&prefix, PeerId::LOCAL, 0).is_none() {
            return Output::default();
        }
        self.finish(vec![prefix])
    }

    /// Re-runs the decision process for every prefix (the next-hop hook's
    /// answers changed).
    pub fn next_hops_changed(&mut self) -> Output {
        let all: Vec<Prefix> = self.table.iter().map(|(p, _)| p).collect();
        self.finish(all)
    }

    /// The Loc-RIB: every prefix with a best path, with its multipath set.
    pub fn best_routes(&self) -> impl Iterator<Item = (Prefix, Vec<Route>)> + '_ {
        self.table.iter().filter_map(|(prefix, _)| {
            let set: Vec<Route> = self
                .table
                .selected(&prefix)
                .map(|p| Route::of(prefix, p))
                .collect();
            (!set.is_empty()).then_some((prefix, set))
        })
    }

    /// The best path of one prefix.
    pub fn best(&self, prefix: &Prefix) -> Option<Route> {
        self.table
            .selected(prefix)
            .next()
            .map(|p| Route::of(*prefix, p))
    }

    /// Distinct attribute sets currently interned.
    pub fn attr_sets(&self) -> usize {
        self.attrs.len()
    }

    /// Runs the decision process on `dirty` prefixes, then Adj-RIB-Out.
    fn finish(&mut self, mut dirty: Vec<Prefix>) -> Output {
        dirty.sort_unstable();
        dirty.dedup();
        let Rib {
            cfg,
            peers,
            table,
            igp,
            ..
        } = self;
        let peer = |id| view(peers, cfg, id);
        let cost = |p: &Path, v: &PeerView| {
            if v.kind == PeerKind::Local {
                return Some(0);
            }
            igp.cost(p.attrs.next_hop_addr()?)
        };
        let mut changes = Vec::with_capacity(dirty.len());
        let mut was = Vec::with_capacity(dirty.len());
        for &prefix in &dirty {
            if let Some((c, w)) = table.decide_from(prefix, &cfg.decision, peer, cost) {
                changes.push(c);
                was.push(w);
            }
        }
        let mut out = Output::default();
        self.advertise(&changes, &was, &dirty, &mut out);
        out.changes = changes;
        out
    }
}

/// What the decision process needs to know about a path's peer.
fn view(peers: &[Option<Peer>], cfg: &RibConfig, id: PeerId) -> Option<PeerView> {
    if id == PeerId::LOCAL {
        return Some(PeerView {
            kind: PeerKind::Local,
            router_id: cfg.router_id,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        });
    }
    let p = peers.get(id.0 as usize)?.as_ref()?;
    Some(PeerView {
        kind: p.kind(cfg),
        router_id: p.router_id,
        addr: p.cfg.address,
    })
}

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;
