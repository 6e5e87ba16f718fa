/* A pull job's point-in-time view through ckptd's own copy-before-write
 * filter, where QEMU offers it (qemu-caps.c).
 *
 * The filter that blockdev-backup inserts by itself fails the guest's
 * write when it cannot copy the old data into the scratch image (a full
 * scratch directory).  A filter made with blockdev-add takes
 * on-cbw-error=break-snapshot: then the backup breaks (reads of the view
 * fail) and the guest's writes go on.  Such a filter sees guest writes
 * only once it sits in the device's path, so the steps are:
 *
 *   step      does                                     undo
 *   run state several disks: query-status (see below)  -
 *   filters   blockdev-add copy-before-write over the  blockdev-del it
 *             disk (target: the scratch qcow2, no
 *             backing)
 *   (transaction: the bitmaps only, as in job-steps.c)
 *   switch    qom-set the device's drive to the        qom-set it back to
 *             filter                                   the filter's child
 *   view      blockdev-add snapshot-access over the    blockdev-del it
 *             filter; merge the recording bitmap into
 *             the temporary one
 *   unexported -                                       wait until QEMU has
 *                                                      deleted the exports
 *                                                      on our views
 *
 * Why the point in time stays exact without one transaction for both
 * (qom-set is no transaction action).  The transaction runs at T1, the
 * device moves to the filter at T2 > T1: the view is the disk at T2.
 * A write between T1 and T2 is in the view; the new checkpoint, made at
 * T1, records it (so the next incremental copies it again: harmless);
 * the temporary bitmap, frozen at T1, would miss it, so after the switch
 * the bitmap recording since T1 (the new checkpoint's, or the newest
 * one's when the backup makes none) is merged into it at T3 > T2.  The
 * exported map then holds every write up to T2, and perhaps some up to
 * T3, whose clusters the view still has as at T2: copying them is right.
 * Nothing is ever missed; test-backup-filter's race case writes in both
 * gaps and checks it.  Several disks switch one after the other, not at
 * one instant, and a crash-consistent copy of several disks needs one:
 * so a job of several disks uses the filter only while the guest does
 * not run (the "run state" step asks; a RESUME before the switches are
 * done fails the begin), and a backup job otherwise.  A quiesced backup
 * keeps the backup job too: its view must be the frozen guest's, and the
 * guest is frozen around the transaction only.
 *
 * The undos work from QEMU's listing (x-debug-query-block-graph: is a
 * device still on the filter, and what is below it; the sweep also lists
 * the devices with query-block), so the start-up sweep also points a
 * device back that a crashed agent left on its filter.  Neither
 * min-cluster-size nor discard-source (QEMU 9.1) is
 * used: the first only makes the filter copy larger pieces (a scratch
 * fills sooner), the second belongs to a backup job reading the view,
 * which a pull backup does not run.  Nor is cbw-timeout: it would break
 * backups on a slow scratch disk that would have finished, while the
 * guest waits for a copy no longer than with the backup job's filter. */
#include "agent/agent.h"
#include "bitmap/plan.h"

/* Under this much free space the scratch image cannot take one more
 * copied 64 KiB cluster with the qcow2 tables it may need: the filter
 * has given up, or will at the next copy.  QEMU itself says nothing. */
#define FLEECE_FULL_BYTES (256u << 10)

static const char *
jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

bool
fleece_choose(const struct agent *a, const struct backup_job *job)
{
    /* A quiesced backup's view must be taken while the guest is frozen,
     * which only the transaction is (quiesce.c): the backup job. */
    if (!caps_own_filter(a) || job->quiesce)
        return false;
    /* A push copies with QEMU's own backup job: no view to export. */
    if (job->push)
        return false;
    for (size_t k = 0; k < job->ndisks; k++) {
        ssize_t d = meta_tree_find_disk(&a->tree, job->disks[k].disk);
        if (d < 0)
            return false;
        const struct meta_disk *disk = &a->tree.disks[d];
        /* The filter goes right above the disk's node, in place of it: a
         * device pointing at a filter of someone else's keeps the job. */
        if (!disk->qdev || !disk->tracking || disk->read_only ||
            strcmp(disk->root, disk->active) != 0 ||
            strcmp(disk->active, job->disks[k].node) != 0)
            return false;
    }
    return true;
}

/* --- run state: several disks switch at one instant only while the
 * guest cannot write --- */
static void
run_state_done(json_t *ret, void *opaque)
{
    struct backup_job *job = opaque;
    const char *st = json_string_value(json_object_get(ret, "status"));
    if (st && strcmp(st, "running") == 0) {
        log_info("backup %s: %zu disks of a running guest: fleecing through a "
                 "backup job, which takes them at one instant", job->id, job->ndisks);
        job->own_filter = false;
    }
}

void
fleece_run_state(struct backup_job *job, struct batch *b)
{
    if (!job->own_filter || job->ndisks < 2)
        return;
    job->watch_resume = true;   /* from now on, a RESUME fails the begin */
    batch_send(b, "query-status", NULL, run_state_done, job);
}

