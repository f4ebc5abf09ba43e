/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crypto-svid.h"
#include "crypto-util.h"
#include "log.h"

#define SVID_XKU_BOTH (XKU_SSL_SERVER | XKU_SSL_CLIENT)

/* Longest piece of a peer-supplied string (URI SAN, subject) quoted in a reason. */
#define SVID_REASON_QUOTE_MAX 256

/* What a rule check found wrong. The URI is kept for the message of svid_verify(). */
typedef struct SvidProblem {
        const char *reason; /* the rule, static */
        const char *detail; /* the SPIFFE parser's reason when the URI SAN was not a SPIFFE ID */
        char *uri;          /* the URI SAN at fault, or NULL */
} SvidProblem;

static void svid_problem_done(SvidProblem *p) {
        p->uri = mfree(p->uri);
}

static int problem(SvidProblem *p, const char *reason) {
        p->reason = reason;
        return -EKEYREJECTED;
}

/* X509-SVID §4.3: keyUsage MUST be set on every SVID and MUST be marked critical. */
static bool key_usage_is_critical(X509 *x) {
        int idx = X509_get_ext_by_NID(x, NID_key_usage, -1);
        X509_EXTENSION *ext = idx >= 0 ? X509_get_ext(x, idx) : NULL;

        return ext && X509_EXTENSION_get_critical(ext) == 1;
}

static int check_common(X509 *cert, SvidProblem *p) {
        if (X509_get_version(cert) != X509_VERSION_3)
                return problem(p, "not an X.509 v3 certificate");
        /* Set when an extension OpenSSL interprets is malformed or present twice: either way we cannot
         * know which value a peer's verifier would use. */
        if (X509_get_extension_flags(cert) & EXFLAG_INVALID)
                return problem(p, "malformed or duplicate extensions");
        return 0;
}

/* Collects the URI SANs: returns how many there are, the first one (copied, NUL-checked) in *ret_uri. */
static int get_uri_sans(X509 *cert, char **ret_uri, SvidProblem *p) {
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names = NULL;
        _cleanup_free_ char *uri = NULL;
        int crit = -1, n = 0;

        names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
        if (!names) {
                ERR_clear_error();
                if (crit == -1)
                        return 0;
                return problem(p, "malformed or duplicate subjectAltName extension");
        }

        for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
                const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
                const ASN1_IA5STRING *s;
                int len;

                if (gn->type != GEN_URI)
                        continue;
                if (n++ > 0)
                        continue;

                s = gn->d.uniformResourceIdentifier;
                len = ASN1_STRING_length(s);
                if (len < 0 || memchr(ASN1_STRING_get0_data(s), '\0', (size_t) len))
                        return problem(p, "URI SAN contains a NUL byte");
                uri = malloc((size_t) len + 1);
                if (!uri)
                        return -ENOMEM;
                memcpy(uri, ASN1_STRING_get0_data(s), (size_t) len);
                uri[len] = '\0';
        }

        *ret_uri = TAKE_PTR(uri);
        return n;
}

static int leaf_check(X509 *leaf, SpiffeId **ret_id, SvidProblem *p) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_free_ char *uri = NULL;
        uint32_t flags, ku;
        int r;

        r = check_common(leaf, p);
        if (r < 0)
                return r;

        r = get_uri_sans(leaf, &uri, p);
        if (r < 0)
                return r;
        if (r == 0)
                return problem(p, "no URI SAN");
        if (r > 1)
                return problem(p, "more than one URI SAN");
        r = spiffe_id_from_string(uri, &id, &p->detail);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                p->uri = TAKE_PTR(uri);
                return problem(p, "URI SAN is not a valid SPIFFE ID");
        }
        if (spiffe_id_is_trust_domain(id)) {
                p->uri = TAKE_PTR(uri);
                return problem(p, "SPIFFE ID has no path");
        }

        flags = X509_get_extension_flags(leaf);
        if (!(flags & EXFLAG_BCONS))
                return problem(p, "no basicConstraints extension");
        if (flags & EXFLAG_CA)
                return problem(p, "basicConstraints is CA:TRUE");

        if (!(flags & EXFLAG_KUSAGE))
                return problem(p, "no keyUsage extension");
        if (!key_usage_is_critical(leaf))
                return problem(p, "keyUsage is not marked critical");
        ku = X509_get_key_usage(leaf);
        if (!(ku & KU_DIGITAL_SIGNATURE))
                return problem(p, "keyUsage lacks digitalSignature");
        if (ku & KU_KEY_CERT_SIGN)
                return problem(p, "keyUsage has keyCertSign");
        if (ku & KU_CRL_SIGN)
                return problem(p, "keyUsage has cRLSign");

        /* X509-SVID §4.4: when present, both purposes must be listed (any agent is client and server). */
        if ((flags & EXFLAG_XKUSAGE) && (X509_get_extended_key_usage(leaf) & SVID_XKU_BOTH) != SVID_XKU_BOTH)
                return problem(p, "extendedKeyUsage lacks serverAuth or clientAuth");

        if (ret_id)
                *ret_id = TAKE_PTR(id);
        return 0;
}

