/* Asynchronous client for QEMU's guest agent (qemu-ga): the host side of
 * its virtio-serial channel, a Unix socket QEMU serves.
 *
 * The channel is not a session.  The socket stays up across guest reboots
 * and qemu-ga restarts, and QEMU holds what we write until the guest opens
 * the port, so the channel can carry replies to commands nobody waits for
 * any more (a previous timeout, an agent before a reboot).  Hence, before
 * every command: 0xFF (qemu-ga drops whatever partial input it holds),
 * then guest-sync-delimited with a fresh random id; every message up to
 * the reply carrying that id is stale and dropped.  qemu-ga puts 0xFF in
 * front of that reply, and 0xFF never occurs in JSON text, so we drop any
 * partial message buffered when one arrives.  Only then does the command
 * go out, one at a time, so the next reply is its reply (qemu-ga answers
 * in order and needs no ids).
 *
 * A command that times out leaves the connection up: the next sync skips
 * its late reply.  EOF or an error closes the connection, fails what is
 * pending with "Disconnected" and retries the connect every
 * retry_interval, as it does while the socket is missing or refuses.
 *
 * Re-entrancy as in client.c: entry points that run callbacks hold
 * g->busy; qga_free under busy marks the client dying and the outermost
 * frame frees it; loops that run callbacks check g->gen afterwards.
 */
#include "qmp/qmp.h"

#include <errno.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

/* qemu-ga's replies are small (guest-get-fsinfo is the largest we may
 * ask for); the guest is not trusted, so the cap is tight. */
#define QGA_MAX_MSG   (1024 * 1024)
#define QGA_MAX_DEPTH 64
#define QGA_READ_SIZE 4096
#define QGA_DELIM     '\xff'

enum qga_conn {
    QGA_CLOSED,
    QGA_CONNECTING,
    QGA_OPEN,
};

/* Where the command at the head of the queue is. */
enum qga_phase {
    QGA_IDLE,       /* nothing on the wire */
    QGA_SYNCING,    /* guest-sync-delimited sent, waiting for our id */
    QGA_WAITING,    /* the command sent, waiting for its reply */
};

struct qga_req {
    struct qga_req *next;
    char *cmd;
    char *line;                 /* encoded command, NULL if it cannot be */
    qga_reply_cb *cb;
    void *opaque;
    double timeout;
    ev_tstamp deadline;
    const char *fail_class;     /* for deferred failures (static strings) */
    const char *fail_desc;
};

struct qga_list {
    struct qga_req *head, *tail;
};

struct qga {
    struct ev_loop *loop;
    char *path;
    qga_state_cb *state_cb;
    void *opaque;
    double retry_interval;

    enum qga_conn conn;
    bool started;               /* qga_start called: keep reconnecting */
    int fd;
    ev_io rio, wio;
    ev_timer timer;             /* the earliest command deadline */
    ev_timer retry;             /* the next connect attempt */
    ev_idle idle;               /* deferred failures */
    struct qmp_stream in;
    char *out;
    size_t out_len, out_off, out_cap;

    struct qga_list queue;      /* head is the one on the wire, if any */
    struct qga_list deferred;
    enum qga_phase phase;
    json_int_t sync_id;
    unsigned long long syncs;   /* guest-sync-delimited sent, for tests */

    unsigned gen;
    int busy;
    bool dying;
};

static void qga_close(struct qga *g, const char *reason);
static void qga_kick(struct qga *g);

/* --- request lists --- */

static void
qga_list_push(struct qga_list *l, struct qga_req *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static struct qga_req *
qga_list_pop(struct qga_list *l)
{
    struct qga_req *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head)
            l->tail = NULL;
        r->next = NULL;
    }
    return r;
}

