/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent-health.h"
#include "net-http.h"
#include "parse-util.h"

/* Per-connection pool: the request line and headers of a health probe fit many times over; anything
 * larger is not a probe and libmicrohttpd refuses it (431). */
#define AGENT_HEALTH_MEMORY_LIMIT (8U * 1024U)

#define AGENT_HEALTH_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct AgentHealth {
        HttpServer *server;
        AgentHealthReady ready;
        AgentHealthMetrics metrics;
        void *userdata;
};

static int health_on_healthz(HttpRequest *req, void *userdata) {
        return http_reply_text(req, 200, "ok\n");
}

static int health_on_readyz(HttpRequest *req, void *userdata) {
        AgentHealth *h = userdata;
        const char *reason = NULL;
        char body[STRLEN("not ready: \n") + AGENT_HEALTH_REASON_MAX + 1];

        if (h->ready(h->userdata, &reason))
                return http_reply_text(req, 200, "ready\n");
        if (isempty(reason))
                return http_reply_text(req, 503, "not ready\n");
        (void) snprintf(body, sizeof(body), "not ready: %.*s\n", (int) AGENT_HEALTH_REASON_MAX, reason);
        return http_reply_text(req, 503, body);
}

static int health_on_metrics(HttpRequest *req, void *userdata) {
        AgentHealth *h = userdata;
        _cleanup_free_ char *text = NULL;

        if (h->metrics)
                text = h->metrics(h->userdata);
        if (!text)
                return http_reply_text(req, 503, "metrics not available\n");
        return http_reply(req, 200, AGENT_HEALTH_METRICS_CONTENT_TYPE, text, strlen(text));
}

static const HttpRoute health_routes[] = {
        { "/healthz", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, health_on_healthz },
        { "/readyz", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, health_on_readyz },
        { "/metrics", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, health_on_metrics },
};

int agent_health_new(sd_event *event, const char *listen, AgentHealthReady ready, AgentHealthMetrics metrics,
                     void *userdata, AgentHealth **ret) {
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        HttpServerParams params;
        HostPort hp;
        int r;

        assert(event);
        assert(ready);
        assert(ret);

        /* Only loopback literals: 127.0.0.0/8 and ::1; port 0 for an ephemeral port. */
        if (parse_listen_address(listen, /* loopback_only= */ true, &hp) < 0)
                return -EINVAL;

        h = malloc(sizeof(AgentHealth));
        if (!h)
                return -ENOMEM;
        *h = (AgentHealth) { .ready = ready, .metrics = metrics, .userdata = userdata };

        params = (HttpServerParams) {
                .routes = health_routes,
                .n_routes = ELEMENTSOF(health_routes),
                .userdata = h,
                .connections_max = AGENT_HEALTH_CONNECTIONS_MAX,
                .timeout_sec = AGENT_HEALTH_TIMEOUT_SEC,
                .memory_max = AGENT_HEALTH_MEMORY_LIMIT,
                .errors_as_text = true,
                .description = "agent-health",
        };
        r = http_server_new_bind(event, &hp, &params, &h->server);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(h);
        return 0;
}

AgentHealth *agent_health_free(AgentHealth *h) {
        if (!h)
                return NULL;

        http_server_free(h->server);
        return mfree(h);
}

unsigned agent_health_get_port(const AgentHealth *h) {
        assert(h);
        return http_server_get_port(h->server);
}
