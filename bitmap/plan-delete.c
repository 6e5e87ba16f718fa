/* Planning checkpoint-delete.
 *
 * The checkpoints form a chain ordered by sequence number, so the
 * descendants of C are simply every checkpoint after it.  On each disk the
 * writes recorded by a deleted bitmap must not be lost: they are merged
 * into the nearest surviving older checkpoint on that disk, which records
 * again if it became the newest.  Merges and enables come before removes,
 * all in one transaction. */
#include "bitmap/plan.h"
#include "qmp/qmp.h"

/* What one disk's pass needs to know. */
struct disk_pass {
    const struct meta_tree *t;
    size_t d;
    const bool *del;
    json_t *actions;
    struct ckpt_error *e;
};

/* Checkpoint i's part on layer l of this disk, or NULL. */
static const struct meta_part *
part_of(const struct disk_pass *p, size_t i, size_t l)
{
    const struct meta_member *m = meta_ckpt_member(&p->t->ckpts[i], p->d);
    for (size_t k = 0; m && k < m->nparts; k++)
        if (m->parts[k].layer == l)
            return &m->parts[k];
    return NULL;
}

/* Survivor s has no bitmap on layer l yet: it gets one there, with its
 * record (the same name as on its other layers), so that the writes of
 * the deleted checkpoints on that layer are kept.  NULL when s has no
 * bitmap whole enough to stand for. */
static const char *
carry_survivor(struct disk_pass *p, size_t s, size_t l, bool recording,
               uint64_t granularity)
{
    const struct meta_member *m = meta_ckpt_member(&p->t->ckpts[s], p->d);
    if (!m->bitmap || m->bitmap->inconsistent)
        return NULL;
    const char *node = p->t->disks[p->d].layers[l].node;
    json_array_append_new(p->actions, qmp_bitmap_add(node, m->bitmap->name, true,
                                                     !recording,
                                                     (unsigned long) granularity));
    json_array_append_new(p->actions, qmp_bitmap_add(node, m->record, true, true,
                                                     META_RECORD_GRANULARITY));
    return m->bitmap->name;
}

/* Merges the deleted checkpoints [from, to) on layer l of this disk into
 * survivor s's bitmap on that layer. */
static enum ckpt_err
fold_into(struct disk_pass *p, size_t l, ssize_t s, size_t from, size_t to)
{
    if (s < 0)
        return CKPT_OK;         /* nothing older survives to keep them */
    const struct meta_part *tp = part_of(p, (size_t) s, l);
    const struct meta_bitmap *target = tp ? tp->bitmap : NULL;
    if (tp && (!target || target->inconsistent))
        return CKPT_OK;         /* nothing that could still be kept whole */
    const char *node = p->t->disks[p->d].layers[l].node;
    /* On the heap: a chain can be thousands of checkpoints long. */
    CLEANUP_FREE const char **srcs = xcalloc(to - from + 1, sizeof *srcs);
    size_t n = 0;
    bool was_recording = false;
    uint64_t granularity = 0;
    for (size_t j = from; j < to; j++) {
        const struct meta_part *dp = p->del[j] ? part_of(p, j, l) : NULL;
        const struct meta_bitmap *b = dp ? dp->bitmap : NULL;
        if (!b)
            continue;
        if (b->inconsistent)
            return ckpt_fail(p->e, CKPT_ERR_INCONSISTENT,
                             "cannot delete checkpoint '%s' alone: its bitmap on "
                             "disk '%s' is inconsistent, so '%s' would miss writes; "
                             "delete '%s' with its children instead",
                             p->t->ckpts[j].rec.name, p->t->disks[p->d].disk,
                             p->t->ckpts[s].rec.name, p->t->ckpts[s].rec.name);
        srcs[n++] = b->name;
        was_recording |= b->recording;
        if (!granularity)
            granularity = b->granularity;
    }
    if (!n)
        return CKPT_OK;
    const char *name = target ? target->name
                              : carry_survivor(p, (size_t) s, l, was_recording, granularity);
    if (!name)
        return CKPT_OK;
    json_array_append_new(p->actions, qmp_bitmap_merge(node, name, srcs, n));
    if (target && was_recording && !target->recording)
        json_array_append_new(p->actions,
            qmp_bitmap_action("block-dirty-bitmap-enable", node, name));
    return CKPT_OK;
}

/* A deleted checkpoint's bitmaps on a read-only backing layer cannot be
 * merged or removed (QEMU refuses: the bitmaps are read-only there). */
static enum ckpt_err
check_writable(struct disk_pass *p)
{
    const struct meta_disk *d = &p->t->disks[p->d];
    for (size_t j = 0; j < p->t->nckpts; j++) {
        const struct meta_member *m = meta_ckpt_member(&p->t->ckpts[j], p->d);
        for (size_t k = 0; p->del[j] && m && k < m->nparts; k++)
            if (d->layers[m->parts[k].layer].read_only)
                return ckpt_fail(p->e, CKPT_ERR_UNSUPPORTED,
                                 "checkpoint '%s' is also kept on '%s', a backing "
                                 "image of disk '%s' that QEMU opened read-only, "
                                 "where its bitmaps cannot be merged or removed; "
                                 "commit the disk first (disk-commit %s)",
                                 p->t->ckpts[j].rec.name,
                                 d->layers[m->parts[k].layer].node, d->disk, d->disk);
    }
    return CKPT_OK;
}

