/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The HTTP server shared by the agents' health listener and the controller's admin API: libmicrohttpd
 * driven from the sd-event loop (MHD_USE_EPOLL, its epoll fd watched by an IO source, MHD_get_timeout()
 * by a timer), no threads; optional TLS through libmicrohttpd's own GnuTLS support.
 *
 *   static const HttpRoute routes[] = {
 *           { "/healthz", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, on_healthz },
 *           { "/api/v1/tokens", HTTP_METHOD_GET | HTTP_METHOD_POST, 64 * 1024, on_tokens },
 *           { "/api/v1/agents/", HTTP_METHOD_GET | HTTP_METHOD_DELETE, 0, on_agent, .prefix = true },
 *   };
 *   HttpServerParams p = { .routes = routes, .n_routes = ELEMENTSOF(routes), .userdata = m };
 *   r = http_server_new_fd(event, admin_fd, &p, &server);      socket activation: the fd stays the caller's
 *   r = http_server_new_bind(event, &config->admin_address, &p, &server);   or bind it here
 *
 * A request reaches its route's handler once, complete (headers and the whole body). The handler answers
 * at once with exactly one http_reply*() call; asynchronous replies are not supported. A handler that
 * returns without replying, or returns < 0, makes the server answer 500.
 *
 * Answered by the server itself, before any handler (in this order):
 *   413 a body larger than the route's body_max: announced by Content-Length, refused before reading it;
 *       chunked beyond it, the body is accumulated up to the limit only, the rest read and dropped (up to
 *       1 MiB, past that the connection is closed without an answer). A path no route matches, or a method
 *       the route does not allow, accepts no body at all;
 *   404 no route matches the path; 405 the route does not allow the method (with Allow:);
 *   431 the request line and headers do not fit the per-connection memory pool (libmicrohttpd's own
 *       answer, text/html);
 *   500 the handler did not reply.
 * Those bodies are the JSON error envelope {"error":{"code":"…","message":"…"}}, or a line of text with
 * errors_as_text.
 *
 * Every response carries Cache-Control: no-store and X-Content-Type-Options: nosniff, and over TLS
 * Strict-Transport-Security. A route that lists HEAD gets HEAD requests and answers them like GET:
 * libmicrohttpd sends the headers (Content-Length included) without the body.
 *
 * The server must not be freed, nor its certificate swapped, from inside one of its handlers.
 *
 * Bounded: connections_max connections at once (one more is accepted and closed at once, so a client
 * fails fast instead of waiting in the backlog), timeout_sec of inactivity per connection, memory_max
 * bytes of pool per connection (request line + headers), body_max per route. Nothing here logs above
 * debug. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "parse-util.h"

#define HTTP_CONNECTIONS_MAX_DEFAULT 64U
#define HTTP_TIMEOUT_SEC_DEFAULT 30U
#define HTTP_MEMORY_MAX_DEFAULT (32U * 1024U)
/* Largest body_max a route may declare. */
#define HTTP_BODY_MAX_LIMIT (16U * 1024U * 1024U)
/* Extra headers a handler may add to one response. */
#define HTTP_EXTRA_HEADERS_MAX 8U
/* Longest client address text: an IPv6 literal. */
#define HTTP_ADDRESS_STRING_MAX 46U
/* Strict-Transport-Security on every TLS response. */
#define HTTP_HSTS_VALUE "max-age=31536000"
/* GnuTLS priorities: TLS 1.3 and 1.2 only, forward-secret key exchange, AEAD ciphers only. */
#define HTTP_TLS_PRIORITIES                                                                              \
        "NONE:+VERS-TLS1.3:+VERS-TLS1.2:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:+AEAD:"             \
        "+ECDHE-ECDSA:+ECDHE-RSA:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+SIGN-ALL:+COMP-NULL:" \
        "+CTYPE-X509:%SERVER_PRECEDENCE"

typedef enum HttpMethod {
        HTTP_METHOD_GET = 1U << 0,
        HTTP_METHOD_HEAD = 1U << 1,
        HTTP_METHOD_POST = 1U << 2,
        HTTP_METHOD_PUT = 1U << 3,
        HTTP_METHOD_PATCH = 1U << 4,
        HTTP_METHOD_DELETE = 1U << 5,
        HTTP_METHOD_OPTIONS = 1U << 6,
} HttpMethod;

typedef struct HttpServer HttpServer;
typedef struct HttpRequest HttpRequest;

/* userdata is HttpServerParams.userdata. Returns ≥ 0 after one http_reply*() call; < 0 (nothing sent
 * yet) makes the server answer 500. */
typedef int (*HttpHandler)(HttpRequest *req, void *userdata);

