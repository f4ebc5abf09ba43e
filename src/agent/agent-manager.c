/* SPDX-License-Identifier: Apache-2.0 */

/* The running agent: see agent-manager.h for the states and who does what. Secrets are read from the
 * keyring into a local AgentIdentity for the one call that needs them and wiped on return
 * (manager_identity_get() + _cleanup_(agent_identity_done)). */

#include <assert.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "agent-bus.h"
#include "agent-health.h"
#include "agent-manager.h"
#include "agent-metrics.h"
#include "agent-policy.h"
#include "agent-util.h"
#include "config.h"
#include "crypto-x509.h"
#include "fileio.h"
#include "identity-store.h"
#include "event-util.h"
#include "log.h"
#include "parse-util.h"
#include "random-util.h"
#include "string-util.h"
#include "strv.h"

#define KEYRING_KEK_DESCRIPTION "ztna-kek"
#define KEYRING_IDENTITY_DESCRIPTION "ztna-identity"

static const char *const agent_state_table[_AGENT_STATE_MAX] = {
        [AGENT_STATE_UNENROLLED] = "unenrolled",
        [AGENT_STATE_ENROLLING] = "enrolling",
        [AGENT_STATE_CONNECTING] = "connecting",
        [AGENT_STATE_ONLINE] = "online",
        [AGENT_STATE_OFFLINE] = "offline",
        [AGENT_STATE_REAUTHENTICATING] = "reauthenticating",
        [AGENT_STATE_REVOKED] = "revoked",
        [AGENT_STATE_STOPPING] = "stopping",
};

const char *agent_state_to_string(AgentState s) {
        if (s < 0 || s >= _AGENT_STATE_MAX)
                return NULL;
        return agent_state_table[s];
}

static void role_identity_changed(AgentManager *m);

/* --- identity: at rest and in the keyring --- */

int agent_identity_persist(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                           const AgentIdentity *i, IdentitySaveFlags flags, const char **ret_reason) {
        _cleanup_(agent_identity_done) AgentIdentity check = {};
        _cleanup_(erase_and_freep) ByteBuffer a = {}, b = {};
        int r;

        assert(dir);
        assert(i);

        /* The state directory of a development setup (--state-dir) may not exist yet; systemd's
         * StateDirectory= creates it otherwise. Only the last component, private. */
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                if (ret_reason)
                        *ret_reason = "cannot create the state directory";
                return -errno;
        }

        r = identity_store_save(dir, role, kek, i, flags, ret_reason);
        if (r < 0)
                return r;

        /* Proven: what is on disk opens with our KEK and is exactly what the controller gave us. Only then
         * is identity.previous dropped. */
        r = identity_store_load(dir, role, kek, &check, ret_reason);
        if (r < 0)
                return r;
        r = identity_serialize(i, &a.data, &a.size, ret_reason);
        if (r < 0)
                return r;
        r = identity_serialize(&check, &b.data, &b.size, ret_reason);
        if (r < 0)
                return r;
        if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0) {
                if (ret_reason)
                        *ret_reason = "the identity read back differs from the one written";
                return -EIO;
        }

        r = identity_store_commit(dir, ret_reason);
        return r < 0 ? r : 0;
}

int agent_apply_options(AgentConfig *c, const AgentManagerOptions *options) {
        static const struct {
                const char *section, *key, *option;
        } keys[] = {
                { "Agent", "StateDirectory", "--state-dir" },
                { "Agent", "Controller", "--controller" },
                { "Health", "Listen", "--health-listen" },
        };
        int r;

        assert(c);
        assert(options);

        for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
                char *single[2] = {}, **values;

                switch (k) {
                case 0:
                        single[0] = (char *) options->state_dir;
                        values = options->state_dir ? single : NULL;
                        break;
                case 1:
                        values = options->controllers;
                        if (values) {
                                /* The command line replaces the list, it does not add to it. */
                                r = agent_config_set(c, "Agent", "Controller", "");
                                if (r < 0)
                                        return log_error_errno(r, "Failed to reset Controller=: %m");
                        }
                        break;
                default:
                        single[0] = (char *) options->health_listen;
                        values = options->health_listen ? single : NULL;
                }

                STRV_FOREACH(v, values) {
                        r = agent_config_set(c, keys[k].section, keys[k].key, *v);
                        if (r < 0)
                                return log_error_errno(r, "Invalid %s='%s': %m", keys[k].option, *v);
                }
        }

        return agent_config_check(c);
}

int agent_kek_load(const char *kek_file, bool create, uint8_t ret[static KEK_SIZE], bool *ret_from_credential) {
        const char *reason = NULL;
        bool from_credential = false;
        int r;

        r = kek_load(NULL, kek_file, ret, &from_credential, &reason);
        if (r == -ENOENT && create && kek_file) {
                r = kek_generate_file(kek_file);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the key file '%s': %m", kek_file);
                log_warning("Created the key-encryption key file '%s'. A key file is weaker than a credential "
                            "sealed with systemd-creds (LoadCredentialEncrypted=ztna.kek); use it for "
                            "development only.", kek_file);
                r = kek_load(NULL, kek_file, ret, &from_credential, &reason);
        }
        if (r == -ENOENT)
                return log_error_errno(r, "No key-encryption key: no credential '%s' (systemd's "
                                       "LoadCredentialEncrypted=) and %s.", KEK_CREDENTIAL_NAME,
                                       kek_file ? "the --kek-file does not exist" : "no --kek-file given");
        if (r < 0)
                return log_error_errno(r, "Failed to load the key-encryption key (%s%s%s): %s",
                                       kek_file ? "file '" : "credential " KEK_CREDENTIAL_NAME,
                                       strempty(kek_file), kek_file ? "'" : "", reason ?: strerror(-r));
        if (!from_credential && !create)
                log_warning("Using the key-encryption key file '%s' instead of a credential sealed with "
                            "systemd-creds: for development only.", kek_file);

        if (ret_from_credential)
                *ret_from_credential = from_credential;
        return 0;
}

