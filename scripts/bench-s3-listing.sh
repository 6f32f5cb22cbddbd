#!/usr/bin/env bash
# Scenario 13 (scripts/bench.sh --s3-listing; docs/benchmarks.md, "S3 bucket
# listings"): indexing a bucket of 10^4 to 10^5 objects (keepstore's layout,
# PrefixLength 0: each data object with its recent/ marker) on one
# versitygw (posix backend, filled by writing its files directly), reached
# through a lag proxy adding 20 ms round trip (scripts/bench-lag-proxy.py):
#
#   keep-rsync   --dry-run from an empty Directory volume to the bucket's
#                S3 volume (the sizing probe and the destination's listing,
#                fanned out by next hex digit within --checkers);
#   keepstore    the real one (/work/real-keepstore-bin/keepstore, or
#                $BENCH_KEEPSTORE), its S3 volume on the bucket through the
#                same proxy, GET /index (skipped with a message where absent);
#   rclone       rclone lsf --files-only of the bucket's top level (the
#                data keys) through the proxy.
#
# Also, at the largest count, keep-rsync through a 0 ms proxy and straight
# to versitygw: what the proxy itself costs. Wall time (every run of
# BENCH_RUNS, default 3) and peak RSS of each; writes
# docs/bench/last-s3-listing.json (no docs/benchmarks.md section yet).
#
#   scripts/bench-s3-listing.sh [--quick]   (--quick: 2000 and 5000 objects,
#                                            one run, printed, docs/ untouched)
#
# Environment: BENCH_S13_COUNTS ("10000 30000 100000"), BENCH_S13_RTT_MS (20),
# BENCH_RUNS (3), BENCH_KEEPSTORE, BENCH_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
for a in "$@"; do
    case $a in
        --quick) QUICK=1 ;;
        *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
    esac
done
COUNTS=${BENCH_S13_COUNTS:-10000 30000 100000}
RUNS=${BENCH_RUNS:-3}
if [ "$QUICK" = 1 ]; then
    COUNTS=${BENCH_S13_COUNTS:-2000 5000}
    RUNS=${BENCH_RUNS:-1}
fi
RTT=${BENCH_S13_RTT_MS:-20}
GW=$ROOT/.tools/bin/versitygw
KS=${BENCH_KEEPSTORE:-/work/real-keepstore-bin/keepstore}
for need in "$GW" /usr/bin/time; do
    if [ ! -x "$need" ]; then
        echo "bench: scenario 13 needs $need (scripts/install-test-deps.sh; apt-get install -y time)" >&2
        exit 2
    fi
done
command -v rclone >/dev/null || { echo "bench: scenario 13 needs rclone (apt-get install -y rclone)" >&2; exit 2; }
T_START=$(date +%s.%N)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: cargo build --release --bin keep-rsync" >&2
cargo build --release --quiet --bin keep-rsync
KR=${CARGO_TARGET_DIR:-$ROOT/target}/release/keep-rsync

W=$(mktemp -d /tmp/keep-rsync-s13.XXXXXX)
RES=$W/results.jsonl
: >"$RES"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # wait_port PORT: until something accepts on 127.0.0.1:PORT (20 s)
    for _ in $(seq 200); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing answers on 127.0.0.1:$1" >&2; exit 1
}

ACCESS=AKIAKEEPRSYNCBENCH01
SECRET=keeprsyncbenchsecret5Xq2Wm8Zr4Tn7Yb1Vc6Hd3Jf
mkdir -p "$W/gw"
GWPORT=$(free_port)
"$GW" --access "$ACCESS" --secret "$SECRET" --region us-east-1 --port "127.0.0.1:$GWPORT" \
    --keep-alive --quiet posix "$W/gw" </dev/null >"$W/gw.log" 2>&1 &
PIDS+=($!)
wait_port "$GWPORT"

# lag PORTFILE RTT: a lag proxy in front of versitygw, its port in PORTFILE.
lag() {
    python3 "$ROOT/scripts/bench-lag-proxy.py" --listen "$W/$1" --upstream "$GWPORT" \
        --rtt-ms "$2" </dev/null >"$W/$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$W/$1" ] && break; sleep 0.1; done
}
lag lag.port "$RTT"
lag zero.port 0
LAG=$(cat "$W/lag.port")
ZERO=$(cat "$W/zero.port")

# fill BUCKET N: N blocks in keepstore's layout, written as files.
fill() {
    python3 - "$W/gw/$1" "$2" <<'EOF'
import hashlib, os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.join(root, "recent"), exist_ok=True)
for i in range(n):
    data = b"block %d" % i
    h = hashlib.md5(data).hexdigest()
    with open(os.path.join(root, h), "wb") as f:
        f.write(data)
    open(os.path.join(root, "recent", h), "wb").close()
EOF
}

# volumes BUCKET PORT: a volumes file naming the bucket at 127.0.0.1:PORT.
volumes() {
    cat >"$W/vol-$1-$2.yml" <<EOF
zzzzz-nyw5e-000000000000013:
  Driver: S3
  DriverParameters:
    Bucket: $1
    Endpoint: http://127.0.0.1:$2
    Region: us-east-1
    AccessKeyID: $ACCESS
    SecretAccessKey: $SECRET
    PrefixLength: 0
    IndexPageSize: 1000
  Replication: 1
EOF
    echo "$W/vol-$1-$2.yml"
}

