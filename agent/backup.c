/* Backup jobs: their state, their JSON form, how they end (by request,
 * by failure, by SIGTERM, by QEMU going away). */
#include "agent/agent.h"
#include "nbd/nbdx.h"

#include <errno.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct backup_job *
backup_find(struct agent *a, const char *id)
{
    for (struct backup_job *j = a->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

size_t
backup_count(const struct agent *a)
{
    size_t n = 0;
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        n++;
    return n;
}

bool
backup_disk_busy(const struct agent *a, const char *disk)
{
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        for (size_t k = 0; k < j->ndisks; k++)
            if (strcmp(j->disks[k].disk, disk) == 0)
                return true;
    return false;
}

bool
backup_uses_checkpoint(const struct agent *a, const char *name)
{
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        if (j->incremental && strcmp(j->incremental, name) == 0)
            return true;
    return false;
}

static char *
disk_uri(const json_t *server, const char *export)
{
    const char *transport = json_string_value(json_object_get(server, "transport"));
    if (transport && strcmp(transport, "unix") == 0)
        return xasprintf("nbd+unix:///%s?socket=%s", export,
                         json_string_value(json_object_get(server, "path")));
    const char *host = json_string_value(json_object_get(server, "host"));
    const char *port = json_string_value(json_object_get(server, "port"));
    bool v6 = host && strchr(host, ':');
    bool tls = json_is_true(json_object_get(server, "tls"));
    return xasprintf("%s://%s%s%s:%s/%s", tls ? "nbds" : "nbd", v6 ? "[" : "",
                     host, v6 ? "]" : "", port, export);
}

static const char *const state_names[] = { "starting", "running", "ending" };

json_t *
backup_encode(const struct backup_job *job)
{
    json_t *o = json_pack("{s:s,s:s,s:s}", "id", job->id, "mode", "pull",
                          "status", state_names[job->state]);
    if (job->incremental)
        json_object_set_new(o, "incremental", json_string(job->incremental));
    if (job->checkpoint)
        json_object_set_new(o, "checkpoint", json_string(job->checkpoint));
    json_t *disks = json_array();
    for (size_t k = 0; k < job->ndisks; k++) {
        const struct backup_disk *d = &job->disks[k];
        CLEANUP_FREE char *uri = disk_uri(job->server, d->disk);
        json_t *jd = json_pack("{s:s,s:s,s:s,s:I}", "disk", d->disk, "export",
                               d->disk, "uri", uri, "size", (json_int_t) d->size);
        if (d->bitmap)
            json_object_set_new(jd, "bitmap", json_string(d->bitmap));
        json_array_append_new(disks, jd);
    }
    json_object_set_new(o, "disks", disks);
    return o;
}

void
backup_free(struct backup_job *job)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        free(job->disks[k].disk);
        free(job->disks[k].node);
        free(job->disks[k].scratch);
        free(job->disks[k].bitmap);
    }
    free(job->disks);
    free(job->id);
    free(job->incremental);
    free(job->checkpoint);
    free(job->failure);
    free(job->scratch_dir);
    json_decref(job->server);
    free(job);
}

void
backup_unlink(struct agent *a, struct backup_job *job)
{
    for (struct backup_job **p = &a->jobs; *p; p = &(*p)->next)
        if (*p == job) {
            *p = job->next;
            return;
        }
}

static void
remove_scratch_files(struct backup_job *job)
{
    for (size_t k = 0; k < job->ndisks; k++)
        if (job->disks[k].scratch && unlink(job->disks[k].scratch) < 0 &&
            errno != ENOENT)
            log_warn("cannot remove scratch file %s: %m", job->disks[k].scratch);
}

static void
emit_end(struct backup_job *job, const char *status)
{
    if (!job->announced)
        return;
    json_t *data = json_pack("{s:s,s:s}", "id", job->id, "status", status);
    if (job->failure)
        json_object_set_new(data, "error", json_string(job->failure));
    agent_event(job->agent, "BACKUP_END", data);
}

