/* SPDX-License-Identifier: Apache-2.0 */

/* The controller's CA against a real SQLite store: initialisation, loading and its refusals, keys at rest,
 * issuance, the server certificate, issuing-CA and root rotations with fake clocks, restarts at every
 * step, and crashes in the middle of a rotation. */

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>

#include <openssl/core_names.h>
#include <openssl/x509v3.h>

#include "controller-ca.h"
#include "crypto-csr.h"
#include "crypto-envelope.h"
#include "crypto-key.h"
#include "crypto-svid.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "hexdecoct.h"
#include "net-fixture.h"
#include "strv.h"
#include "tests.h"

#define TD "example.org"
/* 2030-01-01T00:00:00Z, whole seconds so that certificate times equal the clock. */
#define T0 ((usec_t) 1893456000ULL * USEC_PER_SEC)
#define MIN_ (USEC_PER_MINUTE)
#define CONNECTOR_LIFETIME (10 * MIN_)
#define TUNNELER_LIFETIME (5 * MIN_)
#define SERVER_LIFETIME (20 * MIN_)
#define ISSUING_LIFETIME (3 * USEC_PER_HOUR)
#define ROOT_LIFETIME (30 * USEC_PER_DAY)
/* The longest leaf lifetime: the pause between the steps of a root rotation. */
#define LONGEST SERVER_LIFETIME
/* Renewal with 30 % of the server certificate's lifetime left. */
#define SERVER_RENEW (SERVER_LIFETIME * 7 / 10)
/* Issuing CA rotation with a third of its lifetime left. */
#define ISSUING_ROTATE (ISSUING_LIFETIME * 2 / 3)

#define CHANGED_ALL \
        (CONTROLLER_CA_CHANGED_BUNDLE | CONTROLLER_CA_CHANGED_SERVER | CONTROLLER_CA_CHANGED_ISSUER)

typedef struct Env {
        ControllerConfig config;
        char *db_path;
        Store *store;
        ControllerCa *ca;
        uint8_t kek[KEK_SIZE];
} Env;

static void kek_fill(uint8_t kek[static KEK_SIZE], uint8_t seed) {
        for (size_t i = 0; i < KEK_SIZE; i++)
                kek[i] = (uint8_t) (seed + i * 7);
}

static void config_fill(ControllerConfig *c, KeyType type) {
        ASSERT_OK(controller_config_init(c));
        c->trust_domain = ASSERT_NOT_NULL(strdup(TD));
        /* One host twice (two ports): one SAN. */
        c->advertised_addresses.addresses = ASSERT_NOT_NULL(strv_split(
                "ctl.example.org:8443 192.0.2.10:8443 [2001:db8::1]:8443 ctl.example.org:9443", " "));
        c->advertised_addresses.is_default = false;
        c->connector_lifetime = CONNECTOR_LIFETIME;
        c->tunneler_lifetime = TUNNELER_LIFETIME;
        c->server_lifetime = SERVER_LIFETIME;
        c->minimum_lifetime = 10 * USEC_PER_SEC;
        c->issuing_ca_lifetime = ISSUING_LIFETIME;
        c->root_ca_lifetime = ROOT_LIFETIME;
        c->key_type = type;
}

static Store *store_open_at(const char *path) {
        Store *s = NULL;

        ASSERT_OK(store_open_sqlite(path, &s));
        return ASSERT_NOT_NULL(s);
}

static void env_load(Env *e, usec_t now) {
        const char *reason = NULL;
        int r;

        r = controller_ca_load(e->store, &e->config, e->kek, now, &e->ca, &reason);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "load: %s (%s)", strerror(-r), strna(reason));
        ASSERT_NOT_NULL(e->ca);
}

/* A store initialised at `now` (nothing loaded when load is false). */
static void env_init_full(Env *e, KeyType type, usec_t now, bool load) {
        static unsigned counter = 0;
        char name[64];

        *e = (Env) {};
        config_fill(&e->config, type);
        kek_fill(e->kek, 1);
        /* A database of its own for every environment, so a table-driven case can make several. */
        snprintf(name, sizeof(name), "controller-%u.db", counter++);
        e->db_path = ASSERT_NOT_NULL(strdup(test_path(name)));
        e->store = store_open_at(e->db_path);
        ASSERT_OK(controller_ca_init(e->store, &e->config, e->kek, now));
        if (load)
                env_load(e, now);
}

static void env_init(Env *e) {
        env_init_full(e, KEY_TYPE_ECDSA_P256, T0, true);
}

/* A process restart: everything in memory is gone, the database is opened again. */
static void env_restart(Env *e, usec_t now) {
        e->ca = controller_ca_free(e->ca);
        e->store = store_free(e->store);
        e->store = store_open_at(e->db_path);
        env_load(e, now);
}

static void env_done(Env *e) {
        controller_ca_free(e->ca);
        store_free(e->store);
        controller_config_done(&e->config);
        free(e->db_path);
        *e = (Env) {};
}

static unsigned maintain(Env *e, usec_t now, usec_t *ret_next) {
        unsigned changes = 0xdead;

        ASSERT_OK(controller_ca_maintain(e->ca, now, &changes, ret_next));
        ASSERT_EQ(changes & ~CHANGED_ALL, 0);
        return changes;
}

/* Store rows */

typedef struct Rows {
        StoreCa **a;
        size_t n;
} Rows;

static void rows_done(Rows *r) {
        store_ca_array_free(r->a, r->n);
        *r = (Rows) {};
}

static Rows rows_get(Store *s) {
        Rows r = {};

        ASSERT_OK(store_ca_list(s, &r.a, &r.n));
        return r;
}

static size_t rows_count(const Rows *r, StoreCaKind kind, StoreCaState state) {
        size_t n = 0;

        for (size_t i = 0; i < r->n; i++)
                n += r->a[i]->kind == kind && r->a[i]->state == state;
        return n;
}

/* The only row of this kind and state. */
static StoreCa *rows_one(const Rows *r, StoreCaKind kind, StoreCaState state) {
        StoreCa *found = NULL;

        for (size_t i = 0; i < r->n; i++)
                if (r->a[i]->kind == kind && r->a[i]->state == state) {
                        if (found)
                                test_fail(__FILE__, __LINE__, "Two %s CAs in state %s",
                                          store_ca_kind_to_string(kind), store_ca_state_to_string(state));
                        found = r->a[i];
                }
        if (!found)
                test_fail(__FILE__, __LINE__, "No %s CA in state %s", store_ca_kind_to_string(kind),
                          store_ca_state_to_string(state));
        return found;
}

/* CSRs and leaves */

typedef struct Csr {
        EVP_PKEY *key;
        uint8_t *der;
        size_t size;
} Csr;

static void csr_done(Csr *c) {
        EVP_PKEY_free(c->key);
        free(c->der);
        *c = (Csr) {};
}

static Csr csr_make(KeyType type) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        Csr c = {};

        ASSERT_OK(crypto_key_generate(type, &c.key));
        ASSERT_OK(crypto_csr_new(c.key, NULL, &req));
        ASSERT_OK(crypto_csr_to_der(req, &c.der, &c.size));
        return c;
}

static void issue(Env *e, SpiffeRole role, const char *id, const Csr *csr, usec_t now,
                  IssuedCertificate *ret) {
        const char *reason = NULL;
        int r;

        r = controller_ca_issue(e->ca, role, id, csr->der, csr->size, now, ret, &reason);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "issue: %s (%s)", strerror(-r), strna(reason));
}

static X509 *parse_cert(const uint8_t *der, size_t size) {
        X509 *x = NULL;

        ASSERT_OK(crypto_x509_from_der(der, size, &x));
        return ASSERT_NOT_NULL(x);
}

