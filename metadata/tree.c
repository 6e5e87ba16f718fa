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

/* Appends the named bitmaps of node (layer index layer) to d's. */
static void
read_bitmaps(struct meta_disk *d, json_t *node, size_t layer)
{
    json_t *list = json_object_get(node, "dirty-bitmaps");
    size_t i;
    json_t *b;
    d->bitmaps = xrealloc(d->bitmaps, (d->nbitmaps + json_array_size(list) + 1) *
                                      sizeof *d->bitmaps);
    json_array_foreach(list, i, b) {
        const char *name = jstr(b, "name");
        if (!name)              /* anonymous: a running block job's */
            continue;
        struct meta_bitmap *m = &d->bitmaps[d->nbitmaps++];
        *m = (struct meta_bitmap) { .layer = layer };
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
        /* A snapshot-access node (a backup's point-in-time view) names
         * the same file; the flat listing has no backing-image to give
         * the format, so it must be told apart by its driver. */
        if (nf && drv && strcmp(nf, file) == 0 && !is_filter(drv) &&
            !is_protocol(drv) && strcmp(drv, "snapshot-access") != 0 &&
            (!format || strcmp(drv, format) == 0))
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

/* The layers of d from its checkpoint layer down: the layer itself, and
 * each backing layer below it that holds records too (what a
 * disk-snapshot through ckptd leaves).  A layer without records ends the
 * walk: nothing of ours lies beyond it. */
#define META_MAX_LAYERS 16
static void
read_layers(struct meta_disk *d, json_t *nodes, json_t *layer)
{
    d->layers = xcalloc(META_MAX_LAYERS, sizeof *d->layers);
    for (json_t *l = layer; l && d->nlayers < META_MAX_LAYERS;
         l = backing_layer(nodes, l)) {
        if (l != layer && !has_records(l))
            break;
        const char *name = jstr(l, "node-name");
        d->layers[d->nlayers] = (struct meta_layer) {
            .node = xstrdup(name ? name : d->node),
            .read_only = json_is_true(json_object_get(l, "ro")),
        };
        read_bitmaps(d, l, d->nlayers++);
    }
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
    d->can_checkpoint = d->base_capable = why == NULL;
    d->reason = why ? xstrdup(why) : NULL;
    d->base_reason = why;
    read_layers(d, nodes, layer);
    return 0;
}

/* One record bitmap found on one disk. */
struct found_record {
    struct meta_record rec;
    size_t disk;
    size_t layer;
    const char *bitmap;
};

static int
cmp_found(const void *x, const void *y)
{
    const struct found_record *a = x, *b = y;
    int c = strcmp(a->rec.name, b->rec.name);
    if (c)
        return c;
    if (a->disk != b->disk)
        return a->disk < b->disk ? -1 : 1;
    return a->layer < b->layer ? -1 : a->layer > b->layer;
}

static int
cmp_bitmap_name(const void *x, const void *y)
{
    const struct meta_bitmap *a = *(const struct meta_bitmap *const *) x;
    const struct meta_bitmap *b = *(const struct meta_bitmap *const *) y;
    int c = strcmp(a->name, b->name);
    return c ? c : a->layer < b->layer ? -1 : a->layer > b->layer;
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
find_sorted(const struct meta_bitmap **v, size_t n, const char *name, size_t layer)
{
    struct meta_bitmap key = { .name = (char *) name, .layer = layer };
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
            (*out)[n++] = (struct found_record) { rec, d, disk->bitmaps[b].layer,
                                                  disk->bitmaps[b].name };
        }
    }
    return n;
}

/* Records joined by checkpoint name: sorted by (name, disk), each run of
 * one name is one checkpoint with its members in disk order.  O(n log n)
 * in the number of bitmaps.  Takes the records (cleared as they go). */
static size_t
collect_records(const struct meta_tree *t, struct found_record *f, size_t n,
                const struct meta_bitmap ***sorted, struct meta_ckpt **out)
{
    if (n)
        qsort(f, n, sizeof *f, cmp_found);
    struct meta_ckpt *ckpts = xcalloc(n + 1, sizeof *ckpts);
    size_t nckpts = 0;
    for (size_t i = 0; i < n; i++) {
        /* Compared with the checkpoint, not f[i - 1]: merged records are
         * cleared as they go. */
        bool same = nckpts && strcmp(f[i].rec.name, ckpts[nckpts - 1].rec.name) == 0;
        bool same_disk = same && f[i].disk == f[i - 1].disk;
        if (!same) {
            struct meta_ckpt *c = &ckpts[nckpts++];
            *c = (struct meta_ckpt) { .rec = f[i].rec };
            c->members = xcalloc(t->ndisks + 1, sizeof *c->members);
        } else {
            bool second_on_layer = same_disk && f[i].layer == f[i - 1].layer;
            if (!second_on_layer && f[i].rec.seq != ckpts[nckpts - 1].rec.seq)
                log_warn("checkpoint '%s' has records of different sequence on "
                         "different disks or layers; using the first", f[i].rec.name);
            /* A record without the chain id and one with it: the same
             * checkpoint, partly rewritten; it has the id. */
            if (!ckpts[nckpts - 1].rec.chain[0])
                memcpy(ckpts[nckpts - 1].rec.chain, f[i].rec.chain, sizeof f[i].rec.chain);
            meta_record_clear(&f[i].rec);
            if (second_on_layer)
                continue;
        }
        struct meta_ckpt *c = &ckpts[nckpts - 1];
        if (!same_disk) {
            c->members[c->nmembers++] = (struct meta_member) {
                .disk = f[i].disk,
                .parts = xcalloc(t->disks[f[i].disk].nlayers + 1, sizeof (struct meta_part)),
            };
        }
        struct meta_member *m = &c->members[c->nmembers - 1];
        m->parts[m->nparts++] = (struct meta_part) {
            .layer = f[i].layer, .record = f[i].bitmap,
            .bitmap = find_sorted(sorted[f[i].disk], t->disks[f[i].disk].nbitmaps,
                                  c->rec.name, f[i].layer),
        };
        m->bitmap = m->parts[0].bitmap;
        m->record = m->parts[0].record;
    }
    *out = ckpts;
    return nckpts;
}

static int
cmp_seq(const void *a, const void *b)
{
    const struct meta_ckpt *x = a, *y = b;
    return x->rec.seq < y->rec.seq ? -1 : x->rec.seq > y->rec.seq;
}

static void
ckpt_list_free(struct meta_ckpt *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        meta_record_clear(&c[i].rec);
        for (size_t k = 0; k < c[i].nmembers; k++)
            free(c[i].members[k].parts);
        free(c[i].members);
    }
    free(c);
}

