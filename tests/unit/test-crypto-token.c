/* SPDX-License-Identifier: Apache-2.0 */

#include "crypto-token.h"
#include "crypto-util.h"
#include "hexdecoct.h"
#include "tests.h"

#define BASE64URL_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

static const uint8_t test_pin[TOKEN_PIN_SIZE] = {
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20,
};

static void assert_tokens_equal(const EnrollmentToken *a, const EnrollmentToken *b) {
        ASSERT_MEMEQ(a->id, b->id, TOKEN_ID_SIZE);
        ASSERT_MEMEQ(a->secret, b->secret, TOKEN_SECRET_SIZE);
        ASSERT_MEMEQ(a->ca_pin, b->ca_pin, TOKEN_PIN_SIZE);
        ASSERT_UEQ(a->n_addresses, b->n_addresses);
        for (size_t i = 0; i < a->n_addresses; i++)
                ASSERT_STREQ(a->addresses[i], b->addresses[i]);
        ASSERT_NULL(a->addresses[a->n_addresses]);
        ASSERT_NULL(b->addresses[b->n_addresses]);
}

TEST(round_trip) {
        char *one[] = { (char *) "ctl.example.com:8443", NULL };
        char *three[] = {
                (char *) "10.0.0.1:443", (char *) "[2001:db8::1]:8443", (char *) "localhost:1", NULL,
        };
        char *const *lists[] = { one, three };

        for (size_t i = 0; i < ELEMENTSOF(lists); i++) {
                _cleanup_(token_freep) EnrollmentToken *t = NULL, *u = NULL;
                _cleanup_erase_free_ char *s = NULL, *s2 = NULL;
                const char *reason = "untouched";

                CASE("list %zu", i);
                ASSERT_OK(token_generate(test_pin, lists[i], &t));
                ASSERT_MEMEQ(t->ca_pin, test_pin, TOKEN_PIN_SIZE);
                ASSERT_OK(token_to_string(t, &s));
                ASSERT_TRUE(strncmp(s, "ztna1-", 6) == 0);
                ASSERT_UEQ(strspn(s + 6, BASE64URL_ALPHABET), strlen(s + 6));
                ASSERT_OK(token_from_string(s, &u, &reason));
                /* Left alone on success. */
                ASSERT_STREQ(reason, "untouched");
                assert_tokens_equal(t, u);
                /* Canonical: the parsed token encodes to the very same string. */
                ASSERT_OK(token_to_string(u, &s2));
                ASSERT_STREQ(s, s2);
        }
}

TEST(largest_token_fits) {
        char addr[TOKEN_ADDRESSES_MAX][TOKEN_ADDRESS_MAX + 1];
        char *list[TOKEN_ADDRESSES_MAX + 1] = {};
        _cleanup_(token_freep) EnrollmentToken *t = NULL, *u = NULL;
        _cleanup_erase_free_ char *s = NULL;

        /* 8 addresses of 255 bytes: "<label>.<label>.<label>.<label>:65535" with 62-character labels. */
        for (size_t i = 0; i < TOKEN_ADDRESSES_MAX; i++) {
                memset(addr[i], 'a' + (int) i, 249);
                addr[i][62] = addr[i][125] = addr[i][188] = '.';
                memcpy(addr[i] + 249, ":65535", 7);
                ASSERT_UEQ(strlen(addr[i]), TOKEN_ADDRESS_MAX);
                list[i] = addr[i];
        }
        ASSERT_OK(token_generate(test_pin, list, &t));
        ASSERT_OK(token_to_string(t, &s));
        ASSERT_UEQ(strlen(s), 2852);
        ASSERT_LE(strlen(s), TOKEN_STRING_MAX);
        ASSERT_OK(token_from_string(s, &u, NULL));
        assert_tokens_equal(t, u);
}

static int cmp_id(const void *a, const void *b) {
        return memcmp(a, b, TOKEN_ID_SIZE);
}

