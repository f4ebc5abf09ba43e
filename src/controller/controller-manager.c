/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "controller-audit.h"
#include "controller-bus.h"
#include "controller-control.h"
#include "controller-enroll.h"
#include "controller-admin.h"
#include "controller-manager.h"
#include "crypto-x509.h"
#include "event-util.h"
#include "log.h"
#include "macro.h"
#include "string-util.h"
#include "strv.h"

/* One accepted gRPC connection: TLS handshake first, then an HTTP/2 session. */
struct Connection {
        Manager *manager;
        Listener *listener;
        TlsConnection *tls;     /* during the handshake */
        H2Session *session;     /* after it */
        char *anonymous_source; /* set while counted in anonymous_sources */
        sd_event_source *lifetime_timer;
        Connection *prev, *next;
};

static void manager_check_drained(Manager *m);

static Connection *connection_free(Connection *c) {
        if (!c)
                return NULL;

        Manager *m = c->manager;

        if (c->prev)
                c->prev->next = c->next;
        else
                m->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        m->n_connections--;
        if (c->listener)
                listener_connection_closed(c->listener);
        source_counter_release(&m->anonymous_sources, c->anonymous_source);
        sd_event_source_disable_unref(c->lifetime_timer);
        tls_connection_free(c->tls);
        h2_session_unref(c->session);
        free(c);

        manager_check_drained(m);
        return NULL;
}

static int on_request(H2Session *s, H2Stream *stream, const H2Headers *h, void *userdata) {
        Connection *c = userdata;

        /* Anything that is not gRPC is refused (RST_STREAM REFUSED_STREAM). */
        return grpc_server_handle(c->manager->grpc, stream, h);
}

static void on_session_close(H2Session *s, int error, void *userdata) {
        Connection *c = userdata;

        if (error < 0)
                log_debug_errno(error, "Session with %s closed: %m",
                                tls_connection_get_peer_address(h2_session_get_tls(s)));
        connection_free(c);
}

static const H2SessionCallbacks session_callbacks = {
        .on_request = on_request,
        .on_close = on_session_close,
};

static int on_anonymous_lifetime(sd_event_source *s, uint64_t usec, void *userdata) {
        Connection *c = userdata;

        log_debug("Closing the certificate-less connection from %s: it reached its lifetime.",
                  c->anonymous_source);
        if (c->session)
                (void) h2_session_shutdown(c->session);
        return 0;
}

/* A client without a certificate can only enroll or re-authenticate: a few connections per address, each for
 * a bounded time, so that nobody can hold all the connection slots that agents need. */
static int connection_admit_anonymous(Connection *c, TlsConnection *tls) {
        Manager *m = c->manager;
        const char *address = tls_connection_get_peer_address(tls);
        int r;

        r = source_counter_hold(&m->anonymous_sources, address, MANAGER_ANONYMOUS_PER_SOURCE_MAX,
                                &c->anonymous_source);
        if (r == -EBUSY) {
                log_info("Refusing a connection without a client certificate from %s: its address already has %u.",
                         address, MANAGER_ANONYMOUS_PER_SOURCE_MAX);
                return r;
        }
        if (r < 0)
                return log_oom();

        r = sd_event_add_time_relative(m->event, &c->lifetime_timer, CLOCK_MONOTONIC, MANAGER_ANONYMOUS_LIFETIME,
                                       USEC_PER_SEC, on_anonymous_lifetime, c);
        if (r < 0)
                return log_warning_errno(r, "Failed to arm a connection lifetime timer: %m");
        (void) sd_event_source_set_description(c->lifetime_timer, "anonymous-connection-lifetime");
        return 0;
}

