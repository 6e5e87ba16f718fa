/* metadata + bitmap: checkpoint identity.  Records with a chain id (and
 * an earlier ckptd's without), the gone set, which disks are another
 * chain's, stale checkpoints, and the upkeep every change plans. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "bitmap/plan.h"
#include "fixture.h"

#define X "0123456789abcdef"            /* this VM's chain */
#define Y "fedcba9876543210"            /* another VM's */
/* A record with a chain id, as this version writes it. */
#define RX(seq, name) "ckptd1:" #seq ":1000:" name "::" X
#define RY(seq, name) "ckptd1:" #seq ":1000:" name "::" Y
/* A checkpoint member given by literal names: data bitmap + record. */
#define MEM(name, rec, flags) FX_BM(name, 0, flags), FX_BM(rec, 0, 0)

/* --- records --- */

static void
test_record_with_chain_round_trips(void **state)
{
    struct meta_record r = { .name = "c1", .seq = 3, .ctime = 7, .chain = X };
    struct ckpt_error e = { 0 };
    char *b = meta_record_encode(&r, &e);
    assert_string_equal(b, "ckptd1:3:7:c1::" X);
    struct meta_record out;
    assert_int_equal(meta_record_decode(b, &out), 1);
    assert_string_equal(out.chain, X);
    assert_string_equal(out.name, "c1");
    assert_null(out.description);
    meta_record_clear(&out);
    free(b);

    r.description = "nightly";
    b = meta_record_encode(&r, &e);
    assert_string_equal(b, "ckptd1:3:7:c1:bmlnaHRseQ:" X);
    assert_int_equal(meta_record_decode(b, &out), 1);
    assert_string_equal(out.chain, X);
    assert_string_equal(out.description, "nightly");
    meta_record_clear(&out);
    free(b);
}

/* An earlier ckptd's records (no chain id) still read, with chain "". */
static void
test_old_records_still_read(void **state)
{
    struct meta_record out;
    assert_int_equal(meta_record_decode("ckptd1:2:5:c2", &out), 1);
    assert_string_equal(out.chain, "");
    assert_true(out.seq == 2);
    meta_record_clear(&out);
    assert_int_equal(meta_record_decode("ckptd1:2:5:c2:bmlnaHRseQ", &out), 1);
    assert_string_equal(out.chain, "");
    assert_string_equal(out.description, "nightly");
    meta_record_clear(&out);
}

