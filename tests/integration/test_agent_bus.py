# SPDX-License-Identifier: Apache-2.0
"""org.ztna.Connector1 and org.ztna.Tunneler1 of running agents on a private dbus-daemon whose policy
includes dbus/org.ztna.Connector1.conf and dbus/org.ztna.Tunneler1.conf (conftest.PrivateBus): the
interface as shipped (live introspection equals dbus/*.xml), properties with Get, GetAll and
PropertiesChanged, the methods with their errors, the bus policy, and polkit (python-dbusmock's polkitd
template) deciding for callers that are not root."""
import json
import queue
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import (SRC, PolkitMock, controller_agents, controller_tokens, db_query_ro,
                      token_file)

PYTHON = "/usr/bin/python3"  # Debian's python3-dbus and python3-gi
NOBODY = "nobody"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
ALREADY_ENROLLED = "org.ztna.Agent.Error.AlreadyEnrolled"
ACTION_ENROLL = "org.ztna.agent.enroll"
ACTION_ROTATE = "org.ztna.agent.rotate"
ACTION_RECONNECT = "org.ztna.agent.reconnect"
ONLINE_TIMEOUT = 15.0
SIGNAL_TIMEOUT = 15.0

PROPERTIES = ["State", "Id", "SpiffeId", "TrustDomain", "RemoteNetwork", "Groups", "Controllers", "Controller",
              "CertificateNotBefore", "CertificateNotAfter", "LastHeartbeat", "LastError", "Version", "Renewals",
              "RenewalFailures", "Reconnects", "StreamsActive", "StreamsTotal", "BytesIn", "BytesOut", "Denials",
              "Peers"]


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def ctl(controller):
    controller.init()
    controller.start()
    return controller


@pytest.fixture
def polkit(controller, tmp_path):
    if controller.bus.proc is None:
        controller.bus.start()
    mock = PolkitMock(controller.bus, tmp_path)
    try:
        yield mock
    finally:
        mock.stop()


def enrolled_online(ctl, agents, tmp_path, role="connector", id="con-1", **token_args):
    a = agents(role, id)
    t = token_file(ctl, tmp_path / f"{role}-{id}.token", role, **token_args)
    a.enroll_ok(f"--token-file={t['file']}")
    a.start()
    a.wait_state("online", ONLINE_TIMEOUT)
    return a


CALL = r"""
import json, sys, dbus
a = json.load(sys.stdin)
bus = dbus.bus.BusConnection(a["address"])
try:
    r = bus.call_blocking(a["name"], a["path"], a["interface"], a["member"], a["signature"], a["args"],
                          timeout=60)
    print(json.dumps(["ok", r], default=str))
except dbus.exceptions.DBusException as e:
    print(json.dumps(["error", e.get_dbus_name(), e.get_dbus_message()]))
"""


def bus_call(agent, member, signature="", *args, user=None, interface=None):
    """A method call with python-dbus, as root or (runuser) as another user; arguments go through stdin, not
    argv (they may be tokens). Returns ("ok", reply) or ("error", D-Bus error name, message)."""
    argv = [PYTHON, "-c", CALL]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    request = {"address": agent.bus.address, "name": agent.bus_name, "path": agent.bus_path,
               "interface": interface or agent.bus_name, "member": member, "signature": signature,
               "args": list(args)}
    p = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    return tuple(json.loads(p.stdout))


def bus_error(agent, member, signature="", *args, **kwargs):
    result = bus_call(agent, member, signature, *args, **kwargs)
    assert result[0] == "error", result
    return result[1], result[2]


WATCH = r"""
import json, sys, dbus, dbus.mainloop.glib
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(sys.argv[1])

def plain(v):
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return str(v)

def on_signal(*args, **kw):
    print(json.dumps({"interface": kw["interface"], "member": kw["member"], "args": plain(list(args))}),
          flush=True)

bus.add_signal_receiver(on_signal, path=sys.argv[2], interface_keyword="interface", member_keyword="member")
# A round trip after AddMatch: once it returns, the match is in force.
bus.call_blocking("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", "", [])
print(json.dumps({"member": "_ready"}), flush=True)
GLib.MainLoop().run()
"""