/* --- ending a job --- */
struct ending {
    struct backup_job *job;
    char *status;
    batch_done_cb *done;
    void *opaque;
};

/* Everything in QEMU is gone: the files, the event, the caller.  Ending a
 * backup changes no checkpoint, so the tree needs no re-read. */
static void
end_swept(const char *err, void *opaque)
{
    struct ending *e = opaque;
    struct backup_job *job = e->job;
    struct agent *a = job->agent;
    remove_scratch_files(job);
    backup_unlink(a, job);
    emit_end(job, e->status);
    log_info("backup %s ended: %s", job->id, e->status);
    if (job->resume_vm && a->qemu_ready) {
        log_info("resuming the guest, paused by the scratch I/O error");
        vm_send(a, "cont", NULL, NULL, NULL);
    }
    batch_done_cb *done = e->done;
    void *done_opaque = e->opaque;
    free(e->status);
    free(e);
    backup_free(job);
    if (done)
        done(NULL, done_opaque);
}

void
backup_end(struct backup_job *job, const char *status, batch_done_cb *done,
           void *opaque)
{
    struct ending *e = xmalloc(sizeof *e);
    *e = (struct ending) { job, xstrdup(status), done, opaque };
    job->state = BACKUP_ENDING;
    struct str_vec files = { 0 };
    for (size_t k = 0; k < job->ndisks; k++)
        if (job->disks[k].scratch)
            str_vec_append(&files, job->disks[k].scratch);
    sweep_run(job->agent, job->id, job->num, &files, end_swept, e);
    str_vec_reset(&files);
}

/* --- QEMU's side --- */
static struct backup_job *
job_of_block_job(struct agent *a, const char *id, const char **disk)
{
    for (struct backup_job *j = a->jobs; j; j = j->next)
        for (size_t k = 0; k < j->ndisks; k++) {
            CLEANUP_FREE char *name = nbdx_job_name(j->id, j->disks[k].disk);
            if (strcmp(name, id) == 0) {
                *disk = j->disks[k].disk;
                return j;
            }
        }
    return NULL;
}

static void
fail_job(struct backup_job *job, char *why)
{
    free(job->failure);
    job->failure = why;
    log_error("backup %s failed: %s", job->id, why);
    backup_end(job, "failed", NULL, NULL);
}

/* QEMU 7.2's copy-before-write filter, as blockdev-backup sets it up,
 * fails the guest's write when it cannot copy the old data to the scratch
 * image: a full scratch disk would break the guest.  So the scratch space
 * is watched, and the backup ends (failed) while room is left. */
static void
scratch_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct agent *a = w->data;
    bool any = false;
    struct backup_job *job = a->jobs;
    while (job) {
        struct backup_job *next = job->next;
        struct statvfs st;
        if (job->state == BACKUP_RUNNING && job->scratch_dir) {
            any = true;
            if (statvfs(job->scratch_dir, &st) == 0 &&
                (uint64_t) st.f_bavail * st.f_frsize < a->opt.scratch_reserve)
                fail_job(job, xasprintf(
                    "the scratch directory %s has less than %llu MiB free; the "
                    "backup was ended before a full scratch disk could fail the "
                    "guest's writes; give it more room (--scratch-dir)",
                    job->scratch_dir,
                    (unsigned long long) (a->opt.scratch_reserve >> 20)));
        }
        job = next;
    }
    if (!any)
        ev_timer_stop(loop, w);
}

void
backup_watch_scratch(struct agent *a)
{
    if (!a->opt.scratch_reserve || ev_is_active(&a->scratch_w))
        return;
    ev_timer_init(&a->scratch_w, scratch_tick, 0.25, 0.25);
    a->scratch_w.data = a;
    ev_timer_start(a->loop, &a->scratch_w);
}

static bool
job_has_node(const struct backup_job *job, const char *node)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *filter = nbdx_node_name('c', job->num, k);
        if (strcmp(job->disks[k].node, node) == 0 || strcmp(filter, node) == 0)
            return true;
    }
    return false;
}

/* A guest write failed on a disk in a backup: most likely the scratch
 * image (see scratch_tick).  End the backup so the guest can write again,
 * and resume the guest if the error paused it. */
