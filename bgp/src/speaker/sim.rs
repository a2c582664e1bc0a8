//! An in-memory network of speakers in virtual time.
//!
//! Each node is a [`SpeakerCore`] with, per peer, what `session::peer` does
//! with a socket done on in-memory pipes instead: a real [`Fsm`], a real
//! collision [`Arbiter`], messages encoded and decoded with the session's
//! codec. A connection attempt is a pipe; the far node's listener hands it
//! to its session as the speaker's would. Events run in FIFO order; when
//! none is left the clock jumps to the earliest timer (FSM, collision,
//! core). Nothing sleeps, nothing needs root, and a run is deterministic.
//!
//! The scenarios: connection collisions (RFC 4271 §6.8), graceful restart as
//! helper and as restarting speaker (RFC 4724 §4.1, §4.2), max-prefix
//! (RFC 4486), enhanced route refresh (RFC 7313) and which settings
//! changes reset a session.

use super::core::{Input, Output, SessionCommand, SessionSetup, SpeakerCore};
use super::{GracefulRestartSettings, MaxPrefixAction, PeerSettings, SpeakerConfig};
use crate::fsm::{Action, DownReason, Event, Fsm, State, Timer};
use crate::rib::LocRibChange;
use crate::session::collision::{Admit, Arbiter, Resolution, COLLISION_CEASE};
use crate::session::{PeerEvent, PeerEventKind, SessionId};
use crate::wire::attr::PathAttributes;
use crate::wire::capability::{Capability, GracefulRestart, GracefulRestartFamily};
use crate::wire::family::Family;
use crate::wire::header::{split_message, HEADER_LEN};
use crate::wire::notification::{CeaseError, ErrorCode};
use crate::wire::{CodecContext, Message, Notification, Open, Prefix, RefreshSubtype};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

type NodeId = usize;
type PipeId = usize;

/// One TCP connection: two byte streams and who opened it.
struct Pipe {
    initiator: NodeId,
    ends: [NodeId; 2],
    /// Bytes waiting to be read at each end.
    inbox: [BytesMut; 2],
    /// The other end closed: EOF once `inbox` is read.
    eof: [bool; 2],
}

impl Pipe {
    fn end(&self, node: NodeId) -> usize {
        usize::from(self.ends[1] == node)
    }
}

enum NetEvent {
    /// `node`'s connection attempt to `peer` completed (or failed: `None`).
    Connected {
        node: NodeId,
        peer: IpAddr,
        pipe: Option<PipeId>,
    },
    /// A connection from `from` reached `node`'s listener.
    Accepted {
        node: NodeId,
        from: IpAddr,
        pipe: PipeId,
    },
    /// Bytes or EOF to read at `node`'s end of `pipe`.
    Readable { node: NodeId, pipe: PipeId },
    /// `node` starts its connection attempt to `peer`, if still wanted.
    Dial { node: NodeId, peer: IpAddr },
}

/// A message seen on the wire.
#[derive(Clone, Debug)]
struct Sent {
    from: IpAddr,
    to: IpAddr,
    pipe: PipeId,
    msg: Message,
}

/// The network: pipes, events, the clock and a record of every message.
struct Wires {
    now: Instant,
    pipes: Vec<Pipe>,
    events: VecDeque<NetEvent>,
    addrs: Vec<IpAddr>,
    /// Nodes running (a crashed node's address refuses connections).
    up: Vec<bool>,
    trace: Vec<Sent>,
    /// How long a node's connection attempts take to reach the peer's
    /// listener (none: at once). Its own side completes at once, so it may
    /// write before the peer has accepted: the bytes wait in the pipe.
    syn_delay: BTreeMap<NodeId, Duration>,
    /// Events due later, with when.
    later: Vec<(Instant, NetEvent)>,
}

impl Wires {
    fn node_of(&self, addr: IpAddr) -> Option<NodeId> {
        self.addrs.iter().position(|a| *a == addr)
    }

    fn write(&mut self, from: NodeId, pipe: PipeId, bytes: &[u8], ctx: &CodecContext) {
        let p = &mut self.pipes[pipe];
        let to_end = 1 - p.end(from);
        if p.eof[1 - to_end] {
            return; // we closed it
        }
        let to = p.ends[to_end];
        p.inbox[to_end].extend_from_slice(bytes);
        // The trace decodes what went out, with the writer's codec.
        let mut b = BytesMut::from(bytes);
        while let Ok(Some((h, raw))) = split_message(&mut b, 65535) {
            let body = raw.freeze().slice(HEADER_LEN..);
            if let Ok(msg) = Message::decode_body(ctx, h.msg_type, &body) {
                self.trace.push(Sent {
                    from: self.addrs[from],
                    to: self.addrs[to],
                    pipe,
                    msg,
                });
            }
        }
        self.events.push_back(NetEvent::Readable { node: to, pipe });
    }

    fn close(&mut self, from: NodeId, pipe: PipeId) {
        let p = &mut self.pipes[pipe];
        let mine = p.end(from);
        if p.eof[mine] && p.eof[1 - mine] {
            return;
        }
        // Our end reads nothing more; the other reads EOF after the data.
        p.eof[mine] = true;
        p.inbox[mine].clear();
        let other = p.ends[1 - mine];
        p.eof[1 - mine] = true;
        self.events
            .push_back(NetEvent::Readable { node: other, pipe });
    }

    fn is_open(&self, pipe: PipeId) -> bool {
        let p = &self.pipes[pipe];
        !(p.eof[0] && p.eof[1])
    }
}

/// One connection as a session holds it.
#[derive(Clone, Copy, Debug)]
struct Conn {
    pipe: PipeId,
    outgoing: bool,
    /// Our OPEN went out on it as a collision's second connection.
    open_sent: bool,
}

/// `session::peer`'s job for one peer, on pipes.
struct Sess {
    id: SessionId,
    fsm: Fsm,
    arbiter: Arbiter,
    conn: Option<Conn>,
    second: Option<Conn>,
    connecting: bool,
    timers: BTreeMap<Timer, Instant>,
    peer_gr: bool,
}

/// One speaker: its core, its sessions and the FIB its changes build.
struct Node {
    id: NodeId,
    core: SpeakerCore,
    /// Ordered, so that a run is the same every time.
    sessions: BTreeMap<IpAddr, Sess>,
    /// Session events waiting for the core (the driver's event channel).
    inbox: VecDeque<PeerEvent>,
    fib: BTreeMap<Prefix, IpAddr>,
    /// Every FIB change, in order.
    fib_log: Vec<LocRibChange>,
    converged_at: Option<Instant>,
    /// Why each session went down, in order.
    downs: Vec<(IpAddr, DownReason)>,
}

impl Node {
    fn new(id: NodeId, cfg: SpeakerConfig, now: Instant) -> Self {
        let core = SpeakerCore::new(cfg, now);
        let converged_at = core.converged().then_some(now);
        Self {
            id,
            core,
            sessions: BTreeMap::new(),
            inbox: VecDeque::new(),
            fib: BTreeMap::new(),
            fib_log: Vec::new(),
            converged_at,
            downs: Vec::new(),
        }
    }

    /// Carries out the core's outputs and feeds it the sessions' events
    /// until both are exhausted, as the tokio driver does.
    fn pump(&mut self, w: &mut Wires) {
        loop {
            while let Some(o) = self.core.poll_output() {
                self.output(w, o);
            }
            match self.inbox.pop_front() {
                Some(ev) => self.core.handle(w.now, Input::Session(ev)),
                None if self.core.has_undecided() => self.core.decide_undecided(),
                None => return,
            }
        }
    }

