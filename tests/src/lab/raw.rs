//! A minimal raw BGP speaker: opens a session from inside a namespace and
//! sends UPDATEs byte for byte, for the malformed cases no real daemon will
//! send. Also builders for path attributes and NLRI.

use super::Netns;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
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

/// An established session driven by hand.
pub struct RawSpeaker {
    stream: TcpStream,
    /// The peer's OPEN body.
    pub peer_open: Vec<u8>,
}

impl RawSpeaker {
    /// Connects from `ns` to `peer` (`"10.0.0.1:179"`), exchanges OPEN and
    /// KEEPALIVE; fails on a NOTIFICATION or at the deadline.
    pub fn connect(ns: &Netns, peer: &str, open: &Open) -> Result<RawSpeaker> {
        let addr: SocketAddr = peer.parse().with_context(|| format!("address {peer}"))?;
        let start = std::time::Instant::now();
        let stream = loop {
            let r =
                ns.enter(move || Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(2))?));
            match r {
                Ok(s) => break s,
                Err(e) if start.elapsed() < super::DEADLINE => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.context(format!("connect to {peer}"))),
            }
        };
        stream.set_read_timeout(Some(super::DEADLINE))?;
        stream.set_nodelay(true)?;
        let mut s = RawSpeaker {
            stream,
            peer_open: Vec::new(),
        };
        s.send(&open.encode())?;
        loop {
            let (kind, body) = s.read()?;
            match kind {
                OPEN => {
                    s.peer_open = body;
                    s.send(&message(KEEPALIVE, &[]))?;
                }
                KEEPALIVE if !s.peer_open.is_empty() => return Ok(s),
                NOTIFICATION => bail!("peer sent NOTIFICATION {body:02x?}"),
                _ => {}
            }
        }
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
