/* Unit tests for the jobs journal and store: framing and replay (a torn or corrupt tail is
 * skipped, never fatal), group commit on the writer thread, failed writes leave nothing,
 * records round-trip, and opening a store compacts superseded records and a torn tail away. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/jobs_journal.h"
#include "daemon/jobs_record.h"
#include "daemon/jobs_store.h"

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/llmux-journal-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const struct buf *b, const char *extra, size_t extra_len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, JOURNAL_FILE);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b->data, 1, b->len, f), b->len);
    if (extra_len)
        assert_int_equal(fwrite(extra, 1, extra_len, f), extra_len);
    fclose(f);
}

struct seen {
    int n;
    char texts[8][64];
};

static int on_record(void *ctx, const char *p, size_t n)
{
    struct seen *s = ctx;
    snprintf(s->texts[s->n++ % 8], 64, "%.*s", (int)n, p);
    return 0;
}

static void test_replay_in_order(void **state)
{
    struct buf b = BUF_INIT;
    journal_frame(&b, "one", 3);
    journal_frame(&b, "two", 3);
    journal_frame(&b, "", 0);
    write_file(&b, NULL, 0);
    struct seen s = {0};
    size_t skipped = 1;
    char err[128];
    assert_int_equal(journal_replay(dir, on_record, &s, &skipped, err, sizeof err), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.texts[0], "one");
    assert_string_equal(s.texts[1], "two");
    assert_string_equal(s.texts[2], "");
    assert_int_equal(skipped, 0);
    buf_free(&b);
}

static void test_missing_file_is_empty(void **state)
{
    struct seen s = {0};
    size_t skipped;
    char err[128];
    assert_int_equal(journal_replay(dir, on_record, &s, &skipped, err, sizeof err), 0);
    assert_int_equal(s.n, 0);
}

static void test_torn_tail_is_skipped(void **state)
{
    struct buf b = BUF_INIT, last = BUF_INIT;
    journal_frame(&b, "kept", 4);
    journal_frame(&last, "a record cut short by a crash", 29);
    write_file(&b, last.data, last.len - 5);       /* the tail of the last write is missing */
    struct seen s = {0};
    size_t skipped = 0;
    char err[128];
    assert_int_equal(journal_replay(dir, on_record, &s, &skipped, err, sizeof err), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.texts[0], "kept");
    assert_int_equal(skipped, last.len - 5);
    write_file(&b, "\x10\x00", 2);                  /* even the header is torn */
    s.n = 0;
    assert_int_equal(journal_replay(dir, on_record, &s, &skipped, err, sizeof err), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(skipped, 2);
    buf_free(&b);
    buf_free(&last);
}

