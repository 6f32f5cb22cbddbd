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
#   8. (only with --stores) stores: keepstore Directory volumes and S3
#      buckets (one versitygw on 127.0.0.1, posix backend on the work
#      directory's disk), 16 blocks of 64 MiB and 4000 blocks of 4-64 KiB:
#      keep-rsync (PrefixLength 0 and 3) vs rclone, directory to bucket and
#      back, and keep-rsync between two 1-service keepstore-sim clusters on
#      the same disk; client and server CPU, host iowait, every copy counted;
#   9. (only with --concurrency) adaptive per-service concurrency against
#      fixed limits: a) latency-bound, 2000 blocks of 1-16 KiB, 2+4 services
#      at 10 and at 50 ms per request: default flags vs --transfers 1 and the
#      old default (--fixed-concurrency --max-per-service 16); b) one job
#      into a small keepstore (1 service, 32 requests at once, 503 beyond,
#      slower with load), 3000 blocks of 4-64 KiB: default flags vs
#      --fixed-concurrency --max-per-service K, K = 8 ... 128; c) 16 prefix
#      jobs at once into that keepstore (4000 blocks): default flags, fixed
#      128 and fixed 16; the destination's 503s sampled every 0.5 s;
#  10. (only with --collections) collection records: --dry-run over 4+4
#      synthetic services (10^7 blocks, 90 % at the destination) from the
#      clusters' config.yml files, with --blocks-from each of: the plain
#      list of every block's locator, the same blocks as manifests (psql
#      -At of manifest_text, collections of 100 blocks, a tenth of them
#      repeated in second collections), and those collections as psql CSV
#      records (replication and storage classes per collection); wall, CPU
#      and peak RSS of each;
#  14. (only with --latency) small blocks over long links: 3,000 blocks of
#      4 KiB, 2 source + 3 destination services, default flags, at 0, 20 and
#      100 ms added round trip, on keepstore-sim (--latency-ms) and on real
#      keepstores behind `keepstore-sim lag` (scripts/bench-latency.py);
#  15. (only with --azure: scripts/bench-azure.sh) Azure Blob volumes on
#      Azurite: directory -> container -> directory, 64 MiB and 4 KiB
#      blocks, keep-rsync against rclone's azureblob backend;
#  11. (only with --dist) release builds: the binaries of `--profile dist`
#      (what scripts/package.sh ships: fat LTO, one codegen unit, stripped)
#      against `--release`, their sizes, and the same three runs with each,
#      interleaved: 16 blocks of 64 MiB (2 replicas, peak RSS), 20000 blocks
#      of 1-4 KiB (per-request work) and a --dry-run of 10^7 synthetic
#      blocks (index parsing, sort, diff);
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
#   scripts/bench.sh --stores   scenario 8 only (docs/bench/last-stores.json,
#                               then docs/benchmarks.md; about 7 min on 2
#                               cores, BENCH_S8_BIG=12 saves about one);
#                               with --quick: one round of tiny data sets,
#                               printed, does not touch docs/
#   scripts/bench.sh --collections
#                               scenario 10 only (docs/bench/last-collections.json,
#                               then docs/benchmarks.md; about 5 min on 2
#                               cores); with --quick: 10^6 blocks, printed
#   scripts/bench.sh --dist     scenario 11 only (docs/bench/last-dist.json,
#                               then docs/benchmarks.md; about 4 min on 2
#                               cores plus the dist build); with --quick:
#                               smaller sets, printed, does not touch docs/
#   scripts/bench.sh --azure    scenario 15 only (scripts/bench-azure.sh:
#                               docs/bench/last-azure.json, then
#                               docs/benchmarks.md; needs root, Azurite and
#                               rclone, ~3 min); with --quick: printed
#   scripts/bench.sh --latency  scenario 14 only (docs/bench/last-latency.json,
#                               then docs/benchmarks.md; real keepstores from
#                               $REAL_KEEPSTORE, default
#                               /work/real-keepstore-bin/keepstore, skipped
#                               with a message where absent)
#   scripts/bench.sh --concurrency
#                               scenario 9 only (docs/bench/last-concurrency.json,
#                               then docs/benchmarks.md; BENCH_S9="b c" runs
#                               only those parts); with --quick: one round of
#                               tiny data sets, printed, does not touch docs/
#
# Environment: BENCH_RUNS (default 3), BENCH_BIG (3e7- and 1e8-block runs:
# 1 = yes, default 1), BENCH_BASELINE (git ref of the "before" binary;
# default fc569a8, main before the byte budget; built once into
# target/bench-baseline), BENCH_KEEP=1 keeps the work directory,
# BENCH_SCENARIOS="3 7" runs only those scenarios (2 includes md5-speed),
# BENCH_S8_BIG (blocks of 64 MiB in scenario 8's "big" set, default 16),
# BENCH_S9 (parts of scenario 9 to run, default "a b c"),
# CARGO_TARGET_DIR as cargo reads it. Scenario 8 needs .tools/bin/versitygw
# and rclone (scripts/install-test-deps.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=full
QUICK=0
usage() { echo "usage: $0 [--azure [--quick]|--s3-listing [--quick]|--sweep|--quick|--stores [--quick]|--concurrency [--quick]|--collections [--quick]|--dist [--quick]|--mounts [--quick]|--latency [--quick]]" >&2; exit 2; }
for arg in "$@"; do
    case $arg in
        # Scenario 13, S3 bucket listings: its own script.
        --s3-listing) shift; exec "$(dirname "$0")/bench-s3-listing.sh" "$@" ;;
        # Scenario 15, Azure Blob volumes against rclone: its own script.
        --azure) shift; exec "$(dirname "$0")/bench-azure.sh" "$@" ;;
        --sweep) [ "$MODE" = full ] || usage; MODE=sweep ;;
        --stores) [ "$MODE" = full ] || usage; MODE=stores ;;
        --concurrency) [ "$MODE" = full ] || usage; MODE=concurrency ;;
        --collections) [ "$MODE" = full ] || usage; MODE=collections ;;
        --dist) [ "$MODE" = full ] || usage; MODE=dist ;;
        --mounts) [ "$MODE" = full ] || usage; MODE=mounts ;;
        --latency) [ "$MODE" = full ] || usage; MODE=latency ;;
        --quick) QUICK=1 ;;
        *) usage ;;
    esac
done
case $MODE/$QUICK in
    full/1) MODE=quick ;;
    sweep/1) usage ;;
esac
RUNS=${BENCH_RUNS:-3}
BIG=${BENCH_BIG:-1}
[ "$MODE" = quick ] && RUNS=1
[ "$MODE" = stores ] && [ "$QUICK" = 1 ] && RUNS=${BENCH_RUNS:-1}
[ "$MODE" = concurrency ] && [ "$QUICK" = 1 ] && RUNS=${BENCH_RUNS:-1}
[ "$MODE" = collections ] && [ "$QUICK" = 1 ] && RUNS=${BENCH_RUNS:-1}
[ "$MODE" = dist ] && [ "$QUICK" = 1 ] && RUNS=${BENCH_RUNS:-1}
[ "$MODE" = mounts ] && [ "$QUICK" = 1 ] && RUNS=${BENCH_RUNS:-1}
[ "$MODE" = latency ] && [ "$QUICK" = 1 ] && RUNS=${BENCH_RUNS:-1}