/* svid_verify() of an issued leaf with the chain it came with, against bundle at now. */
static int verify_issued(const TrustBundle *bundle, const IssuedCertificate *c, usec_t now, char **ret_uri) {
        _cleanup_(X509_freep) X509 *leaf = parse_cert(c->chain[0], c->chain_size[0]);
        _cleanup_(X509_freep) X509 *issuer = parse_cert(c->chain[1], c->chain_size[1]);
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_free_ char *reason = NULL;
        int r;

        ASSERT_OK(crypto_x509_stack_new(&issuer, 1, &chain));
        r = svid_verify(bundle, leaf, chain, now, &id, &reason);
        if (r >= 0 && ret_uri)
                *ret_uri = ASSERT_NOT_NULL(strdup(id->uri));
        return r;
}

static void fingerprint_of_der(const uint8_t *der, size_t size, uint8_t ret[static 32]) {
        _cleanup_(X509_freep) X509 *x = parse_cert(der, size);

        ASSERT_OK(crypto_x509_spki_sha256(x, ret));
}

static bool bundle_has(const TrustBundle *b, const uint8_t fp[static 32]) {
        return trust_bundle_contains(b, fp);
}

/* Initialisation */

TEST(init_writes_root_issuing_and_trust_domain) {
        static const KeyType types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                _cleanup_(env_done) Env e = {};
                _cleanup_(rows_done) Rows rows = {};
                _cleanup_free_ char *td = NULL;
                uint8_t pin[32];
                StoreCa *root, *issuing;

                CASE("%s", key_type_to_string(types[t]));
                env_init_full(&e, types[t], T0, true);

                rows = rows_get(e.store);
                ASSERT_EQ(rows.n, 2);
                root = rows_one(&rows, STORE_CA_ROOT, STORE_CA_ACTIVE);
                issuing = rows_one(&rows, STORE_CA_ISSUING, STORE_CA_ACTIVE);

                ASSERT_OK(store_meta_get(e.store, "trust_domain", &td));
                ASSERT_STREQ(td, TD);
                ASSERT_STREQ(controller_ca_get_trust_domain(e.ca), TD);

                static const uint8_t zero[32] = {};
                ASSERT_MEMEQ(root->parent, zero, 32);
                ASSERT_MEMEQ(issuing->parent, root->fingerprint, 32);
                ASSERT_UEQ(root->created_at, T0);
                ASSERT_UEQ(issuing->created_at, T0);

                /* Rows describe their certificates: fingerprint, validity, lifetimes from the config. */
                StoreCa *both[] = { root, issuing };
                for (size_t i = 0; i < ELEMENTSOF(both); i++) {
                        _cleanup_(X509_freep) X509 *x =
                                parse_cert(both[i]->certificate, both[i]->certificate_size);
                        uint8_t fp[32];
                        usec_t nb, na;

                        ASSERT_OK(crypto_x509_spki_sha256(x, fp));
                        ASSERT_MEMEQ(fp, both[i]->fingerprint, 32);
                        ASSERT_OK(crypto_x509_get_validity(x, &nb, &na));
                        ASSERT_UEQ(both[i]->not_before, nb);
                        ASSERT_UEQ(both[i]->not_after, na);
                        ASSERT_UEQ(na, T0 + (i == 0 ? ROOT_LIFETIME : ISSUING_LIFETIME));
                        ASSERT_TRUE(envelope_is_sealed(both[i]->sealed_key, both[i]->sealed_key_size));
                        ASSERT_EQ(crypto_key_get_type(X509_get0_pubkey(x)), types[t]);
                }

                const TrustBundle *b = controller_ca_get_bundle(e.ca);
                ASSERT_EQ(trust_bundle_size(b), 1);
                ASSERT_TRUE(bundle_has(b, root->fingerprint));
                controller_ca_get_root_pin(e.ca, pin);
                ASSERT_MEMEQ(pin, root->fingerprint, 32);
                ASSERT_FALSE(controller_ca_rotation_in_progress(e.ca));
        }
}

TEST(init_refuses_existing_material) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows before = {}, after = {};
        _cleanup_(store_freep) Store *other = NULL;
        _cleanup_(rows_done) Rows none = {};

        env_init_full(&e, KEY_TYPE_ECDSA_P256, T0, false);
        before = rows_get(e.store);

        CASE("twice");
        ASSERT_ERROR(controller_ca_init(e.store, &e.config, e.kek, T0 + MIN_), EEXIST);
        after = rows_get(e.store);
        ASSERT_EQ(after.n, before.n);
        for (size_t i = 0; i < after.n; i++)
                ASSERT_MEMEQ(after.a[i]->fingerprint, before.a[i]->fingerprint, 32);

        CASE("a trust domain but no CA");
        other = store_open_at(test_path("other.db"));
        ASSERT_OK(store_meta_set(other, "trust_domain", "other.org"));
        ASSERT_ERROR(controller_ca_init(other, &e.config, e.kek, T0), EEXIST);
        none = rows_get(other);
        ASSERT_EQ(none.n, 0);

        CASE("a CA but no trust domain");
        _cleanup_(store_freep) Store *third = store_open_at(test_path("third.db"));
        ASSERT_OK(store_ca_put(third, before.a[0]));
        ASSERT_ERROR(controller_ca_init(third, &e.config, e.kek, T0), EEXIST);
}

TEST(init_refuses_bad_config) {
        _cleanup_(store_freep) Store *s = store_open_at(test_path("c.db"));
        _cleanup_(controller_config_done) ControllerConfig c = {};
        _cleanup_(rows_done) Rows rows = {};
        uint8_t kek[KEK_SIZE];

        kek_fill(kek, 1);
        config_fill(&c, KEY_TYPE_ECDSA_P256);

        CASE("no trust domain");
        c.trust_domain = mfree(c.trust_domain);
        ASSERT_ERROR(controller_ca_init(s, &c, kek, T0), EINVAL);
        CASE("invalid trust domain");
        c.trust_domain = ASSERT_NOT_NULL(strdup("Example.ORG"));
        ASSERT_ERROR(controller_ca_init(s, &c, kek, T0), EINVAL);
        CASE("invalid key type");
        free(c.trust_domain);
        c.trust_domain = ASSERT_NOT_NULL(strdup(TD));
        c.key_type = _KEY_TYPE_MAX;
        ASSERT_ERROR(controller_ca_init(s, &c, kek, T0), EINVAL);

        /* Nothing was written by the refusals. */
        rows = rows_get(s);
        ASSERT_EQ(rows.n, 0);
}

/* Loading */

static int load_error(Env *e, const uint8_t kek[static KEK_SIZE], const char **ret_reason) {
        ControllerCa *ca = NULL;
        int r;

        *ret_reason = NULL;
        r = controller_ca_load(e->store, &e->config, kek, T0, &ca, ret_reason);
        ASSERT_NULL(ca);
        ASSERT_NOT_NULL(*ret_reason);
        return r;
}

TEST(load_not_initialised) {
        _cleanup_(store_freep) Store *s = store_open_at(test_path("empty.db"));
        _cleanup_(controller_config_done) ControllerConfig c = {};
        ControllerCa *ca = NULL;
        const char *reason = NULL;
        uint8_t kek[KEK_SIZE];

        kek_fill(kek, 1);
        config_fill(&c, KEY_TYPE_ECDSA_P256);
        ASSERT_ERROR(controller_ca_load(s, &c, kek, T0, &ca, &reason), ENOENT);
        ASSERT_STRSTR(reason, "ztna-controller init");
        ASSERT_NULL(ca);
}

