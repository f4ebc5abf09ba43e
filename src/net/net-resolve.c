/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "fileio.h"
#include "log.h"
#include "net-resolve.h"
#include "parse-util.h"
#include "random-util.h"
#include "string-util.h"

/* A name in wire form: length-prefixed labels and the root label, at most 255 bytes (RFC 1035 §3.1). */
#define DNS_NAME_WIRE_MAX 255U
#define DNS_HEADER_SIZE 12U
/* Owner name (at least the root label), type, class, TTL, rdlength. */
#define DNS_RR_SIZE_MIN (1U + 10U)
/* Every record of a RESOLVE_MESSAGE_MAX message fits in this many slots. */
#define DNS_RECORDS_MAX (RESOLVE_MESSAGE_MAX / DNS_RR_SIZE_MIN + 1U)
/* Pointers only go backwards, which already ends every walk; this bounds the work on top of that. */
#define DNS_POINTERS_MAX 64U
#define DNS_QUERY_SIZE_MAX (DNS_HEADER_SIZE + DNS_NAME_WIRE_MAX + 4U)

#define DNS_FLAG_QR 0x8000U
#define DNS_FLAG_TC 0x0200U
#define DNS_FLAG_RD 0x0100U
#define DNS_OPCODE(flags) (((flags) >> 11) & 0xfU)
#define DNS_RCODE(flags) ((flags) & 0xfU)

/* Source ports are drawn from here (RFC 6056 §3.2: the whole non-privileged range); after this many ports
 * in use the kernel picks one, which on Linux is random too. */
#define RESOLVE_PORT_MIN 1024U
#define RESOLVE_BIND_TRIES 8U
#define RESOLVE_TIMER_ACCURACY (1 * USEC_PER_MSEC)
#define RESOLVE_DNS_PORT 53U

/* The two questions each query asks, as two messages with their own ids. */
enum {
        QUESTION_A,
        QUESTION_AAAA,
        _QUESTION_MAX,
};

static const uint16_t question_type[_QUESTION_MAX] = {
        [QUESTION_A] = DNS_TYPE_A,
        [QUESTION_AAAA] = DNS_TYPE_AAAA,
};

struct Resolver {
        sd_event *event;
        struct sockaddr_storage servers[RESOLVE_SERVERS_MAX];
        size_t n_servers;
        usec_t attempt_timeout;
        usec_t timeout;
        ResolveQuery *queries;
        size_t n_queries;
};

struct ResolveQuery {
        Resolver *resolver;             /* NULL once completed or detached by resolver_free() */
        ResolveQuery *prev, *next;      /* in resolver->queries */
        bool floating;                  /* nobody holds it: it frees itself after its callback */

        ResolveCallback callback;
        void *userdata;
        uint16_t port;
        char name[HOSTNAME_MAX + 1];    /* lower-case, for debug messages */
        uint8_t qname[DNS_NAME_WIRE_MAX];
        size_t qname_size;

        sd_event_source *defer_source;  /* literals */
        sd_event_source *io_source;
        sd_event_source *attempt_source;
        sd_event_source *timeout_source;
        int fd;
        usec_t attempt_timeout;
        size_t server;                  /* index of the server asked now */
        uint16_t ids[_QUESTION_MAX];
        bool answered[_QUESTION_MAX];
        bool saw_failure;               /* a server answered SERVFAIL, REFUSED, … */
        bool saw_malformed;

        struct in_addr in4[RESOLVE_ADDRESSES_MAX];
        size_t n_in4;
        struct in6_addr in6[RESOLVE_ADDRESSES_MAX];
        size_t n_in6;
};

/* ---- wire format ---- */

static uint16_t read_u16(const uint8_t *p) {
        return (uint16_t) ((p[0] << 8) | p[1]);
}

static uint8_t ascii_lower(uint8_t c) {
        return c >= 'A' && c <= 'Z' ? (uint8_t) (c - 'A' + 'a') : c;
}

/* "www.example.com" (valid, without trailing dot) into lower-case wire form. */
static size_t dns_name_to_wire(const char *name, uint8_t buf[static DNS_NAME_WIRE_MAX]) {
        size_t n = 0;

        for (const char *p = name;;) {
                size_t l = strcspn(p, ".");

                assert(l > 0 && l <= 63 && n + 1 + l + 1 <= DNS_NAME_WIRE_MAX);
                buf[n++] = (uint8_t) l;
                for (size_t i = 0; i < l; i++)
                        buf[n++] = ascii_lower((uint8_t) p[i]);
                p += l;
                if (*p == '\0')
                        break;
                p++;
        }
        buf[n++] = 0;
        return n;
}

