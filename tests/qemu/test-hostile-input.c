/* Bad input and limits on the control socket (issue 4, points 5 and 7).
 *
 * Every case runs next to a "witness": a second, well-behaved client that
 * must keep getting correct query-status answers after each attack, and
 * each attack is followed by a valid command on the attacking connection
 * where the protocol says the connection stays usable.
 *
 * framing:        truncated JSON, garbage, 100000-deep nesting, NUL bytes,
 *                 a 900 KiB string, a 2 MiB message
 * wrong-types:    every argument of checkpoint-create/-delete/-list and
 *                 backup-begin with a wrong type, unknown arguments: all
 *                 InvalidParameter, nothing changed in QEMU
 * many-clients:   10,000 clients connecting and vanishing; the agent's fd
 *                 count and RSS come back
 * client-cap:     more than 256 at once: the extra ones get one Busy "too
 *                 many clients" line and are closed, the first ones keep
 *                 working
 * unread-replies: a client that never reads is dropped, alone
 * hung-qemu:      --qmp-timeout 2 and a SIGSTOPped QEMU: errors, not a
 *                 hung agent; after SIGCONT it reconnects and works
 */
#include "tests/qemu/harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define KiB 1024

/* ------------------------------------------------------------- helpers */

/* A harness connection over an already connected fd; reads the greeting.
 * NULL (no failure recorded, fd left open) when the agent closed it or
 * said nothing; then *eof says whether it closed it, at once or after
 * one Busy "too many clients" line. */
static bool conn_busy;      /* the last conn_from_fd got the Busy line */

static struct hq_conn *
conn_from_fd(int fd, const char *path, double timeout, bool *eof)
{
    struct hq_conn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->path = xstrdup(path);
    c->events = json_array();
    c->next_id = 1;
    c->greeting = hq_read_msg(c, timeout);
    const char *cls = hq_err_class(c->greeting);
    conn_busy = cls && strcmp(cls, "Busy") == 0 &&
                strstr(hq_err_desc(c->greeting), "too many clients");
    if (conn_busy) {
        CLEANUP_JSON json_t *more = hq_read_msg(c, timeout);
        c->eof = c->eof && !more;
    }
    if (eof)
        *eof = c->eof;
    if (!c->greeting || !json_object_get(c->greeting, "QMP")) {
        c->fd = -1;
        hq_conn_close(c);
        return NULL;
    }
    return c;
}

static bool
agent_alive(struct hq_vm *vm)
{
    return vm->agent_pid > 0 && kill(vm->agent_pid, 0) == 0 &&
           waitpid(vm->agent_pid, NULL, WNOHANG) == 0;
}

/* The witness still gets a right answer. */
static int
witness_ok(struct hq_vm *vm, struct hq_conn *w, const char *after)
{
    HQ_CHECK(agent_alive(vm), "the agent died after %s", after);
    double t0 = hq_now();
    CLEANUP_JSON json_t *st = hq_cmd(w, "query-status", NULL);
    HQ_CHECK(st, "the witness got no query-status answer after %s", after);
    HQ_CHECK(hq_jstr(st, "qemu") && strcmp(hq_jstr(st, "qemu"), "connected") == 0 &&
             hq_jint(st, "checkpoints") >= 0 && hq_jint(st, "jobs") == 0,
             "witness query-status after %s: %s", after, hq_str(st));
    HQ_CHECK(hq_now() - t0 < 2, "the witness waited %.1f s after %s", hq_now() - t0,
             after);
    return 0;
}

/* Successful replies with id "pre" that errors_then_ok met. */
static int pre_replies;

/* Sends raw bytes then a query-status with id "after"; reads until that
 * reply (a success reply with id "pre" is counted in pre_replies).  Returns the number of error replies seen before it (>= 0), or
 * -1 (with hq_fail) if the reply never came. */
static int
errors_then_ok(struct hq_conn *c, const char *raw, size_t len, const char *what)
{
    if (hq_send_raw(c, raw, len) < 0)
        return -1;
    const char *ok = "\n{\"execute\": \"query-status\", \"id\": \"after\"}\n";
    if (hq_send_raw(c, ok, strlen(ok)) < 0)
        return -1;
    int errors = 0;
    for (;;) {
        CLEANUP_JSON json_t *r = hq_read_reply(c, 10);
        if (!r) {
            hq_fail("%s: no reply to the valid command after it (%s)", what,
                    c->eof ? "connection closed" : "timeout");
            return -1;
        }
        json_t *id = json_object_get(r, "id");
        if (json_is_string(id) && strcmp(json_string_value(id), "after") == 0) {
            if (!json_object_get(r, "return")) {
                hq_fail("%s: the valid command failed: %s", what, hq_str(r));
                return -1;
            }
            return errors;
        }
        if (json_is_string(id) && strcmp(json_string_value(id), "pre") == 0 &&
            json_object_get(r, "return")) {
            pre_replies++;
            continue;
        }
        if (!hq_err_class(r)) {
            hq_fail("%s: a reply that is no error: %s", what, hq_str(r));
            return -1;
        }
        errors++;
    }
}

