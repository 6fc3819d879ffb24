#!/usr/bin/env bash
# The main job: the reference broker, on the in-memory transport unless Redis
# is configured (REDIS_URL, REDIS_HOST, REDIS_CLUSTER_NODES; see README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$QE_ROOT"
if [ -f apps/broker/src/main.ts ]; then
  exec tsx --conditions=@qe/source apps/broker/src/main.ts "$@"
fi
exec tsx --conditions=@qe/source packages/core/examples/quickstart.ts "$@"
