/* SPDX-License-Identifier: Apache-2.0 */

/* The enrollment client against the real controller: each case runs its own `ztna-controller`
 * (tests/lib/controller-fixture.h), puts tokens straight into its store while it is stopped, and stops it
 * with SIGTERM expecting exit status 0. */

#include <signal.h>
#include <unistd.h>

#include "agent-enroll.h"
#include "certgen.h"
#include "controller-enroll.h"
#include "controller-fixture.h"
#include "controller-store.h"
#include "crypto-bundle.h"
#include "crypto-key.h"
#include "crypto-svid.h"
#include "crypto-token.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "strv.h"
#include "tests.h"

#define TRUST_DOMAIN CONTROLLER_FIXTURE_TRUST_DOMAIN

static int enroll_full(const char *token, SpiffeRole role, const char *id, const char *expected_trust_domain,
                       const char *root_pem, AgentIdentity *ret, char **ret_reason) {
        return agent_enroll_sync(&(AgentEnrollParams) {
                                         .token = token,
                                         .role = role,
                                         .id = id,
                                         .version = "1.2.3",
                                         .private_ip = "10.1.2.3",
                                         .labels = (char *[]) { (char *) "site=lab", (char *) "rack=7", NULL },
                                         .key_type = KEY_TYPE_ECDSA_P256,
                                         .expected_trust_domain = expected_trust_domain,
                                         .root_pem = root_pem,
                                 },
                                 ret, ret_reason);
}

static int enroll(const char *token, SpiffeRole role, const char *id, AgentIdentity *ret, char **ret_reason) {
        return enroll_full(token, role, id, NULL, NULL, ret, ret_reason);
}

/* The identity as a relying party sees it: the chain verifies against the bundle it came with, certifies
 * the key it holds, and names spiffe_id. */
static void assert_identity_valid(const AgentIdentity *i, const char *spiffe_id) {
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *intermediates = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_free_ uint8_t *a = NULL, *b = NULL;
        _cleanup_free_ char *why = NULL;
        X509 *certs[IDENTITY_CHAIN_MAX] = {};
        size_t na = 0, nb = 0;

        ASSERT_STREQ(i->spiffe_id, spiffe_id);
        ASSERT_STREQ(i->trust_domain, TRUST_DOMAIN);
        ASSERT_GE(i->n_chain, 2);
        ASSERT_EQ(i->n_bundle, 1);
        ASSERT_OK(trust_bundle_new(TRUST_DOMAIN, &bundle));
        for (size_t k = 0; k < i->n_bundle; k++) {
                X509 *root = NULL;

                ASSERT_OK(crypto_x509_from_der(i->bundle[k].data, i->bundle[k].size, &root));
                ASSERT_OK(trust_bundle_add(bundle, root));
                crypto_x509_unref(root);
        }
        for (size_t k = 0; k < i->n_chain; k++)
                ASSERT_OK(crypto_x509_from_der(i->chain[k].data, i->chain[k].size, &certs[k]));
        ASSERT_OK(crypto_x509_stack_new(certs + 1, i->n_chain - 1, &intermediates));
        if (svid_verify(bundle, certs[0], intermediates, 0, &id, &why) < 0)
                test_fail(__FILE__, __LINE__, "chain does not verify: %s", why);
        ASSERT_STREQ(id->uri, spiffe_id);

        ASSERT_OK(crypto_key_from_pkcs8_der(i->key.data, i->key.size, &key));
        ASSERT_OK(crypto_x509_get_public_key_der(certs[0], &a, &na));
        ASSERT_OK(crypto_key_public_to_der(key, &b, &nb));
        ASSERT_EQ(na, nb);
        ASSERT_MEMEQ(a, b, na);

        usec_t not_after;
        ASSERT_OK(crypto_x509_get_validity(certs[0], NULL, &not_after));
        ASSERT_EQ(i->not_after, not_after);
        for (size_t k = 0; k < i->n_chain; k++)
                crypto_x509_unref(certs[k]);
}

static bool blob_equal(const DerBlob *a, const DerBlob *b) {
        return a->size == b->size && memcmp(a->data, b->data, a->size) == 0;
}