int agent_default_id(const AgentConfig *c, char **ret) {
        char host[HOST_NAME_MAX + 1] = {}, *dot;
        char *s;

        assert(c);
        assert(ret);

        if (c->id)
                s = strdup(c->id);
        else {
                if (gethostname(host, sizeof(host) - 1) < 0)
                        return -errno;
                dot = strchr(host, '.');
                if (dot)
                        *dot = '\0';
                if (!ztna_id_is_valid(host))
                        return -EINVAL;
                s = strdup(host);
        }
        if (!s)
                return -ENOMEM;
        *ret = s;
        return !c->id;
}

int agent_read_controller_ca(const AgentConfig *c, char **ret) {
        _cleanup_free_ char *pem = NULL;
        int r;

        assert(c);
        assert(ret);

        if (!c->controller_ca_file) {
                *ret = NULL;
                return 0;
        }
        r = read_full_file(c->controller_ca_file, AGENT_CA_FILE_MAX, &pem, NULL);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(pem);
        return 1;
}

static void info_done(AgentManagerInfo *info) {
        free(info->id);
        free(info->spiffe_id);
        free(info->trust_domain);
        free(info->remote_network);
        strv_free(info->groups);
        strv_free(info->controllers);
        *info = (AgentManagerInfo) {};
}

/* The controllers to dial: Controller= (or --controller, $CONTROLLER_ADDR) overrides the identity's. */
static char **manager_controllers(AgentManager *m, char **from_identity) {
        return m->config.controllers ?: from_identity;
}

static int info_from_identity(AgentManager *m, const AgentIdentity *i, AgentManagerInfo *ret) {
        _cleanup_(info_done) AgentManagerInfo info = {};
        _cleanup_(crypto_x509_unrefp) X509 *leaf = NULL;
        int r;

        info.id = strdup(i->id);
        info.spiffe_id = strdup(i->spiffe_id);
        info.trust_domain = strdup(i->trust_domain);
        if (!info.id || !info.spiffe_id || !info.trust_domain)
                return -ENOMEM;
        if (i->remote_network) {
                info.remote_network = strdup(i->remote_network);
                if (!info.remote_network)
                        return -ENOMEM;
        }
        if (i->groups) {
                info.groups = strv_copy(i->groups);
                if (!info.groups)
                        return -ENOMEM;
        }
        info.controllers = strv_copy(manager_controllers(m, i->controllers));
        if (!info.controllers)
                return -ENOMEM;

        r = crypto_x509_from_der(i->chain[0].data, i->chain[0].size, &leaf);
        if (r < 0)
                return r;
        r = crypto_x509_get_validity(leaf, &info.not_before, &info.not_after);
        if (r < 0)
                return r;
        info.certificate_lifetime = i->certificate_lifetime;

        *ret = info;
        info = (AgentManagerInfo) {};
        return 0;
}

/* Takes i as the current identity: into the keyring, its public part into m->info. i is not changed. */
static int manager_set_identity(AgentManager *m, const AgentIdentity *i) {
        _cleanup_(keyring_secret_freep) KeyringSecret *secret = NULL;
        _cleanup_(erase_and_freep) ByteBuffer data = {};
        _cleanup_(info_done) AgentManagerInfo info = {};
        const char *reason = NULL;
        int r;

        r = identity_serialize(i, &data.data, &data.size, &reason);
        if (r < 0)
                return log_error_errno(r, "Invalid identity: %s", reason);
        r = info_from_identity(m, i, &info);
        if (r < 0)
                return log_error_errno(r, "Failed to read the identity's certificate: %m");

        r = keyring_secret_new(KEYRING_IDENTITY_DESCRIPTION, data.data, data.size, 0, &secret);
        if (r < 0)
                return log_error_errno(r, "Failed to keep the identity in the keyring or in locked memory: %m");
        /* The KEK's fallback was already reported; the identity falls back for the same reason. */
        if (r == KEYRING_MODE_MEMORY && keyring_secret_in_kernel(m->kek))
                log_warning_errno(keyring_secret_kernel_error(secret),
                                  "Kernel keyring refused the identity (%m), keeping it in locked, "
                                  "non-dumpable memory instead.");

        keyring_secret_free(m->identity);
        m->identity = TAKE_PTR(secret);
        info_done(&m->info);
        m->info = info;
        info = (AgentManagerInfo) {};
        return 0;
}

/* The current identity, parsed from the keyring, with the configured controller override applied. The
 * caller wipes it with agent_identity_done(). */
static int manager_identity_get(AgentManager *m, AgentIdentity *ret) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(erase_and_freep) ByteBuffer data = {};
        int r;

        if (!m->identity)
                return -ENOTCONN;
        r = keyring_secret_read(m->identity, &data.data, &data.size);
        if (r < 0)
                return r;
        r = identity_parse(data.data, data.size, &i, NULL);
        if (r < 0)
                return r;
        if (m->config.controllers) {
                char **l = strv_copy(m->config.controllers);
                if (!l)
                        return -ENOMEM;
                strv_free(i.controllers);
                i.controllers = l;
        }
        *ret = i;
        i = (AgentIdentity) {};
        return 0;
}

static int manager_kek_get(AgentManager *m, uint8_t ret[static KEK_SIZE]) {
        _cleanup_(erase_and_freep) ByteBuffer data = {};
        int r;

        r = keyring_secret_read(m->kek, &data.data, &data.size);
        if (r < 0)
                return r;
        if (data.size != KEK_SIZE)
                return -EIO;
        memcpy(ret, data.data, KEK_SIZE);
        return 0;
}

/* Saves a new identity from the controller (renewal, re-authentication, enrollment, pushed changes) and
 * makes it current. The identity on disk is what a restart uses, so a failure to save is an error even
 * though the new certificate works: the caller keeps the old one in use. */
static int manager_store_identity(AgentManager *m, const AgentIdentity *i) {
        const char *reason = NULL;
        uint8_t kek[KEK_SIZE];
        int r;

        r = manager_kek_get(m, kek);
        if (r < 0)
                return log_error_errno(r, "Failed to read the key-encryption key from the keyring: %m");
        r = agent_identity_persist(m->config.state_directory, m->role, kek, i, 0, &reason);
        explicit_bzero(kek, sizeof(kek));
        if (r < 0)
                return log_error_errno(r, "Failed to save the identity in '%s': %s", m->config.state_directory,
                                       reason ?: strerror(-r));

        r = manager_set_identity(m, i);
        if (r < 0)
                return r;
        role_identity_changed(m);
        return 0;
}

