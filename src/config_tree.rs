//! The document tree of Arvados config files (`--*-volumes` files and
//! cluster config.yml files): YAML or JSON read into one `Node` tree, typed
//! access with key paths for messages (`Clusters.zzzzz.Volumes.…`) and
//! Arvados' key matching (Go's encoding/json: exact key first, else one equal
//! ignoring case; null is absent), the cluster picked from `Clusters`, and
//! the secret values of the file found so that no message ever shows one.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

// ---------------------------------------------------------------------------
// The document tree: YAML and JSON both become a `Node`.

/// A parsed YAML or JSON value. Map keys are strings (YAML scalar keys are
/// turned into strings, as Arvados' YAML-to-JSON step does), in file order.
#[derive(Debug)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

pub(crate) fn kind(n: &Node) -> &'static str {
    match n {
        Node::Null => "null",
        Node::Bool(_) => "true/false",
        Node::Int(_) | Node::Float(_) => "a number",
        Node::Str(_) => "a string",
        Node::Seq(_) => "a list",
        Node::Map(_) => "a map",
    }
}

/// Parse as JSON when the text starts like JSON (so its errors are JSON's),
/// else as YAML. JSON that fails but is YAML (flow style: `{Volumes: {...}}`)
/// is taken as YAML.
pub(crate) fn read_tree(text: &str) -> Result<Node, String> {
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return match serde_json::from_str::<Node>(text) {
            Ok(node) => Ok(node),
            Err(json) => read_yaml(text).map_err(|_| {
                format!(
                    "not valid JSON: {json}. Fix the file there ({}).",
                    "it starts with '{' or '[', so it is read as JSON"
                )
            }),
        };
    }
    read_yaml(text).map_err(|why| format!("not valid YAML: {why}. Fix the file there."))
}

pub(crate) fn read_yaml(text: &str) -> Result<Node, String> {
    let mut value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let mut msg = e.to_string();
        if let (Some(at), false) = (e.location(), msg.contains(" at line ")) {
            msg.push_str(&format!(" at line {} column {}", at.line(), at.column()));
        }
        msg
    })?;
    value
        .apply_merge()
        .map_err(|e| format!("bad YAML merge key (<<): {e}"))?;
    from_yaml(value)
}

