/* disk-snapshot and disk-commit: a disk's layers through ckptd, with its
 * checkpoints carried along so that incrementals stay exact.
 *
 * disk-snapshot: each overlay file is created by the agent (O_EXCL, so an
 * existing file is never touched), formatted by QEMU (blockdev-create)
 * and added as a node with no backing; then ONE transaction through
 * txn.c puts the overlays on top and carries the checkpoints
 * (bitmap/layers.c).  Any failure before or in the transaction removes
 * the nodes and the files again: nothing is left.
 *
 * disk-commit: block-commit of the active layer, then at READY the
 * overlay's bitmaps go into the base (one transaction), then
 * block-job-complete; the reply comes once the job has ended and the
 * overlay is gone from the graph.  Both are changes: one at a time. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Node names of an overlay: not "ckptd-" (those are temporary, and the
 * start-up sweep removes them), but still recognisably ours. */
#define DISK_NODE_PREFIX "ckpto"
#define DISK_CREATE_TIMEOUT 60.0
#define DISK_COMMIT_TIMEOUT 86400.0     /* a commit copies the overlay's data */

static const char *
opt_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

static long long
next_number(struct agent *a)
{
    long long now_ms = (long long) (ev_time() * 1000);
    return a->last_job = now_ms > a->last_job ? now_ms : a->last_job + 1;
}

/* --- disk-snapshot --- */
struct snap_disk {
    char *disk, *file;
    char *proto, *fmt, *job;            /* node names, create job id */
    char *backing, *backing_fmt;
    uint64_t size;
    bool file_made, proto_added, job_made, fmt_added;
};

struct snap {
    struct request *req;
    struct snap_disk *disks;
    size_t n;
    char *ckpt_name, *ckpt_desc;
    int64_t now;
    char *error;                        /* why it failed, for the reply */
    enum ckpt_err error_class;
    json_t *jobs;                       /* query-jobs' answer */
};

static void
snap_free(struct snap *s)
{
    for (size_t k = 0; k < s->n; k++) {
        struct snap_disk *d = &s->disks[k];
        free(d->disk);
        free(d->file);
        free(d->proto);
        free(d->fmt);
        free(d->job);
        free(d->backing);
        free(d->backing_fmt);
    }
    free(s->disks);
    free(s->ckpt_name);
    free(s->ckpt_desc);
    free(s->error);
    json_decref(s->jobs);
    free(s);
}

/* Is dir the directory of the disk's image?  Overlays go next to the image
 * they stack on: a directory QEMU already opens files in, and that the
 * agent has checked is safe (access.c). */
static enum ckpt_err
check_place(const struct meta_disk *d, const char *file, struct ckpt_error *e)
{
    CLEANUP_FREE char *dir = xstrdup(file), *img = xstrdup(d->filename);
    char *slash = strrchr(dir, '/'), *islash = strrchr(img, '/');
    if (file[0] != '/' || !slash || !slash[1] || strcmp(slash + 1, ".") == 0 ||
        strcmp(slash + 1, "..") == 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "the overlay of disk '%s' "
                         "must be an absolute file name, not '%s'", d->disk, file);
    *slash = '\0';
    if (islash)
        *islash = '\0';
    char rd[PATH_MAX], ri[PATH_MAX], why[PATH_MAX + 128];
    if (!islash || !realpath(*dir ? dir : "/", rd) || !realpath(*img ? img : "/", ri) ||
        strcmp(rd, ri) != 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "the overlay '%s' of disk '%s' "
                         "must be in the directory of its image (%s)", file, d->disk,
                         islash ? img : d->filename);
    if (access_check_dir(rd, why, sizeof why) < 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "the overlay '%s' of disk '%s' "
                         "cannot go in %s: %s", file, d->disk, rd, why);
    return CKPT_OK;
}

/* The overlay file, made by us and only if it does not exist, with the
 * image's owner and mode so that QEMU opens it as it opens the image. */
