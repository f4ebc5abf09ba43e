/* SPDX-License-Identifier: Apache-2.0 */

/* The Enrollment client: one AgentRequest per Enroll, Renew or Reauthenticate. A request walks through
 * its candidate addresses (random order) until one completes a TLS handshake, runs one gRPC call on that
 * connection, checks everything the controller sent before believing it, and reports once from a defer
 * source so that the callback may free the request. */

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "agent-enroll.h"
#include "crypto-bundle.h"
#include "crypto-csr.h"
#include "crypto-svid.h"
#include "crypto-token.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "identity-store.h"
#include "agent-util.h"
#include "log.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "net-h2.h"
#include "net-proto.h"
#include "net-tls.h"
#include "parse-util.h"
#include "random-util.h"
#include "string-util.h"
#include "strv.h"
#include "ztna.pb-c.h"

#define METHOD_ENROLL "/ztna.v1.Enrollment/Enroll"
#define METHOD_RENEW "/ztna.v1.Enrollment/Renew"
#define METHOD_REAUTHENTICATE "/ztna.v1.Enrollment/Reauthenticate"

/* Every address of a token or an identity, each resolved to at most AGENT_RESOLVE_MAX socket addresses. */
#define CANDIDATES_MAX (MAX(TOKEN_ADDRESSES_MAX, IDENTITY_CONTROLLERS_MAX) * AGENT_RESOLVE_MAX)

/* What a re-authenticating agent signs — the controller's definition (controller-enroll.h, which agents do
 * not link; the unit test checks that both agree):
 *   context (with its NUL) | nonce | u16 BE length | SPIFFE ID | SHA-256 of the CSR's SubjectPublicKeyInfo */
#define REAUTH_CONTEXT AGENT_REAUTH_CONTEXT
#define REAUTH_CONTEXT_SIZE sizeof(REAUTH_CONTEXT)
#define REAUTH_NONCE_SIZE AGENT_REAUTH_NONCE_SIZE

typedef enum RequestKind {
        REQUEST_ENROLL,
        REQUEST_RENEW,
        REQUEST_REAUTHENTICATE,
} RequestKind;

typedef enum ReauthStep {
        REAUTH_EXPECT_CHALLENGE,
        REAUTH_EXPECT_ISSUED,
        REAUTH_DONE,
} ReauthStep;

typedef struct Candidate {
        char *label;                    /* "host:port" as given: reasons and :authority */
        struct sockaddr_storage sa;
        socklen_t sa_len;
} Candidate;

struct AgentRequest {
        sd_event *event;
        RequestKind kind;
        AgentRequestCallback callback;
        void *userdata;
        bool floating;                  /* nobody holds it: frees itself after the callback */
        bool done;                      /* the outcome is decided; the callback is scheduled */

        /* Enroll */
        char *token;                    /* SECRET */
        bool id_is_default;
        EnrollmentToken *parsed_token;
        const char *token_reason;       /* static, from the parser */
        int token_error;
        SpiffeRole role;
        char *id, *version, *private_ip;
        char **label_keys, **label_values;
        KeyType key_type;
        char *expected_trust_domain;    /* NULL: any */
        TrustBundle *roots;             /* root_pem: trusted instead of the token's pin */

        /* Renew, Reauthenticate */
        AgentIdentity base;
        bool new_key;
        EVP_PKEY *current_key;

        EVP_PKEY *key;                  /* the key the new certificate certifies */
        uint8_t *csr;
        size_t csr_size;

        usec_t connect_timeout, call_timeout;
        TlsContext *tls_context;
        Candidate candidates[CANDIDATES_MAX];
        size_t n_candidates, next_candidate;
        const char *current;            /* label of the candidate being tried (borrowed) */
        char **unreachable;             /* labels that could not be reached */
        char *pin_mismatch;             /* the first address that presented another root */
        char *root_mismatch;            /* the first "controller at X does not chain to …" (roots) */
        char *domain_mismatch;          /* the first "controller at X belongs to trust domain …" */
        char *handshake_error;          /* the first other handshake failure, as a sentence */

        TlsConnection *tls;
        H2Session *session;
        GrpcClientCall *call;
        ReauthStep step;

        AgentIdentity result;
        bool have_result;
        int error;
        char *reason;
        sd_event_source *defer;
};

/* ---- small helpers ------------------------------------------------------------------------------------ */

static bool role_is_agent(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR || role == SPIFFE_ROLE_TUNNELER;
}

static int blob_copy(const void *data, size_t size, DerBlob *ret) {
        uint8_t *p;

        if (size == 0)
                return -EINVAL;
        p = malloc(size);
        if (!p)
                return -ENOMEM;
        memcpy(p, data, size);
        *ret = (DerBlob) { .data = p, .size = size };
        return 0;
}

static int identity_copy(const AgentIdentity *src, AgentIdentity *ret) {
        _cleanup_(agent_identity_done) AgentIdentity i = {
                .role = src->role,
                .heartbeat_interval = src->heartbeat_interval,
                .certificate_lifetime = src->certificate_lifetime,
                .not_after = src->not_after,
        };
        int r;

        if (src->n_chain > IDENTITY_CHAIN_MAX || src->n_bundle > IDENTITY_BUNDLE_MAX)
                return -EINVAL;
        if ((src->id && !(i.id = strdup(src->id))) ||
            (src->spiffe_id && !(i.spiffe_id = strdup(src->spiffe_id))) ||
            (src->trust_domain && !(i.trust_domain = strdup(src->trust_domain))) ||
            (src->remote_network && !(i.remote_network = strdup(src->remote_network))) ||
            (src->controllers && !(i.controllers = strv_copy(src->controllers))) ||
            (src->groups && !(i.groups = strv_copy(src->groups))))
                return -ENOMEM;
        if (src->key.size > 0) {
                r = blob_copy(src->key.data, src->key.size, &i.key);
                if (r < 0)
                        return r;
        }
        for (size_t k = 0; k < src->n_chain; k++) {
                r = blob_copy(src->chain[k].data, src->chain[k].size, &i.chain[k]);
                if (r < 0)
                        return r;
                i.n_chain++;
        }
        for (size_t k = 0; k < src->n_bundle; k++) {
                r = blob_copy(src->bundle[k].data, src->bundle[k].size, &i.bundle[k]);
                if (r < 0)
                        return r;
                i.n_bundle++;
        }
        *ret = i;
        i = (AgentIdentity) {};
        return 0;
}

/* ---- outcome ------------------------------------------------------------------------------------------ */

static void request_close_transport(AgentRequest *req) {
        req->tls = tls_connection_free(req->tls);
        if (req->session) {
                /* GOAWAY; the call's stream hears on_close and our on_finish forgets it. */
                h2_session_terminate(req->session, H2_NO_ERROR);
                req->session = h2_session_unref(req->session);
        }
        req->call = NULL;
}