if [ ! -x /usr/bin/time ]; then
    echo "bench: GNU time is needed (apt-get install -y time)" >&2
    exit 2
fi
GW=$ROOT/.tools/bin/versitygw
if [ "$MODE" = stores ]; then
    if ! "$GW" --version >/dev/null 2>&1; then
        echo "bench: --stores needs $GW (scripts/install-test-deps.sh)" >&2
        exit 2
    fi
    if ! command -v rclone >/dev/null 2>&1; then
        echo "bench: --stores needs rclone (apt-get install -y rclone)" >&2
        exit 2
    fi
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
if [ "$MODE" = stores ] || [ "$MODE" = concurrency ] || [ "$MODE" = collections ] || [ "$MODE" = dist ] || [ "$MODE" = mounts ] || [ "$MODE" = latency ] || ! { want 4 || want 5 || want 6; }; then
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
    local i tries=${START_TRIES:-1200} # 60 s, or START_TRIES / 20
    for i in $(seq 1 "$tries"); do
        [ -s "$W/$name.json" ] && return 0
        if ! kill -0 "${SIM_PID[$name]}" 2>/dev/null; then
            echo "bench: keepstore-sim $name exited:" >&2
            cat "$W/$name.log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "bench: keepstore-sim $name did not start in $((tries / 20)) s" >&2
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
    # Scenario 8: CPU ticks of the servers in $MEASURE_PIDS, and the host's
    # CPU line of /proc/stat, just before and after (outside the wall time).
    if [ -n "${MEASURE_PIDS:-}" ]; then
        # shellcheck disable=SC2086
        cpu_ticks $MEASURE_PIDS >"$W/pids0"
        head -1 /proc/stat >"$W/stat0"
    fi
    t0=$(now)
    /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" "$@" >"$W/out.txt" 2>"$W/err.txt" || rc=$?
    t1=$(now)
    if [ -n "${MEASURE_PIDS:-}" ]; then
        head -1 /proc/stat >"$W/stat1"
        # shellcheck disable=SC2086
        cpu_ticks $MEASURE_PIDS >"$W/pids1"
    fi
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
        row["report"]["plan"] = {k: r["plan"].get(k) for k in ("src_blocks", "dst_blocks",
                                 "present", "to_copy", "to_copy_bytes", "to_top_up", "listed",
                                 "lost", "under_replicated", "per_replication", "per_class")}
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
    tail -1 "$RES" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("bench: %-70s wall %6.2fs cpu %6.2fs rss %7.1f MiB" % (json.dumps({k:v for k,v in r.items() if k in ("scenario","tool","transfers","dir","data","blocks","run")}), r["wall"], r["user"]+r["sys"], r["maxrss_kib"]/1024))' >&2
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

# ---------------------------------------------------------------- scenario 8
# Stores (bench.sh --stores only): keepstore Directory volumes and S3
# buckets, all on 127.0.0.1. One versitygw (posix backend: a bucket is a
# directory of $W/s8/gw, an object a file) on the work directory's disk.
# Two data sets made once by keepstore-sim's seeding into a directory store
# (random bytes named by MD5, keepstore's layout SRC/xyz/HASH): "big", 64 MiB
# blocks, and "small", 4000 blocks of 4-64 KiB. Every round copies each set
#   dir -> bucket: keep-rsync (PrefixLength 0 and 3), rclone (its best flags;
#                  in round 1 also its defaults);
#   bucket -> dir: keep-rsync from both of its buckets, rclone from its own
#                  (keys xyz/HASH, the PrefixLength 3 layout);
#   sim -> sim:    keep-rsync between two 1-service keepstore-sim clusters
#                  whose directory stores are on the same disk (the source's
#                  store is the data set itself), -replications 1;
# each into a fresh empty bucket or directory, deleted afterwards. Around
# each copy: the servers' CPU time (/proc/PID/stat), the host's CPU and
# iowait (/proc/stat), then `sync -f` (how long the written data still took
# to reach the disk) and a count of what arrived (names and sizes of every
# block, markers of keep-rsync's buckets; MD5 of every block with --quick,
# of two per copy otherwise): an incomplete copy stops the scenario.
S8_BIG_BLOCKS=${BENCH_S8_BIG:-16}
S8_SMALL_BLOCKS=4000
S8_DISK_MIB=256
if [ "$QUICK" = 1 ]; then
    S8_BIG_BLOCKS=2
    S8_SMALL_BLOCKS=300
    S8_DISK_MIB=64
fi
S8_ACCESS=AKIAKEEPRSYNCBENCH08
S8_SECRET=keeprsyncbenchsecret8Qw3Er5Ty7Ui9Op2As4Df
# BENCH_S8_BEFORE: another keep-rsync binary (e.g. one built before a
# change), run beside keep-rsync (PrefixLength 3) in both directions.
S8_BEFORE=${BENCH_S8_BEFORE:-}
S8_SRC_UUID=s8src-bi6l4-000000000000000 # keepstore-sim's uuid of service 0
S8_DST_UUID=s8dst-bi6l4-000000000000000
RCLONE=(env -u AWS_CA_BUNDLE rclone --config "$W/s8/rclone.conf")
RCLONE_BEST=(--transfers 32 --checkers 16 --no-check-dest)

# start_gw: versitygw on a free port of 127.0.0.1; sets S8_PORT.
start_gw() {
    local attempt i port pid
    mkdir -p "$W/s8/gw"
    for attempt in 1 2 3; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        "$GW" --access "$S8_ACCESS" --secret "$S8_SECRET" --region us-east-1 \
            --port "127.0.0.1:$port" --health /health --keep-alive --quiet \
            posix "$W/s8/gw" >>"$W/s8gw.log" 2>&1 &
        pid=$!
        SIM_PID[s8gw]=$pid
        for i in $(seq 1 400); do
            if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)" = 200 ]; then
                S8_PORT=$port
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        stop_sim s8gw
    done
    echo "bench: versitygw did not answer GET /health:" >&2
    cat "$W/s8gw.log" >&2
    exit 1
}

# s8_bucket NAME: a fresh empty bucket (the posix backend's directory).
s8_bucket() {
    rm -rf "${W:?}/s8/gw/$1"
    mkdir "$W/s8/gw/$1"
}

# cpu_ticks PID...: user+system CPU ticks of these processes, summed.
cpu_ticks() {
    local pid t=0 st
    for pid in "$@"; do
        st=$(sed 's/^.*) //' "/proc/$pid/stat")
        # after "PID (comm) ": state is field 1, utime 12, stime 13
        t=$((t + $(echo "$st" | awk '{print $12 + $13}')))
    done
    echo "$t"
}