static enum ckpt_err
make_file(struct snap_disk *sd, const struct meta_disk *d, struct ckpt_error *e)
{
    struct stat st;
    mode_t mode = stat(d->filename, &st) == 0 ? (st.st_mode & 0660) | 0600 : 0600;
    int fd = open(sd->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return ckpt_fail(e, errno == EEXIST ? CKPT_ERR_ALREADY_EXISTS : CKPT_ERR_GENERIC,
                         "cannot create the overlay '%s' of disk '%s': %s",
                         sd->file, d->disk, errno == EEXIST ? "the file exists"
                                                            : strerror(errno));
    if (geteuid() == 0 && stat(d->filename, &st) == 0 &&
        fchown(fd, st.st_uid, st.st_gid) < 0)
        log_warn("cannot give %s the owner of %s: %s", sd->file, d->filename,
                 strerror(errno));
    close(fd);
    sd->file_made = true;
    return CKPT_OK;
}

static enum ckpt_err
check_checkpoint(json_t *arg, struct ckpt_error *e)
{
    const char *key;
    json_t *v;
    if (!arg)
        return CKPT_OK;
    if (!json_is_object(arg))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "checkpoint must be an object");
    json_object_foreach(arg, key, v)
        if ((strcmp(key, "name") && strcmp(key, "description")) || !json_is_string(v))
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "checkpoint has no string "
                             "member '%s' (name, description)", key);
    if (!json_object_get(arg, "name"))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "checkpoint needs a name");
    return CKPT_OK;
}

/* The transaction's plan on the tree as it is now. */
static enum ckpt_err
snap_plan(struct snap *s, json_t *actions, struct ckpt_error *e)
{
    CLEANUP_FREE const char **disks = xcalloc(s->n + 1, sizeof *disks);
    CLEANUP_FREE const char **overlays = xcalloc(s->n + 1, sizeof *overlays);
    for (size_t k = 0; k < s->n; k++) {
        disks[k] = s->disks[k].disk;
        overlays[k] = s->disks[k].fmt;
    }
    struct ckpt_create_req cr = { .name = s->ckpt_name, .description = s->ckpt_desc,
                                  .now = s->now };
    struct ckpt_snapshot_req r = { disks, overlays, s->n, s->ckpt_name ? &cr : NULL };
    return ckpt_plan_snapshot(&s->req->agent->tree, &r, actions, e);
}

static void snap_undo_nodes(struct snap *s);

static void
snap_fail(struct snap *s, enum ckpt_err cls, char *why)
{
    if (!s->error) {
        s->error = why;
        s->error_class = cls;
    } else {
        free(why);
    }
    snap_undo_nodes(s);
}

/* Undo, last step first: nodes (format, then protocol), then files. */
static void
snap_undo_files(const char *err, void *opaque)
{
    struct snap *s = opaque;
    if (err)
        log_warn("disk-snapshot: removing its nodes: %s", err);
    for (size_t k = 0; k < s->n; k++)
        if (s->disks[k].file_made && unlink(s->disks[k].file) < 0)
            log_warn("cannot remove %s: %s", s->disks[k].file, strerror(errno));
    req_error(s->req, s->error_class, "%s", s->error);
    snap_free(s);
}

static void
snap_undo_proto(const char *err, void *opaque)
{
    struct snap *s = opaque;
    struct batch *b = batch_new(s->req->agent, snap_undo_files, s);
    if (err)
        log_warn("disk-snapshot: removing its nodes: %s", err);
    for (size_t k = 0; k < s->n; k++)
        if (s->disks[k].proto_added)
            batch_send(b, "blockdev-del", json_pack("{s:s}", "node-name",
                                                    s->disks[k].proto), NULL, NULL);
    batch_arm(b);
}

static void
snap_undo_nodes(struct snap *s)
{
    struct batch *b = batch_new(s->req->agent, snap_undo_proto, s);
    for (size_t k = 0; k < s->n; k++) {
        if (s->disks[k].job_made)
            batch_send(b, "job-dismiss", json_pack("{s:s}", "id", s->disks[k].job),
                       NULL, NULL);
        if (s->disks[k].fmt_added)
            batch_send(b, "blockdev-del", json_pack("{s:s}", "node-name",
                                                    s->disks[k].fmt), NULL, NULL);
    }
    batch_arm(b);
}

