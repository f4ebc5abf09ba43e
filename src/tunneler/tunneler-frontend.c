/* SPDX-License-Identifier: Apache-2.0 */

/* The local front-ends: a Listener per configured address; SOCKS and HTTP connections live here only for
 * their handshake (a bounded buffer, an IO source and a timer), then go to the data plane. The replies
 * written once the data plane has answered need nothing from this object: on_result's userdata is the kind
 * of front-end, not a pointer, so the data plane and the front-ends may be freed in either order. */

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "agent-conf.h"
#include "log.h"
#include "net-connect.h"
#include "net-listen.h"
#include "string-util.h"
#include "strv.h"
#include "tunneler-frontend.h"

_Static_assert(FRONTEND_FORWARDS_MAX >= AGENT_FORWARDS_MAX, "the configuration allows more forwards");
_Static_assert(FRONTEND_HEAD_MAX <= INT32_MAX, "parsers return the head length as int");

typedef enum FrontendKind {
        FRONTEND_FORWARD = 1, /* not 0: the kind travels as on_result's userdata, which is then never NULL */
        FRONTEND_SOCKS,
        FRONTEND_HTTP,
} FrontendKind;

typedef struct FrontendListener FrontendListener;
typedef struct FrontendConnection FrontendConnection;

/* A SOCKS or HTTP connection in its handshake. */
struct FrontendConnection {
        FrontendListener *owner; /* set once counted by the Listener */
        FrontendConnection *prev, *next;
        int fd;
        sd_event_source *io, *timer;
        SocksStage stage;
        size_t size;
        uint8_t buf[FRONTEND_HEAD_MAX];
};

struct FrontendListener {
        TunnelerFrontends *frontends;
        FrontendKind kind;
        Listener *listener;
        HostPort target; /* FRONTEND_FORWARD */
        FrontendConnection *connections;
};

struct TunnelerFrontends {
        sd_event *event;
        TunnelerDataPlane *dp;
        TunnelerConnectFunction connect;
        usec_t handshake_timeout;
        FrontendListener *socks, *http;
        FrontendListener *forwards[FRONTEND_FORWARDS_MAX];
        size_t n_forwards;
};

static const char *frontend_kind_to_string(FrontendKind k) {
        switch (k) {
        case FRONTEND_FORWARD:
                return "forward";
        case FRONTEND_SOCKS:
                return "SOCKS5";
        case FRONTEND_HTTP:
                return "HTTP CONNECT";
        }
        return "unknown";
}

/* ---- replies ---- */

/* Replies are a few hundred bytes at most, written to a socket that has not been written to before, so the
 * send buffer always takes them at once; a short write means something is wrong and is a failure. */
static int send_all(int fd, const void *p, size_t n) {
        ssize_t k;

        k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0)
                return -errno;
        if ((size_t) k != n)
                return -EAGAIN;
        return 0;
}

static int socks_send_reply(int fd, uint8_t rep) {
        const uint8_t reply[SOCKS_REPLY_SIZE] = { SOCKS_VERSION, rep, 0x00, SOCKS_ATYP_IPV4 };

        return send_all(fd, reply, sizeof(reply));
}

static int socks_send_method(int fd, uint8_t method) {
        const uint8_t reply[2] = { SOCKS_VERSION, method };

        return send_all(fd, reply, sizeof(reply));
}

static uint8_t socks_reply_from_status(unsigned status) {
        switch (status) {
        case 200:
                return SOCKS_REPLY_SUCCEEDED;
        case 403:
                return SOCKS_REPLY_NOT_ALLOWED;
        case 502:
                return SOCKS_REPLY_HOST_UNREACHABLE;
        case 504:
                return SOCKS_REPLY_TTL_EXPIRED;
        default:
                return SOCKS_REPLY_GENERAL_FAILURE;
        }
}

