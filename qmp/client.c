/* Asynchronous QMP client: one connection to one QEMU monitor socket.
 *
 * Life of a connection: CONNECTING (non-blocking connect in progress) ->
 * GREETING (waiting for {"QMP": ...}) -> NEGOTIATING (qmp_capabilities
 * sent) -> READY.  Any error, EOF, bad framing or reply timeout goes back
 * to CLOSED through qmp_close, the only place that fails pending commands,
 * so each qmp_send gets exactly one callback.
 *
 * Re-entrancy: callbacks may call qmp_send, qmp_disconnect, qmp_connect or
 * qmp_free.  Every entry point that runs callbacks holds q->busy; qmp_free
 * under busy only marks the client dying and the outermost frame frees it
 * (the tmux "client lost, free later" pattern).  Loops that run callbacks
 * check q->gen afterwards, so they stop if the connection they were
 * serving went away under them.
 */
#include "qmp/qmp.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

struct qmp_req {
    struct qmp_req *next;
    json_int_t id;
    char *cmd;                  /* for logs and the timeout message */
    char *line;                 /* encoded command; NULL once queued out */
    qmp_reply_cb *cb;
    void *opaque;
    ev_tstamp deadline;
    const char *fail_class;     /* for deferred failures (static strings) */
    const char *fail_desc;
    int fd;                     /* sent with the line (SCM_RIGHTS), or -1 */
};

/* A descriptor waiting in the output buffer: it goes out with the byte at
 * off, the first of its command's line, as QEMU's getfd/add-fd expect. */
struct qmp_out_fd {
    size_t off;
    int fd;
};
#define QMP_MAX_OUT_FDS 64

/* FIFO of requests; order matters for the reply timeout (oldest first). */
struct qmp_list {
    struct qmp_req *head, *tail;
};

struct qmp {
    struct ev_loop *loop;
    char *path;
    struct qmp_callbacks cb;
    double reply_timeout;

    enum qmp_state state;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    ev_idle idle;
    ev_tstamp connect_deadline;
    struct qmp_stream in;
    char *out;
    size_t out_len, out_off, out_cap;
    struct qmp_out_fd out_fds[QMP_MAX_OUT_FDS]; /* in offset order */
    size_t nout_fds;
    json_t *version;            /* from the greeting, while connected */

    struct qmp_list queued;     /* waiting for negotiation to finish */
    struct qmp_list pending;    /* sent, waiting for the reply */
    struct qmp_list deferred;   /* failed in qmp_send, called from idle */
    json_int_t next_id;

    unsigned gen;               /* bumped by every close */
    int busy;                   /* callback frames on the stack */
    bool closing;               /* failing pending commands in qmp_close */
    bool dying;                 /* qmp_free called; freed when !busy */
};

static void qmp_close(struct qmp *q, const char *reason, bool notify);

/* --- request lists --- */

static void
qmp_list_push(struct qmp_list *l, struct qmp_req *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static struct qmp_req *
qmp_list_pop(struct qmp_list *l)
{
    struct qmp_req *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head)
            l->tail = NULL;
        r->next = NULL;
    }
    return r;
}

/* Removes and returns the request with this id, or NULL. */
static struct qmp_req *
qmp_list_take(struct qmp_list *l, json_int_t id)
{
    struct qmp_req *prev = NULL;
    for (struct qmp_req *r = l->head; r; prev = r, r = r->next) {
        if (r->id != id)
            continue;
        if (prev)
            prev->next = r->next;
        else
            l->head = r->next;
        if (l->tail == r)
            l->tail = prev;
        r->next = NULL;
        return r;
    }
    return NULL;
}

/* Moves all of src to the end of dst. */
static void
qmp_list_splice(struct qmp_list *dst, struct qmp_list *src)
{
    if (!src->head)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    *src = (struct qmp_list) { 0 };
}

