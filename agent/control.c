/* The control socket: accepting clients, reading and framing their input,
 * buffering their output.  Clients that go away are marked closing and
 * freed from the loop's prepare step, so no callback in flight ever
 * touches freed memory. */
#include "agent/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void client_free(struct client *c);

static int
fill_addr(struct sockaddr_un *sun, const char *path)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sun->sun_path, path);
    return 0;
}

/* A path left by a dead agent is removed; a live one is never stolen. */
static int
clear_stale_socket(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        log_error("%s exists and is not a socket; not touching it", path);
        return -1;
    }
    struct sockaddr_un sun;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || fill_addr(&sun, path) < 0)
        return -1;
    int r = connect(fd, (struct sockaddr *) &sun, sizeof sun);
    close(fd);
    if (r == 0) {
        log_error("%s: another agent is listening there", path);
        return -1;
    }
    return unlink(path);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents);
static void reap_cb(struct ev_loop *loop, ev_prepare *w, int revents);

static void
accept_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct agent *a = w->data;
    ev_io_start(loop, &a->accept_w);
}

int
ctl_listen(struct agent *a)
{
    struct sockaddr_un sun;
    /* The socket's mode is the first guard, its directory the second: a
     * missing one is created private (group-searchable with
     * --socket-group); a shared one was refused by access_check_dirs. */
    CLEANUP_FREE char *dir = xstrdup(a->opt.control_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (access_make_dir(a, dir) < 0) {
            log_error("cannot create %s: %m", dir);
            return -1;
        }
    }
    if (fill_addr(&sun, a->opt.control_path) < 0 ||
        clear_stale_socket(a->opt.control_path) < 0) {
        log_error("cannot use control socket %s: %m", a->opt.control_path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    /* umask, not chmod after bind: no window where others may connect. */
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *) &sun, sizeof sun);
    umask(old);
    if (r < 0 || listen(fd, SOMAXCONN) < 0) {
        log_error("cannot listen on %s: %m", a->opt.control_path);
        close(fd);
        return -1;
    }
    /* 0600 until here; 0660 and the group only with --socket-group. */
    if (a->opt.socket_group && access_socket(a, a->opt.control_path) < 0) {
        log_error("cannot give %s to group %s: %m", a->opt.control_path,
                  a->opt.socket_group);
        close(fd);
        unlink(a->opt.control_path);
        return -1;
    }
    a->listen_fd = fd;
    ev_io_init(&a->accept_w, accept_cb, fd, EV_READ);
    a->accept_w.data = a;
    ev_timer_init(&a->accept_pause_w, accept_resume, 1., 0.);
    a->accept_pause_w.data = a;
    ev_io_start(a->loop, &a->accept_w);
    ev_prepare_init(&a->reap_w, reap_cb);
    a->reap_w.data = a;
    ev_prepare_start(a->loop, &a->reap_w);
    log_info("listening on %s", a->opt.control_path);
    return 0;
}

void
ctl_close_listener(struct agent *a)
{
    if (a->listen_fd < 0)
        return;
    ev_io_stop(a->loop, &a->accept_w);
    ev_timer_stop(a->loop, &a->accept_pause_w);
    close(a->listen_fd);
    a->listen_fd = -1;
    unlink(a->opt.control_path);
    while (a->clients)
        client_free(a->clients);
    ev_prepare_stop(a->loop, &a->reap_w);
}

static bool
peer_allowed(const struct agent *a, int fd, uid_t *uid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    *uid = cred.uid;
    if (cred.uid == geteuid() || cred.uid == 0)
        return true;
    for (size_t i = 0; i < a->opt.nallow_uids; i++)
        if (a->opt.allow_uids[i] == cred.uid)
            return true;
    return false;
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);

/* version.qemu is ckptd's own version (QMP libraries require the key),
 * taken from the build's CKPTD_VERSION. */
static void
greet(struct client *c)
{
    int major = 0, minor = 0, micro = 0;
    if (sscanf(CKPTD_VERSION, "%d.%d.%d", &major, &minor, &micro) < 1)
        log_warn("version '%s' is not MAJOR.MINOR.MICRO", CKPTD_VERSION);
    json_t *g = json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}",
                          "QMP", "version", "qemu", "major", major, "minor", minor,
                          "micro", micro, "package", "ckptd " CKPTD_VERSION,
                          "capabilities");
    ctl_send(c, g);
}

/* One error line to a client that is closed next; best effort on a fresh
 * socket whose buffer is empty. */