static int signing_check(X509 *cert, const char *trust_domain, SvidProblem *p) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_free_ char *uri = NULL;
        uint32_t flags;
        int r;

        r = check_common(cert, p);
        if (r < 0)
                return r;

        flags = X509_get_extension_flags(cert);
        if (!(flags & EXFLAG_BCONS))
                return problem(p, "no basicConstraints extension");
        if (!(flags & EXFLAG_CA))
                return problem(p, "basicConstraints is CA:FALSE");
        if (!(flags & EXFLAG_KUSAGE))
                return problem(p, "no keyUsage extension");
        if (!key_usage_is_critical(cert))
                return problem(p, "keyUsage is not marked critical");
        if (!(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN))
                return problem(p, "keyUsage lacks keyCertSign");

        /* X509-SVID §3.2: a signing certificate need not carry a SPIFFE ID; if it does, it is the
         * trust-domain ID, and we require our own trust domain. */
        r = get_uri_sans(cert, &uri, p);
        if (r < 0)
                return r;
        if (r == 0)
                return 0;
        if (r > 1)
                return problem(p, "more than one URI SAN");
        r = spiffe_id_from_string(uri, &id, &p->detail);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                p->uri = TAKE_PTR(uri);
                return problem(p, "URI SAN is not a valid SPIFFE ID");
        }
        if (!spiffe_id_is_trust_domain(id)) {
                p->uri = TAKE_PTR(uri);
                return problem(p, "SPIFFE ID has a path (only the trust-domain ID is allowed)");
        }
        if (!spiffe_id_member_of(id, trust_domain)) {
                p->uri = TAKE_PTR(uri);
                return problem(p, "SPIFFE ID is of another trust domain");
        }
        return 0;
}

int svid_check_leaf(X509 *leaf, SpiffeId **ret_id, const char **ret_reason) {
        _cleanup_(svid_problem_done) SvidProblem p = {};
        int r;

        assert(leaf);

        r = leaf_check(leaf, ret_id, &p);
        if (r < 0 && ret_reason)
                *ret_reason = p.detail ?: p.reason;
        return r;
}

int svid_check_signing_certificate(X509 *cert, const char *trust_domain, const char **ret_reason) {
        _cleanup_(svid_problem_done) SvidProblem p = {};
        int r;

        assert(cert);

        if (!spiffe_trust_domain_is_valid(trust_domain))
                return -EINVAL;

        r = signing_check(cert, trust_domain, &p);
        if (r < 0 && ret_reason)
                *ret_reason = p.detail ?: p.reason;
        return r;
}

int svid_get_trust_domain_of_ca(X509 *ca, SpiffeId **ret) {
        _cleanup_(svid_problem_done) SvidProblem p = {};
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_free_ char *uri = NULL;
        int r;

        assert(ca);
        assert(ret);

        r = get_uri_sans(ca, &uri, &p);
        if (r < 0)
                return r;
        if (r != 1)
                return log_debug_errno(EKEYREJECTED, "CA certificate has %d URI SANs, expected one.", r);
        r = spiffe_id_from_string(uri, &id, &p.detail);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return log_debug_errno(EKEYREJECTED, "CA certificate URI SAN is not a SPIFFE ID: %s",
                                       p.detail);
        if (!spiffe_id_is_trust_domain(id))
                return log_debug_errno(EKEYREJECTED, "CA certificate SPIFFE ID has a path.");

        *ret = TAKE_PTR(id);
        return 0;
}

