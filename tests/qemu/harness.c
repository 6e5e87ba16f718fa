/* The shared helper of the QEMU integration tests; see harness.h. */
#include "tests/qemu/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define HQ_TIMEOUT 10.0          /* seconds for any single QMP exchange */
#define HQ_MAX_LIVE 16

/* ---------------------------------------------------------------- runner */

static const char *cur_case = "";
static bool cur_failed;
static char cur_reason[1024];
static bool cur_skipped;
static char cur_skip_reason[512];
static int n_passed, n_failed, n_skipped;

/* VMs alive now, so that exit and signals can kill and remove them. */
static struct hq_vm *live[HQ_MAX_LIVE];

double
hq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
hq_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void __attribute__((format(printf, 2, 0)))
vfail(const char *prefix, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!cur_failed) {
        cur_failed = true;
        snprintf(cur_reason, sizeof cur_reason, "%s%s", prefix, msg);
    } else {
        /* Later failures are often consequences, but worth seeing. */
        printf("# also: %s%s\n", prefix, msg);
    }
}

void
hq_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail("", fmt, ap);
    va_end(ap);
}

void
hq_fail_at(int line, const char *cond, const char *fmt, ...)
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "line %d: ", line);
    (void) cond;
    va_list ap;
    va_start(ap, fmt);
    vfail(prefix, fmt, ap);
    va_end(ap);
}

void
hq_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!cur_skipped)
        vsnprintf(cur_skip_reason, sizeof cur_skip_reason, fmt, ap);
    cur_skipped = true;
    va_end(ap);
}

bool
hq_failed(void)
{
    return cur_failed;
}

void
hq_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st; (void) flag; (void) ftw;
    remove(path);
    return 0;
}

static void
rm_tree(const char *dir)
{
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Safe in a signal handler except for rm_tree, which is best effort. */
static void
kill_all_live(bool remove_dirs)
{
    for (int i = 0; i < HQ_MAX_LIVE; i++) {
        struct hq_vm *vm = live[i];
        if (!vm)
            continue;
        if (vm->agent_pid > 0)
            kill(vm->agent_pid, SIGKILL);
        if (vm->qemu_pid > 0)
            kill(vm->qemu_pid, SIGKILL);
        if (vm->agent_pid > 0)
            waitpid(vm->agent_pid, NULL, 0);
        if (vm->qemu_pid > 0)
            waitpid(vm->qemu_pid, NULL, 0);
        vm->agent_pid = vm->qemu_pid = 0;
        if (remove_dirs)
            rm_tree(vm->dir);
    }
}

static void
at_exit(void)
{
    kill_all_live(true);
}

static void
put_str(const char *s)
{
    ssize_t r = write(STDOUT_FILENO, s, strlen(s));
    (void) r;
}

static void
put_int(int v)
{
    char b[16];
    int i = sizeof b;
    b[--i] = 0;
    do {
        b[--i] = '0' + v % 10;
        v /= 10;
    } while (v && i > 0);
    put_str(&b[i]);
}

/* The case watchdog and fatal signals: kill children, remove the
 * directories, still print a result line and the summary. */
static void
on_signal(int sig)
{
    kill_all_live(true);
    put_str("FAIL ");
    put_str(cur_case);
    put_str(sig == SIGALRM ? ": watchdog timeout\n" : ": killed by signal\n");
    put_int(n_passed);
    put_str(" passed, ");
    put_int(n_failed + 1);
    put_str(" failed\n");
    signal(sig, SIG_DFL);
    if (sig == SIGALRM || sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
        _exit(1);
    raise(sig);
}

static void
setup_process(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    /* Not SIGSEGV/SIGBUS: ASan's own report of a crash is worth more, and
     * PR_SET_PDEATHSIG still takes the children down with us. */
    int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGALRM, SIGABRT };
    for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
        signal(sigs[i], on_signal);
    atexit(at_exit);
}

int
hq_run(const struct hq_case *cases, size_t n)
{
    setup_process();
    const char *only = getenv("HQ_ONLY");
    const char *t = getenv("HQ_CASE_TIMEOUT");
    unsigned timeout = t ? (unsigned) atoi(t) : 90;
    for (size_t i = 0; i < n; i++) {
        if (only && *only && strcmp(only, cases[i].name) != 0)
            continue;
        cur_case = cases[i].name;
        cur_failed = false;
        cur_reason[0] = 0;
        cur_skipped = false;
        cur_skip_reason[0] = 0;
        alarm(timeout);
        int r = cases[i].fn();
        alarm(0);
        if (r != 0 && !cur_failed)
            hq_fail("the case returned %d without a reason", r);
        if (cur_failed) {
            printf("FAIL %s: %s\n", cur_case, cur_reason);
            n_failed++;
        } else if (cur_skipped) {
            printf("SKIP %s: %s\n", cur_case, cur_skip_reason);
            n_skipped++;
        } else {
            printf("PASS %s\n", cur_case);
            n_passed++;
        }
    }
    if (n_skipped)
        printf("%d passed, %d failed, %d skipped\n", n_passed, n_failed,
               n_skipped);
    else
        printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}

/* ------------------------------------------------------------ JSON bits */

const char *
hq_jstr(json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int64_t
hq_jint(json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_integer(v) ? (int64_t) json_integer_value(v) : -1;
}

int
hq_jbool(json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : -1;
}

json_t *
hq_jfind(json_t *arr, const char *key, const char *val)
{
    size_t i;
    json_t *e;
    if (!json_is_array(arr))
        return NULL;
    json_array_foreach(arr, i, e) {
        const char *s = hq_jstr(e, key);
        if (s && strcmp(s, val) == 0)
            return e;
    }
    return NULL;
}

const char *
hq_str(json_t *j)
{
    static char buf[600];
    if (!j)
        return "(null)";
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    snprintf(buf, sizeof buf, "%s", s ? s : "(unprintable)");
    if (s && strlen(s) >= sizeof buf)
        strcpy(buf + sizeof buf - 5, "...");
    free(s);
    return buf;
}

const char *
hq_err_class(json_t *reply)
{
    json_t *e = json_is_object(reply) ? json_object_get(reply, "error") : NULL;
    return hq_jstr(e, "class");
}

const char *
hq_err_desc(json_t *reply)
{
    json_t *e = json_is_object(reply) ? json_object_get(reply, "error") : NULL;
    const char *d = hq_jstr(e, "desc");
    return d ? d : "";
}

/* ------------------------------------------------------------------ qmp */

int
hq_connect_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static bool
pid_alive(pid_t pid)
{
    return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

/* Connects, retrying while the socket is not there yet; gives up early
 * when the process that should create it (watch, if > 0) is gone. */
static struct hq_conn *
conn_open_watch(const char *path, double timeout, pid_t watch)
{
    double end = hq_now() + timeout;
    int fd;
    while ((fd = hq_connect_unix(path)) < 0) {
        if (hq_now() > end) {
            hq_fail("cannot connect to %s: %s", path, strerror(errno));
            return NULL;
        }
        if (watch > 0 && !pid_alive(watch)) {
            hq_fail("process %d exited before %s answered", (int) watch, path);
            return NULL;
        }
        hq_sleep_ms(20);
    }
    struct hq_conn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->path = xstrdup(path);
    c->events = json_array();
    c->next_id = 1;
    c->greeting = hq_read_msg(c, HQ_TIMEOUT);
    if (!c->greeting || !json_object_get(c->greeting, "QMP")) {
        hq_fail("no QMP greeting on %s: %s", path, hq_str(c->greeting));
        hq_conn_close(c);
        return NULL;
    }
    return c;
}

struct hq_conn *
hq_conn_open_raw(const char *path, double timeout)
{
    return conn_open_watch(path, timeout, 0);
}

static struct hq_conn *
negotiate(struct hq_conn *c)
{
    if (!c)
        return NULL;
    CLEANUP_JSON json_t *r = hq_cmd(c, "qmp_capabilities", NULL);
    if (!r) {
        hq_conn_close(c);
        return NULL;
    }
    return c;
}

struct hq_conn *
hq_conn_open(const char *path, double timeout)
{
    return negotiate(conn_open_watch(path, timeout, 0));
}

void
hq_conn_close(struct hq_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->path);
    free(c->buf);
    json_decref(c->greeting);
    json_decref(c->events);
    free(c);
}

int
hq_send_raw(struct hq_conn *c, const char *data, size_t len)
{
    double end = hq_now() + HQ_TIMEOUT;
    while (len > 0) {
        struct pollfd p = { .fd = c->fd, .events = POLLOUT };
        int ms = (int) ((end - hq_now()) * 1000);
        if (ms <= 0 || poll(&p, 1, ms) <= 0) {
            hq_fail("sending %zu bytes to %s timed out", len, c->path);
            return -1;
        }
        ssize_t r = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r < 0) {
            hq_fail("send to %s: %s", c->path, strerror(errno));
            return -1;
        }
        data += r;
        len -= (size_t) r;
    }
    return 0;
}

int
hq_send_json(struct hq_conn *c, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!s) {
        hq_fail("cannot encode a message");
        return -1;
    }
    CLEANUP_FREE char *line = xasprintf("%s\n", s);
    free(s);
    return hq_send_raw(c, line, strlen(line));
}

