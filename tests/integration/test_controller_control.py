# SPDX-License-Identifier: Apache-2.0
"""The Control service as agents meet it: Control.Connect streams held by a stock gRPC client (grpc-js,
tests/interop/control-client.js) with certificates from a real enrollment (tests/interop/enroll-client.js).

Pinned: the configuration and trust bundle arrive first; ONLINE after heartbeats and OFFLINE after 30 s of
silence (also once the stream is gone); last_seen reaches the database within the flush interval; a revoked
agent is told why, loses its stream and cannot come back; connectors hear about revoked tunnelers; a
certificate from another CA never gets past TLS; a newer stream replaces an older one; forwarded heartbeats
count only from connectors and only for enrolled tunnelers; malformed hellos are refused."""
import base64
import hashlib
import json
import queue
import re
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import INTEROP

ENROLL_TIMEOUT = 60.0
LINE_TIMEOUT = 20.0
OFFLINE_AFTER = 30.0
FLUSH_INTERVAL = 5.0

GRPC_OK = 0
GRPC_INVALID_ARGUMENT = 3
GRPC_PERMISSION_DENIED = 7
GRPC_ABORTED = 10
GRPC_UNAVAILABLE = 14


class Agent:
    def __init__(self, directory, spiffe_id, agent_id):
        self.dir = directory
        self.spiffe_id = spiffe_id
        self.id = agent_id
        self.key = directory / "key.pem"
        self.chain = directory / "chain.pem"
        self.roots = directory / "roots.pem"


def enroll(node, controller, tmp_path, role, agent_id, **token_args):
    token = controller.create_token(role, id=agent_id, **token_args)
    d = tmp_path / f"agent-{agent_id}"
    d.mkdir()
    token_file = d / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "enroll", "--token-file", str(token_file),
                        "--id", agent_id, "--key-out", str(d / "key.pem"), "--cert-out", str(d / "chain.pem"),
                        "--bundle-out", str(d / "roots.pem")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=ENROLL_TIMEOUT)
    assert p.returncode == 0, f"enroll-client failed ({p.returncode}): {p.stdout}{p.stderr}"
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    spiffe_id = f"spiffe://{controller.trust_domain}/{role}/{agent_id}"
    assert result["spiffe_id"] == spiffe_id
    return Agent(d, spiffe_id, agent_id)


class ControlClient:
    """control-client.js in the background; its JSON lines are collected as they come."""

    def __init__(self, node, controller, agent, *args, ca=None, cert=None, key=None):
        self.argv = [node, str(INTEROP / "control-client.js"), "--address", controller.address,
                     "--ca", str(ca or agent.roots), "--cert", str(cert or agent.chain),
                     "--key", str(key or agent.key), *map(str, args)]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines = []
        self.queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(json.loads(line))
        self.queue.put(None)

    def wait_for(self, type_, timeout=LINE_TIMEOUT):
        """The next line of that type (earlier lines of other types are kept in self.lines)."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if line.get("type") == type_ and not line.get("_taken"):
                line["_taken"] = True
                return line
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {type_!r} line within {timeout} s: {self.lines}")
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.queue.put(None)
                pytest.fail(f"control-client ended without a {type_!r} line: {self.lines} "
                            f"{self.proc.stderr.read() if self.proc.poll() is not None else ''}")
            self.lines.append(line)
            if line.get("type") == type_:
                line["_taken"] = True
                return line

    def received(self):
        """The controller's messages seen so far (not our own 'sent' lines)."""
        return [l for l in self.lines if l.get("type") not in ("sent", "status")]

    def status(self, timeout=LINE_TIMEOUT):
        s = self.wait_for("status", timeout)
        assert self.proc.wait(timeout=timeout) == 0
        return s

    def assert_open(self):
        assert self.proc.poll() is None, f"control-client ended: {self.lines}"
        assert all(l.get("type") != "status" for l in self.lines), self.lines

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def clients():
    started = []

    def start(*args, **kwargs):
        c = ControlClient(*args, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


@pytest.fixture
def running(controller):
    controller.init()
    controller.start()
    return controller


def pem_sha256s(path):
    text = path.read_text()
    ders = [base64.b64decode("".join(block.split()))
            for block in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)]
    assert ders, f"no certificate in {path}"
    return sorted(hashlib.sha256(d).hexdigest() for d in ders)


