# SPDX-License-Identifier: Apache-2.0
"""Administrators of the admin API and dashboard, created by root on the controller host: `ztnactl admin
create|passwd|delete|list` over org.ztna.Controller1 and `ztna-controller init --admin=`, against a real
`ztna-controller run` on a private dbus-daemon whose policy includes dbus/org.ztna.Controller1.conf.

What is checked: passwords come from stdin or a terminal (prompted twice, not echoed), never from argv; the
database holds argon2id hashes only (verified with libargon2 itself through ctypes); no password or hash
reaches the log, the journal or an audit row; every change is audited; polkit (python-dbusmock's polkitd
template) decides for callers that are not root."""
import ctypes
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import time

import pytest

from conftest import CALL_TIMEOUT, PolkitMock

NAME = "org.ztna.Controller1"
PATH = "/org/ztna/Controller1"
ERROR = "org.ztna.Controller1.Error."
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
NOBODY = 65534
PYTHON = "/usr/bin/python3"

ACTION_READ = "org.ztna.controller.read"
ACTION_ADMINS = "org.ztna.controller.manage-admins"

MESSAGE_IDS = {
    "admin-created": "7ef34725667f4a09a1a434e010c211da",
    "admin-deleted": "100971bf2eb44445bed4b7ecc27c0b04",
    "admin-password-changed": "d849a9e7097043969cb5fbd2785c40e7",
}

PASSWORD = "correct horse battery staple"
PASSWORD2 = "Tr0ub4dor&3, but longer"
ARGON2ID = re.compile(r"^\$argon2id\$v=19\$m=65536,t=3,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def ctl(controller):
    controller.init()
    controller.start()
    return controller


@pytest.fixture
def polkit(ctl, tmp_path):
    mock = PolkitMock(ctl.bus, tmp_path)
    try:
        yield mock
    finally:
        mock.stop()


def ztnactl(ctl, *args, input=None, user=None):
    """ztnactl with `input` (text) on stdin — a pipe, not a terminal — as root or as another uid."""
    argv = [str(ctl.ztnactl_binary), *map(str, args)]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(argv, env=ctl.env(), capture_output=True, text=True, timeout=CALL_TIMEOUT, **kwargs)


def ok(ctl, *args, **kwargs):
    """A verb that changes something: exit 0 and nothing on stdout or stderr."""
    p = ztnactl(ctl, *args, **kwargs)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), (args, p.returncode, p.stdout, p.stderr)


def failed(ctl, *args, rc=1, **kwargs):
    """Runs ztnactl expecting exit status rc and nothing on stdout; returns stderr without its newline."""
    p = ztnactl(ctl, *args, **kwargs)
    assert p.returncode == rc, f"ztnactl {' '.join(map(str, args))}: exit {p.returncode}, wanted {rc}: " \
                               f"{p.stdout}{p.stderr}"
    assert p.stdout == "", p.stdout
    return p.stderr.rstrip("\n")


def admins(ctl, user=None):
    p = ztnactl(ctl, "admin", "list", "--json", user=user)
    assert p.returncode == 0, p.stderr
    return {a["name"]: a for a in json.loads(p.stdout)}