static int on_defer(sd_event_source *s, void *userdata) {
        AgentRequest *req = userdata;

        /* Read before the callback: a request its caller holds may be freed from the callback. */
        bool floating = req->floating;

        request_close_transport(req);
        (void) sd_event_source_set_enabled(req->defer, SD_EVENT_OFF);
        if (req->callback)
                req->callback(req, req->error, req->error < 0 ? (req->reason ?: "out of memory") : NULL,
                              req->error < 0 ? NULL : &req->result, req->userdata);
        if (floating)
                agent_request_free(req);
        return 0;
}

/* Decides the outcome once (later calls are ignored) and schedules the callback. Returns error. */
static int request_finish(AgentRequest *req, int error, const char *format, ...) _printf_(3, 4);
static int request_finish(AgentRequest *req, int error, const char *format, ...) {
        va_list ap;
        int r;

        if (req->done)
                return error;
        req->done = true;
        req->error = error;
        if (error < 0 && format) {
                va_start(ap, format);
                if (vasprintf(&req->reason, format, ap) < 0)
                        req->reason = NULL;
                va_end(ap);
        }
        log_debug("Enrollment request to %s: %s", strna(req->current),
                  error < 0 ? strna(req->reason) : "done");

        /* The defer source exists since request_new() (disabled), so reporting cannot fail here. */
        r = sd_event_source_set_enabled(req->defer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Failed to schedule the enrollment callback: %m");
        return error;
}

/* ---- responses ---------------------------------------------------------------------------------------- */

/* The certificates of a response: the chain must verify against the trust bundle it came with, name the
 * expected SPIFFE ID and certify our key; on enrollment the bundle must hold the root the token pins and
 * that root gives the trust domain. Replaces the chain, bundle and not_after of *i (and sets trust_domain
 * and spiffe_id on enrollment). */
static int request_take_certificates(AgentRequest *req, ProtobufCBinaryData *chain, size_t n_chain,
                                     ProtobufCBinaryData *roots, size_t n_roots, AgentIdentity *i) {
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *intermediates = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *expected = NULL, *verified = NULL, *td_id = NULL;
        _cleanup_free_ uint8_t *leaf_spki = NULL, *our_spki = NULL;
        _cleanup_free_ char *why = NULL, *td = NULL;
        X509 *certs[IDENTITY_CHAIN_MAX] = {}, *root_certs[IDENTITY_BUNDLE_MAX] = {};
        size_t leaf_spki_size = 0, our_spki_size = 0;
        DerBlob new_chain[IDENTITY_CHAIN_MAX] = {}, new_bundle[IDENTITY_BUNDLE_MAX] = {};
        const char *reason = NULL;
        usec_t not_after;
        int r;

        if (n_chain == 0 || n_chain > IDENTITY_CHAIN_MAX)
                return request_finish(req, -EBADMSG, "controller at %s sent a chain of %zu certificates",
                                      req->current, n_chain);
        if (n_roots == 0 || n_roots > IDENTITY_BUNDLE_MAX || n_roots > TRUST_BUNDLE_ROOTS_MAX)
                return request_finish(req, -EBADMSG, "controller at %s sent a trust bundle of %zu roots",
                                      req->current, n_roots);

        for (size_t k = 0; k < n_roots; k++) {
                r = crypto_x509_from_der(roots[k].data, roots[k].len, &root_certs[k]);
                if (r < 0) {
                        crypto_x509_array_unref(root_certs, k);
                        return request_finish(req, r == -ENOMEM ? r : -EBADMSG,
                                              "controller at %s sent a malformed root certificate", req->current);
                }
        }

        if (req->kind == REQUEST_ENROLL) {
                const SpiffeId *peer = req->session ? h2_session_get_peer_id(req->session) : NULL;

                /* The root we trusted for the handshake (the pin's, or one of the given roots) must be
                 * in the bundle: it is what the agent trusts from now on. */
                for (size_t k = 0; k < n_roots && !td_id; k++) {
                        uint8_t fp[CRYPTO_SPKI_SHA256_SIZE];

                        if (crypto_x509_spki_sha256(root_certs[k], fp) < 0)
                                continue;
                        if (req->roots ? !trust_bundle_contains(req->roots, fp)
                                       : !crypto_memeq(fp, req->parsed_token->ca_pin, sizeof(fp)))
                                continue;
                        r = svid_get_trust_domain_of_ca(root_certs[k], &td_id);
                        if (r < 0)
                                break;
                }
                if (!td_id) {
                        crypto_x509_array_unref(root_certs, n_roots);
                        return request_finish(req, -EBADMSG,
                                              "the trust bundle from the controller at %s lacks the root %s",
                                              req->current,
                                              req->roots ? "we were given" : "this token pins");
                }
                if (!peer || !spiffe_id_member_of(peer, td_id->trust_domain) ||
                    (req->expected_trust_domain && !spiffe_id_member_of(td_id, req->expected_trust_domain))) {
                        crypto_x509_array_unref(root_certs, n_roots);
                        return request_finish(req, -EBADMSG,
                                              "the controller at %s is not of the pinned root's trust domain",
                                              req->current);
                }
                td = strdup(td_id->trust_domain);
                r = td ? spiffe_id_new_ztna(td, req->role, req->id, &expected) : -ENOMEM;
        } else {
                td = strdup(req->base.trust_domain);
                r = td ? spiffe_id_from_string_ztna(req->base.spiffe_id, &expected, NULL) : -ENOMEM;
        }
        if (r >= 0)
                r = trust_bundle_new(td, &bundle);
        if (r < 0) {
                crypto_x509_array_unref(root_certs, n_roots);
                return request_finish(req, r, "cannot build the expected identity: %s", strerror(-r));
        }
        for (size_t k = 0; k < n_roots; k++) {
                if (r >= 0) {
                        r = trust_bundle_add_full(bundle, root_certs[k], &reason);
                        if (r == -EEXIST)
                                reason = "duplicate root";
                }
                crypto_x509_unref(root_certs[k]);
        }
        if (r < 0)
                return request_finish(req, r == -ENOMEM ? r : -EBADMSG,
                                      "controller at %s sent an invalid trust bundle: %s", req->current,
                                      strna(reason));

        for (size_t k = 0; k < n_chain; k++) {
                r = crypto_x509_from_der(chain[k].data, chain[k].len, &certs[k]);
                if (r < 0) {
                        crypto_x509_array_unref(certs, k);
                        return request_finish(req, r == -ENOMEM ? r : -EBADMSG,
                                              "controller at %s sent a malformed certificate", req->current);
                }
        }
        r = crypto_x509_stack_new(certs + 1, n_chain - 1, &intermediates);
        if (r >= 0)
                r = svid_verify(bundle, certs[0], intermediates, 0, &verified, &why);
        if (r >= 0)
                r = crypto_x509_get_validity(certs[0], NULL, &not_after);
        if (r >= 0)
                r = crypto_x509_get_public_key_der(certs[0], &leaf_spki, &leaf_spki_size);
        crypto_x509_array_unref(certs, n_chain);
        if (r == -ENOMEM)
                return request_finish(req, r, "out of memory");
        if (r < 0)
                return request_finish(req, -EBADMSG, "the certificate from the controller at %s does not verify: %s",
                                      req->current, why ?: strerror(-r));
        if (!spiffe_id_equal(verified, expected))
                return request_finish(req, -EBADMSG, "controller at %s issued a certificate for '%s', not '%s'",
                                      req->current, verified->uri, expected->uri);
        r = crypto_key_public_to_der(req->key, &our_spki, &our_spki_size);
        if (r < 0)
                return request_finish(req, r, "cannot encode our public key: %s", strerror(-r));
        if (leaf_spki_size != our_spki_size || memcmp(leaf_spki, our_spki, our_spki_size) != 0)
                return request_finish(req, -EBADMSG, "controller at %s certified another key than ours",
                                      req->current);

        /* Everything checked: now copy, all or nothing. */
        for (size_t k = 0; k < n_chain && r >= 0; k++)
                r = blob_copy(chain[k].data, chain[k].len, &new_chain[k]);
        for (size_t k = 0; k < n_roots && r >= 0; k++)
                r = blob_copy(roots[k].data, roots[k].len, &new_bundle[k]);
        if (r >= 0 && req->kind == REQUEST_ENROLL) {
                free(i->spiffe_id);
                i->spiffe_id = strdup(verified->uri);
                free(i->trust_domain);
                i->trust_domain = TAKE_PTR(td);
                if (!i->spiffe_id)
                        r = -ENOMEM;
        }
        if (r < 0) {
                for (size_t k = 0; k < IDENTITY_CHAIN_MAX; k++)
                        free(new_chain[k].data);
                for (size_t k = 0; k < IDENTITY_BUNDLE_MAX; k++)
                        free(new_bundle[k].data);
                return request_finish(req, r, "out of memory");
        }

        for (size_t k = 0; k < i->n_chain && k < IDENTITY_CHAIN_MAX; k++)
                free(i->chain[k].data);
        for (size_t k = 0; k < i->n_bundle && k < IDENTITY_BUNDLE_MAX; k++)
                free(i->bundle[k].data);
        memcpy(i->chain, new_chain, sizeof(new_chain));
        memcpy(i->bundle, new_bundle, sizeof(new_bundle));
        i->n_chain = n_chain;
        i->n_bundle = n_roots;
        i->not_after = not_after;
        return 0;
}

/* The PKCS#8 of req->key into i->key (replacing any). */
static int request_take_key(AgentRequest *req, AgentIdentity *i) {
        uint8_t *der = NULL;
        size_t size = 0;
        int r;

        r = crypto_key_to_pkcs8_der(req->key, &der, &size);
        if (r < 0)
                return request_finish(req, r, "cannot encode the private key: %s", strerror(-r));
        erase_and_free(i->key.data, i->key.size);
        i->key = (DerBlob) { .data = der, .size = size };
        return 0;
}

static int enroll_take_config(AgentRequest *req, const Ztna__V1__EnrollResponse *resp, AgentIdentity *i) {
        const Ztna__V1__AgentConfig *c = resp->config;
        _cleanup_strv_free_ char **controllers = NULL, **groups = NULL;
        _cleanup_free_ char *remote_network = NULL, *id = NULL;

        if (!c)
                return request_finish(req, -EBADMSG, "controller at %s sent no configuration", req->current);
        /* Our id was only a guess: the controller used the one the token is bound to. */
        if (req->id_is_default && ztna_id_is_valid(c->id) && !streq_ptr(c->id, req->id)) {
                if (free_and_strdup(&req->id, c->id) < 0)
                        return request_finish(req, -ENOMEM, "out of memory");
        }
        if (c->role != proto_role_from_spiffe(req->role) || !streq_ptr(c->id, req->id))
                return request_finish(req, -EBADMSG, "controller at %s configured another agent", req->current);
        if (c->heartbeat_interval_seconds == 0 || c->heartbeat_interval_seconds > AGENT_HEARTBEAT_INTERVAL_MAX)
                return request_finish(req, -EBADMSG, "controller at %s sent a heartbeat interval of %u s",
                                      req->current, c->heartbeat_interval_seconds);
        if (c->certificate_lifetime_seconds == 0 || c->certificate_lifetime_seconds > AGENT_CERTIFICATE_LIFETIME_MAX)
                return request_finish(req, -EBADMSG, "controller at %s sent a certificate lifetime of %llu s",
                                      req->current, (unsigned long long) c->certificate_lifetime_seconds);
        if (!isempty(c->remote_network)) {
                if (!string_is_valid_text(c->remote_network, AGENT_STRING_MAX))
                        return request_finish(req, -EBADMSG, "controller at %s sent an invalid remote network",
                                              req->current);
                remote_network = strdup(c->remote_network);
                if (!remote_network)
                        return request_finish(req, -ENOMEM, "out of memory");
        }
        if (c->n_groups > IDENTITY_GROUPS_MAX)
                return request_finish(req, -EBADMSG, "controller at %s sent %zu groups", req->current,
                                      c->n_groups);
        for (size_t k = 0; k < c->n_groups; k++) {
                if (isempty(c->groups[k]) || !string_is_valid_text(c->groups[k], AGENT_STRING_MAX))
                        return request_finish(req, -EBADMSG, "controller at %s sent an invalid group",
                                              req->current);
                if (strv_extend(&groups, c->groups[k]) < 0)
                        return request_finish(req, -ENOMEM, "out of memory");
        }

        /* No list: the token's addresses are the ones known to work. */
        if (resp->n_controller_addresses > IDENTITY_CONTROLLERS_MAX)
                return request_finish(req, -EBADMSG, "controller at %s sent %zu controller addresses",
                                      req->current, resp->n_controller_addresses);
        for (size_t k = 0; k < resp->n_controller_addresses; k++) {
                HostPort hp;

                if (strnlen(resp->controller_addresses[k], HOST_PORT_STRING_MAX) >= HOST_PORT_STRING_MAX ||
                    parse_host_port(resp->controller_addresses[k], 0, &hp) < 0)
                        return request_finish(req, -EBADMSG, "controller at %s sent an invalid controller address",
                                              req->current);
                if (strv_extend(&controllers, resp->controller_addresses[k]) < 0)
                        return request_finish(req, -ENOMEM, "out of memory");
        }
        if (!controllers) {
                controllers = strv_copy(req->parsed_token->addresses);
                if (!controllers)
                        return request_finish(req, -ENOMEM, "out of memory");
        }
        id = strdup(req->id);
        if (!id)
                return request_finish(req, -ENOMEM, "out of memory");

        i->role = req->role;
        free(i->id);
        i->id = TAKE_PTR(id);
        strv_free(i->controllers);
        i->controllers = TAKE_PTR(controllers);
        free(i->remote_network);
        i->remote_network = TAKE_PTR(remote_network);
        strv_free(i->groups);
        i->groups = TAKE_PTR(groups);
        i->heartbeat_interval = (usec_t) c->heartbeat_interval_seconds * USEC_PER_SEC;
        i->certificate_lifetime = (usec_t) c->certificate_lifetime_seconds * USEC_PER_SEC;
        return 0;
}

/* What the agent will store must pass the identity file's own rules: better to refuse a response now than
 * to have spent the token on an identity that cannot be saved. */
static int request_check_identity(AgentRequest *req, const AgentIdentity *i) {
        const char *reason = NULL;
        int r;

        r = identity_check(i, &reason);
        if (r < 0)
                return request_finish(req, -EBADMSG, "controller at %s sent an identity that cannot be kept: %s",
                                      req->current, strna(reason));
        return 0;
}

static int enroll_take_response(AgentRequest *req, const Ztna__V1__EnrollResponse *resp) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        int r;

        r = enroll_take_config(req, resp, &i);
        if (r < 0)
                return r;
        r = request_take_certificates(req, resp->certificate_chain, resp->n_certificate_chain,
                                      resp->trust_bundle, resp->n_trust_bundle, &i);
        if (r < 0)
                return r;
        if (!streq_ptr(resp->config->spiffe_id, i.spiffe_id))
                return request_finish(req, -EBADMSG, "controller at %s configured '%s' but certified '%s'",
                                      req->current, strna(resp->config->spiffe_id), i.spiffe_id);
        r = request_take_key(req, &i);
        if (r < 0)
                return r;

        r = request_check_identity(req, &i);
        if (r < 0)
                return r;
        agent_identity_done(&req->result);
        req->result = i;
        i = (AgentIdentity) {};
        req->have_result = true;
        return 0;
}

