/* checkpoint-changes: the extents written on a disk since a checkpoint
 * (up to a later one, or now), in the shape of the CSI SnapshotMetadata
 * service, for backup tools without an NBD client.
 *
 * QEMU has no query for a bitmap's extents, so the agent reads them the
 * way a backup tool would: a temporary disabled bitmap holding the merge
 * of the checkpoints' bitmaps in the range, a short-lived read-only NBD
 * export of the disk carrying it, and libnbd's block status.  libnbd's
 * calls block, so they run in a thread of their own; the loop hears back
 * through an ev_async.  Export and bitmap are named like every temporary
 * object (the sweep removes them after a crash) and are gone before the
 * reply. */
#include "agent/agent.h"
#include "agent/nbddl.h"
#include "bitmap/plan.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#define CHANGES_DEFAULT_MAX 10000
#define CHANGES_MAX 1000000
#define CHANGES_EVENT_TIMEOUT 30.0

struct changes {
    struct request *req;
    struct agent *agent;
    long long num;
    char *disk, *node, *bitmap, *export_id, *uri;
    uint64_t size, start, granularity;
    long max;
    bool started_server;
    json_t *sources;                    /* names of the bitmaps merged */
    /* filled by the reader thread */
    pthread_t thread;
    ev_async done_w;
    json_t *extents;
    uint64_t next;
    bool cut;
    char *read_error;
    char *error;                        /* a QMP step's */
    const struct nbddl *nbd;            /* libnbd, loaded before the thread */
};

static void changes_cleanup(struct changes *c);

static void
changes_free(struct changes *c)
{
    free(c->disk);
    free(c->node);
    free(c->bitmap);
    free(c->export_id);
    free(c->uri);
    free(c->read_error);
    free(c->error);
    json_decref(c->sources);
    json_decref(c->extents);
    free(c);
}

/* --- the reader thread: block status of the export's bitmap --- */
struct scan {
    struct changes *c;
    uint64_t pos;                       /* how far the answers reach */
};

static int
extent_cb(void *opaque, const char *metacontext, uint64_t offset,
          uint32_t *entries, size_t nr, int *error)
{
    struct scan *s = opaque;
    struct changes *c = s->c;
    uint64_t at = offset;
    for (size_t i = 0; i + 1 < nr && !c->cut; i += 2) {
        uint64_t len = entries[i];
        bool dirty = entries[i + 1] & 1;
        json_t *last = json_array_get(c->extents, json_array_size(c->extents) - 1);
        uint64_t last_end = last ? (uint64_t) json_integer_value(json_object_get(last, "byte-offset")) +
                                   (uint64_t) json_integer_value(json_object_get(last, "size-bytes"))
                                 : UINT64_MAX;
        if (dirty && last && last_end == at) {
            json_object_set_new(last, "size-bytes", json_integer(
                json_integer_value(json_object_get(last, "size-bytes")) + (json_int_t) len));
        } else if (dirty) {
            if ((long) json_array_size(c->extents) == c->max) {
                c->cut = true;
                c->next = at;
                break;
            }
            json_array_append_new(c->extents, json_pack("{s:I,s:I}", "byte-offset",
                                  (json_int_t) at, "size-bytes", (json_int_t) len));
        }
        at += len;
    }
    s->pos = at;
    return 0;
}

static void *
reader(void *arg)
{
    struct changes *c = arg;
    const struct nbddl *nbd = c->nbd;
    struct nbd_handle *h = nbd->create();
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", c->bitmap);
    if (!h || nbd->add_meta_context(h, ctx) < 0 || nbd->connect_uri(h, c->uri) < 0) {
        c->read_error = xstrdup(nbd->get_error() ? nbd->get_error() : "cannot connect");
        goto out;
    }
    /* The export's size is the disk's now: the cached tree's may predate
     * a block_resize by another QMP client (changes no longer re-read the
     * whole tree first), and the extents past it must not go missing. */
    int64_t size = nbd->get_size(h);
    if (size > 0)
        c->size = (uint64_t) size;
    struct scan s = { c, c->start };
    while (s.pos < c->size && !c->cut) {
        uint64_t count = c->size - s.pos;
        if (count > (1u << 30))
            count = 1u << 30;
        uint64_t before = s.pos;
        if (nbd->block_status(h, count, s.pos,
                              (nbd_extent_callback) { .callback = extent_cb, .user_data = &s },
                              0) < 0) {
            c->read_error = xstrdup(nbd->get_error());
            break;
        }
        if (s.pos <= before) {
            c->read_error = xstrdup("the NBD server answered no extent");
            break;
        }
    }
    nbd->shutdown(h, 0);
out:
    if (h)
        nbd->close(h);
    ev_async_send(c->agent->loop, &c->done_w);
    return NULL;
}

