/* exp_cell: one cell as a real federation (see exp_cell.h). */
#define _GNU_SOURCE /* prctl's PR_SET_PDEATHSIG */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/error.h"
#include "common/net/certs.h"
#include "server/exp_cell.h"

#define LOCK_WAIT 180.0 /* seconds a previous sweep's processes get to let go of a cell */
#define FLEET_GRACE 15.0

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int path(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= len ? FL_ERANGE : 0;
}

int fl_exp_cell_dir(const char *outdir, const fl_exp_cell_t *c, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/cells/%s", outdir, c->key);
    return n < 0 || (size_t)n >= len ? FL_ERANGE : 0;
}

int fl_exp_cell_is_done(const char *celldir)
{
    char p[4200];
    return path(p, sizeof p, celldir, "done") == 0 && access(p, F_OK) == 0;
}

/* 1 when a sweep (or the processes it started) holds the cell's lock. A
 * shared lock is tried and given back at once: it fails only against the
 * exclusive one a running cell holds. */
static int lock_held(const char *celldir)
{
    char p[4200];
    if (path(p, sizeof p, celldir, "lock"))
        return 0;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd); /* gives a shared lock back */
    return held;
}

int fl_exp_cell_progress(const char *celldir, long *rounds, char *status, size_t len)
{
    char p[4200];
    *rounds = 0;
    if (len)
        status[0] = 0;
    if (path(p, sizeof p, celldir, "run.db") || access(p, F_OK) != 0)
        return 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(db, 5000);
    /* A database the server created but has no tables yet counts as empty. */
    if (sqlite3_prepare_v2(db,
                           "SELECT r.status, (SELECT count(*) FROM rounds WHERE run_id = r.id)"
                           " FROM runs r ORDER BY r.id DESC LIMIT 1",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = 0;
        goto out;
    }
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        const unsigned char *st = sqlite3_column_text(s, 0);
        if (len)
            snprintf(status, len, "%s", st ? (const char *)st : "");
        if (len && strcmp(status, "running") == 0 && !lock_held(celldir))
            snprintf(status, len, "interrupted");
        *rounds = (long)sqlite3_column_int64(s, 1);
        rc = 0;
    } else if (step == SQLITE_DONE)
        rc = 0;
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc;
}

static int write_file(const char *dir, const char *name, const char *text)
{
    char p[4200], tmp[4300];
    if (path(p, sizeof p, dir, name) || snprintf(tmp, sizeof tmp, "%s.tmp", p) >= (int)sizeof tmp)
        return FL_ERANGE;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return FL_EIO;
    int bad = fputs(text, f) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, p) != 0) {
        unlink(tmp);
        return FL_EIO;
    }
    return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int mkdirs(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
        return FL_ERANGE;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return FL_EIO;
            *p = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? FL_EIO : 0;
}

static void fail(fl_exp_run_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

/* cell.ini: what the cell is, for `report` (values exact, %.17g). */
static int write_cell_ini(const fl_exp_run_t *r)
{
    const fl_exp_grid_t *g = r->g;
    const fl_exp_cell_t *c = r->c;
    char text[4096];
    int n = snprintf(text, sizeof text,
                     "[cell]\nkey = %s\nsetting = %s\ntask = %s\nmodel = %s\nmetric = %s\nrounds = %ld\n"
                     "server_opt = %s\nseed = %llu\n",
                     c->key, c->setting, g->task, g->model, g->metric, g->rounds, c->server_opt,
                     (unsigned long long)c->seed);
    for (int a = 0; a < FL_EXP_NAXES && n > 0 && (size_t)n < sizeof text; a++)
        n += snprintf(text + n, sizeof text - (size_t)n, "%s = %s\n%s_value = %.17g\n", fl_exp_axis_names[a],
                      c->val[a].label, fl_exp_axis_names[a], c->val[a].v);
    if (n < 0 || (size_t)n >= sizeof text)
        return FL_ERANGE;
    return write_file(r->dir, "cell.ini", text);
}

/* fork + exec with stdout/stderr appended to log; only async-signal-safe
 * calls between the two (the parent may have OpenBLAS threads). The child
 * keeps the cell's lock descriptor (cleared close-on-exec), gets deathsig
 * if the sweep dies, and runs in its own process group, so a terminal's
 * Ctrl-C reaches the sweep alone and the children stop by deathsig, in
 * the order the server needs (see start_server). */
static pid_t spawn(char *const argv[], const char *log, int lockfd, int deathsig)
{
    pid_t parent = getpid();
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || nul < 0) {
        if (fd >= 0)
            close(fd);
        if (nul >= 0)
            close(nul);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, deathsig);
        if (getppid() != parent)
            _exit(127);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        fcntl(lockfd, F_SETFD, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd);
    close(nul);
    return pid;
}

