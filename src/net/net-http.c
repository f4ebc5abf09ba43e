/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <assert.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "net-http.h"
#include "net-listen.h"

/* A body beyond its route's limit that arrives chunked is read and dropped so that the 413 can be sent;
 * past this much the connection is simply closed. */
#define HTTP_DISCARD_MAX (1024U * 1024U)

/* One libmicrohttpd daemon and its event sources. A server has one; a certificate swap briefly two. */
typedef struct HttpDaemon {
        HttpServer *server;
        struct MHD_Daemon *mhd;
        sd_event_source *io_source;
        sd_event_source *timer_source;
        unsigned n_connections;
        bool tls;
} HttpDaemon;

struct HttpServer {
        sd_event *event;
        int fd;      /* the listening socket; each daemon gets a dup of it */
        bool own_fd; /* bound here (closed on free), or the caller's (never closed) */
        HttpServerParams params; /* tls_*_pem and description point to the copies below */
        char *cert_pem, *key_pem, *description;
        HttpDaemon *daemon;
};

typedef struct HttpHeader {
        const char *name, *value;
} HttpHeader;

struct HttpRequest {
        HttpServer *server;
        struct MHD_Connection *connection;
        const HttpRoute *route;
        const char *method_string, *path;
        HttpMethod method;
        bool tls;
        size_t body_max;
        char *body;
        size_t size, discarded;
        bool too_large, replied;
        HttpHeader headers[HTTP_EXTRA_HEADERS_MAX];
        size_t n_headers;
        char address[HTTP_ADDRESS_STRING_MAX];
};

static const struct {
        HttpMethod method;
        const char *name;
} http_methods[] = {
        { HTTP_METHOD_GET, MHD_HTTP_METHOD_GET },         { HTTP_METHOD_HEAD, MHD_HTTP_METHOD_HEAD },
        { HTTP_METHOD_POST, MHD_HTTP_METHOD_POST },       { HTTP_METHOD_PUT, MHD_HTTP_METHOD_PUT },
        { HTTP_METHOD_PATCH, MHD_HTTP_METHOD_PATCH },     { HTTP_METHOD_DELETE, MHD_HTTP_METHOD_DELETE },
        { HTTP_METHOD_OPTIONS, MHD_HTTP_METHOD_OPTIONS },
};

static HttpMethod http_method_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(http_methods); i++)
                if (streq(s, http_methods[i].name))
                        return http_methods[i].method;
        return 0;
}

static void http_methods_to_allow(unsigned methods, char *buf, size_t size) {
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(http_methods); i++)
                if (methods & http_methods[i].method) {
                        int k = snprintf(buf + n, size - n, "%s%s", n > 0 ? ", " : "", http_methods[i].name);
                        if (k < 0 || (size_t) k >= size - n)
                                return;
                        n += (size_t) k;
                }
}

static bool http_header_valid(const char *s) {
        return s && strpbrk(s, "\r\n") == NULL;
}

int http_request_add_header(HttpRequest *req, const char *name, const char *value) {
        assert(req);

        if (req->replied)
                return -EALREADY;
        if (isempty(name) || !http_header_valid(name) || !http_header_valid(value) || strchr(name, ':'))
                return -EINVAL;
        if (req->n_headers >= HTTP_EXTRA_HEADERS_MAX)
                return -E2BIG;
        req->headers[req->n_headers++] = (HttpHeader) { name, value };
        return 0;
}

int http_reply(HttpRequest *req, unsigned status, const char *content_type, const void *body, size_t size) {
        struct MHD_Response *response;
        enum MHD_Result k;
        int r = 0;

        assert(req);
        assert(content_type);
        assert(body || size == 0);

        if (req->replied)
                return -EALREADY;

        response = MHD_create_response_from_buffer(size, (void *) (body ?: ""), MHD_RESPMEM_MUST_COPY);
        if (!response)
                return -ENOMEM;
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_X_CONTENT_TYPE_OPTIONS, "nosniff") !=
                    MHD_YES ||
            (req->tls && MHD_add_response_header(response, MHD_HTTP_HEADER_STRICT_TRANSPORT_SECURITY,
                                                 HTTP_HSTS_VALUE) != MHD_YES))
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < req->n_headers; i++) {
                const HttpHeader *h = &req->headers[i];

                if (MHD_add_response_header(response, h->name, h->value) != MHD_YES)
                        r = -EINVAL;
        }
        if (r >= 0) {
                k = MHD_queue_response(req->connection, status, response);
                if (k != MHD_YES)
                        r = -EIO;
        }
        MHD_destroy_response(response);
        if (r < 0)
                return r;
        req->replied = true;
        return 0;
}

