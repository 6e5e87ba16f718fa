/* ckptctl pull: one whole pull backup from the command line.
 *
 *   backup-begin -> per disk: claim the new file, nbdx_pull_copy from
 *   the export into it (the engine writes the qcow2 itself) -> backup-end
 *
 * backup-end runs on every path after a successful begin (error, SIGINT,
 * SIGTERM), because a job left behind pins the exports, the scratch files
 * and the disks (a second backup of them would get Busy).  A pull that
 * does not finish removes the files it created, so a directory never
 * holds a backup that looks complete but is not.
 */
#include "ckptctl/ckptctl.h"
#include "nbd/pull.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { OPT_OUTPUT = 256, OPT_INCREMENTAL, OPT_CHECKPOINT, OPT_DISK,
       OPT_REQUESTS, OPT_JSON, OPT_STRICT, OPT_QUIESCE, OPT_PULL, OPT_PUSH };

#define CTL_PULL_DEFAULT_REQUESTS 16
#define CTL_PULL_MAX_REQUESTS 256

/* The one piece of global state: a signal handler can reach nothing else.
 * Nonzero (the signal number) asks every loop to stop. */
static volatile sig_atomic_t ctl_pull_signal;

struct ctl_pull_disk {
    const char *disk, *uri, *bitmap;    /* point into the job */
    bool full;                  /* copied whole, also in an incremental */
    uint64_t size;
    char *file;                 /* DIR/D.C.{full,inc}.qcow2 */
    char *previous;             /* basename of the backing file, or NULL */
    bool created;               /* ours to remove if the pull fails */
    bool recorded;              /* FILE.json written */
    char sha256[65];            /* of the file, once recorded */
    struct nbdx_pull_result res;
    double seconds;
};

struct ctl_pull {
    struct ctl_ctx *ctx;
    const char *dir, *incremental;
    bool strict;                /* refuse an incremental with a full disk */
    bool quiesce;               /* freeze the guest around the begin */
    bool nbd;                   /* over NBD (the default), not a push:
                                 * it measured faster (BENCHMARKS.md) */
    char *checkpoint;
    char *checkpoint_id;        /* its identity in the VM (agent's "id") */
    char *base_id;              /* the --incremental checkpoint's */
    json_t *disks;              /* --disk names */
    unsigned requests;
    json_t *job;
    struct ctl_pull_disk *d;
    size_t n;
    time_t begun;               /* when backup-begin returned */
};

/* --- signals --- */

static void
ctl_pull_on_signal(int sig)
{
    ctl_pull_signal = sig;
}