static void
io_error(struct agent *a, json_t *data)
{
    const char *node = json_string_value(json_object_get(data, "node-name"));
    const char *action = json_string_value(json_object_get(data, "action"));
    const char *reason = json_string_value(json_object_get(data, "reason"));
    for (struct backup_job *job = a->jobs; node && job; job = job->next)
        if (job->state == BACKUP_RUNNING && job_has_node(job, node)) {
            job->resume_vm = action && strcmp(action, "stop") == 0;
            fail_job(job, xasprintf("a guest write to node '%s' failed during the "
                                    "backup (%s), most likely in the scratch image; "
                                    "the backup was ended so the guest can write",
                                    node, reason ? reason : "I/O error"));
            return;
        }
}

/* A fleecing job ending on its own means the point-in-time view is gone
 * (scratch full, I/O error): the backup has failed. */
void
backup_qemu_event(struct agent *a, const char *event, json_t *data)
{
    /* QEMU persists its bitmaps as it closes; ours are not persistent and
     * the scratch nodes go with the process, so only the reason changes:
     * the jobs end when the connection does. */
    if (strcmp(event, "SHUTDOWN") == 0) {
        a->qemu_shutting_down = true;
        for (struct backup_job *j = a->jobs; j; j = j->next)
            if (!j->failure)
                j->failure = xstrdup("QEMU shut down during the backup");
        return;
    }
    if (a->qemu_shutting_down)
        return;                 /* QEMU cancels the jobs as it closes */
    if (strcmp(event, "BLOCK_IO_ERROR") == 0) {
        io_error(a, data);
        return;
    }
    if (strcmp(event, "BLOCK_JOB_COMPLETED") != 0 &&
        strcmp(event, "BLOCK_JOB_CANCELLED") != 0)
        return;
    const char *id = json_string_value(json_object_get(data, "device"));
    const char *disk = NULL;
    struct backup_job *job = id ? job_of_block_job(a, id, &disk) : NULL;
    if (!job || job->state != BACKUP_RUNNING)
        return;
    const char *why = json_string_value(json_object_get(data, "error"));
    fail_job(job, xasprintf("the point-in-time view of disk '%s' was lost: %s; "
                            "the backup must be taken again", disk,
                            why ? why : "its block job stopped"));
}

/* QEMU is gone and took every export, job and node with it: only the
 * scratch files are left to remove.  Jobs in the middle of a step finish
 * that step (with errors) and end themselves. */
void
backup_qemu_gone(struct agent *a)
{
    struct backup_job *job = a->jobs;
    json_decref(a->nbd_server);
    a->nbd_server = NULL;
    while (job) {
        struct backup_job *next = job->next;
        job->qemu_gone = true;
        if (job->state == BACKUP_RUNNING) {
            if (!job->failure)
                job->failure = xstrdup("QEMU exited during the backup");
            remove_scratch_files(job);
            backup_unlink(a, job);
            emit_end(job, "failed");
            backup_free(job);
        }
        job = next;
    }
}

/* --- SIGTERM --- */
struct end_all {
    struct agent *agent;
    int pending;
    void (*done)(struct agent *a);
};

static void
one_ended(const char *err, void *opaque)
{
    struct end_all *ea = opaque;
    if (--ea->pending == 0) {
        struct agent *a = ea->agent;
        void (*done)(struct agent *) = ea->done;
        free(ea);
        done(a);
    }
}

void
backup_end_all(struct agent *a, void (*done)(struct agent *a))
{
    struct end_all *ea = xcalloc(1, sizeof *ea);
    *ea = (struct end_all) { a, 1, done };
    struct backup_job *j = a->jobs;
    while (j) {
        struct backup_job *next = j->next;
        if (j->state == BACKUP_RUNNING) {
            ea->pending++;
            if (!j->failure)
                j->failure = xstrdup("the agent is shutting down");
            backup_end(j, "cancelled", one_ended, ea);
        }
        j = next;
    }
    one_ended(NULL, ea);
}
