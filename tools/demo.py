# SPDX-License-Identifier: Apache-2.0
"""The ztna demo (run through tools/demo.sh): a controller, a lab with private services and a connector, and
a laptop with a tunneler, each in its own network namespace (tools/netns_topology.py), enrolled with
tokens, with a policy granting the laptop the lab's web server and SSH-like service and nothing else.

    demo.py start BUILD_DIR     bring everything up and leave it running
    demo.py stop                stop every process it started (by PID) and remove the namespaces
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import netns_topology as nt  # noqa: E402

PREFIX = "ztd"
STATE = pathlib.Path("/run/ztna-demo")
PIDS = STATE / "pids.json"
BUS = STATE / "bus.sock"
BUS_ADDRESS = f"unix:path={BUS}"
CONTROLLER = f"{nt.ADDRESSES['ctl']}:8443"
CONNECTOR_DP = f"{nt.ADDRESSES['lab']}:8447"


def say(msg):
    print(f"\033[1m==> {msg}\033[0m", flush=True)


def env():
    e = dict(os.environ)
    e["ZTNA_BUS_ADDRESS"] = BUS_ADDRESS
    e["ZTNA_LOG_TARGET"] = "console"
    for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "CREDENTIALS_DIRECTORY", "ENROLLMENT_TOKEN"):
        e.pop(k, None)
    return e


def wait_for(what, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}; logs are in {STATE}/*.log")


def write_conf(path, sections):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"[{s}]\n" + "".join(f"{k}={v}\n" for k, v in items) + "\n"
                            for s, items in sections))


class Demo:
    def __init__(self, build):
        self.build = pathlib.Path(build).resolve()
        self.topo = nt.Topology(PREFIX)
        self.pids = []

    def binary(self, name):
        sub = {"ztna-controller": "controller", "ztna-connector": "connector", "ztna-tunneler": "tunneler",
               "ztnactl": "ztnactl"}[name]
        return self.build / "src" / sub / name

    def ztnactl(self, *args):
        r = subprocess.run([self.binary("ztnactl"), "--no-ask-password", *args], env=env(), text=True,
                           capture_output=True)
        if r.returncode != 0:
            raise SystemExit(f"demo: ztnactl {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def spawn(self, role, name, argv):
        log = open(STATE / f"{name}.log", "w")
        p = self.topo.popen(role, argv, env=env(), stdout=log, stderr=subprocess.STDOUT)
        self.pids.append(p.pid)
        PIDS.write_text(json.dumps(self.pids))
        return p

    def start(self):
        if self.topo.exists() or PIDS.exists():
            raise SystemExit("demo: already running; stop it first with: sudo ./tools/demo.sh --stop")
        shutil.rmtree(STATE, ignore_errors=True)
        STATE.mkdir(mode=0o700, parents=True)

        say("Network namespaces: ztdctl (controller), ztdlab (connector + private LAN), ztdlaptop (tunneler)")
        self.topo.create()
        PIDS.write_text("[]")
        services = self.topo.start_lab_services(log=open(STATE / "lab-services.log", "w"))
        self.pids.append(services.pid)

        say("A private D-Bus daemon for the demo (the host's system bus is left alone)")
        (STATE / "bus.conf").write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>{BUS_ADDRESS}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="root"/><allow own="*"/><allow send_destination="*"/>
<allow receive_type="method_call"/><allow receive_type="signal"/><allow receive_type="method_return"/>
<allow receive_type="error"/></policy></busconfig>
""")
        bus = subprocess.Popen(["dbus-daemon", f"--config-file={STATE / 'bus.conf'}", "--nofork", "--nopidfile"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=open(STATE / "bus.log", "w"), start_new_session=True)
        self.pids.append(bus.pid)
        PIDS.write_text(json.dumps(self.pids))
        wait_for("the bus", BUS.exists)

        say(f"Controller on {CONTROLLER}")
        ctl = STATE / "controller"
        write_conf(ctl / "controller.conf", [
            ("Controller", [("TrustDomain", "demo.ztna"), ("Id", "ctl-1")]),
            ("Network", [("ListenGRPC", CONTROLLER), ("AdvertisedAddresses", CONTROLLER),
                         ("ListenAdmin", f"{nt.ADDRESSES['ctl']}:8444")]),
            ("Storage", [("Database", ctl / "controller.db"), ("KeyFile", ctl / "kek")]),
        ])
        r = self.topo.exec("ctl", [self.binary("ztna-controller"), f"--confdir={ctl}", "init"], env=env())
        if r.returncode != 0:
            raise SystemExit(f"demo: controller init failed: {r.stderr}")
        self.spawn("ctl", "controller", [self.binary("ztna-controller"), f"--confdir={ctl}", "run"])
        wait_for("the controller", lambda: subprocess.run(
            [self.binary("ztnactl"), "ca", "status"], env=env(), capture_output=True).returncode == 0)

        say("Policy: network 'lab'; resources web (192.168.100.10:80) and ssh (ssh.lab.example:22); group "
            "'laptops' granted both. Nothing grants 192.168.100.10:8080 or 192.168.100.20.")
        self.ztnactl("network", "create", "lab", "--description", "the demo lab")
        self.ztnactl("resource", "create", "web", "--address", nt.LAB_WEB, "--ports", "80", "--protocol", "tcp",
                     "--network", "lab", "--alias", "web.lab.example")
        self.ztnactl("resource", "create", "ssh", "--address", "ssh.lab.example", "--ports", "22",
                     "--protocol", "tcp", "--network", "lab")
        self.ztnactl("group", "create", "laptops")
        self.ztnactl("policy", "create", "laptops", "web")
        self.ztnactl("policy", "create", "laptops", "ssh")

        say("Tokens, enrollment and the agents")
        tokens = STATE / "tokens"
        tokens.mkdir(mode=0o700)
        self.ztnactl("token", "create", "--role", "connector", "--id", "lab-connector", "--network", "lab",
                     "--output", str(tokens / "connector.token"))
        self.ztnactl("token", "create", "--role", "tunneler", "--id", "laptop", "--group", "laptops",
                     "--output", str(tokens / "tunneler.token"))

        conn = STATE / "connector"
        write_conf(conn / "etc" / "connector.conf", [
            ("Connector", [("DataPlaneListen", CONNECTOR_DP), ("DataPlaneAddress", CONNECTOR_DP),
                           ("Resolvers", nt.LAB_DNS)]),
            ("Health", [("Listen", "127.0.0.1:8445")]),
        ])
        tun = STATE / "tunneler"
        write_conf(tun / "etc" / "tunneler.conf", [
            ("Tunneler", [("SocksListen", "127.0.0.1:1080"), ("HttpProxyListen", "127.0.0.1:3128"),
                          ("Forward", "127.0.0.1:2222=ssh.lab.example:22")]),
            ("Health", [("Listen", "127.0.0.1:8446")]),
        ])
        for role, d, ns in (("connector", conn, "lab"), ("tunneler", tun, "laptop")):
            argv = [self.binary(f"ztna-{role}"), f"--confdir={d / 'etc'}", f"--state-dir={d / 'state'}",
                    f"--kek-file={d / 'kek'}"]
            r = self.topo.exec(ns, argv + ["enroll", f"--token-file={tokens / (role + '.token')}"], env=env())
            if r.returncode != 0:
                raise SystemExit(f"demo: {role} enrollment failed: {r.stderr}")
            print(f"    {role}: {r.stdout.strip()}")
            self.spawn(ns, role, argv + ["run"])
        wait_for("both agents online", lambda: all(
            subprocess.run([self.binary("ztnactl"), "health", role], env=env(),
                           capture_output=True).returncode == 0 for role in ("connector", "tunneler")))
        time.sleep(1)

        say("From the laptop, which has no route to the lab:")
        self.show("direct: curl http://192.168.100.10/ (no route, fails)",
                  ["curl", "-sS", "-m", "3", "http://192.168.100.10/"])
        self.show("SOCKS5: curl --socks5-hostname 127.0.0.1:1080 http://web.lab.example/",
                  ["curl", "-sS", "-m", "10", "--socks5-hostname", "127.0.0.1:1080", "http://web.lab.example/"])
        self.show("HTTP proxy: curl -p -x http://127.0.0.1:3128 http://192.168.100.10/",
                  ["curl", "-sS", "-m", "10", "-p", "-x", "http://127.0.0.1:3128", "http://192.168.100.10/"])
        self.show("forward: 127.0.0.1:2222 → ssh.lab.example:22 (the SSH banner)",
                  ["python3", "-c", "import socket; s=socket.create_connection(('127.0.0.1', 2222), 5); "
                   "print(s.recv(100).decode().strip())"])
        self.show("not granted: curl --socks5-hostname 127.0.0.1:1080 http://192.168.100.10:8080/ (refused)",
                  ["curl", "-sS", "-m", "10", "--socks5-hostname", "127.0.0.1:1080", "http://192.168.100.10:8080/"])
        print(f"""
The demo keeps running. Poke at it:

  export ZTNA_BUS_ADDRESS={BUS_ADDRESS}
  {self.binary('ztnactl')} agents list
  {self.binary('ztnactl')} status                      # the local agents (connector, tunneler)
  {self.binary('ztnactl')} resource list
  ip netns exec {PREFIX}laptop curl --socks5-hostname 127.0.0.1:1080 http://web.lab.example/
  ip netns exec {PREFIX}laptop curl -p -x http://127.0.0.1:3128 http://192.168.100.10/
  busctl --address={BUS_ADDRESS} introspect org.ztna.Tunneler1 /org/ztna/Tunneler1
  {self.binary('ztnactl')} agents revoke laptop        # the laptop loses access at once
  less {STATE}/connector.log                            # flow audit: each stream's start and end

Stop it with: sudo ./tools/demo.sh --stop
""")

    def show(self, title, argv):
        print(f"  $ {title}")
        r = self.topo.exec("laptop", argv, timeout=20)
        out = (r.stdout.strip() or r.stderr.strip() or "(nothing)").replace("\n", "\n      ")
        print(f"      {out}   [exit {r.returncode}]")


def stop():
    import signal
    pids = json.loads(PIDS.read_text()) if PIDS.exists() else []
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    nt.Topology(PREFIX).destroy()
    shutil.rmtree(STATE, ignore_errors=True)
    say("Demo stopped: processes ended, namespaces removed.")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "start":
        Demo(sys.argv[2]).start()
    elif sys.argv[1:] == ["stop"]:
        stop()
    else:
        sys.exit(__doc__)