static void
ctl_pull_signals(void)
{
    struct sigaction sa = { .sa_handler = ctl_pull_on_signal };

    /* No SA_RESTART: poll() in the copy loop returns EINTR at once. */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static double
ctl_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* --- progress --- */

struct ctl_progress {
    const char *disk;
    double start, last;
};

static void
ctl_progress_draw(struct ctl_progress *p, uint64_t done, uint64_t total, bool final)
{
    char d[32], t[32], rate[32];
    double secs = ctl_now() - p->start;

    /* One unit system: binary (KiB, MiB), like every other size shown. */
    ctl_human_size(done, d, sizeof d);
    ctl_human_size(total, t, sizeof t);
    ctl_human_size(secs > 0 ? (uint64_t) ((double) done / secs) : 0, rate, sizeof rate);
    fprintf(stderr, "\r%s: %s / %s  %3.0f%%  %s/s\033[K%s", p->disk, d, t,
            total ? 100.0 * (double) done / (double) total : 100.0, rate,
            final ? "\n" : "");
}

/* At most five redraws a second: a terminal is slower than the copy. */
static void
ctl_progress_cb(void *opaque, uint64_t done, uint64_t total)
{
    struct ctl_progress *p = opaque;
    double now = ctl_now();

    if (now - p->last < 0.2 && done < total)
        return;
    p->last = now;
    ctl_progress_draw(p, done, total, false);
}

/* --- files --- */

static char *
ctl_backup_path(const char *dir, const char *disk, const char *checkpoint,
                const char *kind)
{
    return xasprintf("%s/%s.%s.%s.qcow2", dir, disk, checkpoint, kind);
}

static bool
ctl_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The backup of `disk` at checkpoint `c` in dir: its basename, or NULL
 * after an error naming the files looked for. */
static char *
ctl_previous_backup(const char *dir, const char *disk, const char *c)
{
    CLEANUP_FREE char *full = ctl_backup_path(dir, disk, c, "full");
    CLEANUP_FREE char *inc = ctl_backup_path(dir, disk, c, "inc");

    if (ctl_exists(full) && ctl_exists(inc)) {
        ctl_fail(CTL_EXIT_EXISTS, "both %s and %s exist: which one is the"
                 " backup of disk %s at checkpoint %s?", full, inc, disk, c);
        return NULL;
    }
    if (ctl_exists(full) || ctl_exists(inc))
        return xstrdup(strrchr(ctl_exists(full) ? full : inc, '/') + 1);
    ctl_fail(CTL_EXIT_NOT_FOUND, "no backup of disk %s at checkpoint %s: neither"
             " %s nor %s exists; an incremental backup needs the previous one"
             " (take a full backup instead)", disk, c, full, inc);
    return NULL;
}

static int
ctl_pull_output_dir(const char *dir)
{
    /* Like mkdir -p: `--output /backups/vm1` on a machine without
     * /backups yet is the first command of the README's tour. */
    return ctl_make_dirs(dir, true);
}

/* Claims the output name (O_EXCL, 0600) before the engine writes it, so
 * an existing backup is never overwritten. */
static int
ctl_claim(struct ctl_pull_disk *d)
{
    int fd = open(d->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0)
        return ctl_fail(errno == EEXIST ? CTL_EXIT_EXISTS : CTL_EXIT_LOCAL,
                        "cannot create %s: %s", d->file,
                        errno == EEXIST ? "file exists (not overwritten)"
                                        : strerror(errno));
    close(fd);
    d->created = true;
    return CTL_EXIT_OK;
}


/* --- the record next to each image (see backupdir.c) --- */

/* Written once the engine has closed the image: from then on the file is
 * only ever read, so its checksum holds for good.  The engine computed
 * it as it wrote the file (the same bytes sha256sum would read back). */
static int
ctl_pull_record(struct ctl_pull *p, struct ctl_pull_disk *d)
{
    /* The NBD path hashed the file as it wrote it; QEMU wrote a pushed
     * one, which is read once now. */
    char pushed[65] = "";
    const char *sum = d->res.sha256;
    struct stat st;
    CLEANUP_JSON json_t *rec = NULL;
    CLEANUP_FREE char *prev_sum = d->previous
        ? ctl_bk_recorded_sha256(p->dir, d->previous) : NULL;
    int r;

    if (stat(d->file, &st) < 0)
        return ctl_fail(CTL_EXIT_LOCAL, "cannot stat %s: %s", d->file, strerror(errno));
    if (!sum[0]) {
        if ((r = ctl_sha256_file(d->file, pushed)) != CTL_EXIT_OK)
            return r;
        sum = pushed;
    }
    rec = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:O?}",
                    "ckptctl-backup", 1, "disk", d->disk, "checkpoint", p->checkpoint,
                    "mode", d->previous ? "incremental" : "full",
                    "file", strrchr(d->file, '/') ? strrchr(d->file, '/') + 1 : d->file,
                    "time", (json_int_t) p->begun, "virtual-size", (json_int_t) d->size,
                    "file-size", (json_int_t) st.st_size, "sha256", sum,
                    "job", json_object_get(p->job, "id"));
    if (!rec)
        return ctl_fail(CTL_EXIT_OTHER, "a name is not valid UTF-8");
    /* The identity, not only the name: an --incremental onto this backup
     * can then tell a re-created checkpoint from this one. */
    if (p->checkpoint_id)
        json_object_set_new(rec, "checkpoint-id", json_string(p->checkpoint_id));
    if (d->previous) {
        json_object_set_new(rec, "parent", json_string(p->incremental));
        json_object_set_new(rec, "backing", json_string(d->previous));
        if (prev_sum)
            json_object_set_new(rec, "backing-sha256", json_string(prev_sum));
    }
    if ((r = ctl_bk_write_record(d->file, rec)) == CTL_EXIT_OK) {
        d->recorded = true;
        memcpy(d->sha256, sum, sizeof d->sha256);
    }
    return r;
}

