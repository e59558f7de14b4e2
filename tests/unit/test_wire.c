/* test_wire: the frame reader, message validation and the receiving protocol
 * state, as pure functions over bytes: oversized / zero-length / truncated
 * frames, garbage protobuf, messages out of sequence, chunk offsets out of
 * order, overlapping or past the end, checksum mismatch, decoding limits;
 * tensor chunks read straight into the tensor (fl_wire_reader_expect). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/net/wire.h"

/* ---- helpers ------------------------------------------------------------ */

static fl_buf_t *enc(Fedopt__Envelope *m)
{
    fl_buf_t *b = NULL;
    assert_int_equal(fl_wire_encode(m, &b), 0);
    return b;
}

static fl_buf_t *hello(void)
{
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    h.protocol_version = 1;
    h.client_name = "c1";
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    m.hello = &h;
    return enc(&m);
}

static fl_buf_t *update(uint64_t round, double weight)
{
    Fedopt__Update u = FEDOPT__UPDATE__INIT;
    u.round_id = round;
    u.weight = weight;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
    m.update = &u;
    return enc(&m);
}

static fl_buf_t *begin(int purpose, uint64_t round, uint64_t total, uint32_t chunk)
{
    Fedopt__TensorBegin t = FEDOPT__TENSOR_BEGIN__INIT;
    t.purpose = purpose;
    t.round_id = round;
    t.total_bytes = total;
    t.chunk_bytes = chunk;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TENSOR_BEGIN;
    m.tensor_begin = &t;
    return enc(&m);
}

static fl_buf_t *chunk(uint64_t off, const void *data, size_t n)
{
    Fedopt__TensorChunk c = FEDOPT__TENSOR_CHUNK__INIT;
    c.offset = off;
    c.data.data = (uint8_t *)(uintptr_t)data;
    c.data.len = n;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TENSOR_CHUNK;
    m.tensor_chunk = &c;
    return enc(&m);
}

static fl_buf_t *end(uint32_t crc)
{
    Fedopt__TensorEnd e = FEDOPT__TENSOR_END__INIT;
    e.crc32 = crc;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TENSOR_END;
    m.tensor_end = &e;
    return enc(&m);
}

/* Feeds one encoded frame (header included) to the stream; returns its rc. */
static int frame(fl_wire_stream_t *s, fl_buf_t *b, fl_wire_event_t *ev, char *why)
{
    assert_true(b->len > 4);
    why[0] = '\0';
    int rc = fl_wire_stream_frame(s, b->data + 4, b->len - 4, ev, why, 256);
    fl_buf_unref(b);
    return rc;
}

static void feed_ok(fl_wire_stream_t *s, fl_buf_t *b)
{
    fl_wire_event_t ev;
    char why[256];
    int rc = frame(s, b, &ev, why);
    if (rc)
        print_error("unexpected refusal: %s\n", why);
    assert_int_equal(rc, 0);
    fl_wire_event_clear(&ev);
}

static void feed_bad(fl_wire_stream_t *s, fl_buf_t *b, int code, const char *expect)
{
    fl_wire_event_t ev;
    char why[256];
    assert_int_equal(frame(s, b, &ev, why), code);
    assert_int_equal(ev.kind, FL_WIRE_EV_NONE);
    assert_null(ev.msg);
    assert_null(ev.data);
    if (!strstr(why, expect))
        print_error("reason '%s' lacks '%s'\n", why, expect);
    assert_non_null(strstr(why, expect));
}

/* A server-side stream that already got Hello and an Update for round 3. */
static void open_with_update(fl_wire_stream_t *s, uint64_t max_tensor)
{
    fl_wire_stream_init(s, FL_WIRE_SERVER, max_tensor);
    feed_ok(s, hello());
    feed_ok(s, update(3, 5.0));
}

/* ---- frames ------------------------------------------------------------- */

static void test_frame_header_limits(void **state)
{
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 1024);
    uint8_t *f = NULL;
    uint32_t len = 0;
    size_t used;
    /* A 4 GiB claim is refused from the header alone: nothing allocated. */
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xaa};
    assert_int_equal(fl_wire_reader_feed(&r, huge, sizeof huge, &used, &f, &len), FL_ETOOBIG);
    assert_int_equal(used, 4);
    assert_null(r.payload);
    assert_null(f);
    fl_wire_reader_free(&r);
    /* Just above the limit, and exactly at it. */
    const uint8_t above[] = {0, 0, 4, 1};
    assert_int_equal(fl_wire_reader_feed(&r, above, 4, &used, &f, &len), FL_ETOOBIG);
    assert_null(r.payload);
    fl_wire_reader_free(&r);
    const uint8_t at[] = {0, 0, 4, 0};
    assert_int_equal(fl_wire_reader_feed(&r, at, 4, &used, &f, &len), 0);
    assert_non_null(r.payload);
    assert_false(fl_wire_reader_idle(&r));
    fl_wire_reader_free(&r);
    assert_true(fl_wire_reader_idle(&r));
    /* Zero-length frames are a protocol violation. */
    const uint8_t zero[] = {0, 0, 0, 0};
    assert_int_equal(fl_wire_reader_feed(&r, zero, 4, &used, &f, &len), FL_EPROTO);
    fl_wire_reader_free(&r);
    /* The hard ceiling applies whatever the configuration says. */
    fl_wire_reader_init(&r, UINT32_MAX);
    assert_int_equal(r.max_frame, FL_WIRE_HARD_MAX_FRAME);
}

