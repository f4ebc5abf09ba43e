# SPDX-License-Identifier: Apache-2.0
"""The controller's Enrollment service end to end: a real `ztna-controller run`, tokens made with ztnactl,
and a stock gRPC client (grpc-js, tests/interop/enroll-client.js) doing what an agent does — Enroll with a
token that pins the root CA, Renew over mTLS, Reauthenticate with the recorded key after the certificate
expired. Every refusal is checked by its gRPC status and the reason the agent prints, and every test that
refuses something also shows the refusal changed nothing (the token still works, the agent keeps its key).
"""
import base64
import hashlib
import json
import sqlite3
import subprocess
import time

import pytest

from conftest import CALL_TIMEOUT, INTEROP

CLIENT = INTEROP / "enroll-client.js"

OK = 0
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8

TD = "ztna.test"
CONTEXT = b"ztna-reauth-v1\0"
NONCE_SIZE = 32


# ---- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def ctl(controller):
    controller.init()
    controller.start()
    return controller


@pytest.fixture
def enroll_client(node):
    def run(verb, *args, timeout=60):
        p = subprocess.run([node, str(CLIENT), verb, *map(str, args)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        assert p.returncode == 0, f"enroll-client.js {verb} exited with {p.returncode}: {p.stdout}{p.stderr}"
        return json.loads(p.stdout.strip().splitlines()[-1])

    return run


def ctl_rows(ctl, sql):
    con = sqlite3.connect(f"file:{ctl.db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def token_payload(token):
    assert token.startswith("ztna1-")
    s = token[len("ztna1-"):]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_id(token):
    return token_payload(token)[1:17].hex()


def token_secret(token):
    return token_payload(token)[17:49]


def token_with_secret(token, secret):
    """The same token (id, pin, addresses) with another secret and a valid checksum."""
    p = token_payload(token)
    body = p[:17] + secret + p[49:-4]
    body += hashlib.sha256(body).digest()[:4]
    return "ztna1-" + base64.urlsafe_b64encode(body).decode().rstrip("=")


class Agent:
    """Files of one agent: key, chain and trust bundle, as enroll-client.js writes them."""

    def __init__(self, directory, name):
        self.dir = directory / name
        self.dir.mkdir()
        self.key = self.dir / "key.pem"
        self.chain = self.dir / "chain.pem"
        self.bundle = self.dir / "roots.pem"
        self.token_file = self.dir / "token"


def enroll(enroll_client, agent, token, id, *extra):
    agent.token_file.write_text(token + "\n")
    agent.token_file.chmod(0o600)
    return enroll_client("enroll", "--token-file", agent.token_file, "--id", id, "--key-out", agent.key,
                         "--cert-out", agent.chain, "--bundle-out", agent.bundle, *extra)


def pem_blocks(path):
    text = path.read_text()
    blocks = []
    while "-----BEGIN CERTIFICATE-----" in text:
        start = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
        blocks.append(text[start:end] + "\n")
        text = text[end:]
    return blocks


def openssl(*args, input=None):
    return subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, text=True,
                          timeout=CALL_TIMEOUT)


def verify_chain(tmp_path, chain, bundle):
    """openssl verify -x509_strict of the leaf against the bundle, the issuing CA as untrusted."""
    blocks = pem_blocks(chain)
    assert len(blocks) == 2, blocks  # leaf, issuing CA
    leaf, issuing = tmp_path / f"{chain.stem}-leaf.pem", tmp_path / f"{chain.stem}-issuing.pem"
    leaf.write_text(blocks[0])
    issuing.write_text(blocks[1])
    p = openssl("verify", "-x509_strict", "-CAfile", bundle, "-untrusted", issuing, leaf)
    assert p.returncode == 0 and p.stdout.strip().endswith("OK"), p.stdout + p.stderr
    return leaf


def leaf_text(path):
    p = openssl("x509", "-in", path, "-noout", "-ext", "subjectAltName,basicConstraints,keyUsage",
                "-startdate", "-enddate")
    assert p.returncode == 0, p.stderr
    return p.stdout


def spki_sha256(key_path):
    p = subprocess.run(["openssl", "pkey", "-in", str(key_path), "-pubout", "-outform", "DER"],
                       capture_output=True, timeout=CALL_TIMEOUT)
    assert p.returncode == 0, p.stderr
    return hashlib.sha256(p.stdout).hexdigest()


def agents(ctl):
    return json.loads(ctl.ztnactl("agents", "list", "--json").stdout)


def agent_entry(ctl, spiffe_id):
    found = [a for a in agents(ctl) if a["spiffe_id"] == spiffe_id]
    assert len(found) == 1, agents(ctl)
    return found[0]


def audit_rows(ctl):
    """The audit table, read-only (the daemon keeps writing meanwhile)."""
    db = sqlite3.connect(f"file:{ctl.db}?mode=ro", uri=True, timeout=10)
    try:
        return [dict(zip(("event", "actor", "subject", "detail"), row))
                for row in db.execute("SELECT event, actor, subject, detail FROM audit ORDER BY seq")]
    finally:
        db.close()


def denied(r, details, code=PERMISSION_DENIED):
    assert r["ok"] is False, r
    assert (r["code"], r["details"]) == (code, details), r


# ---- Enroll -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role,id,network,groups,lifetime", [
    ("connector", "conn-1", "lab", (), 3600),
    ("tunneler", "tun-1", None, ("eng", "ops"), 1800),
], ids=["connector", "tunneler"])
def test_enroll_good_token(ctl, enroll_client, tmp_path, role, id, network, groups, lifetime):
    token = ctl.create_token(role, network=network, groups=groups)
    agent = Agent(tmp_path, id)
    before = time.time()
    r = enroll(enroll_client, agent, token, id, "--version", "1.2.3", "--private-ip", "10.1.2.3",
               "--label", "site=berlin", "--label", "rack=7")
    assert r["ok"] is True, r
    spiffe_id = f"spiffe://{TD}/{role}/{id}"
    assert r["spiffe_id"] == spiffe_id
    assert r["server_id"] == ctl.spiffe_id
    assert r["controller_addresses"] == [ctl.address]
    config = r["config"]
    assert config["role"] == f"ROLE_{role.upper()}"
    assert config["id"] == id
    assert config["spiffe_id"] == spiffe_id
    assert config["remote_network"] == (network or "")
    assert config["groups"] == list(groups)
    assert config["heartbeat_interval_seconds"] == 10
    assert config["certificate_lifetime_seconds"] == lifetime

    leaf = verify_chain(tmp_path, agent.chain, agent.bundle)
    text = leaf_text(leaf)
    assert f"URI:{spiffe_id}" in text
    assert "CA:FALSE" in text
    # The certificate certifies the key the client generated, for the configured lifetime.
    assert r["leaf"]["spiffe_id"] == spiffe_id
    assert r["leaf"]["public_key_sha256"] == spki_sha256(agent.key)
    not_before = time.mktime(time.strptime(r["leaf"]["not_before"], "%b %d %H:%M:%S %Y GMT")) - time.timezone
    not_after = time.mktime(time.strptime(r["leaf"]["not_after"], "%b %d %H:%M:%S %Y GMT")) - time.timezone
    assert abs((not_after - before) - lifetime) <= 120, r["leaf"]
    assert not_after - not_before <= lifetime + 600, r["leaf"]
    # The key never left the client: a private key file only it can read.
    assert agent.key.stat().st_mode & 0o077 == 0

    entry = agent_entry(ctl, spiffe_id)
    assert entry["version"] == "1.2.3"
    assert entry["private_ip"] == "10.1.2.3"
    assert sorted(entry["labels"]) == ["rack=7", "site=berlin"]


