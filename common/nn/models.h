/* models: the model registry. A model name ("cnn") maps to a builder that
 * stacks layers (common/nn/) for a given input shape and class count, and to
 * the loss the model trains with. A built model (fl_model_t) owns its
 * parameters as one fl_params_t whose views carry the equivalent PyTorch
 * module's state_dict names and layouts, a gradient buffer of the same
 * layout, and the activations for batches up to a reserved size.
 *
 * Typical use (what `fedopt-client train` and the federated trainer do):
 *   fl_model_spec_t s; fl_model_spec_from_dataset(&train, &s);
 *   fl_model_t *m; fl_model_create("cnn", &s, &m);
 *   fl_model_init_params(m, seed);          // or fl_model_set_params(m, buf, n)
 *   ... fl_train_epoch / fl_train_eval (common/nn/train.h) ...
 *   m->params.data holds the trained parameters; fl_model_free(m).
 *
 * Adding a model: write `static int build_x(fl_model_t *m)` in models.c that
 * calls FL_MODEL_ADD(m, fl_..._create(&m->params, ..., fl_model_out_shape(m), ..., &l))
 * for each layer, and add one line to the registry table. See ARCHITECTURE.md. */
#ifndef FL_MODELS_H
#define FL_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/nn/layer.h"
#include "common/nn/loss.h"
#include "common/base/params.h"
#include "common/base/rng.h"

typedef enum {
    FL_LOSS_SOFTMAX_CE = 0,  /* labels: label_dim class indices per example (negative = padding) */
    FL_LOSS_SIGMOID_BCE = 1, /* labels: a 0/1 vector of num_classes tags per example */
    FL_LOSS_MSE_INPUT = 2,   /* no labels: the target is the input itself (autoencoder) */
    FL_LOSS_SEQ_CE = 3,      /* labels: label_dim = T next-token ids per example; id 0 is padding
                                and counts in neither loss nor metric (charlstm, wordlstm) */
} fl_model_loss_t;

typedef enum {
    FL_METRIC_ACCURACY = 0, /* top-1 over counted labels */
    FL_METRIC_RECALL5 = 1,  /* true tags among the 5 highest scores, over true tags */
    FL_METRIC_NONE = 2,     /* the loss is the metric (MSE) */
} fl_model_metric_t;

/* What a model is built for: comes from the data (fl_model_spec_from_dataset). */
typedef struct {
    fl_shape_t input; /* one example's feature shape, e.g. {1, 28, 28} */
    int num_classes;  /* classes, tags or vocabulary size (C) */
    size_t label_dim; /* labels per example: 1, T (per step) or C (multi-hot) */
} fl_model_spec_t;

typedef struct fl_model fl_model_t;

typedef struct {
    const char *name;        /* the CLI name */
    const char *summary;     /* one line for `fedopt-client models` */
    fl_model_loss_t loss;
    fl_model_metric_t metric;
    fl_model_spec_t paper;   /* the paper's shapes, shown by `models` */
    int (*build)(fl_model_t *m); /* stacks layers for m->spec (see FL_MODEL_ADD) */
    int crop;                /* > 0: image data is cropped to crop x crop and standardized
                                first (common/data/augment.h), the paper's CIFAR preprocessing */
    float weight_decay;      /* the paper's L2 on FL_PARAM_DECAY tensors: the trainer's default */
} fl_model_info_t;

