# SPDX-License-Identifier: Apache-2.0
"""ztna under a real systemd, end to end: one systemd-nspawn container (tests/systemd/nspawn.py) boots the
host's /usr, the built .deb packages are installed in it with dpkg, and the tests drive the installed units
the way an administrator would, with systemctl, ztnactl, busctl, systemd-creds and journalctl. The tests
run in order on that one container; each asserts one thing a user relies on, and a test whose
prerequisite failed is skipped naming it (the failure itself is reported once, where it happened).

Everything listens on the container's own loopback (--private-network): the controller on :8443 (gRPC,
socket-activated) and 127.0.0.1:8444 (admin), the connector's data plane on :8447, the tunneler's forward
on 127.0.0.1:18080 and SOCKS5 on 127.0.0.1:1080, the "private" web service on 127.0.0.2:8080.

What the container forbids or changes, and how the tests cope:
  - nspawn's seccomp filter makes add_key()/keyctl() fail with EPERM for every process of the container
    (root's services included; only commands entered with nsenter escape it). The agents then keep their
    KEK and identity in process memory and log a warning (checked below, and reported).
  - The same filter allows mlock() only with CAP_IPC_LOCK, which nspawn does not grant by default. The
    container is booted as nspawn makes it, so the agents run as they would in a user's container: their
    secrets stay in non-dumpable memory that may be swapped, and the warning says so and names the cause.
  - /etc starts empty (--volatile=yes): no /etc/pam.d, so runuser(1) aborts; unprivileged commands run
    with setpriv(1) (nspawn.py), which sets the same uid and gid without PAM.
  - Only a loopback (--private-network): systemd-networkd-wait-online would hold network-online.target,
    which the daemons are ordered after, for its 2 min timeout; nspawn.py masks it.
  - systemd-creds --with-key=auto refuses a host key on a tmpfs: nspawn.py puts /var/lib/systemd on disk.
  - No TPM2: the credentials are sealed with the host key only.
  - dpkg works on a copy of the host's database, whose statoverrides name groups the container's fresh
    /etc lacks (ssl-cert): nspawn.py drops those entries from the copy, or every dpkg run aborts.

Run as root with Debian's pytest: /usr/bin/python3 -m pytest tests/systemd/test_nspawn.py
"""
import base64
import json
import pathlib
import re
import time

import pytest

import nspawn

SRC = pathlib.Path(__file__).resolve().parents[2]

TRUST_DOMAIN = "nspawn.test"
CONTROLLER_ID = "ctl-1"
CONTROLLER = "127.0.0.1:8443"
CONNECTOR_ID = "conn-1"
TUNNELER_ID = "tun-1"
NETWORK = "lab"
GROUP = "laptops"
FORWARD = ("127.0.0.1", 18080)
SOCKS = ("127.0.0.1", 1080)
WEB = ("127.0.0.2", 8080)
PAGE = "hello from the private network\n"

START_TIMEOUT = 30.0     # a unit reaching active, an agent reaching State online
POLICY_TIMEOUT = 30.0    # a policy change reaching the tunneler and the connector

SERVICES = ("controller", "connector", "tunneler")
BUS = {
    "controller": ("org.ztna.Controller1", "/org/ztna/Controller1"),
    "connector": ("org.ztna.Connector1", "/org/ztna/Connector1"),
    "tunneler": ("org.ztna.Tunneler1", "/org/ztna/Tunneler1"),
}
# systemd-creds sealing modes (the first 16 bytes of a decoded credential; systemd src/shared/creds-util.h).
SEALED_CREDENTIAL_IDS = {
    "5a1c6a86df9d4096b1d5a65e0862f19a",  # host key
    "0c7cc07b117645919c4b0bea08bc20fe",  # TPM2
    "93a894094874449090caf2fc93cab553",  # host key and TPM2
}
MESSAGE_ID_ENROLLED = "559ccdf0754e4f36bcb1fdd5100d1a7a"
MESSAGE_ID_TOKEN_REFUSED = "0793a354066e45728b8618b41cc04bac"