static void
ckpts_free(struct meta_tree *t)
{
    ckpt_list_free(t->ckpts, t->nckpts);
    ckpt_list_free(t->stale, t->nstale);
    t->ckpts = t->stale = NULL;
    t->nckpts = t->nstale = 0;
    meta_seqs_free(&t->gone);
}

/* --- which chain each disk belongs to --- */

/* The first chain id a disk's records or gone marks name; for a disk
 * with only an earlier ckptd's records, `derived`; else "". */
static void
disk_chain(const struct meta_tree *t, const struct found_record *f, size_t n, size_t d,
           const char *derived, char out[META_CHAIN_LEN + 1])
{
    bool chainless = false;
    for (size_t i = 0; i < n; i++) {
        if (f[i].disk == d && f[i].rec.chain[0]) {
            memcpy(out, f[i].rec.chain, META_CHAIN_LEN + 1);
            return;
        }
        chainless |= f[i].disk == d;
    }
    const struct meta_disk *disk = &t->disks[d];
    for (size_t b = 0; b < disk->nbitmaps; b++)
        if (meta_gone_decode(disk->bitmaps[b].name, out, NULL))
            return;
    strcpy(out, chainless ? derived : "");
}

/* Does disk d hold a record or mark of a chain other than x? */
static const char *
other_chain(const struct meta_tree *t, const struct found_record *f, size_t n, size_t d,
            const char *x)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].disk == d && f[i].rec.chain[0] && strcmp(f[i].rec.chain, x) != 0)
            return f[i].rec.chain;
    const struct meta_disk *disk = &t->disks[d];
    for (size_t b = 0; b < disk->nbitmaps; b++) {
        char c[META_CHAIN_LEN + 1];
        if (meta_gone_decode(disk->bitmaps[b].name, c, NULL) && strcmp(c, x) != 0)
            return disk->bitmaps[b].name + strlen(META_GONE_PREFIX);
    }
    return NULL;
}

