/* SPDX-License-Identifier: Apache-2.0 */

#include <stdio.h>

#include "hashmap.h"
#include "tests.h"

/* Reference vectors of SipHash-2-4 (veorq/SipHash vectors.h, the paper's Appendix A): key 00 01 … 0f,
 * message 00 01 … (len-1). */
TEST(siphash24_reference_vectors) {
        static const struct {
                size_t len;
                uint64_t expected;
        } table[] = {
                { 0, UINT64_C(0x726fdb47dd0e0e31) },
                { 1, UINT64_C(0x74f839c593dc67fd) },
                { 2, UINT64_C(0x0d6c8009d9a94f5a) },
                { 3, UINT64_C(0x85676696d7fb7e2d) },
                { 7, UINT64_C(0xab0200f58b01d137) },
                { 8, UINT64_C(0x93f5f5799a932462) },
                { 15, UINT64_C(0xa129ca6149be45e5) }, /* the paper's worked example */
                { 16, UINT64_C(0x3f2acc7f57c29bdb) },
                { 63, UINT64_C(0x958a324ceb064572) },
        };
        uint8_t key[16], msg[64];

        for (size_t i = 0; i < sizeof(key); i++)
                key[i] = (uint8_t) i;
        for (size_t i = 0; i < sizeof(msg); i++)
                msg[i] = (uint8_t) i;
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("length %zu", table[i].len);
                ASSERT_UEQ(siphash24(msg, table[i].len, key), table[i].expected);
        }
}

TEST(siphash24_depends_on_the_key) {
        uint8_t key[16] = {}, other[16] = {};

        other[15] = 1;
        ASSERT_TRUE(siphash24("spiffe://ztna.test/connector/a", 30, key) !=
                    siphash24("spiffe://ztna.test/connector/a", 30, other));
}

TEST(put_get_remove) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        int a = 1, b = 2;

        ASSERT_OK(hashmap_new(&h));
        ASSERT_TRUE(hashmap_isempty(h));
        ASSERT_NULL(hashmap_get(h, "a"));
        ASSERT_NULL(hashmap_remove(h, "a"));

        ASSERT_EQ(hashmap_put(h, "a", &a), 0);
        ASSERT_TRUE(hashmap_get(h, "a") == &a);
        ASSERT_EQ(hashmap_size(h), 1);
        ASSERT_FALSE(hashmap_isempty(h));

        /* A present key is refused and keeps its value. */
        ASSERT_ERROR(hashmap_put(h, "a", &b), EEXIST);
        ASSERT_TRUE(hashmap_get(h, "a") == &a);
        ASSERT_EQ(hashmap_size(h), 1);

        /* Keys differ by content, not by prefix; "" is a key like any other. */
        ASSERT_NULL(hashmap_get(h, "aa"));
        ASSERT_NULL(hashmap_get(h, ""));
        ASSERT_OK(hashmap_put(h, "", &b));
        ASSERT_TRUE(hashmap_get(h, "") == &b);
        ASSERT_EQ(hashmap_size(h), 2);

        ASSERT_TRUE(hashmap_remove(h, "a") == &a);
        ASSERT_NULL(hashmap_get(h, "a"));
        ASSERT_NULL(hashmap_remove(h, "a"));
        ASSERT_EQ(hashmap_size(h), 1);
        ASSERT_TRUE(hashmap_get(h, "") == &b);

        /* A removed key can come back. */
        ASSERT_OK(hashmap_put(h, "a", &b));
        ASSERT_TRUE(hashmap_get(h, "a") == &b);
}

TEST(replace) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        int a = 1, b = 2;
        void *old = &a;

        ASSERT_OK(hashmap_new(&h));
        /* Absent: added, 0, and *ret_old NULL. */
        ASSERT_EQ(hashmap_replace(h, "k", &a, &old), 0);
        ASSERT_NULL(old);
        ASSERT_TRUE(hashmap_get(h, "k") == &a);
        /* Present: replaced, 1, the old value handed back. */
        ASSERT_EQ(hashmap_replace(h, "k", &b, &old), 1);
        ASSERT_TRUE(old == &a);
        ASSERT_TRUE(hashmap_get(h, "k") == &b);
        ASSERT_EQ(hashmap_size(h), 1);
        /* ret_old may be NULL. */
        ASSERT_EQ(hashmap_replace(h, "k", &a, NULL), 1);
        ASSERT_TRUE(hashmap_get(h, "k") == &a);
}

