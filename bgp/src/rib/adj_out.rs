//! Adj-RIB-Out with update groups (RFC 4271 §9.2, RFC 4456 §8, RFC 1997).
//!
//! Peers whose outbound treatment cannot differ share an update group:
//! same export policy, same session kind and AS, same local AS, same
//! route-reflector client status, same next-hop mode and next-hop-self
//! addresses, same families, LLGR support and codec settings (4-octet AS,
//! ADD-PATH, message size). A group runs export once per Loc-RIB change,
//! packs announcements that share an attribute set and all withdrawals into
//! as few UPDATEs as fit, and hands every member a clone of the same encoded
//! buffer.
//!
//! A group keeps nothing per prefix (BIRD keeps an export bitmap; this
//! keeps less): what it advertised for a prefix is the export of the
//! prefix's Loc-RIB best, a pure function of that route and the group's
//! key. When the best changes, the decision process hands over the route it
//! replaced, and the group exports both: equal exports send nothing (an
//! unchanged route is never re-sent), a new one is announced, a lost one
//! withdrawn. Whole tables (a new member, ROUTE-REFRESH, the end of the
//! selection deferral, `show`) are exported from the Loc-RIB when needed.
//! Exported attribute sets are interned per pass only, and freed once
//! encoded.
//!
//! The one per-peer exception is split horizon: a route is never sent back
//! to the peer it came from. The group records that peer with the
//! advertisement (the source of the Loc-RIB best); the message skips it,
//! and if it held an older version of the route it gets a withdrawal of its
//! own.
//!
//! Families in which a group sends several paths per prefix (ADD-PATH,
//! RFC 7911) are the exception to "nothing per prefix": see [`super::add_path`].

use super::add_path::{self, SendMode, Sent, SentPaths, Wanted};
use super::attrs::{AttrSet, AttrTable};
use super::decision::PeerKind;
use super::fxhash::FxHashMap;
use super::loc::{LocRibChange, Path, Route, REJECTED, SELECTED, WITHDRAWN};
use super::{EncodeError, NextHopCost, Output, Peer, PeerId, Rib, RibConfig, RibError};
use crate::policy::{PeerType, Policy, PolicyInput, Verdict};
use crate::wire::attr::community::{NO_ADVERTISE, NO_EXPORT, NO_EXPORT_SUBCONFED};
use crate::wire::attr::{Community, NextHop, Origin};
use crate::wire::codec::CodecContext;
use crate::wire::family::Family;
use crate::wire::nlri::{NlriEntry, Prefix};
use crate::wire::update::{TooLarge, Update, UpdatePacker};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// How the NEXT_HOP is set on export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NextHopMode {
    /// RFC 4271 §5.1.3: our own address towards eBGP peers, unchanged
    /// towards iBGP peers.
    #[default]
    Auto,
    /// Always our own address.
    #[serde(rename = "self")]
    SelfAddr,
    /// Never changed (third-party next hop towards eBGP too).
    #[serde(alias = "unchanged")]
    Keep,
}

/// Everything that can make export differ between two peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupKey {
    kind: PeerKind,
    peer_as: u32,
    local_as: u32,
    rr_client: bool,
    next_hop: NextHopMode,
    local_routes_only: bool,
    local_v4: Option<Ipv4Addr>,
    local_v6: Option<Ipv6Addr>,
    llgr: bool,
    families: Vec<Family>,
    codec: CodecContext,
    /// RFC 7911: the families in which the peers receive several paths
    /// from us (negotiated), and which.
    add_path: Vec<(Family, SendMode)>,
    export: Policy,
}

