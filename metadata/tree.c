/* The checkpoint tree, rebuilt from QEMU's view of the block graph.
 *
 * The images are the only truth: this is a cache computed from
 * query-block (which disk is which device and node) and
 * query-named-block-nodes (the bitmaps of every node). */
#include "metadata/metadata.h"

static const char *
jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Disks attached to a device are named by its id, which a launcher
 * keeps across boots (node names it may number afresh each time).
 * query-block's qdev is the id itself for devices that have one (scsi-hd,
 * ide-hd, nvme: "vdc"), or a QOM path "/machine/peripheral/ID/..."
 * (virtio-blk: ".../virtio-backend").  A device without an id sits under
 * /machine/peripheral-anon: then the drive's name, else the node's. */
static char *
disk_name(json_t *block, const char *node)
{
    const char *qdev = jstr(block, "qdev");
    const char *prefix = "/machine/peripheral/";
    if (qdev && strncmp(qdev, prefix, strlen(prefix)) == 0) {
        const char *id = qdev + strlen(prefix);
        size_t len = strcspn(id, "/");
        if (len)
            return strndup(id, len);
    }
    if (qdev && *qdev && qdev[0] != '/')
        return xstrdup(qdev);
    const char *device = jstr(block, "device");
    return xstrdup(device && *device ? device : node);
}

/* The QOM path of the device, whose "drive" can be pointed at another
 * node: query-block's qdev is a path, or an id under /machine/peripheral. */
static char *
qdev_path(json_t *block)
{
    const char *qdev = jstr(block, "qdev");
    if (!qdev || !*qdev)
        return NULL;
    return qdev[0] == '/' ? xstrdup(qdev) : xasprintf("/machine/peripheral/%s", qdev);
}

static json_t *
find_node(json_t *nodes, const char *name)
{
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const char *nn = jstr(n, "node-name");
        if (nn && strcmp(nn, name) == 0)
            return n;
    }
    return NULL;
}

static void
read_bitmaps(struct meta_disk *d, json_t *node)
{
    json_t *list = json_object_get(node, "dirty-bitmaps");
    size_t i;
    json_t *b;
    d->bitmaps = xcalloc(json_array_size(list), sizeof *d->bitmaps);
    json_array_foreach(list, i, b) {
        const char *name = jstr(b, "name");
        if (!name)              /* anonymous: a running block job's */
            continue;
        struct meta_bitmap *m = &d->bitmaps[d->nbitmaps++];
        m->name = xstrdup(name);
        m->recording = json_is_true(json_object_get(b, "recording"));
        m->persistent = json_is_true(json_object_get(b, "persistent"));
        m->busy = json_is_true(json_object_get(b, "busy"));
        m->inconsistent = json_is_true(json_object_get(b, "inconsistent"));
        m->count = (uint64_t) json_integer_value(json_object_get(b, "count"));
        m->granularity = (uint64_t) json_integer_value(json_object_get(b, "granularity"));
    }
}

/* Why a disk cannot hold checkpoints, or NULL if it can. */
static const char *
why_not_capable(const struct meta_disk *d, json_t *image)
{
    if (strcmp(d->format, "raw") == 0)
        return "raw images cannot store persistent bitmaps";
    if (strcmp(d->format, "qcow2") != 0)
        return "only qcow2 images can store persistent bitmaps";
    json_t *spec = json_object_get(json_object_get(image, "format-specific"), "data");
    const char *compat = jstr(spec, "compat");
    if (compat && strcmp(compat, "0.10") == 0)
        return "qcow2 v2 (compat=0.10) images cannot store persistent bitmaps";
    if (d->read_only)
        return "the disk is read-only";
    return NULL;
}

/* Filters a launcher or a running backup put above the format node.  QEMU
 * does not name a filter's child in these queries, but it describes the
 * child's image: the format node is the one with that driver and file. */
static bool
is_filter(const char *drv)
{
    static const char *const filters[] = {
        "copy-before-write", "throttle", "preallocate", "compress",
        "copy-on-read", "blkdebug", "blklogwrites",
    };
    for (size_t i = 0; drv && i < ARRAY_SIZE(filters); i++)
        if (strcmp(drv, filters[i]) == 0)
            return true;
    return false;
}

static bool
is_protocol(const char *drv)
{
    return strcmp(drv, "file") == 0 || strcmp(drv, "host_device") == 0 ||
           strcmp(drv, "nbd") == 0;
}

