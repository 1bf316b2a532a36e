#!/usr/bin/env bash
# The transport's cost, plaintext and TLS, against private servers: full
# distinct-key flights per second at 1 and 64 in the air (sf_micro_bench
# BM_FlightDistinctKeys) and the follower overhead of P=4 C=100 W=50
# (sf_bench), each the median of $REPEAT runs, interleaved so that machine
# noise hits every row alike. README "Performance" has the table.
#
#   bench/transport.sh                       # build-release (preset release)
#   OLD_BUILD=/path/to/build bench/transport.sh   # adds rows for another build
#                                                 # (e.g. an older commit's), plaintext
#   REPEAT=5 bench/transport.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
repeat="${REPEAT:-3}"
build=build-release
cmake --preset release >/dev/null
cmake --build "$build" -j2 --target sf_bench sf_micro_bench >/dev/null

# shellcheck source=../scripts/lib/redis.sh
source scripts/lib/redis.sh
sf_redis_start
tls_dir="$(mktemp -d "${TMPDIR:-/tmp}/sf-tls-bench.XXXXXX")"
tls_pid=""
cleanup() {
  [[ -n "$tls_pid" ]] && kill "$tls_pid" 2>/dev/null && wait "$tls_pid" 2>/dev/null
  rm -rf "$tls_dir"
  sf_redis_stop
}
trap cleanup EXIT

# A TLS-only server with a throw-away self-signed certificate for 127.0.0.1.
printf '[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=localhost\n[ext]\nsubjectAltName=IP:127.0.0.1\nbasicConstraints=CA:TRUE\n' >"$tls_dir/cnf"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -keyout "$tls_dir/key.pem" -out "$tls_dir/ca.pem" -config "$tls_dir/cnf" -extensions ext 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
  tls_port=$((20000 + RANDOM))
  sf__port_in_use "$tls_port" && continue
  redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 \
    --tls-cert-file "$tls_dir/ca.pem" --tls-key-file "$tls_dir/key.pem" --tls-auth-clients no \
    --save '' --appendonly no --dir "$tls_dir" --logfile "$tls_dir/redis.log" >/dev/null 2>&1 &
  tls_pid=$!
  for _ in $(seq 1 50); do
    [[ "$(redis-cli -p "$tls_port" --tls --cacert "$tls_dir/ca.pem" PING 2>/dev/null)" == PONG ]] && break 2
    kill -0 "$tls_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$tls_pid" 2>/dev/null || true
  tls_pid=""
done
[[ -n "$tls_pid" ]] || { echo "transport: no TLS redis-server" >&2; exit 1; }
plain="redis://$SF_REDIS_ADDR"
tls="rediss://127.0.0.1:$tls_port?tls_ca=$tls_dir/ca.pem"

rows=("new plaintext|$build|$plain" "new TLS|$build|$tls")
[[ -n "${OLD_BUILD:-}" ]] && rows=("old plaintext|$OLD_BUILD|$SF_REDIS_ADDR" "${rows[@]}")
results="$tls_dir/results"
for _ in $(seq 1 "$repeat"); do
  for row in "${rows[@]}"; do
    IFS='|' read -r name dir url <<<"$row"
    flag=(--redis-url "$url")
    [[ "$name" == old* ]] && flag=(--redis "$url")  # an older sf_bench may not know --redis-url
    SF_BENCH_REDIS="$url" "$dir/bench/sf_micro_bench" --benchmark_filter=BM_FlightDistinctKeys \
      --benchmark_format=csv 2>/dev/null |
      awk -F, -v n="$name" '/BM_FlightDistinctKeys/ {split($1, a, "/"); print n "|flights" a[2] "|" $7}' >>"$results"
    "$dir/bench/sf_bench" "${flag[@]}" -P 4 -C 100 -W 50 2>/dev/null | tail -1 |
      python3 -c "import json,sys; d=json.loads(sys.stdin.read()); n='$name'
print(f\"{n}|overhead_p50|{d['overhead_ms_p50']}\"); print(f\"{n}|overhead_p99|{d['overhead_ms_p99']}\")
print(f\"{n}|executions|{d['executions']}\")" >>"$results"
  done
done
python3 - "$results" <<'PY'
import collections, statistics, sys
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, metric, value = line.strip().split('|')
    vals[(name, metric)].append(float(value))
names = list(dict.fromkeys(n for n, _ in vals))
print('| transport | flights/s, 1 in the air | flights/s, 64 in the air | follower overhead p50 / p99 (ms) | executions |')
print('|---|---|---|---|---|')
for n in names:
    m = lambda k: statistics.median(vals[(n, k)])
    print(f"| {n} | {m('flights1')/1000:.1f} k | {m('flights64')/1000:.1f} k | "
          f"{m('overhead_p50'):.2f} / {m('overhead_p99'):.2f} | {int(max(vals[(n, 'executions')]))} |")
PY
