# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the integration tests: real programs from the build tree talking over loopback.

The build tree comes from ZTNA_BUILD_DIR (default: build/ in the source tree). Every process is started
with subprocess, waited for with a timeout and stopped by its PID (SIGTERM, then SIGKILL); a server must
exit 0 after SIGTERM, so a crash or a sanitizer report at exit fails the test that used it.

Run with Debian's pytest: /usr/bin/python3 -m pytest tests/integration
"""
import json
import os
import pathlib
import selectors
import shutil
import signal
import subprocess
import time

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2]
INTEROP = SRC / "tests" / "interop"

TRUST_DOMAIN = "ztna.test"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/controller/ctl-1"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/tunneler/tun-1"

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0


def build_dir():
    d = pathlib.Path(os.environ.get("ZTNA_BUILD_DIR") or "build")
    return d if d.is_absolute() else SRC / d


class Server:
    """A server process that prints "PORT <n>" once it listens."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.proc = None
        self.port = None
        self.early_output = []

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=None, text=True, start_new_session=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while self.port is None:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    pytest.fail(f"{self.name} did not print its port within {START_TIMEOUT} s: "
                                f"{self.early_output}")
                line = self.proc.stdout.readline()
                if not line:
                    rc = self.proc.wait(timeout=STOP_TIMEOUT)
                    pytest.fail(f"{self.name} exited with {rc} before listening: {self.early_output}")
                self.early_output.append(line.rstrip("\n"))
                if line.startswith("PORT "):
                    self.port = int(line.split()[1])
        finally:
            sel.close()
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self):
        """SIGTERM by PID; returns the exit status. SIGKILL and a failure when it does not stop in time."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} (pid {self.proc.pid}) did not exit within {STOP_TIMEOUT} s of SIGTERM")
        self.proc.stdout.close()
        return rc


@pytest.fixture(scope="session")
def grpc_peer():
    path = build_dir() / "tests" / "interop" / "grpc-peer"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it (ninja -C {build_dir()}) or set ZTNA_BUILD_DIR")
    return path


@pytest.fixture(scope="session")
def node():
    path = shutil.which("node") or "/usr/bin/node"
    if not os.access(path, os.X_OK):
        pytest.fail("node is missing: run tools/install-deps.sh as root")
    if not (INTEROP / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"{INTEROP}/node_modules is missing: run tools/install-deps.sh as root")
    return path


@pytest.fixture(scope="session")
def certs(grpc_peer, tmp_path_factory):
    """A PKI made by our production CA (root → issuing → leaves), as PEM files."""
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([str(grpc_peer), "certs", str(d)], check=True, timeout=CALL_TIMEOUT,
                   stdin=subprocess.DEVNULL)
    for f in ("root.pem", "server-chain.pem", "server.key", "client-chain.pem", "client.key"):
        assert (d / f).is_file(), f
    return d


def _serve(server):
    server.start()
    yield server
    rc = server.stop()
    assert rc == 0, f"{server.name} exited with {rc} after SIGTERM"


@pytest.fixture
def c_server(grpc_peer, certs):
    """Our GrpcServer; clients must present a certificate."""
    yield from _serve(Server("grpc-peer serve", [grpc_peer, "serve", certs]))


@pytest.fixture
def c_server_cert_optional(grpc_peer, certs):
    """Our GrpcServer letting clients in without a certificate (only unauthenticated methods would work)."""
    yield from _serve(Server("grpc-peer serve --no-client-cert-ok",
                             [grpc_peer, "serve", certs, "--no-client-cert-ok"]))


@pytest.fixture
def js_server(node, certs):
    """grpc-js with ServerCredentials.createSsl(root, [identity], true)."""
    yield from _serve(Server("node server.js", [node, INTEROP / "server.js", certs]))


@pytest.fixture(params=["c", "js"])
def server(request):
    """Each client test runs against our server and, as the reference, against grpc-js."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def js_call(node, certs):
    """Runs one grpc-js call (tests/interop/client.js) and returns what it observed."""

    def call(port, spec):
        p = subprocess.run([node, str(INTEROP / "client.js"), str(certs), str(port), json.dumps(spec)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
        assert p.returncode == 0, f"client.js exited with {p.returncode}: {p.stdout}{p.stderr}"
        return json.loads(p.stdout.strip().splitlines()[-1])

    return call


@pytest.fixture
def c_call(grpc_peer, certs):
    """Runs one call with our GrpcClientCall (grpc-peer call); returns (exit status, {KEY: value})."""

    def call(port, test, *extra):
        p = subprocess.run([str(grpc_peer), "call", str(certs), str(port), test, *extra],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
        seen = {}
        for line in p.stdout.splitlines():
            key, _, value = line.partition(" ")
            seen[key] = value
        seen["_output"] = p.stdout + p.stderr
        return p.returncode, seen

    return call
