#!/bin/bash
# Build the documentation site and take a picture of its Python API page with headless
# Chromium (Debian's `chromium`, installed here if missing): docs/img/api-page.png.
# Not part of the test suite: only this picture needs a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium
fi
site="$(mktemp -d /tmp/cocoon-site-XXXXXX)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -q -d "$site"
chmod 755 "$site"  # mktemp's 0700 leaves the browser a blank page
# a throwaway profile, so that nothing of the browser's stays behind
profile="$site/.profile"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size=1280,1600 --virtual-time-budget=5000 --screenshot="$PWD/docs/img/api-page.png" \
  "file://$site/api/index.html" 2>/dev/null
echo "docs/img/api-page.png"
