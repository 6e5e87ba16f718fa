/* ckptd: checkpoint changes as data.  Each plan takes the current tree and
 * a request and returns the QMP `transaction` actions that make the change
 * on every disk at once, or an error naming the object.  Pure: no I/O.
 *
 * plan-create.c:   ckpt_plan_create
 * plan-delete.c:   ckpt_plan_delete
 * plan-redefine.c: ckpt_plan_redefine, ckpt_plan_release
 * plan-backup.c:   ckpt_plan_backup*  disk selection, the begin transaction
 * plan-chain.c:    ckpt_plan_chain    the chain's upkeep in every change
 * names.c:         ckpt_tmp_*         names of temporary objects: the
 *                  contract between a job, its undo and the start-up sweep
 */
#ifndef CKPTD_BITMAP_PLAN_H
#define CKPTD_BITMAP_PLAN_H

#include "metadata/metadata.h"

struct ckpt_create_req {
    const char *name;
    const char *description;    /* NULL: none */
    int64_t now;                /* creation time, seconds */
    const char *const *disks;   /* NULL: every disk that can hold checkpoints */
    size_t ndisks;
    /* NULL, or per disk index the node that gets the new bitmaps when it
     * is not the disk's node (NULL entry): the overlay of a disk-snapshot
     * in the same transaction. */
    const char *const *nodes;
};

/* Disables every bitmap of disk d that records, on any of its layers
 * (inconsistent ones cannot be touched, and do not record). */
void ckpt_plan_stop_recording(const struct meta_tree *t, size_t d, json_t *actions);

/* Adds the actions for a new checkpoint to `actions` (a JSON array): on
 * each member disk, disable the bitmap that records now and add the new
 * data bitmap (recording) and its record.  On error, actions is unchanged. */
enum ckpt_err ckpt_plan_create(const struct meta_tree *t,
                               const struct ckpt_create_req *r,
                               json_t *actions, struct ckpt_error *e);

enum ckpt_delete_mode {
    CKPT_DELETE_ONE,            /* just this checkpoint */
    CKPT_DELETE_CHILDREN,       /* it and every descendant */
    CKPT_DELETE_CHILDREN_ONLY,  /* its descendants only */
};

/* Adds the actions that delete the checkpoint `name` (and/or descendants)
 * while every surviving checkpoint keeps covering every write since it:
 * deleted bitmaps are merged into the nearest survivor on the same disk,
 * which records again if it became the newest.  The names deleted, oldest
 * first, are appended to `deleted`. */
enum ckpt_err ckpt_plan_delete(const struct meta_tree *t, const char *name,
                               enum ckpt_delete_mode mode, json_t *actions,
                               struct str_vec *deleted, struct ckpt_error *e);

/* The high-water mark of sequence numbers (metadata.h), kept on the
 * disks of a deleted newest checkpoint, and removed by a new record. */
void ckpt_plan_next_mark(const struct meta_tree *t, const struct meta_ckpt *newest,
                         json_t *adds, json_t *removes);
void ckpt_plan_drop_marks(const struct meta_disk *d, json_t *actions);

/* --- plan-chain.c --- */
/* Adds to a change's actions what keeps the chain right (records given
 * the chain id, the gone set with the names this change deletes, stale
 * checkpoints folded; see plan-chain.c), then moves every remove last:
 * QEMU applies a transaction's removes at its end.  Called by each plan
 * that changes checkpoints; nothing when t->chain is "". */
void ckpt_plan_chain(const struct meta_tree *t, const struct str_vec *deleted,
                     json_t *actions);
void ckpt_plan_removes_last(json_t *actions);

/* --- plan-redefine.c --- */
struct meta_xml_ckpt;
/* Records for checkpoints whose bitmaps exist already (libvirt's, say),
 * appended to the chain in parent order; older bitmaps that still record
 * are disabled.  Validates everything first: on error nothing is planned. */