static void setup(void) {
        (void) signal(SIGPIPE, SIG_IGN);
}

/* ---- cases ---------------------------------------------------------------------------------------------- */

TEST(reauth_constants_match_controller) {
        ASSERT_STREQ(AGENT_REAUTH_CONTEXT, ENROLL_REAUTH_CONTEXT);
        ASSERT_EQ(AGENT_REAUTH_NONCE_SIZE, ENROLL_NONCE_SIZE);
}

TEST(enroll_invalid_parameters) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        static const struct {
                const char *name;
                SpiffeRole role;
                const char *id;
                const char *label;
                const char *version;
                KeyType key_type;
        } table[] = {
                { "controller role", SPIFFE_ROLE_CONTROLLER, "a", NULL, NULL, KEY_TYPE_ECDSA_P256 },
                { "relay role", SPIFFE_ROLE_RELAY, "a", NULL, NULL, KEY_TYPE_ECDSA_P256 },
                { "bad id", SPIFFE_ROLE_CONNECTOR, "a b", NULL, NULL, KEY_TYPE_ECDSA_P256 },
                { "empty id", SPIFFE_ROLE_CONNECTOR, "", NULL, NULL, KEY_TYPE_ECDSA_P256 },
                { "label without value", SPIFFE_ROLE_CONNECTOR, "a", "k=", NULL, KEY_TYPE_ECDSA_P256 },
                { "label without key", SPIFFE_ROLE_CONNECTOR, "a", "=v", NULL, KEY_TYPE_ECDSA_P256 },
                { "label without '='", SPIFFE_ROLE_CONNECTOR, "a", "kv", NULL, KEY_TYPE_ECDSA_P256 },
                { "control character", SPIFFE_ROLE_CONNECTOR, "a", NULL, "1.0\n", KEY_TYPE_ECDSA_P256 },
                { "key type", SPIFFE_ROLE_CONNECTOR, "a", NULL, NULL, _KEY_TYPE_MAX },
        };
        static const char *const bad_domains[] = { "", "Not a domain", "spiffe://ztna.test", "a/b" };

        ASSERT_OK(sd_event_new(&e));
        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                CASE("%s", table[k].name);
                AgentEnrollParams p = {
                        .token = "ztna1-x",
                        .role = table[k].role,
                        .id = table[k].id,
                        .version = table[k].version,
                        .labels = table[k].label ? (char *[]) { (char *) table[k].label, NULL } : NULL,
                        .key_type = table[k].key_type,
                };
                ASSERT_ERROR(agent_enroll(e, &p, (AgentRequestCallback) abort, NULL, NULL), EINVAL);
        }

        CASE("duplicate label");
        AgentEnrollParams p = {
                .token = "ztna1-x", .role = SPIFFE_ROLE_CONNECTOR, .id = "a", .key_type = KEY_TYPE_ED25519,
                .labels = (char *[]) { (char *) "k=1", (char *) "k=2", NULL },
        };
        ASSERT_ERROR(agent_enroll(e, &p, (AgentRequestCallback) abort, NULL, NULL), EINVAL);

        for (size_t k = 0; k < ELEMENTSOF(bad_domains); k++) {
                CASE("expected trust domain '%s'", bad_domains[k]);
                AgentEnrollParams q = {
                        .token = "ztna1-x", .role = SPIFFE_ROLE_CONNECTOR, .id = "a",
                        .key_type = KEY_TYPE_ED25519, .expected_trust_domain = bad_domains[k],
                };
                ASSERT_ERROR(agent_enroll(e, &q, (AgentRequestCallback) abort, NULL, NULL), EINVAL);
        }

        CASE("incomplete identity");
        AgentIdentity empty = {};
        ASSERT_ERROR(agent_renew(e, &empty, false, (AgentRequestCallback) abort, NULL, NULL), EINVAL);
        ASSERT_ERROR(agent_reauthenticate(e, &empty, false, (AgentRequestCallback) abort, NULL, NULL), EINVAL);
}