static void test_corrupt_record_stops_replay(void **state)
{
    struct buf b = BUF_INIT;
    journal_frame(&b, "first", 5);
    size_t second = b.len;
    journal_frame(&b, "second", 6);
    journal_frame(&b, "third", 5);
    b.data[second + JOURNAL_HEADER + 1] ^= 0x20;   /* a flipped bit fails the CRC */
    write_file(&b, NULL, 0);
    struct seen s = {0};
    size_t skipped;
    char err[128];
    assert_int_equal(journal_replay(dir, on_record, &s, &skipped, err, sizeof err), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(skipped, b.len - second);
    buf_free(&b);
}

static int no_snapshot(void *ctx, struct buf *out) { return 0; }
static void no_tick(void *ctx) {}

struct done_count {
    int ok, failed, last_err;
};

static void on_done(void *ctx, int err)
{
    struct done_count *d = ctx;
    if (err) {
        d->failed++;
        d->last_err = err;
    } else {
        d->ok++;
    }
}

static void append_text(struct journal *j, const char *text, struct done_count *d)
{
    struct buf b = BUF_INIT;
    journal_frame(&b, text, strlen(text));
    size_t len = b.len;
    journal_append(j, buf_steal(&b), len, on_done, d);
}

static void test_writer_thread_commits_batches(void **state)
{
    struct journal_hooks hooks = {NULL, no_snapshot, no_tick};
    struct journal *j = journal_start(dir, &hooks);
    struct done_count d = {0};
    assert_non_null(j);
    for (int i = 0; i < 1000; i++)
        append_text(j, "record", &d);
    uint64_t syncs = 0, records = 0;
    for (int i = 0; i < 5000 && records < 1000; i++) {
        usleep(1000);
        journal_counts(j, &syncs, &records);
    }
    assert_int_equal(records, 1000);
    assert_true(syncs < 1000);      /* group commit: records queued meanwhile share a sync */
    journal_stop(j);
    assert_int_equal(d.ok, 1000);
    assert_int_equal(d.failed, 0);
    struct seen s = {0};
    size_t skipped;
    char err[128];
    assert_int_equal(journal_replay(dir, on_record, &s, &skipped, err, sizeof err), 0);
    assert_int_equal(s.n, 1000);
    assert_int_equal(skipped, 0);
}

static void test_unwritable_dir_fails_each_record(void **state)
{
    char file[96], bad[128];
    snprintf(file, sizeof file, "%s/plain-file", dir);
    close(open(file, O_WRONLY | O_CREAT, 0600));
    snprintf(bad, sizeof bad, "%s/jobs", file);     /* a directory under a file: ENOTDIR */
    struct journal_hooks hooks = {NULL, no_snapshot, no_tick};
    struct journal *j = journal_start(bad, &hooks);
    struct done_count d = {0};
    append_text(j, "lost", &d);
    append_text(j, "lost too", &d);
    journal_stop(j);
    assert_int_equal(d.ok, 0);
    assert_int_equal(d.failed, 2);
    j = journal_start(bad, &hooks);
    append_text(j, "again", &d);
    journal_stop(j);
    assert_int_equal(d.failed, 3);
}

static void test_record_round_trip(void **state)
{
    struct job j = {0};
    memcpy(j.id, "job_0123456789abcdefghijklmn", JOB_ID_LEN + 1);
    j.key = "team \"a\"";
    j.kind = JOB_GATHER;
    j.status = JOB_SUCCEEDED;
    j.created_ms = 1700000000123;
    j.started_ms = 1700000000200;
    j.completed_ms = 1700000000999;
    j.timeout_ms = 5000;
    j.input = "{\"requests\":[{\"model\":\"m\"}]}";
    j.input_len = strlen(j.input);
    j.output = "{\"object\":\"gather.result\"}";
    j.output_len = strlen(j.output);
    struct buf b = BUF_INIT;
    assert_int_equal(job_record_encode(&j, &b), 0);
    struct job *d = job_record_decode(b.data + JOURNAL_HEADER, b.len - JOURNAL_HEADER);
    assert_non_null(d);
    assert_string_equal(d->id, j.id);
    assert_string_equal(d->key, j.key);
    assert_int_equal(d->kind, JOB_GATHER);
    assert_int_equal(d->status, JOB_SUCCEEDED);
    assert_int_equal(d->created_ms, j.created_ms);
    assert_int_equal(d->completed_ms, j.completed_ms);
    assert_int_equal(d->timeout_ms, 5000);
    assert_string_equal(d->input, j.input);
    assert_string_equal(d->output, j.output);
    assert_null(job_record_decode("{\"id\":\"short\"}", 15));
    assert_null(job_record_decode("not json", 8));
    job_free(d);
    buf_free(&b);
}

static void frame_job(struct buf *b, const char *id, enum job_status st, int64_t completed)
{
    struct job j = {0};
    snprintf(j.id, sizeof j.id, "%s", id);
    j.status = st;
    j.created_ms = 1000;
    j.completed_ms = completed;
    j.input = "{\"model\":\"m\",\"messages\":[]}";
    j.input_len = strlen(j.input);
    job_record_encode(&j, b);
}

static void on_wake(void *ctx, unsigned worker) {}

/* Three records of one job, one finished long ago, one queued, and a torn tail: opening the
 * store keeps the latest state of the live jobs only and rewrites the file without the rest. */
static void test_open_compacts(void **state)
{
    const char *a = "job_aaaaaaaaaaaaaaaaaaaaaaaa", *b = "job_bbbbbbbbbbbbbbbbbbbbbbbb";
    const char *old = "job_oooooooooooooooooooooooo";
    struct buf f = BUF_INIT;
    int64_t now = (int64_t)time(NULL) * 1000;
    frame_job(&f, a, JOB_QUEUED, 0);
    frame_job(&f, a, JOB_RUNNING, 0);
    frame_job(&f, old, JOB_SUCCEEDED, 5000);        /* long past retention */
    frame_job(&f, a, JOB_SUCCEEDED, now);
    frame_job(&f, b, JOB_RUNNING, 0);               /* was running at the crash */
    write_file(&f, "\x40\x00\x00\x00torn", 8);
    struct conf c;
    memset(&c, 0, sizeof c);
    c.jobs.dir = dir;
    c.jobs.workers = 1;
    c.jobs.max_queued = 10;
    c.jobs.retention_ms = 3600 * 1000;
    c.jobs.max_result_bytes = 1 << 20;
    char err[256];
    struct jobs_store *s = jobs_store_open(&c, 1, on_wake, NULL, err, sizeof err);
    assert_non_null(s);
    struct buf out = BUF_INIT;
    assert_int_equal(jobs_store_get(s, NULL, a, &out), JOBS_OK);
    assert_non_null(strstr(out.data, "\"status\":\"succeeded\""));
    buf_reset(&out);
    assert_int_equal(jobs_store_get(s, NULL, b, &out), JOBS_OK);
    assert_non_null(strstr(out.data, "\"status\":\"queued\""));     /* runs again */
    assert_int_equal(jobs_store_get(s, NULL, old, &out), JOBS_NOT_FOUND);
    assert_int_equal(jobs_store_get(s, "other-key", a, &out), JOBS_NOT_FOUND);
    jobs_store_close(s);
    struct seen seen = {0};
    size_t skipped = 1;
    assert_int_equal(journal_replay(dir, on_record, &seen, &skipped, err, sizeof err), 0);
    assert_int_equal(seen.n, 2);        /* one record per live job, nothing torn */
    assert_int_equal(skipped, 0);
    buf_free(&out);
    buf_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replay_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record_stops_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_thread_commits_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_dir_fails_each_record, setup, teardown),
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test_setup_teardown(test_open_compacts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