static void
snap_txn_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct snap *s = opaque;
    if (err && (strcmp(err->class, "Disconnected") == 0 ||
                strcmp(err->class, "Timeout") == 0)) {
        /* No answer: the overlays may be the disks' active layers now, and
         * the guest writing into them.  Their files stay; the tree is
         * read again when QEMU is back. */
        req_error(s->req, CKPT_ERR_NOT_CONNECTED, "QEMU did not answer the snapshot "
                  "of disk '%s' (%s); whether it was taken shows in query-disks once "
                  "QEMU is back, and its overlay files were kept", s->disks[0].disk,
                  err->desc);
        snap_free(s);
        return;
    }
    if (err) {
        snap_fail(s, CKPT_ERR_QEMU, xasprintf("QEMU refused the snapshot of disk '%s': %s",
                            s->disks[0].disk, err->desc));
        return;
    }
    json_t *ret = json_object(), *disks = json_array();
    for (size_t k = 0; k < s->n; k++) {
        ssize_t d = meta_tree_find_disk(&a->tree, s->disks[k].disk);
        if (d >= 0)
            json_array_append_new(disks, enc_disk(&a->tree.disks[d]));
    }
    json_object_set_new(ret, "disks", disks);
    ssize_t c = s->ckpt_name ? meta_tree_find_ckpt(&a->tree, s->ckpt_name) : -1;
    if (c >= 0)
        json_object_set_new(ret, "checkpoint", enc_checkpoint(&a->tree, (size_t) c, false));
    req_reply(s->req, ret);
    if (c >= 0)
        agent_event(a, "CHECKPOINT_CREATED", json_pack("{s:s}", "name", s->ckpt_name));
    snap_free(s);
}

static void
snap_transaction(const char *err, void *opaque)
{
    struct snap *s = opaque;
    if (err) {
        snap_fail(s, CKPT_ERR_QEMU, xasprintf("adding the overlay nodes: %s", err));
        return;
    }
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    if (snap_plan(s, actions, &e)) {
        json_decref(actions);
        snap_fail(s, e.code, xstrdup(e.msg));
        return;
    }
    txn_send(s->req->agent, actions, snap_txn_done, s);
}

static void
snap_add_formats(const char *err, void *opaque)
{
    struct snap *s = opaque;
    if (err) {
        snap_fail(s, CKPT_ERR_QEMU, xasprintf("dismissing the create jobs: %s", err));
        return;
    }
    struct batch *b = batch_new(s->req->agent, snap_transaction, s);
    for (size_t k = 0; k < s->n; k++) {
        s->disks[k].fmt_added = true;   /* a refused add makes its del fail: quiet */
        batch_send(b, "blockdev-add", json_pack("{s:s,s:s,s:s,s:n}", "driver", "qcow2",
                   "node-name", s->disks[k].fmt, "file", s->disks[k].proto,
                   "backing"), NULL, NULL);
    }
    batch_arm(b);
}

static void
keep_jobs(json_t *ret, void *opaque)
{
    struct snap *s = opaque;
    json_decref(s->jobs);
    s->jobs = json_incref(ret);
}

static void
snap_dismiss(const char *err, void *opaque)
{
    struct snap *s = opaque;
    if (err) {
        snap_fail(s, CKPT_ERR_QEMU, xasprintf("formatting the overlays: %s", err));
        return;
    }
    /* A create job that failed concludes too: its error is in query-jobs. */
    for (size_t k = 0; k < s->n; k++) {
        json_t *j = NULL, *it;
        size_t i;
        json_array_foreach(s->jobs, i, it) {
            const char *id = opt_str(it, "id");
            if (id && strcmp(id, s->disks[k].job) == 0)
                j = it;
        }
        const char *why = json_string_value(json_object_get(j, "error"));
        if (why) {
            snap_fail(s, CKPT_ERR_QEMU, xasprintf("QEMU could not format the overlay "
                      "'%s' of disk '%s': %s", s->disks[k].file, s->disks[k].disk, why));
            return;
        }
    }
    struct batch *b = batch_new(s->req->agent, snap_add_formats, s);
    for (size_t k = 0; k < s->n; k++) {
        s->disks[k].job_made = false;
        batch_send(b, "job-dismiss", json_pack("{s:s}", "id", s->disks[k].job), NULL, NULL);
    }
    batch_arm(b);
}

static void
snap_query_jobs(const char *err, void *opaque)
{
    struct snap *s = opaque;
    if (err) {
        snap_fail(s, CKPT_ERR_QEMU, xasprintf("formatting the overlays: %s", err));
        return;
    }
    struct batch *b = batch_new(s->req->agent, snap_dismiss, s);
    batch_send(b, "query-jobs", NULL, keep_jobs, s);
    batch_arm(b);
}

