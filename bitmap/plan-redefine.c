/* Planning checkpoint-redefine: give ckptd records to checkpoints whose
 * bitmaps already exist in the images (written by libvirt, or by a ckptd
 * whose records were lost), and turn libvirt's layout — every checkpoint's
 * bitmap recording — into the chain, where only the newest records.
 *
 * Nothing is lost in the conversion: in libvirt's layout the bitmap of C
 * holds every write since C, a superset of what the chain keeps for it, and
 * an incremental from C merges C with every newer bitmap anyway.  All of it
 * is one transaction, validated first: a list with one bad entry changes
 * nothing. */
#include "bitmap/plan.h"
#include "metadata/xml.h"
#include "qmp/qmp.h"

/* The list in chain order: each one's parent is the one before; the first
 * one's parent is the newest existing checkpoint (or none). */
static enum ckpt_err
chain_order(const struct meta_tree *t, const struct meta_xml_ckpt *list, size_t n,
            size_t *order, struct ckpt_error *e)
{
    const char *prev = t->nckpts ? t->ckpts[t->nckpts - 1].rec.name : NULL;
    CLEANUP_FREE bool *used = xcalloc(n + 1, sizeof *used);
    for (size_t k = 0; k < n; k++) {
        size_t found = n;
        for (size_t i = 0; i < n && found == n; i++) {
            const char *p = list[i].parent;
            if (!used[i] && ((!p && !prev) || (p && prev && strcmp(p, prev) == 0)))
                found = i;
        }
        if (found == n) {
            for (size_t i = 0; i < n; i++)
                if (!used[i] && list[i].parent &&
                    meta_tree_find_ckpt(t, list[i].parent) < 0) {
                    bool in_list = false;
                    for (size_t j = 0; j < n; j++)
                        in_list |= strcmp(list[j].name, list[i].parent) == 0;
                    if (!in_list)
                        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                                         "the parent '%s' of checkpoint '%s' does not exist",
                                         list[i].parent, list[i].name);
                }
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                             "the checkpoints do not form one chain after '%s': ckptd "
                             "keeps each checkpoint's parent the one made before it",
                             prev ? prev : "(none)");
        }
        used[found] = true;
        order[k] = found;
        prev = list[found].name;
    }
    return CKPT_OK;
}

static enum ckpt_err
check_one(const struct meta_tree *t, const struct meta_xml_ckpt *c,
          const struct meta_xml_ckpt *list, size_t n, struct ckpt_error *e)
{
    if (!c->name || !meta_name_valid(c->name))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                         "a redefined checkpoint needs a valid <name>");
    if (meta_tree_find_ckpt(t, c->name) >= 0)
        return ckpt_fail(e, CKPT_ERR_ALREADY_EXISTS,
                         "checkpoint '%s' already exists", c->name);
    for (const struct meta_xml_ckpt *o = list; o < list + n; o++)
        if (o != c && o->name && strcmp(o->name, c->name) == 0)
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                             "checkpoint '%s' is listed twice", c->name);
    return CKPT_OK;
}

/* Checks one disk of one checkpoint and marks it in member[]. */
static enum ckpt_err
check_disk(const struct meta_tree *t, const struct meta_xml_ckpt *c,
           const struct meta_xml_disk *xd, bool *member, struct ckpt_error *e)
{
    ssize_t d = meta_tree_find_disk(t, xd->name);
    if (d < 0)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "checkpoint '%s' names disk '%s', "
                         "which this VM does not have", c->name, xd->name);
    if (!xd->checkpoint)
        return CKPT_OK;
    if (xd->bitmap && strcmp(xd->bitmap, c->name) != 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                         "checkpoint '%s' on disk '%s' uses bitmap '%s'; ckptd needs "
                         "the bitmap named like the checkpoint", c->name, xd->name,
                         xd->bitmap);
    const struct meta_bitmap *b = meta_disk_find_bitmap(&t->disks[d], c->name);
    if (!b)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "disk '%s' has no bitmap '%s'",
                         xd->name, c->name);
    if (b->inconsistent || !b->persistent)
        return ckpt_fail(e, CKPT_ERR_INCONSISTENT,
                         "bitmap '%s' on disk '%s' is %s; it cannot be a checkpoint",
                         c->name, xd->name, b->inconsistent ? "inconsistent" : "not persistent");
    member[d] = true;
    return CKPT_OK;
}