static void
qmp_req_free(struct qmp_req *r)
{
    free(r->cmd);
    free(r->line);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

/* Runs the request's callback (its one and only) and frees it.  r must
 * already be off every list. */
static void
qmp_complete(struct qmp *q, struct qmp_req *r, json_t *ret,
             const struct qmp_error *err)
{
    if (r->cb)
        r->cb(q, ret, err, r->opaque);
    qmp_req_free(r);
}

static void
qmp_fail(struct qmp *q, struct qmp_req *r, const char *class,
         const char *desc)
{
    qmp_complete(q, r, NULL, &(struct qmp_error) { class, desc });
}

/* --- lifetime --- */

static void
qmp_destroy(struct qmp *q)
{
    /* Commands sent from the last callbacks still get theirs; the loop
     * will not run for this client again. */
    q->busy++;
    struct qmp_req *r;
    while ((r = qmp_list_pop(&q->deferred)))
        qmp_fail(q, r, r->fail_class, r->fail_desc);
    ev_idle_stop(q->loop, &q->idle);
    ev_timer_stop(q->loop, &q->timer);
    qmp_stream_free(&q->in);
    free(q->out);
    free(q->path);
    json_decref(q->version);
    free(q);
}

static void
qmp_enter(struct qmp *q)
{
    q->busy++;
}

static void
qmp_leave(struct qmp *q)
{
    if (--q->busy == 0 && q->dying)
        qmp_destroy(q);
}

/* --- timer: reply timeout and connect/greeting timeout --- */

static void
qmp_arm_timer(struct qmp *q)
{
    ev_timer_stop(q->loop, &q->timer);
    if (q->reply_timeout <= 0 || q->state == QMP_CLOSED)
        return;

    ev_tstamp deadline;
    if (q->pending.head)
        deadline = q->pending.head->deadline;
    else if (q->state != QMP_READY)
        deadline = q->connect_deadline;
    else
        return;
    ev_tstamp after = deadline - ev_now(q->loop);
    ev_timer_set(&q->timer, after > 0 ? after : 0, 0);
    ev_timer_start(q->loop, &q->timer);
}

/* A hung QEMU must not hang the agent: the late command fails with
 * "Timeout", and the connection is dropped because a late reply could
 * otherwise arrive for a command the caller has given up on. */
static void
qmp_time_out(struct qmp *q, struct qmp_req *r)
{
    unsigned gen = q->gen;
    CLEANUP_FREE char *reason =
        xasprintf("QEMU did not answer '%s' within %g s", r->cmd,
                  q->reply_timeout);
    log_warn("qmp: %s: %s", q->path, reason);
    (void) qmp_list_take(&q->pending, r->id);
    qmp_fail(q, r, "Timeout", reason);
    if (q->gen == gen)
        qmp_close(q, reason, true);
}

static void
qmp_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct qmp *q = w->data;
    ev_tstamp now = ev_now(loop);
    struct qmp_req *r = q->pending.head;

    qmp_enter(q);
    if (r && r->deadline <= now)
        qmp_time_out(q, r);
    else if (!r && q->state != QMP_READY && q->connect_deadline <= now)
        qmp_close(q, "timed out waiting for the QMP greeting", true);
    else
        qmp_arm_timer(q);
    qmp_leave(q);
}

/* --- output --- */

static void
qmp_write(struct qmp *q, const char *line)
{
    size_t n = strlen(line);
    if (q->out_len + n + 1 > q->out_cap) {
        size_t cap = q->out_cap ? q->out_cap : 4096;
        while (cap < q->out_len + n + 1)
            cap *= 2;
        q->out = xrealloc(q->out, cap);
        q->out_cap = cap;
    }
    memcpy(q->out + q->out_len, line, n);
    q->out[q->out_len + n] = '\n';
    q->out_len += n + 1;
    ev_io_start(q->loop, &q->wio);
}

/* Writes what the socket takes now; the watcher brings us back for the
 * rest.  MSG_NOSIGNAL: QEMU dying must be an EPIPE, not a SIGPIPE. */
