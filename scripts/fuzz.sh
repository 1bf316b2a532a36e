#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang into build-fuzz and runs each
# one for SECONDS on its committed seed corpus (docs/fuzzing.md). Prints each
# target's executions, speed and coverage; exits non-zero if any target found
# a crash, a leak, an invariant violation, a timeout or an out-of-memory. The
# reproducer is then in build-fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [SECONDS=20] [TARGET...]
# Env:   SF_SKIP_DEPS=1 skips scripts/deps.sh --fuzz (clang, libclang-rt-14-dev).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  sed -n '2,9p' "${BASH_SOURCE[0]}"
  exit 2
fi
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(envelope_fuzz key_naming_fuzz subscriber_fuzz flight_fuzz)
fi

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh --fuzz
fi

build=build-fuzz
# RelWithDebInfo without -DNDEBUG: assertions stay on while fuzzing.
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DBUILD_SHARED_LIBS=OFF -DSINGLEFLIGHT_BUILD_FUZZ=ON -DSINGLEFLIGHT_BUILD_TESTS=OFF \
  -DSINGLEFLIGHT_BUILD_EXAMPLES=OFF -DSINGLEFLIGHT_BUILD_BENCH=OFF \
  -DSINGLEFLIGHT_INSTALL=OFF >/dev/null
cmake --build "$build" -j2 --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
summary=()
for target in "${targets[@]}"; do
  # New inputs go to a scratch corpus in the build dir; the committed seeds
  # are only read, so a run never dirties the repo.
  work="$build/corpus/$target"
  artifacts="$build/artifacts/$target/"
  mkdir -p "$work" "$artifacts"
  log="$build/$target.log"
  echo "== fuzz.sh: $target for ${seconds}s"
  status=0
  "$build/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts" \
    "$work" "fuzz/corpus/$target" >"$log" 2>&1 || status=$?
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  cov="$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$done_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$done_line")"
  if [[ $status -ne 0 ]]; then
    failed+=("$target")
    tail -40 "$log"
    summary+=("$(printf '%-16s FAILED (exit %d) see %s and %s' "$target" "$status" "$log" "$artifacts")")
  else
    summary+=("$(printf '%-16s ok  runs %-10s exec/s %-7s cov %-5s ft %-6s corpus %s' \
      "$target" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
  fi
done

echo "== fuzz.sh: summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: crashes in ${failed[*]}" >&2
  exit 1
fi
