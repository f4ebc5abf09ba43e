/* SPDX-License-Identifier: Apache-2.0 */
/* token_from_string() on arbitrary bytes. Besides the sanitizers' checks, it asserts canonical encoding:
 * whatever the parser accepts, token_to_string() reproduces byte for byte, so one token has exactly one
 * spelling and nothing the parser ignores can hide in a token.
 *
 * A fuzzer cannot forge the SHA-256 checksum at the end of the payload, so each input is tried twice:
 * as it is, and with the checksum recomputed by this harness — which lets fuzzing reach the version and
 * address parsing behind the checksum without weakening the production parser. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto-token.h"
#include "crypto-util.h"
#include "fuzz.h"
#include "hexdecoct.h"
#include "macro.h"
#include "string-util.h"

static void check_one(const char *s) {
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_erase_free_ char *out = NULL;
        const char *reason = NULL;
        int r;

        r = token_from_string(s, &t, &reason);
        if (r < 0) {
                /* Every refusal explains itself (allocation failure aside). */
                if (r != -ENOMEM && !reason)
                        abort();
                return;
        }
        if (!t || t->n_addresses < 1 || t->n_addresses > TOKEN_ADDRESSES_MAX)
                abort();
        if (token_to_string(t, &out) < 0)
                abort();
        if (!streq(out, s))
                abort();
}

/* "ztna1-" + base64url(payload with a correct checksum), or NULL when the input does not decode. */
static char *with_fixed_checksum(const char *s) {
        _cleanup_free_ uint8_t *payload = NULL;
        _cleanup_free_ char *b64 = NULL;
        uint8_t digest[SHA256_DIGEST_SIZE];
        size_t n = 0;
        const char *p;

        p = startswith(s, TOKEN_PREFIX);
        if (!p || base64url_decode(p, strlen(p), (void **) &payload, &n) < 0 || n <= TOKEN_CHECKSUM_SIZE)
                return NULL;
        if (crypto_sha256(payload, n - TOKEN_CHECKSUM_SIZE, digest) < 0)
                return NULL;
        memcpy(payload + n - TOKEN_CHECKSUM_SIZE, digest, TOKEN_CHECKSUM_SIZE);
        if (base64url_encode(payload, n, &b64) < 0)
                return NULL;
        return strjoin(TOKEN_PREFIX, b64, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *copy = NULL, *fixed = NULL;

        /* Longer inputs are refused by length alone; no need to copy megabytes. */
        if (size > TOKEN_STRING_MAX + 16)
                size = TOKEN_STRING_MAX + 16;

        copy = malloc(size + 1);
        if (!copy)
                return 0;
        memcpy(copy, data, size);
        copy[size] = '\0';

        check_one(copy);
        fixed = with_fixed_checksum(copy);
        if (fixed)
                check_one(fixed);
        return 0;
}