enum ckpt_err ckpt_plan_redefine(const struct meta_tree *t,
                                 const struct meta_xml_ckpt *list, size_t n,
                                 int64_t now, json_t *actions, struct ckpt_error *e);

/* The inverse, for handing the images back to libvirt: every checkpoint's
 * bitmap made to cover every write since it and recording, records gone. */
enum ckpt_err ckpt_plan_release(const struct meta_tree *t, json_t *actions,
                                struct ckpt_error *e);


/* --- names.c ---
 * Job "backup-N" (N: milliseconds since the epoch when it began, and
 * above any earlier job's: never handed out twice by the agents of one
 * VM), disk D at index I of the job, TAG the agent's VM (a hash of its
 * control socket's path: stable across restarts, different for another
 * VM's agent that shares the scratch directory):
 *   scratch file      SCRATCHDIR/ckptd-TAG-backup-N-D.qcow2
 *   protocol node     ckptd-sN-I   (node names: 31 bytes at most)
 *   qcow2 node        ckptd-fN-I   (backing: the disk's format node)
 *   filter node       ckptd-cN-I   (copy-before-write, made by the job)
 *   block job/export  ckptd-backup-N-D
 *   temporary bitmap  ckptd:backup-N:D   (on the disk's format node)
 *   push target nodes ckptd-tN-I (file, /dev/fdset/S), ckptd-qN-I (qcow2)
 *   push target file  DIR/ckptd-TAG-backup-N-D.qcow2 until it is complete
 *   fd set opaque     ckptd-backup-N-D
 * Everything starts "ckptd-" or "ckptd:": no checkpoint name can (":" is
 * not allowed in one), and no launcher plausibly uses it. */
#define CKPT_TMP_PREFIX "ckptd-"
#define CKPT_TMP_TLS_ID "ckptd-tls"         /* the tls-creds-x509 object */
/* kind: 's' scratch file, 'f' scratch qcow2, 'c' a backup job's filter,
 * 'w' the agent's own copy-before-write filter, 'a' its snapshot-access,
 * 't' a push target's file node, 'q' its qcow2 node */
char *ckpt_tmp_node(char kind, long long job, size_t i);
char *ckpt_tmp_job(const char *job, const char *disk);
char *ckpt_tmp_bitmap(const char *job, const char *disk);
char *ckpt_tmp_scratch(const char *dir, const char *tag, const char *job,
                       const char *disk);
/* Does a name belong to job (or to any job when job is NULL)? */
bool ckpt_tmp_node_is_ours(const char *node, long long jobnum /* -1: any */);
bool ckpt_tmp_id_is_ours(const char *id, const char *job /* NULL: any */);
bool ckpt_tmp_bitmap_is_ours(const char *bitmap, const char *job /* NULL: any */);
/* Is a file name (no directory) a scratch file of the VM with tag? */
bool ckpt_tmp_file_is_ours(const char *leaf, const char *tag);

/* --- plan-backup.c ---
 * A job keeps its disks by name, never by index: the tree it was planned
 * on may be replaced (by any query) before its transaction is built. */
struct ckpt_backup_disk {
    char *disk;                 /* the disk's name (owned) */
    bool incremental;           /* has a temporary bitmap */
    uint64_t granularity;
    char *reason;               /* in an incremental backup, why this disk is
                                 * copied in full (owned), else NULL */
};
void ckpt_backup_disks_free(struct ckpt_backup_disk *d, size_t n);

struct ckpt_backup_req {
    const char *job;            /* "backup-N" */
    long long jobnum;           /* N */
    const char *incremental;    /* checkpoint name, or NULL for full */
    const char *const *disks;   /* NULL: default selection */
    size_t ndisks;
    const struct ckpt_create_req *checkpoint;   /* new checkpoint, or NULL */
    const char *const *busy;    /* disks in another job */
    size_t nbusy;
    bool strict;                /* refuse instead of copying a disk in full */
    bool own_filter;            /* the agent fleeces through its own
                                 * copy-before-write filter: no backup job */
};

