/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>

#include "crypto-token.h"
#include "crypto-util.h"
#include "hexdecoct.h"
#include "log.h"
#include "parse-util.h"

/* Payload offsets (see crypto-token.h). */
#define OFFSET_VERSION 0
#define OFFSET_ID (OFFSET_VERSION + 1)
#define OFFSET_SECRET (OFFSET_ID + TOKEN_ID_SIZE)
#define OFFSET_PIN (OFFSET_SECRET + TOKEN_SECRET_SIZE)
#define OFFSET_N_ADDRESSES (OFFSET_PIN + TOKEN_PIN_SIZE)
#define OFFSET_ADDRESSES (OFFSET_N_ADDRESSES + 1)
/* Smallest payload with every fixed field, before any address. */
#define PAYLOAD_FIXED_SIZE (OFFSET_ADDRESSES + TOKEN_CHECKSUM_SIZE)

/* Writes the canonical spelling of a "host:port" (names lower-cased, IP addresses in inet_ntop() form,
 * IPv6 in brackets, the port without leading zeros) to buf, or returns -EINVAL if it is not one, in the
 * sense of parse_host_port() without a default port. */
static int address_canonicalize(const char *s, char buf[static HOST_PORT_STRING_MAX]) {
        HostPort hp;
        int r;

        r = parse_host_port(s, 0, &hp);
        if (r < 0)
                return -EINVAL;
        if (!host_port_to_string(&hp, buf, HOST_PORT_STRING_MAX) || strlen(buf) > TOKEN_ADDRESS_MAX)
                return -EINVAL;
        return 0;
}

/* Whether n bytes are a "host:port" in canonical spelling. Takes a length rather than a C string because
 * token addresses arrive as length-prefixed bytes that might contain a NUL. Only the canonical spelling
 * is accepted so that a token string has exactly one form. */
static bool address_is_valid(const char *s, size_t n) {
        char copy[TOKEN_ADDRESS_MAX + 1], canonical[HOST_PORT_STRING_MAX];

        if (n == 0 || n > TOKEN_ADDRESS_MAX || memchr(s, '\0', n))
                return false;
        memcpy(copy, s, n);
        copy[n] = '\0';
        return address_canonicalize(copy, canonical) >= 0 && streq(copy, canonical);
}

static int addresses_validate(char *const *addresses, size_t n) {
        if (n == 0 || n > TOKEN_ADDRESSES_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!addresses[i])
                        return -EINVAL;
                if (!address_is_valid(addresses[i], strnlen(addresses[i], TOKEN_ADDRESS_MAX + 1)))
                        return -EINVAL;
        }
        return 0;
}

EnrollmentToken *token_free(EnrollmentToken *t) {
        if (!t)
                return NULL;

        if (t->addresses)
                for (size_t i = 0; t->addresses[i]; i++)
                        free(t->addresses[i]);
        free(t->addresses);
        OPENSSL_cleanse(t, sizeof(*t));
        free(t);
        return NULL;
}

static EnrollmentToken *token_new(void) {
        EnrollmentToken *t;

        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->addresses = calloc(TOKEN_ADDRESSES_MAX + 1, sizeof(char *));
        if (!t->addresses)
                return mfree(t);
        return t;
}

int token_generate(const uint8_t ca_pin[TOKEN_PIN_SIZE], char *const *addresses, EnrollmentToken **ret) {
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        size_t n = 0;
        int r;

        assert(ca_pin);
        assert(addresses);
        assert(ret);

        while (n <= TOKEN_ADDRESSES_MAX && addresses[n])
                n++;
        if (n == 0 || n > TOKEN_ADDRESSES_MAX)
                return log_debug_errno(EINVAL, "Enrollment token needs 1..%d controller addresses.",
                                       TOKEN_ADDRESSES_MAX);

        t = token_new();
        if (!t)
                return -ENOMEM;

        r = crypto_random_bytes(t->id, sizeof(t->id));
        if (r < 0)
                return r;
        r = crypto_random_bytes(t->secret, sizeof(t->secret));
        if (r < 0)
                return r;
        memcpy(t->ca_pin, ca_pin, TOKEN_PIN_SIZE);

        for (size_t i = 0; i < n; i++) {
                char canonical[HOST_PORT_STRING_MAX];

                r = address_canonicalize(addresses[i], canonical);
                if (r < 0)
                        return log_debug_errno(r, "Invalid controller address '%s' for enrollment token.",
                                               addresses[i]);
                t->addresses[i] = strdup(canonical);
                if (!t->addresses[i])
                        return -ENOMEM;
                t->n_addresses++;
        }

        *ret = TAKE_PTR(t);
        return 0;
}

