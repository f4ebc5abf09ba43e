/* SPDX-License-Identifier: Apache-2.0 */

/* The Enrollment service: Enroll (token + CSR), Renew (mTLS) and Reauthenticate (challenge signed with the
 * recorded key). Each handler validates everything it is sent before using it, takes the caller's identity
 * from the token, the verified certificate or the recorded key — never from a request field alone — and
 * audits every outcome. Everything that can fail is prepared before the store commits, so that a consumed
 * token is never left without a certificate because of our own error. */

#include <arpa/inet.h>
#include <assert.h>
#include <string.h>

#include "controller-audit.h"
#include "controller-ca.h"
#include "controller-control.h"
#include "controller-enroll.h"
#include "controller-manager.h"
#include "controller-store.h"
#include "crypto-spiffe.h"
#include "crypto-token.h"
#include "crypto-util.h"
#include "hashmap.h"
#include "log.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "net-proto.h"
#include "net-h2.h"
#include "net-tls.h"
#include "random-util.h"
#include "string-util.h"
#include "strv.h"
#include "time-util.h"
#include "ztna.pb-c.h"

#define METHOD_ENROLL "/ztna.v1.Enrollment/Enroll"
#define METHOD_RENEW "/ztna.v1.Enrollment/Renew"
#define METHOD_REAUTHENTICATE "/ztna.v1.Enrollment/Reauthenticate"

#define REASON_INTERNAL "internal error"
#define REASON_INVALID_TOKEN "invalid token"
#define REASON_NOT_ENROLLED "agent not enrolled"
#define REASON_REVOKED "agent revoked"
#define REASON_SUPERSEDED "certificate superseded by a renewal"
#define REASON_BAD_SIGNATURE "signature does not verify"

/* Actor of audit events for callers that have not proven an identity (yet). */
#define ACTOR_ANONYMOUS "anonymous"

/* signed_data = context (with its NUL) | nonce | u16 BE length | SPIFFE ID | SHA-256 of the CSR's SPKI */
#define REAUTH_CONTEXT_SIZE sizeof(ENROLL_REAUTH_CONTEXT)
#define REAUTH_SIGNED_DATA_MAX (REAUTH_CONTEXT_SIZE + ENROLL_NONCE_SIZE + 2 + SPIFFE_ID_MAX + 32)

/* Challenges outstanding, all Reauthenticate calls together, and per source address (host part of the
 * peer address → count as uintptr_t), so that one address cannot take the whole pool. One sd-event loop:
 * no locking; one Manager per process. */
static size_t n_challenges = 0;
static Hashmap *challenges_by_source = NULL;

/* CA errors about the CSR or id are the agent's to fix; anything else is ours. */
static bool issue_error_is_request(int r) {
        return r == -EBADMSG || r == -EOPNOTSUPP || r == -EKEYREJECTED || r == -EINVAL;
}

/* The certificates of a reply as protobuf fields: the chain borrowed from an IssuedCertificate, the
 * trust bundle owned. */
typedef struct WireCertificates {
        ProtobufCBinaryData chain[CONTROLLER_CA_CHAIN_MAX];
        size_t n_chain;
        uint8_t **bundle;
        size_t *bundle_sizes;
        ProtobufCBinaryData *bundle_data;
        size_t n_bundle;
} WireCertificates;

static void wire_certificates_done(WireCertificates *w) {
        controller_ca_der_array_free(w->bundle, w->bundle_sizes, w->n_bundle);
        free(w->bundle_data);
        *w = (WireCertificates) {};
}

static int wire_certificates_prepare(Manager *m, const IssuedCertificate *issued, WireCertificates *ret) {
        _cleanup_(wire_certificates_done) WireCertificates w = {};
        int r;

        assert(issued->n_chain > 0 && issued->n_chain <= CONTROLLER_CA_CHAIN_MAX);

        for (size_t i = 0; i < issued->n_chain; i++)
                w.chain[i] = (ProtobufCBinaryData) { .data = issued->chain[i],
                                                     .len = issued->chain_size[i] };
        w.n_chain = issued->n_chain;

        r = controller_ca_get_bundle_der(m->ca, &w.bundle, &w.bundle_sizes, &w.n_bundle);
        if (r < 0)
                return r;
        if (w.n_bundle == 0)
                return -ENOENT;
        w.bundle_data = calloc(w.n_bundle, sizeof(ProtobufCBinaryData));
        if (!w.bundle_data)
                return -ENOMEM;
        for (size_t i = 0; i < w.n_bundle; i++)
                w.bundle_data[i] = (ProtobufCBinaryData) { .data = w.bundle[i], .len = w.bundle_sizes[i] };

        *ret = w;
        w = (WireCertificates) {};
        return 0;
}

static void audit(Manager *m, GrpcCall *call, AuditEvent e, AuditRecord rec) {
        rec.peer = manager_call_peer_address(call);
        (void) audit_log(m->store, e, &rec);
}

