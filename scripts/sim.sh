#!/usr/bin/env bash
# Runs the deterministic simulation (test/sim/README.md) over a range of
# seeds, or replays one seed with its full trace.
#
# Usage: scripts/sim.sh SEEDS [START=1]     run seeds START .. START+SEEDS-1
#        scripts/sim.sh --replay SEED       one seed, every step printed
# Env:   SF_BUILD_DIR (default build, the `default` preset's dir; when set, the
#        script configures and builds there instead of using the preset)
#        SF_SKIP_DEPS=1 skips scripts/deps.sh.
# Exit:  0 every seed kept every invariant, 1 some did (listed), 2 bad usage.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

usage() {
  sed -n '5,6p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}
replay=""
if [[ "${1:-}" == --replay ]]; then
  replay="${2:-}"
  [[ "$replay" =~ ^[0-9]+$ ]] || usage
else
  seeds="${1:-}"
  start="${2:-1}"
  [[ "$seeds" =~ ^[0-9]+$ && "$start" =~ ^[0-9]+$ ]] && ((seeds > 0)) || usage
fi

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh
fi

if [[ -n "${SF_BUILD_DIR:-}" ]]; then
  build="$SF_BUILD_DIR"
  cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j2 --target sf_sim
else
  build="$repo/build"
  cmake --preset default >/dev/null
  cmake --build --preset default --target sf_sim
fi

if [[ -n "$replay" ]]; then
  echo "== sim.sh: replaying seed $replay"
  SIM_SEED="$replay" exec "$build/test/sim/sf_sim" --gtest_filter=Sim.Seeds
fi
echo "== sim.sh: $seeds seeds from $start"
SIM_SEEDS="$seeds" SIM_START="$start" exec "$build/test/sim/sf_sim" --gtest_filter=Sim.Seeds
