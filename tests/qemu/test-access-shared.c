/* Sharing a host (issue 13 items 3, 4, 6; PROTOCOL.md "Clients, names
 * and ids").
 *
 * idle-clients:   300 connections that never negotiate: the ones over the
 *                 cap get one Busy "too many clients" line and are closed,
 *                 the others are closed after the handshake timeout (2 s
 *                 here, CKPTD_DEBUG_HANDSHAKE_TIMEOUT), a negotiated client
 *                 stays, and `ckptctl status` started in the middle of it
 *                 succeeds (it retries on Busy)
 * impostor:       a fake agent run as uid 65534 that greets like ckptd:
 *                 ckptctl refuses it and says why; --trust-uid 65534 lets
 *                 it through
 * socket-group:   --socket-group nogroup: the control socket is 0660
 *                 root:nogroup in a 0710 directory the agent made; uid
 *                 65534 runs `ckptctl status` (exit 0, "connected") with
 *                 --allow-uid 65534, and is refused without it
 * nbd-socket-group: with the same options the NBD socket of a backup is
 *                 0660 root:nogroup and uid 65534 reads the export
 *                 (skipped while the agent does not set it yet)
 * unsafe-dirs:    ckptd exits non-zero, naming the reason, for a control,
 *                 NBD or scratch directory owned by another user or
 *                 writable by others without the sticky bit; a sticky
 *                 world-writable one is fine
 * launcher-dirs:  contrib/launch-vm.sh refuses the same run directories
 * launcher-group: launch-vm.sh --socket-group nogroup --allow-uid 65534:
 *                 uid 65534's `ckptctl status` works
 */
#include "tests/qemu/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define NOBODY 65534


/* out on one line, for notes. */
static const char *
flat(char *out)
{
    for (char *p = out; p && *p; p++)
        if (*p == '\n')
            *p = *(p + 1) ? '|' : '\0';
    return out ? out : "";
}

/* Runs argv (NULL-terminated), as uid/gid NOBODY when as_nobody, with its
 * output in *out; returns the exit status. */
static int
run(bool as_nobody, const char *const *argv, char **out)
{
    const char *full[32];
    size_t n = 0;
    if (as_nobody) {
        full[n++] = "setpriv";
        full[n++] = "--reuid=65534";
        full[n++] = "--regid=65534";
        full[n++] = "--clear-groups";
        full[n++] = "--";
    }
    for (; *argv && n < ARRAY_SIZE(full) - 1; argv++)
        full[n++] = *argv;
    full[n] = NULL;
    return hq_run_cmd((char *const *) full, out);
}

/* Whether fd is closed by the peer within timeout seconds; *line gets
 * the first line it sent that is not the greeting (caller frees), if any. */
static bool
closed_within(int fd, double timeout, char **line)
{
    char buf[8192];
    size_t len = 0;
    double end = hq_now() + timeout;
    *line = NULL;
    for (;;) {
        int ms = (int) ((end - hq_now()) * 1000);
        struct pollfd p = { fd, POLLIN, 0 };
        if (ms <= 0 || poll(&p, 1, ms) <= 0)
            return false;
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r > 0) {
            len += (size_t) r;
            if (len < sizeof buf - 1)
                continue;
        }
        buf[len] = '\0';
        for (char *l = buf, *nl; (nl = strchr(l, '\n')); l = nl + 1) {
            *nl = '\0';
            if (!strstr(l, "\"QMP\"")) {
                *line = xstrdup(l);
                break;
            }
        }
        return true;
    }
}

