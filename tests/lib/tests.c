/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"

#define TESTS_MAX 512

struct test {
        const char *name;
        void (*func)(void);
};

static struct test tests[TESTS_MAX];
static size_t n_tests;
static char current_case[512];
static char tmpdir[256];
static const char *current_test;

void test_register(const char *name, void (*func)(void)) {
        if (n_tests >= TESTS_MAX) {
                fprintf(stderr, "Too many tests, raise TESTS_MAX\n");
                abort();
        }
        tests[n_tests++] = (struct test) { name, func };
}

void test_case_set(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vsnprintf(current_case, sizeof(current_case), format, ap);
        va_end(ap);
}

const char *test_case_get(void) {
        return current_case;
}

void test_fail(const char *file, int line, const char *format, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "# %s:%i: %s: ", file, line, current_test ?: "?");
        if (current_case[0])
                fprintf(stderr, "[case %s] ", current_case);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        abort();
}

void test_skip(const char *format, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "# skip %s: ", current_test ?: "?");
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(77);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        (void) remove(path);
        return 0;
}

static void tmpdir_cleanup(void) {
        if (tmpdir[0])
                (void) nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        tmpdir[0] = '\0';
}

const char *test_tmpdir(void) {
        if (!tmpdir[0]) {
                const char *base = getenv("TMPDIR") ?: "/tmp";

                snprintf(tmpdir, sizeof(tmpdir), "%s/ztna-test-XXXXXX", base);
                if (!mkdtemp(tmpdir)) {
                        tmpdir[0] = '\0';
                        test_fail(__FILE__, __LINE__, "mkdtemp: %m");
                }
        }
        return tmpdir;
}

const char *test_source_dir(void) {
        return getenv("ZTNA_SOURCE_DIR");
}

int test_run(char **ret_output, const char *const *argv) {
        posix_spawn_file_actions_t fa;
        static char out[256 * 1024];
        size_t n = 0;
        int pipefd[2], status;
        ssize_t k;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) != 0)
                test_fail(__FILE__, __LINE__, "pipe2: %m");
        if (posix_spawn_file_actions_init(&fa) != 0 ||
            posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0) != 0 ||
            posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO) != 0 ||
            posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO) != 0)
                test_fail(__FILE__, __LINE__, "posix_spawn_file_actions");
        if (posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *) argv, environ) != 0)
                test_skip("%s not available", argv[0]);
        posix_spawn_file_actions_destroy(&fa);
        close(pipefd[1]);

        while ((k = read(pipefd[0], out + n, sizeof(out) - 1 - n)) > 0)
                n += (size_t) k;
        close(pipefd[0]);
        out[n] = '\0';
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        test_fail(__FILE__, __LINE__, "waitpid: %m");
        if (ret_output)
                *ret_output = out;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
                test_skip("%s not available", argv[0]);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *test_path(const char *name) {
        static char buf[8][512];
        static unsigned idx;
        char *p = buf[idx++ % 8];

        snprintf(p, sizeof(buf[0]), "%s/%s", test_tmpdir(), name);
        return p;
}

void test_write_file(const char *path, const void *data, size_t size) {
        FILE *f = fopen(path, "we");

        if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
                test_fail(__FILE__, __LINE__, "Failed to write '%s': %m", path);
}

char *test_read_file(const char *path, size_t *ret_size) {
        static char buf[256 * 1024];
        FILE *f = fopen(path, "re");
        size_t n;

        if (!f)
                test_fail(__FILE__, __LINE__, "Failed to open '%s': %m", path);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        if (ret_size)
                *ret_size = n;
        return buf;
}

static int capture_fd = -1, saved_stderr = -1;

void test_capture_stderr_begin(void) {
        char path[512];

        snprintf(path, sizeof(path), "%s/.stderr", test_tmpdir());
        capture_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (capture_fd < 0)
                test_fail(__FILE__, __LINE__, "open '%s': %m", path);
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        if (saved_stderr < 0 || dup2(capture_fd, STDERR_FILENO) < 0)
                test_fail(__FILE__, __LINE__, "dup: %m");
}

const char *test_capture_stderr_end(void) {
        static char buf[65536];
        ssize_t n;

        fflush(stderr);
        if (dup2(saved_stderr, STDERR_FILENO) < 0)
                test_fail(__FILE__, __LINE__, "dup2: %m");
        close(saved_stderr);
        n = pread(capture_fd, buf, sizeof(buf) - 1, 0);
        if (n < 0)
                test_fail(__FILE__, __LINE__, "pread: %m");
        buf[n] = '\0';
        close(capture_fd);
        saved_stderr = capture_fd = -1;
        return buf;
}

static bool selected(int argc, char **argv, const char *name) {
        if (argc <= 1)
                return true;
        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], name) == 0)
                        return true;
        return false;
}

/* Runs one case; returns 0 pass, 77 skip, anything else fail. */
static int run_one(const struct test *t, bool nofork) {
        pid_t pid;
        int status;

        current_test = t->name;
        current_case[0] = '\0';

        if (nofork) {
                t->func();
                tmpdir_cleanup();
                return 0;
        }

        /* The parent makes the case's directory and removes it after the child is gone, so that a case that
         * aborts on a failed assertion leaves nothing behind either. */
        (void) test_tmpdir();
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "# fork: %m\n");
                tmpdir_cleanup();
                return 1;
        }
        if (pid == 0) {
                t->func();
                /* exit(), not _exit(): LeakSanitizer checks for leaks from an atexit handler. */
                exit(0);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        tmpdir_cleanup();
                        return 1;
                }
        tmpdir_cleanup();
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        fprintf(stderr, "# %s: killed by signal %s\n", t->name, strsignal(WTERMSIG(status)));
        return 1;
}

/* Weak, so that programs which are not unit tests (tests/interop/grpc-peer, tools/bench) can link the
 * fixtures and bring their own main(). */
__attribute__((weak)) int main(int argc, char **argv) {
        bool nofork = getenv("ZTNA_TEST_NOFORK") != NULL;
        size_t n = 0, failed = 0;

        for (size_t i = 0; i < n_tests; i++)
                if (selected(argc, argv, tests[i].name))
                        n++;

        printf("1..%zu\n", n);
        n = 0;
        for (size_t i = 0; i < n_tests; i++) {
                int r;

                if (!selected(argc, argv, tests[i].name))
                        continue;
                r = run_one(&tests[i], nofork);
                n++;
                if (r == 0)
                        printf("ok %zu - %s\n", n, tests[i].name);
                else if (r == 77)
                        printf("ok %zu - %s # SKIP\n", n, tests[i].name);
                else {
                        printf("not ok %zu - %s\n", n, tests[i].name);
                        failed++;
                }
                fflush(stdout);
        }
        return failed > 0 ? 1 : 0;
}
