//! Keep services lists (docs/protocol.md, "Keep services"): the JSON shape
//! `arv --json keep_services accessible` prints and the API server's
//! `keep_services/accessible` answers, parsed and checked the same way by
//! keep-rsync and keepstore-sim; and the `-*-keep-services-json` argument
//! convention (JSON text, a file, or `-` for stdin).

use std::io::Read;

use md5::{Digest, Md5};
use serde_json::Value;

use crate::rendezvous::uuid_weight_suffix;

/// One Keep service, as listed in `keep_services/accessible`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepService {
    pub uuid: String,
    pub host: String,
    pub port: u16,
    pub ssl: bool,
    /// `disk`, `proxy`, or `gateway:…`.
    pub service_type: String,
    pub read_only: bool,
    /// The volumes it mounts: from a cluster config's `Volumes`, then as
    /// the keepstore itself answers `GET /mounts`; `None`: not known (a
    /// services list before the keepstore was asked, a keepproxy).
    pub mounts: Option<Vec<crate::Mount>>,
    /// `mounts` came from the keepstore's own `GET /mounts`, so its index is
    /// asked one mount at a time.
    pub mounts_served: bool,
}

impl KeepService {
    /// Root URL: `http|https://HOST:PORT`, IPv6 hosts in brackets.
    pub fn url(&self) -> String {
        let scheme = if self.ssl { "https" } else { "http" };
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The part of the uuid that rendezvous hashing weighs
    /// ([`uuid_weight_suffix`]).
    pub fn weight_suffix(&self) -> &str {
        uuid_weight_suffix(&self.uuid)
    }

    /// A keepproxy stores several replicas per write and lists several
    /// keepstores' blocks in its index.
    pub fn is_proxy(&self) -> bool {
        self.service_type == "proxy"
    }

    /// Gateways are only used when a locator names them: never indexed,
    /// never written.
    pub fn is_gateway(&self) -> bool {
        self.service_type.starts_with("gateway")
    }

    /// Whether blocks may be written here.
    pub fn writable(&self) -> bool {
        !self.read_only && !self.is_gateway()
    }

    /// `uuid (url)`, the way messages name a service.
    pub fn label(&self) -> String {
        format!("{} ({})", self.uuid, self.url())
    }
}

/// Parse and validate a services list. `Err` completes a sentence that
/// starts "the services list in FILE …" (e.g. "has no \"items\" array: …"):
/// the caller names the list.
pub fn parse_services(text: &str) -> Result<Vec<KeepService>, String> {
    let bad = |why: String| why;
    let v: Value = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "is not valid JSON ({e}). It should look like {{\"items\": [{{\"uuid\": …, \
             \"service_host\": …, \"service_port\": …, \"service_ssl_flag\": false, \
             \"service_type\": \"disk\"}}]}}, as `arv --json keep_services accessible` prints."
        ))
    })?;
    let items = v.get("items").and_then(Value::as_array).ok_or_else(|| {
        bad("has no \"items\" array: it must be a keep service list as `arv --json keep_services accessible` prints.".into())
    })?;
    let mut out: Vec<KeepService> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| item.get(name);
        let uuid = field("uuid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let at = if uuid.is_empty() {
            format!("item {i}")
        } else {
            format!("item {i} ({uuid})")
        };
        if uuid.is_empty() {
            return Err(bad(format!("has {at} without a \"uuid\".")));
        }
        let host = field("service_host")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if host.is_empty() {
            return Err(bad(format!("has {at} without a \"service_host\".")));
        }
        let port = match field("service_port") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            _ => None,
        };
        let port = match port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => {
                return Err(bad(format!(
                    "has {at} with a bad \"service_port\" ({}): it must be a number from 1 to \
                     65535.",
                    field("service_port")
                        .map(|p| p.to_string())
                        .unwrap_or("missing".into())
                )))
            }
        };
        let ssl = field("service_ssl_flag")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let service_type = field("service_type")
            .and_then(Value::as_str)
            .unwrap_or("disk")
            .to_string();
        let read_only = field("read_only").and_then(Value::as_bool).unwrap_or(false);
        let svc = KeepService {
            uuid,
            host,
            port,
            ssl,
            service_type,
            read_only,
            mounts: None,
            mounts_served: false,
        };
        if let Some(prev) = out.iter().find(|s| s.uuid == svc.uuid) {
            return Err(bad(format!(
                "lists uuid {} twice ({} and {}): each service needs its own uuid.",
                svc.uuid,
                prev.url(),
                svc.url()
            )));
        }
        // Two items with the same URL are one service (docs/protocol.md, "Keep services").
        if out.iter().any(|s| s.url() == svc.url()) {
            continue;
        }
        out.push(svc);
    }
    if !out.iter().any(|s| !s.is_gateway()) {
        return Err(bad(
            "lists no keepstore or keepproxy services: check that it is the right cluster's list."
                .into(),
        ));
    }
    Ok(out)
}

