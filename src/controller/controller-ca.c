/* SPDX-License-Identifier: Apache-2.0 */

/* The CA's state lives in the store; this module keeps a snapshot of the rows and re-reads them after
 * every change it writes, so what it uses is always what a restart would find. Every multi-write
 * operation is ordered so that each intermediate state is one that load + maintain completes:
 *
 *   issuing rotation   new CA generated in memory → old ACTIVE → RETIRING → new one stored ACTIVE
 *                      (a crash in between leaves no active issuing CA: load accepts that as "rotation
 *                      interrupted" and maintain creates one under the current root)
 *   root step 2        staged root → ACTIVE (two active roots: the newer one is current) → issuing
 *                      rotation as above, under the new root → old root → RETIRING
 *   root step 3        the old root's issuing CAs → RETIRED → the old root → RETIRED
 *
 * No OpenSSL here (STYLE.md): certificates and keys are opaque handles for the crypto-* APIs. */

#include <assert.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>

#include "controller-ca.h"
#include "crypto-ca.h"
#include "crypto-csr.h"
#include "crypto-envelope.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "hexdecoct.h"
#include "log.h"
#include "parse-util.h"
#include "strv.h"

#define META_TRUST_DOMAIN "trust_domain"
/* Sealed keys are bound to their certificate (controller-ca.h). */
#define CA_KEY_AAD_PREFIX "ztna controller ca "
#define CA_KEY_AAD_SIZE (STRLEN(CA_KEY_AAD_PREFIX) + 2 * SHA256_DIGEST_SIZE + 1)
/* CA rows a store may hold: an issuing CA every 20 days for a century is ~1800. */
#define CA_ROWS_MAX 4096U
/* Store-changing steps in one maintenance pass; a root rotation's step 2 takes three. Beyond it something
 * keeps undoing our writes, and looping on would not help. */
#define CA_MAINTAIN_STEPS_MAX 16U
/* The server certificate is renewed once this share of its lifetime is left (DESIGN.md §3). */
#define SERVER_RENEW_PERCENT 30U

_Static_assert(KEK_SIZE == ENVELOPE_KEY_SIZE, "the KEK is the envelope key");
_Static_assert(CRYPTO_SPKI_SHA256_SIZE == sizeof(((StoreCa *) NULL)->fingerprint), "fingerprint size");

typedef struct CaEntry {
        StoreCa *row;
        X509 *cert;             /* NULL for RETIRED rows, which are never used */
} CaEntry;

typedef struct CaState {
        CaEntry *entries;
        size_t n_entries;
        TrustBundle *bundle;            /* roots that are STAGED, ACTIVE or RETIRING */
        CaEntry *root;                  /* the current root: the newest ACTIVE one */
        CaEntry *old_root;              /* an older ACTIVE root while step 2 is under way */
        CaEntry *staged_root;
        CaEntry *retiring_root;
        CaEntry *issuing;               /* the ACTIVE issuing CA; NULL after an interrupted rotation */
        CertificateAuthority *issuing_ca; /* its certificate and unsealed key */
} CaState;

struct ControllerCa {
        Store *store;
        const ControllerConfig *config;
        uint8_t kek[KEK_SIZE];
        char *trust_domain;

        CaState state;
        /* ControllerCaChange bits not yet reported by controller_ca_maintain(). */
        unsigned pending_changes;
        /* Latest expiry of an enrollment token that can still be used (0: none), as of the last maintain. */
        usec_t tokens_until;

        /* The server certificate: in memory only, issued anew at every start. */
        X509 *server_cert;
        EVP_PKEY *server_key;
        X509 *server_issuer, *server_root;
        uint8_t server_issuer_fingerprint[SHA256_DIGEST_SIZE];
        uint8_t server_root_fingerprint[SHA256_DIGEST_SIZE];
        usec_t server_issued_at, server_not_after;
};

static usec_t now_or(usec_t t) {
        return t > 0 ? t : now(CLOCK_REALTIME);
}

/* After it has passed, every leaf issued before has expired, and every live agent has renewed at least
 * once (agents renew with 30 % left). */
static usec_t longest_leaf_lifetime(const ControllerConfig *c) {
        return MAX(MAX(c->connector_lifetime, c->tunneler_lifetime), c->server_lifetime);
}

static bool fingerprint_equal(const uint8_t a[static SHA256_DIGEST_SIZE],
                              const uint8_t b[static SHA256_DIGEST_SIZE]) {
        return memcmp(a, b, SHA256_DIGEST_SIZE) == 0;
}

static void key_aad(const uint8_t fingerprint[static SHA256_DIGEST_SIZE], char ret[static CA_KEY_AAD_SIZE]) {
        char *p = ret;

        p = mempcpy(p, CA_KEY_AAD_PREFIX, STRLEN(CA_KEY_AAD_PREFIX));
        for (size_t i = 0; i < SHA256_DIGEST_SIZE; i++) {
                *p++ = hexchar(fingerprint[i] >> 4);
                *p++ = hexchar(fingerprint[i]);
        }
        *p = '\0';
}

static int key_seal(const uint8_t kek[static KEK_SIZE], const uint8_t fingerprint[static SHA256_DIGEST_SIZE],
                    EVP_PKEY *key, uint8_t **ret, size_t *ret_size) {
        char aad[CA_KEY_AAD_SIZE];
        uint8_t *der = NULL;
        size_t der_size = 0;
        int r;

        r = crypto_key_to_pkcs8_der(key, &der, &der_size);
        if (r < 0)
                return r;
        key_aad(fingerprint, aad);
        r = envelope_seal(kek, aad, strlen(aad), der, der_size, ret, ret_size);
        crypto_erase_and_free(der, der_size);
        return r;
}

/* The entry's CA with its private key unsealed. -EKEYREJECTED: the KEK (or the AAD, i.e. the key was
 * sealed for another row) does not open it; -ENOKEY: the row has no key; -EBADMSG: anything else is wrong
 * with the key or the certificate. */
