# SPDX-License-Identifier: Apache-2.0
"""A throwaway systemd-nspawn container booting the host's own /usr, for tests that need a real systemd as
PID 1 (socket activation, DynamicUser=, credentials, polkit, the journal) on a host whose PID 1 is not
systemd and that has no system bus.

    c = Container("ztna-test", workdir)
    c.boot()                              # PID 1 is systemd; is-system-running says running or degraded
    c.run("systemctl", "start", "x")      # any command, as root, inside
    c.write("/etc/ztna/x.conf", "…")      # files into the container's /etc, /tmp, /usr …
    c.terminate()                         # poweroff, then SIGTERM/SIGKILL of the nspawn process we started

How (no Docker, nothing on the host changes):
  systemd-nspawn -D / --volatile=yes    the root is a fresh tmpfs with the host's /usr mounted on it
  --overlay=/usr::/usr                  …writable through an overlay whose upper dir nspawn creates and
                                        deletes itself, so dpkg -i and meson install touch only the container
  --bind=COPY:/var/lib/dpkg             /var is on the tmpfs; dpkg needs its database (a copy: the host's is
                                        never written)
  --bind=DIR:/var/lib/systemd           systemd-creds --with-key=auto refuses a host key on a temporary file
                                        system; a directory on the host's disk keeps credential.secret there
  --private-network                     only a loopback of its own: every port the tests use is inside
  --register=no --keep-unit             no machined and no system bus on the host to register with
  --console=pipe                        PID 1's console goes to a log file of ours (in failure messages)

Commands run inside through `nsenter -t <PID of the container's systemd> -a`, with a clean environment.
They do NOT inherit what nspawn imposes on the container's own processes: its seccomp filter (which makes
add_key()/keyctl() fail with EPERM for every service, root's included) and its capability bounding set.
So what a unit does is tested through systemctl, never by running the daemon through nsenter.

Only processes this module started are ever signalled, by PID.
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

BOOT_TIMEOUT = 120.0
COMMAND_TIMEOUT = 60.0
POWEROFF_TIMEOUT = 45.0
# What the container's commands see: nothing of the caller's environment (pytest's, pyenv's, ZTNA_*).
INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LOG_COLOR": "0",
}


class ContainerError(Exception):
    """The container could not be booted or a command inside failed; the message says what was seen."""


def unavailable_reason():
    """Why no container can be booted on this machine at all (the tests skip with this), or None. Only
    missing preconditions count; a boot that fails once they hold is a real failure, not a skip."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root (run the systemd tests as root)"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install systemd-container util-linux)"
    if not os.access("/usr/lib/systemd/systemd", os.X_OK):
        return "/usr/lib/systemd/systemd is missing: the host's /usr has no systemd to boot"
    try:
        filesystems = pathlib.Path("/proc/filesystems").read_text()
    except OSError as e:
        return f"cannot read /proc/filesystems ({e})"
    if "overlay" not in filesystems.split():
        return "the kernel has no overlay file system (nspawn's --overlay= needs it)"
    return None