TEST(load_wrong_kek_and_trust_domain) {
        _cleanup_(env_done) Env e = {};
        const char *reason;
        uint8_t wrong[KEK_SIZE];

        env_init_full(&e, KEY_TYPE_ECDSA_P256, T0, false);

        CASE("wrong KEK");
        kek_fill(wrong, 2);
        ASSERT_ERROR(load_error(&e, wrong, &reason), EKEYREJECTED);
        ASSERT_STRSTR(reason, "key-encryption key");
        CASE("one bit off");
        memcpy(wrong, e.kek, KEK_SIZE);
        wrong[KEK_SIZE - 1] ^= 0x80;
        ASSERT_ERROR(load_error(&e, wrong, &reason), EKEYREJECTED);

        CASE("another trust domain");
        free(e.config.trust_domain);
        e.config.trust_domain = ASSERT_NOT_NULL(strdup("other.org"));
        ASSERT_ERROR(load_error(&e, e.kek, &reason), EXDEV);
        ASSERT_STRSTR(reason, "trust domain");

        CASE("no trust domain configured");
        e.config.trust_domain = mfree(e.config.trust_domain);
        ASSERT_ERROR(load_error(&e, e.kek, &reason), EINVAL);

        CASE("the right one");
        e.config.trust_domain = ASSERT_NOT_NULL(strdup(TD));
        env_load(&e, T0);
}

TEST(load_inconsistent_rows) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows rows = {};
        const char *reason;
        StoreCa *root, *issuing;

        env_init_full(&e, KEY_TYPE_ECDSA_P256, T0, false);
        rows = rows_get(e.store);
        root = rows_one(&rows, STORE_CA_ROOT, STORE_CA_ACTIVE);
        issuing = rows_one(&rows, STORE_CA_ISSUING, STORE_CA_ACTIVE);

        CASE("CA rows without a trust domain: init was interrupted");
        {
                _cleanup_(store_freep) Store *half = store_open_at(test_path("half.db"));
                ControllerCa *ca = NULL;

                ASSERT_OK(store_ca_put(half, root));
                ASSERT_ERROR(controller_ca_load(half, &e.config, e.kek, T0, &ca, &reason), EBADMSG);
                ASSERT_STRSTR(reason, "interrupted");
        }

        CASE("a certificate that does not match its row");
        {
                StoreCa forged = *issuing;

                forged.certificate = root->certificate;
                forged.certificate_size = root->certificate_size;
                ASSERT_OK(store_ca_put(e.store, &forged));
                ASSERT_ERROR(load_error(&e, e.kek, &reason), EBADMSG);
                ASSERT_STRSTR(reason, "fingerprint");
                ASSERT_OK(store_ca_put(e.store, issuing));
                env_load(&e, T0);
                e.ca = controller_ca_free(e.ca);
        }

        CASE("a malformed certificate");
        {
                StoreCa forged = *issuing;
                uint8_t junk[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };

                forged.certificate = junk;
                forged.certificate_size = sizeof(junk);
                ASSERT_OK(store_ca_put(e.store, &forged));
                ASSERT_ERROR(load_error(&e, e.kek, &reason), EBADMSG);
                ASSERT_STRSTR(reason, "malformed");
                ASSERT_OK(store_ca_put(e.store, issuing));
        }

        CASE("no active root");
        ASSERT_OK(store_ca_set_state(e.store, root->fingerprint, STORE_CA_RETIRING));
        ASSERT_ERROR(load_error(&e, e.kek, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "root");
}

TEST(sealed_key_bound_to_its_row) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows rows = {};
        const char *reason;
        StoreCa *root, *issuing;

        env_init_full(&e, KEY_TYPE_ECDSA_P256, T0, false);
        rows = rows_get(e.store);
        root = rows_one(&rows, STORE_CA_ROOT, STORE_CA_ACTIVE);
        issuing = rows_one(&rows, STORE_CA_ISSUING, STORE_CA_ACTIVE);

        CASE("the root's sealed key on the issuing CA's row");
        StoreCa moved = *issuing;
        moved.sealed_key = root->sealed_key;
        moved.sealed_key_size = root->sealed_key_size;
        ASSERT_OK(store_ca_put(e.store, &moved));
        ASSERT_ERROR(load_error(&e, e.kek, &reason), EKEYREJECTED);

        CASE("one byte of the sealed key changed");
        _cleanup_free_ uint8_t *flipped = ASSERT_NOT_NULL(malloc(issuing->sealed_key_size));
        memcpy(flipped, issuing->sealed_key, issuing->sealed_key_size);
        flipped[issuing->sealed_key_size / 2] ^= 0x01;
        moved.sealed_key = flipped;
        ASSERT_OK(store_ca_put(e.store, &moved));
        ASSERT_ERROR(load_error(&e, e.kek, &reason), EKEYREJECTED);

        CASE("no key at all");
        moved.sealed_key = NULL;
        moved.sealed_key_size = 0;
        ASSERT_OK(store_ca_put(e.store, &moved));
        ASSERT_ERROR(load_error(&e, e.kek, &reason), EBADMSG);

        CASE("put back");
        ASSERT_OK(store_ca_put(e.store, issuing));
        env_load(&e, T0);
}

/* The sealed key opens with the KEK and the documented AAD, and is the CA's key. */
static uint8_t *unseal(const uint8_t kek[static KEK_SIZE], const StoreCa *row, size_t *ret_size) {
        _cleanup_free_ char *hex = ASSERT_NOT_NULL(hexmem(row->fingerprint, 32));
        _cleanup_free_ char *aad = NULL;
        uint8_t *der = NULL;

        ASSERT_GT(asprintf(&aad, "ztna controller ca %s", hex), 0);
        ASSERT_OK(
                envelope_open(kek, aad, strlen(aad), row->sealed_key, row->sealed_key_size, &der, ret_size));
        return der;
}

static bool file_contains(const char *path, const void *needle, size_t n) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size = 0, cap = 0;
        FILE *f = fopen(path, "re");

        if (!f)
                return false;
        for (;;) {
                size_t k;

                if (size == cap) {
                        cap = cap ? cap * 2 : 65536;
                        buf = ASSERT_NOT_NULL(realloc(buf, cap));
                }
                k = fread(buf + size, 1, cap - size, f);
                if (k == 0)
                        break;
                size += k;
        }
        fclose(f);
        return memmem(buf, size, needle, n) != NULL;
}

TEST(no_private_key_in_database) {
        static const KeyType types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                _cleanup_(env_done) Env e = {};
                _cleanup_(rows_done) Rows rows = {};
                _cleanup_free_ char *wal = NULL;
                size_t n_checked = 0;

                CASE("%s", key_type_to_string(types[t]));
                env_init_full(&e, types[t], T0, true);
                /* Some history: an issuing rotation and a staged root. */
                maintain(&e, T0, NULL);
                maintain(&e, T0 + ISSUING_ROTATE, NULL);
                ASSERT_OK(controller_ca_rotate_root(e.ca, T0 + ISSUING_ROTATE + MIN_));
                e.ca = controller_ca_free(e.ca);
                e.store = store_free(e.store);

                e.store = store_open_at(e.db_path);
                ASSERT_GT(asprintf(&wal, "%s-wal", e.db_path), 0);
                rows = rows_get(e.store);
                ASSERT_EQ(rows.n, 4);
                for (size_t i = 0; i < rows.n; i++) {
                        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
                        _cleanup_(X509_freep) X509 *cert = NULL;
                        uint8_t raw[64];
                        size_t der_size = 0, raw_size = sizeof(raw);
                        uint8_t *der;

                        der = unseal(e.kek, rows.a[i], &der_size);
                        ASSERT_OK(crypto_key_from_pkcs8_der(der, der_size, &key));
                        cert = parse_cert(rows.a[i]->certificate, rows.a[i]->certificate_size);
                        ASSERT_EQ(X509_check_private_key(cert, key), 1);

                        /* Neither the PKCS#8 DER nor the bare private scalar is anywhere in the files. */
                        if (types[t] == KEY_TYPE_ED25519)
                                ASSERT_EQ(EVP_PKEY_get_raw_private_key(key, raw, &raw_size), 1);
                        else {
                                _cleanup_(BN_freep) BIGNUM *bn = NULL;

                                ASSERT_EQ(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &bn), 1);
                                ASSERT_EQ(BN_bn2binpad(bn, raw, 32), 32);
                                raw_size = 32;
                        }
                        ASSERT_EQ(raw_size, 32);

                        const char *files[] = { e.db_path, wal };
                        for (size_t f = 0; f < ELEMENTSOF(files); f++) {
                                ASSERT_FALSE(file_contains(files[f], der, der_size));
                                ASSERT_FALSE(file_contains(files[f], raw, raw_size));
                        }
                        /* The check can fail: the sealed blob itself is there. */
                        ASSERT_TRUE(file_contains(
                                            e.db_path, rows.a[i]->sealed_key, rows.a[i]->sealed_key_size) ||
                                    file_contains(wal, rows.a[i]->sealed_key, rows.a[i]->sealed_key_size));
                        crypto_erase_and_free(der, der_size + 1);
                        n_checked++;
                }
                ASSERT_EQ(n_checked, 4);
        }
}