static void test_frame_split_and_truncated(void **state)
{
    fl_buf_t *b = hello();
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 0);
    uint8_t *f = NULL;
    uint32_t len = 0;
    size_t used;
    /* Byte by byte: complete only at the last byte. */
    for (size_t i = 0; i + 1 < b->len; i++) {
        assert_int_equal(fl_wire_reader_feed(&r, b->data + i, 1, &used, &f, &len), 0);
        assert_int_equal(used, 1);
    }
    assert_int_equal(fl_wire_reader_feed(&r, b->data + b->len - 1, 1, &used, &f, &len), 1);
    assert_int_equal(len, b->len - 4);
    assert_memory_equal(f, b->data + 4, len);
    free(f);
    assert_true(fl_wire_reader_idle(&r));
    /* Two frames in one buffer: the first call stops after the first. */
    uint8_t two[256];
    memcpy(two, b->data, b->len);
    memcpy(two + b->len, b->data, b->len);
    assert_int_equal(fl_wire_reader_feed(&r, two, 2 * b->len, &used, &f, &len), 1);
    assert_int_equal(used, b->len);
    free(f);
    assert_int_equal(fl_wire_reader_feed(&r, two + used, b->len, &used, &f, &len), 1);
    free(f);
    /* Truncated: a frame cut short stays incomplete (the transport reports it
     * when the connection ends mid-frame). */
    assert_int_equal(fl_wire_reader_feed(&r, b->data, b->len - 2, &used, &f, &len), 0);
    assert_false(fl_wire_reader_idle(&r));
    fl_wire_reader_free(&r);
    fl_buf_unref(b);
}

/* ---- messages ----------------------------------------------------------- */

static void test_decode_garbage_and_limits(void **state)
{
    Fedopt__Envelope *m = NULL;
    char why[256];
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(fl_wire_decode(garbage, sizeof garbage, &m, why, sizeof why), FL_EFORMAT);
    assert_null(m);
    assert_non_null(strstr(why, "not a valid fedopt.Envelope"));
    /* Valid protobuf with no message in the envelope. */
    const uint8_t unknown_only[] = {0x98, 0x06, 0x01}; /* field 99 (unknown), varint 1 */
    assert_int_equal(fl_wire_decode(unknown_only, sizeof unknown_only, &m, why, sizeof why),
                     FL_EPROTO);
    assert_non_null(strstr(why, "no message"));
    assert_int_equal(fl_wire_decode(garbage, 0, &m, why, sizeof why), FL_EPROTO);

    /* Too many repeated elements, too long a string, control characters. */
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    char *models[FL_WIRE_MAX_REPEATED + 1];
    for (size_t i = 0; i <= FL_WIRE_MAX_REPEATED; i++)
        models[i] = "m";
    h.models = models;
    h.n_models = FL_WIRE_MAX_REPEATED + 1;
    Fedopt__Envelope e = FEDOPT__ENVELOPE__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    e.hello = &h;
    fl_buf_t *b = enc(&e);
    assert_int_equal(fl_wire_decode(b->data + 4, b->len - 4, &m, why, sizeof why), FL_EPROTO);
    assert_non_null(strstr(why, "Hello.models has 257 elements"));
    fl_buf_unref(b);
    h.n_models = FL_WIRE_MAX_REPEATED; /* at the limit: fine */
    b = enc(&e);
    assert_int_equal(fl_wire_decode(b->data + 4, b->len - 4, &m, why, sizeof why), 0);
    assert_int_equal(m->hello->n_models, FL_WIRE_MAX_REPEATED);
    fl_wire_msg_free(m);
    fl_buf_unref(b);
    h.n_models = 0;
    char longname[FL_WIRE_MAX_STRING + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    h.client_name = longname;
    b = enc(&e);
    assert_int_equal(fl_wire_decode(b->data + 4, b->len - 4, &m, why, sizeof why), FL_EPROTO);
    assert_non_null(strstr(why, "client_name longer than"));
    fl_buf_unref(b);
    h.client_name = "evil\nINFO fake log line";
    b = enc(&e);
    assert_int_equal(fl_wire_decode(b->data + 4, b->len - 4, &m, why, sizeof why), FL_EPROTO);
    assert_non_null(strstr(why, "control character 0x0a"));
    fl_buf_unref(b);

    /* Non-finite aggregation weight. */
    b = update(1, -1.0);
    assert_int_equal(fl_wire_decode(b->data + 4, b->len - 4, &m, why, sizeof why), FL_EPROTO);
    assert_non_null(strstr(why, "Update.weight"));
    fl_buf_unref(b);

    /* Amplification: 200k empty strings in a small frame would cost far more
     * memory decoded than on the wire; the decode budget refuses it even
     * though the repeated-count check would come later. */
    size_t n = 200000;
    uint8_t *big = malloc(8 + 2 * n);
    size_t p = 0;
    big[p++] = 0x0a; /* Envelope.hello, length-delimited */
    size_t inner = 2 * n;
    while (inner >= 0x80) {
        big[p++] = (uint8_t)(inner | 0x80);
        inner >>= 7;
    }
    big[p++] = (uint8_t)inner;
    for (size_t i = 0; i < n; i++) {
        big[p++] = 0x22; /* Hello.models, length-delimited */
        big[p++] = 0x00;
    }
    assert_int_equal(fl_wire_decode(big, p, &m, why, sizeof why), FL_EFORMAT);
    assert_null(m);
    free(big);
}

/* ---- sequence ----------------------------------------------------------- */

static void test_sequence_server_side(void **state)
{
    fl_wire_stream_t s;
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_bad(&s, update(1, 1.0), FL_EPROTO, "Update before Hello");
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
    Fedopt__Envelope e = FEDOPT__ENVELOPE__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
    e.welcome = &w;
    feed_bad(&s, enc(&e), FL_EPROTO, "a client never sends Welcome");
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    feed_bad(&s, hello(), FL_EPROTO, "a second Hello");
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    uint8_t d[8] = {0};
    feed_bad(&s, chunk(0, d, 8), FL_EPROTO, "TensorChunk outside a tensor transfer");
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 8, 8), FL_EPROTO, "not announced");
    /* An Update must be followed by its delta, for the same round. */
    open_with_update(&s, 0);
    feed_bad(&s, update(3, 1.0), FL_EPROTO, "where the announced delta tensor should begin");
    open_with_update(&s, 0);
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 4, 8, 8), FL_EPROTO, "for round 3");
    open_with_update(&s, 0);
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 3, 8, 8), FL_EPROTO, "expected delta");
    /* Heartbeats may come anywhere after Hello. */
    open_with_update(&s, 0);
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    e.heartbeat = &hb;
    feed_ok(&s, enc(&e));
    /* Secure aggregation (1.1): keys and the survivors come from the server
     * only; a client's advert is fine after Hello. */
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    Fedopt__SecAggKeys keys = FEDOPT__SEC_AGG_KEYS__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_KEYS;
    e.secagg_keys = &keys;
    feed_bad(&s, enc(&e), FL_EPROTO, "a client never sends SecAggKeys");
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    Fedopt__SecAggUnmask um = FEDOPT__SEC_AGG_UNMASK__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_UNMASK;
    e.secagg_unmask = &um;
    feed_bad(&s, enc(&e), FL_EPROTO, "a client never sends SecAggUnmask");
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    Fedopt__SecAggAdvert adv = FEDOPT__SEC_AGG_ADVERT__INIT;
    adv.round_id = 1;
    e.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_ADVERT;
    e.secagg_advert = &adv;
    feed_ok(&s, enc(&e));
    /* Nothing after Bye. */
    fl_wire_stream_init(&s, FL_WIRE_SERVER, 0);
    feed_ok(&s, hello());
    Fedopt__Bye bye = FEDOPT__BYE__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_BYE;
    e.bye = &bye;
    feed_ok(&s, enc(&e));
    e.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    e.heartbeat = &hb;
    feed_bad(&s, enc(&e), FL_EPROTO, "after the conversation ended");
}

