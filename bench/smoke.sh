#!/usr/bin/env bash
# CI smoke test of the hub under the load generator: every scenario at a tiny size (a few
# seconds: 50 agents, 5 and 20 admins, short drives), debug binaries. Checks only that each
# scenario completes, that every admin received every event in order, and that nothing was
# lost or leaked; no timing assertions (CI machines are shared and noisy).
# Exits non-zero on a failed check. Results: target/bench-smoke/results.json.
#   bench/smoke.sh [--no-build] [--release]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=(--debug)
args=()
for a in "$@"; do
  case "$a" in
    --release) profile=() ;;
    *) args+=("$a") ;;
  esac
done
exec bench/run.sh --smoke "${profile[@]}" "${args[@]}"
