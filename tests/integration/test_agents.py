# SPDX-License-Identifier: Apache-2.0
"""ztna-connector and ztna-tunneler from the build tree against a real `ztna-controller run` on loopback
(conftest.py: ControllerProcess, AgentProcess), as issue 5's tests ask:

  - both agents enroll with a token file and come ONLINE; restarted without any token they come back ONLINE
    from their sealed identity (the token was consumed once, so they cannot have enrolled again);
  - every enrollment failure says why, exits 1 and writes no identity; the token never comes from argv;
  - with 12 s certificates renewals happen again and again over one control stream that stays open;
  - a controller stopped for longer than the certificate lifetime: jittered, growing, capped backoff, then
    re-authentication and ONLINE; the backoff starts again at attempt 1 after a healthy connection;
  - revocation from the controller: State `revoked` within a second, unhealthy, no retries, identity kept;
  - the identity file holds nothing in clear; a damaged or foreign one is refused by name and left alone.

Agents log to their stderr (ZTNA_LOG_TARGET=console) at debug level; the lines matched here are info."""
import base64
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import time

import pytest

from conftest import CALL_TIMEOUT, controller_agents, controller_tokens, db_query_ro, token_file

TD = "ztna.test"
SHORT_LIFETIMES = {"MinimumCertificateLifetime": "10s", "ConnectorLifetime": "12s", "TunnelerLifetime": "12s"}
LIFETIME = 12.0
ONLINE_TIMEOUT = 15.0
# As AgentProcess configures [Reconnect].
BACKOFF_BASE = 0.2
BACKOFF_CAP = 2.0
HEALTHY_AFTER = 1.0
# The control stream's retries, and re-authentication's (each with its own backoff and attempt count).
RETRY = re.compile(r"Controller (\S+): (.*); retrying in ([0-9.]+)s \(attempt (\d+)\)")
REAUTH_RETRY = re.compile(r"Re-authentication failed: (.*); retrying in ([0-9.]+)s \(attempt (\d+)\)")
# The first bytes of an unencrypted PKCS#8 PrivateKeyInfo of a P-256 key (SEQUENCE, version 0, the
# ecPublicKey AlgorithmIdentifier): the DER of the agent's private key in clear would start with them.
PKCS8_EC_PREFIX = bytes.fromhex("308187020100301306072a8648ce3d0201")


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def ctl(controller):
    controller.init()
    controller.start()
    return controller


@pytest.fixture
def short_ctl(controller):
    """A controller issuing 12 s leaf certificates."""
    controller.conf["Certificates"].update(SHORT_LIFETIMES)
    controller.init()
    controller.start()
    return controller


def enrolled_online(ctl, agents, tmp_path, role="connector", id="con-1", **token_args):
    """An agent enrolled with a token file and running ONLINE."""
    a = agents(role, id)
    t = token_file(ctl, tmp_path / f"{role}-{id}.token", role, **token_args)
    p = a.enroll_ok(f"--token-file={t['file']}")
    assert p.stdout == a.spiffe_id() + "\n", p.stdout
    a.start()
    a.wait_state("online", ONLINE_TIMEOUT)
    return a


