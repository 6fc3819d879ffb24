#!/usr/bin/env bash
# The whole test suite: lint, typecheck and every package's tests.
# Installs what it needs (a project-local Node 24, pnpm, the workspace,
# redis-server if it is down, Chromium/curl/openssl if missing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$QE_ROOT"
bash scripts/ensure-services.sh

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
echo "[qe] lint (biome)"
biome check . || status=1
echo "[qe] build the broker program (its test runs the built JavaScript)"
turbo run build --filter=@qe/broker... --output-logs=errors-only || status=1
echo "[qe] typecheck + tests (turbo)"
turbo run typecheck test --concurrency=2 --continue --output-logs=full 2>&1 | tee "$log" || status=1

# One closing line for the whole run, summed over every package's vitest summary
# ("Tests  3 failed | 104 passed (107)"), colours stripped.
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -aE '^[^ ]*:test: +Tests +[0-9]' \
  | awk -F':test:' '{ last[$1] = $2 } END { for (p in last) print last[p] }' || true)
passed=$(echo "$summary" | { grep -oE '[0-9]+ passed' || true; } | awk '{s+=$1} END {print s+0}')
failed=$(echo "$summary" | { grep -oE '[0-9]+ failed' || true; } | awk '{s+=$1} END {print s+0}')
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "${passed} passed, ${failed} failed"
exit "$status"