/* Renew and Reauthenticate: an updated copy of the identity. */
static int renew_take_response(AgentRequest *req, const Ztna__V1__RenewResponse *resp) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        int r;

        if (!resp)
                return request_finish(req, -EBADMSG, "controller at %s sent an empty response", req->current);
        r = identity_copy(&req->base, &i);
        if (r < 0)
                return request_finish(req, r, "cannot copy the identity: %s", strerror(-r));
        r = request_take_certificates(req, resp->certificate_chain, resp->n_certificate_chain,
                                      resp->trust_bundle, resp->n_trust_bundle, &i);
        if (r < 0)
                return r;
        if (req->new_key) {
                r = request_take_key(req, &i);
                if (r < 0)
                        return r;
        }

        r = request_check_identity(req, &i);
        if (r < 0)
                return r;
        agent_identity_done(&req->result);
        req->result = i;
        i = (AgentIdentity) {};
        req->have_result = true;
        return 0;
}

/* What the controller must ask us to sign (controller-enroll.h): anything else is refused unsigned. */
static int reauth_expected_signed_data(AgentRequest *req, const uint8_t *nonce, uint8_t **ret, size_t *ret_size) {
        _cleanup_free_ uint8_t *spki = NULL;
        uint8_t hash[SHA256_DIGEST_SIZE], *d, *p;
        size_t spki_size = 0, n = strlen(req->base.spiffe_id), size;
        int r;

        if (n > SPIFFE_ID_MAX)
                return -EINVAL;
        r = crypto_key_public_to_der(req->key, &spki, &spki_size);
        if (r < 0)
                return r;
        r = crypto_sha256(spki, spki_size, hash);
        if (r < 0)
                return r;

        size = REAUTH_CONTEXT_SIZE + REAUTH_NONCE_SIZE + 2 + n + sizeof(hash);
        d = malloc(size);
        if (!d)
                return -ENOMEM;
        p = mempcpy(d, REAUTH_CONTEXT, REAUTH_CONTEXT_SIZE);
        p = mempcpy(p, nonce, REAUTH_NONCE_SIZE);
        *p++ = (uint8_t) (n >> 8);
        *p++ = (uint8_t) (n & 0xff);
        p = mempcpy(p, req->base.spiffe_id, n);
        memcpy(p, hash, sizeof(hash));
        *ret = d;
        *ret_size = size;
        return 0;
}

