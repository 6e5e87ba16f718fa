/* Who may connect (issue 4, point 6).
 *
 * socket-modes:    the control socket is 0600 in a directory others cannot
 *                  write; the Unix NBD socket is 0600 while a backup runs
 * other-uid:       a client of another uid (65534) is closed without a
 *                  greeting even when the file modes let it connect (the
 *                  SO_PEERCRED check); --allow-uid 65534 lets it in
 * tcp-refused:     NBD over TCP without TLS and without --insecure-tcp is
 *                  Unsupported and creates nothing
 * tcp-insecure:    with --insecure-tcp a full backup is readable over
 *                  nbd://127.0.0.1:PORT/vda
 * tcp-tls:         with --tls-dir the export needs TLS: nbds:// with the CA
 *                  works, plain nbd:// does not
 * path-escape:     an NBD socket or scratch-dir outside the configured
 *                  directories is InvalidParameter and creates nothing
 */
#include "tests/qemu/harness.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define KiB 1024
#define NOBODY 65534

/* ------------------------------------------------------------- helpers */

/* A TCP port nobody listens on right now. */
static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *) &sa, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static bool
tcp_listening(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Nothing of a backup exists in QEMU or on disk. */
static int
check_nothing_created(struct hq_vm *vm, json_t *before)
{
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
    HQ_CHECK(ex && json_array_size(ex) == 0, "exports: %s", hq_str(ex));
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
    HQ_CHECK(jobs && json_array_size(jobs) == 0, "jobs: %s", hq_str(jobs));
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        json_pack("{s:b}", "flat", 1));
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const char *name = hq_jstr(n, "node-name");
        HQ_CHECK(name && strncmp(name, "ckptd-", 6) != 0, "node %s", name);
    }
    CLEANUP_JSON json_t *bj = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(json_is_array(bj) && json_array_size(bj) == 0, "backup jobs: %s", hq_str(bj));
    /* Scratch images only: the test puts links and dirs there. */
    HQ_CHECK(hq_count_scratch(vm->dir, ".qcow2") == 0, "scratch files in %s", vm->dir);
    CLEANUP_FREE char *nbd = hq_nbd_sock(vm);
    struct stat st;
    HQ_CHECK(lstat(nbd, &st) < 0, "an NBD socket %s exists", nbd);
    return 0;
}

/* Reads [off, off+len) through libnbd on h and compares with pattern. */
static int
nbd_expect(struct nbd_handle *h, const char *what, int pattern, int64_t off, int64_t len)
{
    CLEANUP_FREE unsigned char *buf = xmalloc((size_t) len);
    if (nbd_pread(h, buf, (size_t) len, (uint64_t) off, 0) < 0) {
        hq_fail("%s: nbd_pread: %s", what, nbd_get_error());
        return -1;
    }
    for (int64_t i = 0; i < len; i++)
        if (buf[i] != (unsigned char) pattern) {
            hq_fail("%s: byte %" PRId64 " is 0x%02x, expected 0x%02x", what, off + i,
                    buf[i], pattern & 0xff);
            return -1;
        }
    return 0;
}

/* The data written by write_data(), read through an open connection. */
static int
check_data(struct nbd_handle *h, const char *what)
{
    if (nbd_get_size(h) != 64 * MiB) {
        hq_fail("%s: export size %" PRId64, what, nbd_get_size(h));
        return -1;
    }
    if (nbd_expect(h, what, 0x71, 0, 64 * KiB) < 0 ||
        nbd_expect(h, what, 0x72, 8 * MiB, 192 * KiB) < 0 ||
        nbd_expect(h, what, 0x00, 1 * MiB, 64 * KiB) < 0)
        return -1;
    return 0;
}

static int
write_data(struct hq_vm *vm)
{
    HQ_CHECK(hq_write(vm, "vda", 0x71, 0, 64 * KiB) == 0 &&
             hq_write(vm, "vda", 0x72, 8 * MiB, 192 * KiB) == 0, "guest writes");
    return 0;
}

static int
end_backup(struct hq_vm *vm, json_t *job)
{
    CLEANUP_JSON json_t *e = hq_cmd(vm->ctl, "backup-end",
                                    json_pack("{s:s}", "id", hq_jstr(job, "id")));
    HQ_CHECK(e, "backup-end");
    CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
    HQ_CHECK(ex && json_array_size(ex) == 0, "exports after backup-end: %s", hq_str(ex));
    HQ_CHECK(hq_count_scratch(vm->dir, ".qcow2") == 0, "scratch files after backup-end");
    return 0;
}