# s8_copy TAG KIND PATH CMD...: run CMD (measure), with the CPU of the
# servers in $S8_SERVERS and of the host around it; then sync PATH's
# filesystem and check that PATH holds every block of $S8_LIST in layout
# KIND (flat: PATH/HASH, plus recent/HASH markers; flat3: PATH/xyz/HASH
# plus recent/xyz/HASH; xyz: PATH/xyz/HASH). The check goes into the row.
s8_copy() {
    local tag=$1 kind=$2 path=$3 c0 c1 h0 h1 s0 s1
    shift 3
    sync -f "$W" # what earlier copies left in the page cache is on disk
    rm -f "$W/report.json"
    MEASURE_PIDS=$S8_SERVERS measure "$tag" "$@"
    c0=$(cat "$W/pids0")
    c1=$(cat "$W/pids1")
    h0=$(cat "$W/stat0")
    h1=$(cat "$W/stat1")
    s0=$(now)
    sync -f "$path"
    s1=$(now)
    if ! python3 - "$RES" "$S8_LIST" "$kind" "$path" "$c0" "$c1" "$h0" "$h1" "$s0" "$s1" \
        "$(getconf CLK_TCK)" "$QUICK" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import hashlib, json, os, re, sys
res, listf, kind, path, c0, c1, h0, h1, s0, s1, tck, quick, load1 = sys.argv[1:]
tck = int(tck)
lines = open(res).read().splitlines()
row = json.loads(lines[-1])
want = {}
for l in open(listf):
    h, n = l.split()
    want[h] = int(n)
HEX = re.compile(r"[0-9a-f]{32}$")
def blocks_at(d, nested):
    """{hash: size} of the block files under d (flat d/HASH or d/xyz/HASH)."""
    found, other = {}, 0
    if not os.path.isdir(d):
        return found, other
    for e in os.scandir(d):
        if e.name.startswith("."):
            continue  # the server's own (temp files, metadata)
        if nested and e.is_dir(follow_symlinks=False) and re.fullmatch(r"[0-9a-f]{3}", e.name):
            for g in os.scandir(e.path):
                if HEX.match(g.name) and g.name.startswith(e.name) and g.is_file(follow_symlinks=False):
                    found[g.name] = g.stat().st_size
                elif not g.name.startswith("."):
                    other += 1
        elif not nested and HEX.match(e.name) and e.is_file(follow_symlinks=False):
            found[e.name] = e.stat().st_size
        elif e.name != "recent":
            other += 1
    return found, other
nested = kind != "flat"
found, other = blocks_at(path, nested)
missing = [h for h in want if found.get(h) != want[h]]
check = {"blocks": len(found), "want": len(want), "missing_or_wrong_size": len(missing),
         "other_entries": other, "bytes": sum(found.get(h, 0) for h in want)}
bad = bool(missing) or len(found) != len(want)
if kind in ("flat", "flat3"):
    markers, _ = blocks_at(os.path.join(path, "recent"), nested)
    check["markers"] = len(markers)
    bad = bad or set(markers) != set(want)
# Content: every block in quick mode, two (the first hashes) otherwise.
sample = sorted(want) if quick == "1" else sorted(want)[:2]
corrupt = 0
for h in sample:
    if h in found:
        p = os.path.join(path, h[:3], h) if nested else os.path.join(path, h)
        m = hashlib.md5()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                m.update(chunk)
        corrupt += m.hexdigest() != h
check["md5_checked"] = len(sample)
check["md5_bad"] = corrupt
bad = bad or corrupt > 0
row["check"] = check
row["bytes"] = check["bytes"] if not bad else None
row["server_cpu"] = (int(c1) - int(c0)) / tck
a, b = [int(x) for x in h0.split()[1:9]], [int(x) for x in h1.split()[1:9]]
d = [y - x for x, y in zip(a, b)]  # user nice system idle iowait irq softirq steal
row["host"] = {"busy": (d[0] + d[1] + d[2] + d[5] + d[6]) / tck, "iowait": d[4] / tck,
               "idle": d[3] / tck, "steal": d[7] / tck}
row["sync_after"] = float(s1) - float(s0)
row["load1"] = float(load1)
lines[-1] = json.dumps(row)
open(res, "w").write("\n".join(lines) + "\n")
print("bench: scenario 8 %-14s %-13s server cpu %6.2fs  host busy %6.2fs iowait %6.2fs  sync after %5.2fs  blocks %d/%d%s" % (
    row.get("tool"), row.get("dir"), row["server_cpu"], row["host"]["busy"], row["host"]["iowait"],
    row["sync_after"], check["blocks"], check["want"],
    "" if "markers" not in check else "  markers %d" % check["markers"]), file=sys.stderr)
if bad or row["rc"] != 0:
    print("bench: scenario 8: INCOMPLETE COPY (%s, exit %d): %s" % (row["cmd"], row["rc"], json.dumps(check)),
          file=sys.stderr)
    sys.exit(1)
EOF
    then
        echo "bench: scenario 8 failed: $tag did not copy every block into $path" >&2
        exit 1
    fi
}

# s8_volumes FILE BUCKET PREFIXLENGTH: a volumes file naming one S3 volume.
s8_volumes() {
    cat >"$1" <<EOF
zzzzz-nyw5e-000000000000000:
  Driver: S3
  Replication: 1
  DriverParameters:
    Bucket: $2
    Endpoint: http://127.0.0.1:$S8_PORT
    Region: us-east-1
    AccessKeyID: $S8_ACCESS
    SecretAccessKey: $S8_SECRET
    PrefixLength: $3
EOF
}