static int
case_idle_clients(void)
{
    setenv("CKPTD_DEBUG_HANDSHAKE_TIMEOUT", "2", 1);
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, NULL);
    unsetenv("CKPTD_DEBUG_HANDSHAKE_TIMEOUT");
    if (!vm)
        return -1;
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    enum { N = 300 };
    static int fds[N];
    double t0 = hq_now();
    for (int i = 0; i < N; i++) {
        fds[i] = hq_connect_unix(vm->ctl_sock);
        HQ_CHECK(fds[i] >= 0, "connect %d: %s", i, strerror(errno));
    }
    /* In the middle of it: ckptctl waits its turn. */
    CLEANUP_FREE char *out = NULL;
    int rc = run(false, (const char *[]) { bin, "--socket", vm->ctl_sock, "--timeout", "30",
                                           "status", NULL }, &out);
    hq_note("ckptctl status after %.1f s: exit %d: %s", hq_now() - t0, rc, flat(out));
    HQ_CHECK(rc == 0 && strstr(out, "connected"), "ckptctl status with %d idle "
             "clients: exit %d: %s", N, rc, out);
    /* Every idle one is closed: over the cap at once with Busy, the rest
     * by the handshake timeout (the wait bounds both). */
    int busy = 0, timed_out = 0;
    for (int i = 0; i < N; i++) {
        CLEANUP_FREE char *line = NULL;
        bool closed = closed_within(fds[i], 10, &line);
        close(fds[i]);
        HQ_CHECK(closed, "idle client #%d still open %.1f s after connecting", i,
                 hq_now() - t0);
        CLEANUP_JSON json_t *j = line ? json_loads(line, 0, NULL) : NULL;
        const char *cls = hq_err_class(j), *desc = hq_err_desc(j);
        if (cls && strcmp(cls, "Busy") == 0 && strstr(desc, "too many clients"))
            busy++;
        else if (cls && strstr(desc, "qmp_capabilities"))
            timed_out++;
        else
            HQ_CHECK(false, "idle client #%d was closed after '%s'", i, line ? line : "");
    }
    hq_note("%d refused as too many, %d closed by the handshake timeout", busy, timed_out);
    HQ_CHECK(busy == N - 255, "%d clients got Busy", busy);
    /* The negotiated client was not touched. */
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(st && hq_jstr(st, "qemu"), "the negotiated client: %s", hq_str(st));
    return 0;
}

/* A fake agent: greets like ckptd and says yes to everything. */
static void
fake_agent(int lfd)
{
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(0);
        const char *greeting = "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 0, "
            "\"minor\": 1, \"micro\": 0}, \"package\": \"ckptd 0.1.0\"}, "
            "\"capabilities\": []}}\n";
        (void) !write(fd, greeting, strlen(greeting));
        char buf[4096];
        size_t len = 0;
        ssize_t n;
        while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0) {
            len += (size_t) n;
            buf[len] = '\0';
            char *nl;
            while ((nl = strchr(buf, '\n'))) {
                *nl = '\0';
                json_t *req = json_loads(buf, 0, NULL);
                json_t *ret = strstr(buf, "query-status")
                    ? json_pack("{s:s,s:s,s:i,s:i}", "qemu", "connected", "vm", "running",
                                "checkpoints", 0, "jobs", 0)
                    : strstr(buf, "query-version") ? json_pack("{s:s}", "ckptd", "0.1.0")
                    : json_object();
                json_t *rep = json_pack("{s:o,s:O}", "return", ret, "id",
                                        json_object_get(req, "id"));
                char *s = json_dumps(rep, JSON_COMPACT);
                char *line = xasprintf("%s\n", s);
                (void) !write(fd, line, strlen(line));
                free(line);
                free(s);
                json_decref(rep);
                json_decref(req);
                len -= (size_t) (nl + 1 - buf);
                memmove(buf, nl + 1, len + 1);
            }
        }
        close(fd);
    }
}

static int
case_impostor(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *dir = xasprintf("%s/shared", vm->dir);
    CLEANUP_FREE char *sock = xasprintf("%s/ckptd.sock", dir);
    HQ_CHECK(mkdir(dir, 01777) == 0 && chmod(dir, 01777) == 0 && chmod(vm->dir, 0711) == 0,
             "mkdir %s: %s", dir, strerror(errno));
    int ready[2];
    HQ_CHECK(pipe(ready) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm(60);
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(1);
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock);
        int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        umask(0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sun, sizeof sun) < 0 ||
            listen(lfd, 16) < 0)
            _exit(1);
        (void) !write(ready[1], "R", 1);
        fake_agent(lfd);
    }
    close(ready[1]);
    char r;
    bool up = read(ready[0], &r, 1) == 1;
    close(ready[0]);
    int ret = 0;
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    CLEANUP_FREE char *out = NULL, *out2 = NULL;
    if (!up) {
        hq_fail("the fake agent did not start");
        ret = -1;
        goto out;
    }
    int rc = run(false, (const char *[]) { bin, "--socket", sock, "status", NULL }, &out);
    hq_note("ckptctl against the impostor: exit %d: %s", rc, flat(out));
    if (rc != 3 || !strstr(out, "refusing") || !strstr(out, "uid 65534") ||
        strstr(out, "connected")) {
        hq_fail("ckptctl believed a uid %d socket: exit %d: %s", NOBODY, rc, out);
        ret = -1;
        goto out;
    }
    rc = run(false, (const char *[]) { bin, "--trust-uid", "65534", "--socket", sock,
                                       "status", NULL }, &out2);
    if (rc != 0 || !strstr(out2, "connected")) {
        hq_fail("with --trust-uid 65534: exit %d: %s", rc, out2);
        ret = -1;
    }
