#!/usr/bin/env bash
# Benchmarks of issue 4 (docs/benchmarks.md). Builds release binaries, starts
# its own keepstore-sim clusters on 127.0.0.1 (ephemeral ports), runs:
#
#   1. latency-bound copy: 2000 blocks of 1-16 KiB, 4+4 services, 10 ms per
#      request, 2 replicas: keep-rsync --transfers 1 vs the default;
#   2. bandwidth-bound copy: 48 blocks of 16-64 MiB, 4+4 services, 2 replicas:
#      keep-rsync (default transfers) vs `keepstore-sim rawcopy` (the same
#      GETs and PUTs, no planning, no verification) at the same concurrency,
#      plus the MD5 speed of one core; scenarios 1 and 2 also run the
#      default "observed" (-v, JSON logs, metrics textfile and endpoint);
#   3. index scale: --dry-run over 4+4 synthetic services (each block on 2
#      source services, 90 % at the destination) at 10^6, 10^7, 3*10^7 and
#      10^8 blocks;
#   4. memory: 24 blocks of 64 MiB, 2 replicas, default flags: keep-rsync
#      before issue 10 (built from $BENCH_BASELINE, default fc569a8) vs now,
#      with streamed writes (the default) and with --no-streaming;
#   5. a slow link: 12 blocks of 64 MiB, every GET and PUT body at 32 MiB/s
#      (keepstore-sim --link-rate): streamed vs buffered writes, and before;
#   6. 16 prefix jobs on one host (scripts/parallel-prefixes.sh -j 16) over
#      96 blocks of 64 MiB (--seed-shared-data source, --discard-data
#      destination, so the simulators stay small): total peak RSS of all
#      jobs, before, with defaults, and with --memory 4G;
#   7. keep-block-check over 10^6 listed blocks (a 4-service synthetic
#      cluster's indexes, so every block is found): index mode vs --probe
#      (signed HEADs, default --transfers), and --probe --transfers 1 (one
#      block at a time, as the Go tool asks) over the -prefix 0 share;
#
# then rewrites docs/benchmarks.md (scripts/bench-report.py) from the raw
# results it saves in docs/bench/last-full.json.
#
#   scripts/bench.sh            scenarios 1-7, median of BENCH_RUNS (3) runs
#                               (about 16 min on 2 cores)
#   scripts/bench.sh --sweep    scenarios 1 and 2 once per --transfers in
#                               16 32 64 128 256 (docs/bench/last-sweep.json)
#   scripts/bench.sh --quick    one run each, smaller scale (a smoke test;
#                               does not touch docs/)
#
# Environment: BENCH_RUNS (default 3), BENCH_BIG (3e7- and 1e8-block runs:
# 1 = yes, default 1), BENCH_BASELINE (git ref of the "before" binary;
# default fc569a8, main before the byte budget; built once into
# target/bench-baseline), BENCH_KEEP=1 keeps the work directory,
# BENCH_SCENARIOS="3 7" runs only those scenarios (2 includes md5-speed),
# CARGO_TARGET_DIR as cargo reads it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=full
case "${1:-}" in
    --sweep) MODE=sweep ;;
    --quick) MODE=quick ;;
    "") ;;
    *) echo "usage: $0 [--sweep|--quick]" >&2; exit 2 ;;
esac
RUNS=${BENCH_RUNS:-3}
BIG=${BENCH_BIG:-1}
[ "$MODE" = quick ] && RUNS=1

if [ ! -x /usr/bin/time ]; then
    echo "bench: GNU time is needed (apt-get install -y time)" >&2
    exit 2
fi

T_START=$(date +%s.%N)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: cargo build --release" >&2
cargo build --workspace --release --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
KR=$BIN/keep-rsync
KBC=$BIN/keep-block-check
SIM=$BIN/keepstore-sim

# want N: scenario N is to run (all, unless BENCH_SCENARIOS lists some).
want() { [ -z "${BENCH_SCENARIOS:-}" ] || [[ " $BENCH_SCENARIOS " == *" $1 "* ]]; }

