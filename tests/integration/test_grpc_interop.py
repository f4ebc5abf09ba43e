# SPDX-License-Identifier: Apache-2.0
"""Our gRPC (src/net/net-grpc.c on our HTTP/2 and TLS) against a stock implementation, grpc-js, both ways.

JS client → our server and our client → JS server are the point; each client also runs against its own
kind of server, so that every expectation is shown to hold for stock gRPC too. Both servers serve
tests/interop/interop.proto with the same semantics (see there); certificates come from our CA and
peers are authenticated by SPIFFE ID on both sides.
"""
import hashlib
import json
import subprocess
import time

import pytest

from conftest import CLIENT_ID, INTEROP, SERVER_ID

UNARY = "Unary"
BIDI = "Bidi"

OK = 0
CANCELLED = 1
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
ABORTED = 10
UNIMPLEMENTED = 12
UNAVAILABLE = 14
UNAUTHENTICATED = 16


def pattern(size):
    """The payload client.js builds for payload_size."""
    return bytes((i * 31 + 7) & 255 for i in range(size))


def expect_reply(reply, payload):
    assert reply["payload_len"] == len(payload)
    assert reply["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert reply["peer_id"] == CLIENT_ID


# ---- grpc-js client --------------------------------------------------------------------------------

@pytest.mark.parametrize("payload_hex", ["", "00", "00ff7f80" + "41" * 60], ids=["empty", "nul", "binary"])
def test_js_unary_echo(server, js_call, payload_hex):
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_hex": payload_hex}]})
    assert r["code"] == OK, r
    assert len(r["replies"]) == 1, r
    assert r["replies"][0]["payload_hex"] == payload_hex
    # The server took the client's identity from its verified certificate.
    assert r["replies"][0]["peer_id"] == CLIENT_ID


# Larger than one HTTP/2 stream window and one DATA frame; 3 MiB stays under both sides' 4 MiB limit.
@pytest.mark.parametrize("size", [100 * 1024, 3 * 1024 * 1024])
def test_js_unary_large(server, js_call, size):
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_size": size}]})
    assert r["code"] == OK, r
    assert len(r["replies"]) == 1
    expect_reply(r["replies"][0], pattern(size))


def test_js_message_over_limit(server, js_call):
    # Both servers accept at most 4 MiB per message (ours: GRPC_MESSAGE_MAX_DEFAULT).
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_size": 5 * 1024 * 1024}]})
    assert r["code"] == RESOURCE_EXHAUSTED, r
    assert r["replies"] == []


STATUS_CASES = [
    (PERMISSION_DENIED, "nope: café € 100% %41 🔒"),
    (PERMISSION_DENIED, "%"),
    (NOT_FOUND, "line\tbreak\r\nand %25 literal"),
    (UNAUTHENTICATED, "a" * 500),
    (ABORTED, ""),
]


@pytest.mark.parametrize("code,message", STATUS_CASES,
                         ids=["non-ascii", "percent", "controls", "long", "no-message"])
def test_js_status_propagation(server, js_call, code, message):
    r = js_call(server.port, {"method": UNARY, "requests": [{"fail_code": code, "fail_message": message}]})
    assert r["code"] == code, r
    assert r["details"] == message
    assert r["replies"] == []


def test_js_deadline(server, js_call):
    r = js_call(server.port, {"method": UNARY, "requests": [{"delay_ms": 3000}], "deadline_ms": 300})
    assert r["code"] == DEADLINE_EXCEEDED, r
    assert r["replies"] == []
    assert 250 <= r["elapsed_ms"] < 1000, r
    # The server is still fine afterwards.
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_hex": "01"}]})
    assert r["code"] == OK, r


def test_js_delay_within_deadline(server, js_call):
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_hex": "02", "delay_ms": 200}],
                              "deadline_ms": 5000})
    assert r["code"] == OK, r
    assert r["replies"][0]["payload_hex"] == "02"
    assert r["elapsed_ms"] >= 190, r


def test_js_bidi_100_in_order(server, js_call):
    payloads = [f"{i:04x}" + "ab" * (i % 7) for i in range(100)]
    r = js_call(server.port, {"method": BIDI, "requests": [{"payload_hex": p} for p in payloads]})
    assert r["code"] == OK, r
    assert [x["payload_hex"] for x in r["replies"]] == payloads
    assert all(x["peer_id"] == CLIENT_ID for x in r["replies"])


