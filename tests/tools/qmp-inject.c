/* qmp-inject: a QMP proxy that injects QEMU's failures, for tests.
 *
 *   qmp-inject LISTEN UPSTREAM RULES LOG
 *
 * The agent connects to LISTEN instead of QEMU's monitor; every line is
 * passed on to UPSTREAM (the real QEMU) and back, unless a rule says
 * otherwise.  In the spirit of nbdkit's error filter, but scripted: the
 * real QEMU does the real work, and the test picks the one step that
 * fails.  Each command the agent sends is appended to LOG as
 * "N NAME" (N counts from 1 for the proxy's life), so a test can first
 * record a request's sequence of commands, then fail each step in turn.
 *
 * RULES is a file, re-read whenever its contents change; each change
 * starts the occurrence counts again.  One rule a line:
 *   fail CMD N        the Nth CMD from now is answered with a GenericError
 *                     and never reaches QEMU
 *   close CMD N       the Nth CMD reaches QEMU; once QEMU answers, both
 *                     connections are closed before the agent sees it
 *   signal CMD N PID SIG   before the Nth CMD is passed on, PID gets SIG
 *   hold CMD N        the Nth CMD waits until RULES changes again (later
 *                     commands pass: the agent matches replies by id);
 *                     RULES.held exists while it waits
 *   hold-rest CMD N   the same, and the commands after it wait behind it,
 *                     in order, as QEMU would run them (the agent sends a
 *                     step's commands and the next steps' together)
 * A descriptor the agent passes (SCM_RIGHTS) goes on with the next add-fd
 * or getfd line (closed when that line is failed or held).
 * A test writes RULES with rename(2), so that a rule is never half read.
 * The proxy serves one agent connection at a time and accepts the next
 * one when it ends (the agent reconnects, as after QEMU restarts). */
#include "common/common.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <jansson.h>

#define MAX_RULES 16
#define BUF_MAX (4u << 20)

enum rule_kind { RULE_FAIL, RULE_CLOSE, RULE_SIGNAL, RULE_HOLD, RULE_HOLD_REST };

struct rule {
    enum rule_kind kind;
    char cmd[64];
    long nth;
    long seen;
    int pid, sig;
};

struct buf {
    char *data;
    size_t len;
};

struct proxy {
    const char *rules_path, *log_path;
    char held_path[4096];       /* RULES.held exists while a command waits */
    char *rules_text;
    struct rule rules[MAX_RULES];
    int nrules;
    bool holding;               /* a hold rule matched: held is waiting */
    bool hold_rest;             /* and the lines after it wait too */
    char *held;                 /* the held command line */
    size_t held_len;
    bool close_on_reply;        /* a close rule matched: close after reply */
    long counter;
    FILE *log;
};

static int
unix_socket(const char *path, bool listen_on)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (listen_on) {
        unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, 4) < 0) {
            close(fd);
            return -1;
        }
    } else if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static char *
read_whole(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* Re-reads the rules when the file changed; a change releases a hold.
 * True when it changed. */
static bool
load_rules(struct proxy *p)
{
    char *text = read_whole(p->rules_path);
    if (p->rules_text && strcmp(text, p->rules_text) == 0) {
        free(text);
        return false;
    }
    /* The copy kept for comparing is of the text parsed: reading the file
     * again after parsing could see a newer version, which would then
     * count as loaded without ever being parsed. */
    free(p->rules_text);
    p->rules_text = strdup(text);
    p->nrules = 0;
    if (p->holding)
        unlink(p->held_path);
    p->holding = false;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && p->nrules < MAX_RULES;
         line = strtok_r(NULL, "\n", &save)) {
        struct rule r = { 0 };
        char kind[16];
        int got = sscanf(line, "%15s %63s %ld %d %d", kind, r.cmd, &r.nth, &r.pid, &r.sig);
        if (got < 3)
            continue;
        if (strcmp(kind, "fail") == 0)
            r.kind = RULE_FAIL;
        else if (strcmp(kind, "close") == 0)
            r.kind = RULE_CLOSE;
        else if (strcmp(kind, "signal") == 0 && got == 5)
            r.kind = RULE_SIGNAL;
        else if (strcmp(kind, "hold") == 0)
            r.kind = RULE_HOLD;
        else if (strcmp(kind, "hold-rest") == 0)
            r.kind = RULE_HOLD_REST;
        else
            continue;
        p->rules[p->nrules++] = r;
    }
    free(text);
    return true;
}

