// SPDX-License-Identifier: Apache-2.0
//
// The Interop service (interop.proto) on grpc-js, with mutual TLS using our certificates:
//   node server.js DIR      prints "PORT <n>" once listening on 127.0.0.1, runs until SIGTERM/SIGINT.
// Same semantics as `grpc-peer serve`: fail_code ends the call with that status and fail_message,
// delay_ms answers after a timer, otherwise the payload comes back with the client's SPIFFE ID.
'use strict';

const { grpc, Interop, readCerts, spiffeIdOf } = require('./common');

const STATUS_MAX = 16;
const QUEUE_MAX = 1024;
const DELAY_MAX_MS = 60000;

function peerIdOf(call) {
    const auth = call.getAuthContext();
    return spiffeIdOf(auth && auth.sslPeerCertificate) || '';
}

// Checks one request; returns a status object for a request we refuse, else null.
function validate(req) {
    if (req.delay_ms > DELAY_MAX_MS) {
        return { code: grpc.status.OUT_OF_RANGE, details: 'delay_ms too large' };
    }
    if (req.fail_code > STATUS_MAX) {
        return { code: grpc.status.INVALID_ARGUMENT, details: 'fail_code out of range' };
    }
    return null;
}

function unary(call, callback) {
    const req = call.request;
    const bad = validate(req);
    if (bad) {
        callback(bad);
        return;
    }
    const answer = () => {
        if (req.fail_code !== 0) {
            callback({ code: req.fail_code, details: req.fail_message });
        } else {
            callback(null, { payload: req.payload, peer_id: peerIdOf(call) });
        }
    };
    if (req.delay_ms > 0) {
        const timer = setTimeout(answer, req.delay_ms);
        call.on('cancelled', () => clearTimeout(timer));
    } else {
        answer();
    }
}

// Requests are answered in arrival order, each after its own delay; OK once the client half-closed and
// every request has its answer.
function bidi(call) {
    const queue = [];
    let timer = null;
    let waited = false;
    let halfClosed = false;
    let done = false;

    const finish = (status) => {
        done = true;
        queue.length = 0;
        if (status) {
            call.emit('error', status);
        } else {
            call.end();
        }
    };

    const process = () => {
        while (!done && queue.length > 0) {
            const req = queue[0];
            if (req.delay_ms > 0 && !waited) {
                if (!timer) {
                    timer = setTimeout(() => {
                        timer = null;
                        waited = true;
                        process();
                    }, req.delay_ms);
                }
                return;
            }
            waited = false;
            queue.shift();
            if (req.fail_code !== 0) {
                finish({ code: req.fail_code, details: req.fail_message });
                return;
            }
            call.write({ payload: req.payload, peer_id: peerIdOf(call) });
        }
        if (!done && halfClosed) {
            finish(null);
        }
    };

    call.on('data', (req) => {
        if (done) {
            return;
        }
        const full = queue.length >= QUEUE_MAX
            ? { code: grpc.status.RESOURCE_EXHAUSTED, details: 'too many requests' } : null;
        const bad = validate(req) || full;
        if (bad) {
            finish(bad);
            return;
        }
        queue.push(req);
        process();
    });
    call.on('end', () => {
        halfClosed = true;
        process();
    });
    call.on('cancelled', () => {
        done = true;
        if (timer) {
            clearTimeout(timer);
        }
    });
}

function main() {
    if (process.argv.length !== 3) {
        process.stderr.write('Usage: node server.js DIR\n');
        process.exit(2);
    }
    const certs = readCerts(process.argv[2]);
    const server = new grpc.Server();
    server.addService(Interop.service, { Unary: unary, Bidi: bidi });
    const credentials = grpc.ServerCredentials.createSsl(
        certs.root, [{ cert_chain: certs.serverChain, private_key: certs.serverKey }], true);

    server.bindAsync('127.0.0.1:0', credentials, (err, port) => {
        if (err) {
            process.stderr.write(`server.js: failed to listen: ${err.message}\n`);
            process.exit(1);
        }
        process.stdout.write(`PORT ${port}\n`);
    });

    const stop = () => {
        // Graceful first; calls still running after a moment are cut off.
        const force = setTimeout(() => {
            server.forceShutdown();
            process.exit(0);
        }, 2000);
        server.tryShutdown(() => {
            clearTimeout(force);
            process.exit(0);
        });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main();