static const struct {
        unsigned status;
        const char *reason;
        const char *body;
} http_replies[] = {
        { 400, "Bad Request", "Malformed CONNECT request.\n" },
        { 403, "Forbidden", "No resource granted to this tunneler covers this host and port.\n" },
        { 405, "Method Not Allowed", "This proxy serves CONNECT only.\n" },
        { 408, "Request Timeout", "The request did not arrive in time.\n" },
        { 429, "Too Many Requests", "The connector is serving too many streams.\n" },
        { 431, "Request Header Fields Too Large", "The request head is too large.\n" },
        { 502, "Bad Gateway", "The resource could not be reached.\n" },
        { 503, "Service Unavailable", "Too many requests are waiting for a connector.\n" },
        { 504, "Gateway Timeout", "The resource did not answer in time.\n" },
        { 505, "HTTP Version Not Supported", "Only HTTP/1.1 and HTTP/1.0 are served.\n" },
};

#define HTTP_ESTABLISHED "HTTP/1.1 200 Connection established\r\n\r\n"

static int http_send_status(int fd, unsigned status) {
        char buf[512];
        size_t i;
        int n;

        if (status == 200)
                return send_all(fd, HTTP_ESTABLISHED, STRLEN(HTTP_ESTABLISHED));

        for (i = 0; i < ELEMENTSOF(http_replies); i++)
                if (http_replies[i].status == status)
                        break;
        if (i >= ELEMENTSOF(http_replies))
                return http_send_status(fd, 502);

        n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %u %s\r\n"
                     "%s"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "%s",
                     status, http_replies[i].reason, status == 405 ? "Allow: CONNECT\r\n" : "",
                     strlen(http_replies[i].body), http_replies[i].body);
        assert(n > 0 && (size_t) n < sizeof(buf));
        return send_all(fd, buf, (size_t) n);
}

/* The connector's answer (or the data plane's 502) as the HTTP status our client gets. */
static unsigned http_status_from_status(unsigned status) {
        switch (status) {
        case 200:
        case 403:
        case 429:
        case 502:
        case 504:
                return status;
        default:
                return 502;
        }
}

static void frontend_on_result(int fd, unsigned status, void *userdata) {
        FrontendKind kind = (FrontendKind) (uintptr_t) userdata;
        int r;

        switch (kind) {
        case FRONTEND_SOCKS:
                r = socks_send_reply(fd, socks_reply_from_status(status));
                break;
        case FRONTEND_HTTP:
                r = http_send_status(fd, http_status_from_status(status));
                break;
        default:
                return;
        }
        if (r >= 0)
                return;
        log_debug_errno(r, "Failed to send the %s reply for status %u: %m", frontend_kind_to_string(kind),
                        status);
        /* The fd is the data plane's now, so it is not ours to close; ending both directions makes the relay
         * finish instead of carrying bytes for a client that never learnt the tunnel is up. */
        if (status == 200)
                (void) shutdown(fd, SHUT_RDWR);
}

/* The synchronous refusals of tunneler_dataplane_connect(). */
static uint8_t socks_reply_from_error(int r) {
        switch (r) {
        case -EACCES:
                return SOCKS_REPLY_NOT_ALLOWED;
        case -EHOSTUNREACH:
                return SOCKS_REPLY_HOST_UNREACHABLE;
        default:
                return SOCKS_REPLY_GENERAL_FAILURE;
        }
}

static unsigned http_status_from_error(int r) {
        switch (r) {
        case -EACCES:
                return 403;
        case -EBUSY:
                return 503;
        case -EINVAL:
                return 400;
        default:
                return 502;
        }
}

/* Ends a connection that never reached the data plane so that the application sees a reset, not a clean
 * end of data it could take for an empty answer. */
static void close_with_reset(int fd) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };

        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        safe_close(fd);
}

/* Hands fd to the data plane; on a synchronous refusal answers the client and closes fd. Takes fd. */
static void frontend_connect(TunnelerFrontends *f, FrontendKind kind, const HostPort *hp, int fd) {
        int r;

        r = f->connect(f->dp, hp->host, hp->port, fd, frontend_on_result, (void *) (uintptr_t) kind);
        if (r >= 0)
                return;
        log_debug_errno(r, "%s request for %s:%u refused: %m", frontend_kind_to_string(kind), hp->host,
                        hp->port);

        switch (kind) {
        case FRONTEND_FORWARD:
                close_with_reset(fd);
                return;
        case FRONTEND_SOCKS:
                (void) socks_send_reply(fd, socks_reply_from_error(r));
                break;
        case FRONTEND_HTTP:
                (void) http_send_status(fd, http_status_from_error(r));
                break;
        }
        safe_close(fd);
}

