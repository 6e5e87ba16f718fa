/* ckptd: pull backups as data.  Names of the temporary objects a backup
 * job puts in QEMU (so a restarted agent recognises them), and the plan of
 * the one transaction that freezes the exported view.  Pure: no I/O.
 *
 * names.c:       nbdx_*_name   temporary object names and their patterns
 * plan-backup.c: nbdx_plan_*   disk selection and the begin transaction
 */
#ifndef CKPTD_NBDX_H
#define CKPTD_NBDX_H

#include "bitmap/plan.h"

/* --- names.c ---
 * Job "backup-N", disk D at index I of the job:
 *   scratch file      SCRATCHDIR/ckptd-backup-N-D.qcow2
 *   protocol node     ckptd-sN-I   (node names: 31 bytes at most)
 *   qcow2 node        ckptd-fN-I   (backing: the disk's format node)
 *   filter node       ckptd-cN-I   (copy-before-write, made by the job)
 *   block job/export  ckptd-backup-N-D
 *   temporary bitmap  ckptd:backup-N:D   (on the disk's format node)
 * Everything starts "ckptd-" or "ckptd:": no checkpoint name can (":" is
 * not allowed in one), and no launcher plausibly uses it. */
#define NBDX_PREFIX "ckptd-"
#define NBDX_TLS_ID "ckptd-tls"         /* the tls-creds-x509 object */
char *nbdx_node_name(char kind, int job, size_t i);   /* kind: 's', 'f', 'c' */
char *nbdx_job_name(const char *job, const char *disk);
char *nbdx_bitmap_name(const char *job, const char *disk);
char *nbdx_scratch_file(const char *dir, const char *job, const char *disk);
/* Does a name belong to job (or to any job when job is NULL)? */
bool nbdx_node_is_ours(const char *node, int jobnum /* -1: any */);
bool nbdx_id_is_ours(const char *id, const char *job /* NULL: any */);
bool nbdx_bitmap_is_ours(const char *bitmap, const char *job /* NULL: any */);

/* --- plan-backup.c --- */
struct nbdx_disk {
    size_t disk;                /* index into the tree */
    bool incremental;           /* has a temporary bitmap */
    uint64_t granularity;
};

struct nbdx_begin_req {
    const char *job;            /* "backup-N" */
    int jobnum;                 /* N */
    const char *incremental;    /* checkpoint name, or NULL for full */
    const char *const *disks;   /* NULL: default selection */
    size_t ndisks;
    const struct ckpt_create_req *checkpoint;   /* new checkpoint, or NULL */
    const bool *busy;           /* per tree disk: in another job */
};

/* Chooses and checks the disks: every disk for a full backup, or the
 * incremental checkpoint's disks; each consistent and not busy.  Fills
 * out[] (room for tree->ndisks) and *n. */
enum ckpt_err nbdx_plan_disks(const struct meta_tree *t,
                              const struct nbdx_begin_req *r,
                              struct nbdx_disk *out, size_t *n,
                              struct ckpt_error *e);

/* The transaction that starts the job: temporary bitmaps holding the
 * merge of the incremental checkpoint and every newer one, the new
 * checkpoint if asked for, and a `blockdev-backup sync=none` per disk
 * into its scratch node.  All in one transaction: the exported view, the
 * exported bitmap and the new checkpoint share one point in time. */
enum ckpt_err nbdx_plan_begin(const struct meta_tree *t,
                              const struct nbdx_begin_req *r,
                              const struct nbdx_disk *disks, size_t n,
                              json_t *actions, struct ckpt_error *e);

#endif
