/* What the QMP client (client.c) and the guest agent client (qga.c)
 * share: one non-blocking Unix stream socket on libev, its output buffer
 * (with descriptors riding on the first byte of a line), its input framed
 * by stream.c, the requests that fail from the loop instead of inside the
 * caller's frame, and the busy/dying guard that lets callbacks free the
 * client.  What a message means, when to close and whether to reconnect
 * is each client's own: the connection only reports through its ops.
 *
 * Re-entrancy: every watcher callback holds c->busy; a client freed under
 * it sets c->dying and the outermost frame frees it.  Loops that run
 * callbacks check c->gen afterwards, so they stop if the connection they
 * were serving went away under them.
 */
#include "qmp/qmp.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"

/* --- requests and their lists --- */

struct qmp_req *
qmp_req_new(const char *cmd, json_t *args, json_int_t id)
{
    struct qmp_req *r = xcalloc(1, sizeof *r);
    r->id = id;
    r->cmd = xstrdup(cmd);
    r->fd = -1;

    CLEANUP_JSON json_t *j = json_pack("{s:s}", "execute", cmd);
    if (j && id)
        json_object_set_new(j, "id", json_integer(id));
    if (j && args)
        json_object_set(j, "arguments", args);
    if (j)
        r->line = json_dumps(j, JSON_COMPACT);
    return r;
}

void
qmp_req_free(struct qmp_req *r)
{
    free(r->cmd);
    free(r->line);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

void
qmp_list_push(struct qmp_list *l, struct qmp_req *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

struct qmp_req *
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

void
qmp_list_remove(struct qmp_list *l, struct qmp_req *r)
{
    struct qmp_req *prev = NULL;
    for (struct qmp_req *p = l->head; p; prev = p, p = p->next) {
        if (p != r)
            continue;
        if (prev)
            prev->next = p->next;
        else
            l->head = p->next;
        if (l->tail == p)
            l->tail = prev;
        p->next = NULL;
        return;
    }
}

struct qmp_req *
qmp_list_take(struct qmp_list *l, json_int_t id)
{
    for (struct qmp_req *r = l->head; r; r = r->next) {
        if (r->id == id) {
            qmp_list_remove(l, r);
            return r;
        }
    }
    return NULL;
}

void
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

void
qmp_conn_complete(struct qmp_conn *c, struct qmp_req *r, json_t *ret,
                  const struct qmp_error *err)
{
    c->ops->complete(c->opaque, r, ret, err);
    qmp_req_free(r);
}

void
qmp_conn_fail(struct qmp_conn *c, struct qmp_req *r, const char *class,
              const char *desc)
{
    qmp_conn_complete(c, r, NULL, &(struct qmp_error) { class, desc });
}

/* --- lifetime --- */

static void
qmp_conn_destroy(struct qmp_conn *c)
{
    /* Commands sent from the last callbacks still get theirs; the loop
     * will not run for this client again. */
    c->busy++;
    struct qmp_req *r;
    while ((r = qmp_list_pop(&c->deferred)))
        qmp_conn_fail(c, r, r->fail_class, r->fail_desc);
    ev_idle_stop(c->loop, &c->idle);
    ev_timer_stop(c->loop, &c->timer);
    qmp_stream_free(&c->in);
    free(c->out);
    free(c->path);
    c->ops->destroy(c->opaque);
}

void
qmp_conn_enter(struct qmp_conn *c)
{
    c->busy++;
}

void
qmp_conn_leave(struct qmp_conn *c)
{
    if (--c->busy == 0 && c->dying)
        qmp_conn_destroy(c);
}

void
qmp_conn_defer(struct qmp_conn *c, struct qmp_req *r, const char *class,
               const char *desc)
{
    r->fail_class = class;
    r->fail_desc = desc;
    qmp_list_push(&c->deferred, r);
    if (!c->dying)
        ev_idle_start(c->loop, &c->idle);
}

static void
qmp_conn_on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct qmp_conn *c = w->data;

    qmp_conn_enter(c);
    /* Only this batch: commands sent from these callbacks wait a turn. */
    struct qmp_list batch = c->deferred;
    c->deferred = (struct qmp_list) { 0 };
    struct qmp_req *r;
    while ((r = qmp_list_pop(&batch)))
        qmp_conn_fail(c, r, r->fail_class, r->fail_desc);
    if (!c->deferred.head)
        ev_idle_stop(loop, &c->idle);
    qmp_conn_leave(c);
}

/* --- the deadline --- */

void
qmp_conn_arm(struct qmp_conn *c, ev_tstamp deadline)
{
    ev_timer_stop(c->loop, &c->timer);
    ev_tstamp after = deadline - ev_now(c->loop);
    ev_timer_set(&c->timer, after > 0 ? after : 0, 0);
    ev_timer_start(c->loop, &c->timer);
}

void
qmp_conn_disarm(struct qmp_conn *c)
{
    ev_timer_stop(c->loop, &c->timer);
}

static void
qmp_conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct qmp_conn *c = w->data;

    qmp_conn_enter(c);
    c->ops->timer(c->opaque);
    qmp_conn_leave(c);
}

