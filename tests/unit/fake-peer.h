/* The peer side of a Unix stream socket for the qmp/ client tests
 * (test-qmp-client.c plays QEMU, test-qga.c plays qemu-ga): listens in a
 * temporary path, accepts one connection at a time (a new one replaces
 * the old), records every JSON message it gets and hands each to the
 * test's on_message, driven by the test's libev loop.
 *
 * Include after <cmocka.h>.  Header-only: every function is static. */
#ifndef CKPTD_TEST_FAKE_PEER_H
#define CKPTD_TEST_FAKE_PEER_H

#include <stdio.h>
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

#endif
