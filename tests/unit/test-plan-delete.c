/* bitmap: ckpt_plan_delete, the transaction that deletes checkpoints while
 * every survivor keeps covering every write since it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "bitmap/plan.h"
#include "fixture.h"

/* c1 <- c2 <- c3 on vda; c3 records. */
#define CHAIN FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0), \
                                      FX_BM("c3", 3, FX_REC)))
/* The same chain on vda and vdb. */
#define CHAIN2 FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0), \
                                       FX_BM("c3", 3, FX_REC)), \
                        FX_DISK("vdb", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0), \
                                       FX_BM("c3", 3, FX_REC)))

#define R1 "ckptd1:1:1000:c1"
#define R2 "ckptd1:2:1000:c2"
#define R3 "ckptd1:3:1000:c3"

/* Plans the delete and checks the actions and the deleted names (joined
 * with " ", oldest first). */
/* When the newest checkpoint goes and others survive, each of its disks
 * first gets the high-water mark of sequence numbers (see
 * test_next_seq_survives). */
static char *
with_marks(const struct meta_tree *t, const struct str_vec *deleted,
           const char *expected)
{
    const struct meta_ckpt *newest = t->nckpts ? &t->ckpts[t->nckpts - 1] : NULL;
    bool gone = false;
    for (size_t i = 0; newest && i < deleted->len; i++)
        gone |= strcmp(deleted->ptr[i], newest->rec.name) == 0;
    gone &= deleted->len < t->nckpts;   /* and some checkpoint survives */
    char *out = xstrdup("");
    for (size_t k = 0; gone && k < newest->nmembers; k++) {
        char *more = xasprintf("%saddrec %s ckptd1:next:%llu; ", out,
                               t->disks[newest->members[k].disk].node,
                               (unsigned long long) newest->rec.seq + 1);
        free(out);
        out = more;
    }
    char *all = xasprintf("%s%s", out, expected);
    free(out);
    if (*all && all[strlen(all) - 2] == ';')
        all[strlen(all) - 2] = '\0';
    return all;
}

static void
expect_ok(const struct fx_disk *fx, const char *name, enum ckpt_delete_mode mode,
          const char *expected_plan, const char *expected_deleted)
{
    struct meta_tree t;
    fx_build(fx, &t);
    json_t *actions = json_array();
    struct str_vec deleted = { 0 };
    struct ckpt_error e = { 0 };
    enum ckpt_err err = ckpt_plan_delete(&t, name, mode, actions, &deleted, &e);
    if (err != CKPT_OK)
        print_error("ckpt_plan_delete failed (%d): %s\n", err, e.msg);
    CLEANUP_FREE char *expected = with_marks(&t, &deleted, expected_plan);
    bool match = fx_actions_match(actions, expected);
    bool order = fx_removes_last(actions);
    char *got = fx_join(&deleted);
    bool names = strcmp(got, expected_deleted) == 0;
    if (!names)
        print_error("deleted: got \"%s\", expected \"%s\"\n", got, expected_deleted);
    free(got);
    str_vec_free_all(&deleted);
    json_decref(actions);
    meta_tree_free(&t);
    assert_int_equal(err, CKPT_OK);
    assert_true(match);
    assert_true(order);
    assert_true(names);
}

/* Fails with code; actions (holding one earlier entry) and deleted are
 * untouched; the message mentions every one of parts. */
static void
expect_error(const struct fx_disk *fx, const char *name, enum ckpt_delete_mode mode,
             enum ckpt_err code, const char *part1, const char *part2)
{
    struct meta_tree t;
    fx_build(fx, &t);
    json_t *actions = json_array();
    json_array_append_new(actions, json_string("earlier"));
    struct str_vec deleted = { 0 };
    struct ckpt_error e = { 0 };
    enum ckpt_err err = ckpt_plan_delete(&t, name, mode, actions, &deleted, &e);
    assert_int_equal(err, code);
    assert_int_equal(e.code, code);
    const char *parts[] = { part1, part2 };
    for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
        if (parts[i] && !strstr(e.msg, parts[i]))
            fail_msg("error \"%s\" does not mention \"%s\"", e.msg, parts[i]);
    assert_int_equal(json_array_size(actions), 1);
    assert_string_equal(json_string_value(json_array_get(actions, 0)), "earlier");
    assert_int_equal(deleted.len, 0);
    str_vec_free_all(&deleted);
    json_decref(actions);
    meta_tree_free(&t);
}

/* --- one checkpoint --- */

static void
test_delete_middle(void **state)
{
    expect_ok(CHAIN, "c2", CKPT_DELETE_ONE,
              "merge vda-fmt c1 < c2; remove vda-fmt c2; remove vda-fmt " R2,
              "c2");
}