impl GroupKey {
    fn send_mode(&self, family: Family) -> Option<SendMode> {
        self.add_path
            .iter()
            .find_map(|(f, m)| (*f == family).then_some(*m))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Advertised {
    pub attrs: Arc<AttrSet>,
    /// The peer the route came from, which must not get it back.
    pub exclude: Option<PeerId>,
}

#[derive(Debug)]
pub(crate) struct UpdateGroup {
    key: GroupKey,
    members: Vec<PeerId>,
    messages_encoded: u64,
    /// What the group sent in its ADD-PATH families; `None` without any.
    paths: Option<Box<Sent>>,
}

/// A snapshot of one update group, for tests, metrics and `show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: usize,
    pub members: Vec<PeerId>,
    /// Routes currently advertised (in ADD-PATH families, paths).
    pub advertised: usize,
    /// UPDATE messages encoded so far (each sent to every member).
    pub messages_encoded: u64,
}

/// The source of a route, as export sees it.
struct Source {
    id: PeerId,
    kind: PeerKind,
    rr_client: bool,
    router_id: Ipv4Addr,
}

fn source(peers: &[Option<Peer>], cfg: &RibConfig, id: PeerId) -> Source {
    match peers.get(id.0 as usize).and_then(Option::as_ref) {
        Some(p) => Source {
            id,
            kind: p.kind(cfg),
            rr_client: p.cfg.rr_client,
            router_id: p.router_id,
        },
        None => Source {
            id,
            kind: PeerKind::Local,
            rr_client: false,
            router_id: cfg.router_id,
        },
    }
}

fn has(route: &Route, c: u32) -> bool {
    route
        .attrs
        .attrs
        .communities
        .as_ref()
        .is_some_and(|cs| cs.contains(&Community(c)))
}

/// What the group advertises for `route`, `None` for nothing.
fn export_route(
    cfg: &RibConfig,
    table: &mut AttrTable,
    key: &GroupKey,
    route: &Route,
    src: &Source,
) -> Option<Advertised> {
    let prefix = route.prefix;
    if !key.families.contains(&prefix.family()) {
        return None;
    }
    // RFC 4271 §9.2 and RFC 4456 §6: an iBGP-learned route goes to iBGP
    // peers only by reflection: client routes to everyone, non-client routes
    // to clients.
    if src.kind == PeerKind::Ibgp && key.kind == PeerKind::Ibgp && !src.rr_client && !key.rr_client
    {
        return None;
    }
    if key.local_routes_only && src.kind != PeerKind::Local {
        return None;
    }
    // RFC 1997: NO_ADVERTISE goes to no peer.
    if has(route, NO_ADVERTISE) {
        return None;
    }
    // RFC 1997: NO_EXPORT and NO_EXPORT_SUBCONFED stay inside the AS (no
    // confederations: every eBGP peer is outside).
    if key.kind == PeerKind::Ebgp && (has(route, NO_EXPORT) || has(route, NO_EXPORT_SUBCONFED)) {
        return None;
    }
    // RFC 9494 §4.5: LLGR_STALE routes only to peers that speak LLGR.
    if route.llgr_stale && !key.llgr {
        return None;
    }
    let peer_type = match key.kind {
        PeerKind::Ibgp => PeerType::Ibgp,
        _ => PeerType::Ebgp,
    };
    let base = match key.export.evaluate(&PolicyInput {
        prefix,
        attrs: &route.attrs,
        peer_type: Some(peer_type),
        local_as: key.local_as,
    }) {
        Verdict::Reject => return None,
        Verdict::Accept(None) => Cow::Borrowed(&*route.attrs),
        Verdict::Accept(Some(a)) => Cow::Owned(a),
    };
    // RFC 4271 §5: unknown non-transitive attributes dropped, unknown
    // transitive ones passed on with Partial.
    let mut a = base.attrs.for_propagation();
    // AS4_PATH was folded in on import; the encoder regenerates it.
    a.drop_as4();
    a.origin.get_or_insert(Origin::Igp);
    let path = a.as_path.take().unwrap_or_default();
    let unspecified = base.next_hop.addr().is_none_or(|n| n.is_unspecified());
    let next_hop_self = unspecified
        || match key.next_hop {
            NextHopMode::SelfAddr => true,
            NextHopMode::Keep => false,
            // RFC 4271 §5.1.3: own address to eBGP, unchanged to iBGP.
            NextHopMode::Auto => key.kind == PeerKind::Ebgp,
        };
    match key.kind {
        PeerKind::Ebgp => {
            // RFC 4271 §5.1.2 (b): prepend our own AS towards an external peer.
            a.as_path = Some(path.prepend(key.local_as, 1));
            // RFC 4271 §5.1.5: LOCAL_PREF is not sent to external peers.
            a.local_pref = None;
            // RFC 4271 §5.1.4: a MED received from another AS is not passed on.
            if src.kind != PeerKind::Local {
                a.med = None;
            }
            // RFC 4456 §8: ORIGINATOR_ID and CLUSTER_LIST do not leave the AS.
            a.originator_id = None;
            a.cluster_list = None;
        }
        _ => {
            a.as_path = Some(path);
            // RFC 4271 §5.1.5: every iBGP UPDATE carries LOCAL_PREF.
            a.local_pref.get_or_insert(cfg.decision.default_local_pref);
            if src.kind == PeerKind::Ibgp {
                // RFC 4456 §8: the reflector sets ORIGINATOR_ID if absent and
                // prepends its CLUSTER_ID to CLUSTER_LIST.
                a.originator_id.get_or_insert(src.router_id);
                let mut list = vec![cfg.cluster_id()];
                list.extend(a.cluster_list.take().unwrap_or_default());
                a.cluster_list = Some(list);
            }
        }
    }
    let next_hop = if next_hop_self {
        match prefix {
            // RFC 8950 §3: on an IPv6-only session, IPv4 NLRI carry our
            // IPv6 address (the session offered the extended next hop).
            Prefix::V4 { .. } => match (key.local_v4, key.local_v6) {
                (Some(v4), _) => NextHop::V4(v4),
                (None, Some(v6)) => NextHop::V6 {
                    global: v6,
                    link_local: None,
                },
                (None, None) => return None,
            },
            Prefix::V6 { .. } => NextHop::V6 {
                global: key.local_v6?,
                link_local: None,
            },
        }
    } else {
        base.next_hop.clone()
    };
    a.next_hop = None;
    Some(Advertised {
        attrs: table.intern(AttrSet {
            attrs: a,
            next_hop,
            pre: None,
            facts: Default::default(),
        }),
        exclude: (src.kind != PeerKind::Local).then_some(src.id),
    })
}

/// Export results of one pass, reused for routes with the same attribute
/// set, source and family when the export policy never looks at the prefix
/// (the common case): a full table then costs one export per attribute set,
/// not one per prefix.
struct ExportCache {
    enabled: bool,
    seen: FxHashMap<ExportKey, Option<Advertised>>,
    /// The last lookup: runs of prefixes share an attribute set.
    last: Option<(ExportKey, Option<Advertised>)>,
}

type ExportKey = (usize, PeerId, bool, Family);

impl ExportCache {
    fn new(key: &GroupKey) -> Self {
        Self {
            enabled: key.export.rules.iter().all(|r| r.matches.prefix.is_none()),
            seen: FxHashMap::default(),
            last: None,
        }
    }

