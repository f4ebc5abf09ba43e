/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* NULL-terminated arrays of strings (char **). A NULL strv is the empty list everywhere. Allocating
 * helpers whose only failure is running out of memory return the new object or NULL. */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* Frees every string and the array; returns NULL. */
char **strv_free(char **l);
/* Same, wiping every string first (for lists that may hold secrets). */
char **strv_free_erase(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)

size_t strv_length(char *const *l) _pure_;

/* Appends a copy of value. 0 or -ENOMEM (the list is unchanged then). */
int strv_extend(char ***l, const char *value);
/* Appends value itself, taking ownership even on failure (it is freed then). 0 or -ENOMEM. */
int strv_consume(char ***l, char *value);

bool strv_contains(char *const *l, const char *s) _pure_;

/* A deep copy; a NULL input gives an empty (non-NULL) list. NULL on OOM. */
char **strv_copy(char *const *l);
/* The elements joined with sep (NULL means " "); an empty list gives "". NULL on OOM. */
char *strv_join(char *const *l, const char *sep);
/* Splits s at any of the characters in separators, skipping empty fields ("a,,b" → "a", "b"). No
 * quoting. An empty s gives an empty (non-NULL) list. NULL on OOM. */
char **strv_split(const char *s, const char *separators);

/* Sorts in place by strcmp(); returns l. */
char **strv_sort(char **l);
/* Removes later duplicates in place, keeping the first occurrence and the order; returns l. */
char **strv_uniq(char **l);
/* Same elements in the same order; NULL and an empty list are equal. */
bool strv_equal(char *const *a, char *const *b) _pure_;

#define STRV_FOREACH(s, l) for (char *const *s = (l); s && *s; s++)