static void on_handshake(TlsConnection *tls, int error, void *userdata) {
        Connection *c = userdata;
        int r;

        if (error < 0) {
                /* Scanners and misconfigured agents: not worth more than info. */
                log_info_errno(error, "TLS handshake with %s failed: %s", tls_connection_get_peer_address(tls),
                               strna(tls_connection_get_error_reason(tls)));
                connection_free(c);
                return;
        }

        if (!tls_connection_get_peer_id(tls)) {
                r = connection_admit_anonymous(c, tls);
                if (r < 0) {
                        connection_free(c);
                        return;
                }
        }

        r = h2_session_new(TAKE_PTR(c->tls), NULL, &session_callbacks, c, &c->session);
        if (r < 0) {
                log_warning_errno(r, "Failed to start an HTTP/2 session with a client, closing: %m");
                connection_free(c);
                return;
        }
        if (c->manager->stopping)
                (void) h2_session_shutdown(c->session);
}

static const TlsConnectionCallbacks tls_callbacks = { .on_handshake = on_handshake };

static int on_accept(Listener *l, int fd, const struct sockaddr_storage *peer, void *userdata) {
        Manager *m = userdata;
        Connection *c;
        int r;

        if (m->stopping || m->n_connections >= MANAGER_CONNECTIONS_MAX) {
                safe_close(fd);
                return -EBUSY;
        }

        c = calloc(1, sizeof(Connection));
        if (!c) {
                safe_close(fd);
                return log_oom();
        }
        *c = (Connection) { .manager = m, .listener = l, .next = m->connections };
        if (m->connections)
                m->connections->prev = c;
        m->connections = c;
        m->n_connections++;

        r = tls_connection_new(m->tls, m->event, fd, &tls_callbacks, c, &c->tls);
        if (r < 0) {
                log_warning_errno(r, "Failed to set up TLS for a connection, closing it: %m");
                c->listener = NULL; /* dropped: it does not count towards the cap (listener contract) */
                connection_free(c);
                return r;
        }
        return 0;
}

static void on_listener_error(Listener *l, int error, void *userdata) {
        if (listener_get_state(l) == LISTENER_THROTTLED)
                log_warning_errno(error, "Cannot accept connections on %s for now, retrying: %m",
                                  listener_get_address(l));
        else
                log_error_errno(error, "Listener on %s failed, no longer accepting there: %m",
                                listener_get_address(l));
}

static const ListenerCallbacks listener_callbacks = {
        .on_accept = on_accept,
        .on_error = on_listener_error,
};

/* The TLS layer has authenticated a client certificate against our bundle; this decides who may talk to us
 * at all. Enrollment clients present no certificate and never get here. */
static int authorize_peer(const SpiffeId *peer, void *userdata, const char **ret_reason) {
        if (!manager_role_is_agent(peer->role)) {
                *ret_reason = "only connectors and tunnelers may connect to the controller";
                return -EPERM;
        }
        return 0;
}

int manager_peer_has_recorded_key(GrpcCall *call, const StoreAgent *agent) {
        _cleanup_free_ uint8_t *key = NULL;
        size_t key_size = 0;
        int r;

        assert(call);
        assert(agent);

        H2Session *session = grpc_call_get_session(call);
        TlsConnection *tls = session ? h2_session_get_tls(session) : NULL;
        X509 *cert = tls ? tls_connection_get_peer_certificate(tls) : NULL;
        if (!cert)
                return -ENOENT;

        r = crypto_x509_get_public_key_der(cert, &key, &key_size);
        if (r < 0)
                return r;
        return key_size == agent->public_key_size && memcmp(key, agent->public_key, key_size) == 0;
}

bool manager_role_is_agent(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR || role == SPIFFE_ROLE_TUNNELER;
}

const char *manager_call_peer_address(GrpcCall *call) {
        H2Session *session = grpc_call_get_session(call);
        TlsConnection *tls = session ? h2_session_get_tls(session) : NULL;

        return tls ? tls_connection_get_peer_address(tls) : NULL;
}