/* Reads the (possibly compressed) name at *offset into lower-case wire form. Every pointer must point
 * before the place the previous jump started from, so pointers cannot loop and never point forward. Sets
 * *offset just past the name where it started (past the first pointer). -EMSGSIZE when the message ends
 * inside the name, -EBADMSG for anything else wrong. */
static int dns_read_name(const uint8_t *msg, size_t size, size_t *offset,
                         uint8_t buf[static DNS_NAME_WIRE_MAX], size_t *ret_size) {
        size_t pos = *offset, limit = *offset, end = 0, n = 0;
        unsigned jumps = 0;

        for (;;) {
                uint8_t c;

                if (pos >= size)
                        return -EMSGSIZE;
                c = msg[pos];
                if ((c & 0xc0) == 0xc0) {
                        size_t target;

                        if (pos + 1 >= size)
                                return -EMSGSIZE;
                        target = ((size_t) (c & 0x3f) << 8) | msg[pos + 1];
                        if (target >= limit || ++jumps > DNS_POINTERS_MAX)
                                return -EBADMSG;
                        if (jumps == 1)
                                end = pos + 2;
                        limit = pos = target;
                        continue;
                }
                /* 0x40 and 0x80: extended and reserved label types (RFC 6891 §5), never in an answer. */
                if (c & 0xc0)
                        return -EBADMSG;
                if (n + 1 + c > DNS_NAME_WIRE_MAX)
                        return -EBADMSG;
                if (pos + 1 + c > size)
                        return -EMSGSIZE;
                buf[n++] = c;
                if (c == 0)
                        break;
                for (size_t i = 0; i < c; i++)
                        buf[n++] = ascii_lower(msg[pos + 1 + i]);
                pos += 1 + c;
        }

        *offset = jumps > 0 ? end : pos + 1;
        *ret_size = n;
        return 0;
}

static bool dns_name_equal(const uint8_t *a, size_t a_size, const uint8_t *b, size_t b_size) {
        return a_size == b_size && memcmp(a, b, a_size) == 0;
}

typedef struct DnsRecord {
        uint16_t owner;         /* offset of the owner name */
        uint16_t type;
        uint16_t class;
        uint16_t rdata;         /* offset of the rdata */
        uint16_t rdlength;
} DnsRecord;

/* One resource record at *offset: checks that it is complete and that the rdata of the types we read is
 * well-formed (A 4 bytes, AAAA 16, CNAME exactly one name). -EMSGSIZE when the message ends inside it. */
static int dns_read_record(const uint8_t *msg, size_t size, size_t *offset, DnsRecord *ret) {
        uint8_t name[DNS_NAME_WIRE_MAX];
        size_t pos = *offset, name_size;
        DnsRecord rr = { .owner = (uint16_t) *offset };
        int r;

        r = dns_read_name(msg, size, &pos, name, &name_size);
        if (r < 0)
                return r;
        if (size - pos < 10)
                return -EMSGSIZE;
        rr.type = read_u16(msg + pos);
        rr.class = read_u16(msg + pos + 2);
        rr.rdlength = read_u16(msg + pos + 8);
        pos += 10;
        if (size - pos < rr.rdlength)
                return -EMSGSIZE;
        rr.rdata = (uint16_t) pos;

        if (rr.class == DNS_CLASS_IN) {
                if (rr.type == DNS_TYPE_A && rr.rdlength != 4)
                        return -EBADMSG;
                if (rr.type == DNS_TYPE_AAAA && rr.rdlength != 16)
                        return -EBADMSG;
                if (rr.type == DNS_TYPE_CNAME) {
                        size_t p = pos;

                        /* The name may point back into the message but must fill the rdata exactly. */
                        r = dns_read_name(msg, size, &p, name, &name_size);
                        if (r < 0 || p != pos + rr.rdlength)
                                return -EBADMSG;
                }
        }

        *offset = pos + rr.rdlength;
        *ret = rr;
        return 0;
}

