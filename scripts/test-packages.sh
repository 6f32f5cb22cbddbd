#!/usr/bin/env bash
# The packages, installed for real (scripts/test.sh runs this after the Rust
# tests): builds them with scripts/package.sh, then on this machine
#   1. dpkg -i the .deb; the installed keep-rsync -version and
#      keep-block-check -version say the package version and git commit;
#   2. man -w finds both man pages; the bash completions pass bash -n and
#      register with `complete` (zsh -n, fish -n too where those are);
#   3. systemd-analyze verify passes on keep-rsync@.service and .timer
#      instances (no running systemd needed);
#   4. the unit's own ExecStart line, with an instance env file, run as the
#      keep-rsync user the package created, copies between two
#      keepstore-sim clusters and writes its report and metrics in
#      /var/lib/keep-rsync; a rerun by hand moves 0 blocks and a dry run
#      plans none;
#   5. the container image's runtime, laid out as a chroot (the Containerfile
#      cannot be built here): the Kubernetes Indexed Job's container command,
#      for completion indexes 0-f as uid 65532 under busybox sh, copies
#      every block of a keepstore-sim cluster;
#   6. dpkg -r removes it: no file it installed is left, and the reports
#      and metrics in /var/lib/keep-rsync stay (only the postrm is kept, for
#      the purge); dpkg -P then removes /var/lib/keep-rsync, and dpkg holds
#      no record of it;
#   7. the .rpm lists the same files (rpm -qpl) and says the same version
#      (rpm -qpi).
# Needs root (dpkg -i) and the tools scripts/install-test-deps.sh installs.
# Without them it says "SKIPPED packages: why"; under CI=true that fails.
set -euo pipefail
cd "$(dirname "$0")/.."

case ${CI:-} in
    true | TRUE | True | 1) ci=1 ;;
    *) ci=0 ;;
esac
skip() {
    if [ "$ci" = 1 ]; then
        echo "FAILED packages: $1 (CI=$CI: a skip is a failure)" >&2
        exit 1
    fi
    echo "SKIPPED packages: $1"
    exit 0
}
fail() {
    echo "FAILED packages: $*" >&2
    exit 1
}
step() { echo "test-packages: $*"; }

[ "$(id -u)" = 0 ] || skip "not root: dpkg -i and the keep-rsync user need root"
for t in dpkg-deb dpkg-shlibdeps rpmbuild rpm systemd-analyze man runuser python3; do
    command -v "$t" >/dev/null 2>&1 || skip "$t is missing (scripts/install-test-deps.sh installs it)"
done
if dpkg-query -W -f='${db:Status-Status}' keep-rsync 2>/dev/null | grep -qv '^not-installed$'; then
    skip "a keep-rsync package is already installed here; dpkg -r keep-rsync first"
fi
sim=${CARGO_TARGET_DIR:-$PWD/target}/debug/keepstore-sim
[ -x "$sim" ] || skip "$sim is missing (cargo build --workspace builds it)"

