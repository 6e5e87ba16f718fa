/* A checkpoint change in flight: one transaction (txn.c: afterwards the
 * tree is what QEMU holds), then the command's own reply.  Shared by
 * every command that changes checkpoints. */
#include "agent/agent.h"
#include "bitmap/plan.h"

struct change *
change_new(struct request *req, const char *name,
           void (*finish)(struct change *ch))
{
    struct change *ch = xcalloc(1, sizeof *ch);
    ch->req = req;
    ch->name = name ? xstrdup(name) : NULL;
    ch->finish = finish;
    return ch;
}

void
change_free(struct change *ch)
{
    free(ch->name);
    str_vec_free_all(&ch->names);
    free(ch->qemu_class);
    free(ch->qemu_desc);
    json_decref(ch->planned);
    free(ch);
}

static bool
connection_lost(const struct qmp_error *err)
{
    return strcmp(err->class, "Disconnected") == 0 || strcmp(err->class, "Timeout") == 0;
}

static void send_guarded(struct change *ch, json_t *actions);

/* A change is planned on the cached tree when the block graph has not
 * changed (change_run), so its bitmaps may have: another QMP client
 * removed one of ours, say.  QEMU then refuses the transaction (it names
 * a bitmap that is gone, or a guard's record), the tree has been re-read
 * by then (txn.c), and the change is planned once more on what QEMU
 * holds: the outcome is the one a plan on a fresh tree would have had. */
static bool
retry_on_fresh_tree(struct change *ch, const struct qmp_error *err)
{
    if (!err || connection_lost(err) || !ch->plan || ch->retried)
        return false;
    ch->retried = true;
    struct ckpt_error pe = { 0 };
    json_t *actions = json_array();
    if (ch->plan(ch, actions, &pe)) {
        json_decref(actions);
        req_fail(ch->req, &pe);
        change_free(ch);
        return true;
    }
    /* The same plan again: the tree was not stale, the refusal is QEMU's
     * own reason, for the command's reply. */
    if (json_equal(actions, ch->planned)) {
        json_decref(actions);
        return false;
    }
    log_info("%s: QEMU refused the change (%s); planning it again on the "
             "tree read afresh", ch->req->cmd->name, err->desc);
    send_guarded(ch, actions);
    return true;
}

static void
change_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct change *ch = opaque;
    if (retry_on_fresh_tree(ch, err))
        return;
    if (err) {
        ch->qemu_class = xstrdup(err->class);
        ch->qemu_desc = xstrdup(err->desc);
    }
    ch->finish(ch);
    change_free(ch);
}

/* --- guards: what a plan relies on, checked by QEMU in the transaction ---
 * A plan that disables, merges or removes a checkpoint's data bitmap
 * relies on that checkpoint still being one: its record bitmap still
 * there.  A record is always disabled, so disabling it again changes
 * nothing, but QEMU refuses the whole transaction when it is gone.  Data
 * bitmaps need no guard: the actions name them. */
static bool
same_bitmap(json_t *act, const char *type, const char *node, const char *name)
{
    json_t *data = json_object_get(act, "data");
    const char *t = json_string_value(json_object_get(act, "type"));
    const char *n = json_string_value(json_object_get(data, "node"));
    const char *b = json_string_value(json_object_get(data, "name"));
    return t && n && b && strcmp(t, type) == 0 && strcmp(n, node) == 0 &&
           strcmp(b, name) == 0;
}

static bool
has_action(json_t *actions, const char *type, const char *node, const char *name)
{
    size_t i;
    json_t *act;
    json_array_foreach(actions, i, act)
        if (same_bitmap(act, type, node, name))
            return true;
    return false;
}

static void
guard_one(const struct meta_tree *t, json_t *actions, const char *node,
          const char *name)
{
    ssize_t c = name ? meta_tree_find_ckpt(t, name) : -1;
    if (c < 0)
        return;
    const struct meta_ckpt *ck = &t->ckpts[c];
    for (size_t k = 0; k < ck->nmembers; k++) {
        const struct meta_disk *d = &t->disks[ck->members[k].disk];
        const char *rec = ck->members[k].record;
        const struct meta_bitmap *rb = meta_disk_find_bitmap(d, rec);
        /* QEMU refuses to disable a busy or inconsistent bitmap. */
        if (strcmp(d->node, node) != 0 || !rb || rb->inconsistent || rb->busy ||
            has_action(actions, "block-dirty-bitmap-remove", node, rec) ||
            has_action(actions, "block-dirty-bitmap-disable", node, rec))
            continue;
        json_array_append_new(actions, json_pack(
            "{s:s,s:{s:s,s:s}}", "type", "block-dirty-bitmap-disable",
            "data", "node", node, "name", rec));
    }
}