/* ---- parsers ---- */

int socks_parse_greeting(const uint8_t *buf, size_t size, uint8_t *ret_reply) {
        size_t n;

        assert(buf || size == 0);
        assert(ret_reply);

        if (size < 1)
                return 0;
        if (buf[0] != SOCKS_VERSION)
                return -EBADMSG;
        if (size < 2)
                return 0;
        if (buf[1] == 0)
                return -EBADMSG;
        n = 2 + (size_t) buf[1];
        if (size < n)
                return 0;
        if (!memchr(buf + 2, SOCKS_METHOD_NO_AUTH, buf[1])) {
                *ret_reply = SOCKS_METHOD_NONE_ACCEPTABLE;
                return -EPROTONOSUPPORT;
        }
        *ret_reply = SOCKS_METHOD_NO_AUTH;
        return (int) n;
}

/* A DOMAINNAME: a host name, or an address literal some clients send this way (IPv6 without brackets). */
static int socks_domain_parse(const uint8_t *p, size_t n, HostPort *hp) {
        char name[sizeof(hp->host)];

        if (n == 0 || n >= sizeof(name) || memchr(p, '\0', n))
                return -EINVAL;
        memcpy(name, p, n);
        name[n] = '\0';

        if (strchr(name, ':')) {
                struct in6_addr a6;

                if (inet_pton(AF_INET6, name, &a6) != 1 ||
                    !inet_ntop(AF_INET6, &a6, hp->host, sizeof(hp->host)))
                        return -EINVAL;
                hp->family = AF_INET6;
                return 0;
        }
        /* No ':' in name, so the default port is used and the real one set by the caller. */
        return parse_host_port(name, 1, hp) < 0 ? -EINVAL : 0;
}

int socks_parse_request(const uint8_t *buf, size_t size, HostPort *ret, uint8_t *ret_reply) {
        HostPort hp = { .family = AF_UNSPEC };
        size_t need;
        uint16_t port;

        assert(buf || size == 0);
        assert(ret);
        assert(ret_reply);

        /* What a prefix already shows is answered at once. */
        if (size >= 1 && buf[0] != SOCKS_VERSION)
                goto malformed;
        if (size >= 3 && buf[2] != 0x00)
                goto malformed;
        if (size < 4)
                return 0;

        switch (buf[3]) {
        case SOCKS_ATYP_IPV4:
                need = 4 + 4 + 2;
                break;
        case SOCKS_ATYP_IPV6:
                need = 4 + 16 + 2;
                break;
        case SOCKS_ATYP_DOMAIN:
                if (size < 5)
                        return 0;
                if (buf[4] == 0)
                        goto malformed;
                need = 5 + (size_t) buf[4] + 2;
                break;
        default:
                /* The length of the address is unknown, so nothing after it can be read: answer now. */
                *ret_reply = SOCKS_REPLY_ADDRESS_NOT_SUPPORTED;
                return -EPROTONOSUPPORT;
        }
        if (size < need)
                return 0;

        /* Judged on the whole request, so that the reply does not race the rest of it. */
        if (buf[1] != SOCKS_CMD_CONNECT) {
                *ret_reply = SOCKS_REPLY_COMMAND_NOT_SUPPORTED;
                return -EPROTONOSUPPORT;
        }

        port = (uint16_t) ((buf[need - 2] << 8) | buf[need - 1]);
        if (port == 0)
                goto malformed;

        switch (buf[3]) {
        case SOCKS_ATYP_IPV4:
                if (!inet_ntop(AF_INET, buf + 4, hp.host, sizeof(hp.host)))
                        goto malformed;
                hp.family = AF_INET;
                break;
        case SOCKS_ATYP_IPV6:
                if (!inet_ntop(AF_INET6, buf + 4, hp.host, sizeof(hp.host)))
                        goto malformed;
                hp.family = AF_INET6;
                break;
        default:
                if (socks_domain_parse(buf + 5, buf[4], &hp) < 0)
                        goto malformed;
        }
        hp.port = port;

        *ret = hp;
        return (int) need;

malformed:
        *ret_reply = SOCKS_REPLY_GENERAL_FAILURE;
        return -EBADMSG;
}

