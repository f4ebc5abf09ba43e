/* SPDX-License-Identifier: Apache-2.0 */

#include "string-util.h"
#include "tests.h"

TEST(startswith_endswith) {
        static const struct {
                const char *s, *affix;
                ssize_t start; /* offset startswith() returns, -1 for NULL */
                ssize_t end;   /* offset endswith() returns, -1 for NULL */
        } table[] = {
                { "foobar", "foo", 3, -1 },
                { "foobar", "bar", -1, 3 },
                { "foobar", "", 0, 6 },
                { "foobar", "foobar", 6, 0 },
                { "foo", "foobar", -1, -1 },
                { "", "", 0, 0 },
                { "", "x", -1, -1 },
                { "Foobar", "foo", -1, -1 }, /* case-sensitive */
                { "a.conf", ".conf", -1, 1 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                const char *s = table[i].s, *p;

                CASE("'%s' / '%s'", s, table[i].affix);
                p = startswith(s, table[i].affix);
                if (table[i].start < 0)
                        ASSERT_NULL(p);
                else
                        ASSERT_TRUE(p == s + table[i].start);
                p = endswith(s, table[i].affix);
                if (table[i].end < 0)
                        ASSERT_NULL(p);
                else
                        ASSERT_TRUE(p == s + table[i].end);
        }
}

TEST(strjoin) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        a = ASSERT_NOT_NULL(strjoin("a", "bc", "", "def", NULL));
        ASSERT_STREQ(a, "abcdef");
        b = ASSERT_NOT_NULL(strjoin("only", NULL));
        ASSERT_STREQ(b, "only");
        c = ASSERT_NOT_NULL(strjoin("", "", NULL));
        ASSERT_STREQ(c, "");
        d = ASSERT_NOT_NULL(strjoin(NULL, NULL));
        ASSERT_STREQ(d, "");
}

TEST(strextend) {
        _cleanup_free_ char *s = NULL;

        ASSERT_OK(strextend(&s, NULL));
        ASSERT_STREQ(s, "");
        ASSERT_OK(strextend(&s, "foo", NULL));
        ASSERT_STREQ(s, "foo");
        ASSERT_OK(strextend(&s, "/", "bar", "", ".conf", NULL));
        ASSERT_STREQ(s, "foo/bar.conf");
}

TEST(strstrip) {
        static const struct {
                const char *in, *out;
        } table[] = {
                { "", "" },
                { "   ", "" },
                { "abc", "abc" },
                { "  abc", "abc" },
                { "abc  ", "abc" },
                { " \t\r\n a b \n\r\t ", "a b" },
                { "\va\v", "\va\v" }, /* only space, tab, CR, LF */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char buf[64];

                CASE("'%s'", table[i].in);
                snprintf(buf, sizeof(buf), "%s", table[i].in);
                ASSERT_STREQ(strstrip(buf), table[i].out);
        }
}

TEST(ascii_strlower) {
        char s[] = "Hello-WORLD_09.Example\xc3\x84";

        ASSERT_TRUE(ascii_strlower(s) == s);
        /* Bytes outside A–Z, UTF-8 included, are left alone. */
        ASSERT_STREQ(s, "hello-world_09.example\xc3\x84");
}

TEST(string_has_cc) {
        ASSERT_FALSE(string_has_cc("", NULL));
        ASSERT_FALSE(string_has_cc("plain text ~!", NULL));
        ASSERT_FALSE(string_has_cc("caf\xc3\xa9", NULL));
        ASSERT_TRUE(string_has_cc("a\tb", NULL));
        ASSERT_FALSE(string_has_cc("a\tb", "\t"));
        ASSERT_TRUE(string_has_cc("a\tb\n", "\t"));
        ASSERT_TRUE(string_has_cc("\x1b[31m", NULL));
        ASSERT_TRUE(string_has_cc("del\x7f", NULL));
        ASSERT_TRUE(string_has_cc("\x01", NULL));
        ASSERT_TRUE(string_has_cc("\x1f", NULL));
        ASSERT_FALSE(string_has_cc(" ", NULL));
}

TEST(string_is_printable_ascii) {
        ASSERT_TRUE(string_is_printable_ascii(""));
        ASSERT_TRUE(string_is_printable_ascii(" !azAZ09~"));
        ASSERT_FALSE(string_is_printable_ascii("tab\t"));
        ASSERT_FALSE(string_is_printable_ascii("caf\xc3\xa9"));
        ASSERT_FALSE(string_is_printable_ascii("\x7f"));
        ASSERT_FALSE(string_is_printable_ascii("\x80"));
}

TEST(streq_ptr) {
        ASSERT_TRUE(streq_ptr(NULL, NULL));
        ASSERT_FALSE(streq_ptr("a", NULL));
        ASSERT_FALSE(streq_ptr(NULL, "a"));
        ASSERT_TRUE(streq_ptr("a", "a"));
        ASSERT_FALSE(streq_ptr("a", "b"));
}

TEST(free_and_strdup) {
        _cleanup_free_ char *s = NULL;

        ASSERT_EQ(free_and_strdup(&s, "one"), 1);
        ASSERT_STREQ(s, "one");
        ASSERT_EQ(free_and_strdup(&s, "one"), 0);
        ASSERT_EQ(free_and_strdup(&s, "two"), 1);
        ASSERT_STREQ(s, "two");
        ASSERT_EQ(free_and_strdup(&s, NULL), 1);
        ASSERT_NULL(s);
        ASSERT_EQ(free_and_strdup(&s, NULL), 0);
}

TEST(string_is_valid_text) {
        ASSERT_TRUE(string_is_valid_text("", 0));
        ASSERT_TRUE(string_is_valid_text("v1.2 beta", 9));
        ASSERT_FALSE(string_is_valid_text("v1.2 beta", 8));
        ASSERT_FALSE(string_is_valid_text(NULL, 10));
        ASSERT_FALSE(string_is_valid_text("a\nb", 10));
        ASSERT_FALSE(string_is_valid_text("a\tb", 10));
        ASSERT_FALSE(string_is_valid_text("\x1b[2J", 10));
        ASSERT_TRUE(string_is_valid_text("ünïcode", 10));
}

TEST(utf8_is_valid) {
        static const struct {
                const char *s;
                size_t n;
                bool valid;
        } table[] = {
                { "", 0, true },
                { "plain ascii", 11, true },
                { "caf\xc3\xa9", 5, true },
                { "\xe2\x82\xac", 3, true },                  /* U+20AC */
                { "\xf0\x9f\x94\x92", 4, true },              /* U+1F512 */
                { "\xf4\x8f\xbf\xbf", 4, true },              /* U+10FFFF, the last */
                { "a\0b", 3, true },                          /* NUL is UTF-8: callers refuse it */
                { "\xc0\xaf", 2, false },                     /* overlong "/" */
                { "\xe0\x80\xaf", 3, false },                 /* overlong, 3 bytes */
                { "\xf0\x82\x82\xac", 4, false },             /* overlong, 4 bytes */
                { "\xed\xa0\x80", 3, false },                 /* U+D800, a surrogate */
                { "\xf4\x90\x80\x80", 4, false },             /* above U+10FFFF */
                { "\xf8\x88\x80\x80\x80", 5, false },         /* 5-byte form */
                { "\xc3", 1, false },                         /* cut short */
                { "\xe2\x82", 2, false },                     /* cut short */
                { "\xc3\x28", 2, false },                     /* bad continuation */
                { "\x80", 1, false },                         /* lone continuation */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("#%zu", i);
                ASSERT_EQ(utf8_is_valid(table[i].s, table[i].n), table[i].valid);
        }
}