def _start_time(pid):
    """The start time of a process (field 22 of /proc/PID/stat), or None when it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Container:
    def __init__(self, name, workdir):
        self.name = name
        self.workdir = pathlib.Path(workdir)
        self.console_path = self.workdir / "console.log"
        self.proc = None         # the systemd-nspawn process
        self.pid = None          # the container's PID 1 (systemd), as seen from the host
        self._init = None        # (PID, start time) of that systemd, to recognise it after nspawn is gone
        self._console = None

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def boot(self, timeout=BOOT_TIMEOUT, binds=(), ro_binds=(), extra_args=()):
        """Starts the container and waits until its systemd finished starting up (running or degraded).
        binds/ro_binds: extra (host path, container path) pairs; extra_args: more systemd-nspawn options.
        Raises ContainerError, with the console, the failed units and the pending jobs, when it does not get
        there within timeout."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        dpkg = self.workdir / "dpkg"
        if not dpkg.exists():
            shutil.copytree("/var/lib/dpkg", dpkg, symlinks=True)
        systemd_state = self.workdir / "var-lib-systemd"
        systemd_state.mkdir(mode=0o755, exist_ok=True)
        argv = ["systemd-nspawn", "-D", "/", "--volatile=yes", "--register=no", "--keep-unit",
                f"--machine={self.name}", "--boot", "--console=pipe", "--private-network",
                "--overlay=/usr::/usr", f"--bind={dpkg}:/var/lib/dpkg",
                f"--bind={systemd_state}:/var/lib/systemd"]
        argv += [f"--bind={h}:{c}" for h, c in binds]
        argv += [f"--bind-ro={h}:{c}" for h, c in ro_binds]
        argv += list(extra_args)
        self._console = open(self.console_path, "ab")
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._console,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        self.pid = self._find_init(deadline)
        # systemctl says "offline" until PID 1 has its private socket up: ask again until it answers.
        while True:
            left = max(1.0, deadline - time.monotonic())
            p = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=left)
            state = p.stdout.strip()
            if state not in ("", "offline") or time.monotonic() > deadline or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if state not in ("running", "degraded"):
            raise ContainerError(f"the container's systemd is {state!r} (exit status {p.returncode}), not "
                                 f"running or degraded after {timeout} s\n{self.diagnostics()}")
        # --private-network leaves only a loopback, which systemd-networkd-wait-online never counts as
        # online: every unit ordered after network-online.target would wait its 2 min timeout first.
        self.systemctl("mask", "--now", "systemd-networkd-wait-online.service")
        self._prune_statoverrides()
        return state

    def _prune_statoverrides(self):
        """The container's /etc holds only the users and groups systemd-sysusers made at boot, so
        dpkg-statoverride entries of the host's packages naming others (e.g. ssl-cert) would make every
        dpkg run abort. They concern files of the host's packages, never ours: drop them from our copy."""
        known = {}
        for db in ("passwd", "group"):
            known[db] = {line.split(":", 1)[0] for line in
                         self.host_path(f"/etc/{db}").read_text().splitlines() if line}
        path = self.workdir / "dpkg" / "statoverride"
        if path.exists():
            def resolvable(name, db):
                return name.startswith("#") or name in known[db]  # "#N": a numeric id

            kept = [line for line in path.read_text().splitlines()
                    if len(line.split()) >= 2 and resolvable(line.split()[0], "passwd")
                    and resolvable(line.split()[1], "group")]
            path.write_text("".join(f"{line}\n" for line in kept))

    def _find_init(self, deadline):
        """The PID of the systemd that nspawn started (its child, once it has exec'd systemd)."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode} while booting:\n"
                                     f"{self.console()}")
            try:
                children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            except OSError:
                children = ""
            for child in children.split():
                try:
                    cmdline = pathlib.Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if cmdline and os.path.basename(cmdline[0]) == b"systemd":
                    self._init = (int(child), _start_time(child))
                    return int(child)
            time.sleep(0.05)
        raise ContainerError(f"no systemd started in the container within the boot timeout:\n{self.console()}")

    def terminate(self, timeout=POWEROFF_TIMEOUT):
        """Powers the container off and waits for nspawn to exit: `systemctl poweroff` inside, then SIGTERM
        (nspawn halts the container), a second SIGTERM (immediate termination), SIGKILL — each only to the
        nspawn process we started. Safe to call twice or after a failed boot. Returns nspawn's exit status."""
        if self.proc is None:
            return None
        steps = [signal.SIGTERM, signal.SIGTERM, signal.SIGKILL]
        if self.proc.poll() is None and self.pid is not None:
            try:
                if self.run("systemctl", "poweroff", "--no-block", check=False, timeout=15).returncode == 0:
                    steps.insert(0, "wait")
            except ContainerError:
                pass
        for step in steps:
            if step != "wait" and self.proc.poll() is None:
                os.kill(self.proc.pid, step)
            try:
                self.proc.wait(timeout=timeout if step == "wait" else 15)
                break
            except subprocess.TimeoutExpired:
                continue
        # A SIGKILLed nspawn leaves the container running: its PID 1 (the one we saw start, not a reused
        # PID) takes every process of the container's PID namespace with it.
        if self._init and _start_time(self._init[0]) == self._init[1]:
            os.kill(self._init[0], signal.SIGKILL)
        self._init = None
        if self._console:
            self._console.close()
            self._console = None
        self.pid = None
        return self.proc.returncode

    def cleanup(self):
        """terminate(), then removes the work directory (copies of the dpkg database, logs) and the
        directory nspawn keeps for the machine in /run, which it leaves behind when it was killed."""
        try:
            self.terminate()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            try:
                os.rmdir(f"/run/systemd/nspawn/propagate/{self.name}")
            except OSError:
                pass

    # ---- commands inside ---------------------------------------------------------------------------------

    def run(self, *argv, input=None, check=True, timeout=COMMAND_TIMEOUT, user=None, text=True, env=None):
        """Runs argv as root (or as user, with that user's primary group and no other) inside every namespace
        of the container; returns the CompletedProcess. check: raise ContainerError with the output on a
        non-zero exit status. setpriv, not runuser: runuser needs PAM's configuration, which the empty /etc
        of a volatile container does not have."""
        if self.pid is None:
            raise ContainerError("the container is not running")
        argv = [str(a) for a in argv]
        if user is not None:
            group = self.run("id", "-gn", user).stdout.strip()
            argv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--", *argv]
        e = dict(INSIDE_ENV)
        e.update(env or {})
        full = ["nsenter", "-t", str(self.pid), "-a", "--", "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in e.items()), *argv]
        kwargs = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        try:
            p = subprocess.run(full, capture_output=True, text=text, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired as ex:
            raise ContainerError(f"`{' '.join(argv)}` did not finish within {timeout} s: "
                                 f"{ex.stdout!r} {ex.stderr!r}") from None
        if check and p.returncode != 0:
            raise ContainerError(f"`{' '.join(argv)}` exited with {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def sh(self, script, **kwargs):
        return self.run("/bin/sh", "-c", script, **kwargs)

    def host_path(self, path):
        """The host's path to a file inside the container (through its PID 1's root, so the container's own
        mounts — the tmpfs root, the /usr overlay — are the ones traversed)."""
        return pathlib.Path(f"/proc/{self.pid}/root") / str(path).lstrip("/")

    def write(self, path, data, mode=0o644, owner=None):
        """Creates or replaces the file path inside (parents made 0755), with mode and owner ("user:group",
        resolved inside); data is str or bytes."""
        target = self.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(target, mode)
        if owner:
            self.run("chown", owner, path)

    def copy_in(self, src, dst, mode=None):
        """Copies the host file src to dst inside (a directory dst receives it under its own name)."""
        target = self.host_path(dst)
        if str(dst).endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            target = target / pathlib.Path(src).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target, follow_symlinks=True)
        if mode is not None:
            os.chmod(target, mode)
        return "/" + str(target.relative_to(self.host_path("/")))

    def read(self, path, binary=False):
        return self.run("cat", path, text=not binary).stdout

    # ---- systemd -----------------------------------------------------------------------------------------

    def systemctl(self, *args, check=True, timeout=COMMAND_TIMEOUT):
        """systemctl args; a failure (with check) carries the end of the journal of the units named."""
        p = self.run("systemctl", "--no-pager", *args, check=False, timeout=timeout)
        if check and p.returncode != 0:
            units = [a for a in args if re.search(r"\.(service|socket|target|timer|mount)$", str(a))]
            journal = self.run("journalctl", "--no-pager", "-n", "30", "-o", "cat",
                               *(f"--unit={u}" for u in units), check=False).stdout if units else ""
            raise ContainerError(f"`systemctl {' '.join(map(str, args))}` exited with {p.returncode}:\n"
                                 f"{p.stdout}{p.stderr}{journal}")
        return p

    def show(self, unit, *props):
        """`systemctl show -p …` as {property: value}."""
        p = self.systemctl("show", unit, *(f"--property={x}" for x in props))
        out = {}
        for line in p.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def journal(self, *args):
        return self.run("journalctl", "--no-pager", "--no-hostname", *args).stdout

    def wait_for(self, what, predicate, timeout, interval=0.2, details=None):
        """Polls predicate() until it returns a true value (returned) or timeout seconds pass: then raises
        ContainerError naming what, with details() (e.g. a unit's journal) when given."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                extra = ""
                if details is not None:
                    try:
                        extra = "\n" + details()
                    except Exception as e:  # the details must not hide the timeout itself
                        extra = f"\n(details unavailable: {e})"
                raise ContainerError(f"timed out after {timeout} s waiting for {what}{extra}")
            time.sleep(interval)

    # ---- diagnostics -------------------------------------------------------------------------------------

    def console(self, limit=4000):
        try:
            return self.console_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def diagnostics(self):
        """The failed units, the pending jobs and the end of the journal, for failure messages."""
        parts = []
        for title, argv in (("failed units", ["systemctl", "--no-pager", "--failed", "--no-legend"]),
                            ("jobs", ["systemctl", "--no-pager", "list-jobs", "--no-legend"]),
                            ("journal", ["journalctl", "--no-pager", "-n", "60", "-p", "warning"])):
            try:
                p = self.run(*argv, check=False, timeout=15)
                parts.append(f"--- {title}:\n{p.stdout}{p.stderr}")
            except ContainerError as e:
                parts.append(f"--- {title}: {e}")
        parts.append(f"--- console:\n{self.console(2000)}")
        return "\n".join(parts)
