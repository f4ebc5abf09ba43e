# SPDX-License-Identifier: Apache-2.0
"""The distro packages: what debian/ and rpm/ztna.spec build, checked without installing anything.

The .debs and .rpms come from the packages_dir/debs/rpms fixtures (conftest.py: tools/build-packages.sh,
once per session). Checked here: the four packages exist; each ships exactly the files of the split below
and no file is in two packages (the .deb and the .rpm alike); lintian finds no error and no warning
outside the short list of accepted ones; dpkg-deb -I shows the shared libraries the binaries link as
Depends (dh_shlibdeps) and the daemons' Depends on ztnactl of the same version; the maintainer scripts
carry the deb-systemd-helper, systemd-sysusers and systemd-tmpfiles snippets; rpmspec -P parses the spec
as it is (no macro of ours); rpm -qp --requires/--scripts show the same for the .rpms.

Installing them under a real systemd is the nspawn test's job (test_nspawn*.py).
"""
import pathlib
import re
import shutil
import subprocess

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("ztnactl", "ztna-controller", "ztna-connector", "ztna-tunneler")

# Debian 12's systemd.pc puts system units under /lib (the meson build uses what pkg-config says).
DEB_UNITDIR = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                             capture_output=True, text=True).stdout.strip() or "/usr/lib/systemd/system"
RPM_UNITDIR = "/usr/lib/systemd/system"

# The split, the same in debian/*.install and in the spec's %files. {unitdir} is the system unit
# directory, {zsh} the zsh completion directory (Debian: vendor-completions; Fedora: site-functions); man
# pages are compressed by both tools. Documentation (/usr/share/doc, /usr/share/licenses) is not listed.
SPLIT = {
    "ztnactl": [
        "/usr/bin/ztnactl",
        "/usr/libexec/ztna/ztna-seal-kek",
        "{unitdir}/ztna-kek@.service",
        "/usr/lib/sysusers.d/ztna.conf",
        "/usr/lib/tmpfiles.d/ztna.conf",
        "/usr/lib/systemd/catalog/ztna.catalog",
        "/usr/share/polkit-1/actions/org.ztna.policy",
        "/usr/share/polkit-1/rules.d/50-ztna.rules",
        "/usr/share/man/man1/ztnactl.1.gz",
        "/usr/share/man/man7/ztna.systemd.7.gz",
        "/usr/share/bash-completion/completions/ztnactl",
        "{zsh}/_ztnactl",
        "/usr/share/fish/vendor_completions.d/ztnactl.fish",
    ],
    "ztna-controller": [
        "/usr/bin/ztna-controller",
        "{unitdir}/ztna-controller.service",
        "{unitdir}/ztna-controller.socket",
        "{unitdir}/ztna-controller-admin.socket",
        "/usr/share/dbus-1/interfaces/org.ztna.Controller1.xml",
        "/usr/share/dbus-1/system.d/org.ztna.Controller1.conf",
        "/usr/share/dbus-1/system-services/org.ztna.Controller1.service",
        "/usr/share/polkit-1/actions/org.ztna.controller.policy",
        "/usr/share/man/man8/ztna-controller.8.gz",
        "/usr/share/man/man5/ztna-controller.conf.5.gz",
        "/usr/share/bash-completion/completions/ztna-controller",
        "{zsh}/_ztna-controller",
        "/usr/share/fish/vendor_completions.d/ztna-controller.fish",
    ],
}
for _role, _bus in (("connector", "Connector1"), ("tunneler", "Tunneler1")):
    SPLIT[f"ztna-{_role}"] = [
        f"/usr/bin/ztna-{_role}",
        f"{{unitdir}}/ztna-{_role}.service",
        f"/usr/share/dbus-1/interfaces/org.ztna.{_bus}.xml",
        f"/usr/share/dbus-1/system.d/org.ztna.{_bus}.conf",
        f"/usr/share/dbus-1/system-services/org.ztna.{_bus}.service",
        f"/usr/share/man/man8/ztna-{_role}.8.gz",
        f"/usr/share/man/man5/ztna-{_role}.conf.5.gz",
        f"/usr/share/bash-completion/completions/ztna-{_role}",
        f"{{zsh}}/_ztna-{_role}",
        f"/usr/share/fish/vendor_completions.d/ztna-{_role}.fish",
    ]
