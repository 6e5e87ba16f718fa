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
 * The socket, its buffers and the deferred failures are conn.c's; this
 * file is the sync protocol, one command at a time and the reconnects.
 *
 * Re-entrancy as in client.c: entry points that run callbacks hold
 * g->conn.busy; qga_free under busy marks the client dying and the
 * outermost frame frees it; loops that run callbacks check g->conn.gen
 * afterwards.
 */
#include "qmp/qmp.h"

#include <errno.h>
#include <sys/random.h>
#include <time.h>

#include "common/common.h"

/* qemu-ga's replies are small (guest-get-fsinfo is the largest we may
 * ask for); the guest is not trusted, so the cap is tight. */
#define QGA_MAX_MSG   (1024 * 1024)
#define QGA_MAX_DEPTH 64
#define QGA_READ_SIZE 4096
#define QGA_DELIM     '\xff'

/* Where the command at the head of the queue is. */
enum qga_phase {
    QGA_IDLE,       /* nothing on the wire */
    QGA_SYNCING,    /* guest-sync-delimited sent, waiting for our id */
    QGA_WAITING,    /* the command sent, waiting for its reply */
};

/* Requests (conn.c's struct qmp_req) use cmd, line, cb.qga, opaque,
 * timeout and deadline. */
struct qga {
    struct ev_loop *loop;
    qga_state_cb *state_cb;
    void *opaque;
    double retry_interval;

    struct qmp_conn conn;       /* path, socket, buffers, the timer (the
                                   earliest command deadline), deferred,
                                   busy/dying */
    bool started;               /* qga_start called: keep reconnecting */
    ev_timer retry;             /* the next connect attempt */

    struct qmp_list queue;      /* head is the one on the wire, if any */
    enum qga_phase phase;
    json_int_t sync_id;
    unsigned long long syncs;   /* guest-sync-delimited sent, for tests */
};

static void qga_close(struct qga *g, const char *reason);
static void qga_kick(struct qga *g);

/* conn.c's ops->complete: the request's one and only callback. */
static void
qga_on_complete(void *opaque, struct qmp_req *r, json_t *ret,
                const struct qmp_error *err)
{
    if (r->cb.qga)
        r->cb.qga(opaque, ret, err, r->opaque);
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
    qmp_conn_disarm(&g->conn);
    if (!g->queue.head)
        return;
    ev_tstamp deadline = g->queue.head->deadline;
    for (struct qmp_req *r = g->queue.head; r; r = r->next)
        if (r->deadline < deadline)
            deadline = r->deadline;
    qmp_conn_arm(&g->conn, deadline);
}

/* Output not yet handed to the socket is dropped with the command that
 * timed out: it must not reach a guest agent that starts later.  A line
 * cut in the middle is harmless, the next sync's 0xFF resets qemu-ga. */
static void
qga_drop_unsent(struct qga *g)
{
    qmp_conn_drop_output(&g->conn);
}

static void
qga_on_timer(void *opaque)
{
    struct qga *g = opaque;
    ev_tstamp now = ev_now(g->loop);
    unsigned gen = g->conn.gen;

    /* Fail every expired command; each callback may send or free. */
    for (;;) {
        struct qmp_req *r = g->queue.head;
        while (r && r->deadline > now)
            r = r->next;
        if (!r || g->conn.dying)
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
        qmp_list_remove(&g->queue, r);
        CLEANUP_FREE char *desc =
            xasprintf("the guest agent did not answer '%s' within %g s%s",
                      r->cmd, r->timeout, why);
        log_warn("qga: %s: %s", g->conn.path, desc);
        qmp_conn_fail(&g->conn, r, "Timeout", desc);
        if (g->conn.gen != gen)
            break;
    }
    if (!g->conn.dying && g->conn.gen == gen) {
        qga_kick(g);
        qga_arm_timer(g);
    }
}

static void
qga_try_connect(struct qga *g);

static void
qga_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct qga *g = w->data;
    qmp_conn_enter(&g->conn);
    qga_try_connect(g);
    qmp_conn_leave(&g->conn);
}

static void
qga_schedule_retry(struct qga *g)
{
    if (!g->started || g->conn.dying)
        return;
    ev_timer_stop(g->loop, &g->retry);
    ev_timer_set(&g->retry, g->retry_interval, 0);
    ev_timer_start(g->loop, &g->retry);
}

