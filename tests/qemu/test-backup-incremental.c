/* Incremental pull backups, checked byte for byte against a shadow model
 * of every guest write: the dirty map of an incremental from C is exactly
 * the 64 KiB clusters written since C (across every later checkpoint),
 * applying it to the previous backup reproduces the disk, a checkpoint
 * created by backup-begin splits the writes exactly (nothing lost, nothing
 * counted twice), and checkpoint commands during a backup are Busy only
 * where they would conflict. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define K64 HQ_K64
#define DISK_SIZE HQ_MODEL_SIZE
#define NCL HQ_MODEL_NCL

/* Full backup with checkpoint c1 kept as a local copy; writes (aligned,
 * unaligned and across cluster boundaries); an incremental from c1 with
 * checkpoint c2, during which the guest writes more: its dirty map is
 * exactly the clusters written before it began, and applied to the copy
 * it gives the disk at backup-begin. */
static int
test_apply(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    if (hq_mwrite(vm, m, 0x10, 0, 3 * MiB) < 0 || hq_mwrite(vm, m, 0x11, 9 * MiB, 3 * K64) < 0)
        return -1;
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full, "full backup with c1");
    HQ_CHECK(strcmp(hq_jstr(full, "checkpoint") ?: "", "c1") == 0 &&
             !json_object_get(full, "incremental") &&
             !json_object_get(hq_job_disk(full, "vda"), "bitmap"),
             "full backup with checkpoint: %s", hq_str(full));
    hq_model_mark(m, 0);
    CLEANUP_FREE uint8_t *local = xmalloc(DISK_SIZE);
    HQ_CHECK(hq_read_full(full, "vda", local) == 0, "read full");
    HQ_CHECK(hq_first_diff(local, m->data, DISK_SIZE) < 0, "full backup differs");
    if (hq_mwrite(vm, m, 0x21, 2 * MiB, K64) < 0 ||            /* one cluster */
        hq_mwrite(vm, m, 0x22, 5 * MiB + 4 * KiB, 4 * KiB) < 0 ||   /* inside one */
        hq_mwrite(vm, m, 0x23, 7 * MiB - KiB, 2 * KiB) < 0 ||       /* across two */
        hq_mwrite(vm, m, 0x24, 12 * MiB + 512, 200 * KiB) < 0 ||    /* 4 clusters */
        hq_mwrite(vm, m, 0x25, DISK_SIZE - K64, K64) < 0)           /* the last */
        return -1;
    if (hq_backup_end(vm, full) < 0)
        return -1;
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c1") == 9 * K64, "c1 counts %" PRId64,
             hq_bitmap_dirty(vm, "vda", "c1"));
    CLEANUP_FREE uint8_t *at_begin = xmalloc(DISK_SIZE);
    memcpy(at_begin, m->data, DISK_SIZE);
    uint8_t want[NCL];
    memcpy(want, m->since[0], NCL);

    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\", "
                                                   "\"checkpoint\": {\"name\": \"c2\"}}");
    HQ_CHECK(inc, "incremental from c1");
    HQ_CHECK(strcmp(hq_jstr(inc, "incremental") ?: "", "c1") == 0 &&
             strcmp(hq_jstr(inc, "checkpoint") ?: "", "c2") == 0,
             "job: %s", hq_str(inc));
    hq_model_mark(m, 1);
    /* During the backup: over dirty clusters, and over clean ones. */
    if (hq_mwrite(vm, m, 0x31, 2 * MiB, 2 * K64) < 0 ||
        hq_mwrite(vm, m, 0x32, 0, K64) < 0 ||
        hq_mwrite(vm, m, 0x33, 14 * MiB, MiB) < 0)
        return -1;
    if (hq_apply_incremental(inc, "vda", want, local, at_begin) < 0 ||
        hq_backup_end(vm, inc) < 0 || hq_backup_expect_clean(vm, "after backup-end") < 0)
        return -1;
    /* The copy is the disk at the second backup; the disk moved on. */
    return hq_expect_disk(vm, m);
}