TEST(keys_are_copied) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        char buf[] = "spiffe://ztna.test/tunneler/t1";
        const char *k;
        int a = 1, *v;

        ASSERT_OK(hashmap_new(&h));
        ASSERT_OK(hashmap_put(h, buf, &a));
        buf[0] = 'X';
        ASSERT_NULL(hashmap_get(h, buf));
        ASSERT_TRUE(hashmap_get(h, "spiffe://ztna.test/tunneler/t1") == &a);
        HASHMAP_FOREACH_KEY(v, k, h) {
                ASSERT_STREQ(k, "spiffe://ztna.test/tunneler/t1");
                ASSERT_TRUE(k != buf);
                ASSERT_TRUE(v == &a);
        }
}

TEST(null_map) {
        HashmapIter i = HASHMAP_ITER_INIT;

        ASSERT_EQ(hashmap_size(NULL), 0);
        ASSERT_TRUE(hashmap_isempty(NULL));
        ASSERT_NULL(hashmap_get(NULL, "a"));
        ASSERT_NULL(hashmap_remove(NULL, "a"));
        ASSERT_FALSE(hashmap_iterate(NULL, &i, NULL, NULL));
        ASSERT_NULL(hashmap_free(NULL));
}

#define N_ITER 1000

static void fill(Hashmap *h, int *values, size_t n) {
        char key[32];

        for (size_t i = 0; i < n; i++) {
                values[i] = (int) i;
                snprintf(key, sizeof(key), "key-%zu", i);
                ASSERT_OK(hashmap_put(h, key, &values[i]));
        }
}

TEST(iteration_visits_each_entry_once) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        static int values[N_ITER];
        unsigned seen[N_ITER] = {};
        size_t n = 0;
        const char *k;
        char key[32];
        int *v;

        ASSERT_OK(hashmap_new(&h));
        /* An empty map iterates nothing. */
        HASHMAP_FOREACH_KEY(v, k, h)
                test_fail(__FILE__, __LINE__, "iterated an empty map");

        fill(h, values, N_ITER);
        HASHMAP_FOREACH_KEY(v, k, h) {
                ASSERT_GE(*v, 0);
                ASSERT_LT(*v, N_ITER);
                snprintf(key, sizeof(key), "key-%i", *v);
                ASSERT_STREQ(k, key);
                seen[*v]++;
                n++;
        }
        ASSERT_EQ(n, N_ITER);
        for (size_t i = 0; i < N_ITER; i++) {
                CASE("key-%zu", i);
                ASSERT_EQ(seen[i], 1);
        }
}

TEST(remove_current_key_during_iteration) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        static int values[N_ITER];
        unsigned seen[N_ITER] = {};
        size_t n = 0;
        const char *k;
        char key[32];
        int *v;

        ASSERT_OK(hashmap_new(&h));
        fill(h, values, N_ITER);
        /* Remove the odd ones while iterating: every entry is still visited exactly once. */
        HASHMAP_FOREACH_KEY(v, k, h) {
                seen[*v]++;
                n++;
                if (*v % 2 == 1)
                        ASSERT_TRUE(hashmap_remove(h, k) == v);
        }
        ASSERT_EQ(n, N_ITER);
        ASSERT_EQ(hashmap_size(h), N_ITER / 2);
        for (size_t i = 0; i < N_ITER; i++) {
                CASE("key-%zu", i);
                ASSERT_EQ(seen[i], 1);
                snprintf(key, sizeof(key), "key-%zu", i);
                if (i % 2 == 1)
                        ASSERT_NULL(hashmap_get(h, key));
                else
                        ASSERT_TRUE(hashmap_get(h, key) == &values[i]);
        }

        /* Removing everything while iterating (the last removal empties the table) ends cleanly. */
        n = 0;
        HASHMAP_FOREACH_KEY(v, k, h) {
                ASSERT_TRUE(hashmap_remove(h, k) == v);
                n++;
        }
        ASSERT_EQ(n, N_ITER / 2);
        ASSERT_TRUE(hashmap_isempty(h));
        HASHMAP_FOREACH_KEY(v, k, h)
                test_fail(__FILE__, __LINE__, "iterated an emptied map");
}

#define N_LARGE 100000