/* Issuance */

TEST(issue_leaf) {
        static const KeyType types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };
        static const struct {
                SpiffeRole role;
                const char *id;
                usec_t lifetime;
                const char *uri;
        } table[] = {
                { SPIFFE_ROLE_CONNECTOR, "conn-1", CONNECTOR_LIFETIME, "spiffe://" TD "/connector/conn-1" },
                { SPIFFE_ROLE_TUNNELER, "laptop.alice_2", TUNNELER_LIFETIME,
                  "spiffe://" TD "/tunneler/laptop.alice_2" },
        };
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows rows = {};
        StoreCa *issuing;

        env_init(&e);
        maintain(&e, T0, NULL);
        rows = rows_get(e.store);
        issuing = rows_one(&rows, STORE_CA_ISSUING, STORE_CA_ACTIVE);

        for (size_t t = 0; t < ELEMENTSOF(types); t++)
                for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                        _cleanup_(issued_certificate_done) IssuedCertificate c = {};
                        _cleanup_(csr_done) Csr csr = csr_make(types[t]);
                        _cleanup_free_ uint8_t *spki = NULL;
                        _cleanup_free_ char *uri = NULL, *serial = NULL;
                        _cleanup_(X509_freep) X509 *leaf = NULL;
                        usec_t now = T0 + 7 * MIN_, nb, na;
                        size_t spki_size = 0;

                        CASE("%s %s", key_type_to_string(types[t]), table[i].id);
                        issue(&e, table[i].role, table[i].id, &csr, now, &c);

                        ASSERT_EQ(c.n_chain, 2);
                        ASSERT_EQ(c.chain_size[1], issuing->certificate_size);
                        ASSERT_MEMEQ(c.chain[1], issuing->certificate, issuing->certificate_size);
                        ASSERT_NULL(c.chain[2]);

                        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &c, now, &uri), 0);
                        ASSERT_STREQ(uri, table[i].uri);

                        leaf = parse_cert(c.chain[0], c.chain_size[0]);
                        ASSERT_OK(crypto_x509_get_validity(leaf, &nb, &na));
                        ASSERT_UEQ(na, now + table[i].lifetime);
                        ASSERT_UEQ(c.not_after, na);
                        ASSERT_UEQ(nb, now - CA_BACKDATE_USEC);

                        ASSERT_OK(crypto_key_public_to_der(csr.key, &spki, &spki_size));
                        ASSERT_EQ(c.public_key_size, spki_size);
                        ASSERT_MEMEQ(c.public_key, spki, spki_size);
                        ASSERT_OK(crypto_x509_get_serial_hex(leaf, &serial));
                        ASSERT_STREQ(c.serial, serial);

                        /* Valid for its lifetime and not a second more. */
                        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &c, na - USEC_PER_SEC, NULL),
                                0);
                        ASSERT_ERROR(
                                verify_issued(controller_ca_get_bundle(e.ca), &c, na + USEC_PER_SEC, NULL),
                                EKEYEXPIRED);
                }
}

static X509_REQ *csr_rsa(void) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        X509_REQ *req = ASSERT_NOT_NULL(X509_REQ_new());

        ASSERT_NOT_NULL(rsa);
        ASSERT_EQ(X509_REQ_set_pubkey(req, rsa), 1);
        ASSERT_GT(X509_REQ_sign(req, rsa, EVP_sha256()), 0);
        return req;
}

TEST(issue_refusals) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(csr_done) Csr good = {}, other = {};
        _cleanup_(X509_REQ_freep) X509_REQ *swapped = NULL, *rsa = NULL;
        _cleanup_free_ uint8_t *swapped_der = NULL, *rsa_der = NULL, *flipped = NULL;
        size_t swapped_size = 0, rsa_size = 0;
        char long_id[ZTNA_ID_MAX + 2];
        const uint8_t junk[] = { 0x30, 0x82, 0x01, 0x00, 0x02 };

        env_init(&e);
        maintain(&e, T0, NULL);
        good = csr_make(KEY_TYPE_ECDSA_P256);
        other = csr_make(KEY_TYPE_ECDSA_P256);

        /* Signed by one key, carrying another: the proof of possession fails. */
        ASSERT_OK(crypto_csr_new(good.key, NULL, &swapped));
        ASSERT_EQ(X509_REQ_set_pubkey(swapped, other.key), 1);
        ASSERT_OK(crypto_csr_to_der(swapped, &swapped_der, &swapped_size));
        /* The last byte belongs to the signature. */
        flipped = ASSERT_NOT_NULL(malloc(good.size));
        memcpy(flipped, good.der, good.size);
        flipped[good.size - 1] ^= 0x01;

        rsa = csr_rsa();
        ASSERT_OK(crypto_csr_to_der(rsa, &rsa_der, &rsa_size));

        memset(long_id, 'a', sizeof(long_id) - 1);
        long_id[sizeof(long_id) - 1] = '\0';

        const struct {
                const char *name;
                SpiffeRole role;
                const char *id;
                const void *csr;
                size_t size;
                int error;
                const char *reason;
        } table[] = {
                { "garbage", SPIFFE_ROLE_CONNECTOR, "c1", junk, sizeof(junk), EBADMSG, "malformed CSR" },
                { "empty", SPIFFE_ROLE_CONNECTOR, "c1", good.der, 0, EBADMSG, "malformed CSR" },
                { "truncated", SPIFFE_ROLE_CONNECTOR, "c1", good.der, good.size - 1, EBADMSG,
                  "malformed CSR" },
                { "oversized", SPIFFE_ROLE_CONNECTOR, "c1", good.der, CSR_DER_MAX + 1, EBADMSG,
                  "malformed CSR" },
                { "someone else's key", SPIFFE_ROLE_CONNECTOR, "c1", swapped_der, swapped_size, EKEYREJECTED,
                  "CSR signature does not verify" },
                { "flipped signature", SPIFFE_ROLE_TUNNELER, "t1", flipped, good.size, EKEYREJECTED,
                  "CSR signature does not verify" },
                { "RSA", SPIFFE_ROLE_CONNECTOR, "c1", rsa_der, rsa_size, EOPNOTSUPP,
                  "unsupported key type" },
                { "slash in id", SPIFFE_ROLE_CONNECTOR, "a/b", good.der, good.size, EINVAL,
                  "invalid agent id" },
                { "empty id", SPIFFE_ROLE_CONNECTOR, "", good.der, good.size, EINVAL, "invalid agent id" },
                { "dot-dot id", SPIFFE_ROLE_CONNECTOR, "..", good.der, good.size, EINVAL,
                  "invalid agent id" },
                { "long id", SPIFFE_ROLE_TUNNELER, long_id, good.der, good.size, EINVAL,
                  "invalid agent id" },
                { "controller role", SPIFFE_ROLE_CONTROLLER, "c1", good.der, good.size, EINVAL, "role" },
                { "relay role", SPIFFE_ROLE_RELAY, "c1", good.der, good.size, EINVAL, "role" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                IssuedCertificate c = { .n_chain = 77 };
                _cleanup_free_ uint8_t *spki = NULL;
                size_t spki_size = 0;
                const char *reason = NULL;

                CASE("%s", table[i].name);
                ASSERT_ERROR(controller_ca_issue(e.ca, table[i].role, table[i].id, table[i].csr,
                                     table[i].size, T0, &c, &reason),
                        table[i].error);
                ASSERT_STRSTR(reason, table[i].reason);
                /* Untouched on failure. */
                ASSERT_EQ(c.n_chain, 77);
                ASSERT_NULL(c.chain[0]);

                /* The same CSR checks, on their own (ids and roles aside). */
                if (!streq(table[i].reason, "invalid agent id") && !streq(table[i].reason, "role")) {
                        reason = NULL;
                        ASSERT_ERROR(controller_ca_csr_public_key(table[i].csr, table[i].size, &spki,
                                                                  &spki_size, &reason), table[i].error);
                        ASSERT_STREQ(reason, table[i].reason);
                        ASSERT_NULL(spki);
                }
        }

        /* 128 characters is the longest id. */
        CASE("longest id");
        _cleanup_(issued_certificate_done) IssuedCertificate c = {};
        long_id[ZTNA_ID_MAX] = '\0';
        issue(&e, SPIFFE_ROLE_TUNNELER, long_id, &good, T0, &c);
}

