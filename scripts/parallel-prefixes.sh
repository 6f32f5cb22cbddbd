#!/usr/bin/env bash
# Run keep-rsync as 16 or 256 hash-prefix shards with GNU parallel, locally or
# across hosts, then merge the shards' JSON reports into one summary.
#
#   scripts/parallel-prefixes.sh [-j N] [-S HOSTS] [--prefixes 16|256]
#                                [--memory SIZE] [--metrics-dir DIR] [--state-dir DIR]
#                                [--force] [--return]
#                                -- KEEP_RSYNC_ARGS...
#   scripts/parallel-prefixes.sh --summary [--prefixes 16|256] [--state-dir DIR]
#
# KEEP_RSYNC_ARGS are keep-rsync's own flags (-src, -dst, -replications, ...)
# without -prefix and --report: this script adds `-prefix P -q --report
# DIR/P.json` to each shard. keep-rsync is found on PATH unless $KEEP_RSYNC
# names it (with -S: the same path on every host).
#
# State directory (default ./keep-rsync-shards), per shard P:
#   P.log   keep-rsync's output (appended, one header line per attempt)
#   P.json  keep-rsync's JSON report of the latest attempt (docs/report-schema.md)
#   P.rc    keep-rsync's exit code of the latest attempt
#   P.done  written when the attempt exited 0 with report status "complete"
# plus joblog (GNU parallel's, appended) and summary.json (the merge).
#
# Rerunning skips shards with P.done (unless --force) and re-does every other
# one: failed, interrupted, killed, never started. The destination index is
# keep-rsync's checkpoint, so a re-done shard copies only what is still missing.
#
# Options:
#   -j N              jobs at once (per host with -S); default 4. Anything GNU
#                     parallel's --jobs takes (e.g. 50%, +0).
#   -S HOSTS          GNU parallel --sshlogin: comma-separated hosts (":" is
#                     this host, "4/host" caps jobs on it, ".." reads
#                     ~/.parallel/sshloginfile). keep-rsync, the settings and
#                     services files, and DIR must exist at the same paths on
#                     every host. Nothing is transferred to the hosts.
#   --prefixes 16|256 shard by the first 1 or 2 hex digits (default 16).
#   --memory SIZE     memory for all the jobs running at once on one host
#                     (e.g. 8G; K/M/G/T = KiB/MiB/GiB/TiB): each shard gets
#                     keep-rsync --max-memory SIZE/N, N the -j number, which
#                     sizes its --buffer-memory and --index-budget so that its
#                     peak RSS stays under that share (docs/scale-out.md,
#                     "Memory"). Without it each shard uses keep-rsync's
#                     defaults (about 300 MiB, 370 MiB at worst).
#   --metrics-dir DIR each shard writes Prometheus metrics for node_exporter's
#                     textfile collector to DIR/keep-rsync-P.prom (keep-rsync
#                     --metrics-textfile; docs/operations.md). One file per
#                     prefix, so do not pass --metrics-textfile yourself.
#   --state-dir DIR   default ./keep-rsync-shards.
#   --force           re-run every shard, even those marked done.
#   --return          with -S when DIR is not on a shared filesystem: have GNU
#                     parallel copy each shard's P.json, P.log, P.rc back with
#                     rsync (needs rsync on both ends).
#   --summary         run nothing: merge the state directory (e.g. filled by
#                     the Slurm array or the Kubernetes Indexed Job).
#
# Exit code: 0 when every shard is done. Otherwise the most severe shard exit
# code, in this order: 2 (usage/config: every shard would fail the same way),
# 3 (a service or index unreadable), 130 (interrupted), 1 (some blocks failed,
# or the shard was killed, never ran, or left no report), 8 (a shard stopped
# at --max-duration or --max-transfer: the window ended, a rerun continues).
# 130 also when this script itself was interrupted. 2 for this script's own
# usage errors.
set -euo pipefail

