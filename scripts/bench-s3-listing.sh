#!/usr/bin/env bash
# Scenario 13 (scripts/bench.sh --s3-listing; docs/benchmarks.md, "Bucket
# listings at cloud latency"): indexing a bucket of 10^4 to 10^5 objects in
# keepstore's layout (each data object with its recent/ marker), PrefixLength
# 0 (flat) and 3 (`xyz/HASH`), on versitygw (posix backend, filled by writing
# its files) and on MinIO (filled once by keep-rsync's own PUTs, the other
# buckets made from those objects' files by hard links), each reached
# through a Rust delay line adding 20 ms round trip (`keepstore-sim lag`):
#
#   keep-rsync   --dry-run from an empty Directory volume to the bucket's
#                S3 volume (the destination's listing, fanned out by next hex
#                digit within --checkers): at default flags and --checkers 16;
#   keepstore    the real one (/work/real-keepstore-bin/keepstore, or
#                $BENCH_KEEPSTORE), its S3 volume on the bucket through the
#                same delay line, GET /index (skipped with a message where absent);
#   rclone       rclone lsf --files-only of the data keys through the delay.
#
# Also, at the largest count and PrefixLength 0, keep-rsync through a 0 ms
# delay line and straight to the server: what the delay line itself costs.
# Wall time (every run of BENCH_RUNS, default 3) and peak RSS of each, the
# servers' CPU seconds per listing; writes docs/bench/last-s3-listing.json
# (scripts/bench-report.py turns it into docs/benchmarks.md's section).
#
#   scripts/bench-s3-listing.sh [--quick]   (--quick: 2000 and 5000 objects,
#                                            one run, printed, docs/ untouched)
#
# Environment: BENCH_S13_COUNTS ("10000 100000"), BENCH_S13_RTT_MS (20),
# BENCH_S13_SERVERS ("versitygw minio"), BENCH_S13_LAYOUTS ("0 3"),
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
COUNTS=${BENCH_S13_COUNTS:-10000 100000}
RUNS=${BENCH_RUNS:-3}
if [ "$QUICK" = 1 ]; then
    COUNTS=${BENCH_S13_COUNTS:-2000 5000}
    RUNS=${BENCH_RUNS:-1}
fi
RTT=${BENCH_S13_RTT_MS:-20}
SERVERS=${BENCH_S13_SERVERS:-versitygw minio}
LAYOUTS=${BENCH_S13_LAYOUTS:-0 3}
GW=$ROOT/.tools/bin/versitygw
MINIO=${MINIO:-$ROOT/.tools/bin/minio}
KS=${BENCH_KEEPSTORE:-/work/real-keepstore-bin/keepstore}
for need in /usr/bin/time; do
    [ -x "$need" ] || { echo "bench: scenario 13 needs $need (apt-get install -y time)" >&2; exit 2; }
done
for s in $SERVERS; do
    case $s in
        versitygw) bin=$GW ;;
        minio) bin=$MINIO ;;
        *) echo "bench: BENCH_S13_SERVERS: unknown server $s (versitygw, minio)" >&2; exit 2 ;;
    esac
    [ -x "$bin" ] || { echo "bench: scenario 13 needs $bin (scripts/install-test-deps.sh)" >&2; exit 2; }
done
command -v rclone >/dev/null || { echo "bench: scenario 13 needs rclone (apt-get install -y rclone)" >&2; exit 2; }
T_START=$(date +%s.%N)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: cargo build --release --bin keep-rsync -p keepstore-sim" >&2
cargo build --release --quiet --bin keep-rsync
cargo build --release --quiet -p keepstore-sim
KR=${CARGO_TARGET_DIR:-$ROOT/target}/release/keep-rsync
SIM=${CARGO_TARGET_DIR:-$ROOT/target}/release/keepstore-sim

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
wait_port() { # wait_port PORT: until something accepts on 127.0.0.1:PORT (30 s)
    for _ in $(seq 300); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing answers on 127.0.0.1:$1" >&2; exit 1
}
# cpu PID: user+sys seconds the process has used so far.
cpu() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }

ACCESS=AKIAKEEPRSYNCBENCH01
SECRET=keeprsyncbenchsecret5Xq2Wm8Zr4Tn7Yb1Vc6Hd3Jf
SRV_PID=
# start_server NAME: versitygw (posix backend in $W/gw) or MinIO ($W/minio);
# its port in SRV_PORT, pid in SRV_PID.
start_server() {
    SRV_PORT=$(free_port)
    case $1 in
        versitygw)
            mkdir -p "$W/gw"
            "$GW" --access "$ACCESS" --secret "$SECRET" --region us-east-1 --port "127.0.0.1:$SRV_PORT" \
                --keep-alive --quiet posix "$W/gw" </dev/null >"$W/gw.log" 2>&1 &
            ;;
        minio)
            mkdir -p "$W/minio" "$W/minio-home"
            env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY MINIO_ROOT_USER="$ACCESS" MINIO_ROOT_PASSWORD="$SECRET" \
                MINIO_BROWSER=off MINIO_UPDATE=off HOME="$W/minio-home" \
                "$MINIO" server --quiet --address "127.0.0.1:$SRV_PORT" --console-address "127.0.0.1:$(free_port)" \
                "$W/minio" </dev/null >"$W/minio.log" 2>&1 &
            ;;
    esac
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    wait_port "$SRV_PORT"
}

# lag NAME RTT: a delay line in front of the server, its port in LAG_PORT.
lag() {
    "$SIM" lag --rtt-ms "$2" "127.0.0.1:$SRV_PORT" </dev/null >"$W/$1.lag" 2>"$W/$1.lag.err" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$W/$1.lag" ] && break; sleep 0.1; done
    LAG_PORT=$(cut -d' ' -f1 "$W/$1.lag")
}

# blocks N: the N block hashes of the data set, one a line.
blocks() { python3 -c 'import hashlib,sys; [print(hashlib.md5(b"block %d" % i).hexdigest()) for i in range(int(sys.argv[1]))]' "$1"; }

# key HASH PL: the data key of a block under PrefixLength PL.
# fill_files ROOT N PL: the bucket's objects as versitygw's posix files.
fill_files() {
    python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, os, sys
root, n, pl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
made = set()
for i in range(n):
    data = b"block %d" % i
    h = hashlib.md5(data).hexdigest()
    k = h[:pl] + "/" + h if pl else h
    for p in (k, "recent/" + k):
        d = os.path.dirname(os.path.join(root, p))
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
    with open(os.path.join(root, k), "wb") as f:
        f.write(data)
    open(os.path.join(root, "recent", k), "wb").close()
EOF
}

# volumes BUCKET PORT PL: a volumes file naming the bucket at 127.0.0.1:PORT.
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
    PrefixLength: $3
    IndexPageSize: 1000
  Replication: 1
EOF
    echo "$W/vol-$1-$2.yml"
}

rclone_conf() {
    printf '%s\n' '[s3]' 'type = s3' 'provider = Other' 'env_auth = false' \
        "access_key_id = $ACCESS" "secret_access_key = $SECRET" 'region = us-east-1' \
        "endpoint = http://127.0.0.1:$1" 'force_path_style = true' >"$W/rclone-$1.conf"
    echo "$W/rclone-$1.conf"
}

