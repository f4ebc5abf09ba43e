# SPDX-License-Identifier: Apache-2.0
"""The controller's CA over time, with a live agent: a staged root rotation started with `ztnactl ca rotate`
runs through its three steps while the agent keeps its control stream and renews normally, and is never
re-enrolled; the server certificate renews itself. Lifetimes are shortened to seconds so that every step
happens within the test."""
import json
import subprocess
import time

from conftest import INTEROP

from test_controller import db_query, enroll

LEAF = 20          # seconds: every leaf lifetime, so each rotation step waits this long
STEP_TIMEOUT = LEAF + 25


def sha256_der_of_pem_certs(path):
    """The SHA-256 of each certificate's DER in a PEM file, as control-client.js reports roots."""
    out = subprocess.run(["openssl", "crl2pkcs7", "-nocrl", "-certfile", str(path)], capture_output=True,
                         check=True).stdout
    p7 = subprocess.run(["openssl", "pkcs7", "-print_certs", "-outform", "PEM"], input=out,
                        capture_output=True, check=True).stdout.decode()
    fps = []
    for block in p7.split("-----END CERTIFICATE-----")[:-1]:
        pem = block[block.index("-----BEGIN CERTIFICATE-----"):] + "-----END CERTIFICATE-----\n"
        der = subprocess.run(["openssl", "x509", "-outform", "DER"], input=pem.encode(), capture_output=True,
                             check=True).stdout
        fps.append(__import__("hashlib").sha256(der).hexdigest())
    return fps


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def cas(controller):
    return db_query(controller.db, "SELECT kind, state, hex(fingerprint), hex(parent) FROM cas ORDER BY created_at")


def renew(node, controller, agent_dir, ca_pem, out_name):
    p = subprocess.run([node, str(INTEROP / "enroll-client.js"), "renew", "--address", controller.address,
                        "--ca", str(ca_pem), "--cert", str(agent_dir / "chain.pem"), "--key",
                        str(agent_dir / "key.pem"), "--cert-out", str(agent_dir / out_name), "--bundle-out",
                        str(agent_dir / f"{out_name}.roots")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return agent_dir / out_name, agent_dir / f"{out_name}.roots"


def verify_against(chain, roots):
    """openssl verify of the leaf with its intermediate against exactly these roots."""
    text = chain.read_text()
    end = "-----END CERTIFICATE-----"
    parts = [p + end + "\n" for p in text.split(end) if "BEGIN" in p]
    leaf, rest = chain.with_suffix(".leaf"), chain.with_suffix(".rest")
    leaf.write_text(parts[0])
    rest.write_text("".join(parts[1:]))
    return subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(roots),
                           "-untrusted", str(rest), str(leaf)], capture_output=True, text=True)