/* ------------------------------------------------------------- other uid */

/* In a child running as uid/gid NOBODY: connects to path and reports
 * through the exit status: 0 closed without a greeting, 1 greeted and
 * query-status answered, 2 greeted but no answer, 3 connect refused by
 * the kernel (EACCES), 4 anything else, 5 no EOF and no greeting. */
static int
as_nobody(const char *path)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm(20);
        signal(SIGALRM, SIG_DFL);
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(4);
        int fd = hq_connect_unix(path);
        if (fd < 0)
            _exit(errno == EACCES ? 3 : 4);
        char buf[4096];
        size_t len = 0;
        double end = hq_now() + 5;
        /* The greeting, or EOF. */
        while (!memchr(buf, '\n', len)) {
            struct pollfd p = { fd, POLLIN, 0 };
            int ms = (int) ((end - hq_now()) * 1000);
            if (ms <= 0 || poll(&p, 1, ms) <= 0)
                _exit(5);
            ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
            if (n <= 0)
                _exit(len == 0 ? 0 : 4);
            len += (size_t) n;
        }
        const char *req = "{\"execute\": \"qmp_capabilities\"}\n"
                          "{\"execute\": \"query-status\", \"id\": \"nobody\"}\n";
        if (write(fd, req, strlen(req)) != (ssize_t) strlen(req))
            _exit(2);
        len = 0;
        while (len < sizeof buf - 1) {
            struct pollfd p = { fd, POLLIN, 0 };
            int ms = (int) ((end - hq_now()) * 1000);
            if (ms <= 0 || poll(&p, 1, ms) <= 0)
                _exit(2);
            ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
            if (n <= 0)
                _exit(2);
            len += (size_t) n;
            buf[len] = 0;
            if (strstr(buf, "\"nobody\"") && strstr(buf, "\"return\""))
                _exit(1);
        }
        _exit(2);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Lets the kernel allow a connect by anyone, so that only the agent's own
 * peer check stands between another uid and the control socket. */
static int
open_up(struct hq_vm *vm)
{
    HQ_CHECK(chmod(vm->ctl_sock, 0666) == 0 && chmod(vm->dir, 0755) == 0,
             "chmod: %s", strerror(errno));
    return 0;
}

/* ------------------------------------------------------------------ cases */