/* Copies at most SVID_REASON_QUOTE_MAX bytes of a peer-supplied string, with anything but printable
 * ASCII replaced, so that a reason can go into a log line as is. */
static void quote(char *buf, size_t size, const char *s) {
        size_t i;

        assert(size > 0);
        for (i = 0; s && s[i] && i + 1 < size; i++)
                buf[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'' ? s[i] : '?';
        buf[i] = '\0';
}

static void describe_cert(char *buf, size_t size, X509 *cert, int depth) {
        char name[SVID_REASON_QUOTE_MAX];

        if (depth == 0) {
                snprintf(buf, size, "leaf certificate");
                return;
        }
        /* X509_NAME_oneline() escapes non-printable bytes and truncates to the buffer. */
        if (!cert || !X509_NAME_oneline(X509_get_subject_name(cert), name, sizeof(name)))
                name[0] = '\0';
        if (cert && X509_self_signed(cert, 0) == 1)
                snprintf(buf, size, "root '%s'", name);
        else
                snprintf(buf, size, "intermediate %d '%s'", depth, name);
        ERR_clear_error();
}

static int verify_fail(char **ret_reason, int error, const char *format, ...) _printf_(3, 4);
static int verify_fail(char **ret_reason, int error, const char *format, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r < 0)
                s = NULL;

        log_debug_errno(error, "SVID verification failed: %s", strna(s));
        if (ret_reason)
                *ret_reason = TAKE_PTR(s);
        return -ERRNO_VALUE(error);
}

static int problem_fail(char **ret_reason, const char *what, const SvidProblem *p) {
        char uri[SVID_REASON_QUOTE_MAX];

        if (!p->uri)
                return verify_fail(ret_reason, EKEYREJECTED, "%s: %s", what, p->reason);
        quote(uri, sizeof(uri), p->uri);
        if (p->detail)
                return verify_fail(ret_reason, EKEYREJECTED, "%s: %s '%s': %s", what, p->reason, uri,
                                   p->detail);
        return verify_fail(ret_reason, EKEYREJECTED, "%s: %s: '%s'", what, p->reason, uri);
}

static void format_asn1_time(char *buf, size_t size, const ASN1_TIME *t) {
        struct tm tm = {};

        if (!t || !ASN1_TIME_to_tm(t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, size, "?");
}

static int map_verify_error(X509_STORE_CTX *ctx, const TrustBundle *bundle, char **ret_reason) {
        int err = X509_STORE_CTX_get_error(ctx), depth = X509_STORE_CTX_get_error_depth(ctx);
        X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
        const char *s = X509_verify_cert_error_string(err);
        char what[2 * SVID_REASON_QUOTE_MAX], nb[32], na[32];

        describe_cert(what, sizeof(what), cert, depth);

        switch (err) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
                format_asn1_time(nb, sizeof(nb), cert ? X509_get0_notBefore(cert) : NULL);
                format_asn1_time(na, sizeof(na), cert ? X509_get0_notAfter(cert) : NULL);
                return verify_fail(ret_reason, EKEYEXPIRED, "%s: %s (valid from %s until %s)", what, s, nb,
                                   na);

        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_CERT_UNTRUSTED:
        case X509_V_ERR_CERT_REJECTED:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
        case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
                return verify_fail(ret_reason, ENOKEY,
                                   "%s: %s: does not chain to a root of trust domain '%s'", what, s,
                                   trust_bundle_trust_domain(bundle));

        default:
                return verify_fail(ret_reason, EKEYREJECTED, "%s: %s", what, s);
        }
}