/* ---- Enroll ----------------------------------------------------------------------------------------- */

static int text_field_check(const char *s, const char *too_long, const char *control,
                            const char **ret_reason) {
        if (strnlen(s, STORE_STRING_MAX + 1) > STORE_STRING_MAX) {
                *ret_reason = too_long;
                return -E2BIG;
        }
        /* Listings print these: no terminal escapes. */
        if (string_has_cc(s, NULL)) {
                *ret_reason = control;
                return -EINVAL;
        }
        return 0;
}

/* The request's own fields (not the token): id, version, private IP, labels. Returns the labels as a
 * "key=value" strv. */
static int enroll_request_check(const Ztna__V1__EnrollRequest *req, char ***ret_labels,
                                const char **ret_reason) {
        _cleanup_strv_free_ char **labels = NULL;
        int r;

        if (!ztna_id_is_valid(req->id)) {
                *ret_reason = "invalid agent id (1 to 128 of A-Z a-z 0-9 . _ -)";
                return -EINVAL;
        }
        r = text_field_check(req->version, "version is too long", "version contains control characters",
                             ret_reason);
        if (r < 0)
                return r;
        if (!isempty(req->private_ip)) {
                uint8_t buf[sizeof(struct in6_addr)];

                if (strnlen(req->private_ip, INET6_ADDRSTRLEN) >= INET6_ADDRSTRLEN ||
                    (inet_pton(AF_INET, req->private_ip, buf) != 1 &&
                     inet_pton(AF_INET6, req->private_ip, buf) != 1)) {
                        *ret_reason = "private_ip is not an IP address";
                        return -EINVAL;
                }
        }

        if (req->n_labels > STORE_LABELS_MAX) {
                *ret_reason = "too many labels";
                return -E2BIG;
        }
        for (size_t i = 0; i < req->n_labels; i++) {
                const Ztna__V1__EnrollRequest__LabelsEntry *l = req->labels[i];
                size_t nk, nv;
                char *kv;

                if (isempty(l->key) || isempty(l->value)) {
                        *ret_reason = "label key and value must not be empty";
                        return -EINVAL;
                }
                if (strchr(l->key, '=')) {
                        *ret_reason = "label key contains '='";
                        return -EINVAL;
                }
                nk = strnlen(l->key, STORE_STRING_MAX + 1);
                nv = strnlen(l->value, STORE_STRING_MAX + 1);
                if (nk + 1 + nv > STORE_STRING_MAX) {
                        *ret_reason = "label is too long";
                        return -E2BIG;
                }
                if (string_has_cc(l->key, NULL) || string_has_cc(l->value, NULL)) {
                        *ret_reason = "label contains control characters";
                        return -EINVAL;
                }
                /* A map key sent twice on the wire arrives as two entries. */
                for (size_t j = 0; j < i; j++)
                        if (streq(req->labels[j]->key, l->key)) {
                                *ret_reason = "duplicate label key";
                                return -EINVAL;
                        }

                kv = strjoin(l->key, "=", l->value, NULL);
                if (!kv)
                        return -ENOMEM;
                r = strv_consume(&labels, kv);
                if (r < 0)
                        return r;
        }

        *ret_labels = TAKE_PTR(labels);
        return 0;
}

/* store_enroll() refusals that are about the token (the rest are about the request or the agent). */
static bool enroll_error_is_token(int r) {
        return r == -ENOENT || r == -EKEYEXPIRED || r == -EKEYREVOKED || r == -EALREADY || r == -EPERM;
}

/* Our own failure (already logged): the agent learns only that it was not its fault. */
static int enroll_fail_internal(Manager *m, GrpcCall *call, const SpiffeId *spiffe, const char *token_id) {
        audit(m, call, AUDIT_ENROLLMENT_REFUSED,
              (AuditRecord) { .actor = ACTOR_ANONYMOUS, .subject = spiffe ? spiffe->uri : NULL,
                              .role = spiffe ? spiffe->role : _SPIFFE_ROLE_INVALID, .token_id = token_id,
                              .reason = REASON_INTERNAL });
        return grpc_call_finish(call, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
}

static int enroll_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        const Ztna__V1__EnrollRequest *req = (const Ztna__V1__EnrollRequest *) owned;
        _cleanup_(issued_certificate_done) IssuedCertificate issued = {};
        _cleanup_(wire_certificates_done) WireCertificates wire = {};
        _cleanup_(store_token_freep) StoreToken *stored = NULL, *consumed = NULL;
        _cleanup_(token_freep) EnrollmentToken *token = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *spiffe = NULL;
        _cleanup_free_ char *token_id = NULL;
        _cleanup_strv_free_ char **labels = NULL;
        const char *reason = NULL, *token_reason = NULL;
        uint8_t hash[TOKEN_HASH_SIZE];
        Manager *m = userdata;
        const StoreToken *t;
        StoreAgent agent;
        SpiffeRole role;
        GrpcStatus status;
        int r, r_token;

        assert(m);

        /* Parsed first only so that refusals can name the token by its public id. */
        r_token = token_from_string(req->token, &token, &token_reason);
        if (r_token >= 0) {
                token_id = token_id_to_string(token->id);
                if (!token_id)
                        return grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        }

        r = enroll_request_check(req, &labels, &reason);
        if (r == -ENOMEM)
                return grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        if (r < 0) {
                audit(m, call, AUDIT_ENROLLMENT_REFUSED,
                      (AuditRecord) { .actor = ACTOR_ANONYMOUS, .role = _SPIFFE_ROLE_INVALID,
                                      .token_id = token_id, .reason = reason });
                return grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, reason);
        }

        if (r_token < 0) {
                /* The parser's reason is secret-free; it helps whoever reads the audit trail. */
                audit(m, call, AUDIT_TOKEN_REFUSED,
                      (AuditRecord) { .actor = ACTOR_ANONYMOUS, .role = _SPIFFE_ROLE_INVALID,
                                      .reason = token_reason ?: REASON_INVALID_TOKEN });
                return grpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, REASON_INVALID_TOKEN);
        }

        /* The token row tells the role. Checking the secret here already spares the CA work for
         * guessed secrets; store_enroll() checks it again, atomically with everything else. */
        r = store_token_get(m->store, token->id, &stored);
        if (r < 0 && r != -ENOENT) {
                log_error_errno(r, "Failed to look up enrollment token %s: %m", token_id);
                return enroll_fail_internal(m, call, spiffe, token_id);
        }
        if (r < 0 || !token_secret_verify(token->secret, stored->secret_hash)) {
                audit(m, call, AUDIT_TOKEN_REFUSED,
                      (AuditRecord) { .actor = ACTOR_ANONYMOUS, .role = _SPIFFE_ROLE_INVALID,
                                      .token_id = token_id, .reason = REASON_INVALID_TOKEN });
                return grpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, REASON_INVALID_TOKEN);
        }
        role = stored->role;
        if (!manager_role_is_agent(role)) {
                log_error("Enrollment token %s has an invalid role.", token_id);
                return enroll_fail_internal(m, call, spiffe, token_id);
        }

        /* Refusals the store would make anyway, made before the CA signs anything for a spent token. The
         * store checks again inside the transaction that consumes it. */
        usec_t n = now(CLOCK_REALTIME);
        const char *refusal = NULL;
        if (stored->revoked_at != 0)
                refusal = "token revoked";
        else if (n >= stored->expires_at)
                refusal = "token expired";
        else if (stored->used_at != 0)
                refusal = "token already used";
        else if (req->role != ZTNA__V1__ROLE__ROLE_UNSPECIFIED && req->role != proto_role_from_spiffe(role))
                refusal = "token is for another role";
        if (refusal) {
                audit(m, call, AUDIT_TOKEN_REFUSED,
                      (AuditRecord) { .actor = ACTOR_ANONYMOUS, .role = role, .token_id = token_id,
                                      .reason = refusal });
                return grpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, refusal);
        }

        /* An id the agent only guessed (its host name) gives way to the one the token is bound to. */
        char *id = req->id_is_default && stored->bound_id ? stored->bound_id : req->id;

        r = spiffe_id_new_ztna(controller_ca_get_trust_domain(m->ca), role, id, &spiffe);
        if (r < 0) {
                log_error_errno(r, "Failed to build the SPIFFE ID for agent '%s': %m", id);
                return enroll_fail_internal(m, call, spiffe, token_id);
        }

        r = controller_ca_issue(m->ca, role, id, req->csr.data, req->csr.len, now(CLOCK_REALTIME),
                                &issued, &reason);
        if (r < 0 && issue_error_is_request(r)) {
                audit(m, call, AUDIT_ENROLLMENT_REFUSED,
                      (AuditRecord) { .actor = ACTOR_ANONYMOUS, .subject = spiffe->uri, .role = role,
                                      .token_id = token_id, .reason = reason });
                return grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, reason);
        }
        if (r < 0) {
                log_error_errno(r, "Failed to issue a certificate for '%s': %m", spiffe->uri);
                return enroll_fail_internal(m, call, spiffe, token_id);
        }

        r = wire_certificates_prepare(m, &issued, &wire);
        if (r < 0) {
                log_error_errno(r, "Failed to prepare the trust bundle: %m");
                return enroll_fail_internal(m, call, spiffe, token_id);
        }

        agent = (StoreAgent) {
                .spiffe_id = spiffe->uri,
                .role = role,
                .id = id,
                .public_key = issued.public_key,
                .public_key_size = issued.public_key_size,
                .version = isempty(req->version) ? NULL : req->version,
                .private_ip = isempty(req->private_ip) ? NULL : req->private_ip,
                .labels = labels,
                .cert_serial = issued.serial,
                .cert_not_after = issued.not_after,
        };
        r = token_secret_hash(token->secret, hash);
        if (r >= 0)
                r = store_enroll(m->store, token->id, hash, &agent, now(CLOCK_REALTIME), &consumed, &reason);
        explicit_bzero_safe(hash, sizeof(hash));
        if (r < 0) {
                if (enroll_error_is_token(r)) {
                        status = GRPC_STATUS_PERMISSION_DENIED;
                        reason = reason ?: REASON_INVALID_TOKEN;
                } else if (r == -EEXIST) {
                        status = GRPC_STATUS_PERMISSION_DENIED;
                        reason = reason ?: "an agent with this id is already enrolled";
                } else if (r == -EINVAL || r == -E2BIG) {
                        status = GRPC_STATUS_INVALID_ARGUMENT;
                        reason = reason ?: "invalid enrollment request";
                } else {
                        log_error_errno(r, "Failed to record the enrollment of '%s': %m", spiffe->uri);
                        return enroll_fail_internal(m, call, spiffe, token_id);
                }
                audit(m, call, enroll_error_is_token(r) ? AUDIT_TOKEN_REFUSED : AUDIT_ENROLLMENT_REFUSED,
                      (AuditRecord) { .actor = ACTOR_ANONYMOUS, .subject = spiffe->uri, .role = role,
                                      .token_id = token_id, .reason = reason });
                return grpc_call_finish(call, status, reason);
        }
        t = consumed ?: stored;

        audit(m, call, AUDIT_TOKEN_CONSUMED,
              (AuditRecord) { .actor = spiffe->uri, .subject = spiffe->uri, .role = role,
                              .token_id = token_id });
        m->counters.enrollments++;
        audit(m, call, AUDIT_ENROLLED,
              (AuditRecord) { .actor = spiffe->uri, .subject = spiffe->uri, .role = role,
                              .token_id = token_id, .serial = issued.serial, .not_after = issued.not_after,
                              .reason = r > 0 ? "replaced a revoked agent" : NULL });
        /* A new tunneler with groups: connectors learn its memberships. */
        if (role == SPIFFE_ROLE_TUNNELER && t->groups)
                manager_policy_changed(m);

        Ztna__V1__AgentConfig config = ZTNA__V1__AGENT_CONFIG__INIT;
        config.role = proto_role_from_spiffe(role);
        config.id = id;
        config.spiffe_id = spiffe->uri;
        config.remote_network = t->remote_network ?: (char *) "";
        config.n_groups = strv_length(t->groups);
        config.groups = t->groups;
        config.heartbeat_interval_seconds = (uint32_t) (CONTROL_HEARTBEAT_INTERVAL / USEC_PER_SEC);
        config.certificate_lifetime_seconds = manager_leaf_lifetime(m, role) / USEC_PER_SEC;

        Ztna__V1__EnrollResponse resp = ZTNA__V1__ENROLL_RESPONSE__INIT;
        resp.n_certificate_chain = wire.n_chain;
        resp.certificate_chain = wire.chain;
        resp.n_trust_bundle = wire.n_bundle;
        resp.trust_bundle = wire.bundle_data;
        resp.config = &config;
        resp.n_controller_addresses = strv_length(m->config.advertised_addresses.addresses);
        resp.controller_addresses = m->config.advertised_addresses.addresses;

        r = grpc_call_send(call, &resp.base);
        if (r < 0) {
                /* Enrolled but not told: the agent still holds its key and can re-authenticate. */
                log_error_errno(r, "Failed to send the enrollment response to '%s': %m", spiffe->uri);
                return grpc_call_finish_errno(call, r, "failed to send the response");
        }
        return grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- Renew ------------------------------------------------------------------------------------------ */