# fill_minio: MinIO's buckets, bench-N-PL for every count and layout. The
# largest flat one by keep-rsync's own PUTs (data object, then recent/
# marker) from a Directory volume; the others from its objects' files
# (MinIO's xl.meta, the object's data inline) hard-linked under their keys.
fill_minio() {
    local max=${COUNTS##* } rc
    rc=$(rclone_conf "$SRV_PORT")
    for n in $COUNTS; do for pl in $LAYOUTS 0; do
        env -u AWS_CA_BUNDLE rclone --config "$rc" mkdir "s3:bench-$n-$pl"
    done; done
    echo "bench: filling MinIO bench-$max-0 with $max blocks by keep-rsync PUTs" >&2
    python3 - "$W/src" "$max" <<'EOF'
import hashlib, os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    data = b"block %d" % i
    h = hashlib.md5(data).hexdigest()
    os.makedirs(os.path.join(root, h[:3]), exist_ok=True)
    with open(os.path.join(root, h[:3], h), "wb") as f:
        f.write(data)
EOF
    "$KR" --src-volume-dir "$W/src" --dst-volumes "$(volumes "bench-$max-0" "$SRV_PORT" 0)" -q \
        --transfers 64 --max-per-service 64 >"$W/fill.out" 2>&1 || { tail -5 "$W/fill.out" >&2; exit 1; }
    rm -rf "$W/src"
    python3 - "$W/minio" "$max" "$COUNTS" "$LAYOUTS" <<'EOF'
import hashlib, os, sys
root, mx, counts, layouts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
src = os.path.join(root, f"bench-{mx}-0")
hashes = [hashlib.md5(b"block %d" % i).hexdigest() for i in range(mx)]
for n in map(int, counts):
    for pl in map(int, layouts):
        if n == mx and pl == 0:
            continue
        dst = os.path.join(root, f"bench-{n}-{pl}")
        for h in hashes[:n]:
            k = h[:pl] + "/" + h if pl else h
            for frm, to in ((h, k), ("recent/" + h, "recent/" + k)):
                d = os.path.join(dst, to)
                os.makedirs(d, exist_ok=True)
                os.link(os.path.join(src, frm, "xl.meta"), os.path.join(d, "xl.meta"))
EOF
}

# timed SERVER PL TAG N CMD...: run, record wall, RSS, the server's CPU and
# the lines its stdout had.
timed() {
    local server=$1 pl=$2 tag=$3 n=$4
    shift 4
    local t0 t1 c0 c1 rc=0
    c0=$(cpu "$SRV_PID")
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M %U %S' -o "$W/time.out" "$@" >"$W/out.txt" 2>"$W/err.txt" || rc=$?
    t1=$(date +%s.%N)
    c1=$(cpu "$SRV_PID")
    local lines rss
    lines=$(grep -c . "$W/out.txt" || true)
    # keep-rsync counts what it listed on stderr ("in destination: N").
    if grep -q 'in destination: [0-9]' "$W/err.txt"; then
        lines=$(grep -o 'in destination: [0-9]*' "$W/err.txt" | tail -1 | grep -o '[0-9]*$')
    fi
    read -r rss ucpu scpu < <(tail -1 "$W/time.out")
    python3 -c 'import json,sys; a=sys.argv; print(json.dumps({"server":a[1],"prefix_length":int(a[2]),"tool":a[3],"objects":int(a[4]),"seconds":float(a[6])-float(a[5]),"rss_kib":int(a[7]),"exit":int(a[8]),"lines":int(a[9]),"client_cpu":float(a[10])+float(a[11]),"server_cpu":float(a[13])-float(a[12])}))' \
        "$server" "$pl" "$tag" "$n" "$t0" "$t1" "${rss:-0}" "$rc" "$lines" "${ucpu:-0}" "${scpu:-0}" "$c0" "$c1" >>"$RES"
    if [ "$rc" != 0 ]; then
        echo "bench: $tag at $n objects exited $rc:" >&2
        tail -5 "$W/err.txt" >&2
    fi
    printf 'bench: %-9s PL%s %-20s %7d objects %7.2f s\n' "$server" "$pl" "$tag" "$n" "$(python3 -c "print($t1-$t0)")" >&2
}

mkdir -p "$W/empty"
TOKEN=bench13systemroottoken0123456789abcdefghijklmnop
# keepstore BUCKET PL: a real keepstore whose one volume is the bucket through
# the delay line; its port in KS_PORT, its pid in KS_PID.
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
          PrefixLength: $2
          IndexPageSize: 1000
EOF
    ARVADOS_SERVICE_INTERNAL_URL="http://127.0.0.1:$port/" "$KS" -config "$W/ks-$1.yml" \
        </dev/null >"$W/ks-$1.log" 2>&1 &
    KS_PID=$!
    PIDS+=("$KS_PID")
    wait_port "$port"
    KS_PORT=$port
}