static int
count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static long
rss_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    CLEANUP_FREE char *s = hq_read_file(path);
    char *p = s ? strstr(s, "VmRSS:") : NULL;
    return p ? strtol(p + 6, NULL, 10) : -1;
}

/* The agent binary is built with ASan (its quarantine keeps freed memory
 * resident, so RSS says little there). */
static bool
agent_has_asan(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int) pid);
    CLEANUP_FREE char *s = hq_read_file(path);
    return s && strstr(s, "libasan");
}

/* Lines of the agent's log containing both a and b. */
static int
log_count(struct hq_vm *vm, const char *a, const char *b)
{
    CLEANUP_FREE char *log = hq_read_file(vm->agent_log);
    int n = 0;
    for (char *line = log ? strtok(log, "\n") : NULL; line; line = strtok(NULL, "\n"))
        n += strstr(line, a) && strstr(line, b);
    return n;
}

static struct hq_vm *
vm_with_witness(struct hq_conn **w)
{
    struct hq_vm *vm = hq_vm_with_agent(2, 64 * MiB, NULL);
    if (!vm)
        return NULL;
    if (!(*w = hq_conn_open(vm->ctl_sock, 10))) {
        hq_vm_free(vm);
        return NULL;
    }
    return vm;
}

/* ---------------------------------------------------------------- cases */

