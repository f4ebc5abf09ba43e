/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "certgen.h"
#include "net-fixture.h"
#include "net-http.h"
#include "net-listen.h"
#include "tests.h"
#include "time-util.h"

/* What the handlers saw and are told to do. */
typedef struct State {
        unsigned calls;
        int fail;             /* the echo handler returns this without replying when < 0 */
        bool no_reply;        /* the echo handler returns 0 without replying */
        int add_after_reply;  /* http_request_add_header() after the reply */
        int second_reply;     /* a second http_reply_text() */
        int bad_header;       /* http_request_add_header() with CRLF in the value */
} State;

/* Echoes what it was given as JSON, with two extra headers. */
static int on_echo(HttpRequest *req, void *userdata) {
        State *st = userdata;
        const char *body;
        size_t size;
        json_t *j;
        int r;

        st->calls++;
        if (st->fail < 0)
                return st->fail;
        if (st->no_reply)
                return 0;

        ASSERT_TRUE(http_request_route(req)->handler == on_echo);
        ASSERT_EQ((int) http_request_method(req),
                  streq(http_request_method_string(req), "GET")    ? HTTP_METHOD_GET :
                  streq(http_request_method_string(req), "HEAD")   ? HTTP_METHOD_HEAD :
                  streq(http_request_method_string(req), "POST")   ? HTTP_METHOD_POST :
                  streq(http_request_method_string(req), "PUT")    ? HTTP_METHOD_PUT :
                  streq(http_request_method_string(req), "PATCH")  ? HTTP_METHOD_PATCH : -1);
        body = http_request_body(req, &size);
        j = json_pack("{s:s,s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:s,s:b,s:s%,s:I}",
                      "method", http_request_method_string(req),
                      "path", http_request_path(req),
                      "a", http_request_query(req, "a"),
                      "flag", http_request_query(req, "flag"),
                      "sid", http_request_cookie(req, "sid"),
                      "csrf", http_request_cookie(req, "csrf"),
                      "x-test", http_request_header(req, "x-TEST"),
                      "addr", http_request_client_address(req),
                      "tls", http_request_is_tls(req),
                      "body", body, size,
                      "size", (json_int_t) size);
        ASSERT_NOT_NULL(j);
        ASSERT_EQ(body[size], '\0');
        ASSERT_OK(http_request_add_header(req, "Set-Cookie", "sid=abc; HttpOnly; Secure; SameSite=Strict"));
        ASSERT_OK(http_request_add_header(req, "WWW-Authenticate", "Bearer"));
        st->bad_header = http_request_add_header(req, "X-Bad", "a\r\nInjected: yes");
        r = http_reply_json(req, 200, j);
        json_decref(j);
        st->add_after_reply = http_request_add_header(req, "X-Late", "1");
        st->second_reply = http_reply_text(req, 200, "again\n");
        return r;
}

static int on_error(HttpRequest *req, void *userdata) {
        ((State *) userdata)->calls++;
        return http_reply_error(req, 409, "conflict", "name \"x\" exists");
}

static int on_text(HttpRequest *req, void *userdata) {
        ((State *) userdata)->calls++;
        return http_reply_text(req, 200, "hello\n");
}

static int on_many_headers(HttpRequest *req, void *userdata) {
        static char names[HTTP_EXTRA_HEADERS_MAX][16]; /* must outlive the reply */

        ((State *) userdata)->calls++;
        for (unsigned i = 0; i < HTTP_EXTRA_HEADERS_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "X-H%u", i);
                ASSERT_OK(http_request_add_header(req, names[i], "v"));
        }
        ASSERT_ERROR(http_request_add_header(req, "X-Over", "v"), E2BIG);
        return http_reply(req, 204, "text/plain", NULL, 0);
}

static const HttpRoute routes[] = {
        { "/echo", HTTP_METHOD_GET | HTTP_METHOD_HEAD | HTTP_METHOD_POST, 64, on_echo },
        { "/error", HTTP_METHOD_GET, 0, on_error },
        { "/text", HTTP_METHOD_GET | HTTP_METHOD_DELETE, 0, on_text },
        { "/tree/", HTTP_METHOD_GET | HTTP_METHOD_PUT | HTTP_METHOD_PATCH, 16, on_echo, .prefix = true },
        { "/many", HTTP_METHOD_GET, 0, on_many_headers },
};

/* A raw HTTP client on the test's event loop: writes the request once connected, reads until the server
 * closes. */
typedef struct Client {
        int fd;
        sd_event_source *source;
        const char *request;
        size_t written;
        char response[16384];
        size_t n;
        bool done;
        int error; /* 0 on a clean EOF, else -errno */
} Client;

