/* qcow2-out: images written by nbdx_qcow2_out_* are real qcow2 images.
 * Each case writes one, then asks qemu-img check for a clean image,
 * qemu-io for the bytes and sha256sum for the checksum the writer gave
 * (real qcow2 files, real QEMU tools; no mock). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "nbd/pull.h"

#define K 1024ull
#define M (1024 * K)
#define CL NBDX_QCOW2_CLUSTER

static char dir[] = "/tmp/ckptd-qcow2-out-XXXXXX";

static int __attribute__((format(printf, 1, 2)))
sh(const char *fmt, ...)
{
    va_list ap;
    char cmd[2048];

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* qemu-io reads [off, off+len) of img and expects every byte to be pat. */
static void
assert_bytes(const char *img, uint64_t off, uint64_t len, int pat)
{
    int r = sh("qemu-io -f qcow2 -r -c 'read -q -P 0x%02x %llu %llu' %s 2>&1 |"
               " grep -q 'Pattern verification failed' && exit 1 || exit 0",
               pat, (unsigned long long) off, (unsigned long long) len, img);
    assert_int_equal(r, 0);
}

static void
assert_clean(const char *img)
{
    assert_int_equal(sh("qemu-img check -q -f qcow2 %s", img), 0);
}

/* What the writer computed is what sha256sum reads from the file. */
static void
assert_sha256(const char *img, const char *sum)
{
    assert_int_equal(strlen(sum), 64);
    assert_int_equal(sh("test \"$(sha256sum %s | cut -d' ' -f1)\" = %s", img, sum), 0);
}

static char *
fill(size_t len, int pat)
{
    char *b = xmalloc(len);
    memset(b, pat, len);
    return b;
}

/* A write and, as the engine does it for every write that succeeded,
 * its share of the checksum. */
static int
put(struct nbdx_qcow2_out *q, const void *buf, uint64_t off, uint64_t len,
    uint64_t *zeros, char *err, size_t errlen)
{
    int r = nbdx_qcow2_out_write(q, buf, off, len, zeros, err, errlen);

    if (r == 0)
        nbdx_qcow2_out_hash(q, buf, len);
    return r;
}

/* A plan: (offset, length, kind) triples, ended by a zero length. */
static void
plan(struct nbdx_pull_op_vec *ops, ...)
{
    va_list ap;

    va_start(ap, ops);
    for (;;) {
        uint64_t off = va_arg(ap, uint64_t), len = va_arg(ap, uint64_t);
        if (!len)
            break;
        nbdx_pull_op_vec_append(ops, (struct nbdx_pull_op) {
            .offset = off, .length = len, .kind = va_arg(ap, int) });
    }
    va_end(ap);
}
#define COPY(o, l) (uint64_t) (o), (uint64_t) (l), NBDX_PULL_COPY
#define ZERO(o, l) (uint64_t) (o), (uint64_t) (l), NBDX_PULL_ZERO
#define END (uint64_t) 0, (uint64_t) 0

/* A full image: data out of order, zero clusters left unallocated, data
 * across an L2 table boundary (512 MiB), a short last cluster. */
