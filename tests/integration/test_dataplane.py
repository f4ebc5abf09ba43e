# SPDX-License-Identifier: Apache-2.0
"""The data plane end to end, in network namespaces (tools/netns_topology.py): a controller, a lab with a
connector and private services, a laptop with a tunneler that has no route to the lab. Everything the
tests send goes to loopback or to addresses inside those namespaces.

Policy (group "laptops"): web = 192.168.100.10 port 80 (alias web.lab.example); ssh = ssh.lab.example port
22; apps = *.apps.lab.example port 80; lan = 192.168.100.0/24 port 80; office = 10.50.0.0/16 in network
"office", which has no connector. Nothing grants 192.168.100.10:8080 or anything outside these.
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import SRC, assert_no_sanitizer_report, build_dir, db_query_ro

sys.path.insert(0, str(SRC / "tools"))
import netns_topology as nt  # noqa: E402

CONTROLLER = f"{nt.ADDRESSES['ctl']}:8443"
CONNECTOR_DP = f"{nt.ADDRESSES['lab']}:8447"
CONNECTOR2_DP = f"{nt.ADDRESSES['lab']}:8448"
SOCKS = ("127.0.0.1", 1080)
HTTP_PROXY = ("127.0.0.1", 3128)
FORWARD_SSH = ("127.0.0.1", 2222)
TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def binary(name):
    sub = {"ztna-controller": "controller", "ztna-connector": "connector", "ztna-tunneler": "tunneler",
           "ztnactl": "ztnactl"}[name]
    return build_dir() / "src" / sub / name


class World:
    """The namespaces, a private bus, the controller, the policy and the agents."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.topo = nt.Topology(f"zt{os.getpid() % 100000}"[:7])
        self.bus_sock = self.dir / "bus.sock"
        self.bus_address = f"unix:path={self.bus_sock}"
        self.procs = {}
        self.logs = {}
        self.argvs = {}

    def env(self, **extra):
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "CREDENTIALS_DIRECTORY", "ENROLLMENT_TOKEN",
                  "JOURNAL_STREAM"):
            e.pop(k, None)
        e["ZTNA_BUS_ADDRESS"] = self.bus_address
        e["ZTNA_LOG_TARGET"] = "console"
        e["ZTNA_LOG_LEVEL"] = "debug"
        e.update(extra)
        return e

    def ztnactl(self, *args, check=True):
        r = subprocess.run([binary("ztnactl"), "--no-ask-password", *args], env=self.env(), text=True,
                           capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, f"ztnactl {' '.join(args)}: {r.stderr}"
        return r

    def spawn(self, name, ns, argv, env=None):
        log = self.dir / f"{name}.log"
        self.logs[name] = log
        out = open(log, "a")
        p = self.topo.popen(ns, argv, env=env or self.env(), stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def stop(self, name, expect_rc=0):
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                pytest.fail(f"{name} did not stop within 15 s of SIGTERM")
        self.topo.procs.remove(p)
        text = self.logs[name].read_text(errors="replace")
        assert_no_sanitizer_report(name, text)
        if expect_rc is not None:
            assert p.returncode == expect_rc, f"{name} exited with {p.returncode}: {text[-3000:]}"

    def kill(self, name):
        p = self.procs.pop(name)
        p.kill()
        p.wait(timeout=10)
        self.topo.procs.remove(p)

    def log(self, name):
        return self.logs[name].read_text(errors="replace")

    def wait(self, what, predicate, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}; logs: " +
                    " | ".join(f"{n}: {self.log(n)[-1500:]}" for n in self.logs))

    def healthy(self, role):
        return subprocess.run([binary("ztnactl"), "health", role], env=self.env(), capture_output=True,
                              timeout=TIMEOUT).returncode == 0

    # ---- set-up ----
    def start(self):
        self.topo.create()
        self.topo.start_lab_services()
        (self.dir / "bus.conf").write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>{self.bus_address}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="root"/><allow own="*"/><allow send_destination="*"/>
<allow receive_type="method_call"/><allow receive_type="signal"/><allow receive_type="method_return"/>
<allow receive_type="error"/></policy></busconfig>
""")
        bus = subprocess.Popen(["dbus-daemon", f"--config-file={self.dir / 'bus.conf'}", "--nofork",
                                "--nopidfile"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               start_new_session=True)
        self.topo.procs.append(bus)
        self.wait("the bus", self.bus_sock.exists)

        ctl = self.dir / "controller"
        ctl.mkdir(mode=0o700)
        (ctl / "controller.conf").write_text(
            f"[Controller]\nTrustDomain=dp.test\nId=ctl-1\n"
            f"[Network]\nListenGRPC={CONTROLLER}\nAdvertisedAddresses={CONTROLLER}\n"
            f"ListenAdmin={nt.ADDRESSES['ctl']}:8444\n"
            f"[Storage]\nDatabase={ctl / 'controller.db'}\nKeyFile={ctl / 'kek'}\n")
        r = self.topo.exec("ctl", [binary("ztna-controller"), f"--confdir={ctl}", "init"], env=self.env())
        assert r.returncode == 0, r.stderr
        self.spawn("controller", "ctl", [binary("ztna-controller"), f"--confdir={ctl}", "run"])
        self.wait("the controller", lambda: self.ztnactl("ca", "status", check=False).returncode == 0)

        self.ztnactl("network", "create", "lab")
        self.ztnactl("network", "create", "office")
        for args in (("web", "--address", nt.LAB_WEB, "--ports", "80", "--network", "lab",
                      "--alias", "web.lab.example"),
                     ("ssh", "--address", "ssh.lab.example", "--ports", "22", "--network", "lab"),
                     ("apps", "--address", "*.apps.lab.example", "--ports", "80", "--network", "lab"),
                     ("lan", "--address", "192.168.100.0/24", "--ports", "80", "--network", "lab"),
                     ("office", "--address", "10.50.0.0/16", "--ports", "any", "--network", "office"),
                     ("sink", "--address", "sink.lab.example", "--ports", "9", "--network", "lab"),
                     ("closed", "--address", "closed.lab.example", "--ports", "81", "--network", "lab"),
                     ("slow", "--address", "slow.lab.example", "--ports", "7", "--network", "lab")):
            self.ztnactl("resource", "create", *args)
        self.ztnactl("group", "create", "laptops")
        for res in ("web", "ssh", "apps", "lan", "office", "sink", "closed", "slow"):
            self.ztnactl("policy", "create", "laptops", res)

        self.connector("connector", "lab-1", CONNECTOR_DP, bus=True)
        self.tunneler("tunneler", "laptop-1", groups=("laptops",), bus=True,
                      extra=[("SocksListen", f"{SOCKS[0]}:{SOCKS[1]}"),
                             ("HttpProxyListen", f"{HTTP_PROXY[0]}:{HTTP_PROXY[1]}"),
                             ("Forward", f"{FORWARD_SSH[0]}:{FORWARD_SSH[1]}=ssh.lab.example:22")])
        self.wait("both agents online", lambda: self.healthy("connector") and self.healthy("tunneler"))
        self.wait("the tunneler's policy", lambda: "Policy snapshot" in self.log("tunneler"))
        return self

    def token(self, role, id, network=None, groups=()):
        path = self.dir / f"{id}.token"
        args = ["token", "create", "--role", role, "--id", id, "--output", str(path)]
        if network:
            args += ["--network", network]
        for g in groups:
            args += ["--group", g]
        self.ztnactl(*args)
        return path

    def agent(self, role, name, id, ns, sections, bus, token):
        d = self.dir / name
        (d / "etc").mkdir(parents=True)
        text = "".join(f"[{s}]\n" + "".join(f"{k}={v}\n" for k, v in items) for s, items in sections)
        (d / "etc" / f"{role}.conf").write_text(text)
        argv = [binary(f"ztna-{role}"), f"--confdir={d / 'etc'}", f"--state-dir={d / 'state'}",
                f"--kek-file={d / 'kek'}"]
        env = self.env() if bus else self.env(ZTNA_NO_BUS="1")
        r = self.topo.exec(ns, argv + ["enroll", f"--token-file={token}"], env=env)
        assert r.returncode == 0, f"{name} enrollment: {r.stderr}"
        self.argvs[name] = (ns, argv + ["run"], env)
        self.spawn(name, ns, argv + ["run"], env=env)
        return argv, env

    def respawn(self, name):
        ns, argv, env = self.argvs[name]
        self.spawn(name, ns, argv, env=env)

    def connector(self, name, id, listen, bus):
        health = 8445 if bus else 8449
        return self.agent("connector", name, id, "lab", [
            ("Connector", [("DataPlaneListen", listen), ("DataPlaneAddress", listen), ("Resolvers", nt.LAB_DNS),
                           ("ConnectTimeout", "2s")]),
            ("Health", [("Listen", f"127.0.0.1:{health}")]),
            ("Reconnect", [("BackoffBase", "200ms"), ("BackoffCap", "2s")])],
            bus, self.token("connector", id, network="lab"))

    def tunneler(self, name, id, groups, bus, extra=()):
        return self.agent("tunneler", name, id, "laptop", [
            ("Tunneler", list(extra)),
            ("Health", [("Listen", "127.0.0.1:8446" if bus else "127.0.0.1:8450")]),
            ("Reconnect", [("BackoffBase", "200ms"), ("BackoffCap", "2s")])],
            bus, self.token("tunneler", id, groups=groups))

    def destroy(self):
        for name in list(self.procs):
            try:
                self.stop(name, expect_rc=None)
            except Exception:
                pass
        self.topo.destroy()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for b in ("ztna-controller", "ztna-connector", "ztna-tunneler", "ztnactl"):
        if not os.access(binary(b), os.X_OK):
            pytest.fail(f"{binary(b)} is missing: build it first")
    w = World(tmp_path_factory.mktemp("dataplane"))
    try:
        yield w.start()
    finally:
        w.destroy()


# ---- clients, run inside the laptop namespace ----

CLIENT = r"""
import socket, struct, sys, json
mode, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = sys.argv[4], int(sys.argv[5])
payload = sys.argv[6].encode().decode("unicode_escape").encode("latin-1")
s = socket.create_connection((a, int(b)), 15)
s.settimeout(15)
out = {}
def recv_exact(n):
    d = b""
    while len(d) < n:
        c = s.recv(n - len(d))
        if not c: raise EOFError(d)
        d += c
    return d
if mode == "socks":
    s.sendall(b"\x05\x01\x00")
    assert recv_exact(2) == b"\x05\x00"
    try:
        ip = socket.inet_pton(socket.AF_INET, host); req = b"\x05\x01\x00\x01" + ip
    except OSError:
        req = b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode()
    s.sendall(req + struct.pack("!H", port))
    rep = recv_exact(4)
    out["reply"] = rep[1]
    if rep[3] == 1: recv_exact(6)
    elif rep[3] == 4: recv_exact(18)
    if rep[1] != 0:
        print(json.dumps(out)); sys.exit(0)
elif mode == "http":
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(1)
        if not c: break
        head += c
    out["status"] = int(head.split()[1]) if head else 0
    if out["status"] != 200:
        print(json.dumps(out)); sys.exit(0)
data = b""
if payload:
    s.sendall(payload)
try:
    while len(data) < 65536:
        c = s.recv(65536)
        if not c: break
        data += c
        if mode == "forward" and payload and payload in data: break
        if mode != "forward" and b"\r\n\r\n" in data and b"Content-Length" in data and data.endswith(b"\n"): break
except socket.timeout:
    pass
out["data"] = data.decode("latin-1")
print(json.dumps(out))
"""

GET = "GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"


def client(world, mode, host="", port=0, payload=""):
    proxy = {"socks": SOCKS, "http": HTTP_PROXY, "forward": FORWARD_SSH}[mode]
    r = world.topo.exec("laptop", [sys.executable, "-c", CLIENT, mode, proxy[0], str(proxy[1]), host or "-",
                                   str(port or 0), payload], timeout=40)
    assert r.returncode == 0, f"client failed: {r.stderr}"
    return json.loads(r.stdout)


# ---- tests ----

def test_laptop_has_no_route_to_the_lab(world):
    r = world.topo.exec("laptop", ["curl", "-sS", "-m", "3", f"http://{nt.LAB_WEB}/"])
    assert r.returncode != 0


@pytest.mark.parametrize("host,port,expect", [
    (nt.LAB_WEB, 80, "hello from the lab"),             # an IP resource
    ("web.lab.example", 80, "hello from the lab"),      # its alias, resolved by the connector
    (nt.LAB_OTHER, 80, "hello from the other host"),    # a CIDR member
    ("x.apps.lab.example", 80, "hello from the lab"),   # a wildcard
])
def test_socks_reaches_granted_resources(world, host, port, expect):
    out = client(world, "socks", host, port, GET)
    assert out["reply"] == 0, out
    assert expect in out["data"]


def test_curl_through_socks_and_http_proxy(world):
    r = world.topo.exec("laptop", ["curl", "-sS", "-m", "15", "--socks5-hostname", f"{SOCKS[0]}:{SOCKS[1]}",
                                   "http://web.lab.example/"])
    assert r.returncode == 0 and "hello from the lab" in r.stdout, r.stderr
    r = world.topo.exec("laptop", ["curl", "-sS", "-m", "15", "-p", "-x", f"http://{HTTP_PROXY[0]}:{HTTP_PROXY[1]}",
                                   f"http://{nt.LAB_WEB}/"])
    assert r.returncode == 0 and "hello from the lab" in r.stdout, r.stderr


def test_forward_reaches_ssh_by_name(world):
    out = client(world, "forward", payload="ping\\n")
    assert out["data"].startswith(nt.SSH_BANNER.decode()), out
    assert "ping" in out["data"]


@pytest.mark.parametrize("host,port,socks,http", [
    (nt.LAB_WEB, 8080, 0x02, 403),          # another port of a granted host: the exact IP decides
    ("10.99.0.1", 80, 0x02, 403),           # a host no resource covers
    ("10.50.1.1", 80, 0x04, 502),           # a network without a connector
    ("nothing.lab.example", 80, 0x02, 403),  # a name no resource covers
])
def test_refusals_and_their_codes(world, host, port, socks, http):
    assert client(world, "socks", host, port)["reply"] == socks
    assert client(world, "http", host, port)["status"] == http


@pytest.mark.parametrize("host,port,socks,http", [
    ("closed.lab.example", 81, 0x04, 502),   # granted, but the resource refuses the connection
    ("slow.lab.example", 7, 0x06, 504),      # granted, but the handshake never completes (ConnectTimeout=2s)
    ("gone.lab.example", 80, 0x02, 403),     # no resource covers the name at all
])
def test_unreachable_and_slow_resources(world, host, port, socks, http):
    assert client(world, "socks", host, port)["reply"] == socks
    assert client(world, "http", host, port)["status"] == http
    # The tunneler and its sessions are fine: the next request works.
    assert client(world, "socks", nt.LAB_WEB, 80, GET)["reply"] == 0
    assert world.healthy("tunneler")


def test_flows_are_audited(world):
    client(world, "socks", nt.LAB_OTHER, 80, GET)
    # The connector logs the flow's start and end with the tunneler from its certificate, the resource that
    # decided, the target and the bytes; the controller stores what the connector reports.
    world.wait("the flow's end at the connector", lambda: "ZTNA_TARGET=192.168.100.20:80 ZTNA_RESULT=granted"
               in world.log("connector"))
    log = world.log("connector")
    line = [l for l in log.splitlines() if "ZTNA_TARGET=192.168.100.20:80" in l and "ZTNA_BYTES_UP" in l][-1]
    assert "ZTNA_TUNNELER=spiffe://dp.test/tunneler/laptop-1" in line
    assert "ZTNA_RESOURCE=lan" in line
    assert "ZTNA_BYTES_DOWN=0" not in line
    flow_id = line.split("ZTNA_FLOW_ID=")[1].split()[0]

    # The controller stored both ends of the flow, as the connector reported them.
    def stored():
        return db_query_ro(world.dir / "controller" / "controller.db",
                           "SELECT actor, subject, detail FROM audit WHERE event = 'flow'")
    world.wait("the flow at the controller", lambda: sum(flow_id in r[2] for r in stored()) == 2)
    rows = [r for r in stored() if flow_id in r[2]]
    assert {json.loads(r[2])["kind"] for r in rows} == {"start", "end"}
    end = next(json.loads(r[2]) for r in rows if json.loads(r[2])["kind"] == "end")
    assert rows[0][0] == "spiffe://dp.test/connector/lab-1"
    assert rows[0][1] == "spiffe://dp.test/tunneler/laptop-1"
    assert end["resource"] == "lan" and end["target"] == "192.168.100.20:80" and end["result"] == "granted"
    assert int(end["bytes_down"]) > 0

    # A request no held resource covers never leaves the laptop: the tunneler refuses it itself.
    assert client(world, "socks", nt.LAB_WEB, 8080)["reply"] == 0x02
    assert "192.168.100.10:8080" not in world.log("connector")


def test_controller_shows_which_connector_a_tunneler_uses(world):
    """The tunneler's heartbeats ride its session to the connector, which forwards them."""
    client(world, "socks", nt.LAB_WEB, 80, GET)

    def via():
        agents = json.loads(world.ztnactl("agents", "list", "--json").stdout)
        return next((a.get("via") for a in agents if a["spiffe_id"].endswith("/tunneler/laptop-1")), None)
    world.wait("the tunneler's connector at the controller", lambda: via() == "spiffe://dp.test/connector/lab-1")
    table = world.ztnactl("agents", "list").stdout
    line = next(l for l in table.splitlines() if "/tunneler/laptop-1" in l)
    assert " lab-1 " in f" {line} " and "online" in line


def test_ungranted_tunneler_is_refused(world):
    world.tunneler("stranger", "stranger-1", groups=(), bus=False,
                   extra=[("SocksListen", "127.0.0.1:1081")])
    world.wait("the stranger's policy", lambda: "Policy snapshot" in world.log("stranger"))
    r = world.topo.exec("laptop", [sys.executable, "-c", CLIENT, "socks", "127.0.0.1", "1081", nt.LAB_WEB, "80", ""],
                        timeout=40)
    assert json.loads(r.stdout)["reply"] == 0x02
    world.stop("stranger")


def test_deleting_a_policy_cuts_live_streams(world):
    # A live SSH-like stream through the forward; then the grant goes away.
    try:
        assert_cut_within_a_second(world, ["forward", "2222"],
                                   lambda: world.ztnactl("policy", "delete", "laptops", "ssh"))
    finally:
        world.ztnactl("policy", "create", "laptops", "ssh")


BURST_SCRIPT = r"""
import socket, struct, sys, threading
N, SIZE = int(sys.argv[1]), int(sys.argv[2])
chunk = b"z" * (1 << 16)
results = []
def one():
    s = socket.create_connection(("127.0.0.1", 1080), 30)
    s.settimeout(120)
    s.sendall(b"\x05\x01\x00"); assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x03\x10sink.lab.example" + struct.pack("!H", 9))
    rep = s.recv(10); assert rep[1] == 0, rep
    left = SIZE
    while left > 0:
        n = min(left, len(chunk)); s.sendall(chunk[:n]); left -= n
    s.shutdown(socket.SHUT_WR)
    results.append(int(s.makefile().readline()))
    s.close()
errors = []
def guarded():
    try:
        one()
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=guarded) for _ in range(N)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    sys.exit(f"{len(errors)} streams failed: {errors[:3]}")
print(sum(results), len(results))
"""


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.skipif(os.environ.get("ZTNA_SANITIZED") == "1",
                    reason="RSS under AddressSanitizer measures its quarantine, not the daemons")
def test_memory_returns_after_a_burst(world):
    """1 GiB through 100 parallel streams; afterwards both daemons' RSS is within 10 % of before."""
    pids = {n: world.procs[n].pid for n in ("connector", "tunneler")}
    warm = world.topo.exec("laptop", [sys.executable, "-c", BURST_SCRIPT, "10", str(1 << 20)], timeout=120)
    assert warm.returncode == 0, warm.stderr
    time.sleep(1)
    before = {n: rss_kib(p) for n, p in pids.items()}
    size = (1 << 30) // 100
    r = world.topo.exec("laptop", [sys.executable, "-c", BURST_SCRIPT, "100", str(size)], timeout=600)
    assert r.returncode == 0, r.stderr
    total, streams = map(int, r.stdout.split())
    assert (total, streams) == (size * 100, 100)
    # The streams are closed; give the daemons a moment to see every end.
    deadline = time.monotonic() + 10
    while True:
        after = {n: rss_kib(p) for n, p in pids.items()}
        if all(after[n] <= before[n] * 1.10 for n in pids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for n in pids:
        assert after[n] <= before[n] * 1.10, f"{n}: RSS {before[n]} KiB before, {after[n]} KiB after the burst"


STREAM_SCRIPT = r"""
import socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), 10)
s.settimeout(10)
if mode == "socks":
    s.sendall(b"\x05\x01\x00"); assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x03" + bytes([15]) + b"ssh.lab.example" + (22).to_bytes(2, "big"))
    rep = s.recv(10); assert rep[1] == 0, rep
assert s.recv(100).startswith(b"SSH-2.0")
print("OPEN", flush=True)
sys.stdin.readline()
t = time.monotonic()
s.settimeout(5)
try:
    while s.recv(100):
        pass
    print("CLOSED", round(time.monotonic() - t, 3), flush=True)
except ConnectionResetError:
    print("CLOSED", round(time.monotonic() - t, 3), flush=True)
except socket.timeout:
    print("TIMEOUT", 5, flush=True)
"""


def assert_cut_within_a_second(world, args, action):
    """Opens a live SSH-like stream from the laptop (args: "forward PORT" or "socks PORT"), runs action, and
    requires the stream to be cut less than a second after action returned."""
    p = world.topo.popen("laptop", [sys.executable, "-c", STREAM_SCRIPT, *args], stdout=subprocess.PIPE,
                         stdin=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "OPEN"
        action()
        p.stdin.write("go\n")
        p.stdin.flush()
        verdict, seconds = p.stdout.readline().split()
        assert verdict == "CLOSED", "the stream outlived its grant"
        assert float(seconds) < 1.0
    finally:
        p.kill()
        p.wait()
        world.topo.procs.remove(p)


def test_revoking_a_tunneler_cuts_its_live_stream(world):
    world.tunneler("doomed", "doomed-1", groups=("laptops",), bus=False, extra=[("SocksListen", "127.0.0.1:1082")])
    world.wait("the doomed tunneler's policy", lambda: "Policy snapshot" in world.log("doomed"))
    assert_cut_within_a_second(world, ["socks", "1082"],
                               lambda: world.ztnactl("agents", "revoke", "doomed-1", "--reason", "lost laptop"))
    r = world.topo.exec("laptop", [sys.executable, "-c", CLIENT, "socks", "127.0.0.1", "1082", nt.LAB_WEB, "80", ""],
                        timeout=40)
    assert r.returncode != 0 or json.loads(r.stdout).get("reply") != 0
    world.stop("doomed")


def spread_until(world, predicate, what, attempts=40):
    """Sequential requests land on a connector chosen at random among the least busy: keep asking until
    predicate() holds (the chance that 40 requests all avoid one of two connectors is 2^-40)."""
    for _ in range(attempts):
        assert client(world, "socks", nt.LAB_WEB, 80, GET)["reply"] == 0
        if predicate():
            return
    pytest.fail(f"{attempts} requests and still not {what}")


def test_two_connectors_fail_over(world):
    world.connector("connector2", "lab-2", CONNECTOR2_DP, bus=False)
    world.wait("the second connector announced", lambda: "Connected to controller" in world.log("connector2"))
    world.wait("the tunneler told of the second connector",
               lambda: world.log("tunneler").count("Policy delta") > 0)
    # Load spreads: both connectors carry flows.
    spread_until(world, lambda: "192.168.100.10:80" in world.log("connector2"), "using the second connector")
    world.kill("connector")
    for _ in range(4):
        assert client(world, "socks", nt.LAB_WEB, 80, GET)["reply"] == 0
    # Back again: it takes new connections once more.
    world.respawn("connector")
    world.wait("the first connector back", lambda: world.healthy("connector"))
    before = world.log("connector").count("192.168.100.10:80")
    spread_until(world, lambda: world.log("connector").count("192.168.100.10:80") > before,
                 "using the restarted connector")
    world.stop("connector2")
