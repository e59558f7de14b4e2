#include "common/net/wire.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/params.h"

/* Tensors travel as their in-memory float32 bytes, which is the wire's
 * little-endian layout only on little-endian hosts: refuse to build elsewhere
 * rather than silently byte-swap models. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedopt's wire format assumes a little-endian host"
#endif

static void say(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || why_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* ---- buffers ------------------------------------------------------------ */

int fl_buf_new(size_t len, fl_buf_t **out)
{
    if (!out || len == 0)
        return FL_EINVAL;
    *out = NULL;
    fl_buf_t *b = malloc(sizeof *b);
    if (!b)
        return FL_ENOMEM;
    /* Big buffers (encoded models) on transparent huge pages where the
     * kernel offers them: filling them then takes a few dozen page faults
     * instead of thousands (bench_tls measures the transfer). */
    if (len >= (4u << 20)) {
        size_t rounded = (len + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
        b->data = aligned_alloc(2u << 20, rounded);
#ifdef MADV_HUGEPAGE
        if (b->data)
            madvise(b->data, rounded, MADV_HUGEPAGE);
#endif
    } else {
        b->data = malloc(len);
    }
    if (!b->data) {
        free(b);
        return FL_ENOMEM;
    }
    atomic_init(&b->refs, 1);
    b->len = len;
    *out = b;
    return 0;
}

fl_buf_t *fl_buf_ref(fl_buf_t *b)
{
    if (b)
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void fl_buf_unref(fl_buf_t *b)
{
    if (!b)
        return;
    /* acq_rel so the last owner sees every write made before the others let go. */
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        free(b->data);
        free(b);
    }
}

/* ---- encoding ----------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Packs msg as a frame at p (which has room for FL_WIRE_HEADER + size). */
static size_t pack_frame(const Fedopt__Envelope *msg, size_t size, uint8_t *p)
{
    put_be32(p, (uint32_t)size);
    size_t n = fedopt__envelope__pack(msg, p + FL_WIRE_HEADER);
    return FL_WIRE_HEADER + n;
}

int fl_wire_encode(const Fedopt__Envelope *msg, fl_buf_t **out)
{
    if (!msg || !out || msg->msg_case == FEDOPT__ENVELOPE__MSG__NOT_SET)
        return FL_EINVAL;
    *out = NULL;
    size_t size = fedopt__envelope__get_packed_size(msg);
    if (size == 0 || size > FL_WIRE_HARD_MAX_FRAME)
        return size == 0 ? FL_EINVAL : FL_ETOOBIG;
    fl_buf_t *b;
    int rc = fl_buf_new(FL_WIRE_HEADER + size, &b);
    if (rc)
        return rc;
    pack_frame(msg, size, b->data);
    *out = b;
    return 0;
}

uint32_t fl_wire_chunk_for_frame(uint32_t max_frame)
{
    /* A chunk envelope costs at most 1 (oneof tag) + 5 (length) + 1 + 10
     * (offset) + 1 + 5 (data length) = 23 bytes beyond the data; 64 is slack. */
    if (max_frame <= 64)
        return 0;
    uint32_t c = max_frame - 64;
    return c > FL_WIRE_MAX_CHUNK ? FL_WIRE_MAX_CHUNK : c;
}

int fl_wire_encode_tensor(Fedopt__TensorPurpose purpose, uint64_t round_id, const void *data,
                          size_t nbytes, uint32_t chunk_bytes, fl_buf_t **out)
{
    return fl_wire_encode_tensor_codec(purpose, round_id, FL_CODEC_F32, 0, data, nbytes, chunk_bytes,
                                       out);
}

int fl_wire_encode_tensor_codec(Fedopt__TensorPurpose purpose, uint64_t round_id, fl_codec_t codec,
                                uint64_t num_values, const void *data, size_t nbytes,
                                uint32_t chunk_bytes, fl_buf_t **out)
{
    if (!out || !data || nbytes == 0 || chunk_bytes > FL_WIRE_MAX_CHUNK || !fl_codec_name((int)codec))
        return FL_EINVAL;
    if (codec == FL_CODEC_F32 ? nbytes % 4 != 0 : num_values == 0)
        return FL_EINVAL;
    *out = NULL;
    if (chunk_bytes == 0)
        chunk_bytes = FL_WIRE_MAX_CHUNK;
    const uint8_t *src = data;

    Fedopt__TensorBegin tb = FEDOPT__TENSOR_BEGIN__INIT;
    tb.purpose = purpose;
    tb.round_id = round_id;
    tb.total_bytes = nbytes;
    tb.chunk_bytes = chunk_bytes;
    if (codec != FL_CODEC_F32) {
        tb.codec = (Fedopt__Codec)codec;
        tb.num_values = num_values;
    }
    Fedopt__Envelope eb = FEDOPT__ENVELOPE__INIT;
    eb.msg_case = FEDOPT__ENVELOPE__MSG_TENSOR_BEGIN;
    eb.tensor_begin = &tb;

    Fedopt__TensorEnd te = FEDOPT__TENSOR_END__INIT;
    te.crc32 = fl_crc32(0, data, nbytes);
    Fedopt__Envelope ee = FEDOPT__ENVELOPE__INIT;
    ee.msg_case = FEDOPT__ENVELOPE__MSG_TENSOR_END;
    ee.tensor_end = &te;

    Fedopt__TensorChunk tc = FEDOPT__TENSOR_CHUNK__INIT;
    Fedopt__Envelope ec = FEDOPT__ENVELOPE__INIT;
    ec.msg_case = FEDOPT__ENVELOPE__MSG_TENSOR_CHUNK;
    ec.tensor_chunk = &tc;

    /* Size everything first so the transfer is one allocation. */
    size_t sb = fedopt__envelope__get_packed_size(&eb);
    size_t se = fedopt__envelope__get_packed_size(&ee);
    size_t total = 2 * FL_WIRE_HEADER + sb + se;
    for (size_t off = 0; off < nbytes; off += chunk_bytes) {
        tc.offset = off;
        tc.data.len = nbytes - off < chunk_bytes ? nbytes - off : chunk_bytes;
        tc.data.data = (uint8_t *)(uintptr_t)(src + off);
        total += FL_WIRE_HEADER + fedopt__envelope__get_packed_size(&ec);
    }
    fl_buf_t *b;
    int rc = fl_buf_new(total, &b);
    if (rc)
        return rc;
    uint8_t *p = b->data;
    p += pack_frame(&eb, sb, p);
    for (size_t off = 0; off < nbytes; off += chunk_bytes) {
        tc.offset = off;
        tc.data.len = nbytes - off < chunk_bytes ? nbytes - off : chunk_bytes;
        tc.data.data = (uint8_t *)(uintptr_t)(src + off);
        p += pack_frame(&ec, fedopt__envelope__get_packed_size(&ec), p);
    }
    p += pack_frame(&ee, se, p);
    if ((size_t)(p - b->data) != total) { /* cannot happen unless protobuf-c is inconsistent */
        fl_buf_unref(b);
        return FL_EFORMAT;
    }
    *out = b;
    return 0;
}

/* ---- tensor tables ------------------------------------------------------ */

void fl_wire_table_free(Fedopt__TensorInfo **t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        if (t[i]) {
            free(t[i]->shape);
            free(t[i]);
        }
    free(t);
}

int fl_wire_table_make(const fl_params_t *p, Fedopt__TensorInfo ***out, size_t *n)
{
    if (!p || !out || !n)
        return FL_EINVAL;
    *out = NULL;
    *n = 0;
    Fedopt__TensorInfo **t = calloc(p->nviews ? p->nviews : 1, sizeof *t);
    if (!t)
        return FL_ENOMEM;
    for (size_t i = 0; i < p->nviews; i++) {
        const fl_param_view_t *v = &p->views[i];
        t[i] = malloc(sizeof *t[i]);
        if (!t[i]) {
            fl_wire_table_free(t, i);
            return FL_ENOMEM;
        }
        fedopt__tensor_info__init(t[i]);
        t[i]->shape = malloc((size_t)(v->ndim > 0 ? v->ndim : 1) * sizeof(uint64_t));
        if (!t[i]->shape) {
            fl_wire_table_free(t, i + 1);
            return FL_ENOMEM;
        }
        /* The name and dtype point into p and a literal: the table lives no
         * longer than the layout it describes. */
        t[i]->name = (char *)(uintptr_t)v->name;
        t[i]->dtype = "float32";
        t[i]->n_shape = (size_t)v->ndim;
        for (int d = 0; d < v->ndim; d++)
            t[i]->shape[d] = (uint64_t)v->shape[d];
        t[i]->offset = (uint64_t)v->offset * sizeof(float);
    }
    *out = t;
    *n = p->nviews;
    return 0;
}

int fl_wire_table_read(Fedopt__TensorInfo *const *t, size_t n, fl_wire_tensor_t **out, char *why,
                       size_t why_len)
{
    if (!out || (n && !t))
        return FL_EINVAL;
    *out = NULL;
    if (n == 0)
        return 0;
    fl_wire_tensor_t *r = calloc(n, sizeof *r);
    if (!r)
        return FL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = t[i]->name ? t[i]->name : "";
        if (strlen(name) >= FL_PARAM_NAME_MAX || t[i]->n_shape > FL_PARAM_MAX_DIMS ||
            strcmp(t[i]->dtype ? t[i]->dtype : "", "float32") != 0) {
            say(why, why_len, "tensor table row %zu (%.64s): name over %d bytes, over %d dims or dtype not float32",
                i, name, FL_PARAM_NAME_MAX - 1, FL_PARAM_MAX_DIMS);
            free(r);
            return FL_EPROTO;
        }
        memcpy(r[i].name, name, strlen(name) + 1);
        r[i].ndim = (int)t[i]->n_shape;
        for (size_t d = 0; d < t[i]->n_shape; d++)
            r[i].shape[d] = t[i]->shape[d];
        r[i].offset = t[i]->offset;
    }
    *out = r;
    return 0;
}

