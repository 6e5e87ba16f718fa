/* libnbd, loaded on first use (the agent calls it only for
 * checkpoint-changes).
 *
 * libnbd links GnuTLS and libxml2, which bring ICU, libstdc++, p11-kit,
 * nettle and GMP: linked in, they were 4.7 MB of the agent's 7 MB
 * resident set on a VM that never asks for changes.  So the library is
 * opened with dlopen the first time, as libxml2 is (metadata/xmldl.h);
 * the prototypes are libnbd's own (__typeof__), so the compiler still
 * checks every call.
 *
 * Included by agent/cmd-changes.c and agent/nbddl.c only. */
#ifndef CKPTD_NBDDL_H
#define CKPTD_NBDDL_H

#include <libnbd.h>

#include "common/common.h"

struct nbddl {
    __typeof__(&nbd_create) create;
    __typeof__(&nbd_add_meta_context) add_meta_context;
    __typeof__(&nbd_connect_uri) connect_uri;
    __typeof__(&nbd_get_size) get_size;
    __typeof__(&nbd_block_status) block_status;
    __typeof__(&nbd_shutdown) shutdown;
    __typeof__(&nbd_close) close;
    __typeof__(&nbd_get_error) get_error;
};

/* The table, loading libnbd the first time (call it on the loop, before
 * a thread uses the table); NULL with e set when it cannot be loaded. */
const struct nbddl *nbddl_get(struct ckpt_error *e);

#endif