static int dns_parse(const uint8_t *msg, size_t size, uint16_t id, const uint8_t *qname, size_t qname_size,
                     uint16_t qtype, uint16_t port, struct sockaddr_storage *ret, size_t max,
                     size_t *ret_n) {
        uint8_t name[DNS_NAME_WIRE_MAX], current[DNS_NAME_WIRE_MAX];
        size_t pos = DNS_HEADER_SIZE, name_size, current_size, n_answers = 0, n = 0;
        DnsRecord answers[DNS_RECORDS_MAX];
        uint16_t flags, counts[3];
        bool truncated;
        int r;

        if (size < DNS_HEADER_SIZE || size > RESOLVE_MESSAGE_MAX)
                return -EBADMSG;
        flags = read_u16(msg + 2);
        if (read_u16(msg) != id || !(flags & DNS_FLAG_QR) || DNS_OPCODE(flags) != 0)
                return -ENOMSG;
        truncated = flags & DNS_FLAG_TC;
        if (read_u16(msg + 4) != 1)
                return -EBADMSG;
        for (size_t i = 0; i < 3; i++)
                counts[i] = read_u16(msg + 6 + 2 * i);

        /* The question, echoed exactly. */
        r = dns_read_name(msg, size, &pos, name, &name_size);
        if (r < 0)
                return -EBADMSG;
        if (size - pos < 4)
                return -EBADMSG;
        if (!dns_name_equal(name, name_size, qname, qname_size) || read_u16(msg + pos) != qtype ||
            read_u16(msg + pos + 2) != DNS_CLASS_IN)
                return -ENOMSG;
        pos += 4;

        /* Every record of every section must parse. In a truncated message the records that are complete
         * are used and the rest is not looked at. */
        for (size_t section = 0; section < 3; section++)
                for (size_t i = 0; i < counts[section]; i++) {
                        DnsRecord rr;

                        r = dns_read_record(msg, size, &pos, &rr);
                        if (r == -EMSGSIZE && truncated)
                                goto parsed;
                        if (r < 0)
                                return -EBADMSG;
                        if (section == 0) {
                                assert(n_answers < DNS_RECORDS_MAX);
                                answers[n_answers++] = rr;
                        }
                }
parsed:
        switch (DNS_RCODE(flags)) {
        case DNS_RCODE_NOERROR:
                break;
        case DNS_RCODE_NXDOMAIN:
                return -ENOENT;
        default:
                return -EIO;
        }

        /* Follow the CNAME chain from the question's name to the name that holds the addresses. */
        memcpy(current, qname, qname_size);
        current_size = qname_size;
        for (unsigned hops = 0;; hops++) {
                bool found = false;

                for (size_t i = 0; i < n_answers && !found; i++) {
                        size_t p = answers[i].owner;

                        if (answers[i].type != DNS_TYPE_CNAME || answers[i].class != DNS_CLASS_IN)
                                continue;
                        if (dns_read_name(msg, size, &p, name, &name_size) < 0)
                                return -EBADMSG;
                        if (!dns_name_equal(name, name_size, current, current_size))
                                continue;
                        p = answers[i].rdata;
                        if (dns_read_name(msg, size, &p, current, &current_size) < 0)
                                return -EBADMSG;
                        found = true;
                }
                if (!found)
                        break;
                if (hops >= RESOLVE_CNAME_MAX)
                        return -EBADMSG;
        }

        /* Validated completely: only now is ret written. */
        for (size_t i = 0; i < n_answers && n < max; i++) {
                size_t p = answers[i].owner;

                if (answers[i].type != qtype || answers[i].class != DNS_CLASS_IN)
                        continue;
                /* Every owner was read once already: this cannot fail. */
                if (dns_read_name(msg, size, &p, name, &name_size) < 0 ||
                    !dns_name_equal(name, name_size, current, current_size))
                        continue;
                ret[n] = (struct sockaddr_storage) {};
                if (qtype == DNS_TYPE_A) {
                        struct sockaddr_in *sin = (struct sockaddr_in *) &ret[n++];

                        sin->sin_family = AF_INET;
                        sin->sin_port = htons(port);
                        memcpy(&sin->sin_addr, msg + answers[i].rdata, 4);
                } else {
                        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ret[n++];

                        sin6->sin6_family = AF_INET6;
                        sin6->sin6_port = htons(port);
                        memcpy(&sin6->sin6_addr, msg + answers[i].rdata, 16);
                }
        }
        *ret_n = n;
        return 0;
}