/* --- one disk --- */

static int
ctl_copy_status(enum nbdx_pull_status st, const struct ctl_pull_disk *d,
                const char *err)
{
    if (st == NBDX_PULL_CANCELLED)
        return CTL_EXIT_OK;     /* the caller looks at the signal */
    if (st != NBDX_PULL_OK)
        return ctl_fail(CTL_EXIT_LOCAL, "disk %s: copying %s to %s failed: %s",
                        d->disk, d->uri, d->file, err);
    return CTL_EXIT_OK;
}

/* Copies into the claimed file: the engine writes the qcow2 itself (no
 * qemu-nbd in the data path), an incremental's header naming the previous
 * backup by its relative name, so the directory can be moved whole. */
static int
ctl_pull_copy(struct ctl_pull *p, struct ctl_pull_disk *d, size_t i)
{
    CLEANUP_FREE char *bitmap = d->bitmap
        ? xasprintf("qemu:dirty-bitmap:%s", d->bitmap) : NULL;
    struct ctl_progress prog = { .disk = d->disk, .start = ctl_now() };
    /* With --json, stderr carries only JSON lines. */
    bool tty = isatty(STDERR_FILENO) && !p->ctx->json;
    struct nbdx_pull_opts o = {
        .uri = d->uri, .bitmap = bitmap,
        .target_file = d->file, .target_backing = d->previous,
        .requests = p->requests, .cancel = &ctl_pull_signal,
        .progress = tty ? ctl_progress_cb : NULL, .opaque = &prog,
    };
    char err[512] = "";
    enum nbdx_pull_status st;

    st = nbdx_pull_copy(&o, &d->res, err, sizeof err);
    if (tty && st == NBDX_PULL_OK)
        ctl_progress_draw(&prog, d->res.copied, d->res.copied, true);
    else if (tty)
        fputc('\n', stderr);
    return ctl_copy_status(st, d, err);
}

static int
ctl_pull_disk(struct ctl_pull *p, struct ctl_pull_disk *d, size_t i)
{
    double start = ctl_now();
    int r;

    /* A disk the agent copies whole (not in the base checkpoint, raw, not
     * tracking) gets a full image even in an incremental backup, so that
     * restore at this checkpoint takes it from this point in time. */
    bool inc = p->incremental && !d->full;
    if (inc && !d->bitmap)
        return ctl_bad_reply("backup-begin", "an incremental disk without"
                             " \"bitmap\"");
    if (inc && !(d->previous = ctl_previous_backup(p->dir, d->disk, p->incremental)))
        return CTL_EXIT_NOT_FOUND;
    d->file = ctl_backup_path(p->dir, d->disk, p->checkpoint, inc ? "inc" : "full");
    if ((r = ctl_claim(d)) != CTL_EXIT_OK || ctl_pull_signal)
        return r;
    r = ctl_pull_copy(p, d, i);
    d->seconds = ctl_now() - start;
    if (r == CTL_EXIT_OK && !ctl_pull_signal)
        r = ctl_pull_record(p, d);
    return r;
}

/* --- the job --- */