    fn export(
        &mut self,
        route: &Route,
        run: impl FnOnce() -> Option<Advertised>,
    ) -> Option<Advertised> {
        if !self.enabled {
            return run();
        }
        let k = (
            Arc::as_ptr(&route.attrs) as usize,
            route.peer,
            route.llgr_stale,
            route.prefix.family(),
        );
        if let Some((lk, v)) = &self.last {
            if *lk == k {
                return v.clone();
            }
        }
        let v = self.seen.entry(k).or_insert_with(run).clone();
        self.last = Some((k, v.clone()));
        v
    }
}

/// What a batch announces or withdraws: a prefix, or under ADD-PATH a
/// prefix and the Path Identifier it goes under (RFC 7911 §3).
pub(crate) trait Key: Copy + Ord {
    fn entry(self) -> NlriEntry;
}

impl Key for Prefix {
    fn entry(self) -> NlriEntry {
        NlriEntry {
            path_id: None,
            prefix: self,
        }
    }
}

impl Key for (Prefix, u32) {
    fn entry(self) -> NlriEntry {
        NlriEntry {
            path_id: Some(self.1),
            prefix: self.0,
        }
    }
}

/// Changes of one group waiting to be encoded.
struct Batch<K> {
    /// Announcements: attribute set, excluded peer, what.
    announce: Vec<(Arc<AttrSet>, Option<PeerId>, Vec<K>)>,
    index: FxHashMap<(usize, Option<PeerId>), usize>,
    /// Withdrawals to every member but the excluded one.
    withdraw: Vec<(Option<PeerId>, Vec<K>)>,
    /// Withdrawals to one member only.
    only: Vec<(PeerId, Vec<K>)>,
}

impl<K> Default for Batch<K> {
    fn default() -> Self {
        Self {
            announce: Vec::new(),
            index: FxHashMap::default(),
            withdraw: Vec::new(),
            only: Vec::new(),
        }
    }
}

fn bucket<P: PartialEq, K>(v: &mut Vec<(P, Vec<K>)>, p: P, k: K) {
    match v.iter_mut().find(|(x, _)| *x == p) {
        Some((_, ks)) => ks.push(k),
        None => v.push((p, vec![k])),
    }
}

impl<K: Key> Batch<K> {
    fn announce(&mut self, a: &Advertised, k: K) {
        let i = *self
            .index
            .entry((Arc::as_ptr(&a.attrs) as usize, a.exclude))
            .or_insert_with(|| {
                self.announce.push((a.attrs.clone(), a.exclude, Vec::new()));
                self.announce.len() - 1
            });
        self.announce[i].2.push(k);
    }

    fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty() && self.only.is_empty()
    }

    /// What must be sent when the advertisement of `k` goes from `old` to
    /// `new`.
    fn record(&mut self, k: K, old: Option<&Advertised>, new: Option<&Advertised>) {
        match (old, new) {
            (None, None) => {}
            (Some(o), Some(n)) if add_path::same(o, n) => {}
            (old, Some(n)) => {
                if let Some(x) = n.exclude {
                    // Split horizon: the source peer had an older version
                    // from elsewhere; take it back.
                    if old.is_some_and(|o| o.exclude != Some(x)) {
                        bucket(&mut self.only, x, k);
                    }
                }
                self.announce(n, k);
            }
            (Some(o), None) => bucket(&mut self.withdraw, o.exclude, k),
        }
    }
}

