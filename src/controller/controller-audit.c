/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller-audit.h"
#include "log.h"
#include "macro.h"
#include "string-util.h"

typedef struct AuditEventInfo {
        const char *name;
        const char *message_id;  /* catalog/ztna.catalog */
        int level;
        const char *format;      /* MESSAGE, with the subject (or "-") as its only argument */
} AuditEventInfo;

static const AuditEventInfo audit_events[_AUDIT_EVENT_MAX] = {
        [AUDIT_CONTROLLER_STARTED] = { "controller-started", "e8f76675ee264ccab9c47be391d7f44f", LOG_NOTICE,
                                       "Controller %s started." },
        [AUDIT_CONTROLLER_STOPPED] = { "controller-stopped", "1065f3baa4e04f2fb9540fa54db41ead", LOG_NOTICE,
                                       "Controller %s stopped." },
        [AUDIT_TOKEN_CREATED] = { "token-created", "ad4ec10ab32c4d02becd8e1da27e9d6d", LOG_NOTICE,
                                  "Enrollment token %s created." },
        [AUDIT_TOKEN_REVOKED] = { "token-revoked", "fa11302313634644ab9f5d5f6246eeb2", LOG_NOTICE,
                                  "Enrollment token %s revoked." },
        [AUDIT_TOKEN_CONSUMED] = { "token-consumed", "f0a23471aecc44b081197f77a5e9a6c5", LOG_NOTICE,
                                   "Enrollment token consumed by %s." },
        [AUDIT_TOKEN_REFUSED] = { "token-refused", "0793a354066e45728b8618b41cc04bac", LOG_WARNING,
                                  "Enrollment token refused for %s." },
        [AUDIT_ENROLLED] = { "enrolled", "559ccdf0754e4f36bcb1fdd5100d1a7a", LOG_NOTICE, "Agent %s enrolled." },
        [AUDIT_ENROLLMENT_REFUSED] = { "enrollment-refused", "ad4ad23171094c12833494fd00621cc5", LOG_WARNING,
                                       "Enrollment of %s refused." },
        [AUDIT_RENEWED] = { "renewed", "8e5e71d258d246d596e6b1294f357936", LOG_INFO,
                            "Certificate of %s renewed." },
        [AUDIT_RENEWAL_REFUSED] = { "renewal-refused", "398b4169babd461da03376f722a7604b", LOG_WARNING,
                                    "Certificate renewal of %s refused." },
        [AUDIT_REAUTHENTICATED] = { "reauthenticated", "fe363acac6e24077b01793463ced213d", LOG_NOTICE,
                                    "Agent %s re-authenticated with its recorded key." },
        [AUDIT_REAUTHENTICATION_REFUSED] = { "reauthentication-refused", "c26579fe2ec34d6982c0ba6fa992fa4f",
                                             LOG_WARNING, "Re-authentication of %s refused." },
        [AUDIT_AGENT_REVOKED] = { "agent-revoked", "4ecb758279dc4c4190f3b81b22f701c2", LOG_NOTICE,
                                  "Agent %s revoked." },
        [AUDIT_CONTROL_REFUSED] = { "control-refused", "320d2833b2df4c8d956cf1800c4fb83a", LOG_WARNING,
                                    "Control stream of %s refused." },
        [AUDIT_CA_ISSUING_ROTATED] = { "ca-issuing-rotated", "f54909ad6f194c59b8492a124b14bb99", LOG_NOTICE,
                                       "Issuing CA rotated, new issuing CA %s." },
        [AUDIT_CA_ROOT_ROTATION] = { "ca-root-rotation", "b67d5889186e4703bc8306cc084c2c55", LOG_NOTICE,
                                     "Root CA rotation step for %s." },
        [AUDIT_POLICY_CHANGED] = { "policy-changed", "a6968a05597f44ad89e3f90e901b4051", LOG_NOTICE,
                                   "Access policy changed for %s." },
        [AUDIT_FLOW] = { "flow", "7954fc54cd3f4276aac5ea3955cc9444", LOG_INFO, "Flow of %s reported by a connector." },
        [AUDIT_ADMIN_CREATED] = { "admin-created", "7ef34725667f4a09a1a434e010c211da", LOG_NOTICE,
                                  "Administrator %s created." },
        [AUDIT_ADMIN_DELETED] = { "admin-deleted", "100971bf2eb44445bed4b7ecc27c0b04", LOG_NOTICE,
                                  "Administrator %s deleted." },
        [AUDIT_ADMIN_PASSWORD_CHANGED] = { "admin-password-changed", "d849a9e7097043969cb5fbd2785c40e7",
                                           LOG_NOTICE, "Password of administrator %s changed." },
        [AUDIT_LOGIN_SUCCEEDED] = { "login-succeeded", "14a85aebe5e447c9bd6828f29e1a0543", LOG_NOTICE,
                                    "Administrator %s logged in." },
        [AUDIT_LOGIN_FAILED] = { "login-failed", "346ba955c5e24a8ba50369ef667a210e", LOG_WARNING,
                                 "Login as %s refused." },
        [AUDIT_API_TOKEN_CREATED] = { "api-token-created", "d6400103234c470a8ab33c3eb23dac6c", LOG_NOTICE,
                                      "API token %s created." },
        [AUDIT_API_TOKEN_REVOKED] = { "api-token-revoked", "fb60e2aa4b934d168f69bc1ba33eb8c4", LOG_NOTICE,
                                      "API token %s revoked." },
};