TEST(enroll_bad_token) {
        static const struct {
                const char *token;
                int error;
                const char *reason;
        } table[] = {
                { "", EINVAL, "" },
                { "hello", EINVAL, "" },
                { "ztna1-AAAA", EBADMSG, "damaged" },
                { "ztna1-AAAA AAAA", EBADMSG, "whitespace" },
        };

        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                _cleanup_free_ char *reason = NULL;
                AgentIdentity i = {};

                CASE("'%s'", table[k].token);
                ASSERT_ERROR(agent_enroll_sync(&(AgentEnrollParams) { .token = table[k].token,
                                                                      .role = SPIFFE_ROLE_CONNECTOR,
                                                                      .id = "c1",
                                                                      .key_type = KEY_TYPE_ECDSA_P256 },
                                               &i, &reason),
                             table[k].error);
                ASSERT_NOT_NULL(reason);
                ASSERT_STRSTR(reason, table[k].reason);
                ASSERT_NULL(i.spiffe_id);
        }
}

typedef struct AsyncResult {
        unsigned calls;
        int error;
        char reason[512];
        sd_event *event;
} AsyncResult;

static void on_async_done(AgentRequest *req, int error, const char *reason, AgentIdentity *identity,
                          void *userdata) {
        AsyncResult *a = userdata;

        a->calls++;
        a->error = error;
        ASSERT_NULL(identity);
        snprintf(a->reason, sizeof(a->reason), "%s", reason);
        (void) sd_event_exit(a->event, 0);
}

/* Nothing listens: the asynchronous, self-freeing form reports once, naming the address. */
TEST(enroll_unreachable) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        char address[32], expected[64];
        uint8_t pin[32] = { 1, 2, 3 };
        AsyncResult a = {};

        setup();
        snprintf(address, sizeof(address), "127.0.0.1:%u", controller_fixture_free_port());
        ASSERT_OK(token_generate(pin, (char *[]) { address, NULL }, &t));
        ASSERT_OK(token_to_string(t, &token));
        ASSERT_OK(sd_event_new(&e));
        a.event = e;

        ASSERT_OK(agent_enroll(e,
                               &(AgentEnrollParams) { .token = token, .role = SPIFFE_ROLE_TUNNELER, .id = "t1",
                                                      .key_type = KEY_TYPE_ED25519 },
                               on_async_done, &a, NULL));
        ASSERT_EQ(a.calls, 0); /* never from inside agent_enroll() */
        ASSERT_OK(sd_event_loop(e));
        ASSERT_EQ(a.calls, 1);
        ASSERT_EQ(a.error, -EHOSTUNREACH);
        snprintf(expected, sizeof(expected), "controller unreachable (%s)", address);
        ASSERT_STREQ(a.reason, expected);
        ASSERT_TRUE(strstr(a.reason, "ztna1-") == NULL);
}

typedef struct HeldRequest {
        AgentRequest *req;
        AsyncResult result;
} HeldRequest;

static void on_held_done(AgentRequest *req, int error, const char *reason, AgentIdentity *identity,
                         void *userdata) {
        HeldRequest *h = userdata;

        ASSERT_TRUE(h->req == req);
        on_async_done(req, error, reason, identity, &h->result); /* reason belongs to the request */
        /* The owner drops its request from the callback: allowed, and the last thing that touches it. */
        h->req = agent_request_free(h->req);
}

/* A request its caller holds may be freed from its own callback (ASan sees any use after that). */
TEST(held_request_freed_from_callback) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        char address[32];
        uint8_t pin[32] = { 1, 2, 3 };
        HeldRequest h = {};

        setup();
        snprintf(address, sizeof(address), "127.0.0.1:%u", controller_fixture_free_port());
        ASSERT_OK(token_generate(pin, (char *[]) { address, NULL }, &t));
        ASSERT_OK(token_to_string(t, &token));
        ASSERT_OK(sd_event_new(&e));
        h.result.event = e;

        ASSERT_OK(agent_enroll(e,
                               &(AgentEnrollParams) { .token = token, .role = SPIFFE_ROLE_TUNNELER, .id = "t1",
                                                      .key_type = KEY_TYPE_ED25519 },
                               on_held_done, &h, &h.req));
        ASSERT_NOT_NULL(h.req);
        ASSERT_OK(sd_event_loop(e));
        ASSERT_EQ(h.result.calls, 1U);
        ASSERT_EQ(h.result.error, -EHOSTUNREACH);
        ASSERT_NULL(h.req);
}

