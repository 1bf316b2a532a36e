# shellcheck shell=bash
# Start and stop a private redis-server on a free loopback port.
#
# Source this file, then:
#   sf_redis_start            # sets SF_REDIS_PORT, SF_REDIS_PID, SF_REDIS_DIR, SF_REDIS_ADDR
#   trap sf_redis_stop EXIT   # stops only the server that sf_redis_start started
#
# The server runs in the foreground of a background job of *this* shell (call
# sf_redis_start directly, not in $(...)), persists nothing (--save '',
# --appendonly no) and works in its own temporary directory. It is ours only
# when it answers PING on its port and its INFO process_id is the pid we
# started: `redis-server --daemonize yes` exits 0 even when the bind fails, and
# another server may already hold the port, so neither alone proves anything.

# shellcheck disable=SC2034  # read by the scripts that source this file
SF_REDIS_PORT=""
SF_REDIS_PID=""
SF_REDIS_DIR=""
SF_REDIS_ADDR=""

# True when something accepts connections on 127.0.0.1:$1 (bash's /dev/tcp:
# no ss/netstat needed on a bare machine).
sf__port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The process_id that the server on port $1 reports, or nothing.
sf__redis_pid_on_port() {
  redis-cli -h 127.0.0.1 -p "$1" INFO server 2>/dev/null |
    tr -d '\r' | sed -n 's/^process_id://p'
}

sf_redis_start() {
  local attempt port dir pid bin
  for bin in redis-server redis-cli; do
    if ! command -v "$bin" >/dev/null 2>&1; then
      echo "redis: $bin not found (run scripts/deps.sh)" >&2
      return 1
    fi
  done
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    # 20000-52767: above the usual services, mostly below the ephemeral range.
    port=$((20000 + RANDOM))
    if sf__port_in_use "$port"; then
      continue
    fi
    dir="$(mktemp -d "${TMPDIR:-/tmp}/sf-redis.XXXXXX")"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$dir" --daemonize no --logfile "$dir/redis.log" >/dev/null 2>&1 &
    pid=$!
    # Up to 5 s for the server to answer, as long as it is alive.
    for _ in $(seq 1 50); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if [[ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" == PONG ]]; then
        if [[ "$(sf__redis_pid_on_port "$port")" == "$pid" ]]; then
          SF_REDIS_PORT=$port
          SF_REDIS_PID=$pid
          SF_REDIS_DIR=$dir
          SF_REDIS_ADDR="127.0.0.1:$port"
          echo "redis: started pid $pid on $SF_REDIS_ADDR (attempt $attempt)" >&2
          return 0
        fi
        break # someone else answers on this port
      fi
      sleep 0.1
    done
    echo "redis: port $port did not work out (attempt $attempt), trying another" >&2
    if [[ -f "$dir/redis.log" ]]; then tail -n 3 "$dir/redis.log" >&2 || true; fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
  echo "redis: could not start a private redis-server" >&2
  return 1
}

# Stops the server sf_redis_start started (TERM, then KILL after 5 s) and
# removes its directory. Safe to call twice, or when nothing was started.
sf_redis_stop() {
  if [[ -n "$SF_REDIS_PID" ]]; then
    kill "$SF_REDIS_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SF_REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SF_REDIS_PID" 2>/dev/null || true
    wait "$SF_REDIS_PID" 2>/dev/null || true
    echo "redis: stopped pid $SF_REDIS_PID" >&2
  fi
  if [[ -n "$SF_REDIS_DIR" ]]; then
    rm -rf "$SF_REDIS_DIR"
  fi
  # shellcheck disable=SC2034
  SF_REDIS_PORT=""
  SF_REDIS_PID=""
  SF_REDIS_DIR=""
  SF_REDIS_ADDR=""
}