/* Takes one complete JSON value off the buffer if a full line is there.
 * Several values packed into one line are taken one at a time. */
static json_t *
take_buffered(struct hq_conn *c)
{
    for (;;) {
        if (c->len == 0)
            return NULL;
        size_t skip = 0;
        while (skip < c->len && strchr(" \t\r\n", c->buf[skip]))
            skip++;
        memmove(c->buf, c->buf + skip, c->len - skip);
        c->len -= skip;
        char *nl = memchr(c->buf, '\n', c->len);
        if (!nl)
            return NULL;
        size_t line = (size_t) (nl - c->buf) + 1;
        json_error_t err;
        json_t *j = json_loadb(c->buf, line, JSON_DISABLE_EOF_CHECK, &err);
        size_t used = j ? (size_t) err.position : line;
        if (used == 0 || used > line)
            used = line;
        if (!j)
            hq_fail("bad JSON from %s: %s: %.*s", c->path, err.text,
                    (int) (line > 200 ? 200 : line), c->buf);
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        if (j)
            return j;
    }
}

json_t *
hq_read_msg(struct hq_conn *c, double timeout)
{
    double end = hq_now() + timeout;
    for (;;) {
        json_t *j = take_buffered(c);
        if (j)
            return j;
        if (c->eof)
            return NULL;
        int ms = (int) ((end - hq_now()) * 1000);
        if (ms < 0)
            return NULL;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            c->buf = xrealloc(c->buf, c->cap);
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->eof = true;
            continue;
        }
        c->len += (size_t) n;
    }
}

json_t *
hq_read_reply(struct hq_conn *c, double timeout)
{
    double end = hq_now() + timeout;
    for (;;) {
        double left = end - hq_now();
        json_t *m = hq_read_msg(c, left > 0 ? left : 0);
        if (!m)
            return NULL;
        if (json_object_get(m, "event")) {
            json_array_append_new(c->events, m);
            continue;
        }
        return m;
    }
}

json_t *
hq_exec(struct hq_conn *c, const char *cmd, json_t *args)
{
    if (!c) {
        json_decref(args);
        hq_fail("%s: no connection", cmd);
        return NULL;
    }
    json_t *id = json_integer(c->next_id++);
    json_t *msg = json_pack("{s:s, s:O}", "execute", cmd, "id", id);
    if (args)
        json_object_set_new(msg, "arguments", args);
    if (hq_send_json(c, msg) < 0) {
        json_decref(id);
        return NULL;
    }
    json_t *r = hq_read_reply(c, HQ_TIMEOUT);
    if (!r)
        hq_fail("%s: no reply from %s (%s)", cmd, c->path,
                c->eof ? "connection closed" : "timeout");
    else if (!json_equal(json_object_get(r, "id"), id))
        hq_fail("%s: reply with id %s, sent %" JSON_INTEGER_FORMAT, cmd,
                hq_str(json_object_get(r, "id")), json_integer_value(id));
    json_decref(id);
    return r;
}

json_t *
hq_cmd(struct hq_conn *c, const char *cmd, json_t *args)
{
    CLEANUP_JSON json_t *r = hq_exec(c, cmd, args);
    if (!r)
        return NULL;
    json_t *ret = json_object_get(r, "return");
    if (!ret) {
        hq_fail("%s failed: %s: %s", cmd, hq_err_class(r), hq_err_desc(r));
        return NULL;
    }
    return json_incref(ret);
}

json_t *
hq_cmd_err(struct hq_conn *c, const char *cls, const char *cmd, json_t *args)
{
    json_t *r = hq_exec(c, cmd, args);
    if (!r)
        return NULL;
    const char *got = hq_err_class(r);
    if (!got || strcmp(got, cls) != 0) {
        hq_fail("%s: expected error %s, got %s", cmd, cls, hq_str(r));
        json_decref(r);
        return NULL;
    }
    if (!*hq_err_desc(r)) {
        hq_fail("%s: error %s without a desc", cmd, cls);
        json_decref(r);
        return NULL;
    }
    return r;
}

static bool
event_matches(json_t *ev, const char *name, const char *data_name)
{
    const char *n = hq_jstr(ev, "event");
    if (!n || strcmp(n, name) != 0)
        return false;
    if (!data_name)
        return true;
    const char *dn = hq_jstr(json_object_get(ev, "data"), "name");
    return dn && strcmp(dn, data_name) == 0;
}

json_t *
hq_wait_event_named(struct hq_conn *c, const char *name,
                    const char *data_name, double timeout)
{
    double end = hq_now() + timeout;
    for (;;) {
        size_t i;
        json_t *ev;
        json_array_foreach(c->events, i, ev) {
            if (event_matches(ev, name, data_name)) {
                json_incref(ev);
                json_array_remove(c->events, i);
                return ev;
            }
        }
        double left = end - hq_now();
        if (left <= 0)
            return NULL;
        json_t *m = hq_read_msg(c, left);
        if (!m)
            return NULL;
        if (!json_object_get(m, "event")) {
            hq_fail("unexpected message on %s while waiting for %s: %s",
                    c->path, name, hq_str(m));
            json_decref(m);
            continue;
        }
        json_array_append_new(c->events, m);
    }
}

json_t *
hq_wait_event(struct hq_conn *c, const char *name, double timeout)
{
    return hq_wait_event_named(c, name, NULL, timeout);
}

void
hq_drain(struct hq_conn *c, double timeout)
{
    json_t *m;
    while ((m = hq_read_msg(c, timeout)) != NULL) {
        if (json_object_get(m, "event"))
            json_array_append_new(c->events, m);
        else {
            hq_fail("unexpected reply on %s: %s", c->path, hq_str(m));
            json_decref(m);
        }
    }
}

/* -------------------------------------------------------------- processes */

char *
hq_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t len = 0, cap = 4096;
    char *s = xmalloc(cap);
    size_t n;
    while ((n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            s = xrealloc(s, cap *= 2);
    }
    s[len] = 0;
    fclose(f);
    return s;
}

/* In the child: die with the test program, so that nothing outlives it
 * even when it is killed with SIGKILL. */
static void
child_setup(const char *log)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(127);
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0) {
        dup2(in, STDIN_FILENO);
        close(in);
    }
    if (log) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
    }
    /* The tests' own signal handlers must not run in QEMU or the agent. */
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