static void
test_bad_chain_is_malformed(void **state)
{
    struct meta_record out;
    const char *bad[] = {
        "ckptd1:1:1:c1::0123",                  /* too short */
        "ckptd1:1:1:c1::0123456789ABCDEF",      /* upper case */
        "ckptd1:1:1:c1::0123456789abcdef0",     /* too long */
        ("ckptd1:1:1:c1:bmln:" X ":x"),         /* a field too many */
        ("ckptd1:1:1:c1:b%ln:" X),              /* bad description */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_int_equal(meta_record_decode(bad[i], &out), -1);
    /* Marks are not records. */
    assert_int_equal(meta_record_decode("ckptd1:gone:" X ":1-3", &out), 0);
}

/* The longest description still fits with the longest name, the largest
 * numbers and a chain id. */
static void
test_max_description_with_chain(void **state)
{
    char name[META_NAME_MAX + 1];
    memset(name, 'n', META_NAME_MAX);
    name[META_NAME_MAX] = '\0';
    size_t max = meta_record_max_description(META_NAME_MAX);
    char *desc = xmalloc(max + 2);
    memset(desc, 'x', max);
    desc[max] = '\0';
    struct meta_record r = { .name = name, .seq = UINT64_MAX, .ctime = INT64_MAX,
                             .description = desc, .chain = X };
    struct ckpt_error e = { 0 };
    char *b = meta_record_encode(&r, &e);
    assert_non_null(b);
    assert_true(strlen(b) <= META_BITMAP_NAME_MAX);
    struct meta_record out;
    assert_int_equal(meta_record_decode(b, &out), 1);
    assert_string_equal(out.chain, X);
    meta_record_clear(&out);
    free(b);
    desc[max] = 'x';
    desc[max + 1] = '\0';
    assert_null(meta_record_encode(&r, &e));
    free(desc);
}

/* --- the gone set --- */

static void
test_seqs_ranges(void **state)
{
    struct meta_seqs s = { 0 };
    meta_seqs_add(&s, 5);
    meta_seqs_add(&s, 3);
    meta_seqs_add(&s, 4);       /* joins 3 and 5 */
    meta_seqs_add(&s, 9);
    meta_seqs_add_range(&s, 1, 2);
    assert_int_equal(s.n, 2);
    assert_true(s.r[0].lo == 1 && s.r[0].hi == 5);
    assert_true(s.r[1].lo == 9 && s.r[1].hi == 9);
    assert_true(meta_seqs_has(&s, 1) && meta_seqs_has(&s, 5) && meta_seqs_has(&s, 9));
    assert_false(meta_seqs_has(&s, 6) || meta_seqs_has(&s, 0) || meta_seqs_has(&s, 10));
    assert_true(meta_seqs_max(&s) == 9);
    meta_seqs_add_range(&s, 6, 20);
    assert_int_equal(s.n, 1);
    meta_seqs_free(&s);
}

static void
test_gone_round_trip(void **state)
{
    struct meta_seqs s = { 0 };
    meta_seqs_add_range(&s, 1, 4);
    meta_seqs_add(&s, 7);
    struct str_vec names = { 0 };
    meta_gone_encode(X, &s, &names);
    assert_int_equal(names.len, 1);
    assert_string_equal(names.ptr[0], "ckptd1:gone:" X ":1-4,7");
    struct meta_seqs back = { 0 };
    char chain[META_CHAIN_LEN + 1];
    assert_true(meta_gone_decode(names.ptr[0], chain, &back));
    assert_string_equal(chain, X);
    assert_true(meta_seqs_equal(&s, &back));
    assert_true(meta_bitmap_is_ours(names.ptr[0]));
    str_vec_free_all(&names);
    meta_seqs_free(&back);
    meta_seqs_free(&s);
    const char *bad[] = { ("ckptd1:gone:" X ":"), ("ckptd1:gone:" X ":3-1"),
                          ("ckptd1:gone:" X ":1,"), ("ckptd1:gone:" X ":01"),
                          "ckptd1:gone:0123:1" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_false(meta_gone_decode(bad[i], chain, NULL));
}

/* A set too long for one bitmap name is split, every part within the
 * limit, and reads back whole. */
static void
test_gone_splits_at_the_name_limit(void **state)
{
    struct meta_seqs s = { 0 };
    for (uint64_t i = 0; i < 400; i++)
        meta_seqs_add(&s, 10000000000000000000u + 2 * i);
    struct str_vec names = { 0 };
    meta_gone_encode(X, &s, &names);
    assert_true(names.len > 1);
    struct meta_seqs back = { 0 };
    for (size_t i = 0; i < names.len; i++) {
        char chain[META_CHAIN_LEN + 1];
        assert_true(strlen(names.ptr[i]) <= META_BITMAP_NAME_MAX);
        assert_true(meta_gone_decode(names.ptr[i], chain, &back));
    }
    assert_true(meta_seqs_equal(&s, &back));
    str_vec_free_all(&names);
    meta_seqs_free(&back);
    meta_seqs_free(&s);
}

/* --- the tree --- */

/* A disk holding another chain's records is foreign: not in any
 * checkpoint, cannot hold one, says why, and lists its checkpoints. */
static void
test_foreign_disk(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(FX_DISK("vda", MEM("c1", RX(1, "c1"), FX_REC)),
                      FX_DISK("vdf", MEM("c1", RY(1, "c1"), 0),
                                     MEM("d2", RY(2, "d2"), FX_REC))), &t);
    assert_string_equal(t.chain, X);
    assert_int_equal(t.nckpts, 1);
    assert_int_equal(t.ckpts[0].nmembers, 1);
    assert_int_equal(t.ckpts[0].members[0].disk, 0);
    const struct meta_disk *f = &t.disks[1];
    assert_non_null(f->foreign);
    assert_false(f->can_checkpoint);
    assert_non_null(strstr(f->reason, Y));
    assert_string_equal(f->foreign_chain, Y);
    assert_int_equal(f->foreign_names.len, 2);
    CLEANUP_FREE char *why = meta_tree_why_absent(&t, "d2");
    assert_non_null(why);
    assert_non_null(strstr(why, "vdf"));
    CLEANUP_FREE char *id = meta_tree_ckpt_id(&t, 0);
    assert_string_equal(id, X ":1");

    /* A create plans nothing on the foreign disk. */
    struct ckpt_create_req r = { .name = "c2", .now = 2000 };
    CLEANUP_JSON json_t *a = json_array();
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_create(&t, &r, a, &e), CKPT_OK);
    CLEANUP_FREE char *text = fx_render(a);
    assert_null(strstr(text, "vdf"));
    assert_non_null(strstr(text, "addrec vda-fmt ckptd1:2:2000:c2::" X));
    meta_tree_free(&t);
}

