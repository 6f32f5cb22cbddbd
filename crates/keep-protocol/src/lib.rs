//! The Arvados Keep wire format, shared by keep-rsync (the client) and
//! keepstore-sim (the test keepstore), so both sides parse and write it the
//! same way: block hashes and locators, permission signatures, rendezvous
//! (probe) order, index lines, keep services lists, keepstore's volume
//! layouts (directories and S3 buckets), and the byte quantities admins write
//! on command lines.
//!
//! No network I/O here; [`services::read_services_arg`] reads a file or
//! stdin and [`layout::dir`] reads and writes directory volumes. Everything follows docs/protocol.md and is checked against the
//! reference vectors of the Arvados SDKs.

pub mod index;
pub mod layout;
pub mod locator;
pub mod mounts;
pub mod rendezvous;
pub mod services;
pub mod signing;
pub mod units;

pub use locator::{BlockHash, Locator, LocatorError, EMPTY_BLOCK_HASH, MAX_BLOCK_SIZE};
pub use mounts::Mount;
pub use rendezvous::{
    mount_order_among, mount_weight_suffix, probe_order, probe_order_among, python_sdk_agrees,
    uuid_weight_suffix,
};
pub use services::{config_service_uuid, KeepService};
pub use signing::{redact_signatures, sign_locator, signature, verify_signature, SignatureError};

/// Header a PUT answers with: replicas this service stored (missing means 1).
pub const HDR_REPLICAS_STORED: &str = "x-keep-replicas-stored";
/// Header a PUT carries: how many replicas the client wants in total.
pub const HDR_DESIRED_REPLICAS: &str = "x-keep-desired-replicas";
/// Header a PUT carries: storage classes wanted, `a, b`.
pub const HDR_STORAGE_CLASSES: &str = "x-keep-storage-classes";
/// Header a PUT answers with: `class=N, class=M`.
pub const HDR_STORAGE_CLASSES_CONFIRMED: &str = "x-keep-storage-classes-confirmed";

/// Value of the `Authorization` header for a token, as the SDKs send it.
pub fn auth_header(token: &str) -> String {
    format!("Bearer {token}")
}

/// Extract the token from an `Authorization` header value: keepstore accepts
/// both `Bearer TOKEN` and the older `OAuth2 TOKEN`.
pub fn token_from_auth_header(value: &str) -> Option<&str> {
    let value = value.trim();
    for scheme in ["Bearer ", "OAuth2 "] {
        if let Some(rest) = value.strip_prefix(scheme) {
            let tok = rest.trim();
            if !tok.is_empty() {
                return Some(tok);
            }
        }
    }
    None
}

/// Whether `s` is a valid index prefix: 0–32 lowercase hex digits.
pub fn is_valid_prefix(s: &str) -> bool {
    s.len() <= 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_schemes() {
        assert_eq!(token_from_auth_header("Bearer abc"), Some("abc"));
        assert_eq!(token_from_auth_header("OAuth2 abc"), Some("abc"));
        assert_eq!(token_from_auth_header("Basic abc"), None);
        assert_eq!(token_from_auth_header("Bearer "), None);
    }

    #[test]
    fn prefixes() {
        assert!(is_valid_prefix(""));
        assert!(is_valid_prefix("0af"));
        assert!(!is_valid_prefix("0AF"));
        assert!(!is_valid_prefix("g"));
        assert!(!is_valid_prefix(&"a".repeat(33)));
    }
}