static void
buf_add(struct buf *b, const char *data, size_t len)
{
    if (b->len + len > BUF_MAX) {
        fprintf(stderr, "qmp-inject: buffer overflow\n");
        exit(2);
    }
    b->data = realloc(b->data, b->len + len + 1);
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void
buf_drop(struct buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* Descriptors the agent passed (SCM_RIGHTS), in order.  A read ends
 * with the bytes a descriptor came with but may start with earlier lines
 * (Linux), so the next add-fd or getfd line takes the oldest, as QEMU
 * would give it to that command. */
#define MAX_FDS 16
struct fdq_entry {
    int fd;
};
struct fdq {
    struct fdq_entry q[MAX_FDS];
    int n;
};

/* The oldest descriptor for a line that takes one, or -1. */
static int
fdq_take(struct fdq *f, const char *line, size_t len)
{
    if (f->n == 0 || !(memmem(line, len, "\"add-fd\"", 8) || memmem(line, len, "\"getfd\"", 7)))
        return -1;
    int fd = f->q[0].fd;
    memmove(f->q, f->q + 1, (size_t) --f->n * sizeof f->q[0]);
    return fd;
}

static ssize_t
read_fds(int fd, char *data, size_t len, struct fdq *f)
{
    union {
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { data, len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf };
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm;
         cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
            int got;
            memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof got);
            if (f->n < MAX_FDS)
                f->q[f->n++] = (struct fdq_entry) { got };
            else
                close(got);
        }
    }
    return n;
}

static int write_all(int fd, const char *data, size_t len);

/* A line with a descriptor attached to its first byte. */
static int
write_with_fd(int sock, const char *data, size_t len, int fd)
{
    ssize_t n = fd_send(sock, data, len, fd);
    close(fd);
    if (n <= 0)
        return -1;
    return write_all(sock, data + n, len - (size_t) n);
}

static int
write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t) n;
    }
    return 0;
}

/* What to do with one command line from the agent. */
enum verdict { PASS, FAIL, HOLD };

static enum verdict
judge(struct proxy *p, const char *line, size_t len, json_t **id)
{
    json_t *msg = json_loadb(line, len, 0, NULL);
    const char *cmd = json_string_value(json_object_get(msg, "execute"));
    *id = json_incref(json_object_get(msg, "id"));
    enum verdict v = PASS;
    if (cmd) {
        for (int i = 0; i < p->nrules; i++) {
            struct rule *r = &p->rules[i];
            if (strcmp(r->cmd, cmd) != 0 || ++r->seen != r->nth)
                continue;
            if (r->kind == RULE_FAIL)
                v = FAIL;
            else if (r->kind == RULE_CLOSE)
                p->close_on_reply = true;
            else if (r->kind == RULE_SIGNAL)
                kill(r->pid, r->sig);
            else if ((r->kind == RULE_HOLD || r->kind == RULE_HOLD_REST) &&
                     !p->holding) {
                r->seen--;      /* counted again when released */
                p->holding = true;
                p->hold_rest = r->kind == RULE_HOLD_REST;
                v = HOLD;
                FILE *f = fopen(p->held_path, "w");
                if (f)
                    fclose(f);
            }
        }
        if (v != HOLD) {
            fprintf(p->log, "%ld %s%s\n", ++p->counter, cmd,
                    v == FAIL ? " (failed)" : "");
            fflush(p->log);
        }
    }
    json_decref(msg);
    return v;
}