static void
ctl_pull_take_job(struct ctl_pull *p)
{
    json_t *disks = json_object_get(p->job, "disks");
    size_t i;
    json_t *j;

    p->n = json_array_size(disks);
    p->d = xcalloc(p->n + 1, sizeof *p->d);
    json_array_foreach(disks, i, j) {
        p->d[i].disk = json_string_value(json_object_get(j, "disk"));
        p->d[i].uri = json_string_value(json_object_get(j, "uri"));
        p->d[i].bitmap = json_string_value(json_object_get(j, "bitmap"));
        const char *mode = json_string_value(json_object_get(j, "mode"));
        p->d[i].full = mode ? strcmp(mode, "full") == 0 : !p->d[i].bitmap;
        p->d[i].size = (uint64_t) json_integer_value(json_object_get(j, "size"));
    }
}

/* The disks the backup will cover, before it begins: --disk, else every
 * disk (query-disks), for an incremental too; and for an incremental the
 * base checkpoint's disks, the ones that need their previous backup. */
static int
ctl_pull_disk_names(struct ctl_pull *p, json_t **reply, json_t **list,
                    json_t **base)
{
    int r = CTL_EXIT_OK;

    *list = p->disks;
    if (json_array_size(p->disks) == 0) {
        r = ctl_call(p->ctx, "query-disks", NULL, reply);
        *list = *reply;
    }
    if (r == CTL_EXIT_OK && p->incremental)
        r = ctl_call(p->ctx, "checkpoint-get",
                     json_pack("{s:s}", "name", p->incremental), base);
    return r;
}

/* Will disk be incremental: in the base checkpoint, and tracking? */
static bool
ctl_pull_in_base(json_t *base, const char *disk)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(base, "disks"), i, d) {
        const char *name = json_string_value(json_object_get(d, "disk"));
        if (name && strcmp(name, disk) == 0)
            return !json_is_false(json_object_get(d, "tracking"));
    }
    return false;
}

/* An incremental on a chain that cannot be restored would be a backup in
 * name only: the previous one's chain must be whole (see backupdir.c). */
static int
ctl_pull_previous_chain(const char *dir, const char *disk, const char *prev)
{
    struct ctl_bkdir d;
    int r = ctl_bkdir_load(dir, disk, &d);

    for (size_t i = 0; r == CTL_EXIT_OK && i < d.bk.len; i++) {
        const struct ctl_bk *b = &d.bk.ptr[i];
        if (strcmp(b->file, prev) != 0 || b->chain == CTL_CHAIN_COMPLETE)
            continue;
        r = ctl_fail(b->chain == CTL_CHAIN_MISSING ? CTL_EXIT_NOT_FOUND : CTL_EXIT_LOCAL,
                     "cannot back up disk %s on top of %s: %s (take a full backup"
                     " instead)", disk, prev, b->why);
    }
    ctl_bkdir_free(&d);
    return r;
}

/* The VM's checkpoint must be the one the previous backup was taken at:
 * the same name can be a checkpoint deleted and made again since, whose
 * bitmap holds only the writes since the new one. */
static int
ctl_pull_same_checkpoint(const struct ctl_pull *p, const char *disk, const char *prev)
{
    CLEANUP_FREE char *had = ctl_bk_recorded_id(p->dir, prev);

    if (!had || !p->base_id || strcmp(had, p->base_id) == 0)
        return CTL_EXIT_OK;     /* the same, or a backup without an identity */
    return ctl_fail(CTL_EXIT_NOT_FOUND, "checkpoint %s in the VM (%s) is not the"
                    " checkpoint %s that the backup of disk %s in %s was taken at"
                    " (%s, file %s): it was deleted and created again since; take"
                    " a full backup", p->incremental, p->base_id, p->incremental,
                    disk, p->dir, had, prev);
}

/* Before anything is created: an incremental needs the previous backup of
 * every disk, and no output file may exist yet.  Otherwise the agent would
 * create a checkpoint for a backup that cannot be written. */