/* --- state --- */

static void manager_set_last_error(AgentManager *m, const char *reason) {
        (void) free_and_strdup(&m->last_error, reason);
}

static void manager_notify_status(AgentManager *m) {
        const char *state = agent_state_to_string(m->state);

        switch (m->state) {
        case AGENT_STATE_ONLINE:
        case AGENT_STATE_CONNECTING:
                (void) sd_notifyf(false, "STATUS=%s: controller %s", state, strna(m->controller));
                break;
        case AGENT_STATE_OFFLINE:
        case AGENT_STATE_REAUTHENTICATING:
        case AGENT_STATE_REVOKED:
                (void) sd_notifyf(false, "STATUS=%s: %s", state, m->last_error ?: "no reason given");
                break;
        case AGENT_STATE_UNENROLLED:
                (void) sd_notify(false, "STATUS=unenrolled: waiting for Enroll (ztnactl enroll)");
                break;
        default:
                (void) sd_notifyf(false, "STATUS=%s", state);
        }
}

static void manager_set_state(AgentManager *m, AgentState state) {
        if (m->state != state) {
                log_debug("State %s → %s.", agent_state_to_string(m->state), agent_state_to_string(state));
                m->state = state;
        }
        manager_notify_status(m);
        agent_bus_send_changed(m);
}

static void manager_send_ready(AgentManager *m) {
        if (m->ready_sent)
                return;
        m->ready_sent = true;
        (void) sd_notify(false, "READY=1");
}

static bool role_is_ready(const AgentManager *m, const char **ret_reason) {
        if (!m->role_ops || !m->role_ops->is_ready)
                return true;
        return m->role_ops->is_ready((AgentManager *) m, ret_reason);
}

bool agent_manager_is_ready(const AgentManager *m) {
        const char *reason = NULL;

        return m && m->state == AGENT_STATE_ONLINE && role_is_ready(m, &reason);
}

static bool health_ready(void *userdata, const char **ret_reason) {
        AgentManager *m = userdata;

        if (m->state != AGENT_STATE_ONLINE) {
                *ret_reason = agent_state_to_string(m->state);
                return false;
        }
        return role_is_ready(m, ret_reason);
}

static void role_identity_changed(AgentManager *m) {
        if (m->role_started && m->role_ops && m->role_ops->identity_changed)
                m->role_ops->identity_changed(m);
}

static void role_stop(AgentManager *m) {
        if (m->role_started && m->role_ops && m->role_ops->stop)
                m->role_ops->stop(m);
        m->role_started = false;
}

/* Once enrolled: the data plane comes up before the control stream dials, so that a connector announces
 * an address that already accepts tunnelers. */
static int role_start(AgentManager *m) {
        int r;

        if (m->role_started || !m->role_ops || !m->role_ops->start)
                return 0;
        r = m->role_ops->start(m);
        if (r < 0)
                return r;
        m->role_started = true;
        return 0;
}

int agent_manager_get_identity(AgentManager *m, AgentIdentity *ret) {
        assert(m);
        assert(ret);

        return manager_identity_get(m, ret);
}

const AgentPolicy *agent_manager_get_policy(const AgentManager *m) {
        assert(m);

        return m->policy;
}

int agent_manager_send(AgentManager *m, const Ztna__V1__AgentMessage *msg) {
        assert(m);
        assert(msg);

        if (!m->control)
                return -ENOTCONN;
        return agent_control_send(m->control, msg);
}

/* --- renewal --- */

static void manager_schedule_renewal(AgentManager *m, usec_t when);
static int manager_start_control(AgentManager *m);
static void manager_start_reauthentication(AgentManager *m);

static void request_finish(AgentManager *m, int error, const char *reason) {
        AgentManagerDone done = TAKE_PTR(m->request_done);
        void *userdata = TAKE_PTR(m->request_userdata);

        if (done)
                done(m, error, reason, userdata);
}

/* When the next renewal is due: RenewAt= ± Jitter= of the lifetime left, drawn anew each time. The
 * lifetime is the one the controller configured: the certificate's notBefore is backdated for clock skew,
 * so not_after - not_before overstates it. Never sooner than AGENT_RENEW_MIN_GAP from now, so that a
 * controller handing out certificates shorter than that cannot make us renew in a loop. */
static usec_t renewal_time(const AgentManager *m) {
        usec_t lifetime, lo, span, percent, when, t;

        lifetime = m->info.certificate_lifetime;
        if (lifetime == 0 || lifetime > usec_sub(m->info.not_after, m->info.not_before))
                lifetime = usec_sub(m->info.not_after, m->info.not_before);
        lo = m->config.renew_at_percent - m->config.renew_jitter_percent;
        span = 2 * (usec_t) m->config.renew_jitter_percent;
        /* In hundredths of a percent, so the jitter is not stuck on whole percentages. */
        percent = lo * 100 + random_u64_range(span * 100 + 1);
        when = usec_sub(m->info.not_after, lifetime / 10000 * percent);
        t = usec_add(now(CLOCK_REALTIME), AGENT_RENEW_MIN_GAP);
        return MAX(when, t);
}

