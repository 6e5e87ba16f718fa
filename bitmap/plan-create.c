/* Planning checkpoint-create: one transaction over every member disk. */
#include "bitmap/plan.h"
#include "qmp/qmp.h"

/* Marks the selected disks in sel[], checking each one. */
static enum ckpt_err
select_disks(const struct meta_tree *t, const struct ckpt_create_req *r,
             bool *sel, struct ckpt_error *e)
{
    size_t count = 0;
    if (!r->disks) {
        for (size_t d = 0; d < t->ndisks; d++)
            if ((sel[d] = t->disks[d].can_checkpoint))
                count++;
        if (!count)
            return ckpt_fail(e, CKPT_ERR_UNSUPPORTED,
                             "checkpoint '%s' needs a disk that can hold "
                             "checkpoints, and this VM has none (see query-disks)",
                             r->name);
        return CKPT_OK;
    }
    if (r->ndisks == 0)
        return ckpt_fail(e, CKPT_ERR_UNSUPPORTED,
                         "checkpoint '%s' needs at least one disk", r->name);
    for (size_t i = 0; i < r->ndisks; i++) {
        ssize_t d = meta_tree_find_disk(t, r->disks[i]);
        if (d < 0)
            return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "no disk '%s'", r->disks[i]);
        if (sel[d])
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                             "disk '%s' is listed twice", r->disks[i]);
        if (!t->disks[d].can_checkpoint)
            return ckpt_fail(e, CKPT_ERR_UNSUPPORTED,
                             "disk '%s' cannot hold checkpoints: %s",
                             r->disks[i], t->disks[d].reason);
        sel[d] = true;
    }
    return CKPT_OK;
}

static enum ckpt_err
check_name(const struct meta_tree *t, const char *name, const bool *sel,
           struct ckpt_error *e)
{
    if (!meta_name_valid(name))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                         "invalid checkpoint name '%.*s': use 1 to %d of "
                         "A-Z a-z 0-9 _ - . (not starting with '.')",
                         META_NAME_MAX, name, META_NAME_MAX);
    if (meta_tree_find_ckpt(t, name) >= 0)
        return ckpt_fail(e, CKPT_ERR_ALREADY_EXISTS,
                         "checkpoint '%s' already exists", name);
    for (size_t d = 0; d < t->ndisks; d++) {
        if (!sel[d] || !meta_disk_find_bitmap(&t->disks[d], name))
            continue;
        for (size_t k = 0; k < t->disks[d].stale_names.len; k++)
            if (strcmp(t->disks[d].stale_names.ptr[k], name) == 0)
                return ckpt_fail(e, CKPT_ERR_ALREADY_EXISTS,
                                 "disk '%s' still holds the bitmap of checkpoint '%s', "
                                 "deleted while the disk was detached; "
                                 "checkpoint-delete '%s' removes it", t->disks[d].disk,
                                 name, name);
        return ckpt_fail(e, CKPT_ERR_ALREADY_EXISTS,
                         "disk '%s' already has a bitmap named '%s'",
                         t->disks[d].disk, name);
    }
    return CKPT_OK;
}

/* Every older checkpoint bitmap on disk d that still records stops: in the
 * chain only the newest records.  Inconsistent bitmaps cannot be touched
 * (and do not record). */
void
ckpt_plan_stop_recording(const struct meta_tree *t, size_t d, json_t *actions)
{
    const struct meta_disk *disk = &t->disks[d];
    for (size_t i = 0; i < t->nckpts; i++) {
        const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], d);
        for (size_t k = 0; m && k < m->nparts; k++) {
            const struct meta_bitmap *b = m->parts[k].bitmap;
            if (b && b->recording && !b->inconsistent)
                json_array_append_new(actions,
                    qmp_bitmap_action("block-dirty-bitmap-disable",
                                      meta_bitmap_node(disk, b), b->name));
        }
    }
}

enum ckpt_err
ckpt_plan_create(const struct meta_tree *t, const struct ckpt_create_req *r,
                 json_t *actions, struct ckpt_error *e)
{
    CLEANUP_FREE bool *sel = xcalloc(t->ndisks + 1, sizeof *sel);
    enum ckpt_err err;
    if ((err = select_disks(t, r, sel, e)) || (err = check_name(t, r->name, sel, e)))
        return err;
    struct meta_record rec = {
        .name = (char *) r->name, .seq = t->next_seq, .ctime = r->now,
        .description = (char *) r->description,
    };
    memcpy(rec.chain, t->chain, sizeof rec.chain);
    CLEANUP_FREE char *record = meta_record_encode(&rec, e);
    if (!record)
        return e->code;
    CLEANUP_JSON json_t *removes = json_array();   /* last, on every node */
    for (size_t d = 0; d < t->ndisks; d++) {
        if (!sel[d])
            continue;
        const char *node = r->nodes && r->nodes[d] ? r->nodes[d] : t->disks[d].node;
        ckpt_plan_stop_recording(t, d, actions);
        /* Marks on a layer that becomes a backing image stay: it turns
         * read-only, and the new record holds a higher number anyway. */
        if (!(r->nodes && r->nodes[d]))
            ckpt_plan_drop_marks(&t->disks[d], removes);
        json_array_append_new(actions, qmp_bitmap_add(node, r->name, true, false, 0));
        json_array_append_new(actions, qmp_bitmap_add(node, record, true, true,
                                                      META_RECORD_GRANULARITY));
    }
    json_array_extend(actions, removes);
    ckpt_plan_chain(t, NULL, actions);
    return CKPT_OK;
}
