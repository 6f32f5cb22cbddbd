//! Scale-out by hash prefix (issue 7): the shard runners in scripts/ run for
//! real against keepstore-sim clusters. GNU parallel (scripts/
//! parallel-prefixes.sh), the Slurm array script (its body with the array
//! variables set, and on a one-node Slurm cluster when slurm is installed and
//! we are root), and the Kubernetes Indexed Job (manifest structure, and its
//! container script run once per completion index).
//!
//! Needs GNU parallel, PyYAML and (as root) Slurm and munge:
//! `INSTALL_SLURM=1 scripts/install-test-deps.sh`. A test whose tool is
//! missing says `SKIPPED <test>: <why>`, and fails under `CI=true`
//! (`common::skip`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use keep_rsync::protocol::BlockHash;
use keepstore_sim::SizeRange;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script_path(rel: &str) -> String {
    repo().join(rel).display().to_string()
}

/// Small blocks and a few of 20–60 KiB: enough for 16 shards, quick to copy.
fn shard_sizes() -> Vec<SizeRange> {
    vec![
        SizeRange { min: 1, max: 4096 },
        SizeRange {
            min: 20 << 10,
            max: 60 << 10,
        },
    ]
}

/// Why GNU parallel cannot be used here, if it cannot (a skip reason).
fn parallel_missing() -> Option<String> {
    match std::process::Command::new("parallel")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Err(e) => Some(format!(
            "GNU parallel is not installed ({e}): run scripts/install-test-deps.sh \
             (or apt-get install parallel)"
        )),
        Ok(o)
            if !(o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("GNU parallel")) =>
        {
            Some(
                "`parallel --version` does not say GNU parallel (moreutils' parallel?): \
                 run scripts/install-test-deps.sh (or apt-get install parallel)"
                    .into(),
            )
        }
        Ok(_) => None,
    }
}

