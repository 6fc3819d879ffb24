#!/usr/bin/env bash
# Sourced by the other scripts: puts a supported Node (24, installed inside the
# repository under .tools/) and pnpm 10 on PATH, then installs the workspace.
# The system Node 20 is past end of life and is left untouched.
set -euo pipefail
QE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QE_TOOLS="$QE_ROOT/.tools"
QE_NODE_SPEC="${QE_NODE_SPEC:-node@24}"
QE_PNPM_SPEC="${QE_PNPM_SPEC:-pnpm@10.34.8}"

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ ! -x "$QE_TOOLS/node_modules/.bin/node" ] || [ "$(node_major "$QE_TOOLS/node_modules/.bin/node")" -lt 22 ] \
   || [ ! -x "$QE_TOOLS/node_modules/.bin/pnpm" ]; then
  echo "[qe] installing $QE_NODE_SPEC and $QE_PNPM_SPEC into .tools/ (project-local)" >&2
  mkdir -p "$QE_TOOLS"
  [ -f "$QE_TOOLS/package.json" ] || echo '{"name":"qe-tools","private":true}' > "$QE_TOOLS/package.json"
  npm install --prefix "$QE_TOOLS" --no-audit --no-fund --loglevel=error "$QE_NODE_SPEC" "$QE_PNPM_SPEC" >&2
fi
export PATH="$QE_TOOLS/node_modules/.bin:$QE_ROOT/node_modules/.bin:$PATH"
export npm_config_nodedir=""
unset npm_config_nodedir

# Install the workspace when the lockfile changed since the last install.
stamp="$QE_ROOT/node_modules/.qe-install-stamp"
lock_sum="$(sha1sum "$QE_ROOT/pnpm-lock.yaml" 2>/dev/null | cut -d' ' -f1 || true)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  echo "[qe] pnpm install" >&2
  if [ -f "$QE_ROOT/pnpm-lock.yaml" ]; then frozen=--frozen-lockfile; else frozen=; fi
  (cd "$QE_ROOT" && pnpm install $frozen --reporter=append-only >&2)
  lock_sum="$(sha1sum "$QE_ROOT/pnpm-lock.yaml" | cut -d' ' -f1)"
  echo "$lock_sum" > "$stamp"
fi