static void
snap_format(const char *err, void *opaque)
{
    struct snap *s = opaque;
    if (err) {
        snap_fail(s, CKPT_ERR_QEMU, xasprintf("opening the overlay files: %s", err));
        return;
    }
    struct batch *b = batch_new(s->req->agent, snap_query_jobs, s);
    for (size_t k = 0; k < s->n; k++) {
        struct snap_disk *d = &s->disks[k];
        d->job_made = true;
        json_t *options = json_pack("{s:s,s:s,s:I,s:s,s:s}", "driver", "qcow2",
                                    "file", d->proto, "size", (json_int_t) d->size,
                                    "backing-file", d->backing, "backing-fmt",
                                    d->backing_fmt);
        batch_send_expect(b, "blockdev-create",
                          json_pack("{s:s,s:o}", "job-id", d->job, "options", options),
                          "JOB_STATUS_CHANGE",
                          json_pack("{s:s,s:s}", "id", d->job, "status", "concluded"),
                          DISK_CREATE_TIMEOUT);
    }
    batch_arm(b);
}

/* Fills s->disks from the arguments, checking everything that can be
 * checked before anything is made. */
static enum ckpt_err
snap_args(struct snap *s, json_t *list, struct ckpt_error *e)
{
    struct agent *a = s->req->agent;
    size_t i;
    json_t *it;
    if (json_array_size(list) == 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk-snapshot needs at "
                         "least one disk");
    long long num = next_number(a);
    s->disks = xcalloc(json_array_size(list), sizeof *s->disks);
    json_array_foreach(list, i, it) {
        const char *key, *disk = opt_str(it, "disk"), *file = opt_str(it, "file");
        json_t *v;
        json_object_foreach(it, key, v)
            if (strcmp(key, "disk") && strcmp(key, "file"))
                return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "a disk of disk-snapshot "
                                 "has no member '%s' (disk, file)", key);
        if (!disk || !file)
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "each disk of disk-snapshot "
                             "needs 'disk' and 'file' (strings)");
        ssize_t d = meta_tree_find_disk(&a->tree, disk);
        if (d < 0)
            return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "no disk '%s'", disk);
        const struct meta_disk *md = &a->tree.disks[d];
        if (job_disk_busy(a, disk))
            return ckpt_fail(e, CKPT_ERR_BUSY, "disk '%s' is in a running backup", disk);
        enum ckpt_err err = check_place(md, file, e);
        if (err)
            return err;
        struct snap_disk *sd = &s->disks[s->n++];
        sd->disk = xstrdup(disk);
        sd->file = xstrdup(file);
        sd->fmt = xasprintf(DISK_NODE_PREFIX "%lld-%zu", num, i);
        sd->proto = xasprintf(DISK_NODE_PREFIX "%lld-%zu-file", num, i);
        sd->job = xasprintf(CKPT_TMP_PREFIX "create-%lld-%zu", num, i);
        sd->backing = xstrdup(md->filename);
        sd->backing_fmt = xstrdup(md->format);
        sd->size = md->virtual_size;
        for (size_t k = 0; k + 1 < s->n; k++)
            if (strcmp(s->disks[k].file, file) == 0)
                return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disks '%s' and '%s' "
                                 "name the same overlay '%s'", s->disks[k].disk, disk,
                                 file);
    }
    /* The plan itself, against the tree now: disks listed twice, disks
     * that cannot carry their checkpoints, the new checkpoint's name. */
    json_t *dry = json_array();
    enum ckpt_err err = snap_plan(s, dry, e);
    json_decref(dry);
    return err;
}

static enum cmd_result
cmd_snapshot(struct request *req)
{
    struct snap *s = xcalloc(1, sizeof *s);
    s->req = req;
    s->now = (int64_t) time(NULL);
    struct ckpt_error e = { 0 };
    json_t *ckpt = json_object_get(req->args, "checkpoint");
    if (!check_checkpoint(ckpt, &e)) {
        s->ckpt_name = opt_str(ckpt, "name") ? xstrdup(opt_str(ckpt, "name")) : NULL;
        s->ckpt_desc = opt_str(ckpt, "description") ? xstrdup(opt_str(ckpt, "description"))
                                                    : NULL;
    }
    if (e.code || snap_args(s, json_object_get(req->args, "disks"), &e)) {
        req_fail(req, &e);
        snap_free(s);
        return CMD_DONE;
    }
    for (size_t k = 0; k < s->n; k++)
        if (make_file(&s->disks[k], &req->agent->tree.disks[meta_tree_find_disk(
                          &req->agent->tree, s->disks[k].disk)], &e)) {
            for (size_t j = 0; j < k; j++)
                unlink(s->disks[j].file);
            req_fail(req, &e);
            snap_free(s);
            return CMD_DONE;
        }
    struct batch *b = batch_new(req->agent, snap_format, s);
    for (size_t k = 0; k < s->n; k++) {
        s->disks[k].proto_added = true;
        batch_send(b, "blockdev-add", json_pack("{s:s,s:s,s:s}", "driver", "file",
                   "node-name", s->disks[k].proto, "filename", s->disks[k].file),
                   NULL, NULL);
    }
    batch_arm(b);
    return CMD_WAIT;
}

