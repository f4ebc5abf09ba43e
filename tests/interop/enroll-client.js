// SPDX-License-Identifier: Apache-2.0
//
// A stock gRPC client (grpc-js) for the controller's Enrollment service, as an agent would use it:
//
//   node enroll-client.js enroll --token-file F --id ID --key-out K --cert-out CHAIN.pem
//                                --bundle-out ROOTS.pem [--version V] [--private-ip IP] [--label k=v]…
//                                [--labels-json '{"k":"v"}'] [--csr DER] [--address HOST:PORT]
//                                [--role connector|tunneler]   (what the agent says it is)
//   node enroll-client.js renew  --address A --ca ROOTS.pem --cert CHAIN.pem --key K [--new-key K2]
//                                --cert-out CHAIN.pem [--bundle-out ROOTS.pem] [--csr DER]
//   node enroll-client.js reauth --address A --ca ROOTS.pem --spiffe-id ID --key K [--new-key K2]
//                                --cert-out CHAIN.pem [--bundle-out ROOTS.pem] [--sign-key K3] [--csr DER]
//                                [--protocol normal|proof-first|begin-twice|end-after-begin|no-proof|empty]
//   node enroll-client.js burst  --token-file F --count N --id ID
//   node enroll-client.js reauth-flood --address A --ca ROOTS.pem --spiffe-id ID --key K --count N
//
// enroll trusts nothing up front: the token carries the controller addresses and the SHA-256 of the root
// CA's SubjectPublicKeyInfo. A first TLS connection fetches the server's chain (the controller sends its
// root too), the root whose key matches the pin becomes the only trust anchor, and the gRPC channel then
// verifies the server against it like any other. Everywhere the server is authenticated by its SPIFFE ID
// (spiffe://<td>/controller/<id>, td taken from the root's URI SAN), not by host name.
//
// Keys are generated with node's crypto (ECDSA P-256, PKCS#8 PEM, mode 0600); node cannot write CSRs, so
// /usr/bin/openssl makes them. --new-key K2 uses K2 when it exists and creates it otherwise. --csr sends
// the given bytes instead of a CSR (negative tests); --sign-key signs the challenge with another key.
//
// Output: one JSON line, {"ok":true,…} or {"ok":false,"code":N,"details":"…"} (code -1: a local failure
// such as a pin mismatch). Exit 0 either way, 2 on usage errors.
'use strict';

const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const tls = require('tls');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'src', 'proto', 'ztna.proto');
const OPENSSL = '/usr/bin/openssl';
const TOKEN_PREFIX = 'ztna1-';
const TOKEN_VERSION = 1;
const TOKEN_STRING_MAX = 4096;
const CALL_DEADLINE_MS = 20000;
const SLOW_DEADLINE_MS = 60000;
// reauth --protocol: how the client (mis)behaves on the stream, for negative tests.
const REAUTH_PROTOCOLS = ['normal', 'proof-first', 'begin-twice', 'end-after-begin', 'no-proof', 'empty'];
const CONNECT_TIMEOUT_MS = 10000;
const BURST_MAX = 1000;
const FLOOD_MAX = 4096;
// Below the server's SETTINGS_MAX_CONCURRENT_STREAMS (256).
const FLOOD_CALLS_PER_CONNECTION = 200;
const LOCAL_FAILURE = -1;

const PACKAGE_DEFINITION = protoLoader.loadSync(PROTO, {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
});
const Enrollment = grpc.loadPackageDefinition(PACKAGE_DEFINITION).ztna.v1.Enrollment;

class UsageError extends Error {}

class LocalError extends Error {}

function usage(message) {
    throw new UsageError(message);
}

