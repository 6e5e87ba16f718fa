/* A transaction QEMU accepted, replayed on the cached tree.
 *
 * Checkpoint changes are transactions of bitmap actions only, and their
 * effect on what query-named-block-nodes would report is simple: a bitmap
 * appears, goes, starts or stops recording, or grows by a merge.  Replaying
 * them saves the two queries a re-read costs on every change.  Anything
 * unexpected makes the caller re-read instead: QEMU stays the truth. */
#include "metadata/metadata.h"

#include <stdio.h>

/* The disk one of whose layers is node, and that layer's index. */
static struct meta_disk *
disk_of(struct meta_tree *t, const char *node, size_t *layer)
{
    for (size_t d = 0; node && d < t->ndisks; d++) {
        ssize_t l = meta_disk_find_layer(&t->disks[d], node);
        if (l >= 0) {
            *layer = (size_t) l;
            return &t->disks[d];
        }
    }
    return NULL;
}

static struct meta_bitmap *
find(struct meta_disk *d, size_t layer, const char *name)
{
    return (struct meta_bitmap *) meta_disk_find_bitmap_on(d, layer, name);
}

static int
add(struct meta_disk *d, size_t layer, json_t *data, const char *name)
{
    if (find(d, layer, name))
        return -1;
    json_t *g = json_object_get(data, "granularity");
    d->bitmaps = xrealloc(d->bitmaps, (d->nbitmaps + 1) * sizeof *d->bitmaps);
    d->bitmaps[d->nbitmaps++] = (struct meta_bitmap) {
        .name = xstrdup(name),
        .recording = !json_is_true(json_object_get(data, "disabled")),
        .persistent = json_is_true(json_object_get(data, "persistent")),
        .granularity = g ? (uint64_t) json_integer_value(g) : 65536,
        .layer = layer,
    };
    return 0;
}

/* Sources are names on the target's node, or {node, name} on any layer
 * of any disk. */
static int
merge(struct meta_tree *t, struct meta_disk *d, size_t layer,
      struct meta_bitmap *target, json_t *data)
{
    size_t i;
    json_t *src;
    uint64_t count = target->count;
    json_array_foreach(json_object_get(data, "bitmaps"), i, src) {
        struct meta_bitmap *b = NULL;
        size_t sl;
        struct meta_disk *sd;
        if (json_is_string(src))
            b = find(d, layer, json_string_value(src));
        else if ((sd = disk_of(t, json_string_value(json_object_get(src, "node")), &sl)))
            b = find(sd, sl, json_string_value(json_object_get(src, "name")));
        if (!b)
            return -1;
        count += b->count;
    }
    target->count = count < d->virtual_size || !d->virtual_size ? count : d->virtual_size;
    return 0;
}

static int
apply_one(struct meta_tree *t, json_t *action)
{
    const char *type = json_string_value(json_object_get(action, "type"));
    json_t *data = json_object_get(action, "data");
    const char *name = json_string_value(json_object_get(data, "name"));
    const char *target = json_string_value(json_object_get(data, "target"));
    size_t layer = 0;
    struct meta_disk *d = disk_of(t, json_string_value(json_object_get(data, "node")),
                                  &layer);
    /* The fleecing job of a backup: its filter and its anonymous bitmap
     * are not in the tree (the disk keeps its format node). */
    if (type && strcmp(type, "blockdev-backup") == 0)
        return 0;
    if (!type || !d)
        return -1;
    if (strcmp(type, "block-dirty-bitmap-add") == 0)
        return name ? add(d, layer, data, name) : -1;
    struct meta_bitmap *b = find(d, layer, name ? name : target ? target : "");
    if (!b)
        return -1;
    if (strcmp(type, "block-dirty-bitmap-merge") == 0)
        return merge(t, d, layer, b, data);
    if (strcmp(type, "block-dirty-bitmap-enable") == 0) {
        b->recording = true;
        return 0;
    }
    if (strcmp(type, "block-dirty-bitmap-disable") == 0) {
        b->recording = false;
        return 0;
    }
    if (strcmp(type, "block-dirty-bitmap-remove") == 0) {
        free(b->name);
        *b = d->bitmaps[--d->nbitmaps];
        return 0;
    }
    return -1;
}

static void
copy_disk(struct meta_disk *dst, const struct meta_disk *src)
{
    *dst = *src;
    dst->bitmaps = xcalloc(src->nbitmaps + 1, sizeof *dst->bitmaps);
    for (size_t i = 0; i < src->nbitmaps; i++) {
        dst->bitmaps[i] = src->bitmaps[i];
        dst->bitmaps[i].name = xstrdup(src->bitmaps[i].name);
    }
}

static void
free_bitmaps(struct meta_disk *d)
{
    for (size_t i = 0; i < d->nbitmaps; i++)
        free(d->bitmaps[i].name);
    free(d->bitmaps);
}

int
meta_tree_apply(struct meta_tree *t, json_t *actions)
{
    /* Work on copies of the bitmap lists: all or nothing, like QEMU. */
    struct meta_disk *work = xcalloc(t->ndisks + 1, sizeof *work);
    for (size_t d = 0; d < t->ndisks; d++)
        copy_disk(&work[d], &t->disks[d]);
    struct meta_tree w = { .disks = work, .ndisks = t->ndisks };
    size_t i;
    json_t *action;
    int r = json_is_array(actions) ? 0 : -1;
    json_array_foreach(actions, i, action)
        if (r == 0)
            r = apply_one(&w, action);
    for (size_t d = 0; d < t->ndisks; d++) {
        free_bitmaps(r == 0 ? &t->disks[d] : &work[d]);   /* the losing copy */
        if (r == 0) {
            t->disks[d].bitmaps = work[d].bitmaps;
            t->disks[d].nbitmaps = work[d].nbitmaps;
        }
    }
    free(work);
    if (r == 0)
        meta_tree_derive(t);
    return r;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* What a replay must get right, as text: per checkpoint and member disk,
 * its record and its data bitmap's recording and persistent flags, sorted
 * (counts are estimates; other people's bitmaps are not ours to track). */
char *
meta_tree_signature(const struct meta_tree *t)
{
    struct str_vec lines = { 0 };
    for (size_t i = 0; i < t->nckpts; i++)
        for (size_t k = 0; k < t->ckpts[i].nmembers; k++) {
            const struct meta_member *m = &t->ckpts[i].members[k];
            const struct meta_disk *d = &t->disks[m->disk];
            for (size_t p = 0; p < m->nparts; p++) {
                const struct meta_bitmap *b = m->parts[p].bitmap;
                str_vec_append(&lines, xasprintf("%s %s %s%s%s",
                                                 d->layers[m->parts[p].layer].node,
                                                 m->parts[p].record,
                                                 b ? b->name : "(no data bitmap)",
                                                 b && b->recording ? " rec" : "",
                                                 b && b->persistent ? " pers" : ""));
            }
        }
    if (lines.len)
        qsort(lines.ptr, lines.len, sizeof *lines.ptr, cmp_str);
    size_t len = 1;
    for (size_t i = 0; i < lines.len; i++)
        len += strlen(lines.ptr[i]) + 1;
    char *sig = xmalloc(len), *p = sig;
    for (size_t i = 0; i < lines.len; i++)
        p += sprintf(p, "%s\n", lines.ptr[i]);
    *p = '\0';
    str_vec_free_all(&lines);
    return sig;
}
