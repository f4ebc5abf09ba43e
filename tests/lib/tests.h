/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Unit-test harness: TEST(name) { … } registers a case; the harness's main() runs each case in its own
 * child process and prints TAP ("ok 3 - name"), so meson counts every case and one failing or crashing
 * case never hides the others. Assertions print the file:line, the expression, the values and the current
 * table case (CASE()) before aborting the child.
 *
 *   ./test-foo            run every case
 *   ./test-foo name…      run only the named cases
 *   ZTNA_TEST_NOFORK=1    run in-process (for gdb)
 */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void test_register(const char *name, void (*func)(void));
/* Names the table entry being checked; printed with any failure until the next CASE(). */
void test_case_set(const char *format, ...) __attribute__((format(printf, 1, 2)));
const char *test_case_get(void);
_Noreturn void test_fail(const char *file, int line, const char *format, ...) __attribute__((format(printf, 3, 4)));
/* A fresh private directory for this case, removed when the case ends. */
const char *test_tmpdir(void);
/* Directory of the source tree (from ZTNA_SOURCE_DIR, set by meson), or NULL. */
const char *test_source_dir(void);
/* Runs argv[0] (searched in PATH) with argv — never through a shell — stdin from /dev/null so it can
 * never prompt, stdout and stderr collected into a static buffer (*ret_output, may be NULL). Returns the
 * exit status (128 + signal when killed). Skips the case when the program is not installed. */
int test_run(char **ret_output, const char *const *argv);
#define TEST_RUN(out, ...) test_run((out), (const char *const[]) { __VA_ARGS__, NULL })
/* "<test_tmpdir()>/<name>", in one of a few rotating static buffers. */
char *test_path(const char *name);
void test_write_file(const char *path, const void *data, size_t size);
/* Reads a whole (small) file into a static NUL-terminated buffer. */
char *test_read_file(const char *path, size_t *ret_size);
/* Redirects stderr into a file in test_tmpdir() until test_capture_stderr_end(), which restores it and returns
 * what was written (a static NUL-terminated buffer, up to 64 KiB). For asserting on log output. */
void test_capture_stderr_begin(void);
const char *test_capture_stderr_end(void);
/* Skips the current case (TAP "# SKIP"), e.g. when a tool is missing. */
_Noreturn void test_skip(const char *format, ...) __attribute__((format(printf, 1, 2)));

#define TEST(name)                                                              \
        static void test_##name(void);                                          \
        __attribute__((constructor)) static void test_register_##name(void) {   \
                test_register(#name, test_##name);                              \
        }                                                                       \
        static void test_##name(void)

#define CASE(...) test_case_set(__VA_ARGS__)

#define ASSERT_TRUE(expr)                                                                    \
        do {                                                                                 \
                if (!(expr))                                                                 \
                        test_fail(__FILE__, __LINE__, "Expected true: %s", #expr);          \
        } while (0)

#define ASSERT_FALSE(expr)                                                                   \
        do {                                                                                 \
                if ((expr))                                                                  \
                        test_fail(__FILE__, __LINE__, "Expected false: %s", #expr);         \
        } while (0)

/* expr must be >= 0 (the house convention for success); evaluates to its value. */
#define ASSERT_OK(expr)                                                                              \
        ({                                                                                           \
                intmax_t _r = (intmax_t) (expr);                                                     \
                if (_r < 0)                                                                          \
                        test_fail(__FILE__, __LINE__, "Expected success: %s → %jd (%s)", #expr, _r, \
                                  strerror((int) -_r));                                              \
                _r;                                                                                  \
        })

/* expr must fail with exactly -err. */
#define ASSERT_ERROR(expr, err)                                                                         \
        do {                                                                                            \
                intmax_t _r = (intmax_t) (expr);                                                        \
                int _e = (err);                                                                         \
                if (_r != -(intmax_t) _e)                                                               \
                        test_fail(__FILE__, __LINE__, "Expected %s → -%s, got %jd (%s)", #expr,         \
                                  strerrorname_np(_e) ?: "?", _r,                                       \
                                  _r < 0 ? (strerrorname_np((int) -_r) ?: "?") : "success");            \
        } while (0)

/* expr must fail (be negative), with any error. */
#define ASSERT_FAIL(expr)                                                                       \
        do {                                                                                    \
                intmax_t _r = (intmax_t) (expr);                                                \
                if (_r >= 0)                                                                    \
                        test_fail(__FILE__, __LINE__, "Expected failure: %s → %jd", #expr, _r); \
        } while (0)

#define ASSERT_CMP(a, op, b)                                                                      \
        do {                                                                                      \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);                                \
                if (!(_a op _b))                                                                  \
                        test_fail(__FILE__, __LINE__, "Expected %s %s %s: %jd vs %jd", #a, #op, #b, \
                                  _a, _b);                                                        \
        } while (0)

#define ASSERT_UCMP(a, op, b)                                                                     \
        do {                                                                                      \
                uintmax_t _a = (uintmax_t) (a), _b = (uintmax_t) (b);                             \
                if (!(_a op _b))                                                                  \
                        test_fail(__FILE__, __LINE__, "Expected %s %s %s: %ju vs %ju", #a, #op, #b, \
                                  _a, _b);                                                        \
        } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP(a, >=, b)
#define ASSERT_UEQ(a, b) ASSERT_UCMP(a, ==, b)

#define ASSERT_STREQ(a, b)                                                                              \
        do {                                                                                            \
                const char *_a = (a), *_b = (b);                                                        \
                if (!_a || !_b || strcmp(_a, _b) != 0)                                                  \
                        test_fail(__FILE__, __LINE__, "Expected %s == %s: \"%s\" vs \"%s\"", #a, #b,    \
                                  _a ?: "(null)", _b ?: "(null)");                                      \
        } while (0)

/* a must contain b. */
#define ASSERT_STRSTR(a, b)                                                                             \
        do {                                                                                            \
                const char *_a = (a), *_b = (b);                                                        \
                if (!_a || !_b || !strstr(_a, _b))                                                      \
                        test_fail(__FILE__, __LINE__, "Expected %s to contain %s: \"%s\" lacks \"%s\"", \
                                  #a, #b, _a ?: "(null)", _b ?: "(null)");                              \
        } while (0)

#define ASSERT_MEMEQ(a, b, n)                                                                      \
        do {                                                                                       \
                if (memcmp((a), (b), (n)) != 0)                                                    \
                        test_fail(__FILE__, __LINE__, "Expected %zu equal bytes: %s vs %s", (size_t) (n), \
                                  #a, #b);                                                         \
        } while (0)

#define ASSERT_NULL(p)                                                                             \
        do {                                                                                       \
                if ((p) != NULL)                                                                   \
                        test_fail(__FILE__, __LINE__, "Expected NULL: %s", #p);                   \
        } while (0)

#define ASSERT_NOT_NULL(p)                                                                              \
        ({                                                                                              \
                __typeof__(p) _p = (p);                                                                 \
                if (!_p)                                                                                \
                        test_fail(__FILE__, __LINE__, "Expected non-NULL: %s", #p);                    \
                _p;                                                                                     \
        })
