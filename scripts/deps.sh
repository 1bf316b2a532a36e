#!/usr/bin/env bash
# Installs the Debian 12 packages this project builds and tests with, and only
# those that are missing: a machine that has them all is left untouched (no
# apt-get update, no install). Run as root, or as a user with sudo.
#
# Not libmsgpack-dev: that C library registers a CMake package also named
# `msgpack`, which an unversioned find_package(msgpack) would then pick
# (docs: shared STACK-FACTS, "Packages and CMake"); msgpack-cxx is enough.
#
# `deps.sh --fuzz` adds clang and its runtime (libFuzzer, sanitizers) for
# scripts/fuzz.sh only: building and testing (scripts/test.sh, CI's test job)
# use g++ and need neither, so a plain run does not pull a second compiler in.
# `deps.sh --lint` adds clang-format and clang-tidy for scripts/lint.sh.
#
# `deps.sh --stress` adds stress-ng (scripts/stress_ci.sh), `deps.sh --fresh`
# debootstrap (scripts/fresh_check.sh).
#
# apt's output goes to a log file (printed path; its tail is shown when apt
# fails), so a first run prints a few lines, not hundreds.
#
# Every program the scripts and tests call is either in a Debian minbase
# system (bash, coreutils, sed, awk (mawk), grep, findutils, util-linux's
# setsid) or in this list: redis-cli (redis-tools), openssl (the TLS tests
# make their certificates with it; libssl-dev is for the library's TLS
# transport), valgrind, pkg-config. The demo reads HTTP with its own client
# (examples/load), not curl; scripts/fresh_check.sh proves the list on a
# minbase root.
#
# redis-server is installed for its binary only. Tests and scripts start
# private servers on random loopback ports and never use a system service on
# 6379; the install is kept from starting one (see below).
set -euo pipefail

packages=(
  cmake g++ make pkg-config python3
  libuv1-dev libhiredis-dev libmsgpack-cxx-dev libssl-dev openssl
  redis-server redis-tools
  openssl libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libhttp-parser-dev
  liblua5.1-0-dev
  valgrind
)
# The Node binding (bindings/node) needs node, npm and Node's headers. A node
# that is already there is kept (it may be newer than Debian's 18, e.g. from
# NodeSource, which bundles npm and its headers); only what it lacks is added.
if ! command -v node >/dev/null 2>&1; then
  packages+=(nodejs npm libnode-dev)
else
  command -v npm >/dev/null 2>&1 || packages+=(npm)
  node_prefix="$(dirname "$(dirname "$(command -v node)")")"
  [[ -f $node_prefix/include/node/node_api.h ]] || packages+=(libnode-dev)
fi
for flag in "$@"; do
  case "$flag" in
    --fuzz) packages+=(clang libclang-rt-14-dev) ;;
    --lint) packages+=(clang-format clang-tidy) ;;
    --stress) packages+=(stress-ng) ;;
    --fresh) packages+=(debootstrap) ;;
    *) echo "deps: unknown flag $flag (use --fuzz, --lint, --stress or --fresh)" >&2; exit 2 ;;
  esac
done

# One line per installed architecture of the package; any "installed" will do.
installed() {
  local states
  states="$(dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null)" || return 1
  [[ $'\n'"$states"$'\n' == *$'\n'installed$'\n'* ]]
}

missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all ${#packages[@]} packages are installed"
  exit 0
fi
echo "deps: installing ${missing[*]}"

as_root=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "deps: missing packages (${missing[*]}) and not root, and sudo is not available" >&2
    exit 1
  fi
fi

# Keep the install from starting services (redis-server's postinst would start
# one on 6379): Debian's policy-rc.d protocol, exit 101 = "action forbidden".
# Only when the machine has no policy of its own; removed again on exit.
policy=/usr/sbin/policy-rc.d
placed_policy=0
remove_policy() {
  if [[ $placed_policy == 1 ]]; then
    "${as_root[@]}" rm -f "$policy"
  fi
}
trap remove_policy EXIT
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# Placed by singleflight scripts/deps.sh during apt-get install.\nexit 101\n' |
    "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  placed_policy=1
fi

apt_env=(env DEBIAN_FRONTEND=noninteractive)
apt_log="$(mktemp "${TMPDIR:-/tmp}/sf-deps-apt.XXXXXX.log")"
# Runs one apt step quietly; on failure shows why and stops.
apt_step() {
  local what=$1
  shift
  echo "deps: $what (log: $apt_log)"
  if ! "${as_root[@]}" "${apt_env[@]}" "$@" >>"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    echo "deps: FAILED: $what (the whole log: $apt_log)" >&2
    exit 1
  fi
}
apt_step "apt-get update" apt-get update -q
apt_step "installing ${#missing[@]} packages" \
  apt-get install -y -q --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
  if ! installed "$pkg"; then
    echo "deps: $pkg is still not installed" >&2
    exit 1
  fi
done
rm -f "$apt_log"
echo "deps: installed ${missing[*]}"
