#!/usr/bin/env bash
# Install everything the suite needs (Debian packages, the venv, the guest assets), then run the
# whole suite: unit, VM and integration tests, ruff and mypy. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test --assets
exec .venv/bin/python -m pytest "$@"