/// Splits keys by family, as NLRI entries.
fn by_family<K: Key>(keys: &[K]) -> Vec<(Family, Vec<NlriEntry>)> {
    let mut out: Vec<(Family, Vec<NlriEntry>)> = Vec::new();
    for k in keys {
        let e = k.entry();
        let f = e.prefix.family();
        match out.iter_mut().find(|(x, _)| *x == f) {
            Some((_, v)) => v.push(e),
            None => out.push((f, vec![e])),
        }
    }
    out
}

impl UpdateGroup {
    /// Encodes a batch once and addresses it to the members.
    fn send<K: Key>(&mut self, batch: Batch<K>, to: Option<PeerId>, out: &mut Output) {
        if batch.is_empty() {
            return;
        }
        let packer = UpdatePacker::new(&self.key.codec);
        let members = &self.members;
        let mut encoded = 0u64;
        let mut emit = |msgs: Result<Vec<Bytes>, TooLarge>,
                        family: Family,
                        n: usize,
                        exclude: Option<PeerId>,
                        only: Option<PeerId>| {
            let recipients: Vec<PeerId> = members
                .iter()
                .copied()
                .filter(|m| Some(*m) != exclude && only.is_none_or(|o| o == *m))
                .filter(|m| to.is_none_or(|t| t == *m))
                .collect();
            match msgs {
                Ok(msgs) => {
                    if recipients.is_empty() {
                        return;
                    }
                    encoded += msgs.len() as u64;
                    for m in msgs {
                        out.messages
                            .extend(recipients.iter().map(|&r| (r, m.clone())));
                    }
                }
                Err(error) => out.errors.push(EncodeError {
                    peers: recipients,
                    family,
                    prefixes: n,
                    error,
                }),
            }
        };
        for (exclude, keys) in &batch.withdraw {
            for (family, entries) in by_family(keys) {
                emit(
                    packer.withdraw(family, &entries),
                    family,
                    entries.len(),
                    *exclude,
                    None,
                );
            }
        }
        for (peer, keys) in &batch.only {
            for (family, entries) in by_family(keys) {
                emit(
                    packer.withdraw(family, &entries),
                    family,
                    entries.len(),
                    None,
                    Some(*peer),
                );
            }
        }
        for (attrs, exclude, keys) in &batch.announce {
            for (family, entries) in by_family(keys) {
                let msgs = packer.announce(family, &attrs.attrs, &attrs.next_hop, &entries);
                emit(msgs, family, entries.len(), *exclude, None);
            }
        }
        self.messages_encoded += encoded;
    }

    fn end_of_rib(&self, id: PeerId, out: &mut Output) {
        for f in &self.key.families {
            let mut b = BytesMut::new();
            if Update::end_of_rib(*f)
                .encode(&self.key.codec, &mut b)
                .is_ok()
            {
                out.messages.push((id, b.freeze()));
            }
        }
    }

    /// Brings what the group sent for `prefix`, in a family it sends paths
    /// in, in line with the table's `paths` (RFC 7911): which paths the
    /// mode picks, each exported on its own.
    #[allow(clippy::too_many_arguments)]
    fn sync_paths(
        &mut self,
        cfg: &RibConfig,
        peers: &[Option<Peer>],
        igp: &dyn NextHopCost,
        prefix: Prefix,
        paths: &[Path],
        cache: &mut ExportCache,
        batch: &mut Batch<(Prefix, u32)>,
    ) {
        let UpdateGroup {
            key, paths: sent, ..
        } = self;
        let (Some(sent), Some(mode)) = (sent.as_mut(), key.send_mode(prefix.family())) else {
            return;
        };
        let selected = paths.iter().take_while(|p| p.has(SELECTED)).count();
        let picked = match mode {
            SendMode::Best => &paths[..selected.min(1)],
            SendMode::Ecmp => &paths[..selected],
            SendMode::All => paths,
        };
        let mut wanted = Vec::with_capacity(picked.len());
        for (i, p) in picked.iter().enumerate() {
            if i >= selected && !eligible(cfg, peers, igp, p) {
                continue;
            }
            let route = Route::of(prefix, p);
            let exported = cache.export(&route, || {
                let src = source(peers, cfg, route.peer);
                export_route(cfg, &mut sent.attrs, key, &route, &src)
            });
            match exported {
                Some(adv) => wanted.push(Wanted {
                    path_id: p.path_id,
                    adv,
                }),
                // RFC 7911 §5: "A BGP speaker SHOULD include the best route
                // [RFC4271] when more than one path is advertised to a
                // neighbor, unless it is a path received from that
                // neighbor." (Split horizon exports it with `exclude`, so
                // `None` here is policy, a well-known community or the
                // reflection rules.) In `best` and `ecmp` the peer gets the
                // best and what ties with it, so without the best it gets
                // nothing, as a peer without ADD-PATH would. `all` sends
                // every path export lets through, the best or not: the
                // operator asked for each path on its own merits.
                None if i == 0 && i < selected && mode != SendMode::All => {
                    wanted.clear();
                    break;
                }
                None => {}
            }
        }
        if wanted.is_empty() && sent.prefixes.get(&prefix).is_none() {
            return;
        }
        let mut record = |id, old: Option<&Advertised>, new: Option<&Advertised>| {
            batch.record((prefix, id), old, new)
        };
        match sent.prefixes.get_mut(&prefix) {
            Some(slot) => {
                let was = std::mem::take(slot).into_vec();
                let now = add_path::reconcile(was, wanted, &mut record);
                if now.is_empty() {
                    sent.prefixes.remove(&prefix);
                } else {
                    *slot = SentPaths::from_vec(now);
                }
            }
            None => {
                let now = add_path::reconcile(Vec::new(), wanted, &mut record);
                if !now.is_empty() {
                    sent.prefixes.insert(prefix, SentPaths::from_vec(now));
                }
            }
        }
    }
}

