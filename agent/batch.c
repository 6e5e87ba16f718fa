/* A batch: several QMP commands (and awaited events) sent at once, with
 * one callback when every one of them has answered.  Multi-step work
 * (starting and ending backups, the start-up sweep) is a chain of batches,
 * which keeps each step a few flat lines instead of nested callbacks. */
#include "agent/agent.h"

static void
batch_settle(struct batch *b)
{
    if (b->pending || !b->armed || b->settled)
        return;
    b->settled = true;
    batch_done_cb *done = b->done;
    void *opaque = b->opaque;
    bool failed = b->err_desc != NULL;
    char *desc = b->err_desc;
    b->err_desc = NULL;
    free(b);
    done(failed ? desc : NULL, opaque);
    free(desc);
}

static void
note_error(struct batch *b, const char *cmd, const char *desc)
{
    if (b->quiet)
        log_debug("%s: %s (ignored)", cmd, desc);
    else if (!b->err_desc)
        b->err_desc = xasprintf("%s: %s", cmd, desc);
}

struct batch_item {
    struct batch *b;
    char *cmd;
    batch_reply_cb *cb;
    void *opaque;
};

static void
item_reply(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct batch_item *it = opaque;
    struct batch *b = it->b;
    if (err)
        note_error(b, it->cmd, err->desc);
    else if (it->cb)
        it->cb(ret, it->opaque);
    free(it->cmd);
    free(it);
    b->pending--;
    batch_settle(b);
}

struct batch *
batch_new(struct agent *a, batch_done_cb *done, void *opaque)
{
    struct batch *b = xcalloc(1, sizeof *b);
    b->agent = a;
    b->done = done;
    b->opaque = opaque;
    return b;
}

void
batch_send(struct batch *b, const char *cmd, json_t *args, batch_reply_cb *cb,
           void *opaque)
{
    struct batch_item *it = xmalloc(sizeof *it);
    *it = (struct batch_item) { b, xstrdup(cmd), cb, opaque };
    b->pending++;
    vm_send(b->agent, cmd, args, item_reply, it);
}

static void
item_event(struct agent *a, json_t *data, void *opaque)
{
    struct batch_item *it = opaque;
    struct batch *b = it->b;
    if (!data)
        note_error(b, it->cmd, "QEMU did not report it in time");
    free(it->cmd);
    free(it);
    b->pending--;
    batch_settle(b);
}

void
batch_expect_event(struct batch *b, const char *event, json_t *match,
                   double timeout)
{
    struct batch_item *it = xmalloc(sizeof *it);
    *it = (struct batch_item) { b, xasprintf("waiting for %s", event), NULL, NULL };
    b->pending++;
    vm_wait_event(b->agent, event, match, timeout, item_event, it);
}

void
batch_arm(struct batch *b)
{
    b->armed = true;
    batch_settle(b);
}
