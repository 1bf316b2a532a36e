#!/usr/bin/env bash
# Builds the project (default preset) and runs the multi-worker demo
# (build/examples/sf_demo) against Redis, then the HTTP demo: fetch_service
# with 4 workers and three bursts from build/examples/load (scripts/lib/fetch_demo.sh).
#
# Usage: scripts/demo.sh [extra sf_demo args...]
# Env:   SINGLEFLIGHT_REDIS=host:port uses that server; otherwise a private
#        redis-server is started on a free loopback port and stopped on exit.
#        SF_SKIP_DEPS=1 skips scripts/deps.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=lib/redis.sh
source "$repo/scripts/lib/redis.sh"
# shellcheck source=lib/fetch_demo.sh
source "$repo/scripts/lib/fetch_demo.sh"

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh
fi
cmake --preset default
cmake --build --preset default

demo="$repo/build/examples/sf_demo"
if [[ ! -x "$demo" ]]; then
  echo "demo: $demo was not built (examples/ has no sf_demo target yet?)" >&2
  exit 1
fi

trap 'sf_fetch_demo_stop; sf_redis_stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z "${SINGLEFLIGHT_REDIS:-}" ]]; then
  sf_redis_start
  SINGLEFLIGHT_REDIS="$SF_REDIS_ADDR"
else
  echo "demo: using SINGLEFLIGHT_REDIS=$SINGLEFLIGHT_REDIS"
fi
export SINGLEFLIGHT_REDIS

# Not exec: the EXIT trap must still stop the server afterwards.
status=0
"$demo" --redis "$SINGLEFLIGHT_REDIS" "$@" || status=$?
# The HTTP phase runs even when sf_demo failed; either failing fails the demo.
http_status=0
sf_fetch_demo "$repo/build" "$SINGLEFLIGHT_REDIS" || http_status=$?
if ((status == 0)); then status=$http_status; fi
exit "$status"