int svid_verify(const TrustBundle *bundle, X509 *leaf, STACK_OF(X509) *intermediates, usec_t now_usec,
                SpiffeId **ret_id, char **ret_reason) {
        _cleanup_(svid_problem_done) SvidProblem p = {};
        _cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *ctx = NULL;
        _cleanup_(X509_STORE_freep) X509_STORE *store = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        const char *td;
        STACK_OF(X509) *chain;
        int n, r;

        if (!bundle || !leaf)
                return verify_fail(ret_reason, EINVAL, "no %s to verify",
                                   bundle ? "certificate" : "trust bundle");

        td = trust_bundle_trust_domain(bundle);
        /* In a TLS verify callback OpenSSL's untrusted stack is the whole peer chain, leaf included:
         * the leaf is not an intermediate, so it is neither counted nor held to the CA rules. */
        n = 0;
        for (int i = 0; intermediates && i < sk_X509_num(intermediates); i++)
                if (X509_cmp(sk_X509_value(intermediates, i), leaf) != 0)
                        n++;
        if (n > SVID_CHAIN_DEPTH_MAX)
                return verify_fail(ret_reason, EKEYREJECTED,
                                   "chain has %d intermediate certificates, at most %d are allowed", n,
                                   SVID_CHAIN_DEPTH_MAX);
        if (trust_bundle_size(bundle) == 0)
                return verify_fail(ret_reason, ENOKEY, "trust bundle of '%s' is empty", td);

        r = leaf_check(leaf, &id, &p);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return problem_fail(ret_reason, "leaf certificate", &p);
        /* A leaf of another trust domain is not vouched for by this bundle at all: untrusted, not
         * malformed. */
        if (!spiffe_id_member_of(id, td))
                return verify_fail(ret_reason, ENOKEY,
                                   "leaf certificate: SPIFFE ID '%s' is not in trust domain '%s'", id->uri,
                                   td);

        /* Every presented intermediate must be a signing certificate of our trust domain, checked
         * before path building so that the reason names our rule rather than OpenSSL's symptom (it
         * would only report a missing issuer for a CA without keyCertSign). */
        for (int i = 0, k = 0; intermediates && i < sk_X509_num(intermediates); i++) {
                X509 *x = sk_X509_value(intermediates, i);
                char what[64];

                if (X509_cmp(x, leaf) == 0)
                        continue;
                k++;
                r = signing_check(x, td, &p);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        snprintf(what, sizeof(what), "intermediate %d (as presented)", k);
                        return problem_fail(ret_reason, what, &p);
                }
        }

        r = trust_bundle_to_store(bundle, &store);
        if (r < 0)
                return r;
        ctx = X509_STORE_CTX_new();
        if (!ctx)
                return -ENOMEM;
        ERR_clear_error();
        if (!X509_STORE_CTX_init(ctx, store, leaf, intermediates))
                return crypto_error(EIO, "X509_STORE_CTX_init");
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT | X509_V_FLAG_USE_CHECK_TIME);
        X509_STORE_CTX_set_depth(ctx, SVID_CHAIN_DEPTH_MAX);
        X509_STORE_CTX_set_time(ctx, 0, (time_t) ((now_usec ?: now(CLOCK_REALTIME)) / USEC_PER_SEC));

        r = X509_verify_cert(ctx);
        if (r <= 0) {
                if (X509_STORE_CTX_get_error(ctx) == X509_V_OK)
                        return crypto_error(EIO, "X509_verify_cert");
                ERR_clear_error();
                return map_verify_error(ctx, bundle, ret_reason);
        }

        /* The built chain: leaf, intermediates, root. Roots were checked when added to the bundle;
         * checking every element again costs little and keeps this function self-contained. */
        chain = X509_STORE_CTX_get0_chain(ctx);
        for (int i = 1; i < sk_X509_num(chain); i++) {
                X509 *x = sk_X509_value(chain, i);
                char what[2 * SVID_REASON_QUOTE_MAX];

                r = signing_check(x, td, &p);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        describe_cert(what, sizeof(what), x, i);
                        return problem_fail(ret_reason, what, &p);
                }
        }

        if (ret_id)
                *ret_id = TAKE_PTR(id);
        return 0;
}
