#include "server/round.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/params.h"
#include "common/base/rng.h"

typedef enum { S_PENDING = 0, S_AGGREGATING, S_ACCEPTED, S_REFUSED, S_DROPPED } slot_state_t;

/* One selected client. */
typedef struct {
    char *name;
    slot_state_t state;
    char reason[48];
    double num_examples, train_loss, norm, seconds;
    double train_acc; /* from the client's Update (fl_round_note_accuracy); NaN = none */
    int64_t bytes;
} slot_t;

/* One refused update from outside the selection (or for another round). */
typedef struct {
    char *name;
    fl_refuse_t why;
    int64_t bytes;
    double seconds;
} extra_t;

/* A cap on recorded refusals per round, so a client spamming bad updates
 * cannot grow the server's memory; past it refusals are only counted. */
#define EXTRA_BASE 1024

struct fl_round {
    fl_round_config_t cfg;
    fl_serveropt_t *opt;
    int64_t round; /* 0 = none open */
    double began, deadline; /* monotonic: durations and the deadline */
    double started_at;      /* wall: the row's started_at, stored only */
    double last_seconds;    /* monotonic duration of the last closed round */
    slot_t *slots; /* sorted by name */
    size_t nslots;
    uint32_t accepted, aggregating;
    extra_t *extras;
    size_t nextras, cap_extras;
    uint64_t extras_lost;
    int64_t bytes_in, bytes_out;
    /* What the last close handed out, owned until the next begin. */
    fl_store_update_t *out;
    extra_t *out_extras;
    size_t nout_extras;
};

static const char *const refuse_text[FL_REFUSE__COUNT] = {
    [FL_REFUSE_NONE] = "accepted",
    [FL_REFUSE_STALE] = "stale round",
    [FL_REFUSE_NOT_SELECTED] = "not selected",
    [FL_REFUSE_DUPLICATE] = "duplicate",
    [FL_REFUSE_SHAPE] = "wrong shape",
    [FL_REFUSE_NONFINITE] = "non-finite delta",
    [FL_REFUSE_WEIGHT] = "bad example count",
    [FL_REFUSE_COMPLETE] = "round already complete",
    [FL_REFUSE_CLOSED] = "no round open",
    [FL_REFUSE_MALFORMED] = "malformed upload",
    [FL_REFUSE_CLAIM] = "examples beyond the client's claim or the operator's cap",
    [FL_REFUSE_SECAGG] = "secure round abandoned: the sum was never unmasked",
};

uint64_t fl_round_example_cap(uint64_t declared, int64_t op_max)
{
    uint64_t op = op_max > 0 ? (uint64_t)op_max : 0;
    if (!declared)
        return op;
    return op && op < declared ? op : declared;
}

const char *fl_round_refuse_text(fl_refuse_t why)
{
    return (unsigned)why < FL_REFUSE__COUNT ? refuse_text[why] : "unknown";
}

int fl_round_create(const fl_round_config_t *cfg, fl_round_t **out)
{
    if (!cfg || !out || cfg->clients_per_round == 0 || cfg->numel == 0 || !(cfg->over_selection >= 1.0) ||
        !(cfg->deadline_s > 0))
        return FL_EINVAL;
    fl_round_t *r = calloc(1, sizeof *r);
    if (!r)
        return FL_ENOMEM;
    r->cfg = *cfg;
    *out = r;
    return 0;
}

static void free_slots(fl_round_t *r)
{
    for (size_t i = 0; i < r->nslots; i++)
        free(r->slots[i].name);
    free(r->slots);
    r->slots = NULL;
    r->nslots = 0;
}