static void test_sequence_client_side(void **state)
{
    fl_wire_stream_t s;
    fl_wire_stream_init(&s, FL_WIRE_CLIENT, 0);
    feed_bad(&s, hello(), FL_EPROTO, "a server never sends Hello");
    fl_wire_stream_init(&s, FL_WIRE_CLIENT, 0);
    {
        /* ... nor a secure round's client messages */
        Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
        Fedopt__Envelope we = FEDOPT__ENVELOPE__INIT;
        we.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
        we.welcome = &w;
        feed_ok(&s, enc(&we));
        Fedopt__SecAggReveal rv = FEDOPT__SEC_AGG_REVEAL__INIT;
        we.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_REVEAL;
        we.secagg_reveal = &rv;
        feed_bad(&s, enc(&we), FL_EPROTO, "a server never sends SecAggReveal");
    }
    fl_wire_stream_init(&s, FL_WIRE_CLIENT, 0);
    Fedopt__TaskOffer t = FEDOPT__TASK_OFFER__INIT;
    t.round_id = 2;
    t.num_params = 4;
    Fedopt__Envelope e = FEDOPT__ENVELOPE__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    e.task_offer = &t;
    feed_bad(&s, enc(&e), FL_EPROTO, "TaskOffer before Welcome");
    /* Welcome, then an offer whose model must be num_params * 4 bytes. */
    fl_wire_stream_init(&s, FL_WIRE_CLIENT, 0);
    Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
    Fedopt__Envelope we = FEDOPT__ENVELOPE__INIT;
    we.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
    we.welcome = &w;
    feed_ok(&s, enc(&we));
    feed_ok(&s, enc(&e));
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 2, 20, 8), FL_EPROTO,
             "tensor of 20 bytes, announced 16");
    /* The full, correct sequence delivers the model. */
    fl_wire_stream_init(&s, FL_WIRE_CLIENT, 0);
    feed_ok(&s, enc(&we));
    feed_ok(&s, enc(&e));
    float x[4] = {1, 2, 3, 4};
    fl_buf_t *tb;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 2, x, sizeof x, 8, &tb), 0);
    /* Walk the frames of the transfer buffer. */
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 0);
    size_t pos = 0, used;
    int frames = 0, tensors = 0;
    while (pos < tb->len) {
        uint8_t *f;
        uint32_t len;
        int rc = fl_wire_reader_feed(&r, tb->data + pos, tb->len - pos, &used, &f, &len);
        pos += used;
        assert_int_equal(rc, 1);
        fl_wire_event_t ev;
        char why[256];
        assert_int_equal(fl_wire_stream_frame(&s, f, len, &ev, why, sizeof why), 0);
        free(f);
        frames++;
        if (ev.kind == FL_WIRE_EV_TENSOR) {
            tensors++;
            assert_int_equal(ev.purpose, FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL);
            assert_int_equal(ev.round_id, 2);
            assert_int_equal(ev.nbytes, sizeof x);
            assert_memory_equal(ev.data, x, sizeof x);
            assert_int_equal((uintptr_t)ev.data % 64, 0);
        }
        fl_wire_event_clear(&ev);
    }
    assert_int_equal(frames, 4); /* begin, 2 chunks of 8 bytes, end */
    assert_int_equal(tensors, 1);
    fl_buf_unref(tb);
    fl_wire_stream_free(&s);
}

/* ---- tensors ------------------------------------------------------------ */