def wait_until(what, predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def controller_status(ctl, spiffe_id):
    return controller_agents(ctl).get(spiffe_id, {}).get("status")


def streams_opened(ctl, spiffe_id):
    return ctl.log_text().count(f"Control stream of '{spiffe_id}' opened")


def identity_files(agent):
    return sorted(p.name for p in agent.state.iterdir() if p.name.startswith("identity"))


def retries(text, rx=RETRY):
    """(delay in s, attempt) of every "retrying in" line of the control stream (rx=REAUTH_RETRY: of
    re-authentication)."""
    return [(float(m.group(m.lastindex - 1)), int(m.group(m.lastindex))) for m in rx.finditer(text)]


# ---- enrollment, run, restart -----------------------------------------------------------------------------

def test_enroll_run_and_restart_without_token(ctl, agents, tmp_path):
    con = agents("connector", "con-1")
    del con.conf["Agent"]["Id"]  # the id comes from --id
    tun = agents("tunneler", "tun-1")  # the id comes from the configuration (Id=)
    con_token = token_file(ctl, tmp_path / "con.token", "connector", network="lab")
    tun_token = token_file(ctl, tmp_path / "tun.token", "tunneler", groups=("eng",))

    # A token file; stdout is the SPIFFE ID alone. The missing --kek-file is created (0600) with a warning.
    p = con.enroll_ok(f"--token-file={con_token['file']}", "--id=con-1", "--label=site=lab")
    assert p.stdout == f"spiffe://{TD}/connector/con-1\n"
    assert stat.S_IMODE(con.kek.stat().st_mode) == 0o600
    assert str(con.kek) in p.stderr, p.stderr
    assert stat.S_IMODE(con.identity.stat().st_mode) == 0o600
    # The token from stdin ("-"). Nothing of it is logged, even at debug level.
    secret = (tmp_path / "tun.token").read_text().strip()
    p = tun.enroll_ok("--token-file=-", input=secret + "\n")
    assert p.stdout == f"spiffe://{TD}/tunneler/tun-1\n"
    assert secret not in p.stderr and secret[6:30] not in p.stderr
    assert db_query_ro(ctl.db, "SELECT key, value FROM agent_labels WHERE agent = ?", con.spiffe_id()) == \
        [("site", "lab")]

    for a in (con, tun):
        a.start()
        a.wait_state("online", ONLINE_TIMEOUT)
        assert any(line.startswith("STATUS=") for line in a.notifications), a.notifications
        assert a.health("/healthz") == 200
        assert a.health("/readyz") == 200
        assert f"Connected to controller {ctl.address}" in a.run_log()
    assert con.prop("RemoteNetwork") == "lab" and con.prop("SpiffeId") == con.spiffe_id()
    assert tun.prop("Groups") == ["eng"] and tun.prop("SpiffeId") == tun.spiffe_id()

    assert ctl.ztnactl("health", check=False).returncode == 0
    for a in (con, tun):
        p = ctl.ztnactl("status", a.role, check=False)
        assert p.returncode == 0 and "online" in p.stdout and a.spiffe_id() in p.stdout, p.stdout + p.stderr
        j = json.loads(ctl.ztnactl("status", a.role, "--json").stdout)
        assert "online" in json.dumps(j) and a.spiffe_id() in json.dumps(j), j
    wait_until("the controller to list both agents ONLINE",
               lambda: all(controller_status(ctl, a.spiffe_id()) == "online" for a in (con, tun)), 10)

    # SIGTERM: STOPPING=1, exit 0; then ztnactl sees nothing running.
    for a in (con, tun):
        a.stop()
        assert "STOPPING=1" in a.notifications, a.notifications
    assert ctl.ztnactl("status", "connector", check=False).returncode == 3
    assert ctl.ztnactl("status", "tunneler", check=False).returncode == 3
    assert ctl.ztnactl("health", check=False).returncode == 1

    # An existing identity is not replaced without --force, and the new token is not spent on it.
    before = con.identity.read_bytes()
    fresh = token_file(ctl, tmp_path / "fresh.token", "connector")
    p = con.enroll(f"--token-file={fresh['file']}", "--id=con-1")
    assert p.returncode == 1 and p.stdout == "" and "already enrolled" in p.stderr.lower(), p.stdout + p.stderr
    assert con.identity.read_bytes() == before
    assert controller_tokens(ctl)[fresh["id"]]["state"] == "active"

    # Restarted with no token anywhere: ONLINE again from the stored identity.
    for a in (con, tun):
        a.start()
        a.wait_state("online", ONLINE_TIMEOUT)
        assert f"Loaded identity {a.spiffe_id()}" in a.run_log(), a.run_log()[-2000:]
    tokens = controller_tokens(ctl)
    assert (tokens[con_token["id"]]["state"], tokens[con_token["id"]]["used_by"]) == ("used", con.spiffe_id())
    assert (tokens[tun_token["id"]]["state"], tokens[tun_token["id"]]["used_by"]) == ("used", tun.spiffe_id())
    assert sorted(controller_agents(ctl)) == sorted([con.spiffe_id(), tun.spiffe_id()])
    assert ctl.ztnactl("health", check=False).returncode == 0

    # The first token was consumed, once: enrolling with it again (fresh state) is refused by the controller.
    again = agents("connector", "con-1", name="connector-again")
    p = again.enroll(f"--token-file={con_token['file']}")
    assert p.returncode == 1 and p.stdout == "" and "token already used" in p.stderr, p.stdout + p.stderr
    assert identity_files(again) == []


def test_token_sources(ctl, agents, tmp_path):
    """The token from a systemd credential, from the environment (with a warning), from a file others may
    read (with a warning); the KEK from the credential ztna.kek; the default id (the token's bound id, else the
    host name)."""
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    t = token_file(ctl, creds / "ENROLLMENT_TOKEN", "connector")
    kek = os.urandom(32)
    (creds / "ztna.kek").write_bytes(kek)
    (creds / "ztna.kek").chmod(0o600)
    a = agents("connector", "by-credential")
    p = a.enroll_ok(env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert p.stdout == a.spiffe_id() + "\n"
    assert not a.kek.exists(), "the KEK file was created although the credential ztna.kek exists"
    assert controller_tokens(ctl)[t["id"]]["state"] == "used"
    # Run with the KEK credential: the identity opens.
    a.start(env={"CREDENTIALS_DIRECTORY": str(creds)})
    a.wait_state("online", ONLINE_TIMEOUT)
    a.stop()

    # No Id= and no --id: the host name is the agent id.
    b = agents("connector", name="by-environment")
    b.id = socket.gethostname()
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", b.id), b.id
    path = tmp_path / "env.token"
    t = token_file(ctl, path, "connector")
    secret = path.read_text().strip()
    p = b.enroll_ok(env={"ENROLLMENT_TOKEN": secret})
    assert p.stdout == b.spiffe_id() + "\n"
    assert "ENROLLMENT_TOKEN" in p.stderr and secret not in p.stderr, p.stderr
    assert controller_tokens(ctl)[t["id"]]["state"] == "used"

    c = agents("connector", "readable-file")
    path = tmp_path / "readable.token"
    t = token_file(ctl, path, "connector")
    path.chmod(0o644)
    p = c.enroll_ok(f"--token-file={path}")
    assert p.stdout == c.spiffe_id() + "\n"
    assert "other users" in p.stderr, p.stderr

    # A token bound to an id, and neither Id= nor --id: the bound id, not the host name.
    d = agents("connector", name="bound")
    t = token_file(ctl, tmp_path / "bound.token", "connector", id="con-7")
    p = d.enroll_ok(f"--token-file={t['file']}")
    assert p.stdout == f"spiffe://{TD}/connector/con-7\n"


def test_run_enrolls_with_the_token_credential(ctl, agents, tmp_path):
    """`run` of an unenrolled agent enrolls with the credential ENROLLMENT_TOKEN (a unit's
    LoadCredentialEncrypted=), and is READY once online; a restart with the same, now spent, credential keeps
    the identity and does not try again; a spent token on an unenrolled agent is reported and the agent stays
    up, ready and unenrolled (no restart loop under systemd)."""
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    t = token_file(ctl, creds / "ENROLLMENT_TOKEN", "connector")
    secret = (creds / "ENROLLMENT_TOKEN").read_text().strip()
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    a = agents("connector", "con-cred")
    a.make_kek()
    a.start(env=env)
    # READY=1 only after the enrollment ended: by then the state is no longer "unenrolled".
    assert a.prop("State") in ("connecting", "online"), a.run_log()[-2000:]
    a.wait_state("online", ONLINE_TIMEOUT)
    assert a.prop("SpiffeId") == a.spiffe_id() and a.identity.exists()
    assert controller_tokens(ctl)[t["id"]]["state"] == "used"
    assert "enrolling with the token from the credential" in a.run_log()
    assert secret not in a.log_text()

    a.stop()
    a.start(env=env)
    a.wait_state("online", ONLINE_TIMEOUT)
    assert a.prop("SpiffeId") == a.spiffe_id()
    assert "enrolling with the token" not in a.run_log() and "failed" not in a.run_log().lower()
    a.stop()

    b = agents("connector", "con-spent")
    b.make_kek()
    b.start(env=env)
    assert b.prop("State") == "unenrolled"
    assert re.search(r"Enrollment with the token from the credential failed: .*token already used", b.run_log()), \
        b.run_log()[-2000:]
    assert "ztnactl enroll connector" in b.run_log()
    assert b.proc.poll() is None and not b.identity.exists()
    b.stop()


# ---- enrollment failures ----------------------------------------------------------------------------------

def rogue_root(directory):
    """A self-signed CA for the same trust domain that the controller does not chain to."""
    d = directory / "rogue"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "1",
                    "-subj", "/CN=rogue CA", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-addext", f"subjectAltName=URI:spiffe://{TD}"],
                   check=True, capture_output=True, timeout=CALL_TIMEOUT, stdin=subprocess.DEVNULL)
    return d / "ca.pem"


def real_root(ctl, directory):
    status = json.loads(ctl.ztnactl("ca", "status", "--json").stdout)
    root = [c for c in status["cas"] if c["kind"] == "root" and c["state"] == "active"][0]
    b64 = root["certificate"]
    path = directory / "root.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) +
                    "\n-----END CERTIFICATE-----\n")
    return path


