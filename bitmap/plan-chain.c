/* The chain's upkeep, planned into every change's transaction (create,
 * delete, redefine, a backup's new checkpoint), so that it is on the
 * images exactly when the change is:
 *
 * - records of an earlier ckptd (no chain id) are rewritten with the
 *   VM's id: adopted for good, so that the disk stays this VM's if it
 *   moves;
 * - the chain's gone set (metadata/chain.c) gains what this change
 *   deletes and is the same on every disk that can hold checkpoints;
 * - stale checkpoints (deleted while their disk was detached) are folded
 *   like a delete would have: their bitmap merged into the newest older
 *   checkpoint on the disk, which records again if the stale one did
 *   and nothing newer is left; then their bitmaps go.
 *
 * Foreign disks, read-only disks and disks that do not track are left as
 * they are.  A tree with no chain id (t->chain "", only in unit tests of
 * older plans) gets none of this. */
#include "bitmap/plan.h"
#include "qmp/qmp.h"

static bool
str_vec_has(const struct str_vec *v, const char *s)
{
    for (size_t i = 0; v && i < v->len; i++)
        if (strcmp(v->ptr[i], s) == 0)
            return true;
    return false;
}

/* Rewrites the records without a chain id on the disks that can take it.
 * One that no longer fits with the id (a description at the old limit)
 * stays as it is: it is still this chain's, by its disk. */
static void
adopt_records(const struct meta_tree *t, const struct str_vec *deleted, json_t *actions)
{
    for (size_t i = 0; i < t->nckpts; i++) {
        const struct meta_ckpt *c = &t->ckpts[i];
        if (str_vec_has(deleted, c->rec.name))
            continue;
        for (size_t k = 0; k < c->nmembers; k++) {
            const struct meta_disk *d = &t->disks[c->members[k].disk];
            const char *rec = c->members[k].record;
            /* Only the top layer's record: a backing layer below a
             * disk-snapshot is read-only, and its record stays this
             * chain's by its disk. */
            if (c->members[k].nparts && c->members[k].parts[0].layer != 0)
                continue;
            size_t len = strlen(rec);
            struct meta_record old;
            /* Most records have the id already: no need to decode them. */
            if (!d->can_checkpoint || (len > META_CHAIN_LEN &&
                                       strcmp(rec + len - META_CHAIN_LEN, t->chain) == 0 &&
                                       rec[len - META_CHAIN_LEN - 1] == ':'))
                continue;
            if (meta_record_decode(rec, &old) != 1)
                continue;
            bool has_id = old.chain[0] != '\0';
            memcpy(old.chain, t->chain, sizeof old.chain);
            struct ckpt_error e = { 0 };
            CLEANUP_FREE char *now = has_id ? NULL : meta_record_encode(&old, &e);
            meta_record_clear(&old);
            if (!now)
                continue;
            json_array_append_new(actions, qmp_bitmap_add(d->node, now, true, true,
                                                          META_RECORD_GRANULARITY));
            json_array_append_new(actions, qmp_bitmap_action(
                "block-dirty-bitmap-remove", d->node, c->members[k].record));
        }
    }
}

static bool
name_in(const struct str_vec *v, const char *s)
{
    return str_vec_has(v, s);
}

/* Every capable disk ends with exactly the gone marks of `gone`. */
static void
keep_gone(const struct meta_tree *t, const struct meta_seqs *gone, json_t *actions)
{
    struct str_vec want = { 0 };
    if (gone->n)
        meta_gone_encode(t->chain, gone, &want);
    for (size_t d = 0; d < t->ndisks; d++) {
        const struct meta_disk *disk = &t->disks[d];
        if (!disk->can_checkpoint)
            continue;
        for (size_t b = 0; b < disk->nbitmaps; b++) {
            char c[META_CHAIN_LEN + 1];
            const char *name = disk->bitmaps[b].name;
            /* Marks on a backing layer stay: the set only grows, so the
             * new one on top holds theirs. */
            if (disk->bitmaps[b].layer == 0 && meta_gone_decode(name, c, NULL) &&
                !name_in(&want, name))
                json_array_append_new(actions, qmp_bitmap_action(
                    "block-dirty-bitmap-remove", disk->node, name));
        }
        for (size_t k = 0; k < want.len; k++)
            if (!meta_disk_find_bitmap(disk, want.ptr[k]))
                json_array_append_new(actions, qmp_bitmap_add(
                    disk->node, want.ptr[k], true, true, META_RECORD_GRANULARITY));
    }
    str_vec_free_all(&want);
}

