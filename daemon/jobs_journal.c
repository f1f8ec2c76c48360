/* jobs_journal: framing, replay and rewrite of the jobs journal, and its writer thread, which
 * batches whatever was queued while the previous fsync ran into one write + one fdatasync. */
#include "daemon/jobs_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "common/log.h"

#define BATCH_IOV 512

struct jrec {
    struct jrec *next;
    char *data;
    size_t len;
    journal_done_fn done;
    void *ctx;
};

struct journal {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct jrec *head, **tail;
    bool stop, compact;
    int fd;                     /* -1 until opened */
    off_t size;
    char *dir, *path;
    struct journal_hooks hooks;
    char error[256];            /* guarded by mu */
    uint64_t syncs, records;    /* atomic */
};

uint32_t journal_crc32(const char *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) {                 /* zlib takes uInt lengths */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, (const Bytef *)p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int journal_frame(struct buf *out, const char *p, size_t n)
{
    unsigned char h[JOURNAL_HEADER];
    if (n > JOURNAL_MAX_RECORD || buf_reserve(out, JOURNAL_HEADER + n) < 0)
        return -1;
    put_u32(h, (uint32_t)n);
    put_u32(h + 4, journal_crc32(p, n));
    buf_append(out, h, sizeof h);
    buf_append(out, p, n);
    return 0;
}

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int read_all(const char *path, struct buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;    /* no journal to lose */
    char chunk[65536];
    ssize_t k;
    while ((k = read(fd, chunk, sizeof chunk)) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 || buf_append(out, chunk, (size_t)k) < 0) {
            int e = k < 0 ? errno : ENOMEM;
            close(fd);
            errno = e;
            return -1;
        }
    }
    close(fd);
    return 0;
}

