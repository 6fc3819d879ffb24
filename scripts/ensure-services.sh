#!/usr/bin/env bash
# Starts what the test suite needs when it is not already running, the way
# this machine kind starts its services. Safe to run repeatedly.
set -uo pipefail

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "[qe] starting redis-server on 127.0.0.1:6379" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Tools that tests drive: headless Chromium (browser tests), curl (HTTP/2 tests), openssl (TLS certs),
# promtool (Prometheus exposition check).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus) # promtool checks the metrics exposition
command -v tmux >/dev/null 2>&1 || missing+=(tmux)         # the qe CLI's live view is tested in a pseudo-terminal
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[qe] installing ${missing[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
exit 0
