/* ckptd: checkpoint records kept in qcow2 bitmap names, and the checkpoint
 * tree rebuilt from what QEMU reports.  Pure: no I/O.  See README.md for
 * the encoding.
 *
 * name.c:   meta_name_*    checkpoint-name rules
 * record.c: meta_record_*  one checkpoint's record <-> one bitmap name
 * chain.c:  meta_chain_*, meta_gone_*  the chain id, and the chain's
 *                          record of deleted sequence numbers
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
/* Record bitmaps: "ckptd1:" SEQ ":" CTIME ":" NAME ":" [DESC-BASE64URL]
 * ":" CHAIN; records of an earlier ckptd have no chain id:
 * "ckptd1:" SEQ ":" CTIME ":" NAME [":" DESC-BASE64URL]. */
#define META_RECORD_PREFIX "ckptd1:"
#define META_BITMAP_NAME_MAX 1023       /* qcow2's limit on a bitmap name */
#define META_RECORD_GRANULARITY 2147483648u /* largest QEMU accepts: tiny */
#define META_CHAIN_LEN 16               /* a chain id: 16 lowercase hex digits */

struct meta_record {
    char *name;
    uint64_t seq;           /* creation order: parent = previous seq */
    int64_t ctime;          /* seconds since the epoch */
    char *description;      /* NULL when none */
    char chain[META_CHAIN_LEN + 1];     /* the chain id; "" in an earlier
                                         * ckptd's record (none) */
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
/* A decimal number up to a non-digit; no sign, no leading zeros. */
bool meta_parse_u64(const char **p, uint64_t *out);
/* Does this bitmap name belong to ckptd: a record ("ckptdN:") or a
 * temporary bitmap ("ckptd:")?  Such names cannot be checkpoint names. */
#define META_TEMP_PREFIX "ckptd:"
bool meta_bitmap_is_ours(const char *bitmap);

/* --- chain.c --- */
/* A chain is every checkpoint one VM has made since its first: its id is
 * random, made with that first checkpoint, and in every record.  A
 * sequence number is unique within a chain, so (chain, seq) names one
 * checkpoint for good: the identity a backup records. */
bool meta_chain_valid(const char *s);          /* 16 lowercase hex digits */
/* The id given to the checkpoints of an earlier ckptd (records without
 * one) until a change writes it: a hash of the oldest of them, so every
 * agent reading the same images derives the same id. */
void meta_chain_derive(const struct meta_record *oldest, char out[META_CHAIN_LEN + 1]);

/* The chain's deleted sequence numbers ("gone set"): on every disk that
 * can hold checkpoints, so that a disk that was detached when one of its
 * checkpoints was deleted cannot bring it back.  Sorted ranges, split
 * over as many bitmaps as the name limit needs:
 *   "ckptd1:gone:" CHAIN ":" RANGE {"," RANGE}   RANGE = N | N "-" M */
#define META_GONE_PREFIX "ckptd1:gone:"
struct meta_seq_range {
    uint64_t lo, hi;        /* inclusive */
};
struct meta_seqs {          /* a set of sequence numbers: sorted ranges that
                             * neither overlap nor touch */
    struct meta_seq_range *r;
    size_t n;
};
void meta_seqs_add_range(struct meta_seqs *s, uint64_t lo, uint64_t hi);
uint64_t meta_seqs_max(const struct meta_seqs *s);     /* 0 when empty */
bool meta_seqs_equal(const struct meta_seqs *a, const struct meta_seqs *b);
void meta_seqs_add(struct meta_seqs *s, uint64_t seq);
bool meta_seqs_has(const struct meta_seqs *s, uint64_t seq);
void meta_seqs_free(struct meta_seqs *s);
/* The bitmap names that hold set s for chain (appended to out). */
void meta_gone_encode(const char *chain, const struct meta_seqs *s, struct str_vec *out);
/* true when bitmap is a gone mark: its chain copied out, its numbers
 * added to s (NULL: only recognise it). */
bool meta_gone_decode(const char *bitmap, char chain[META_CHAIN_LEN + 1],
                      struct meta_seqs *s);

/* --- tree.c --- */
struct meta_bitmap {
    char *name;
    bool recording, persistent, busy, inconsistent;
    uint64_t count;             /* dirty bytes */
    uint64_t granularity;
    size_t layer;               /* index into its disk's layers: 0 = node */
};

/* One format node of a disk's chain that holds checkpoints (records).
 * A disk-snapshot puts a new layer on top and carries the checkpoints
 * into it; the layers below keep the bitmaps of the writes they saw. */
struct meta_layer {
    char *node;
    bool read_only;             /* QEMU opened it read-only (a backing
                                 * image): its bitmaps cannot change */
};

struct meta_disk {
    char *disk;                 /* guest device id, else node name */
    char *node;                 /* format node: where its bitmaps live, the
                                 * top of layers (layers[0].node) */
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
    bool base_capable;          /* can_checkpoint but for the chain: the image */
    const char *base_reason;    /* why not, then (a literal) */
    bool recording_gap;         /* tracking false only because its newest
                                 * checkpoint does not record (judged anew
                                 * at each derive); the two above as read: */
    bool gap_base_capable;
    const char *gap_base_reason;
    /* Derived from the bitmaps with the checkpoints (meta_tree_derive): */
    char *foreign;              /* why its checkpoints are not this VM's (it
                                 * holds another chain's), else NULL; such a
                                 * disk cannot hold checkpoints and ckptd
                                 * never touches its bitmaps */
    char foreign_chain[META_CHAIN_LEN + 1];     /* that chain; "" for an
                                                 * earlier ckptd's records */
    struct str_vec foreign_names;       /* its checkpoints' names */
    struct str_vec stale_names;         /* checkpoints deleted while it was
                                         * detached whose bitmaps it holds */
    struct meta_layer *layers;  /* top first: node, then the layers below
                                 * it in the backing chain that hold records */
    size_t nlayers;
    struct meta_bitmap *bitmaps;/* of every layer, layer by layer */
    size_t nbitmaps;
};

/* A checkpoint's bitmaps on one layer of a disk: its record, and its data
 * bitmap there (the writes that layer saw since the checkpoint). */
struct meta_part {
    size_t layer;
    const struct meta_bitmap *bitmap;   /* NULL if missing */
    const char *record;
};

/* One member disk of a checkpoint. */
struct meta_member {
    size_t disk;                /* index into tree->disks */
    const struct meta_bitmap *bitmap;   /* the data bitmap on the topmost
                                 * layer holding it (parts[0]); NULL if missing */
    const char *record;         /* parts[0]'s record bitmap name */
    struct meta_part *parts;    /* every layer holding its record, top first */
    size_t nparts;
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
    /* The VM's chain: the id written into new records and marks ("": none
     * known; then plans write records without one, as an earlier ckptd
     * did).  Kept by meta_tree_derive when set, else found in the images. */
    char chain[META_CHAIN_LEN + 1];
    struct meta_seqs gone;      /* the chain's deleted sequence numbers */
    /* Checkpoints the chain deleted while a disk holding them was
     * detached: their bitmaps on that disk, by seq.  Not checkpoints (never
     * listed, never a parent), but their data bitmaps still hold writes
     * since them, so incrementals from older checkpoints merge them, and
     * the next change folds them away (bitmap/plan-chain.c). */
    struct meta_ckpt *stale;
    size_t nstale;
};

/* Builds the tree from the "return" values of query-block and
 * query-named-block-nodes (flat).  Returns 0, or -1 with e set. */
int meta_tree_build(json_t *blocks, json_t *nodes, struct meta_tree *out,
                    struct ckpt_error *e);
/* The same, for a VM whose chain is known (NULL: not known): a disk of
 * another chain never becomes the VM's, whatever the disks' count. */
int meta_tree_build_in(json_t *blocks, json_t *nodes, const char *chain,
                       struct meta_tree *out, struct ckpt_error *e);
void meta_tree_free(struct meta_tree *t);
/* The format node below node in its backing chain, from the "return" of
 * query-named-block-nodes (flat), or NULL.  Borrowed from nodes. */
const char *meta_backing_node(json_t *nodes, const char *node);
/* Re-derives the checkpoints from the disks' bitmaps. */
void meta_tree_derive(struct meta_tree *t);
/* Index lookups; -1 when absent. */
ssize_t meta_tree_find_ckpt(const struct meta_tree *t, const char *name);
ssize_t meta_tree_find_disk(const struct meta_tree *t, const char *disk);
/* A bitmap on the disk's top checkpoint layer (node), or on layer. */
const struct meta_bitmap *meta_disk_find_bitmap(const struct meta_disk *d,
                                                const char *name);
const struct meta_bitmap *meta_disk_find_bitmap_on(const struct meta_disk *d,
                                                   size_t layer, const char *name);
/* The layer index of node on disk d; -1 when it is not one of its layers. */
ssize_t meta_disk_find_layer(const struct meta_disk *d, const char *node);
/* The node a bitmap of disk d is on. */
static inline const char *
meta_bitmap_node(const struct meta_disk *d, const struct meta_bitmap *b)
{
    return d->layers[b->layer].node;
}
/* The member entry of checkpoint c on disk index d, or NULL. */
const struct meta_member *meta_ckpt_member(const struct meta_ckpt *c, size_t d);
/* Bytes written on disk d since checkpoint i: its bitmaps plus every newer
 * one on every layer of the disk.  A sum of counts, so an upper bound of
 * their union. */
uint64_t meta_tree_changed_since(const struct meta_tree *t, size_t i, size_t d);
/* The checkpoint's identity: CHAIN ":" SEQ (new string). */
char *meta_tree_ckpt_id(const struct meta_tree *t, size_t i);
/* Why no checkpoint `name` is listed although a disk holds its bitmaps
 * (stale, or on a foreign disk), or NULL: a new string. */
char *meta_tree_why_absent(const struct meta_tree *t, const char *name);
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
