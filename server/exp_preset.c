/* exp_preset: the paper's tasks as experiment presets (see exp_preset.h).
 * Settings and best rates are Reddi et al.'s, as docs/algorithm.md lists them (the best
 * learning rates found per optimizer, log10 client / server lr, and τ). */
#include <math.h>
#include <string.h>

#include "server/exp_preset.h"

const char *const fl_exp_opt_names[FL_EXP_NOPTS] = {"fedadagrad", "fedadam", "fedyogi", "fedavgm", "fedavg"};

/* {client lr, server lr, tau} per optimizer in fl_exp_opt_names order. */
#define R(ca, sa, cd, sd, cy, sy, cm, sm, cv, sv, ta, td, ty)                                                        \
    {{ca, sa, ta}, {cd, sd, td}, {cy, sy, ty}, {cm, sm, NAN}, {cv, sv, NAN}}

#define EMNIST_CR R(-1.5, -1, -1.5, -2.5, -1.5, -2.5, -1.5, -0.5, -1, 0, -2, -4, -4)
#define EMNIST_AE R(1.5, -1.5, 1, -1.5, 1, -1.5, 0.5, 0, 1, 0, -3, -3, -3)
#define CIFAR100 R(-1, -1, -1.5, 0, -1.5, 0, -1.5, 0, -1, 0.5, -2, -1, -1)
#define SHAKESPEARE R(0, -0.5, 0, -2, 0, -2, 0, -0.5, 0, 0, -1, -3, -3)
#define SO_NWP R(-0.5, -1.5, -0.5, -2, -0.5, -2, -0.5, 0, -0.5, 0, -4, -5, -5)
#define SO_LR R(2, 1, 2, -0.5, 2, -0.5, 2, 0, 2, 0, -2, -5, -5)
#define NONE R(NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN)

static const fl_exp_preset_t presets[] = {
    {"fmnist_cr", "EMNIST CR (Fashion-MNIST, Dirichlet label skew)", "cnn", "fmnist", "fmnist", "dirichlet", 0.1, 100,
     10, 20, 1500, "accuracy", 1, EMNIST_CR},
    {"fmnist_ae", "EMNIST AE (Fashion-MNIST, Dirichlet label skew)", "autoencoder", "fmnist", "fmnist", "dirichlet",
     0.1, 100, 10, 20, 3000, "mse", 1, EMNIST_AE},
    {"emnist_cr", "EMNIST CR", "cnn", NULL, NULL, "natural", NAN, 0, 10, 20, 1500, "accuracy", 1, EMNIST_CR},
    {"emnist_ae", "EMNIST AE", "autoencoder", NULL, NULL, "natural", NAN, 0, 10, 20, 3000, "mse", 1, EMNIST_AE},
    {"cifar10", "CIFAR-10", "resnet18gn", NULL, NULL, "dirichlet", 0.1, 500, 10, 20, 4000, "accuracy", 0, NONE},
    {"cifar100", "CIFAR-100", "resnet18gn", NULL, NULL, "dirichlet:0.1,10", NAN, 500, 10, 20, 4000, "accuracy", 1,
     CIFAR100},
    {"shakespeare", "Shakespeare", "charlstm", NULL, NULL, "natural", NAN, 0, 10, 4, 1200, "accuracy", 1, SHAKESPEARE},
    {"so_nwp", "Stack Overflow NWP", "wordlstm", NULL, NULL, "natural", NAN, 0, 50, 16, 1500, "accuracy", 1, SO_NWP},
    {"so_lr", "Stack Overflow LR", "bowlr", NULL, NULL, "natural", NAN, 0, 10, 100, 1500, "recall@5", 1, SO_LR},
};

const fl_exp_preset_t *fl_exp_preset_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

int fl_exp_opt_index(const char *name)
{
    for (int i = 0; name && i < FL_EXP_NOPTS; i++)
        if (strcmp(fl_exp_opt_names[i], name) == 0)
            return i;
    return -1;
}

void fl_exp_preset_list(FILE *out)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        fprintf(out, "  %-12s %s: %s, %s%s\n", presets[i].name, presets[i].stands_for, presets[i].model,
                presets[i].data ? "data " : "your data", presets[i].data ? presets[i].data : "");
}