def test_staged_root_rotation_with_a_live_agent(controller, node, tmp_path):
    controller.conf["Certificates"].update({
        "ConnectorLifetime": f"{LEAF}s", "TunnelerLifetime": f"{LEAF}s", "ServerLifetime": f"{LEAF}s",
        "IssuingCALifetime": "10min",
    })
    controller.init()
    controller.start()
    token = controller.create_token("connector", network="lab")
    _, agent = enroll(node, controller, tmp_path, token, "conn-1")
    old_root = sha256_der_of_pem_certs(agent / "roots.pem")
    assert len(old_root) == 1

    stream_log = open(tmp_path / "control.jsonl", "w")
    stream = subprocess.Popen([node, str(INTEROP / "control-client.js"), "--address", controller.address,
                               "--ca", str(agent / "roots.pem"), "--cert", str(agent / "chain.pem"), "--key",
                               str(agent / "key.pem"), "--heartbeats", "200", "--interval-ms", "1000",
                               "--timeout-ms", "180000"],
                              stdin=subprocess.DEVNULL, stdout=stream_log, stderr=subprocess.STDOUT,
                              start_new_session=True)

    def bundles():
        text = (tmp_path / "control.jsonl").read_text()
        return [json.loads(l)["roots"] for l in text.splitlines()
                if l.startswith("{") and json.loads(l).get("type") == "trust_bundle"]

    try:
        wait_for("the first trust bundle on the control stream", lambda: bundles(), 15)
        assert bundles()[0] == old_root

        # Step 1: the new root joins the bundle, and the live stream hears of it at once.
        controller.ztnactl("ca", "rotate")
        assert [s for k, s, _, _ in cas(controller) if k == "root"] == ["active", "staged"]
        wait_for("a two-root bundle pushed", lambda: any(len(b) == 2 for b in bundles()), 10)
        two_roots = next(b for b in bundles() if len(b) == 2)
        assert old_root[0] in two_roots
        new_root = [f for f in two_roots if f != old_root[0]]

        # A renewal during step 1 still issues under the old root but hands out the two-root bundle.
        chain1, roots1 = renew(node, controller, agent, agent / "roots.pem", "chain-step1.pem")
        assert sorted(sha256_der_of_pem_certs(roots1)) == sorted(two_roots)
        assert verify_against(chain1, agent / "roots.pem").returncode == 0

        # Step 2, one leaf lifetime later: a new issuing CA under the new root.
        staged = [f for k, st, f, _ in cas(controller) if k == "root" and st == "staged"]
        assert len(staged) == 1

        def step2():
            return any(k == "issuing" and st == "active" and parent == staged[0]
                       for k, st, _, parent in cas(controller))

        # Like an agent, renew with 30-50 % of the lifetime left while waiting, so the certificate never lapses.
        (agent / "chain.pem").write_text(chain1.read_text())
        deadline = time.monotonic() + STEP_TIMEOUT
        n = 0
        while not step2():
            assert time.monotonic() < deadline, "timed out waiting for step 2 (issuing under the new root)"
            time.sleep(LEAF * 0.5)
            n += 1
            c, _ = renew(node, controller, agent, roots1, f"chain-wait{n}.pem")
            (agent / "chain.pem").write_text(c.read_text())
        chain2, roots2 = renew(node, controller, agent, roots1, "chain-step2.pem")
        new_root_pem = tmp_path / "new-root.pem"
        # The renewed leaf chains to the new root alone, not to the old one.
        for pem in roots2.read_text().split("-----END CERTIFICATE-----"):
            if "BEGIN" not in pem:
                continue
            f = tmp_path / "one-root.pem"
            f.write_text(pem[pem.index("-----BEGIN"):] + "-----END CERTIFICATE-----\n")
            if sha256_der_of_pem_certs(f) == new_root:
                new_root_pem.write_text(f.read_text())
        assert new_root_pem.exists()
        assert verify_against(chain2, new_root_pem).returncode == 0
        assert verify_against(chain2, agent / "roots.pem").returncode != 0

        # Step 3, another leaf lifetime later: the old root leaves the bundle; the live stream hears it.
        wait_for("step 3 (old root retired)",
                 lambda: [s for k, s, _, _ in cas(controller) if k == "root"] == ["retired", "active"],
                 STEP_TIMEOUT)
        wait_for("the one-root bundle pushed", lambda: bundles()[-1] == new_root, 10)
        assert stream.poll() is None, "the control stream must survive the whole rotation"
    finally:
        stream.kill()
        stream.wait(timeout=10)
        stream_log.close()

    # Nobody re-enrolled: one agent, enrolled once, one token used.
    agents = db_query(controller.db, "SELECT spiffe_id, enrolled_at FROM agents")
    assert len(agents) == 1
    assert db_query(controller.db, "SELECT count(*) FROM tokens WHERE used_at IS NOT NULL") == [(1,)]
    events = [r[0] for r in db_query(controller.db, "SELECT event FROM audit ORDER BY seq")]
    assert "ca-root-rotation" in events and "ca-issuing-rotated" in events
    assert events.count("enrolled") == 1


def server_serial(controller):
    p = subprocess.run(f"echo | openssl s_client -connect {controller.address} -alpn h2 2>/dev/null | "
                       "openssl x509 -noout -serial", shell=True, capture_output=True, text=True, timeout=20)
    assert p.stdout.startswith("serial="), p.stdout + p.stderr
    return p.stdout.strip()


def test_server_certificate_renews_itself(controller):
    controller.conf["Certificates"].update({"ServerLifetime": "12s", "MinimumCertificateLifetime": "10s",
                                            "ConnectorLifetime": "12s", "TunnelerLifetime": "12s"})
    controller.init()
    controller.start()
    first = server_serial(controller)
    # Renewed with 30 % of 12 s left: within ~9 s.
    wait_for("a renewed server certificate", lambda: server_serial(controller) != first, 20)
    assert "Server certificate renewed" in controller.log_text()
