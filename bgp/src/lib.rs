//! petrel's BGP-4 speaker.
//!
//! - [`wire`]: the message codec (RFC 4271 and extensions), sans-IO.
//! - [`mrt`]: a reader for MRT dumps (RFC 6396), feeding the codec.

pub mod mrt;
pub mod policy;
pub mod rib;
pub mod wire;
pub mod fsm;
pub mod session;
pub mod speaker;
