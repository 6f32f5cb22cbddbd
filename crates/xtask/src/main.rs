//! Release assets of keep-rsync, generated from the code and the lock file,
//! never written by hand, so they cannot drift from the binaries:
//!
//! - man pages of keep-rsync and keep-block-check from their clap
//!   definitions (clap_mangen);
//! - bash, zsh and fish completions from the same definitions (clap_complete);
//! - the licence file: every crate the binaries link (cargo metadata of the
//!   locked dependency graph), its licence, and the licence and notice texts
//!   it ships; a crate whose licence is not on the permissive list below
//!   fails the build, as cargo-deny's licence check would.
//!
//! `scripts/package.sh` runs `cargo run -p xtask -- assets DIR`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::CommandFactory;
use clap_complete::Shell;
use serde_json::Value;

const USAGE: &str = "usage: xtask assets DIR | man DIR | completions DIR | licenses FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["assets", dir] => assets(Path::new(dir)),
        ["man", dir] => man_pages(Path::new(dir)),
        ["completions", dir] => completions(Path::new(dir)),
        ["licenses", file] => licenses(Path::new(file)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}

/// The two programs' clap definitions, by the names they are installed as.
fn programs() -> [(&'static str, clap::Command); 2] {
    [
        ("keep-rsync", keep_rsync::cli::Config::command()),
        (
            "keep-block-check",
            keep_rsync::check::cli::CheckConfig::command(),
        ),
    ]
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Everything the packages install besides the binaries and the units:
/// `DIR/man/*.1`, `DIR/completions/{bash,zsh,fish}/…`, `DIR/copyright`.
fn assets(dir: &Path) -> Result<(), String> {
    man_pages(&dir.join("man"))?;
    completions(&dir.join("completions"))?;
    licenses(&dir.join("copyright"))
}

/// One man page per program: clap_mangen's title, name, synopsis,
/// description, options and version sections, then the text after the
/// options (`after_long_help`) as sections of its own: a paragraph headed
/// by a line like `Exit codes:` becomes that section, kept as laid out (it
/// is a table), and prose paragraphs form NOTES; then SEE ALSO.
fn man_pages(dir: &Path) -> Result<(), String> {
    for (name, cmd) in programs() {
        let after = cmd
            .get_after_long_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        // "keep-rsync: copy …" is the about line; NAME already says the name.
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        let about = about
            .strip_prefix(&format!("{name}: "))
            .unwrap_or(&about)
            .to_string();
        let cmd = cmd.name(name).about(about).after_long_help(None::<&str>);
        let man = clap_mangen::Man::new(cmd)
            .section("1")
            .manual("keep-rsync")
            .source(format!("keep-rsync {}", keep_rsync::VERSION));
        let mut page = Vec::new();
        let failed = |e: io::Error| format!("cannot render the man page of {name}: {e}");
        man.render_title(&mut page).map_err(failed)?;
        man.render_name_section(&mut page).map_err(failed)?;
        man.render_synopsis_section(&mut page).map_err(failed)?;
        man.render_description_section(&mut page).map_err(failed)?;
        man.render_options_section(&mut page).map_err(failed)?;
        page.extend_from_slice(after_help_sections(&after, name).as_bytes());
        man.render_version_section(&mut page).map_err(failed)?;
        write(&dir.join(format!("{name}.1")), &page)?;
    }
    Ok(())
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would
/// read as a request.
fn roff_text(line: &str) -> String {
    let line = line.replace('\\', "\\e").replace('-', "\\-");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

fn after_help_sections(after: &str, name: &str) -> String {
    let mut out = String::new();
    let mut notes = Vec::new();
    for para in after.split("\n\n") {
        let mut lines = para.lines();
        let head = lines.next().unwrap_or("").trim_end();
        let rest: Vec<&str> = lines.collect();
        if head.ends_with(':') && !head.contains(' ') || head == "Exit codes:" {
            out += &format!(
                ".SH \"{}\"\n.nf\n",
                head.trim_end_matches(':').to_uppercase()
            );
            for l in rest {
                out += &roff_text(l);
                out.push('\n');
            }
            out += ".fi\n";
        } else {
            notes.push(para);
        }
    }
    if !notes.is_empty() {
        out += ".SH NOTES\n";
        for para in notes {
            out += ".PP\n";
            for l in para.lines() {
                out += &roff_text(l.trim());
                out.push('\n');
            }
        }
    }
    let other = if name == "keep-rsync" {
        "keep-block-check"
    } else {
        "keep-rsync"
    };
    out += &format!(
        ".SH \"SEE ALSO\"\n\\fB{other}\\fR(1); /usr/share/doc/keep-rsync/ (README.md, \
         operations.md: the cron job and the systemd timer; scale-out.md: the migration runbook; \
         protocol.md; report-schema.md)\n"
    );
    out
}

/// Where each shell's file goes under DIR, named as the distributions'
/// completion directories expect (`bash-completion/completions/NAME`,
/// `zsh/vendor-completions/_NAME`, `fish/vendor_completions.d/NAME.fish`).
fn completions(dir: &Path) -> Result<(), String> {
    for (name, cmd) in programs() {
        for (shell, sub, file) in [
            (Shell::Bash, "bash", name.to_string()),
            (Shell::Zsh, "zsh", format!("_{name}")),
            (Shell::Fish, "fish", format!("{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name, &mut out);
            write(&dir.join(sub).join(file), &out)?;
        }
    }
    Ok(())
}

/// SPDX identifiers a linked crate may be under: permissive licences that
/// ask only for the notice and licence text, which the file carries.
const PERMITTED: &[&str] = &[
    "0BSD",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC0-1.0",
    "CDLA-Permissive-2.0",
    "ISC",
    "MIT",
    "MIT-0",
    "MPL-2.0",
    "OpenSSL",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "Zlib",
];

/// Whether an SPDX expression (`A OR B`, `A AND B`, `(…)`, `A WITH X`, and
/// the old `A/B`) can be met with permitted licences.
fn permitted(expr: &str) -> bool {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    or_expr(&tokens, &mut pos) == Some(true) && pos == tokens.len()
}

// A recursive descent over the tokens; None: not a well-formed expression.
fn or_expr(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut ok = and_expr(t, pos)?;
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        ok |= and_expr(t, pos)?;
    }
    Some(ok)
}

fn and_expr(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut ok = atom(t, pos)?;
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        ok &= atom(t, pos)?;
    }
    Some(ok)
}

fn atom(t: &[&str], pos: &mut usize) -> Option<bool> {
    let tok = *t.get(*pos)?;
    *pos += 1;
    if tok == "(" {
        let ok = or_expr(t, pos)?;
        (t.get(*pos) == Some(&")")).then_some(())?;
        *pos += 1;
        return Some(ok);
    }
    if ["OR", "AND", "WITH", ")"].contains(&tok) {
        return None;
    }
    if t.get(*pos) == Some(&"WITH") {
        t.get(*pos + 1)?;
        *pos += 2; // a licence exception only ever adds permissions
    }
    Some(PERMITTED.contains(&tok.trim_end_matches('+')))
}

/// One linked crate, as cargo metadata describes it.
struct Crate {
    name: String,
    version: String,
    license: String,
    repository: String,
    /// Licence, copying and notice files in the crate's source directory.
    texts: Vec<PathBuf>,
}

fn cargo_metadata() -> Result<Value, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let host = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        })
        .ok_or("cannot ask rustc for the host target (rustc -vV)")?;
    let target = std::env::var("XTASK_TARGET").unwrap_or(host);
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &target])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata's output: {e}"))
}

