#include "common/data/idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include "common/base/error.h"
#include "common/base/log.h"

void fl_idx_free(fl_idx_t *idx)
{
    if (!idx)
        return;
    free(idx->values);
    idx->values = NULL;
}

static int type_size(uint8_t t)
{
    switch (t) {
    case 0x08:
    case 0x09:
        return 1;
    case 0x0B:
        return 2;
    case 0x0C:
    case 0x0D:
        return 4;
    case 0x0E:
        return 8;
    default:
        return 0;
    }
}

static double decode(uint8_t t, const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < type_size(t); i++)
        u = (u << 8) | p[i]; /* IDX is big-endian */
    switch (t) {
    case 0x08:
        return (double)(uint8_t)u;
    case 0x09:
        return (double)(int8_t)u;
    case 0x0B:
        return (double)(int16_t)u;
    case 0x0C:
        return (double)(int32_t)u;
    case 0x0D: {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    default: {
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    }
}

/* Reads the header into *out (values stays NULL) and the data, still in
 * file byte order, into *rawp (caller frees). The checks of fl_idx_read. */
static int read_raw(const char *path, fl_idx_t *out, uint8_t **rawp)
{
    int rc = FL_EIO;
    uint8_t *raw = NULL;
    memset(out, 0, sizeof *out);
    *rawp = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        FL_LOG_E("idx", "%s: cannot open", path);
        return FL_EIO;
    }
    /* Large reads: the default 8 KiB buffer makes zlib the bottleneck. */
    gzbuffer(f, 1u << 17);
    uint8_t hdr[4];
    if (gzread(f, hdr, 4) != 4) {
        FL_LOG_E("idx", "%s: too short for an IDX header", path);
        rc = FL_ETRUNCATED;
        goto done;
    }
    out->type = hdr[2];
    out->ndim = hdr[3];
    int tsz = type_size(out->type);
    if (hdr[0] != 0 || hdr[1] != 0 || tsz == 0 || out->ndim < 1 || out->ndim > 8) {
        FL_LOG_E("idx", "%s: bad magic %02x%02x%02x%02x (not an IDX file)", path, hdr[0], hdr[1],
                 hdr[2], hdr[3]);
        rc = FL_EFORMAT;
        goto done;
    }
    uint64_t count = 1;
    for (int i = 0; i < out->ndim; i++) {
        uint8_t d[4];
        if (gzread(f, d, 4) != 4) {
            FL_LOG_E("idx", "%s: truncated header", path);
            rc = FL_ETRUNCATED;
            goto done;
        }
        out->dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        count *= out->dims[i];
        if (count > FL_IDX_MAX_ELEMENTS) {
            FL_LOG_E("idx", "%s: header claims more than %llu elements", path,
                     (unsigned long long)FL_IDX_MAX_ELEMENTS);
            rc = FL_ETOOBIG;
            goto done;
        }
    }
    out->count = (size_t)count;
    /* Read in growing steps rather than allocating what the header claims: a
     * lying header then costs at most twice what the file really holds. */
    size_t want = out->count * (size_t)tsz, have = 0, cap = 0;
    while (have < want) {
        if (have == cap) {
            size_t ncap = cap ? cap * 2 : 1u << 20;
            if (ncap > want)
                ncap = want;
            uint8_t *nr = realloc(raw, ncap);
            if (!nr) {
                rc = FL_ENOMEM;
                goto done;
            }
            raw = nr;
            cap = ncap;
        }
        size_t ask = cap - have;
        if (ask > (1u << 30))
            ask = 1u << 30;
        int got = gzread(f, raw + have, (unsigned)ask);
        if (got < 0) {
            int zerr;
            FL_LOG_E("idx", "%s: read error: %s", path, gzerror(f, &zerr));
            rc = FL_EIO;
            goto done;
        }
        if (got == 0)
            break;
        have += (size_t)got;
    }
    if (have < want) {
        FL_LOG_E("idx", "%s: truncated: header promises %zu bytes of data, file holds %zu", path,
                 want, have);
        rc = FL_ETRUNCATED;
        goto done;
    }
    uint8_t extra;
    if (gzread(f, &extra, 1) != 0) {
        FL_LOG_E("idx", "%s: data continues past what the header describes", path);
        rc = FL_EFORMAT;
        goto done;
    }
    if (!raw && !(raw = malloc(1))) {
        rc = FL_ENOMEM;
        goto done;
    }
    *rawp = raw;
    raw = NULL;
    rc = 0;
done:
    free(raw);
    gzclose(f);
    return rc;
}

int fl_idx_read(const char *path, fl_idx_t *out)
{
    uint8_t *raw;
    int rc = read_raw(path, out, &raw);
    if (rc)
        return rc;
    int tsz = type_size(out->type);
    out->values = malloc((out->count ? out->count : 1) * sizeof(double));
    if (!out->values) {
        free(raw);
        return FL_ENOMEM;
    }
    for (size_t i = 0; i < out->count; i++)
        out->values[i] = decode(out->type, raw + i * (size_t)tsz);
    free(raw);
    return 0;
}