static int client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Client *c = userdata;
        ssize_t k;

        if (c->request && c->written < strlen(c->request)) {
                k = send(fd, c->request + c->written, strlen(c->request) - c->written, MSG_NOSIGNAL);
                if (k < 0 && errno == EAGAIN)
                        return 0;
                c->written = k < 0 ? strlen(c->request) : c->written + (size_t) k;
                if (c->written == strlen(c->request))
                        ASSERT_OK(sd_event_source_set_io_events(s, EPOLLIN));
                return 0;
        }

        k = recv(fd, c->response + c->n, sizeof(c->response) - 1 - c->n, 0);
        if (k < 0 && errno == EAGAIN)
                return 0;
        if (k > 0) {
                c->n += (size_t) k;
                ASSERT_LT(c->n, sizeof(c->response) - 1);
                return 0;
        }
        c->error = k < 0 ? -errno : 0;
        c->done = true;
        return sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

static void client_start_family(Client *c, sd_event *e, int family, unsigned port, const char *request) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};

        *c = (Client) { .request = request };
        if (family == AF_INET6)
                sa.in6 = (struct sockaddr_in6) {
                        .sin6_family = AF_INET6, .sin6_port = htons((uint16_t) port),
                        .sin6_addr = IN6ADDR_LOOPBACK_INIT
                };
        else
                sa.in = (struct sockaddr_in) {
                        .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)
                };
        c->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_GE(c->fd, 0);
        if (connect(c->fd, &sa.sa, family == AF_INET6 ? sizeof(sa.in6) : sizeof(sa.in)) < 0)
                ASSERT_EQ(errno, EINPROGRESS);
        ASSERT_OK(sd_event_add_io(e, &c->source, c->fd, request ? EPOLLOUT : EPOLLIN, client_io, c));
}

static void client_done(Client *c) {
        c->source = sd_event_source_disable_unref(c->source);
        if (c->fd >= 0)
                (void) close(c->fd);
        c->fd = -EBADF;
}

static bool client_finished(void *userdata) {
        return ((Client *) userdata)->done;
}

static void run_idle(sd_event *e) {
        for (unsigned i = 0; i < 1000; i++)
                if (ASSERT_OK(sd_event_run(e, 0)) == 0)
                        return;
        test_fail(__FILE__, __LINE__, "event loop never went idle");
}

typedef struct Response {
        int status;
        char headers[4096]; /* each header as "\r\nName: value\r\n", for strstr() */
        char body[8192];
} Response;

static void parse_response(const char *raw, Response *ret) {
        const char *end;

        end = strstr(raw, "\r\n\r\n");
        ASSERT_TRUE(end);
        ASSERT_EQ(sscanf(raw, "HTTP/1.1 %d ", &ret->status), 1);
        ASSERT_LT((size_t) (end - raw), sizeof(ret->headers) - 2);
        snprintf(ret->headers, sizeof(ret->headers), "%.*s\r\n", (int) (end - raw), raw);
        memmove(ret->headers, strchr(ret->headers, '\r'), strlen(strchr(ret->headers, '\r')) + 1);
        snprintf(ret->body, sizeof(ret->body), "%s", end + 4);
}

static void http_family(sd_event *e, int family, unsigned port, const char *request, Response *ret) {
        Client c;

        client_start_family(&c, e, family, port, request);
        ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c, 5 * USEC_PER_SEC));
        if (!(c.error == -ECONNRESET && c.n > 0))
                ASSERT_EQ(c.error, 0);
        client_done(&c);
        c.response[c.n] = '\0';
        parse_response(c.response, ret);
}

static void http(sd_event *e, unsigned port, const char *request, Response *ret) {
        http_family(e, AF_INET, port, request, ret);
}

/* The error envelope, exactly. */
static void assert_envelope(const char *body, const char *code, const char *message) {
        json_t *j, *err;

        j = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
        ASSERT_NOT_NULL(j);
        ASSERT_TRUE(json_is_object(j));
        ASSERT_EQ(json_object_size(j), 1u);
        err = json_object_get(j, "error");
        ASSERT_TRUE(json_is_object(err));
        ASSERT_EQ(json_object_size(err), 2u);
        ASSERT_STREQ(json_string_value(json_object_get(err, "code")), code);
        ASSERT_STREQ(json_string_value(json_object_get(err, "message")), message);
        json_decref(j);
}

static void assert_common_headers(const Response *resp, bool tls) {
        ASSERT_STRSTR(resp->headers, "\r\nCache-Control: no-store\r\n");
        ASSERT_STRSTR(resp->headers, "\r\nX-Content-Type-Options: nosniff\r\n");
        if (tls)
                ASSERT_STRSTR(resp->headers, "\r\nStrict-Transport-Security: " HTTP_HSTS_VALUE "\r\n");
        else
                ASSERT_NULL(strstr(resp->headers, "Strict-Transport-Security"));
}