static void
test_delete_newest(void **state)
{
    expect_ok(CHAIN, "c3", CKPT_DELETE_ONE,
              "merge vda-fmt c2 < c3; enable vda-fmt c2; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c3");
}

static void
test_delete_root(void **state)
{
    expect_ok(CHAIN, "c1", CKPT_DELETE_ONE,
              "remove vda-fmt c1; remove vda-fmt " R1, "c1");
}

static void
test_delete_only_checkpoint(void **state)
{
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_REC))), "c1", CKPT_DELETE_ONE,
              "remove vda-fmt c1; remove vda-fmt " R1, "c1");
}

/* Deleting the newest, then creating: the deleted number is not handed
 * out again, whatever the new checkpoint is called (a backup that saw
 * the old c3 must be able to tell it from a new one). */
static void
test_next_seq_survives(void **state)
{
    struct meta_tree t;
    fx_build(CHAIN, &t);
    json_t *actions = json_array();
    struct str_vec deleted = { 0 };
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_delete(&t, "c3", CKPT_DELETE_ONE, actions, &deleted, &e),
                     CKPT_OK);
    assert_int_equal(meta_tree_apply(&t, actions), 0);
    assert_int_equal(t.nckpts, 2);
    assert_int_equal(t.next_seq, 4);
    json_t *create = json_array();
    struct ckpt_create_req r = { .name = "c3", .now = 2000 };
    assert_int_equal(ckpt_plan_create(&t, &r, create, &e), CKPT_OK);
    char *text = fx_render(create);
    assert_non_null(strstr(text, "addrec vda-fmt ckptd1:4:2000:c3"));
    assert_non_null(strstr(text, "remove vda-fmt ckptd1:next:4"));
    free(text);
    assert_int_equal(meta_tree_apply(&t, create), 0);
    assert_int_equal(t.ckpts[2].rec.seq, 4);
    assert_int_equal(t.next_seq, 5);
    json_decref(actions);
    json_decref(create);
    str_vec_free_all(&deleted);
    meta_tree_free(&t);
}

/* --- with children --- */

static void
test_delete_subtree(void **state)
{
    expect_ok(CHAIN, "c2", CKPT_DELETE_CHILDREN,
              "merge vda-fmt c1 < c2 c3; enable vda-fmt c1; "
              "remove vda-fmt c2; remove vda-fmt " R2 "; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c2 c3");
}

static void
test_delete_subtree_from_root(void **state)
{
    expect_ok(CHAIN, "c1", CKPT_DELETE_CHILDREN,
              "remove vda-fmt c1; remove vda-fmt " R1 "; "
              "remove vda-fmt c2; remove vda-fmt " R2 "; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c1 c2 c3");
}

static void
test_delete_subtree_of_newest(void **state)
{
    expect_ok(CHAIN, "c3", CKPT_DELETE_CHILDREN,
              "merge vda-fmt c2 < c3; enable vda-fmt c2; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c3");
}

static void
test_delete_children_only(void **state)
{
    expect_ok(CHAIN, "c1", CKPT_DELETE_CHILDREN_ONLY,
              "merge vda-fmt c1 < c2 c3; enable vda-fmt c1; "
              "remove vda-fmt c2; remove vda-fmt " R2 "; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c2 c3");
}

static void
test_delete_children_only_of_middle(void **state)
{
    expect_ok(CHAIN, "c2", CKPT_DELETE_CHILDREN_ONLY,
              "merge vda-fmt c2 < c3; enable vda-fmt c2; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c3");
}

static void
test_delete_children_only_of_newest(void **state)
{
    expect_ok(CHAIN, "c3", CKPT_DELETE_CHILDREN_ONLY, "", "");
}

/* --- several disks --- */

static void
test_delete_middle_two_disks(void **state)
{
    expect_ok(CHAIN2, "c2", CKPT_DELETE_ONE,
              "merge vda-fmt c1 < c2; remove vda-fmt c2; remove vda-fmt " R2 "; "
              "merge vdb-fmt c1 < c2; remove vdb-fmt c2; remove vdb-fmt " R2,
              "c2");
}

static void
test_delete_newest_two_disks(void **state)
{
    expect_ok(CHAIN2, "c3", CKPT_DELETE_ONE,
              "merge vda-fmt c2 < c3; enable vda-fmt c2; "
              "remove vda-fmt c3; remove vda-fmt " R3 "; "
              "merge vdb-fmt c2 < c3; enable vdb-fmt c2; "
              "remove vdb-fmt c3; remove vdb-fmt " R3,
              "c3");
}