def test_enroll_token_reused(ctl, enroll_client, tmp_path):
    token = ctl.create_token("connector", network="lab")
    assert enroll(enroll_client, Agent(tmp_path, "a"), token, "c-a")["ok"] is True
    denied(enroll(enroll_client, Agent(tmp_path, "b"), token, "c-b"), "token already used")
    # Not even for the id it enrolled.
    denied(enroll(enroll_client, Agent(tmp_path, "c"), token, "c-a"), "token already used")
    assert [a["id"] for a in agents(ctl)] == ["c-a"]


def test_enroll_token_revoked(ctl, enroll_client, tmp_path):
    token = ctl.create_token("connector", network="lab")
    ctl.ztnactl("token", "revoke", token_id(token))
    denied(enroll(enroll_client, Agent(tmp_path, "a"), token, "c-a"), "token revoked")
    assert agents(ctl) == []


def test_enroll_token_bound_to_another_id(ctl, enroll_client, tmp_path):
    token = ctl.create_token("tunneler", id="laptop-7", groups=("eng",))
    denied(enroll(enroll_client, Agent(tmp_path, "a"), token, "laptop-8"), "token is bound to another id")
    # The refusal did not consume it: the bound id still enrolls, and gets the token's role.
    r = enroll(enroll_client, Agent(tmp_path, "b"), token, "laptop-7")
    assert r["ok"] is True, r
    assert r["spiffe_id"] == f"spiffe://{TD}/tunneler/laptop-7"


