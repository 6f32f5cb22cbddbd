//! The document tree of Arvados config files (`--*-volumes` files and
//! cluster config.yml files): YAML or JSON read into one `Node` tree, typed
//! access with key paths for messages (`Clusters.zzzzz.Volumes.…`) and
//! Arvados' key matching (exact; a key that differs from a known one only in
//! case is dropped with a warning before anything is read, as Arvados'
//! loader does, see [`Keys`]; null is absent), the cluster picked from
//! `Clusters`, and the secret values of the file found so that no message
//! ever shows one.

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

    /// The entry for `name`, spelled exactly so. Null counts as present.
    /// (Keys of the wrong case are dropped by [`Document::drop_near_misses`]
    /// first, as Arvados' loader drops them.)
    pub(crate) fn entry(&self, name: &str) -> Option<&'a (String, Node)> {
        self.entries.iter().find(|(k, _)| k == name)
    }

    /// The entry for a key Arvados' defaults do not hold (the deprecated
    /// `AccessKey`/`SecretKey`): Arvados keeps it and Go's encoding/json
    /// finds it as a struct field does, the exact key first, else one equal
    /// ignoring case.
    pub(crate) fn entry_any_case(&self, name: &str) -> Option<&'a (String, Node)> {
        let entries = self.entries;
        entries
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| entries.iter().find(|(k, _)| fold_eq(k, name)))
    }

    /// The value of `name`, None when absent or null (null leaves a Go field
    /// at its zero value).
    pub(crate) fn get(&self, name: &str) -> Option<&'a Node> {
        match self.entry(name) {
            Some((_, Node::Null)) | None => None,
            Some((_, node)) => Some(node),
        }
    }

    /// The key path of `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// A string field; "" is the same as absent, as in Go.
    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>, String> {
        self.string_of(self.entry(name), name)
    }

    /// A string field found as [`entry_any_case`](Self::entry_any_case)
    /// finds it.
    pub(crate) fn string_any_case(&self, name: &str) -> Result<Option<&'a str>, String> {
        self.string_of(self.entry_any_case(name), name)
    }

    fn string_of(
        &self,
        entry: Option<&'a (String, Node)>,
        name: &str,
    ) -> Result<Option<&'a str>, String> {
        match entry {
            None | Some((_, Node::Null)) => Ok(None),
            Some((_, Node::Str(s))) => Ok((!s.is_empty()).then_some(s.as_str())),
            Some((k, other)) => Err(format!(
                "{} must be a string, not {}.",
                self.key(if k.is_empty() { name } else { k }),
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
    /// One paragraph per key dropped by [`drop_near_misses`](Self::drop_near_misses).
    pub(crate) warnings: Vec<String>,
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
            warnings: Vec::new(),
        })
    }

    /// A configuration error about this file (exit 2), scrubbed of its
    /// secrets.
    pub(crate) fn error(&self, msg: String) -> crate::error::Error {
        crate::error::Error::config(format!("{}: {}", self.named, redact(msg, &self.secrets)))
    }

    /// Drop every key that `keys` does not hold but holds one equal to it
    /// ignoring case (Go's `strings.EqualFold`), with a warning naming its
    /// key path and the right spelling, as Arvados' loader does
    /// (lib/config/load.go, `logExtraKeys`) before it decodes the file:
    /// keepstore never sees such a key, so keep-rsync must not either. A
    /// key `keys` does not know in any case is kept (Arvados keeps it too,
    /// and warns that it is unknown; keep-rsync reads only part of the
    /// config, so it cannot tell). Values are never shown.
    pub(crate) fn drop_near_misses(&mut self, keys: &Keys) {
        let mut found = Vec::new();
        drop_near_misses(&mut self.root, keys, "", &mut found);
        for (path, meant) in found {
            let msg = format!(
                "{}: ignoring the config entry {path} (perhaps you meant {meant}?): config keys \
                 are matched exactly, as Arvados matches them, and Arvados drops a key that \
                 differs from one it knows only in case, so its services ignore this one too. \
                 Write {meant} to set it.",
                self.named
            );
            self.warnings.push(redact(msg, &self.secrets));
        }
    }
}

// ---------------------------------------------------------------------------
// Arvados' key matching.