int http_reply_text(HttpRequest *req, unsigned status, const char *text) {
        assert(text);
        return http_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

int http_reply_json(HttpRequest *req, unsigned status, const json_t *json) {
        _cleanup_free_ char *s = NULL;

        assert(json);

        s = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
                return -ENOMEM;
        return http_reply(req, status, "application/json", s, strlen(s));
}

int http_reply_error(HttpRequest *req, unsigned status, const char *code, const char *message) {
        json_t *j;
        int r;

        assert(code);
        assert(message);

        j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
        if (!j)
                return -ENOMEM;
        r = http_reply_json(req, status, j);
        json_decref(j);
        return r;
}

/* The server's own answers, in the style the server was asked for. */
static enum MHD_Result http_reply_builtin(HttpRequest *req, unsigned status, const char *code,
                                          const char *message) {
        char text[128];
        int r;

        if (req->server->params.errors_as_text) {
                (void) snprintf(text, sizeof(text), "%s\n", message);
                r = http_reply_text(req, status, text);
        } else
                r = http_reply_error(req, status, code, message);
        if (r < 0) {
                log_debug_errno(r, "HTTP: failed to queue a %u response, closing the connection: %m",
                                status);
                return MHD_NO;
        }
        return MHD_YES;
}

static const HttpRoute *http_route_find(const HttpServer *s, const char *path) {
        for (size_t i = 0; i < s->params.n_routes; i++) {
                const HttpRoute *route = &s->params.routes[i];

                if (route->prefix ? strneq(path, route->path, strlen(route->path)) :
                                    streq(path, route->path))
                        return route;
        }
        return NULL;
}

static void http_request_set_address(HttpRequest *req) {
        const union MHD_ConnectionInfo *info;
        const struct sockaddr *sa;

        info = MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!info || !info->client_addr)
                return;
        sa = info->client_addr;
        if (sa->sa_family == AF_INET)
                (void) inet_ntop(AF_INET, &((const struct sockaddr_in *) (const void *) sa)->sin_addr,
                                 req->address, sizeof(req->address));
        else if (sa->sa_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) (const void *) sa)->sin6_addr;

                /* A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: one client, one address. */
                if (IN6_IS_ADDR_V4MAPPED(a))
                        (void) inet_ntop(AF_INET, &a->s6_addr[12], req->address, sizeof(req->address));
                else
                        (void) inet_ntop(AF_INET6, a, req->address, sizeof(req->address));
        }
}

/* The first call: headers only. Refuses what can be refused before reading a body. */
static enum MHD_Result http_request_begin(HttpRequest *req) {
        const char *cl, *te;
        char allow[64];
        uint64_t length;
        bool allowed;

        req->route = http_route_find(req->server, req->path);
        allowed = req->route && (req->route->methods & req->method);
        req->body_max = allowed ? req->route->body_max : 0;

        cl = http_request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        te = http_request_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        if ((req->body_max == 0 && (te || (cl && !streq(cl, "0")))) ||
            (cl && (safe_atou64(cl, &length) < 0 || length > req->body_max)))
                return http_reply_builtin(req, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                                          req->body_max == 0 ? "request body not accepted" :
                                                               "request body too large");

        if (!req->route)
                return http_reply_builtin(req, MHD_HTTP_NOT_FOUND, "not_found", "not found");
        if (!allowed) {
                http_methods_to_allow(req->route->methods, allow, sizeof(allow));
                if (http_request_add_header(req, MHD_HTTP_HEADER_ALLOW, allow) < 0)
                        return MHD_NO;
                return http_reply_builtin(req, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                                          "method not allowed");
        }
        return MHD_YES;
}

static enum MHD_Result http_request_body_append(HttpRequest *req, const char *data, size_t size) {
        char *p;

        if (req->too_large || size > req->body_max - req->size) {
                /* Chunked beyond the limit: keep reading (and dropping) to answer 413, up to a point. */
                req->too_large = true;
                req->body = mfree(req->body);
                req->discarded += size;
                return req->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
        }

        p = realloc(req->body, req->size + size + 1);
        if (!p)
                return MHD_NO;
        memcpy(p + req->size, data, size);
        req->size += size;
        p[req->size] = '\0';
        req->body = p;
        return MHD_YES;
}

