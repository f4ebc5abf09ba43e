/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "bus-polkit.h"
#include "log.h"
#include "strv.h"

/* CheckAuthorization flags (polkit's PolkitCheckAuthorizationFlags). */
#define POLKIT_CHECK_ALLOW_USER_INTERACTION 1U

typedef enum PolkitAnswer {
        POLKIT_ANSWER_PENDING,
        POLKIT_ANSWER_AUTHORIZED,
        POLKIT_ANSWER_DENIED,
        POLKIT_ANSWER_ERROR, /* the reply to send is in PolkitQuery.error */
} PolkitAnswer;

typedef struct PolkitQuery PolkitQuery;

struct PolkitQuery {
        PolkitRegistry *registry;
        PolkitQuery *prev, *next;

        sd_bus_message *request; /* the method call being authorized; the registry's key */
        char *action;
        char **details;

        sd_bus_slot *slot;         /* CheckAuthorization while it is in flight */
        sd_event_source *cleanup;  /* frees the query once the re-dispatched call has been handled */

        PolkitAnswer answer;
        sd_bus_error error;
};

struct PolkitRegistry {
        PolkitQuery *queries;
        size_t n_queries;
};

static PolkitQuery *polkit_query_free(PolkitQuery *q) {
        if (!q)
                return NULL;

        if (q->registry) {
                if (q->prev)
                        q->prev->next = q->next;
                else
                        q->registry->queries = q->next;
                if (q->next)
                        q->next->prev = q->prev;
                assert(q->registry->n_queries > 0);
                q->registry->n_queries--;
        }

        /* Dropping the slot cancels the pending call: its reply, if it still comes, is discarded. */
        sd_bus_slot_unref(q->slot);
        sd_event_source_disable_unref(q->cleanup);
        sd_bus_message_unref(q->request);
        free(q->action);
        strv_free(q->details);
        sd_bus_error_free(&q->error);
        return mfree(q);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(PolkitQuery *, polkit_query_free);

PolkitRegistry *polkit_registry_free(PolkitRegistry *registry) {
        if (!registry)
                return NULL;

        while (registry->queries)
                polkit_query_free(registry->queries);

        return mfree(registry);
}

size_t polkit_registry_n_queries(const PolkitRegistry *registry) {
        return registry ? registry->n_queries : 0;
}

static PolkitQuery *polkit_registry_find(PolkitRegistry *registry, sd_bus_message *call) {
        if (!registry)
                return NULL;

        for (PolkitQuery *q = registry->queries; q; q = q->next)
                if (q->request == call)
                        return q;

        return NULL;
}

static bool polkit_action_is_valid(const char *action) {
        size_t n = strlen(action);

        /* polkit's own rule for action ids: lower-case letters, digits, '.' and '-'. */
        if (n == 0 || n > POLKIT_ACTION_MAX)
                return false;
        if (action[0] == '.' || action[n - 1] == '.')
                return false;

        for (const char *p = action; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
                        return false;

        return true;
}

static bool polkit_details_are_valid(const char **details) {
        size_t n = strv_length((char *const *) details);

        if (n % 2 != 0 || n / 2 > POLKIT_DETAILS_MAX)
                return false;

        for (size_t i = 0; i < n; i += 2)
                if (isempty(details[i]))
                        return false;

        return true;
}

static bool bus_error_is_no_polkit(const sd_bus_error *e) {
        return sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER);
}

static int polkit_deny(sd_bus_error *error) {
        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Access denied.");
}

/* 1 when the bus itself vouches that the caller's effective UID is 0. Credentials sd-bus "augmented"
 * from /proc are racy and never count. */
static int bus_sender_is_root(sd_bus_message *call) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t euid;
        int r;

        r = sd_bus_query_sender_creds(call, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;

        if (sd_bus_creds_get_augmented_mask(creds) & SD_BUS_CREDS_EUID)
                return 0;

        r = sd_bus_creds_get_euid(creds, &euid);
        if (r == -ENODATA)
                return 0;
        if (r < 0)
                return r;

        return euid == 0;
}

static int polkit_query_cleanup(sd_event_source *s, void *userdata) {
        PolkitQuery *q = userdata;

        /* Idle priority: runs once the bus has drained its read queue, i.e. after the re-dispatched call. */
        polkit_query_free(q);
        return 0;
}

static int polkit_query_read_reply(PolkitQuery *q, sd_bus_message *reply) {
        int authorized, challenge, r;

        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);

                if (bus_error_is_no_polkit(e)) {
                        log_debug("polkit is not available, denying '%s'.", q->action);
                        q->answer = POLKIT_ANSWER_DENIED;
                        return 0;
                }

                log_debug("polkit failed for '%s': %s", q->action, strna(e ? e->name : NULL));
                q->answer = POLKIT_ANSWER_ERROR;
                /* Sets q->error even when out of memory (to NoMemory), so the answer is never empty. */
                (void) sd_bus_error_copy(&q->error, e);
                return 0;
        }

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0)
                return r;

        if (authorized)
                q->answer = POLKIT_ANSWER_AUTHORIZED;
        else if (challenge) {
                q->answer = POLKIT_ANSWER_ERROR;
                (void) sd_bus_error_set(&q->error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                        "Interactive authentication required.");
        } else
                q->answer = POLKIT_ANSWER_DENIED;

        return 0;
}