    fn output(&mut self, w: &mut Wires, o: Output) {
        match o {
            Output::Fib(changes) => {
                for c in changes {
                    match &c {
                        LocRibChange::Best { prefix, .. } => {
                            self.fib.insert(*prefix, w.addrs[self.id]);
                        }
                        LocRibChange::Unreachable { prefix } => {
                            self.fib.remove(prefix);
                        }
                    }
                    self.fib_log.push(c);
                }
            }
            Output::AddSession(setup) => {
                let SessionSetup {
                    settings, id, fsm, ..
                } = *setup;
                let arbiter = Arbiter::new(fsm.local_id);
                self.sessions.insert(
                    settings.address,
                    Sess {
                        id,
                        fsm: Fsm::new(fsm),
                        arbiter,
                        conn: None,
                        second: None,
                        connecting: false,
                        timers: BTreeMap::new(),
                        peer_gr: false,
                    },
                );
            }
            Output::RemoveSession(settings) => {
                self.sessions.remove(&settings.address);
            }
            Output::Session(addr, c) => self.command(w, addr, c),
            Output::Converged => {
                self.converged_at.get_or_insert(w.now);
            }
            // Its FIB is a map: nothing to hold.
            Output::Sweeping(_) => {}
        }
    }

    fn command(&mut self, w: &mut Wires, addr: IpAddr, c: SessionCommand) {
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        match c {
            SessionCommand::Start => self.feed(w, addr, Event::ManualStart),
            SessionCommand::Stop { communication } => {
                s.arbiter.reset();
                self.drop_second(w, addr);
                self.feed(w, addr, Event::ManualStop { communication })
            }
            SessionCommand::AdminDown { notification, idle } => {
                s.arbiter.reset();
                self.drop_second(w, addr);
                self.feed(w, addr, Event::AdminDown { notification, idle })
            }
            SessionCommand::RestartState(on) => s.fsm.set_restart_state(on),
            SessionCommand::Send(msgs) => {
                if s.fsm.state() == State::Established {
                    if let Some(c) = s.conn {
                        for m in msgs {
                            w.write(self.id, c.pipe, &m, s.fsm.codec());
                        }
                    }
                }
            }
            SessionCommand::SendMessage(m) => {
                if s.fsm.state() == State::Established {
                    if let (Some(c), Ok(b)) = (s.conn, m.to_bytes(s.fsm.codec())) {
                        w.write(self.id, c.pipe, &b, s.fsm.codec());
                    }
                }
            }
        }
    }

    fn drop_second(&mut self, w: &mut Wires, addr: IpAddr) {
        if let Some(s) = self.sessions.get_mut(&addr) {
            s.arbiter.second_gone();
            if let Some(c) = s.second.take() {
                w.close(self.id, c.pipe);
            }
        }
    }

    /// Closes a connection we do not want with Cease / Connection
    /// Collision Resolution.
    fn reject(&mut self, w: &mut Wires, pipe: PipeId) {
        let n = Notification::bare(COLLISION_CEASE);
        let ctx = CodecContext::default();
        let b = Message::Notification(n).to_bytes(&ctx).unwrap();
        w.write(self.id, pipe, &b, &ctx);
        w.close(self.id, pipe);
    }

    fn feed(&mut self, w: &mut Wires, addr: IpAddr, ev: Event) {
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let before = s.fsm.state();
        let actions = s.fsm.handle(ev);
        for a in actions {
            self.act(w, addr, a);
        }
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let after = s.fsm.state();
        if before != after {
            self.inbox.push_back(PeerEvent {
                peer: addr,
                session: s.id,
                kind: PeerEventKind::State(after),
            });
        }
        // §6.8: Established closes a second connection left.
        if after == State::Established && s.arbiter.established() {
            if let Some(c) = s.second.take() {
                self.reject(w, c.pipe);
            }
        }
    }

    fn act(&mut self, w: &mut Wires, addr: IpAddr, a: Action) {
        let me = self.id;
        let Some(s) = self.sessions.get_mut(&addr) else {
            return;
        };
        let session = s.id;
        match a {
            Action::Connect => {
                // Like the driver's connect future, the attempt starts only
                // once this event's handling is over (and not if it was
                // dropped meanwhile).
                s.connecting = true;
                w.events.push_back(NetEvent::Dial {
                    node: me,
                    peer: addr,
                });
            }
            Action::Disconnect => {
                s.connecting = false;
                if let Some(c) = s.conn.take() {
                    w.close(me, c.pipe);
                }
            }
            Action::Send(m) => {
                let Some(c) = s.conn.as_mut() else {
                    return;
                };
                if matches!(m, Message::Open(_)) && std::mem::take(&mut c.open_sent) {
                    return;
                }
                let pipe = c.pipe;
                let b = m.to_bytes(s.fsm.codec()).unwrap();
                w.write(me, pipe, &b, s.fsm.codec());
            }
            Action::StartTimer(t, d) => {
                s.timers.insert(t, w.now + d);
            }
            Action::StopTimer(t) => {
                s.timers.remove(&t);
            }
            Action::Established { ctx, remote } => {
                s.peer_gr = remote
                    .capabilities()
                    .any(|c| matches!(c, Capability::GracefulRestart(_)));
                s.arbiter.session_up(w.now);
                let local = Some(SocketAddr::new(w.addrs[me], 179));
                self.inbox.push_back(PeerEvent {
                    peer: addr,
                    session,
                    kind: PeerEventKind::Established { ctx, remote, local },
                });
            }
            Action::Down {
                reason,
                was_established,
            } => {
                self.downs.push((addr, reason.clone()));
                self.inbox.push_back(PeerEvent {
                    peer: addr,
                    session,
                    kind: PeerEventKind::Down {
                        reason,
                        was_established,
                    },
                });
            }
            Action::Update(u) => self.inbox.push_back(PeerEvent {
                peer: addr,
                session,
                kind: PeerEventKind::Update(u),
            }),
            Action::RouteRefresh(r) => self.inbox.push_back(PeerEvent {
                peer: addr,
                session,
                kind: PeerEventKind::RouteRefresh(r),
            }),
        }
    }

    /// The SYN goes out: a pipe to the peer's listener (after the
    /// initiator's `syn_delay`), or a failure if nothing listens there.
    fn dial(&mut self, w: &mut Wires, peer: IpAddr) {
        let me = self.id;
        if !self.sessions.get(&peer).is_some_and(|s| s.connecting) {
            return;
        }
        let pipe = match w.node_of(peer) {
            Some(to) if w.up[to] => {
                w.pipes.push(Pipe {
                    initiator: me,
                    ends: [me, to],
                    inbox: [BytesMut::new(), BytesMut::new()],
                    eof: [false, false],
                });
                let pipe = w.pipes.len() - 1;
                let ev = NetEvent::Accepted {
                    node: to,
                    from: w.addrs[me],
                    pipe,
                };
                match w.syn_delay.get(&me) {
                    Some(d) => w.later.push((w.now + *d, ev)),
                    None => w.events.push_back(ev),
                }
                Some(pipe)
            }
            _ => None,
        };
        w.events.push_back(NetEvent::Connected {
            node: me,
            peer,
            pipe,
        });
    }