static void
add_guards(const struct meta_tree *t, json_t *actions)
{
    size_t n = json_array_size(actions);
    for (size_t i = 0; i < n; i++) {
        json_t *act = json_array_get(actions, i);
        const char *type = json_string_value(json_object_get(act, "type"));
        json_t *data = json_object_get(act, "data");
        const char *node = json_string_value(json_object_get(data, "node"));
        if (!type || !node || strncmp(type, "block-dirty-bitmap-", 19) != 0 ||
            strcmp(type, "block-dirty-bitmap-add") == 0)
            continue;
        guard_one(t, actions, node, json_string_value(json_object_get(data, "name")));
        guard_one(t, actions, node, json_string_value(json_object_get(data, "target")));
        size_t j;
        json_t *src;
        json_array_foreach(json_object_get(data, "bitmaps"), j, src)
            guard_one(t, actions, node, json_string_value(src));
    }
}

static void
send_guarded(struct change *ch, json_t *actions)
{
    struct agent *a = ch->req->agent;
    json_decref(ch->planned);
    ch->planned = json_deep_copy(actions);
    add_guards(&a->tree, actions);
    log_debug("%s: transaction of %zu actions", ch->req->cmd->name,
              json_array_size(actions));
    if (ch->quiesce)
        quiesce_txn_send(a, actions, change_done, ch);
    else
        txn_send(a, actions, change_done, ch);
}

void
change_send(struct change *ch, json_t *actions)
{
    send_guarded(ch, actions);
}

/* True (and the request answered) when QEMU refused the change.  The
 * tree has just been re-read: planning again against it names the cause
 * when something changed behind our back (a bitmap added by hand, say),
 * with the class a caller can act on instead of QEMU's text. */
bool
change_reply_qemu_error(struct change *ch, const char *what)
{
    if (!ch->qemu_class)
        return false;
    struct ckpt_error pe = { 0 };
    if (ch->replan && ch->replan(ch, &pe)) {
        req_fail(ch->req, &pe);
        return true;
    }
    struct qmp_error e = { ch->qemu_class, ch->qemu_desc };
    req_qmp_error(ch->req, &e, what);
    return true;
}

/* --- starting a change: on a tree that is QEMU's ---
 * Disks come and go, and other QMP clients take snapshots or commit
 * layers without an event we could follow: a change (CMD_FRESH) is
 * planned on the tree QEMU has now.  Re-reading it costs two queries
 * that list every bitmap (20 ms each in QEMU with 1,000 checkpoints), so
 * the cached tree is used when the block graph is the one it was read
 * from: query-blockstats, sent in one round trip with what else a change
 * must know first: query-migrate, query-status and query-block-jobs.
 * Bitmaps changed behind our back are caught by the transaction itself
 * (guards above, and a second plan on the re-read tree). */
static void
fresh_then_run(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    if (err) {
        req_qmp_error(req, err, "reading the disks before the change");
        return;
    }
    req->cmd->run(req);
}

/* While QEMU migrates the VM, the images change hands: a checkpoint made
 * now might never reach the destination, and a backup's export would
 * make the migration fail.  Such a change waits for no one: Busy. */
static bool
migrating(const char *status)
{
    static const char *const done[] = { "none", "completed", "failed", "cancelled" };
    if (!status)
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(done); i++)
        if (strcmp(status, done[i]) == 0)
            return false;
    return true;
}

struct precheck {
    struct request *req;
    int pending;
    char *err_class, *err_desc;
    char *status;                       /* query-migrate's, or NULL */
    char *run_state;                    /* query-status's */
    char *mirror;                       /* a running mirror job's id */
    char *sig;                          /* the graph now */
};

/* Busy with why, or NULL: the precheck's answers say the change must wait.
 *
 * A mirror job copies a disk elsewhere, most often the first half of a
 * migration with non-shared images.  A checkpoint made meanwhile may
 * never reach the destination: libvirt fixes the bitmaps the migration
 * carries (block-bitmap-mapping) before it starts the mirrors, and the
 * new bitmap is not among them, while the one it stopped recording is;
 * the destination would then track no writes at all.  (After a local
 * copy, the disk no longer sees the node that holds it either.)
 *
 * After a completed migration the VM lives on in the destination; this
 * QEMU, "postmigrate" until someone resumes it here, has let go of its
 * images, yet still takes a persistent bitmap that no image or
 * destination will ever hold: the checkpoint would be lost silently. */
