/* The steps of a push backup job, each with its undo (job.c runs them):
 * QEMU itself copies the point-in-time view into qcow2 targets.
 *
 *   step           does                                 undo
 *   targets        open DIR/ckptd-TAG-JOB-DISK.qcow2    remove the fd sets;
 *                  (file) or dup the client's fd;       completed: the file
 *                  add-fd (SCM_RIGHTS) per disk         gets its name; else
 *                                                       unlinked (fd targets:
 *                                                       truncated to 0)
 *   target nodes   blockdev-add file /dev/fdset/N       blockdev-del
 *   target format  blockdev-create qcow2 (size, the     dismiss the create
 *                  previous backup as backing file)     jobs
 *   dismiss        job-dismiss the create jobs          (format's undo)
 *   target images  blockdev-add qcow2, backing: null    blockdev-del (flushes)
 *   transaction    temporary bitmaps, new checkpoint,   cancel the jobs, remove
 *                  blockdev-backup sync=full|bitmap     the bitmaps; the new
 *                                                       checkpoint unless copied
 *
 * QEMU opens every target through an fd set, so it needs no access to the
 * backup directory, and never opens the previous backup: the header names
 * it, the node has no backing.  The job is RUNNING while QEMU copies; when
 * every block job has completed, the job ends itself, completed, through
 * the same unwind, and the target images are flushed and closed before
 * BACKUP_END says so. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define PUSH_EVENT_TIMEOUT 60.0
#define PUSH_MAX_BACKING 1023           /* qcow2's limit on the name */

/* The directory part of an absolute path, "/" for a file in "/". */
static char *
dir_of_path(const char *path)
{
    const char *slash = strrchr(path, '/');
    return xasprintf("%.*s", slash == path ? 1 : (int) (slash - path), path);
}

/* --- checking the targets argument --- */

/* A {"file"} target: an absolute path whose directory lies inside
 * --backup-dir, and that does not exist yet. */
static enum ckpt_err
file_target(struct agent *a, struct job_disk *d, const char *path,
            struct ckpt_error *e)
{
    if (!a->opt.backup_dir)
        return ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "disk '%s': file targets need "
                         "ckptd --backup-dir; or pass an opened file (\"fd\")",
                         d->disk);
    const char *slash = strrchr(path, '/');
    if (path[0] != '/' || !slash[1] || strcmp(slash + 1, ".") == 0 ||
        strcmp(slash + 1, "..") == 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s': target file "
                         "'%s' must be an absolute path to a file", d->disk, path);
    CLEANUP_FREE char *dir = dir_of_path(path);
    char rdir[PATH_MAX], rbase[PATH_MAX];
    if (!realpath(a->opt.backup_dir, rbase))
        return ckpt_fail(e, CKPT_ERR_GENERIC, "cannot use the backup directory %s: %s",
                         a->opt.backup_dir, strerror(errno));
    size_t blen = strlen(rbase);
    if (!realpath(dir, rdir) || strncmp(rdir, rbase, blen) != 0 ||
        (rdir[blen] != '/' && rdir[blen] != '\0'))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s': target file "
                         "'%s' must be in an existing directory inside %s", d->disk,
                         path, rbase);
    CLEANUP_FREE char *full = xasprintf("%s/%s", rdir, slash + 1);
    struct stat st;
    if (lstat(full, &st) == 0 || errno != ENOENT)
        return ckpt_fail(e, CKPT_ERR_ALREADY_EXISTS, "disk '%s': target file '%s' "
                         "exists already", d->disk, full);
    d->target = xstrdup(full);
    return CKPT_OK;
}

/* An {"fd"} target: a descriptor the client passed with getfd, open for
 * reading and writing.  The client keeps its own; the job takes a copy. */