    fn connected(&mut self, w: &mut Wires, peer: IpAddr, pipe: Option<PipeId>) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            if let Some(p) = pipe {
                w.close(self.id, p);
            }
            return;
        };
        if !std::mem::take(&mut s.connecting) {
            // Given up meanwhile (Disconnect): the connection goes.
            if let Some(p) = pipe {
                w.close(self.id, p);
            }
            return;
        }
        match pipe {
            None if s.conn.is_some() => {}
            None => self.feed(w, peer, Event::TcpFails),
            Some(p) if s.conn.is_some() => {
                match s.arbiter.connected_while_busy(w.now, s.fsm.state()) {
                    Admit::Second => self.hold_second(w, peer, p, true),
                    _ => self.reject(w, p),
                }
            }
            Some(p) => {
                s.conn = Some(Conn {
                    pipe: p,
                    outgoing: true,
                    open_sent: false,
                });
                self.feed(w, peer, Event::TcpConnected);
            }
        }
    }

    fn accepted(&mut self, w: &mut Wires, from: IpAddr, pipe: PipeId) {
        // What the peer wrote before we accepted is read once we hold it.
        w.events.push_back(NetEvent::Readable {
            node: self.id,
            pipe,
        });
        if !self.core.accepts(from) {
            w.close(self.id, pipe);
            return;
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            w.close(self.id, pipe);
            return;
        };
        let conn = Conn {
            pipe,
            outgoing: false,
            open_sent: false,
        };
        match s.arbiter.incoming(w.now, s.fsm.state(), s.peer_gr) {
            Admit::StartAndAccept => {
                self.feed(w, from, Event::ManualStart);
                let s = self.sessions.get_mut(&from).unwrap();
                s.connecting = false;
                if matches!(s.fsm.state(), State::Connect | State::Active) {
                    s.conn = Some(conn);
                    self.feed(w, from, Event::TcpAccepted);
                }
            }
            Admit::Refuse => w.close(self.id, pipe),
            Admit::Accept => {
                s.conn = Some(conn);
                self.feed(w, from, Event::TcpAccepted);
            }
            Admit::ReplaceRestarted => {
                if let Some(old) = s.conn.take() {
                    w.close(self.id, old.pipe);
                }
                self.feed(w, from, Event::TcpFails);
                self.feed(w, from, Event::ManualStart);
                let s = self.sessions.get_mut(&from).unwrap();
                s.connecting = false;
                s.conn = Some(conn);
                self.feed(w, from, Event::TcpAccepted);
            }
            Admit::Reject => self.reject(w, pipe),
            Admit::Second => self.hold_second(w, from, pipe, false),
        }
    }

    /// §6.8: our OPEN goes out on the second connection at once.
    fn hold_second(&mut self, w: &mut Wires, peer: IpAddr, pipe: PipeId, outgoing: bool) {
        let s = self.sessions.get_mut(&peer).unwrap();
        let ctx = CodecContext::default();
        let b = Message::Open(s.fsm.local_open()).to_bytes(&ctx).unwrap();
        w.write(self.id, pipe, &b, &ctx);
        s.second = Some(Conn {
            pipe,
            outgoing,
            open_sent: true,
        });
        if s.fsm.state() == State::OpenConfirm {
            if let Some(id) = s.fsm.remote_open().map(|o| o.bgp_id) {
                self.resolve(w, peer, id, None);
            }
        }
    }

    /// Returns whether the FSM's connection stayed.
    fn resolve(
        &mut self,
        w: &mut Wires,
        peer: IpAddr,
        remote_id: Ipv4Addr,
        open: Option<Open>,
    ) -> bool {
        let s = self.sessions.get_mut(&peer).unwrap();
        let existing = s.conn.map(|c| c.outgoing);
        let Some(r) = s.arbiter.resolve(remote_id, existing) else {
            return true;
        };
        let Some(second) = s.second.take() else {
            return true;
        };
        match r {
            Resolution::KeepExisting => {
                self.reject(w, second.pipe);
                true
            }
            Resolution::UseSecond { outgoing } => {
                if let Some(c) = s.conn.take() {
                    self.reject(w, c.pipe);
                    self.feed(w, peer, Event::TcpFails);
                }
                let s = self.sessions.get_mut(&peer).unwrap();
                if s.fsm.state() == State::Idle {
                    self.feed(w, peer, Event::ManualStart);
                }
                let s = self.sessions.get_mut(&peer).unwrap();
                s.connecting = false;
                if !matches!(s.fsm.state(), State::Connect | State::Active) {
                    w.close(self.id, second.pipe);
                    return false;
                }
                s.conn = Some(Conn {
                    pipe: second.pipe,
                    outgoing,
                    open_sent: true,
                });
                self.feed(
                    w,
                    peer,
                    if outgoing {
                        Event::TcpConnected
                    } else {
                        Event::TcpAccepted
                    },
                );
                if let Some(open) = open {
                    self.feed(w, peer, Event::Received(Message::Open(open)));
                }
                false
            }
        }
    }

    fn readable(&mut self, w: &mut Wires, pipe: PipeId) {
        let Some(peer) = self.sessions.iter().find_map(|(a, s)| {
            (s.conn.is_some_and(|c| c.pipe == pipe) || s.second.is_some_and(|c| c.pipe == pipe))
                .then_some(*a)
        }) else {
            return; // a connection we no longer hold
        };
        let is_second = self.sessions[&peer].second.is_some_and(|c| c.pipe == pipe);
        if is_second {
            self.second_read(w, peer, pipe);
        } else {
            self.drain(w, peer, pipe);
        }
    }

    fn take_message(
        w: &mut Wires,
        node: NodeId,
        pipe: PipeId,
        ctx: &CodecContext,
    ) -> Option<Result<Message, Notification>> {
        let p = &mut w.pipes[pipe];
        let end = p.end(node);
        match split_message(&mut p.inbox[end], ctx.max_message_len) {
            Ok(Some((h, raw))) => {
                let body: Bytes = raw.freeze().slice(HEADER_LEN..);
                Some(Message::decode_body(ctx, h.msg_type, &body))
            }
            Ok(None) => None,
            Err(n) => Some(Err(n)),
        }
    }

    fn at_eof(w: &Wires, node: NodeId, pipe: PipeId) -> bool {
        let p = &w.pipes[pipe];
        let end = p.end(node);
        p.eof[end] && p.inbox[end].is_empty()
    }

    fn drain(&mut self, w: &mut Wires, peer: IpAddr, pipe: PipeId) {
        loop {
            let Some(s) = self.sessions.get_mut(&peer) else {
                return;
            };
            let Some(c) = s.conn.filter(|c| c.pipe == pipe).or(s.conn) else {
                return;
            };
            let pipe = c.pipe;
            let ctx = s.fsm.codec().clone();
            let Some(m) = Self::take_message(w, self.id, pipe, &ctx) else {
                if Self::at_eof(w, self.id, pipe) {
                    s.conn = None;
                    self.feed(w, peer, Event::TcpFails);
                }
                return;
            };
            let ev = match m {
                Ok(Message::Open(o)) if s.arbiter.has_second() => {
                    if !self.resolve(w, peer, o.bgp_id, None) {
                        continue; // now on the second connection
                    }
                    Event::Received(Message::Open(o))
                }
                Ok(Message::Notification(n)) => {
                    s.arbiter.notification(w.now, s.fsm.state(), &n);
                    Event::Received(Message::Notification(n))
                }
                Ok(m) => Event::Received(m),
                Err(n) => Event::DecodeError(n),
            };
            self.feed(w, peer, ev);
        }
    }

    fn second_read(&mut self, w: &mut Wires, peer: IpAddr, pipe: PipeId) {
        let ctx = CodecContext::default();
        let open = match Self::take_message(w, self.id, pipe, &ctx) {
            None if !Self::at_eof(w, self.id, pipe) => return,
            Some(Ok(Message::Open(o))) => Some(o),
            _ => None,
        };
        let s = self.sessions.get_mut(&peer).unwrap();
        let Some(open) = open else {
            s.arbiter.second_gone();
            s.second = None;
            w.close(self.id, pipe);
            return;
        };
        if s.fsm.state() == State::Established {
            s.arbiter.second_gone();
            s.second = None;
            self.reject(w, pipe);
            return;
        }
        if !self.resolve(w, peer, open.bgp_id, Some(open)) {
            self.drain(w, peer, pipe);
        }
    }

    /// The earliest timer of this node's sessions and core.
    fn next_timer(&self) -> Option<Instant> {
        self.sessions
            .values()
            .flat_map(|s| {
                s.timers
                    .values()
                    .copied()
                    .chain(s.arbiter.second_deadline())
            })
            .chain(self.core.poll_timeout())
            .min()
    }

    fn fire_timers(&mut self, w: &mut Wires) {
        let now = w.now;
        let peers: Vec<IpAddr> = self.sessions.keys().copied().collect();
        for peer in peers {
            let Some(s) = self.sessions.get_mut(&peer) else {
                continue;
            };
            if s.arbiter.second_deadline().is_some_and(|t| t <= now) {
                s.arbiter.second_gone();
                if let Some(c) = s.second.take() {
                    self.reject(w, c.pipe);
                }
            }
            let Some(s) = self.sessions.get_mut(&peer) else {
                continue;
            };
            let mut due: Vec<(Instant, Timer)> = s
                .timers
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, t)| (*t, *k))
                .collect();
            due.sort();
            for (_, t) in due {
                self.sessions.get_mut(&peer).unwrap().timers.remove(&t);
                self.feed(w, peer, Event::TimerExpired(t));
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle(now, Input::Timeout);
        }
    }
}