/* c1 (a full backup), X1, c2, X2, c3, X3: the incremental from c1 covers
 * X1+X2+X3, from c2 X2+X3, from c3 X3, each exactly, and the one from c1
 * applied to the full backup is the disk. */
static int
test_merge_older(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    if (hq_mwrite(vm, m, 0x01, 0, 4 * MiB) < 0)
        return -1;
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full, "full backup with c1");
    hq_model_mark(m, 0);
    CLEANUP_FREE uint8_t *local = xmalloc(DISK_SIZE);
    if (hq_read_full(full, "vda", local) < 0 || hq_backup_end(vm, full) < 0)
        return -1;
    if (hq_mwrite(vm, m, 0x11, 1 * MiB, 2 * K64) < 0 ||
        hq_mwrite(vm, m, 0x12, 6 * MiB, K64) < 0)
        return -1;
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(c2, "checkpoint-create c2");
    hq_model_mark(m, 1);
    if (hq_mwrite(vm, m, 0x21, 1 * MiB + K64, 2 * K64) < 0 ||   /* overlaps X1 */
        hq_mwrite(vm, m, 0x22, 8 * MiB, 3 * K64) < 0)
        return -1;
    CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c3"));
    HQ_CHECK(c3, "checkpoint-create c3");
    hq_model_mark(m, 2);
    if (hq_mwrite(vm, m, 0x31, 6 * MiB, K64) < 0 ||             /* same as X1 */
        hq_mwrite(vm, m, 0x32, 11 * MiB + 100 * KiB, 10 * KiB) < 0)
        return -1;
    CLEANUP_JSON json_t *before = hq_snapshot(vm);

    const char *from[] = { "c1", "c2", "c3" };
    for (int i = 0; i < 3; i++) {
        CLEANUP_FREE char *a = xasprintf("{\"incremental\": \"%s\"}", from[i]);
        CLEANUP_JSON json_t *inc = hq_backup_begin(vm, a);
        HQ_CHECK(inc, "incremental from %s", from[i]);
        HQ_CHECK(strcmp(hq_jstr(inc, "incremental") ?: "", from[i]) == 0 &&
                 !json_object_get(inc, "checkpoint"), "job: %s", hq_str(inc));
        /* From c1 it is applied to the full backup; from later ones to a
         * copy of the disk itself (only the dirty set is new there). */
        CLEANUP_FREE uint8_t *base = xmalloc(DISK_SIZE);
        memcpy(base, i == 0 ? local : m->data, DISK_SIZE);
        if (hq_apply_incremental(inc, "vda", m->since[i], base, m->data) < 0)
            return -1;
        if (hq_backup_end(vm, inc) < 0)
            return -1;
    }
    /* Backups without a new checkpoint change no checkpoint bitmap. */
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "c3") == 1, "c3 not recording");
    if (hq_backup_expect_clean(vm, "at the end") < 0)
        return -1;
    return hq_expect_disk(vm, m);
}

/* backup-begin with checkpoint c2 splits the writes exactly: those before
 * it are in its bitmap and data, those after it only in the next
 * incremental (from c2), none in both, none in neither. */