# The "before" binary: keep-rsync at $BENCH_BASELINE, built once (its own
# target directory; a stamp file says which commit it is).
BASE_REF=${BENCH_BASELINE:-fc569a8}
BASE_DIR=$ROOT/target/bench-baseline
KR_BASE=$BASE_DIR/release/keep-rsync
base_commit=$(git rev-parse --verify --quiet "$BASE_REF^{commit}" || true)
if ! { want 4 || want 5 || want 6; }; then
    KR_BASE= # only scenarios 4-6 compare with it
elif [ -z "$base_commit" ]; then
    echo "bench: BENCH_BASELINE=$BASE_REF is not a commit here: no before/after rows" >&2
    KR_BASE=
elif [ ! -x "$KR_BASE" ] || [ "$(cat "$BASE_DIR/stamp" 2>/dev/null)" != "$base_commit" ]; then
    echo "bench: building the baseline keep-rsync at $BASE_REF" >&2
    rm -rf "$BASE_DIR/src"
    mkdir -p "$BASE_DIR"
    git worktree add --detach --force "$BASE_DIR/src" "$base_commit" >/dev/null
    (cd "$BASE_DIR/src" && CARGO_TARGET_DIR=$BASE_DIR cargo build --release --quiet --bin keep-rsync)
    git worktree remove --force "$BASE_DIR/src"
    echo "$base_commit" >"$BASE_DIR/stamp"
fi

W=$(mktemp -d /tmp/keep-rsync-bench.XXXXXX)
RES=$W/results.jsonl
: >"$RES"
declare -A SIM_PID=()