def db_query(path, sql, *args):
    """Read-only, through SQLite itself (WAL included), as any tool would."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def listed(controller, spiffe_id):
    out = json.loads(controller.ztnactl("agents", "list", "--json").stdout)
    agents = out.get("agents", []) if isinstance(out, dict) else out
    for a in agents:
        if a.get("spiffe_id") == spiffe_id:
            return a
    pytest.fail(f"{spiffe_id} is not in `ztnactl agents list --json`: {out}")


def status_of(controller, spiffe_id):
    return str(listed(controller, spiffe_id)["status"]).lower()


def test_connect_receives_config_then_trust_bundle(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    c = clients(node, running, conn, "--version", "1.0.0")
    config = c.wait_for("config")
    assert config == {"type": "config", "role": "ROLE_CONNECTOR", "id": "conn-1", "spiffe_id": conn.spiffe_id,
                      "remote_network": "lab", "groups": [], "heartbeat_interval_seconds": 10,
                      "certificate_lifetime_seconds": 3600, "_taken": True}
    bundle = c.wait_for("trust_bundle")
    assert sorted(bundle["roots"]) == pem_sha256s(conn.roots)
    # Configuration first, the bundle second, nothing else; the half-close ends the stream cleanly.
    assert [l["type"] for l in c.received()] == ["config", "trust_bundle"]
    assert c.status()["code"] == GRPC_OK

    tun = enroll(node, running, tmp_path, "tunneler", "tun-1", groups=("eng", "ops"))
    c = clients(node, running, tun)
    config = c.wait_for("config")
    assert config["role"] == "ROLE_TUNNELER"
    assert config["groups"] == ["eng", "ops"]
    assert config["remote_network"] == ""
    assert config["certificate_lifetime_seconds"] == 1800
    assert c.status()["code"] == GRPC_OK


def test_online_after_heartbeats_and_offline_after_30s_of_silence(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    assert status_of(running, conn.spiffe_id) == "offline"  # enrolled, never heard from

    c = clients(node, running, conn, "--heartbeats", "2", "--interval-ms", "300")
    assert c.status()["code"] == GRPC_OK
    last = time.monotonic()
    # The stream is gone, the last heartbeat is not: ONLINE until 30 s have passed.
    assert status_of(running, conn.spiffe_id) == "online"
    time.sleep(OFFLINE_AFTER - 5 - (time.monotonic() - last))
    assert status_of(running, conn.spiffe_id) == "online"

    deadline = last + OFFLINE_AFTER + 10
    while status_of(running, conn.spiffe_id) != "offline":
        assert time.monotonic() < deadline, "still ONLINE 40 s after the last heartbeat"
        time.sleep(0.5)
    assert time.monotonic() - last >= OFFLINE_AFTER - 1
    # The periodic check logs the transition once.
    while running.log_text().count(f"Agent '{conn.spiffe_id}' is OFFLINE") == 0:
        assert time.monotonic() < deadline, running.log_text()[-3000:]
        time.sleep(0.5)
    time.sleep(6)
    assert running.log_text().count(f"Agent '{conn.spiffe_id}' is OFFLINE") == 1


def test_last_seen_reaches_the_database_within_the_flush_interval(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    before = time.time()
    c = clients(node, running, conn, "--version", "9.8.7", "--private-ip", "10.0.0.9", "--heartbeats", "1",
                "--interval-ms", "100")
    assert c.status()["code"] == GRPC_OK
    sent = time.monotonic()
    while True:
        rows = db_query(running.db, "SELECT last_seen, version, private_ip FROM agents WHERE spiffe_id = ?",
                        conn.spiffe_id)
        if rows and rows[0][0] is not None and rows[0][1] == "9.8.7":
            break
        assert time.monotonic() - sent < FLUSH_INTERVAL + 2, f"not flushed in time: {rows}"
        time.sleep(0.2)
    last_seen, version, private_ip = rows[0]
    assert private_ip == "10.0.0.9"
    # CLOCK_REALTIME µs of the controller's clock, not the agent's.
    assert before - 1 <= last_seen / 1e6 <= time.time() + 1


def test_revoked_agent_is_told_closed_and_refused(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    c = clients(node, running, conn, "--hold-ms", "-1")
    c.wait_for("trust_bundle")

    running.ztnactl("agents", "revoke", conn.spiffe_id)
    revocation = c.wait_for("revocation")
    assert revocation["spiffe_id"] == conn.spiffe_id
    assert revocation["reason"] != ""
    status = c.status()
    assert (status["code"], status["details"]) == (GRPC_PERMISSION_DENIED, "agent revoked")

    # Its certificate is still valid, the stream is not: refused before any configuration.
    again = clients(node, running, conn, "--hold-ms", "-1")
    status = again.status()
    assert (status["code"], status["details"]) == (GRPC_PERMISSION_DENIED, "agent revoked")
    assert again.received() == []
    assert status_of(running, conn.spiffe_id) == "revoked"
    refused = db_query(running.db, "SELECT count(*) FROM audit WHERE event = 'control-refused' AND subject = ?",
                       conn.spiffe_id)
    assert refused == [(1,)]


def test_certificate_for_a_replaced_key_is_refused(running, node, tmp_path, clients):
    """After a renewal with a new key, the old certificate (still valid) cannot take over the stream."""
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    old_chain = conn.dir / "old-chain.pem"
    old_chain.write_text(conn.chain.read_text())
    p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "renew", "--address", running.address,
                        "--ca", str(conn.roots), "--cert", str(conn.chain), "--key", str(conn.key),
                        "--new-key", str(conn.dir / "new-key.pem"), "--cert-out", str(conn.chain)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=ENROLL_TIMEOUT)
    assert json.loads(p.stdout.strip().splitlines()[-1])["ok"], p.stdout + p.stderr

    stale = clients(node, running, conn, "--hold-ms", "-1", cert=old_chain, key=conn.key)
    status = stale.status()
    assert (status["code"], status["details"]) == (GRPC_PERMISSION_DENIED, "certificate superseded by a renewal")
    assert stale.received() == []

    fresh = clients(node, running, conn, "--hold-ms", "-1", key=conn.dir / "new-key.pem")
    assert fresh.wait_for("config")["spiffe_id"] == conn.spiffe_id


def test_renew_now_reaches_the_agent(running, node, tmp_path, clients):
    """`ztnactl agents renew` pushes RenewNow down the agent's live stream, and only to that agent."""
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    tun = enroll(node, running, tmp_path, "tunneler", "tun-1")
    c = clients(node, running, conn, "--hold-ms", "-1")
    t = clients(node, running, tun, "--hold-ms", "-1")
    c.wait_for("trust_bundle")
    t.wait_for("trust_bundle")

    out = running.ztnactl("agents", "renew", "conn-1", "--json").stdout
    assert json.loads(out) == {"streams_told": 1}
    c.wait_for("renew_now")
    c.assert_open()
    assert not any(m.get("type") == "renew_now" for m in t.received())

    # An agent without a stream: nobody told, and the command says so.
    c.kill()
    time.sleep(0.5)
    p = running.ztnactl("agents", "renew", conn.spiffe_id)
    assert "no live control stream" in p.stdout
    p = running.ztnactl("agents", "renew", "nobody-here", check=False)
    assert p.returncode == 1 and "No agent 'nobody-here'" in p.stderr