static void test_tensor_chunks(void **state)
{
    uint8_t d[32];
    for (int i = 0; i < 32; i++)
        d[i] = (uint8_t)(i * 7 + 1);
    uint32_t crc = fl_crc32(0, d, 32);
    fl_wire_stream_t s;

    /* In order: fine. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 16));
    feed_ok(&s, chunk(16, d + 16, 16));
    fl_wire_event_t ev;
    char why[256];
    assert_int_equal(frame(&s, end(crc), &ev, why), 0);
    assert_int_equal(ev.kind, FL_WIRE_EV_TENSOR);
    assert_memory_equal(ev.data, d, 32);
    fl_wire_event_clear(&ev);

    /* Out of order (a gap). */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_bad(&s, chunk(16, d + 16, 16), FL_EPROTO, "out of order");
    fl_wire_stream_free(&s);
    /* Overlapping. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 16));
    feed_bad(&s, chunk(8, d + 8, 16), FL_EPROTO, "overlapping");
    fl_wire_stream_free(&s);
    /* Past the end. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 24, 16));
    feed_ok(&s, chunk(0, d, 16));
    feed_bad(&s, chunk(16, d + 16, 16), FL_EPROTO, "past the end");
    fl_wire_stream_free(&s);
    /* A chunk larger than announced. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 8));
    feed_bad(&s, chunk(0, d, 16), FL_EPROTO, "outside 1..8");
    fl_wire_stream_free(&s);
    /* Ended early. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 16));
    feed_bad(&s, end(crc), FL_ETRUNCATED, "after 16 of 32 bytes");
    fl_wire_stream_free(&s);
    /* Checksum mismatch: one flipped bit. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 16));
    d[20] ^= 0x10;
    feed_ok(&s, chunk(16, d + 16, 16));
    d[20] ^= 0x10;
    feed_bad(&s, end(crc), FL_ECHECKSUM, "checksum mismatch");
    fl_wire_stream_free(&s);
    /* Other messages may not interleave with a transfer. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_bad(&s, update(3, 1.0), FL_EPROTO, "in the middle of a tensor transfer");
    fl_wire_stream_free(&s);
    /* Size limits, before any allocation. */
    open_with_update(&s, 1024);
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 2048, 16), FL_ETOOBIG,
             "exceeds the limit of 1024");
    assert_null(s.t_data);
    open_with_update(&s, 0);
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, UINT64_MAX - 3, 16), FL_ETOOBIG,
             "exceeds the limit");
    open_with_update(&s, 0);
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 30, 16), FL_EPROTO,
             "not a positive multiple of 4");
    open_with_update(&s, 0);
    feed_bad(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, FL_WIRE_MAX_CHUNK + 1),
             FL_EPROTO, "chunk_bytes");
    /* An Error aborts a transfer and frees what was received. */
    open_with_update(&s, 0);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 16));
    Fedopt__Error er = FEDOPT__ERROR__INIT;
    er.code = (Fedopt__Code)FL_ECANCELED;
    er.message = "training failed";
    Fedopt__Envelope e = FEDOPT__ENVELOPE__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_ERROR;
    e.error = &er;
    feed_ok(&s, enc(&e));
    assert_false(s.in_tensor);
    assert_null(s.t_data);
}

static void test_encode_tensor_chunking(void **state)
{
    /* 10 MiB + 4 bytes: three chunks of 4 MiB, 4 MiB, 2 MiB + 4, every frame
     * within the default max_frame. */
    size_t nbytes = (10u << 20) + 4;
    uint8_t *x = malloc(nbytes);
    for (size_t i = 0; i < nbytes; i++)
        x[i] = (uint8_t)(i * 31 + (i >> 12));
    fl_buf_t *b;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 9, x, nbytes, 0, &b), 0);
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 0);
    fl_wire_stream_t s;
    open_with_update(&s, 0);
    s.announced_round = 9;
    size_t pos = 0, used;
    int frames = 0, got = 0;
    while (pos < b->len) {
        uint8_t *f;
        uint32_t len;
        assert_int_equal(fl_wire_reader_feed(&r, b->data + pos, b->len - pos, &used, &f, &len), 1);
        pos += used;
        assert_true(len <= FL_WIRE_DEFAULT_MAX_FRAME);
        fl_wire_event_t ev;
        char why[256];
        assert_int_equal(fl_wire_stream_frame(&s, f, len, &ev, why, sizeof why), 0);
        free(f);
        frames++;
        if (ev.kind == FL_WIRE_EV_TENSOR) {
            got = 1;
            assert_int_equal(ev.nbytes, nbytes);
            assert_memory_equal(ev.data, x, nbytes);
        }
        fl_wire_event_clear(&ev);
    }
    assert_int_equal(frames, 5);
    assert_true(got);
    fl_buf_unref(b);
    free(x);
    /* Bad arguments. */
    float y[1] = {0};
    assert_int_equal(fl_wire_encode_tensor(1, 0, y, 3, 0, &b), FL_EINVAL);
    assert_int_equal(fl_wire_encode_tensor(1, 0, y, 4, FL_WIRE_MAX_CHUNK + 1, &b), FL_EINVAL);
    assert_int_equal(fl_wire_chunk_for_frame(FL_WIRE_DEFAULT_MAX_FRAME), FL_WIRE_MAX_CHUNK);
    assert_int_equal(fl_wire_chunk_for_frame(4096), 4096 - 64);
    assert_int_equal(fl_wire_chunk_for_frame(64), 0);
}

/* Receives the float32 tensor x[n] sent in chunks of `chunk` bytes and
 * returns the event's finite flag. */