class World:
    """The container, the packages to install and what the tests learnt so far."""

    def __init__(self, container, debs):
        self.c = container
        self.debs = debs     # package name → .deb on the host
        self.done = set()    # the steps that succeeded, for need()
        self.tokens = {}     # role → token text (a secret the state directories must not hold)

    def need(self, *steps):
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"not run: it needs the step(s) {', '.join(missing)}, which failed or did not run")

    # ---- helpers over the container ----

    def ztnactl(self, *args, check=True, user=None):
        return self.c.run("ztnactl", "--no-ask-password", *args, check=check, user=user)

    def prop(self, role, name):
        bus_name, path = BUS[role]
        p = self.c.run("busctl", "get-property", "--json=short", bus_name, path, bus_name, name)
        return json.loads(p.stdout)["data"]

    def state(self, role):
        bus_name, path = BUS[role]
        p = self.c.run("busctl", "get-property", "--json=short", bus_name, path, bus_name, "State", check=False)
        return json.loads(p.stdout)["data"] if p.returncode == 0 else f"<{p.stderr.strip()}>"

    def unit_journal(self, unit, lines=30):
        return self.c.journal("-u", unit, "-n", str(lines), "-o", "cat")

    def wait(self, what, predicate, timeout, interval=0.2, details=None):
        """Container.wait_for() failing the test (once, without the exception chain) on a timeout."""
        try:
            return self.c.wait_for(what, predicate, timeout, interval=interval, details=details)
        except nspawn.ContainerError as e:
            message = str(e)
        pytest.fail(message)

    def wait_online(self, role, timeout=START_TIMEOUT):
        seen = []

        def online():
            s = self.state(role)
            if not seen or seen[-1] != s:
                seen.append(s)
            return s == "online"

        self.wait(f"ztna-{role} State online", online, timeout,
                  details=lambda: f"states seen {seen}\n{self.unit_journal(f'ztna-{role}.service')}")

    def wait_active(self, unit, timeout=START_TIMEOUT):
        self.wait(f"{unit} active", lambda: self.c.show(unit, "ActiveState")["ActiveState"] == "active", timeout,
                  details=lambda: self.unit_journal(unit))

    def write_conf(self, name, sections):
        text = "".join(f"[{s}]\n" + "".join(f"{k}={v}\n" for k, v in items) + "\n" for s, items in sections)
        self.c.write(f"/etc/ztna/{name}", text, mode=0o644)

    def service_uid(self, role):
        return int(self.c.run("id", "-u", f"ztna-{role}").stdout)

    def main_pid(self, role):
        return int(self.c.show(f"ztna-{role}.service", "MainPID")["MainPID"])


def parse_timespan_usec(text):
    """systemd's rendering of a time span ("1min 30s", "500ms", "infinity") in microseconds."""
    if text == "infinity":
        return float("inf")
    units = {"us": 1, "ms": 1000, "s": 10**6, "min": 60 * 10**6, "h": 3600 * 10**6, "d": 86400 * 10**6}
    total = 0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(us|ms|min|s|h|d)\b", text):
        total += float(number) * units[unit]
    assert total > 0 or text in ("0", ""), f"cannot parse the time span {text!r}"
    return total


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    reason = nspawn.unavailable_reason()
    if reason:
        pytest.skip(f"cannot boot a systemd-nspawn container here: {reason}")
    debs = request.getfixturevalue("debs")
    c = nspawn.Container(f"ztna-test-{time.monotonic_ns() % 100000}", tmp_path_factory.mktemp("nspawn"))
    w = World(c, debs)
    try:
        failure = None
        try:
            c.boot()
        except nspawn.ContainerError as e:
            failure = f"the container did not boot: {e}"
        if failure:
            pytest.fail(failure)
        yield w
    finally:
        c.cleanup()


# ---- 1. the packages ------------------------------------------------------------------------------------

