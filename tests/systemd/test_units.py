# SPDX-License-Identifier: Apache-2.0
"""The platform files as `meson install` lays them out, checked without booting anything.

- every file lands where pkg-config says for the build's prefix (or where the meson option points);
- every shipped .service reaches an exposure of at most MAX_EXPOSURE in `systemd-analyze security
  --offline=true` (the desktop user unit has its own, explained, ceiling);
- `systemd-analyze verify` is clean for every unit;
- every hardening block is sorted;
- the daemons' units keep the settings DESIGN.md §7/§8 decided, and their users own their bus names.

Needs ZTNA_BUILD_DIR (a configured meson build directory) and systemd-analyze; run as root or not.
"""

import configparser
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2]
BUILD = os.environ.get("ZTNA_BUILD_DIR")

MAX_EXPOSURE = 1.2
# The user unit cannot use what scores most (DynamicUser=, IPAddressDeny=, ProtectProc=, ProcSubset=,
# ProtectControlGroups=, RemoveIPC= are system-manager only), and the offline analysis scores it as
# root's (0.4), which it is not: see the comment at the top of units/user/ztna-tunneler.service.in.
MAX_EXPOSURE_USER_UNIT = 2.1

SYSTEM_UNITS = [
    "ztna-connector.service",
    "ztna-controller-admin.socket",
    "ztna-controller.service",
    "ztna-controller.socket",
    "ztna-kek@.service",
    "ztna-tunneler.service",
]
USER_UNITS = ["ztna-tunneler.service"]
DAEMONS = {  # unit → (static user, bus name)
    "ztna-connector.service": ("ztna-connector", "org.ztna.Connector1"),
    "ztna-controller.service": ("ztna-controller", "org.ztna.Controller1"),
    "ztna-tunneler.service": ("ztna-tunneler", "org.ztna.Tunneler1"),
}
COMMANDS = ["ztnactl", "ztna-controller", "ztna-connector", "ztna-tunneler"]

HARDENING_BEGIN = "# Hardening: keep these sorted"
HARDENING_END = "# End of hardening."
EXPOSURE_RE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")

pytestmark = [
    pytest.mark.skipif(not BUILD, reason="set ZTNA_BUILD_DIR to a configured meson build directory"),
    pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed"),
]


def run(*args, check=True, **kwargs):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kwargs)


# ---- what pkg-config says ------------------------------------------------------------------------------