/* Sends out[out_off, end), with fd attached to its first byte when
 * fd >= 0. */
static ssize_t
qmp_send_bytes(struct qmp *q, size_t end, int fd)
{
    return fd_send(q->fd, q->out + q->out_off, end - q->out_off, fd);
}

/* Writes what the socket takes now; the watcher brings us back for the
 * rest.  MSG_NOSIGNAL: QEMU dying must be an EPIPE, not a SIGPIPE.  A
 * descriptor goes with the first byte of its line: the bytes before it
 * are sent first, then that byte and the rest up to the next one. */
static void
qmp_flush(struct qmp *q)
{
    while (q->out_off < q->out_len) {
        size_t end = q->out_len;
        int fd = -1;
        if (q->nout_fds && q->out_fds[0].off == q->out_off)
            fd = q->out_fds[0].fd;
        if (q->nout_fds > (fd >= 0 ? 1u : 0u))
            end = q->out_fds[fd >= 0 ? 1 : 0].off;
        ssize_t n = qmp_send_bytes(q, end, fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            CLEANUP_FREE char *reason =
                xasprintf("write to QMP socket: %s", strerror(errno));
            qmp_close(q, reason, true);
            return;
        }
        if (fd >= 0) {
            /* The kernel holds its own reference once sendmsg returns. */
            close(fd);
            memmove(q->out_fds, q->out_fds + 1, --q->nout_fds * sizeof *q->out_fds);
        }
        q->out_off += (size_t) n;
    }
    q->out_off = q->out_len = 0;
    ev_io_stop(q->loop, &q->wio);
}

/* Puts a request on the wire and starts its reply clock. */
static void
qmp_transmit(struct qmp *q, struct qmp_req *r)
{
    log_debug("qmp: -> %.200s%s", r->line, r->fd >= 0 ? " (with a descriptor)" : "");
    if (r->fd >= 0 && q->nout_fds < QMP_MAX_OUT_FDS) {
        q->out_fds[q->nout_fds++] = (struct qmp_out_fd) { q->out_len, r->fd };
        r->fd = -1;
    } else if (r->fd >= 0) {
        log_warn("qmp: %s goes without its descriptor: too many waiting", r->cmd);
    }
    qmp_write(q, r->line);
    free(r->line);
    r->line = NULL;
    r->deadline = ev_now(q->loop) + q->reply_timeout;
    bool was_idle = !q->pending.head;
    qmp_list_push(&q->pending, r);
    if (was_idle)
        qmp_arm_timer(q);
}

static struct qmp_req *
qmp_req_new(struct qmp *q, const char *cmd, json_t *args, qmp_reply_cb *cb,
            void *opaque)
{
    struct qmp_req *r = xcalloc(1, sizeof *r);
    r->id = ++q->next_id;
    r->cmd = xstrdup(cmd);
    r->cb = cb;
    r->opaque = opaque;
    r->fd = -1;

    CLEANUP_JSON json_t *j = json_pack("{s:s, s:I}", "execute", cmd,
                                       "id", r->id);
    if (j && args)
        json_object_set(j, "arguments", args);
    if (j)
        r->line = json_dumps(j, JSON_COMPACT);
    return r;
}

/* --- connection teardown --- */

