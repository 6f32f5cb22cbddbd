//! Keep services lists (docs/protocol.md, "Keep services"): the JSON shape
//! `arv --json keep_services accessible` prints and the API server's
//! `keep_services/accessible` answers, parsed and checked the same way by
//! keep-rsync and keepstore-sim; and the `-*-keep-services-json` argument
//! convention (JSON text, a file, or `-` for stdin).

use std::io::Read;

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

    /// The part of the uuid that rendezvous hashing weighs.
    pub fn weight_suffix(&self) -> &str {
        uuid_weight_suffix(&self.uuid).unwrap_or(&self.uuid)
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
        if uuid_weight_suffix(&uuid).is_none() {
            return Err(bad(format!(
                "has {at} whose uuid is not 27 characters (like zzzzz-bi6l4-000000000000000): \
                 rendezvous order would differ between Arvados clients, so fix the uuid."
            )));
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
    fn a_literal_argument_is_the_json_itself() {
        let (text, from) = read_services_arg(" {\"items\": []}").unwrap();
        assert_eq!(from, ServicesSource::Literal);
        assert!(parse_services(&text).unwrap_err().contains("no keepstore"));
    }
}
