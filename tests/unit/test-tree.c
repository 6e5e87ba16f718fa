/* metadata: the checkpoint tree from query-block + query-named-block-nodes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "metadata/metadata.h"
#include "fixture.h"

static void
assert_contains(const char *s, const char *part)
{
    assert_non_null(s);
    if (!strstr(s, part))
        fail_msg("\"%s\" does not mention \"%s\"", s, part);
}

static void
test_qcow2_disk(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS({ .id = "vda" }), &t);
    assert_int_equal(t.ndisks, 1);
    const struct meta_disk *d = &t.disks[0];
    assert_string_equal(d->disk, "vda");
    assert_string_equal(d->node, "vda-fmt");
    assert_string_equal(d->format, "qcow2");
    assert_string_equal(d->filename, "/x/vda-fmt.qcow2");
    assert_true(d->virtual_size == 1073741824);
    assert_false(d->read_only);
    assert_true(d->can_checkpoint);
    assert_null(d->reason);
    assert_int_equal(d->nbitmaps, 0);
    assert_int_equal(t.nckpts, 0);
    assert_true(t.next_seq == 1);
    meta_tree_free(&t);
}

static void
test_raw_disk_cannot_checkpoint(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS({ .id = "vda", .drv = "raw" }), &t);
    assert_int_equal(t.ndisks, 1);
    assert_string_equal(t.disks[0].format, "raw");
    assert_false(t.disks[0].can_checkpoint);
    assert_contains(t.disks[0].reason, "raw");
    meta_tree_free(&t);
}

static void
test_read_only_disk_cannot_checkpoint(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS({ .id = "vda", .ro = true }), &t);
    assert_true(t.disks[0].read_only);
    assert_false(t.disks[0].can_checkpoint);
    assert_contains(t.disks[0].reason, "read-only");
    meta_tree_free(&t);
}

static void
test_qcow2_v2_cannot_checkpoint(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS({ .id = "vda", .compat = "0.10" }), &t);
    assert_false(t.disks[0].can_checkpoint);
    assert_contains(t.disks[0].reason, "0.10");
    meta_tree_free(&t);
}

static void
test_disk_names_from_qdev(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        { .id = "vda" },
        { .qdev = "/machine/peripheral/sda", .node = "sda-fmt" },
        { .qdev = "/machine/peripheral-anon/device[0]/virtio-backend", .node = "disk2" },
        /* scsi-hd, ide-hd and nvme report the bare device id (QEMU 7.2
         * and 10.0 alike), with node names a launcher may renumber. */
        { .qdev = "vdc", .node = "libvirt-3-format" },
        { .qdev = "hdx", .node = "libvirt-4-format" }), &t);
    assert_int_equal(t.ndisks, 5);
    assert_string_equal(t.disks[0].disk, "vda");
    assert_string_equal(t.disks[1].disk, "sda");
    assert_string_equal(t.disks[2].disk, "disk2");
    assert_string_equal(t.disks[3].disk, "vdc");
    assert_string_equal(t.disks[4].disk, "hdx");
    assert_string_equal(t.disks[2].node, "disk2");
    assert_int_equal(meta_tree_find_disk(&t, "sda"), 1);
    assert_int_equal(meta_tree_find_disk(&t, "disk2"), 2);
    assert_int_equal(meta_tree_find_disk(&t, "sda-fmt"), -1);
    assert_int_equal(meta_tree_find_disk(&t, "vdz"), -1);
    meta_tree_free(&t);
}

/* During a pull backup through ckptd's own filter the device points at a
 * copy-before-write node (QEMU 7.2's answer, cut down): the disk keeps
 * its name, node and tracking; the filter is its root; a snapshot-access
 * node over the same file is no disk. */