static void
test_delete_children_only_two_disks(void **state)
{
    expect_ok(CHAIN2, "c1", CKPT_DELETE_CHILDREN_ONLY,
              "merge vda-fmt c1 < c2 c3; enable vda-fmt c1; "
              "remove vda-fmt c2; remove vda-fmt " R2 "; "
              "remove vda-fmt c3; remove vda-fmt " R3 "; "
              "merge vdb-fmt c1 < c2 c3; enable vdb-fmt c1; "
              "remove vdb-fmt c2; remove vdb-fmt " R2 "; "
              "remove vdb-fmt c3; remove vdb-fmt " R3,
              "c2 c3");
}

/* c2 only on vda, in the middle of c1 <- c2 <- c3 on vda and vdb. */
#define PARTIAL FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0), \
                                        FX_BM("c3", 3, FX_REC)), \
                         FX_DISK("vdb", FX_BM("c1", 1, 0), FX_BM("c3", 3, FX_REC)))

static void
test_delete_checkpoint_on_one_disk_only(void **state)
{
    expect_ok(PARTIAL, "c2", CKPT_DELETE_ONE,
              "merge vda-fmt c1 < c2; remove vda-fmt c2; remove vda-fmt " R2,
              "c2");
}

static void
test_delete_children_only_across_partial_member(void **state)
{
    /* c2 is not on vdb: vdb's c3 folds into c1, its nearest survivor. */
    expect_ok(PARTIAL, "c2", CKPT_DELETE_CHILDREN_ONLY,
              "merge vda-fmt c2 < c3; enable vda-fmt c2; "
              "remove vda-fmt c3; remove vda-fmt " R3 "; "
              "merge vdb-fmt c1 < c3; enable vdb-fmt c1; "
              "remove vdb-fmt c3; remove vdb-fmt " R3,
              "c3");
}

static void
test_delete_newest_on_one_disk_only(void **state)
{
    /* c2 only on vda and recording there; vdb's c1 records already. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_REC)),
                       FX_DISK("vdb", FX_BM("c1", 1, FX_REC))),
              "c2", CKPT_DELETE_ONE,
              "merge vda-fmt c1 < c2; enable vda-fmt c1; "
              "remove vda-fmt c2; remove vda-fmt " R2,
              "c2");
}

static void
test_delete_missing_data_bitmap(void **state)
{
    /* Only the record of c2 is left on vda: nothing to merge. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_NODATA),
                                      FX_BM("c3", 3, FX_REC))),
              "c2", CKPT_DELETE_ONE, "remove vda-fmt " R2, "c2");
}

static void
test_delete_removes_each_disks_own_record(void **state)
{
    /* The records of c1 differ between the disks (here: vdb's carries a
     * description, "d").  Each disk must lose the record it actually has:
     * removing a bitmap that is not there fails the whole transaction. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 0, FX_REC), FX_BM(R1, 0, 0)),
                       FX_DISK("vdb", FX_BM("c1", 0, FX_REC), FX_BM(R1 ":ZA", 0, 0))),
              "c1", CKPT_DELETE_ONE,
              "remove vda-fmt c1; remove vda-fmt " R1 "; "
              "remove vdb-fmt c1; remove vdb-fmt " R1 ":ZA",
              "c1");
}

/* --- after a crash --- */

#define CRASHED FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_BAD), FX_BM("c2", 2, FX_BAD), \
                                        FX_BM("c3", 3, FX_BAD)))

static void
test_inconsistent_chain_delete_middle(void **state)
{
    expect_ok(CRASHED, "c2", CKPT_DELETE_ONE,
              "remove vda-fmt c2; remove vda-fmt " R2, "c2");
}

static void
test_inconsistent_chain_delete_newest(void **state)
{
    expect_ok(CRASHED, "c3", CKPT_DELETE_ONE,
              "remove vda-fmt c3; remove vda-fmt " R3, "c3");
}

static void
test_inconsistent_chain_delete_all(void **state)
{
    expect_ok(CRASHED, "c1", CKPT_DELETE_CHILDREN,
              "remove vda-fmt c1; remove vda-fmt " R1 "; "
              "remove vda-fmt c2; remove vda-fmt " R2 "; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c1 c2 c3");
}

static void
test_consistent_child_into_inconsistent_parent(void **state)
{
    /* c3 was created after the crash; its parent cannot take a merge. */
    expect_ok(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, FX_BAD), FX_BM("c2", 2, FX_BAD),
                                      FX_BM("c3", 3, FX_REC))),
              "c3", CKPT_DELETE_ONE,
              "remove vda-fmt c3; remove vda-fmt " R3, "c3");
}

#define HALF_CRASHED FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_BAD), \
                                             FX_BM("c3", 3, FX_REC)))