static void shape_str(char *buf, size_t len, int ndim, const uint64_t *d)
{
    size_t o = 0;
    o += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

int fl_wire_table_check(const fl_wire_tensor_t *t, size_t n, const fl_params_t *p, char *why,
                        size_t why_len)
{
    if (n == 0)
        return 0;
    if (!t || !p)
        return FL_EINVAL;
    if (n != p->nviews) {
        say(why, why_len, "the server's model has %zu tensors, the one built here %zu", n, p->nviews);
        return FL_ESHAPE;
    }
    for (size_t i = 0; i < n; i++) {
        const fl_param_view_t *v = &p->views[i];
        uint64_t mine[FL_PARAM_MAX_DIMS];
        int same = strcmp(t[i].name, v->name) == 0 && t[i].ndim == v->ndim &&
                   t[i].offset == (uint64_t)v->offset * sizeof(float);
        for (int d = 0; d < v->ndim; d++) {
            mine[d] = (uint64_t)v->shape[d];
            same = same && t[i].shape[d] == mine[d];
        }
        if (!same) {
            char a[96], b[96];
            shape_str(a, sizeof a, t[i].ndim, t[i].shape);
            shape_str(b, sizeof b, v->ndim, mine);
            say(why, why_len, "tensor %zu: the server has %s %s at byte %llu, the model built here %s %s at byte %llu",
                i, t[i].name, a, (unsigned long long)t[i].offset, v->name, b,
                (unsigned long long)v->offset * sizeof(float));
            return FL_ESHAPE;
        }
    }
    return 0;
}

/* ---- frames ------------------------------------------------------------- */

int fl_wire_frame_len(const uint8_t hdr[4], uint32_t max_frame, uint32_t *len)
{
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (n == 0)
        return FL_EPROTO;
    if (n > max_frame)
        return FL_ETOOBIG;
    *len = n;
    return 0;
}

void fl_wire_reader_init(fl_wire_reader_t *r, uint32_t max_frame)
{
    memset(r, 0, sizeof *r);
    if (max_frame == 0)
        max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    if (max_frame > FL_WIRE_HARD_MAX_FRAME)
        max_frame = FL_WIRE_HARD_MAX_FRAME;
    r->max_frame = max_frame;
}

void fl_wire_reader_next(fl_wire_reader_t *r, uint8_t **dst, size_t *n)
{
    if (r->mode == 1) {
        *dst = r->got_pre + r->pre_got;
        *n = (size_t)(r->pre_len - r->pre_got);
    } else if (r->mode == 2) {
        *dst = r->place + r->got;
        *n = r->place_n - r->got;
    } else if (!r->payload) {
        *dst = r->hdr + r->hdr_got;
        *n = FL_WIRE_HEADER - r->hdr_got;
    } else {
        *dst = r->payload + r->got;
        *n = r->need - r->got;
    }
}

/* A frame buffer for r->need bytes. */
static int reader_alloc(fl_wire_reader_t *r)
{
    if (r->spare && r->spare_cap >= r->need) {
        r->payload = r->spare; /* a recycled frame buffer: no new pages */
        r->spare = NULL;
    } else {
        r->payload = malloc(r->need);
        if (!r->payload)
            return FL_ENOMEM;
    }
    return 0;
}

int fl_wire_reader_advance(fl_wire_reader_t *r, size_t n, uint8_t **frame, uint32_t *len)
{
    if (r->mode == 1) {
        r->pre_got += (uint8_t)n;
        if (r->pre_got < r->pre_len)
            return 0;
        if (memcmp(r->got_pre, r->pre, r->pre_len) == 0) {
            r->mode = 2; /* the expected frame: the rest goes to place */
            r->got = 0;
            return 0;
        }
        /* Another frame of the same length: read on as usual. */
        r->mode = 0;
        r->place = NULL;
        if (reader_alloc(r))
            return FL_ENOMEM;
        memcpy(r->payload, r->got_pre, r->pre_len);
        r->got = r->pre_len;
        return 0;
    }
    if (r->mode == 2) {
        r->got += (uint32_t)n;
        if (r->got < r->place_n)
            return 0;
        *frame = NULL;
        *len = r->place_n;
        r->mode = 0;
        r->place = NULL;
        r->hdr_got = 0;
        r->need = r->got = 0;
        return 2;
    }
    if (!r->payload) {
        r->hdr_got += (uint32_t)n;
        if (r->hdr_got < FL_WIRE_HEADER)
            return 0;
        uint32_t need;
        int rc = fl_wire_frame_len(r->hdr, r->max_frame, &need);
        if (rc) {
            r->place = NULL;
            return rc; /* refused from the header alone: nothing allocated */
        }
        r->need = need;
        r->got = 0;
        if (r->place && need == (uint32_t)r->pre_len + r->place_n) {
            r->mode = 1; /* perhaps the expected frame: its prefix first */
            r->pre_got = 0;
            return 0;
        }
        r->place = NULL;
        return reader_alloc(r);
    }
    r->got += (uint32_t)n;
    if (r->got < r->need)
        return 0;
    *frame = r->payload;
    *len = r->need;
    r->payload = NULL;
    r->hdr_got = 0;
    r->need = r->got = 0;
    return 1;
}

void fl_wire_reader_expect(fl_wire_reader_t *r, const uint8_t *prefix, size_t plen, uint8_t *place, size_t n)
{
    if (!fl_wire_reader_idle(r) || !prefix || !place || plen == 0 || plen > FL_WIRE_PREFIX_MAX || n == 0 ||
        n > UINT32_MAX - plen)
        return;
    memcpy(r->pre, prefix, plen);
    r->pre_len = (uint8_t)plen;
    r->place = place;
    r->place_n = (uint32_t)n;
}

int fl_wire_reader_feed(fl_wire_reader_t *r, const uint8_t *data, size_t n, size_t *used,
                        uint8_t **frame, uint32_t *len)
{
    size_t pos = 0;
    int rc = 0;
    while (pos < n) {
        uint8_t *dst;
        size_t want;
        fl_wire_reader_next(r, &dst, &want);
        size_t k = n - pos < want ? n - pos : want;
        memcpy(dst, data + pos, k);
        pos += k;
        rc = fl_wire_reader_advance(r, k, frame, len);
        if (rc != 0)
            break;
    }
    *used = pos;
    return rc;
}

int fl_wire_reader_idle(const fl_wire_reader_t *r) { return !r->payload && r->hdr_got == 0 && r->mode == 0; }

void fl_wire_reader_recycle(fl_wire_reader_t *r, uint8_t *frame, uint32_t len)
{
    if (r->spare && r->spare_cap >= len) {
        free(frame);
        return;
    }
    free(r->spare);
    r->spare = frame;
    r->spare_cap = len;
}

void fl_wire_reader_trim(fl_wire_reader_t *r)
{
    free(r->spare);
    r->spare = NULL;
    r->spare_cap = 0;
}

void fl_wire_reader_free(fl_wire_reader_t *r)
{
    if (!r)
        return;
    free(r->payload);
    free(r->spare);
    fl_wire_reader_init(r, r->max_frame);
}

/* ---- decoding ----------------------------------------------------------- */

/* protobuf-c allocates as it decodes (strings, bytes, repeated arrays, its own
 * scratch slabs). This allocator caps the live total per decode so that a
 * small frame cannot make the decoder allocate far more than the frame's size.
 * Each block carries its size in a 16-byte header (keeping malloc's alignment)
 * so frees give the budget back. */
typedef struct {
    size_t used, cap;
} budget_t;

#define BUDGET_HDR 16

static void *budget_alloc(void *ad, size_t size)
{
    budget_t *b = ad;
    if (size > SIZE_MAX - BUDGET_HDR || size + BUDGET_HDR > b->cap - b->used)
        return NULL;
    unsigned char *p = malloc(size + BUDGET_HDR);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    b->used += size + BUDGET_HDR;
    return p + BUDGET_HDR;
}

static void budget_free(void *ad, void *ptr)
{
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - BUDGET_HDR;
    budget_t *b = ad;
    if (b) {
        size_t size;
        memcpy(&size, p, sizeof size);
        b->used -= size + BUDGET_HDR;
    }
    free(p);
}

/* Used to free messages after decoding: same block layout, no budget. */
static ProtobufCAllocator g_free_alloc = {budget_alloc, budget_free, NULL};

void fl_wire_msg_free(Fedopt__Envelope *m)
{
    if (m)
        fedopt__envelope__free_unpacked(m, &g_free_alloc);
}

const char *fl_wire_msg_name(int msg_case)
{
    static const char *const names[] = {"none",      "Hello",       "Welcome",     "Reject",
                                        "TaskOffer", "TaskReply",   "TensorBegin", "TensorChunk",
                                        "TensorEnd", "Update",      "EvalRequest", "EvalResult",
                                        "Heartbeat", "Error",       "Bye",         "UpdateResult",
                                        "SecAggAdvert", "SecAggKeys", "SecAggShares", "SecAggUnmask",
                                        "SecAggReveal"};
    if (msg_case < 0 || (size_t)msg_case >= sizeof names / sizeof names[0])
        return "unknown";
    return names[msg_case];
}

static int check_string(const char *s, const char *field, char *why, size_t why_len)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, FL_WIRE_MAX_STRING + 1);
    if (n > FL_WIRE_MAX_STRING) {
        say(why, why_len, "field %s longer than %u bytes", field, FL_WIRE_MAX_STRING);
        return FL_EPROTO;
    }
    /* Strings end up in log lines and the database: no control characters. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            say(why, why_len, "field %s contains control character 0x%02x", field, c);
            return FL_EPROTO;
        }
    }
    return 0;
}

/* Walks every field of m (generically, from its descriptor) checking string
 * lengths and contents and the sizes of repeated fields. */