/* RFC 9110 §5.6.2 */
static bool is_tchar(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

typedef struct RequestLine {
        const char *method, *target, *version;
        size_t method_len, target_len;
} RequestLine;

#define HTTP_VERSION_PATTERN "HTTP/d.d"

/* "method SP request-target SP HTTP-version", each part checked as far as it has arrived (complete: the
 * line is all there). */
static int request_line_check(const char *p, size_t n, bool complete, RequestLine *ret) {
        enum { METHOD, TARGET, VERSION } state = METHOD;
        RequestLine rl = { .method = p };
        size_t start = 0;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) p[i];

                switch (state) {
                case METHOD:
                        if (c == ' ') {
                                if (i == start)
                                        return -EBADMSG;
                                rl.method_len = i;
                                rl.target = p + i + 1;
                                start = i + 1;
                                state = TARGET;
                        } else if (!is_tchar(c))
                                return -EBADMSG;
                        break;
                case TARGET:
                        if (c == ' ') {
                                if (i == start)
                                        return -EBADMSG;
                                rl.target_len = i - start;
                                rl.version = p + i + 1;
                                start = i + 1;
                                state = VERSION;
                        } else if (c < 0x21 || c > 0x7e)
                                return -EBADMSG;
                        break;
                case VERSION: {
                        size_t k = i - start;
                        char want;

                        if (k >= STRLEN(HTTP_VERSION_PATTERN))
                                return -EBADMSG;
                        want = HTTP_VERSION_PATTERN[k];
                        if (want == 'd' ? !(c >= '0' && c <= '9') : c != (unsigned char) want)
                                return -EBADMSG;
                        break;
                }
                }
        }
        if (!complete)
                return 0;
        if (state != VERSION || n - start != STRLEN(HTTP_VERSION_PATTERN))
                return -EBADMSG;
        *ret = rl;
        return 0;
}

/* "field-name: field-value" (RFC 9112 §5): no whitespace before the colon, no obs-fold, no control
 * characters but HTAB in the value. */
static int header_line_check(const char *p, size_t n, bool complete) {
        bool colon = false;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) p[i];

                if (!colon) {
                        if (c == ':') {
                                if (i == 0)
                                        return -EBADMSG;
                                colon = true;
                        } else if (!is_tchar(c))
                                return -EBADMSG; /* also a leading SP/HTAB: obs-fold */
                } else if (c != '\t' && (c < 0x20 || c == 0x7f))
                        return -EBADMSG;
        }
        if (complete && !colon)
                return -EBADMSG;
        return 0;
}

int http_connect_parse(const char *buf, size_t size, HostPort *ret, unsigned *ret_status) {
        char authority[CONNECT_AUTHORITY_MAX + 1];
        size_t limit = MIN(size, (size_t) FRONTEND_HEAD_MAX), pos = 0;
        RequestLine rl = {};
        HostPort hp;
        unsigned status;
        int r;

        assert(buf || size == 0);
        assert(ret);
        assert(ret_status);

        if (size == 0)
                return 0;

        for (bool first = true;; first = false) {
                const char *lf = memchr(buf + pos, '\n', limit - pos);
                bool complete = lf != NULL;
                size_t len;

                if (complete) {
                        len = (size_t) (lf - (buf + pos));
                        /* CRLF only: a bare LF is refused, never guessed at. */
                        if (len == 0 || buf[pos + len - 1] != '\r') {
                                status = 400;
                                r = -EBADMSG;
                                goto fail;
                        }
                        len--;
                } else {
                        len = limit - pos;
                        /* A CR at the very end may be the first half of a CRLF. */
                        if (len > 0 && buf[limit - 1] == '\r')
                                len--;
                }

                if (first)
                        r = request_line_check(buf + pos, len, complete, &rl);
                else if (complete && len == 0) {
                        pos += 2;
                        break;
                } else
                        r = header_line_check(buf + pos, len, complete);
                if (r < 0) {
                        status = 400;
                        goto fail;
                }

                if (!complete) {
                        if (size >= FRONTEND_HEAD_MAX) {
                                status = 431;
                                r = -EMSGSIZE;
                                goto fail;
                        }
                        return 0;
                }
                pos += len + 2;
        }

        if (rl.method_len != STRLEN("CONNECT") || memcmp(rl.method, "CONNECT", rl.method_len) != 0) {
                status = 405;
                r = -EPROTONOSUPPORT;
                goto fail;
        }
        if (memcmp(rl.version, "HTTP/1.1", STRLEN("HTTP/1.1")) != 0 &&
            memcmp(rl.version, "HTTP/1.0", STRLEN("HTTP/1.0")) != 0) {
                status = 505;
                r = -EPROTONOSUPPORT;
                goto fail;
        }
        if (rl.target_len >= sizeof(authority)) {
                status = 400;
                r = -EBADMSG;
                goto fail;
        }
        memcpy(authority, rl.target, rl.target_len);
        authority[rl.target_len] = '\0';
        if (connect_authority_parse(authority, &hp) < 0) {
                status = 400;
                r = -EBADMSG;
                goto fail;
        }

        *ret = hp;
        return (int) pos;

fail:
        *ret_status = status;
        return r;
}

