//! Small topologies for the petrel interop suites, and one [`Speaker`]
//! trait over the BIRD, FRR, GoBGP and petreld drivers, each started from
//! one [`PeerSpec`], so a scenario is written once and run with any of
//! them on either side. Its read side, [`View`], is also what a test that
//! starts a daemon from a configuration of its own waits with.

use super::{bird, frr, gobgp, petreld, wait_until, Daemon, Lab, Link, Netns, Route};
use anyhow::Result;

/// petrel's ASN in every scenario (4-octet, private).
pub const PETREL_AS: u32 = 4200000001;
/// The peer's ASN for eBGP.
pub const PEER_AS: u32 = 4200000002;
pub const PETREL4: &str = "10.99.1.1";
pub const PEER4: &str = "10.99.1.2";
pub const PETREL6: &str = "fd00:99:1::1";
pub const PEER6: &str = "fd00:99:1::2";

/// Which daemon plays the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bird,
    Frr,
    Gobgp,
    /// petreld itself, from petreld.toml (its binaries are the build's).
    Petreld,
}

impl Kind {
    /// Programs the daemon needs (for [`super::require_lab`]).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::Bird => &["bird", "birdc"],
            Kind::Frr => &["vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
            Kind::Gobgp => &["gobgpd", "gobgp"],
            Kind::Petreld => &[],
        }
    }
}

/// One session of a peer daemon.
#[derive(Clone, Debug)]
pub struct NeighborSpec {
    pub address: String,
    pub asn: u32,
    /// The peer's own address on this session.
    pub local: String,
    pub password: Option<String>,
    pub graceful_restart: Option<u32>,
    pub rr_client: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// RFC 8950 (FRR and BIRD only).
    pub extended_nexthop: bool,
    pub passive: bool,
    /// BFD protects the session (RFC 5882), 300 ms × 3: FRR runs bfdd
    /// with `neighbor X bfd`, BIRD `protocol bfd` with `bfd on`. GoBGP
    /// has no BFD.
    pub bfd: bool,
}

impl NeighborSpec {
    /// A session with `address` (AS `asn`) from `local`; families follow
    /// the transport (IPv4 over IPv4, IPv6 over IPv6).
    pub fn new(address: &str, asn: u32, local: &str) -> NeighborSpec {
        let v6 = address.contains(':');
        NeighborSpec {
            address: address.into(),
            asn,
            local: local.into(),
            password: None,
            graceful_restart: None,
            rr_client: false,
            ipv4: !v6,
            ipv6: v6,
            extended_nexthop: false,
            passive: false,
            bfd: false,
        }
    }
}

/// A whole peer daemon.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    pub router_id: String,
    pub asn: u32,
    pub neighbors: Vec<NeighborSpec>,
    /// (prefix, communities, large communities)
    pub originate: Vec<(String, Vec<String>, Vec<String>)>,
    /// Global graceful restart (FRR needs it globally).
    pub graceful_restart: Option<u32>,
    /// Install the best BGP routes in the namespace's kernel FIB. FRR
    /// (zebra) always does; BIRD only with this (`protocol kernel`);
    /// GoBGP never.
    pub kernel: bool,
}

impl PeerSpec {
    pub fn new(router_id: &str, asn: u32) -> PeerSpec {
        PeerSpec {
            router_id: router_id.into(),
            asn,
            neighbors: Vec::new(),
            originate: Vec::new(),
            graceful_restart: None,
            kernel: false,
        }
    }
    pub fn originate(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> &mut Self {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        self.originate
            .push((prefix.into(), v(communities), v(large)));
        self
    }
}

/// What a test reads from a BGP daemon, and waits for: the one way to
/// wait for a session, its routes or its BFD state, whichever daemon runs
/// it. BIRD names a session by its protocol (`bird::Bird`) or, started
/// from a [`PeerSpec`] ([`BirdSpeaker`]), by the neighbour's address;
/// every other daemon by the neighbour's address.
pub trait View {
    fn kind(&self) -> Kind;
    fn daemon(&self) -> &Daemon;
    /// The processes whose death fails a wait, and whose logs it shows.
    fn daemons(&self) -> Vec<&Daemon> {
        vec![self.daemon()]
    }
    fn established(&self, neighbor: &str) -> Result<bool>;
    /// Routes learned from `neighbor`, all attributes.
    fn routes_from(&self, neighbor: &str) -> Result<Vec<Route>>;
    /// The state of the daemon's BFD session with `neighbor`, lower case
    /// ("up", "down", "init"), `None` when it has none.
    fn bfd_state(&self, _neighbor: &str) -> Result<Option<String>> {
        Ok(None)
    }