def test_enroll_role_comes_from_the_token(ctl, enroll_client, tmp_path):
    """Tokens are role-scoped: nothing in the request can turn a tunneler token into a connector."""
    token = ctl.create_token("tunneler")
    r = enroll(enroll_client, Agent(tmp_path, "a"), token, "x-1")
    assert r["ok"] is True, r
    assert r["spiffe_id"] == f"spiffe://{TD}/tunneler/x-1"
    assert r["config"]["role"] == "ROLE_TUNNELER"


def test_enroll_wrong_role_is_refused(ctl, enroll_client, tmp_path):
    """An agent that says what it is (a connector daemon) cannot spend a token meant for the other role; the
    token is not consumed and the CA signs nothing."""
    token = ctl.create_token("tunneler")
    denied(enroll(enroll_client, Agent(tmp_path, "a"), token, "w-1", "--role", "connector"),
           "token is for another role")
    assert [r[0] for r in ctl_rows(ctl, "SELECT used_at FROM tokens")] == [None]
    r = enroll(enroll_client, Agent(tmp_path, "b"), token, "w-1", "--role", "tunneler")
    assert r["ok"] is True, r
    assert r["spiffe_id"] == f"spiffe://{TD}/tunneler/w-1"


def test_enroll_wrong_secret(ctl, enroll_client, tmp_path):
    token = ctl.create_token("connector", network="lab")
    forged = token_with_secret(token, bytes(32))
    denied(enroll(enroll_client, Agent(tmp_path, "a"), forged, "c-a"), "invalid token")
    # A token id nobody created reads the same: an unknown id and a wrong secret are indistinguishable.
    p = bytearray(token_payload(token)[:-4])
    p[1] ^= 0xFF
    p += hashlib.sha256(p).digest()[:4]
    unknown = "ztna1-" + base64.urlsafe_b64encode(bytes(p)).decode().rstrip("=")
    denied(enroll(enroll_client, Agent(tmp_path, "b"), unknown, "c-a"), "invalid token")
    assert enroll(enroll_client, Agent(tmp_path, "c"), token, "c-a")["ok"] is True


def test_enroll_id_already_enrolled(ctl, enroll_client, tmp_path):
    assert enroll(enroll_client, Agent(tmp_path, "a"), ctl.create_token("connector"), "dup")["ok"] is True
    token = ctl.create_token("connector")
    denied(enroll(enroll_client, Agent(tmp_path, "b"), token, "dup"),
           "an agent with this id is already enrolled")
    # The token survives a refusal that was not about it.
    assert enroll(enroll_client, Agent(tmp_path, "c"), token, "dup-2")["ok"] is True


GARBAGE_CSR = b"\x30\x03\x02\x01\x00 this is not a CSR"


