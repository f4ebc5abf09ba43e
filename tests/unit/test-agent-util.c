/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>

#include "agent-util.h"
#include "tests.h"

TEST(detect_private_ip) {
        static const struct {
                const char *controller;
                const char *expected;   /* NULL: error */
                int error;
        } cases[] = {
                { "127.0.0.1:9", "127.0.0.1", 0 },
                { "127.1.2.3:8443", "127.0.0.1", 0 },   /* the loopback route's source */
                { "[::1]:8443", "::1", 0 },
                { "localhost:8443", NULL, 0 },          /* a name: resolved, some loopback address */
                { "127.0.0.1", NULL, EINVAL },          /* no port */
                { "::1:80", NULL, EINVAL },
                { "", NULL, EINVAL },
                { "no such host.invalid:1", NULL, EINVAL },
        };

        for (size_t k = 0; k < ELEMENTSOF(cases); k++) {
                _cleanup_free_ char *ip = NULL;

                CASE("%s", cases[k].controller);
                if (cases[k].error != 0) {
                        ASSERT_ERROR(agent_detect_private_ip(cases[k].controller, &ip), cases[k].error);
                        ASSERT_NULL(ip);
                } else if (cases[k].expected) {
                        ASSERT_OK(agent_detect_private_ip(cases[k].controller, &ip));
                        ASSERT_STREQ(ip, cases[k].expected);
                } else {
                        ASSERT_OK(agent_detect_private_ip(cases[k].controller, &ip));
                        ASSERT_TRUE(streq(ip, "127.0.0.1") || streq(ip, "::1"));
                }
        }
}

TEST(unreachable_errors) {
        ASSERT_TRUE(agent_error_is_unreachable(-ECONNREFUSED));
        ASSERT_TRUE(agent_error_is_unreachable(-ETIMEDOUT));
        ASSERT_FALSE(agent_error_is_unreachable(-EACCES));
        ASSERT_FALSE(agent_error_is_unreachable(0));
}
