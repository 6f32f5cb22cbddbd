#!/usr/bin/env bash
# Scenario 15 (scripts/bench.sh --azure; docs/benchmarks.md, "Azure Blob
# volumes (scenario 15)"): keep-rsync's Azure Blob volumes against rclone's
# azureblob backend, on one Azurite (Node.js, single-threaded; the npm
# package of scripts/install-test-deps.sh, .tools/azurite) over HTTPS with a
# self-signed certificate (openssl), disk persistence in the work directory.
# Two data sets of random bytes named by MD5 in keepstore's Directory layout
# SRC/xyz/HASH: "big", BENCH_S15_BIG (8) blocks of 64 MiB, and "small",
# BENCH_S15_SMALL (2000) blocks of 4 KiB. Every round (BENCH_RUNS, 3) copies
# each set, tools alternating within the round (keep-rsync first in odd
# rounds, rclone first in even ones):
#   dir -> container: keep-rsync (--src-volume-dir SRC --dst-volumes AZ.yml,
#                     a Driver: Azure volume addressed as keepstore does,
#                     https://ACCOUNT.blob.azurite.test:PORT/CONTAINER: run
#                     in a private mount namespace (unshare -m, as root)
#                     whose /etc/hosts maps that name to 127.0.0.1);
#                     rclone copy with its best flags (--transfers 32
#                     --checkers 16 --no-check-dest), in round 1 also with
#                     its defaults (endpoint blob.azurite.test:PORT, the
#                     same name in the same kind of namespace);
#   container -> dir: keep-rsync from its container, rclone from its own;
# each into a fresh empty container or directory, deleted afterwards. Around
# each copy: Azurite's CPU time (/proc/PID/stat), the host's (/proc/stat),
# the load average; after it, a count of what arrived (blob or file names
# and sizes; MD5 of two): an incomplete copy stops the scenario.
#
#   scripts/bench-azure.sh [--quick]   (--quick: 2 big, 200 small, one run,
#                                       printed, docs/ untouched)
#
# Environment: BENCH_S15_BIG, BENCH_S15_SMALL, BENCH_RUNS, BENCH_KEEP=1
# keeps the work directory, AZURITE_BLOB (default
# .tools/azurite/node_modules/.bin/azurite-blob).
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
BIG=${BENCH_S15_BIG:-8}
SMALL=${BENCH_S15_SMALL:-2000}
RUNS=${BENCH_RUNS:-3}
if [ "$QUICK" = 1 ]; then
    BIG=${BENCH_S15_BIG:-2}
    SMALL=${BENCH_S15_SMALL:-200}
    RUNS=${BENCH_RUNS:-1}
fi
AZ=${AZURITE_BLOB:-$ROOT/.tools/azurite/node_modules/.bin/azurite-blob}
for need in "$AZ" /usr/bin/time /usr/bin/openssl; do
    if [ ! -x "$need" ]; then
        echo "bench: scenario 15 needs $need (scripts/install-test-deps.sh; apt-get install -y time openssl)" >&2
        exit 2
    fi
done
command -v rclone >/dev/null || { echo "bench: scenario 15 needs rclone (apt-get install -y rclone)" >&2; exit 2; }
if [ "$(id -u)" != 0 ]; then
    echo "bench: scenario 15 needs root (unshare -m and a bind mount over /etc/hosts)" >&2
    exit 2
fi
T_START=$(date +%s.%N)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: cargo build --release --bin keep-rsync" >&2
cargo build --release --quiet --bin keep-rsync
KR=${CARGO_TARGET_DIR:-$ROOT/target}/release/keep-rsync