static void
test_own_filter_is_transparent(void **state)
{
    json_error_t je;
    json_t *blocks = json_loads(
        "[{\"device\": \"\", \"qdev\": \"/machine/peripheral/vda/virtio-backend\","
        "  \"inserted\": {\"node-name\": \"ckptd-w1-0\", \"drv\": \"copy-before-write\","
        "    \"file\": \"/x/vda.qcow2\", \"ro\": false,"
        "    \"dirty-bitmaps\": [{\"recording\": false, \"count\": 0, \"granularity\": 65536}],"
        "    \"image\": {\"filename\": \"/x/vda.qcow2\", \"format\": \"copy-before-write\","
        "      \"virtual-size\": 16777216,"
        "      \"backing-image\": {\"filename\": \"/x/vda.qcow2\", \"format\": \"qcow2\","
        "        \"virtual-size\": 16777216,"
        "        \"format-specific\": {\"type\": \"qcow2\", \"data\": {\"compat\": \"1.1\"}}}}}}]",
        0, &je);
    json_t *nodes = json_loads(
        "[{\"node-name\": \"ckptd-a1-0\", \"drv\": \"snapshot-access\", \"file\": \"/x/vda.qcow2\"},"
        " {\"node-name\": \"ckptd-w1-0\", \"drv\": \"copy-before-write\", \"file\": \"/x/vda.qcow2\"},"
        " {\"node-name\": \"ckptd-f1-0\", \"drv\": \"qcow2\", \"file\": \"/x/s.qcow2\"},"
        " {\"node-name\": \"vda-fmt\", \"drv\": \"qcow2\", \"file\": \"/x/vda.qcow2\","
        "  \"image\": {\"virtual-size\": 16777216},"
        "  \"dirty-bitmaps\": [{\"name\": \"c1\", \"recording\": true, \"persistent\": true,"
        "    \"count\": 65536, \"granularity\": 65536}]},"
        " {\"node-name\": \"vda-file\", \"drv\": \"file\", \"file\": \"/x/vda.qcow2\"}]",
        0, &je);
    assert_non_null(blocks);
    assert_non_null(nodes);
    struct meta_tree t;
    struct ckpt_error e = { 0 };
    assert_int_equal(meta_tree_build(blocks, nodes, &t, &e), 0);
    assert_int_equal(t.ndisks, 1);
    const struct meta_disk *d = &t.disks[0];
    assert_string_equal(d->disk, "vda");
    assert_string_equal(d->node, "vda-fmt");
    assert_string_equal(d->active, "vda-fmt");
    assert_string_equal(d->root, "ckptd-w1-0");
    assert_string_equal(d->qdev, "/machine/peripheral/vda/virtio-backend");
    assert_true(d->tracking);
    assert_true(d->can_checkpoint);
    assert_int_equal(d->nbitmaps, 1);
    assert_string_equal(d->bitmaps[0].name, "c1");
    meta_tree_free(&t);
    json_decref(blocks);
    json_decref(nodes);
}

static void
test_empty_drive_is_not_a_disk(void **state)
{
    json_t *blocks, *nodes;
    fx_json(FX_DISKS({ .id = "vda" }), &blocks, &nodes);
    json_array_insert_new(blocks, 0,
        json_pack("{s:s, s:s, s:b, s:b, s:s, s:b}", "device", "",
                  "qdev", "/machine/peripheral/cd0", "locked", 0,
                  "removable", 1, "type", "unknown", "tray_open", 0));
    struct meta_tree t;
    fx_build_json(blocks, nodes, &t);
    assert_int_equal(t.ndisks, 1);
    assert_string_equal(t.disks[0].disk, "vda");
    meta_tree_free(&t);
}

static void
test_bitmaps_read(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", { .name = "c1", .seq = 1, .flags = FX_REC, .count = 196608 })), &t);
    const struct meta_disk *d = &t.disks[0];
    assert_int_equal(d->nbitmaps, 2);
    const struct meta_bitmap *b = meta_disk_find_bitmap(d, "c1");
    assert_non_null(b);
    assert_true(b->recording && b->persistent && !b->busy && !b->inconsistent);
    assert_true(b->count == 196608);
    assert_true(b->granularity == 65536);
    const struct meta_bitmap *r = meta_disk_find_bitmap(d, "ckptd1:1:1000:c1");
    assert_non_null(r);
    assert_false(r->recording);
    assert_true(r->granularity == META_RECORD_GRANULARITY);
    assert_null(meta_disk_find_bitmap(d, "c2"));
    meta_tree_free(&t);
}

static void
test_one_checkpoint(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, FX_REC))), &t);
    assert_int_equal(t.nckpts, 1);
    const struct meta_ckpt *c = &t.ckpts[0];
    assert_string_equal(c->rec.name, "c1");
    assert_true(c->rec.seq == 1);
    assert_true(c->rec.ctime == FX_CTIME);
    assert_null(c->rec.description);
    assert_string_equal(c->members[0].record, "ckptd1:1:1000:c1");
    assert_int_equal(c->nmembers, 1);
    assert_int_equal(c->members[0].disk, 0);
    assert_ptr_equal(c->members[0].bitmap, meta_disk_find_bitmap(&t.disks[0], "c1"));
    assert_true(t.next_seq == 2);
    assert_int_equal(meta_tree_find_ckpt(&t, "c1"), 0);
    assert_int_equal(meta_tree_find_ckpt(&t, "c2"), -1);
    meta_tree_free(&t);
}