/* --- the steps on the loop --- */
static void
replied(struct changes *c)
{
    struct request *req = c->req;
    if (c->read_error || c->error) {
        req_error(req, CKPT_ERR_QEMU, "cannot read the changes of disk %s: %s", c->disk,
                  c->error ? c->error : c->read_error);
    } else {
        json_t *ret = json_pack("{s:s,s:I,s:O}", "block-metadata-type", "variable-length",
                                "volume-capacity-bytes", (json_int_t) c->size,
                                "block-metadata", c->extents);
        if (c->cut)
            json_object_set_new(ret, "next-offset", json_integer((json_int_t) c->next));
        req_reply(req, ret);
    }
    changes_free(c);
}

static void
server_stopped(const char *err, void *opaque)
{
    struct changes *c = opaque;
    if (err)
        log_warn("checkpoint-changes: %s", err);
    replied(c);
}

static void
export_gone(const char *err, void *opaque)
{
    struct changes *c = opaque;
    struct agent *a = c->agent;
    if (err)
        log_warn("checkpoint-changes: %s", err);
    struct batch *b = batch_new(a, server_stopped, c);
    b->quiet = true;
    batch_send(b, "block-dirty-bitmap-remove",
               json_pack("{s:s,s:s}", "node", c->node, "name", c->bitmap), NULL, NULL);
    if (c->started_server && !a->jobs) {
        batch_send(b, "nbd-server-stop", NULL, NULL, NULL);
        json_decref(a->nbd_server);
        a->nbd_server = NULL;
    }
    batch_arm(b);
}

/* Export first (the event says when it is gone), then bitmap and server. */
static void
changes_cleanup(struct changes *c)
{
    struct batch *b = batch_new(c->agent, export_gone, c);
    b->quiet = true;
    batch_send_expect(b, "block-export-del",
                      json_pack("{s:s,s:s}", "id", c->export_id, "mode", "hard"),
                      "BLOCK_EXPORT_DELETED", json_pack("{s:s}", "id", c->export_id),
                      CHANGES_EVENT_TIMEOUT);
    batch_arm(b);
}

static void
read_done(struct ev_loop *loop, ev_async *w, int revents)
{
    struct changes *c = w->data;
    ev_async_stop(loop, w);
    pthread_join(c->thread, NULL);
    changes_cleanup(c);
}

static void
server_started(json_t *ret, void *opaque)
{
    struct changes *c = opaque;
    json_decref(c->agent->nbd_server);
    c->agent->nbd_server = json_pack("{s:s,s:s}", "transport", "unix", "path",
                                     c->agent->opt.nbd_socket);
    c->started_server = true;
}

static void
exported(const char *err, void *opaque)
{
    struct changes *c = opaque;
    if (err) {
        c->error = xstrdup(err);
        changes_cleanup(c);
        return;
    }
    struct ckpt_error e = { 0 };
    c->nbd = nbddl_get(&e);
    if (!c->nbd) {
        c->error = xstrdup(e.msg);
        changes_cleanup(c);
        return;
    }
    ev_async_init(&c->done_w, read_done);
    c->done_w.data = c;
    ev_async_start(c->agent->loop, &c->done_w);
    if (pthread_create(&c->thread, NULL, reader, c) != 0) {
        ev_async_stop(c->agent->loop, &c->done_w);
        c->error = xstrdup("cannot start the reader thread");
        changes_cleanup(c);
    }
}

static void
start(struct changes *c)
{
    struct agent *a = c->agent;
    struct batch *b = batch_new(a, exported, c);
    if (!a->nbd_server)
        batch_send(b, "nbd-server-start",
                   json_pack("{s:{s:s,s:{s:s}}}", "addr", "type", "unix", "data",
                             "path", a->opt.nbd_socket), server_started, c);
    batch_send(b, "block-dirty-bitmap-add",
               json_pack("{s:s,s:s,s:b,s:b,s:I}", "node", c->node, "name", c->bitmap,
                         "persistent", 0, "disabled", 1,
                         "granularity", (json_int_t) c->granularity), NULL, NULL);
    batch_send(b, "block-dirty-bitmap-merge",
               json_pack("{s:s,s:s,s:O}", "node", c->node, "target", c->bitmap,
                         "bitmaps", c->sources), NULL, NULL);
    batch_send(b, "block-export-add",
               json_pack("{s:s,s:s,s:s,s:s,s:b,s:[{s:s,s:s}]}", "type", "nbd",
                         "id", c->export_id, "node-name", c->node, "name", c->export_id,
                         "writable", 0, "bitmaps", "node", c->node, "name", c->bitmap),
               NULL, NULL);
    batch_arm(b);
}