static bool
chain_held(const struct meta_tree *t, const struct found_record *f, size_t n,
           const char *x)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].rec.chain, x) == 0)
            return true;
    for (size_t d = 0; d < t->ndisks; d++)
        for (size_t b = 0; b < t->disks[d].nbitmaps; b++) {
            char c[META_CHAIN_LEN + 1];
            if (meta_gone_decode(t->disks[d].bitmaps[b].name, c, NULL) &&
                strcmp(c, x) == 0)
                return true;
        }
    return false;
}

/* The VM's chain when the agent does not know it yet: the one whose
 * records are on the most disks, the first disk deciding a tie (the boot
 * disk is first; a disk from another VM is hot-plugged later).  A chain
 * with an id beats records without one: the first change of this version
 * gives every attached disk the id, so those without are disks that were
 * away then, or another VM's. */
static void
choose_chain(const struct meta_tree *t, const struct found_record *f, size_t n,
             const char *derived, char x[META_CHAIN_LEN + 1])
{
    size_t best = 0;
    x[0] = '\0';
    for (size_t d = 0; d < t->ndisks; d++) {
        char c[META_CHAIN_LEN + 1];
        disk_chain(t, f, n, d, derived, c);
        if (!c[0])
            continue;
        bool real = strcmp(c, derived) != 0;
        size_t count = real ? t->ndisks + 1 : 0;
        for (size_t o = 0; o < t->ndisks; o++) {
            char oc[META_CHAIN_LEN + 1];
            disk_chain(t, f, n, o, derived, oc);
            count += strcmp(oc, c) == 0;
        }
        if (count > best) {
            best = count;
            memcpy(x, c, META_CHAIN_LEN + 1);
        }
    }
}

/* A disk with only an earlier ckptd's records (no chain id) when the
 * chain has ids: it joins only if one of its records is a checkpoint of
 * the chain (same number, name and time), i.e. it was detached while the
 * first change wrote the id. */
static int
cmp_rec_seq(const void *x, const void *y)
{
    const struct meta_record *a = *(const struct meta_record *const *) x;
    const struct meta_record *b = *(const struct meta_record *const *) y;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* xs: the chain's records with its id, sorted by seq (nx of them). */
static bool
matches_chain(const struct found_record *f, size_t n, size_t d,
              const struct meta_record **xs, size_t nx)
{
    for (size_t i = 0; i < n; i++) {
        if (f[i].disk != d || f[i].rec.chain[0])
            continue;
        const struct meta_record *key = &f[i].rec;
        const struct meta_record **hit = nx ? bsearch(&key, xs, nx, sizeof *xs, cmp_rec_seq)
                                            : NULL;
        /* Records of one seq are adjacent: look at each. */
        while (hit && hit > xs && hit[-1]->seq == key->seq)
            hit--;
        for (; hit && hit < xs + nx && (*hit)->seq == key->seq; hit++)
            if ((*hit)->ctime == key->ctime && strcmp((*hit)->name, key->name) == 0)
                return true;
    }
    return false;
}

static void
disk_reset_derived(struct meta_disk *d)
{
    free(d->foreign);
    d->foreign = NULL;
    d->foreign_chain[0] = '\0';
    str_vec_free_all(&d->foreign_names);
    str_vec_free_all(&d->stale_names);
}

/* Sets d->foreign (and why) for each disk whose checkpoints are not this
 * chain's; gathers the chain's gone set from the others. */
static void
classify_disks(struct meta_tree *t, const struct found_record *f, size_t n, const char *x)
{
    bool chained = x[0] && chain_held(t, f, n, x);
    const struct meta_record **xs = xcalloc(n + 1, sizeof *xs);
    size_t nx = 0;
    for (size_t i = 0; chained && i < n; i++)
        if (strcmp(f[i].rec.chain, x) == 0)
            xs[nx++] = &f[i].rec;
    if (nx)
        qsort(xs, nx, sizeof *xs, cmp_rec_seq);
    for (size_t d = 0; d < t->ndisks; d++) {
        struct meta_disk *disk = &t->disks[d];
        const char *other = x[0] ? other_chain(t, f, n, d, x) : NULL;
        char dc[META_CHAIN_LEN + 1];
        disk_chain(t, f, n, d, "", dc);
        bool own = dc[0] && strcmp(dc, x) == 0;        /* holds x's id */
        bool chainless = false;
        for (size_t i = 0; i < n && !chainless; i++)
            chainless = f[i].disk == d && !f[i].rec.chain[0];
        if (other) {
            memcpy(disk->foreign_chain, other, META_CHAIN_LEN);
            disk->foreign_chain[META_CHAIN_LEN] = '\0';
            disk->foreign = xasprintf(
                "it holds checkpoints of another chain (%s), not of this VM's "
                "(%s): a disk from another VM, or from before all of this VM's "
                "checkpoints were deleted; ckptd leaves its bitmaps alone",
                disk->foreign_chain, x);
        } else if (chained && chainless && !own && !matches_chain(f, n, d, xs, nx)) {
            disk->foreign = xasprintf(
                "it holds checkpoints of an earlier ckptd that are none of this "
                "VM's (chain %s): a disk from another VM; ckptd leaves its "
                "bitmaps alone", x);
        }
        if (disk->foreign)
            continue;
        for (size_t b = 0; b < disk->nbitmaps; b++) {
            char c[META_CHAIN_LEN + 1];
            struct meta_seqs s = { 0 };
            if (meta_gone_decode(disk->bitmaps[b].name, c, &s) && strcmp(c, x) == 0)
                for (size_t k = 0; k < s.n; k++)
                    meta_seqs_add_range(&t->gone, s.r[k].lo, s.r[k].hi);
            meta_seqs_free(&s);
        }
    }
    free(xs);
}

static void
note_foreign_names(struct meta_tree *t, const struct found_record *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct meta_disk *disk = &t->disks[f[i].disk];
        if (disk->foreign)
            str_vec_append(&disk->foreign_names, xstrdup(f[i].rec.name));
    }
}