/* Journal fields every record may carry (MESSAGE_ID, ZTNA_EVENT, ZTNA_ACTOR, ZTNA_SUBJECT, the five
 * optional strings and ZTNA_NOT_AFTER), plus the event's own. */
#define AUDIT_JOURNAL_FIELDS_MAX (10U + AUDIT_FIELDS_MAX)

const char *audit_event_to_string(AuditEvent e) {
        return e >= 0 && e < _AUDIT_EVENT_MAX ? audit_events[e].name : NULL;
}

AuditEvent audit_event_from_string(const char *s) {
        if (!s)
                return _AUDIT_EVENT_INVALID;
        for (AuditEvent e = 0; e < _AUDIT_EVENT_MAX; e++)
                if (streq(audit_events[e].name, s))
                        return e;
        return _AUDIT_EVENT_INVALID;
}

const char *audit_event_message_id(AuditEvent e) {
        return e >= 0 && e < _AUDIT_EVENT_MAX ? audit_events[e].message_id : NULL;
}

/* Fields of r that are set, as "KEY=value" journal fields and as a JSON object; values are copied into
 * fields[] storage owned by the caller (freed with free()). */
/* A key of AuditRecord.fields: a constant of ours, so a bad one is a programmer error. */
static bool audit_field_key_is_valid(const char *key) {
        static const char *const reserved[] = { "event", "actor", "subject", "role", "token_id", "peer",
                                                "reason", "serial", "not_after" };

        if (isempty(key) || strlen(key) > 32 || key[strspn(key, "abcdefghijklmnopqrstuvwxyz_")] != '\0')
                return false;
        for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
                if (streq(key, reserved[i]))
                        return false;
        return true;
}