/// The uuid an Arvados API server gives a keep service of its cluster
/// config when the `keep_services` table is empty (Rails'
/// `KeepService.from_config`): `CLUSTER-bi6l4-` + `rendezvous` when it is
/// exactly 15 ASCII letters and digits (27 characters), else the first 16
/// hex digits of the md5 of `rendezvous`, or of `url` when it is absent or
/// blank (28 characters). `url` as the config holds it: normalised, with a
/// trailing `/` when its path is empty (`http://keep0.example:25107/`).
pub fn config_service_uuid(cluster: &str, url: &str, rendezvous: Option<&str>) -> String {
    let rvz = rendezvous.filter(|r| !r.trim().is_empty()).unwrap_or(url);
    if rvz.len() == 15 && rvz.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return format!("{cluster}-bi6l4-{rvz}");
    }
    let digest = hex::encode(Md5::digest(rvz.as_bytes()));
    format!("{cluster}-bi6l4-{}", &digest[..16])
}

/// Where a services argument's text came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicesSource {
    /// The argument was the JSON text itself (it starts with `{`).
    Literal,
    /// `-`: standard input.
    Stdin,
    /// A file path.
    File(String),
}

/// Read a services argument: JSON text when it starts with `{`, stdin for
/// `-`, otherwise a file path.
pub fn read_services_arg(arg: &str) -> Result<(String, ServicesSource), std::io::Error> {
    if arg.trim_start().starts_with('{') {
        return Ok((arg.to_string(), ServicesSource::Literal));
    }
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok((s, ServicesSource::Stdin));
    }
    Ok((
        std::fs::read_to_string(arg)?,
        ServicesSource::File(arg.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_url() {
        let s = KeepService {
            uuid: "u".into(),
            host: "::1".into(),
            port: 1,
            ssl: true,
            service_type: "disk".into(),
            read_only: false,
            mounts: None,
            mounts_served: false,
        };
        assert_eq!(s.url(), "https://[::1]:1");
    }

    #[test]
    fn config_uuids_as_rails_derives_them() {
        // Rails' own example (keep_service.rb; md5sum of the URL by hand).
        let url = "http://keep0.zzzzz.example.com:25107/";
        assert_eq!(
            config_service_uuid("zzzzz", url, None),
            "zzzzz-bi6l4-d57e530a86591bfe"
        );
        assert_eq!(
            config_service_uuid("zzzzz", url, Some(" ")),
            "zzzzz-bi6l4-d57e530a86591bfe"
        );
        assert_eq!(
            config_service_uuid("zzzzz", url, Some("0000000000keep0")),
            "zzzzz-bi6l4-0000000000keep0"
        );
        // Not 15 letters and digits: hashed like a URL.
        assert_eq!(
            config_service_uuid("zzzzz", url, Some(url)),
            "zzzzz-bi6l4-d57e530a86591bfe"
        );
    }

    #[test]
    fn any_non_empty_uuid_is_accepted_and_weighed_as_go_does() {
        let item = |uuid: &str, port: u16| {
            format!(
                r#"{{"uuid":"{uuid}","service_host":"h","service_port":{port},"service_type":"disk"}}"#
            )
        };
        let text = format!(
            r#"{{"items":[{},{},{}]}}"#,
            item("zzzzz-bi6l4-000000000000000", 1),
            item("zzzzz-bi6l4-d57e530a86591bfe", 2),
            item("x", 3)
        );
        let s = parse_services(&text).unwrap();
        let w: Vec<&str> = s.iter().map(KeepService::weight_suffix).collect();
        assert_eq!(w, ["000000000000000", "zzzzz-bi6l4-d57e530a86591bfe", "x"]);
        let empty = format!(r#"{{"items":[{}]}}"#, item("", 1));
        assert!(parse_services(&empty)
            .unwrap_err()
            .contains("without a \"uuid\""));
    }

    #[test]
    fn a_literal_argument_is_the_json_itself() {
        let (text, from) = read_services_arg(" {\"items\": []}").unwrap();
        assert_eq!(from, ServicesSource::Literal);
        assert!(parse_services(&text).unwrap_err().contains("no keepstore"));
    }
}