static int received_finite(const float *x, size_t n, uint32_t chunk)
{
    fl_buf_t *b;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 9, x, n * 4, chunk, &b), 0);
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 0);
    fl_wire_stream_t s;
    open_with_update(&s, 0);
    s.announced_round = 9;
    size_t pos = 0, used;
    int finite = -1;
    while (pos < b->len) {
        uint8_t *f;
        uint32_t len;
        assert_int_equal(fl_wire_reader_feed(&r, b->data + pos, b->len - pos, &used, &f, &len), 1);
        pos += used;
        fl_wire_event_t ev;
        char why[256];
        assert_int_equal(fl_wire_stream_frame(&s, f, len, &ev, why, sizeof why), 0);
        free(f);
        if (ev.kind == FL_WIRE_EV_TENSOR) {
            assert_memory_equal(ev.data, x, n * 4);
            finite = ev.finite;
        }
        fl_wire_event_clear(&ev);
    }
    fl_buf_unref(b);
    assert_true(finite == 0 || finite == 1);
    return finite;
}

/* The tensor event says whether every value is finite: checked as the
 * chunks arrive, with floats split across chunks (6-byte chunks), a NaN or
 * an Inf anywhere (first, straddling, last) found. */
static void test_tensor_finite_flag(void **state)
{
    (void)state;
    float x[41];
    for (int i = 0; i < 41; i++)
        x[i] = (float)i - 20.5f;
    assert_int_equal(received_finite(x, 41, 6), 1);
    assert_int_equal(received_finite(x, 41, 0), 1);
    static const int at[] = {0, 1, 3, 20, 40};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        float keep = x[at[k]];
        x[at[k]] = k % 2 ? INFINITY : NAN;
        assert_int_equal(received_finite(x, 41, 6), 0);
        assert_int_equal(received_finite(x, 41, 0), 0);
        x[at[k]] = keep;
    }
    assert_int_equal(received_finite(x, 41, 6), 1);
}

/* A tensor received into the application's buffer: no allocation, the event
 * says borrowed, clearing it leaves the buffer alone; one transfer only; a
 * buffer too small is ignored. */
static void test_tensor_into_dst(void **state)
{
    uint8_t d[32];
    for (int i = 0; i < 32; i++)
        d[i] = (uint8_t)(3 * i);
    uint32_t crc = fl_crc32(0, d, 32);
    uint8_t *mine = aligned_alloc(64, 64);
    fl_wire_stream_t s;
    open_with_update(&s, 0);
    fl_wire_stream_set_dst(&s, mine, 64);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 16));
    feed_ok(&s, chunk(16, d + 16, 16));
    fl_wire_event_t ev;
    char why[256];
    assert_int_equal(frame(&s, end(crc), &ev, why), 0);
    assert_int_equal(ev.kind, FL_WIRE_EV_TENSOR);
    assert_ptr_equal(ev.data, mine);
    assert_true(ev.borrowed);
    assert_memory_equal(mine, d, 32);
    fl_wire_event_clear(&ev); /* must not free mine (ASan would see the double free below) */
    /* The next transfer allocates again. */
    feed_ok(&s, update(3, 1.0));
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_ok(&s, chunk(0, d, 32 / 2));
    feed_ok(&s, chunk(16, d + 16, 16));
    assert_int_equal(frame(&s, end(crc), &ev, why), 0);
    assert_ptr_not_equal(ev.data, mine);
    assert_false(ev.borrowed);
    fl_wire_event_clear(&ev);
    /* Too small: ignored. */
    feed_ok(&s, update(3, 1.0));
    fl_wire_stream_set_dst(&s, mine, 16);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    assert_ptr_not_equal(s.t_data, mine);
    fl_wire_stream_free(&s);
    /* An aborted transfer into dst leaves dst to its owner. */
    open_with_update(&s, 0);
    fl_wire_stream_set_dst(&s, mine, 64);
    feed_ok(&s, begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16));
    feed_bad(&s, chunk(8, d, 16), FL_EPROTO, "out of order");
    fl_wire_stream_free(&s);
    free(mine);
}

/* Streams every frame of transfer b into s; returns the last rc and leaves a
 * tensor event (if one came) in *out. */
static int stream_all(fl_wire_stream_t *s, fl_buf_t *b, fl_wire_event_t *out, char *why)
{
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 0);
    size_t pos = 0, used;
    int rc = 0;
    memset(out, 0, sizeof *out);
    while (pos < b->len && rc == 0) {
        uint8_t *f;
        uint32_t len;
        assert_int_equal(fl_wire_reader_feed(&r, b->data + pos, b->len - pos, &used, &f, &len), 1);
        pos += used;
        fl_wire_event_t ev;
        rc = fl_wire_stream_frame(s, f, len, &ev, why, 256);
        free(f);
        if (ev.kind == FL_WIRE_EV_TENSOR)
            *out = ev;
        else
            fl_wire_event_clear(&ev);
    }
    fl_wire_reader_free(&r);
    return rc;
}

/* Reads the byte stream b[0..n) through a reader, `step` bytes at a time,
 * into s, placing each expected chunk (fl_wire_stream_expect, then
 * fl_wire_reader_expect between frames). Returns the last stream rc; counts
 * the frames placed and read as usual; a tensor event goes to *out. */
