#!/bin/sh
# Install every build and test dependency of cfs from Debian packages.
# Idempotent: packages already present are not touched and apt is not refreshed.
set -eu

packages="
  build-essential cmake ninja-build pkg-config git
  libssl-dev libzstd-dev libarchive-dev libfuse3-dev fuse3 libcli11-dev
  nlohmann-json3-dev libxxhash-dev libselinux1-dev zlib1g-dev
  libcurl4-openssl-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev clang-format
  erofs-utils attr e2fsprogs util-linux skopeo docker-registry
  python3 libcap2-bin libarchive-tools golang-go buildah time pax
  golang-github-containerd-stargz-snapshotter-dev
  qemu-system-x86 busybox-static cpio kmod xz-utils zstd initramfs-tools systemd udev
  systemd-boot-efi ovmf dosfstools mtools binutils
  debhelper dpkg-dev fakeroot lintian
"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  echo "setup-deps: all packages present"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup-deps: missing packages:$missing" >&2
  echo "setup-deps: run as root (apt-get install) to install them" >&2
  exit 1
fi

echo "setup-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "setup-deps: done"
