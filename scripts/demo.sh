#!/usr/bin/env bash
# Installs what is missing, builds only the demo's programs, and runs the
# multi-worker demo (build/examples/sf_demo) against Redis, then the HTTP demo:
# fetch_service with 4 workers and three bursts from build/examples/load
# (scripts/lib/fetch_demo.sh). One line per phase; the build's own output goes
# to build/demo-build.log and is shown only if the build fails. The last line
# is the verdict of both phases.
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

targets=(sf_demo fetch_service load)
mkdir -p build
log="$repo/build/demo-build.log"
echo "demo: building ${targets[*]} (log: build/demo-build.log)"
if ! { cmake --preset default && cmake --build --preset default --target "${targets[@]}"; } \
  >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "demo: FAILED: the build failed (last lines above, all of it in $log)" >&2
  exit 1
fi

demo="$repo/build/examples/sf_demo"
if [[ ! -x "$demo" ]]; then
  echo "demo: FAILED: $demo was not built" >&2
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

# Not exec: the EXIT trap must still stop the server afterwards. The HTTP
# phase runs even when sf_demo failed; either failing fails the demo.
echo
echo "demo: phase 1 of 2: sf_demo, worker processes coalescing through Redis"
status=0
"$demo" --redis "$SINGLEFLIGHT_REDIS" "$@" || status=$?
echo
echo "demo: phase 2 of 2: the HTTP demo, fetch_service under examples/load"
http_status=0
sf_fetch_demo "$repo/build" "$SINGLEFLIGHT_REDIS" || http_status=$?

verdict() { if (($1 == 0)); then echo OK; else echo "FAILED (exit $1)"; fi; }
echo
if ((status == 0 && http_status == 0)); then
  echo "demo: OK (sf_demo OK, HTTP demo OK)"
  exit 0
fi
echo "demo: FAILED (sf_demo $(verdict "$status"), HTTP demo $(verdict "$http_status"))"
exit 1