enum undo_result
fleece_undo_state(struct backup_job *job, struct batch *b)
{
    return UNDO_DONE;
}

/* A guest that started running while several disks were being switched
 * may have written between two switches: the views would not be one
 * instant. */
const char *
fleece_begin_invalid(const struct backup_job *job)
{
    if (!job->own_filter || job->ndisks < 2 || !job->vm_resumed)
        return NULL;
    return "the guest started running while the backup of several disks began "
           "(their views might not be one instant); try again";
}

static void
keep(json_t *ret, void *opaque)
{
    json_t **slot = opaque;
    json_decref(*slot);
    *slot = json_incref(ret);
}

void
fleece_list_qemu(struct backup_job *job, struct batch *b)
{
    /* A job knows which devices it moved and reads the graph of its node
     * listing (job.c); the sweep, which does not, lists the devices and
     * has query-named-block-nodes for its nodes.  It runs before the
     * schema is read (qemu-caps.c): a QEMU without the graph command has
     * no filter of ours either. */
    if (!job->sweep)
        return;
    batch_send(b, "query-block", NULL, keep, &job->blocks);
    batch_send_optional(b, "x-debug-query-block-graph", NULL, keep, &job->graph);
}

/* --- filters --- */
void
fleece_run_filters(struct backup_job *job, struct batch *b)
{
    if (!job->own_filter)
        return;
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *cbw = ckpt_tmp_node('w', job->num, k);
        CLEANUP_FREE char *target = ckpt_tmp_node('f', job->num, k);
        batch_send(b, "blockdev-add",
                   json_pack("{s:s,s:s,s:s,s:s,s:s}", "driver", "copy-before-write",
                             "node-name", cbw, "file", job->disks[k].node,
                             "target", target, "on-cbw-error", "break-snapshot"),
                   NULL, NULL);
    }
}

enum undo_result
fleece_undo_filters(struct backup_job *job, struct batch *b)
{
    job_delete_nodes(job, b, 'w');
    return UNDO_DONE;
}

/* --- switch --- */

/* The bitmap that records the disk's writes now: the newest checkpoint's
 * on it, when that one records. */
static const char *
recording_bitmap(const struct meta_tree *t, const char *disk)
{
    ssize_t d = meta_tree_find_disk(t, disk);
    for (size_t i = t->nckpts; d >= 0 && i-- > 0;) {
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], (size_t) d);
        if (m)
            return m->bitmap && m->bitmap->recording ? m->bitmap->name : NULL;
    }
    return NULL;
}

void
fleece_run_switch(struct backup_job *job, struct batch *b)
{
    struct agent *a = job->agent;
    if (!job->own_filter)
        return;
    for (size_t k = 0; k < job->ndisks; k++) {
        ssize_t d = meta_tree_find_disk(&a->tree, job->disks[k].disk);
        if (d < 0 || !a->tree.disks[d].qdev) {
            job->error = xasprintf("disk '%s' was detached while the backup was "
                                   "starting", job->disks[k].disk);
            return;
        }
        CLEANUP_FREE char *cbw = ckpt_tmp_node('w', job->num, k);
        free(job->disks[k].qdev);
        job->disks[k].qdev = xstrdup(a->tree.disks[d].qdev);
        batch_send(b, "qom-set",
                   json_pack("{s:s,s:s,s:s}", "path", a->tree.disks[d].qdev,
                             "property", "drive", "value", cbw), NULL, NULL);
    }
}

/* --- view: a step of its own, after the switches have answered --- */
void
fleece_run_view(struct backup_job *job, struct batch *b)
{
    struct agent *a = job->agent;
    if (!job->own_filter)
        return;
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *cbw = ckpt_tmp_node('w', job->num, k);
        CLEANUP_FREE char *view = ckpt_tmp_node('a', job->num, k);
        /* Only now: a filter with a parent takes the disk's write
         * permission, which the device holds until it has moved. */
        batch_send(b, "blockdev-add",
                   json_pack("{s:s,s:s,s:s}", "driver", "snapshot-access",
                             "node-name", view, "file", cbw), NULL, NULL);
    }
    /* After the switches: see the top. */
    for (size_t k = 0; k < job->ndisks; k++) {
        const char *rec = recording_bitmap(&a->tree, job->disks[k].disk);
        if (job->disks[k].bitmap && rec)
            batch_send(b, "block-dirty-bitmap-merge",
                       json_pack("{s:s,s:s,s:[s]}", "node", job->disks[k].node,
                                 "target", job->disks[k].bitmap, "bitmaps", rec),
                       NULL, NULL);
    }
}

/* The name of the node that edges name child of the node named parent,
 * in x-debug-query-block-graph's answer, or NULL. */