static int
case_framing(void)
{
    CLEANUP_CONN struct hq_conn *w = NULL;
    CLEANUP_VM struct hq_vm *vm = vm_with_witness(&w);
    if (!vm)
        return -1;
    struct hq_conn *c = vm->ctl;
    int e;

    /* Truncated, closed by a bracket: invalid JSON, one error. */
    const char *t1 = "{\"execute\": \"query-status\", \"id\": }\n";
    e = errors_then_ok(c, t1, strlen(t1), "truncated value");
    HQ_CHECK(e == 1, "truncated value: %d errors", e);
    if (witness_ok(vm, w, "a truncated value") < 0)
        return -1;
    const char *t2 = "{\"execute\": \"query-sta}\n\"}\n";   /* string runs on */
    e = errors_then_ok(c, t2, strlen(t2), "truncated string");
    HQ_CHECK(e >= 1, "truncated string: %d errors", e);
    const char *t3 = "{\"execute\": \"query-status\", \"arguments\": {\"a\": [1, 2}]}\n";
    e = errors_then_ok(c, t3, strlen(t3), "mismatched brackets");
    HQ_CHECK(e >= 1, "mismatched brackets: %d errors", e);
    if (witness_ok(vm, w, "truncated JSON") < 0)
        return -1;

    /* Truncated and left open: the client then vanishes. */
    {
        int fd = hq_connect_unix(vm->ctl_sock);
        HQ_CHECK(fd >= 0, "connect: %s", strerror(errno));
        const char *open_msg = "{\"execute\": \"qmp_capabilities\"}\n"
                               "{\"execute\": \"query-status\", \"arguments\": {\"a\": [";
        ssize_t r = write(fd, open_msg, strlen(open_msg));
        hq_sleep_ms(100);
        close(fd);
        HQ_CHECK(r > 0, "write");
        if (witness_ok(vm, w, "an unterminated message and a vanished client") < 0)
            return -1;
    }

    /* Garbage at top level, up to its newline. */
    const char *g = "hello agent\n";
    e = errors_then_ok(c, g, strlen(g), "garbage");
    HQ_CHECK(e == 1, "garbage: %d errors", e);

    /* 100000-deep nesting, balanced. */
    {
        size_t depth = 100000;
        size_t len = 2 * depth + 64;
        CLEANUP_FREE char *deep = xmalloc(len);
        size_t k = (size_t) sprintf(deep, "{\"execute\": \"query-status\", "
                                    "\"arguments\": {\"x\": ");
        size_t prefix = k;
        for (size_t i = 0; i < depth; i++)
            deep[k++] = '[';
        for (size_t i = 0; i < depth; i++)
            deep[k++] = ']';
        deep[k++] = '}';
        deep[k++] = '}';
        deep[k++] = '\n';
        e = errors_then_ok(c, deep, k, "deep nesting");
        HQ_CHECK(e == 1, "deep nesting: %d errors", e);
        /* And a top-level array that deep. */
        e = errors_then_ok(c, deep + prefix, 2 * depth, "deep array");
        HQ_CHECK(e == 1, "deep array: %d errors", e);
        if (witness_ok(vm, w, "100000-deep nesting") < 0)
            return -1;
    }

    /* NUL bytes. */
    {
        static const char in_str[] = "{\"execute\": \"query-status\", \"id\": \"a\0b\"}\n";
        e = errors_then_ok(c, in_str, sizeof in_str - 1, "NUL in a string");
        HQ_CHECK(e == 1, "NUL in a string: %d errors", e);
        static const char in_obj[] = "{\"execute\":\0 \"query-status\"}\n";
        e = errors_then_ok(c, in_obj, sizeof in_obj - 1, "NUL between tokens");
        HQ_CHECK(e == 1, "NUL between tokens: %d errors", e);
        static const char top[] = "\0\0\0\n";
        e = errors_then_ok(c, top, sizeof top - 1, "NUL at top level");
        HQ_CHECK(e == 1, "NUL at top level: %d errors", e);
        static const char cmd[] = "{\"execute\": \"query-sta\0tus\"}\n";
        e = errors_then_ok(c, cmd, sizeof cmd - 1, "NUL in a command name");
        HQ_CHECK(e == 1, "NUL in a command name: %d errors", e);
        /* Escaped (\u0000): valid JSON but no valid name.  jansson and
         * QEMU refuse it as a parse error (GenericError, no id); a reply
         * that names the argument would be InvalidParameter.  Either way
         * nothing is created and the connection goes on. */
        static const char *const esc[] = {
            "{\"execute\": \"checkpoint-create\", \"arguments\": {\"name\": \"a\\u0000b\"}, \"id\": 41}\n",
            "{\"execute\": \"checkpoint-create\", \"arguments\": {\"name\": \"n1\", \"disks\": [\"vda\\u0000x\"]}, \"id\": 42}\n",
            "{\"execute\": \"checkpoint-create\\u0000x\", \"id\": 43}\n",
        };
        for (size_t i = 0; i < ARRAY_SIZE(esc); i++) {
            e = errors_then_ok(c, esc[i], strlen(esc[i]), "an escaped NUL");
            HQ_CHECK(e == 1, "%s: %d errors", esc[i], e);
        }
        CLEANUP_FREE char *names = hq_ckpt_names(c);
        HQ_CHECK(names && !*names, "checkpoints after NUL names: %s", names);
        HQ_CHECK(hq_bitmap_count_prefix(vm, "vda", "") == 0, "bitmaps appeared on vda");
        if (witness_ok(vm, w, "NUL bytes") < 0)
            return -1;
    }

    /* A 900 KiB string: accepted or InvalidParameter, but an answer. */
    {
        size_t n = 900 * KiB;
        CLEANUP_FREE char *big = xmalloc(n + 1);
        memset(big, 'd', n);
        big[n] = 0;
        CLEANUP_JSON json_t *r = hq_exec(c, "checkpoint-create",
                                         json_pack("{s:s,s:s}", "name", "big",
                                                   "description", big));
        HQ_CHECK(r, "no answer to a 900 KiB description");
        const char *cls = hq_err_class(r);
        HQ_CHECK(!cls || strcmp(cls, "InvalidParameter") == 0,
                 "900 KiB description: %s", hq_str(r));
        hq_note("900 KiB description: %s", cls ? hq_err_desc(r) : "accepted");
        if (!cls) {
            CLEANUP_JSON json_t *g2 = hq_ckpt_get(c, "big", false);
            HQ_CHECK(g2 && hq_jstr(g2, "description") &&
                     strlen(hq_jstr(g2, "description")) == n,
                     "the description did not survive");
            CLEANUP_JSON json_t *d = hq_cmd(c, "checkpoint-delete",
                                            json_pack("{s:s}", "name", "big"));
            HQ_CHECK(d, "delete big");
        } else {
            CLEANUP_FREE char *names = hq_ckpt_names(c);
            HQ_CHECK(names && !*names, "a refused checkpoint is listed: %s", names);
        }
        CLEANUP_JSON json_t *r2 = hq_cmd_err(c, "InvalidParameter", "checkpoint-create",
                                             json_pack("{s:s}", "name", big));
        HQ_CHECK(r2, "a 900 KiB checkpoint name");
        /* As an id: echoed verbatim. */
        CLEANUP_FREE char *line = xasprintf("{\"execute\": \"query-version\", \"id\": \"%s\"}\n", big);
        HQ_CHECK(hq_send_raw(c, line, strlen(line)) == 0, "send");
        CLEANUP_JSON json_t *r3 = hq_read_reply(c, 10);
        HQ_CHECK(r3 && json_object_get(r3, "return") && hq_jstr(r3, "id") &&
                 strcmp(hq_jstr(r3, "id"), big) == 0, "900 KiB id not echoed");
        if (witness_ok(vm, w, "900 KiB strings") < 0)
            return -1;
    }

    /* A 2 MiB message: one error, the connection stays usable. */
    {
        size_t n = 2 * MiB;
        CLEANUP_FREE char *msg = xmalloc(n + 128);
        int k = sprintf(msg, "{\"execute\": \"checkpoint-create\", \"arguments\": "
                        "{\"name\": \"huge\", \"description\": \"");
        memset(msg + k, 'h', n);
        strcpy(msg + k + n, "\"}}\n");
        e = errors_then_ok(c, msg, strlen(msg), "2 MiB message");
        HQ_CHECK(e == 1, "2 MiB message: %d errors", e);
        CLEANUP_FREE char *names = hq_ckpt_names(c);
        HQ_CHECK(names && !*names, "the 2 MiB message created something: %s", names);
        /* Packed after a valid message on one line. */
        CLEANUP_FREE char *packed = xasprintf("{\"execute\": \"query-version\", "
                                              "\"id\": \"pre\"}%s", msg);
        pre_replies = 0;
        e = errors_then_ok(c, packed, strlen(packed), "2 MiB after a valid message");
        HQ_CHECK(e == 1 && pre_replies == 1, "a valid message then 2 MiB on one line: "
                 "%d errors, %d replies to the valid one", e, pre_replies);
        if (witness_ok(vm, w, "a 2 MiB message") < 0)
            return -1;
    }
    return 0;
}

