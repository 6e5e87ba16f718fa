/* ckptd: the client half of a pull backup, used by `ckptctl pull`.
 *
 * Reads the extents of an export (base:allocation, and for an incremental
 * the dirty bitmap's meta context), turns them into a list of operations
 * (copy this range, zero that one), then runs them with libnbd's
 * asynchronous API from the backup export into a qcow2 file the engine
 * writes itself (qcow2-out.c), which also gives the file's SHA-256.
 *
 * pull.c:      nbdx_pull_plan_*   extent maps to operations (pure, unit tested)
 *              nbdx_pull_*        connecting and the copy engine
 * qcow2-out.c: nbdx_qcow2_out_*   a new qcow2 image written in one pass
 */
#ifndef CKPTD_NBD_PULL_H
#define CKPTD_NBD_PULL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <libnbd.h>

#include "common/common.h"

/* Largest read or write in flight.  QEMU's server answers several
 * 256 KiB reads on a few connections faster than fewer 2 MiB ones (1 GiB
 * from one VM, medians of 5: 897 MB/s against 460 MB/s; 128 KiB: 649,
 * 1 MiB: 671), and --requests of them stay a modest amount of memory. */
#define NBDX_PULL_MAX_REQUEST (256u << 10)

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
/* The ops of `in` (sorted, not overlapping, within a disk of `size`
 * bytes) on cluster boundaries, appended to out: a COPY widens to whole
 * clusters (reading a little more of the export is always right), a ZERO
 * narrows to the whole clusters it covers and its partial clusters at
 * either end become COPYs.  So a writer never writes part of a cluster,
 * and an overlay never needs to copy the rest from its backing file.
 * The disk's end counts as a boundary. */
void nbdx_pull_plan_align(const struct nbdx_pull_op_vec *in, uint64_t cluster,
                          uint64_t size, struct nbdx_pull_op_vec *out);
/* Total bytes of the ops of one kind. */
uint64_t nbdx_pull_plan_bytes(const struct nbdx_pull_op_vec *ops,
                              enum nbdx_pull_kind kind);

/* --- pull.c: the engine --- */

struct nbdx_pull_opts {
    const char *uri;            /* the backup export */
    const char *bitmap;         /* "qemu:dirty-bitmap:..." or NULL (full) */
    /* The output: a qcow2 file written in-process (an empty file the
     * caller created; backing: the name its header gives as backing
     * file, qcow2, or NULL). */
    const char *target_file;
    const char *target_backing;
    unsigned requests;          /* reads/writes in flight, >= 1 */
    unsigned connections;       /* to the export if it allows several;
                                 * 0: the engine's default */
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
    uint64_t sparse;            /* of copied: read as zeros, not stored */
    char sha256[65];            /* of the whole file, as sha256sum prints it */
};

enum nbdx_pull_status { NBDX_PULL_OK, NBDX_PULL_FAILED, NBDX_PULL_CANCELLED };

/* Connects to the export, maps it, copies what the map says is needed
 * into the file, finishes and flushes the file, and disconnects.  The
 * handles live and die in here: buffers of requests still in flight are
 * freed only after the handles are closed.  On failure err says what and
 * at which offset. */
enum nbdx_pull_status nbdx_pull_copy(const struct nbdx_pull_opts *o,
                                     struct nbdx_pull_result *res,
                                     char *err, size_t errlen);

/* --- qcow2-out.c: the output file --- */

/* Cluster size of the images written: qemu-img's default. */
#define NBDX_QCOW2_CLUSTER 65536u

struct nbdx_qcow2_out;

/* Opens path (an empty file, or none: it is created 0600) as a new qcow2
 * image of `size` bytes whose backing file is `backing` (qcow2; NULL:
 * none), to be written by `plan` (ops on cluster boundaries, as
 * nbdx_pull_plan_align makes them): only its COPY ops may store data,
 * and the file's layout is fixed from it (see qcow2-out.c).  Nothing is
 * valid on disk until nbdx_qcow2_out_finish. */
int nbdx_qcow2_out_open(const char *path, uint64_t size, const char *backing,
                        const struct nbdx_pull_op_vec *plan,
                        struct nbdx_qcow2_out **out, char *err, size_t errlen);
/* Stores guest data at off.  off is cluster-aligned, len whole clusters
 * (or up to the disk's end), each cluster written once.  Clusters that
 * read as zeros are not stored; their bytes are added to *zero_bytes. */
int nbdx_qcow2_out_write(struct nbdx_qcow2_out *q, const void *buf, uint64_t off,
                         uint64_t len, uint64_t *zero_bytes,
                         char *err, size_t errlen);
/* The checksum's part of a write that succeeded: call it once for each
 * write, with the same buffer and length, in the order of the writes.
 * It touches nothing but the checksum, so it may run on another thread
 * (one at a time) while later writes go on; finish needs every one. */
void nbdx_qcow2_out_hash(struct nbdx_qcow2_out *q, const void *buf, uint64_t len);
/* Makes [off, off + len) read as zeros (same alignment as a write). */
int nbdx_qcow2_out_zero(struct nbdx_qcow2_out *q, uint64_t off, uint64_t len,
                        char *err, size_t errlen);
/* Writes the tables and then the header, flushes and closes the file;
 * sha256: the file's SHA-256 in hex (what sha256sum prints), computed as
 * it was written. */
int nbdx_qcow2_out_finish(struct nbdx_qcow2_out *q, char sha256[65],
                          char *err, size_t errlen);
void nbdx_qcow2_out_free(struct nbdx_qcow2_out *q);

#endif
