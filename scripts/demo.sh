#!/usr/bin/env bash
# The main job: install what Cocoon needs, build the guest assets (kernel, guest image, busybox
# image; cached after the first run), and run a busybox container in its own VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --assets
exec .venv/bin/cocoon demo "$@"