int journal_replay(const char *dir, journal_record_fn cb, void *ctx, size_t *skipped,
                   char *err, size_t errlen)
{
    struct buf file = BUF_INIT;
    char *path = join_path(dir, JOURNAL_FILE);
    int rc = -1;
    *skipped = 0;
    if (!path || read_all(path, &file) < 0) {
        snprintf(err, errlen, "jobs.dir %s: cannot read %s: %s", dir, JOURNAL_FILE,
                 strerror(errno));
        goto out;
    }
    const unsigned char *p = (const unsigned char *)file.data;
    size_t off = 0;
    while (off < file.len) {
        size_t left = file.len - off;
        uint32_t n = left >= JOURNAL_HEADER ? get_u32(p + off) : 0;
        if (left < JOURNAL_HEADER || n > left - JOURNAL_HEADER ||
            get_u32(p + off + 4) != journal_crc32(file.data + off + JOURNAL_HEADER, n)) {
            *skipped = left;
            log_warn("jobs journal %s: %zu byte(s) at offset %zu are a torn or corrupt "
                     "record; skipped (a crash during a write leaves this)", path, left, off);
            break;
        }
        if (cb(ctx, file.data + off + JOURNAL_HEADER, n) < 0)
            break;
        off += JOURNAL_HEADER + n;
    }
    rc = 0;
out:
    buf_free(&file);
    free(path);
    return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int journal_write_file(const char *dir, const char *name, const char *data, size_t len,
                       char *err, size_t errlen)
{
    char tmpname[256];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", name);
    char *tmp = join_path(dir, tmpname), *path = join_path(dir, name);
    int fd = -1, rc = -1;
    if (!tmp || !path) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, data, len) < 0 || fsync(fd) < 0 ||
        rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            unlink(tmp);
        goto out;
    }
    if (sync_dir(dir) < 0) {
        snprintf(err, errlen, "cannot sync %s: %s", dir, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(tmp);
    free(path);
    return rc;
}

int journal_rewrite(const char *dir, const struct buf *framed, char *err, size_t errlen)
{
    return journal_write_file(dir, JOURNAL_FILE, framed->data, framed->len, err, errlen);
}

/* "jobs.dir DIR WHAT: REASON" — the sentence a 503 carries. */
static void set_error(struct journal *j, const char *what, int e)
{
    pthread_mutex_lock(&j->mu);
    snprintf(j->error, sizeof j->error, "jobs.dir %s %s: %s", j->dir, what, strerror(e));
    pthread_mutex_unlock(&j->mu);
}

static int ensure_open(struct journal *j)
{
    if (j->fd >= 0)
        return 0;
    if (mkdir(j->dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        set_error(j, "cannot be created", e);
        return e;
    }
    j->fd = open(j->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (j->fd < 0) {
        int e = errno;
        set_error(j, "is not writable", e);
        return e;
    }
    struct stat st;
    j->size = fstat(j->fd, &st) == 0 ? st.st_size : 0;
    return 0;
}

/* One write (or a few, past BATCH_IOV records) and one fdatasync for the whole batch. On any
 * failure the file is cut back to where the batch began: nothing half-written stays. */
static int write_batch(struct journal *j, struct jrec *list)
{
    int e = ensure_open(j);
    if (e)
        return e;
    struct iovec iov[BATCH_IOV];
    size_t total = 0;
    for (struct jrec *r = list; r;) {
        int n = 0;
        size_t bytes = 0;
        for (; r && n < BATCH_IOV; r = r->next, n++) {
            iov[n].iov_base = r->data;
            iov[n].iov_len = r->len;
            bytes += r->len;
        }
        for (int i = 0; bytes > 0;) {
            ssize_t k = writev(j->fd, iov + i, n - i);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0)
                goto fail;
            bytes -= (size_t)k;
            total += (size_t)k;
            while (i < n && (size_t)k >= iov[i].iov_len)
                k -= (ssize_t)iov[i++].iov_len;
            if (i < n) {
                iov[i].iov_base = (char *)iov[i].iov_base + k;
                iov[i].iov_len -= (size_t)k;
            }
        }
    }
    if (fdatasync(j->fd) < 0)
        goto fail;
    __atomic_add_fetch(&j->syncs, 1, __ATOMIC_RELAXED);
    for (struct jrec *r = list; r; r = r->next)
        __atomic_add_fetch(&j->records, 1, __ATOMIC_RELAXED);
    j->size += (off_t)total;
    pthread_mutex_lock(&j->mu);
    j->error[0] = '\0';
    pthread_mutex_unlock(&j->mu);
    return 0;
fail:
    e = errno;
    set_error(j, "cannot take the journal write", e);
    if (ftruncate(j->fd, j->size) < 0)
        log_error("jobs journal: cannot cut back a failed write: %s", strerror(errno));
    return e;
}

static void compact(struct journal *j)
{
    struct buf all = BUF_INIT;
    char err[300];
    if (ensure_open(j) != 0)
        return;
    if (j->hooks.snapshot(j->hooks.ctx, &all) < 0) {
        log_error("jobs journal: out of memory while compacting; the journal stays as it is");
    } else if (journal_rewrite(j->dir, &all, err, sizeof err) < 0) {
        log_error("jobs journal: compaction failed, the journal stays as it is: %s", err);
    } else {
        close(j->fd);
        j->fd = -1;
        ensure_open(j);
        log_debug("jobs journal compacted to %zu byte(s)", all.len);
    }
    buf_free(&all);
}

static void finish(struct jrec *list, int err)
{
    for (struct jrec *r = list, *next; r; r = next) {
        next = r->next;
        if (r->done)
            r->done(r->ctx, err);
        free(r->data);
        free(r);
    }
}

static void *journal_main(void *arg)
{
    struct journal *j = arg;
    time_t last_tick = 0;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!j->stop && !j->head && !j->compact && time(NULL) == last_tick) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&j->cv, &j->mu, &until);
        }
        struct jrec *list = j->head;
        j->head = NULL;
        j->tail = &j->head;
        bool stop = j->stop, want_compact = j->compact;
        j->compact = false;
        pthread_mutex_unlock(&j->mu);
        if (time(NULL) != last_tick && !stop) {
            last_tick = time(NULL);
            j->hooks.tick(j->hooks.ctx);
        }
        if (want_compact)
            compact(j);
        if (list)
            finish(list, write_batch(j, list));
        if (stop && !list)
            return NULL;
    }
}

struct journal *journal_start(const char *dir, const struct journal_hooks *hooks)
{
    struct journal *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->fd = -1;
    j->tail = &j->head;
    j->hooks = *hooks;
    j->dir = strdup(dir);
    j->path = join_path(dir, JOURNAL_FILE);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (!j->dir || !j->path || pthread_create(&j->thread, NULL, journal_main, j) != 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j->dir);
        free(j->path);
        free(j);
        return NULL;
    }
    return j;
}

void journal_append(struct journal *j, char *framed, size_t len, journal_done_fn done,
                    void *ctx)
{
    struct jrec *r = malloc(sizeof *r);
    if (!r) {
        free(framed);
        if (done)
            done(ctx, ENOMEM);
        return;
    }
    *r = (struct jrec){NULL, framed, len, done, ctx};
    pthread_mutex_lock(&j->mu);
    *j->tail = r;
    j->tail = &r->next;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void journal_compact_soon(struct journal *j)
{
    pthread_mutex_lock(&j->mu);
    j->compact = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void journal_last_error(struct journal *j, char *out, size_t outlen)
{
    pthread_mutex_lock(&j->mu);
    snprintf(out, outlen, "%s", j->error);
    pthread_mutex_unlock(&j->mu);
}

void journal_counts(struct journal *j, uint64_t *syncs, uint64_t *records)
{
    *syncs = __atomic_load_n(&j->syncs, __ATOMIC_RELAXED);
    *records = __atomic_load_n(&j->records, __ATOMIC_RELAXED);
}

void journal_stop(struct journal *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    if (j->fd >= 0)
        close(j->fd);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->dir);
    free(j->path);
    free(j);
}
