/* The QEMU connection: connecting, reconnecting when QEMU comes back,
 * sending commands, and handing events on (events.c, job.c).  The tree
 * cache is tree.c; waiting for events is events.c.
 *
 * Until the QMP socket answers, a timer tries again every
 * QMP_RECONNECT_INTERVAL seconds: no busy loop while QEMU is away. */
#include "agent/agent.h"

#include <errno.h>

static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void state_cb(struct qmp *q, bool connected, json_t *version,
                     const char *reason, void *opaque);
static void event_cb(struct qmp *q, const char *event, json_t *data,
                     void *opaque);

void
vm_start(struct agent *a)
{
    ev_timer_init(&a->reconnect_w, reconnect_cb, 0., QMP_RECONNECT_INTERVAL);
    a->reconnect_w.data = a;
    ev_timer_start(a->loop, &a->reconnect_w);
    log_info("waiting for QEMU at %s", a->opt.qmp_path);
}

void
vm_stop(struct agent *a)
{
    ev_timer_stop(a->loop, &a->reconnect_w);
    ev_timer_stop(a->loop, &a->incoming_w);
    ev_timer_stop(a->loop, &a->trim_w);
    ev_timer_stop(a->loop, &a->caps_w);
    a->stopping = true;
    vm_fire_waiters(a, NULL, NULL);
    if (a->qmp)
        qmp_free(a->qmp);
    a->qmp = NULL;
    a->qemu_ready = false;
    json_decref(a->qemu_version);
    a->qemu_version = NULL;
    meta_tree_free(&a->tree);
    free(a->tree_sig);
    a->tree_sig = NULL;
    str_vec_free_all(&a->known);
    str_vec_free_all(&a->lost);
    qjobs_forget(a);
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

/* A migration's destination: until the migration ends the images are
 * not ours to read (QEMU has them inactive, their bitmaps not loaded).
 * QEMU 7.2 activates them when the migration completes, QEMU 10 only
 * when the VM runs: so the tree is read again both when the run state
 * leaves "inmigrate" and at the first RESUME after it, and then holds
 * the checkpoints the source had. */
static void incoming_poll(struct agent *a);

static void
incoming_refreshed(struct agent *a, const struct qmp_error *err, void *opaque)
{
    if (err)
        log_warn("cannot read the tree after the incoming migration: %s", err->desc);
    else
        log_info("incoming migration done: %zu disks, %zu checkpoints",
                 a->tree.ndisks, a->tree.nckpts);
}

static void
incoming_status(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct agent *a = opaque;
    const char *st = json_string_value(json_object_get(ret, "status"));
    if (err || !a->qemu_ready)
        return;
    if (st && strcmp(st, "inmigrate") == 0) {
        ev_timer_start(a->loop, &a->incoming_w);
        return;
    }
    vm_refresh(a, incoming_refreshed, NULL);
}

/* The VM runs after an incoming migration: its images are active now. */
static void
incoming_resumed(struct agent *a)
{
    if (!a->incoming || !a->qemu_ready)
        return;
    a->incoming = false;
    vm_refresh(a, incoming_refreshed, NULL);
}

static void
incoming_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    incoming_poll(w->data);
}

static void
incoming_poll(struct agent *a)
{
    vm_send(a, "query-status", NULL, incoming_status, a);
}

/* The schema, once the agent has answered its first clients: a backup's
 * begin that comes sooner asks for it itself (qemu-caps.c). */
static void
caps_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct agent *a = w->data;
    if (a->qemu_ready)
        caps_probe(a);
}

