/* The steps of a pull backup job, each with its undo (job.c runs them).
 *
 *   step            does                                undo
 *   scratch files   create DIR/ckptd-JOB-DISK.qcow2     unlink them
 *   NBD server      nbd-server-start (first job only)   stop it after the last
 *   scratch nodes   blockdev-add file nodes             blockdev-del
 *   format          blockdev-create qcow2 in them       dismiss the create jobs
 *   dismiss         job-dismiss the create jobs         (format's undo)
 *   run state       with our own filter and several     -
 *                   disks: is the guest running?
 *   overlays        blockdev-add qcow2 over the disks   blockdev-del
 *                   (no backing with our own filter)
 *   filters         our own filter (job-fleece.c)       blockdev-del
 *   transaction     temporary bitmaps, new checkpoint,  cancel the fleecing
 *                   blockdev-backup sync=none           jobs, remove the
 *                                                       bitmaps, and the new
 *                                                       checkpoint if the job
 *                                                       never ran
 *   switch          the device onto our own filter      point it back
 *   view            snapshot-access over it             blockdev-del
 *   unexported      -                                   wait for the exports'
 *                                                       end (all three in
 *                                                       job-fleece.c)
 *   exports         block-export-add                    block-export-del
 *
 * An undo works from QEMU's listing (job->exports, qjobs, nodes) and
 * removes what carries the job's mark, or any of ours for the sweep: it
 * is right whether its step finished, failed half way, or never reached
 * QEMU, and for what a crashed agent left. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define STEP_EVENT_TIMEOUT 60.0
#define UNDO_EVENT_TIMEOUT 30.0

/* Names in QEMU that belong to this job (any of ours for the sweep). */
bool
job_id_is_mine(const struct backup_job *job, const char *id)
{
    return id && ckpt_tmp_id_is_ours(id, job->sweep ? NULL : job->id);
}

/* A node of this job (any of ours, for the sweep: num -1) of one kind
 * (bitmap/names.c). */
bool
job_node_is_mine(const struct backup_job *job, const char *node, char kind)
{
    return node && ckpt_tmp_node_is_ours(node, job->num) &&
           node[strlen(CKPT_TMP_PREFIX)] == kind;
}

/* An entry of QEMU's job listing that belongs to this job (any of ours
 * for the sweep) and still exists: true, with its id, status and type. */
bool
job_listed(const struct backup_job *job, json_t *entry, const char **id,
           const char **status, const char **type)
{
    *id = json_string_value(json_object_get(entry, "id"));
    *status = json_string_value(json_object_get(entry, "status"));
    *type = json_string_value(json_object_get(entry, "type"));
    return job_id_is_mine(job, *id) && *status && *type && strcmp(*status, "null") != 0;
}

/* --- scratch files --- */
static void
run_files(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        char *path = ckpt_tmp_scratch(job->scratch_dir, job->agent->opt.tag, job->id,
                                      job->disks[k].disk);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            job->error = xasprintf("cannot create scratch file %s: %s", path,
                                   strerror(errno));
            job->error_class = CKPT_ERR_GENERIC;
            free(path);
            return;
        }
        close(fd);
        job->disks[k].scratch = path;
        str_vec_append(&job->files, xstrdup(path));
    }
}

/* Scratch files a dead agent left in the scratch directory, at any depth
 * below it. */
static void
find_stale_files(struct backup_job *job, const char *dir, int depth)
{
    DIR *d = depth < 8 ? opendir(dir) : NULL;
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        CLEANUP_FREE char *path = xasprintf("%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            find_stale_files(job, path, depth + 1);
        else if (S_ISREG(st.st_mode) &&
                 ckpt_tmp_file_is_ours(de->d_name, job->agent->opt.tag))
            str_vec_append(&job->files, xstrdup(path));
    }
    closedir(d);
}

/* The files are removed by job_remove_files, once every undo has been
 * answered: QEMU has closed them by then.  Removed while QEMU still held
 * one open, its last close would free the blocks, gigabytes after a long
 * backup, on QEMU's main loop, where the guest's I/O waits. */