scenario8_data() { # NAME BLOCKS SIZES SEED ROUNDS
    local d=$1 n=$2 sizes=$3 seed=$4 rounds=$5 run src gwd=$W/s8/gw dst=$W/s8/dst
    src=$W/s8/$d/$S8_SRC_UUID
    local t0
    t0=$(now)
    # Seeding writes (and fsyncs) each block: allow 10 minutes.
    START_TRIES=12000 start_sim "s8seed$d" --services 1 --uuid-prefix s8src --data-dir "$W/s8/$d" \
        --seed-blocks "$n" --seed-sizes "$sizes" --seed-replicas 1 --seed "$seed"
    stop_sim "s8seed$d"
    S8_LIST=$W/s8/$d.list
    python3 - "$src" >"$S8_LIST" <<'EOF'
import os, sys
for e in sorted(os.scandir(sys.argv[1]), key=lambda e: e.name):
    for g in sorted(os.scandir(e.path), key=lambda g: g.name):
        print(g.name, g.stat().st_size)
EOF
    if [ "$(wc -l <"$S8_LIST")" != "$n" ]; then
        echo "bench: scenario 8: the $d data set has $(wc -l <"$S8_LIST") blocks, not $n" >&2
        exit 1
    fi
    python3 -c 'import sys; print("bench: scenario 8: the %s data set (%s blocks of %s, %.0f MiB) written in %.0f s" % (sys.argv[1], sys.argv[2], sys.argv[3], sum(int(l.split()[1]) for l in open(sys.argv[4])) / 2**20, float(sys.argv[6]) - float(sys.argv[5])))' \
        "$d" "$n" "$sizes" "$S8_LIST" "$t0" "$(now)" >&2
    # The baseline's source cluster serves the data set itself.
    start_sim s8simsrc --services 1 --uuid-prefix s8src --data-dir "$W/s8/$d"
    local t="\"scenario\":8,\"data\":\"$d\",\"blocks\":$n"
    for run in $(seq 1 "$rounds"); do
        S8_SERVERS=${SIM_PID[s8gw]}
        # dir -> bucket
        s8_bucket kr-p0
        s8_copy "{$t,\"tool\":\"keep-rsync\",\"dir\":\"dir-s3\",\"run\":$run}" flat "$gwd/kr-p0" \
            "$KR" --src-volume-dir "$src" --dst-volumes "$W/s8/p0.yml" -q --report "$W/report.json"
        s8_bucket kr-p3
        s8_copy "{$t,\"tool\":\"keep-rsync-p3\",\"dir\":\"dir-s3\",\"run\":$run}" flat3 "$gwd/kr-p3" \
            "$KR" --src-volume-dir "$src" --dst-volumes "$W/s8/p3.yml" -q --report "$W/report.json"
        if [ -n "$S8_BEFORE" ]; then
            s8_bucket kr-before
            s8_copy "{$t,\"tool\":\"keep-rsync-before\",\"dir\":\"dir-s3\",\"run\":$run}" flat3 "$gwd/kr-before" \
                "$S8_BEFORE" --src-volume-dir "$src" --dst-volumes "$W/s8/pb.yml" -q --report "$W/report.json"
        fi
        s8_bucket rclone
        s8_copy "{$t,\"tool\":\"rclone\",\"dir\":\"dir-s3\",\"run\":$run}" xyz "$gwd/rclone" \
            "${RCLONE[@]}" copy "$src" s3:rclone "${RCLONE_BEST[@]}" --s3-no-check-bucket --s3-no-head -q
        if [ "$run" = 1 ]; then
            s8_bucket rclone-defaults
            s8_copy "{$t,\"tool\":\"rclone-defaults\",\"dir\":\"dir-s3\",\"run\":$run}" xyz "$gwd/rclone-defaults" \
                "${RCLONE[@]}" copy "$src" s3:rclone-defaults -q
            rm -rf "$gwd/rclone-defaults"
        fi
        # bucket -> dir
        rm -rf "$dst" && mkdir "$dst"
        s8_copy "{$t,\"tool\":\"keep-rsync\",\"dir\":\"s3-dir\",\"run\":$run}" xyz "$dst" \
            "$KR" --src-volumes "$W/s8/p0.yml" --dst-volume-dir "$dst" -q --report "$W/report.json"
        rm -rf "$dst" && mkdir "$dst"
        s8_copy "{$t,\"tool\":\"keep-rsync-p3\",\"dir\":\"s3-dir\",\"run\":$run}" xyz "$dst" \
            "$KR" --src-volumes "$W/s8/p3.yml" --dst-volume-dir "$dst" -q --report "$W/report.json"
        if [ -n "$S8_BEFORE" ]; then
            rm -rf "$dst" && mkdir "$dst"
            s8_copy "{$t,\"tool\":\"keep-rsync-before\",\"dir\":\"s3-dir\",\"run\":$run}" xyz "$dst" \
                "$S8_BEFORE" --src-volumes "$W/s8/pb.yml" --dst-volume-dir "$dst" -q --report "$W/report.json"
        fi
        rm -rf "$dst" && mkdir "$dst"
        s8_copy "{$t,\"tool\":\"rclone\",\"dir\":\"s3-dir\",\"run\":$run}" xyz "$dst" \
            "${RCLONE[@]}" copy s3:rclone "$dst" "${RCLONE_BEST[@]}" -q
        rm -rf "$dst" "$gwd/kr-p0" "$gwd/kr-p3" "$gwd/kr-before" "$gwd/rclone"
        # sim -> sim: the same blocks through two keepstore-sims
        rm -rf "$W/s8/simdst"
        start_sim s8simdst --services 1 --uuid-prefix s8dst --data-dir "$W/s8/simdst"
        S8_SERVERS="${SIM_PID[s8simsrc]} ${SIM_PID[s8simdst]}"
        s8_copy "{$t,\"tool\":\"keep-rsync-sim\",\"dir\":\"sim-sim\",\"run\":$run}" xyz "$W/s8/simdst/$S8_DST_UUID" \
            "$KR" -src "$W/s8simsrc.conf" -dst "$W/s8simdst.conf" \
            -src-keep-services-json "$W/s8simsrc.json" -dst-keep-services-json "$W/s8simdst.json" \
            -replications 1 -q --report "$W/report.json"
        stop_sim s8simdst
        rm -rf "$W/s8/simdst"
    done
    stop_sim s8simsrc
    rm -rf "${W:?}/s8/$d"
    python3 -c 'import sys; print("bench: scenario 8: the %s data set: %.0f s in all" % (sys.argv[1], float(sys.argv[3]) - float(sys.argv[2])))' "$d" "$t0" "$(now)" >&2
}