TEST(csr_public_key) {
        static const KeyType types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                _cleanup_(csr_done) Csr csr = csr_make(types[t]);
                _cleanup_free_ uint8_t *spki = NULL, *expected = NULL;
                size_t spki_size = 0, expected_size = 0;
                const char *reason = "unset";

                CASE("%s", key_type_to_string(types[t]));
                ASSERT_OK(controller_ca_csr_public_key(csr.der, csr.size, &spki, &spki_size, &reason));
                ASSERT_STREQ(reason, "unset");
                ASSERT_OK(crypto_key_public_to_der(csr.key, &expected, &expected_size));
                ASSERT_EQ(spki_size, expected_size);
                ASSERT_MEMEQ(spki, expected, spki_size);
        }
}

TEST(verify_signature) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *other = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        _cleanup_free_ uint8_t *spki = NULL, *other_spki = NULL, *sig = NULL;
        _cleanup_(openssl_freep) unsigned char *rsa_spki = NULL;
        size_t spki_size = 0, other_size = 0, sig_size = 0;
        int rsa_size;
        static const char msg[] = "challenge 0123456789";

        ASSERT_OK(crypto_key_generate(KEY_TYPE_ECDSA_P256, &key));
        ASSERT_OK(crypto_key_generate(KEY_TYPE_ED25519, &other));
        ASSERT_OK(crypto_key_public_to_der(key, &spki, &spki_size));
        ASSERT_OK(crypto_key_public_to_der(other, &other_spki, &other_size));
        ASSERT_OK(crypto_key_sign(key, msg, strlen(msg), &sig, &sig_size));
        ASSERT_NOT_NULL(rsa);
        rsa_size = i2d_PUBKEY(rsa, &rsa_spki);
        ASSERT_GT(rsa_size, 0);

        ASSERT_OK(controller_ca_verify_signature(spki, spki_size, msg, strlen(msg), sig, sig_size));
        CASE("other data");
        ASSERT_ERROR(controller_ca_verify_signature(spki, spki_size, msg, strlen(msg) - 1, sig, sig_size),
                     EBADMSG);
        CASE("other key");
        ASSERT_ERROR(controller_ca_verify_signature(other_spki, other_size, msg, strlen(msg), sig, sig_size),
                     EBADMSG);
        CASE("truncated signature");
        ASSERT_ERROR(controller_ca_verify_signature(spki, spki_size, msg, strlen(msg), sig, sig_size - 1),
                     EBADMSG);
        CASE("no signature");
        ASSERT_ERROR(controller_ca_verify_signature(spki, spki_size, msg, strlen(msg), sig, 0), EBADMSG);
        CASE("malformed key");
        ASSERT_ERROR(controller_ca_verify_signature(spki, spki_size - 1, msg, strlen(msg), sig, sig_size),
                     EINVAL);
        CASE("no key");
        ASSERT_ERROR(controller_ca_verify_signature(spki, 0, msg, strlen(msg), sig, sig_size), EINVAL);
        CASE("RSA key");
        ASSERT_ERROR(controller_ca_verify_signature(rsa_spki, (size_t) rsa_size, msg, strlen(msg), sig,
                                                    sig_size), EOPNOTSUPP);
}

/* The server certificate */

static bool sans_get(X509 *cert, char ***ret_uris, char ***ret_dns, char ***ret_ips) {
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names =
                X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
        char **uris = NULL, **dns = NULL, **ips = NULL;

        ASSERT_NOT_NULL(names);
        for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
                const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
                char buf[INET6_ADDRSTRLEN];
                const ASN1_STRING *s;

                switch (g->type) {
                case GEN_URI:
                case GEN_DNS:
                        s = g->type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
                        ASSERT_OK(strv_consume(g->type == GEN_URI ? &uris : &dns,
                                               strndup((const char *) ASN1_STRING_get0_data(s),
                                                       ASN1_STRING_length(s))));
                        break;
                case GEN_IPADD:
                        s = g->d.iPAddress;
                        ASSERT_NOT_NULL(inet_ntop(ASN1_STRING_length(s) == 4 ? AF_INET : AF_INET6,
                                                  ASN1_STRING_get0_data(s), buf, sizeof(buf)));
                        ASSERT_OK(strv_extend(&ips, buf));
                        break;
                default:
                        test_fail(__FILE__, __LINE__, "Unexpected SAN type %d", g->type);
                }
        }
        *ret_uris = uris;
        *ret_dns = dns;
        *ret_ips = ips;
        return true;
}

static TlsContext *client_context(usec_t now) {
        TlsContext *c = NULL;

        ASSERT_OK(tls_context_new(TLS_MODE_CLIENT, &c));
        ASSERT_OK(tls_context_set_peer_policy(c, &(TlsPeerPolicy) { .role = SPIFFE_ROLE_CONTROLLER }));
        tls_context_set_clock(c, now);
        return c;
}

/* A TLS handshake against the controller's identity at now; returns the server certificate the client saw
 * (a new reference). */
static X509 *handshake(Env *e, TlsContext *client, usec_t now, int *ret_result) {
        _cleanup_(tls_context_unrefp) TlsContext *server = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        FixtureHandshake h[2];
        X509 *peer;

        (void) signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&event));
        ASSERT_OK(tls_context_new(TLS_MODE_SERVER, &server));
        ASSERT_OK(tls_context_set_client_certificate_required(server, false));
        tls_context_set_clock(server, now);
        ASSERT_OK(controller_ca_apply_tls(e->ca, server));

        fixture_tls_handshake(event, server, client, h);
        *ret_result = h[1].result;
        peer = crypto_x509_ref(tls_connection_get_peer_certificate(h[1].conn));
        tls_connection_free(h[0].conn);
        tls_connection_free(h[1].conn);
        return peer;
}