@pytest.mark.parametrize("id,args,details", [
    ("bad id!", (), "invalid agent id (1 to 128 of A-Z a-z 0-9 . _ -)"),
    ("x" * 129, (), "invalid agent id (1 to 128 of A-Z a-z 0-9 . _ -)"),
    ("c-1", ("--private-ip", "not-an-ip"), "private_ip is not an IP address"),
    ("c-1", ("--label", "k="), "label key and value must not be empty"),
    ("c-1", ("--label", "=v"), "label key and value must not be empty"),
    ("c-1", ("--version", "1.0\x1b[31m"), "version contains control characters"),
    ("c-1", ("--version", "v" * 1025), "version is too long"),
    ("c-1", tuple(a for i in range(33) for a in ("--label", f"k{i}=v")), "too many labels"),
    ("c-1", ("--labels-json", '{"a=b": "c"}'), "label key contains '='"),
    ("c-1", ("--labels-json", '{"k": "\\u0007"}'), "label contains control characters"),
    ("c-1", ("--labels-json", json.dumps({"k": "v" * 1023})), "label is too long"),
    ("c-1", ("--csr", "GARBAGE"), "malformed CSR"),
], ids=["id-syntax", "id-length", "private-ip", "empty-value", "empty-key", "version-escape",
        "version-length", "labels-count", "label-key-equals", "label-control", "label-length", "csr"])
def test_enroll_invalid_request(ctl, enroll_client, tmp_path, id, args, details):
    token = ctl.create_token("connector", network="lab")
    agent = Agent(tmp_path, "a")
    args = list(args)
    if args[:1] == ["--csr"]:
        garbage = tmp_path / "garbage.der"
        garbage.write_bytes(GARBAGE_CSR)
        args = ["--csr", garbage]
    denied(enroll(enroll_client, agent, token, id, *args), details, code=INVALID_ARGUMENT)
    # A malformed request does not burn the token.
    assert enroll(enroll_client, Agent(tmp_path, "b"), token, "c-1")["ok"] is True


def test_enroll_concurrent_one_token(ctl, enroll_client, tmp_path):
    token = ctl.create_token("connector", network="lab")
    f = tmp_path / "token"
    f.write_text(token)
    r = enroll_client("burst", "--token-file", f, "--count", 50, "--id", "racer", timeout=120)
    assert r == {"ok": 1, "denied": 49, "codes": {str(PERMISSION_DENIED): 49},
                 "details": ["token already used"]}
    assert [a["id"] for a in agents(ctl)] == ["racer"]
    rows = audit_rows(ctl)
    assert sum(1 for row in rows if row["event"] == "token-consumed") == 1
    assert sum(1 for row in rows if row["event"] == "enrolled") == 1


def test_enroll_token_expired(ctl, enroll_client, tmp_path):
    token = ctl.create_token("connector", network="lab", ttl="1min")
    time.sleep(61)
    denied(enroll(enroll_client, Agent(tmp_path, "a"), token, "c-a"), "token expired")
    assert agents(ctl) == []


# ---- Renew ------------------------------------------------------------------------------------------------

def renew(enroll_client, ctl, agent, cert, key, out, *extra):
    return enroll_client("renew", "--address", ctl.address, "--ca", agent.bundle, "--cert", cert,
                         "--key", key, "--cert-out", out, *extra)


def test_renew_same_key_then_new_key(ctl, enroll_client, tmp_path):
    agent = Agent(tmp_path, "a")
    first = enroll(enroll_client, agent, ctl.create_token("connector", network="lab"), "c-r")
    assert first["ok"] is True, first
    spiffe_id = first["spiffe_id"]

    # Same key: a new certificate (new serial) for the same key and identity.
    same = tmp_path / "same.pem"
    r = renew(enroll_client, ctl, agent, agent.chain, agent.key, same)
    assert r["ok"] is True, r
    assert r["server_id"] == ctl.spiffe_id
    assert r["leaf"]["spiffe_id"] == spiffe_id
    assert r["leaf"]["public_key_sha256"] == first["leaf"]["public_key_sha256"]
    assert r["leaf"]["serial"] != first["leaf"]["serial"]
    assert r["n_trust_bundle"] == 1
    verify_chain(tmp_path, same, agent.bundle)
    # The first certificate still has the recorded key: it may renew too.
    assert renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "same2.pem")["ok"] is True

    # New key: the CSR decides, the controller records the new key.
    new_key, new_chain = tmp_path / "new-key.pem", tmp_path / "new.pem"
    r = renew(enroll_client, ctl, agent, same, agent.key, new_chain, "--new-key", new_key)
    assert r["ok"] is True, r
    assert r["leaf"]["spiffe_id"] == spiffe_id
    assert r["leaf"]["public_key_sha256"] == spki_sha256(new_key)
    assert r["leaf"]["public_key_sha256"] != first["leaf"]["public_key_sha256"]

    # Certificates for the replaced key, still valid, can no longer renew.
    denied(renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "x.pem"),
           "certificate superseded by a renewal")
    denied(renew(enroll_client, ctl, agent, same, agent.key, tmp_path / "x.pem",
                 "--new-key", tmp_path / "k3.pem"),
           "certificate superseded by a renewal")
    # The new certificate can.
    r = renew(enroll_client, ctl, agent, new_chain, new_key, tmp_path / "newer.pem")
    assert r["ok"] is True, r