static int polkit_query_process_reply(PolkitQuery *q, sd_bus_message *reply) {
        sd_bus *bus = sd_bus_message_get_bus(q->request);
        int r;

        r = polkit_query_read_reply(q, reply);
        if (r < 0)
                return r;

        r = sd_event_add_defer(sd_bus_get_event(bus), &q->cleanup, polkit_query_cleanup, q);
        if (r < 0)
                return r;
        r = sd_event_source_set_priority(q->cleanup, SD_EVENT_PRIORITY_IDLE);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(q->cleanup, "polkit-query-cleanup");

        /* Dispatch the call a second time: the handler validates it again and then finds the answer. */
        r = sd_bus_message_rewind(q->request, true);
        if (r < 0)
                return r;
        return sd_bus_enqueue_for_read(bus, q->request);
}

static int polkit_query_callback(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        int r;

        assert(q);

        q->slot = sd_bus_slot_unref(q->slot);

        r = polkit_query_process_reply(q, reply);
        if (r < 0) {
                log_debug_errno(r, "Failed to process polkit reply for '%s', denying: %m", q->action);
                /* Never leave the caller without an answer, and never authorize on failure. */
                (void) sd_bus_reply_method_errorf(q->request, SD_BUS_ERROR_ACCESS_DENIED, "Access denied.");
                polkit_query_free(q);
        }

        return 0;
}