scenario8() { # ROUNDS
    local rounds=$1
    mkdir -p "$W/s8"
    # What the disk takes with fsync (the directory writes fsync every block).
    measure "{\"scenario\":8,\"tool\":\"disk-fsync\",\"bytes\":$((S8_DISK_MIB << 20))}" \
        dd if=/dev/zero of="$W/s8/dd.bin" bs=1M count="$S8_DISK_MIB" conv=fsync status=none
    rm -f "$W/s8/dd.bin"
    start_gw
    s8_volumes "$W/s8/p0.yml" kr-p0 0
    s8_volumes "$W/s8/p3.yml" kr-p3 3
    s8_volumes "$W/s8/pb.yml" kr-before 3
    printf '%s\n' '[s3]' 'type = s3' 'provider = Other' 'env_auth = false' \
        "access_key_id = $S8_ACCESS" "secret_access_key = $S8_SECRET" \
        "endpoint = http://127.0.0.1:$S8_PORT" 'region = us-east-1' \
        'force_path_style = true' >"$W/s8/rclone.conf"
    python3 - "$GW" "$(df -PT "$W" | awk 'NR == 2 {print $2 " " $1}')" "$S8_BIG_BLOCKS" \
        "$S8_SMALL_BLOCKS" "$RUNS" "${RCLONE_BEST[*]}" >"$W/meta.json" <<'EOF'
import json, subprocess, sys
gw, fs, big, small, runs, rclone_best = sys.argv[1:]
def first(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
    except Exception:
        return "?"
try:
    mods = subprocess.run(["go", "version", "-m", gw], capture_output=True, text=True).stdout.split("\n")
    vgw = next(" ".join(l.split()[1:3]) for l in mods if l.split()[:2] == ["mod", "github.com/versity/versitygw"])
except Exception:
    vgw = first([gw, "--version"])
print(json.dumps({"stores": {
    "versitygw": vgw,
    "rclone": first(["rclone", "version"]),
    "filesystem": fs,
    "big": {"blocks": int(big), "sizes": "64M"},
    "small": {"blocks": int(small), "sizes": "4K-64K"},
    "runs": int(runs),
    "rclone_best": rclone_best,
}}))
EOF
    scenario8_data big "$S8_BIG_BLOCKS" 64M 81 "$rounds"
    scenario8_data small "$S8_SMALL_BLOCKS" 4K-64K 82 "$rounds"
    stop_sim s8gw
}

# ---------------------------------------------------------------- scenario 9
# Adaptive concurrency (bench.sh --concurrency only): keep-rsync's adaptive
# per-service limits (src/limiter.rs: slow start from 8, 503s cut them, up
# to --max-per-service) against fixed ones (--fixed-concurrency). The small
# keepstore of b and c is one keepstore-sim service handling at most 32
# requests at once and answering 503 at once beyond (--max-concurrent-requests
# 32 --max-queued-requests 0), each answer 0.5 ms slower per request in
# flight (--queue-latency-us 500).
#   a) latency-bound: 2 source + 4 destination services, 10 and then 50 ms
#      per request, 2 replicas: default flags vs --transfers 1 (over the
#      -prefix 0 sixteenth of the blocks: blocks/s) and the old default
#      (--fixed-concurrency --max-per-service 16);
#   b) one job, 2 source services into the small keepstore (plus 2 ms per
#      request), 1 replica: default flags vs --fixed-concurrency
#      --max-per-service K for each K of S9B_KS;
#   c) 16 prefix jobs at once (-prefix 0 ... f, each its own --report), 2
#      source services into the small keepstore: default flags, fixed 128
#      (what flattening looks like) and fixed 16 (the old default).
# A fresh destination for every copy. Every copy rewrites its metrics
# textfile every 250 ms; a sampler reads the destination's /_sim/counters
# and every running job's keep_rsync_service_concurrency_limit every 0.5 s
# (and once after the copy), and the series goes into the row.
S9A_BLOCKS=2000
S9B_BLOCKS=12000
S9C_BLOCKS=16000
S9B_KS="8 16 32 64 128"
if [ "$QUICK" = 1 ]; then
    S9A_BLOCKS=300
    S9B_BLOCKS=600
    S9C_BLOCKS=800
    S9B_KS="16 128"
fi
S9_SMALL="--max-concurrent-requests 32 --max-queued-requests 0 --queue-latency-us 500"
S9_PREFIXES="0 1 2 3 4 5 6 7 8 9 a b c d e f"
# s9_want X: sub-scenario X is to run (all, unless BENCH_S9 lists some).
s9_want() { [[ " ${BENCH_S9:-a b c} " == *" $1 "* ]]; }

# s9_flags VARIANT: keep-rsync's flags for a variant of scenario 9.
s9_flags() {
    case $1 in
        adaptive) ;;
        transfers1) echo "--transfers 1 -prefix 0" ;;
        fixed*) echo "--fixed-concurrency --max-per-service ${1#fixed}" ;;
        *) echo "bench: scenario 9: unknown variant $1" >&2; exit 1 ;;
    esac
}

# s9_cmd SRC DST REPLICAS REPORT METRICS extra args...: the command line.
s9_cmd() {
    local s=$1 d=$2 r=$3 rep=$4 m=$5
    shift 5
    echo "$KR" -src "$W/$s.conf" -dst "$W/$d.conf" \
        -src-keep-services-json "$W/$s.json" -dst-keep-services-json "$W/$d.json" \
        -replications "$r" --quiet --report "$rep" \
        --metrics-textfile "$m" --metrics-interval 250ms "$@"
}

# s9_sampler_start OUT METRICS-GLOB CLUSTER...: sample the clusters'
# counters and the limits in the metrics textfiles every 0.5 s, into OUT.
s9_sampler_start() {
    local out=$1 glob=$2 c
    shift 2
    S9_SPECS=()
    for c in "$@"; do S9_SPECS+=("tok-$c=$W/$c.json"); done
    S9_T0=$(now)
    : >"$out"
    python3 "$W/s9sample.py" "$out" 0.5 "$S9_T0" "$glob" "${S9_SPECS[@]}" &
    SIM_PID[s9sampler]=$!
    # The copy starts once the sampler has its first sample (t about 0).
    local i
    for i in $(seq 1 200); do
        if [ -s "$out" ]; then
            S9_START=$(now)
            return 0
        fi
        sleep 0.025
    done
    echo "bench: scenario 9: the sampler wrote nothing in 5 s" >&2
    exit 1
}

# s9_sampler_stop OUT METRICS-GLOB: stop the sampler, take the last sample.
s9_sampler_stop() {
    stop_sim s9sampler
    python3 "$W/s9sample.py" "$1" 0 "$S9_T0" "$2" "${S9_SPECS[@]}"
}

# s9_series SERIES: the samples as a JSON list, t counted from the copy's
# start (the first sample, taken before it, has t < 0).
s9_series() {
    python3 -c 'import json, sys
off = float(sys.argv[3]) - float(sys.argv[2])
out = []
for l in open(sys.argv[1]):
    if l.strip():
        x = json.loads(l)
        x["t"] = round(x["t"] - off, 3)
        out.append(x)
print(json.dumps(out))' "$1" "$S9_T0" "$S9_START" >"$1.json"
}

# s9_attach SERIES: the samples into the last row of $RES; a line on stderr.
s9_attach() {
    s9_series "$1"
    python3 - "$RES" "$1.json" <<'EOF'
import json, sys
res, seriesf = sys.argv[1:]
lines = open(res).read().splitlines()
row = json.loads(lines[-1])
row["series"] = json.load(open(seriesf))
lines[-1] = json.dumps(row)
open(res, "w").write("\n".join(lines) + "\n")
EOF
    tail -1 "$RES" | python3 scripts/bench-report.py --s9-line >&2
}