// --name value pairs; names listed in `multi` may repeat and collect into arrays.
function parseOptions(argv, allowed, multi = []) {
    const opts = {};
    for (const m of multi) {
        opts[m] = [];
    }
    for (let i = 0; i < argv.length; i += 2) {
        const name = argv[i];
        if (!name.startsWith('--') || !allowed.includes(name.slice(2))) {
            usage(`unknown option '${name}'`);
        }
        if (i + 1 >= argv.length) {
            usage(`option '${name}' needs a value`);
        }
        const key = name.slice(2);
        if (multi.includes(key)) {
            opts[key].push(argv[i + 1]);
        } else {
            opts[key] = argv[i + 1];
        }
    }
    return opts;
}

function required(opts, ...names) {
    for (const n of names) {
        if (opts[n] === undefined) {
            usage(`--${n} is required`);
        }
    }
}

// ---- token (format: src/crypto/crypto-token.h) ------------------------------------------------------

function parseToken(text) {
    const s = text.trim();
    if (!s.startsWith(TOKEN_PREFIX) || s.length > TOKEN_STRING_MAX || !/^[A-Za-z0-9_-]+$/.test(s.slice(6))) {
        throw new LocalError('not an enrollment token');
    }
    const p = Buffer.from(s.slice(TOKEN_PREFIX.length), 'base64url');
    if (p.length < 1 + 16 + 32 + 32 + 1 + 4) {
        throw new LocalError('token is truncated');
    }
    const body = p.subarray(0, p.length - 4);
    const sum = crypto.createHash('sha256').update(body).digest().subarray(0, 4);
    if (!sum.equals(p.subarray(p.length - 4))) {
        throw new LocalError('token checksum mismatch');
    }
    if (p[0] !== TOKEN_VERSION) {
        throw new LocalError(`unsupported token version ${p[0]}`);
    }
    let off = 1;
    const id = body.subarray(off, off + 16).toString('hex');
    off += 16 + 32; // the secret stays inside the string we send
    const pin = Buffer.from(body.subarray(off, off + 32));
    off += 32;
    const n = body[off++];
    const addresses = [];
    for (let i = 0; i < n; i++) {
        const len = off < body.length ? body[off] : -1;
        if (len < 1 || off + 1 + len > body.length) {
            throw new LocalError('token address list is truncated');
        }
        addresses.push(body.subarray(off + 1, off + 1 + len).toString('ascii'));
        off += 1 + len;
    }
    if (off !== body.length || n === 0) {
        throw new LocalError('token address list is malformed');
    }
    return { string: s, id, pin, addresses };
}

// ---- certificates and keys -----------------------------------------------------------------------------

function spkiSha256(x509) {
    const spki = x509.publicKey.export({ type: 'spki', format: 'der' });
    return crypto.createHash('sha256').update(spki).digest();
}

// The one URI SAN of a certificate, or null.
function uriSanOf(subjectAltName) {
    if (typeof subjectAltName !== 'string') {
        return null;
    }
    const uris = subjectAltName.split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
    return uris.length === 1 ? uris[0] : null;
}

function splitPem(text) {
    const blocks = text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) || [];
    return blocks.map((b) => new crypto.X509Certificate(b));
}

function trustDomainOfRoot(root) {
    const uri = uriSanOf(root.subjectAltName);
    const m = uri && /^spiffe:\/\/([^/]+)$/.exec(uri);
    if (!m) {
        throw new LocalError('the root CA has no trust-domain URI SAN');
    }
    return m[1];
}

// Accepts exactly a controller of trust domain td; SPIFFE authentication replaces host names.
function controllerCheck(td, seen) {
    const re = new RegExp(`^spiffe://${td.replace(/\./g, '\\.')}/controller/[A-Za-z0-9._-]{1,128}$`);
    return (hostname, cert) => {
        const id = uriSanOf(cert && cert.subjectaltname);
        if (!id || !re.test(id)) {
            return new Error(`server is '${id}', not a controller of '${td}'`);
        }
        seen.server = id;
        return undefined;
    };
}

function derToPem(der) {
    return new crypto.X509Certificate(der).toString();
}

