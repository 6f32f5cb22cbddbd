//! Rendezvous hashing (protocol §4): the probe order in which readers look for
//! a block and writers place its replicas.

use md5::{Digest, Md5};

use crate::locator::BlockHash;

/// The part of a service (or volume) uuid that rendezvous hashing weighs,
/// as the Go SDK (`RootSorter.getWeight`), keep-balance and keepstore weigh
/// it: a 27-character uuid without its `zzzzz-bi6l4-`, any other uuid whole
/// (the 28-character ones an API server derives from a URL; protocol §4).
pub fn uuid_weight_suffix(uuid: &str) -> &str {
    if uuid.len() == 27 && uuid.is_ascii() {
        &uuid[12..]
    } else {
        uuid
    }
}

/// Whether the Python SDK weighs `uuid` as [`uuid_weight_suffix`] does: it
/// weighs the last 15 characters of every uuid, so it agrees on
/// 27-character uuids (and on any of 15 characters or fewer), and probes
/// the others in another order.
pub fn python_sdk_agrees(uuid: &str) -> bool {
    let last15 = match uuid.char_indices().rev().nth(14) {
        Some((at, _)) => &uuid[at..],
        None => uuid,
    };
    last15 == uuid_weight_suffix(uuid)
}

/// Weight of a service for a block: `md5(HASH_HEX + SUFFIX)`, SUFFIX from
/// [`uuid_weight_suffix`] (usually `UUID[12:]`), compared as
/// bytes (which orders like the hex string the SDKs compare).
pub fn weight(hash: &BlockHash, uuid_suffix: &str) -> [u8; 16] {
    weight_hex(&hex32(hash), uuid_suffix)
}

/// 32 lowercase hex digits of `hash` (fixed-size loops, the second
/// vectorized: ~60 instructions, about half of `hex::encode_to_slice`).
#[inline]
fn hex32(hash: &BlockHash) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (pair, &b) in out.chunks_exact_mut(2).zip(&hash.0) {
        pair[0] = b >> 4;
        pair[1] = b & 0x0f;
    }
    for c in &mut out {
        *c += if *c < 10 { b'0' } else { b'a' - 10 };
    }
    out
}

/// [`weight`] with the hash already in hex.
#[inline]
fn weight_hex(hex: &[u8; 32], uuid_suffix: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(hex);
    h.update(uuid_suffix.as_bytes());
    h.finalize().into()
}

