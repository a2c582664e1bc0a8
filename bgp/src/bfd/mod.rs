//! Bidirectional Forwarding Detection (RFC 5880), for BGP (RFC 5882).
//!
//! - [`packet`]: the Control packet and its Authentication Section (§4), sans-IO.
//! - [`auth`]: simple password and keyed SHA1 authentication (§6.7).
//! - [`session`]: one session's state machine (§6.8), sans-IO: packets and
//!   instants in, packets, deadlines and state changes out.
//!
//! The design follows quinn-proto: the protocol core owns no socket and
//! reads no clock, so every rule of §6.8.6 is a unit test with plain
//! values, and a thin tokio driver carries packets and time to it.

pub mod auth;
pub mod packet;
pub mod session;

pub use auth::{AuthKey, AuthKind};
pub use packet::{ControlPacket, Diag, State};
pub use session::{Discard, Event, Session, SessionConfig, StateChange};