static int read_placing(fl_wire_stream_t *s, const uint8_t *b, size_t n, size_t step, int *placed, int *usual,
                        fl_wire_event_t *out, char *why)
{
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 0);
    memset(out, 0, sizeof *out);
    *placed = *usual = 0;
    int rc = 0;
    for (size_t pos = 0; pos < n && rc == 0;) {
        if (fl_wire_reader_idle(&r)) {
            uint8_t pre[FL_WIRE_PREFIX_MAX], *place;
            size_t plen, k;
            if (fl_wire_stream_expect(s, pre, &plen, &place, &k))
                fl_wire_reader_expect(&r, pre, plen, place, k);
        }
        uint8_t *dst, *f = NULL;
        size_t want;
        uint32_t len = 0;
        fl_wire_reader_next(&r, &dst, &want);
        size_t k = n - pos < want ? n - pos : want;
        k = k < step ? k : step;
        memcpy(dst, b + pos, k);
        pos += k;
        int a = fl_wire_reader_advance(&r, k, &f, &len);
        assert_true(a >= 0 && a <= 2);
        if (a == 2) {
            assert_null(f);
            fl_wire_stream_placed(s, len);
            (*placed)++;
        } else if (a == 1) {
            fl_wire_event_t ev;
            rc = fl_wire_stream_frame(s, f, len, &ev, why, 256);
            free(f);
            (*usual)++;
            if (ev.kind == FL_WIRE_EV_TENSOR)
                *out = ev;
            else
                fl_wire_event_clear(&ev);
        }
    }
    fl_wire_reader_free(&r);
    return rc;
}

/* Chunks written straight into the tensor (fl_wire_reader_expect with
 * fl_wire_stream_expect): every chunk of a canonical transfer is placed (no
 * frame buffer), offsets of one to three varint bytes, bytes arriving one or
 * seven at a time or whole, and the tensor, its checksum and finite flag are
 * those of the usual path; a frame of the expected length that is not the
 * expected chunk (another field order, a wrong offset) is read as usual, so
 * both paths accept and refuse the same frames; chunks smaller than
 * announced are read as usual (but for one of the tensor's remainder). */
static void test_chunks_in_place(void **state)
{
    enum { N = 10001 }; /* 40,004 bytes in chunks of 3,000: offsets to 39,000 */
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++)
        x[i] = (float)(i % 977) * 0.25f - 100.0f;
    fl_buf_t *b;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 9, x, N * 4, 3000, &b), 0);
    static const size_t steps[] = {1, 7, SIZE_MAX};
    for (size_t t = 0; t < 3; t++) {
        fl_wire_stream_t s;
        open_with_update(&s, 0);
        s.announced_round = 9;
        fl_wire_event_t ev;
        char why[256];
        int placed, usual;
        assert_int_equal(read_placing(&s, b->data, b->len, steps[t], &placed, &usual, &ev, why), 0);
        assert_int_equal(placed, 14);
        assert_int_equal(usual, 2); /* TensorBegin, TensorEnd */
        assert_int_equal(ev.kind, FL_WIRE_EV_TENSOR);
        assert_int_equal(ev.nbytes, N * 4);
        assert_memory_equal(ev.data, x, N * 4);
        assert_int_equal(ev.crc32, fl_crc32(0, x, N * 4));
        assert_true(ev.finite);
        fl_wire_event_clear(&ev);
        fl_wire_stream_free(&s);
    }
    /* A NaN in a placed chunk still clears the finite flag. */
    x[5000] = NAN;
    fl_buf_t *bn;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 9, x, N * 4, 3000, &bn), 0);
    {
        fl_wire_stream_t s;
        open_with_update(&s, 0);
        s.announced_round = 9;
        fl_wire_event_t ev;
        char why[256];
        int placed, usual;
        assert_int_equal(read_placing(&s, bn->data, bn->len, 7, &placed, &usual, &ev, why), 0);
        assert_int_equal(placed, 14);
        assert_int_equal(ev.kind, FL_WIRE_EV_TENSOR);
        assert_false(ev.finite);
        fl_wire_event_clear(&ev);
        fl_wire_stream_free(&s);
    }
    fl_buf_unref(bn);
    free(x);
    fl_buf_unref(b);

    /* Hand-made transfers of 32 bytes in chunks of 16. */
    uint8_t d[32];
    for (int i = 0; i < 32; i++)
        d[i] = (uint8_t)(5 * i + 1);
    uint32_t crc = fl_crc32(0, d, 32);
    fl_bytes_t w = {0};
    fl_buf_t *parts[4];
    /* The second chunk with its fields in the other order: the same length
     * as the expected frame, not its prefix; protobuf takes it. */
    parts[0] = begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16);
    parts[1] = chunk(0, d, 16);
    parts[2] = chunk(16, d + 16, 16);
    parts[3] = end(crc);
    for (int i = 0; i < 4; i++) {
        fl_buf_t *p = parts[i];
        if (i == 2) {
            /* 4-byte header, 3a LL, 08 10, 12 10 data -> 3a LL, 12 10 data, 08 10 */
            uint8_t *q = p->data + 4;
            assert_int_equal(q[0], 0x3a);
            assert_int_equal(q[2], 0x08);
            assert_int_equal(q[4], 0x12);
            uint8_t off[2] = {q[2], q[3]};
            memmove(q + 2, q + 4, p->len - 8);
            memcpy(p->data + p->len - 2, off, 2);
        }
        assert_int_equal(fl_bytes_append(&w, p->data, p->len), 0);
        fl_buf_unref(p);
    }
    {
        fl_wire_stream_t s;
        open_with_update(&s, 0);
        fl_wire_event_t ev;
        char why[256];
        int placed, usual;
        assert_int_equal(read_placing(&s, w.data, w.len, 3, &placed, &usual, &ev, why), 0);
        assert_int_equal(placed, 1);
        assert_int_equal(usual, 3);
        assert_int_equal(ev.kind, FL_WIRE_EV_TENSOR);
        assert_memory_equal(ev.data, d, 32);
        fl_wire_event_clear(&ev);
        fl_wire_stream_free(&s);
    }
    fl_bytes_free(&w);
    /* A chunk at the wrong offset, of the expected length: read as usual
     * and refused as usual. */
    parts[0] = begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16);
    parts[1] = chunk(0, d, 16);
    parts[2] = chunk(17, d + 16, 16);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fl_bytes_append(&w, parts[i]->data, parts[i]->len), 0);
        fl_buf_unref(parts[i]);
    }
    {
        fl_wire_stream_t s;
        open_with_update(&s, 0);
        fl_wire_event_t ev;
        char why[256];
        int placed, usual;
        assert_int_equal(read_placing(&s, w.data, w.len, 5, &placed, &usual, &ev, why), FL_EPROTO);
        assert_non_null(strstr(why, "out of order"));
        assert_int_equal(placed, 1);
        fl_wire_stream_free(&s);
    }
    fl_bytes_free(&w);
    /* Chunks of 8 where 16 were announced: other lengths, read as usual,
     * but for the last, which is the expected remainder. */
    parts[0] = begin(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, 32, 16);
    assert_int_equal(fl_bytes_append(&w, parts[0]->data, parts[0]->len), 0);
    fl_buf_unref(parts[0]);
    for (int i = 0; i < 4; i++) {
        fl_buf_t *p = chunk((uint64_t)i * 8, d + i * 8, 8);
        assert_int_equal(fl_bytes_append(&w, p->data, p->len), 0);
        fl_buf_unref(p);
    }
    parts[0] = end(crc);
    assert_int_equal(fl_bytes_append(&w, parts[0]->data, parts[0]->len), 0);
    fl_buf_unref(parts[0]);
    {
        fl_wire_stream_t s;
        open_with_update(&s, 0);
        fl_wire_event_t ev;
        char why[256];
        int placed, usual;
        assert_int_equal(read_placing(&s, w.data, w.len, SIZE_MAX, &placed, &usual, &ev, why), 0);
        assert_int_equal(placed, 1); /* the last, the tensor's remainder of 8 */
        assert_int_equal(usual, 5);
        assert_memory_equal(ev.data, d, 32);
        fl_wire_event_clear(&ev);
        fl_wire_stream_free(&s);
    }
    fl_bytes_free(&w);
}

