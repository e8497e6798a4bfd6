#!/usr/bin/env bash
# Install what Cocoon needs on a Debian 12 host, idempotently: Debian packages, a virtual
# environment with the package, and (with --assets) the guest kernel and image.
#
#   scripts/setup.sh            runtime packages + .venv
#   scripts/setup.sh --test     also the clients the tests drive (podman, containerd, docker, ...)
#   scripts/setup.sh --assets   also build the guest assets into the cache
#
# A second run only checks: it installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_assets=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --assets) want_assets=1 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (Cocoon starts VMs, mounts shares and creates tap devices)" >&2
  exit 1
fi

runtime_pkgs=(qemu-system-x86 qemu-utils iproute2 ca-certificates lz4 util-linux)
test_pkgs=(podman runc conmon containerd docker.io tmux socat iptables uidmap
           containernetworking-plugins
           slirp4netns fuse-overlayfs busybox-static python3-seccomp prometheus
           criu)  # only for podman's CRIU version check before `container checkpoint`
pkgs=("${runtime_pkgs[@]}")
[ "$want_test" = 1 ] && pkgs+=("${test_pkgs[@]}")

# python3 -m venv needs python3-venv on a stock Debian python.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  pkgs+=(python3-venv python3-pip)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The guest image is built from Debian packages fetched with apt-get download: it needs the lists.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -q
fi

# Virtual environment with the package, reinstalled only when pyproject.toml changes.
venv=.venv
extra=""
[ "$want_test" = 1 ] && extra="[dev]"
stamp="$venv/.cocoon-installed"
digest="$(sha256sum pyproject.toml | cut -c1-16)$extra"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: installing the cocoon package into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e ".$extra"
  echo "$digest" > "$stamp"
fi

# Byte-compile the package: every `cocoon` command, monitor and shim is a fresh Python process,
# and where PYTHONDONTWRITEBYTECODE is set (or the tree is read-only) imports would compile
# the sources every time. Only what changed is compiled again.
"$venv/bin/python" -m compileall -q src >/dev/null

if [ "$want_assets" = 1 ]; then
  "$venv/bin/cocoon" assets build
fi