static int cmp_secret(const void *a, const void *b) {
        return memcmp(a, b, TOKEN_SECRET_SIZE);
}

TEST(ids_and_secrets_are_unique) {
        char *list[] = { (char *) "ctl:443", NULL };
        enum { N = 1000 };
        static uint8_t ids[N][TOKEN_ID_SIZE], secrets[N][TOKEN_SECRET_SIZE];
        uint8_t zero[TOKEN_SECRET_SIZE] = {};

        for (size_t i = 0; i < N; i++) {
                _cleanup_(token_freep) EnrollmentToken *t = NULL;

                ASSERT_OK(token_generate(test_pin, list, &t));
                memcpy(ids[i], t->id, TOKEN_ID_SIZE);
                memcpy(secrets[i], t->secret, TOKEN_SECRET_SIZE);
        }
        qsort(ids, N, TOKEN_ID_SIZE, cmp_id);
        qsort(secrets, N, TOKEN_SECRET_SIZE, cmp_secret);
        for (size_t i = 1; i < N; i++) {
                CASE("%zu", i);
                ASSERT_TRUE(memcmp(ids[i - 1], ids[i], TOKEN_ID_SIZE) != 0);
                ASSERT_TRUE(memcmp(secrets[i - 1], secrets[i], TOKEN_SECRET_SIZE) != 0);
                ASSERT_TRUE(memcmp(secrets[i], zero, TOKEN_SECRET_SIZE) != 0);
        }
}

TEST(secret_hash_and_verify) {
        char *list[] = { (char *) "ctl:443", NULL };
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_erase_free_ char *s = NULL;
        _cleanup_free_ char *hash_hex = NULL, *secret_hex = NULL;
        uint8_t hash[TOKEN_HASH_SIZE], expected[TOKEN_HASH_SIZE], secret[TOKEN_SECRET_SIZE];

        ASSERT_OK(token_generate(test_pin, list, &t));
        ASSERT_OK(token_secret_hash(t->secret, hash));
        ASSERT_OK(crypto_sha256(t->secret, TOKEN_SECRET_SIZE, expected));
        ASSERT_MEMEQ(hash, expected, TOKEN_HASH_SIZE);

        /* The token carries the secret, never what the database stores. */
        ASSERT_OK(token_to_string(t, &s));
        hash_hex = ASSERT_NOT_NULL(hexmem(hash, sizeof(hash)));
        ASSERT_NULL(strstr(s, hash_hex));
        secret_hex = ASSERT_NOT_NULL(hexmem(t->secret, TOKEN_SECRET_SIZE));
        ASSERT_NULL(strstr(s, secret_hex));

        ASSERT_TRUE(token_secret_verify(t->secret, hash));
        for (size_t bit = 0; bit < TOKEN_SECRET_SIZE * 8; bit++) {
                CASE("secret bit %zu", bit);
                memcpy(secret, t->secret, sizeof(secret));
                secret[bit / 8] ^= (uint8_t) (1u << (bit % 8));
                ASSERT_FALSE(token_secret_verify(secret, hash));
        }
        for (size_t bit = 0; bit < TOKEN_HASH_SIZE * 8; bit += 7) {
                CASE("hash bit %zu", bit);
                memcpy(expected, hash, sizeof(expected));
                expected[bit / 8] ^= (uint8_t) (1u << (bit % 8));
                ASSERT_FALSE(token_secret_verify(t->secret, expected));
        }

        /* Known answer: SHA-256 of 32 zero bytes. */
        static const char zero_hash[] = "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";
        _cleanup_free_ char *h = NULL;
        memset(secret, 0, sizeof(secret));
        ASSERT_OK(token_secret_hash(secret, hash));
        h = ASSERT_NOT_NULL(hexmem(hash, sizeof(hash)));
        ASSERT_STREQ(h, zero_hash);
}

TEST(id_to_string) {
        static const uint8_t id[TOKEN_ID_SIZE] = {
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        };
        _cleanup_free_ char *s = NULL;

        s = ASSERT_NOT_NULL(token_id_to_string(id));
        ASSERT_STREQ(s, "00112233445566778899aabbccddeeff");
}

