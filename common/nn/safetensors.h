/* safetensors: models in the safetensors format (8-byte little-endian header
 * length, a JSON header mapping tensor names to dtype/shape/data_offsets,
 * then the raw data), with the tensor names and layouts of the equivalent
 * PyTorch module's state_dict. A model saved here loads in PyTorch with
 * safetensors.torch.load_file + load_state_dict, and back.
 *
 * Only F32 tensors are read or written. Nothing in a file is trusted: the
 * header length, JSON, dtypes, shapes and offsets are all checked against
 * the file's real size and the expected layout, and every refusal is logged
 * naming the file and the problem. The JSON header is parsed with SQLite's
 * JSON1 functions. */
#ifndef FL_SAFETENSORS_H
#define FL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/base/params.h"

/* Largest header accepted (the format's own reference limit is 100 MB). */
#define FL_SAFETENSORS_MAX_HEADER (100u * 1024 * 1024)
/* Largest file read (2 GiB, far above any model here). */
#define FL_SAFETENSORS_MAX_FILE ((uint64_t)2 << 30)

/* Encodes p (allocated) as safetensors into a new buffer *out of *len bytes
 * (caller frees with free()). Tensors appear in view order. Returns 0,
 * FL_EINVAL or FL_ENOMEM. */
int fl_safetensors_encode(const fl_params_t *p, uint8_t **out, size_t *len);

/* Writes p to `path` (via a temporary file renamed into place, so a reader
 * never sees half a file). Returns 0, FL_EIO (logged) or FL_ENOMEM. */
int fl_safetensors_save(const char *path, const fl_params_t *p);

/* Decodes buf into p, whose layout (allocated) says what must be there:
 * every view must appear once with dtype F32 and exactly its shape, and the
 * file may hold nothing else (as PyTorch's strict load_state_dict). `what`
 * names the source in log lines. Returns 0, FL_ETRUNCATED, FL_EFORMAT,
 * FL_EUNSUPPORTED (a dtype other than F32), FL_ESHAPE (missing, unexpected
 * or wrong-shape tensor), FL_ETOOBIG or FL_ENOMEM; p->data is only written
 * when everything checked out. */
int fl_safetensors_decode(const uint8_t *buf, size_t len, const char *what, fl_params_t *p);

/* Reads `path` into p as fl_safetensors_decode does. Also FL_EIO. */
int fl_safetensors_load(const char *path, fl_params_t *p);

/* Reads `path` into an empty *p, taking the layout from the file (tensors in
 * data-offset order, no flags). For tools and tests. Same codes as load. */
int fl_safetensors_load_any(const char *path, fl_params_t *p);

#endif
