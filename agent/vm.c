/* The QEMU side: connecting (and reconnecting when QEMU comes back),
 * and the cached tree, re-read from QEMU whenever it may have changed.
 *
 * Until the QMP socket answers, a timer tries again every
 * QMP_RECONNECT_INTERVAL seconds: no busy loop while QEMU is away. */
#include "agent/agent.h"

#include <errno.h>

static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void fire_waiters(struct agent *a, const char *event, json_t *data);
static void state_cb(struct qmp *q, bool connected, json_t *version,
                     const char *reason, void *opaque);
static void event_cb(struct qmp *q, const char *event, json_t *data,
                     void *opaque);

void
vm_start(struct agent *a)
{
    /* Crash testing: abort() before the Nth QMP command sent once ready, so
     * tests can kill the agent at every step of a change and check what a
     * new one finds. */
    const char *n = getenv("CKPTD_DEBUG_ABORT_AFTER");
    a->abort_after = n ? atol(n) : 0;
    ev_timer_init(&a->reconnect_w, reconnect_cb, 0., QMP_RECONNECT_INTERVAL);
    a->reconnect_w.data = a;
    ev_timer_start(a->loop, &a->reconnect_w);
    log_info("waiting for QEMU at %s", a->opt.qmp_path);
}

void
vm_stop(struct agent *a)
{
    ev_timer_stop(a->loop, &a->reconnect_w);
    a->stopping = true;
    fire_waiters(a, NULL, NULL);
    if (a->qmp)
        qmp_free(a->qmp);
    a->qmp = NULL;
    a->qemu_ready = false;
    json_decref(a->qemu_version);
    a->qemu_version = NULL;
    meta_tree_free(&a->tree);
    str_vec_free_all(&a->known);
    str_vec_free_all(&a->lost);
}

static bool
str_vec_has(const struct str_vec *v, const char *s)
{
    for (size_t i = 0; i < v->len; i++)
        if (strcmp(v->ptr[i], s) == 0)
            return true;
    return false;
}

/* Checkpoints known before QEMU went away and missing now were created
 * after that QEMU started and never reached the images (a crash). */
static void
note_lost(struct agent *a)
{
    for (size_t i = 0; i < a->known.len; i++)
        if (meta_tree_find_ckpt(&a->tree, a->known.ptr[i]) < 0 &&
            !str_vec_has(&a->lost, a->known.ptr[i])) {
            log_warn("checkpoint '%s' is gone: QEMU stopped before saving it",
                     a->known.ptr[i]);
            str_vec_append(&a->lost, xstrdup(a->known.ptr[i]));
        }
    str_vec_free_all(&a->known);
}

bool
vm_reply_if_lost(struct request *req, const char *name)
{
    struct agent *a = req->agent;
    if (!name || meta_tree_find_ckpt(&a->tree, name) >= 0 || !str_vec_has(&a->lost, name))
        return false;
    req_error(req, CKPT_ERR_NOT_FOUND,
              "checkpoint '%s' was lost: it was created after QEMU last started, "
              "and QEMU stopped without saving its bitmaps; a full backup is needed",
              name);
    return true;
}

static void
reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct agent *a = w->data;
    if (a->connecting)
        return;
    if (a->qmp && qmp_is_connected(a->qmp)) {
        ev_timer_stop(loop, w);
        return;
    }
    /* The new object is in place before the old one's pending callbacks
     * run, so a callback that sends again never reaches freed memory. */
    struct qmp *old = a->qmp;
    struct qmp_callbacks cb = { event_cb, state_cb, a };
    a->qmp = qmp_new(loop, a->opt.qmp_path, &cb, a->opt.qmp_timeout);
    if (old)
        qmp_free(old);
    if (qmp_connect(a->qmp) == 0)
        a->connecting = true;
    else if (errno != ENOENT && errno != ECONNREFUSED)
        log_debug("cannot connect to %s: %s", a->opt.qmp_path, strerror(errno));
}