/// The network of speakers.
struct Sim {
    w: Wires,
    nodes: Vec<Node>,
    cfgs: Vec<SpeakerConfig>,
    start: Instant,
}

const AS_BASE: u32 = 65000;

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1))
}

fn pfx(s: &str) -> Prefix {
    s.parse().unwrap()
}

impl Sim {
    /// `n` speakers, AS 65000 + i, address and BGP Identifier 10.0.0.(i+1);
    /// `restarting`: the speakers with graceful restart configured
    /// speaker-wide (restart time 120 s), hence selection deferral at start.
    fn new(n: usize, restarting: &[usize]) -> Self {
        let start = Instant::now();
        let mut cfgs = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let IpAddr::V4(id) = addr(i) else {
                unreachable!()
            };
            let cfg = SpeakerConfig {
                local_as: AS_BASE + i as u32,
                router_id: id,
                cluster_id: None,
                listen: Vec::new(),
                graceful_restart: restarting.contains(&i).then_some(GR),
                max_paths: 1,
                threads: 1,
                bfd: Default::default(),
            };
            nodes.push(Node::new(i, cfg.clone(), start));
            cfgs.push(cfg);
        }
        Sim {
            w: Wires {
                now: start,
                pipes: Vec::new(),
                events: VecDeque::new(),
                addrs: (0..n).map(addr).collect(),
                up: vec![true; n],
                trace: Vec::new(),
                syn_delay: BTreeMap::new(),
                later: Vec::new(),
            },
            nodes,
            cfgs,
            start,
        }
    }

    fn elapsed(&self) -> Duration {
        self.w.now - self.start
    }

    /// A speaker's settings for peer `b` (eBGP, graceful restart offered
    /// per peer).
    fn settings(b: usize) -> PeerSettings {
        let mut p = PeerSettings::new(addr(b), AS_BASE + b as u32);
        p.graceful_restart = Some(GR);
        p
    }

    fn add_peer(&mut self, a: usize, p: PeerSettings) {
        let now = self.w.now;
        self.nodes[a].core.add_peer(now, p).unwrap();
        self.nodes[a].pump(&mut self.w);
    }

    /// Peers `a` and `b` with each other, both starting at once.
    fn link(&mut self, a: usize, b: usize) {
        let (pa, pb) = (Sim::settings(b), Sim::settings(a));
        self.add_peer(a, pa);
        self.add_peer(b, pb);
    }

    fn originate(&mut self, a: usize, prefix: &str) {
        self.nodes[a]
            .core
            .originate(pfx(prefix), PathAttributes::default());
        self.nodes[a].pump(&mut self.w);
    }

    /// Runs events, then timers, until `until` holds or `limit` of virtual
    /// time has passed. Returns whether `until` held.
    fn run_until(&mut self, limit: Duration, until: impl Fn(&Sim) -> bool) -> bool {
        let end = self.w.now + limit;
        loop {
            while let Some(ev) = self.w.events.pop_front() {
                let node = match &ev {
                    NetEvent::Connected { node, .. }
                    | NetEvent::Accepted { node, .. }
                    | NetEvent::Readable { node, .. }
                    | NetEvent::Dial { node, .. } => *node,
                };
                if !self.w.up[node] {
                    continue;
                }
                let n = &mut self.nodes[node];
                match ev {
                    NetEvent::Connected { peer, pipe, .. } => n.connected(&mut self.w, peer, pipe),
                    NetEvent::Accepted { from, pipe, .. } => n.accepted(&mut self.w, from, pipe),
                    NetEvent::Readable { pipe, .. } => n.readable(&mut self.w, pipe),
                    NetEvent::Dial { peer, .. } => n.dial(&mut self.w, peer),
                }
                n.pump(&mut self.w);
                if until(self) {
                    return true;
                }
            }
            if until(self) {
                return true;
            }
            let next = self
                .nodes
                .iter()
                .filter(|n| self.w.up[n.id])
                .filter_map(|n| n.next_timer())
                .chain(self.w.later.iter().map(|(t, _)| *t))
                .min();
            match next {
                Some(t) if t <= end => {
                    self.w.now = self.w.now.max(t);
                    let now = self.w.now;
                    let (due, rest): (Vec<_>, Vec<_>) =
                        self.w.later.drain(..).partition(|(t, _)| *t <= now);
                    self.w.later = rest;
                    self.w.events.extend(due.into_iter().map(|(_, ev)| ev));
                    for i in 0..self.nodes.len() {
                        if self.w.up[i] {
                            self.nodes[i].fire_timers(&mut self.w);
                            self.nodes[i].pump(&mut self.w);
                        }
                    }
                }
                _ => {
                    self.w.now = end;
                    return until(self);
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn state(&self, a: usize, b: usize) -> Option<State> {
        self.nodes[a].sessions.get(&addr(b)).map(|s| s.fsm.state())
    }

    fn established(&self, a: usize, b: usize) -> bool {
        self.state(a, b) == Some(State::Established) && self.state(b, a) == Some(State::Established)
    }

    /// The pipe `a`'s session with `b` runs on.
    fn conn(&self, a: usize, b: usize) -> Option<PipeId> {
        self.nodes[a].sessions.get(&addr(b))?.conn.map(|c| c.pipe)
    }

    /// `a`'s routes for `prefix`: (peer, best, stale).
    fn route(&self, a: usize, prefix: &str) -> Vec<(Option<IpAddr>, bool, bool)> {
        self.nodes[a]
            .core
            .routes(Some(pfx(prefix)))
            .into_iter()
            .map(|r| (r.peer, r.best, r.stale))
            .collect()
    }

    /// A crash: the node's connections close with no NOTIFICATION (the
    /// kernel's FIN), its state is gone, its address refuses connections.
    fn crash(&mut self, a: usize) {
        self.w.up[a] = false;
        for p in 0..self.w.pipes.len() {
            if self.w.pipes[p].ends.contains(&a) && self.w.is_open(p) {
                self.w.close(a, p);
            }
        }
    }

    /// The node starts again: a new core (a restarting speaker if graceful
    /// restart is configured), its FIB as the kernel kept it.
    fn restart(&mut self, a: usize) {
        self.w.up[a] = true;
        let fib = std::mem::take(&mut self.nodes[a].fib);
        self.nodes[a] = Node::new(a, self.cfgs[a].clone(), self.w.now);
        self.nodes[a].fib = fib;
    }

    /// Messages `from` sent `to`, in order.
    fn sent(&self, from: usize, to: usize) -> Vec<&Message> {
        self.w
            .trace
            .iter()
            .filter(|s| s.from == addr(from) && s.to == addr(to))
            .map(|s| &s.msg)
            .collect()
    }
}

const GR: GracefulRestartSettings = GracefulRestartSettings {
    restart_time: 120,
    long_lived_stale_time: None,
    notification: true,
};

fn announces(m: &Message, prefix: &str) -> bool {
    matches!(m, Message::Update(u) if u.nlri.iter().any(|e| e.prefix == pfx(prefix)))
}

fn is_eor(m: &Message) -> bool {
    matches!(m, Message::Update(u) if u.end_of_rib_family().is_some())
}

/// RFC 4271 §6.8: both speakers connect at once. Both connections carry
/// OPENs, each side resolves with the same rule, and exactly one connection
/// survives: the one the higher BGP Identifier (10.0.0.2) initiated; the
/// other is closed with Cease / Connection Collision Resolution (6/7).
#[test]
fn collision_keeps_the_higher_identifiers_connection() {
    let mut sim = Sim::new(2, &[]);
    sim.link(0, 1);
    assert!(sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)));
    assert_eq!(sim.w.pipes.len(), 2, "one connection each way, no retry");

    let kept = sim.conn(0, 1).unwrap();
    assert_eq!(
        sim.conn(1, 0),
        Some(kept),
        "both sides on the same connection"
    );
    assert_eq!(
        sim.w.pipes[kept].initiator, 1,
        "the higher Identifier's connection"
    );
    let open: Vec<PipeId> = (0..sim.w.pipes.len())
        .filter(|p| sim.w.is_open(*p))
        .collect();
    assert_eq!(open, vec![kept], "exactly one connection left");
    let lost = 1 - kept;
    let cease7: Vec<&Sent> = sim
        .w
        .trace
        .iter()
        .filter(|s| matches!(&s.msg, Message::Notification(n) if n.error == COLLISION_CEASE))
        .collect();
    assert!(!cease7.is_empty());
    assert!(cease7.iter().all(|s| s.pipe == lost), "{cease7:?}");
    // No session flapped on the way: neither side went down after
    // Established, and the session stays up past a hold time.
    sim.run_for(Duration::from_secs(300));
    assert!(sim.established(0, 1));
    assert_eq!(sim.conn(0, 1), Some(kept));
}

/// The same with the lower Identifier connecting first, and with three
/// speakers all connecting to each other at once: every pair ends on the
/// connection its higher Identifier opened.
#[test]
fn collisions_in_a_full_mesh() {
    let mut sim = Sim::new(3, &[]);
    sim.link(0, 1);
    sim.link(2, 0);
    sim.link(1, 2);
    assert!(sim.run_until(Duration::from_secs(60), |s| {
        s.established(0, 1) && s.established(0, 2) && s.established(1, 2)
    }));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let kept = sim.conn(a, b).unwrap();
        assert_eq!(sim.conn(b, a), Some(kept));
        assert_eq!(sim.w.pipes[kept].initiator, b, "{a}-{b}");
    }
    let open = (0..sim.w.pipes.len()).filter(|p| sim.w.is_open(*p)).count();
    assert_eq!(open, 3);
}

