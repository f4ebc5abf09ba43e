/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The agents' side of the Enrollment service (src/proto/ztna.proto, DESIGN.md §3, §4):
 *
 *   agent_enroll()          token + fresh key pair + CSR → an AgentIdentity. TLS trusts only the root whose
 *                           SPKI the token pins; the server must be spiffe://<that root's td>/controller/<any>.
 *   agent_renew()           mTLS with the identity → a renewed copy (same key or a fresh one).
 *   agent_reauthenticate()  no client certificate (it may have expired): the controller's challenge is
 *                           signed with the current key, after checking that it is exactly the
 *                           domain-separated blob of controller-enroll.h for our SPIFFE ID and CSR.
 *
 * Each runs on the caller's sd_event and reports once through the callback, from the event loop (never from
 * inside the start function). Controller addresses are tried in random order, each bounded by the connect
 * timeout (TCP connect + TLS handshake); once a call has started it is not retried elsewhere. Every failure
 * carries a printable, secret-free reason: the controller's status message when it refused
 * ("token already used"), "controller unreachable (<addresses>)", "CA pin mismatch: …", the token parser's
 * reason ("token is damaged …"), or what was wrong with a response.
 *
 * Host names are resolved with a blocking getaddrinfo() (literal addresses never block).
 * Programs using this ignore SIGPIPE (net-tls.h). Nothing here logs above debug. */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "crypto-key.h"
#include "crypto-spiffe.h"
#include "identity.h"
#include "time-util.h"

/* Per controller address: TCP connect + TLS handshake. */
#define AGENT_CONNECT_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/* The gRPC call, request to final status. */
#define AGENT_CALL_TIMEOUT_DEFAULT (30 * USEC_PER_SEC)
/* Largest response message accepted (a chain of IDENTITY_CHAIN_MAX and IDENTITY_BUNDLE_MAX roots fit). */
#define AGENT_RESPONSE_MAX (256U * 1024U)
/* Labels sent at enrollment, and the longest text field (version, private IP, label, config string). */
#define AGENT_LABELS_MAX 32U
#define AGENT_STRING_MAX 1024U
/* Addresses tried for one controller host name. */
#define AGENT_RESOLVE_MAX 4U
/* Largest heartbeat interval and certificate lifetime a controller may configure. */
#define AGENT_HEARTBEAT_INTERVAL_MAX (3600U)
#define AGENT_CERTIFICATE_LIFETIME_MAX (366ULL * 24 * 3600)

/* Domain separation of the re-authentication challenge: must equal ENROLL_REAUTH_CONTEXT and
 * ENROLL_NONCE_SIZE of controller-enroll.h. */
#define AGENT_REAUTH_CONTEXT "ztna-reauth-v1"
#define AGENT_REAUTH_NONCE_SIZE 32U

typedef struct AgentRequest AgentRequest;

/* error: 0 on success with identity set (the callback may take its contents over: copy the struct and zero
 * the original; whatever is left is wiped and freed after the callback returns), or a negative errno with
 * reason (never NULL) and identity NULL. Errors: the errno of the controller's gRPC status
 * (grpc_status_to_errno(): -EACCES refused, -EINVAL bad request, …), -EHOSTUNREACH unreachable, -ENOKEY pin
 * mismatch or a controller that does not chain to root_pem, -EXDEV a controller of another trust domain
 * than expected_trust_domain, -EPROTO another handshake failure, the token parser's errors, -EBADMSG a
 * malformed response or a challenge we refuse to sign, -ENOMEM. */
typedef void (*AgentRequestCallback)(AgentRequest *req, int error, const char *reason, AgentIdentity *identity,
                                     void *userdata);

typedef struct AgentEnrollParams {
        const char *token;          /* "ztna1-…": secret; copied, wiped after use, never logged */
        SpiffeRole role;            /* SPIFFE_ROLE_CONNECTOR or SPIFFE_ROLE_TUNNELER */
        const char *id;             /* [A-Za-z0-9._-]{1,128} */
        /* id is only a default (the host name): when the token is bound to an id, the controller enrolls
         * under that one and the identity carries it. */
        bool id_is_default;
        const char *version;        /* may be NULL */
        const char *private_ip;     /* may be NULL */
        char **labels;              /* "key=value" strv, may be NULL */
        KeyType key_type;
        usec_t connect_timeout;     /* 0: AGENT_CONNECT_TIMEOUT_DEFAULT */
        usec_t call_timeout;        /* 0: AGENT_CALL_TIMEOUT_DEFAULT */
        /* NULL: any. Checked on the controller's verified identity right after the TLS handshake, before
         * the token is sent: a controller of another trust domain fails with -EXDEV and the token stays
         * unused. */
        const char *expected_trust_domain;
        /* NULL: trust the root the token pins. Otherwise one or more PEM roots of one trust domain (that of
         * expected_trust_domain if set, else the first root's trust-domain URI SAN), trusted instead of the
         * pin, which is then ignored: the controller must chain to one of them (else -ENOKEY) and its trust
         * bundle must contain one of them. A root text that cannot be used is reported through the
         * callback (-EBADMSG, -EKEYREJECTED, …) with a reason, like a bad token. */
        const char *root_pem;
} AgentEnrollParams;

/* -EINVAL for invalid parameters (role, id, key type, labels, expected trust domain, over-long or control
 * characters), checked
 * before anything starts; a bad token is reported through the callback with the parser's reason. ret may be
 * NULL: the request then frees itself after the callback. */
int agent_enroll(sd_event *event, const AgentEnrollParams *params, AgentRequestCallback callback,
                 void *userdata, AgentRequest **ret);
/* The identity is copied; the result is an updated copy (chain, trust bundle, not_after, and the key when
 * new_key). -EINVAL for an incomplete identity (no key, chain, bundle or controllers). */
int agent_renew(sd_event *event, const AgentIdentity *identity, bool new_key, AgentRequestCallback callback,
                void *userdata, AgentRequest **ret);
int agent_reauthenticate(sd_event *event, const AgentIdentity *identity, bool new_key,
                         AgentRequestCallback callback, void *userdata, AgentRequest **ret);

/* Cancels a request that is still running (the callback is not called) and frees it. NULL allowed. */
AgentRequest *agent_request_free(AgentRequest *req);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentRequest *, agent_request_free);

/* Blocking conveniences (`ztna-connector enroll`): run the request on a private event loop. On success
 * *ret is filled (agent_identity_done() it); on failure *ret is untouched and *ret_reason (may be NULL)
 * gets an allocated copy of the reason. */
int agent_enroll_sync(const AgentEnrollParams *params, AgentIdentity *ret, char **ret_reason);
int agent_renew_sync(const AgentIdentity *identity, bool new_key, AgentIdentity *ret, char **ret_reason);
int agent_reauthenticate_sync(const AgentIdentity *identity, bool new_key, AgentIdentity *ret,
                              char **ret_reason);
