//! One peer's session task.
//!
//! Backpressure: events go to the speaker on a bounded channel; when it is
//! full this task waits, so it stops reading from the socket and TCP flow
//! control slows the peer down. Outgoing UPDATEs arrive already encoded; a
//! slow peer's socket blocks only its own task.

use super::collision::{Admit, Arbiter, Resolution};
use super::socket::{self, ConnectOptions};
use crate::bfd::{self, SessionStatus};
use crate::fsm::{Action, DownReason, Event, Fsm, FsmConfig, State, Timer};
use crate::wire::capability::Capability;
use crate::wire::header::{split_message, HEADER_LEN};
use crate::wire::notification::{CeaseError, ErrorCode};
use crate::wire::{Message, Notification, Open, RouteRefresh, Update};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// What a session task needs: where the peer is, its FSM settings, how to
/// connect, and the BFD session protecting it (the speaker makes it from a
/// peer's [`crate::speaker::PeerSettings`]).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub address: IpAddr,
    /// Stamped on every event, so that the speaker can tell this session's
    /// reports from those of an earlier session of the same address.
    pub id: SessionId,
    pub port: u16,
    pub fsm: FsmConfig,
    pub connect: ConnectOptions,
    /// The BFD session protecting this peer, if any (RFC 5882).
    pub bfd: Option<watch::Receiver<SessionStatus>>,
    /// The links of directly connected peers (fast external failover), if
    /// anyone watches them.
    pub links: Option<watch::Receiver<PeerLinks>>,
}

/// The link a directly connected peer is reached through, as the daemon
/// that watches the kernel's links reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    /// The link is down (no carrier, administratively down): the session
    /// is held Idle until it is back.
    pub down: bool,
    /// How many times the session had to be dropped for the link: counted
    /// like BFD's flaps, so that a drop and a recovery between two looks
    /// still ends the session once.
    pub drops: u64,
}

/// [`LinkState`] by peer address; peers without an entry are left alone.
pub type PeerLinks = BTreeMap<IpAddr, LinkState>;

/// Commands are few and short-lived; the occasional OPEN-sized message
/// rides inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PeerCommand {
    Start,
    Stop {
        communication: Option<String>,
    },
    /// Send this NOTIFICATION, go down, and come back after `idle` if given.
    AdminDown {
        notification: Notification,
        idle: Option<Duration>,
    },
    /// An accepted connection from this peer's address.
    Incoming(TcpStream),
    /// Encoded messages (UPDATEs) to write, in order.
    Send(Vec<Bytes>),
    /// A message to encode with the session's context and write.
    SendMessage(Message),
    /// BFD was turned on (a session's status to watch) or off for this peer.
    Bfd(Option<watch::Receiver<SessionStatus>>),
    /// Whether our next OPENs carry the graceful-restart Restart State bit.
    RestartState(bool),
}

#[derive(Debug)]
pub enum PeerEventKind {
    State(State),
    /// `local` is our end of the connection (next-hop-self uses it).
    Established {
        ctx: crate::wire::CodecContext,
        remote: Box<Open>,
        local: Option<SocketAddr>,
    },
    Down {
        reason: DownReason,
        was_established: bool,
    },
    Update(Box<Update>),
    RouteRefresh(RouteRefresh),
}

/// Which session of a peer an event comes from. A peer whose session
/// parameters change is removed and added again: the new session task runs
/// (and may be Established) while the old one is still reporting its end,
/// on the same channel and under the same address. The speaker numbers the
/// sessions it creates and applies only the current one's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

#[derive(Debug)]
pub struct PeerEvent {
    pub peer: IpAddr,
    pub session: SessionId,
    pub kind: PeerEventKind,
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

struct Conn {
    stream: TcpStream,
    outgoing: bool,
    buf: BytesMut,
    /// Our OPEN already went out on this connection (it was the second
    /// connection of a collision): the FSM's own OPEN is not sent again.
    open_sent: bool,
}

impl Conn {
    fn new(stream: TcpStream, outgoing: bool) -> Self {
        Self {
            stream,
            outgoing,
            buf: BytesMut::with_capacity(64 * 1024),
            open_sent: false,
        }
    }
}

/// RFC 4271 §6.8: a second connection with the peer while the FSM's own is
/// in OpenSent or OpenConfirm (the [`Arbiter`] holds who initiated it and
/// how long it may wait). Our OPEN has gone out on it, as on any new
/// connection, so that the peer can decide too; the peer's OPEN on it
/// decides which of the two survives.
struct Second {
    stream: TcpStream,
    buf: BytesMut,
}

struct Task {
    cfg: SessionConfig,
    fsm: Fsm,
    conn: Option<Conn>,
    /// Our outgoing connection attempt. It stays when the peer's connection
    /// is accepted meanwhile: if it completes too, §6.8 picks one.
    connecting: Option<ConnectFuture>,
    second: Option<Second>,
    collision: Arbiter,
    timers: [Option<Instant>; 5],
    events: mpsc::Sender<PeerEvent>,
    /// The peer advertised graceful restart on the current session.
    peer_gr: bool,
    established_at: Option<Instant>,
    /// The BFD session's status, and its flap count when last looked at.
    bfd: Option<watch::Receiver<SessionStatus>>,
    bfd_flaps: u64,
    /// The peer's link (fast external failover), the drop count last acted
    /// on, and whether the link is down now.
    links: Option<watch::Receiver<PeerLinks>>,
    link_drops: u64,
    link_down: bool,
    /// A start that waits for the link: the session was running (or was
    /// asked to start) when the link went down.
    start_on_link_up: bool,
    /// The speaker's commands. Read in the main loop, and also while an
    /// event waits for room in the speaker's queue (see [`Task::deliver`]).
    commands: mpsc::Receiver<PeerCommand>,
    commands_closed: bool,
    /// Commands read while an event waited, other than messages to send:
    /// carried out once it is delivered.
    deferred: VecDeque<PeerCommand>,
}

/// Resolves, with the new flap count, when the BFD session has left Up
/// since `seen` for a reason other than the remote's AdminDown (RFC 5882
/// §3.2); never without BFD or once its session is gone.
async fn bfd_failure(rx: Option<&mut watch::Receiver<SessionStatus>>, seen: u64) -> u64 {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    let failed = |s: &SessionStatus| {
        s.flaps > seen && !matches!(s.last_down, Some(c) if c.remote_state == bfd::State::AdminDown)
    };
    // The borrow of the status ends here, before anything else awaits.
    let flaps = rx.wait_for(failed).await.map(|s| s.flaps);
    match flaps {
        Ok(f) => f,
        Err(_) => std::future::pending().await,
    }
}

/// The state of `addr`'s link (up and never dropped when unknown).
fn link_of(rx: Option<&watch::Receiver<PeerLinks>>, addr: IpAddr) -> LinkState {
    rx.and_then(|r| r.borrow().get(&addr).copied())
        .unwrap_or_default()
}

/// Resolves, with the new drop count, when `addr`'s session must be
/// dropped for its link since `seen`; never without a link watch or once
/// its sender is gone.
async fn link_failure(rx: Option<&mut watch::Receiver<PeerLinks>>, addr: IpAddr, seen: u64) -> u64 {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    let dropped = |l: &PeerLinks| l.get(&addr).is_some_and(|s| s.drops > seen);
    let drops = rx
        .wait_for(dropped)
        .await
        .map(|l| l.get(&addr).map_or(seen, |s| s.drops));
    match drops {
        Ok(d) => d,
        Err(_) => std::future::pending().await,
    }
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::DelayOpen => 3,
        Timer::IdleHold => 4,
    }
}