static HttpServerParams params_for(State *st) {
        return (HttpServerParams) {
                .routes = routes, .n_routes = ELEMENTSOF(routes), .userdata = st, .description = "test-http",
        };
}

static void new_server(sd_event *e, const HttpServerParams *p, HttpServer **ret, unsigned *ret_port) {
        HostPort hp;

        ASSERT_OK(parse_listen_address("127.0.0.1:0", false, &hp));
        ASSERT_OK(http_server_new_bind(e, &hp, p, ret));
        *ret_port = http_server_get_port(*ret);
        ASSERT_GT(*ret_port, 0u);
}

#define REQ(method, path, extra) \
        method " " path " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" extra "\r\n"

TEST(routing) {
        static const struct {
                const char *request;
                int status;
                const char *code; /* error envelope code, or NULL */
                const char *allow;
                bool handled;
        } cases[] = {
                { REQ("GET", "/echo", ""), 200, NULL, NULL, true },
                { REQ("HEAD", "/echo", ""), 200, NULL, NULL, true },
                { REQ("POST", "/echo", "Content-Length: 0\r\n"), 200, NULL, NULL, true },
                { REQ("GET", "/echo?a=1", ""), 200, NULL, NULL, true },
                { REQ("GET", "/echo/", ""), 404, "not_found", NULL, false },
                { REQ("GET", "/ECHO", ""), 404, "not_found", NULL, false },
                { REQ("GET", "/", ""), 404, "not_found", NULL, false },
                { REQ("GET", "/tree", ""), 404, "not_found", NULL, false },
                { REQ("GET", "/tree/", ""), 200, NULL, NULL, true },
                { REQ("GET", "/tree/a/b", ""), 200, NULL, NULL, true },
                { REQ("PATCH", "/tree/a", "Content-Length: 2\r\n") "{}", 200, NULL, NULL, true },
                { REQ("DELETE", "/echo", ""), 405, "method_not_allowed", "GET, HEAD, POST", false },
                { REQ("PUT", "/text", ""), 405, "method_not_allowed", "GET, DELETE", false },
                { REQ("OPTIONS", "/text", ""), 405, "method_not_allowed", "GET, DELETE", false },
                { REQ("BREW", "/text", ""), 405, "method_not_allowed", "GET, DELETE", false },
                { REQ("DELETE", "/tree/x", ""), 405, "method_not_allowed", "GET, PUT, PATCH", false },
                { REQ("DELETE", "/text", ""), 200, NULL, NULL, true },
                { REQ("GET", "/error", ""), 409, "conflict", NULL, true },
                { REQ("GET", "/te%78t", ""), 200, NULL, NULL, true },       /* percent-decoded */
                { REQ("GET", "/text?x=/echo", ""), 200, NULL, NULL, true }, /* the query is not the path */
                { REQ("GET", "/text%3Fx", ""), 404, "not_found", NULL, false },
        };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        unsigned port;

        (void) signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Response resp;
                unsigned before = st.calls;

                CASE("%zu: %.*s", i, (int) strcspn(cases[i].request, "\r"), cases[i].request);
                http(e, port, cases[i].request, &resp);
                ASSERT_EQ(resp.status, cases[i].status);
                ASSERT_EQ(st.calls, before + cases[i].handled);
                assert_common_headers(&resp, false);
                if (strncmp(cases[i].request, "HEAD", 4) == 0)
                        ASSERT_STREQ(resp.body, "");
                else if (cases[i].code) {
                        ASSERT_STRSTR(resp.headers, "\r\nContent-Type: application/json\r\n");
                        assert_envelope(resp.body, cases[i].code,
                                        cases[i].status == 404 ? "not found" :
                                        cases[i].status == 405 ? "method not allowed" : "name \"x\" exists");
                }
                if (cases[i].allow) {
                        char allow[64];

                        snprintf(allow, sizeof(allow), "\r\nAllow: %s\r\n", cases[i].allow);
                        ASSERT_STRSTR(resp.headers, allow);
                } else
                        ASSERT_NULL(strstr(resp.headers, "\r\nAllow:"));
        }
}