SPLIT["ztna-tunneler"].append("/usr/lib/systemd/user/ztna-tunneler.service")

# The shared libraries each binary links, as Debian packages (dh_shlibdeps must turn every NEEDED entry
# into one of these; the test also derives them from the binary itself).
LIBS_ALL = ["libc6", "libinih1", "libssl3", "libsystemd0"]
LIBS = {
    "ztnactl": LIBS_ALL + ["libjansson4"],
    "ztna-controller": LIBS_ALL + ["libargon2-1", "libjansson4", "libnghttp2-14", "libprotobuf-c1",
                                   "libsqlite3-0"],
    "ztna-connector": LIBS_ALL + ["libkeyutils1", "libmicrohttpd12", "libnghttp2-14", "libprotobuf-c1"],
    "ztna-tunneler": LIBS_ALL + ["libkeyutils1", "libmicrohttpd12", "libnghttp2-14", "libprotobuf-c1"],
}

# Lintian warnings accepted, each with its reason; anything else it warns about fails the test.
LINTIAN_ACCEPTED = {
    # Debian wants the first upload of a package to close its ITP bug; ztna is not uploaded to Debian.
    "initial-upload-closes-no-bugs",
}

DAEMON_UNITS = {
    "ztna-controller": ["ztna-controller-admin.socket", "ztna-controller.service", "ztna-controller.socket"],
    "ztna-connector": ["ztna-connector.service"],
    "ztna-tunneler": ["ztna-tunneler.service"],
}


def deb_version():
    return re.match(r"^ztna \(([^)]+)\)", (SRC / "debian" / "changelog").read_text()).group(1)


def need(tool, package):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {package}; tools/install-deps.sh "
                    "installs it)")


def run(*argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kwargs).stdout


def expected(package, unitdir, zsh):
    return {p.format(unitdir=unitdir, zsh=zsh) for p in SPLIT[package]}


def is_doc(path):
    return path.startswith(("/usr/share/doc/", "/usr/share/licenses/", "/usr/lib/.build-id"))


def deb_files(deb):
    """The regular files and symlinks in a .deb, as absolute paths."""
    files = set()
    for line in run("dpkg-deb", "-c", deb).splitlines():
        fields = line.split(None, 5)
        if not fields[0].startswith("d"):
            files.add("/" + fields[5].split(" -> ")[0].removeprefix("./"))
    return files


def deb_field(deb, field):
    return run("dpkg-deb", "-f", deb, field).strip()


def control_file(deb, name, tmp_path):
    d = tmp_path / pathlib.Path(deb).stem
    if not d.exists():
        run("dpkg-deb", "-e", deb, d)
    f = d / name
    return f.read_text() if f.exists() else ""


# ---- .deb ----------------------------------------------------------------------------------------------


def test_debs_exist(debs):
    version = deb_version()
    assert sorted(debs) == sorted(PACKAGES)
    for name, deb in debs.items():
        assert deb_field(deb, "Package") == name
        assert deb_field(deb, "Version") == version
        assert deb_field(deb, "Source") in ("ztna", f"ztna ({version})", "")


@pytest.mark.parametrize("package", PACKAGES)
def test_deb_contents(debs, package):
    files = {f for f in deb_files(debs[package]) if not is_doc(f)}
    want = expected(package, DEB_UNITDIR, "/usr/share/zsh/vendor-completions")
    assert sorted(want - files) == [], f"{package} lacks files of its split"
    assert sorted(files - want) == [], f"{package} ships files outside its split"
    assert f"/usr/share/doc/{package}/copyright" in deb_files(debs[package])