/* A name to query: valid host name, one trailing dot dropped, lower-cased into buf. */
static int host_name_normalize(const char *name, char buf[static HOSTNAME_MAX + 1]) {
        size_t l = strlen(name);

        if (l > 0 && name[l - 1] == '.')
                l--;
        if (l == 0 || l > HOSTNAME_MAX)
                return -EINVAL;
        memcpy(buf, name, l);
        buf[l] = '\0';
        if (!hostname_is_valid(buf))
                return -EINVAL;
        ascii_strlower(buf);
        return 0;
}

int dns_parse_response(const uint8_t *msg, size_t size, uint16_t id, const char *qname, uint16_t qtype,
                       uint16_t port, struct sockaddr_storage *ret, size_t max, size_t *ret_n) {
        char name[HOSTNAME_MAX + 1];
        uint8_t wire[DNS_NAME_WIRE_MAX];
        size_t wire_size;

        assert(msg || size == 0);
        assert(ret || max == 0);
        assert(ret_n);

        if (!qname || host_name_normalize(qname, name) < 0)
                return -EINVAL;
        if (qtype != DNS_TYPE_A && qtype != DNS_TYPE_AAAA)
                return -EINVAL;
        wire_size = dns_name_to_wire(name, wire);
        return dns_parse(msg, size, id, wire, wire_size, qtype, port, ret, max, ret_n);
}

static size_t dns_build_query(uint8_t buf[static DNS_QUERY_SIZE_MAX], uint16_t id, const uint8_t *qname,
                              size_t qname_size, uint16_t qtype) {
        size_t n = 0;

        buf[n++] = (uint8_t) (id >> 8);
        buf[n++] = (uint8_t) id;
        buf[n++] = (uint8_t) (DNS_FLAG_RD >> 8);        /* a standard query, recursion desired */
        buf[n++] = 0;
        buf[n++] = 0;                                    /* QDCOUNT 1, the other counts 0 */
        buf[n++] = 1;
        memset(buf + n, 0, 6);
        n += 6;
        memcpy(buf + n, qname, qname_size);
        n += qname_size;
        buf[n++] = (uint8_t) (qtype >> 8);
        buf[n++] = (uint8_t) qtype;
        buf[n++] = 0;
        buf[n++] = DNS_CLASS_IN;
        return n;
}

/* ---- servers ---- */

static socklen_t sockaddr_len(const struct sockaddr_storage *sa) {
        return sa->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static bool sockaddr_equal(const struct sockaddr_storage *a, socklen_t a_len,
                           const struct sockaddr_storage *b) {
        if (a_len != sockaddr_len(b) || a->ss_family != b->ss_family)
                return false;
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *x = (const struct sockaddr_in *) a;
                const struct sockaddr_in *y = (const struct sockaddr_in *) b;

                return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
        }
        if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *x = (const struct sockaddr_in6 *) a;
                const struct sockaddr_in6 *y = (const struct sockaddr_in6 *) b;

                return x->sin6_port == y->sin6_port &&
                       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
        }
        return false;
}

/* A plain address (no zone id: inet_pton() refuses one) into ret with port. */
static int address_parse(const char *s, uint16_t port, struct sockaddr_storage *ret) {
        struct sockaddr_storage sa = {};
        struct sockaddr_in *sin = (struct sockaddr_in *) &sa;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &sa;

        if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
                sin->sin_family = AF_INET;
                sin->sin_port = htons(port);
        } else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(port);
        } else
                return -EINVAL;
        *ret = sa;
        return 0;
}

/* "IP", "IP:port", "[IPv6]:port"; a bare IPv6 address has no port. */
static int server_parse(const char *s, struct sockaddr_storage *ret) {
        HostPort hp;

        if (address_parse(s, RESOLVE_DNS_PORT, ret) >= 0)
                return 0;
        if (parse_host_port(s, RESOLVE_DNS_PORT, &hp) < 0 || hp.family == AF_UNSPEC)
                return -EINVAL;
        return address_parse(hp.host, hp.port, ret);
}