TEST(hundred_thousand_entries) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        static int values[N_LARGE];
        char key[48];

        ASSERT_OK(hashmap_new(&h));
        for (size_t i = 0; i < N_LARGE; i++) {
                values[i] = (int) i;
                snprintf(key, sizeof(key), "spiffe://ztna.test/tunneler/t-%zu", i);
                ASSERT_OK(hashmap_put(h, key, &values[i]));
                /* Grows at 3/4 load: never fuller than that. */
                ASSERT_LE(hashmap_size(h) * 4, hashmap_capacity(h) * 3);
        }
        ASSERT_EQ(hashmap_size(h), N_LARGE);
        for (size_t i = 0; i < N_LARGE; i++) {
                snprintf(key, sizeof(key), "spiffe://ztna.test/tunneler/t-%zu", i);
                ASSERT_TRUE(hashmap_get(h, key) == &values[i]);
        }
        ASSERT_NULL(hashmap_get(h, "spiffe://ztna.test/tunneler/t-100000"));
        for (size_t i = 0; i < N_LARGE; i += 2) {
                snprintf(key, sizeof(key), "spiffe://ztna.test/tunneler/t-%zu", i);
                ASSERT_TRUE(hashmap_remove(h, key) == &values[i]);
        }
        ASSERT_EQ(hashmap_size(h), N_LARGE / 2);
        for (size_t i = 0; i < N_LARGE; i++) {
                snprintf(key, sizeof(key), "spiffe://ztna.test/tunneler/t-%zu", i);
                if (i % 2 == 0)
                        ASSERT_NULL(hashmap_get(h, key));
                else
                        ASSERT_TRUE(hashmap_get(h, key) == &values[i]);
        }
}

TEST(tombstones_do_not_grow_the_table) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        static int values[100];
        size_t cap_after_fill, cap_max = 0;
        char key[32];
        int x = 0;

        ASSERT_OK(hashmap_new(&h));
        ASSERT_EQ(hashmap_capacity(h), 0); /* nothing allocated before the first put */
        fill(h, values, ELEMENTSOF(values));
        cap_after_fill = hashmap_capacity(h);
        ASSERT_LE(cap_after_fill, 256);

        /* 100k distinct keys come and go (heartbeats from short-lived agents): each leaves a tombstone, and
         * the table is cleaned instead of grown. */
        for (size_t i = 0; i < N_LARGE; i++) {
                snprintf(key, sizeof(key), "transient-%zu", i);
                ASSERT_OK(hashmap_put(h, key, &x));
                ASSERT_TRUE(hashmap_remove(h, key) == &x);
                cap_max = MAX(cap_max, hashmap_capacity(h));
        }
        ASSERT_LE(cap_max, cap_after_fill * 2);
        ASSERT_EQ(hashmap_size(h), ELEMENTSOF(values));
        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                snprintf(key, sizeof(key), "key-%zu", i);
                ASSERT_TRUE(hashmap_get(h, key) == &values[i]);
        }

        /* After a burst the table shrinks again once the entries are gone and it is rehashed. */
        for (size_t i = 0; i < 10000; i++) {
                snprintf(key, sizeof(key), "burst-%zu", i);
                ASSERT_OK(hashmap_put(h, key, &x));
        }
        ASSERT_GE(hashmap_capacity(h), 10100 * 4 / 3);
        for (size_t i = 0; i < 10000; i++) {
                snprintf(key, sizeof(key), "burst-%zu", i);
                ASSERT_TRUE(hashmap_remove(h, key) == &x);
        }
        for (size_t i = 0; i < N_LARGE; i++) {
                snprintf(key, sizeof(key), "transient-%zu", i);
                ASSERT_OK(hashmap_put(h, key, &x));
                ASSERT_TRUE(hashmap_remove(h, key) == &x);
        }
        ASSERT_LE(hashmap_capacity(h), cap_after_fill * 2);
        ASSERT_EQ(hashmap_size(h), ELEMENTSOF(values));
}

/* Each map hashes under its own random key: two maps with the same keys lay them out differently, so a peer
 * that learns one map's collisions learns nothing about another's (or the next run's). */
TEST(maps_are_keyed_independently) {
        _cleanup_(hashmap_freep) Hashmap *a = NULL, *b = NULL;
        static int values[64];
        int order_a[64], order_b[64];
        size_t n = 0;
        const char *k;
        int *v;

        ASSERT_OK(hashmap_new(&a));
        ASSERT_OK(hashmap_new(&b));
        fill(a, values, ELEMENTSOF(values));
        fill(b, values, ELEMENTSOF(values));
        ASSERT_EQ(hashmap_capacity(a), hashmap_capacity(b));
        HASHMAP_FOREACH_KEY(v, k, a)
                order_a[n++] = *v;
        n = 0;
        HASHMAP_FOREACH_KEY(v, k, b)
                order_b[n++] = *v;
        ASSERT_EQ(n, ELEMENTSOF(values));
        ASSERT_TRUE(memcmp(order_a, order_b, sizeof(order_a)) != 0);
}
