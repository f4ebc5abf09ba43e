#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Runs every test ztna has: installs dependencies, builds with warnings as errors (gcc), builds with
# AddressSanitizer+UBSan, runs the unit tests and the fuzz-corpus replays in both, the integration tests
# (tests/integration, pytest) with the release build, the systemd and packaging tests (tests/systemd:
# unit hardening, docs, .deb/.rpm builds, an end-to-end run under systemd in systemd-nspawn), then runs
# each libFuzzer target (clang) for a bounded time. The last line is "N passed, N failed, N skipped"; the exit status is non-zero if anything
# failed.
#
#   sudo ./tools/test.sh                 everything
#   ZTNA_FUZZ_SECONDS=60 ./tools/test.sh  fuzz longer (default 20 s per target; 0 skips libFuzzer runs)
#   ZTNA_TEST_BUILDDIR=DIR               where the build trees go (default: build-test/)
set -uo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
out=${ZTNA_TEST_BUILDDIR:-$src/build-test}
fuzz_seconds=${ZTNA_FUZZ_SECONDS:-20}
jobs=$(nproc 2>/dev/null || echo 2)
summary=()
total_passed=0
total_failed=0
total_skipped=0

note() { printf '\n== %s\n' "$*"; }

count() { # label testlog | --junit label pytest.xml pytest-exit-status
        local res
        res=$(/usr/bin/python3 "$src/tools/test-summary.py" "$@")
        printf '%s\n' "$res" | grep -v '^COUNTS '
        summary+=("$(printf '%s\n' "$res" | head -n1)")
        read -r _ p f s < <(printf '%s\n' "$res" | grep '^COUNTS ')
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
        total_skipped=$((total_skipped + s))
}

fail_step() { # label: a build step that failed counts as one failure
        summary+=("$1: build FAILED")
        total_failed=$((total_failed + 1))
}

if [ "$(id -u)" -eq 0 ]; then
        note "dependencies"
        "$src/tools/install-deps.sh" || fail_step "install-deps"
else
        echo "test.sh: not root, skipping tools/install-deps.sh (run with sudo on a fresh machine)" >&2
fi

# build LABEL DIR MESON-ARGS… ; then runs the meson test suites in it.
build_and_test() {
        local label=$1 dir=$2
        shift 2
        note "$label: configure and build"
        if [ ! -f "$dir/build.ninja" ]; then
                meson setup "$dir" "$src" "$@" >"$dir.setup.log" 2>&1 || {
                        mkdir -p "$dir"
                        cat "$dir.setup.log"
                        fail_step "$label"
                        return
                }
        else
                meson configure "$dir" "$@" >/dev/null || { fail_step "$label"; return; }
        fi
        if ! ninja -C "$dir" -j "$jobs"; then
                fail_step "$label"
                return
        fi
        note "$label: tests"
        rm -f "$dir/meson-logs/testlog.json"
        meson test -C "$dir" --num-processes "$jobs" --print-errorlogs || true
        count "$label" "$dir/meson-logs/testlog.json"
}

mkdir -p "$out"

build_and_test "gcc -Dwerror=true" "$out/release" -Dwerror=true -Dbuildtype=debugoptimized

build_and_test "gcc ASan+UBSan" "$out/asan" -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbuildtype=debug

# Integration: real programs over loopback (e.g. our gRPC against grpc-js), with the release build's
# binaries and Debian's pytest. A missing or crashed pytest, or one that collected nothing, is a failure.
label="integration (pytest)"
note "$label"
rm -f "$out/pytest.xml"
ZTNA_BUILD_DIR="$out/release" /usr/bin/python3 -m pytest -q "$src/tests/integration" \
        --junitxml="$out/pytest.xml" -o cache_dir="$out/pytest-cache" </dev/null
count --junit "$label" "$out/pytest.xml" "$?"

