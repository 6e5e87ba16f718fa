/* ckptctl transport: a small blocking QMP client over a Unix socket.
 *
 * ckptctl sends one command at a time and waits for its reply, so there is
 * no event loop: connect, read the greeting, negotiate, then per command
 * send a request with a fresh "id" and read lines until the reply with that
 * id arrives, skipping events.  Every wait is bounded by poll() and the
 * --timeout deadline, so a stuck agent never hangs a script.
 */
#include "ckptctl/ckptctl.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The agent caps requests at 1 MiB; replies (a long checkpoint list) may
 * be larger, but a line this long means something is badly wrong. */
#define CTL_MAX_LINE (64u << 20)

struct ctl_conn {
    int fd;
    const char *path;
    const struct ctl_ctx *ctx;      /* for the trusted uids */
    int timeout_sec;            /* 0: wait forever */
    char *buf;                  /* bytes received but not yet parsed */
    size_t len, cap;
    json_int_t next_id;
    json_t *events;             /* events read while awaiting replies */
};

/* Events kept for ctl_wait_event: the newest, enough for one backup. */
#define CTL_MAX_EVENTS 64

static const struct { const char *cls; int code; } ctl_class_codes[] = {
    { "NotConnected", CTL_EXIT_NOT_CONNECTED },
    { "InvalidParameter", CTL_EXIT_USAGE },
    { "NotFound", CTL_EXIT_NOT_FOUND },
    { "AlreadyExists", CTL_EXIT_EXISTS },
    { "Busy", CTL_EXIT_BUSY },
    { "Unsupported", CTL_EXIT_UNSUPPORTED },
    { "Inconsistent", CTL_EXIT_INCONSISTENT },
    { "QemuError", CTL_EXIT_QEMU },
};

int
ctl_exit_for_class(const char *error_class)
{
    for (size_t i = 0; i < ARRAY_SIZE(ctl_class_codes); i++)
        if (error_class && strcmp(error_class, ctl_class_codes[i].cls) == 0)
            return ctl_class_codes[i].code;
    return CTL_EXIT_OTHER;      /* GenericError, CommandNotFound, future ones */
}

/* --- deadlines --- */

static struct timespec
ctl_deadline(const struct ctl_conn *c)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += c->timeout_sec;
    return t;
}

/* Milliseconds left for poll(): -1 forever, 0 when expired. */
static int
ctl_remaining_ms(const struct ctl_conn *c, const struct timespec *deadline)
{
    struct timespec now;
    long long ms;

    if (c->timeout_sec == 0)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (deadline->tv_sec - now.tv_sec) * 1000LL
         + (deadline->tv_nsec - now.tv_nsec) / 1000000;
    return ms < 0 ? 0 : (int) ms;
}

/* --- connecting --- */

