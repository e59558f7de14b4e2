/* task: one client's local work on one round, with no socket and no event
 * loop in it.
 *
 * A training task takes the server's offer (model name, parameter count,
 * ClientOpt settings), the global parameters and the client's data (all of a
 * dataset or its share by index), builds the named model for the data's
 * shapes, loads the global parameters into it, trains it with fl_train_run,
 * and turns the trained parameters into the delta (trained - global) in place.
 * fl_task_encode_update then makes the protocol's Update message and the
 * delta's tensor transfer (common/net/wire) from the result. An evaluation
 * task does the same up to the model and runs fl_train_eval instead.
 *
 * client/session.c runs these in libuv's thread pool and sends what they
 * encode; tests run them directly. Every function here only touches its
 * arguments, the model it builds and the data it reads, so tasks of different
 * clients may run on different threads at once over one shared dataset and
 * one shared global buffer (both only read).
 *
 * A workspace (fl_task_ws_t) lets a worker that runs task after task keep the
 * model it built: the next task for the same model, data shapes and thread
 * count loads the new global parameters into it instead of building a fresh
 * model, whose parameter, gradient and activation buffers the kernel would
 * fault in and zero again on every training (bench_fleet measures both
 * sides with workspaces). A reused model trains bit for bit as a fresh one:
 * the parameters are overwritten, the gradients and activations are written
 * before they are read, the optimizer state and the dropout stream are made
 * afresh by fl_train_run. A workspace serves one task at a time.
 *
 * Errors: functions return 0 or a negative FL_E* code, and fill `why` (when
 * not NULL) with one line for the log and the server's TaskReply. */
#ifndef FL_CLIENT_TASK_H
#define FL_CLIENT_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/net/wire.h"
#include "common/nn/models.h"
#include "common/nn/train.h"

typedef struct fl_task_ws fl_task_ws_t;

/* What a task works on. Everything is borrowed and only read. */
typedef struct {
    const char *model;        /* registered model name (fl_models_find) */
    const fl_dataset_t *data; /* local data */
    const uint32_t *index;    /* the client's examples in data (NULL = all of data) */
    size_t nindex;
    const float *global;      /* the global parameters */
    size_t n;                 /* floats in global: must be the built model's count */
    int gemm_threads;         /* > 0: fl_model_set_threads and the GEMM thread count follow it;
                                 0 = leave threading as it is */
    const fl_wire_tensor_t *table; /* the offer's tensor table (protocol 1.1): the built
                                      model must match its names and shapes (NULL = unchecked) */
    size_t ntable;
    fl_task_ws_t *ws;         /* the worker's workspace: its model is reused when it fits, else
                                 replaced (NULL = a fresh model, freed with the result) */
} fl_task_in_t;

/* How the delta travels (protocol 1.1's TaskOffer.codec/topk). */
typedef struct {
    fl_codec_t codec;   /* FL_CODEC_F32 = uncompressed */
    size_t topk;        /* FL_CODEC_TOPK: values kept */
    fl_codec_ef_t *ef;  /* FL_CODEC_TOPK: the client's error feedback, kept across rounds
                           (re-made when the model's size changes); NULL = none */
} fl_task_codec_t;

/* What a training produced. delta points into the trained model's own
 * parameter buffer (overwritten with trained - global: no third copy of the
 * model), or after fl_task_result_slim is the result's own buffer (model is
 * then NULL); it lives until fl_task_result_free. With a workspace the model
 * is the workspace's (model NULL, ws set): delta lives until the
 * workspace's next task or fl_task_ws_free, and neither fl_task_result_slim
 * nor fl_task_result_free touches it. */
typedef struct {
    float *delta;          /* n floats */
    size_t n;
    fl_train_stats_t st;   /* examples (the update's weight), loss, metric, steps, seconds */
    size_t samples;        /* examples passed through training, every epoch counted (st.examples
                              counts each distinct example once): the work behind a
                              samples-per-second figure */
    double seconds;        /* wall time of every epoch (st.seconds is the last epoch's) */
    fl_model_t *model;     /* owns delta's storage (NULL with ws) */
    fl_task_ws_t *ws;      /* the workspace whose model holds delta (borrowed), or NULL */
} fl_task_result_t;

