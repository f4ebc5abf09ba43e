# SPDX-License-Identifier: Apache-2.0
"""The access policy model (networks, resources, groups, memberships, policies) through org.ztna.Controller1
and `ztnactl network|resource|group|policy`, against a real `ztna-controller run` on a private dbus-daemon
whose policy includes dbus/org.ztna.Controller1.conf: what is stored (canonical form, names verbatim), every
refusal with its D-Bus error name, its message and ztnactl's exit status, PolicyRevision, the audit trail,
and polkit (python-dbusmock's polkitd template) deciding for callers that are not root.

Agents are enrolled by grpc-js (tests/interop/enroll-client.js), the way an agent enrolls."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import CALL_TIMEOUT, INTEROP, PolkitMock

NAME = "org.ztna.Controller1"
PATH = "/org/ztna/Controller1"
ERROR = "org.ztna.Controller1.Error."
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
NOBODY = 65534
PYTHON = "/usr/bin/python3"

ACTION_READ = "org.ztna.controller.read"
ACTION_POLICY = "org.ztna.controller.manage-policy"
POLICY_CHANGED_ID = "a6968a05597f44ad89e3f90e901b4051"

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HUMAN_UTC = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def ctl(controller):
    controller.init()
    controller.start()
    return controller


def ztnactl_json(ctl, *args, **kwargs):
    return json.loads(ctl.ztnactl(*args, "--json", **kwargs).stdout)


def ok(ctl, *args, **kwargs):
    """A verb that changes something: exit 0 and nothing on stdout or stderr."""
    p = ctl.ztnactl(*args, **kwargs)
    assert (p.stdout, p.stderr) == ("", ""), (args, p.stdout, p.stderr)


def failed(ctl, *args, rc=1, user=None):
    """Runs ztnactl expecting exit status rc and nothing on stdout; returns stderr without its newline."""
    p = ctl.ztnactl(*args, check=False, user=user)
    assert p.returncode == rc, f"ztnactl {' '.join(map(str, args))}: exit {p.returncode}, wanted {rc}: " \
                               f"{p.stdout}{p.stderr}"
    assert p.stdout == "", p.stdout
    return p.stderr.rstrip("\n")


def bus_call(ctl, member, signature="", *args, user=None):
    """A method call with python-dbus (as root, or as another uid): ("ok", reply) or ("error", name, message)."""
    script = f"""