static void on_renew_done(AgentRequest *req, int error, const char *reason, AgentIdentity *identity,
                          void *userdata) {
        /* Ours to free, after this callback: the identity it hands us lives in it. */
        _cleanup_(agent_request_freep) _unused_ AgentRequest *owned = req;
        AgentManager *m = userdata;
        bool reauth = m->state == AGENT_STATE_REAUTHENTICATING;
        char ts[64];
        int r;

        m->request = NULL;

        if (error < 0) {
                m->counters.renewal_failures++;
                manager_set_last_error(m, reason);
                if (reauth) {
                        usec_t delay = backoff_next(&m->reauth_backoff);
                        if (strstr(reason, "revoked")) {
                                log_error("Re-authentication refused: %s. Not trying again; the identity "
                                          "stays in '%s' for inspection.", reason, m->config.state_directory);
                                m->control = agent_control_free(m->control);
                                m->renew_timer = sd_event_source_disable_unref(m->renew_timer);
                                role_stop(m);
                                manager_set_state(m, AGENT_STATE_REVOKED);
                                manager_send_ready(m);
                                request_finish(m, error, reason);
                                return;
                        }
                        log_warning("Re-authentication failed: %s; retrying in %.3fs (attempt %u)", reason,
                                    (double) delay / USEC_PER_SEC, m->reauth_backoff.attempt);
                        manager_schedule_renewal(m, usec_add(now(CLOCK_REALTIME), delay));
                } else {
                        usec_t left = usec_sub(m->info.not_after, now(CLOCK_REALTIME));
                        usec_t delay = MIN(MIN(AGENT_RENEW_RETRY_MIN << MIN(m->renew_failures, 10U),
                                               AGENT_RENEW_RETRY_MAX), left);
                        m->renew_failures++;
                        log_warning("Certificate renewal failed: %s; retrying in %.3fs", reason,
                                    (double) delay / USEC_PER_SEC);
                        manager_schedule_renewal(m, usec_add(now(CLOCK_REALTIME), delay));
                }
                request_finish(m, error, reason);
                manager_set_state(m, m->state);
                return;
        }

        r = manager_store_identity(m, identity);
        if (r < 0) {
                m->counters.renewal_failures++;
                manager_set_last_error(m, "failed to save the renewed identity");
                manager_schedule_renewal(m, usec_add(now(CLOCK_REALTIME), AGENT_RENEW_RETRY_MIN));
                request_finish(m, r, "failed to save the renewed identity");
                return;
        }

        m->counters.renewals++;
        m->renew_failures = 0;
        backoff_reset(&m->reauth_backoff);
        format_timestamp(ts, sizeof(ts), m->info.not_after);
        if (reauth)
                log_info("Re-authenticated with the controller%s, certificate valid until %s.",
                         m->request_new_key ? " (new key)" : "", ts);
        else
                log_info("Certificate renewed (%s), valid until %s.", m->request_new_key ? "new key" : "same key",
                         ts);
        agent_bus_emit_certificate_rotated(m, m->request_new_key);

        if (m->control) {
                _cleanup_(agent_identity_done) AgentIdentity i = {};

                r = manager_identity_get(m, &i);
                if (r >= 0)
                        r = agent_control_set_identity(m->control, &i);
                if (r < 0)
                        log_warning_errno(r, "Failed to hand the renewed certificate to the control client, "
                                          "ignoring: %m");
        }

        manager_schedule_renewal(m, renewal_time(m));
        request_finish(m, 0, NULL);

        if (reauth) {
                manager_set_state(m, AGENT_STATE_CONNECTING);
                r = m->control ? agent_control_reconnect(m->control) : manager_start_control(m);
                if (r < 0)
                        log_error_errno(r, "Failed to restart the control stream: %m");
        } else
                agent_bus_send_changed(m);
}

static int manager_start_request(AgentManager *m, bool reauth, bool new_key) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        int r;

        assert(!m->request);

        r = manager_identity_get(m, &i);
        if (r < 0)
                return log_error_errno(r, "Failed to read the identity from the keyring: %m");

        m->request_new_key = new_key;
        if (reauth)
                r = agent_reauthenticate(m->event, &i, new_key, on_renew_done, m, &m->request);
        else
                r = agent_renew(m->event, &i, new_key, on_renew_done, m, &m->request);
        if (r < 0)
                return log_error_errno(r, "Failed to start %s: %m",
                                       reauth ? "re-authentication" : "certificate renewal");
        return 0;
}

static void manager_start_reauthentication(AgentManager *m) {
        int r;

        /* An expired certificate cannot open a control stream: stop dialing until we have a new one. */
        if (m->control)
                (void) agent_control_stop(m->control);
        manager_set_last_error(m, "certificate expired");
        manager_set_state(m, AGENT_STATE_REAUTHENTICATING);
        if (m->request)
                return;
        r = manager_start_request(m, /* reauth= */ true, /* new_key= */ false);
        if (r < 0)
                manager_schedule_renewal(m, usec_add(now(CLOCK_REALTIME), AGENT_RENEW_RETRY_MIN));
}

static int on_renew_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentManager *m = userdata;
        int r;

        if (m->request || m->state == AGENT_STATE_REVOKED || m->state == AGENT_STATE_STOPPING)
                return 0;

        if (now(CLOCK_REALTIME) >= m->info.not_after) {
                manager_start_reauthentication(m);
                return 0;
        }

        r = manager_start_request(m, /* reauth= */ false, /* new_key= */ false);
        if (r < 0)
                manager_schedule_renewal(m, usec_add(now(CLOCK_REALTIME), AGENT_RENEW_RETRY_MIN));
        return 0;
}

static void manager_schedule_renewal(AgentManager *m, usec_t when) {
        char buf[64];
        int r;

        /* A renewal never later than the expiry: that is when re-authentication takes over. Once expired,
         * the time is the re-authentication backoff's. */
        if (now(CLOCK_REALTIME) < m->info.not_after)
                when = MIN(when, m->info.not_after);

        if (m->renew_timer) {
                r = sd_event_source_set_time(m->renew_timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->renew_timer, SD_EVENT_ONESHOT);
        } else {
                r = sd_event_add_time(m->event, &m->renew_timer, CLOCK_REALTIME, when, USEC_PER_SEC / 10,
                                      on_renew_timer, m);
                if (r >= 0)
                        (void) sd_event_source_set_description(m->renew_timer, "agent-renewal");
        }
        if (r < 0) {
                log_error_errno(r, "Failed to arm the renewal timer: %m");
                return;
        }
        log_debug("Next renewal in %s.", format_timespan(buf, sizeof(buf),
                                                           usec_sub(when, now(CLOCK_REALTIME)), USEC_PER_MSEC));
}

/* --- the control stream --- */

