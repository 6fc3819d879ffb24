#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's headless-browser test.
# Idempotent; run as root (CI runs as root). The test drives /usr/bin/chromium
# with playwright-core, which downloads no browser of its own.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium
