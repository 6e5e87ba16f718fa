/* The peer side of a Unix stream socket for the qmp/ client tests
 * (test-qmp-client.c plays QEMU, test-qga.c plays qemu-ga): listens in a
 * temporary path, accepts one connection at a time (a new one replaces
 * the old), records every JSON message it gets and hands each to the
 * test's on_message, driven by the test's libev loop.  And the loop and
 * record helpers both tests use.
 *
 * Include after <cmocka.h>.  Header-only: every function is static. */
#ifndef CKPTD_TEST_FAKE_PEER_H
#define CKPTD_TEST_FAKE_PEER_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/common.h"
#include "qmp/qmp.h"

/* Not every test file uses every helper. */
#define FAKE_FN static __attribute__((unused))

struct fake_peer;
typedef void fake_message_fn(struct fake_peer *f, json_t *msg);

struct fake_peer {
    struct ev_loop *loop;
    int lfd, cfd;
    ev_io accept_w, read_w;
    struct qmp_stream in;
    json_t *got;            /* every message received, in order */
    int accepts;
    /* What the test sets (fake_start sets the first two). */
    fake_message_fn *on_message;
    const char *hello;      /* written on accept (QEMU's greeting), or NULL */
    bool ff_resync;         /* like qemu-ga: 0xFF drops the partial input */
    int ffs;                /* 0xFF bytes received (with ff_resync) */
    int rfd;                /* the last descriptor received (SCM_RIGHTS), or -1 */
    size_t rfd_msg, rfd_end;/* got's size before and after the read it came with */
};

FAKE_FN void
fake_write(struct fake_peer *f, const char *s)
{
    size_t len = strlen(s);
    assert_int_equal(write(f->cfd, s, len), (ssize_t) len);
}

FAKE_FN void
fake_hangup(struct fake_peer *f)
{
    if (f->cfd < 0)
        return;
    ev_io_stop(f->loop, &f->read_w);
    close(f->cfd);
    f->cfd = -1;
    qmp_stream_free(&f->in);
}

/* The i-th message's "execute". */
FAKE_FN const char *
fake_cmd(struct fake_peer *f, size_t i)
{
    return json_string_value(json_object_get(json_array_get(f->got, i),
                                             "execute"));
}

/* Hands out what the framer holds; stops when on_message hung up. */
static void
fake_drain(struct fake_peer *f)
{
    json_t *msg;
    while (f->cfd >= 0 &&
           qmp_stream_next(&f->in, &msg, NULL, 0) != QMP_STREAM_NEED_MORE) {
        if (msg) {
            json_array_append(f->got, msg);
            f->on_message(f, msg);
        }
        json_decref(msg);
    }
}

static void
fake_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fake_peer *f = w->data;
    char buf[4096];
    union {
        char b[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { buf, sizeof buf };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof u.b };
    ssize_t n = recvmsg(f->cfd, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        fake_hangup(f);
        return;
    }
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    bool with_fd = cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS;
    if (with_fd) {
        if (f->rfd >= 0)
            close(f->rfd);
        memcpy(&f->rfd, CMSG_DATA(cm), sizeof f->rfd);
        f->rfd_msg = json_array_size(f->got);
    }
    const char *p = buf;
    size_t left = (size_t) n;
    while (left > 0 && f->cfd >= 0) {
        const char *ff = f->ff_resync ? memchr(p, '\xff', left) : NULL;
        size_t part = ff ? (size_t) (ff - p) : left;
        qmp_stream_feed(&f->in, p, part);
        fake_drain(f);
        if (!ff || f->cfd < 0)
            break;
        /* Like qemu-ga: 0xFF throws away what the parser holds. */
        f->ffs++;
        qmp_stream_free(&f->in);
        p += part + 1;
        left -= part + 1;
    }
    if (with_fd)
        f->rfd_end = json_array_size(f->got);
}

static void
fake_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct fake_peer *f = w->data;
    int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    fake_hangup(f);
    f->cfd = fd;
    f->accepts++;
    qmp_stream_init(&f->in, 1 << 20, 64);
    ev_io_init(&f->read_w, fake_on_read, fd, EV_READ);
    f->read_w.data = f;
    ev_io_start(loop, &f->read_w);
    if (f->hello)
        fake_write(f, f->hello);
}

