/* Live migration with non-shared images, the way libvirt's "NBD
 * migration" moves a VM: the destination QEMU (-incoming) has empty
 * images of its own and exports them writable over NBD; the source
 * mirrors each disk into them, and once the mirrors are ready migrates
 * with the dirty-bitmaps capability, then cancels the mirrors.  QEMU
 * carries the bitmaps (our records are in their names) in the migration
 * stream, so the destination's agent lists the same tree with no
 * redefine, the bitmaps are persistent in the destination's images, and
 * incrementals after the move are exact.
 *
 * While a mirror runs, checkpoint changes and backups are Busy: libvirt
 * fixes the bitmaps a migration carries (block-bitmap-mapping) before it
 * starts the mirrors, so a checkpoint made then would not travel, and
 * the bitmap it stopped would reach the destination recording nothing.
 * While the migration runs, Busy as over shared images; once it has
 * completed, the source QEMU (postmigrate) still takes a new bitmap that
 * neither its images nor the destination will hold: Busy too.  Without
 * the capability the destination's images hold no checkpoints at all. */
#include "tests/qemu/harness.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define K64 HQ_K64
#define SIZE HQ_MODEL_SIZE

/* The destination: empty images of the same size, QEMU waiting for the
 * migration, its agent started (it waits while QEMU is inmigrate), and
 * its disks exported writable for the source's mirrors. */
static struct hq_vm *
destination(struct hq_vm *src)
{
    struct hq_vm *dst = hq_vm_scratch(src->ndisks, SIZE, NULL, false);
    if (!dst)
        return NULL;
    dst->incoming = xstrdup("defer");
    if (hq_qemu_start(dst) < 0 || hq_agent_start(dst) < 0) {
        hq_fail("destination");
        return dst;
    }
    CLEANUP_FREE char *sock = xasprintf("%s/mirror-nbd.sock", dst->dir);
    CLEANUP_JSON json_t *srv = hq_cmd(dst->mon, "nbd-server-start",
        json_pack("{s:{s:s, s:{s:s}}}", "addr", "type", "unix", "data", "path", sock));
    for (int i = 0; srv && i < dst->ndisks; i++) {
        CLEANUP_JSON json_t *e = hq_cmd(dst->mon, "block-export-add",
            json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id",
                      dst->disks[i].name, "node-name", dst->disks[i].node,
                      "name", dst->disks[i].name, "writable", 1));
        if (!e)
            break;
    }
    return dst;
}

static int
wait_migration(struct hq_vm *src, const char *want)
{
    for (double end = hq_now() + 60;; hq_sleep_ms(20)) {
        CLEANUP_JSON json_t *m = hq_cmd(src->mon, "query-migrate", NULL);
        const char *st = hq_jstr(m, "status");
        if (st && strcmp(st, want) == 0)
            return 0;
        HQ_CHECK(st && strcmp(st, "failed") != 0 && strcmp(st, "completed") != 0,
                 "migration: %s, want %s", hq_str(m), want);
        HQ_CHECK(hq_now() < end, "migration still %s", st);
    }
}

static int
bandwidth(struct hq_vm *vm, json_int_t bytes_per_s)
{
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "migrate-set-parameters",
                                    json_pack("{s:I}", "max-bandwidth", bytes_per_s));
    return r ? 0 : -1;
}

static int
set_dirty_bitmaps(struct hq_vm *vm, bool on)
{
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "migrate-set-capabilities",
        json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                  "dirty-bitmaps", "state", on));
    return r ? 0 : -1;
}

/* Every disk of src mirrored (sync=full) into dst's export of it, each
 * through an NBD node of its own; returns once every mirror is ready. */
