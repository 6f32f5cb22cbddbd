//! What a new user sees (issue 12): on a terminal, keep-rsync draws nothing
//! before there is work (no empty `0/0` bars, nothing above a settings
//! error), and a settings file named like `-src src.conf` that is in the
//! current directory is pointed out when the Go-style lookup misses it.
//!
//! Terminal tests run keep-rsync under a pseudo-terminal with util-linux
//! `script` and read the captured screen; without `script` they skip.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// `s` quoted for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The captured terminal output without escape sequences and carriage
/// returns: what is left on screen, line by line (bars redraw in place, so
/// every state a bar was drawn in appears).
fn screen_text(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

/// Why `script` (util-linux) cannot give us a terminal, if it cannot.
fn script_missing() -> Option<String> {
    match std::process::Command::new("script")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("util-linux") => None,
        Ok(_) => Some("`script` is not util-linux's script".into()),
        Err(e) => Some(format!(
            "util-linux `script` is not installed ({e}): apt-get install bsdutils"
        )),
    }
}

/// Run keep-rsync with `args` on a 120×20 pseudo-terminal in `dir`; returns
/// the exit code and the raw terminal output.
async fn on_a_terminal(args: &[String], dir: &Path) -> (i32, String) {
    let mut cmd = format!("stty cols 120 rows 20; exec {}", sh_quote(bin()));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&sh_quote(a));
    }
    cmd.push_str(" --retry-backoff 5ms");
    let out = tokio::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("keep-rsync under script finished within 120 s")
        .expect("script ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_error_on_a_terminal_prints_the_error_line_alone() {
    if let Some(why) = script_missing() {
        return skip(
            "a_settings_error_on_a_terminal_prints_the_error_line_alone",
            &why,
        );
    }
    let p = Pair::start().await;
    let mut args = p.base_args();
    args[1] = p.path("missing.conf").display().to_string();
    args.extend(["-replications".into(), "2".into()]);
    let (code, raw) = on_a_terminal(&args, p.dir.path()).await;
    assert_eq!(code, 2, "{raw}");
    let screen = screen_text(&raw);
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "only the error line is shown:\n{screen}");
    assert!(
        lines[0].starts_with("error: cannot read the source settings file"),
        "{screen}"
    );
    assert!(lines[0].contains("missing.conf"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_appear_only_once_there_is_work() {
    if let Some(why) = script_missing() {
        return skip("bars_appear_only_once_there_is_work", &why);
    }
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(60, &sizes(), 2, 121);
    let mut args = p.base_args();
    args.extend(["-replications".into(), "2".into()]);
    let (code, raw) = on_a_terminal(&args, p.dir.path()).await;
    assert_eq!(code, 0, "{raw}");
    p.assert_placed(&blocks, 2);
    let screen = screen_text(&raw);
    assert!(!screen.contains("0/0"), "an empty bar was drawn:\n{screen}");
    assert!(screen.contains("/60 blocks"), "no blocks bar:\n{raw}");
    assert!(screen.contains("keep-rsync complete"), "{screen}");
    // The summary is the last thing on screen: no bar is left below it.
    let last = screen.lines().rev().find(|l| !l.trim().is_empty());
    assert!(
        last.is_some_and(|l| l.trim_start().starts_with("elapsed:")),
        "{screen}"
    );

    // A rerun with nothing to copy never shows the blocks bar.
    let (code, raw) = on_a_terminal(&args, p.dir.path()).await;
    assert_eq!(code, 0, "{raw}");
    let screen = screen_text(&raw);
    assert!(!screen.contains("0/0"), "an empty bar was drawn:\n{screen}");
    assert!(!screen.contains(" blocks\n"), "a blocks bar:\n{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_file_in_the_current_directory_is_pointed_out() {
    let p = Pair::start().await;
    p.src.seed_blocks(3, &small(), 1, 122);
    let home = p.path("home");
    std::fs::create_dir_all(&home).unwrap();
    // src.conf sits in the current directory; `-src src.conf` resolves, as
    // the Go tool does, to ~/.config/arvados/src.conf.conf.
    let mut args = p.base_args();
    args[1] = "src.conf".into();
    args.extend(["-replications".into(), "1".into()]);
    let run = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(&args)
            .current_dir(p.dir.path())
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        async move { cmd.output().await.expect("keep-rsync ran") }
    };
    let out = run(args.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".config/arvados/src.conf.conf"), "{stderr}");
    assert!(stderr.contains("write -src ./src.conf"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(p.total_dst_puts(), 0);

    // Without such a file the message is the usual one.
    args[1] = "nosuch".into();
    let out = run(args.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("./nosuch"), "{stderr}");

    // As suggested: ./src.conf works.
    args[1] = "./src.conf".into();
    let out = run(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_print_whole_lines_above_the_bars() {
    if let Some(why) = script_missing() {
        return skip("diagnostics_print_whole_lines_above_the_bars", &why);
    }
    let p = Pair::start().await;
    p.src.seed_blocks(60, &sizes(), 2, 123);
    // 503s and some latency: retries while the bars are up.
    set_all(
        &p.src,
        &faults(|f| {
            f.fail_rate = 0.3;
            f.latency_ms = 5;
        }),
    );
    let mut args = p.base_args();
    args.extend(["-replications", "2", "-v", "--transfers", "4"].map(String::from));
    let (code, raw) = on_a_terminal(&args, p.dir.path()).await;
    assert_eq!(code, 0, "{raw}");
    let screen = screen_text(&raw);
    let diag: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains("retrying in"))
        .collect();
    assert!(!diag.is_empty(), "no retry line:\n{screen}");
    for l in diag {
        // Each starts at the left margin with its timestamp: no bar drawn
        // into it.
        assert!(
            l.len() > 20 && l.starts_with("20") && &l[4..5] == "/" && l[20..].starts_with(" INFO"),
            "a torn diagnostic line: {l:?}\n{screen}"
        );
    }
}
