#!/usr/bin/env bash
# Install what the tests beyond `cargo` need:
# - GNU parallel (tests/scale_out.rs runs scripts/parallel-prefixes.sh) from
#   apt when missing. The Slurm test there also needs slurmctld, slurmd,
#   slurm-client and munge, and root: set INSTALL_SLURM=1 to install them.
# - promtool (tests/metrics.rs checks real metrics output with `promtool check
#   metrics`; tests/operations.rs checks docs/alerts/keep-rsync.rules.yml with
#   `promtool check rules` and `promtool test rules`) from apt when missing:
#   Debian ships it in the package prometheus (the server comes with it).
# - versitygw (an S3 gateway nobody here wrote; it checks SigV4 signatures
#   and Content-MD5; tests/common/s3.rs starts it with its posix backend)
#   built from source with `go install` into ./.tools/bin (the Go module proxy
#   is all it needs) unless ./.tools/bin/versitygw is that version already.
# - Azurite (an Azure Blob service nobody here wrote; it checks SharedKey
#   signatures and Content-MD5) from npm into ./.tools/azurite.
# - rclone (a second S3 client, for the benchmark) from apt when missing.
# - the packaging tools scripts/package.sh and scripts/test-packages.sh use:
#   dpkg-dev (dpkg-shlibdeps), rpm (rpmbuild, rpm -qp), systemd
#   (systemd-analyze verify; no running systemd needed), man-db (man -w)
#   and busybox-static (the container image's /bin/sh, for the chroot that
#   stands in for the image), from apt when missing.
# - ./.venv with the official Arvados Python SDK (a Keep client nobody here
#   wrote) and pytest for tests/interop, and PyYAML (the Kubernetes manifest
#   check in tests/scale_out.rs).
# Idempotent: what is already there is left alone.
#
# Tests whose tool is missing say "SKIPPED <test>: <why>"; under CI=true (or
# 1) such a skip fails the test. So under CI nothing here is best effort:
# not being root, having no apt-get, or a failed install is an error (CI runs
# as root on Debian with apt reachable). Elsewhere those print a message and
# the tests that need the tool skip themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

case ${CI:-} in
    true | TRUE | True | 1) ci=1 ;;
    *) ci=0 ;;
esac

# Under CI: stop with the message. Elsewhere: print it and go on.
cannot() {
    if [ "$ci" = 1 ]; then
        echo "install-test-deps: $1 (CI=$CI: CI must install every test tool)" >&2
        exit 1
    fi
    echo "install-test-deps: $1; the tests that need it will say SKIPPED" >&2
}

# apt_install PKG...: 0 when installed, 1 (after `cannot`) when not.
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        cannot "not root, cannot apt-get install $* (install them yourself)"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        cannot "no apt-get, cannot install $* (install them yourself)"
        return 1
    fi
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"); then
        cannot "apt-get install $* failed"
        return 1
    fi
}

if parallel --version 2>/dev/null | grep -q 'GNU parallel'; then
    echo "install-test-deps: GNU parallel already installed"
else
    apt_install parallel || true
fi
if promtool --version >/dev/null 2>&1; then
    echo "install-test-deps: promtool already installed"
else
    apt_install prometheus || true
fi
have_slurm() {
    command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 &&
        command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1
}
if have_slurm; then
    echo "install-test-deps: slurm already installed"
elif [ "${INSTALL_SLURM:-0}" = 1 ]; then
    apt_install slurmctld slurmd slurm-client munge || true
elif [ "$ci" = 1 ]; then
    echo "install-test-deps: warning: CI=$CI but INSTALL_SLURM=${INSTALL_SLURM:-0} and slurm is not installed: the Slurm test will fail" >&2
fi

