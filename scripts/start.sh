#!/usr/bin/env bash
# The main job: the reference broker, on the in-memory transport unless Redis
# is configured (REDIS_URL, REDIS_HOST, REDIS_CLUSTER_NODES; see README).
# Builds the broker and the packages it uses (turbo caches it: only the first
# start, or a start after a change, pays), then runs the built JavaScript with
# Node: no TypeScript loader in the running process.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$QE_ROOT"
echo "[qe] building the broker (cached after the first time)" >&2
turbo run build --filter=@qe/broker... --output-logs=errors-only >&2
# a small young generation: less memory held at load for scavenges of about 1 ms (apps/broker README)
NODE_OPTIONS="--max-semi-space-size=8 ${NODE_OPTIONS:-}" exec node apps/broker/dist/main.js "$@"