static enum MHD_Result http_request_complete(HttpRequest *req) {
        int r;

        if (req->too_large)
                return http_reply_builtin(req, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                                          "request body too large");

        r = req->route->handler(req, req->server->params.userdata);
        if (req->replied)
                return MHD_YES;
        if (r < 0)
                log_debug_errno(r, "HTTP: handler for %s %s failed, answering 500: %m", req->method_string,
                                req->path);
        else
                log_debug("HTTP: handler for %s %s did not reply, answering 500.", req->method_string,
                          req->path);
        req->n_headers = 0; /* whatever the handler meant to send with its answer */
        return http_reply_builtin(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error", "internal error");
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_data_size,
                                   void **con_cls) {
        HttpDaemon *d = cls;
        HttpRequest *req = *con_cls;
        size_t size = *upload_data_size;

        if (!req) {
                req = malloc(sizeof(HttpRequest));
                if (!req)
                        return MHD_NO;
                *req = (HttpRequest) {
                        .server = d->server,
                        .connection = c,
                        .method_string = method,
                        .method = http_method_from_string(method),
                        .path = url,
                        .tls = d->tls,
                };
                http_request_set_address(req);
                *con_cls = req; /* freed by http_completed() */
                return http_request_begin(req);
        }

        *upload_data_size = 0;
        if (req->replied)
                return MHD_YES; /* refused early: libmicrohttpd drops the body and closes after the answer */
        if (size > 0)
                return http_request_body_append(req, upload_data, size);
        return http_request_complete(req);
}

static void http_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe) {
        HttpRequest *req = *con_cls;

        if (!req)
                return;
        free(req->body);
        free(req);
        *con_cls = NULL;
}

/* At its own connection limit libmicrohttpd stops accepting, so further clients would wait in the
 * kernel's backlog until they time out. Refusing them here instead closes them at once. */
static enum MHD_Result http_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
        HttpDaemon *d = cls;

        if (d->n_connections >= d->server->params.connections_max) {
                log_debug("HTTP: %u connections open, refusing another.", d->n_connections);
                return MHD_NO;
        }
        return MHD_YES;
}

static void http_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                        enum MHD_ConnectionNotificationCode code) {
        HttpDaemon *d = cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED)
                d->n_connections++;
        else if (code == MHD_CONNECTION_NOTIFY_CLOSED && d->n_connections > 0)
                d->n_connections--;
}

_printf_(2, 0) static void http_logger(void *cls, const char *format, va_list ap) {
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
static int http_daemon_run(HttpDaemon *d) {
        MHD_UNSIGNED_LONG_LONG ms;
        int r;

        if (MHD_run(d->mhd) != MHD_YES)
                log_debug("libmicrohttpd: MHD_run() failed, ignoring.");
        if (MHD_get_timeout(d->mhd, &ms) != MHD_YES)
                return sd_event_source_set_enabled(d->timer_source, SD_EVENT_OFF);
        r = sd_event_source_set_time_relative(d->timer_source,
                                              MIN(ms, (MHD_UNSIGNED_LONG_LONG) UINT32_MAX) * USEC_PER_MSEC);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(d->timer_source, SD_EVENT_ONESHOT);
}

static int http_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        int r;

        r = http_daemon_run(userdata);
        if (r < 0)
                log_debug_errno(r, "HTTP: failed to re-arm the timer, ignoring: %m");
        return 0;
}

static int http_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        return http_on_io(s, -EBADF, 0, userdata);
}

static HttpDaemon *http_daemon_free(HttpDaemon *d) {
        if (!d)
                return NULL;

        /* The IO source watches the daemon's epoll fd: remove it before MHD_stop_daemon() closes that. */
        d->io_source = sd_event_source_disable_unref(d->io_source);
        d->timer_source = sd_event_source_disable_unref(d->timer_source);
        if (d->mhd)
                MHD_stop_daemon(d->mhd); /* closes its dup of the listening socket and every connection */
        return mfree(d);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpDaemon *, http_daemon_free);