/// The crates keep-rsync's binaries link: the root package and everything
/// reachable from it through normal (not dev-, not build-) dependencies.
fn linked_crates(meta: &Value) -> Result<Vec<Crate>, String> {
    let packages: HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let root = packages
        .values()
        .find(|p| p["name"] == "keep-rsync")
        .and_then(|p| p["id"].as_str())
        .ok_or("cargo metadata has no keep-rsync package")?;
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata has no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes
            .get(id)
            .and_then(|n| n["deps"].as_array())
            .into_iter()
            .flatten()
        {
            let normal = dep["dep_kinds"]
                .as_array()
                .is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null()));
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                todo.push(pkg);
            }
        }
    }
    let mut crates = Vec::new();
    for id in seen {
        let p = packages
            .get(id)
            .ok_or_else(|| format!("cargo metadata does not describe {id}"))?;
        let text = |k: &str| p[k].as_str().unwrap_or("").to_string();
        let dir = Path::new(p["manifest_path"].as_str().unwrap_or(""))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut texts = licence_files(&dir);
        if let Some(f) = p["license_file"].as_str() {
            let f = dir.join(f);
            if !texts.contains(&f) {
                texts.push(f);
            }
        }
        crates.push(Crate {
            name: text("name"),
            version: text("version"),
            license: text("license"),
            repository: text("repository"),
            texts,
        });
    }
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(crates)
}