typedef struct {
    char *v[96];
    char buf[16384];
    size_t n, used;
} args_t;

static void arg(args_t *a, const char *fmt, ...)
{
    if (a->n + 1 >= sizeof a->v / sizeof a->v[0] || a->used >= sizeof a->buf)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(a->buf + a->used, sizeof a->buf - a->used, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof a->buf - a->used)
        return;
    a->v[a->n++] = a->buf + a->used;
    a->v[a->n] = NULL;
    a->used += (size_t)k + 1;
}

static int args_full(const args_t *a)
{
    return a->n + 1 >= sizeof a->v / sizeof a->v[0] || a->used >= sizeof a->buf - 1;
}

static int start_server(fl_exp_run_t *r)
{
    const fl_exp_grid_t *g = r->g;
    const fl_exp_cell_t *c = r->c;
    static args_t a;
    memset(&a, 0, sizeof a);
    char log[4200];
    path(log, sizeof log, r->dir, "server.log");
    struct stat sb;
    r->log_offset = stat(log, &sb) == 0 ? (long)sb.st_size : 0;
    arg(&a, "%s", r->env->server_bin);
    arg(&a, "run");
    arg(&a, "--listen"), arg(&a, "127.0.0.1:0");
    arg(&a, "--tls_cert"), arg(&a, "%s/pki/server.crt", r->dir);
    arg(&a, "--tls_key"), arg(&a, "%s/pki/server.key", r->dir);
    arg(&a, "--tls_ca"), arg(&a, "%s/pki/ca.crt", r->dir);
    arg(&a, "--db"), arg(&a, "%s/run.db", r->dir);
    arg(&a, "--resume"), arg(&a, "auto");
    arg(&a, "--keep_checkpoints"), arg(&a, "1");
    arg(&a, "--model"), arg(&a, "%s", g->model);
    arg(&a, "--rounds"), arg(&a, "%ld", g->rounds);
    arg(&a, "--clients_per_round"), arg(&a, "%.0f", c->val[FL_EXP_K].v);
    arg(&a, "--min_clients"), arg(&a, "%ld", g->clients);
    arg(&a, "--seed"), arg(&a, "%llu", (unsigned long long)c->seed);
    arg(&a, "--server_opt"), arg(&a, "%s", c->server_opt);
    arg(&a, "--server_lr"), arg(&a, "%.17g", c->val[FL_EXP_SERVER_LR].v);
    arg(&a, "--client_lr"), arg(&a, "%.17g", c->val[FL_EXP_CLIENT_LR].v);
    if (!isnan(c->val[FL_EXP_TAU].v))
        arg(&a, "--tau"), arg(&a, "%.17g", c->val[FL_EXP_TAU].v);
    arg(&a, "--local_epochs"), arg(&a, "%.0f", c->val[FL_EXP_E].v);
    arg(&a, "--batch_size"), arg(&a, "%ld", g->batch_size);
    if (g->eval_data[0]) {
        arg(&a, "--eval_data"), arg(&a, "%s", g->eval_data);
        arg(&a, "--eval_every"), arg(&a, "%ld", g->eval_every);
        arg(&a, "--eval_max_examples"), arg(&a, "%ld", g->eval_max_examples);
    }
    int wait_set = 0;
    for (size_t i = 0; i < g->npass; i++) {
        arg(&a, "--%s", g->pass_name[i]), arg(&a, "%s", g->pass_value[i]);
        wait_set |= strcmp(g->pass_name[i], "wait_timeout") == 0;
    }
    if (!wait_set) /* a fleet that never comes must not hold the sweep forever */
        arg(&a, "--wait_timeout"), arg(&a, "600");
    if (args_full(&a)) {
        fail(r, "the server's command line is too long");
        return FL_ERANGE;
    }
    /* SIGKILL, not SIGTERM: a stopping server still closes a round whose
     * clients all left, and the fleet, stopped by the same death, leaves at
     * that moment; the round would be committed as abandoned and the
     * resumed cell would differ from an uninterrupted one. Killed at once,
     * the server commits nothing more, and --resume redoes the open round
     * from the last checkpoint. The server was forked before its fleet, so
     * the kernel signals it first. */
    r->server = spawn(a.v, log, r->lockfd, SIGKILL);
    if (r->server < 0) {
        fail(r, "cannot start %s: %s", r->env->server_bin, strerror(errno));
        return FL_EIO;
    }
    r->server_status = -1;
    r->state = FL_EXP_CELL_STARTING;
    r->t_state = now();
    return 0;
}