static int token_payload_build(const EnrollmentToken *t, uint8_t **ret, size_t *ret_size) {
        uint8_t digest[SHA256_DIGEST_SIZE];
        uint8_t *buf;
        size_t size = PAYLOAD_FIXED_SIZE, p;
        int r;

        for (size_t i = 0; i < t->n_addresses; i++)
                size += 1 + strlen(t->addresses[i]);

        buf = malloc(size);
        if (!buf)
                return -ENOMEM;

        buf[OFFSET_VERSION] = TOKEN_VERSION;
        memcpy(buf + OFFSET_ID, t->id, TOKEN_ID_SIZE);
        memcpy(buf + OFFSET_SECRET, t->secret, TOKEN_SECRET_SIZE);
        memcpy(buf + OFFSET_PIN, t->ca_pin, TOKEN_PIN_SIZE);
        buf[OFFSET_N_ADDRESSES] = (uint8_t) t->n_addresses;
        p = OFFSET_ADDRESSES;
        for (size_t i = 0; i < t->n_addresses; i++) {
                size_t l = strlen(t->addresses[i]);

                buf[p++] = (uint8_t) l;
                memcpy(buf + p, t->addresses[i], l);
                p += l;
        }

        r = crypto_sha256(buf, p, digest);
        if (r < 0) {
                crypto_erase_and_free(buf, size);
                return r;
        }
        memcpy(buf + p, digest, TOKEN_CHECKSUM_SIZE);

        *ret = buf;
        *ret_size = size;
        return 0;
}

int token_to_string(const EnrollmentToken *t, char **ret) {
        uint8_t *payload = NULL;
        char *encoded = NULL, *s;
        size_t size = 0, l;
        int r;

        assert(t);
        assert(ret);

        if (!t->addresses)
                return -EINVAL;
        r = addresses_validate(t->addresses, t->n_addresses);
        if (r < 0)
                return log_debug_errno(r, "Enrollment token has an invalid controller address list.");

        r = token_payload_build(t, &payload, &size);
        if (r < 0)
                return r;

        r = base64url_encode(payload, size, &encoded);
        crypto_erase_and_free(payload, size);
        if (r < 0)
                return r;

        l = strlen(encoded);
        s = malloc(STRLEN(TOKEN_PREFIX) + l + 1);
        if (s) {
                memcpy(s, TOKEN_PREFIX, STRLEN(TOKEN_PREFIX));
                memcpy(s + STRLEN(TOKEN_PREFIX), encoded, l + 1);
        }
        crypto_erase_and_free(encoded, l);
        if (!s)
                return -ENOMEM;

        *ret = s;
        return 0;
}

static int token_fail(const char **ret_reason, int error, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return log_debug_errno(error, "Refusing enrollment token: %s", reason);
}