cleanup() {
    for name in "${!SIM_PID[@]}"; do
        kill -TERM "${SIM_PID[$name]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

# start_sim NAME ARGS...: start a cluster, wait for its services file.
start_sim() {
    local name=$1
    shift
    rm -f "$W/$name.json" "$W/$name.conf"
    "$SIM" --root-token "tok-$name" --services-json "$W/$name.json" \
        --settings-file "$W/$name.conf" "$@" 2>>"$W/$name.log" &
    SIM_PID[$name]=$!
    local i
    for i in $(seq 1 1200); do
        [ -s "$W/$name.json" ] && return 0
        if ! kill -0 "${SIM_PID[$name]}" 2>/dev/null; then
            echo "bench: keepstore-sim $name exited:" >&2
            cat "$W/$name.log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "bench: keepstore-sim $name did not start in 60 s" >&2
    exit 1
}

stop_sim() {
    local name=$1
    if [ -n "${SIM_PID[$name]:-}" ]; then
        kill -TERM "${SIM_PID[$name]}" 2>/dev/null || true
        wait "${SIM_PID[$name]}" 2>/dev/null || true
        unset "SIM_PID[$name]"
    fi
}

now() { date +%s.%N; }

# measure TAG CMD...: run CMD under GNU time; append one JSON line to $RES
# with wall, user, sys, peak RSS and the command's stdout (if JSON).
measure() {
    local tag=$1
    shift
    local t0 t1 rc=0
    t0=$(now)
    /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" "$@" >"$W/out.txt" 2>"$W/err.txt" || rc=$?
    t1=$(now)
    python3 - "$tag" "$t0" "$t1" "$rc" "$W/time.txt" "$W/out.txt" "$W/report.json" "$W" "$ROOT" "$*" >>"$RES" <<'EOF'
import json, sys
tag, t0, t1, rc, timef, outf, repf, work, root, cmd = sys.argv[1:]
e, u, s, m = open(timef).read().split()[-4:]
row = dict(json.loads(tag), wall=float(t1) - float(t0), user=float(u), sys=float(s),
           maxrss_kib=int(m), rc=int(rc),
           cmd=cmd.replace(work, "$W").replace(root + "/", ""))
try:
    row["stdout"] = json.loads(open(outf).read())
except Exception:
    pass
if row.get("tool", "").startswith("keep-rsync"):
    try:
        r = json.load(open(repf))
        row["report"] = {k: r.get(k) for k in ("status", "elapsed_seconds", "index_lines",
                         "index_bytes", "copied", "copied_bytes", "replicas_written",
                         "bytes_written", "failed", "buffer_memory", "index_budget", "passes")}
        row["report"]["plan"] = {k: r["plan"][k] for k in ("src_blocks", "dst_blocks",
                                 "present", "to_copy", "to_copy_bytes", "to_top_up")}
    except Exception as ex:
        row["report_error"] = str(ex)
if row.get("tool", "").startswith("keep-block-check"):
    try:
        r = json.load(open(repf))
        row["report"] = {k: r.get(k) for k in ("status", "mode", "elapsed_seconds", "attempts",
                         "successes", "errors", "passes", "index_lines", "index_bytes")}
        row["report"]["requests"] = sum(s["requests"] for s in r["services"])
    except Exception as ex:
        row["report_error"] = str(ex)
print(json.dumps(row))
EOF
    if [ "$rc" != 0 ]; then
        echo "bench: $tag exited $rc:" >&2
        tail -5 "$W/err.txt" >&2
    fi
    tail -1 "$RES" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("bench: %-70s wall %6.2fs cpu %6.2fs rss %7.1f MiB" % (json.dumps({k:v for k,v in r.items() if k in ("scenario","tool","transfers","blocks","run")}), r["wall"], r["user"]+r["sys"], r["maxrss_kib"]/1024))' >&2
}

rsync_cmd() { # SRC DST extra args...
    local s=$1 d=$2
    shift 2
    rm -f "$W/report.json"
    echo "$KR" -src "$W/$s.conf" -dst "$W/$d.conf" \
        -src-keep-services-json "$W/$s.json" -dst-keep-services-json "$W/$d.json" \
        -replications 2 --quiet --report "$W/report.json" "$@"
}

# Scenarios 1 and 2 also run the default once more "observed" (issue 12):
# -v diagnostics as JSON lines, the metrics textfile rewritten every second
# and the /metrics endpoint open, against the same clusters.
OBSERVED="-v --log-format json --metrics-textfile $W/metrics.prom --metrics-interval 1s --metrics-addr 127.0.0.1:0"

# ---------------------------------------------------------------- scenario 1
S1_BLOCKS=2000
[ "$MODE" = quick ] && S1_BLOCKS=300
scenario1() { # TRANSFERS... (one run per value per round; RUNS rounds)
    local rounds=$1
    shift
    start_sim s1src --services 4 --uuid-prefix srca1 --latency-ms 10 \
        --seed-blocks $S1_BLOCKS --seed-sizes 1K-16K --seed-replicas 2 --seed 1
    local run t
    for run in $(seq 1 "$rounds"); do
        for t in "$@"; do
            start_sim s1dst --services 4 --uuid-prefix dsta1 --latency-ms 10
            rm -f "$W/report.json"
            # shellcheck disable=SC2046
            measure "{\"scenario\":1,\"tool\":\"keep-rsync\",\"transfers\":$t,\"blocks\":$S1_BLOCKS,\"run\":$run}" \
                $(rsync_cmd s1src s1dst --transfers "$t")
            stop_sim s1dst
            if [ "$t" = "$DEFAULT_T" ]; then
                start_sim s1dst --services 4 --uuid-prefix dsta1 --latency-ms 10
                # shellcheck disable=SC2046
                measure "{\"scenario\":1,\"tool\":\"keep-rsync-observed\",\"transfers\":$t,\"blocks\":$S1_BLOCKS,\"run\":$run}" \
                    $(rsync_cmd s1src s1dst --transfers "$t" $OBSERVED)
                stop_sim s1dst
            fi
        done
    done
    stop_sim s1src
}

# ---------------------------------------------------------------- scenario 2
S2_BLOCKS=48
S2_SIZES=16M-64M
[ "$MODE" = quick ] && S2_BLOCKS=12
scenario2() { # ROUNDS TRANSFERS...
    local rounds=$1
    shift
    start_sim s2src --services 4 --uuid-prefix srcb2 \
        --seed-blocks $S2_BLOCKS --seed-sizes $S2_SIZES --seed-replicas 1 --seed 2
    local run t
    for run in $(seq 1 "$rounds"); do
        for t in "$@"; do
            start_sim s2dst --services 4 --uuid-prefix dstb2
            # shellcheck disable=SC2046
            measure "{\"scenario\":2,\"tool\":\"keep-rsync\",\"transfers\":$t,\"blocks\":$S2_BLOCKS,\"run\":$run}" \
                $(rsync_cmd s2src s2dst --transfers "$t")
            stop_sim s2dst
            if [ "$t" = "$DEFAULT_T" ]; then
                start_sim s2dst --services 4 --uuid-prefix dstb2
                # shellcheck disable=SC2046
                measure "{\"scenario\":2,\"tool\":\"keep-rsync-observed\",\"transfers\":$t,\"blocks\":$S2_BLOCKS,\"run\":$run}" \
                    $(rsync_cmd s2src s2dst --transfers "$t" $OBSERVED)
                stop_sim s2dst
            fi
            start_sim s2dst --services 4 --uuid-prefix dstb2
            measure "{\"scenario\":2,\"tool\":\"rawcopy\",\"transfers\":$t,\"blocks\":$S2_BLOCKS,\"run\":$run}" \
                "$SIM" rawcopy --src-services-json "$W/s2src.json" --dst-services-json "$W/s2dst.json" \
                --src-token tok-s2src --dst-token tok-s2dst --replicas 2 --concurrency "$t"
            stop_sim s2dst
        done
    done
    stop_sim s2src
}

md5_speed() {
    measure '{"scenario":2,"tool":"md5-speed"}' "$SIM" md5-speed --rounds 16
}

# ---------------------------------------------------------------- scenario 3
scenario3() { # BLOCKS ROUNDS
    local n=$1 rounds=$2 run
    start_sim s3src --services 4 --uuid-prefix srcc3 --synthetic-blocks "$n" \
        --synthetic-seed 3 --synthetic-replicas 2 --synthetic-fraction 1.0
    start_sim s3dst --services 4 --uuid-prefix dstc3 --synthetic-blocks "$n" \
        --synthetic-seed 3 --synthetic-replicas 2 --synthetic-fraction 0.9
    for run in $(seq 1 "$rounds"); do
        # shellcheck disable=SC2046
        measure "{\"scenario\":3,\"tool\":\"keep-rsync\",\"blocks\":$n,\"run\":$run}" \
            $(rsync_cmd s3src s3dst --dry-run)
    done
    stop_sim s3src
    stop_sim s3dst
}

# ---------------------------------------------------------------- scenario 4
# 64 MiB blocks at default flags: before (the baseline binary) and now, with
# streamed and with buffered writes.
S4_BLOCKS=24
[ "$MODE" = quick ] && S4_BLOCKS=8
# which_bin TOOL: the binary and extra flags of a before/streamed/buffered row.
which_bin() {
    case $1 in
        before) echo "$KR_BASE" ;;
        streamed) echo "$KR" ;;
        buffered) echo "$KR --no-streaming" ;;
    esac
}
scenario_big() { # SCENARIO NAME ROUNDS NBLOCKS SIM-FLAGS...
    local sc=$1 name=$2 rounds=$3 n=$4 run tool
    shift 4
    start_sim "${name}src" --services 4 --uuid-prefix "${name}src" "$@" \
        --seed-blocks "$n" --seed-sizes 64M --seed-replicas 1 --seed "$sc"
    for run in $(seq 1 "$rounds"); do
        for tool in before streamed buffered; do
            [ "$tool" != before ] || [ -n "$KR_BASE" ] || continue
            start_sim "${name}dst" --services 4 --uuid-prefix "${name}dst" "$@"
            local cmd
            # shellcheck disable=SC2046
            cmd=$(KR=$(which_bin $tool) rsync_cmd "${name}src" "${name}dst")
            # shellcheck disable=SC2086
            measure "{\"scenario\":$sc,\"tool\":\"keep-rsync-$tool\",\"blocks\":$n,\"run\":$run}" $cmd
            stop_sim "${name}dst"
        done
    done
    stop_sim "${name}src"
}
scenario4() { scenario_big 4 s4 "$1" "$S4_BLOCKS"; }