/* Protocol 1.1's encoded deltas: decoded chunk by chunk into floats (into
 * the set_dst buffer), each codec; a client never accepts one; an encoding
 * whose size does not fit its values, or that decodes to NaN, is refused. */
static void test_coded_delta(void **state)
{
    enum { N = 3008 }; /* N * 4 is a multiple of 64, as aligned_alloc wants */
    float *x = malloc(N * sizeof *x), *dst = aligned_alloc(64, N * sizeof(float));
    for (int i = 0; i < N; i++)
        x[i] = (float)((i * 37) % 101 - 50) / 64.0f; /* exact in f16 */
    for (int codec = FL_CODEC_F16; codec <= FL_CODEC_TOPK; codec++) {
        uint8_t *enc_bytes;
        size_t enc_len;
        assert_int_equal(fl_codec_encode(codec, x, N, N / 2, NULL, &enc_bytes, &enc_len), 0);
        fl_buf_t *b;
        /* small chunks, so records straddle chunk boundaries */
        assert_int_equal(fl_wire_encode_tensor_codec(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, codec, N,
                                                     enc_bytes, enc_len, 999, &b),
                         0);
        fl_wire_stream_t s;
        open_with_update(&s, N * 4);
        fl_wire_stream_set_dst(&s, dst, N * sizeof(float));
        fl_wire_event_t ev;
        char why[256] = "";
        int rc = stream_all(&s, b, &ev, why);
        if (rc)
            print_error("codec %d: %s\n", codec, why);
        assert_int_equal(rc, 0);
        assert_int_equal(ev.kind, FL_WIRE_EV_TENSOR);
        assert_int_equal(ev.nbytes, N * 4);
        assert_ptr_equal(ev.data, dst);
        float *y = (float *)ev.data;
        int kept = 0;
        for (int i = 0; i < N; i++) {
            if (codec == FL_CODEC_F16)
                assert_true(y[i] == x[i]);
            else if (codec == FL_CODEC_INT8)
                assert_true(fabsf(y[i] - x[i]) <= 0.5f * (50.0f / 64.0f / 127.0f) * 1.001f);
            else
                kept += y[i] != 0.0f;
        }
        if (codec == FL_CODEC_TOPK)
            assert_int_equal(kept, N / 2);
        assert_int_equal(ev.crc32, fl_crc32(0, enc_bytes, enc_len));
        assert_int_equal(ev.wire_bytes, enc_len);
        fl_wire_event_clear(&ev);
        fl_wire_stream_free(&s);

        /* the same transfer to a client: refused at TensorBegin */
        fl_wire_stream_init(&s, FL_WIRE_CLIENT, 0);
        s.phase = 1;
        s.announced = FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA;
        s.announced_round = 3;
        assert_int_equal(stream_all(&s, b, &ev, why), FL_EPROTO);
        assert_non_null(strstr(why, "codec"));
        fl_wire_stream_free(&s);
        fl_buf_unref(b);
        free(enc_bytes);
    }
    /* f16 bytes announced as one value too many: refused at TensorBegin */
    uint8_t *e;
    size_t elen;
    assert_int_equal(fl_codec_encode(FL_CODEC_F16, x, N, 0, NULL, &e, &elen), 0);
    fl_buf_t *b;
    assert_int_equal(fl_wire_encode_tensor_codec(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, FL_CODEC_F16,
                                                 N + 1, e, elen, 0, &b),
                     0);
    fl_wire_stream_t s;
    fl_wire_event_t ev;
    char why[256];
    open_with_update(&s, (N + 1) * 4);
    assert_int_equal(stream_all(&s, b, &ev, why), FL_EPROTO);
    assert_non_null(strstr(why, "cannot hold"));
    fl_wire_stream_free(&s);
    fl_buf_unref(b);
    /* more values than the receiver's model: too big */
    assert_int_equal(fl_wire_encode_tensor_codec(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, FL_CODEC_F16,
                                                 N, e, elen, 0, &b),
                     0);
    open_with_update(&s, (N - 1) * 4);
    assert_int_equal(stream_all(&s, b, &ev, why), FL_ETOOBIG);
    fl_wire_stream_free(&s);
    fl_buf_unref(b);
    /* a NaN in the encoded bytes: refused while streaming */
    e[10] = 0xff;
    e[11] = 0x7f;
    assert_int_equal(fl_wire_encode_tensor_codec(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 3, FL_CODEC_F16,
                                                 N, e, elen, 0, &b),
                     0);
    open_with_update(&s, N * 4);
    assert_int_equal(stream_all(&s, b, &ev, why), FL_ENONFINITE);
    fl_wire_stream_free(&s);
    fl_buf_unref(b);
    free(e);
    free(x);
    free(dst);
}

