/* SPDX-License-Identifier: Apache-2.0 */
/* Placeholder: arrives with the CONNECT streams and interop tests. */
int main(void) {
        return 0;
}
