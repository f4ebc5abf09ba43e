/* SPDX-License-Identifier: Apache-2.0 */

#include "net-grpc-frame.h"
#include "tests.h"
#include "ztna.pb-c.h"

TEST(frame_header_is_flag_and_big_endian_length) {
        static const struct {
                uint32_t size;
                uint8_t hdr[GRPC_FRAME_HEADER_SIZE];
        } table[] = {
                { 0,          { 0, 0x00, 0x00, 0x00, 0x00 } },
                { 1,          { 0, 0x00, 0x00, 0x00, 0x01 } },
                { 255,        { 0, 0x00, 0x00, 0x00, 0xff } },
                { 256,        { 0, 0x00, 0x00, 0x01, 0x00 } },
                { 0x01020304, { 0, 0x01, 0x02, 0x03, 0x04 } },
                { UINT32_MAX, { 0, 0xff, 0xff, 0xff, 0xff } },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                uint8_t hdr[GRPC_FRAME_HEADER_SIZE];

                CASE("size %" PRIu32, table[i].size);
                memset(hdr, 0xaa, sizeof(hdr));
                grpc_frame_header(hdr, table[i].size);
                ASSERT_MEMEQ(hdr, table[i].hdr, sizeof(hdr));
        }
}

TEST(frame_encode) {
        static const uint8_t expected[] = { 0, 0, 0, 0, 3, 'a', 'b', 'c' };
        uint8_t *buf = NULL;
        size_t size = 0;

        ASSERT_OK(grpc_frame_encode("abc", 3, &buf, &size));
        ASSERT_EQ(size, sizeof(expected));
        ASSERT_MEMEQ(buf, expected, sizeof(expected));
        free(buf);

        /* An empty message is just the header. */
        ASSERT_OK(grpc_frame_encode(NULL, 0, &buf, &size));
        ASSERT_EQ(size, GRPC_FRAME_HEADER_SIZE);
        ASSERT_MEMEQ(buf, expected, 4);
        ASSERT_EQ(buf[4], 0);
        free(buf);

        /* The length field has 32 bits; the check comes before any copy. */
        buf = NULL;
        ASSERT_ERROR(grpc_frame_encode("x", (size_t) UINT32_MAX + 1, &buf, &size), EMSGSIZE);
        ASSERT_NULL(buf);
}

/* Three messages, one of them empty and one longer than the decoder's first allocation. */
static uint8_t *make_stream(size_t *ret_size, uint8_t **ret_big, size_t *ret_big_size) {
        size_t big_size = 9000, size = 3 * GRPC_FRAME_HEADER_SIZE + 5 + big_size;
        uint8_t *s = ASSERT_NOT_NULL(malloc(size)), *big = ASSERT_NOT_NULL(malloc(big_size)), *p = s;

        for (size_t i = 0; i < big_size; i++)
                big[i] = (uint8_t) (i * 7 + 3);

        grpc_frame_header(p, 5);
        memcpy(p + GRPC_FRAME_HEADER_SIZE, "hello", 5);
        p += GRPC_FRAME_HEADER_SIZE + 5;
        grpc_frame_header(p, 0);
        p += GRPC_FRAME_HEADER_SIZE;
        grpc_frame_header(p, (uint32_t) big_size);
        memcpy(p + GRPC_FRAME_HEADER_SIZE, big, big_size);

        *ret_size = size;
        *ret_big = big;
        *ret_big_size = big_size;
        return s;
}

