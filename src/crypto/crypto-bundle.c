/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <string.h>

#include <openssl/pem.h>

#include "crypto-bundle.h"
#include "crypto-spiffe.h"
#include "crypto-svid.h"
#include "crypto-util.h"
#include "hexdecoct.h"
#include "log.h"

#define PEM_BEGIN "-----BEGIN "
#define PEM_END "-----END "
#define PEM_DASHES "-----"

struct TrustBundle {
        char *trust_domain;
        X509 *roots[TRUST_BUNDLE_ROOTS_MAX];
        uint8_t fingerprints[TRUST_BUNDLE_ROOTS_MAX][CRYPTO_SPKI_SHA256_SIZE];
        size_t n_roots;
};

int crypto_x509_spki_sha256(X509 *cert, uint8_t ret[static CRYPTO_SPKI_SHA256_SIZE]) {
        _cleanup_(openssl_freep) unsigned char *der = NULL;
        int n;

        assert(cert);
        assert(ret);

        n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
        if (n <= 0)
                return crypto_error(EINVAL, "Failed to encode SubjectPublicKeyInfo");
        return crypto_sha256(der, (size_t) n, ret);
}

int crypto_x509_to_pem(X509 *cert, char **ret) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;

        assert(cert);
        assert(ret);

        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return -ENOMEM;
        if (!PEM_write_bio_X509(bio, cert))
                return crypto_error(EIO, "Failed to write certificate as PEM");
        return crypto_bio_to_string(bio, true, "Failed to read PEM", ret, NULL);
}

int crypto_x509_chain_to_pem(STACK_OF(X509) *chain, char **ret) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;

        assert(chain);
        assert(ret);

        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return -ENOMEM;
        for (int i = 0; i < sk_X509_num(chain); i++)
                if (!PEM_write_bio_X509(bio, sk_X509_value(chain, i)))
                        return crypto_error(EIO, "Failed to write certificate as PEM");
        return crypto_bio_to_string(bio, true, "Failed to read PEM", ret, NULL);
}

static bool pem_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Decodes one PEM block (the text from its BEGIN line to the end of its END line), strictly: the
 * label is CERTIFICATE, there are no headers, and the DER is one certificate with nothing after it. */
static int pem_block_to_x509(const char *block, size_t size, X509 **ret) {
        _cleanup_(openssl_freep) char *name = NULL, *header = NULL;
        _cleanup_(openssl_freep) unsigned char *data = NULL;
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        const unsigned char *p;
        long len = 0;

        bio = BIO_new_mem_buf(block, (int) size);
        if (!bio)
                return -ENOMEM;
        ERR_clear_error();
        if (!PEM_read_bio(bio, &name, &header, &data, &len))
                return crypto_error(EBADMSG, "Malformed PEM block");
        if (!streq(name, "CERTIFICATE"))
                return log_debug_errno(EBADMSG, "PEM block is '%.64s', not CERTIFICATE.", name);
        if (!isempty(header))
                return log_debug_errno(EBADMSG, "PEM certificate block has headers.");

        p = data;
        x = d2i_X509(NULL, &p, len);
        if (!x)
                return crypto_error(EBADMSG, "Failed to decode certificate");
        if (p != data + len)
                return log_debug_errno(EBADMSG, "Trailing data after certificate DER.");

        *ret = TAKE_PTR(x);
        return 0;
}

/* Splits pem into blocks separated only by whitespace and decodes each. At most max certificates
 * (-E2BIG beyond), at least one (-EBADMSG). */
