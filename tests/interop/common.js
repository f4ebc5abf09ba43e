// SPDX-License-Identifier: Apache-2.0
//
// Shared by client.js and server.js: the Interop service definition and the certificates that
// `grpc-peer certs DIR` wrote (our production CA), and SPIFFE IDs read from peer certificates.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PACKAGE_DEFINITION = protoLoader.loadSync(path.join(__dirname, 'interop.proto'), {
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: true,
    oneofs: true,
});
const Interop = grpc.loadPackageDefinition(PACKAGE_DEFINITION).ztna.interop.Interop;

function readCerts(dir) {
    const read = (name) => fs.readFileSync(path.join(dir, name));
    return {
        root: read('root.pem'),
        serverChain: read('server-chain.pem'),
        serverKey: read('server.key'),
        clientChain: read('client-chain.pem'),
        clientKey: read('client.key'),
    };
}

// The one URI SAN of a certificate as Node presents it ("URI:spiffe://…, DNS:…, IP Address:…"), or null
// when there is none or more than one: SPIFFE authentication replaces hostname checks.
function spiffeIdOf(cert) {
    if (!cert || typeof cert.subjectaltname !== 'string') {
        return null;
    }
    const uris = cert.subjectaltname
        .split(', ')
        .filter((s) => s.startsWith('URI:'))
        .map((s) => s.slice(4));
    if (uris.length !== 1 || !uris[0].startsWith('spiffe://')) {
        return null;
    }
    return uris[0];
}

module.exports = { grpc, Interop, readCerts, spiffeIdOf };