static void
qmp_close(struct qmp *q, const char *reason, bool notify)
{
    if (q->state == QMP_CLOSED)
        return;
    log_debug("qmp: %s: disconnected: %s", q->path, reason);

    ev_io_stop(q->loop, &q->rio);
    ev_io_stop(q->loop, &q->wio);
    ev_timer_stop(q->loop, &q->timer);
    close(q->fd);
    q->fd = -1;
    q->state = QMP_CLOSED;
    q->gen++;
    qmp_stream_free(&q->in);
    free(q->out);
    q->out = NULL;
    q->out_len = q->out_off = q->out_cap = 0;
    for (size_t i = 0; i < q->nout_fds; i++)
        close(q->out_fds[i].fd);
    q->nout_fds = 0;
    json_decref(q->version);
    q->version = NULL;

    /* Detach first: callbacks may send again (those are deferred). */
    struct qmp_list failed = q->pending;
    q->pending = (struct qmp_list) { 0 };
    qmp_list_splice(&failed, &q->queued);
    q->closing = true;
    struct qmp_req *r;
    while ((r = qmp_list_pop(&failed)))
        qmp_fail(q, r, "Disconnected", reason);
    q->closing = false;

    if (notify && !q->dying && q->cb.state)
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
    log_debug("qmp: %s: connected", q->path);
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
    qmp_transmit(q, qmp_req_new(q, "qmp_capabilities", NULL,
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
        log_warn("qmp: %s: reply matches no command: %.200s", q->path,
                 s ? s : "?");
        return;
    }
    qmp_arm_timer(q);
    log_debug("qmp: <- %s (id %lld)", r->cmd, (long long) json_integer_value(id));

    json_t *error = json_object_get(msg, "error");
    if (!error) {
        qmp_complete(q, r, json_object_get(msg, "return"), NULL);
        return;
    }
    const char *class = json_string_value(json_object_get(error, "class"));
    const char *desc = json_string_value(json_object_get(error, "desc"));
    qmp_fail(q, r, class ? class : "GenericError",
             desc ? desc : "QEMU gave no error description");
}

static void
qmp_on_event(struct qmp *q, json_t *msg)
{
    const char *name = json_string_value(json_object_get(msg, "event"));
    if (!name) {
        log_warn("qmp: %s: event without a name", q->path);
        return;
    }
    log_debug("qmp: %s: event %s", q->path, name);
    if (q->cb.event)
        q->cb.event(q, name, json_object_get(msg, "data"), q->cb.opaque);
}

static void
qmp_dispatch(struct qmp *q, json_t *msg)
{
    if (!json_is_object(msg))
        log_warn("qmp: %s: ignoring a message that is not an object", q->path);
    else if (q->state == QMP_GREETING)
        qmp_on_greeting(q, msg);
    else if (json_object_get(msg, "event"))
        qmp_on_event(q, msg);
    else if (json_object_get(msg, "return") || json_object_get(msg, "error"))
        qmp_on_reply(q, msg);
    else
        log_warn("qmp: %s: ignoring a message of unknown kind", q->path);
}

/* Hands each complete message to dispatch until the buffer runs dry or a
 * callback closed (and maybe reopened) the connection. */
static void
qmp_process(struct qmp *q)
{
    unsigned gen = q->gen;
    while (q->gen == gen) {
        json_t *msg;
        char err[256];
        enum qmp_stream_result r = qmp_stream_next(&q->in, &msg, err,
                                                   sizeof err);
        if (r == QMP_STREAM_NEED_MORE)
            return;
        if (r != QMP_STREAM_MESSAGE) {
            CLEANUP_FREE char *reason =
                xasprintf("bad framing from QEMU: %s", err);
            qmp_close(q, reason, true);
            return;
        }
        qmp_dispatch(q, msg);
        json_decref(msg);
    }
}

static void
qmp_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct qmp *q = w->data;
    char buf[QMP_READ_SIZE];

    qmp_enter(q);
    ssize_t n = recv(q->fd, buf, sizeof buf, 0);
    if (n > 0) {
        qmp_stream_feed(&q->in, buf, (size_t) n);
        qmp_process(q);
    } else if (n == 0) {
        qmp_close(q, "QEMU closed the QMP connection", true);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        CLEANUP_FREE char *reason =
            xasprintf("read from QMP socket: %s", strerror(errno));
        qmp_close(q, reason, true);
    }
    qmp_leave(q);
}

/* The socket turned writable: either the connect finished, or output can
 * go out. */