static int polkit_check_call_new(
                sd_bus_message *call,
                const char *sender,
                const char *action,
                const char **details,
                bool interactive,
                sd_bus_message **ret) {

        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(
                        sd_bus_message_get_bus(call),
                        &m,
                        "org.freedesktop.PolicyKit1",
                        "/org/freedesktop/PolicyKit1/Authority",
                        "org.freedesktop.PolicyKit1.Authority",
                        "CheckAuthorization");
        if (r < 0)
                return r;

        r = sd_bus_message_append(m, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, action);
        if (r < 0)
                return r;

        r = sd_bus_message_open_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        for (const char **k = details; k && *k; k += 2) {
                r = sd_bus_message_append(m, "{ss}", k[0], k[1]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;

        /* flags, cancellation id (none: a cancelled query is simply dropped) */
        r = sd_bus_message_append(m, "us", interactive ? POLKIT_CHECK_ALLOW_USER_INTERACTION : 0U, "");
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

static int polkit_query_answer(
                PolkitQuery *q,
                const char *action,
                const char **details,
                sd_bus_error *error) {

        switch (q->answer) {

        case POLKIT_ANSWER_PENDING:
                return 0;

        case POLKIT_ANSWER_AUTHORIZED:
                /* The handler asked about something else this time (the object may have changed between
                 * the two dispatches): the answer does not carry over. */
                if (!streq(q->action, action) || !strv_equal(q->details, (char *const *) details)) {
                        log_debug("polkit answer was for '%s', not '%s', denying.", q->action, action);
                        return polkit_deny(error);
                }
                return 1;

        case POLKIT_ANSWER_DENIED:
                return polkit_deny(error);

        case POLKIT_ANSWER_ERROR:
                if (!sd_bus_error_is_set(&q->error))
                        return polkit_deny(error);
                return sd_bus_error_copy(error, &q->error);
        }

        assert(false);
        return polkit_deny(error);
}

int bus_verify_polkit_async(
                sd_bus_message *call,
                const char *action,
                const char **details,
                PolkitRegistry **registry,
                sd_bus_error *error) {

        _cleanup_(sd_bus_message_unrefp) sd_bus_message *pk = NULL;
        _cleanup_(polkit_query_freep) PolkitQuery *q = NULL;
        sd_bus *bus;
        const char *sender;
        int interactive, r;

        assert(call);
        assert(action);
        assert(registry);

        if (!polkit_action_is_valid(action))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid polkit action.");
        if (!polkit_details_are_valid(details))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid polkit details.");

        /* Second dispatch of a call polkit has answered (or a handler that ignored our 0). */
        PolkitQuery *existing = polkit_registry_find(*registry, call);
        if (existing)
                return polkit_query_answer(existing, action, details, error);

        r = bus_sender_is_root(call);
        if (r < 0) {
                log_debug_errno(r, "Failed to query the caller's credentials, denying: %m");
                return polkit_deny(error);
        }
        if (r > 0)
                return 1;

        bus = sd_bus_message_get_bus(call);
        sender = sd_bus_message_get_sender(call);
        if (!sender) /* a direct connection: nobody polkit could identify */
                return polkit_deny(error);
        if (!sd_bus_get_event(bus))
                return sd_bus_error_set_errnof(error, EOPNOTSUPP, "Bus is not attached to an event loop.");

        /* Per caller first, so that one local user holding queries open cannot lock everyone else out. */
        if (*registry) {
                size_t mine = 0;

                for (PolkitQuery *q = (*registry)->queries; q; q = q->next) {
                        const char *other = sd_bus_message_get_sender(q->request);

                        if (other && streq(other, sender))
                                mine++;
                }
                if (mine >= POLKIT_QUERIES_PER_SENDER_MAX) {
                        log_debug("Too many pending polkit queries from %s, refusing '%s'.", sender, action);
                        (void) sd_bus_error_set(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                                "Too many authorization requests in flight from this caller.");
                        return -EBUSY;
                }
        }
        if (polkit_registry_n_queries(*registry) >= POLKIT_QUERIES_MAX) {
                log_debug("Too many pending polkit queries, refusing '%s' from %s.", action, sender);
                (void) sd_bus_error_set(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                        "Too many authorization requests in flight.");
                return -EBUSY;
        }

        interactive = sd_bus_message_get_allow_interactive_authorization(call);
        if (interactive < 0)
                return sd_bus_error_set_errnof(error, interactive, "Failed to read message flags: %m");

        r = polkit_check_call_new(call, sender, action, details, interactive > 0, &pk);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to build polkit query: %m");

        if (!*registry) {
                *registry = calloc(1, sizeof(PolkitRegistry));
                if (!*registry)
                        return sd_bus_error_set_errno(error, -ENOMEM);
        }

        q = calloc(1, sizeof(PolkitQuery));
        if (!q)
                return sd_bus_error_set_errno(error, -ENOMEM);
        q->answer = POLKIT_ANSWER_PENDING;
        q->error = SD_BUS_ERROR_NULL;
        q->request = sd_bus_message_ref(call);
        q->action = strdup(action);
        q->details = strv_copy((char *const *) details);
        if (!q->action || !q->details)
                return sd_bus_error_set_errno(error, -ENOMEM);

        r = sd_bus_call_async(bus, &q->slot, pk, polkit_query_callback, q, 0);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to send polkit query: %m");

        /* Linked last, so that the cleanup above never has to unlink a half-built query. */
        q->registry = *registry;
        q->next = (*registry)->queries;
        if (q->next)
                q->next->prev = q;
        (*registry)->queries = q;
        (*registry)->n_queries++;
        TAKE_PTR(q);

        return 0;
}