W=$(mktemp -d /tmp/keep-rsync-s15.XXXXXX)
RES=$W/results.jsonl
: >"$RES"
AZ_PID=
cleanup() {
    [ -n "$AZ_PID" ] && kill "$AZ_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }

ACCOUNT=keeprsyncbench
KEY=$(printf 'keep-rsync-bench-azurite-key-not-a-real-one-015' | base64 -w0)
BASE=azurite.test
HOST=$ACCOUNT.blob.$BASE
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$HOST" \
    -addext "subjectAltName=DNS:$HOST,IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
{ cat /etc/hosts; echo "127.0.0.1 $HOST"; } >"$W/hosts"
mkdir -p "$W/az"
for attempt in 1 2 3; do
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    AZURITE_ACCOUNTS="$ACCOUNT:$KEY" "$AZ" --blobHost 127.0.0.1 --blobPort "$PORT" \
        --location "$W/az" --cert "$W/cert.pem" --key "$W/key.pem" \
        --skipApiVersionCheck --loose --silent --disableTelemetry </dev/null >"$W/azurite.log" 2>&1 &
    AZ_PID=$!
    for _ in $(seq 300); do
        (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break 2
        kill -0 "$AZ_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$AZ_PID" 2>/dev/null || true
    wait "$AZ_PID" 2>/dev/null || true
    AZ_PID=
    [ "$attempt" = 3 ] && { echo "bench: Azurite did not start:" >&2; cat "$W/azurite.log" >&2; exit 1; }
done
# The node process itself (azurite-blob is a node script): its CPU is Azurite's.
AZ_NODE=$AZ_PID

export SSL_CERT_FILE=$W/cert.pem
export RCLONE_CONFIG_AZ_TYPE=azureblob RCLONE_CONFIG_AZ_ACCOUNT=$ACCOUNT RCLONE_CONFIG_AZ_KEY=$KEY \
    RCLONE_CONFIG_AZ_ENDPOINT=blob.$BASE:$PORT
# Both tools reach the account by its production-style name
# (https://ACCOUNT.blob.BASE:PORT; rclone 1.60 puts "ACCOUNT." before its
# endpoint), in a private mount namespace whose /etc/hosts maps it.
INNS=(unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$W/hosts")
RCLONE=("${INNS[@]}" rclone --config /dev/null)
RCLONE_BEST=(--transfers 32 --checkers 16 --no-check-dest)

# volumes CONTAINER: a volumes file naming one Azure volume.
volumes() {
    cat >"$W/$1.yml" <<EOF
zzzzz-nyw5e-000000000000015:
  Driver: Azure
  Replication: 1
  DriverParameters:
    StorageAccountName: $ACCOUNT
    StorageAccountKey: $KEY
    StorageBaseURL: $BASE:$PORT
    ContainerName: $1
EOF
    echo "$W/$1.yml"
}

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# copy TAG KIND WHERE CMD...: run CMD under GNU time with Azurite's and the
# host's CPU around it, then check WHERE (KIND az: a container, blob names
# HASH or xyz/HASH; dir: a directory DIR/xyz/HASH) against $LIST.
copy() {
    local tag=$1 kind=$2 where=$3 t0 t1 rc=0 c0 c1
    shift 3
    rm -f "$W/report.json"
    c0=$(cpu_ticks "$AZ_NODE")
    head -1 /proc/stat >"$W/stat0"
    t0=$(now)
    /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" "$@" >"$W/out.txt" 2>"$W/err.txt" || rc=$?
    t1=$(now)
    head -1 /proc/stat >"$W/stat1"
    c1=$(cpu_ticks "$AZ_NODE")
    if [ "$kind" = az ]; then
        "${RCLONE[@]}" --retries 1 lsjson -R --files-only "az:$where" >"$W/listing.json" 2>>"$W/err.txt" || echo '[]' >"$W/listing.json"
    fi
    if ! python3 - "$tag" "$t0" "$t1" "$rc" "$c0" "$c1" "$(getconf CLK_TCK)" "$LIST" "$kind" "$where" \
        "$W" "$ROOT" "$(cut -d' ' -f1 /proc/loadavg)" "$*" >>"$RES" <<'EOF'
import hashlib, json, os, re, sys
tag, t0, t1, rc, c0, c1, tck, listf, kind, where, work, root, load1, cmd = sys.argv[1:]
tck = int(tck)
e, u, s, m = open(os.path.join(work, "time.txt")).read().split()[-4:]
row = dict(json.loads(tag), wall=float(t1) - float(t0), user=float(u), sys=float(s),
           maxrss_kib=int(m), rc=int(rc), server_cpu=(int(c1) - int(c0)) / tck, load1=float(load1),
           cmd=cmd.replace(work, "$W").replace(root + "/", ""))
a = [int(x) for x in open(os.path.join(work, "stat0")).read().split()[1:9]]
b = [int(x) for x in open(os.path.join(work, "stat1")).read().split()[1:9]]
d = [y - x for x, y in zip(a, b)]
row["host"] = {"busy": (d[0] + d[1] + d[2] + d[5] + d[6]) / tck, "iowait": d[4] / tck, "idle": d[3] / tck}
if row["tool"].startswith("keep-rsync"):
    try:
        r = json.load(open(os.path.join(work, "report.json")))
        row["report"] = {k: r.get(k) for k in ("status", "elapsed_seconds", "copied", "copied_bytes",
                                                "failed", "buffer_memory")}
    except Exception as ex:
        row["report_error"] = str(ex)
want = {}
for l in open(listf):
    h, n = l.split()
    want[h] = int(n)
HEX = re.compile(r"[0-9a-f]{32}$")
found = {}
if kind == "az":
    for o in json.load(open(os.path.join(work, "listing.json"))):
        name = o["Path"].rsplit("/", 1)[-1]
        if HEX.match(name):
            found[name] = o["Size"]
else:
    for dp, _, files in os.walk(where):
        for fn in files:
            if HEX.match(fn):
                found[fn] = os.path.getsize(os.path.join(dp, fn))
missing = [h for h in want if found.get(h) != want[h]]
corrupt = 0
if kind == "dir":
    for h in sorted(want)[:2]:
        p = os.path.join(where, h[:3], h)
        if os.path.exists(p):
            corrupt += hashlib.md5(open(p, "rb").read()).hexdigest() != h
row["check"] = {"blocks": len(found), "want": len(want), "missing_or_wrong_size": len(missing),
                "md5_bad": corrupt}
bad = bool(missing) or len(found) != len(want) or corrupt or row["rc"] != 0
row["bytes"] = None if bad else sum(want.values())
print(json.dumps(row))
mbps = sum(want.values()) / row["wall"] / 1e6
print("bench: scenario 15 %-6s %-16s %-8s run %d  wall %6.2fs  %7.1f MB/s  cpu %6.2fs  azurite cpu %6.2fs  rss %6.1f MiB  blocks %d/%d" % (
    row["data"], row["tool"], row["dir"], row["run"], row["wall"], mbps, row["user"] + row["sys"],
    row["server_cpu"], row["maxrss_kib"] / 1024, len(found), len(want)), file=sys.stderr)
if bad:
    print("bench: scenario 15: INCOMPLETE COPY (%s, exit %s): %s" % (row["cmd"], rc, json.dumps(row["check"])),
          file=sys.stderr)
    sys.exit(1)
EOF
    then
        tail -5 "$W/err.txt" >&2
        echo "bench: scenario 15 failed: $tag" >&2
        exit 1
    fi
}

container() { "${RCLONE[@]}" --retries 1 mkdir "az:$1"; }
drop() { "${RCLONE[@]}" --retries 1 --low-level-retries 1 purge "az:$1" 2>/dev/null || true; }

# data NAME BLOCKS SIZE: the data set, then every round of copies.
data() {
    local d=$1 n=$2 size=$3 src=$W/src-$1 dst=$W/dst run t
    python3 - "$src" "$n" "$size" >"$W/$d.list" <<'EOF'
import hashlib, os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    b = os.urandom(size)
    h = hashlib.md5(b).hexdigest()
    os.makedirs(os.path.join(root, h[:3]), exist_ok=True)
    with open(os.path.join(root, h[:3], h), "wb") as f:
        f.write(b)
    print(h, size)
EOF
    LIST=$W/$d.list
    t="\"scenario\":15,\"data\":\"$d\",\"blocks\":$n"
    kr_put() {
        drop keep-rsync; container keep-rsync
        copy "{$t,\"tool\":\"keep-rsync\",\"dir\":\"dir-az\",\"run\":$run}" az keep-rsync \
            env SSL_CERT_FILE="$SSL_CERT_FILE" "${INNS[@]}" "$KR" --src-volume-dir "$src" \
            --dst-volumes "$(volumes keep-rsync)" -q --report "$W/report.json"
    }
    rc_put() {
        drop rclone; container rclone
        copy "{$t,\"tool\":\"rclone\",\"dir\":\"dir-az\",\"run\":$run}" az rclone \
            "${RCLONE[@]}" copy "$src" az:rclone "${RCLONE_BEST[@]}" -q
        if [ "$run" = 1 ]; then
            drop rclone-defaults; container rclone-defaults
            copy "{$t,\"tool\":\"rclone-defaults\",\"dir\":\"dir-az\",\"run\":$run}" az rclone-defaults \
                "${RCLONE[@]}" copy "$src" az:rclone-defaults -q
        fi
    }
    kr_get() {
        rm -rf "$dst" && mkdir "$dst"
        copy "{$t,\"tool\":\"keep-rsync\",\"dir\":\"az-dir\",\"run\":$run}" dir "$dst" \
            env SSL_CERT_FILE="$SSL_CERT_FILE" "${INNS[@]}" "$KR" --src-volumes "$W/keep-rsync.yml" \
            --dst-volume-dir "$dst" -q --report "$W/report.json"
    }
    rc_get() {
        rm -rf "$dst" && mkdir "$dst"
        copy "{$t,\"tool\":\"rclone\",\"dir\":\"az-dir\",\"run\":$run}" dir "$dst" \
            "${RCLONE[@]}" copy az:rclone "$dst" "${RCLONE_BEST[@]}" -q
        if [ "$run" = 1 ]; then
            rm -rf "$dst" && mkdir "$dst"
            copy "{$t,\"tool\":\"rclone-defaults\",\"dir\":\"az-dir\",\"run\":$run}" dir "$dst" \
                "${RCLONE[@]}" copy az:rclone-defaults "$dst" -q
        fi
    }
    for run in $(seq "$RUNS"); do
        if [ $((run % 2)) = 1 ]; then
            kr_put; rc_put; kr_get; rc_get
        else
            rc_put; kr_put; rc_get; kr_get
        fi
        drop keep-rsync; drop rclone; drop rclone-defaults
        rm -rf "$dst"
    done
    rm -rf "$src"
}
data big "$BIG" $((64 << 20))
data small "$SMALL" 4096
T_END=$(date +%s.%N)

python3 - "$RES" "$T_START" "$T_END" "$LOAD_START" "$QUICK" "$AZ" "$BIG" "$SMALL" "$RUNS" \
    "${RCLONE_BEST[*]}" "$(df -PT "$W" | awk 'NR == 2 {print $2 " " $1}')" >"$W/run.json" <<'EOF'
import json, os, subprocess, sys
res, t0, t1, load0, quick, az, big, small, runs, best, fs = sys.argv[1:]
rows = [json.loads(l) for l in open(res)]
def out(*a):
    try:
        return subprocess.run(list(a), capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({
    "mode": "azure-quick" if quick == "1" else "azure",
    "date": out("date", "-u", "+%Y-%m-%d %H:%M UTC"),
    "commit": out("git", "rev-parse", "--short", "HEAD"),
    "seconds": float(t1) - float(t0),
    "load_before": load0,
    "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
    "machine": {"nproc": os.cpu_count(), "cpu": cpu,
                "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
                "kernel": os.uname().release},
    "azure": {"azurite": out(az, "--version"), "node": out("node", "--version"),
              "rclone": out("rclone", "version").splitlines()[0], "filesystem": fs,
              "big": {"blocks": int(big), "sizes": "64M"}, "small": {"blocks": int(small), "sizes": "4K"},
              "runs": int(runs), "rclone_best": best},
    "rows": rows,
}, indent=1))
EOF
if [ "$QUICK" = 1 ]; then
    cat "$W/run.json"
else
    mkdir -p docs/bench && cp "$W/run.json" docs/bench/last-azure.json
    python3 scripts/bench-report.py >docs/benchmarks.md
    echo "bench: docs/bench/last-azure.json and docs/benchmarks.md written" >&2
fi
