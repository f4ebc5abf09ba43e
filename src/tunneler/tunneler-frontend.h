/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The tunneler's local front-ends (DESIGN.md §1): how applications on this host ask for a resource. Each
 * accepted local connection becomes one tunneler_dataplane_connect().
 *
 *   forward    Forward=LISTEN=TARGET: every connection to LISTEN goes to TARGET at once; a synchronous
 *              refusal of the data plane closes it with a reset (SO_LINGER 0), a later one is the data
 *              plane's to close.
 *   SOCKS5     RFC 1928, no authentication (method 0x00; anything else gets 0xFF), CONNECT only (BIND
 *              and UDP ASSOCIATE: reply 0x07), address types IPv4, IPv6 and domain name (another ATYP:
 *              0x08). Replies: 0x00 succeeded (after the connector's 200), 0x02 not allowed by ruleset
 *              (no resource, 403), 0x04 host unreachable (502, no connector), 0x06 TTL expired (504),
 *              0x01 general failure otherwise (429, a malformed request, too many waiting requests); the
 *              bound address in replies is 0.0.0.0:0. A greeting that is not SOCKS5 is closed unanswered.
 *   HTTP       an HTTP/1.1 CONNECT proxy: "CONNECT host:port HTTP/1.1" (or HTTP/1.0) plus headers up to an
 *              empty line; "HTTP/1.1 200 Connection established", or 403, 502, 504, 429, 503 with a short
 *              text body and the connection closed; other methods 405 (with "Allow: CONNECT"), another
 *              HTTP version 505, a malformed request 400, a request head over FRONTEND_HEAD_MAX 431, no
 *              complete head within the handshake timeout 408. Lines end in CRLF only: a bare LF or CR,
 *              obs-fold, whitespace before a header's colon and control characters are malformed (400).
 *              Headers are checked for syntax and otherwise ignored (no proxy authentication).
 *
 * Synchronous refusals of tunneler_dataplane_connect() are answered here: -EACCES 0x02 / 403,
 * -EHOSTUNREACH 0x04 / 502, -EBUSY 0x01 / 503, -EINVAL 0x01 / 400, anything else 0x01 / 502.
 *
 * Parsing is incremental and bounded: a client has FRONTEND_HANDSHAKE_TIMEOUT to send its request and at
 * most FRONTEND_HEAD_MAX bytes of it; bytes it sends after the request (pipelined data) are refused rather
 * than lost (SOCKS: the request must be the last thing before the reply, 0x01; HTTP: the same, 400) —
 * bytes that arrive after the request was read stay in the socket and are relayed. A SOCKS client may
 * send its request right behind its greeting. At most FRONTEND_CONNECTIONS_MAX local connections are in
 * the handshake at once per listener (more wait in the kernel's backlog); once a connection is handed to
 * the data plane it no longer counts. Listeners bind loopback addresses only (127.0.0.0/8, ::1; the
 * configuration guarantees it and this checks it again). The SOCKS and HTTP request parsers are exposed
 * for tests and fuzzing. Nothing here logs above debug except listener failures at run time, which have no
 * caller to report to: a warning when accept() pauses (out of fds), an error when a listener gives up. */

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "parse-util.h"
#include "time-util.h"
#include "tunneler-dataplane.h"

#define FRONTEND_HEAD_MAX 8192U
#define FRONTEND_HANDSHAKE_TIMEOUT (10 * USEC_PER_SEC)
#define FRONTEND_CONNECTIONS_MAX 256U
/* Forward= entries accepted (the configuration allows AGENT_FORWARDS_MAX). */
#define FRONTEND_FORWARDS_MAX 64U

typedef struct TunnelerFrontends TunnelerFrontends;

/* The signature of tunneler_dataplane_connect(). */
typedef int (*TunnelerConnectFunction)(TunnelerDataPlane *d, const char *host, uint16_t port, int fd,
                                       TunnelerResultCallback on_result, void *userdata);

typedef struct TunnelerFrontendSettings {
        char **forwards;                /* "LISTEN=TARGET" strv (agent-conf.h canonical form) */
        const char *socks_listen;       /* NULL: none */
        const char *http_proxy_listen;  /* NULL: none */
        /* 0: FRONTEND_HANDSHAKE_TIMEOUT. Tests shorten it. */
        usec_t handshake_timeout;
        /* NULL: tunneler_dataplane_connect(). Tests put a fake data plane here (dp is then passed through
         * untouched, it may point at the fake); the daemon leaves it NULL. It must honour the contract of
         * tunneler_dataplane_connect(): on 0 it owns fd and calls on_result later from the event loop, on
         * an error fd stays ours. */
        TunnelerConnectFunction connect;
} TunnelerFrontendSettings;

/* Binds every configured listener (all or nothing). LISTEN addresses are loopback "IP:port" literals,
 * port 0 meaning an ephemeral port (see the *_address() getters). Errors: those of listen_bind()
 * (-EADDRINUSE, …); -EINVAL for a malformed or non-loopback listen address or a malformed entry; -E2BIG
 * for more than FRONTEND_FORWARDS_MAX forwards. dp: borrowed, must outlive the front-ends; on_result
 * callbacks of the data plane never point into this object, so either may be freed first. */
int tunneler_frontends_new(sd_event *event, TunnelerDataPlane *dp, const TunnelerFrontendSettings *settings,
                           TunnelerFrontends **ret);
/* Closes the listeners and the connections still in their handshake. NULL allowed. */
TunnelerFrontends *tunneler_frontends_free(TunnelerFrontends *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(TunnelerFrontends *, tunneler_frontends_free);

/* The bound "IP:port" of the SOCKS / HTTP listener (useful with port 0), NULL when none. */
const char *tunneler_frontends_socks_address(const TunnelerFrontends *f);
const char *tunneler_frontends_http_address(const TunnelerFrontends *f);
/* The bound "IP:port" of the i-th forward in settings order, NULL when i is out of range. */
const char *tunneler_frontends_forward_address(const TunnelerFrontends *f, size_t i);

/* RFC 1928 codes. */
#define SOCKS_VERSION 0x05
#define SOCKS_METHOD_NO_AUTH 0x00
#define SOCKS_METHOD_NONE_ACCEPTABLE 0xFF
#define SOCKS_CMD_CONNECT 0x01
#define SOCKS_ATYP_IPV4 0x01
#define SOCKS_ATYP_DOMAIN 0x03
#define SOCKS_ATYP_IPV6 0x04
#define SOCKS_REPLY_SUCCEEDED 0x00
#define SOCKS_REPLY_GENERAL_FAILURE 0x01
#define SOCKS_REPLY_NOT_ALLOWED 0x02
#define SOCKS_REPLY_HOST_UNREACHABLE 0x04
#define SOCKS_REPLY_TTL_EXPIRED 0x06
#define SOCKS_REPLY_COMMAND_NOT_SUPPORTED 0x07
#define SOCKS_REPLY_ADDRESS_NOT_SUPPORTED 0x08
/* VER REP RSV ATYP(1) 0.0.0.0 port 0 */
#define SOCKS_REPLY_SIZE 10U

/* Incremental parsers over arbitrary bytes (buf need not be NUL-terminated). Return 0 while more bytes
 * are needed, > 0 the number of bytes the request took once complete (*ret filled; bytes past it are
 * the caller's business), or a negative errno: -EBADMSG malformed, -EMSGSIZE too long, -EPROTONOSUPPORT a
 * command/method/version we do not serve. Malformed input is reported as soon as a prefix shows it.
 *
 *   greeting   VER NMETHODS METHODS: > 0 with *ret_reply = 0x00 when "no authentication" is offered;
 *              -EPROTONOSUPPORT with *ret_reply = 0xFF when it is not; -EBADMSG (VER not 5, NMETHODS 0)
 *              with *ret_reply untouched: not a SOCKS5 client, nothing to answer.
 *   request    VER CMD RSV ATYP DST.ADDR DST.PORT: *ret_reply is set on every error — 0x01 for -EBADMSG
 *              (VER not 5, RSV not 0, a domain name of length 0 or that is neither a host name nor an
 *              address literal, port 0), 0x07 for a command other than CONNECT, 0x08 for another ATYP.
 *              A domain name holding an address literal yields that address (family set).
 *   HTTP       the whole head up to and including the empty line; *ret_status is set on every error:
 *              400 -EBADMSG, 405 / 505 -EPROTONOSUPPORT (method / version), 431 -EMSGSIZE (no end of the
 *              head within FRONTEND_HEAD_MAX bytes). The method and version are judged once the head is
 *              complete, syntax as soon as it is seen. */
typedef enum SocksStage {
        SOCKS_STAGE_GREETING,           /* VER NMETHODS METHODS */
        SOCKS_STAGE_REQUEST,            /* VER CMD RSV ATYP DST.ADDR DST.PORT */
} SocksStage;
int socks_parse_greeting(const uint8_t *buf, size_t size, uint8_t *ret_reply);
int socks_parse_request(const uint8_t *buf, size_t size, HostPort *ret, uint8_t *ret_reply);
int http_connect_parse(const char *buf, size_t size, HostPort *ret, unsigned *ret_status);