/* A new, empty workspace. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_task_ws_new(fl_task_ws_t **out);

/* Frees the workspace and the model it keeps. Accepts NULL. */
void fl_task_ws_free(fl_task_ws_t *ws);

/* Models the workspace has built (a task that reused one builds none): for
 * tests and benchmarks. 0 for NULL. */
size_t fl_task_ws_builds(const fl_task_ws_t *ws);

/* The training settings of an offer: ClientOpt settings `os` (NULL = the
 * defaults: 1 epoch, batch 20, lr 0) and the stream tuple {run, round,
 * client} that makes a client's shuffles and dropout reproducible. */
void fl_task_config(const Fedopt__ClientOptSettings *os, uint64_t run, uint64_t round, uint64_t client,
                    fl_train_config_t *cfg);

/* Trains: *res gets the delta and the statistics. On failure *res holds
 * nothing (fl_task_result_free is still safe). Returns 0, FL_EINVAL (no
 * model name, data or global), FL_EEMPTY (no examples), FL_ENOTFOUND /
 * FL_ESHAPE / FL_EINVAL (the model cannot be built for the data), FL_ESHAPE
 * (n is not the model's parameter count), FL_ENOMEM, or fl_train_run's code
 * (FL_ENONFINITE when the loss diverged). */
int fl_task_train(const fl_task_in_t *in, const fl_train_config_t *cfg, fl_task_result_t *res, char *why,
                  size_t why_len);

/* Evaluates the global parameters on the first `max` examples (0 = all) in
 * batches of `batch` (0 = 64). Returns 0 or an error as fl_task_train. */
int fl_task_eval(const fl_task_in_t *in, size_t batch, size_t max, fl_train_stats_t *st, char *why,
                 size_t why_len);

/* Encodes a training's result for round `round`: the Update message
 * (weight = examples, loss, accuracy, steps, seconds) into *update and the
 * delta's transfer in chunks of `chunk` bytes (0 = FL_WIRE_MAX_CHUNK) into
 * *delta. Both are new buffers (fl_buf_unref). Returns 0, FL_EINVAL or
 * FL_ENOMEM (then both are NULL). */
int fl_task_encode_update(uint64_t round, const fl_task_result_t *res, uint32_t chunk, fl_buf_t **update,
                          fl_buf_t **delta, char *why, size_t why_len);

/* The same with the delta encoded as c says (NULL = float32). Returns 0,
 * FL_EINVAL (a codec the delta cannot take: k out of 1..n/2), FL_ENONFINITE
 * or FL_ENOMEM. */
int fl_task_encode_update_codec(uint64_t round, const fl_task_result_t *res, const fl_task_codec_t *c,
                                uint32_t chunk, fl_buf_t **update, fl_buf_t **delta, char *why,
                                size_t why_len);

/* Encodes an evaluation's EvalResult into *out (fl_buf_unref). */
int fl_task_encode_eval(uint64_t round, const fl_train_stats_t *st, fl_buf_t **out, char *why, size_t why_len);

/* Low memory: keeps only the delta, freeing the trained model's other
 * buffers (gradients, activations, replicas, layers); the result then owns
 * the delta alone. For between fl_task_train and fl_task_encode_update.
 * Accepts NULL and an empty or already slim result. */
void fl_task_result_slim(fl_task_result_t *res);

/* Frees the result's model and delta and clears it. Accepts NULL. */
void fl_task_result_free(fl_task_result_t *res);

/* Lists the registered models that can be built for data's shapes (for
 * Hello.models) into a new array of borrowed names (*names, free() it).
 * Call before any thread logs: the misfits' errors are silenced by
 * redirecting the log for the duration. Returns 0, FL_EINVAL, FL_EEMPTY (no
 * model fits: logged) or FL_ENOMEM. */
int fl_task_fitting_models(const fl_dataset_t *data, const char ***names, size_t *n);

/* Allocates a buffer for n floats as the transport allocates a received
 * tensor (64-byte aligned; large ones on transparent huge pages), for a
 * model received into memory of the caller's. free() it. NULL when out of
 * memory. */
float *fl_task_alloc_params(size_t n);

#endif