static int http_daemon_start(HttpServer *s, const char *cert_pem, const char *key_pem, HttpDaemon **ret) {
        /* Passed only with MHD_USE_TLS (libmicrohttpd refuses HTTPS options without it). */
        struct MHD_OptionItem tls[] = {
                { MHD_OPTION_HTTPS_MEM_CERT, 0, (void *) cert_pem },
                { MHD_OPTION_HTTPS_MEM_KEY, 0, (void *) key_pem },
                { MHD_OPTION_HTTPS_PRIORITIES, 0, (void *) HTTP_TLS_PRIORITIES },
                { MHD_OPTION_END, 0, NULL },
        };
        _cleanup_(http_daemon_freep) HttpDaemon *d = NULL;
        _cleanup_close_ int fd = -EBADF;
        const union MHD_DaemonInfo *info;
        char desc[64];
        int r;

        d = malloc(sizeof(HttpDaemon));
        if (!d)
                return -ENOMEM;
        *d = (HttpDaemon) { .server = s, .tls = cert_pem };

        fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;

        /* No internal thread: we poll MHD's epoll fd. The dup is ours until the daemon starts (a failed
         * start leaves it open), and the daemon's afterwards. http_accept() enforces connections_max;
         * MHD's own limit, one above, is never reached. */
        d->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (cert_pem ? MHD_USE_TLS : 0), 0,
                                  http_accept, d, http_access, d,
                                  MHD_OPTION_EXTERNAL_LOGGER, http_logger, NULL,
                                  MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
                                  MHD_OPTION_NOTIFY_CONNECTION, http_notify, d,
                                  MHD_OPTION_NOTIFY_COMPLETED, http_completed, NULL,
                                  MHD_OPTION_CONNECTION_LIMIT, s->params.connections_max + 1U,
                                  MHD_OPTION_CONNECTION_TIMEOUT, s->params.timeout_sec,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->params.memory_max,
                                  MHD_OPTION_ARRAY, cert_pem ? tls : &tls[ELEMENTSOF(tls) - 1],
                                  MHD_OPTION_END);
        if (!d->mhd)
                return -EIO;
        TAKE_FD(fd);

        info = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info || info->epoll_fd < 0)
                return -EIO;

        r = sd_event_add_io(s->event, &d->io_source, info->epoll_fd, EPOLLIN, http_on_io, d);
        if (r < 0)
                return r;
        (void) snprintf(desc, sizeof(desc), "%s-io", s->description);
        (void) sd_event_source_set_description(d->io_source, desc);

        /* Accuracy 1 µs: a timeout of 0 means MHD holds unprocessed data, which must not wait 250 ms. */
        r = sd_event_add_time(s->event, &d->timer_source, CLOCK_MONOTONIC, USEC_INFINITY, 1, http_on_timer,
                              d);
        if (r < 0)
                return r;
        (void) snprintf(desc, sizeof(desc), "%s-timer", s->description);
        (void) sd_event_source_set_description(d->timer_source, desc);

        r = http_daemon_run(d);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

static int http_params_check(const HttpServerParams *p) {
        if (!p->routes || p->n_routes == 0)
                return -EINVAL;
        for (size_t i = 0; i < p->n_routes; i++)
                if (isempty(p->routes[i].path) || !p->routes[i].handler ||
                    p->routes[i].body_max > HTTP_BODY_MAX_LIMIT)
                        return -EINVAL;
        if (!p->tls_cert_pem != !p->tls_key_pem)
                return -EINVAL;
        if (p->tls_cert_pem && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
                log_debug("HTTP: TLS requested, but libmicrohttpd was built without TLS support.");
                return -EOPNOTSUPP;
        }
        return 0;
}