fn licence_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_ascii_uppercase();
            [
                "LICENSE",
                "LICENCE",
                "COPYING",
                "COPYRIGHT",
                "NOTICE",
                "UNLICENSE",
            ]
            .iter()
            .any(|k| name.starts_with(k))
        })
        .collect();
    files.sort();
    files
}

fn licenses(file: &Path) -> Result<(), String> {
    let crates = linked_crates(&cargo_metadata()?)?;
    let refused: Vec<String> = crates
        .iter()
        .filter(|c| !permitted(&c.license))
        .map(|c| {
            let l = if c.license.is_empty() {
                "no licence field"
            } else {
                &c.license
            };
            format!("{} {} ({l})", c.name, c.version)
        })
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "these linked crates are not under a permitted licence (crates/xtask, PERMITTED): {}; \
             review the licence and add it to the list, or drop the dependency",
            refused.join(", ")
        ));
    }
    // The same text shipped by many crates is printed once, naming them all.
    let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &crates {
        for path in &c.texts {
            match fs::read_to_string(path) {
                Ok(t) => texts
                    .entry(t.trim_end().to_string())
                    .or_default()
                    .push(format!("{} {}", c.name, c.version)),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            }
        }
    }
    let mut out = format!(
        "keep-rsync {}\n\n\
         keep-rsync and keep-block-check are under the Apache License 2.0 (text below).\n\n\
         The binaries link the {} crates listed here (the workspace's own crates among\n\
         them), each under the licence it declares; their licence and notice files\n\
         follow the list, each text once, with the crates that ship it.\n\n",
        keep_rsync::VERSION,
        crates.len()
    );
    let width = crates
        .iter()
        .map(|c| c.name.len() + c.version.len() + 1)
        .max()
        .unwrap_or(0);
    for c in &crates {
        let nv = format!("{} {}", c.name, c.version);
        out += &format!("  {nv:width$}  {}  {}\n", c.license, c.repository);
        out = out.trim_end_matches(' ').to_string();
        if c.texts.is_empty() {
            out += &format!(
                "  {:width$}  (ships no licence file: the {} text below applies)\n",
                "", c.license
            );
        }
    }
    for (text, owners) in &texts {
        out += &format!("\n\n==== shipped by {} ====\n\n{text}\n", owners.join(", "));
    }
    write(file, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::permitted;

    #[test]
    fn licence_expressions() {
        for ok in [
            "MIT",
            "MIT OR Apache-2.0",
            "MIT/Apache-2.0",
            "(MIT OR Apache-2.0) AND Unicode-3.0",
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT",
            "GPL-3.0 OR MIT",
        ] {
            assert!(permitted(ok), "{ok}");
        }
        for bad in ["", "GPL-3.0", "MIT AND GPL-2.0", "(MIT", "MIT OR"] {
            assert!(!permitted(bad), "{bad}");
        }
    }
}
