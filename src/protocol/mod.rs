//! The Keep protocol as keep-rsync speaks it: the wire format from the
//! `keep-protocol` crate (locators, signatures, rendezvous order, index
//! lines, services lists; shared with keepstore-sim), re-exported here, and
//! [`client`], the HTTP calls keep-rsync makes (index, block GET, block PUT)
//! with their failure classes. Only `client` does network I/O. See
//! docs/protocol.md.

pub mod client;

pub use keep_protocol::*;
