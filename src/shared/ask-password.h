/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Reading a new password from the person at the terminal, never from the command line: typed twice without
 * echo when stdin is a terminal (the terminal is restored on every path, a signal included), else all of
 * stdin once (a pipe or a file; one final "\n" or "\r\n" is not part of it). Used by ztnactl admin and
 * ztna-controller init --admin=. Errors are logged. */

/* Most bytes of password accepted (the controller's rules, AUTH_PASSWORD_MAX, allow as many). */
#define ASK_PASSWORD_MAX 1024U

/* prompt is shown for the first entry, "Repeat the password: " for the second. *ret is a new string, to be
 * released with erase_and_free_string(). Errors: -EMSGSIZE longer than ASK_PASSWORD_MAX, -EINVAL the two
 * entries differ or the input holds a NUL byte, -ENODATA empty, -ENOMEM, errors of read() and the terminal
 * calls. */
int ask_new_password(const char *prompt, char **ret);