def test_renew_malformed_csr(ctl, enroll_client, tmp_path):
    agent = Agent(tmp_path, "a")
    assert enroll(enroll_client, agent, ctl.create_token("connector"), "c-m")["ok"] is True
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a CSR")
    denied(renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "x.pem", "--csr", garbage),
           "malformed CSR", code=INVALID_ARGUMENT)
    assert renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "y.pem")["ok"] is True


# ---- Reauthenticate -------------------------------------------------------------------------------------

def reauth(enroll_client, ctl, agent, spiffe_id, out, *extra, timeout=60):
    return enroll_client("reauth", "--address", ctl.address, "--ca", agent.bundle, "--spiffe-id", spiffe_id,
                         "--key", agent.key, "--cert-out", out, *extra, timeout=timeout)


def check_signed_data(r, spiffe_id, csr_key):
    """signed_data = "ztna-reauth-v1\\0" | nonce | u16 BE length | SPIFFE ID | SHA-256(CSR SPKI)."""
    data = bytes.fromhex(r["signed_data_hex"])
    nonce = bytes.fromhex(r["nonce_hex"])
    sid = spiffe_id.encode()
    assert len(nonce) == NONCE_SIZE
    assert data == CONTEXT + nonce + len(sid).to_bytes(2, "big") + sid + bytes.fromhex(spki_sha256(csr_key))


@pytest.fixture
def short_lived(controller):
    controller.conf["Certificates"]["TunnelerLifetime"] = "20s"
    controller.init()
    controller.start()
    return controller


def test_reauthenticate_after_expiry(short_lived, enroll_client, tmp_path):
    ctl = short_lived
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, ctl.create_token("tunneler", groups=("eng",)), "t-1")
    assert r["ok"] is True, r
    spiffe_id = r["spiffe_id"]
    assert r["config"]["certificate_lifetime_seconds"] == 20
    not_after = time.mktime(time.strptime(r["leaf"]["not_after"], "%b %d %H:%M:%S %Y GMT")) - time.timezone
    time.sleep(max(0, not_after - time.time()) + 2)

    # The expired certificate opens nothing.
    r = renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "x.pem")
    assert r["ok"] is False, r
    assert r["code"] != OK

    # The recorded key still proves the identity.
    out = tmp_path / "reauth.pem"
    r = reauth(enroll_client, ctl, agent, spiffe_id, out)
    assert r["ok"] is True, r
    assert r["server_id"] == ctl.spiffe_id
    assert r["leaf"]["spiffe_id"] == spiffe_id
    assert r["leaf"]["public_key_sha256"] == spki_sha256(agent.key)
    check_signed_data(r, spiffe_id, agent.key)
    verify_chain(tmp_path, out, agent.bundle)
    # The new certificate works for renewal again.
    assert renew(enroll_client, ctl, agent, out, agent.key, tmp_path / "renewed.pem")["ok"] is True

    # Each challenge is fresh.
    r2 = reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "reauth2.pem")
    assert r2["ok"] is True, r2
    assert r2["nonce_hex"] != r["nonce_hex"]

    # With a new key: the CSR's key is certified and recorded, the old key is no longer good for anything.
    new_key = tmp_path / "new-key.pem"
    r = reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "reauth3.pem", "--new-key", new_key)
    assert r["ok"] is True, r
    assert r["leaf"]["public_key_sha256"] == spki_sha256(new_key)
    check_signed_data(r, spiffe_id, new_key)
    denied(reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "x.pem"), "signature does not verify")
    denied(renew(enroll_client, ctl, agent, out, agent.key, tmp_path / "x.pem"),
           "certificate superseded by a renewal")
    r = reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "reauth4.pem", "--sign-key", new_key)
    assert r["ok"] is True, r


