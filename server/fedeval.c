#include "server/fedeval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/rng.h"
#include "server/round.h"

typedef enum { S_PENDING = 0, S_ACCEPTED, S_REFUSED, S_DROPPED } slot_state_t;

typedef struct {
    char *name;
    uint64_t holds;
    slot_state_t state;
    const char *reason; /* static text */
    double num_examples, loss, accuracy, seconds;
} slot_t;

struct fl_fedeval {
    fl_fedeval_config_t cfg;
    int64_t round; /* 0 = none open */
    double began;        /* monotonic: durations and the deadline */
    double started_at;   /* wall: the row's started_at, stored only */
    double last_seconds; /* monotonic duration of the last closed evaluation */
    slot_t *slots; /* sorted by name */
    size_t nslots;
    int capped; /* begin was given holds */
    slot_t extra[FL_FEDEVAL_MAX_EXTRA]; /* refusals from outside the sample, duplicates */
    size_t nextra;
    fl_store_fedeval_result_t *out; /* filled by close */
    size_t nout;
};

static const char *const verdict_text[FL_FEDEVAL__COUNT] = {
    "accepted", "stale round", "not selected", "duplicate", "bad loss", "bad accuracy", "bad example count",
    "examples beyond the Hello declaration or the cap", "no evaluation open",
};

const char *fl_fedeval_verdict_text(fl_fedeval_verdict_t v)
{
    return (unsigned)v < FL_FEDEVAL__COUNT ? verdict_text[v] : "unknown";
}

int fl_fedeval_create(const fl_fedeval_config_t *cfg, fl_fedeval_t **out)
{
    if (!cfg || !out || cfg->clients == 0 || !(cfg->deadline_s > 0))
        return FL_EINVAL;
    fl_fedeval_t *e = calloc(1, sizeof *e);
    if (!e)
        return FL_ENOMEM;
    e->cfg = *cfg;
    *out = e;
    return 0;
}

static void clear(fl_fedeval_t *e)
{
    for (size_t i = 0; i < e->nslots; i++)
        free(e->slots[i].name);
    free(e->slots);
    e->slots = NULL;
    e->nslots = 0;
    for (size_t i = 0; i < e->nextra; i++)
        free(e->extra[i].name);
    e->nextra = 0;
    free(e->out);
    e->out = NULL;
    e->nout = 0;
}

void fl_fedeval_free(fl_fedeval_t *e)
{
    if (!e)
        return;
    clear(e);
    free(e);
}

static int cmp_slot(const void *a, const void *b)
{
    return strcmp(((const slot_t *)a)->name, ((const slot_t *)b)->name);
}

static slot_t *find(const fl_fedeval_t *e, const char *name)
{
    if (!e->nslots || !name)
        return NULL;
    slot_t key = {.name = (char *)name};
    return bsearch(&key, e->slots, e->nslots, sizeof *e->slots, cmp_slot);
}

int fl_fedeval_begin(fl_fedeval_t *e, int64_t round, const char *const *names, const uint64_t *holds, size_t n,
                     double now, double wall)
{
    if (!e || (n && !names) || round <= 0)
        return FL_EINVAL;
    if (e->round)
        return FL_ESTATE;
    if (n == 0)
        return FL_EEMPTY;
    clear(e);
    size_t s = e->cfg.clients < n ? e->cfg.clients : n;
    size_t *pick = malloc(s * sizeof *pick);
    int rc = FL_ENOMEM;
    if (!pick || !(e->slots = calloc(s, sizeof *e->slots)))
        goto fail;
    if ((rc = fl_round_select_for(e->cfg.seed, e->cfg.run_id, round, FL_RNG_FEDEVAL, names, n, s, pick)))
        goto fail;
    rc = FL_ENOMEM;
    for (size_t i = 0; i < s; i++) {
        if (!(e->slots[i].name = strdup(names[pick[i]])))
            goto fail;
        e->slots[i].holds = holds ? holds[pick[i]] : 0;
        e->nslots = i + 1;
    }
    qsort(e->slots, s, sizeof *e->slots, cmp_slot);
    for (size_t i = 1; i < s; i++)
        if (strcmp(e->slots[i - 1].name, e->slots[i].name) == 0) {
            rc = FL_EINVAL;
            goto fail;
        }
    free(pick);
    e->capped = holds != NULL;
    e->round = round;
    e->began = now;
    e->started_at = wall;
    return 0;
fail:
    free(pick);
    clear(e);
    return rc;
}

int64_t fl_fedeval_round(const fl_fedeval_t *e) { return e ? e->round : 0; }
size_t fl_fedeval_selected_count(const fl_fedeval_t *e) { return e && e->round ? e->nslots : 0; }

const char *fl_fedeval_selected_name(const fl_fedeval_t *e, size_t i)
{
    return e && e->round && i < e->nslots ? e->slots[i].name : NULL;
}

/* Keeps a refusal from outside the sample (or a duplicate) while there is room. */
static void record_extra(fl_fedeval_t *e, const char *client, fl_fedeval_verdict_t v, uint64_t num_examples,
                         double loss, double accuracy, double now)
{
    if (e->nextra >= FL_FEDEVAL_MAX_EXTRA)
        return;
    slot_t *x = &e->extra[e->nextra];
    if (!(x->name = strdup(client ? client : "?")))
        return;
    x->state = S_REFUSED;
    x->reason = fl_fedeval_verdict_text(v);
    x->num_examples = (double)num_examples;
    x->loss = loss;
    x->accuracy = accuracy;
    x->seconds = now - e->began;
    e->nextra++;
}

