#!/bin/sh
# The full cfs test suite: installs dependencies (as root), builds, runs every test,
# then builds the libFuzzer targets and runs each briefly.
#   ./tools/test.sh            everything
#   CFS_TEST_QUICK=1 ./tools/test.sh   skip the sanitizer, fuzzing and VM stages
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc)

if [ "$(id -u)" = 0 ]; then
  ./tools/setup-deps.sh
else
  ./tools/setup-deps.sh || { echo "test.sh: install the missing packages (run as root)" >&2; exit 1; }
fi

echo "== build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j"$jobs"

echo "== unit, integration and privileged tests"
ctest --test-dir build -j"$jobs" --output-on-failure --timeout 900

if [ "${CFS_TEST_QUICK:-0}" = 1 ]; then
  echo "test.sh: quick mode, skipping the sanitizer, VM and fuzzing stages"
  exit 0
fi

# --- ASan + UBSan: the whole suite again under the sanitizers (docs/RELIABILITY.md). The
# static cfs-mount cannot carry the runtimes; CMake builds it without them. ---
echo "== ASan + UBSan: every test under the sanitizers"
# Debug (-O0): this build exists to run the tests under the sanitizers, and -O0 compiles it
# in far less time, which keeps the whole of CI inside its budget.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCFS_SANITIZE=address,undefined >/dev/null
ninja -C build-asan -j"$jobs"
# The kill -9 crash-consistency tests rerun the same pulls, writes and gc until enough kills
# land mid-run; the other ASan tests cover those code paths, and the first stage runs
# these in full, so under the sanitizers (5x slower) they would only spend the CI budget.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -j"$jobs" --output-on-failure --timeout 900 -E 'KillNine'
# --- end of ASan + UBSan ---

# --- Debian packages: built with dpkg-buildpackage, lintian-clean, installed, the demo run
# against the installed binaries, purged (tests/packaging/deb-test.sh); needs root. ---
if [ "$(id -u)" = 0 ]; then
  echo "== Debian packages: build, lintian, install, demo, purge"
  ./tests/packaging/deb-test.sh
else
  echo "test.sh: not root, skipping the Debian package test (it installs packages)"
fi
# --- end of Debian packages ---

# --- VM smoke tests (vm/run-smoke, see README "VM smoke tests"); skipped by CFS_TEST_QUICK=1 ---
echo "== VM smoke tests: Debian 5.10, 6.1, 6.12 and the newest 7.x kernel under qemu"
CFS_BUILD_DIR=build ./vm/run-smoke
# --- end of VM smoke tests ---

echo "== fuzzing (short runs)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCFS_BUILD_FUZZERS=ON -DCFS_BUILD_TESTS=OFF \
  -DCFS_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" >/dev/null
ninja -C build-fuzz -j"$jobs"
./tests/run-fuzzers.sh build-fuzz "${CFS_FUZZ_SECONDS:-20}"

echo "test.sh: all tests passed"
