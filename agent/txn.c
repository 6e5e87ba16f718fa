/* The one path by which a `transaction` reaches QEMU.  Every change
 * (create, delete, redefine, release, backup-begin, and what later
 * commands add) goes through txn_send, so that whatever QEMU answers the
 * cached tree equals what QEMU holds when the callback runs:
 *   accepted           its actions replayed on the tree (checked against
 *                      a re-read under CKPTD_DEBUG_VERIFY_TREE);
 *   refused            the tree re-read (something may have changed
 *                      behind our back: that is why it was refused);
 *   QEMU gone, no answer  nothing to read now: the tree is re-read when
 *                      QEMU is back, before any command runs again. */
#include "agent/agent.h"

struct txn {
    struct agent *agent;
    json_t *actions;
    char *err_class, *err_desc;
    txn_done_cb *cb;
    void *opaque;
};

static void
txn_finish(struct agent *a, const struct qmp_error *refresh_err, void *opaque)
{
    struct txn *t = opaque;
    if (refresh_err && !t->err_class)
        log_warn("cannot read the tree after a transaction: %s", refresh_err->desc);
    struct qmp_error e = { t->err_class, t->err_desc };
    t->cb(a, t->err_class ? &e : NULL, t->opaque);
    json_decref(t->actions);
    free(t->err_class);
    free(t->err_desc);
    free(t);
}

static bool
connection_lost(const struct qmp_error *err)
{
    return strcmp(err->class, "Disconnected") == 0 || strcmp(err->class, "Timeout") == 0;
}

static void
txn_reply(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct txn *t = opaque;
    if (err) {
        t->err_class = xstrdup(err->class);
        t->err_desc = xstrdup(err->desc);
    }
    if (err && connection_lost(err)) {
        txn_finish(t->agent, NULL, t);
        return;
    }
    vm_tree_after(t->agent, err ? NULL : t->actions, txn_finish, t);
}

void
txn_send(struct agent *a, json_t *actions, txn_done_cb *cb, void *opaque)
{
    struct txn *t = xcalloc(1, sizeof *t);
    *t = (struct txn) { .agent = a, .actions = json_incref(actions), .cb = cb,
                        .opaque = opaque };
    log_debug("transaction of %zu actions", json_array_size(actions));
    vm_send(a, "transaction", json_pack("{s:o}", "actions", actions), txn_reply, t);
}
