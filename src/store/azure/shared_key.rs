//! Azure Storage SharedKey request signing (docs/protocol.md, "Azure Blob
//! volumes"; the choice of signing by hand in docs/design.md).
//!
//! A request is signed by an HMAC-SHA256, keyed with the base64-decoded
//! account key, of a string made of the verb, the standard headers that
//! matter (Content-Length, Content-MD5, …), every `x-ms-*` header and the
//! canonical resource (`/ACCOUNT/PATH` then the query parameters, sorted);
//! the signature travels in `Authorization: SharedKey ACCOUNT:SIGNATURE`.
//! The key never leaves [`SharedKey`]: its `Debug` shows the account only.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// An account's name and decoded key.
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What of a request the signature covers besides its URL and method.
#[derive(Default)]
pub struct Signed<'a> {
    /// The body's length (0 and none are signed alike, as empty).
    pub content_length: Option<u64>,
    /// `Content-MD5`, base64.
    pub content_md5: Option<&'a str>,
    /// Every `x-ms-*` header sent, names in lower case.
    pub ms_headers: &'a [(&'a str, &'a str)],
}

impl SharedKey {
    /// `Err` says why the key is not usable (not base64), never the key.
    pub fn new(account: &str, key_base64: &str) -> Result<SharedKey, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_base64.trim())
            .map_err(|_| {
                "its StorageAccountKey is not base64 (an Azure account key is the base64 text \
                 shown under the storage account's Access keys)"
                    .to_string()
            })?;
        Ok(SharedKey {
            account: account.to_string(),
            key,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The `Authorization` header value of a `method` request to `url`.
    pub fn authorization(&self, method: &str, url: &url::Url, s: &Signed<'_>) -> String {
        let text = self.string_to_sign(method, url, s);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(text.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("SharedKey {}:{sig}", self.account)
    }

    /// The string signed (API versions 2015-02-21 and later: a length of 0
    /// is the empty string).
    fn string_to_sign(&self, method: &str, url: &url::Url, s: &Signed<'_>) -> String {
        let length = match s.content_length {
            Some(n) if n > 0 => n.to_string(),
            _ => String::new(),
        };
        // Content-Encoding, -Language, -Length, -MD5, -Type, Date,
        // If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since,
        // Range: only the length and MD5 are ever sent here.
        let mut out = format!(
            "{method}\n\n\n{length}\n{}\n\n\n\n\n\n\n\n",
            s.content_md5.unwrap_or("")
        );
        let mut ms: Vec<(String, String)> = (s.ms_headers.iter())
            .map(|(k, v)| (k.to_ascii_lowercase(), unfold(v)))
            .collect();
        ms.sort();
        for (k, v) in ms {
            out.push_str(&k);
            out.push(':');
            out.push_str(&v);
            out.push('\n');
        }
        out.push('/');
        out.push_str(&self.account);
        out.push_str(url.path());
        let mut query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        query.sort();
        // A parameter given twice is one line with its values, sorted,
        // comma-separated (never the case in the requests sent here).
        let mut i = 0;
        while i < query.len() {
            let name = query[i].0.clone();
            let mut values = Vec::new();
            while i < query.len() && query[i].0 == name {
                values.push(query[i].1.clone());
                i += 1;
            }
            out.push('\n');
            out.push_str(&name);
            out.push(':');
            out.push_str(&values.join(","));
        }
        out
    }
}

/// A header value as signed: trimmed, runs of white space as one space.
fn unfold(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test vector: the string to sign and signature computed by hand from
    /// Microsoft's published scheme, for a List Blobs request.
    #[test]
    fn string_to_sign_of_a_listing() {
        let k = SharedKey::new("acct", "c2VjcmV0").unwrap();
        let url: url::Url =
            "https://acct.blob.core.windows.net/keep?restype=container&comp=list&prefix=ab&include=metadata"
                .parse()
                .unwrap();
        let ms = [
            ("x-ms-version", "2021-12-02"),
            ("x-ms-date", "Mon, 07 Dec 2026 10:00:00 GMT"),
        ];
        let s = Signed {
            ms_headers: &ms,
            ..Default::default()
        };
        assert_eq!(
            k.string_to_sign("GET", &url, &s),
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 07 Dec 2026 10:00:00 GMT\n\
             x-ms-version:2021-12-02\n/acct/keep\ncomp:list\ninclude:metadata\nprefix:ab\n\
             restype:container"
        );
        let put: url::Url =
            "https://acct.blob.core.windows.net/keep/0cc175b9c0f1b6a831c399e269772661"
                .parse()
                .unwrap();
        let s = Signed {
            content_length: Some(1),
            content_md5: Some("DMF1ucDxtqgxw5niaXcmYQ=="),
            ms_headers: &[("x-ms-blob-type", "BlockBlob")],
        };
        assert_eq!(
            k.string_to_sign("PUT", &put, &s),
            "PUT\n\n\n1\nDMF1ucDxtqgxw5niaXcmYQ==\n\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\n\
             /acct/keep/0cc175b9c0f1b6a831c399e269772661"
        );
        let a = k.authorization("PUT", &put, &s);
        assert!(a.starts_with("SharedKey acct:"), "{a}");
        assert!(!format!("{k:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn a_key_that_is_not_base64_is_refused_without_showing_it() {
        let e = SharedKey::new("acct", "not base64 !!secret").unwrap_err();
        assert!(e.contains("not base64") && !e.contains("secret"), "{e}");
    }
}