static json_t *
below_filter(json_t *nodes, json_t *filter)
{
    json_t *child = json_object_get(json_object_get(filter, "image"), "backing-image");
    const char *file = jstr(filter, "file"), *format = jstr(child, "format");
    size_t i;
    json_t *n;
    if (!file)
        return NULL;
    json_array_foreach(nodes, i, n) {
        const char *nf = jstr(n, "file"), *drv = jstr(n, "drv");
        if (nf && drv && strcmp(nf, file) == 0 && !is_filter(drv) &&
            !is_protocol(drv) && (!format || strcmp(drv, format) == 0))
            return n;
    }
    return NULL;
}

/* The format node under layer in its backing chain, or NULL.  QEMU names
 * the backing file, not the backing node: the node is the one that opens
 * that file with that format. */
static json_t *
backing_layer(json_t *nodes, json_t *layer)
{
    json_t *image = json_object_get(layer, "image");
    const char *file = jstr(image, "full-backing-filename");
    const char *format = jstr(image, "backing-filename-format");
    if (!file)
        file = jstr(layer, "backing_file");
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const char *nf = jstr(n, "file"), *drv = jstr(n, "drv");
        if (file && nf && drv && strcmp(nf, file) == 0 && !is_filter(drv) &&
            !is_protocol(drv) && (!format || strcmp(drv, format) == 0) && n != layer)
            return n;
    }
    return NULL;
}

static bool
has_records(json_t *node)
{
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(node, "dirty-bitmaps"), i, b) {
        const char *name = jstr(b, "name");
        if (name && strncmp(name, META_RECORD_PREFIX, strlen(META_RECORD_PREFIX)) == 0)
            return true;
    }
    return false;
}

/* Where the disk's checkpoints are: the active layer, unless something
 * outside ckptd (an external snapshot, a mirror) put a new layer above
 * the one that holds them.  Then they no longer see the guest's writes:
 * the disk does not track, and says why. */
static json_t *
checkpoint_layer(json_t *nodes, json_t *active, struct meta_disk *d)
{
    json_t *layer = find_node(nodes, d->active);
    if (!layer)
        layer = active;
    d->tracking = true;
    if (has_records(layer))
        return layer;
    json_t *below = layer;
    for (int depth = 0; depth < 8 && (below = backing_layer(nodes, below)); depth++)
        if (has_records(below)) {
            d->tracking = false;
            d->untracked = xasprintf(
                "its active layer '%s' was put above '%s', which holds its "
                "checkpoints, outside ckptd (an external snapshot or mirror); "
                "a full backup is needed until the layers are committed",
                d->active, jstr(below, "node-name"));
            return below;
        }
    return layer;
}

static int
read_disk(json_t *block, json_t *nodes, struct meta_disk *d)
{
    json_t *ins = json_object_get(block, "inserted");
    const char *root = jstr(ins, "node-name");
    /* Walk down through filters (ckptd's own copy-before-write filter of
     * a running backup among them); a few levels at most. */
    for (int depth = 0; ins && is_filter(jstr(ins, "drv")) && depth < 8; depth++) {
        json_t *below = below_filter(nodes, ins);
        if (!below)
            break;
        ins = below;
    }
    const char *node = jstr(ins, "node-name");
    if (!node)
        return -1;              /* empty drive: not a disk */
    json_t *image = json_object_get(ins, "image");
    d->active = xstrdup(node);
    d->root = xstrdup(root ? root : node);
    d->qdev = qdev_path(block);
    d->disk = disk_name(block, node);
    d->format = xstrdup(jstr(ins, "drv") ? jstr(ins, "drv") : "unknown");
    d->filename = xstrdup(jstr(ins, "file") ? jstr(ins, "file") : "");
    d->virtual_size = (uint64_t) json_integer_value(json_object_get(image, "virtual-size"));
    d->read_only = json_is_true(json_object_get(ins, "ro"));
    json_t *layer = checkpoint_layer(nodes, ins, d);
    d->node = xstrdup(jstr(layer, "node-name") ? jstr(layer, "node-name") : node);
    const char *why = why_not_capable(d, image);
    if (!why && !d->tracking)
        why = "it does not track writes now (see 'tracking')";
    d->can_checkpoint = why == NULL;
    d->reason = why ? xstrdup(why) : NULL;
    read_bitmaps(d, layer);
    return 0;
}

