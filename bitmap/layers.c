/* A disk's checkpoints across its layers: what an incremental merges, and
 * the plans of disk-snapshot and disk-commit.
 *
 * After a disk-snapshot through ckptd a disk is a chain of layers, each
 * holding the records and data bitmaps of the checkpoints whose writes it
 * saw; only the top one records (metadata/README.md, "Which layer holds
 * what"). */
#include "bitmap/plan.h"
#include "qmp/qmp.h"

const struct meta_bitmap *
ckpt_member_unusable(const struct meta_member *m)
{
    for (size_t k = 0; k < m->nparts; k++)
        if (m->parts[k].bitmap && m->parts[k].bitmap->inconsistent)
            return m->parts[k].bitmap;
    return NULL;
}

static void
append_parts(const struct meta_disk *disk, const struct meta_member *m,
             const char *target_node, json_t *srcs)
{
    for (size_t k = 0; m && k < m->nparts; k++) {
        const struct meta_bitmap *b = m->parts[k].bitmap;
        if (b)
            json_array_append_new(srcs, qmp_bitmap_ref(target_node,
                meta_bitmap_node(disk, b), b->name));
    }
}

json_t *
ckpt_merge_sources(const struct meta_tree *t, size_t d, size_t from, size_t to,
                   const char *target_node)
{
    const struct meta_disk *disk = &t->disks[d];
    json_t *srcs = json_array();
    for (size_t j = from; j < to && j < t->nckpts; j++)
        append_parts(disk, meta_ckpt_member(&t->ckpts[j], d), target_node, srcs);
    /* A stale checkpoint (deleted while this disk was detached) between
     * the two holds writes of the range too, until a change folds it. */
    uint64_t lo = from < t->nckpts ? t->ckpts[from].rec.seq : UINT64_MAX;
    uint64_t hi = to < t->nckpts ? t->ckpts[to].rec.seq : UINT64_MAX;
    for (size_t j = 0; j < t->nstale; j++)
        if (t->stale[j].rec.seq > lo && t->stale[j].rec.seq < hi)
            append_parts(disk, meta_ckpt_member(&t->stale[j], d), target_node, srcs);
    return srcs;
}

enum ckpt_err
ckpt_plan_snapshot_disk(const struct meta_tree *t, size_t d, struct ckpt_error *e)
{
    const struct meta_disk *disk = &t->disks[d];
    if (disk->read_only)
        return ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "disk '%s' is read-only: a "
                         "snapshot of it would take no writes", disk->disk);
    if (!disk->tracking)
        return ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "disk '%s' does not track writes "
                         "(%s): commit its layers first", disk->disk, disk->untracked);
    ssize_t n = meta_tree_prev_on_disk(t, t->nckpts, d);
    if (n < 0)
        return CKPT_OK;
    const struct meta_member *m = meta_ckpt_member(&t->ckpts[n], d);
    if (!m->bitmap || m->bitmap->inconsistent || m->parts[0].layer != 0)
        return ckpt_fail(e, CKPT_ERR_INCONSISTENT, "the bitmap of checkpoint '%s' "
                         "on disk '%s' is %s, so it cannot be carried into a new "
                         "overlay; delete the checkpoint first", t->ckpts[n].rec.name,
                         disk->disk, m->bitmap ? "inconsistent" : "missing");
    return CKPT_OK;
}

/* Carries disk d's newest checkpoint into the overlay: a recording bitmap
 * of the same name and granularity, and the same record, there; the one
 * below stops.  Writes after the snapshot go to the overlay's. */
static void
carry_newest(const struct meta_tree *t, size_t d, const char *overlay, json_t *actions)
{
    ssize_t n = meta_tree_prev_on_disk(t, t->nckpts, d);
    if (n < 0)
        return;
    const struct meta_member *m = meta_ckpt_member(&t->ckpts[n], d);
    ckpt_plan_stop_recording(t, d, actions);
    json_array_append_new(actions, qmp_bitmap_add(overlay, m->bitmap->name, true, false,
                                                  (unsigned long) m->bitmap->granularity));
    json_array_append_new(actions, qmp_bitmap_add(overlay, m->record, true, true,
                                                  META_RECORD_GRANULARITY));
}