TEST(server_certificate) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(tls_context_unrefp) TlsContext *by_bundle = NULL, *by_pin = NULL, *by_other_pin = NULL;
        _cleanup_(X509_freep) X509 *seen = NULL, *seen_pinned = NULL, *nothing = NULL;
        _cleanup_strv_free_ char **uris = NULL, **dns = NULL, **ips = NULL;
        uint8_t pin[32], wrong_pin[32];
        usec_t next = 0, nb, na;
        int result;

        env_init(&e);
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), 0);
        {
                _cleanup_(tls_context_unrefp) TlsContext *ctx = NULL;

                ASSERT_OK(tls_context_new(TLS_MODE_SERVER, &ctx));
                ASSERT_ERROR(controller_ca_apply_tls(e.ca, ctx), ENOENT);
        }

        ASSERT_EQ(maintain(&e, T0, &next), CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), T0 + SERVER_LIFETIME);
        /* The next thing due is the server certificate's renewal with 30 % left. */
        ASSERT_UEQ(next, T0 + SERVER_RENEW);

        by_bundle = client_context(T0 + MIN_);
        ASSERT_OK(tls_context_set_trust_bundle(by_bundle, controller_ca_get_bundle(e.ca)));
        seen = handshake(&e, by_bundle, T0 + MIN_, &result);
        ASSERT_EQ(result, 0);
        ASSERT_NOT_NULL(seen);

        ASSERT_TRUE(sans_get(seen, &uris, &dns, &ips));
        ASSERT_EQ(strv_length(uris), 1);
        ASSERT_STREQ(uris[0], "spiffe://" TD "/controller/controller-1");
        ASSERT_EQ(strv_length(dns), 1);
        ASSERT_STREQ(dns[0], "ctl.example.org");
        ASSERT_EQ(strv_length(ips), 2);
        ASSERT_STREQ(ips[0], "192.0.2.10");
        ASSERT_STREQ(ips[1], "2001:db8::1");
        ASSERT_OK(crypto_x509_get_validity(seen, &nb, &na));
        ASSERT_UEQ(na, T0 + SERVER_LIFETIME);
        ASSERT_UEQ(nb, T0 - CA_BACKDATE_USEC);

        /* Root-pinning enrollment clients get the root in the chain. */
        controller_ca_get_root_pin(e.ca, pin);
        by_pin = client_context(T0 + MIN_);
        ASSERT_OK(tls_context_set_root_pin(by_pin, pin));
        seen_pinned = handshake(&e, by_pin, T0 + MIN_, &result);
        ASSERT_EQ(result, 0);
        ASSERT_EQ(X509_cmp(seen, seen_pinned), 0);

        memcpy(wrong_pin, pin, 32);
        wrong_pin[0] ^= 1;
        by_other_pin = client_context(T0 + MIN_);
        ASSERT_OK(tls_context_set_root_pin(by_other_pin, wrong_pin));
        nothing = handshake(&e, by_other_pin, T0 + MIN_, &result);
        ASSERT_LT(result, 0);
}

TEST(server_certificate_renewal) {
        _cleanup_(env_done) Env e = {};
        usec_t next = 0;

        env_init(&e);
        ASSERT_EQ(maintain(&e, T0, &next), CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(next, T0 + SERVER_RENEW);

        CASE("a second before renewal");
        ASSERT_EQ(maintain(&e, T0 + SERVER_RENEW - USEC_PER_SEC, &next), 0);
        ASSERT_UEQ(next, T0 + SERVER_RENEW);
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), T0 + SERVER_LIFETIME);

        CASE("at renewal");
        ASSERT_EQ(maintain(&e, T0 + SERVER_RENEW, &next), CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), T0 + SERVER_RENEW + SERVER_LIFETIME);
        ASSERT_UEQ(next, T0 + 2 * SERVER_RENEW);

        CASE("a restart issues a new one");
        env_restart(&e, T0 + SERVER_RENEW + MIN_);
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), 0);
        ASSERT_EQ(maintain(&e, T0 + SERVER_RENEW + MIN_, NULL), CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), T0 + SERVER_RENEW + MIN_ + SERVER_LIFETIME);
}

/* Issuing CA rotation */

TEST(issuing_rotation) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows before = {}, after = {}, later = {};
        _cleanup_(issued_certificate_done) IssuedCertificate old_leaf = {}, new_leaf = {};
        _cleanup_(csr_done) Csr csr = csr_make(KEY_TYPE_ECDSA_P256);
        usec_t rotate = T0 + ISSUING_ROTATE, next = 0;
        StoreCa *old_issuing, *new_issuing, *root;

        env_init(&e);
        maintain(&e, T0, NULL);
        before = rows_get(e.store);
        old_issuing = rows_one(&before, STORE_CA_ISSUING, STORE_CA_ACTIVE);
        root = rows_one(&before, STORE_CA_ROOT, STORE_CA_ACTIVE);
        issue(&e, SPIFFE_ROLE_CONNECTOR, "c1", &csr, rotate - MIN_, &old_leaf);

        CASE("a second early");
        ASSERT_EQ(maintain(&e, rotate - USEC_PER_SEC, &next) & CONTROLLER_CA_CHANGED_ISSUER, 0);
        ASSERT_UEQ(next, rotate);

        CASE("due");
        ASSERT_EQ(maintain(&e, rotate, &next), CONTROLLER_CA_CHANGED_ISSUER | CONTROLLER_CA_CHANGED_SERVER);
        after = rows_get(e.store);
        ASSERT_EQ(after.n, 3);
        ASSERT_MEMEQ(rows_one(&after, STORE_CA_ISSUING, STORE_CA_RETIRING)->fingerprint,
                old_issuing->fingerprint, 32);
        new_issuing = rows_one(&after, STORE_CA_ISSUING, STORE_CA_ACTIVE);
        ASSERT_MEMEQ(new_issuing->parent, root->fingerprint, 32);
        ASSERT_UEQ(new_issuing->created_at, rotate);
        ASSERT_UEQ(new_issuing->not_after, rotate + ISSUING_LIFETIME);
        /* Next: the server's renewal (its issuer changed, so it is new), before the old CA's expiry. */
        ASSERT_UEQ(next, rotate + SERVER_RENEW);
        ASSERT_EQ(trust_bundle_size(controller_ca_get_bundle(e.ca)), 1);

        /* The leaf from before still verifies: it carries its own chain. New leaves come from the new CA. */
        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &old_leaf, rotate, NULL), 0);
        issue(&e, SPIFFE_ROLE_CONNECTOR, "c1", &csr, rotate, &new_leaf);
        ASSERT_MEMEQ(new_leaf.chain[1], new_issuing->certificate, new_issuing->certificate_size);
        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &new_leaf, rotate, NULL), 0);

        CASE("restart");
        env_restart(&e, rotate + MIN_);
        issued_certificate_done(&new_leaf);
        issue(&e, SPIFFE_ROLE_CONNECTOR, "c1", &csr, rotate + MIN_, &new_leaf);
        ASSERT_MEMEQ(new_leaf.chain[1], new_issuing->certificate, new_issuing->certificate_size);
        ASSERT_EQ(maintain(&e, rotate + MIN_, NULL), CONTROLLER_CA_CHANGED_SERVER);

        CASE("the old issuing CA retires once expired");
        ASSERT_EQ(maintain(&e, old_issuing->not_after - USEC_PER_SEC, &next) & CONTROLLER_CA_CHANGED_ISSUER,
                0);
        later = rows_get(e.store);
        ASSERT_EQ(rows_count(&later, STORE_CA_ISSUING, STORE_CA_RETIRING), 1);
        ASSERT_UEQ(next, old_issuing->not_after);
        rows_done(&later);
        maintain(&e, old_issuing->not_after, NULL);
        later = rows_get(e.store);
        ASSERT_EQ(rows_count(&later, STORE_CA_ISSUING, STORE_CA_RETIRING), 0);
        ASSERT_EQ(rows_count(&later, STORE_CA_ISSUING, STORE_CA_RETIRED), 1);
        ASSERT_MEMEQ(rows_one(&later, STORE_CA_ISSUING, STORE_CA_ACTIVE)->fingerprint,
                new_issuing->fingerprint, 32);
}