TEST(addresses_accepted_and_canonicalized) {
        static const struct {
                const char *in;
                const char *stored;
        } good[] = {
                { "ctl:443",                   "ctl:443" },
                { "localhost:1",               "localhost:1" },
                { "ctl.example.com:65535",     "ctl.example.com:65535" },
                { "a-b.c-d:8443",              "a-b.c-d:8443" },
                { "xn--bcher-kva.example:443", "xn--bcher-kva.example:443" },
                { "123abc:443",                "123abc:443" },
                { "10.0.0.1:443",              "10.0.0.1:443" },
                { "255.255.255.255:443",       "255.255.255.255:443" },
                { "[::1]:443",                 "[::1]:443" },
                { "[2001:db8::1]:8443",        "[2001:db8::1]:8443" },
                { "[::ffff:192.0.2.1]:443",    "[::ffff:192.0.2.1]:443" },
                /* One spelling per address: the token stores the canonical form. */
                { "CTL.Example.COM:443",       "ctl.example.com:443" },
                { "ctl:0443",                  "ctl:443" },
                { "[2001:DB8:0:0::1]:443",     "[2001:db8::1]:443" },
                { "[0::1]:443",                "[::1]:443" },
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                char *list[] = { (char *) good[i].in, NULL };
                _cleanup_(token_freep) EnrollmentToken *t = NULL, *u = NULL;
                _cleanup_erase_free_ char *s = NULL;

                CASE("'%s'", good[i].in);
                ASSERT_OK(token_generate(test_pin, list, &t));
                ASSERT_STREQ(t->addresses[0], good[i].stored);
                ASSERT_OK(token_to_string(t, &s));
                ASSERT_OK(token_from_string(s, &u, NULL));
                ASSERT_STREQ(u->addresses[0], good[i].stored);
        }
}

static const char *const bad_addresses[] = {
        "ctl",                  /* no port */
        "ctl:",                 /* empty port */
        ":443",                 /* empty host */
        "ctl:0",                /* port 0 */
        "ctl:65536",            /* port out of range */
        "ctl:99999",
        "ctl:123456",
        "ctl:+443",
        "ctl:-1",
        "ctl:44a",
        "ctl: 443",
        "ctl :443",
        "ctl.example.com.:443", /* trailing dot */
        ".ctl:443",
        "ctl..example:443",
        "-ctl:443",             /* label starts with '-' */
        "ctl-:443",             /* label ends with '-' */
        "ctl_1:443",            /* underscore */
        "ctl/x:443",
        "user@ctl:443",
        "1.2.3.999:443",        /* numeric last label but not IPv4 */
        "1.2.3:443",
        "::1:443",              /* IPv6 must be bracketed */
        "[::1]",                /* no port */
        "[::1:443",
        "::1]:443",
        "[]:443",
        "[ctl]:443",
        "[1.2.3.4]:443",
        "[::1]x:443",
        "ctl:443:443",
        "ctl\xc3\xa9:443",     /* non-ASCII */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example:443", /* 64-char label */
        "",
};

TEST(addresses_refused_by_generate) {
        for (size_t i = 0; i < ELEMENTSOF(bad_addresses); i++) {
                char *list[] = { (char *) "ok:443", (char *) bad_addresses[i], NULL };
                EnrollmentToken *t = NULL;

                CASE("'%s'", bad_addresses[i]);
                ASSERT_ERROR(token_generate(test_pin, list, &t), EINVAL);
                ASSERT_NULL(t);
        }
}