fl_fedeval_verdict_t fl_fedeval_answer(fl_fedeval_t *e, const char *client, int64_t round_id, uint64_t num_examples,
                                       double loss, double accuracy, double now)
{
    if (!e || !e->round)
        return FL_FEDEVAL_CLOSED;
    slot_t *sl = find(e, client);
    fl_fedeval_verdict_t v = FL_FEDEVAL_OK;
    if (!sl)
        v = FL_FEDEVAL_NOT_SELECTED;
    else if (sl->state != S_PENDING)
        v = FL_FEDEVAL_DUPLICATE;
    if (v != FL_FEDEVAL_OK) {
        record_extra(e, client, v, num_examples, loss, accuracy, now);
        return v;
    }
    if (round_id != e->round)
        v = FL_FEDEVAL_STALE;
    else if (!isfinite(loss) || loss < 0)
        v = FL_FEDEVAL_BAD_LOSS;
    else if (!isfinite(accuracy) || accuracy < 0 || accuracy > 1)
        v = FL_FEDEVAL_BAD_ACCURACY;
    /* A uint64 from the wire: anything beyond 2^53 (a negative count sent
     * as unsigned) is not a count of examples. */
    else if (num_examples == 0 || num_examples > (1ull << 53))
        v = FL_FEDEVAL_BAD_COUNT;
    /* More than the client may claim would let it outweigh the others. */
    else if (e->capped && num_examples > sl->holds)
        v = FL_FEDEVAL_CLAIM;
    sl->state = v == FL_FEDEVAL_OK ? S_ACCEPTED : S_REFUSED;
    sl->reason = v == FL_FEDEVAL_OK ? NULL : fl_fedeval_verdict_text(v);
    sl->num_examples = (double)num_examples;
    sl->loss = loss;
    sl->accuracy = accuracy;
    sl->seconds = now - e->began;
    return v;
}

void fl_fedeval_drop(fl_fedeval_t *e, const char *client, const char *reason, double now)
{
    if (!e || !e->round)
        return;
    slot_t *sl = find(e, client);
    if (!sl || sl->state != S_PENDING)
        return;
    sl->state = S_DROPPED;
    sl->reason = reason ? reason : "dropped";
    sl->seconds = now - e->began;
}

int fl_fedeval_is_complete(const fl_fedeval_t *e)
{
    if (!e || !e->round)
        return 0;
    for (size_t i = 0; i < e->nslots; i++)
        if (e->slots[i].state == S_PENDING)
            return 0;
    return 1;
}

int fl_fedeval_deadline_passed(const fl_fedeval_t *e, double now)
{
    return e && e->round && now - e->began >= e->cfg.deadline_s;
}

static void to_record(const slot_t *sl, fl_store_fedeval_result_t *r)
{
    static const char *const status[] = {"dropped", "accepted", "refused", "dropped"};
    r->client = sl->name;
    r->status = status[sl->state];
    r->reason = sl->reason;
    int known = sl->state == S_ACCEPTED || sl->state == S_REFUSED;
    r->num_examples = known ? sl->num_examples : NAN;
    r->loss = known ? sl->loss : NAN;
    r->accuracy = known ? sl->accuracy : NAN;
    r->seconds = sl->seconds;
}

int fl_fedeval_close(fl_fedeval_t *e, double now, double wall, fl_store_fedeval_t *row,
                     const fl_store_fedeval_result_t **res, size_t *nres)
{
    if (!e || !row || !res || !nres)
        return FL_EINVAL;
    if (!e->round)
        return FL_ESTATE;
    free(e->out);
    e->nout = 0;
    if (!(e->out = calloc(e->nslots + e->nextra + 1, sizeof *e->out)))
        return FL_ENOMEM;
    memset(row, 0, sizeof *row);
    row->run_id = e->cfg.run_id;
    row->round = e->round;
    row->started_at = e->started_at;
    row->finished_at = wall;
    row->clients_selected = (int64_t)e->nslots;
    double n = 0, loss = 0, acc = 0;
    for (size_t i = 0; i < e->nslots; i++) {
        slot_t *sl = &e->slots[i];
        if (sl->state == S_PENDING) {
            sl->state = S_DROPPED;
            sl->reason = "deadline";
            sl->seconds = now - e->began;
        }
        if (sl->state == S_ACCEPTED) {
            row->clients_reported++;
            n += sl->num_examples;
            loss += sl->num_examples * sl->loss;
            acc += sl->num_examples * sl->accuracy;
        } else if (sl->state == S_REFUSED)
            row->clients_refused++;
        else
            row->clients_dropped++;
        to_record(sl, &e->out[e->nout++]);
    }
    for (size_t i = 0; i < e->nextra; i++)
        to_record(&e->extra[i], &e->out[e->nout++]);
    row->examples = n;
    row->loss = n > 0 ? loss / n : NAN;
    row->accuracy = n > 0 ? acc / n : NAN;
    *res = e->out;
    *nres = e->nout;
    e->last_seconds = now - e->began;
    e->round = 0;
    return 0;
}

double fl_fedeval_last_seconds(const fl_fedeval_t *e)
{
    return e ? e->last_seconds : 0;
}

void fl_fedeval_abort(fl_fedeval_t *e)
{
    if (e)
        e->round = 0;
}