# A Go server built from the module proxy into ./.tools/bin: go_tool NAME
# MODULE VERSION PACKAGE [PROBE...]. It is kept when it runs (PROBE, where
# given) and, where go can tell, was built from VERSION of MODULE: a version
# bump rebuilds it. Quiet: go's output goes to a log, shown on failure.
have_go_tool() { # NAME MODULE VERSION [PROBE...]
    local name=$1 module=$2 version=$3
    shift 3
    [ -x ".tools/bin/$name" ] || return 1
    if [ $# -gt 0 ]; then ".tools/bin/$name" "$@" >/dev/null 2>&1 || return 1; fi
    command -v go >/dev/null 2>&1 || return 0
    go version -m ".tools/bin/$name" 2>/dev/null |
        grep -Eq "^[[:space:]]+mod[[:space:]]+$module[[:space:]]+$version([[:space:]]|$)"
}
go_tool() { # NAME MODULE VERSION PACKAGE [PROBE...]
    local name=$1 module=$2 version=$3 package=$4
    shift 4
    if have_go_tool "$name" "$module" "$version" "$@"; then
        echo "install-test-deps: $name $version already in .tools/bin"
    elif ! command -v go >/dev/null 2>&1; then
        cannot "no go, cannot build $name $version (install Go)"
    else
        echo "install-test-deps: building $name $version into .tools/bin (a few minutes)"
        mkdir -p .tools/bin
        local log=".tools/$name-install.log"
        # GOBIN must be absolute.
        if GOBIN="$PWD/.tools/bin" GOFLAGS=-buildvcs=false \
            go install "$package@$version" >"$log" 2>&1 &&
            have_go_tool "$name" "$module" "$version" "$@"; then
            rm -f "$log"
        else
            tail -n 30 "$log" >&2 || true
            rm -f ".tools/bin/$name"
            cannot "go install $name $version failed (log: $log)"
        fi
    fi
}
go_tool versitygw github.com/versity/versitygw v1.8.0 \
    github.com/versity/versitygw/cmd/versitygw --version
# MinIO (tests/common/minio.rs; AGPL, a test server only, never linked): its
# STS gives temporary credentials and it refuses a request that lacks their
# session token, so tests/s3_credentials.rs proves the credential chain. The
# project is archived: the Go module proxy is its source.
go_tool minio github.com/minio/minio v0.0.0-20260212201848-7aac2a2c5b7c \
    github.com/minio/minio
AZURITE_VERSION=3.37.0
# Azurite (Microsoft's Azure Storage emulator; tests/common/azure.rs) from npm
# into ./.tools/azurite, unless that version is there already.
if [ "$(node -p "require('./.tools/azurite/node_modules/azurite/package.json').version" 2>/dev/null)" = "$AZURITE_VERSION" ]; then
    echo "install-test-deps: azurite $AZURITE_VERSION already in .tools/azurite"
elif ! command -v npm >/dev/null 2>&1; then
    cannot "no npm, cannot install azurite $AZURITE_VERSION (install Node.js and npm)"
else
    mkdir -p .tools/azurite
    if ! (cd .tools/azurite && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null); then
        cannot "npm install azurite@$AZURITE_VERSION failed"
    fi
fi
if command -v rclone >/dev/null 2>&1; then
    echo "install-test-deps: rclone already installed"
else
    apt_install rclone || true
fi

missing=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v rpmbuild >/dev/null 2>&1 || missing+=(rpm)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v man >/dev/null 2>&1 || missing+=(man-db)
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ ${#missing[@]} = 0 ]; then
    echo "install-test-deps: packaging tools already installed"
else
    apt_install "${missing[@]}" || true
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# boto3 (the tests' STS client, tests/s3_credentials.rs) comes with the SDK.
if .venv/bin/python -c 'import arvados, pytest, yaml, boto3' >/dev/null 2>&1; then
    echo "install-test-deps: .venv already has arvados-python-client, pytest, PyYAML and boto3"
    exit 0
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet 'arvados-python-client>=3.2,<3.3' pytest pyyaml boto3
.venv/bin/python -c 'import arvados, pytest, yaml, boto3; import importlib.metadata as m; print("install-test-deps: arvados-python-client", m.version("arvados-python-client"))'