/* Feeds [data, data+size) and takes every completed message, checking it against the expected ones. */
static void feed_and_check(GrpcDecoder *d, const uint8_t *data, size_t size, size_t *n_seen,
                           const uint8_t *big, size_t big_size) {
        while (size > 0) {
                size_t consumed = SIZE_MAX;
                int r;

                r = (int) ASSERT_OK(grpc_decoder_feed(d, data, size, &consumed));
                ASSERT_UCMP(consumed, <=, size);
                if (r == 0) {
                        /* Everything is consumed when no message completed. */
                        ASSERT_UEQ(consumed, size);
                        ASSERT_FALSE(grpc_decoder_is_idle(d));
                } else {
                        uint8_t *m = NULL;
                        size_t m_size = SIZE_MAX;

                        ASSERT_EQ(r, 1);
                        ASSERT_FALSE(grpc_decoder_is_idle(d));
                        ASSERT_OK(grpc_decoder_take(d, &m, &m_size));
                        ASSERT_NOT_NULL(m);
                        ASSERT_TRUE(grpc_decoder_is_idle(d));
                        switch ((*n_seen)++) {
                        case 0:
                                ASSERT_UEQ(m_size, 5);
                                ASSERT_MEMEQ(m, "hello", 5);
                                break;
                        case 1:
                                ASSERT_UEQ(m_size, 0);
                                break;
                        case 2:
                                ASSERT_UEQ(m_size, big_size);
                                ASSERT_MEMEQ(m, big, big_size);
                                break;
                        default:
                                ASSERT_TRUE(!"more messages than sent");
                        }
                        free(m);
                }
                data += consumed;
                size -= consumed;
        }
}

TEST(decoder_reassembles_split_at_every_offset) {
        _cleanup_free_ uint8_t *stream = NULL, *big = NULL;
        size_t size, big_size;

        stream = make_stream(&size, &big, &big_size);

        for (size_t split = 0; split <= size; split++) {
                GrpcDecoder d;
                size_t n_seen = 0;

                CASE("split at %zu of %zu", split, size);
                grpc_decoder_init(&d, 64 * 1024);
                feed_and_check(&d, stream, split, &n_seen, big, big_size);
                feed_and_check(&d, stream + split, size - split, &n_seen, big, big_size);
                ASSERT_UEQ(n_seen, 3);
                ASSERT_TRUE(grpc_decoder_is_idle(&d));
                grpc_decoder_done(&d);
        }
}

TEST(decoder_reassembles_fixed_chunk_sizes) {
        _cleanup_free_ uint8_t *stream = NULL, *big = NULL;
        static const size_t chunks[] = { 1, 2, 3, 4, 5, 6, 7, 13, 4096, 4097 };
        size_t size, big_size;

        stream = make_stream(&size, &big, &big_size);

        for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
                GrpcDecoder d;
                size_t n_seen = 0;

                CASE("chunks of %zu", chunks[c]);
                grpc_decoder_init(&d, 0);
                for (size_t pos = 0; pos < size; pos += chunks[c])
                        feed_and_check(&d, stream + pos, MIN(chunks[c], size - pos), &n_seen, big, big_size);
                ASSERT_UEQ(n_seen, 3);
                ASSERT_TRUE(grpc_decoder_is_idle(&d));
                grpc_decoder_done(&d);
        }
}

TEST(decoder_stops_at_message_end) {
        /* Two messages in one chunk: the first feed stops after the first, leaving the second unconsumed. */
        static const uint8_t two[] = { 0, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 2, 'y', 'z' };
        GrpcDecoder d;
        uint8_t *m;
        size_t consumed = SIZE_MAX, m_size;

        grpc_decoder_init(&d, 16);
        ASSERT_EQ(grpc_decoder_feed(&d, two, sizeof(two), &consumed), 1);
        ASSERT_UEQ(consumed, 6);

        /* Feeding again before taking is a caller bug; nothing is consumed. */
        consumed = SIZE_MAX;
        ASSERT_ERROR(grpc_decoder_feed(&d, two + 6, sizeof(two) - 6, &consumed), EBUSY);
        ASSERT_UEQ(consumed, SIZE_MAX);

        ASSERT_OK(grpc_decoder_take(&d, &m, &m_size));
        ASSERT_UEQ(m_size, 1);
        ASSERT_EQ(m[0], 'x');
        free(m);

        ASSERT_EQ(grpc_decoder_feed(&d, two + 6, sizeof(two) - 6, &consumed), 1);
        ASSERT_UEQ(consumed, 7);
        ASSERT_OK(grpc_decoder_take(&d, &m, &m_size));
        ASSERT_UEQ(m_size, 2);
        ASSERT_MEMEQ(m, "yz", 2);
        free(m);

        /* Nothing complete: take refuses. */
        ASSERT_ERROR(grpc_decoder_take(&d, &m, &m_size), ENOMSG);
        grpc_decoder_done(&d);
}