/// The race the interop suite found (RFC 4271 §6.8): the higher Identifier
/// (10.0.0.2) keeps the connection it opened and closes ours with Cease
/// 6/7, but its connection reaches us only after that NOTIFICATION, when
/// our FSM is Idle. It is accepted there (for 10 s after losing), and the
/// session comes up on it with no further connection attempt.
#[test]
fn the_winners_connection_arriving_after_its_cease_is_accepted() {
    let mut sim = Sim::new(2, &[]);
    sim.w.syn_delay.insert(1, Duration::from_millis(200));
    sim.link(0, 1);
    assert!(sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)));
    // Speaker 0 went Idle on the Cease before the connection arrived.
    assert!(matches!(
        sim.nodes[0].downs.first(),
        Some((_, DownReason::NotificationReceived(n))) if n.error == COLLISION_CEASE
    ));
    let kept = sim.conn(0, 1).unwrap();
    assert_eq!(sim.w.pipes[kept].initiator, 1);
    assert_eq!(sim.conn(1, 0), Some(kept));
    assert_eq!(sim.w.pipes.len(), 2, "no connect-retry round");
}

/// Routes of speaker 0 reach speaker 1: a helper scenario's starting point.
fn two_up_with_routes(restarting: &[usize]) -> Sim {
    let mut sim = Sim::new(2, restarting);
    // Past the first restart time: a restarting speaker's deferral is over
    // (its timer), so neither sets the Restart State bit now.
    sim.run_for(Duration::from_secs(130));
    sim.originate(1, "10.1.0.0/24");
    sim.originate(1, "10.2.0.0/24");
    sim.link(0, 1);
    assert!(sim.run_until(Duration::from_secs(60), |s| {
        s.established(0, 1) && s.route(0, "10.2.0.0/24").len() == 1
    }));
    sim
}

/// RFC 4724 §4.2, helper: the peer's connection drops without a
/// NOTIFICATION; its routes stay, stale, in the Loc-RIB and the FIB. It
/// comes back as a restarting speaker (Restart State bit, forwarding state
/// preserved), defers selection until our End-of-RIB (§4.1), then sends
/// its table and End-of-RIB; the stale route it did not send again is
/// swept, the other is fresh, and the FIB never lost it.
#[test]
fn graceful_restart_helper_keeps_stale_routes_until_end_of_rib() {
    let mut sim = two_up_with_routes(&[1]);
    let fib_before = sim.nodes[0].fib_log.len();
    sim.crash(1);
    sim.run_for(Duration::from_secs(1));
    assert_ne!(sim.state(0, 1), Some(State::Established));
    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, true)]
    );
    assert_eq!(
        sim.route(0, "10.2.0.0/24"),
        vec![(Some(addr(1)), true, true)]
    );
    assert!(sim.nodes[0].fib.contains_key(&pfx("10.1.0.0/24")));

    // Back after 30 s, with only one of its two routes.
    sim.run_for(Duration::from_secs(30));
    sim.restart(1);
    assert!(
        !sim.nodes[1].core.converged(),
        "a restarting speaker defers"
    );
    sim.originate(1, "10.1.0.0/24");
    let p = Sim::settings(0);
    sim.add_peer(1, p);
    let trace_from = sim.w.trace.len();
    assert!(sim.run_until(Duration::from_secs(60), |s| s
        .route(0, "10.2.0.0/24")
        .is_empty()));
    assert!(sim.established(0, 1));

    // Its OPEN: Restart State bit, forwarding state kept for IPv4 unicast.
    let open = sim.w.trace[trace_from..]
        .iter()
        .find_map(|s| match &s.msg {
            Message::Open(o) if s.from == addr(1) => Some(o.clone()),
            _ => None,
        })
        .unwrap();
    let gr = open
        .capabilities()
        .find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        })
        .unwrap();
    assert!(gr.restarting());
    assert_ne!(
        gr.flags & GracefulRestart::NOTIFICATION,
        0,
        "the RFC 8538 N bit"
    );
    assert_eq!(gr.families.len(), 1);
    assert_eq!(gr.families[0].family, Family::IPV4_UNICAST);
    assert_ne!(
        gr.families[0].flags & GracefulRestartFamily::FORWARDING_STATE,
        0
    );

    // §4.1: the restarting speaker sent its table only after our
    // End-of-RIB, and its own End-of-RIB after its table.
    let after: Vec<&Sent> = sim.w.trace[trace_from..].iter().collect();
    let our_eor = after
        .iter()
        .position(|s| s.from == addr(0) && is_eor(&s.msg))
        .expect("the helper sent End-of-RIB");
    let its_route = after
        .iter()
        .position(|s| s.from == addr(1) && announces(&s.msg, "10.1.0.0/24"))
        .unwrap();
    let its_eor = after
        .iter()
        .position(|s| s.from == addr(1) && is_eor(&s.msg))
        .unwrap();
    assert!(our_eor < its_route && its_route < its_eor);
    assert!(sim.nodes[1].converged_at.is_some());

    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, false)]
    );
    assert!(sim.route(0, "10.2.0.0/24").is_empty());
    // The FIB kept 10.1.0.0/24 throughout; 10.2.0.0/24 went at End-of-RIB.
    let changes = &sim.nodes[0].fib_log[fib_before..];
    assert!(!changes.iter().any(
        |c| matches!(c, LocRibChange::Unreachable { prefix } if *prefix == pfx("10.1.0.0/24"))
    ));
    assert!(changes.iter().any(
        |c| matches!(c, LocRibChange::Unreachable { prefix } if *prefix == pfx("10.2.0.0/24"))
    ));
}

