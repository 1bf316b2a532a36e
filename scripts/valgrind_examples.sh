#!/usr/bin/env bash
# Runs each example briefly under valgrind memcheck against a private
# redis-server and fails on any memcheck error or definite leak.
#
# Usage: scripts/valgrind_examples.sh [BUILD_DIR=build]
# ctest runs it as the test "valgrind_examples" (label: valgrind):
#   ctest --test-dir build -L valgrind --output-on-failure
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$repo/build}" && pwd)"
bin="$build/examples"
# shellcheck source=lib/redis.sh
source "$repo/scripts/lib/redis.sh"

# ctest's skip (SKIP_RETURN_CODE 77): the unit-only machine has no server.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "valgrind: SKIPPED: no redis-server (apt-get install redis-server)"
  exit 77
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/sf-valgrind.XXXXXX")"
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  sf_redis_stop
  rm -rf "$work"
}
trap cleanup EXIT
sf_redis_start

# Error exit code 99 for memcheck errors and definite leaks alike. --vgdb=no:
# no gdbserver, so no vgdb-pipe-* files are left in the temp directory.
vg=(valgrind --quiet --vgdb=no --error-exitcode=99 --leak-check=full
    --show-leak-kinds=definite --errors-for-leak-kinds=definite --trace-children=yes)
failures=0

check() {  # name status
  if [[ "$2" == 0 ]]; then
    echo "valgrind: $1 clean"
  else
    echo "valgrind: $1 FAILED (exit $2)" >&2
    failures=$((failures + 1))
  fi
}

# Waits for "listening HOST:PORT" in file $1 and prints the port. The bound
# (120 s) only says "it did not start at all": valgrind on a busy machine is slow.
wait_port() {
  for _ in $(seq 1 1200); do
    if grep -q '^listening ' "$1" 2>/dev/null; then
      sed -n 's/^listening [^ ]*:\([0-9]*\).*/\1/p' "$1" | head -n 1
      return 0
    fi
    sleep 0.1
  done
  echo "valgrind: no 'listening' line in $1" >&2
  return 1
}

# Starts a server under valgrind in the background; sets $server_pid/$port.
start_server() {  # name args...
  local name=$1
  shift
  "${vg[@]}" --log-file="$work/$name.%p.vg" "$@" >"$work/$name.out" 2>&1 &
  server_pid=$!
  servers+=("$server_pid")
  port="$(wait_port "$work/$name.out")"
}

stop_server() {  # name
  local status=0
  kill -TERM "$server_pid"
  wait "$server_pid" || status=$?
  cat "$work/$1".*.vg 2>/dev/null || true
  check "$1" "$status"
}

# 1. sf_demo: a small fleet, all three bursts (the killed worker is SIGKILLed
# by design, so only the parent and the surviving workers are judged). The
# TTLs leave room for valgrind's slowness on a busy machine: a caller that
# arrives after the result expired, or a lease not renewed in time, would be
# a second execution the demo rightly counts as a failure.
status=0
"${vg[@]}" --log-file="$work/sf_demo.%p.vg" "$bin/sf_demo" --redis "$SF_REDIS_ADDR" \
  --workers 2 --callers 4 --keys 2 --work-ms 300 --lock-ttl-ms 3000 --result-ttl-ms 5000 \
  >"$work/sf_demo.out" 2>&1 || status=$?
grep -h -v '^$' "$work"/sf_demo.*.vg 2>/dev/null || true
[[ $status == 0 ]] || cat "$work/sf_demo.out"
check sf_demo "$status"

# 2. echo_server: a few requests, a partial line and an over-long one.
start_server echo_server "$bin/echo_server" --listen 127.0.0.1:0 --redis "$SF_REDIS_ADDR" \
  --delay-ms 50 --max-line 16
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'alpha\nbe' >&3
printf 'ta\n%s\ngamma\n' "$(printf 'x%.0s' $(seq 1 40))" >&3
for _ in 1 2 3 4; do read -r -t 20 line <&3 && echo "echo_server replied: $line"; done
exec 3>&-
stop_server echo_server

# 3. fetch_service (2 workers, so the supervisor is checked too) under load,
#    plus one malformed request; and load itself.
if [[ -x "$bin/fetch_service" && -x "$bin/load" ]]; then
  start_server fetch_service "$bin/fetch_service" --listen 127.0.0.1:0 --redis "$SF_REDIS_ADDR" \
    --workers 2 --upstream-ms 50
  status=0
  "${vg[@]}" --log-file="$work/load.%p.vg" "$bin/load" --target "127.0.0.1:$port" \
    --connections 10 --requests 200 --urls 3 || status=$?
  cat "$work"/load.*.vg 2>/dev/null || true
  check load "$status"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GARBAGE\r\n\r\n' >&3
  read -r -t 20 line <&3 && echo "fetch_service replied: $line"
  exec 3>&-
  stop_server fetch_service
fi

if [[ $failures -ne 0 ]]; then
  echo "valgrind: $failures example(s) failed" >&2
  exit 1
fi
echo "valgrind: all examples clean"