pid_t
hq_spawn(char *const argv[], const char *log)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        hq_fail("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        child_setup(log);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

int
hq_run_cmd(char *const argv[], char **out)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        child_setup(NULL);
        dup2(pfd[1], STDOUT_FILENO);
        dup2(pfd[1], STDERR_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t len = 0, cap = 4096;
    char *s = xmalloc(cap);
    ssize_t n;
    while ((n = read(pfd[0], s + len, cap - len - 1)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        len += (size_t) n;
        if (cap - len < 2)
            s = xrealloc(s, cap *= 2);
    }
    s[len] = 0;
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (out)
        *out = s;
    else
        free(s);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Waits up to timeout seconds for pid; returns its wait status, or -1
 * after killing it when it would not exit. */
static int
wait_exit(pid_t pid, double timeout)
{
    double end = hq_now() + timeout;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0)
            return -1;
        if (hq_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        hq_sleep_ms(10);
    }
}

/* ------------------------------------------------------------------- vm */

static void
register_vm(struct hq_vm *vm, bool add)
{
    for (int i = 0; i < HQ_MAX_LIVE; i++) {
        if (add && !live[i]) {
            live[i] = vm;
            return;
        }
        if (!add && live[i] == vm) {
            live[i] = NULL;
            return;
        }
    }
    if (add)
        hq_fail("too many VMs at once");
}

struct hq_vm *
hq_vm_new(void)
{
    const char *tmp = getenv("TMPDIR");
    CLEANUP_FREE char *tmpl = xasprintf("%s/ckptd-test-XXXXXX",
                                        tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpl)) {
        hq_fail("mkdtemp %s: %s", tmpl, strerror(errno));
        return NULL;
    }
    struct hq_vm *vm = xcalloc(1, sizeof *vm);
    vm->dir = xstrdup(tmpl);
    vm->qmp_sock = xasprintf("%s/qmp.sock", vm->dir);
    vm->test_sock = xasprintf("%s/test.sock", vm->dir);
    vm->ctl_sock = xasprintf("%s/ckptd.sock", vm->dir);
    vm->agent_log = xasprintf("%s/ckptd.log", vm->dir);
    vm->qemu_log = xasprintf("%s/qemu.log", vm->dir);
    register_vm(vm, true);
    return vm;
}

static void
dump_file(const char *title, const char *path, int max_lines)
{
    CLEANUP_FREE char *s = hq_read_file(path);
    if (!s || !*s)
        return;
    int lines = 0;
    for (char *p = s; *p; p++)
        lines += *p == '\n';
    char *p = s;
    /* Only the tail: the end of a log is where the failure is. */
    for (int skip = lines - max_lines; skip > 0 && *p; p++)
        skip -= *p == '\n';
    printf("# ---- %s (%s)%s\n", title, path, p != s ? ", last lines" : "");
    for (char *line = strtok(p, "\n"); line; line = strtok(NULL, "\n"))
        printf("# %s\n", line);
    printf("# ----\n");
}

void
hq_agent_dump_log(struct hq_vm *vm)
{
    dump_file("agent log", vm->agent_log, 150);
}

void
hq_vm_free(struct hq_vm *vm)
{
    if (!vm)
        return;
    hq_conn_close(vm->ctl);
    vm->ctl = NULL;
    /* A graceful stop checks, in every case, that the agent exits cleanly
     * (and that ASan found nothing); after a failure, just kill. */
    if (vm->agent_pid > 0 && !hq_failed())
        hq_agent_stop(vm);
    hq_agent_kill(vm);
    hq_qemu_kill(vm);
    hq_inject_stop(vm);
    if (hq_failed()) {
        hq_agent_dump_log(vm);
        dump_file("qemu log", vm->qemu_log, 40);
        if (vm->console_log)
            dump_file("guest console", vm->console_log, 30);
    }
    register_vm(vm, false);
    rm_tree(vm->dir);
    for (int i = 0; i < vm->ndisks; i++)
        free(vm->disks[i].path);
    free(vm->dir);
    free(vm->qmp_sock);
    free(vm->agent_qmp);
    free(vm->incoming);
    free(vm->test_sock);
    free(vm->ctl_sock);
    free(vm->agent_log);
    free(vm->qemu_log);
    free(vm->qga_sock);
    free(vm->console_log);
    for (int i = 0; i < vm->nagent_args; i++)
        free(vm->agent_args[i]);
    free(vm);
}

struct hq_disk *
hq_vm_disk(struct hq_vm *vm, const char *name)
{
    for (int i = 0; i < vm->ndisks; i++)
        if (strcmp(vm->disks[i].name, name) == 0)
            return &vm->disks[i];
    return NULL;
}

static int
create_image(const char *path, const char *format, int64_t size)
{
    CLEANUP_FREE char *sz = xasprintf("%" PRId64, size);
    char *argv[] = { "qemu-img", "create", "-q", "-f", (char *) format,
                     (char *) path, sz, NULL };
    CLEANUP_FREE char *out = NULL;
    if (hq_run_cmd(argv, &out) != 0) {
        hq_fail("qemu-img create %s: %s", path, out ? out : "");
        return -1;
    }
    return 0;
}

static struct hq_disk *
new_disk(struct hq_vm *vm, const char *name, const char *format,
         int64_t size, bool read_only)
{
    if (vm->ndisks == HQ_MAX_DISKS || strlen(name) > 8) {
        hq_fail("disk %s: too many disks or too long a name", name);
        return NULL;
    }
    struct hq_disk *d = &vm->disks[vm->ndisks];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->node, sizeof d->node, "%s-fmt", name);
    snprintf(d->format, sizeof d->format, "%s", format);
    d->path = xasprintf("%s/%s.%s", vm->dir, name,
                        strcmp(format, "raw") == 0 ? "img" : "qcow2");
    d->size = size;
    d->read_only = read_only;
    if (create_image(d->path, format, size) < 0) {
        free(d->path);
        return NULL;
    }
    vm->ndisks++;
    return d;
}

int
hq_vm_add_disk(struct hq_vm *vm, const char *name, const char *format,
               int64_t size, bool read_only)
{
    return new_disk(vm, name, format, size, read_only) ? 0 : -1;
}

/* Spare PCIe root ports so that disks can be hot-added to a q35 machine,
 * whose root bus does not take hotplug. */
#define HQ_ROOT_PORTS 4

static void guest_argv(struct hq_vm *vm, struct str_vec *a);

static void
qemu_argv(struct hq_vm *vm, struct str_vec *a)
{
    /* The guest's kernel hangs at early boot under KVM here. */
    const char *accel = vm->guest ? "tcg" : getenv("HQ_ACCEL");
    const char *fixed[] = { "qemu-system-x86_64", "-machine", "q35", "-S",
                            "-nodefaults", "-display", "none", "-m", "128" };
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        str_vec_append(a, xstrdup(fixed[i]));
    if (accel && *accel) {
        str_vec_append(a, xstrdup("-accel"));
        str_vec_append(a, xstrdup(accel));
    } else {
        str_vec_append(a, xstrdup("-accel"));
        str_vec_append(a, xstrdup("kvm"));
        str_vec_append(a, xstrdup("-accel"));
        str_vec_append(a, xstrdup("tcg"));
    }
    str_vec_append(a, xstrdup("-qmp"));
    str_vec_append(a, xasprintf("unix:%s,server=on,wait=off", vm->qmp_sock));
    str_vec_append(a, xstrdup("-qmp"));
    str_vec_append(a, xasprintf("unix:%s,server=on,wait=off", vm->test_sock));
    for (int i = 0; i < HQ_ROOT_PORTS; i++) {
        str_vec_append(a, xstrdup("-device"));
        str_vec_append(a, xasprintf("pcie-root-port,id=hq-rp%d,chassis=%d",
                                    i, i + 1));
    }
    for (int i = 0; i < vm->ndisks; i++) {
        struct hq_disk *d = &vm->disks[i];
        const char *ro = d->read_only ? ",read-only=on" : "";
        str_vec_append(a, xstrdup("-blockdev"));
        str_vec_append(a, xasprintf("driver=file,filename=%s,node-name=%s-file%s",
                                    d->path, d->name, ro));
        str_vec_append(a, xstrdup("-blockdev"));
        str_vec_append(a, xasprintf("driver=%s,file=%s-file,node-name=%s%s",
                                    d->format, d->name, d->node, ro));
        str_vec_append(a, xstrdup("-device"));
        str_vec_append(a, xasprintf("virtio-blk-pci,drive=%s,id=%s",
                                    d->node, d->name));
        d->plugged = false;
    }
    if (vm->guest)
        guest_argv(vm, a);
    if (vm->incoming) {
        str_vec_append(a, xstrdup("-incoming"));
        str_vec_append(a, xstrdup(vm->incoming));
    }
    str_vec_append(a, NULL);
}

int
hq_qemu_start(struct hq_vm *vm)
{
    if (vm->qemu_pid > 0) {
        hq_fail("QEMU is already running");
        return -1;
    }
    struct str_vec a = { 0 };
    qemu_argv(vm, &a);
    vm->root_ports_used = 0;
    vm->qemu_pid = hq_spawn(a.ptr, vm->qemu_log);
    str_vec_free_all(&a);
    if (vm->qemu_pid < 0) {
        vm->qemu_pid = 0;
        return -1;
    }
    vm->mon = negotiate(conn_open_watch(vm->test_sock, HQ_TIMEOUT,
                                        vm->qemu_pid));
    if (!vm->mon) {
        dump_file("qemu log", vm->qemu_log, 40);
        return -1;
    }
    return 0;
}

int
hq_qemu_quit(struct hq_vm *vm)
{
    if (vm->qemu_pid <= 0) {
        hq_fail("QEMU is not running");
        return -1;
    }
    /* The reply may or may not make it before the monitor closes, so a
     * missing reply is no failure here; the exit status is the check. */
    if (hq_send_json(vm->mon, json_pack("{s:s}", "execute", "quit")) == 0)
        json_decref(hq_read_reply(vm->mon, HQ_TIMEOUT));
    hq_conn_close(vm->mon);
    vm->mon = NULL;
    int st = wait_exit(vm->qemu_pid, HQ_TIMEOUT);
    vm->qemu_pid = 0;
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        hq_fail("QEMU did not exit cleanly after quit (status %d)", st);
        return -1;
    }
    return 0;
}

void
hq_qemu_kill(struct hq_vm *vm)
{
    hq_conn_close(vm->mon);
    vm->mon = NULL;
    if (vm->qemu_pid > 0) {
        kill(vm->qemu_pid, SIGKILL);
        waitpid(vm->qemu_pid, NULL, 0);
    }
    vm->qemu_pid = 0;
}

static int plug_disk(struct hq_vm *vm, struct hq_disk *d);

int
hq_qemu_hotplug(struct hq_vm *vm, const char *name, int64_t size)
{
    if (vm->root_ports_used == HQ_ROOT_PORTS) {
        hq_fail("no spare root port for %s", name);
        return -1;
    }
    struct hq_disk *d = new_disk(vm, name, "qcow2", size, false);
    return d ? plug_disk(vm, d) : -1;
}