const TIMERS: [Timer; 5] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::DelayOpen,
    Timer::IdleHold,
];

/// A session that stays up this long forgets its flap history.
const STABLE: Duration = Duration::from_secs(300);

/// Spawns the task for one peer. It starts Idle; send [`PeerCommand::Start`].
pub fn spawn_peer(
    cfg: SessionConfig,
    commands: mpsc::Receiver<PeerCommand>,
    events: mpsc::Sender<PeerEvent>,
) -> tokio::task::JoinHandle<()> {
    let fsm = Fsm::new(cfg.fsm.clone());
    let collision = Arbiter::new(cfg.fsm.local_id);
    let bfd = cfg.bfd.clone();
    let bfd_flaps = bfd.as_ref().map_or(0, |b| b.borrow().flaps);
    let links = cfg.links.clone();
    // A session created while its link is down starts held; a drop
    // counted before it existed is not its own.
    let link = link_of(links.as_ref(), cfg.address);
    let task = Task {
        cfg,
        fsm,
        conn: None,
        connecting: None,
        second: None,
        collision,
        timers: [None; 5],
        events,
        peer_gr: false,
        established_at: None,
        bfd,
        bfd_flaps,
        links,
        link_drops: link.drops,
        link_down: link.down,
        start_on_link_up: false,
        commands,
        commands_closed: false,
        deferred: VecDeque::new(),
    };
    tokio::spawn(task.run())
}

