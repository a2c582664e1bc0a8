//! Bidirectional Forwarding Detection (RFC 5880), for BGP (RFC 5882).
//!
//! - [`packet`]: the Control packet and its Authentication Section (§4), sans-IO.
//! - [`auth`]: simple password and keyed SHA1 authentication (§6.7).
//! - [`session`]: one session's state machine (§6.8), sans-IO: packets and
//!   instants in, packets, deadlines and state changes out.
//! - [`registry`]: a system's sessions and the demultiplexing of received
//!   packets to them (discriminators, addresses, TTL), sans-IO.
//! - [`driver`]: the tokio driver: UDP 3784/4784, v4 and v6, on its own thread.
//!
//! The design follows quinn-proto: the protocol core owns no socket and
//! reads no clock, so every rule of §6.8.6 is a unit test with plain
//! values, and a thin tokio driver carries packets and time to it.

pub mod auth;
pub mod driver;
pub mod packet;
pub mod registry;
pub mod session;

pub use auth::{AuthKey, AuthKind};
pub use driver::{Bfd, BfdConfig, BfdError, SessionOptions, SessionSnapshot, SessionStatus};
pub use packet::{ControlPacket, Diag, State};
pub use registry::PeerKey;
pub use session::{Discard, Event, Session, SessionConfig, StateChange};
