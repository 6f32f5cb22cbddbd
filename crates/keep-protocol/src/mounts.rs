//! A keepstore's mounts (docs/protocol.md, "Mounts"): the volumes it serves,
//! as `GET /mounts` lists them to the system root token, each with its own
//! storage classes and replication. keep-balance indexes a keepstore one
//! mount at a time (`GET /mounts/UUID/blocks?prefix=P`) so that each copy is
//! counted in its own volume's classes and replication; keep-rsync does the
//! same, and keepstore-sim serves both.

use serde_json::Value;

/// One volume a keepstore mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The volume's uuid (`zzzzz-nyw5e-…`): the same on every keepstore
    /// that mounts the volume.
    pub uuid: String,
    /// Blocks may be written here (`allow_write`; older keepstores said
    /// `read_only`).
    pub writable: bool,
    /// Copies one block stored here stands for (at least 1).
    pub replication: u32,
    /// Its storage classes (`default` when the volume names none).
    pub classes: Vec<String>,
}

/// Parse a `GET /mounts` answer. `Err` completes "the mounts list … ".
pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("is not valid JSON ({e})"))?;
    let items = v
        .as_array()
        .ok_or("is not a JSON array of mounts (uuid, allow_write, replication, storage_classes)")?;
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let uuid = m.get("uuid").and_then(Value::as_str).unwrap_or("");
        if uuid.is_empty() {
            return Err(format!("has mount {i} without a \"uuid\""));
        }
        if !uuid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "has mount {i} whose uuid {uuid:?} is not letters, digits and dashes"
            ));
        }
        let writable = match (m.get("allow_write"), m.get("read_only")) {
            (Some(Value::Bool(w)), _) => *w,
            (_, Some(Value::Bool(ro))) => !ro,
            _ => true,
        };
        let replication = m
            .get("replication")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, u32::MAX as u64) as u32;
        let mut classes: Vec<String> = match m.get("storage_classes") {
            Some(Value::Object(o)) => o
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect(),
            // Keepstores before storage classes: every volume is `default`.
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(format!(
                    "has mount {i} ({uuid}) whose \"storage_classes\" is not an object: {other}"
                ))
            }
        };
        if classes.is_empty() {
            classes.push("default".into());
        }
        classes.sort();
        out.push(Mount {
            uuid: uuid.to_string(),
            writable,
            replication,
            classes,
        });
    }
    Ok(out)
}

/// The path of one mount's index: `/mounts/UUID/blocks?prefix=P`, as
/// keep-balance asks it.
pub fn mount_index_path(uuid: &str, prefix: &str) -> String {
    format!("/mounts/{uuid}/blocks?prefix={prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_current_and_old_keepstores() {
        let t = r#"[
          {"uuid":"zzzzz-nyw5e-000000000000000","device_id":"/var/lib/keep0","allow_write":true,
           "allow_trash":true,"replication":1,"storage_classes":{"default":true}},
          {"uuid":"zzzzz-nyw5e-000000000000001","device_id":"s3://b","allow_write":false,
           "replication":3,"storage_classes":{"archive":true,"cold":true,"off":false}},
          {"uuid":"zzzzz-nyw5e-000000000000002","read_only":true,"replication":0}
        ]"#;
        let m = parse_mounts(t).unwrap();
        assert_eq!(m.len(), 3);
        assert!(m[0].writable && m[0].replication == 1 && m[0].classes == ["default"]);
        assert!(!m[1].writable && m[1].replication == 3);
        assert_eq!(m[1].classes, ["archive", "cold"]);
        assert!(!m[2].writable && m[2].replication == 1 && m[2].classes == ["default"]);
    }

    #[test]
    fn refuses_what_is_not_a_mounts_list() {
        for (t, want) in [
            ("{}", "not a JSON array"),
            ("nope", "not valid JSON"),
            (r#"[{"replication":1}]"#, "without a \"uuid\""),
            (r#"[{"uuid":"a/../b"}]"#, "letters, digits"),
            (r#"[{"uuid":"a","storage_classes":["x"]}]"#, "not an object"),
        ] {
            let e = parse_mounts(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn index_path() {
        assert_eq!(
            mount_index_path("zzzzz-nyw5e-000000000000001", "ab"),
            "/mounts/zzzzz-nyw5e-000000000000001/blocks?prefix=ab"
        );
    }
}
