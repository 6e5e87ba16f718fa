/* Live migration between two QEMUs on this host, over shared images:
 * the destination's agent lists the same checkpoints with no redefine
 * (QEMU stores the persistent bitmaps as the source lets go of the images
 * and loads them as the destination takes them), and an incremental
 * backup after the move is exact.  While a migration runs, checkpoint
 * changes and backup-begin are Busy; a running backup makes QEMU's
 * migration fail (its export holds the images), so the VM stays on the
 * source with the backup intact. */
#include "tests/qemu/harness.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define K64 HQ_K64
#define SIZE HQ_MODEL_SIZE

/* A second QEMU over the same images, waiting for a migration, with an
 * agent of its own (not yet connected QEMU-side: it waits). */
static struct hq_vm *
destination(struct hq_vm *src)
{
    struct hq_vm *dst = hq_vm_new();
    if (!dst)
        return NULL;
    for (int i = 0; i < src->ndisks; i++) {
        dst->disks[i] = src->disks[i];
        dst->disks[i].path = xstrdup(src->disks[i].path);
    }
    dst->ndisks = src->ndisks;
    dst->incoming = xstrdup("defer");
    CLEANUP_FREE char *sd = hq_scratch_dir(dst);
    if (mkdir(sd, 0700) < 0 || hq_agent_add_arg(dst, "--scratch-dir") < 0 ||
        hq_agent_add_arg(dst, sd) < 0 || hq_qemu_start(dst) < 0 ||
        hq_agent_start(dst) < 0)
        hq_fail("destination");
    return dst;
}

/* migrate from src to dst over a Unix socket; waits for status want. */
static int
migrate(struct hq_vm *src, struct hq_vm *dst, const char *want, bool wait)
{
    CLEANUP_FREE char *uri = xasprintf("unix:%s/migrate.sock", dst->dir);
    CLEANUP_JSON json_t *a = hq_cmd(dst->mon, "migrate-incoming",
                                    json_pack("{s:s}", "uri", uri));
    CLEANUP_JSON json_t *b = hq_cmd(src->mon, "migrate", json_pack("{s:s}", "uri", uri));
    HQ_CHECK(a && b, "migrate");
    for (double end = hq_now() + 60; wait; hq_sleep_ms(20)) {
        CLEANUP_JSON json_t *m = hq_cmd(src->mon, "query-migrate", NULL);
        const char *st = hq_jstr(m, "status");
        if (st && strcmp(st, want) == 0)
            break;
        HQ_CHECK(st && (strcmp(st, "completed") != 0 && strcmp(st, "failed") != 0),
                 "migration ended %s, expected %s: %s", st, want, hq_str(m));
        HQ_CHECK(hq_now() < end, "migration still %s", st);
    }
    return 0;
}

/* A running backup: QEMU cannot let go of the images, the migration
 * fails, and the backup goes on, its export unchanged. */
static int
test_backup_blocks_migration(void)
{
    CLEANUP_VM struct hq_vm *src = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(src, "source");
    HQ_CHECK(hq_write(src, "vda", 0x41, 0, K64) == 0, "write");
    CLEANUP_JSON json_t *j = hq_backup_begin(src, "{\"checkpoint\": {\"name\": \"b1\"}}");
    HQ_CHECK(j, "backup");
    CLEANUP_FREE uint8_t *base = xmalloc(SIZE);
    HQ_CHECK(hq_read_full(j, "vda", base) == 0, "read");
    CLEANUP_VM struct hq_vm *dst0 = destination(src);
    HQ_CHECK(dst0 && !hq_failed(), "destination");
    if (migrate(src, dst0, "failed", true) < 0)
        return -1;
    CLEANUP_JSON json_t *q = hq_cmd(src->ctl, "query-backup",
                                    json_pack("{s:s}", "id", hq_jstr(j, "id")));
    HQ_CHECK(q && strcmp(hq_jstr(q, "status"), "running") == 0, "after the failed "
             "migration the backup is %s", hq_str(q));
    CLEANUP_FREE uint8_t *again = xmalloc(SIZE);
    HQ_CHECK(hq_read_full(j, "vda", again) == 0 &&
             hq_first_diff(again, base, SIZE) < 0, "the backup's export changed");
    HQ_CHECK(hq_backup_end(src, j) == 0, "end");
    return hq_backup_expect_clean(src, "after the backup");
}