/* Each (command, arguments) must be InvalidParameter and change nothing. */
static const char *const bad_args[][2] = {
    { "checkpoint-create", "{\"name\": 1}" },
    { "checkpoint-create", "{\"name\": null}" },
    { "checkpoint-create", "{\"name\": [\"x\"]}" },
    { "checkpoint-create", "{\"name\": \"x\", \"description\": 7}" },
    { "checkpoint-create", "{\"name\": \"x\", \"description\": {}}" },
    { "checkpoint-create", "{\"name\": \"x\", \"disks\": \"vda\"}" },
    { "checkpoint-create", "{\"name\": \"x\", \"disks\": [1]}" },
    { "checkpoint-create", "{\"name\": \"x\", \"disks\": [[\"vda\"]]}" },
    { "checkpoint-create", "{\"name\": \"x\", \"disks\": {\"vda\": true}}" },
    { "checkpoint-create", "{\"name\": \"x\", \"quiesce\": \"yes\"}" },
    { "checkpoint-create", "{\"name\": \"x\", \"quiesce\": 1}" },
    { "checkpoint-create", "{\"name\": \"x\", \"bogus\": 1}" },
    { "checkpoint-create", "{\"name\": \"x\", \"Name\": \"y\"}" },
    { "checkpoint-delete", "{}" },
    { "checkpoint-delete", "{\"name\": 1}" },
    { "checkpoint-delete", "{\"name\": true}" },
    { "checkpoint-delete", "{\"name\": \"base\", \"children\": \"yes\"}" },
    { "checkpoint-delete", "{\"name\": \"base\", \"children\": 1}" },
    { "checkpoint-delete", "{\"name\": \"base\", \"children-only\": \"true\"}" },
    { "checkpoint-delete", "{\"name\": \"base\", \"children-only\": null}" },
    { "checkpoint-delete", "{\"name\": \"base\", \"force\": true}" },
    { "checkpoint-list", "{\"from\": 1}" },
    { "checkpoint-list", "{\"descendants\": \"yes\"}" },
    { "checkpoint-list", "{\"roots\": 1}" },
    { "checkpoint-list", "{\"leaves\": \"1\"}" },
    { "checkpoint-list", "{\"no-leaves\": []}" },
    { "checkpoint-list", "{\"topological\": {}}" },
    { "checkpoint-list", "{\"size\": 0}" },
    { "checkpoint-list", "{\"sort\": true}" },
    { "backup-begin", "{\"mode\": 1}" },
    { "backup-begin", "{\"mode\": \"sideways\"}" },
    { "backup-begin", "{\"incremental\": 1}" },
    { "backup-begin", "{\"incremental\": [\"base\"]}" },
    { "backup-begin", "{\"checkpoint\": \"c9\"}" },
    { "backup-begin", "{\"checkpoint\": {\"name\": 9}}" },
    { "backup-begin", "{\"checkpoint\": {\"name\": \"c9\", \"description\": 9}}" },
    { "backup-begin", "{\"checkpoint\": {\"name\": \"c9\", \"extra\": 9}}" },
    { "backup-begin", "{\"disks\": \"vda\"}" },
    { "backup-begin", "{\"disks\": [7]}" },
    { "backup-begin", "{\"server\": \"unix\"}" },
    { "backup-begin", "{\"server\": {\"transport\": 1}}" },
    { "backup-begin", "{\"server\": {\"transport\": \"unix\", \"path\": 5}}" },
    { "backup-begin", "{\"server\": {\"transport\": \"tcp\", \"host\": 1, \"port\": 10809}}" },
    { "backup-begin", "{\"server\": {\"transport\": \"tcp\", \"host\": \"127.0.0.1\", \"port\": [1]}}" },
    { "backup-begin", "{\"server\": {\"transport\": \"tcp\", \"host\": \"127.0.0.1\", \"port\": 10809, \"tls\": \"no\"}}" },
    { "backup-begin", "{\"server\": {\"transport\": \"unix\", \"path\": \"/x\", \"extra\": 1}}" },
    { "backup-begin", "{\"scratch-dir\": 1}" },
    { "backup-begin", "{\"targets\": \"x\"}" },
    { "backup-begin", "{\"xml\": 1}" },
    { "backup-begin", "{\"bogus\": 1}" },
    { "query-status", "{\"verbose\": true}" },
    { "backup-end", "{\"id\": 1}" },
    { "query-backup", "{\"id\": 1}" },
};