static int audit_collect_extra(const char *const *extra, char **fields, size_t *n, json_t *detail) {
        size_t pairs = 0;

        for (const char *const *k = extra; k && *k; k += 2) {
                char journal[STRLEN("ZTNA_") + 32 + 1];

                assert(++pairs <= AUDIT_FIELDS_MAX);
                assert(audit_field_key_is_valid(k[0]));

                if (!k[1])
                        continue;
                snprintf(journal, sizeof(journal), "ZTNA_%s", k[0]);
                for (char *p = journal; *p; p++)
                        *p = (char) toupper((unsigned char) *p);
                fields[*n] = strjoin(journal, "=", k[1], NULL);
                if (!fields[*n])
                        return -ENOMEM;
                (*n)++;
                if (json_object_set_new(detail, k[0], json_string(k[1])) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int audit_collect(const AuditRecord *r, char **fields, size_t *n, json_t *detail) {
        struct {
                const char *journal;
                const char *json;
                const char *value;
        } items[] = {
                { "ZTNA_ROLE", "role", r->role >= 0 ? spiffe_role_to_string(r->role) : NULL },
                { "ZTNA_TOKEN_ID", "token_id", r->token_id },
                { "ZTNA_PEER", "peer", r->peer },
                { "ZTNA_REASON", "reason", r->reason },
                { "ZTNA_SERIAL", "serial", r->serial },
        };

        for (size_t k = 0; k < ELEMENTSOF(items); k++) {
                typeof(items[0]) *i = &items[k];

                if (!i->value)
                        continue;
                fields[*n] = strjoin(i->journal, "=", i->value, NULL);
                if (!fields[*n])
                        return -ENOMEM;
                (*n)++;
                if (json_object_set_new(detail, i->json, json_string(i->value)) < 0)
                        return -ENOMEM;
        }
        if (r->not_after > 0) {
                if (asprintf(&fields[*n], "ZTNA_NOT_AFTER=%" PRIu64, r->not_after) < 0) {
                        fields[*n] = NULL;
                        return -ENOMEM;
                }
                (*n)++;
                if (json_object_set_new(detail, "not_after", json_integer((json_int_t) r->not_after)) < 0)
                        return -ENOMEM;
        }
        return audit_collect_extra(r->fields, fields, n, detail);
}

static bool audit_event_is_refusal(AuditEvent e) {
        return e == AUDIT_TOKEN_REFUSED || e == AUDIT_ENROLLMENT_REFUSED || e == AUDIT_RENEWAL_REFUSED ||
               e == AUDIT_REAUTHENTICATION_REFUSED || e == AUDIT_CONTROL_REFUSED || e == AUDIT_LOGIN_FAILED;
}

/* Refusals are caused by whoever reaches the gRPC port, certificate or not, or the admin port. Beyond the burst they are only
 * counted: a flood of bad enrollments must neither grow the database nor push the journal into journald's
 * per-service rate limit, which would then drop the entries that matter (tokens consumed, revocations).
 * One window for the process: there is one store. */
static struct {
        usec_t window_start;
        unsigned rows;
        unsigned suppressed;
} refusal_limit;

static bool audit_refusal_allowed(usec_t n) {
        if (n >= refusal_limit.window_start + AUDIT_REFUSAL_INTERVAL || n < refusal_limit.window_start) {
                if (refusal_limit.suppressed > 0)
                        log_warning("Did not record %u more refused requests during the last minute (more than "
                                    "%u): a client may be misconfigured, or somebody is probing the controller.",
                                    refusal_limit.suppressed, AUDIT_REFUSAL_ROWS_BURST);
                refusal_limit.window_start = n;
                refusal_limit.rows = 0;
                refusal_limit.suppressed = 0;
        }
        if (refusal_limit.rows >= AUDIT_REFUSAL_ROWS_BURST) {
                refusal_limit.suppressed++;
                return false;
        }
        refusal_limit.rows++;
        return true;
}

int audit_log(Store *store, AuditEvent e, const AuditRecord *r) {
        static const AuditRecord empty = { .role = _SPIFFE_ROLE_INVALID };
        _cleanup_(json_decrefp) json_t *detail = NULL;
        _cleanup_free_ char *detail_text = NULL;
        char *fields[AUDIT_JOURNAL_FIELDS_MAX] = {};
        size_t n = 0;
        int r_ = 0, k;

        assert(e >= 0 && e < _AUDIT_EVENT_MAX);

        if (!r)
                r = &empty;

        const AuditEventInfo *info = &audit_events[e];
        const char *actor = r->actor ?: "-", *subject = r->subject ?: "-";

        detail = json_object();
        if (!detail)
                return log_oom();

        fields[n] = strjoin("MESSAGE_ID=", info->message_id, NULL);
        if (!fields[n] ||
            !(fields[++n] = strjoin("ZTNA_EVENT=", info->name, NULL)) ||
            !(fields[++n] = strjoin("ZTNA_ACTOR=", actor, NULL)) ||
            !(fields[++n] = strjoin("ZTNA_SUBJECT=", subject, NULL))) {
                r_ = log_oom();
                goto finish;
        }
        n++;

        k = audit_collect(r, fields, &n, detail);
        if (k < 0) {
                r_ = log_oom();
                goto finish;
        }

        if (audit_event_is_refusal(e) && !audit_refusal_allowed(now(CLOCK_MONOTONIC)))
                goto finish;

        log_struct_errno(info->level, 0, (const char *const *) fields, n, info->format, subject);

        if (store) {
                if (json_object_size(detail) > 0) {
                        detail_text = json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS);
                        if (!detail_text) {
                                r_ = log_oom();
                                goto finish;
                        }
                }
                k = store_audit_append(store,
                                       &(const StoreAuditEvent) {
                                               .time = now(CLOCK_REALTIME),
                                               .event = (char *) info->name,
                                               .actor = (char *) actor,
                                               .subject = r->subject ? (char *) r->subject : NULL,
                                               .detail = detail_text,
                                       },
                                       NULL);
                if (k < 0)
                        r_ = log_error_errno(k, "Failed to record audit event '%s' in the store: %m", info->name);
        }

finish:
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                free(fields[i]);
        return r_;
}
