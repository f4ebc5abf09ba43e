/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "controller-admin.h"
#include "controller-ca.h"
#include "controller-manager.h"
#include "controller-metrics.h"
#include "crypto-util.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "net-http.h"
#include "parse-util.h"
#include "strv.h"

static int handle_healthz(HttpRequest *req, void *userdata) {
        return http_reply_text(req, 200, "ok\n");
}

static int handle_readyz(HttpRequest *req, void *userdata) {
        Manager *m = userdata;

        if (m->stopping)
                return http_reply_text(req, 503, "stopping\n");
        return http_reply_text(req, 200, "ready\n");
}

static int handle_metrics(HttpRequest *req, void *userdata) {
        _cleanup_free_ char *text = controller_metrics_format(userdata);

        if (!text)
                return http_reply_error(req, 503, "unavailable", "The metrics could not be collected.");
        return http_reply(req, 200, METRICS_CONTENT_TYPE, text, strlen(text));
}

static const HttpRoute admin_routes[] = {
        { "/healthz", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, handle_healthz },
        { "/readyz", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, handle_readyz },
        { "/metrics", HTTP_METHOD_GET | HTTP_METHOD_HEAD, 0, handle_metrics },
};

/* The server identity as PEM; the key is wiped by the caller (crypto_erase_and_free()). */
static int admin_server_pem(Manager *m, char **ret_chain, char **ret_key) {
        int r = controller_ca_get_server_pem(m->ca, ret_chain, ret_key);

        if (r < 0)
                return log_error_errno(r, "Failed to export the server certificate for the admin listener: %m");
        return 0;
}

int controller_admin_start(Manager *m) {
        _cleanup_free_ char *chain = NULL;
        char *key = NULL;
        int r;

        assert(m);

        r = admin_server_pem(m, &chain, &key);
        if (r < 0)
                return r;

        HttpServerParams p = {
                .routes = admin_routes,
                .n_routes = ELEMENTSOF(admin_routes),
                .userdata = m,
                .tls_cert_pem = chain,
                .tls_key_pem = key,
                .description = "admin",
        };

        if (m->n_admin_fds > 0)
                for (size_t i = 0; i < m->n_admin_fds && r >= 0; i++) {
                        r = http_server_new_fd(m->event, m->admin_fds[i], &p,
                                               &m->admin_servers[m->n_admin_servers]);
                        if (r < 0)
                                log_error_errno(r, "Failed to serve the admin API on the socket passed as "
                                                "'admin': %m");
                        else
                                m->n_admin_servers++;
                }
        else
                STRV_FOREACH(a, m->config.listen_admin.addresses) {
                        HostPort hp;

                        if (m->n_admin_servers >= ELEMENTSOF(m->admin_servers))
                                break;
                        r = parse_host_port(*a, 0, &hp);
                        if (r < 0) {
                                log_error_errno(r, "Invalid ListenAdmin= address '%s': %m", *a);
                                break;
                        }
                        r = http_server_new_bind(m->event, &hp, &p, &m->admin_servers[m->n_admin_servers]);
                        if (r < 0) {
                                log_error_errno(r, "Failed to serve the admin API on '%s': %m", *a);
                                break;
                        }
                        m->n_admin_servers++;
                        log_info("Serving the admin API on https://%s.", *a);
                }

        crypto_erase_and_free(key, strlen(key));
        return r < 0 ? r : 0;
}

int controller_admin_certificate_changed(Manager *m) {
        _cleanup_free_ char *chain = NULL;
        char *key = NULL;
        int r, ret = 0;

        assert(m);

        if (m->n_admin_servers == 0)
                return 0;
        r = admin_server_pem(m, &chain, &key);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_admin_servers; i++) {
                r = http_server_set_certificate(m->admin_servers[i], chain, key);
                if (r < 0)
                        ret = log_error_errno(r, "Failed to give the admin API the new server certificate, "
                                              "keeping the old one: %m");
        }
        crypto_erase_and_free(key, strlen(key));
        return ret;
}

void controller_admin_stop(Manager *m) {
        assert(m);

        for (size_t i = 0; i < m->n_admin_servers; i++)
                m->admin_servers[i] = http_server_free(m->admin_servers[i]);
        m->n_admin_servers = 0;
}
