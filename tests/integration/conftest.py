# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the integration tests: real programs from the build tree talking over loopback.

The build tree comes from ZTNA_BUILD_DIR (default: build/ in the source tree). Every process is started
with subprocess, waited for with a timeout and stopped by its PID (SIGTERM, then SIGKILL); a server must
exit 0 after SIGTERM, so a crash or a sanitizer report at exit fails the test that used it.

Run with Debian's pytest: /usr/bin/python3 -m pytest tests/integration
"""
import http.client
import json
import os
import pathlib
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid

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


# ---- the controller ------------------------------------------------------------------------------------

CONTROLLER_TRUST_DOMAIN = "ztna.test"
CONTROLLER_ID = "ctl-1"
READY_TIMEOUT = 30.0


def free_port():
    """A loopback TCP port nobody listens on right now (the kernel's choice; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateBus:
    """A dbus-daemon of our own (not the system bus) whose policy includes dbus/org.ztna.Controller1.conf,
    dbus/org.ztna.Connector1.conf and dbus/org.ztna.Tunneler1.conf, so the bus policy we ship is the one in
    force (the users ztna-connector and ztna-tunneler need not exist: dbus-daemon warns and skips their
    rules). It listens on an abstract socket, which any user of this network namespace may connect to
    whatever the modes of pytest's temporary directories (tests run clients as nobody); the bus policy and
    polkit decide, as on the system bus."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.address = f"unix:abstract=ztna-test-bus-{os.getpid()}-{uuid.uuid4().hex}"
        self.proc = None

    def start(self):
        conf = self.dir / "bus.conf"
        conf.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{self.address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
  <include ignore_missing="no">{SRC / "dbus" / "org.ztna.Controller1.conf"}</include>
  <include ignore_missing="no">{SRC / "dbus" / "org.ztna.Connector1.conf"}</include>
  <include ignore_missing="no">{SRC / "dbus" / "org.ztna.Tunneler1.conf"}</include>
</busconfig>
""")
        self.proc = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile",
                                      "--print-address=1"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line.startswith("unix:"), f"dbus-daemon did not start: {line!r}"
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc.stdout.close()


JOURNAL_WRAPPER = r"""set -e
mount -t tmpfs tmpfs /run/systemd
mount --bind "$JOURNAL_DIR" /run/log
env -u NOTIFY_SOCKET -u LISTEN_FDS -u LISTEN_PID /usr/lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
echo $! > "$JOURNAL_DIR/journald.pid"
i=0
while [ ! -S /run/systemd/journal/socket ]; do
        i=$((i + 1)); [ $i -lt 200 ] || { echo "journald did not start" >&2; exit 1; }
        sleep 0.05
done
exec "$@"
"""


