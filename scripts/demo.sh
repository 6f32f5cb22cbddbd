#!/usr/bin/env bash
# The keep-rsync demo, on an embedded default: two keepstore-sim clusters on
# 127.0.0.1 (source: 4 keepstores enforcing blob signatures, filled with 300
# blocks of 1 KiB–4 MiB, 2 replicas each; destination: 4 empty keepstores
# enforcing their own signatures), then keep-rsync copying between them (with
# Prometheus metrics in a textfile), keep-rsync again to show that the delta
# is zero, and the migration's final check: keep-block-check asks the
# destination for every block that "the database's manifests" reference.
# keep-rsync and keep-block-check are given only each cluster's config.yml
# (as keepstore-sim writes it, as an admin's /etc/arvados/config.yml):
# token, signing key and TTL, keepstores and DefaultReplication come from it,
# and no other flag is needed.
# When versitygw (a real S3 server, installed by scripts/install-test-deps.sh)
# is there, a last act backs the destination up into an S3 bucket in
# keepstore's layout, restores it into a Directory volume, and checks both.
#
# Usage: scripts/demo.sh [--release] [--blocks N]
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
profile=debug
blocks=300
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --blocks) blocks="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

echo "== building keep-rsync and keepstore-sim ($profile)"
if [ "$profile" = release ]; then cargo build --workspace --release --quiet; else cargo build --workspace --quiet; fi
bin="${CARGO_TARGET_DIR:-target}/$profile"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Tokens and keys are random for each demo run; they are written only to the
# clusters' config.yml files in $work (mode 600), as an admin's would be.
rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
umask 077

declare -A token=()
start_cluster() { # name prefix extra-args...
  local name=$1 prefix=$2; shift 2
  token[$name]=$(rand)
  "$bin/keepstore-sim" --services 4 --uuid-prefix "$prefix" \
    --root-token "${token[$name]}" --signing-key "$(rand)" --enforce-signatures \
    --services-json "$work/$name.json" --cluster-config "$work/$name.yml" "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
}

echo "== starting the source cluster (4 keepstores, $blocks blocks, 2 replicas each) and an empty destination (4 keepstores, DefaultReplication 2)"
start_cluster src aaaaa --seed-blocks "$blocks" --seed-sizes 1K-64K,1M-4M --seed-replicas 2 --seed 7
start_cluster dst bbbbb --default-replication 2
for f in src dst; do
  for _ in $(seq 1 300); do [ -f "$work/$f.json" ] && break; sleep 0.1; done
  [ -f "$work/$f.json" ] || { echo "keepstore-sim ($f) did not start:"; cat "$work/$f.log"; exit 1; }
done

# The two config files are all keep-rsync needs: the source's keepstores,
# root token, signing key and BlobSigningTTL, the destination's keepstores,
# root token and DefaultReplication (2). No API server is asked.
args=(-src-cluster-config "$work/src.yml" -dst-cluster-config "$work/dst.yml")

# A few collections written through Keep, as users would: their manifests
# stand for the database's (signed locators, stream names, file tokens).
"$bin/keepstore-sim" seed --services-json "$work/src.json" --root-token "${token[src]}" \
  --blocks 12 --sizes 1K-1M --replicas 2 --seed 8 |
  awk '{ split($1, l, "+"); printf ". %s+A%040d@7fffffff 0:%s:file%d.txt\n", $1, 0, l[2], NR }' \
  >"$work/manifests.txt"

echo
echo "== keep-rsync ${args[*]//$work/\$WORK} --metrics-textfile \$WORK/keep-rsync.prom"
"$bin/keep-rsync" "${args[@]}" -q --metrics-textfile "$work/keep-rsync.prom"
echo
echo "== some of the metrics node_exporter's textfile collector would read (docs/operations.md)"
grep -E '^keep_rsync_(blocks_total|last_run_exit_code)' "$work/keep-rsync.prom"

echo
echo "== the same command again: the destination index is the checkpoint, so nothing moves"
"$bin/keep-rsync" "${args[@]}" -q

echo
echo "== the final check: keep-block-check -cluster-config \$WORK/dst.yml asks the destination for every block the manifests reference"
"$bin/keep-block-check" -cluster-config "$work/dst.yml" -block-hash-file "$work/manifests.txt"

backup_act() {
  local gw=.tools/bin/versitygw port
  if [ ! -x "$gw" ]; then
    echo
    echo "== (no S3 server: run scripts/install-test-deps.sh for the backup-to-a-bucket act)"
    return
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local key secret
  key=$(rand) secret=$(rand)
  mkdir -p "$work/s3/keep-backup" "$work/restored"
  "$gw" --access "$key" --secret "$secret" --region us-east-1 --port "127.0.0.1:$port" \
    --health /health --keep-alive --quiet posix "$work/s3" >"$work/s3.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health')" 2>/dev/null && break
    sleep 0.1
  done
  # The volume as an admin writes it in a cluster's config.yml (the keys
  # stay in this mode-600 file).
  cat >"$work/backup-volumes.yml" <<YML
zzzzz-nyw5e-000000000000000:
  Driver: S3
  Replication: 1
  DriverParameters:
    Bucket: keep-backup
    Endpoint: http://127.0.0.1:$port
    Region: us-east-1
    AccessKeyID: $key
    SecretAccessKey: $secret
    PrefixLength: 3
YML
  echo
  echo "== backup: keep-rsync -src-cluster-config \$WORK/dst.yml --dst-volumes \$WORK/backup-volumes.yml (an S3 bucket, keepstore's layout)"
  "$bin/keep-rsync" -src-cluster-config "$work/dst.yml" --dst-volumes "$work/backup-volumes.yml" -q
  echo "   bucket now holds $(find "$work/s3/keep-backup" -path '*/recent' -prune -o -type f -print | wc -l) blocks" \
    "and $(find "$work/s3/keep-backup/recent" -type f | wc -l) recent/ markers"
  echo
  echo "== restore: keep-rsync --src-volumes \$WORK/backup-volumes.yml --dst-volume-dir \$WORK/restored (a Directory volume)"
  "$bin/keep-rsync" --src-volumes "$work/backup-volumes.yml" --dst-volume-dir "$work/restored" -q
  echo
  echo "== the restored volume holds every block the manifests reference (keep-block-check --volume-dir --read)"
  "$bin/keep-block-check" --volume-dir "$work/restored" -block-hash-file "$work/manifests.txt" --read
}
backup_act

echo
echo "== done: every block is on the first 2 destination keepstores of its rendezvous order,"
echo "   and every block the manifests reference is at the destination (0 errors)."
