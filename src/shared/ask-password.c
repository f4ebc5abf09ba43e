/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "ask-password.h"
#include "log.h"
#include "macro.h"
#include "string-util.h"

static struct termios saved_termios;
static volatile sig_atomic_t saved_termios_valid = 0;

static void termios_restore(void) {
        if (saved_termios_valid) {
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
                saved_termios_valid = 0;
        }
}

static void termios_restore_and_raise(int sig) {
        termios_restore();
        (void) signal(sig, SIG_DFL);
        (void) raise(sig);
}

/* One line typed at the terminal without echo (the terminal is restored on every path, a signal
 * included), or all of stdin without its final newline when stdin is not a terminal. buf holds at most
 * ASK_PASSWORD_MAX bytes and a NUL; the caller wipes it. */
static int password_read(const char *prompt, char buf[static ASK_PASSWORD_MAX + 2]) {
        static const int signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
        struct sigaction sa = { .sa_handler = termios_restore_and_raise }, old[ELEMENTSOF(signals)];
        bool tty = isatty(STDIN_FILENO), too_long = false;
        size_t n = 0;
        int r = 0;

        if (tty) {
                struct termios t;

                if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
                        return log_error_errno(errno, "Failed to read the terminal settings: %m");
                t = saved_termios;
                t.c_lflag &= ~(tcflag_t) ECHO;
                t.c_lflag |= ICANON;
                for (size_t i = 0; i < ELEMENTSOF(signals); i++)
                        (void) sigaction(signals[i], &sa, &old[i]);
                saved_termios_valid = 1;
                if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0) {
                        r = log_error_errno(errno, "Failed to turn off echo on the terminal: %m");
                        goto finish;
                }
                fputs(prompt, stderr);
                fflush(stderr);
        }

        for (;;) {
                char c;
                ssize_t k = read(STDIN_FILENO, &c, 1);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = log_error_errno(errno, "Failed to read the password: %m");
                        break;
                }
                if (k == 0 || (tty && c == '\n'))
                        break;
                if (c == '\0') {
                        r = log_error_errno(EINVAL, "The password contains a NUL byte.");
                        break;
                }
                if (n < ASK_PASSWORD_MAX + 1)
                        buf[n++] = c;
                else {
                        too_long = true;
                        if (!tty) /* a terminal line is read to its end; a stream is not */
                                break;
                }
        }
        /* From a pipe or a file: one final newline ("\n" or "\r\n") is not part of it. */
        if (!tty && n > 0 && buf[n - 1] == '\n')
                n--;
        if (!tty && n > 0 && buf[n - 1] == '\r')
                n--;
        buf[n] = '\0';
        if (tty)
                fputc('\n', stderr);
        if (r >= 0 && (too_long || n > ASK_PASSWORD_MAX))
                r = log_error_errno(EMSGSIZE, "The password is longer than %u bytes.", ASK_PASSWORD_MAX);

finish:
        if (tty) {
                termios_restore();
                for (size_t i = 0; i < ELEMENTSOF(signals); i++)
                        (void) sigaction(signals[i], &old[i], NULL);
        }
        return r;
}

int ask_new_password(const char *prompt, char **ret) {
        char first[ASK_PASSWORD_MAX + 2], repeat[ASK_PASSWORD_MAX + 2];
        char *p = NULL;
        int r;

        assert(prompt);
        assert(ret);

        r = password_read(prompt, first);
        if (r >= 0 && isatty(STDIN_FILENO)) {
                r = password_read("Repeat the password: ", repeat);
                if (r >= 0 && !streq(first, repeat))
                        r = log_error_errno(EINVAL, "The passwords do not match.");
        }
        if (r >= 0 && first[0] == '\0')
                r = log_error_errno(ENODATA, "No password given.");
        if (r >= 0) {
                p = strdup(first);
                if (!p)
                        r = log_oom();
        }
        explicit_bzero(first, sizeof(first));
        explicit_bzero(repeat, sizeof(repeat));
        if (r < 0)
                return r;
        *ret = p;
        return 0;
}
