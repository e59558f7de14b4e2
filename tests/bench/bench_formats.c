/* bench_formats: read throughput of the formats we cannot download here,
 * on synthetic files of realistic shape written to $TMPDIR first:
 * a LEAF FEMNIST folder, a TFF EMNIST SQLite file (the same 6,800 images of
 * 340 writers), and CIFAR-10's five training batches (50,000 records).
 * Prints figures; asserts nothing about time. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "common/data/cifar.h"
#include "common/data/dataset.h"
#include "common/data/leaf.h"
#include "common/data/tff.h"
#include "common/base/error.h"
#include "proto/tf_example.pb-c.h"
#include "tests/support/benchclock.h"

#define USERS 340
#define PER_USER 20

static float pix(int u, int e, int i) { return (float)((u * 131 + e * 31 + i * 7) % 256) / 255.0f; }

static int write_leaf(const char *root)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/train", root);
    if (mkdir(root, 0700) || mkdir(path, 0700))
        return -1;
    snprintf(path, sizeof path, "%s/train/all_data_0.json", root);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\"users\": [");
    for (int u = 0; u < USERS; u++)
        fprintf(f, "%s\"f%04d\"", u ? ", " : "", u);
    fprintf(f, "], \"num_samples\": [], \"user_data\": {");
    for (int u = 0; u < USERS; u++) {
        fprintf(f, "%s\"f%04d\": {\"x\": [", u ? ", " : "", u);
        for (int e = 0; e < PER_USER; e++) {
            fprintf(f, "%s[", e ? ", " : "");
            for (int i = 0; i < 784; i++)
                fprintf(f, "%s%.8g", i ? ", " : "", pix(u, e, i));
            fprintf(f, "]");
        }
        fprintf(f, "], \"y\": [");
        for (int e = 0; e < PER_USER; e++)
            fprintf(f, "%s%d", e ? ", " : "", (u + e) % 62);
        fprintf(f, "]}");
    }
    fprintf(f, "}}");
    return fclose(f);
}

static int write_tff(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    int rc = sqlite3_exec(db,
                          "CREATE TABLE examples (split_name TEXT, client_id TEXT, "
                          "serialized_example_proto BLOB);"
                          "CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, "
                          "num_examples INTEGER); BEGIN;",
                          NULL, NULL, NULL);
    if (rc || sqlite3_prepare_v2(db, "INSERT INTO examples VALUES ('train', ?1, ?2)", -1, &st,
                                 NULL))
        return -1;
    float v[784];
    int64_t label;
    uint8_t *buf = malloc(8192);
    for (int u = 0; u < USERS && buf; u++) {
        char id[16], sql[128];
        snprintf(id, sizeof id, "f%04d", u);
        snprintf(sql, sizeof sql, "INSERT INTO client_metadata VALUES ('%s', 'train', %d)", id,
                 PER_USER);
        sqlite3_exec(db, sql, NULL, NULL, NULL);
        for (int e = 0; e < PER_USER; e++) {
            for (int i = 0; i < 784; i++)
                v[i] = pix(u, e, i);
            label = (u + e) % 62;
            Tfex__FloatList fl = TFEX__FLOAT_LIST__INIT;
            Tfex__Int64List il = TFEX__INT64_LIST__INIT;
            Tfex__Feature fp = TFEX__FEATURE__INIT, fy = TFEX__FEATURE__INIT;
            Tfex__Features__FeatureEntry ep = TFEX__FEATURES__FEATURE_ENTRY__INIT,
                                         ey = TFEX__FEATURES__FEATURE_ENTRY__INIT;
            Tfex__Features fs = TFEX__FEATURES__INIT;
            Tfex__Example ex = TFEX__EXAMPLE__INIT;
            fl.n_value = 784;
            fl.value = v;
            il.n_value = 1;
            il.value = &label;
            fp.kind_case = TFEX__FEATURE__KIND_FLOAT_LIST;
            fp.float_list = &fl;
            fy.kind_case = TFEX__FEATURE__KIND_INT64_LIST;
            fy.int64_list = &il;
            ep.key = "pixels";
            ep.value = &fp;
            ey.key = "label";
            ey.value = &fy;
            Tfex__Features__FeatureEntry *entries[2] = {&ep, &ey};
            fs.n_feature = 2;
            fs.feature = entries;
            ex.features = &fs;
            size_t n = tfex__example__pack(&ex, buf);
            sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_blob(st, 2, buf, (int)n, SQLITE_TRANSIENT);
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = -1;
            sqlite3_reset(st);
        }
    }
    free(buf);
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static int write_cifar(const char *dir)
{
    uint8_t rec[3073];
    if (mkdir(dir, 0700))
        return -1;
    for (int b = 1; b <= 5; b++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, b);
        FILE *f = fopen(path, "wb");
        if (!f)
            return -1;
        for (int r = 0; r < 10000; r++) {
            rec[0] = (uint8_t)(r % 10);
            for (int i = 0; i < 3072; i++)
                rec[1 + i] = (uint8_t)(r * 7 + i);
            fwrite(rec, 1, sizeof rec, f);
        }
        if (fclose(f))
            return -1;
    }
    return 0;
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    char root[512], leaf[600], tff[600], cifar[600], cmd[700];
    snprintf(root, sizeof root, "%s/fedopt-bench-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(root))
        return 1;
    snprintf(leaf, sizeof leaf, "%s/femnist", root);
    snprintf(tff, sizeof tff, "%s/emnist.sqlite", root);
    snprintf(cifar, sizeof cifar, "%s/cifar", root);
    int rc = 1;
    if (write_leaf(leaf) || write_tff(tff) || write_cifar(cifar)) {
        fprintf(stderr, "bench_formats: cannot write the synthetic files in %s\n", root);
        goto done;
    }
    struct stat st;
    char jpath[700];
    snprintf(jpath, sizeof jpath, "%s/train/all_data_0.json", leaf);
    stat(jpath, &st);
    double jmb = (double)st.st_size / 1e6;
    stat(tff, &st);
    double tmb = (double)st.st_size / 1e6;

    fl_dataset_t d;
    fl_dataset_init(&d);
    double t0 = fl_bench_wall(), c0 = fl_bench_cpu();
    if (fl_leaf_load(leaf, "train", &d))
        goto done;
    double dt = fl_bench_wall() - t0, dc = fl_bench_cpu() - c0;
    printf("LEAF FEMNIST JSON   %6zu images, %4zu users, %6.1f MB: wall %6.2f s, cpu %6.2f s "
           "(%6.0f images per cpu-s)\n", d.n, d.num_groups, jmb, dt, dc, (double)d.n / dc);
    fl_dataset_free(&d);
    t0 = fl_bench_wall();
    c0 = fl_bench_cpu();
    if (fl_tff_load(tff, "train", FL_DATA_VIEW_AUTO, &d))
        goto done;
    dt = fl_bench_wall() - t0;
    dc = fl_bench_cpu() - c0;
    printf("TFF EMNIST SQLite   %6zu images, %4zu users, %6.1f MB: wall %6.2f s, cpu %6.2f s "
           "(%6.0f images per cpu-s)\n", d.n, d.num_groups, tmb, dt, dc, (double)d.n / dc);
    fl_dataset_free(&d);
    t0 = fl_bench_wall();
    c0 = fl_bench_cpu();
    if (fl_tff_load_client(tff, "train", FL_DATA_VIEW_AUTO, 123, &d))
        goto done;
    dt = fl_bench_wall() - t0;
    dc = fl_bench_cpu() - c0;
    printf("TFF one client      %6zu images (client 123 of %d, streamed): wall %6.3f s, cpu %6.3f s\n",
           d.n, USERS, dt, dc);
    fl_dataset_free(&d);
    t0 = fl_bench_wall();
    c0 = fl_bench_cpu();
    if (fl_cifar_load(cifar, 10, "train", &d))
        goto done;
    dt = fl_bench_wall() - t0;
    dc = fl_bench_cpu() - c0;
    printf("CIFAR-10 binary     %6zu images, 5 batches,  153.7 MB: wall %6.2f s, cpu %6.2f s "
           "(%6.0f images per cpu-s)\n", d.n, dt, dc, (double)d.n / dc);
    fl_dataset_free(&d);
    rc = 0;
done:
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_formats: cannot remove %s\n", root);
    return rc;
}
