/* fl_delta_diff: compares two clients' updates from the same global model,
 * for the cross-architecture agreement check (tests/cross).
 *
 * Usage: fl_delta_diff GLOBAL A B [TOL]
 * GLOBAL, A and B are safetensors files of one model: the model both
 * clients started from and each one's trained model. The deltas are
 * dA = A - GLOBAL and dB = B - GLOBAL. Prints one line,
 *   rel_l2=R max_abs=M norm_a=X norm_b=Y n=N
 * with R = ||dA - dB|| / ||dA|| and M = max |dA_i - dB_i|, and exits 0 when
 * R <= TOL (default 1e-3), 1 when not (or when dA is zero: nothing was
 * trained, so agreement would mean nothing), 2 on usage or file errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/params.h"
#include "common/nn/safetensors.h"

static int same_layout(const fl_params_t *x, const fl_params_t *y)
{
    if (x->numel != y->numel || x->nviews != y->nviews)
        return 0;
    for (size_t i = 0; i < x->nviews; i++)
        if (strcmp(x->views[i].name, y->views[i].name) != 0 || x->views[i].numel != y->views[i].numel ||
            x->views[i].offset != y->views[i].offset)
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: fl_delta_diff GLOBAL A B [TOL]\n");
        return 2;
    }
    double tol = 1e-3;
    if (argc == 5) {
        char *end;
        tol = strtod(argv[4], &end);
        if (*end || !(tol >= 0)) {
            fprintf(stderr, "fl_delta_diff: bad tolerance '%s'\n", argv[4]);
            return 2;
        }
    }
    fl_params_t p[3];
    int status = 2;
    for (int i = 0; i < 3; i++)
        fl_params_init(&p[i]);
    for (int i = 0; i < 3; i++) {
        int rc = fl_safetensors_load_any(argv[1 + i], &p[i]);
        if (rc) {
            fprintf(stderr, "fl_delta_diff: %s: %s\n", argv[1 + i], fl_strerror(rc));
            goto out;
        }
    }
    if (!same_layout(&p[0], &p[1]) || !same_layout(&p[0], &p[2])) {
        fprintf(stderr, "fl_delta_diff: the three files are not the same model\n");
        goto out;
    }
    double diff2 = 0, na2 = 0, nb2 = 0, maxabs = 0;
    for (size_t i = 0; i < p[0].numel; i++) {
        double da = (double)p[1].data[i] - p[0].data[i];
        double db = (double)p[2].data[i] - p[0].data[i];
        double d = da - db;
        diff2 += d * d;
        na2 += da * da;
        nb2 += db * db;
        if (!(fabs(d) <= maxabs)) /* NaN propagates into the result */
            maxabs = fabs(d);
    }
    double rel = na2 > 0 ? sqrt(diff2 / na2) : INFINITY;
    printf("rel_l2=%.3g max_abs=%.3g norm_a=%.6g norm_b=%.6g n=%zu\n", rel, maxabs, sqrt(na2), sqrt(nb2),
           p[0].numel);
    status = rel <= tol ? 0 : 1;
out:
    for (int i = 0; i < 3; i++)
        fl_params_free(&p[i]);
    return status;
}