/* --- disk-commit --- */
struct commit {
    struct agent *agent;
    struct request *req;
    char *disk, *active, *base, *job;
    char *proto;                        /* the overlay's protocol node, if ours */
    struct event_waiter *ready_w, *done_w, *cancel_w;
    json_t *undo;                       /* stops what the merge made record */
    bool merged;                        /* the merge transaction was accepted */
    bool base_no_bitmaps;               /* the base is not qcow2: it takes
                                         * no bitmap, not even a mark */
    char *error;
    enum ckpt_err error_class;
};

static void
commit_stop_waiting(struct commit *c)
{
    struct event_waiter **ws[] = { &c->ready_w, &c->done_w, &c->cancel_w };
    for (size_t i = 0; i < ARRAY_SIZE(ws); i++)
        if (*ws[i]) {
            vm_cancel_wait(c->agent, *ws[i]);
            *ws[i] = NULL;
        }
}

static void
commit_free(struct commit *c)
{
    commit_stop_waiting(c);
    free(c->disk);
    free(c->active);
    free(c->base);
    free(c->job);
    free(c->proto);
    json_decref(c->undo);
    free(c->error);
    free(c);
}

/* Replies and frees c; takes why (never c->error itself). */
static void
commit_reply_error(struct commit *c, enum ckpt_err cls, char *why)
{
    req_error(c->req, cls, "%s", why);
    free(why);
    commit_free(c);
}

static void
commit_undone(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    if (err)
        log_warn("disk-commit of '%s': stopping the base's bitmaps: %s", c->disk,
                 err->desc);
    char *why = c->error;
    c->error = NULL;
    commit_reply_error(c, c->error_class, why);
}

/* The job ended without the overlay going: the base's bitmaps that the
 * merge made record stop again (the overlay's still record).  Takes why. */
static void
commit_failed(struct commit *c, enum ckpt_err cls, char *why)
{
    free(c->error);
    c->error = why;
    c->error_class = cls;
    if (c->merged && json_array_size(c->undo)) {
        json_t *undo = c->undo;
        c->undo = NULL;
        txn_send(c->req->agent, undo, commit_undone, c);
        return;
    }
    c->error = NULL;
    commit_reply_error(c, cls, why);
}

static void
commit_gone(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    ssize_t d = meta_tree_find_disk(&a->tree, c->disk);
    if (err || d < 0) {
        commit_reply_error(c, CKPT_ERR_QEMU, xasprintf("disk '%s' was committed, but "
                           "reading the disks again failed: %s", c->disk,
                           err ? err->desc : "the disk is gone"));
        return;
    }
    req_reply(c->req, enc_disk(&a->tree.disks[d]));
    commit_free(c);
}

static void
commit_deleted(const char *err, void *opaque)
{
    struct commit *c = opaque;
    if (err)
        log_warn("disk-commit of '%s': removing the overlay's nodes: %s", c->disk, err);
    vm_refresh(c->req->agent, commit_gone, c);
}

static void
commit_del_proto(const char *err, void *opaque)
{
    struct commit *c = opaque;
    struct batch *b = batch_new(c->req->agent, commit_deleted, c);
    if (err)
        log_warn("disk-commit of '%s': removing the overlay: %s", c->disk, err);
    if (c->proto)
        batch_send(b, "blockdev-del", json_pack("{s:s}", "node-name", c->proto), NULL, NULL);
    batch_arm(b);
}

/* The job's end: BLOCK_JOB_COMPLETED (with an error, or without: the
 * overlay is out of the chain) or BLOCK_JOB_CANCELLED. */
