// SPDX-License-Identifier: Apache-2.0
//
// A stock gRPC client (grpc-js) holding an agent's Control.Connect stream, as a connector or tunneler would:
//
//   node control-client.js --address A --ca ROOTS.pem --cert CHAIN.pem --key KEY.pem
//                          [--heartbeats N] [--interval-ms M] [--hold-ms T] [--server-id ID]
//                          [--version V] [--private-ip IP] [--label k=v]… [--no-hello]
//                          [--forward TUNNELER_ID]… [--flow] [--timeout-ms W]
//
// It sends a Hello (unless --no-hello), then N Heartbeats M ms apart (default 0 and 1000), and with each
// heartbeat one ForwardedHeartbeat per --forward ID (and a FlowEvent with --flow). After the last one it
// keeps the stream open for T ms (default 0; -1: until the server ends it) and then half-closes.
//
// Output, one JSON object per line as things happen:
//   {"type":"config", role, id, spiffe_id, remote_network, groups, heartbeat_interval_seconds,
//    certificate_lifetime_seconds}
//   {"type":"trust_bundle","roots":[SHA-256 of each root's DER, hex]}
//   {"type":"revocation","spiffe_id":…,"reason":…}
//   {"type":"renew_now"}
//   {"type":"sent","what":"hello"|"heartbeat"|"forwarded"|"flow","n":i}
//   {"type":"status","code":N,"details":"…"}          the stream ended (always the last line)
// Exit 0 once the status arrived, 1 when it did not within W ms (default 60000), 2 on usage errors.
//
// The server is authenticated by its SPIFFE ID (the URI SAN, default spiffe://ztna.test/controller/ctl-1),
// not by host name: SPIFFE authentication replaces hostname verification.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'src', 'proto', 'ztna.proto');
const DEFAULT_SERVER_ID = 'spiffe://ztna.test/controller/ctl-1';
const DEFAULT_INTERVAL_MS = 1000;
const DEFAULT_TIMEOUT_MS = 60000;
const HEARTBEATS_MAX = 100000;
const FORWARD_MAX = 1000;

const PACKAGE_DEFINITION = protoLoader.loadSync(PROTO, {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
});
const Control = grpc.loadPackageDefinition(PACKAGE_DEFINITION).ztna.v1.Control;

class UsageError extends Error {}

