# SPDX-License-Identifier: Apache-2.0
"""Fixtures for the tests under tests/systemd/: the distro packages, built once per session.

    packages_dir   a directory holding the .deb files of this version (the four packages, their dbgsym
                   packages, the .changes and .buildinfo), built by tools/build-packages.sh --deb from a clean
                   copy of the work tree
    debs           {package name: path of its .deb} for ztnactl, ztna-controller, ztna-connector, ztna-tunneler
    rpms           {package name: path of its .rpm}, built by tools/build-packages.sh --rpm into the same
                   directory

Where they are built: when $ZTNA_PACKAGES_DIR is set and already holds the four .debs of this version (or
.rpms), newer than every source file, they are used as they are, so tools/test.sh builds once and every
suite reuses the build; when it is set but holds none (or older ones), the packages are built into it;
when it is unset, into a temporary directory of this session. A machine without the packaging tools skips (with the package to install); a build that
fails is a failure, with the end of the tool's output.

Run with Debian's pytest: /usr/bin/python3 -m pytest tests/systemd
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2]
BUILD_SCRIPT = SRC / "tools" / "build-packages.sh"
BUILD_TIMEOUT = 1800

# The binary packages, in debian/control and in rpm/ztna.spec alike.
PACKAGES = ("ztnactl", "ztna-controller", "ztna-connector", "ztna-tunneler")


def deb_version():
    """The version of the packages debian/ builds: the first entry of debian/changelog."""
    first = (SRC / "debian" / "changelog").read_text().splitlines()[0]
    m = re.match(r"^ztna \(([^)]+)\)", first)
    assert m, f"debian/changelog starts with {first!r}, not 'ztna (VERSION) ...'"
    return m.group(1)


def deb_arch():
    return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()


def deb_paths(directory):
    """{package: the .deb of this version in directory} for those of PACKAGES that are there."""
    version, arch = deb_version(), deb_arch()
    found = {}
    for p in PACKAGES:
        f = pathlib.Path(directory) / f"{p}_{version}_{arch}.deb"
        if f.is_file():
            found[p] = f
    return found


def rpm_paths(directory):
    """{package: its .rpm of this version in directory}, by the name and version each file declares."""
    upstream = deb_version().rsplit("-", 1)[0]
    found = {}
    for f in sorted(pathlib.Path(directory).glob("*.rpm")):
        name, version = subprocess.run(["rpm", "-qp", "--qf", "%{NAME} %{VERSION}", str(f)], check=True,
                                       capture_output=True, text=True).stdout.split()
        if name in PACKAGES and version == upstream:
            found[name] = f
    return found


def newest_source():
    """The newest modification time among the files a package build copies (tools/build-packages.sh:
    git ls-files -co --exclude-standard), or None when git cannot say."""
    p = subprocess.run(["git", "-C", str(SRC), "ls-files", "-co", "--exclude-standard", "-z"],
                       capture_output=True)
    if p.returncode != 0:
        return None
    newest = 0.0
    for name in p.stdout.decode(errors="surrogateescape").split("\0"):
        try:
            newest = max(newest, os.lstat(SRC / name).st_mtime) if name else newest
        except FileNotFoundError:
            pass
    return newest


def up_to_date(found):
    """found ({package: file}) holds all PACKAGES, each newer than every source file."""
    if len(found) < len(PACKAGES):
        return False
    newest = newest_source()
    return newest is not None and all(f.stat().st_mtime >= newest for f in found.values())


def build(kind, directory):
    """tools/build-packages.sh --KIND DIRECTORY; a failure fails the test with the end of its output."""
    try:
        p = subprocess.run([str(BUILD_SCRIPT), f"--{kind}", str(directory)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tools/build-packages.sh --{kind} took more than {BUILD_TIMEOUT} s")
    if p.returncode != 0:
        pytest.fail(f"tools/build-packages.sh --{kind} exited with {p.returncode}:\n"
                    f"{p.stdout[-3000:]}\n{p.stderr[-12000:]}")


@pytest.fixture(scope="session")
def packages_root(tmp_path_factory):
    env = os.environ.get("ZTNA_PACKAGES_DIR")
    if env:
        d = pathlib.Path(env)
        d.mkdir(parents=True, exist_ok=True)
        return d.resolve()
    return tmp_path_factory.mktemp("packages")


@pytest.fixture(scope="session")
def packages_dir(packages_root):
    """The directory with the four .debs of this version, built now unless they are there already."""
    if not up_to_date(deb_paths(packages_root)):
        for tool, package in (("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper")):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (Debian: apt-get install {package}; "
                            "tools/install-deps.sh installs it)")
        build("deb", packages_root)
        missing = set(PACKAGES) - set(deb_paths(packages_root))
        assert not missing, f"tools/build-packages.sh --deb built no .deb for {sorted(missing)}"
    return packages_root


@pytest.fixture(scope="session")
def debs(packages_dir):
    return deb_paths(packages_dir)


@pytest.fixture(scope="session")
def rpms(packages_root):
    """{package: .rpm}, built now (into the same directory as the .debs) unless they are there already."""
    if not up_to_date(rpm_paths(packages_root)):
        if shutil.which("rpmbuild") is None:
            pytest.skip("rpmbuild is not installed (Debian: apt-get install rpm; tools/install-deps.sh "
                        "installs it)")
        build("rpm", packages_root)
    found = rpm_paths(packages_root)
    missing = set(PACKAGES) - set(found)
    assert not missing, f"tools/build-packages.sh --rpm built no .rpm for {sorted(missing)}"
    return found