static enum ckpt_err
fd_target(struct client *c, struct job_disk *d, const char *name, struct ckpt_error *e)
{
    int fd = ctl_find_fd(c, name);
    if (fd < 0)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "disk '%s': no file descriptor "
                         "named '%s' (pass it first with getfd)", d->disk, name);
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) != O_RDWR || fstat(fd, &st) < 0 ||
        !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s': descriptor '%s' "
                         "must be a file or block device open for reading and "
                         "writing", d->disk, name);
    d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d->fd < 0)
        return ckpt_fail(e, CKPT_ERR_GENERIC, "disk '%s': cannot copy descriptor "
                         "'%s': %s", d->disk, name, strerror(errno));
    d->fdname = xstrdup(name);
    return CKPT_OK;
}

static enum ckpt_err
one_target(struct request *req, struct job_disk *d, json_t *t, struct ckpt_error *e)
{
    if (json_is_string(t))
        return file_target(req->agent, d, json_string_value(t), e);
    const char *key;
    json_t *v;
    json_object_foreach(t, key, v)
        if ((strcmp(key, "file") && strcmp(key, "fd") && strcmp(key, "backing-file")) ||
            !json_is_string(v))
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s': a target is "
                             "{\"file\": PATH} or {\"fd\": NAME}, with an optional "
                             "string \"backing-file\" (not '%s')", d->disk, key);
    const char *file = json_string_value(json_object_get(t, "file"));
    const char *fd = json_string_value(json_object_get(t, "fd"));
    const char *backing = json_string_value(json_object_get(t, "backing-file"));
    if (!json_is_object(t) || !file == !fd)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s': a target needs "
                         "one of \"file\" and \"fd\"", d->disk);
    if (backing && (!*backing || strlen(backing) > PUSH_MAX_BACKING))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s': \"backing-file\" "
                         "must be 1 to %d bytes", d->disk, PUSH_MAX_BACKING);
    d->backing = backing ? xstrdup(backing) : NULL;
    return file ? file_target(req->agent, d, file, e) : fd_target(req->client, d, fd, e);
}

enum ckpt_err
push_targets(struct request *req, struct backup_job *job, struct ckpt_error *e)
{
    json_t *targets = json_object_get(req->args, "targets");
    const char *key;
    json_t *v;
    json_object_foreach(targets, key, v) {
        bool found = false;
        for (size_t k = 0; k < job->ndisks; k++)
            found = found || strcmp(job->disks[k].disk, key) == 0;
        if (!found)
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "'targets' names '%s', "
                             "which is not a disk of this backup", key);
    }
    for (size_t k = 0; k < job->ndisks; k++) {
        struct job_disk *d = &job->disks[k];
        json_t *t = json_object_get(targets, d->disk);
        if (!t)
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s' has no "
                             "target", d->disk);
        enum ckpt_err err = one_target(req, d, t, e);
        if (err)
            return err;
        for (size_t j = 0; d->target && j < k; j++)
            if (job->disks[j].target && strcmp(job->disks[j].target, d->target) == 0)
                return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disks '%s' and '%s' "
                                 "have the same target", job->disks[j].disk, d->disk);
        /* The space watch of job.c (a full target directory fails guest
         * writes through the copy-before-write filter, as a scratch does). */
        if (d->target && !job->scratch_dir)
            job->scratch_dir = dir_of_path(d->target);
    }
    return CKPT_OK;
}

/* --- targets: the files, and QEMU's fd sets --- */
static void
got_fdset(json_t *ret, void *opaque)
{
    struct job_disk *d = opaque;
    json_t *id = json_object_get(ret, "fdset-id");
    if (json_is_integer(id))
        d->fdset = (long long) json_integer_value(id);
}

