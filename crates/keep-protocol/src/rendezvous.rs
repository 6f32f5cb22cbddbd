//! Rendezvous hashing (protocol §4): the probe order in which readers look for
//! a block and writers place its replicas.

use md5::{Digest, Md5};

use crate::locator::BlockHash;

/// The part of a service uuid that is weighed: the last 15 characters of a
/// 27-character uuid. Other lengths are refused (the Go and Python SDKs
/// disagree about them), so callers must validate uuids up front.
pub fn uuid_weight_suffix(uuid: &str) -> Option<&str> {
    (uuid.len() == 27 && uuid.is_ascii()).then(|| &uuid[12..])
}

/// Weight of a service for a block: `md5(HASH_HEX + UUID[12:])`, compared as
/// bytes (which orders like the hex string the SDKs compare).
pub fn weight(hash: &BlockHash, uuid_suffix: &str) -> [u8; 16] {
    let mut buf = [0u8; 32];
    hex::encode_to_slice(hash.0, &mut buf).expect("32-byte buffer");
    let mut h = Md5::new();
    h.update(buf);
    h.update(uuid_suffix.as_bytes());
    h.finalize().into()
}

/// Indices into `uuid_suffixes`, heaviest first: the probe order of `hash`.
pub fn probe_order<S: AsRef<str>>(hash: &BlockHash, uuid_suffixes: &[S]) -> Vec<usize> {
    let mut w: Vec<([u8; 16], usize)> = uuid_suffixes
        .iter()
        .enumerate()
        .map(|(i, u)| (weight(hash, u.as_ref()), i))
        .collect();
    w.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    w.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference orders shared by the Go and Python SDK tests.
    #[test]
    fn sdk_reference_orders() {
        let uuids: Vec<String> = (0..16).map(|j| format!("zzzzz-bi6l4-{j:015x}")).collect();
        let suffixes: Vec<&str> = uuids
            .iter()
            .map(|u| uuid_weight_suffix(u).unwrap())
            .collect();
        let want = [
            ("10eab6008d5642cf42abd2aa41f847cb", "3eab2d5fc9681074"),
            ("9a25b027482b37e047104e2e532cabae", "097dba52e648f1c3"),
            ("ece15765f11abfb7d3c71995a3d63bfe", "c5b4e023f8a7d691"),
            ("0c1728e2354416472350c906ca8b5718", "9d81c02e76a3bf54"),
        ];
        for (i, (hash, order)) in want.iter().enumerate() {
            let h = BlockHash::of(format!("{i:064x}").as_bytes());
            assert_eq!(h.to_string(), *hash);
            let got: String = probe_order(&h, &suffixes)
                .iter()
                .map(|j| format!("{j:x}"))
                .collect();
            assert_eq!(got, *order, "block {i}");
        }
    }

    #[test]
    fn odd_uuid_lengths_refused() {
        assert!(uuid_weight_suffix("zzzzz-bi6l4-0").is_none());
        assert_eq!(
            uuid_weight_suffix("zzzzz-bi6l4-000000000000001"),
            Some("000000000000001")
        );
    }
}
