//! A minimal raw BGP speaker: opens a session from inside a namespace and
//! sends UPDATEs byte for byte, for the malformed cases no real daemon will
//! send. Also builders for path attributes and NLRI.

use super::Netns;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Message types.
pub const OPEN: u8 = 1;
pub const UPDATE: u8 = 2;
pub const NOTIFICATION: u8 = 3;
pub const KEEPALIVE: u8 = 4;

/// What the raw speaker says in its OPEN.
#[derive(Clone, Debug)]
pub struct Open {
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: [u8; 4],
    /// Advertise the 4-octet AS capability (else a 2-octet speaker, with
    /// AS_TRANS in `My AS` when `asn` does not fit).
    pub asn4: bool,
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Open {
    pub fn new(asn: u32, router_id: [u8; 4]) -> Open {
        Open {
            asn,
            hold_time: 240,
            router_id,
            asn4: true,
            ipv4: true,
            ipv6: true,
        }
    }

    /// The OPEN message, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut caps = Vec::new();
        for (on, afi) in [(self.ipv4, 1u16), (self.ipv6, 2u16)] {
            if on {
                caps.extend([1, 4]);
                caps.extend(afi.to_be_bytes());
                caps.extend([0, 1]);
            }
        }
        caps.extend([2, 0]); // route refresh
        if self.asn4 {
            caps.extend([65, 4]);
            caps.extend(self.asn.to_be_bytes());
        }
        let my_as = u16::try_from(self.asn).unwrap_or(23456);
        let mut body = vec![4];
        body.extend(my_as.to_be_bytes());
        body.extend(self.hold_time.to_be_bytes());
        body.extend(self.router_id);
        body.push(caps.len() as u8 + 2);
        body.extend([2, caps.len() as u8]);
        body.extend(caps);
        message(OPEN, &body)
    }
}

/// A header and body: one whole BGP message.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend(((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// One path attribute (Extended Length set when the value needs it, or
/// when `flags` asks for it).
pub fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let ext = flags & 0x10 != 0 || value.len() > 255;
    let mut a = vec![if ext { flags | 0x10 } else { flags }, code];
    if ext {
        a.extend((value.len() as u16).to_be_bytes());
    } else {
        a.push(value.len() as u8);
    }
    a.extend_from_slice(value);
    a
}

/// ORIGIN IGP, AS_PATH (one AS_SEQUENCE of 4-octet ASNs), NEXT_HOP.
pub fn basic_attrs(as_path: &[u32], next_hop: [u8; 4]) -> Vec<u8> {
    let mut a = attr(0x40, 1, &[0]);
    let mut seg = vec![2, as_path.len() as u8];
    for asn in as_path {
        seg.extend(asn.to_be_bytes());
    }
    a.extend(attr(0x40, 2, &seg));
    a.extend(attr(0x40, 3, &next_hop));
    a
}