static int
case_wrong_types(void)
{
    CLEANUP_CONN struct hq_conn *w = NULL;
    CLEANUP_VM struct hq_vm *vm = vm_with_witness(&w);
    if (!vm)
        return -1;
    CLEANUP_JSON json_t *base = hq_cmd(vm->ctl, "checkpoint-create",
                                       json_pack("{s:s}", "name", "base"));
    HQ_CHECK(base, "checkpoint-create base");
    HQ_CHECK(hq_write(vm, "vda", 0x61, 0, 64 * KiB) == 0, "write");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *list0 = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(before && list0, "snapshot");
    for (size_t i = 0; i < ARRAY_SIZE(bad_args); i++) {
        json_error_t err;
        json_t *args = json_loads(bad_args[i][1], JSON_DECODE_ANY, &err);
        HQ_CHECK(args, "test table entry %zu: %s", i, err.text);
        CLEANUP_JSON json_t *r = hq_exec(vm->ctl, bad_args[i][0], args);
        HQ_CHECK(r, "%s %s: no reply", bad_args[i][0], bad_args[i][1]);
        const char *cls = hq_err_class(r);
        HQ_CHECK(cls && strcmp(cls, "InvalidParameter") == 0 && *hq_err_desc(r),
                 "%s %s: expected InvalidParameter, got %s", bad_args[i][0],
                 bad_args[i][1], hq_str(r));
    }
    /* "arguments" that is no object: QEMU says GenericError there. */
    static const char *const not_obj[] = { "[\"x\"]", "\"x\"", "1", "null" };
    for (size_t i = 0; i < ARRAY_SIZE(not_obj); i++) {
        CLEANUP_FREE char *line = xasprintf("{\"execute\": \"checkpoint-create\", "
                                            "\"arguments\": %s, \"id\": \"na\"}\n",
                                            not_obj[i]);
        HQ_CHECK(hq_send_raw(vm->ctl, line, strlen(line)) == 0, "send");
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
        const char *cls = hq_err_class(r);
        HQ_CHECK(cls && (strcmp(cls, "InvalidParameter") == 0 ||
                         strcmp(cls, "GenericError") == 0),
                 "arguments %s: %s", not_obj[i], hq_str(r));
    }
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    CLEANUP_JSON json_t *list1 = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(json_equal(list0, list1), "checkpoint-list changed: %s", hq_str(list1));
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(json_is_array(jobs) && json_array_size(jobs) == 0, "jobs: %s", hq_str(jobs));
    CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
    HQ_CHECK(json_array_size(ex) == 0, "exports: %s", hq_str(ex));
    return witness_ok(vm, w, "wrong argument types");
}

