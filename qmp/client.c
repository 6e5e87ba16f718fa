/* Asynchronous QMP client: one connection to one QEMU monitor socket.
 *
 * Life of a connection: CONNECTING (non-blocking connect in progress) ->
 * GREETING (waiting for {"QMP": ...}) -> NEGOTIATING (qmp_capabilities
 * sent) -> READY.  Any error, EOF, bad framing or reply timeout goes back
 * to CLOSED through qmp_close, the only place that fails pending commands,
 * so each qmp_send gets exactly one callback.
 *
 * The socket, its buffers and descriptor passing are conn.c's; this file
 * is what QMP adds: the greeting and capabilities, ids, events.
 *
 * Re-entrancy: callbacks may call qmp_send, qmp_disconnect, qmp_connect or
 * qmp_free.  Every entry point that runs callbacks holds q->conn.busy;
 * qmp_free under busy only marks the client dying and the outermost frame
 * frees it (the tmux "client lost, free later" pattern).  Loops that run
 * callbacks check q->conn.gen afterwards, so they stop if the connection
 * they were serving went away under them.
 */
#include "qmp/qmp.h"

#include <errno.h>

#include "common/common.h"

/* QEMU's replies can be large (query-named-block-nodes with many bitmaps),
 * but QEMU is trusted not to send unbounded ones; the cap only stops a
 * broken peer from eating memory.  Depth stays below jansson's own 2048. */
#define QMP_MAX_MSG   (64 * 1024 * 1024)
#define QMP_MAX_DEPTH 1024
#define QMP_READ_SIZE (64 * 1024)

enum qmp_state {
    QMP_CLOSED,
    QMP_CONNECTING,
    QMP_GREETING,
    QMP_NEGOTIATING,
    QMP_READY,
};

/* Requests (conn.c's struct qmp_req) use id, cmd, line, cb.qmp, opaque,
 * deadline and fd.  Lists are FIFOs; order matters for the reply timeout
 * (oldest first). */
struct qmp {
    struct ev_loop *loop;
    struct qmp_callbacks cb;
    double reply_timeout;

    enum qmp_state state;
    struct qmp_conn conn;       /* path, socket, buffers, the timer,
                                   deferred, busy/dying */
    ev_tstamp connect_deadline;
    json_t *version;            /* from the greeting, while connected */

    struct qmp_list queued;     /* waiting for negotiation to finish */
    struct qmp_list pending;    /* sent, waiting for the reply */
    json_int_t next_id;

    bool closing;               /* failing pending commands in qmp_close */
};

static void qmp_close(struct qmp *q, const char *reason, bool notify);

/* conn.c's ops->complete: the request's one and only callback. */
static void
qmp_on_complete(void *opaque, struct qmp_req *r, json_t *ret,
                const struct qmp_error *err)
{
    if (r->cb.qmp)
        r->cb.qmp(opaque, ret, err, r->opaque);
}

/* --- lifetime --- */

static void
qmp_destroy(void *opaque)
{
    struct qmp *q = opaque;
    json_decref(q->version);
    free(q);
}

/* --- timer: reply timeout and connect/greeting timeout --- */

static void
qmp_arm_timer(struct qmp *q)
{
    qmp_conn_disarm(&q->conn);
    if (q->reply_timeout <= 0 || q->state == QMP_CLOSED)
        return;

    ev_tstamp deadline;
    if (q->pending.head)
        deadline = q->pending.head->deadline;
    else if (q->state != QMP_READY)
        deadline = q->connect_deadline;
    else
        return;
    qmp_conn_arm(&q->conn, deadline);
}

/* A hung QEMU must not hang the agent: the late command fails with
 * "Timeout", and the connection is dropped because a late reply could
 * otherwise arrive for a command the caller has given up on. */
static void
qmp_time_out(struct qmp *q, struct qmp_req *r)
{
    unsigned gen = q->conn.gen;
    CLEANUP_FREE char *reason =
        xasprintf("QEMU did not answer '%s' within %g s", r->cmd,
                  q->reply_timeout);
    log_warn("qmp: %s: %s", q->conn.path, reason);
    (void) qmp_list_take(&q->pending, r->id);
    qmp_conn_fail(&q->conn, r, "Timeout", reason);
    if (q->conn.gen == gen)
        qmp_close(q, reason, true);
}

static void
qmp_on_timer(void *opaque)
{
    struct qmp *q = opaque;
    ev_tstamp now = ev_now(q->loop);
    struct qmp_req *r = q->pending.head;

    if (r && r->deadline <= now)
        qmp_time_out(q, r);
    else if (!r && q->state != QMP_READY && q->connect_deadline <= now)
        qmp_close(q, "timed out waiting for the QMP greeting", true);
    else
        qmp_arm_timer(q);
}

/* --- output --- */