static void on_control_state(AgentControl *c, const AgentControlEvent *ev, void *userdata) {
        AgentManager *m = userdata;

        if (ev->controller)
                (void) free_and_strdup(&m->controller, ev->controller);

        switch (ev->state) {
        case AGENT_CONTROL_CONNECTING:
                if (m->state != AGENT_STATE_REAUTHENTICATING)
                        manager_set_state(m, AGENT_STATE_CONNECTING);
                break;
        case AGENT_CONTROL_CONNECTED:
                if (m->connected_once)
                        m->counters.reconnects++;
                m->connected_once = true;
                /* The hello just went out: the controller has heard from us. */
                m->last_heartbeat = agent_control_get_last_heartbeat(c) ?: now(CLOCK_REALTIME);
                manager_set_last_error(m, NULL);
                log_info("Connected to controller %s as %s.", ev->controller, m->info.spiffe_id);
                manager_set_state(m, AGENT_STATE_ONLINE);
                manager_send_ready(m);
                break;
        case AGENT_CONTROL_BACKING_OFF:
                manager_set_last_error(m, ev->reason);
                log_warning("Controller %s: %s; retrying in %.3fs (attempt %u)", strna(ev->controller),
                            strna(ev->reason), (double) ev->delay / USEC_PER_SEC, ev->attempt);
                if (m->state != AGENT_STATE_REAUTHENTICATING)
                        manager_set_state(m, AGENT_STATE_OFFLINE);
                break;
        case AGENT_CONTROL_REVOKED:
                manager_set_last_error(m, ev->reason);
                log_error("Revoked by the controller: %s. Not connecting again; the identity stays in '%s' "
                          "for inspection.", strna(ev->reason), m->config.state_directory);
                m->renew_timer = sd_event_source_disable_unref(m->renew_timer);
                m->request = agent_request_free(m->request);
                request_finish(m, -EKEYREVOKED, "agent revoked");
                role_stop(m);
                manager_set_state(m, AGENT_STATE_REVOKED);
                /* Final: the service is up and says why in STATUS=; never ready, a Type=notify unit would
                 * time out and restart it over and over. */
                manager_send_ready(m);
                break;
        default:
                break;
        }
}

/* What the controller configured is part of the identity (it survives a restart). */
static void on_control_config(AgentControl *c, const AgentControlConfig *config, void *userdata) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        AgentManager *m = userdata;
        bool changed;
        int r;

        r = manager_identity_get(m, &i);
        if (r < 0)
                return;
        changed = !streq_ptr(i.remote_network, config->remote_network) || !strv_equal(i.groups, config->groups) ||
                (config->heartbeat_interval > 0 && i.heartbeat_interval != config->heartbeat_interval) ||
                (config->certificate_lifetime > 0 && i.certificate_lifetime != config->certificate_lifetime);
        if (!changed)
                return;

        r = free_and_strdup(&i.remote_network, config->remote_network);
        if (r < 0)
                return (void) log_oom();
        strv_free(i.groups);
        i.groups = NULL;
        if (config->groups) {
                i.groups = strv_copy(config->groups);
                if (!i.groups)
                        return (void) log_oom();
        }
        if (config->heartbeat_interval > 0)
                i.heartbeat_interval = config->heartbeat_interval;
        if (config->certificate_lifetime > 0)
                i.certificate_lifetime = config->certificate_lifetime;

        /* Keep the stored controllers, not our override. */
        if (m->config.controllers) {
                _cleanup_(agent_identity_done) AgentIdentity stored = {};
                uint8_t kek[KEK_SIZE];

                r = manager_kek_get(m, kek);
                if (r >= 0)
                        r = identity_store_load(m->config.state_directory, m->role, kek, &stored, NULL);
                explicit_bzero(kek, sizeof(kek));
                if (r < 0)
                        return (void) log_warning_errno(r, "Failed to reload the identity, not saving the "
                                                        "controller's configuration: %m");
                strv_free(i.controllers);
                i.controllers = TAKE_PTR(stored.controllers);
        }

        if (manager_store_identity(m, &i) >= 0) {
                log_info("Configuration from the controller saved (remote network '%s', %zu group%s).",
                         strempty(config->remote_network), strv_length(config->groups),
                         strv_length(config->groups) == 1 ? "" : "s");
                agent_bus_send_changed(m);
        }
}

static void on_control_trust_bundle(AgentControl *c, const DerBlob *roots, size_t n_roots, void *userdata) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        AgentManager *m = userdata;
        int r;

        r = manager_identity_get(m, &i);
        if (r < 0)
                return;
        if (n_roots == 0 || n_roots > IDENTITY_BUNDLE_MAX)
                return;
        if (der_blobs_equal(roots, n_roots, i.bundle, i.n_bundle))
                return;
        for (size_t k = 0; k < i.n_bundle; k++)
                erase_and_free(i.bundle[k].data, i.bundle[k].size);
        i.n_bundle = 0;
        for (size_t k = 0; k < n_roots; k++) {
                i.bundle[k].data = malloc(roots[k].size);
                if (!i.bundle[k].data)
                        return (void) log_oom();
                memcpy(i.bundle[k].data, roots[k].data, roots[k].size);
                i.bundle[k].size = roots[k].size;
                i.n_bundle++;
        }
        if (manager_store_identity(m, &i) >= 0)
                log_info("Trust bundle updated by the controller: %zu root%s.", n_roots, n_roots == 1 ? "" : "s");
}

static void on_control_renew_now(AgentControl *c, void *userdata) {
        AgentManager *m = userdata;

        log_info("The controller asked for a renewal now.");
        if (m->request)
                return;
        (void) manager_start_request(m, /* reauth= */ false, /* new_key= */ false);
}

static void on_control_get_counters(AgentControl *c, AgentControlCounters *ret, void *userdata) {
        AgentManager *m = userdata;

        if (m->role_started && m->role_ops && m->role_ops->get_counters)
                m->role_ops->get_counters(m, &m->counters.data);
        *ret = m->counters.data;
        m->last_heartbeat = now(CLOCK_REALTIME);
        agent_bus_send_changed(m);
}