int fl_idx_load_images(const char *images, const char *labels, int min_classes, fl_dataset_t *d)
{
    /* u8 data is used as read: converting 47 million pixels through
     * fl_idx_read's doubles would cost 376 MB and most of the load time. */
    fl_idx_t xi = {0}, yi = {0};
    uint8_t *xr = NULL, *yr = NULL;
    int rc;
    if ((rc = read_raw(images, &xi, &xr)) || (rc = read_raw(labels, &yi, &yr)))
        goto done;
    if (xi.type != 0x08 || xi.ndim != 3 || yi.type != 0x08 || yi.ndim != 1) {
        FL_LOG_E("idx", "%s / %s: expected u8 images N x H x W and u8 labels N", images, labels);
        rc = FL_EFORMAT;
        goto done;
    }
    if (xi.dims[0] != yi.dims[0]) {
        FL_LOG_E("idx", "%s has %u images but %s has %u labels", images, xi.dims[0], labels,
                 yi.dims[0]);
        rc = FL_ESHAPE;
        goto done;
    }
    /* Zero-sized dimensions are valid IDX (fl_idx_read returns an empty
     * array), but a data set needs examples with pixels: refused here, each
     * with its own message, rather than as fl_dataset_alloc's bare EINVAL. */
    if (xi.dims[0] == 0) {
        FL_LOG_E("idx", "%s: no images", images);
        rc = FL_EEMPTY;
        goto done;
    }
    if (xi.dims[1] == 0 || xi.dims[2] == 0) {
        FL_LOG_E("idx", "%s: images of %u x %u pixels", images, xi.dims[1], xi.dims[2]);
        rc = FL_EFORMAT;
        goto done;
    }
    int classes = min_classes > 0 ? min_classes : 1;
    for (size_t i = 0; i < yi.count; i++)
        if ((int)yr[i] + 1 > classes)
            classes = (int)yr[i] + 1;
    int64_t shape[3] = {1, xi.dims[1], xi.dims[2]};
    if ((rc = fl_dataset_alloc(d, xi.dims[0], 3, shape, classes)))
        goto done;
    for (size_t i = 0; i < xi.count; i++)
        d->x[i] = (float)(xr[i] / 255.0); /* the same rounding as before this fast path */
    for (size_t i = 0; i < yi.count; i++)
        d->y[i] = (int32_t)yr[i];
done:
    free(xr);
    free(yr);
    return rc;
}

const char *fl_fmnist_dir(void)
{
    const char *env = getenv("FEDOPT_FMNIST_DIR");
    return env && *env ? env : "/usr/share/datasets/fashion-mnist";
}

int fl_fmnist_load(const char *split, fl_dataset_t *d)
{
    const char *dir = fl_fmnist_dir();
    const char *prefix;
    if (strcmp(split, "train") == 0)
        prefix = "train";
    else if (strcmp(split, "test") == 0)
        prefix = "t10k";
    else
        return FL_EINVAL;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        FL_LOG_E("idx", "Fashion-MNIST not found in %s: install the Debian package "
                        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)", dir);
        return FL_ENOTFOUND;
    }
    char xp[4096], yp[4096];
    snprintf(xp, sizeof xp, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(yp, sizeof yp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    return fl_idx_load_images(xp, yp, 10, d);
}

/* Finds the one file in dir whose name contains one of the patterns. */
static int find_one(const char *dir, const char *const *pats, char *out, size_t size)
{
    DIR *dp = opendir(dir);
    if (!dp) {
        FL_LOG_E("idx", "%s: cannot open directory", dir);
        return FL_ENOTFOUND;
    }
    int found = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        int hit = 0;
        for (const char *const *p = pats; *p; p++)
            hit |= strstr(e->d_name, *p) != NULL;
        if (!hit)
            continue;
        if (found++ == 0)
            snprintf(out, size, "%s/%s", dir, e->d_name);
    }
    closedir(dp);
    if (found != 1) {
        FL_LOG_E("idx", "%s: %s file matching *%s* (found %d)", dir,
                 found ? "more than one" : "no", pats[0], found);
        return FL_ENOTFOUND;
    }
    return 0;
}

int fl_idx_load_dir(const char *dir, const char *split, fl_dataset_t *d)
{
    static const char *const train_x[] = {"train-images", NULL};
    static const char *const train_y[] = {"train-labels", NULL};
    static const char *const test_x[] = {"t10k-images", "test-images", NULL};
    static const char *const test_y[] = {"t10k-labels", "test-labels", NULL};
    int train;
    if (!dir || !split || !d)
        return FL_EINVAL;
    if (strcmp(split, "train") == 0)
        train = 1;
    else if (strcmp(split, "test") == 0)
        train = 0;
    else
        return FL_EINVAL;
    char xp[4096], yp[4096];
    int rc;
    if ((rc = find_one(dir, train ? train_x : test_x, xp, sizeof xp)) ||
        (rc = find_one(dir, train ? train_y : test_y, yp, sizeof yp)))
        return rc;
    if ((rc = fl_idx_load_images(xp, yp, 1, d)))
        return rc;
    const char *base = strrchr(xp, '/') + 1;
    if (strncmp(base, "emnist-", 7) == 0 && d->shape[1] == d->shape[2]) {
        /* EMNIST keeps the column-major order of its MATLAB origin. */
        size_t h = (size_t)d->shape[1];
        for (size_t i = 0; i < d->n; i++) {
            float *img = d->x + i * d->dim;
            for (size_t r = 0; r < h; r++)
                for (size_t c = r + 1; c < h; c++) {
                    float t = img[r * h + c];
                    img[r * h + c] = img[c * h + r];
                    img[c * h + r] = t;
                }
        }
    }
    return 0;
}
