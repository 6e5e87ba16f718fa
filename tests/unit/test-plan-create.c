/* bitmap: ckpt_plan_create, the transaction that creates a checkpoint. */
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

/* Plans `name` over `disks` (NULL: the default) on the tree of `fx`.
 * Returns the actions (caller frees) and the result in *err. */
static json_t *
plan(const struct fx_disk *fx, const char *name, const char *description,
     const char *const *disks, size_t ndisks, enum ckpt_err *err,
     struct ckpt_error *e)
{
    struct meta_tree t;
    fx_build(fx, &t);
    json_t *actions = json_array();
    struct ckpt_create_req r = { .name = name, .description = description,
                                 .now = NOW, .disks = disks, .ndisks = ndisks };
    memset(e, 0, sizeof *e);
    *err = ckpt_plan_create(&t, &r, actions, e);
    meta_tree_free(&t);
    return actions;
}

static void
expect_ok(const struct fx_disk *fx, const char *name, const char *const *disks,
          size_t ndisks, const char *expected)
{
    struct ckpt_error e;
    enum ckpt_err err;
    json_t *actions = plan(fx, name, NULL, disks, ndisks, &err, &e);
    if (err != CKPT_OK)
        print_error("ckpt_plan_create failed (%d): %s\n", err, e.msg);
    bool match = fx_actions_match(actions, expected);
    json_decref(actions);
    assert_int_equal(err, CKPT_OK);
    assert_true(match);
}

/* Fails with `code`, leaves actions empty, and the message mentions `part`. */
static void
expect_error(const struct fx_disk *fx, const char *name, const char *description,
             const char *const *disks, size_t ndisks, enum ckpt_err code,
             const char *part)
{
    struct ckpt_error e;
    enum ckpt_err err;
    json_t *actions = plan(fx, name, description, disks, ndisks, &err, &e);
    bool empty = fx_actions_match(actions, "");
    json_decref(actions);
    assert_int_equal(err, code);
    assert_int_equal(e.code, code);
    if (part && !strstr(e.msg, part))
        fail_msg("error \"%s\" does not mention \"%s\"", e.msg, part);
    assert_true(empty);
}

#define DISKS(...) ((const char *const[]) { __VA_ARGS__ }), \
    ARRAY_SIZE(((const char *const[]) { __VA_ARGS__ }))

/* vda and vdb, both with c1 (seq 1, recording). */
#define TWO_WITH_C1 FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_REC)), \
                             FX_DISK("vdb", FX_BM("c1", 1, FX_REC)))

static void
test_first_checkpoint(void **state)
{
    expect_ok(FX_DISKS({ .id = "vda" }), "c1", NULL, 0,
              "add vda-fmt c1; addrec vda-fmt ckptd1:1:2000:c1");
}

static void
test_first_checkpoint_two_disks(void **state)
{
    expect_ok(FX_DISKS({ .id = "vda" }, { .id = "vdb" }), "c1", NULL, 0,
              "add vda-fmt c1; addrec vda-fmt ckptd1:1:2000:c1; "
              "add vdb-fmt c1; addrec vdb-fmt ckptd1:1:2000:c1");
}

static void
test_second_checkpoint_disables_previous(void **state)
{
    expect_ok(TWO_WITH_C1, "c2", NULL, 0,
              "disable vda-fmt c1; add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2; "
              "disable vdb-fmt c1; add vdb-fmt c2; addrec vdb-fmt ckptd1:2:2000:c2");
}