static void on_control_revocation(AgentControl *c, const char *spiffe_id, const char *reason, bool self,
                                  void *userdata) {
        AgentManager *m = userdata;

        /* Our own revocation is reported through on_state. */
        if (self)
                return;
        log_info("The controller revoked '%s' (%s): closing its streams.", spiffe_id, strna(reason));
        if (m->role_started && m->role_ops && m->role_ops->peer_revoked)
                m->role_ops->peer_revoked(m, spiffe_id);
}

static int policy_applied(AgentManager *m, int r, const char *what, uint64_t revision, const char *reason) {
        if (r == -ESTALE) {
                log_warning("Policy %s %" PRIu64 " does not follow revision %" PRIu64 ": reconnecting for a "
                            "fresh snapshot.", what, revision, agent_policy_revision(m->policy));
                return r;
        }
        if (r < 0) {
                log_error_errno(r, "Refusing policy %s %" PRIu64 " from the controller: %s", what, revision,
                                reason ?: strerror(-r));
                return r;
        }
        log_info("Policy %s %" PRIu64 " applied: %zu resource%s.", what, revision,
                 agent_policy_n_resources(m->policy), agent_policy_n_resources(m->policy) == 1 ? "" : "s");
        if (m->role_started && m->role_ops && m->role_ops->policy_changed)
                m->role_ops->policy_changed(m);
        agent_bus_send_changed(m);
        return 0;
}

static int on_control_policy_snapshot(AgentControl *c, const Ztna__V1__PolicySnapshot *s, void *userdata) {
        AgentManager *m = userdata;
        const char *reason = NULL;
        int r;

        r = agent_policy_apply_snapshot(m->policy, s, &reason);
        return policy_applied(m, r, "snapshot", s->revision, reason);
}

static int on_control_policy_delta(AgentControl *c, const Ztna__V1__PolicyDelta *d, void *userdata) {
        AgentManager *m = userdata;
        const char *reason = NULL;
        int r;

        r = agent_policy_apply_delta(m->policy, d, &reason);
        return policy_applied(m, r, "delta", d->revision, reason);
}

static const AgentControlCallbacks control_callbacks = {
        .on_state = on_control_state,
        .on_config = on_control_config,
        .on_trust_bundle = on_control_trust_bundle,
        .on_revocation = on_control_revocation,
        .on_renew_now = on_control_renew_now,
        .on_policy_snapshot = on_control_policy_snapshot,
        .on_policy_delta = on_control_policy_delta,
        .get_counters = on_control_get_counters,
};

static int manager_start_control(AgentManager *m) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        int r;

        assert(!m->control);

        r = manager_identity_get(m, &i);
        if (r < 0)
                return log_error_errno(r, "Failed to read the identity from the keyring: %m");

        /* PrivateIP= unset: the address of our route to the first controller. */
        if (!m->config.private_ip && !m->private_ip && i.controllers) {
                r = agent_detect_private_ip(i.controllers[0], &m->private_ip);
                if (r < 0)
                        log_debug_errno(r, "Cannot tell our address towards '%s', sending none: %m",
                                        i.controllers[0]);
        }

        /* DataPlaneAddress= unset: tunnelers dial the listen address, or our address with its port when it
         * listens on all of them. */
        _cleanup_free_ char *data_plane_address = NULL;
        if (m->role == SPIFFE_ROLE_CONNECTOR && !m->config.data_plane_address && m->config.data_plane_listen) {
                HostPort hp;

                if (parse_host_port(m->config.data_plane_listen, 0, &hp) >= 0) {
                        char buf[HOST_PORT_STRING_MAX];
                        const char *ip = m->config.private_ip ?: m->private_ip;

                        if (host_is_unspecified(&hp) && ip && strlen(ip) < sizeof(hp.host)) {
                                strcpy(hp.host, ip);
                                hp.family = strchr(ip, ':') ? AF_INET6 : AF_INET;
                        }
                        if (!host_is_unspecified(&hp) && host_port_to_string(&hp, buf, sizeof(buf)))
                                data_plane_address = strdup(buf);
                }
                if (data_plane_address)
                        log_info("Announcing %s to tunnelers (DataPlaneAddress= is unset).", data_plane_address);
                else
                        log_warning("DataPlaneAddress= is unset and cannot be derived from DataPlaneListen=%s: "
                                    "tunnelers will not find this connector.", m->config.data_plane_listen);
        }

        AgentControlSettings settings = {
                .backoff_base = m->config.backoff_base,
                .backoff_cap = m->config.backoff_cap,
                .healthy_after = m->config.healthy_after,
                .version = PROJECT_VERSION,
                .private_ip = m->config.private_ip ?: m->private_ip,
                .data_plane_address = m->config.data_plane_address ?: data_plane_address,
                .labels = m->config.labels,
        };
        r = agent_control_new(m->event, &i, &settings, &control_callbacks, m, &m->control);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the control client: %m");
        r = agent_control_start(m->control);
        if (r < 0)
                return log_error_errno(r, "Failed to start the control client: %m");
        return 0;
}

/* Enrolled, or just enrolled: renew on schedule (or re-authenticate now if the certificate expired while
 * we were down), and dial. */
static int manager_go(AgentManager *m) {
        char ts[64];
        int r;

        format_timestamp(ts, sizeof(ts), m->info.not_after);
        if (now(CLOCK_REALTIME) >= m->info.not_after) {
                log_notice("The certificate expired at %s: re-authenticating with the recorded key.", ts);
                r = role_start(m);
                if (r < 0)
                        return r;
                manager_start_reauthentication(m);
                return 0;
        }
        r = role_start(m);
        if (r < 0)
                return r;
        manager_schedule_renewal(m, renewal_time(m));
        manager_set_state(m, AGENT_STATE_CONNECTING);
        return manager_start_control(m);
}

/* --- what the bus calls --- */