/* Puts a request on the wire and starts its reply clock.  A descriptor
 * goes with the first byte of its line (conn.c). */
static void
qmp_transmit(struct qmp *q, struct qmp_req *r)
{
    log_debug("qmp: -> %.200s%s", r->line, r->fd >= 0 ? " (with a descriptor)" : "");
    qmp_conn_write(&q->conn, r->line, &r->fd);
    if (r->fd >= 0)
        log_warn("qmp: %s goes without its descriptor: too many waiting", r->cmd);
    free(r->line);
    r->line = NULL;
    r->deadline = ev_now(q->loop) + q->reply_timeout;
    bool was_idle = !q->pending.head;
    qmp_list_push(&q->pending, r);
    if (was_idle)
        qmp_arm_timer(q);
}

static struct qmp_req *
qmp_req(struct qmp *q, const char *cmd, json_t *args, qmp_reply_cb *cb,
        void *opaque)
{
    struct qmp_req *r = qmp_req_new(cmd, args, ++q->next_id);
    r->cb.qmp = cb;
    r->opaque = opaque;
    return r;
}

/* --- connection teardown --- */

static void
qmp_close(struct qmp *q, const char *reason, bool notify)
{
    if (q->state == QMP_CLOSED)
        return;
    log_debug("qmp: %s: disconnected: %s", q->conn.path, reason);

    qmp_conn_close(&q->conn);
    q->state = QMP_CLOSED;
    json_decref(q->version);
    q->version = NULL;

    /* Detach first: callbacks may send again (those are deferred). */
    struct qmp_list failed = q->pending;
    q->pending = (struct qmp_list) { 0 };
    qmp_list_splice(&failed, &q->queued);
    q->closing = true;
    struct qmp_req *r;
    while ((r = qmp_list_pop(&failed)))
        qmp_conn_fail(&q->conn, r, "Disconnected", reason);
    q->closing = false;

    if (notify && !q->conn.dying && q->cb.state)
        q->cb.state(q, false, NULL, reason, q->cb.opaque);
}

/* --- input --- */

static void
qmp_on_capabilities(struct qmp *q, json_t *ret, const struct qmp_error *err,
                    void *opaque)
{
    if (err) {
        /* Disconnected and Timeout are already closing the connection. */
        if (strcmp(err->class, "Disconnected") != 0 &&
            strcmp(err->class, "Timeout") != 0) {
            CLEANUP_FREE char *reason =
                xasprintf("qmp_capabilities failed: %s", err->desc);
            qmp_close(q, reason, true);
        }
        return;
    }

    q->state = QMP_READY;
    log_debug("qmp: %s: connected", q->conn.path);
    struct qmp_req *r;
    while ((r = qmp_list_pop(&q->queued)))
        qmp_transmit(q, r);
    qmp_arm_timer(q);
    if (q->cb.state)
        q->cb.state(q, true, q->version, NULL, q->cb.opaque);
}

static void
qmp_on_greeting(struct qmp *q, json_t *msg)
{
    json_t *version = json_object_get(json_object_get(msg, "QMP"), "version");
    if (!json_is_object(version)) {
        qmp_close(q, "QEMU did not send a QMP greeting", true);
        return;
    }
    q->version = json_incref(version);
    q->state = QMP_NEGOTIATING;
    qmp_transmit(q, qmp_req(q, "qmp_capabilities", NULL,
                            qmp_on_capabilities, NULL));
}

static void
qmp_on_reply(struct qmp *q, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    struct qmp_req *r = NULL;
    if (json_is_integer(id))
        r = qmp_list_take(&q->pending, json_integer_value(id));
    if (!r) {
        /* QEMU answers a line it could not parse with an id-less error;
         * with no id we cannot tell whose it is, the timeout will. */
        CLEANUP_FREE char *s = json_dumps(msg, JSON_COMPACT);
        log_warn("qmp: %s: reply matches no command: %.200s", q->conn.path,
                 s ? s : "?");
        return;
    }
    qmp_arm_timer(q);
    log_debug("qmp: <- %s (id %lld)", r->cmd, (long long) json_integer_value(id));

    json_t *error = json_object_get(msg, "error");
    if (!error) {
        qmp_conn_complete(&q->conn, r, json_object_get(msg, "return"), NULL);
        return;
    }
    const char *class = json_string_value(json_object_get(error, "class"));
    const char *desc = json_string_value(json_object_get(error, "desc"));
    qmp_conn_fail(&q->conn, r, class ? class : "GenericError",
             desc ? desc : "QEMU gave no error description");
}

static void
qmp_on_event(struct qmp *q, json_t *msg)
{
    const char *name = json_string_value(json_object_get(msg, "event"));
    if (!name) {
        log_warn("qmp: %s: event without a name", q->conn.path);
        return;
    }
    log_debug("qmp: %s: event %s", q->conn.path, name);
    if (q->cb.event)
        q->cb.event(q, name, json_object_get(msg, "data"), q->cb.opaque);
}