TEST(request_parts) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        json_t *j;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        http(e, port,
             REQ("POST", "/echo?a=x%20y&flag&b=2",
                 "Cookie: csrf=t0k; sid=s%3D1\r\nX-Test: v1\r\nContent-Type: application/json\r\n"
                 "Content-Length: 14\r\n") "{\"k\":\"\\u00e9\"}",
             &resp);
        ASSERT_EQ(resp.status, 200);
        assert_common_headers(&resp, false);
        ASSERT_STRSTR(resp.headers, "\r\nContent-Type: application/json\r\n");
        ASSERT_STRSTR(resp.headers, "\r\nSet-Cookie: sid=abc; HttpOnly; Secure; SameSite=Strict\r\n");
        ASSERT_STRSTR(resp.headers, "\r\nWWW-Authenticate: Bearer\r\n");
        ASSERT_NULL(strstr(resp.headers, "Injected"));
        ASSERT_NULL(strstr(resp.headers, "X-Late"));
        ASSERT_NULL(strstr(resp.body, "again"));
        ASSERT_EQ(st.bad_header, -EINVAL);
        ASSERT_EQ(st.add_after_reply, -EALREADY);
        ASSERT_EQ(st.second_reply, -EALREADY);

        /* Compact JSON: no space after ':' or ','. */
        ASSERT_NULL(strstr(resp.body, "\": "));
        ASSERT_NULL(strstr(resp.body, ", "));
        j = json_loads(resp.body, 0, NULL);
        ASSERT_NOT_NULL(j);
        ASSERT_STREQ(json_string_value(json_object_get(j, "method")), "POST");
        ASSERT_STREQ(json_string_value(json_object_get(j, "path")), "/echo");
        ASSERT_STREQ(json_string_value(json_object_get(j, "a")), "x y");
        ASSERT_STREQ(json_string_value(json_object_get(j, "flag")), "");
        ASSERT_STREQ(json_string_value(json_object_get(j, "sid")), "s%3D1"); /* cookies are not decoded */
        ASSERT_STREQ(json_string_value(json_object_get(j, "csrf")), "t0k");
        ASSERT_STREQ(json_string_value(json_object_get(j, "x-test")), "v1");
        ASSERT_STREQ(json_string_value(json_object_get(j, "addr")), "127.0.0.1");
        ASSERT_TRUE(json_is_false(json_object_get(j, "tls")));
        ASSERT_STREQ(json_string_value(json_object_get(j, "body")), "{\"k\":\"\\u00e9\"}");
        ASSERT_EQ(json_integer_value(json_object_get(j, "size")), 14);
        json_decref(j);

        /* Absent parts are NULL (JSON null here). */
        http(e, port, REQ("GET", "/echo", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        j = json_loads(resp.body, 0, NULL);
        ASSERT_NOT_NULL(j);
        ASSERT_TRUE(json_is_null(json_object_get(j, "a")));
        ASSERT_TRUE(json_is_null(json_object_get(j, "flag")));
        ASSERT_TRUE(json_is_null(json_object_get(j, "sid")));
        ASSERT_TRUE(json_is_null(json_object_get(j, "x-test")));
        ASSERT_STREQ(json_string_value(json_object_get(j, "body")), "");
        ASSERT_EQ(json_integer_value(json_object_get(j, "size")), 0);
        json_decref(j);

        /* Up to HTTP_EXTRA_HEADERS_MAX extra headers, an empty body. */
        http(e, port, REQ("GET", "/many", ""), &resp);
        ASSERT_EQ(resp.status, 204);
        ASSERT_STRSTR(resp.headers, "\r\nX-H0: v\r\n");
        ASSERT_NULL(strstr(resp.headers, "X-Over"));
}

TEST(client_address_ipv6) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        HostPort hp;
        json_t *j;
        int r;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(parse_listen_address("[::1]:0", false, &hp));
        r = http_server_new_bind(e, &hp, &p, &s);
        if (r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT)
                return; /* no IPv6 loopback here */
        ASSERT_OK(r);
        http_family(e, AF_INET6, http_server_get_port(s), REQ("GET", "/echo", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        j = json_loads(resp.body, 0, NULL);
        ASSERT_NOT_NULL(j);
        ASSERT_STREQ(json_string_value(json_object_get(j, "addr")), "::1");
        json_decref(j);
}

TEST(handler_failures) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        st.fail = -EIO;
        http(e, port, REQ("GET", "/echo", ""), &resp);
        ASSERT_EQ(resp.status, 500);
        assert_envelope(resp.body, "internal_error", "internal error");
        assert_common_headers(&resp, false);

        st.fail = 0;
        st.no_reply = true;
        http(e, port, REQ("GET", "/echo", ""), &resp);
        ASSERT_EQ(resp.status, 500);
        assert_envelope(resp.body, "internal_error", "internal error");
        ASSERT_EQ(st.calls, 2u);
}

TEST(body_limits) {
        static char big[70];
        static char request[512];
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        unsigned port;
        json_t *j;

        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        /* Exactly the limit (64) is accepted. */
        memset(big, 'b', 64);
        snprintf(request, sizeof(request), REQ("POST", "/echo", "Content-Length: 64\r\n") "%.64s", big);
        http(e, port, request, &resp);
        ASSERT_EQ(resp.status, 200);
        j = json_loads(resp.body, 0, NULL);
        ASSERT_EQ(json_integer_value(json_object_get(j, "size")), 64);
        json_decref(j);

        /* One more, announced: refused before reading, the handler never runs. */
        st.calls = 0;
        memset(big, 'b', 65);
        snprintf(request, sizeof(request), REQ("POST", "/echo", "Content-Length: 65\r\n") "%.65s", big);
        http(e, port, request, &resp);
        ASSERT_EQ(resp.status, 413);
        assert_envelope(resp.body, "body_too_large", "request body too large");
        assert_common_headers(&resp, false);

        /* Chunked within the limit: accumulated. */
        http(e, port,
             REQ("POST", "/echo", "Transfer-Encoding: chunked\r\n") "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
             &resp);
        ASSERT_EQ(resp.status, 200);
        j = json_loads(resp.body, 0, NULL);
        ASSERT_STREQ(json_string_value(json_object_get(j, "body")), "hello world");
        json_decref(j);
        ASSERT_EQ(st.calls, 1u);

        /* Chunked beyond it (the /tree/ routes take 16 bytes): 413 once the body is over. */
        http(e, port,
             REQ("PUT", "/tree/x", "Transfer-Encoding: chunked\r\n")
                     "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
             &resp);
        ASSERT_EQ(resp.status, 413);
        assert_envelope(resp.body, "body_too_large", "request body too large");
        ASSERT_EQ(st.calls, 1u);

        /* A route without a body, an unknown path, a method not allowed: no body at all. */
        http(e, port, REQ("GET", "/text", "Content-Length: 1\r\n") "x", &resp);
        ASSERT_EQ(resp.status, 413);
        assert_envelope(resp.body, "body_too_large", "request body not accepted");
        http(e, port, REQ("POST", "/nowhere", "Content-Length: 1\r\n") "x", &resp);
        ASSERT_EQ(resp.status, 413);
        http(e, port, REQ("DELETE", "/echo", "Transfer-Encoding: chunked\r\n") "1\r\nx\r\n0\r\n\r\n", &resp);
        ASSERT_EQ(resp.status, 413);
        ASSERT_EQ(st.calls, 1u);

        /* And the server carries on. */
        http(e, port, REQ("GET", "/text", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_STREQ(resp.body, "hello\n");
}

/* A chunked body far beyond the limit is not read forever: past the discard allowance the connection is
 * closed without an answer. */
TEST(body_discard_cap) {
        static char request[1300 * 1024];
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        Client c;
        unsigned port;
        int n;

        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        n = snprintf(request, sizeof(request),
                     REQ("PUT", "/tree/x", "Transfer-Encoding: chunked\r\n") "%x\r\n", 1200U * 1024U);
        memset(request + n, 'z', 1200U * 1024U);
        strcpy(request + n + 1200U * 1024U, "\r\n0\r\n\r\n");
        client_start_family(&c, e, AF_INET, port, request);
        ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c, 5 * USEC_PER_SEC));
        ASSERT_EQ(c.n, 0u);
        client_done(&c);
        ASSERT_EQ(st.calls, 0u);

        http(e, port, REQ("GET", "/text", ""), &resp);
        ASSERT_EQ(resp.status, 200);
}

/* Several requests on one connection: each gets its own request state. */
TEST(keep_alive) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Client c;
        Response resp;
        const char *second;
        unsigned port;
        json_t *j;

        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        client_start_family(&c, e, AF_INET, port,
                            "POST /echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                            "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c, 5 * USEC_PER_SEC));
        ASSERT_EQ(c.error, 0);
        client_done(&c);
        c.response[c.n] = '\0';
        ASSERT_EQ(st.calls, 2u);

        second = strstr(c.response + 1, "HTTP/1.1 200");
        ASSERT_NOT_NULL(second);
        parse_response(second, &resp);
        j = json_loads(resp.body, 0, NULL);
        ASSERT_NOT_NULL(j);
        ASSERT_STREQ(json_string_value(json_object_get(j, "method")), "GET");
        ASSERT_TRUE(json_is_null(json_object_get(j, "a")));
        ASSERT_STREQ(json_string_value(json_object_get(j, "body")), "");
        json_decref(j);

        ((char *) second)[0] = '\0';
        parse_response(c.response, &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_STRSTR(resp.body, "\"body\":\"abc\"");
        ASSERT_STRSTR(resp.body, "\"a\":\"1\"");
}