static void
qga_list_remove(struct qga_list *l, struct qga_req *r)
{
    struct qga_req *prev = NULL;
    for (struct qga_req *p = l->head; p; prev = p, p = p->next) {
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

/* Runs the request's one callback and frees it; r is off every list. */
static void
qga_complete(struct qga *g, struct qga_req *r, json_t *ret,
             const struct qmp_error *err)
{
    if (r->cb)
        r->cb(g, ret, err, r->opaque);
    free(r->cmd);
    free(r->line);
    free(r);
}

static void
qga_fail(struct qga *g, struct qga_req *r, const char *class,
         const char *desc)
{
    qga_complete(g, r, NULL, &(struct qmp_error) { class, desc });
}

/* --- lifetime --- */

static void
qga_destroy(struct qga *g)
{
    g->busy++;
    struct qga_req *r;
    while ((r = qga_list_pop(&g->deferred)))
        qga_fail(g, r, r->fail_class, r->fail_desc);
    ev_idle_stop(g->loop, &g->idle);
    ev_timer_stop(g->loop, &g->timer);
    ev_timer_stop(g->loop, &g->retry);
    qmp_stream_free(&g->in);
    free(g->out);
    free(g->path);
    free(g);
}

static void
qga_enter(struct qga *g)
{
    g->busy++;
}

static void
qga_leave(struct qga *g)
{
    if (--g->busy == 0 && g->dying)
        qga_destroy(g);
}

/* --- ids --- */

/* A positive id below 2^53 (exact in any JSON reader), different from
 * the last one.  Randomness is what makes a stale sync reply (from before
 * a restart of ours, or a guest reboot) unable to pass for a fresh one. */
static json_int_t
qga_random_id(struct qga *g)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t) sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (uint64_t) ts.tv_nsec * 2654435761u ^ (uint64_t) ts.tv_sec ^
            (uint64_t) (uintptr_t) g;
    }
    v &= (UINT64_C(1) << 53) - 1;
    if (v == 0 || (json_int_t) v == g->sync_id)
        v = (v + 1) & ((UINT64_C(1) << 53) - 1);
    return (json_int_t) (v ? v : 1);
}

/* --- timers --- */

static void
qga_arm_timer(struct qga *g)
{
    ev_timer_stop(g->loop, &g->timer);
    if (!g->queue.head)
        return;
    ev_tstamp deadline = g->queue.head->deadline;
    for (struct qga_req *r = g->queue.head; r; r = r->next)
        if (r->deadline < deadline)
            deadline = r->deadline;
    ev_tstamp after = deadline - ev_now(g->loop);
    ev_timer_set(&g->timer, after > 0 ? after : 0, 0);
    ev_timer_start(g->loop, &g->timer);
}

/* Output not yet handed to the socket is dropped with the command that
 * timed out: it must not reach a guest agent that starts later.  A line
 * cut in the middle is harmless, the next sync's 0xFF resets qemu-ga. */
static void
qga_drop_unsent(struct qga *g)
{
    g->out_off = g->out_len = 0;
    if (g->conn == QGA_OPEN)
        ev_io_stop(g->loop, &g->wio);
}

static void
qga_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct qga *g = w->data;
    ev_tstamp now = ev_now(loop);
    unsigned gen = g->gen;

    qga_enter(g);
    /* Fail every expired command; each callback may send or free. */
    for (;;) {
        struct qga_req *r = g->queue.head;
        while (r && r->deadline > now)
            r = r->next;
        if (!r || g->dying)
            break;
        const char *why = "";
        if (r == g->queue.head && g->phase == QGA_SYNCING)
            why = " (no answer to guest-sync)";
        else if (r != g->queue.head || g->phase == QGA_IDLE)
            why = " (busy with earlier commands)";
        if (r == g->queue.head && g->phase != QGA_IDLE) {
            g->phase = QGA_IDLE;
            qga_drop_unsent(g);
        }
        qga_list_remove(&g->queue, r);
        CLEANUP_FREE char *desc =
            xasprintf("the guest agent did not answer '%s' within %g s%s",
                      r->cmd, r->timeout, why);
        log_warn("qga: %s: %s", g->path, desc);
        qga_fail(g, r, "Timeout", desc);
        if (g->gen != gen)
            break;
    }
    if (!g->dying && g->gen == gen) {
        qga_kick(g);
        qga_arm_timer(g);
    }
    qga_leave(g);
}

static void
qga_try_connect(struct qga *g);

static void
qga_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct qga *g = w->data;
    qga_enter(g);
    qga_try_connect(g);
    qga_leave(g);
}