static int
ctl_socket_connect(struct ctl_conn *c)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    /* On Linux SO_SNDTIMEO also bounds connect() on a Unix socket whose
     * backlog is full, and send() to an agent that stopped reading. */
    struct timeval tv = { .tv_sec = c->timeout_sec };

    if (strlen(c->path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, c->path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (connect(c->fd, (struct sockaddr *) &sa, sizeof sa) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

/* Whoever can write the socket's directory can put a fake agent there,
 * which would then be believed ("qemu: connected") and could hand `pull`
 * NBD URIs of its own.  So the process at the other end must be root,
 * ourselves, or a uid the user named (OpenSSH's StrictModes, for sockets). */
static int
ctl_check_peer(struct ctl_conn *c)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    uid_t me = geteuid();

    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "cannot tell who serves %s: %s",
                        c->path, strerror(errno));
    if (cred.uid == 0 || cred.uid == me)
        return CTL_EXIT_OK;
    for (size_t i = 0; i < c->ctx->ntrust_uids; i++)
        if (c->ctx->trust_uids[i] == cred.uid)
            return CTL_EXIT_OK;
    return ctl_fail(CTL_EXIT_UNREACHABLE, "refusing the agent at %s: it runs as"
                    " uid %u (pid %d), neither root nor you (uid %u); if that"
                    " user's agent is the one you want, add --trust-uid %u",
                    c->path, (unsigned) cred.uid, (int) cred.pid, (unsigned) me,
                    (unsigned) cred.uid);
}

/* --- framing --- */

/* Sends line[0, len) with fd attached to its first byte (SCM_RIGHTS). */
static ssize_t
ctl_send_with_fd(struct ctl_conn *c, const char *line, size_t len, int fd)
{
    return fd_send(c->fd, line, len, fd);
}

static int
ctl_send(struct ctl_conn *c, json_t *msg, int fd)
{
    CLEANUP_FREE char *text = json_dumps(msg, JSON_COMPACT);
    CLEANUP_FREE char *line = NULL;
    size_t len, done = 0;

    if (!text)
        return ctl_fail(CTL_EXIT_OTHER, "cannot encode the request");
    line = xasprintf("%s\n", text);
    len = strlen(line);
    while (done < len) {
        /* MSG_NOSIGNAL: an agent that went away is an error, not SIGPIPE. */
        ssize_t n = fd >= 0 && done == 0
            ? ctl_send_with_fd(c, line, len, fd)
            : send(c->fd, line + done, len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ctl_fail(CTL_EXIT_UNREACHABLE, "cannot send to the agent at"
                            " %s: %s", c->path, strerror(errno));
        done += (size_t) n;
    }
    return CTL_EXIT_OK;
}

/* Waits for more bytes; appends them to the buffer. */
static int
ctl_fill(struct ctl_conn *c, const struct timespec *deadline)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    ssize_t n;
    int r;

    do
        r = poll(&pfd, 1, ctl_remaining_ms(c, deadline));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "poll: %s", strerror(errno));
    if (r == 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "no reply from the agent at %s"
                        " within %d s", c->path, c->timeout_sec);
    if (c->cap - c->len < 4096) {
        c->cap = c->cap ? c->cap * 2 : 8192;
        c->buf = xrealloc(c->buf, c->cap);
    }
    do
        n = read(c->fd, c->buf + c->len, c->cap - c->len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "cannot read from the agent at"
                        " %s: %s", c->path, strerror(errno));
    if (n == 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "the agent at %s closed the"
                        " connection", c->path);
    c->len += (size_t) n;
    return CTL_EXIT_OK;
}

/* Removes one line from the buffer and parses it; *msg is NULL for a
 * blank line. */
static int
ctl_take_line(struct ctl_conn *c, char *nl, json_t **msg)
{
    size_t linelen = (size_t) (nl - c->buf);
    json_error_t err;
    int r = CTL_EXIT_OK;

    *msg = NULL;
    if (strspn(c->buf, " \t\r") < linelen) {
        *msg = json_loadb(c->buf, linelen, JSON_REJECT_DUPLICATES, &err);
        if (!*msg)
            r = ctl_fail(CTL_EXIT_OTHER, "the agent sent invalid JSON: %s",
                         err.text);
        else if (!json_is_object(*msg)) {
            json_decref(*msg);
            *msg = NULL;
            r = ctl_fail(CTL_EXIT_OTHER, "the agent sent a message that is not"
                         " a JSON object");
        }
    }
    c->len -= linelen + 1;
    memmove(c->buf, nl + 1, c->len);
    return r;
}

/* Reads the next message: the agent writes one JSON object per line, but a
 * line may arrive in pieces, so buffer until its newline. */
static int
ctl_read_message(struct ctl_conn *c, const struct timespec *deadline,
                 json_t **msg)
{
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        int r;

        if (nl) {
            r = ctl_take_line(c, nl, msg);
            if (r != CTL_EXIT_OK || *msg)
                return r;
            continue;
        }
        if (c->len > CTL_MAX_LINE)
            return ctl_fail(CTL_EXIT_OTHER, "the agent sent a message over"
                            " %u MiB", CTL_MAX_LINE >> 20);
        if ((r = ctl_fill(c, deadline)) != CTL_EXIT_OK)
            return r;
    }
}

/* Reads until the reply to request `id`: events are skipped, and so is a
 * reply to some other id (there should be none; requests go one at a time). */