static void
first_refresh_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    if (err) {
        log_error("cannot read the block graph from QEMU: %s", err->desc);
        qmp_disconnect(a->qmp, "cannot read the block graph");
        return;
    }
    a->qemu_ready = true;
    note_lost(a);
    log_info("QEMU connected: %zu disks, %zu checkpoints",
             a->tree.ndisks, a->tree.nckpts);
    agent_event(a, "QEMU_CONNECTED", NULL);
    life_ready(a);
}

static void
swept(const char *err, void *opaque)
{
    struct agent *a = opaque;
    if (a->qmp && qmp_is_connected(a->qmp))
        vm_refresh(a, first_refresh_done, NULL);
}

static void
state_cb(struct qmp *q, bool connected, json_t *version, const char *reason,
         void *opaque)
{
    struct agent *a = opaque;
    if (a->stopping)
        return;
    a->connecting = false;
    a->qemu_shutting_down = false;
    if (connected) {
        json_decref(a->qemu_version);
        a->qemu_version = json_incref(version);
        /* No job of ours survives a reconnect: whatever carries our mark
         * was left by a crashed agent or an interrupted backup. */
        sweep_run(a, NULL, -1, NULL, swept, a);
        return;
    }
    bool was_ready = a->qemu_ready;
    a->qemu_ready = false;
    if (was_ready) {
        str_vec_free_all(&a->known);
        for (size_t i = 0; i < a->tree.nckpts; i++)
            str_vec_append(&a->known, xstrdup(a->tree.ckpts[i].rec.name));
    }
    fire_waiters(a, NULL, NULL);
    backup_qemu_gone(a);
    if (was_ready) {
        log_warn("QEMU disconnected: %s", reason);
        agent_event(a, "QEMU_DISCONNECTED", json_pack("{s:s}", "reason", reason));
        if (a->opt.exit_with_qemu) {
            log_info("--exit-with-qemu: exiting");
            ev_break(a->loop, EVBREAK_ALL);
            return;
        }
    }
    /* The object is freed by the timer, outside its own callback. */
    ev_timer_again(a->loop, &a->reconnect_w);
    if (!ev_is_active(&a->reconnect_w))
        ev_timer_start(a->loop, &a->reconnect_w);
}

/* --- waiting for events --- */
struct event_waiter {
    struct agent *agent;
    char *event;
    json_t *match;
    ev_timer timer;
    vm_event_cb *cb;
    void *opaque;
    struct event_waiter *next;
};

static void
waiter_unlink(struct agent *a, struct event_waiter *w)
{
    for (struct event_waiter **p = &a->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    ev_timer_stop(a->loop, &w->timer);
}

static void
waiter_fire(struct event_waiter *w, json_t *data)
{
    struct agent *a = w->agent;
    waiter_unlink(a, w);
    w->cb(a, data, w->opaque);
    json_decref(w->match);
    free(w->event);
    free(w);
}

static void
waiter_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    waiter_fire(t->data, NULL);
}

void
vm_wait_event(struct agent *a, const char *event, json_t *match,
              double timeout, vm_event_cb *cb, void *opaque)
{
    struct event_waiter *w = xcalloc(1, sizeof *w);
    *w = (struct event_waiter) {
        .agent = a, .event = xstrdup(event), .match = match ? match : json_object(),
        .cb = cb, .opaque = opaque, .next = a->waiters,
    };
    ev_timer_init(&w->timer, waiter_timeout, timeout, 0.);
    w->timer.data = w;
    ev_timer_start(a->loop, &w->timer);
    a->waiters = w;
}

static bool
data_matches(json_t *match, json_t *data)
{
    const char *key;
    json_t *v;
    json_object_foreach(match, key, v)
        if (!json_equal(v, json_object_get(data, key)))
            return false;
    return true;
}

/* Fires every waiter for this event (all of them, with NULL, when QEMU
 * went away: event == NULL). */