static void
test_description_read(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 0, 0), FX_BM("ckptd1:1:5:c1:bmlnaHRseQ", 0, 0))), &t);
    assert_int_equal(t.nckpts, 1);
    assert_string_equal(t.ckpts[0].rec.description, "nightly");
    assert_true(t.ckpts[0].rec.ctime == 5);
    meta_tree_free(&t);
}

static void
test_records_on_two_disks_join(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, FX_REC)),
        FX_DISK("vdb", FX_BM("c1", 1, FX_REC))), &t);
    assert_int_equal(t.ndisks, 2);
    assert_int_equal(t.nckpts, 1);
    const struct meta_ckpt *c = &t.ckpts[0];
    assert_int_equal(c->nmembers, 2);
    assert_int_equal(c->members[0].disk, 0);
    assert_int_equal(c->members[1].disk, 1);
    assert_ptr_equal(c->members[0].bitmap, meta_disk_find_bitmap(&t.disks[0], "c1"));
    assert_ptr_equal(c->members[1].bitmap, meta_disk_find_bitmap(&t.disks[1], "c1"));
    assert_ptr_equal(meta_ckpt_member(c, 1), &c->members[1]);
    assert_null(meta_ckpt_member(c, 2));
    meta_tree_free(&t);
}

static void
test_members_in_disk_order(void **state)
{
    /* Every member in the order of tree->disks, whatever its seq. */
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_REC)),
        FX_DISK("vdb", FX_BM("c2", 2, FX_REC))), &t);
    assert_int_equal(t.nckpts, 2);
    assert_int_equal(t.ckpts[0].nmembers, 1);
    assert_int_equal(t.ckpts[1].nmembers, 2);
    assert_int_equal(t.ckpts[1].members[0].disk, 0);
    assert_int_equal(t.ckpts[1].members[1].disk, 1);
    meta_tree_free(&t);
}

static void
test_sorted_by_seq(void **state)
{
    /* Listed out of order, and with gaps left by deletes. */
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("z", 7, FX_REC), FX_BM("a", 2, 0), FX_BM("m", 5, 0)),
        FX_DISK("vdb", FX_BM("b", 3, 0))), &t);
    assert_int_equal(t.nckpts, 4);
    assert_string_equal(t.ckpts[0].rec.name, "a");
    assert_string_equal(t.ckpts[1].rec.name, "b");
    assert_string_equal(t.ckpts[2].rec.name, "m");
    assert_string_equal(t.ckpts[3].rec.name, "z");
    assert_true(t.next_seq == 8);
    assert_int_equal(meta_tree_parent(&t, 0), -1);
    assert_int_equal(meta_tree_parent(&t, 3), 2);
    /* Members still point at the right bitmaps after sorting. */
    assert_string_equal(t.ckpts[2].members[0].bitmap->name, "m");
    assert_string_equal(t.ckpts[1].members[0].bitmap->name, "b");
    assert_int_equal(t.ckpts[1].members[0].disk, 1);
    meta_tree_free(&t);
}

static void
test_foreign_bitmaps_are_not_checkpoints(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("mybitmap", 0, FX_REC), FX_BM("c1", 0, 0),
                        FX_BM("ckptd:backup-1-vda", 0, 0),
                        FX_BM("ckptd1:x:1:bad", 0, 0))), &t);
    assert_int_equal(t.disks[0].nbitmaps, 4);
    assert_int_equal(t.nckpts, 0);
    assert_true(t.next_seq == 1);
    meta_tree_free(&t);
}

static void
test_anonymous_bitmaps_skipped(void **state)
{
    json_t *blocks, *nodes;
    fx_json(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, FX_REC))), &blocks, &nodes);
    json_t *anon = json_pack("{s:b, s:b, s:b, s:i, s:i}", "recording", 1,
                             "persistent", 0, "busy", 1, "granularity", 65536,
                             "count", 0);
    json_array_insert(json_object_get(json_array_get(nodes, 0), "dirty-bitmaps"), 0, anon);
    json_array_insert(json_object_get(json_object_get(json_array_get(blocks, 0),
                                                      "inserted"), "dirty-bitmaps"), 0, anon);
    json_decref(anon);
    struct meta_tree t;
    fx_build_json(blocks, nodes, &t);
    assert_int_equal(t.disks[0].nbitmaps, 2);
    for (size_t i = 0; i < t.disks[0].nbitmaps; i++)
        assert_non_null(t.disks[0].bitmaps[i].name);
    assert_int_equal(t.nckpts, 1);
    assert_non_null(t.ckpts[0].members[0].bitmap);
    meta_tree_free(&t);
}

