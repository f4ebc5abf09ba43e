/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Hex and base64 codecs. No OpenSSL here: these are shared by every area (token strings, database
 * columns, fingerprints in listings, binary blobs in files).
 *
 * The decoders are strict: one input has exactly one accepted spelling, so a value that round-trips
 * through decode and encode is byte-identical (fuzzers rely on this) and damaged input fails loudly
 * instead of silently decoding to something else. They may be handed secrets: the output is allocated
 * once (never reallocated, so no stray copy is left on the heap), wiped before it is freed on failure,
 * and NUL-terminated one byte past ret_size for callers that decode text. A caller that decoded a
 * secret wipes the result itself (erase_and_free(p, size + 1) covers the terminator too). */

#include <stdbool.h>
#include <stddef.h>

/* Largest input the encoders and decoders accept (bytes), so that size arithmetic cannot overflow and
 * a runaway caller gets -EFBIG instead of a giant allocation. */
#define HEXDECOCT_INPUT_MAX ((size_t) 256U * 1024U * 1024U)

/* Pass as the length to decoders to mean strlen(p). */
#define HEXDECOCT_STRLEN ((size_t) -1)

/* The value of a hex digit (either case), or -EINVAL. */
int unhexchar(char c);
/* The lower-case hex digit for the low 4 bits of x. */
char hexchar(int x);

/* Lower-case hex of l bytes, NUL-terminated. NULL on allocation failure or if l > HEXDECOCT_INPUT_MAX. */
char *hexmem(const void *p, size_t l);
/* Decodes exactly l characters of hex (either case; l == HEXDECOCT_STRLEN means strlen(p)): -EINVAL for
 * an odd length or any non-hex character (including whitespace), -EFBIG beyond HEXDECOCT_INPUT_MAX. */
int unhexmem(const char *p, size_t l, void **ret, size_t *ret_size);

/* RFC 4648 §5 "base64url", without padding. On success returns 0 and a NUL-terminated string. Errors:
 * -EFBIG beyond HEXDECOCT_INPUT_MAX, -ENOMEM. */
int base64url_encode(const void *p, size_t l, char **ret);
/* Decodes base64url without padding. -EINVAL for '=', whitespace, any character outside
 * [A-Za-z0-9_-], a length with l % 4 == 1, or a non-canonical encoding (unused low bits of the last
 * character not zero). The empty string decodes to zero bytes. */
int base64url_decode(const char *p, size_t l, void **ret, size_t *ret_size);

/* RFC 4648 §4 standard base64 with '=' padding, no line breaks. Same conventions as above. */
int base64_encode(const void *p, size_t l, char **ret);
/* Strict: length a multiple of 4, padding exactly as the encoder writes it (only at the end, only as
 * much as needed), alphabet [A-Za-z0-9+/], no whitespace, unused bits zero; else -EINVAL. */
int base64_decode(const char *p, size_t l, void **ret, size_t *ret_size);