TEST(decoder_zero_length_message) {
        static const uint8_t empty[] = { 0, 0, 0, 0, 0 };
        GrpcDecoder d;
        uint8_t *m = NULL;
        size_t consumed, m_size = SIZE_MAX;

        grpc_decoder_init(&d, 16);
        ASSERT_EQ(grpc_decoder_feed(&d, empty, sizeof(empty), &consumed), 1);
        ASSERT_UEQ(consumed, 5);
        ASSERT_OK(grpc_decoder_take(&d, &m, &m_size));
        ASSERT_NOT_NULL(m);
        ASSERT_UEQ(m_size, 0);
        free(m);
        ASSERT_TRUE(grpc_decoder_is_idle(&d));

        /* An empty feed changes nothing. */
        ASSERT_EQ(grpc_decoder_feed(&d, NULL, 0, &consumed), 0);
        ASSERT_UEQ(consumed, 0);
        ASSERT_TRUE(grpc_decoder_is_idle(&d));
        grpc_decoder_done(&d);
}

TEST(decoder_refuses_oversize_before_allocating) {
        static const struct {
                size_t cap;
                uint8_t hdr[GRPC_FRAME_HEADER_SIZE];
                int error; /* 0: accepted */
        } table[] = {
                { 16,                       { 0, 0xff, 0xff, 0xff, 0xff }, EMSGSIZE },
                { 16,                       { 0, 0x80, 0x00, 0x00, 0x00 }, EMSGSIZE },
                { 16,                       { 0, 0x00, 0x00, 0x00, 0x11 }, EMSGSIZE },
                { 16,                       { 0, 0x00, 0x00, 0x00, 0x10 }, 0 },
                { 64 * 1024,                { 0, 0x00, 0x01, 0x00, 0x01 }, EMSGSIZE },
                { 64 * 1024,                { 0, 0x00, 0x01, 0x00, 0x00 }, 0 },
                /* 0 selects the 4 MiB default. */
                { 0,                        { 0, 0x00, 0x40, 0x00, 0x01 }, EMSGSIZE },
                { 0,                        { 0, 0x00, 0x40, 0x00, 0x00 }, 0 },
                { GRPC_MESSAGE_MAX_DEFAULT, { 0, 0xff, 0xff, 0xff, 0xff }, EMSGSIZE },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                GrpcDecoder d;
                size_t consumed = SIZE_MAX;

                CASE("cap %zu, length %02x%02x%02x%02x", table[i].cap, table[i].hdr[1], table[i].hdr[2],
                     table[i].hdr[3], table[i].hdr[4]);
                grpc_decoder_init(&d, table[i].cap);
                if (table[i].error == 0) {
                        ASSERT_EQ(grpc_decoder_feed(&d, table[i].hdr, sizeof(table[i].hdr), &consumed), 0);
                        ASSERT_UEQ(consumed, GRPC_FRAME_HEADER_SIZE);
                } else {
                        /* Refused as soon as the header is complete, without waiting for the body. */
                        ASSERT_ERROR(grpc_decoder_feed(&d, table[i].hdr, sizeof(table[i].hdr), &consumed),
                                     table[i].error);
                        ASSERT_UEQ(consumed, SIZE_MAX);
                        ASSERT_FALSE(grpc_decoder_is_idle(&d));
                }
                /* Nothing is allocated for an announced length, accepted or not. */
                ASSERT_NULL(d.message);
                ASSERT_UEQ(d.n_allocated, 0);
                grpc_decoder_done(&d);
        }
}