def garble(token):
    """One base64url character in the middle changed: the checksum no longer matches."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


def case_empty(ctl, agent, tmp_path):
    (tmp_path / "t").write_text("")
    (tmp_path / "t").chmod(0o600)
    return agent.enroll(f"--token-file={tmp_path / 't'}"), "empty", None


def case_not_a_token(ctl, agent, tmp_path):
    (tmp_path / "t").write_text("hello-world\n")
    (tmp_path / "t").chmod(0o600)
    return agent.enroll(f"--token-file={tmp_path / 't'}"), "not a ztna enrollment token", None


def case_garbled(ctl, agent, tmp_path):
    t = token_file(ctl, tmp_path / "t", "connector")
    (tmp_path / "t").write_text(garble((tmp_path / "t").read_text().strip()) + "\n")
    return agent.enroll(f"--token-file={tmp_path / 't'}"), "damaged", t["id"]


def case_missing_file(ctl, agent, tmp_path):
    p = agent.enroll(f"--token-file={tmp_path / 'no-such-token'}")
    assert str(tmp_path / "no-such-token") in p.stderr, p.stderr
    return p, "no-such-token", None


def case_used_twice(ctl, agent, tmp_path):
    token_file(ctl, tmp_path / "t", "connector")
    first = agent.__class__(tmp_path / "first", "connector", agent.bus, id="con-1")
    first.enroll_ok(f"--token-file={tmp_path / 't'}")
    return agent.enroll(f"--token-file={tmp_path / 't'}"), "token already used", None


def case_expired(ctl, agent, tmp_path):
    # Tokens live at least a minute (CONTROLLER_TOKEN_LIFETIME_MIN). Rather than wait, the row's expiry is
    # moved into the past through SQLite, as an operator with the database could; the controller reads the
    # row at each enrollment.
    t = token_file(ctl, tmp_path / "t", "connector", ttl="1min")
    con = sqlite3.connect(str(ctl.db), timeout=10)
    try:
        with con:
            n = con.execute("UPDATE tokens SET expires_at = created_at + 1 WHERE id = ?", (t["id"],)).rowcount
    finally:
        con.close()
    assert n == 1
    return agent.enroll(f"--token-file={tmp_path / 't'}"), "expired", t["id"]


def case_revoked(ctl, agent, tmp_path):
    t = token_file(ctl, tmp_path / "t", "connector")
    ctl.ztnactl("token", "revoke", t["id"])
    return agent.enroll(f"--token-file={tmp_path / 't'}"), "token revoked", None


def case_unreachable(ctl, agent, tmp_path):
    t = token_file(ctl, tmp_path / "t", "connector")
    ctl.stop()
    p = agent.enroll(f"--token-file={tmp_path / 't'}")
    assert ctl.address in p.stderr, p.stderr
    ctl.start()
    return p, "controller unreachable", t["id"]


def case_wrong_ca_file(ctl, agent, tmp_path):
    token_file(ctl, tmp_path / "t", "connector")
    p = agent.enroll(f"--token-file={tmp_path / 't'}", f"--ca-file={rogue_root(tmp_path)}")
    # Not a refusal of --ca-file as such: the controller's own root is accepted, with the same token.
    good = agent.__class__(tmp_path / "good", "connector", agent.bus, id="con-1")
    ok = good.enroll(f"--token-file={tmp_path / 't'}", f"--ca-file={real_root(ctl, tmp_path)}")
    assert ok.returncode == 0 and ok.stdout == good.spiffe_id() + "\n", ok.stdout + ok.stderr
    return p, re.compile(r"pin|chain"), None


def case_other_trust_domain(ctl, agent, tmp_path):
    token_file(ctl, tmp_path / "t", "connector")
    p = agent.enroll(f"--token-file={tmp_path / 't'}", "--trust-domain=other.test")
    # Checked before the token is sent: it still works.
    good = agent.__class__(tmp_path / "good", "connector", agent.bus, id="con-1")
    ok = good.enroll(f"--token-file={tmp_path / 't'}", f"--trust-domain={TD}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    return p, "trust domain", None


ENROLL_FAILURES = {
    "empty token file": case_empty,
    "not a token": case_not_a_token,
    "garbled token": case_garbled,
    "missing token file": case_missing_file,
    "token used twice": case_used_twice,
    "expired token": case_expired,
    "revoked token": case_revoked,
    "controller unreachable": case_unreachable,
    "wrong --ca-file": case_wrong_ca_file,
    "other trust domain": case_other_trust_domain,
}


@pytest.mark.parametrize("case", list(ENROLL_FAILURES))
def test_enroll_failure(ctl, agents, tmp_path, case):
    agent = agents("connector", "con-1")
    agent.log_level = "info"  # the reason must be there at the level users see
    p, why, unspent = ENROLL_FAILURES[case](ctl, agent, tmp_path)
    assert p.returncode == 1, f"exit {p.returncode}: {p.stdout}{p.stderr}"
    assert p.stdout == "", p.stdout
    if isinstance(why, str):
        assert why in p.stderr, p.stderr
    else:
        assert why.search(p.stderr), p.stderr
    assert identity_files(agent) == [], "a failed enrollment left an identity behind"
    if unspent:
        # Refused before or by the controller without consuming the token.
        assert controller_tokens(ctl)[unspent]["state"] in ("active", "expired"), controller_tokens(ctl)[unspent]


def test_token_is_never_taken_from_argv(ctl, agents, tmp_path):
    agent = agents("connector", "con-1")
    token_file(ctl, tmp_path / "t", "connector")
    secret = (tmp_path / "t").read_text().strip()
    for args in ([f"--token={secret}"], ["--token", secret], [secret]):
        p = agent.enroll(*args)
        assert p.returncode != 0 and p.stdout == "", (args, p.stdout, p.stderr)
        # A secret pasted on the command line is not repeated into logs either.
        assert secret not in p.stderr and secret[6:30] not in p.stderr, (args, p.stderr)
        assert identity_files(agent) == []
    assert [t["state"] for t in controller_tokens(ctl).values()] == ["active"]


# ---- renewal ----------------------------------------------------------------------------------------------

def test_renewals_keep_the_control_stream(short_ctl, agents, tmp_path):
    ctl = short_ctl
    con = enrolled_online(ctl, agents, tmp_path)
    spiffe = con.spiffe_id()
    first = con.props()
    assert first["Renewals"][1] == 0 and first["Reconnects"][1] == 0
    not_after = [first["CertificateNotAfter"][1]]
    heartbeats = {first["LastHeartbeat"][1]}
    start = time.monotonic()

    # Three renewals take about 3 × 8.4 s (renewal when 30 % ± 10 % of 12 s remains).
    deadline = start + 3 * LIFETIME + 10
    while True:
        p = con.props()
        assert p["State"][1] == "online", f"State {p['State'][1]} during renewals: {con.run_log()[-3000:]}"
        assert p["Reconnects"][1] == 0, con.run_log()[-3000:]
        assert p["RenewalFailures"][1] == 0, p["LastError"]
        if p["CertificateNotAfter"][1] != not_after[-1]:
            not_after.append(p["CertificateNotAfter"][1])
        heartbeats.add(p["LastHeartbeat"][1])
        if p["Renewals"][1] >= 3 and len(not_after) >= 4:
            break
        assert time.monotonic() < deadline, f"{p['Renewals'][1]} renewals in {deadline - start:.0f} s: " \
                                            f"{con.run_log()[-3000:]}"
        time.sleep(0.2)
    elapsed = time.monotonic() - start

    # Each certificate was replaced before it expired, and not much earlier than planned (no renewal storm).
    steps = [(b - a) / 1e6 for a, b in zip(not_after, not_after[1:])]
    assert all(5.0 <= s <= LIFETIME + 1 for s in steps), steps
    assert p["Renewals"][1] <= elapsed / 6.0 + 1, (p["Renewals"][1], elapsed)
    assert con.run_log().count("Certificate renewed (same key)") == p["Renewals"][1]
    # The stream opened once and survived its original certificate's expiry; the controller knows the
    # renewed certificate and heard heartbeats throughout.
    assert time.time() > not_after[0] / 1e6, "the first certificate has not even expired yet"
    assert streams_opened(ctl, spiffe) == 1, ctl.log_text()[-3000:]
    assert f"Control stream of '{spiffe}' closed" not in ctl.log_text()
    assert controller_agents(ctl)[spiffe]["cert_not_after_usec"] == not_after[-1]
    assert controller_status(ctl, spiffe) == "online"
    assert len(heartbeats - {0}) >= 2, heartbeats
    assert con.health("/readyz") == 200


# ---- outage -----------------------------------------------------------------------------------------------

def test_outage_longer_than_the_lifetime(short_ctl, agents, tmp_path):
    ctl = short_ctl
    con = enrolled_online(ctl, agents, tmp_path)
    renewals = con.prop("Renewals")

    mark = len(con.run_log())
    stopped = time.time()
    ctl.stop()
    con.wait_state("offline", 5)
    assert con.health("/readyz") == 503
    assert ctl.ztnactl("health", check=False).returncode == 1
    # Down for longer than the lifetime, and past the expiry of the certificate the agent holds.
    not_after = con.prop("CertificateNotAfter") / 1e6
    assert not_after < stopped + LIFETIME + 1
    time.sleep(max(0.0, max(not_after + 1.5, stopped + LIFETIME + 3) - time.time()))
    ctl.start()

    m = con.wait_log(r"Re-authenticated with the controller", 20, since=mark)
    con.wait_state("online", 10)
    assert con.prop("Renewals") > renewals
    assert con.prop("CertificateNotAfter") / 1e6 > time.time()

    # The delays: attempt n waits a uniformly random time in [0, min(cap, base · 2^(n-1))]; each sequence
    # counts up from 1 without restarting while nothing succeeds.
    outage = con.run_log()[mark:m.start()]
    seen = []
    for rx in (RETRY, REAUTH_RETRY):
        sequence = retries(outage, rx)
        attempts = [a for _, a in sequence]
        assert attempts == list(range(1, len(sequence) + 1)), (rx.pattern, attempts)
        seen += sequence
    assert len(seen) >= 6, outage[-3000:]
    for delay, attempt in seen:
        assert delay <= min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) + 0.0005, seen
    late = [d for d, a in seen if a >= 4]
    assert late and max(late) > BACKOFF_BASE, f"the delays did not grow: {seen}"
    assert len(set(d for d, _ in seen)) > 2, f"the delays are not jittered: {seen}"

    # Healthy for longer than HealthyAfter=: the next failure starts again at attempt 1.
    time.sleep(HEALTHY_AFTER + 1)
    mark = len(con.run_log())
    ctl.stop()
    m = con.wait_log(RETRY.pattern, 10, since=mark)
    assert m.group(4) == "1", m.group(0)
    assert float(m.group(3)) <= BACKOFF_BASE + 0.0005, m.group(0)


# ---- revocation -------------------------------------------------------------------------------------------

def test_revocation(ctl, agents, tmp_path):
    con = enrolled_online(ctl, agents, tmp_path)
    spiffe = con.spiffe_id()
    identity = con.identity.read_bytes()
    mark = len(con.run_log())

    ctl.ztnactl("agents", "revoke", spiffe, "--reason", "lost laptop")
    took = con.wait_state("revoked", 1.0)
    con.wait_log(r"Revoked by the controller: \S", 2, since=mark)

    assert ctl.ztnactl("health", check=False).returncode == 1
    assert con.health("/readyz") == 503
    assert con.health("/healthz") == 200  # the loop is alive
    p = ctl.ztnactl("status", "connector", check=False)
    assert p.returncode == 0 and "revoked" in p.stdout, p.stdout + p.stderr

    # Final: no retry in the next 3 s, the controller sees no new attempt, the identity stays for inspection.
    opened = streams_opened(ctl, spiffe)
    time.sleep(3)
    assert retries(con.run_log()[mark:]) == [] and retries(con.run_log()[mark:], REAUTH_RETRY) == [], \
        con.run_log()[mark:]
    assert streams_opened(ctl, spiffe) == opened
    assert db_query_ro(ctl.db, "SELECT count(*) FROM audit WHERE event = 'control-refused' AND subject = ?",
                    spiffe) == [(0,)]
    assert con.running() and con.prop("State") == "revoked", took
    assert con.identity.read_bytes() == identity
    con.stop()

    # Restarted, it tries once, is refused, and stays revoked: one refusal at the controller, no retries.
    con.start(wait_ready=False)
    con.wait_state("revoked", 5)
    time.sleep(2)
    assert retries(con.run_log()) == [] and retries(con.run_log(), REAUTH_RETRY) == [], con.run_log()
    assert db_query_ro(ctl.db, "SELECT count(*) FROM audit WHERE event = 'control-refused' AND subject = ?",
                       spiffe) == [(1,)]
    assert con.identity.read_bytes() == identity


# ---- identity at rest -------------------------------------------------------------------------------------

def test_identity_file_holds_nothing_in_clear(ctl, agents, tmp_path):
    con = enrolled_online(ctl, agents, tmp_path)
    spiffe = con.spiffe_id()
    con.stop()
    assert stat.S_IMODE(con.identity.stat().st_mode) == 0o600

    public_key, serial = db_query_ro(ctl.db, "SELECT public_key, cert_serial FROM agents WHERE spiffe_id = ?",
                                  spiffe)[0]
    cas = [base64.b64decode(c["certificate"])
           for c in json.loads(ctl.ztnactl("ca", "status", "--json").stdout)["cas"]]
    assert len(public_key) >= 64 and len(cas) == 2
    forbidden = {
        "PEM armour": b"-----BEGIN",
        "PKCS#8 EC key header": PKCS8_EC_PREFIX,
        "the agent's public key (its certificate in clear)": bytes(public_key),
        "the identity format's magic (plaintext)": b"ZTNAID",
        "the SPIFFE ID": spiffe.encode(),
        "the root CA certificate": cas[0],
        "the issuing CA certificate": cas[1],
    }
    digits = (serial or "").replace(":", "")
    if re.fullmatch(r"[0-9a-fA-F]{16,}", digits):
        digits = "0" * (len(digits) % 2) + digits
        forbidden["the leaf certificate's serial number"] = bytes.fromhex(digits)
    for path in sorted(con.state.iterdir()):
        data = path.read_bytes()
        for what, needle in forbidden.items():
            assert needle not in data, f"{path.name} holds {what} in clear"


def corrupt(data):
    b = bytearray(data)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("damage", ["flipped byte", "flipped first byte", "truncated", "foreign", "other KEK"])
def test_damaged_identity_is_refused_and_kept(ctl, agents, tmp_path, damage):
    con = agents("connector", "con-1")
    t = token_file(ctl, tmp_path / "t", "connector")
    con.enroll_ok(f"--token-file={t['file']}")
    good = con.identity.read_bytes()

    if damage == "flipped byte":
        con.identity.write_bytes(corrupt(good))
    elif damage == "flipped first byte":
        con.identity.write_bytes(bytes([good[0] ^ 0x01]) + good[1:])
    elif damage == "truncated":
        con.identity.write_bytes(good[:len(good) // 2])
    elif damage == "foreign":
        # A tunneler's identity sealed with the same KEK: it must not open as a connector's.
        tun = agents("tunneler", "tun-1")
        tun.kek = con.kek
        t2 = token_file(ctl, tmp_path / "t2", "tunneler")
        tun.enroll_ok(f"--token-file={t2['file']}")
        con.identity.write_bytes(tun.identity.read_bytes())
    elif damage == "other KEK":
        con.kek.write_bytes(os.urandom(32))
    bad = con.identity.read_bytes()
    listing = identity_files(con)

    p = con.run_once()
    assert p.returncode == 1, f"exit {p.returncode}: {p.stdout}{p.stderr}"
    assert str(con.identity) in p.stderr, p.stderr
    assert con.identity.read_bytes() == bad and identity_files(con) == listing

    # enroll without --force refuses to replace it, and spends no token.
    t3 = token_file(ctl, tmp_path / "t3", "connector")
    p = con.enroll(f"--token-file={t3['file']}")
    assert p.returncode == 1 and p.stdout == "", p.stdout + p.stderr
    assert str(con.identity) in p.stderr, p.stderr
    assert con.identity.read_bytes() == bad and identity_files(con) == listing
    assert controller_tokens(ctl)[t3["id"]]["state"] == "active"

    if damage == "flipped byte":
        # --force re-enrolls (under another id: the controller keeps con-1's record); the damaged file is
        # moved aside, never deleted.
        p = con.enroll_ok(f"--token-file={t3['file']}", "--force", "--id=con-2")
        con.id = "con-2"
        assert p.stdout == con.spiffe_id() + "\n"
        aside = [f for f in identity_files(con) if f.startswith("identity.corrupt-")]
        assert len(aside) == 1 and (con.state / aside[0]).read_bytes() == bad, identity_files(con)
        con.start()
        con.wait_state("online", ONLINE_TIMEOUT)
