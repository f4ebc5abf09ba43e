/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* A string-keyed hash map (open addressing, keys copied, values borrowed) for the controller's in-memory
 * tables: live control sessions and pending heartbeats by SPIFFE ID. Keys come from certificates and
 * peers, so the hash is SipHash-2-4 under a per-map random key: a peer cannot choose keys that collide.
 * No iteration order is promised. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* Most entries one map holds; hashmap_put() beyond gives -E2BIG. */
#define HASHMAP_ENTRIES_MAX (16U * 1024U * 1024U)

typedef struct Hashmap Hashmap;

int hashmap_new(Hashmap **ret);
/* Frees the map and its key copies; values are the caller's (free them first, e.g. with HASHMAP_FOREACH). */
Hashmap *hashmap_free(Hashmap *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(Hashmap *, hashmap_free);

/* Adds key → value (value non-NULL). -EEXIST when the key is present (nothing changed), -E2BIG when full. */
int hashmap_put(Hashmap *h, const char *key, void *value);
/* Adds or replaces; returns the replaced value in *ret_old (may be NULL) — NULL when there was none. 0 when
 * added, 1 when replaced. */
int hashmap_replace(Hashmap *h, const char *key, void *value, void **ret_old);
void *hashmap_get(const Hashmap *h, const char *key);
/* Removes key and returns its value, or NULL when absent. */
void *hashmap_remove(Hashmap *h, const char *key);
size_t hashmap_size(const Hashmap *h);
bool hashmap_isempty(const Hashmap *h);
/* Slots allocated (for tests and statistics): bounded by the live entries, not by past removals. */
size_t hashmap_capacity(const Hashmap *h);

/* SipHash-2-4 (Aumasson, Bernstein 2012) of data under a 128-bit key, as the map uses it. */
uint64_t siphash24(const void *data, size_t size, const uint8_t key[static 16]);

/* Iteration. The map must not be modified during it, except hashmap_remove() of the current key. */
typedef struct HashmapIter {
        size_t idx;
} HashmapIter;
#define HASHMAP_ITER_INIT ((HashmapIter) { 0 })
/* Returns true and the next entry, or false at the end. ret_key may be NULL. */
bool hashmap_iterate(const Hashmap *h, HashmapIter *i, const char **ret_key, void **ret_value);
#define HASHMAP_FOREACH_KEY(v, k, h) \
        for (HashmapIter _i = HASHMAP_ITER_INIT; hashmap_iterate((h), &_i, &(k), (void **) &(v));)