TEST(enroll_ok) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *reason = NULL;
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, NULL);
        controller_fixture_start(&c);

        ASSERT_OK(enroll(token, SPIFFE_ROLE_CONNECTOR, "conn-1", &i, &reason));
        assert_identity_valid(&i, "spiffe://" TRUST_DOMAIN "/connector/conn-1");
        ASSERT_EQ(i.role, SPIFFE_ROLE_CONNECTOR);
        ASSERT_STREQ(i.id, "conn-1");
        ASSERT_EQ(strv_length(i.controllers), 1);
        ASSERT_STREQ(i.controllers[0], c.address);
        ASSERT_EQ(i.heartbeat_interval, 10 * USEC_PER_SEC);
        ASSERT_EQ(i.certificate_lifetime, USEC_PER_HOUR); /* the connector default */
        ASSERT_GT(i.not_after, now(CLOCK_REALTIME) + 50 * USEC_PER_MINUTE);
        ASSERT_LE(i.not_after, now(CLOCK_REALTIME) + USEC_PER_HOUR + USEC_PER_MINUTE);

        /* The bundle's root is the one the token pinned. */
        {
                X509 *root = NULL;
                uint8_t fp[32];

                ASSERT_OK(crypto_x509_from_der(i.bundle[0].data, i.bundle[0].size, &root));
                ASSERT_OK(crypto_x509_spki_sha256(root, fp));
                crypto_x509_unref(root);
                ASSERT_MEMEQ(fp, c.pin, 32);
        }
        controller_fixture_stop(&c);

        /* What the controller recorded came from our request. */
        ASSERT_OK(store_open_sqlite(c.db, &s));
        ASSERT_OK(store_agent_get(s, i.spiffe_id, &agent));
        ASSERT_STREQ(agent->version, "1.2.3");
        ASSERT_STREQ(agent->private_ip, "10.1.2.3");
        ASSERT_TRUE(strv_contains(agent->labels, "site=lab"));
        ASSERT_TRUE(strv_contains(agent->labels, "rack=7"));
}

TEST(enroll_token_reused) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, j = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_TUNNELER, &token, NULL);
        controller_fixture_start(&c);

        ASSERT_OK(enroll(token, SPIFFE_ROLE_TUNNELER, "tun-1", &i, NULL));
        ASSERT_ERROR(enroll(token, SPIFFE_ROLE_TUNNELER, "tun-2", &j, &reason), EACCES);
        ASSERT_STREQ(reason, "token already used");
        ASSERT_NULL(j.spiffe_id);
        controller_fixture_stop(&c);
}

/* A host-name default gives way to the id the token is bound to; an id the operator chose does not. */
static void enroll_bound(bool id_is_default) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token_bound(&c, SPIFFE_ROLE_CONNECTOR, "bound-1", &token, NULL);
        controller_fixture_start(&c);

        AgentEnrollParams p = {
                .token = token,
                .role = SPIFFE_ROLE_CONNECTOR,
                .id = "myhost",
                .id_is_default = id_is_default,
                .key_type = KEY_TYPE_ECDSA_P256,
        };
        if (id_is_default) {
                ASSERT_OK(agent_enroll_sync(&p, &i, &reason));
                ASSERT_STREQ(i.id, "bound-1");
                assert_identity_valid(&i, "spiffe://" TRUST_DOMAIN "/connector/bound-1");
        } else {
                ASSERT_ERROR(agent_enroll_sync(&p, &i, &reason), EACCES);
                ASSERT_STRSTR(reason, "bound");
                ASSERT_NULL(i.id);
        }
        controller_fixture_stop(&c);
}

TEST(enroll_default_id_takes_bound_id) {
        enroll_bound(true);
}