TEST(header_limit) {
        static char request[32 * 1024];
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        unsigned port;

        p.memory_max = 8 * 1024;
        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        snprintf(request, sizeof(request), "GET /text HTTP/1.1\r\nHost: localhost\r\nX-Pad: %0*d\r\n\r\n",
                 (int) sizeof(request) / 2, 0);
        http(e, port, request, &resp);
        ASSERT_EQ(resp.status, 431);
        ASSERT_EQ(st.calls, 0u);

        /* Headers that fit are fine. */
        snprintf(request, sizeof(request),
                 "GET /text HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Pad: %0*d\r\n\r\n",
                 2048, 0);
        http(e, port, request, &resp);
        ASSERT_EQ(resp.status, 200);
}

TEST(text_errors) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Response resp;
        unsigned port;

        p.errors_as_text = true;
        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        http(e, port, REQ("GET", "/nowhere", ""), &resp);
        ASSERT_EQ(resp.status, 404);
        ASSERT_STREQ(resp.body, "not found\n");
        ASSERT_STRSTR(resp.headers, "\r\nContent-Type: text/plain; charset=utf-8\r\n");
        http(e, port, REQ("PUT", "/text", ""), &resp);
        ASSERT_EQ(resp.status, 405);
        ASSERT_STREQ(resp.body, "method not allowed\n");
}