scenario9a() { # ROUNDS
    local rounds=$1 run lat v d=$W/s9a
    mkdir -p "$d"
    for lat in 10 50; do
        start_sim "s9a$lat" --services 2 --uuid-prefix "s9a$lat" --latency-ms "$lat" \
            --seed-blocks "$S9A_BLOCKS" --seed-sizes 1K-16K --seed-replicas 2 --seed 91
    done
    for run in $(seq 1 "$rounds"); do
        for lat in 10 50; do
            for v in adaptive fixed16 transfers1; do
                start_sim s9adst --services 4 --uuid-prefix s9ad0 --latency-ms "$lat"
                rm -f "$W/report.json" "$d"/m*.prom
                s9_sampler_start "$d/series.jsonl" "$d/m.prom" s9adst
                # shellcheck disable=SC2046
                measure "{\"scenario\":9,\"sub\":\"a\",\"tool\":\"keep-rsync-$v\",\"variant\":\"$v\",\"latency_ms\":$lat,\"blocks\":$S9A_BLOCKS,\"run\":$run}" \
                    $(s9_cmd "s9a$lat" s9adst 2 "$W/report.json" "$d/m.prom" $(s9_flags $v))
                s9_sampler_stop "$d/series.jsonl" "$d/m.prom"
                s9_attach "$d/series.jsonl"
                stop_sim s9adst
            done
        done
    done
    stop_sim s9a10
    stop_sim s9a50
}

scenario9b() { # ROUNDS
    local rounds=$1 run v k d=$W/s9b
    mkdir -p "$d"
    start_sim s9bsrc --services 2 --uuid-prefix s9bs0 \
        --seed-blocks "$S9B_BLOCKS" --seed-sizes 4K-64K --seed-replicas 1 --seed 92
    for run in $(seq 1 "$rounds"); do
        for v in adaptive $(for k in $S9B_KS; do echo "fixed$k"; done); do
            # shellcheck disable=SC2086
            start_sim s9bdst --services 1 --uuid-prefix s9bd0 --latency-ms 2 $S9_SMALL
            rm -f "$W/report.json" "$d"/m*.prom
            s9_sampler_start "$d/series.jsonl" "$d/m.prom" s9bdst
            # shellcheck disable=SC2046
            measure "{\"scenario\":9,\"sub\":\"b\",\"tool\":\"keep-rsync-$v\",\"variant\":\"$v\",\"blocks\":$S9B_BLOCKS,\"run\":$run}" \
                $(s9_cmd s9bsrc s9bdst 1 "$W/report.json" "$d/m.prom" $(s9_flags $v))
            s9_sampler_stop "$d/series.jsonl" "$d/m.prom"
            s9_attach "$d/series.jsonl"
            stop_sim s9bdst
        done
    done
    stop_sim s9bsrc
}

# scenario9c_jobs VARIANT RUN: the 16 prefix jobs at once, one row.
scenario9c_jobs() {
    local v=$1 run=$2 p t0 t1 d=$W/s9c
    local -A pid=()
    rm -rf "$d"
    mkdir -p "$d"
    # shellcheck disable=SC2086
    start_sim s9cdst --services 1 --uuid-prefix s9cd0 $S9_SMALL
    s9_sampler_start "$d/series.jsonl" "$d/m-*.prom" s9cdst
    t0=$(now)
    for p in $S9_PREFIXES; do
        # shellcheck disable=SC2046
        /usr/bin/time -f '%e %U %S %M' -o "$d/time-$p" \
            $(s9_cmd s9csrc s9cdst 1 "$d/report-$p.json" "$d/m-$p.prom" -prefix "$p" $(s9_flags "$v")) \
            >"$d/out-$p" 2>"$d/err-$p" &
        pid[$p]=$!
    done
    for p in $S9_PREFIXES; do
        local rc=0
        wait "${pid[$p]}" || rc=$?
        echo "$rc" >"$d/rc-$p"
    done
    t1=$(now)
    s9_sampler_stop "$d/series.jsonl" "$d/m-*.prom"
    s9_series "$d/series.jsonl"
    # shellcheck disable=SC2046
    python3 - "$v" "$run" "$S9C_BLOCKS" "$t0" "$t1" "$d" "$W" "$ROOT" "$S9_PREFIXES" \
        "$(s9_cmd s9csrc s9cdst 1 "$d/report-P.json" "$d/m-P.prom" -prefix P $(s9_flags "$v"))" >>"$RES" <<'EOF'
import json, sys
v, run, n, t0, t1, d, work, root, prefixes, cmd = sys.argv[1:]
jobs = []
for p in prefixes.split():
    job = {"prefix": p, "rc": int(open(f"{d}/rc-{p}").read())}
    try:
        e, u, s, m = open(f"{d}/time-{p}").read().split()[-4:]
        job.update(wall=float(e), user=float(u), sys=float(s), maxrss_kib=int(m))
    except Exception as ex:
        job["time_error"] = str(ex)
    try:
        r = json.load(open(f"{d}/report-{p}.json"))
        job.update({k: r.get(k) for k in ("status", "elapsed_seconds", "started_at", "ended_at",
                                          "copied", "copied_bytes", "failed")})
        job["to_copy"] = r["plan"]["to_copy"]
        job["dst_requests"] = sum(x.get("requests", 0) for x in r.get("destination", []))
        job["dst_errors"] = sum(x.get("errors", 0) for x in r.get("destination", []))
    except Exception as ex:
        job["report_error"] = str(ex)
        try:
            job["stderr"] = open(f"{d}/err-{p}").read()[-500:]
        except Exception:
            pass
    jobs.append(job)
row = {"scenario": 9, "sub": "c", "tool": "keep-rsync-" + v, "variant": v, "blocks": int(n),
       "run": int(run), "jobs_run": len(jobs), "wall": float(t1) - float(t0),
       "rc": max(j["rc"] for j in jobs), "user": sum(j.get("user", 0) for j in jobs),
       "sys": sum(j.get("sys", 0) for j in jobs), "jobs": jobs,
       "cmd": cmd.replace(work, "$W").replace(root + "/", ""),
       "series": json.load(open(f"{d}/series.jsonl.json"))}
print(json.dumps(row))
EOF
    tail -1 "$RES" | python3 scripts/bench-report.py --s9-line >&2
    stop_sim s9cdst
}

scenario9c() { # ROUNDS
    local rounds=$1 run v
    start_sim s9csrc --services 2 --uuid-prefix s9cs0 \
        --seed-blocks "$S9C_BLOCKS" --seed-sizes 4K-64K --seed-replicas 1 --seed 93
    for run in $(seq 1 "$rounds"); do
        for v in adaptive fixed128 fixed16; do
            scenario9c_jobs "$v" "$run"
        done
    done
    stop_sim s9csrc
}