static int entry_open(const uint8_t kek[static KEK_SIZE], const CaEntry *e, CertificateAuthority **ret) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        char aad[CA_KEY_AAD_SIZE];
        uint8_t *der = NULL;
        size_t der_size = 0;
        int r;

        assert(e->cert);

        if (!e->row->sealed_key)
                return log_debug_errno(ENOKEY, "CA row has no sealed key.");

        key_aad(e->row->fingerprint, aad);
        r = envelope_open(kek, aad, strlen(aad), e->row->sealed_key, e->row->sealed_key_size, &der,
                          &der_size);
        if (r == -EKEYREJECTED || r == -ENOMEM)
                return r;
        if (r < 0)
                return log_debug_errno(EBADMSG, "Sealed CA key is not a valid envelope: %s",
                                       strerror(-r));

        r = crypto_key_from_pkcs8_der(der, der_size, &key);
        crypto_erase_and_free(der, der_size + 1);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return log_debug_errno(EBADMSG, "Sealed CA key is not a usable private key: %s",
                                       strerror(-r));

        r = ca_load(e->cert, key, NULL, ret);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return log_debug_errno(EBADMSG, "CA certificate and its key do not form a CA: %s",
                                       strerror(-r));
        return 0;
}

/* A store row for a new CA, its key sealed. */
static int row_new(const CertificateAuthority *c, StoreCaKind kind, StoreCaState state,
                   const uint8_t *parent, usec_t created_at, const uint8_t kek[static KEK_SIZE],
                   StoreCa **ret) {
        _cleanup_(store_ca_freep) StoreCa *row = NULL;
        X509 *cert = ca_get_certificate(c);
        int r;

        row = calloc(1, sizeof(*row));
        if (!row)
                return -ENOMEM;
        row->kind = kind;
        row->state = state;
        row->created_at = created_at;
        if (parent)
                memcpy(row->parent, parent, sizeof(row->parent));

        r = crypto_x509_spki_sha256(cert, row->fingerprint);
        if (r < 0)
                return r;
        r = crypto_x509_to_der(cert, &row->certificate, &row->certificate_size);
        if (r < 0)
                return r;
        r = crypto_x509_get_validity(cert, &row->not_before, &row->not_after);
        if (r < 0)
                return r;
        r = key_seal(kek, row->fingerprint, ca_get_key(c), &row->sealed_key, &row->sealed_key_size);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(row);
        return 0;
}

static void ca_state_done(CaState *s) {
        for (size_t i = 0; i < s->n_entries; i++) {
                store_ca_free(s->entries[i].row);
                crypto_x509_unref(s->entries[i].cert);
        }
        free(s->entries);
        trust_bundle_free(s->bundle);
        ca_free(s->issuing_ca);
        *s = (CaState) {};
}

static CaEntry *state_find(const CaState *s, StoreCaKind kind, const uint8_t fp[static SHA256_DIGEST_SIZE]) {
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i].row->kind == kind && fingerprint_equal(s->entries[i].row->fingerprint, fp))
                        return s->entries + i;
        return NULL;
}

/* Orders ACTIVE roots: the newer one is current. Equal creation times only arise from a store edited by
 * hand (controller_ca_rotate_root() keeps them apart); the fingerprint then decides, deterministically. */
static bool entry_is_newer(const CaEntry *a, const CaEntry *b) {
        if (a->row->created_at != b->row->created_at)
                return a->row->created_at > b->row->created_at;
        return memcmp(a->row->fingerprint, b->row->fingerprint, SHA256_DIGEST_SIZE) > 0;
}

/* Reads the CA rows into a new state: parses and cross-checks them, builds the bundle, and unseals the
 * active issuing CA's key unless its fingerprint is keep_issuing (the caller already holds it). */