static void
commit_ended(struct agent *a, json_t *data, void *opaque, bool cancelled)
{
    struct commit *c = opaque;
    if (cancelled)
        c->cancel_w = NULL;
    else
        c->done_w = NULL;
    commit_stop_waiting(c);
    const char *why = json_string_value(json_object_get(data, "error"));
    if (!data || why || cancelled || c->error) {
        commit_failed(c, c->error ? c->error_class : CKPT_ERR_QEMU,
                      c->error ? xstrdup(c->error) : xasprintf(
                          "the commit of disk '%s' did not complete: %s", c->disk,
                          !data ? "QEMU went away or did not finish it in time"
                          : why ? why : "its job was cancelled"));
        return;
    }
    struct batch *b = batch_new(a, commit_del_proto, c);
    if (strncmp(c->active, DISK_NODE_PREFIX, strlen(DISK_NODE_PREFIX)) == 0)
        batch_send(b, "blockdev-del", json_pack("{s:s}", "node-name", c->active), NULL, NULL);
    batch_arm(b);
}

static void
commit_completed(struct agent *a, json_t *data, void *opaque)
{
    commit_ended(a, data, opaque, false);
}

static void
commit_cancelled(struct agent *a, json_t *data, void *opaque)
{
    commit_ended(a, data, opaque, true);
}

static void
commit_sent(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    if (err && !c->error) {
        c->error = xasprintf("QEMU refused to complete the commit of disk '%s': %s",
                             c->disk, err->desc);
        c->error_class = CKPT_ERR_QEMU;
        vm_send(c->req->agent, "block-job-cancel", json_pack("{s:s}", "device", c->job),
                NULL, NULL);
    }
}

static void
commit_merged(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    if (err) {
        /* The base stays as it was; the job ends without a pivot. */
        c->error = xasprintf("QEMU refused to merge the bitmaps of disk '%s' into "
                             "'%s': %s", c->disk, c->base, err->desc);
        c->error_class = CKPT_ERR_QEMU;
        vm_send(a, "block-job-cancel", json_pack("{s:s}", "device", c->job), NULL, NULL);
        return;
    }
    c->merged = true;
    vm_send(a, "block-job-complete", json_pack("{s:s}", "device", c->job), commit_sent, c);
}

static void
commit_ready_tree(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    ssize_t d = err ? -1 : meta_tree_find_disk(&a->tree, c->disk);
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    /* Into a raw base only once no checkpoint is on the overlay (checked
     * before the job started): its marks go with it. */
    if (d < 0 || (!c->base_no_bitmaps &&
                  ckpt_plan_commit(&a->tree, (size_t) d, c->base, actions, c->undo, &e))) {
        json_decref(actions);
        c->error = d < 0 ? xasprintf("disk '%s': reading the disks during the commit "
                                     "failed", c->disk) : xstrdup(e.msg);
        c->error_class = d < 0 ? CKPT_ERR_QEMU : e.code;
        vm_send(a, "block-job-cancel", json_pack("{s:s}", "device", c->job), NULL, NULL);
        return;
    }
    if (json_array_size(actions) == 0) {
        json_decref(actions);
        commit_merged(a, NULL, c);
        return;
    }
    txn_send(a, actions, commit_merged, c);
}

static void
commit_ready(struct agent *a, json_t *data, void *opaque)
{
    struct commit *c = opaque;
    c->ready_w = NULL;
    if (!data) {
        c->error = xasprintf("the commit of disk '%s' did not get ready in time", c->disk);
        c->error_class = CKPT_ERR_QEMU;
        vm_send(a, "block-job-cancel", json_pack("{s:s,s:b}", "device", c->job,
                                                 "force", 1), NULL, NULL);
        return;
    }
    vm_refresh(a, commit_ready_tree, c);
}

static void
commit_started(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    if (err)
        commit_reply_error(c, CKPT_ERR_QEMU, xasprintf("QEMU refused to commit disk "
                           "'%s' into '%s': %s", c->disk, c->base, err->desc));
}

/* A checkpoint with a bitmap on disk's top layer, or NULL. */
static const char *
overlay_checkpoint(struct agent *a, const char *disk)
{
    const struct meta_tree *t = &a->tree;
    ssize_t d = meta_tree_find_disk(t, disk);
    for (size_t i = 0; d >= 0 && t->disks[d].tracking && i < t->nckpts; i++) {
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], (size_t) d);
        if (m && m->parts[0].layer == 0)
            return t->ckpts[i].rec.name;
    }
    return NULL;
}

