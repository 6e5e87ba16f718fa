/* Planning backup-begin: which disks, and the one transaction. */
#include "bitmap/plan.h"
#include "qmp/qmp.h"

void
ckpt_backup_disks_free(struct ckpt_backup_disk *d, size_t n)
{
    for (size_t k = 0; d && k < n; k++) {
        free(d[k].disk);
        free(d[k].reason);
    }
    free(d);
}

/* Why disk d cannot be copied incrementally from c, or NULL when it can
 * (then the bitmaps decide, below).  Such a disk is copied in full: an
 * incremental backup never leaves a disk out, nor takes it from a wrong
 * point in time. */
static char *
full_reason(const struct meta_tree *t, const struct meta_ckpt *c, size_t d)
{
    const struct meta_disk *disk = &t->disks[d];
    if (!disk->tracking && meta_ckpt_member(c, d))
        return xasprintf("%s's chain changed since '%s': %s", disk->disk,
                         c->rec.name, disk->untracked);
    if (!disk->can_checkpoint && !disk->tracking)
        return xasprintf("%s does not track writes: %s", disk->disk, disk->untracked);
    if (!disk->can_checkpoint)
        return xasprintf("%s cannot hold checkpoints: %s", disk->disk, disk->reason);
    if (!meta_ckpt_member(c, d))
        return xasprintf("%s is not in checkpoint '%s': attached after it, or "
                         "left out of it", disk->disk, c->rec.name);
    return NULL;
}

static enum ckpt_err
check_incremental_disk(const struct meta_tree *t, const struct meta_ckpt *c,
                       size_t d, struct ckpt_backup_disk *out, struct ckpt_error *e)
{
    const struct meta_member *m = meta_ckpt_member(c, d);
    const char *disk = t->disks[d].disk;
    if ((out->reason = full_reason(t, c, d)))
        return CKPT_OK;
    const struct meta_bitmap *bad = ckpt_member_unusable(m);
    if (bad || !m->bitmap)
        return ckpt_fail(e, CKPT_ERR_INCONSISTENT,
                         "the bitmap of checkpoint '%s' on disk '%s' is %s "
                         "(QEMU stopped without saving it); a full backup is needed",
                         c->rec.name, disk, bad ? "inconsistent" : "missing");
    /* Every newer checkpoint on the disk adds to the merge: all of them
     * must be whole too, on every layer. */
    size_t i = (size_t) (c - t->ckpts);
    for (size_t j = i + 1; j < t->nckpts; j++) {
        const struct meta_member *n = meta_ckpt_member(&t->ckpts[j], d);
        if (n && (!n->bitmap || ckpt_member_unusable(n)))
            return ckpt_fail(e, CKPT_ERR_INCONSISTENT,
                             "the bitmap of checkpoint '%s' on disk '%s', needed "
                             "for an incremental backup from '%s', is not usable; "
                             "a full backup is needed", t->ckpts[j].rec.name,
                             disk, c->rec.name);
    }
    for (size_t j = 0; j < t->nstale; j++) {
        const struct meta_member *n = meta_ckpt_member(&t->stale[j], d);
        if (n && ckpt_member_unusable(n) && t->stale[j].rec.seq > c->rec.seq)
            return ckpt_fail(e, CKPT_ERR_INCONSISTENT,
                             "the bitmap that deleted checkpoint '%s' left on disk "
                             "'%s', needed for an incremental backup from '%s', is "
                             "inconsistent; a full backup is needed",
                             t->stale[j].rec.name, disk, c->rec.name);
    }
    out->incremental = true;
    out->granularity = m->bitmap->granularity;
    return CKPT_OK;
}

static enum ckpt_err
add_disk(const struct meta_tree *t, const struct ckpt_backup_req *r,
         const struct meta_ckpt *c, size_t d, struct ckpt_backup_disk *out,
         size_t *n, struct ckpt_error *e)
{
    const char *name = t->disks[d].disk;
    for (size_t k = 0; k < *n; k++)
        if (strcmp(out[k].disk, name) == 0)
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                             "disk '%s' is listed twice", name);
    for (size_t k = 0; k < r->nbusy; k++)
        if (strcmp(r->busy[k], name) == 0)
            return ckpt_fail(e, CKPT_ERR_BUSY,
                             "disk '%s' is already in a running backup", name);
    struct ckpt_backup_disk *nd = &out[*n];
    *nd = (struct ckpt_backup_disk) { 0 };
    enum ckpt_err err = c ? check_incremental_disk(t, c, d, nd, e) : CKPT_OK;
    if (!err && nd->reason && r->strict)
        err = ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "strict: the incremental backup "
                        "from '%s' would copy disk %s in full: %s", c->rec.name,
                        name, nd->reason);
    if (err) {
        free(nd->reason);
        nd->reason = NULL;
        return err;
    }
    out[(*n)++].disk = xstrdup(name);
    return CKPT_OK;
}

