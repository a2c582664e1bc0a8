//! TCP for BGP: TCP MD5 signatures (RFC 2385) through `TCP_MD5SIG`, GTSM
//! (RFC 5082) through `IP_MINTTL` / `IPV6_MINHOPCOUNT`, source address and
//! port selection, and listeners that carry one MD5 key per peer.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// RFC 2385 keys are at most 80 octets on Linux (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Installs (or, with an empty key, removes) the MD5 key for `peer` on a
/// socket. On a listener this admits only SYNs signed with the key from that
/// address; on a connecting socket it signs our segments.
pub fn set_md5<S: AsRawFd>(sock: &S, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 key is {} octets; Linux accepts at most {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    // SAFETY: sockaddr_storage and the struct are plain old data; zero is valid.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sa = SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: SockAddr's storage is a sockaddr_storage of `len` valid octets.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr() as *const u8,
            &mut sig.addr as *mut _ as *mut u8,
            sa.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: a valid fd, option pointer and size for TCP_MD5SIG.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const _ as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// RFC 5082 §3: send with TTL 255 and accept only segments whose TTL shows
/// at most `hops` hops (minimum TTL 256 - hops).
pub fn set_gtsm(sock: &Socket, v6: bool, hops: u8) -> io::Result<()> {
    let hops = hops.max(1) as i32;
    let min = 256 - hops;
    let fd = sock.as_raw_fd();
    let set = |level, opt, val: i32| -> io::Result<()> {
        // SAFETY: integer socket option on a valid fd.
        let rc = unsafe {
            libc::setsockopt(fd, level, opt, &val as *const i32 as *const libc::c_void, 4)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if v6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
        set(libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, min)
    } else {
        set(libc::IPPROTO_IP, libc::IP_TTL, 255)?;
        set(libc::IPPROTO_IP, libc::IP_MINTTL, min)
    }
}

/// How to reach a peer.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub local: Option<SocketAddr>,
    pub md5_key: Option<Vec<u8>>,
    pub gtsm_hops: Option<u8>,
    pub timeout: Option<Duration>,
}

/// Opens a TCP connection to a peer with the session's socket options set
/// before the SYN, as MD5 and GTSM require.
pub async fn connect(peer: SocketAddr, opts: &ConnectOptions) -> io::Result<TcpStream> {
    let v6 = peer.is_ipv6();
    let sock = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    if let Some(key) = &opts.md5_key {
        set_md5(&sock, peer.ip(), key)?;
    }
    if let Some(h) = opts.gtsm_hops {
        set_gtsm(&sock, v6, h)?;
    }
    if let Some(local) = opts.local {
        sock.set_reuse_address(true)?;
        sock.bind(&local.into())?;
    }
    let tsock = tokio::net::TcpSocket::from_std_stream(sock.into());
    let fut = tsock.connect(peer);
    match opts.timeout {
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {peer} timed out"),
            )
        })?,
        None => fut.await,
    }
}

/// A listening socket for BGP (SO_REUSEADDR, IPV6_V6ONLY for v6 so that v4
/// and v6 listeners can coexist).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let v6 = addr.is_ipv6();
    let sock = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if v6 {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    TcpListener::from_std(sock.into())
}

/// Applies GTSM to an accepted connection (the listener cannot know which
/// peers want it).
pub fn gtsm_accepted(stream: &TcpStream, hops: u8) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let v6 = stream.peer_addr()?.is_ipv6();
    let hops = hops.max(1) as i32;
    let fd = sock.as_raw_fd();
    let (level, opt, ttl_opt) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MINHOPCOUNT,
            libc::IPV6_UNICAST_HOPS,
        )
    } else {
        (libc::IPPROTO_IP, libc::IP_MINTTL, libc::IP_TTL)
    };
    for (o, v) in [(ttl_opt, 255), (opt, 256 - hops)] {
        // SAFETY: integer socket option on a valid fd.
        let rc =
            unsafe { libc::setsockopt(fd, level, o, &v as *const i32 as *const libc::c_void, 4) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