def pkg_config(package, variable, define=None):
    """A pkg-config variable, None when the package or the variable is missing."""
    args = ["pkg-config"]
    if define:
        args.append("--define-variable=%s=%s" % define)
    r = run(*args, "--variable=" + variable, package, check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


def pc_dir(package, variable, prefix):
    """The same rule as meson.build: the package's path with our prefix in place of its own; under
    another prefix, a path that stays outside ours (Debian 12's ${root_prefix}) is moved, else dropped."""
    value = pkg_config(package, variable, ("prefix", prefix))
    if value is None:
        return None
    if prefix != pkg_config(package, "prefix"):
        if not value.startswith(prefix + "/"):
            value = pkg_config(package, variable, ("root_prefix", prefix))
        if not value or not value.startswith(prefix + "/"):
            return None
    return value


def expected_dirs(options):
    prefix = options["prefix"]
    datadir = os.path.join(prefix, options["datadir"])
    zsh = os.path.join(datadir, "zsh", "site-functions")
    if prefix == "/usr" and os.path.isdir("/usr/share/zsh/vendor-completions"):
        zsh = os.path.join(datadir, "zsh", "vendor-completions")
    dirs = {
        "systemdsystemunitdir": pc_dir("systemd", "systemdsystemunitdir", prefix)
        or f"{prefix}/lib/systemd/system",
        "systemduserunitdir": pc_dir("systemd", "systemduserunitdir", prefix)
        or f"{prefix}/lib/systemd/user",
        "sysusersdir": pc_dir("systemd", "sysusersdir", prefix) or f"{prefix}/lib/sysusers.d",
        "tmpfilesdir": pc_dir("systemd", "tmpfilesdir", prefix) or f"{prefix}/lib/tmpfiles.d",
        "catalogdir": pc_dir("systemd", "catalogdir", prefix) or f"{prefix}/lib/systemd/catalog",
        "dbussystemservicedir": pc_dir("dbus-1", "system_bus_services_dir", prefix)
        or f"{datadir}/dbus-1/system-services",
        "dbusinterfacedir": pc_dir("dbus-1", "interfaces_dir", prefix) or f"{datadir}/dbus-1/interfaces",
        "polkitactiondir": pc_dir("polkit-gobject-1", "policydir", prefix) or f"{datadir}/polkit-1/actions",
        "bashcompletiondir": pc_dir("bash-completion", "completionsdir", prefix)
        or f"{datadir}/bash-completion/completions",
        "zshcompletiondir": zsh,
        "fishcompletiondir": pc_dir("fish", "completionsdir", prefix)
        or f"{datadir}/fish/vendor_completions.d",
    }
    dirs["dbuspolicydir"] = os.path.join(os.path.dirname(dirs["dbussystemservicedir"]), "system.d")
    dirs["polkitrulesdir"] = os.path.join(os.path.dirname(dirs["polkitactiondir"]), "rules.d")
    for key in dirs:  # an option set by hand wins
        if options.get(key):
            dirs[key] = options[key]
    dirs["libexecdir"] = os.path.join(prefix, options["libexecdir"], "ztna")
    dirs["bindir"] = os.path.join(prefix, options["bindir"])
    return dirs


def expected_files(dirs):
    files = [("systemdsystemunitdir", u) for u in SYSTEM_UNITS]
    files += [("systemduserunitdir", u) for u in USER_UNITS]
    files += [("sysusersdir", "ztna.conf"), ("tmpfilesdir", "ztna.conf"), ("catalogdir", "ztna.catalog"),
              ("libexecdir", "ztna-seal-kek"), ("polkitrulesdir", "50-ztna.rules"),
              ("polkitactiondir", "org.ztna.policy"), ("polkitactiondir", "org.ztna.controller.policy")]
    for name in ("Controller1", "Connector1", "Tunneler1"):
        files += [("dbuspolicydir", f"org.ztna.{name}.conf"),
                  ("dbussystemservicedir", f"org.ztna.{name}.service"),
                  ("dbusinterfacedir", f"org.ztna.{name}.xml")]
    for cmd in COMMANDS:
        files += [("bashcompletiondir", cmd), ("zshcompletiondir", "_" + cmd),
                  ("fishcompletiondir", cmd + ".fish"), ("bindir", cmd)]
    return [(key, Path(dirs[key]) / name) for key, name in files]


# ---- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def options():
    out = run("meson", "introspect", "--buildoptions", BUILD).stdout
    return {o["name"]: o["value"] for o in json.loads(out)}


@pytest.fixture(scope="module")
def dirs(options):
    return expected_dirs(options)


@pytest.fixture(scope="module")
def destdir(tmp_path_factory, dirs):
    """`meson install --destdir` of the build, plus copies of the host's own units so that `verify
    --root=` finds sysinit.target and friends. Under a prefix systemd does not search (--prefix=/tmp/x),
    our units are also linked into the root's /etc/systemd/system."""
    root = tmp_path_factory.mktemp("destdir")
    run("meson", "install", "-C", BUILD, "--destdir", root, "--no-rebuild", "--quiet")
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isdir(d) and not os.path.islink(d):
            shutil.copytree(d, root / d.lstrip("/"), symlinks=True, dirs_exist_ok=True)
    unitdir = dirs["systemdsystemunitdir"]
    if unitdir not in ("/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
                       "/lib/systemd/system"):
        etc = root / "etc/systemd/system"
        etc.mkdir(parents=True, exist_ok=True)
        for u in SYSTEM_UNITS:
            shutil.copy(installed(root, Path(unitdir) / u), etc / u)
    return root


def installed(destdir, path):
    return destdir / str(path).lstrip("/")


# ---- exposure ------------------------------------------------------------------------------------------


def exposure(unit, root=None, user=False, cwd=None):
    """The overall exposure systemd-analyze gives unit (a name under root, or a file)."""
    args = ["systemd-analyze", "security", "--offline=true", "--no-pager"]
    env = dict(os.environ)
    if root:
        args.append(f"--root={root}")
    if user:
        args.append("--user")
        # The user scope needs a runtime directory, even offline.
        env.setdefault("XDG_RUNTIME_DIR", str(cwd))
    r = run(*args, unit, check=False, env=env, cwd=cwd)
    m = EXPOSURE_RE.search(r.stdout + r.stderr)
    assert m, f"no exposure in the output of {' '.join(args)} {unit}:\n{r.stdout}{r.stderr}"
    return float(m.group(2)), r.stdout


def instance(unit):
    return unit.replace("@.", "@connector.")


@pytest.mark.parametrize("unit", [u for u in SYSTEM_UNITS if u.endswith(".service")])
def test_system_unit_exposure(destdir, dirs, unit):
    level, report = exposure(instance(unit), root=destdir)
    assert level <= MAX_EXPOSURE, f"{unit}: exposure {level} > {MAX_EXPOSURE}\n{report}"


def test_user_unit_exposure(destdir, dirs, tmp_path):
    unit = tmp_path / "ztna-tunneler.service"
    shutil.copy(installed(destdir, Path(dirs["systemduserunitdir"]) / "ztna-tunneler.service"), unit)
    level, report = exposure(unit, user=True, cwd=tmp_path)
    assert level <= MAX_EXPOSURE_USER_UNIT, \
        f"user unit: exposure {level} > {MAX_EXPOSURE_USER_UNIT}\n{report}"


def test_exposure_check_catches_a_regression(destdir, dirs, tmp_path):
    """The check above must be able to fail: the connector without a few of its settings scores worse."""
    text = installed(destdir, Path(dirs["systemdsystemunitdir"]) / "ztna-connector.service").read_text()
    worse = re.sub(r"^(CapabilityBoundingSet|PrivateUsers|ProtectSystem|SystemCallFilter)=.*\n", "", text,
                   flags=re.M)
    assert worse != text
    unit = tmp_path / "ztna-connector.service"
    unit.write_text(worse)
    level, _ = exposure(unit)
    assert level > MAX_EXPOSURE


# ---- verify --------------------------------------------------------------------------------------------


def test_verify_system_units(destdir):
    # --man=no: the man pages are not part of this check. Templates are verified as an instance.
    units = [instance(u) for u in SYSTEM_UNITS]
    r = run("systemd-analyze", "verify", "--man=no", f"--root={destdir}", *units, check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


def test_verify_user_unit(destdir, dirs, tmp_path):
    # `verify --user` takes no --root=: verify a copy whose commands point into the destdir.
    text = installed(destdir, Path(dirs["systemduserunitdir"]) / "ztna-tunneler.service").read_text()
    for key in ("bindir", "libexecdir"):
        text = text.replace(dirs[key] + "/", str(installed(destdir, dirs[key])) + "/")
    unit = tmp_path / "ztna-tunneler.service"
    unit.write_text(text)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    r = run("systemd-analyze", "verify", "--user", "--man=no", unit, check=False, env=env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


# ---- the install layout --------------------------------------------------------------------------------


def test_files_installed_where_pkg_config_says(destdir, dirs):
    missing = [f"{key}: {path}" for key, path in expected_files(dirs)
               if not installed(destdir, path).is_file()]
    assert not missing, "not installed:\n" + "\n".join(missing)
    assert os.access(installed(destdir, Path(dirs["libexecdir"]) / "ztna-seal-kek"), os.X_OK)


def test_units_name_installed_paths(destdir, dirs):
    """configure_file() filled in every @…@, and every command a unit runs was installed."""
    for key, units in (("systemdsystemunitdir", SYSTEM_UNITS), ("systemduserunitdir", USER_UNITS)):
        for u in units:
            text = installed(destdir, Path(dirs[key]) / u).read_text()
            assert not re.search(r"@[A-Za-z_]+@", text), f"{u}: unreplaced placeholder"
            for m in re.finditer(r"^Exec\w+=[-@:+!]*(/\S+)", text, flags=re.M):
                assert installed(destdir, m.group(1)).is_file(), f"{u}: {m.group(1)} not installed"


def test_sysusers_and_tmpfiles_apply(destdir, dirs, tmp_path):
    """Both files parse without a warning and do what the units rely on, in a scratch root."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = installed(destdir, Path(dirs["sysusersdir"]) / "ztna.conf")
    r = run("systemd-sysusers", f"--root={root}", sysusers, check=False)
    assert r.returncode == 0 and "warn" not in r.stderr.lower(), r.stderr
    passwd = (root / "etc/passwd").read_text()
    for user, _ in DAEMONS.values():
        assert re.search(rf"^{user}:", passwd, flags=re.M), f"{user} not created"
    assert re.search(r"^ztna:", (root / "etc/group").read_text(), flags=re.M)

    tmpfiles = installed(destdir, Path(dirs["tmpfilesdir"]) / "ztna.conf")
    r = run("systemd-tmpfiles", "--create", f"--root={root}", tmpfiles, check=False)
    assert r.returncode == 0, r.stderr
    credstore = root / "etc/credstore.encrypted"
    assert credstore.is_dir() and credstore.stat().st_mode & 0o777 == 0o700


# ---- the units' content --------------------------------------------------------------------------------


def unit_sources():
    return sorted(SOURCE.glob("units/*.in")) + sorted(SOURCE.glob("units/user/*.in"))


def hardening_block(text):
    lines = text.splitlines()
    begin = [i for i, line in enumerate(lines) if line.startswith(HARDENING_BEGIN)]
    end = [i for i, line in enumerate(lines) if line.startswith(HARDENING_END)]
    assert len(begin) == 1 and len(end) == 1 and begin[0] < end[0], "one hardening block, with both markers"
    return [line for line in lines[begin[0] + 1:end[0]] if line and not line.startswith("#")]


@pytest.mark.parametrize("source", [p for p in unit_sources() if ".service" in p.name],
                         ids=lambda p: str(p.relative_to(SOURCE)))
def test_hardening_block_sorted(source):
    keys = [line.split("=", 1)[0] for line in hardening_block(source.read_text())]
    assert keys, "empty hardening block"
    assert keys == sorted(keys), "out of order: " + ", ".join(
        f"{a} before {b}" for a, b in zip(keys, keys[1:]) if a > b)


def unit_settings(path):
    """{section: {key: [values…]}} of a unit file (keys may repeat; no continuation lines in ours)."""
    sections, current = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


@pytest.mark.parametrize("unit", sorted(DAEMONS))
def test_daemon_unit_decisions(unit):
    settings = unit_settings(SOURCE / "units" / (unit + ".in"))
    s = {key: values[-1] for key, values in settings["Service"].items()}
    user, bus_name = DAEMONS[unit]
    role = unit.removeprefix("ztna-").removesuffix(".service")
    want = {
        "Type": "notify", "NotifyAccess": "main", "DynamicUser": "yes", "User": user,
        "StateDirectory": f"ztna-{role}", "StateDirectoryMode": "0700", "RuntimeDirectory": f"ztna-{role}",
        "BusName": bus_name, "Restart": "on-failure", "KeyringMode": "private",
    }
    for key, value in want.items():
        assert s.get(key) == value, f"{unit}: {key}={s.get(key)}, want {value}"
    assert s.get("WatchdogSec"), f"{unit}: no WatchdogSec="
    assert f"ztna.kek:ztna-{role}.kek" in settings["Service"].get("LoadCredentialEncrypted", []), \
        f"{unit}: no KEK credential"
    u = settings["Unit"]
    for key in ("Requires", "After"):
        assert f"ztna-kek@{role}.service" in " ".join(u.get(key, [])).split(), \
            f"{unit}: {key}= lacks the KEK unit"
    # Agents dial the controller: they wait for the network. The controller's sockets are systemd's, and it
    # dials nothing to start.
    online = "network-online.target" in " ".join(u.get("Wants", [])).split()
    assert online == (role != "controller"), f"{unit}: Wants=network-online.target is {online}"


@pytest.mark.parametrize("unit", sorted(DAEMONS))
def test_bus_policy_lets_the_daemon_own_its_name(unit):
    """dbus-daemon resolves <policy user=…> when it loads: the static user of the unit must be allowed to
    own the name, or the daemon fails at start with "Permission denied"."""
    user, bus_name = DAEMONS[unit]
    tree = ET.parse(SOURCE / "dbus" / f"{bus_name}.conf")
    owners = {p.get("user") for p in tree.getroot().iter("policy")
              if any(a.get("own") == bus_name for a in p.iter("allow"))}
    assert user in owners, f"dbus/{bus_name}.conf lets only {sorted(o for o in owners if o)} own {bus_name}"
    sysusers = (SOURCE / "sysusers" / "ztna.conf").read_text()
    assert re.search(rf"^u\s+{re.escape(user)}\s", sysusers, flags=re.M), f"{user} not in sysusers/ztna.conf"


@pytest.mark.parametrize("name", ["Controller1", "Connector1", "Tunneler1"])
def test_bus_activation_files(name):
    p = configparser.ConfigParser(interpolation=None)
    p.optionxform = str
    p.read(SOURCE / "dbus" / f"org.ztna.{name}.service")
    s = p["D-BUS Service"]
    role = name.removesuffix("1").lower()
    assert s["Name"] == f"org.ztna.{name}" and s["User"] == "root" and s["Exec"] == "/bin/false"
    assert s["SystemdService"] == f"ztna-{role}.service"
    assert (SOURCE / "units" / (s["SystemdService"] + ".in")).is_file()