def db(ctl, sql, *args):
    con = sqlite3.connect(f"file:{ctl.db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def password_hash(ctl, name):
    rows = db(ctl, "SELECT password_hash FROM admins WHERE name = ?", name)
    assert len(rows) == 1, rows
    return rows[0][0]


def argon2id_verify(encoded, password):
    """libargon2's own verify (ARGON2_OK is 0): an independent check that the stored hash is a real argon2id
    hash of the password."""
    lib = ctypes.CDLL("libargon2.so.1")
    lib.argon2id_verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    pw = password.encode()
    return lib.argon2id_verify(encoded.encode(), pw, len(pw)) == 0


def audit_rows(ctl, event):
    return [(a, s, json.loads(d) if d else None) for a, s, d in
            db(ctl, "SELECT actor, subject, detail FROM audit WHERE event = ? ORDER BY seq", event)]


def db_bytes(ctl):
    data = b""
    for suffix in ("", "-wal"):
        p = f"{ctl.db}{suffix}"
        if os.path.exists(p):
            with open(p, "rb") as f:
                data += f.read()
    return data


def bus_call(ctl, member, signature="", *args, user=None):
    """A method call with python-dbus: ("ok", reply) or ("error", name, message)."""
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


def assert_no_secret(text, what):
    for secret in (PASSWORD, PASSWORD2, "$argon2id$"):
        assert secret not in text, f"{secret!r} found in {what}"


# ---- create, list, passwd, delete -------------------------------------------------------------------------

def test_create_list_passwd_delete(ctl):
    ok(ctl, "admin", "create", "alice", input=PASSWORD + "\n")
    ok(ctl, "admin", "create", "bob@example.org", input=PASSWORD2)  # no final newline: all of stdin

    listed = admins(ctl)
    assert sorted(listed) == ["alice", "bob@example.org"]
    alice = listed["alice"]
    assert (alice["state"], alice["created_by"], alice["last_login_at"], alice["disabled_at"]) == \
        ("active", "root", None, None)
    assert ISO_UTC.match(alice["created_at"]) and alice["password_changed_at_usec"] == alice["created_at_usec"]
    assert set(alice) == {"name", "state", "created_by", "created_at", "created_at_usec", "password_changed_at",
                          "password_changed_at_usec", "last_login_at", "last_login_at_usec", "disabled_at",
                          "disabled_at_usec"}

    table = ztnactl(ctl, "admin", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "CREATED-BY", "CREATED", "PASSWORD-CHANGED", "LAST-LOGIN"]
    assert table[1].split()[:3] == ["alice", "active", "root"] and table[1].split()[-1] == "-"
    assert table[-1] == "2 admins listed."

    # Stored: argon2id with the stated parameters, of exactly the password given (the final newline of
    # stdin is not part of it).
    first = password_hash(ctl, "alice")
    assert ARGON2ID.match(first), first
    assert argon2id_verify(first, PASSWORD) and not argon2id_verify(first, PASSWORD + "\n")
    assert argon2id_verify(password_hash(ctl, "bob@example.org"), PASSWORD2)

    ok(ctl, "admin", "passwd", "alice", input=PASSWORD2 + "\r\n")
    second = password_hash(ctl, "alice")
    assert ARGON2ID.match(second) and second != first
    assert argon2id_verify(second, PASSWORD2) and not argon2id_verify(second, PASSWORD)
    assert admins(ctl)["alice"]["password_changed_at_usec"] > alice["password_changed_at_usec"]

    ok(ctl, "admin", "delete", "alice")
    assert sorted(admins(ctl)) == ["bob@example.org"]
    assert db(ctl, "SELECT name FROM admins") == [("bob@example.org",)]

    assert audit_rows(ctl, "admin-created") == [("root", "alice", None), ("root", "bob@example.org", None)]
    assert audit_rows(ctl, "admin-password-changed") == [("root", "alice", None)]
    assert audit_rows(ctl, "admin-deleted") == [("root", "alice", None)]

    # Nothing but hashes at rest; no password, no hash in the daemon's log (debug level) or the audit trail.
    data = db_bytes(ctl)
    assert PASSWORD.encode() not in data and PASSWORD2.encode() not in data
    assert_no_secret(ctl.log_text(), "the controller's log")
    assert_no_secret(json.dumps(db(ctl, "SELECT * FROM audit")), "the audit table")


def test_refusals(ctl):
    ok(ctl, "admin", "create", "alice", input=PASSWORD)

    assert failed(ctl, "admin", "create", "alice", input=PASSWORD2) == \
        "Failed to create admin: Admin 'alice' already exists."
    assert failed(ctl, "admin", "create", "bob", input="short\n") == \
        "Failed to create admin: Invalid password: the password is shorter than 12 bytes."
    assert failed(ctl, "admin", "create", "bob", input=" " * 20) == \
        "Failed to create admin: Invalid password: the password is only whitespace."
    assert failed(ctl, "admin", "create", "Bob", input=PASSWORD) == \
        "Failed to create admin: Invalid admin name 'Bob': expected 1-64 characters of a-z 0-9 . _ @ -, " \
        "starting with a letter or digit."
    assert failed(ctl, "admin", "create", "bob", input="") == "No password given."
    assert failed(ctl, "admin", "create", "bob", input="\n") == "No password given."
    assert failed(ctl, "admin", "create", "bob", input="x" * 2000) == \
        "The password is longer than 1024 bytes."
    assert failed(ctl, "admin", "passwd", "bob", input=PASSWORD) == "Failed to set the password: No admin 'bob'."
    assert failed(ctl, "admin", "delete", "bob") == "Failed to delete admin: No admin 'bob'."
    assert failed(ctl, "admin", "delete", "-x", rc=2).startswith("Unknown option '-x'.")
    # Never a password on the command line.
    assert failed(ctl, "admin", "create", "bob", PASSWORD, rc=2).startswith("Too many arguments for 'admin create'.")
    assert failed(ctl, "admin", "create", rc=2).startswith("'admin create' needs NAME.")
    assert failed(ctl, "admin", "list", "--role", "x", rc=2).startswith("--role does not apply to 'admin list'.")

    # The exact D-Bus errors.
    assert bus_call(ctl, "CreateAdmin", "ss", "alice", PASSWORD) == \
        ("error", ERROR + "AlreadyExists", "Admin 'alice' already exists.")
    assert bus_call(ctl, "SetAdminPassword", "ss", "carol", PASSWORD) == \
        ("error", ERROR + "NoSuchAdmin", "No admin 'carol'.")
    assert bus_call(ctl, "DeleteAdmin", "s", "carol") == ("error", ERROR + "NoSuchAdmin", "No admin 'carol'.")
    name, message = bus_call(ctl, "CreateAdmin", "ss", "carol", "x" * 1025)[1:]
    assert (name, message) == (INVALID_ARGS, "Invalid password: the password is longer than 1024 bytes.")
    name, message = bus_call(ctl, "CreateAdmin", "ss", "x" * 65, PASSWORD)[1:]
    assert name == INVALID_ARGS and message.startswith("Invalid admin name 'xxxx") and "…'" in message

    assert sorted(admins(ctl)) == ["alice"]
    assert len(audit_rows(ctl, "admin-created")) == 1
    assert_no_secret(ctl.log_text(), "the controller's log")


def test_help_and_empty_list(ctl):
    text = ztnactl(ctl, "--help").stdout
    for verb in ("admin create", "admin passwd", "admin delete", "admin list"):
        assert f"  {verb} " in text, verb
    assert ztnactl(ctl, "admin", "list").stdout.splitlines()[-1] == "0 admins listed."
    assert ztnactl(ctl, "admin", "list", "--json").stdout.strip() == "[]"


# ---- the terminal ---------------------------------------------------------------------------------------

def run_on_tty(ctl, args, dialogue):
    """Runs ztnactl with a pseudo-terminal as stdin and stderr; answers each (prompt, line) of dialogue once
    the prompt has been shown (echo is off by then). Returns (exit status, everything the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(ctl.ztnactl_binary), *args], env=ctl.env(), stdin=slave, stdout=subprocess.PIPE,
                         stderr=slave, start_new_session=True)
    os.close(slave)
    shown = b""
    answered = 0  # where in `shown` the next prompt is looked for
    pending = list(dialogue)
    deadline = time.monotonic() + CALL_TIMEOUT
    try:
        while True:
            assert time.monotonic() < deadline, f"no exit; the terminal showed {shown!r}"
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the last holder of the terminal's other end exited
                    chunk = b""
                if not chunk:
                    if p.poll() is not None:
                        break
                    time.sleep(0.05)
                    continue
                shown += chunk
                if pending:
                    at = shown.find(pending[0][0].encode(), answered)
                    if at >= 0:
                        answered = at + len(pending[0][0])
                        os.write(master, pending.pop(0)[1].encode() + b"\n")
            elif p.poll() is not None:
                break
        return p.wait(timeout=CALL_TIMEOUT), shown.decode(errors="replace")
    finally:
        os.close(master)
        p.stdout.close()


def test_terminal_prompts_twice_without_echo(ctl):
    rc, shown = run_on_tty(ctl, ["admin", "create", "carol"],
                           [("New password for admin 'carol': ", PASSWORD), ("Repeat the password: ", PASSWORD)])
    assert rc == 0, shown
    assert "New password for admin 'carol': " in shown and "Repeat the password: " in shown
    assert PASSWORD not in shown  # echo was off
    assert argon2id_verify(password_hash(ctl, "carol"), PASSWORD)

    rc, shown = run_on_tty(ctl, ["admin", "passwd", "carol"],
                           [("New password for admin 'carol': ", PASSWORD2),
                            ("Repeat the password: ", PASSWORD2 + "x")])
    assert rc == 1 and "The passwords do not match." in shown, shown
    assert PASSWORD2 not in shown
    assert argon2id_verify(password_hash(ctl, "carol"), PASSWORD)
    assert audit_rows(ctl, "admin-password-changed") == []


# ---- ztna-controller init --admin= ----------------------------------------------------------------------

def init(controller, *args, input=None):
    controller.write_conf()
    controller.state.mkdir(parents=True, exist_ok=True)
    controller.state.chmod(0o700)
    kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([str(controller.binary), f"--confdir={controller.confdir}", "init", *args],
                          env=controller.env(), capture_output=True, text=True, timeout=CALL_TIMEOUT, **kwargs)


def test_init_admin(controller):
    # A refused password leaves nothing behind: no key file, no database.
    p = init(controller, "--admin=alice", input="short\n")
    assert p.returncode == 1 and "Refusing the administrator's password: the password is shorter than 12 bytes." \
        in p.stderr, p.stderr
    assert not controller.db.exists() and not controller.key_file.exists()
    p = init(controller, "--admin=Alice", input=PASSWORD)
    assert p.returncode == 2 and "Invalid --admin= name" in p.stderr, p.stderr

    p = init(controller, "--admin=alice", input=PASSWORD + "\n")
    assert p.returncode == 0, p.stderr
    assert "Administrator:    alice\n" in p.stdout
    assert_no_secret(p.stdout + p.stderr, "init's output")
    assert argon2id_verify(password_hash(controller, "alice"), PASSWORD)

    # Initialized: --if-needed does nothing, not even read a password, and says how to add one.
    p = init(controller, "--if-needed", "--admin=bob", input=PASSWORD)
    assert p.returncode == 0 and "ztnactl admin create bob" in p.stderr, p.stderr
    assert db(controller, "SELECT name FROM admins") == [("alice",)]
    p = subprocess.run([str(controller.binary), f"--confdir={controller.confdir}", "--admin=bob", "run"],
                       env=controller.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=CALL_TIMEOUT)
    assert p.returncode == 2 and "--admin= is an option of 'init'." in p.stderr, p.stderr

    controller.start()
    listed = admins(controller)
    assert list(listed) == ["alice"] and listed["alice"]["created_by"] == "root"
    assert audit_rows(controller, "admin-created") == [("root", "alice", None)]


# ---- the journal ----------------------------------------------------------------------------------------

def test_journal_entries(controller):
    controller.init()
    controller.start(journal=True)
    ok(controller, "admin", "create", "alice", input=PASSWORD)
    ok(controller, "admin", "passwd", "alice", input=PASSWORD2)
    ok(controller, "admin", "delete", "alice")
    failed(controller, "admin", "create", "bob", input="too short")  # refused: no entry
    controller.stop()
    controller.stop_journald()

    for event, message in (("admin-created", "Administrator alice created."),
                           ("admin-password-changed", "Password of administrator alice changed."),
                           ("admin-deleted", "Administrator alice deleted.")):
        entries = [json.loads(line) for line in
                   controller.journal("-o", "json", f"MESSAGE_ID={MESSAGE_IDS[event]}").splitlines()]
        assert [(e["ZTNA_EVENT"], e["ZTNA_ACTOR"], e["ZTNA_SUBJECT"], e["MESSAGE"]) for e in entries] == \
            [(event, "root", "alice", message)], entries
    # Every field of every entry, in the journal's own export format: no password, no hash.
    export = controller.journal("-o", "export", raw=True)
    assert b"ZTNA_EVENT=admin-created" in export
    for secret in (PASSWORD, PASSWORD2, "$argon2id$", "too short"):
        assert secret.encode() not in export, secret


# ---- authorization ----------------------------------------------------------------------------------------

def polkit_checks(polkit):
    """(action, details) of every CheckAuthorization so far."""
    found = []
    for line in polkit.log.read_text().splitlines() if polkit.log.exists() else []:
        if " CheckAuthorization " in line:
            m = re.search(r' "([a-z0-9.-]+)" (\{.*\}) (\d+) ""$', line)
            assert m, line
            found.append((m.group(1), m.group(2)))
    return found


def test_polkit_decides_for_unprivileged_callers(ctl, polkit):
    ok(ctl, "admin", "create", "alice", input=PASSWORD)
    before = (admins(ctl), password_hash(ctl, "alice"))

    # Nothing allowed: every verb refused, nothing changes, and the refusal is polkit's, not the bus policy's
    # (the methods are listed by name in dbus/org.ztna.Controller1.conf).
    for args, stdin in ((["admin", "create", "bob"], PASSWORD), (["admin", "passwd", "alice"], PASSWORD2),
                        (["admin", "delete", "alice"], None), (["admin", "list"], None)):
        assert "Access denied" in failed(ctl, *args, input=stdin, user=NOBODY), args
    assert bus_call(ctl, "CreateAdmin", "ss", "bob", PASSWORD, user=NOBODY) == \
        ("error", ACCESS_DENIED, "Access denied.")
    assert (admins(ctl), password_hash(ctl, "alice")) == before

    # Reading allowed: the list, with the same action as the other List* methods; changes still refused.
    polkit.allow(ACTION_READ)
    assert admins(ctl, user=NOBODY) == admins(ctl)
    assert "Access denied" in failed(ctl, "admin", "delete", "alice", user=NOBODY)

    # Managing admins allowed: the audit actor is the caller's uid, from the bus.
    polkit.allow(ACTION_READ, ACTION_ADMINS)
    ok(ctl, "admin", "create", "bob", input=PASSWORD2, user=NOBODY)
    ok(ctl, "admin", "passwd", "alice", input=PASSWORD2, user=NOBODY)
    ok(ctl, "admin", "delete", "bob", user=NOBODY)
    assert audit_rows(ctl, "admin-created")[-1] == (f"uid:{NOBODY}", "bob", None)
    assert audit_rows(ctl, "admin-password-changed") == [(f"uid:{NOBODY}", "alice", None)]
    assert audit_rows(ctl, "admin-deleted") == [(f"uid:{NOBODY}", "bob", None)]
    assert argon2id_verify(password_hash(ctl, "alice"), PASSWORD2)

    # polkit was asked for the right action, naming the admin.
    checks = set(polkit_checks(polkit))
    assert (ACTION_ADMINS, '{"admin": "bob"}') in checks, checks
    assert (ACTION_ADMINS, '{"admin": "alice"}') in checks, checks
    assert (ACTION_READ, "{}") in checks, checks
    assert_no_secret(polkit.log.read_text(), "polkit's log")


def test_no_polkit_means_denied(ctl):
    assert "Access denied" in failed(ctl, "admin", "create", "bob", input=PASSWORD, user=NOBODY)
    assert "Access denied" in failed(ctl, "admin", "list", user=NOBODY)
    assert admins(ctl) == {}


def test_root_is_not_asked(ctl, polkit):
    ok(ctl, "admin", "create", "alice", input=PASSWORD)
    admins(ctl)
    ok(ctl, "admin", "delete", "alice")
    assert polkit_checks(polkit) == []