int source_counter_hold(Hashmap **counters, const char *peer_address, unsigned max, char **ret_source) {
        _cleanup_free_ char *source = NULL;
        uintptr_t n;
        int r;

        assert(counters);
        assert(peer_address);
        assert(ret_source);

        /* "1.2.3.4:5678" / "[::1]:5678" → the host part. */
        const char *colon = strrchr(peer_address, ':');
        source = colon ? strndup(peer_address, colon - peer_address) : strdup(peer_address);
        if (!source)
                return -ENOMEM;
        if (!*counters) {
                r = hashmap_new(counters);
                if (r < 0)
                        return r;
        }
        n = (uintptr_t) hashmap_get(*counters, source);
        if (n >= max)
                return -EBUSY;
        r = hashmap_replace(*counters, source, (void *) (n + 1), NULL);
        if (r < 0)
                return r;
        *ret_source = TAKE_PTR(source);
        return 0;
}

void source_counter_release(Hashmap **counters, char *source) {
        assert(counters);

        if (!source)
                return;
        uintptr_t n = (uintptr_t) hashmap_get(*counters, source);
        if (n <= 1)
                (void) hashmap_remove(*counters, source);
        else
                (void) hashmap_replace(*counters, source, (void *) (n - 1), NULL);
        if (hashmap_isempty(*counters))
                *counters = hashmap_free(*counters);
        free(source);
}

usec_t manager_leaf_lifetime(const Manager *m, SpiffeRole role) {
        switch (role) {
        case SPIFFE_ROLE_CONNECTOR:
                return m->config.connector_lifetime;
        case SPIFFE_ROLE_TUNNELER:
                return m->config.tunneler_lifetime;
        case SPIFFE_ROLE_CONTROLLER:
                return m->config.server_lifetime;
        default:
                return 0;
        }
}

void manager_update_status(Manager *m) {
        assert(m);

        (void) sd_notifyf(false, "STATUS=%s: %zu connection%s, %zu control stream%s%s",
                          m->stopping ? "Stopping" : "Serving", m->n_connections,
                          m->n_connections == 1 ? "" : "s", control_registry_n_sessions(m->control),
                          control_registry_n_sessions(m->control) == 1 ? "" : "s",
                          controller_ca_rotation_in_progress(m->ca) ? ", root CA rotation in progress" : "");
}

int manager_ca_changed(Manager *m, unsigned changes) {
        int r;

        assert(m);

        if (changes & (CONTROLLER_CA_CHANGED_SERVER | CONTROLLER_CA_CHANGED_BUNDLE)) {
                r = controller_ca_apply_tls(m->ca, m->tls);
                if (r < 0)
                        return log_error_errno(r, "Failed to apply the new server certificate or trust bundle: %m");
        }
        if (changes & CONTROLLER_CA_CHANGED_SERVER)
                (void) controller_admin_certificate_changed(m);
        if (changes & CONTROLLER_CA_CHANGED_BUNDLE) {
                r = control_registry_push_trust_bundle(m->control);
                if (r < 0)
                        log_warning_errno(r, "Failed to push the new trust bundle to every agent, ignoring: %m");
        }
        if (changes & CONTROLLER_CA_CHANGED_SERVER) {
                char ts[64];

                log_info("Server certificate renewed, valid until %s.",
                         format_timestamp(ts, sizeof(ts), controller_ca_get_server_not_after(m->ca)));
        }
        return 0;
}

static int manager_arm_ca_timer(Manager *m, usec_t next);

static int on_ca_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        unsigned changes = 0;
        usec_t next = USEC_INFINITY;
        int r;

        r = controller_ca_maintain(m->ca, now(CLOCK_REALTIME), &changes, &next);
        if (r < 0)
                /* The CA stays usable; try again soon rather than let certificates run out. */
                log_error_errno(r, "CA maintenance failed, retrying in a minute: %m");
        else {
                bool rotating = controller_ca_rotation_in_progress(m->ca);

                /* A new issuing CA: rotation by age, or step 2 of a root rotation. Step 3 (the old root
                 * leaves the bundle) shows as a bundle change once no rotation is in progress; step 1 is
                 * audited by whoever started it. */
                if (changes & CONTROLLER_CA_CHANGED_ISSUER)
                        (void) audit_log(m->store, AUDIT_CA_ISSUING_ROTATED,
                                         &(const AuditRecord) {
                                                 .actor = "controller",
                                                 .role = _SPIFFE_ROLE_INVALID,
                                                 .reason = rotating ? "root rotation: issuing under the new root"
                                                                    : "issuing CA near the end of its lifetime",
                                         });
                if ((changes & CONTROLLER_CA_CHANGED_BUNDLE) && !rotating)
                        (void) audit_log(m->store, AUDIT_CA_ROOT_ROTATION,
                                         &(const AuditRecord) { .actor = "controller",
                                                                .role = _SPIFFE_ROLE_INVALID,
                                                                .reason = "old root retired" });
                (void) manager_ca_changed(m, changes);
        }

        return manager_arm_ca_timer(m, r < 0 ? now(CLOCK_REALTIME) + USEC_PER_MINUTE : next);
}