scenario9() { # ROUNDS
    local rounds=$1
    cat >"$W/s9sample.py" <<'EOF'
# s9sample.py OUT INTERVAL T0 METRICS-GLOB TOKEN=SERVICES.json...: append a
# JSON line to OUT every INTERVAL seconds (once if 0): t (s since T0), each
# service's counters (per_hash left out), and keep_rsync_service_concurrency_limit
# of each metrics textfile rewritten in the last second (every one, if once).
import glob, json, os, re, signal, sys, time, urllib.request
out, interval, t0, mglob, *specs = sys.argv[1:]
interval, t0 = float(interval), float(t0)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
svcs = []
for spec in specs:
    tok, path = spec.split("=", 1)
    for s in json.load(open(path))["items"]:
        svcs.append((s["uuid"], "http://%s:%d/_sim/counters" % (s["service_host"], s["service_port"]), tok))
KEEP = ("gets", "heads", "puts", "puts_stored", "index_requests", "refused", "queued",
        "in_flight", "waiting", "max_in_flight", "faults_injected")
LIM = re.compile(r'^keep_rsync_service_concurrency_limit\{([^}]*)\}\s+(\S+)')
def sample():
    t = time.time()
    row = {"t": round(t - t0, 3), "counters": {}, "limits": {}}
    for uuid, url, tok in svcs:
        try:
            req = urllib.request.Request(url, headers={"Authorization": "Bearer " + tok})
            with urllib.request.urlopen(req, timeout=2) as r:
                c = json.load(r)
            row["counters"][uuid] = {k: c.get(k) for k in KEEP}
        except Exception as ex:
            row["counters"][uuid] = {"error": str(ex)}
    for f in sorted(glob.glob(mglob)):
        try:
            if interval and time.time() - os.stat(f).st_mtime > 1.0:
                continue  # that job has ended
            text = open(f).read()
        except OSError:
            continue
        job = os.path.basename(f).rsplit(".", 1)[0]
        for l in text.splitlines():
            m = LIM.match(l)
            if m:
                lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                key = "%s %s" % (lab.get("side", "?"), lab.get("service", "?"))
                row["limits"].setdefault(key, {})[job] = int(float(m.group(2)))
    with open(out, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return t
while True:
    t = sample()
    if not interval:
        break
    time.sleep(max(0.0, interval - (time.time() - t)))
EOF
    python3 - "$S9A_BLOCKS" "$S9B_BLOCKS" "$S9C_BLOCKS" "$S9B_KS" "$RUNS" "$S9_SMALL" >"$W/meta.json" <<'EOF'
import json, sys
a, b, c, ks, runs, small = sys.argv[1:]
print(json.dumps({"concurrency": {
    "a": {"blocks": int(a), "sizes": "1K-16K", "latencies_ms": [10, 50], "src_services": 2,
          "dst_services": 4, "replications": 2, "transfers1_subset": "-prefix 0"},
    "b": {"blocks": int(b), "sizes": "4K-64K", "src_services": 2, "dst_services": 1,
          "dst_latency_ms": 2, "replications": 1, "ks": [int(k) for k in ks.split()]},
    "c": {"blocks": int(c), "sizes": "4K-64K", "jobs": 16, "src_services": 2, "dst_services": 1,
          "replications": 1},
    "small_keepstore": small,
    "runs": int(runs),
}}))
EOF
    s9_want a && scenario9a "$rounds"
    s9_want b && scenario9b "$rounds"
    s9_want c && scenario9c "$rounds"
    return 0
}

# --------------------------------------------------------------- scenario 10
# Collection records (bench.sh --collections only): a dry run over S10_BLOCKS
# synthetic blocks from the clusters' config.yml files, restricted by
# --blocks-from to every source block, in three forms of the same blocks
# (scripts/bench-collections.py): plain locators, manifests, and psql CSV
# collection records with per-collection replication and classes. The list
# of locators is the union of source services 0 and 2's indexes (block i is
# on services i and i+1 mod 4).
S10_BLOCKS=10000000
[ "$QUICK" = 1 ] && S10_BLOCKS=1000000
scenario10() { # ROUNDS
    local rounds=$1 run form url i
    start_sim s10src --services 4 --uuid-prefix srcx0 --synthetic-blocks $S10_BLOCKS \
        --synthetic-seed 10 --synthetic-replicas 2 --synthetic-fraction 1.0 \
        --cluster-config "$W/s10src.yml"
    start_sim s10dst --services 4 --uuid-prefix dstx0 --synthetic-blocks $S10_BLOCKS \
        --synthetic-seed 10 --synthetic-replicas 2 --synthetic-fraction 0.9 \
        --cluster-config "$W/s10dst.yml"
    i=0
    for url in $(python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["items"]:
    print("http://%s:%d" % (s["service_host"], s["service_port"]))' "$W/s10src.json"); do
        if [ $((i % 2)) = 0 ]; then
            curl -sf -H "Authorization: Bearer tok-s10src" "$url/index/"
        fi
        i=$((i + 1))
    done | awk 'NF { print $1 }' >"$W/s10-list.txt"
    echo "bench: scenario 10: $(wc -l <"$W/s10-list.txt") listed blocks; writing manifests and CSV" >&2
    python3 scripts/bench-collections.py "$W/s10-list.txt" "$W/s10"
    for run in $(seq 1 "$rounds"); do
        for form in list manifests collections; do
            local f
            case $form in
                list) f=$W/s10-list.txt ;;
                manifests) f=$W/s10.manifests.txt ;;
                collections) f=$W/s10.collections.csv ;;
            esac
            rm -f "$W/report.json"
            measure "{\"scenario\":10,\"tool\":\"keep-rsync\",\"form\":\"$form\",\"blocks\":$S10_BLOCKS,\"bytes\":$(stat -c %s "$f"),\"run\":$run}" \
                "$KR" -src-cluster-config "$W/s10src.yml" -dst-cluster-config "$W/s10dst.yml" \
                --dry-run --quiet --report "$W/report.json" --blocks-from "$f"
        done
    done
    stop_sim s10src
    stop_sim s10dst
}