prog=${0##*/}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

die() {
    printf '%s: %s\n' "$prog" "$1" >&2
    exit "${2:-2}"
}

jobs=4
hosts=
nprefixes=16
state_dir=./keep-rsync-shards
force=0
memory=
metrics_dir=
want_return=0
summary_only=0
saw_dashdash=0
while [ $# -gt 0 ]; do
    case $1 in
        -j | --jobs)
            [ $# -ge 2 ] || die "$1 needs a value"
            jobs=$2
            shift 2
            ;;
        -j?*) jobs=${1#-j}; shift ;;
        --jobs=*) jobs=${1#--jobs=}; shift ;;
        -S | --sshlogin)
            [ $# -ge 2 ] || die "$1 needs a value"
            hosts=$2
            shift 2
            ;;
        --sshlogin=*) hosts=${1#--sshlogin=}; shift ;;
        --prefixes)
            [ $# -ge 2 ] || die "$1 needs a value"
            nprefixes=$2
            shift 2
            ;;
        --prefixes=*) nprefixes=${1#--prefixes=}; shift ;;
        --state-dir)
            [ $# -ge 2 ] || die "$1 needs a value"
            state_dir=$2
            shift 2
            ;;
        --state-dir=*) state_dir=${1#--state-dir=}; shift ;;
        --memory)
            [ $# -ge 2 ] || die "$1 needs a value"
            memory=$2
            shift 2
            ;;
        --memory=*) memory=${1#--memory=}; shift ;;
        --metrics-dir)
            [ $# -ge 2 ] || die "$1 needs a value"
            metrics_dir=$2
            shift 2
            ;;
        --metrics-dir=*) metrics_dir=${1#--metrics-dir=}; shift ;;
        --force) force=1; shift ;;
        --return) want_return=1; shift ;;
        --summary) summary_only=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) saw_dashdash=1; shift; break ;;
        *) die "unknown option $1 (keep-rsync's flags go after --; see --help)" ;;
    esac
done
args=("$@")

case $nprefixes in
    16) fmt=%x ;;
    256) fmt=%02x ;;
    *) die "--prefixes must be 16 or 256, not $nprefixes" ;;
esac
if [ "$summary_only" = 0 ]; then
    [ "$saw_dashdash" = 1 ] || die "missing -- KEEP_RSYNC_ARGS (e.g. -- -src src.conf -dst dst.conf -replications 2)"
    [ "${#args[@]}" -gt 0 ] || die "no keep-rsync flags after --"
    for a in "${args[@]}"; do
        case $a in
            -prefix | --prefix | -prefix=* | --prefix=*)
                die "do not pass $a: each shard gets its own -prefix" ;;
            -report | --report | -report=* | --report=*)
                die "do not pass $a: each shard writes DIR/PREFIX.json" ;;
            -metrics-textfile | --metrics-textfile | -metrics-textfile=* | --metrics-textfile=*)
                die "do not pass $a: the shards would overwrite one file; give --metrics-dir DIR (each shard writes DIR/keep-rsync-PREFIX.prom)" ;;
            -max-memory* | --max-memory* | -buffer-memory* | --buffer-memory* | -index-budget* | --index-budget*)
                [ -z "$memory" ] || die "do not pass $a with --memory: --memory sizes each shard's budgets" ;;
        esac
    done
    if [ -n "$memory" ]; then
        [[ $jobs =~ ^[0-9]+$ ]] && [ "$jobs" -gt 0 ] ||
            die "--memory needs -j as a number of jobs (not $jobs): each job gets SIZE/N"
        per_job=$(python3 - "$memory" "$jobs" <<'PY'
import re, sys
m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:i?B)?\s*", sys.argv[1], re.I)
if not m:
    sys.exit("bad size %r: write e.g. 8G" % sys.argv[1])
total = float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())
print(int(total) // int(sys.argv[2]))
PY
        ) || die "--memory $memory: not a size (write e.g. 8G)"
        # keep-rsync checks that the share holds at least one 64 MiB block.
        args+=(--max-memory "$per_job")
        printf '%s: --memory %s over %s jobs: --max-memory %s MiB per shard\n' \
            "$prog" "$memory" "$jobs" "$((per_job >> 20))"
    fi
    command -v parallel >/dev/null 2>&1 ||
        die "GNU parallel is not installed (Debian/Ubuntu: apt-get install parallel; or run scripts/install-test-deps.sh)"
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to merge the shards' reports"