struct fl_model {
    const fl_model_info_t *info;
    fl_model_spec_t spec;
    fl_params_t params;  /* the model: one buffer, PyTorch names */
    fl_params_t grads;   /* dL/dparams of the last fl_model_loss with backward */
    fl_layer_t **layers; /* in order; owned */
    size_t nlayers, cap;
    size_t max_n;        /* batch size the activations are reserved for */
    float **act;         /* act[i]: output of layer i, max_n * out_dim floats */
    float *gbuf[2];      /* ping-pong activation gradients */
    float *dout;         /* dL/d(model output) */
    fl_rng_t dropout_rng; /* the stream dropout layers draw from */
    size_t first_param_layer; /* layers before it need no input gradient */
    int threads;          /* threads asked for by fl_model_set_threads */
    int parts;            /* fl_model_loss splits a batch across this many (1 or threads) */
    struct fl_model **rep; /* parts - 1 replicas for parts 1..: own layers,
                              activations and gradients, bound to params */
    struct fl_workers *workers; /* the threads that run parts 1.., or with one
                                   part the layers' slices (owned; NULL when
                                   neither), made by fl_model_set_threads */
};

/* Number of registered models. */
size_t fl_models_count(void);

/* The i-th registered model (i < fl_models_count()), in listing order. */
const fl_model_info_t *fl_models_at(size_t i);

/* The model named `name`, or NULL. */
const fl_model_info_t *fl_models_find(const char *name);

/* Fills *spec from a dataset: input = d->shape, num_classes, label_dim. */
int fl_model_spec_from_dataset(const fl_dataset_t *d, fl_model_spec_t *spec);

/* Builds model `name` for *spec with zeroed parameters. The caller owns *out
 * (fl_model_free). Returns 0, FL_ENOTFOUND (unknown name, logged),
 * FL_ESHAPE (the spec does not fit the model: e.g. cnn on a 1-D input, or a
 * label_dim the loss cannot use; logged), FL_EINVAL or FL_ENOMEM. */
int fl_model_create(const char *name, const fl_model_spec_t *spec, fl_model_t **out);

/* Whether model `name` can be built for *spec: fl_model_create's checks and
 * return codes (logged the same way), without allocating the parameters and
 * gradients (a client lists the models its data fits at start-up; building
 * resnet18gn's buffers just to ask cost more than all the rest). */
int fl_model_fits(const char *name, const fl_model_spec_t *spec);

/* Frees the model, its layers and buffers. Accepts NULL. */
void fl_model_free(fl_model_t *m);

/* Appends layer l (whose input shape must be the model's current output
 * shape) to the model under construction; takes ownership of l even on
 * failure. For builders only. */
int fl_model_push(fl_model_t *m, fl_layer_t *l);

/* The shape the next layer receives: the last layer's output, or the input. */
const fl_shape_t *fl_model_out_shape(const fl_model_t *m);

/* Builder helper: `call` must create a layer into the local `l`. */
#define FL_MODEL_ADD(m, call)                                                                   \
    do {                                                                                        \
        fl_layer_t *l = NULL;                                                                   \
        int rc_ = (call);                                                                       \
        if (rc_ == 0)                                                                           \
            rc_ = fl_model_push((m), l);                                                        \
        else                                                                                    \
            fl_layer_free(l);                                                                   \
        if (rc_)                                                                                \
            return rc_;                                                                         \
    } while (0)

/* Draws fresh initial parameters (PyTorch's default init for each layer) from
 * the stream (seed, FL_RNG_INIT). Deterministic. */
void fl_model_init_params(fl_model_t *m, uint64_t seed);

/* Copies n floats into the parameters. Returns FL_ESHAPE unless n equals
 * m->params.numel, FL_ENONFINITE for a NaN/Inf. */
int fl_model_set_params(fl_model_t *m, const float *data, size_t n);

/* Points the dropout layers at a stream seeded from (seed, ids..., FL_RNG_DROPOUT). */
void fl_model_seed_dropout(fl_model_t *m, uint64_t seed, const uint64_t *ids, size_t nids);

/* Makes room for batches of up to n examples (grows only). Returns 0 or FL_ENOMEM. */
int fl_model_reserve(fl_model_t *m, size_t n);

/* Forward pass of n examples x[n, in_dim]. Returns the output [n, out_dim]
 * (owned by the model, valid until the next call) or NULL (FL_ENOMEM). */
