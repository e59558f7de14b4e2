/* fuzz_wire: libFuzzer target for the frame reader, the message decoder and
 * the receiving protocol state (common/wire), i.e. everything a peer's bytes
 * reach after TLS decryption.
 *
 * Input: byte 0 picks the receiving role (bit 0: server/client), a small
 * max_tensor (bit 1) and how the stream is cut into reads (bits 2-7: read
 * size); the rest is the byte stream. Seeds: tests/fuzz/corpus/wire/. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/net/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;

    /* The decoder alone, on the raw bytes. */
    Fedopt__Envelope *m = NULL;
    if (size && fl_wire_decode(data, size, &m, NULL, 0) == 0)
        fl_wire_msg_free(m);

    /* The stream: frames -> messages and tensors, as a connection sees it.
     * A 1 MiB frame limit keeps single inputs fast. */
    fl_wire_reader_t r;
    fl_wire_reader_init(&r, 1u << 20);
    fl_wire_stream_t s;
    fl_wire_stream_init(&s, (mode & 1) ? FL_WIRE_CLIENT : FL_WIRE_SERVER,
                        (mode & 2) ? 64 : (1u << 20));
    size_t step = (size_t)(mode >> 2) + 1; /* bytes per simulated read */
    size_t pos = 0;
    int dead = 0;
    while (pos < size && !dead) {
        size_t n = size - pos < step ? size - pos : step;
        size_t off = 0;
        while (off < n && !dead) {
            uint8_t *frame = NULL;
            uint32_t len = 0;
            size_t used = 0;
            int rc = fl_wire_reader_feed(&r, data + pos + off, n - off, &used, &frame, &len);
            off += used;
            if (rc < 0) {
                dead = 1;
            } else if (rc == 1) {
                fl_wire_event_t ev;
                char why[256];
                if (fl_wire_stream_frame(&s, frame, len, &ev, why, sizeof why) != 0)
                    dead = 1;
                if (ev.kind == FL_WIRE_EV_TENSOR && ev.nbytes && !ev.data)
                    abort(); /* a tensor event always carries its data */
                fl_wire_event_clear(&ev);
                free(frame);
            }
        }
        pos += n;
    }
    fl_wire_reader_free(&r);
    fl_wire_stream_free(&s);
    return 0;
}
