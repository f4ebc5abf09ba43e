# SPDX-License-Identifier: Apache-2.0
"""A small private internet in network namespaces, for tools/demo.sh and the data-plane tests.

    <prefix>wan     a bridge: the "internet" joining the three below on 10.99.0.0/24
    <prefix>ctl     the controller                       10.99.0.1
    <prefix>lab     the private network's connector      10.99.0.2, and the lab LAN on a dummy interface:
                      192.168.100.10  web (:80), ssh-like banner (:22), an ungranted service (:8080),
                                      a discard service that counts bytes (:9), a tarpit (:7)
                      192.168.100.20  another host (:80)
                      192.168.100.53  a DNS server for lab.example (names below)
                    (on a veth pair inside the lab: the lab's own addresses, routed nowhere)
    <prefix>laptop  the tunneler                         10.99.0.3 — no route to 192.168.100.0/24

The lab namespace does not forward packets, so the laptop reaches the lab's LAN only through the
connector. Names: web.lab.example and ssh.lab.example → .10, other.lab.example → .20, anything under
apps.lab.example → .10 (for wildcard resources). Every address lives inside these namespaces; nothing here
touches the host's own interfaces. Processes are started with `ip netns exec` and stopped by PID.
"""
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

WAN_NET = "10.99.0"
LAB_WEB = "192.168.100.10"
LAB_OTHER = "192.168.100.20"
LAB_DNS = "192.168.100.53"
ADDRESSES = {"ctl": f"{WAN_NET}.1", "lab": f"{WAN_NET}.2", "laptop": f"{WAN_NET}.3"}
DNS_NAMES = {
    "web.lab.example": LAB_WEB,
    "ssh.lab.example": LAB_WEB,
    "other.lab.example": LAB_OTHER,
    "sink.lab.example": LAB_WEB,
    "closed.lab.example": LAB_WEB,   # port 81: nothing listens there
    "slow.lab.example": LAB_WEB,     # port 7: a tarpit that never completes a handshake
}
DNS_WILDCARD = ("apps.lab.example", LAB_WEB)
WEB_BODY = b"hello from the lab\n"
SSH_BANNER = b"SSH-2.0-ztna-lab-demo\r\n"