static int resolv_conf_parse(const char *path, struct sockaddr_storage *servers, size_t *n) {
        _cleanup_free_ char *text = NULL;
        char *line, *state = NULL;
        int r;

        r = read_full_file(path, RESOLVE_RESOLV_CONF_SIZE_MAX, &text, NULL);
        if (r < 0)
                return log_debug_errno(r, "Failed to read '%s': %m", path);

        for (line = strtok_r(text, "\n", &state); line; line = strtok_r(NULL, "\n", &state)) {
                char *word, *p;

                line = strstrip(line);
                p = startswith(line, "nameserver");
                if (!p || !strchr(" \t", *p) || *p == '\0')
                        continue;
                p += strspn(p, " \t");
                word = p;
                p += strcspn(p, WHITESPACE "#;");
                *p = '\0';
                if (*n >= RESOLVE_SERVERS_MAX) {
                        log_debug("%s: more than %u nameservers, ignoring '%s'.", path, RESOLVE_SERVERS_MAX,
                                  word);
                        continue;
                }
                if (address_parse(word, RESOLVE_DNS_PORT, servers + *n) < 0) {
                        log_debug("%s: bad or scoped nameserver address '%s', ignoring.", path, word);
                        continue;
                }
                (*n)++;
        }
        return 0;
}

int resolver_new(sd_event *event, char *const *servers, const char *resolv_conf, Resolver **ret) {
        _cleanup_(resolver_freep) Resolver *resolver = NULL;
        int r;

        assert(event);
        assert(ret);

        resolver = calloc(1, sizeof(Resolver));
        if (!resolver)
                return -ENOMEM;
        resolver->event = sd_event_ref(event);
        resolver->attempt_timeout = RESOLVE_ATTEMPT_TIMEOUT;
        resolver->timeout = RESOLVE_TIMEOUT;

        if (servers && servers[0]) {
                for (char *const *s = servers; *s; s++) {
                        if (resolver->n_servers >= RESOLVE_SERVERS_MAX)
                                return -E2BIG;
                        r = server_parse(*s, resolver->servers + resolver->n_servers);
                        if (r < 0)
                                return log_debug_errno(r, "Bad resolver address '%s': %m", *s);
                        resolver->n_servers++;
                }
        } else {
                r = resolv_conf_parse(resolv_conf ?: RESOLVE_RESOLV_CONF, resolver->servers,
                                      &resolver->n_servers);
                if (r < 0)
                        return r;
        }
        if (resolver->n_servers == 0)
                return -ENOENT;

        *ret = TAKE_PTR(resolver);
        return 0;
}

static void query_detach(ResolveQuery *q);

Resolver *resolver_free(Resolver *resolver) {
        if (!resolver)
                return NULL;

        while (resolver->queries) {
                ResolveQuery *q = resolver->queries;

                query_detach(q);
                if (q->floating)
                        free(q);
        }
        sd_event_unref(resolver->event);
        return mfree(resolver);
}

int resolver_set_timeouts(Resolver *resolver, usec_t attempt, usec_t total) {
        assert(resolver);

        if (attempt == 0 || attempt == USEC_INFINITY || total == 0 || total == USEC_INFINITY)
                return -EINVAL;
        resolver->attempt_timeout = attempt;
        resolver->timeout = total;
        return 0;
}

size_t resolver_get_servers(const Resolver *resolver, const struct sockaddr_storage **ret) {
        assert(resolver);
        assert(ret);

        *ret = resolver->servers;
        return resolver->n_servers;
}

/* ---- queries ---- */

/* Drops everything the query holds in the loop and leaves the resolver's list. */
static void query_detach(ResolveQuery *q) {
        q->defer_source = sd_event_source_disable_unref(q->defer_source);
        q->io_source = sd_event_source_disable_unref(q->io_source);
        q->attempt_source = sd_event_source_disable_unref(q->attempt_source);
        q->timeout_source = sd_event_source_disable_unref(q->timeout_source);
        q->fd = safe_close(q->fd);

        if (!q->resolver)
                return;
        if (q->prev)
                q->prev->next = q->next;
        else
                q->resolver->queries = q->next;
        if (q->next)
                q->next->prev = q->prev;
        q->prev = q->next = NULL;
        q->resolver->n_queries--;
        q->resolver = NULL;
}

ResolveQuery *resolve_query_free(ResolveQuery *q) {
        if (!q)
                return NULL;

        query_detach(q);
        return mfree(q);
}

