//! The benchmark's own BGP ends: injectors that stream pre-encoded
//! UPDATEs as fast as TCP takes them, the monitor peer that counts what
//! the DUT passes on, and a sink that only reads (to time an injector
//! alone). Blocking sockets on plain threads: one session each, nothing to
//! multiplex, and a blocked `write` is exactly TCP's backpressure.

use super::encode;
use anyhow::{bail, Context, Result};
use petrel_tests::lab::raw::{RawSpeaker, SocketOptions};
use petrel_tests::lab::Netns;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Hold time we offer (RFC 4271 §4.2); the DUT may lower it (the
/// failover scenarios configure 9 s), so keepalives go every
/// [`KEEPALIVE`], a third of the lowest hold time any scenario uses.
const HOLD: u16 = 180;
const KEEPALIVE: Duration = Duration::from_secs(3);

/// Reads one message: (type, body).
pub fn read_message(s: &mut impl Read) -> Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 19];
    s.read_exact(&mut h)?;
    let len = u16::from_be_bytes([h[16], h[17]]) as usize;
    if !(19..=65535).contains(&len) || h[..16] != [0xff; 16] {
        bail!("bad message header {h:02x?}");
    }
    let mut body = vec![0u8; len - 19];
    s.read_exact(&mut body)?;
    Ok((h[18], body))
}

fn notification(body: &[u8]) -> String {
    format!(
        "NOTIFICATION code {} subcode {} data {:02x?}",
        body.first().copied().unwrap_or(0),
        body.get(1).copied().unwrap_or(0),
        body.get(2..).unwrap_or_default()
    )
}

/// Sends our OPEN, answers theirs with a KEEPALIVE, returns their OPEN's
/// body at their KEEPALIVE: Established (RFC 4271 §8.2.2, OpenConfirm).
fn handshake(s: &mut TcpStream, asn: u32, id: [u8; 4], opts: encode::OpenOpts) -> Result<Vec<u8>> {
    s.write_all(&encode::open_with(asn, id, HOLD, opts))?;
    let mut open = None;
    loop {
        match read_message(s)? {
            (1, b) => {
                open = Some(b);
                s.write_all(&encode::keepalive())?;
            }
            (4, _) if open.is_some() => return Ok(open.unwrap_or_default()),
            (3, b) => bail!("peer sent {}", notification(&b)),
            _ => {}
        }
    }
}

/// Dials `peer:179` from `local` inside `ns` (retrying until the lab
/// deadline while the DUT starts listening) and completes the handshake.
pub fn establish(ns: &Netns, local: IpAddr, peer: IpAddr, asn: u32) -> Result<TcpStream> {
    establish_with(ns, local, peer, asn, encode::OpenOpts::default()).map(|(s, _)| s)
}

/// [`establish`] with our OPEN's optional capabilities `caps` (see
/// [`encode::OpenOpts`]: ADD-PATH receive, graceful restart helper);
/// also gives the peer's OPEN body.
pub fn establish_with(
    ns: &Netns,
    local: IpAddr,
    peer: IpAddr,
    asn: u32,
    caps: encode::OpenOpts,
) -> Result<(TcpStream, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = match local {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [10, 255, o[14], o[15]]
        }
    };
    loop {
        let opts = SocketOptions {
            local: Some(local),
            ttl: None,
        };
        let attempt =
            RawSpeaker::dial(ns, &std::net::SocketAddr::new(peer, 179).to_string(), &opts)
                .and_then(|mut r| {
                    let mut s = r.stream().try_clone()?;
                    s.set_read_timeout(Some(Duration::from_secs(30)))?;
                    let open = handshake(&mut s, asn, id, caps)?;
                    s.set_read_timeout(None)?;
                    Ok((s, open))
                });
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("session {local} -> {peer}")))
            }
            // A DUT that is not yet configured for us closes or refuses:
            // try again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Sends a KEEPALIVE every [`KEEPALIVE`] until `stop`, so a slow DUT's
/// hold timer never expires while we wait for it.
pub fn keepalives(mut s: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= KEEPALIVE {
                if s.write_all(&encode::keepalive()).is_err() {
                    return;
                }
                last = Instant::now();
            }
        }
    })
}

/// Reads and drops everything (the DUT's keepalives and any routes it
/// advertises back), so its send side never blocks on us.
fn drain(mut s: TcpStream) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// One established injector session.
pub struct Injector {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Injector {
    pub fn new(stream: TcpStream) -> Result<Injector> {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![drain(stream.try_clone()?)];
        Ok(Injector {
            stream,
            stop,
            threads,
        })
    }

    /// Writes `bytes` (whole messages) on a thread; the handle gives the
    /// instant the last byte was accepted by the kernel. Keepalives start
    /// once it is done.
    pub fn stream(&mut self, bytes: Arc<Vec<u8>>) -> Result<JoinHandle<Result<Instant>>> {
        let mut s = self.stream.try_clone()?;
        let ka = self.stream.try_clone()?;
        let stop = self.stop.clone();
        Ok(std::thread::spawn(move || {
            s.write_all(&bytes).context("injector write")?;
            let done = Instant::now();
            // Detached: ends with `stop` or with the socket.
            drop(keepalives(ka, stop));
            Ok(done)
        }))
    }

