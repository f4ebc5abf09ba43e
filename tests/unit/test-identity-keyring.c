/* SPDX-License-Identifier: Apache-2.0 */

#include <keyutils.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "identity-keyring.h"
#include "macro.h"
#include "tests.h"

static const char secret_text[] = "correct horse battery staple";

/* A kernel-mode secret, or a skipped case when this environment refuses keyctl. */
static KeyringSecret *new_kernel_secret(const char *description, const void *data, size_t size) {
        KeyringSecret *s = NULL;
        int r;

        r = keyring_secret_new(description, data, size, 0, &s);
        ASSERT_OK(r);
        if (r == KEYRING_MODE_MEMORY) {
                int e = keyring_secret_kernel_error(s);

                keyring_secret_free(s);
                test_skip("kernel keyring refused here (%s); memory mode is tested separately",
                          strerror(-e));
        }
        ASSERT_EQ(r, KEYRING_MODE_KERNEL);
        return s;
}

static void assert_reads(const KeyringSecret *s, const void *data, size_t size) {
        uint8_t *buf = NULL;
        size_t n = 0;

        ASSERT_OK(keyring_secret_read(s, &buf, &n));
        ASSERT_UEQ(n, size);
        ASSERT_MEMEQ(buf, data, size);
        ASSERT_EQ(buf[n], 0);
        /* A copy: scribbling on it does not change the secret. */
        memset(buf, 'X', n);
        erase_and_free(buf, n + 1);
        ASSERT_OK(keyring_secret_read(s, &buf, &n));
        ASSERT_MEMEQ(buf, data, size);
        erase_and_free(buf, n + 1);
}

TEST(kernel_roundtrip) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;

        s = new_kernel_secret("ztna-test", secret_text, sizeof(secret_text) - 1);
        ASSERT_TRUE(keyring_secret_in_kernel(s));
        ASSERT_EQ(keyring_secret_kernel_error(s), 0);
        ASSERT_GT(keyring_secret_serial(s), 0);
        ASSERT_UEQ(keyring_secret_size(s), sizeof(secret_text) - 1);
        assert_reads(s, secret_text, sizeof(secret_text) - 1);
}

TEST(kernel_binary_and_largest) {
        static uint8_t big[KEYRING_SECRET_MAX];
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL, *t = NULL;
        uint8_t bin[] = { 0, 1, 0, 255, 0 };

        for (size_t k = 0; k < sizeof(big); k++)
                big[k] = (uint8_t) (k * 7 + 3);
        s = new_kernel_secret("ztna-bin", bin, sizeof(bin));
        assert_reads(s, bin, sizeof(bin));

        /* The largest size is accepted; it may exceed a non-root key quota and land in memory. */
        ASSERT_OK(keyring_secret_new("ztna-big", big, sizeof(big), 0, &t));
        assert_reads(t, big, sizeof(big));
}

TEST(kernel_permissions_possessor_only) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        _cleanup_free_ char *desc = NULL;
        char type[16], name[256];
        unsigned perm;
        int uid, gid;

        s = new_kernel_secret("ztna-perm", secret_text, sizeof(secret_text) - 1);
        ASSERT_GE(keyctl_describe_alloc(keyring_secret_serial(s), &desc), 0);
        /* "type;uid;gid;perm;description" */
        ASSERT_EQ(sscanf(desc, "%15[^;];%d;%d;%x;%255s", type, &uid, &gid, &perm, name), 5);
        ASSERT_STREQ(type, "user");
        ASSERT_EQ(perm, KEY_POS_ALL);
        /* Nothing for user, group or other. */
        ASSERT_EQ(perm & (KEY_USR_ALL | KEY_GRP_ALL | KEY_OTH_ALL), 0);
        ASSERT_TRUE(strncmp(name, "ztna-perm.", 10) == 0);
        ASSERT_UEQ(strlen(name), 10 + 16);
}

TEST(kernel_invalidated_after_free) {
        KeyringSecret *s;
        char buf[64];
        int serial;

        s = new_kernel_secret("ztna-free", secret_text, sizeof(secret_text) - 1);
        serial = keyring_secret_serial(s);
        ASSERT_EQ(keyctl_read(serial, buf, sizeof(buf)), (long) sizeof(secret_text) - 1);
        ASSERT_NULL(keyring_secret_free(s));
        errno = 0;
        ASSERT_TRUE(keyctl_read(serial, buf, sizeof(buf)) < 0);
        /* Invalidated: gone (ENOKEY), or, until the garbage collector runs, no longer possessed and
         * so unreadable under the possessor-only permissions (EACCES). */
        ASSERT_TRUE(errno == ENOKEY || errno == EACCES);
}

TEST(kernel_same_description_twice) {
        _cleanup_(keyring_secret_freep) KeyringSecret *a = NULL, *b = NULL;

        /* add_key() with an existing description would update that key; each secret keeps its own. */
        a = new_kernel_secret("ztna-twice", "first", 5);
        b = new_kernel_secret("ztna-twice", "second", 6);
        ASSERT_NE(keyring_secret_serial(a), keyring_secret_serial(b));
        assert_reads(a, "first", 5);
        assert_reads(b, "second", 6);
}