static int ca_state_load(Store *store, const char *trust_domain, const uint8_t kek[static KEK_SIZE],
                         const uint8_t *keep_issuing, CaState *ret, const char **ret_reason) {
        _cleanup_(ca_state_done) CaState s = {};
        StoreCa **rows = NULL;
        size_t n_rows = 0, n_other_roots;
        const char *reason = NULL;
        int r;

        assert(ret_reason);

        r = store_ca_list(store, &rows, &n_rows);
        if (r < 0) {
                *ret_reason = "cannot read the CA from the store";
                return r;
        }
        if (n_rows > CA_ROWS_MAX) {
                store_ca_array_free(rows, n_rows);
                *ret_reason = "the store holds too many CA rows";
                return -EBADMSG;
        }
        s.entries = calloc(MAX(n_rows, 1U), sizeof(CaEntry));
        if (!s.entries) {
                store_ca_array_free(rows, n_rows);
                *ret_reason = "out of memory";
                return -ENOMEM;
        }
        for (size_t i = 0; i < n_rows; i++)
                s.entries[i].row = TAKE_PTR(rows[i]);
        s.n_entries = n_rows;
        store_ca_array_free(rows, n_rows);

        for (size_t i = 0; i < s.n_entries; i++) {
                CaEntry *e = s.entries + i;
                uint8_t fp[SHA256_DIGEST_SIZE];

                if (e->row->state == STORE_CA_RETIRED)
                        continue;

                r = crypto_x509_from_der(e->row->certificate, e->row->certificate_size, &e->cert);
                if (r == -ENOMEM)
                        goto oom;
                if (r < 0) {
                        *ret_reason = "a CA certificate in the store is malformed";
                        return -EBADMSG;
                }
                r = crypto_x509_spki_sha256(e->cert, fp);
                if (r == -ENOMEM)
                        goto oom;
                if (r < 0 || !fingerprint_equal(fp, e->row->fingerprint)) {
                        *ret_reason = "a CA row's fingerprint does not match its certificate";
                        return -EBADMSG;
                }

                if (e->row->kind == STORE_CA_ISSUING) {
                        if (e->row->state == STORE_CA_ACTIVE)
                                s.issuing = e;
                        continue;
                }

                switch (e->row->state) {
                case STORE_CA_ACTIVE:
                        if (s.old_root) {
                                *ret_reason = "more than two active root CAs";
                                return -EBADMSG;
                        }
                        if (!s.root)
                                s.root = e;
                        else if (entry_is_newer(e, s.root)) {
                                s.old_root = s.root;
                                s.root = e;
                        } else
                                s.old_root = e;
                        break;
                case STORE_CA_STAGED:
                        if (s.staged_root) {
                                *ret_reason = "more than one staged root CA";
                                return -EBADMSG;
                        }
                        s.staged_root = e;
                        break;
                case STORE_CA_RETIRING:
                        if (s.retiring_root) {
                                *ret_reason = "more than one retiring root CA";
                                return -EBADMSG;
                        }
                        s.retiring_root = e;
                        break;
                default:
                        assert(false);
                }
        }

        if (!s.root) {
                *ret_reason = "no active root CA";
                return -EBADMSG;
        }
        /* A rotation has one other root at a time (staged, about to retire, or retiring). */
        n_other_roots = !!s.old_root + !!s.staged_root + !!s.retiring_root;
        if (n_other_roots > 1) {
                *ret_reason = "root CA states are inconsistent";
                return -EBADMSG;
        }

        r = trust_bundle_new(trust_domain, &s.bundle);
        if (r == -ENOMEM)
                goto oom;
        if (r < 0) {
                *ret_reason = "invalid trust domain";
                return r;
        }
        for (size_t i = 0; i < s.n_entries; i++) {
                CaEntry *e = s.entries + i;

                if (e->row->kind != STORE_CA_ROOT || !e->cert)
                        continue;
                r = trust_bundle_add_full(s.bundle, e->cert, &reason);
                if (r == -ENOMEM)
                        goto oom;
                if (r < 0) {
                        log_debug_errno(r, "Root CA refused by the trust bundle: %s", strna(reason));
                        *ret_reason = "a root CA certificate is not valid for the trust domain";
                        return -EBADMSG;
                }
        }

        /* Every issuing CA still in use names a root it was really signed by. */
        for (size_t i = 0; i < s.n_entries; i++) {
                CaEntry *e = s.entries + i, *parent;

                if (e->row->kind != STORE_CA_ISSUING || !e->cert)
                        continue;
                parent = state_find(&s, STORE_CA_ROOT, e->row->parent);
                if (!parent) {
                        *ret_reason = "an issuing CA's root CA is missing";
                        return -EBADMSG;
                }
                if (e != s.issuing)
                        continue;
                if (parent != s.root && parent != s.old_root) {
                        *ret_reason = "the active issuing CA is not under an active root CA";
                        return -EBADMSG;
                }
                r = crypto_x509_check_issued(parent->cert, e->cert);
                if (r == -ENOMEM)
                        goto oom;
                if (r < 0) {
                        *ret_reason = "the active issuing CA was not signed by its root CA";
                        return -EBADMSG;
                }
        }

        /* Unseal the key we are about to use: the active issuing CA's, or after an interrupted rotation
         * the current root's, which will sign the next one. Either way a wrong KEK is found here. */
        if (!s.issuing || !keep_issuing || !fingerprint_equal(keep_issuing, s.issuing->row->fingerprint)) {
                _cleanup_(ca_freep) CertificateAuthority *c = NULL;

                r = entry_open(kek, s.issuing ?: s.root, &c);
                if (r == -ENOMEM)
                        goto oom;
                if (r == -EKEYREJECTED) {
                        *ret_reason = s.issuing ?
                                "the key-encryption key does not open the issuing CA's key" :
                                "the key-encryption key does not open the root CA's key";
                        return r;
                }
                if (r < 0) {
                        *ret_reason = s.issuing ? "the issuing CA's sealed key is damaged" :
                                                  "the root CA's sealed key is missing or damaged";
                        return -EBADMSG;
                }
                if (s.issuing)
                        s.issuing_ca = TAKE_PTR(c);
                /* A root key is used only to sign an issuing CA: dropped (and wiped) right away. */
        }

        *ret = s;
        s = (CaState) {};
        return 0;

oom:
        *ret_reason = "out of memory";
        return -ENOMEM;
}

static bool bundle_equal(const TrustBundle *a, const TrustBundle *b) {
        if (trust_bundle_size(a) != trust_bundle_size(b))
                return false;
        for (size_t i = 0; i < trust_bundle_size(a); i++) {
                uint8_t fp[CRYPTO_SPKI_SHA256_SIZE];

                if (crypto_x509_spki_sha256(trust_bundle_get(a, i), fp) < 0 || !trust_bundle_contains(b, fp))
                        return false;
        }
        return true;
}

/* Re-reads the store after a change (or for the first time), noting what changed for the next
 * controller_ca_maintain(). On failure the previous snapshot stays. */
static int ca_reload(ControllerCa *ca, const char **ret_reason) {
        CaState *old = &ca->state;
        _cleanup_(ca_state_done) CaState s = {};
        const char *reason = NULL;
        bool same_issuing;
        int r;

        r = ca_state_load(ca->store, ca->trust_domain, ca->kek,
                          old->issuing ? old->issuing->row->fingerprint : NULL, &s, &reason);
        if (r < 0) {
                log_debug_errno(r, "Failed to load the CA from the store: %s", reason);
                if (ret_reason)
                        *ret_reason = reason;
                return r;
        }

        same_issuing = old->issuing && s.issuing &&
                fingerprint_equal(old->issuing->row->fingerprint, s.issuing->row->fingerprint);
        if (old->bundle) {
                if (!bundle_equal(old->bundle, s.bundle))
                        ca->pending_changes |= CONTROLLER_CA_CHANGED_BUNDLE;
                if (!same_issuing && s.issuing)
                        ca->pending_changes |= CONTROLLER_CA_CHANGED_ISSUER;
        }
        if (same_issuing)
                s.issuing_ca = TAKE_PTR(old->issuing_ca);

        ca_state_done(old);
        *old = s;
        s = (CaState) {};
        return 0;
}