def test_deb_no_file_in_two_packages(debs):
    seen = {}
    for name, deb in debs.items():
        for f in deb_files(deb):
            if f.startswith(f"/usr/share/doc/{name}/"):
                continue
            assert f not in seen, f"{f} is in both {seen[f]} and {name}"
            seen[f] = name


def test_deb_split_covers_every_man_page_and_completion():
    """Every page man/meson.build builds and every completion file is placed in exactly one package."""
    split = {p for files in SPLIT.values() for p in files}
    pages = re.findall(r"\['([^']+\.[1-8])',", (SRC / "man" / "meson.build").read_text())
    assert pages, "no man page list in man/meson.build"
    for page in pages:
        section = page.rsplit(".", 1)[1]
        assert f"/usr/share/man/man{section}/{page}.gz" in split, f"man page {page} is in no package"
    dirs = {"bash": "/usr/share/bash-completion/completions", "zsh": "{zsh}",
            "fish": "/usr/share/fish/vendor_completions.d"}
    for f in (SRC / "completions").glob("*/*"):
        assert f"{dirs[f.parent.name]}/{f.name}" in split, f"completion {f} is in no package"


@pytest.mark.parametrize("package", PACKAGES)
def test_deb_depends(debs, package):
    deb = debs[package]
    depends = [d.strip() for d in deb_field(deb, "Depends").split(",")]
    names = {re.split(r"[ (]", d)[0] for d in depends}
    assert set(LIBS[package]) <= names, f"Depends: {depends}"
    if package != "ztnactl":
        assert f"ztnactl (= {deb_version()})" in depends
    else:
        # dh_installsysusers: systemd-sysusers must be there when the postinst runs.
        assert any(d.startswith("systemd") for d in depends), depends


@pytest.mark.parametrize("package", PACKAGES)
def test_deb_depends_match_needed_libraries(debs, package, tmp_path):
    """Every NEEDED entry of the binary maps (through dpkg -S on this host) to a package in Depends."""
    need("objdump", "binutils")
    run("dpkg-deb", "-x", debs[package], tmp_path)
    binary = tmp_path / "usr" / "bin" / package
    needed = re.findall(r"NEEDED\s+(\S+)", run("objdump", "-p", binary))
    assert needed
    names = {re.split(r"[ (]", d.strip())[0] for d in deb_field(debs[package], "Depends").split(",")}
    for soname in needed:
        owners = run("dpkg", "-S", f"*/{soname}").splitlines()
        pkgs = {o.split(":")[0] for o in owners}
        assert pkgs & names, f"{soname} ({pkgs}) is not in Depends of {package}: {sorted(names)}"


def test_deb_maintainer_scripts(debs, tmp_path):
    postinst = {p: control_file(debs[p], "postinst", tmp_path) for p in PACKAGES}
    prerm = {p: control_file(debs[p], "prerm", tmp_path) for p in PACKAGES}
    postrm = {p: control_file(debs[p], "postrm", tmp_path) for p in PACKAGES}

    # ztnactl: the users and the directories, once (upstream's sysusers.d file, picked up by
    # dh_installsysusers; no debian/ztnactl.sysusers), and no unit enabled or started (the KEK template
    # is pulled in by the daemons' Requires=).
    assert postinst["ztnactl"].count("systemd-sysusers") == 1
    assert re.search(r"systemd-sysusers .*ztna\.conf", postinst["ztnactl"])
    assert re.search(r"systemd-tmpfiles .*--create ztna\.conf", postinst["ztnactl"])
    assert "deb-systemd-helper enable" not in postinst["ztnactl"]
    # ...and dbus reloads its configuration after the users exist (debian/ztnactl.postinst), before any
    # daemon package's postinst starts a daemon that must own its name under a policy naming its user.
    sysusers_at = postinst["ztnactl"].index("systemd-sysusers")
    reload_at = postinst["ztnactl"].find("org.freedesktop.DBus.ReloadConfig")
    assert reload_at > sysusers_at, "ztnactl's postinst does not reload dbus after creating the users"
    assert "deb-systemd-invoke" not in postinst["ztnactl"]

    for package, units in DAEMON_UNITS.items():
        script = postinst[package]
        for unit in units:
            assert f"deb-systemd-helper enable '{unit}'" in script, f"{package} does not enable {unit}"
        started = re.search(r"deb-systemd-invoke \$_dh_action (.*) >/dev/null", script)
        assert started, f"{package} starts nothing"
        assert sorted(started.group(1).replace("'", "").split()) == sorted(units)
        assert "deb-systemd-invoke stop" in prerm[package]
        assert "deb-systemd-helper purge" in postrm[package]
        # The daemons' users come from ztnactl's postinst, configured first (Depends).
        assert "systemd-sysusers" not in script

    # The desktop user unit is known to deb-systemd-helper but not enabled for every user.
    user = postinst["ztna-tunneler"]
    assert "deb-systemd-helper --user" in user
    assert "deb-systemd-helper --user enable 'ztna-tunneler.service'" in user
    assert "was-enabled 'ztna-tunneler.service'" in user
    assert re.search(r"if deb-systemd-helper --quiet --user was-enabled", user), \
        "the user unit must be enabled only where a user had it enabled before (dh_installsystemduser --no-enable)"