static void
qmp_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct qmp *q = w->data;

    qmp_enter(q);
    if (q->state != QMP_CONNECTING) {
        qmp_flush(q);
    } else {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(q->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            CLEANUP_FREE char *reason =
                xasprintf("connect to %s: %s", q->path, strerror(err));
            qmp_close(q, reason, true);
        } else {
            q->state = QMP_GREETING;
            ev_io_stop(loop, &q->wio);
            ev_io_start(loop, &q->rio);
        }
    }
    qmp_leave(q);
}

static void
qmp_on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct qmp *q = w->data;

    qmp_enter(q);
    /* Only this batch: commands sent from these callbacks wait a turn. */
    struct qmp_list batch = q->deferred;
    q->deferred = (struct qmp_list) { 0 };
    struct qmp_req *r;
    while ((r = qmp_list_pop(&batch)))
        qmp_fail(q, r, r->fail_class, r->fail_desc);
    if (!q->deferred.head)
        ev_idle_stop(loop, &q->idle);
    qmp_leave(q);
}

/* --- public API --- */

struct qmp *
qmp_new(struct ev_loop *loop, const char *path,
        const struct qmp_callbacks *cb, double reply_timeout)
{
    struct qmp *q = xcalloc(1, sizeof *q);
    q->loop = loop;
    q->path = xstrdup(path);
    if (cb)
        q->cb = *cb;
    q->reply_timeout = reply_timeout;
    q->fd = -1;
    qmp_stream_init(&q->in, QMP_MAX_MSG, QMP_MAX_DEPTH);
    ev_init(&q->rio, qmp_on_read);
    ev_init(&q->wio, qmp_on_write);
    ev_init(&q->timer, qmp_on_timer);
    ev_idle_init(&q->idle, qmp_on_idle);
    q->rio.data = q->wio.data = q->timer.data = q->idle.data = q;
    return q;
}

int
qmp_connect(struct qmp *q)
{
    if (q->state != QMP_CLOSED || q->closing || q->dying) {
        /* From inside qmp_close, a reconnect would race the disconnected
         * state callback still to come: reconnect from that callback. */
        errno = q->state != QMP_CLOSED ? EISCONN : EBUSY;
        return -1;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(q->path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, q->path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    bool done = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    if (!done && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }

    q->fd = fd;
    q->state = done ? QMP_GREETING : QMP_CONNECTING;
    qmp_stream_init(&q->in, QMP_MAX_MSG, QMP_MAX_DEPTH);
    ev_io_set(&q->rio, fd, EV_READ);
    ev_io_set(&q->wio, fd, EV_WRITE);
    ev_io_start(q->loop, done ? &q->rio : &q->wio);
    q->connect_deadline = ev_now(q->loop) + q->reply_timeout;
    qmp_arm_timer(q);
    log_debug("qmp: %s: connecting", q->path);
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
    struct qmp_req *r = qmp_req_new(q, cmd, args, cb, opaque);
    json_decref(args);
    r->fd = fd;

    if (fd >= 0 && q->state == QMP_READY && q->nout_fds == QMP_MAX_OUT_FDS) {
        r->fail_class = "GenericError";
        r->fail_desc = "too many descriptors waiting to be sent to QEMU";
        qmp_list_push(&q->deferred, r);
        if (!q->dying)
            ev_idle_start(q->loop, &q->idle);
    } else if (!r->line || q->state == QMP_CLOSED) {
        /* Never call back from inside qmp_send: the caller may not have
         * finished setting up what the callback uses. */
        r->fail_class = r->line ? "Disconnected" : "GenericError";
        r->fail_desc = r->line ? "not connected to QEMU"
                               : "command cannot be encoded as JSON";
        qmp_list_push(&q->deferred, r);
        if (!q->dying)
            ev_idle_start(q->loop, &q->idle);
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
    if (q->dying)
        return;
    qmp_enter(q);
    qmp_close(q, reason ? reason : "disconnected by the agent", true);
    qmp_leave(q);
}

void
qmp_free(struct qmp *q)
{
    if (!q || q->dying)
        return;
    q->dying = true;
    qmp_enter(q);
    qmp_close(q, "QMP client freed", false);
    qmp_leave(q);
}