static void
remove_deleted(struct disk_pass *p)
{
    const struct meta_disk *d = &p->t->disks[p->d];
    for (size_t j = 0; j < p->t->nckpts; j++) {
        const struct meta_member *m = meta_ckpt_member(&p->t->ckpts[j], p->d);
        for (size_t k = 0; p->del[j] && m && k < m->nparts; k++) {
            const char *node = d->layers[m->parts[k].layer].node;
            if (m->parts[k].bitmap)
                json_array_append_new(p->actions, qmp_bitmap_action(
                    "block-dirty-bitmap-remove", node, m->parts[k].bitmap->name));
            json_array_append_new(p->actions,
                qmp_bitmap_action("block-dirty-bitmap-remove", node, m->parts[k].record));
        }
    }
}

/* Layer by layer: each deleted checkpoint's bitmap on a layer goes into
 * the nearest older survivor's bitmap on the same layer. */
static enum ckpt_err
plan_disk(struct disk_pass *p)
{
    enum ckpt_err err;
    if ((err = check_writable(p)))
        return err;
    for (size_t l = 0; l < p->t->disks[p->d].nlayers; l++) {
        ssize_t survivor = -1;
        size_t group_start = 0;
        for (size_t j = 0; j < p->t->nckpts; j++) {
            if (p->del[j] || !meta_ckpt_member(&p->t->ckpts[j], p->d))
                continue;
            if ((err = fold_into(p, l, survivor, group_start, j)))
                return err;
            survivor = (ssize_t) j;
            group_start = j + 1;
        }
        if ((err = fold_into(p, l, survivor, group_start, p->t->nckpts)))
            return err;
    }
    remove_deleted(p);
    return CKPT_OK;
}

enum ckpt_err
ckpt_plan_delete(const struct meta_tree *t, const char *name,
                 enum ckpt_delete_mode mode, json_t *actions,
                 struct str_vec *deleted, struct ckpt_error *e)
{
    ssize_t i = meta_tree_find_ckpt(t, name);
    /* The leftovers of a checkpoint deleted while a disk was detached:
     * deleting it again folds them now (nothing is reported deleted). */
    for (size_t k = 0; i < 0 && t->chain[0] && mode == CKPT_DELETE_ONE && k < t->nstale; k++)
        if (strcmp(t->stale[k].rec.name, name) == 0) {
            ckpt_plan_chain(t, NULL, actions);
            return CKPT_OK;
        }
    if (i < 0)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", name);
    CLEANUP_FREE bool *del = xcalloc(t->nckpts, sizeof *del);
    for (size_t j = (size_t) i; j < t->nckpts; j++)
        del[j] = mode == CKPT_DELETE_CHILDREN ||
                 (mode == CKPT_DELETE_ONE && j == (size_t) i) ||
                 (mode == CKPT_DELETE_CHILDREN_ONLY && j > (size_t) i);
    json_t *planned = json_array();
    for (size_t d = 0; d < t->ndisks; d++) {
        struct disk_pass p = { t, d, del, planned, e };
        enum ckpt_err err = plan_disk(&p);
        if (err) {
            json_decref(planned);
            return err;
        }
    }
    bool survivors = false;
    for (size_t j = 0; j < t->nckpts; j++)
        survivors |= !del[j];
    if (del[t->nckpts - 1] && survivors) {
        /* Adds first: a transaction's removes come last on each node. */
        json_t *adds = json_array(), *removes = json_array();
        ckpt_plan_next_mark(t, &t->ckpts[t->nckpts - 1], adds, removes);
        json_array_extend(adds, planned);
        json_array_extend(adds, removes);
        json_decref(planned);
        json_decref(removes);
        planned = adds;
    }
    if (!survivors)             /* the last one: the images left clean */
        for (size_t d = 0; d < t->ndisks; d++)
            ckpt_plan_drop_marks(&t->disks[d], planned);
    struct str_vec names = { 0 };
    for (size_t j = 0; j < t->nckpts; j++)
        if (del[j])
            str_vec_append(&names, xstrdup(t->ckpts[j].rec.name));
    ckpt_plan_chain(t, &names, planned);
    json_array_extend(actions, planned);
    json_decref(planned);
    for (size_t j = 0; j < names.len; j++)
        str_vec_append(deleted, names.ptr[j]);
    free(names.ptr);
    return CKPT_OK;
}

/* The newest checkpoint carries the highest sequence number in its
 * record: when it goes, each of its disks keeps the next number to hand
 * out, so a deleted checkpoint's number never comes back within a chain
 * (a backup that recorded it could not tell the new one from the old).
 * When no checkpoint is left the images are left clean: a new chain
 * starts, and backups tell its checkpoints apart by creation time. */
void
ckpt_plan_next_mark(const struct meta_tree *t, const struct meta_ckpt *newest,
                    json_t *adds, json_t *removes)
{
    CLEANUP_FREE char *mark = meta_next_encode(t->next_seq);
    for (size_t k = 0; k < newest->nmembers; k++) {
        const struct meta_disk *d = &t->disks[newest->members[k].disk];
        if (meta_disk_find_bitmap(d, mark))
            continue;
        ckpt_plan_drop_marks(d, removes);
        json_array_append_new(adds, qmp_bitmap_add(d->node, mark, true, true,
                                                   META_RECORD_GRANULARITY));
    }
}

/* Removes the disk's high-water marks (a new record supersedes them) on
 * its top layer: those below are read-only, and lower than any record
 * above them. */
void
ckpt_plan_drop_marks(const struct meta_disk *d, json_t *actions)
{
    if (d->foreign)             /* another chain's: not ours to touch */
        return;
    for (size_t b = 0; b < d->nbitmaps; b++) {
        uint64_t n;
        if (d->bitmaps[b].layer == 0 && meta_next_decode(d->bitmaps[b].name, &n))
            json_array_append_new(actions, qmp_bitmap_action(
                "block-dirty-bitmap-remove", d->node, d->bitmaps[b].name));
    }
}