def test_deb_catalog_triggers_systemd(debs):
    """journalctl --update-catalog runs on install through systemd's dpkg trigger on its catalog
    directory (Debian's systemd.postinst, 'triggered' /usr/lib/systemd/catalog): the file must be there."""
    assert "/usr/lib/systemd/catalog/ztna.catalog" in deb_files(debs["ztnactl"])
    triggers = pathlib.Path("/var/lib/dpkg/info/systemd.triggers")
    if triggers.exists():
        assert "/usr/lib/systemd/catalog" in triggers.read_text()


def meson_dependencies():
    """The pkg-config names of the required dependency() calls in the tree's meson.build files."""
    names = set()
    for f in SRC.glob("**/meson.build"):
        if any(part.startswith("build") or part == "node_modules" for part in f.relative_to(SRC).parts):
            continue
        for m in re.finditer(r"dependency\(\s*'([^']+)'([^)]*)\)", f.read_text()):
            if "required : false" not in m.group(2) and "required: false" not in m.group(2):
                names.add(m.group(1))
    return names


def test_build_dependencies_follow_meson():
    """Every library meson.build requires is a Build-Depends (the -dev package holding its .pc file on
    this host) and a BuildRequires: pkgconfig(NAME) of the spec; scdoc and systemd.pc too."""
    need("pkg-config", "pkg-config")
    control = (SRC / "debian" / "control").read_text()
    build_depends = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S).group(1)
    bd = {re.split(r"[ (]", d.strip())[0] for d in build_depends.split(",") if d.strip()}
    spec = (SRC / "rpm" / "ztna.spec").read_text()
    deps = meson_dependencies()
    assert {"libsystemd", "openssl"} <= deps, deps
    for name in sorted(deps):
        assert re.search(rf"^BuildRequires:\s+pkgconfig\({re.escape(name)}\)", spec, re.M), \
            f"rpm/ztna.spec lacks BuildRequires: pkgconfig({name})"
        pcdir = run("pkg-config", "--variable=pcfiledir", name).strip()
        owner = run("dpkg", "-S", f"{pcdir}/{name}.pc").split(":")[0]
        assert owner in bd, f"debian/control lacks Build-Depends: {owner} (for {name}.pc)"
    for package in ("scdoc", "systemd", "protobuf-c-compiler", "meson", "pkg-config"):
        assert package in bd, f"debian/control lacks Build-Depends: {package}"
    for name in ("scdoc", "protobuf-c-compiler", "pkgconfig(systemd)", "systemd-rpm-macros"):
        assert re.search(rf"^BuildRequires:\s+{re.escape(name)}", spec, re.M), f"spec lacks {name}"