static void free_extras(extra_t *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

static void free_out(fl_round_t *r)
{
    free(r->out);
    r->out = NULL;
    free_extras(r->out_extras, r->nout_extras);
    r->out_extras = NULL;
    r->nout_extras = 0;
}

void fl_round_free(fl_round_t *r)
{
    if (!r)
        return;
    free_slots(r);
    free_extras(r->extras, r->nextras);
    free_out(r);
    free(r);
}

/* qsort context for ranking names: qsort has no user pointer, so sort
 * pointers to the names and map back by address. */
static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

int fl_round_select(uint64_t seed, int64_t run_id, int64_t round, const char *const *names, size_t n, size_t count,
                    size_t *out)
{
    return fl_round_select_for(seed, run_id, round, FL_RNG_SELECT, names, n, count, out);
}

int fl_round_select_for(uint64_t seed, int64_t run_id, int64_t round, uint64_t purpose, const char *const *names,
                        size_t n, size_t count, size_t *out)
{
    if ((!names && n) || count > n || (count && !out))
        return FL_EINVAL;
    const char *const **rank = malloc((n ? n : 1) * sizeof *rank);
    if (!rank)
        return FL_ENOMEM;
    for (size_t i = 0; i < n; i++)
        rank[i] = &names[i];
    qsort(rank, n, sizeof *rank, cmp_name_ptr);
    fl_rng_t g;
    uint64_t ids[3] = {(uint64_t)run_id, (uint64_t)round, purpose};
    fl_rng_stream(&g, seed, ids, 3);
    /* Partial Fisher-Yates over the ranked list: the first `count` positions
     * end up a uniform sample without replacement. */
    for (size_t i = 0; i < count; i++) {
        size_t j = i + (size_t)fl_rng_below(&g, n - i);
        const char *const *t = rank[i];
        rank[i] = rank[j];
        rank[j] = t;
        out[i] = (size_t)(rank[i] - names);
    }
    free(rank);
    return 0;
}

static int cmp_slot(const void *a, const void *b)
{
    return strcmp(((const slot_t *)a)->name, ((const slot_t *)b)->name);
}

static slot_t *find_slot(const fl_round_t *r, const char *name)
{
    if (!r->nslots || !name)
        return NULL;
    slot_t key = {.name = (char *)name};
    return bsearch(&key, r->slots, r->nslots, sizeof *r->slots, cmp_slot);
}

int fl_round_begin(fl_round_t *r, int64_t round, const char *const *names, size_t n, fl_serveropt_t *opt,
                   double now, double wall)
{
    if (!r || !opt || round <= 0 || (n && !names))
        return FL_EINVAL;
    if (r->round)
        return FL_ESTATE;
    if (n == 0)
        return FL_EEMPTY;
    free_slots(r);
    free_out(r);
    double want = ceil((double)r->cfg.clients_per_round * r->cfg.over_selection - 1e-9);
    size_t s = want < (double)n ? (size_t)want : n;
    size_t *pick = malloc(s * sizeof *pick);
    r->slots = calloc(s, sizeof *r->slots);
    int rc = FL_ENOMEM;
    if (!pick || !r->slots)
        goto fail;
    if ((rc = fl_round_select(r->cfg.seed, r->cfg.run_id, round, names, n, s, pick)))
        goto fail;
    rc = FL_ENOMEM;
    for (size_t i = 0; i < s; i++) {
        if (!(r->slots[i].name = strdup(names[pick[i]])))
            goto fail;
        r->slots[i].train_acc = NAN;
        r->nslots = i + 1;
    }
    qsort(r->slots, s, sizeof *r->slots, cmp_slot);
    for (size_t i = 1; i < s; i++)
        if (strcmp(r->slots[i - 1].name, r->slots[i].name) == 0) {
            FL_LOG_E("round", "client name '%s' is connected twice", r->slots[i].name);
            rc = FL_EINVAL;
            goto fail;
        }
    free(pick);
    r->opt = opt;
    fl_serveropt_begin(opt);
    r->round = round;
    r->began = now;
    r->started_at = wall;
    r->deadline = now + r->cfg.deadline_s;
    r->accepted = r->aggregating = 0;
    r->bytes_in = r->bytes_out = 0;
    return 0;
fail:
    free(pick);
    free_slots(r);
    return rc;
}

int64_t fl_round_number(const fl_round_t *r)
{
    return r ? r->round : 0;
}

size_t fl_round_selected_count(const fl_round_t *r)
{
    return r->round ? r->nslots : 0;
}

const char *fl_round_selected_name(const fl_round_t *r, size_t i)
{
    return i < r->nslots ? r->slots[i].name : NULL;
}

int fl_round_is_selected(const fl_round_t *r, const char *client)
{
    return r->round && find_slot(r, client) != NULL;
}

fl_refuse_t fl_round_check(const fl_round_t *r, const char *client, int64_t round_id, size_t numel,
                           double num_examples)
{
    if (!r->round)
        return FL_REFUSE_CLOSED;
    if (round_id != r->round)
        return FL_REFUSE_STALE;
    const slot_t *s = find_slot(r, client);
    if (!s)
        return FL_REFUSE_NOT_SELECTED;
    if (s->state != S_PENDING)
        return s->state == S_DROPPED && strcmp(s->reason, "surplus") == 0 ? FL_REFUSE_COMPLETE
                                                                             : FL_REFUSE_DUPLICATE;
    if (numel != r->cfg.numel)
        return FL_REFUSE_SHAPE;
    if (!isfinite(num_examples) || num_examples <= 0)
        return FL_REFUSE_WEIGHT;
    /* Updates already accepted plus those being aggregated reach K: the
     * round has what it needs, an extra one would only be thrown away. */
    if (r->accepted + r->aggregating >= r->cfg.clients_per_round)
        return FL_REFUSE_COMPLETE;
    return FL_REFUSE_NONE;
}

int fl_round_add_start(fl_round_t *r, const char *client)
{
    slot_t *s = r->round ? find_slot(r, client) : NULL;
    if (!s || s->state != S_PENDING)
        return FL_ESTATE;
    s->state = S_AGGREGATING;
    r->aggregating++;
    return 0;
}

int fl_round_add_work(fl_serveropt_t *opt, const float *delta, size_t n, double num_examples, double *norm)
{
    int rc = fl_serveropt_add(opt, delta, n, num_examples);
    if (norm)
        *norm = rc == 0 ? fl_f32_norm(delta, n) : NAN;
    return rc;
}

int fl_round_add_work_batch(fl_serveropt_t *opt, const float *const *deltas, const double *num_examples,
                            size_t count, size_t n, int *rc, double *norm)
{
    /* A lone upload takes the exact single-delta path (its refusal leaves
     * no trace at all); several share one accumulator pass. */
    if (count == 1) {
        rc[0] = fl_round_add_work(opt, deltas[0], n, num_examples[0], &norm[0]);
        return 0;
    }
    return fl_serveropt_add_batch(opt, deltas, num_examples, count, n, rc, norm);
}

static fl_refuse_t refuse_from_rc(int rc)
{
    switch (rc) {
    case FL_ENONFINITE:
        return FL_REFUSE_NONFINITE;
    case FL_ESHAPE:
        return FL_REFUSE_SHAPE;
    case FL_EINVAL:
        return FL_REFUSE_WEIGHT;
    case FL_ECANCELED:
        return FL_REFUSE_SECAGG;
    default:
        return FL_REFUSE_MALFORMED;
    }
}

void fl_round_note_accuracy(fl_round_t *r, const char *client, int64_t round_id, double accuracy)
{
    slot_t *s = r && r->round && round_id == r->round ? find_slot(r, client) : NULL;
    /* Only a pending slot (not a duplicate of an update already in), and
     * only a value a training metric can take: a client is not trusted. */
    if (s && s->state == S_PENDING)
        s->train_acc = isfinite(accuracy) && accuracy >= 0 && accuracy <= 1 ? accuracy : NAN;
}

int fl_round_add_end(fl_round_t *r, const char *client, int rc, double num_examples, double train_loss,
                     double norm, int64_t bytes, double now)
{
    slot_t *s = r->round ? find_slot(r, client) : NULL;
    if (!s || s->state != S_AGGREGATING)
        return FL_ESTATE;
    r->aggregating--;
    s->num_examples = num_examples;
    s->train_loss = train_loss;
    s->norm = norm;
    s->bytes = bytes;
    s->seconds = now - r->began;
    r->bytes_in += bytes;
    if (rc == 0) {
        s->state = S_ACCEPTED;
        s->reason[0] = 0;
        r->accepted++;
    } else {
        s->state = S_REFUSED;
        snprintf(s->reason, sizeof s->reason, "%s", fl_round_refuse_text(refuse_from_rc(rc)));
    }
    return 0;
}

int fl_round_refuse(fl_round_t *r, const char *client, fl_refuse_t why, int64_t bytes, double now)
{
    r->bytes_in += bytes;
    /* A selected client whose own update is refused is resolved: it will not
     * deliver another one this round. */
    slot_t *s = r->round ? find_slot(r, client) : NULL;
    if (s && s->state == S_PENDING && why != FL_REFUSE_STALE && why != FL_REFUSE_CLOSED) {
        s->state = S_REFUSED;
        s->bytes = bytes;
        s->seconds = now - r->began;
        s->num_examples = s->train_loss = s->norm = NAN;
        snprintf(s->reason, sizeof s->reason, "%s", fl_round_refuse_text(why));
        return 0;
    }
    if (r->nextras >= EXTRA_BASE + 4 * (size_t)r->cfg.clients_per_round) {
        if (r->extras_lost++ == 0)
            FL_LOG_W("round", "too many refused updates this round; further ones are counted, not recorded");
        return 0;
    }
    if (r->nextras == r->cap_extras) {
        size_t cap = r->cap_extras ? 2 * r->cap_extras : 16;
        extra_t *e = realloc(r->extras, cap * sizeof *e);
        if (!e)
            return FL_ENOMEM;
        r->extras = e;
        r->cap_extras = cap;
    }
    extra_t *e = &r->extras[r->nextras];
    if (!(e->name = strdup(client ? client : "?")))
        return FL_ENOMEM;
    e->why = why;
    e->bytes = bytes;
    e->seconds = r->round ? now - r->began : 0;
    r->nextras++;
    return 0;
}

int fl_round_drop(fl_round_t *r, const char *client, const char *reason, double now)
{
    slot_t *s = r->round ? find_slot(r, client) : NULL;
    if (!s)
        return FL_ENOTFOUND;
    if (s->state != S_PENDING)
        return 0;
    s->state = S_DROPPED;
    s->seconds = now - r->began;
    s->num_examples = s->train_loss = s->norm = NAN;
    snprintf(s->reason, sizeof s->reason, "%s", reason ? reason : "dropped");
    return 0;
}

int fl_round_completed_by(const fl_round_t *r, size_t count)
{
    return r->round && count && r->aggregating == count &&
           (size_t)r->accepted + count >= (size_t)r->cfg.clients_per_round &&
           (size_t)r->accepted + count >= (size_t)r->cfg.min_reports;
}

int fl_round_is_complete(const fl_round_t *r)
{
    if (!r->round)
        return 0;
    if (r->accepted >= r->cfg.clients_per_round)
        return 1;
    if (r->aggregating)
        return 0;
    for (size_t i = 0; i < r->nslots; i++)
        if (r->slots[i].state == S_PENDING)
            return 0;
    return 1;
}

int fl_round_deadline_passed(const fl_round_t *r, double now)
{
    return r->round && now >= r->deadline;
}

double fl_round_time_left(const fl_round_t *r, double now)
{
    return r->deadline - now;
}

uint32_t fl_round_accepted(const fl_round_t *r)
{
    return r->accepted;
}

uint32_t fl_round_in_flight(const fl_round_t *r)
{
    return r->aggregating;
}

void fl_round_add_bytes_out(fl_round_t *r, int64_t bytes)
{
    r->bytes_out += bytes;
}

static const char *slot_status(slot_state_t s)
{
    return s == S_ACCEPTED ? "accepted" : s == S_REFUSED ? "refused" : "dropped";
}

int fl_round_close(fl_round_t *r, double now, double wall, fl_store_round_t *row, const fl_store_update_t **ups,
                   size_t *nups, int *closed)
{
    if (!r->round || r->aggregating)
        return FL_ESTATE;
    int full = r->accepted >= r->cfg.clients_per_round;
    fl_store_update_t *out = calloc(r->nslots + r->nextras + 1, sizeof *out);
    if (!out)
        return FL_ENOMEM;
    uint32_t dropped = 0;
    double examples = 0, loss_sum = 0, loss_w = 0, acc_sum = 0, acc_w = 0;
    size_t k = 0;
    for (size_t i = 0; i < r->nslots; i++) {
        slot_t *s = &r->slots[i];
        if (s->state == S_PENDING) {
            /* Over-selected clients not needed once K reported are surplus,
             * not failures; the others missed the deadline. */
            s->state = S_DROPPED;
            s->seconds = now - r->began;
            s->num_examples = s->train_loss = s->norm = NAN;
            snprintf(s->reason, sizeof s->reason, "%s", full ? "surplus" : "deadline");
        }
        if (s->state == S_DROPPED && strcmp(s->reason, "surplus") != 0)
            dropped++;
        if (s->state == S_ACCEPTED) {
            examples += s->num_examples;
            if (isfinite(s->train_loss)) {
                loss_sum += s->train_loss * s->num_examples;
                loss_w += s->num_examples;
            }
            if (isfinite(s->train_acc)) {
                acc_sum += s->train_acc * s->num_examples;
                acc_w += s->num_examples;
            }
        } else
            s->train_acc = NAN;
        out[k++] = (fl_store_update_t){s->name,          slot_status(s->state), s->reason[0] ? s->reason : NULL,
                                       s->num_examples, s->train_loss,         s->norm,
                                       s->bytes,        s->seconds,            s->train_acc};
    }
    for (size_t i = 0; i < r->nextras; i++) {
        extra_t *e = &r->extras[i];
        out[k++] = (fl_store_update_t){e->name, "refused", fl_round_refuse_text(e->why), NAN, NAN, NAN, e->bytes,
                                       e->seconds, NAN};
    }
    if (r->extras_lost)
        FL_LOG_W("round", "round %lld: %llu refused updates were not recorded (cap reached)", (long long)r->round,
                 (unsigned long long)r->extras_lost);
    int ok = r->accepted >= r->cfg.min_reports && r->accepted > 0;
    *row = (fl_store_round_t){
        .run_id = r->cfg.run_id,
        .round = r->round,
        .started_at = r->started_at,
        .finished_at = wall,
        .status = ok ? "closed" : "abandoned",
        .clients_selected = (int64_t)r->nslots,
        .clients_reported = r->accepted,
        .clients_dropped = dropped,
        .examples = examples,
        .train_loss = loss_w > 0 ? loss_sum / loss_w : NAN,
        .train_accuracy = acc_w > 0 ? acc_sum / acc_w : NAN,
        .eval_loss = NAN,
        .eval_accuracy = NAN,
        .bytes_in = r->bytes_in,
        .bytes_out = r->bytes_out,
    };
    free_out(r);
    r->out = out;
    r->out_extras = r->extras;
    r->nout_extras = r->nextras;
    r->extras = NULL;
    r->nextras = r->cap_extras = 0;
    r->extras_lost = 0;
    *ups = out;
    *nups = k;
    *closed = ok;
    r->last_seconds = now - r->began;
    r->round = 0;
    return 0;
}

double fl_round_last_seconds(const fl_round_t *r)
{
    return r ? r->last_seconds : 0;
}

int fl_round_finish_work(fl_serveropt_t *opt, float *x, size_t n, fl_serveropt_round_t *res, uint8_t **state,
                         size_t *state_len)
{
    if (!state || !state_len)
        return FL_EINVAL;
    *state = NULL;
    *state_len = 0;
    int rc = fl_serveropt_finish(opt, x, n, res);
    return rc ? rc : fl_serveropt_state_save(opt, state, state_len);
}

int fl_round_state_save(const fl_serveropt_t *opt, uint8_t **state, size_t *state_len)
{
    return fl_serveropt_state_save(opt, state, state_len);
}

int fl_round_restore(fl_serveropt_t *opt, float *x, size_t n, const fl_store_checkpoint_t *cp, uint32_t *checksum)
{
    if (!opt || !x || !cp || !checksum)
        return FL_EINVAL;
    if (cp->numel != n) {
        FL_LOG_E("round", "run %lld: checkpoint of round %lld has %zu parameters, the model has %zu",
                 (long long)cp->run_id, (long long)cp->round, cp->numel, n);
        return FL_ESHAPE;
    }
    int rc = fl_serveropt_state_load(opt, cp->state, cp->state_len);
    if (rc) {
        FL_LOG_E("round", "run %lld: optimizer state of round %lld does not load: %s", (long long)cp->run_id,
                 (long long)cp->round, fl_strerror(rc));
        return rc;
    }
    memcpy(x, cp->model, n * sizeof(float));
    /* Prove the restore: the model and the re-serialized state must checksum
     * to what was committed. */
    uint8_t *st = NULL;
    size_t sl = 0;
    if ((rc = fl_serveropt_state_save(opt, &st, &sl)))
        return rc;
    uint32_t mine = fl_store_checksum(x, n, st, sl);
    free(st);
    if (mine != cp->checksum) {
        FL_LOG_E("round", "run %lld: restored state checksums to %08x, checkpoint says %08x", (long long)cp->run_id,
                 mine, cp->checksum);
        return FL_ECHECKSUM;
    }
    *checksum = mine;
    return 0;
}