static int start_fleet(fl_exp_run_t *r, int port)
{
    const fl_exp_grid_t *g = r->g;
    static args_t a;
    memset(&a, 0, sizeof a);
    char log[4200];
    path(log, sizeof log, r->dir, "fleet.log");
    arg(&a, "%s", r->env->client_bin);
    arg(&a, "fleet");
    arg(&a, "--server"), arg(&a, "127.0.0.1:%d", port);
    arg(&a, "--server-name"), arg(&a, "localhost");
    arg(&a, "--certs"), arg(&a, "%s/pki", r->dir);
    arg(&a, "--clients"), arg(&a, "%ld", g->clients);
    arg(&a, "--data"), arg(&a, "%s", g->data);
    if (strcmp(g->partition, "dirichlet") == 0)
        arg(&a, "--partition"), arg(&a, "dirichlet:%s", r->c->val[FL_EXP_ALPHA].label);
    else
        arg(&a, "--partition"), arg(&a, "%s", g->partition);
    arg(&a, "--data-seed"), arg(&a, "%ld", g->data_seed);
    arg(&a, "--jobs"), arg(&a, "%ld", g->jobs);
    arg(&a, "--give-up"), arg(&a, "60");
    arg(&a, "--backoff-max"), arg(&a, "2");
    arg(&a, "--progress"), arg(&a, "plain");
    arg(&a, "--seed"), arg(&a, "%llu", (unsigned long long)r->c->seed);
    if (args_full(&a)) {
        fail(r, "the fleet's command line is too long");
        return FL_ERANGE;
    }
    r->fleet = spawn(a.v, log, r->lockfd, SIGTERM);
    if (r->fleet < 0) {
        fail(r, "cannot start %s: %s", r->env->client_bin, strerror(errno));
        return FL_EIO;
    }
    r->fleet_status = -1;
    r->state = FL_EXP_CELL_RUNNING;
    r->t_state = now();
    return 0;
}

