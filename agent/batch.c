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
    bool optional;
};

static void
item_reply(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct batch_item *it = opaque;
    struct batch *b = it->b;
    if (err && it->optional)
        log_debug("%s: %s (not needed)", it->cmd, err->desc);
    else if (err)
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
    batch_send_fd(b, cmd, args, -1, cb, opaque);
}

static void
send_item(struct batch *b, const char *cmd, json_t *args, int fd,
          batch_reply_cb *cb, void *opaque, bool optional)
{
    struct batch_item *it = xmalloc(sizeof *it);
    *it = (struct batch_item) { b, xstrdup(cmd), cb, opaque, optional };
    b->pending++;
    vm_send_fd(b->agent, cmd, args, fd, item_reply, it);
}

void
batch_send_fd(struct batch *b, const char *cmd, json_t *args, int fd,
              batch_reply_cb *cb, void *opaque)
{
    send_item(b, cmd, args, fd, cb, opaque, false);
}

void
batch_send_optional(struct batch *b, const char *cmd, json_t *args,
                    batch_reply_cb *cb, void *opaque)
{
    send_item(b, cmd, args, -1, cb, opaque, true);
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
    *it = (struct batch_item) { b, xasprintf("waiting for %s", event), NULL, NULL, false };
    b->pending++;
    vm_wait_event(b->agent, event, match, timeout, item_event, it);
}

/* A command and the event it causes: the waiter is set before the
 * command is sent, and cancelled if QEMU refuses the command (a missing
 * export or job, when cleaning up), so the batch never waits for an
 * event that cannot come. */
struct expect_item {
    struct batch *b;
    char *cmd;
    struct event_waiter *w;
    bool replied, fired;
    bool *refused;              /* optional: set on a refusal, which is
                                 * then no failure of the batch */
};

static void
expect_settle(struct expect_item *it)
{
    struct batch *b = it->b;
    free(it->cmd);
    free(it);
    b->pending--;
    batch_settle(b);
}

static void
expect_event(struct agent *a, json_t *data, void *opaque)
{
    struct expect_item *it = opaque;
    it->w = NULL;
    it->fired = true;
    if (!data)
        note_error(it->b, it->cmd, "QEMU did not report its end in time");
    if (it->replied)
        expect_settle(it);
}

static void
expect_reply(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct expect_item *it = opaque;
    it->replied = true;
    if (err) {
        if (it->refused) {
            *it->refused = true;
            log_debug("%s: %s (not needed)", it->cmd, err->desc);
        } else {
            note_error(it->b, it->cmd, err->desc);
        }
        if (it->w)
            vm_cancel_wait(it->b->agent, it->w);
        it->w = NULL;
        expect_settle(it);
    } else if (it->fired) {
        expect_settle(it);
    }
}

static void
send_expect(struct batch *b, const char *cmd, json_t *args, const char *event,
            json_t *match, double timeout, bool *refused)
{
    struct expect_item *it = xcalloc(1, sizeof *it);
    it->b = b;
    it->cmd = xstrdup(cmd);
    it->refused = refused;
    b->pending++;
    it->w = vm_wait_event(b->agent, event, match, timeout, expect_event, it);
    vm_send(b->agent, cmd, args, expect_reply, it);
}

void
batch_send_expect(struct batch *b, const char *cmd, json_t *args,
                  const char *event, json_t *match, double timeout)
{
    send_expect(b, cmd, args, event, match, timeout, NULL);
}

void
batch_send_expect_optional(struct batch *b, const char *cmd, json_t *args,
                           const char *event, json_t *match, double timeout,
                           bool *refused)
{
    send_expect(b, cmd, args, event, match, timeout, refused);
}

void
batch_hold(struct batch *b)
{
    b->pending++;
}

void
batch_release(struct batch *b, const char *err)
{
    if (err)
        note_error(b, "step", err);
    b->pending--;
    batch_settle(b);
}

void
batch_arm(struct batch *b)
{
    b->armed = true;
    batch_settle(b);
}