static int
test_new_checkpoint(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    hq_model_mark(ma, 0);
    hq_model_mark(mb, 0);
    if (hq_mwrite(vm, ma, 0x11, 0, 3 * K64) < 0 || hq_mwrite(vm, mb, 0x12, 4 * MiB, K64) < 0)
        return -1;
    CLEANUP_FREE uint8_t *a0 = xmalloc(DISK_SIZE), *b0 = xmalloc(DISK_SIZE);
    memcpy(a0, ma->data, DISK_SIZE);
    memcpy(b0, mb->data, DISK_SIZE);
    uint8_t wa[NCL], wb[NCL];
    memcpy(wa, ma->since[0], NCL);
    memcpy(wb, mb->since[0], NCL);

    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\", "
                                                   "\"checkpoint\": {\"name\": \"c2\", "
                                                   "\"description\": \"d2\"}}");
    HQ_CHECK(inc, "incremental c1 with checkpoint c2");
    hq_model_mark(ma, 1);
    hq_model_mark(mb, 1);
    /* Right after it: over the clusters it exports, and elsewhere. */
    if (hq_mwrite(vm, ma, 0x21, K64, 2 * K64) < 0 || hq_mwrite(vm, ma, 0x22, 9 * MiB, K64) < 0 ||
        hq_mwrite(vm, mb, 0x23, 4 * MiB, K64) < 0)
        return -1;
    CLEANUP_JSON json_t *g2 = hq_ckpt_get(vm->ctl, "c2", false);
    HQ_CHECK(g2 && strcmp(hq_jstr(g2, "parent") ?: "", "c1") == 0 &&
             strcmp(hq_jstr(g2, "description") ?: "", "d2") == 0 &&
             json_array_size(json_object_get(g2, "disks")) == 2,
             "c2: %s", hq_str(g2));
    /* c2 recorded exactly the writes after backup-begin. */
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "c2") == 1 &&
             hq_bitmap_recording(vm, "vda", "c1") == 0, "vda recording flags");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c2") == 3 * K64 &&
             hq_bitmap_dirty(vm, "vdb", "c2") == K64, "c2 counts %" PRId64
             "/%" PRId64, hq_bitmap_dirty(vm, "vda", "c2"),
             hq_bitmap_dirty(vm, "vdb", "c2"));
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c1") == 3 * K64 &&
             hq_bitmap_dirty(vm, "vdb", "c1") == K64, "c1 counts");
    /* Its data and map: the writes before it only. */
    CLEANUP_FREE uint8_t *base = xcalloc(1, DISK_SIZE);
    if (hq_apply_incremental(inc, "vda", wa, base, a0) < 0)
        return -1;
    free(base);
    base = xcalloc(1, DISK_SIZE);
    if (hq_apply_incremental(inc, "vdb", wb, base, b0) < 0 || hq_backup_end(vm, inc) < 0)
        return -1;

    /* The next one, from c2: the writes after the first began, exactly. */
    CLEANUP_JSON json_t *inc2 = hq_backup_begin(vm, "{\"incremental\": \"c2\", "
                                                    "\"checkpoint\": {\"name\": \"c3\"}}");
    HQ_CHECK(inc2, "incremental from c2");
    memcpy(base, a0, DISK_SIZE);
    if (hq_apply_incremental(inc2, "vda", ma->since[1], base, ma->data) < 0)
        return -1;
    memcpy(base, b0, DISK_SIZE);
    if (hq_apply_incremental(inc2, "vdb", mb->since[1], base, mb->data) < 0 ||
        hq_backup_end(vm, inc2) < 0)
        return -1;
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1,c2,c3") == 0, "checkpoints: %s", names);
    return hq_backup_expect_clean(vm, "at the end");
}

/* During an incremental from c1: deleting c1 is Busy (and changes
 * nothing), deleting the unrelated root c0 works and the backup is
 * unaffected; after the backup c1 can be deleted. */