def test_reauthenticate_refusals(ctl, enroll_client, tmp_path):
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, ctl.create_token("connector", network="lab"), "c-x")
    assert r["ok"] is True, r
    spiffe_id = r["spiffe_id"]
    other = tmp_path / "other-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(other)], check=True, capture_output=True, timeout=CALL_TIMEOUT)

    # Someone else's key proves nothing.
    r = reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "x.pem", "--sign-key", other)
    denied(r, "signature does not verify")
    assert r["challenged"] is True
    # Nor does a claim on an identity that was never enrolled, or of another trust domain.
    r = reauth(enroll_client, ctl, agent, f"spiffe://{TD}/connector/nobody", tmp_path / "x.pem")
    denied(r, "agent not enrolled")
    assert r["challenged"] is False
    r = reauth(enroll_client, ctl, agent, "spiffe://other.test/connector/c-x", tmp_path / "x.pem")
    assert (r["code"], r["challenged"]) == (INVALID_ARGUMENT, False), r
    r = reauth(enroll_client, ctl, agent, f"spiffe://{TD}/controller/ctl-1", tmp_path / "x.pem")
    assert (r["code"], r["challenged"]) == (INVALID_ARGUMENT, False), r
    r = reauth(enroll_client, ctl, agent, "not a spiffe id", tmp_path / "x.pem")
    assert (r["code"], r["challenged"]) == (INVALID_ARGUMENT, False), r
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a CSR")
    denied(reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "x.pem", "--csr", garbage),
           "malformed CSR", code=INVALID_ARGUMENT)
    # None of that changed the recorded key.
    assert reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "ok.pem")["ok"] is True


@pytest.mark.parametrize("protocol,details,challenged", [
    ("proof-first", "expected ReauthRequest.begin", False),
    ("begin-twice", "expected ReauthRequest.proof", True),
    ("end-after-begin", "stream ended before the proof", True),
    ("empty", "missing ReauthRequest.begin", False),
])
def test_reauthenticate_out_of_order(ctl, enroll_client, tmp_path, protocol, details, challenged):
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, ctl.create_token("connector", network="lab"), "c-o")
    assert r["ok"] is True, r
    r = reauth(enroll_client, ctl, agent, r["spiffe_id"], tmp_path / "x.pem", "--protocol", protocol)
    denied(r, details, code=INVALID_ARGUMENT)
    assert r["challenged"] is challenged
    # The broken call spent nothing: the next one goes through.
    r = reauth(enroll_client, ctl, agent, f"spiffe://{TD}/connector/c-o", tmp_path / "ok.pem")
    assert r["ok"] is True, r


def test_reauthenticate_challenge_expires(ctl, enroll_client, tmp_path):
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, ctl.create_token("connector", network="lab"), "c-slow")
    assert r["ok"] is True, r
    started = time.monotonic()
    r = reauth(enroll_client, ctl, agent, r["spiffe_id"], tmp_path / "x.pem", "--protocol", "no-proof",
               timeout=90)
    denied(r, "challenge not answered in time", code=DEADLINE_EXCEEDED)
    assert r["challenged"] is True
    assert 29 <= time.monotonic() - started < 45
    reasons = [json.loads(row["detail"]).get("reason") for row in audit_rows(ctl)
               if row["event"] == "reauthentication-refused"]
    assert reasons == ["challenge not answered in time"], reasons