TEST(connection_limit) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Client idle[4], extra;
        Response resp;
        unsigned port;

        p.connections_max = ELEMENTSOF(idle);
        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        for (unsigned round = 0; round < 2; round++) {
                CASE("round %u", round);
                for (size_t i = 0; i < ELEMENTSOF(idle); i++)
                        client_start_family(&idle[i], e, AF_INET, port, NULL);
                run_idle(e);

                /* One too many: closed at once, without an answer. */
                client_start_family(&extra, e, AF_INET, port, REQ("GET", "/text", ""));
                ASSERT_TRUE(fixture_run_until_func(e, client_finished, &extra, 5 * USEC_PER_SEC));
                ASSERT_EQ(extra.n, 0u);
                client_done(&extra);

                for (size_t i = 0; i < ELEMENTSOF(idle); i++) {
                        ASSERT_FALSE(idle[i].done);
                        client_done(&idle[i]);
                }
                run_idle(e);

                http(e, port, REQ("GET", "/text", ""), &resp);
                ASSERT_EQ(resp.status, 200);
        }
}

TEST(idle_timeout) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        Client c;
        usec_t start;
        unsigned port;

        p.timeout_sec = 1;
        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        start = now(CLOCK_MONOTONIC);
        client_start_family(&c, e, AF_INET, port, "GET /text HTTP/1.1\r\nHost: loc");
        ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c, 5 * USEC_PER_SEC));
        ASSERT_EQ(c.n, 0u);
        ASSERT_GE(now(CLOCK_MONOTONIC) - start, 900 * USEC_PER_MSEC);
        client_done(&c);
}

TEST(params) {
        static const HttpRoute too_big[] = { { "/x", HTTP_METHOD_POST, HTTP_BODY_MAX_LIMIT + 1, on_text } };
        static const HttpRoute no_handler[] = { { "/x", HTTP_METHOD_GET, 0, NULL } };
        static const HttpRoute no_path[] = { { "", HTTP_METHOD_GET, 0, on_text } };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        State st = {};
        HttpServer *s = (HttpServer *) &st;
        HttpServerParams p;
        HostPort hp;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(parse_listen_address("127.0.0.1:0", false, &hp));

        p = params_for(&st);
        p.n_routes = 0;
        ASSERT_ERROR(http_server_new_bind(e, &hp, &p, &s), EINVAL);
        p = (HttpServerParams) { .routes = too_big, .n_routes = 1 };
        ASSERT_ERROR(http_server_new_bind(e, &hp, &p, &s), EINVAL);
        p = (HttpServerParams) { .routes = no_handler, .n_routes = 1 };
        ASSERT_ERROR(http_server_new_bind(e, &hp, &p, &s), EINVAL);
        p = (HttpServerParams) { .routes = no_path, .n_routes = 1 };
        ASSERT_ERROR(http_server_new_bind(e, &hp, &p, &s), EINVAL);
        p = params_for(&st);
        p.tls_cert_pem = "x";
        ASSERT_ERROR(http_server_new_bind(e, &hp, &p, &s), EINVAL);
        p = params_for(&st);
        ASSERT_ERROR(http_server_new_fd(e, -EBADF, &p, &s), EBADF);
        ASSERT_TRUE(s == (HttpServer *) &st); /* untouched on failure */
        ASSERT_NULL(http_server_free(NULL));
}