const float *fl_model_forward(fl_model_t *m, const float *x, size_t n, fl_mode_t mode);

/* Forward pass plus the model's loss on one batch: y holds n*label_dim labels
 * (NULL for FL_LOSS_MSE_INPUT). With `backward`, m->grads is overwritten
 * with the gradient of the batch's mean loss. *loss gets the mean loss; st
 * (may be NULL) accumulates the metric counts. Returns 0, FL_ENOMEM or FL_EINVAL. */
int fl_model_loss(fl_model_t *m, const float *x, const int32_t *y, size_t n, fl_mode_t mode,
                  int backward, double *loss, fl_loss_stats_t *st);

/* Gives the model `threads` threads (1..64) in one of three ways, chosen from
 * its shape, the same way every time for a model and thread count:
 * - split: fl_model_loss splits each batch into `threads` parts trained side
 *   by side, part 0 on the calling thread with m itself, the others on
 *   replicas of m that share m's parameters (read only during the call) and
 *   keep their own activations and gradients, summed into m->grads in a fixed
 *   order, each weighted by its part's share of the loss's denominator. The
 *   result is the batch's mean loss and gradient, as with one thread up to
 *   float rounding, reproducible for a fixed thread count (dropout masks of
 *   parts 1.. come from m's dropout stream). Every layer runs in parallel.
 *   Chosen for models that do many operations per parameter per example
 *   (conv, LSTM: 8 or more in the forward pass, measured once here on a
 *   zero example), where each thread's work is mostly on its own
 *   activations. The threads that run parts 1.. are made here, once, and
 *   joined by fl_model_free or the next fl_model_set_threads; a step only
 *   wakes them. A part gets at least 8 examples (so a batch under 16 is
 *   not split): thinner parts would repeat the weight packing of their
 *   GEMMs for little work.
 * - layers: a split model with many parameters (4M or more: resnet18gn's
 *   11M), where oneDNN is built in, keeps one part and runs each oneDNN convolution in output-channel
 *   slices on its threads (conv2d), the rest of the step on the calling
 *   thread. A batch split would repeat the convolutions' weight-sized work
 *   (conversions, Winograd transforms, gradient passes) on every thread,
 *   which for such a model costs as much as its activations' work. Results
 *   are the one-thread results up to float rounding (the input gradient of
 *   a sliced layer is summed over its slices), reproducible for a fixed
 *   thread count. m->workers holds the threads; there are no replicas.
 * - GEMM: models of dense layers only do ~2 per parameter, so their speed is
 *   reading the weights; splitting the batch would read them once per thread
 *   and shrink every GEMM. They keep one part and thread their GEMMs instead.
 * fl_model_gemm_threads says which GEMM thread count the caller should set
 * (process-wide, fl_gemm_set_threads). 1 frees the replicas. Returns 0,
 * FL_EINVAL or FL_ENOMEM (then the model stays at its previous setting). */
int fl_model_set_threads(fl_model_t *m, int threads);

/* Internal, for tests: the operations per parameter from which
 * fl_model_set_threads splits batches (0: always; negative: the default). */
void fl__model_set_split_threshold(double flops_per_param);

/* Internal, for tests: the fewest examples fl_model_loss gives a part
 * (batches smaller than twice this are not split; 0: the default, 8). */
void fl__model_set_min_part(size_t n);

/* Internal, for tests and benches: the parameter count from which a split
 * model splits its layers instead of its batches (0: always; SIZE_MAX:
 * never; 1: the default, 4M). */
void fl__model_set_layer_split(size_t params);

/* The GEMM thread count that goes with m's threads: 1 when it splits
 * batches or layers, its thread count when its GEMMs carry the threads. */
int fl_model_gemm_threads(const fl_model_t *m);

/* Per-example input and output element counts. */
size_t fl_model_in_dim(const fl_model_t *m);
size_t fl_model_out_dim(const fl_model_t *m);

#endif