static int
ctl_pull_precheck(struct ctl_pull *p)
{
    CLEANUP_JSON json_t *reply = NULL;
    CLEANUP_JSON json_t *base = NULL;
    json_t *list, *d;
    size_t i;
    int r = ctl_pull_disk_names(p, &reply, &list, &base);

    if (r != CTL_EXIT_OK)
        return r;
    const char *id = json_string_value(json_object_get(base, "id"));
    p->base_id = id ? xstrdup(id) : NULL;
    json_array_foreach(list, i, d) {
        const char *name = json_is_string(d) ? json_string_value(d)
                           : json_string_value(json_object_get(d, "disk"));
        CLEANUP_FREE char *prev = NULL;
        CLEANUP_FREE char *file = NULL;

        if (!name)
            return ctl_bad_reply(reply ? "query" : "--disk", "a disk without a name");
        bool inc = p->incremental && ctl_pull_in_base(base, name);
        if (inc && !(prev = ctl_previous_backup(p->dir, name, p->incremental)))
            return CTL_EXIT_NOT_FOUND;
        if (prev && ((r = ctl_pull_previous_chain(p->dir, name, prev)) != CTL_EXIT_OK ||
                     (r = ctl_pull_same_checkpoint(p, name, prev)) != CTL_EXIT_OK))
            return r;
        file = ctl_backup_path(p->dir, name, p->checkpoint, inc ? "inc" : "full");
        if (ctl_exists(file))
            return ctl_fail(CTL_EXIT_EXISTS, "%s already exists (not"
                            " overwritten); choose another --checkpoint", file);
    }
    return CTL_EXIT_OK;
}

static json_t *
ctl_pull_begin_args(const struct ctl_pull *p)
{
    json_t *args = json_pack("{s:{s:s}}", "checkpoint", "name", p->checkpoint);

    if (p->incremental)
        json_object_set_new(args, "incremental", json_string(p->incremental));
    if (p->strict)
        json_object_set_new(args, "strict", json_true());
    if (p->quiesce)
        json_object_set_new(args, "quiesce", json_true());
    if (json_array_size(p->disks) > 0)
        json_object_set(args, "disks", p->disks);
    return args;
}

static int
ctl_pull_disks(struct ctl_pull *p)
{
    int r = CTL_EXIT_OK;

    for (size_t i = 0; r == CTL_EXIT_OK && i < p->n && !ctl_pull_signal; i++)
        r = ctl_pull_disk(p, &p->d[i], i);
    return r;
}

/* Removes what a failed pull created. */
static void
ctl_pull_discard(struct ctl_pull *p)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->d[i].recorded) {
            CLEANUP_FREE char *rec = ctl_bk_record_path(p->d[i].file);
            unlink(rec);
        }
        if (p->d[i].created && unlink(p->d[i].file) == 0)
            ctl_note("removed incomplete %s", p->d[i].file);
    }
}

/* --- the summary --- */

static json_t *
ctl_pull_summary(const struct ctl_pull *p)
{
    json_t *disks = json_array();

    json_t *jd;
    size_t k;

    json_array_foreach(json_object_get(p->job, "disks"), k, jd)
        if (k < p->n) {
            const char *reason = json_string_value(json_object_get(jd, "reason"));
            json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:s}",
                "disk", p->d[k].disk, "file", p->d[k].file,
                "mode", p->incremental && !p->d[k].full ? "incremental" : "full",
                "bytes", (json_int_t) p->d[k].res.copied,
                "zeroed", (json_int_t) p->d[k].res.zeroed, "seconds", p->d[k].seconds,
                "sha256", p->d[k].sha256);
            if (reason)
                json_object_set_new(o, "reason", json_string(reason));
            json_array_append_new(disks, o);
        }
    return json_pack("{s:O, s:s, s:o, s:o}", "job", json_object_get(p->job, "id"),
                     "checkpoint", p->checkpoint, "incremental",
                     p->incremental ? json_string(p->incremental) : json_null(),
                     "disks", disks);
}