/* The cell is locked: finished already (say so), or certificates, then the server. */
static int locked(fl_exp_run_t *r)
{
    char status[32], p[4200];
    long rounds;
    if (fl_exp_cell_is_done(r->dir)) {
        r->state = FL_EXP_CELL_OVER;
        r->ok = 1;
        fail(r, "done already");
        return 0;
    }
    if (fl_exp_cell_progress(r->dir, &rounds, status, sizeof status)) {
        fail(r, "%s/run.db cannot be read", r->dir);
        return FL_EDB;
    }
    if (strcmp(status, "finished") == 0 && rounds == r->g->rounds) {
        /* Killed between the server's end and `done`. */
        char text[64];
        snprintf(text, sizeof text, "rounds=%ld\n", rounds);
        r->state = FL_EXP_CELL_OVER;
        r->ok = write_file(r->dir, "done", text) == 0;
        fail(r, r->ok ? "done already" : "cannot write %s/done", r->dir);
        return 0;
    }
    r->resumed_from = rounds;
    r->resuming = status[0] != 0; /* a run exists: --resume auto continues it */
    if (path(p, sizeof p, r->dir, "pki/server.crt") || access(p, F_OK) != 0) {
        /* A half-made PKI (a sweep killed in certs init) is made again. */
        path(p, sizeof p, r->dir, "pki");
        nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        int rc = fl_certs_init(p, "localhost");
        if (rc) {
            fail(r, "certificates in %s: %s", p, fl_strerror(rc));
            return rc;
        }
    }
    return start_server(r);
}

int fl_exp_run_start(fl_exp_run_t *r, const fl_exp_grid_t *g, const fl_exp_cell_t *c, const char *outdir,
                     const fl_exp_env_t *env)
{
    memset(r, 0, sizeof *r);
    r->g = g;
    r->c = c;
    r->env = env;
    r->lockfd = -1;
    r->server = r->fleet = -1;
    r->server_status = r->fleet_status = -1;
    r->t0 = r->t_state = now();
    int rc;
    char p[4200];
    if ((rc = fl_exp_cell_dir(outdir, c, r->dir, sizeof r->dir)) || (rc = path(p, sizeof p, r->dir, "lock"))) {
        fail(r, "directory name too long");
        return rc;
    }
    if (mkdirs(r->dir)) {
        fail(r, "cannot create %s: %s", r->dir, strerror(errno));
        return FL_EIO;
    }
    if ((rc = write_cell_ini(r))) {
        fail(r, "cannot write %s/cell.ini", r->dir);
        return rc;
    }
    r->lockfd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (r->lockfd < 0) {
        fail(r, "cannot open %s: %s", p, strerror(errno));
        return FL_EIO;
    }
    if (flock(r->lockfd, LOCK_EX | LOCK_NB) != 0) {
        r->state = FL_EXP_CELL_LOCKING;
        return 0;
    }
    return locked(r);
}

int fl_exp_run_reaped(fl_exp_run_t *r, pid_t pid, int status)
{
    if (pid <= 0)
        return 0;
    if (pid == r->server) {
        r->server_status = status;
        r->server = -1;
        return 1;
    }
    if (pid == r->fleet) {
        r->fleet_status = status;
        r->fleet = -1;
        return 1;
    }
    return 0;
}

static void release(fl_exp_run_t *r)
{
    if (r->lockfd >= 0)
        close(r->lockfd);
    r->lockfd = -1;
}

/* Both processes are gone: the database says whether the cell is finished. */
static void conclude(fl_exp_run_t *r)
{
    char status[32], text[128];
    long rounds = 0;
    r->state = FL_EXP_CELL_OVER;
    int rc = fl_exp_cell_progress(r->dir, &rounds, status, sizeof status);
    if (rc == 0 && strcmp(status, "finished") == 0 && rounds == r->g->rounds) {
        snprintf(text, sizeof text, "rounds=%ld\nresumed_from=%ld\nseconds=%.3f\n", rounds, r->resumed_from,
                 now() - r->t0);
        r->ok = write_file(r->dir, "done", text) == 0;
        if (r->ok)
            fail(r, "finished %ld rounds in %.1f s%s", rounds - r->resumed_from, now() - r->t0,
                 r->resuming ? " (resumed)" : "");
        else
            fail(r, "cannot write %s/done", r->dir);
    } else if (!r->why[0])
        fail(r, "the run is '%s' after %ld of %ld rounds (see %s/server.log)", status, rounds, r->g->rounds, r->dir);
    release(r);
}

