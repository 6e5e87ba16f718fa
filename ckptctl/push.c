/* ckptctl pull without --pull: the local backup as a push.  On the
 * agent's host (ckptctl always is: it talks over a Unix socket), QEMU
 * itself can write the backup files, with no NBD hop in the data path:
 *
 *   per disk: create the file (O_EXCL) -> getfd with it (SCM_RIGHTS) ->
 *   backup-begin mode=push, targets {"fd"} (an incremental names the
 *   previous backup as backing file) -> BACKUP_END -> the records
 *
 * The files are ckptctl's own: QEMU needs no access to the directory and
 * the agent no --backup-dir.  The directory is the same as the NBD path
 * writes (pull.c keeps the names, the records and the summary), so
 * backups, verify and restore read it unchanged.  SIGINT or SIGTERM
 * cancels the job (backup-end before it completes); pull.c then removes
 * the files, which the agent has emptied. */
#include "ckptctl/ckptctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CTL_PUSH_POLL_MS 200

void
ctl_push_free(struct ctl_push *p)
{
    for (size_t i = 0; p->disks && i < p->n; i++) {
        free(p->disks[i].disk);
        free(p->disks[i].file);
        free(p->disks[i].previous);
    }
    free(p->disks);
    json_decref(p->args);
}

static double
ctl_push_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + t.tv_nsec / 1e9;
}