/// What Arvados' default config (lib/config/config.default.yml) holds at a
/// place of a file, as far as keep-rsync reads it: the keys Arvados' loader
/// checks a file's keys against before decoding it.
pub(crate) enum Keys {
    /// A map of these keys, each with what lies under it.
    Known(&'static [(&'static str, Keys)]),
    /// A map whose keys are the user's own (cluster IDs, volume UUIDs,
    /// service URLs, storage class names: a `SAMPLE` entry in Arvados'
    /// defaults), not checked; each entry holds this.
    Named(&'static Keys),
    /// Not checked: a value, or a map of names to values (a volume's
    /// `StorageClasses`).
    Any,
}

use Keys::{Any, Known, Named};

/// A storage class of the cluster-level `StorageClasses`.
const CLASS: Keys = Known(&[("Default", Any), ("Priority", Any)]);

/// One volume (Arvados' defaults hold one `DriverParameters` map with the
/// keys of every driver; these are the Directory, S3 and Azure ones
/// keep-rsync reads).
const VOLUME: Keys = Known(&[
    ("AccessViaHosts", Named(&Known(&[("ReadOnly", Any)]))),
    ("ReadOnly", Any),
    ("Replication", Any),
    ("StorageClasses", Any),
    ("Driver", Any),
    (
        "DriverParameters",
        Known(&[
            ("AccessKeyID", Any),
            ("SecretAccessKey", Any),
            ("Endpoint", Any),
            ("Region", Any),
            ("Bucket", Any),
            ("V2Signature", Any),
            ("UsePathStyle", Any),
            ("IndexPageSize", Any),
            ("PrefixLength", Any),
            ("Root", Any),
            ("Serialize", Any),
            ("StorageAccountName", Any),
            ("StorageAccountKey", Any),
            ("StorageBaseURL", Any),
            ("ContainerName", Any),
            ("RequestTimeout", Any),
            ("ListBlobsRetryDelay", Any),
            ("ListBlobsMaxAttempts", Any),
            ("MaxGetBytes", Any),
            ("WriteRaceInterval", Any),
            ("WriteRacePollTime", Any),
        ]),
    ),
]);

/// A `Volumes` map: volume UUIDs to volumes.
pub(crate) const VOLUMES: Keys = Named(&VOLUME);

/// One cluster of `Clusters`.
const CLUSTER: Keys = Known(&[
    ("SystemRootToken", Any),
    (
        "Collections",
        Known(&[
            ("BlobSigningKey", Any),
            ("BlobSigningTTL", Any),
            ("DefaultReplication", Any),
        ]),
    ),
    ("TLS", Known(&[("Insecure", Any)])),
    (
        "Services",
        Known(&[
            ("Controller", Known(&[("ExternalURL", Any)])),
            (
                "Keepstore",
                Known(&[(
                    "InternalURLs",
                    Named(&Known(&[("ListenURL", Any), ("Rendezvous", Any)])),
                )]),
            ),
            ("Keepproxy", Known(&[("ExternalURL", Any)])),
        ]),
    ),
    ("StorageClasses", Named(&CLASS)),
    ("Volumes", VOLUMES),
]);

/// A whole file: a cluster config (`Clusters`), or keep-rsync's own shape
/// of a cluster's `Volumes` (and `StorageClasses`) without the wrapper.
pub(crate) const FILE: Keys = Known(&[
    ("Clusters", Named(&CLUSTER)),
    ("Volumes", VOLUMES),
    ("StorageClasses", Named(&CLASS)),
]);

/// [`Document::drop_near_misses`] at `node` (key path `path`): the dropped
/// keys' paths and the keys they were meant to be (as spelled in Arvados'
/// defaults) go to `found`.
fn drop_near_misses(node: &mut Node, keys: &Keys, path: &str, found: &mut Vec<(String, String)>) {
    let Node::Map(entries) = node else {
        return;
    };
    match keys {
        Any => {}
        Named(each) => {
            for (k, v) in entries.iter_mut() {
                drop_near_misses(v, each, &join(path, &key_shown(k)), found);
            }
        }
        Known(fields) => entries.retain_mut(|(k, v)| {
            let here = join(path, &key_shown(k));
            if let Some((_, under)) = fields.iter().find(|(name, _)| name == k) {
                drop_near_misses(v, under, &here, found);
                return true;
            }
            match fields.iter().find(|(name, _)| fold_eq(name, k)) {
                Some((name, _)) => {
                    found.push((here, name.to_string()));
                    false
                }
                None => true,
            }
        }),
    }
}

