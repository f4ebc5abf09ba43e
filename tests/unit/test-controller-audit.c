/* SPDX-License-Identifier: Apache-2.0 */

#include <stdlib.h>
#include <string.h>

#include "controller-audit.h"
#include "log.h"
#include "string-util.h"
#include "tests.h"

static Store *open_store(void) {
        Store *s = NULL;

        ASSERT_OK(store_open_sqlite(test_path("audit.db"), &s));
        return s;
}

static size_t count_rows(Store *s, const char *event) {
        StoreAuditEvent **rows = NULL;
        size_t n = 0;

        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .event = event, .limit = STORE_AUDIT_PAGE_MAX },
                                   &rows, &n));
        store_audit_event_array_free(rows, n);
        return n;
}

TEST(names_and_message_ids) {
        for (AuditEvent e = 0; e < _AUDIT_EVENT_MAX; e++) {
                const char *name = audit_event_to_string(e), *id = audit_event_message_id(e);

                CASE("event %d", e);
                ASSERT_NOT_NULL(name);
                ASSERT_EQ(audit_event_from_string(name), e);
                ASSERT_NOT_NULL(id);
                ASSERT_EQ(strlen(id), 32U);
                for (const char *p = id; *p; p++)
                        ASSERT_TRUE(strchr("0123456789abcdef", *p) != NULL);
                /* Each MESSAGE_ID belongs to exactly one event. */
                for (AuditEvent f = e + 1; f < _AUDIT_EVENT_MAX; f++)
                        ASSERT_FALSE(streq(id, audit_event_message_id(f)));
        }
        ASSERT_NULL(audit_event_to_string(_AUDIT_EVENT_MAX));
        ASSERT_EQ(audit_event_from_string("no-such-event"), _AUDIT_EVENT_INVALID);
        ASSERT_EQ(audit_event_from_string(NULL), _AUDIT_EVENT_INVALID);
}

/* journalctl -x explains every event: each MESSAGE_ID has its entry in catalog/ztna.catalog. */
TEST(catalog_has_every_event) {
        const char *src = getenv("ZTNA_SOURCE_DIR");
        _cleanup_free_ char *path = NULL;
        const char *text;

        ASSERT_NOT_NULL(src);
        path = strjoin(src, "/catalog/ztna.catalog", NULL);
        text = test_read_file(path, NULL);
        ASSERT_NOT_NULL(text);
        for (AuditEvent e = 0; e < _AUDIT_EVENT_MAX; e++) {
                _cleanup_free_ char *header = strjoin("\n-- ", audit_event_message_id(e), "\nSubject: ", NULL);

                CASE("%s", audit_event_to_string(e));
                ASSERT_STRSTR(text, header);
        }
}