static void
qga_schedule_retry(struct qga *g)
{
    if (!g->started || g->dying)
        return;
    ev_timer_stop(g->loop, &g->retry);
    ev_timer_set(&g->retry, g->retry_interval, 0);
    ev_timer_start(g->loop, &g->retry);
}

/* --- output --- */

static void
qga_flush(struct qga *g)
{
    while (g->out_off < g->out_len) {
        ssize_t n = send(g->fd, g->out + g->out_off, g->out_len - g->out_off,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            CLEANUP_FREE char *reason =
                xasprintf("write to %s: %s", g->path, strerror(errno));
            qga_close(g, reason);
            return;
        }
        g->out_off += (size_t) n;
    }
    g->out_off = g->out_len = 0;
    ev_io_stop(g->loop, &g->wio);
}

/* Queues a line; the write watcher sends it (errors surface there, never
 * inside the caller's frame). */
static void
qga_write_line(struct qga *g, const char *line)
{
    log_debug("qga: -> %.200s", line);
    size_t n = strlen(line);
    if (g->out_len + n + 1 > g->out_cap) {
        size_t cap = g->out_cap ? g->out_cap : 1024;
        while (cap < g->out_len + n + 1)
            cap *= 2;
        g->out = xrealloc(g->out, cap);
        g->out_cap = cap;
    }
    memcpy(g->out + g->out_len, line, n);
    g->out[g->out_len + n] = '\n';
    g->out_len += n + 1;
    ev_io_start(g->loop, &g->wio);
}

/* Starts the head command's turn: a sync first. */
static void
qga_kick(struct qga *g)
{
    if (g->conn != QGA_OPEN || g->phase != QGA_IDLE || !g->queue.head)
        return;
    g->sync_id = qga_random_id(g);
    g->phase = QGA_SYNCING;
    g->syncs++;
    CLEANUP_FREE char *line = xasprintf(
        "%c{\"execute\": \"guest-sync-delimited\", \"arguments\": "
        "{\"id\": %" JSON_INTEGER_FORMAT "}}", QGA_DELIM, g->sync_id);
    qga_write_line(g, line);
}

/* --- connection --- */

static void
qga_close(struct qga *g, const char *reason)
{
    if (g->conn == QGA_CLOSED)
        return;
    bool was_open = g->conn == QGA_OPEN;
    log_debug("qga: %s: disconnected: %s", g->path, reason);
    ev_io_stop(g->loop, &g->rio);
    ev_io_stop(g->loop, &g->wio);
    close(g->fd);
    g->fd = -1;
    g->conn = QGA_CLOSED;
    g->gen++;
    g->phase = QGA_IDLE;
    qmp_stream_free(&g->in);
    qmp_stream_init(&g->in, QGA_MAX_MSG, QGA_MAX_DEPTH);
    g->out_len = g->out_off = 0;

    struct qga_list failed = g->queue;
    g->queue = (struct qga_list) { 0 };
    ev_timer_stop(g->loop, &g->timer);
    struct qga_req *r;
    while ((r = qga_list_pop(&failed)))
        qga_fail(g, r, "Disconnected", reason);

    if (was_open && !g->dying && g->state_cb)
        g->state_cb(g, false, reason, g->opaque);
    if (g->conn == QGA_CLOSED)
        qga_schedule_retry(g);
}

static void
qga_opened(struct qga *g)
{
    g->conn = QGA_OPEN;
    ev_io_start(g->loop, &g->rio);
    log_debug("qga: %s: connected", g->path);
    unsigned gen = g->gen;
    if (g->state_cb)
        g->state_cb(g, true, NULL, g->opaque);
    if (g->gen == gen && !g->dying) {
        qga_kick(g);
        qga_arm_timer(g);
    }
}

