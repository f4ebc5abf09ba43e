/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The agents' health listener (DESIGN.md §7): plain HTTP on a loopback address, served by the shared
 * HttpServer (net-http.h: libmicrohttpd driven from the sd-event loop, no threads).
 *
 *   GET /healthz   200 "ok\n" while the event loop runs (answering proves it);
 *   GET /readyz    200 "ready\n" when the readiness callback says so, else 503 with its reason;
 *   GET /metrics   200 with the metrics callback's Prometheus text (text/plain; version=0.0.4), 503 when
 *                  there is no callback or it returns NULL;
 *   HEAD the same without a body; anything else 404, another method 405 (with Allow:), a request body 413.
 *
 * Bounded: AGENT_HEALTH_CONNECTIONS_MAX connections at once (one more is accepted and closed at once, so
 * a probe fails fast instead of waiting in the backlog), AGENT_HEALTH_TIMEOUT_SEC of inactivity per
 * connection, a small memory pool per connection (larger request headers get 431). Responses are
 * text/plain; charset=utf-8 with Cache-Control: no-store and X-Content-Type-Options: nosniff. Nothing
 * here logs above debug; the caller logs agent_health_new() failures. */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define AGENT_HEALTH_CONNECTIONS_MAX 16U
#define AGENT_HEALTH_TIMEOUT_SEC 10U
/* Longest readiness reason quoted in a 503 body; a longer one is cut. */
#define AGENT_HEALTH_REASON_MAX 256U

typedef struct AgentHealth AgentHealth;

/* Returns true when ready; otherwise *ret_reason (static or owned by userdata, valid until the next call)
 * may say why ("control stream down: connecting"). */
typedef bool (*AgentHealthReady)(void *userdata, const char **ret_reason);
/* Returns the Prometheus text exposition (the caller frees it), or NULL when none is available. */
typedef char *(*AgentHealthMetrics)(void *userdata);

/* listen: a loopback "IP:port" as agent-conf.h canonicalises it ("127.0.0.1:8445", "[::1]:8445"); port 0
 * binds an ephemeral port (agent_health_get_port()). Errors: -EINVAL (not a loopback IP:port),
 * -EADDRINUSE and other bind()/listen() errors, -ENOMEM, -EIO when libmicrohttpd refuses to start.
 * metrics may be NULL (/metrics then answers 503); both callbacks get userdata. */
int agent_health_new(sd_event *event, const char *listen, AgentHealthReady ready, AgentHealthMetrics metrics,
                     void *userdata, AgentHealth **ret);
AgentHealth *agent_health_free(AgentHealth *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentHealth *, agent_health_free);

/* The bound port (useful after port 0). */
unsigned agent_health_get_port(const AgentHealth *h);