static void
test_seq_follows_the_newest(void **state)
{
    /* Gaps left by deletes: the new one comes after the newest. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c3", 3, 0), FX_BM("c7", 7, FX_REC))),
              "c8", NULL, 0,
              "disable vda-fmt c7; add vda-fmt c8; addrec vda-fmt ckptd1:8:2000:c8");
}

static void
test_description_in_record(void **state)
{
    struct ckpt_error e;
    enum ckpt_err err;
    json_t *actions = plan(FX_DISKS({ .id = "vda" }), "c1", "nightly", NULL, 0,
                           &err, &e);
    assert_int_equal(err, CKPT_OK);
    fx_assert_actions(actions, "add vda-fmt c1; addrec vda-fmt ckptd1:1:2000:c1:bmlnaHRseQ");
    json_decref(actions);
}

static void
test_subset_of_disks(void **state)
{
    expect_ok(TWO_WITH_C1, "c2", DISKS("vda"),
              "disable vda-fmt c1; add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2");
}

static void
test_subset_in_vm_order(void **state)
{
    expect_ok(TWO_WITH_C1, "c2", DISKS("vdb", "vda"),
              "disable vda-fmt c1; add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2; "
              "disable vdb-fmt c1; add vdb-fmt c2; addrec vdb-fmt ckptd1:2:2000:c2");
}

static void
test_disk_added_later(void **state)
{
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_REC)),
                       FX_DISK("vdb", FX_BM("c1", 1, FX_REC)),
                       { .id = "vdc" }),
              "c2", NULL, 0,
              "disable vda-fmt c1; add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2; "
              "disable vdb-fmt c1; add vdb-fmt c2; addrec vdb-fmt ckptd1:2:2000:c2; "
              "add vdc-fmt c2; addrec vdc-fmt ckptd1:2:2000:c2");
}

static void
test_newest_on_disk_is_older(void **state)
{
    /* c2 was only on vda: on vdb c1 still records, and is the one to stop. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_REC)),
                       FX_DISK("vdb", FX_BM("c1", 1, FX_REC))),
              "c3", NULL, 0,
              "disable vda-fmt c2; add vda-fmt c3; addrec vda-fmt ckptd1:3:2000:c3; "
              "disable vdb-fmt c1; add vdb-fmt c3; addrec vdb-fmt ckptd1:3:2000:c3");
}

static void
test_default_skips_incapable_disks(void **state)
{
    expect_ok(FX_DISKS({ .id = "vda", .drv = "raw" }, { .id = "vdb" },
                       { .id = "vdc", .ro = true }),
              "c1", NULL, 0,
              "add vdb-fmt c1; addrec vdb-fmt ckptd1:1:2000:c1");
}

static void
test_incapable_disk_named(void **state)
{
    expect_error(FX_DISKS({ .id = "vda" }, { .id = "vdb", .drv = "raw" }), "c1", NULL,
                 DISKS("vda", "vdb"), CKPT_ERR_UNSUPPORTED, "vdb");
}

static void
test_no_capable_disk(void **state)
{
    expect_error(FX_DISKS({ .id = "vda", .drv = "raw" }, { .id = "vdb", .compat = "0.10" }),
                 "c1", NULL, NULL, 0, CKPT_ERR_UNSUPPORTED, "c1");
}

static void
test_no_disk_at_all(void **state)
{
    expect_error(FX_DISKS({ .id = "vda" }), "c1", NULL,
                 (const char *const[]) { "vda" }, 0, CKPT_ERR_UNSUPPORTED, NULL);
}

static void
test_unknown_disk(void **state)
{
    expect_error(FX_DISKS({ .id = "vda" }), "c1", NULL, DISKS("vda", "vdz"),
                 CKPT_ERR_NOT_FOUND, "vdz");
}

static void
test_duplicate_disk(void **state)
{
    expect_error(FX_DISKS({ .id = "vda" }, { .id = "vdb" }), "c1", NULL,
                 DISKS("vda", "vdb", "vda"), CKPT_ERR_INVALID_PARAMETER, "vda");
}

static void
test_existing_name(void **state)
{
    expect_error(TWO_WITH_C1, "c1", NULL, NULL, 0, CKPT_ERR_ALREADY_EXISTS, "c1");
}

static void
test_existing_name_on_unselected_disk(void **state)
{
    /* A checkpoint name is unique in the VM, not per disk. */
    expect_error(FX_DISKS({ .id = "vda" }, FX_DISK("vdb", FX_BM("c1", 1, FX_REC))),
                 "c1", NULL, DISKS("vda"), CKPT_ERR_ALREADY_EXISTS, "c1");
}

static void
test_foreign_bitmap_with_the_name(void **state)
{
    expect_error(FX_DISKS({ .id = "vda" }, FX_DISK("vdb", FX_BM("backup", 0, FX_REC))),
                 "backup", NULL, NULL, 0, CKPT_ERR_ALREADY_EXISTS, "vdb");
}

static void
test_foreign_bitmap_on_unselected_disk(void **state)
{
    expect_ok(FX_DISKS({ .id = "vda" }, FX_DISK("vdb", FX_BM("backup", 0, FX_REC))),
              "backup", DISKS("vda"),
              "add vda-fmt backup; addrec vda-fmt ckptd1:1:2000:backup");
}