def test_reauthenticate_challenges_bounded(ctl, enroll_client, tmp_path):
    """ENROLL_CHALLENGES_PER_SOURCE_MAX (256) outstanding challenges per source address, so one address
    cannot take the global pool (ENROLL_CHALLENGES_MAX, 1024: every test client here shares 127.0.0.1, so
    that one is not reachable from here); cancelled calls give their slot back."""
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, ctl.create_token("connector", network="lab"), "c-flood")
    assert r["ok"] is True, r
    r = enroll_client("reauth-flood", "--address", ctl.address, "--ca", agent.bundle, "--spiffe-id",
                      r["spiffe_id"], "--key", agent.key, "--count", 300, timeout=120)
    assert r == {"challenged": 256, "codes": {str(RESOURCE_EXHAUSTED): 44},
                 "details": ["too many re-authentications in progress from this address, try again later"]}, r
    deadline = time.monotonic() + 10
    while True:
        r = reauth(enroll_client, ctl, agent, f"spiffe://{TD}/connector/c-flood", tmp_path / "ok.pem")
        if r["ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r["ok"] is True, r


def test_revoked_agent_refused(ctl, enroll_client, tmp_path):
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, ctl.create_token("connector", network="lab"), "c-rev")
    assert r["ok"] is True, r
    spiffe_id = r["spiffe_id"]
    assert renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "ok.pem")["ok"] is True
    ctl.ztnactl("agents", "revoke", spiffe_id)

    denied(renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "x.pem"), "agent revoked")
    r = reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "x.pem")
    denied(r, "agent revoked")
    assert r["challenged"] is False


# ---- audit and secrets ---------------------------------------------------------------------------------

def test_audit_rows_and_no_secret_anywhere(ctl, enroll_client, tmp_path):
    token = ctl.create_token("connector", network="lab")
    bad = ctl.create_token("connector", id="bound-1")
    agent = Agent(tmp_path, "a")
    r = enroll(enroll_client, agent, token, "c-audit")
    assert r["ok"] is True, r
    spiffe_id = r["spiffe_id"]
    denied(enroll(enroll_client, Agent(tmp_path, "b"), token, "c-other"), "token already used")
    denied(enroll(enroll_client, Agent(tmp_path, "c"), bad, "c-other"), "token is bound to another id")
    assert renew(enroll_client, ctl, agent, agent.chain, agent.key, tmp_path / "r.pem")["ok"] is True
    assert reauth(enroll_client, ctl, agent, spiffe_id, tmp_path / "ra.pem")["ok"] is True
    denied(reauth(enroll_client, ctl, agent, f"spiffe://{TD}/connector/ghost", tmp_path / "x.pem"),
           "agent not enrolled")

    rows = audit_rows(ctl)
    events = [row["event"] for row in rows]
    for e in ("token-consumed", "enrolled", "token-refused", "renewed", "reauthenticated",
              "reauthentication-refused"):
        assert e in events, events
    consumed = [row for row in rows if row["event"] == "token-consumed"]
    assert len(consumed) == 1 and consumed[0]["subject"] == spiffe_id, consumed
    assert json.loads(consumed[0]["detail"])["token_id"] == token_id(token)
    enrolled = [row for row in rows if row["event"] == "enrolled"]
    assert len(enrolled) == 1 and enrolled[0]["subject"] == spiffe_id, enrolled
    assert json.loads(enrolled[0]["detail"])["token_id"] == token_id(token)
    refused = [json.loads(row["detail"]) for row in rows if row["event"] == "token-refused"]
    assert {d.get("reason") for d in refused} == {"token already used", "token is bound to another id"}, \
        refused
    assert all(d.get("peer", "").startswith("127.0.0.1:") for d in refused), refused

    ctl.stop()  # the WAL is checkpointed or not: look at whatever files exist
    haystacks = {"log": ctl.log_text().encode()}
    for f in ctl.db.parent.iterdir():
        if f.name.startswith(ctl.db.name):
            haystacks[f.name] = f.read_bytes()
    assert "controller.db" in haystacks
    for t in (token, bad):
        secret = token_secret(t)
        payload_b64 = t[len("ztna1-"):]
        # base64url characters 24..63 encode payload bytes 18..47: secret bytes only.
        needles = {
            "token": t.encode(),
            "payload": payload_b64.encode(),
            "secret-b64url-piece": payload_b64[24:64].encode(),
            "secret": secret,
            "secret-hex": secret.hex().encode(),
            "secret-b64": base64.b64encode(secret).rstrip(b"="),
            "secret-b64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
        }
        for where, data in haystacks.items():
            for what, needle in needles.items():
                assert needle not in data, f"{what} of token {token_id(t)} found in {where}"