last=${COUNTS##* }
for server in $SERVERS; do
    start_server "$server"
    lag "$server" "$RTT"
    LAG=$LAG_PORT
    lag "$server-zero" 0
    ZERO=$LAG_PORT
    [ "$server" = minio ] && fill_minio
    rc_conf=$(rclone_conf "$LAG")
    for pl in $LAYOUTS; do
        for n in $COUNTS; do
            b=bench-$n-$pl
            if [ "$server" = versitygw ]; then
                echo "bench: filling versitygw $b with $n blocks" >&2
                fill_files "$W/gw/$b" "$n" "$pl"
            fi
            vl=$(volumes "$b" "$LAG" "$pl")
            kr=("$KR" --src-volume-dir "$W/empty" --dst-volumes "$vl" --dry-run)
            if [ "$pl" = 0 ]; then
                rcl=(lsf --files-only "s3:$b")
            else
                rcl=(lsf -R --files-only --max-depth 2 "s3:$b")
            fi
            ks_port=
            if [ -x "$KS" ]; then
                keepstore "$b" "$pl"
                ks_port=$KS_PORT
            fi
            for run in $(seq "$RUNS"); do
                timed "$server" "$pl" keep-rsync "$n" "${kr[@]}"
                timed "$server" "$pl" keep-rsync-c16 "$n" "${kr[@]}" --checkers 16
                timed "$server" "$pl" rclone "$n" env -u AWS_CA_BUNDLE rclone --config "$rc_conf" "${rcl[@]}"
                if [ -n "$ks_port" ]; then
                    timed "$server" "$pl" keepstore "$n" curl -sSf -H "Authorization: Bearer $TOKEN" \
                        "http://127.0.0.1:$ks_port/index"
                fi
            done
            if [ -n "$ks_port" ]; then
                kill "$KS_PID" 2>/dev/null || true
                wait "$KS_PID" 2>/dev/null || true
            fi
        done
    done
    # What the delay line costs: keep-rsync through it at 0 ms and straight
    # to the server, at the largest count.
    pl=${LAYOUTS%% *}
    for run in $(seq "$RUNS"); do
        timed "$server" "$pl" keep-rsync-0ms "$last" "$KR" --src-volume-dir "$W/empty" --dst-volumes "$(volumes "bench-$last-$pl" "$ZERO" "$pl")" --dry-run
        timed "$server" "$pl" keep-rsync-direct "$last" "$KR" --src-volume-dir "$W/empty" --dst-volumes "$(volumes "bench-$last-$pl" "$SRV_PORT" "$pl")" --dry-run
    done
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    rm -rf "$W/gw" "$W/minio"
done
if [ ! -x "$KS" ]; then
    echo "bench: $KS is absent: no keepstore /index rows (/work/shared/tools/real-keepstore/build.sh builds it)" >&2
fi
T_END=$(date +%s.%N)

BENCH_RUNS_USED=$RUNS python3 - "$RES" "$T_START" "$T_END" "$LOAD_START" "$RTT" "$QUICK" "$([ -x "$KS" ] && echo 1 || echo 0)" >"$W/run.json" <<'EOF'
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
    "runs": int(os.environ.get("BENCH_RUNS_USED", "0")),
    "rows": rows,
}, indent=1))
EOF
if [ "$QUICK" = 1 ]; then
    cat "$W/run.json"
else
    mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-s3-listing.json
    echo "bench: docs/bench/last-s3-listing.json written" >&2
fi