TEST(enroll_chosen_id_must_match_bound_id) {
        enroll_bound(false);
}

TEST(enroll_wrong_role) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, NULL);
        controller_fixture_start(&c);

        ASSERT_ERROR(enroll(token, SPIFFE_ROLE_TUNNELER, "tun-1", &i, &reason), EACCES);
        ASSERT_STREQ(reason, "token is for another role");
        /* Refused before anything was consumed: the right role still enrolls. */
        ASSERT_OK(enroll(token, SPIFFE_ROLE_CONNECTOR, "conn-1", &i, NULL));
        ASSERT_STREQ(i.spiffe_id, "spiffe://" TRUST_DOMAIN "/connector/conn-1");
        controller_fixture_stop(&c);
}

TEST(enroll_pin_mismatch) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL, *wrong = NULL;
        _cleanup_free_ char *reason = NULL;
        char expected[256];
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, &wrong);
        controller_fixture_start(&c);

        ASSERT_ERROR(enroll(wrong, SPIFFE_ROLE_CONNECTOR, "conn-1", &i, &reason), ENOKEY);
        snprintf(expected, sizeof(expected),
                 "CA pin mismatch: the controller at %s does not present the root this token pins", c.address);
        ASSERT_STREQ(reason, expected);
        ASSERT_NULL(i.spiffe_id);
        /* Same id and secret: the token was never sent, so it is still unused. */
        ASSERT_OK(enroll(token, SPIFFE_ROLE_CONNECTOR, "conn-1", &i, NULL));
        controller_fixture_stop(&c);
}

TEST(renew_same_and_new_key) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, same = {}, fresh = {}, again = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        const char *sid = "spiffe://" TRUST_DOMAIN "/connector/conn-1";
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, NULL);
        controller_fixture_start(&c);
        ASSERT_OK(enroll(token, SPIFFE_ROLE_CONNECTOR, "conn-1", &i, NULL));

        ASSERT_OK(agent_renew_sync(&i, false, &same, &reason));
        assert_identity_valid(&same, sid);
        ASSERT_TRUE(blob_equal(&same.key, &i.key));
        ASSERT_FALSE(blob_equal(&same.chain[0], &i.chain[0]));
        ASSERT_STREQ(same.controllers[0], c.address);
        ASSERT_STREQ(same.id, "conn-1");

        ASSERT_OK(agent_renew_sync(&same, true, &fresh, &reason));
        assert_identity_valid(&fresh, sid);
        ASSERT_FALSE(blob_equal(&fresh.key, &same.key));
        ASSERT_EQ(fresh.role, SPIFFE_ROLE_CONNECTOR);

        /* The replaced key's certificates renew no more; the new one does. */
        ASSERT_ERROR(agent_renew_sync(&same, false, &again, &reason), EACCES);
        ASSERT_STRSTR(reason, "certificate superseded");
        ASSERT_NULL(again.spiffe_id);
        ASSERT_OK(agent_renew_sync(&fresh, false, &again, NULL));
        assert_identity_valid(&again, sid);
        ASSERT_TRUE(blob_equal(&again.key, &fresh.key));
        controller_fixture_stop(&c);
}

