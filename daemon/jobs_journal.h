/* jobs_journal: the jobs' append-only journal file. Records are framed (length + CRC32) so a
 * torn write is detectable; one helper thread writes queued records and fsyncs once per batch
 * (group commit); replay skips a torn tail; compaction rewrites the live state and renames. */
#ifndef LLMUX_JOBS_JOURNAL_H
#define LLMUX_JOBS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define JOURNAL_FILE "jobs.journal"
#define JOURNAL_HEADER 8                    /* u32 length, u32 CRC32, little-endian */
#define JOURNAL_MAX_RECORD (1u << 30)

struct journal;

/* Called on the journal thread once the record is durable (err 0) or could not be written
 * (err = errno; nothing of it is left in the file). */
typedef void (*journal_done_fn)(void *ctx, int err);
/* Replay: one record's payload; return -1 to stop. */
typedef int (*journal_record_fn)(void *ctx, const char *p, size_t n);

struct journal_hooks {
    void *ctx;
    /* Appends the framed records of the whole live state (compaction). 0 or -1. */
    int (*snapshot)(void *ctx, struct buf *out);
    /* Runs about once a second on the journal thread (retention, expiry). */
    void (*tick)(void *ctx);
};

/* Appends one framed record (header + payload) to out. */
int journal_frame(struct buf *out, const char *p, size_t n);
uint32_t journal_crc32(const char *p, size_t n);

/* Reads dir/JOURNAL_FILE and calls cb per intact record, in order. A torn or corrupt tail is
 * skipped and logged (*skipped = bytes dropped). A missing file is an empty journal.
 * -1 only when the file exists and cannot be read (err filled). */
int journal_replay(const char *dir, journal_record_fn cb, void *ctx, size_t *skipped,
                   char *err, size_t errlen);
/* Replaces dir/name by len bytes of data, mode 0600: written to name.tmp, fsynced, renamed
 * over it and the directory fsynced, so the file is the old one or the new one, never torn.
 * Also the budgets' snapshot file (state_budget_file.c), which lives in the same directory. */
int journal_write_file(const char *dir, const char *name, const char *data, size_t len,
                       char *err, size_t errlen);
/* Replaces dir/JOURNAL_FILE by framed. */
int journal_rewrite(const char *dir, const struct buf *framed, char *err, size_t errlen);

/* Starts the writer thread. The file is opened (and dir created) on first need, so an
 * unwritable dir fails each batch with a clear error instead of refusing to start. */
struct journal *journal_start(const char *dir, const struct journal_hooks *hooks);
/* Queues a framed record (taken over, freed by the journal); done may be NULL. */
void journal_append(struct journal *j, char *framed, size_t len, journal_done_fn done,
                    void *ctx);
/* Asks for a compaction before the next batch. */
void journal_compact_soon(struct journal *j);
/* The last write error as a sentence ("" when none). Thread-safe copy into out. */
void journal_last_error(struct journal *j, char *out, size_t outlen);
/* Batches written (one fdatasync each) and records in them, since start. */
void journal_counts(struct journal *j, uint64_t *syncs, uint64_t *records);
/* Writes what is queued, stops and joins the thread, closes the file. */
void journal_stop(struct journal *j);

#endif
