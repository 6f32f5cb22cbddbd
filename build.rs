//! Build script: records the git commit the binaries are built from, for
//! `keep-rsync -version` and `keep-block-check -version` (and so for the
//! packages, which say the same). `KEEP_RSYNC_GIT_COMMIT` in the environment
//! wins (a build from a release tarball has no .git); outside a git checkout
//! it is "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEEP_RSYNC_GIT_COMMIT");
    let commit = match std::env::var("KEEP_RSYNC_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a branch switch or a
            // detached checkout), the branch's ref, and packed refs.
            for file in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--git-path", file]) {
                    if Path::new(&p).exists() {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
            }
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
                    if Path::new(&p).exists() {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=KEEP_RSYNC_GIT_COMMIT={commit}");
}