static void
run_targets(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        struct job_disk *d = &job->disks[k];
        if (d->target) {
            CLEANUP_FREE char *dir = dir_of_path(d->target);
            char *path = ckpt_tmp_scratch(dir, job->agent->opt.tag, job->id, d->disk);
            d->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (d->fd < 0) {
                job->error = xasprintf("cannot create the target of disk '%s', %s: %s",
                                       d->disk, path, strerror(errno));
                job->error_class = CKPT_ERR_GENERIC;
                free(path);
                return;
            }
            d->partial = path;
        }
        int qfd = fcntl(d->fd, F_DUPFD_CLOEXEC, 3);
        if (qfd < 0) {
            job->error = xasprintf("disk '%s': cannot copy the target's descriptor: %s",
                                   d->disk, strerror(errno));
            return;
        }
        CLEANUP_FREE char *opaque = ckpt_tmp_job(job->id, d->disk);
        batch_send_fd(b, "add-fd", json_pack("{s:s}", "opaque", opaque), qfd,
                      got_fdset, d);
    }
}

/* The target files once the images are closed: a complete one gets its
 * name (never over an existing file), anything else goes. */
static bool
publish(struct backup_job *job, struct job_disk *d)
{
    if (fsync(d->fd) < 0) {
        job_stop(job, "failed", xasprintf("cannot flush the target of disk '%s': %s",
                                          d->disk, strerror(errno)));
        return false;
    }
    if (link(d->partial, d->target) < 0) {
        job_stop(job, "failed", xasprintf("cannot name the target of disk '%s' %s: %s",
                                          d->disk, d->target, strerror(errno)));
        return false;
    }
    log_info("backup %s: disk '%s' written to %s", job->id, d->disk, d->target);
    return true;
}

static void
finish_files(struct backup_job *job)
{
    bool complete = job->committed && !job->undo_error && job->end_status &&
                    strcmp(job->end_status, "completed") == 0;
    bool ok = complete;
    for (size_t k = 0; k < job->ndisks; k++) {
        struct job_disk *d = &job->disks[k];
        if (ok && d->partial)
            ok = publish(job, d);
    }
    if (complete && !ok) {
        /* One target could not be finished: none of them is a backup. */
        free(job->end_status);
        job->end_status = xstrdup("failed");
        for (size_t k = 0; k < job->ndisks; k++)
            if (job->disks[k].partial && unlink(job->disks[k].target) == 0)
                log_info("removed %s", job->disks[k].target);
    }
    for (size_t k = 0; k < job->ndisks; k++) {
        struct job_disk *d = &job->disks[k];
        /* Emptied first: QEMU 7.2 keeps a removed fd set's descriptor
         * open while the VM is paused, and so would the blocks. */
        if (d->partial && !ok && d->fd >= 0 && ftruncate(d->fd, 0) < 0)
            log_warn("cannot truncate %s: %m", d->partial);
        if (d->partial && unlink_later(d->partial) < 0 && errno != ENOENT)
            log_warn("cannot remove %s: %m", d->partial);
        else if (d->partial && !ok)
            log_info("removed partial target %s", d->partial);
        /* The client's own file: emptied, so that nothing half written
         * looks like a backup; removing it is the client's to do. */
        if (!ok && d->fdname && d->fd >= 0 && job->started > 0 && ftruncate(d->fd, 0) < 0)
            log_warn("cannot truncate the target of disk '%s': %m", d->disk);
        free(d->partial);
        d->partial = NULL;
        if (d->fd >= 0)
            close(d->fd);
        d->fd = -1;
    }
}

static enum undo_result
undo_targets(struct backup_job *job, struct batch *b)
{
    size_t i, j;
    json_t *set, *fd;
    json_array_foreach(job->fdsets, i, set) {
        bool mine = false;
        json_array_foreach(json_object_get(set, "fds"), j, fd)
            mine = mine || job_id_is_mine(job, json_string_value(json_object_get(fd, "opaque")));
        if (mine)
            batch_send(b, "remove-fd", json_pack("{s:O}", "fdset-id",
                                                 json_object_get(set, "fdset-id")),
                       NULL, NULL);
    }
    if (job->sweep && job->agent->opt.backup_dir) {
        job_find_stale_files(job, job->agent->opt.backup_dir);
        for (size_t k = 0; k < job->files.len; k++)
            if (unlink_later(job->files.ptr[k]) == 0)
                log_info("removed partial target %s", job->files.ptr[k]);
        str_vec_free_all(&job->files);
    }
    if (!job->sweep)
        finish_files(job);
    if (job->announced && job->checkpoint && job->txn_accepted && !job->committed)
        agent_event(job->agent, "CHECKPOINT_DELETED",
                    json_pack("{s:s}", "name", job->checkpoint));
    return UNDO_DONE;
}