/// Whether a path that is not selected could be: accepted, its peer known,
/// its next hop resolvable (RFC 4271 §9.1.2). What `all` sends.
fn eligible(cfg: &RibConfig, peers: &[Option<Peer>], igp: &dyn NextHopCost, p: &Path) -> bool {
    if p.flags & (REJECTED | WITHDRAWN) != 0 {
        return false;
    }
    match super::view(peers, cfg, p.peer) {
        None => false,
        Some(v) if v.kind == PeerKind::Local => true,
        Some(_) => p
            .attrs
            .next_hop_addr()
            .is_some_and(|nh| igp.cost(nh).is_some()),
    }
}

/// What one peer holds from its group: per prefix, and per prefix and
/// path identifier in ADD-PATH families.
#[derive(Debug, Default)]
pub(crate) struct Held {
    best: BTreeMap<Prefix, Arc<AttrSet>>,
    paths: BTreeMap<(Prefix, u32), Arc<AttrSet>>,
}

/// The batch that turns what `peer` holds (`old`) into `new`.
fn diff<K: Key>(
    old: &BTreeMap<K, Arc<AttrSet>>,
    new: &BTreeMap<K, Arc<AttrSet>>,
    peer: PeerId,
) -> Batch<K> {
    let mut b = Batch::default();
    for (k, a) in new {
        // By value: the two sides were exported in different passes, each
        // interned on its own.
        if old.get(k).is_none_or(|o| !Arc::ptr_eq(o, a) && o != a) {
            b.announce(
                &Advertised {
                    attrs: a.clone(),
                    exclude: None,
                },
                *k,
            );
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        bucket(&mut b.only, peer, *k);
    }
    b
}

impl Rib {
    fn group_key(&self, peer: &Peer) -> Option<GroupKey> {
        let s = peer.session.as_ref()?;
        let mut families = s.families.clone();
        families.sort();
        families.dedup();
        // RFC 7911 §5: several paths only where we said we send them and
        // the peer said it receives them (the negotiated codec); the mode
        // is the configured one (best when the session was negotiated by
        // hand).
        let mut add_path: Vec<(Family, SendMode)> = s
            .codec
            .add_path_tx
            .families()
            .iter()
            .filter(|f| families.contains(f))
            .map(|&f| (f, peer.cfg.add_path.send_mode(f).unwrap_or_default()))
            .collect();
        add_path.sort_by_key(|(f, _)| *f);
        Some(GroupKey {
            kind: peer.kind(&self.cfg),
            peer_as: peer.cfg.asn,
            local_as: peer.cfg.local_as.unwrap_or(self.cfg.local_as),
            rr_client: peer.cfg.rr_client,
            next_hop: peer.cfg.next_hop,
            local_routes_only: peer.cfg.local_routes_only,
            local_v4: s.local_v4,
            local_v6: s.local_v6,
            llgr: s.llgr,
            families,
            // What we receive does not change what we send.
            codec: CodecContext {
                add_path_rx: Default::default(),
                ..s.codec.clone()
            },
            add_path,
            export: peer.cfg.export.clone(),
        })
    }

    /// Puts an established peer in its group. Without `held`, the peer gets
    /// the group's whole table and End-of-RIB for each family (RFC 4724 §2);
    /// with it (what the peer holds from an earlier group), only the
    /// difference.
    pub(crate) fn join_group(&mut self, id: PeerId, held: Option<Held>, out: &mut Output) {
        let Ok(peer) = self.peer(id) else { return };
        let Some(key) = self.group_key(peer) else {
            return;
        };
        let gi = match self
            .groups
            .iter()
            .position(|g| g.as_ref().is_some_and(|g| g.key == key))
        {
            Some(gi) => gi,
            None => self.new_group(key),
        };
        let Some(group) = self.groups[gi].as_mut() else {
            return;
        };
        group.members.push(id);
        match held {
            // RFC 4724 §4.1: a restarting speaker sends its table only when
            // the deferral ends.
            None if self.deferring => {}
            None => self.send_table(gi, id, None, out),
            Some(held) => {
                let now = self.view(gi, id);
                let best = diff(&held.best, &now.best, id);
                let paths = diff(&held.paths, &now.paths, id);
                if let Some(group) = self.groups[gi].as_mut() {
                    group.send(best, Some(id), out);
                    group.send(paths, Some(id), out);
                }
            }
        }
        if let Ok(p) = self.peer_mut(id) {
            p.group = Some(gi);
        }
    }

    /// Runs `f` on what group `gi` advertises, per prefix, outside the
    /// families it sends several paths in: the export of the Loc-RIB best
    /// (see the module docs) and the peer excluded.
    fn for_each_export(&self, gi: usize, mut f: impl FnMut(Prefix, &Advertised)) {
        let Some(group) = self.groups.get(gi).and_then(Option::as_ref) else {
            return;
        };
        let mut interned = AttrTable::new();
        let mut cache = ExportCache::new(&group.key);
        for (prefix, paths) in self.table.iter() {
            let Some(best) = paths.first().filter(|p| p.has(super::loc::SELECTED)) else {
                continue;
            };
            if group.paths.is_some() && group.key.send_mode(prefix.family()).is_some() {
                continue;
            }
            let route = Route::of(prefix, best);
            let exported = cache.export(&route, || {
                let src = source(&self.peers, &self.cfg, route.peer);
                export_route(&self.cfg, &mut interned, &group.key, &route, &src)
            });
            if let Some(a) = exported {
                f(prefix, &a);
            }
        }
    }

    /// What `peer` currently holds from group `gi`.
    fn view(&self, gi: usize, peer: PeerId) -> Held {
        let mut v = Held::default();
        self.for_each_export(gi, |p, a| {
            if a.exclude != Some(peer) {
                v.best.insert(p, a.attrs.clone());
            }
        });
        let sent = self.groups.get(gi).and_then(Option::as_ref);
        for (p, s) in sent
            .and_then(|g| g.paths.as_deref())
            .into_iter()
            .flat_map(Sent::iter)
        {
            if s.adv.exclude != Some(peer) {
                v.paths.insert((p, s.id), s.adv.attrs.clone());
            }
        }
        v
    }

    /// Group `gi`'s whole table (of `family`, or all) to one member; with
    /// every family, End-of-RIB for each follows (RFC 4724 §2).
    fn send_table(&mut self, gi: usize, id: PeerId, family: Option<Family>, out: &mut Output) {
        let mut batch = Batch::default();
        self.for_each_export(gi, |p, a| {
            if a.exclude != Some(id) && family.is_none_or(|f| f == p.family()) {
                batch.announce(
                    &Advertised {
                        attrs: a.attrs.clone(),
                        exclude: None,
                    },
                    p,
                );
            }
        });
        let Some(group) = self.groups.get_mut(gi).and_then(Option::as_mut) else {
            return;
        };
        group.send(batch, Some(id), out);
        let mut paths = Batch::default();
        for (p, s) in group.paths.as_deref().into_iter().flat_map(Sent::iter) {
            if s.adv.exclude != Some(id) && family.is_none_or(|f| f == p.family()) {
                paths.announce(
                    &Advertised {
                        attrs: s.adv.attrs.clone(),
                        exclude: None,
                    },
                    (p, s.id),
                );
            }
        }
        group.send(paths, Some(id), out);
        if family.is_none() {
            group.end_of_rib(id, out);
        }
    }

    /// Brings what group `gi` sent in its ADD-PATH families in line with
    /// the whole table; returns the changes.
    fn sync_all_paths(&mut self, gi: usize) -> Batch<(Prefix, u32)> {
        let mut batch = Batch::default();
        let Rib {
            cfg,
            peers,
            table,
            groups,
            igp,
            ..
        } = self;
        let Some(group) = groups.get_mut(gi).and_then(Option::as_mut) else {
            return batch;
        };
        if group.paths.is_none() {
            return batch;
        }
        let mut cache = ExportCache::new(&group.key);
        let mut stale: Vec<Prefix> = Vec::new();
        for (prefix, paths) in table.iter() {
            group.sync_paths(cfg, peers, &**igp, prefix, paths, &mut cache, &mut batch);
        }
        // Prefixes gone from the table while nothing was sent (deferral).
        if let Some(sent) = group.paths.as_deref() {
            stale.extend(
                sent.prefixes
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| table.paths(p).is_empty()),
            );
        }
        for prefix in stale {
            group.sync_paths(cfg, peers, &**igp, prefix, &[], &mut cache, &mut batch);
        }
        batch
    }

    /// Creates a group. What it advertises follows from the Loc-RIB, but
    /// in ADD-PATH families it is recorded (with the identifiers) at once.
    fn new_group(&mut self, key: GroupKey) -> usize {
        let paths = (!key.add_path.is_empty()).then(Box::default);
        let group = UpdateGroup {
            key,
            members: Vec::new(),
            messages_encoded: 0,
            paths,
        };
        let gi = match self.groups.iter().position(Option::is_none) {
            Some(i) => {
                self.groups[i] = Some(group);
                i
            }
            None => {
                self.groups.push(Some(group));
                self.groups.len() - 1
            }
        };
        // No member yet: nothing to send.
        drop(self.sync_all_paths(gi));
        gi
    }

    /// Takes a peer out of its group.
    pub(crate) fn leave_group(&mut self, id: PeerId) {
        self.leave_group_with(id, false);
    }

    /// Takes a peer out of its group; returns what it held (built only when
    /// asked for: a copy of a full table).
    pub(crate) fn leave_group_with(&mut self, id: PeerId, held: bool) -> Option<Held> {
        let gi = self.peer_mut(id).ok()?.group.take()?;
        let view = held.then(|| self.view(gi, id));
        let slot = self.groups.get_mut(gi)?;
        let group = slot.as_mut()?;
        group.members.retain(|m| *m != id);
        if group.members.is_empty() {
            *slot = None;
        }
        view
    }

    /// Runs every group over the Loc-RIB changes; `was[i]` is the best
    /// route `changes[i]` replaced. `dirty` are the prefixes whose paths
    /// changed, selected or not: in ADD-PATH families a group sends
    /// several paths and looks at each of them.
    pub(crate) fn advertise(
        &mut self,
        changes: &[LocRibChange],
        was: &[Option<Route>],
        dirty: &[Prefix],
        out: &mut Output,
    ) {
        let Rib {
            cfg,
            peers,
            table,
            groups,
            igp,
            deferring,
            ..
        } = self;
        // RFC 4724 §4.1: nothing is sent while deferring; the whole table
        // goes out when the deferral ends.
        if *deferring {
            return;
        }
        for group in groups.iter_mut().flatten() {
            let mut batch = Batch::default();
            // Interned for this pass only: freed once encoded.
            let mut interned = AttrTable::new();
            let mut cache = ExportCache::new(&group.key);
            let sends_paths = group.paths.is_some();
            let key = &group.key;
            let mut export = |route: &Route| {
                cache.export(route, || {
                    let src = source(peers, cfg, route.peer);
                    export_route(cfg, &mut interned, key, route, &src)
                })
            };
            for (ch, was) in changes.iter().zip(was) {
                let prefix = ch.prefix();
                if sends_paths && key.send_mode(prefix.family()).is_some() {
                    continue;
                }
                let old = was.as_ref().and_then(&mut export);
                let new = ch.best().and_then(&mut export);
                batch.record(prefix, old.as_ref(), new.as_ref());
            }
            group.send(batch, None, out);
            if sends_paths {
                let mut batch = Batch::default();
                let mut cache = ExportCache::new(&group.key);
                for &prefix in dirty {
                    let paths = table.paths(&prefix);
                    group.sync_paths(cfg, peers, &**igp, prefix, paths, &mut cache, &mut batch);
                }
                group.send(batch, None, out);
            }
        }
    }

    /// Starts the selection deferral of a restarting speaker (RFC 4724
    /// §4.1): sessions come up and routes are learned and selected as usual,
    /// but nothing is advertised until [`Rib::end_deferral`], so peers keep
    /// our routes from before the restart instead of receiving a partial
    /// table. (The driver ends it on End-of-RIB from every GR peer or on its
    /// deferral timer; the FIB consumer should likewise keep the forwarding
    /// state it has until then.)
    pub fn defer_advertisements(&mut self) {
        self.deferring = true;
    }

    /// Ends the deferral: every established peer gets its table and
    /// End-of-RIB.
    pub fn end_deferral(&mut self) -> Output {
        let mut out = Output::default();
        if !std::mem::replace(&mut self.deferring, false) {
            return out;
        }
        for gi in 0..self.groups.len() {
            // The whole table once for all members (split horizon still
            // applies), then End-of-RIB to each.
            let mut batch = Batch::default();
            self.for_each_export(gi, |p, a| batch.announce(a, p));
            // The members hold nothing of ours yet: what changed while
            // deferring is not sent as such, the whole record is.
            drop(self.sync_all_paths(gi));
            let Some(group) = self.groups[gi].as_mut() else {
                continue;
            };
            group.send(batch, None, &mut out);
            let mut paths = Batch::default();
            for (p, s) in group.paths.as_deref().into_iter().flat_map(Sent::iter) {
                paths.announce(&s.adv, (p, s.id));
            }
            group.send(paths, None, &mut out);
            for id in &group.members {
                group.end_of_rib(*id, &mut out);
            }
        }
        out
    }

    /// Everything the peer holds in `family` again (a ROUTE-REFRESH request,
    /// RFC 2918; the session adds the RFC 7313 markers).
    pub fn refresh(&mut self, id: PeerId, family: Family) -> Output {
        let mut out = Output::default();
        let Some(gi) = self.peer(id).ok().and_then(|p| p.group) else {
            return out;
        };
        self.send_table(gi, id, Some(family), &mut out);
        out
    }

    /// Changes a peer's configuration without resetting it or any other
    /// peer: a new import policy is applied to the kept pre-policy routes
    /// (soft reconfiguration), and export-side changes move the peer to its
    /// new update group, sending only the difference. A changed address or
    /// AS needs a new session: remove the peer and add it again.
    pub fn set_peer_config(
        &mut self,
        id: PeerId,
        cfg: PeerConfigUpdate,
    ) -> Result<Output, RibError> {
        let peer = self.peer_mut(id)?;
        let import_changed = peer.cfg.import != cfg.import;
        peer.cfg.import = cfg.import;
        peer.cfg.export = cfg.export;
        peer.cfg.rr_client = cfg.rr_client;
        peer.cfg.next_hop = cfg.next_hop;
        peer.cfg.allow_own_as = cfg.allow_own_as;
        peer.cfg.local_routes_only = cfg.local_routes_only;
        let mut out = if import_changed {
            self.reimport(id)
        } else {
            Output::default()
        };
        if let Some(held) = self.leave_group_with(id, true) {
            self.join_group(id, Some(held), &mut out);
        }
        Ok(out)
    }

    /// The update groups, for metrics and tests. `advertised` is counted
    /// by exporting the Loc-RIB (one export per attribute set): a walk of
    /// the table.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups
            .iter()
            .enumerate()
            .filter_map(|(id, g)| {
                let g = g.as_ref()?;
                let mut advertised = g.paths.as_ref().map_or(0, |s| s.paths());
                self.for_each_export(id, |_, _| advertised += 1);
                Some(GroupInfo {
                    id,
                    members: g.members.clone(),
                    advertised,
                    messages_encoded: g.messages_encoded,
                })
            })
            .collect()
    }

    /// What `peer` was last sent, per prefix (a prefix once per path in
    /// families with several paths).
    pub fn adj_rib_out(&self, id: PeerId) -> Vec<(Prefix, Arc<AttrSet>)> {
        let mut v: Vec<_> = self
            .adj_rib_out_paths(id)
            .into_iter()
            .map(|(e, a)| (e.prefix, a))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// What `peer` was last sent: each NLRI, with its Path Identifier in
    /// families with several paths (RFC 7911), and attributes.
    pub fn adj_rib_out_paths(&self, id: PeerId) -> Vec<(NlriEntry, Arc<AttrSet>)> {
        let Some(gi) = self.peer(id).ok().and_then(|p| p.group) else {
            return Vec::new();
        };
        let held = self.view(gi, id);
        let best = held.best.into_iter().map(|(p, a)| (p.entry(), a));
        best.chain(held.paths.into_iter().map(|(k, a)| (k.entry(), a)))
            .collect()
    }
}

/// The parts of a [`super::PeerConfig`] that change without a new session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfigUpdate {
    pub rr_client: bool,
    pub next_hop: NextHopMode,
    pub allow_own_as: u8,
    pub local_routes_only: bool,
    pub import: Policy,
    pub export: Policy,
}

impl From<&super::PeerConfig> for PeerConfigUpdate {
    fn from(c: &super::PeerConfig) -> Self {
        Self {
            rr_client: c.rr_client,
            next_hop: c.next_hop,
            allow_own_as: c.allow_own_as,
            local_routes_only: c.local_routes_only,
            import: c.import.clone(),
            export: c.export.clone(),
        }
    }
}