static int
mirror_to(struct hq_vm *src, struct hq_vm *dst)
{
    CLEANUP_FREE char *sock = xasprintf("%s/mirror-nbd.sock", dst->dir);
    for (int i = 0; i < src->ndisks; i++) {
        const char *disk = src->disks[i].name;
        CLEANUP_FREE char *node = xasprintf("mig-%s", disk);
        CLEANUP_JSON json_t *a = hq_cmd(src->mon, "blockdev-add",
            json_pack("{s:s, s:s, s:{s:s, s:s}, s:s}", "driver", "nbd",
                      "node-name", node, "server", "type", "unix", "path", sock,
                      "export", disk));
        CLEANUP_JSON json_t *m = a ? hq_cmd(src->mon, "blockdev-mirror",
            json_pack("{s:s, s:s, s:s, s:s}", "job-id", node, "device",
                      src->disks[i].node, "target", node, "sync", "full")) : NULL;
        HQ_CHECK(m, "mirror of %s", disk);
    }
    for (double end = hq_now() + 60;; hq_sleep_ms(20)) {
        CLEANUP_JSON json_t *jobs = hq_cmd(src->mon, "query-block-jobs", NULL);
        size_t i, ready = 0;
        json_t *j;
        json_array_foreach(jobs, i, j)
            ready += hq_jbool(j, "ready") == 1;
        if (ready == (size_t) src->ndisks)
            break;
        HQ_CHECK(hq_now() < end, "mirrors not ready: %s", hq_str(jobs));
    }
    return 0;
}

/* Starts the migration and waits until the source's status is want. */
static int
migrate(struct hq_vm *src, struct hq_vm *dst, const char *want)
{
    CLEANUP_FREE char *uri = xasprintf("unix:%s/migrate.sock", dst->dir);
    CLEANUP_JSON json_t *a = hq_cmd(dst->mon, "migrate-incoming",
                                    json_pack("{s:s}", "uri", uri));
    CLEANUP_JSON json_t *b = hq_cmd(src->mon, "migrate", json_pack("{s:s}", "uri", uri));
    HQ_CHECK(a && b, "migrate");
    return wait_migration(src, want);
}

/* The source cancels its mirrors (a ready mirror's cancel leaves the
 * target as it is) and drops the NBD nodes; the destination ends its
 * exports. */
static int
mirrors_cancel(struct hq_vm *src, struct hq_vm *dst)
{
    for (int i = 0; i < src->ndisks; i++) {
        CLEANUP_FREE char *node = xasprintf("mig-%s", src->disks[i].name);
        CLEANUP_JSON json_t *c = hq_cmd(src->mon, "block-job-cancel",
                                        json_pack("{s:s}", "device", node));
        HQ_CHECK(c, "cancel %s", node);
    }
    for (double end = hq_now() + 30;; hq_sleep_ms(20)) {
        CLEANUP_JSON json_t *jobs = hq_cmd(src->mon, "query-block-jobs", NULL);
        if (json_array_size(jobs) == 0)
            break;
        HQ_CHECK(hq_now() < end, "mirrors still there: %s", hq_str(jobs));
    }
    for (int i = 0; i < src->ndisks; i++) {
        CLEANUP_FREE char *node = xasprintf("mig-%s", src->disks[i].name);
        CLEANUP_JSON json_t *d = hq_cmd(src->mon, "blockdev-del",
                                        json_pack("{s:s}", "node-name", node));
        HQ_CHECK(d, "blockdev-del %s", node);
        CLEANUP_JSON json_t *e = hq_cmd(dst->mon, "block-export-del",
                                        json_pack("{s:s}", "id", src->disks[i].name));
        HQ_CHECK(e, "block-export-del %s", src->disks[i].name);
    }
    return 0;
}

/* After the migration: the mirrors cancelled, the destination's NBD
 * server stopped, the VM running there. */
static int
hand_over(struct hq_vm *src, struct hq_vm *dst)
{
    if (mirrors_cancel(src, dst) < 0)
        return -1;
    CLEANUP_JSON json_t *stop = hq_cmd(dst->mon, "nbd-server-stop", NULL);
    CLEANUP_JSON json_t *cont = hq_cmd(dst->mon, "cont", NULL);
    HQ_CHECK(stop && cont, "the destination's NBD server stopped, the VM running");
    return 0;
}