    fn wait_established(&self, neighbor: &str) -> Result<()> {
        wait_until(
            &format!("{:?} session with {neighbor} Established", self.kind()),
            &self.daemons(),
            || Ok(self.established(neighbor)?.then_some(())),
        )
    }

    /// Waits until `f` holds for the routes learned from `neighbor`.
    fn wait_routes_from(
        &self,
        neighbor: &str,
        what: &str,
        f: &mut dyn FnMut(&[Route]) -> bool,
    ) -> Result<Vec<Route>> {
        wait_until(what, &self.daemons(), || {
            let r = self.routes_from(neighbor)?;
            Ok(f(&r).then_some(r))
        })
    }

    /// Waits until the BFD session with `neighbor` is in `state` (lower
    /// case, as [`View::bfd_state`]).
    fn wait_bfd(&self, neighbor: &str, state: &str) -> Result<()> {
        wait_until(
            &format!("{:?} BFD session with {neighbor} {state}", self.kind()),
            &self.daemons(),
            || Ok((self.bfd_state(neighbor)?.as_deref() == Some(state)).then_some(())),
        )
    }
}

/// What the scenarios do with any peer daemon started from a [`PeerSpec`],
/// beyond reading it ([`View`]).
pub trait Speaker: View {
    fn announce(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> Result<()>;
    fn withdraw(&mut self, prefix: &str) -> Result<()>;
    /// Sends ROUTE-REFRESH to `neighbor` (asks it to resend); `false` when
    /// the daemon has no way to (GoBGP's soft reset in only replays its own
    /// Adj-RIB-In).
    fn refresh_in(&self, neighbor: &str) -> Result<bool>;
    /// UPDATEs received from `neighbor`, when the daemon counts them.
    fn updates_received(&self, neighbor: &str) -> Result<Option<u64>>;
    fn log(&self) -> String;
    fn kill9(&mut self);
    /// Starts again after [`Speaker::kill9`], as a restarting speaker.
    fn restart_graceful(&mut self, lab: &Lab) -> Result<()>;
    /// Starts again after [`Speaker::kill9`] without graceful restart
    /// recovery: its OPEN keeps the Graceful Restart Capability but with
    /// every F bit clear (BIRD without `-R`, gobgpd without `-r`).
    fn restart_cold(&mut self, lab: &Lab) -> Result<()>;
    fn stop(&mut self) -> Result<()>;
}

/// BIRD's BFD for every session with `bfd on`, at petrel's 300 ms × 3.
pub const BIRD_BFD: &str =
    "protocol bfd {\n  interface \"*\" { interval 300 ms; multiplier 3; };\n}\n";

/// Starts `kind` in `ns` as `spec` says.
pub fn start(kind: Kind, lab: &Lab, ns: &Netns, spec: &PeerSpec) -> Result<Box<dyn Speaker>> {
    Ok(match kind {
        Kind::Bird => {
            let mut c = bird::Config::new(&spec.router_id, spec.asn);
            c.kernel = spec.kernel;
            for (p, comms, large) in &spec.originate {
                c.originate(p, &strs(comms), &strs(large));
            }
            for n in &spec.neighbors {
                let mut p = bird::Peer::new(&bird::proto_name(&n.address), &n.address, n.asn)
                    .source(&n.local)
                    .families(n.ipv4, n.ipv6);
                p.password = n.password.clone();
                p.graceful_restart = n.graceful_restart;
                p.rr_client = n.rr_client;
                p.extended_next_hop = n.extended_nexthop;
                p.passive = n.passive;
                if n.bfd {
                    p.extra += "  bfd on;\n";
                }
                c.peer(p);
            }
            if spec.neighbors.iter().any(|n| n.bfd) {
                c.extra += BIRD_BFD;
            }
            let b = bird::Bird::start(lab, ns, &c.render())?;
            Box::new(BirdSpeaker {
                lab_bird: b,
                config: c,
            })
        }
        Kind::Frr => {
            let mut c = frr::Config::new(&spec.router_id, spec.asn);
            c.graceful_restart = spec
                .graceful_restart
                .or(spec.neighbors.iter().find_map(|n| n.graceful_restart));
            for (p, comms, large) in &spec.originate {
                c.originate(p, &strs(comms), &strs(large));
            }
            for n in &spec.neighbors {
                let mut x = frr::Neighbor::new(&n.address, n.asn)
                    .update_source(&n.local)
                    .families(n.ipv4, n.ipv6);
                x.password = n.password.clone();
                x.rr_client = n.rr_client;
                x.extended_nexthop = n.extended_nexthop;
                x.passive = n.passive;
                x.bfd = n.bfd;
                c.neighbor(x);
            }
            // bgpd's `neighbor X bfd` needs bfdd (defaults 300 ms × 3).
            let f = if spec.neighbors.iter().any(|n| n.bfd) {
                frr::Frr::start_with_bfdd(lab, ns, &c.render(), "")?
            } else {
                frr::Frr::start(lab, ns, &c.render())?
            };
            Box::new(FrrSpeaker { frr: f, config: c })
        }
        Kind::Gobgp => {
            let mut c = gobgp::Config::new(&spec.router_id, spec.asn);
            for (p, comms, large) in &spec.originate {
                c.originate(p, &strs(comms), &strs(large));
            }
            for n in &spec.neighbors {
                let mut x = gobgp::Neighbor::new(&n.address, n.asn)
                    .local_address(&n.local)
                    .families(n.ipv4, n.ipv6);
                x.password = n.password.clone();
                x.graceful_restart = n.graceful_restart;
                x.rr_client = n.rr_client;
                x.passive = n.passive;
                c.neighbor(x);
            }
            if spec.neighbors.iter().any(|n| n.bfd) {
                anyhow::bail!("GoBGP has no BFD");
            }
            Box::new(gobgp::Gobgp::start(lab, ns, &c)?)
        }
        Kind::Petreld => {
            let mut c = petreld::Config::new(&spec.router_id, spec.asn);
            c.graceful_restart = spec
                .graceful_restart
                .or(spec.neighbors.iter().find_map(|n| n.graceful_restart));
            for (p, comms, large) in &spec.originate {
                c.originate(p, &strs(comms), &strs(large));
            }
            // petreld listens where its sessions are, like the others.
            for n in &spec.neighbors {
                if !c.listen.iter().any(|l| l.contains(&n.local)) {
                    c.listen(&n.local);
                }
                let mut families = Vec::new();
                if n.ipv4 {
                    families.push("ipv4-unicast");
                }
                if n.ipv6 {
                    families.push("ipv6-unicast");
                }
                let mut x = petreld::Peer::new(&n.address, n.asn)
                    .local_address(&n.local)
                    .families(&families);
                x.password = n.password.clone();
                x.graceful_restart = n.graceful_restart;
                x.route_reflector_client = n.rr_client;
                x.passive = n.passive;
                if n.bfd {
                    x = x.bfd(300, 300, 3);
                }
                c.peer(x);
            }
            Box::new(petreld::Petreld::start(lab, ns, &c)?)
        }
    })
}

/// BIRD with the configuration it runs (announce/withdraw reconfigure it).
pub struct BirdSpeaker {
    pub lab_bird: bird::Bird,
    pub config: bird::Config,
}

impl View for bird::Bird {
    fn kind(&self) -> Kind {
        Kind::Bird
    }
    fn daemon(&self) -> &Daemon {
        bird::Bird::daemon(self)
    }
    /// `proto`: the protocol's name.
    fn established(&self, proto: &str) -> Result<bool> {
        bird::Bird::established(self, proto)
    }
    fn routes_from(&self, proto: &str) -> Result<Vec<Route>> {
        self.received(proto)
    }
    /// `neighbor`: its address (`show bfd sessions` has no protocol).
    fn bfd_state(&self, neighbor: &str) -> Result<Option<String>> {
        // `show bfd sessions`: IP address, interface, state, since, ...
        let out = self.birdc("show bfd sessions")?;
        Ok(out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&neighbor))
            .and_then(|w| w.get(2).map(|s| s.to_lowercase())))
    }
}

