#!/usr/bin/env bash
# Proof that the suite holds on a busy machine: runs CI (`.ci/run`, as CI
# runs it: CI=true, a fresh clone) N times in a row while `stress-ng --cpu`
# keeps every core busy, and reports each run (pass/fail, duration, the tests
# that failed). Run by hand; it takes N times a loaded CI run (~15 min each
# on 2 cores).
#
# Usage: scripts/stress_ci.sh [N=5]
# Env:   SF_STRESS_CPUS  stress-ng workers (default: the number of cores)
#        SF_STRESS_DIR   where the clones and logs go (default: a new temp dir;
#                        kept afterwards, for the logs)
#        SF_SKIP_DEPS=1  skips scripts/deps.sh --stress.
# Exit:  0 when every run passed, 1 otherwise.
#
# It tests what is committed (a clone of HEAD), not the work tree.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-5}"
if ! [[ "$runs" =~ ^[0-9]+$ ]] || ((runs == 0)); then
  echo "usage: scripts/stress_ci.sh [N=5]" >&2
  exit 2
fi
if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  "$repo/scripts/deps.sh" --stress
fi
for tool in git stress-ng; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "stress_ci: $tool not found" >&2
    exit 2
  fi
done

cpus="${SF_STRESS_CPUS:-$(nproc)}"
dir="${SF_STRESS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sf-stress-ci.XXXXXX")}"
mkdir -p "$dir"
commit="$(git -C "$repo" rev-parse --short HEAD)"

stress_pid=""
# shellcheck disable=SC2317  # called from the EXIT trap
stop_stress() {
  if [[ -n "$stress_pid" ]]; then
    kill -TERM "$stress_pid" 2>/dev/null || true
    wait "$stress_pid" 2>/dev/null || true
    stress_pid=""
  fi
}
trap stop_stress EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stress-ng --cpu "$cpus" --timeout 0 --quiet &
stress_pid=$!
echo "stress_ci: $runs runs of .ci/run on commit $commit, stress-ng --cpu $cpus (pid $stress_pid)" \
  "loading the cores; logs in $dir"

passed=0
summary=()
for ((i = 1; i <= runs; i++)); do
  clone="$dir/run-$i"
  log="$dir/run-$i.log"
  rm -rf "$clone"
  # Every run tests the commit named above, even if HEAD moves meanwhile.
  git clone --quiet --no-hardlinks "$repo" "$clone"
  git -C "$clone" checkout --quiet --detach "$commit"
  start=$(date +%s)
  status=0
  (cd "$clone" && CI=true bash .ci/run) >"$log" 2>&1 || status=$?
  secs=$(($(date +%s) - start))
  if ((status == 0)); then
    passed=$((passed + 1))
    line="run $i: PASS in ${secs} s"
  else
    # ctest lists its failures after "The following tests FAILED:".
    failed="$(sed -n '/The following tests FAILED:/,/^Errors while running/p' "$log" |
      sed -n 's/^[[:space:]]*[0-9]* - \(.*\)$/\1/p' | tr '\n' ';')"
    step="$(grep '^== .ci/run:' "$log" | tail -n 1)"
    line="run $i: FAIL (exit $status) in ${secs} s at '${step#== .ci/run: }'${failed:+: $failed}"
  fi
  echo "stress_ci: $line"
  summary+=("$line")
  # The clone's build trees are large; the log is what is kept.
  rm -rf "$clone"
done

stop_stress
echo
echo "stress_ci: $passed of $runs runs passed (commit $commit, stress-ng --cpu $cpus)"
for line in "${summary[@]}"; do echo "  $line"; done
((passed == runs))
