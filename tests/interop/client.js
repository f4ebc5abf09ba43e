// SPDX-License-Identifier: Apache-2.0
//
// One call with grpc-js against an Interop server, described by a JSON spec; prints what it observed as
// one JSON line and exits 0 (2 for bad usage, 1 when no status arrived in time).
//   node client.js DIR PORT SPEC
// SPEC: {"method": "Unary"|"Bidi"|any other name (sent raw, e.g. to test UNIMPLEMENTED),
//        "requests": [{"payload_hex" or "payload_size", "fail_code", "fail_message", "delay_ms"}, …],
//        "deadline_ms": N (optional), "client_cert": true|false (default true),
//        "server_id": "spiffe://…" (default the controller ctl-1),
//        "concurrent": N (that many identical calls at once on one connection, default 1),
//        "cancel_after_replies": N (Bidi: cancel instead of half-closing once N replies arrived),
//        "compression": "gzip"|"deflate" (compress what the client sends)}
// Output: {"code", "details", "replies": [{"payload_len", "payload_sha256", "payload_hex" (short ones),
//          "peer_id"}], "elapsed_ms"}, or {"calls": [that, …]} for several concurrent calls.
// The server is authenticated by its SPIFFE ID (the URI SAN), not by host name.
'use strict';

const crypto = require('crypto');
const { grpc, Interop, readCerts, spiffeIdOf } = require('./common');

const DEFAULT_SERVER_ID = 'spiffe://ztna.test/controller/ctl-1';
const DEFAULT_DEADLINE_MS = 10000;
const WATCHDOG_MS = 15000;
// Replies up to this size are printed in full (hex), larger ones only by length and SHA-256.
const PAYLOAD_HEX_MAX = 256;
const CONCURRENT_MAX = 1000;

function usage() {
    process.stderr.write('Usage: node client.js DIR PORT SPEC\n');
    process.exit(2);
}

// payload_size asks for a large payload without putting it on the command line: byte i is (i * 31 + 7) & 255.
function patternPayload(size) {
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i++) {
        b[i] = (i * 31 + 7) & 255;
    }
    return b;
}

function toRequest(r) {
    return {
        payload: r.payload_size !== undefined
            ? patternPayload(r.payload_size) : Buffer.from(r.payload_hex || '', 'hex'),
        fail_code: r.fail_code || 0,
        fail_message: r.fail_message || '',
        delay_ms: r.delay_ms || 0,
    };
}

function describeReply(r) {
    const payload = Buffer.from(r.payload);
    const d = {
        payload_len: payload.length,
        payload_sha256: crypto.createHash('sha256').update(payload).digest('hex'),
        peer_id: r.peer_id,
    };
    if (payload.length <= PAYLOAD_HEX_MAX) {
        d.payload_hex = payload.toString('hex');
    }
    return d;
}

function main() {
    if (process.argv.length !== 5) {
        usage();
    }
    const [dir, port, specText] = process.argv.slice(2);
    if (!/^[0-9]{1,5}$/.test(port)) {
        usage();
    }
    const spec = JSON.parse(specText);
    if (spec.concurrent !== undefined && !(spec.concurrent >= 1 && spec.concurrent <= CONCURRENT_MAX)) {
        usage();
    }
    const certs = readCerts(dir);
    const expectedServer = spec.server_id || DEFAULT_SERVER_ID;
    const withCert = spec.client_cert !== false;

    const credentials = grpc.credentials.createSsl(
        certs.root, withCert ? certs.clientKey : null, withCert ? certs.clientChain : null, {
            checkServerIdentity: (hostname, cert) => {
                const id = spiffeIdOf(cert);
                if (id !== expectedServer) {
                    return new Error(`server is '${id}', expected '${expectedServer}'`);
                }
                return undefined;
            },
        });
    // SNI carries a name, never an address (RFC 6066); it checks nothing here: checkServerIdentity does.
    const options = { 'grpc.ssl_target_name_override': 'localhost' };
    if (spec.compression) {
        options['grpc.default_compression_algorithm'] = grpc.compressionAlgorithms[spec.compression];
    }
    const client = new Interop(`127.0.0.1:${port}`, credentials, options);
    const calls = [];
    for (let i = 0; i < (spec.concurrent || 1); i++) {
        calls.push(runCall(client, spec));
    }
    setTimeout(() => {
        process.stdout.write(JSON.stringify({ error: 'no status within the watchdog time' }) + '\n');
        process.exit(1);
    }, WATCHDOG_MS).unref();
    Promise.all(calls).then((results) => {
        process.stdout.write(JSON.stringify(results.length === 1 ? results[0] : { calls: results }) + '\n');
        // Closing the channel lets the process end on its own once the connection is gone.
        client.close();
    });
}

// One call on the channel; resolves to what it observed once the final status arrived.
function runCall(client, spec) {
    const deadline = new Date(Date.now() + (spec.deadline_ms || DEFAULT_DEADLINE_MS));
    const requests = (spec.requests || []).map(toRequest);
    const replies = [];
    const started = process.hrtime.bigint();
    const collect = (err, reply) => {
        if (reply) {
            replies.push(reply);
        }
    };
    let call;

    if (spec.method === 'Unary') {
        call = client.Unary(requests[0], { deadline }, collect);
    } else if (spec.method === 'Bidi') {
        call = client.Bidi({ deadline });
        call.on('data', (reply) => {
            replies.push(reply);
            // The client walks away in the middle: RST_STREAM CANCEL to the server.
            if (replies.length === spec.cancel_after_replies) {
                call.cancel();
            }
        });
        call.on('error', () => {}); // the status event carries it
        for (const r of requests) {
            call.write(r);
        }
        if (spec.cancel_after_replies === undefined) {
            call.end();
        }
    } else {
        // A method the server does not have: same message types, any name.
        const method = `/ztna.interop.Interop/${spec.method}`;
        const serialize = Interop.service.Unary.requestSerialize;
        const deserialize = Interop.service.Unary.responseDeserialize;
        call = client.makeUnaryRequest(method, serialize, deserialize, requests[0] || toRequest({}),
            new grpc.Metadata(), { deadline }, collect);
    }

    return new Promise((resolve) => {
        // The final status comes after every message and the callback.
        call.on('status', (status) => setImmediate(() => resolve({
            code: status.code,
            details: status.details,
            replies: replies.map((r) => describeReply(r)),
            elapsed_ms: Number((process.hrtime.bigint() - started) / 1000000n),
        })));
    });
}

main();