/* ASan turns mlock() into a no-op, so under it only the "dd" flag can be checked. */
#if defined(__SANITIZE_ADDRESS__)
#  define LOCK_FLAG ""
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define LOCK_FLAG ""
#  endif
#endif
#ifndef LOCK_FLAG
#  define LOCK_FLAG " lo"
#endif

/* Pages in mappings both locked ("lo") and excluded from core dumps ("dd"), per /proc/self/smaps
 * (adjacent such mappings merge, so pages are counted, not mappings). */
static unsigned locked_dontdump_mappings(void) {
        _cleanup_free_ char *line = NULL;
        unsigned long kb = 0, total = 0;
        size_t n = 0;
        FILE *f;

        f = fopen("/proc/self/smaps", "re");
        ASSERT_NOT_NULL(f);
        while (getline(&line, &n, f) > 0) {
                if (strncmp(line, "Size:", 5) == 0)
                        ASSERT_EQ(sscanf(line, "Size: %lu kB", &kb), 1);
                else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, LOCK_FLAG) && strstr(line, " dd"))
                        total += kb;
        }
        fclose(f);
        return (unsigned) (total * 1024 / (unsigned long) sysconf(_SC_PAGESIZE));
}

TEST(memory_roundtrip) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        unsigned before = locked_dontdump_mappings();
        KeyringSecret *t = NULL;

        ASSERT_EQ(keyring_secret_new("ztna-mem", secret_text, sizeof(secret_text) - 1, KEYRING_FORCE_MEMORY,
                                     &s),
                  KEYRING_MODE_MEMORY);
        ASSERT_FALSE(keyring_secret_in_kernel(s));
        ASSERT_EQ(keyring_secret_kernel_error(s), 0);
        ASSERT_EQ(keyring_secret_serial(s), -ENXIO);
        ASSERT_UEQ(keyring_secret_size(s), sizeof(secret_text) - 1);
        assert_reads(s, secret_text, sizeof(secret_text) - 1);

        /* The secret's page is locked and non-dumpable, and unmapped when freed. */
        ASSERT_EQ(locked_dontdump_mappings(), before + 1);
        ASSERT_EQ(keyring_secret_new("ztna-mem2", "x", 1, KEYRING_FORCE_MEMORY, &t), KEYRING_MODE_MEMORY);
        ASSERT_EQ(locked_dontdump_mappings(), before + 2);
        ASSERT_NULL(keyring_secret_free(t));
        ASSERT_EQ(locked_dontdump_mappings(), before + 1);
}

TEST(memory_largest) {
        static uint8_t big[KEYRING_SECRET_MAX];
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;

        memset(big, 0xa5, sizeof(big));
        big[sizeof(big) - 1] = 0x11;
        ASSERT_EQ(keyring_secret_new("ztna-big", big, sizeof(big), KEYRING_FORCE_MEMORY, &s),
                  KEYRING_MODE_MEMORY);
        assert_reads(s, big, sizeof(big));
}

TEST(limits) {
        static uint8_t big[KEYRING_SECRET_MAX + 1];
        static const KeyringFlags flags[] = { 0, KEYRING_FORCE_MEMORY };
        char longest[KEYRING_DESCRIPTION_MAX + 2];
        static const struct {
                const char *description;
                size_t size;
                int error;
        } table[] = {
                { "ok", 0, EINVAL },
                { "ok", KEYRING_SECRET_MAX + 1, EFBIG },
                { "ok", SIZE_MAX, EFBIG },
                { "", 1, EINVAL },
                { NULL, 1, EINVAL },
                { "two words", 1, EINVAL },
                { "tab\there", 1, EINVAL },
                { "ctl\x01", 1, EINVAL },
                { "high\x80", 1, EINVAL },
                { "<longest+1>", 1, EINVAL },
        };

        memset(longest, 'd', sizeof(longest) - 1);
        longest[sizeof(longest) - 1] = '\0';

        for (size_t f = 0; f < ELEMENTSOF(flags); f++)
                for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                        KeyringSecret *s = (KeyringSecret *) 0x1;
                        const char *d = table[k].description;

                        CASE("flags %d, '%s', %zu", (int) flags[f], strna(d), table[k].size);
                        if (d && streq(d, "<longest+1>"))
                                d = longest;
                        ASSERT_ERROR(keyring_secret_new(d, big, table[k].size, flags[f], &s), table[k].error);
                        /* Untouched on failure. */
                        ASSERT_TRUE(s == (KeyringSecret *) 0x1);
                }

        /* The longest description is fine. */
        longest[KEYRING_DESCRIPTION_MAX] = '\0';
        for (size_t f = 0; f < ELEMENTSOF(flags); f++) {
                KeyringSecret *s = NULL;

                CASE("longest description, flags %d", (int) flags[f]);
                ASSERT_OK(keyring_secret_new(longest, "x", 1, flags[f], &s));
                assert_reads(s, "x", 1);
                keyring_secret_free(s);
        }
}

TEST(free_null) {
        ASSERT_NULL(keyring_secret_free(NULL));
        ASSERT_FALSE(keyring_secret_in_kernel(NULL));
        ASSERT_UEQ(keyring_secret_size(NULL), 0);
}