enum ckpt_err
ckpt_plan_backup_disks(const struct meta_tree *t, const struct ckpt_backup_req *r,
                struct ckpt_backup_disk *out, size_t *n, struct ckpt_error *e)
{
    const struct meta_ckpt *c = NULL;
    enum ckpt_err err;
    *n = 0;
    if (r->incremental) {
        ssize_t i = meta_tree_find_ckpt(t, r->incremental);
        CLEANUP_FREE char *why = i < 0 ? meta_tree_why_absent(t, r->incremental) : NULL;
        if (why)
            return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "%s; a full backup is needed", why);
        if (i < 0)
            return ckpt_fail(e, CKPT_ERR_NOT_FOUND,
                             "checkpoint '%s' not found; a full backup is needed",
                             r->incremental);
        c = &t->ckpts[i];
    }
    if (r->disks) {
        for (size_t k = 0; k < r->ndisks; k++) {
            ssize_t d = meta_tree_find_disk(t, r->disks[k]);
            if (d < 0)
                return ckpt_fail(e, CKPT_ERR_NOT_FOUND, "no disk '%s'", r->disks[k]);
            if ((err = add_disk(t, r, c, (size_t) d, out, n, e)))
                return err;
        }
    } else {
        /* The same disks a full backup takes: every one. */
        for (size_t d = 0; d < t->ndisks; d++)
            if ((err = add_disk(t, r, c, d, out, n, e)))
                return err;
    }
    if (*n == 0)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "the backup has no disk");
    return CKPT_OK;
}

/* The temporary bitmap of an incremental disk: C merged with every newer
 * checkpoint's bitmap on the disk.  Not persistent: it never reaches the
 * image, so a crash cannot leave it behind there. */
static void
plan_temp_bitmap(const struct meta_tree *t, const struct ckpt_backup_req *r,
                 const struct ckpt_backup_disk *nd, size_t d, json_t *actions)
{
    const struct meta_disk *disk = &t->disks[d];
    CLEANUP_FREE char *tmp = ckpt_tmp_bitmap(r->job, disk->disk);
    ssize_t i = meta_tree_find_ckpt(t, r->incremental);
    json_array_append_new(actions, qmp_bitmap_add(disk->node, tmp, false, true,
                                                  (unsigned long) nd->granularity));
    json_array_append_new(actions, qmp_bitmap_merge_refs(disk->node, tmp,
        ckpt_merge_sources(t, d, (size_t) i, t->nckpts, disk->node)));
}

/* What a pull and a push backup share: the disks looked up by name (idx),
 * each incremental disk's temporary bitmap, and the new checkpoint; the
 * planned actions, or NULL with e set. */
static json_t *
plan_backup_common(const struct meta_tree *t, const struct ckpt_backup_req *r,
                   const struct ckpt_backup_disk *disks, size_t n, size_t *idx,
                   struct ckpt_error *e)
{
    for (size_t k = 0; k < n; k++) {
        ssize_t d = meta_tree_find_disk(t, disks[k].disk);
        if (d < 0) {
            ckpt_fail(e, CKPT_ERR_NOT_FOUND, "disk '%s' was detached while "
                      "the backup was starting", disks[k].disk);
            return NULL;
        }
        idx[k] = (size_t) d;
    }
    json_t *planned = json_array();
    for (size_t k = 0; k < n; k++)
        if (disks[k].incremental)
            plan_temp_bitmap(t, r, &disks[k], idx[k], planned);
    if (r->checkpoint && ckpt_plan_create(t, r->checkpoint, planned, e)) {
        json_decref(planned);
        return NULL;
    }
    return planned;
}

/* A blockdev-backup of disk number k into the job's node of kind
 * target_kind, the arguments pull and push share. */
static json_t *
backup_args(const struct ckpt_backup_req *r, const struct meta_disk *disk, size_t k,
            char target_kind, const char *sync)
{
    CLEANUP_FREE char *job = ckpt_tmp_job(r->job, disk->disk);
    CLEANUP_FREE char *target = ckpt_tmp_node(target_kind, r->jobnum, k);
    CLEANUP_FREE char *filter = ckpt_tmp_node('c', r->jobnum, k);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:b}", "job-id", job, "device", disk->active,
                     "target", target, "sync", sync, "filter-node-name", filter,
                     "auto-dismiss", 1);
}

enum ckpt_err
ckpt_plan_backup(const struct meta_tree *t, const struct ckpt_backup_req *r,
                const struct ckpt_backup_disk *disks, size_t n, json_t *actions,
                struct ckpt_error *e)
{
    CLEANUP_FREE size_t *idx = xcalloc(n + 1, sizeof *idx);
    json_t *planned = plan_backup_common(t, r, disks, n, idx, e);
    if (!planned)
        return e->code;
    for (size_t k = 0; k < n && !r->own_filter; k++)
        json_array_append_new(planned, qmp_action("blockdev-backup",
            backup_args(r, &t->disks[idx[k]], k, 'f', "none")));
    json_array_extend(actions, planned);
    json_decref(planned);
    return CKPT_OK;
}

enum ckpt_err
ckpt_plan_backup_push(const struct meta_tree *t, const struct ckpt_backup_req *r,
                      const struct ckpt_backup_disk *disks, size_t n, json_t *actions,
                      struct ckpt_error *e)
{
    CLEANUP_FREE size_t *idx = xcalloc(n + 1, sizeof *idx);
    json_t *planned = plan_backup_common(t, r, disks, n, idx, e);
    if (!planned)
        return e->code;
    for (size_t k = 0; k < n; k++) {
        const struct meta_disk *disk = &t->disks[idx[k]];
        json_t *args = backup_args(r, disk, k, 'q',
                                   disks[k].incremental ? "bitmap" : "full");
        json_object_set_new(args, "auto-finalize", json_true());
        if (disks[k].incremental) {
            CLEANUP_FREE char *tmp = ckpt_tmp_bitmap(r->job, disk->disk);
            json_object_set_new(args, "bitmap", json_string(tmp));
            json_object_set_new(args, "bitmap-mode", json_string("never"));
        }
        json_array_append_new(planned, qmp_action("blockdev-backup", args));
    }
    json_array_extend(actions, planned);
    json_decref(planned);
    return CKPT_OK;
}
