/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <assert.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "agent-health.h"
#include "log.h"
#include "net-listen.h"
#include "parse-util.h"

/* Per-connection pool: the request line and headers of a health probe fit many times over; anything
 * larger is not a probe and libmicrohttpd refuses it. */
#define AGENT_HEALTH_MEMORY_LIMIT (8U * 1024U)

struct AgentHealth {
        struct MHD_Daemon *daemon;
        int listen_fd; /* owned by the daemon once it started: MHD_stop_daemon() closes it */
        sd_event_source *io_source;
        sd_event_source *timer_source;
        unsigned n_connections;
        AgentHealthReady ready;
        void *userdata;
};

/* Only loopback literals: 127.0.0.0/8 and ::1; port 0 for an ephemeral port. */
static int health_parse_listen(const char *s, HostPort *ret) {
        return parse_listen_address(s, /* loopback_only= */ true, ret) < 0 ? -EINVAL : 0;
}

static enum MHD_Result health_queue(struct MHD_Connection *c, unsigned status, const char *body,
                                    const char *allow) {
        struct MHD_Response *response;
        enum MHD_Result ret;

        response = MHD_create_response_from_buffer(strlen(body), (void *) body, MHD_RESPMEM_MUST_COPY);
        if (!response)
                return MHD_NO;
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8") !=
                    MHD_YES ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
            (allow && MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES))
                ret = MHD_NO;
        else
                ret = MHD_queue_response(c, status, response);
        MHD_destroy_response(response);
        return ret;
}

static enum MHD_Result health_handler(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version, const char *upload_data,
                                      size_t *upload_data_size, void **con_cls) {
        AgentHealth *h = cls;
        const char *cl, *reason = NULL;
        bool healthz, readyz;
        char body[STRLEN("not ready: \n") + AGENT_HEALTH_REASON_MAX + 1];

        /* Called once with the headers, before any body is read: answer right there, so that a body is
         * never read (libmicrohttpd discards it and closes the connection after the response). */
        if (*upload_data_size > 0)
                return MHD_NO; /* not reached: we always answer on the first call */

        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if ((cl && !streq(cl, "0")) ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
                return health_queue(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not accepted\n", NULL);

        healthz = streq(url, "/healthz");
        readyz = streq(url, "/readyz");
        if (!healthz && !readyz)
                return health_queue(c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
        if (!streq(method, MHD_HTTP_METHOD_GET) && !streq(method, MHD_HTTP_METHOD_HEAD))
                return health_queue(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, HEAD");
        if (healthz)
                return health_queue(c, MHD_HTTP_OK, "ok\n", NULL);

        if (h->ready(h->userdata, &reason))
                return health_queue(c, MHD_HTTP_OK, "ready\n", NULL);
        if (isempty(reason))
                return health_queue(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n", NULL);
        (void) snprintf(body, sizeof(body), "not ready: %.*s\n", (int) AGENT_HEALTH_REASON_MAX, reason);
        return health_queue(c, MHD_HTTP_SERVICE_UNAVAILABLE, body, NULL);
}

/* At its own connection limit libmicrohttpd stops accepting, so further probes would wait in the kernel's
 * backlog until they time out. Refusing them here instead closes them at once: a probe fails fast. */
static enum MHD_Result health_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
        AgentHealth *h = cls;

        if (h->n_connections >= AGENT_HEALTH_CONNECTIONS_MAX) {
                log_debug("Health listener: %u connections open, refusing another.", h->n_connections);
                return MHD_NO;
        }
        return MHD_YES;
}

static void health_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        AgentHealth *h = cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED)
                h->n_connections++;
        else if (code == MHD_CONNECTION_NOTIFY_CLOSED && h->n_connections > 0)
                h->n_connections--;
}

_printf_(2, 0) static void health_logger(void *cls, const char *format, va_list ap) {
        char buf[512];
        size_t n;

        if (log_get_max_level() < LOG_DEBUG)
                return;
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        log_debug("libmicrohttpd: %s", buf);
}

/* libmicrohttpd must run whenever its epoll fd is readable and when its timeout expires (connection
 * timeouts, and data it already read but has not processed, announced as timeout 0). */
static int health_run(AgentHealth *h) {
        MHD_UNSIGNED_LONG_LONG ms;
        int r;

        if (MHD_run(h->daemon) != MHD_YES)
                log_debug("libmicrohttpd: MHD_run() failed, ignoring.");
        if (MHD_get_timeout(h->daemon, &ms) != MHD_YES)
                return sd_event_source_set_enabled(h->timer_source, SD_EVENT_OFF);
        r = sd_event_source_set_time_relative(h->timer_source,
                                              MIN(ms, (MHD_UNSIGNED_LONG_LONG) UINT32_MAX) * USEC_PER_MSEC);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(h->timer_source, SD_EVENT_ONESHOT);
}

static int health_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        int r;

        r = health_run(userdata);
        if (r < 0)
                log_debug_errno(r, "Failed to re-arm the health listener's timer, ignoring: %m");
        return 0;
}

static int health_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        return health_on_io(s, -EBADF, 0, userdata);
}