/* --- the request --- */
static enum ckpt_err
check_range(struct agent *a, json_t *args, struct changes *c, struct ckpt_error *e)
{
    const struct meta_tree *t = &a->tree;
    const char *disk = json_string_value(json_object_get(args, "disk"));
    const char *from = json_string_value(json_object_get(args, "from"));
    const char *to = json_string_value(json_object_get(args, "to"));
    ssize_t d = meta_tree_find_disk(t, disk);
    if (d < 0)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "no disk '%s'", disk);
    ssize_t f = meta_tree_find_ckpt(t, from);
    if (f < 0)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", from);
    ssize_t end = (ssize_t) t->nckpts;
    if (to && (end = meta_tree_find_ckpt(t, to)) < 0)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", to);
    if (end <= f)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "checkpoint '%s' is not newer "
                         "than '%s'", to, from);
    const struct meta_disk *md = &t->disks[d];
    const struct meta_member *m = meta_ckpt_member(&t->ckpts[f], (size_t) d);
    if (!m)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "disk '%s' is not in checkpoint '%s'",
                         disk, from);
    if (!md->tracking)
        return ckpt_fail(e, CKPT_ERR_INCONSISTENT, "disk '%s' does not track writes "
                         "(%s); a full backup is needed", disk, md->untracked);
    c->sources = json_array();
    for (ssize_t j = f; j < end; j++) {
        const struct meta_member *mj = meta_ckpt_member(&t->ckpts[j], (size_t) d);
        if (!mj)
            continue;
        if (!mj->bitmap || ckpt_member_unusable(mj))
            return ckpt_fail(e, CKPT_ERR_INCONSISTENT, "the bitmap of checkpoint '%s' "
                             "on disk '%s' is not usable (QEMU stopped without saving "
                             "it); a full backup is needed", t->ckpts[j].rec.name, disk);
    }
    json_decref(c->sources);
    c->sources = ckpt_merge_sources(t, (size_t) d, (size_t) f, (size_t) end, md->node);
    c->disk = xstrdup(md->disk);
    c->node = xstrdup(md->node);
    c->size = md->virtual_size;
    c->granularity = m->bitmap->granularity;
    json_t *so = json_object_get(args, "starting-offset");
    json_t *mr = json_object_get(args, "max-results");
    if (so && (json_integer_value(so) < 0 || (uint64_t) json_integer_value(so) > c->size))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "starting-offset must be from 0 "
                         "to the disk's size (%" PRIu64 ")", c->size);
    if (mr && (json_integer_value(mr) < 1 || json_integer_value(mr) > CHANGES_MAX))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "max-results must be from 1 to %d",
                         CHANGES_MAX);
    c->start = so ? (uint64_t) json_integer_value(so) : 0;
    c->max = mr ? (long) json_integer_value(mr) : CHANGES_DEFAULT_MAX;
    return CKPT_OK;
}

static enum cmd_result
cmd_changes(struct request *req)
{
    struct agent *a = req->agent;
    struct ckpt_error e = { 0 };
    if (vm_reply_if_lost(req, json_string_value(json_object_get(req->args, "from"))) ||
        vm_reply_if_lost(req, json_string_value(json_object_get(req->args, "to"))))
        return CMD_DONE;
    if (a->nbd_server &&
        strcmp(json_string_value(json_object_get(a->nbd_server, "transport")), "unix") != 0) {
        req_error(req, CKPT_ERR_BUSY, "a running backup serves NBD over TCP; "
                  "checkpoint-changes reads through the agent's Unix socket: end it first");
        return CMD_DONE;
    }
    struct changes *c = xcalloc(1, sizeof *c);
    c->req = req;
    c->agent = a;
    c->extents = json_array();
    if (check_range(a, req->args, c, &e)) {
        changes_free(c);
        req_fail(req, &e);
        return CMD_DONE;
    }
    long long now_ms = (long long) (ev_time() * 1000);
    c->num = a->last_job = now_ms > a->last_job ? now_ms : a->last_job + 1;
    CLEANUP_FREE char *id = xasprintf("changes-%lld", c->num);
    c->bitmap = ckpt_tmp_bitmap(id, c->disk);
    c->export_id = ckpt_tmp_job(id, c->disk);
    const char *path = a->nbd_server
        ? json_string_value(json_object_get(a->nbd_server, "path")) : a->opt.nbd_socket;
    c->uri = xasprintf("nbd+unix:///%s?socket=%s", c->export_id, path);
    if (c->start == c->size) {          /* nothing after the end */
        replied(c);
        return CMD_DONE;
    }
    start(c);
    return CMD_WAIT;
}

static const struct cmd_arg changes_args[] = {
    { "disk", ARG_STRING, true }, { "from", ARG_STRING, true },
    { "to", ARG_STRING, false }, { "starting-offset", ARG_INT, false },
    { "max-results", ARG_INT, false }, { NULL, 0, false },
};

const struct ckpt_cmd changes_cmds[] = {
    { "checkpoint-changes", changes_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH,
      cmd_changes },
    { NULL, NULL, 0, NULL },
};
