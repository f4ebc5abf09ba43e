/* SPDX-License-Identifier: Apache-2.0 */

/* ztna-controller: `init` creates the trust domain's CA and state once (and, with --admin=, the first
 * administrator); `run` is the daemon (controller-manager.c). */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "controller-auth.h"
#include "controller-ca.h"
#include "controller-conf.h"
#include "controller-manager.h"
#include "controller-store.h"
#include "ask-password.h"
#include "creds-util.h"
#include "hexdecoct.h"
#include "log.h"
#include "macro.h"
#include "string-util.h"

static const char *arg_confdir = NULL;
static bool arg_if_needed = false;
static const char *arg_admin = NULL;

static int help(void) {
        printf("%s [OPTIONS...] COMMAND\n\n"
               "The ztna controller: certificate authority, enrollment, agent registry, control plane.\n\n"
               "Commands:\n"
               "  init         Create the trust domain's root and issuing CA and the database\n"
               "  run          Run the daemon\n\n"
               "Options:\n"
               "  -h --help          Show this help\n"
               "     --version       Show the version\n"
               "     --confdir=DIR   Read controller.conf and controller.conf.d/ from DIR (default %s)\n"
               "     --if-needed     init: succeed quietly when the database already holds a CA (for\n"
               "                     ExecStartPre= of ztna-controller.service)\n"
               "     --admin=NAME    init: also create the administrator NAME of the admin API and\n"
               "                     dashboard; the password is typed twice at the terminal, or read\n"
               "                     from stdin when it is not a terminal\n",
               program_invocation_short_name, ZTNA_CONFDIR);
        return 0;
}

/* Creates the parent directory of path (one level, mode 0700) when it is missing: the state directory
 * of a manual installation; under systemd StateDirectory= has made it already. */
static int ensure_parent_directory(const char *path) {
        _cleanup_free_ char *copy = strdup(path);

        if (!copy)
                return log_oom();
        const char *dir = dirname(copy);
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to create the directory '%s': %m", dir);
        return 0;
}

/* > 0 when the configured database exists and holds a CA, 0 when there is no database or it holds none
 * (a fresh installation), < 0 (logged) when it cannot be read: --if-needed must not paper over that. */