static void
say_and_close(int fd, enum ckpt_err code, const char *desc)
{
    CLEANUP_JSON json_t *m = req_error_message(code, desc, NULL);
    CLEANUP_FREE char *s = json_dumps(m, JSON_COMPACT);
    if (s) {
        CLEANUP_FREE char *line = xasprintf("%s\n", s);
        (void) !send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    close(fd);
}

/* 10 s (PROTOCOL.md), unless a test set CKPTD_DEBUG_HANDSHAKE_TIMEOUT. */
static double
handshake_timeout(const struct agent *a)
{
    return a->opt.debug.handshake_timeout > 0 ? a->opt.debug.handshake_timeout
                                              : CTL_HANDSHAKE_TIMEOUT;
}

/* A client that has not negotiated within the handshake timeout holds a
 * slot of the cap for nothing: idle connections must not lock others out. */
static void
hello_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct client *c = w->data;
    if (c->negotiated || c->closing)
        return;
    char desc[128];
    ckpt_format(desc, sizeof desc, "no qmp_capabilities within %g s; closing the "
                "connection", handshake_timeout(c->agent));
    ctl_send(c, req_error_message(CKPT_ERR_GENERIC, desc, NULL));
    ctl_drop(c, "handshake timeout");
}

static void
accept_one(struct agent *a, int fd)
{
    uid_t uid = (uid_t) -1;
    if (!peer_allowed(a, fd, &uid)) {
        log_warn("refused a control client with uid %d", (int) uid);
        close(fd);
        return;
    }
    if (a->nclients >= CTL_MAX_CLIENTS) {
        log_warn("refused a control client: %d clients already", CTL_MAX_CLIENTS);
        char desc[128];
        ckpt_format(desc, sizeof desc, "too many clients: the agent serves %d at "
                    "once; try again later", CTL_MAX_CLIENTS);
        say_and_close(fd, CKPT_ERR_BUSY, desc);
        return;
    }
    ctl_add_client(a, fd, uid);
}

/* Drains the backlog (a bounded number per wake-up, so a flood of
 * connections cannot starve the clients already there). */
static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct agent *a = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            /* Out of descriptors the connection stays queued and the socket
             * readable: pause accepting for a second instead of spinning. */
            if (errno == EMFILE || errno == ENFILE) {
                log_warn("out of file descriptors; accepting again in 1 s");
                ev_io_stop(loop, &a->accept_w);
                ev_timer_start(loop, &a->accept_pause_w);
            }
            return;
        }
        accept_one(a, fd);
    }
}

struct client *
ctl_add_client(struct agent *a, int fd, uid_t uid)
{
    struct client *c = xcalloc(1, sizeof *c);
    c->agent = a;
    c->fd = fd;
    c->uid = uid;
    qmp_stream_init(&c->in, CTL_MAX_MESSAGE, CTL_MAX_DEPTH);
    /* NUL and bad UTF-8 in strings reach dispatch, which names the
     * argument (InvalidParameter) instead of a bare parse error. */
    qmp_stream_lenient(&c->in);
    ev_io_init(&c->read_w, read_cb, fd, EV_READ);
    ev_io_init(&c->write_w, write_cb, fd, EV_WRITE);
    c->read_w.data = c->write_w.data = c;
    ev_io_start(a->loop, &c->read_w);
    ev_timer_init(&c->hello_w, hello_cb, handshake_timeout(a), 0.);
    c->hello_w.data = c;
    ev_timer_start(a->loop, &c->hello_w);
    c->next = a->clients;
    a->clients = c;
    a->nclients++;
    log_debug("client %d connected", fd);
    greet(c);
    return c;
}

/* Reads bytes and any descriptors sent with them (SCM_RIGHTS, as QMP's
 * getfd takes them).  A client holds at most CTL_MAX_FDS; more are closed
 * at once, and getfd then says none was passed. */