def test_js_bidi_delays_keep_order(server, js_call):
    delays = [150, 0, 60, 0, 10]
    r = js_call(server.port, {"method": BIDI, "requests": [{"payload_hex": f"{i:02x}", "delay_ms": d}
                                                            for i, d in enumerate(delays)]})
    assert r["code"] == OK, r
    assert [x["payload_hex"] for x in r["replies"]] == [f"{i:02x}" for i in range(len(delays))]
    assert r["elapsed_ms"] >= sum(delays) - 10, r


def test_js_bidi_fails_midway(server, js_call):
    reqs = [{"payload_hex": f"{i:02x}"} for i in range(10)]
    reqs[5] = {"fail_code": ABORTED, "fail_message": "stop ✋ at 5"}
    r = js_call(server.port, {"method": BIDI, "requests": reqs})
    assert r["code"] == ABORTED, r
    assert r["details"] == "stop ✋ at 5"
    assert [x["payload_hex"] for x in r["replies"]] == [f"{i:02x}" for i in range(5)]


def test_js_bidi_empty(server, js_call):
    r = js_call(server.port, {"method": BIDI, "requests": []})
    assert r["code"] == OK, r
    assert r["replies"] == []


def test_js_bidi_large_messages(server, js_call):
    # 6.4 MB each way on one stream: flow control on stream and connection, many window updates.
    r = js_call(server.port, {"method": BIDI, "requests": [{"payload_size": 64 * 1024}] * 100})
    assert r["code"] == OK, r
    assert len(r["replies"]) == 100
    for x in r["replies"]:
        expect_reply(x, pattern(64 * 1024))


def test_js_bidi_cancelled_by_client(server, js_call):
    # The client cancels (RST_STREAM) in the middle of a call whose remaining answers are delayed; the
    # server copes (and, under ASan, frees the call: the server fixture checks its exit status).
    reqs = [{"payload_hex": f"{i:02x}"} for i in range(3)] + [{"payload_hex": "ff", "delay_ms": 2000}]
    r = js_call(server.port, {"method": BIDI, "requests": reqs, "cancel_after_replies": 3})
    assert r["code"] == CANCELLED, r
    assert [x["payload_hex"] for x in r["replies"]] == ["00", "01", "02"]
    assert r["elapsed_ms"] < 1500, r
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_hex": "01"}]})
    assert r["code"] == OK, r


def test_js_concurrent_calls(server, js_call):
    # Many streams on one connection at once, each a short conversation with a delay in every answer.
    reqs = [{"payload_hex": "aa", "delay_ms": 10}]
    r = js_call(server.port, {"method": BIDI, "requests": reqs * 5, "concurrent": 20})
    assert len(r["calls"]) == 20
    for call in r["calls"]:
        assert call["code"] == OK, call
        assert [x["payload_hex"] for x in call["replies"]] == ["aa"] * 5


def test_js_unknown_method(server, js_call):
    r = js_call(server.port, {"method": "Nope", "requests": [{"payload_hex": "01"}]})
    assert r["code"] == UNIMPLEMENTED, r
    assert r["replies"] == []


def test_js_compressed_request(c_server, js_call):
    # We do not implement message compression: a compressed request is UNIMPLEMENTED (PROTOCOL-HTTP2.md),
    # never mistaken for a plain message.
    r = js_call(c_server.port, {"method": UNARY, "requests": [{"payload_hex": "01"}], "compression": "gzip"})
    assert r["code"] == UNIMPLEMENTED, r
    assert r["details"] == "compression is not supported"
    assert r["replies"] == []


def test_js_without_client_certificate_refused(server, js_call):
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_hex": "01"}], "client_cert": False})
    # The TLS handshake is refused: grpc-js reports that as UNAVAILABLE.
    assert r["code"] == UNAVAILABLE, r
    assert r["replies"] == []