static int
test_migrate_shared(void)
{
    CLEANUP_VM struct hq_vm *src = hq_vm_scratch(2, SIZE, NULL, true);
    HQ_CHECK(src, "source");
    struct hq_model ma_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CHECK(hq_mwrite(src, ma, 0x31, 0, 2 * K64) == 0, "write");
    CLEANUP_JSON json_t *j = hq_backup_begin(src, "{\"checkpoint\": {\"name\": \"m1\"}}");
    HQ_CHECK(j, "full backup with m1");
    CLEANUP_FREE uint8_t *base = xmalloc(SIZE);
    HQ_CHECK(hq_read_full(j, "vda", base) == 0, "read");
    hq_model_mark(ma, 0);
    HQ_CHECK(hq_mwrite(src, ma, 0x32, 4 * K64, K64) == 0, "write after m1");
    CLEANUP_JSON json_t *m2 = hq_cmd(src->ctl, "checkpoint-create", hq_json("{\"name\": \"m2\"}"));
    HQ_CHECK(m2, "m2");
    HQ_CHECK(hq_mwrite(src, ma, 0x33, 6 * K64, K64) == 0, "write after m2");

    HQ_CHECK(hq_backup_end(src, j) == 0, "end");

    /* While a migration runs (slowed to a crawl), changes are Busy. */
    CLEANUP_VM struct hq_vm *dst = destination(src);
    HQ_CHECK(dst && !hq_failed(), "destination");
    CLEANUP_JSON json_t *slow = hq_cmd(src->mon, "migrate-set-parameters",
                                       hq_json("{\"max-bandwidth\": 1024}"));
    HQ_CHECK(slow, "slow migration");
    if (migrate(src, dst, "active", true) < 0)
        return -1;
    CLEANUP_JSON json_t *busy = hq_cmd_err(src->ctl, "Busy", "checkpoint-create",
                                           hq_json("{\"name\": \"during\"}"));
    CLEANUP_JSON json_t *busy2 = hq_cmd_err(src->ctl, "Busy", "backup-begin", NULL);
    HQ_CHECK(busy && busy2 && strstr(hq_err_desc(busy), "migrat"), "refusals");
    CLEANUP_JSON json_t *fast = hq_cmd(src->mon, "migrate-set-parameters",
                                       hq_json("{\"max-bandwidth\": 1073741824}"));
    HQ_CHECK(fast, "fast again");
    for (double end = hq_now() + 60;; hq_sleep_ms(20)) {
        CLEANUP_JSON json_t *m = hq_cmd(src->mon, "query-migrate", NULL);
        if (strcmp(hq_jstr(m, "status"), "completed") == 0)
            break;
        HQ_CHECK(hq_now() < end, "migration: %s", hq_str(m));
    }

    /* The VM runs on the destination (QEMU 10 activates the images only
     * then; 7.2 already at the migration's end). */
    CLEANUP_JSON json_t *cont = hq_cmd(dst->mon, "cont", NULL);
    HQ_CHECK(cont, "cont on the destination");
    /* The destination's agent finds the checkpoints by itself. */
    for (double end = hq_now() + 30;; hq_sleep_ms(50)) {
        CLEANUP_FREE char *names = hq_ckpt_names(dst->ctl);
        if (names && strcmp(names, "m1,m2") == 0)
            break;
        HQ_CHECK(hq_now() < end, "the destination lists %s", names);
    }
    if (hq_tree_matches_qemu(dst, "on the destination") < 0)
        return -1;
    /* Writes on the destination, then an exact incremental from m1. */
    HQ_CHECK(hq_mwrite(dst, ma, 0x34, 8 * K64, 2 * K64) == 0, "write on the destination");
    CLEANUP_JSON json_t *inc = hq_backup_begin(dst, "{\"incremental\": \"m1\", "
                                                    "\"disks\": [\"vda\"]}");
    HQ_CHECK(inc, "incremental on the destination");
    if (hq_apply_incremental(inc, "vda", ma->since[0], base, ma->data) < 0)
        return -1;
    HQ_CHECK(hq_backup_end(dst, inc) == 0, "end");
    return hq_backup_expect_clean(dst, "on the destination");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "backup-blocks-migration", test_backup_blocks_migration },
        { "migrate-shared-images", test_migrate_shared },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