int controller_ca_exists(Store *store) {
        _cleanup_free_ char *existing = NULL;
        StoreCa **rows = NULL;
        size_t n_rows = 0;
        int r;

        assert(store);

        r = store_meta_get(store, META_TRUST_DOMAIN, &existing);
        if (r >= 0)
                return 1;
        if (r != -ENOENT)
                return r;
        r = store_ca_list(store, &rows, &n_rows);
        if (r < 0)
                return r;
        store_ca_array_free(rows, n_rows);
        return n_rows > 0;
}

int controller_ca_init(Store *store, const ControllerConfig *config, const uint8_t kek[static KEK_SIZE],
                       usec_t now) {
        _cleanup_(ca_freep) CertificateAuthority *root = NULL, *issuing = NULL;
        _cleanup_(store_ca_freep) StoreCa *root_row = NULL, *issuing_row = NULL;
        int r;

        assert(store);
        assert(config);
        assert(kek);

        if (!config->trust_domain || !spiffe_trust_domain_is_valid(config->trust_domain))
                return log_debug_errno(EINVAL, "No valid trust domain configured.");
        if (!key_type_to_string(config->key_type))
                return log_debug_errno(EINVAL, "Invalid CA key type.");
        now = now_or(now);

        /* Refuse before creating anything: existing keys may protect existing agents. */
        r = controller_ca_exists(store);
        if (r < 0)
                return r;
        if (r > 0)
                return log_debug_errno(EEXIST, "The store already holds CA material or a trust domain.");

        r = ca_new_root(config->trust_domain, config->key_type, config->root_ca_lifetime, now, &root);
        if (r < 0)
                return log_debug_errno(r, "Failed to create the root CA: %m");
        r = ca_new_issuing(root, config->key_type, config->issuing_ca_lifetime, now, &issuing);
        if (r < 0)
                return log_debug_errno(r, "Failed to create the issuing CA: %m");

        r = row_new(root, STORE_CA_ROOT, STORE_CA_ACTIVE, NULL, now, kek, &root_row);
        if (r < 0)
                return r;
        r = row_new(issuing, STORE_CA_ISSUING, STORE_CA_ACTIVE, root_row->fingerprint, now, kek,
                    &issuing_row);
        if (r < 0)
                return r;

        /* The trust domain goes last: it marks the initialisation as complete (controller_ca_load()). */
        r = store_ca_put(store, root_row);
        if (r < 0)
                return log_debug_errno(r, "Failed to store the root CA: %m");
        r = store_ca_put(store, issuing_row);
        if (r < 0)
                return log_debug_errno(r, "Failed to store the issuing CA: %m");
        r = store_meta_set(store, META_TRUST_DOMAIN, config->trust_domain);
        if (r < 0)
                return log_debug_errno(r, "Failed to store the trust domain: %m");

        return 0;
}

int controller_ca_load(Store *store, const ControllerConfig *config, const uint8_t kek[static KEK_SIZE],
                       usec_t now, ControllerCa **ret, const char **ret_reason) {
        _cleanup_(controller_ca_freep) ControllerCa *ca = NULL;
        _cleanup_free_ char *trust_domain = NULL;
        const char *reason = NULL;
        int r;

        assert(store);
        assert(config);
        assert(kek);
        assert(ret);

        if (!config->trust_domain) {
                reason = "no trust domain configured";
                r = -EINVAL;
                goto fail;
        }

        r = store_meta_get(store, META_TRUST_DOMAIN, &trust_domain);
        if (r == -ENOENT) {
                StoreCa **rows = NULL;
                size_t n_rows = 0;

                r = store_ca_list(store, &rows, &n_rows);
                if (r < 0) {
                        reason = "cannot read the CA from the store";
                        goto fail;
                }
                store_ca_array_free(rows, n_rows);
                if (n_rows == 0) {
                        reason = "the store is not initialised (run ztna-controller init)";
                        r = -ENOENT;
                } else {
                        reason = "the store holds CA material but no trust domain: ztna-controller init was "
                                 "interrupted (remove the database and run it again)";
                        r = -EBADMSG;
                }
                goto fail;
        }
        if (r < 0) {
                reason = "cannot read the trust domain from the store";
                goto fail;
        }
        if (!streq(trust_domain, config->trust_domain)) {
                log_debug("Store trust domain '%s' differs from the configured '%s'.", trust_domain,
                          config->trust_domain);
                reason = "the store belongs to another trust domain";
                r = -EXDEV;
                goto fail;
        }

        ca = calloc(1, sizeof(*ca));
        if (!ca) {
                reason = "out of memory";
                r = -ENOMEM;
                goto fail;
        }
        ca->store = store;
        ca->config = config;
        memcpy(ca->kek, kek, KEK_SIZE);
        ca->trust_domain = TAKE_PTR(trust_domain);

        r = ca_reload(ca, &reason);
        if (r < 0)
                goto fail;
        if (!ca->state.issuing)
                log_debug("No active issuing CA: a rotation was interrupted, maintenance will complete it.");

        *ret = TAKE_PTR(ca);
        return 0;

fail:
        if (ret_reason)
                *ret_reason = reason;
        return r;
}

ControllerCa *controller_ca_free(ControllerCa *ca) {
        if (!ca)
                return NULL;

        ca_state_done(&ca->state);
        crypto_x509_unref(ca->server_cert);
        EVP_PKEY_freep(&ca->server_key);
        crypto_x509_unref(ca->server_issuer);
        crypto_x509_unref(ca->server_root);
        explicit_bzero_safe(ca->kek, sizeof(ca->kek));
        free(ca->trust_domain);
        return mfree(ca);
}