TEST(reauthenticate_after_expiry) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, r1 = {}, r2 = {}, x = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        const char *sid = "spiffe://" TRUST_DOMAIN "/tunneler/tun-1";
        ControllerFixture c;
        usec_t n;

        setup();
        controller_fixture_init(&c, "TunnelerLifetime=10s\n");
        controller_fixture_add_token(&c, SPIFFE_ROLE_TUNNELER, &token, NULL);
        controller_fixture_start(&c);
        ASSERT_OK(enroll(token, SPIFFE_ROLE_TUNNELER, "tun-1", &i, NULL));
        ASSERT_EQ(i.certificate_lifetime, 10 * USEC_PER_SEC);

        n = now(CLOCK_REALTIME);
        ASSERT_LT(i.not_after, n + 11 * USEC_PER_SEC);
        if (i.not_after + USEC_PER_SEC > n)
                usleep(i.not_after + USEC_PER_SEC - n);

        /* Expired: mTLS is refused, the recorded key still proves who we are. */
        ASSERT_FAIL(agent_renew_sync(&i, false, &x, &reason));
        ASSERT_NOT_NULL(reason);
        ASSERT_NULL(x.spiffe_id);
        reason = mfree(reason);
        ASSERT_OK(agent_reauthenticate_sync(&i, false, &r1, &reason));
        assert_identity_valid(&r1, sid);
        ASSERT_TRUE(blob_equal(&r1.key, &i.key));
        ASSERT_GT(r1.not_after, now(CLOCK_REALTIME));

        /* With a new key, signed by the current one; the new key is then the recorded one. */
        ASSERT_OK(agent_reauthenticate_sync(&r1, true, &r2, &reason));
        assert_identity_valid(&r2, sid);
        ASSERT_FALSE(blob_equal(&r2.key, &r1.key));
        ASSERT_ERROR(agent_reauthenticate_sync(&r1, false, &x, &reason), EACCES);
        ASSERT_STREQ(reason, "signature does not verify");
        controller_fixture_stop(&c);
}

TEST(revoked_agent_refused) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, x = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL, *reason2 = NULL;
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, NULL);
        controller_fixture_start(&c);
        ASSERT_OK(enroll(token, SPIFFE_ROLE_CONNECTOR, "conn-1", &i, NULL));
        controller_fixture_stop(&c);

        {
                _cleanup_(store_freep) Store *s = NULL;

                ASSERT_OK(store_open_sqlite(c.db, &s));
                ASSERT_OK(store_agent_revoke(s, i.spiffe_id, "test", now(CLOCK_REALTIME)));
        }
        controller_fixture_start(&c);

        ASSERT_ERROR(agent_renew_sync(&i, false, &x, &reason), EACCES);
        ASSERT_STREQ(reason, "agent revoked");
        ASSERT_NULL(x.spiffe_id);
        ASSERT_ERROR(agent_reauthenticate_sync(&i, false, &x, &reason2), EACCES);
        ASSERT_STREQ(reason2, "agent revoked");
        ASSERT_NULL(x.spiffe_id);
        controller_fixture_stop(&c);
}

/* The controller's root as PEM, straight from its store (the controller is stopped). */
static char *controller_root_pem(const ControllerFixture *c) {
        _cleanup_(store_freep) Store *s = NULL;
        StoreCa **cas = NULL;
        char *pem = NULL;
        size_t n = 0;

        ASSERT_OK(store_open_sqlite(c->db, &s));
        ASSERT_OK(store_ca_list(s, &cas, &n));
        for (size_t k = 0; k < n && !pem; k++) {
                X509 *root = NULL;

                if (cas[k]->kind != STORE_CA_ROOT)
                        continue;
                ASSERT_OK(crypto_x509_from_der(cas[k]->certificate, cas[k]->certificate_size, &root));
                ASSERT_OK(crypto_x509_to_pem(root, &pem));
                crypto_x509_unref(root);
        }
        store_ca_array_free(cas, n);
        ASSERT_NOT_NULL(pem);
        return pem;
}

/* Another CA's root: same trust domain name, another key. */
static char *other_root_pem(const char *trust_domain) {
        CertgenChain chain = {};
        char *pem = NULL;

        ASSERT_OK(certgen_chain_make(trust_domain, NULL, &chain));
        ASSERT_OK(crypto_x509_to_pem(chain.root, &pem));
        certgen_chain_done(&chain);
        return pem;
}

TEST(enroll_expected_trust_domain) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, j = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        char expected[256];
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, NULL);
        controller_fixture_start(&c);

        CASE("mismatch");
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-1", "other.test", NULL, &i, &reason), EXDEV);
        snprintf(expected, sizeof(expected),
                 "the controller at %s belongs to trust domain '" TRUST_DOMAIN "', expected 'other.test'",
                 c.address);
        ASSERT_STREQ(reason, expected);
        ASSERT_NULL(i.spiffe_id);

        /* The token was never sent: it still enrolls, with the right expectation too. */
        CASE("match");
        ASSERT_OK(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-1", TRUST_DOMAIN, NULL, &i, NULL));
        assert_identity_valid(&i, "spiffe://" TRUST_DOMAIN "/connector/conn-1");

        CASE("spent");
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-2", TRUST_DOMAIN, NULL, &j, NULL), EACCES);
        controller_fixture_stop(&c);
}