def test_packages_install_under_systemd(world):
    """The four .debs install with dpkg on a booted system (their Depends are met by the host's /usr), and
    their maintainer scripts create the users from sysusers.d."""
    c = world.c
    paths = [c.copy_in(world.debs[p], "/var/tmp/ztna-debs/") for p in sorted(world.debs)]
    p = c.run("dpkg", "--install", *paths, check=False, timeout=300)
    assert p.returncode == 0, f"dpkg --install failed ({p.returncode}):\n{p.stdout[-4000:]}{p.stderr[-4000:]}"
    status = c.run("dpkg-query", "--show", "--showformat=${Package} ${db:Status-Status}\n", *world.debs).stdout
    assert sorted(status.split("\n")[:-1]) == sorted(f"{p} installed" for p in world.debs), status
    for role in SERVICES:
        assert world.service_uid(role) > 0, f"no system user ztna-{role}"
    world.done.add("installed")


# ---- 2. the controller: socket activation, init --if-needed ---------------------------------------------

def listening(c):
    """The local addresses of the listening TCP sockets (ss -ltnH), as written by ss."""
    return {line.split()[3] for line in c.run("ss", "-ltnH").stdout.splitlines() if line.strip()}


def test_controller_sockets_listen_while_service_inactive(world):
    world.need("installed")
    c = world.c
    world.write_conf("controller.conf", [
        ("Controller", [("TrustDomain", TRUST_DOMAIN), ("Id", CONTROLLER_ID)]),
        ("Network", [("AdvertisedAddresses", CONTROLLER)]),
    ])
    # The packages enabled the sockets, but their ConditionPathExists= on the configuration kept them
    # from starting until now.
    c.systemctl("start", "ztna-controller.socket", "ztna-controller-admin.socket")
    found = listening(c)
    assert {"*:8443", "0.0.0.0:8443", "[::]:8443"} & found, f"nothing listens on port 8443: {found}"
    assert "127.0.0.1:8444" in found, f"nothing listens on 127.0.0.1:8444: {found}"
    assert c.show("ztna-controller.service", "ActiveState")["ActiveState"] == "inactive", \
        c.systemctl("status", "ztna-controller.service", check=False).stdout
    world.done.add("sockets")


def test_first_connection_starts_controller_and_init_creates_ca(world):
    world.need("sockets")
    c = world.c
    host, port = CONTROLLER.split(":")
    c.run("python3", "-c", f"import socket; socket.create_connection(({host!r}, {port}), 10).close()")
    world.wait_active("ztna-controller.service")
    log = c.journal("-u", "ztna-controller.service", "-o", "cat")
    # `ztna-controller init --if-needed` (ExecStartPre=) prints what it created, the CA sealed with the
    # credential ztna.kek that ztna-kek@controller.service made.
    assert re.search(r"^Root CA SPKI pin: +[0-9a-f]{64}$", log, re.M), log
    assert re.search(r"^Key protection: +credential ztna\.kek$", log, re.M), log
    status = world.ztnactl("ca", "status").stdout
    assert TRUST_DOMAIN in status, status
    world.done.add("controller")


# ---- 3. tokens, enrollment ----------------------------------------------------------------------------

def test_tokens_created_with_ztnactl(world):
    world.need("controller")
    world.ztnactl("network", "create", NETWORK)
    world.ztnactl("group", "create", GROUP)
    world.ztnactl("token", "create", "--role=connector", f"--id={CONNECTOR_ID}", f"--network={NETWORK}",
                  "--output=/root/connector.token")
    world.ztnactl("token", "create", "--role=tunneler", f"--id={TUNNELER_ID}", f"--group={GROUP}",
                  "--output=/root/tunneler.token")
    for role in ("connector", "tunneler"):
        mode = world.c.run("stat", "-c", "%a %U", f"/root/{role}.token").stdout.split()
        assert mode == ["600", "root"], f"/root/{role}.token: {mode}"
        world.tokens[role] = world.c.read(f"/root/{role}.token").strip()
    tokens = json.loads(world.ztnactl("token", "list", "--json").stdout)
    assert sorted(t["role"] for t in tokens) == ["connector", "tunneler"], tokens
    world.done.add("tokens")