static int
test_delete_during(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    const char *names[] = { "c0", "c1", "c2" };
    for (int i = 0; i < 3; i++) {
        CLEANUP_JSON json_t *c = hq_cmd(vm->ctl, "checkpoint-create",
                                        json_pack("{s:s}", "name", names[i]));
        HQ_CHECK(c, "checkpoint-create %s", names[i]);
        hq_model_mark(m, i);
        if (hq_mwrite(vm, m, 0x10 + i, (int64_t) (1 + 2 * i) * MiB, (i + 1) * K64) < 0)
            return -1;
    }
    CLEANUP_FREE uint8_t *at_begin = xmalloc(DISK_SIZE);
    memcpy(at_begin, m->data, DISK_SIZE);
    uint8_t want[NCL];
    memcpy(want, m->since[1], NCL);
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc, "incremental from c1");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Busy", "checkpoint-delete",
                                        json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(r, "checkpoint-delete c1 during a backup from c1");
    CLEANUP_JSON json_t *r2 = hq_cmd_err(vm->ctl, "Busy", "checkpoint-delete",
        json_pack("{s:s,s:b}", "name", "c0", "children", 1));
    HQ_CHECK(r2, "checkpoint-delete c0 with children during a backup from c1");
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "a refused delete changed bitmaps: %s",
             hq_str(after));
    CLEANUP_JSON json_t *d0 = hq_cmd(vm->ctl, "checkpoint-delete",
                                     json_pack("{s:s}", "name", "c0"));
    HQ_CHECK(d0, "checkpoint-delete c0 during a backup from c1");
    CLEANUP_FREE char *l = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l && strcmp(l, "c1,c2") == 0, "checkpoints: %s", l);
    HQ_CHECK(!hq_bitmap(vm, "vda", "c0"), "c0's bitmap is still there");
    if (hq_mwrite(vm, m, 0x40, 0, K64) < 0)
        return -1;
    CLEANUP_FREE uint8_t *base = xcalloc(1, DISK_SIZE);
    memcpy(base, at_begin, DISK_SIZE);
    memset(base, 0xee, 16 * MiB);   /* every exported cluster overwrites it */
    for (int c = 0; c < NCL; c++)
        if (!want[c])
            memcpy(base + (int64_t) c * K64, at_begin + (int64_t) c * K64, K64);
    if (hq_apply_incremental(inc, "vda", want, base, at_begin) < 0 || hq_backup_end(vm, inc) < 0)
        return -1;
    CLEANUP_JSON json_t *d1 = hq_cmd(vm->ctl, "checkpoint-delete",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(d1, "checkpoint-delete c1 after the backup");
    CLEANUP_FREE char *l2 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l2 && strcmp(l2, "c2") == 0, "checkpoints: %s", l2);
    /* c2 still covers every write since it. */
    CLEANUP_JSON json_t *inc2 = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    HQ_CHECK(inc2, "incremental from c2");
    memcpy(base, m->data, DISK_SIZE);
    if (hq_apply_incremental(inc2, "vda", m->since[2], base, m->data) < 0 ||
        hq_backup_end(vm, inc2) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "at the end");
}

/* A refused backup-begin: the error class, and before/after the same
 * bitmaps, checkpoints, no job, nothing temporary. */
static int
expect_refused(struct hq_vm *vm, const char *cls, const char *args)
{
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    CLEANUP_JSON json_t *r = cls
        ? hq_cmd_err(vm->ctl, cls, "backup-begin", hq_json(args))
        : hq_exec(vm->ctl, "backup-begin", hq_json(args));
    HQ_CHECK(r, "backup-begin %s", args);
    HQ_CHECK(hq_err_class(r) && *hq_err_desc(r), "backup-begin %s: %s", args,
             hq_str(r));
    hq_note("backup-begin %s: %s: %s", args, hq_err_class(r), hq_err_desc(r));
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "%s: bitmaps changed: %s", args,
             hq_str(after));
    CLEANUP_FREE char *names2 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && names2 && strcmp(names, names2) == 0,
             "%s: checkpoints %s, were %s", args, names2, names);
    return hq_backup_expect_clean(vm, args);
}