static void
qga_try_connect(struct qga *g)
{
    if (g->conn != QGA_CLOSED || g->dying)
        return;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(g->path) >= sizeof sa.sun_path) {
        log_error("qga: %s: path too long for a Unix socket", g->path);
        return;
    }
    strcpy(sa.sun_path, g->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn("qga: socket: %s", strerror(errno));
        qga_schedule_retry(g);
        return;
    }
    bool done = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    if (!done && errno != EINPROGRESS && errno != EAGAIN) {
        /* Missing or refusing (QEMU not up yet): quietly try again. */
        log_debug("qga: connect to %s: %s", g->path, strerror(errno));
        close(fd);
        qga_schedule_retry(g);
        return;
    }
    /* Even a connect that finished at once completes from the write
     * watcher, so the state callback never runs inside qga_start. */
    (void) done;
    g->fd = fd;
    ev_io_set(&g->rio, fd, EV_READ);
    ev_io_set(&g->wio, fd, EV_WRITE);
    g->conn = QGA_CONNECTING;
    ev_io_start(g->loop, &g->wio);
}

/* --- input --- */

static void
qga_dispatch(struct qga *g, json_t *msg)
{
    json_t *ret = json_object_get(msg, "return");
    json_t *error = json_object_get(msg, "error");
    if (!json_is_object(msg) || (!ret && !error)) {
        log_warn("qga: %s: ignoring a message that is not a reply", g->path);
        return;
    }
    if (g->phase == QGA_SYNCING) {
        if (json_is_integer(ret) && json_integer_value(ret) == g->sync_id) {
            g->phase = QGA_WAITING;
            struct qga_req *r = g->queue.head;
            qga_write_line(g, r->line);
        } else {
            CLEANUP_FREE char *s = json_dumps(msg, JSON_COMPACT);
            log_debug("qga: %s: dropping a stale reply: %.200s", g->path,
                      s ? s : "?");
        }
        return;
    }
    if (g->phase != QGA_WAITING) {
        CLEANUP_FREE char *s = json_dumps(msg, JSON_COMPACT);
        log_debug("qga: %s: dropping a reply nobody waits for: %.200s",
                  g->path, s ? s : "?");
        return;
    }

    struct qga_req *r = qga_list_pop(&g->queue);
    g->phase = QGA_IDLE;
    unsigned gen = g->gen;
    if (!error) {
        qga_complete(g, r, ret, NULL);
    } else {
        const char *class = json_string_value(json_object_get(error, "class"));
        const char *desc = json_string_value(json_object_get(error, "desc"));
        qga_fail(g, r, class ? class : "GenericError",
                 desc ? desc : "the guest agent gave no error description");
    }
    if (g->gen == gen && !g->dying) {
        qga_kick(g);
        qga_arm_timer(g);
    }
}

static void
qga_process(struct qga *g)
{
    unsigned gen = g->gen;
    while (g->gen == gen && !g->dying) {
        json_t *msg;
        char err[256];
        enum qmp_stream_result r = qmp_stream_next(&g->in, &msg, err,
                                                   sizeof err);
        if (r == QMP_STREAM_NEED_MORE)
            return;
        if (r != QMP_STREAM_MESSAGE) {
            /* Garbage from the guest is the guest's problem; the next
             * sync gets past it. */
            log_warn("qga: %s: dropping bad input: %s", g->path, err);
            continue;
        }
        qga_dispatch(g, msg);
        json_decref(msg);
    }
}

/* Feeds bytes, starting over after every 0xFF. */
static void
qga_feed(struct qga *g, const char *buf, size_t n)
{
    unsigned gen = g->gen;
    while (n > 0 && g->gen == gen && !g->dying) {
        const char *delim = memchr(buf, QGA_DELIM, n);
        size_t part = delim ? (size_t) (delim - buf) : n;
        qmp_stream_feed(&g->in, buf, part);
        qga_process(g);
        if (!delim || g->gen != gen || g->dying)
            return;
        qmp_stream_free(&g->in);
        qmp_stream_init(&g->in, QGA_MAX_MSG, QGA_MAX_DEPTH);
        buf += part + 1;
        n -= part + 1;
    }
}

static void
qga_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct qga *g = w->data;
    char buf[QGA_READ_SIZE];

    qga_enter(g);
    ssize_t n = recv(g->fd, buf, sizeof buf, 0);
    if (n > 0) {
        qga_feed(g, buf, (size_t) n);
    } else if (n == 0) {
        qga_close(g, "the guest agent's socket was closed");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        CLEANUP_FREE char *reason =
            xasprintf("read from %s: %s", g->path, strerror(errno));
        qga_close(g, reason);
    }
    qga_leave(g);
}