def test_connector_enrolls_from_encrypted_credential(world):
    world.need("tokens")
    c = world.c
    world.write_conf("connector.conf", [("Connector", [("DataPlaneAddress", "127.0.0.1:8447")])])
    c.sh("umask 077 && systemd-creds encrypt --name=ENROLLMENT_TOKEN /root/connector.token "
         "/etc/credstore.encrypted/ztna-connector.token")
    c.systemctl("restart", "ztna-connector.service")
    world.wait_online("connector")
    assert world.prop("connector", "SpiffeId") == f"spiffe://{TRUST_DOMAIN}/connector/{CONNECTOR_ID}"
    world.done.add("connector")


def test_tunneler_enrolls_with_ztnactl_enroll(world):
    world.need("tokens")
    c = world.c
    # Read at start: written before the restart that makes the running (unenrolled) tunneler see it.
    world.write_conf("tunneler.conf", [("Tunneler", [("Forward", f"{FORWARD[0]}:{FORWARD[1]}={WEB[0]}:{WEB[1]}"),
                                                      ("SocksListen", f"{SOCKS[0]}:{SOCKS[1]}")])])
    c.systemctl("restart", "ztna-tunneler.service")
    world.wait_active("ztna-tunneler.service")
    p = world.ztnactl("enroll", "tunneler", "--token-file=/root/tunneler.token")
    assert f"spiffe://{TRUST_DOMAIN}/tunneler/{TUNNELER_ID}" in p.stdout, p.stdout
    world.wait_online("tunneler")
    world.done.add("tunneler")


# ---- 4. services, users, secrets at rest --------------------------------------------------------------

def test_services_active_under_their_own_unprivileged_users(world):
    world.need("controller", "connector", "tunneler")
    c = world.c
    for role in SERVICES:
        unit = f"ztna-{role}.service"
        show = c.show(unit, "ActiveState", "SubState", "MainPID", "DynamicUser", "User")
        assert show["ActiveState"] == "active" and show["SubState"] == "running", (unit, show)
        assert show["DynamicUser"] == "yes", (unit, show)
        status = c.read(f"/proc/{show['MainPID']}/status")
        ids = {k: v.split() for k, v in re.findall(r"^(Uid|Gid|CapEff):\s+(.*)$", status, re.M)}
        uid = world.service_uid(role)
        assert uid != 0 and ids["Uid"] == [str(uid)] * 4, (unit, ids)
        assert int(ids["CapEff"][0], 16) == 0, (unit, ids)
    world.done.add("services")


def kek(c, role):
    return c.run("systemd-creds", "decrypt", "--name=ztna.kek", f"/etc/credstore.encrypted/ztna-{role}.kek", "-",
                 text=False).stdout


def test_no_secret_readable_in_state_directories(world):
    world.need("services")
    c = world.c
    for role in SERVICES:
        key = kek(c, role)
        assert len(key) == 32, f"ztna-{role}.kek decrypts to {len(key)} bytes"
        forbidden = {"a PEM private key": b"PRIVATE KEY", "the KEK": key, "the KEK in hex": key.hex().encode()}
        forbidden.update({f"the {r} token": t.encode() for r, t in world.tokens.items()})
        # With DynamicUser=, /var/lib/ztna-ROLE is a symbolic link to private/ztna-ROLE.
        root = f"/var/lib/private/ztna-{role}"
        uid = world.service_uid(role)
        listing = c.run("find", root, "-printf", r"%y %m %U %p\n").stdout.splitlines()
        assert listing, f"{root} is empty"
        for line in listing:
            kind, mode, owner, path = line.split(" ", 3)
            assert int(owner) == uid, f"{path} is owned by uid {owner}, not ztna-{role} ({uid})"
            assert int(mode, 8) & 0o077 == 0, f"{path} has mode {mode}: group or others have access"
            assert kind in ("f", "d"), f"{path} is of type {kind}"
            if kind == "f":
                data = c.read(path, binary=True)
                for what, needle in forbidden.items():
                    assert needle not in data, f"{path} holds {what}"


