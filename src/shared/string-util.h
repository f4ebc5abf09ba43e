/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small string helpers. Allocating helpers whose only possible failure is running out of memory return
 * the new string or NULL; helpers that change a string in place return it. */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define WHITESPACE " \t\n\r"

/* Returns a pointer just past prefix inside s, or NULL if s does not start with prefix. */
char *startswith(const char *s, const char *prefix) _pure_;
/* Returns a pointer to where suffix starts inside s, or NULL if s does not end with suffix. */
char *endswith(const char *s, const char *suffix) _pure_;

/* Concatenates the NULL-terminated list of strings into a new string. NULL on OOM. */
char *strjoin(const char *a, ...) _sentinel_;
/* Appends the NULL-terminated list of strings to *x (NULL counts as ""), reallocating it.
 * Returns 0 or -ENOMEM, in which case *x is unchanged. */
int strextend(char **x, ...) _sentinel_;

/* Removes leading and trailing whitespace in place; returns the pointer to the first kept byte. */
char *strstrip(char *s);
/* Lower-cases A–Z in place (no locale); returns s. */
char *ascii_strlower(char *s);

/* Whether s contains an ASCII control character (0x00–0x1f, 0x7f) not listed in ok (may be NULL). */
bool string_has_cc(const char *s, const char *ok) _pure_;
/* Whether s consists only of printable ASCII (0x20–0x7e). The empty string counts as printable. */
bool string_is_printable_ascii(const char *s) _pure_;
/* Text fit for a record or a listing: non-NULL, at most max bytes, no control characters. */
bool string_is_valid_text(const char *s, size_t max) _pure_;
/* n bytes of strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF, no sequence
 * cut short at the end. NUL bytes are valid UTF-8: callers that refuse them check for them. */
bool utf8_is_valid(const char *s, size_t n) _pure_;

/* NULL-safe equality: two NULLs are equal, NULL and a string are not. */
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

/* Replaces *p by a copy of s (NULL clears it), freeing the old string. Returns 0 if nothing changed,
 * 1 if it did, -ENOMEM with *p unchanged. */
int free_and_strdup(char **p, const char *s);