static void
fire_waiters(struct agent *a, const char *event, json_t *data)
{
    struct event_waiter *w = a->waiters;
    while (w) {
        struct event_waiter *next = w->next;
        if (!event || (strcmp(w->event, event) == 0 && data_matches(w->match, data))) {
            waiter_fire(w, event ? data : NULL);
            next = a->waiters;  /* the list may have changed under us */
        }
        w = next;
    }
}

static void
event_cb(struct qmp *q, const char *event, json_t *data, void *opaque)
{
    struct agent *a = opaque;
    log_debug("QEMU event %s", event);
    if (!data)
        data = json_null();
    fire_waiters(a, event, data);
    backup_qemu_event(a, event, data);
}

void
vm_send(struct agent *a, const char *cmd, json_t *args, qmp_reply_cb *cb,
        void *opaque)
{
    /* a->qmp exists from the first connect attempt on; dispatch refuses
     * commands that need QEMU before that. */
    if (a->abort_after && a->qemu_ready && ++a->qmp_sent > a->abort_after) {
        log_error("CKPTD_DEBUG_ABORT_AFTER=%ld reached before %s", a->abort_after, cmd);
        abort();
    }
    qmp_send(a->qmp, cmd, args, cb, opaque);
}

/* --- re-reading the tree: query-block, then query-named-block-nodes --- */
struct refresh {
    struct agent *agent;
    vm_refresh_cb *cb;
    void *opaque;
    json_t *blocks;
};

static void
refresh_finish(struct refresh *r, const struct qmp_error *err)
{
    struct agent *a = r->agent;
    vm_refresh_cb *cb = r->cb;
    void *opaque = r->opaque;
    json_decref(r->blocks);
    free(r);
    cb(a, err, opaque);
}

static void
nodes_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct refresh *r = opaque;
    if (err) {
        refresh_finish(r, err);
        return;
    }
    struct meta_tree tree;
    struct ckpt_error e = { 0 };
    if (meta_tree_build(r->blocks, ret, &tree, &e) < 0) {
        struct qmp_error qe = { "GenericError", e.msg };
        refresh_finish(r, &qe);
        return;
    }
    meta_tree_free(&r->agent->tree);
    r->agent->tree = tree;
    refresh_finish(r, NULL);
}

static void
blocks_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct refresh *r = opaque;
    if (err) {
        refresh_finish(r, err);
        return;
    }
    r->blocks = json_incref(ret);
    vm_send(r->agent, "query-named-block-nodes",
            json_pack("{s:b}", "flat", 1), nodes_done, r);
}

void
vm_refresh(struct agent *a, vm_refresh_cb *cb, void *opaque)
{
    struct refresh *r = xcalloc(1, sizeof *r);
    *r = (struct refresh) { .agent = a, .cb = cb, .opaque = opaque };
    vm_send(a, "query-block", NULL, blocks_done, r);
}

/* --- the tree after a transaction --- */
struct replay_check {
    char *replayed;
    vm_refresh_cb *cb;
    void *opaque;
};

static void
verify_replay(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct replay_check *rc = opaque;
    CLEANUP_FREE char *read_back = err ? NULL : meta_tree_signature(&a->tree);
    if (read_back && strcmp(read_back, rc->replayed) != 0) {
        log_error("replayed tree differs from QEMU's:\n--- replayed\n%s--- QEMU\n%s",
                  rc->replayed, read_back);
        abort();
    }
    vm_refresh_cb *cb = rc->cb;
    void *cb_opaque = rc->opaque;
    free(rc->replayed);
    free(rc);
    cb(a, err, cb_opaque);
}

void
vm_tree_after(struct agent *a, json_t *actions, vm_refresh_cb *cb, void *opaque)
{
    if (!actions || meta_tree_apply(&a->tree, actions) < 0) {
        vm_refresh(a, cb, opaque);
        return;
    }
    if (!getenv("CKPTD_DEBUG_VERIFY_TREE")) {
        cb(a, NULL, opaque);
        return;
    }
    struct replay_check *rc = xmalloc(sizeof *rc);
    *rc = (struct replay_check) { meta_tree_signature(&a->tree), cb, opaque };
    vm_refresh(a, verify_replay, rc);
}
