//! What every stderr line needs, below the reporters (progress)
//! and the diagnostics (logging): levels, timestamps, human units,
//! and messages from code that has no reporter at hand (a command line that
//! does not parse, the failure spill file). A leaf module: everything that
//! writes to stderr may use it without importing the reporters.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::SystemTime;

use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

/// Whether stderr lines are JSON (`--log-format json`): for the rare messages
/// written where no reporter is at hand.
static JSON_LINES: AtomicBool = AtomicBool::new(false);

/// One message for stderr from code that has no reporter: before one exists
/// (a command line that does not parse) or deep in a module (the failure
/// spill file). `json`: the caller knows the format (`None`: as the reporter
/// was chosen). Text form: `keep-rsync: warning: …` (the program's name). `exit_code` is added
/// to the JSON object when the message ends the run.
pub fn log_without_reporter(json: Option<bool>, level: Level, msg: &str, exit_code: Option<u8>) {
    let line = if json.unwrap_or_else(|| JSON_LINES.load(Relaxed)) {
        let mut v = json!({"time": timestamp_rfc3339(), "level": level.as_str(), "msg": msg, "event": "log"});
        if let (Some(code), Some(obj)) = (exit_code, v.as_object_mut()) {
            obj.insert("exit_code".into(), code.into());
        }
        format!("{v}\n")
    } else {
        let tag = match level {
            Level::Info => "",
            Level::Warn => "warning: ",
            Level::Error => "",
        };
        format!("{}: {tag}{msg}\n", PROGRAM.get().unwrap_or(&"keep-rsync"))
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The program messages without a reporter are signed with.
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Sign messages without a reporter with `name` (default `keep-rsync`).
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// Make [`log_without_reporter`] write JSON lines (`--log-format json`).
pub fn set_json_lines(on: bool) {
    JSON_LINES.store(on, Relaxed);
}

/// `2026/11/22 03:42:55`, UTC, like Go's log prefix.
pub fn timestamp() -> String {
    let t = timestamp_rfc3339();
    format!("{} {}", t[..10].replace('-', "/"), &t[11..19])
}

/// `2026-11-22T03:42:55Z`: the JSON lines' `time`.
pub fn timestamp_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `1.5 GiB`-style byte counts.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `2h3m4s`-style durations, as Go prints them (whole seconds).
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let t = secs.round() as u64;
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_go_and_rfc3339_shaped() {
        let go = super::timestamp();
        let rfc = super::timestamp_rfc3339();
        assert_eq!(go.len(), 19, "{go}");
        assert_eq!(&go[4..5], "/");
        assert_eq!(&go[10..11], " ");
        assert_eq!(rfc.len(), 20, "{rfc}");
        assert!(rfc.ends_with('Z') && &rfc[10..11] == "T", "{rfc}");
    }
}
