/* wire: fedopt's framing, message validation and tensor transfers, as pure
 * functions over bytes (no I/O), so the whole decoder is unit-testable and
 * fuzzable. common/tls drives it over a TLS stream.
 *
 * A frame is a 4-byte big-endian length N followed by N bytes holding one
 * serialized fedopt.Envelope (proto/fedopt.proto). Every length from the wire
 * is checked against a limit before anything is allocated for it:
 *   - a frame above the receiver's max_frame is refused from its header alone;
 *   - protobuf decoding runs under an allocation budget proportional to the
 *     frame, so a small frame cannot expand into a large allocation;
 *   - a tensor above the receiver's max_tensor is refused from its TensorBegin.
 * Large tensors travel as TensorBegin, TensorChunk* (each <= 4 MiB, carrying
 * its offset, strictly consecutive) and TensorEnd (CRC-32 of the whole).
 * proto/README.md is the protocol's full description.
 *
 * Layers, from the bytes up:
 *   fl_wire_reader_*  cuts a byte stream into frames (one frame buffer at a time)
 *   fl_wire_decode    one frame payload -> a validated Envelope
 *   fl_wire_stream_*  the receiving side of a connection: frames -> messages and
 *                     reassembled tensors, checking the message sequence
 *   fl_wire_encode*   messages and whole tensor transfers -> refcounted buffers */
#ifndef FL_WIRE_H
#define FL_WIRE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/params.h"
#include "common/net/codec.h"
#include "proto/fedopt.pb-c.h"

#define FL_WIRE_HEADER 4u
/* Largest chunk payload a sender may use (the protocol's fixed ceiling). */
#define FL_WIRE_MAX_CHUNK (4u << 20)
/* Default largest frame: a full chunk plus room for its envelope. */
#define FL_WIRE_DEFAULT_MAX_FRAME (FL_WIRE_MAX_CHUNK + 1024u)
/* No configuration may accept frames above this. */
#define FL_WIRE_HARD_MAX_FRAME (64u << 20)
/* Default largest tensor a receiver accepts (a model or delta): 256 MiB.
 * Servers should lower it per connection to their model size. */
#define FL_WIRE_DEFAULT_MAX_TENSOR ((uint64_t)256 << 20)
/* Longest string field and most elements of a repeated field accepted. */
#define FL_WIRE_MAX_STRING 1024u
#define FL_WIRE_MAX_REPEATED 256u

/* ---- reference-counted buffers --------------------------------------- */

/* An immutable byte buffer shared by reference: one encoded model is queued on
 * many connections without copies. Counting is atomic, so a buffer encoded on
 * a worker thread may be handed to the event loop. */
typedef struct fl_buf {
    atomic_uint refs;
    size_t len;
    uint8_t *data;
} fl_buf_t;

/* Allocates a buffer of len bytes (contents undefined) with one reference.
 * Returns 0, FL_EINVAL (len 0) or FL_ENOMEM. */
int fl_buf_new(size_t len, fl_buf_t **out);

/* Takes one more reference and returns b. */
fl_buf_t *fl_buf_ref(fl_buf_t *b);

/* Drops one reference; the last one frees the buffer. Accepts NULL. */
void fl_buf_unref(fl_buf_t *b);

/* ---- encoding ------------------------------------------------------- */

/* Encodes msg as one frame (header + envelope) into a new buffer (*out, one
 * reference, the caller's). Returns 0, FL_EINVAL (no message set),
 * FL_ETOOBIG (frame above FL_WIRE_HARD_MAX_FRAME) or FL_ENOMEM. */
int fl_wire_encode(const Fedopt__Envelope *msg, fl_buf_t **out);

/* Encodes a whole tensor transfer (TensorBegin, the chunks, TensorEnd with
 * the CRC-32) as consecutive frames in one new buffer. nbytes must be a
 * positive multiple of 4; chunk_bytes 0 means FL_WIRE_MAX_CHUNK (it must be
 * <= FL_WIRE_MAX_CHUNK, and the receiver's max_frame must fit a chunk frame:
 * see fl_wire_chunk_for_frame). data is only read. Returns 0, FL_EINVAL or
 * FL_ENOMEM. */
int fl_wire_encode_tensor(Fedopt__TensorPurpose purpose, uint64_t round_id, const void *data,
                          size_t nbytes, uint32_t chunk_bytes, fl_buf_t **out);

/* The same for a delta encoded with codec (fl_codec_encode: nbytes encoded
 * bytes of num_values floats); TensorBegin then carries codec and num_values
 * (protocol 1.1). FL_CODEC_F32 is fl_wire_encode_tensor. Returns 0,
 * FL_EINVAL or FL_ENOMEM. */