pub(crate) fn from_yaml(value: serde_norway::Value) -> Result<Node, String> {
    use serde_norway::Value as Y;
    Ok(match value {
        Y::Null => Node::Null,
        Y::Bool(b) => Node::Bool(b),
        Y::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Node::Int(i.into()),
            (None, Some(u)) => Node::Int(u.into()),
            (None, None) => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Y::String(s) => Node::Str(s),
        Y::Sequence(items) => {
            Node::Seq(items.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        Y::Mapping(m) => {
            let mut out: Vec<(String, Node)> = Vec::with_capacity(m.len());
            for (k, v) in m {
                let key = yaml_key(k)?;
                if out.iter().any(|(seen, _)| *seen == key) {
                    return Err(format!("duplicate key {key:?}"));
                }
                out.push((key, from_yaml(v)?));
            }
            Node::Map(out)
        }
        Y::Tagged(t) => from_yaml(t.value)?,
    })
}

pub(crate) fn yaml_key(key: serde_norway::Value) -> Result<String, String> {
    use serde_norway::Value as Y;
    match key {
        Y::String(s) => Ok(s),
        Y::Number(n) => Ok(n.to_string()),
        Y::Bool(b) => Ok(b.to_string()),
        Y::Null => Ok("null".to_string()),
        Y::Tagged(t) => yaml_key(t.value),
        Y::Sequence(_) | Y::Mapping(_) => {
            Err("a map key is a list or a map, which a cluster config cannot hold".to_string())
        }
    }
}

/// JSON goes straight into a `Node`, so a key given twice is an error with
/// its line and column (serde_json's own `Value` would keep the last one).
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

pub(crate) struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Node, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Node, E> {
        Ok(Node::Int(i.into()))
    }
    fn visit_u64<E>(self, u: u64) -> std::result::Result<Node, E> {
        Ok(Node::Int(u.into()))
    }
    fn visit_f64<E>(self, f: f64) -> std::result::Result<Node, E> {
        Ok(Node::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Node, E> {
        Ok(Node::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Node, E> {
        Ok(Node::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Node, A::Error> {
        let mut out: Vec<(String, Node)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(seen, _)| *seen == key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value::<Node>()?;
            out.push((key, value));
        }
        Ok(Node::Map(out))
    }
}

// ---------------------------------------------------------------------------
// Secrets: collected from the file so that no message can show one.

/// Whether a key's value is a secret: the ones named in the module doc, and
/// any Arvados-style name ending so (`AnonymousUserToken`, `ClientSecret`,
/// `DispatchPrivateKey`, `StorageAccountKey`, `password`...).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    ["key", "keyid", "token", "secret", "password"]
        .iter()
        .any(|end| k.ends_with(end))
}

pub(crate) fn secrets_in_tree(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Map(entries) => {
            for (k, v) in entries {
                match v {
                    Node::Str(s) if is_secret_key(k) => out.push(s.clone()),
                    Node::Int(_) | Node::Float(_) if is_secret_key(k) => {
                        out.push(scalar_text(v));
                    }
                    _ => secrets_in_tree(v, out),
                }
            }
        }
        Node::Seq(items) => items.iter().for_each(|i| secrets_in_tree(i, out)),
        _ => {}
    }
}

pub(crate) fn scalar_text(n: &Node) -> String {
    match n {
        Node::Int(i) => i.to_string(),
        Node::Float(f) => f.to_string(),
        _ => String::new(),
    }
}

/// A rough look at the text itself, for files that do not parse: every
/// `SecretKey: value` (YAML) or `"SecretKey": "value"` (JSON).
pub(crate) fn secrets_in_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        for part in line.split([',', '{', '}']) {
            let Some((key, value)) = part.split_once(':') else {
                continue;
            };
            let key = key
                .trim()
                .trim_start_matches('-')
                .trim()
                .trim_matches(['"', '\'']);
            if !is_secret_key(key) {
                continue;
            }
            let value = value.trim();
            let value = value.split(" #").next().unwrap_or(value).trim();
            let value = value.trim_matches(['"', '\'']).trim();
            if !value.is_empty() && !value.starts_with(['|', '>', '[', '&', '*']) {
                out.push(value.to_string());
            }
        }
    }
    out
}

pub(crate) fn redact(msg: String, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(msg, |msg, s| msg.replace(s.as_str(), "<redacted>"))
}

// ---------------------------------------------------------------------------
// Typed access to maps, with key paths for messages.

/// A map of the file and its key path (`Clusters.zzzzz.Volumes.…`, empty at
/// the top).
pub(crate) struct Obj<'a> {
    pub(crate) entries: &'a [(String, Node)],
    pub(crate) path: String,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Obj<'a> {
    pub(crate) fn new(entries: &'a [(String, Node)], path: String) -> Obj<'a> {
        Obj { entries, path }
    }

    /// The entry for `name` as encoding/json finds a struct field: the exact
    /// key if present, else one equal ignoring case. Null counts as present.
    pub(crate) fn entry(&self, name: &str) -> Option<&'a (String, Node)> {
        let entries = self.entries;
        entries
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
    }

    /// The value of `name`, None when absent or null (null leaves a Go field
    /// at its zero value).
    pub(crate) fn get(&self, name: &str) -> Option<&'a Node> {
        match self.entry(name) {
            Some((_, Node::Null)) | None => None,
            Some((_, node)) => Some(node),
        }
    }

    /// The key path of `name`, spelled as in the file when it is there.
    pub(crate) fn key(&self, name: &str) -> String {
        join(
            &self.path,
            self.entry(name).map_or(name, |(k, _)| k.as_str()),
        )
    }

    /// A string field; "" is the same as absent, as in Go.
    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Node::Str(s)) => Ok((!s.is_empty()).then_some(s.as_str())),
            Some(other) => Err(format!(
                "{} must be a string, not {}.",
                self.key(name),
                kind(other)
            )),
        }
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(false),
            Some(Node::Bool(b)) => Ok(*b),
            Some(other) => Err(format!(
                "{} must be true or false, not {}.",
                self.key(name),
                kind(other)
            )),
        }
    }

    /// An integer field. A float with no fraction (`2.0`) is taken, as
    /// Arvados' YAML-to-JSON step writes it as `2`.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<i128>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Node::Int(i)) => Ok(Some(*i)),
            Some(Node::Float(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => {
                Ok(Some(*f as i128))
            }
            Some(Node::Float(f)) => Err(format!(
                "{} is {f}: it must be a whole number.",
                self.key(name)
            )),
            Some(other) => Err(format!(
                "{} must be a whole number, not {}.",
                self.key(name),
                kind(other)
            )),
        }
    }

    /// A map field, None when absent or null.
    pub(crate) fn object(&self, name: &str) -> Result<Option<Obj<'a>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Node::Map(entries)) => Ok(Some(Obj::new(entries, self.key(name)))),
            Some(other) => Err(format!(
                "{} must be a map, not {}.",
                self.key(name),
                kind(other)
            )),
        }
    }
}

