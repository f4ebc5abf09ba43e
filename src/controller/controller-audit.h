/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Audit events (DESIGN.md §6): each is one journal entry with its MESSAGE_ID (catalog/ztna.catalog explains
 * every one) and ZTNA_* fields, and one row in the store's audit table with the same content. Neither ever
 * holds a secret: tokens appear by their public id only.
 *
 * Journal fields: MESSAGE_ID, ZTNA_EVENT (the short name), ZTNA_ACTOR, ZTNA_SUBJECT, and when given
 * ZTNA_ROLE, ZTNA_TOKEN_ID, ZTNA_PEER (address), ZTNA_REASON, ZTNA_SERIAL, ZTNA_NOT_AFTER, plus the event's
 * own fields (AuditRecord.fields: "change" → ZTNA_CHANGE, …). The row's detail column is a JSON object of the
 * same optional fields. */

#include "controller-store.h"

/* Refusals (token, enrollment, renewal, re-authentication, control stream, admin login) recorded per
 * AUDIT_REFUSAL_INTERVAL at most, journal entry and row alike; beyond that they are counted, and one warning
 * gives the count when the next interval starts. Anyone who can reach the gRPC or the admin port can cause
 * refusals: neither the database nor the journal (whose rate limit would then drop the entries that matter)
 * may grow with them. */
#define AUDIT_REFUSAL_ROWS_BURST 200U
#define AUDIT_REFUSAL_INTERVAL (60 * USEC_PER_SEC)
/* Key/value pairs in AuditRecord.fields. */
#define AUDIT_FIELDS_MAX 12U
#include "crypto-spiffe.h"
#include "time-util.h"

typedef enum AuditEvent {
        AUDIT_CONTROLLER_STARTED,
        AUDIT_CONTROLLER_STOPPED,
        AUDIT_TOKEN_CREATED,
        AUDIT_TOKEN_REVOKED,
        AUDIT_TOKEN_CONSUMED,
        AUDIT_TOKEN_REFUSED,
        AUDIT_ENROLLED,
        AUDIT_ENROLLMENT_REFUSED,
        AUDIT_RENEWED,
        AUDIT_RENEWAL_REFUSED,
        AUDIT_REAUTHENTICATED,
        AUDIT_REAUTHENTICATION_REFUSED,
        AUDIT_AGENT_REVOKED,
        AUDIT_CONTROL_REFUSED,
        AUDIT_CA_ISSUING_ROTATED,
        AUDIT_CA_ROOT_ROTATION,
        AUDIT_POLICY_CHANGED,
        AUDIT_FLOW,
        AUDIT_ADMIN_CREATED,
        AUDIT_ADMIN_DELETED,
        AUDIT_ADMIN_PASSWORD_CHANGED,
        AUDIT_LOGIN_SUCCEEDED,
        AUDIT_LOGIN_FAILED,
        AUDIT_API_TOKEN_CREATED,
        AUDIT_API_TOKEN_REVOKED,
        _AUDIT_EVENT_MAX,
        _AUDIT_EVENT_INVALID = -EINVAL,
} AuditEvent;

/* "token-created", … (the store's event column and ZTNA_EVENT). */
const char *audit_event_to_string(AuditEvent e);
AuditEvent audit_event_from_string(const char *s);
/* The 128-bit MESSAGE_ID as 32 lower-case hex digits. */
const char *audit_event_message_id(AuditEvent e);

typedef struct AuditRecord {
        const char *actor;      /* "root", "uid:1000", "admin:alice", a SPIFFE ID, "anonymous" */
        const char *subject;    /* SPIFFE ID, token id, CA fingerprint; may be NULL */
        SpiffeRole role;        /* _SPIFFE_ROLE_INVALID: none */
        const char *token_id;   /* hex, may be NULL */
        const char *peer;       /* network address of the caller, may be NULL */
        const char *reason;     /* why refused / revoked, may be NULL */
        const char *serial;     /* certificate serial, may be NULL */
        usec_t not_after;       /* certificate or token expiry, 0: none */
        /* NULL, or a NULL-terminated list of key, value, key, value… (at most AUDIT_FIELDS_MAX pairs) for what
         * the fields above do not say, e.g. { "change", "resource-created", "address", "10.0.0.0/24", NULL }.
         * Keys are constants of ours in [a-z_], none of the names above; the journal field is ZTNA_ and the
         * key upper-cased, the JSON member the key. A NULL value leaves the pair out. */
        const char *const *fields;
} AuditRecord;

/* Logs the event (notice for successes, warning for refusals) and appends the row (refusals: within the
 * limit above, else neither). A failure to write the
 * row is logged and returned but the journal entry is there either way. store may be NULL (journal only:
 * e.g. before the store is open). */
int audit_log(Store *store, AuditEvent e, const AuditRecord *r);