/* Runs the callback exactly once. The query may be freed by it (or, floating, is freed here): the caller
 * must not touch q afterwards. */
static void query_complete(ResolveQuery *q, int error) {
        struct sockaddr_storage addresses[RESOLVE_ADDRESSES_MAX];
        ResolveCallback callback = q->callback;
        bool floating = q->floating;
        size_t n = 0;

        if (error >= 0) {
                /* Copied out, so that freeing the query from the callback leaves them valid. */
                for (size_t i = 0; i < q->n_in4 && n < RESOLVE_ADDRESSES_MAX; i++) {
                        struct sockaddr_in *sin = (struct sockaddr_in *) &addresses[n++];

                        *sin = (struct sockaddr_in) {
                                .sin_family = AF_INET,
                                .sin_port = htons(q->port),
                                .sin_addr = q->in4[i],
                        };
                }
                for (size_t i = 0; i < q->n_in6 && n < RESOLVE_ADDRESSES_MAX; i++) {
                        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &addresses[n++];

                        *sin6 = (struct sockaddr_in6) {
                                .sin6_family = AF_INET6,
                                .sin6_port = htons(q->port),
                                .sin6_addr = q->in6[i],
                        };
                }
                assert(n > 0);
                log_debug("Resolved '%s' to %zu address(es).", q->name, n);
        } else
                log_debug_errno(error, "Failed to resolve '%s': %m", q->name);

        query_detach(q);
        q->callback = NULL;
        callback(q, error, error >= 0 ? addresses : NULL, n, q->userdata);
        if (floating)
                free(q);
}

/* Out of servers or out of time: the best of what was seen. */
static void query_finish(ResolveQuery *q) {
        if (q->n_in4 + q->n_in6 > 0)
                query_complete(q, 0);
        else if (q->answered[QUESTION_A] && q->answered[QUESTION_AAAA])
                query_complete(q, -ENOENT);
        else if (q->saw_failure)
                query_complete(q, -EIO);
        else if (q->saw_malformed)
                query_complete(q, -EBADMSG);
        else
                query_complete(q, -ETIMEDOUT);
}