static const char *
graph_child(json_t *graph, const char *parent, const char *child)
{
    json_t *nodes = json_object_get(graph, "nodes"), *n, *e;
    size_t i;
    json_int_t pid = -1, cid = -1;
    json_array_foreach(nodes, i, n)
        if (jstr(n, "name") && strcmp(jstr(n, "name"), parent) == 0)
            pid = json_integer_value(json_object_get(n, "id"));
    json_array_foreach(json_object_get(graph, "edges"), i, e)
        if (json_integer_value(json_object_get(e, "parent")) == pid && jstr(e, "name") &&
            strcmp(jstr(e, "name"), child) == 0)
            cid = json_integer_value(json_object_get(e, "child"));
    json_array_foreach(nodes, i, n)
        if (cid >= 0 && json_integer_value(json_object_get(n, "id")) == cid)
            return jstr(n, "name");
    return NULL;
}

/* The view goes before the device moves back (while it reads the
 * filter, the filter keeps the disk's write permission from the
 * device), and after its export (see fleece_undo_unexported). */
enum undo_result
fleece_undo_view(struct backup_job *job, struct batch *b)
{
    job_delete_nodes(job, b, 'a');
    return UNDO_DONE;
}

/* --- unexported: between the view and the exports, a barrier: an
 * export leaves its node only once QEMU says it is deleted, so the undos
 * below wait for the exports' undo (which awaits BLOCK_EXPORT_DELETED)
 * when it removed one from a view of ours --- */
void
fleece_run_unexported(struct backup_job *job, struct batch *b)
{
}

enum undo_result
fleece_undo_unexported(struct backup_job *job, struct batch *b)
{
    size_t i;
    json_t *e;
    if (job->unexported && !job->unexport_refused)
        return UNDO_DONE;       /* their end was awaited with the listing */
    json_array_foreach(job->exports, i, e)
        if (job_node_is_mine(job, jstr(e, "node-name"), 'a'))
            return UNDO_WAIT;
    return UNDO_DONE;
}

/* Whether a device (a block-backend) has the node named name as its
 * root, in x-debug-query-block-graph's answer. */
static bool
graph_under_device(json_t *graph, const char *name)
{
    json_t *nodes = json_object_get(graph, "nodes"), *n, *e;
    size_t i, k;
    json_array_foreach(nodes, i, n) {
        if (!jstr(n, "name") || strcmp(jstr(n, "name"), name) != 0)
            continue;
        json_int_t id = json_integer_value(json_object_get(n, "id"));
        json_array_foreach(json_object_get(graph, "edges"), k, e) {
            if (json_integer_value(json_object_get(e, "child")) != id)
                continue;
            json_int_t parent = json_integer_value(json_object_get(e, "parent"));
            size_t j;
            json_t *p;
            json_array_foreach(nodes, j, p)
                if (json_integer_value(json_object_get(p, "id")) == parent &&
                    jstr(p, "type") && strcmp(jstr(p, "type"), "block-backend") == 0)
                    return true;
        }
    }
    return false;
}

static void
switch_back(struct backup_job *job, struct batch *b, const char *qdev, const char *root)
{
    const char *below = graph_child(job->graph, root, "file");
    if (!below) {
        log_warn("cannot tell which node is below filter %s", root);
        return;
    }
    CLEANUP_FREE char *path = qdev[0] == '/' ? xstrdup(qdev)
                              : xasprintf("/machine/peripheral/%s", qdev);
    log_info("pointing device %s back from %s to %s", path, root, below);
    batch_send(b, "qom-set", json_pack("{s:s,s:s,s:s}", "path", path,
                                       "property", "drive", "value", below),
               NULL, NULL);
}

/* A job moves back the devices it moved that still sit on its filters;
 * the sweep every device QEMU lists on a filter of ours. */
enum undo_result
fleece_undo_switch(struct backup_job *job, struct batch *b)
{
    size_t i;
    json_t *blk;
    for (size_t k = 0; !job->sweep && k < job->ndisks; k++) {
        CLEANUP_FREE char *cbw = ckpt_tmp_node('w', job->num, k);
        if (job->disks[k].qdev && graph_under_device(job->graph, cbw))
            switch_back(job, b, job->disks[k].qdev, cbw);
    }
    json_array_foreach(job->sweep ? job->blocks : NULL, i, blk) {
        const char *root = jstr(json_object_get(blk, "inserted"), "node-name");
        const char *qdev = jstr(blk, "qdev");
        if (job_node_is_mine(job, root, 'w') && qdev && *qdev)
            switch_back(job, b, qdev, root);
    }
    return UNDO_DONE;
}

/* QEMU raises no event when the filter breaks the view: a scratch
 * directory with no room left says it did (or is about to). */
char *
fleece_broken(const struct backup_job *job, uint64_t free_bytes)
{
    if (!job->own_filter || free_bytes >= FLEECE_FULL_BYTES)
        return NULL;
    return xasprintf("the scratch directory %s is full: the point-in-time view "
                     "broke (QEMU's copy-before-write filter gave up the backup, "
                     "not the guest's writes, which all went on); give it more "
                     "room (--scratch-dir)", job->scratch_dir);
}