    /// Writes `msgs` at `per_second` messages per second, in bursts every
    /// 10 ms; returns when each message was handed to the kernel's socket
    /// (the instant its burst's write began).
    pub fn paced(&mut self, msgs: &[Vec<u8>], per_second: u32) -> Result<Vec<Instant>> {
        write_paced(&mut self.stream, msgs, per_second)
    }

    /// Drops the session: the TCP connection goes (FIN), no NOTIFICATION,
    /// as when a peer dies; the DUT then withdraws its routes.
    pub fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What the monitor has seen.
#[derive(Debug, Default)]
pub struct MonitorState {
    pub count: usize,
    pub updates: u64,
    pub target: usize,
    pub full_at: Option<Instant>,
    pub last_update: Option<Instant>,
    pub error: Option<String>,
}

/// The monitor peer: counts the distinct prefixes the DUT advertises.
pub struct Monitor {
    pub state: Arc<Mutex<MonitorState>>,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
}

impl Monitor {
    pub fn start(stream: TcpStream) -> Result<Monitor> {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        drop(keepalives(stream.try_clone()?, stop.clone()));
        let (st, mut s) = (state.clone(), stream.try_clone()?);
        std::thread::spawn(move || {
            let mut have: HashSet<u128, super::encode::KeyHash> = HashSet::default();
            let mut r = std::io::BufReader::with_capacity(1 << 20, &mut s);
            let (mut adv, mut wd) = (Vec::new(), Vec::new());
            loop {
                let (kind, body) = match read_message(&mut r) {
                    Ok(m) => m,
                    Err(e) => {
                        st.lock()
                            .unwrap()
                            .error
                            .get_or_insert(format!("read: {e:#}"));
                        return;
                    }
                };
                if kind == 3 {
                    st.lock().unwrap().error = Some(notification(&body));
                    return;
                }
                if kind != 2 {
                    continue;
                }
                adv.clear();
                wd.clear();
                if encode::update_prefixes(&body, &mut adv, &mut wd).is_none() {
                    st.lock().unwrap().error = Some("malformed UPDATE".into());
                    return;
                }
                wd.iter().for_each(|k| {
                    have.remove(k);
                });
                have.extend(adv.iter().copied());
                let now = Instant::now();
                let mut g = st.lock().unwrap();
                g.count = have.len();
                g.updates += 1;
                g.last_update = Some(now);
                if g.target > 0 && g.count >= g.target && g.full_at.is_none() {
                    g.full_at = Some(now);
                }
            }
        });
        Ok(Monitor {
            state,
            stream,
            stop,
        })
    }

    pub fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A sink for `total` octets after the handshake: listens in `ns` on
/// `addr:179`; the handle gives the instant the last octet arrived.
pub fn sink(
    ns: &Netns,
    addr: IpAddr,
    asn: u32,
    total: usize,
) -> Result<JoinHandle<Result<Instant>>> {
    let sa = std::net::SocketAddr::new(addr, 179);
    let l = ns.enter(move || Ok(TcpListener::bind(sa)?))?;
    Ok(std::thread::spawn(move || {
        let (mut s, _) = l.accept()?;
        // Passive side of the handshake: their OPEN, our OPEN and KEEPALIVE,
        // their KEEPALIVE.
        read_message(&mut s)?;
        s.write_all(&encode::open(asn, [10, 254, 0, 1], HOLD))?;
        s.write_all(&encode::keepalive())?;
        let mut buf = vec![0u8; 1 << 20];
        // Their KEEPALIVE (19 octets) comes before the stream.
        let mut got = 0usize;
        let want = total + 19;
        while got < want {
            match s.read(&mut buf) {
                Ok(0) => bail!("sink: closed after {got} of {want} octets"),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Instant::now())
    }))
}

/// Writes `msgs` at `per_second` messages per second, in bursts every
/// 10 ms (every `PETREL_BENCH_CHURN_TICK_US` µs if set: 1000 at 1,000
/// messages a second writes each on its own); returns when each message
/// was handed to the kernel's socket (the instant its burst's write
/// began).
pub fn write_paced(w: &mut impl Write, msgs: &[Vec<u8>], per_second: u32) -> Result<Vec<Instant>> {
    let tick_us: u64 = std::env::var("PETREL_BENCH_CHURN_TICK_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(10_000);
    let tick = Duration::from_micros(tick_us);
    let per_tick = ((per_second as u64 * tick_us / 1_000_000) as usize).max(1);
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut sent = Vec::with_capacity(msgs.len());
    for (k, chunk) in msgs.chunks(per_tick).enumerate() {
        let at = start + tick * k as u32;
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        buf.clear();
        chunk.iter().for_each(|m| buf.extend_from_slice(m));
        let now = Instant::now();
        w.write_all(&buf)?;
        sent.extend(std::iter::repeat_n(now, chunk.len()));
    }
    Ok(sent)
}