static int pem_to_x509_stack(const char *pem, size_t size, size_t max, STACK_OF(X509) **ret) {
        _cleanup_x509_stack_ STACK_OF(X509) *stack = NULL;
        size_t i = 0;
        int r;

        assert(pem || size == 0);
        assert(ret);

        if (size > TRUST_BUNDLE_PEM_MAX)
                return log_debug_errno(E2BIG, "PEM text of %zu bytes is larger than %zu.", size,
                                       TRUST_BUNDLE_PEM_MAX);
        if (size > 0 && memchr(pem, '\0', size))
                return log_debug_errno(EBADMSG, "PEM text contains a NUL byte.");

        stack = sk_X509_new_null();
        if (!stack)
                return -ENOMEM;

        for (;;) {
                _cleanup_(X509_freep) X509 *x = NULL;
                const char *end, *eol, *line_end;
                size_t block_end;

                while (i < size && pem_is_space(pem[i]))
                        i++;
                if (i >= size)
                        break;

                if (size - i < STRLEN(PEM_BEGIN) || memcmp(pem + i, PEM_BEGIN, STRLEN(PEM_BEGIN)) != 0)
                        return log_debug_errno(EBADMSG, "Garbage between PEM blocks at offset %zu.", i);

                end = memmem(pem + i, size - i, "\n" PEM_END, STRLEN("\n" PEM_END));
                if (!end)
                        return log_debug_errno(EBADMSG, "PEM block at offset %zu has no END line.", i);
                end++;
                eol = memchr(end, '\n', (size_t) (pem + size - end));
                line_end = eol ?: pem + size;
                block_end = eol ? (size_t) (eol - pem) + 1 : size;
                /* The END line ends in dashes (PEM_read_bio() checks that the label matches BEGIN). */
                if (line_end > end && line_end[-1] == '\r')
                        line_end--;
                if ((size_t) (line_end - end) < STRLEN(PEM_END) + STRLEN(PEM_DASHES) ||
                    memcmp(line_end - STRLEN(PEM_DASHES), PEM_DASHES, STRLEN(PEM_DASHES)) != 0)
                        return log_debug_errno(EBADMSG, "Malformed PEM END line at offset %zu.",
                                               (size_t) (end - pem));

                if ((size_t) sk_X509_num(stack) >= max)
                        return log_debug_errno(E2BIG, "More than %zu certificates in PEM text.", max);

                r = pem_block_to_x509(pem + i, block_end - i, &x);
                if (r < 0)
                        return r;
                if (!sk_X509_push(stack, x))
                        return -ENOMEM;
                TAKE_PTR(x);
                i = block_end;
        }

        if (sk_X509_num(stack) == 0)
                return log_debug_errno(EBADMSG, "No certificate in PEM text.");

        *ret = TAKE_PTR(stack);
        return 0;
}

int crypto_x509_from_pem(const char *pem, size_t size, X509 **ret) {
        _cleanup_x509_stack_ STACK_OF(X509) *stack = NULL;
        int r;

        assert(pem || size == 0);
        assert(ret);

        r = pem_to_x509_stack(pem, size, 1, &stack);
        if (r == -E2BIG && size <= TRUST_BUNDLE_PEM_MAX)
                return -EBADMSG; /* more than one certificate where exactly one is expected */
        if (r < 0)
                return r;
        *ret = sk_X509_shift(stack);
        return 0;
}

int crypto_x509_chain_from_pem(const char *pem, size_t size, STACK_OF(X509) **ret) {
        assert(pem || size == 0);
        assert(ret);

        return pem_to_x509_stack(pem, size, CRYPTO_X509_CHAIN_MAX, ret);
}

int trust_bundle_new(const char *trust_domain, TrustBundle **ret) {
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;

        assert(ret);

        if (!spiffe_trust_domain_is_valid(trust_domain))
                return -EINVAL;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->trust_domain = strdup(trust_domain);
        if (!b->trust_domain)
                return -ENOMEM;

        *ret = TAKE_PTR(b);
        return 0;
}

int trust_bundle_dup(const TrustBundle *b, TrustBundle **ret) {
        _cleanup_(trust_bundle_freep) TrustBundle *copy = NULL;
        int r;

        assert(b);
        assert(ret);

        r = trust_bundle_new(b->trust_domain, &copy);
        if (r < 0)
                return r;
        for (size_t i = 0; i < b->n_roots; i++) {
                if (!X509_up_ref(b->roots[i]))
                        return crypto_error(EIO, "X509_up_ref");
                copy->roots[i] = b->roots[i];
                memcpy(copy->fingerprints[i], b->fingerprints[i], CRYPTO_SPKI_SHA256_SIZE);
                copy->n_roots++;
        }

        *ret = TAKE_PTR(copy);
        return 0;
}

TrustBundle *trust_bundle_free(TrustBundle *b) {
        if (!b)
                return NULL;
        for (size_t i = 0; i < b->n_roots; i++)
                X509_free(b->roots[i]);
        free(b->trust_domain);
        return mfree(b);
}

const char *trust_bundle_trust_domain(const TrustBundle *b) {
        assert(b);
        return b->trust_domain;
}

static ssize_t trust_bundle_find(const TrustBundle *b,
                                 const uint8_t fingerprint[static CRYPTO_SPKI_SHA256_SIZE]) {
        for (size_t i = 0; i < b->n_roots; i++)
                if (crypto_memeq(b->fingerprints[i], fingerprint, CRYPTO_SPKI_SHA256_SIZE))
                        return (ssize_t) i;
        return -ENOENT;
}

static void log_fingerprint(const char *what, const uint8_t fp[static CRYPTO_SPKI_SHA256_SIZE]) {
        _cleanup_free_ char *hex = NULL;

        if (log_get_max_level() < LOG_DEBUG)
                return;
        hex = hexmem(fp, CRYPTO_SPKI_SHA256_SIZE);
        log_debug("%s %s", what, strna(hex));
}

