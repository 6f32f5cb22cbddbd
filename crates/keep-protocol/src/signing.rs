//! Blob permission signatures (docs/protocol.md, "Permission signatures"): signing locators for GETs on a
//! cluster that enforces them, verifying them in the simulator, and keeping
//! them out of anything a human or a log collector reads.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::locator::Locator;

/// `hex(HMAC-SHA1(key, HASH@TOKEN@EXPIRY@TTL))` with EXPIRY as 8-digit hex
/// and TTL as unpadded hex seconds.
pub fn signature(key: &str, hash_hex: &str, token: &str, expiry: u64, ttl_secs: u64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{hash_hex}@{token}@{expiry:08x}@{ttl_secs:x}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `LOCATOR+A<sig>@<expiry>`, replacing any permission hint the locator had.
pub fn sign_locator(loc: &Locator, key: &str, token: &str, expiry: u64, ttl_secs: u64) -> String {
    let sig = signature(key, &loc.hash.to_string(), token, expiry, ttl_secs);
    let mut out = loc.unsigned();
    for h in loc.hints.iter().filter(|h| !h.starts_with('A')) {
        out.push('+');
        out.push_str(h);
    }
    out.push_str(&format!("+A{sig}@{expiry:08x}"));
    out
}

/// Why a signed locator was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("locator has no permission signature")]
    Missing,
    #[error("permission signature is not valid for this token")]
    Invalid,
    #[error("permission signature has expired")]
    Expired,
}

/// Check the `+A` hint of `loc` for `token`, as keepstore does: any other hints
/// may stand before or after it, the size is not signed, and an expired
/// signature is refused even when the HMAC is right.
pub fn verify_signature(
    loc: &Locator,
    key: &str,
    token: &str,
    ttl_secs: u64,
    now_unix: u64,
) -> Result<(), SignatureError> {
    let (sig, exp_hex) = loc.permission_hint().ok_or(SignatureError::Missing)?;
    let expiry = u64::from_str_radix(exp_hex, 16).map_err(|_| SignatureError::Invalid)?;
    let want = signature(key, &loc.hash.to_string(), token, expiry, ttl_secs);
    if !constant_time_eq(want.as_bytes(), sig.as_bytes()) {
        return Err(SignatureError::Invalid);
    }
    if expiry < now_unix {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Replace every `+A<sig>@<expiry>` permission hint in `text` with `+A…`, so a
/// message can name a locator without handing out a bearer credential.
pub fn redact_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("+A") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let sig_len = after.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
        if sig_len >= 8 {
            out.push_str("+A…");
            let tail = &after[sig_len..];
            let skip = match tail.strip_prefix('@') {
                Some(t) => 1 + t.bytes().take_while(|b| b.is_ascii_hexdigit()).count(),
                None => 0,
            };
            rest = &tail[skip..];
        } else {
            out.push_str("+A");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "13u9fkuccnboeewr0ne3mvapk28epf68a3bhj9q8sb4l6e4e5mkkp6nhj2mmpscgu1zze5h5enydxfe3j215024u16ij4hjaiqs5u4pzsl3nczmaoxncljkm4875xqn4xv058koz3vkptmzhyheiy6wzevzjmdvxhvcqsvr5abhl15c2d4o4jhl0s91lojy1mtrzqqvprqcverls0xvy9vai9t1l1lvvazpuadafm71jl4mrwq2ygokee3eamvjy8qq1fvy238838enjmy5wzy2md7yvsitp5vztft6j4q866efym7e6vu5wm9fpnwjyxfldw3vbo01mgjs75rgo7qioh8z8ij7jpyp8508okhgbbex3ceei786u5rw2a9gx743dj3fgq2irk";
    const TOKEN: &str = "hocfupkn2pjhrpgp2vxv8rsku7tvtx49arbc9s4bvu7p7wxqvk";
    const SIGNED: &str =
        "acbd18db4cc2f85cedef654fccc4a4d8+3+A89118b78732c33104a4d6231e8b5a5fa1e4301e3@7fffffff";

    #[test]
    fn sdk_test_vector() {
        let loc: Locator = "acbd18db4cc2f85cedef654fccc4a4d8+3".parse().unwrap();
        assert_eq!(sign_locator(&loc, KEY, TOKEN, 0x7fffffff, 1209600), SIGNED);
    }

    #[test]
    fn verify_accepts_hints_anywhere_and_rejects_bad() {
        let now = 1_700_000_000;
        let ok: Locator = SIGNED.parse().unwrap();
        assert_eq!(verify_signature(&ok, KEY, TOKEN, 1209600, now), Ok(()));
        let sig = ok.permission_hint().unwrap().0.to_string();
        let moved: Locator =
            format!("acbd18db4cc2f85cedef654fccc4a4d8+3+A{sig}@7fffffff+Zfoo+K@zzzzz")
                .parse()
                .unwrap();
        assert_eq!(verify_signature(&moved, KEY, TOKEN, 1209600, now), Ok(()));
        let nosize: Locator = format!("acbd18db4cc2f85cedef654fccc4a4d8+Zx+A{sig}@7fffffff")
            .parse()
            .unwrap();
        assert_eq!(verify_signature(&nosize, KEY, TOKEN, 1209600, now), Ok(()));
        assert_eq!(
            verify_signature(&ok, KEY, "othertoken", 1209600, now),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify_signature(&ok, KEY, TOKEN, 3600, now),
            Err(SignatureError::Invalid)
        );
        let bare: Locator = "acbd18db4cc2f85cedef654fccc4a4d8+3".parse().unwrap();
        assert_eq!(
            verify_signature(&bare, KEY, TOKEN, 1209600, now),
            Err(SignatureError::Missing)
        );
        let expired: Locator = sign_locator(&bare, KEY, TOKEN, 100, 1209600)
            .parse()
            .unwrap();
        assert_eq!(
            verify_signature(&expired, KEY, TOKEN, 1209600, now),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn redaction() {
        let msg = format!("GET {SIGNED} failed; also +Aabc and x+A0123456789abcdef@1234 end");
        let r = redact_signatures(&msg);
        assert!(!r.contains("89118b78732c33104a4d6231e8b5a5fa1e4301e3"));
        assert!(!r.contains("0123456789abcdef"));
        assert!(r.contains("acbd18db4cc2f85cedef654fccc4a4d8+3+A…"));
        assert!(r.contains("+Aabc"));
        assert!(r.ends_with(" end"));
    }
}