static int reauth_answer_challenge(AgentRequest *req, const Ztna__V1__ReauthChallenge *ch) {
        _cleanup_free_ uint8_t *expected = NULL, *sig = NULL;
        size_t expected_size = 0, sig_size = 0;
        int r;

        if (!ch || ch->nonce.len != REAUTH_NONCE_SIZE)
                return request_finish(req, -EBADMSG, "controller at %s sent a malformed challenge", req->current);
        r = reauth_expected_signed_data(req, ch->nonce.data, &expected, &expected_size);
        if (r < 0)
                return request_finish(req, r, "cannot build the challenge answer: %s", strerror(-r));
        if (ch->signed_data.len != expected_size || memcmp(ch->signed_data.data, expected, expected_size) != 0)
                return request_finish(req, -EBADMSG,
                                      "controller at %s asked to sign data that is not a re-authentication "
                                      "challenge for '%s' and this CSR: refused", req->current, req->base.spiffe_id);

        r = crypto_key_sign(req->current_key, expected, expected_size, &sig, &sig_size);
        if (r < 0)
                return request_finish(req, r, "cannot sign the challenge: %s", strerror(-r));

        Ztna__V1__ReauthProof proof = ZTNA__V1__REAUTH_PROOF__INIT;
        proof.signature = (ProtobufCBinaryData) { .data = sig, .len = sig_size };
        Ztna__V1__ReauthRequest msg = ZTNA__V1__REAUTH_REQUEST__INIT;
        msg.step_case = ZTNA__V1__REAUTH_REQUEST__STEP_PROOF;
        msg.proof = &proof;
        r = grpc_client_call_send(req->call, &msg.base);
        if (r >= 0)
                r = grpc_client_call_close_send(req->call);
        if (r < 0)
                return request_finish(req, r, "cannot send the proof to the controller at %s: %s", req->current,
                                      strerror(-r));
        req->step = REAUTH_EXPECT_ISSUED;
        return 0;
}

/* ---- the call ----------------------------------------------------------------------------------------- */

static int on_call_message(GrpcClientCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        AgentRequest *req = userdata;

        if (req->done)
                return -ECANCELED;
        if (req->have_result)
                return request_finish(req, -EBADMSG, "controller at %s sent more than one response", req->current);

        switch (req->kind) {
        case REQUEST_ENROLL:
                return enroll_take_response(req, (const Ztna__V1__EnrollResponse *) owned);
        case REQUEST_RENEW:
                return renew_take_response(req, (const Ztna__V1__RenewResponse *) owned);
        case REQUEST_REAUTHENTICATE: {
                const Ztna__V1__ReauthResponse *resp = (const Ztna__V1__ReauthResponse *) owned;

                if (req->step == REAUTH_EXPECT_CHALLENGE &&
                    resp->step_case == ZTNA__V1__REAUTH_RESPONSE__STEP_CHALLENGE)
                        return reauth_answer_challenge(req, resp->challenge);
                if (req->step == REAUTH_EXPECT_ISSUED && resp->step_case == ZTNA__V1__REAUTH_RESPONSE__STEP_ISSUED) {
                        req->step = REAUTH_DONE;
                        return renew_take_response(req, resp->issued);
                }
                return request_finish(req, -EBADMSG, "controller at %s sent an unexpected re-authentication step",
                                      req->current);
        }
        default:
                assert(false);
                return -EINVAL;
        }
}