int fl_wire_encode_tensor_codec(Fedopt__TensorPurpose purpose, uint64_t round_id, fl_codec_t codec,
                                uint64_t num_values, const void *data, size_t nbytes,
                                uint32_t chunk_bytes, fl_buf_t **out);

/* Returns the largest chunk size whose frames fit a peer's max_frame (capped
 * at FL_WIRE_MAX_CHUNK), or 0 when max_frame is too small for any chunk. */
uint32_t fl_wire_chunk_for_frame(uint32_t max_frame);

/* ---- frames ------------------------------------------------------------ */

/* Reads the length from a 4-byte frame header and checks it: 0 and *len, or
 * FL_EPROTO for a zero-length frame, FL_ETOOBIG above max_frame. */
int fl_wire_frame_len(const uint8_t hdr[4], uint32_t max_frame, uint32_t *len);

/* Longest expected frame prefix (fl_wire_reader_expect): a chunk's envelope,
 * offset and data headers. */
#define FL_WIRE_PREFIX_MAX 40u

/* Cuts a byte stream into frames. At most one frame payload is allocated at a
 * time, and only after its header passed the max_frame check, so an idle
 * reader holds no heap memory. */
typedef struct {
    uint32_t max_frame;
    uint32_t hdr_got;
    uint8_t hdr[FL_WIRE_HEADER];
    uint32_t need; /* payload length of the frame being read */
    uint32_t got;
    uint8_t *payload; /* NULL until the header is complete */
    uint8_t *spare;   /* a recycled frame buffer (fl_wire_reader_recycle) */
    uint32_t spare_cap;
    /* The expected next frame (fl_wire_reader_expect): its prefix, and where
     * its remaining place_n bytes go. mode: 0 as any frame, 1 reading its
     * prefix into got_pre, 2 reading the rest into place. */
    uint8_t *place;
    uint32_t place_n;
    uint8_t pre[FL_WIRE_PREFIX_MAX], got_pre[FL_WIRE_PREFIX_MAX];
    uint8_t pre_len, pre_got, mode;
} fl_wire_reader_t;

/* Makes *r an empty reader accepting frames up to max_frame bytes (clamped to
 * FL_WIRE_HARD_MAX_FRAME; 0 = FL_WIRE_DEFAULT_MAX_FRAME). Never fails. */
void fl_wire_reader_init(fl_wire_reader_t *r, uint32_t max_frame);

/* Where the next bytes of the stream go: *dst and the most bytes wanted *n
 * (never 0). Lets a transport decrypt straight into the frame buffer. */
void fl_wire_reader_next(fl_wire_reader_t *r, uint8_t **dst, size_t *n);

/* Records that n bytes were written at the place fl_wire_reader_next gave.
 * Returns 1 with a complete frame (*frame, *len: the payload, now the
 * caller's, free() it), 2 when the frame expected by fl_wire_reader_expect
 * is complete (its last *len bytes are at the place given there; *frame is
 * NULL), 0 when more bytes are needed, or FL_ETOOBIG / FL_EPROTO for a bad
 * header (nothing allocated) or FL_ENOMEM. */
int fl_wire_reader_advance(fl_wire_reader_t *r, size_t n, uint8_t **frame, uint32_t *len);

/* Between frames (fl_wire_reader_idle): if the next frame is exactly
 * plen + n bytes and starts with prefix[0..plen), its last n bytes are
 * written straight to place (fl_wire_reader_next points there) instead of
 * into a frame buffer, and fl_wire_reader_advance returns 2 for it; any
 * other frame is read as usual. For one frame: a receiver that knows the
 * next tensor chunk (fl_wire_stream_expect) decrypts it into the tensor
 * without copying it again (bench_tls). plen <= FL_WIRE_PREFIX_MAX, n >= 1. */
void fl_wire_reader_expect(fl_wire_reader_t *r, const uint8_t *prefix, size_t plen, uint8_t *place, size_t n);

/* Copying convenience over next/advance: consumes bytes from data[0..n) up to
 * the end of the first complete frame (*used tells how many), with the same
 * return values as fl_wire_reader_advance. */
int fl_wire_reader_feed(fl_wire_reader_t *r, const uint8_t *data, size_t n, size_t *used,
                        uint8_t **frame, uint32_t *len);

/* Gives a frame buffer back (instead of free()) so the next frame of at most
 * len bytes reuses it: during a tensor transfer this saves faulting in fresh
 * pages for every 4 MiB chunk. The reader keeps one spare at most. */
void fl_wire_reader_recycle(fl_wire_reader_t *r, uint8_t *frame, uint32_t len);