/* 10,000 clients connecting and vanishing, half after a partial line. */
static int
case_many_clients(void)
{
    CLEANUP_CONN struct hq_conn *w = NULL;
    CLEANUP_VM struct hq_vm *vm = vm_with_witness(&w);
    if (!vm)
        return -1;
    pid_t pid = vm->agent_pid;
    /* Warm up (first allocations, log buffers) before the baseline. */
    for (int i = 0; i < 200; i++) {
        int fd = hq_connect_unix(vm->ctl_sock);
        if (fd >= 0)
            close(fd);
    }
    if (witness_ok(vm, w, "warm-up") < 0)
        return -1;
    hq_sleep_ms(200);
    int fds0 = count_fds(pid);
    long rss0 = rss_kib(pid);
    int accepted0 = log_count(vm, "debug: client ", " connected");
    HQ_CHECK(fds0 > 0 && rss0 > 0, "cannot read /proc/%d", (int) pid);

    const int total = 10000, batch = 100;
    static const char partial[] = "{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-st";
    double t0 = hq_now();
    int fds[100];
    int connected = 0;
    for (int done = 0; done < total; done += batch) {
        for (int i = 0; i < batch; i++) {
            fds[i] = hq_connect_unix(vm->ctl_sock);
            connected += fds[i] >= 0;
            if (fds[i] >= 0 && (i & 1))
                (void) !send(fds[i], partial, sizeof partial - 1, MSG_NOSIGNAL);
        }
        for (int i = 0; i < batch; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        if (done % 2000 == 0 && witness_ok(vm, w, "a batch of vanishing clients") < 0)
            return -1;
        HQ_CHECK(hq_now() - t0 < 40, "10,000 connections took over 40 s");
    }
    hq_note("%d of %d connections made in %.1f s", connected, total, hq_now() - t0);
    HQ_CHECK(connected == total, "only %d of %d connects succeeded", connected, total);
    /* Each one was accepted by the agent (greeted, or refused over the cap);
     * the last ones may still sit in the listen backlog for a moment. */
    int accepted, refused;
    double seen_by = hq_now() + 5;
    for (;;) {
        accepted = log_count(vm, "debug: client ", " connected") - accepted0;
        refused = log_count(vm, "refused a control client", "clients already");
        if (accepted + refused >= total || hq_now() > seen_by)
            break;
        hq_sleep_ms(100);
    }
    hq_note("the agent logged %d accepted, %d refused over the cap", accepted, refused);
    HQ_CHECK(accepted + refused >= total, "the agent saw only %d of %d clients",
             accepted + refused, total);
    if (witness_ok(vm, w, "10,000 vanishing clients") < 0)
        return -1;
    /* Everything they left is gone once the agent has seen them go. */
    int fds1 = -1;
    double end = hq_now() + 5;
    do {
        hq_sleep_ms(100);
        fds1 = count_fds(pid);
    } while (fds1 > fds0 + 2 && hq_now() < end);
    long rss1 = rss_kib(pid);
    hq_note("agent fds %d -> %d, VmRSS %ld -> %ld KiB", fds0, fds1, rss0, rss1);
    HQ_CHECK(fds1 <= fds0 + 2, "the agent holds %d fds, %d before", fds1, fds0);
    if (agent_has_asan(pid))
        hq_note("ASan build: RSS growth not checked (the quarantine holds freed memory)");
    else
        HQ_CHECK(rss1 - rss0 < 4 * 1024, "the agent's RSS grew by %ld KiB", rss1 - rss0);
    /* Still a working agent for new clients. */
    CLEANUP_CONN struct hq_conn *n = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(n, "a new client after the storm");
    CLEANUP_JSON json_t *v = hq_cmd(n, "query-version", NULL);
    HQ_CHECK(v && hq_jstr(v, "ckptd"), "query-version: %s", hq_str(v));
    return 0;
}

/* More than 256 clients at once. */
static int
case_client_cap(void)
{
    CLEANUP_CONN struct hq_conn *w = NULL;
    CLEANUP_VM struct hq_vm *vm = vm_with_witness(&w);
    if (!vm)
        return -1;
    enum { N = 300, CAP = 256 };
    int existing = 2;    /* vm->ctl and the witness */
    static struct hq_conn *conns[N];
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = hq_connect_unix(vm->ctl_sock);
        HQ_CHECK(fds[i] >= 0, "connect %d: %s", i, strerror(errno));
    }
    int greeted = 0, first_refused = -1, refused = 0, ret = 0;
    for (int i = 0; i < N; i++) {
        bool eof = false;
        conns[i] = conn_from_fd(fds[i], vm->ctl_sock, 3, &eof);
        if (conns[i])
            greeted++;
        else {
            refused++;
            if (first_refused < 0)
                first_refused = i;
            if ((!eof || !conn_busy) && !ret)
                ret = (hq_fail("client #%d got neither a greeting nor a Busy line "
                               "then EOF", i), -1);
        }
    }
    hq_note("%d greeted, %d refused (first refused: #%d)", greeted, refused, first_refused);
    if (greeted != CAP - existing || first_refused != CAP - existing)
        ret = (hq_fail("expected the first %d clients greeted and the rest closed; "
                       "%d greeted, first refused #%d", CAP - existing, greeted,
                       first_refused), -1);
    /* The first ones still work, with events going to all of them. */
    int probe[] = { 0, 1, CAP / 2, CAP - existing - 1 };
    for (size_t k = 0; !ret && k < ARRAY_SIZE(probe); k++) {
        struct hq_conn *c = conns[probe[k]];
        CLEANUP_JSON json_t *caps = c ? hq_cmd(c, "qmp_capabilities", NULL) : NULL;
        CLEANUP_JSON json_t *st = caps ? hq_cmd(c, "query-status", NULL) : NULL;
        if (!st || !hq_jstr(st, "qemu"))
            ret = (hq_fail("client #%d no longer works: %s", probe[k], hq_str(st)), -1);
    }
    if (!ret && witness_ok(vm, w, "300 clients") < 0)
        ret = -1;
    if (!ret) {
        CLEANUP_JSON json_t *c1 = hq_cmd(w, "checkpoint-create",
                                         json_pack("{s:s}", "name", "cap1"));
        if (!c1)
            ret = -1;   /* hq_cmd said why */
        for (size_t k = 0; !ret && k < ARRAY_SIZE(probe); k++) {
            CLEANUP_JSON json_t *ev = hq_wait_event_named(conns[probe[k]],
                                                          "CHECKPOINT_CREATED", "cap1", 5);
            if (!ev) {
                ret = (hq_fail("client #%d got no CHECKPOINT_CREATED", probe[k]), -1);
                break;
            }
        }
    }
    for (int i = 0; i < N; i++) {
        if (conns[i])
            hq_conn_close(conns[i]);
        else
            close(fds[i]);
    }
    if (ret)
        return ret;
    /* Room again once they are gone. */
    double end = hq_now() + 5;
    struct hq_conn *again = NULL;
    while (!again && hq_now() < end) {
        int fd = hq_connect_unix(vm->ctl_sock);
        again = fd >= 0 ? conn_from_fd(fd, vm->ctl_sock, 1, NULL) : NULL;
        if (!again) {
            if (fd >= 0)
                close(fd);
            hq_sleep_ms(100);
        }
    }
    HQ_CHECK(again, "no client accepted after the 300 left");
    hq_conn_close(again);
    return witness_ok(vm, w, "300 clients leaving");
}