TEST(issuing_rotation_interrupted) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows before = {}, after = {};
        _cleanup_(csr_done) Csr csr = csr_make(KEY_TYPE_ECDSA_P256);
        IssuedCertificate c = {};
        const char *reason = NULL;
        uint8_t wrong[KEK_SIZE];
        StoreCa *old_issuing;

        env_init(&e);
        maintain(&e, T0, NULL);
        before = rows_get(e.store);
        old_issuing = rows_one(&before, STORE_CA_ISSUING, STORE_CA_ACTIVE);

        /* The crash: the old issuing CA was retired, the new one never stored. */
        ASSERT_OK(store_ca_set_state(e.store, old_issuing->fingerprint, STORE_CA_RETIRING));

        CASE("a wrong KEK is still found at load");
        kek_fill(wrong, 9);
        ASSERT_ERROR(load_error(&e, wrong, &reason), EKEYREJECTED);
        ASSERT_STRSTR(reason, "root CA");

        CASE("load copes");
        env_restart(&e, T0 + MIN_);
        ASSERT_ERROR(controller_ca_issue(e.ca, SPIFFE_ROLE_CONNECTOR, "c1", csr.der, csr.size, T0 + MIN_, &c,
                                         &reason), EAGAIN);
        ASSERT_STRSTR(reason, "not ready");

        CASE("maintain completes the rotation");
        ASSERT_EQ(
                maintain(&e, T0 + MIN_, NULL), CONTROLLER_CA_CHANGED_ISSUER | CONTROLLER_CA_CHANGED_SERVER);
        after = rows_get(e.store);
        ASSERT_MEMEQ(rows_one(&after, STORE_CA_ISSUING, STORE_CA_RETIRING)->fingerprint,
                old_issuing->fingerprint, 32);
        ASSERT_MEMEQ(rows_one(&after, STORE_CA_ISSUING, STORE_CA_ACTIVE)->parent,
                     rows_one(&after, STORE_CA_ROOT, STORE_CA_ACTIVE)->fingerprint, 32);
        issue(&e, SPIFFE_ROLE_CONNECTOR, "c1", &csr, T0 + MIN_, &c);
        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &c, T0 + MIN_, NULL), 0);
        issued_certificate_done(&c);
}

/* Root rotation */

static void check_bundle_der(Env *e, size_t expected) {
        uint8_t **a = NULL;
        size_t *sizes = NULL, n = 0;

        ASSERT_OK(controller_ca_get_bundle_der(e->ca, &a, &sizes, &n));
        ASSERT_EQ(n, expected);
        ASSERT_EQ(trust_bundle_size(controller_ca_get_bundle(e->ca)), expected);
        for (size_t i = 0; i < n; i++) {
                uint8_t fp[32];

                fingerprint_of_der(a[i], sizes[i], fp);
                ASSERT_TRUE(bundle_has(controller_ca_get_bundle(e->ca), fp));
        }
        controller_ca_der_array_free(a, sizes, n);
}

TEST(root_rotation) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows r0 = {}, r1 = {}, r2 = {}, r3 = {};
        _cleanup_(issued_certificate_done) IssuedCertificate old_leaf = {}, new_leaf = {};
        _cleanup_(csr_done) Csr csr = csr_make(KEY_TYPE_ECDSA_P256);
        usec_t t1 = T0 + 30 * MIN_, step2 = t1 + LONGEST, step3 = step2 + LONGEST, next = 0;
        uint8_t old_root[32], new_root[32], old_issuing[32], pin[32];
        StoreCa *row;

        env_init(&e);
        maintain(&e, T0, NULL);
        r0 = rows_get(e.store);
        memcpy(old_root, rows_one(&r0, STORE_CA_ROOT, STORE_CA_ACTIVE)->fingerprint, 32);
        memcpy(old_issuing, rows_one(&r0, STORE_CA_ISSUING, STORE_CA_ACTIVE)->fingerprint, 32);
        check_bundle_der(&e, 1);

        CASE("step 1");
        ASSERT_OK(controller_ca_rotate_root(e.ca, t1));
        ASSERT_TRUE(controller_ca_rotation_in_progress(e.ca));
        ASSERT_ERROR(controller_ca_rotate_root(e.ca, t1), EBUSY);
        r1 = rows_get(e.store);
        row = rows_one(&r1, STORE_CA_ROOT, STORE_CA_STAGED);
        memcpy(new_root, row->fingerprint, 32);
        ASSERT_UEQ(row->created_at, t1);
        ASSERT_UEQ(row->not_after, t1 + ROOT_LIFETIME);
        ASSERT_TRUE(envelope_is_sealed(row->sealed_key, row->sealed_key_size));
        check_bundle_der(&e, 2);
        ASSERT_TRUE(bundle_has(controller_ca_get_bundle(e.ca), new_root));
        /* Reported by the next maintenance, with the server renewal that is due by then. */
        ASSERT_EQ(maintain(&e, t1, &next), CONTROLLER_CA_CHANGED_BUNDLE | CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(next, MIN(step2, t1 + SERVER_RENEW));
        /* Still issuing under the old root, which still is what clients pin. */
        controller_ca_get_root_pin(e.ca, pin);
        ASSERT_MEMEQ(pin, old_root, 32);
        issue(&e, SPIFFE_ROLE_TUNNELER, "t1", &csr, step2 - MIN_, &old_leaf);

        CASE("restart after step 1");
        env_restart(&e, t1 + MIN_);
        ASSERT_TRUE(controller_ca_rotation_in_progress(e.ca));
        check_bundle_der(&e, 2);
        ASSERT_ERROR(controller_ca_rotate_root(e.ca, t1 + MIN_), EBUSY);
        ASSERT_EQ(maintain(&e, step2 - USEC_PER_SEC, &next), CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(next, step2);

        CASE("step 2");
        ASSERT_EQ(maintain(&e, step2, &next), CONTROLLER_CA_CHANGED_ISSUER | CONTROLLER_CA_CHANGED_SERVER);
        r2 = rows_get(e.store);
        ASSERT_MEMEQ(rows_one(&r2, STORE_CA_ROOT, STORE_CA_ACTIVE)->fingerprint, new_root, 32);
        ASSERT_MEMEQ(rows_one(&r2, STORE_CA_ROOT, STORE_CA_RETIRING)->fingerprint, old_root, 32);
        ASSERT_MEMEQ(rows_one(&r2, STORE_CA_ISSUING, STORE_CA_RETIRING)->fingerprint, old_issuing, 32);
        row = rows_one(&r2, STORE_CA_ISSUING, STORE_CA_ACTIVE);
        ASSERT_MEMEQ(row->parent, new_root, 32);
        ASSERT_UEQ(row->created_at, step2);
        check_bundle_der(&e, 2);
        ASSERT_TRUE(controller_ca_rotation_in_progress(e.ca));
        ASSERT_ERROR(controller_ca_rotate_root(e.ca, step2), EBUSY);
        controller_ca_get_root_pin(e.ca, pin);
        ASSERT_MEMEQ(pin, new_root, 32);
        ASSERT_UEQ(next, MIN(step3, step2 + SERVER_RENEW));

        /* Leaves under both roots verify against the bundle; new ones chain to the new root. */
        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &old_leaf, step2, NULL), 0);
        issue(&e, SPIFFE_ROLE_TUNNELER, "t1", &csr, step2, &new_leaf);
        ASSERT_MEMEQ(new_leaf.chain[1], row->certificate, row->certificate_size);
        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &new_leaf, step2, NULL), 0);

        CASE("restart after step 2");
        env_restart(&e, step2 + MIN_);
        ASSERT_TRUE(controller_ca_rotation_in_progress(e.ca));
        check_bundle_der(&e, 2);
        ASSERT_EQ(maintain(&e, step3 - USEC_PER_SEC, &next), CONTROLLER_CA_CHANGED_SERVER);
        ASSERT_UEQ(next, step3);

        CASE("step 3");
        ASSERT_EQ(maintain(&e, step3, &next), CONTROLLER_CA_CHANGED_BUNDLE);
        r3 = rows_get(e.store);
        ASSERT_MEMEQ(rows_one(&r3, STORE_CA_ROOT, STORE_CA_RETIRED)->fingerprint, old_root, 32);
        ASSERT_MEMEQ(rows_one(&r3, STORE_CA_ISSUING, STORE_CA_RETIRED)->fingerprint, old_issuing, 32);
        ASSERT_MEMEQ(rows_one(&r3, STORE_CA_ROOT, STORE_CA_ACTIVE)->fingerprint, new_root, 32);
        ASSERT_EQ(rows_count(&r3, STORE_CA_ROOT, STORE_CA_RETIRING), 0);
        check_bundle_der(&e, 1);
        ASSERT_TRUE(bundle_has(controller_ca_get_bundle(e.ca), new_root));
        ASSERT_FALSE(bundle_has(controller_ca_get_bundle(e.ca), old_root));
        ASSERT_FALSE(controller_ca_rotation_in_progress(e.ca));
        /* The old root's leaves no longer chain (they have expired anyway), the new ones do. */
        ASSERT_ERROR(verify_issued(controller_ca_get_bundle(e.ca), &old_leaf, step2, NULL), ENOKEY);
        ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &new_leaf, step2, NULL), 0);

        CASE("restart after step 3");
        env_restart(&e, step3 + MIN_);
        ASSERT_FALSE(controller_ca_rotation_in_progress(e.ca));
        check_bundle_der(&e, 1);
        ASSERT_EQ(maintain(&e, step3 + MIN_, NULL), CONTROLLER_CA_CHANGED_SERVER);

        CASE("another rotation may start");
        ASSERT_OK(controller_ca_rotate_root(e.ca, step3 + 2 * MIN_));
        check_bundle_der(&e, 2);
}