static enum undo_result
undo_files(struct backup_job *job, struct batch *b)
{
    if (job->sweep)
        find_stale_files(job, job->agent->opt.scratch_dir, 0);
    return UNDO_DONE;
}

void
job_remove_files(struct backup_job *job)
{
    for (size_t i = 0; i < job->files.len; i++) {
        /* The name goes now; the blocks are freed off the loop (a
         * scratch file can be gigabytes). */
        if (unlink_later(job->files.ptr[i]) == 0)
            log_info("removed scratch file %s", job->files.ptr[i]);
        else if (errno != ENOENT)
            log_warn("cannot remove scratch file %s: %m", job->files.ptr[i]);
    }
    str_vec_free_all(&job->files);
}

/* --- NBD server --- */
static json_t *
server_start_args(json_t *server)
{
    const char *transport = json_string_value(json_object_get(server, "transport"));
    if (strcmp(transport, "unix") == 0)
        return json_pack("{s:{s:s,s:{s:O}}}", "addr", "type", "unix", "data",
                         "path", json_object_get(server, "path"));
    json_t *args = json_pack("{s:{s:s,s:{s:O,s:O}}}", "addr", "type", "inet", "data",
                             "host", json_object_get(server, "host"),
                             "port", json_object_get(server, "port"));
    if (json_is_true(json_object_get(server, "tls")))
        json_object_set_new(args, "tls-creds", json_string(CKPT_TMP_TLS_ID));
    return args;
}

/* The server is ours from the moment QEMU says it started, so that any
 * failure after this, even in the same batch, stops it again. */
static void
server_started(json_t *ret, void *opaque)
{
    struct backup_job *job = opaque;
    struct agent *a = job->agent;
    json_decref(a->nbd_server);
    a->nbd_server = json_incref(job->server);
    job->server_started = true;
    const char *path = json_string_value(json_object_get(job->server, "path"));
    if (path && access_socket(a, path) < 0)
        log_warn("cannot set the mode and group of %s: %m", path);
}

static void
run_server(struct backup_job *job, struct batch *b)
{
    if (!job->start_server)
        return;
    if (json_is_true(json_object_get(job->server, "tls")))
        batch_send(b, "object-add",
                   json_pack("{s:s,s:s,s:s,s:s,s:b}", "qom-type", "tls-creds-x509",
                             "id", CKPT_TMP_TLS_ID, "dir", job->agent->opt.tls_dir,
                             "endpoint", "server", "verify-peer", 0), NULL, NULL);
    batch_send(b, "nbd-server-start", server_start_args(job->server),
               server_started, job);
}

static bool
other_job_running(const struct backup_job *job)
{
    for (const struct backup_job *j = job->agent->jobs; j; j = j->next)
        if (j != job)
            return true;
    return false;
}

/* Ours: this agent started it (or, at start-up, it listens on our own
 * socket, in our private directory, where only we put one).  A server
 * another QMP client started is left alone. */
static bool
server_is_ours(const struct backup_job *job)
{
    struct agent *a = job->agent;
    if (!job->sweep)
        return a->nbd_server != NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", a->opt.nbd_socket);
    bool listening = fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return listening;
}

/* Stopping the server ends every export on it: one that another QMP
 * client added keeps the server running. */
static const char *
foreign_export(const struct backup_job *job)
{
    size_t i;
    json_t *e;
    json_array_foreach(job->exports, i, e) {
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *type = json_string_value(json_object_get(e, "type"));
        if (id && type && strcmp(type, "nbd") == 0 && !ckpt_tmp_id_is_ours(id, NULL))
            return id;
    }
    return NULL;
}