static int socket_bind_random_port(int fd, int family) {
        for (unsigned i = 0; i < RESOLVE_BIND_TRIES; i++) {
                uint16_t port = (uint16_t) (RESOLVE_PORT_MIN + random_u64_range(65536 - RESOLVE_PORT_MIN));
                struct sockaddr_storage sa = { .ss_family = family };

                if (family == AF_INET)
                        ((struct sockaddr_in *) &sa)->sin_port = htons(port);
                else
                        ((struct sockaddr_in6 *) &sa)->sin6_port = htons(port);
                if (bind(fd, (struct sockaddr *) &sa, sockaddr_len(&sa)) >= 0)
                        return 0;
                if (errno != EADDRINUSE)
                        return -errno;
        }
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static int on_attempt_timeout(sd_event_source *s, uint64_t usec, void *userdata);

/* Asks server q->server the questions still open, from a fresh socket with fresh ids. */
static int query_attempt_one(ResolveQuery *q) {
        const struct sockaddr_storage *server = q->resolver->servers + q->server;
        _cleanup_close_ int fd = -EBADF;
        int r;

        q->io_source = sd_event_source_disable_unref(q->io_source);
        q->fd = safe_close(q->fd);

        fd = socket(server->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_UDP);
        if (fd < 0)
                return -errno;
        r = socket_bind_random_port(fd, server->ss_family);
        if (r < 0)
                return r;
        /* Connected: the kernel drops datagrams from elsewhere and reports ICMP errors to us. */
        if (connect(fd, (const struct sockaddr *) server, sockaddr_len(server)) < 0)
                return -errno;

        for (size_t i = 0; i < _QUESTION_MAX; i++) {
                uint8_t buf[DNS_QUERY_SIZE_MAX];
                size_t n;

                if (q->answered[i])
                        continue;
                do
                        q->ids[i] = (uint16_t) random_u64_range(UINT16_MAX + 1);
                while (i > 0 && q->ids[i] == q->ids[0]);
                n = dns_build_query(buf, q->ids[i], q->qname, q->qname_size, question_type[i]);
                if (send(fd, buf, n, MSG_NOSIGNAL) < 0)
                        return -errno;
        }

        r = sd_event_add_io(q->resolver->event, &q->io_source, fd, EPOLLIN, on_io, q);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(q->io_source, "resolve-io");
        q->fd = TAKE_FD(fd);

        if (!q->attempt_source) {
                r = sd_event_add_time_relative(q->resolver->event, &q->attempt_source, CLOCK_MONOTONIC,
                                               q->attempt_timeout, RESOLVE_TIMER_ACCURACY,
                                               on_attempt_timeout, q);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(q->attempt_source, "resolve-attempt-timeout");
                return 0;
        }
        r = sd_event_source_set_time_relative(q->attempt_source, q->attempt_timeout);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(q->attempt_source, SD_EVENT_ONESHOT);
}

/* Tries the servers from q->server on until one takes the questions; completes the query when none is
 * left (q may then be gone). */
static void query_attempt(ResolveQuery *q) {
        for (; q->server < q->resolver->n_servers; q->server++) {
                int r = query_attempt_one(q);

                if (r >= 0)
                        return;
                log_debug_errno(r, "Failed to ask server %zu for '%s', trying the next: %m", q->server,
                                q->name);
        }
        query_finish(q);
}

static void query_next_server(ResolveQuery *q) {
        q->server++;
        query_attempt(q);
}

static void query_handle_message(ResolveQuery *q, const uint8_t *msg, size_t size) {
        struct sockaddr_storage addresses[RESOLVE_ADDRESSES_MAX];
        size_t question = _QUESTION_MAX, n;
        int r;

        for (size_t i = 0; size >= 2 && i < _QUESTION_MAX; i++)
                if (!q->answered[i] && read_u16(msg) == q->ids[i])
                        question = i;
        if (question == _QUESTION_MAX) {
                log_debug("Ignoring a DNS message with an unexpected id for '%s'.", q->name);
                return;
        }

        r = dns_parse(msg, size, q->ids[question], q->qname, q->qname_size, question_type[question], q->port,
                      addresses, RESOLVE_ADDRESSES_MAX, &n);
        if (r == -ENOENT) {
                query_complete(q, -ENOENT);
                return;
        }
        if (r == -EIO) {
                log_debug("Server %zu failed to resolve '%s', trying the next.", q->server, q->name);
                q->saw_failure = true;
                query_next_server(q);
                return;
        }
        if (r < 0) {
                /* Not ours (-ENOMSG) or malformed: wait for the real answer. */
                if (r == -EBADMSG)
                        q->saw_malformed = true;
                log_debug_errno(r, "Ignoring a DNS answer for '%s': %m", q->name);
                return;
        }

        q->answered[question] = true;
        for (size_t i = 0; i < n; i++)
                if (addresses[i].ss_family == AF_INET && q->n_in4 < RESOLVE_ADDRESSES_MAX)
                        q->in4[q->n_in4++] = ((struct sockaddr_in *) &addresses[i])->sin_addr;
                else if (addresses[i].ss_family == AF_INET6 && q->n_in6 < RESOLVE_ADDRESSES_MAX)
                        q->in6[q->n_in6++] = ((struct sockaddr_in6 *) &addresses[i])->sin6_addr;

        if (q->answered[QUESTION_A] && q->answered[QUESTION_AAAA])
                query_complete(q, q->n_in4 + q->n_in6 > 0 ? 0 : -ENOENT);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ResolveQuery *q = userdata;
        uint8_t buf[RESOLVE_MESSAGE_MAX];
        struct sockaddr_storage from;
        socklen_t from_len = sizeof(from);
        ssize_t n;

        /* One datagram per dispatch: the source is level-triggered, and a flood of junk cannot starve
         * other sources. */
        n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *) &from, &from_len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                /* ECONNREFUSED and the like: an ICMP error, the server is not there. */
                log_debug_errno(errno, "Server %zu unreachable for '%s', trying the next: %m", q->server,
                                q->name);
                query_next_server(q);
                return 0;
        }
        if (!sockaddr_equal(&from, from_len, q->resolver->servers + q->server)) {
                log_debug("Ignoring a DNS message from an address not asked for '%s'.", q->name);
                return 0;
        }
        if ((size_t) n > sizeof(buf)) {
                log_debug("Ignoring a DNS message of %zd bytes for '%s'.", n, q->name);
                q->saw_malformed = true;
                return 0;
        }
        query_handle_message(q, buf, (size_t) n);
        return 0;
}