def test_credential_store_holds_only_sealed_files(world):
    world.need("services")
    c = world.c
    listing = c.run("find", "/etc/credstore.encrypted", "-type", "f", "-printf", r"%m %U %p\n").stdout.splitlines()
    names = sorted(line.split()[2].rsplit("/", 1)[1] for line in listing)
    assert names == ["ztna-connector.kek", "ztna-connector.token", "ztna-controller.kek",
                     "ztna-tunneler.kek"], names
    keys = {role: kek(c, role) for role in SERVICES}
    for line in listing:
        mode, owner, path = line.split(" ", 2)
        assert owner == "0" and int(mode, 8) & 0o077 == 0, f"{path}: mode {mode}, owner uid {owner}"
        data = c.read(path, binary=True)
        header = base64.b64decode(data, validate=False)[:16].hex()
        assert header in SEALED_CREDENTIAL_IDS, f"{path} is not a systemd-creds credential (starts {data[:24]!r})"
        for role, key in keys.items():
            assert key not in data and key.hex().encode() not in data, f"{path} holds the {role} KEK in plaintext"
        for role, token in world.tokens.items():
            assert token.encode() not in data, f"{path} holds the {role} token in plaintext"


def keyring_refused_to_services(c):
    """Whether add_key() fails for a unit's process here (under nspawn's seccomp filter it does)."""
    return c.run("systemd-run", "--wait", "--pipe", "--quiet", "--property=DynamicUser=yes",
                 "keyctl", "add", "user", "ztna-probe", "x", "@p", check=False).returncode != 0


def test_agents_warn_when_the_kernel_keyring_is_refused(world):
    """DESIGN.md §7: the identity in memory lives in the kernel keyring, or, where keyctl is refused
    (containers), in non-dumpable memory — locked where mlock() is allowed — with a warning that says which.
    Which one it was here is printed (pytest -s)."""
    world.need("services")
    refused = keyring_refused_to_services(world.c)
    for role in ("connector", "tunneler"):
        entries = [json.loads(line) for line in world.c.journal("-u", f"ztna-{role}.service", "-o", "json",
                                                                "-p", "warning").splitlines()]
        warnings = [e["MESSAGE"] for e in entries
                    if isinstance(e.get("MESSAGE"), str) and e["MESSAGE"].startswith("Kernel keyring")]
        if refused:
            assert warnings and all(re.search(r"locked, non-dumpable memory|may be swapped out.*CAP_IPC_LOCK", w)
                                    for w in warnings), \
                f"ztna-{role} fell back to memory without the warning: {[e.get('MESSAGE') for e in entries]}"
        else:
            assert not warnings, warnings
        print(f"ztna-{role}: secrets in " + (f"memory ({warnings[0]})" if refused else "the kernel keyring"))


# ---- 5. a resource through the tunneler ----------------------------------------------------------------