/* "Less than a third of its lifetime is left", the lifetime counted from creation: notBefore is
 * back-dated (CA_BACKDATE_USEC), which would make a short-lived CA look due at once. */
static usec_t issuing_rotation_due(const StoreCa *row) {
        usec_t lifetime = usec_sub(row->not_after, row->created_at);

        return usec_sub(row->not_after, lifetime / 3);
}

/* Step 3 comes a longest leaf lifetime after the first issuing CA under the current root was created:
 * leaves under the old root were issued until then. */
static usec_t root_step3_due(const ControllerCa *ca) {
        const CaState *s = &ca->state;
        usec_t first = USEC_INFINITY;

        for (size_t i = 0; i < s->n_entries; i++) {
                const StoreCa *row = s->entries[i].row;

                if (row->kind == STORE_CA_ISSUING &&
                    fingerprint_equal(row->parent, s->root->row->fingerprint))
                        first = MIN(first, row->created_at);
        }
        if (first == USEC_INFINITY)
                return USEC_INFINITY;
        return usec_add(first, longest_leaf_lifetime(ca->config));
}

/* Step 2 moves the server certificate to the new root. Unused enrollment tokens pin the old one (the root
 * the server chains to when they were made), so step 2 also waits until every token that could still be
 * used has expired; revoking stale tokens lets a rotation go on sooner. */
static usec_t root_step2_due(const ControllerCa *ca) {
        return MAX(usec_add(ca->state.staged_root->row->created_at, longest_leaf_lifetime(ca->config)),
                   ca->tokens_until);
}

static int tokens_refresh(ControllerCa *ca, usec_t now) {
        StoreToken **tokens = NULL;
        usec_t until = 0;
        size_t n = 0;
        int r;

        r = store_token_list(ca->store, &tokens, &n);
        if (r < 0)
                return log_debug_errno(r, "Failed to list enrollment tokens: %m");
        for (size_t i = 0; i < n; i++)
                if (tokens[i]->used_at == 0 && tokens[i]->revoked_at == 0 && tokens[i]->expires_at > now)
                        until = MAX(until, tokens[i]->expires_at);
        store_token_array_free(tokens, n);
        ca->tokens_until = until;
        return 0;
}

/* A new ACTIVE issuing CA under the current root; the old one, if any, becomes RETIRING first (the
 * store allows one active issuing CA). Everything that can fail without a write is done before it. */
static int ca_rotate_issuing(ControllerCa *ca, usec_t now) {
        _cleanup_(ca_freep) CertificateAuthority *root = NULL, *issuing = NULL;
        _cleanup_(store_ca_freep) StoreCa *row = NULL;
        CaState *s = &ca->state;
        int r;

        r = entry_open(ca->kek, s->root, &root);
        if (r < 0)
                return log_debug_errno(r, "Failed to open the root CA's key: %m");
        r = ca_new_issuing(root, ca->config->key_type, ca->config->issuing_ca_lifetime, now, &issuing);
        if (r < 0)
                return log_debug_errno(r, "Failed to create an issuing CA: %m");
        root = ca_free(root);

        r = row_new(issuing, STORE_CA_ISSUING, STORE_CA_ACTIVE, s->root->row->fingerprint, now, ca->kek,
                    &row);
        if (r < 0)
                return r;

        if (s->issuing) {
                r = store_ca_set_state(ca->store, s->issuing->row->fingerprint, STORE_CA_RETIRING);
                if (r < 0)
                        return log_debug_errno(r, "Failed to retire the issuing CA: %m");
        }
        r = store_ca_put(ca->store, row);
        if (r < 0)
                return log_debug_errno(r, "Failed to store the new issuing CA: %m");

        log_debug("New issuing CA under the root CA created at %" PRIu64 ".", s->root->row->created_at);
        return 0;
}

static int ca_set_state(ControllerCa *ca, const CaEntry *e, StoreCaState state) {
        int r;

        r = store_ca_set_state(ca->store, e->row->fingerprint, state);
        if (r < 0)
                return log_debug_errno(r, "Failed to move a %s CA to %s: %m",
                                       store_ca_kind_to_string(e->row->kind),
                                       store_ca_state_to_string(state));
        return 0;
}

/* One due change to the store, then a reload. 1 when something was done, 0 when nothing is due. */
static int ca_step(ControllerCa *ca, usec_t now) {
        CaState *s = &ca->state;
        bool changed = false;
        int r;

        /* Root rotation step 3: no leaf under the old root is valid any more. */
        if (s->retiring_root && now >= root_step3_due(ca)) {
                for (size_t i = 0; i < s->n_entries; i++) {
                        CaEntry *e = s->entries + i;

                        if (e->row->kind == STORE_CA_ISSUING && e->row->state != STORE_CA_RETIRED &&
                            fingerprint_equal(e->row->parent, s->retiring_root->row->fingerprint)) {
                                r = ca_set_state(ca, e, STORE_CA_RETIRED);
                                if (r < 0)
                                        return r;
                        }
                }
                r = ca_set_state(ca, s->retiring_root, STORE_CA_RETIRED);
                if (r < 0)
                        return r;
                goto reload;
        }

        /* Step 2: every agent has had the new root for a longest leaf lifetime. */
        if (s->staged_root && now >= root_step2_due(ca)) {
                r = ca_set_state(ca, s->staged_root, STORE_CA_ACTIVE);
                if (r < 0)
                        return r;
                goto reload;
        }

        /* Step 2, continued (also after a restart): issue under the newer root, then retire the old one. */
        if (s->old_root) {
                if (s->issuing && fingerprint_equal(s->issuing->row->parent, s->root->row->fingerprint))
                        r = ca_set_state(ca, s->old_root, STORE_CA_RETIRING);
                else
                        r = ca_rotate_issuing(ca, now);
                if (r < 0)
                        return r;
                goto reload;
        }

        /* An interrupted rotation, or one that is due. */
        if (!s->issuing || now >= issuing_rotation_due(s->issuing->row)) {
                r = ca_rotate_issuing(ca, now);
                if (r < 0)
                        return r;
                goto reload;
        }

        /* Retiring issuing CAs leave once their leaves cannot be valid any more. */
        for (size_t i = 0; i < s->n_entries; i++) {
                CaEntry *e = s->entries + i;

                if (e->row->kind == STORE_CA_ISSUING && e->row->state == STORE_CA_RETIRING &&
                    now >= e->row->not_after) {
                        r = ca_set_state(ca, e, STORE_CA_RETIRED);
                        if (r < 0)
                                return r;
                        changed = true;
                }
        }
        if (!changed)
                return 0;

reload:
        r = ca_reload(ca, NULL);
        if (r < 0)
                return r;
        return 1;
}