work=$(mktemp -d)
pids=()
mounted=()
cleanup() {
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work" /etc/keep-rsync/pkgtest.env /etc/keep-rsync/pkgtest-src.yml /etc/keep-rsync/pkgtest-dst.yml
    rmdir /etc/keep-rsync 2>/dev/null || true
    # Installed by this script: leave nothing behind when a check failed
    # (the purge also removes /var/lib/keep-rsync).
    if dpkg-query -W -f='${db:Status-Status}' keep-rsync 2>/dev/null | grep -Eq '^(installed|config-files|half-installed|unpacked|half-configured)$'; then
        dpkg -P keep-rsync >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

step "building the packages (scripts/package.sh ${PACKAGE_ARGS:-})"
# shellcheck disable=SC2086
made=$(bash scripts/package.sh ${PACKAGE_ARGS:-})
deb=$(grep '\.deb$' <<<"$made")
rpmf=$(grep '\.rpm$' <<<"$made")
version=$(dpkg-deb -f "$deb" Version)
upstream=${version%-*}

# --- 1. install ---------------------------------------------------------
step "dpkg -i $(basename "$deb")"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i failed"; }
dpkg -L keep-rsync >"$work/files"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
for b in keep-rsync keep-block-check; do
    out=$("/usr/bin/$b" -version)
    [ "$out" = "$b $upstream (git $commit)" ] || fail "/usr/bin/$b -version says '$out', not '$b $upstream (git $commit)'"
done
step "installed keep-rsync -version: $(/usr/bin/keep-rsync -version)"

# --- 2. man pages and completions ----------------------------------------
for b in keep-rsync keep-block-check; do
    page=$(man -w "$b") || fail "man -w $b finds no page"
    [ "$page" = "/usr/share/man/man1/$b.1.gz" ] || fail "man -w $b: $page, not the package's page"
    man "$b" 2>/dev/null | grep -q 'EXIT CODES' || fail "man $b has no EXIT CODES section"
    bash -n "/usr/share/bash-completion/completions/$b" || fail "the bash completion of $b does not parse"
    bash -c "source /usr/share/bash-completion/completions/$b && complete -p $b" >/dev/null ||
        fail "the bash completion of $b does not register"
    if command -v zsh >/dev/null 2>&1; then zsh -n "/usr/share/zsh/vendor-completions/_$b" || fail "zsh completion of $b"; fi
    if command -v fish >/dev/null 2>&1; then fish -n "/usr/share/fish/vendor_completions.d/$b.fish" || fail "fish completion of $b"; fi
done
step "man -w keep-rsync: $(man -w keep-rsync); bash completions parse and register"

# --- 3. systemd units ----------------------------------------------------
# verify resolves instances of the templates; run it away from the repo
# (it also reads unit files in the working directory).
(cd "$work" && systemd-analyze verify /usr/lib/systemd/system/keep-rsync@pkgtest.service \
    /usr/lib/systemd/system/keep-rsync@pkgtest.timer) >"$work/verify.log" 2>&1 ||
    { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
[ ! -s "$work/verify.log" ] || { cat "$work/verify.log" >&2; fail "systemd-analyze verify printed warnings"; }
step "systemd-analyze verify keep-rsync@pkgtest.service keep-rsync@pkgtest.timer: clean"
getent passwd keep-rsync >/dev/null || fail "the package created no keep-rsync user"

# --- 4. a copy, as the unit runs it ---------------------------------------
rand() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
start_cluster() { # name uuid-prefix extra-args...
    local name=$1 prefix=$2
    shift 2
    "$sim" --services 2 --uuid-prefix "$prefix" --root-token "$(rand)" --signing-key "$(rand)" \
        --enforce-signatures --services-json "$work/$name.json" --cluster-config "$work/$name.yml" "$@" \
        >"$work/$name.log" 2>&1 &
    pids+=($!)
}
start_cluster src aaaaa --seed-blocks 40 --seed-sizes 1K-256K --seed-replicas 1 --seed 3
start_cluster dst bbbbb --default-replication 2
for f in src dst; do
    for _ in $(seq 1 300); do [ -f "$work/$f.yml" ] && break; sleep 0.1; done
    [ -f "$work/$f.yml" ] || { cat "$work/$f.log" >&2; fail "keepstore-sim ($f) did not start"; }
done
# As an admin sets up an instance: its env file and the cluster config
# files it names, readable by the keep-rsync user only.
install -d -m 755 /etc/keep-rsync
install -m 600 -o keep-rsync -g keep-rsync "$work/src.yml" /etc/keep-rsync/pkgtest-src.yml
install -m 600 -o keep-rsync -g keep-rsync "$work/dst.yml" /etc/keep-rsync/pkgtest-dst.yml
sed -e 's|^KEEP_RSYNC_ARGS=.*|KEEP_RSYNC_ARGS=-src-cluster-config /etc/keep-rsync/pkgtest-src.yml -dst-cluster-config /etc/keep-rsync/pkgtest-dst.yml|' \
    -e 's|^KEEP_RSYNC_WINDOW=.*|KEEP_RSYNC_WINDOW=10m|' \
    /usr/share/doc/keep-rsync/examples/keep-rsync.env >/etc/keep-rsync/pkgtest.env
chmod 600 /etc/keep-rsync/pkgtest.env
# What systemd would do: create the state directories (StateDirectory=),
# read the env file, expand the ExecStart line of the installed unit for
# instance "pkgtest" ($VAR splits on spaces, ${VAR} is one word), and run it
# as User=keep-rsync.
install -d -m 755 -o keep-rsync -g keep-rsync /var/lib/keep-rsync /var/lib/keep-rsync/metrics
mapfile -t cmd < <(python3 - /usr/lib/systemd/system/keep-rsync@.service /etc/keep-rsync/pkgtest.env pkgtest <<'PY'
import re, sys
unit, envfile, inst = sys.argv[1:]
text = open(unit).read().replace("\\\n", " ")
env = {}
for line in text.splitlines():
    if line.startswith("Environment="):
        k, v = line[len("Environment="):].split("=", 1)
        env[k] = v
for line in open(envfile):
    line = line.strip()
    if line and not line.startswith("#"):
        k, v = line.split("=", 1)
        env[k] = v
(exec_start,) = [l[len("ExecStart="):] for l in text.splitlines() if l.startswith("ExecStart=")]
words = []
for w in exec_start.replace("%i", inst).split():
    m = re.fullmatch(r"\$(\w+)", w)
    if m:
        words += env.get(m.group(1), "").split()
    else:
        words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), w))