/// The probe order of `hash` restricted to the services `among` (indices
/// into `uuid_suffixes`): exactly `probe_order(hash, uuid_suffixes)` with the
/// others left out, but weighing only `among`, into `out`. `scratch` is
/// reused between calls. The plan orders each block's source holders this way
/// (a block is usually on 1–3 of many services; one holder needs no MD5).
pub fn probe_order_among<S: AsRef<str>>(
    hash: &BlockHash,
    uuid_suffixes: &[S],
    among: &[u16],
    scratch: &mut Vec<([u8; 16], u16)>,
    out: &mut Vec<u16>,
) {
    out.clear();
    if among.len() <= 1 {
        out.extend_from_slice(among);
        return;
    }
    let hex = hex32(hash);
    scratch.clear();
    scratch.extend(
        among
            .iter()
            .map(|&i| (weight_hex(&hex, uuid_suffixes[i as usize].as_ref()), i)),
    );
    scratch.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    out.extend(scratch.iter().map(|&(_, i)| i));
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

/// The part of a volume (mount) uuid keepstore weighs: the same rule as
/// for services, [`uuid_weight_suffix`] (services/keepstore/keepstore.go,
/// `rendezvous`).
pub fn mount_weight_suffix(uuid: &str) -> &str {
    uuid_weight_suffix(uuid)
}

/// The order in which a keepstore tries its mounts for a block: higher
/// `priorities` first (the highest storage-class priority of each mount),
/// then **ascending** `md5(HASH_HEX + suffix)`, the opposite of the service
/// probe order. Restricted to `among` (indices, as in
/// [`probe_order_among`]), into `out`.
pub fn mount_order_among<S: AsRef<str>>(
    hash: &BlockHash,
    suffixes: &[S],
    priorities: &[i64],
    among: &[u16],
    out: &mut Vec<u16>,
) {
    let hex = hex32(hash);
    let mut w: Vec<(i64, [u8; 16], u16)> = among
        .iter()
        .map(|&i| {
            let i_ = i as usize;
            (
                -priorities.get(i_).copied().unwrap_or(0),
                weight_hex(&hex, suffixes[i_].as_ref()),
                i,
            )
        })
        .collect();
    w.sort_unstable();
    out.clear();
    out.extend(w.into_iter().map(|(_, _, i)| i));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference orders shared by the Go and Python SDK tests.
    #[test]
    fn sdk_reference_orders() {
        let uuids: Vec<String> = (0..16).map(|j| format!("zzzzz-bi6l4-{j:015x}")).collect();
        let suffixes: Vec<&str> = uuids.iter().map(|u| uuid_weight_suffix(u)).collect();
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
    fn order_among_is_the_filtered_probe_order() {
        let uuids: Vec<String> = (0..7).map(|j| format!("zzzzz-bi6l4-{j:015x}")).collect();
        let suffixes: Vec<&str> = uuids.iter().map(|u| &u[12..]).collect();
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        for n in 0..300u32 {
            let h = BlockHash::of(&n.to_le_bytes());
            let mut buf = [0u8; 32];
            hex::encode_to_slice(h.0, &mut buf).unwrap();
            assert_eq!(hex32(&h), buf);
            let among: Vec<u16> = (0..7u16).filter(|j| (n >> j) & 1 == 1).collect();
            probe_order_among(&h, &suffixes, &among, &mut scratch, &mut out);
            let want: Vec<u16> = probe_order(&h, &suffixes)
                .into_iter()
                .map(|i| i as u16)
                .filter(|i| among.contains(i))
                .collect();
            assert_eq!(out, want, "block {n}, among {among:?}");
        }
    }

    #[test]
    fn mounts_ascending_after_priority() {
        let uuids = [
            "zzzzz-nyw5e-000000000000000",
            "zzzzz-nyw5e-000000000000001",
            "short",
        ];
        let suffixes: Vec<&str> = uuids.iter().map(|u| mount_weight_suffix(u)).collect();
        assert_eq!(suffixes, ["000000000000000", "000000000000001", "short"]);
        let mut out = Vec::new();
        for n in 0..50u32 {
            let h = BlockHash::of(&n.to_le_bytes());
            mount_order_among(&h, &suffixes, &[0, 0, 0], &[0, 1, 2], &mut out);
            let mut want: Vec<(String, u16)> = (0..3u16)
                .map(|i| (hex::encode(weight(&h, suffixes[i as usize])), i))
                .collect();
            want.sort();
            let want: Vec<u16> = want.into_iter().map(|(_, i)| i).collect();
            assert_eq!(out, want);
            // A higher priority comes first whatever its weight.
            mount_order_among(&h, &suffixes, &[0, 0, 5], &[0, 1, 2], &mut out);
            assert_eq!(out[0], 2);
        }
    }

    /// The Go rule: 27 characters weigh `uuid[12:]`, any other length the
    /// whole uuid (a 28-character uuid as an API server derives it from a
    /// URL, `ID-bi6l4-` + 16 hex digits of its md5).
    #[test]
    fn other_uuid_lengths_weigh_whole() {
        assert_eq!(
            uuid_weight_suffix("zzzzz-bi6l4-000000000000001"),
            "000000000000001"
        );
        assert_eq!(uuid_weight_suffix("zzzzz-bi6l4-0"), "zzzzz-bi6l4-0");
        let rails = "zzzzz-bi6l4-d57e530a86591bfe";
        assert_eq!(uuid_weight_suffix(rails), rails);
        // Test vector: md5("d41d8cd98f00b204e9800998ecf8427e" + the whole uuid),
        // computed with coreutils md5sum.
        let h: BlockHash = "d41d8cd98f00b204e9800998ecf8427e".parse().unwrap();
        assert_eq!(
            hex::encode(weight(&h, uuid_weight_suffix(rails))),
            "d290ece3b6b7c143ecef6e169d2e2f04"
        );
        // Not 27 ASCII bytes (27 characters, 28 bytes): whole, never a panic.
        let odd = "zzzzz-bi6l4-00000000000000\u{e9}";
        assert_eq!(uuid_weight_suffix(odd), odd);
        assert_eq!(uuid_weight_suffix(""), "");
    }

    #[test]
    fn where_the_python_sdk_agrees() {
        assert!(python_sdk_agrees("zzzzz-bi6l4-000000000000001"));
        assert!(python_sdk_agrees("short"));
        assert!(python_sdk_agrees(""));
        assert!(!python_sdk_agrees("zzzzz-bi6l4-d57e530a86591bfe"));
        assert!(!python_sdk_agrees("zzzzz-bi6l4-0000000000000000000"));
        assert!(!python_sdk_agrees("zzzzz-bi6l4-00000000000000\u{e9}"));
    }
}