int
hq_qemu_plug(struct hq_vm *vm, const char *name, const char *path)
{
    if (vm->root_ports_used == HQ_ROOT_PORTS || vm->ndisks == HQ_MAX_DISKS ||
        strlen(name) > 8) {
        hq_fail("no room to plug %s", name);
        return -1;
    }
    struct hq_disk *d = &vm->disks[vm->ndisks++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->node, sizeof d->node, "%s-fmt", name);
    snprintf(d->format, sizeof d->format, "qcow2");
    d->path = xstrdup(path);
    return plug_disk(vm, d);
}

static int
plug_disk(struct hq_vm *vm, struct hq_disk *d)
{
    const char *name = d->name;
    CLEANUP_FREE char *file = xasprintf("%s-file", name);
    CLEANUP_FREE char *port = xasprintf("hq-rp%d", vm->root_ports_used++);
    CLEANUP_JSON json_t *r1 = hq_cmd(vm->mon, "blockdev-add",
        json_pack("{s:s, s:s, s:s}", "driver", "file", "filename", d->path,
                  "node-name", file));
    CLEANUP_JSON json_t *r2 = r1 ? hq_cmd(vm->mon, "blockdev-add",
        json_pack("{s:s, s:s, s:s}", "driver", "qcow2", "file", file,
                  "node-name", d->node)) : NULL;
    CLEANUP_JSON json_t *r3 = r2 ? hq_cmd(vm->mon, "device_add",
        json_pack("{s:s, s:s, s:s, s:s}", "driver", "virtio-blk-pci",
                  "drive", d->node, "id", name, "bus", port)) : NULL;
    d->plugged = true;
    return r3 ? 0 : -1;
}

/* ----------------------------------------------------------------- disk */

int
hq_hmp(struct hq_vm *vm, const char *cmdline)
{
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "human-monitor-command",
                                    json_pack("{s:s}", "command-line", cmdline));
    if (!r)
        return -1;
    if (!json_is_string(r) || *json_string_value(r)) {
        hq_fail("HMP '%s' said: %s", cmdline, hq_str(r));
        return -1;
    }
    return 0;
}

int
hq_write(struct hq_vm *vm, const char *disk, int pattern,
         int64_t offset, int64_t len)
{
    CLEANUP_FREE char *cl = xasprintf(
        "qemu-io -d %s/virtio-backend \"write -P 0x%02x %" PRId64 " %" PRId64 "\"",
        disk, pattern & 0xff, offset, len);
    return hq_hmp(vm, cl);
}

static const char *
node_of(struct hq_vm *vm, const char *disk, char *buf, size_t len)
{
    struct hq_disk *d = hq_vm_disk(vm, disk);
    if (d)
        return d->node;
    snprintf(buf, len, "%s", disk);    /* already a node name */
    return buf;
}

json_t *
hq_bitmaps(struct hq_vm *vm, const char *disk)
{
    char buf[64];
    const char *node = node_of(vm, disk, buf, sizeof buf);
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        json_pack("{s:b}", "flat", 1));
    if (!nodes)
        return NULL;
    json_t *n = hq_jfind(nodes, "node-name", node);
    if (!n) {
        hq_fail("no block node %s", node);
        return NULL;
    }
    json_t *b = json_object_get(n, "dirty-bitmaps");
    return b ? json_incref(b) : json_array();
}

json_t *
hq_bitmap(struct hq_vm *vm, const char *disk, const char *name)
{
    CLEANUP_JSON json_t *all = hq_bitmaps(vm, disk);
    json_t *b = hq_jfind(all, "name", name);
    return b ? json_incref(b) : NULL;
}

char *
hq_bitmap_names(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *all = hq_bitmaps(vm, disk);
    char *s = xstrdup("");
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b) {
        const char *n = hq_jstr(b, "name");
        if (!n || strncmp(n, "ckptd", 5) == 0)
            continue;
        char *t = xasprintf("%s%s%s", s, *s ? "," : "", n);
        free(s);
        s = t;
    }
    return s;
}

int
hq_bitmap_count_prefix(struct hq_vm *vm, const char *disk, const char *prefix)
{
    CLEANUP_JSON json_t *all = hq_bitmaps(vm, disk);
    int count = 0;
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b) {
        const char *n = hq_jstr(b, "name");
        count += n && strncmp(n, prefix, strlen(prefix)) == 0;
    }
    return count;
}

int64_t
hq_bitmap_dirty(struct hq_vm *vm, const char *disk, const char *name)
{
    CLEANUP_JSON json_t *b = hq_bitmap(vm, disk, name);
    return b ? hq_jint(b, "count") : -1;
}

int
hq_bitmap_recording(struct hq_vm *vm, const char *disk, const char *name)
{
    CLEANUP_JSON json_t *b = hq_bitmap(vm, disk, name);
    return b ? hq_jbool(b, "recording") : -1;
}

json_t *
hq_snapshot(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        json_pack("{s:b}", "flat", 1));
    if (!nodes)
        return NULL;
    json_t *snap = json_object();
    for (int i = 0; i < vm->ndisks; i++) {
        json_t *n = hq_jfind(nodes, "node-name", vm->disks[i].node);
        json_t *b = n ? json_object_get(n, "dirty-bitmaps") : NULL;
        json_object_set_new(snap, vm->disks[i].name,
                            b ? json_incref(b) : json_array());
    }
    return snap;
}

int
hq_add_bitmap(struct hq_vm *vm, const char *disk, const char *name,
              bool persistent, bool disabled)
{
    struct hq_disk *d = hq_vm_disk(vm, disk);
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "block-dirty-bitmap-add",
        json_pack("{s:s, s:s, s:b, s:b}", "node", d ? d->node : disk,
                  "name", name, "persistent", persistent,
                  "disabled", disabled));
    return r ? 0 : -1;
}