/* While the mirrors run, every change is Busy, naming the mirror, and
 * the bitmaps stay as they were. */
static int
busy_while_mirroring(struct hq_vm *src)
{
    CLEANUP_JSON json_t *snap = hq_snapshot(src);
    CLEANUP_JSON json_t *c = hq_cmd_err(src->ctl, "Busy", "checkpoint-create",
                                        hq_json("{\"name\": \"during-mirror\"}"));
    CLEANUP_JSON json_t *d = hq_cmd_err(src->ctl, "Busy", "checkpoint-delete",
                                        hq_json("{\"name\": \"m1\"}"));
    CLEANUP_JSON json_t *b = hq_cmd_err(src->ctl, "Busy", "backup-begin",
                                        hq_json("{\"checkpoint\": {\"name\": \"b1\"}}"));
    HQ_CHECK(c && d && b, "changes while the mirrors run");
    HQ_CHECK(strstr(hq_err_desc(c), "mirror job 'mig-"), "%s", hq_err_desc(c));
    CLEANUP_JSON json_t *snap2 = hq_snapshot(src);
    HQ_CHECK(json_equal(snap, snap2), "the refusals changed the bitmaps: %s",
             hq_str(snap2));
    /* A new agent knows of the mirror from the jobs it lists when it
     * connects, not from events it never saw. */
    HQ_CHECK(hq_agent_stop(src) == 0 && hq_agent_start(src) == 0, "agent restart");
    CLEANUP_JSON json_t *c2 = hq_cmd_err(src->ctl, "Busy", "checkpoint-create",
                                         hq_json("{\"name\": \"during-mirror\"}"));
    HQ_CHECK(c2 && strstr(hq_err_desc(c2), "mirror job 'mig-"),
             "a create after an agent restart during the mirror: %s", hq_str(c2));
    CLEANUP_JSON json_t *snap3 = hq_snapshot(src);
    HQ_CHECK(json_equal(snap, snap3), "the refusal after the restart changed the "
             "bitmaps: %s", hq_str(snap3));
    return 0;
}

static int
wait_names(struct hq_vm *vm, const char *want, const char *where)
{
    for (double end = hq_now() + 30;; hq_sleep_ms(50)) {
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        if (names && strcmp(names, want) == 0)
            return 0;
        HQ_CHECK(hq_now() < end, "%s lists %s, want %s", where, names, want);
    }
}

/* An incremental from since on every disk of vm: dirty map and bytes
 * against the models, on top of base[d] (the disks at that checkpoint). */
static int
incremental(struct hq_vm *vm, const char *since, int slot, struct hq_model **m,
            uint8_t **base)
{
    CLEANUP_FREE char *args = xasprintf("{\"incremental\": \"%s\"}", since);
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, args);
    HQ_CHECK(inc, "incremental from %s", since);
    for (int d = 0; d < vm->ndisks; d++) {
        CLEANUP_FREE uint8_t *b = xmalloc(SIZE);
        memcpy(b, base[d], SIZE);
        if (hq_apply_incremental(inc, m[d]->disk, m[d]->since[slot], b, m[d]->data) < 0)
            return -1;
    }
    HQ_CHECK(hq_backup_end(vm, inc) == 0, "end");
    return hq_backup_expect_clean(vm, "after the incremental");
}

/* The names of the disk's bitmaps, sorted, joined with ",", from QEMU's
 * list or qemu-img's (both arrays of objects with "name"). */
static char *
sorted_names(json_t *arr)
{
    size_t n = json_array_size(arr);
    const char **v = xcalloc(n + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = hq_jstr(json_array_get(arr, i), "name");
        if (name)
            v[k++] = name;
    }
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            const char *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    char *s = xstrdup("");
    for (size_t i = 0; i < k; i++) {
        char *t = xasprintf("%s%s%s", s, i ? "," : "", v[i]);
        free(s);
        s = t;
    }
    free(v);
    return s;
}