/// A value shown in a message (Driver, Root, Endpoint: never a secret
/// field): quoted when it is not plain, and cut when long.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 60;
    if s.len() <= MAX && !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// The cluster of a config file's `Clusters` map: the only one, or the one
/// `cluster` names (from `cluster_flag`). `None` when the file has no
/// `Clusters` key. `section` names what the caller wants from the cluster,
/// for messages.
pub(crate) fn pick_cluster<'a>(
    top: &Obj<'a>,
    cluster: Option<&str>,
    cluster_flag: &str,
    section: &str,
) -> Result<Option<(String, Obj<'a>)>, String> {
    let Some((ckey, cnode)) = top.entry("Clusters") else {
        return Ok(None);
    };
    let clusters = match cnode {
        Node::Map(entries) if !entries.is_empty() => entries,
        Node::Map(_) | Node::Null => {
            return Err(format!(
                "{ckey} is empty: a cluster config lists its clusters there \
                 (Clusters: {{ID: {{{section}: ...}}}})."
            ))
        }
        other => {
            return Err(format!(
                "{ckey} must be a map of cluster IDs, not {}.",
                kind(other)
            ))
        }
    };
    let mut ids: Vec<&str> = clusters.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let list = ids.join(", ");
    let id = match cluster {
        Some(want) if ids.contains(&want) => want,
        Some(want) => {
            return Err(format!(
                "cluster {} (from {cluster_flag}) is not in the file: its {ckey} are {list}. \
                 Pass one of them to {cluster_flag}, or give the config file of cluster {}.",
                shown(want),
                shown(want)
            ))
        }
        None if ids.len() == 1 => ids[0],
        None => {
            return Err(format!(
                "the file holds several clusters ({list}): name the one to use with \
                 {cluster_flag} ID."
            ))
        }
    };
    let Some((_, cnode)) = clusters.iter().find(|(k, _)| k == id) else {
        return Err(format!("cluster {} is not in the file", shown(id)));
    };
    let cpath = join(ckey, id);
    match cnode {
        Node::Map(entries) => Ok(Some((id.to_string(), Obj::new(entries, cpath)))),
        Node::Null => Err(format!(
            "{cpath} is empty: cluster {id} has no {section} section."
        )),
        other => Err(format!("{cpath} must be a map, not {}.", kind(other))),
    }
}

/// A config file's text, for `flag`: `what` names the kind of file and
/// `pass` says what to give instead, in the message when it cannot be read;
/// `syntax` names the languages it should be in, when it is not UTF-8.
pub(crate) fn read_text(
    path: &Path,
    flag: &str,
    what: &str,
    pass: &str,
    syntax: &str,
) -> crate::error::Result<String> {
    use crate::error::Error;
    let origin = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        Error::config(format!(
            "{flag} {origin}: cannot read the {what}: {why}. {pass}"
        ))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Error::config(format!(
            "{flag} {origin}: the {what} is not UTF-8 text (at byte {}): it should be {syntax}.",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// A config file read into its tree, with the secrets it holds, so that
/// every message about it names the file and shows none of them.
pub(crate) struct Document {
    pub(crate) root: Node,
    secrets: Vec<String>,
    /// `FLAG FILE`, the start of every message.
    named: String,
}

impl Document {
    /// Parse `text` (a leading BOM is dropped) of the file `origin` given
    /// with `flag`. A file that does not parse has its secrets looked for in
    /// the text itself before the parser's message is shown.
    pub(crate) fn parse(text: &str, origin: &str, flag: &str) -> crate::error::Result<Document> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let named = format!("{flag} {origin}");
        let root = read_tree(text).map_err(|msg| {
            crate::error::Error::config(format!("{named}: {}", redact(msg, &secrets_in_text(text))))
        })?;
        let mut secrets = Vec::new();
        secrets_in_tree(&root, &mut secrets);
        Ok(Document {
            root,
            secrets,
            named,
        })
    }

    /// A configuration error about this file (exit 2), scrubbed of its
    /// secrets.
    pub(crate) fn error(&self, msg: String) -> crate::error::Error {
        crate::error::Error::config(format!("{}: {}", self.named, redact(msg, &self.secrets)))
    }
}