TEST(generate_address_count_and_length) {
        char *none[] = { NULL };
        char *nine[TOKEN_ADDRESSES_MAX + 2];
        char *eight[TOKEN_ADDRESSES_MAX + 1];
        char longest[TOKEN_ADDRESS_MAX + 2];
        char *too_long[] = { longest, NULL };
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        EnrollmentToken *u = NULL;

        for (size_t i = 0; i < TOKEN_ADDRESSES_MAX + 1; i++)
                nine[i] = (char *) "ctl:443";
        nine[TOKEN_ADDRESSES_MAX + 1] = NULL;
        memcpy(eight, nine, sizeof(eight));
        eight[TOKEN_ADDRESSES_MAX] = NULL;

        ASSERT_ERROR(token_generate(test_pin, none, &u), EINVAL);
        ASSERT_ERROR(token_generate(test_pin, nine, &u), EINVAL);
        ASSERT_NULL(u);
        ASSERT_OK(token_generate(test_pin, eight, &t));
        ASSERT_UEQ(t->n_addresses, TOKEN_ADDRESSES_MAX);

        /* 256 bytes: one more than a length byte can carry. */
        memset(longest, 'a', sizeof(longest) - 1);
        longest[62] = longest[125] = longest[188] = longest[240] = '.';
        memcpy(longest + TOKEN_ADDRESS_MAX + 1 - 4, ":443", 5);
        ASSERT_UEQ(strlen(longest), TOKEN_ADDRESS_MAX + 1);
        ASSERT_ERROR(token_generate(test_pin, too_long, &u), EINVAL);
}

TEST(to_string_refuses_invalid_fields) {
        char *list[] = { (char *) "ctl:443", (char *) "ctl2:443", NULL };
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        char *s = NULL, *saved;

        ASSERT_OK(token_generate(test_pin, list, &t));

        t->n_addresses = 0;
        ASSERT_ERROR(token_to_string(t, &s), EINVAL);
        t->n_addresses = TOKEN_ADDRESSES_MAX + 1;
        ASSERT_ERROR(token_to_string(t, &s), EINVAL);
        t->n_addresses = 2;

        saved = t->addresses[1];
        t->addresses[1] = (char *) "ctl:0";
        ASSERT_ERROR(token_to_string(t, &s), EINVAL);
        t->addresses[1] = saved;
        ASSERT_NULL(s);
}

/* Builds a token string from raw parts, so that the parser can be fed payloads the encoder never writes
 * yet with a correct checksum (unless asked otherwise). */
/* Every field's zero value means "as the encoder would write it". */
typedef struct RawAddress {
        const char *data;
        size_t size;      /* bytes of data; 0: strlen(data) */
        bool set_len;     /* write len as the length byte instead of the real length */
        uint8_t len;
} RawAddress;

typedef struct RawToken {
        bool set_version; /* write version instead of 1 */
        uint8_t version;
        bool set_count;   /* write count instead of the number of addresses given */
        uint8_t count;
        RawAddress addresses[TOKEN_ADDRESSES_MAX + 2];
        size_t n_given;
        const char *trailing; /* extra payload bytes before the checksum */
        bool flip_checksum;
        size_t truncate;  /* payload bytes to keep before the checksum; 0: all */
} RawToken;

static char *raw_token_to_string(const RawToken *r) {
        uint8_t buf[4096], digest[SHA256_DIGEST_SIZE];
        _cleanup_free_ char *b64 = NULL;
        size_t p = 0;
        char *s;

        buf[p++] = r->set_version ? r->version : TOKEN_VERSION;
        memset(buf + p, 0x11, TOKEN_ID_SIZE);
        p += TOKEN_ID_SIZE;
        memset(buf + p, 0x22, TOKEN_SECRET_SIZE);
        p += TOKEN_SECRET_SIZE;
        memcpy(buf + p, test_pin, TOKEN_PIN_SIZE);
        p += TOKEN_PIN_SIZE;
        buf[p++] = r->set_count ? r->count : (uint8_t) r->n_given;
        for (size_t i = 0; i < r->n_given; i++) {
                const RawAddress *a = &r->addresses[i];
                size_t size = a->size ?: strlen(a->data);

                buf[p++] = a->set_len ? a->len : (uint8_t) size;
                memcpy(buf + p, a->data, size);
                p += size;
        }
        if (r->trailing) {
                memcpy(buf + p, r->trailing, strlen(r->trailing));
                p += strlen(r->trailing);
        }
        if (r->truncate > 0)
                p = r->truncate;
        ASSERT_OK(crypto_sha256(buf, p, digest));
        memcpy(buf + p, digest, TOKEN_CHECKSUM_SIZE);
        if (r->flip_checksum)
                buf[p] ^= 0x01;
        p += TOKEN_CHECKSUM_SIZE;

        ASSERT_OK(base64url_encode(buf, p, &b64));
        ASSERT_TRUE(asprintf(&s, "ztna1-%s", b64) >= 0);
        return s;
}

