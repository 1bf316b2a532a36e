#!/usr/bin/env bash
# Runs every benchmark against a private redis-server and rewrites the results
# table in docs/benchmarks.md (between the bench:begin / bench:end markers).
#
#   bench/run.sh                      # builds with the default preset (build/)
#   SF_BUILD_DIR=build-x bench/run.sh # uses (and builds) another build dir
#   REPEAT=5 bench/run.sh             # runs of each scenario; the median is shown
#
# Takes about two minutes on a 2-core machine. Raw results land in
# $SF_BUILD_DIR/bench/results/ (one JSON line per sf_bench run, the micro-
# benchmarks' JSON, and redis-benchmark's CSV).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${SF_BUILD_DIR:-build}"
repeat="${REPEAT:-3}"
doc="docs/benchmarks.md"

# --- build -------------------------------------------------------------------
if [[ -z "${SF_BUILD_DIR:-}" ]]; then
  cmake --preset default >/dev/null
else
  [[ -f "$build/CMakeCache.txt" ]] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j2 --target sf_bench sf_micro_bench >/dev/null
bench="$build/bench/sf_bench"
micro="$build/bench/sf_micro_bench"
out="$build/bench/results"
rm -rf "$out"
mkdir -p "$out"

# --- redis ---------------------------------------------------------------------
# shellcheck source=../scripts/lib/redis.sh
source scripts/lib/redis.sh
sf_redis_start
trap sf_redis_stop EXIT
redis=(redis-cli -h 127.0.0.1 -p "$SF_REDIS_PORT")
started=$SECONDS

# Runs one scenario $repeat times; every run appends its JSON line to $1.
scenario() {
  local file="$out/$1.jsonl"
  shift
  for _ in $(seq 1 "$repeat"); do
    "$bench" --redis "$SF_REDIS_ADDR" --out "$file" "$@" >/dev/null
  done
  echo "bench: $(basename "$file" .jsonl) done ($((SECONDS - started)) s)" >&2
}

# --- scenario matrix -------------------------------------------------------------
for p in 1 4; do
  for c in 1 10 100; do
    for w in 50 200; do
      scenario "matrix" -P "$p" -C "$c" -W "$w"
    done
  done
done
# Commands per flight must not grow with the work's duration (protocol v2: no
# polling): W = 50, 200, 2000 and 5000 ms at lock_ttl_ms 10000 must be equal.
for w in 50 200 2000 5000; do
  scenario "duration" -P 4 -C 100 -W "$w" --lock-ttl-ms 10000
done
scenario "keys" -P 4 -C 100 -W 50 --keys 10

# --- failure scenarios -------------------------------------------------------------
# Short lock TTL so a takeover shows within about a second (followers
# re-check when the dead leader's lock would lapse).
scenario "failure" -P 4 -C 10 -W 50 --fail once
scenario "failure" -P 4 -C 10 -W 50 --fail always
scenario "failure" -P 4 -C 10 -W 200 --crash --lock-ttl-ms 1000
scenario "failure" -P 4 -C 10 --slow --lock-ttl-ms 1000
scenario "failure" -P 4 -C 10 -W 200 --late-ms 100
scenario "failure" -P 4 -C 10 -W 50 --late-ms 200

# The hot-key scenario (--scenario hot: open-loop, one key, a spike at every
# expiry) is not run here: it takes its --duration-ms per run and has no table
# yet. Run it by hand (docs/benchmarks.md, "sf_bench --scenario hot"):
#   "$bench" --redis "$SF_REDIS_ADDR" --scenario hot -P 4 --rate 2000 \
#     --duration-ms 10000 --result-ttl-ms 1000 -W 200

# --- micro-benchmarks ------------------------------------------------------------------
SF_BENCH_REDIS="$SF_REDIS_ADDR" "$micro" --benchmark_min_time=0.5 \
  --benchmark_out="$out/micro.json" --benchmark_out_format=json >"$out/micro.txt" 2>&1
echo "bench: micro-benchmarks done ($((SECONDS - started)) s)" >&2

# --- redis-benchmark baseline --------------------------------------------------------------
# The same two round trips a flight on a fresh key makes (get_or_lock, then
# complete), on random keys, as redis-benchmark measures them. The script
# bodies are read from lib/lua_scripts.cpp so there is one source of truth.
lua_body() {
  sed -n "/$1 = R\"lua(/,/)lua\";/p" lib/lua_scripts.cpp | sed '1d;$d'
}
sha_get_or_lock="$("${redis[@]}" SCRIPT LOAD "$(lua_body kGetOrLockSource)")"
sha_complete="$("${redis[@]}" SCRIPT LOAD "$(lua_body kCompleteSource)")"
envelope="$(head -c 150 /dev/zero | tr '\0' v)"
for mode in "-c 1 -P 1" "-c 64 -P 1" "-c 1 -P 64"; do
  # shellcheck disable=SC2086  # $mode is a list of flags
  {
    redis-benchmark -h 127.0.0.1 -p "$SF_REDIS_PORT" $mode -n 100000 -r 100000000 --csv \
      EVALSHA "$sha_get_or_lock" 2 "{k:__rand_int__}:result" "{k:__rand_int__}:lock" \
      tok 10000 | tail -n 1 | sed "s/^/get_or_lock,$mode,/"
    redis-benchmark -h 127.0.0.1 -p "$SF_REDIS_PORT" $mode -n 100000 -r 100000000 --csv \
      EVALSHA "$sha_complete" 2 "{c:__rand_int__}:result" "{c:__rand_int__}:lock" \
      tok "$envelope" 5000 "{c:__rand_int__}:ch" | tail -n 1 | sed "s/^/complete,$mode,/"
  } >>"$out/redis-benchmark.csv"
done
echo "bench: redis-benchmark done ($((SECONDS - started)) s)" >&2

# --- the table -------------------------------------------------------------------------
python3 bench/report.py "$out" "$doc" "$((SECONDS - started))"
echo "bench: wrote $doc in $((SECONDS - started)) s" >&2