import json, sys, dbus
bus = dbus.bus.BusConnection({ctl.bus.address!r})
try:
    r = bus.call_blocking({NAME!r}, {PATH!r}, {NAME!r}, {member!r}, {signature!r}, json.loads(sys.argv[1]),
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


def revision(ctl):
    p = ctl.busctl("get-property", "--json=short", NAME, PATH, NAME, "PolicyRevision")
    data = json.loads(p.stdout)
    assert data["type"] == "t"
    return data["data"]


def audit_rows(ctl, event="policy-changed"):
    """(actor, subject, detail as a dict) of the audit rows of one kind, read-only through SQLite."""
    con = sqlite3.connect(f"file:{ctl.db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT actor, subject, detail FROM audit WHERE event = ? ORDER BY seq",
                           (event,)).fetchall()
    finally:
        con.close()
    return [(a, s, json.loads(d) if d else None) for a, s, d in rows]


def enroll(node, tmp_path, ctl, role, agent_id, network=None):
    """Enrolls an agent with a fresh token (grpc-js); returns its SPIFFE ID."""
    d = tmp_path / f"agent-{role}-{agent_id}"
    d.mkdir()
    token_file = d / "token"
    token_file.write_text(ctl.create_token(role, network=network) + "\n")
    token_file.chmod(0o600)
    p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "enroll", "--token-file", str(token_file),
                        "--id", agent_id, "--key-out", str(d / "key.pem"), "--cert-out", str(d / "chain.pem"),
                        "--bundle-out", str(d / "roots.pem")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"enroll-client failed ({p.returncode}): {p.stdout}{p.stderr}"
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return result["spiffe_id"]


def resources(ctl, *args):
    return {r["name"]: r for r in ztnactl_json(ctl, "resource", "list", *args)}


def groups(ctl):
    return {g["name"]: g for g in ztnactl_json(ctl, "group", "list")}


def policies(ctl):
    return [(p["group"], p["resource"]) for p in ztnactl_json(ctl, "policy", "list")]


def agent_groups(ctl):
    return {a["spiffe_id"]: a["groups"] for a in ztnactl_json(ctl, "agents", "list")}


@pytest.fixture
def lab(ctl):
    """A network "lab" with a resource "web" (10.0.0.10, tcp 443) and a group "eng"."""
    ok(ctl, "network", "create", "lab")
    ok(ctl, "resource", "create", "web", "--address", "10.0.0.10", "--network", "lab", "--ports", "443",
       "--protocol", "tcp")
    ok(ctl, "group", "create", "eng")
    return ctl


@pytest.fixture
def polkit(ctl, tmp_path):
    mock = PolkitMock(ctl.bus, tmp_path)
    try:
        yield mock
    finally:
        mock.stop()


# ---- networks ---------------------------------------------------------------------------------------------

def test_network_create_list_delete(ctl):
    assert ztnactl_json(ctl, "network", "list") == []
    assert ctl.ztnactl("network", "list").stdout.splitlines() == ["NAME  DESCRIPTION  CREATED", "",
                                                                   "0 networks listed."]

    before = time.time()
    ok(ctl, "network", "create", "lab", "--description", "The lab in building 2")
    ok(ctl, "network", "create", "dmz")
    networks = ztnactl_json(ctl, "network", "list")
    assert [(n["name"], n["description"]) for n in networks] == [("dmz", None), ("lab", "The lab in building 2")]
    for n in networks:
        assert ISO_UTC.match(n["created_at"]) and abs(n["created_at_usec"] / 1e6 - before) < 60

    human = ctl.ztnactl("network", "list").stdout.splitlines()
    assert human[0].split() == ["NAME", "DESCRIPTION", "CREATED"] and human[-1] == "2 networks listed."
    assert human[1].startswith("dmz  ") and " -  " in human[1] and HUMAN_UTC.search(human[1]), human
    assert human[2].startswith("lab  ") and "The lab in building 2" in human[2], human
    # Without the legend: the rows alone (columns sized to them).
    assert [line.split("  ")[0] for line in ctl.ztnactl("network", "list", "--no-legend").stdout.splitlines()] == \
        ["dmz", "lab"]

    assert failed(ctl, "network", "create", "lab") == "Failed to create network: Network 'lab' already exists."
    assert bus_error(ctl, "CreateNetwork", "ss", "lab", "") == (ERROR + "AlreadyExists",
                                                                  "Network 'lab' already exists.")
    ok(ctl, "network", "delete", "dmz")
    assert [n["name"] for n in ztnactl_json(ctl, "network", "list")] == ["lab"]
    assert failed(ctl, "network", "delete", "dmz") == "Failed to delete network: No network 'dmz'."
    assert bus_error(ctl, "DeleteNetwork", "s", "dmz") == (ERROR + "NoSuchNetwork", "No network 'dmz'.")


def test_network_in_use(lab, node, tmp_path):
    ctl = lab
    assert failed(ctl, "network", "delete", "lab") == \
        "Failed to delete network: Network 'lab' still has 1 resource: delete it first."
    assert bus_error(ctl, "DeleteNetwork", "s", "lab")[0] == ERROR + "NetworkInUse"
    ok(ctl, "resource", "delete", "web")

    # A connector that joined it holds it too, until revoked.
    connector = enroll(node, tmp_path, ctl, "connector", "con-1", network="lab")
    assert failed(ctl, "network", "delete", "lab") == \
        "Failed to delete network: Network 'lab' still has connectors: revoke them first."
    assert [n["name"] for n in ztnactl_json(ctl, "network", "list")] == ["lab"]
    ctl.ztnactl("agents", "revoke", connector)
    ok(ctl, "network", "delete", "lab")
    assert ztnactl_json(ctl, "network", "list") == []


# ---- resources --------------------------------------------------------------------------------------------

def test_resource_create_list_delete(ctl):
    ok(ctl, "network", "create", "lab")
    ok(ctl, "network", "create", "office")
    ok(ctl, "resource", "create", "proxmox", "--address", "192.168.1.100", "--network", "lab", "--ports", "8006",
       "--protocol", "tcp", "--alias", "pve.lab")
    ok(ctl, "resource", "create", "printers", "--address", "10.1.0.0/16", "--network", "office")

    assert resources(ctl) == {
        "printers": {"name": "printers", "address": "10.1.0.0/16", "protocol": "any", "ports": "any",
                     "network": "office", "alias": None, "groups": []},
        "proxmox": {"name": "proxmox", "address": "192.168.1.100", "protocol": "tcp", "ports": "8006",
                    "network": "lab", "alias": "pve.lab", "groups": []},
    }
    assert list(resources(ctl, "--network", "lab")) == ["proxmox"]
    assert list(resources(ctl, "--network", "office")) == ["printers"]

    human = ctl.ztnactl("resource", "list").stdout.splitlines()
    assert human[0].split() == ["NAME", "ADDRESS", "PROTOCOL", "PORTS", "NETWORK", "ALIAS", "GROUPS"]
    assert human[1].split() == ["printers", "10.1.0.0/16", "any", "any", "office", "-", "-"], human
    assert human[2].split() == ["proxmox", "192.168.1.100", "tcp", "8006", "lab", "pve.lab", "-"], human
    assert human[-1] == "2 resources listed."
    assert ctl.ztnactl("resource", "list", "--network", "lab", "--no-legend").stdout.split() == \
        ["proxmox", "192.168.1.100", "tcp", "8006", "lab", "pve.lab", "-"]

    # Listing a network that does not exist is an error, not an empty list that hides a typo.
    assert failed(ctl, "resource", "list", "--network", "lba") == "Failed to list resources: No network 'lba'."
    assert bus_error(ctl, "ListResources", "s", "lba") == (ERROR + "NoSuchNetwork", "No network 'lba'.")
    ok(ctl, "network", "create", "empty")
    assert ztnactl_json(ctl, "resource", "list", "--network", "empty") == []

    assert failed(ctl, "resource", "create", "proxmox", "--address", "10.0.0.1", "--network", "lab") == \
        "Failed to create resource: Resource 'proxmox' already exists."
    assert bus_error(ctl, "CreateResource", "ssssss", "proxmox", "10.0.0.1", "", "", "lab", "")[0] == \
        ERROR + "AlreadyExists"
    assert resources(ctl)["proxmox"]["address"] == "192.168.1.100"

    ok(ctl, "resource", "delete", "printers")
    assert list(resources(ctl)) == ["proxmox"]
    assert failed(ctl, "resource", "delete", "printers") == "Failed to delete resource: No resource 'printers'."
    assert bus_error(ctl, "DeleteResource", "s", "printers") == (ERROR + "NoSuchResource",
                                                                   "No resource 'printers'.")


@pytest.mark.parametrize("args,address,protocol,ports,alias", [
    (["--address", "10.0.0.1/32"], "10.0.0.1", "any", "any", None),
    (["--address", "10.0.0.0/8"], "10.0.0.0/8", "any", "any", None),
    (["--address", "DB.Lab.Example"], "db.lab.example", "any", "any", None),
    (["--address", "db.lab.example."], "db.lab.example", "any", "any", None),
    (["--address", "*.LAB.example"], "*.lab.example", "any", "any", None),
    (["--address", "FD00:0:0::5"], "fd00::5", "any", "any", None),
    (["--address", "fd00::5/128"], "fd00::5", "any", "any", None),
    (["--address", "FD00::/64"], "fd00::/64", "any", "any", None),
    (["--address", "nas"], "nas", "any", "any", None),
    (["--address", "10.0.0.1", "--ports", " 22, 80-90 "], "10.0.0.1", "any", "22,80-90", None),
    (["--address", "10.0.0.1", "--ports", "90,80-89,22,23"], "10.0.0.1", "any", "22-23,80-90", None),
    (["--address", "10.0.0.1", "--ports", "1-65535"], "10.0.0.1", "any", "any", None),
    (["--address", "10.0.0.1", "--ports", ""], "10.0.0.1", "any", "any", None),
    (["--address", "10.0.0.1", "--ports", "*"], "10.0.0.1", "any", "any", None),
    (["--address", "10.0.0.1", "--protocol", ""], "10.0.0.1", "any", "any", None),
    (["--address", "10.0.0.1", "--protocol", "TCP"], "10.0.0.1", "tcp", "any", None),
    (["--address", "10.0.0.1", "--protocol", "udp"], "10.0.0.1", "udp", "any", None),
    (["--address", "10.0.0.1", "--alias", "DB.Lab."], "10.0.0.1", "any", "any", "db.lab"),
])
def test_resource_canonical_form(ctl, args, address, protocol, ports, alias):
    ok(ctl, "network", "create", "lab")
    ok(ctl, "resource", "create", "r", "--network", "lab", *args)
    r = resources(ctl)["r"]
    assert (r["address"], r["protocol"], r["ports"], r["alias"]) == (address, protocol, ports, alias)
    # The audit record holds the canonical values too.
    detail = audit_rows(ctl)[-1][2]
    assert (detail["change"], detail["address"], detail["protocol"], detail["ports"], detail.get("alias")) == \
        ("resource-created", address, protocol, ports, alias)


@pytest.mark.parametrize("args,message", [
    (["--address", "10.0.0.1/24"], "Invalid address '10.0.0.1/24': host bits set (use the network address)."),
    # The reasons are policy.c's (tests/unit/test-policy.c pins them): here, that they reach the user.
    (["--address", "10.0.0.0/33"], "Invalid address '10.0.0.0/33': "),
    (["--address", "300.1.1.1/8"], "Invalid address '300.1.1.1/8': "),
    (["--address", ""], "Invalid address '': "),
    (["--address", "*.example"], "Invalid address '*.example': "),
    (["--address", "bad host"], "Invalid address 'bad host': "),
    (["--address", "10.0.0.1", "--ports", "0"], "Invalid ports '0': port 0 is not a port."),
    (["--address", "10.0.0.1", "--ports", "22,0"], "Invalid ports '22,0': port 0 is not a port."),
    (["--address", "10.0.0.1", "--ports", "70000"], "Invalid ports '70000': "),
    (["--address", "10.0.0.1", "--ports", "90-80"], "Invalid ports '90-80': "),
    (["--address", "10.0.0.1", "--ports", "22,,80"], "Invalid ports '22,,80': "),
    (["--address", "10.0.0.1", "--ports", "ssh"], "Invalid ports 'ssh': "),
    (["--address", "10.0.0.1", "--protocol", "icmp"], "Invalid protocol 'icmp': expected tcp, udp or any."),
    (["--address", "10.0.0.1", "--alias", "*.lab.example"],
     "Invalid alias '*.lab.example': expected a host name such as db.lab.example."),
    (["--address", "10.0.0.1", "--alias", "10.0.0.2"],
     "Invalid alias '10.0.0.2': expected a host name such as db.lab.example."),
])
def test_resource_invalid_values(ctl, args, message):
    ok(ctl, "network", "create", "lab")
    rev = revision(ctl)
    err = failed(ctl, "resource", "create", "r", "--network", "lab", *args)
    if message.endswith(": "):
        # …and some reason, as a sentence.
        assert err.startswith("Failed to create resource: " + message) and err.endswith("."), err
        assert len(err) > len("Failed to create resource: " + message) + 5, err
    else:
        assert err == "Failed to create resource: " + message
    assert resources(ctl) == {}
    assert revision(ctl) == rev


def test_resource_invalid_on_the_bus(ctl):
    ok(ctl, "network", "create", "lab")
    rev = revision(ctl)
    cases = [
        (["r", "10.0.0.1/24", "", "", "lab", ""],
         "Invalid address '10.0.0.1/24': host bits set (use the network address)."),
        (["r", "10.0.0.1", "", "0", "lab", ""], "Invalid ports '0': port 0 is not a port."),
        (["", "10.0.0.1", "", "", "lab", ""], "Invalid resource name '': empty."),
        ([" r", "10.0.0.1", "", "", "lab", ""], "Invalid resource name ' r': starts or ends with whitespace."),
        (["r" * 129, "10.0.0.1", "", "", "lab", ""], "Invalid resource name '" + "r" * 64 +
         "…': longer than 128 bytes."),
        # Control characters are never echoed: they could rewrite a terminal or forge a log line.
        (["a\x1b[2Jb\nc", "10.0.0.1", "", "", "lab", ""],
         "Invalid resource name 'a?[2Jb?c': contains control characters."),
        (["r", "10.0.0.1\n", "", "", "lab", ""], "Invalid address '10.0.0.1?': "),
        (["r", "10.0.0.1", "", "", "", ""], "Invalid network name '': empty."),
    ]
    for args, message in cases:
        name, msg = bus_error(ctl, "CreateResource", "ssssss", *args)
        assert name == INVALID_ARGS and msg.startswith(message), (args, msg)
    # Several fields wrong: the first one is named.
    assert bus_error(ctl, "CreateResource", "ssssss", "r", "x/1", "icmp", "0", "lab", "")[1].startswith(
        "Invalid address 'x/1'")
    # A unicode name cut at 64 bytes is cut at a character boundary.
    msg = bus_error(ctl, "CreateResource", "ssssss", "é" * 100, "10.0.0.1", "", "", "lab", "")[1]
    assert msg == "Invalid resource name '" + "é" * 32 + "…': longer than 128 bytes.", msg
    assert resources(ctl) == {} and revision(ctl) == rev


def test_resource_unknown_network(ctl):
    ok(ctl, "network", "create", "lab")
    rev = revision(ctl)
    assert failed(ctl, "resource", "create", "r", "--address", "10.0.0.1", "--network", "lba") == \
        "Failed to create resource: No network 'lba'."
    assert bus_error(ctl, "CreateResource", "ssssss", "r", "10.0.0.1", "", "", "lba", "") == \
        (ERROR + "NoSuchNetwork", "No network 'lba'.")
    assert resources(ctl) == {} and revision(ctl) == rev


def test_resource_update(lab):
    ctl = lab
    ok(ctl, "network", "create", "dmz")
    ok(ctl, "resource", "update", "web", "--ports", "443, 8443", "--alias", "Web.Lab")
    assert resources(ctl)["web"] == {"name": "web", "address": "10.0.0.10", "protocol": "tcp",
                                     "ports": "443,8443", "network": "lab", "alias": "web.lab", "groups": []}
    ok(ctl, "resource", "update", "web", "--address", "10.0.0.0/24", "--network", "dmz", "--protocol", "any")
    assert resources(ctl)["web"] == {"name": "web", "address": "10.0.0.0/24", "protocol": "any",
                                     "ports": "443,8443", "network": "dmz", "alias": "web.lab", "groups": []}
    ok(ctl, "resource", "update", "web", "--alias", "")
    assert resources(ctl)["web"]["alias"] is None
    detail = audit_rows(ctl)[-1][2]
    assert detail["change"] == "resource-updated" and "alias" not in detail, detail

    # An update that changes nothing is no new revision.
    rev = revision(ctl)
    ok(ctl, "resource", "update", "web", "--ports", "8443,443")
    assert revision(ctl) == rev

    # Refusals leave the resource as it was.
    before = resources(ctl)["web"]
    assert failed(ctl, "resource", "update", "web", "--ports", "0") == \
        "Failed to update resource: Invalid ports '0': port 0 is not a port."
    assert failed(ctl, "resource", "update", "web", "--network", "lba") == \
        "Failed to update resource: No network 'lba'."
    assert bus_error(ctl, "UpdateResource", "ssssss", "web", "10.0.0.1", "", "", "lba", "") == \
        (ERROR + "NoSuchNetwork", "No network 'lba'.")
    assert failed(ctl, "resource", "update", "nope", "--ports", "22") == \
        "Failed to update resource: No resource 'nope'."
    assert bus_error(ctl, "UpdateResource", "ssssss", "nope", "10.0.0.1", "", "", "lab", "") == \
        (ERROR + "NoSuchResource", "No resource 'nope'.")
    assert "needs at least one of --network --address --ports --protocol --alias." in \
        failed(ctl, "resource", "update", "web", rc=2)
    assert resources(ctl)["web"] == before and revision(ctl) == rev


def test_sql_metacharacters_are_just_text(ctl):
    names = ["x'); DROP TABLE resources; --", 'a "quoted" name', "100% _done_ \\", "; SELECT * FROM audit",
             "café ☕ 'n' \"ř\"", "*", "?1"]
    for i, name in enumerate(names):
        ok(ctl, "network", "create", name, "--description", f"{name} -- described")
        ok(ctl, "resource", "create", name, "--address", f"10.0.0.{i + 1}", "--network", name)
        ok(ctl, "group", "create", name, "--description", name)
        ok(ctl, "policy", "create", name, name)

    assert sorted((n["name"], n["description"]) for n in ztnactl_json(ctl, "network", "list")) == \
        sorted((n, f"{n} -- described") for n in names)
    assert sorted(resources(ctl)) == sorted(names)
    for name in names:
        assert resources(ctl)[name]["network"] == name and resources(ctl)[name]["groups"] == [name]
        assert groups(ctl)[name]["resources"] == [name] and groups(ctl)[name]["description"] == name
    assert sorted(policies(ctl)) == sorted((n, n) for n in names)
    human = ctl.ztnactl("resource", "list").stdout
    assert all(n in human for n in names)

    # Only exact names match: no pattern, no injection.
    assert failed(ctl, "resource", "delete", "%") == "Failed to delete resource: No resource '%'."
    ok(ctl, "policy", "delete", names[0], names[0])
    ok(ctl, "resource", "delete", names[0])
    assert sorted(resources(ctl)) == sorted(names[1:])
    assert len(policies(ctl)) == len(names) - 1


# ---- groups and membership --------------------------------------------------------------------------------

def test_group_create_list_delete(ctl):
    ok(ctl, "group", "create", "eng", "--description", "Engineers")
    ok(ctl, "group", "create", "ops")
    assert ztnactl_json(ctl, "group", "list") == [
        {"name": "eng", "description": "Engineers", "members": [], "resources": []},
        {"name": "ops", "description": None, "members": [], "resources": []},
    ]
    human = ctl.ztnactl("group", "list").stdout.splitlines()
    assert human[0].split() == ["NAME", "DESCRIPTION", "MEMBERS", "RESOURCES"] and human[-1] == "2 groups listed."
    assert human[1].split() == ["eng", "Engineers", "-", "-"] and human[2].split() == ["ops", "-", "-", "-"]

    assert failed(ctl, "group", "create", "eng") == "Failed to create group: Group 'eng' already exists."
    assert bus_error(ctl, "CreateGroup", "ss", "eng", "")[0] == ERROR + "AlreadyExists"
    assert bus_error(ctl, "CreateGroup", "ss", "x", "bad\ndescription") == \
        (INVALID_ARGS, "Description contains control characters.")
    assert bus_error(ctl, "CreateGroup", "ss", "x", "d" * 1025) == \
        (INVALID_ARGS, "Description is longer than 1024 bytes.")
    ok(ctl, "group", "delete", "ops")
    assert list(groups(ctl)) == ["eng"]
    assert failed(ctl, "group", "delete", "ops") == "Failed to delete group: No group 'ops'."
    assert bus_error(ctl, "DeleteGroup", "s", "ops") == (ERROR + "NoSuchGroup", "No group 'ops'.")


def test_group_membership_only_for_tunnelers(lab, node, tmp_path):
    ctl = lab
    laptop = enroll(node, tmp_path, ctl, "tunneler", "laptop")
    phone = enroll(node, tmp_path, ctl, "tunneler", "phone")
    connector = enroll(node, tmp_path, ctl, "connector", "con-1", network="lab")
    # A connector and a tunneler with the same id: the bare id still names one tunneler.
    enroll(node, tmp_path, ctl, "connector", "twin", network="lab")
    twin = enroll(node, tmp_path, ctl, "tunneler", "twin")
    ok(ctl, "group", "create", "ops")

    ok(ctl, "group", "add-member", "eng", "laptop")          # bare id
    ok(ctl, "group", "add-member", "eng", phone)             # SPIFFE ID
    ok(ctl, "group", "add-member", "ops", "laptop")
    ok(ctl, "group", "add-member", "ops", "twin")
    g = groups(ctl)
    assert sorted(g["eng"]["members"]) == sorted([laptop, phone])
    assert sorted(g["ops"]["members"]) == sorted([laptop, twin])
    a = agent_groups(ctl)
    assert sorted(a[laptop]) == ["eng", "ops"] and a[phone] == ["eng"] and a[twin] == ["ops"]
    assert a[connector] == []
    human = ctl.ztnactl("group", "list", "--no-legend").stdout.splitlines()
    assert human[0].split()[0] == "eng" and laptop in human[0] and phone in human[0], human

    # Refusals, with their names, and nothing changed.
    rev = revision(ctl)
    assert failed(ctl, "group", "add-member", "eng", "laptop") == \
        f"Failed to add group member: '{laptop}' is already a member of group 'eng'."
    assert bus_error(ctl, "AddGroupMember", "ss", "eng", laptop)[0] == ERROR + "AlreadyMember"
    assert failed(ctl, "group", "add-member", "eng", "con-1") == \
        "Failed to add group member: Agent 'con-1' is not a tunneler: only tunnelers belong to groups."
    assert bus_error(ctl, "AddGroupMember", "ss", "eng", connector)[0] == ERROR + "NotATunneler"
    assert failed(ctl, "group", "add-member", "eng", "tablet") == "Failed to add group member: No agent 'tablet'."
    assert bus_error(ctl, "AddGroupMember", "ss", "eng", "spiffe://ztna.test/tunneler/tablet") == \
        (ERROR + "NoSuchAgent", "No agent 'spiffe://ztna.test/tunneler/tablet'.")
    assert failed(ctl, "group", "add-member", "sales", "laptop") == "Failed to add group member: No group 'sales'."
    assert bus_error(ctl, "AddGroupMember", "ss", "sales", "laptop")[0] == ERROR + "NoSuchGroup"
    assert bus_error(ctl, "AddGroupMember", "ss", "eng", "not an id")[0] == INVALID_ARGS
    assert bus_error(ctl, "AddGroupMember", "ss", "eng", "spiffe://other.test/x")[0] == INVALID_ARGS
    assert failed(ctl, "group", "remove-member", "ops", "phone") == \
        f"Failed to remove group member: '{phone}' is not a member of group 'ops'."
    assert bus_error(ctl, "RemoveGroupMember", "ss", "ops", phone)[0] == ERROR + "NotAMember"
    assert revision(ctl) == rev
    assert "needs GROUP and AGENT" in failed(ctl, "group", "add-member", "eng", rc=2)

    ok(ctl, "group", "remove-member", "eng", "laptop")
    assert agent_groups(ctl)[laptop] == ["ops"] and groups(ctl)["eng"]["members"] == [phone]

    # Deleting a group takes it out of every member.
    ok(ctl, "group", "delete", "ops")
    a = agent_groups(ctl)
    assert a[laptop] == [] and a[twin] == [] and a[phone] == ["eng"]

    rows = [(s, d["change"], d["group"]) for _, s, d in audit_rows(ctl) if d["change"].startswith("group-member")]
    assert rows == [(laptop, "group-member-added", "eng"), (phone, "group-member-added", "eng"),
                    (laptop, "group-member-added", "ops"), (twin, "group-member-added", "ops"),
                    (laptop, "group-member-removed", "eng")], rows


# ---- policies ---------------------------------------------------------------------------------------------

def test_policy_create_list_delete(lab):
    ctl = lab
    ok(ctl, "group", "create", "ops")
    ok(ctl, "resource", "create", "ssh", "--address", "*.lab.example", "--network", "lab", "--ports", "22")
    ok(ctl, "policy", "create", "eng", "web")
    ok(ctl, "policy", "create", "ops", "web")
    ok(ctl, "policy", "create", "ops", "ssh")

    assert policies(ctl) == [("eng", "web"), ("ops", "ssh"), ("ops", "web")]
    listed = ztnactl_json(ctl, "policy", "list")
    assert all(ISO_UTC.match(p["created_at"]) and p["created_at_usec"] > 0 for p in listed)
    human = ctl.ztnactl("policy", "list").stdout.splitlines()
    assert human[0].split() == ["GROUP", "RESOURCE", "CREATED"] and human[-1] == "3 policies listed."
    assert human[1].split()[:2] == ["eng", "web"] and HUMAN_UTC.search(human[1])
    assert resources(ctl)["web"]["groups"] == ["eng", "ops"] and resources(ctl)["ssh"]["groups"] == ["ops"]
    assert groups(ctl)["ops"]["resources"] == ["ssh", "web"]
    assert ctl.ztnactl("resource", "list", "--no-legend").stdout.splitlines()[1].split()[-1] == "eng,ops"

    rev = revision(ctl)
    assert failed(ctl, "policy", "create", "eng", "web") == \
        "Failed to create policy: Group 'eng' is already granted resource 'web'."
    assert bus_error(ctl, "CreatePolicy", "ss", "eng", "web")[0] == ERROR + "AlreadyExists"
    assert failed(ctl, "policy", "create", "sales", "web") == "Failed to create policy: No group 'sales'."
    assert bus_error(ctl, "CreatePolicy", "ss", "sales", "web")[0] == ERROR + "NoSuchGroup"
    assert failed(ctl, "policy", "create", "eng", "db") == "Failed to create policy: No resource 'db'."
    assert bus_error(ctl, "CreatePolicy", "ss", "eng", "db")[0] == ERROR + "NoSuchResource"
    assert failed(ctl, "policy", "delete", "eng", "ssh") == \
        "Failed to delete policy: Group 'eng' is not granted resource 'ssh'."
    assert bus_error(ctl, "DeletePolicy", "ss", "eng", "ssh")[0] == ERROR + "NoSuchPolicy"
    assert bus_error(ctl, "DeletePolicy", "ss", "sales", "ssh")[0] == ERROR + "NoSuchGroup"
    assert bus_error(ctl, "DeletePolicy", "ss", "eng", "db")[0] == ERROR + "NoSuchResource"
    assert bus_error(ctl, "CreatePolicy", "ss", "", "web") == (INVALID_ARGS, "Invalid group name '': empty.")
    assert "needs GROUP and RESOURCE" in failed(ctl, "policy", "create", "eng", rc=2)
    assert revision(ctl) == rev and len(policies(ctl)) == 3

    ok(ctl, "policy", "delete", "ops", "web")
    assert policies(ctl) == [("eng", "web"), ("ops", "ssh")]

    # Deleting a resource takes its policies with it; a new resource of that name is granted to nobody.
    ok(ctl, "resource", "delete", "web")
    assert policies(ctl) == [("ops", "ssh")] and groups(ctl)["eng"]["resources"] == []
    ok(ctl, "resource", "create", "web", "--address", "10.0.0.10", "--network", "lab")
    assert resources(ctl)["web"]["groups"] == [] and policies(ctl) == [("ops", "ssh")]

    # So does deleting a group.
    ok(ctl, "group", "delete", "ops")
    assert policies(ctl) == [] and resources(ctl)["ssh"]["groups"] == []


# ---- revision, audit, journal -----------------------------------------------------------------------------

def test_policy_revision_moves_with_every_change_only(ctl, node, tmp_path):
    assert revision(ctl) == 0
    # Enrolling a tunneler changes who holds which groups: a new revision too.
    tunneler = enroll(node, tmp_path, ctl, "tunneler", "laptop")
    assert revision(ctl) > 0
    steps = [
        ["network", "create", "lab"],
        ["resource", "create", "web", "--address", "10.0.0.10", "--network", "lab"],
        ["resource", "update", "web", "--ports", "443"],
        ["group", "create", "eng"],
        ["group", "add-member", "eng", "laptop"],
        ["policy", "create", "eng", "web"],
        ["policy", "delete", "eng", "web"],
        ["group", "remove-member", "eng", tunneler],
        ["group", "delete", "eng"],
        ["resource", "delete", "web"],
        ["network", "delete", "lab"],
    ]
    refusals = [
        ["network", "delete", "nowhere"],
        ["resource", "create", "db", "--address", "10.0.0.1/24", "--network", "lab"],
        ["resource", "create", "db", "--address", "10.0.0.1", "--network", "nowhere"],
        ["resource", "create", "db", "--address", "10.0.0.1", "--network", "lab", "--ports", "0"],
        ["resource", "delete", "db"],
        ["group", "delete", "nogroup"],
        ["group", "add-member", "nogroup", "laptop"],
        ["policy", "create", "nogroup", "noresource"],
        ["policy", "delete", "nogroup", "noresource"],
    ]
    seen = [revision(ctl)]
    for args in steps:
        ok(ctl, *args)
        seen.append(revision(ctl))
        # Doing it again is refused (a duplicate, or gone) or, for an update, changes nothing; everything
        # else here is refused: no new revision.
        for bad in [args] + refusals:
            rc = ctl.ztnactl(*bad, check=False).returncode
            assert rc == (0 if bad is args and args[1] == "update" else 1), bad
            assert revision(ctl) == seen[-1], (args, bad)
    assert all(b > a for a, b in zip(seen, seen[1:])), seen
    # So does revoking one.
    ctl.ztnactl("agents", "revoke", tunneler)
    assert revision(ctl) > seen[-1]

    # Each change is one audit record, naming its actor, what changed and the revision it produced.
    rows = audit_rows(ctl)
    assert [d["change"] for _, _, d in rows] == [
        "network-created", "resource-created", "resource-updated", "group-created", "group-member-added",
        "policy-created", "policy-deleted", "group-member-removed", "group-deleted", "resource-deleted",
        "network-deleted"]
    assert all(actor == "root" for actor, _, _ in rows)
    assert [int(d["revision"]) for _, _, d in rows] == seen[1:]
    assert rows[0][1:] == ("lab", {"change": "network-created", "name": "lab", "revision": str(seen[1])})
    assert rows[1][1:] == ("web", {"change": "resource-created", "name": "web", "network": "lab",
                                   "address": "10.0.0.10", "protocol": "any", "ports": "any",
                                   "revision": str(seen[2])})
    assert rows[4][1:] == (tunneler, {"change": "group-member-added", "group": "eng", "revision": str(seen[5])})
    assert rows[5][1:] == ("web", {"change": "policy-created", "group": "eng", "resource": "web",
                                   "revision": str(seen[6])})


def test_policy_revision_signal(lab, node, tmp_path):
    """PolicyRevision announces itself with PropertiesChanged (org.freedesktop.DBus.Property.EmitsChangedSignal
    true), carrying the new value: after policy changes and after a revocation."""
    ctl = lab
    tunneler = enroll(node, tmp_path, ctl, "tunneler", "laptop")
    monitor = subprocess.Popen(["busctl", f"--address={ctl.bus.address}", "monitor", "--json=short",
                                f"--match=type='signal',sender='{NAME}',path='{PATH}',"
                                "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    try:
        time.sleep(0.5)  # the monitor is subscribed
        ok(ctl, "policy", "create", "eng", "web")
        expected = revision(ctl)
        ctl.ztnactl("policy", "create", "eng", "web", check=False)   # refused: no signal
        ok(ctl, "policy", "delete", "eng", "web")
        ctl.ztnactl("agents", "revoke", tunneler)
        revoked = revision(ctl)
        time.sleep(0.5)
    finally:
        os.kill(monitor.pid, signal.SIGTERM)
        out, _ = monitor.communicate(timeout=10)
    changes = []
    for line in out.splitlines():
        body = json.loads(line).get("payload", {}).get("data", [])
        if body and body[0] == NAME:
            changes.append(body[1])
    assert changes == [{"PolicyRevision": {"type": "t", "data": expected}},
                       {"PolicyRevision": {"type": "t", "data": expected + 1}},
                       {"PolicyRevision": {"type": "t", "data": revoked}}], out
    assert revoked > expected + 1


def test_journal_entry(controller):
    controller.init()
    controller.start(journal=True)
    ok(controller, "network", "create", "lab")
    ok(controller, "resource", "create", "web", "--address", "10.0.0.0/24", "--network", "lab", "--ports", "80,443")
    controller.stop()
    controller.stop_journald()

    entries = [json.loads(line) for line in
               controller.journal("-o", "json", f"MESSAGE_ID={POLICY_CHANGED_ID}").splitlines()]
    assert [(e["ZTNA_EVENT"], e["ZTNA_CHANGE"], e["ZTNA_SUBJECT"], e["ZTNA_ACTOR"]) for e in entries] == [
        ("policy-changed", "network-created", "lab", "root"), ("policy-changed", "resource-created", "web", "root")]
    web = entries[1]
    assert (web["ZTNA_ADDRESS"], web["ZTNA_PORTS"], web["ZTNA_PROTOCOL"], web["ZTNA_NETWORK"]) == \
        ("10.0.0.0/24", "80,443", "any", "lab")
    assert web["MESSAGE"] == "Access policy changed for web."
    assert int(web["ZTNA_REVISION"]) > int(entries[0]["ZTNA_REVISION"])


# ---- authorization ----------------------------------------------------------------------------------------

MUTATIONS = [
    ["network", "create", "dmz"],
    ["network", "delete", "lab"],
    ["resource", "create", "db", "--address", "10.0.0.5", "--network", "lab"],
    ["resource", "update", "web", "--ports", "22"],
    ["resource", "delete", "web"],
    ["group", "create", "ops"],
    ["group", "delete", "eng"],
    ["group", "add-member", "eng", "laptop"],
    ["group", "remove-member", "eng", "laptop"],
    ["policy", "create", "eng", "web"],
    ["policy", "delete", "eng", "web"],
]
LISTS = [["network", "list"], ["resource", "list"], ["group", "list"], ["policy", "list"]]


def snapshot(ctl):
    return (ztnactl_json(ctl, "network", "list"), resources(ctl), groups(ctl), policies(ctl), revision(ctl))


def test_polkit_decides_for_unprivileged_callers(lab, polkit):
    ctl = lab
    before = snapshot(ctl)

    # Nothing allowed: every verb is refused by polkit, with the daemon's message, and nothing changes.
    for args in MUTATIONS + LISTS:
        assert "Access denied" in failed(ctl, *args, user=NOBODY), args
    assert snapshot(ctl) == before

    # Reading allowed: lists work (the same action as the other List* methods), changes still do not.
    polkit.allow(ACTION_READ)
    for args in LISTS:
        p = ctl.ztnactl(*args, "--json", user=NOBODY)
        assert json.loads(p.stdout) == ztnactl_json(ctl, *args), args
    for args in MUTATIONS:
        assert "Access denied" in failed(ctl, *args, user=NOBODY), args
    assert snapshot(ctl) == before
    assert {a for a, _ in polkit_checks(polkit)} == {ACTION_READ, ACTION_POLICY}

    # Managing the policy allowed: the audit actor is the caller's uid, from the bus.
    polkit.allow(ACTION_READ, ACTION_POLICY)
    ok(ctl, "policy", "create", "eng", "web", user=NOBODY)
    ok(ctl, "network", "create", "dmz", user=NOBODY)
    ok(ctl, "resource", "update", "web", "--ports", "22", user=NOBODY)
    assert policies(ctl) == [("eng", "web")] and resources(ctl)["web"]["ports"] == "22"
    assert [(a, d["change"]) for a, _, d in audit_rows(ctl)][-3:] == [
        (f"uid:{NOBODY}", "policy-created"), (f"uid:{NOBODY}", "network-created"),
        (f"uid:{NOBODY}", "resource-updated")]

    # polkit was asked for the right action, with details naming the object.
    details = {(a, d) for a, d in polkit_checks(polkit) if a == ACTION_POLICY}
    assert (ACTION_POLICY, '{"group": "eng", "resource": "web"}') in details, details
    assert (ACTION_POLICY, '{"network": "dmz"}') in details, details
    assert (ACTION_POLICY, '{"resource": "web"}') in details, details


def polkit_checks(polkit):
    """(action, details) of every CheckAuthorization so far (dbusmock's log lines)."""
    found = []
    for line in polkit.log.read_text().splitlines() if polkit.log.exists() else []:
        if " CheckAuthorization " in line:
            m = re.search(r' "([a-z0-9.-]+)" (\{.*\}) (\d+) ""$', line)
            assert m, line
            found.append((m.group(1), m.group(2)))
    return found


def test_no_polkit_means_denied(lab):
    ctl = lab
    before = snapshot(ctl)
    for args in [MUTATIONS[0], MUTATIONS[9], LISTS[1]]:
        assert "Access denied" in failed(ctl, *args, user=NOBODY)
    assert snapshot(ctl) == before


def test_root_is_not_asked(lab, polkit):
    ok(lab, "policy", "create", "eng", "web")
    ztnactl_json(lab, "policy", "list")
    assert polkit_checks(polkit) == []


# ---- usage ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["network"], "Missing verb after 'network'."),
    (["network", "create"], "'network create' needs NAME."),
    (["network", "create", "a", "b"], "Too many arguments for 'network create'."),
    (["network", "list", "--description", "x"], "--description does not apply to 'network list'."),
    (["resource", "create", "r", "--network", "lab"], "'resource create' needs --address."),
    (["resource", "create", "r", "--address", "10.0.0.1"], "'resource create' needs --network."),
    (["resource", "list", "--ports", "22"], "--ports does not apply to 'resource list'."),
    (["resource", "update", "r"], "'resource update' needs at least one of --network --address --ports "
                                  "--protocol --alias."),
    (["group", "add-member", "eng"], "'group add-member' needs GROUP and AGENT."),
    (["group", "create", "eng", "--alias", "x"], "--alias does not apply to 'group create'."),
    (["policy", "create", "eng"], "'policy create' needs GROUP and RESOURCE."),
    (["policy", "frobnicate"], "Unknown command 'policy frobnicate'."),
])
def test_usage_errors(ctl, args, message):
    err = failed(ctl, *args, rc=2)
    assert err.startswith(message) and "--help" in err, err


def test_help_names_every_verb(ctl):
    text = ctl.ztnactl("--help").stdout
    for verb in ("network create", "network delete", "network list", "resource create", "resource update",
                 "resource delete", "resource list", "group create", "group delete", "group list",
                 "group add-member", "group remove-member", "policy create", "policy delete", "policy list"):
        assert f"  {verb} " in text, verb
