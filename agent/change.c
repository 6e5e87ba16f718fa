/* A checkpoint change in flight: one transaction (txn.c: afterwards the
 * tree is what QEMU holds), then the command's own reply.  Shared by
 * every command that changes checkpoints. */
#include "agent/agent.h"

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
    free(ch);
}

static void
change_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct change *ch = opaque;
    if (err) {
        ch->qemu_class = xstrdup(err->class);
        ch->qemu_desc = xstrdup(err->desc);
    }
    ch->finish(ch);
    change_free(ch);
}

void
change_send(struct change *ch, json_t *actions)
{
    log_debug("%s: transaction of %zu actions", ch->req->cmd->name,
              json_array_size(actions));
    if (ch->quiesce)
        quiesce_txn_send(ch->req->agent, actions, change_done, ch);
    else
        txn_send(ch->req->agent, actions, change_done, ch);
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

/* --- starting a change: on a tree read afresh ---
 * Disks come and go, and other QMP clients take snapshots or commit
 * layers without an event we could follow: a change (CMD_FRESH) is
 * planned on the tree QEMU has now, not on the one cached. */
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

/* A mirror job copies a disk elsewhere, most often the first half of a
 * migration with non-shared images.  A checkpoint made meanwhile may
 * never reach the destination: libvirt fixes the bitmaps the migration
 * carries (block-bitmap-mapping) before it starts the mirrors, and the
 * new bitmap is not among them, while the one it stopped recording is;
 * the destination would then track no writes at all.  (After a local
 * copy, the disk no longer sees the node that holds it either.)  So a
 * change waits until the mirror has ended: Busy. */
static void
jobs_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    size_t i;
    json_t *job;
    if (err) {
        req_qmp_error(req, err, "asking QEMU for its block jobs");
        return;
    }
    json_array_foreach(ret, i, job) {
        const char *type = json_string_value(json_object_get(job, "type"));
        const char *id = json_string_value(json_object_get(job, "device"));
        if (type && strcmp(type, "mirror") == 0) {
            req_error(req, CKPT_ERR_BUSY, "mirror job '%s' copies a disk (a migration "
                      "with non-shared images, or a storage move): a checkpoint made "
                      "now might not reach the copy; %s waits until the mirror has "
                      "ended", id ? id : "?", req->cmd->name);
            return;
        }
    }
    vm_refresh(req->agent, fresh_then_run, req);
}

/* After a completed migration the VM lives on in the destination; this
 * QEMU, "postmigrate" until someone resumes it here, has let go of its
 * images, yet still takes a persistent bitmap that no image or
 * destination will ever hold: the checkpoint would be lost silently. */
static void
status_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    const char *status = json_string_value(json_object_get(ret, "status"));
    if (err) {
        req_qmp_error(req, err, "asking QEMU for the VM's run state");
        return;
    }
    if (status && strcmp(status, "postmigrate") == 0) {
        req_error(req, CKPT_ERR_BUSY, "the VM has been migrated away (QEMU's run "
                  "state: postmigrate); %s is for the destination's agent, or "
                  "waits until the VM runs here again", req->cmd->name);
        return;
    }
    vm_send(req->agent, "query-block-jobs", NULL, jobs_checked, req);
}

static void
migrate_checked(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    const char *status = json_string_value(json_object_get(ret, "status"));
    if (err) {
        req_qmp_error(req, err, "asking QEMU whether the VM is migrating");
        return;
    }
    if (migrating(status)) {
        req_error(req, CKPT_ERR_BUSY, "the VM is being migrated (QEMU's migration "
                  "status: %s); %s waits until the migration has ended", status,
                  req->cmd->name);
        return;
    }
    if (status && strcmp(status, "completed") == 0) {
        vm_send(req->agent, "query-status", NULL, status_checked, req);
        return;
    }
    vm_send(req->agent, "query-block-jobs", NULL, jobs_checked, req);
}

void
change_run(struct request *req)
{
    if (req->cmd->flags & CMD_FRESH)
        vm_send(req->agent, "query-migrate", NULL, migrate_checked, req);
    else
        req->cmd->run(req);
}