static int
test_not_found(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    if (expect_refused(vm, "NotFound", "{\"incremental\": \"nope\"}") < 0)
        return -1;
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x11, 0, K64) == 0, "write");
    if (expect_refused(vm, "NotFound", "{\"incremental\": \"c0\", "
                       "\"checkpoint\": {\"name\": \"c2\"}}") < 0 ||
        expect_refused(vm, "AlreadyExists", "{\"incremental\": \"c1\", "
                       "\"checkpoint\": {\"name\": \"c1\"}}") < 0 ||
        expect_refused(vm, "InvalidParameter", "{\"incremental\": \"c1\", "
                       "\"checkpoint\": {\"name\": \"bad/name\"}}") < 0)
        return -1;
    /* And the checkpoint still works afterwards. */
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc, "incremental from c1 after the refusals");
    return hq_backup_end(vm, inc) < 0 ? -1 : hq_backup_expect_clean(vm, "at the end");
}

/* c1 holds only vda: an incremental from c1 of vdb (alone or with vda)
 * is refused, nothing is left behind; of vda alone it works. */
static int
test_not_on_disk(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
        json_pack("{s:s,s:[s]}", "name", "c1", "disks", "vda"));
    HQ_CHECK(c1, "checkpoint-create c1 of vda");
    HQ_CHECK(hq_write(vm, "vda", 0x11, 0, K64) == 0 &&
             hq_write(vm, "vdb", 0x12, 0, K64) == 0, "writes");
    /* strict: a disk that would be copied in full refuses the backup. */
    if (expect_refused(vm, "Unsupported", "{\"incremental\": \"c1\", \"disks\": "
                       "[\"vdb\"], \"strict\": true}") < 0 ||
        expect_refused(vm, "Unsupported", "{\"incremental\": \"c1\", \"strict\": true,"
                       " \"checkpoint\": {\"name\": \"c2\"}}") < 0)
        return -1;
    /* Without disks, every disk, as a full backup takes: vdb, not in c1,
     * whole, and saying why. */
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc, "incremental from c1");
    json_t *vdb = hq_job_disk(inc, "vdb");
    HQ_CHECK(json_array_size(json_object_get(inc, "disks")) == 2 && vdb &&
             hq_job_disk(inc, "vda"), "disks: %s", hq_str(inc));
    HQ_CHECK(strcmp(hq_jstr(vdb, "mode"), "full") == 0 && !hq_jstr(vdb, "bitmap") &&
             hq_jstr(vdb, "reason") && strstr(hq_jstr(vdb, "reason"), "c1"),
             "vdb: %s", hq_str(vdb));
    HQ_CHECK(strcmp(hq_jstr(hq_job_disk(inc, "vda"), "mode"), "incremental") == 0,
             "vda: %s", hq_str(inc));
    {
        HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(hq_jstr(vdb, "uri"), NULL);
        HQ_CHECK(h, "vdb export");
        CLEANUP_FREE uint8_t *got = xmalloc(DISK_SIZE);
        CLEANUP_FREE uint8_t *want_b = xcalloc(1, DISK_SIZE);
        memset(want_b, 0x12, K64);
        HQ_CHECK(hq_nbd_read(h, got, 0, DISK_SIZE) == 0, "read vdb");
        int64_t diff = hq_first_diff(got, want_b, DISK_SIZE);
        HQ_CHECK(diff < 0, "vdb's full export differs at %" PRId64, diff);
    }
    uint8_t want[NCL] = { 1 };
    CLEANUP_FREE uint8_t *base = xcalloc(1, DISK_SIZE);
    CLEANUP_FREE uint8_t *expect = xcalloc(1, DISK_SIZE);
    memset(expect, 0x11, K64);
    if (hq_apply_incremental(inc, "vda", want, base, expect) < 0 || hq_backup_end(vm, inc) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "at the end");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "incremental-apply-reproduces-disk", test_apply },
        { "incremental-merge-older-checkpoints", test_merge_older },
        { "incremental-new-checkpoint-splits-writes", test_new_checkpoint },
        { "incremental-checkpoint-delete-during-backup", test_delete_during },
        { "incremental-not-found", test_not_found },
        { "incremental-checkpoint-not-on-disk", test_not_on_disk },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
