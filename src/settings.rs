//! Settings files (docs/protocol.md, "Settings files"): where `-src`/`-dst` point, and what they say.
//!
//! `NAME` without a `/` resolves to `$XDG_CONFIG_HOME/arvados/NAME.conf` when
//! that exists, else `$HOME/.config/arvados/NAME.conf`, like arv-copy. Lines
//! are `KEY=VALUE`; blank lines and `#` comments are allowed; anything else is
//! an error naming the file and line (the Go tool panics there). A token in a
//! file that group or others can read draws a warning.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::role::Role;

/// What one settings file says about one cluster.
#[derive(Clone, Default)]
pub struct Settings {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub api_host: String,
    pub api_token: String,
    pub insecure: bool,
    pub blob_signing_key: Option<String>,
    /// Warnings to show the admin (unknown keys, loose permissions).
    pub warnings: Vec<String>,
    /// Read from a cluster config.yml (`-*-cluster-config`) rather than a
    /// settings file: messages then name its keys.
    pub from_cluster_config: bool,
}

impl std::fmt::Debug for Settings {
    // Hand-written so a token or key can never reach a log through {:?}.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("path", &self.path)
            .field("api_host", &self.api_host)
            .field("insecure", &self.insecure)
            .field("has_blob_signing_key", &self.blob_signing_key.is_some())
            .finish()
    }
}

/// Resolve `-src`/`-dst` NAME to a path, as arv-copy and the Go tool do.
pub fn resolve(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let file = format!("{name}.conf");
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        let p = Path::new(&xdg).join("arvados").join(&file);
        if p.exists() {
            return p;
        }
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".config").join("arvados").join(file)
}

/// Whether `-src NAME` names a file in the current directory that NAME did
/// not resolve to (NAME has no `/`, so it was looked up as a config name).
fn local_file_meant(name: &str) -> bool {
    !name.contains('/') && Path::new(name).is_file()
}

/// `1`, `yes`, `true` in any case, as the Go tool's `matchTrue`.
pub fn is_true(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "yes" | "true")
}

/// Load and check the settings file for one side.
pub fn load(name: &str, role: Role) -> Result<Settings> {
    let flag = role.settings_flag();
    if name.is_empty() {
        return Err(Error::config(format!(
            "no {role} settings given: pass {flag} FILE (a path, or NAME for \
             ~/.config/arvados/NAME.conf) holding ARVADOS_API_HOST and ARVADOS_API_TOKEN \
             for the {}.",
            role.cluster()
        )));
    }
    let path = resolve(name);
    let text = std::fs::read(&path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        // `-src src.conf` means ~/.config/arvados/src.conf.conf, as in the Go
        // tool; the admin most likely meant the file right here.
        if e.kind() == std::io::ErrorKind::NotFound && local_file_meant(name) {
            return Error::config(format!(
                "cannot read the {role} settings file {} ({flag} {name}): {why}. A name \
                 without a '/' is looked up in ~/.config/arvados as NAME.conf, as the Go \
                 keep-rsync does; to use the file {name} in this directory, write {flag} ./{name}.",
                path.display()
            ));
        }
        Error::config(format!(
            "cannot read the {role} settings file {} ({flag} {name}): {why}. Create it with \
             ARVADOS_API_HOST=… and ARVADOS_API_TOKEN=… lines, or pass the right path.",
            path.display()
        ))
    })?;
    let text = String::from_utf8(text).map_err(|_| {
        Error::config(format!(
            "the {role} settings file {} is not UTF-8 text: it should hold KEY=VALUE lines.",
            path.display()
        ))
    })?;
    let mut s = parse(&text, &path, role)?;
    check_permissions(&path, &mut s);
    Ok(s)
}

/// Parse settings text (exposed for tests). `path` is only used in messages.
pub fn parse(text: &str, path: &Path, role: Role) -> Result<Settings> {
    let mut s = Settings {
        path: path.to_path_buf(),
        ..Default::default()
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::config(format!(
                "{}:{}: this line of the {role} settings file has no '=': every line must be \
                 KEY=VALUE (or a # comment). Fix or remove line {}.",
                path.display(),
                i + 1,
                i + 1
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "ARVADOS_API_HOST" => s.api_host = value.to_string(),
            "ARVADOS_API_TOKEN" => s.api_token = value.to_string(),
            "ARVADOS_API_HOST_INSECURE" => s.insecure = is_true(value),
            "ARVADOS_BLOB_SIGNING_KEY" => {
                s.blob_signing_key = (!value.is_empty()).then(|| value.to_string())
            }
            "ARVADOS_EXTERNAL_CLIENT" => {}
            other => s.warnings.push(format!(
                "{}:{}: ignoring unknown setting {other}",
                path.display(),
                i + 1
            )),
        }
    }
    if s.api_token.is_empty() {
        return Err(Error::config(format!(
            "the {role} settings file {} has no ARVADOS_API_TOKEN: add the {}'s \
             system root token (keepstore serves indexes to that token only).",
            path.display(),
            role.cluster()
        )));
    }
    if s.api_host.is_empty() {
        return Err(Error::config(format!(
            "the {role} settings file {} has no ARVADOS_API_HOST: add the {}'s API \
             server as host[:port] (it is contacted only when services or defaults must be \
             discovered).",
            path.display(),
            role.cluster()
        )));
    }
    Ok(s)
}

fn check_permissions(path: &Path, s: &mut Settings) {
    if let Some(w) = loose_permissions(path, "holds a token", "run chmod 600") {
        s.warnings.push(w);
    }
}

/// A warning when `path` (which `holds` secrets) is readable by group or
/// others: its mode and what to `run`.
#[cfg(unix)]
pub(crate) fn loose_permissions(path: &Path, holds: &str, run: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} {holds} but is readable by group or others (mode {:03o}): {run} {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
pub(crate) fn loose_permissions(_: &Path, _: &str, _: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_spaces_and_flags() {
        let s = parse(
            "# source\n\n ARVADOS_API_HOST = zzzzz.example:443 \nARVADOS_API_TOKEN=tok=en\n\
             ARVADOS_API_HOST_INSECURE=Yes\nARVADOS_BLOB_SIGNING_KEY=k\nFOO=1\n",
            Path::new("x.conf"),
            Role::Source,
        )
        .unwrap();
        assert_eq!(s.api_host, "zzzzz.example:443");
        assert_eq!(s.api_token, "tok=en");
        assert!(s.insecure);
        assert_eq!(s.blob_signing_key.as_deref(), Some("k"));
        assert_eq!(s.warnings.len(), 1);
        assert!(!format!("{s:?}").contains("tok=en"));
    }

    #[test]
    fn names_file_and_line() {
        let e = parse(
            "ARVADOS_API_TOKEN=x\n\nnonsense\n",
            Path::new("/p/s.conf"),
            Role::Source,
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("/p/s.conf:3:"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse("ARVADOS_API_HOST=h\n", Path::new("a"), Role::Source)
            .err()
            .unwrap();
        assert!(e.to_string().contains("ARVADOS_API_TOKEN"));
        let e = parse("ARVADOS_API_TOKEN=t\n", Path::new("a"), Role::Source)
            .err()
            .unwrap();
        assert!(e.to_string().contains("ARVADOS_API_HOST"));
    }

    #[test]
    fn truthiness() {
        for t in ["1", "yes", "TRUE", "True"] {
            assert!(is_true(t));
        }
        for f in ["0", "no", "", "y"] {
            assert!(!is_true(f));
        }
    }
}
