//! The BGP listeners: one accept task per address, all handing connections
//! to the driver on one bounded channel (when it is full an accept task
//! waits and the kernel's backlog holds the SYNs), and a second handle on
//! each socket to install the per-peer TCP MD5 keys (RFC 2385) of peers
//! added later.

use super::SpeakerError;
use crate::session::socket;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Accepted connections waiting for the driver.
const ACCEPT_QUEUE: usize = 64;

pub(super) struct Listeners {
    socks: Vec<(SocketAddr, socket2::Socket)>,
}

impl Listeners {
    /// Binds every address and starts its accept task.
    pub(super) fn bind(
        addrs: &[SocketAddr],
    ) -> Result<(Listeners, mpsc::Receiver<(TcpStream, SocketAddr)>), SpeakerError> {
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        let mut socks = Vec::new();
        for addr in addrs {
            let l = socket::listen(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            // A second handle on the same socket, to install MD5 keys for
            // peers added later (RFC 2385 keys are per peer, on the listener).
            let dup =
                socket2::SockRef::from(&l)
                    .try_clone()
                    .map_err(|source| SpeakerError::Listen {
                        addr: *addr,
                        source,
                    })?;
            socks.push((*addr, dup));
            let accept_tx = accept_tx.clone();
            let addr = *addr;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, from)) => {
                            // As on the connections we open: an UPDATE
                            // written while the last is unacknowledged
                            // waited for the peer's delayed ACK (Nagle),
                            // up to 40 ms (a reflector's churn to its
                            // clients, which connect to it: p90 22 ms,
                            // BIRD 2; docs/benchmarks/history.md,
                            // fourteenth round).
                            if let Err(e) = s.set_nodelay(true) {
                                warn!(listen = %addr, %from, error = %e, "cannot set TCP_NODELAY on an accepted connection");
                            }
                            if accept_tx.send((s, from)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!(listen = %addr, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            info!(listen = %addr, "listening for BGP");
        }
        Ok((Listeners { socks }, accept_rx))
    }

    /// RFC 2385: the listener must know a peer's key to accept its SYN.
    pub(super) fn install_key(&self, peer: IpAddr, key: &[u8]) {
        for (addr, sock) in &self.socks {
            if addr.is_ipv4() != peer.is_ipv4() {
                continue;
            }
            if let Err(e) = socket::set_md5(sock, peer, key) {
                warn!(listen = %addr, %peer, error = %e, "cannot install the TCP MD5 key on the listener");
            }
        }
    }

    pub(super) fn remove_key(&self, peer: IpAddr) {
        for (addr, sock) in &self.socks {
            if addr.is_ipv4() == peer.is_ipv4() {
                let _ = socket::set_md5(sock, peer, &[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted connections write at once, as those we open do.
    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_acks() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let probe = std::net::TcpListener::bind(any).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let (_l, mut accepted) = Listeners::bind(&[addr]).unwrap();
        let ours = TcpStream::connect(addr).await.unwrap();
        ours.set_nodelay(false).unwrap();
        let (s, from) = accepted.recv().await.unwrap();
        assert_eq!(from, ours.local_addr().unwrap());
        assert!(s.nodelay().unwrap(), "TCP_NODELAY on the accepted side");
    }
}
