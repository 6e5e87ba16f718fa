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
       OPT_REQUESTS, OPT_JSON };

#define CTL_PULL_DEFAULT_REQUESTS 16
#define CTL_PULL_MAX_REQUESTS 256

/* The one piece of global state: a signal handler can reach nothing else.
 * Nonzero (the signal number) asks every loop to stop. */
static volatile sig_atomic_t ctl_pull_signal;

struct ctl_pull_disk {
    const char *disk, *uri, *bitmap;    /* point into the job */
    uint64_t size;
    char *file;                 /* DIR/D.C.{full,inc}.qcow2 */
    char *previous;             /* basename of the backing file, or NULL */
    bool created;               /* ours to remove if the pull fails */
    struct nbdx_pull_result res;
    double seconds;
};

struct ctl_pull {
    struct ctl_ctx *ctx;
    const char *dir, *incremental;
    char *checkpoint;
    json_t *disks;              /* --disk names */
    unsigned requests;
    json_t *job;
    struct ctl_pull_disk *d;
    size_t n;
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
    char d[32], t[32];
    double secs = ctl_now() - p->start;

    ctl_human_size(done, d, sizeof d);
    ctl_human_size(total, t, sizeof t);
    fprintf(stderr, "\r%s: %s / %s  %3.0f%%  %.1f MB/s\033[K%s", p->disk, d, t,
            total ? 100.0 * (double) done / (double) total : 100.0,
            secs > 0 ? (double) done / secs / 1e6 : 0.0, final ? "\n" : "");
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
    struct stat st;

    /* 0700: the files hold the guest's disks. */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return ctl_fail(CTL_EXIT_LOCAL, "cannot create output directory %s: %s",
                        dir, strerror(errno));
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return ctl_fail(CTL_EXIT_LOCAL, "output %s is not a directory", dir);
    return CTL_EXIT_OK;
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
    bool tty = isatty(STDERR_FILENO);
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

    if (p->incremental && !d->bitmap)
        return ctl_bad_reply("backup-begin", "an incremental disk without"
                             " \"bitmap\"");
    if (p->incremental && !(d->previous = ctl_previous_backup(p->dir, d->disk,
                                                            p->incremental)))
        return CTL_EXIT_NOT_FOUND;
    d->file = ctl_backup_path(p->dir, d->disk, p->checkpoint,
                              p->incremental ? "inc" : "full");
    if ((r = ctl_claim(d)) != CTL_EXIT_OK || ctl_pull_signal)
        return r;
    r = ctl_pull_copy(p, d, i);
    d->seconds = ctl_now() - start;
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
        p->d[i].size = (uint64_t) json_integer_value(json_object_get(j, "size"));
    }
}

/* The disks the backup will cover, before it begins: --disk, else the
 * incremental checkpoint's disks, else every disk (query-disks). */
static int
ctl_pull_disk_names(struct ctl_pull *p, json_t **reply, json_t **list)
{
    int r;

    *list = p->disks;
    if (json_array_size(p->disks) > 0)
        return CTL_EXIT_OK;
    if (p->incremental) {
        r = ctl_call(p->ctx, "checkpoint-get",
                     json_pack("{s:s}", "name", p->incremental), reply);
        *list = json_object_get(*reply, "disks");
    } else {
        r = ctl_call(p->ctx, "query-disks", NULL, reply);
        *list = *reply;
    }
    return r;
}

/* Before anything is created: an incremental needs the previous backup of
 * every disk, and no output file may exist yet.  Otherwise the agent would
 * create a checkpoint for a backup that cannot be written. */