/* The DNS and IP SANs of the advertised addresses, each host once. */
static int server_sans(const ControllerConfig *config, char ***ret_dns, char ***ret_ips) {
        _cleanup_strv_free_ char **dns = NULL, **ips = NULL;
        int r;

        STRV_FOREACH(a, config->advertised_addresses.addresses) {
                HostPort hp;
                char ***l;

                r = parse_host_port(*a, 0, &hp);
                if (r < 0)
                        return log_debug_errno(r, "Invalid advertised address '%s': %m", *a);
                l = hp.family == AF_UNSPEC ? &dns : &ips;
                if (strv_contains(*l, hp.host))
                        continue;
                r = strv_extend(l, hp.host);
                if (r < 0)
                        return r;
        }

        *ret_dns = TAKE_PTR(dns);
        *ret_ips = TAKE_PTR(ips);
        return 0;
}

static usec_t server_renewal_due(const ControllerCa *ca) {
        usec_t lifetime = usec_sub(ca->server_not_after, ca->server_issued_at);

        return usec_sub(ca->server_not_after, lifetime / 100 * SERVER_RENEW_PERCENT);
}

static int server_issue(ControllerCa *ca, usec_t now) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_strv_free_ char **dns = NULL, **ips = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(crypto_x509_unrefp) X509 *cert = NULL, *issuer = NULL, *root = NULL;
        CaState *s = &ca->state;
        CaEntry *root_entry;
        usec_t not_after;
        int r;

        assert(s->issuing && s->issuing_ca);

        root_entry = state_find(s, STORE_CA_ROOT, s->issuing->row->parent);
        assert(root_entry && root_entry->cert); /* checked by ca_state_load() */

        r = spiffe_id_new_ztna(ca->trust_domain, SPIFFE_ROLE_CONTROLLER, ca->config->id, &id);
        if (r < 0)
                return log_debug_errno(r, "Invalid controller id '%s': %m", strna(ca->config->id));
        r = server_sans(ca->config, &dns, &ips);
        if (r < 0)
                return r;
        /* A fresh key every time, never written anywhere. */
        r = crypto_key_generate(ca->config->key_type, &key);
        if (r < 0)
                return r;

        LeafParams p = {
                .id = id,
                .public_key = key,
                .lifetime = ca->config->server_lifetime,
                .now = now,
                .dns_names = dns,
                .ip_addresses = ips,
        };
        r = ca_issue_leaf(s->issuing_ca, &p, &cert);
        if (r < 0)
                return log_debug_errno(r, "Failed to issue the server certificate: %m");
        r = crypto_x509_get_validity(cert, NULL, &not_after);
        if (r < 0)
                return r;

        issuer = crypto_x509_ref(s->issuing->cert);
        root = crypto_x509_ref(root_entry->cert);
        if (!issuer || !root)
                return -ENOMEM;

        crypto_x509_unref(ca->server_cert);
        EVP_PKEY_freep(&ca->server_key);
        crypto_x509_unref(ca->server_issuer);
        crypto_x509_unref(ca->server_root);
        ca->server_cert = TAKE_PTR(cert);
        ca->server_key = TAKE_PTR(key);
        ca->server_issuer = TAKE_PTR(issuer);
        ca->server_root = TAKE_PTR(root);
        memcpy(ca->server_issuer_fingerprint, s->issuing->row->fingerprint, SHA256_DIGEST_SIZE);
        memcpy(ca->server_root_fingerprint, root_entry->row->fingerprint, SHA256_DIGEST_SIZE);
        ca->server_issued_at = now;
        ca->server_not_after = not_after;
        ca->pending_changes |= CONTROLLER_CA_CHANGED_SERVER;
        return 0;
}

static int server_maintain(ControllerCa *ca, usec_t now) {
        const CaState *s = &ca->state;

        if (ca->server_cert &&
            fingerprint_equal(ca->server_issuer_fingerprint, s->issuing->row->fingerprint) &&
            now >= ca->server_issued_at && now < server_renewal_due(ca))
                return 0;
        return server_issue(ca, now);
}

static usec_t ca_next_due(const ControllerCa *ca, usec_t now) {
        const CaState *s = &ca->state;
        usec_t next = USEC_INFINITY;

        if (s->issuing)
                next = MIN(next, issuing_rotation_due(s->issuing->row));
        for (size_t i = 0; i < s->n_entries; i++) {
                const StoreCa *row = s->entries[i].row;

                if (row->kind == STORE_CA_ISSUING && row->state == STORE_CA_RETIRING)
                        next = MIN(next, row->not_after);
        }
        if (s->staged_root)
                next = MIN(next, root_step2_due(ca));
        if (s->retiring_root)
                next = MIN(next, root_step3_due(ca));
        if (ca->server_cert)
                next = MIN(next, server_renewal_due(ca));

        /* Everything due has just been done; a time in the past would only make the caller spin. */
        if (next <= now)
                next = usec_add(now, USEC_PER_SEC);
        return next;
}