/* The port from the server's "listening on HOST port N" line, or 0. */
static int read_port(fl_exp_run_t *r)
{
    char p[4200], line[1024];
    path(p, sizeof p, r->dir, "server.log");
    FILE *f = fopen(p, "r");
    int port = 0;
    if (!f)
        return 0;
    if (fseek(f, r->log_offset, SEEK_SET) == 0)
        while (!port && fgets(line, sizeof line, f)) {
            const char *s = strstr(line, "listening on ");
            const char *q = s ? strstr(s, " port ") : NULL;
            if (q)
                port = atoi(q + 6);
        }
    fclose(f);
    return port > 0 && port < 65536 ? port : 0;
}

int fl_exp_run_poll(fl_exp_run_t *r)
{
    switch (r->state) {
    case FL_EXP_CELL_IDLE:
    case FL_EXP_CELL_OVER:
        return 1;
    case FL_EXP_CELL_LOCKING:
        if (flock(r->lockfd, LOCK_EX | LOCK_NB) == 0) {
            if (locked(r)) {
                r->state = FL_EXP_CELL_OVER;
                release(r);
                return 1;
            }
            return r->state == FL_EXP_CELL_OVER ? (release(r), 1) : 0;
        }
        if (now() - r->t_state > LOCK_WAIT) {
            fail(r, "%s/lock is held by other processes (another sweep on this directory?)", r->dir);
            r->state = FL_EXP_CELL_OVER;
            release(r);
            return 1;
        }
        return 0;
    case FL_EXP_CELL_STARTING: {
        int port = r->server < 0 ? 0 : read_port(r);
        if (port) {
            if (start_fleet(r, port)) {
                kill(r->server, SIGTERM);
                r->state = FL_EXP_CELL_RUNNING; /* waits for the server, then fails */
            }
            return 0;
        }
        if (r->server < 0) {
            fail(r, "the server exited before listening (see %s/server.log)", r->dir);
            conclude(r);
            return 1;
        }
        if (now() - r->t_state > r->env->start_timeout) {
            fail(r, "the server did not listen within %.0f s (see %s/server.log)", r->env->start_timeout, r->dir);
            kill(r->server, SIGTERM);
            r->state = FL_EXP_CELL_RUNNING;
        }
        return 0;
    }
    case FL_EXP_CELL_RUNNING:
        if (r->server >= 0 && r->fleet < 0) {
            /* The fleet ends by itself once the server says the run is
             * over; a server still there a minute later waits for clients
             * that are gone: stop it (the next sweep resumes the run). */
            if (r->t_fleet_gone == 0)
                r->t_fleet_gone = now();
            else if (now() - r->t_fleet_gone > 60 && !r->stop_sent) {
                if (!r->why[0])
                    fail(r, "the fleet exited while the server ran (see %s/fleet.log)", r->dir);
                kill(r->server, SIGTERM);
                r->stop_sent = 1;
            }
        }
        if (r->server < 0 && r->fleet >= 0) {
            /* The run is over; the fleet may still be saying goodbye. */
            if (r->t_server_gone == 0) {
                kill(r->fleet, SIGTERM);
                r->t_server_gone = now();
            } else if (now() - r->t_server_gone > FLEET_GRACE)
                kill(r->fleet, SIGKILL);
        }
        if (r->server < 0 && r->fleet < 0) {
            conclude(r);
            return 1;
        }
        return 0;
    }
    return 1;
}

void fl_exp_run_abort(fl_exp_run_t *r)
{
    if (r->server > 0)
        kill(r->server, SIGTERM);
    if (r->fleet > 0)
        kill(r->fleet, SIGTERM);
    release(r);
}