/* --- output --- */

/* Queues a line; the write watcher sends it (errors surface there, never
 * inside the caller's frame). */
static void
qga_write_line(struct qga *g, const char *line)
{
    log_debug("qga: -> %.200s", line);
    int no_fd = -1;
    qmp_conn_write(&g->conn, line, &no_fd);
}

/* Starts the head command's turn: a sync first. */
static void
qga_kick(struct qga *g)
{
    if (g->conn.state != QMP_CONN_OPEN || g->phase != QGA_IDLE || !g->queue.head)
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
    bool was_open = g->conn.state == QMP_CONN_OPEN;
    if (!qmp_conn_close(&g->conn))
        return;
    log_debug("qga: %s: disconnected: %s", g->conn.path, reason);
    g->phase = QGA_IDLE;

    struct qmp_list failed = g->queue;
    g->queue = (struct qmp_list) { 0 };
    struct qmp_req *r;
    while ((r = qmp_list_pop(&failed)))
        qmp_conn_fail(&g->conn, r, "Disconnected", reason);

    if (was_open && !g->conn.dying && g->state_cb)
        g->state_cb(g, false, reason, g->opaque);
    if (g->conn.state == QMP_CONN_CLOSED)
        qga_schedule_retry(g);
}

static void
qga_opened(void *opaque)
{
    struct qga *g = opaque;
    log_debug("qga: %s: connected", g->conn.path);
    unsigned gen = g->conn.gen;
    if (g->state_cb)
        g->state_cb(g, true, NULL, g->opaque);
    if (g->conn.gen == gen && !g->conn.dying) {
        qga_kick(g);
        qga_arm_timer(g);
    }
}

static void
qga_try_connect(struct qga *g)
{
    if (g->conn.state != QMP_CONN_CLOSED || g->conn.dying)
        return;
    int rc = qmp_conn_connect(&g->conn);
    if (rc == -1 && errno == ENAMETOOLONG) {
        log_error("qga: %s: path too long for a Unix socket", g->conn.path);
    } else if (rc == -1) {
        log_warn("qga: socket: %s", strerror(errno));
        qga_schedule_retry(g);
    } else if (rc < 0) {
        /* Missing or refusing (QEMU not up yet): quietly try again. */
        log_debug("qga: connect to %s: %s", g->conn.path, strerror(errno));
        qga_schedule_retry(g);
    }
    /* Even a connect that finished at once completes from the write
     * watcher (connect_in_watcher below), so the state callback never
     * runs inside qga_start. */
}

/* --- input --- */

static void
qga_dispatch(void *opaque, json_t *msg)
{
    struct qga *g = opaque;
    json_t *ret = json_object_get(msg, "return");
    json_t *error = json_object_get(msg, "error");
    if (!json_is_object(msg) || (!ret && !error)) {
        log_warn("qga: %s: ignoring a message that is not a reply", g->conn.path);
        return;
    }
    if (g->phase == QGA_SYNCING) {
        if (json_is_integer(ret) && json_integer_value(ret) == g->sync_id) {
            g->phase = QGA_WAITING;
            struct qmp_req *r = g->queue.head;
            qga_write_line(g, r->line);
        } else {
            CLEANUP_FREE char *s = json_dumps(msg, JSON_COMPACT);
            log_debug("qga: %s: dropping a stale reply: %.200s", g->conn.path,
                      s ? s : "?");
        }
        return;
    }
    if (g->phase != QGA_WAITING) {
        CLEANUP_FREE char *s = json_dumps(msg, JSON_COMPACT);
        log_debug("qga: %s: dropping a reply nobody waits for: %.200s",
                  g->conn.path, s ? s : "?");
        return;
    }

    struct qmp_req *r = qmp_list_pop(&g->queue);
    g->phase = QGA_IDLE;
    unsigned gen = g->conn.gen;
    if (!error) {
        qmp_conn_complete(&g->conn, r, ret, NULL);
    } else {
        const char *class = json_string_value(json_object_get(error, "class"));
        const char *desc = json_string_value(json_object_get(error, "desc"));
        qmp_conn_fail(&g->conn, r, class ? class : "GenericError",
                 desc ? desc : "the guest agent gave no error description");
    }
    if (g->conn.gen == gen && !g->conn.dying) {
        qga_kick(g);
        qga_arm_timer(g);
    }
}