TEST(journal_fields_and_row) {
        _cleanup_(store_freep) Store *s = open_store();
        StoreAuditEvent **rows = NULL;
        size_t n = 0;
        const char *err;

        test_capture_stderr_begin();
        ASSERT_OK(audit_log(s, AUDIT_ENROLLED,
                            &(const AuditRecord) {
                                    .actor = "spiffe://ztna.test/connector/c1",
                                    .subject = "spiffe://ztna.test/connector/c1",
                                    .role = SPIFFE_ROLE_CONNECTOR,
                                    .token_id = "00112233445566778899aabbccddeeff",
                                    .peer = "127.0.0.1:4242",
                                    .serial = "abc",
                                    .not_after = 1234,
                            }));
        err = test_capture_stderr_end();
        ASSERT_STRSTR(err, "Agent spiffe://ztna.test/connector/c1 enrolled.");
        ASSERT_STRSTR(err, "MESSAGE_ID=559ccdf0754e4f36bcb1fdd5100d1a7a");
        ASSERT_STRSTR(err, "ZTNA_EVENT=enrolled");
        ASSERT_STRSTR(err, "ZTNA_ROLE=connector");
        ASSERT_STRSTR(err, "ZTNA_TOKEN_ID=00112233445566778899aabbccddeeff");
        ASSERT_STRSTR(err, "ZTNA_PEER=127.0.0.1:4242");
        ASSERT_STRSTR(err, "ZTNA_SERIAL=abc");
        ASSERT_STRSTR(err, "ZTNA_NOT_AFTER=1234");

        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .limit = 10 }, &rows, &n));
        ASSERT_EQ(n, 1U);
        ASSERT_STREQ(rows[0]->event, "enrolled");
        ASSERT_STREQ(rows[0]->actor, "spiffe://ztna.test/connector/c1");
        ASSERT_STREQ(rows[0]->subject, "spiffe://ztna.test/connector/c1");
        ASSERT_STREQ(rows[0]->detail, "{\"not_after\":1234,\"peer\":\"127.0.0.1:4242\",\"role\":\"connector\","
                                      "\"serial\":\"abc\",\"token_id\":\"00112233445566778899aabbccddeeff\"}");
        store_audit_event_array_free(rows, n);

        /* Unset fields are absent, not empty; no actor is "-"; no store: journal only. */
        test_capture_stderr_begin();
        ASSERT_OK(audit_log(s, AUDIT_CONTROLLER_STARTED, &(const AuditRecord) { .role = _SPIFFE_ROLE_INVALID }));
        ASSERT_OK(audit_log(NULL, AUDIT_CONTROLLER_STOPPED, NULL));
        err = test_capture_stderr_end();
        ASSERT_STRSTR(err, "ZTNA_ACTOR=-");
        ASSERT_NULL(strstr(err, "ZTNA_ROLE="));
        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .limit = 10 }, &rows, &n));
        ASSERT_EQ(n, 2U);
        ASSERT_STREQ(rows[0]->event, "controller-started");
        ASSERT_NULL(rows[0]->detail);
        store_audit_event_array_free(rows, n);
}

/* Anyone reaching the port can cause refusals: their entries and rows are bounded, other events are not
 * affected. */
TEST(refusal_rows_are_bounded) {
        _cleanup_(store_freep) Store *s = open_store();
        const char *err;
        size_t lines = 0;

        log_set_max_level(LOG_ERR); /* the first burst's entries are not what this case looks at */
        for (unsigned i = 0; i < AUDIT_REFUSAL_ROWS_BURST; i++) {
                ASSERT_OK(audit_log(s, i % 2 ? AUDIT_TOKEN_REFUSED : AUDIT_ENROLLMENT_REFUSED,
                                    &(const AuditRecord) { .role = _SPIFFE_ROLE_INVALID, .reason = "invalid token" }));
                ASSERT_OK(audit_log(s, AUDIT_TOKEN_CREATED,
                                    &(const AuditRecord) { .actor = "root", .role = SPIFFE_ROLE_TUNNELER }));
        }
        log_set_max_level(LOG_INFO);

        /* Past the burst: neither journal entries nor rows; other events are not affected. */
        test_capture_stderr_begin();
        for (unsigned i = 0; i < 50; i++)
                ASSERT_OK(audit_log(s, AUDIT_REAUTHENTICATION_REFUSED,
                                    &(const AuditRecord) { .role = _SPIFFE_ROLE_INVALID, .reason = "nope" }));
        ASSERT_OK(audit_log(s, AUDIT_TOKEN_CREATED, &(const AuditRecord) { .role = _SPIFFE_ROLE_INVALID }));
        err = test_capture_stderr_end();
        for (const char *p = err; (p = strstr(p, "ZTNA_EVENT=reauthentication-refused")); p++)
                lines++;
        ASSERT_EQ(lines, 0U);
        ASSERT_STRSTR(err, "ZTNA_EVENT=token-created");

        ASSERT_EQ(count_rows(s, "token-refused") + count_rows(s, "enrollment-refused"),
                  (size_t) AUDIT_REFUSAL_ROWS_BURST);
        ASSERT_EQ(count_rows(s, "reauthentication-refused"), 0U);
        ASSERT_EQ(count_rows(s, "token-created"), (size_t) AUDIT_REFUSAL_ROWS_BURST + 1);
}