/* One record bitmap found on one disk. */
struct found_record {
    struct meta_record rec;
    size_t disk;
    const char *bitmap;
};

static int
cmp_found(const void *x, const void *y)
{
    const struct found_record *a = x, *b = y;
    int c = strcmp(a->rec.name, b->rec.name);
    return c ? c : a->disk < b->disk ? -1 : a->disk > b->disk;
}

static int
cmp_bitmap_name(const void *x, const void *y)
{
    return strcmp((*(const struct meta_bitmap *const *) x)->name,
                  (*(const struct meta_bitmap *const *) y)->name);
}

/* A disk's bitmaps sorted by name, to find data bitmaps in log time: an
 * image can hold thousands (two per checkpoint). */
static const struct meta_bitmap **
sorted_bitmaps(const struct meta_disk *d)
{
    const struct meta_bitmap **v = xcalloc(d->nbitmaps + 1, sizeof *v);
    for (size_t i = 0; i < d->nbitmaps; i++)
        v[i] = &d->bitmaps[i];
    if (d->nbitmaps)
        qsort(v, d->nbitmaps, sizeof *v, cmp_bitmap_name);
    return v;
}

static const struct meta_bitmap *
find_sorted(const struct meta_bitmap **v, size_t n, const char *name)
{
    struct meta_bitmap key = { .name = (char *) name };
    const struct meta_bitmap *kp = &key;
    const struct meta_bitmap **hit = n ? bsearch(&kp, v, n, sizeof *v, cmp_bitmap_name) : NULL;
    return hit ? *hit : NULL;
}

static size_t
find_records(struct meta_tree *t, struct found_record **out)
{
    size_t n = 0, cap = 0;
    *out = NULL;
    for (size_t d = 0; d < t->ndisks; d++) {
        struct meta_disk *disk = &t->disks[d];
        for (size_t b = 0; b < disk->nbitmaps; b++) {
            struct meta_record rec;
            int r = meta_record_decode(disk->bitmaps[b].name, &rec);
            if (r < 0)
                log_warn("disk %s: bitmap '%s' looks like a ckptd record but "
                         "cannot be read; leaving it alone",
                         disk->disk, disk->bitmaps[b].name);
            if (r <= 0)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = xrealloc(*out, cap * sizeof **out);
            }
            (*out)[n++] = (struct found_record) { rec, d, disk->bitmaps[b].name };
        }
    }
    return n;
}

/* Records joined by checkpoint name: sorted by (name, disk), each run of
 * one name is one checkpoint with its members in disk order.  O(n log n)
 * in the number of bitmaps. */
static void
collect_records(struct meta_tree *t)
{
    struct found_record *f;
    size_t n = find_records(t, &f);
    if (n)
        qsort(f, n, sizeof *f, cmp_found);
    const struct meta_bitmap ***sorted = xcalloc(t->ndisks + 1, sizeof *sorted);
    for (size_t d = 0; d < t->ndisks; d++)
        sorted[d] = sorted_bitmaps(&t->disks[d]);
    t->ckpts = xcalloc(n + 1, sizeof *t->ckpts);
    for (size_t i = 0; i < n; i++) {
        /* Compared with the checkpoint, not f[i - 1]: merged records are
         * cleared as they go. */
        bool same = t->nckpts && strcmp(f[i].rec.name, t->ckpts[t->nckpts - 1].rec.name) == 0;
        if (!same) {
            struct meta_ckpt *c = &t->ckpts[t->nckpts++];
            *c = (struct meta_ckpt) { .rec = f[i].rec };
            c->members = xcalloc(t->ndisks + 1, sizeof *c->members);
        } else {
            bool second_on_disk = f[i].disk == f[i - 1].disk;
            if (!second_on_disk && f[i].rec.seq != t->ckpts[t->nckpts - 1].rec.seq)
                log_warn("checkpoint '%s' has records of different sequence on "
                         "different disks; using the first", f[i].rec.name);
            meta_record_clear(&f[i].rec);
            if (second_on_disk)
                continue;
        }
        struct meta_ckpt *c = &t->ckpts[t->nckpts - 1];
        c->members[c->nmembers++] = (struct meta_member) {
            .disk = f[i].disk, .record = f[i].bitmap,
            .bitmap = find_sorted(sorted[f[i].disk], t->disks[f[i].disk].nbitmaps,
                                  c->rec.name),
        };
    }
    for (size_t d = 0; d < t->ndisks; d++)
        free(sorted[d]);
    free(sorted);
    free(f);
}

