/* nbdpull: copies an NBD export into a new qcow2 file with ckptctl pull's
 * own engine (nbdx_pull_copy from build/libckptd.a, writing the qcow2
 * in-process as ckptctl pull does), so that another server's export
 * (libvirt's) is read exactly the way `ckptctl pull` reads ckptd's.
 *
 *   nbdpull URI CONTEXT|- OUTPUT.qcow2 [REQUESTS]
 *
 * CONTEXT is the dirty-bitmap meta context of an incremental backup
 * ("qemu:dirty-bitmap:backup-vda"), "-" for a full one.  Prints
 * "copied BYTES zeroed BYTES seconds S".  Compiled with -Wall -Wextra
 * -Werror by the Makefile's bench rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libnbd.h>

#include "nbd/pull.h"

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: nbdpull URI CONTEXT|- OUTPUT.qcow2 [REQUESTS]\n");
        return 2;
    }
    const char *uri = argv[1], *ctx = strcmp(argv[2], "-") ? argv[2] : NULL;
    unsigned requests = argc == 5 ? (unsigned) atoi(argv[4]) : 16;
    double t0 = now_s();
    static volatile sig_atomic_t cancel;
    struct nbdx_pull_opts o = {
        .uri = uri, .bitmap = ctx, .target_file = argv[3],
        .requests = requests, .cancel = &cancel,
    };
    struct nbdx_pull_result res;
    char err[512] = "";

    if (nbdx_pull_copy(&o, &res, err, sizeof err) != NBDX_PULL_OK) {
        fprintf(stderr, "nbdpull: %s\n", err);
        return 1;
    }
    printf("copied %llu zeroed %llu seconds %.6f\n", (unsigned long long) res.copied,
           (unsigned long long) res.zeroed, now_s() - t0);
    return 0;
}