static int
ctl_print_pulled(const char *command, json_t *s, const void *opaque)
{
    static const char *const head[] = { "DISK", "MODE", "FILE", "COPIED", "ZEROED",
                                        "SECONDS" };
    const char *inc = json_string_value(json_object_get(s, "incremental"));
    struct ctl_table t = { 0 };
    size_t i;
    json_t *d;

    printf("%s: %s%s, checkpoint %s\n", json_string_value(json_object_get(s, "job")),
           inc ? "incremental from " : "full backup", inc ? inc : "",
           json_string_value(json_object_get(s, "checkpoint")));
    ctl_table_head(&t, head, ARRAY_SIZE(head));
    json_array_foreach(json_object_get(s, "disks"), i, d) {
        char copied[32], zeroed[32];

        ctl_human_size((uint64_t) json_integer_value(json_object_get(d, "bytes")),
                       copied, sizeof copied);
        ctl_human_size((uint64_t) json_integer_value(json_object_get(d, "zeroed")),
                       zeroed, sizeof zeroed);
        ctl_table_row(&t);
        ctl_table_cell(&t, "%s", json_string_value(json_object_get(d, "disk")));
        ctl_table_cell(&t, "%s", json_string_value(json_object_get(d, "mode")));
        ctl_table_cell(&t, "%s", json_string_value(json_object_get(d, "file")));
        ctl_table_cell(&t, "%s", copied);
        ctl_table_cell(&t, "%s", zeroed);
        ctl_table_cell(&t, "%.2f", json_real_value(json_object_get(d, "seconds")));
    }
    ctl_table_print(&t);
    json_array_foreach(json_object_get(s, "disks"), i, d)
        if (json_object_get(d, "reason"))
            printf("%s copied in full: %s\n", json_string_value(json_object_get(d, "disk")),
                   json_string_value(json_object_get(d, "reason")));
    return CTL_EXIT_OK;
}

/* --- the command --- */

static int
ctl_parse_requests(const struct ctl_ctx *ctx, const char *s, unsigned *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > CTL_PULL_MAX_REQUESTS)
        return ctl_usage_error(ctx, "invalid --requests '%s': 1 to %d expected",
                               s, CTL_PULL_MAX_REQUESTS);
    *out = (unsigned) v;
    return CTL_EXIT_OK;
}

static int
ctl_pull_option(struct ctl_ctx *ctx, int c, struct ctl_pull *p)
{
    switch (c) {
    case OPT_OUTPUT: p->dir = optarg; return CTL_EXIT_OK;
    case OPT_INCREMENTAL: p->incremental = optarg; return CTL_EXIT_OK;
    case OPT_CHECKPOINT:
        free(p->checkpoint);
        p->checkpoint = xstrdup(optarg);
        return CTL_EXIT_OK;
    case OPT_DISK: return ctl_add_string(ctx, p->disks, "--disk", optarg);
    case OPT_REQUESTS: return ctl_parse_requests(ctx, optarg, &p->requests);
    case OPT_JSON: ctl_set_json(ctx); return CTL_EXIT_OK;
    case OPT_STRICT: p->strict = true; return CTL_EXIT_OK;
    case OPT_QUIESCE: p->quiesce = true; return CTL_EXIT_OK;
    case OPT_PULL: p->nbd = true; return CTL_EXIT_OK;
    case OPT_PUSH: p->nbd = false; return CTL_EXIT_OK;
    default: return CTL_EXIT_USAGE;
    }
}