# --------------------------------------------------------------- scenario 11
# Release builds: the dist profile's binaries against the release profile's,
# interleaved in each round, on three kinds of work.
S11_BIG=16
S11_SMALL=20000
S11_DRY=10000000
if [ "$QUICK" = 1 ]; then S11_BIG=4; S11_SMALL=1000; S11_DRY=1000000; fi
scenario11() { # ROUNDS
    local rounds=$1 run build data t0 t1
    local dist=${CARGO_TARGET_DIR:-$ROOT/target}/dist
    echo "bench: cargo build --profile dist" >&2
    t0=$(now)
    cargo build --profile dist --quiet --bin keep-rsync --bin keep-block-check
    t1=$(now)
    python3 - "$BIN" "$dist" "$t0" "$t1" "$S11_BIG" "$S11_SMALL" "$S11_DRY" "$rounds" >"$W/meta.json" <<'EOF'
import json, os, sys
rel, dist, t0, t1, big, small, dry, runs = sys.argv[1:]
size = lambda d: {b: os.path.getsize(os.path.join(d, b)) for b in ("keep-rsync", "keep-block-check")}
print(json.dumps({"s11": {"binaries": {"release": size(rel), "dist": size(dist)},
                          "dist_build_seconds": float(t1) - float(t0),
                          "big": int(big), "small": int(small), "dry": int(dry), "runs": int(runs)}}))
EOF
    start_sim s11big --services 4 --uuid-prefix s11bg \
        --seed-blocks $S11_BIG --seed-sizes 64M --seed-replicas 1 --seed 11
    start_sim s11small --services 4 --uuid-prefix s11sm \
        --seed-blocks $S11_SMALL --seed-sizes 1K-4K --seed-replicas 1 --seed 12
    start_sim s11src --services 4 --uuid-prefix s11sy --synthetic-blocks "$S11_DRY" \
        --synthetic-seed 11 --synthetic-replicas 2 --synthetic-fraction 1.0
    start_sim s11dst --services 4 --uuid-prefix s11sd --synthetic-blocks "$S11_DRY" \
        --synthetic-seed 11 --synthetic-replicas 2 --synthetic-fraction 0.9
    for run in $(seq 1 "$rounds"); do
        for data in big small dry; do
            for build in release dist; do
                local kr=$BIN/keep-rsync n cmd
                [ "$build" = dist ] && kr=$dist/keep-rsync
                case $data in
                    big | small)
                        n=$S11_BIG
                        [ "$data" = small ] && n=$S11_SMALL
                        start_sim s11out --services 4 --uuid-prefix s11ou
                        cmd=$(KR=$kr rsync_cmd "s11$data" s11out)
                        ;;
                    dry)
                        n=$S11_DRY
                        cmd=$(KR=$kr rsync_cmd s11src s11dst --dry-run)
                        ;;
                esac
                # shellcheck disable=SC2086
                measure "{\"scenario\":11,\"tool\":\"keep-rsync\",\"build\":\"$build\",\"data\":\"$data\",\"blocks\":$n,\"run\":$run}" $cmd
                [ "$data" = dry ] || stop_sim s11out
            done
        done
    done
    stop_sim s11big
    stop_sim s11small
    stop_sim s11src
    stop_sim s11dst
}

# --------------------------------------------------------------- scenario 12
# Per-mount indexes (issue 29): a --dry-run over 4 + 4 keepstores, each
# mounting two volumes, 10^6 seeded blocks on each side (2 replicas, each on
# its keepstore's first mount in mount order), the destination indexed one
# mount at a time (GET /mounts, /mounts/UUID/blocks: 8 listings) or, with
# --no-mounts-api, one whole /index per keepstore (4): the same lines, the
# same plan. Both destinations run at once; the runs alternate.
S12_BLOCKS=1000000
[ "$QUICK" = 1 ] && S12_BLOCKS=200000
scenario12() { # ROUNDS
    local rounds=$1 run how
    local seed=(--seed-blocks "$S12_BLOCKS" --seed-sizes 1-64 --seed-replicas 2 --seed 12)
    start_sim s12src --services 4 --uuid-prefix srcm2 "${seed[@]}"
    start_sim s12mnt --services 4 --uuid-prefix dstm2 "${seed[@]}" --mounts 'default;default'
    start_sim s12idx --services 4 --uuid-prefix dstm3 "${seed[@]}" --mounts 'default;default' --no-mounts-api
    for run in $(seq 1 "$rounds"); do
        for how in mounts index; do
            local d=s12mnt
            [ "$how" = index ] && d=s12idx
            # shellcheck disable=SC2046
            measure "{\"scenario\":12,\"tool\":\"keep-rsync\",\"index\":\"$how\",\"blocks\":$S12_BLOCKS,\"run\":$run}" \
                $(rsync_cmd s12src $d --dry-run)
        done
    done
    stop_sim s12src
    stop_sim s12mnt
    stop_sim s12idx
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
    stores)
        scenario8 "$RUNS"
        ;;
    concurrency)
        scenario9 "$RUNS"
        ;;
    collections)
        scenario10 "$RUNS"
        ;;
    dist)
        scenario11 "$RUNS"
        ;;
    mounts)
        scenario12 "$RUNS"
        ;;
    latency)
        # keep-rsync-before (the binary before issue 31, saved in the
        # worktree) as rows of the same run, and the 64 MiB Go comparison.
        [ -x "$ROOT/keep-rsync-before" ] && export KR_BEFORE=${KR_BEFORE:-$ROOT/keep-rsync-before}
        BENCH_S14_GO=${BENCH_S14_GO:-1} \
            python3 scripts/bench-latency.py "$RES" "$W" "$KR" "$SIM" "$RUNS" "$QUICK"
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
RUN_MODE=$MODE
[ "$MODE" = stores ] && [ "$QUICK" = 1 ] && RUN_MODE=stores-quick
[ "$MODE" = concurrency ] && [ "$QUICK" = 1 ] && RUN_MODE=concurrency-quick
[ "$MODE" = collections ] && [ "$QUICK" = 1 ] && RUN_MODE=collections-quick
[ "$MODE" = dist ] && [ "$QUICK" = 1 ] && RUN_MODE=dist-quick
[ "$MODE" = mounts ] && [ "$QUICK" = 1 ] && RUN_MODE=mounts-quick
[ "$MODE" = latency ] && [ "$QUICK" = 1 ] && RUN_MODE=latency-quick
python3 - "$RUN_MODE" "$T_START" "$T_END" "$LOAD" "$DEFAULT_T" "$RES" "$LOAD_START" "$W/meta.json" >"$W/run.json" <<'EOF'
import json, sys, os, platform, subprocess, datetime
mode, t0, t1, load, deft, res, load0, meta = sys.argv[1:]
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
    **(json.load(open(meta)) if os.path.exists(meta) else {}),
}, indent=1))
EOF
case $MODE in
    full) mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-full.json ;;
    sweep) mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-sweep.json ;;
    quick) cp "$W/run.json" "$W/quick.json" ;;
    stores)
        if [ "$QUICK" = 1 ]; then
            cp "$W/run.json" "$W/quick.json"
        else
            mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-stores.json
        fi
        ;;
    concurrency)
        if [ "$QUICK" = 1 ]; then
            cp "$W/run.json" "$W/quick.json"
        else
            mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-concurrency.json
        fi
        ;;
    collections)
        if [ "$QUICK" = 1 ]; then
            cp "$W/run.json" "$W/quick.json"
        else
            mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-collections.json
        fi
        ;;
    dist)
        if [ "$QUICK" = 1 ]; then
            cp "$W/run.json" "$W/quick.json"
        else
            mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-dist.json
        fi
        ;;
    mounts)
        if [ "$QUICK" = 1 ]; then
            cp "$W/run.json" "$W/quick.json"
        else
            mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-mounts.json
        fi
        ;;
    latency)
        if [ "$QUICK" = 1 ]; then
            cp "$W/run.json" "$W/quick.json"
        else
            mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-latency.json
        fi
        ;;
esac
if [ "$MODE" = quick ] || [ "$QUICK" = 1 ]; then
    python3 scripts/bench-report.py --stdout "$W/quick.json"
else
    python3 scripts/bench-report.py >docs/benchmarks.md
    echo "bench: wrote docs/benchmarks.md" >&2
fi
python3 -c 'import sys; print("bench: total %.0f s" % (float(sys.argv[2]) - float(sys.argv[1])))' "$T_START" "$T_END" >&2