static int renew_refuse(Manager *m, GrpcCall *call, const SpiffeId *peer, GrpcStatus status,
                        const char *reason) {
        audit(m, call, AUDIT_RENEWAL_REFUSED,
              (AuditRecord) { .actor = peer ? peer->uri : ACTOR_ANONYMOUS,
                              .subject = peer ? peer->uri : NULL,
                              .role = peer && manager_role_is_agent(peer->role) ? peer->role : _SPIFFE_ROLE_INVALID,
                              .reason = reason });
        return grpc_call_finish(call, status, reason);
}

static int renew_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        const Ztna__V1__RenewRequest *req = (const Ztna__V1__RenewRequest *) owned;
        _cleanup_(issued_certificate_done) IssuedCertificate issued = {};
        _cleanup_(wire_certificates_done) WireCertificates wire = {};
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        const SpiffeId *peer = grpc_call_get_peer(call);
        const char *reason = NULL;
        Manager *m = userdata;
        int r;

        assert(m);

        /* The gRPC layer lets no certificate-less caller in here; refuse all the same if it ever did. */
        if (!peer)
                return renew_refuse(m, call, NULL, GRPC_STATUS_UNAUTHENTICATED,
                                    "a client certificate is required");
        if (!manager_role_is_agent(peer->role) || !spiffe_id_member_of(peer, controller_ca_get_trust_domain(m->ca)))
                return renew_refuse(m, call, peer, GRPC_STATUS_PERMISSION_DENIED,
                                    "only connectors and tunnelers of this trust domain renew");

        r = store_agent_get(m->store, peer->uri, &agent);
        if (r == -ENOENT)
                return renew_refuse(m, call, peer, GRPC_STATUS_PERMISSION_DENIED, REASON_NOT_ENROLLED);
        if (r < 0) {
                log_error_errno(r, "Failed to look up agent '%s': %m", peer->uri);
                return renew_refuse(m, call, peer, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        if (agent->revoked_at != 0)
                return renew_refuse(m, call, peer, GRPC_STATUS_PERMISSION_DENIED, REASON_REVOKED);

        /* A certificate for a key that a renewal has since replaced must not renew: the old key may be
         * the reason the agent moved on. */
        r = manager_peer_has_recorded_key(call, agent);
        if (r < 0) {
                log_error_errno(r, "Failed to read the public key of '%s': %m", peer->uri);
                return renew_refuse(m, call, peer, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        if (r == 0)
                return renew_refuse(m, call, peer, GRPC_STATUS_PERMISSION_DENIED, REASON_SUPERSEDED);

        r = controller_ca_issue(m->ca, peer->role, peer->name, req->csr.data, req->csr.len,
                                now(CLOCK_REALTIME), &issued, &reason);
        if (r < 0 && issue_error_is_request(r))
                return renew_refuse(m, call, peer, GRPC_STATUS_INVALID_ARGUMENT, reason);
        if (r < 0) {
                log_error_errno(r, "Failed to issue a certificate for '%s': %m", peer->uri);
                return renew_refuse(m, call, peer, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        r = wire_certificates_prepare(m, &issued, &wire);
        if (r < 0) {
                log_error_errno(r, "Failed to prepare the trust bundle: %m");
                return renew_refuse(m, call, peer, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }

        r = store_agent_update_certificate(m->store, peer->uri, issued.public_key, issued.public_key_size,
                                           issued.serial, issued.not_after);
        if (r == -EKEYREVOKED)
                return renew_refuse(m, call, peer, GRPC_STATUS_PERMISSION_DENIED, REASON_REVOKED);
        if (r == -ENOENT)
                return renew_refuse(m, call, peer, GRPC_STATUS_PERMISSION_DENIED, REASON_NOT_ENROLLED);
        if (r < 0) {
                log_error_errno(r, "Failed to record the renewal of '%s': %m", peer->uri);
                return renew_refuse(m, call, peer, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }

        m->counters.renewals++;
        audit(m, call, AUDIT_RENEWED,
              (AuditRecord) { .actor = peer->uri, .subject = peer->uri, .role = peer->role,
                              .serial = issued.serial, .not_after = issued.not_after,
                              .reason = agent->public_key_size != issued.public_key_size ||
                                                memcmp(agent->public_key, issued.public_key,
                                                       issued.public_key_size) != 0
                                        ? "new key"
                                        : NULL });

        Ztna__V1__RenewResponse resp = ZTNA__V1__RENEW_RESPONSE__INIT;
        resp.n_certificate_chain = wire.n_chain;
        resp.certificate_chain = wire.chain;
        resp.n_trust_bundle = wire.n_bundle;
        resp.trust_bundle = wire.bundle_data;

        r = grpc_call_send(call, &resp.base);
        if (r < 0) {
                log_error_errno(r, "Failed to send the renewal response to '%s': %m", peer->uri);
                return grpc_call_finish_errno(call, r, "failed to send the response");
        }
        return grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- Reauthenticate --------------------------------------------------------------------------------- */

typedef enum ReauthStep {
        REAUTH_EXPECT_BEGIN,
        REAUTH_EXPECT_PROOF,
        REAUTH_DONE,
} ReauthStep;

/* Per-call state, the call's userdata, freed in on_done. */
typedef struct Reauth {
        Manager *manager;
        GrpcCall *call;
        ReauthStep step;
        SpiffeId *spiffe_id;            /* claimed at begin; proven only by the signature */
        uint8_t *csr;
        size_t csr_size;
        uint8_t *signed_data;
        size_t signed_data_size;
        sd_event_source *timeout_source;
        bool holds_challenge;           /* counted in n_challenges */
        char *source;                   /* counted in challenges_by_source while holding a challenge */
} Reauth;

static void reauth_release_challenge(Reauth *ra) {
        ra->timeout_source = sd_event_source_disable_unref(ra->timeout_source);
        if (ra->holds_challenge) {
                assert(n_challenges > 0);
                n_challenges--;
                ra->holds_challenge = false;
        }
        source_counter_release(&challenges_by_source, TAKE_PTR(ra->source));
}

/* Takes one of the source address's challenge slots. -EBUSY when it holds ENROLL_CHALLENGES_PER_SOURCE_MAX. */
static int reauth_hold_source(Reauth *ra) {
        const char *address = manager_call_peer_address(ra->call);

        if (!address)
                return 0;
        return source_counter_hold(&challenges_by_source, address, ENROLL_CHALLENGES_PER_SOURCE_MAX, &ra->source);
}

static Reauth *reauth_free(Reauth *ra) {
        if (!ra)
                return NULL;
        reauth_release_challenge(ra);
        spiffe_id_free(ra->spiffe_id);
        free(ra->csr);
        free(ra->signed_data);
        return mfree(ra);
}

/* Ends the call with a refusal (audited); the challenge, if any, is spent. */
static int reauth_refuse(Reauth *ra, GrpcStatus status, const char *reason) {
        const SpiffeId *id = ra->spiffe_id;

        reauth_release_challenge(ra);
        ra->step = REAUTH_DONE;
        audit(ra->manager, ra->call, AUDIT_REAUTHENTICATION_REFUSED,
              (AuditRecord) { .actor = ACTOR_ANONYMOUS, .subject = id ? id->uri : NULL,
                              .role = id ? id->role : _SPIFFE_ROLE_INVALID, .reason = reason });
        return grpc_call_finish(ra->call, status, reason);
}

static int reauth_on_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Reauth *ra = userdata;

        (void) reauth_refuse(ra, GRPC_STATUS_DEADLINE_EXCEEDED, "challenge not answered in time");
        return 0;
}

/* The agent record for a claimed identity, or a refusal. Returns 1 with *ret set, 0 when refused. */
static int reauth_get_agent(Reauth *ra, StoreAgent **ret) {
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        int r;

        r = store_agent_get(ra->manager->store, ra->spiffe_id->uri, &agent);
        if (r == -ENOENT)
                return reauth_refuse(ra, GRPC_STATUS_PERMISSION_DENIED, REASON_NOT_ENROLLED);
        if (r < 0) {
                log_error_errno(r, "Failed to look up agent '%s': %m", ra->spiffe_id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        if (agent->revoked_at != 0)
                return reauth_refuse(ra, GRPC_STATUS_PERMISSION_DENIED, REASON_REVOKED);
        if (agent->public_key_size == 0) {
                log_error("Agent '%s' has no recorded public key.", ra->spiffe_id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        *ret = TAKE_PTR(agent);
        return 1;
}

static int reauth_build_signed_data(Reauth *ra, const uint8_t nonce[static ENROLL_NONCE_SIZE],
                                    const uint8_t spki_hash[static 32]) {
        const char *uri = ra->spiffe_id->uri;
        size_t n = strlen(uri), size;
        uint8_t *p, *d;

        if (n > SPIFFE_ID_MAX)
                return -EINVAL;
        size = REAUTH_CONTEXT_SIZE + ENROLL_NONCE_SIZE + 2 + n + 32;
        assert(size <= REAUTH_SIGNED_DATA_MAX);

        d = malloc(size);
        if (!d)
                return -ENOMEM;
        p = d;
        memcpy(p, ENROLL_REAUTH_CONTEXT, REAUTH_CONTEXT_SIZE); /* with its NUL */
        p += REAUTH_CONTEXT_SIZE;
        memcpy(p, nonce, ENROLL_NONCE_SIZE);
        p += ENROLL_NONCE_SIZE;
        *p++ = (uint8_t) (n >> 8);
        *p++ = (uint8_t) (n & 0xff);
        memcpy(p, uri, n);
        p += n;
        memcpy(p, spki_hash, 32);

        free(ra->signed_data);
        ra->signed_data = d;
        ra->signed_data_size = size;
        return 0;
}

static int reauth_begin(Reauth *ra, const Ztna__V1__ReauthBegin *begin) {
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        _cleanup_free_ uint8_t *spki = NULL;
        uint8_t nonce[ENROLL_NONCE_SIZE], spki_hash[32];
        const char *reason = NULL;
        size_t spki_size = 0;
        sd_event *event;
        int r;

        /* Shed load before any database or CA work. */
        if (n_challenges >= ENROLL_CHALLENGES_MAX)
                return reauth_refuse(ra, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "too many re-authentications in progress, try again later");
        r = reauth_hold_source(ra);
        if (r == -EBUSY)
                return reauth_refuse(ra, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "too many re-authentications in progress from this address, try again later");
        if (r < 0)
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);

        r = spiffe_id_from_string_ztna(begin->spiffe_id, &ra->spiffe_id, &reason);
        if (r < 0)
                return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT, reason ?: "invalid SPIFFE ID");
        if (!spiffe_id_member_of(ra->spiffe_id, controller_ca_get_trust_domain(ra->manager->ca)))
                return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT, "SPIFFE ID of another trust domain");
        if (!manager_role_is_agent(ra->spiffe_id->role))
                return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT,
                                     "only connectors and tunnelers re-authenticate");

        r = reauth_get_agent(ra, &agent);
        if (r <= 0)
                return r;

        r = controller_ca_csr_public_key(begin->csr.data, begin->csr.len, &spki, &spki_size, &reason);
        if (r < 0 && issue_error_is_request(r))
                return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT, reason);
        if (r < 0) {
                log_error_errno(r, "Failed to read the CSR of '%s': %m", ra->spiffe_id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }

        /* Kept for the proof: the certificate is issued only once the signature verified. */
        ra->csr = malloc(begin->csr.len);
        if (ra->csr)
                memcpy(ra->csr, begin->csr.data, begin->csr.len);
        r = ra->csr ? crypto_sha256(spki, spki_size, spki_hash) : -ENOMEM;
        if (r >= 0)
                r = random_bytes(nonce, sizeof(nonce));
        if (r >= 0)
                r = reauth_build_signed_data(ra, nonce, spki_hash);
        if (r < 0) {
                log_error_errno(r, "Failed to make a challenge for '%s': %m", ra->spiffe_id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        ra->csr_size = begin->csr.len;

        event = h2_session_get_event(grpc_call_get_session(ra->call));
        r = sd_event_add_time_relative(event, &ra->timeout_source, CLOCK_MONOTONIC, ENROLL_CHALLENGE_TIMEOUT,
                                       USEC_PER_SEC, reauth_on_timeout, ra);
        if (r < 0) {
                log_error_errno(r, "Failed to arm the challenge timer: %m");
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        (void) sd_event_source_set_description(ra->timeout_source, "enroll-reauth-challenge");
        ra->holds_challenge = true;
        n_challenges++;

        Ztna__V1__ReauthChallenge challenge = ZTNA__V1__REAUTH_CHALLENGE__INIT;
        challenge.nonce = (ProtobufCBinaryData) { .data = nonce, .len = sizeof(nonce) };
        challenge.signed_data = (ProtobufCBinaryData) { .data = ra->signed_data,
                                                        .len = ra->signed_data_size };
        Ztna__V1__ReauthResponse resp = ZTNA__V1__REAUTH_RESPONSE__INIT;
        resp.step_case = ZTNA__V1__REAUTH_RESPONSE__STEP_CHALLENGE;
        resp.challenge = &challenge;

        r = grpc_call_send(ra->call, &resp.base);
        if (r < 0) {
                log_debug_errno(r, "Failed to send a challenge to '%s': %m", ra->spiffe_id->uri);
                return reauth_refuse(ra, grpc_status_from_errno(r), "failed to send the challenge");
        }
        ra->step = REAUTH_EXPECT_PROOF;
        return 0;
}

static int reauth_proof(Reauth *ra, const Ztna__V1__ReauthProof *proof) {
        _cleanup_(issued_certificate_done) IssuedCertificate issued = {};
        _cleanup_(wire_certificates_done) WireCertificates wire = {};
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        const SpiffeId *id = ra->spiffe_id;
        Manager *m = ra->manager;
        const char *reason = NULL;
        int r;

        /* Single use: whatever happens next, this challenge is spent. */
        reauth_release_challenge(ra);

        /* Read again: the agent may have been revoked, or renewed to another key, since the challenge. */
        r = reauth_get_agent(ra, &agent);
        if (r <= 0)
                return r;

        r = controller_ca_verify_signature(agent->public_key, agent->public_key_size,
                                           ra->signed_data, ra->signed_data_size,
                                           proof->signature.data, proof->signature.len);
        if (r == -EBADMSG)
                return reauth_refuse(ra, GRPC_STATUS_PERMISSION_DENIED, REASON_BAD_SIGNATURE);
        if (r < 0) {
                log_error_errno(r, "Failed to verify the signature of '%s' with its recorded key: %m",
                                id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }

        r = controller_ca_issue(m->ca, id->role, id->name, ra->csr, ra->csr_size, now(CLOCK_REALTIME),
                                &issued, &reason);
        if (r < 0 && issue_error_is_request(r))
                return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT, reason);
        if (r < 0) {
                log_error_errno(r, "Failed to issue a certificate for '%s': %m", id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }
        r = wire_certificates_prepare(m, &issued, &wire);
        if (r < 0) {
                log_error_errno(r, "Failed to prepare the trust bundle: %m");
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }

        r = store_agent_update_certificate(m->store, id->uri, issued.public_key, issued.public_key_size,
                                           issued.serial, issued.not_after);
        if (r == -EKEYREVOKED)
                return reauth_refuse(ra, GRPC_STATUS_PERMISSION_DENIED, REASON_REVOKED);
        if (r == -ENOENT)
                return reauth_refuse(ra, GRPC_STATUS_PERMISSION_DENIED, REASON_NOT_ENROLLED);
        if (r < 0) {
                log_error_errno(r, "Failed to record the re-authentication of '%s': %m", id->uri);
                return reauth_refuse(ra, GRPC_STATUS_INTERNAL, REASON_INTERNAL);
        }

        ra->step = REAUTH_DONE;
        m->counters.renewals++;
        audit(m, ra->call, AUDIT_REAUTHENTICATED,
              (AuditRecord) { .actor = id->uri, .subject = id->uri, .role = id->role,
                              .serial = issued.serial, .not_after = issued.not_after });

        Ztna__V1__RenewResponse issued_msg = ZTNA__V1__RENEW_RESPONSE__INIT;
        issued_msg.n_certificate_chain = wire.n_chain;
        issued_msg.certificate_chain = wire.chain;
        issued_msg.n_trust_bundle = wire.n_bundle;
        issued_msg.trust_bundle = wire.bundle_data;
        Ztna__V1__ReauthResponse resp = ZTNA__V1__REAUTH_RESPONSE__INIT;
        resp.step_case = ZTNA__V1__REAUTH_RESPONSE__STEP_ISSUED;
        resp.issued = &issued_msg;

        r = grpc_call_send(ra->call, &resp.base);
        if (r < 0) {
                log_error_errno(r, "Failed to send the re-authentication response to '%s': %m", id->uri);
                return grpc_call_finish_errno(ra->call, r, "failed to send the response");
        }
        return grpc_call_finish(ra->call, GRPC_STATUS_OK, NULL);
}

static int reauth_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        const Ztna__V1__ReauthRequest *req = (const Ztna__V1__ReauthRequest *) owned;
        Reauth *ra = grpc_call_get_userdata(call);
        Manager *m = userdata;

        assert(m);

        if (!ra) {
                ra = calloc(1, sizeof(Reauth));
                if (!ra)
                        return grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                *ra = (Reauth) {
                        .manager = m,
                        .call = call,
                        .step = REAUTH_EXPECT_BEGIN,
                };
                grpc_call_set_userdata(call, ra);
        }

        switch (ra->step) {
        case REAUTH_EXPECT_BEGIN:
                if (req->step_case != ZTNA__V1__REAUTH_REQUEST__STEP_BEGIN)
                        return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT,
                                             "expected ReauthRequest.begin");
                return reauth_begin(ra, req->begin);
        case REAUTH_EXPECT_PROOF:
                if (req->step_case != ZTNA__V1__REAUTH_REQUEST__STEP_PROOF)
                        return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT,
                                             "expected ReauthRequest.proof");
                return reauth_proof(ra, req->proof);
        case REAUTH_DONE:
        default:
                return reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT, "unexpected message after the proof");
        }
}

static void reauth_on_half_close(GrpcCall *call, void *userdata) {
        Reauth *ra = grpc_call_get_userdata(call);

        /* The client may half-close after its proof; before it, nothing can complete any more. */
        if (ra && ra->step == REAUTH_DONE)
                return;
        if (!ra) {
                (void) grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "missing ReauthRequest.begin");
                return;
        }
        (void) reauth_refuse(ra, GRPC_STATUS_INVALID_ARGUMENT, "stream ended before the proof");
}

static void reauth_on_done(GrpcCall *call, void *userdata) {
        reauth_free(grpc_call_get_userdata(call));
        grpc_call_set_userdata(call, NULL);
}

const GrpcMethod controller_enroll_methods[] = {
        {
                .path = METHOD_ENROLL,
                .input = &ztna__v1__enroll_request__descriptor,
                .flags = GRPC_METHOD_UNAUTHENTICATED,
                .max_message_size = ENROLL_MESSAGE_MAX,
                .on_message = enroll_on_message,
        },
        {
                .path = METHOD_RENEW,
                .input = &ztna__v1__renew_request__descriptor,
                .max_message_size = ENROLL_MESSAGE_MAX,
                .on_message = renew_on_message,
        },
        {
                .path = METHOD_REAUTHENTICATE,
                .input = &ztna__v1__reauth_request__descriptor,
                .flags = GRPC_METHOD_UNAUTHENTICATED | GRPC_METHOD_CLIENT_STREAMING,
                .max_message_size = ENROLL_MESSAGE_MAX,
                .on_message = reauth_on_message,
                .on_half_close = reauth_on_half_close,
                .on_done = reauth_on_done,
        },
};

const size_t controller_enroll_n_methods = ELEMENTSOF(controller_enroll_methods);