function print(obj) {
    // Synchronous on pipes and files (Linux), so a reader sees each line as it happens.
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseOptions(argv) {
    const valued = ['address', 'ca', 'cert', 'key', 'heartbeats', 'interval-ms', 'hold-ms', 'server-id',
        'version', 'private-ip', 'label', 'forward', 'timeout-ms'];
    const flags = ['no-hello', 'flow'];
    const multi = ['label', 'forward'];
    const opts = { label: [], forward: [] };
    for (let i = 0; i < argv.length; i++) {
        const name = argv[i].startsWith('--') ? argv[i].slice(2) : null;
        if (name !== null && flags.includes(name)) {
            opts[name] = true;
            continue;
        }
        if (name === null || !valued.includes(name)) {
            throw new UsageError(`unknown option '${argv[i]}'`);
        }
        if (i + 1 >= argv.length) {
            throw new UsageError(`option '--${name}' needs a value`);
        }
        const value = argv[++i];
        if (multi.includes(name)) {
            opts[name].push(value);
        } else {
            opts[name] = value;
        }
    }
    for (const r of ['address', 'ca', 'cert', 'key']) {
        if (opts[r] === undefined) {
            throw new UsageError(`--${r} is required`);
        }
    }
    return opts;
}

function integer(opts, name, dflt, min, max) {
    if (opts[name] === undefined) {
        return dflt;
    }
    if (!/^-?[0-9]+$/.test(opts[name])) {
        throw new UsageError(`--${name} must be an integer`);
    }
    const v = Number(opts[name]);
    if (v < min || v > max) {
        throw new UsageError(`--${name} must be between ${min} and ${max}`);
    }
    return v;
}

// The one URI SAN of a certificate as Node presents it ("URI:spiffe://…, DNS:…, IP Address:…"), or null
// when there is none or more than one.
function spiffeIdOf(cert) {
    if (!cert || typeof cert.subjectaltname !== 'string') {
        return null;
    }
    const uris = cert.subjectaltname.split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
    return uris.length === 1 && uris[0].startsWith('spiffe://') ? uris[0] : null;
}

function describe(message) {
    switch (message.body) {
    case 'config': {
        const c = message.config;
        return {
            type: 'config',
            role: c.role,
            id: c.id,
            spiffe_id: c.spiffe_id,
            remote_network: c.remote_network,
            groups: c.groups,
            heartbeat_interval_seconds: c.heartbeat_interval_seconds,
            certificate_lifetime_seconds: c.certificate_lifetime_seconds,
        };
    }
    case 'trust_bundle':
        return {
            type: 'trust_bundle',
            roots: message.trust_bundle.roots.map((der) => crypto.createHash('sha256').update(der).digest('hex')),
        };
    case 'revocation':
        return { type: 'revocation', spiffe_id: message.revocation.spiffe_id, reason: message.revocation.reason };
    case 'renew_now':
        return { type: 'renew_now' };
    default:
        return { type: message.body || 'unknown' };
    }
}

function main() {
    let opts;
    let heartbeats;
    let interval;
    let hold;
    let timeout;
    try {
        opts = parseOptions(process.argv.slice(2));
        heartbeats = integer(opts, 'heartbeats', 0, 0, HEARTBEATS_MAX);
        interval = integer(opts, 'interval-ms', DEFAULT_INTERVAL_MS, 1, 3600000);
        hold = integer(opts, 'hold-ms', 0, -1, 3600000);
        timeout = integer(opts, 'timeout-ms', DEFAULT_TIMEOUT_MS, 1, 3600000);
        if (opts.forward.length > FORWARD_MAX) {
            throw new UsageError(`at most ${FORWARD_MAX} --forward`);
        }
    } catch (e) {
        if (e instanceof UsageError) {
            process.stderr.write(`control-client: ${e.message}\n`);
            process.exit(2);
        }
        throw e;
    }

    const expectedServer = opts['server-id'] || DEFAULT_SERVER_ID;
    const credentials = grpc.credentials.createSsl(fs.readFileSync(opts.ca), fs.readFileSync(opts.key),
        fs.readFileSync(opts.cert), {
            checkServerIdentity: (hostname, cert) => {
                const id = spiffeIdOf(cert);
                return id === expectedServer ? undefined
                    : new Error(`server is '${id}', expected '${expectedServer}'`);
            },
        });
    // SNI carries a name, never an address (RFC 6066); it checks nothing here: checkServerIdentity does.
    const client = new Control(opts.address, credentials, { 'grpc.ssl_target_name_override': 'localhost' });
    const call = client.Connect();
    const timers = [];
    let ended = false;

    const watchdog = setTimeout(() => {
        print({ type: 'error', message: `no status within ${timeout} ms` });
        process.exit(1);
    }, timeout);

    call.on('data', (message) => print(describe(message)));
    call.on('error', () => {}); // the status event carries it
    call.on('status', (status) => {
        ended = true;
        for (const t of timers) {
            clearTimeout(t);
        }
        clearTimeout(watchdog);
        print({ type: 'status', code: status.code, details: status.details });
        client.close();
    });

    const write = (what, n, message) => {
        if (!ended) {
            call.write(message);
            print({ type: 'sent', what, n });
        }
    };

    if (!opts['no-hello']) {
        const labels = {};
        for (const l of opts.label) {
            const eq = l.indexOf('=');
            labels[eq < 0 ? l : l.slice(0, eq)] = eq < 0 ? '' : l.slice(eq + 1);
        }
        write('hello', 0, {
            hello: { version: opts.version || '', private_ip: opts['private-ip'] || '', labels },
        });
    }
    for (let i = 1; i <= heartbeats; i++) {
        timers.push(setTimeout(() => {
            write('heartbeat', i, {
                heartbeat: {
                    version: opts.version || '',
                    private_ip: opts['private-ip'] || '',
                    counters: { streams_active: 0, streams_total: i },
                },
            });
            for (const id of opts.forward) {
                write('forwarded', i, {
                    forwarded_heartbeat: {
                        tunneler_spiffe_id: id,
                        heartbeat: { version: 'tunneler-test', private_ip: '10.9.8.7', sent_unix_ms: Date.now() },
                        received_unix_ms: Date.now(),
                    },
                });
            }
            if (opts.flow) {
                write('flow', i, {
                    flow: { kind: 'KIND_START', flow_id: `flow-${i}`, resource: 'test', target: 'db:5432' },
                });
            }
        }, i * interval));
    }
    if (hold >= 0) {
        timers.push(setTimeout(() => {
            if (!ended) {
                call.end();
            }
        }, heartbeats * interval + hold));
    }
}

main();