static void
test_missing_data_bitmap(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, FX_NODATA)),
        FX_DISK("vdb", FX_BM("c1", 1, FX_REC))), &t);
    assert_int_equal(t.nckpts, 1);
    assert_int_equal(t.ckpts[0].nmembers, 2);
    assert_null(meta_ckpt_member(&t.ckpts[0], 0)->bitmap);
    assert_non_null(meta_ckpt_member(&t.ckpts[0], 1)->bitmap);
    meta_tree_free(&t);
}

static void
test_inconsistent_after_crash(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, FX_BAD))), &t);
    assert_int_equal(t.nckpts, 1);
    const struct meta_bitmap *b = t.ckpts[0].members[0].bitmap;
    assert_non_null(b);
    assert_true(b->inconsistent);
    assert_false(b->recording);
    meta_tree_free(&t);
}

static void
test_prev_on_disk(void **state)
{
    /* c1 on vda+vdb, c2 on vda only, c3 on vda+vdb. */
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, 0), FX_BM("c3", 3, FX_REC)),
        FX_DISK("vdb", FX_BM("c1", 1, 0), FX_BM("c3", 3, FX_REC))), &t);
    assert_int_equal(t.nckpts, 3);
    assert_int_equal(meta_tree_prev_on_disk(&t, 2, 0), 1);
    assert_int_equal(meta_tree_prev_on_disk(&t, 2, 1), 0);
    assert_int_equal(meta_tree_prev_on_disk(&t, 1, 1), 0);
    assert_int_equal(meta_tree_prev_on_disk(&t, 1, 0), 0);
    assert_int_equal(meta_tree_prev_on_disk(&t, 0, 0), -1);
    assert_int_equal(meta_tree_prev_on_disk(&t, 0, 1), -1);
    assert_int_equal(meta_tree_prev_on_disk(&t, 3, 1), 2);   /* past the end */
    meta_tree_free(&t);
}

static void
test_bitmaps_come_from_the_node(void **state)
{
    /* query-named-block-nodes is the source; the copy in query-block is
     * not needed. */
    json_t *blocks, *nodes;
    fx_json(FX_DISKS(
        FX_DISK("vda", FX_BM("c1", 1, FX_REC))), &blocks, &nodes);
    json_object_del(json_object_get(json_array_get(blocks, 0), "inserted"),
                    "dirty-bitmaps");
    struct meta_tree t;
    fx_build_json(blocks, nodes, &t);
    assert_int_equal(t.disks[0].nbitmaps, 2);
    assert_int_equal(t.nckpts, 1);
    meta_tree_free(&t);
}

static void
test_not_a_list_fails(void **state)
{
    struct meta_tree t;
    struct ckpt_error e = { 0 };
    json_t *obj = json_object(), *arr = json_array();
    assert_int_equal(meta_tree_build(obj, arr, &t, &e), -1);
    assert_int_equal(e.code, CKPT_ERR_QEMU);
    meta_tree_free(&t);
    json_decref(obj);
    json_decref(arr);
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qcow2_disk),
        cmocka_unit_test(test_raw_disk_cannot_checkpoint),
        cmocka_unit_test(test_read_only_disk_cannot_checkpoint),
        cmocka_unit_test(test_qcow2_v2_cannot_checkpoint),
        cmocka_unit_test(test_disk_names_from_qdev),
        cmocka_unit_test(test_own_filter_is_transparent),
        cmocka_unit_test(test_empty_drive_is_not_a_disk),
        cmocka_unit_test(test_bitmaps_read),
        cmocka_unit_test(test_one_checkpoint),
        cmocka_unit_test(test_description_read),
        cmocka_unit_test(test_records_on_two_disks_join),
        cmocka_unit_test(test_members_in_disk_order),
        cmocka_unit_test(test_sorted_by_seq),
        cmocka_unit_test(test_foreign_bitmaps_are_not_checkpoints),
        cmocka_unit_test(test_anonymous_bitmaps_skipped),
        cmocka_unit_test(test_missing_data_bitmap),
        cmocka_unit_test(test_inconsistent_after_crash),
        cmocka_unit_test(test_prev_on_disk),
        cmocka_unit_test(test_bitmaps_come_from_the_node),
        cmocka_unit_test(test_not_a_list_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