/* --- output --- */

void
qmp_conn_write(struct qmp_conn *c, const char *line, int *fd)
{
    if (*fd >= 0 && c->nout_fds < QMP_MAX_OUT_FDS) {
        c->out_fds[c->nout_fds++] = (struct qmp_out_fd) { c->out_len, *fd };
        *fd = -1;
    }
    size_t n = strlen(line);
    if (c->out_len + n + 1 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n + 1)
            cap *= 2;
        c->out = xrealloc(c->out, cap);
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, line, n);
    c->out[c->out_len + n] = '\n';
    c->out_len += n + 1;
    ev_io_start(c->loop, &c->wio);
}

static void
qmp_conn_drop_fds(struct qmp_conn *c)
{
    for (size_t i = 0; i < c->nout_fds; i++)
        close(c->out_fds[i].fd);
    c->nout_fds = 0;
}

void
qmp_conn_drop_output(struct qmp_conn *c)
{
    c->out_off = c->out_len = 0;
    qmp_conn_drop_fds(c);
    if (c->state == QMP_CONN_OPEN)
        ev_io_stop(c->loop, &c->wio);
}

/* Writes what the socket takes now; the watcher brings us back for the
 * rest.  MSG_NOSIGNAL (in fd_send): the peer dying must be an EPIPE, not
 * a SIGPIPE.  A descriptor goes with the first byte of its line: the
 * bytes before it are sent first, then that byte and the rest up to the
 * next one. */
static void
qmp_conn_flush(struct qmp_conn *c)
{
    while (c->out_off < c->out_len) {
        size_t end = c->out_len;
        int fd = -1;
        if (c->nout_fds && c->out_fds[0].off == c->out_off)
            fd = c->out_fds[0].fd;
        if (c->nout_fds > (fd >= 0 ? 1u : 0u))
            end = c->out_fds[fd >= 0 ? 1 : 0].off;
        ssize_t n = fd_send(c->fd, c->out + c->out_off, end - c->out_off, fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            CLEANUP_FREE char *reason =
                xasprintf("write to %s: %s", c->name, strerror(errno));
            c->ops->failed(c->opaque, reason);
            return;
        }
        if (fd >= 0) {
            /* The kernel holds its own reference once sendmsg returns. */
            close(fd);
            memmove(c->out_fds, c->out_fds + 1, --c->nout_fds * sizeof *c->out_fds);
        }
        c->out_off += (size_t) n;
    }
    c->out_off = c->out_len = 0;
    ev_io_stop(c->loop, &c->wio);
}

/* --- input --- */

void
qmp_conn_reset_input(struct qmp_conn *c)
{
    qmp_stream_free(&c->in);
}

