#!/usr/bin/env bash
# Tries the README as a new user would, on a fresh Debian 12: builds a minbase
# root with debootstrap (no curl, no git, no sudo, no /etc/hosts), copies a
# clean clone of HEAD into it, and runs there, as root, in the README's order:
#   ./scripts/demo.sh
#   ./scripts/test.sh
#   cmake --install build --prefix /usr/local && ldconfig, then a program
#   built with `pkg-config --cflags --libs singleflight` (README "Build and
#   install")
# and reports each step: PASS/FAIL, duration, the tail of its log on failure.
# Run by hand, as root (debootstrap, chroot and mount need it); it takes a
# while (apt downloads, a full build, the whole suite).
#
# Usage: scripts/fresh_check.sh [--keep]
#   --keep  leave the root (and its logs) in place afterwards
# Env:   SF_FRESH_DIR     work directory (default: a new temp dir)
#        SF_FRESH_MIRROR  Debian mirror (default: the host's, else deb.debian.org)
#        SF_SKIP_DEPS=1   skips scripts/deps.sh --fresh (debootstrap)
# Exit:  0 when every step passed, 1 otherwise, 2 when the root could not be made.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    *) sed -n '2,19p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
done
if [[ "$(id -u)" -ne 0 ]]; then
  echo "fresh_check: run as root (debootstrap, chroot, mount)" >&2
  exit 2
fi
if [[ "${SF_SKIP_DEPS:-0}" != 1 ]]; then
  "$repo/scripts/deps.sh" --fresh
fi
command -v git >/dev/null 2>&1 || { echo "fresh_check: git not found" >&2; exit 2; }

# The host's Debian mirror: deb822 "URIs:" or a one-line "deb URL bookworm".
host_mirror() {
  # (cat fails when one of the files is absent; that must not end the script)
  { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
    awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}
         /^deb / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}'
}
mirror="${SF_FRESH_MIRROR:-$(host_mirror)}"
mirror="${mirror:-http://deb.debian.org/debian}"

work="${SF_FRESH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sf-fresh.XXXXXX")}"
root="$work/root"
mkdir -p "$work"
mounted=()
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[i]}" 2>/dev/null || true
  done
  if ((keep == 0)); then
    rm -rf "$work"
  else
    echo "fresh_check: kept $work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

results=()
failed=0
# Runs one step, its output to $work/<name>.log; records PASS/FAIL.
step() {
  local name=$1 start status=0 secs
  shift
  echo "fresh_check: $name ..."
  start=$(date +%s)
  "$@" >"$work/$name.log" 2>&1 || status=$?
  secs=$(($(date +%s) - start))
  if ((status == 0)); then
    results+=("PASS  $name (${secs} s)")
  else
    results+=("FAIL  $name (${secs} s, exit $status; log $work/$name.log)")
    failed=1
    echo "---- last lines of $name:"
    tail -n 25 "$work/$name.log"
    echo "----"
  fi
  echo "fresh_check: ${results[-1]}"
  return "$status"
}

echo "fresh_check: a minbase Debian 12 root in $root from $mirror"
if ! step debootstrap debootstrap --variant=minbase bookworm "$root" "$mirror"; then
  exit 2
fi
# Network for apt (a copy of the host's resolver); nothing else of the host.
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --rbind /dev "$root/dev" && mounted+=("$root/dev")

# A clean clone of what is committed, without git on the target (as a user
# who downloaded a release tarball): the history stays outside.
src="$root/root/singleflight"
git clone --quiet --no-hardlinks "$repo" "$work/clone"
mkdir -p "$src"
git -C "$work/clone" archive HEAD | tar -x -C "$src"
commit="$(git -C "$repo" rev-parse --short HEAD)"
echo "fresh_check: commit $commit copied to /root/singleflight in the root"

# The one thing of the host's network besides the resolver: when the host
# reaches the npm registry through a TLS-intercepting egress (its CA bundle in
# NODE_EXTRA_CA_CERTS), npm in the root needs that CA too. A real fresh
# machine on an open network has no such CA and needs nothing.
extra_ca=()
if [[ -n "${NODE_EXTRA_CA_CERTS:-}" && -f "$NODE_EXTRA_CA_CERTS" ]]; then
  cp "$NODE_EXTRA_CA_CERTS" "$root/root/host-egress-ca.crt"
  extra_ca=(NODE_EXTRA_CA_CERTS=/root/host-egress-ca.crt)
  echo "fresh_check: npm in the root trusts the host's NODE_EXTRA_CA_CERTS (the host's egress)"
fi

# Inside: a login-like environment of its own, nothing else inherited.
# shellcheck disable=SC2317  # called through step
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 "${extra_ca[@]}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /root/singleflight && $1"
}

step demo in_root './scripts/demo.sh' || true
step test in_root './scripts/test.sh' || true
step install in_root 'cmake --install build --prefix /usr/local && ldconfig' || true
# shellcheck disable=SC2016  # expanded inside the root, not here
step pkg-config-consumer in_root 'c++ -std=c++17 test/install_consumer/main.cpp \
  $(pkg-config --cflags --libs singleflight) -o /tmp/consumer && /tmp/consumer' || true

echo
echo "fresh_check: commit $commit on a fresh minbase Debian 12 root"
for line in "${results[@]}"; do echo "  $line"; done
# The demo's and the suite's own last lines, as a reader of the report wants them.
for name in demo test; do
  if [[ -f "$work/$name.log" ]]; then
    echo "  -- $name, last lines:"
    tail -n 6 "$work/$name.log" | sed 's/^/     /'
  fi
done
exit "$failed"