static int
ctl_await_reply(struct ctl_conn *c, json_t *id, json_t **reply)
{
    struct timespec deadline = ctl_deadline(c);

    for (;;) {
        json_t *msg;
        int r = ctl_read_message(c, &deadline, &msg);
        json_t *got;

        if (r != CTL_EXIT_OK)
            return r;
        got = json_object_get(msg, "id");
        if (!json_object_get(msg, "event") && (!got || json_equal(got, id))) {
            *reply = msg;
            return CTL_EXIT_OK;
        }
        if (json_object_get(msg, "event")) {
            if (!c->events)
                c->events = json_array();
            if (json_array_size(c->events) == CTL_MAX_EVENTS)
                json_array_remove(c->events, 0);
            json_array_append(c->events, msg);
        }
        json_decref(msg);
    }
}

/* Turns a reply into the command's result or its error. */
static int
ctl_reply_result(const char *command, json_t *reply, json_t **ret)
{
    json_t *value = json_object_get(reply, "return");
    json_t *error = json_object_get(reply, "error");
    const char *cls = NULL, *desc = NULL;

    if (value) {
        *ret = json_incref(value);
        return CTL_EXIT_OK;
    }
    if (!error)
        return ctl_bad_reply(command, "neither \"return\" nor \"error\"");
    if (json_unpack(error, "{s?s, s?s}", "class", &cls, "desc", &desc) < 0)
        return ctl_bad_reply(command, "\"error\" without string class/desc");
    return ctl_fail(ctl_exit_for_class(cls), "%s",
                    desc ? desc : cls ? cls : "unknown error");
}

static int
ctl_request(struct ctl_conn *c, const char *command, json_t *args, int fd,
            json_t **ret)
{
    CLEANUP_JSON json_t *req = json_pack("{s:s, s:I}", "execute", command,
                                         "id", c->next_id++);
    CLEANUP_JSON json_t *reply = NULL;
    int r;

    if (args)
        json_object_set_new(req, "arguments", args);
    if ((r = ctl_send(c, req, fd)) != CTL_EXIT_OK)
        return r;
    if ((r = ctl_await_reply(c, json_object_get(req, "id"), &reply)) != CTL_EXIT_OK)
        return r;
    return ctl_reply_result(command, reply, ret);
}

/* The greeting must come from ckptd: pointing ckptctl at QEMU's own QMP
 * socket by mistake should say so, not fail later with CommandNotFound. */
/* *busy: the agent said "too many clients" instead of greeting. */
static int
ctl_check_greeting(struct ctl_conn *c, const struct timespec *deadline, bool *busy)
{
    CLEANUP_JSON json_t *msg = NULL;
    const char *package = "", *cls = NULL, *desc = NULL;
    int r = ctl_read_message(c, deadline, &msg);

    *busy = false;
    if (r == CTL_EXIT_OTHER)
        return CTL_EXIT_UNREACHABLE;    /* garbage: whatever it is, not ckptd */
    if (r != CTL_EXIT_OK)
        return r;
    if (json_unpack(msg, "{s:{s:s,s?s}}", "error", "class", &cls, "desc",
                    &desc) == 0) {
        if (strcmp(cls, "Busy") == 0) {
            *busy = true;
            return CTL_EXIT_BUSY;
        }
        return ctl_fail(ctl_exit_for_class(cls), "the agent at %s refused the"
                        " connection: %s", c->path, desc ? desc : cls);
    }
    if (json_unpack(msg, "{s:{s:{s?s}}}", "QMP", "version", "package",
                    &package) < 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "%s does not speak QMP (no"
                        " greeting)", c->path);
    if (strncmp(package, "ckptd", 5) != 0)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "%s is not a ckptd control"
                        " socket (greeting from '%s')", c->path, package);
    return CTL_EXIT_OK;
}

/* An agent at its client cap closes new connections with one Busy line;
 * idle ones are closed within its handshake timeout, so try again (with a
 * growing pause) until our own timeout says stop. */