static void
test_full(void **state)
{
    CLEANUP_FREE char *img = xasprintf("%s/full.qcow2", dir);
    CLEANUP_FREE char *a = fill(2 * CL, 0xa1);
    CLEANUP_FREE char *z = fill(CL, 0);
    CLEANUP_FREE char *t = fill(512, 0x7e);
    uint64_t size = 1024 * M + 512, zeros = 0;
    struct nbdx_pull_op_vec ops = { 0 };
    struct nbdx_qcow2_out *q;
    char err[256], sum[65];

    plan(&ops, COPY(0, CL), COPY(4 * CL, CL), COPY(512 * M - CL, 2 * CL),
         COPY(1024 * M, 512), END);
    assert_int_equal(nbdx_qcow2_out_open(img, size, NULL, &ops, &q, err, sizeof err), 0);
    nbdx_pull_op_vec_reset(&ops);
    assert_int_equal(put(q, a, 512 * M - CL, 2 * CL, &zeros,
                                          err, sizeof err), 0);
    assert_int_equal(put(q, a, 0, CL, &zeros, err, sizeof err), 0);
    assert_int_equal(put(q, z, 4 * CL, CL, &zeros, err, sizeof err), 0);
    assert_int_equal(put(q, t, 1024 * M, 512, &zeros,
                                          err, sizeof err), 0);
    /* Twice the same cluster, and a write not on a cluster boundary. */
    assert_int_not_equal(put(q, a, 0, CL, &zeros, err, sizeof err), 0);
    assert_int_not_equal(put(q, a, 512, CL, &zeros, err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_finish(q, sum, err, sizeof err), 0);
    nbdx_qcow2_out_free(q);
    assert_int_equal(zeros, CL);

    assert_clean(img);
    assert_sha256(img, sum);
    assert_bytes(img, 0, CL, 0xa1);
    assert_bytes(img, CL, 512 * M - 2 * CL, 0);
    assert_bytes(img, 512 * M - CL, 2 * CL, 0xa1);
    assert_bytes(img, 512 * M + CL, 512 * M - CL, 0);
    assert_bytes(img, 1024 * M, 512, 0x7e);
    /* Header, L1, refcount table, 5 data clusters planned (the zero one
     * a hole), 3 L2 tables, a refcount block; 11 stored. */
    assert_int_equal(sh("test $(stat -c %%s %s) -eq %llu", img,
                        (unsigned long long) (12 * CL)), 0);
    assert_int_equal(sh("test $(du -k %s | cut -f1) -le %llu", img,
                        (unsigned long long) (11 * CL / 1024)), 0);
}

/* Data, a zero cluster, data, in one request: the zero cluster is not
 * stored and each data cluster keeps its own bytes. */
static void
test_zero_between(void **state)
{
    CLEANUP_FREE char *img = xasprintf("%s/between.qcow2", dir);
    CLEANUP_FREE char *b = fill(4 * CL, 0);
    uint64_t zeros = 0;
    struct nbdx_pull_op_vec ops = { 0 };
    struct nbdx_qcow2_out *q;
    char err[256], sum[65];

    memset(b, 0x11, CL);
    memset(b + 2 * CL, 0x33, CL);
    memset(b + 3 * CL, 0x44, CL);
    plan(&ops, COPY(CL, 4 * CL), END);
    assert_int_equal(nbdx_qcow2_out_open(img, 1 * M, NULL, &ops, &q, err, sizeof err), 0);
    nbdx_pull_op_vec_reset(&ops);
    assert_int_equal(put(q, b, CL, 4 * CL, &zeros, err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_finish(q, sum, err, sizeof err), 0);
    nbdx_qcow2_out_free(q);
    assert_int_equal(zeros, CL);

    assert_clean(img);
    assert_sha256(img, sum);
    assert_bytes(img, 0, CL, 0);
    assert_bytes(img, CL, CL, 0x11);
    assert_bytes(img, 2 * CL, CL, 0);
    assert_bytes(img, 3 * CL, CL, 0x33);
    assert_bytes(img, 4 * CL, CL, 0x44);
    assert_bytes(img, 5 * CL, 1 * M - 5 * CL, 0);
}

/* Only what the plan copies may be stored, no more data clusters than
 * it has, and every write must reach the checksum. */
static void
test_outside_plan(void **state)
{
    CLEANUP_FREE char *img = xasprintf("%s/outside.qcow2", dir);
    CLEANUP_FREE char *a = fill(2 * CL, 0xa1);
    uint64_t zeros = 0;
    struct nbdx_pull_op_vec ops = { 0 };
    struct nbdx_qcow2_out *q;
    char err[256], sum[65];

    plan(&ops, COPY(0, CL), ZERO(CL, CL), END);
    assert_int_equal(nbdx_qcow2_out_open(img, 1024 * M, NULL, &ops, &q,
                                         err, sizeof err), 0);
    nbdx_pull_op_vec_reset(&ops);
    /* Another L2 table's range, then a second data cluster in the first. */
    assert_int_not_equal(put(q, a, 512 * M, CL, &zeros,
                                              err, sizeof err), 0);
    assert_non_null(strstr(err, "outside the plan"));
    assert_int_equal(put(q, a, 0, CL, &zeros, err, sizeof err), 0);
    assert_int_not_equal(put(q, a, 2 * CL, CL, &zeros,
                                              err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_zero(q, CL, CL, err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_finish(q, sum, err, sizeof err), 0);
    nbdx_qcow2_out_free(q);
    assert_clean(img);
    assert_sha256(img, sum);
    assert_bytes(img, 0, CL, 0xa1);
    assert_bytes(img, CL, 1024 * M - CL, 0);
    /* A write whose checksum share never came: finish says so. */
    plan(&ops, COPY(0, CL), END);
    unlink(img);
    assert_int_equal(nbdx_qcow2_out_open(img, 1 * M, NULL, &ops, &q, err, sizeof err), 0);
    nbdx_pull_op_vec_reset(&ops);
    assert_int_equal(nbdx_qcow2_out_write(q, a, 0, CL, &zeros, err, sizeof err), 0);
    assert_int_not_equal(nbdx_qcow2_out_finish(q, sum, err, sizeof err), 0);
    assert_non_null(strstr(err, "checksum"));
    nbdx_qcow2_out_free(q);
    /* A plan past the disk's end. */
    plan(&ops, COPY(0, 2 * M), END);
    assert_int_not_equal(nbdx_qcow2_out_open(img, 1 * M, NULL, &ops, &q,
                                             err, sizeof err), 0);
    nbdx_pull_op_vec_reset(&ops);
}

/* An overlay: zero clusters (written and zeroed) hide the backing file's
 * data, untouched clusters show it, and the header names the backing
 * file as qemu-img create -F qcow2 -b does. */
static void
test_overlay(void **state)
{
    CLEANUP_FREE char *base = xasprintf("%s/base.qcow2", dir);
    CLEANUP_FREE char *top = xasprintf("%s/top.qcow2", dir);
    CLEANUP_FREE char *b = fill(CL, 0xb2);
    CLEANUP_FREE char *z = fill(CL, 0);
    uint64_t zeros = 0;
    struct nbdx_pull_op_vec ops = { 0 };
    struct nbdx_qcow2_out *q;
    char err[256], sum[65];

    assert_int_equal(sh("qemu-img create -q -f qcow2 %s 8M && qemu-io -f qcow2"
                        " -c 'write -q -P 0x5a 0 8M' %s", base, base), 0);
    plan(&ops, COPY(2 * CL, CL), COPY(5 * CL, CL), ZERO(1 * M, 1 * M), END);
    assert_int_equal(nbdx_qcow2_out_open(top, 8 * M, "base.qcow2", &ops, &q,
                                         err, sizeof err), 0);
    nbdx_pull_op_vec_reset(&ops);
    assert_int_equal(put(q, b, 2 * CL, CL, &zeros, err, sizeof err), 0);
    assert_int_equal(put(q, z, 5 * CL, CL, &zeros, err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_zero(q, 1 * M, 1 * M, err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_finish(q, sum, err, sizeof err), 0);
    nbdx_qcow2_out_free(q);

    assert_clean(top);
    assert_sha256(top, sum);
    assert_int_equal(sh("qemu-img info %s | grep -q '^backing file: base.qcow2 '"
                        " && qemu-img info %s | grep -q '^backing file format: qcow2$'",
                        top, top), 0);
    assert_bytes(top, 0, 2 * CL, 0x5a);
    assert_bytes(top, 2 * CL, CL, 0xb2);
    assert_bytes(top, 3 * CL, 2 * CL, 0x5a);
    assert_bytes(top, 5 * CL, CL, 0);
    assert_bytes(top, 6 * CL, 1 * M - 6 * CL, 0x5a);
    assert_bytes(top, 1 * M, 1 * M, 0);
    assert_bytes(top, 2 * M, 6 * M, 0x5a);
}

/* Nothing written: a valid, empty image that reads as zeros. */
static void
test_empty(void **state)
{
    CLEANUP_FREE char *img = xasprintf("%s/empty.qcow2", dir);
    struct nbdx_pull_op_vec ops = { 0 };
    struct nbdx_qcow2_out *q;
    char err[256], sum[65];

    assert_int_equal(nbdx_qcow2_out_open(img, 3 * M, NULL, &ops, &q, err, sizeof err), 0);
    assert_int_equal(nbdx_qcow2_out_finish(q, sum, err, sizeof err), 0);
    nbdx_qcow2_out_free(q);
    assert_clean(img);
    assert_sha256(img, sum);
    assert_bytes(img, 0, 3 * M, 0);
}

static int
setup(void **state)
{
    return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
    return sh("rm -rf %s", dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_zero_between),
        cmocka_unit_test(test_outside_plan),
        cmocka_unit_test(test_overlay),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
