#!/usr/bin/env bash
# The main job: install what Cocoon needs and check that this host can run its VMs.
# (Running a container in a VM comes with the guest boot and container issues.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/cocoon check "$@"