static void on_call_finish(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata) {
        _cleanup_free_ char *text = NULL;
        AgentRequest *req = userdata;

        req->call = NULL;
        if (req->done)
                return;
        if (status == GRPC_STATUS_OK) {
                if (req->have_result)
                        (void) request_finish(req, 0, NULL);
                else
                        (void) request_finish(req, -EBADMSG, "controller at %s ended the call without a response",
                                              req->current);
                return;
        }

        /* The controller's words reach a terminal: no control characters. */
        if (!isempty(message)) {
                text = strdup(message);
                if (text)
                        for (char *p = text; *p; p++)
                                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                        *p = '?';
        }
        if (text && agent_status_is_refusal(status))
                (void) request_finish(req, grpc_status_to_errno(status), "%s", text);
        else
                (void) request_finish(req, grpc_status_to_errno(status) ?: -EREMOTEIO,
                                      "call to the controller at %s failed: %s%s%s", req->current,
                                      strna(grpc_status_to_string(status)), text ? ": " : "", strempty(text));
}

static const GrpcClientCallbacks call_callbacks = {
        .on_message = on_call_message,
        .on_finish = on_call_finish,
};

static int request_start_call(AgentRequest *req) {
        ProtobufCBinaryData csr = { .data = req->csr, .len = req->csr_size };
        const ProtobufCMessageDescriptor *output;
        const char *path;
        int r;

        switch (req->kind) {
        case REQUEST_ENROLL:
                path = METHOD_ENROLL;
                output = &ztna__v1__enroll_response__descriptor;
                break;
        case REQUEST_RENEW:
                path = METHOD_RENEW;
                output = &ztna__v1__renew_response__descriptor;
                break;
        default:
                path = METHOD_REAUTHENTICATE;
                output = &ztna__v1__reauth_response__descriptor;
        }
        r = grpc_client_call_start(req->session, req->current, path, output, AGENT_RESPONSE_MAX, req->call_timeout,
                                   &call_callbacks, req, &req->call);
        if (r < 0)
                return r;

        switch (req->kind) {
        case REQUEST_ENROLL: {
                size_t n = strv_length(req->label_keys);
                Ztna__V1__EnrollRequest__LabelsEntry entries[AGENT_LABELS_MAX], *ptrs[AGENT_LABELS_MAX];

                assert(n <= AGENT_LABELS_MAX);
                for (size_t k = 0; k < n; k++) {
                        entries[k] = (Ztna__V1__EnrollRequest__LabelsEntry) ZTNA__V1__ENROLL_REQUEST__LABELS_ENTRY__INIT;
                        entries[k].key = req->label_keys[k];
                        entries[k].value = req->label_values[k];
                        ptrs[k] = &entries[k];
                }
                Ztna__V1__EnrollRequest msg = ZTNA__V1__ENROLL_REQUEST__INIT;
                msg.token = req->token;
                msg.csr = csr;
                msg.id = req->id;
                msg.version = req->version ?: (char *) "";
                msg.private_ip = req->private_ip ?: (char *) "";
                msg.n_labels = n;
                msg.labels = n > 0 ? ptrs : NULL;
                msg.role = proto_role_from_spiffe(req->role);
                msg.id_is_default = req->id_is_default;
                r = grpc_client_call_send(req->call, &msg.base);
                if (r >= 0)
                        r = grpc_client_call_close_send(req->call);
                break;
        }
        case REQUEST_RENEW: {
                Ztna__V1__RenewRequest msg = ZTNA__V1__RENEW_REQUEST__INIT;

                msg.csr = csr;
                r = grpc_client_call_send(req->call, &msg.base);
                if (r >= 0)
                        r = grpc_client_call_close_send(req->call);
                break;
        }
        default: {
                Ztna__V1__ReauthBegin begin = ZTNA__V1__REAUTH_BEGIN__INIT;
                Ztna__V1__ReauthRequest msg = ZTNA__V1__REAUTH_REQUEST__INIT;

                begin.spiffe_id = req->base.spiffe_id;
                begin.csr = csr;
                msg.step_case = ZTNA__V1__REAUTH_REQUEST__STEP_BEGIN;
                msg.begin = &begin;
                req->step = REAUTH_EXPECT_CHALLENGE;
                r = grpc_client_call_send(req->call, &msg.base);
        }
        }
        return r;
}

/* ---- connecting --------------------------------------------------------------------------------------- */

static int request_connect_next(AgentRequest *req);

static void on_session_close(H2Session *s, int error, void *userdata) {
        AgentRequest *req = userdata;

        /* The call (if any) reports through on_finish; nothing else to do. */
        log_debug_errno(error, "Session with the controller at %s closed: %m", strna(req->current));
}

static const H2SessionCallbacks session_callbacks = { .on_close = on_session_close };

static void on_handshake(TlsConnection *tls, int error, void *userdata) {
        AgentRequest *req = userdata;
        const char *why;
        int r;

        if (error < 0) {
                why = tls_connection_get_error_reason(tls);
                log_debug("TLS handshake with the controller at %s failed: %s", req->current, strna(why));
                /* net-tls's words for a server that does not present the pinned root. */
                if (req->kind == REQUEST_ENROLL && why && strstr(why, "pinned CA fingerprint")) {
                        if (!req->pin_mismatch)
                                req->pin_mismatch = strdup(req->current);
                } else if (req->roots && why && strstr(why, "does not chain to a root")) {
                        /* svid_verify()'s words for a chain that ends at none of the given roots. */
                        if (!req->root_mismatch &&
                            asprintf(&req->root_mismatch,
                                     "the controller at %s does not chain to the given controller CA (%s)",
                                     req->current, why) < 0)
                                req->root_mismatch = NULL;
                } else if (agent_error_is_unreachable(error)) {
                        (void) strv_extend(&req->unreachable, req->current);
                } else if (!req->handshake_error &&
                           asprintf(&req->handshake_error, "TLS handshake with the controller at %s failed: %s",
                                    req->current, strna(why)) < 0)
                        req->handshake_error = NULL;
                req->tls = tls_connection_free(req->tls);
                (void) request_connect_next(req);
                return;
        }

        /* Before anything is sent, so that a token is not spent on a controller of another domain. */
        if (req->expected_trust_domain) {
                const SpiffeId *peer = tls_connection_get_peer_id(tls);

                if (!peer || !spiffe_id_member_of(peer, req->expected_trust_domain)) {
                        log_debug("Controller at %s is '%s', not of trust domain '%s'.", req->current,
                                  peer ? peer->uri : "(none)", req->expected_trust_domain);
                        if (!req->domain_mismatch &&
                            asprintf(&req->domain_mismatch,
                                     "the controller at %s belongs to trust domain '%s', expected '%s'",
                                     req->current, peer ? peer->trust_domain : "(none)",
                                     req->expected_trust_domain) < 0)
                                req->domain_mismatch = NULL;
                        req->tls = tls_connection_free(req->tls);
                        (void) request_connect_next(req);
                        return;
                }
        }

        r = h2_session_new(TAKE_PTR(req->tls), NULL, &session_callbacks, req, &req->session);
        if (r >= 0)
                r = request_start_call(req);
        if (r < 0)
                (void) request_finish(req, r, "cannot start the call to the controller at %s: %s", req->current,
                                      strerror(-r));
}

