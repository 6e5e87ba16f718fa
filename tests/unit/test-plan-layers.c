/* bitmap/layers.c and the layered tree: a disk whose checkpoints span the
 * overlay a disk-snapshot put on top and the read-only base below it.
 * What an incremental merges, what delete, create and commit plan, and
 * when such a disk stops claiming to track. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "bitmap/plan.h"
#include "fixture.h"

#define R1 "ckptd1:1:1000:c1"
#define R2 "ckptd1:2:1000:c2"
#define RS "ckptd1:2:1000:s1"

/* vda's active layer vda-fmt (the overlay, bitmaps top) over base-fmt
 * (read-only, bitmaps base): the JSON QEMU gives after blockdev-snapshot. */
static void
layered(const struct fx_bm *top, const struct fx_bm *base, struct meta_tree *t)
{
    json_t *blocks, *nodes;
    const struct fx_disk disks[] = {
        { .id = "vda", .bms = top }, { .id = "base", .bms = base, .ro = true },
        { .id = NULL },
    };
    fx_json(disks, &blocks, &nodes);
    json_array_remove(blocks, 1);           /* base is no device's */
    json_t *ov = json_array_get(nodes, 0);  /* vda-fmt: its image is shared */
    json_object_set_new(json_object_get(ov, "image"), "full-backing-filename",
                        json_string("/x/base-fmt.qcow2"));
    fx_build_json(blocks, nodes, t);
}

/* c1, c2 on the base; c2 carried into the overlay, recording there. */
#define TOP_C2 FX_BMS(FX_BM("c2", 2, FX_REC))
#define BASE_C1C2 FX_BMS(FX_BM("c1", 1, 0), FX_BM("c2", 2, 0))

static void
test_tree_spans_layers(void **state)
{
    struct meta_tree t;
    layered(TOP_C2, BASE_C1C2, &t);
    assert_int_equal(t.ndisks, 1);
    const struct meta_disk *d = &t.disks[0];
    assert_true(d->tracking);
    assert_true(d->can_checkpoint);
    assert_string_equal(d->node, "vda-fmt");
    assert_int_equal(d->nlayers, 2);
    assert_string_equal(d->layers[1].node, "base-fmt");
    assert_true(d->layers[1].read_only);
    assert_int_equal(t.nckpts, 2);
    const struct meta_member *m1 = meta_ckpt_member(&t.ckpts[0], 0);
    const struct meta_member *m2 = meta_ckpt_member(&t.ckpts[1], 0);
    assert_int_equal(m1->nparts, 1);
    assert_int_equal(m1->parts[0].layer, 1);
    assert_int_equal(m2->nparts, 2);
    assert_int_equal(m2->parts[0].layer, 0);
    assert_true(m2->bitmap->recording);
    assert_int_equal(m2->parts[1].layer, 1);
    assert_false(m2->parts[1].bitmap->recording);
    meta_tree_free(&t);
}

static void
test_incremental_merges_every_layer(void **state)
{
    struct meta_tree t;
    layered(TOP_C2, BASE_C1C2, &t);
    json_t *srcs = ckpt_merge_sources(&t, 0, 0, t.nckpts, "vda-fmt");
    char *got = json_dumps(srcs, JSON_COMPACT);
    assert_string_equal(got, "[{\"node\":\"base-fmt\",\"name\":\"c1\"},\"c2\","
                             "{\"node\":\"base-fmt\",\"name\":\"c2\"}]");
    free(got);
    json_decref(srcs);
    meta_tree_free(&t);
}

static void
test_delete_on_read_only_base_refused(void **state)
{
    struct meta_tree t;
    layered(TOP_C2, BASE_C1C2, &t);
    struct str_vec deleted = { 0 };
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    assert_int_equal(ckpt_plan_delete(&t, "c1", CKPT_DELETE_ONE, actions, &deleted, &e),
                     CKPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "disk-commit vda"));
    assert_int_equal(json_array_size(actions), 0);
    str_vec_free_all(&deleted);
    json_decref(actions);
    meta_tree_free(&t);
}