def test_lintian(packages_dir, debs):
    need("lintian", "lintian")
    changes = sorted(pathlib.Path(packages_dir).glob(f"ztna_{deb_version()}_*.changes"))
    assert changes, f"no .changes in {packages_dir}"
    p = subprocess.run(["lintian", "--fail-on", "error", "--display-level", ">=warning",
                        str(changes[-1])], capture_output=True, text=True, timeout=600)
    tags = re.findall(r"^([EW]): (\S+?)(?: \S+)?: (\S+)(.*)$", p.stdout, re.M)
    errors = [t for t in tags if t[0] == "E"]
    warnings = [t for t in tags if t[0] == "W" and t[2] not in LINTIAN_ACCEPTED]
    assert p.returncode == 0 and not errors, f"lintian exited {p.returncode}:\n{p.stdout}{p.stderr}"
    assert not warnings, f"lintian warnings outside the accepted list:\n{p.stdout}"


# ---- .rpm ----------------------------------------------------------------------------------------------


def test_rpmspec_parses():
    """The spec parses with this machine's rpm as it is: Fedora's macros it lacks stay unexpanded."""
    need("rpmspec", "rpm")
    spec = SRC / "rpm" / "ztna.spec"
    p = subprocess.run(["rpmspec", "-P", str(spec)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for package in ("ztnactl", "controller", "connector", "tunneler"):
        assert re.search(rf"^%files (-n )?{package}$", p.stdout, re.M), f"no %files for {package}"
    built = run("rpmspec", "-q", "--builtrpms", "--qf", "%{NAME}\n", spec).split()
    assert sorted(built) == sorted(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_rpm_contents(rpms, package):
    # Man pages are compared without their compression suffix: Debian's rpm 4.18 runs brp-compress (a
    # #!/bin/sh script using bash's `read -d`) with dash, where it fails and leaves them uncompressed;
    # Fedora's gzips them. The spec's %files take both (NAME.N*).
    def plain(paths):
        return {re.sub(r"^(/usr/share/man/.*)\.gz$", r"\1", f) for f in paths}

    files = plain(f for f in run("rpm", "-qlp", rpms[package]).split() if not is_doc(f))
    want = plain(expected(package, RPM_UNITDIR, "/usr/share/zsh/site-functions"))
    # The spec owns its private directory of helpers.
    if package == "ztnactl":
        want.add("/usr/libexec/ztna")
    assert sorted(want - files) == [], f"{package}.rpm lacks files of its split"
    assert sorted(files - want) == [], f"{package}.rpm ships files outside its split"
    assert any(f.endswith("/LICENSE") for f in run("rpm", "-qlp", rpms[package]).split())


def test_rpm_requires_and_scripts(rpms):
    upstream = deb_version().rsplit("-", 1)[0]
    for package in DAEMON_UNITS:
        requires = run("rpm", "-qp", "--requires", rpms[package]).splitlines()
        assert any(re.match(rf"ztnactl(\(\S+\))? = {re.escape(upstream)}-", r) for r in requires), requires
        assert any(r.startswith("libsystemd.so.0") for r in requires), requires
        scripts = run("rpm", "-qp", "--scripts", rpms[package])
        for unit in DAEMON_UNITS[package]:
            assert unit in scripts, f"{package}.rpm's scriptlets do not name {unit}"
        assert "preuninstall scriptlet" in scripts and "postuninstall scriptlet" in scripts
    # ztnactl: the users before the files land (%sysusers_create_compat of sysusers/ztna.conf: the
    # Fedora macro writes useradd/groupadd calls, the stand-in defined for Debian's rpm pipes the file
    # into systemd-sysusers), the directories after.
    scripts = run("rpm", "-qp", "--scripts", rpms["ztnactl"])
    pre = scripts.split("preinstall scriptlet", 1)[1].split("postinstall scriptlet", 1)[0]
    for user in ("ztna-controller", "ztna-connector", "ztna-tunneler"):
        assert user in pre, f"ztnactl.rpm's %pre does not create {user}"
    assert "systemd-tmpfiles --create ztna.conf" in scripts