static void
commit_nodes(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct commit *c = opaque;
    struct agent *a = c->req->agent;
    if (err) {
        commit_reply_error(c, CKPT_ERR_QEMU, xasprintf("listing the nodes of disk '%s': "
                           "%s", c->disk, err->desc));
        return;
    }
    const char *base = meta_backing_node(ret, c->active);
    if (!base) {
        commit_reply_error(c, CKPT_ERR_UNSUPPORTED, xasprintf("disk '%s' has no overlay "
                           "to commit: its active layer '%s' has no backing image",
                           c->disk, c->active));
        return;
    }
    c->base = xstrdup(base);
    /* The overlay's checkpoints need a base that stores bitmaps. */
    const char *held = overlay_checkpoint(a, c->disk);
    json_t *bn = NULL, *it;
    size_t k;
    json_array_foreach(ret, k, it)
        if (opt_str(it, "node-name") && strcmp(opt_str(it, "node-name"), base) == 0)
            bn = it;
    const char *drv = bn ? opt_str(bn, "drv") : NULL;
    c->base_no_bitmaps = !drv || strcmp(drv, "qcow2") != 0;
    if (held && (!drv || strcmp(drv, "qcow2") != 0)) {
        commit_reply_error(c, CKPT_ERR_UNSUPPORTED, xasprintf("disk '%s' cannot be "
                           "committed into '%s' (%s): checkpoint '%s' on its overlay "
                           "would be lost, as only qcow2 images store bitmaps; delete "
                           "the overlay's checkpoints first", c->disk, base,
                           drv ? drv : "unknown format", held));
        return;
    }
    /* The overlay's protocol node goes too, if disk-snapshot made it. */
    CLEANUP_FREE char *proto = xasprintf("%s-file", c->active);
    size_t i;
    json_t *n;
    json_array_foreach(ret, i, n)
        if (strncmp(c->active, DISK_NODE_PREFIX, strlen(DISK_NODE_PREFIX)) == 0 &&
            !c->proto && opt_str(n, "node-name") &&
            strcmp(opt_str(n, "node-name"), proto) == 0)
            c->proto = xstrdup(proto);
    json_t *m = json_pack("{s:s}", "device", c->job);
    c->ready_w = vm_wait_event(a, "BLOCK_JOB_READY", json_incref(m), DISK_COMMIT_TIMEOUT,
                               commit_ready, c);
    c->done_w = vm_wait_event(a, "BLOCK_JOB_COMPLETED", json_incref(m),
                              DISK_COMMIT_TIMEOUT, commit_completed, c);
    c->cancel_w = vm_wait_event(a, "BLOCK_JOB_CANCELLED", m, DISK_COMMIT_TIMEOUT,
                                commit_cancelled, c);
    vm_send(a, "block-commit", json_pack("{s:s,s:s,s:s}", "job-id", c->job, "device",
            c->active, "base-node", c->base), commit_started, c);
}

static enum cmd_result
cmd_commit(struct request *req)
{
    struct agent *a = req->agent;
    const char *disk = opt_str(req->args, "disk");
    ssize_t d = meta_tree_find_disk(&a->tree, disk);
    if (d < 0) {
        req_error(req, CKPT_ERR_NOT_FOUND, "no disk '%s'", disk);
        return CMD_DONE;
    }
    if (job_disk_busy(a, disk)) {
        req_error(req, CKPT_ERR_BUSY, "disk '%s' is in a running backup", disk);
        return CMD_DONE;
    }
    struct commit *c = xcalloc(1, sizeof *c);
    c->agent = a;
    c->req = req;
    c->disk = xstrdup(disk);
    c->active = xstrdup(a->tree.disks[d].active);
    c->job = xasprintf(CKPT_TMP_PREFIX "commit-%lld", next_number(a));
    c->undo = json_array();
    vm_send(a, "query-named-block-nodes", json_pack("{s:b}", "flat", 1), commit_nodes, c);
    return CMD_WAIT;
}

static const struct cmd_arg snapshot_args[] = {
    { "disks", ARG_OBJECT_LIST, true }, { "checkpoint", ARG_OBJECT, false },
    { NULL, 0, false },
};
static const struct cmd_arg commit_args[] = {
    { "disk", ARG_STRING, true }, { NULL, 0, false },
};

const struct ckpt_cmd disk_cmds[] = {
    { "disk-snapshot", snapshot_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH, cmd_snapshot },
    { "disk-commit", commit_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH, cmd_commit },
    { NULL, NULL, 0, NULL },
};