/* Does the transaction so far add a new recording data bitmap on node? */
static bool
adds_recording(json_t *actions, const char *node)
{
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a) {
        json_t *data = json_object_get(a, "data");
        const char *type = json_string_value(json_object_get(a, "type"));
        const char *n = json_string_value(json_object_get(data, "node"));
        if (type && strcmp(type, "block-dirty-bitmap-add") == 0 && n &&
            strcmp(n, node) == 0 && json_is_true(json_object_get(data, "persistent")) &&
            !json_is_true(json_object_get(data, "disabled")))
            return true;
    }
    return false;
}

/* The newest checkpoint on disk d older than seq that survives the
 * change, or NULL; *newer: is any surviving one newer than seq? */
static const struct meta_bitmap *
fold_target(const struct meta_tree *t, size_t d, uint64_t seq,
            const struct str_vec *deleted, bool *newer)
{
    const struct meta_bitmap *target = NULL;
    *newer = false;
    for (size_t i = 0; i < t->nckpts; i++) {
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], d);
        if (!m || str_vec_has(deleted, t->ckpts[i].rec.name))
            continue;
        if (t->ckpts[i].rec.seq < seq)
            target = m->bitmap;
        else
            *newer = true;
    }
    return target;
}

static void
fold_stale(const struct meta_tree *t, const struct str_vec *deleted, json_t *actions)
{
    for (size_t s = 0; s < t->nstale; s++) {
        const struct meta_ckpt *c = &t->stale[s];
        for (size_t k = 0; k < c->nmembers; k++) {
            const struct meta_member *m = &c->members[k];
            const struct meta_disk *d = &t->disks[m->disk];
            /* Folded on the top layer only (backing layers are
             * read-only); a stale checkpoint elsewhere stays reported,
             * and incrementals keep merging it. */
            if (!d->can_checkpoint || m->nparts != 1 || m->parts[0].layer != 0)
                continue;
            bool newer;
            const struct meta_bitmap *target = fold_target(t, m->disk, c->rec.seq,
                                                           deleted, &newer);
            const struct meta_bitmap *b = m->bitmap;
            if (target && target->layer != 0)
                continue;
            if (b && target && !b->inconsistent && !target->inconsistent) {
                const char *src[] = { b->name };
                json_array_append_new(actions, qmp_bitmap_merge(d->node, target->name,
                                                                src, 1));
                if (b->recording && !newer && !target->recording &&
                    !adds_recording(actions, d->node))
                    json_array_append_new(actions, qmp_bitmap_action(
                        "block-dirty-bitmap-enable", d->node, target->name));
            }
            if (b)
                json_array_append_new(actions, qmp_bitmap_action(
                    "block-dirty-bitmap-remove", d->node, b->name));
            json_array_append_new(actions, qmp_bitmap_action(
                "block-dirty-bitmap-remove", d->node, m->record));
        }
    }
}

static bool
is_remove(json_t *a)
{
    const char *type = json_string_value(json_object_get(a, "type"));
    return type && strcmp(type, "block-dirty-bitmap-remove") == 0;
}

void
ckpt_plan_removes_last(json_t *actions)
{
    json_t *removes = json_array(), *rest = json_array();
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a)
        json_array_append(is_remove(a) ? removes : rest, a);
    json_array_clear(actions);
    json_array_extend(actions, rest);
    json_array_extend(actions, removes);
    json_decref(rest);
    json_decref(removes);
}

void
ckpt_plan_chain(const struct meta_tree *t, const struct str_vec *deleted, json_t *actions)
{
    if (!t->chain[0])
        return;
    adopt_records(t, deleted, actions);
    struct meta_seqs gone = { 0 };
    for (size_t i = 0; i < t->gone.n; i++)
        meta_seqs_add_range(&gone, t->gone.r[i].lo, t->gone.r[i].hi);
    for (size_t i = 0; i < t->nckpts; i++)
        if (str_vec_has(deleted, t->ckpts[i].rec.name))
            meta_seqs_add(&gone, t->ckpts[i].rec.seq);
    keep_gone(t, &gone, actions);
    meta_seqs_free(&gone);
    fold_stale(t, deleted, actions);
    ckpt_plan_removes_last(actions);
}