mkdir -p -- "$state_dir"
state=$(cd -- "$state_dir" && pwd -P)

# One run per state directory at a time.
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$state/.lock"
    flock -n 9 || die "another $prog run is using $state"
fi

prefixes=()
for ((i = 0; i < nprefixes; i++)); do
    # shellcheck disable=SC2059 # fmt is %x or %02x, chosen above
    prefixes+=("$(printf "$fmt" "$i")")
done

interrupted=0
: >"$state/.ran"
if [ "$summary_only" = 0 ]; then
    bin=${KEEP_RSYNC:-keep-rsync}
    if [ -z "$hosts" ] && ! command -v -- "$bin" >/dev/null 2>&1; then
        die "keep-rsync not found: put it on PATH or set KEEP_RSYNC=/path/to/keep-rsync"
    fi
    pending=()
    for p in "${prefixes[@]}"; do
        if [ "$force" = 1 ]; then
            rm -f -- "$state/$p.done"
        fi
        if [ ! -e "$state/$p.done" ]; then
            pending+=("$p")
        fi
    done
    printf '%s: %d of %d shards to run (%d done), state in %s\n' \
        "$prog" "${#pending[@]}" "$nprefixes" "$((nprefixes - ${#pending[@]}))" "$state"
    if [ "${#pending[@]}" -gt 0 ]; then
        printf '%s\n' "${pending[@]}" >"$state/.ran"
        # One POSIX-sh command line per shard; every word is quoted here, and
        # GNU parallel replaces {} with the (hex, quote-free) prefix.
        qs=$(printf '%q' "$state")
        qcmd=$(printf ' %q' "$bin" "${args[@]}")
        shard="mkdir -p $qs && rm -f $qs/{}.json $qs/{}.rc $qs/{}.done"
        shard+=" && { echo \"=== keep-rsync -prefix {} started \$(date -u +%Y-%m-%dT%H:%M:%SZ) on \$(hostname)\" >>$qs/{}.log;"
        metrics=
        if [ -n "$metrics_dir" ]; then
            metrics=" --metrics-textfile $(printf '%q' "$metrics_dir")/keep-rsync-{}.prom"
        fi
        shard+="$qcmd -prefix {} -q --report $qs/{}.json$metrics </dev/null >>$qs/{}.log 2>&1;"
        shard+=" rc=\$?; echo \$rc >$qs/{}.rc; exit \$rc; }"
        popts=(--jobs "$jobs" --joblog "+$state/joblog")
        if [ -n "$hosts" ]; then
            popts+=(--sshlogin "$hosts")
            if [ "$want_return" = 1 ]; then
                popts+=(--return "$state/{}.json" --return "$state/{}.log" --return "$state/{}.rc")
            fi
        fi
        trap 'interrupted=1' INT TERM
        set +e
        parallel "${popts[@]}" "$shard" ::: "${pending[@]}"
        set -e
        trap - INT TERM
    fi
fi

# Merge: mark finished shards done, total every shard's latest report, write
# summary.json, print the summary, and exit with the rule above.
set +e
python3 - "$state" "$nprefixes" "$interrupted" "${prefixes[@]}" <<'PY'
import json, os, sys, time

state, nprefixes, interrupted = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
prefixes = sys.argv[4:]
with open(os.path.join(state, ".ran")) as f:
    ran = set(f.read().split())

SUM = ["copied", "copied_bytes", "topped_up", "topped_up_bytes", "replicas_written",
       "bytes_written", "verified", "verify_bad", "repaired", "failed", "failed_bytes"]
PLAN = ["src_blocks", "src_bytes", "dst_blocks", "dst_bytes", "present", "present_bytes",
        "to_copy", "to_copy_bytes", "to_top_up", "to_top_up_bytes"]