/* A client that sends requests and never reads the replies. */
static int
case_unread_replies(void)
{
    CLEANUP_CONN struct hq_conn *w = NULL;
    CLEANUP_VM struct hq_vm *vm = vm_with_witness(&w);
    if (!vm)
        return -1;
    int fds0 = count_fds(vm->agent_pid);
    CLEANUP_CONN struct hq_conn *c = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(c, "connect the flooder");
    static const char req[] = "{\"execute\": \"query-commands\"}\n";
    size_t chunk_len = 256 * KiB / (sizeof req - 1) * (sizeof req - 1);
    CLEANUP_FREE char *chunk = xmalloc(chunk_len);
    for (size_t k = 0; k < chunk_len; k += sizeof req - 1)
        memcpy(chunk + k, req, sizeof req - 1);
    size_t sent = 0, goal = 20 * MiB, off = 0;
    double t0 = hq_now(), last_check = t0;
    bool dropped = false;
    while (sent < goal && hq_now() - t0 < 30) {
        struct pollfd p = { c->fd, POLLOUT, 0 };
        poll(&p, 1, 100);
        ssize_t n = send(c->fd, chunk + off, chunk_len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            dropped = true;
            break;
        }
        if (n > 0) {
            sent += (size_t) n;
            off = (off + (size_t) n) % chunk_len;
        }
        if (hq_now() - last_check > 0.5) {
            last_check = hq_now();
            if (witness_ok(vm, w, "a client flooding requests") < 0)
                return -1;
        }
    }
    hq_note("sent %zu KiB of requests in %.1f s, %s", sent / KiB, hq_now() - t0,
            dropped ? "then the agent dropped the client" : "without being dropped");
    /* What the agent had sent is still there to read; then EOF. */
    size_t got = 0;
    char buf[65536];
    double end = hq_now() + 15;
    for (;;) {
        struct pollfd p = { c->fd, POLLIN, 0 };
        if (poll(&p, 1, 1000) <= 0) {
            if (hq_now() > end)
                break;
            continue;
        }
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n <= 0) {
            dropped = dropped || n == 0 || errno == ECONNRESET;
            break;
        }
        got += (size_t) n;
    }
    hq_note("read back %zu KiB of replies", got / KiB);
    HQ_CHECK(dropped, "the client that never read was not dropped "
             "(sent %zu KiB, read %zu KiB)", sent / KiB, got / KiB);
    HQ_CHECK(got <= 40 * MiB, "the agent queued %zu KiB for one client", got / KiB);
    if (witness_ok(vm, w, "dropping the flooder") < 0)
        return -1;
    int fds1 = -1;
    end = hq_now() + 5;
    do {
        hq_sleep_ms(100);
        fds1 = count_fds(vm->agent_pid);
    } while (fds1 > fds0 && hq_now() < end);
    HQ_CHECK(fds1 <= fds0, "the agent holds %d fds, %d before", fds1, fds0);
    return 0;
}

