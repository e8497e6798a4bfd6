#!/usr/bin/env bash
# Run by the cocoon-deploy DaemonSet on each node (see cocoon-deploy.yaml):
#   install-on-node.sh install     copy the repository to the node's /opt/cocoon, set it up
#                                  there, add the containerd handler, restart containerd, wait
#   install-on-node.sh uninstall   remove the handler and restart containerd (the pod's preStop)
# Every step after the copy runs in the node's namespaces (nsenter into PID 1's), so the
# paths containerd sees are the node's own. Needs hostPID and a privileged container.
set -euo pipefail

action="${1:-install}"
src="$(cd "$(dirname "$0")/.." && pwd)"
node=(nsenter --target 1 --mount --uts --ipc --net --pid --)
dest=/opt/cocoon

on_node() { "${node[@]}" "$@"; }

case "$action" in
  install)
    mkdir -p /host/opt/cocoon
    cp -a "$src/." /host/opt/cocoon/
    on_node "$dest/scripts/setup.sh" --assets
    on_node "$dest/.venv/bin/cocoon" install containerd
    on_node systemctl restart containerd
    echo "cocoon-deploy: installed; waiting"
    trap 'exit 0' TERM INT
    sleep infinity & wait
    ;;
  uninstall)
    on_node "$dest/.venv/bin/cocoon" uninstall containerd
    on_node systemctl restart containerd
    ;;
  *)
    echo "install-on-node.sh: unknown action: $action (install or uninstall)" >&2
    exit 2
    ;;
esac