TEST(decoder_buffer_grows_with_received_bytes) {
        /* A peer announcing the maximum but sending little costs little memory. */
        static const uint8_t hdr[] = { 0, 0x00, 0x40, 0x00, 0x00 };
        uint8_t body[100] = {};
        GrpcDecoder d;
        size_t consumed, total = 0;

        grpc_decoder_init(&d, 0);
        ASSERT_EQ(grpc_decoder_feed(&d, hdr, sizeof(hdr), &consumed), 0);
        ASSERT_EQ(grpc_decoder_feed(&d, body, sizeof(body), &consumed), 0);
        ASSERT_UCMP(d.n_allocated, <=, 4096);
        ASSERT_UCMP(d.n_allocated, >=, sizeof(body));

        /* Growth stays within a factor of two of what arrived. */
        for (size_t i = 0; i < 1000; i++) {
                ASSERT_EQ(grpc_decoder_feed(&d, body, sizeof(body), &consumed), 0);
                total = d.n_message;
                ASSERT_UCMP(d.n_allocated, <=, MAX(2 * total, (size_t) 4096));
        }
        ASSERT_UEQ(total, 1001 * sizeof(body));

        /* Done releases the partial message (ASan would report the leak) and resets the decoder. */
        grpc_decoder_done(&d);
        ASSERT_TRUE(grpc_decoder_is_idle(&d));
        ASSERT_NULL(d.message);
        ASSERT_UEQ(d.max_message_size, GRPC_MESSAGE_MAX_DEFAULT);
}

TEST(decoder_refuses_flags) {
        static const struct {
                uint8_t flag;
                int error;
        } table[] = {
                { 1, EPROTONOSUPPORT }, /* compressed: we negotiate no grpc-encoding */
                { 2, EBADMSG },
                { 0x80, EBADMSG },
                { 0xff, EBADMSG },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                uint8_t frame[] = { table[i].flag, 0, 0, 0, 1, 'x' };
                GrpcDecoder d;
                uint8_t *m = NULL;
                size_t consumed = SIZE_MAX, m_size;

                CASE("flag 0x%02x", table[i].flag);
                grpc_decoder_init(&d, 16);
                /* Byte by byte: the error comes with the fifth byte, not before. */
                for (size_t k = 0; k < GRPC_FRAME_HEADER_SIZE - 1; k++)
                        ASSERT_EQ(grpc_decoder_feed(&d, frame + k, 1, &consumed), 0);
                ASSERT_ERROR(grpc_decoder_feed(&d, frame + 4, 2, &consumed), table[i].error);

                /* Sticky: the stream is unusable after a framing error. */
                ASSERT_ERROR(grpc_decoder_feed(&d, frame, sizeof(frame), &consumed), table[i].error);
                ASSERT_ERROR(grpc_decoder_take(&d, &m, &m_size), table[i].error);
                ASSERT_NULL(m);
                ASSERT_FALSE(grpc_decoder_is_idle(&d));

                /* Done resets it. */
                grpc_decoder_done(&d);
                ASSERT_TRUE(grpc_decoder_is_idle(&d));
                frame[0] = 0;
                ASSERT_EQ(grpc_decoder_feed(&d, frame, sizeof(frame), &consumed), 1);
                ASSERT_OK(grpc_decoder_take(&d, &m, &m_size));
                ASSERT_UEQ(m_size, 1);
                free(m);
        }
}