/* The chain the agent knows wins over a count of disks: two disks from
 * another VM do not make the VM's own disk foreign. */
static void
test_known_chain_wins(void **state)
{
    json_t *blocks, *nodes;
    fx_json(FX_DISKS(FX_DISK("vda", MEM("c1", RX(1, "c1"), FX_REC)),
                     FX_DISK("vdf", MEM("d1", RY(1, "d1"), FX_REC)),
                     FX_DISK("vdg", MEM("d1", RY(1, "d1"), FX_REC))), &blocks, &nodes);
    struct meta_tree t;
    struct ckpt_error e = { 0 };
    assert_int_equal(meta_tree_build_in(blocks, nodes, X, &t, &e), 0);
    assert_string_equal(t.chain, X);
    assert_null(t.disks[0].foreign);
    assert_non_null(t.disks[1].foreign);
    assert_non_null(t.disks[2].foreign);
    meta_tree_free(&t);
    /* Not knowing it, the images decide: most disks. */
    assert_int_equal(meta_tree_build(blocks, nodes, &t, &e), 0);
    assert_string_equal(t.chain, Y);
    assert_non_null(t.disks[0].foreign);
    meta_tree_free(&t);
    json_decref(blocks);
    json_decref(nodes);
}

/* An id the images do not hold yet (a first checkpoint not made) does
 * not make disks foreign: they are the VM's own, plugged in later. */
static void
test_unwritten_chain_does_not_exclude(void **state)
{
    json_t *blocks, *nodes;
    fx_json(FX_DISKS(FX_DISK("vda", MEM("c1", RY(1, "c1"), FX_REC))), &blocks, &nodes);
    struct meta_tree t;
    struct ckpt_error e = { 0 };
    assert_int_equal(meta_tree_build_in(blocks, nodes, X, &t, &e), 0);
    assert_string_equal(t.chain, Y);
    assert_null(t.disks[0].foreign);
    assert_int_equal(t.nckpts, 1);
    meta_tree_free(&t);
    json_decref(blocks);
    json_decref(nodes);
}

/* vdb was detached when c2 was deleted: vda's gone set says so, and
 * vdb's c2 is stale, not a checkpoint; an incremental from c1 on vdb
 * still merges c2's bitmap. */
#define DETACHED FX_DISKS( \
    FX_DISK("vda", MEM("c1", RX(1, "c1"), 0), MEM("c3", RX(3, "c3"), FX_REC), \
                   FX_BM("ckptd1:gone:" X ":2", 0, 0)), \
    FX_DISK("vdb", MEM("c1", RX(1, "c1"), 0), MEM("c2", RX(2, "c2"), 0), \
                   MEM("c3", RX(3, "c3"), FX_REC)))

/* Does the merge for an incremental from checkpoint index from on disk
 * d take a bitmap named name? */
static bool
sources_have(const struct meta_tree *t, size_t d, size_t from, const char *name)
{
    json_t *srcs = ckpt_merge_sources(t, d, from, t->nckpts, t->disks[d].node);
    bool found = false;
    size_t i;
    json_t *s;
    json_array_foreach(srcs, i, s) {
        const char *n = json_is_string(s) ? json_string_value(s)
                        : json_string_value(json_object_get(s, "name"));
        found |= n && strcmp(n, name) == 0;
    }
    json_decref(srcs);
    return found;
}

static void
test_stale_not_listed(void **state)
{
    struct meta_tree t;
    fx_build(DETACHED, &t);
    assert_int_equal(t.nckpts, 2);
    assert_string_equal(t.ckpts[0].rec.name, "c1");
    assert_string_equal(t.ckpts[1].rec.name, "c3");
    assert_int_equal(t.ckpts[1].nmembers, 2);
    assert_int_equal(t.nstale, 1);
    assert_string_equal(t.stale[0].rec.name, "c2");
    assert_int_equal(t.disks[1].stale_names.len, 1);
    assert_true(t.next_seq == 4);
    CLEANUP_FREE char *why = meta_tree_why_absent(&t, "c2");
    assert_non_null(strstr(why, "deleted while disk 'vdb' was detached"));
    /* An incremental from c1 merges the stale c2 on vdb; one from c3
     * does not, nor does vda (c2 never was on it after the delete). */
    assert_true(sources_have(&t, 1, 0, "c2"));
    assert_false(sources_have(&t, 1, 1, "c2"));
    assert_false(sources_have(&t, 0, 0, "c2"));
    meta_tree_free(&t);
}