/* The tensor table travels in a TaskOffer and is checked by names, shapes
 * and offsets: a layout with the same element count but another shape, or
 * another name, is refused; an empty table (a 1.0 server) passes. */
static void test_tensor_table(void **state)
{
    fl_params_t p;
    fl_params_init(&p);
    assert_int_equal(fl_params_add(&p, "fc1.weight", 2, (int64_t[]){4, 6}, 0), 0);
    assert_int_equal(fl_params_add(&p, "fc1.bias", 1, (int64_t[]){4}, 0), 0);
    Fedopt__TensorInfo **t;
    size_t nt;
    assert_int_equal(fl_wire_table_make(&p, &t, &nt), 0);
    assert_int_equal(nt, 2);
    Fedopt__TaskOffer o = FEDOPT__TASK_OFFER__INIT;
    o.round_id = 1;
    o.num_params = 28;
    o.tensors = t;
    o.n_tensors = nt;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    m.task_offer = &o;
    fl_buf_t *b = enc(&m);
    fl_wire_table_free(t, nt);
    Fedopt__Envelope *d;
    char why[256];
    assert_int_equal(fl_wire_decode(b->data + 4, b->len - 4, &d, why, sizeof why), 0);
    fl_buf_unref(b);
    fl_wire_tensor_t *rt;
    assert_int_equal(fl_wire_table_read(d->task_offer->tensors, d->task_offer->n_tensors, &rt, why, sizeof why), 0);
    assert_string_equal(rt[1].name, "fc1.bias");
    assert_int_equal(rt[1].offset, 96);
    assert_int_equal(rt[0].shape[1], 6);
    assert_int_equal(fl_wire_table_check(rt, 2, &p, why, sizeof why), 0);
    assert_int_equal(fl_wire_table_check(NULL, 0, &p, why, sizeof why), 0);
    /* same count, other shape */
    fl_params_t q;
    fl_params_init(&q);
    assert_int_equal(fl_params_add(&q, "fc1.weight", 2, (int64_t[]){6, 4}, 0), 0);
    assert_int_equal(fl_params_add(&q, "fc1.bias", 1, (int64_t[]){4}, 0), 0);
    assert_int_equal(fl_wire_table_check(rt, 2, &q, why, sizeof why), FL_ESHAPE);
    assert_non_null(strstr(why, "[4, 6]"));
    fl_params_free(&q);
    /* same shapes, other name */
    strcpy(rt[1].name, "fc2.bias");
    assert_int_equal(fl_wire_table_check(rt, 2, &p, why, sizeof why), FL_ESHAPE);
    assert_non_null(strstr(why, "fc2.bias"));
    free(rt);
    /* a dtype other than float32 is refused when read */
    char *orig = d->task_offer->tensors[0]->dtype;
    d->task_offer->tensors[0]->dtype = "float16";
    assert_int_equal(fl_wire_table_read(d->task_offer->tensors, d->task_offer->n_tensors, &rt, why, sizeof why),
                     FL_EPROTO);
    d->task_offer->tensors[0]->dtype = orig; /* the decoder's, freed with the message */
    fl_wire_msg_free(d);
    fl_params_free(&p);
}

static void test_buf_refcount(void **state)
{
    fl_buf_t *b;
    assert_int_equal(fl_buf_new(0, &b), FL_EINVAL);
    assert_int_equal(fl_buf_new(16, &b), 0);
    assert_ptr_equal(fl_buf_ref(b), b);
    assert_int_equal(atomic_load(&b->refs), 2);
    fl_buf_unref(b);
    assert_int_equal(atomic_load(&b->refs), 1);
    fl_buf_unref(b); /* freed: ASan would flag any later use */
    fl_buf_unref(NULL);
    assert_string_equal(fl_wire_msg_name(FEDOPT__ENVELOPE__MSG_TASK_OFFER), "TaskOffer");
    assert_string_equal(fl_wire_msg_name(99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_header_limits),
        cmocka_unit_test(test_frame_split_and_truncated),
        cmocka_unit_test(test_decode_garbage_and_limits),
        cmocka_unit_test(test_sequence_server_side),
        cmocka_unit_test(test_sequence_client_side),
        cmocka_unit_test(test_tensor_chunks),
        cmocka_unit_test(test_encode_tensor_chunking),
        cmocka_unit_test(test_tensor_finite_flag),
        cmocka_unit_test(test_tensor_into_dst),
        cmocka_unit_test(test_chunks_in_place),
        cmocka_unit_test(test_coded_delta),
        cmocka_unit_test(test_tensor_table),
        cmocka_unit_test(test_buf_refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