out:
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return ret;
}

/* A VM whose agent serves DIR/run/ckptd.sock with extra arguments. */
static struct hq_vm *
vm_in_run_dir(const char *const *extra)
{
    struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, false);
    if (!vm)
        return NULL;
    free(vm->ctl_sock);
    vm->ctl_sock = xasprintf("%s/run/ckptd.sock", vm->dir);
    /* Others may pass through the test's directory, not list it. */
    CLEANUP_FREE char *scratch = xasprintf("%s/scratch", vm->dir);
    if (chmod(vm->dir, 0711) < 0 || hq_agent_add_arg(vm, "--scratch-dir") < 0 ||
        hq_agent_add_arg(vm, scratch) < 0)
        goto fail;
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

static int
case_socket_group(void)
{
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    HQ_CHECK(access(bin, X_OK) == 0, "no ckptctl at %s", bin);
    {
        const char *extra[] = { "--socket-group", "nogroup", "--allow-uid", "65534", NULL };
        CLEANUP_VM struct hq_vm *vm = vm_in_run_dir(extra);
        if (!vm)
            return -1;
        struct stat st;
        HQ_CHECK(lstat(vm->ctl_sock, &st) == 0 && S_ISSOCK(st.st_mode) &&
                 (st.st_mode & 07777) == 0660 && st.st_gid == NOBODY,
                 "control socket mode %04o gid %u", (unsigned) (st.st_mode & 07777),
                 (unsigned) st.st_gid);
        CLEANUP_FREE char *run_dir = xasprintf("%s/run", vm->dir);
        HQ_CHECK(stat(run_dir, &st) == 0 && (st.st_mode & 07777) == 0710 &&
                 st.st_gid == NOBODY, "%s: mode %04o gid %u", run_dir,
                 (unsigned) (st.st_mode & 07777), (unsigned) st.st_gid);
        CLEANUP_FREE char *out = NULL;
        int rc = run(true, (const char *[]) { bin, "--socket", vm->ctl_sock, "status", NULL },
                     &out);
        hq_note("uid %d, allowed: exit %d: %s", NOBODY, rc, flat(out));
        HQ_CHECK(rc == 0 && strstr(out, "connected"), "uid %d with --allow-uid: exit %d: %s",
                 NOBODY, rc, out);
    }
    {
        const char *extra[] = { "--socket-group", "nogroup", NULL };
        CLEANUP_VM struct hq_vm *vm = vm_in_run_dir(extra);
        if (!vm)
            return -1;
        CLEANUP_FREE char *out = NULL;
        int rc = run(true, (const char *[]) { bin, "--socket", vm->ctl_sock, "status", NULL },
                     &out);
        hq_note("uid %d, not allowed: exit %d: %s", NOBODY, rc, flat(out));
        HQ_CHECK(rc == 3 && !strstr(out, "connected"), "uid %d without --allow-uid: "
                 "exit %d: %s", NOBODY, rc, out);
        CLEANUP_FREE char *log = hq_read_file(vm->agent_log);
        HQ_CHECK(log && strstr(log, "refused a control client with uid 65534"),
                 "the refusal is not in the agent's log");
        /* Root still gets in. */
        CLEANUP_FREE char *out2 = NULL;
        rc = run(false, (const char *[]) { bin, "--socket", vm->ctl_sock, "status", NULL },
                 &out2);
        HQ_CHECK(rc == 0, "root: exit %d: %s", rc, out2);
    }
    return 0;
}

/* The NBD socket follows the control socket: 0660 and the group, and an
 * allowed member of the group reads the export.  The agent gives it that
 * access right after nbd-server-start (access_socket); until that call is
 * in place the case says so and is skipped. */