/* The next change folds the stale checkpoint on vdb into c1 and copies
 * the gone set to vdb; removes come last. */
static void
test_change_folds_stale(void **state)
{
    struct meta_tree t;
    fx_build(DETACHED, &t);
    struct ckpt_create_req r = { .name = "c4", .now = 2000 };
    CLEANUP_JSON json_t *a = json_array();
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_create(&t, &r, a, &e), CKPT_OK);
    assert_true(fx_actions_match(a,
        "disable vda-fmt c3; add vda-fmt c4; addrec vda-fmt ckptd1:4:2000:c4::" X "; "
        "disable vdb-fmt c3; add vdb-fmt c4; addrec vdb-fmt ckptd1:4:2000:c4::" X "; "
        "addrec vdb-fmt ckptd1:gone:" X ":2; "
        "merge vdb-fmt c1 < c2; "
        "remove vdb-fmt c2; remove vdb-fmt " RX(2, "c2")));
    assert_int_equal(meta_tree_apply(&t, a), 0);
    assert_int_equal(t.nstale, 0);
    assert_int_equal(t.nckpts, 3);
    meta_tree_free(&t);
}

/* A stale name cannot be taken by a new checkpoint on that disk; deleting
 * it folds the leftovers at once and deletes nothing. */
static void
test_stale_name(void **state)
{
    struct meta_tree t;
    fx_build(DETACHED, &t);
    struct ckpt_create_req r = { .name = "c2", .now = 2000 };
    CLEANUP_JSON json_t *a = json_array();
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_create(&t, &r, a, &e), CKPT_ERR_ALREADY_EXISTS);
    assert_non_null(strstr(e.msg, "checkpoint-delete"));
    assert_int_equal(json_array_size(a), 0);
    struct str_vec deleted = { 0 };
    assert_int_equal(ckpt_plan_delete(&t, "c2", CKPT_DELETE_ONE, a, &deleted, &e), CKPT_OK);
    assert_int_equal(deleted.len, 0);
    assert_true(fx_actions_match(a,
        "addrec vdb-fmt ckptd1:gone:" X ":2; merge vdb-fmt c1 < c2; "
        "remove vdb-fmt c2; remove vdb-fmt " RX(2, "c2")));
    meta_tree_free(&t);
}

/* The stale checkpoint was the newest on vdb (it records): folded into
 * c1, which records again when no new checkpoint is made on vdb. */
static void
test_fold_newest_stale_records_again(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", MEM("c1", RX(1, "c1"), FX_REC), FX_BM("ckptd1:gone:" X ":2", 0, 0)),
        FX_DISK("vdb", MEM("c1", RX(1, "c1"), 0), MEM("c2", RX(2, "c2"), FX_REC))), &t);
    const char *disks[] = { "vda" };
    struct ckpt_create_req r = { .name = "c3", .now = 2000, .disks = disks, .ndisks = 1 };
    CLEANUP_JSON json_t *a = json_array();
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_create(&t, &r, a, &e), CKPT_OK);
    assert_true(fx_actions_match(a,
        "disable vda-fmt c1; add vda-fmt c3; addrec vda-fmt ckptd1:3:2000:c3::" X "; "
        "addrec vdb-fmt ckptd1:gone:" X ":2; "
        "merge vdb-fmt c1 < c2; enable vdb-fmt c1; "
        "remove vdb-fmt c2; remove vdb-fmt " RX(2, "c2")));
    meta_tree_free(&t);
}

/* A delete adds what it deletes to the gone set on every capable disk. */
static void
test_delete_writes_gone(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(
        FX_DISK("vda", MEM("c1", RX(1, "c1"), 0), MEM("c2", RX(2, "c2"), 0),
                       MEM("c3", RX(3, "c3"), FX_REC), FX_BM("ckptd1:gone:" X ":5", 0, 0)),
        FX_DISK("vdb", MEM("c1", RX(1, "c1"), 0), MEM("c2", RX(2, "c2"), 0),
                       MEM("c3", RX(3, "c3"), FX_REC))), &t);
    CLEANUP_JSON json_t *a = json_array();
    struct str_vec deleted = { 0 };
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_delete(&t, "c2", CKPT_DELETE_ONE, a, &deleted, &e), CKPT_OK);
    assert_true(fx_actions_match(a,
        "merge vda-fmt c1 < c2; merge vdb-fmt c1 < c2; "
        "addrec vda-fmt ckptd1:gone:" X ":2,5; addrec vdb-fmt ckptd1:gone:" X ":2,5; "
        "remove vda-fmt c2; remove vda-fmt " RX(2, "c2") "; "
        "remove vdb-fmt c2; remove vdb-fmt " RX(2, "c2") "; "
        "remove vda-fmt ckptd1:gone:" X ":5"));
    str_vec_free_all(&deleted);
    /* Deleting every checkpoint keeps the gone set: a disk away now
     * cannot bring them back. */
    CLEANUP_JSON json_t *all = json_array();
    assert_int_equal(ckpt_plan_delete(&t, "c1", CKPT_DELETE_CHILDREN, all, &deleted, &e),
                     CKPT_OK);
    CLEANUP_FREE char *text = fx_render(all);
    assert_non_null(strstr(text, "addrec vda-fmt ckptd1:gone:" X ":1-3,5"));
    assert_non_null(strstr(text, "addrec vdb-fmt ckptd1:gone:" X ":1-3,5"));
    str_vec_free_all(&deleted);
    meta_tree_free(&t);
}

