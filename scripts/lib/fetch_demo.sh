# shellcheck shell=bash
# The HTTP phase of scripts/demo.sh: fetch_service with 4 workers on one port
# (SO_REUSEPORT), three bursts from build/examples/load, executions counted in
# Redis by the service itself (INCR <prefix>upstream_fetches:<url> per fetch).
# Burst 3 runs on a second service (--keep-going, short lock TTL) and kills
# the worker leading its URL mid-fetch to show the takeover.
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

# Starts fetch_service with the flags given; sets SF_FETCH_PID, SF_FETCH_ADDR.
# Port 0: the supervisor binds a free port and prints it once every worker
# listens ("listening 127.0.0.1:PORT workers 4").
sf__fetch_start() {
  SF_FETCH_LOG="$SF_FETCH_DIR/service.log"
  "$SF_FETCH_SERVICE" --listen 127.0.0.1:0 --redis "$SF_FETCH_REDIS_HOST:$SF_FETCH_REDIS_PORT" \
    "$@" >"$SF_FETCH_LOG" 2>&1 &
  SF_FETCH_PID=$!
  SF_FETCH_ADDR=""
  for _ in $(seq 1 100); do
    SF_FETCH_ADDR="$(sed -n 's/^listening \([0-9.]*:[0-9]*\) workers.*/\1/p' "$SF_FETCH_LOG")"
    [[ -n "$SF_FETCH_ADDR" ]] && break
    kill -0 "$SF_FETCH_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$SF_FETCH_ADDR" ]]; then
    echo "fetch demo: fetch_service did not start:" >&2
    cat "$SF_FETCH_LOG" >&2
    sf_fetch_demo_stop
    return 1
  fi
}

# SIGTERM to the supervisor; it must exit 0 (every remaining worker drained).
sf__fetch_sigterm() {
  local pid=$SF_FETCH_PID status=0
  kill -TERM "$pid"
  wait "$pid" || status=$?
  SF_FETCH_PID=""
  echo "  stopped     SIGTERM to the supervisor: exit status $status"
  if ((status != 0)); then
    SF_FETCH_BAD+="fetch_service exited $status after SIGTERM; "
    cat "$SF_FETCH_LOG" >&2
  fi
}