json_t *
hq_image_info(struct hq_vm *vm, const char *disk)
{
    struct hq_disk *d = hq_vm_disk(vm, disk);
    if (!d) {
        hq_fail("no disk %s", disk);
        return NULL;
    }
    char *argv[] = { "qemu-img", "info", "--output=json", d->path, NULL };
    CLEANUP_FREE char *out = NULL;
    if (hq_run_cmd(argv, &out) != 0) {
        hq_fail("qemu-img info %s: %s", d->path, out ? out : "");
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    if (!j)
        hq_fail("qemu-img info %s: %s", d->path, err.text);
    return j;
}

json_t *
hq_image_bitmaps(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *info = hq_image_info(vm, disk);
    if (!info)
        return NULL;
    json_t *b = json_object_get(json_object_get(json_object_get(info,
                    "format-specific"), "data"), "bitmaps");
    return b ? json_incref(b) : json_array();
}

int
hq_image_verify(struct hq_vm *vm, const char *disk, int pattern,
                int64_t offset, int64_t len)
{
    struct hq_disk *d = hq_vm_disk(vm, disk);
    if (!d)
        return -1;
    CLEANUP_FREE char *cmd = xasprintf("read -P 0x%02x %" PRId64 " %" PRId64,
                                       pattern & 0xff, offset, len);
    char *argv[] = { "qemu-io", "-f", d->format, "-r", "-c", cmd, d->path,
                     NULL };
    CLEANUP_FREE char *out = NULL;
    int st = hq_run_cmd(argv, &out);
    if (st != 0 || (out && strstr(out, "verification failed"))) {
        hq_fail("%s: %s: %s", d->path, cmd, out ? out : "");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- agent */

const char *
hq_agent_path(void)
{
    static char path[4096];
    const char *p = getenv("CKPTD");
    if (p && *p)
        return p;
    const char *b = getenv("BUILD");
    snprintf(path, sizeof path, "%s/ckptd", b && *b ? b : "build");
    return path;
}

int
hq_agent_spawn(struct hq_vm *vm)
{
    if (vm->agent_pid > 0) {
        hq_fail("the agent is already running");
        return -1;
    }
    const char *bin = hq_agent_path();
    if (access(bin, X_OK) != 0) {
        hq_fail("no agent binary at %s (set CKPTD or BUILD)", bin);
        return -1;
    }
    FILE *f = fopen(vm->agent_log, "a");
    if (f) {
        fprintf(f, "==== hq: starting %s\n", bin);
        fclose(f);
    }
    char *argv[8 + ARRAY_SIZE(vm->agent_args)] = {
        (char *) bin, "--qmp", vm->agent_qmp ? vm->agent_qmp : vm->qmp_sock,
        "--control", vm->ctl_sock,
        "--log-level", "debug" };
    for (int i = 0; i < vm->nagent_args; i++)
        argv[7 + i] = vm->agent_args[i];
    argv[7 + vm->nagent_args] = NULL;
    vm->agent_pid = hq_spawn(argv, vm->agent_log);
    if (vm->agent_pid < 0) {
        vm->agent_pid = 0;
        return -1;
    }
    vm->ctl = negotiate(conn_open_watch(vm->ctl_sock, HQ_TIMEOUT,
                                        vm->agent_pid));
    return vm->ctl ? 0 : -1;
}

int
hq_agent_wait_qemu(struct hq_vm *vm, const char *state, double timeout)
{
    double end = hq_now() + timeout;
    for (;;) {
        CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
        if (!st)
            return -1;
        const char *q = hq_jstr(st, "qemu");
        if (q && strcmp(q, state) == 0)
            return 0;
        if (hq_now() > end) {
            hq_fail("query-status did not reach qemu=%s: %s", state,
                    hq_str(st));
            return -1;
        }
        hq_sleep_ms(25);
    }
}

int
hq_agent_start(struct hq_vm *vm)
{
    if (hq_agent_spawn(vm) < 0)
        return -1;
    return hq_agent_wait_qemu(vm, "connected", HQ_TIMEOUT);
}

static int
check_log_clean(struct hq_vm *vm)
{
    CLEANUP_FREE char *log = hq_read_file(vm->agent_log);
    const char *bad[] = { "AddressSanitizer", "LeakSanitizer",
                          "runtime error:" };
    for (size_t i = 0; log && i < ARRAY_SIZE(bad); i++)
        if (strstr(log, bad[i])) {
            hq_fail("sanitizer report (%s) in the agent log", bad[i]);
            return -1;
        }
    return 0;
}

int
hq_agent_stop(struct hq_vm *vm)
{
    if (vm->agent_pid <= 0) {
        hq_fail("the agent is not running");
        return -1;
    }
    hq_conn_close(vm->ctl);
    vm->ctl = NULL;
    kill(vm->agent_pid, SIGTERM);
    int st = wait_exit(vm->agent_pid, HQ_TIMEOUT);
    vm->agent_pid = 0;
    int ret = 0;
    if (st == -1) {
        hq_fail("the agent did not exit within %.0f s of SIGTERM", HQ_TIMEOUT);
        ret = -1;
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        hq_fail("the agent exited with %s %d after SIGTERM",
                WIFEXITED(st) ? "status" : "signal",
                WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        ret = -1;
    }
    struct stat sb;
    if (lstat(vm->ctl_sock, &sb) == 0) {
        hq_fail("the agent left its control socket %s", vm->ctl_sock);
        ret = -1;
    }
    if (check_log_clean(vm) < 0)
        ret = -1;
    return ret;
}

int
hq_agent_add_arg(struct hq_vm *vm, const char *arg)
{
    if (vm->nagent_args == (int) ARRAY_SIZE(vm->agent_args)) {
        hq_fail("too many extra agent arguments");
        return -1;
    }
    vm->agent_args[vm->nagent_args++] = xstrdup(arg);
    return 0;
}

void
hq_agent_kill(struct hq_vm *vm)
{
    hq_conn_close(vm->ctl);
    vm->ctl = NULL;
    if (vm->agent_pid > 0) {
        kill(vm->agent_pid, SIGKILL);
        waitpid(vm->agent_pid, NULL, 0);
    }
    vm->agent_pid = 0;
}

/* n qcow2 disks vda, vdb, ... of size each.  0 or -1. */
static int
add_disks(struct hq_vm *vm, int n, int64_t size)
{
    for (int i = 0; i < n; i++) {
        char name[8];
        snprintf(name, sizeof name, "vd%c", 'a' + i);
        if (hq_vm_add_disk(vm, name, "qcow2", size, false) < 0)
            return -1;
    }
    return 0;
}

struct hq_vm *
hq_vm_simple(int n, int64_t size, bool agent)
{
    struct hq_vm *vm = hq_vm_new();
    if (!vm)
        return NULL;
    if (add_disks(vm, n, size) < 0)
        goto fail;
    if (hq_qemu_start(vm) < 0)
        goto fail;
    if (agent && hq_agent_start(vm) < 0)
        goto fail;
    return vm;
fail:
    hq_vm_free(vm);
    return NULL;
}

struct hq_vm *
hq_vm_with_agent(int n, int64_t size, const char *const *extra)
{
    struct hq_vm *vm = hq_vm_simple(n, size, false);
    if (!vm)
        return NULL;
    setenv("XDG_RUNTIME_DIR", vm->dir, 1);
    for (; extra && *extra; extra++)
        if (hq_agent_add_arg(vm, *extra) < 0)
            goto fail;
    if (hq_agent_start(vm) < 0)
        goto fail;
    return vm;
fail:
    hq_vm_free(vm);
    return NULL;
}

char *
hq_ckpt_names(struct hq_conn *ctl)
{
    CLEANUP_JSON json_t *l = hq_cmd(ctl, "checkpoint-list", NULL);
    if (!l)
        return NULL;
    if (!json_is_array(l)) {
        hq_fail("checkpoint-list returned %s", hq_str(l));
        return NULL;
    }
    char *s = xstrdup("");
    size_t i;
    json_t *c;
    json_array_foreach(l, i, c) {
        const char *n = hq_jstr(c, "name");
        char *t = xasprintf("%s%s%s", s, i ? "," : "", n ? n : "?");
        free(s);
        s = t;
    }
    return s;
}

json_t *
hq_ckpt_get(struct hq_conn *ctl, const char *name, bool size)
{
    json_t *args = json_pack("{s:s}", "name", name);
    if (size)
        json_object_set_new(args, "size", json_true());
    return hq_cmd(ctl, "checkpoint-get", args);
}

/* --------------------------------------------------------------- backup */

struct nbd_handle *
hq_nbd_open(const char *uri, const char *ctx)
{
    struct nbd_handle *h = nbd_create();
    if (!h) {
        hq_fail("nbd_create: %s", nbd_get_error());
        return NULL;
    }
    if ((ctx && nbd_add_meta_context(h, ctx) == -1) ||
        nbd_connect_uri(h, uri) == -1) {
        hq_fail("NBD %s: %s", uri, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    if (ctx && nbd_can_meta_context(h, ctx) != 1) {
        hq_fail("NBD %s: the server does not offer meta context %s", uri, ctx);
        nbd_close(h);
        return NULL;
    }
    return h;
}

void
hq_nbd_close(struct nbd_handle *h)
{
    if (h) {
        nbd_shutdown(h, 0);
        nbd_close(h);
    }
}

int
hq_nbd_read(struct nbd_handle *h, void *buf, int64_t off, int64_t len)
{
    const int64_t chunk = 4 * 1024 * 1024;
    for (int64_t done = 0; done < len; done += chunk) {
        int64_t n = len - done < chunk ? len - done : chunk;
        if (nbd_pread(h, (char *) buf + done, (size_t) n,
                      (uint64_t) (off + done), 0) == -1) {
            hq_fail("nbd_pread %" PRId64 "+%" PRId64 ": %s", off + done, n,
                    nbd_get_error());
            return -1;
        }
    }
    return 0;
}

struct map_walk {
    const char *ctx;
    int64_t pos, size, gran;
    uint32_t mask;
    bool all;
    uint8_t *map;
    bool seen;
};

static int
map_extent(void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
    struct map_walk *w = opaque;
    (void) error;
    if (strcmp(metacontext, w->ctx) != 0)
        return 0;
    w->seen = true;
    int64_t pos = (int64_t) offset;
    for (size_t i = 0; i + 1 < nr_entries && pos < w->size; i += 2) {
        int64_t end = pos + entries[i];
        if (end > w->size)
            end = w->size;
        bool flagged = (entries[i + 1] & w->mask) != 0;
        for (int64_t g = pos / w->gran; g * w->gran < end; g++) {
            if (w->all) {
                if (!flagged)
                    w->map[g] = 0;
            } else if (flagged) {
                w->map[g] = 1;
            }
        }
        pos = end;
    }
    w->pos = pos;
    return 0;
}

int
hq_nbd_map(struct nbd_handle *h, const char *ctx, int64_t size, int64_t gran,
           uint32_t mask, bool all, uint8_t *map)
{
    int64_t n = (size + gran - 1) / gran;
    memset(map, all ? 1 : 0, (size_t) n);
    struct map_walk w = { .ctx = ctx, .size = size, .gran = gran,
                          .mask = mask, .all = all, .map = map };
    while (w.pos < size) {
        int64_t before = w.pos;
        int64_t len = size - w.pos;
        if (len > (int64_t) 1 << 30)
            len = (int64_t) 1 << 30;
        w.seen = false;
        if (nbd_block_status(h, (uint64_t) len, (uint64_t) w.pos,
                             (nbd_extent_callback) { .callback = map_extent,
                                                     .user_data = &w }, 0) == -1) {
            hq_fail("nbd_block_status %s at %" PRId64 ": %s", ctx, w.pos,
                    nbd_get_error());
            return -1;
        }
        if (!w.seen || w.pos <= before) {
            hq_fail("nbd_block_status %s at %" PRId64 " returned no extent",
                    ctx, before);
            return -1;
        }
    }
    return 0;
}

char *
hq_nbd_sock(struct hq_vm *vm)
{
    size_t n = strlen(vm->ctl_sock);
    if (n > 5 && strcmp(vm->ctl_sock + n - 5, ".sock") == 0)
        return xasprintf("%.*s-nbd.sock", (int) (n - 5), vm->ctl_sock);
    return xasprintf("%s-nbd.sock", vm->ctl_sock);
}

bool
hq_sock_listening(const char *path)
{
    int fd = hq_connect_unix(path);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static void __attribute__((format(printf, 2, 3)))
add_leftover(char **acc, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *t = xasprintf("%s%s%s", *acc ? *acc : "", *acc ? "; " : "", msg);
    free(*acc);
    *acc = t;
}

char *
hq_backup_leftovers(struct hq_vm *vm, const char *scratch_dir)
{
    char *acc = NULL;
    size_t i, k;
    json_t *e, *b;
    if (vm->mon) {
        CLEANUP_JSON json_t *exports = hq_cmd(vm->mon, "query-block-exports", NULL);
        json_array_foreach(exports, i, e)
            add_leftover(&acc, "export %s", hq_str(e));
        CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
        json_array_foreach(jobs, i, e) {
            const char *id = hq_jstr(e, "id");
            if (id && strncmp(id, "ckptd", 5) == 0)
                add_leftover(&acc, "job %s", hq_str(e));
        }
        CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                            json_pack("{s:b}", "flat", 1));
        json_array_foreach(nodes, i, e) {
            const char *n = hq_jstr(e, "node-name");
            if (n && strncmp(n, "ckptd", 5) == 0)
                add_leftover(&acc, "node %s", n);
            json_array_foreach(json_object_get(e, "dirty-bitmaps"), k, b) {
                const char *bn = hq_jstr(b, "name");
                if (!bn || strncmp(bn, "ckptd:", 6) == 0)
                    add_leftover(&acc, "bitmap on %s: %s", n ? n : "?",
                                 hq_str(b));
            }
        }
    }
    if (scratch_dir) {
        DIR *d = opendir(scratch_dir);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL)
            if (strncmp(de->d_name, "ckptd", 5) == 0)
                add_leftover(&acc, "file %s/%s", scratch_dir, de->d_name);
        if (d)
            closedir(d);
    }
    CLEANUP_FREE char *sock = hq_nbd_sock(vm);
    if (hq_sock_listening(sock))
        add_leftover(&acc, "an NBD server still listens on %s", sock);
    return acc;
}

char *
hq_scratch_dir(struct hq_vm *vm)
{
    return xasprintf("%s/scratch", vm->dir);
}

struct hq_vm *
hq_vm_scratch(int n, int64_t size, const char *const *extra, bool start)
{
    struct hq_vm *vm = hq_vm_new();
    if (!vm)
        return NULL;
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    if (mkdir(sd, 0700) < 0) {
        hq_fail("mkdir %s", sd);
        goto fail;
    }
    if (add_disks(vm, n, size) < 0)
        goto fail;
    if (hq_agent_add_arg(vm, "--scratch-dir") < 0 || hq_agent_add_arg(vm, sd) < 0)
        goto fail;
    for (; extra && *extra; extra++)
        if (hq_agent_add_arg(vm, *extra) < 0)
            goto fail;
    if (start && (hq_qemu_start(vm) < 0 || hq_agent_start(vm) < 0))
        goto fail;
    return vm;
fail:
    hq_vm_free(vm);
    return NULL;
}

int
hq_count_scratch(const char *dir, const char *substr)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strncmp(de->d_name, "ckptd-scratch-", 14) == 0) {
            char *sub = xasprintf("%s/%s", dir, de->d_name);
            DIR *s = opendir(sub);
            struct dirent *f;
            /* Dot files are on their way out: the agent renames a
             * scratch file and frees its blocks off the loop. */
            while (s && (f = readdir(s)))
                n += f->d_name[0] != '.' &&
                     (!substr || strstr(f->d_name, substr) != NULL);
            if (s)
                closedir(s);
            free(sub);
        }
    if (d)
        closedir(d);
    return n;
}

json_t *
hq_json(const char *text)
{
    json_error_t err;
    json_t *a = json_loads(text, 0, &err);
    if (!a)
        hq_fail("bad test JSON %s: %s", text, err.text);
    return a;
}

json_t *
hq_backup_begin(struct hq_vm *vm, const char *args)
{
    json_t *a = NULL;
    if (args && !(a = hq_json(args)))
        return NULL;
    return hq_cmd(vm->ctl, "backup-begin", a);
}

int
hq_backup_end(struct hq_vm *vm, json_t *job)
{
    const char *id = hq_jstr(job, "id");
    if (!id) {
        hq_fail("job without id: %s", hq_str(job));
        return -1;
    }
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "backup-end",
                                    json_pack("{s:s}", "id", id));
    if (!json_is_object(r) || json_object_size(r) != 0) {
        hq_fail("backup-end %s returned %s", id, hq_str(r));
        return -1;
    }
    return 0;
}

int
hq_backup_expect_clean(struct hq_vm *vm, const char *when)
{
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *left = hq_backup_leftovers(vm, sd);
    if (left) {
        hq_fail("%s, left behind: %s", when, left);
        return -1;
    }
    if (vm->ctl) {
        CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "query-backup", NULL);
        if (!json_is_array(l) || json_array_size(l) != 0) {
            hq_fail("%s, query-backup: %s", when, hq_str(l));
            return -1;
        }
    }
    return 0;
}

int64_t
hq_first_diff(const uint8_t *a, const uint8_t *b, int64_t len)
{
    for (int64_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return i;
    return -1;
}

/* ---------------------------------------------------------------- guest */

const char *
hq_guest_dir(void)
{
    static char buf[4096];
    const char *d = getenv("HQ_GUEST_DIR");
    if (d && *d)
        return d;
    const char *b = getenv("BUILD");
    snprintf(buf, sizeof buf, "%s/guest", b && *b ? b : "build");
    return buf;
}

static void
guest_argv(struct hq_vm *vm, struct str_vec *a)
{
    const char *g = hq_guest_dir();
    const char *args[] = {
        "-m", "256", "-no-reboot",
        "-append", "console=ttyS0 panic=-1 quiet",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    };
    str_vec_append(a, xstrdup("-kernel"));
    str_vec_append(a, xasprintf("%s/vmlinuz", g));
    str_vec_append(a, xstrdup("-initrd"));
    str_vec_append(a, xasprintf("%s/initramfs.cpio.gz", g));
    str_vec_append(a, xstrdup("-serial"));
    str_vec_append(a, xasprintf("file:%s", vm->console_log));
    str_vec_append(a, xstrdup("-chardev"));
    str_vec_append(a, xasprintf("socket,id=qga0,path=%s,server=on,wait=off",
                                vm->qga_sock));
    for (size_t i = 0; i < ARRAY_SIZE(args); i++)
        str_vec_append(a, xstrdup(args[i]));
}

/* The host formats the disk (no mkfs in the guest): ext4 on a raw file,
 * converted to qcow2 over the image new_disk made.  Inode tables and
 * journal initialised now, so that no lazy init writes behind the
 * workload's back. */
static int
guest_format(struct hq_disk *d)
{
    CLEANUP_FREE char *raw = xasprintf("%s.raw", d->path);
    CLEANUP_FREE char *size = xasprintf("%" PRId64, d->size);
    CLEANUP_FREE char *out = NULL;
    char *trunc[] = { "truncate", "-s", size, raw, NULL };
    char *mkfs[] = { "mkfs.ext4", "-F", "-q", "-E",
                     "lazy_itable_init=0,lazy_journal_init=0",
                     "-L", d->name, raw, NULL };
    char *conv[] = { "qemu-img", "convert", "-O", "qcow2", raw, d->path,
                     NULL };
    int rc = hq_run_cmd(trunc, NULL);
    if (rc == 0)
        rc = hq_run_cmd(mkfs, &out);
    if (rc == 0) {
        free(out);
        out = NULL;
        rc = hq_run_cmd(conv, &out);
    }
    unlink(raw);
    if (rc != 0) {
        hq_fail("formatting %s: %s", d->name, out ? out : "cannot run");
        return -1;
    }
    return 0;
}

long
hq_guest_seq(struct hq_vm *vm, const char *disk)
{
    CLEANUP_FREE char *s = hq_read_file(vm->console_log);
    if (!s)
        return -1;
    /* disk NULL: the cross-disk step. */
    CLEANUP_FREE char *tag = disk ? xasprintf("ckptd-guest: seq %s ", disk)
                                  : xstrdup("ckptd-guest: cross ");
    long seq = -1;
    for (char *p = strstr(s, tag); p; p = strstr(p + 1, tag))
        seq = strtol(p + strlen(tag), NULL, 10);
    return seq;
}

int
hq_guest_wait_console(struct hq_vm *vm, const char *text, double timeout)
{
    double end = hq_now() + timeout;
    for (;;) {
        CLEANUP_FREE char *s = hq_read_file(vm->console_log);
        if (s && strstr(s, text))
            return 0;
        if (vm->qemu_pid > 0 && waitpid(vm->qemu_pid, NULL, WNOHANG) != 0) {
            vm->qemu_pid = 0;
            hq_fail("QEMU exited before the guest printed '%s'", text);
            return -1;
        }
        if (hq_now() > end) {
            hq_fail("the guest did not print '%s' within %g s", text,
                    timeout);
            return -1;
        }
        hq_sleep_ms(50);
    }
}

/* Console lines end in \r\n (the serial tty), so steps are compared as
 * numbers, not as text. */
static int
guest_wait_seq(struct hq_vm *vm, const char *disk, long min, double timeout)
{
    double end = hq_now() + timeout;
    while (hq_guest_seq(vm, disk) < min) {
        if (vm->qemu_pid > 0 && waitpid(vm->qemu_pid, NULL, WNOHANG) != 0) {
            vm->qemu_pid = 0;
            hq_fail("QEMU exited before the workload on %s reached step %ld",
                    disk ? disk : "all disks", min);
            return -1;
        }
        if (hq_now() > end) {
            hq_fail("the workload on %s did not reach step %ld within %g s "
                    "(at %ld)", disk ? disk : "all disks", min, timeout,
                    hq_guest_seq(vm, disk));
            return -1;
        }
        hq_sleep_ms(50);
    }
    return 0;
}

int
hq_guest_wait_progress(struct hq_vm *vm, const char *disk, double timeout)
{
    return guest_wait_seq(vm, disk, hq_guest_seq(vm, disk) + 1, timeout);
}

/* QEMU started, CPUs running, the workload's first step on every disk
 * seen, and qemu-ga answering a sync. */
static int
guest_boot(struct hq_vm *vm, int n)
{
    if (hq_qemu_start(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "cont", NULL);
    if (!r || hq_guest_wait_console(vm, "ckptd-guest: ready", 60) < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        char disk[8];
        snprintf(disk, sizeof disk, "vd%c", 'a' + i);
        if (guest_wait_seq(vm, disk, 1, 60) < 0)
            return -1;
    }
    if (n >= 2 && guest_wait_seq(vm, NULL, 1, 60) < 0)
        return -1;
    CLEANUP_CONN struct hq_conn *c = hq_qga_open(vm, 30);
    return c ? 0 : -1;
}

/* A VM set up to boot the test guest: the guest's kernel and initramfs
 * must exist; disks are added by the caller. */
static struct hq_vm *
guest_vm_new(void)
{
    const char *g = hq_guest_dir();
    CLEANUP_FREE char *initrd = xasprintf("%s/initramfs.cpio.gz", g);
    if (access(initrd, R_OK) != 0) {
        hq_fail("no guest at %s (make %s)", initrd, initrd);
        return NULL;
    }
    struct hq_vm *vm = hq_vm_new();
    if (!vm)
        return NULL;
    vm->guest = true;
    vm->qga_sock = xasprintf("%s/qga.sock", vm->dir);
    vm->console_log = xasprintf("%s/console.log", vm->dir);
    return vm;
}

/* Boots the guest on VM's disks; frees VM and returns NULL on failure. */
static struct hq_vm *
guest_vm_boot(struct hq_vm *vm, int n, const char *what)
{
    double t0 = hq_now();
    if (guest_boot(vm, n) < 0) {
        hq_vm_free(vm);
        return NULL;
    }
    hq_note("guest up %s in %.1f s", what, hq_now() - t0);
    return vm;
}

struct hq_vm *
hq_guest_vm(int n, int64_t size)
{
    struct hq_vm *vm = guest_vm_new();
    if (!vm)
        return NULL;
    for (int i = 0; i < n; i++) {
        char name[8];
        snprintf(name, sizeof name, "vd%c", 'a' + i);
        struct hq_disk *d = new_disk(vm, name, "qcow2", size, false);
        if (!d || guest_format(d) < 0) {
            hq_vm_free(vm);
            return NULL;
        }
    }
    return guest_vm_boot(vm, n, "on new disks");
}

static int64_t
image_size(const char *image)
{
    CLEANUP_FREE char *out = NULL;
    char *info[] = { "qemu-img", "info", "-U", "--output=json",
                     (char *) image, NULL };
    if (hq_run_cmd(info, &out) != 0)
        return -1;
    CLEANUP_JSON json_t *j = json_loads(out, 0, NULL);
    return hq_jint(j, "virtual-size");
}

/* Adds disk vdX as a copy of IMAGE. */
static int
guest_disk_from(struct hq_vm *vm, int i, const char *image)
{
    char name[8];
    snprintf(name, sizeof name, "vd%c", 'a' + i);
    int64_t size = image_size(image);
    if (size <= 0) {
        hq_fail("qemu-img info %s failed", image);
        return -1;
    }
    struct hq_disk *d = new_disk(vm, name, "qcow2", size, false);
    if (!d)
        return -1;
    CLEANUP_FREE char *out = NULL;
    char *conv[] = { "qemu-img", "convert", "-O", "qcow2",
                     (char *) image, d->path, NULL };
    if (hq_run_cmd(conv, &out) != 0) {
        hq_fail("qemu-img convert %s: %s", image, out);
        return -1;
    }
    return 0;
}

struct hq_vm *
hq_guest_vm_from(int n, const char *const *images)
{
    struct hq_vm *vm = guest_vm_new();
    if (!vm)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (guest_disk_from(vm, i, images[i]) < 0) {
            hq_vm_free(vm);
            return NULL;
        }
    }
    return guest_vm_boot(vm, n, "from images");
}

int
hq_guest_check(struct hq_vm *vm, const char *disk, int *entries,
               long *newest)
{
    CLEANUP_FREE char *s = hq_read_file(vm->console_log);
    CLEANUP_FREE char *tag = xasprintf("ckptd-guest: check %s ", disk);
    char *p = s ? strstr(s, tag) : NULL;
    if (!p)
        return -1;
    p += strlen(tag);
    int ok = strncmp(p, "ok ", 3) == 0;
    char *e = strstr(p, "entries="), *nw = strstr(p, "newest=");
    if (entries)
        *entries = e ? atoi(e + 8) : -1;
    if (newest)
        *newest = nw ? strtol(nw + 7, NULL, 10) : -1;
    return ok;
}

/* --- the blocking guest-agent client --- */

/* Reads what is there within ms into c->buf.  1 if bytes came, 0 on
 * timeout, -1 on EOF. */
static int
qga_fill(struct hq_conn *c, int ms)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    int r = poll(&p, 1, ms < 0 ? 0 : ms);
    if (r <= 0)
        return 0;
    if (c->cap - c->len < 4096) {
        c->cap = c->cap ? c->cap * 2 : 65536;
        c->buf = xrealloc(c->buf, c->cap);
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return 0;
        c->eof = true;
        return -1;
    }
    c->len += (size_t) n;
    return 1;
}

int
hq_qga_sync(struct hq_conn *c, double timeout)
{
    json_int_t id = ((json_int_t) rand() << 20 ^ (json_int_t) getpid() << 8 ^
                     (json_int_t) (hq_now() * 1000)) & 0xffffffffffff;
    id = id ? id : 1;
    CLEANUP_FREE char *line = xasprintf(
        "\xff{\"execute\": \"guest-sync-delimited\", \"arguments\": "
        "{\"id\": %" JSON_INTEGER_FORMAT "}}\n", id);
    if (write(c->fd, line, strlen(line)) != (ssize_t) strlen(line))
        return -1;
    double end = hq_now() + timeout;
    for (;;) {
        /* Everything up to the last 0xFF is stale; the message after it
         * is a sync reply, ours or an older one. */
        char *ff = NULL;
        for (size_t i = 0; i < c->len; i++)
            if (c->buf[i] == '\xff')
                ff = c->buf + i;
        if (ff) {
            size_t drop = (size_t) (ff - c->buf) + 1;
            memmove(c->buf, c->buf + drop, c->len - drop);
            c->len -= drop;
            json_t *j = hq_read_msg(c, end - hq_now());
            bool ours = json_integer_value(json_object_get(j, "return")) == id;
            json_decref(j);
            if (ours)
                return 0;
            continue;
        }
        c->len = 0;
        if (hq_now() > end || qga_fill(c, (int) ((end - hq_now()) * 1000)) < 0)
            return -1;
    }
}

struct hq_conn *
hq_qga_open(struct hq_vm *vm, double timeout)
{
    double end = hq_now() + timeout;
    int fd;
    while ((fd = hq_connect_unix(vm->qga_sock)) < 0) {
        if (hq_now() > end) {
            hq_fail("connect %s: %s", vm->qga_sock, strerror(errno));
            return NULL;
        }
        hq_sleep_ms(50);
    }
    struct hq_conn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->path = xstrdup(vm->qga_sock);
    c->events = json_array();
    /* Until qemu-ga runs, a sync goes unanswered: ask again. */
    while (hq_qga_sync(c, 1) < 0) {
        if (c->eof || hq_now() > end) {
            hq_fail("the guest agent did not answer guest-sync within %g s",
                    timeout);
            hq_conn_close(c);
            return NULL;
        }
    }
    return c;
}

json_t *
hq_qga_exec(struct hq_conn *c, const char *cmd, json_t *args)
{
    json_t *msg = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(msg, "arguments", args);
    if (hq_qga_sync(c, HQ_TIMEOUT) < 0) {
        json_decref(msg);
        hq_fail("the guest agent did not answer guest-sync before %s", cmd);
        return NULL;
    }
    if (hq_send_json(c, msg) < 0) {
        hq_fail("sending %s to the guest agent failed", cmd);
        return NULL;
    }
    json_t *r = hq_read_msg(c, HQ_TIMEOUT);
    if (!r)
        hq_fail("the guest agent did not answer %s", cmd);
    return r;
}

json_t *
hq_qga_cmd(struct hq_conn *c, const char *cmd, json_t *args)
{
    CLEANUP_JSON json_t *r = hq_qga_exec(c, cmd, args);
    if (!r)
        return NULL;
    json_t *ret = json_object_get(r, "return");
    if (!ret) {
        hq_fail("guest agent: %s: %s", cmd, hq_str(r));
        return NULL;
    }
    return json_incref(ret);
}

const char *
hq_qga_freeze_status(struct hq_conn *c)
{
    CLEANUP_JSON json_t *r = hq_qga_cmd(c, "guest-fsfreeze-status", NULL);
    const char *s = json_string_value(r);
    if (s && strcmp(s, "thawed") == 0)
        return "thawed";
    if (s && strcmp(s, "frozen") == 0)
        return "frozen";
    return NULL;
}

/* --- point-in-time copies and what they hold --- */

int
hq_guest_copy_start(struct hq_vm *vm, const char *disk, const char *target)
{
    struct hq_disk *d = hq_vm_disk(vm, disk);
    if (!d) {
        hq_fail("no disk %s", disk);
        return -1;
    }
    CLEANUP_FREE char *size = xasprintf("%" PRId64, d->size);
    CLEANUP_FREE char *out = NULL;
    char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2",
                       (char *) target, size, NULL };
    if (hq_run_cmd(create, &out) != 0) {
        hq_fail("qemu-img create %s: %s", target, out);
        return -1;
    }
    CLEANUP_FREE char *file = xasprintf("hq-copy-%s-file", disk);
    CLEANUP_FREE char *node = xasprintf("hq-copy-%s", disk);
    CLEANUP_JSON json_t *r1 = hq_cmd(vm->mon, "blockdev-add",
        json_pack("{s:s, s:s, s:s}", "driver", "file", "filename", target,
                  "node-name", file));
    CLEANUP_JSON json_t *r2 = r1 ? hq_cmd(vm->mon, "blockdev-add",
        json_pack("{s:s, s:s, s:s}", "driver", "qcow2", "file", file,
                  "node-name", node)) : NULL;
    /* auto-dismiss off: the job stays "concluded", with its error if any,
     * until hq_guest_copy_finish has looked. */
    CLEANUP_JSON json_t *r3 = r2 ? hq_cmd(vm->mon, "blockdev-backup",
        json_pack("{s:s, s:s, s:s, s:s, s:b}", "job-id", node, "device",
                  d->node, "target", node, "sync", "full",
                  "auto-dismiss", false)) : NULL;
    return r3 ? 0 : -1;
}