int controller_ca_maintain(ControllerCa *ca, usec_t now, unsigned *ret_changes, usec_t *ret_next) {
        unsigned steps = 0;
        int r;

        assert(ca);

        now = now_or(now);

        if (ca->state.staged_root) {
                r = tokens_refresh(ca, now);
                if (r < 0)
                        return r;
        }

        for (;;) {
                if (steps++ >= CA_MAINTAIN_STEPS_MAX)
                        return log_debug_errno(ELOOP, "CA maintenance does not settle.");
                r = ca_step(ca, now);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
        }
        assert(ca->state.issuing && ca->state.issuing_ca);

        r = server_maintain(ca, now);
        if (r < 0)
                return r;

        if (ret_changes)
                *ret_changes = ca->pending_changes;
        ca->pending_changes = 0;
        if (ret_next)
                *ret_next = ca_next_due(ca, now);
        return 0;
}

bool controller_ca_rotation_in_progress(const ControllerCa *ca) {
        assert(ca);

        return ca->state.staged_root || ca->state.old_root || ca->state.retiring_root;
}

int controller_ca_rotate_root(ControllerCa *ca, usec_t now) {
        _cleanup_(ca_freep) CertificateAuthority *root = NULL;
        _cleanup_(store_ca_freep) StoreCa *row = NULL;
        usec_t created_at;
        int r;

        assert(ca);

        if (controller_ca_rotation_in_progress(ca))
                return log_debug_errno(EBUSY, "A root CA rotation is already in progress.");

        /* The store is the truth: after a write whose reload failed, memory may not know of a staged root
         * yet, and a second one would make the CA unloadable. */
        StoreCa **rows = NULL;
        size_t n_rows = 0;
        bool busy = false;
        r = store_ca_list(ca->store, &rows, &n_rows);
        if (r < 0)
                return log_debug_errno(r, "Failed to list the CA rows: %m");
        for (size_t i = 0; i < n_rows; i++)
                if (rows[i]->kind == STORE_CA_ROOT &&
                    (rows[i]->state == STORE_CA_STAGED || rows[i]->state == STORE_CA_RETIRING))
                        busy = true;
        store_ca_array_free(rows, n_rows);
        if (busy) {
                (void) ca_reload(ca, NULL);
                return log_debug_errno(EBUSY, "A root CA rotation is already in progress.");
        }

        now = now_or(now);

        r = ca_new_root(ca->trust_domain, ca->config->key_type, ca->config->root_ca_lifetime, now, &root);
        if (r < 0)
                return log_debug_errno(r, "Failed to create a root CA: %m");

        /* Strictly newer than the current root, even if the clock went back: creation order is what makes
         * it the current root in step 2. */
        created_at = MAX(now, usec_add(ca->state.root->row->created_at, 1));
        r = row_new(root, STORE_CA_ROOT, STORE_CA_STAGED, NULL, created_at, ca->kek, &row);
        if (r < 0)
                return r;
        r = store_ca_put(ca->store, row);
        if (r < 0)
                return log_debug_errno(r, "Failed to store the new root CA: %m");

        return ca_reload(ca, NULL);
}

/* Parses and checks a CSR: the reasons are the ones controller-ca.h promises. */
static int csr_public_key(const void *csr, size_t csr_size, EVP_PKEY **ret, const char **ret_reason) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        int r;

        if (!csr || csr_size == 0) {
                *ret_reason = "malformed CSR";
                return -EBADMSG;
        }
        r = crypto_csr_from_der(csr, csr_size, &req);
        if (r == -ENOMEM) {
                *ret_reason = "internal error";
                return r;
        }
        if (r < 0) {
                *ret_reason = "malformed CSR";
                return -EBADMSG;
        }

        r = crypto_csr_verify(req, ret);
        if (r == -EOPNOTSUPP) {
                *ret_reason = "unsupported key type";
                return r;
        }
        if (r == -EBADMSG) {
                *ret_reason = "CSR signature does not verify";
                return -EKEYREJECTED;
        }
        if (r < 0) {
                *ret_reason = "internal error";
                return r;
        }
        return 0;
}

int controller_ca_csr_public_key(const void *csr, size_t csr_size, uint8_t **ret, size_t *ret_size,
                                 const char **ret_reason) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        const char *reason = "internal error";
        int r;

        assert(ret);
        assert(ret_size);

        r = csr_public_key(csr, csr_size, &key, &reason);
        if (r >= 0)
                r = crypto_key_public_to_der(key, ret, ret_size);
        if (r < 0 && ret_reason)
                *ret_reason = reason;
        return r;
}

void issued_certificate_done(IssuedCertificate *c) {
        if (!c)
                return;
        for (size_t i = 0; i < ELEMENTSOF(c->chain); i++)
                free(c->chain[i]);
        free(c->public_key);
        free(c->serial);
        *c = (IssuedCertificate) {};
}