/* Frees the spare buffer (an idle connection should hold none). */
void fl_wire_reader_trim(fl_wire_reader_t *r);

/* True when the reader is between frames (no partial frame buffered). */
int fl_wire_reader_idle(const fl_wire_reader_t *r);

/* Frees a partial frame and the spare; *r becomes empty (same max_frame).
 * Accepts NULL. */
void fl_wire_reader_free(fl_wire_reader_t *r);

/* ---- messages ---------------------------------------------------------- */

/* Decodes and validates one frame payload: exactly one message set, strings
 * <= FL_WIRE_MAX_STRING, repeated fields <= FL_WIRE_MAX_REPEATED, decoding
 * memory bounded by a budget proportional to len, finite weights and rates.
 * On success *out is the caller's (fl_wire_msg_free). On failure returns
 * FL_EFORMAT (not a valid protobuf / over budget) or FL_EPROTO (valid protobuf,
 * invalid message) and, when why is not NULL, a one-line reason in why. */
int fl_wire_decode(const uint8_t *payload, size_t len, Fedopt__Envelope **out, char *why,
                   size_t why_len);

/* Frees a decoded message. Accepts NULL. */
void fl_wire_msg_free(Fedopt__Envelope *m);

/* The message's name as in the .proto ("TaskOffer"), "none" when no message is
 * set, "unknown" otherwise. Never NULL. */
const char *fl_wire_msg_name(int msg_case);

/* ---- the model's tensor table (protocol 1.1) ---------------------------- */

/* One row of a TaskOffer's or EvalRequest's tensor table, copied out of the
 * message (which is freed after it is handled). */
typedef struct {
    char name[FL_PARAM_NAME_MAX];
    int ndim;
    uint64_t shape[FL_PARAM_MAX_DIMS];
    uint64_t offset; /* bytes */
} fl_wire_tensor_t;

/* Builds the table of p's views (buffer order, dtype "float32", byte
 * offsets) as messages for a TaskOffer/EvalRequest: *out is an array of *n
 * pointers, freed with fl_wire_table_free. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_wire_table_make(const fl_params_t *p, Fedopt__TensorInfo ***out, size_t *n);

/* Frees what fl_wire_table_make made. Accepts NULL. */
void fl_wire_table_free(Fedopt__TensorInfo **t, size_t n);

/* Copies a received table into a new array (*out, free() it; NULL when n is
 * 0). Returns 0, FL_EPROTO (a name longer than FL_PARAM_NAME_MAX - 1, more
 * than FL_PARAM_MAX_DIMS dims, a dtype other than "float32"; reason in why)
 * or FL_ENOMEM. */
int fl_wire_table_read(Fedopt__TensorInfo *const *t, size_t n, fl_wire_tensor_t **out, char *why,
                       size_t why_len);

/* Checks a received table against the layout the receiver built: the same
 * tensors, names, shapes and offsets, in order. An empty table (a 1.0 peer)
 * passes. Returns 0 or FL_ESHAPE with the first difference in why. */
int fl_wire_table_check(const fl_wire_tensor_t *t, size_t n, const fl_params_t *p, char *why,
                        size_t why_len);

/* ---- the receiving side of a connection -------------------------------- */

typedef enum {
    FL_WIRE_SERVER = 0, /* receives what clients send */
    FL_WIRE_CLIENT = 1, /* receives what servers send */
} fl_wire_role_t;

typedef enum {
    FL_WIRE_EV_NONE = 0,    /* the frame was consumed (a tensor chunk) */
    FL_WIRE_EV_MESSAGE = 1, /* msg is set */
    FL_WIRE_EV_TENSOR = 2,  /* a complete, checksum-verified tensor */
} fl_wire_ev_kind_t;

/* What one frame produced. Whoever handles it may take msg or data (setting
 * the field to NULL); fl_wire_event_clear frees what is left. */
typedef struct {
    fl_wire_ev_kind_t kind;
    Fedopt__Envelope *msg;
    Fedopt__TensorPurpose purpose; /* tensor events: */
    uint64_t round_id;
    uint8_t *data; /* nbytes, 64-byte aligned (float32 little-endian); free()
                      unless borrowed */
    size_t nbytes;
    int borrowed;  /* data is the application's buffer (fl_wire_stream_set_dst):
                      never freed here */
    uint32_t crc32; /* tensor events: the verified CRC-32 of the whole tensor (a
                       receiver can tell identical transfers apart by it) */
    size_t wire_bytes; /* tensor events: the bytes that travelled (the encoded size
                          of a coded delta; nbytes otherwise) */
    int finite; /* tensor events: 1 when every float32 value is finite (checked
                   slice by slice as the data arrived, while it was in cache; a
                   coded delta always: its decoder refuses non-finite values),
                   0 when some value is NaN or Inf */
} fl_wire_event_t;