static int
case_socket_modes(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, NULL);
    if (!vm)
        return -1;
    struct stat st;
    HQ_CHECK(lstat(vm->ctl_sock, &st) == 0, "stat %s: %s", vm->ctl_sock, strerror(errno));
    HQ_CHECK(S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0600,
             "control socket mode %o", (unsigned) (st.st_mode & 07777));
    HQ_CHECK(st.st_uid == geteuid(), "control socket owned by %d", (int) st.st_uid);
    CLEANUP_FREE char *dir = xstrdup(vm->ctl_sock);
    HQ_CHECK(stat(dirname(dir), &st) == 0 && !(st.st_mode & 022),
             "the control socket's directory has mode %o", (unsigned) (st.st_mode & 07777));

    /* A control socket in a directory the agent creates: owner only. */
    {
        CLEANUP_VM struct hq_vm *vm2 = hq_vm_new();
        HQ_CHECK(vm2, "second directory");
        free(vm2->ctl_sock);
        vm2->ctl_sock = xasprintf("%s/run/sub/ckptd.sock", vm2->dir);
        free(vm2->qmp_sock);
        vm2->qmp_sock = xasprintf("%s/no-qemu.sock", vm2->dir);   /* not waited for */
        if (hq_agent_spawn(vm2) < 0)
            return -1;
        CLEANUP_FREE char *d2 = xasprintf("%s/run/sub", vm2->dir);
        HQ_CHECK(stat(d2, &st) == 0 && (st.st_mode & 0777) == 0700,
                 "the agent created %s with mode %o", d2, (unsigned) (st.st_mode & 0777));
        HQ_CHECK(lstat(vm2->ctl_sock, &st) == 0 && (st.st_mode & 0777) == 0600,
                 "control socket mode %o", (unsigned) (st.st_mode & 0777));
        if (hq_agent_stop(vm2) < 0)
            return -1;
    }

    /* The Unix NBD socket while a backup runs. */
    if (write_data(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin", json_object());
    HQ_CHECK(job, "backup-begin");
    CLEANUP_FREE char *nbd = hq_nbd_sock(vm);
    HQ_CHECK(lstat(nbd, &st) == 0, "no NBD socket at %s", nbd);
    HQ_CHECK(S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0600,
             "NBD socket %s has mode %o", nbd, (unsigned) (st.st_mode & 07777));
    const char *uri = hq_jstr(hq_jfind(json_object_get(job, "disks"), "disk", "vda"), "uri");
    HQ_CHECK(uri && strstr(uri, nbd), "uri %s does not name %s", uri, nbd);
    struct nbd_handle *h = nbd_create();
    int r = nbd_connect_uri(h, uri) < 0 ? (hq_fail("%s: %s", uri, nbd_get_error()), -1)
                                        : check_data(h, "unix export");
    nbd_close(h);
    if (r < 0)
        return -1;
    if (end_backup(vm, job) < 0)
        return -1;
    HQ_CHECK(lstat(nbd, &st) < 0, "the NBD socket outlived the backup");
    return 0;
}

static int
case_other_uid(void)
{
    {
        CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, NULL);
        if (!vm)
            return -1;
        /* As created, the kernel keeps nobody out. */
        int r = as_nobody(vm->ctl_sock);
        HQ_CHECK(r == 3, "uid %d connecting to the 0600 socket in a 0700 directory: "
                 "result %d, expected EACCES", NOBODY, r);
        /* With the modes opened, only the peer check is left. */
        if (open_up(vm) < 0)
            return -1;
        r = as_nobody(vm->ctl_sock);
        HQ_CHECK(r == 0, "uid %d was not closed without a greeting (result %d)", NOBODY, r);
        CLEANUP_FREE char *log = hq_read_file(vm->agent_log);
        HQ_CHECK(log && strstr(log, "refused a control client with uid 65534"),
                 "the refusal is not in the log");
        /* Root and the agent's own user still get in. */
        CLEANUP_CONN struct hq_conn *c = hq_conn_open(vm->ctl_sock, 5);
        HQ_CHECK(c, "root refused");
        CLEANUP_JSON json_t *st = hq_cmd(c, "query-status", NULL);
        HQ_CHECK(st && hq_jstr(st, "qemu"), "query-status: %s", hq_str(st));
    }
    {
        const char *extra[] = { "--allow-uid", "65534", NULL };
        CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, extra);
        if (!vm || open_up(vm) < 0)
            return -1;
        int r = as_nobody(vm->ctl_sock);
        HQ_CHECK(r == 1, "uid %d with --allow-uid %d: result %d, expected a greeting "
                 "and a query-status answer", NOBODY, NOBODY, r);
        /* Accepted by the peer check, not refused first. */
        CLEANUP_FREE char *log = hq_read_file(vm->agent_log);
        HQ_CHECK(log && !strstr(log, "refused a control client"), "a refusal was logged");
    }
    return 0;
}

static int
case_tcp_refused(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, NULL);
    if (!vm || write_data(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    int port = free_port();
    HQ_CHECK(port > 0, "no free port");
    /* Plain TCP, by default and when asked for. */
    json_t *servers[] = {
        json_pack("{s:s,s:s,s:i}", "transport", "tcp", "host", "127.0.0.1", "port", port),
        json_pack("{s:s,s:s,s:i,s:b}", "transport", "tcp", "host", "127.0.0.1",
                  "port", port, "tls", 0),
        json_pack("{s:s,s:s,s:i,s:b}", "transport", "tcp", "host", "127.0.0.1",
                  "port", port, "tls", 1),
    };
    for (size_t i = 0; i < ARRAY_SIZE(servers); i++) {
        json_t *args = json_pack("{s:o}", "server", servers[i]);
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Unsupported", "backup-begin", args);
        HQ_CHECK(r, "backup over TCP without TLS or --insecure-tcp (server %zu)", i);
        hq_note("%s", hq_err_desc(r));
        HQ_CHECK(!tcp_listening(port), "something listens on port %d", port);
        if (check_nothing_created(vm, before) < 0)
            return -1;
    }
    /* With a new checkpoint in the same request: no checkpoint either. */
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Unsupported", "backup-begin",
        json_pack("{s:{s:s},s:{s:s,s:s,s:i}}", "checkpoint", "name", "t1", "server",
                  "transport", "tcp", "host", "127.0.0.1", "port", port));
    HQ_CHECK(r, "backup with a checkpoint over plain TCP");
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "checkpoints: %s", names);
    return check_nothing_created(vm, before);
}

