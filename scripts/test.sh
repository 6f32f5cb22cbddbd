#!/usr/bin/env bash
# The test command (README.md; .ci/run calls exactly this): installs what the
# tests need that a fresh machine lacks (a Python venv with the official
# Arvados SDK, GNU parallel), then runs every Rust test (unit, end-to-end
# against in-process keepstore-sim clusters, fault and soak tests) and the
# Python SDK interop test against the keepstore-sim binary, then the
# packages (scripts/test-packages.sh: dpkg -i, man, completions, systemd
# units, a copy as the unit runs it, dpkg -r, rpm -qpl).
#
# CI is passed through as it is (never set here): a test whose tool is
# missing says "SKIPPED <test>: <why>", and under CI=true (or 1), as .ci/run
# sets it, fails instead; scripts/install-test-deps.sh then treats any
# install failure as an error too.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CI+set}" ]; then
    export CI
fi

# A one-node Slurm cluster starts in about a second, so the sbatch recipe is
# tested for real unless INSTALL_SLURM=0.
INSTALL_SLURM="${INSTALL_SLURM:-1}" bash scripts/install-test-deps.sh
cargo build --workspace --all-targets --quiet
cargo test --workspace --all-targets
KEEPSTORE_SIM="${CARGO_TARGET_DIR:-$PWD/target}/debug/keepstore-sim" .venv/bin/pytest -q tests/interop
# The .deb and .rpm, built (--profile dist), installed, used and removed.
bash scripts/test-packages.sh
