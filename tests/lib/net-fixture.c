/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto-util.h"
#include "net-fixture.h"
#include "tests.h"

void pki_init(Pki *pki, const char *trust_domain) {
        /* CAs valid since yesterday, so tests can issue leaves that are already expired. */
        usec_t t = now(CLOCK_REALTIME) - USEC_PER_DAY;

        *pki = (Pki) {};
        ASSERT_OK(ca_new_root(trust_domain, KEY_TYPE_ECDSA_P256, 10 * USEC_PER_YEAR, t, &pki->root));
        ASSERT_OK(ca_new_issuing(pki->root, KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, t, &pki->issuing));
        ASSERT_OK(trust_bundle_new(trust_domain, &pki->bundle));
        ASSERT_OK(trust_bundle_add(pki->bundle, ca_get_certificate(pki->root)));
}

void pki_done(Pki *pki) {
        ca_free(pki->issuing);
        ca_free(pki->root);
        trust_bundle_free(pki->bundle);
        *pki = (Pki) {};
}

void pki_issue(Pki *pki, SpiffeRole role, const char *id, usec_t now, usec_t lifetime, Identity *ret) {
        _cleanup_(spiffe_id_freep) SpiffeId *sid = NULL;

        *ret = (Identity) {};
        ASSERT_OK(spiffe_id_new_ztna(ca_get_trust_domain(pki->issuing), role, id, &sid));
        ASSERT_OK(crypto_key_generate(KEY_TYPE_ECDSA_P256, &ret->key));
        LeafParams p = {
                .id = sid,
                .public_key = ret->key,
                .lifetime = lifetime,
                .now = now,
        };
        ASSERT_OK(ca_issue_leaf(pki->issuing, &p, &ret->cert));
        ret->chain = sk_X509_new_null();
        ASSERT_NOT_NULL(ret->chain);
        X509 *issuing = ca_get_certificate(pki->issuing);
        ASSERT_TRUE(X509_up_ref(issuing) == 1);
        ASSERT_TRUE(sk_X509_push(ret->chain, issuing) > 0);
}

void identity_done(Identity *id) {
        X509_free(id->cert);
        sk_X509_pop_free(id->chain, X509_free);
        EVP_PKEY_free(id->key);
        *id = (Identity) {};
}

TlsContext *fixture_server_context(Pki *pki, const Identity *id, SpiffeRole peer_role) {
        TlsContext *c = NULL;

        ASSERT_OK(tls_context_new(TLS_MODE_SERVER, &c));
        ASSERT_OK(tls_context_set_identity(c, id->cert, id->chain, id->key));
        ASSERT_OK(tls_context_set_trust_bundle(c, pki->bundle));
        ASSERT_OK(tls_context_set_peer_policy(c, &(TlsPeerPolicy) { .role = peer_role }));
        return c;
}

TlsContext *fixture_client_context(Pki *pki, const Identity *id, SpiffeRole peer_role) {
        TlsContext *c = NULL;

        ASSERT_OK(tls_context_new(TLS_MODE_CLIENT, &c));
        if (id)
                ASSERT_OK(tls_context_set_identity(c, id->cert, id->chain, id->key));
        ASSERT_OK(tls_context_set_trust_bundle(c, pki->bundle));
        ASSERT_OK(tls_context_set_peer_policy(c, &(TlsPeerPolicy) { .role = peer_role }));
        return c;
}

int fixture_listen(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT_TRUE(listen(fd, 64) == 0);
        ASSERT_TRUE(getsockname(fd, (struct sockaddr *) &sa, &l) == 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

int fixture_connect(uint16_t port) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                .sin_port = htons(port),
        };
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(fd >= 0);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                ASSERT_TRUE(errno == EINPROGRESS);
        return fd;
}

int fixture_accept(int listen_fd) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        int fd;

        ASSERT_TRUE(poll(&p, 1, 5000) == 1);
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        ASSERT_TRUE(fd >= 0);
        return fd;
}

bool fixture_run_until(sd_event *e, const bool *done, usec_t timeout) {
        usec_t deadline = now(CLOCK_MONOTONIC) + timeout;

        while (!*done) {
                if (now(CLOCK_MONOTONIC) >= deadline)
                        return false;
                ASSERT_OK(sd_event_run(e, 50 * USEC_PER_MSEC));
        }
        return true;
}

bool fixture_run_until_func(sd_event *e, bool (*pred)(void *userdata), void *userdata, usec_t timeout) {
        usec_t deadline = now(CLOCK_MONOTONIC) + timeout;

        while (!pred(userdata)) {
                if (now(CLOCK_MONOTONIC) >= deadline)
                        return false;
                ASSERT_OK(sd_event_run(e, 50 * USEC_PER_MSEC));
        }
        return true;
}

