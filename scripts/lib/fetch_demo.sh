# shellcheck shell=bash
# The HTTP phase of scripts/demo.sh: fetch_service with 4 workers on one port
# (SO_REUSEPORT), two bursts from build/examples/load, executions counted in
# Redis by the service itself (INCR <prefix>upstream_fetches:<url> per fetch).
#
# Source this file, then:
#   trap 'sf_fetch_demo_stop; sf_redis_stop' EXIT
#   sf_fetch_demo BUILD_DIR REDIS_HOST:PORT   # returns non-zero on failure
#
# sf_fetch_demo_stop stops only the service that sf_fetch_demo started
# (SIGTERM, then SIGKILL after 10 s); safe to call twice.

SF_FETCH_PID=""
SF_FETCH_DIR=""

sf_fetch_demo_stop() {
  if [[ -n "$SF_FETCH_PID" ]]; then
    kill -TERM "$SF_FETCH_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SF_FETCH_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SF_FETCH_PID" 2>/dev/null || true
    wait "$SF_FETCH_PID" 2>/dev/null || true
    SF_FETCH_PID=""
  fi
  if [[ -n "$SF_FETCH_DIR" ]]; then
    rm -rf "$SF_FETCH_DIR"
    SF_FETCH_DIR=""
  fi
}

# Prints "item/0=N item/1=N ..." for the executions since the counts in $1
# (the name of an indexed array), updates it, and sets SF_FETCH_BAD when one URL's
# count differs from $2.
sf__fetch_executions() {
  local -n before=$1
  local expected=$2 i url key now delta line="" want=""
  for ((i = 0; i < SF_FETCH_URLS; i++)); do
    url="${SF_FETCH_URL_PREFIX}$i"
    key="${SF_FETCH_PREFIX}upstream_fetches:$url"
    now="$(redis-cli -h "$SF_FETCH_REDIS_HOST" -p "$SF_FETCH_REDIS_PORT" GET "$key" 2>/dev/null)"
    now="${now:-0}"
    delta=$((now - ${before[$i]:-0}))
    before[i]=$now
    line+=" item/$i=$delta"
    want+=" $expected"
    if ((delta != expected)); then
      SF_FETCH_BAD+="executions of $url: $delta, expected $expected; "
    fi
  done
  echo "  executions ${line}   (expected${want})"
}

# One burst: every request on its own connection, all at once.
sf__fetch_burst() {
  local out status=0
  out="$("$SF_FETCH_LOAD" --target "$SF_FETCH_ADDR" --connections "$SF_FETCH_REQUESTS" \
    --requests "$SF_FETCH_REQUESTS" --urls "$SF_FETCH_URLS" \
    --url-prefix "$SF_FETCH_URL_PREFIX" 2>&1)" || status=$?
  printf '  %s\n' "${out//$'\n'/$'\n'  }"
  if ((status != 0)); then
    SF_FETCH_BAD+="load exited $status (not every request got 200); "
  fi
}

sf_fetch_demo() {
  local build=$1 redis=$2
  local service="$build/examples/fetch_service" bin
  SF_FETCH_LOAD="$build/examples/load"
  for bin in "$service" "$SF_FETCH_LOAD"; do
    if [[ ! -x "$bin" ]]; then
      echo "fetch demo: $bin was not built (libhttp-parser-dev missing?)" >&2
      return 1
    fi
  done
  SF_FETCH_REDIS_HOST="${redis%:*}"
  SF_FETCH_REDIS_PORT="${redis##*:}"
  SF_FETCH_PREFIX="sffetch:$$-$(date +%s):"
  SF_FETCH_URLS=4
  SF_FETCH_REQUESTS=100
  SF_FETCH_URL_PREFIX="http://upstream.example/item/"
  SF_FETCH_BAD=""
  local workers=4 upstream_ms=200 ttl_ms=2000
  SF_FETCH_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sf-fetch.XXXXXX")"
  local log="$SF_FETCH_DIR/service.log"

  # Port 0: the supervisor binds a free port and prints it once every worker
  # listens ("listening 127.0.0.1:PORT workers 4").
  "$service" --listen 127.0.0.1:0 --redis "$redis" --workers "$workers" \
    --upstream-ms "$upstream_ms" --result-ttl-ms "$ttl_ms" --prefix "$SF_FETCH_PREFIX" \
    >"$log" 2>&1 &
  SF_FETCH_PID=$!
  SF_FETCH_ADDR=""
  for _ in $(seq 1 100); do
    SF_FETCH_ADDR="$(sed -n 's/^listening \([0-9.]*:[0-9]*\) workers.*/\1/p' "$log")"
    [[ -n "$SF_FETCH_ADDR" ]] && break
    kill -0 "$SF_FETCH_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$SF_FETCH_ADDR" ]]; then
    echo "fetch demo: fetch_service did not start:" >&2
    cat "$log" >&2
    sf_fetch_demo_stop
    return 1
  fi

  echo
  echo "fetch_service demo: $workers workers on $SF_FETCH_ADDR (SO_REUSEPORT), upstream" \
    "$upstream_ms ms, result TTL $ttl_ms ms, prefix $SF_FETCH_PREFIX"
  # shellcheck disable=SC2034  # read and updated through sf__fetch_executions' nameref
  local -a counts=()
  echo
  echo "http burst 1: $SF_FETCH_REQUESTS concurrent GET /fetch over $SF_FETCH_URLS URLs" \
    "(expect 1 upstream execution per URL)"
  sf__fetch_burst
  sf__fetch_executions counts 1

  # Past the result TTL (and the 1 s L1 TTL): nothing is cached any more.
  sleep "$(((ttl_ms + 500) / 1000)).$(((ttl_ms + 500) % 1000 / 100))"
  echo
  echo "http burst 2: after the result TTL (expect a refill: 1 more per URL)"
  sf__fetch_burst
  sf__fetch_executions counts 1

  local pid=$SF_FETCH_PID status=0
  kill -TERM "$pid"
  wait "$pid" || status=$?
  SF_FETCH_PID=""
  echo
  echo "  stopped     SIGTERM to the supervisor: exit status $status"
  if ((status != 0)); then
    SF_FETCH_BAD+="fetch_service exited $status after SIGTERM; "
    cat "$log" >&2
  fi
  sf_fetch_demo_stop

  if [[ -n "$SF_FETCH_BAD" ]]; then
    echo "FAILED: ${SF_FETCH_BAD%; }"
    return 1
  fi
  echo "OK"
}