static const TlsConnectionCallbacks tls_callbacks = { .on_handshake = on_handshake };

/* Why nothing worked, preferring the most telling failure. */
static int request_fail_unreachable(AgentRequest *req) {
        _cleanup_free_ char *list = NULL;

        req->current = NULL;
        /* A verified controller of the wrong domain says most; then a root that did not match. */
        if (req->domain_mismatch)
                return request_finish(req, -EXDEV, "%s", req->domain_mismatch);
        if (req->root_mismatch)
                return request_finish(req, -ENOKEY, "%s", req->root_mismatch);
        if (req->pin_mismatch)
                return request_finish(req, -ENOKEY,
                                      "CA pin mismatch: the controller at %s does not present the root this token pins",
                                      req->pin_mismatch);
        if (req->handshake_error)
                return request_finish(req, -EPROTO, "%s", req->handshake_error);
        list = strv_join(req->unreachable, ", ");
        return request_finish(req, -EHOSTUNREACH, "controller unreachable (%s)", strna(list));
}

static int request_connect_next(AgentRequest *req) {
        int r;

        while (req->next_candidate < req->n_candidates) {
                Candidate *c = &req->candidates[req->next_candidate++];
                int fd;

                req->current = c->label;
                fd = socket(c->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
                if (fd < 0)
                        return request_finish(req, -errno, "cannot create a socket: %s", strerror(errno));
                if (connect(fd, (const struct sockaddr *) &c->sa, c->sa_len) < 0 && errno != EINPROGRESS) {
                        log_debug_errno(errno, "Failed to connect to the controller at %s: %m", c->label);
                        safe_close(fd);
                        if (strv_extend(&req->unreachable, c->label) < 0)
                                return request_finish(req, -ENOMEM, "out of memory");
                        continue;
                }
                r = tls_connection_new(req->tls_context, req->event, fd, &tls_callbacks, req, &req->tls);
                if (r < 0)
                        return request_finish(req, r, "cannot set up TLS: %s", strerror(-r));
                return 0;
        }
        return request_fail_unreachable(req);
}

/* Adds the socket addresses of a "host:port" (random order among them: the list is shuffled later). Names are
 * resolved here, blocking; a name that does not resolve is unreachable. */
static int request_add_address(AgentRequest *req, const char *address) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
                                  .ai_flags = AI_NUMERICSERV };
        struct addrinfo *res = NULL;
        char port[sizeof("65535")];
        unsigned n = 0;
        HostPort hp;
        int r;

        if (strnlen(address, HOST_PORT_STRING_MAX) >= HOST_PORT_STRING_MAX ||
            parse_host_port(address, 0, &hp) < 0)
                return -EINVAL;

        if (hp.family != AF_UNSPEC)
                hints.ai_flags |= AI_NUMERICHOST;
        hints.ai_family = hp.family;
        snprintf(port, sizeof(port), "%u", hp.port);
        r = getaddrinfo(hp.host, port, &hints, &res);
        if (r != 0) {
                log_debug("Failed to resolve '%s': %s", hp.host, gai_strerror(r));
                return strv_extend(&req->unreachable, address);
        }
        for (struct addrinfo *ai = res; ai && n < AGENT_RESOLVE_MAX && req->n_candidates < CANDIDATES_MAX;
             ai = ai->ai_next) {
                Candidate *c = &req->candidates[req->n_candidates];

                if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof(c->sa))
                        continue;
                c->label = strdup(address);
                if (!c->label) {
                        freeaddrinfo(res);
                        return -ENOMEM;
                }
                memcpy(&c->sa, ai->ai_addr, ai->ai_addrlen);
                c->sa_len = ai->ai_addrlen;
                req->n_candidates++;
                n++;
        }
        freeaddrinfo(res);
        if (n == 0)
                return strv_extend(&req->unreachable, address);
        return 0;
}

static int request_start(AgentRequest *req, char *const *addresses) {
        int r;

        STRV_FOREACH(a, addresses) {
                r = request_add_address(req, *a);
                if (r == -EINVAL)
                        return request_finish(req, r, "invalid controller address '%s'", *a);
                if (r < 0)
                        return request_finish(req, r, "out of memory");
        }
        /* Fisher–Yates: a crowd of agents does not all start with the first address. */
        for (size_t k = req->n_candidates; k > 1; k--) {
                size_t j = (size_t) random_u64_range(k);
                Candidate t = req->candidates[k - 1];

                req->candidates[k - 1] = req->candidates[j];
                req->candidates[j] = t;
        }
        return request_connect_next(req);
}

/* ---- setting up --------------------------------------------------------------------------------------- */

static int request_new(sd_event *event, RequestKind kind, AgentRequestCallback callback, void *userdata,
                       AgentRequest **ret) {
        AgentRequest *req;
        int r;

        req = calloc(1, sizeof(AgentRequest));
        if (!req)
                return -ENOMEM;
        *req = (AgentRequest) {
                .event = sd_event_ref(event),
                .kind = kind,
                .callback = callback,
                .userdata = userdata,
                .connect_timeout = AGENT_CONNECT_TIMEOUT_DEFAULT,
                .call_timeout = AGENT_CALL_TIMEOUT_DEFAULT,
        };
        /* Created now, enabled by request_finish(): the outcome is always reported, even when memory is
         * short by then. */
        r = sd_event_add_defer(event, &req->defer, on_defer, req);
        if (r >= 0)
                r = sd_event_source_set_enabled(req->defer, SD_EVENT_OFF);
        if (r < 0) {
                agent_request_free(req);
                return r;
        }
        (void) sd_event_source_set_description(req->defer, "agent-enroll-done");
        *ret = req;
        return 0;
}

AgentRequest *agent_request_free(AgentRequest *req) {
        if (!req)
                return NULL;

        /* Cancelled: the outcome no longer matters, and the callback must not run. */
        req->done = true;
        request_close_transport(req);
        req->defer = sd_event_source_disable_unref(req->defer);
        tls_context_unref(req->tls_context);
        for (size_t k = 0; k < req->n_candidates; k++)
                free(req->candidates[k].label);
        strv_free(req->unreachable);
        free(req->pin_mismatch);
        free(req->root_mismatch);
        free(req->domain_mismatch);
        free(req->handshake_error);

        erase_and_free_string(req->token);
        token_free(req->parsed_token);
        free(req->id);
        free(req->version);
        free(req->private_ip);
        free(req->expected_trust_domain);
        trust_bundle_free(req->roots);
        strv_free(req->label_keys);
        strv_free(req->label_values);
        agent_identity_done(&req->base);
        EVP_PKEY_freep(&req->current_key);
        EVP_PKEY_freep(&req->key);
        free(req->csr);
        agent_identity_done(&req->result);
        free(req->reason);
        sd_event_unref(req->event);
        return mfree(req);
}

