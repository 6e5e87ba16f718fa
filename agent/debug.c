/* The test hooks, read once at start and nowhere else.
 *   CKPTD_DEBUG_VERIFY_TREE=1  every replayed tree is compared with a
 *                              re-read from QEMU; a difference aborts
 *   CKPTD_DEBUG_ABORT_AFTER=N  abort() before the Nth QMP command sent
 *                              once QEMU is ready (crash-point tests) */
#include "agent/agent.h"

#include <stdlib.h>

void
debug_read(struct agent_debug *d)
{
    const char *v = getenv("CKPTD_DEBUG_VERIFY_TREE");
    const char *n = getenv("CKPTD_DEBUG_ABORT_AFTER");
    d->verify_tree = v && *v && strcmp(v, "0") != 0;
    d->abort_after = n ? atol(n) : 0;
}