void
qmp_conn_feed(struct qmp_conn *c, const char *buf, size_t n)
{
    unsigned gen = c->gen;
    qmp_stream_feed(&c->in, buf, n);
    while (c->gen == gen && !c->dying) {
        json_t *msg;
        char err[256];
        enum qmp_stream_result r = qmp_stream_next(&c->in, &msg, err,
                                                   sizeof err);
        if (r == QMP_STREAM_NEED_MORE)
            return;
        if (r != QMP_STREAM_MESSAGE) {
            c->ops->bad_input(c->opaque, err);
            continue;
        }
        c->ops->message(c->opaque, msg);
        json_decref(msg);
    }
}

static void
qmp_conn_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct qmp_conn *c = w->data;
    char buf[QMP_CONN_READ_MAX];
    size_t size = c->ops->read_size < sizeof buf ? c->ops->read_size : sizeof buf;

    qmp_conn_enter(c);
    ssize_t n = recv(c->fd, buf, size, 0);
    if (n > 0 && c->ops->input) {
        c->ops->input(c->opaque, buf, (size_t) n);
    } else if (n > 0) {
        qmp_conn_feed(c, buf, (size_t) n);
    } else if (n == 0) {
        c->ops->failed(c->opaque, c->ops->eof_reason);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        CLEANUP_FREE char *reason =
            xasprintf("read from %s: %s", c->name, strerror(errno));
        c->ops->failed(c->opaque, reason);
    }
    qmp_conn_leave(c);
}

/* --- the socket --- */

static void
qmp_conn_opened(struct qmp_conn *c)
{
    c->state = QMP_CONN_OPEN;
    ev_io_stop(c->loop, &c->wio);
    ev_io_start(c->loop, &c->rio);
}

/* The socket turned writable: either the connect finished, or output can
 * go out. */
static void
qmp_conn_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct qmp_conn *c = w->data;

    qmp_conn_enter(c);
    if (c->state == QMP_CONN_OPEN) {
        qmp_conn_flush(c);
    } else {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            CLEANUP_FREE char *reason =
                xasprintf("connect to %s: %s", c->path, strerror(err));
            c->ops->failed(c->opaque, reason);
        } else {
            qmp_conn_opened(c);
            c->ops->opened(c->opaque);
        }
    }
    qmp_conn_leave(c);
}

void
qmp_conn_init(struct qmp_conn *c, struct ev_loop *loop, const char *path,
              const struct qmp_conn_ops *ops, void *opaque)
{
    *c = (struct qmp_conn) {
        .loop = loop, .path = xstrdup(path), .ops = ops, .opaque = opaque,
        .fd = -1,
    };
    c->name = ops->name ? ops->name : c->path;
    qmp_stream_init(&c->in, ops->max_msg, ops->max_depth);
    ev_init(&c->rio, qmp_conn_on_read);
    ev_init(&c->wio, qmp_conn_on_write);
    ev_idle_init(&c->idle, qmp_conn_on_idle);
    ev_init(&c->timer, qmp_conn_on_timer);
    c->rio.data = c->wio.data = c->idle.data = c->timer.data = c;
}

int
qmp_conn_connect(struct qmp_conn *c)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(c->path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, c->path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    bool done = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    if (!done && errno != EINPROGRESS &&
        !(errno == EAGAIN && c->ops->connect_in_watcher)) {
        int e = errno;
        close(fd);
        errno = e;
        return -2;
    }

    c->fd = fd;
    ev_io_set(&c->rio, fd, EV_READ);
    ev_io_set(&c->wio, fd, EV_WRITE);
    if (done && !c->ops->connect_in_watcher) {
        qmp_conn_opened(c);
    } else {
        c->state = QMP_CONN_CONNECTING;
        ev_io_start(c->loop, &c->wio);
    }
    return 0;
}

bool
qmp_conn_close(struct qmp_conn *c)
{
    if (c->state == QMP_CONN_CLOSED)
        return false;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    c->state = QMP_CONN_CLOSED;
    c->gen++;
    qmp_conn_reset_input(c);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
    qmp_conn_drop_fds(c);
    return true;
}