/* --- nodes --- */
static void
run_nodes(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *node = ckpt_tmp_node('t', job->num, k);
        CLEANUP_FREE char *file = xasprintf("/dev/fdset/%lld", job->disks[k].fdset);
        if (job->disks[k].fdset < 0) {
            job->error = xasprintf("QEMU gave no fd set for disk '%s'", job->disks[k].disk);
            return;
        }
        batch_send(b, "blockdev-add",
                   json_pack("{s:s,s:s,s:s}", "driver", "file", "node-name", node,
                             "filename", file), NULL, NULL);
    }
}

static enum undo_result
undo_nodes(struct backup_job *job, struct batch *b)
{
    job_delete_nodes(job, b, 't');
    return UNDO_DONE;
}

static void
run_format(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        const struct job_disk *d = &job->disks[k];
        CLEANUP_FREE char *id = job_create_job_id(job, k);
        CLEANUP_FREE char *node = ckpt_tmp_node('t', job->num, k);
        json_t *opts = json_pack("{s:s,s:s,s:I}", "driver", "qcow2", "file", node,
                                 "size", (json_int_t) d->size);
        if (d->backing) {
            json_object_set_new(opts, "backing-file", json_string(d->backing));
            json_object_set_new(opts, "backing-fmt", json_string("qcow2"));
        }
        batch_send_expect(b, "blockdev-create",
                          json_pack("{s:s,s:o}", "job-id", id, "options", opts),
                          "JOB_STATUS_CHANGE",
                          json_pack("{s:s,s:s}", "id", id, "status", "concluded"),
                          PUSH_EVENT_TIMEOUT);
    }
}

static enum undo_result
undo_nothing(struct backup_job *job, struct batch *b)
{
    return UNDO_DONE;           /* the format undo dismisses what is left */
}

static void
run_images(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *fmt = ckpt_tmp_node('q', job->num, k);
        CLEANUP_FREE char *file = ckpt_tmp_node('t', job->num, k);
        batch_send(b, "blockdev-add",
                   json_pack("{s:s,s:s,s:s,s:n}", "driver", "qcow2", "node-name", fmt,
                             "file", file, "backing"), NULL, NULL);
    }
}

static enum undo_result
undo_images(struct backup_job *job, struct batch *b)
{
    /* blockdev-del flushes the image (and the file below) before closing:
     * the copy is on disk when the job's end is announced. */
    job_delete_nodes(job, b, 'q');
    return UNDO_WAIT;           /* the files are finished once it is closed */
}

/* --- the transaction --- */
static void
run_transaction(struct backup_job *job, struct batch *b)
{
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    if (job_plan_transaction(job, &job->agent->tree, actions, &e)) {
        json_decref(actions);
        job->error = xstrdup(e.msg);
        job->error_class = e.code;
        return;
    }
    long long speed = job->agent->opt.debug.push_speed;
    size_t i;
    json_t *act;
    json_array_foreach(actions, i, act)
        if (speed && strcmp(json_string_value(json_object_get(act, "type")),
                            "blockdev-backup") == 0)
            json_object_set_new(json_object_get(act, "data"), "speed",
                                json_integer(speed));
    job_send_transaction(job, b, actions);
}

/* A sync=bitmap job holds its bitmap until it is gone: the jobs are
 * cancelled and awaited first, then QEMU is listed again and the shared
 * undo removes the bitmaps (and takes back a checkpoint never copied). */