static int controller_initialized(const ControllerConfig *config) {
        _cleanup_(store_freep) Store *store = NULL;
        struct stat st;
        int r;

        if (stat(config->database, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "Cannot access the database '%s': %m", config->database);
        }
        r = store_open_sqlite(config->database, &store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the database '%s': %m", config->database);
        r = controller_ca_exists(store);
        if (r < 0)
                return log_error_errno(r, "Failed to read the CA state from '%s': %m", config->database);
        return r;
}

/* The first administrator's password for init --admin= (ask_new_password(): typed twice at a terminal, or
 * read once from stdin), checked against the rules before anything is created. *ret is released with
 * erase_and_free_string(). */
static int admin_password_get(const char *name, char **ret) {
        _cleanup_(erase_and_free_stringp) char *password = NULL;
        _cleanup_free_ char *prompt = NULL;
        const char *reason = NULL;
        int r;

        prompt = strjoin("Password for the administrator '", name, "': ", NULL);
        if (!prompt)
                return log_oom();
        r = ask_new_password(prompt, &password);
        if (r < 0)
                return r;
        r = auth_password_check(password, &reason);
        if (r < 0)
                return log_error_errno(r, "Refusing the administrator's password: %s.", reason);
        *ret = TAKE_PTR(password);
        return 0;
}

static int verb_init(void) {
        _cleanup_(controller_config_done) ControllerConfig config = {};
        _cleanup_(store_freep) Store *store = NULL;
        _cleanup_(controller_ca_freep) ControllerCa *ca = NULL;
        _cleanup_free_ char *pin_hex = NULL;
        const char *reason = NULL;
        uint8_t kek[KEK_SIZE], pin[32];
        _cleanup_(erase_and_free_stringp) char *password = NULL;
        char actor[32];
        bool from_credential = false;
        int r;

        r = controller_config_load(arg_confdir, &config);
        if (r < 0)
                return r;

        /* Checked before the key is read or made: an initialized controller needs nothing from init,
         * and --if-needed must not create a key file next to a database that has its own. */
        if (arg_if_needed) {
                r = controller_initialized(&config);
                if (r < 0)
                        return r;
                if (r > 0) {
                        if (arg_admin)
                                log_notice("The database '%s' already holds a CA: nothing to do. Create the "
                                           "administrator with 'ztnactl admin create %s'.",
                                           config.database, arg_admin);
                        else
                                log_debug("The database '%s' already holds a CA: nothing to do.",
                                          config.database);
                        return 0;
                }
        }

        /* Before anything is created: a mistyped or refused password leaves nothing half-done. */
        if (arg_admin) {
                r = admin_password_get(arg_admin, &password);
                if (r < 0)
                        return r;
        }

        r = kek_load(NULL, config.key_file, kek, &from_credential, &reason);
        if (r == -ENOENT) {
                r = ensure_parent_directory(config.key_file);
                if (r < 0)
                        goto finish;
                r = kek_generate_file(config.key_file);
                if (r < 0) {
                        log_error_errno(r, "Failed to create the key file '%s': %m", config.key_file);
                        goto finish;
                }
                log_warning("Created the key-encryption key file '%s' (mode 0600). A credential sealed with "
                            "systemd-creds and passed as '%s' protects the CA keys better.",
                            config.key_file, KEK_CREDENTIAL_NAME);
                r = kek_load(NULL, config.key_file, kek, &from_credential, &reason);
        }
        if (r < 0) {
                log_error_errno(r, "Failed to load the key-encryption key: %s", reason ?: strerror(-r));
                goto finish;
        }

        r = ensure_parent_directory(config.database);
        if (r < 0)
                goto finish;
        r = store_open_sqlite(config.database, &store);
        if (r < 0) {
                log_error_errno(r, "Failed to open the database '%s': %m", config.database);
                goto finish;
        }

        r = controller_ca_init(store, &config, kek, 0);
        if (r == -EEXIST) {
                log_error_errno(r, "The database '%s' already holds a CA: nothing to do.", config.database);
                goto finish;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to create the CA: %m");
                goto finish;
        }

        r = controller_ca_load(store, &config, kek, 0, &ca, &reason);
        if (r < 0) {
                log_error_errno(r, "Failed to load the new CA: %s", reason ?: strerror(-r));
                goto finish;
        }
        controller_ca_get_root_pin(ca, pin);
        pin_hex = hexmem(pin, sizeof(pin));
        if (!pin_hex) {
                r = log_oom();
                goto finish;
        }

        if (arg_admin) {
                if (geteuid() == 0)
                        snprintf(actor, sizeof(actor), "root");
                else
                        snprintf(actor, sizeof(actor), "uid:%" PRIu32, (uint32_t) geteuid());
                r = auth_admin_create(store, arg_admin, password, actor, &reason);
                if (r < 0) {
                        log_error_errno(r, "Failed to create the administrator '%s': %s", arg_admin,
                                        r == -EINVAL && reason ? reason : strerror(-r));
                        goto finish;
                }
        }

        printf("Trust domain:     %s\n"
               "Root CA SPKI pin: %s\n"
               "Database:         %s\n"
               "Key protection:   %s\n",
               config.trust_domain, pin_hex, config.database,
               from_credential ? "credential " KEK_CREDENTIAL_NAME : config.key_file);
        if (arg_admin)
                printf("Administrator:    %s\n", arg_admin);
        r = 0;

finish:
        explicit_bzero(kek, sizeof(kek));
        return r;
}

static int verb_run(void) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        r = manager_new(&(ManagerOptions) { .confdir = arg_confdir }, &m);
        if (r < 0)
                return r;

        r = manager_start(m);
        if (r < 0)
                return r;

        log_info("ztna-controller %s running for trust domain '%s'.", PROJECT_VERSION, m->config.trust_domain);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_CONFDIR,
                ARG_IF_NEEDED,
                ARG_ADMIN,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "confdir", required_argument, NULL, ARG_CONFDIR },
                { "if-needed", no_argument, NULL, ARG_IF_NEEDED },
                { "admin", required_argument, NULL, ARG_ADMIN },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        puts(PROJECT_VERSION);
                        return 0;
                case ARG_CONFDIR:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "--confdir= needs an absolute path, got '%s'.",
                                                       optarg);
                        arg_confdir = optarg;
                        break;
                case ARG_IF_NEEDED:
                        arg_if_needed = true;
                        break;
                case ARG_ADMIN:
                        if (!store_admin_name_is_valid(optarg))
                                return log_error_errno(EINVAL, "Invalid --admin= name: expected 1-64 "
                                                       "characters of a-z 0-9 . _ @ -, starting with a "
                                                       "letter or digit.");
                        arg_admin = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        return 1;
}

int main(int argc, char *argv[]) {
        int r;

        log_parse_environment();

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        if (optind + 1 != argc) {
                log_error("Expected exactly one command (init or run); see --help.");
                return 2;
        }

        if (arg_if_needed && !streq(argv[optind], "init")) {
                log_error("--if-needed is an option of 'init'.");
                return 2;
        }
        if (arg_admin && !streq(argv[optind], "init")) {
                log_error("--admin= is an option of 'init'.");
                return 2;
        }

        if (streq(argv[optind], "init"))
                r = verb_init();
        else if (streq(argv[optind], "run"))
                r = verb_run();
        else {
                log_error("Unknown command '%s'; see --help.", argv[optind]);
                return 2;
        }

        return r < 0 ? 1 : 0;
}
