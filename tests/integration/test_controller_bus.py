# SPDX-License-Identifier: Apache-2.0
"""org.ztna.Controller1 and ztnactl against a real `ztna-controller run` on a private dbus-daemon whose
policy includes dbus/org.ztna.Controller1.conf: the interface as shipped (introspection equals
dbus/org.ztna.Controller1.xml), every verb with its human and --json output, the exact D-Bus error names,
the bus policy, and polkit (python-dbusmock's polkitd template) deciding for callers that are not root.

Enrollments are made by grpc-js (tests/interop/enroll-client.js), the way an agent makes them."""
import base64
import hashlib
import json
import os
import pathlib
import re
import signal
import sqlite3
import stat
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import CALL_TIMEOUT, INTEROP, SRC

NAME = "org.ztna.Controller1"
PATH = "/org/ztna/Controller1"
ERROR = "org.ztna.Controller1.Error."
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"

NOBODY = 65534
PYTHON = "/usr/bin/python3"  # Debian's python3-dbusmock and python3-dbus live here
POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
MOCK_INTERFACE = "org.freedesktop.DBus.Mock"

ACTION_READ = "org.ztna.controller.read"
ACTION_TOKENS = "org.ztna.controller.manage-tokens"
ACTION_AGENTS = "org.ztna.controller.manage-agents"
ACTION_CA = "org.ztna.controller.manage-ca"

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HUMAN_UTC = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def ctl(controller):
    controller.init()
    controller.start()
    return controller


def ztnactl_json(ctl, *args, **kwargs):
    p = ctl.ztnactl(*args, "--json", **kwargs)
    return json.loads(p.stdout)


def failed(ctl, *args, rc=1, user=None):
    """Runs ztnactl expecting exit status rc; returns its stderr."""
    p = ctl.ztnactl(*args, check=False, user=user)
    assert p.returncode == rc, f"ztnactl {' '.join(args)}: exit {p.returncode}, wanted {rc}: {p.stdout}{p.stderr}"
    assert p.stdout == "", p.stdout
    return p.stderr


def bus_call(ctl, member, signature="", *args, user=None, interface=NAME):
    """A method call with python-dbus (as root, or as another uid in a child): returns ("ok", reply) or
    ("error", D-Bus error name, message)."""
    script = f"""
import json, sys, dbus
bus = dbus.bus.BusConnection({ctl.bus.address!r})
try:
    r = bus.call_blocking({NAME!r}, {PATH!r}, {interface!r}, {member!r}, {signature!r}, json.loads(sys.argv[1]),
                          timeout=30)
    print(json.dumps(["ok", json.loads(json.dumps(r, default=str))]))
except dbus.exceptions.DBusException as e:
    print(json.dumps(["error", e.get_dbus_name(), e.get_dbus_message()]))
"""
    argv = [PYTHON, "-c", script, json.dumps(list(args))]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    assert p.returncode == 0, p.stdout + p.stderr
    return tuple(json.loads(p.stdout))


def bus_error(ctl, member, signature="", *args, **kwargs):
    result = bus_call(ctl, member, signature, *args, **kwargs)
    assert result[0] == "error", result
    return result[1], result[2]


def audit_rows(ctl, event):
    """(actor, subject, detail) of the audit rows of one kind, read-only through SQLite."""
    con = sqlite3.connect(f"file:{ctl.db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT actor, subject, detail FROM audit WHERE event = ? ORDER BY seq",
                           (event,)).fetchall()
    finally:
        con.close()


def token_payload(token):
    assert token.startswith("ztna1-"), token
    s = token[len("ztna1-"):]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def enroll(node, tmp_path, token, agent_id):
    d = tmp_path / f"agent-{agent_id}-{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    token_file = d / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "enroll", "--token-file", str(token_file),
                        "--id", agent_id, "--key-out", str(d / "key.pem"), "--cert-out", str(d / "chain.pem"),
                        "--bundle-out", str(d / "roots.pem")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"enroll-client failed ({p.returncode}): {p.stdout}{p.stderr}"
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return result