/* ---- connections in their handshake ---- */

static FrontendConnection *connection_free(FrontendConnection *c) {
        if (!c)
                return NULL;

        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        if (c->owner) {
                if (c->prev)
                        c->prev->next = c->next;
                else
                        c->owner->connections = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                listener_connection_closed(c->owner->listener);
        }
        return mfree(c);
}

/* The request is complete: the connection leaves the handshake, and fd goes to the data plane. */
static void connection_hand_off(FrontendConnection *c, const HostPort *hp) {
        FrontendListener *fl = c->owner;

        /* Not watched any more before the data plane starts watching it. */
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        frontend_connect(fl->frontends, fl->kind, hp, TAKE_FD(c->fd));
        connection_free(c);
}

static void connection_consume(FrontendConnection *c, size_t n) {
        assert(n <= c->size);

        memmove(c->buf, c->buf + n, c->size - n);
        c->size -= n;
}

static void socks_process(FrontendConnection *c) {
        uint8_t reply = SOCKS_REPLY_GENERAL_FAILURE;
        HostPort hp;
        int r;

        if (c->stage == SOCKS_STAGE_GREETING) {
                r = socks_parse_greeting(c->buf, c->size, &reply);
                if (r == 0)
                        return;
                if (r == -EPROTONOSUPPORT) {
                        log_debug("SOCKS5 client offers no method we serve.");
                        (void) socks_send_method(c->fd, reply);
                        goto close;
                }
                if (r < 0) {
                        log_debug_errno(r, "Not a SOCKS5 greeting, closing: %m");
                        goto close;
                }
                connection_consume(c, (size_t) r);
                r = socks_send_method(c->fd, reply);
                if (r < 0) {
                        log_debug_errno(r, "Failed to answer a SOCKS5 greeting: %m");
                        goto close;
                }
                c->stage = SOCKS_STAGE_REQUEST;
        }

        r = socks_parse_request(c->buf, c->size, &hp, &reply);
        if (r == 0)
                return;
        if (r < 0) {
                log_debug_errno(r, "Refusing a SOCKS5 request (reply 0x%02x): %m", reply);
                (void) socks_send_reply(c->fd, reply);
                goto close;
        }
        if ((size_t) r < c->size) {
                log_debug("SOCKS5 client sent %zu bytes before the reply, refusing.", c->size - (size_t) r);
                (void) socks_send_reply(c->fd, SOCKS_REPLY_GENERAL_FAILURE);
                goto close;
        }
        connection_hand_off(c, &hp);
        return;

close:
        connection_free(c);
}

static void http_process(FrontendConnection *c) {
        unsigned status = 400;
        HostPort hp;
        int r;

        r = http_connect_parse((const char *) c->buf, c->size, &hp, &status);
        if (r == 0)
                return;
        if (r < 0) {
                log_debug_errno(r, "Refusing an HTTP proxy request with %u: %m", status);
                (void) http_send_status(c->fd, status);
                goto close;
        }
        if ((size_t) r < c->size) {
                log_debug("HTTP proxy client sent %zu bytes before the response, refusing.",
                          c->size - (size_t) r);
                (void) http_send_status(c->fd, 400);
                goto close;
        }
        connection_hand_off(c, &hp);
        return;

close:
        connection_free(c);
}