#define RAW(...) { __VA_ARGS__ }
#define ADDR(s) { .data = (s) }
#define LEN(n) .set_len = true, .len = (n)
#define VERSION(v) .set_version = true, .version = (v)
#define COUNT(n) .set_count = true, .count = (n)
#define ONE_ADDR .addresses = { ADDR("ctl.example.com:443") }, .n_given = 1

TEST(raw_builder_sanity) {
        /* The builder itself produces a token the parser accepts; otherwise the negative table below
         * would prove nothing. */
        static const RawToken raw = RAW(ONE_ADDR);
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_free_ char *s = NULL;
        uint8_t id[TOKEN_ID_SIZE];

        s = raw_token_to_string(&raw);
        ASSERT_OK(token_from_string(s, &t, NULL));
        memset(id, 0x11, sizeof(id));
        ASSERT_MEMEQ(t->id, id, sizeof(id));
        ASSERT_UEQ(t->n_addresses, 1);
        ASSERT_STREQ(t->addresses[0], "ctl.example.com:443");
}

/* One row per parser rule. Either a literal string, or a raw token, or a mutation of a valid string. */
typedef enum Mutation {
        MUT_NONE,
        MUT_LITERAL,
        MUT_PREFIX_VERSION,  /* "ztna2-…" */
        MUT_PREFIX_CASE,     /* "ZTNA1-…" */
        MUT_PREFIX_ONLY,     /* "ztna1-" */
        MUT_TOO_LONG,
        MUT_CHAR_PLUS,       /* one character replaced by '+' */
        MUT_CHAR_DOT,
        MUT_CHAR_NONASCII,
        MUT_PADDING,         /* the '=' padding standard base64 would add */
        MUT_NON_CANONICAL,   /* unused low bits of the last character set */
        MUT_TRUNCATE_1,      /* last character dropped */
        MUT_TRUNCATE_4,      /* last 4 characters dropped (still a valid base64url length) */
        MUT_TRUNCATE_HALF,
        MUT_APPEND_AAAA,     /* 3 extra zero bytes in the encoding */
        MUT_TRAILING_NEWLINE,
        MUT_LEADING_SPACE,
        MUT_INNER_SPACE,
} Mutation;