def spki_sha256_of_der_certificate(der):
    cert = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-pubkey"], input=der,
                          capture_output=True, timeout=CALL_TIMEOUT)
    assert cert.returncode == 0, cert.stderr
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=cert.stdout,
                          capture_output=True, timeout=CALL_TIMEOUT)
    assert spki.returncode == 0, spki.stderr
    return hashlib.sha256(spki.stdout).hexdigest()


def normalise_introspection(text):
    """The node as comparable data: interfaces by name; members in order with their attributes, args and
    annotations. Whitespace, comments and attribute order do not matter; anything else does."""

    def element(e):
        return (e.tag, tuple(sorted(e.attrib.items())), tuple(element(c) for c in e))

    root = ET.fromstring(text)
    assert root.tag == "node"
    return sorted(element(i) for i in root if i.tag == "interface"), sorted(
        n.attrib.get("name") for n in root if n.tag == "node")


class PolkitMock:
    """python-dbusmock's polkitd template on the controller's private bus: denies every action except those
    given to allow(); logs every CheckAuthorization with its arguments."""

    def __init__(self, ctl, directory):
        self.ctl = ctl
        self.log = directory / "polkit-mock.log"
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=ctl.bus.address)
        self.proc = subprocess.Popen([PYTHON, "-m", "dbusmock", "--template", "polkitd", "-l", str(self.log)],
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not self.owned():
            assert self.proc.poll() is None, "dbusmock exited"
            assert time.monotonic() < deadline, "dbusmock did not claim org.freedesktop.PolicyKit1"
            time.sleep(0.05)

    def owned(self):
        p = self.ctl.busctl("status", POLKIT_NAME, check=False)
        return p.returncode == 0

    def allow(self, *actions):
        self.ctl.busctl("call", POLKIT_NAME, POLKIT_PATH, MOCK_INTERFACE, "SetAllowed", "as",
                        str(len(actions)), *actions)

    def checks(self):
        """The CheckAuthorization calls so far as (action, details, flags), from dbusmock's log lines
        `<time> CheckAuthorization <subject> "<action>" {<details>} <flags> "<cancellation id>"`."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            if " CheckAuthorization " not in line:
                continue
            m = re.search(r' "([a-z0-9.-]+)" (\{.*\}) (\d+) ""$', line)
            assert m, line
            found.append((m.group(1), m.group(2), int(m.group(3))))
        return found

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def polkit(ctl, tmp_path):
    mock = PolkitMock(ctl, tmp_path)
    try:
        yield mock
    finally:
        mock.stop()


# ---- the interface ----------------------------------------------------------------------------------------

def test_introspection_equals_the_shipped_xml(ctl):
    live = ctl.busctl("introspect", "--xml-interface", NAME, PATH).stdout
    shipped = (SRC / "dbus" / "org.ztna.Controller1.xml").read_text()
    live_ifaces, live_children = normalise_introspection(live)
    shipped_ifaces, shipped_children = normalise_introspection(shipped)
    assert [i[1] for i in live_ifaces] == [i[1] for i in shipped_ifaces]
    for a, b in zip(live_ifaces, shipped_ifaces):
        assert a == b, f"interface {dict(a[1])['name']} differs from dbus/org.ztna.Controller1.xml"
    assert live_children == shipped_children == []
    # The check above cannot pass vacuously: the interface and its methods are there.
    ours = [i for i in shipped_ifaces if ("name", NAME) in i[1]]
    assert len(ours) == 1
    methods = [dict(m[1])["name"] for m in ours[0][2] if m[0] == "method"]
    assert methods == ["CreateToken", "ListTokens", "RevokeToken", "ListAgents", "RevokeAgent",
                       "RequestRenewal", "RotateRootCA", "ListCAs",
                       "CreateNetwork", "DeleteNetwork", "ListNetworks",
                       "CreateResource", "UpdateResource", "DeleteResource", "ListResources",
                       "CreateGroup", "DeleteGroup", "ListGroups", "AddGroupMember", "RemoveGroupMember",
                       "CreatePolicy", "DeletePolicy", "ListPolicies",
                       "CreateAdmin", "SetAdminPassword", "DeleteAdmin", "ListAdmins"]


def test_properties(ctl):
    def prop(name):
        return ctl.busctl("get-property", "--json=short", NAME, PATH, NAME, name).stdout

    assert json.loads(prop("TrustDomain")) == {"type": "s", "data": "ztna.test"}
    assert json.loads(prop("ControllerId")) == {"type": "s", "data": "ctl-1"}
    version = ctl.ztnactl("--version").stdout.split()[1]
    assert json.loads(prop("Version")) == {"type": "s", "data": version}
    assert json.loads(prop("AdvertisedAddresses")) == {"type": "as", "data": [ctl.address]}
    assert json.loads(prop("ControlStreams")) == {"type": "u", "data": 0}

    # RootFingerprint is the SHA-256 of the root's SubjectPublicKeyInfo: the pin enrollment tokens carry.
    fingerprint = json.loads(prop("RootFingerprint"))["data"]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint), fingerprint
    status = ztnactl_json(ctl, "ca", "status")
    root = [c for c in status["cas"] if c["kind"] == "root"]
    assert len(root) == 1
    assert spki_sha256_of_der_certificate(base64.b64decode(root[0]["certificate"])) == fingerprint
    token = ctl.create_token("connector")
    assert token_payload(token)[49:81].hex() == fingerprint
    assert status["root_fingerprint"] == fingerprint


# ---- tokens -----------------------------------------------------------------------------------------------

def test_token_create_list_revoke(ctl):
    before = time.time()
    created = ztnactl_json(ctl, "token", "create", "--role", "connector", "--id", "con-1", "--network", "lab",
                           "--ttl", "2h")
    assert set(created) == {"token", "id", "expires", "expires_usec"}
    assert re.fullmatch(r"[0-9a-f]{32}", created["id"])
    assert token_payload(created["token"])[1:17].hex() == created["id"]
    assert ISO_UTC.match(created["expires"])
    assert abs(created["expires_usec"] / 1e6 - (before + 7200)) < 60

    tunneler = ztnactl_json(ctl, "token", "create", "--role", "tunneler", "--group", "eng", "--group", "ops")

    tokens = {t["id"]: t for t in ztnactl_json(ctl, "token", "list")}
    assert set(tokens) == {created["id"], tunneler["id"]}
    t = tokens[created["id"]]
    assert (t["role"], t["state"], t["bound_id"], t["remote_network"], t["groups"], t["created_by"]) == \
        ("connector", "active", "con-1", "lab", [], "root")
    assert t["expires_at_usec"] == created["expires_usec"] and t["expires_at"] == created["expires"]
    assert t["used_at"] is None and t["used_at_usec"] == 0 and t["used_by"] is None and t["revoked_at"] is None
    # Default lifetime ([Tokens] DefaultLifetime= 1h) when no --ttl is given.
    u = tokens[tunneler["id"]]
    assert (u["role"], u["groups"], u["remote_network"]) == ("tunneler", ["eng", "ops"], None)
    assert abs((u["expires_at_usec"] - u["created_at_usec"]) - 3600 * 10**6) < 10**6

    # The secret appears nowhere but in the create reply.
    listing = ctl.ztnactl("token", "list").stdout + ctl.ztnactl("token", "list", "--json").stdout
    for tok in (created["token"], tunneler["token"]):
        assert tok not in listing and tok[6:40] not in listing

    # Human table: a header, one row per token, the footer; --no-legend drops header and footer.
    human = ctl.ztnactl("token", "list").stdout.splitlines()
    assert human[0].split()[:3] == ["ID", "ROLE", "STATE"]
    assert human[-1] == "2 tokens listed."
    row = [line for line in human if line.startswith(created["id"])]
    assert len(row) == 1 and row[0].split()[1:5] == ["connector", "active", "con-1", "lab"], human
    assert HUMAN_UTC.search(row[0]) and re.search(r"in 1h 59min|in 2h", row[0]), row[0]
    bare = ctl.ztnactl("token", "list", "--no-legend").stdout.splitlines()
    assert len(bare) == 2 and all(re.match(r"^[0-9a-f]{32}  ", line) for line in bare), bare

    ctl.ztnactl("token", "revoke", created["id"])
    t = {t["id"]: t for t in ztnactl_json(ctl, "token", "list")}[created["id"]]
    assert t["state"] == "revoked" and t["revoked_at_usec"] > 0 and ISO_UTC.match(t["revoked_at"])

    assert "already used or revoked" in failed(ctl, "token", "revoke", created["id"])
    assert "No token" in failed(ctl, "token", "revoke", "0" * 32)
    assert "32 hex digits" in failed(ctl, "token", "revoke", "not-a-token-id")
    assert bus_error(ctl, "RevokeToken", "s", created["id"])[0] == ERROR + "TokenNotActive"
    assert bus_error(ctl, "RevokeToken", "s", "0" * 32)[0] == ERROR + "NoSuchToken"
    assert bus_error(ctl, "RevokeToken", "s", "xyz")[0] == INVALID_ARGS
    # The other token was not touched.
    assert {t["id"]: t for t in ztnactl_json(ctl, "token", "list")}[tunneler["id"]]["state"] == "active"


def test_token_create_human_output(ctl):
    p = ctl.ztnactl("token", "create", "--role", "connector")
    # stdout is the token alone, so that TOKEN=$(ztnactl token create …) works; the hint goes to stderr.
    assert re.fullmatch(r"ztna1-[A-Za-z0-9_-]+\n", p.stdout), p.stdout
    token_id = token_payload(p.stdout.strip())[1:17].hex()
    assert token_id in p.stderr and HUMAN_UTC.search(p.stderr) and "in 59min" in p.stderr, p.stderr
    assert p.stdout.strip() not in p.stderr
    assert ctl.ztnactl("token", "create", "--role", "connector", "--no-legend").stderr == ""


def test_token_output_file(ctl, tmp_path):
    out = tmp_path / "token"
    p = ctl.ztnactl("token", "create", "--role", "tunneler", "--output", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = out.read_text()
    assert token.endswith("\n") and token.count("\n") == 1
    token = token.strip()
    token_id = token_payload(token)[1:17].hex()
    assert token not in p.stdout and token_id in p.stdout and str(out) in p.stdout, p.stdout
    assert [t["id"] for t in ztnactl_json(ctl, "token", "list")] == [token_id]

    # --json with --output: the file holds the secret, stdout does not.
    out2 = tmp_path / "token2"
    j = ztnactl_json(ctl, "token", "create", "--role", "connector", "--output", out2)
    assert set(j) == {"id", "expires", "expires_usec", "file"} and j["file"] == str(out2)
    assert token_payload(out2.read_text().strip())[1:17].hex() == j["id"]

    # An existing file is never replaced, and no token is created for it.
    err = failed(ctl, "token", "create", "--role", "connector", "--output", out)
    assert "exists" in err and str(out) in err, err
    assert out.read_text().strip() == token
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "exists" in failed(ctl, "token", "create", "--role", "connector", "--output", dangling)
    assert not (tmp_path / "nowhere").exists()
    assert len(ztnactl_json(ctl, "token", "list")) == 2

    # A file that cannot be written: the token made for it is revoked, not left behind.
    err = failed(ctl, "token", "create", "--role", "connector", "--output", tmp_path / "no-such-dir" / "t")
    assert "was revoked" in err, err
    states = sorted(t["state"] for t in ztnactl_json(ctl, "token", "list"))
    assert states == ["active", "active", "revoked"]


@pytest.mark.parametrize("args,message", [
    (["--role", "bogus"], "Invalid role 'bogus'"),
    (["--role", "controller"], "Invalid role 'controller'"),
    (["--role", "tunneler", "--network", "lab"], "network"),
    (["--role", "connector", "--group", "eng"], "group"),
    (["--role", "connector", "--ttl", "10s"], "lifetime"),
    (["--role", "connector", "--ttl", "31d"], "lifetime"),
    (["--role", "connector", "--id", "bad id!"], "id"),
])
def test_token_create_invalid(ctl, args, message):
    err = failed(ctl, "token", "create", *args)
    assert err.startswith("Failed to create token: ") and message in err, err
    assert ztnactl_json(ctl, "token", "list") == []


def test_token_create_invalid_on_the_bus(ctl):
    name, message = bus_error(ctl, "CreateToken", "sssast", "bogus", "", "", [], 0)
    assert name == INVALID_ARGS and "role" in message
    name, message = bus_error(ctl, "CreateToken", "sssast", "tunneler", "", "lab", [], 0)
    assert name == INVALID_ARGS and "network" in message
    name, _ = bus_error(ctl, "CreateToken", "sssast", "connector", "", "", [], 10 * 10**6)
    assert name == INVALID_ARGS
    name, _ = bus_error(ctl, "CreateToken", "sssast", "tunneler", "", "", [f"g{i}" for i in range(65)], 0)
    assert name == INVALID_ARGS
    name, _ = bus_error(ctl, "CreateToken", "sssast", "connector", "x" * 2000, "", [], 0)
    assert name == INVALID_ARGS
    assert ztnactl_json(ctl, "token", "list") == []


@pytest.mark.parametrize("args", [
    [],
    ["token"],
    ["token", "create"],                                   # --role is required
    ["token", "create", "--role", "connector", "--ttl", "0"],
    ["token", "create", "--role", "connector", "--ttl", "infinity"],
    ["token", "create", "--role", "connector", "--ttl", "soon"],
    ["token", "list", "--role", "connector"],               # an option of another verb
    ["token", "revoke"],
    ["token", "revoke", "a", "b"],
    ["agents", "revoke", "x", "--network", "lab"],
    ["frobnicate", "list"],
    ["token", "frobnicate"],
    ["--frobnicate", "token", "list"],
    ["token", "create", "--role"],
])
def test_usage_errors(ctl, args):
    err = failed(ctl, *args, rc=2)
    assert "--help" in err, err
    assert ztnactl_json(ctl, "token", "list") == []


# ---- agents -----------------------------------------------------------------------------------------------

def test_agents_list_and_revoke(ctl, node, tmp_path):
    assert ztnactl_json(ctl, "agents", "list") == []
    assert ctl.ztnactl("agents", "list").stdout.splitlines()[-1] == "0 agents listed."

    token = ctl.create_token("connector", network="lab")
    spiffe = f"spiffe://ztna.test/connector/con-1"
    enrolled = enroll(node, tmp_path, token, "con-1")
    assert enrolled["spiffe_id"] == spiffe

    agents = ztnactl_json(ctl, "agents", "list")
    assert len(agents) == 1
    a = agents[0]
    assert (a["spiffe_id"], a["role"], a["id"], a["status"], a["remote_network"], a["groups"]) == \
        (spiffe, "connector", "con-1", "offline", "lab", [])
    now = time.time()
    assert abs(a["enrolled_at_usec"] / 1e6 - now) < 60 and ISO_UTC.match(a["enrolled_at"])
    assert a["cert_not_after_usec"] / 1e6 > now + 1800
    assert a["revoked_at"] is None and a["revoked_at_usec"] == 0
    assert a["last_seen"] is None and a["last_seen_usec"] == 0

    assert ztnactl_json(ctl, "agents", "list", "--role", "connector") == agents
    assert ztnactl_json(ctl, "agents", "list", "--role", "tunneler") == []
    assert "Invalid role 'relay'" in failed(ctl, "agents", "list", "--role", "relay")
    assert bus_error(ctl, "ListAgents", "s", "controller")[0] == INVALID_ARGS

    human = ctl.ztnactl("agents", "list").stdout.splitlines()
    assert human[0].split()[:2] == ["SPIFFE-ID", "STATUS"] and human[-1] == "1 agent listed."
    assert human[1].split()[:2] == [spiffe, "offline"] and "never" in human[1], human

    # The token is used up, by this agent.
    t = ztnactl_json(ctl, "token", "list")[0]
    assert (t["state"], t["used_by"]) == ("used", spiffe) and t["used_at_usec"] > 0
    assert bus_error(ctl, "RevokeToken", "s", t["id"])[0] == ERROR + "TokenNotActive"

    # Revoke by the bare id, with a reason.
    ctl.ztnactl("agents", "revoke", "con-1", "--reason", "lost laptop")
    a = ztnactl_json(ctl, "agents", "list")[0]
    assert a["status"] == "revoked" and a["revoked_at_usec"] > 0
    rows = audit_rows(ctl, "agent-revoked")
    assert len(rows) == 1 and rows[0][:2] == ("root", spiffe) and "lost laptop" in rows[0][2], rows
    assert "already revoked" in failed(ctl, "agents", "revoke", spiffe)
    assert bus_error(ctl, "RevokeAgent", "ss", spiffe, "")[0] == ERROR + "AgentAlreadyRevoked"
    assert "No agent" in failed(ctl, "agents", "revoke", "con-2")
    assert bus_error(ctl, "RevokeAgent", "ss", "spiffe://ztna.test/tunneler/nope", "")[0] == \
        ERROR + "NoSuchAgent"
    assert bus_error(ctl, "RevokeAgent", "ss", "not an id", "")[0] == INVALID_ARGS
    assert bus_error(ctl, "RevokeAgent", "ss", "spiffe://ztna.test/relay", "")[0] == INVALID_ARGS
    assert bus_error(ctl, "RevokeAgent", "ss", "con-2", "bad\nreason")[0] == INVALID_ARGS


def test_agents_revoke_ambiguous_id(ctl, node, tmp_path):
    enroll(node, tmp_path, ctl.create_token("connector"), "twin")
    enroll(node, tmp_path, ctl.create_token("tunneler"), "twin")
    assert sorted(a["role"] for a in ztnactl_json(ctl, "agents", "list")) == ["connector", "tunneler"]

    err = failed(ctl, "agents", "revoke", "twin")
    assert "SPIFFE ID" in err, err
    assert bus_error(ctl, "RevokeAgent", "ss", "twin", "")[0] == ERROR + "AmbiguousAgent"
    assert all(a["status"] != "revoked" for a in ztnactl_json(ctl, "agents", "list"))

    ctl.ztnactl("agents", "revoke", "spiffe://ztna.test/tunneler/twin")
    status = {a["role"]: a["status"] for a in ztnactl_json(ctl, "agents", "list")}
    assert status == {"connector": "offline", "tunneler": "revoked"}


# ---- the CA -----------------------------------------------------------------------------------------------

def test_ca_status_and_rotation(ctl):
    status = ztnactl_json(ctl, "ca", "status")
    assert (status["trust_domain"], status["controller_id"], status["advertised_addresses"]) == \
        ("ztna.test", "ctl-1", [ctl.address])
    assert status["rotation_in_progress"] is False and status["control_streams"] == 0
    cas = {c["kind"]: c for c in status["cas"]}
    assert sorted(c["kind"] for c in status["cas"]) == ["issuing", "root"]
    root, issuing = cas["root"], cas["issuing"]
    assert root["state"] == issuing["state"] == "active"
    assert root["parent"] is None and issuing["parent"] == root["fingerprint"]
    assert root["fingerprint"] == status["root_fingerprint"]
    for c in (root, issuing):
        assert ISO_UTC.match(c["not_before"]) and c["not_before_usec"] < c["not_after_usec"]
        assert spki_sha256_of_der_certificate(base64.b64decode(c["certificate"])) == c["fingerprint"]

    human = ctl.ztnactl("ca", "status").stdout
    assert "Root rotation: none" in human and root["fingerprint"] in human
    rows = [line.split()[:2] for line in human.splitlines() if line.startswith(("root ", "issuing "))]
    assert sorted(rows) == [["issuing", "active"], ["root", "active"]], human

    assert "rotation started" in ctl.ztnactl("ca", "rotate").stdout
    status = ztnactl_json(ctl, "ca", "status")
    roots = sorted((c["state"], c["fingerprint"]) for c in status["cas"] if c["kind"] == "root")
    assert [s for s, _ in roots] == ["active", "staged"]
    assert roots[0][1] == root["fingerprint"] and roots[1][1] != root["fingerprint"]
    assert status["rotation_in_progress"] is True
    # Still pinned to the active root until the new one takes over.
    assert status["root_fingerprint"] == root["fingerprint"]
    assert "Root rotation: in progress" in ctl.ztnactl("ca", "status").stdout

    # Audited with who asked and which root was staged.
    rows = audit_rows(ctl, "ca-root-rotation")
    assert len(rows) == 1 and rows[0][:2] == ("root", roots[1][1]), rows

    err = failed(ctl, "ca", "rotate")
    assert "already in progress" in err, err
    assert bus_error(ctl, "RotateRootCA")[0] == ERROR + "RotationInProgress"
    assert len([c for c in ztnactl_json(ctl, "ca", "status")["cas"] if c["kind"] == "root"]) == 2
    assert len(audit_rows(ctl, "ca-root-rotation")) == 1


# ---- authorization ----------------------------------------------------------------------------------------

def test_bus_policy(ctl, polkit):
    """What dbus/org.ztna.Controller1.conf lets an unprivileged caller send at all."""
    ok = bus_call(ctl, "Introspect", interface="org.freedesktop.DBus.Introspectable", user=NOBODY)
    assert ok[0] == "ok" and NAME in ok[1], ok
    ok = bus_call(ctl, "Get", "ss", NAME, "TrustDomain", interface="org.freedesktop.DBus.Properties",
                  user=NOBODY)
    assert ok == ("ok", "ztna.test"), ok
    ok = bus_call(ctl, "GetAll", "s", NAME, interface="org.freedesktop.DBus.Properties", user=NOBODY)
    assert ok[0] == "ok" and ok[1]["ControllerId"] == "ctl-1", ok
    # Not listed: refused by the bus itself (the daemon never sees it).
    name, message = bus_error(ctl, "Ping", interface="org.freedesktop.DBus.Peer", user=NOBODY)
    assert name == ACCESS_DENIED and message.startswith("Rejected send message"), message
    name, message = bus_error(ctl, "Set", "ssv", NAME, "TrustDomain", "x",
                              interface="org.freedesktop.DBus.Properties", user=NOBODY)
    assert name == ACCESS_DENIED and message.startswith("Rejected send message"), message
    # Root may call anything; the same Ping goes through.
    assert bus_call(ctl, "Ping", interface="org.freedesktop.DBus.Peer")[0] == "ok"
    # Listed methods reach the daemon, where polkit decides (nothing allowed yet).
    name, message = bus_error(ctl, "ListTokens", user=NOBODY)
    assert name == ACCESS_DENIED and message == "Access denied.", message
    assert len(polkit.checks()) == 1


def test_polkit_decides_for_unprivileged_callers(ctl, polkit):
    token = ztnactl_json(ctl, "token", "create", "--role", "connector")

    # Denied: every verb fails with the daemon's message, and nothing changes.
    for args in (["token", "list"], ["token", "create", "--role", "connector"], ["token", "revoke", token["id"]],
                 ["agents", "list"], ["agents", "revoke", "con-1"], ["agents", "renew", "con-1"], ["ca", "status"],
                 ["ca", "rotate"]):
        err = failed(ctl, *args, user=NOBODY)
        assert "Access denied" in err, (args, err)
    assert [t["state"] for t in ztnactl_json(ctl, "token", "list")] == ["active"]
    assert ztnactl_json(ctl, "ca", "status")["rotation_in_progress"] is False

    # Reading allowed: listing works, changing still does not.
    polkit.allow(ACTION_READ)
    tokens = json.loads(ctl.ztnactl("token", "list", "--json", user=NOBODY).stdout)
    assert [t["id"] for t in tokens] == [token["id"]]
    assert json.loads(ctl.ztnactl("agents", "list", "--json", user=NOBODY).stdout) == []
    assert len(json.loads(ctl.ztnactl("ca", "status", "--json", user=NOBODY).stdout)["cas"]) == 2
    assert "Access denied" in failed(ctl, "token", "revoke", token["id"], user=NOBODY)

    # Managing tokens allowed: the audit actor is the caller's uid, from the bus, not from any argument.
    polkit.allow(ACTION_READ, ACTION_TOKENS)
    created = json.loads(ctl.ztnactl("token", "create", "--json", "--role", "tunneler", user=NOBODY).stdout)
    ctl.ztnactl("token", "revoke", token["id"], user=NOBODY)
    tokens = {t["id"]: t for t in ztnactl_json(ctl, "token", "list")}
    assert tokens[created["id"]]["created_by"] == f"uid:{NOBODY}"
    assert tokens[token["id"]]["state"] == "revoked"
    assert "Access denied" in failed(ctl, "ca", "rotate", user=NOBODY)
    assert "Access denied" in failed(ctl, "agents", "revoke", "con-1", user=NOBODY)

    polkit.allow(ACTION_CA, ACTION_AGENTS)
    ctl.ztnactl("ca", "rotate", user=NOBODY)
    assert ztnactl_json(ctl, "ca", "status")["rotation_in_progress"] is True
    assert [r[0] for r in audit_rows(ctl, "ca-root-rotation")] == [f"uid:{NOBODY}"]
    assert [r[0] for r in audit_rows(ctl, "token-revoked")] == [f"uid:{NOBODY}"]
    assert "No agent" in failed(ctl, "agents", "revoke", "con-1", user=NOBODY)
    assert "No agent" in failed(ctl, "agents", "renew", "con-1", user=NOBODY)

    # Each of those asked polkit with the action the method needs; revocations name what they revoke.
    checks = polkit.checks()
    for action in (ACTION_READ, ACTION_TOKENS, ACTION_AGENTS, ACTION_CA):
        assert any(a == action for a, _, _ in checks), (action, checks)
    assert any(a == ACTION_TOKENS and d == f'{{"token_id": "{token["id"]}"}}' for a, d, _ in checks), checks
    assert any(a == ACTION_AGENTS and d == '{"agent": "con-1"}' for a, d, _ in checks), checks

def test_root_is_not_asked(ctl, polkit):
    ctl.ztnactl("token", "list")
    ctl.ztnactl("token", "create", "--role", "connector")
    ctl.ztnactl("ca", "rotate")
    assert polkit.checks() == []


def test_no_polkit_means_denied(ctl):
    assert "Access denied" in failed(ctl, "token", "list", user=NOBODY)
    assert "Access denied" in failed(ctl, "token", "create", "--role", "connector", user=NOBODY)
    assert ztnactl_json(ctl, "token", "list") == []


def test_interactive_authorization_follows_no_ask_password(ctl, polkit):
    """ztnactl lets polkit ask for a password unless --no-ask-password: CheckAuthorization's flags
    argument (AllowUserInteraction = 1) says which."""
    failed(ctl, "token", "list", user=NOBODY)
    failed(ctl, "token", "list", "--no-ask-password", user=NOBODY)
    assert polkit.checks() == [(ACTION_READ, "{}", 1), (ACTION_READ, "{}", 0)]