static void on_enroll_done(AgentRequest *req, int error, const char *reason, AgentIdentity *identity,
                           void *userdata) {
        _cleanup_(agent_request_freep) _unused_ AgentRequest *owned = req;
        AgentManager *m = userdata;
        int r;

        m->request = NULL;
        if (error < 0) {
                log_error("Enrollment failed: %s", reason);
                manager_set_last_error(m, reason);
                manager_set_state(m, AGENT_STATE_UNENROLLED);
                request_finish(m, error, reason);
                return;
        }

        r = manager_store_identity(m, identity);
        if (r < 0) {
                manager_set_last_error(m, "failed to save the identity");
                manager_set_state(m, AGENT_STATE_UNENROLLED);
                request_finish(m, r, "failed to save the identity");
                return;
        }

        log_info("Enrolled as %s.", m->info.spiffe_id);
        request_finish(m, 0, NULL);
        r = manager_go(m);
        if (r < 0)
                manager_set_last_error(m, "failed to start the control client");
        agent_bus_send_changed(m);
}

int agent_manager_enroll(AgentManager *m, const char *token, AgentManagerDone done, void *userdata) {
        _cleanup_free_ char *id = NULL, *root_pem = NULL;
        int r;

        assert(m);
        assert(token);

        if (m->request)
                return -EBUSY;
        if (m->state != AGENT_STATE_UNENROLLED)
                return -EALREADY;

        r = agent_default_id(&m->config, &id);
        if (r < 0)
                return r;
        bool id_is_default = r > 0;
        r = agent_read_controller_ca(&m->config, &root_pem);
        if (r < 0)
                return r;

        AgentEnrollParams params = {
                .token = token,
                .role = m->role,
                .id = id,
                .id_is_default = id_is_default,
                .version = PROJECT_VERSION,
                .private_ip = m->config.private_ip,
                .labels = m->config.labels,
                .key_type = m->config.key_type,
                .expected_trust_domain = m->config.trust_domain,
                .root_pem = root_pem,
        };
        r = agent_enroll(m->event, &params, on_enroll_done, m, &m->request);
        if (r < 0)
                return r;

        m->request_done = done;
        m->request_userdata = userdata;
        log_info("Enrolling as '%s'%s…", id, id_is_default ? " (the host name, unless the token names an id)" : "");
        manager_set_state(m, AGENT_STATE_ENROLLING);
        return 0;
}

int agent_manager_rotate(AgentManager *m, bool new_key, AgentManagerDone done, void *userdata) {
        bool reauth;
        int r;

        assert(m);

        if (m->state == AGENT_STATE_REVOKED)
                return -EKEYREVOKED;
        if (!m->identity)
                return -ENOTCONN;
        if (m->request)
                return -EBUSY;

        reauth = now(CLOCK_REALTIME) >= m->info.not_after;
        if (reauth)
                manager_set_state(m, AGENT_STATE_REAUTHENTICATING);
        r = manager_start_request(m, reauth, new_key);
        if (r < 0)
                return r;
        m->request_done = done;
        m->request_userdata = userdata;
        log_info("%s requested over D-Bus.", new_key ? "Key rotation" : "Certificate renewal");
        return 0;
}

int agent_manager_reconnect(AgentManager *m) {
        assert(m);

        if (m->state == AGENT_STATE_REVOKED)
                return -EKEYREVOKED;
        if (!m->identity)
                return -ENOTCONN;
        if (!m->control || m->state == AGENT_STATE_REAUTHENTICATING)
                return 0; /* dialing resumes on its own once the certificate is renewed */
        log_info("Reconnecting as requested over D-Bus.");
        return agent_control_reconnect(m->control);
}

/* --- life cycle --- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        AgentManager *m = userdata;

        if (m->state == AGENT_STATE_STOPPING) {
                log_notice("Second signal, exiting at once.");
                return sd_event_exit(m->event, 0);
        }

        (void) sd_notify(false, "STOPPING=1");
        log_info("Stopping.");
        m->state = AGENT_STATE_STOPPING;
        agent_bus_send_changed(m);

        /* The control client closes its stream with GOAWAY before it returns. Requests in flight are
         * dropped: a renewal the controller signed but we never saved is harmless, the old key stays
         * recorded until a renewal with a new key completes. */
        m->renew_timer = sd_event_source_disable_unref(m->renew_timer);
        role_stop(m);
        m->control = agent_control_free(m->control);
        m->request = agent_request_free(m->request);
        request_finish(m, -ECANCELED, "the agent is stopping");
        return sd_event_exit(m->event, 0);
}

AgentManager *agent_manager_free(AgentManager *m) {
        if (!m)
                return NULL;

        m->renew_timer = sd_event_source_disable_unref(m->renew_timer);
        m->control = agent_control_free(m->control);
        m->request = agent_request_free(m->request);
        request_finish(m, -ECANCELED, "the agent is stopping");
        m->health = agent_health_free(m->health);
        role_stop(m);
        if (m->role_ops && m->role_ops->free)
                m->role_ops->free(m);
        m->policy = agent_policy_free(m->policy);
        agent_bus_disconnect(m);

        m->identity = keyring_secret_free(m->identity);
        m->kek = keyring_secret_free(m->kek);
        info_done(&m->info);
        agent_config_done(&m->config);
        free(m->kek_file);
        free(m->controller);
        free(m->private_ip);
        free(m->last_error);
        sd_event_unref(m->event);
        return mfree(m);
}