static int
ctl_pull_parse(struct ctl_ctx *ctx, int argc, char **argv, struct ctl_pull *p)
{
    static const struct option opts[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "incremental", required_argument, NULL, OPT_INCREMENTAL },
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        { "disk", required_argument, NULL, OPT_DISK },
        { "requests", required_argument, NULL, OPT_REQUESTS },
        { "json", no_argument, NULL, OPT_JSON },
        { "strict", no_argument, NULL, OPT_STRICT },
        { "quiesce", no_argument, NULL, OPT_QUIESCE },
        { "pull", no_argument, NULL, OPT_PULL },
        { "push", no_argument, NULL, OPT_PUSH },
        CTL_OPT_HELP, { 0 }
    };
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return -1;
        if ((r = ctl_pull_option(ctx, c, p)) != CTL_EXIT_OK)
            return r;
    }
    if ((r = ctl_operands(ctx, argc, argv, 0, 0)) != CTL_EXIT_OK)
        return r;
    if (!p->dir)
        return ctl_usage_error(ctx, "--output DIR is required");
    /* The default name is the time, so names sort like the backups and the
     * next --incremental can name this one. */
    if (!p->checkpoint)
        p->checkpoint = xasprintf("%lld", (long long) time(NULL));
    return CTL_EXIT_OK;
}

/* A pull that did not finish takes back the checkpoint its begin made: no
 * backup holds it, so an --incremental from it could not be restored.
 * Deleting it merges its bitmap into its parent: every older checkpoint
 * still covers every write since it.  When that cannot be done (the job
 * did not end), it says so and why. */
static void
ctl_pull_drop_checkpoint(struct ctl_pull *p, int end)
{
    CLEANUP_JSON json_t *reply = NULL;
    const char *kept = NULL;

    if (!json_object_get(p->job, "checkpoint"))
        return;
    if (end != CTL_EXIT_OK)
        kept = "the backup job did not end";
    else if (ctl_call(p->ctx, "checkpoint-delete",
                      json_pack("{s:s}", "name", p->checkpoint), &reply) != CTL_EXIT_OK)
        kept = "the agent refused to delete it";
    if (kept)
        ctl_note("kept checkpoint %s although no backup holds it (%s); delete it"
                 " with: ckptctl checkpoint delete -- %s", p->checkpoint, kept,
                 p->checkpoint);
    else
        ctl_note("deleted checkpoint %s: the backup at it did not finish",
                 p->checkpoint);
}

/* Exit code after the job has ended: a signal wins, then the copy's
 * error, then backup-end's. */
static int
ctl_pull_finish(struct ctl_pull *p, int r, int end)
{
    if (ctl_pull_signal || r != CTL_EXIT_OK) {
        ctl_pull_discard(p);
        ctl_pull_drop_checkpoint(p, end);
    }
    if (ctl_pull_signal)
        return ctl_fail(ctl_pull_signal == SIGINT ? CTL_EXIT_SIGINT : CTL_EXIT_SIGTERM,
                        "interrupted by %s; backup %s ended",
                        ctl_pull_signal == SIGINT ? "SIGINT" : "SIGTERM",
                        json_string_value(json_object_get(p->job, "id")));
    if (r != CTL_EXIT_OK)
        return r;
    if (end != CTL_EXIT_OK)
        return ctl_fail(end, "the backup files are complete, but job %s may"
                        " still hold its exports",
                        json_string_value(json_object_get(p->job, "id")));
    CLEANUP_JSON json_t *summary = ctl_pull_summary(p);
    return ctl_output(p->ctx, "pull", summary, ctl_print_pulled, NULL);
}

/* The new checkpoint's identity, for the records.  An agent without
 * identities (or a failed query) leaves it out: the backup is still
 * good, an incremental onto it just cannot check it. */
static void
ctl_pull_learn_id(struct ctl_pull *p)
{
    CLEANUP_JSON json_t *c = NULL;

    if (ctl_call(p->ctx, "checkpoint-get", json_pack("{s:s}", "name", p->checkpoint),
                 &c) == CTL_EXIT_OK && json_is_string(json_object_get(c, "id")))
        p->checkpoint_id = xstrdup(json_string_value(json_object_get(c, "id")));
}

/* The default: QEMU writes the same files itself (push.c); the names,
 * the records and the summary stay this file's. */