/* Before quitting: every bitmap QEMU holds on each disk is persistent.
 * After: the image holds exactly those, none in use (stored cleanly). */
static int
bitmaps_in_images(struct hq_vm *vm)
{
    char *before[HQ_MAX_DISKS] = { 0 };
    int rc = 0;
    for (int d = 0; d < vm->ndisks && rc == 0; d++) {
        CLEANUP_JSON json_t *bm = hq_bitmaps(vm, vm->disks[d].name);
        size_t i;
        json_t *b;
        if (!bm || json_array_size(bm) == 0) {
            hq_fail("%s has no bitmaps", vm->disks[d].name);
            rc = -1;
        }
        json_array_foreach(bm, i, b)
            if (hq_jbool(b, "persistent") != 1) {
                hq_fail("%s: bitmap %s is not persistent", vm->disks[d].name, hq_str(b));
                rc = -1;
            }
        before[d] = sorted_names(bm);
    }
    if (rc == 0)
        rc = hq_qemu_quit(vm);
    for (int d = 0; d < vm->ndisks && rc == 0; d++) {
        CLEANUP_JSON json_t *img = hq_image_bitmaps(vm, vm->disks[d].name);
        CLEANUP_FREE char *after = img ? sorted_names(img) : NULL;
        if (!after || strcmp(after, before[d]) != 0) {
            hq_fail("%s: the image holds bitmaps {%s}, QEMU had {%s}",
                    vm->disks[d].name, after ? after : "?", before[d]);
            rc = -1;
        }
        CLEANUP_FREE char *flags = img ? xstrdup(hq_str(img)) : NULL;
        if (flags && strstr(flags, "in-use")) {
            hq_fail("%s: a bitmap is still in use: %s", vm->disks[d].name, flags);
            rc = -1;
        }
    }
    for (int d = 0; d < vm->ndisks; d++)
        free(before[d]);
    return rc;
}

