/* eval: central evaluation of the global model on the evaluation data.
 *
 * The evaluator owns its own model instance and the test split, so it can
 * run in a libuv worker thread while the event loop goes on: the caller
 * hands it a read-only copy of the global parameters (which nothing else
 * writes while the evaluation runs) and reads the result when it returns. */
#ifndef FL_SERVER_EVAL_H
#define FL_SERVER_EVAL_H

#include <stddef.h>

#include "common/nn/models.h"

typedef struct fl_eval fl_eval_t;

/* Loads the "test" split of data spec `data` ("fmnist", "idx:DIR", ...) and
 * builds model `model` for it. The model spec comes from the data, so a
 * model/data mismatch is found at start-up. Returns 0 or an FL_E* code
 * (logged). */
int fl_eval_create(const char *model, const char *data, size_t max_examples, fl_eval_t **out);

/* Frees the evaluator. Accepts NULL. */
void fl_eval_free(fl_eval_t *ev);

/* The model spec the data implies (for building the server's own model). */
const fl_model_spec_t *fl_eval_spec(const fl_eval_t *ev);

/* Number of examples evaluated per run. */
size_t fl_eval_examples(const fl_eval_t *ev);

/* Evaluates parameters x (n floats, the model's layout): mean loss over the
 * examples into *loss and the model's metric (accuracy, recall@5; NaN for
 * models without one) into *metric. Returns 0, FL_ESHAPE or FL_ENOMEM. */
int fl_eval_run(fl_eval_t *ev, const float *x, size_t n, double *loss, double *metric);

#endif