int trust_bundle_add_full(TrustBundle *b, X509 *root, const char **ret_reason) {
        uint8_t fp[CRYPTO_SPKI_SHA256_SIZE];
        const char *reason = NULL;
        int r;

        assert(b);
        assert(root);

        r = svid_check_signing_certificate(root, b->trust_domain, &reason);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = reason;
                return log_debug_errno(r, "Refusing root certificate: %s", strna(reason));
        }
        /* A trust anchor vouches for itself: issuer == subject, matching key identifiers, and its
         * signature verifies with its own key. */
        if (X509_self_signed(root, /* verify_signature= */ 1) != 1) {
                ERR_clear_error();
                if (ret_reason)
                        *ret_reason = "root certificate is not self-signed";
                return log_debug_errno(EKEYREJECTED, "Refusing root certificate: not self-signed.");
        }

        r = crypto_x509_spki_sha256(root, fp);
        if (r < 0)
                return r;
        if (trust_bundle_find(b, fp) >= 0) {
                log_fingerprint("Root already in trust bundle:", fp);
                return -EEXIST;
        }
        if (b->n_roots >= TRUST_BUNDLE_ROOTS_MAX)
                return log_debug_errno(E2BIG, "Trust bundle already holds %d roots.",
                                       TRUST_BUNDLE_ROOTS_MAX);

        if (!X509_up_ref(root))
                return crypto_error(EIO, "X509_up_ref");
        b->roots[b->n_roots] = root;
        memcpy(b->fingerprints[b->n_roots], fp, sizeof(fp));
        b->n_roots++;
        log_fingerprint("Added root to trust bundle:", fp);
        return 0;
}

int trust_bundle_add(TrustBundle *b, X509 *root) {
        return trust_bundle_add_full(b, root, NULL);
}

int trust_bundle_remove(TrustBundle *b, const uint8_t fingerprint[static CRYPTO_SPKI_SHA256_SIZE]) {
        ssize_t i;

        assert(b);
        assert(fingerprint);

        i = trust_bundle_find(b, fingerprint);
        if (i < 0)
                return -ENOENT;

        X509_free(b->roots[i]);
        /* Keep the order: to_pem() and get() list roots in the order they were added. */
        memmove(b->roots + i, b->roots + i + 1, (b->n_roots - (size_t) i - 1) * sizeof(b->roots[0]));
        memmove(b->fingerprints + i, b->fingerprints + i + 1,
                (b->n_roots - (size_t) i - 1) * sizeof(b->fingerprints[0]));
        b->n_roots--;
        b->roots[b->n_roots] = NULL;
        log_fingerprint("Removed root from trust bundle:", fingerprint);
        return 0;
}

size_t trust_bundle_size(const TrustBundle *b) {
        return b ? b->n_roots : 0;
}

X509 *trust_bundle_get(const TrustBundle *b, size_t i) {
        if (!b || i >= b->n_roots)
                return NULL;
        return b->roots[i];
}

bool trust_bundle_contains(const TrustBundle *b, const uint8_t fingerprint[static CRYPTO_SPKI_SHA256_SIZE]) {
        return b && fingerprint && trust_bundle_find(b, fingerprint) >= 0;
}

int trust_bundle_to_pem(const TrustBundle *b, char **ret) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;

        assert(b);
        assert(ret);

        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_roots; i++)
                if (!PEM_write_bio_X509(bio, b->roots[i]))
                        return crypto_error(EIO, "Failed to write certificate as PEM");
        return crypto_bio_to_string(bio, true, "Failed to read PEM", ret, NULL);
}

int trust_bundle_from_pem(const char *trust_domain, const char *pem, size_t size, TrustBundle **ret) {
        _cleanup_x509_stack_ STACK_OF(X509) *stack = NULL;
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;
        int r;

        assert(pem || size == 0);
        assert(ret);

        r = trust_bundle_new(trust_domain, &b);
        if (r < 0)
                return r;
        r = pem_to_x509_stack(pem, size, TRUST_BUNDLE_ROOTS_MAX, &stack);
        if (r < 0)
                return r;
        for (int i = 0; i < sk_X509_num(stack); i++) {
                r = trust_bundle_add(b, sk_X509_value(stack, i));
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(b);
        return 0;
}

int trust_bundle_to_store(const TrustBundle *b, X509_STORE **ret) {
        _cleanup_(X509_STORE_freep) X509_STORE *store = NULL;

        assert(b);
        assert(ret);

        store = X509_STORE_new();
        if (!store)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_roots; i++)
                if (!X509_STORE_add_cert(store, b->roots[i]))
                        return crypto_error(EIO, "Failed to add root to X509_STORE");

        *ret = TAKE_PTR(store);
        return 0;
}
