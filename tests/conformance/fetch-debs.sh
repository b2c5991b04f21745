#!/bin/bash
# fetch-debs.sh CACHEDIR PACKAGE... : make CACHEDIR hold one .deb of each PACKAGE.
# Taken from the apt cache (/var/cache/apt/archives) when there, else `apt-get download`
# (runs `apt-get update` once if the package is unknown). A package that cannot be had is
# reported on stderr; the caller counts what it got.
set -u
cache=$1; shift
mkdir -p "$cache"
missing=()
for p in "$@"; do
  if ls "$cache/${p}"_*.deb >/dev/null 2>&1; then continue; fi
  found=$(ls /var/cache/apt/archives/"${p}"_*.deb 2>/dev/null | head -n1)
  if [ -n "$found" ]; then cp "$found" "$cache/"; else missing+=("$p"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
cd "$cache" || exit 1
if ! apt-get download "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  for p in "${missing[@]}"; do
    apt-get download "$p" >/dev/null 2>&1 || echo "fetch-debs: cannot download $p" >&2
  done
fi
exit 0