static ssize_t
ctl_read(struct client *c, char *buf, size_t len)
{
    union {
        char buf[CMSG_SPACE(CTL_MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { buf, len };
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = u.buf, .msg_controllen = sizeof u.buf,
    };
    ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            if (c->nfds_in + c->nfds < CTL_MAX_FDS) {
                c->fds_in[c->nfds_in++] = fd;
            } else {
                log_warn("client %d: a descriptor over the cap of %d closed",
                         c->fd, CTL_MAX_FDS);
                close(fd);
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC)
        log_warn("client %d: descriptors beyond the cap were dropped", c->fd);
    return n;
}

int
ctl_find_fd(const struct client *c, const char *name)
{
    for (size_t i = 0; c && i < c->nfds; i++)
        if (strcmp(c->fds[i].name, name) == 0)
            return c->fds[i].fd;
    return -1;
}

int
ctl_take_fd(struct client *c, const char *name)
{
    for (size_t i = 0; c && i < c->nfds; i++)
        if (strcmp(c->fds[i].name, name) == 0) {
            int fd = c->fds[i].fd;
            free(c->fds[i].name);
            c->fds[i] = c->fds[--c->nfds];
            return fd;
        }
    return -1;
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    char buf[65536];
    ssize_t n = ctl_read(c, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        ctl_drop(c, n == 0 ? "closed" : strerror(errno));
        return;
    }
    if (n < 0)
        return;
    qmp_stream_feed(&c->in, buf, (size_t) n);
    dispatch_client_input(c);
    /* While a command waits, stop reading: a client that pipelines
     * requests cannot make us buffer without bound. */
    if (c->current && !c->closing)
        ev_io_stop(c->agent->loop, &c->read_w);
}

void
ctl_resume(struct client *c)
{
    if (!c->closing && !c->current)
        ev_io_start(c->agent->loop, &c->read_w);
}

/* Pending output is out[out_sent, out_len): a partial send only moves
 * out_sent (Redis's sentlen), so a slow reader of a large reply costs no
 * copying per send.  The buffer is rewound when it drains, and compacted
 * only when an append would otherwise have to grow it. */
static void
flush_output(struct client *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            ctl_drop(c, strerror(errno));
            return;
        }
        c->out_sent += (size_t) n;
    }
    if (c->out_sent == c->out_len)
        c->out_sent = c->out_len = 0;
    if (c->out_len)
        ev_io_start(c->agent->loop, &c->write_w);
    else
        ev_io_stop(c->agent->loop, &c->write_w);
}

size_t
ctl_pending(const struct client *c)
{
    return c->out_len - c->out_sent;
}

static void
write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    flush_output(w->data);
}

/* Room for n more bytes at the end of the buffer. */
static void
reserve_output(struct client *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return;
    if (c->out_sent) {
        memmove(c->out, c->out + c->out_sent, c->out_len - c->out_sent);
        c->out_len -= c->out_sent;
        c->out_sent = 0;
    }
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
}

static void
queue_line(struct client *c, const char *s, size_t len)
{
    if (ctl_pending(c) + len + 1 > CTL_MAX_OUTPUT) {
        ctl_drop(c, "too much unread output");
        return;
    }
    reserve_output(c, len + 1);
    memcpy(c->out + c->out_len, s, len);
    c->out[c->out_len + len] = '\n';
    c->out_len += len + 1;
    flush_output(c);
}

void
ctl_send(struct client *c, json_t *msg)
{
    CLEANUP_JSON json_t *m = msg;
    if (c->closing)
        return;
    if (!m) {
        /* Callers build replies through reply.c, which never passes NULL;
         * anything else that failed to build is logged, not sent. */
        log_error("a message to control client %d could not be built", c->fd);
        return;
    }
    CLEANUP_FREE char *s = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) {
        log_error("a message to control client %d could not be encoded", c->fd);
        if (json_object_get(m, "return") || json_object_get(m, "error")) {
            CLEANUP_JSON json_t *f = req_unbuildable(json_object_get(m, "id"),
                                                     "this request");
            s = json_dumps(f, JSON_COMPACT | JSON_PRESERVE_ORDER);
        }
        if (!s)
            return;
    }
    queue_line(c, s, strlen(s));
}

void
ctl_send_text(struct client *c, const char *s, size_t len)
{
    if (!c->closing)
        queue_line(c, s, len);
}

void
ctl_broadcast(struct agent *a, json_t *msg)
{
    for (struct client *c = a->clients; c; c = c->next)
        if (c->negotiated)
            ctl_send(c, json_incref(msg));
    json_decref(msg);
}

void
ctl_drop(struct client *c, const char *why)
{
    if (c->closing)
        return;
    log_debug("client %d gone: %s", c->fd, why);
    c->closing = true;
    ev_io_stop(c->agent->loop, &c->read_w);
    ev_io_stop(c->agent->loop, &c->write_w);
    ev_timer_stop(c->agent->loop, &c->hello_w);
}

static void
client_free(struct client *c)
{
    struct agent *a = c->agent;
    for (struct client **p = &a->clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    a->nclients--;
    /* A command still waiting for QEMU finishes later without a client. */
    if (c->current)
        c->current->client = NULL;
    ev_io_stop(a->loop, &c->read_w);
    ev_io_stop(a->loop, &c->write_w);
    ev_timer_stop(a->loop, &c->hello_w);
    close(c->fd);
    for (size_t i = 0; i < c->nfds_in; i++)
        close(c->fds_in[i]);
    for (size_t i = 0; i < c->nfds; i++) {
        close(c->fds[i].fd);
        free(c->fds[i].name);
    }
    qmp_stream_free(&c->in);
    free(c->out);
    free(c);
}

static void
reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    ctl_reap(w->data);
}

void
ctl_reap(struct agent *a)
{
    struct client *c = a->clients;
    while (c) {
        struct client *next = c->next;
        if (c->closing && !c->processing)
            client_free(c);
        c = next;
    }
}
