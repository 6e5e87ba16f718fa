/* libFuzzer harness: bytes from a control client, through the real
 * framing, negotiation, central argument checks and command table.
 * QEMU is not connected, so commands that need it answer NotConnected;
 * everything before that point is what hostile input can reach.
 * Input: the bytes are fed in pieces whose sizes come from the data.
 *
 * Checked on every input: each message the framing finds (a request, or
 * bytes it rejects) gets exactly one reply line, a JSON object with
 * "return" or "error", carrying the request's "id" when it had one.  A
 * shadow stream with the agent's settings counts the messages; with QEMU
 * away nothing waits, so every reply is written before the next piece. */
#include "agent/agent.h"

#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static struct agent *
fuzz_agent(void)
{
    static struct agent a;
    if (!a.loop) {
        a.loop = ev_loop_new(EVFLAG_AUTO);
        a.listen_fd = -1;
        log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    }
    return &a;
}

/* What the agent wrote, split into lines as they complete. */
struct out {
    char *buf;
    size_t len, cap;
    size_t lines;               /* complete lines checked so far */
};

static void
fail(const char *why, const char *line, size_t len)
{
    fprintf(stderr, "fuzz-control: %s: %.*s\n", why, (int) (len > 400 ? 400 : len), line);
    abort();
}

/* Reads what is there and checks each complete line against the ids of
 * the messages the shadow stream found (ids[k] is NULL for a message
 * without one, or for bytes the framing rejected). */
/* The mark of a request without an id, whose reply must carry none: not
 * JSON null, which a request may send as its id and gets back ("id": null,
 * as QEMU answers).  One object, told apart by its address. */
static json_t *
no_id(void)
{
    static json_t *mark;
    if (!mark)
        mark = json_object();
    return mark;
}

static void
drain(int fd, struct out *o, json_t *ids)
{
    for (;;) {
        if (o->cap - o->len < 65536) {
            o->cap = o->cap ? o->cap * 2 : 1 << 17;
            o->buf = xrealloc(o->buf, o->cap);
        }
        ssize_t n = read(fd, o->buf + o->len, o->cap - o->len);
        if (n <= 0)
            break;
        o->len += (size_t) n;
    }
    char *p = o->buf, *end = o->buf + o->len, *nl;
    while ((nl = memchr(p, '\n', (size_t) (end - p)))) {
        json_t *j = json_loadb(p, (size_t) (nl - p), JSON_ALLOW_NUL, NULL);
        if (!json_is_object(j))
            fail("a reply line that is no JSON object", p, (size_t) (nl - p));
        if (o->lines == 0) {
            if (!json_object_get(j, "QMP"))
                fail("no greeting first", p, (size_t) (nl - p));
        } else {
            size_t k = o->lines - 1;
            if (k >= json_array_size(ids))
                fail("a reply to no request", p, (size_t) (nl - p));
            if (!json_object_get(j, "return") == !json_object_get(j, "error"))
                fail("neither return nor error", p, (size_t) (nl - p));
            json_t *want = json_array_get(ids, k);
            json_t *got = json_object_get(j, "id");
            if (want == no_id() ? got != NULL : !json_equal(want, got))
                fail("a reply with the wrong id", p, (size_t) (nl - p));
        }
        json_decref(j);
        o->lines++;
        p = nl + 1;
    }
    memmove(o->buf, p, (size_t) (end - p));
    o->len = (size_t) (end - p);
}

/* Reads until the agent has nothing left to write: the loop's write
 * watcher sends what a full socket held back. */
static void
flush_all(struct agent *a, struct client *c, int fd, struct out *o, json_t *ids)
{
    drain(fd, o, ids);
    while (!c->closing && ctl_pending(c)) {
        ev_run(a->loop, EVRUN_NOWAIT);
        drain(fd, o, ids);
    }
}

/* Feeds the shadow stream; appends one id (or null) per message found. */
static void
shadow_feed(struct qmp_stream *s, const char *data, size_t len, json_t *ids)
{
    qmp_stream_feed(s, data, len);
    for (;;) {
        json_t *msg = NULL;
        enum qmp_stream_result r = qmp_stream_next(s, &msg, NULL, 0);
        if (r == QMP_STREAM_NEED_MORE)
            break;
        json_t *id = r == QMP_STREAM_MESSAGE && json_is_object(msg)
                     ? json_object_get(msg, "id") : NULL;
        json_array_append_new(ids, json_incref(id ? id : no_id()));
        json_decref(msg);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent *a = fuzz_agent();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    /* Room for every reply of one piece without blocking the agent. */
    int big = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct client *c = ctl_add_client(a, sv[0], 0);
    struct qmp_stream shadow;
    qmp_stream_init(&shadow, CTL_MAX_MESSAGE, CTL_MAX_DEPTH);
    qmp_stream_lenient(&shadow);
    json_t *ids = json_array();
    struct out o = { 0 };
    size_t off = 0;
    while (off < size && !c->closing) {
        size_t chunk = 1 + data[off] % 64;      /* piece sizes from the input */
        off++;
        if (chunk > size - off)
            chunk = size - off;
        qmp_stream_feed(&c->in, (const char *) data + off, chunk);
        shadow_feed(&shadow, (const char *) data + off, chunk, ids);
        dispatch_client_input(c);
        flush_all(a, c, sv[1], &o, ids);
        off += chunk;
    }
    if (!c->closing) {
        flush_all(a, c, sv[1], &o, ids);
        if (o.lines != json_array_size(ids) + 1 || o.len) {
            char why[128];
            snprintf(why, sizeof why, "%zu messages, %zu replies", json_array_size(ids),
                     o.lines ? o.lines - 1 : 0);
            fail(why, o.buf ? o.buf : "", o.len);
        }
    }
    ctl_drop(c, "fuzz input done");
    ctl_reap(a);
    close(sv[1]);
    qmp_stream_free(&shadow);
    json_decref(ids);
    free(o.buf);
    return 0;
}