int controller_ca_issue(ControllerCa *ca, SpiffeRole role, const char *id, const void *csr, size_t csr_size,
                        usec_t now, IssuedCertificate *ret, const char **ret_reason) {
        _cleanup_(issued_certificate_done) IssuedCertificate c = {};
        _cleanup_(spiffe_id_freep) SpiffeId *sid = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(crypto_x509_unrefp) X509 *leaf = NULL;
        const char *reason = "internal error";
        usec_t lifetime;
        int r;

        assert(ca);
        assert(ret);

        switch (role) {
        case SPIFFE_ROLE_CONNECTOR:
                lifetime = ca->config->connector_lifetime;
                break;
        case SPIFFE_ROLE_TUNNELER:
                lifetime = ca->config->tunneler_lifetime;
                break;
        default:
                reason = "invalid agent role";
                r = -EINVAL;
                goto fail;
        }
        if (!id || !ztna_id_is_valid(id)) {
                reason = "invalid agent id";
                r = -EINVAL;
                goto fail;
        }
        r = spiffe_id_new_ztna(ca->trust_domain, role, id, &sid);
        if (r < 0) {
                if (r == -EINVAL)
                        reason = "invalid agent id";
                goto fail;
        }

        r = csr_public_key(csr, csr_size, &key, &reason);
        if (r < 0)
                goto fail;

        if (!ca->state.issuing_ca) {
                /* Only between an interrupted rotation and the next controller_ca_maintain(). */
                reason = "certificate authority not ready";
                r = -EAGAIN;
                goto fail;
        }

        LeafParams p = {
                .id = sid,
                .public_key = key,
                .lifetime = lifetime,
                .now = now_or(now),
        };
        r = ca_issue_leaf(ca->state.issuing_ca, &p, &leaf);
        if (r == -EOPNOTSUPP)
                reason = "unsupported key type";
        if (r < 0) {
                log_debug_errno(r, "Failed to issue a certificate for '%s': %m", sid->uri);
                goto fail;
        }

        r = crypto_x509_to_der(leaf, &c.chain[0], &c.chain_size[0]);
        if (r < 0)
                goto fail;
        r = crypto_x509_to_der(ca->state.issuing->cert, &c.chain[1], &c.chain_size[1]);
        if (r < 0)
                goto fail;
        c.n_chain = 2;
        r = crypto_x509_get_public_key_der(leaf, &c.public_key, &c.public_key_size);
        if (r < 0)
                goto fail;
        r = crypto_x509_get_serial_hex(leaf, &c.serial);
        if (r < 0)
                goto fail;
        r = crypto_x509_get_validity(leaf, NULL, &c.not_after);
        if (r < 0)
                goto fail;

        *ret = c;
        c = (IssuedCertificate) {};
        return 0;

fail:
        if (ret_reason)
                *ret_reason = reason;
        return r;
}

int controller_ca_verify_signature(const void *public_key, size_t public_key_size, const void *data,
                                   size_t size, const void *signature, size_t signature_size) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        int r;

        assert(public_key || public_key_size == 0);
        assert(data || size == 0);
        assert(signature || signature_size == 0);

        if (public_key_size == 0)
                return -EINVAL;
        r = crypto_key_public_from_der(public_key, public_key_size, &key);
        if (r == -EOPNOTSUPP || r == -ENOMEM)
                return r;
        if (r < 0)
                return -EINVAL;

        return crypto_key_verify(key, data, size, signature, signature_size);
}

const TrustBundle *controller_ca_get_bundle(const ControllerCa *ca) {
        assert(ca);
        return ca->state.bundle;
}

void controller_ca_der_array_free(uint8_t **a, size_t *sizes, size_t n) {
        if (a)
                for (size_t i = 0; i < n; i++)
                        free(a[i]);
        free(a);
        free(sizes);
}

int controller_ca_get_bundle_der(const ControllerCa *ca, uint8_t ***ret, size_t **ret_sizes, size_t *ret_n) {
        uint8_t **a = NULL;
        size_t *sizes = NULL, n;
        int r;

        assert(ca);
        assert(ret);
        assert(ret_sizes);
        assert(ret_n);

        n = trust_bundle_size(ca->state.bundle);
        a = calloc(MAX(n, 1U), sizeof(uint8_t *));
        sizes = calloc(MAX(n, 1U), sizeof(size_t));
        if (!a || !sizes) {
                controller_ca_der_array_free(a, sizes, 0);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                r = crypto_x509_to_der(trust_bundle_get(ca->state.bundle, i), &a[i], &sizes[i]);
                if (r < 0) {
                        controller_ca_der_array_free(a, sizes, i);
                        return r;
                }
        }

        *ret = a;
        *ret_sizes = sizes;
        *ret_n = n;
        return 0;
}

void controller_ca_get_root_pin(const ControllerCa *ca, uint8_t ret[static 32]) {
        const CaState *s;

        assert(ca);
        assert(ret);

        s = &ca->state;
        if (ca->server_cert)
                memcpy(ret, ca->server_root_fingerprint, 32);
        else if (s->issuing)
                /* What the server certificate will chain to once maintenance issued it. */
                memcpy(ret, s->issuing->row->parent, 32);
        else
                memcpy(ret, s->root->row->fingerprint, 32);
}

const char *controller_ca_get_trust_domain(const ControllerCa *ca) {
        assert(ca);
        return ca->trust_domain;
}

int controller_ca_apply_tls(const ControllerCa *ca, TlsContext *ctx) {
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
        int r;

        assert(ca);
        assert(ctx);

        if (!ca->server_cert)
                return -ENOENT;

        X509 *issuers[] = { ca->server_issuer, ca->server_root };
        r = crypto_x509_stack_new(issuers, ELEMENTSOF(issuers), &chain);
        if (r < 0)
                return r;
        r = tls_context_set_identity(ctx, ca->server_cert, chain, ca->server_key);
        if (r < 0)
                return r;
        return tls_context_set_trust_bundle(ctx, ca->state.bundle);
}

int controller_ca_get_server_pem(const ControllerCa *ca, char **ret_chain, char **ret_key) {
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
        _cleanup_free_ char *chain_pem = NULL;
        char *key_pem = NULL;
        size_t key_size = 0;
        int r;

        assert(ca);
        assert(ret_chain);
        assert(ret_key);

        if (!ca->server_cert)
                return -ENOENT;

        X509 *certs[] = { ca->server_cert, ca->server_issuer, ca->server_root };
        r = crypto_x509_stack_new(certs, ELEMENTSOF(certs), &chain);
        if (r < 0)
                return r;
        r = crypto_x509_chain_to_pem(chain, &chain_pem);
        if (r < 0)
                return r;
        r = crypto_key_to_pkcs8_pem(ca->server_key, &key_pem, &key_size);
        if (r < 0)
                return r;
        *ret_chain = TAKE_PTR(chain_pem);
        *ret_key = key_pem;
        return 0;
}

usec_t controller_ca_get_server_not_after(const ControllerCa *ca) {
        assert(ca);
        return ca->server_cert ? ca->server_not_after : 0;
}
