/* SPDX-License-Identifier: Apache-2.0 */

/* Corpus replay driver: ./fuzz-foo DIR|FILE… feeds every file to LLVMFuzzerTestOneInput() and prints
 * TAP, one line per input. */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Inputs larger than this are not corpus material; libFuzzer's default -max_len is far smaller. */
#define FUZZ_INPUT_MAX (1024 * 1024)

static int replay_file(const char *path, size_t *n) {
        FILE *f = fopen(path, "re");
        uint8_t *buf;
        size_t len;

        if (!f) {
                printf("not ok %zu - %s # open: %s\n", ++*n, path, strerror(errno));
                return -1;
        }
        buf = malloc(FUZZ_INPUT_MAX);
        if (!buf) {
                fclose(f);
                return -1;
        }
        len = fread(buf, 1, FUZZ_INPUT_MAX, f);
        fclose(f);

        /* A copy of exactly len bytes so ASan sees reads past the end of the input. */
        uint8_t *exact = malloc(len ?: 1);
        if (!exact) {
                free(buf);
                return -1;
        }
        memcpy(exact, buf, len);
        free(buf);
        (void) LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        printf("ok %zu - %s\n", ++*n, path);
        fflush(stdout);
        return 0;
}

static int cmp(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static int count_or_replay(const char *arg, size_t *n, int replay) {
        struct stat st;
        int failed = 0;

        if (stat(arg, &st) < 0) {
                if (replay)
                        printf("not ok %zu - %s # %s\n", ++*n, arg, strerror(errno));
                else
                        ++*n;
                return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
                if (!replay) {
                        ++*n;
                        return 0;
                }
                return replay_file(arg, n) < 0;
        }

        struct dirent **list = NULL;
        int k = scandir(arg, &list, NULL, NULL);
        if (k < 0)
                return 1;
        char **paths = calloc((size_t) k, sizeof(char *));
        size_t m = 0;
        for (int i = 0; i < k; i++) {
                if (list[i]->d_name[0] != '.' && paths &&
                    asprintf(&paths[m], "%s/%s", arg, list[i]->d_name) >= 0)
                        m++;
                free(list[i]);
        }
        free(list);
        if (!paths)
                return 1;
        qsort(paths, m, sizeof(char *), cmp);
        for (size_t i = 0; i < m; i++) {
                if (replay)
                        failed |= replay_file(paths[i], n) < 0;
                else
                        ++*n;
                free(paths[i]);
        }
        free(paths);
        return failed;
}

int main(int argc, char **argv) {
        size_t total = 0, n = 0;
        int failed = 0;

        for (int i = 1; i < argc; i++)
                (void) count_or_replay(argv[i], &total, 0);
        printf("1..%zu\n", total);
        for (int i = 1; i < argc; i++)
                failed |= count_or_replay(argv[i], &n, 1);
        return failed ? 1 : 0;
}