static char *
precheck_busy(const struct precheck *p, const char *cmd)
{
    if (migrating(p->status))
        return xasprintf("the VM is being migrated (QEMU's migration status: %s); "
                         "%s waits until the migration has ended", p->status, cmd);
    if (p->status && strcmp(p->status, "completed") == 0 && p->run_state &&
        strcmp(p->run_state, "postmigrate") == 0)
        return xasprintf("the VM has been migrated away (QEMU's run state: "
                         "postmigrate); %s is for the destination's agent, or waits "
                         "until the VM runs here again", cmd);
    if (p->mirror)
        return xasprintf("mirror job '%s' copies a disk (a migration with non-shared "
                         "images, or a storage move): a checkpoint made now might not "
                         "reach the copy; %s waits until the mirror has ended",
                         p->mirror, cmd);
    return NULL;
}

static void
precheck_step(struct precheck *p)
{
    if (--p->pending > 0)
        return;
    struct request *req = p->req;
    struct agent *a = req->agent;
    CLEANUP_FREE char *busy = p->err_class ? NULL : precheck_busy(p, req->cmd->name);
    if (p->err_class) {
        struct qmp_error e = { p->err_class, p->err_desc };
        req_qmp_error(req, &e, "asking QEMU whether the VM is migrating and "
                      "what its disks are");
    } else if (busy) {
        req_error(req, CKPT_ERR_BUSY, "%s", busy);
    } else if (p->sig && a->tree_sig && strcmp(p->sig, a->tree_sig) == 0) {
        req->cmd->run(req);
    } else {
        log_debug("%s: the block graph changed; reading the tree again",
                  req->cmd->name);
        vm_refresh(a, fresh_then_run, req);
    }
    free(p->err_class);
    free(p->err_desc);
    free(p->status);
    free(p->run_state);
    free(p->mirror);
    free(p->sig);
    free(p);
}

static void
precheck_failed(struct precheck *p, const struct qmp_error *err)
{
    if (p->err_class)
        return;
    p->err_class = xstrdup(err->class);
    p->err_desc = xstrdup(err->desc);
}

static void
status_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct precheck *p = opaque;
    const char *state = json_string_value(json_object_get(ret, "status"));
    if (err)
        precheck_failed(p, err);
    else if (state)
        p->run_state = xstrdup(state);
    precheck_step(p);
}

/* The run state matters only after a completed migration (postmigrate):
 * asked for then, in a second round trip, before the step is counted. */
static void
migrate_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct precheck *p = opaque;
    const char *status = json_string_value(json_object_get(ret, "status"));
    if (err)
        precheck_failed(p, err);
    else if (status)
        p->status = xstrdup(status);
    if (p->status && strcmp(p->status, "completed") == 0) {
        vm_send(p->req->agent, "query-status", NULL, status_checked, p);
        return;
    }
    precheck_step(p);
}

static void
jobs_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct precheck *p = opaque;
    size_t i;
    json_t *job;
    if (err)
        precheck_failed(p, err);
    json_array_foreach(err ? NULL : ret, i, job) {
        const char *type = json_string_value(json_object_get(job, "type"));
        const char *id = json_string_value(json_object_get(job, "device"));
        if (!p->mirror && type && strcmp(type, "mirror") == 0)
            p->mirror = xstrdup(id ? id : "?");
    }
    precheck_step(p);
}

static void
graph_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct precheck *p = opaque;
    if (err)
        precheck_failed(p, err);
    else
        p->sig = vm_graph_signature(ret);
    precheck_step(p);
}

static bool
job_is_foreign(const char *id, const void *opaque)
{
    return !ckpt_tmp_id_is_ours(id, NULL);
}

void
change_run(struct request *req)
{
    if (!(req->cmd->flags & CMD_FRESH)) {
        req->cmd->run(req);
        return;
    }
    if (req->cmd->flags & CMD_CAPS)
        caps_probe(req->agent);         /* answered first: qemu-caps.c */
    /* Only another client's job can be a mirror (ours never are): with
     * none running, QEMU is not asked (qjobs.c). */
    bool jobs = qjobs_any(req->agent, job_is_foreign, NULL);
    struct precheck *p = xcalloc(1, sizeof *p);
    *p = (struct precheck) { .req = req, .pending = jobs ? 3 : 2 };
    vm_send(req->agent, "query-migrate", NULL, migrate_checked, p);
    if (jobs)
        vm_send(req->agent, "query-block-jobs", NULL, jobs_checked, p);
    vm_send(req->agent, "query-blockstats", NULL, graph_checked, p);
}
