/* augment: the paper's CIFAR preprocessing, applied to images of a dataset.
 *
 * Training images get a random crop of crop x crop (uniform offset) and a
 * horizontal flip with probability 1/2; test images get the central crop
 * (offset (H - crop) / 2, rounded down). Every crop is then standardized per
 * image as TensorFlow's per_image_standardization does: (x - mean) /
 * max(stddev, 1 / sqrt(N)) over the image's N = C * crop * crop values.
 * Draws come from the caller's stream (FL_RNG_AUGMENT with the run, round
 * and client ids), so a client re-running a round gets the same crops. */
#ifndef FL_AUGMENT_H
#define FL_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/base/rng.h"

/* Crops one image x [C, H, W] into out [C, crop, crop]: random offset and
 * flip when `train` (drawn from rng), central otherwise; then standardizes
 * it. crop must not exceed H or W. */
void fl_augment_image(const float *x, int C, int H, int W, int crop, int train, fl_rng_t *rng,
                      float *out);

/* Makes *out (empty) a copy of src (images [C, H, W], H, W >= crop) with
 * every image cropped and standardized by fl_augment_image, labels (and
 * group and coarse ids) kept. rng may be NULL when !train. Returns 0,
 * FL_EINVAL (not images, or smaller than the crop; logged) or FL_ENOMEM. */
int fl_augment_dataset(const fl_dataset_t *src, int crop, int train, fl_rng_t *rng,
                       fl_dataset_t *out);

#endif
