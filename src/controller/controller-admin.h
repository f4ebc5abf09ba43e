/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The controller's admin listener (DESIGN.md §6): HTTPS on the sockets systemd passed as "admin"
 * (ztna-controller-admin.socket), or on the ListenAdmin= addresses when none were passed, with the
 * controller's own server certificate (spiffe://<td>/controller/<id>, the chain up to its root) — swapped
 * when the CA renews it. Served so far:
 *
 *   GET /healthz   200 "ok" while the event loop runs;
 *   GET /readyz    200 "ready" while serving, 503 "stopping" once SIGTERM began the drain;
 *   GET /metrics   the Prometheus exposition of controller_metrics_format().
 *
 * The REST API and the dashboard (issue 7) are the next routes on this same server. */

typedef struct Manager Manager;

/* Starts serving on the held admin fds or the configured addresses. Logs its errors. */
int controller_admin_start(Manager *m);
/* The CA issued a new server certificate: every admin server switches to it (open connections are closed,
 * see http_server_set_certificate()). Logs its errors; the old certificate keeps serving on failure. */
int controller_admin_certificate_changed(Manager *m);
/* Stops serving (on SIGTERM and when the manager is freed). Accepts a manager that never started. */
void controller_admin_stop(Manager *m);