/* Forwards agent lines upstream, applying the rules; -1 ends the session. */
static int
agent_lines(struct proxy *p, struct buf *in, struct fdq *fds, int agent, int qemu)
{
    char *nl;
    while (!(p->held && p->hold_rest) && (nl = memchr(in->data, '\n', in->len))) {
        size_t len = (size_t) (nl - in->data) + 1;
        json_t *id = NULL;
        enum verdict v = judge(p, in->data, len, &id);
        int fd = fdq_take(fds, in->data, len);
        if (fd >= 0 && v != PASS) {
            close(fd);
            fd = -1;
        }
        if (v == HOLD) {
            json_decref(id);
            p->held = malloc(len);
            memcpy(p->held, in->data, len);
            p->held_len = len;
            buf_drop(in, len);
            continue;
        }
        int r = 0;
        if (v == FAIL) {
            json_t *err = json_pack("{s:{s:s,s:s}}", "error", "class", "GenericError",
                                    "desc", "failure injected by the test");
            if (id)
                json_object_set(err, "id", id);
            char *text = json_dumps(err, JSON_COMPACT);
            r = write_all(agent, text, strlen(text)) < 0 || write_all(agent, "\r\n", 2) < 0;
            free(text);
            json_decref(err);
        } else if (fd >= 0) {
            r = write_with_fd(qemu, in->data, len, fd);
        } else {
            r = write_all(qemu, in->data, len);
        }
        json_decref(id);
        buf_drop(in, len);
        if (r)
            return -1;
    }
    return 0;
}

/* Passes QEMU's lines to the agent; a close rule ends the session right
 * after QEMU's reply to that command (before the agent can read it). */
static int
qemu_lines(struct proxy *p, struct buf *in, int agent)
{
    char *nl;
    while ((nl = memchr(in->data, '\n', in->len))) {
        size_t len = (size_t) (nl - in->data) + 1;
        bool reply = memmem(in->data, len, "\"return\"", 8) ||
                     memmem(in->data, len, "\"error\"", 7);
        if (reply && p->close_on_reply) {
            p->close_on_reply = false;
            return -1;
        }
        if (write_all(agent, in->data, len) < 0)
            return -1;
        buf_drop(in, len);
    }
    return 0;
}

static void
serve(struct proxy *p, int agent, const char *upstream)
{
    int qemu = unix_socket(upstream, false);
    if (qemu < 0) {
        close(agent);
        return;
    }
    struct buf from_agent = { 0 }, from_qemu = { 0 };
    struct fdq agent_fds = { .n = 0 };
    char chunk[65536];
    for (;;) {
        if (load_rules(p) && p->held) {
            int r = write_all(qemu, p->held, p->held_len);
            free(p->held);
            p->held = NULL;
            if (r < 0)
                break;
        }
        if (agent_lines(p, &from_agent, &agent_fds, agent, qemu) < 0)
            break;
        struct pollfd fds[2] = { { agent, POLLIN, 0 },
                                 { qemu, POLLIN, 0 } };
        if (poll(fds, 2, 20) < 0 && errno != EINTR)
            break;
        bool gone = false;
        for (int i = 0; i < 2 && !gone; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = i == 0 ? read_fds(agent, chunk, sizeof chunk, &agent_fds)
                               : read(fds[i].fd, chunk, sizeof chunk);
            if (n <= 0) {
                gone = true;
                break;
            }
            buf_add(i == 0 ? &from_agent : &from_qemu, chunk, (size_t) n);
            if (i == 1 && qemu_lines(p, &from_qemu, agent) < 0)
                gone = true;
        }
        if (gone)
            break;
    }
    p->close_on_reply = false;
    free(p->held);
    p->held = NULL;
    for (int i = 0; i < agent_fds.n; i++)
        close(agent_fds.q[i].fd);
    free(from_agent.data);
    free(from_qemu.data);
    close(agent);
    close(qemu);
}

int
main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: qmp-inject LISTEN UPSTREAM RULES LOG\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlives the test */
    struct proxy p = { .rules_path = argv[3], .log_path = argv[4] };
    snprintf(p.held_path, sizeof p.held_path, "%s.held", argv[3]);
    p.log = fopen(argv[4], "a");
    int lfd = unix_socket(argv[1], true);
    if (lfd < 0 || !p.log) {
        fprintf(stderr, "qmp-inject: cannot listen on %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    for (;;) {
        int agent = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (agent < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        serve(&p, agent, argv[2]);
    }
}