static enum undo_result
undo_server(struct backup_job *job, struct batch *b)
{
    struct agent *a = job->agent;
    if (other_job_running(job) || !server_is_ours(job))
        return UNDO_DONE;
    const char *theirs = foreign_export(job);
    if (theirs) {
        log_warn("the NBD server stays up: export '%s' of another client is on it",
                 theirs);
        return UNDO_DONE;
    }
    bool tls = job->sweep || json_is_true(json_object_get(a->nbd_server, "tls"));
    batch_send(b, "nbd-server-stop", NULL, NULL, NULL);
    if (tls)
        batch_send(b, "object-del", json_pack("{s:s}", "id", CKPT_TMP_TLS_ID), NULL, NULL);
    json_decref(a->nbd_server);
    a->nbd_server = NULL;
    return UNDO_DONE;
}

/* --- scratch nodes --- */
static void
run_nodes(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *node = ckpt_tmp_node('s', job->num, k);
        batch_send(b, "blockdev-add",
                   json_pack("{s:s,s:s,s:s}", "driver", "file", "node-name", node,
                             "filename", job->disks[k].scratch), NULL, NULL);
    }
}

/* blockdev-del of every node of the job of one kind that QEMU listed; a
 * scratch file node's file (the sweep's only record of it) is kept for
 * removal. */
void
job_delete_nodes(struct backup_job *job, struct batch *b, char kind)
{
    size_t i;
    json_t *n;
    json_array_foreach(job->nodes, i, n) {
        const char *name = json_string_value(json_object_get(n, "node-name"));
        if (!job_node_is_mine(job, name, kind))
            continue;
        const char *file = json_string_value(json_object_get(n, "file"));
        const char *leaf = file && strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
        if (kind == 's' && leaf && ckpt_tmp_file_is_ours(leaf, job->agent->opt.tag))
            str_vec_append(&job->files, xstrdup(file));
        batch_send(b, "blockdev-del", json_pack("{s:s}", "node-name", name), NULL, NULL);
    }
}

static enum undo_result
undo_nodes(struct backup_job *job, struct batch *b)
{
    job_delete_nodes(job, b, 's');
    return UNDO_DONE;
}

/* --- formatting the scratch images --- */
char *
job_create_job_id(const struct backup_job *job, size_t k)
{
    CLEANUP_FREE char *base = ckpt_tmp_job(job->id, job->disks[k].disk);
    return xasprintf("%s.create", base);
}

static void
run_format(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *id = job_create_job_id(job, k);
        CLEANUP_FREE char *node = ckpt_tmp_node('s', job->num, k);
        batch_send_expect(b, "blockdev-create",
                          json_pack("{s:s,s:{s:s,s:s,s:I}}", "job-id", id, "options",
                                    "driver", "qcow2", "file", node,
                                    "size", (json_int_t) job->disks[k].size),
                          "JOB_STATUS_CHANGE",
                          json_pack("{s:s,s:s}", "id", id, "status", "concluded"),
                          STEP_EVENT_TIMEOUT);
    }
}

void
job_run_dismiss(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *id = job_create_job_id(job, k);
        batch_send(b, "job-dismiss", json_pack("{s:s}", "id", id), NULL, NULL);
    }
}

/* Image-creation jobs finish in milliseconds: those still running are
 * awaited (then listed again), concluded ones dismissed. */
static enum undo_result
undo_format(struct backup_job *job, struct batch *b)
{
    size_t i;
    json_t *j;
    bool waiting = false;
    json_array_foreach(job->qjobs, i, j) {
        const char *id, *status, *type;
        if (!job_listed(job, j, &id, &status, &type) || strcmp(type, "create") != 0)
            continue;
        if (strcmp(status, "concluded") == 0) {
            batch_send(b, "job-dismiss", json_pack("{s:s}", "id", id), NULL, NULL);
        } else {
            batch_expect_event(b, "JOB_STATUS_CHANGE",
                               json_pack("{s:s,s:s}", "id", id, "status", "concluded"),
                               UNDO_EVENT_TIMEOUT);
            waiting = true;
        }
    }
    return waiting ? UNDO_AGAIN : UNDO_DONE;
}

static enum undo_result
undo_dismiss(struct backup_job *job, struct batch *b)
{
    return UNDO_DONE;           /* undo_format dismisses what is left */
}