/* Socket activation: the caller's fd stays open and usable across servers. */
TEST(caller_fd) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        HttpServer *s = NULL;
        Response resp;
        HostPort hp;
        int fd;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(parse_listen_address("127.0.0.1:0", false, &hp));
        ASSERT_OK(listen_bind(&hp, 16, &fd));

        for (unsigned i = 0; i < 2; i++) {
                CASE("server %u", i);
                ASSERT_OK(http_server_new_fd(e, fd, &p, &s));
                port = http_server_get_port(s);
                ASSERT_GT(port, 0u);
                http(e, port, REQ("GET", "/text", ""), &resp);
                ASSERT_EQ(resp.status, 200);
                ASSERT_NULL(http_server_free(s));
                ASSERT_GE(fcntl(fd, F_GETFD), 0);
        }
        ASSERT_EQ(close(fd), 0);
}

/* TLS: a certificate chain from certgen, an OpenSSL client driven alongside the loop. */

static char *pem_of(X509 *a, X509 *b, EVP_PKEY *key) {
        BIO *bio = BIO_new(BIO_s_mem());
        char *data, *s;
        long n;

        ASSERT_NOT_NULL(bio);
        if (a)
                ASSERT_TRUE(PEM_write_bio_X509(bio, a));
        if (b)
                ASSERT_TRUE(PEM_write_bio_X509(bio, b));
        if (key)
                ASSERT_TRUE(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL));
        n = BIO_get_mem_data(bio, &data);
        ASSERT_GT(n, 0);
        s = malloc((size_t) n + 1); /* not strndup(): the BIO's data is not NUL-terminated */
        ASSERT_NOT_NULL(s);
        memcpy(s, data, (size_t) n);
        s[n] = '\0';
        BIO_free(bio);
        return s;
}

typedef struct TlsResult {
        bool handshake;
        int version;
        char cipher[64];
        X509 *peer;
        char error[256]; /* the OpenSSL error when the handshake failed */
        char response[8192];
} TlsResult;

/* Connects with TLS limited to [min, max], sends request, reads until close. */
static void tls_http(sd_event *e, unsigned port, X509 *root, int min, int max, const char *request,
                     TlsResult *ret) {
        SSL_CTX *ctx;
        SSL *ssl;
        int fd, k;
        size_t n = 0, written = 0;
        bool connected = false;
        usec_t deadline = now(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;

        *ret = (TlsResult) {};
        ctx = SSL_CTX_new(TLS_client_method());
        ASSERT_NOT_NULL(ctx);
        SSL_CTX_set_security_level(ctx, 0); /* so that TLS 1.1 is offered at all */
        ASSERT_TRUE(SSL_CTX_set_min_proto_version(ctx, min));
        ASSERT_TRUE(SSL_CTX_set_max_proto_version(ctx, max));
        ASSERT_TRUE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), root));
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ssl = SSL_new(ctx);
        ASSERT_NOT_NULL(ssl);
        fd = fixture_connect((uint16_t) port);
        ASSERT_GE(fd, 0);
        ASSERT_TRUE(SSL_set_fd(ssl, fd));

        while (now(CLOCK_MONOTONIC) < deadline) {
                ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
                ERR_clear_error();
                if (!connected) {
                        k = SSL_connect(ssl);
                        if (k == 1) {
                                connected = true;
                                ret->handshake = true;
                                ret->version = SSL_version(ssl);
                                snprintf(ret->cipher, sizeof(ret->cipher), "%s", SSL_get_cipher_name(ssl));
                                ret->peer = SSL_get1_peer_certificate(ssl);
                        } else if (SSL_get_error(ssl, k) != SSL_ERROR_WANT_READ &&
                                   SSL_get_error(ssl, k) != SSL_ERROR_WANT_WRITE) {
                                ERR_error_string_n(ERR_peek_last_error(), ret->error, sizeof(ret->error));
                                break;
                        }
                        continue;
                }
                if (written < strlen(request)) {
                        k = SSL_write(ssl, request + written, (int) (strlen(request) - written));
                        if (k > 0)
                                written += (size_t) k;
                        continue;
                }
                k = SSL_read(ssl, ret->response + n, (int) (sizeof(ret->response) - 1 - n));
                if (k > 0)
                        n += (size_t) k;
                else if (SSL_get_error(ssl, k) != SSL_ERROR_WANT_READ)
                        break;
        }
        ret->response[n] = '\0';
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        ERR_clear_error();
}