/// Run `program args` with `env`, in `dir`, within 120 s.
async fn run_cmd(program: &str, args: &[String], env: &[(&str, String)], dir: &Path) -> Run {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} finished within 120 s"))
        .unwrap_or_else(|e| panic!("{program} ran: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// scripts/parallel-prefixes.sh with `opts`, then `--`, then `rsync_args`.
async fn parallel_prefixes(p: &Pair, opts: &[&str], rsync_args: &[String], bin: &str) -> Run {
    let mut args = vec![script_path("scripts/parallel-prefixes.sh")];
    args.extend(opts.iter().map(|s| s.to_string()));
    if !rsync_args.is_empty() {
        args.push("--".into());
        args.extend(rsync_args.iter().cloned());
    }
    run_cmd(
        "bash",
        &args,
        &[("KEEP_RSYNC", bin.to_string())],
        p.dir.path(),
    )
    .await
}

fn hex16() -> Vec<String> {
    (0..16).map(|i| format!("{i:x}")).collect()
}

fn starts(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches("=== keep-rsync -prefix")
        .count()
}

/// No token or signing key in any file of `dir`.
fn assert_no_secrets(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for secret in [SRC_TOKEN, DST_TOKEN, SRC_KEY, DST_KEY] {
            assert!(!text.contains(secret), "a secret in {}", path.display());
        }
    }
}

fn total_bytes(blocks: &[(BlockHash, u64)]) -> u64 {
    blocks.iter().map(|(_, s)| s).sum()
}

/// The usual flags plus the replicas wanted.
fn rsync_args(p: &Pair) -> Vec<String> {
    let mut a = p.base_args();
    a.extend(["-replications".to_string(), "2".to_string()]);
    a
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_parallel_shards_equal_a_full_copy_and_a_rerun_redoes_only_the_killed_shard() {
    if let Some(why) = parallel_missing() {
        return skip(
            "sixteen_parallel_shards_equal_a_full_copy_and_a_rerun_redoes_only_the_killed_shard",
            &why,
        );
    }
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(300, &shard_sizes(), 2, 7);
    let (in7, others): (Vec<_>, Vec<_>) =
        blocks.iter().cloned().partition(|(h, _)| h.has_prefix("7"));
    assert!(!in7.is_empty());
    let state = p.path("shards");
    let state_s = state.display().to_string();
    let metrics = p.path("metrics dir");
    std::fs::create_dir_all(&metrics).unwrap();
    let metrics_s = metrics.display().to_string();
    // 2 GiB for the 4 jobs a host runs at once: 512 MiB each.
    let opts = [
        "-j",
        "4",
        "--prefixes",
        "16",
        "--memory",
        "2G",
        "--metrics-dir",
        &metrics_s,
        "--state-dir",
        &state_s,
    ];

    // Run 1: shard 7's keep-rsync is SIGKILLed before it does anything.
    let killer = p.path("kill-7.sh");
    write_exec(
        &killer,
        &format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -prefix ] && [ \"$a\" = 7 ]; then kill -KILL $$; fi\n  prev=$a\ndone\nexec '{}' \"$@\"\n",
            bin()
        ),
    );
    let r = parallel_prefixes(&p, &opts, &rsync_args(&p), &killer.display().to_string()).await;
    r.expect(1);
    assert!(r.stdout.contains("failed shard 7: exit 137"), "{}", r.all());
    for s in hex16() {
        assert_eq!(
            state.join(format!("{s}.done")).exists(),
            s != "7",
            "{s}.done"
        );
        assert_eq!(starts(&state.join(format!("{s}.log"))), 1, "{s}.log");
    }
    assert!(
        r.stdout.contains("--max-memory 512 MiB per shard"),
        "{}",
        r.all()
    );
    // Each shard sized its budgets from its 512 MiB share.
    assert_shards_sized(
        &state,
        512,
        &hex16().into_iter().filter(|s| s != "7").collect::<Vec<_>>(),
    );
    let sum = read_json(&state.join("summary.json"));
    assert_eq!(sum["exit_code"], 1);
    assert_eq!(sum["shards_done"], 15);
    assert_eq!(sum["failed_shards"].as_array().unwrap().len(), 1, "{sum}");
    assert_eq!(sum["failed_shards"][0]["prefix"], "7");
    assert_eq!(sum["failed_shards"][0]["exit_code"], 137);
    assert_eq!(sum["totals"]["copied"], others.len() as u64);
    assert_eq!(sum["totals"]["copied_bytes"], total_bytes(&others));
    assert_eq!(sum["totals"]["failed"], 0);
    p.assert_placed(&others, 2);
    for (h, _) in &in7 {
        assert!(p.dst_holders(h).is_empty(), "{h} copied by a killed shard");
    }

    // Run 2, the real binary: only shard 7 runs; nothing else is written again.
    let r = parallel_prefixes(&p, &opts, &rsync_args(&p), bin()).await;
    r.expect(0);
    assert!(
        r.stdout.contains("1 of 16 shards to run (15 done)"),
        "{}",
        r.all()
    );
    for s in hex16() {
        let want = if s == "7" { 2 } else { 1 };
        assert_eq!(starts(&state.join(format!("{s}.log"))), want, "{s}.log");
        assert!(state.join(format!("{s}.done")).exists(), "{s}.done");
    }
    let sum = read_json(&state.join("summary.json"));
    assert_eq!(sum["exit_code"], 0);
    assert_eq!(sum["ran"], serde_json::json!(["7"]));
    assert_eq!(sum["shards_done"], 16);
    assert_eq!(sum["failed_shards"], serde_json::json!([]));
    assert_eq!(sum["totals"]["copied"], blocks.len() as u64);
    assert_eq!(sum["totals"]["copied_bytes"], total_bytes(&blocks));
    assert_eq!(sum["plan"]["src_blocks"], blocks.len() as u64);
    // Each shard wrote its own metrics file, labelled with its prefix; shard
    // 7's says that its second run succeeded.
    for sh in hex16() {
        let text = std::fs::read_to_string(metrics.join(format!("keep-rsync-{sh}.prom")))
            .unwrap_or_else(|e| panic!("metrics of shard {sh}: {e}"));
        assert!(
            text.contains(&format!(
                "keep_rsync_last_run_exit_code{{prefix=\"{sh}\"}} 0"
            )),
            "shard {sh}: {text}"
        );
        assert!(!text.contains("prefix=\"\""), "shard {sh}: {text}");
    }
    // The union of the shards is the full copy, each block written exactly
    // N times over both runs, each fetched once.
    p.assert_placed(&blocks, 2);
    for (h, _) in &blocks {
        assert_eq!(p.dst.total_puts(h), 2, "PUTs of {h}");
        assert_eq!(p.src.total_gets(h), 1, "GETs of {h}");
    }

    // Run 3: all done, nothing runs, no request to any keepstore.
    p.src.reset_counters();
    p.dst.reset_counters();
    let r = parallel_prefixes(&p, &opts, &rsync_args(&p), bin()).await;
    r.expect(0);
    assert!(
        r.stdout.contains("0 of 16 shards to run (16 done)"),
        "{}",
        r.all()
    );
    assert_eq!(p.total_dst_puts() + p.total_src_gets(), 0);
    for i in 0..p.src.len() {
        assert_eq!(p.src.counters(i).index_requests, 0);
    }
    assert_no_secrets(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_stopped_at_a_window_merge_to_exit_8_below_failed_shards() {
    if let Some(why) = parallel_missing() {
        return skip(
            "shards_stopped_at_a_window_merge_to_exit_8_below_failed_shards",
            &why,
        );
    }
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(160, &shard_sizes(), 2, 9);
    let state = p.path("window-shards");
    let state_s = state.display().to_string();
    let opts = ["-j", "4", "--state-dir", &state_s];
    // A window of one byte: each shard copies one block and stops (exit 8).
    let mut windowed = rsync_args(&p);
    windowed.extend(["--max-transfer".to_string(), "1".to_string()]);
    let r = parallel_prefixes(&p, &opts, &windowed, bin()).await;
    r.expect(8);
    let sum = read_json(&state.join("summary.json"));
    assert_eq!(sum["exit_code"], 8);
    let unfinished = sum["failed_shards"].as_array().unwrap();
    assert_eq!(unfinished.len(), 16, "{sum}");
    for s in unfinished {
        assert_eq!(s["exit_code"], 8, "{s}");
        assert_eq!(s["status"], "stopped_at_limit", "{s}");
    }
    assert!(
        r.stdout
            .contains("unfinished shard 0: exit 8, stopped at --max-transfer: rerun to continue"),
        "{}",
        r.all()
    );
    assert_eq!(sum["totals"]["copied"], 16);

    // A shard that fails outweighs the windows: exit 1.
    let killer = p.path("kill-7.sh");
    write_exec(
        &killer,
        &format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -prefix ] && [ \"$a\" = 7 ]; then kill -KILL $$; fi\n  prev=$a\ndone\nexec '{}' \"$@\"\n",
            bin()
        ),
    );
    let r = parallel_prefixes(&p, &opts, &windowed, &killer.display().to_string()).await;
    r.expect(1);
    assert!(r.stdout.contains("failed shard 7: exit 137"), "{}", r.all());

    // Without the window, the reruns finish every shard.
    let r = parallel_prefixes(&p, &opts, &rsync_args(&p), bin()).await;
    r.expect(0);
    p.assert_placed(&blocks, 2);
    for (h, _) in &blocks {
        assert_eq!(p.dst.total_puts(h), 2, "PUTs of {h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_prefixes_rejects_bad_usage_with_exit_2() {
    let p = Pair::start().await;
    let bad: [(&[&str], &[&str], &str); 8] = [
        (&["--memory", "lots"], &["-replications", "2"], "not a size"),
        (
            &["-j", "50%", "--memory", "2G"],
            &["-replications", "2"],
            "-j as a number",
        ),
        (
            &["--memory", "2G"],
            &["--buffer-memory", "1G"],
            "--memory sizes each shard's budgets",
        ),
        (
            &["--prefixes", "8"],
            &["-replications", "2"],
            "--prefixes must be 16 or 256",
        ),
        (&[], &["-prefix", "3"], "each shard gets its own -prefix"),
        (&[], &["--report=x.json"], "each shard writes"),
        (
            &[],
            &["--metrics-textfile", "m.prom"],
            "give --metrics-dir DIR",
        ),
        (
            &["--bogus"],
            &["-replications", "2"],
            "unknown option --bogus",
        ),
    ];
    for (opts, rargs, msg) in bad {
        let mut ra = p.base_args();
        ra.extend(rargs.iter().map(|s| s.to_string()));
        let mut o = opts.to_vec();
        let state = p.path("bad-state").display().to_string();
        o.extend(["--state-dir", &state]);
        let r = parallel_prefixes(&p, &o, &ra, bin()).await;
        r.expect(2);
        assert!(r.stderr.contains(msg), "{opts:?} {rargs:?}: {}", r.all());
    }
    assert_eq!(p.total_dst_puts(), 0);
}

/// Environment of one Slurm array task, as slurmd sets it (the part the
/// script reads).
fn slurm_task_env(p: &Pair, state: &Path, task: u32) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_ARRAY_TASK_ID", task.to_string()),
        ("SLURM_ARRAY_TASK_MAX", "15".into()),
        ("SLURM_ARRAY_TASK_MIN", "0".into()),
        ("SLURM_ARRAY_JOB_ID", "4242".into()),
        ("SLURM_SUBMIT_DIR", p.dir.path().display().to_string()),
        // What Slurm sets for --mem=512M (in MB).
        ("SLURM_MEM_PER_NODE", "512".into()),
        (
            "KEEP_RSYNC_SETTINGS_DIR",
            p.dir.path().display().to_string(),
        ),
        ("KEEP_RSYNC_STATE_DIR", state.display().to_string()),
        ("KEEP_RSYNC", bin().to_string()),
    ]
}

/// Each listed shard's report shows the budgets keep-rsync derives from a
/// `--max-memory` of `mib` MiB.
fn assert_shards_sized(state: &Path, mib: u64, shards: &[String]) {
    let want = keep_rsync::memory::Budgets::from_total(mib << 20).unwrap();
    for s in shards {
        let rep = read_json(&state.join(format!("{s}.json")));
        assert_eq!(rep["buffer_memory"], want.buffer_memory, "shard {s}");
        assert_eq!(rep["index_budget"], want.index_budget, "shard {s}");
    }
}

/// What every sharded run must leave: all blocks placed once, N PUTs each,
/// and a merged summary saying so.
async fn assert_sharded_copy_complete(p: &Pair, blocks: &[(BlockHash, u64)], state: &Path) {
    p.assert_placed(blocks, 2);
    for (h, _) in blocks {
        assert_eq!(p.dst.total_puts(h), 2, "PUTs of {h}");
    }
    let s = state.display().to_string();
    let r = parallel_prefixes(p, &["--summary", "--state-dir", &s], &[], bin()).await;
    r.expect(0);
    let sum = read_json(&state.join("summary.json"));
    assert_eq!(sum["shards_done"], 16, "{sum}");
    assert_eq!(sum["totals"]["copied"], blocks.len() as u64);
    assert_eq!(sum["totals"]["copied_bytes"], total_bytes(blocks));
    assert_no_secrets(state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_array_script_body_with_array_variables_set() {
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(200, &shard_sizes(), 2, 8);
    let state = p.path("slurm-shards");
    let sbatch = script_path("scripts/slurm/keep-rsync-array.sbatch");
    let extra = ["-replications", "2", "-src-blob-signature-ttl", "336h"];
    let mut args = vec![sbatch.clone()];
    args.extend(extra.iter().map(|s| s.to_string()));
    for task in 0..16 {
        let r = run_cmd(
            "bash",
            &args,
            &slurm_task_env(&p, &state, task),
            p.dir.path(),
        )
        .await;
        r.expect(0);
        assert!(
            r.stdout.contains(&format!("shard {task:x} complete")),
            "{}",
            r.all()
        );
    }
    assert_sharded_copy_complete(&p, &blocks, &state).await;
    // keep-rsync was sized from the task's memory allocation.
    assert_shards_sized(&state, 512, &hex16());
    // A resubmitted task whose shard is done does nothing.
    p.src.reset_counters();
    let r = run_cmd("bash", &args, &slurm_task_env(&p, &state, 3), p.dir.path()).await;
    r.expect(0);
    assert!(r.stdout.contains("already done"), "{}", r.all());
    assert_eq!(p.src.counters(0).index_requests, 0);
    // Task ids outside the prefixes, and no array at all, are usage errors.
    let r = run_cmd("bash", &args, &slurm_task_env(&p, &state, 16), p.dir.path()).await;
    r.expect(2);
    let r = run_cmd("bash", &args, &[], p.dir.path()).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("SLURM_ARRAY_TASK_ID"), "{}", r.all());
}

/// A one-node Slurm cluster (munged, slurmctld, slurmd) in a temp dir,
/// killed on drop.
struct Slurm {
    dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // SIGTERM first: slurmctld then stops its slurmscriptd helper,
        // which a SIGKILL would leave behind.
        for c in self.children.iter_mut().rev() {
            if let Ok(Some(_)) = c.try_wait() {
                continue; // exited already (a port taken, say)
            }
            _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ = c.kill();
            _ = c.wait();
        }
    }
}

/// Why there is no one-node Slurm cluster.
enum SlurmError {
    /// Not root, or a Slurm or munge program is not installed: the test
    /// skips (and fails under CI, which installs them).
    Missing(String),
    /// Installed, but it did not come up: the test fails.
    Failed(String),
}

/// Two distinct TCP ports for slurmctld and slurmd, which (unlike our own
/// servers, which bind port 0 and keep the listener) must be given port
/// numbers in slurm.conf. Picked at random below the kernel's ephemeral
/// range (/proc/sys/net/ipv4/ip_local_port_range), where no `bind(0)` or
/// outgoing connection of the other tests running in parallel can land,
/// and checked free just now. Something else may still bind one of them
/// before the daemon does: `Slurm::start` then starts again on new ports.
fn slurm_ports() -> (u16, u16) {
    let range: Vec<u32> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let (low, high) = match range[..] {
        [low, high] => (low, high),
        _ => (32768, 60999),
    };
    let (lo, hi): (u32, u32) = if low > 12_000 {
        (10_000, low)
    } else if high < 55_000 {
        (high + 1, 65_000)
    } else {
        // The ephemeral range covers (nearly) everything: no port is out
        // of its way, so the retry in `Slurm::start` is all there is.
        (20_000, 60_000)
    };
    let free = |p: u16| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        let p = (rand::random::<u32>() % (hi - lo) + lo) as u16;
        if !ports.contains(&p) && free(p) {
            ports.push(p);
            if ports.len() == 2 {
                return (ports[0], ports[1]);
            }
        }
    }
    panic!("no two free TCP ports in {lo}..{hi}");
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Why one attempt to start the cluster failed.
enum StartError {
    /// A daemon could not bind its port (taken since `slurm_ports`).
    PortTaken(String),
    Other(String),
}

impl Slurm {
    /// Start it, or say why not. Tries new ports up to three times when a
    /// daemon finds its port taken (see `slurm_ports`).
    fn start() -> Result<Slurm, SlurmError> {
        // SAFETY-free check for root: the uid of our own /proc entry.
        let root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        if !root {
            return Err(SlurmError::Missing(
                "not root (slurmd must run jobs as the submitting user)".into(),
            ));
        }
        let mut bins = Vec::new();
        for b in ["munged", "slurmctld", "slurmd", "sbatch", "sinfo"] {
            bins.push(which(b).ok_or_else(|| {
                SlurmError::Missing(format!(
                    "{b} not installed: run INSTALL_SLURM=1 scripts/install-test-deps.sh \
                     (apt-get install slurmctld slurmd slurm-client munge)"
                ))
            })?);
        }
        let mut last = String::new();
        for attempt in 1..=3 {
            match Slurm::start_once(&bins) {
                Ok(s) => return Ok(s),
                Err(StartError::Other(why)) => return Err(SlurmError::Failed(why)),
                Err(StartError::PortTaken(why)) => {
                    eprintln!("slurm, attempt {attempt} of 3: a daemon's port was taken");
                    last = why;
                }
            }
        }
        Err(SlurmError::Failed(format!(
            "slurm found its ports taken 3 times\n{last}"
        )))
    }

    fn start_once(bins: &[PathBuf]) -> Result<Slurm, StartError> {
        let other = |e: std::io::Error| StartError::Other(e.to_string());
        let dir = tempfile::tempdir().map_err(other)?;
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        for sub in ["munge", "state", "spool"] {
            std::fs::create_dir_all(d.join(sub)).map_err(other)?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("munge"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let key: Vec<u8> = (0..1024).map(|_| rand::random::<u8>()).collect();
        std::fs::write(d.join("munge/munge.key"), key).unwrap();
        std::fs::set_permissions(
            d.join("munge/munge.key"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        let host = std::process::Command::new("hostname")
            .arg("-s")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .map_err(other)?;
        let dp = d.display();
        let (ctld_port, d_port) = slurm_ports();
        let conf = format!(
            "ClusterName=keeprsyncci\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/munge\nAuthInfo=socket={dp}/munge/sock\nCredType=cred/munge\n\
             SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\nStateSaveLocation={dp}/state\nSlurmdSpoolDir={dp}/spool\n\
             SlurmctldPidFile={dp}/ctld.pid\nSlurmdPidFile={dp}/d.pid\n\
             SlurmctldLogFile={dp}/ctld.log\nSlurmdLogFile={dp}/d.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n\
             SchedulerType=sched/builtin\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             ReturnToService=2\nMpiDefault=none\nSlurmdParameters=config_overrides\n\
             NodeName=ci1 NodeAddr=127.0.0.1 CPUs=8 RealMemory=32000 State=UNKNOWN\n\
             PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES\n",
        );
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let conf = d.join("slurm.conf");
        let spawn = |bin: &Path, args: &[&str]| {
            std::process::Command::new(bin)
                .args(args)
                .env("SLURM_CONF", &conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| StartError::Other(format!("{}: {e}", bin.display())))
        };
        let mut s = Slurm {
            dir,
            children: Vec::new(),
        };
        let m = |f: &str| d.join("munge").join(f).display().to_string();
        s.children.push(spawn(
            &bins[0],
            &[
                "-F",
                "--force",
                "--socket",
                &m("sock"),
                "--key-file",
                &m("munge.key"),
                "--pid-file",
                &m("pid"),
                "--log-file",
                &m("log"),
                "--seed-file",
                &m("seed"),
            ],
        )?);
        let cs = conf.display().to_string();
        s.children.push(spawn(&bins[1], &["-D", "-i", "-f", &cs])?);
        s.children
            .push(spawn(&bins[2], &["-D", "-f", &cs, "-N", "ci1"])?);
        let log = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        let logs = || {
            format!(
                "--- munged\n{}\n--- slurmctld (port {ctld_port})\n{}\n--- slurmd (port {d_port})\n{}",
                std::fs::read_to_string(m("log")).unwrap_or_default(),
                log("ctld.log"),
                log("d.log")
            )
        };
        let port_taken = || {
            [log("ctld.log"), log("d.log")]
                .iter()
                .any(|l| l.contains("Address already in use"))
        };
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(500));
            // A daemon that exited (slurmctld and slurmd do when they
            // cannot bind their port) will not come up.
            let names = ["munged", "slurmctld", "slurmd"];
            for (c, name) in s.children.iter_mut().zip(names) {
                if let Ok(Some(status)) = c.try_wait() {
                    let why = format!("{name} exited ({status})\n{}", logs());
                    return Err(if port_taken() {
                        StartError::PortTaken(why)
                    } else {
                        StartError::Other(why)
                    });
                }
            }
            let out = std::process::Command::new(&bins[4])
                .args(["-h", "-o", "%T"])
                .env("SLURM_CONF", &conf)
                .output();
            if let Ok(o) = out {
                if String::from_utf8_lossy(&o.stdout).contains("idle") {
                    return Ok(s);
                }
            }
        }
        let why = format!("slurm did not come up in 30 s\n{}", logs());
        Err(if port_taken() {
            StartError::PortTaken(why)
        } else {
            StartError::Other(why)
        })
    }

    fn conf(&self) -> String {
        self.dir.path().join("slurm.conf").display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_array_on_a_one_node_cluster() {
    let slurm = match tokio::task::spawn_blocking(Slurm::start).await.unwrap() {
        Ok(s) => s,
        Err(SlurmError::Missing(why)) => {
            return skip(
                "slurm_array_on_a_one_node_cluster",
                &format!(
                    "{why} (the script body is still tested by \
                     slurm_array_script_body_with_array_variables_set)"
                ),
            );
        }
        Err(SlurmError::Failed(why)) => panic!("one-node Slurm cluster: {why}"),
    };
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(200, &shard_sizes(), 2, 9);
    let state = p.path("slurm-shards");
    let mut env = vec![("SLURM_CONF", slurm.conf())];
    for (k, v) in slurm_task_env(&p, &state, 0) {
        if !k.starts_with("SLURM_") {
            env.push((k, v));
        }
    }
    let args: Vec<String> = [
        "--wait",
        "--parsable",
        "--mem=100M",
        &script_path("scripts/slurm/keep-rsync-array.sbatch"),
        "-replications",
        "2",
        "-src-blob-signature-ttl",
        "336h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sbatch = which("sbatch").unwrap().display().to_string();
    let r = run_cmd(&sbatch, &args, &env, p.dir.path()).await;
    let outs: Vec<String> = std::fs::read_dir(p.dir.path())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".out").then(|| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                )
            })
        })
        .collect();
    assert_eq!(r.code, 0, "sbatch --wait: {}\n{}", r.all(), outs.join("\n"));
    assert_eq!(outs.len(), 16, "one output file per array task");
    let done: BTreeSet<String> = hex16()
        .into_iter()
        .filter(|s| state.join(format!("{s}.done")).exists())
        .collect();
    assert_eq!(done.len(), 16, "{done:?}");
    assert_sharded_copy_complete(&p, &blocks, &state).await;
    drop(slurm);
}

/// The manifest as JSON values (one per YAML document), via PyYAML: the
/// .venv's python (scripts/install-test-deps.sh puts PyYAML there), else
/// python3 from PATH. `Err` says why neither has PyYAML (a skip reason); a
/// python that has it but cannot parse the manifest fails the test.
fn k8s_manifest() -> Result<Vec<Value>, String> {
    let path = script_path("scripts/kubernetes/keep-rsync-indexed-job.yaml");
    let venv = repo().join(".venv/bin/python").display().to_string();
    let code = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)";
    let mut tried = Vec::new();
    for py in [venv.as_str(), "python3"] {
        let out = match std::process::Command::new(py)
            .args(["-c", code, &path])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                tried.push(format!("{py}: {e}"));
                continue;
            }
        };
        if out.status.success() {
            let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON from PyYAML");
            return Ok(docs);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named"),
            "{py} could not parse {path}: {err}"
        );
        tried.push(format!("{py}: no module yaml"));
    }
    Err(format!(
        "no python with PyYAML ({}): run scripts/install-test-deps.sh \
         (or apt-get install python3-yaml)",
        tried.join("; ")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_indexed_job_manifest_is_well_formed_and_its_pods_copy_every_shard() {
    let docs = match k8s_manifest() {
        Ok(docs) => docs,
        Err(why) => {
            return skip(
                "kubernetes_indexed_job_manifest_is_well_formed_and_its_pods_copy_every_shard",
                &why,
            )
        }
    };
    let job = docs
        .iter()
        .find(|d| d["kind"] == "Job")
        .expect("a Job document");
    assert_eq!(job["apiVersion"], "batch/v1");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 16);
    assert!(spec["parallelism"].as_u64().unwrap() >= 1);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    assert_eq!(env("KEEP_RSYNC_PREFIXES").as_deref(), Some("16"));
    // Settings from a Secret, mounted read-only with mode 0400.
    let settings_dir = env("KEEP_RSYNC_SETTINGS_DIR").unwrap();
    let state_dir = env("KEEP_RSYNC_STATE_DIR").unwrap();
    let vol_of = |mount: &str| {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount)
            .unwrap_or_else(|| panic!("a volume mounted at {mount}"));
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("volume {}", m["name"]))
            .clone()
    };
    let secret = vol_of(&settings_dir);
    assert!(secret["secret"]["secretName"].is_string(), "{secret}");
    assert_eq!(secret["secret"]["defaultMode"], 0o400);
    let shards = vol_of(&state_dir);
    let claim = shards["persistentVolumeClaim"]["claimName"].as_str();
    assert!(
        claim.is_some() || shards["emptyDir"].is_object(),
        "{shards}"
    );
    if let Some(claim) = claim {
        assert!(
            docs.iter()
                .any(|d| d["kind"] == "PersistentVolumeClaim" && d["metadata"]["name"] == claim),
            "the claim {claim} is defined"
        );
    }
    // Resources: one core; memory requested = limit, and the limit reaches
    // keep-rsync (downward API) so that it sizes its budgets to fit.
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_string())
        .collect();
    let limit = c["resources"]["limits"]["memory"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(c["resources"]["requests"]["memory"], limit.as_str());
    let limit_mib: u64 = limit
        .strip_suffix("Mi")
        .expect("memory in Mi")
        .parse()
        .unwrap();
    let field = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "KEEP_RSYNC_MEMORY_MIB")
        .expect("KEEP_RSYNC_MEMORY_MIB in env")["valueFrom"]["resourceFieldRef"]
        .clone();
    assert_eq!(field["resource"], "limits.memory", "{field}");
    assert_eq!(field["divisor"], "1Mi", "{field}");
    assert_eq!(field["containerName"], c["name"], "{field}");
    assert_eq!(c["resources"]["requests"]["cpu"], "1");
    assert!(
        !args
            .iter()
            .any(|a| a.contains("prefix") || a.contains("report")),
        "{args:?}"
    );

    // The container's command, run once per completion index, with the
    // mounts replaced by directories here: the union is a full copy.
    let command: Vec<String> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(command[..2], ["/bin/sh".to_string(), "-c".to_string()]);
    let p = Pair::start().await;
    let blocks = p.src.seed_blocks(200, &shard_sizes(), 2, 10);
    let state = p.path("k8s-shards");
    let mut argv = command[1..].to_vec();
    argv.extend(args.iter().cloned());
    // The manifest's args are empty (the cluster configs give everything);
    // here the sides are the Pair's settings files and the sim has no API
    // server for discovery: give the TTL and the replicas as extra flags.
    argv.extend([
        "-src-blob-signature-ttl".into(),
        "336h".into(),
        "-replications".into(),
        "2".into(),
    ]);
    for i in 0..16 {
        let env = vec![
            ("JOB_COMPLETION_INDEX", i.to_string()),
            ("KEEP_RSYNC_PREFIXES", "16".into()),
            (
                "KEEP_RSYNC_SETTINGS_DIR",
                p.dir.path().display().to_string(),
            ),
            ("KEEP_RSYNC_STATE_DIR", state.display().to_string()),
            ("KEEP_RSYNC", bin().to_string()),
            ("KEEP_RSYNC_MEMORY_MIB", limit_mib.to_string()),
        ];
        let r = run_cmd("/bin/sh", &argv, &env, p.dir.path()).await;
        r.expect(0);
        assert!(state.join(format!("{i:x}.done")).exists(), "{}", r.all());
    }
    assert_sharded_copy_complete(&p, &blocks, &state).await;
    assert_shards_sized(&state, limit_mib, &hex16());
}