static const struct {
        const char *name;
        Mutation mutation;
        const char *literal;
        RawToken raw;
        int error;
        const char *reason;
} bad_tokens[] = {
        { "empty",                MUT_LITERAL, "",          RAW(ONE_ADDR), EINVAL,   "empty" },
        { "wrong prefix",         MUT_LITERAL, "wg1-AAAA",  RAW(ONE_ADDR), EINVAL,   "prefix" },
        { "prefix ztna2-",        MUT_PREFIX_VERSION, NULL, RAW(ONE_ADDR), EINVAL,   "prefix" },
        { "prefix upper case",    MUT_PREFIX_CASE, NULL,    RAW(ONE_ADDR), EINVAL,   "prefix" },
        { "prefix only",          MUT_PREFIX_ONLY, NULL,    RAW(ONE_ADDR), EBADMSG,  "truncated" },
        { "too long",             MUT_TOO_LONG, NULL,       RAW(ONE_ADDR), EMSGSIZE, "too long" },
        { "bad char '+'",         MUT_CHAR_PLUS, NULL,      RAW(ONE_ADDR), EBADMSG,  "base64url" },
        { "bad char '.'",         MUT_CHAR_DOT, NULL,       RAW(ONE_ADDR), EBADMSG,  "base64url" },
        { "bad char non-ASCII",   MUT_CHAR_NONASCII, NULL,  RAW(ONE_ADDR), EBADMSG,  "base64url" },
        { "padding",              MUT_PADDING, NULL,        RAW(ONE_ADDR), EBADMSG,  "base64url" },
        { "non-canonical",        MUT_NON_CANONICAL, NULL,  RAW(ONE_ADDR), EBADMSG,  "base64url" },
        { "truncated by 1",       MUT_TRUNCATE_1, NULL,     RAW(ONE_ADDR), EBADMSG,  "truncated" },
        { "truncated by 4",       MUT_TRUNCATE_4, NULL,     RAW(ONE_ADDR), EBADMSG,  "truncated" },
        { "truncated by half",    MUT_TRUNCATE_HALF, NULL,  RAW(ONE_ADDR), EBADMSG,  "truncated" },
        { "trailing encoded bytes", MUT_APPEND_AAAA, NULL,  RAW(ONE_ADDR), EBADMSG,  "damaged" },
        { "trailing newline",     MUT_TRAILING_NEWLINE, NULL, RAW(ONE_ADDR), EBADMSG, "whitespace" },
        { "leading space",        MUT_LEADING_SPACE, NULL,  RAW(ONE_ADDR), EBADMSG,  "whitespace" },
        { "inner space",          MUT_INNER_SPACE, NULL,    RAW(ONE_ADDR), EBADMSG,  "whitespace" },
        { "trailing payload bytes", MUT_NONE, NULL, RAW(ONE_ADDR, .trailing = "x"), EBADMSG, "trailing" },
        { "version 2",            MUT_NONE, NULL, RAW(ONE_ADDR, VERSION(2)), EPROTONOSUPPORT, "version" },
        { "version 0",            MUT_NONE, NULL, RAW(ONE_ADDR, VERSION(0)), EPROTONOSUPPORT, "version" },
        { "version 2, damaged",   MUT_NONE, NULL, RAW(ONE_ADDR, VERSION(2), .flip_checksum = true),
          EBADMSG, "checksum" },
        { "checksum flipped",     MUT_NONE, NULL, RAW(ONE_ADDR, .flip_checksum = true),
          EBADMSG, "checksum" },
        { "fixed fields cut",     MUT_NONE, NULL, RAW(ONE_ADDR, .truncate = 50), EBADMSG, "incomplete" },
        { "only a version byte",  MUT_NONE, NULL, RAW(ONE_ADDR, .truncate = 1), EBADMSG, "incomplete" },
        { "zero addresses",       MUT_NONE, NULL, RAW(.n_given = 0), EBADMSG, "no controller address" },
        { "nine addresses",       MUT_NONE, NULL,
          RAW(.addresses = { ADDR("a:1"), ADDR("b:1"), ADDR("c:1"), ADDR("d:1"), ADDR("e:1"), ADDR("f:1"),
                             ADDR("g:1"), ADDR("h:1"), ADDR("i:1") }, .n_given = 9),
          EBADMSG, "too many" },
        { "count above given",    MUT_NONE, NULL, RAW(ONE_ADDR, COUNT(2)), EBADMSG, "list truncated" },
        { "count below given",    MUT_NONE, NULL,
          RAW(.addresses = { ADDR("a:1"), ADDR("b:1") }, .n_given = 2, COUNT(1)), EBADMSG, "trailing" },
        { "address without port", MUT_NONE, NULL, RAW(.addresses = { ADDR("ctl.example") }, .n_given = 1),
          EBADMSG, "host:port" },
        { "address port 0",       MUT_NONE, NULL, RAW(.addresses = { ADDR("ctl:0") }, .n_given = 1),
          EBADMSG, "host:port" },
        { "address port 65536",   MUT_NONE, NULL, RAW(.addresses = { ADDR("ctl:65536") }, .n_given = 1),
          EBADMSG, "host:port" },
        { "address empty",        MUT_NONE, NULL,
          RAW(.addresses = { { .data = "", LEN(0) } }, .n_given = 1), EBADMSG, "host:port" },
        { "address with NUL",     MUT_NONE, NULL,
          RAW(.addresses = { { .data = "ctl\0x:443", .size = 9 } }, .n_given = 1), EBADMSG, "host:port" },
        { "address NUL at end",   MUT_NONE, NULL,
          RAW(.addresses = { { .data = "ctl:443\0", .size = 8 } }, .n_given = 1), EBADMSG, "host:port" },
        { "address len past end", MUT_NONE, NULL,
          RAW(.addresses = { { .data = "ctl:443", LEN(200) } }, .n_given = 1), EBADMSG, "past the end" },
        { "address upper case",   MUT_NONE, NULL, RAW(.addresses = { ADDR("CTL:443") }, .n_given = 1),
          EBADMSG, "host:port" },
        { "address port leading 0", MUT_NONE, NULL, RAW(.addresses = { ADDR("ctl:0443") }, .n_given = 1),
          EBADMSG, "host:port" },
        { "address IPv6 not canonical", MUT_NONE, NULL,
          RAW(.addresses = { ADDR("[0::1]:443") }, .n_given = 1), EBADMSG, "host:port" },
        { "address IPv6 unbracketed", MUT_NONE, NULL, RAW(.addresses = { ADDR("::1:443") }, .n_given = 1),
          EBADMSG, "host:port" },
        { "second address bad",   MUT_NONE, NULL,
          RAW(.addresses = { ADDR("ctl:443"), ADDR("[::1]") }, .n_given = 2), EBADMSG, "host:port" },
};