static int manager_arm_ca_timer(Manager *m, usec_t next) {
        usec_t limit = now(CLOCK_REALTIME) + MANAGER_CA_CHECK_INTERVAL;
        int r;

        next = MIN(next, limit);
        if (m->ca_timer)
                return sd_event_source_set_time(m->ca_timer, next) < 0 ||
                                       sd_event_source_set_enabled(m->ca_timer, SD_EVENT_ONESHOT) < 0
                               ? -EIO
                               : 0;

        r = sd_event_add_time(m->event, &m->ca_timer, CLOCK_REALTIME, next, USEC_PER_SEC, on_ca_timer, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(m->ca_timer, "ca-maintenance");
        return 0;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        manager_update_status(m);
        (void) sd_event_source_set_time_relative(s, 10 * USEC_PER_SEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static int on_drain_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_warning("%zu connection%s still open after %s, closing them.", m->n_connections,
                    m->n_connections == 1 ? "" : "s", "10s");
        return sd_event_exit(m->event, 0);
}

static void manager_check_drained(Manager *m) {
        if (m->stopping && m->n_connections == 0)
                (void) sd_event_exit(m->event, 0);
}

void manager_stop(Manager *m) {
        int r;

        assert(m);

        if (m->stopping)
                return;
        m->stopping = true;

        (void) sd_notify(false, "STOPPING=1");
        log_info("Stopping: no new connections, draining %zu.", m->n_connections);

        /* The connections no longer report to the listeners they came from: those are gone now. */
        for (Connection *c = m->connections; c; c = c->next)
                c->listener = NULL;
        for (size_t i = 0; i < m->n_listeners; i++)
                m->listeners[i] = listener_free(m->listeners[i]);
        m->n_listeners = 0;

        control_registry_close_all(m->control);

        /* Sessions may go away while we walk the list (shutdown of an idle session closes it at once). */
        for (Connection *c = m->connections, *next; c; c = next) {
                next = c->next;
                if (c->session)
                        (void) h2_session_shutdown(c->session);
        }

        r = sd_event_add_time_relative(m->event, &m->drain_timer, CLOCK_MONOTONIC, MANAGER_DRAIN_TIMEOUT, 0,
                                       on_drain_timeout, m);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the drain timer, exiting now: %m");
                (void) sd_event_exit(m->event, 0);
                return;
        }
        (void) sd_event_source_set_description(m->drain_timer, "drain-timeout");

        manager_update_status(m);
        manager_check_drained(m);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        if (m->stopping) {
                log_notice("Second signal, exiting at once.");
                return sd_event_exit(m->event, 0);
        }
        manager_stop(m);
        return 0;
}

static GrpcMethod grpc_methods[8];

int manager_new(const ManagerOptions *options, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        const char *reason = NULL;
        uint8_t kek[KEK_SIZE];
        bool from_credential = false;
        size_t n_methods = 0;
        int r;

        assert(options);
        assert(ret);

        m = calloc(1, sizeof(Manager));
        if (!m)
                return log_oom();
        for (size_t i = 0; i < ELEMENTSOF(m->admin_fds); i++)
                m->admin_fds[i] = -EBADF;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        (void) sd_event_set_watchdog(m->event, true);

        r = event_add_stop_signals(m->event, on_signal, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGTERM and SIGINT: %m");

        r = controller_config_load(options->confdir, &m->config);
        if (r < 0)
                return log_error_errno(r, "Failed to load the configuration.");

        r = kek_load(NULL, options->kek_file ?: m->config.key_file, kek, &from_credential, &reason);
        if (r == -ENOENT)
                return log_error_errno(r, "No key-encryption key (credential '%s' or file '%s'): run "
                                       "'ztna-controller init' first.",
                                       KEK_CREDENTIAL_NAME, options->kek_file ?: m->config.key_file);
        if (r < 0)
                return log_error_errno(r, "Failed to load the key-encryption key (credential '%s' or file '%s'): %s",
                                       KEK_CREDENTIAL_NAME, options->kek_file ?: m->config.key_file,
                                       reason ?: strerror(-r));
        if (!from_credential)
                log_warning("Using the key-encryption key from the file '%s'. A credential sealed with "
                            "systemd-creds (LoadCredentialEncrypted=%s) protects the CA keys better.",
                            options->kek_file ?: m->config.key_file, KEK_CREDENTIAL_NAME);

        r = store_open_sqlite(m->config.database, &m->store);
        if (r < 0) {
                explicit_bzero(kek, sizeof(kek));
                return log_error_errno(r, "Failed to open the database '%s': %m", m->config.database);
        }

        r = controller_ca_load(m->store, &m->config, kek, 0, &m->ca, &reason);
        explicit_bzero(kek, sizeof(kek));
        if (r == -ENOENT)
                return log_error_errno(r, "No CA in '%s': run 'ztna-controller init' first.", m->config.database);
        if (r < 0)
                return log_error_errno(r, "Failed to load the CA from '%s': %s", m->config.database,
                                       reason ?: strerror(-r));

        r = tls_context_new(TLS_MODE_SERVER, &m->tls);
        if (r < 0)
                return log_error_errno(r, "Failed to create the TLS context: %m");
        /* Enroll and Reauthenticate come without a certificate; every other method needs one. */
        r = tls_context_set_client_certificate_required(m->tls, false);
        if (r >= 0)
                r = tls_context_set_peer_policy(m->tls, &(TlsPeerPolicy) { .role = _SPIFFE_ROLE_INVALID,
                                                                           .authorize = authorize_peer });
        if (r < 0)
                return log_error_errno(r, "Failed to configure the TLS context: %m");

        unsigned changes = 0;
        usec_t next = USEC_INFINITY;
        r = controller_ca_maintain(m->ca, 0, &changes, &next);
        if (r < 0)
                return log_error_errno(r, "Failed to bring the CA up to date: %m");
        r = controller_ca_apply_tls(m->ca, m->tls);
        if (r < 0)
                return log_error_errno(r, "Failed to set the server certificate: %m");

        assert(controller_enroll_n_methods + controller_control_n_methods <= ELEMENTSOF(grpc_methods));
        for (size_t i = 0; i < controller_enroll_n_methods; i++)
                grpc_methods[n_methods++] = controller_enroll_methods[i];
        for (size_t i = 0; i < controller_control_n_methods; i++)
                grpc_methods[n_methods++] = controller_control_methods[i];
        r = grpc_server_new(grpc_methods, n_methods, MANAGER_GRPC_MESSAGE_MAX, m, &m->grpc);
        if (r < 0)
                return log_error_errno(r, "Failed to create the gRPC server: %m");

        r = control_registry_new(m, &m->control);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the control-stream registry: %m");

        r = manager_arm_ca_timer(m, next);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the CA maintenance timer: %m");

        *ret = TAKE_PTR(m);
        return 0;
}

static int manager_add_listener(Manager *m, int fd) {
        Listener *l;
        int r;

        if (m->n_listeners >= ELEMENTSOF(m->listeners)) {
                safe_close(fd);
                return log_error_errno(E2BIG, "More than %zu gRPC listeners.",
                                       ELEMENTSOF(m->listeners));
        }
        r = listener_new(m->event, fd, &listener_callbacks, m, &l);
        if (r < 0)
                return log_error_errno(r, "Failed to serve a gRPC listening socket: %m");
        m->listeners[m->n_listeners++] = l;
        (void) listener_set_max_connections(l, MANAGER_CONNECTIONS_MAX);
        log_info("Serving gRPC on %s.", listener_get_address(l));
        return 0;
}

static int manager_open_listeners(Manager *m) {
        _cleanup_free_ int *fds = NULL;
        _cleanup_strv_free_ char **unclaimed = NULL;
        size_t n = 0;
        int r;

        r = listen_fds_take("grpc", &fds, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to take the sockets passed as 'grpc': %m");
        if (n > 0) {
                for (size_t i = 0; i < n; i++) {
                        r = manager_add_listener(m, fds[i]);
                        fds[i] = -EBADF;
                        if (r < 0) {
                                for (size_t j = i + 1; j < n; j++)
                                        safe_close(fds[j]);
                                return r;
                        }
                }
        } else
                STRV_FOREACH(a, m->config.listen_grpc.addresses) {
                        HostPort hp;
                        int fd;

                        r = parse_host_port(*a, 0, &hp);
                        if (r < 0)
                                return log_error_errno(r, "Invalid ListenGRPC= address '%s': %m", *a);
                        r = listen_bind(&hp, LISTEN_BACKLOG_DEFAULT, &fd);
                        if (r < 0)
                                return log_error_errno(r, "Failed to listen on '%s': %m", *a);
                        r = manager_add_listener(m, fd);
                        if (r < 0)
                                return r;
                }

        /* The admin listener (controller-admin.h) serves dups of these; they stay ours until the end. */
        fds = mfree(fds);
        r = listen_fds_take("admin", &fds, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to take the sockets passed as 'admin': %m");
        for (size_t i = 0; i < n; i++) {
                if (m->n_admin_fds < ELEMENTSOF(m->admin_fds))
                        m->admin_fds[m->n_admin_fds++] = fds[i];
                else
                        safe_close(fds[i]);
        }

        r = listen_fds_unclaimed(&unclaimed);
        if (r > 0) {
                STRV_FOREACH(u, unclaimed)
                        log_warning("Ignoring a socket passed as '%s': only 'grpc' and 'admin' are used.", *u);
                (void) listen_fds_close_unclaimed();
        }
        return 0;
}

int manager_start(Manager *m) {
        int r;

        assert(m);

        r = manager_open_listeners(m);
        if (r < 0)
                return r;
        r = controller_admin_start(m);
        if (r < 0)
                return r;

        if (!getenv("ZTNA_NO_BUS")) {
                r = manager_connect_bus(m);
                if (r < 0)
                        return r;
        }

        r = sd_event_add_time_relative(m->event, &m->status_timer, CLOCK_MONOTONIC, 10 * USEC_PER_SEC,
                                       USEC_PER_SEC, on_status_timer, m);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the status timer: %m");
        (void) sd_event_source_set_description(m->status_timer, "status");

        m->started_at = now(CLOCK_REALTIME);
        (void) audit_log(m->store, AUDIT_CONTROLLER_STARTED,
                         &(const AuditRecord) { .actor = "controller", .subject = m->config.id,
                                                .role = SPIFFE_ROLE_CONTROLLER });
        (void) sd_notify(false, "READY=1");
        manager_update_status(m);
        return 0;
}

static int manager_resolve_agent(Manager *m, const char *agent, char **ret) {
        StoreAgent **agents = NULL;
        size_t n = 0;
        char *found = NULL;
        int r;

        if (startswith(agent, "spiffe://")) {
                found = strdup(agent);
                if (!found)
                        return -ENOMEM;
                *ret = found;
                return 0;
        }
        if (!ztna_id_is_valid(agent))
                return -EINVAL;

        r = store_agent_list(m->store, _SPIFFE_ROLE_INVALID, &agents, &n);
        if (r < 0)
                return r;
        r = -ENOENT;
        for (size_t i = 0; i < n; i++) {
                if (!streq(agents[i]->id, agent))
                        continue;
                if (found) {
                        r = -ENOTUNIQ;
                        break;
                }
                found = agents[i]->spiffe_id;
                r = 0;
        }
        if (r == 0) {
                found = strdup(found);
                if (!found)
                        r = -ENOMEM;
        }
        store_agent_array_free(agents, n);
        if (r < 0)
                return r;
        *ret = found;
        return 0;
}

int manager_revoke_agent(Manager *m, const char *spiffe_id_or_id, const char *reason, const char *actor) {
        _cleanup_free_ char *spiffe_id = NULL;
        int r;

        assert(m);
        assert(spiffe_id_or_id);
        assert(actor);

        r = manager_resolve_agent(m, spiffe_id_or_id, &spiffe_id);
        if (r < 0)
                return r;

        r = store_agent_revoke(m->store, spiffe_id, isempty(reason) ? "revoked by an administrator" : reason,
                               now(CLOCK_REALTIME));
        if (r < 0)
                return r;

        (void) audit_log(m->store, AUDIT_AGENT_REVOKED,
                         &(const AuditRecord) { .actor = actor, .subject = spiffe_id,
                                                .role = _SPIFFE_ROLE_INVALID, .reason = reason });

        r = control_registry_revoke(m->control, spiffe_id, isempty(reason) ? "revoked by an administrator" : reason);
        if (r < 0)
                log_warning_errno(r, "Failed to close the control stream of '%s', ignoring: %m", spiffe_id);
        /* A revoked tunneler's groups grant nothing: connectors drop it from their memberships. */
        manager_policy_changed(m);
        return 0;
}

int manager_request_renewal(Manager *m, const char *spiffe_id_or_id, const char *actor) {
        _cleanup_free_ char *spiffe_id = NULL;
        int r;

        assert(m);
        assert(actor);

        if (!isempty(spiffe_id_or_id)) {
                r = manager_resolve_agent(m, spiffe_id_or_id, &spiffe_id);
                if (r < 0)
                        return r;
        }

        r = control_registry_renew_now(m->control, spiffe_id);
        if (r < 0)
                return r;
        log_info("%s asked %s to renew now: %i control stream%s told.", actor, spiffe_id ?: "every agent", r,
                 r == 1 ? "" : "s");
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;

        /* The gRPC server first: it ends its calls (the control streams' on_done runs against the registry),
         * then the registry flushes the last heartbeats, then the sessions go. */
        m->grpc = grpc_server_free(m->grpc);
        m->control = control_registry_free(m->control);
        while (m->connections)
                connection_free(m->connections);
        for (size_t i = 0; i < m->n_listeners; i++)
                listener_free(m->listeners[i]);
        controller_admin_stop(m);
        for (size_t i = 0; i < m->n_admin_fds; i++)
                safe_close(m->admin_fds[i]);

        assert(!m->anonymous_sources); /* emptied by the connections */
        m->ca_timer = sd_event_source_disable_unref(m->ca_timer);
        m->drain_timer = sd_event_source_disable_unref(m->drain_timer);
        m->status_timer = sd_event_source_disable_unref(m->status_timer);

        m->polkit_registry = polkit_registry_free(m->polkit_registry);
        if (m->bus) {
                (void) sd_bus_flush(m->bus);
                m->bus = sd_bus_close_unref(m->bus);
        }

        if (m->store && m->started_at > 0)
                (void) audit_log(m->store, AUDIT_CONTROLLER_STOPPED,
                                 &(const AuditRecord) { .actor = "controller", .subject = m->config.id,
                                                        .role = SPIFFE_ROLE_CONTROLLER });

        tls_context_unref(m->tls);
        controller_ca_free(m->ca);
        store_free(m->store);
        controller_config_done(&m->config);
        sd_event_unref(m->event);
        return mfree(m);
}

void manager_policy_changed(Manager *m) {
        assert(m);

        control_registry_policy_changed(m->control);
}