enum ckpt_err
ckpt_plan_snapshot(const struct meta_tree *t, const struct ckpt_snapshot_req *r,
                   json_t *actions, struct ckpt_error *e)
{
    CLEANUP_FREE const char **nodes = xcalloc(t->ndisks + 1, sizeof *nodes);
    CLEANUP_FREE ssize_t *idx = xcalloc(r->ndisks + 1, sizeof *idx);
    enum ckpt_err err;
    for (size_t k = 0; k < r->ndisks; k++) {
        if ((idx[k] = meta_tree_find_disk(t, r->disks[k])) < 0)
            return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "no disk '%s'", r->disks[k]);
        if (nodes[idx[k]])
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "disk '%s' is listed twice",
                             r->disks[k]);
        if ((err = ckpt_plan_snapshot_disk(t, (size_t) idx[k], e)))
            return err;
        nodes[idx[k]] = r->overlays[k];
    }
    json_t *planned = json_array();
    for (size_t k = 0; k < r->ndisks; k++)
        json_array_append_new(planned, qmp_action("blockdev-snapshot",
            json_pack("{s:s,s:s}", "node", t->disks[idx[k]].active,
                      "overlay", r->overlays[k])));
    /* A new checkpoint's bitmaps go straight into the overlays of its
     * disks; a snapshotted disk it does not cover carries the newest. */
    struct ckpt_create_req cr;
    if (r->checkpoint) {
        cr = *r->checkpoint;
        cr.nodes = nodes;
        if ((err = ckpt_plan_create(t, &cr, planned, e))) {
            json_decref(planned);
            return err;
        }
    }
    for (size_t k = 0; k < r->ndisks; k++) {
        bool covered = false;
        for (size_t i = 0; r->checkpoint && i < cr.ndisks; i++)
            covered |= strcmp(cr.disks[i], r->disks[k]) == 0;
        if (r->checkpoint && !cr.disks)
            covered = t->disks[idx[k]].can_checkpoint;
        if (!covered)
            carry_newest(t, (size_t) idx[k], r->overlays[k], planned);
    }
    json_array_extend(actions, planned);
    json_decref(planned);
    return CKPT_OK;
}

/* The bitmaps of the overlay (layer 0) go into the base: merged into the
 * base's bitmap of the same checkpoint, or into a new one there with the
 * same record; the base's counterpart of the recording one records from
 * now on.  Sent once the commit job is READY: QEMU has reopened the base
 * read-write, its bulk copy is done (and marked nothing: the base's
 * bitmaps were disabled since the snapshot), and every write it mirrors
 * from now on reaches the base through the base node, which marks it. */
enum ckpt_err
ckpt_plan_commit(const struct meta_tree *t, size_t d, const char *base,
                 json_t *actions, json_t *undo, struct ckpt_error *e)
{
    const struct meta_disk *disk = &t->disks[d];
    ssize_t bl = meta_disk_find_layer(disk, base);
    json_t *planned = json_array();
    for (size_t i = 0; i < t->nckpts; i++) {
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], d);
        const struct meta_part *top = m && m->parts[0].layer == 0 ? &m->parts[0] : NULL;
        if (!top || !top->bitmap)
            continue;
        if (top->bitmap->inconsistent) {
            json_decref(planned);
            return ckpt_fail(e, CKPT_ERR_INCONSISTENT, "the bitmap of checkpoint '%s' "
                             "on '%s' is inconsistent and cannot be merged into '%s'; "
                             "delete the checkpoint first", t->ckpts[i].rec.name,
                             disk->node, base);
        }
        const struct meta_bitmap *bb = bl > 0 ? meta_disk_find_bitmap_on(disk, (size_t) bl,
                                                                         top->bitmap->name) : NULL;
        bool has_record = false;
        for (size_t k = 0; k < m->nparts; k++)
            has_record |= bl > 0 && m->parts[k].layer == (size_t) bl;
        if (!bb)
            json_array_append_new(planned, qmp_bitmap_add(base, top->bitmap->name, true,
                                  true, (unsigned long) top->bitmap->granularity));
        if (!has_record)
            json_array_append_new(planned, qmp_bitmap_add(base, top->record, true, true,
                                                          META_RECORD_GRANULARITY));
        json_t *src = json_array();
        json_array_append_new(src, qmp_bitmap_ref(base, disk->node, top->bitmap->name));
        json_array_append_new(planned, qmp_bitmap_merge_refs(base, top->bitmap->name, src));
        if (top->bitmap->recording && !(bb && bb->recording)) {
            json_array_append_new(planned, qmp_bitmap_action(
                "block-dirty-bitmap-enable", base, top->bitmap->name));
            json_array_append_new(undo, qmp_bitmap_action(
                "block-dirty-bitmap-disable", base, top->bitmap->name));
        }
    }
    /* The sequence high-water mark and the chain's gone marks go down
     * with the rest. */
    for (size_t b = 0; b < disk->nbitmaps; b++) {
        uint64_t n;
        char chain[META_CHAIN_LEN + 1];
        const struct meta_bitmap *mb = &disk->bitmaps[b];
        bool mark = meta_next_decode(mb->name, &n) || meta_gone_decode(mb->name, chain, NULL);
        if (mb->layer == 0 && mark &&
            !(bl > 0 && meta_disk_find_bitmap_on(disk, (size_t) bl, mb->name)))
            json_array_append_new(planned, qmp_bitmap_add(base, mb->name, true, true,
                                                          META_RECORD_GRANULARITY));
    }
    json_array_extend(actions, planned);
    json_decref(planned);
    return CKPT_OK;
}