static int check_message(const ProtobufCMessage *m, int depth, char *why, size_t why_len)
{
    if (!m)
        return 0;
    if (depth > 4) {
        say(why, why_len, "messages nested too deeply");
        return FL_EPROTO;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which;
            memcpy(&which, base + f->quantifier_offset, sizeof which);
            if (which != f->id)
                continue;
        }
        const void *member = base + f->offset;
        size_t count = 1;
        const void *elems = member;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            memcpy(&count, base + f->quantifier_offset, sizeof count);
            if (count > FL_WIRE_MAX_REPEATED) {
                say(why, why_len, "field %s.%s has %zu elements (most %u)", d->short_name, f->name,
                    count, FL_WIRE_MAX_REPEATED);
                return FL_EPROTO;
            }
            memcpy(&elems, member, sizeof elems);
        }
        int rc = 0;
        for (size_t k = 0; k < count && !rc; k++) {
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *s;
                memcpy(&s, (const char *)elems + k * sizeof(char *), sizeof s);
                rc = check_string(s, f->name, why, why_len);
            } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessage *sub;
                memcpy(&sub, (const char *)elems + k * sizeof(void *), sizeof sub);
                rc = check_message(sub, depth + 1, why, why_len);
            }
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Checks specific to some messages: the body is there, and the values the
 * receiver does arithmetic with are sane. */