# ---------------------------------------------------------------- scenario 5
# A slow link: every body at 32 MiB/s, so a block's read and its writes take
# time in proportion to its size; streamed writes overlap them.
S5_BLOCKS=12
[ "$MODE" = quick ] && S5_BLOCKS=4
scenario5() { scenario_big 5 s5 "$1" "$S5_BLOCKS" --link-rate 32M; }

# ---------------------------------------------------------------- scenario 6
# 16 prefix jobs at once on this host, through scripts/parallel-prefixes.sh.
# Each job runs under GNU time (its own peak RSS); a sampler adds up the RSS
# of every keep-rsync process 5 times a second (the host's real total).
S6_BLOCKS=96
[ "$MODE" = quick ] && S6_BLOCKS=32
scenario6() {
    if ! command -v parallel >/dev/null 2>&1; then
        echo "bench: GNU parallel is not installed: scenario 6 skipped (apt-get install parallel)" >&2
        return 0
    fi
    local variant bin opts
    start_sim s6src --services 4 --uuid-prefix s6src --seed-shared-data \
        --seed-blocks $S6_BLOCKS --seed-sizes 64M --seed-replicas 1 --seed 6
    for variant in before defaults memory4G; do
        bin=$KR
        opts=(-j 16)
        case $variant in
            before) [ -n "$KR_BASE" ] || continue; bin=$KR_BASE ;;
            memory4G) opts+=(--memory 4G) ;;
        esac
        start_sim s6dst --services 4 --uuid-prefix s6dst --discard-data
        rm -rf "$W/s6state" "$W/s6rss"
        mkdir -p "$W/s6rss"
        printf '%s\n' '#!/bin/sh' \
            '# keep-rsync under GNU time: its peak RSS goes to $S6RSS/PREFIX' \
            'p=x; prev=' \
            'for a in "$@"; do [ "$prev" = -prefix ] && p=$a; prev=$a; done' \
            'exec /usr/bin/time -f %M -o "$S6RSS/$p" "$S6BIN" "$@"' >"$W/s6wrap.sh"
        chmod +x "$W/s6wrap.sh"
        echo 0 >"$W/s6peak"
        (
            set +euo pipefail # no keep-rsync running is not an error here
            peak=0
            while :; do
                t=$(ps -C keep-rsync -o rss= | awk '{s += $1} END {print s + 0}')
                if [ "$t" -gt "$peak" ]; then peak=$t; echo "$peak" >"$W/s6peak"; fi
                sleep 0.2
            done
        ) &
        local sampler=$! t0 t1 rc=0
        t0=$(now)
        S6RSS=$W/s6rss S6BIN=$bin KEEP_RSYNC=$W/s6wrap.sh scripts/parallel-prefixes.sh \
            "${opts[@]}" --state-dir "$W/s6state" -- \
            -src "$W/s6src.conf" -dst "$W/s6dst.conf" \
            -src-keep-services-json "$W/s6src.json" -dst-keep-services-json "$W/s6dst.json" \
            -replications 2 >"$W/out.txt" 2>"$W/err.txt" || rc=$?
        t1=$(now)
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        python3 scripts/bench-jobs.py "$variant" "$t0" "$t1" "$rc" "$W" "${opts[*]}" >>"$RES"
        tail -1 "$RES" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("bench: scenario 6 %-9s wall %6.2fs  jobs %d  sum of peaks %6.0f MiB  sampled total %6.0f MiB  copied %d  rc %d" % (r["tool"], r["wall"], r["jobs"], r["sum_of_peaks_kib"]/1024, r["sampled_total_kib"]/1024, r["copied"], r["rc"]))' >&2
        stop_sim s6dst
    done
    stop_sim s6src
}