def test_js_without_client_certificate_unauthenticated(c_server_cert_optional, js_call):
    # With client certificates optional, TLS lets the client in and our gRPC layer refuses every method
    # not marked unauthenticated.
    r = js_call(c_server_cert_optional.port, {"method": UNARY, "requests": [{"payload_hex": "01"}],
                                              "client_cert": False})
    assert r["code"] == UNAUTHENTICATED, r
    assert r["replies"] == []
    # The same server still serves a client with a certificate.
    r = js_call(c_server_cert_optional.port, {"method": UNARY, "requests": [{"payload_hex": "01"}]})
    assert r["code"] == OK, r
    assert r["replies"][0]["peer_id"] == CLIENT_ID


def test_js_client_checks_server_spiffe_id(server, js_call):
    # The JS client's checkServerIdentity is what authenticates the server: a different expected ID fails.
    other = SERVER_ID.replace("ctl-1", "ctl-2")
    r = js_call(server.port, {"method": UNARY, "requests": [{"payload_hex": "01"}], "server_id": other})
    assert r["code"] == UNAVAILABLE, r
    assert other in r["details"]
    assert r["replies"] == []


# ---- our client ------------------------------------------------------------------------------------

def expect_pass(rc, seen):
    assert rc == 0, seen["_output"]
    assert seen.get("RESULT") == "pass", seen["_output"]


def test_c_unary(server, c_call):
    rc, seen = c_call(server.port, "unary")
    expect_pass(rc, seen)
    assert seen["STATUS"] == "0 OK"
    assert seen["REPLIES"] == "1"
    assert seen["PAYLOADS"] == "match"
    assert seen["PEER_ID"] == CLIENT_ID


def test_c_status(server, c_call):
    rc, seen = c_call(server.port, "status")
    expect_pass(rc, seen)
    assert seen["STATUS"] == "7 PERMISSION_DENIED"
    # grpc-peer.c STATUS_MESSAGE, percent-encoded by the server and decoded by us.
    assert seen["MESSAGE"] == "nope: café € 100% %41 🔒"
    assert seen["REPLIES"] == "0"


def test_c_deadline(server, c_call):
    rc, seen = c_call(server.port, "deadline")
    expect_pass(rc, seen)
    assert seen["STATUS"] == "4 DEADLINE_EXCEEDED"
    assert seen["REPLIES"] == "0"
    assert 250 <= int(seen["ELAPSED_MS"]) < 1000, seen["_output"]


def test_c_bidi(server, c_call):
    rc, seen = c_call(server.port, "bidi")
    expect_pass(rc, seen)
    assert seen["STATUS"] == "0 OK"
    assert seen["REPLIES"] == "100"
    assert seen["PAYLOADS"] == "match"
    assert seen["PEER_ID"] == CLIENT_ID


def test_c_large(server, c_call):
    rc, seen = c_call(server.port, "large")
    expect_pass(rc, seen)
    assert seen["STATUS"] == "0 OK"
    assert seen["REPLIES"] == "1"
    assert seen["PAYLOADS"] == "match"


def test_c_unknown_method(server, c_call):
    rc, seen = c_call(server.port, "unknown")
    expect_pass(rc, seen)
    assert seen["STATUS"] == "12 UNIMPLEMENTED"


def test_c_client_checks_server_spiffe_id(server, c_call):
    rc, seen = c_call(server.port, "unary", "--server-id", SERVER_ID.replace("ctl-1", "ctl-2"))
    assert rc == 1, seen["_output"]
    assert "HANDSHAKE" in seen, seen["_output"]
    assert "RESULT" not in seen


# ---- lifecycle ---------------------------------------------------------------------------------------

def test_c_server_stops_with_call_in_flight(c_server, node, certs):
    """SIGTERM while a client waits for a delayed answer: the server exits 0 at once (no leak reports under
    ASan) and the client sees the connection go."""
    spec = {"method": UNARY, "requests": [{"delay_ms": 5000}], "deadline_ms": 8000}
    argv = [node, str(INTEROP / "client.js"), str(certs), str(c_server.port), json.dumps(spec)]
    client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # the call is in flight (nothing to poll for: the server answers in 5 s)
        started = time.monotonic()
        assert c_server.stop() == 0
        assert time.monotonic() - started < 2.0
        out, _ = client.communicate(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["code"] == UNAVAILABLE, r
    assert r["elapsed_ms"] < 4000, r