/// RFC 4724 §4.2, helper: the peer comes back without graceful restart
/// (its OPEN has no Graceful Restart Capability, so no F bit for IPv4
/// unicast): the stale routes go the moment the session is Established,
/// before the peer's End-of-RIB. 10.1.0.0/24, which the peer announces
/// again, thus leaves the FIB and comes back, unlike in the F = 1 case
/// above where it never leaves.
#[test]
fn graceful_restart_helper_drops_stale_routes_when_the_peer_lost_its_forwarding_state() {
    let mut sim = two_up_with_routes(&[]);
    sim.crash(1);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, true)]
    );
    let fib_before = sim.nodes[0].fib_log.len();
    sim.run_for(Duration::from_secs(30));
    sim.restart(1);
    sim.originate(1, "10.1.0.0/24");
    let mut p = Sim::settings(0);
    p.graceful_restart = None;
    sim.add_peer(1, p);
    // Speaker 0 may read speaker 1's KEEPALIVE, UPDATE and End-of-RIB in
    // one go: what tells the F = 0 handling from an End-of-RIB sweep is
    // that 10.1.0.0/24 left the FIB in between (below).
    assert!(sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)));
    assert!(sim.route(0, "10.2.0.0/24").is_empty());
    assert!(
        sim.run_until(Duration::from_secs(30), |s| s.route(0, "10.1.0.0/24").len()
            == 1)
    );
    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, false)]
    );
    let changes = &sim.nodes[0].fib_log[fib_before..];
    assert!(changes.iter().any(
        |c| matches!(c, LocRibChange::Unreachable { prefix } if *prefix == pfx("10.1.0.0/24"))
    ));
}

/// RFC 4724 §4.2: a peer that does not come back loses its stale routes
/// when the restart time (120 s) runs out, not before.
#[test]
fn graceful_restart_helper_sweeps_stale_routes_at_the_restart_time() {
    let mut sim = two_up_with_routes(&[]);
    sim.crash(1);
    let crashed = sim.w.now;
    sim.run_for(Duration::from_secs(110));
    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, true)]
    );
    assert!(sim.run_until(Duration::from_secs(60), |s| s
        .route(0, "10.1.0.0/24")
        .is_empty()));
    assert!(sim.w.now - crashed >= Duration::from_secs(120));
    assert!(sim.route(0, "10.2.0.0/24").is_empty());
    assert!(sim.nodes[0].fib.is_empty());
}

/// RFC 8538 §3, §5.1: an Administrative Shutdown ends the session for
/// good. With the N bit on both sides it travels inside a Hard Reset, and
/// the receiver drops the routes at once instead of keeping them stale.
#[test]
fn a_hard_reset_withdraws_at_once() {
    let mut sim = two_up_with_routes(&[]);
    sim.nodes[1]
        .core
        .enable_peer(addr(0), false, Some("maintenance".into()))
        .unwrap();
    sim.nodes[1].pump(&mut sim.w);
    assert!(sim.run_until(Duration::from_secs(5), |s| s
        .route(0, "10.1.0.0/24")
        .is_empty()));
    let Some((_, DownReason::NotificationReceived(n))) = sim.nodes[0].downs.last() else {
        panic!("{:?}", sim.nodes[0].downs);
    };
    assert!(n.is_hard_reset(), "{n}");
    let cause = n.hard_reset_cause().unwrap();
    assert_eq!(
        cause.error,
        ErrorCode::Cease(CeaseError::AdministrativeShutdown)
    );
    assert_eq!(cause.shutdown_communication(), Some(Ok("maintenance")));
    assert!(sim.nodes[0].fib.is_empty());
}

/// Without the N bit on both sides a NOTIFICATION ends the session and its
/// routes (RFC 4724 §4.2 covers the loss of the TCP connection only), and
/// an Administrative Shutdown goes out bare, not as a Hard Reset.
#[test]
fn without_the_n_bit_a_notification_withdraws_at_once() {
    let mut sim = Sim::new(2, &[]);
    sim.run_for(Duration::from_secs(130));
    sim.originate(1, "10.1.0.0/24");
    let mut p0 = Sim::settings(1);
    p0.graceful_restart = Some(GracefulRestartSettings {
        notification: false,
        ..GR
    });
    sim.add_peer(0, p0);
    sim.add_peer(1, Sim::settings(0));
    assert!(
        sim.run_until(Duration::from_secs(60), |s| s.route(0, "10.1.0.0/24").len()
            == 1)
    );
    sim.nodes[1].core.enable_peer(addr(0), false, None).unwrap();
    sim.nodes[1].pump(&mut sim.w);
    assert!(sim.run_until(Duration::from_secs(5), |s| s
        .route(0, "10.1.0.0/24")
        .is_empty()));
    assert!(matches!(
        sim.nodes[0].downs.last(),
        Some((_, DownReason::NotificationReceived(n)))
            if n.error == ErrorCode::Cease(CeaseError::AdministrativeShutdown)
    ));
}

/// RFC 8538 §4: with the N bit on both sides, a NOTIFICATION that is not a
/// Hard Reset — here the Hold Timer's expiry, as when a peer hangs — is
/// handled as the loss of the connection: the peer's routes stay, stale,
/// in the Loc-RIB and the FIB until it is back and has sent End-of-RIB.
#[test]
fn with_the_n_bit_a_notification_keeps_the_routes_stale() {
    let mut sim = two_up_with_routes(&[]);
    let fib_before = sim.nodes[0].fib_log.len();
    // Speaker 1 stops reading and writing (hung): speaker 0's hold timer
    // expires and it sends Hold Timer Expired.
    sim.w.up[1] = false;
    assert!(sim.run_until(Duration::from_secs(200), |s| {
        matches!(
            s.nodes[0].downs.last(),
            Some((_, DownReason::NotificationSent(n))) if n.error == ErrorCode::HoldTimerExpired
        )
    }));
    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, true)],
        "kept, stale"
    );
    assert!(sim.nodes[0].fib.contains_key(&pfx("10.1.0.0/24")));
    // Back; its table again; End-of-RIB: fresh, never withdrawn.
    sim.w.up[1] = true;
    assert!(sim.run_until(Duration::from_secs(120), |s| {
        s.established(0, 1) && s.route(0, "10.1.0.0/24") == vec![(Some(addr(1)), true, false)]
    }));
    assert!(!sim.nodes[0].fib_log[fib_before..]
        .iter()
        .any(|c| matches!(c, LocRibChange::Unreachable { .. })));
}