impl Task {
    async fn run(mut self) {
        let peer = self.cfg.address;
        loop {
            while let Some(c) = self.deferred.pop_front() {
                self.command(c).await;
            }
            if self.commands_closed {
                // The speaker dropped us while an event waited: leave
                // quietly, as a stop.
                self.feed(Event::ManualStop {
                    communication: Some("peer removed".into()),
                })
                .await;
                return;
            }
            let next_timer = self
                .timers
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (i, t)))
                .min_by_key(|x| x.1);
            let sleep = async {
                match next_timer {
                    Some((_, at)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let connecting = async {
                match self.connecting.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            let reading = async {
                match self.conn.as_mut() {
                    Some(c) => {
                        c.buf.reserve(64 * 1024);
                        c.stream.read_buf(&mut c.buf).await
                    }
                    None => std::future::pending().await,
                }
            };
            let second_deadline = self.collision.second_deadline();
            let second = async {
                match (self.second.as_mut(), second_deadline) {
                    (Some(s), Some(deadline)) => {
                        s.buf.reserve(4096);
                        tokio::time::timeout_at(deadline.into(), s.stream.read_buf(&mut s.buf))
                            .await
                    }
                    _ => std::future::pending().await,
                }
            };
            let bfd_changed = async {
                match self.bfd.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            };
            let link_changed = async {
                match self.links.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // RFC 5882 §4.2: a BFD session going down tears the BGP
                // session down at once, ahead of anything else queued; so
                // does the link to a directly connected peer going down.
                biased;
                changed = bfd_changed => match changed {
                    Ok(()) => self.bfd_changed().await,
                    // The BFD session was removed with BFD turned off.
                    Err(_) => self.bfd = None,
                },
                changed = link_changed => match changed {
                    Ok(()) => self.link_changed().await,
                    Err(_) => self.links = None,
                },
                cmd = self.commands.recv(), if !self.commands_closed => match cmd {
                    None => {
                        // The speaker dropped us: leave quietly, as a stop.
                        self.feed(Event::ManualStop { communication: Some("peer removed".into()) }).await;
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                },
                _ = sleep => {
                    if let Some((i, _)) = next_timer {
                        self.timers[i] = None;
                        self.feed(Event::TimerExpired(TIMERS[i])).await;
                    }
                }
                res = connecting => {
                    self.connecting = None;
                    match res {
                        // The peer's connection was accepted meanwhile.
                        Ok(stream) if self.conn.is_some() => self.connected_while_busy(stream).await,
                        Ok(stream) => {
                            debug!(%peer, "connected");
                            self.conn = Some(Conn::new(stream, true));
                            self.feed(Event::TcpConnected).await;
                        }
                        Err(e) if self.conn.is_some() => {
                            debug!(%peer, error = %e, "connect failed; the accepted connection stays");
                        }
                        Err(e) => {
                            debug!(%peer, error = %e, "connect failed");
                            self.feed(Event::TcpFails).await;
                        }
                    }
                }
                res = reading => match res {
                    Ok(0) | Err(_) => {
                        debug!(%peer, "connection closed");
                        self.conn = None;
                        self.feed(Event::TcpFails).await;
                    }
                    Ok(_) => self.drain().await,
                },
                res = second => match res {
                    Ok(Ok(n)) if n > 0 => self.second_read().await,
                    Ok(_) => {
                        debug!(%peer, "collision: the second connection closed");
                        self.drop_second();
                    }
                    Err(_) => {
                        debug!(%peer, "collision: no OPEN on the second connection; closing it");
                        if let Some(s) = self.drop_second() {
                            reject(s.stream, CeaseError::ConnectionCollisionResolution).await;
                        }
                    }
                },
            }
            // §6.8: "a connection collision with an existing BGP connection
            // that is in the Established state causes closing of the newly
            // created connection".
            if self.fsm.state() == State::Established && self.collision.established() {
                if let Some(s) = self.second.take() {
                    debug!(%peer, "collision: the session is up; closing the second connection");
                    reject(s.stream, CeaseError::ConnectionCollisionResolution).await;
                }
            }
            if self.fsm.state() == State::Established {
                if let Some(t) = self.established_at {
                    if t.elapsed() > STABLE {
                        self.fsm.reset_flaps();
                        self.established_at = None;
                    }
                }
            }
        }
    }

    /// Decodes every whole message in the receive buffer.
    async fn drain(&mut self) {
        loop {
            let max = self.fsm.codec().max_message_len;
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match split_message(&mut conn.buf, max) {
                Ok(None) => return,
                Ok(Some((header, raw))) => {
                    let raw = raw.freeze();
                    let body = raw.slice(HEADER_LEN..);
                    let ev = match Message::decode_body(self.fsm.codec(), header.msg_type, &body) {
                        // §6.8, decided before this OPEN moves the FSM on (and
                        // a KEEPALIVE goes out on a connection that may lose):
                        // the peer decides the same way on its side, so
                        // neither side confirms the connection the other
                        // closes.
                        Ok(Message::Open(o)) if self.collision.has_second() => {
                            if !self.resolve(o.bgp_id, None).await {
                                // Now on the second connection: its bytes.
                                continue;
                            }
                            Event::Received(Message::Open(o))
                        }
                        Ok(Message::Notification(n)) => {
                            // §6.8: Cease 6/7 here means the peer keeps the
                            // connection it initiated.
                            self.collision.notification(
                                std::time::Instant::now(),
                                self.fsm.state(),
                                &n,
                            );
                            Event::Received(Message::Notification(n))
                        }
                        Ok(m) => Event::Received(m),
                        Err(n) => Event::DecodeError(n),
                    };
                    self.feed(ev).await;
                }
                Err(n) => {
                    self.feed(Event::DecodeError(n)).await;
                    return;
                }
            }
        }
    }

    async fn command(&mut self, cmd: PeerCommand) {
        match cmd {
            PeerCommand::Start => self.feed(Event::ManualStart).await,
            PeerCommand::Stop { communication } => {
                self.drop_second();
                self.collision.reset();
                self.feed(Event::ManualStop { communication }).await
            }
            PeerCommand::Bfd(rx) => {
                self.bfd_flaps = rx.as_ref().map_or(0, |b| b.borrow().flaps);
                self.bfd = rx;
            }
            PeerCommand::AdminDown { notification, idle } => {
                self.drop_second();
                self.collision.reset();
                self.feed(Event::AdminDown { notification, idle }).await
            }
            PeerCommand::RestartState(on) => self.fsm.set_restart_state(on),
            PeerCommand::Incoming(stream) => self.incoming(stream).await,
            c @ (PeerCommand::Send(_) | PeerCommand::SendMessage(_)) => self.send_now(c).await,
        }
    }

    /// Writes the messages of a `Send` or `SendMessage` command while
    /// Established (nothing else), with those of the sends queued behind
    /// it: a route reflector's change goes to every client as its own
    /// command, and a burst of changes (a source's UPDATEs read together)
    /// made one write per change and client, each waking the client's
    /// reader (10 one-prefix UPDATEs per 10 ms reflected to 63 clients:
    /// 29k writes a second, twice BIRD's system calls and CPU;
    /// docs/benchmarks/history.md, fourteenth round). The first command
    /// of another kind ends the taking and is carried out next.
    async fn send_now(&mut self, cmd: PeerCommand) {
        if self.fsm.state() != State::Established {
            return;
        }
        let mut first = Some(cmd);
        let mut buf = Vec::new();
        // Octets of the commands taken from the queue: bounded, so that a
        // steady stream of sends cannot keep the task from its socket and
        // timers.
        let mut taken = 0;
        loop {
            let cmd = match first.take() {
                Some(c) => c,
                None if taken >= WRITE_BATCH => break,
                None => match self.commands.try_recv() {
                    Ok(c @ (PeerCommand::Send(_) | PeerCommand::SendMessage(_))) => c,
                    Ok(other) => {
                        self.deferred.push_back(other);
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.commands_closed = true;
                        break;
                    }
                },
            };
            let msgs = match cmd {
                PeerCommand::Send(msgs) => msgs,
                PeerCommand::SendMessage(m) => match m.to_bytes(self.fsm.codec()) {
                    Ok(b) => vec![b],
                    Err(_) => continue,
                },
                _ => continue,
            };
            taken += msgs.iter().map(Bytes::len).sum::<usize>();
            // One message with nothing queued behind it (most of a node's
            // sends): written as it is, not copied.
            if buf.is_empty() && msgs.len() == 1 && self.commands.is_empty() {
                if !self.write(&msgs[0]).await {
                    return;
                }
                continue;
            }
            // Messages go out in writes of up to WRITE_BATCH octets, not
            // one system call each: a route reflector sends millions of
            // UPDATEs, and one write per message was most of its CPU.
            for m in msgs {
                if !buf.is_empty() && buf.len() + m.len() > WRITE_BATCH {
                    if !self.write(&buf).await {
                        return;
                    }
                    buf.clear();
                }
                buf.extend_from_slice(&m);
            }
        }
        if !buf.is_empty() {
            self.write(&buf).await;
        }
    }

    /// Hands `ev` to the speaker, waiting for room in its queue.
    async fn deliver(&mut self, ev: PeerEvent) {
        self.deliver_racing(ev, false).await;
    }

    /// [`Task::deliver`], given up when BFD goes Down meanwhile (RFC 5882
    /// §4.2: under a full table the speaker's queue stays full while the
    /// RIB works, and BFD Down must not wait behind it); false then.
    async fn deliver_unless_bfd_fails(&mut self, ev: PeerEvent) -> bool {
        self.deliver_racing(ev, true).await
    }

    /// While an event waits for room in the speaker's queue, the speaker
    /// may itself be waiting for room in ours (its UPDATEs for this peer,
    /// in a route reflector or any peer that both sends and receives a
    /// table): that is a deadlock unless this task keeps reading its
    /// commands. The messages to send are written at once (they need
    /// nothing but the socket); other commands wait in `deferred` until the
    /// event is delivered, so that they are carried out in order.
    async fn deliver_racing(&mut self, ev: PeerEvent, race_bfd: bool) -> bool {
        let seen = self.bfd_flaps;
        let (addr, seen_link) = (self.cfg.address, self.link_drops);
        loop {
            let bfd = async {
                if race_bfd {
                    bfd_failure(self.bfd.as_mut(), seen).await
                } else {
                    std::future::pending().await
                }
            };
            let link = async {
                if race_bfd {
                    link_failure(self.links.as_mut(), addr, seen_link).await
                } else {
                    std::future::pending().await
                }
            };
            let cmd = tokio::select! {
                biased;
                _ = bfd => return false,
                _ = link => return false,
                permit = self.events.reserve() => {
                    // A closed queue: the speaker is gone; nothing to tell.
                    if let Ok(p) = permit {
                        p.send(ev);
                    }
                    return true;
                }
                cmd = self.commands.recv(), if !self.commands_closed => cmd,
            };
            match cmd {
                None => self.commands_closed = true,
                Some(c @ (PeerCommand::Send(_) | PeerCommand::SendMessage(_))) => {
                    self.send_now(c).await
                }
                Some(c) => self.deferred.push_back(c),
            }
        }
    }

    /// The BFD session changed state. A transition out of Up (seen by the
    /// flap count, so one that came and went between two looks counts too)
    /// ends a BGP session with Cease / BFD Down (RFC 9384), unless the
    /// remote system was administratively down: RFC 5882 §3.2, "the
    /// session MUST NOT be declared down" for that. An Idle, Connect or
    /// Active session has nothing to end; it is left to connect: BGP is
    /// not held back while BFD is down (no RFC 5882 §3.3 dampening beyond
    /// the FSM's own growing idle hold).
    async fn bfd_changed(&mut self) {
        let Some(rx) = self.bfd.as_mut() else {
            return;
        };
        let st = *rx.borrow_and_update();
        if st.flaps <= self.bfd_flaps {
            return;
        }
        self.bfd_flaps = st.flaps;
        let peer = self.cfg.address;
        let down = st.last_down;
        if down.is_some_and(|c| c.remote_state == bfd::State::AdminDown) {
            info!(%peer, "BFD: the peer is administratively down; the BGP session stays");
            return;
        }
        if !matches!(
            self.fsm.state(),
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            debug!(%peer, state = self.fsm.state().name(), "BFD down; no BGP session to end");
            return;
        }
        let diag = down.map_or(bfd::Diag::NoDiagnostic, |c| c.diag);
        warn!(%peer, %diag, "BFD down: ending the BGP session (Cease / BFD Down)");
        self.drop_second();
        self.collision.reset();
        let idle = Some(self.cfg.fsm.idle_hold);
        self.feed(Event::AdminDown {
            notification: Notification::bare(ErrorCode::Cease(CeaseError::BfdDown)),
            idle,
        })
        .await;
    }

    /// The links of directly connected peers changed. A new drop of this
    /// peer's (its link went down, or the peer left the connected
    /// networks) ends the session at once, as BIRD's `check link` and
    /// FRR's `fast-external-failover` do; while the link stays down the
    /// session is held Idle, and it starts again when the link is back,
    /// if it was running or asked to start meanwhile.
    async fn link_changed(&mut self) {
        let peer = self.cfg.address;
        let Some(rx) = self.links.as_mut() else {
            return;
        };
        let link = rx
            .borrow_and_update()
            .get(&peer)
            .copied()
            .unwrap_or_default();
        if link.drops > self.link_drops {
            self.link_drops = link.drops;
            // A session that runs, or waits for its idle hold timer to run
            // again, comes back with the link; a stopped one stays stopped.
            let running = self.fsm.state() != State::Idle
                || self.timers[timer_index(Timer::IdleHold)].is_some();
            self.start_on_link_up |= running;
            if matches!(
                self.fsm.state(),
                State::OpenSent | State::OpenConfirm | State::Established
            ) {
                warn!(%peer, "link down: session to {peer} dropped (fast external failover)");
            } else {
                info!(%peer, state = self.fsm.state().name(), "link down: no session to drop; the peer waits for the link");
            }
            self.drop_second();
            self.collision.reset();
            self.feed(Event::LinkDown).await;
        }
        self.link_down = link.down;
        if !link.down && std::mem::take(&mut self.start_on_link_up) {
            info!(%peer, "link up: starting the session again");
            self.feed(Event::ManualStart).await;
        }
    }

    /// Forgets the second connection, handing back its stream.
    fn drop_second(&mut self) -> Option<Second> {
        self.collision.second_gone();
        self.second.take()
    }

    /// An accepted connection from the peer (RFC 4271 §6.8 collisions: the
    /// [`Arbiter`] decides, this carries it out).
    async fn incoming(&mut self, stream: TcpStream) {
        let peer = self.cfg.address;
        if let Some(h) = self.cfg.connect.gtsm_hops {
            if let Err(e) = socket::gtsm_accepted(&stream, h) {
                warn!(%peer, error = %e, "cannot apply TTL security to an accepted connection");
            }
        }
        let now = std::time::Instant::now();
        match self.collision.incoming(now, self.fsm.state(), self.peer_gr) {
            Admit::StartAndAccept => {
                debug!(%peer, "collision: accepting the connection the peer kept");
                self.feed(Event::ManualStart).await;
                self.connecting = None;
                if matches!(self.fsm.state(), State::Connect | State::Active) {
                    self.conn = Some(Conn::new(stream, false));
                    self.feed(Event::TcpAccepted).await;
                }
            }
            // Not started, or holding down after an error.
            Admit::Refuse => drop(stream),
            Admit::Accept => {
                self.conn = Some(Conn::new(stream, false));
                self.feed(Event::TcpAccepted).await;
            }
            Admit::ReplaceRestarted => {
                // RFC 4724 §4.2: the old session is gone (its routes become
                // stale), the new one is accepted.
                info!(%peer, "new connection while Established: peer restarted (graceful restart)");
                self.conn = None;
                self.feed(Event::TcpFails).await;
                self.feed(Event::ManualStart).await;
                self.connecting = None;
                self.conn = Some(Conn::new(stream, false));
                self.feed(Event::TcpAccepted).await;
            }
            Admit::Reject => reject(stream, CeaseError::ConnectionCollisionResolution).await,
            Admit::Second => self.hold_second(stream).await,
        }
    }

    /// Our connection completed while the FSM has the peer's (§6.8).
    async fn connected_while_busy(&mut self, stream: TcpStream) {
        let now = std::time::Instant::now();
        match self.collision.connected_while_busy(now, self.fsm.state()) {
            Admit::Second => self.hold_second(stream).await,
            _ => reject(stream, CeaseError::ConnectionCollisionResolution).await,
        }
    }

    /// §6.8: a second connection while the first is in OpenSent or
    /// OpenConfirm, admitted by the arbiter. Our OPEN goes out on it at
    /// once, as on any connection: a peer in the same position decides when
    /// it reads it, and waiting for the peer's OPEN first would deadlock two
    /// speakers that both wait.
    async fn hold_second(&mut self, mut stream: TcpStream) {
        let peer = self.cfg.address;
        let open = Message::Open(self.fsm.local_open());
        let Ok(b) = open.to_bytes(&Default::default()) else {
            self.collision.second_gone();
            return;
        };
        if let Err(e) = stream.write_all(&b).await {
            debug!(%peer, error = %e, "collision: the second connection failed");
            self.collision.second_gone();
            return;
        }
        debug!(%peer, "collision: second connection; OPEN sent");
        self.second = Some(Second {
            stream,
            buf: BytesMut::with_capacity(4096),
        });
        // In OpenConfirm the peer's BGP Identifier is known: decide now
        // (§6.8 examines the connections in OpenConfirm).
        if self.fsm.state() == State::OpenConfirm {
            if let Some(id) = self.fsm.remote_open().map(|o| o.bgp_id) {
                self.resolve(id, None).await;
            }
        }
    }

    /// §6.8 between the FSM's connection and the second, the peer's BGP
    /// Identifier known: the arbiter picks, the loser is closed with Cease /
    /// Connection Collision Resolution. `open` is the peer's OPEN on the
    /// second connection, if that is where it came. Returns whether the
    /// FSM's connection stayed.
    async fn resolve(&mut self, remote_id: Ipv4Addr, open: Option<Open>) -> bool {
        let peer = self.cfg.address;
        let existing_outgoing = self.conn.as_ref().map(|c| c.outgoing);
        let Some(r) = self.collision.resolve(remote_id, existing_outgoing) else {
            return true;
        };
        let Some(s) = self.second.take() else {
            return true;
        };
        match r {
            Resolution::KeepExisting => {
                debug!(%peer, ?existing_outgoing, "collision: keeping the existing connection");
                reject(s.stream, CeaseError::ConnectionCollisionResolution).await;
                true
            }
            Resolution::UseSecond { outgoing } => {
                debug!(%peer, ?existing_outgoing, "collision: switching to the second connection");
                if let Some(c) = self.conn.take() {
                    reject(c.stream, CeaseError::ConnectionCollisionResolution).await;
                    self.feed(Event::TcpFails).await;
                }
                self.adopt(s, outgoing, open).await;
                false
            }
        }
    }

    /// Bytes arrived on the second connection: once its first message is
    /// whole, the peer's OPEN decides the collision; anything else (its
    /// NOTIFICATION: the peer closed it) ends it.
    async fn second_read(&mut self) {
        let peer = self.cfg.address;
        let Some(s) = self.second.as_mut() else {
            return;
        };
        let open = match split_message(&mut s.buf, 4096) {
            Ok(None) => return,
            Ok(Some((h, raw))) => {
                let raw = raw.freeze();
                match Message::decode_body(
                    &Default::default(),
                    h.msg_type,
                    &raw.slice(HEADER_LEN..),
                ) {
                    Ok(Message::Open(o)) => Some(o),
                    Ok(Message::Notification(n)) => {
                        debug!(%peer, notification = %n, "collision: the peer closed the second connection");
                        None
                    }
                    _ => None,
                }
            }
            Err(_) => None,
        };
        let Some(open) = open else {
            self.drop_second();
            return;
        };
        if self.fsm.state() == State::Established {
            if let Some(s) = self.drop_second() {
                reject(s.stream, CeaseError::ConnectionCollisionResolution).await;
            }
            return;
        }
        if !self.resolve(open.bgp_id, Some(open)).await {
            self.drain().await;
        }
    }

    /// Makes the second connection the FSM's: our OPEN is out on it, and
    /// `open` is the peer's if it came (later bytes are in its buffer).
    async fn adopt(&mut self, s: Second, outgoing: bool, open: Option<Open>) {
        if self.fsm.state() == State::Idle {
            self.feed(Event::ManualStart).await;
        }
        self.connecting = None;
        if !matches!(self.fsm.state(), State::Connect | State::Active) {
            return;
        }
        self.conn = Some(Conn {
            stream: s.stream,
            outgoing,
            buf: s.buf,
            open_sent: true,
        });
        self.feed(if outgoing {
            Event::TcpConnected
        } else {
            Event::TcpAccepted
        })
        .await;
        if let Some(open) = open {
            self.feed(Event::Received(Message::Open(open))).await;
        }
    }

    async fn write(&mut self, b: &[u8]) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        // A hung peer reads nothing and the write waits for it; BFD going
        // Down meanwhile must not wait behind it (RFC 5882 §4.2).
        let seen = self.bfd_flaps;
        let (addr, seen_link) = (self.cfg.address, self.link_drops);
        let r = tokio::select! {
            r = conn.stream.write_all(b) => r,
            _ = link_failure(self.links.as_mut(), addr, seen_link) => {
                // Not acted on here (the borrow of the connection): the
                // connection goes, and `link_changed` ends the session.
                self.conn = None;
                Box::pin(self.link_changed()).await;
                return false;
            }
            flaps = bfd_failure(self.bfd.as_mut(), seen) => {
                self.bfd_flaps = flaps;
                warn!(
                    peer = %self.cfg.address,
                    "BFD down while a write waited for the peer: dropping the connection (Cease / BFD Down)"
                );
                // The NOTIFICATION cannot get past the data queued before
                // it: the connection goes, and the FSM records why.
                self.conn = None;
                Box::pin(self.feed(Event::AdminDown {
                    notification: Notification::bare(ErrorCode::Cease(CeaseError::BfdDown)),
                    idle: Some(self.cfg.fsm.idle_hold),
                }))
                .await;
                return false;
            }
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                debug!(peer = %self.cfg.address, error = %e, "write failed");
                self.conn = None;
                Box::pin(self.feed(Event::TcpFails)).await;
                false
            }
        }
    }

    /// Feeds one event to the FSM and carries out its actions.
    async fn feed(&mut self, ev: Event) {
        match ev {
            // Held while the link is down: a connection cannot succeed,
            // and the start is taken when the link is back.
            Event::ManualStart | Event::AutomaticStart | Event::TimerExpired(Timer::IdleHold)
                if self.link_down =>
            {
                self.start_on_link_up = true;
                return;
            }
            Event::ManualStop { .. } => self.start_on_link_up = false,
            _ => {}
        }
        let before = self.fsm.state();
        let actions = self.fsm.handle(ev);
        for a in actions {
            self.act(a).await;
        }
        let after = self.fsm.state();
        if before != after {
            debug!(peer = %self.cfg.address, from = before.name(), to = after.name(), "state");
            self.deliver(PeerEvent {
                peer: self.cfg.address,
                session: self.cfg.id,
                kind: PeerEventKind::State(after),
            })
            .await;
        }
    }

    async fn act(&mut self, a: Action) {
        let peer = self.cfg.address;
        match a {
            Action::Connect => {
                let addr = SocketAddr::new(peer, self.cfg.port);
                let mut opts = self.cfg.connect.clone();
                opts.timeout.get_or_insert(Duration::from_secs(10));
                self.connecting = Some(Box::pin(async move { socket::connect(addr, &opts).await }));
            }
            Action::Disconnect => {
                self.connecting = None;
                if let Some(mut c) = self.conn.take() {
                    let _ = c.stream.shutdown().await;
                }
            }
            Action::Send(m) => {
                match m.to_bytes(self.fsm.codec()) {
                    Ok(b) => {
                        if let Message::Notification(n) = &m {
                            warn!(%peer, notification = %n, "sending NOTIFICATION");
                        }
                        let Some(conn) = self.conn.as_mut() else {
                            return;
                        };
                        if matches!(m, Message::Open(_)) && std::mem::take(&mut conn.open_sent) {
                            return;
                        }
                        // A failed write surfaces as a read error next.
                        let _ = conn.stream.write_all(&b).await;
                    }
                    Err(e) => warn!(%peer, error = %e, "message not sent"),
                }
            }
            Action::StartTimer(t, d) => self.timers[timer_index(t)] = Some(Instant::now() + d),
            Action::StopTimer(t) => self.timers[timer_index(t)] = None,
            Action::Established { ctx, remote } => {
                self.peer_gr = remote
                    .capabilities()
                    .any(|c| matches!(c, Capability::GracefulRestart(_)));
                self.established_at = Some(Instant::now());
                self.collision.session_up(std::time::Instant::now());
                info!(%peer, asn = remote.asn(), id = %remote.bgp_id, hold = self.fsm.negotiated_hold_time(), "session established");
                let local = self.conn.as_ref().and_then(|c| c.stream.local_addr().ok());
                self.deliver(PeerEvent {
                    peer,
                    session: self.cfg.id,
                    kind: PeerEventKind::Established { ctx, remote, local },
                })
                .await;
            }
            Action::Down {
                reason,
                was_established,
            } => {
                match &reason {
                    DownReason::NotificationReceived(n) => {
                        warn!(%peer, notification = %n, "received NOTIFICATION")
                    }
                    r if was_established => warn!(%peer, reason = %r, "session down"),
                    r => debug!(%peer, reason = %r, "connection attempt ended"),
                }
                self.deliver(PeerEvent {
                    peer,
                    session: self.cfg.id,
                    kind: PeerEventKind::Down {
                        reason,
                        was_established,
                    },
                })
                .await;
            }
            Action::Update(u) => {
                // Under a full table the speaker's event queue stays full
                // while the RIB works, and this task waits here between
                // two reads; BFD going Down meanwhile must not wait behind
                // it (RFC 5882 §4.2). The UPDATE is dropped then: the
                // session ends, and its Down withdraws all of this peer's
                // routes anyway.
                let ev = PeerEvent {
                    peer,
                    session: self.cfg.id,
                    kind: PeerEventKind::Update(u),
                };
                let failed = !self.deliver_unless_bfd_fails(ev).await;
                if failed {
                    warn!(%peer, "BFD or link down while an UPDATE waited for the speaker");
                    Box::pin(self.bfd_changed()).await;
                    Box::pin(self.link_changed()).await;
                }
            }
            Action::RouteRefresh(r) => {
                self.deliver(PeerEvent {
                    peer,
                    session: self.cfg.id,
                    kind: PeerEventKind::RouteRefresh(r),
                })
                .await;
            }
        }
    }
}

/// The most octets of queued messages written with one system call (a
/// message is at most 65,535, RFC 8654, so one always fits).
const WRITE_BATCH: usize = 64 << 10;

/// Closes a connection we do not want, telling the peer why.
async fn reject(mut stream: TcpStream, why: CeaseError) {
    let n = Notification::bare(ErrorCode::Cease(why));
    if let Ok(b) = Message::Notification(n).to_bytes(&Default::default()) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&b)).await;
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::header::split_message;
    use tokio::net::TcpListener;

    const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Reads one whole message from a raw peer-side stream.
    async fn read_message(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Message> {
        loop {
            if let Ok(Some((h, raw))) = split_message(buf, 4096) {
                let raw = raw.freeze();
                return Message::decode_body(
                    &Default::default(),
                    h.msg_type,
                    &raw.slice(HEADER_LEN..),
                )
                .ok();
            }
            match tokio::time::timeout(Duration::from_secs(5), s.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn send(s: &mut TcpStream, m: Message) {
        s.write_all(&m.to_bytes(&Default::default()).unwrap())
            .await
            .unwrap();
    }

    /// The reason of the next Down event, within `secs` (`what` names
    /// the expectation when it does not come).
    async fn next_down(
        events: &mut mpsc::Receiver<PeerEvent>,
        secs: u64,
        what: &str,
    ) -> DownReason {
        tokio::time::timeout(Duration::from_secs(secs), async {
            while let Some(e) = events.recv().await {
                if let PeerEventKind::Down { reason, .. } = e.kind {
                    return reason;
                }
            }
            panic!("events ended");
        })
        .await
        .expect(what)
    }

    async fn next_state(events: &mut mpsc::Receiver<PeerEvent>, want: State) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = events.recv().await {
                if matches!(e.kind, PeerEventKind::State(s) if s == want) {
                    return;
                }
            }
            panic!("events ended before {want:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {want:?} within 5 s"));
    }

    /// A peer task whose own connection reached OpenConfirm with a peer
    /// of the higher BGP Identifier: its commands, its events and the
    /// peer's end of that connection.
    async fn in_open_confirm() -> (
        mpsc::Sender<PeerCommand>,
        mpsc::Receiver<PeerEvent>,
        TcpStream,
    ) {
        let peer_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = peer_listener.local_addr().unwrap().port();
        let mut fsm = FsmConfig::new(65001, LOCAL_ID, 65002, vec![]);
        fsm.idle_hold = Duration::from_secs(60);
        let cfg = SessionConfig {
            address: "127.0.0.1".parse().unwrap(),
            id: SessionId(1),
            port,
            fsm,
            connect: ConnectOptions::default(),
            bfd: None,
            links: None,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (ev_tx, mut events) = mpsc::channel(64);
        let _task = spawn_peer(cfg, cmd_rx, ev_tx);
        cmd_tx.send(PeerCommand::Start).await.unwrap();

        // Our connection to the peer reaches OpenConfirm.
        let (mut ours, _) = peer_listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_message(&mut ours, &mut buf).await,
            Some(Message::Open(_))
        ));
        send(
            &mut ours,
            Message::Open(Open::new(65002, 90, PEER_ID, vec![])),
        )
        .await;
        next_state(&mut events, State::OpenConfirm).await;
        (cmd_tx, events, ours)
    }

    /// A connection accepted on our side, handed to the task as the
    /// speaker's listener would, and the peer's end of it.
    async fn incoming(cmd_tx: &mpsc::Sender<PeerCommand>) -> TcpStream {
        let our_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let theirs = TcpStream::connect(our_listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = our_listener.accept().await.unwrap();
        cmd_tx.send(PeerCommand::Incoming(accepted)).await.unwrap();
        theirs
    }

    /// RFC 4271 §6.8: the peer (higher BGP Identifier) closes our connection
    /// as the collision's loser, and the connection it initiated reaches us
    /// only after that NOTIFICATION (the race seen in the interop suite).
    /// That connection is accepted and the session comes up on it at once.
    #[tokio::test]
    async fn connection_the_peer_kept_is_accepted_after_it_closed_ours() {
        let (cmd_tx, mut events, mut ours) = in_open_confirm().await;

        // The peer keeps the connection it initiated and closes ours.
        let n = Notification::bare(ErrorCode::Cease(CeaseError::ConnectionCollisionResolution));
        send(&mut ours, Message::Notification(n)).await;
        next_state(&mut events, State::Idle).await;

        // Its own connection arrives now.
        let mut theirs = incoming(&cmd_tx).await;
        let mut buf = BytesMut::new();
        assert!(
            matches!(
                read_message(&mut theirs, &mut buf).await,
                Some(Message::Open(_))
            ),
            "the peer's connection was refused"
        );
        send(
            &mut theirs,
            Message::Open(Open::new(65002, 90, PEER_ID, vec![])),
        )
        .await;
        send(&mut theirs, Message::Keepalive).await;
        next_state(&mut events, State::Established).await;
    }

    /// A session task with BFD Up (the sender to change it), Established
    /// with a peer on loopback whose socket is returned; the speaker's
    /// event queue holds `events` (a small one fills as under a full table).
    async fn established_with_bfd(
        events: usize,
    ) -> (
        watch::Sender<SessionStatus>,
        mpsc::Sender<PeerCommand>,
        mpsc::Receiver<PeerEvent>,
        TcpStream,
    ) {
        let peer_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = peer_listener.local_addr().unwrap().port();
        let (bfd_tx, bfd_rx) = watch::channel(SessionStatus {
            state: bfd::State::Up,
            local_diag: bfd::Diag::NoDiagnostic,
            flaps: 0,
            last_change: None,
            last_down: None,
        });
        let cfg = SessionConfig {
            address: "127.0.0.1".parse().unwrap(),
            id: SessionId(1),
            port,
            fsm: FsmConfig::new(65001, LOCAL_ID, 65002, vec![]),
            connect: ConnectOptions::default(),
            bfd: Some(bfd_rx),
            links: None,
        };
        let (cmd_tx, events, ours) = start_established(cfg, &peer_listener, events).await;
        (bfd_tx, cmd_tx, events, ours)
    }

    /// Spawns the session task of `cfg`, starts it and lets it reach
    /// Established with a peer accepted on `listener`, whose socket is
    /// returned; the speaker's event queue holds `events`.
    async fn start_established(
        cfg: SessionConfig,
        listener: &TcpListener,
        events: usize,
    ) -> (
        mpsc::Sender<PeerCommand>,
        mpsc::Receiver<PeerEvent>,
        TcpStream,
    ) {
        start_established_offering(cfg, listener, events, vec![]).await
    }

    /// [`start_established`] with the peer's OPEN offering `caps`.
    async fn start_established_offering(
        cfg: SessionConfig,
        listener: &TcpListener,
        events: usize,
        caps: Vec<Capability>,
    ) -> (
        mpsc::Sender<PeerCommand>,
        mpsc::Receiver<PeerEvent>,
        TcpStream,
    ) {
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (ev_tx, mut events) = mpsc::channel(events);
        let _task = spawn_peer(cfg, cmd_rx, ev_tx);
        cmd_tx.send(PeerCommand::Start).await.unwrap();
        let (mut ours, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        read_message(&mut ours, &mut buf).await;
        send(
            &mut ours,
            Message::Open(Open::new(65002, 90, PEER_ID, caps)),
        )
        .await;
        send(&mut ours, Message::Keepalive).await;
        next_state(&mut events, State::Established).await;
        (cmd_tx, events, ours)
    }

    /// A hung peer stops reading: our UPDATEs fill its receive window and
    /// our send buffer, and the session task waits in a write. BFD going
    /// Down must still end the session at once (RFC 5882 §4.2), not when
    /// the hold timer fires.
    #[tokio::test]
    async fn bfd_down_ends_a_session_blocked_in_a_write() {
        let (bfd_tx, cmd_tx, mut events, ours) = established_with_bfd(64).await;

        // The peer reads no more; 64 MB to send is far beyond the buffers.
        let feeder = tokio::spawn(async move {
            for _ in 0..64 {
                if cmd_tx
                    .send(PeerCommand::Send(vec![Bytes::from(vec![0u8; 1 << 20])]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        bfd_tx.send_modify(|s| {
            let c = bfd::StateChange {
                from: bfd::State::Up,
                to: bfd::State::Down,
                diag: bfd::Diag::ControlDetectionTimeExpired,
                remote_state: bfd::State::Up,
                remote_diag: bfd::Diag::NoDiagnostic,
            };
            s.state = bfd::State::Down;
            s.flaps = 1;
            s.last_change = Some(c);
            s.last_down = Some(c);
        });
        let reason = next_down(
            &mut events,
            2,
            "the session ended within 2 s of BFD going down",
        )
        .await;
        assert_eq!(
            reason,
            DownReason::NotificationSent(Notification::bare(ErrorCode::Cease(CeaseError::BfdDown)))
        );
        feeder.abort();
        drop(ours);
    }

    /// Fast external failover at the session: the link going down ends an
    /// Established session at once, even one blocked in a write to a peer
    /// that reads nothing, with Down / LinkDown; no connection is attempted
    /// while the link stays down (a Start meanwhile waits too), and the
    /// session connects again as soon as the link is back.
    #[tokio::test]
    async fn link_down_ends_the_session_and_holds_it_until_the_link_is_back() {
        let peer_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = peer_listener.local_addr().unwrap().port();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let (links_tx, links_rx) = watch::channel(PeerLinks::new());
        let cfg = SessionConfig {
            address: addr,
            id: SessionId(1),
            port,
            fsm: FsmConfig::new(65001, LOCAL_ID, 65002, vec![]),
            connect: ConnectOptions::default(),
            bfd: None,
            links: Some(links_rx),
        };
        let (cmd_tx, mut events, ours) = start_established(cfg, &peer_listener, 64).await;

        // The peer reads no more; 64 MB to send is far beyond the buffers.
        let feeder_tx = cmd_tx.clone();
        let feeder = tokio::spawn(async move {
            for _ in 0..64 {
                let big = PeerCommand::Send(vec![Bytes::from(vec![0u8; 1 << 20])]);
                if feeder_tx.send(big).await.is_err() {
                    return;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        links_tx.send_modify(|l| {
            l.insert(
                addr,
                LinkState {
                    down: true,
                    drops: 1,
                },
            );
        });
        let reason = next_down(&mut events, 2, "the session ended on the link").await;
        assert_eq!(reason, DownReason::LinkDown);
        feeder.abort();
        drop(ours);

        // Held: neither the FSM nor a Start connects while the link is down.
        cmd_tx.send(PeerCommand::Start).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), peer_listener.accept())
                .await
                .is_err(),
            "no connection while the link is down"
        );
        links_tx.send_modify(|l| {
            if let Some(s) = l.get_mut(&addr) {
                s.down = false;
            }
        });
        tokio::time::timeout(Duration::from_secs(5), peer_listener.accept())
            .await
            .expect("a connection once the link is back")
            .unwrap();
    }

    /// The speaker's event queue is full and the session task waits to
    /// hand it an UPDATE, while the speaker waits for room in this
    /// session's command queue (its own UPDATEs for the peer: a route
    /// reflector, or any peer that both sends and receives a table). The
    /// session keeps writing what it is told to send, so the speaker is
    /// never stuck behind it; other commands (a stop) are carried out once
    /// the UPDATE is delivered. Before, both waited for ever.
    #[tokio::test]
    async fn a_session_waiting_for_the_speaker_still_sends_what_it_is_told() {
        let (_bfd_tx, cmd_tx, mut events, mut ours) = established_with_bfd(4).await;
        // The peer's UPDATEs fill the speaker's queue; nobody reads it.
        let mut update = vec![0xff; 16];
        update.extend_from_slice(&[0, 27, 2, 0, 4, 24, 10, 0, 0, 0, 0]);
        for _ in 0..64 {
            ours.write_all(&update).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Ours for the peer: four times the command queue's 8 slots.
        let ours_update = {
            let mut u = vec![0xff; 16];
            u.extend_from_slice(&[0, 27, 2, 0, 4, 24, 10, 9, 9, 0, 0]);
            Bytes::from(u)
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..32 {
                cmd_tx
                    .send(PeerCommand::Send(vec![ours_update.clone()]))
                    .await
                    .unwrap();
            }
        })
        .await
        .expect("the session took its commands while the speaker was busy");
        let mut buf = BytesMut::new();
        let mut got = 0;
        while got < 32 {
            match read_message(&mut ours, &mut buf).await {
                Some(Message::Update(u)) if u.withdrawals().count() == 1 => got += 1,
                Some(_) => {}
                None => panic!("only {got} of our 32 UPDATEs reached the peer"),
            }
        }
        // A stop read meanwhile waits for the UPDATEs to be delivered, then
        // ends the session.
        cmd_tx
            .send(PeerCommand::Stop {
                communication: None,
            })
            .await
            .unwrap();
        let reason = next_down(&mut events, 5, "the stop was carried out").await;
        assert!(
            matches!(&reason, DownReason::NotificationSent(n) if n.error == ErrorCode::Cease(CeaseError::AdministrativeShutdown)),
            "{reason:?}"
        );
    }

    /// The speaker is busy (its event queue full, as under a full table)
    /// and the session task waits to hand it the next UPDATE. BFD going
    /// Down must still end the session at once with Cease / BFD Down, not
    /// once the speaker has caught up.
    #[tokio::test]
    async fn bfd_down_ends_a_session_waiting_for_the_speaker() {
        let (bfd_tx, _cmd_tx, mut events, mut ours) = established_with_bfd(4).await;
        let mut buf = BytesMut::new();

        // Far more UPDATEs than the queue holds, and nobody reads it: each
        // withdraws 10.0.0.0/24 (RFC 4271 §4.3).
        let mut update = vec![0xff; 16];
        update.extend_from_slice(&[0, 27, 2, 0, 4, 24, 10, 0, 0, 0, 0]);
        for _ in 0..64 {
            ours.write_all(&update).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        bfd_tx.send_modify(|s| {
            let c = bfd::StateChange {
                from: bfd::State::Up,
                to: bfd::State::Down,
                diag: bfd::Diag::ControlDetectionTimeExpired,
                remote_state: bfd::State::Up,
                remote_diag: bfd::Diag::NoDiagnostic,
            };
            s.state = bfd::State::Down;
            s.flaps = 1;
            s.last_change = Some(c);
            s.last_down = Some(c);
        });
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match read_message(&mut ours, &mut buf).await {
                    Some(Message::Notification(n)) => return Some(n),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await
        .expect("a NOTIFICATION within 2 s of BFD going down");
        assert_eq!(
            got,
            Some(Notification::bare(ErrorCode::Cease(CeaseError::BfdDown)))
        );
        // The speaker, catching up, learns of it after the UPDATEs queued.
        let reason = next_down(&mut events, 2, "Down reported").await;
        assert_eq!(
            reason,
            DownReason::NotificationSent(Notification::bare(ErrorCode::Cease(CeaseError::BfdDown)))
        );
    }

    /// RFC 4271 §6.8 against RFC 4724 §4.2 (a race seen in CI with BIRD
    /// restarting): a graceful-restart peer and we connected at once, our
    /// connection reached Established first, and the peer's is handed over
    /// just after. It is closed with Cease 6/7 and the session stays up;
    /// taking it for a restart ended the fresh session.
    #[tokio::test]
    async fn the_peers_connection_just_after_established_is_a_collision() {
        use crate::wire::capability::GracefulRestart;
        let peer_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = SessionConfig {
            address: "127.0.0.1".parse().unwrap(),
            id: SessionId(1),
            port: peer_listener.local_addr().unwrap().port(),
            fsm: FsmConfig::new(65001, LOCAL_ID, 65002, vec![]),
            connect: ConnectOptions::default(),
            bfd: None,
            links: None,
        };
        let gr = Capability::GracefulRestart(GracefulRestart {
            flags: GracefulRestart::RESTART_STATE,
            restart_time: 120,
            families: vec![],
        });
        let (cmd_tx, mut events, mut ours) =
            start_established_offering(cfg, &peer_listener, 64, vec![gr]).await;

        let mut theirs = incoming(&cmd_tx).await;
        let mut tbuf = BytesMut::new();
        match read_message(&mut theirs, &mut tbuf).await {
            Some(Message::Notification(n)) => assert_eq!(
                n.error,
                ErrorCode::Cease(CeaseError::ConnectionCollisionResolution)
            ),
            other => panic!("the peer's connection was taken for a restart: {other:?}"),
        }
        // The session on our connection carries on.
        send(&mut ours, Message::Keepalive).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(e) = events.try_recv() {
            assert!(
                !matches!(e.kind, PeerEventKind::Down { .. } | PeerEventKind::State(_)),
                "the session changed: {:?}",
                e.kind
            );
        }
    }

    /// Sends queued behind a send go out with it, and a command of another
    /// kind among them keeps its place: what was queued before a stop is
    /// written, then the stop's NOTIFICATION, and nothing queued after it.
    #[tokio::test]
    async fn queued_sends_keep_their_order_around_a_stop() {
        let (_bfd_tx, cmd_tx, _events, mut ours) = established_with_bfd(64).await;
        let withdraw = |x: u8| {
            let mut u = vec![0xff; 16];
            u.extend_from_slice(&[0, 27, 2, 0, 4, 24, 10, x, 0, 0, 0]);
            Bytes::from(u)
        };
        // Queued at once: the task runs only when this test waits.
        for c in [
            PeerCommand::Send(vec![withdraw(1), withdraw(2)]),
            PeerCommand::Send(vec![withdraw(3)]),
            PeerCommand::SendMessage(Message::RouteRefresh(RouteRefresh::request(
                crate::wire::Family::IPV4_UNICAST,
            ))),
            PeerCommand::Send(vec![withdraw(4)]),
            PeerCommand::Stop {
                communication: None,
            },
            PeerCommand::Send(vec![withdraw(5)]),
        ] {
            cmd_tx.try_send(c).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        loop {
            match read_message(&mut ours, &mut buf).await {
                Some(Message::Update(u)) => {
                    seen.extend(u.withdrawals().map(|(_, w)| w.prefix.to_string()))
                }
                Some(Message::Notification(_)) => seen.push("NOTIFICATION".into()),
                Some(Message::RouteRefresh(_)) => seen.push("ROUTE-REFRESH".into()),
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "10.1.0.0/24",
                "10.2.0.0/24",
                "10.3.0.0/24",
                "ROUTE-REFRESH",
                "10.4.0.0/24",
                "NOTIFICATION"
            ]
        );
    }

    /// One `Send` of many messages, more octets than one write takes, small
    /// and large mixed: all reach the peer whole and in order.
    #[tokio::test]
    async fn a_large_send_arrives_whole_and_in_order() {
        let (_bfd_tx, cmd_tx, _events, mut ours) = established_with_bfd(64).await;
        // Withdrawals of 10.x.y.0/24, numbered by x.y, and in their midst
        // one UPDATE of 800 withdrawn /32s, near the 4,096-octet limit.
        let update = |i: u16| {
            let mut u = vec![0xff; 16];
            let [x, y] = i.to_be_bytes();
            u.extend_from_slice(&[0, 27, 2, 0, 4, 24, 10, x, y, 0, 0]);
            Bytes::from(u)
        };
        let n = 9000u16;
        let mut msgs: Vec<Bytes> = (0..n).map(update).collect();
        let big = {
            let routes = 800u16;
            let len = 23 + routes * 5;
            let mut u = vec![0xff; 16];
            u.extend_from_slice(&len.to_be_bytes());
            u.push(2);
            u.extend_from_slice(&(routes * 5).to_be_bytes());
            for i in 0..routes {
                let [a, b] = i.to_be_bytes();
                u.extend_from_slice(&[32, 10, 200, a, b]);
            }
            u.extend_from_slice(&[0, 0]);
            Bytes::from(u)
        };
        assert!(msgs.iter().map(Bytes::len).sum::<usize>() > 2 * WRITE_BATCH);
        msgs.insert(4500, big);
        cmd_tx.send(PeerCommand::Send(msgs)).await.unwrap();
        let mut buf = BytesMut::new();
        let mut next = 0u16;
        let mut saw_big = false;
        while next < n {
            match read_message(&mut ours, &mut buf).await {
                Some(Message::Update(u)) => {
                    let w: Vec<_> = u.withdrawals().collect();
                    if w.len() == 800 {
                        assert_eq!(next, 4500, "the large UPDATE in its place");
                        saw_big = true;
                        continue;
                    }
                    let [x, y] = next.to_be_bytes();
                    let want: crate::wire::Prefix = format!("10.{x}.{y}.0/24").parse().unwrap();
                    assert_eq!(w.len(), 1);
                    assert_eq!(w[0].1.prefix, want, "message {next}");
                    next += 1;
                }
                Some(_) => {}
                None => panic!("only {next} of {n} UPDATEs arrived"),
            }
        }
        assert!(saw_big);
    }

    /// Outside that window an Idle peer still refuses connections (§8.2.2
    /// Idle: a connection is not accepted while holding down after an error).
    #[tokio::test]
    async fn idle_after_an_error_refuses_connections() {
        let (cmd_tx, mut events, mut ours) = in_open_confirm().await;
        // Any other NOTIFICATION: an error, not a collision.
        let n = Notification::bare(ErrorCode::Cease(CeaseError::OtherConfigurationChange));
        send(&mut ours, Message::Notification(n)).await;
        next_state(&mut events, State::Idle).await;

        let mut theirs = incoming(&cmd_tx).await;
        let mut buf = BytesMut::new();
        assert!(read_message(&mut theirs, &mut buf).await.is_none());
    }
}