static void
test_inconsistent_source_consistent_survivor(void **state)
{
    expect_error(HALF_CRASHED, "c2", CKPT_DELETE_ONE, CKPT_ERR_INCONSISTENT, "c2", "c1");
}

static void
test_inconsistent_descendant_of_survivor(void **state)
{
    expect_error(HALF_CRASHED, "c1", CKPT_DELETE_CHILDREN_ONLY, CKPT_ERR_INCONSISTENT,
                 "c2", "c1");
}

static void
test_inconsistent_subtree_with_its_root(void **state)
{
    /* Deleting c1 with its children leaves nothing that could miss writes. */
    expect_ok(HALF_CRASHED, "c1", CKPT_DELETE_CHILDREN,
              "remove vda-fmt c1; remove vda-fmt " R1 "; "
              "remove vda-fmt c2; remove vda-fmt " R2 "; "
              "remove vda-fmt c3; remove vda-fmt " R3,
              "c1 c2 c3");
}

static void
test_inconsistent_on_second_disk_leaves_actions(void **state)
{
    /* vda alone would plan fine; vdb's c2 is inconsistent. */
    expect_error(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0),
                                         FX_BM("c3", 3, FX_REC)),
                          FX_DISK("vdb", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_BAD),
                                         FX_BM("c3", 3, FX_REC))),
                 "c2", CKPT_DELETE_ONE, CKPT_ERR_INCONSISTENT, "vdb", "c2");
}

/* --- errors --- */

static void
test_unknown_name(void **state)
{
    expect_error(CHAIN, "c9", CKPT_DELETE_ONE, CKPT_ERR_NOT_FOUND, "c9", NULL);
    expect_error(CHAIN, "c9", CKPT_DELETE_CHILDREN_ONLY, CKPT_ERR_NOT_FOUND, "c9", NULL);
}

static void
test_foreign_bitmap_is_not_a_checkpoint(void **state)
{
    expect_error(FX_DISKS(FX_DISK("vda", FX_BM("mine", 0, FX_REC))), "mine",
                 CKPT_DELETE_ONE, CKPT_ERR_NOT_FOUND, "mine", NULL);
}

static void
test_deleted_appends(void **state)
{
    struct meta_tree t;
    fx_build(CHAIN, &t);
    json_t *actions = json_array();
    struct str_vec deleted = { 0 };
    str_vec_append(&deleted, xstrdup("earlier"));
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_delete(&t, "c2", CKPT_DELETE_CHILDREN, actions,
                                      &deleted, &e), CKPT_OK);
    char *got = fx_join(&deleted);
    assert_string_equal(got, "earlier c2 c3");
    free(got);
    str_vec_free_all(&deleted);
    json_decref(actions);
    meta_tree_free(&t);
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_middle),
        cmocka_unit_test(test_delete_newest),
        cmocka_unit_test(test_delete_root),
        cmocka_unit_test(test_delete_only_checkpoint),
        cmocka_unit_test(test_next_seq_survives),
        cmocka_unit_test(test_delete_subtree),
        cmocka_unit_test(test_delete_subtree_from_root),
        cmocka_unit_test(test_delete_subtree_of_newest),
        cmocka_unit_test(test_delete_children_only),
        cmocka_unit_test(test_delete_children_only_of_middle),
        cmocka_unit_test(test_delete_children_only_of_newest),
        cmocka_unit_test(test_delete_middle_two_disks),
        cmocka_unit_test(test_delete_newest_two_disks),
        cmocka_unit_test(test_delete_children_only_two_disks),
        cmocka_unit_test(test_delete_checkpoint_on_one_disk_only),
        cmocka_unit_test(test_delete_children_only_across_partial_member),
        cmocka_unit_test(test_delete_newest_on_one_disk_only),
        cmocka_unit_test(test_delete_missing_data_bitmap),
        cmocka_unit_test(test_delete_removes_each_disks_own_record),
        cmocka_unit_test(test_inconsistent_chain_delete_middle),
        cmocka_unit_test(test_inconsistent_chain_delete_newest),
        cmocka_unit_test(test_inconsistent_chain_delete_all),
        cmocka_unit_test(test_consistent_child_into_inconsistent_parent),
        cmocka_unit_test(test_inconsistent_source_consistent_survivor),
        cmocka_unit_test(test_inconsistent_descendant_of_survivor),
        cmocka_unit_test(test_inconsistent_subtree_with_its_root),
        cmocka_unit_test(test_inconsistent_on_second_disk_leaves_actions),
        cmocka_unit_test(test_unknown_name),
        cmocka_unit_test(test_foreign_bitmap_is_not_a_checkpoint),
        cmocka_unit_test(test_deleted_appends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