static void
note_stale_names(struct meta_tree *t)
{
    for (size_t i = 0; i < t->nstale; i++)
        for (size_t k = 0; k < t->stale[i].nmembers; k++)
            str_vec_append(&t->disks[t->stale[i].members[k].disk].stale_names,
                           xstrdup(t->stale[i].rec.name));
}

/* Does a stale checkpoint newer than seq (deleted while disk d was away)
 * record on d's top layer?  It holds the writes then, until the next
 * change folds it into the newest live one. */
static bool
stale_records_on_top(const struct meta_tree *t, size_t d, uint64_t seq)
{
    for (size_t j = 0; j < t->nstale; j++) {
        const struct meta_member *m = meta_ckpt_member(&t->stale[j], d);
        if (m && t->stale[j].rec.seq > seq && m->parts[0].layer == 0 && m->bitmap &&
            m->bitmap->recording)
            return true;
    }
    return false;
}

/* A disk whose layers hold checkpoints tracks only while the newest of
 * them records on the top layer.  It does not when another client
 * committed a ckptd overlay into its base (whose bitmaps disk-snapshot
 * had disabled): writes would then reach no checkpoint at all.
 * Inconsistent or missing bitmaps are judged elsewhere. */
static void
check_recording(struct meta_tree *t)
{
    for (size_t d = 0; d < t->ndisks; d++) {
        struct meta_disk *disk = &t->disks[d];
        if (disk->recording_gap) {
            /* Judged on these checkpoints, not on the last derive's. */
            disk->recording_gap = false;
            disk->tracking = true;
            free(disk->untracked);
            disk->untracked = NULL;
            disk->base_capable = disk->gap_base_capable;
            disk->base_reason = disk->gap_base_reason;
        }
        ssize_t i = meta_tree_prev_on_disk(t, t->nckpts, d);
        if (!disk->tracking || i < 0)
            continue;
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], d);
        const struct meta_bitmap *b = m->parts[0].layer == 0 ? m->bitmap : NULL;
        if (b && (b->recording || b->inconsistent))
            continue;
        if (stale_records_on_top(t, d, t->ckpts[i].rec.seq))
            continue;
        if (m->parts[0].layer == 0 && !b)
            continue;
        disk->recording_gap = true;
        disk->gap_base_capable = disk->base_capable;
        disk->gap_base_reason = disk->base_reason;
        disk->tracking = false;
        disk->untracked = xasprintf(
            "the bitmap of its newest checkpoint '%s' on '%s' does not record, so "
            "no checkpoint saw the writes since (another QMP client changed its "
            "bitmaps, or committed its layers outside ckptd); a full backup is "
            "needed, and new checkpoints wait until '%s' is deleted",
            t->ckpts[i].rec.name, disk->active, t->ckpts[i].rec.name);
        /* As read_disk does for a disk that does not track; the end of
         * meta_tree_derive sets can_checkpoint and reason from these. */
        disk->base_capable = false;
        disk->base_reason = "it does not track writes now (see 'tracking')";
    }
}