/* --- overlays: qcow2 scratch nodes backed by the disks --- */
static void
run_overlays(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *fmt = ckpt_tmp_node('f', job->num, k);
        CLEANUP_FREE char *file = ckpt_tmp_node('s', job->num, k);
        /* Our own filter's target holds copied clusters only: the
         * filter, not a backing file, knows where the rest is. */
        json_t *backing = job->own_filter ? json_null() : json_string(job->disks[k].node);
        batch_send(b, "blockdev-add",
                   json_pack("{s:s,s:s,s:s,s:o}", "driver", "qcow2", "node-name", fmt,
                             "file", file, "backing", backing), NULL, NULL);
    }
}

static enum undo_result
undo_overlays(struct backup_job *job, struct batch *b)
{
    job_delete_nodes(job, b, 'f');
    return UNDO_DONE;
}

/* --- the transaction --- */

/* The new checkpoint's disks: as given, else the backed-up disks that
 * can hold checkpoints (the point where this backup's data ends). */
static size_t
checkpoint_disks(const struct backup_job *job, const struct meta_tree *t,
                 const char **names)
{
    size_t n = 0, i;
    json_t *d;
    if (job->ckpt_disks) {
        json_array_foreach(job->ckpt_disks, i, d)
            names[n++] = json_string_value(d);
        return n;
    }
    for (size_t k = 0; k < job->ndisks; k++) {
        ssize_t di = meta_tree_find_disk(t, job->disks[k].disk);
        if (di >= 0 && t->disks[di].can_checkpoint)
            names[n++] = job->disks[k].disk;
    }
    return n;
}

enum ckpt_err
job_plan_transaction(const struct backup_job *job, const struct meta_tree *t,
                     json_t *actions, struct ckpt_error *e)
{
    CLEANUP_FREE const char **names =
        xcalloc(job->ndisks + json_array_size(job->ckpt_disks) + 1, sizeof *names);
    struct ckpt_create_req c = {
        .name = job->checkpoint, .description = job->ckpt_desc, .now = job->now,
        .disks = names, .ndisks = checkpoint_disks(job, t, names),
    };
    struct ckpt_backup_req r = {
        .job = job->id, .jobnum = job->num, .incremental = job->incremental,
        .checkpoint = job->checkpoint ? &c : NULL, .own_filter = job->own_filter,
    };
    CLEANUP_FREE struct ckpt_backup_disk *plan =
        xcalloc(job->ndisks + 1, sizeof *plan);
    for (size_t k = 0; k < job->ndisks; k++)
        plan[k] = (struct ckpt_backup_disk) {
            .disk = job->disks[k].disk, .incremental = job->disks[k].bitmap != NULL,
            .granularity = job->disks[k].granularity,
        };
    if (job->push)
        return ckpt_plan_backup_push(t, &r, plan, job->ndisks, actions, e);
    return ckpt_plan_backup(t, &r, plan, job->ndisks, actions, e);
}

struct txn_step {
    struct backup_job *job;
    struct batch *b;
};

static void
txn_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct txn_step *ts = opaque;
    struct backup_job *job = ts->job;
    if (!err)
        job->txn_accepted = true;
    if (!err && job->quiesce) {
        job->quiesced = !a->quiesce.watchdog_fired;
        job->frozen_ms = a->quiesce.frozen_ms;
    }
    if (err && strcmp(err->class, "GuestAgentError") == 0) {
        job->error = xasprintf("cannot quiesce the guest, nothing was changed: %s",
                               err->desc);
        job->error_class = CKPT_ERR_GUEST_AGENT;
    }
    CLEANUP_FREE char *why = err ? xasprintf("transaction: %s", err->desc) : NULL;
    struct batch *b = ts->b;
    free(ts);
    batch_release(b, why);
}