# 8 (a cron window ended, the rerun continues) is the least severe failure.
SEVERITY = [2, 3, 130, 1, 8]

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def read_rc(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None

totals = {k: 0 for k in SUM}
plan = {k: 0 for k in PLAN}
shards, failed_shards = [], []
done_n = dry_n = 0
elapsed_max = 0.0
for p in prefixes:
    rep = load(os.path.join(state, p + ".json"))
    rc = read_rc(os.path.join(state, p + ".rc"))
    marker = os.path.join(state, p + ".done")
    if rep is not None and rep.get("prefix") != p:
        rep = None  # not this shard's report: ignore it
    status = rep.get("status") if rep else None
    ok = rc == 0 and rep is not None and status == "complete" and rep.get("exit_code") == 0
    if ok and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    done = os.path.exists(marker)
    row = {"prefix": p, "ran": p in ran, "done": done, "status": status, "exit_code": rc}
    if rep:
        for k in SUM:
            totals[k] += int(rep.get(k) or 0)
        for k in PLAN:
            plan[k] += int((rep.get("plan") or {}).get(k) or 0)
        elapsed_max = max(elapsed_max, float(rep.get("elapsed_seconds") or 0))
        row.update({k: rep.get(k) for k in ("copied", "copied_bytes", "topped_up", "failed", "elapsed_seconds")})
        if rep.get("error"):
            row["error"] = rep["error"]
    if done:
        done_n += 1
    elif status == "dry_run" and rc == 0:
        dry_n += 1
    else:
        if rc is None:
            why = "no exit code (killed, or never started)"
        elif rep is None:
            why = "no report (see %s.log)" % p
        elif status == "stopped_at_limit":
            why = "stopped at %s: rerun to continue" % (
                "--" + (rep.get("limit_reached") or "limit").replace("_", "-"))
        else:
            why = status or "bad report"
        row["why"] = why
        failed_shards.append({"prefix": p, "exit_code": rc, "status": status, "why": why})
    shards.append(row)

if not failed_shards:
    code = 0
else:
    # Any other code (killed: 137; none; 0 without a complete report) is 1.
    codes = {s["exit_code"] if s["exit_code"] in SEVERITY else 1 for s in failed_shards}
    code = next(c for c in SEVERITY if c in codes)
if interrupted and code != 0:
    code = 130

summary = {
    "schema_version": 1,
    "state_dir": state,
    "prefixes": nprefixes,
    "shards_done": done_n,
    "shards_dry_run": dry_n,
    "shards_failed": len(failed_shards),
    "ran": sorted(ran),
    "failed_shards": failed_shards,
    "exit_code": code,
    "totals": totals,
    "plan": plan,
    "max_shard_elapsed_seconds": round(elapsed_max, 3),
    "shards": shards,
}
tmp = os.path.join(state, "summary.json.tmp")
with open(tmp, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
os.replace(tmp, os.path.join(state, "summary.json"))

def human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%d %s" % (n, unit) if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024.0

print("shards: %d of %d done, %d failed, %d run now%s" % (
    done_n, nprefixes, len(failed_shards), len(ran),
    ", %d dry runs" % dry_n if dry_n else ""))
print("planned: %d to copy (%s), %d to top up" % (
    plan["to_copy"], human(plan["to_copy_bytes"]), plan["to_top_up"]))
print("copied: %d blocks (%s), topped up: %d, failed blocks: %d (%s)" % (
    totals["copied"], human(totals["copied_bytes"]), totals["topped_up"],
    totals["failed"], human(totals["failed_bytes"])))
for s in failed_shards:
    print("%s shard %s: exit %s, %s" % (
        "unfinished" if s["status"] == "stopped_at_limit" else "failed",
        s["prefix"], "?" if s["exit_code"] is None else s["exit_code"], s["why"]))
print("summary: %s; exit %d" % (os.path.join(state, "summary.json"), code))
sys.exit(code)
PY
code=$?
exit "$code"
