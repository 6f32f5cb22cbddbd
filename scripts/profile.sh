#!/usr/bin/env bash
# CPU profiles of keep-rsync behind docs/benchmarks.md "Where the time goes":
# perf (software cpu-clock event, so it works in VMs without PMU access) on
#   - scenario 2 small: 12 blocks of 16-64 MiB, 4+4 services, 2 replicas;
#   - scenario 3: --dry-run over 4+4 synthetic services, 10^7 blocks.
# Prints the top symbols of keep-rsync (and, for scenario 3, of the sim).
# Needs perf (apt-get install -y linux-perf). PROFILE_N overrides 10^7.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "profile: perf not found (apt-get install -y linux-perf)" >&2; exit 2; }
cargo build --workspace --release --quiet
BIN=$PWD/target/release
W=$(mktemp -d /tmp/keep-rsync-profile.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

start_sim() {
    local name=$1
    shift
    "$BIN/keepstore-sim" --root-token "tok-$name" --services-json "$W/$name.json" \
        --settings-file "$W/$name.conf" "$@" 2>>"$W/$name.log" &
    PIDS+=($!)
    until [ -s "$W/$name.json" ]; do sleep 0.05; done
}

rsync() { # SRC DST ARGS...: the keep-rsync command line
    local s=$1 d=$2
    shift 2
    echo "$BIN/keep-rsync" -src "$W/$s.conf" -dst "$W/$d.conf" \
        -src-keep-services-json "$W/$s.json" -dst-keep-services-json "$W/$d.json" \
        -replications 2 --quiet "$@"
}

top() { # PERF_DATA
    perf report -i "$1" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -v '^#' | grep -v '^$' | awk 'NR <= 25'
}

echo "== scenario 2 (12 x 16-64 MiB): keep-rsync"
start_sim s2src --services 4 --uuid-prefix srcb2 --seed-blocks 12 --seed-sizes 16M-64M --seed-replicas 1 --seed 2
start_sim s2dst --services 4 --uuid-prefix dstb2
perf record -q -e cpu-clock -F 999 -o "$W/s2.data" -- $(rsync s2src s2dst) 2>"$W/s2.err" || true
top "$W/s2.data"

N=${PROFILE_N:-10000000}
echo "== scenario 3 ($N blocks, --dry-run): keep-rsync, then the whole machine"
start_sim s3src --services 4 --uuid-prefix srcc3 --synthetic-blocks "$N" --synthetic-seed 3 --synthetic-replicas 2
start_sim s3dst --services 4 --uuid-prefix dstc3 --synthetic-blocks "$N" --synthetic-seed 3 --synthetic-replicas 2 --synthetic-fraction 0.9
# The source sim is profiled alongside (perf -p), to compare server and client cost.
perf record -q -e cpu-clock -F 499 -o "$W/s3sim.data" -p "${PIDS[2]}" 2>/dev/null &
SIMPERF=$!
sleep 0.5
perf record -q -e cpu-clock -F 499 -o "$W/s3.data" -- $(rsync s3src s3dst --dry-run) 2>"$W/s3.err" || true
kill -INT "$SIMPERF"; wait "$SIMPERF" 2>/dev/null || true
echo "-- keep-rsync"
top "$W/s3.data"
echo "-- source keepstore-sim (serving the same indexes)"
top "$W/s3sim.data"