static int
case_tcp_insecure(void)
{
    const char *extra[] = { "--insecure-tcp", NULL };
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, extra);
    if (!vm || write_data(vm) < 0)
        return -1;
    int port = free_port();
    HQ_CHECK(port > 0, "no free port");
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
        json_pack("{s:{s:s,s:s,s:i}}", "server", "transport", "tcp",
                  "host", "127.0.0.1", "port", port));
    HQ_CHECK(job, "backup-begin over TCP with --insecure-tcp");
    const char *uri = hq_jstr(hq_jfind(json_object_get(job, "disks"), "disk", "vda"), "uri");
    hq_note("export uri: %s", uri);
    CLEANUP_FREE char *want = xasprintf("nbd://127.0.0.1:%d/vda", port);
    struct nbd_handle *h = nbd_create();
    int r = nbd_connect_uri(h, want) < 0 ? (hq_fail("%s: %s", want, nbd_get_error()), -1)
                                         : check_data(h, "tcp export");
    nbd_close(h);
    if (r < 0)
        return -1;
    HQ_CHECK(uri && strncmp(uri, "nbd://", 6) == 0 && strstr(uri, "/vda"),
             "the job's uri %s is no plain nbd:// uri of vda", uri);
    if (end_backup(vm, job) < 0)
        return -1;
    HQ_CHECK(!tcp_listening(port), "port %d still listens after backup-end", port);
    return 0;
}

/* tls-creds-x509 objects in QEMU. */
static int
tls_objects(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *objs = hq_cmd(vm->mon, "qom-list",
                                       json_pack("{s:s}", "path", "/objects"));
    int n = 0;
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o)
        n += hq_jstr(o, "type") && strstr(hq_jstr(o, "type"), "tls-creds-x509") != NULL;
    return n;
}

/* CA, server certificate (CN=localhost, SAN IP:127.0.0.1 and DNS:localhost)
 * and key in dir/server; the CA alone in dir/client. */
static int
make_certs(const char *dir)
{
    CLEANUP_FREE char *script = xasprintf(
        "set -e; umask 077; cd '%s'; mkdir server client; cd server\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem"
        " -days 2 -subj /CN=ckptd-test-ca"
        " -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign\n"
        "openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr"
        " -subj /CN=localhost\n"
        "printf '%%s\\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost'"
        " 'basicConstraints=critical,CA:FALSE'"
        " 'keyUsage=critical,digitalSignature,keyEncipherment'"
        " 'extendedKeyUsage=serverAuth' > ext.cnf\n"
        "openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem"
        " -CAcreateserial -out server-cert.pem -days 2 -extfile ext.cnf\n"
        "cp ca-cert.pem ../client/\n"
        "mkdir ../other; cd ../other\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem"
        " -days 2 -subj /CN=another-ca"
        " -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign\n", dir);
    char *argv[] = { "sh", "-c", script, NULL };
    CLEANUP_FREE char *out = NULL;
    int st = hq_run_cmd(argv, &out);
    HQ_CHECK(st == 0, "openssl: %s", out ? out : "");
    return 0;
}