typedef struct HttpRoute {
        /* exact path, or with prefix every path that starts with it (the handler parses the rest: paths
         * are not normalised, "/a/../b" arrives as is) */
        const char *path;
        unsigned methods;   /* HttpMethod bits; lists the Allow: header of a 405 */
        size_t body_max;    /* largest request body accepted; 0: none */
        HttpHandler handler;
        bool prefix;
} HttpRoute;

typedef struct HttpServerParams {
        const HttpRoute *routes; /* matched in order; the array must outlive the server */
        size_t n_routes;
        void *userdata;
        unsigned connections_max; /* 0: HTTP_CONNECTIONS_MAX_DEFAULT */
        unsigned timeout_sec;     /* 0: HTTP_TIMEOUT_SEC_DEFAULT */
        size_t memory_max;        /* 0: HTTP_MEMORY_MAX_DEFAULT */
        bool errors_as_text;      /* the server's own errors as "not found\n" (text/plain), not JSON */
        /* TLS when both are set: the certificate chain (leaf first) and its private key, PEM, copied. */
        const char *tls_cert_pem;
        const char *tls_key_pem;
        const char *description;  /* of the event sources; NULL: "http" */
} HttpServerParams;

/* Serves on a listening socket the caller keeps owning (socket activation): the server works on a dup
 * of it, so freeing the server never closes fd, and a new server can later be made on the same fd.
 * Errors: -EINVAL (bad params: no routes, a route body_max above HTTP_BODY_MAX_LIMIT, only one of the
 * TLS PEMs), -EOPNOTSUPP (TLS asked for, libmicrohttpd built without it), -EBADF and other dup() errors,
 * -ENOMEM, -EIO (libmicrohttpd refused to start, e.g. an unusable certificate or key). */
int http_server_new_fd(sd_event *event, int fd, const HttpServerParams *params, HttpServer **ret);
/* Binds addr (an address literal; port 0 for an ephemeral port) and serves on it; the socket is the
 * server's. Errors as above, and listen_bind()'s (-EINVAL for a name, -EADDRINUSE, …). */
int http_server_new_bind(sd_event *event, const HostPort *addr, const HttpServerParams *params,
                         HttpServer **ret);
/* Stops serving: open connections are closed, the socket too if the server bound it. */
HttpServer *http_server_free(HttpServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);

/* The bound port (useful after port 0); 0 when unknown. */
unsigned http_server_get_port(const HttpServer *s);

/* Replaces the certificate and key of a TLS server (renewal). libmicrohttpd cannot swap credentials in
 * place, so this starts a new daemon on another dup of the same listening socket and, once it runs,
 * stops the old one: connections open at that moment are closed (clients reconnect), new ones get the
 * new certificate. On failure the old daemon keeps serving and the error is returned (-EINVAL when the
 * server is not TLS or a PEM is missing, -EIO when the new pair is refused, -ENOMEM). */
int http_server_set_certificate(HttpServer *s, const char *cert_pem, const char *key_pem);

/* The request, valid during the handler call. */
HttpMethod http_request_method(const HttpRequest *req); /* 0 for any other method */
const char *http_request_method_string(const HttpRequest *req);
const char *http_request_path(const HttpRequest *req);   /* percent-decoded, without the query */
const HttpRoute *http_request_route(const HttpRequest *req);
/* NULL when absent. Header names are case-insensitive; a query parameter without '=' gives "". */
const char *http_request_query(const HttpRequest *req, const char *name);
const char *http_request_header(const HttpRequest *req, const char *name);
const char *http_request_cookie(const HttpRequest *req, const char *name);
/* The body (NUL-terminated for convenience, the NUL not counted) and its size; "" and 0 without one. */
const char *http_request_body(const HttpRequest *req, size_t *ret_size);
/* The peer's address as text, "192.0.2.1" or "2001:db8::1" (an IPv4-mapped IPv6 peer as IPv4); "" if
 * unknown. */
const char *http_request_client_address(const HttpRequest *req);
bool http_request_is_tls(const HttpRequest *req);

/* Adds a header to the coming reply (Set-Cookie, WWW-Authenticate, Allow, …); at most
 * HTTP_EXTRA_HEADERS_MAX. -E2BIG beyond, -EINVAL for a name or value holding CR or LF, -EALREADY after
 * the reply. name and value must stay valid until the reply. */
int http_request_add_header(HttpRequest *req, const char *name, const char *value);

/* Exactly one reply per request; a second one gives -EALREADY. -ENOMEM, or -EIO when libmicrohttpd
 * refuses the response. */
int http_reply(HttpRequest *req, unsigned status, const char *content_type, const void *body, size_t size);
/* text/plain; charset=utf-8 */
int http_reply_text(HttpRequest *req, unsigned status, const char *text);
/* application/json, compact. */
int http_reply_json(HttpRequest *req, unsigned status, const json_t *json);
/* {"error":{"code":code,"message":message}} with status. */
int http_reply_error(HttpRequest *req, unsigned status, const char *code, const char *message);