/* Parses a decoded payload whose checksum has not been looked at yet. */
static int token_payload_parse(const uint8_t *payload, size_t size, EnrollmentToken **ret,
                               const char **ret_reason) {
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        uint8_t digest[SHA256_DIGEST_SIZE];
        size_t n, p, end;
        int r;

        if (size < 1 + TOKEN_CHECKSUM_SIZE)
                return token_fail(ret_reason, -EBADMSG, "token is damaged or truncated (too short)");

        /* The checksum first: copy-paste damage anywhere, the version byte included, must read as damage,
         * not as an unsupported version or an unknown token. */
        end = size - TOKEN_CHECKSUM_SIZE;
        r = crypto_sha256(payload, end, digest);
        if (r < 0)
                return r;
        if (!crypto_memeq(digest, payload + end, TOKEN_CHECKSUM_SIZE))
                return token_fail(ret_reason, -EBADMSG, "token is damaged or truncated (checksum mismatch)");

        if (payload[OFFSET_VERSION] != TOKEN_VERSION)
                return token_fail(ret_reason, -EPROTONOSUPPORT,
                                  "token version is not supported (made by a newer ztna?)");

        if (size < PAYLOAD_FIXED_SIZE)
                return token_fail(ret_reason, -EBADMSG, "token is malformed (fixed fields incomplete)");

        n = payload[OFFSET_N_ADDRESSES];
        if (n == 0)
                return token_fail(ret_reason, -EBADMSG, "token has no controller address");
        if (n > TOKEN_ADDRESSES_MAX)
                return token_fail(ret_reason, -EBADMSG, "token has too many controller addresses");

        t = token_new();
        if (!t)
                return -ENOMEM;
        memcpy(t->id, payload + OFFSET_ID, TOKEN_ID_SIZE);
        memcpy(t->secret, payload + OFFSET_SECRET, TOKEN_SECRET_SIZE);
        memcpy(t->ca_pin, payload + OFFSET_PIN, TOKEN_PIN_SIZE);

        p = OFFSET_ADDRESSES;
        for (size_t i = 0; i < n; i++) {
                const char *a;
                size_t l;

                if (p >= end)
                        return token_fail(ret_reason, -EBADMSG,
                                          "token is malformed (address list truncated)");
                l = payload[p++];
                if (l > end - p)
                        return token_fail(ret_reason, -EBADMSG,
                                          "token is malformed (controller address runs past the end)");
                a = (const char *) payload + p;
                if (l == 0 || !address_is_valid(a, l))
                        return token_fail(ret_reason, -EBADMSG,
                                          "token has an invalid controller address (expected host:port)");

                t->addresses[i] = strndup(a, l);
                if (!t->addresses[i])
                        return -ENOMEM;
                t->n_addresses++;
                p += l;
        }
        if (p != end)
                return token_fail(ret_reason, -EBADMSG, "token is malformed (trailing bytes)");

        *ret = TAKE_PTR(t);
        return 0;
}

int token_from_string(const char *s, EnrollmentToken **ret, const char **ret_reason) {
        void *payload = NULL;
        size_t l, size = 0;
        int r;

        assert(s);
        assert(ret);

        l = strnlen(s, TOKEN_STRING_MAX + 1);
        if (l == 0)
                return token_fail(ret_reason, -EINVAL, "token is empty");
        if (l > TOKEN_STRING_MAX)
                return token_fail(ret_reason, -EMSGSIZE, "token is too long");
        /* Before the prefix check, so that an untrimmed " ztna1-…" gets the reason that helps. */
        if (strpbrk(s, " \t\n\r\v\f"))
                return token_fail(ret_reason, -EBADMSG, "token contains whitespace or line breaks");
        if (!strneq(s, TOKEN_PREFIX, STRLEN(TOKEN_PREFIX)))
                return token_fail(ret_reason, -EINVAL,
                                  "not a ztna enrollment token (expected the prefix '" TOKEN_PREFIX "')");

        r = base64url_decode(s + STRLEN(TOKEN_PREFIX), l - STRLEN(TOKEN_PREFIX), &payload, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return token_fail(ret_reason, -EBADMSG,
                                  "token is damaged or truncated (not valid base64url)");

        r = token_payload_parse(payload, size, ret, ret_reason);
        /* +1: the decoder's NUL terminator. */
        crypto_erase_and_free(payload, size + 1);
        return r;
}

int token_secret_hash(const uint8_t secret[TOKEN_SECRET_SIZE], uint8_t ret[TOKEN_HASH_SIZE]) {
        assert(secret);
        assert(ret);

        return crypto_sha256(secret, TOKEN_SECRET_SIZE, ret);
}

bool token_hash_equal(const uint8_t a[static TOKEN_HASH_SIZE], const uint8_t b[static TOKEN_HASH_SIZE]) {
        return crypto_memeq(a, b, TOKEN_HASH_SIZE);
}

bool token_secret_verify(const uint8_t secret[TOKEN_SECRET_SIZE],
                         const uint8_t stored_hash[TOKEN_HASH_SIZE]) {
        uint8_t h[TOKEN_HASH_SIZE];
        bool ok;

        assert(secret);
        assert(stored_hash);

        if (token_secret_hash(secret, h) < 0)
                return false;
        ok = crypto_memeq(h, stored_hash, sizeof(h));
        OPENSSL_cleanse(h, sizeof(h));
        return ok;
}

char *token_id_to_string(const uint8_t id[TOKEN_ID_SIZE]) {
        assert(id);

        return hexmem(id, TOKEN_ID_SIZE);
}