/* Frees what the handler did not take and zeroes *ev. Accepts NULL. */
void fl_wire_event_clear(fl_wire_event_t *ev);

/* The receiving protocol state of one connection: which messages may come
 * now (Hello first; a TensorBegin only right after the TaskOffer, Update or
 * EvalRequest that announces it, for the same round and size; chunks in order;
 * nothing after Bye or Reject), plus the tensor being reassembled. */
typedef struct {
    fl_wire_role_t role;
    int phase;               /* 0 first message, 1 open, 2 closed */
    int announced;           /* purpose expected next, 0 = none */
    uint64_t announced_round;
    uint64_t announced_bytes; /* 0 = size not announced */
    uint64_t max_tensor;
    /* tensor being received */
    int in_tensor;
    Fedopt__TensorPurpose t_purpose;
    uint64_t t_round;
    uint64_t t_total;
    uint64_t t_got;
    uint32_t t_chunk;
    uint32_t t_crc;
    uint8_t *t_data;
    int t_borrowed;           /* t_data is user_dst */
    int t_coded;              /* an encoded delta: chunks go through t_dec into t_data */
    uint64_t t_values;        /* coded: float32 values decoded into t_data */
    uint64_t t_fin_at;        /* plain: bytes of t_data checked finite so far */
    int t_finite;             /* plain: no NaN or Inf among them */
    fl_codec_decoder_t t_dec;
    void *user_dst;           /* where the next tensor goes, when it fits */
    size_t user_cap;
} fl_wire_stream_t;

/* Makes *s the state of a fresh connection for role, accepting tensors up to
 * max_tensor bytes (0 = FL_WIRE_DEFAULT_MAX_TENSOR). Never fails. */
void fl_wire_stream_init(fl_wire_stream_t *s, fl_wire_role_t role, uint64_t max_tensor);

/* Sets the largest tensor accepted from now on (e.g. the model's size). */
void fl_wire_stream_set_max_tensor(fl_wire_stream_t *s, uint64_t max_tensor);

/* An encoded delta (TensorBegin.codec other than float32, protocol 1.1) is
 * decoded chunk by chunk into the float32 buffer of its num_values (the
 * set_dst buffer when it fits): the tensor event then carries floats as for
 * an uncompressed transfer, and the receiver never holds the encoded bytes.
 * The CRC-32 covers the encoded bytes as sent. Only a server accepts them. */

/* Handles one frame payload: decodes it, checks it against the state and the
 * tensor being received, and fills *ev (which the caller clears). Returns 0,
 * or FL_EFORMAT, FL_EPROTO, FL_ETOOBIG, FL_ETRUNCATED, FL_ECHECKSUM or
 * FL_ENOMEM with a one-line reason in why; after an error the connection must
 * be closed. The payload is only read. */
int fl_wire_stream_frame(fl_wire_stream_t *s, const uint8_t *payload, size_t len,
                         fl_wire_event_t *ev, char *why, size_t why_len);

/* When the next frame should be a chunk of the plain tensor being received
 * (in order, of the announced chunk size or the tensor's remainder, in the
 * canonical encoding fl_wire_encode_tensor writes): returns 1 with its first
 * *plen bytes in prefix (FL_WIRE_PREFIX_MAX room), and where its *n data
 * bytes belong (*place, inside the tensor), for fl_wire_reader_expect;
 * otherwise 0. */
int fl_wire_stream_expect(const fl_wire_stream_t *s, uint8_t *prefix, size_t *plen, uint8_t **place, size_t *n);

/* The expected chunk (fl_wire_stream_expect) arrived in place (the reader
 * returned 2 for it, len: its data bytes): checksums it and moves on, as
 * fl_wire_stream_frame does for a chunk. */
void fl_wire_stream_placed(fl_wire_stream_t *s, size_t len);

/* Makes the next tensor (if it has at most cap bytes) arrive in dst instead
 * of a fresh allocation; the event then has borrowed set and data == dst.
 * Receiving into a buffer the application keeps (its model, a recycled delta
 * buffer) avoids faulting in and zeroing new pages for every transfer
 * (bench_tls with BENCH_TLS_FRESH=1 measures the difference). dst stays the caller's; it
 * must stay valid until the tensor arrives or the connection ends, and its
 * contents are undefined if the transfer fails. Applies to one transfer. */
void fl_wire_stream_set_dst(fl_wire_stream_t *s, void *dst, size_t cap);

/* Frees a partly received tensor. Accepts NULL. */
void fl_wire_stream_free(fl_wire_stream_t *s);

#endif