# ---------------------------------------------------------------- scenario 7
# keep-block-check over S7_BLOCKS listed blocks: every service's index of a
# synthetic cluster (each block on 2 of 4 services), concatenated, so the
# list has each block twice and every one is found. Index mode asks 4
# indexes (plus the sizing probe); --probe asks a HEAD per block through its
# probe order (the simulator answers a synthetic block's HEAD with its size).
S7_BLOCKS=1000000
[ "$MODE" = quick ] && S7_BLOCKS=100000
scenario7() { # ROUNDS
    local rounds=$1 run mode url
    start_sim s7 --services 4 --uuid-prefix chk07 --synthetic-blocks $S7_BLOCKS \
        --synthetic-seed 7 --synthetic-replicas 2 --synthetic-fraction 1.0
    for url in $(python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["items"]:
    print("http://%s:%d" % (s["service_host"], s["service_port"]))' "$W/s7.json"); do
        curl -sf -H "Authorization: Bearer tok-s7" "$url/index/"
    done | awk 'NF { print $1 }' >"$W/s7-list.txt"
    for run in $(seq 1 "$rounds"); do
        for mode in index probe probe1; do
            local flags=()
            case $mode in
                probe) flags=(--probe) ;;
                probe1) flags=(--probe --transfers 1 -prefix 0) ;;
            esac
            rm -f "$W/report.json"
            measure "{\"scenario\":7,\"tool\":\"keep-block-check-$mode\",\"blocks\":$S7_BLOCKS,\"run\":$run}" \
                "$KBC" -config "$W/s7.conf" -keep-services-json "$W/s7.json" \
                -block-hash-file "$W/s7-list.txt" --report "$W/report.json" "${flags[@]}"
        done
    done
    stop_sim s7
}

