# SPDX-License-Identifier: Apache-2.0
"""The controller daemon as an administrator meets it: init, start, READY/STATUS/STOPPING, socket activation
by name, a SIGTERM drain, a kill -9 in the middle of enrollments, and no secret in the database or the log.

Enrollments are made by grpc-js (tests/interop/enroll-client.js), a stock gRPC peer."""
import base64
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import time

import pytest

from conftest import CALL_TIMEOUT, INTEROP, READY_TIMEOUT, free_port

ENROLL_TIMEOUT = 60.0


def enroll(node, controller, tmp_path, token, agent_id, check_ok=True):
    d = tmp_path / f"agent-{agent_id}"
    d.mkdir(exist_ok=True)
    token_file = d / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "enroll", "--token-file", str(token_file),
                        "--id", agent_id, "--key-out", str(d / "key.pem"), "--cert-out", str(d / "chain.pem"),
                        "--bundle-out", str(d / "roots.pem")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=ENROLL_TIMEOUT)
    assert p.returncode == 0, f"enroll-client failed ({p.returncode}): {p.stdout}{p.stderr}"
    result = json.loads(p.stdout.strip().splitlines()[-1])
    if check_ok:
        assert result["ok"], result
    return result, d


def db_query(path, sql, *args):
    """Read-only, through SQLite itself (WAL included), as any tool would."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_init_creates_the_ca_once(controller):
    p = controller.init()
    pin = [l for l in p.stdout.splitlines() if l.startswith("Root CA SPKI pin:")]
    assert len(pin) == 1 and len(pin[0].split()[-1]) == 64, p.stdout
    assert "Created the key-encryption key file" in p.stderr
    assert controller.key_file.stat().st_mode & 0o777 == 0o600
    assert controller.db.stat().st_mode & 0o777 == 0o600
    assert os.path.getsize(controller.key_file) == 32

    rows = db_query(controller.db, "SELECT kind, state FROM cas ORDER BY kind")
    assert rows == [("issuing", "active"), ("root", "active")]
    assert db_query(controller.db, "SELECT value FROM meta WHERE key = 'trust_domain'") == [("ztna.test",)]

    again = controller.init(check=False)
    assert again.returncode == 1
    assert "already holds a CA" in again.stderr
    assert db_query(controller.db, "SELECT count(*) FROM cas") == [(2,)]


def test_init_if_needed_is_idempotent(controller):
    """`init --if-needed` (the unit's ExecStartPre=) creates the CA on the first start and does nothing,
    quietly and successfully, on every later one; it still refuses what plain init refuses."""
    p = controller.init("--if-needed")
    assert "Root CA SPKI pin:" in p.stdout
    key = controller.key_file.read_bytes()
    again = controller.init("--if-needed")
    assert again.stdout == "", again.stdout + again.stderr
    assert controller.key_file.read_bytes() == key
    assert db_query(controller.db, "SELECT count(*) FROM cas") == [(2,)]

    # A database that is not one is an error, not "nothing to do".
    controller.db.write_bytes(b"not a database" * 100)
    bad = controller.init("--if-needed", check=False)
    assert bad.returncode == 1 and str(controller.db) in bad.stderr, bad.stderr

    p = subprocess.run([str(controller.binary), "--if-needed", "run"], env=controller.env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    assert p.returncode == 2 and "option of 'init'" in p.stderr, p.stderr


def test_run_before_init_says_what_to_do(controller):
    controller.write_conf()
    controller.state.mkdir(parents=True)
    controller.start(wait_ready=False)
    rc = controller.proc.wait(timeout=READY_TIMEOUT)
    assert rc == 1
    assert "run 'ztna-controller init' first" in controller.log_text()


def test_wrong_key_encryption_key_is_refused(controller):
    controller.init()
    controller.key_file.write_bytes(os.urandom(32))
    controller.start(wait_ready=False)
    rc = controller.proc.wait(timeout=READY_TIMEOUT)
    assert rc == 1
    log = controller.log_text()
    assert "Failed to load the CA" in log, log
    assert db_query(controller.db, "SELECT count(*) FROM cas WHERE state = 'active'") == [(2,)]


def test_unsafe_key_file_is_refused(controller):
    controller.init()
    controller.key_file.chmod(0o644)
    controller.start(wait_ready=False)
    assert controller.proc.wait(timeout=READY_TIMEOUT) == 1
    assert "accessible to group or others" in controller.log_text()


def test_ready_status_and_sigterm_drain(controller):
    controller.init()
    controller.start()
    seen = controller.wait_notify("STATUS=Serving: 0 connections, 0 control streams", 15)
    assert any(s.startswith("STATUS=Serving") for s in seen)

    # A client holding an idle connection does not keep the daemon from stopping: GOAWAY, then exit.
    s = socket.create_connection(("127.0.0.1", controller.port))
    os.kill(controller.proc.pid, signal.SIGTERM)
    seen = controller.wait_notify("STOPPING=1", 15)
    assert "STOPPING=1" in seen
    rc = controller.proc.wait(timeout=15)
    s.close()
    assert rc == 0, controller.log_text()[-2000:]

    log = controller.log_text()
    assert "MESSAGE_ID=e8f76675ee264ccab9c47be391d7f44f" in log  # started
    assert "MESSAGE_ID=1065f3baa4e04f2fb9540fa54db41ead" in log  # stopped
    events = [r[0] for r in db_query(controller.db, "SELECT event FROM audit ORDER BY seq")]
    assert events[:1] == ["controller-started"] and events[-1] == "controller-stopped", events


def test_socket_activation_by_name(controller, node, tmp_path):
    """systemd-socket-activate passes two named sockets; the controller serves gRPC on 'grpc' and its admin
    listener (HTTPS) on 'admin', and binds neither ListenGRPC= nor ListenAdmin= itself."""
    controller.init()
    controller.bus.start()
    controller.start()  # only to create a token over the bus
    token = controller.create_token("connector", network="lab")
    controller.stop()

    activated = free_port()
    admin = free_port()
    env = controller.env()
    notify_path = tmp_path / "sa-notify.socket"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env["NOTIFY_SOCKET"] = str(notify_path)
    log = open(tmp_path / "sa.log", "w")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{activated}", "-l",
                             f"127.0.0.1:{admin}", "--fdname=grpc:admin", "-E", "ZTNA_BUS_ADDRESS", "-E",
                             "NOTIFY_SOCKET", "-E", "ZTNA_LOG_LEVEL", str(controller.binary),
                             f"--confdir={controller.confdir}", "run"],
                            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        time.sleep(0.5)
        # The token names the configured address; --address points the client at the activated socket.
        d = tmp_path / "sa-agent"
        d.mkdir()
        (d / "token").write_text(token)
        p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "enroll", "--token-file", str(d / "token"),
                            "--address", f"127.0.0.1:{activated}", "--id", "sa-1", "--key-out",
                            str(d / "key.pem"), "--cert-out", str(d / "chain.pem"), "--bundle-out",
                            str(d / "roots.pem")],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=ENROLL_TIMEOUT)
        result = json.loads(p.stdout.strip().splitlines()[-1])
        assert result["ok"], (result, (tmp_path / "sa.log").read_text())
        notify.settimeout(10)
        assert b"READY=1" in notify.recv(4096)
        text = (tmp_path / "sa.log").read_text()
        assert f"Serving gRPC on 127.0.0.1:{activated}" in text
        # ListenGRPC= and ListenAdmin= were not bound: socket activation replaces them.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", controller.port), timeout=2).close()
        listen_admin = int(controller.conf["Network"]["ListenAdmin"].rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listen_admin), timeout=2).close()
        # The passed admin socket speaks HTTPS.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", admin, context=ctx, timeout=10)
        c.request("GET", "/healthz")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"ok\n")
        c.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=15)
        log.close()
        notify.close()
    assert rc == 0, (tmp_path / "sa.log").read_text()[-2000:]


def test_kill9_in_the_middle_of_enrollments_loses_nothing(controller, node, tmp_path):
    """Every token is either unused with no agent, or used by exactly the agent that holds it: a crash never
    leaves a consumed token without its agent, and the database stays sound."""
    controller.init()
    controller.start()
    n = 24
    tokens = [controller.create_token("tunneler") for _ in range(n)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(enroll, node, controller, tmp_path, tok, f"burst-{i}", False)
                   for i, tok in enumerate(tokens)]
        # Kill once the first agents are recorded, while others are still in flight.
        deadline = time.monotonic() + ENROLL_TIMEOUT
        while time.monotonic() < deadline:
            done = db_query(controller.db, "SELECT count(*) FROM agents")[0][0]
            if done >= 3:
                break
            time.sleep(0.02)
        controller.kill9()
        results = [f.result() for f in futures]

    assert db_query(controller.db, "PRAGMA integrity_check") == [("ok",)]
    controller.start()
    assert db_query(controller.db, "PRAGMA integrity_check") == [("ok",)]

    rows = db_query(controller.db, "SELECT t.id, t.used_at, t.used_by, a.spiffe_id, a.cert_serial FROM tokens t "
                                   "LEFT JOIN agents a ON a.token_id = t.id")
    assert len(rows) == n
    for token_id, used_at, used_by, agent, serial in rows:
        if used_at is None:
            assert agent is None, (token_id, agent)
        else:
            assert agent is not None and agent == used_by and serial, (token_id, used_by, agent)
    ok = sum(1 for r, _ in results if r["ok"])
    used = sum(1 for r in rows if r[1] is not None)
    # A response can be lost in the crash after the commit (the agent then re-authenticates with its key),
    # never the other way round.
    assert ok <= used, (ok, used)
    assert used >= 3

    # The unused tokens still work after the restart.
    left = [r[0] for r in rows if r[1] is None]
    if left:
        result, _ = enroll(node, controller, tmp_path,
                           next(t for t in tokens if token_id_of(t) == left[0]), "after-restart")
        assert result["ok"]


def token_payload(token):
    body = token[len("ztna1-"):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def token_id_of(token):
    return token_payload(token)[1:17].hex()


def test_no_secret_in_database_or_journal(controller, node, tmp_path):
    """The daemon logs to a real journald (private to the test); the token secrets and the agent's private
    key appear in neither the database nor the journal, while the audit entries are there with their fields."""
    controller.init()
    controller.start(journal=True)
    tokens = [controller.create_token("connector", network="lab"), controller.create_token("tunneler"),
              controller.create_token("tunneler", id="bound-1")]
    _, agent_dir = enroll(node, controller, tmp_path, tokens[0], "conn-1")
    refused, _ = enroll(node, controller, tmp_path, tokens[0], "conn-2", check_ok=False)  # reused
    assert not refused["ok"]
    controller.ztnactl("token", "revoke", token_id_of(tokens[1]))
    controller.stop()
    controller.stop_journald()

    # The audit trail really is in the journal, as structured entries.
    consumed = [json.loads(l) for l in controller.journal("-o", "json", "MESSAGE_ID=f0a23471aecc44b081197f77a5e9a6c5")
                .splitlines()]
    assert len(consumed) == 1, consumed
    assert consumed[0]["ZTNA_TOKEN_ID"] == token_id_of(tokens[0])
    assert consumed[0]["ZTNA_SUBJECT"] == f"spiffe://{controller.trust_domain}/connector/conn-1"
    # One code location, the caller's: not log.c's as well (journalctl shows a repeated field as a list).
    for field in ("CODE_FILE", "CODE_LINE", "CODE_FUNC"):
        assert isinstance(consumed[0][field], str), (field, consumed[0][field])
    assert not consumed[0]["CODE_FILE"].endswith("log.c"), consumed[0]["CODE_FILE"]
    refused = controller.journal("-o", "json", "ZTNA_EVENT=token-refused")
    assert "token already used" in refused

    blobs = {"database": controller.db.read_bytes(), "log": controller.log_path.read_bytes(),
             "journal export": controller.journal("-o", "export", raw=True)}
    for f in controller.journal_dir.rglob("*.journal*"):
        blobs[f"journal file {f.name}"] = f.read_bytes()
    assert any(k.startswith("journal file") for k in blobs), "journald wrote no file"
    for extra in ("-wal", "-shm", "-journal"):
        p = controller.db.with_name(controller.db.name + extra)
        if p.exists():
            blobs[p.name] = p.read_bytes()

    agent_key = (agent_dir / "key.pem").read_bytes()
    key_body = b"".join(l for l in agent_key.splitlines() if not l.startswith(b"-----"))
    for token in tokens:
        secret = token_payload(token)[17:49]
        needles = [token.encode(), token[len("ztna1-"):][:40].encode(), secret, secret.hex().encode(),
                   base64.b64encode(secret).rstrip(b"="), base64.urlsafe_b64encode(secret).rstrip(b"=")]
        for where, blob in blobs.items():
            for needle in needles:
                assert needle not in blob, f"token secret material found in the {where}"
        # The public id is what identifies a token in listings and the audit trail.
        assert token_id_of(token).encode() in blobs["database"]
    for where, blob in blobs.items():
        assert key_body[:48] not in blob, f"agent private key material found in the {where}"
        assert b"PRIVATE KEY" not in blob, f"a PEM private key found in the {where}"


def test_certificate_less_connections_are_capped_per_address(controller, node, tmp_path):
    """One address cannot hold more than its share of connections without a client certificate (what
    enrollment uses), so it cannot lock agents out; an agent with a certificate still gets in."""
    import ssl

    controller.init()
    controller.start()
    token = controller.create_token("connector", network="lab")
    _, agent = enroll(node, controller, tmp_path, token, "conn-1")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])

    def connect():
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", controller.port), timeout=10))
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
        return s

    held = [connect() for _ in range(64)]
    for s in held:
        assert s.recv(9), "the server closed a connection within the per-address allowance"
    extra = connect()
    extra.settimeout(10)
    try:
        data = extra.recv(4096)
    except (ConnectionResetError, ssl.SSLError):
        data = b""
    assert data == b"", "the 65th certificate-less connection from one address was served"
    assert "Refusing a connection without a client certificate from 127.0.0.1" in controller.log_text()

    p = subprocess.run([node, str(INTEROP / "control-client.js"), "--address", controller.address, "--ca",
                        str(agent / "roots.pem"), "--cert", str(agent / "chain.pem"), "--key",
                        str(agent / "key.pem"), "--heartbeats", "1", "--timeout-ms", "20000"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert '"type":"config"' in p.stdout, p.stdout + p.stderr
    for s in held + [extra]:
        s.close()
