#!/usr/bin/env bash
# The keep-rsync demo, on an embedded default: two keepstore-sim clusters on
# 127.0.0.1 (source: 4 keepstores enforcing blob signatures, filled with 300
# blocks of 1 KiB–4 MiB, 2 replicas each; destination: 4 empty keepstores
# enforcing their own signatures), then keep-rsync copying between them, then
# keep-rsync again to show that the delta is zero.
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
bin="target/$profile"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Tokens and keys are random for each demo run; they are written only to the
# settings files in $work (mode 600), as an admin's would be.
rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
umask 077

start_cluster() { # name prefix extra-args...
  local name=$1 prefix=$2; shift 2
  "$bin/keepstore-sim" --services 4 --uuid-prefix "$prefix" \
    --root-token "$(rand)" --signing-key "$(rand)" --enforce-signatures \
    --services-json "$work/$name.json" --settings-file "$work/$name.conf" "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
}

echo "== starting the source cluster (4 keepstores, $blocks blocks, 2 replicas each) and an empty destination (4 keepstores)"
start_cluster src aaaaa --seed-blocks "$blocks" --seed-sizes 1K-64K,1M-4M --seed-replicas 2 --seed 7
start_cluster dst bbbbb
for f in src dst; do
  for _ in $(seq 1 300); do [ -f "$work/$f.json" ] && break; sleep 0.1; done
  [ -f "$work/$f.json" ] || { echo "keepstore-sim ($f) did not start:"; cat "$work/$f.log"; exit 1; }
done

args=(-src "$work/src.conf" -dst "$work/dst.conf"
      -src-keep-services-json "$work/src.json" -dst-keep-services-json "$work/dst.json"
      -replications 2 -src-blob-signature-ttl 336h)

echo
echo "== keep-rsync ${args[*]//$work/\$WORK}"
"$bin/keep-rsync" "${args[@]}" -q

echo
echo "== the same command again: the destination index is the checkpoint, so nothing moves"
"$bin/keep-rsync" "${args[@]}" -q

echo
echo "== done: every block is on the first 2 destination keepstores of its rendezvous order."
