/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The controller's certificate authority over its whole life (DESIGN.md §3): created once by
 * `ztna-controller init`, kept in the store with every private key sealed under the KEK, loaded at start,
 * and maintained while the daemon runs:
 *
 *   - the issuing CA rotates by itself once less than a third of its lifetime is left: a new issuing CA
 *     under the active root becomes ACTIVE, the old one RETIRING (its leaves stay valid: they carry their
 *     own chain) and RETIRED once it has expired;
 *   - a root rotation is staged (controller_ca_rotate_root(), `ztnactl ca rotate`):
 *       1. a new root is created STAGED and joins the trust bundle, which is pushed to every agent and
 *          returned with every renewal;
 *       2. once the longest leaf lifetime has passed (every agent has renewed, so has the new bundle) and
 *          no enrollment token that pins the old root can still be used, a new issuing CA under the new
 *          root becomes ACTIVE, the new root ACTIVE, the old root and its issuing CA RETIRING;
 *       3. once the longest leaf lifetime has passed again (no leaf under the old root is still valid), the
 *          old root is RETIRED and leaves the bundle, which is pushed again.
 *     No agent re-enrolls at any step.
 *   - the controller's own server certificate (spiffe://<td>/controller/<id>, DNS/IP SANs of the
 *     advertised addresses, a fresh key held only in memory) is renewed once 30 % of its lifetime is left.
 *
 * Every state change is written to the store before it is used, so a restart resumes where it stopped.
 * Sealed keys are bound to their certificate: the envelope's AAD is "ztna controller ca " + the hex
 * SHA-256 SPKI fingerprint, so a sealed key copied onto another row does not open.
 *
 * The interface speaks DER and SPIFFE IDs, not OpenSSL types, so that the controller's other modules need
 * no OpenSSL (STYLE.md): they hand in a CSR as received and get back what goes on the wire. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller-conf.h"
#include "controller-store.h"
#include "creds-util.h"
#include "crypto-bundle.h"
#include "crypto-spiffe.h"
#include "net-tls.h"
#include "time-util.h"

/* Certificates in a chain handed to an agent: leaf, issuing CA. */
#define CONTROLLER_CA_CHAIN_MAX 4

typedef struct ControllerCa ControllerCa;

/* What controller_ca_maintain() changed. */
typedef enum ControllerCaChange {
        CONTROLLER_CA_CHANGED_BUNDLE = 1 << 0, /* the trust bundle: push it to agents */
        CONTROLLER_CA_CHANGED_SERVER = 1 << 1, /* the server certificate: re-applied to the TLS context */
        CONTROLLER_CA_CHANGED_ISSUER = 1 << 2, /* the active issuing CA */
} ControllerCaChange;

/* A certificate issued to an agent. */
typedef struct IssuedCertificate {
        uint8_t *chain[CONTROLLER_CA_CHAIN_MAX]; /* DER: leaf first, then the issuing CA */
        size_t chain_size[CONTROLLER_CA_CHAIN_MAX];
        size_t n_chain;
        uint8_t *public_key;                    /* SubjectPublicKeyInfo DER of the certified key */
        size_t public_key_size;
        char *serial;                           /* lower-case hex */
        usec_t not_after;                       /* CLOCK_REALTIME µs */
} IssuedCertificate;

void issued_certificate_done(IssuedCertificate *c);

/* > 0 when the store holds CA material or a recorded trust domain (init was done), 0 when it holds neither,
 * or a negative errno from the store. */
int controller_ca_exists(Store *store);

/* `ztna-controller init`: a new root and issuing CA for config->trust_domain (lifetimes and key type from
 * config), keys sealed with kek, written to the store, and the trust domain recorded in the store's meta
 * ("trust_domain"). -EEXIST when the store already holds CA material or another trust domain (nothing is
 * changed). now = 0: the current time. */
int controller_ca_init(Store *store, const ControllerConfig *config, const uint8_t kek[static KEK_SIZE],
                       usec_t now);

/* Loads the CA from the store: roots that are STAGED, ACTIVE or RETIRING form the trust bundle; the ACTIVE
 * issuing CA's key is unsealed. Errors: -ENOENT not initialised ("run ztna-controller init"), -EXDEV the
 * store's trust domain differs from config->trust_domain, -EKEYREJECTED the KEK does not open a sealed key
 * (wrong KEK), -EBADMSG inconsistent rows (e.g. no active root CA). *ret_reason (static, may be NULL)
 * says which. No active issuing CA under an active root is not an error: a rotation was interrupted
 * between retiring the old issuing CA and storing the new one (the root's key is unsealed instead, so a
 * wrong KEK is still found here); controller_ca_issue() refuses with -EAGAIN until
 * controller_ca_maintain() has created one. Does not rotate anything: call controller_ca_maintain().
 * The CA keeps a copy of kek (wiped on free) to seal the keys of future rotations, and borrows store and
 * config: they must outlive it. */