static void
run_transaction(struct backup_job *job, struct batch *b)
{
    struct agent *a = job->agent;
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    if (job_plan_transaction(job, &a->tree, actions, &e)) {
        json_decref(actions);
        job->error = xstrdup(e.msg);
        job->error_class = e.code;
        return;
    }
    job_send_transaction(job, b, actions);
}

/* The begin transaction, between a freeze and a thaw if asked for; the
 * batch waits for it.  Steals actions. */
void
job_send_transaction(struct backup_job *job, struct batch *b, json_t *actions)
{
    struct agent *a = job->agent;
    struct txn_step *ts = xmalloc(sizeof *ts);
    *ts = (struct txn_step) { job, b };
    batch_hold(b);
    if (job->quiesce)
        quiesce_txn_send(a, actions, txn_done, ts);
    else
        txn_send(a, actions, txn_done, ts);
}

/* The new checkpoint of a job that never ran is taken back: deleting it
 * merges its bitmap into its parent, so no write is lost to the older
 * checkpoints. */
static void
drop_checkpoint_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct batch *b = opaque;
    if (err)
        log_warn("cannot take back the new checkpoint: %s", err->desc);
    batch_release(b, NULL);
}

static void
drop_new_checkpoint(struct backup_job *job, struct batch *b)
{
    struct agent *a = job->agent;
    if (!job->txn_accepted || job->committed || !job->checkpoint)
        return;
    struct ckpt_error e = { 0 };
    struct str_vec gone = { 0 };
    json_t *actions = json_array();
    if (ckpt_plan_delete(&a->tree, job->checkpoint, CKPT_DELETE_ONE, actions,
                         &gone, &e)) {
        log_warn("cannot take back checkpoint '%s': %s", job->checkpoint, e.msg);
        json_decref(actions);
    } else {
        log_info("backup %s did not start: taking back checkpoint '%s'",
                 job->id, job->checkpoint);
        batch_hold(b);
        txn_send(a, actions, drop_checkpoint_done, b);
    }
    str_vec_free_all(&gone);
}

static enum undo_result
undo_transaction(struct backup_job *job, struct batch *b)
{
    size_t i, k;
    json_t *j, *n, *bm;
    bool waiting = false;
    json_array_foreach(job->qjobs, i, j) {
        const char *id, *status, *type;
        if (!job_listed(job, j, &id, &status, &type))
            continue;
        /* The sweep also ends a disk-commit's job that a dead agent left
         * waiting READY (cmd-disk.c): no pivot, the overlay stays. */
        bool commit = job->sweep && strcmp(type, "commit") == 0;
        if (strcmp(type, "backup") != 0 && !commit)
            continue;
        if (strcmp(status, "concluded") == 0) {
            batch_send(b, "job-dismiss", json_pack("{s:s}", "id", id), NULL, NULL);
            continue;
        }
        batch_send_expect(b, "job-cancel", json_pack("{s:s}", "id", id),
                          "JOB_STATUS_CHANGE", json_pack("{s:s,s:s}", "id", id,
                                                         "status", "null"),
                          UNDO_EVENT_TIMEOUT);
        waiting = true;
    }
    json_array_foreach(job->nodes, i, n) {
        const char *node = json_string_value(json_object_get(n, "node-name"));
        json_array_foreach(json_object_get(n, "dirty-bitmaps"), k, bm) {
            const char *name = json_string_value(json_object_get(bm, "name"));
            if (node && name &&
                ckpt_tmp_bitmap_is_ours(name, job->sweep ? NULL : job->id))
                batch_send(b, "block-dirty-bitmap-remove",
                           json_pack("{s:s,s:s}", "node", node, "name", name),
                           NULL, NULL);
        }
    }
    drop_new_checkpoint(job, b);
    return waiting ? UNDO_WAIT : UNDO_DONE;
}