# timed TAG N CMD...: run, record wall, RSS and the lines its stdout had.
timed() {
    local tag=$1 n=$2
    shift 2
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$W/time.out" "$@" >"$W/out.txt" 2>"$W/err.txt" || rc=$?
    t1=$(date +%s.%N)
    local lines rss
    lines=$(grep -c . "$W/out.txt" || true)
    rss=$(tail -1 "$W/time.out")
    python3 -c 'import json,sys; print(json.dumps({"tool":sys.argv[1],"objects":int(sys.argv[2]),"seconds":float(sys.argv[4])-float(sys.argv[3]),"rss_kib":int(sys.argv[5]),"exit":int(sys.argv[6]),"lines":int(sys.argv[7])}))' \
        "$tag" "$n" "$t0" "$t1" "${rss:-0}" "$rc" "$lines" >>"$RES"
    if [ "$rc" != 0 ]; then
        echo "bench: $tag at $n objects exited $rc:" >&2
        tail -5 "$W/err.txt" >&2
    fi
    printf 'bench: %-22s %7d objects %7.2f s\n' "$tag" "$n" "$(python3 -c "print($t1-$t0)")" >&2
}

mkdir -p "$W/empty"
printf '%s\n' '[s3]' 'type = s3' 'provider = Other' 'env_auth = false' \
    "access_key_id = $ACCESS" "secret_access_key = $SECRET" 'region = us-east-1' \
    "endpoint = http://127.0.0.1:$LAG" 'force_path_style = true' >"$W/rclone.conf"

# keepstore BUCKET: a real keepstore whose one volume is the bucket through
# the lag proxy; its port in KS_PORT, its pid in KS_PID.
TOKEN=bench13systemroottoken0123456789abcdefghijklmnop
keepstore() {
    local port
    port=$(free_port)
    cat >"$W/ks-$1.yml" <<EOF
Clusters:
  zzzzz:
    SystemRootToken: $TOKEN
    ManagementToken: $TOKEN
    Collections:
      BlobSigningKey: bench13blobsigningkey0123456789abcdefghijklmnopqrstuvwxyz
      BlobSigning: false
    Services:
      Keepstore:
        InternalURLs:
          "http://127.0.0.1:$port/": {}
    Volumes:
      zzzzz-nyw5e-000000000000013:
        Driver: S3
        DriverParameters:
          Bucket: $1
          Endpoint: http://127.0.0.1:$LAG
          Region: us-east-1
          AccessKeyID: $ACCESS
          SecretAccessKey: $SECRET
          UsePathStyle: true
          PrefixLength: 0
          IndexPageSize: 1000
EOF
    ARVADOS_SERVICE_INTERNAL_URL="http://127.0.0.1:$port/" "$KS" -config "$W/ks-$1.yml" \
        </dev/null >"$W/ks-$1.log" 2>&1 &
    KS_PID=$!
    PIDS+=("$KS_PID")
    wait_port "$port"
    KS_PORT=$port
}

for n in $COUNTS; do
    b=bench-$n
    echo "bench: filling $b with $n blocks" >&2
    fill "$b" "$n"
    vl=$(volumes "$b" "$LAG")
    kr=("$KR" --src-volume-dir "$W/empty" --dst-volumes "$vl" --dry-run)
    ks_port=
    if [ -x "$KS" ]; then
        keepstore "$b"
        ks_port=$KS_PORT
    fi
    for run in $(seq "$RUNS"); do
        timed keep-rsync "$n" "${kr[@]}"
        timed rclone "$n" env -u AWS_CA_BUNDLE rclone --config "$W/rclone.conf" lsf --files-only "s3:$b"
        if [ -n "$ks_port" ]; then
            timed keepstore "$n" curl -sSf -H "Authorization: Bearer $TOKEN" \
                "http://127.0.0.1:$ks_port/index"
        fi
    done
    if [ -n "$ks_port" ]; then
        kill "$KS_PID" 2>/dev/null || true
        wait "$KS_PID" 2>/dev/null || true
    fi
done
if [ ! -x "$KS" ]; then
    echo "bench: $KS is absent: no keepstore /index rows (/work/shared/tools/real-keepstore/build.sh builds it)" >&2
fi
# What the proxy costs: keep-rsync through a 0 ms proxy and straight to
# versitygw, at the largest count.
last=${COUNTS##* }
for run in $(seq "$RUNS"); do
    timed keep-rsync-0ms "$last" "$KR" --src-volume-dir "$W/empty" --dst-volumes "$(volumes "bench-$last" "$ZERO")" --dry-run
    timed keep-rsync-direct "$last" "$KR" --src-volume-dir "$W/empty" --dst-volumes "$(volumes "bench-$last" "$GWPORT")" --dry-run
done
T_END=$(date +%s.%N)

python3 - "$RES" "$T_START" "$T_END" "$LOAD_START" "$RTT" "$QUICK" "$([ -x "$KS" ] && echo 1 || echo 0)" >"$W/run.json" <<'EOF'
import json, os, subprocess, sys
res, t0, t1, load0, rtt, quick, ks = sys.argv[1:]
rows = [json.loads(l) for l in open(res)]
def git(*a):
    return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
print(json.dumps({
    "mode": "s3-listing-quick" if quick == "1" else "s3-listing",
    "date": subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip(),
    "commit": git("rev-parse", "--short", "HEAD"),
    "seconds": float(t1) - float(t0),
    "load_before": load0,
    "load_after": open("/proc/loadavg").read().split()[:3],
    "machine": {"nproc": os.cpu_count()},
    "rtt_ms": float(rtt),
    "keepstore": ks == "1",
    "rows": rows,
}, indent=1))
EOF
if [ "$QUICK" = 1 ]; then
    cat "$W/run.json"
else
    # scripts/bench-report.py has no section for it yet: the raw results only.
    mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-s3-listing.json
    echo "bench: docs/bench/last-s3-listing.json written" >&2
fi