static void fixture_handshake_done(TlsConnection *c, int error, void *userdata) {
        FixtureHandshake *h = userdata;

        h->done = true;
        h->result = error;
        snprintf(h->reason, sizeof(h->reason), "%s", strempty(tls_connection_get_error_reason(c)));
        if (error == 0 && tls_connection_get_peer_id(c))
                snprintf(h->peer, sizeof(h->peer), "%s", tls_connection_get_peer_id(c)->uri);
}

static void fixture_handshake_io(TlsConnection *c, void *userdata) {
        /* Nobody reads application data yet: stop being woken until the next owner takes over. */
        (void) tls_connection_set_interest(c, false, false);
}

const TlsConnectionCallbacks fixture_handshake_callbacks = {
        .on_handshake = fixture_handshake_done,
        .on_io = fixture_handshake_io,
};

static bool fixture_handshakes_done(void *userdata) {
        FixtureHandshake *h = userdata;

        return h[0].done && h[1].done;
}

void fixture_tls_handshake(sd_event *e, TlsContext *server_ctx, TlsContext *client_ctx,
                           FixtureHandshake h[static 2]) {
        uint16_t port;
        int lfd, cfd, afd;

        memset(h, 0, 2 * sizeof(FixtureHandshake));
        lfd = fixture_listen(&port);
        cfd = fixture_connect(port);
        afd = fixture_accept(lfd);
        close(lfd);
        ASSERT_OK(tls_connection_new(server_ctx, e, afd, &fixture_handshake_callbacks, &h[0], &h[0].conn));
        ASSERT_OK(tls_connection_new(client_ctx, e, cfd, &fixture_handshake_callbacks, &h[1], &h[1].conn));
        ASSERT_TRUE(fixture_run_until_func(e, fixture_handshakes_done, h, 10 * USEC_PER_SEC));
}

void fixture_env_init_with(FixtureEnv *env, const FixtureEnvParams *params) {
        *env = (FixtureEnv) {};
        (void) signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&env->event));
        pki_init(&env->pki, FIXTURE_TRUST_DOMAIN);
        pki_issue(&env->pki, params->server_role, params->server_name, 0, USEC_PER_HOUR, &env->server_id);
        pki_issue(&env->pki, SPIFFE_ROLE_TUNNELER, "tun-1", 0, USEC_PER_HOUR, &env->client_id);
        env->server_ctx = fixture_server_context(&env->pki, &env->server_id, params->server_peer_role);
        if (params->client_certificate_optional)
                ASSERT_OK(tls_context_set_client_certificate_required(env->server_ctx, false));
        env->client_ctx = fixture_client_context(&env->pki,
                                                 params->client_anonymous ? NULL : &env->client_id,
                                                 params->client_peer_role);
}

void fixture_env_init(FixtureEnv *env) {
        fixture_env_init_with(env, &(const FixtureEnvParams) {
                .server_role = SPIFFE_ROLE_CONNECTOR,
                .server_name = "conn-1",
                .server_peer_role = SPIFFE_ROLE_TUNNELER,
                .client_peer_role = SPIFFE_ROLE_CONNECTOR,
        });
}

void fixture_env_done(FixtureEnv *env) {
        tls_context_unref(env->server_ctx);
        tls_context_unref(env->client_ctx);
        identity_done(&env->server_id);
        identity_done(&env->client_id);
        pki_done(&env->pki);
        sd_event_unref(env->event);
        *env = (FixtureEnv) {};
}

void fixture_env_tls_pair(FixtureEnv *env, TlsConnection **ret_server, TlsConnection **ret_client) {
        FixtureHandshake h[2];

        fixture_tls_handshake(env->event, env->server_ctx, env->client_ctx, h);
        ASSERT_EQ(h[0].result, 0);
        ASSERT_EQ(h[1].result, 0);
        *ret_server = h[0].conn;
        *ret_client = h[1].conn;
}

void fixture_tcp_pair(int ret[static 2]) {
        uint16_t port;
        int lfd;

        lfd = fixture_listen(&port);
        ret[1] = fixture_connect(port);
        ret[0] = fixture_accept(lfd);
        close(lfd);
}