/// A key as a key path shows it: a URL's user name and password (a
/// keepstore's `InternalURLs` key) cut out, and cut when long.
fn key_shown(k: &str) -> String {
    let k = match k.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}{tail}"),
                None => k.to_string(),
            }
        }
        None => k.to_string(),
    };
    shown(&k)
}

/// Whether two keys are equal ignoring case as Go's `strings.EqualFold`
/// compares them: character by character, under Unicode case folding
/// (so the Kelvin sign K matches k, but ß does not match ss).
pub(crate) fn fold_eq(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.chars(), b.chars());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(c), Some(d))
                if c == d
                    || c.to_lowercase().eq(d.to_lowercase())
                    || c.to_uppercase().eq(d.to_uppercase()) => {}
            _ => return false,
        }
    }
}

/// When `root` has none of `names` spelled exactly but a key equal to one
/// ignoring case, the error to give: Arvados would drop that key, leaving
/// the file with nothing keep-rsync could use.
pub(crate) fn misspelled_top(root: &Node, names: &[&str]) -> Result<(), String> {
    let Node::Map(entries) = root else {
        return Ok(());
    };
    if entries.iter().any(|(k, _)| names.contains(&k.as_str())) {
        return Ok(());
    }
    for (k, _) in entries {
        if let Some(name) = names.iter().find(|n| fold_eq(n, k)) {
            return Err(format!(
                "the file's top-level key {} is not {name}: config keys are matched exactly, \
                 as Arvados matches them (Arvados drops a key that differs from one it knows \
                 only in case), so the file holds no {name} section. Write {name}.",
                key_shown(k)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_equal_ignoring_case_as_go_equal_fold() {
        assert!(fold_eq("PrefixLength", "prefixlength"));
        assert!(fold_eq("Driver", "DRIVER"));
        // The Kelvin sign folds to k, the long s to s (Go: EqualFold true).
        assert!(fold_eq("\u{212a}ey", "Key"));
        assert!(fold_eq("Ba\u{17f}e", "BASE"));
        assert!(!fold_eq("ß", "ss"));
        assert!(!fold_eq("Root", "Roots"));
        assert!(!fold_eq("Root", "Rooq"));
    }

    #[test]
    fn near_misses_are_dropped_where_arvados_drops_them() {
        let mut doc = Document::parse(
            "Clusters:
  zzzzz:
    collections: {DefaultReplication: 3}
    Collections: {defaultreplication: 4, BlobSigningTTL: 1h}
    Services:
      Keepstore:
        InternalURLs:
          'http://k:1': {rendezvous: x, ListenURL: y}
    SystemRootToken: ROOTtoken789
    systemroottoken: OTHERtoken000
    Unknown: {Whatever: 1}
",
            "c.yml",
            "-dst-cluster-config",
        )
        .unwrap();
        doc.drop_near_misses(&FILE);
        let ws = &doc.warnings;
        let paths = [
            "Clusters.zzzzz.collections (perhaps you meant Collections?)",
            "Clusters.zzzzz.Collections.defaultreplication (perhaps you meant \
             DefaultReplication?)",
            "Clusters.zzzzz.Services.Keepstore.InternalURLs.http://k:1.rendezvous (perhaps you \
             meant Rendezvous?)",
            "Clusters.zzzzz.systemroottoken (perhaps you meant SystemRootToken?)",
        ];
        assert_eq!(ws.len(), paths.len(), "{ws:#?}");
        for (w, p) in ws.iter().zip(paths) {
            assert!(w.starts_with("-dst-cluster-config c.yml: ignoring the config entry "));
            assert!(w.contains(p), "want {p}\ngot  {w}");
            assert!(!w.contains("token789") && !w.contains("token000"), "{w}");
        }
        let Node::Map(top) = &doc.root else { panic!() };
        let c = pick_cluster(&Obj::new(top, String::new()), None, "--c", "x")
            .unwrap()
            .unwrap()
            .1;
        let keys: Vec<&str> = c.entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["Collections", "Services", "SystemRootToken", "Unknown"]
        );
        let coll = c.object("Collections").unwrap().unwrap();
        assert_eq!(coll.integer("DefaultReplication").unwrap(), None);
    }
}