TEST(decoder_idle_tracks_partial_messages) {
        static const uint8_t frame[] = { 0, 0, 0, 0, 2, 'a', 'b' };
        GrpcDecoder d;
        uint8_t *m;
        size_t consumed, m_size;

        grpc_decoder_init(&d, 16);
        ASSERT_TRUE(grpc_decoder_is_idle(&d));
        for (size_t k = 0; k < sizeof(frame) - 1; k++) {
                CASE("after %zu bytes", k + 1);
                ASSERT_EQ(grpc_decoder_feed(&d, frame + k, 1, &consumed), 0);
                ASSERT_FALSE(grpc_decoder_is_idle(&d));
        }
        ASSERT_EQ(grpc_decoder_feed(&d, frame + sizeof(frame) - 1, 1, &consumed), 1);
        /* Complete but not taken is not idle either: END_STREAM now would drop a message. */
        ASSERT_FALSE(grpc_decoder_is_idle(&d));
        ASSERT_OK(grpc_decoder_take(&d, &m, &m_size));
        ASSERT_TRUE(grpc_decoder_is_idle(&d));
        free(m);
        grpc_decoder_done(&d);
}

static Ztna__V1__Hello__LabelsEntry label_site = ZTNA__V1__HELLO__LABELS_ENTRY__INIT;

static void make_hello(Ztna__V1__AgentMessage *am, Ztna__V1__Hello *h,
                       Ztna__V1__Hello__LabelsEntry **labels) {
        *h = (Ztna__V1__Hello) ZTNA__V1__HELLO__INIT;
        h->version = (char *) "0.1.0 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* é € 😀 */
        h->private_ip = (char *) "10.0.0.7";
        h->data_plane_address = (char *) "[fd00::1]:8443";
        label_site.key = (char *) "site";
        label_site.value = (char *) "lab";
        labels[0] = &label_site;
        h->n_labels = 1;
        h->labels = labels;

        *am = (Ztna__V1__AgentMessage) ZTNA__V1__AGENT_MESSAGE__INIT;
        am->body_case = ZTNA__V1__AGENT_MESSAGE__BODY_HELLO;
        am->hello = h;
}

TEST(message_pack_unpack_round_trip) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL, *framed = NULL;
        Ztna__V1__Hello__LabelsEntry *labels[1];
        Ztna__V1__AgentMessage am, *back;
        Ztna__V1__Hello h;
        size_t size, framed_size;

        make_hello(&am, &h, labels);
        ASSERT_OK(grpc_message_pack(&am.base, GRPC_MESSAGE_MAX_DEFAULT, &buf, &size));
        ASSERT_UEQ(size, protobuf_c_message_get_packed_size(&am.base));

        ASSERT_OK(grpc_message_unpack(&ztna__v1__agent_message__descriptor, buf, size, &m));
        back = (Ztna__V1__AgentMessage *) m;
        ASSERT_EQ(back->body_case, ZTNA__V1__AGENT_MESSAGE__BODY_HELLO);
        ASSERT_STREQ(back->hello->version, h.version);
        ASSERT_STREQ(back->hello->private_ip, "10.0.0.7");
        ASSERT_STREQ(back->hello->data_plane_address, "[fd00::1]:8443");
        ASSERT_UEQ(back->hello->n_labels, 1);
        ASSERT_STREQ(back->hello->labels[0]->key, "site");
        ASSERT_STREQ(back->hello->labels[0]->value, "lab");

        /* The framed form is the header followed by exactly the same bytes, and decodes back to them. */
        ASSERT_OK(grpc_message_pack_frame(&am.base, GRPC_MESSAGE_MAX_DEFAULT, &framed, &framed_size));
        ASSERT_UEQ(framed_size, size + GRPC_FRAME_HEADER_SIZE);
        ASSERT_EQ(framed[0], 0);
        ASSERT_EQ(framed[4], (uint8_t) size);
        ASSERT_MEMEQ(framed + GRPC_FRAME_HEADER_SIZE, buf, size);

        GrpcDecoder d;
        uint8_t *msg;
        size_t consumed, msg_size;

        grpc_decoder_init(&d, 0);
        ASSERT_EQ(grpc_decoder_feed(&d, framed, framed_size, &consumed), 1);
        ASSERT_OK(grpc_decoder_take(&d, &msg, &msg_size));
        ASSERT_UEQ(msg_size, size);
        ASSERT_MEMEQ(msg, buf, size);
        free(msg);
        grpc_decoder_done(&d);
}