/* The key the new certificate is for, and its CSR. */
static int request_make_csr(AgentRequest *req, KeyType type, const SpiffeId *id) {
        _cleanup_(X509_REQ_freep) X509_REQ *csr = NULL;
        int r;

        if (!req->key) {
                r = crypto_key_generate(type, &req->key);
                if (r < 0)
                        return r;
        }
        r = crypto_csr_new(req->key, id, &csr);
        if (r < 0)
                return r;
        return crypto_csr_to_der(csr, &req->csr, &req->csr_size);
}

static int labels_split(char **labels, char ***ret_keys, char ***ret_values) {
        _cleanup_strv_free_ char **keys = NULL, **values = NULL;
        int r;

        if (strv_length(labels) > AGENT_LABELS_MAX)
                return -E2BIG;
        STRV_FOREACH(l, labels) {
                const char *eq = strchr(*l, '=');
                char *k;

                if (!eq || eq == *l || eq[1] == '\0' || !string_is_valid_text(*l, AGENT_STRING_MAX))
                        return -EINVAL;
                k = strndup(*l, eq - *l);
                if (!k)
                        return -ENOMEM;
                STRV_FOREACH(prev, keys)
                        if (streq(*prev, k)) {
                                free(k);
                                return -EINVAL;
                        }
                r = strv_consume(&keys, k);
                if (r < 0)
                        return r;
                r = strv_extend(&values, eq + 1);
                if (r < 0)
                        return r;
        }
        *ret_keys = TAKE_PTR(keys);
        *ret_values = TAKE_PTR(values);
        return 0;
}