static int on_attempt_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        ResolveQuery *q = userdata;

        /* One question answered with addresses is good enough: do not wait on a server that drops AAAA
         * queries. */
        if (q->n_in4 + q->n_in6 > 0)
                query_complete(q, 0);
        else {
                log_debug("Server %zu did not answer for '%s', trying the next.", q->server, q->name);
                query_next_server(q);
        }
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        query_finish(userdata);
        return 0;
}

static int on_literal(sd_event_source *s, void *userdata) {
        query_complete(userdata, 0);
        return 0;
}

/* IP literals (IPv6 possibly in brackets) and "localhost" fill the addresses and return 1; a name to
 * query is stored in wire form and returns 0. */
static int query_set_name(ResolveQuery *q, const char *name) {
        char buf[HOSTNAME_MAX + 1];
        size_t l = strlen(name);
        int r;

        if (l >= 2 && name[0] == '[' && name[l - 1] == ']') {
                if (l - 2 > INET6_ADDRSTRLEN)
                        return -EINVAL;
                memcpy(buf, name + 1, l - 2);
                buf[l - 2] = '\0';
                if (inet_pton(AF_INET6, buf, &q->in6[0]) != 1)
                        return -EINVAL;
                q->n_in6 = 1;
                return 1;
        }
        if (inet_pton(AF_INET, name, &q->in4[0]) == 1) {
                q->n_in4 = 1;
                return 1;
        }
        if (inet_pton(AF_INET6, name, &q->in6[0]) == 1) {
                q->n_in6 = 1;
                return 1;
        }

        r = host_name_normalize(name, buf);
        if (r < 0)
                return r;
        strcpy(q->name, buf);
        if (streq(buf, "localhost")) {
                q->in4[q->n_in4++] = (struct in_addr) { .s_addr = htonl(INADDR_LOOPBACK) };
                q->in6[q->n_in6++] = in6addr_loopback;
                return 1;
        }
        q->qname_size = dns_name_to_wire(buf, q->qname);
        return 0;
}

int resolver_resolve(Resolver *resolver, const char *name, uint16_t port, ResolveCallback callback,
                     void *userdata, ResolveQuery **ret) {
        _cleanup_(resolve_query_freep) ResolveQuery *q = NULL;
        int literal, r;

        assert(resolver);
        assert(callback);

        if (!name)
                return -EINVAL;

        q = calloc(1, sizeof(ResolveQuery));
        if (!q)
                return -ENOMEM;
        *q = (ResolveQuery) {
                .fd = -EBADF,
                .callback = callback,
                .userdata = userdata,
                .port = port,
                .floating = !ret,
                .attempt_timeout = resolver->attempt_timeout,
        };
        literal = query_set_name(q, name);
        if (literal < 0)
                return log_debug_errno(literal, "Refusing to resolve a bad name: %m");
        if (literal && isempty(q->name))
                (void) snprintf(q->name, sizeof(q->name), "%s", name);
        if (resolver->n_queries >= RESOLVE_QUERIES_MAX)
                return -EBUSY;

        if (literal) {
                r = sd_event_add_defer(resolver->event, &q->defer_source, on_literal, q);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(q->defer_source, "resolve-literal");
        } else {
                r = sd_event_add_time_relative(resolver->event, &q->timeout_source, CLOCK_MONOTONIC,
                                               resolver->timeout, RESOLVE_TIMER_ACCURACY, on_timeout, q);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(q->timeout_source, "resolve-timeout");
        }

        q->resolver = resolver;
        q->next = resolver->queries;
        if (resolver->queries)
                resolver->queries->prev = q;
        resolver->queries = q;
        resolver->n_queries++;

        if (!literal) {
                for (; q->server < resolver->n_servers; q->server++) {
                        r = query_attempt_one(q);
                        if (r >= 0)
                                break;
                        log_debug_errno(r, "Failed to ask server %zu for '%s', trying the next: %m",
                                        q->server, q->name);
                }
                if (q->server >= resolver->n_servers) {
                        /* Nothing could be sent: report from the loop, never from inside this call. */
                        r = sd_event_source_set_time_relative(q->timeout_source, 0);
                        if (r < 0)
                                return r;
                }
        }

        if (ret)
                *ret = q;
        TAKE_PTR(q);
        return 0;
}
