#!/usr/bin/env bash
# Style and static checks, as CI runs them: clang-format (--dry-run --Werror)
# over every C++ source (the Node addon's included), and clang-tidy
# (.clang-tidy, warnings as errors) over the library. Uses the default
# preset's compile_commands.json.
#
# Usage: scripts/lint.sh
# Env:   SF_SKIP_DEPS=1 skips installing clang-format/clang-tidy.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh --lint
fi

echo "== lint: clang-format"
find include lib test examples bench fuzz bindings/node/src -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cc' \) -print0 |
  xargs -0 clang-format --dry-run --Werror

echo "== lint: clang-tidy (lib/)"
if [[ ! -f build/compile_commands.json ]]; then
  cmake --preset default >/dev/null
fi
status=0
for source in lib/*.cpp; do
  clang-tidy --quiet -p build --warnings-as-errors='*' "$source" 2>/dev/null || status=1
done
if [[ $status -ne 0 ]]; then
  echo "lint: clang-tidy found problems (above)" >&2
  exit 1
fi
echo "== lint: ok"