class ControllerProcess:
    """`ztna-controller` on loopback with its own configuration, state and bus (see /tmp contract in the
    docstring of the test modules): conf → init() → start() → … → stop()."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.confdir = self.dir / "etc"
        self.state = self.dir / "state"
        self.db = self.state / "controller.db"
        self.key_file = self.state / "kek"
        self.log_path = self.dir / "controller.log"
        self.journal_dir = self.dir / "journal"
        self.trust_domain = CONTROLLER_TRUST_DOMAIN
        self.id = CONTROLLER_ID
        self.spiffe_id = f"spiffe://{self.trust_domain}/controller/{self.id}"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.conf = {
            "Controller": {"TrustDomain": self.trust_domain, "Id": self.id},
            "Network": {"ListenGRPC": self.address, "AdvertisedAddresses": self.address,
                        "ListenAdmin": f"127.0.0.1:{free_port()}"},
            "Certificates": {"MinimumCertificateLifetime": "10s"},
            "Storage": {"Database": str(self.db), "KeyFile": str(self.key_file)},
        }
        self.bus = PrivateBus(self.dir)
        self.proc = None
        self.notify = None
        self.binary = build_dir() / "src" / "controller" / "ztna-controller"
        self.ztnactl_binary = build_dir() / "src" / "ztnactl" / "ztnactl"
        if not os.access(self.binary, os.X_OK):
            pytest.fail(f"{self.binary} is missing: build it (ninja -C {build_dir()})")

    def write_conf(self):
        self.confdir.mkdir(parents=True, exist_ok=True)
        text = ""
        for section, items in self.conf.items():
            text += f"[{section}]\n" + "".join(f"{k}={v}\n" for k, v in items.items()) + "\n"
        (self.confdir / "controller.conf").write_text(text)

    def env(self):
        env = dict(os.environ)
        env["ZTNA_BUS_ADDRESS"] = self.bus.address
        env["ZTNA_LOG_LEVEL"] = "debug"
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY",
                  "TRUST_DOMAIN", "JOURNAL_STREAM"):
            env.pop(k, None)
        return env

    def init(self, *args, check=True):
        self.write_conf()
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        p = subprocess.run([str(self.binary), f"--confdir={self.confdir}", "init", *args], env=self.env(),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
        if check:
            assert p.returncode == 0, f"ztna-controller init failed ({p.returncode}): {p.stdout}{p.stderr}"
        return p

    def start(self, extra_env=None, wait_ready=True, journal=False):
        """journal=True: the daemon logs to a journald of its own (a private mount namespace where
        /run/systemd is a tmpfs and /run/log is self.journal_dir), readable afterwards with
        journalctl -D self.journal_dir."""
        if self.bus.proc is None:
            self.bus.start()
        self.write_conf()
        notify_path = self.dir / "notify.socket"
        if notify_path.exists():
            notify_path.unlink()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        env = self.env()
        env["NOTIFY_SOCKET"] = str(notify_path)
        env.update(extra_env or {})
        self.log = open(self.log_path, "a")
        argv = [str(self.binary), f"--confdir={self.confdir}", "run"]
        if journal:
            self.journal_dir.mkdir(exist_ok=True)
            os.makedirs("/run/log", exist_ok=True)
            env["ZTNA_LOG_TARGET"] = "journal"
            env["JOURNAL_DIR"] = str(self.journal_dir)
            # exec keeps the PID: the process we signal is the daemon itself.
            argv = ["unshare", "--mount", "--propagation=private", "sh", "-c", JOURNAL_WRAPPER, "sh", *argv]
        self.proc = subprocess.Popen(argv, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        if wait_ready:
            self.wait_notify("READY=1", READY_TIMEOUT)
        return self

    def wait_notify(self, what, timeout):
        """Waits for a sd_notify datagram holding the line `what`; returns all lines seen meanwhile."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None:
                pytest.fail(f"ztna-controller exited with {self.proc.returncode} before {what}: "
                            f"{self.log_text()[-3000:]}")
            if left <= 0:
                pytest.fail(f"ztna-controller did not send {what} within {timeout} s: {self.log_text()[-3000:]}")
            self.notify.settimeout(min(left, 0.5))
            try:
                data = self.notify.recv(4096).decode()
            except socket.timeout:
                continue
            seen += data.splitlines()
            if what in data.splitlines():
                return seen

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, expect_rc=0):
        """SIGTERM by PID; asserts the exit status (0: a clean drain, no sanitizer report)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()
            pytest.fail("ztna-controller did not exit within 15 s of SIGTERM")
        self._close()
        if expect_rc is not None:
            assert rc == expect_rc, f"ztna-controller exited with {rc}: {self.log_text()[-3000:]}"
        return rc

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)
        self._close()

    def stop_journald(self):
        """journald outlives the daemon in its namespace; stop it (by PID) so the journal is complete."""
        pid_file = self.journal_dir / "journald.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
            pid_file.unlink()

    def journal(self, *args, raw=False):
        """journalctl over the private journal, e.g. journal("-o", "json", "MESSAGE_ID=…"); raw: bytes."""
        out = subprocess.run(["journalctl", "-D", str(self.journal_dir / "journal"), "--no-pager", *args],
                             capture_output=True, timeout=CALL_TIMEOUT).stdout
        return out if raw else out.decode(errors="replace")

    def _close(self):
        if self.notify:
            self.notify.close()
            self.notify = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def ztnactl(self, *args, check=True, user=None, timeout=CALL_TIMEOUT):
        argv = [str(self.ztnactl_binary), *map(str, args)]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        p = subprocess.run(argv, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert p.returncode == 0, f"ztnactl {' '.join(map(str, args))} failed ({p.returncode}): " \
                                      f"{p.stdout}{p.stderr}"
        return p

    def busctl(self, *args, check=True):
        p = subprocess.run(["busctl", f"--address={self.bus.address}", *map(str, args)], env=self.env(),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
        if check:
            assert p.returncode == 0, f"busctl {' '.join(map(str, args))} failed: {p.stdout}{p.stderr}"
        return p

    def create_token(self, role, id=None, network=None, groups=(), ttl=None):
        args = ["token", "create", "--json", f"--role={role}"]
        if id:
            args.append(f"--id={id}")
        if network:
            args.append(f"--network={network}")
        for g in groups:
            args.append(f"--group={g}")
        if ttl:
            args.append(f"--ttl={ttl}")
        return json.loads(self.ztnactl(*args).stdout)["token"]

    def cleanup(self):
        self.kill9()
        self.stop_journald()
        self.bus.stop()


@pytest.fixture
def controller(tmp_path):
    c = ControllerProcess(tmp_path)
    yield c
    try:
        if c.proc is not None and c.proc.poll() is None:
            c.stop()
    finally:
        c.cleanup()


# ---- the agents -------------------------------------------------------------------------------------------

AGENT_ROLES = {
    "connector": ("org.ztna.Connector1", "/org/ztna/Connector1"),
    "tunneler": ("org.ztna.Tunneler1", "/org/ztna/Tunneler1"),
}
AGENT_ENROLL_TIMEOUT = 60.0
AGENT_STOP_TIMEOUT = 15.0  # the daemon's bounded drain (AGENT_DRAIN_TIMEOUT, 5 s) with room to spare
# What the daemons read from the environment (DESIGN.md §1) and systemd's variables: a test's agent sees
# only what the test gives it.
AGENT_ENV_DROP = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                  "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "JOURNAL_STREAM", "INVOCATION_ID",
                  "ENROLLMENT_TOKEN", "CONTROLLER_ADDR", "CONNECTOR_ID", "TUNNELER_ID", "TRUST_DOMAIN",
                  "CONTROLLER_CA_PATH", "CONNECTOR_ADDR", "ZTNA_NO_BUS", "ZTNA_CONFDIR")


SANITIZER_REPORT = re.compile(r"^.*(?:ERROR: \w+Sanitizer|runtime error:|WARNING: \w+Sanitizer).*$", re.M)


def assert_no_sanitizer_report(what, text):
    """ASan and LSan change the exit status, but only to 1, which a refusal also has; UBSan does not change it
    at all: a report in the output fails the test whatever the status."""
    m = SANITIZER_REPORT.search(text)
    assert not m, f"{what}: sanitizer report: {m.group(0)}\n{text[-3000:]}"


class AgentProcess:
    """`ztna-connector` or `ztna-tunneler` from the build tree with a configuration, state directory, KEK
    file, notify socket and log of its own, on a PrivateBus (normally the controller's, so that ztnactl
    reaches both): conf → enroll() → start() → … → stop(). The configuration makes it quick to observe:
    health on a free loopback port, reconnect backoff 200ms..2s, healthy after 1 s."""

    def __init__(self, directory, role, bus, id=None, name=None):
        assert role in AGENT_ROLES, role
        self.role = role
        self.id = id
        self.bus = bus
        self.bus_name, self.bus_path = AGENT_ROLES[role]
        self.dir = pathlib.Path(directory) / (name or f"{role}-{id or 'noid'}")
        self.dir.mkdir(parents=True)
        self.confdir = self.dir / "etc"
        self.state = self.dir / "state"
        self.state.mkdir()
        self.state.chmod(0o700)
        self.identity = self.state / "identity"
        self.kek = self.dir / "kek"
        self.log_path = self.dir / f"{role}.log"
        self.notify_path = self.dir / "notify.socket"
        self.health_port = free_port()
        self.conf = {
            "Agent": {},
            "Health": {"Listen": f"127.0.0.1:{self.health_port}"},
            "Reconnect": {"BackoffBase": "200ms", "BackoffCap": "2s", "HealthyAfter": "1s"},
        }
        if id:
            self.conf["Agent"]["Id"] = id
        if role == "connector":
            self.conf["Connector"] = {"DataPlaneListen": f"127.0.0.1:{free_port()}"}
        self.binary = build_dir() / "src" / role / f"ztna-{role}"
        self.proc = None
        self.notify = None
        self.notify_reader = None
        self.notifications = []  # every sd_notify line of the current run, in order
        self.log_level = "debug"  # ZTNA_LOG_LEVEL; "info" shows what a user sees by default
        self.log_start = 0       # offset of the current run's output in the log
        self.log = None
        if not os.access(self.binary, os.X_OK):
            pytest.fail(f"{self.binary} is missing: build it (ninja -C {build_dir()})")

    def spiffe_id(self, trust_domain=CONTROLLER_TRUST_DOMAIN, id=None):
        return f"spiffe://{trust_domain}/{self.role}/{id or self.id}"

    def write_conf(self):
        self.confdir.mkdir(parents=True, exist_ok=True)
        text = ""
        for section, items in self.conf.items():
            text += f"[{section}]\n" + "".join(f"{k}={v}\n" for k, v in items.items()) + "\n"
        (self.confdir / f"{self.role}.conf").write_text(text)

    def env(self, extra=None):
        env = dict(os.environ)
        for k in AGENT_ENV_DROP:
            env.pop(k, None)
        env["ZTNA_BUS_ADDRESS"] = self.bus.address
        env["ZTNA_LOG_LEVEL"] = self.log_level
        env["ZTNA_LOG_TARGET"] = "console"
        env.update(extra or {})
        return env

    def make_kek(self):
        """A KEK file (32 random bytes, 0600), as the oneshot unit would provide: `run` does not create one
        (only `enroll` does), so an agent that will be enrolled over D-Bus needs it first."""
        fd = os.open(self.kek, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))

    def common_args(self):
        return [f"--state-dir={self.state}", f"--kek-file={self.kek}", f"--confdir={self.confdir}"]

    def enroll(self, *args, input=None, env=None, timeout=AGENT_ENROLL_TIMEOUT):
        """`<binary> enroll` with this agent's directories and *args; input (text) is its stdin. Returns the
        CompletedProcess (text)."""
        self.write_conf()
        kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        p = subprocess.run([str(self.binary), "enroll", *self.common_args(), *map(str, args)],
                           env=self.env(env), capture_output=True, text=True, timeout=timeout, **kwargs)
        assert_no_sanitizer_report(f"ztna-{self.role} enroll", p.stderr)
        return p

    def enroll_ok(self, *args, **kwargs):
        p = self.enroll(*args, **kwargs)
        assert p.returncode == 0, f"ztna-{self.role} enroll failed ({p.returncode}): {p.stdout}{p.stderr}"
        return p

    def run_once(self, *args, env=None, timeout=CALL_TIMEOUT):
        """`<binary> run` expected to exit by itself (refusals at start-up); returns the CompletedProcess."""
        self.write_conf()
        p = subprocess.run([str(self.binary), "run", *self.common_args(), *map(str, args)],
                           env=self.env(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        assert_no_sanitizer_report(f"ztna-{self.role} run", p.stderr)
        return p

    def start(self, *args, env=None, wait_ready=True, ready_timeout=READY_TIMEOUT):
        if self.bus.proc is None:
            self.bus.start()
        self.write_conf()
        if self.notify_path.exists():
            self.notify_path.unlink()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.notifications = []
        self.notify_stop = threading.Event()
        self.notify_reader = threading.Thread(target=self._read_notify, args=(self.notify, self.notify_stop),
                                              daemon=True)
        self.notify_reader.start()
        e = self.env(env)
        e["NOTIFY_SOCKET"] = str(self.notify_path)
        self.log = open(self.log_path, "a")
        self.log_start = self.log.tell()
        self.proc = subprocess.Popen([str(self.binary), "run", *self.common_args(), *map(str, args)], env=e,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        if wait_ready:
            self.wait_notify("READY=1", ready_timeout)
        return self

    def _read_notify(self, sock, stop):
        """Reads sd_notify datagrams as systemd would, all the time: a full socket queue would block the
        daemon in sd_notify()."""
        while not stop.is_set():
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.notifications += data.decode(errors="replace").splitlines()

    def drain_notify(self):
        """Stops the reader and takes what is still queued (the daemon has exited: nothing more comes)."""
        if self.notify_reader:
            self.notify_stop.set()
            self.notify_reader.join(timeout=STOP_TIMEOUT)
            self.notify_reader = None
        if self.notify:
            self.notify.setblocking(False)
            while True:
                try:
                    data = self.notify.recv(4096)
                except (BlockingIOError, OSError):
                    break
                self.notifications += data.decode(errors="replace").splitlines()
        return self.notifications

    def wait_notify(self, what, timeout):
        """Waits for the sd_notify line `what` (seen before in this run counts); returns all lines so far."""
        deadline = time.monotonic() + timeout
        while what not in self.notifications:
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader takes what the daemon sent before exiting
                if what in self.notifications:
                    break
                pytest.fail(f"ztna-{self.role} exited with {self.proc.returncode} before {what}: "
                            f"{self.run_log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"ztna-{self.role} did not send {what} within {timeout} s (sent "
                            f"{self.notifications}): {self.run_log()[-3000:]}")
            time.sleep(0.02)
        return self.notifications

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_log(self):
        """The output of the current (or last) run only."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout, since=0):
        """Waits until the current run's output, from character offset since, matches the regular expression;
        returns the match (offsets relative to the run's output)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            text = self.run_log()
            m = rx.search(text, since)
            if m:
                return m
            if self.proc.poll() is not None:
                pytest.fail(f"ztna-{self.role} exited with {self.proc.returncode} before logging "
                            f"{pattern!r}: {text[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"ztna-{self.role} did not log {pattern!r} within {timeout} s: "
                            f"{text[since:][-3000:]}")
            time.sleep(0.1)

    def busctl(self, *args, check=True, user=None):
        argv = ["busctl", f"--address={self.bus.address}", *map(str, args)]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
        if check:
            assert p.returncode == 0, f"busctl {' '.join(map(str, args))} failed: {p.stdout}{p.stderr}"
        return p

    def prop(self, name):
        """A property's value over the bus (busctl get-property --json=short)."""
        p = self.busctl("get-property", "--json=short", self.bus_name, self.bus_path, self.bus_name, name)
        return json.loads(p.stdout)["data"]

    def props(self):
        """All properties of our interface as {name: (signature, value)}, through GetAll."""
        p = self.busctl("call", "--json=short", self.bus_name, self.bus_path, "org.freedesktop.DBus.Properties",
                        "GetAll", "s", self.bus_name)
        data = json.loads(p.stdout)["data"][0]
        return {k: (v["type"], v["data"]) for k, v in data.items()}

    def wait_state(self, state, timeout):
        """Polls the State property until it is state; returns the seconds it took."""
        start = time.monotonic()
        seen = []
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"ztna-{self.role} exited with {self.proc.returncode} while waiting for State "
                            f"{state!r} (seen {seen}): {self.run_log()[-3000:]}")
            p = self.busctl("get-property", "--json=short", self.bus_name, self.bus_path, self.bus_name, "State",
                            check=False)
            current = json.loads(p.stdout)["data"] if p.returncode == 0 else f"<{p.stderr.strip()}>"
            if not seen or seen[-1] != current:
                seen.append(current)
            if current == state:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                pytest.fail(f"ztna-{self.role} State is not {state!r} after {timeout} s (seen {seen}): "
                            f"{self.run_log()[-3000:]}")
            time.sleep(0.05)

    def health(self, path):
        """The HTTP status of GET path on the health listener."""
        c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, expect_rc=0):
        """SIGTERM by PID; asserts the exit status (0: a clean drain, no sanitizer report). Returns it, or
        None when the agent was not started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=AGENT_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill9()
                pytest.fail(f"ztna-{self.role} did not exit within {AGENT_STOP_TIMEOUT} s of SIGTERM: "
                            f"{self.run_log()[-3000:]}")
        rc = self.proc.returncode
        self._close()
        assert_no_sanitizer_report(f"ztna-{self.role} run", self.run_log())
        if expect_rc is not None:
            assert rc == expect_rc, f"ztna-{self.role} exited with {rc}: {self.run_log()[-3000:]}"
        return rc

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)
        self._close()

    def _close(self):
        self.drain_notify()
        if self.notify:
            self.notify.close()
            self.notify = None
        if self.log:
            self.log.close()
            self.log = None


@pytest.fixture
def agents(controller, tmp_path):
    """make(role, id=None, name=None) → an AgentProcess on the controller's bus. Agents still running at the
    end are stopped by PID and must exit 0."""
    made = []

    def make(role, id=None, name=None):
        a = AgentProcess(tmp_path / "agents", role, controller.bus, id=id, name=name)
        made.append(a)
        return a

    yield make
    try:
        for a in made:
            if a.running():
                a.stop()
    finally:
        for a in made:
            a.kill9()


def token_file(controller, path, role, id=None, network=None, groups=(), ttl=None):
    """`ztnactl token create --output path`: the token goes straight into a 0600 file, never through argv or
    our memory. Returns ztnactl's JSON (id, expires, expires_usec, file)."""
    args = ["token", "create", "--json", f"--role={role}", f"--output={path}"]
    if id:
        args.append(f"--id={id}")
    if network:
        args.append(f"--network={network}")
    args += [f"--group={g}" for g in groups]
    if ttl:
        args.append(f"--ttl={ttl}")
    return json.loads(controller.ztnactl(*args).stdout)