int
hq_guest_copy_finish(struct hq_vm *vm, const char *disk)
{
    CLEANUP_FREE char *file = xasprintf("hq-copy-%s-file", disk);
    CLEANUP_FREE char *node = xasprintf("hq-copy-%s", disk);
    /* Several copies may run at once: poll this job's own state. */
    double end = hq_now() + 60;
    for (;;) {
        CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
        json_t *job = hq_jfind(jobs, "id", node);
        if (!job) {
            hq_fail("copy of %s: no job %s", disk, node);
            return -1;
        }
        const char *st = hq_jstr(job, "status");
        if (st && strcmp(st, "concluded") == 0) {
            if (hq_jstr(job, "error")) {
                hq_fail("copy of %s: %s", disk, hq_jstr(job, "error"));
                return -1;
            }
            break;
        }
        if (hq_now() > end) {
            hq_fail("copy of %s still %s after 60 s", disk, st ? st : "?");
            return -1;
        }
        hq_sleep_ms(50);
    }
    CLEANUP_JSON json_t *r0 = hq_cmd(vm->mon, "job-dismiss",
                                     json_pack("{s:s}", "id", node));
    if (!r0)
        return -1;
    CLEANUP_JSON json_t *r1 = hq_cmd(vm->mon, "blockdev-del",
                                     json_pack("{s:s}", "node-name", node));
    CLEANUP_JSON json_t *r2 = r1 ? hq_cmd(vm->mon, "blockdev-del",
                                          json_pack("{s:s}", "node-name", file))
                                 : NULL;
    return r2 ? 0 : -1;
}