static void
qga_on_bad_input(void *opaque, const char *why)
{
    struct qga *g = opaque;
    /* Garbage from the guest is the guest's problem; the next sync gets
     * past it. */
    log_warn("qga: %s: dropping bad input: %s", g->conn.path, why);
}

/* Feeds bytes, starting over after every 0xFF. */
static void
qga_feed(void *opaque, const char *buf, size_t n)
{
    struct qga *g = opaque;
    unsigned gen = g->conn.gen;
    while (n > 0 && g->conn.gen == gen && !g->conn.dying) {
        const char *delim = memchr(buf, QGA_DELIM, n);
        size_t part = delim ? (size_t) (delim - buf) : n;
        qmp_conn_feed(&g->conn, buf, part);
        if (!delim || g->conn.gen != gen || g->conn.dying)
            return;
        qmp_conn_reset_input(&g->conn);
        buf += part + 1;
        n -= part + 1;
    }
}

static void
qga_on_failed(void *opaque, const char *reason)
{
    /* On a failed connect, commands queued meanwhile fail now; a retry
     * follows. */
    qga_close(opaque, reason);
}

static const struct qmp_conn_ops qga_conn_ops = {
    .max_msg = QGA_MAX_MSG,
    .max_depth = QGA_MAX_DEPTH,
    .read_size = QGA_READ_SIZE,
    .eof_reason = "the guest agent's socket was closed",
    /* See qga_try_connect; a full backlog is waited out the same way. */
    .connect_in_watcher = true,
    .opened = qga_opened,
    .input = qga_feed,
    .message = qga_dispatch,
    .bad_input = qga_on_bad_input,
    .failed = qga_on_failed,
    .complete = qga_on_complete,
    .timer = qga_on_timer,
    /* Nothing left to stop: qga_free stopped the retry timer and no
     * retry is scheduled once dying. */
    .destroy = free,
};

/* --- public API --- */

struct qga *
qga_new(struct ev_loop *loop, const char *path, qga_state_cb *cb,
        void *opaque, double retry_interval)
{
    struct qga *g = xcalloc(1, sizeof *g);
    g->loop = loop;
    g->state_cb = cb;
    g->opaque = opaque;
    g->retry_interval = retry_interval > 0 ? retry_interval : 1.0;
    qmp_conn_init(&g->conn, loop, path, &qga_conn_ops, g);
    ev_init(&g->retry, qga_on_retry);
    g->retry.data = g;
    return g;
}

void
qga_start(struct qga *g)
{
    if (g->started || g->conn.dying)
        return;
    g->started = true;
    qmp_conn_enter(&g->conn);
    qga_try_connect(g);
    qmp_conn_leave(&g->conn);
}

enum qga_state
qga_state(const struct qga *g)
{
    if (!g)
        return QGA_STATE_NONE;
    return g->conn.state == QMP_CONN_OPEN ? QGA_STATE_CONNECTED
                                          : QGA_STATE_DISCONNECTED;
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
    struct qmp_req *r = qmp_req_new(cmd, args, 0);
    json_decref(args);
    r->cb.qga = cb;
    r->opaque = opaque;
    r->timeout = timeout > 0 ? timeout : 10.0;
    r->deadline = ev_now(g->loop) + r->timeout;

    if (!r->line || g->conn.state == QMP_CONN_CLOSED || g->conn.dying) {
        /* Never call back from inside qga_exec. */
        qmp_conn_defer(&g->conn, r, r->line ? "Disconnected" : "GenericError",
                       r->line ? "not connected to the guest agent"
                               : "command cannot be encoded as JSON");
        return;
    }
    qmp_list_push(&g->queue, r);
    qmp_conn_enter(&g->conn);
    qga_kick(g);
    if (g->conn.state != QMP_CONN_CLOSED)
        qga_arm_timer(g);
    qmp_conn_leave(&g->conn);
}

void
qga_free(struct qga *g)
{
    if (!g || g->conn.dying)
        return;
    qmp_conn_enter(&g->conn);
    g->conn.dying = true;
    ev_timer_stop(g->loop, &g->retry);
    qga_close(g, "guest agent client freed");
    qmp_conn_leave(&g->conn);
}