static enum ckpt_err
members_of(const struct meta_tree *t, const struct meta_xml_ckpt *c, bool *member,
           struct ckpt_error *e)
{
    enum ckpt_err err;
    bool any = false;
    for (size_t k = 0; k < c->ndisks; k++)
        if ((err = check_disk(t, c, &c->disks[k], member, e)))
            return err;
    if (!c->ndisks)                         /* no <disks>: wherever the bitmap is */
        for (size_t d = 0; d < t->ndisks; d++)
            member[d] = t->disks[d].can_checkpoint &&
                        meta_disk_find_bitmap(&t->disks[d], c->name);
    for (size_t d = 0; d < t->ndisks; d++)
        any |= member[d];
    if (!any)
        return ckpt_fail(e, CKPT_ERR_NOT_FOUND,
                         "no disk has a bitmap for checkpoint '%s'", c->name);
    return CKPT_OK;
}

/* On each disk only the newest checkpoint may record, and it must: a
 * newest bitmap that stopped recording has missed writes. */
static enum ckpt_err
plan_recording(const struct meta_tree *t, const char *const *chain, size_t nchain,
               size_t d, json_t *actions, struct ckpt_error *e)
{
    const struct meta_disk *disk = &t->disks[d];
    ssize_t newest = -1;
    for (size_t i = 0; i < nchain; i++)
        if (chain[i] && meta_disk_find_bitmap(disk, chain[i]))
            newest = (ssize_t) i;
    for (size_t i = 0; i < nchain; i++) {
        const struct meta_bitmap *b = chain[i] ? meta_disk_find_bitmap(disk, chain[i]) : NULL;
        if (!b || b->inconsistent)
            continue;
        if ((ssize_t) i == newest && !b->recording && i >= t->nckpts)
            return ckpt_fail(e, CKPT_ERR_INCONSISTENT,
                             "bitmap '%s' on disk '%s' does not record writes, so it "
                             "cannot cover the writes since checkpoint '%s'",
                             b->name, disk->disk, b->name);
        if ((ssize_t) i != newest && b->recording)
            json_array_append_new(actions, qmp_bitmap_action(
                "block-dirty-bitmap-disable", disk->node, b->name));
    }
    return CKPT_OK;
}

enum ckpt_err
ckpt_plan_redefine(const struct meta_tree *t, const struct meta_xml_ckpt *list,
                   size_t n, int64_t now, json_t *actions, struct ckpt_error *e)
{
    enum ckpt_err err;
    CLEANUP_FREE size_t *order = xcalloc(n + 1, sizeof *order);
    CLEANUP_FREE bool *member = xcalloc((n + 1) * (t->ndisks + 1), sizeof *member);
    /* Every checkpoint name on the chain, oldest first: existing, then new. */
    CLEANUP_FREE const char **chain = xcalloc(t->nckpts + n + 1, sizeof *chain);
    if (n == 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "no checkpoint to redefine");
    for (size_t i = 0; i < n; i++)
        if ((err = check_one(t, &list[i], list, n, e)))
            return err;
    if ((err = chain_order(t, list, n, order, e)))
        return err;
    for (size_t i = 0; i < t->nckpts; i++)
        chain[i] = t->ckpts[i].rec.name;
    json_t *planned = json_array();
    for (size_t k = 0; k < n && !err; k++) {
        const struct meta_xml_ckpt *c = &list[order[k]];
        bool *m = &member[k * (t->ndisks + 1)];
        chain[t->nckpts + k] = c->name;
        struct meta_record rec = {
            .name = c->name, .seq = t->next_seq + k,
            .ctime = c->has_ctime ? c->ctime : now, .description = c->description,
        };
        memcpy(rec.chain, t->chain, sizeof rec.chain);
        CLEANUP_FREE char *record = NULL;
        if ((err = members_of(t, c, m, e)) || !(record = meta_record_encode(&rec, e))) {
            err = err ? err : e->code;
            break;
        }
        for (size_t d = 0; d < t->ndisks; d++)
            if (m[d])
                json_array_append_new(planned, qmp_bitmap_add(t->disks[d].node, record,
                                                              true, true,
                                                              META_RECORD_GRANULARITY));
    }
    for (size_t d = 0; d < t->ndisks && !err; d++)
        err = plan_recording(t, chain, t->nckpts + n, d, planned, e);
    if (!err) {
        ckpt_plan_chain(t, NULL, planned);
        json_array_extend(actions, planned);
    }
    json_decref(planned);
    return err;
}

