/* SPDX-License-Identifier: Apache-2.0 */

/* `ztna-connector` and `ztna-tunneler`: one command line for both roles.
 *
 *   enroll   token (file, stdin, credential, environment — never argv) → identity saved in the state
 *            directory, sealed with the KEK; prints the SPIFFE ID.
 *   run      the daemon (agent-manager.h).
 */

#include <assert.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent-conf.h"
#include "agent-enroll.h"
#include "agent-main.h"
#include "agent-manager.h"
#include "config.h"
#include "identity-store.h"
#include "log.h"
#include "string-util.h"
#include "strv.h"

/* Options that may repeat. */
#define ARG_LIST_MAX 32U

typedef struct Args {
        const char *confdir;
        const char *state_dir;
        const char *kek_file;
        const char *token_file;
        const char *id;
        const char *trust_domain;
        const char *ca_file;
        const char *key_type;
        const char *health_listen;
        char *labels[ARG_LIST_MAX + 1];
        size_t n_labels;
        char *controllers[ARG_LIST_MAX + 1];
        size_t n_controllers;
        bool force;
        bool user;
        bool enroll_only;       /* an option only `enroll` takes was given */
        bool run_only;          /* an option only `run` takes was given */
} Args;

static int help(SpiffeRole role) {
        const char *name = agent_config_name(role);

        printf("ztna-%1$s [OPTIONS…] COMMAND\n\n"
               "The ztna %1$s.\n\n"
               "Commands:\n"
               "  enroll                  Enroll with a token, save the identity, print the SPIFFE ID\n"
               "  run                     Run the daemon; when not enrolled, enroll with the credential\n"
               "                          ENROLLMENT_TOKEN (or $ENROLLMENT_TOKEN) if there is one, else\n"
               "                          wait for Enroll over D-Bus (ztnactl enroll)\n\n"
               "Options:\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "     --confdir=DIR        Read %1$s.conf and %1$s.conf.d/ from DIR (default " ZTNA_CONFDIR ")\n"
               "     --state-dir=DIR      Keep the identity in DIR (default: $STATE_DIRECTORY, else\n"
               "                          /var/lib/ztna-%1$s); for development\n"
               "     --kek-file=PATH      Key-encryption key file when there is no ztna.kek credential;\n"
               "                          enroll creates it. For development: a sealed credential is safer\n\n"
               "enroll:\n"
               "     --token-file=PATH    Read the token from PATH, or from stdin with '-'. Otherwise the\n"
               "                          credential ENROLLMENT_TOKEN, then $ENROLLMENT_TOKEN\n"
               "     --id=ID              Agent id (default: Id=, else the host name)\n"
               "     --trust-domain=TD    Refuse a controller of another trust domain\n"
               "     --ca-file=PATH       Trust this PEM root instead of the token's CA pin\n"
               "     --label=KEY=VALUE    Label sent at enrollment (repeatable)\n"
               "     --key-type=TYPE      ecdsa-p256 (default) or ed25519\n"
               "     --force              Replace an existing or unreadable identity (an unreadable one is\n"
               "                          moved aside, never deleted)\n\n"
               "run:\n"
               "     --controller=HOST:PORT  Dial this controller instead of the identity's (repeatable)\n"
               "     --health-listen=IP:PORT Loopback address for /healthz and /readyz\n"
               "     --user               Use the session bus (desktop)\n",
               name);
        return 0;
}

