#!/usr/bin/env bash
# Checks that an installed singleflight is usable the two ways a user would
# consume it: find_package(singleflight CONFIG) and pkg-config. Builds the
# project with only the library (no tests, examples or benchmarks), installs
# it into a temporary prefix, builds test/install_consumer against that prefix
# both ways, and runs each consumer. Does this for a shared (the default) and
# a static library.
#
# Usage: scripts/check_install.sh [shared|static]...   (default: shared static)
# Env:   SF_KEEP_TMP=1 keeps the temporary directory for inspection.
#        SF_SKIP_DEPS=1 skips scripts/deps.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  ./scripts/deps.sh
fi

kinds=("$@")
if [[ ${#kinds[@]} -eq 0 ]]; then
  kinds=(shared static)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/sf-check-install.XXXXXX")"
cleanup() {
  if [[ "${SF_KEEP_TMP:-0}" == 1 ]]; then
    echo "check_install: kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

jobs="${SF_JOBS:-2}"
consumer_src="$repo/test/install_consumer"
orig_pkg_config_path="${PKG_CONFIG_PATH:-}"

step() { printf '\n== check_install [%s]: %s\n' "$kind" "$*"; }

for kind in "${kinds[@]}"; do
  case "$kind" in
    shared) shared=ON ;;
    static) shared=OFF ;;
    *) echo "check_install: unknown kind '$kind' (use shared or static)" >&2; exit 2 ;;
  esac
  prefix="$work/prefix-$kind"
  build="$work/build-$kind"

  step "configure, build and install the library into $prefix"
  cmake -S "$repo" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS="$shared" \
    -DSINGLEFLIGHT_BUILD_TESTS=OFF \
    -DSINGLEFLIGHT_BUILD_EXAMPLES=OFF \
    -DSINGLEFLIGHT_BUILD_BENCH=OFF \
    -DCMAKE_INSTALL_PREFIX="$prefix"
  cmake --build "$build" -j "$jobs"
  cmake --install "$build"

  config="$(find "$prefix" -name singleflightConfig.cmake -print -quit)"
  pcfile="$(find "$prefix" -name singleflight.pc -print -quit)"
  if [[ -z "$config" || -z "$pcfile" ]]; then
    echo "check_install: singleflightConfig.cmake or singleflight.pc was not installed" >&2
    exit 1
  fi

  step "consumer via find_package(singleflight CONFIG REQUIRED)"
  # The package registry is off so that only this prefix can satisfy the
  # find_package; the cache then tells which directory it came from.
  cmake -S "$consumer_src" -B "$work/consumer-cmake-$kind" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  found_dir="$(sed -n 's/^singleflight_DIR:PATH=//p' "$work/consumer-cmake-$kind/CMakeCache.txt")"
  if [[ "$found_dir" != "$prefix"/* ]]; then
    echo "check_install: find_package used '$found_dir', not the prefix $prefix" >&2
    exit 1
  fi
  cmake --build "$work/consumer-cmake-$kind" -j "$jobs"
  "$work/consumer-cmake-$kind/install_consumer"

  step "consumer via pkg-config --cflags --libs singleflight"
  PKG_CONFIG_PATH="$(dirname "$pcfile")${orig_pkg_config_path:+:$orig_pkg_config_path}"
  export PKG_CONFIG_PATH
  pkg-config --print-errors --exists singleflight
  pc_flags="$(pkg-config --cflags --libs singleflight)"
  pc_libdir="$(pkg-config --variable=libdir singleflight)"
  echo "pkg-config: $pc_flags"
  # Built and run as the README tells a user: no rpath; a prefix of one's own
  # is not on the loader's path, so LD_LIBRARY_PATH names it (after an
  # install to a system prefix, `ldconfig` does that instead).
  # shellcheck disable=SC2086  # the flags are meant to split into words
  ${CXX:-c++} -std=c++17 -O1 -o "$work/consumer-pc-$kind" "$consumer_src/main.cpp" $pc_flags
  if [[ $kind == shared ]] && "$work/consumer-pc-$kind" >/dev/null 2>&1; then
    echo "check_install: the consumer found libsingleflight without LD_LIBRARY_PATH;" \
      "another copy is installed on this machine's loader path" >&2
    exit 1
  fi
  LD_LIBRARY_PATH="$pc_libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$work/consumer-pc-$kind"
done

printf '\ncheck_install: ok (%s)\n' "${kinds[*]}"