/* What the chain keeps on disk d besides records goes too: the bitmaps
 * of stale checkpoints (merged into the older ones above) and the gone
 * marks.  libvirt has no use for them, and a stale record left without
 * its gone mark would bring its checkpoint back. */
static void
release_chain(const struct meta_tree *t, size_t d, json_t *planned)
{
    const struct meta_disk *disk = &t->disks[d];
    if (disk->foreign)
        return;
    for (size_t s = 0; s < t->nstale; s++) {
        const struct meta_member *m = meta_ckpt_member(&t->stale[s], d);
        if (m && m->bitmap)
            json_array_append_new(planned, qmp_bitmap_action(
                "block-dirty-bitmap-remove", disk->node, m->bitmap->name));
        if (m)
            json_array_append_new(planned, qmp_bitmap_action(
                "block-dirty-bitmap-remove", disk->node, m->record));
    }
    for (size_t b = 0; b < disk->nbitmaps; b++) {
        char c[META_CHAIN_LEN + 1];
        if (meta_gone_decode(disk->bitmaps[b].name, c, NULL))
            json_array_append_new(planned, qmp_bitmap_action(
                "block-dirty-bitmap-remove", disk->node, disk->bitmaps[b].name));
    }
}

/* The way back to libvirt, whose incremental backup from C reads C's
 * bitmap alone: every bitmap must hold every write since its checkpoint
 * and keep recording.  On each disk, oldest first, C takes the merge of
 * every newer bitmap (merged before any of those is touched), every
 * bitmap records, and ckptd's records go.  Inconsistent bitmaps cannot be
 * merged or enabled: they must be deleted first. */
enum ckpt_err
ckpt_plan_release(const struct meta_tree *t, json_t *actions, struct ckpt_error *e)
{
    json_t *planned = json_array();
    for (size_t d = 0; d < t->ndisks; d++) {
        const char *node = t->disks[d].node;
        if (t->disks[d].nlayers > 1) {
            json_decref(planned);
            return ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "disk '%s' keeps checkpoints on "
                             "%zu layers (a disk-snapshot); libvirt reads one: commit "
                             "the disk first (disk-commit %s)", t->disks[d].disk,
                             t->disks[d].nlayers, t->disks[d].disk);
        }
        CLEANUP_FREE const char **newer = xcalloc(t->nckpts + t->nstale + 1,
                                                  sizeof *newer);
        for (size_t i = 0; i < t->nckpts; i++) {
            const struct meta_member *m = meta_ckpt_member(&t->ckpts[i], d);
            if (!m)
                continue;
            if (!m->bitmap || m->bitmap->inconsistent) {
                json_decref(planned);
                return ckpt_fail(e, CKPT_ERR_INCONSISTENT,
                                 "checkpoint '%s' has no usable bitmap on disk '%s'; "
                                 "delete it before handing the images to libvirt",
                                 t->ckpts[i].rec.name, t->disks[d].disk);
            }
            size_t n = 0;
            for (size_t j = i + 1; j < t->nckpts; j++) {
                const struct meta_member *o = meta_ckpt_member(&t->ckpts[j], d);
                if (o && o->bitmap)
                    newer[n++] = o->bitmap->name;
            }
            /* A stale checkpoint's bitmap holds writes since C too. */
            for (size_t j = 0; j < t->nstale; j++) {
                const struct meta_member *o = meta_ckpt_member(&t->stale[j], d);
                if (o && o->bitmap && t->stale[j].rec.seq > t->ckpts[i].rec.seq)
                    newer[n++] = o->bitmap->name;
            }
            if (n)
                json_array_append_new(planned, qmp_bitmap_merge(node, m->bitmap->name,
                                                                newer, n));
            if (!m->bitmap->recording)
                json_array_append_new(planned, qmp_bitmap_action(
                    "block-dirty-bitmap-enable", node, m->bitmap->name));
            json_array_append_new(planned, qmp_bitmap_action(
                "block-dirty-bitmap-remove", node, m->record));
        }
        ckpt_plan_drop_marks(&t->disks[d], planned);
        release_chain(t, d, planned);
    }
    json_array_extend(actions, planned);
    json_decref(planned);
    return CKPT_OK;
}