static void
test_create_stops_the_overlay_one(void **state)
{
    struct meta_tree t;
    layered(TOP_C2, BASE_C1C2, &t);
    struct ckpt_create_req r = { .name = "c3", .now = 1000 };
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    assert_int_equal(ckpt_plan_create(&t, &r, actions, &e), CKPT_OK);
    fx_assert_actions(actions, "disable vda-fmt c2; add vda-fmt c3; "
                               "addrec vda-fmt ckptd1:3:1000:c3");
    json_decref(actions);
    meta_tree_free(&t);
}

/* A snapshot that made s1 on the overlay; deleting s1 puts c1 (with its
 * record) on the overlay, recording, with s1's writes. */
static void
test_delete_carries_survivor(void **state)
{
    struct meta_tree t;
    layered(FX_BMS(FX_BM("s1", 2, FX_REC)), FX_BMS(FX_BM("c1", 1, 0)), &t);
    assert_true(t.disks[0].tracking);
    struct str_vec deleted = { 0 };
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    assert_int_equal(ckpt_plan_delete(&t, "s1", CKPT_DELETE_ONE, actions, &deleted, &e),
                     CKPT_OK);
    /* The mark first (s1 was the newest), then the carried c1. */
    char *got = fx_render(actions);
    assert_non_null(strstr(got, "? {\"data\":{\"disabled\":false,\"granularity\":65536,"
                                "\"name\":\"c1\",\"node\":\"vda-fmt\",\"persistent\":true},"
                                "\"type\":\"block-dirty-bitmap-add\"}; addrec vda-fmt " R1
                                "; merge vda-fmt c1 < s1; remove vda-fmt s1; "
                                "remove vda-fmt " RS));
    free(got);
    str_vec_free_all(&deleted);
    json_decref(actions);
    meta_tree_free(&t);
}

static void
test_commit_merges_down(void **state)
{
    struct meta_tree t;
    layered(FX_BMS(FX_BM("c2", 2, 0), FX_BM("c3", 3, FX_REC)), BASE_C1C2, &t);
    struct ckpt_error e = { 0 };
    json_t *actions = json_array(), *undo = json_array();
    assert_int_equal(ckpt_plan_commit(&t, 0, "base-fmt", actions, undo, &e), CKPT_OK);
    char *got = fx_render(actions);
    /* (The renderer shows sources on other nodes as the action's JSON,
     * after what it had printed of the merge.) */
    assert_string_equal(got,
        "merge base-fmt c2 <? {\"data\":{\"bitmaps\":[{\"name\":\"c2\",\"node\":\"vda-fmt\"}],\"node\":\"base-fmt\","
        "\"target\":\"c2\"},\"type\":\"block-dirty-bitmap-merge\"}; "
        "? {\"data\":{\"disabled\":true,\"granularity\":65536,\"name\":\"c3\",\"node\":"
        "\"base-fmt\",\"persistent\":true},\"type\":\"block-dirty-bitmap-add\"}; "
        "addrec base-fmt ckptd1:3:1000:c3; "
        "merge base-fmt c3 <? {\"data\":{\"bitmaps\":[{\"name\":\"c3\",\"node\":\"vda-fmt\"}],\"node\":\"base-fmt\","
        "\"target\":\"c3\"},\"type\":\"block-dirty-bitmap-merge\"}; "
        "enable base-fmt c3");
    free(got);
    fx_assert_actions(undo, "disable base-fmt c3");
    json_decref(actions);
    json_decref(undo);
    meta_tree_free(&t);
}

/* Another client committed a ckptd overlay: the base's newest bitmap was
 * disabled by the snapshot and never enabled again. */
static void
test_newest_not_recording_is_not_tracking(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0))), &t);
    assert_false(t.disks[0].tracking);
    assert_false(t.disks[0].can_checkpoint);
    assert_non_null(strstr(t.disks[0].untracked, "'c2'"));
    meta_tree_free(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_spans_layers),
        cmocka_unit_test(test_incremental_merges_every_layer),
        cmocka_unit_test(test_delete_on_read_only_base_refused),
        cmocka_unit_test(test_create_stops_the_overlay_one),
        cmocka_unit_test(test_delete_carries_survivor),
        cmocka_unit_test(test_commit_merges_down),
        cmocka_unit_test(test_newest_not_recording_is_not_tracking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