static int
test_migrate_nbd(void)
{
    CLEANUP_VM struct hq_vm *src = hq_vm_scratch(2, SIZE, NULL, true);
    HQ_CHECK(src, "source");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    struct hq_model *m[] = { ma, mb };
    HQ_CHECK(hq_mwrite(src, ma, 0x31, 0, 2 * K64) == 0 &&
             hq_mwrite(src, mb, 0x41, 3 * K64, K64) == 0, "write");
    CLEANUP_JSON json_t *full = hq_backup_begin(src, "{\"checkpoint\": {\"name\": \"m1\"}}");
    HQ_CHECK(full, "full backup with m1");
    CLEANUP_FREE uint8_t *base_a = xmalloc(SIZE);
    CLEANUP_FREE uint8_t *base_b = xmalloc(SIZE);
    uint8_t *base1[] = { base_a, base_b };
    HQ_CHECK(hq_read_full(full, "vda", base_a) == 0 &&
             hq_read_full(full, "vdb", base_b) == 0, "read");
    hq_model_mark(ma, 0);
    hq_model_mark(mb, 0);
    HQ_CHECK(hq_backup_end(src, full) == 0, "end");
    HQ_CHECK(hq_mwrite(src, ma, 0x32, 4 * K64, K64) == 0, "write after m1");
    CLEANUP_JSON json_t *m2 = hq_cmd(src->ctl, "checkpoint-create", hq_json("{\"name\": \"m2\"}"));
    HQ_CHECK(m2, "m2");
    HQ_CHECK(hq_mwrite(src, mb, 0x42, 6 * K64, 2 * K64) == 0, "write after m2");

    CLEANUP_VM struct hq_vm *dst = destination(src);
    HQ_CHECK(dst && !hq_failed(), "destination");
    HQ_CHECK(set_dirty_bitmaps(src, true) == 0 && set_dirty_bitmaps(dst, true) == 0,
             "dirty-bitmaps");
    CLEANUP_JSON json_t *m3 = hq_cmd(src->ctl, "checkpoint-create", hq_json("{\"name\": \"m3\"}"));
    HQ_CHECK(m3, "m3 before the mirrors start");
    CLEANUP_FREE uint8_t *at3_a = xmalloc(SIZE);
    CLEANUP_FREE uint8_t *at3_b = xmalloc(SIZE);
    uint8_t *base3[] = { at3_a, at3_b };
    memcpy(at3_a, ma->data, SIZE);
    memcpy(at3_b, mb->data, SIZE);
    hq_model_mark(ma, 1);
    hq_model_mark(mb, 1);
    HQ_CHECK(hq_mwrite(src, ma, 0x33, 8 * K64, K64) == 0, "write after m3");
    if (mirror_to(src, dst) < 0 || busy_while_mirroring(src) < 0)
        return -1;
    /* Guest writes go on while the mirrors run: they reach the copy and
     * the bitmaps the migration carries. */
    HQ_CHECK(hq_mwrite(src, mb, 0x43, 0, K64) == 0 &&
             hq_mwrite(src, ma, 0x36, 5 * K64, K64) == 0, "write while the mirrors run");

    /* The migration, slowed to a crawl: changes are Busy, and a write
     * in flight (mirrored, and marked in the bitmaps the migration sends
     * last) is in the incrementals after the move. */
    if (bandwidth(src, 1024) < 0 || migrate(src, dst, "active") < 0)
        return -1;
    CLEANUP_JSON json_t *busy = hq_cmd_err(src->ctl, "Busy", "checkpoint-create",
                                           hq_json("{\"name\": \"during\"}"));
    HQ_CHECK(busy && strstr(hq_err_desc(busy), "migrat"), "refused while migrating");
    HQ_CHECK(hq_mwrite(src, ma, 0x35, 14 * K64, K64) == 0 &&
             hq_mwrite(src, mb, 0x45, 9 * K64, K64) == 0, "write while migrating");
    if (bandwidth(src, 1024LL * 1024 * 1024) < 0 || wait_migration(src, "completed") < 0)
        return -1;
    /* Migrated, the mirrors not yet cancelled: a change on the source
     * would be lost (no image and no destination holds it). */
    CLEANUP_JSON json_t *snap = hq_snapshot(src);
    CLEANUP_JSON json_t *late = hq_cmd_err(src->ctl, "Busy", "checkpoint-create",
                                           hq_json("{\"name\": \"late\"}"));
    CLEANUP_JSON json_t *late2 = hq_cmd_err(src->ctl, "Busy", "backup-begin", NULL);
    HQ_CHECK(late && late2 && strstr(hq_err_desc(late), "postmigrate"),
             "changes on the source after the migration");
    CLEANUP_JSON json_t *snap2 = hq_snapshot(src);
    HQ_CHECK(json_equal(snap, snap2), "the refusals changed the source's bitmaps: %s",
             hq_str(snap2));
    if (hand_over(src, dst) < 0)
        return -1;

    if (wait_names(dst, "m1,m2,m3", "the destination") < 0 ||
        hq_tree_matches_qemu(dst, "on the destination") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(dst, ma, 0x34, 10 * K64, 2 * K64) == 0 &&
             hq_mwrite(dst, mb, 0x44, 12 * K64, K64) == 0, "write on the destination");
    if (incremental(dst, "m1", 0, m, base1) < 0 || incremental(dst, "m3", 1, m, base3) < 0)
        return -1;

    /* The checkpoints live in the destination's images now: QEMU stores
     * them at quit, and a new QEMU and agent over them find them. */
    if (bitmaps_in_images(dst) < 0 || hq_agent_stop(dst) < 0)
        return -1;
    free(dst->incoming);
    dst->incoming = NULL;
    HQ_CHECK(hq_qemu_start(dst) == 0 && hq_agent_start(dst) == 0, "restart");
    if (wait_names(dst, "m1,m2,m3", "the restarted destination") < 0 ||
        hq_tree_matches_qemu(dst, "after the restart") < 0)
        return -1;
    return incremental(dst, "m3", 1, m, base3);
}