/* Listens on path; the rest of *f starts zeroed. */
FAKE_FN void
fake_start(struct fake_peer *f, struct ev_loop *loop, const char *path,
           fake_message_fn *on_message)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, path);
    *f = (struct fake_peer) { .loop = loop, .cfd = -1, .rfd = -1,
                              .on_message = on_message };
    f->got = json_array();
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    ev_io_init(&f->accept_w, fake_on_accept, f->lfd, EV_READ);
    f->accept_w.data = f;
    ev_io_start(loop, &f->accept_w);
}

FAKE_FN void
fake_stop(struct fake_peer *f)
{
    fake_hangup(f);
    ev_io_stop(f->loop, &f->accept_w);
    close(f->lfd);
    if (f->rfd >= 0)
        close(f->rfd);
    json_decref(f->got);
}

/* A fresh directory /tmp/NAME-XXXXXX in dir, and the path of the socket
 * SOCK in it in path. */
FAKE_FN void
fake_tmpdir(char *dir, size_t ndir, char *path, size_t npath,
            const char *name, const char *sock)
{
    snprintf(dir, ndir, "/tmp/%s-XXXXXX", name);
    assert_non_null(mkdtemp(dir));
    snprintf(path, npath, "%s/%s", dir, sock);
}
/* The same into a test context c with members dir and path. */
#define FAKE_TMPDIR(c, name, sock)                                      \
    fake_tmpdir((c)->dir, sizeof (c)->dir, (c)->path, sizeof (c)->path, \
                (name), (sock))

/* --- the test's loop --- */

static void
fake_on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    *(bool *) w->data = true;
}

/* A one-shot timer that sets *expired after seconds. */
FAKE_FN void
fake_guard_start(struct ev_loop *loop, ev_timer *t, bool *expired,
                 double seconds)
{
    *expired = false;
    ev_timer_init(t, fake_on_guard, seconds, 0);
    t->data = expired;
    ev_timer_start(loop, t);
}

/* Runs loop until DONE (an expression) holds; fails the test after 5 s.
 * A macro so that DONE can ask the test's own context. */
#define FAKE_RUN_UNTIL(loop, done) do {                             \
        bool expired_;                                              \
        ev_timer guard_;                                            \
        fake_guard_start((loop), &guard_, &expired_, 5);            \
        while (!(done) && !expired_)                                \
            ev_run((loop), EVRUN_ONCE);                             \
        ev_timer_stop((loop), &guard_);                             \
        assert_false(expired_);                                     \
    } while (0)

/* Runs the loop for a while, whatever happens. */
FAKE_FN void
fake_run_for(struct ev_loop *loop, double seconds)
{
    bool expired;
    ev_timer t;
    fake_guard_start(loop, &t, &expired, seconds);
    while (!expired)
        ev_run(loop, EVRUN_ONCE);
}

/* --- what the client did --- */

/* Appends to the test's log string (callbacks in the order they ran). */
FAKE_FN void __attribute__((format(printf, 3, 4)))
fake_log(char *log, size_t size, const char *fmt, ...)
{
    size_t n = strlen(log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log + n, size - n, fmt, ap);
    va_end(ap);
}

/* Counts a client's state change into *ups or *downs (then keeping the
 * reason too) and logs "up;" or "down;". */
FAKE_FN void
fake_keep_state(int *ups, int *downs, char *reason, size_t nreason,
                char *log, size_t nlog, bool connected, const char *why)
{
    if (connected) {
        ++*ups;
        fake_log(log, nlog, "up;");
    } else {
        ++*downs;
        snprintf(reason, nreason, "%s", why);
        fake_log(log, nlog, "down;");
    }
}
/* The same into a test context c with members ups, downs, reason, log. */
#define FAKE_KEEP_STATE(c, connected, why)                              \
    fake_keep_state(&(c)->ups, &(c)->downs, (c)->reason,                \
                    sizeof (c)->reason, (c)->log, sizeof (c)->log,      \
                    (connected), (why))

/* Keeps what a reply callback got: a copy of ret in *keep, or err's class
 * and description. */
FAKE_FN void
fake_keep_reply(json_t **keep, char *class, size_t nclass, char *desc,
                size_t ndesc, json_t *ret, const struct qmp_error *err)
{
    if (err) {
        snprintf(class, nclass, "%s", err->class);
        snprintf(desc, ndesc, "%s", err->desc);
    } else {
        json_decref(*keep);
        *keep = json_deep_copy(ret);
    }
}
/* The same into a test record r with members ret, class and desc. */
#define FAKE_KEEP_REPLY(r, ret_, err_)                                  \
    fake_keep_reply(&(r)->ret, (r)->class, sizeof (r)->class, (r)->desc, \
                    sizeof (r)->desc, (ret_), (err_))

#endif