TEST(message_pack_cap) {
        Ztna__V1__Hello__LabelsEntry *labels[1];
        Ztna__V1__AgentMessage am;
        Ztna__V1__Hello h;
        uint8_t *buf = NULL;
        size_t size, packed;

        make_hello(&am, &h, labels);
        packed = protobuf_c_message_get_packed_size(&am.base);

        /* Exactly the cap is fine, one byte less is refused (the framed form's cap excludes the header). */
        ASSERT_OK(grpc_message_pack(&am.base, packed, &buf, &size));
        free(buf);
        ASSERT_OK(grpc_message_pack_frame(&am.base, packed, &buf, &size));
        free(buf);
        buf = NULL;
        ASSERT_ERROR(grpc_message_pack(&am.base, packed - 1, &buf, &size), EMSGSIZE);
        ASSERT_ERROR(grpc_message_pack_frame(&am.base, packed - 1, &buf, &size), EMSGSIZE);
        ASSERT_NULL(buf);

        /* A message protobuf-c considers invalid (count without array) is refused, not packed. */
        h.labels = NULL;
        ASSERT_ERROR(grpc_message_pack(&am.base, GRPC_MESSAGE_MAX_DEFAULT, &buf, &size), EINVAL);
        ASSERT_NULL(buf);
}

TEST(message_pack_empty) {
        Ztna__V1__RenewNow rn = ZTNA__V1__RENEW_NOW__INIT;
        _cleanup_(grpc_message_freep) ProtobufCMessage *m = NULL;
        uint8_t *buf = NULL;
        size_t size = SIZE_MAX;

        ASSERT_OK(grpc_message_pack(&rn.base, 0, &buf, &size));
        ASSERT_NOT_NULL(buf);
        ASSERT_UEQ(size, 0);
        free(buf);

        ASSERT_OK(grpc_message_pack_frame(&rn.base, 0, &buf, &size));
        ASSERT_UEQ(size, GRPC_FRAME_HEADER_SIZE);
        ASSERT_MEMEQ(buf, "\0\0\0\0\0", 5);
        free(buf);

        /* An empty input is a valid message with every field at its default. */
        ASSERT_OK(grpc_message_unpack(&ztna__v1__agent_message__descriptor, NULL, 0, &m));
        ASSERT_EQ(((Ztna__V1__AgentMessage *) m)->body_case, ZTNA__V1__AGENT_MESSAGE__BODY__NOT_SET);
}