/* QEMU stops answering: --qmp-timeout turns that into errors. */
static int
case_hung_qemu(void)
{
    const char *extra[] = { "--qmp-timeout", "2", NULL };
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(2, 64 * MiB, extra);
    if (!vm)
        return -1;
    CLEANUP_CONN struct hq_conn *w = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(w, "witness");
    CLEANUP_JSON json_t *c0 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c0"));
    HQ_CHECK(c0, "checkpoint-create c0");

    HQ_CHECK(kill(vm->qemu_pid, SIGSTOP) == 0, "SIGSTOP QEMU");
    double t0 = hq_now();
    HQ_CHECK(hq_send_json(vm->ctl, json_pack("{s:s,s:{s:s},s:s}", "execute",
                                             "checkpoint-create", "arguments",
                                             "name", "c1", "id", "hung")) == 0, "send");
    /* The witness is not held up by the command waiting for QEMU: what
     * needs no QEMU answers at once; what asks QEMU itself (query-status
     * reads the run state) is bounded by the timeout. */
    hq_sleep_ms(200);
    {
        double tw = hq_now();
        CLEANUP_JSON json_t *v = hq_cmd(w, "query-version", NULL);
        HQ_CHECK(v && hq_jstr(v, "ckptd"), "query-version while QEMU hangs: %s", hq_str(v));
        HQ_CHECK(hq_now() - tw < 0.5, "query-version waited %.1f s behind a hung QEMU",
                 hq_now() - tw);
        tw = hq_now();
        CLEANUP_JSON json_t *st = hq_cmd(w, "query-status", NULL);
        HQ_CHECK(st && hq_jstr(st, "qemu"), "query-status while QEMU hangs: %s", hq_str(st));
        hq_note("while QEMU hangs: query-status took %.1f s: %s", hq_now() - tw, hq_str(st));
        HQ_CHECK(hq_now() - tw < 3.5, "query-status waited %.1f s (--qmp-timeout 2)",
                 hq_now() - tw);
    }
    CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
    double took = hq_now() - t0;
    HQ_CHECK(r, "no answer to checkpoint-create within 10 s of a hung QEMU");
    hq_note("checkpoint-create on a hung QEMU: %.1f s: %s", took, hq_str(r));
    HQ_CHECK(hq_err_class(r) && *hq_err_desc(r), "checkpoint-create on a hung QEMU "
             "did not fail: %s", hq_str(r));
    HQ_CHECK(took < 5.5, "the error took %.1f s (--qmp-timeout 2)", took);
    {
        double tw = hq_now();
        CLEANUP_JSON json_t *st = hq_cmd(w, "query-status", NULL);
        HQ_CHECK(st && hq_jstr(st, "qemu"), "the witness after the timeout: %s", hq_str(st));
        hq_note("after the timeout: %s", hq_str(st));
        HQ_CHECK(hq_now() - tw < 3.5, "query-status after the timeout took %.1f s",
                 hq_now() - tw);
        /* Another command that needs QEMU also errors out, in bounded time. */
        double t1 = hq_now();
        CLEANUP_JSON json_t *r2 = hq_exec(w, "checkpoint-create",
                                          json_pack("{s:s}", "name", "c1b"));
        HQ_CHECK(r2 && hq_err_class(r2), "a second create on a hung QEMU: %s", hq_str(r2));
        HQ_CHECK(hq_now() - t1 < 5.5, "the second create took %.1f s", hq_now() - t1);
    }
    /* Stays stopped for a while: no busy loop, still answering. */
    hq_sleep_ms(1500);
    HQ_CHECK(agent_alive(vm), "the agent died while QEMU was stopped");

    HQ_CHECK(kill(vm->qemu_pid, SIGCONT) == 0, "SIGCONT QEMU");
    double end = hq_now() + 15;
    for (;;) {
        CLEANUP_JSON json_t *st = hq_cmd(w, "query-status", NULL);
        HQ_CHECK(st, "query-status");
        if (hq_jstr(st, "qemu") && strcmp(hq_jstr(st, "qemu"), "connected") == 0) {
            CLEANUP_JSON json_t *c2 = hq_exec(w, "checkpoint-create",
                                              json_pack("{s:s}", "name", "c2"));
            if (c2 && json_object_get(c2, "return"))
                break;
            HQ_CHECK(hq_now() < end, "checkpoint-create after SIGCONT: %s", hq_str(c2));
        }
        HQ_CHECK(hq_now() < end, "the agent is not back on QEMU 15 s after SIGCONT: %s",
                 hq_str(st));
        hq_sleep_ms(200);
    }
    /* The tree is whole: each checkpoint on both disks, one recording. */
    CLEANUP_JSON json_t *l = hq_cmd(w, "checkpoint-list", NULL);
    CLEANUP_FREE char *names = hq_ckpt_names(w);
    hq_note("checkpoints after SIGCONT: %s", names);
    HQ_CHECK(json_array_size(l) >= 2, "checkpoints: %s", names);
    HQ_CHECK(strcmp(hq_jstr(json_array_get(l, json_array_size(l) - 1), "name"), "c2") == 0,
             "c2 is not the newest: %s", names);
    size_t i;
    json_t *c;
    json_array_foreach(l, i, c) {
        HQ_CHECK(json_array_size(json_object_get(c, "disks")) == 2,
                 "%s is not on both disks: %s", hq_jstr(c, "name"), hq_str(c));
        for (int d = 0; d < 2; d++) {
            const char *disk = d ? "vdb" : "vda";
            int rec = hq_bitmap_recording(vm, disk, hq_jstr(c, "name"));
            HQ_CHECK(rec == (i + 1 == json_array_size(l)), "%s on %s: recording %d",
                     hq_jstr(c, "name"), disk, rec);
        }
    }
    for (int d = 0; d < 2; d++)
        HQ_CHECK(hq_bitmap_count_prefix(vm, d ? "vdb" : "vda", "ckptd:") == 0,
                 "temporary bitmaps left");
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(st && strcmp(hq_jstr(st, "qemu"), "connected") == 0,
             "the first client after SIGCONT: %s", hq_str(st));
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "framing", case_framing },
        { "wrong-types", case_wrong_types },
        { "many-clients", case_many_clients },
        { "client-cap", case_client_cap },
        { "unread-replies", case_unread_replies },
        { "hung-qemu", case_hung_qemu },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