static int on_connection_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        FrontendConnection *c = userdata;
        ssize_t n;

        /* Both parsers settle before the buffer is full (HTTP with 431), so there is always room here. */
        assert(c->size < sizeof(c->buf));

        n = recv(c->fd, c->buf + c->size, sizeof(c->buf) - c->size, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                log_debug_errno(errno, "Failed to read a %s request: %m",
                                frontend_kind_to_string(c->owner->kind));
                connection_free(c);
                return 0;
        }
        if (n == 0) {
                log_debug("%s client went away during the handshake.",
                          frontend_kind_to_string(c->owner->kind));
                connection_free(c);
                return 0;
        }
        c->size += (size_t) n;

        if (c->owner->kind == FRONTEND_SOCKS)
                socks_process(c);
        else
                http_process(c);
        return 0;
}

static int on_connection_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        FrontendConnection *c = userdata;

        log_debug("%s client sent no complete request in time, closing.",
                  frontend_kind_to_string(c->owner->kind));
        if (c->owner->kind == FRONTEND_HTTP)
                (void) http_send_status(c->fd, 408);
        connection_free(c);
        return 0;
}

/* Takes fd in every case. */
static int connection_new(FrontendListener *fl, int fd) {
        _cleanup_close_ int fd_close = fd;
        FrontendConnection *c;
        int r;

        c = calloc(1, sizeof(FrontendConnection));
        if (!c)
                return -ENOMEM;
        c->fd = TAKE_FD(fd_close);
        c->stage = SOCKS_STAGE_GREETING;

        r = sd_event_add_io(fl->frontends->event, &c->io, c->fd, EPOLLIN, on_connection_io, c);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(
                c->io, fl->kind == FRONTEND_SOCKS ? "frontend-socks-handshake" : "frontend-http-handshake");
        r = sd_event_add_time_relative(fl->frontends->event, &c->timer, CLOCK_MONOTONIC,
                                       fl->frontends->handshake_timeout, 0, on_connection_timeout, c);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(c->timer, "frontend-handshake-timer");

        c->owner = fl;
        c->next = fl->connections;
        if (c->next)
                c->next->prev = c;
        fl->connections = c;
        return 0;

fail:
        connection_free(c);
        return r;
}

/* ---- listeners ---- */

static int on_accept(Listener *l, int fd, const struct sockaddr_storage *peer, void *userdata) {
        FrontendListener *fl = userdata;
        int r;

        if (fl->kind == FRONTEND_FORWARD) {
                /* Nothing to read first: the connection leaves the handshake as it arrives. */
                frontend_connect(fl->frontends, fl->kind, &fl->target, fd);
                listener_connection_closed(l);
                return 0;
        }

        r = connection_new(fl, fd);
        if (r < 0)
                return log_debug_errno(r, "Failed to set up a %s connection: %m",
                                       frontend_kind_to_string(fl->kind));
        return 0;
}

static void on_listener_error(Listener *l, int error, void *userdata) {
        FrontendListener *fl = userdata;

        if (listener_get_state(l) == LISTENER_THROTTLED)
                log_warning_errno(error, "%s listener on %s cannot accept connections for now, retrying: %m",
                                  frontend_kind_to_string(fl->kind), listener_get_address(l));
        else
                log_error_errno(error, "%s listener on %s failed, no longer accepting connections: %m",
                                frontend_kind_to_string(fl->kind), listener_get_address(l));
}

static const ListenerCallbacks listener_callbacks = {
        .on_accept = on_accept,
        .on_error = on_listener_error,
};

/* A loopback "IP:port"; port 0 (an ephemeral port) is allowed. */
static int listen_address_parse(const char *s, HostPort *ret) {
        int r;

        r = parse_listen_address(s, /* loopback_only= */ true, ret);
        return r < 0 ? -EINVAL : 0;
}