/// RFC 4724 §4.1 deferral: a restarting speaker with two peers selects and
/// advertises nothing until both have sent End-of-RIB. Peer 2 comes up
/// late; peer 0 hears speaker 1's routes only after that.
#[test]
fn selection_deferral_waits_for_end_of_rib_from_every_peer() {
    let mut sim = Sim::new(3, &[1]);
    sim.run_for(Duration::from_secs(130)); // peers 0 and 2 no longer restarting
    sim.w.up[2] = false;
    sim.restart(1);
    sim.originate(1, "10.1.0.0/24");
    sim.originate(0, "10.0.0.0/24");
    sim.link(0, 1);
    let p = Sim::settings(2);
    sim.add_peer(1, p);
    assert!(sim.run_until(Duration::from_secs(30), |s| s.established(0, 1)));
    sim.run_for(Duration::from_secs(30));
    // Peer 0's End-of-RIB is in; peer 2 is down: still deferring.
    assert!(sim.sent(0, 1).iter().any(|m| is_eor(m)));
    assert!(sim.nodes[1].converged_at.is_none());
    assert!(!sim.sent(1, 0).iter().any(|m| announces(m, "10.1.0.0/24")));
    assert!(sim.route(0, "10.1.0.0/24").is_empty());

    // Peer 2 starts and sends its End-of-RIB: deferral over at once.
    sim.w.up[2] = true;
    let p = Sim::settings(1);
    sim.add_peer(2, p);
    assert!(sim.run_until(Duration::from_secs(30), |s| {
        s.route(0, "10.1.0.0/24").len() == 1 && s.route(2, "10.0.0.0/24").len() == 1
    }));
    let converged = sim.nodes[1].converged_at.unwrap();
    assert!(
        converged - sim.start < Duration::from_secs(130 + 120),
        "before the deferral timer"
    );
}

/// RFC 4724 §4.1: "the deferral timer" bounds the wait: a peer that never
/// comes up holds advertisements back for the restart time only.
#[test]
fn selection_deferral_ends_at_the_deferral_timer() {
    let mut sim = Sim::new(3, &[1]);
    sim.run_for(Duration::from_secs(130));
    sim.w.up[2] = false;
    sim.restart(1);
    let restarted = sim.w.now;
    sim.originate(1, "10.1.0.0/24");
    sim.link(0, 1);
    let p = Sim::settings(2);
    sim.add_peer(1, p);
    assert!(sim.run_until(Duration::from_secs(300), |s| s
        .route(0, "10.1.0.0/24")
        .len()
        == 1));
    let converged = sim.nodes[1].converged_at.unwrap();
    assert_eq!(converged - restarted, Duration::from_secs(120));
    assert_ne!(sim.state(1, 2), Some(State::Established));
}

/// RFC 4486: more accepted prefixes than the limit closes the session with
/// Cease / Maximum Number of Prefixes Reached, its data AFI 1, SAFI 1 and
/// the limit (2); the session comes back after the configured idle time
/// (60 s, jittered) and is closed again for the same reason.
#[test]
fn max_prefix_closes_the_session_with_cease_1() {
    let mut sim = Sim::new(2, &[]);
    for p in ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"] {
        sim.originate(1, p);
    }
    let mut p0 = Sim::settings(1);
    p0.max_prefix = Some((2, MaxPrefixAction::Restart(Duration::from_secs(60))));
    sim.add_peer(0, p0);
    let p1 = Sim::settings(0);
    sim.add_peer(1, p1);
    // RFC 8538 §5.1: both offer the N bit, so the Cease travels inside a
    // Hard Reset; these are the Ceases it carried.
    let cease1 = |s: &Sim| -> Vec<Notification> {
        s.sent(0, 1)
            .into_iter()
            .filter_map(|m| match m {
                Message::Notification(n) if n.is_hard_reset() => n.hard_reset_cause(),
                _ => None,
            })
            .filter(|n| n.error == ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached))
            .collect()
    };
    assert!(sim.run_until(Duration::from_secs(60), |s| !cease1(s).is_empty()));
    let down_at = sim.w.now;
    assert_eq!(&cease1(&sim)[0].data[..], [0, 1, 1, 0, 0, 0, 2]);
    sim.run_for(Duration::from_secs(1));
    assert_ne!(sim.state(0, 1), Some(State::Established));
    assert!(
        sim.route(0, "10.1.0.0/24").is_empty(),
        "the peer's routes went"
    );
    assert!(matches!(
        sim.nodes[1].downs.last(),
        Some((_, DownReason::NotificationReceived(n)))
            if n.hard_reset_cause().is_some_and(|c| c.error == ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached))
    ));
    // Back after the idle time (jittered to 0.75–1.0 of it, RFC 4271
    // §10), over the limit again, closed again.
    assert!(sim.run_until(Duration::from_secs(120), |s| cease1(s).len() == 2));
    assert!(sim.w.now - down_at >= Duration::from_secs(45));
}

/// RFC 7313 §4: a ROUTE-REFRESH request to a speaker that negotiated
/// enhanced route refresh is answered with BoRR, the routes, then EoRR;
/// the requester marks the peer's routes stale at BoRR and, seeing them
/// again before EoRR, keeps them (fresh).
#[test]
fn enhanced_route_refresh_is_bracketed_by_borr_and_eorr() {
    let mut sim = Sim::new(2, &[]);
    sim.originate(1, "10.1.0.0/24");
    sim.link(0, 1);
    assert!(
        sim.run_until(Duration::from_secs(60), |s| s.route(0, "10.1.0.0/24").len()
            == 1)
    );
    let from = sim.w.trace.len();
    sim.nodes[0].core.refresh_peer(addr(1)).unwrap();
    sim.nodes[0].pump(&mut sim.w);
    sim.run_for(Duration::from_secs(1));
    let answer: Vec<&Message> = sim.w.trace[from..]
        .iter()
        .filter(|s| s.from == addr(1))
        .map(|s| &s.msg)
        .collect();
    let kind = |m: &Message| match m {
        Message::RouteRefresh(r) => match r.subtype {
            RefreshSubtype::BeginningOfRefresh => "BoRR",
            RefreshSubtype::EndOfRefresh => "EoRR",
            _ => "other refresh",
        },
        m if announces(m, "10.1.0.0/24") => "route",
        _ => "other",
    };
    let kinds: Vec<&str> = answer
        .iter()
        .map(|m| kind(m))
        .filter(|k| *k != "other")
        .collect();
    assert_eq!(kinds, ["BoRR", "route", "EoRR"]);
    assert!(sim.w.trace[from..].iter().any(|s| s.from == addr(0)
        && matches!(&s.msg, Message::RouteRefresh(r) if r.subtype == RefreshSubtype::Request)));
    assert_eq!(
        sim.route(0, "10.1.0.0/24"),
        vec![(Some(addr(1)), true, false)]
    );
}

/// The simulation itself: with one peer silent, the virtual clock carries
/// the FSM's hold timer (90 s) and nothing else moves.
#[test]
fn hold_timer_runs_in_virtual_time() {
    let mut sim = Sim::new(2, &[]);
    sim.link(0, 1);
    assert!(sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)));
    // Speaker 1 hangs: no crash, no FIN, nothing sent.
    sim.w.up[1] = false;
    assert!(sim.run_until(Duration::from_secs(200), |s| s.state(0, 1)
        != Some(State::Established)));
    assert!(matches!(
        sim.nodes[0].downs.last(),
        Some((_, DownReason::NotificationSent(n))) if n.error.code() == 4
    ));
    assert!(sim.elapsed() > Duration::from_secs(60));
}