int agent_manager_new(const AgentManagerOptions *options, AgentManager **ret) {
        _cleanup_(agent_manager_freep) AgentManager *m = NULL;
        _cleanup_(agent_identity_done) AgentIdentity identity = {};
        const char *reason = NULL, *name;
        bool from_credential = false;
        uint8_t kek[KEK_SIZE];
        int r;

        assert(options);
        assert(ret);

        name = agent_config_name(options->role);
        assert(name);

        m = calloc(1, sizeof(AgentManager));
        if (!m)
                return log_oom();
        m->role = options->role;
        m->role_ops = options->role_ops;
        m->user_mode = options->user_mode;
        m->bus_enabled = !getenv("ZTNA_NO_BUS");
        m->state = AGENT_STATE_UNENROLLED;

        r = agent_policy_new(&m->policy);
        if (r < 0)
                return log_oom();

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        (void) sd_event_set_watchdog(m->event, true);

        r = event_add_stop_signals(m->event, on_signal, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGTERM and SIGINT: %m");

        r = agent_config_load(options->role, options->confdir, &m->config);
        if (r < 0)
                return log_error_errno(r, "Failed to load the configuration.");
        r = agent_apply_options(&m->config, options);
        if (r < 0)
                return r;
        backoff_init(&m->reauth_backoff, m->config.backoff_base, m->config.backoff_cap, m->config.healthy_after);

        r = agent_kek_load(options->kek_file, /* create= */ false, kek, &from_credential);
        if (r < 0)
                return r;
        r = keyring_secret_new(KEYRING_KEK_DESCRIPTION, kek, KEK_SIZE, 0, &m->kek);
        if (r < 0) {
                explicit_bzero(kek, sizeof(kek));
                return log_error_errno(r, "Failed to keep the key-encryption key in the keyring or in locked "
                                       "memory: %m");
        }
        if (r == KEYRING_MODE_MEMORY && keyring_secret_lock_error(m->kek) < 0)
                log_warning_errno(keyring_secret_kernel_error(m->kek),
                                  "Kernel keyring unavailable (%m), and locking memory refused (%s): secrets "
                                  "are kept in non-dumpable memory that may be swapped out. Allow keyctl, or "
                                  "mlock() (CAP_IPC_LOCK in a container, LimitMEMLOCK=), to keep them out of "
                                  "swap.", strerror(-keyring_secret_lock_error(m->kek)));
        else if (r == KEYRING_MODE_MEMORY)
                log_warning_errno(keyring_secret_kernel_error(m->kek),
                                  "Kernel keyring unavailable (%m): secrets are kept in locked, non-dumpable "
                                  "memory instead.");

        r = identity_store_load(m->config.state_directory, m->role, kek, &identity, &reason);
        explicit_bzero(kek, sizeof(kek));
        if (r == -ENOENT)
                log_info("Not enrolled yet (no identity in '%s'): enrolling with the credential "
                         "ENROLLMENT_TOKEN if there is one, else waiting for 'ztnactl enroll' (D-Bus Enroll) or "
                         "'ztna-%s enroll'.", m->config.state_directory, name);
        else if (r < 0)
                return log_error_errno(r, "Failed to load the identity '%s/" IDENTITY_FILE_NAME "': %s. The file "
                                       "is left as it is; re-enroll with 'ztna-%s enroll --force' to replace it.",
                                       m->config.state_directory, reason, name);
        else {
                if (identity.role != m->role)
                        return log_error_errno(EINVAL, "The identity in '%s' is not a %s's.",
                                               m->config.state_directory, name);
                if (m->config.trust_domain && !streq(m->config.trust_domain, identity.trust_domain))
                        return log_error_errno(EXDEV, "The identity in '%s' belongs to trust domain '%s', "
                                               "not TrustDomain='%s'.", m->config.state_directory,
                                               identity.trust_domain, m->config.trust_domain);
                r = manager_set_identity(m, &identity);
                if (r < 0)
                        return r;
                char ts[64];
                log_info("Loaded identity %s (certificate valid until %s).", m->info.spiffe_id,
                         format_timestamp(ts, sizeof(ts), m->info.not_after));
        }

        *ret = TAKE_PTR(m);
        return 0;
}

/* GET /metrics on the health listener: the same numbers the bus shows, in Prometheus text. */
static char *health_metrics(void *userdata) {
        return agent_metrics_format(userdata);
}

static void auto_enroll_done(AgentManager *m, int error, const char *reason, void *userdata) {
        if (error == -ECANCELED || error >= 0)
                return;
        /* The unit must not fail and restart in a loop over a spent token: stay up, unenrolled, and say
         * how to go on. */
        log_error("Enrollment with the token from the %s failed: %s. Remove it and enroll with 'ztnactl enroll "
                  "%s --token-file=FILE' (D-Bus Enroll) with a new token.",
                  (const char *) userdata, strna(reason), agent_config_name(m->role));
        manager_send_ready(m);
}

/* An unenrolled agent started with the credential ENROLLMENT_TOKEN (systemd: LoadCredentialEncrypted=,
 * so the token is sealed at rest) or $ENROLLMENT_TOKEN (compatibility) enrolls with it at once. Returns
 * > 0 when an enrollment was started, 0 when there is no token, < 0 when there is one but it cannot be
 * used (logged). */
static int manager_enroll_from_credential(AgentManager *m) {
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        AgentTokenSource source;
        int r;

        r = agent_token_read(m->role, NULL, &token, &source);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Ignoring the enrollment token: cannot read it from the %s: %m",
                                       agent_token_source_to_string(source));
        if (source == AGENT_TOKEN_SOURCE_ENVIRONMENT)
                log_warning("The token came from $%s, which other processes of this user could read; it has "
                            "been erased. Prefer the credential %s (LoadCredentialEncrypted=).",
                            AGENT_TOKEN_ENVIRONMENT, AGENT_TOKEN_CREDENTIAL);

        r = agent_manager_enroll(m, token, auto_enroll_done, (void *) agent_token_source_to_string(source));
        if (r < 0)
                return log_error_errno(r, "Cannot enroll with the token from the %s: %m",
                                       agent_token_source_to_string(source));
        log_info("Not enrolled yet: enrolling with the token from the %s.", agent_token_source_to_string(source));
        return 1;
}

int agent_manager_run(AgentManager *m) {
        int r;

        assert(m);

        r = agent_health_new(m->event, m->config.health_listen, health_ready, health_metrics, m,
                             &m->health);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on '%s' for health checks: %m",
                                       m->config.health_listen);

        if (m->bus_enabled) {
                r = agent_bus_connect(m);
                if (r < 0)
                        return r;
        }

        if (m->identity) {
                r = manager_go(m);
                if (r < 0)
                        return r;
        } else {
                manager_set_state(m, AGENT_STATE_UNENROLLED);
                /* READY=1 when unenrolled, so `systemctl start` returns and Enroll can be called; with a
                 * token at hand, once the enrollment ended (online, or failed). */
                if (manager_enroll_from_credential(m) <= 0)
                        manager_send_ready(m);
        }

        log_info("ztna-%s %s running.", agent_config_name(m->role), PROJECT_VERSION);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}
