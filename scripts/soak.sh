#!/usr/bin/env bash
# Runs the chaos soak (test/soak/, docs/reliability.md): a private
# redis-server, several worker processes, faults injected at random moments,
# invariants checked at the end. Bounded: it runs for the given seconds, then
# waits at most a few more for the calls still out.
#
# Usage: scripts/soak.sh [seconds=60] [extra sf_soak args...]
#   e.g. scripts/soak.sh 60 --seed 42 --keep   (keep the logs even on success)
# Env:   SF_BUILD_DIR (default build, the `default` preset's dir; when set, the
#        script configures and builds there instead of using the preset)
#        SF_SKIP_DEPS=1 skips scripts/deps.sh.
# Exit:  0 all invariants held, 1 one failed, 2 the soak could not run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "usage: scripts/soak.sh [seconds=60] [sf_soak args...]" >&2
  exit 2
fi

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh
fi

if [[ -n "${SF_BUILD_DIR:-}" ]]; then
  build="$SF_BUILD_DIR"
  cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j2 --target sf_soak
else
  build="$repo/build"
  cmake --preset default >/dev/null
  cmake --build --preset default --target sf_soak
fi

echo "== soak.sh: $seconds s"
exec "$build/test/soak/sf_soak" --seconds "$seconds" "$@"