TEST(message_unpack_table) {
        /* Field numbers: AgentMessage.hello = 1, Hello.version = 1, Hello.labels = 3 (entry: key 1,
         * value 2), RenewRequest.csr = 1 (bytes), EnrollRequest.token = 1. */
        static const struct {
                const char *name;
                const ProtobufCMessageDescriptor *desc;
                const char *data;
                size_t size;
                int error; /* 0: accepted */
        } table[] = {
#define ROW(n, d, s, e) { n, &ztna__v1__##d##__descriptor, s, sizeof(s) - 1, e }
                ROW("hello version ascii", agent_message, "\x0a\x03\x0a\x01" "a", 0),
                ROW("hello version 2-byte", agent_message, "\x0a\x04\x0a\x02\xc3\xa9", 0),
                ROW("hello version 3-byte", agent_message, "\x0a\x05\x0a\x03\xe2\x82\xac", 0),
                ROW("hello version 4-byte", agent_message, "\x0a\x06\x0a\x04\xf0\x9f\x98\x80", 0),
                ROW("hello version U+10FFFF", agent_message, "\x0a\x06\x0a\x04\xf4\x8f\xbf\xbf", 0),
                ROW("empty", agent_message, "", 0),
                ROW("unknown field, bad UTF-8", agent_message, "\xfa\x06\x01\xff", 0),
                ROW("bytes with NUL and 0xff", renew_request, "\x0a\x03\x00\xff\x80", 0),
                ROW("label value ok", agent_message, "\x0a\x08\x1a\x06\x0a\x01k\x12\x01v", 0),
                ROW("truncated varint", agent_message, "\x0a\x80", EBADMSG),
                ROW("length beyond end", agent_message, "\x0a\x05\x0a\x01", EBADMSG),
                ROW("group wire type", agent_message, "\x0b\x0c", EBADMSG),
                ROW("field number 0", agent_message, "\x02\x00", EBADMSG),
                /* protobuf-c itself accepts this one (and then refuses its own re-encoding). */
                ROW("field number 0, 2-byte tag", agent_message, "\x82\x00\x00", EBADMSG),
                ROW("field number 2^29", agent_message, "\x80\x80\x80\x80\x10\x00", EBADMSG),
                ROW("field number 2^29-1", agent_message, "\xf8\xff\xff\xff\x0f\x00", 0),
                ROW("wire type 7", agent_message, "\x0f\x00", EBADMSG),
                ROW("string as varint", hello, "\x08\x01", EBADMSG),
                ROW("version 0xff", agent_message, "\x0a\x03\x0a\x01\xff", EBADMSG),
                ROW("version NUL", agent_message, "\x0a\x04\x0a\x02" "a\x00", EBADMSG),
                ROW("overlong NUL", agent_message, "\x0a\x04\x0a\x02\xc0\x80", EBADMSG),
                ROW("overlong 3-byte", agent_message, "\x0a\x05\x0a\x03\xe0\x80\xaf", EBADMSG),
                ROW("surrogate", agent_message, "\x0a\x05\x0a\x03\xed\xa0\x80", EBADMSG),
                ROW("above U+10FFFF", agent_message, "\x0a\x06\x0a\x04\xf4\x90\x80\x80", EBADMSG),
                ROW("truncated sequence", agent_message, "\x0a\x04\x0a\x02\xe2\x82", EBADMSG),
                ROW("lone continuation", agent_message, "\x0a\x03\x0a\x01\x80", EBADMSG),
                ROW("label key bad UTF-8", agent_message, "\x0a\x08\x1a\x06\x0a\x01\xfe\x12\x01v", EBADMSG),
                ROW("label value NUL", agent_message, "\x0a\x08\x1a\x06\x0a\x01k\x12\x01\x00", EBADMSG),
                ROW("token NUL", enroll_request, "\x0a\x03" "ab\x00", EBADMSG),
#undef ROW
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                ProtobufCMessage *m = NULL;

                CASE("%s", table[i].name);
                if (table[i].error == 0) {
                        ASSERT_OK(grpc_message_unpack(table[i].desc, (const uint8_t *) table[i].data,
                                                      table[i].size, &m));
                        ASSERT_NOT_NULL(m);
                        ASSERT_TRUE(m->descriptor == table[i].desc);
                } else {
                        ASSERT_ERROR(grpc_message_unpack(table[i].desc, (const uint8_t *) table[i].data,
                                                         table[i].size, &m),
                                     table[i].error);
                        ASSERT_NULL(m);
                }
                m = grpc_message_free(m);
                ASSERT_NULL(m);
        }
}

TEST(message_unpack_keeps_valid_strings) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *m = NULL;
        static const uint8_t data[] = "\x0a\x06\x0a\x04\xf0\x9f\x98\x80";

        ASSERT_OK(grpc_message_unpack(&ztna__v1__agent_message__descriptor, data, sizeof(data) - 1, &m));
        ASSERT_STREQ(((Ztna__V1__AgentMessage *) m)->hello->version, "\xf0\x9f\x98\x80");
}