# The daemons' suites once more with the ASan+UBSan build: every test stops its daemons with SIGTERM and
# requires exit status 0, so a leak or undefined behaviour anywhere on those paths fails the test.
label="integration (pytest, ASan+UBSan daemons)"
note "$label"
rm -f "$out/pytest-asan.xml"
ZTNA_BUILD_DIR="$out/asan" ZTNA_SANITIZED=1 /usr/bin/python3 -m pytest -q \
        "$src"/tests/integration/test_controller*.py "$src"/tests/integration/test_agent*.py \
        "$src"/tests/integration/test_dataplane.py \
        --junitxml="$out/pytest-asan.xml" -o cache_dir="$out/pytest-cache" </dev/null
count --junit "$label" "$out/pytest-asan.xml" "$?"

# systemd integration and packaging (tests/systemd): the units' hardening (systemd-analyze security),
# the man pages and completions, the .deb and .rpm packages (built once into $out/packages, from a clean
# copy of the tree), and the end-to-end run under a real systemd booted with systemd-nspawn with the .debs
# installed. Skipped with a message, not failed, only where nspawn cannot boot.
label="systemd and packages (pytest)"
note "$label"
rm -f "$out/pytest-systemd.xml"
mkdir -p "$out/packages"
ZTNA_BUILD_DIR="$out/release" ZTNA_PACKAGES_DIR="$out/packages" /usr/bin/python3 -m pytest -q \
        "$src/tests/systemd" --junitxml="$out/pytest-systemd.xml" -o cache_dir="$out/pytest-cache" </dev/null
count --junit "$label" "$out/pytest-systemd.xml" "$?"

# libFuzzer: each target explores from its seed corpus for a bounded time. New inputs go to a scratch
# directory, never into the tree; a crash leaves its input under $out/fuzz-artifacts/.
if [ "$fuzz_seconds" -gt 0 ] && command -v clang >/dev/null; then
        label="libFuzzer (clang, ${fuzz_seconds}s per target)"
        fdir="$out/fuzz"
        note "$label: build"
        ok=1
        if [ ! -f "$fdir/build.ninja" ]; then
                CC=clang meson setup "$fdir" "$src" -Dwerror=true -Dfuzzers=true -Db_sanitize=address,undefined \
                        -Db_lundef=false -Dbuildtype=debugoptimized >"$fdir.setup.log" 2>&1 ||
                        { cat "$fdir.setup.log"; ok=0; }
        fi
        targets=$(cd "$src/tests/fuzz" && ls fuzz-*.c | grep -v '^fuzz-main' | sed 's/\.c$//')
        if [ $ok -eq 1 ]; then
                for t in $targets; do
                        ninja -C "$fdir" "tests/fuzz/$t-libfuzzer" || { ok=0; break; }
                done
        fi
        if [ $ok -eq 0 ]; then
                fail_step "$label"
        else
                p=0 f=0
                mkdir -p "$out/fuzz-artifacts"
                for t in $targets; do
                        scratch=$(mktemp -d)
                        note "$label: $t"
                        if ASAN_OPTIONS=detect_leaks=1 "$fdir/tests/fuzz/$t-libfuzzer" \
                                -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
                                -artifact_prefix="$out/fuzz-artifacts/$t-" \
                                "$scratch" "$src/tests/fuzz/corpus/$t" >"$out/fuzz-$t.log" 2>&1; then
                                p=$((p + 1))
                                grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$out/fuzz-$t.log" | tail -n 2
                        else
                                f=$((f + 1))
                                tail -n 40 "$out/fuzz-$t.log"
                                echo "FAILED $t: see $out/fuzz-$t.log and $out/fuzz-artifacts/"
                        fi
                        rm -rf "$scratch"
                done
                summary+=("$label: $p passed, $f failed, 0 skipped")
                total_passed=$((total_passed + p))
                total_failed=$((total_failed + f))
        fi
fi

note "summary"
for s in "${summary[@]}"; do
        echo "  $s"
done
echo "$total_passed passed, $total_failed failed, $total_skipped skipped"
[ "$total_failed" -eq 0 ]