print("\n".join(words))
PY
)
step "the unit's ExecStart as keep-rsync: ${cmd[*]}"
rc=0
runuser -u keep-rsync -- "${cmd[@]}" >"$work/unit.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || { cat "$work/unit.log" >&2; fail "the unit's command exited $rc"; }
python3 - /var/lib/keep-rsync/pkgtest.json <<'PY' || fail "the unit's report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "complete" and r["exit_code"] == 0, r["status"]
assert r["copied"] == 40, r["copied"]
assert r["replicas_written"] == 80, r["replicas_written"]
PY
grep -q '^keep_rsync_last_run_exit_code' /var/lib/keep-rsync/metrics/keep-rsync-pkgtest.prom ||
    fail "no metrics in /var/lib/keep-rsync/metrics/keep-rsync-pkgtest.prom"
step "copied 40 blocks x 2 replicas; report and metrics in /var/lib/keep-rsync"
/usr/bin/keep-rsync -src-cluster-config "$work/src.yml" -dst-cluster-config "$work/dst.yml" -q \
    --report "$work/rerun.json" >"$work/rerun.log" 2>&1 || { cat "$work/rerun.log" >&2; fail "the rerun"; }
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["copied"] == 0, r["copied"]' "$work/rerun.json" ||
    fail "the rerun copied blocks"
# Every block the source holds, by its index, is at the destination.
/usr/bin/keep-rsync -src-cluster-config "$work/src.yml" -dst-cluster-config "$work/dst.yml" \
    --dry-run --report "$work/dry.json" -q >/dev/null 2>&1 || fail "the dry run"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["plan"]["to_copy"] == 0, r["plan"]' "$work/dry.json" ||
    fail "the destination lacks blocks after the copy"
step "a rerun copies 0 blocks; a dry run plans 0"

# --- 5. the container image's runtime -------------------------------------
# The Containerfile's runtime stage cannot be built here (no image registry),
# so lay out the same root in a chroot: the dist binaries in /usr/local/bin,
# only the shared libraries they need (what distroless/cc provides: glibc,
# libgcc_s), CA certificates, /etc/passwd with nonroot 65532, and Debian's
# static busybox as /bin/sh with the applets the Containerfile links. Root
# owns it all and /tmp is not writable, as with readOnlyRootFilesystem; the
# Secret is /etc/keep-rsync (group 65532, mode 0440, as fsGroup makes it)
# and the claim is /shards. Then the Kubernetes Job's own container command
# runs for every completion index, as uid 65532, against a fresh destination.
[ -x /bin/busybox ] || skip "/bin/busybox is missing (scripts/install-test-deps.sh installs busybox-static)"
py=.venv/bin/python
"$py" -c 'import yaml' 2>/dev/null || skip "$py with PyYAML is missing (scripts/install-test-deps.sh makes it)"
dist=${CARGO_TARGET_DIR:-$PWD/target}/dist
img=$work/image
install -d -m 755 "$img"/{bin,usr/local/bin,etc/ssl/certs,etc/keep-rsync,dev,proc,tmp}
chmod 555 "$img/tmp"
install -d -m 775 -o 65532 -g 65532 "$img/shards"
install -m 755 "$dist/keep-rsync" "$dist/keep-block-check" "$img/usr/local/bin/"
install -m 755 /bin/busybox "$img/bin/busybox"
# The applets the Containerfile links, read from it.
applets=$(sed -n 's/.*for tool in \(.*\); do ln -s busybox.*/\1/p' Containerfile)
[ -n "$applets" ] || fail "no busybox applets found in the Containerfile"
for a in $applets; do ln -s busybox "$img/bin/$a"; done
for lib in $(ldd "$dist/keep-rsync" "$dist/keep-block-check" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u); do
    install -D -m 755 "$lib" "$img$lib"