/// By the neighbour's address, as [`start`] names BIRD's protocols.
impl View for BirdSpeaker {
    fn kind(&self) -> Kind {
        Kind::Bird
    }
    fn daemon(&self) -> &Daemon {
        self.lab_bird.daemon()
    }
    fn established(&self, neighbor: &str) -> Result<bool> {
        self.lab_bird.established(&bird::proto_name(neighbor))
    }
    fn routes_from(&self, neighbor: &str) -> Result<Vec<Route>> {
        self.lab_bird.received(&bird::proto_name(neighbor))
    }
    fn bfd_state(&self, neighbor: &str) -> Result<Option<String>> {
        self.lab_bird.bfd_state(neighbor)
    }
}

impl Speaker for BirdSpeaker {
    fn announce(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> Result<()> {
        self.config.originate(prefix, communities, large);
        self.lab_bird.reconfigure(&self.config.render())
    }
    fn withdraw(&mut self, prefix: &str) -> Result<()> {
        self.config.originate.retain(|o| o.prefix != prefix);
        self.lab_bird.reconfigure(&self.config.render())
    }
    fn refresh_in(&self, neighbor: &str) -> Result<bool> {
        self.lab_bird
            .birdc(&format!("reload in {}", bird::proto_name(neighbor)))
            .map(|_| true)
    }
    fn updates_received(&self, neighbor: &str) -> Result<Option<u64>> {
        self.lab_bird
            .import_updates(&bird::proto_name(neighbor))
            .map(Some)
    }
    fn log(&self) -> String {
        self.lab_bird.log()
    }
    fn kill9(&mut self) {
        self.lab_bird.kill9()
    }
    fn restart_graceful(&mut self, lab: &Lab) -> Result<()> {
        self.lab_bird.restart_graceful(lab)
    }
    fn restart_cold(&mut self, lab: &Lab) -> Result<()> {
        self.lab_bird.restart(lab)
    }
    fn stop(&mut self) -> Result<()> {
        self.lab_bird.stop()
    }
}

/// FRR with the configuration it runs.
pub struct FrrSpeaker {
    pub frr: frr::Frr,
    pub config: frr::Config,
}

impl View for frr::Frr {
    fn kind(&self) -> Kind {
        Kind::Frr
    }
    fn daemon(&self) -> &Daemon {
        self.bgpd()
    }
    /// bgpd, and bfdd when it runs.
    fn daemons(&self) -> Vec<&Daemon> {
        std::iter::once(self.bgpd()).chain(self.bfdd()).collect()
    }
    fn established(&self, neighbor: &str) -> Result<bool> {
        Ok(self.state(neighbor)? == "Established")
    }
    fn routes_from(&self, neighbor: &str) -> Result<Vec<Route>> {
        self.received(neighbor)
    }
    fn bfd_state(&self, neighbor: &str) -> Result<Option<String>> {
        if self.bfdd().is_none() {
            return Ok(None);
        }
        Ok(self
            .bfd_peers()?
            .into_iter()
            .find(|p| p["peer"] == neighbor)
            .and_then(|p| p["status"].as_str().map(str::to_string)))
    }
}

impl View for FrrSpeaker {
    fn kind(&self) -> Kind {
        Kind::Frr
    }
    fn daemon(&self) -> &Daemon {
        self.frr.bgpd()
    }
    fn daemons(&self) -> Vec<&Daemon> {
        self.frr.daemons()
    }
    fn established(&self, neighbor: &str) -> Result<bool> {
        self.frr.established(neighbor)
    }
    fn routes_from(&self, neighbor: &str) -> Result<Vec<Route>> {
        self.frr.received(neighbor)
    }
    fn bfd_state(&self, neighbor: &str) -> Result<Option<String>> {
        self.frr.bfd_state(neighbor)
    }
}

impl Speaker for FrrSpeaker {
    fn announce(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> Result<()> {
        let i = self.config.originate.len();
        self.config.originate(prefix, communities, large);
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let mut lines = vec![format!("route-map ORIG{i} permit 10")];
        if !communities.is_empty() {
            lines.push(format!("set community {}", communities.join(" ")));
        }
        if !large.is_empty() {
            lines.push(format!("set large-community {}", large.join(" ")));
        }
        lines.push("exit".into());
        lines.push(format!("router bgp {}", self.config.asn));
        lines.push(format!("address-family {af} unicast"));
        lines.push(format!("network {prefix} route-map ORIG{i}"));
        self.frr
            .configure(&lines.iter().map(String::as_str).collect::<Vec<_>>())
    }
    fn withdraw(&mut self, prefix: &str) -> Result<()> {
        let i = self
            .config
            .originate
            .iter()
            .position(|o| o.prefix == prefix)
            .ok_or_else(|| anyhow::anyhow!("FRR does not originate {prefix}"))?;
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.frr.configure(&[
            &format!("router bgp {}", self.config.asn),
            &format!("address-family {af} unicast"),
            &format!("no network {prefix} route-map ORIG{i}"),
        ])
    }
    fn refresh_in(&self, neighbor: &str) -> Result<bool> {
        self.frr
            .vtysh(&format!("clear bgp {neighbor} soft in"))
            .map(|_| true)
            .or_else(|e| {
                // `clear` prints nothing on success, which vtysh() reports.
                if e.to_string().contains("\"\"") {
                    Ok(true)
                } else {
                    Err(e)
                }
            })
    }
    fn updates_received(&self, neighbor: &str) -> Result<Option<u64>> {
        self.frr.message_stat(neighbor, "updatesRecv").map(Some)
    }
    fn log(&self) -> String {
        self.frr.log()
    }
    fn kill9(&mut self) {
        self.frr.kill9()
    }
    fn restart_graceful(&mut self, lab: &Lab) -> Result<()> {
        // FRR restarts gracefully whenever `bgp graceful-restart` is set.
        self.frr.restart(lab)
    }
    fn restart_cold(&mut self, _lab: &Lab) -> Result<()> {
        anyhow::bail!("FRR restarts gracefully whenever `bgp graceful-restart` is set")
    }
    fn stop(&mut self) -> Result<()> {
        self.frr.stop()
    }
}

/// GoBGP has no BFD.
impl View for gobgp::Gobgp {
    fn kind(&self) -> Kind {
        Kind::Gobgp
    }
    fn daemon(&self) -> &Daemon {
        gobgp::Gobgp::daemon(self)
    }
    fn established(&self, neighbor: &str) -> Result<bool> {
        Ok(self.state(neighbor)? == "established")
    }
    fn routes_from(&self, neighbor: &str) -> Result<Vec<Route>> {
        self.received(neighbor)
    }
}

impl Speaker for gobgp::Gobgp {
    fn announce(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> Result<()> {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        self.add_route(prefix, &v(communities), &v(large))
    }
    fn withdraw(&mut self, prefix: &str) -> Result<()> {
        self.del_route(prefix)
    }
    fn refresh_in(&self, _neighbor: &str) -> Result<bool> {
        Ok(false)
    }
    fn updates_received(&self, neighbor: &str) -> Result<Option<u64>> {
        self.received_messages(neighbor, "update").map(Some)
    }
    fn log(&self) -> String {
        gobgp::Gobgp::log(self)
    }
    fn kill9(&mut self) {
        gobgp::Gobgp::kill9(self)
    }
    fn restart_graceful(&mut self, lab: &Lab) -> Result<()> {
        gobgp::Gobgp::restart_graceful(self, lab)
    }
    fn restart_cold(&mut self, lab: &Lab) -> Result<()> {
        gobgp::Gobgp::restart(self, lab)
    }
    fn stop(&mut self) -> Result<()> {
        gobgp::Gobgp::stop(self)
    }
}

impl View for petreld::Petreld {
    fn kind(&self) -> Kind {
        Kind::Petreld
    }
    fn daemon(&self) -> &Daemon {
        petreld::Petreld::daemon(self)
    }
    fn established(&self, neighbor: &str) -> Result<bool> {
        Ok(self
            .peers()?
            .iter()
            .any(|p| p.address == neighbor && p.state == "Established"))
    }
    fn routes_from(&self, neighbor: &str) -> Result<Vec<Route>> {
        self.received(neighbor)
    }
    fn bfd_state(&self, neighbor: &str) -> Result<Option<String>> {
        let v = self.bfd()?;
        Ok(v.iter()
            .find(|s| s["peer"].as_str() == Some(neighbor))
            .and_then(|s| s["state"].as_str())
            .map(str::to_lowercase))
    }
}

impl Speaker for petreld::Petreld {
    /// A new origination in petreld.toml, then SIGHUP.
    fn announce(&mut self, prefix: &str, communities: &[&str], large: &[&str]) -> Result<()> {
        let mut c = self.config().clone();
        c.originate(prefix, communities, large);
        self.reload(&c)
    }
    fn withdraw(&mut self, prefix: &str) -> Result<()> {
        let mut c = self.config().clone();
        c.originate.retain(|(p, _, _)| p != prefix);
        self.reload(&c)
    }
    fn refresh_in(&self, neighbor: &str) -> Result<bool> {
        self.ctl(&["peer", "refresh", neighbor])?;
        Ok(true)
    }
    /// petreld counts prefixes, not UPDATE messages.
    fn updates_received(&self, _neighbor: &str) -> Result<Option<u64>> {
        Ok(None)
    }
    fn log(&self) -> String {
        petreld::Petreld::log(self)
    }
    fn kill9(&mut self) {
        petreld::Petreld::kill9(self)
    }
    /// Starts again with the same petreld.toml: petreld restarts as a
    /// restarting speaker whenever graceful restart is configured.
    fn restart_graceful(&mut self, lab: &Lab) -> Result<()> {
        self.restart(lab)
    }
    /// petreld keeps its kernel routes across every restart and says so
    /// (F=1) whenever graceful restart is configured: there is no cold
    /// restart to ask for.
    fn restart_cold(&mut self, _lab: &Lab) -> Result<()> {
        anyhow::bail!(
            "petreld has no cold restart with graceful restart configured (F is always 1)"
        )
    }
    fn stop(&mut self) -> Result<()> {
        petreld::Petreld::stop(self)
    }
}

/// Two namespaces, `petrel` and `peer`, on one link:
/// 10.99.1.1/24 + fd00:99:1::1/64 (petrel) and .2 / ::2 (peer).
pub struct Pair {
    pub lab: Lab,
    pub petrel: Netns,
    pub peer: Netns,
    pub link: Link,
}

/// See [`Pair`].
pub fn pair(tag: &str) -> Result<Pair> {
    let lab = Lab::new(tag)?;
    let petrel = lab.netns("petrel")?;
    let peer = lab.netns("peer")?;
    let link = lab.link(
        &petrel,
        &[&format!("{PETREL4}/24"), &format!("{PETREL6}/64")],
        &peer,
        &[&format!("{PEER4}/24"), &format!("{PEER6}/64")],
    )?;
    Ok(Pair {
        lab,
        petrel,
        peer,
        link,
    })
}

/// Waits until `f` holds, failing at once if `check` fails at any poll
/// (e.g. "the route is still there": continuity across an event).
pub fn wait_while_holding<T>(
    what: &str,
    daemons: &[&Daemon],
    mut check: impl FnMut() -> Result<()>,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let mut broken = None;
    let r = wait_until(what, daemons, || {
        if let Err(e) = check() {
            broken = Some(e);
            return Ok(Some(None));
        }
        Ok(f()?.map(Some))
    })?;
    match (r, broken) {
        (Some(v), _) => Ok(v),
        (None, Some(e)) => {
            let mut msg = format!("while waiting for {what}");
            for d in daemons {
                msg += &format!("\n----- {} log -----\n{}", d.name(), d.log_tail(40));
            }
            Err(e.context(msg))
        }
        (None, None) => unreachable!("wait_until only returns Some(None) when check failed"),
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
