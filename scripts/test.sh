#!/usr/bin/env bash
# Builds the project and runs its tests, as CI does. Each test starts its own
# redis-server on a free loopback port, so nothing else needs to run first.
#
# Usage: scripts/test.sh [--sanitize] [extra ctest args...]
#   --sanitize (or SINGLEFLIGHT_SANITIZE=1): use the `sanitize` preset
#   (Debug, AddressSanitizer + UBSan, build dir build-sanitize).
# Env:   SF_SKIP_DEPS=1 skips scripts/deps.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

preset=default
case "${SINGLEFLIGHT_SANITIZE:-0}" in
  1 | ON | on | true | yes) preset=sanitize ;;
esac
ctest_args=()
for arg in "$@"; do
  case "$arg" in
    --sanitize) preset=sanitize ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) ctest_args+=("$arg") ;;
  esac
done

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh
fi

echo "== test.sh: preset $preset"
cmake --preset "$preset"
cmake --build --preset "$preset"
# Output on failure, per-test timeout and -j2 come from the test preset.
# ctest runs in a session (and process group) of its own: a test killed on
# timeout can leave children behind (its redis-server), and those would
# outlive the run. Afterwards anything still in that group is ours to stop.
# (A background job of a non-interactive shell is not a group leader, so
# setsid does not fork: ctest's pid is the group id.)
ctest_pid=""
# shellcheck disable=SC2317  # called from the EXIT trap
stop_leftovers() {
  if [[ -n "$ctest_pid" ]]; then
    kill -TERM -- "-$ctest_pid" 2>/dev/null || true
  fi
}
trap stop_leftovers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
setsid ctest --preset "$preset" "${ctest_args[@]}" &
ctest_pid=$!
status=0
wait "$ctest_pid" || status=$?
exit "$status"
