#!/usr/bin/env bash
# Install everything the suite needs, then run the whole suite: unit, VM and integration tests,
# ruff and mypy. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
