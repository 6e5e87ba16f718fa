/* Quiescing the guest around a transaction, through its guest agent.
 *
 * The order is libvirt's: everything that can be checked is checked and
 * planned first; then guest-fsfreeze-freeze; the one transaction; and
 * guest-fsfreeze-thaw at once, whatever the transaction's answer, before
 * any export or scratch node is set up, so the guest is frozen only for
 * the transaction's round trip.  A freeze that fails changes nothing:
 * the command fails with the guest agent's own message (like qmpbackup
 * and Proxmox, which also refuse rather than silently back up an
 * unfrozen guest when a freeze was asked for).
 *
 * The thaw runs on every path: after the transaction, on SIGTERM, and from
 * a watchdog QUIESCE_WATCHDOG seconds after the freeze was sent, whatever
 * else happens (Windows' VSS gives up after 10 s too).  A freeze that
 * timed out is thawed as well: the guest may have frozen after all.
 * Changes run one at a time, so there is at most one freeze. */
#include "agent/agent.h"

#define QUIESCE_WATCHDOG 10.0
#define QGA_COMMAND_TIMEOUT 10.0

struct freeze_call {
    struct agent *agent;
    quiesce_cb *cb;
    void *opaque;
};

static void
thaw_reply(struct qga *g, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct agent *a = opaque;
    a->quiesce.thawing = false;
    if (err) {
        log_error("guest-fsfreeze-thaw failed: %s", err->desc);
    } else {
        a->quiesce.frozen = false;
        a->quiesce.frozen_ms = (long) ((ev_now(a->loop) - a->quiesce.frozen_at) * 1000);
        log_info("guest thawed after %ld ms", a->quiesce.frozen_ms);
    }
    quiesce_cb *cb = a->quiesce.thaw_cb;
    void *cb_opaque = a->quiesce.thaw_opaque;
    a->quiesce.thaw_cb = NULL;
    if (cb)
        cb(a, err, cb_opaque);
    agent_maybe_exit(a);
}

void
quiesce_thaw(struct agent *a, quiesce_cb *cb, void *opaque)
{
    ev_timer_stop(a->loop, &a->quiesce.watchdog);
    if (!a->quiesce.frozen && !a->quiesce.freezing) {
        if (cb)
            cb(a, NULL, opaque);
        return;
    }
    a->quiesce.thaw_cb = cb;
    a->quiesce.thaw_opaque = opaque;
    if (a->quiesce.thawing)
        return;
    a->quiesce.thawing = true;
    qga_exec(a->qga, "guest-fsfreeze-thaw", NULL, QGA_COMMAND_TIMEOUT, thaw_reply, a);
}

static void
watchdog_fired(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct agent *a = w->data;
    log_warn("the guest was frozen for %.0f s: thawing it now; what QEMU does "
             "after this is not quiesced", QUIESCE_WATCHDOG);
    a->quiesce.watchdog_fired = true;
    quiesce_thaw(a, NULL, NULL);
}

static void
freeze_reply(struct qga *g, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct freeze_call fc = *(struct freeze_call *) opaque;
    struct agent *a = fc.agent;
    free(opaque);
    a->quiesce.freezing = false;
    if (!err) {
        a->quiesce.frozen = true;
        a->quiesce.frozen_at = ev_now(a->loop);
        log_info("guest file systems frozen (%" JSON_INTEGER_FORMAT ")",
                 json_is_integer(ret) ? json_integer_value(ret) : 0);
        fc.cb(a, NULL, fc.opaque);
        return;
    }
    log_warn("guest-fsfreeze-freeze failed: %s", err->desc);
    if (strcmp(err->class, "Timeout") == 0) {
        a->quiesce.frozen = true;           /* perhaps: thaw to be sure */
        a->quiesce.frozen_at = ev_now(a->loop);
        quiesce_thaw(a, NULL, NULL);
    } else {
        ev_timer_stop(a->loop, &a->quiesce.watchdog);
    }
    fc.cb(a, err, fc.opaque);
}

bool
quiesce_available(const struct agent *a, struct ckpt_error *e)
{
    if (!a->qga) {
        ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "quiesce needs the guest agent: start "
                  "ckptd with --qga PATH (the host side of the VM's "
                  "org.qemu.guest_agent.0 channel)");
        return false;
    }
    if (qga_state(a->qga) != QGA_STATE_CONNECTED) {
        ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "quiesce needs the guest agent, and "
                  "its channel %s is not connected (is qemu-ga running in the "
                  "guest?)", a->opt.qga_path);
        return false;
    }
    return true;
}

void
quiesce_freeze(struct agent *a, quiesce_cb *cb, void *opaque)
{
    struct freeze_call *fc = xmalloc(sizeof *fc);
    *fc = (struct freeze_call) { a, cb, opaque };
    a->quiesce.freezing = true;
    a->quiesce.frozen_ms = 0;
    a->quiesce.watchdog_fired = false;
    ev_timer_init(&a->quiesce.watchdog, watchdog_fired, QUIESCE_WATCHDOG, 0.);
    a->quiesce.watchdog.data = a;
    ev_timer_start(a->loop, &a->quiesce.watchdog);
    qga_exec(a->qga, "guest-fsfreeze-freeze", NULL, QGA_COMMAND_TIMEOUT,
             freeze_reply, fc);
}

/* --- a transaction between a freeze and a thaw --- */
struct quiesced_txn {
    struct agent *agent;
    json_t *actions;
    txn_done_cb *cb;
    void *opaque;
    char *err_class, *err_desc;         /* the transaction's answer */
};

static void
quiesced_txn_free(struct quiesced_txn *q)
{
    json_decref(q->actions);
    free(q->err_class);
    free(q->err_desc);
    free(q);
}

static void
after_thaw(struct agent *a, const struct qmp_error *thaw_err, void *opaque)
{
    struct quiesced_txn *q = opaque;
    struct qmp_error e = { q->err_class, q->err_desc };
    q->cb(a, q->err_class ? &e : NULL, q->opaque);
    quiesced_txn_free(q);
}

static void
txn_answered(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct quiesced_txn *q = opaque;
    if (err) {
        q->err_class = xstrdup(err->class);
        q->err_desc = xstrdup(err->desc);
    }
    quiesce_thaw(a, after_thaw, q);
}

static void
frozen(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct quiesced_txn *q = opaque;
    if (!err && a->shutting_down) {
        /* The thaw SIGTERM asked for may already have run: a transaction
         * now would not be quiesced. */
        q->err_class = xstrdup("GuestAgentError");
        q->err_desc = xstrdup("the agent is shutting down");
        quiesce_thaw(a, after_thaw, q);
        return;
    }
    if (err) {
        struct qmp_error e = { "GuestAgentError", err->desc };
        q->cb(a, &e, q->opaque);
        quiesced_txn_free(q);
        return;
    }
    json_t *actions = q->actions;
    q->actions = NULL;
    txn_send(a, actions, txn_answered, q);
}

void
quiesce_txn_send(struct agent *a, json_t *actions, txn_done_cb *cb, void *opaque)
{
    struct quiesced_txn *q = xcalloc(1, sizeof *q);
    *q = (struct quiesced_txn) { .agent = a, .actions = actions, .cb = cb,
                                 .opaque = opaque };
    quiesce_freeze(a, frozen, q);
}
