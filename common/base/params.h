/* params: a model's parameters as one contiguous float32 buffer with named
 * tensor views.
 *
 * Everything that treats "the model" as a whole (ServerOpt, aggregation,
 * checksums, serialization, the wire) is one loop over `data[0..numel)`; the
 * views only give names and shapes to ranges of it (for layers, safetensors
 * and logs). Views are packed back to back in the order they were added, so
 * numel is exactly the model's parameter count.
 *
 * Life cycle: fl_params_init, fl_params_add for each tensor (layout only),
 * then fl_params_alloc; fl_params_free releases everything. The struct is
 * caller-allocated; the buffer and the view table belong to it. */
#ifndef FL_PARAMS_H
#define FL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define FL_PARAM_NAME_MAX 64
#define FL_PARAM_MAX_DIMS 4

/* View flags. */
enum {
    FL_PARAM_DECAY = 1u << 0, /* L2 weight decay applies to this tensor (weights, not biases/norms) */
};

typedef struct {
    char name[FL_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[FL_PARAM_MAX_DIMS];
    size_t offset; /* first element, counted in floats from data[0] */
    size_t numel;
    unsigned flags;
} fl_param_view_t;

typedef struct {
    float *data; /* numel floats, 64-byte aligned; NULL until fl_params_alloc */
    size_t numel;
    fl_param_view_t *views;
    size_t nviews;
    size_t cap;
} fl_params_t;

/* Makes *p an empty layout. Never fails. */
void fl_params_init(fl_params_t *p);

/* Appends a tensor `name` of the given shape to the layout (before
 * fl_params_alloc). Returns FL_EINVAL for a bad name/shape, FL_EEXIST for a
 * duplicate name, FL_ESTATE after allocation, FL_ENOMEM. */
int fl_params_add(fl_params_t *p, const char *name, int ndim, const int64_t *shape, unsigned flags);

/* Allocates the zeroed buffer for the layout. Returns 0, FL_ENOMEM, FL_ESTATE
 * (already allocated) or FL_EEMPTY (no tensors). */
int fl_params_alloc(fl_params_t *p);

/* Makes *dst a fresh allocated copy of src's layout with zeroed data (for
 * gradients, optimizer state, deltas). *dst must not hold anything. */
int fl_params_clone_layout(fl_params_t *dst, const fl_params_t *src);

/* Frees the buffer and views; *p becomes an empty layout. Accepts NULL. */
void fl_params_free(fl_params_t *p);

/* Returns the view named `name`, or NULL. */
const fl_param_view_t *fl_params_find(const fl_params_t *p, const char *name);

/* Returns a pointer to the first element of view v inside p->data. */
static inline float *fl_params_at(const fl_params_t *p, const fl_param_view_t *v)
{
    return p->data + v->offset;
}

/* True when the two layouts have the same names, shapes and order. */
int fl_params_same_layout(const fl_params_t *a, const fl_params_t *b);

/* CRC-32 (zlib's polynomial) of n floats as little-endian bytes. */
uint32_t fl_params_crc32(const float *x, size_t n);

/* Returns 1 when every one of n floats is finite, 0 otherwise. */
int fl_f32_all_finite(const float *x, size_t n);

/* Euclidean norm of n floats, accumulated in double. */
double fl_f32_norm(const float *x, size_t n);

#endif