static int
case_nbd_socket_group(void)
{
    const char *extra[] = { "--socket-group", "nogroup", "--allow-uid", "65534", NULL };
    CLEANUP_VM struct hq_vm *vm = vm_in_run_dir(extra);
    if (!vm)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0x5a, 0, 64 * 1024) == 0, "guest write");
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin", json_object());
    HQ_CHECK(job, "backup-begin");
    const char *uri = hq_jstr(hq_jfind(json_object_get(job, "disks"), "disk", "vda"), "uri");
    const char *q = uri ? strstr(uri, "socket=") : NULL;
    HQ_CHECK(q, "no socket in the export uri %s", uri);
    struct stat st;
    HQ_CHECK(lstat(q + 7, &st) == 0 && S_ISSOCK(st.st_mode), "no NBD socket %s", q + 7);
    HQ_CHECK((st.st_mode & 07777) != 0600, "the NBD socket %s is still 0600", q + 7);
    HQ_CHECK((st.st_mode & 07777) == 0660 && st.st_gid == NOBODY,
             "NBD socket mode %04o gid %u", (unsigned) (st.st_mode & 07777),
             (unsigned) st.st_gid);
    CLEANUP_FREE char *out = NULL;
    int rc = run(true, (const char *[]) { "nbdinfo", "--size", uri, NULL }, &out);
    HQ_CHECK(rc == 0 && strtoll(out, NULL, 10) == 64 * MiB, "uid %d reading %s: exit %d: %s",
             NOBODY, uri, rc, out);
    /* A user outside the group cannot even connect to the NBD socket. */
    CLEANUP_FREE char *out2 = NULL;
    const char *other[] = { "setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                            "--", "nbdinfo", "--size", uri, NULL };
    rc = hq_run_cmd((char *const *) other, &out2);
    HQ_CHECK(rc != 0, "uid 65533, not in the group, read the export: %s", out2);
    return hq_backup_end(vm, job);
}

/* An allowed user (uid 65534, in the socket group) takes a whole backup
 * with ckptctl pull into a directory of its own and restores it: the
 * restored image is the disk.  A user who is not allowed is refused on
 * the control socket, and the pull leaves nothing behind. */
static int
case_pull_as_other_user(void)
{
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    const char *extra[] = { "--socket-group", "nogroup", "--allow-uid", "65534", NULL };
    CLEANUP_VM struct hq_vm *vm = vm_in_run_dir(extra);
    if (!vm)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0x6b, 0, 256 * 1024) == 0 &&
             hq_write(vm, "vda", 0x6c, 32 * MiB, 64 * 1024) == 0, "guest writes");
    CLEANUP_FREE char *home = xasprintf("%s/nobody", vm->dir);
    HQ_CHECK(mkdir(home, 0700) == 0 && chown(home, NOBODY, NOBODY) == 0, "its directory");
    CLEANUP_FREE char *out = xasprintf("%s/backups", home);
    CLEANUP_FREE char *img = xasprintf("%s/vda.raw", home);
    CLEANUP_FREE char *o1 = NULL, *o2 = NULL, *o3 = NULL;
    int rc = run(true, (const char *[]) { bin, "--socket", vm->ctl_sock, "pull",
                                          "--output", out, "--checkpoint", "u1", NULL }, &o1);
    HQ_CHECK(rc == 0, "pull as uid %d: exit %d: %s", NOBODY, rc, o1);
    rc = run(true, (const char *[]) { bin, "restore", out, "--disk", "vda", "--output", img,
                                      "--format", "raw", NULL }, &o2);
    HQ_CHECK(rc == 0, "restore as uid %d: exit %d: %s", NOBODY, rc, o2);
    /* The guest's writes reach the image file with a flush. */
    HQ_CHECK(hq_hmp(vm, "qemu-io -d vda/virtio-backend \"flush\"") == 0, "flush");
    char *cmp[] = { "qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", img,
                    hq_vm_disk(vm, "vda")->path, NULL };
    rc = hq_run_cmd(cmp, &o3);
    HQ_CHECK(rc == 0, "the restored image differs from the disk (%d): %s", rc, o3);
    CLEANUP_JSON json_t *u1 = hq_ckpt_get(vm->ctl, "u1", false);
    HQ_CHECK(u1, "the pull's checkpoint");
    return hq_backup_expect_clean(vm, "after the other user's pull");
}