def db_query_ro(path, sql, *args):
    """A query through SQLite itself (WAL included), read-only, as any tool would."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def controller_agents(controller):
    """`ztnactl agents list --json` as {spiffe_id: agent}."""
    return {a["spiffe_id"]: a for a in json.loads(controller.ztnactl("agents", "list", "--json").stdout)}


def controller_tokens(controller):
    """`ztnactl token list --json` as {id: token}."""
    return {t["id"]: t for t in json.loads(controller.ztnactl("token", "list", "--json").stdout)}


POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"


class PolkitMock:
    """python-dbusmock's polkitd template on a PrivateBus: denies every action except those given to allow();
    logs every CheckAuthorization. (tests/integration/test_controller_bus.py has its own copy.)"""

    def __init__(self, bus, directory):
        self.bus = bus
        self.log = pathlib.Path(directory) / "polkit-mock.log"
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
        self.proc = subprocess.Popen(["/usr/bin/python3", "-m", "dbusmock", "--template", "polkitd",
                                      "-l", str(self.log)], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while subprocess.run(["busctl", f"--address={bus.address}", "status", POLKIT_NAME],
                             capture_output=True, timeout=CALL_TIMEOUT).returncode != 0:
            assert self.proc.poll() is None, "dbusmock exited"
            assert time.monotonic() < deadline, f"dbusmock did not claim {POLKIT_NAME}"
            time.sleep(0.05)

    def allow(self, *actions):
        subprocess.run(["busctl", f"--address={self.bus.address}", "call", POLKIT_NAME, POLKIT_PATH,
                        "org.freedesktop.DBus.Mock", "SetAllowed", "as", str(len(actions)), *actions],
                       check=True, capture_output=True, timeout=CALL_TIMEOUT)

    def checks(self):
        """The actions of the CheckAuthorization calls so far, in order."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            if " CheckAuthorization " in line:
                m = re.search(r' "([a-z0-9.-]+)" (\{.*\}) (\d+) ""$', line)
                assert m, line
                found.append(m.group(1))
        return found

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT)