DEFAULT_T=$(sed -n 's/^pub const DEFAULT_TRANSFERS: usize = \([0-9]*\);/\1/p' src/cli.rs)
case $MODE in
    full)
        want 2 && md5_speed
        want 3 && scenario3 10000000 "$RUNS"
        want 3 && scenario3 1000000 1
        want 3 && [ "$BIG" = 1 ] && scenario3 30000000 1
        want 3 && [ "$BIG" = 1 ] && scenario3 100000000 1
        want 2 && scenario2 "$RUNS" "$DEFAULT_T"
        want 1 && scenario1 "$RUNS" 1 "$DEFAULT_T"
        want 4 && scenario4 "$RUNS"
        want 5 && scenario5 "$RUNS"
        want 6 && scenario6
        want 7 && scenario7 "$RUNS"
        ;;
    sweep)
        scenario1 1 16 32 64 128 256
        scenario2 1 16 32 64 128 256
        ;;
    quick)
        want 2 && md5_speed
        want 3 && scenario3 1000000 1
        want 2 && scenario2 1 "$DEFAULT_T"
        want 1 && scenario1 1 1 "$DEFAULT_T"
        want 4 && scenario4 1
        want 5 && scenario5 1
        want 6 && scenario6
        want 7 && scenario7 1
        ;;
esac
T_END=$(date +%s.%N)

# Load while we ran (others' builds make numbers noisy).
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$MODE" "$T_START" "$T_END" "$LOAD" "$DEFAULT_T" "$RES" "$LOAD_START" >"$W/run.json" <<'EOF'
import json, sys, os, platform, subprocess, datetime
mode, t0, t1, load, deft, res, load0 = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
print(json.dumps({
    "mode": mode,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "seconds": float(t1) - float(t0),
    "load_after": load,
    "load_before": load0,
    "machine": {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / 2**20, 1),
                "kernel": platform.release()},
    "commit": rev + ("+dirty" if dirty else ""),
    "default_transfers": int(deft),
    "rows": [json.loads(l) for l in open(res)],
}, indent=1))
EOF
case $MODE in
    full) mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-full.json ;;
    sweep) mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-sweep.json ;;
    quick) cp "$W/run.json" "$W/quick.json" ;;
esac
if [ "$MODE" = quick ]; then
    python3 scripts/bench-report.py --stdout "$W/quick.json"
else
    python3 scripts/bench-report.py >docs/benchmarks.md
    echo "bench: wrote docs/benchmarks.md" >&2
fi
python3 -c 'import sys; print("bench: total %.0f s" % (float(sys.argv[2]) - float(sys.argv[1])))' "$T_START" "$T_END" >&2