static int check_semantics(const Fedopt__Envelope *e, char *why, size_t why_len)
{
    if (e->msg_case == FEDOPT__ENVELOPE__MSG__NOT_SET) {
        say(why, why_len, "envelope carries no message");
        return FL_EPROTO;
    }
    /* Every member of the oneof is a message: its pointer must be set. */
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(e->base.descriptor, (unsigned)e->msg_case);
    const void *body = NULL;
    if (f)
        memcpy(&body, (const char *)e + f->offset, sizeof body);
    if (!body) {
        say(why, why_len, "%s without its body", fl_wire_msg_name((int)e->msg_case));
        return FL_EPROTO;
    }
    if (e->msg_case == FEDOPT__ENVELOPE__MSG_UPDATE &&
        (!isfinite(e->update->weight) || e->update->weight < 0)) {
        say(why, why_len, "Update.weight is %g (must be finite and >= 0)", e->update->weight);
        return FL_EPROTO;
    }
    if (e->msg_case == FEDOPT__ENVELOPE__MSG_TASK_OFFER && e->task_offer->opt) {
        const Fedopt__ClientOptSettings *o = e->task_offer->opt;
        if (!isfinite(o->learning_rate) || !isfinite(o->momentum) || !isfinite(o->weight_decay)) {
            say(why, why_len, "TaskOffer.opt has a non-finite rate");
            return FL_EPROTO;
        }
    }
    return 0;
}