static void
test_invalid_name(void **state)
{
    const char *bad[] = { "", ".c", "a/b", "a:b", "a b", "\xc3\xa9", "ckptd1:1:1:c" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        expect_error(FX_DISKS({ .id = "vda" }), bad[i], NULL, NULL, 0,
                     CKPT_ERR_INVALID_PARAMETER, NULL);
}

static void
test_description_too_long(void **state)
{
    size_t n = meta_record_max_description(2) + 1;
    char *desc = xmalloc(n + 1);
    memset(desc, 'd', n);
    desc[n] = '\0';
    expect_error(FX_DISKS({ .id = "vda" }), "c1", desc, NULL, 0,
                 CKPT_ERR_INVALID_PARAMETER, "c1");
    free(desc);
}

static void
test_inconsistent_previous_not_disabled(void **state)
{
    /* After a crash: c1 comes back inconsistent (and disabled). */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_BAD))), "c2", NULL, 0,
              "add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2");
}

static void
test_inconsistent_recording_previous_not_disabled(void **state)
{
    /* Even if QEMU reported it recording: an inconsistent bitmap cannot
     * be disabled, the transaction would fail. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_BAD | FX_REC))), "c2", NULL, 0,
              "add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2");
}

static void
test_previous_with_missing_data_bitmap(void **state)
{
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_NODATA))), "c2", NULL, 0,
              "add vda-fmt c2; addrec vda-fmt ckptd1:2:2000:c2");
}

static void
test_error_leaves_actions_unchanged(void **state)
{
    struct meta_tree t;
    fx_build(TWO_WITH_C1, &t);
    json_t *actions = json_array();
    json_array_append_new(actions, json_string("earlier"));
    struct ckpt_error e = { 0 };
    const char *disks[] = { "vda", "vdz" };
    struct ckpt_create_req r = { .name = "c2", .now = NOW, .disks = disks, .ndisks = 2 };
    assert_int_equal(ckpt_plan_create(&t, &r, actions, &e), CKPT_ERR_NOT_FOUND);
    assert_int_equal(json_array_size(actions), 1);
    assert_string_equal(json_string_value(json_array_get(actions, 0)), "earlier");
    meta_tree_free(&t);
    json_decref(actions);
}

static void
test_success_appends(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS({ .id = "vda" }), &t);
    json_t *actions = json_array();
    json_array_append_new(actions, qmp_bitmap_action("block-dirty-bitmap-remove",
                                                     "vda-fmt", "old"));
    struct ckpt_error e = { 0 };
    struct ckpt_create_req r = { .name = "c1", .now = NOW };
    assert_int_equal(ckpt_plan_create(&t, &r, actions, &e), CKPT_OK);
    fx_assert_actions(actions, "remove vda-fmt old; add vda-fmt c1; "
                               "addrec vda-fmt ckptd1:1:2000:c1");
    meta_tree_free(&t);
    json_decref(actions);
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_checkpoint),
        cmocka_unit_test(test_first_checkpoint_two_disks),
        cmocka_unit_test(test_second_checkpoint_disables_previous),
        cmocka_unit_test(test_seq_follows_the_newest),
        cmocka_unit_test(test_description_in_record),
        cmocka_unit_test(test_subset_of_disks),
        cmocka_unit_test(test_subset_in_vm_order),
        cmocka_unit_test(test_disk_added_later),
        cmocka_unit_test(test_newest_on_disk_is_older),
        cmocka_unit_test(test_default_skips_incapable_disks),
        cmocka_unit_test(test_incapable_disk_named),
        cmocka_unit_test(test_no_capable_disk),
        cmocka_unit_test(test_no_disk_at_all),
        cmocka_unit_test(test_unknown_disk),
        cmocka_unit_test(test_duplicate_disk),
        cmocka_unit_test(test_existing_name),
        cmocka_unit_test(test_existing_name_on_unselected_disk),
        cmocka_unit_test(test_foreign_bitmap_with_the_name),
        cmocka_unit_test(test_foreign_bitmap_on_unselected_disk),
        cmocka_unit_test(test_invalid_name),
        cmocka_unit_test(test_description_too_long),
        cmocka_unit_test(test_inconsistent_previous_not_disabled),
        cmocka_unit_test(test_inconsistent_recording_previous_not_disabled),
        cmocka_unit_test(test_previous_with_missing_data_bitmap),
        cmocka_unit_test(test_error_leaves_actions_unchanged),
        cmocka_unit_test(test_success_appends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
