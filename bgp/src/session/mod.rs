//! The thin tokio driver around the sans-IO [`crate::fsm::Fsm`]: one task per
//! peer owns the TCP connection and the timers, turns bytes into messages
//! with the session's codec context, feeds the FSM, and carries out what it
//! returns. Everything the RIB needs leaves as a [`PeerEvent`] on a bounded
//! channel; everything the speaker wants arrives as a [`PeerCommand`].
//! Connection collisions (RFC 4271 §6.8) are decided by the sans-IO
//! [`collision::Arbiter`]; the task holds the connections and carries its
//! answers out.

pub mod collision;
pub mod peer;
pub mod socket;

pub use peer::{
    spawn_peer, LinkState, PeerCommand, PeerEvent, PeerEventKind, PeerLinks, SessionConfig,
    SessionId,
};
