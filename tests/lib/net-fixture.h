/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Test fixtures for the transport: a PKI made with the production CA (root → issuing → leaves), loopback
 * TCP socket pairs, and an sd-event loop runner with a deadline so a broken test fails instead of hanging. */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "crypto-bundle.h"
#include "crypto-ca.h"
#include "crypto-key.h"
#include "crypto-spiffe.h"
#include "net-tls.h"

#define FIXTURE_TRUST_DOMAIN "ztna.test"

typedef struct Pki {
        CertificateAuthority *root, *issuing;
        TrustBundle *bundle;
} Pki;

typedef struct Identity {
        X509 *cert;
        STACK_OF(X509) *chain; /* issuing CA (+ root when requested) */
        EVP_PKEY *key;
} Identity;

void pki_init(Pki *pki, const char *trust_domain);
void pki_done(Pki *pki);
/* A leaf for spiffe://<td>/<role>/<id> valid from now - back to now + lifetime (CLOCK_REALTIME µs "now"
 * override: 0 for the current time). */
void pki_issue(Pki *pki, SpiffeRole role, const char *id, usec_t now, usec_t lifetime, Identity *ret);
void identity_done(Identity *id);

TlsContext *fixture_server_context(Pki *pki, const Identity *id, SpiffeRole peer_role);
TlsContext *fixture_client_context(Pki *pki, const Identity *id /* may be NULL */, SpiffeRole peer_role);

/* A listening socket on 127.0.0.1 with an ephemeral port. */
int fixture_listen(uint16_t *ret_port);
/* A non-blocking client socket connecting to 127.0.0.1:port. */
int fixture_connect(uint16_t port);
/* Accepts one connection (non-blocking result), waiting at most 5 s. */
int fixture_accept(int listen_fd);

/* Runs the loop until *done becomes true or timeout passes; returns true if done. */
bool fixture_run_until(sd_event *e, const bool *done, usec_t timeout);
/* Same with a predicate. */
bool fixture_run_until_func(sd_event *e, bool (*pred)(void *userdata), void *userdata, usec_t timeout);
