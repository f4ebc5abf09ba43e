# SPDX-License-Identifier: Apache-2.0
"""The controller's admin listener (src/controller/controller-admin.c): HTTPS with the controller's own
server certificate on ListenAdmin= (or the "admin" sockets systemd passes), serving /healthz, /readyz and
/metrics; the REST API and the dashboard come next on the same server."""
import hashlib
import http.client
import json
import re
import shutil
import ssl
import subprocess
import time

import pytest

PEM_RX = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def openssl(*args, input=None):
    p = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


@pytest.fixture
def admin(controller):
    p = controller.init()
    pin = [l.split()[-1] for l in p.stdout.splitlines() if l.startswith("Root CA SPKI pin:")][0]
    controller.start()
    port = int(controller.conf["Network"]["ListenAdmin"].rsplit(":", 1)[1])
    return controller, port, pin


def get(port, path, context, method="GET"):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def test_admin_listener_serves_https_with_the_controller_identity(admin):
    controller, port, pin = admin
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", "-tls1_3"],
                         input=b"", capture_output=True, timeout=30).stdout.decode(errors="replace")
    chain = PEM_RX.findall(out)
    assert len(chain) == 3, out[-2000:]  # server certificate, issuing CA, root
    leaf = openssl("x509", "-noout", "-ext", "subjectAltName", input=chain[0].encode()).decode()
    assert f"URI:{controller.spiffe_id}" in leaf, leaf
    spki = openssl("pkey", "-pubin", "-outform", "DER",
                   input=openssl("x509", "-pubkey", "-noout", input=chain[-1].encode()))
    assert hashlib.sha256(spki).hexdigest() == pin, "the chain does not end at the root the tokens pin"

    # Verified against that root (the SPIFFE ID, not a host name, names the server).
    ctx = ssl.create_default_context(cadata=chain[-1])
    ctx.check_hostname = False
    status, headers, body = get(port, "/healthz", ctx)
    assert (status, body) == (200, "ok\n")
    assert headers["Cache-Control"] == "no-store" and "Strict-Transport-Security" in headers
    assert get(port, "/readyz", ctx)[:3:2] == (200, "ready\n")

    status, headers, body = get(port, "/metrics", ctx)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4"), body
    assert 'ztna_agents{role="connector",state="online"} 0' in body, body
    if shutil.which(PROMTOOL):
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0 and (p.stdout + p.stderr).strip() == "", p.stdout + p.stderr

    status, _, body = get(port, "/nope", ctx)
    assert status == 404 and json.loads(body)["error"]["code"], body
    status, headers, _ = get(port, "/healthz", ctx, method="POST")
    assert status == 405 and "GET" in headers["Allow"]

    # Plain HTTP gets no answer from a TLS port.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        c.request("GET", "/healthz")
        c.getresponse()
    c.close()


def served_serial(port, may_fail=False):
    """The serial of the certificate the admin listener presents. may_fail: a handshake cut short returns
    None (a connection open at the moment of a certificate swap is closed; clients reconnect)."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}"], input=b"",
                         capture_output=True, timeout=30).stdout
    leaf = PEM_RX.search(out.decode(errors="replace"))
    if not leaf and may_fail:
        return None
    assert leaf, out[-1000:]
    return openssl("x509", "-noout", "-serial", input=leaf.group(0).encode()).decode().strip()


def test_admin_listener_follows_the_server_certificate_renewal(controller):
    """The controller renews its own server certificate (here a 12 s one, renewed with 30 % left); the admin
    listener switches to the new one and keeps answering."""
    controller.conf["Certificates"]["ServerLifetime"] = "12s"
    controller.init()
    controller.start()
    port = int(controller.conf["Network"]["ListenAdmin"].rsplit(":", 1)[1])
    first = served_serial(port)
    deadline = time.monotonic() + 30
    while served_serial(port, may_fail=True) in (first, None):
        assert time.monotonic() < deadline, "the admin listener still serves the first server certificate"
        time.sleep(0.5)
    assert served_serial(port) != first
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert get(port, "/healthz", ctx)[0] == 200