/* Takes fd when own_fd, on success and failure alike. */
static int http_server_new_internal(sd_event *event, int fd, bool own_fd, const HttpServerParams *params,
                                    HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        s = malloc(sizeof(HttpServer));
        if (!s) {
                if (own_fd)
                        (void) safe_close(fd);
                return -ENOMEM;
        }
        *s = (HttpServer) { .event = sd_event_ref(event), .fd = fd, .own_fd = own_fd, .params = *params };

        if (s->params.connections_max == 0)
                s->params.connections_max = HTTP_CONNECTIONS_MAX_DEFAULT;
        if (s->params.timeout_sec == 0)
                s->params.timeout_sec = HTTP_TIMEOUT_SEC_DEFAULT;
        if (s->params.memory_max == 0)
                s->params.memory_max = HTTP_MEMORY_MAX_DEFAULT;
        s->description = strdup(params->description ?: "http");
        if (!s->description)
                return -ENOMEM;
        s->params.description = s->description;
        if (params->tls_cert_pem) {
                s->cert_pem = strdup(params->tls_cert_pem);
                s->key_pem = strdup(params->tls_key_pem);
                if (!s->cert_pem || !s->key_pem)
                        return -ENOMEM;
        }
        s->params.tls_cert_pem = s->cert_pem;
        s->params.tls_key_pem = s->key_pem;

        r = http_daemon_start(s, s->cert_pem, s->key_pem, &s->daemon);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

int http_server_new_fd(sd_event *event, int fd, const HttpServerParams *params, HttpServer **ret) {
        int r;

        assert(event);
        assert(params);
        assert(ret);

        r = http_params_check(params);
        if (r < 0)
                return r;
        if (fd < 0)
                return -EBADF;
        return http_server_new_internal(event, fd, /* own_fd= */ false, params, ret);
}

int http_server_new_bind(sd_event *event, const HostPort *addr, const HttpServerParams *params,
                         HttpServer **ret) {
        int fd, r;

        assert(event);
        assert(addr);
        assert(params);
        assert(ret);

        r = http_params_check(params);
        if (r < 0)
                return r;
        r = listen_bind(addr, (int) MIN(params->connections_max ?: HTTP_CONNECTIONS_MAX_DEFAULT,
                                        (unsigned) LISTEN_BACKLOG_MAX),
                        &fd);
        if (r < 0)
                return r;
        return http_server_new_internal(event, fd, /* own_fd= */ true, params, ret);
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;

        s->daemon = http_daemon_free(s->daemon);
        if (s->own_fd)
                s->fd = safe_close(s->fd);
        s->cert_pem = mfree(s->cert_pem);
        s->key_pem = erase_and_free_string(s->key_pem);
        s->description = mfree(s->description);
        sd_event_unref(s->event);
        return mfree(s);
}

int http_server_set_certificate(HttpServer *s, const char *cert_pem, const char *key_pem) {
        _cleanup_free_ char *cert = NULL;
        _cleanup_erase_free_ char *key = NULL;
        HttpDaemon *d = NULL;
        int r;

        assert(s);

        if (!s->cert_pem || !cert_pem || !key_pem)
                return -EINVAL;
        cert = strdup(cert_pem);
        key = strdup(key_pem);
        if (!cert || !key)
                return -ENOMEM;

        r = http_daemon_start(s, cert, key, &d);
        if (r < 0)
                return r;

        (void) http_daemon_free(s->daemon);
        s->daemon = d;
        free(s->cert_pem);
        s->cert_pem = TAKE_PTR(cert);
        (void) erase_and_free_string(s->key_pem);
        s->key_pem = TAKE_PTR(key);
        s->params.tls_cert_pem = s->cert_pem;
        s->params.tls_key_pem = s->key_pem;
        return 0;
}

unsigned http_server_get_port(const HttpServer *s) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t len = sizeof(sa);

        assert(s);

        if (getsockname(s->fd, &sa.sa, &len) < 0)
                return 0;
        if (sa.sa.sa_family == AF_INET6)
                return ntohs(sa.in6.sin6_port);
        if (sa.sa.sa_family == AF_INET)
                return ntohs(sa.in.sin_port);
        return 0;
}

HttpMethod http_request_method(const HttpRequest *req) {
        assert(req);
        return req->method;
}

const char *http_request_method_string(const HttpRequest *req) {
        assert(req);
        return req->method_string;
}

const char *http_request_path(const HttpRequest *req) {
        assert(req);
        return req->path;
}

const HttpRoute *http_request_route(const HttpRequest *req) {
        assert(req);
        return req->route;
}

const char *http_request_query(const HttpRequest *req, const char *name) {
        const char *v;

        assert(req);
        assert(name);

        /* libmicrohttpd gives NULL for "?flag" (no '='); tell it apart from an absent parameter. */
        if (MHD_lookup_connection_value_n(req->connection, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v,
                                          NULL) != MHD_YES)
                return NULL;
        return v ?: "";
}

const char *http_request_header(const HttpRequest *req, const char *name) {
        assert(req);
        assert(name);
        return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_request_cookie(const HttpRequest *req, const char *name) {
        assert(req);
        assert(name);
        return MHD_lookup_connection_value(req->connection, MHD_COOKIE_KIND, name);
}

const char *http_request_body(const HttpRequest *req, size_t *ret_size) {
        assert(req);

        if (ret_size)
                *ret_size = req->body ? req->size : 0;
        return req->body ?: "";
}

const char *http_request_client_address(const HttpRequest *req) {
        assert(req);
        return req->address;
}

bool http_request_is_tls(const HttpRequest *req) {
        assert(req);
        return req->tls;
}