static int
ctl_pull_precheck(struct ctl_pull *p)
{
    CLEANUP_JSON json_t *reply = NULL;
    json_t *list, *d;
    size_t i;
    int r = ctl_pull_disk_names(p, &reply, &list);

    if (r != CTL_EXIT_OK)
        return r;
    json_array_foreach(list, i, d) {
        const char *name = json_is_string(d) ? json_string_value(d)
                           : json_string_value(json_object_get(d, "disk"));
        CLEANUP_FREE char *prev = NULL;
        CLEANUP_FREE char *file = NULL;

        if (!name)
            return ctl_bad_reply(reply ? "query" : "--disk", "a disk without a name");
        if (p->incremental &&
            !(prev = ctl_previous_backup(p->dir, name, p->incremental)))
            return CTL_EXIT_NOT_FOUND;
        file = ctl_backup_path(p->dir, name, p->checkpoint,
                               p->incremental ? "inc" : "full");
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
    for (size_t i = 0; i < p->n; i++)
        if (p->d[i].created && unlink(p->d[i].file) == 0)
            fprintf(stderr, "ckptctl: removed incomplete %s\n", p->d[i].file);
}

/* --- the summary --- */

static json_t *
ctl_pull_summary(const struct ctl_pull *p)
{
    json_t *disks = json_array();

    for (size_t i = 0; i < p->n; i++)
        json_array_append_new(disks, json_pack(
            "{s:s, s:s, s:I, s:I, s:f}", "disk", p->d[i].disk, "file", p->d[i].file,
            "bytes", (json_int_t) p->d[i].res.copied,
            "zeroed", (json_int_t) p->d[i].res.zeroed, "seconds", p->d[i].seconds));
    return json_pack("{s:O, s:s, s:o, s:o}", "job", json_object_get(p->job, "id"),
                     "checkpoint", p->checkpoint, "incremental",
                     p->incremental ? json_string(p->incremental) : json_null(),
                     "disks", disks);
}

static int
ctl_print_pulled(const char *command, json_t *s, const void *opaque)
{
    static const char *const head[] = { "DISK", "FILE", "COPIED", "ZEROED",
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
        ctl_table_cell(&t, "%s", json_string_value(json_object_get(d, "file")));
        ctl_table_cell(&t, "%s", copied);
        ctl_table_cell(&t, "%s", zeroed);
        ctl_table_cell(&t, "%.2f", json_real_value(json_object_get(d, "seconds")));
    }
    ctl_table_print(&t);
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
    case OPT_JSON: ctx->json = true; return CTL_EXIT_OK;
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

/* Exit code after the job has ended: a signal wins, then the copy's
 * error, then backup-end's. */
static int
ctl_pull_finish(struct ctl_pull *p, int r, int end)
{
    if (ctl_pull_signal || r != CTL_EXIT_OK)
        ctl_pull_discard(p);
    if (ctl_pull_signal) {
        ctl_fail(0, "interrupted by %s; backup %s ended",
                 ctl_pull_signal == SIGINT ? "SIGINT" : "SIGTERM",
                 json_string_value(json_object_get(p->job, "id")));
        return ctl_pull_signal == SIGINT ? CTL_EXIT_SIGINT : CTL_EXIT_SIGTERM;
    }
    if (r != CTL_EXIT_OK)
        return r;
    if (end != CTL_EXIT_OK)
        return ctl_fail(end, "the backup files are complete, but job %s may"
                        " still hold its exports",
                        json_string_value(json_object_get(p->job, "id")));
    CLEANUP_JSON json_t *summary = ctl_pull_summary(p);
    return ctl_output(p->ctx, "pull", summary, ctl_print_pulled, NULL);
}

static int
ctl_pull_run(struct ctl_pull *p)
{
    int r, end;

    if ((r = ctl_pull_output_dir(p->dir)) != CTL_EXIT_OK ||
        (r = ctl_pull_precheck(p)) != CTL_EXIT_OK)
        return r;
    ctl_pull_signals();
    if ((r = ctl_backup_begin(p->ctx, ctl_pull_begin_args(p), &p->job)) != CTL_EXIT_OK)
        return r;
    ctl_pull_take_job(p);
    r = ctl_pull_disks(p);
    end = ctl_backup_end(p->ctx, json_string_value(json_object_get(p->job, "id")));
    return ctl_pull_finish(p, r, end);
}

int
ctl_cmd_pull(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ctl_pull p = { .ctx = ctx, .disks = json_array(),
                          .requests = CTL_PULL_DEFAULT_REQUESTS };
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
    json_decref(p.disks);
    json_decref(p.job);
    return r;
}