static int parse_argv(SpiffeRole role, int argc, char *argv[], Args *a) {
        enum {
                ARG_VERSION = 0x100,
                ARG_CONFDIR,
                ARG_STATE_DIR,
                ARG_KEK_FILE,
                ARG_TOKEN_FILE,
                ARG_TOKEN,
                ARG_ID,
                ARG_TRUST_DOMAIN,
                ARG_CA_FILE,
                ARG_LABEL,
                ARG_KEY_TYPE,
                ARG_FORCE,
                ARG_CONTROLLER,
                ARG_HEALTH_LISTEN,
                ARG_USER,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "confdir", required_argument, NULL, ARG_CONFDIR },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "kek-file", required_argument, NULL, ARG_KEK_FILE },
                { "token-file", required_argument, NULL, ARG_TOKEN_FILE },
                { "token", required_argument, NULL, ARG_TOKEN },
                { "id", required_argument, NULL, ARG_ID },
                { "trust-domain", required_argument, NULL, ARG_TRUST_DOMAIN },
                { "ca-file", required_argument, NULL, ARG_CA_FILE },
                { "label", required_argument, NULL, ARG_LABEL },
                { "key-type", required_argument, NULL, ARG_KEY_TYPE },
                { "force", no_argument, NULL, ARG_FORCE },
                { "controller", required_argument, NULL, ARG_CONTROLLER },
                { "health-listen", required_argument, NULL, ARG_HEALTH_LISTEN },
                { "user", no_argument, NULL, ARG_USER },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help(role);
                        return 0;
                case ARG_VERSION:
                        puts(PROJECT_VERSION);
                        return 0;
                case ARG_CONFDIR:
                case ARG_STATE_DIR:
                case ARG_KEK_FILE:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "--%s needs an absolute path, got '%s'.",
                                                       c == ARG_CONFDIR ? "confdir" :
                                                       c == ARG_STATE_DIR ? "state-dir" : "kek-file", optarg);
                        if (c == ARG_CONFDIR)
                                a->confdir = optarg;
                        else if (c == ARG_STATE_DIR)
                                a->state_dir = optarg;
                        else
                                a->kek_file = optarg;
                        break;
                case ARG_TOKEN:
                        /* Anything on argv is readable by every user in /proc/<pid>/cmdline. */
                        return log_error_errno(EINVAL, "A token is never taken on the command line (other "
                                               "users can read it there): use --token-file=PATH, "
                                               "--token-file=- with stdin, or the credential %s.",
                                               AGENT_TOKEN_CREDENTIAL);
                case ARG_TOKEN_FILE:
                        a->token_file = optarg;
                        a->enroll_only = true;
                        break;
                case ARG_ID:
                        a->id = optarg;
                        a->enroll_only = true;
                        break;
                case ARG_TRUST_DOMAIN:
                        a->trust_domain = optarg;
                        a->enroll_only = true;
                        break;
                case ARG_CA_FILE:
                        a->ca_file = optarg;
                        a->enroll_only = true;
                        break;
                case ARG_KEY_TYPE:
                        a->key_type = optarg;
                        a->enroll_only = true;
                        break;
                case ARG_FORCE:
                        a->force = true;
                        a->enroll_only = true;
                        break;
                case ARG_LABEL:
                        if (a->n_labels >= ARG_LIST_MAX)
                                return log_error_errno(E2BIG, "At most %u --label options.", ARG_LIST_MAX);
                        a->labels[a->n_labels++] = optarg;
                        a->enroll_only = true;
                        break;
                case ARG_CONTROLLER:
                        if (a->n_controllers >= ARG_LIST_MAX)
                                return log_error_errno(E2BIG, "At most %u --controller options.", ARG_LIST_MAX);
                        a->controllers[a->n_controllers++] = optarg;
                        a->run_only = true;
                        break;
                case ARG_HEALTH_LISTEN:
                        a->health_listen = optarg;
                        a->run_only = true;
                        break;
                case ARG_USER:
                        a->user = true;
                        a->run_only = true;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }
        return 1;
}