done
[ -f /etc/ssl/certs/ca-certificates.crt ] && install -m 644 /etc/ssl/certs/ca-certificates.crt "$img/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$img/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$img/etc/group"
# A device node works only where the work directory is not mounted nodev;
# else bind the host's.
if ! { mknod -m 666 "$img/dev/null" c 1 3 2>/dev/null && : <"$img/dev/null" 2>/dev/null; }; then
    rm -f "$img/dev/null"
    { touch "$img/dev/null" && mount --bind /dev/null "$img/dev/null" && mounted+=("$img/dev/null"); } ||
        fail "cannot make /dev/null in the chroot (mknod and mount --bind both refused)"
fi
mount -t proc proc "$img/proc" 2>/dev/null && mounted+=("$img/proc")
start_cluster img ccccc --default-replication 2
for _ in $(seq 1 300); do [ -f "$work/img.yml" ] && break; sleep 0.1; done
[ -f "$work/img.yml" ] || { cat "$work/img.log" >&2; fail "keepstore-sim (img) did not start"; }
install -m 440 -g 65532 "$work/src.yml" "$img/etc/keep-rsync/src-config.yml"
install -m 440 -g 65532 "$work/img.yml" "$img/etc/keep-rsync/dst-config.yml"
chroot_bin=$(command -v chroot) || fail "chroot is missing (coreutils)"
in_image() { # ENV... -- ARGV...: run ARGV in the chroot as the image's user, with the pod's environment
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    env -i PATH=/usr/local/bin:/bin HOME=/home/nonroot "${envs[@]}" "$chroot_bin" --userspec=65532:65532 "$img" "$@"
}
out=$(in_image -- /usr/local/bin/keep-rsync -version) ||
    fail "keep-rsync -version in the image's runtime"
[ "$out" = "keep-rsync $upstream (git $commit)" ] || fail "keep-rsync -version in the image's runtime: $out"
# The pod's env values and its command + args, NUL-separated.
"$py" - scripts/kubernetes/keep-rsync-indexed-job.yaml "$work/pod.env" "$work/pod.argv" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(job,) = [d for d in docs if d["kind"] == "Job"]
(c,) = job["spec"]["template"]["spec"]["containers"]
open(sys.argv[2], "w").write("".join(f"{e['name']}={e['value']}\0" for e in c["env"] if "value" in e))
open(sys.argv[3], "w").write("".join(a + "\0" for a in c["command"] + c.get("args", [])))
PY
mapfile -d '' podenv <"$work/pod.env"
mapfile -d '' argv <"$work/pod.argv"
[ "${argv[0]}" = /bin/sh ] || fail "the Job's command does not start with /bin/sh: ${argv[0]}"
for i in $(seq 0 15); do
    rc=0
    in_image "${podenv[@]}" JOB_COMPLETION_INDEX="$i" KEEP_RSYNC_MEMORY_MIB=512 -- \
        "${argv[@]}" >"$work/pod-$i.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { cat "$work/pod-$i.log" >&2; fail "completion index $i exited $rc in the image's runtime"; }