static int strdup_optional(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* The roots given instead of the token's pin, as a bundle of the expected trust domain or else of the
 * domain the first root names. A text that cannot be used is the user's to fix: reported through the
 * callback with a reason, like a bad token (-ENOMEM is returned). */
static int enroll_parse_roots(AgentRequest *req, const char *pem) {
        static const char end_marker[] = "-----END CERTIFICATE-----";
        _cleanup_(spiffe_id_freep) SpiffeId *td = NULL;
        size_t size = strnlen(pem, TRUST_BUNDLE_PEM_MAX + 1);
        const char *end;
        int r;

        if (size > TRUST_BUNDLE_PEM_MAX)
                return request_finish(req, -E2BIG, "the controller CA is larger than %zu bytes",
                                      TRUST_BUNDLE_PEM_MAX);
        end = strstr(pem, end_marker);
        if (!end)
                return request_finish(req, -EBADMSG, "the controller CA is not a PEM CERTIFICATE");
        if (!req->expected_trust_domain) {
                X509 *first = NULL;

                /* The first block alone (the whole text is checked strictly by trust_bundle_from_pem()). */
                r = crypto_x509_from_pem(pem, end - pem + strlen(end_marker), &first);
                if (r >= 0) {
                        r = svid_get_trust_domain_of_ca(first, &td);
                        crypto_x509_unref(first);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return request_finish(req, r, "the controller CA names no trust domain; "
                                                      "the expected trust domain must be given");
                } else if (r == -ENOMEM)
                        return r;
                else
                        return request_finish(req, -EBADMSG, "the controller CA is not a PEM CERTIFICATE");
        }
        r = trust_bundle_from_pem(td ? td->trust_domain : req->expected_trust_domain, pem, size, &req->roots);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return request_finish(req, r, "the controller CA cannot be used as roots of trust domain '%s': %s",
                                      td ? td->trust_domain : req->expected_trust_domain,
                                      r == -EBADMSG ? "not a sequence of PEM CERTIFICATE blocks" :
                                      r == -EEXIST ? "a root appears twice" :
                                      r == -E2BIG ? "too many roots" :
                                      "not a self-signed CA certificate of that trust domain");
        return 0;
}

int agent_enroll(sd_event *event, const AgentEnrollParams *params, AgentRequestCallback callback,
                 void *userdata, AgentRequest **ret) {
        _cleanup_(agent_request_freep) AgentRequest *req = NULL;
        int r;

        assert(event);
        assert(params);
        assert(callback);

        if (!params->token || !role_is_agent(params->role) || !ztna_id_is_valid(params->id) ||
            params->key_type < 0 || params->key_type >= _KEY_TYPE_MAX)
                return -EINVAL;
        if ((params->version && !string_is_valid_text(params->version, AGENT_STRING_MAX)) ||
            (params->private_ip && !string_is_valid_text(params->private_ip, AGENT_STRING_MAX)) ||
            (params->expected_trust_domain && !spiffe_trust_domain_is_valid(params->expected_trust_domain)))
                return -EINVAL;

        r = request_new(event, REQUEST_ENROLL, callback, userdata, &req);
        if (r < 0)
                return r;
        req->role = params->role;
        req->key_type = params->key_type;
        req->id_is_default = params->id_is_default;
        if (params->connect_timeout > 0)
                req->connect_timeout = params->connect_timeout;
        if (params->call_timeout > 0)
                req->call_timeout = params->call_timeout;
        r = labels_split(params->labels, &req->label_keys, &req->label_values);
        if (r < 0)
                return r == -E2BIG ? -EINVAL : r;
        req->token = strndup(params->token, TOKEN_STRING_MAX + 1);
        if (!req->token ||
            strdup_optional(params->id, &req->id) < 0 ||
            strdup_optional(params->version, &req->version) < 0 ||
            strdup_optional(params->private_ip, &req->private_ip) < 0 ||
            strdup_optional(params->expected_trust_domain, &req->expected_trust_domain) < 0)
                return -ENOMEM;

        /* A bad token is the user's to fix: reported like any other failure, with the parser's reason. */
        r = token_from_string(req->token, &req->parsed_token, &req->token_reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                (void) request_finish(req, r, "%s", req->token_reason ?: "invalid enrollment token");
        else if (params->root_pem && (r = enroll_parse_roots(req, params->root_pem)) < 0) {
                if (r == -ENOMEM)
                        return r;
        } else {
                r = request_make_csr(req, req->key_type, NULL);
                if (r < 0)
                        return r;
                r = tls_context_new(TLS_MODE_CLIENT, &req->tls_context);
                if (r >= 0)
                        r = req->roots ? tls_context_set_trust_bundle(req->tls_context, req->roots)
                                       : tls_context_set_root_pin(req->tls_context, req->parsed_token->ca_pin);
                if (r >= 0)
                        r = tls_context_set_peer_policy(req->tls_context,
                                                        &(TlsPeerPolicy) { .role = SPIFFE_ROLE_CONTROLLER });
                if (r < 0)
                        return r;
                tls_context_set_handshake_timeout(req->tls_context, req->connect_timeout);
                (void) request_start(req, req->parsed_token->addresses);
        }

        if (ret)
                *ret = req;
        else
                req->floating = true;
        TAKE_PTR(req);
        return 0;
}

/* Renew and Reauthenticate: the identity in usable form. */
static int request_setup_identity(sd_event *event, RequestKind kind, const AgentIdentity *identity,
                                  bool new_key, AgentRequestCallback callback, void *userdata,
                                  AgentRequest **ret) {
        _cleanup_(agent_request_freep) AgentRequest *req = NULL;
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *intermediates = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *sid = NULL;
        X509 *certs[IDENTITY_CHAIN_MAX] = {};
        KeyType type;
        int r;

        assert(event);
        assert(identity);
        assert(callback);

        if (!identity->spiffe_id || !identity->trust_domain || identity->key.size == 0 || identity->n_chain == 0 ||
            identity->n_chain > IDENTITY_CHAIN_MAX || identity->n_bundle == 0 ||
            identity->n_bundle > IDENTITY_BUNDLE_MAX || strv_length(identity->controllers) == 0 ||
            strv_length(identity->controllers) > IDENTITY_CONTROLLERS_MAX)
                return -EINVAL;
        r = spiffe_id_from_string_ztna(identity->spiffe_id, &sid, NULL);
        if (r < 0)
                return r;
        if (!role_is_agent(sid->role) || !spiffe_id_member_of(sid, identity->trust_domain))
                return -EINVAL;

        r = request_new(event, kind, callback, userdata, &req);
        if (r < 0)
                return r;
        req->new_key = new_key;
        r = identity_copy(identity, &req->base);
        if (r < 0)
                return r;
        r = crypto_key_from_pkcs8_der(identity->key.data, identity->key.size, &req->current_key);
        if (r < 0)
                return r;
        type = crypto_key_get_type(req->current_key);
        if (type < 0)
                return type;
        if (!new_key) {
                r = crypto_key_from_pkcs8_der(identity->key.data, identity->key.size, &req->key);
                if (r < 0)
                        return r;
        }
        r = request_make_csr(req, type, sid);
        if (r < 0)
                return r;

        r = trust_bundle_new(identity->trust_domain, &bundle);
        if (r < 0)
                return r;
        for (size_t k = 0; k < identity->n_bundle; k++) {
                X509 *root = NULL;

                r = crypto_x509_from_der(identity->bundle[k].data, identity->bundle[k].size, &root);
                if (r < 0)
                        return r;
                r = trust_bundle_add(bundle, root);
                crypto_x509_unref(root);
                if (r < 0)
                        return r;
        }

        r = tls_context_new(TLS_MODE_CLIENT, &req->tls_context);
        if (r >= 0)
                r = tls_context_set_trust_bundle(req->tls_context, bundle);
        if (r >= 0)
                r = tls_context_set_peer_policy(req->tls_context, &(TlsPeerPolicy) { .role = SPIFFE_ROLE_CONTROLLER });
        if (r >= 0 && kind == REQUEST_RENEW) {
                for (size_t k = 0; k < identity->n_chain && r >= 0; k++)
                        r = crypto_x509_from_der(identity->chain[k].data, identity->chain[k].size, &certs[k]);
                if (r >= 0)
                        r = crypto_x509_stack_new(certs + 1, identity->n_chain - 1, &intermediates);
                if (r >= 0)
                        r = tls_context_set_identity(req->tls_context, certs[0], intermediates, req->current_key);
                crypto_x509_array_unref(certs, identity->n_chain);
        }
        if (r < 0)
                return r;
        tls_context_set_handshake_timeout(req->tls_context, req->connect_timeout);

        (void) request_start(req, identity->controllers);

        if (ret)
                *ret = req;
        else
                req->floating = true;
        TAKE_PTR(req);
        return 0;
}

int agent_renew(sd_event *event, const AgentIdentity *identity, bool new_key, AgentRequestCallback callback,
                void *userdata, AgentRequest **ret) {
        return request_setup_identity(event, REQUEST_RENEW, identity, new_key, callback, userdata, ret);
}

int agent_reauthenticate(sd_event *event, const AgentIdentity *identity, bool new_key,
                         AgentRequestCallback callback, void *userdata, AgentRequest **ret) {
        return request_setup_identity(event, REQUEST_REAUTHENTICATE, identity, new_key, callback, userdata, ret);
}

/* ---- blocking ----------------------------------------------------------------------------------------- */

typedef struct SyncResult {
        int error;
        char *reason;
        AgentIdentity identity;
} SyncResult;

static void on_sync_done(AgentRequest *req, int error, const char *reason, AgentIdentity *identity,
                         void *userdata) {
        SyncResult *s = userdata;

        s->error = error;
        if (error < 0)
                s->reason = strdup(reason);
        else {
                s->identity = *identity;
                *identity = (AgentIdentity) {};
        }
        (void) sd_event_exit(req->event, 0);
}

static int sync_run(RequestKind kind, const AgentEnrollParams *params, const AgentIdentity *identity, bool new_key,
                    AgentIdentity *ret, char **ret_reason) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(agent_request_freep) AgentRequest *req = NULL;
        SyncResult s = { .error = -EINPROGRESS };
        int r;

        assert(ret);

        r = sd_event_new(&event);
        if (r < 0)
                return r;
        if (kind == REQUEST_ENROLL)
                r = agent_enroll(event, params, on_sync_done, &s, &req);
        else if (kind == REQUEST_RENEW)
                r = agent_renew(event, identity, new_key, on_sync_done, &s, &req);
        else
                r = agent_reauthenticate(event, identity, new_key, on_sync_done, &s, &req);
        if (r < 0)
                return r;

        /* Bounded: every address has its connect timeout and the call its deadline. */
        r = sd_event_loop(event);
        req = agent_request_free(req);
        if (r < 0) {
                agent_identity_done(&s.identity);
                free(s.reason);
                return r;
        }
        if (s.error < 0) {
                if (ret_reason)
                        *ret_reason = TAKE_PTR(s.reason);
                free(s.reason);
                return s.error;
        }
        *ret = s.identity;
        return 0;
}

int agent_enroll_sync(const AgentEnrollParams *params, AgentIdentity *ret, char **ret_reason) {
        return sync_run(REQUEST_ENROLL, params, NULL, false, ret, ret_reason);
}

int agent_renew_sync(const AgentIdentity *identity, bool new_key, AgentIdentity *ret, char **ret_reason) {
        return sync_run(REQUEST_RENEW, NULL, identity, new_key, ret, ret_reason);
}

int agent_reauthenticate_sync(const AgentIdentity *identity, bool new_key, AgentIdentity *ret,
                              char **ret_reason) {
        return sync_run(REQUEST_REAUTHENTICATE, NULL, identity, new_key, ret, ret_reason);
}