/* Checkpoints from the disks' bitmaps: the records of this VM's chain
 * joined by name, sorted by sequence; those the chain deleted while their
 * disk was away apart (stale); other chains' disks apart (foreign).
 * Replaces whatever checkpoints the tree had; keeps t->chain when set. */
void
meta_tree_derive(struct meta_tree *t)
{
    ckpts_free(t);
    for (size_t d = 0; d < t->ndisks; d++)
        disk_reset_derived(&t->disks[d]);
    struct found_record *f;
    size_t n = find_records(t, &f);
    /* A chain the agent knows counts while a disk holds it: an id not
     * written yet must not make the VM's own disks foreign when they are
     * plugged in after QEMU starts. */
    char derived[META_CHAIN_LEN + 1] = "";
    const struct meta_record *oldest = NULL;
    for (size_t i = 0; i < n; i++)
        if (!f[i].rec.chain[0] && (!oldest || f[i].rec.seq < oldest->seq))
            oldest = &f[i].rec;
    if (oldest)
        meta_chain_derive(oldest, derived);
    if (t->chain[0] && !chain_held(t, f, n, t->chain) && strcmp(t->chain, derived) != 0)
        t->chain[0] = '\0';
    /* x: the chain to sort the disks by.  It becomes the tree's only when
     * it is in the images (a derived one the agent settles itself). */
    char x[META_CHAIN_LEN + 1];
    memcpy(x, t->chain, sizeof x);
    if (!x[0])
        choose_chain(t, f, n, derived, x);
    if (!t->chain[0] && chain_held(t, f, n, x))
        memcpy(t->chain, x, sizeof x);
    classify_disks(t, f, n, x);
    note_foreign_names(t, f, n);

    /* Live and stale records of this chain; foreign ones dropped. */
    size_t nlive = 0, nstale = 0;
    struct found_record *stale = xcalloc(n + 1, sizeof *stale);
    for (size_t i = 0; i < n; i++) {
        if (t->disks[f[i].disk].foreign)
            meta_record_clear(&f[i].rec);
        else if (meta_seqs_has(&t->gone, f[i].rec.seq))
            stale[nstale++] = f[i];
        else
            f[nlive++] = f[i];
    }
    const struct meta_bitmap ***sorted = xcalloc(t->ndisks + 1, sizeof *sorted);
    for (size_t d = 0; d < t->ndisks; d++)
        sorted[d] = sorted_bitmaps(&t->disks[d]);
    t->nckpts = collect_records(t, f, nlive, sorted, &t->ckpts);
    t->nstale = collect_records(t, stale, nstale, sorted, &t->stale);
    for (size_t d = 0; d < t->ndisks; d++)
        free(sorted[d]);
    free(sorted);
    free(f);
    free(stale);
    if (t->nckpts)
        qsort(t->ckpts, t->nckpts, sizeof *t->ckpts, cmp_seq);
    if (t->nstale)
        qsort(t->stale, t->nstale, sizeof *t->stale, cmp_seq);
    check_recording(t);
    note_stale_names(t);

    t->next_seq = t->nckpts ? t->ckpts[t->nckpts - 1].rec.seq + 1 : 1;
    if (t->nstale && t->stale[t->nstale - 1].rec.seq >= t->next_seq)
        t->next_seq = t->stale[t->nstale - 1].rec.seq + 1;
    if (meta_seqs_max(&t->gone) >= t->next_seq)
        t->next_seq = meta_seqs_max(&t->gone) + 1;
    for (size_t d = 0; d < t->ndisks; d++) {
        struct meta_disk *disk = &t->disks[d];
        for (size_t b = 0; !disk->foreign && b < disk->nbitmaps; b++) {
            uint64_t next;
            if (meta_next_decode(disk->bitmaps[b].name, &next) && next > t->next_seq)
                t->next_seq = next;
        }
        /* A foreign disk holds no checkpoints of this VM's. */
        disk->can_checkpoint = disk->base_capable && !disk->foreign;
        free(disk->reason);
        disk->reason = disk->foreign ? xstrdup(disk->foreign)
                       : disk->base_reason ? xstrdup(disk->base_reason) : NULL;
    }
}

