#!/usr/bin/env bash
# Installs kustomize (the test of manifests/ runs the real `kustomize build`) from Debian 13,
# which packages 5.6.0; Debian 12 has none. Only the package is fetched: the system's apt
# sources and state are not touched, and nothing but /usr/local/bin/kustomize is installed.
set -euo pipefail

if command -v kustomize >/dev/null 2>&1; then exit 0; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt downloads as the unprivileged user _apt, which must be able to enter the directory.
chmod 755 "$work"
mkdir -p "$work"/lists/partial "$work"/cache/archives/partial "$work"/root
echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' >"$work/sources.list"
apt_options=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
)
apt-get "${apt_options[@]}" update
(cd "$work" && apt-get "${apt_options[@]}" download kustomize)
dpkg-deb -x "$work"/kustomize_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/kustomize" /usr/local/bin/kustomize
kustomize version