def run(*argv, check=True):
    return subprocess.run([str(a) for a in argv], check=check, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Topology:
    def __init__(self, prefix):
        # Interface names are at most 15 bytes: keep the prefix short.
        assert len(prefix) <= 8, prefix
        self.prefix = prefix
        self.ns = {k: f"{prefix}{k}" for k in ("wan", "ctl", "lab", "laptop")}
        self.procs = []

    # ---- namespaces ----
    def exists(self):
        out = run("ip", "netns", "list").stdout
        return any(line.split()[0] == self.ns["wan"] for line in out.splitlines() if line.strip())

    def create(self):
        for name in self.ns.values():
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        wan = self.ns["wan"]
        run("ip", "-n", wan, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", wan, "link", "set", "br0", "up")
        for role in ("ctl", "lab", "laptop"):
            inner, outer = f"{self.prefix}{role}0"[:15], f"{self.prefix}{role}1"[:15]
            run("ip", "link", "add", inner, "netns", self.ns[role], "type", "veth", "peer", "name", outer,
                "netns", wan)
            run("ip", "-n", wan, "link", "set", outer, "master", "br0")
            run("ip", "-n", wan, "link", "set", outer, "up")
            run("ip", "-n", self.ns[role], "link", "set", inner, "name", "wan0")
            run("ip", "-n", self.ns[role], "addr", "add", f"{ADDRESSES[role]}/24", "dev", "wan0")
            run("ip", "-n", self.ns[role], "link", "set", "wan0", "up")
        lab = self.ns["lab"]
        # The lab's LAN: a veth pair inside the lab (no dummy driver needed), its addresses local to the lab.
        run("ip", "-n", lab, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
        for a in (LAB_WEB, LAB_OTHER, LAB_DNS):
            run("ip", "-n", lab, "addr", "add", f"{a}/24", "dev", "lan0")
        run("ip", "-n", lab, "link", "set", "lan0", "up")
        run("ip", "-n", lab, "link", "set", "lan1", "up")
        return self

    def destroy(self):
        self.stop_all()
        for name in self.ns.values():
            run("ip", "netns", "delete", name, check=False)

    # ---- processes ----
    def popen(self, role, argv, env=None, stdout=None, stderr=None, stdin=subprocess.DEVNULL, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[role]] + [str(a) for a in argv], env=env,
                             stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def exec(self, role, argv, timeout=30, check=False, input=None, env=None):
        return subprocess.run(["ip", "netns", "exec", self.ns[role]] + [str(a) for a in argv], timeout=timeout,
                              check=check, input=input, capture_output=True, text=isinstance(input, str) or
                              input is None, env=env)

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs = []

    def start_lab_services(self, log=None):
        """The web server, the ssh-like banner, the ungranted service and the DNS server, in the lab.
        log: a file for their stderr (default: /dev/null), so that nobody waiting on our own output hangs."""
        p = self.popen("lab", [sys.executable, pathlib.Path(__file__).resolve(), "lab-services"],
                       stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True)
        line = p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"lab services did not start: {line!r}")
        return p


# ---- the lab's services (run inside the lab namespace by `netns_topology.py lab-services`) ----

def _serve_tcp(address, port, handler):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(128)

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=handler, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def _http(c):
    with c:
        c.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                return
            data += chunk
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "
                  + str(len(WEB_BODY)).encode() + b"\r\n\r\n" + WEB_BODY)


def _other_http(c):
    with c:
        c.settimeout(10)
        c.recv(4096)
        body = b"hello from the other host\n"
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\n\r\n" + body)


def _banner_echo(c):
    """An SSH-like service: a banner, then echo."""
    with c:
        c.sendall(SSH_BANNER)
        while True:
            data = c.recv(65536)
            if not data:
                return
            c.sendall(data)


def _discard(c):
    """Counts what it is sent; answers the count when the sender closes its side."""
    with c:
        n = 0
        while True:
            data = c.recv(1 << 20)
            if not data:
                break
            n += len(data)
        c.sendall(f"{n}\n".encode())


def _secret(c):
    with c:
        c.sendall(b"this service is not granted to anyone\n")


def _dns_answer(query):
    if len(query) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qd != 1:
        return None
    labels, i = [], 12
    while i < len(query) and query[i] != 0:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if i + 5 > len(query):
        return None
    qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    name = ".".join(labels)
    address = DNS_NAMES.get(name)
    if address is None and name.endswith("." + DNS_WILDCARD[0]):
        address = DNS_WILDCARD[1]
    if address is None:
        return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question      # NXDOMAIN
    if qtype != 1:
        return struct.pack("!HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question      # no AAAA
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer


def _tarpit(address, port):
    """A listener whose accept queue is full and never drained: the kernel drops further SYNs, so a
    connect() there neither succeeds nor fails until its own timeout."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((address, port))
    s.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect((address, port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    return s, fillers


def _serve_dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LAB_DNS, 53))

    def loop():
        while True:
            q, peer = s.recvfrom(512)
            a = _dns_answer(q)
            if a:
                s.sendto(a, peer)
    threading.Thread(target=loop, daemon=True).start()


def lab_services():
    _serve_tcp(LAB_WEB, 80, _http)
    _serve_tcp(LAB_WEB, 22, _banner_echo)
    _serve_tcp(LAB_WEB, 8080, _secret)
    _serve_tcp(LAB_WEB, 9, _discard)
    tarpit = _tarpit(LAB_WEB, 7)  # noqa: F841 (kept open)
    _serve_tcp(LAB_OTHER, 80, _other_http)
    _serve_dns()
    print("READY", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    if sys.argv[1:] == ["lab-services"]:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        lab_services()
    else:
        sys.exit("usage: netns_topology.py lab-services")