/* Runs ckptd with a control socket in dir (and extra arguments); it
 * must exit non-zero within 10 s, its output naming dir and must_say. */
static int
agent_refuses(struct hq_vm *vm, const char *dir, const char *const *extra,
              const char *must_say)
{
    CLEANUP_FREE char *ctl = xasprintf("%s/ckptd.sock", dir);
    CLEANUP_FREE char *qmp = xasprintf("%s/none.sock", vm->dir);
    const char *argv[16] = { "timeout", "10", hq_agent_path(), "--qmp", qmp,
                             "--control", ctl };
    size_t n = 7;
    for (; extra && *extra; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    CLEANUP_FREE char *out = NULL;
    int rc = run(false, argv, &out);
    hq_note("ckptd with %s: exit %d: %s", dir, rc, flat(out));
    HQ_CHECK(rc != 0 && rc != 124, "ckptd accepted %s (exit %d)", dir, rc);
    HQ_CHECK(strstr(out, "refusing") && strstr(out, must_say),
             "the reason does not say '%s': %s", must_say, out);
    struct stat st;
    HQ_CHECK(lstat(ctl, &st) < 0, "a control socket was created in %s", dir);
    return 0;
}

static int
case_unsafe_dirs(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *other = xasprintf("%s/other-owner", vm->dir);
    CLEANUP_FREE char *open_dir = xasprintf("%s/world-writable", vm->dir);
    CLEANUP_FREE char *group_dir = xasprintf("%s/group-writable", vm->dir);
    CLEANUP_FREE char *sticky = xasprintf("%s/sticky", vm->dir);
    CLEANUP_FREE char *below = xasprintf("%s/sub/deeper", open_dir);
    HQ_CHECK(mkdir(other, 0700) == 0 && chown(other, NOBODY, NOBODY) == 0 &&
             mkdir(open_dir, 0777) == 0 && chmod(open_dir, 0777) == 0 &&
             mkdir(group_dir, 0770) == 0 && chmod(group_dir, 0770) == 0 &&
             mkdir(sticky, 0777) == 0 && chmod(sticky, 01777) == 0,
             "setup: %s", strerror(errno));
    if (agent_refuses(vm, other, NULL, "owned by uid 65534") < 0 ||
        agent_refuses(vm, open_dir, NULL, "no sticky bit") < 0 ||
        agent_refuses(vm, group_dir, NULL, "its group") < 0 ||
        /* Not there yet, below a world-writable one. */
        agent_refuses(vm, below, NULL, open_dir) < 0)
        return -1;
    /* The NBD socket's and the scratch directory count as much. */
    CLEANUP_FREE char *nbd = xasprintf("%s/nbd.sock", open_dir);
    CLEANUP_FREE char *safe = xasprintf("%s/safe", vm->dir);
    HQ_CHECK(mkdir(safe, 0700) == 0, "mkdir");
    if (agent_refuses(vm, safe, (const char *[]) { "--nbd-socket", nbd, NULL },
                      "NBD socket directory") < 0 ||
        agent_refuses(vm, safe, (const char *[]) { "--scratch-dir", other, NULL },
                      "scratch directory") < 0)
        return -1;
    /* Sticky and world-writable, like /tmp: accepted. */
    {
        CLEANUP_VM struct hq_vm *ok = hq_vm_simple(1, 64 * MiB, false);
        HQ_CHECK(ok, "setup");
        free(ok->ctl_sock);
        ok->ctl_sock = xasprintf("%s/ckptd.sock", sticky);
        HQ_CHECK(hq_agent_start(ok) == 0, "ckptd refused the sticky directory %s", sticky);
    }
    return 0;
}

static int
case_launcher_dirs(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *other = xasprintf("%s/other-owner", vm->dir);
    CLEANUP_FREE char *open_dir = xasprintf("%s/world-writable", vm->dir);
    CLEANUP_FREE char *below = xasprintf("%s/vm1", open_dir);
    HQ_CHECK(mkdir(other, 0700) == 0 && chown(other, NOBODY, NOBODY) == 0 &&
             mkdir(open_dir, 0777) == 0 && chmod(open_dir, 0777) == 0, "setup");
    const char *dirs[] = { other, open_dir, below };
    const char *says[] = { "owned by uid 65534", "no sticky bit", "no sticky bit" };
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        CLEANUP_FREE char *out = NULL;
        int rc = run(false, (const char *[]) { "contrib/launch-vm.sh", "--run-dir", dirs[i],
                                               "--ckptd", hq_agent_path(), "--", "-S", NULL },
                     &out);
        hq_note("launch-vm.sh --run-dir %s: exit %d: %s", dirs[i], rc, flat(out));
        HQ_CHECK(rc == 1 && strstr(out, "launch-vm: refusing") && strstr(out, says[i]),
                 "launch-vm.sh --run-dir %s: exit %d: %s", dirs[i], rc, out);
        struct stat st;
        CLEANUP_FREE char *qmp = xasprintf("%s/qmp.sock", dirs[i]);
        HQ_CHECK(lstat(qmp, &st) < 0, "QEMU was started in %s", dirs[i]);
    }
    return 0;
}