static void
qga_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct qga *g = w->data;

    qga_enter(g);
    if (g->conn == QGA_OPEN) {
        qga_flush(g);
    } else {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(g->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            /* Commands queued meanwhile fail now; a retry follows. */
            CLEANUP_FREE char *reason =
                xasprintf("connect to %s: %s", g->path, strerror(err));
            qga_close(g, reason);
        } else {
            ev_io_stop(loop, &g->wio);
            qga_opened(g);
        }
    }
    qga_leave(g);
}

static void
qga_on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct qga *g = w->data;

    qga_enter(g);
    struct qga_list batch = g->deferred;
    g->deferred = (struct qga_list) { 0 };
    struct qga_req *r;
    while ((r = qga_list_pop(&batch)))
        qga_fail(g, r, r->fail_class, r->fail_desc);
    if (!g->deferred.head)
        ev_idle_stop(loop, &g->idle);
    qga_leave(g);
}

/* --- public API --- */

struct qga *
qga_new(struct ev_loop *loop, const char *path, qga_state_cb *cb,
        void *opaque, double retry_interval)
{
    struct qga *g = xcalloc(1, sizeof *g);
    g->loop = loop;
    g->path = xstrdup(path);
    g->state_cb = cb;
    g->opaque = opaque;
    g->retry_interval = retry_interval > 0 ? retry_interval : 1.0;
    g->fd = -1;
    qmp_stream_init(&g->in, QGA_MAX_MSG, QGA_MAX_DEPTH);
    ev_init(&g->rio, qga_on_read);
    ev_init(&g->wio, qga_on_write);
    ev_init(&g->timer, qga_on_timer);
    ev_init(&g->retry, qga_on_retry);
    ev_idle_init(&g->idle, qga_on_idle);
    g->rio.data = g->wio.data = g->timer.data = g->retry.data =
        g->idle.data = g;
    return g;
}

void
qga_start(struct qga *g)
{
    if (g->started || g->dying)
        return;
    g->started = true;
    qga_enter(g);
    qga_try_connect(g);
    qga_leave(g);
}

enum qga_state
qga_state(const struct qga *g)
{
    if (!g)
        return QGA_STATE_NONE;
    return g->conn == QGA_OPEN ? QGA_STATE_CONNECTED : QGA_STATE_DISCONNECTED;
}

const char *
qga_state_name(enum qga_state s)
{
    switch (s) {
    case QGA_STATE_CONNECTED: return "connected";
    case QGA_STATE_DISCONNECTED: return "disconnected";
    case QGA_STATE_NONE: break;
    }
    return "none";
}

unsigned long long
qga_syncs(const struct qga *g)
{
    return g->syncs;
}

void
qga_exec(struct qga *g, const char *cmd, json_t *args, double timeout,
         qga_reply_cb *cb, void *opaque)
{
    struct qga_req *r = xcalloc(1, sizeof *r);
    r->cmd = xstrdup(cmd);
    r->cb = cb;
    r->opaque = opaque;
    r->timeout = timeout > 0 ? timeout : 10.0;
    r->deadline = ev_now(g->loop) + r->timeout;
    json_t *j = json_pack("{s:s}", "execute", cmd);
    if (j && args)
        json_object_set(j, "arguments", args);
    if (j)
        r->line = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    json_decref(args);

    if (!r->line || g->conn == QGA_CLOSED || g->dying) {
        /* Never call back from inside qga_exec. */
        r->fail_class = r->line ? "Disconnected" : "GenericError";
        r->fail_desc = r->line ? "not connected to the guest agent"
                               : "command cannot be encoded as JSON";
        qga_list_push(&g->deferred, r);
        if (!g->dying)
            ev_idle_start(g->loop, &g->idle);
        return;
    }
    qga_list_push(&g->queue, r);
    qga_enter(g);
    qga_kick(g);
    if (g->conn != QGA_CLOSED)
        qga_arm_timer(g);
    qga_leave(g);
}

void
qga_free(struct qga *g)
{
    if (!g || g->dying)
        return;
    qga_enter(g);
    g->dying = true;
    ev_timer_stop(g->loop, &g->retry);
    qga_close(g, "guest agent client freed");
    qga_leave(g);
}