static char *mutate(const char *valid, Mutation m) {
        size_t l = strlen(valid);
        char *s;

        switch (m) {
        case MUT_NONE:
                return strdup(valid);
        case MUT_PREFIX_VERSION:
                s = strdup(valid);
                s[4] = '2';
                return s;
        case MUT_PREFIX_CASE:
                s = strdup(valid);
                memcpy(s, "ZTNA1-", 6);
                return s;
        case MUT_PREFIX_ONLY:
                return strdup("ztna1-");
        case MUT_TOO_LONG:
                s = malloc(TOKEN_STRING_MAX + 2);
                memcpy(s, valid, l);
                memset(s + l, 'A', TOKEN_STRING_MAX + 1 - l);
                s[TOKEN_STRING_MAX + 1] = '\0';
                return s;
        case MUT_CHAR_PLUS:
                s = strdup(valid);
                s[l / 2] = '+';
                return s;
        case MUT_CHAR_DOT:
                s = strdup(valid);
                s[l / 2] = '.';
                return s;
        case MUT_CHAR_NONASCII:
                s = strdup(valid);
                s[l / 2] = (char) 0xc3;
                return s;
        case MUT_PADDING: {
                size_t pad = (4 - (l - 6) % 4) % 4;

                /* The builder's token must need padding, or this row would test nothing. */
                ASSERT_NE(pad, 0);
                ASSERT_TRUE(asprintf(&s, "%s%.*s", valid, (int) pad, "==") >= 0);
                return s;
        }
        case MUT_NON_CANONICAL: {
                static const char alphabet[] = BASE64URL_ALPHABET;
                const char *c;

                ASSERT_NE((l - 6) % 4, 0);
                s = strdup(valid);
                c = strchr(alphabet, s[l - 1]);
                ASSERT_NOT_NULL(c);
                /* The lowest bit of the last character never carries data when the length is not a
                 * multiple of 4. */
                ASSERT_EQ((c - alphabet) & 1, 0);
                s[l - 1] = alphabet[(c - alphabet) | 1];
                return s;
        }
        case MUT_TRUNCATE_1:
                s = strdup(valid);
                s[l - 1] = '\0';
                return s;
        case MUT_TRUNCATE_4:
                s = strdup(valid);
                s[l - 4] = '\0';
                return s;
        case MUT_TRUNCATE_HALF:
                s = strdup(valid);
                s[l / 2] = '\0';
                return s;
        case MUT_APPEND_AAAA:
                ASSERT_TRUE(asprintf(&s, "%sAAAA", valid) >= 0);
                return s;
        case MUT_TRAILING_NEWLINE:
                ASSERT_TRUE(asprintf(&s, "%s\n", valid) >= 0);
                return s;
        case MUT_LEADING_SPACE:
                ASSERT_TRUE(asprintf(&s, " %s", valid) >= 0);
                return s;
        case MUT_INNER_SPACE:
                ASSERT_TRUE(asprintf(&s, "%.*s %s", (int) (l / 2), valid, valid + l / 2) >= 0);
                return s;
        case MUT_LITERAL:
                break;
        }
        abort();
}

