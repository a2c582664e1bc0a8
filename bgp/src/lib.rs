//! petrel's BGP-4 speaker.
//!
//! - [`bfd`]: Bidirectional Forwarding Detection (RFC 5880/5881/5883), sans-IO core and driver.
//! - [`wire`]: the message codec (RFC 4271 and extensions), sans-IO.
//! - [`mrt`]: a reader for MRT dumps (RFC 6396), feeding the codec.
//! - [`fsm`]: the session state machine (RFC 4271 §8), sans-IO.
//! - [`session`]: the tokio driver of one peer's session.
//! - [`rib`] and [`policy`]: Adj-RIB-In, Loc-RIB, Adj-RIB-Out, filters.
//! - [`speaker`]: the async API petreld drives.

pub mod bfd;
pub mod fsm;
pub mod mrt;
pub mod policy;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod wire;
