#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# ztna end to end on this machine, in network namespaces: a controller, a lab with private services and a
# connector, and a laptop with a tunneler that reaches the lab's web server and SSH-like service through the
# connector — and nothing else. Installs what it needs, builds, and leaves everything running.
#
#   sudo ./tools/demo.sh           start (builds into build-demo/)
#   sudo ./tools/demo.sh --stop    stop every process it started and remove the namespaces
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
        echo "demo.sh: must run as root (sudo ./tools/demo.sh): it creates network namespaces" >&2
        exit 1
fi

if [ "${1:-}" = "--stop" ]; then
        exec /usr/bin/python3 "$src/tools/demo.py" stop
fi
if [ $# -ne 0 ]; then
        echo "usage: sudo ./tools/demo.sh [--stop]" >&2
        exit 2
fi

"$src/tools/install-deps.sh"
build="${ZTNA_DEMO_BUILDDIR:-$src/build-demo}"
if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" "$src" --buildtype=debugoptimized >/dev/null
fi
ninja -C "$build" src/controller/ztna-controller src/connector/ztna-connector src/tunneler/ztna-tunneler \
        src/ztnactl/ztnactl
exec /usr/bin/python3 "$src/tools/demo.py" start "$build"