static int
ctl_open(struct ctl_ctx *ctx, struct ctl_conn *c)
{
    CLEANUP_JSON json_t *ret = NULL;
    struct timespec deadline = ctl_deadline(c);
    int r, pause_ms = 50;
    bool busy;

    c->ctx = ctx;
    c->next_id = 1;
    for (;;) {
        if (ctl_socket_connect(c) < 0)
            return ctl_fail(CTL_EXIT_UNREACHABLE, "cannot connect to %s: %s",
                            c->path, strerror(errno));
        if ((r = ctl_check_peer(c)) != CTL_EXIT_OK)
            return r;
        r = ctl_check_greeting(c, &deadline, &busy);
        if (!busy)
            break;
        close(c->fd);
        c->fd = -1;
        c->len = 0;
        if (ctl_remaining_ms(c, &deadline) == 0)
            return ctl_fail(CTL_EXIT_BUSY, "the agent at %s has too many clients;"
                            " gave up after %d s", c->path, c->timeout_sec);
        poll(NULL, 0, pause_ms);
        if (pause_ms < 1000)
            pause_ms *= 2;
    }
    if (r != CTL_EXIT_OK)
        return r;
    return ctl_request(c, "qmp_capabilities", NULL, -1, &ret);
}

int
ctl_call(struct ctl_ctx *ctx, const char *command, json_t *args, json_t **ret)
{
    return ctl_call_fd(ctx, command, args, -1, ret);
}

int
ctl_call_fd(struct ctl_ctx *ctx, const char *command, json_t *args, int fd,
            json_t **ret)
{
    *ret = NULL;
    if (!ctx->conn) {
        int r;
        ctx->conn = xcalloc(1, sizeof *ctx->conn);
        ctx->conn->fd = -1;
        ctx->conn->path = ctx->socket_path;
        ctx->conn->timeout_sec = ctx->timeout_sec;
        if ((r = ctl_open(ctx, ctx->conn)) != CTL_EXIT_OK) {
            json_decref(args);
            ctl_disconnect(ctx);
            return r;
        }
    }
    return ctl_request(ctx->conn, command, args, fd, ret);
}

/* The first kept event named name whose data.id is id, taken out. */
static json_t *
ctl_take_event(struct ctl_conn *c, const char *name, const char *id)
{
    size_t i;
    json_t *ev;

    json_array_foreach(c->events, i, ev) {
        json_t *data = json_object_get(ev, "data");
        const char *evname = json_string_value(json_object_get(ev, "event"));
        const char *evid = json_string_value(json_object_get(data, "id"));
        if (evname && strcmp(evname, name) == 0 && evid && strcmp(evid, id) == 0) {
            json_incref(data);
            json_array_remove(c->events, i);
            return data;
        }
    }
    return NULL;
}

int
ctl_wait_event(struct ctl_ctx *ctx, const char *name, const char *id, int ms,
               json_t **data)
{
    struct ctl_conn *c = ctx->conn;
    struct timespec deadline;
    struct pollfd pfd;
    int r;

    *data = NULL;
    if (!c)
        return ctl_fail(CTL_EXIT_UNREACHABLE, "not connected to the agent");
    if ((*data = ctl_take_event(c, name, id)))
        return CTL_EXIT_OK;
    pfd = (struct pollfd) { .fd = c->fd, .events = POLLIN };
    r = poll(&pfd, 1, ms);
    if (r <= 0)
        return CTL_EXIT_OK;             /* nothing yet (or a signal) */
    deadline = ctl_deadline(c);         /* readable: ctl_fill does not wait */
    if ((r = ctl_fill(c, &deadline)) != CTL_EXIT_OK)
        return r;
    for (char *nl; c->len && (nl = memchr(c->buf, '\n', c->len));) {
        json_t *msg;
        if ((r = ctl_take_line(c, nl, &msg)) != CTL_EXIT_OK)
            return r;
        if (msg && json_object_get(msg, "event")) {
            if (!c->events)
                c->events = json_array();
            json_array_append(c->events, msg);
        }
        json_decref(msg);
    }
    *data = ctl_take_event(c, name, id);
    return CTL_EXIT_OK;
}

void
ctl_disconnect(struct ctl_ctx *ctx)
{
    if (!ctx->conn)
        return;
    if (ctx->conn->fd >= 0)
        close(ctx->conn->fd);
    free(ctx->conn->buf);
    json_decref(ctx->conn->events);
    free(ctx->conn);
    ctx->conn = NULL;
}