/* Without the dirty-bitmaps capability the destination's images get the
 * data but no bitmaps: its agent lists no checkpoints. */
static int
test_migrate_nbd_no_bitmaps(void)
{
    CLEANUP_VM struct hq_vm *src = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(src, "source");
    struct hq_model ma_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    CLEANUP_JSON json_t *m1 = hq_cmd(src->ctl, "checkpoint-create", hq_json("{\"name\": \"m1\"}"));
    HQ_CHECK(m1, "m1");
    HQ_CHECK(hq_mwrite(src, ma, 0x51, K64, K64) == 0, "write");
    CLEANUP_VM struct hq_vm *dst = destination(src);
    HQ_CHECK(dst && !hq_failed(), "destination");
    if (mirror_to(src, dst) < 0 || migrate(src, dst, "completed") < 0 ||
        hand_over(src, dst) < 0)
        return -1;
    CLEANUP_JSON json_t *bm = hq_bitmaps(dst, "vda");
    HQ_CHECK(bm && json_array_size(bm) == 0, "the destination has bitmaps: %s",
             hq_str(bm));
    /* backup-begin reads the tree afresh: m1 is not there. */
    CLEANUP_JSON json_t *inc = hq_cmd_err(dst->ctl, "NotFound", "backup-begin",
                                          hq_json("{\"incremental\": \"m1\"}"));
    CLEANUP_FREE char *names = hq_ckpt_names(dst->ctl);
    HQ_CHECK(inc && names, "an incremental from m1 on the destination");
    HQ_CHECK(strcmp(names, "") == 0, "the destination lists %s", names);
    return hq_expect_disk(dst, ma);
}

/* Mirrors that end without a migration (cancelled: the migration was
 * called off): changes are allowed again on the source, which goes on
 * as before. */
static int
test_mirror_cancelled(void)
{
    CLEANUP_VM struct hq_vm *src = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(src, "source");
    struct hq_model ma_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CHECK(hq_mwrite(src, ma, 0x61, 0, K64) == 0, "write");
    CLEANUP_JSON json_t *full = hq_backup_begin(src, "{\"checkpoint\": {\"name\": \"m1\"}}");
    HQ_CHECK(full, "full backup with m1");
    CLEANUP_FREE uint8_t *base_a = xmalloc(SIZE);
    uint8_t *base1[] = { base_a };
    struct hq_model *m[] = { ma };
    HQ_CHECK(hq_read_full(full, "vda", base_a) == 0, "read");
    hq_model_mark(ma, 0);
    HQ_CHECK(hq_backup_end(src, full) == 0, "end");
    CLEANUP_VM struct hq_vm *dst = destination(src);
    HQ_CHECK(dst && !hq_failed(), "destination");
    if (mirror_to(src, dst) < 0 || busy_while_mirroring(src) < 0)
        return -1;
    HQ_CHECK(hq_mwrite(src, ma, 0x62, 3 * K64, K64) == 0, "write while the mirrors run");
    if (mirrors_cancel(src, dst) < 0)
        return -1;
    CLEANUP_JSON json_t *m2 = hq_cmd(src->ctl, "checkpoint-create", hq_json("{\"name\": \"m2\"}"));
    HQ_CHECK(m2, "m2 once the mirrors have ended");
    if (hq_tree_matches_qemu(src, "after the mirrors") < 0)
        return -1;
    return incremental(src, "m1", 0, m, base1);
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "migrate-nbd-mirror", test_migrate_nbd },
        { "migrate-nbd-without-dirty-bitmaps", test_migrate_nbd_no_bitmaps },
        { "mirror-cancelled", test_mirror_cancelled },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