int fl_wire_decode(const uint8_t *payload, size_t len, Fedopt__Envelope **out, char *why,
                   size_t why_len)
{
    *out = NULL;
    if (len == 0) {
        say(why, why_len, "empty frame");
        return FL_EPROTO;
    }
    /* Four times the frame plus 64 KiB covers every legitimate message
     * (a chunk's data is its own length; scratch slabs are freed as they go). */
    budget_t b = {0, len * 4 + 65536};
    ProtobufCAllocator a = {budget_alloc, budget_free, &b};
    Fedopt__Envelope *e = fedopt__envelope__unpack(&a, len, payload);
    if (!e) {
        say(why, why_len, "not a valid fedopt.Envelope (%zu bytes)", len);
        return FL_EFORMAT;
    }
    int rc = check_semantics(e, why, why_len);
    if (!rc)
        rc = check_message(&e->base, 0, why, why_len);
    if (rc) {
        fl_wire_msg_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

/* ---- the receiving side of a connection -------------------------------- */

void fl_wire_event_clear(fl_wire_event_t *ev)
{
    if (!ev)
        return;
    fl_wire_msg_free(ev->msg);
    if (!ev->borrowed)
        free(ev->data);
    memset(ev, 0, sizeof *ev);
}

void fl_wire_stream_init(fl_wire_stream_t *s, fl_wire_role_t role, uint64_t max_tensor)
{
    memset(s, 0, sizeof *s);
    s->role = role;
    s->max_tensor = max_tensor ? max_tensor : FL_WIRE_DEFAULT_MAX_TENSOR;
}

void fl_wire_stream_set_max_tensor(fl_wire_stream_t *s, uint64_t max_tensor)
{
    s->max_tensor = max_tensor ? max_tensor : FL_WIRE_DEFAULT_MAX_TENSOR;
}

void fl_wire_stream_free(fl_wire_stream_t *s)
{
    if (!s)
        return;
    if (!s->t_borrowed)
        free(s->t_data);
    s->t_data = NULL;
    s->t_borrowed = 0;
    s->t_coded = 0;
    s->in_tensor = 0;
}

void fl_wire_stream_set_dst(fl_wire_stream_t *s, void *dst, size_t cap)
{
    s->user_dst = dst;
    s->user_cap = dst ? cap : 0;
}

static const char *purpose_name(int p)
{
    switch (p) {
    case FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL:
        return "model";
    case FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA:
        return "delta";
    case FEDOPT__TENSOR_PURPOSE__TENSOR_EVAL_MODEL:
        return "eval model";
    default:
        return "unspecified";
    }
}

/* Is message `c` one the peer of role s->role may send at all? */
static int from_right_side(const fl_wire_stream_t *s, int c)
{
    switch (c) {
    case FEDOPT__ENVELOPE__MSG_HELLO:
    case FEDOPT__ENVELOPE__MSG_TASK_REPLY:
    case FEDOPT__ENVELOPE__MSG_UPDATE:
    case FEDOPT__ENVELOPE__MSG_EVAL_RESULT:
    case FEDOPT__ENVELOPE__MSG_SECAGG_ADVERT:
    case FEDOPT__ENVELOPE__MSG_SECAGG_REVEAL:
        return s->role == FL_WIRE_SERVER;
    case FEDOPT__ENVELOPE__MSG_WELCOME:
    case FEDOPT__ENVELOPE__MSG_REJECT:
    case FEDOPT__ENVELOPE__MSG_TASK_OFFER:
    case FEDOPT__ENVELOPE__MSG_EVAL_REQUEST:
    case FEDOPT__ENVELOPE__MSG_UPDATE_RESULT:
    case FEDOPT__ENVELOPE__MSG_SECAGG_KEYS:
    case FEDOPT__ENVELOPE__MSG_SECAGG_UNMASK:
        return s->role == FL_WIRE_CLIENT;
    default:
        return 1; /* tensors, heartbeat, error, bye: either side */
    }
}

static int on_begin(fl_wire_stream_t *s, const Fedopt__TensorBegin *b, char *why, size_t why_len)
{
    if (!s->announced) {
        say(why, why_len, "TensorBegin (%s) not announced by a preceding message",
            purpose_name(b->purpose));
        return FL_EPROTO;
    }
    if ((int)b->purpose != s->announced || b->round_id != s->announced_round) {
        say(why, why_len, "TensorBegin is %s for round %llu, expected %s for round %llu",
            purpose_name(b->purpose), (unsigned long long)b->round_id, purpose_name(s->announced),
            (unsigned long long)s->announced_round);
        return FL_EPROTO;
    }
    int coded = b->codec != FEDOPT__CODEC__CODEC_F32;
    if (coded && (b->purpose != FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA || s->role != FL_WIRE_SERVER ||
                  !fl_codec_name((int)b->codec))) {
        say(why, why_len, "TensorBegin.codec %d not allowed for a %s", (int)b->codec,
            purpose_name(b->purpose));
        return FL_EPROTO;
    }
    if (!coded && (b->total_bytes == 0 || b->total_bytes % 4 != 0)) {
        say(why, why_len, "TensorBegin.total_bytes %llu is not a positive multiple of 4",
            (unsigned long long)b->total_bytes);
        return FL_EPROTO;
    }
    /* What the receiver holds: the decoded floats. */
    uint64_t held = coded ? b->num_values * 4 : b->total_bytes;
    if (coded && (b->num_values == 0 || b->num_values > UINT64_MAX / 4 ||
                  b->num_values * 4 > s->max_tensor)) {
        say(why, why_len, "TensorBegin.num_values %llu outside 1..%llu", (unsigned long long)b->num_values,
            (unsigned long long)(s->max_tensor / 4));
        return FL_ETOOBIG;
    }
    if (s->announced_bytes && b->total_bytes != s->announced_bytes) {
        say(why, why_len, "tensor of %llu bytes, announced %llu",
            (unsigned long long)b->total_bytes, (unsigned long long)s->announced_bytes);
        return FL_EPROTO;
    }
    if (held > s->max_tensor || held > SIZE_MAX / 2 || b->total_bytes > s->max_tensor) {
        say(why, why_len, "tensor of %llu bytes exceeds the limit of %llu",
            (unsigned long long)b->total_bytes, (unsigned long long)s->max_tensor);
        return FL_ETOOBIG;
    }
    if (b->chunk_bytes == 0 || b->chunk_bytes > FL_WIRE_MAX_CHUNK) {
        say(why, why_len, "TensorBegin.chunk_bytes %u outside 1..%u", b->chunk_bytes,
            FL_WIRE_MAX_CHUNK);
        return FL_EPROTO;
    }
    /* Large tensors get 2 MiB alignment and transparent huge pages where the
     * kernel offers them on request: receiving a model then takes a few
     * dozen page faults instead of thousands (bench_tls's receiving
     * column). Sizes are rounded up to a multiple of the alignment, as
     * aligned_alloc requires. */
    if (s->user_dst && held <= s->user_cap) {
        /* The application's own buffer (fl_wire_stream_set_dst): no
         * allocation and no fresh pages for the kernel to zero. */
        s->t_data = s->user_dst;
        s->t_borrowed = 1;
    } else {
        size_t align = held >= (4u << 20) ? (2u << 20) : 64;
        size_t alloc = ((size_t)held + align - 1) & ~(align - 1);
        s->t_data = aligned_alloc(align, alloc);
        s->t_borrowed = 0;
#ifdef MADV_HUGEPAGE
        if (s->t_data && align > 64)
            madvise(s->t_data, alloc, MADV_HUGEPAGE);
#endif
    }
    s->user_dst = NULL; /* one transfer per fl_wire_stream_set_dst */
    s->user_cap = 0;
    if (!s->t_data) {
        say(why, why_len, "out of memory for a %llu-byte tensor", (unsigned long long)b->total_bytes);
        return FL_ENOMEM;
    }
    s->t_coded = coded;
    s->t_values = coded ? b->num_values : 0;
    if (coded && fl_codec_decode_begin(&s->t_dec, (fl_codec_t)b->codec, (size_t)b->num_values,
                                       b->total_bytes, (float *)s->t_data) < 0) {
        say(why, why_len, "%llu bytes cannot hold %llu values in %s", (unsigned long long)b->total_bytes,
            (unsigned long long)b->num_values, fl_codec_name((int)b->codec));
        fl_wire_stream_free(s);
        return FL_EPROTO;
    }
    s->in_tensor = 1;
    s->t_purpose = b->purpose;
    s->t_round = b->round_id;
    s->t_total = b->total_bytes;
    s->t_got = 0;
    s->t_chunk = b->chunk_bytes;
    s->t_crc = 0;
    s->t_fin_at = 0;
    s->t_finite = 1;
    s->announced = 0;
    return 0;
}

/* The plain tensor's next n bytes: copied from src (NULL: already in place),
 * checksummed and checked finite, in cache-sized slices: the CRC then reads
 * bytes the copy just brought into cache instead of making a second pass
 * over megabytes of memory. */
static void absorb(fl_wire_stream_t *s, const uint8_t *src, size_t n)
{
    uint8_t *dst = s->t_data + s->t_got;
    for (size_t off = 0; off < n; off += 65536) {
        size_t k = n - off < 65536 ? n - off : 65536;
        if (src)
            memcpy(dst + off, src + off, k);
        s->t_crc = fl_crc32(s->t_crc, dst + off, k);
        /* The whole floats received so far (one may straddle two chunks),
         * checked while the copy has them in cache: the server's fused
         * aggregation needs its deltas known finite (server/uploads.h). */
        uint64_t end = (s->t_got + off + k) & ~(uint64_t)3;
        if (s->t_finite && end > s->t_fin_at &&
            !fl_f32_all_finite((const float *)(s->t_data + s->t_fin_at), (size_t)(end - s->t_fin_at) / 4))
            s->t_finite = 0;
        s->t_fin_at = end;
    }
    s->t_got += n;
}

static int on_chunk(fl_wire_stream_t *s, const Fedopt__TensorChunk *c, char *why, size_t why_len)
{
    size_t n = c->data.len;
    if (c->offset != s->t_got) {
        say(why, why_len, "chunk at offset %llu, expected %llu (%s)", (unsigned long long)c->offset,
            (unsigned long long)s->t_got, c->offset < s->t_got ? "overlapping" : "out of order");
        return FL_EPROTO;
    }
    if (n == 0 || n > s->t_chunk) {
        say(why, why_len, "chunk of %zu bytes outside 1..%u", n, s->t_chunk);
        return FL_EPROTO;
    }
    if (n > s->t_total - s->t_got) {
        say(why, why_len, "chunk [%llu, %llu) past the end of a %llu-byte tensor",
            (unsigned long long)c->offset, (unsigned long long)(c->offset + n),
            (unsigned long long)s->t_total);
        return FL_EPROTO;
    }
    if (s->t_coded) {
        s->t_crc = fl_crc32(s->t_crc, c->data.data, n);
        int rc = fl_codec_decode_feed(&s->t_dec, c->data.data, n);
        if (rc < 0) {
            say(why, why_len, "encoded delta at offset %llu: %s", (unsigned long long)c->offset,
                fl_strerror(rc));
            return rc == FL_ENONFINITE ? rc : FL_EFORMAT;
        }
        s->t_got += n;
        return 0;
    }
    absorb(s, c->data.data, n);
    return 0;
}

void fl_wire_stream_placed(fl_wire_stream_t *s, size_t len)
{
    if (s && s->in_tensor && s->t_data && len <= s->t_total - s->t_got)
        absorb(s, NULL, len);
}

static int on_end(fl_wire_stream_t *s, const Fedopt__TensorEnd *e, fl_wire_event_t *ev, char *why,
                  size_t why_len)
{
    if (s->t_got != s->t_total) {
        say(why, why_len, "tensor ended after %llu of %llu bytes", (unsigned long long)s->t_got,
            (unsigned long long)s->t_total);
        return FL_ETRUNCATED;
    }
    if (e->crc32 != s->t_crc) {
        say(why, why_len, "tensor checksum mismatch: sent %08x, received data has %08x", e->crc32,
            s->t_crc);
        return FL_ECHECKSUM;
    }
    ev->kind = FL_WIRE_EV_TENSOR;
    ev->purpose = s->t_purpose;
    ev->round_id = s->t_round;
    ev->data = s->t_data;
    ev->nbytes = s->t_coded ? (size_t)s->t_values * 4 : (size_t)s->t_total;
    ev->borrowed = s->t_borrowed;
    ev->crc32 = s->t_crc;
    ev->wire_bytes = (size_t)s->t_total;
    ev->finite = s->t_coded || s->t_finite;
    s->t_data = NULL;
    s->t_borrowed = 0;
    s->t_coded = 0;
    s->in_tensor = 0;
    return 0;
}

/* Checks message m against the sequence state and updates the state. */
static int sequence(fl_wire_stream_t *s, Fedopt__Envelope *m, fl_wire_event_t *ev, char *why,
                    size_t why_len)
{
    int c = (int)m->msg_case;
    const char *side = s->role == FL_WIRE_SERVER ? "client" : "server";
    if (!from_right_side(s, c)) {
        say(why, why_len, "a %s never sends %s", side, fl_wire_msg_name(c));
        return FL_EPROTO;
    }
    if (s->phase == 2) {
        say(why, why_len, "%s after the conversation ended", fl_wire_msg_name(c));
        return FL_EPROTO;
    }
    if (s->phase == 0) {
        int ok = s->role == FL_WIRE_SERVER
                     ? c == FEDOPT__ENVELOPE__MSG_HELLO
                     : (c == FEDOPT__ENVELOPE__MSG_WELCOME || c == FEDOPT__ENVELOPE__MSG_REJECT);
        if (!ok && c != FEDOPT__ENVELOPE__MSG_ERROR && c != FEDOPT__ENVELOPE__MSG_BYE) {
            say(why, why_len, "%s before %s", fl_wire_msg_name(c),
                s->role == FL_WIRE_SERVER ? "Hello" : "Welcome");
            return FL_EPROTO;
        }
        s->phase = 1;
    } else if (c == FEDOPT__ENVELOPE__MSG_HELLO || c == FEDOPT__ENVELOPE__MSG_WELCOME) {
        say(why, why_len, "a second %s", fl_wire_msg_name(c));
        return FL_EPROTO;
    }
    if (s->in_tensor) {
        if (c != FEDOPT__ENVELOPE__MSG_TENSOR_CHUNK && c != FEDOPT__ENVELOPE__MSG_TENSOR_END &&
            c != FEDOPT__ENVELOPE__MSG_HEARTBEAT && c != FEDOPT__ENVELOPE__MSG_ERROR &&
            c != FEDOPT__ENVELOPE__MSG_BYE) {
            say(why, why_len, "%s in the middle of a tensor transfer", fl_wire_msg_name(c));
            return FL_EPROTO;
        }
    } else if (c == FEDOPT__ENVELOPE__MSG_TENSOR_CHUNK || c == FEDOPT__ENVELOPE__MSG_TENSOR_END) {
        say(why, why_len, "%s outside a tensor transfer", fl_wire_msg_name(c));
        return FL_EPROTO;
    }
    if (s->announced && c != FEDOPT__ENVELOPE__MSG_TENSOR_BEGIN && c != FEDOPT__ENVELOPE__MSG_ERROR &&
        c != FEDOPT__ENVELOPE__MSG_BYE && c != FEDOPT__ENVELOPE__MSG_HEARTBEAT) {
        say(why, why_len, "%s where the announced %s tensor should begin", fl_wire_msg_name(c),
            purpose_name(s->announced));
        return FL_EPROTO;
    }

    switch (c) {
    case FEDOPT__ENVELOPE__MSG_TENSOR_BEGIN:
        return on_begin(s, m->tensor_begin, why, why_len);
    case FEDOPT__ENVELOPE__MSG_TENSOR_CHUNK:
        return on_chunk(s, m->tensor_chunk, why, why_len);
    case FEDOPT__ENVELOPE__MSG_TENSOR_END:
        return on_end(s, m->tensor_end, ev, why, why_len);
    case FEDOPT__ENVELOPE__MSG_TASK_OFFER:
        s->announced = FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL;
        s->announced_round = m->task_offer->round_id;
        s->announced_bytes = m->task_offer->num_params * 4;
        if (m->task_offer->num_params == 0 || m->task_offer->num_params > UINT64_MAX / 4) {
            say(why, why_len, "TaskOffer.num_params %llu is invalid",
                (unsigned long long)m->task_offer->num_params);
            return FL_EPROTO;
        }
        break;
    case FEDOPT__ENVELOPE__MSG_EVAL_REQUEST:
        s->announced = FEDOPT__TENSOR_PURPOSE__TENSOR_EVAL_MODEL;
        s->announced_round = m->eval_request->round_id;
        s->announced_bytes = m->eval_request->num_params * 4;
        if (m->eval_request->num_params == 0 || m->eval_request->num_params > UINT64_MAX / 4) {
            say(why, why_len, "EvalRequest.num_params %llu is invalid",
                (unsigned long long)m->eval_request->num_params);
            return FL_EPROTO;
        }
        break;
    case FEDOPT__ENVELOPE__MSG_UPDATE:
        s->announced = FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA;
        s->announced_round = m->update->round_id;
        s->announced_bytes = 0;
        break;
    case FEDOPT__ENVELOPE__MSG_REJECT:
    case FEDOPT__ENVELOPE__MSG_BYE:
        s->phase = 2;
        break;
    default:
        break;
    }
    if (c == FEDOPT__ENVELOPE__MSG_ERROR || c == FEDOPT__ENVELOPE__MSG_BYE) {
        /* An abort: whatever was announced or half-received is dropped. */
        s->announced = 0;
        fl_wire_stream_free(s);
    }
    ev->kind = FL_WIRE_EV_MESSAGE;
    ev->msg = m;
    return 1; /* m now belongs to ev */
}

/* Reads a protobuf varint at *p (below end) into *v; 0 or -1. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Tensor chunks are most of the bytes on the wire. When a frame is exactly
 * Envelope{tensor_chunk: {offset, data}} in canonical encoding, take the data
 * in place instead of having protobuf-c copy megabytes into a fresh
 * allocation; anything else (other field order, unknown fields) returns 1
 * and takes the general path, so both paths accept the same messages. */
static int chunk_fast(const uint8_t *p, size_t len, uint64_t *offset, const uint8_t **data,
                      size_t *n)
{
    const uint8_t *end = p + len;
    uint64_t v;
    if (len < 2 || *p++ != 0x3a) /* Envelope field 7 (tensor_chunk), length-delimited */
        return 1;
    if (varint(&p, end, &v) || v != (uint64_t)(end - p))
        return 1;
    *offset = 0;
    if (p < end && *p == 0x08) { /* TensorChunk.offset (absent when 0) */
        p++;
        if (varint(&p, end, offset))
            return 1;
    }
    if (p >= end || *p++ != 0x12) /* TensorChunk.data */
        return 1;
    if (varint(&p, end, &v) || v != (uint64_t)(end - p) || v == 0)
        return 1;
    *data = p;
    *n = (size_t)v;
    return 0;
}

/* Writes v as a protobuf varint at p; returns its length. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t k = 0;
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        p[k++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return k;
}

static size_t varint_len(uint64_t v)
{
    uint8_t tmp[10];
    return put_varint(tmp, v);
}

int fl_wire_stream_expect(const fl_wire_stream_t *s, uint8_t *prefix, size_t *plen, uint8_t **place, size_t *n)
{
    if (!s || !prefix || !plen || !place || !n || !s->in_tensor || s->phase != 1 || s->t_coded || !s->t_data ||
        s->t_got >= s->t_total)
        return 0;
    uint64_t k = s->t_total - s->t_got < s->t_chunk ? s->t_total - s->t_got : s->t_chunk;
    /* The canonical frame chunk_fast takes: Envelope{tensor_chunk (field 7):
     * {offset (1, absent when 0), data (2)}}. */
    uint64_t inner = (s->t_got ? 1 + varint_len(s->t_got) : 0) + 1 + varint_len(k) + k;
    size_t p = 0;
    prefix[p++] = 0x3a;
    p += put_varint(prefix + p, inner);
    if (s->t_got) {
        prefix[p++] = 0x08;
        p += put_varint(prefix + p, s->t_got);
    }
    prefix[p++] = 0x12;
    p += put_varint(prefix + p, k);
    *plen = p;
    *place = s->t_data + s->t_got;
    *n = (size_t)k;
    return 1;
}

int fl_wire_stream_frame(fl_wire_stream_t *s, const uint8_t *payload, size_t len,
                         fl_wire_event_t *ev, char *why, size_t why_len)
{
    memset(ev, 0, sizeof *ev);
    if (s->in_tensor && s->phase == 1) {
        Fedopt__TensorChunk c = FEDOPT__TENSOR_CHUNK__INIT;
        const uint8_t *data;
        if (chunk_fast(payload, len, &c.offset, &data, &c.data.len) == 0) {
            c.data.data = (uint8_t *)(uintptr_t)data;
            return on_chunk(s, &c, why, why_len);
        }
    }
    Fedopt__Envelope *m;
    int rc = fl_wire_decode(payload, len, &m, why, why_len);
    if (rc)
        return rc;
    rc = sequence(s, m, ev, why, why_len);
    if (rc == 1)
        return 0;
    fl_wire_msg_free(m);
    if (rc)
        fl_wire_event_clear(ev);
    return rc;
}