/* Chooses and checks the disks: the listed ones, else every disk, for a
 * full backup and an incremental alike.  In an incremental, a disk that is
 * not in the checkpoint, cannot hold checkpoints or no longer tracks
 * writes is copied in full, with the reason (strict: refused).  Each disk
 * must be free of other jobs, and its bitmaps consistent.  Fills out[]
 * (room for tree->ndisks) and *n. */
enum ckpt_err ckpt_plan_backup_disks(const struct meta_tree *t,
                                     const struct ckpt_backup_req *r,
                                     struct ckpt_backup_disk *out, size_t *n,
                                     struct ckpt_error *e);

/* The transaction that starts the job: temporary bitmaps holding the
 * merge of the incremental checkpoint and every newer one, the new
 * checkpoint if asked for, and a `blockdev-backup sync=none` per disk
 * into its scratch node.  All in one transaction: the exported view, the
 * exported bitmap and the new checkpoint share one point in time.  With
 * own_filter the transaction holds the bitmaps only: the agent's own
 * filter takes the view right after it (agent/job-fleece.c says why the
 * point in time stays exact).  Disks
 * are looked up by name in t: one that is gone is NotFound. */
enum ckpt_err ckpt_plan_backup(const struct meta_tree *t,
                               const struct ckpt_backup_req *r,
                               const struct ckpt_backup_disk *disks, size_t n,
                               json_t *actions, struct ckpt_error *e);
/* The same for a push backup: the same bitmaps and checkpoint, and per
 * disk a `blockdev-backup` into its target node ckptd-qN-I, sync=full, or
 * sync=bitmap with the temporary bitmap (bitmap-mode never: it is removed
 * at the end anyway) for an incremental disk. */
enum ckpt_err ckpt_plan_backup_push(const struct meta_tree *t,
                                    const struct ckpt_backup_req *r,
                                    const struct ckpt_backup_disk *disks, size_t n,
                                    json_t *actions, struct ckpt_error *e);

/* --- layers.c: a disk's checkpoints across the layers of its chain --- */
/* The first inconsistent bitmap of a member on any layer, or NULL. */
const struct meta_bitmap *ckpt_member_unusable(const struct meta_member *m);
/* Merge sources (qmp_bitmap_ref, for a target on target_node): every
 * bitmap, on every layer, of the checkpoints [from, to) on disk d, and of
 * the stale checkpoints between them (deleted while d was detached). */
json_t *ckpt_merge_sources(const struct meta_tree *t, size_t d, size_t from,
                           size_t to, const char *target_node);

struct ckpt_snapshot_req {
    const char *const *disks;   /* disk names */
    const char *const *overlays;/* per disk: the new overlay's format node,
                                 * added already with no backing */
    size_t ndisks;
    const struct ckpt_create_req *checkpoint;   /* new checkpoint, or NULL */
};
/* Can disk d take a snapshot that carries its checkpoints?  It must be
 * writable, track writes, and its newest checkpoint's bitmap be whole. */
enum ckpt_err ckpt_plan_snapshot_disk(const struct meta_tree *t, size_t d,
                                      struct ckpt_error *e);
/* The transaction of a disk-snapshot: blockdev-snapshot per disk, and the
 * checkpoints carried into the overlays (or the new checkpoint made
 * there), so that exactly one bitmap per disk records, on the overlay. */
enum ckpt_err ckpt_plan_snapshot(const struct meta_tree *t,
                                 const struct ckpt_snapshot_req *r,
                                 json_t *actions, struct ckpt_error *e);
/* The transaction that moves the overlay's (layer 0) bitmaps of disk d
 * into base, its backing node, once a commit job is READY; undo gets the
 * actions that stop what it made record (if the job then fails). */
enum ckpt_err ckpt_plan_commit(const struct meta_tree *t, size_t d, const char *base,
                               json_t *actions, json_t *undo, struct ckpt_error *e);

#endif
