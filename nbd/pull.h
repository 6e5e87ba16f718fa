/* ckptd: the client half of a pull backup, used by `ckptctl pull`.
 *
 * Reads the extents of an export (base:allocation, and for an incremental
 * the dirty bitmap's meta context), turns them into a list of operations
 * (copy this range, zero that one), then runs them with libnbd's
 * asynchronous API from the backup export into a writable NBD target
 * (qemu-nbd serving the output qcow2).
 *
 * pull.c: nbdx_pull_plan_*  extent maps to operations (pure, unit tested)
 *         nbdx_pull_*       connecting and the copy engine
 */
#ifndef CKPTD_NBD_PULL_H
#define CKPTD_NBD_PULL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <libnbd.h>

#include "common/common.h"

/* Largest read or write in flight: big enough to stream, small enough
 * that --requests of them stay a modest amount of memory. */
#define NBDX_PULL_MAX_REQUEST (2u << 20)

/* --- pull.c: plans (pure) --- */

/* One block status descriptor as the server sent it. */
struct nbdx_pull_extent {
    uint64_t length;
    uint32_t flags;
};
DEFINE_VECTOR(nbdx_pull_extent_vec, struct nbdx_pull_extent)

enum nbdx_pull_kind { NBDX_PULL_COPY, NBDX_PULL_ZERO };

struct nbdx_pull_op {
    uint64_t offset, length;
    enum nbdx_pull_kind kind;
};
DEFINE_VECTOR(nbdx_pull_op_vec, struct nbdx_pull_op)

/* Appends the operations for the range that starts at `offset` and is
 * described by the base:allocation extents `alloc` and the dirty-bitmap
 * extents `dirty` (both starting at `offset`), never past `offset + len`.
 * `alloc` NULL: everything is data (no base:allocation).  `dirty` NULL: a
 * full backup into an image that reads as zeros, so zero ranges are
 * skipped; otherwise only dirty ranges count, and a dirty range that reads
 * as zeros becomes a ZERO op (the overlay must hide the older data).
 * Adjacent ops of one kind are merged.  Returns how many bytes both maps
 * cover (at most len): the caller asks again from there. */
uint64_t nbdx_pull_plan_range(uint64_t offset, uint64_t len,
                              const struct nbdx_pull_extent *alloc, size_t nalloc,
                              const struct nbdx_pull_extent *dirty, size_t ndirty,
                              struct nbdx_pull_op_vec *ops);
/* Total bytes of the ops of one kind. */
uint64_t nbdx_pull_plan_bytes(const struct nbdx_pull_op_vec *ops,
                              enum nbdx_pull_kind kind);

/* --- pull.c: the engine --- */

struct nbdx_pull_opts {
    const char *uri;            /* the backup export */
    const char *bitmap;         /* "qemu:dirty-bitmap:..." or NULL (full) */
    const char *target_socket;  /* Unix socket of the target's NBD server */
    pid_t target_pid;           /* that server, still starting perhaps */
    unsigned requests;          /* reads/writes in flight, >= 1 */
    /* Set from a signal handler: stop issuing, return NBDX_PULL_CANCELLED. */
    volatile sig_atomic_t *cancel;
    /* Called now and then from the copy loop (may be NULL); not at the
     * end: the caller knows the result then. */
    void (*progress)(void *opaque, uint64_t done, uint64_t total);
    void *opaque;
};

struct nbdx_pull_result {
    uint64_t size;              /* of the export */
    uint64_t copied;            /* bytes read and written */
    uint64_t zeroed;            /* bytes zeroed in the target */
};

enum nbdx_pull_status { NBDX_PULL_OK, NBDX_PULL_FAILED, NBDX_PULL_CANCELLED };

/* Connects to the export and to the target (retrying while the target's
 * server starts; giving up when it exits or after a few seconds), maps the
 * export, copies what the map says is needed, flushes the target and
 * disconnects from both, so the target's server exits by itself.  Both
 * handles live and die in here: buffers of requests still in flight are
 * freed only after the handles are closed.  On failure err says what and
 * at which offset. */
enum nbdx_pull_status nbdx_pull_copy(const struct nbdx_pull_opts *o,
                                     struct nbdx_pull_result *res,
                                     char *err, size_t errlen);

#endif
