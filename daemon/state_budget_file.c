/* state_budget_file: keeps the memory backend's budget spend across restarts in DIR/budget.json
 * (jobs.dir). Loaded at start; after a change a helper thread rewrites it (temp file, fsync,
 * rename) at most once a second, and state_free writes it a last time, so a crash loses at most
 * the last second of spend and a clean stop loses nothing. No loop ever touches the disk. */
#include "daemon/state_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/jobs_journal.h"

#define BUDGET_FILE "budget.json"

#define SAVE_EVERY_S 1

struct state_saver {
    struct state *st;
    char *dir, *path;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                          /* under mu */
    int started;                        /* atomic: the thread was created */
    uint64_t gen;                       /* atomic: changes so far */
    uint64_t saved;                     /* the thread's: gen at the last write */
    bool warned;                        /* a failed write was logged (once until it works) */
};

/* The account's window as JSON; NULL when it never had one (only peeked at). */
static json_t *acct_json(struct state_acct *a)
{
    json_t *models = json_object(), *o = NULL;
    pthread_mutex_lock(&a->mu);
    if (a->window < 0)
        goto out;
    o = json_pack("{s:s, s:s, s:I, s:I}", "name", a->name,
                  "window_kind", conf_budget_window_names[a->wkind],
                  "window", (json_int_t)a->window, "spent", (json_int_t)a->spent);
    for (struct acct_model *m = a->models; m; m = m->next)
        json_object_set_new(models, m->name, json_integer(m->spent));
out:
    pthread_mutex_unlock(&a->mu);
    if (o)
        json_object_set_new(o, "models", models);
    else
        json_decref(models);
    return o;
}

static int save(struct state_saver *sv)
{
    json_t *list = json_array();
    for (size_t i = 0; i < STATE_BUCKETS; i++)
        for (struct state_acct *a = __atomic_load_n(&sv->st->accts[i], __ATOMIC_ACQUIRE); a;
             a = a->next)
            json_array_append_new(list, acct_json(a));     /* NULL: nothing appended */
    json_t *doc = json_pack("{s:i, s:o}", "version", 1, "accounts", list);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char err[512] = "out of memory";
    mkdir(sv->dir, 0700);               /* as the journal: created on first use */
    int rc = text ? journal_write_file(sv->dir, BUDGET_FILE, text, strlen(text), err,
                                       sizeof err) : -1;
    if (rc < 0 && !sv->warned)
        log_warn("budgets: %s (spend is kept in memory; retrying)", err);
    sv->warned = rc < 0;
    free(text);
    return rc;
}

static void *saver_main(void *arg)
{
    struct state_saver *sv = arg;
    pthread_mutex_lock(&sv->mu);
    while (!sv->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += SAVE_EVERY_S;
        pthread_cond_timedwait(&sv->cv, &sv->mu, &ts);
        uint64_t gen = __atomic_load_n(&sv->gen, __ATOMIC_ACQUIRE);
        if (sv->stop || gen == sv->saved)
            continue;
        pthread_mutex_unlock(&sv->mu);
        if (save(sv) == 0)
            sv->saved = gen;
        pthread_mutex_lock(&sv->mu);
    }
    pthread_mutex_unlock(&sv->mu);
    return NULL;
}

static void load_acct(struct state *st, json_t *o)
{
    const char *name, *kind;
    json_int_t window, spent;
    json_t *models = NULL;
    if (json_unpack(o, "{s:s, s:s, s:I, s:I, s?o}", "name", &name, "window_kind", &kind,
                    "window", &window, "spent", &spent, "models", &models) < 0 ||
        strlen(name) < 3 || name[1] != ':' || (name[0] != 'k' && name[0] != 'm'))
        return;
    int w = 0;
    while (w < CONF_BUDGET_WINDOWS && strcmp(conf_budget_window_names[w], kind))
        w++;
    struct state_acct *a = state_acct_get(st, name[0] == 'k' ? BUDGET_OF_KEY : BUDGET_OF_MODEL,
                                          name + 2);
    if (w == 4 || !a)
        return;
    a->wkind = (enum conf_budget_window)w;
    a->window = window;
    a->spent = spent;
    const char *m;
    json_t *v;
    json_object_foreach(models, m, v)
        if (json_is_integer(v))
            state_acct_add_model(a, m, json_integer_value(v));
}

static void load(struct state_saver *sv)
{
    json_error_t e;
    json_t *doc = json_load_file(sv->path, 0, &e), *list = json_object_get(doc, "accounts");
    if (!doc) {
        if (access(sv->path, F_OK) == 0)
            log_warn("budgets: %s is unreadable (%s): spend starts from zero", sv->path,
                     e.text);
        return;
    }
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
        load_acct(sv->st, o);
    json_decref(doc);
}

void state_saver_start(struct state *st, const char *dir)
{
    struct state_saver *sv = calloc(1, sizeof *sv);
    if (!sv)
        return;
    sv->st = st;
    sv->dir = strdup(dir);
    size_t n = strlen(dir) + sizeof "/" BUDGET_FILE;
    if (!sv->dir || !(sv->path = malloc(n)) || n > 4096) {
        free(sv->dir);
        free(sv->path);
        free(sv);
        return;
    }
    snprintf(sv->path, n, "%s/" BUDGET_FILE, dir);
    pthread_mutex_init(&sv->mu, NULL);
    pthread_cond_init(&sv->cv, NULL);
    load(sv);
    st->saver = sv;
}

/* A settle changed spend. The thread starts with the first change: a gateway without budgets
 * runs no thread and writes no file. */
void state_saver_touch(struct state *st)
{
    struct state_saver *sv = st->saver;
    if (!sv)
        return;
    __atomic_add_fetch(&sv->gen, 1, __ATOMIC_RELEASE);
    int no = 0;
    if (__atomic_load_n(&sv->started, __ATOMIC_ACQUIRE) ||
        !__atomic_compare_exchange_n(&sv->started, &no, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    if (pthread_create(&sv->thread, NULL, saver_main, sv) != 0) {
        __atomic_store_n(&sv->started, 0, __ATOMIC_RELEASE);
        log_warn("budgets: cannot start the thread that saves spend: %s", strerror(errno));
    }
}

void state_saver_stop(struct state *st)
{
    struct state_saver *sv = st->saver;
    if (!sv)
        return;
    if (__atomic_load_n(&sv->started, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&sv->mu);
        sv->stop = true;
        pthread_cond_signal(&sv->cv);
        pthread_mutex_unlock(&sv->mu);
        pthread_join(sv->thread, NULL);
    }
    if (__atomic_load_n(&sv->gen, __ATOMIC_ACQUIRE) != sv->saved)
        save(sv);                       /* at exit, after the workers: the last settles */
    pthread_cond_destroy(&sv->cv);
    pthread_mutex_destroy(&sv->mu);
    free(sv->dir);
    free(sv->path);
    free(sv);
    st->saver = NULL;
}