/// The first OPEN `from` sent `to` after trace entry `since`: its
/// graceful-restart capability.
fn gr_in_open(sim: &Sim, since: usize, from: usize, to: usize) -> GracefulRestart {
    sim.w.trace[since..]
        .iter()
        .find_map(|s| match &s.msg {
            Message::Open(o) if s.from == addr(from) && s.to == addr(to) => {
                o.capabilities().find_map(|c| match c {
                    Capability::GracefulRestart(g) => Some(g.clone()),
                    _ => None,
                })
            }
            _ => None,
        })
        .expect("an OPEN with graceful restart")
}

/// RFC 4724 §3: the Restart State bit says "the BGP speaker has restarted";
/// it is set while the speaker is restarting (§4.1), which ends with its
/// selection deferral. Right after its start speaker 0 sends R = 1; its
/// peer's End-of-RIB ends the deferral; a session flap 605 s later is no
/// restart of speaker 0: the new OPEN has R = 0 (the forwarding state,
/// kept by the running speaker, still F = 1).
#[test]
fn restart_state_bit_clears_once_the_restart_is_over() {
    let mut sim = Sim::new(2, &[0]);
    sim.link(0, 1);
    assert!(
        sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)
            && s.nodes[0].converged_at.is_some())
    );
    assert!(gr_in_open(&sim, 0, 0, 1).restarting(), "restarting: R = 1");
    assert!(
        sim.nodes[0].converged_at.unwrap() - sim.start < Duration::from_secs(120),
        "deferral ended by End-of-RIB, not by its timer"
    );

    sim.run_for(Duration::from_secs(605));
    assert!(sim.established(0, 1));
    // The session flaps: speaker 1 goes away and comes back.
    sim.crash(1);
    sim.run_for(Duration::from_secs(1));
    sim.restart(1);
    let since = sim.w.trace.len();
    let p = Sim::settings(0);
    sim.add_peer(1, p);
    assert!(sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)));
    let gr = gr_in_open(&sim, since, 0, 1);
    assert!(!gr.restarting(), "no restart of ours: R = 0");
    assert_eq!(gr.families.len(), 1);
    assert!(gr.families[0].forwarding_preserved());

    // Speaker 0 itself restarts: R = 1 again.
    sim.crash(0);
    sim.run_for(Duration::from_secs(1));
    sim.restart(0);
    let since = sim.w.trace.len();
    let p = Sim::settings(1);
    sim.add_peer(0, p);
    assert!(sim.run_until(Duration::from_secs(60), |s| s.established(0, 1)));
    assert!(gr_in_open(&sim, since, 0, 1).restarting());
}

/// RFC 4486, RFC 4271 §6: one overflow, one NOTIFICATION. Speaker 1's
/// three routes (three UPDATEs: their attributes differ) and End-of-RIB
/// are read together; the second UPDATE takes speaker 0 over its limit
/// (1). Exactly one Cease / 1 goes out, with AFI 1, SAFI 1 and the limit;
/// the session goes down once; the UPDATE behind the deciding one never
/// reaches the Loc-RIB, and the peer's routes are all gone after.
#[test]
fn max_prefix_sends_one_cease_and_applies_nothing_after_it() {
    let mut sim = Sim::new(2, &[]);
    for (i, p) in ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]
        .into_iter()
        .enumerate()
    {
        let attrs = PathAttributes {
            med: Some(i as u32 + 1),
            ..Default::default()
        };
        sim.nodes[1].core.originate(pfx(p), attrs);
        sim.nodes[1].pump(&mut sim.w);
    }
    let mut p0 = Sim::settings(1);
    p0.max_prefix = Some((1, MaxPrefixAction::Restart(Duration::from_secs(60))));
    sim.add_peer(0, p0);
    let p1 = Sim::settings(0);
    sim.add_peer(1, p1);
    // RFC 8538 §5.1: both offer the N bit, so the Cease travels inside a
    // Hard Reset; these are the Ceases it carried.
    let cease1 = |s: &Sim| -> Vec<Notification> {
        s.sent(0, 1)
            .into_iter()
            .filter_map(|m| match m {
                Message::Notification(n) if n.is_hard_reset() => n.hard_reset_cause(),
                _ => None,
            })
            .filter(|n| n.error == ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached))
            .collect()
    };
    assert!(sim.run_until(Duration::from_secs(60), |s| !cease1(s).is_empty()));
    // Well inside the idle time (60 s, at least 45 s jittered): no new session.
    sim.run_for(Duration::from_secs(5));
    let announcing = sim
        .sent(1, 0)
        .iter()
        .filter(|m| {
            ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]
                .iter()
                .any(|p| announces(m, p))
        })
        .count();
    assert_eq!(announcing, 3, "one UPDATE per route");

    let ceases = cease1(&sim);
    assert_eq!(ceases.len(), 1, "{ceases:?}");
    assert_eq!(&ceases[0].data[..], [0, 1, 1, 0, 0, 0, 1]);
    let downs: Vec<&DownReason> = sim.nodes[0]
        .downs
        .iter()
        .filter(|(a, _)| *a == addr(1))
        .map(|(_, r)| r)
        .collect();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert!(
        matches!(downs[0], DownReason::NotificationSent(n) if n.hard_reset_cause().as_ref() == Some(&ceases[0]))
    );
    // The two UPDATEs up to the limit's crossing were applied, not the third.
    let installed: BTreeSet<Prefix> = sim.nodes[0]
        .fib_log
        .iter()
        .filter_map(|c| match c {
            LocRibChange::Best { prefix, .. } => Some(*prefix),
            _ => None,
        })
        .collect();
    assert_eq!(installed.len(), 2, "{installed:?}");
    assert!(sim.nodes[0].fib.is_empty());
    assert!(sim.nodes[0].core.routes(None).is_empty());
}

/// What a change of a peer's settings resets (the daemon hands every
/// changed `PeerSettings` to `update_peer`, so this is the whole rule):
/// policy, max-prefix and BFD apply under the running session, which keeps
/// its connection; a session parameter (here the hold time, which the OPEN
/// carries, RFC 4271 §4.2) ends it and a new one comes up.
#[test]
fn a_settings_change_resets_the_session_only_for_session_parameters() {
    use crate::policy::{Policy, Rule, Terminal};
    let mut sim = two_up_with_routes(&[]);
    let (conn, downs) = (sim.conn(0, 1), sim.nodes[0].downs.len());
    let mut p = Sim::settings(1);
    p.import = Policy {
        rules: vec![Rule {
            action: Some(Terminal::Reject),
            ..Rule::default()
        }],
    };
    p.max_prefix = Some((1000, MaxPrefixAction::Warn));
    p.bfd = Some(super::BfdSettings {
        min_rx: Duration::from_millis(300),
        min_tx: Duration::from_millis(300),
        multiplier: 3,
        multihop: false,
        auth: None,
    });
    let now = sim.w.now;
    sim.nodes[0].core.update_peer(now, p.clone()).unwrap();
    sim.nodes[0].pump(&mut sim.w);
    assert!(sim.run_until(Duration::from_secs(10), |s| s
        .route(0, "10.2.0.0/24")
        .is_empty()));
    sim.run_for(Duration::from_secs(10));
    assert!(sim.established(0, 1));
    assert_eq!(sim.conn(0, 1), conn, "the same connection");
    assert_eq!(sim.nodes[0].downs.len(), downs, "no session went down");

    p.hold_time = 30;
    let now = sim.w.now;
    sim.nodes[0].core.update_peer(now, p).unwrap();
    sim.nodes[0].pump(&mut sim.w);
    assert!(
        sim.run_until(Duration::from_secs(120), |s| s.established(0, 1)
            && s.conn(0, 1) != conn)
    );
    assert!(
        sim.nodes[0].downs.len() > downs,
        "the old session went down"
    );
}