/* launch-vm.sh --socket-group nogroup --allow-uid 65534: uid 65534's
 * ckptctl status works against the launched VM. */
static int
case_launcher_group(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm && chmod(vm->dir, 0711) == 0, "setup");
    CLEANUP_FREE char *run_dir = xasprintf("%s/run", vm->dir);
    CLEANUP_FREE char *ready = xasprintf("%s/ready", run_dir);
    CLEANUP_FREE char *sock = xasprintf("%s/ckptd.sock", run_dir);
    CLEANUP_FREE char *log = xasprintf("%s/launcher.log", vm->dir);
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("contrib/launch-vm.sh", "launch-vm.sh", "--name", "grp", "--run-dir", run_dir,
              "--ckptd", hq_agent_path(), "--socket-group", "nogroup", "--allow-uid", "65534",
              "--", "-S", (char *) NULL);
        _exit(127);
    }
    int ret = 0;
    double end = hq_now() + 40;
    struct stat st;
    while (lstat(ready, &st) < 0 && hq_now() < end && waitpid(pid, NULL, WNOHANG) == 0)
        hq_sleep_ms(100);
    CLEANUP_FREE char *out = NULL;
    if (lstat(ready, &st) < 0) {
        CLEANUP_FREE char *l = hq_read_file(log);
        hq_fail("the launcher did not get ready: %s", flat(l));
        ret = -1;
    } else if (stat(run_dir, &st) < 0 || (st.st_mode & 07777) != 0710 || st.st_gid != NOBODY) {
        hq_fail("%s: mode %04o gid %u", run_dir, (unsigned) (st.st_mode & 07777),
                (unsigned) st.st_gid);
        ret = -1;
    } else {
        int rc = run(true, (const char *[]) { bin, "--socket", sock, "status", NULL }, &out);
        hq_note("uid %d through the launcher: exit %d: %s", NOBODY, rc, flat(out));
        if (rc != 0 || !strstr(out, "connected")) {
            hq_fail("uid %d: exit %d: %s", NOBODY, rc, out);
            ret = -1;
        }
    }
    kill(pid, SIGTERM);
    int wst = 0;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
        ;
    if (!ret && lstat(sock, &st) == 0) {
        hq_fail("the control socket outlived the launcher");
        ret = -1;
    }
    return ret;
}

int
main(void)
{
    static const struct hq_case all[] = {
        { "idle-clients", case_idle_clients },
        { "impostor", case_impostor },
        { "socket-group", case_socket_group },
        { "nbd-socket-group", case_nbd_socket_group },
        { "pull-as-other-user", case_pull_as_other_user },
        { "unsafe-dirs", case_unsafe_dirs },
        { "launcher-dirs", case_launcher_dirs },
        { "launcher-group", case_launcher_group },
    };
    /* Other uids need root; without it those cases are left out. */
    struct hq_case cases[ARRAY_SIZE(all)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        if (all[i].fn != case_idle_clients && geteuid() != 0) {
            const char *only = getenv("HQ_ONLY");
            if (!only || !*only || strcmp(only, all[i].name) == 0)
                printf("SKIP %s: not root\n", all[i].name);
            continue;
        }
        cases[n++] = all[i];
    }
    return hq_run(cases, n);
}
