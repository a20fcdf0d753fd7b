#!/usr/bin/env bash
# Installs etcd, etcdctl and etcdutl 3.5 from Debian 13 (trixie) into $PREFIX/bin (default
# /usr/local/bin), on Debian 12 or later, as root.
#
# Why: Debian 12 ships etcd 3.4.23, which hides behaviour the tests must see (watch progress
# requests are answered from 3.5.13 on, as kube-apiserver's feature check assumes). Trixie's
# etcd-server/etcd-client need only libc6 >= 2.34, so they run on Debian 12.
#
# The system's apt sources, lists and installed packages are never touched: apt runs on a private
# state directory that lists trixie alone, and the .debs are unpacked with dpkg-deb -x, not
# installed. Idempotent: a new enough etcd already in $PREFIX/bin is left as it is.
#
# `install-etcd.sh --check` installs nothing: it fails unless the etcd on the PATH is new enough
# (CI runs it after installing, and where it cannot install).
set -euo pipefail

PREFIX="${PREFIX:-/usr/local}"
BIN="$PREFIX/bin"
# The first 3.5 release that answers watch progress requests as kube-apiserver expects.
MINIMUM="3.5.13"
BINARIES=(etcd etcdctl etcdutl)

# "3.5.16" from `etcd --version`'s first line ("etcd Version: 3.5.16"); empty when absent.
version_of() {
  [ -n "$1" ] && [ -x "$1" ] || return 0
  "$1" --version 2>/dev/null | sed -n 's/^etcd Version: \([0-9][0-9.]*\).*/\1/p'
}

at_least_minimum() {
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$MINIMUM" "$1" | sort -V | head -n1)" = "$MINIMUM" ]
}

all_present() {
  for binary in "${BINARIES[@]}"; do [ -x "$BIN/$binary" ] || return 1; done
}

if [ "${1:-}" = --check ]; then
  on_path="$(command -v etcd || true)"
  found="$(version_of "$on_path")"
  if ! at_least_minimum "$found"; then
    echo "etcd on the PATH (${on_path:-none}) is version '${found:-unknown}', below $MINIMUM: run scripts/install-etcd.sh as root" >&2
    exit 1
  fi
  echo "etcd $found at $on_path"
  exit 0
fi

current="$(version_of "$BIN/etcd")"
if all_present && at_least_minimum "$current"; then
  echo "etcd $current already in $BIN"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt fetches as the unprivileged _apt user where it exists: it must be able to write here.
chmod 0755 "$work"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' >"$work/sources.list"
if id _apt >/dev/null 2>&1; then chown -R _apt "$work/lists" "$work/cache" "$work/debs"; fi

apt_private=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
)
apt-get "${apt_private[@]}" update
(cd "$work/debs" && apt-get "${apt_private[@]}" download etcd-server etcd-client)

for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
mkdir -p "$BIN"
for binary in "${BINARIES[@]}"; do
  install -m 0755 "$work/root/usr/bin/$binary" "$BIN/$binary"
done

current="$(version_of "$BIN/etcd")"
if ! at_least_minimum "$current"; then
  echo "install-etcd: $BIN/etcd is version '${current:-unknown}', below $MINIMUM" >&2
  exit 1
fi
echo "etcd $current installed in $BIN"