def test_connectors_hear_of_a_revoked_tunneler(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    tun = enroll(node, running, tmp_path, "tunneler", "tun-1", groups=("eng",))
    c = clients(node, running, conn, "--hold-ms", "-1")
    t = clients(node, running, tun, "--hold-ms", "-1")
    c.wait_for("trust_bundle")
    t.wait_for("trust_bundle")

    running.ztnactl("agents", "revoke", tun.spiffe_id)
    assert t.wait_for("revocation")["spiffe_id"] == tun.spiffe_id
    assert t.status()["code"] == GRPC_PERMISSION_DENIED
    # The connector must close the tunneler's data-plane streams, and keeps its own control stream.
    assert c.wait_for("revocation")["spiffe_id"] == tun.spiffe_id
    time.sleep(0.5)
    c.assert_open()


def test_certificate_from_another_ca_is_refused_at_tls(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    d = tmp_path / "rogue"
    d.mkdir()

    def openssl(*args):
        subprocess.run(["/usr/bin/openssl", *args], check=True, capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "1", "-subj", "/CN=rogue CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectAltName=URI:spiffe://ztna.test")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", d / "key.pem", "-out", d / "leaf.csr", "-subj", "/")
    (d / "ext.cnf").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                               "extendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://ztna.test/connector/conn-1\n")
    openssl("x509", "-req", "-in", d / "leaf.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
            "-CAcreateserial", "-out", d / "leaf.pem", "-days", "1", "-extfile", d / "ext.cnf")
    (d / "chain.pem").write_text((d / "leaf.pem").read_text() + (d / "ca.pem").read_text())

    # Same SPIFFE ID as the enrolled connector, wrong issuer: the handshake fails, no gRPC status from us.
    rogue = clients(node, running, conn, "--hold-ms", "-1", cert=d / "chain.pem", key=d / "key.pem")
    status = rogue.status()
    assert status["code"] == GRPC_UNAVAILABLE
    assert rogue.received() == []
    assert "control-refused" not in [r[0] for r in db_query(running.db, "SELECT event FROM audit")]

    # The genuine one still gets in.
    c = clients(node, running, conn)
    c.wait_for("config")
    assert c.status()["code"] == GRPC_OK


def test_second_stream_replaces_the_first(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    first = clients(node, running, conn, "--hold-ms", "-1")
    first.wait_for("trust_bundle")
    second = clients(node, running, conn, "--hold-ms", "-1")
    second.wait_for("trust_bundle")

    status = first.status()
    assert (status["code"], status["details"]) == (GRPC_ABORTED, "replaced by a newer control stream")
    # The old stream's end must not unregister its successor: a push still reaches the second stream.
    time.sleep(1)
    second.assert_open()
    running.ztnactl("agents", "revoke", conn.spiffe_id)
    assert second.wait_for("revocation")["spiffe_id"] == conn.spiffe_id
    assert second.status()["code"] == GRPC_PERMISSION_DENIED


def test_forwarded_heartbeats(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    tun = enroll(node, running, tmp_path, "tunneler", "tun-1", groups=("eng",))
    ghost = "spiffe://ztna.test/tunneler/ghost"
    foreign = "spiffe://other.test/tunneler/tun-1"

    # Bad forwarded entries (unknown, other trust domain, a connector, not an ID) are dropped; the
    # connector's stream survives them and the good one is recorded with the connector as `via`.
    c = clients(node, running, conn, "--heartbeats", "2", "--interval-ms", "200", "--flow",
                "--forward", tun.spiffe_id, "--forward", ghost, "--forward", foreign,
                "--forward", conn.spiffe_id, "--forward", "not a spiffe id")
    assert c.status()["code"] == GRPC_OK
    sent = time.monotonic()
    while True:
        rows = db_query(running.db, "SELECT via, version, private_ip, last_seen FROM agents WHERE spiffe_id = ?",
                        tun.spiffe_id)
        if rows and rows[0][0] is not None:
            break
        assert time.monotonic() - sent < FLUSH_INTERVAL + 2, f"forwarded heartbeat not recorded: {rows}"
        time.sleep(0.2)
    assert rows[0][:3] == (conn.spiffe_id, "tunneler-test", "10.9.8.7")
    assert status_of(running, tun.spiffe_id) == "online"
    # The connector vouched for nobody else.
    assert db_query(running.db, "SELECT via FROM agents WHERE spiffe_id = ?", conn.spiffe_id) == [(None,)]
    assert "Dropping a heartbeat forwarded by" in running.log_text()

    # Only connectors forward heartbeats or report flows.
    t = clients(node, running, tun, "--heartbeats", "1", "--interval-ms", "100", "--hold-ms", "-1",
                "--forward", tun.spiffe_id)
    status = t.status()
    assert (status["code"], status["details"]) == (GRPC_PERMISSION_DENIED, "only connectors forward heartbeats")
    t = clients(node, running, tun, "--heartbeats", "1", "--interval-ms", "100", "--hold-ms", "-1", "--flow")
    status = t.status()
    assert (status["code"], status["details"]) == (GRPC_PERMISSION_DENIED, "only connectors report flows")


MALFORMED_HELLOS = {
    "version too long": ("--version", "v" * 1025),
    "control character": ("--private-ip", "10.0.0.1\x07"),
    "label too long": ("--label", "k=" + "v" * 1025),
    "too many labels": tuple(x for i in range(33) for x in ("--label", f"k{i}=v")),
}


def test_malformed_hello_is_refused(running, node, tmp_path, clients):
    conn = enroll(node, running, tmp_path, "connector", "conn-1", network="lab")
    before = db_query(running.db, "SELECT version, private_ip, last_seen FROM agents WHERE spiffe_id = ?",
                      conn.spiffe_id)
    for case, args in MALFORMED_HELLOS.items():
        c = clients(node, running, conn, "--hold-ms", "-1", *args)
        status = c.status()
        assert status["code"] == GRPC_INVALID_ARGUMENT, (case, status)

    # Nothing from the refused hellos was recorded, not even that the agent was there.
    time.sleep(FLUSH_INTERVAL + 1)
    after = db_query(running.db, "SELECT version, private_ip, last_seen FROM agents WHERE spiffe_id = ?",
                     conn.spiffe_id)
    assert after == before
    assert after[0][2] is None
    assert status_of(running, conn.spiffe_id) == "offline"
