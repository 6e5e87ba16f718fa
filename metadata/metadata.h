/* ckptd: checkpoint records kept in qcow2 bitmap names, and the checkpoint
 * tree rebuilt from what QEMU reports.  Pure: no I/O.  See README.md for
 * the encoding.
 *
 * name.c:   meta_name_*    checkpoint-name rules
 * record.c: meta_record_*  one checkpoint's record <-> one bitmap name
 * tree.c:   meta_tree_*    disks, bitmaps and checkpoints from
 *                          query-block + query-named-block-nodes
 * apply.c:  meta_tree_apply  a transaction QEMU accepted, applied to the
 *                          tree without asking QEMU again
 */
#ifndef CKPTD_METADATA_H
#define CKPTD_METADATA_H

#include "common/common.h"

/* --- name.c --- */
#define META_NAME_MAX 200
/* libvirt's checkpoint-name pattern [A-Za-z0-9_-][A-Za-z0-9_.-]*, 1..200 bytes. */
bool meta_name_valid(const char *name);

/* --- record.c --- */
/* Record bitmaps: "ckptd1:" SEQ ":" CTIME ":" NAME [":" DESC-BASE64URL]. */
#define META_RECORD_PREFIX "ckptd1:"
#define META_BITMAP_NAME_MAX 1023       /* qcow2's limit on a bitmap name */
#define META_RECORD_GRANULARITY 2147483648u /* largest QEMU accepts: tiny */

struct meta_record {
    char *name;
    uint64_t seq;           /* creation order: parent = previous seq */
    int64_t ctime;          /* seconds since the epoch */
    char *description;      /* NULL when none */
};

/* The longest description (bytes) that fits beside a name of name_len. */
size_t meta_record_max_description(size_t name_len);
/* Returns a new bitmap name, or NULL with e set (InvalidParameter) when the
 * record does not fit in a bitmap name. */
char *meta_record_encode(const struct meta_record *r, struct ckpt_error *e);
/* 1: a record, filled in (free with meta_record_clear); 0: not a ckptd
 * record at all; -1: has our prefix but is malformed (left alone). */
int meta_record_decode(const char *bitmap, struct meta_record *out);
void meta_record_clear(struct meta_record *r);
/* The sequence high-water mark, so that a number is never handed out
 * twice (deleting the newest checkpoint removes the highest record).
 * One disabled bitmap "ckptd1:next:N" per disk at most. */
#define META_NEXT_PREFIX "ckptd1:next:"
char *meta_next_encode(uint64_t next);
bool meta_next_decode(const char *bitmap, uint64_t *next);
/* Does this bitmap name belong to ckptd: a record ("ckptdN:") or a
 * temporary bitmap ("ckptd:")?  Such names cannot be checkpoint names. */
#define META_TEMP_PREFIX "ckptd:"
bool meta_bitmap_is_ours(const char *bitmap);

/* --- tree.c --- */
struct meta_bitmap {
    char *name;
    bool recording, persistent, busy, inconsistent;
    uint64_t count;             /* dirty bytes */
    uint64_t granularity;
};

struct meta_disk {
    char *disk;                 /* guest device id, else node name */
    char *node;                 /* format node: where its bitmaps live */
    char *active;               /* the active layer's format node: what the
                                 * guest writes and a backup copies; the same
                                 * as node while the disk tracks writes */
    char *root;                 /* the node the device's BlockBackend points
                                 * to: active, or a filter above it */
    char *qdev;                 /* the device's QOM path, or NULL */
    bool tracking;              /* node == active: the checkpoints see writes */
    char *untracked;            /* why not, when !tracking */
    char *format;
    char *filename;
    uint64_t virtual_size;
    bool read_only;
    bool can_checkpoint;
    char *reason;               /* why not, when !can_checkpoint */
    struct meta_bitmap *bitmaps;
    size_t nbitmaps;
};

/* One member disk of a checkpoint. */
struct meta_member {
    size_t disk;                /* index into tree->disks */
    const struct meta_bitmap *bitmap;   /* the data bitmap; NULL if missing */
    const char *record;         /* this disk's record bitmap name */
};

struct meta_ckpt {
    struct meta_record rec;
    struct meta_member *members;
    size_t nmembers;
};

struct meta_tree {
    struct meta_disk *disks;    /* in the VM's order */
    size_t ndisks;
    struct meta_ckpt *ckpts;    /* sorted by seq: oldest first */
    size_t nckpts;
    uint64_t next_seq;
};

/* Builds the tree from the "return" values of query-block and
 * query-named-block-nodes (flat).  Returns 0, or -1 with e set. */
int meta_tree_build(json_t *blocks, json_t *nodes, struct meta_tree *out,
                    struct ckpt_error *e);
void meta_tree_free(struct meta_tree *t);
/* Re-derives the checkpoints from the disks' bitmaps. */
void meta_tree_derive(struct meta_tree *t);
/* Index lookups; -1 when absent. */
ssize_t meta_tree_find_ckpt(const struct meta_tree *t, const char *name);
ssize_t meta_tree_find_disk(const struct meta_tree *t, const char *disk);
const struct meta_bitmap *meta_disk_find_bitmap(const struct meta_disk *d,
                                                const char *name);
/* The member entry of checkpoint c on disk index d, or NULL. */
const struct meta_member *meta_ckpt_member(const struct meta_ckpt *c, size_t d);
/* Bytes written on disk d since checkpoint i: its bitmap plus every newer
 * one on the disk.  A sum of counts, so an upper bound of their union. */
uint64_t meta_tree_changed_since(const struct meta_tree *t, size_t i, size_t d);
/* The newest checkpoint older than index i that has disk d; -1 if none. */
ssize_t meta_tree_prev_on_disk(const struct meta_tree *t, size_t i, size_t d);
/* Parent in the chain: the previous checkpoint by seq; -1 for the root. */
static inline ssize_t meta_tree_parent(const struct meta_tree *t, size_t i)
{
    (void) t;
    return (ssize_t) i - 1;
}

/* --- apply.c --- */
/* Applies the bitmap actions (add, remove, enable, disable, merge) of a
 * transaction QEMU has accepted to the tree's bitmaps, then re-derives the
 * checkpoints: the tree QEMU now has, without a round trip.  Dirty counts
 * after a merge are an upper bound.  Returns -1, tree unchanged, if an
 * action is of another kind or does not fit: then re-read from QEMU. */
int meta_tree_apply(struct meta_tree *t, json_t *actions);
/* The checkpoints' records and data bitmaps (recording, persistent) as
 * sorted text, to compare a replayed tree with one read from QEMU. */
char *meta_tree_signature(const struct meta_tree *t);

#endif
