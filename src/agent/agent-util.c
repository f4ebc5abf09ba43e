/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>

#include "agent-util.h"

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