int controller_ca_load(Store *store, const ControllerConfig *config, const uint8_t kek[static KEK_SIZE],
                       usec_t now, ControllerCa **ret, const char **ret_reason);
ControllerCa *controller_ca_free(ControllerCa *ca);
DEFINE_TRIVIAL_CLEANUP_FUNC(ControllerCa *, controller_ca_free);

/* Rotations and renewals that are due at now (see above); also issues the first server certificate.
 * *ret_changes (may be NULL) gets a ControllerCaChange mask. Returns the next CLOCK_REALTIME time at which
 * something will be due, via *ret_next (may be NULL), so the caller can arm a timer. */
int controller_ca_maintain(ControllerCa *ca, usec_t now, unsigned *ret_changes, usec_t *ret_next);

/* Starts a root rotation (step 1 above). -EBUSY when one is in progress (a root is STAGED or RETIRING, or
 * step 2 is half done). The grown bundle is reported by the next controller_ca_maintain()
 * (CONTROLLER_CA_CHANGED_BUNDLE), like every other change. */
int controller_ca_rotate_root(ControllerCa *ca, usec_t now);

/* Issues a leaf for spiffe://<td>/<role>/<id> (role connector or tunneler) certifying the key of csr (DER
 * PKCS#10, proof of possession checked; nothing else is taken from it), valid for the role's configured
 * lifetime. Errors with *ret_reason (static, printable to the agent): -EBADMSG "malformed CSR",
 * -EOPNOTSUPP "unsupported key type", -EKEYREJECTED "CSR signature does not verify", -EINVAL "invalid agent
 * id". Anything else is an internal error. */
int controller_ca_issue(ControllerCa *ca, SpiffeRole role, const char *id, const void *csr, size_t csr_size,
                        usec_t now, IssuedCertificate *ret, const char **ret_reason);

/* Verifies signature over data with a recorded SubjectPublicKeyInfo (re-authentication). 0 when it verifies,
 * -EBADMSG when it does not, -EINVAL/-EOPNOTSUPP for an unusable key. */
int controller_ca_verify_signature(const void *public_key, size_t public_key_size, const void *data,
                                   size_t size, const void *signature, size_t signature_size);

/* The SubjectPublicKeyInfo DER of a CSR's key, after checking its proof of possession (as
 * controller_ca_issue()). Free with free(). */
int controller_ca_csr_public_key(const void *csr, size_t csr_size, uint8_t **ret, size_t *ret_size,
                                 const char **ret_reason);

/* The trust bundle (borrowed; replaced by maintenance and rotation). */
const TrustBundle *controller_ca_get_bundle(const ControllerCa *ca);
/* Its roots as DER, for EnrollResponse/RenewResponse/TrustBundleUpdate. Free with
 * controller_ca_der_array_free(). */
int controller_ca_get_bundle_der(const ControllerCa *ca, uint8_t ***ret, size_t **ret_sizes, size_t *ret_n);
void controller_ca_der_array_free(uint8_t **a, size_t *sizes, size_t n);
/* SHA-256 of the SPKI of the root the server certificate chains to: what enrollment tokens pin. */
void controller_ca_get_root_pin(const ControllerCa *ca, uint8_t ret[static 32]);
const char *controller_ca_get_trust_domain(const ControllerCa *ca);

/* Sets the server identity (certificate, issuing CA, root — the full chain, as root-pinning enrollment
 * clients need — and key) and the trust bundle on ctx. Call after load and whenever maintain reports
 * CONTROLLER_CA_CHANGED_SERVER or _BUNDLE. -ENOENT before the first controller_ca_maintain(). */
int controller_ca_apply_tls(const ControllerCa *ca, TlsContext *ctx);
/* The server identity as PEM, for servers that take it that way (the admin listener's libmicrohttpd): the
 * chain (server certificate, issuing CA, root) and the PKCS#8 key. The key must be released with
 * crypto_erase_and_free(key, strlen(key)). -ENOENT before the first controller_ca_maintain(). */
int controller_ca_get_server_pem(const ControllerCa *ca, char **ret_chain, char **ret_key);
/* notAfter of the server certificate (0 before the first maintain). */
usec_t controller_ca_get_server_not_after(const ControllerCa *ca);
/* Whether a root rotation is in progress (step 1 or 2 done, step 3 not). */
bool controller_ca_rotation_in_progress(const ControllerCa *ca);