/* Records of an earlier ckptd are this chain's, and the first change
 * writes the id into them (a new record, the old one removed). */
static void
test_old_records_adopted(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(FX_DISK("vda", FX_BM("c1", 1, 0), FX_BM("c2", 2, FX_REC))), &t);
    assert_string_equal(t.chain, "");       /* the agent derives it */
    assert_int_equal(t.nckpts, 2);
    memcpy(t.chain, X, sizeof t.chain);
    struct ckpt_create_req r = { .name = "c3", .now = 2000 };
    CLEANUP_JSON json_t *a = json_array();
    struct ckpt_error e = { 0 };
    assert_int_equal(ckpt_plan_create(&t, &r, a, &e), CKPT_OK);
    assert_true(fx_actions_match(a,
        "disable vda-fmt c2; add vda-fmt c3; addrec vda-fmt ckptd1:3:2000:c3::" X "; "
        "addrec vda-fmt ckptd1:1:1000:c1::" X "; addrec vda-fmt ckptd1:2:1000:c2::" X "; "
        "remove vda-fmt ckptd1:1:1000:c1; remove vda-fmt ckptd1:2:1000:c2"));
    assert_int_equal(meta_tree_apply(&t, a), 0);
    assert_int_equal(t.nckpts, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(t.ckpts[i].rec.chain, X);
    meta_tree_free(&t);

    /* The derived id is the same for every reader of the same records. */
    struct meta_record o = { .name = "c1", .seq = 1, .ctime = 1000 };
    char d1[META_CHAIN_LEN + 1], d2[META_CHAIN_LEN + 1];
    meta_chain_derive(&o, d1);
    meta_chain_derive(&o, d2);
    assert_string_equal(d1, d2);
    assert_true(meta_chain_valid(d1));
}

/* A disk with an earlier ckptd's records joins a chain that has ids only
 * if one of them is a checkpoint of the chain; else it is foreign. */
static void
test_old_disk_joins_only_if_it_matches(void **state)
{
    struct meta_tree t;
    fx_build(FX_DISKS(FX_DISK("vda", MEM("c1", "ckptd1:1:1000:c1::" X, FX_REC)),
                      FX_DISK("vdb", FX_BM("c1", 1, FX_REC)),
                      FX_DISK("vdc", FX_BM("z9", 1, FX_REC))), &t);
    assert_null(t.disks[1].foreign);
    assert_non_null(t.disks[2].foreign);
    assert_string_equal(t.disks[2].foreign_chain, "");
    assert_int_equal(t.nckpts, 1);
    assert_int_equal(t.ckpts[0].nmembers, 2);
    meta_tree_free(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_with_chain_round_trips),
        cmocka_unit_test(test_old_records_still_read),
        cmocka_unit_test(test_bad_chain_is_malformed),
        cmocka_unit_test(test_max_description_with_chain),
        cmocka_unit_test(test_seqs_ranges),
        cmocka_unit_test(test_gone_round_trip),
        cmocka_unit_test(test_gone_splits_at_the_name_limit),
        cmocka_unit_test(test_foreign_disk),
        cmocka_unit_test(test_known_chain_wins),
        cmocka_unit_test(test_unwritten_chain_does_not_exclude),
        cmocka_unit_test(test_stale_not_listed),
        cmocka_unit_test(test_change_folds_stale),
        cmocka_unit_test(test_fold_newest_stale_records_again),
        cmocka_unit_test(test_stale_name),
        cmocka_unit_test(test_delete_writes_gone),
        cmocka_unit_test(test_old_records_adopted),
        cmocka_unit_test(test_old_disk_joins_only_if_it_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
