//! UPDATEs read together are decided together: a burst of one-prefix
//! UPDATEs that a peer writes at once (churn, a reflector's client) goes
//! on to the other peers as one decision's UPDATEs, packed by attribute
//! set, not as one UPDATE per prefix each written on its own. Two raw
//! peers on loopback, the speaker between them: 127.0.0.2 sends, 127.0.0.3
//! receives.

use bytes::{Bytes, BytesMut};
use petrel_bgp::fsm::State;
use petrel_bgp::speaker::{PeerSettings, Speaker, SpeakerConfig};
use petrel_bgp::wire::{split_message, CodecContext, Message, Open, HEADER_LEN};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DUT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const RECEIVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// UPDATEs in the burst.
const BURST: u8 = 10;

/// One whole message from a raw peer's stream, or `None` after 10 s.
async fn read_message(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Message> {
    loop {
        if let Ok(Some((h, raw))) = split_message(buf, 4096) {
            let raw: Bytes = raw.freeze();
            return Message::decode_body(
                &CodecContext::default(),
                h.msg_type,
                &raw.slice(HEADER_LEN..),
            )
            .ok();
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

async fn send(s: &mut TcpStream, m: Message) {
    s.write_all(&m.to_bytes(&CodecContext::default()).unwrap())
        .await
        .unwrap();
}

/// A raw peer of AS `asn`, no capabilities (RFC 4271 alone: IPv4
/// unicast, two-octet AS numbers): accepts the speaker's connection and
/// exchanges OPEN and KEEPALIVE.
async fn raw_peer(l: TcpListener, asn: u16, id: Ipv4Addr) -> (TcpStream, BytesMut) {
    let (mut s, _) = l.accept().await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_message(&mut s, &mut buf).await,
        Some(Message::Open(_))
    ));
    send(&mut s, Message::Open(Open::new(asn as u32, 90, id, vec![]))).await;
    send(&mut s, Message::Keepalive).await;
    loop {
        match read_message(&mut s, &mut buf).await {
            Some(Message::Keepalive) => return (s, buf),
            Some(_) => {}
            None => panic!("no KEEPALIVE from the speaker"),
        }
    }
}

/// A one-prefix UPDATE from AS 65001: 10.0.i.0/24, ORIGIN IGP, AS_PATH
/// 65001, NEXT_HOP 127.0.0.2 (the same attributes for every i).
fn update(i: u8) -> Vec<u8> {
    let attrs = [
        0x40, 1, 1, 0, // ORIGIN IGP
        0x40, 2, 4, 2, 1, 0xfd, 0xe9, // AS_PATH AS_SEQUENCE 65001
        0x40, 3, 4, 127, 0, 0, 2, // NEXT_HOP
    ];
    let nlri = [24, 10, 0, i];
    let len = HEADER_LEN + 2 + 2 + attrs.len() + nlri.len();
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&attrs);
    m.extend_from_slice(&nlri);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_updates_goes_on_as_one_decision() {
    // Ports the system picks: the speaker dials the raw peers, and nobody
    // dials it.
    let source = TcpListener::bind((SOURCE, 0)).await.unwrap();
    let receiver = TcpListener::bind((RECEIVER, 0)).await.unwrap();
    let cfg = SpeakerConfig {
        local_as: 65000,
        router_id: DUT,
        cluster_id: None,
        listen: vec![SocketAddr::new(DUT.into(), 0)],
        graceful_restart: None,
        max_paths: 1,
        threads: 1,
        bfd: Default::default(),
    };
    let (dut, mut fib) = Speaker::start(cfg).await.unwrap();
    // A speaker whose FIB stream nobody reads stops once it is full.
    tokio::spawn(async move { while fib.recv().await.is_some() {} });
    for (l, asn) in [(&source, 65001), (&receiver, 65002)] {
        let at = l.local_addr().unwrap();
        let mut p = PeerSettings::new(at.ip(), asn);
        p.port = at.port();
        p.local_address = Some(DUT.into());
        dut.add_peer(p).await.unwrap();
    }
    let (mut src, _) = raw_peer(source, 65001, SOURCE).await;
    let (mut rcv, mut buf) = raw_peer(receiver, 65002, RECEIVER).await;
    let end = Instant::now() + Duration::from_secs(10);
    while dut
        .peers()
        .await
        .unwrap()
        .iter()
        .any(|p| p.state != State::Established)
    {
        assert!(Instant::now() < end, "sessions not Established");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The burst, in one write: the speaker reads it at once.
    let burst: Vec<u8> = (0..BURST).flat_map(update).collect();
    src.write_all(&burst).await.unwrap();

    let (mut updates, mut prefixes) = (0, 0);
    while prefixes < BURST as usize {
        match read_message(&mut rcv, &mut buf).await {
            Some(Message::Update(u)) => {
                let n = u.announced().count();
                if n > 0 {
                    updates += 1;
                    prefixes += n;
                }
            }
            Some(_) => {}
            None => panic!("{prefixes} of {BURST} prefixes reached the receiver"),
        }
    }
    assert_eq!(prefixes, BURST as usize);
    assert_eq!(
        updates, 1,
        "the burst's prefixes share their attributes: one decision, one UPDATE"
    );
}