/* Creates each file and hands it to the agent under the disk's name. */
static int
ctl_push_files(struct ctl_push *p, json_t *targets)
{
    for (size_t i = 0; i < p->n; i++) {
        struct ctl_push_disk *d = &p->disks[i];
        CLEANUP_JSON json_t *ret = NULL;
        CLEANUP_FREE char *name = xasprintf("ckptctl-%s", d->disk);
        int fd = open(d->file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int r;

        if (fd < 0)
            return ctl_fail(errno == EEXIST ? CTL_EXIT_EXISTS : CTL_EXIT_LOCAL,
                            "cannot create %s: %s", d->file,
                            errno == EEXIST ? "file exists (not overwritten)"
                                            : strerror(errno));
        d->created = true;
        r = ctl_call_fd(p->ctx, "getfd", json_pack("{s:s}", "fdname", name), fd, &ret);
        close(fd);
        if (r != CTL_EXIT_OK)
            return r;
        json_t *t = json_pack("{s:s}", "fd", name);
        if (d->previous)
            json_object_set_new(t, "backing-file", json_string(d->previous));
        json_object_set_new(targets, d->disk, t);
    }
    return CTL_EXIT_OK;
}

/* The agent chose each disk's mode; the file names were chosen before
 * (the targets go with the begin), so they must agree. */
static int
ctl_push_check_modes(const struct ctl_push *p, json_t *job)
{
    size_t i;
    json_t *jd;

    json_array_foreach(json_object_get(job, "disks"), i, jd) {
        const char *disk = json_string_value(json_object_get(jd, "disk"));
        const char *mode = json_string_value(json_object_get(jd, "mode"));
        for (size_t k = 0; disk && mode && k < p->n; k++)
            if (strcmp(p->disks[k].disk, disk) == 0 &&
                (strcmp(mode, "incremental") == 0) != (p->disks[k].previous != NULL))
                return ctl_fail(CTL_EXIT_OTHER, "disk %s: the agent copies it %s, "
                                "not as expected; %s", disk, mode,
                                json_string_value(json_object_get(jd, "reason"))
                                ?: "try again");
    }
    return CTL_EXIT_OK;
}

/* On a terminal, as the NBD path draws it: one line for all the disks,
 * redrawn at each poll, and a last one at 100%. */
static void
ctl_push_draw(const struct ctl_push *p, uint64_t done, uint64_t total, double start,
              bool final)
{
    char d[32], t[32], rate[32];
    double secs = ctl_push_now() - start;
    CLEANUP_FREE char *label = xstrdup(p->n ? p->disks[0].disk : "");

    for (size_t i = 1; i < p->n; i++) {
        char *l = xasprintf("%s+%s", label, p->disks[i].disk);
        free(label);
        label = l;
    }
    ctl_human_size(done, d, sizeof d);
    ctl_human_size(total, t, sizeof t);
    ctl_human_size(secs > 0 ? (uint64_t) ((double) done / secs) : 0, rate, sizeof rate);
    fprintf(stderr, "\r%s: %s / %s  %3.0f%%  %s/s\033[K%s", label, d, t,
            total ? 100.0 * (double) done / (double) total : 100.0, rate,
            final ? "\n" : "");
}

static void
ctl_push_progress(struct ctl_push *p, const char *id, double start, uint64_t *total)
{
    CLEANUP_JSON json_t *job = NULL;
    uint64_t cur = 0, tot = 0;
    size_t i;
    json_t *jd;

    if (ctl_call(p->ctx, "query-backup", json_pack("{s:s}", "id", id), &job) != CTL_EXIT_OK)
        return;
    json_array_foreach(json_object_get(job, "disks"), i, jd) {
        json_t *pr = json_object_get(jd, "progress");
        cur += (uint64_t) json_integer_value(json_object_get(pr, "current"));
        tot += (uint64_t) json_integer_value(json_object_get(pr, "total"));
    }
    *total = tot;
    ctl_push_draw(p, cur, tot, start, false);
}

/* Until BACKUP_END: its status, or a signal (then the job is cancelled,
 * and its end awaited). */
static int
ctl_push_wait(struct ctl_push *p, json_t *job, double start, char *status,
              size_t len)
{
    const char *id = json_string_value(json_object_get(job, "id"));
    bool tty = isatty(STDERR_FILENO) && !p->ctx->json;
    bool cancelled = false;
    uint64_t total = 0;
    size_t i;
    json_t *jd;

    json_array_foreach(json_object_get(job, "disks"), i, jd)
        total += (uint64_t) json_integer_value(json_object_get(jd, "size"));

    for (;;) {
        CLEANUP_JSON json_t *data = NULL;
        int r = ctl_wait_event(p->ctx, "BACKUP_END", id, CTL_PUSH_POLL_MS, &data);

        if (r != CTL_EXIT_OK)
            return r;
        if (data) {
            const char *err = json_string_value(json_object_get(data, "error"));
            snprintf(status, len, "%s", json_string_value(json_object_get(data, "status"))
                                        ?: "?");
            if (tty && strcmp(status, "completed") == 0)
                ctl_push_draw(p, total, total, start, true);
            else if (tty)
                fputc('\n', stderr);
            if (strcmp(status, "completed") != 0 && !cancelled)
                return ctl_fail(CTL_EXIT_QEMU, "backup %s %s: %s", id, status,
                                err ? err : "no reason given");
            return CTL_EXIT_OK;
        }
        if (*p->stop && !cancelled) {
            cancelled = true;
            if ((r = ctl_backup_end(p->ctx, id)) != CTL_EXIT_OK && r != CTL_EXIT_NOT_FOUND)
                return r;
        } else if (tty && !cancelled) {
            ctl_push_progress(p, id, start, &total);
        }
    }
}

int
ctl_push_run(struct ctl_push *p, json_t **job)
{
    CLEANUP_JSON json_t *targets = json_object();
    char status[32] = "";
    double start;
    int r;

    *job = NULL;
    if ((r = ctl_push_files(p, targets)) != CTL_EXIT_OK || *p->stop)
        return r;
    json_object_set_new(p->args, "mode", json_string("push"));
    json_object_set(p->args, "targets", targets);
    start = ctl_push_now();
    r = ctl_call(p->ctx, "backup-begin", p->args, job);
    p->args = NULL;
    if (r != CTL_EXIT_OK)
        return r;
    p->begun = time(NULL);
    const char *id = json_string_value(json_object_get(*job, "id"));
    if (!id)
        return ctl_bad_reply("backup-begin", "a job without \"id\"");
    if ((r = ctl_push_check_modes(p, *job)) != CTL_EXIT_OK) {
        ctl_backup_end(p->ctx, id);
        return r;
    }
    r = ctl_push_wait(p, *job, start, status, sizeof status);
    if (r == CTL_EXIT_OK && strcmp(status, "completed") != 0)
        r = CTL_EXIT_OTHER;             /* cancelled: the caller says why */
    for (size_t i = 0; i < p->n; i++) {
        struct stat st;
        p->disks[i].seconds = ctl_push_now() - start;
        if (stat(p->disks[i].file, &st) == 0)
            p->disks[i].copied = (uint64_t) st.st_blocks * 512;
    }
    return r;
}