class SignalWatcher:
    """Every signal from the agent's object path, as JSON lines from a python-dbus child process."""

    def __init__(self, agent):
        self.agent = agent
        self.proc = subprocess.Popen([PYTHON, "-c", WATCH, agent.bus.address, agent.bus_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.queue = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda s: s["member"] == "_ready", 15, "the watcher to subscribe")

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(json.loads(line))
        self.queue.put(None)

    def wait(self, predicate, timeout, what):
        """The first signal (seen before or arriving) for which predicate holds."""
        for s in self.seen:
            if predicate(s):
                return s
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no signal for {what} within {timeout} s; seen: {self.seen}; "
                            f"{self.agent.run_log()[-2000:]}")
            try:
                s = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if s is None:
                self.queue.put(None)
                pytest.fail(f"the signal watcher ended: {self.proc.stderr.read()}")
            self.seen.append(s)
            if predicate(s):
                return s

    def changed(self, name, value, timeout=SIGNAL_TIMEOUT):
        """Waits for PropertiesChanged of our interface carrying name = value."""
        def match(s):
            return (s["member"] == "PropertiesChanged" and s["args"][0] == self.agent.bus_name and
                    s["args"][1].get(name) == value)
        return self.wait(match, timeout, f"PropertiesChanged {name}={value!r}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def watchers():
    started = []

    def start(agent):
        w = SignalWatcher(agent)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def normalise_introspection(text):
    """Interfaces as comparable data: members in order with their attributes, args and annotations.
    Whitespace, comments and attribute order do not matter; anything else does."""

    def element(e):
        return (e.tag, tuple(sorted(e.attrib.items())), tuple(element(c) for c in e))

    root = ET.fromstring(text)
    assert root.tag == "node"
    return {i.attrib["name"]: element(i) for i in root if i.tag == "interface"}


def shipped_properties(interface):
    """{name: signature} of the interface's properties in dbus/<interface>.xml."""
    root = ET.parse(SRC / "dbus" / f"{interface}.xml").getroot()
    iface = [i for i in root if i.tag == "interface" and i.attrib["name"] == interface]
    assert len(iface) == 1, f"dbus/{interface}.xml does not describe {interface}"
    return {p.attrib["name"]: p.attrib["type"] for p in iface[0] if p.tag == "property"}


# ---- the interface ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["connector", "tunneler"])
def test_introspection_equals_the_shipped_xml(controller, agents, role):
    # Unenrolled: the object is there (waiting for Enroll), READY=1 at once.
    a = agents(role, "x-1")
    a.make_kek()
    a.start()
    assert a.prop("State") == "unenrolled"
    live = normalise_introspection(a.busctl("introspect", "--xml-interface", a.bus_name, a.bus_path).stdout)
    shipped = normalise_introspection((SRC / "dbus" / f"{a.bus_name}.xml").read_text())
    assert a.bus_name in shipped, f"dbus/{a.bus_name}.xml does not describe {a.bus_name}"
    assert live.get(a.bus_name) == shipped[a.bus_name], f"{a.bus_name} differs from dbus/{a.bus_name}.xml"
    # Not vacuous: the members the contract names are there.
    members = {(m[0], dict(m[1])["name"]) for m in shipped[a.bus_name][2] if m[0] != "annotation"}
    assert {("method", n) for n in ("Enroll", "RotateCertificate", "RotateKey", "Reconnect")} <= members
    assert ("signal", "CertificateRotated") in members
    assert {n for kind, n in members if kind == "property"} == set(PROPERTIES)


def test_properties(ctl, agents, tmp_path):
    con = enrolled_online(ctl, agents, tmp_path, network="lab")
    tun = enrolled_online(ctl, agents, tmp_path, role="tunneler", id="tun-1", groups=("eng", "ops"))
    version = ctl.ztnactl("--version").stdout.split()[1]

    # LastHeartbeat is set by the first heartbeat; wait for it so that every value below is settled.
    deadline = time.monotonic() + 15
    while con.prop("LastHeartbeat") == 0 or tun.prop("LastHeartbeat") == 0:
        assert time.monotonic() < deadline, "LastHeartbeat still 0 after 15 s online"
        time.sleep(0.2)
    now = time.time()

    listed = controller_agents(ctl)
    for a in (con, tun):
        props = a.props()
        assert sorted(props) == sorted(PROPERTIES), sorted(props)
        assert {k: t for k, (t, _) in props.items()} == shipped_properties(a.bus_name)
        values = {k: v for k, (_, v) in props.items()}
        assert (values["State"], values["Id"], values["SpiffeId"], values["TrustDomain"]) == \
            ("online", a.id, a.spiffe_id(), "ztna.test")
        assert (values["Controllers"], values["Controller"]) == ([ctl.address], ctl.address)
        assert values["Version"] == version and values["LastError"] == ""
        assert values["CertificateNotBefore"] / 1e6 < now < values["CertificateNotAfter"] / 1e6
        assert values["CertificateNotAfter"] == listed[a.spiffe_id()]["cert_not_after_usec"]
        assert now - 15 < values["LastHeartbeat"] / 1e6 <= now + 1
        for counter in ("Renewals", "RenewalFailures", "Reconnects", "Denials", "Peers"):
            assert values[counter] == 0, (counter, values[counter])
        # Get agrees with GetAll.
        for name in ("State", "SpiffeId", "CertificateNotAfter", "Controllers", "Groups"):
            assert a.prop(name) == values[name], name
    assert (con.prop("RemoteNetwork"), con.prop("Groups")) == ("lab", [])
    assert (tun.prop("RemoteNetwork"), tun.prop("Groups")) == ("", ["eng", "ops"])


def test_properties_changed_on_state_change(ctl, agents, tmp_path, watchers):
    con = enrolled_online(ctl, agents, tmp_path)
    w = watchers(con)

    ctl.stop()
    w.changed("State", "offline")
    assert con.prop("State") == "offline"
    assert con.prop("LastError") != ""
    ctl.start()
    w.changed("State", "online", timeout=ONLINE_TIMEOUT)
    assert con.prop("State") == "online"
    assert con.prop("Reconnects") == 1
    # Version is constant: never announced.
    assert not any(s["member"] == "PropertiesChanged" and "Version" in s["args"][1] for s in w.seen), w.seen


# ---- methods, policy and polkit ---------------------------------------------------------------------------

def test_bus_policy(ctl, agents, tmp_path, polkit):
    con = enrolled_online(ctl, agents, tmp_path)
    # Everyone may read.
    ok = bus_call(con, "Get", "ss", con.bus_name, "State", interface="org.freedesktop.DBus.Properties",
                  user=NOBODY)
    assert ok == ("ok", "online"), ok
    ok = bus_call(con, "GetAll", "s", con.bus_name, interface="org.freedesktop.DBus.Properties", user=NOBODY)
    assert ok[0] == "ok" and ok[1]["SpiffeId"] == con.spiffe_id(), ok
    ok = bus_call(con, "Introspect", interface="org.freedesktop.DBus.Introspectable", user=NOBODY)
    assert ok[0] == "ok" and con.bus_name in ok[1]
    # What the policy does not list is refused by the bus itself.
    name, message = bus_error(con, "Set", "ssv", con.bus_name, "State", "online",
                              interface="org.freedesktop.DBus.Properties", user=NOBODY)
    assert name == ACCESS_DENIED and message.startswith("Rejected send message"), message
    name, message = bus_error(con, "Ping", interface="org.freedesktop.DBus.Peer", user=NOBODY)
    assert name == ACCESS_DENIED and message.startswith("Rejected send message"), message
    # Listed methods reach the daemon, where polkit (nothing allowed) says no.
    for member, action in (("RotateCertificate", ACTION_ROTATE), ("RotateKey", ACTION_ROTATE),
                           ("Reconnect", ACTION_RECONNECT)):
        name, message = bus_error(con, member, user=NOBODY)
        assert name == ACCESS_DENIED and not message.startswith("Rejected send message"), (member, message)
        assert polkit.checks()[-1] == action, polkit.checks()
    assert (con.prop("Renewals"), con.prop("Reconnects")) == (0, 0)


def test_rotate_key_needs_polkit_for_unprivileged_callers(ctl, agents, tmp_path, polkit, watchers):
    con = enrolled_online(ctl, agents, tmp_path)
    spiffe = con.spiffe_id()
    w = watchers(con)

    def public_key():
        return db_query_ro(ctl.db, "SELECT public_key FROM agents WHERE spiffe_id = ?", spiffe)[0][0]

    key0 = public_key()
    p = con.busctl("call", con.bus_name, con.bus_path, con.bus_name, "RotateKey", check=False, user=NOBODY)
    assert p.returncode != 0 and "Access denied" in p.stderr, p.stdout + p.stderr
    assert bus_error(con, "RotateKey", user=NOBODY)[0] == ACCESS_DENIED
    assert polkit.checks() == [ACTION_ROTATE, ACTION_ROTATE]
    assert con.prop("Renewals") == 0 and public_key() == key0
    assert not any(s["member"] == "CertificateRotated" for s in w.seen)

    polkit.allow(ACTION_ROTATE)
    con.busctl("call", con.bus_name, con.bus_path, con.bus_name, "RotateKey", user=NOBODY)
    s = w.wait(lambda s: s["member"] == "CertificateRotated", SIGNAL_TIMEOUT, "CertificateRotated")
    new_key, not_after = s["args"]
    assert new_key is True and not_after == con.prop("CertificateNotAfter"), s
    assert con.prop("Renewals") == 1
    # Followers see the counter and the new validity without polling.
    w.changed("Renewals", 1)
    w.changed("CertificateNotAfter", not_after)
    assert "Certificate renewed (new key)" in con.run_log()
    assert public_key() != key0, "the controller did not see a new key"
    assert con.prop("State") == "online"

    # Root is not asked about: RotateCertificate keeps the key.
    checks = len(polkit.checks())
    key1 = public_key()
    con.busctl("call", con.bus_name, con.bus_path, con.bus_name, "RotateCertificate")
    s = w.wait(lambda s: s["member"] == "CertificateRotated" and s["args"][0] is False, SIGNAL_TIMEOUT,
               "CertificateRotated(false, …)")
    assert con.prop("Renewals") == 2 and public_key() == key1
    assert "Certificate renewed (same key)" in con.run_log()
    assert len(polkit.checks()) == checks


def test_reconnect(ctl, agents, tmp_path, polkit, watchers):
    con = enrolled_online(ctl, agents, tmp_path)
    opened = ctl.log_text().count(f"Control stream of '{con.spiffe_id()}' opened")
    assert opened == 1
    polkit.allow(ACTION_RECONNECT)
    con.busctl("call", con.bus_name, con.bus_path, con.bus_name, "Reconnect", user=NOBODY)
    deadline = time.monotonic() + ONLINE_TIMEOUT
    while con.prop("Reconnects") != 1 or con.prop("State") != "online":
        assert time.monotonic() < deadline, con.run_log()[-3000:]
        time.sleep(0.1)
    assert ctl.log_text().count(f"Control stream of '{con.spiffe_id()}' opened") == 2
    assert polkit.checks() == [ACTION_RECONNECT]


def test_enroll_method(ctl, agents, tmp_path, polkit):
    # An unenrolled daemon is ready at once and waits.
    a = agents("connector", "con-1")
    a.make_kek()
    a.start()
    assert a.prop("State") == "unenrolled" and a.prop("SpiffeId") == ""
    assert a.health("/healthz") == 200 and a.health("/readyz") == 503
    assert ctl.ztnactl("health", check=False).returncode == 1
    assert not a.identity.exists()

    used = token_file(ctl, tmp_path / "used.token", "connector")
    agents("connector", "con-2").enroll_ok(f"--token-file={used['file']}")
    t = token_file(ctl, tmp_path / "t", "connector")
    secret = (tmp_path / "t").read_text().strip()

    # Unprivileged and not allowed: denied, the token is not spent.
    assert bus_error(a, "Enroll", "s", secret, user=NOBODY)[0] == ACCESS_DENIED
    assert polkit.checks() == [ACTION_ENROLL]
    assert controller_tokens(ctl)[t["id"]]["state"] == "active"
    # A refused token: an error carrying the controller's reason; still unenrolled.
    name, message = bus_error(a, "Enroll", "s", (tmp_path / "used.token").read_text().strip())
    assert "token already used" in message, (name, message)
    assert a.prop("State") == "unenrolled" and not a.identity.exists()
    assert bus_error(a, "Enroll", "s", "")[0] == "org.freedesktop.DBus.Error.InvalidArgs"

    # Allowed: the SPIFFE ID comes back and the agent goes ONLINE with it.
    polkit.allow(ACTION_ENROLL)
    assert bus_call(a, "Enroll", "s", secret, user=NOBODY) == ("ok", a.spiffe_id())
    a.wait_state("online", ONLINE_TIMEOUT)
    assert a.prop("SpiffeId") == a.spiffe_id() and a.identity.exists()
    assert controller_tokens(ctl)[t["id"]]["state"] == "used"
    assert secret not in a.log_text()

    # Once enrolled, Enroll is refused by name, and the token offered is not spent.
    other = token_file(ctl, tmp_path / "other.token", "connector")
    name, _ = bus_error(a, "Enroll", "s", (tmp_path / "other.token").read_text().strip())
    assert name == ALREADY_ENROLLED
    assert controller_tokens(ctl)[other["id"]]["state"] == "active"

    # The identity from Enroll survives a restart.
    a.stop()
    a.start()
    a.wait_state("online", ONLINE_TIMEOUT)
    assert a.prop("SpiffeId") == a.spiffe_id()


def test_ztnactl_enroll(ctl, agents, tmp_path):
    """`ztnactl enroll ROLE --token-file F` hands the token to the running agent's Enroll method and prints
    the SPIFFE ID; the errors a user meets say what to do."""
    a = agents("tunneler", "tun-1")
    a.make_kek()
    a.start()

    p = ctl.ztnactl("enroll", "tunneler", check=False)
    assert p.returncode == 2 and "--token-file" in p.stderr, p.stderr
    p = ctl.ztnactl("enroll", "tunneler", f"--token-file={tmp_path / 'missing'}", check=False)
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    (tmp_path / "empty").write_text("\n")
    p = ctl.ztnactl("enroll", "tunneler", f"--token-file={tmp_path / 'empty'}", check=False)
    assert p.returncode == 1 and "empty" in p.stderr, p.stderr
    assert a.prop("State") == "unenrolled"

    t = token_file(ctl, tmp_path / "t", "tunneler")
    secret = (tmp_path / "t").read_text().strip()
    p = ctl.ztnactl("enroll", "tunneler", f"--token-file={t['file']}")
    assert p.stdout == a.spiffe_id() + "\n", p.stdout + p.stderr
    a.wait_state("online", ONLINE_TIMEOUT)
    assert controller_tokens(ctl)[t["id"]]["state"] == "used"
    assert secret not in a.log_text()

    # Enrolled already: the daemon's refusal, and the new token is not spent.
    t2 = token_file(ctl, tmp_path / "t2", "tunneler")
    p = ctl.ztnactl("enroll", "tunneler", f"--token-file={t2['file']}", check=False)
    assert p.returncode == 1 and "already enrolled" in p.stderr.lower(), p.stderr
    assert controller_tokens(ctl)[t2["id"]]["state"] == "active"

    # No connector runs on this bus (and none can be activated): say how to start it.
    t3 = token_file(ctl, tmp_path / "t3", "connector")
    p = ctl.ztnactl("enroll", "connector", f"--token-file={t3['file']}", check=False)
    assert p.returncode == 1 and "systemctl start ztna-connector" in p.stderr, p.stderr
    p = ctl.ztnactl("--json", "enroll", "connector", f"--token-file={t3['file']}", check=False)
    assert p.returncode == 1 and p.stdout == ""


def test_user_mode_trusts_its_own_user_only(ctl, agents, tmp_path, polkit):
    """A desktop tunneler (`run --user`, on the session bus) is managed by the user running it, without
    polkit (which knows only system-wide actions); any other user is refused, and polkit is never asked."""
    a = agents("tunneler", "tun-user")
    a.make_kek()
    a.start("--user")
    t = token_file(ctl, tmp_path / "t", "tunneler")
    secret = (tmp_path / "t").read_text().strip()

    assert bus_error(a, "Enroll", "s", secret, user=NOBODY)[0] == ACCESS_DENIED
    assert polkit.checks() == []
    assert controller_tokens(ctl)[t["id"]]["state"] == "active"

    # The same user as the agent (root here): no polkit rule allows it, and none is needed.
    assert bus_call(a, "Enroll", "s", secret) == ("ok", a.spiffe_id())
    a.wait_state("online", ONLINE_TIMEOUT)
    assert bus_error(a, "Reconnect", user=NOBODY)[0] == ACCESS_DENIED
    assert bus_call(a, "Reconnect")[0] == "ok"
    assert polkit.checks() == []
