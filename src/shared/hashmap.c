/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hashmap.h"
#include "random-util.h"

/* Open addressing with linear probing over a power-of-two slot array. A removed entry leaves a tombstone so
 * that probe chains stay intact and the iteration in progress is not disturbed (removing the current key
 * moves nothing); tombstones count towards the load and are dropped by the next rehash, which sizes the table
 * from the live entries alone, so insert/remove cycles cannot grow it without bound. */

#define HASHMAP_CAPACITY_MIN 8U

typedef struct HashmapEntry {
        char *key;              /* NULL: empty; TOMBSTONE: removed */
        void *value;
        uint64_t hash;
} HashmapEntry;

struct Hashmap {
        HashmapEntry *entries;
        size_t capacity;        /* 0 or a power of two */
        size_t n_entries;
        size_t n_tombstones;
        uint8_t hash_key[16];
};

static char tombstone_marker;
#define TOMBSTONE (&tombstone_marker)

static bool slot_is_live(const HashmapEntry *e) {
        return e->key && e->key != TOMBSTONE;
}

/* ---- SipHash-2-4 ------------------------------------------------------------------------------------ */

static uint64_t rotl64(uint64_t x, unsigned b) {
        return (x << b) | (x >> (64 - b));
}

static uint64_t load_le64(const uint8_t *p) {
        uint64_t v = 0;

        for (size_t i = 0; i < 8; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

static void sip_round(uint64_t v[static 4]) {
        v[0] += v[1];
        v[1] = rotl64(v[1], 13);
        v[1] ^= v[0];
        v[0] = rotl64(v[0], 32);
        v[2] += v[3];
        v[3] = rotl64(v[3], 16);
        v[3] ^= v[2];
        v[0] += v[3];
        v[3] = rotl64(v[3], 21);
        v[3] ^= v[0];
        v[2] += v[1];
        v[1] = rotl64(v[1], 17);
        v[1] ^= v[2];
        v[2] = rotl64(v[2], 32);
}

uint64_t siphash24(const void *data, size_t size, const uint8_t key[static 16]) {
        const uint8_t *p = data;
        uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
        uint64_t v[4] = {
                0x736f6d6570736575ULL ^ k0,
                0x646f72616e646f6dULL ^ k1,
                0x6c7967656e657261ULL ^ k0,
                0x7465646279746573ULL ^ k1,
        };
        size_t tail = size % 8;
        uint64_t b = (uint64_t) size << 56;

        assert(data || size == 0);

        for (size_t off = 0; off < size - tail; off += 8) {
                uint64_t m = load_le64(p + off);

                v[3] ^= m;
                sip_round(v);
                sip_round(v);
                v[0] ^= m;
        }
        for (size_t i = 0; i < tail; i++)
                b |= (uint64_t) p[size - tail + i] << (8 * i);

        v[3] ^= b;
        sip_round(v);
        sip_round(v);
        v[0] ^= b;
        v[2] ^= 0xff;
        for (unsigned i = 0; i < 4; i++)
                sip_round(v);
        return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- the map ---------------------------------------------------------------------------------------- */

int hashmap_new(Hashmap **ret) {
        _cleanup_(hashmap_freep) Hashmap *h = NULL;
        int r;

        assert(ret);

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        r = random_bytes(h->hash_key, sizeof(h->hash_key));
        if (r < 0)
                return r;
        *ret = TAKE_PTR(h);
        return 0;
}

Hashmap *hashmap_free(Hashmap *h) {
        if (!h)
                return NULL;
        for (size_t i = 0; i < h->capacity; i++)
                if (slot_is_live(&h->entries[i]))
                        free(h->entries[i].key);
        free(h->entries);
        explicit_bzero_safe(h->hash_key, sizeof(h->hash_key));
        return mfree(h);
}

static uint64_t hash_key(const Hashmap *h, const char *key) {
        return siphash24(key, strlen(key), h->hash_key);
}

/* The slot holding key, or SIZE_MAX. */
static size_t find_slot(const Hashmap *h, const char *key, uint64_t hash) {
        size_t mask, idx;

        if (h->capacity == 0)
                return SIZE_MAX;
        mask = h->capacity - 1;
        idx = (size_t) hash & mask;
        /* The load stays below 3/4, so an empty slot ends every probe sequence. */
        for (;;) {
                const HashmapEntry *e = &h->entries[idx];

                if (!e->key)
                        return SIZE_MAX;
                if (e->key != TOMBSTONE && e->hash == hash && streq(e->key, key))
                        return idx;
                idx = (idx + 1) & mask;
        }
}

/* The first free slot (empty or tombstone) on key's probe sequence. The table must have one. */
static size_t free_slot(const Hashmap *h, uint64_t hash) {
        size_t mask = h->capacity - 1, idx = (size_t) hash & mask;

        while (slot_is_live(&h->entries[idx]))
                idx = (idx + 1) & mask;
        return idx;
}

/* Moves the live entries into a table sized for n_live + 1 at no more than half load, dropping tombstones. */
static int rehash(Hashmap *h) {
        HashmapEntry *old = h->entries;
        size_t old_capacity = h->capacity, capacity = HASHMAP_CAPACITY_MIN;
        HashmapEntry *entries;

        while ((h->n_entries + 1) * 2 > capacity)
                capacity *= 2;
        entries = calloc(capacity, sizeof(*entries));
        if (!entries)
                return -ENOMEM;

        h->entries = entries;
        h->capacity = capacity;
        h->n_tombstones = 0;
        for (size_t i = 0; i < old_capacity; i++)
                if (slot_is_live(&old[i]))
                        h->entries[free_slot(h, old[i].hash)] = old[i];
        free(old);
        return 0;
}

/* Inserts a key known to be absent. */
static int insert_new(Hashmap *h, const char *key, uint64_t hash, void *value) {
        _cleanup_free_ char *copy = NULL;
        HashmapEntry *e;
        int r;

        if (h->n_entries >= HASHMAP_ENTRIES_MAX)
                return -E2BIG;
        copy = strdup(key);
        if (!copy)
                return -ENOMEM;
        /* Grow (or clean out tombstones) before the occupied slots would pass 3/4 of the table. */
        if ((h->n_entries + h->n_tombstones + 1) * 4 > h->capacity * 3) {
                r = rehash(h);
                if (r < 0)
                        return r;
        }
        e = &h->entries[free_slot(h, hash)];
        if (e->key == TOMBSTONE)
                h->n_tombstones--;
        *e = (HashmapEntry) {
                .key = TAKE_PTR(copy),
                .value = value,
                .hash = hash,
        };
        h->n_entries++;
        return 0;
}

int hashmap_put(Hashmap *h, const char *key, void *value) {
        uint64_t hash;

        assert(h);
        assert(key);
        assert(value);

        hash = hash_key(h, key);
        if (find_slot(h, key, hash) != SIZE_MAX)
                return -EEXIST;
        return insert_new(h, key, hash, value);
}

int hashmap_replace(Hashmap *h, const char *key, void *value, void **ret_old) {
        uint64_t hash;
        size_t idx;
        int r;

        assert(h);
        assert(key);
        assert(value);

        hash = hash_key(h, key);
        idx = find_slot(h, key, hash);
        if (idx != SIZE_MAX) {
                if (ret_old)
                        *ret_old = h->entries[idx].value;
                h->entries[idx].value = value;
                return 1;
        }
        r = insert_new(h, key, hash, value);
        if (r < 0)
                return r;
        if (ret_old)
                *ret_old = NULL;
        return 0;
}

void *hashmap_get(const Hashmap *h, const char *key) {
        size_t idx;

        assert(key);

        if (!h)
                return NULL;
        idx = find_slot(h, key, hash_key(h, key));
        return idx == SIZE_MAX ? NULL : h->entries[idx].value;
}

void *hashmap_remove(Hashmap *h, const char *key) {
        HashmapEntry *e;
        void *value;
        size_t idx;

        assert(key);

        if (!h)
                return NULL;
        idx = find_slot(h, key, hash_key(h, key));
        if (idx == SIZE_MAX)
                return NULL;
        e = &h->entries[idx];
        value = e->value;
        free(e->key);
        *e = (HashmapEntry) { .key = TOMBSTONE };
        h->n_entries--;
        h->n_tombstones++;
        if (h->n_entries == 0) {
                /* Nothing left to find: every slot can be empty again. Safe during iteration, which only
                 * skips empty slots. */
                memset(h->entries, 0, h->capacity * sizeof(*h->entries));
                h->n_tombstones = 0;
        }
        return value;
}

size_t hashmap_size(const Hashmap *h) {
        return h ? h->n_entries : 0;
}

bool hashmap_isempty(const Hashmap *h) {
        return hashmap_size(h) == 0;
}

size_t hashmap_capacity(const Hashmap *h) {
        return h ? h->capacity : 0;
}

bool hashmap_iterate(const Hashmap *h, HashmapIter *i, const char **ret_key, void **ret_value) {
        assert(i);

        if (!h)
                return false;
        for (; i->idx < h->capacity; i->idx++) {
                const HashmapEntry *e = &h->entries[i->idx];

                if (!slot_is_live(e))
                        continue;
                i->idx++;
                if (ret_key)
                        *ret_key = e->key;
                if (ret_value)
                        *ret_value = e->value;
                return true;
        }
        return false;
}