static int
cmp_seq(const void *a, const void *b)
{
    const struct meta_ckpt *x = a, *y = b;
    return x->rec.seq < y->rec.seq ? -1 : x->rec.seq > y->rec.seq;
}

/* Checkpoints from the disks' bitmaps: records joined by name, sorted by
 * sequence.  Replaces whatever checkpoints the tree had. */
static void
ckpts_free(struct meta_tree *t)
{
    for (size_t i = 0; i < t->nckpts; i++) {
        meta_record_clear(&t->ckpts[i].rec);
        free(t->ckpts[i].members);
    }
    free(t->ckpts);
    t->ckpts = NULL;
    t->nckpts = 0;
}

void
meta_tree_derive(struct meta_tree *t)
{
    ckpts_free(t);
    collect_records(t);
    if (t->nckpts)
        qsort(t->ckpts, t->nckpts, sizeof *t->ckpts, cmp_seq);
    t->next_seq = t->nckpts ? t->ckpts[t->nckpts - 1].rec.seq + 1 : 1;
    for (size_t d = 0; d < t->ndisks; d++)
        for (size_t b = 0; b < t->disks[d].nbitmaps; b++) {
            uint64_t next;
            if (meta_next_decode(t->disks[d].bitmaps[b].name, &next) && next > t->next_seq)
                t->next_seq = next;
        }
}

int
meta_tree_build(json_t *blocks, json_t *nodes, struct meta_tree *out,
                struct ckpt_error *e)
{
    memset(out, 0, sizeof *out);
    if (!json_is_array(blocks) || !json_is_array(nodes)) {
        ckpt_fail(e, CKPT_ERR_QEMU, "QEMU answered the block queries with no list");
        return -1;
    }
    out->disks = xcalloc(json_array_size(blocks), sizeof *out->disks);
    size_t i;
    json_t *block;
    json_array_foreach(blocks, i, block)
        if (read_disk(block, nodes, &out->disks[out->ndisks]) == 0)
            out->ndisks++;
    meta_tree_derive(out);
    return 0;
}

static void
disk_free(struct meta_disk *d)
{
    free(d->disk);
    free(d->node);
    free(d->active);
    free(d->root);
    free(d->qdev);
    free(d->untracked);
    free(d->format);
    free(d->filename);
    free(d->reason);
    for (size_t i = 0; i < d->nbitmaps; i++)
        free(d->bitmaps[i].name);
    free(d->bitmaps);
}

void
meta_tree_free(struct meta_tree *t)
{
    for (size_t i = 0; i < t->ndisks; i++)
        disk_free(&t->disks[i]);
    free(t->disks);
    ckpts_free(t);
    memset(t, 0, sizeof *t);
}

ssize_t
meta_tree_find_ckpt(const struct meta_tree *t, const char *name)
{
    for (size_t i = 0; i < t->nckpts; i++)
        if (strcmp(t->ckpts[i].rec.name, name) == 0)
            return (ssize_t) i;
    return -1;
}

ssize_t
meta_tree_find_disk(const struct meta_tree *t, const char *disk)
{
    for (size_t i = 0; i < t->ndisks; i++)
        if (strcmp(t->disks[i].disk, disk) == 0)
            return (ssize_t) i;
    return -1;
}

const struct meta_bitmap *
meta_disk_find_bitmap(const struct meta_disk *d, const char *name)
{
    for (size_t i = 0; i < d->nbitmaps; i++)
        if (strcmp(d->bitmaps[i].name, name) == 0)
            return &d->bitmaps[i];
    return NULL;
}

const struct meta_member *
meta_ckpt_member(const struct meta_ckpt *c, size_t d)
{
    for (size_t i = 0; i < c->nmembers; i++)
        if (c->members[i].disk == d)
            return &c->members[i];
    return NULL;
}

ssize_t
meta_tree_prev_on_disk(const struct meta_tree *t, size_t i, size_t d)
{
    while (i-- > 0)
        if (meta_ckpt_member(&t->ckpts[i], d))
            return (ssize_t) i;
    return -1;
}

uint64_t
meta_tree_changed_since(const struct meta_tree *t, size_t i, size_t d)
{
    uint64_t sum = 0;
    for (size_t j = i; j < t->nckpts; j++) {
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[j], d);
        if (m && m->bitmap)
            sum += m->bitmap->count;
    }
    return sum;
}