int agent_health_new(sd_event *event, const char *listen, AgentHealthReady ready, void *userdata,
                     AgentHealth **ret) {
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        _cleanup_close_ int fd = -EBADF;
        const union MHD_DaemonInfo *info;
        HostPort hp;
        int r;

        assert(event);
        assert(ready);
        assert(ret);

        r = health_parse_listen(listen, &hp);
        if (r < 0)
                return r;

        h = malloc(sizeof(AgentHealth));
        if (!h)
                return -ENOMEM;
        *h = (AgentHealth) { .listen_fd = -EBADF, .ready = ready, .userdata = userdata };

        r = listen_bind(&hp, (int) AGENT_HEALTH_CONNECTIONS_MAX, &fd);
        if (r < 0)
                return r;

        /* No internal thread: we poll MHD's epoll fd. The listening socket is ours until the daemon
         * starts (a failed start leaves it open), and the daemon's afterwards. health_accept() enforces
         * AGENT_HEALTH_CONNECTIONS_MAX; MHD's own limit, one above, is never reached. */
        h->daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, health_accept, h,
                                     health_handler, h,
                                     MHD_OPTION_EXTERNAL_LOGGER, health_logger, NULL,
                                     MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
                                     MHD_OPTION_NOTIFY_CONNECTION, health_notify, h,
                                     MHD_OPTION_CONNECTION_LIMIT, AGENT_HEALTH_CONNECTIONS_MAX + 1U,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) AGENT_HEALTH_TIMEOUT_SEC,
                                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) AGENT_HEALTH_MEMORY_LIMIT,
                                     MHD_OPTION_END);
        if (!h->daemon)
                return -EIO;
        h->listen_fd = TAKE_FD(fd);

        info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info || info->epoll_fd < 0)
                return -EIO;

        r = sd_event_add_io(event, &h->io_source, info->epoll_fd, EPOLLIN, health_on_io, h);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(h->io_source, "agent-health-io");

        /* Accuracy 1 µs: a timeout of 0 means MHD holds unprocessed data, which must not wait 250 ms. */
        r = sd_event_add_time(event, &h->timer_source, CLOCK_MONOTONIC, USEC_INFINITY, 1, health_on_timer,
                              h);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(h->timer_source, "agent-health-timer");

        r = health_run(h);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(h);
        return 0;
}

AgentHealth *agent_health_free(AgentHealth *h) {
        if (!h)
                return NULL;

        /* The IO source watches the daemon's epoll fd: remove it before MHD_stop_daemon() closes that. */
        h->io_source = sd_event_source_disable_unref(h->io_source);
        h->timer_source = sd_event_source_disable_unref(h->timer_source);
        if (h->daemon)
                MHD_stop_daemon(h->daemon); /* closes listen_fd */
        return mfree(h);
}

unsigned agent_health_get_port(const AgentHealth *h) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t len = sizeof(sa);

        assert(h);

        if (getsockname(h->listen_fd, &sa.sa, &len) < 0)
                return 0;
        return ntohs(sa.sa.sa_family == AF_INET6 ? sa.in6.sin6_port : sa.in.sin_port);
}
