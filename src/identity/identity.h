/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* An agent's identity (DESIGN.md §7): what enrollment returns and what the agent keeps across restarts —
 * its private key, certificate chain, trust bundle, controller list and what the controller configured.
 * Everything here is plain data (DER, strings) so that src/agent, src/identity and the daemons share it
 * without OpenSSL types. The private key is secret: agent_identity_done() wipes it. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto-spiffe.h"
#include "macro.h"
#include "time-util.h"

/* Certificates in a chain (leaf, issuing CA(s)) and roots in a bundle an identity holds at most. */
#define IDENTITY_CHAIN_MAX 4U
#define IDENTITY_BUNDLE_MAX 16U
/* Controller addresses it remembers, and groups. */
#define IDENTITY_CONTROLLERS_MAX 8U
#define IDENTITY_GROUPS_MAX 64U

typedef struct DerBlob {
        uint8_t *data;
        size_t size;
} DerBlob;

typedef struct AgentIdentity {
        SpiffeRole role;                    /* SPIFFE_ROLE_CONNECTOR or SPIFFE_ROLE_TUNNELER */
        char *id;                           /* the agent id, [A-Za-z0-9._-]{1,128} */
        char *spiffe_id;                    /* spiffe://<td>/<role>/<id> */
        char *trust_domain;

        DerBlob key;                        /* PKCS#8 PrivateKeyInfo: SECRET */
        DerBlob chain[IDENTITY_CHAIN_MAX];  /* leaf first */
        size_t n_chain;
        DerBlob bundle[IDENTITY_BUNDLE_MAX];/* trusted roots */
        size_t n_bundle;

        char **controllers;                 /* "host:port" strv, tried in random order */
        char *remote_network;               /* connectors */
        char **groups;                      /* tunnelers (strv) */
        usec_t heartbeat_interval;
        usec_t certificate_lifetime;
        usec_t not_after;                   /* of the leaf, CLOCK_REALTIME */
} AgentIdentity;

/* Whether two lists of DER blobs are the same, byte for byte and in order (trust bundles, chains). */
bool der_blobs_equal(const DerBlob *a, size_t na, const DerBlob *b, size_t nb) _pure_;

/* Frees everything, wiping the key; resets to zeroes. Accepts a zeroed identity. */
void agent_identity_done(AgentIdentity *i);
