/* pull extents: block status maps to COPY/ZERO ops (nbdx_pull_plan_*). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "nbd/pull.h"

#define K 1024ull
#define DATA 0u
#define HOLE LIBNBD_STATE_HOLE
#define ZERO (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)
#define CLEAN 0u
#define DIRTY 1u

static void
assert_op(const struct nbdx_pull_op_vec *ops, size_t i, uint64_t off,
          uint64_t len, enum nbdx_pull_kind kind)
{
    assert_true(i < ops->len);
    assert_int_equal(ops->ptr[i].offset, off);
    assert_int_equal(ops->ptr[i].length, len);
    assert_int_equal(ops->ptr[i].kind, kind);
}

static void
test_full_skips_zero(void **state)
{
    struct nbdx_pull_extent a[] = { { 64 * K, DATA }, { 64 * K, ZERO },
                                    { 128 * K, DATA } };
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(0, 256 * K, a, 3, NULL, 0, &ops), 256 * K);
    assert_int_equal(ops.len, 2);
    assert_op(&ops, 0, 0, 64 * K, NBDX_PULL_COPY);
    assert_op(&ops, 1, 128 * K, 128 * K, NBDX_PULL_COPY);
    assert_int_equal(nbdx_pull_plan_bytes(&ops, NBDX_PULL_COPY), 192 * K);
    nbdx_pull_op_vec_reset(&ops);
}

/* NBD: a hole without the zero flag need not read as zeros. */
static void
test_full_copies_hole_without_zero(void **state)
{
    struct nbdx_pull_extent a[] = { { 64 * K, HOLE }, { 64 * K, DATA } };
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(0, 128 * K, a, 2, NULL, 0, &ops), 128 * K);
    assert_int_equal(ops.len, 1);
    assert_op(&ops, 0, 0, 128 * K, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

static void
test_incremental_only_dirty(void **state)
{
    struct nbdx_pull_extent a[] = { { 256 * K, DATA } };
    struct nbdx_pull_extent d[] = { { 64 * K, CLEAN }, { 64 * K, DIRTY },
                                    { 64 * K, DIRTY }, { 64 * K, CLEAN } };
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(0, 256 * K, a, 1, d, 4, &ops), 256 * K);
    assert_int_equal(ops.len, 1);
    assert_op(&ops, 0, 64 * K, 128 * K, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

/* A dirty range that now reads as zeros must be zeroed in the overlay,
 * or the older data of the backing file would show through. */
static void
test_incremental_zeroes_dirty_zero(void **state)
{
    struct nbdx_pull_extent a[] = { { 96 * K, DATA }, { 96 * K, ZERO },
                                    { 64 * K, DATA } };
    struct nbdx_pull_extent d[] = { { 64 * K, CLEAN }, { 128 * K, DIRTY },
                                    { 64 * K, CLEAN } };
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(0, 256 * K, a, 3, d, 3, &ops), 256 * K);
    assert_int_equal(ops.len, 2);
    assert_op(&ops, 0, 64 * K, 32 * K, NBDX_PULL_COPY);
    assert_op(&ops, 1, 96 * K, 96 * K, NBDX_PULL_ZERO);
    assert_int_equal(nbdx_pull_plan_bytes(&ops, NBDX_PULL_ZERO), 96 * K);
    nbdx_pull_op_vec_reset(&ops);
}

/* A server may answer a prefix; the caller asks again from there, and the
 * second answer's first op joins the first answer's last. */
static void
test_partial_answer_and_merge(void **state)
{
    struct nbdx_pull_extent a1[] = { { 128 * K, DATA } };
    struct nbdx_pull_extent d1[] = { { 64 * K, CLEAN }, { 192 * K, DIRTY } };
    struct nbdx_pull_extent a2[] = { { 128 * K, DATA } };
    struct nbdx_pull_extent d2[] = { { 64 * K, DIRTY }, { 64 * K, CLEAN } };
    struct nbdx_pull_op_vec ops = { 0 };
    uint64_t got = nbdx_pull_plan_range(1024 * K, 256 * K, a1, 1, d1, 2, &ops);

    assert_int_equal(got, 128 * K);
    got = nbdx_pull_plan_range(1024 * K + got, 128 * K, a2, 1, d2, 2, &ops);
    assert_int_equal(got, 128 * K);
    assert_int_equal(ops.len, 1);
    assert_op(&ops, 0, 1088 * K, 128 * K, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

static void
test_no_maps_copies_everything(void **state)
{
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(512, 4096, NULL, 0, NULL, 0, &ops), 4096);
    assert_int_equal(ops.len, 1);
    assert_op(&ops, 0, 512, 4096, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

/* Zero-length descriptors are skipped; one past the end is clamped. */
static void
test_odd_descriptors(void **state)
{
    struct nbdx_pull_extent a[] = { { 0, ZERO }, { 64 * K, DATA }, { 0, DATA },
                                    { 1024 * K, DATA } };
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(0, 128 * K, a, 4, NULL, 0, &ops), 128 * K);
    assert_int_equal(ops.len, 1);
    assert_op(&ops, 0, 0, 128 * K, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

/* No descriptors at all covers nothing: the caller reports it. */
static void
test_empty_answer_covers_nothing(void **state)
{
    struct nbdx_pull_extent d[] = { { 64 * K, DIRTY } };
    struct nbdx_pull_op_vec ops = { 0 };

    assert_int_equal(nbdx_pull_plan_range(0, 64 * K, NULL, 0, d, 0, &ops), 0);
    assert_int_equal(nbdx_pull_plan_range(0, 64 * K, d, 0, NULL, 0, &ops), 0);
    assert_int_equal(ops.len, 0);
}

/* Aligned for a qcow2 writer: copies widen, zeros narrow, partial zero
 * clusters become copies, a copy wins a shared cluster. */
static void
test_align_widens_copies_narrows_zeros(void **state)
{
    struct nbdx_pull_op in[] = {
        { 4 * K, 8 * K, NBDX_PULL_COPY },           /* -> [0, 64K) */
        { 70 * K, 200 * K, NBDX_PULL_ZERO },        /* [64K,128K) copy, [128K,256K) zero, [256K,320K) copy */
        { 270 * K, 2 * K, NBDX_PULL_COPY },         /* inside the copy before */
        { 320 * K, 64 * K, NBDX_PULL_ZERO },        /* aligned: stays */
        { 400 * K, 10 * K, NBDX_PULL_ZERO },        /* inside one cluster: a copy */
    };
    struct nbdx_pull_op_vec v = { in, ARRAY_SIZE(in), ARRAY_SIZE(in) };
    struct nbdx_pull_op_vec ops = { 0 };

    nbdx_pull_plan_align(&v, 64 * K, 1024 * K, &ops);
    assert_int_equal(ops.len, 5);
    assert_op(&ops, 0, 0, 128 * K, NBDX_PULL_COPY);
    assert_op(&ops, 1, 128 * K, 128 * K, NBDX_PULL_ZERO);
    assert_op(&ops, 2, 256 * K, 64 * K, NBDX_PULL_COPY);
    assert_op(&ops, 3, 320 * K, 64 * K, NBDX_PULL_ZERO);
    assert_op(&ops, 4, 384 * K, 64 * K, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

/* Two ops sharing a cluster: the copy takes it from the zero, and the
 * disk's (unaligned) end is a boundary of its own. */
static void
test_align_shared_cluster_and_end(void **state)
{
    struct nbdx_pull_op in[] = {
        { 0, 10 * K, NBDX_PULL_COPY },
        { 10 * K, 182 * K, NBDX_PULL_ZERO },        /* [64K,192K) zero */
        { 192 * K + 512, 512, NBDX_PULL_COPY },
        { 260 * K, 40 * K, NBDX_PULL_ZERO },        /* to the end: [256K,300K) */
    };
    struct nbdx_pull_op_vec v = { in, ARRAY_SIZE(in), ARRAY_SIZE(in) };
    struct nbdx_pull_op_vec ops = { 0 };

    nbdx_pull_plan_align(&v, 64 * K, 300 * K, &ops);
    assert_int_equal(ops.len, 3);
    assert_op(&ops, 0, 0, 64 * K, NBDX_PULL_COPY);
    assert_op(&ops, 1, 64 * K, 128 * K, NBDX_PULL_ZERO);
    assert_op(&ops, 2, 192 * K, 108 * K, NBDX_PULL_COPY);
    nbdx_pull_op_vec_reset(&ops);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_skips_zero),
        cmocka_unit_test(test_full_copies_hole_without_zero),
        cmocka_unit_test(test_incremental_only_dirty),
        cmocka_unit_test(test_incremental_zeroes_dirty_zero),
        cmocka_unit_test(test_partial_answer_and_merge),
        cmocka_unit_test(test_no_maps_copies_everything),
        cmocka_unit_test(test_odd_descriptors),
        cmocka_unit_test(test_empty_answer_covers_nothing),
        cmocka_unit_test(test_align_widens_copies_narrows_zeros),
        cmocka_unit_test(test_align_shared_cluster_and_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