static void
qmp_dispatch(void *opaque, json_t *msg)
{
    struct qmp *q = opaque;
    if (!json_is_object(msg))
        log_warn("qmp: %s: ignoring a message that is not an object", q->conn.path);
    else if (q->state == QMP_GREETING)
        qmp_on_greeting(q, msg);
    else if (json_object_get(msg, "event"))
        qmp_on_event(q, msg);
    else if (json_object_get(msg, "return") || json_object_get(msg, "error"))
        qmp_on_reply(q, msg);
    else
        log_warn("qmp: %s: ignoring a message of unknown kind", q->conn.path);
}

static void
qmp_on_bad_input(void *opaque, const char *why)
{
    CLEANUP_FREE char *reason = xasprintf("bad framing from QEMU: %s", why);
    qmp_close(opaque, reason, true);
}

static void
qmp_on_failed(void *opaque, const char *reason)
{
    qmp_close(opaque, reason, true);
}

static void
qmp_on_opened(void *opaque)
{
    struct qmp *q = opaque;
    q->state = QMP_GREETING;
}

static const struct qmp_conn_ops qmp_conn_ops = {
    .max_msg = QMP_MAX_MSG,
    .max_depth = QMP_MAX_DEPTH,
    .read_size = QMP_READ_SIZE,
    .name = "QMP socket",
    .eof_reason = "QEMU closed the QMP connection",
    .opened = qmp_on_opened,
    .message = qmp_dispatch,
    .bad_input = qmp_on_bad_input,
    .failed = qmp_on_failed,
    .complete = qmp_on_complete,
    .timer = qmp_on_timer,
    .destroy = qmp_destroy,
};

/* --- public API --- */

struct qmp *
qmp_new(struct ev_loop *loop, const char *path,
        const struct qmp_callbacks *cb, double reply_timeout)
{
    struct qmp *q = xcalloc(1, sizeof *q);
    q->loop = loop;
    if (cb)
        q->cb = *cb;
    q->reply_timeout = reply_timeout;
    qmp_conn_init(&q->conn, loop, path, &qmp_conn_ops, q);
    return q;
}

int
qmp_connect(struct qmp *q)
{
    if (q->state != QMP_CLOSED || q->closing || q->conn.dying) {
        /* From inside qmp_close, a reconnect would race the disconnected
         * state callback still to come: reconnect from that callback. */
        errno = q->state != QMP_CLOSED ? EISCONN : EBUSY;
        return -1;
    }
    if (qmp_conn_connect(&q->conn) < 0)
        return -1;
    q->state = q->conn.state == QMP_CONN_OPEN ? QMP_GREETING : QMP_CONNECTING;
    q->connect_deadline = ev_now(q->loop) + q->reply_timeout;
    qmp_arm_timer(q);
    log_debug("qmp: %s: connecting", q->conn.path);
    return 0;
}

bool
qmp_is_connected(const struct qmp *q)
{
    return q->state == QMP_READY;
}

void
qmp_send_fd(struct qmp *q, const char *cmd, json_t *args, int fd,
            qmp_reply_cb *cb, void *opaque)
{
    struct qmp_req *r = qmp_req(q, cmd, args, cb, opaque);
    json_decref(args);
    r->fd = fd;

    if (fd >= 0 && q->state == QMP_READY && q->conn.nout_fds == QMP_MAX_OUT_FDS) {
        qmp_conn_defer(&q->conn, r, "GenericError",
                       "too many descriptors waiting to be sent to QEMU");
    } else if (!r->line || q->state == QMP_CLOSED) {
        /* Never call back from inside qmp_send: the caller may not have
         * finished setting up what the callback uses. */
        qmp_conn_defer(&q->conn, r, r->line ? "Disconnected" : "GenericError",
                       r->line ? "not connected to QEMU"
                               : "command cannot be encoded as JSON");
    } else if (q->state == QMP_READY) {
        qmp_transmit(q, r);
    } else {
        qmp_list_push(&q->queued, r);
    }
}

void
qmp_send(struct qmp *q, const char *cmd, json_t *args, qmp_reply_cb *cb,
         void *opaque)
{
    qmp_send_fd(q, cmd, args, -1, cb, opaque);
}

void
qmp_disconnect(struct qmp *q, const char *reason)
{
    if (q->conn.dying)
        return;
    qmp_conn_enter(&q->conn);
    qmp_close(q, reason ? reason : "disconnected by the agent", true);
    qmp_conn_leave(&q->conn);
}

void
qmp_free(struct qmp *q)
{
    if (!q || q->conn.dying)
        return;
    q->conn.dying = true;
    qmp_conn_enter(&q->conn);
    qmp_close(q, "QMP client freed", false);
    qmp_conn_leave(&q->conn);
}