TEST(parser_rules) {
        for (size_t i = 0; i < ELEMENTSOF(bad_tokens); i++) {
                _cleanup_free_ char *valid = NULL, *s = NULL;
                EnrollmentToken *t = NULL;
                const char *reason = NULL;
                char head[9];

                CASE("%s", bad_tokens[i].name);
                valid = raw_token_to_string(&bad_tokens[i].raw);
                if (bad_tokens[i].mutation == MUT_LITERAL)
                        s = strdup(bad_tokens[i].literal);
                else
                        s = mutate(valid, bad_tokens[i].mutation);
                ASSERT_NOT_NULL(s);

                ASSERT_ERROR(token_from_string(s, &t, &reason), bad_tokens[i].error);
                ASSERT_NULL(t);
                ASSERT_NOT_NULL(reason);
                ASSERT_STRSTR(reason, bad_tokens[i].reason);
                /* Reasons are fixed sentences, never echo token bytes. */
                snprintf(head, sizeof(head), "%s", valid + 6);
                ASSERT_NULL(strstr(reason, head));
                /* NULL ret_reason is allowed and gives the same error. */
                ASSERT_ERROR(token_from_string(s, &t, NULL), bad_tokens[i].error);
        }
}

TEST(every_truncation_is_refused) {
        char *list[] = { (char *) "ctl.example.com:443", (char *) "[::1]:8443", NULL };
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_erase_free_ char *s = NULL;
        size_t l;

        ASSERT_OK(token_generate(test_pin, list, &t));
        ASSERT_OK(token_to_string(t, &s));
        l = strlen(s);
        for (size_t k = 0; k < l; k++) {
                _cleanup_free_ char *cut = strndup(s, k);
                EnrollmentToken *u = NULL;
                const char *reason = NULL;

                CASE("first %zu of %zu characters", k, l);
                ASSERT_NOT_NULL(cut);
                ASSERT_ERROR(token_from_string(cut, &u, &reason), k < 6 ? EINVAL : EBADMSG);
                ASSERT_NULL(u);
                ASSERT_NOT_NULL(reason);
        }
}

TEST(every_bit_flip_is_refused) {
        char *list[] = { (char *) "ctl.example.com:443", NULL };
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        _cleanup_erase_free_ char *s = NULL;
        size_t l;

        ASSERT_OK(token_generate(test_pin, list, &t));
        ASSERT_OK(token_to_string(t, &s));
        l = strlen(s);
        /* Damage in the base64url part never yields a token: bad character, non-canonical or checksum. */
        for (size_t i = 6; i < l; i++)
                for (int bit = 0; bit < 7; bit++) {
                        _cleanup_free_ char *d = strdup(s);
                        EnrollmentToken *u = NULL;

                        CASE("char %zu bit %d", i, bit);
                        ASSERT_NOT_NULL(d);
                        d[i] ^= (char) (1 << bit);
                        ASSERT_ERROR(token_from_string(d, &u, NULL), EBADMSG);
                        ASSERT_NULL(u);
                }
}