static FrontendListener *frontend_listener_free(FrontendListener *fl) {
        if (!fl)
                return NULL;

        while (fl->connections)
                connection_free(fl->connections);
        listener_free(fl->listener);
        return mfree(fl);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(FrontendListener *, frontend_listener_free);

static int frontend_listener_new(TunnelerFrontends *f, FrontendKind kind, const char *address,
                                 const HostPort *target, FrontendListener **ret) {
        _cleanup_(frontend_listener_freep) FrontendListener *fl = NULL;
        HostPort hp;
        int fd, r;

        r = listen_address_parse(address, &hp);
        if (r < 0)
                return log_debug_errno(r, "Invalid %s listen address '%s'.", frontend_kind_to_string(kind),
                                       strna(address));

        fl = calloc(1, sizeof(FrontendListener));
        if (!fl)
                return -ENOMEM;
        fl->frontends = f;
        fl->kind = kind;
        if (target)
                fl->target = *target;

        r = listen_bind(&hp, LISTEN_BACKLOG_DEFAULT, &fd);
        if (r < 0)
                return log_debug_errno(r, "Failed to listen on '%s': %m", address);
        r = listener_new(f->event, fd, &listener_callbacks, fl, &fl->listener);
        if (r < 0)
                return r;
        if (kind != FRONTEND_FORWARD) {
                r = listener_set_max_connections(fl->listener, FRONTEND_CONNECTIONS_MAX);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(fl);
        return 0;
}

TunnelerFrontends *tunneler_frontends_free(TunnelerFrontends *f) {
        if (!f)
                return NULL;

        frontend_listener_free(f->socks);
        frontend_listener_free(f->http);
        for (size_t i = 0; i < f->n_forwards; i++)
                frontend_listener_free(f->forwards[i]);
        sd_event_unref(f->event);
        return mfree(f);
}

static int forward_add(TunnelerFrontends *f, const char *entry) {
        char listen[HOST_PORT_STRING_MAX];
        const char *eq;
        HostPort target;
        int r;

        eq = strchr(entry, '=');
        if (!eq || (size_t) (eq - entry) >= sizeof(listen))
                return log_debug_errno(EINVAL, "Invalid forward '%s'.", entry);
        memcpy(listen, entry, (size_t) (eq - entry));
        listen[eq - entry] = '\0';

        r = connect_authority_parse(eq + 1, &target);
        if (r < 0)
                return log_debug_errno(r, "Invalid forward target in '%s'.", entry);

        assert(f->n_forwards < ELEMENTSOF(f->forwards));
        r = frontend_listener_new(f, FRONTEND_FORWARD, listen, &target, &f->forwards[f->n_forwards]);
        if (r < 0)
                return r;
        f->n_forwards++;
        return 0;
}

int tunneler_frontends_new(sd_event *event, TunnelerDataPlane *dp, const TunnelerFrontendSettings *settings,
                           TunnelerFrontends **ret) {
        _cleanup_(tunneler_frontends_freep) TunnelerFrontends *f = NULL;
        int r;

        assert(event);
        assert(settings);
        assert(dp || settings->connect);
        assert(ret);

        if (strv_length(settings->forwards) > FRONTEND_FORWARDS_MAX)
                return -E2BIG;

        f = calloc(1, sizeof(TunnelerFrontends));
        if (!f)
                return -ENOMEM;
        f->event = sd_event_ref(event);
        f->dp = dp;
        f->connect = settings->connect ?: tunneler_dataplane_connect;
        f->handshake_timeout = settings->handshake_timeout > 0 ? settings->handshake_timeout
                                                               : FRONTEND_HANDSHAKE_TIMEOUT;

        if (settings->socks_listen) {
                r = frontend_listener_new(f, FRONTEND_SOCKS, settings->socks_listen, NULL, &f->socks);
                if (r < 0)
                        return r;
        }
        if (settings->http_proxy_listen) {
                r = frontend_listener_new(f, FRONTEND_HTTP, settings->http_proxy_listen, NULL, &f->http);
                if (r < 0)
                        return r;
        }
        STRV_FOREACH(e, settings->forwards) {
                r = forward_add(f, *e);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(f);
        return 0;
}

const char *tunneler_frontends_socks_address(const TunnelerFrontends *f) {
        return f && f->socks ? listener_get_address(f->socks->listener) : NULL;
}

const char *tunneler_frontends_http_address(const TunnelerFrontends *f) {
        return f && f->http ? listener_get_address(f->http->listener) : NULL;
}

const char *tunneler_frontends_forward_address(const TunnelerFrontends *f, size_t i) {
        return f && i < f->n_forwards ? listener_get_address(f->forwards[i]->listener) : NULL;
}
