#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# The one list of packages ztna needs to build, run and test (DESIGN.md §2).
# Idempotent and non-interactive: installs only what is missing, so a second run costs a few
# dpkg look-ups. Needs root. Usage: sudo ./tools/install-deps.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps.sh: must run as root (sudo ./tools/install-deps.sh)" >&2
        exit 1
fi

packages=(
        # build toolchain
        build-essential clang libclang-rt-14-dev lld meson ninja-build pkg-config
        # libraries (DESIGN.md §2)
        libsystemd-dev libssl-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
        libsqlite3-dev libpq-dev libmicrohttpd-dev libjansson-dev libinih-dev libargon2-dev
        libkeyutils-dev libsecret-1-dev libglib2.0-dev libcurl4-openssl-dev
        # runtime tools the daemons and tests call
        openssl systemd systemd-container dbus polkitd keyutils iproute2 sqlite3 curl
        # test tools and real peers
        python3 python3-pytest python3-dbusmock python3-dbus nodejs stunnel4 iperf3 zsh fish man-db
        chromium prometheus
        # documentation and packaging
        scdoc debhelper dpkg-dev lintian rpm
)

# A nodejs build that bundles its own npm (e.g. NodeSource's) conflicts with Debian's npm package.
if ! command -v npm >/dev/null 2>&1; then
        packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
                missing+=("$p")
        fi
done

if [ "${#missing[@]}" -gt 0 ]; then
        echo "install-deps.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
else
        echo "install-deps.sh: all ${#packages[@]} packages present"
fi

# grpc-js for the interop tests, pinned by tests/interop/package-lock.json, into tests/interop/node_modules.
# npm ci starts from scratch, so it runs only when the lock file changed since the last install.
interop="$(cd "$(dirname "$0")/.." && pwd)/tests/interop"
stamp="$interop/node_modules/.ztna-package-lock.sha256"
lock_sum=$(sha256sum "$interop/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$lock_sum" ]; then
        echo "install-deps.sh: tests/interop/node_modules matches its lock file"
else
        echo "install-deps.sh: npm ci in tests/interop"
        npm ci --prefix "$interop" --no-audit --no-fund --prefer-offline --ignore-scripts --loglevel=warn
        echo "$lock_sum" >"$stamp"
fi
