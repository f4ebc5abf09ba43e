/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-util.h"
#include "parse-util.h"

bool agent_error_is_unreachable(int error) {
        switch (-error) {
        case ECONNREFUSED:
        case ECONNRESET:
        case ECONNABORTED:
        case ETIMEDOUT:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case ENETDOWN:
        case EPIPE:
                return true;
        default:
                return false;
        }
}

bool agent_status_is_refusal(GrpcStatus s) {
        return s == GRPC_STATUS_PERMISSION_DENIED || s == GRPC_STATUS_INVALID_ARGUMENT ||
               s == GRPC_STATUS_FAILED_PRECONDITION || s == GRPC_STATUS_RESOURCE_EXHAUSTED ||
               s == GRPC_STATUS_UNAUTHENTICATED;
}

int agent_detect_private_ip(const char *controller, char **ret) {
        struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *ai = NULL;
        struct sockaddr_storage local = {};
        socklen_t len = sizeof(local);
        char port[6], text[INET6_ADDRSTRLEN];
        const void *addr;
        HostPort hp;
        int fd, r;

        assert(controller);
        assert(ret);

        r = parse_host_port(controller, 0, &hp);
        if (r < 0)
                return -EINVAL;
        if (hp.family != AF_UNSPEC)
                hints.ai_flags = AI_NUMERICHOST;
        (void) snprintf(port, sizeof(port), "%u", hp.port);
        if (getaddrinfo(hp.host, port, &hints, &ai) != 0 || !ai)
                return -EHOSTUNREACH;

        fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                r = -errno;
        else if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
                 getsockname(fd, (struct sockaddr *) &local, &len) < 0)
                r = -errno;
        else
                r = 0;
        if (fd >= 0)
                (void) close(fd);
        freeaddrinfo(ai);
        if (r < 0)
                return r;

        addr = local.ss_family == AF_INET6 ? (const void *) &((struct sockaddr_in6 *) &local)->sin6_addr :
                                             (const void *) &((struct sockaddr_in *) &local)->sin_addr;
        if (!inet_ntop(local.ss_family, addr, text, sizeof(text)))
                return -errno;
        *ret = strdup(text);
        return *ret ? 0 : -ENOMEM;
}