function writeSecretFile(file, data) {
    fs.writeFileSync(file, data, { mode: 0o600 });
    fs.chmodSync(file, 0o600);
}

function loadOrCreateKey(file) {
    if (fs.existsSync(file)) {
        return crypto.createPrivateKey(fs.readFileSync(file));
    }
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    writeSecretFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    return privateKey;
}

function makeCsr(keyFile) {
    const argv = ['req', '-new', '-key', keyFile, '-subj', '/', '-outform', 'DER'];
    const p = childProcess.spawnSync(OPENSSL, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (p.status !== 0) {
        throw new LocalError(`openssl req failed: ${p.stderr.toString().trim()}`);
    }
    return p.stdout;
}

function csrFor(opts, keyFile) {
    return opts.csr !== undefined ? fs.readFileSync(opts.csr) : makeCsr(keyFile);
}

function writeChain(file, chain) {
    fs.writeFileSync(file, chain.map(derToPem).join(''));
}

function describeLeaf(chain) {
    const leaf = new crypto.X509Certificate(chain[0]);
    return {
        spiffe_id: uriSanOf(leaf.subjectAltName),
        serial: leaf.serialNumber.toLowerCase(),
        not_before: leaf.validFrom,
        not_after: leaf.validTo,
        public_key_sha256: spkiSha256(leaf).toString('hex'),
        chain_length: chain.length,
    };
}

// ---- connections ---------------------------------------------------------------------------------------

// Looks at the chain the server sends and returns the certificate whose key matches the pin. Nothing is
// trusted here: the gRPC channel verifies the server against this root afterwards.
function fetchPinnedRoot(address, pin) {
    const { host, port } = splitAddress(address);
    return new Promise((resolve, reject) => {
        const socket = tls.connect({
            host, port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['h2'],
        }, () => {
            const seen = new Set();
            let found = null;
            for (let c = socket.getPeerCertificate(true); c && c.raw && !seen.has(c.fingerprint256);
                c = c.issuerCertificate) {
                seen.add(c.fingerprint256);
                const x509 = new crypto.X509Certificate(c.raw);
                if (spkiSha256(x509).equals(pin)) {
                    found = x509;
                }
            }
            // A clean close_notify: the server sees a finished handshake, not an aborted one.
            socket.end();
            if (!found) {
                reject(new LocalError('no certificate in the server chain matches the token pin'));
            } else {
                resolve(found);
            }
        });
        socket.setTimeout(CONNECT_TIMEOUT_MS, () => {
            socket.destroy();
            reject(new LocalError(`TLS connection to ${address} timed out`));
        });
        socket.on('error', (e) => {
            reject(new LocalError(`TLS connection to ${address} failed: ${e.message}`));
        });
    });
}

function splitAddress(address) {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(address);
    if (!m) {
        throw new LocalError(`bad address '${address}'`);
    }
    return { host: m[1] || m[2], port: Number(m[3]) };
}

function makeClient(address, rootsPem, keyPem, chainPem, td, seen) {
    const credentials = grpc.credentials.createSsl(rootsPem, keyPem, chainPem,
        { checkServerIdentity: controllerCheck(td, seen) });
    // SNI carries a name, never an address; it checks nothing: checkServerIdentity does.
    // A local subchannel pool: every client gets its own connection, as separate agents would.
    return new Enrollment(address, credentials, {
        'grpc.ssl_target_name_override': 'localhost',
        'grpc.use_local_subchannel_pool': 1,
    });
}

function deadline() {
    return new Date(Date.now() + CALL_DEADLINE_MS);
}

// Long enough to see the server's challenge timeout (30 s) rather than our own deadline.
function slowDeadline() {
    return new Date(Date.now() + SLOW_DEADLINE_MS);
}

function unary(client, method, request) {
    return new Promise((resolve) => {
        client[method](request, { deadline: deadline() }, (err, reply) => {
            resolve(err ? { err } : { reply });
        });
    });
}

function failure(err) {
    return { ok: false, code: err.code, details: err.details };
}

// ---- verbs ---------------------------------------------------------------------------------------------

async function enrollOnce(token, request, root, seen, address) {
    const td = trustDomainOfRoot(root);
    const client = makeClient(address || token.addresses[0], Buffer.from(root.toString()), null, null, td, seen);
    try {
        return await unary(client, 'Enroll', request);
    } finally {
        client.close();
    }
}

function enrollRequest(token, opts, csr) {
    const labels = {};
    for (const l of opts.label || []) {
        const eq = l.indexOf('=');
        if (eq < 0) {
            usage(`label '${l}' is not key=value`);
        }
        labels[l.slice(0, eq)] = l.slice(eq + 1);
    }
    // Any key at all (e.g. with '=' or control characters), for negative tests.
    if (opts['labels-json'] !== undefined) {
        Object.assign(labels, JSON.parse(opts['labels-json']));
    }
    const roles = { connector: 'ROLE_CONNECTOR', tunneler: 'ROLE_TUNNELER' };
    if (opts.role !== undefined && !roles[opts.role]) {
        usage('--role must be connector or tunneler');
    }
    return {
        role: opts.role !== undefined ? roles[opts.role] : 'ROLE_UNSPECIFIED',
        token: token.string,
        csr,
        id: opts.id,
        version: opts.version || '',
        private_ip: opts['private-ip'] || '',
        labels,
    };
}

async function cmdEnroll(argv) {
    const opts = parseOptions(argv, ['token-file', 'id', 'key-out', 'cert-out', 'bundle-out', 'version',
        'private-ip', 'label', 'labels-json', 'csr', 'address', 'role'], ['label']);
    required(opts, 'token-file', 'id', 'key-out', 'cert-out', 'bundle-out');
    // --address overrides the token's addresses (e.g. a socket-activated port); the pin still applies.
    const address = opts.address;
    const token = parseToken(fs.readFileSync(opts['token-file'], 'utf8'));
    loadOrCreateKey(opts['key-out']);
    const request = enrollRequest(token, opts, csrFor(opts, opts['key-out']));
    const root = await fetchPinnedRoot(address || token.addresses[0], token.pin);
    const seen = {};
    const { err, reply } = await enrollOnce(token, request, root, seen, address);
    if (err) {
        return failure(err);
    }
    const chain = reply.certificate_chain;
    const bundle = reply.trust_bundle;
    writeChain(opts['cert-out'], chain);
    writeChain(opts['bundle-out'], bundle);
    return {
        ok: true,
        spiffe_id: reply.config.spiffe_id,
        config: reply.config,
        controller_addresses: reply.controller_addresses,
        server_id: seen.server,
        token_id: token.id,
        leaf: describeLeaf(chain),
        bundle_sha256: bundle.map((b) => spkiSha256(new crypto.X509Certificate(b)).toString('hex')),
    };
}

async function cmdBurst(argv) {
    const opts = parseOptions(argv, ['token-file', 'count', 'id']);
    required(opts, 'token-file', 'count', 'id');
    const count = Number(opts.count);
    if (!Number.isInteger(count) || count < 1 || count > BURST_MAX) {
        usage('--count must be 1..' + BURST_MAX);
    }
    const token = parseToken(fs.readFileSync(opts['token-file'], 'utf8'));
    const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'enroll-burst-'));
    try {
        const keyFile = path.join(dir, 'key.pem');
        loadOrCreateKey(keyFile);
        const request = enrollRequest(token, opts, makeCsr(keyFile));
        const root = await fetchPinnedRoot(token.addresses[0], token.pin);
        // One channel per call: separate connections, as separate agents would race.
        const results = await Promise.all(
            Array.from({ length: count }, () => enrollOnce(token, request, root, {})));
        const details = new Set();
        const codes = {};
        let ok = 0;
        let denied = 0;
        for (const { err } of results) {
            if (!err) {
                ok++;
                continue;
            }
            if (err.code === grpc.status.PERMISSION_DENIED) {
                denied++;
            }
            codes[err.code] = (codes[err.code] || 0) + 1;
            details.add(err.details);
        }
        return { ok, denied, codes, details: [...details].sort() };
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

async function cmdRenew(argv) {
    const opts = parseOptions(argv, ['address', 'ca', 'cert', 'key', 'new-key', 'cert-out', 'bundle-out',
        'csr']);
    required(opts, 'address', 'ca', 'cert', 'key', 'cert-out');
    const rootsPem = fs.readFileSync(opts.ca);
    const roots = splitPem(rootsPem.toString());
    if (roots.length === 0) {
        usage(`no certificate in '${opts.ca}'`);
    }
    const csrKey = opts['new-key'] || opts.key;
    loadOrCreateKey(csrKey);
    const csr = csrFor(opts, csrKey);
    const seen = {};
    const client = makeClient(opts.address, rootsPem, fs.readFileSync(opts.key), fs.readFileSync(opts.cert),
        trustDomainOfRoot(roots[0]), seen);
    let result;
    try {
        result = await unary(client, 'Renew', { csr });
    } finally {
        client.close();
    }
    if (result.err) {
        return failure(result.err);
    }
    writeChain(opts['cert-out'], result.reply.certificate_chain);
    if (opts['bundle-out']) {
        writeChain(opts['bundle-out'], result.reply.trust_bundle);
    }
    return { ok: true, server_id: seen.server, leaf: describeLeaf(result.reply.certificate_chain),
        n_trust_bundle: result.reply.trust_bundle.length };
}

async function cmdReauth(argv) {
    const opts = parseOptions(argv, ['address', 'ca', 'spiffe-id', 'key', 'new-key', 'cert-out',
        'bundle-out', 'sign-key', 'csr', 'protocol']);
    required(opts, 'address', 'ca', 'spiffe-id', 'key', 'cert-out');
    const protocol = opts.protocol || 'normal';
    if (!REAUTH_PROTOCOLS.includes(protocol)) {
        usage(`--protocol must be one of ${REAUTH_PROTOCOLS.join(', ')}`);
    }
    const rootsPem = fs.readFileSync(opts.ca);
    const roots = splitPem(rootsPem.toString());
    if (roots.length === 0) {
        usage(`no certificate in '${opts.ca}'`);
    }
    const csrKey = opts['new-key'] || opts.key;
    loadOrCreateKey(csrKey);
    const csr = csrFor(opts, csrKey);
    const signKey = crypto.createPrivateKey(fs.readFileSync(opts['sign-key'] || opts.key));
    const seen = {};
    // No client certificate: it may well have expired.
    const client = makeClient(opts.address, rootsPem, null, null, trustDomainOfRoot(roots[0]), seen);
    const outcome = await new Promise((resolve) => {
        const call = client.Reauthenticate({
            deadline: protocol === 'no-proof' ? slowDeadline() : deadline(),
        });
        const begin = { begin: { spiffe_id: opts['spiffe-id'], csr } };
        let issued = null;
        let challenge = null;
        call.on('data', (resp) => {
            if (resp.step === 'challenge' && !challenge) {
                challenge = resp.challenge;
                if (protocol === 'begin-twice') {
                    call.write(begin);
                } else if (protocol === 'end-after-begin') {
                    call.end();
                } else if (protocol !== 'no-proof') {
                    const signature = crypto.sign('sha256', challenge.signed_data, signKey);
                    call.write({ proof: { signature } });
                }
            } else if (resp.step === 'issued') {
                issued = resp.issued;
                call.end();
            }
        });
        call.on('error', () => {}); // the status event carries it
        call.on('status', (status) => setImmediate(() => resolve({ status, issued, challenge })));
        if (protocol === 'proof-first') {
            call.write({ proof: { signature: Buffer.alloc(64) } });
        } else if (protocol === 'empty') {
            call.end();
        } else {
            call.write(begin);
        }
    });
    client.close();
    if (outcome.status.code !== grpc.status.OK || !outcome.issued) {
        return { ok: false, code: outcome.status.code, details: outcome.status.details,
            challenged: outcome.challenge !== null };
    }
    const chain = outcome.issued.certificate_chain;
    writeChain(opts['cert-out'], chain);
    if (opts['bundle-out']) {
        writeChain(opts['bundle-out'], outcome.issued.trust_bundle);
    }
    const c = outcome.challenge;
    return {
        ok: true,
        server_id: seen.server,
        leaf: describeLeaf(chain),
        nonce_hex: Buffer.from(c.nonce).toString('hex'),
        signed_data_hex: Buffer.from(c.signed_data).toString('hex'),
    };
}

// Opens --count Reauthenticate calls at once (spread over connections below the server's stream limit),
// never answers a challenge, and counts how each call was first answered: a challenge or a status. Then
// cancels them all.
async function cmdReauthFlood(argv) {
    const opts = parseOptions(argv, ['address', 'ca', 'spiffe-id', 'key', 'count']);
    required(opts, 'address', 'ca', 'spiffe-id', 'key', 'count');
    const count = Number(opts.count);
    if (!Number.isInteger(count) || count < 1 || count > FLOOD_MAX) {
        usage('--count must be 1..' + FLOOD_MAX);
    }
    const rootsPem = fs.readFileSync(opts.ca);
    const roots = splitPem(rootsPem.toString());
    if (roots.length === 0) {
        usage(`no certificate in '${opts.ca}'`);
    }
    const td = trustDomainOfRoot(roots[0]);
    const begin = { begin: { spiffe_id: opts['spiffe-id'], csr: makeCsr(opts.key) } };
    const clients = [];
    const calls = [];
    const codes = {};
    const details = new Set();
    let challenged = 0;
    await new Promise((resolve) => {
        let pending = count;
        const settle = () => {
            if (--pending === 0) {
                resolve();
            }
        };
        for (let i = 0; i < count; i++) {
            if (i % FLOOD_CALLS_PER_CONNECTION === 0) {
                clients.push(makeClient(opts.address, rootsPem, null, null, td, {}));
            }
            const call = clients[clients.length - 1].Reauthenticate({ deadline: slowDeadline() });
            let answered = false;
            call.on('data', (resp) => {
                if (!answered && resp.step === 'challenge') {
                    answered = true;
                    challenged++;
                    settle();
                }
            });
            call.on('error', () => {});
            call.on('status', (status) => {
                if (!answered) {
                    answered = true;
                    codes[status.code] = (codes[status.code] || 0) + 1;
                    details.add(status.details);
                    settle();
                }
            });
            call.write(begin);
            calls.push(call);
        }
    });
    for (const call of calls) {
        call.cancel();
    }
    for (const client of clients) {
        client.close();
    }
    return { challenged, codes, details: [...details].sort() };
}

const VERBS = { enroll: cmdEnroll, renew: cmdRenew, reauth: cmdReauth, burst: cmdBurst,
    'reauth-flood': cmdReauthFlood };

async function main() {
    const [verb, ...rest] = process.argv.slice(2);
    let result;
    try {
        if (!VERBS[verb]) {
            usage(`unknown verb '${verb}'`);
        }
        result = await VERBS[verb](rest);
    } catch (e) {
        if (e instanceof UsageError) {
            process.stderr.write(`enroll-client.js: ${e.message}\n` +
                'Usage: node enroll-client.js enroll|renew|reauth|burst|reauth-flood --option value …\n');
            process.exit(2);
        }
        if (!(e instanceof LocalError)) {
            throw e;
        }
        result = { ok: false, code: LOCAL_FAILURE, details: e.message };
    }
    process.stdout.write(JSON.stringify(result) + '\n');
}

main();
