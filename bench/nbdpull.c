/* nbdpull: copies an NBD export into a new qcow2 file with ckptctl pull's
 * own engine (nbdx_pull_copy from build/libckptd.a, qemu-nbd serving the
 * output), so that another server's export (libvirt's) is read exactly
 * the way `ckptctl pull` reads ckptd's.
 *
 *   nbdpull URI CONTEXT|- OUTPUT.qcow2 [REQUESTS]
 *
 * CONTEXT is the dirty-bitmap meta context of an incremental backup
 * ("qemu:dirty-bitmap:backup-vda"), "-" for a full one.  Prints
 * "copied BYTES zeroed BYTES seconds S" (S: qemu-img create to qemu-nbd's
 * exit).  Compiled with -Wall -Wextra -Werror by the Makefile's bench
 * rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <libnbd.h>

#include "nbd/pull.h"

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static pid_t
spawn(char **argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        perror(argv[0]);
        _exit(127);
    }
    return pid;
}

static int
wait_ok(pid_t pid)
{
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: nbdpull URI CONTEXT|- OUTPUT.qcow2 [REQUESTS]\n");
        return 2;
    }
    const char *uri = argv[1], *ctx = strcmp(argv[2], "-") ? argv[2] : NULL;
    const char *out = argv[3];
    unsigned requests = argc == 5 ? (unsigned) atoi(argv[4]) : 16;
    double t0 = now_s();

    struct nbd_handle *h = nbd_create();
    if (!h || nbd_connect_uri(h, uri) < 0) {
        fprintf(stderr, "nbdpull: %s: %s\n", uri, nbd_get_error());
        return 1;
    }
    int64_t size = nbd_get_size(h);
    nbd_shutdown(h, 0);
    nbd_close(h);
    if (size < 0)
        return 1;

    char sz[32], sock[] = "/tmp/nbdpull-XXXXXX";
    snprintf(sz, sizeof sz, "%lld", (long long) size);
    char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2", "--", (char *) out, sz, NULL };
    if (wait_ok(spawn(create)) < 0)
        return 1;
    if (!mkdtemp(sock))
        return 1;
    char sockpath[64];
    snprintf(sockpath, sizeof sockpath, "%s/nbd.sock", sock);
    char *serve[] = { "qemu-nbd", "-f", "qcow2", "-k", sockpath, "--", (char *) out, NULL };
    static volatile sig_atomic_t cancel;
    struct nbdx_pull_opts o = {
        .uri = uri, .bitmap = ctx, .target_socket = sockpath,
        .requests = requests, .cancel = &cancel,
    };
    struct nbdx_pull_result res;
    char err[512] = "";
    o.target_pid = spawn(serve);
    enum nbdx_pull_status st = nbdx_pull_copy(&o, &res, err, sizeof err);
    if (st != NBDX_PULL_OK)
        kill(o.target_pid, SIGTERM);
    int r = wait_ok(o.target_pid);
    unlink(sockpath);
    rmdir(sock);
    if (st != NBDX_PULL_OK || r < 0) {
        fprintf(stderr, "nbdpull: %s\n", err[0] ? err : "qemu-nbd failed");
        return 1;
    }
    printf("copied %llu zeroed %llu seconds %.6f\n", (unsigned long long) res.copied,
           (unsigned long long) res.zeroed, now_s() - t0);
    return 0;
}