/* --- exports --- */
static void
run_exports(struct backup_job *job, struct batch *b)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *id = ckpt_tmp_job(job->id, job->disks[k].disk);
        CLEANUP_FREE char *node = ckpt_tmp_node(job->own_filter ? 'a' : 'f', job->num, k);
        json_t *args = json_pack("{s:s,s:s,s:s,s:s,s:b}", "type", "nbd", "id", id,
                                 "node-name", node, "name", job->disks[k].disk,
                                 "writable", 0);
        if (job->disks[k].bitmap)
            json_object_set_new(args, "bitmaps",
                json_pack("[{s:s,s:s}]", "node", job->disks[k].node,
                          "name", job->disks[k].bitmap));
        batch_send(b, "block-export-add", args, NULL, NULL);
    }
}

/* The end of a job that ran starts with its exports, in the listing's
 * batch and ahead of it (job.c): the exports' end, awaited anyway, then
 * costs no round trip of its own.  Refused, the undo below asks again
 * for what the listing (taken after it) still shows. */
static void
export_del(struct batch *b, const char *id, bool *refused)
{
    json_t *args = json_pack("{s:s,s:s}", "id", id, "mode", "hard");
    json_t *match = json_pack("{s:s}", "id", id);
    if (refused)
        batch_send_expect_optional(b, "block-export-del", args, "BLOCK_EXPORT_DELETED",
                                   match, UNDO_EVENT_TIMEOUT, refused);
    else
        batch_send_expect(b, "block-export-del", args, "BLOCK_EXPORT_DELETED", match,
                          UNDO_EVENT_TIMEOUT);
}

void
job_unexport_early(struct backup_job *job, struct batch *b)
{
    if (job->sweep || job->push || !job->announced || job->qemu_gone)
        return;
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *id = ckpt_tmp_job(job->id, job->disks[k].disk);
        export_del(b, id, &job->unexport_refused);
    }
    job->unexported = true;
}

static enum undo_result
undo_exports(struct backup_job *job, struct batch *b)
{
    size_t i;
    json_t *e;
    /* Gone already (the listing may still show them going). */
    if (job->unexported && !job->unexport_refused)
        return UNDO_DONE;
    json_array_foreach(job->exports, i, e) {
        const char *id = json_string_value(json_object_get(e, "id"));
        if (job_id_is_mine(job, id))
            export_del(b, id, NULL);
    }
    /* The fleecing jobs are cancelled in the same batch: QEMU runs one
     * connection's commands in order. */
    return UNDO_DONE;
}

/* Barriers: the creation job's end before its dismissal; the run
 * state's answer (it may turn the filter off) before the overlays; the
 * transaction's answer (the replayed tree names the new checkpoint's
 * recording bitmap, which the view step merges) before the switch. */
const struct job_step job_steps[] = {
    { "scratch files", false, run_files,        undo_files },
    { "NBD server",    false, run_server,       undo_server },
    { "scratch nodes", false, run_nodes,        undo_nodes },
    { "format",        true,  run_format,       undo_format },
    { "dismiss",       false, job_run_dismiss,  undo_dismiss },
    { "run state",     true,  fleece_run_state, fleece_undo_state },
    { "overlays",      false, run_overlays,     undo_overlays },
    { "filters",       false, fleece_run_filters, fleece_undo_filters },
    { "transaction",   true,  run_transaction,  undo_transaction },
    { "switch",        false, fleece_run_switch, fleece_undo_switch },
    { "view",          false, fleece_run_view,  fleece_undo_view },
    { "unexported",    false, fleece_run_unexported, fleece_undo_unexported },
    { "exports",       true,  run_exports,      undo_exports },
};
const int job_nsteps = (int) ARRAY_SIZE(job_steps);

/* The undos the push steps share (job-push.c): the transaction's (cancel
 * the block jobs, remove the temporary bitmaps, take back a checkpoint
 * that never ran), the image creation jobs', and the stale file walk. */
enum undo_result
job_undo_transaction(struct backup_job *job, struct batch *b)
{
    return undo_transaction(job, b);
}

enum undo_result
job_undo_create_jobs(struct backup_job *job, struct batch *b)
{
    return undo_format(job, b);
}

void
job_find_stale_files(struct backup_job *job, const char *dir)
{
    find_stale_files(job, dir, 0);
}