def fetch(c, via):
    """GET / of the web service through the tunneler (via "forward" or "socks"); (exit status, output)."""
    if via == "forward":
        argv = ["curl", "-sS", "-m", "10", f"http://{FORWARD[0]}:{FORWARD[1]}/"]
    else:
        argv = ["curl", "-sS", "-m", "10", "--socks5", f"{SOCKS[0]}:{SOCKS[1]}", f"http://{WEB[0]}:{WEB[1]}/"]
    p = c.run(*argv, check=False, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_resource_reachable_through_tunneler(world):
    world.need("connector", "tunneler")
    c = world.c
    c.write("/srv/lab/index.html", PAGE)
    c.run("systemd-run", "--unit=lab-web", "--property=WorkingDirectory=/srv/lab", "--property=DynamicUser=yes",
          "python3", "-m", "http.server", "--bind", WEB[0], str(WEB[1]))
    world.wait("the web service", lambda: c.run("curl", "-sS", "-m", "2", f"http://{WEB[0]}:{WEB[1]}/",
                                                check=False).stdout == PAGE, START_TIMEOUT,
               details=lambda: world.unit_journal("lab-web.service"))
    world.ztnactl("resource", "create", "web", f"--address={WEB[0]}", f"--ports={WEB[1]}",
                  f"--network={NETWORK}")
    world.ztnactl("policy", "create", GROUP, "web")
    seen = []

    def page_arrives():
        rc, out = fetch(c, "forward")
        seen.append((rc, out[-200:]))
        return rc == 0 and out == PAGE

    world.wait("the page through the tunneler's forward", page_arrives, POLICY_TIMEOUT, interval=0.5,
               details=lambda: f"attempts {seen[-3:]}\n{world.unit_journal('ztna-tunneler.service')}\n"
                               f"{world.unit_journal('ztna-connector.service')}")
    rc, out = fetch(c, "socks")
    assert rc == 0 and out == PAGE, f"through SOCKS5: exit status {rc}: {out}"
    # The connector relayed them (its journal; the StreamsTotal property is only refreshed at heartbeats).
    log = c.journal("-u", "ztna-connector.service", "-o", "cat")
    granted = re.findall(rf"to {re.escape(WEB[0])}:{WEB[1]} granted by resource 'web'", log)
    assert len(granted) >= 2, log
    world.done.add("resource")


# ---- 6. D-Bus -----------------------------------------------------------------------------------------

def test_busctl_introspect_and_get_property(world):
    world.need("services")
    c = world.c
    version = world.ztnactl("--version").stdout.split()[-1]
    for role in SERVICES:
        bus_name, path = BUS[role]
        intro = c.run("busctl", "introspect", "--no-pager", bus_name, path, bus_name).stdout
        assert re.search(r"^\.Version\s+property\s+s\s", intro, re.M), intro
        assert world.prop(role, "Version") == version, (role, version)
    assert world.prop("controller", "TrustDomain") == TRUST_DOMAIN
    assert world.prop("tunneler", "SpiffeId") == f"spiffe://{TRUST_DOMAIN}/tunneler/{TUNNELER_ID}"


# ---- 7. polkit ----------------------------------------------------------------------------------------

DENIED = re.compile(r"access denied|interactive authentication required|not authorized", re.I)


def assert_denied_by_polkit(stderr):
    """polkit answered "no" (or "only after authentication"), rather than refusing to answer: polkit lets a
    daemon that is not root ask about another user's process only for actions naming the daemon's user
    in their org.freedesktop.policykit.owner annotation."""
    assert "trusted callers" not in stderr, \
        f"polkit refused to answer the daemon (is its user an owner of the action?): {stderr}"
    assert DENIED.search(stderr), stderr


def test_polkit_denies_unprivileged_user_and_allows_root(world):
    world.need("services")
    c = world.c
    bus_name, path = BUS["connector"]
    p = c.run("busctl", "call", bus_name, path, bus_name, "Reconnect", check=False, user="nobody")
    assert p.returncode != 0, "nobody could make the connector reconnect"
    assert_denied_by_polkit(p.stderr)
    p = world.ztnactl("network", "create", "not-allowed", user="nobody", check=False)
    assert p.returncode != 0, "nobody could create a network"
    assert_denied_by_polkit(p.stderr)
    assert "not-allowed" not in world.ztnactl("network", "list").stdout
    # Root is allowed: the same calls succeed.
    c.run("busctl", "call", bus_name, path, bus_name, "Reconnect")
    world.ztnactl("network", "create", "allowed")
    world.ztnactl("network", "delete", "allowed")
    world.wait_online("connector")


# ---- 8. the journal catalog ---------------------------------------------------------------------------

def catalog_entry(message_id):
    """(subject, body) of an entry of catalog/ztna.catalog."""
    text = (SRC / "catalog" / "ztna.catalog").read_text()
    m = re.search(rf"^-- {message_id}\n(.*?)(?=^-- [0-9a-f]{{32}}\n|\Z)", text, re.M | re.S)
    assert m, f"no entry {message_id} in catalog/ztna.catalog"
    headers, _, body = m.group(1).partition("\n\n")
    subject = re.search(r"^Subject: (.*)$", headers, re.M).group(1)
    return subject, body.strip()


def test_journal_explains_the_enrollment_with_catalog_text(world):
    world.need("connector")
    c = world.c
    entry = json.loads(c.journal("-u", "ztna-controller.service", f"MESSAGE_ID={MESSAGE_ID_ENROLLED}",
                                 "ZTNA_ROLE=connector", "-o", "json", "-n", "1").splitlines()[-1])
    subject, body = catalog_entry(MESSAGE_ID_ENROLLED)

    def render(template):
        return re.sub(r"@([A-Z0-9_]+)@", lambda m: str(entry.get(m.group(1), m.group(0))), template)

    shown = c.journal("-x", "-u", "ztna-controller.service", f"MESSAGE_ID={MESSAGE_ID_ENROLLED}",
                      "ZTNA_ROLE=connector")
    explained = " ".join(line.lstrip("░ ").strip() for line in shown.splitlines() if line.startswith("░░"))
    words = " ".join(explained.split())
    for part in (f"Subject: {render(subject)}", render(body)):
        assert " ".join(part.split()) in words, f"journalctl -x does not show {part!r}:\n{shown}"


# ---- 9. identity across restarts ----------------------------------------------------------------------

def test_restart_keeps_the_connector_identity(world):
    world.need("connector")
    c = world.c
    spiffe_id = world.prop("connector", "SpiffeId")
    agents_before = json.loads(world.ztnactl("agents", "list", "--json").stdout)
    c.systemctl("restart", "ztna-connector.service")
    world.wait_online("connector")
    assert world.prop("connector", "SpiffeId") == spiffe_id
    invocation = c.show("ztna-connector.service", "InvocationID")["InvocationID"]
    log = c.journal(f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat")
    assert not re.search(r"Enrolled as|enrolling with the token", log), \
        f"the restarted connector enrolled again:\n{log}"
    # Its spent token is still in the credential store: it must not even have been offered again.
    refused = c.journal("-u", "ztna-controller.service", f"MESSAGE_ID={MESSAGE_ID_TOKEN_REFUSED}", "-o", "cat")
    assert refused.strip() in ("", "-- No entries --"), refused
    agents_after = json.loads(world.ztnactl("agents", "list", "--json").stdout)
    assert len(agents_after) == len(agents_before), (agents_before, agents_after)


# ---- 10. clean stops ----------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["tunneler", "connector", "controller"])
def test_stop_is_clean_within_the_timeout(world, role):
    world.need("services")
    c = world.c
    unit = f"ztna-{role}.service"
    assert c.show(unit, "ActiveState")["ActiveState"] == "active"
    timeout = parse_timespan_usec(c.show(unit, "TimeoutStopUSec")["TimeoutStopUSec"])
    start = time.monotonic()
    c.systemctl("stop", unit, timeout=timeout / 1e6 + 30)
    took = (time.monotonic() - start) * 1e6
    show = c.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "ActiveExitTimestampMonotonic",
                  "InactiveEnterTimestampMonotonic")
    assert show["ActiveState"] == "inactive" and show["Result"] == "success", (unit, show)
    # ExecMainCode is a CLD_* code: 1 (CLD_EXITED), not killed by a signal or dumped.
    assert show["ExecMainCode"] == "1" and show["ExecMainStatus"] == "0", (unit, show)
    stopping = int(show["InactiveEnterTimestampMonotonic"]) - int(show["ActiveExitTimestampMonotonic"])
    assert 0 <= stopping < timeout and took < timeout, (unit, stopping, took, timeout)