static enum undo_result
undo_transaction(struct backup_job *job, struct batch *b)
{
    size_t i;
    json_t *j;
    bool waiting = false;
    json_array_foreach(job->qjobs, i, j) {
        const char *id, *status, *type;
        if (!job_listed(job, j, &id, &status, &type) || strcmp(type, "backup") != 0 ||
            strcmp(status, "concluded") == 0)
            continue;
        batch_send_expect(b, "job-cancel", json_pack("{s:s}", "id", id),
                          "JOB_STATUS_CHANGE", json_pack("{s:s,s:s}", "id", id,
                                                         "status", "null"),
                          PUSH_EVENT_TIMEOUT);
        waiting = true;
    }
    return waiting ? UNDO_AGAIN : job_undo_transaction(job, b);
}

/* Barriers: the descriptors' fdset ids before the nodes that open
 * them, the creation jobs' end before their dismissal. */
const struct job_step push_steps[] = {
    { "targets",       true,  run_targets,     undo_targets },
    { "target nodes",  false, run_nodes,       undo_nodes },
    { "target format", true,  run_format,      job_undo_create_jobs },
    { "dismiss",       false, job_run_dismiss, undo_nothing },
    { "target images", false, run_images,      undo_images },
    { "transaction",   true,  run_transaction, undo_transaction },
};
const int push_nsteps = (int) ARRAY_SIZE(push_steps);

/* --- while QEMU copies --- */
void
push_check_done(struct backup_job *job)
{
    if (job->state != JOB_RUNNING)
        return;
    for (size_t k = 0; k < job->ndisks; k++)
        if (!job->disks[k].copied)
            return;
    job->committed = true;          /* the new checkpoint stays */
    log_info("backup %s: every disk copied", job->id);
    job_stop(job, "completed", NULL);
}

void
push_job_event(struct backup_job *job, size_t k, const char *event, json_t *data)
{
    struct job_disk *d = &job->disks[k];
    const char *why = json_string_value(json_object_get(data, "error"));
    if (strcmp(event, "BLOCK_JOB_COMPLETED") == 0 && !why) {
        d->copied = true;
        d->current = d->total = (uint64_t) json_integer_value(json_object_get(data, "len"));
        push_check_done(job);
        return;
    }
    log_error("backup %s: copying disk '%s' failed: %s", job->id, d->disk,
              why ? why : "its block job was cancelled");
    job_stop(job, "failed", xasprintf("copying disk '%s' failed: %s", d->disk,
                                      why ? why : "its block job was cancelled"));
}

void
push_progress(struct agent *a, json_t *qjobs)
{
    for (struct backup_job *job = a->jobs; job; job = job->next)
        for (size_t k = 0; job->push && k < job->ndisks; k++) {
            struct job_disk *d = &job->disks[k];
            CLEANUP_FREE char *id = ckpt_tmp_job(job->id, d->disk);
            size_t i;
            json_t *j;
            json_array_foreach(qjobs, i, j) {
                const char *jid = json_string_value(json_object_get(j, "id"));
                if (!d->copied && jid && strcmp(jid, id) == 0) {
                    d->current = (uint64_t) json_integer_value(
                        json_object_get(j, "current-progress"));
                    d->total = (uint64_t) json_integer_value(
                        json_object_get(j, "total-progress"));
                }
            }
        }
}

void
push_encode_disk(const struct job_disk *d, json_t *jd)
{
    json_object_set_new(jd, "target", d->target
                        ? json_pack("{s:s}", "file", d->target)
                        : json_pack("{s:s}", "fd", d->fdname ? d->fdname : ""));
    if (d->backing)
        json_object_set_new(json_object_get(jd, "target"), "backing-file",
                            json_string(d->backing));
    json_object_set_new(jd, "progress",
                        json_pack("{s:I,s:I}", "current", (json_int_t) d->current,
                                  "total", (json_int_t) (d->total ? d->total : d->size)));
}