static uint64_t fixture_prng_next(uint64_t *state) {
        /* splitmix64: fast, and the same sequence everywhere for a given seed. */
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

/* The stream is cut into FIXTURE_APP_BUFFER chunks, each filled 8 bytes (little-endian) at a time. */
static void fixture_prng_fill(uint64_t *state, uint8_t *buf, size_t size) {
        for (size_t i = 0; i < size; i += 8) {
                uint64_t v = htole64(fixture_prng_next(state));
                memcpy(buf + i, &v, MIN((size_t) 8, size - i));
        }
}

static _Noreturn void fixture_app_main(int fd, const FixtureAppSpec *spec, FixtureAppResult *res) {
        static uint8_t wbuf[FIXTURE_APP_BUFFER], rbuf[FIXTURE_APP_BUFFER];
        uint64_t state = spec->seed, written = 0, read_total = 0;
        size_t woff = 0, wlen = 0, chunk;
        bool writing = spec->write_bytes > 0, reading = true;
        EVP_MD_CTX *wctx = NULL, *rctx = NULL;

        if (spec->digest) {
                wctx = EVP_MD_CTX_new();
                rctx = EVP_MD_CTX_new();
                if (!wctx || !rctx || EVP_DigestInit_ex(wctx, EVP_sha256(), NULL) != 1 ||
                    EVP_DigestInit_ex(rctx, EVP_sha256(), NULL) != 1)
                        _exit(2);
        } else
                fixture_prng_fill(&state, wbuf, sizeof(wbuf));
        chunk = spec->read_chunk > 0 ? MIN(spec->read_chunk, sizeof(rbuf)) : sizeof(rbuf);
        if (!writing)
                (void) shutdown(fd, SHUT_WR);

        while (writing || reading) {
                struct pollfd p = { .fd = fd, .events = (writing ? POLLOUT : 0) | (reading ? POLLIN : 0) };
                ssize_t n;

                if (poll(&p, 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        res->error = errno;
                        break;
                }
                if (writing && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
                        if (woff == wlen) {
                                wlen = (size_t) MIN((uint64_t) sizeof(wbuf), spec->write_bytes - written);
                                if (spec->digest)
                                        fixture_prng_fill(&state, wbuf, wlen);
                                woff = 0;
                        }
                        n = write(fd, wbuf + woff, wlen - woff);
                        if (n < 0 && errno != EAGAIN) {
                                res->error = errno;
                                break;
                        }
                        if (n > 0) {
                                if (wctx)
                                        (void) EVP_DigestUpdate(wctx, wbuf + woff, (size_t) n);
                                woff += (size_t) n;
                                written += (uint64_t) n;
                                __atomic_store_n(&res->written, written, __ATOMIC_RELAXED);
                                if (written == spec->write_bytes) {
                                        (void) shutdown(fd, SHUT_WR);
                                        writing = false;
                                }
                        }
                }
                if (reading && (p.revents & (POLLIN | POLLERR | POLLHUP))) {
                        n = read(fd, rbuf, chunk);
                        if (n < 0 && errno != EAGAIN) {
                                res->error = errno;
                                break;
                        }
                        if (n == 0)
                                reading = false;
                        if (n > 0) {
                                if (rctx)
                                        (void) EVP_DigestUpdate(rctx, rbuf, (size_t) n);
                                read_total += (uint64_t) n;
                                __atomic_store_n(&res->read, read_total, __ATOMIC_RELAXED);
                                if (spec->read_pause > 0)
                                        (void) usleep(spec->read_pause);
                        }
                }
        }
        if (spec->digest) {
                (void) EVP_DigestFinal_ex(wctx, res->written_digest, NULL);
                (void) EVP_DigestFinal_ex(rctx, res->read_digest, NULL);
        }
        EVP_MD_CTX_free(wctx);
        EVP_MD_CTX_free(rctx);
        __atomic_store_n(&res->done, true, __ATOMIC_RELEASE);
        /* _exit(): the parent's atexit handlers (the harness's tmpdir cleanup) are not ours to run. */
        _exit(res->error != 0 ? 1 : 0);
}

FixtureAppResult *fixture_app_results_new(size_t n) {
        FixtureAppResult *r;

        r = mmap(NULL, n * sizeof(FixtureAppResult), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
        ASSERT_TRUE(r != MAP_FAILED);
        memset(r, 0, n * sizeof(FixtureAppResult));
        return r;
}

void fixture_app_results_free(FixtureAppResult *r, size_t n) {
        if (r)
                ASSERT_TRUE(munmap(r, n * sizeof(FixtureAppResult)) == 0);
}

pid_t fixture_app_spawn(int fd, const FixtureAppSpec *spec, FixtureAppResult *res) {
        pid_t pid;

        fflush(NULL);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (fd > 3)
                        (void) close_range(3, (unsigned) fd - 1, 0);
                (void) close_range((unsigned) fd + 1, ~0U, 0);
                fixture_app_main(fd, spec, res);
        }
        close(fd);
        return pid;
}

int fixture_app_wait(pid_t pid) {
        int status;

        while (waitpid(pid, &status, 0) < 0)
                ASSERT_TRUE(errno == EINTR);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void fixture_app_digest(uint64_t size, uint64_t seed, uint8_t ret[static 32]) {
        static uint8_t buf[FIXTURE_APP_BUFFER];
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint64_t state = seed;

        ASSERT_NOT_NULL(ctx);
        ASSERT_TRUE(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
        for (uint64_t done = 0; done < size;) {
                size_t n = (size_t) MIN((uint64_t) sizeof(buf), size - done);

                fixture_prng_fill(&state, buf, n);
                ASSERT_TRUE(EVP_DigestUpdate(ctx, buf, n) == 1);
                done += n;
        }
        ASSERT_TRUE(EVP_DigestFinal_ex(ctx, ret, NULL) == 1);
        EVP_MD_CTX_free(ctx);
}