TEST(tls) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        _cleanup_free_ char *cert = NULL, *key = NULL, *cert2 = NULL, *key2 = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        CertgenChain chain, chain2;
        TlsResult t;
        Response resp;
        unsigned port;
        json_t *j;

        ASSERT_OK(certgen_chain_make("example.org", "spiffe://example.org/controller", &chain));
        cert = pem_of(chain.leaf, chain.intermediate, NULL);
        key = pem_of(NULL, NULL, chain.leaf_key);
        p.tls_cert_pem = cert;
        p.tls_key_pem = key;
        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);

        CASE("TLS 1.3");
        tls_http(e, port, chain.root, TLS1_VERSION, TLS1_3_VERSION, REQ("GET", "/echo", ""), &t);
        ASSERT_TRUE(t.handshake);
        ASSERT_EQ(t.version, TLS1_3_VERSION);
        ASSERT_EQ(X509_cmp(t.peer, chain.leaf), 0);
        X509_free(t.peer);
        parse_response(t.response, &resp);
        ASSERT_EQ(resp.status, 200);
        assert_common_headers(&resp, true);
        j = json_loads(resp.body, 0, NULL);
        ASSERT_NOT_NULL(j);
        ASSERT_TRUE(json_is_true(json_object_get(j, "tls")));
        json_decref(j);

        CASE("TLS 1.2, AEAD with forward secrecy");
        tls_http(e, port, chain.root, TLS1_2_VERSION, TLS1_2_VERSION, REQ("GET", "/error", ""), &t);
        ASSERT_TRUE(t.handshake);
        ASSERT_EQ(t.version, TLS1_2_VERSION);
        ASSERT_STRSTR(t.cipher, "ECDHE-ECDSA-");
        ASSERT_TRUE(strstr(t.cipher, "GCM") || strstr(t.cipher, "CHACHA20"));
        X509_free(t.peer);
        parse_response(t.response, &resp);
        ASSERT_EQ(resp.status, 409);
        assert_common_headers(&resp, true);
        assert_envelope(resp.body, "conflict", "name \"x\" exists");

        CASE("TLS 1.1 refused");
        tls_http(e, port, chain.root, TLS1_1_VERSION, TLS1_1_VERSION, REQ("GET", "/text", ""), &t);
        ASSERT_FALSE(t.handshake);
        /* Refused by the server (libmicrohttpd closes on a failed handshake), not by our own client,
         * which would fail with "no protocols available" before sending anything. */
        ASSERT_TRUE(strstr(t.error, "unexpected eof") || strstr(t.error, "alert protocol version"));

        CASE("plain HTTP on the TLS port gets nothing");
        {
                Client c;

                client_start_family(&c, e, AF_INET, port, REQ("GET", "/text", ""));
                ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c, 5 * USEC_PER_SEC));
                c.response[c.n] = '\0';
                ASSERT_NULL(strstr(c.response, "HTTP/1.1 200"));
                client_done(&c);
        }

        CASE("certificate swap");
        ASSERT_OK(certgen_chain_make("example.org", "spiffe://example.org/controller", &chain2));
        cert2 = pem_of(chain2.leaf, chain2.intermediate, NULL);
        key2 = pem_of(NULL, NULL, chain2.leaf_key);
        ASSERT_ERROR(http_server_set_certificate(s, cert2, NULL), EINVAL);
        ASSERT_ERROR(http_server_set_certificate(s, cert2, key), EIO); /* key does not match */
        tls_http(e, port, chain.root, TLS1_3_VERSION, TLS1_3_VERSION, REQ("GET", "/text", ""), &t);
        ASSERT_TRUE(t.handshake); /* the old pair still serves */
        ASSERT_EQ(X509_cmp(t.peer, chain.leaf), 0);
        X509_free(t.peer);
        ASSERT_OK(http_server_set_certificate(s, cert2, key2));
        ASSERT_EQ(http_server_get_port(s), port);
        tls_http(e, port, chain2.root, TLS1_3_VERSION, TLS1_3_VERSION, REQ("GET", "/text", ""), &t);
        ASSERT_TRUE(t.handshake);
        ASSERT_EQ(X509_cmp(t.peer, chain2.leaf), 0);
        X509_free(t.peer);
        parse_response(t.response, &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_STREQ(resp.body, "hello\n");

        CASE("unusable pair at creation");
        {
                HttpServer *bad = NULL;
                HostPort hp;

                p.tls_key_pem = key2; /* does not match cert */
                ASSERT_OK(parse_listen_address("127.0.0.1:0", false, &hp));
                ASSERT_ERROR(http_server_new_bind(e, &hp, &p, &bad), EIO);
                ASSERT_NULL(bad);
                ASSERT_ERROR(http_server_set_certificate(bad ?: s, "garbage", "garbage"), EIO);
        }

        certgen_chain_done(&chain);
        certgen_chain_done(&chain2);
}

TEST(set_certificate_plain) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        State st = {};
        HttpServerParams p = params_for(&st);
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_server(e, &p, &s, &port);
        ASSERT_ERROR(http_server_set_certificate(s, "a", "b"), EINVAL);
}