done
"$py" - "$img/shards" <<'PY' || fail "the shards' reports"
import json, os, sys
d = sys.argv[1]
copied = 0
for i in range(16):
    p = f"{i:x}"
    assert os.path.exists(os.path.join(d, p + ".done")), p + ".done missing"
    r = json.load(open(os.path.join(d, p + ".json")))
    assert r["status"] == "complete" and r["prefix"] == p, (p, r["status"], r.get("prefix"))
    copied += r["copied"]
assert copied == 40, copied
PY
"$dist/keep-rsync" -src-cluster-config "$work/src.yml" -dst-cluster-config "$work/img.yml" \
    --dry-run --report "$work/dry-img.json" -q >/dev/null 2>&1 || fail "the dry run after the pods"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["plan"]["to_copy"] == 0, r["plan"]' "$work/dry-img.json" ||
    fail "the destination lacks blocks after the 16 pods"
step "the image's runtime (chroot: busybox sh, $(ls "$img"/lib* "$img"/usr/lib* -R 2>/dev/null | grep -c '\.so') libraries, uid 65532, read-only root): the Job's command for indexes 0-f copied 40 blocks"

# --- 6. remove ------------------------------------------------------------
dpkg -r keep-rsync >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log" >&2; fail "dpkg -r failed"; }
status=$(dpkg-query -W -f='${db:Status-Status}' keep-rsync 2>/dev/null || echo not-installed)
# A package with a postrm stays as config-files until it is purged.
[ "$status" = config-files ] || fail "after dpkg -r, dpkg says keep-rsync is '$status', not config-files"
left=()
while read -r f; do
    [ -d "$f" ] && [ ! -L "$f" ] && continue
    [ -e "$f" ] || [ -L "$f" ] && left+=("$f")
done <"$work/files"
[ -e /usr/share/doc/keep-rsync ] && left+=(/usr/share/doc/keep-rsync)
[ ${#left[@]} = 0 ] || fail "dpkg -r left ${left[*]}"
command -v keep-rsync >/dev/null 2>&1 && fail "keep-rsync is still on PATH after dpkg -r"
for kept in /var/lib/keep-rsync/pkgtest.json /var/lib/keep-rsync/metrics/keep-rsync-pkgtest.prom; do
    [ -f "$kept" ] || fail "dpkg -r removed $kept: a removed package's reports must stay until it is purged"
done
step "dpkg -r: none of its $(wc -l <"$work/files") paths left; the reports in /var/lib/keep-rsync stay (the keep-rsync user too, as Debian keeps system users)"
dpkg -P keep-rsync >"$work/dpkg-p.log" 2>&1 || { cat "$work/dpkg-p.log" >&2; fail "dpkg -P failed"; }
status=$(dpkg-query -W -f='${db:Status-Status}' keep-rsync 2>/dev/null || echo not-installed)
[ "$status" = not-installed ] || fail "after dpkg -P, dpkg says keep-rsync is '$status'"
[ ! -e /var/lib/keep-rsync ] || fail "dpkg -P left /var/lib/keep-rsync"
step "dpkg -P: /var/lib/keep-rsync removed, dpkg has no record"

# --- 7. the .rpm --------------------------------------------------------------
rpm -qpl "$rpmf" 2>/dev/null | sort >"$work/rpm-files"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {sub(/^\./, "", $6); print $6}' |
    sed 's|/usr/share/zsh/vendor-completions/|/usr/share/zsh/site-functions/|' | sort >"$work/deb-files"
comm -23 "$work/deb-files" "$work/rpm-files" >"$work/only-deb"
[ ! -s "$work/only-deb" ] || fail "the .rpm lacks $(tr '\n' ' ' <"$work/only-deb")"
info=$(rpm -qpi "$rpmf" 2>/dev/null)
grep -q "^Version *: $upstream\$" <<<"$info" || fail "rpm -qpi: no Version $upstream"
grep -q "^Name *: keep-rsync\$" <<<"$info" || fail "rpm -qpi: not named keep-rsync"
rpm -qpR "$rpmf" 2>/dev/null | grep -q '^libc.so.6' || fail "rpm -qpR: the .rpm does not require glibc"
step "rpm -qpl: the same $(wc -l <"$work/deb-files") files as the .deb; rpm -qpi: keep-rsync $upstream"
echo "test-packages: ok"