# Burst 3: SF_FETCH_REQUESTS concurrent requests (one per connection) for one
# URL; the worker that leads it (its pid is in <prefix>upstream_leader:<url>,
# set when its upstream fetch starts) is SIGKILLed 500 ms into that fetch.
# Its lease lapses (lock TTL), a follower on another worker takes over and
# fetches again. Expected: the killed worker's connections fail, every other
# request gets 200 with the takeover's value, and the URL was fetched twice.
sf__fetch_takeover_burst() {
  local prefix="http://upstream.example/takeover/" url key leader="" ppid out load_pid
  local ok failed errors value after executions
  url="${prefix}0"
  key="${SF_FETCH_PREFIX}upstream_leader:$url"
  echo
  echo "http burst 3: $SF_FETCH_REQUESTS concurrent GET /fetch for one URL, upstream 1500 ms," \
    "lock TTL 1000 ms; the worker leading it is SIGKILLed mid-fetch"
  "$SF_FETCH_LOAD" --target "$SF_FETCH_ADDR" --connections "$SF_FETCH_REQUESTS" \
    --requests "$SF_FETCH_REQUESTS" --urls 1 --url-prefix "$prefix" \
    >"$SF_FETCH_DIR/load3.out" 2>&1 &
  load_pid=$!
  for _ in $(seq 1 250); do
    leader="$(redis-cli -h "$SF_FETCH_REDIS_HOST" -p "$SF_FETCH_REDIS_PORT" GET "$key" 2>/dev/null)"
    [[ -n "$leader" ]] && break
    sleep 0.02
  done
  # Only ever a worker of this supervisor.
  ppid="$(awk '/^PPid:/ {print $2}' "/proc/${leader:-none}/status" 2>/dev/null || true)"
  if [[ -z "$leader" || "$ppid" != "$SF_FETCH_PID" ]]; then
    SF_FETCH_BAD+="burst 3: no worker of the service started fetching $url; "
    wait "$load_pid" || true
    return
  fi
  sleep 0.5
  kill -KILL "$leader"
  wait "$load_pid" || true # exits 1: the killed worker's requests failed
  out="$(cat "$SF_FETCH_DIR/load3.out")"
  printf '  %s\n' "${out//$'\n'/$'\n'  }"

  ok="$(sed -n 's/^requests .* \([0-9]*\) ok,.*/\1/p' <<<"$out")"
  errors="$(awk '/^error / {gsub(/[(]/, "", $(NF-1)); n += $(NF-1)} END {print n + 0}' <<<"$out")"
  failed=$((SF_FETCH_REQUESTS - ${ok:-0}))
  echo "  killed      worker pid $leader, 500 ms into its fetch: the $failed requests on its" \
    "connections failed (expected)"
  if [[ -z "$ok" ]] || ((ok < 1 || failed < 1 || errors != failed)); then
    SF_FETCH_BAD+="burst 3: ${ok:-?} ok, $failed not ok, $errors failed connections; "
  fi
  if grep '^status' <<<"$out" | grep -qv '^status *200=[0-9]*$'; then
    SF_FETCH_BAD+="burst 3: an answer other than 200; "
  fi
  # The value every 200 carried, now from the cache: fetched by the takeover.
  # One more request, from the demo's own client (no curl on a minbase machine).
  local body
  body="$("$SF_FETCH_LOAD" --target "$SF_FETCH_ADDR" --connections 1 --requests 1 --urls 1 \
    --url-prefix "$prefix" --print-body 1 2>&1)" || true
  value="$(sed -n 's/^body .*"data":"\([^"]*\)".*/\1/p' <<<"$body")"
  after="$(redis-cli -h "$SF_FETCH_REDIS_HOST" -p "$SF_FETCH_REDIS_PORT" GET "$key" 2>/dev/null)"
  if [[ -z "$value" ]]; then
    echo "  takeover    could not read the cached value back:"
    printf '    %s\n' "${body//$'\n'/$'\n'    }"
    SF_FETCH_BAD+="burst 3: the cached value could not be read back; "
  elif [[ -z "$after" || "$after" == "$leader" ]]; then
    echo "  takeover    none: the leader recorded is ${after:-nobody} (killed: $leader)"
    SF_FETCH_BAD+="burst 3: no other worker took the fetch over; "
  elif [[ "$value" != *"fetched by pid $after,"* ]]; then
    echo "  takeover    worker pid $after fetched it again, but the cache holds \"$value\""
    SF_FETCH_BAD+="burst 3: the cached value is not the takeover's; "
  else
    echo "  takeover    worker pid $after fetched it again: \"$value\""
  fi
  executions="$(redis-cli -h "$SF_FETCH_REDIS_HOST" -p "$SF_FETCH_REDIS_PORT" GET \
    "${SF_FETCH_PREFIX}upstream_fetches:$url" 2>/dev/null)"
  executions="${executions:-0}"
  echo "  executions  takeover/0=$executions   (expected 2: the killed fetch + the takeover)"
  if ((executions != 2)); then
    SF_FETCH_BAD+="executions of $url: $executions, expected 2; "
  fi
}

sf_fetch_demo() {
  local build=$1 redis=$2 bin
  SF_FETCH_SERVICE="$build/examples/fetch_service"
  SF_FETCH_LOAD="$build/examples/load"
  for bin in "$SF_FETCH_SERVICE" "$SF_FETCH_LOAD"; do
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
  local service_args=(--workers "$workers" --result-ttl-ms "$ttl_ms" --prefix "$SF_FETCH_PREFIX")

  sf__fetch_start "${service_args[@]}" --upstream-ms "$upstream_ms" || return 1
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
  echo
  sf__fetch_sigterm

  # Burst 3 on a fresh service: a slower upstream (time to kill its leader
  # mid-fetch), a 1 s lease so the takeover comes soon, and --keep-going so
  # the supervisor does not stop the other workers when one dies.
  echo
  echo "fetch_service demo: restarted with --keep-going --upstream-ms 1500 --lock-ttl-ms 1000"
  if sf__fetch_start "${service_args[@]}" --upstream-ms 1500 --lock-ttl-ms 1000 --keep-going; then
    sf__fetch_takeover_burst
    sf__fetch_sigterm
  else
    SF_FETCH_BAD+="fetch_service did not restart for burst 3; "
  fi
  sf_fetch_demo_stop

  if [[ -n "$SF_FETCH_BAD" ]]; then
    echo "http demo: FAILED: ${SF_FETCH_BAD%; }"
    return 1
  fi
  echo "http demo: OK"
}