int
hq_fs_check(const char *image, struct hq_fs_check *out)
{
    memset(out, 0, sizeof *out);
    CLEANUP_FREE char *dir = xasprintf("%s.check-XXXXXX", image);
    if (!mkdtemp(dir)) {
        hq_fail("mkdtemp %s: %s", dir, strerror(errno));
        return -1;
    }
    CLEANUP_FREE char *raw = xasprintf("%s/fs.raw", dir);
    CLEANUP_FREE char *work = xasprintf("%s/work", dir);
    CLEANUP_FREE char *mpath = xasprintf("%s/work/manifest", dir);
    CLEANUP_FREE char *cpath = xasprintf("%s/work/cross", dir);
    CLEANUP_FREE char *cross = NULL;
    CLEANUP_FREE char *rdump = xasprintf("rdump /work %s", dir);
    CLEANUP_FREE char *sum = xasprintf("cd '%s' && sha256sum -c manifest",
                                       work);
    CLEANUP_FREE char *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL,
                      *s5 = NULL, *manifest = NULL;
    char *conv[] = { "qemu-img", "convert", "-O", "raw", (char *) image, raw,
                     NULL };
    char *dump[] = { "dumpe2fs", "-h", raw, NULL };
    char *fsck[] = { "e2fsck", "-fn", raw, NULL };
    char *dbg[] = { "debugfs", "-R", rdump, raw, NULL };
    char *check[] = { "sh", "-c", sum, NULL };
    int rc = -1;

    if (hq_run_cmd(conv, &s1) != 0) {
        hq_fail("qemu-img convert %s: %s", image, s1);
        goto out;
    }
    if (hq_run_cmd(dump, &s2) != 0) {
        hq_fail("dumpe2fs %s: %s", image, s2);
        goto out;
    }
    char *feat = strstr(s2, "Filesystem features:");
    char *eol = feat ? strchr(feat, '\n') : NULL;
    if (eol)
        *eol = 0;
    out->needs_recovery = feat && strstr(feat, "needs_recovery");
    out->fsck_clean = hq_run_cmd(fsck, &s3) == 0;
    if (!out->fsck_clean)
        snprintf(out->detail, sizeof out->detail, "e2fsck: %.400s", s3);
    /* A crash-consistent copy is read as a restore would mount it: after
     * its journal is replayed (on the scratch raw file only); a quiesced
     * one must not need that. */
    if (out->needs_recovery) {
        CLEANUP_FREE char *s6 = NULL;
        char *replay[] = { "e2fsck", "-fy", raw, NULL };
        int st = hq_run_cmd(replay, &s6);
        if (st != 0 && st != 1) {
            hq_fail("e2fsck -fy %s: %s", image, s6);
            goto out;
        }
    }
    if (hq_run_cmd(dbg, &s4) != 0 ||
        !(manifest = hq_read_file(mpath))) {
        hq_fail("debugfs rdump /work of %s: %s", image, s4);
        goto out;
    }
    cross = hq_read_file(cpath);
    /* None yet: the first cross step has not reached this disk. */
    out->cross = cross && *cross ? strtol(cross, NULL, 10) : 0;
    for (char *p = manifest; *p; p++) {
        out->entries += *p == '\n';
        if (p[0] == ' ' && p[1] == 'f' && p[2] >= '0' && p[2] <= '9') {
            long n = strtol(p + 2, NULL, 10);
            if (n > out->newest)
                out->newest = n;
        }
    }
    int st = hq_run_cmd(check, &s5);
    for (char *p = strstr(s5, ": FAILED"); p; p = strstr(p + 1, ": FAILED"))
        out->bad++;
    if (st != 0 && out->bad == 0)
        out->bad = 1;               /* missing files and the like */
    if (st != 0 && out->fsck_clean)
        snprintf(out->detail, sizeof out->detail, "sha256sum: %.400s", s5);
    rc = 0;
out:
    rm_tree(dir);
    return rc;
}