/// An IPv4 prefix `"10.0.0.0/24"` as NLRI bytes.
pub fn nlri(prefix: &str) -> Result<Vec<u8>> {
    let (addr, len) = prefix
        .split_once('/')
        .ok_or_else(|| anyhow!("prefix without length: {prefix}"))?;
    let len: u8 = len.parse()?;
    let octets = match addr.parse::<IpAddr>()? {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut out = vec![len];
    out.extend_from_slice(&octets[..len.div_ceil(8) as usize]);
    Ok(out)
}

/// An UPDATE body: withdrawn routes, path attributes, NLRI (IPv4).
pub fn update(withdrawn: &[&str], attrs: &[u8], announced: &[&str]) -> Result<Vec<u8>> {
    let mut w = Vec::new();
    for p in withdrawn {
        w.extend(nlri(p)?);
    }
    let mut body = (w.len() as u16).to_be_bytes().to_vec();
    body.extend(w);
    body.extend((attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    for p in announced {
        body.extend(nlri(p)?);
    }
    Ok(body)
}

/// How the raw speaker's socket is set up before its SYN.
#[derive(Clone, Debug, Default)]
pub struct SocketOptions {
    /// Source address (else the kernel's choice).
    pub local: Option<IpAddr>,
    /// `IP_TTL` / `IPV6_UNICAST_HOPS` of everything it sends (GTSM tests).
    pub ttl: Option<u8>,
}

/// A session driven by hand: [`RawSpeaker::connect`] opens it, or
/// [`RawSpeaker::dial`] / [`RawSpeaker::accept`] give the bare TCP
/// connection for a test to speak first.
pub struct RawSpeaker {
    stream: TcpStream,
    /// The peer's OPEN body.
    pub peer_open: Vec<u8>,
}

impl RawSpeaker {
    /// Connects from `ns` to `peer` (`"10.0.0.1:179"`), exchanges OPEN and
    /// KEEPALIVE; fails on a NOTIFICATION or at the deadline.
    pub fn connect(ns: &Netns, peer: &str, open: &Open) -> Result<RawSpeaker> {
        RawSpeaker::connect_with(ns, peer, open, &SocketOptions::default())
    }

    /// [`RawSpeaker::connect`] with socket options.
    pub fn connect_with(
        ns: &Netns,
        peer: &str,
        open: &Open,
        opts: &SocketOptions,
    ) -> Result<RawSpeaker> {
        let mut s = RawSpeaker::dial(ns, peer, opts)?;
        s.handshake(open)?;
        Ok(s)
    }

    /// Only the TCP connection (retried until the deadline), no OPEN yet.
    pub fn dial(ns: &Netns, peer: &str, opts: &SocketOptions) -> Result<RawSpeaker> {
        let addr: SocketAddr = peer.parse().with_context(|| format!("address {peer}"))?;
        let start = std::time::Instant::now();
        let stream = loop {
            let o = opts.clone();
            match ns.enter(move || tcp_connect(addr, &o)) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < super::DEADLINE => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.context(format!("connect to {peer}"))),
            }
        };
        RawSpeaker::from_stream(stream)
    }

    /// A listening socket in `ns` (`"10.0.0.2:179"`), for a peer that dials.
    pub fn listen(ns: &Netns, addr: &str) -> Result<TcpListener> {
        let addr: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
        let l = ns.enter(move || Ok(TcpListener::bind(addr)?))?;
        l.set_nonblocking(true)?;
        Ok(l)
    }

    /// The next connection on `listener` (from [`RawSpeaker::listen`]), no
    /// OPEN yet; fails at the deadline.
    pub fn accept(listener: &TcpListener) -> Result<RawSpeaker> {
        let start = std::time::Instant::now();
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    return RawSpeaker::from_stream(s);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if start.elapsed() > super::DEADLINE {
                        bail!("no connection within {:?}", super::DEADLINE);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn from_stream(stream: TcpStream) -> Result<RawSpeaker> {
        stream.set_read_timeout(Some(super::DEADLINE))?;
        stream.set_nodelay(true)?;
        Ok(RawSpeaker {
            stream,
            peer_open: Vec::new(),
        })
    }

    /// Sends `open` and reads until the session is Established (the peer's
    /// OPEN, then its KEEPALIVE); fails on a NOTIFICATION.
    pub fn handshake(&mut self, open: &Open) -> Result<()> {
        self.send(&open.encode())?;
        loop {
            let (kind, body) = self.read()?;
            match kind {
                OPEN => {
                    self.peer_open = body;
                    self.send(&message(KEEPALIVE, &[]))?;
                }
                KEEPALIVE if !self.peer_open.is_empty() => return Ok(()),
                NOTIFICATION => bail!("peer sent NOTIFICATION {body:02x?}"),
                _ => {}
            }
        }
    }

    /// Reads until a message of `kind` and returns its body (a
    /// NOTIFICATION when waiting for something else is an error).
    pub fn read_until(&mut self, kind: u8) -> Result<Vec<u8>> {
        loop {
            let (k, body) = self.read()?;
            if k == kind {
                return Ok(body);
            }
            if k == NOTIFICATION {
                bail!("peer sent NOTIFICATION {body:02x?}");
            }
        }
    }

    /// The TCP connection, for tests that read or write it directly.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends whole message bytes.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.stream.write_all(msg)?;
        Ok(())
    }

    /// Sends an UPDATE with this body.
    pub fn send_update(&mut self, body: &[u8]) -> Result<()> {
        self.send(&message(UPDATE, body))
    }

    /// Sends a whole message given as hex (header included).
    pub fn send_hex(&mut self, hex: &str) -> Result<()> {
        let clean: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        self.send(&crate::unhex(&clean))
    }

    pub fn keepalive(&mut self) -> Result<()> {
        self.send(&message(KEEPALIVE, &[]))
    }

    /// Reads one message (type, body).
    pub fn read(&mut self) -> Result<(u8, Vec<u8>)> {
        let mut hdr = [0u8; 19];
        self.stream
            .read_exact(&mut hdr)
            .context("read BGP header")?;
        let len = u16::from_be_bytes([hdr[16], hdr[17]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(19)];
        self.stream.read_exact(&mut body).context("read BGP body")?;
        Ok((hdr[18], body))
    }

    /// Whether the session still stands: drains what the peer sent
    /// within `wait` and fails if that includes a NOTIFICATION or EOF.
    pub fn still_up(&mut self, wait: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(wait))?;
        let r = loop {
            match self.read() {
                Ok((NOTIFICATION, b)) => break Err(anyhow!("peer sent NOTIFICATION {b:02x?}")),
                Ok(_) => continue,
                Err(e) => match e.downcast_ref::<std::io::Error>().map(|e| e.kind()) {
                    Some(ErrorKind::WouldBlock | ErrorKind::TimedOut) => break Ok(()),
                    _ => break Err(e),
                },
            }
        };
        self.stream.set_read_timeout(Some(super::DEADLINE))?;
        r
    }
}

/// The capability codes of an OPEN body's Optional Parameters.
pub fn open_capabilities(open: &[u8]) -> Vec<u8> {
    let mut codes = Vec::new();
    let Some(params) = open.get(10..) else {
        return codes;
    };
    let mut p = params;
    while let [kind, len, rest @ ..] = p {
        let Some(value) = rest.get(..*len as usize) else {
            break;
        };
        if *kind == 2 {
            let mut c = value;
            while let [code, clen, crest @ ..] = c {
                codes.push(*code);
                c = crest.get(*clen as usize..).unwrap_or_default();
            }
        }
        p = &rest[*len as usize..];
    }
    codes
}

/// The whole TLV (code, length, value) of capability `code` in an OPEN
/// body, as a NOTIFICATION 2/7 names it (RFC 5492 §5).
pub fn open_capability(open: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut p = open.get(10..)?;
    while let [kind, len, rest @ ..] = p {
        let value = rest.get(..*len as usize)?;
        if *kind == 2 {
            let mut c = value;
            while let [ccode, clen, crest @ ..] = c {
                let end = *clen as usize;
                if *ccode == code {
                    let mut tlv = vec![*ccode, *clen];
                    tlv.extend_from_slice(crest.get(..end)?);
                    return Some(tlv);
                }
                c = crest.get(end..).unwrap_or_default();
            }
        }
        p = &rest[*len as usize..];
    }
    None
}

/// A blocking TCP connect with the socket set up by `opts` first (std
/// cannot bind or set the TTL before connecting).
fn tcp_connect(addr: SocketAddr, opts: &SocketOptions) -> Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let v6 = addr.is_ipv6();
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket no one else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let check = |rc: libc::c_int, what: &str| -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            bail!("{what}: {}", std::io::Error::last_os_error())
        }
    };
    if let Some(ttl) = opts.ttl {
        let (level, opt) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TTL)
        };
        let v = ttl as libc::c_int;
        // SAFETY: an int option on a valid socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        check(rc, "setsockopt TTL")?;
    }
    if let Some(local) = opts.local {
        let (sa, len) = sockaddr(SocketAddr::new(local, 0));
        // SAFETY: sa is a valid sockaddr of length len.
        let rc = unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) };
        check(rc, &format!("bind {local}"))?;
    }
    let (sa, len) = sockaddr(addr);
    // SAFETY: sa is a valid sockaddr of length len.
    let rc = unsafe { libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len) };
    check(rc, &format!("connect {addr}"))?;
    Ok(stream)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}