static int
case_tcp_tls(void)
{
    /* The certificates live in their own directory; the VM's is made by
     * the harness after the agent's options are known, so use TMPDIR. */
    const char *tmp = getenv("TMPDIR");
    CLEANUP_FREE char *certs = xasprintf("%s/ckptd-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    HQ_CHECK(mkdtemp(certs), "mkdtemp: %s", strerror(errno));
    int ret = make_certs(certs);
    CLEANUP_FREE char *server_dir = xasprintf("%s/server", certs);
    CLEANUP_FREE char *client_dir = xasprintf("%s/client", certs);
    const char *extra[] = { "--tls-dir", server_dir, NULL };
    struct hq_vm *vm = ret ? NULL : hq_vm_with_agent(1, 64 * MiB, extra);
    int port = free_port();
    json_t *job = NULL;
    if (!vm || write_data(vm) < 0 || port <= 0) {
        ret = -1;
        goto out;
    }
    if (tls_objects(vm) != 0) {
        hq_fail("a tls-creds object before any backup");
        ret = -1;
        goto out;
    }
    /* TLS is the default for TCP once --tls-dir is given. */
    job = hq_cmd(vm->ctl, "backup-begin",
                 json_pack("{s:{s:s,s:s,s:i}}", "server", "transport", "tcp",
                           "host", "127.0.0.1", "port", port));
    if (!job) {
        ret = -1;
        goto out;
    }
    if (tls_objects(vm) != 1) {
        hq_fail("%d tls-creds-x509 objects in QEMU during the backup", tls_objects(vm));
        ret = -1;
        goto out;
    }
    {
        const char *juri = hq_jstr(hq_jfind(json_object_get(job, "disks"), "disk", "vda"),
                                   "uri");
        hq_note("export uri: %s", juri);
        if (!juri || strncmp(juri, "nbds://", 7) != 0) {
            hq_fail("the job's uri %s does not say TLS (nbds://)", juri);
            ret = -1;
            goto out;
        }
    }
    {
        /* With TLS and the CA: readable. */
        CLEANUP_FREE char *uri = xasprintf("nbds://localhost:%d/vda", port);
        struct nbd_handle *h = nbd_create();
        int r = nbd_set_tls(h, LIBNBD_TLS_REQUIRE) < 0 ||
                nbd_set_tls_certificates(h, client_dir) < 0 ||
                nbd_connect_uri(h, uri) < 0
            ? (hq_fail("TLS connect %s: %s", uri, nbd_get_error()), -1)
            : check_data(h, "tls export");
        if (!r && nbd_get_tls_negotiated(h) != 1)
            r = (hq_fail("TLS was not negotiated"), -1);
        nbd_close(h);
        if (r < 0) {
            ret = -1;
            goto out;
        }
    }
    {
        /* Without TLS: refused. */
        CLEANUP_FREE char *uri = xasprintf("nbd://127.0.0.1:%d/vda", port);
        struct nbd_handle *h = nbd_create();
        int c = nbd_connect_uri(h, uri);
        if (c == 0) {
            unsigned char b[512];
            hq_fail("a plain NBD client connected to the TLS export (read: %d)",
                    nbd_pread(h, b, sizeof b, 0, 0));
            ret = -1;
        } else
            hq_note("plain client refused: %s", nbd_get_error());
        nbd_close(h);
        /* Nor with TLS but trusting another CA only. */
        CLEANUP_FREE char *suri = xasprintf("nbds://localhost:%d/vda", port);
        CLEANUP_FREE char *other = xasprintf("%s/other", certs);
        h = nbd_create();
        nbd_set_tls(h, LIBNBD_TLS_REQUIRE);
        nbd_set_tls_certificates(h, other);
        if (nbd_connect_uri(h, suri) == 0) {
            hq_fail("a TLS client trusting another CA connected");
            ret = -1;
        } else
            hq_note("client trusting another CA refused: %s", nbd_get_error());
        nbd_close(h);
    }
    if (!ret && end_backup(vm, job) < 0)
        ret = -1;
    if (!ret && tcp_listening(port)) {
        hq_fail("port %d still listens after backup-end", port);
        ret = -1;
    }
    if (!ret && tls_objects(vm) != 0) {
        hq_fail("a tls-creds-x509 object is left in QEMU after backup-end");
        ret = -1;
    }
out:
    json_decref(job);
    if (vm)
        hq_vm_free(vm);
    char *rm[] = { "rm", "-rf", certs, NULL };
    hq_run_cmd(rm, NULL);
    return ret;
}

static int
case_path_escape(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(1, 64 * MiB, NULL);
    if (!vm || write_data(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    const char *tmp = getenv("TMPDIR");
    tmp = tmp && *tmp ? tmp : "/tmp";
    CLEANUP_FREE char *outside = xasprintf("%s/ckptd-evil-%d.sock", tmp, (int) getpid());
    CLEANUP_FREE char *dotdot = xasprintf("%s/../ckptd-evil-%d.sock", vm->dir, (int) getpid());
    CLEANUP_FREE char *sub = xasprintf("%s/nope/x.sock", vm->dir);
    const char *bad_sockets[] = { outside, dotdot, "/ckptd-evil.sock", "relative.sock",
                                  sub, "" };
    for (size_t i = 0; i < ARRAY_SIZE(bad_sockets); i++) {
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "InvalidParameter", "backup-begin",
            json_pack("{s:{s:s,s:s}}", "server", "transport", "unix",
                      "path", bad_sockets[i]));
        HQ_CHECK(r, "NBD socket '%s' outside the control socket's directory",
                 bad_sockets[i]);
        struct stat st;
        HQ_CHECK(!*bad_sockets[i] || lstat(bad_sockets[i], &st) < 0,
                 "%s was created", bad_sockets[i]);
        if (check_nothing_created(vm, before) < 0)
            return -1;
    }

    /* scratch-dir: only inside the configured one ($XDG_RUNTIME_DIR/ckptd-scratch-*). */
    CLEANUP_FREE char *link = xasprintf("%s/link-to-tmp", vm->dir);
    HQ_CHECK(symlink(tmp, link) == 0, "symlink: %s", strerror(errno));
    CLEANUP_FREE char *in_vm_dir = xstrdup(vm->dir);
    const char *bad_dirs[] = { tmp, "/", in_vm_dir, link, "relative", "/nonexistent/dir" };
    for (size_t i = 0; i < ARRAY_SIZE(bad_dirs); i++) {
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "InvalidParameter", "backup-begin",
            json_pack("{s:s}", "scratch-dir", bad_dirs[i]));
        HQ_CHECK(r, "scratch-dir '%s'", bad_dirs[i]);
        if (check_nothing_created(vm, before) < 0)
            return -1;
    }
    /* The configured one exists now: escape it with ".." and a symlink. */
    CLEANUP_FREE char *scratch = NULL;
    {
        DIR *d = opendir(vm->dir);
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (strncmp(de->d_name, "ckptd-scratch-", 14) == 0)
                scratch = xasprintf("%s/%s", vm->dir, de->d_name);
        if (d)
            closedir(d);
    }
    HQ_CHECK(scratch, "no ckptd-scratch-* directory in %s", vm->dir);
    CLEANUP_FREE char *up = xasprintf("%s/..", scratch);
    CLEANUP_FREE char *sneaky = xasprintf("%s/out", scratch);
    HQ_CHECK(symlink(tmp, sneaky) == 0, "symlink: %s", strerror(errno));
    CLEANUP_FREE char *prefix = xasprintf("%sx", scratch);   /* same prefix, another dir */
    HQ_CHECK(mkdir(prefix, 0700) == 0, "mkdir %s", prefix);
    const char *escapes[] = { up, sneaky, prefix };
    for (size_t i = 0; i < ARRAY_SIZE(escapes); i++) {
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "InvalidParameter", "backup-begin",
            json_pack("{s:s}", "scratch-dir", escapes[i]));
        HQ_CHECK(r, "scratch-dir '%s'", escapes[i]);
        if (check_nothing_created(vm, before) < 0)
            return -1;
    }
    unlink(sneaky);
    /* A directory inside it is fine, and the scratch files go there. */
    CLEANUP_FREE char *inside = xasprintf("%s/job", scratch);
    HQ_CHECK(mkdir(inside, 0700) == 0, "mkdir %s", inside);
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                      json_pack("{s:s}", "scratch-dir", inside));
    HQ_CHECK(job, "backup-begin with a scratch-dir inside the configured one");
    CLEANUP_FREE char *file = hq_scratch_file(inside, hq_jstr(job, "id"), "vda");
    struct stat st;
    HQ_CHECK(file && lstat(file, &st) == 0, "no scratch file of %s in %s",
             hq_jstr(job, "id"), inside);
    if (end_backup(vm, job) < 0)
        return -1;
    HQ_CHECK(lstat(file, &st) < 0, "scratch file %s left", file);
    rmdir(inside);
    rmdir(prefix);
    return 0;
}

int
main(void)
{
    static const struct hq_case all[] = {
        { "socket-modes", case_socket_modes },
        { "other-uid", case_other_uid },
        { "tcp-refused", case_tcp_refused },
        { "tcp-insecure", case_tcp_insecure },
        { "tcp-tls", case_tcp_tls },
        { "path-escape", case_path_escape },
    };
    /* Switching to another uid needs root; without it the case is left
     * out of the count rather than passed. */
    struct hq_case cases[ARRAY_SIZE(all)];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        if (all[i].fn == case_other_uid && geteuid() != 0) {
            const char *only = getenv("HQ_ONLY");
            if (!only || !*only || strcmp(only, all[i].name) == 0)
                printf("SKIP %s: not root\n", all[i].name);
            continue;
        }
        cases[n++] = all[i];
    }
    return hq_run(cases, n);
}
