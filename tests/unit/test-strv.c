/* SPDX-License-Identifier: Apache-2.0 */

#include "strv.h"
#include "tests.h"

TEST(free_accepts_null) {
        ASSERT_NULL(strv_free(NULL));
        ASSERT_NULL(strv_free_erase(NULL));
        ASSERT_EQ(strv_length(NULL), 0);
}

TEST(extend_copies_consume_takes) {
        _cleanup_strv_free_ char **l = NULL;
        char buf[] = "copied";
        char *owned;

        ASSERT_OK(strv_extend(&l, buf));
        buf[0] = 'X'; /* the list holds its own copy */
        owned = ASSERT_NOT_NULL(strdup("owned"));
        ASSERT_OK(strv_consume(&l, owned));
        ASSERT_EQ(strv_length(l), 2);
        ASSERT_STREQ(l[0], "copied");
        ASSERT_TRUE(l[1] == owned);
        ASSERT_NULL(l[2]);
}

TEST(contains) {
        char *l[] = { (char *) "a", (char *) "bb", NULL };

        ASSERT_TRUE(strv_contains(l, "a"));
        ASSERT_TRUE(strv_contains(l, "bb"));
        ASSERT_FALSE(strv_contains(l, "b"));
        ASSERT_FALSE(strv_contains(l, ""));
        ASSERT_FALSE(strv_contains(NULL, "a"));
}

TEST(copy) {
        char *l[] = { (char *) "x", (char *) "y", NULL };
        _cleanup_strv_free_ char **c = NULL, **e = NULL;

        c = ASSERT_NOT_NULL(strv_copy(l));
        ASSERT_TRUE(strv_equal(c, l));
        ASSERT_TRUE(c[0] != l[0]);
        /* A NULL list copies to an empty, non-NULL one. */
        e = ASSERT_NOT_NULL(strv_copy(NULL));
        ASSERT_NULL(e[0]);
}

TEST(join) {
        char *l[] = { (char *) "a", (char *) "", (char *) "b", NULL }, *one[] = { (char *) "solo", NULL };
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        a = ASSERT_NOT_NULL(strv_join(l, ", "));
        ASSERT_STREQ(a, "a, , b");
        b = ASSERT_NOT_NULL(strv_join(l, NULL));
        ASSERT_STREQ(b, "a  b");
        c = ASSERT_NOT_NULL(strv_join(one, ":"));
        ASSERT_STREQ(c, "solo");
        d = ASSERT_NOT_NULL(strv_join(NULL, ":"));
        ASSERT_STREQ(d, "");
}

TEST(split) {
        static const struct {
                const char *s, *sep;
                const char *joined; /* the result joined with '|' */
                size_t n;
        } table[] = {
                { "a b c", " ", "a|b|c", 3 },
                { "  a   b  ", " ", "a|b", 2 },
                { "a,,b,", ",", "a|b", 2 },
                { "a\tb\nc d", " \t\n", "a|b|c|d", 4 },
                { "", " ", "", 0 },
                { "   ", " ", "", 0 },
                { "nosep", ",", "nosep", 1 },
                { "a:b,c", ":,", "a|b|c", 3 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_strv_free_ char **l = NULL;
                _cleanup_free_ char *j = NULL;

                CASE("'%s'", table[i].s);
                l = ASSERT_NOT_NULL(strv_split(table[i].s, table[i].sep));
                ASSERT_EQ(strv_length(l), table[i].n);
                j = ASSERT_NOT_NULL(strv_join(l, "|"));
                ASSERT_STREQ(j, table[i].joined);
        }
}

TEST(sort_and_uniq) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *j = NULL, *k = NULL;

        l = ASSERT_NOT_NULL(strv_split("c b a b c 10 9", " "));
        ASSERT_TRUE(strv_sort(l) == l);
        j = ASSERT_NOT_NULL(strv_join(l, ","));
        /* strcmp order, not numeric: "10" < "9". */
        ASSERT_STREQ(j, "10,9,a,b,b,c,c");
        ASSERT_TRUE(strv_uniq(l) == l);
        k = ASSERT_NOT_NULL(strv_join(l, ","));
        ASSERT_STREQ(k, "10,9,a,b,c");
        ASSERT_NULL(strv_sort(NULL));
        ASSERT_NULL(strv_uniq(NULL));
}

TEST(uniq_keeps_first_occurrence_order) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *j = NULL;

        l = ASSERT_NOT_NULL(strv_split("z a z b a z", " "));
        strv_uniq(l);
        j = ASSERT_NOT_NULL(strv_join(l, ","));
        ASSERT_STREQ(j, "z,a,b");
        ASSERT_EQ(strv_length(l), 3);
}

TEST(equal) {
        char *ab[] = { (char *) "a", (char *) "b", NULL }, *ab2[] = { (char *) "a", (char *) "b", NULL },
             *ba[] = { (char *) "b", (char *) "a", NULL }, *a[] = { (char *) "a", NULL },
             *empty[] = { NULL };

        ASSERT_TRUE(strv_equal(ab, ab2));
        ASSERT_FALSE(strv_equal(ab, ba));
        ASSERT_FALSE(strv_equal(ab, a));
        ASSERT_FALSE(strv_equal(a, ab));
        ASSERT_TRUE(strv_equal(NULL, empty));
        ASSERT_TRUE(strv_equal(empty, NULL));
        ASSERT_TRUE(strv_equal(NULL, NULL));
        ASSERT_FALSE(strv_equal(NULL, a));
}

TEST(foreach) {
        char *l[] = { (char *) "x", (char *) "y", (char *) "z", NULL };
        char buf[8] = "";
        size_t n = 0;

        STRV_FOREACH(s, l)
                buf[n++] = **s;
        ASSERT_STREQ(buf, "xyz");
        STRV_FOREACH(s, (char **) NULL)
                ASSERT_TRUE(false);
}