TEST(root_rotation_interrupted_in_step_2) {
        /* Crashes after the first and after the second write of step 2 (controller-ca.c). */
        for (unsigned writes = 1; writes <= 2; writes++) {
                _cleanup_(env_done) Env e = {};
                _cleanup_(rows_done) Rows r1 = {}, r2 = {};
                _cleanup_(issued_certificate_done) IssuedCertificate c = {};
                _cleanup_(csr_done) Csr csr = csr_make(KEY_TYPE_ED25519);
                usec_t t1 = T0 + 30 * MIN_, crash = t1 + 5 * MIN_;
                uint8_t old_root[32], new_root[32], old_issuing[32];
                StoreCa *row;

                CASE("after write %u", writes);
                env_init(&e);
                maintain(&e, T0, NULL);
                ASSERT_OK(controller_ca_rotate_root(e.ca, t1));
                r1 = rows_get(e.store);
                memcpy(old_root, rows_one(&r1, STORE_CA_ROOT, STORE_CA_ACTIVE)->fingerprint, 32);
                memcpy(new_root, rows_one(&r1, STORE_CA_ROOT, STORE_CA_STAGED)->fingerprint, 32);
                memcpy(old_issuing, rows_one(&r1, STORE_CA_ISSUING, STORE_CA_ACTIVE)->fingerprint, 32);

                /* What step 2 had written when the process died (before its due time, even: the store
                 * is what counts). */
                ASSERT_OK(store_ca_set_state(e.store, new_root, STORE_CA_ACTIVE));
                if (writes >= 2)
                        ASSERT_OK(store_ca_set_state(e.store, old_issuing, STORE_CA_RETIRING));

                env_restart(&e, crash);
                ASSERT_TRUE(controller_ca_rotation_in_progress(e.ca));
                ASSERT_ERROR(controller_ca_rotate_root(e.ca, crash), EBUSY);
                check_bundle_der(&e, 2);

                ASSERT_EQ(maintain(&e, crash, NULL) & CONTROLLER_CA_CHANGED_ISSUER,
                        CONTROLLER_CA_CHANGED_ISSUER);
                r2 = rows_get(e.store);
                ASSERT_MEMEQ(rows_one(&r2, STORE_CA_ROOT, STORE_CA_ACTIVE)->fingerprint, new_root, 32);
                ASSERT_MEMEQ(rows_one(&r2, STORE_CA_ROOT, STORE_CA_RETIRING)->fingerprint, old_root, 32);
                ASSERT_MEMEQ(
                        rows_one(&r2, STORE_CA_ISSUING, STORE_CA_RETIRING)->fingerprint, old_issuing, 32);
                row = rows_one(&r2, STORE_CA_ISSUING, STORE_CA_ACTIVE);
                ASSERT_MEMEQ(row->parent, new_root, 32);

                issue(&e, SPIFFE_ROLE_CONNECTOR, "c9", &csr, crash, &c);
                ASSERT_EQ(verify_issued(controller_ca_get_bundle(e.ca), &c, crash, NULL), 0);

                /* Step 3 counts from the new issuing CA's creation. */
                ASSERT_EQ(maintain(&e, crash + LONGEST - USEC_PER_SEC, NULL) & CONTROLLER_CA_CHANGED_BUNDLE,
                        0);
                ASSERT_EQ(maintain(&e, crash + LONGEST, NULL) & CONTROLLER_CA_CHANGED_BUNDLE,
                          CONTROLLER_CA_CHANGED_BUNDLE);
                check_bundle_der(&e, 1);
                ASSERT_FALSE(controller_ca_rotation_in_progress(e.ca));
        }
}

TEST(maintain_without_outputs) {
        _cleanup_(env_done) Env e = {};

        env_init(&e);
        /* Both outputs may be NULL. */
        ASSERT_OK(controller_ca_maintain(e.ca, T0, NULL, NULL));
        ASSERT_UEQ(controller_ca_get_server_not_after(e.ca), T0 + SERVER_LIFETIME);
}

/* Unused enrollment tokens pin the old root: step 2 waits for the last one that could still be used, and
 * a revoked or used token does not hold it back. */
TEST(root_rotation_waits_for_tokens) {
        _cleanup_(env_done) Env e = {};
        _cleanup_(rows_done) Rows r = {};
        usec_t t1 = T0 + 30 * MIN_, step2 = t1 + LONGEST, hold = step2 + 2 * LONGEST, next = 0;
        uint8_t old_root[32], pin[32];
        StoreToken tok = {
                .role = SPIFFE_ROLE_TUNNELER,
                .created_by = (char *) "root",
                .created_at = T0,
                .expires_at = hold,
        };
        StoreToken revoked = tok;

        env_init(&e);
        maintain(&e, T0, NULL);
        controller_ca_get_root_pin(e.ca, old_root);
        memset(tok.id, 0x11, sizeof(tok.id));
        memset(tok.secret_hash, 0x33, sizeof(tok.secret_hash));
        memset(revoked.id, 0x22, sizeof(revoked.id));
        memset(revoked.secret_hash, 0x44, sizeof(revoked.secret_hash));
        revoked.expires_at = hold + 10 * LONGEST;
        ASSERT_OK(store_token_create(e.store, &tok));
        ASSERT_OK(store_token_create(e.store, &revoked));
        ASSERT_OK(store_token_revoke(e.store, revoked.id, T0 + MIN_));

        ASSERT_OK(controller_ca_rotate_root(e.ca, t1));
        maintain(&e, t1, &next);
        ASSERT_TRUE(next <= hold);

        CASE("not at the usual step 2 time while a token can still be used");
        maintain(&e, step2, &next);
        controller_ca_get_root_pin(e.ca, pin);
        ASSERT_MEMEQ(pin, old_root, 32);
        r = rows_get(e.store);
        ASSERT_NOT_NULL(rows_one(&r, STORE_CA_ROOT, STORE_CA_STAGED));
        ASSERT_TRUE(next <= hold);

        CASE("once it expired");
        maintain(&e, hold, &next);
        controller_ca_get_root_pin(e.ca, pin);
        ASSERT_FALSE(memcmp(pin, old_root, 32) == 0);
}