static int
ctl_pull_by_push(struct ctl_pull *p)
{
    CLEANUP_JSON json_t *reply = NULL;
    CLEANUP_JSON json_t *base = NULL;
    json_t *list, *d;
    size_t i;
    int r = ctl_pull_disk_names(p, &reply, &list, &base);
    struct ctl_push push = { .ctx = p->ctx, .args = ctl_pull_begin_args(p),
                             .stop = &ctl_pull_signal };

    push.disks = xcalloc(json_array_size(list) + 1, sizeof *push.disks);
    json_array_foreach(list, i, d) {
        const char *name = json_is_string(d) ? json_string_value(d)
                           : json_string_value(json_object_get(d, "disk"));
        bool inc = p->incremental && ctl_pull_in_base(base, name);
        struct ctl_push_disk *pd = &push.disks[push.n++];
        pd->disk = xstrdup(name);
        if (inc && !(pd->previous = ctl_previous_backup(p->dir, name, p->incremental)))
            r = CTL_EXIT_NOT_FOUND;
        pd->file = ctl_backup_path(p->dir, name, p->checkpoint, inc ? "inc" : "full");
    }
    if (r == CTL_EXIT_OK)
        r = ctl_push_run(&push, &p->job);
    p->begun = push.begun;
    if (p->job) {
        ctl_pull_take_job(p);
        ctl_pull_learn_id(p);
    }
    for (i = 0; i < p->n; i++)
        for (size_t k = 0; k < push.n; k++)
            if (strcmp(push.disks[k].disk, p->d[i].disk) == 0) {
                struct ctl_push_disk *pd = &push.disks[k];
                p->d[i].file = pd->file;
                p->d[i].previous = pd->previous;
                p->d[i].created = pd->created;
                p->d[i].seconds = pd->seconds;
                p->d[i].res.copied = pd->copied;
                pd->file = pd->previous = NULL;
                pd->created = false;
            }
    for (size_t k = 0; k < push.n; k++)     /* files of a begin that failed */
        if (push.disks[k].created)
            unlink(push.disks[k].file);
    ctl_push_free(&push);
    for (i = 0; r == CTL_EXIT_OK && i < p->n; i++)
        r = ctl_pull_record(p, &p->d[i]);
    /* A push that did not finish: the agent took its checkpoint back. */
    if (r != CTL_EXIT_OK || ctl_pull_signal)
        json_object_del(p->job, "checkpoint");
    return ctl_pull_finish(p, r, CTL_EXIT_OK);
}

static int
ctl_pull_run(struct ctl_pull *p)
{
    int r, end;

    if ((r = ctl_pull_output_dir(p->dir)) != CTL_EXIT_OK ||
        (r = ctl_pull_precheck(p)) != CTL_EXIT_OK)
        return r;
    ctl_pull_signals();
    if (!p->nbd)
        return ctl_pull_by_push(p);
    if ((r = ctl_backup_begin(p->ctx, ctl_pull_begin_args(p), &p->job)) != CTL_EXIT_OK)
        return r;
    p->begun = time(NULL);
    ctl_pull_take_job(p);
    ctl_pull_learn_id(p);
    r = ctl_pull_disks(p);
    end = ctl_backup_end(p->ctx, json_string_value(json_object_get(p->job, "id")));
    return ctl_pull_finish(p, r, end);
}

int
ctl_cmd_pull(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ctl_pull p = { .ctx = ctx, .disks = json_array(),
                          .requests = CTL_PULL_DEFAULT_REQUESTS, .nbd = true };
    int r = ctl_pull_parse(ctx, argc, argv, &p);

    if (r == CTL_EXIT_OK)
        r = ctl_pull_run(&p);
    else if (r < 0)
        r = CTL_EXIT_OK;        /* --help */
    for (size_t i = 0; i < p.n; i++) {
        free(p.d[i].file);
        free(p.d[i].previous);
    }
    free(p.d);
    free(p.checkpoint);
    free(p.checkpoint_id);
    free(p.base_id);
    json_decref(p.disks);
    json_decref(p.job);
    return r;
}