TEST(enroll_mismatch_without_expectation_succeeds) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *reason = NULL;
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_TUNNELER, &token, NULL);
        controller_fixture_start(&c);
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_TUNNELER, "tun-1", "elsewhere.example", NULL, &i, &reason),
                     EXDEV);
        ASSERT_STRSTR(reason, "expected 'elsewhere.example'");
        ASSERT_OK(enroll(token, SPIFFE_ROLE_TUNNELER, "tun-1", &i, NULL));
        ASSERT_STREQ(i.spiffe_id, "spiffe://" TRUST_DOMAIN "/tunneler/tun-1");
        controller_fixture_stop(&c);
}

/* A root given instead of the pin: the pin is ignored, the server must chain to that root. */
TEST(enroll_root_pem) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, x = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL, *wrong = NULL, *token2 = NULL;
        _cleanup_free_ char *root = NULL, *other = NULL, *both = NULL, *reason = NULL;
        char expected[256];
        ControllerFixture c;

        setup();
        controller_fixture_init(&c, NULL);
        controller_fixture_add_token(&c, SPIFFE_ROLE_CONNECTOR, &token, &wrong);
        controller_fixture_add_token(&c, SPIFFE_ROLE_TUNNELER, &token2, NULL);
        root = controller_root_pem(&c);
        other = other_root_pem(TRUST_DOMAIN);
        ASSERT_TRUE(asprintf(&both, "%s\n%s", other, root) > 0);
        controller_fixture_start(&c);

        CASE("another CA of the same domain name");
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-1", NULL, other, &x, &reason), ENOKEY);
        snprintf(expected, sizeof(expected), "the controller at %s does not chain to the given controller CA",
                 c.address);
        ASSERT_STRSTR(reason, expected);
        ASSERT_NULL(x.spiffe_id);
        reason = mfree(reason);

        CASE("another CA, with an expected domain");
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-1", TRUST_DOMAIN, other, &x, &reason),
                     ENOKEY);
        ASSERT_STRSTR(reason, expected);
        reason = mfree(reason);

        CASE("the controller's root, domain of another name expected");
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-1", "other.test", root, &x, &reason),
                     EKEYREJECTED);
        ASSERT_STRSTR(reason, "trust domain 'other.test'");
        reason = mfree(reason);

        CASE("garbage");
        ASSERT_ERROR(enroll_full(token, SPIFFE_ROLE_CONNECTOR, "conn-1", NULL, "hello", &x, &reason), EBADMSG);
        ASSERT_STREQ(reason, "the controller CA is not a PEM CERTIFICATE");
        reason = mfree(reason);

        /* The token whose pin is wrong: the root decides, and all failures above left the token unused. */
        CASE("the controller's root, wrong pin");
        ASSERT_OK(enroll_full(wrong, SPIFFE_ROLE_CONNECTOR, "conn-1", NULL, root, &i, &reason));
        assert_identity_valid(&i, "spiffe://" TRUST_DOMAIN "/connector/conn-1");
        {
                X509 *r = NULL;
                uint8_t fp[32];

                ASSERT_OK(crypto_x509_from_der(i.bundle[0].data, i.bundle[0].size, &r));
                ASSERT_OK(crypto_x509_spki_sha256(r, fp));
                crypto_x509_unref(r);
                ASSERT_MEMEQ(fp, c.pin, 32);
        }

        CASE("one of several roots, expected domain");
        ASSERT_OK(enroll_full(token2, SPIFFE_ROLE_TUNNELER, "tun-1", TRUST_DOMAIN, both, &x, NULL));
        ASSERT_STREQ(x.spiffe_id, "spiffe://" TRUST_DOMAIN "/tunneler/tun-1");
        controller_fixture_stop(&c);
}