static int verb_enroll(SpiffeRole role, const Args *a) {
        _cleanup_(agent_config_done) AgentConfig config = {};
        _cleanup_(agent_identity_done) AgentIdentity existing = {}, identity = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_free_ char *id = NULL, *root_pem = NULL, *reason = NULL;
        const char *why = NULL, *name = agent_config_name(role);
        IdentitySaveFlags flags = 0;
        AgentTokenSource source;
        uint8_t kek[KEK_SIZE];
        int r;

        r = agent_config_load(role, a->confdir, &config);
        if (r < 0)
                return r;
        r = agent_apply_options(&config, &(AgentManagerOptions) { .role = role, .state_dir = a->state_dir });
        if (r < 0)
                return r;

        const struct {
                const char *key, *option, *value;
        } settings[] = {
                { "Id", "--id", a->id },
                { "TrustDomain", "--trust-domain", a->trust_domain },
                { "ControllerCAFile", "--ca-file", a->ca_file },
                { "KeyType", "--key-type", a->key_type },
        };
        for (size_t k = 0; k < ELEMENTSOF(settings); k++) {
                if (!settings[k].value)
                        continue;
                r = agent_config_set(&config, "Agent", settings[k].key, settings[k].value);
                if (r < 0)
                        return log_error_errno(r, "Invalid %s='%s': %m", settings[k].option, settings[k].value);
        }
        for (size_t k = 0; k < a->n_labels; k++) {
                r = agent_config_set(&config, "Agent", "Labels", a->labels[k]);
                if (r < 0)
                        return log_error_errno(r, "Invalid --label='%s': %m", a->labels[k]);
        }
        r = agent_config_check(&config);
        if (r < 0)
                return r;

        r = agent_default_id(&config, &id);
        if (r < 0)
                return log_error_errno(r, "The host name is not a valid agent id ([A-Za-z0-9._-], at most 128): "
                                       "pass --id= or set Id= in %s.conf.", name);
        bool id_is_default = r > 0;
        r = agent_read_controller_ca(&config, &root_pem);
        if (r < 0)
                return log_error_errno(r, "Failed to read the controller CA '%s': %m", config.controller_ca_file);

        r = agent_kek_load(a->kek_file, /* create= */ true, kek, NULL);
        if (r < 0)
                return r;

        /* Never replace an identity silently: a working one would be lost, an unreadable one may be a
         * mistake (wrong KEK) that the operator can still fix. */
        r = identity_store_load(config.state_directory, role, kek, &existing, &why);
        if (r >= 0 && !a->force) {
                explicit_bzero(kek, sizeof(kek));
                return log_error_errno(EEXIST, "Already enrolled as %s (identity in '%s'); use --force to "
                                       "enroll again.", existing.spiffe_id, config.state_directory);
        }
        if (r < 0 && r != -ENOENT) {
                if (!a->force) {
                        explicit_bzero(kek, sizeof(kek));
                        return log_error_errno(r, "The identity file '%s/" IDENTITY_FILE_NAME "' does not open: "
                                               "%s. It is left as it is; use --force to move it aside and "
                                               "enroll again.", config.state_directory, why);
                }
                log_warning("The identity file '%s/" IDENTITY_FILE_NAME "' does not open (%s): it will be moved "
                            "aside.", config.state_directory, why);
                flags |= IDENTITY_SAVE_FORCE;
        }

        r = agent_token_read(role, a->token_file, &token, &source);
        if (r < 0) {
                explicit_bzero(kek, sizeof(kek));
                if (r == -ENOENT && a->token_file && !streq(a->token_file, "-"))
                        return log_error_errno(r, "Cannot read the enrollment token: the token file '%s' does "
                                               "not exist.", a->token_file);
                if (agent_token_error_message(r))
                        return log_error_errno(r, "Cannot read the enrollment token: %s.", agent_token_error_message(r));
                return log_error_errno(r, "Cannot read the enrollment token (%s): %m",
                                       agent_token_source_to_string(source));
        }
        if (r == AGENT_TOKEN_FILE_ACCESSIBLE)
                log_warning("The token file is readable or writable by other users, or owned by another user: "
                            "anyone who can read it can enroll in our place. Keep tokens in 0600 files.");
        if (source == AGENT_TOKEN_SOURCE_ENVIRONMENT)
                log_warning("The token came from $%s, which other processes of this user could read; it has "
                            "been erased. Prefer --token-file or the credential %s.",
                            AGENT_TOKEN_ENVIRONMENT, AGENT_TOKEN_CREDENTIAL);

        AgentEnrollParams params = {
                .token = token,
                .role = role,
                .id = id,
                .id_is_default = id_is_default,
                .version = PROJECT_VERSION,
                .private_ip = config.private_ip,
                .labels = config.labels,
                .key_type = config.key_type,
                .expected_trust_domain = config.trust_domain,
                .root_pem = root_pem,
        };
        r = agent_enroll_sync(&params, &identity, &reason);
        token = erase_and_free_string(token);
        if (r < 0) {
                explicit_bzero(kek, sizeof(kek));
                return log_error_errno(r, "Enrollment failed: %s", strna(reason));
        }

        r = agent_identity_persist(config.state_directory, role, kek, &identity, flags, &why);
        explicit_bzero(kek, sizeof(kek));
        if (r < 0)
                return log_error_errno(r, "Enrolled as %s, but failed to save the identity in '%s': %s. The "
                                       "token is spent: ask for a new one.", identity.spiffe_id,
                                       config.state_directory, why ?: strerror(-r));

        log_info("Enrolled as %s; identity saved in '%s'.", identity.spiffe_id, config.state_directory);
        puts(identity.spiffe_id);
        return fflush(stdout) == 0 ? 0 : -errno;
}

static int verb_run(SpiffeRole role, const AgentRoleOps *ops, const Args *a) {
        _cleanup_(agent_manager_freep) AgentManager *m = NULL;
        int r;

        r = agent_manager_new(&(AgentManagerOptions) {
                                      .role = role,
                                      .confdir = a->confdir,
                                      .state_dir = a->state_dir,
                                      .kek_file = a->kek_file,
                                      .controllers = a->n_controllers > 0 ? (char **) a->controllers : NULL,
                                      .health_listen = a->health_listen,
                                      .role_ops = ops,
                                      .user_mode = a->user,
                              }, &m);
        if (r < 0)
                return r;

        return agent_manager_run(m);
}

int agent_main(SpiffeRole role, const AgentRoleOps *ops, int argc, char *argv[]) {
        Args a = {};
        const char *verb;
        int r;

        assert(agent_config_name(role));

        log_parse_environment();

        r = parse_argv(role, argc, argv, &a);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        if (optind + 1 != argc) {
                log_error("Expected exactly one command (enroll or run); see --help.");
                return 2;
        }
        verb = argv[optind];

        if (streq(verb, "enroll")) {
                if (a.run_only) {
                        log_error("--controller, --health-listen and --user are options of 'run'.");
                        return 2;
                }
                r = verb_enroll(role, &a);
        } else if (streq(verb, "run")) {
                if (a.enroll_only) {
                        log_error("--token-file, --id, --trust-domain, --ca-file, --label, --key-type and "
                                  "--force are options of 'enroll'.");
                        return 2;
                }
                r = verb_run(role, ops, &a);
        } else {
                log_error("Unknown command '%s'; see --help.", verb);
                return 2;
        }

        return r < 0 ? 1 : 0;
}
