#!/usr/bin/env bash
# Install what the tests beyond `cargo` need:
# - GNU parallel (tests/scale_out.rs runs scripts/parallel-prefixes.sh) from
#   apt when missing; as non-root this step is skipped with a message. The
#   Slurm test there also uses slurmctld, slurmd, slurm-client and munge when
#   present (and skips itself otherwise): set INSTALL_SLURM=1 to install them.
# - ./.venv with the official Arvados Python SDK (a Keep client nobody here
#   wrote) and pytest for tests/interop, and PyYAML (the Kubernetes manifest
#   check in tests/scale_out.rs).
# Idempotent: what is already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "install-test-deps: not root, skipping apt-get install $* (install them yourself)" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: no apt-get, skipping $* (install them yourself)" >&2
        return 0
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@")
}

if command -v parallel >/dev/null 2>&1; then
    echo "install-test-deps: GNU parallel already installed"
else
    apt_install parallel
fi
if [ "${INSTALL_SLURM:-0}" = 1 ]; then
    if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 &&
        command -v sbatch >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
        echo "install-test-deps: slurm already installed"
    else
        # Best effort: without Slurm the real-cluster test skips itself.
        apt_install slurmctld slurmd slurm-client munge ||
            echo "install-test-deps: could not install slurm; its test will be skipped" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if .venv/bin/python -c 'import arvados, pytest, yaml' >/dev/null 2>&1; then
    echo "install-test-deps: .venv already has arvados-python-client, pytest and PyYAML"
    exit 0
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet 'arvados-python-client>=3.2,<3.3' pytest pyyaml
.venv/bin/python -c 'import arvados, pytest, yaml; import importlib.metadata as m; print("install-test-deps: arvados-python-client", m.version("arvados-python-client"))'
