/* bitmap: ckpt_plan_backup_push, the transaction that starts a push
 * backup: the temporary bitmaps and the new checkpoint as for a pull, then
 * per disk a blockdev-backup into the disk's target image, sync=full or
 * sync=bitmap from the temporary bitmap, all in one list. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "bitmap/plan.h"
#include "qmp/qmp.h"
#include "fixture.h"

#define NOW 2000

/* vda holds c1 (recording); vdb none: it is copied in full. */
#define VDA_C1_VDB FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_REC)), { .id = "vdb" })

static json_t *
find_backup(json_t *actions, const char *disk_node, size_t *index)
{
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a) {
        json_t *d = json_object_get(a, "data");
        if (strcmp(fx_str(a, "type"), "blockdev-backup") == 0 &&
            strcmp(fx_str(d, "device"), disk_node) == 0) {
            *index = i;
            return d;
        }
    }
    return NULL;
}

static void
test_incremental_and_full_disk(void **state)
{
    struct meta_tree t;
    fx_build(VDA_C1_VDB, &t);
    const char *names[] = { "vda" };
    struct ckpt_create_req c = { .name = "c2", .now = NOW, .disks = names, .ndisks = 1 };
    struct ckpt_backup_req r = { .job = "backup-7", .jobnum = 7, .incremental = "c1",
                                 .checkpoint = &c };
    struct ckpt_backup_disk disks[] = {
        { .disk = "vda", .incremental = true, .granularity = 65536 },
        { .disk = "vdb" },
    };
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    assert_int_equal(ckpt_plan_backup_push(&t, &r, disks, 2, actions, &e), CKPT_OK);
    size_t ia = 0, ib = 0;
    json_t *a = find_backup(actions, "vda-fmt", &ia);
    json_t *b = find_backup(actions, "vdb-fmt", &ib);
    assert_non_null(a);
    assert_non_null(b);
    /* vda: only the changed clusters, from the merged temporary bitmap,
     * which the job leaves as it is (it is removed at the end). */
    assert_string_equal(fx_str(a, "sync"), "bitmap");
    assert_string_equal(fx_str(a, "bitmap"), "ckptd:backup-7:vda");
    assert_string_equal(fx_str(a, "bitmap-mode"), "never");
    assert_string_equal(fx_str(a, "target"), "ckptd-q7-0");
    assert_string_equal(fx_str(a, "filter-node-name"), "ckptd-c7-0");
    assert_string_equal(fx_str(a, "job-id"), "ckptd-backup-7-vda");
    /* vdb: everything, no bitmap. */
    assert_string_equal(fx_str(b, "sync"), "full");
    assert_null(json_object_get(b, "bitmap"));
    assert_string_equal(fx_str(b, "target"), "ckptd-q7-1");
    /* Before the jobs, in the same list: the temporary bitmap and its
     * merge, and the new checkpoint (one point in time). */
    char *got = fx_render(actions);
    assert_non_null(strstr(got, "merge vda-fmt ckptd:backup-7:vda < c1"));
    assert_non_null(strstr(got, "disable vda-fmt c1; add vda-fmt c2"));
    assert_true(strstr(got, "merge vda-fmt") < strstr(got, "blockdev-backup"));
    assert_true(strstr(got, "add vda-fmt c2") < strstr(got, "blockdev-backup"));
    free(got);
    assert_true(ia + 1 == ib || ib + 1 == ia);
    json_decref(actions);
    meta_tree_free(&t);
}

static void
test_disk_gone(void **state)
{
    struct meta_tree t;
    fx_build(VDA_C1_VDB, &t);
    struct ckpt_backup_req r = { .job = "backup-7", .jobnum = 7 };
    struct ckpt_backup_disk disks[] = { { .disk = "vdz" } };
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    assert_int_equal(ckpt_plan_backup_push(&t, &r, disks, 1, actions, &e),
                     CKPT_ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "vdz"));
    assert_int_equal(json_array_size(actions), 0);
    json_decref(actions);
    meta_tree_free(&t);
}

static void
test_push_names_are_ours(void **state)
{
    /* The sweep finds the target nodes by their mark. */
    char *t = ckpt_tmp_node('t', 7, 0), *q = ckpt_tmp_node('q', 7, 1);
    assert_true(ckpt_tmp_node_is_ours(t, 7));
    assert_true(ckpt_tmp_node_is_ours(q, -1));
    assert_false(ckpt_tmp_node_is_ours(q, 8));
    assert_false(ckpt_tmp_node_is_ours("ckptd-x7-0", -1));
    free(t);
    free(q);
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incremental_and_full_disk),
        cmocka_unit_test(test_disk_gone),
        cmocka_unit_test(test_push_names_are_ours),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
