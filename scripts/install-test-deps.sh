#!/usr/bin/env bash
# Install what the Python interop test (tests/interop) needs into ./.venv:
# the official Arvados Python SDK (a Keep client nobody here wrote) and pytest.
# Idempotent: an existing .venv that already has both is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if .venv/bin/python -c 'import arvados, pytest' >/dev/null 2>&1; then
    echo "install-test-deps: .venv already has arvados-python-client and pytest"
    exit 0
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet 'arvados-python-client>=3.2,<3.3' pytest
.venv/bin/python -c 'import arvados, pytest; import importlib.metadata as m; print("install-test-deps: arvados-python-client", m.version("arvados-python-client"))'