int
meta_tree_build(json_t *blocks, json_t *nodes, struct meta_tree *out,
                struct ckpt_error *e)
{
    return meta_tree_build_in(blocks, nodes, NULL, out, e);
}

int
meta_tree_build_in(json_t *blocks, json_t *nodes, const char *chain,
                   struct meta_tree *out, struct ckpt_error *e)
{
    memset(out, 0, sizeof *out);
    if (chain && meta_chain_valid(chain))
        memcpy(out->chain, chain, sizeof out->chain);
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
    for (size_t i = 0; i < d->nlayers; i++)
        free(d->layers[i].node);
    free(d->layers);
    disk_reset_derived(d);
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
meta_disk_find_bitmap_on(const struct meta_disk *d, size_t layer, const char *name)
{
    for (size_t i = 0; i < d->nbitmaps; i++)
        if (d->bitmaps[i].layer == layer && strcmp(d->bitmaps[i].name, name) == 0)
            return &d->bitmaps[i];
    return NULL;
}

const struct meta_bitmap *
meta_disk_find_bitmap(const struct meta_disk *d, const char *name)
{
    return meta_disk_find_bitmap_on(d, 0, name);
}

ssize_t
meta_disk_find_layer(const struct meta_disk *d, const char *node)
{
    for (size_t i = 0; node && i < d->nlayers; i++)
        if (strcmp(d->layers[i].node, node) == 0)
            return (ssize_t) i;
    return -1;
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
        for (size_t k = 0; m && k < m->nparts; k++)
            if (m->parts[k].bitmap)
                sum += m->parts[k].bitmap->count;
    }
    /* The writes in a stale checkpoint's bitmaps are writes since i too. */
    for (size_t j = 0; j < t->nstale; j++) {
        const struct meta_member *m = meta_ckpt_member(&t->stale[j], d);
        for (size_t k = 0; m && k < m->nparts; k++)
            if (m->parts[k].bitmap && t->stale[j].rec.seq > t->ckpts[i].rec.seq)
                sum += m->parts[k].bitmap->count;
    }
    return sum;
}

char *
meta_tree_ckpt_id(const struct meta_tree *t, size_t i)
{
    const struct meta_record *r = &t->ckpts[i].rec;
    return xasprintf("%s:%llu", r->chain[0] ? r->chain : t->chain[0] ? t->chain : "-",
                     (unsigned long long) r->seq);
}

char *
meta_tree_why_absent(const struct meta_tree *t, const char *name)
{
    for (size_t i = 0; i < t->nstale; i++)
        if (strcmp(t->stale[i].rec.name, name) == 0)
            return xasprintf("checkpoint '%s' was deleted while disk '%s' was "
                             "detached; the bitmaps it left there do not bring "
                             "it back", name, t->disks[t->stale[i].members[0].disk].disk);
    for (size_t d = 0; d < t->ndisks; d++)
        for (size_t k = 0; k < t->disks[d].foreign_names.len; k++)
            if (strcmp(t->disks[d].foreign_names.ptr[k], name) == 0)
                return xasprintf("disk '%s' holds a checkpoint '%s', but %s", t->disks[d].disk,
                                 name, t->disks[d].foreign);
    return NULL;
}

const char *
meta_backing_node(json_t *nodes, const char *node)
{
    json_t *layer = find_node(nodes, node);
    json_t *below = layer ? backing_layer(nodes, layer) : NULL;
    return below ? jstr(below, "node-name") : NULL;
}
