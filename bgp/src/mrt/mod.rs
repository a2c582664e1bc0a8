//! MRT routing information export format (RFC 6396), with the extended
//! timestamp variants (§3) and the ADD-PATH subtypes of RFC 8050.
//!
//! [`reader`] splits a (possibly compressed) stream into records without
//! interpreting them; [`record`] parses a record's body and hands the BGP
//! messages and attribute blocks it carries to the wire codec; [`bgpdump`]
//! prints routes in the `bgpdump -m` format so the two can be diffed.

pub mod bgpdump;
pub mod reader;
pub mod record;
pub mod summary;

pub use reader::{open, MrtError, MrtReader, RawRecord};
pub use record::{
    Bgp4mpMessage, Bgp4mpStateChange, PeerEntry, PeerIndexTable, Record, RibEntry, RibRecord,
};