/* The last step of connecting: is this QEMU a migration's destination? */
static void
connect_status(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct agent *a = opaque;
    const char *st = json_string_value(json_object_get(ret, "status"));
    if (err) {
        log_error("cannot read QEMU's run state: %s", err->desc);
        qmp_disconnect(a->qmp, "cannot read the run state");
        return;
    }
    a->qemu_ready = true;
    ev_timer_stop(a->loop, &a->caps_w);
    ev_timer_init(&a->caps_w, caps_tick, 0.5, 0.);
    a->caps_w.data = a;
    ev_timer_start(a->loop, &a->caps_w);
    vm_note_lost(a);
    log_info("QEMU connected: %zu disks, %zu checkpoints",
             a->tree.ndisks, a->tree.nckpts);
    agent_event(a, "QEMU_CONNECTED", NULL);
    life_ready(a);
    ev_timer_stop(a->loop, &a->incoming_w);
    ev_timer_init(&a->incoming_w, incoming_tick, 0.25, 0.);
    a->incoming_w.data = a;
    a->incoming = st && strcmp(st, "inmigrate") == 0;
    if (a->incoming) {
        log_info("QEMU waits for an incoming migration: the checkpoints are read "
                 "once it has arrived");
        ev_timer_start(a->loop, &a->incoming_w);
    }
}

static void
first_refresh_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    if (err) {
        log_error("cannot read the block graph from QEMU: %s", err->desc);
        qmp_disconnect(a->qmp, "cannot read the block graph");
        return;
    }
    vm_send(a, "query-status", NULL, connect_status, a);
}

static void
swept(struct agent *a, void *opaque)
{
    if (a->qmp && qmp_is_connected(a->qmp))
        vm_refresh(a, first_refresh_done, NULL);
}

static void
sweep_then_read(struct agent *a)
{
    /* No job of ours survives a reconnect: whatever carries our mark
     * was left by a crashed agent or an interrupted backup. */
    if (a->qmp && qmp_is_connected(a->qmp)) {
        qjobs_list(a);          /* before the sweep, which ends jobs */
        job_sweep_all(a, swept, NULL);
    }
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
        memset(&a->caps, 0, sizeof a->caps);   /* read once ready: qemu-caps.c */
        sweep_then_read(a);
        return;
    }
    bool was_ready = a->qemu_ready;
    a->qemu_ready = false;
    ev_timer_stop(a->loop, &a->caps_w);
    qjobs_forget(a);
    if (was_ready) {
        str_vec_free_all(&a->known);
        for (size_t i = 0; i < a->tree.nckpts; i++)
            str_vec_append(&a->known, xstrdup(a->tree.ckpts[i].rec.name));
    }
    vm_fire_waiters(a, NULL, NULL);
    job_qemu_gone(a);
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

static void
event_cb(struct qmp *q, const char *event, json_t *data, void *opaque)
{
    struct agent *a = opaque;
    log_debug("QEMU event %s", event);
    if (!data)
        data = json_null();
    qjobs_event(a, event, data);
    vm_fire_waiters(a, event, data);
    job_qemu_event(a, event, data);
    if (strcmp(event, "RESUME") == 0)
        incoming_resumed(a);
}

void
vm_send(struct agent *a, const char *cmd, json_t *args, qmp_reply_cb *cb,
        void *opaque)
{
    vm_send_fd(a, cmd, args, -1, cb, opaque);
}

void
vm_send_fd(struct agent *a, const char *cmd, json_t *args, int fd,
           qmp_reply_cb *cb, void *opaque)
{
    /* a->qmp exists from the first connect attempt on; dispatch refuses
     * commands that need QEMU before that. */
    /* Crash testing: abort() before the Nth QMP command sent once ready,
     * so tests can kill the agent at every step of a change.  The schema
     * probe is not counted: a timer may send it (qemu-caps.c), and the
     * crash points must not depend on when it fired. */
    if (a->opt.debug.abort_after && a->qemu_ready && strcmp(cmd, "query-qmp-schema") != 0 &&
        ++a->qmp_sent > a->opt.debug.abort_after) {
        log_error("CKPTD_DEBUG_ABORT_AFTER=%ld reached before %s", a->opt.debug.abort_after, cmd);
        abort();
    }
    qmp_send_fd(a->qmp, cmd, args, fd, cb, opaque);
}

