/* metadata: record bitmap names (encode/decode), ownership, checkpoint names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>

#include "common/common.h"
#include "metadata/metadata.h"

/* Encodes r, decodes the result and checks every field came back. */
static void
round_trip(const struct meta_record *r, const char *expected_bitmap)
{
    struct ckpt_error e = { 0 };
    char *bitmap = meta_record_encode(r, &e);
    assert_non_null(bitmap);
    if (expected_bitmap)
        assert_string_equal(bitmap, expected_bitmap);
    assert_true(strlen(bitmap) <= META_BITMAP_NAME_MAX);
    assert_true(meta_bitmap_is_ours(bitmap));

    struct meta_record out;
    int rc = meta_record_decode(bitmap, &out);
    if (rc != 1) {
        print_error("encode wrote \"%s\" but decode returns %d\n", bitmap, rc);
        free(bitmap);
        fail();
    }
    assert_string_equal(out.name, r->name);
    assert_true(out.seq == r->seq);
    assert_true(out.ctime == r->ctime);
    if (r->description && *r->description)
        assert_string_equal(out.description, r->description);
    else
        assert_null(out.description);
    meta_record_clear(&out);
    assert_null(out.name);
    free(bitmap);
}

static void
test_round_trip_no_description(void **state)
{
    struct meta_record r = { .name = "c1", .seq = 1, .ctime = 1795372508 };
    round_trip(&r, "ckptd1:1:1795372508:c1");
}

static void
test_round_trip_empty_description_is_none(void **state)
{
    struct meta_record r = { .name = "c1", .seq = 3, .ctime = 7, .description = "" };
    round_trip(&r, "ckptd1:3:7:c1");
}

static void
test_round_trip_description(void **state)
{
    /* "nightly" in base64url, no padding. */
    struct meta_record r = { .name = "c2", .seq = 2, .ctime = 0, .description = "nightly" };
    round_trip(&r, "ckptd1:2:0:c2:bmlnaHRseQ");
}

static void
test_round_trip_description_all_tail_lengths(void **state)
{
    /* 1, 2 and 3 bytes in the last group. */
    const char *descs[] = { "a", "ab", "abc", "abcd", "abcde", "abcdef" };
    for (size_t i = 0; i < ARRAY_SIZE(descs); i++) {
        struct meta_record r = { .name = "c", .seq = 9, .ctime = 9,
                                 .description = (char *) descs[i] };
        round_trip(&r, NULL);
    }
}

static void
test_round_trip_utf8_description(void **state)
{
    struct meta_record r = { .name = "weekly-1", .seq = 42, .ctime = 1700000000,
                             .description = "sauvegarde hebdo \xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x92\xbe" };
    round_trip(&r, NULL);
}

static void
test_round_trip_description_with_colons(void **state)
{
    struct meta_record r = { .name = "c1", .seq = 5, .ctime = 5,
                             .description = "a:b::c: ckptd1:1:1:x" };
    round_trip(&r, NULL);
}

static void
test_round_trip_binaryish_description(void **state)
{
    char desc[256];
    for (int i = 1; i < 256; i++)
        desc[i - 1] = (char) i;         /* every byte but NUL */
    desc[255] = '\0';
    struct meta_record r = { .name = "c1", .seq = 1, .ctime = 1, .description = desc };
    round_trip(&r, NULL);
}

static void
test_round_trip_base64url_alphabet(void **state)
{
    /* Bytes whose encoding uses '-' and '_' (62 and 63). */
    struct meta_record r = { .name = "c1", .seq = 1, .ctime = 1,
                             .description = "\xfb\xff\xbf" };
    round_trip(&r, "ckptd1:1:1:c1:-_-_");
}

static void
test_round_trip_longest_name(void **state)
{
    char name[META_NAME_MAX + 1];
    memset(name, 'n', META_NAME_MAX);
    name[META_NAME_MAX] = '\0';
    struct meta_record r = { .name = name, .seq = 12345, .ctime = 67890,
                             .description = "d" };
    round_trip(&r, NULL);
}

static void
test_round_trip_large_numbers(void **state)
{
    struct meta_record r = { .name = "c1", .seq = 4294967296u * 1000, .ctime = INT64_MAX };
    round_trip(&r, "ckptd1:4294967296000:9223372036854775807:c1");
}

/* The worst case the length limit is computed for: a 20-digit sequence
 * number.  Every seq the encoder writes must decode again. */
static void
test_round_trip_largest_seq(void **state)
{
    struct meta_record r = { .name = "c1", .seq = UINT64_MAX, .ctime = 1 };
    round_trip(&r, "ckptd1:18446744073709551615:1:c1");
}

/* ctime is signed and the length limit reserves 20 characters for it (a
 * sign): whatever the encoder writes, the decoder must read back, or the
 * checkpoint silently disappears from the tree. */
static void
test_negative_ctime_refused_or_round_trips(void **state)
{
    struct meta_record r = { .name = "c1", .seq = 1, .ctime = -5 };
    struct ckpt_error e = { 0 };
    char *bitmap = meta_record_encode(&r, &e);
    if (!bitmap) {
        assert_int_equal(e.code, CKPT_ERR_INVALID_PARAMETER);
        return;
    }
    struct meta_record out;
    int rc = meta_record_decode(bitmap, &out);
    if (rc != 1) {
        print_error("encode wrote \"%s\" but decode returns %d\n", bitmap, rc);
        free(bitmap);
        fail();
    }
    assert_true(out.ctime == -5);
    meta_record_clear(&out);
    free(bitmap);
}

/* A description of n bytes, every byte 'x'. */
static char *
desc_of(size_t n)
{
    char *d = xmalloc(n + 1);
    memset(d, 'x', n);
    d[n] = '\0';
    return d;
}

static void
check_max_description(const char *name)
{
    size_t max = meta_record_max_description(strlen(name));
    assert_true(max > 0);
    struct ckpt_error e = { 0 };

    /* Exactly the maximum fits, even with the longest numbers. */
    char *desc = desc_of(max);
    struct meta_record r = { .name = (char *) name, .seq = 10000000000000000000u,
                             .ctime = INT64_MAX, .description = desc };
    char *bitmap = meta_record_encode(&r, &e);
    assert_non_null(bitmap);
    assert_true(strlen(bitmap) <= META_BITMAP_NAME_MAX);
    struct meta_record out;
    assert_int_equal(meta_record_decode(bitmap, &out), 1);
    assert_string_equal(out.description, desc);
    meta_record_clear(&out);
    free(bitmap);
    free(desc);

    /* One byte more is refused. */
    desc = desc_of(max + 1);
    r.description = desc;
    r.seq = 1;
    r.ctime = 1;
    e.code = CKPT_OK;
    e.msg[0] = '\0';
    assert_null(meta_record_encode(&r, &e));
    assert_int_equal(e.code, CKPT_ERR_INVALID_PARAMETER);
    assert_non_null(strstr(e.msg, name));
    free(desc);
}

static void
test_max_description_short_name(void **state)
{
    check_max_description("c1");
}

static void
test_max_description_longest_name(void **state)
{
    char name[META_NAME_MAX + 1];
    memset(name, 'n', META_NAME_MAX);
    name[META_NAME_MAX] = '\0';
    check_max_description(name);
}

static void
test_max_description_shrinks_with_name(void **state)
{
    assert_true(meta_record_max_description(META_NAME_MAX) <
                meta_record_max_description(1));
    /* Lots of room either way: a few hundred bytes of description. */
    assert_true(meta_record_max_description(META_NAME_MAX) >= 500);
}

static void
test_decode_malformed(void **state)
{
    const char *bad[] = {
        "ckptd1:",
        "ckptd1:1",
        "ckptd1:1:",
        "ckptd1:1:1",
        "ckptd1:1:1:",                  /* empty name */
        "ckptd1:x:1:c",
        "ckptd1:1:x:c",
        "ckptd1::1:c",
        "ckptd1:01:1:c",                /* leading zero */
        "ckptd1:1:00:c",
        "ckptd1:-1:1:c",
        "ckptd1:1:-1:c",
        "ckptd1:+1:1:c",
        "ckptd1: 1:1:c",
        "ckptd1:1:1:.c",                /* bad names */
        "ckptd1:1:1:a b",
        "ckptd1:1:1:a/b",
        "ckptd1:1:1:\xc3\xa9",
        "ckptd1:1:1:c:!!!!",            /* bad base64 */
        "ckptd1:1:1:c:bml=",
        "ckptd1:1:1:c:bmlnaHRseQ==",
        "ckptd1:1:1:c:b",               /* 1 char: not a whole byte */
        "ckptd1:1:1:c:bmlna",
        "ckptd1:1:1:c:bm+n",            /* base64, not base64url */
        "ckptd1:1:1:c:bm/n",
        "ckptd1:1:1:c:AA",              /* decodes to NUL */
        "ckptd1:1:1:c:YQ:x",            /* a fifth field */
        "ckptd1:99999999999999999999999:1:c",  /* overflows */
        "ckptd1:1:9223372036854775808:c",      /* > INT64_MAX */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct meta_record out = { 0 };
        int r = meta_record_decode(bad[i], &out);
        if (r != -1)
            fail_msg("decode(\"%s\") = %d, expected -1", bad[i], r);
        assert_null(out.name);          /* left alone */
    }
}

static void
test_decode_zero_is_a_number(void **state)
{
    struct meta_record out;
    assert_int_equal(meta_record_decode("ckptd1:0:0:c", &out), 1);
    assert_true(out.seq == 0 && out.ctime == 0);
    meta_record_clear(&out);
}

static void
test_decode_foreign(void **state)
{
    const char *foreign[] = {
        "c1", "mybitmap", "", "ckptd", "ckptd1", "ckptd2:1:1:c", "ckptd:tmp-1",
        "CKPTD1:1:1:c", "xckptd1:1:1:c", "backup-vda",
    };
    for (size_t i = 0; i < ARRAY_SIZE(foreign); i++) {
        struct meta_record out = { 0 };
        int r = meta_record_decode(foreign[i], &out);
        if (r != 0)
            fail_msg("decode(\"%s\") = %d, expected 0", foreign[i], r);
        assert_null(out.name);
    }
}

static void
test_bitmap_is_ours(void **state)
{
    assert_true(meta_bitmap_is_ours("ckptd1:1:1:c"));
    assert_true(meta_bitmap_is_ours("ckptd1:"));
    assert_true(meta_bitmap_is_ours("ckptd:backup-1-vda"));
    assert_true(meta_bitmap_is_ours("ckptd2:future"));
    assert_true(meta_bitmap_is_ours("ckptd12:x"));

    assert_false(meta_bitmap_is_ours("c1"));
    assert_false(meta_bitmap_is_ours("mybitmap"));
    assert_false(meta_bitmap_is_ours(""));
    assert_false(meta_bitmap_is_ours("ckptd"));
    assert_false(meta_bitmap_is_ours("ckptd1"));
    assert_false(meta_bitmap_is_ours("ckptdx:1"));
    assert_false(meta_bitmap_is_ours("ckptd-backup"));
    assert_false(meta_bitmap_is_ours("xckptd1:1:1:c"));
    assert_false(meta_bitmap_is_ours("CKPTD1:1:1:c"));
}

static void
test_name_valid(void **state)
{
    const char *good[] = { "a", "c1", "-x", "_", "0", "a.b", "a.", "a..b",
                           "A-Z_a-z.0-9", "2024-01-01T00.00" };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++)
        if (!meta_name_valid(good[i]))
            fail_msg("\"%s\" should be a valid name", good[i]);
}

static void
test_name_invalid(void **state)
{
    const char *bad[] = { "", ".a", ".", "a/b", "a:b", "a b", " a", "a ",
                          "\xc3\xa9", "a\xc3\xa9", "a+b", "a\tb", "a\nb",
                          "ckptd1:1:1:c", "a@b", "a,b", "a'b", "a\"b", "a\\b" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (meta_name_valid(bad[i]))
            fail_msg("\"%s\" should be an invalid name", bad[i]);
}

static void
test_name_length(void **state)
{
    char name[META_NAME_MAX + 2];
    memset(name, 'a', sizeof name);
    name[META_NAME_MAX] = '\0';
    assert_int_equal(strlen(name), 200);
    assert_true(meta_name_valid(name));
    name[META_NAME_MAX] = 'a';
    name[META_NAME_MAX + 1] = '\0';
    assert_false(meta_name_valid(name));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_no_description),
        cmocka_unit_test(test_round_trip_empty_description_is_none),
        cmocka_unit_test(test_round_trip_description),
        cmocka_unit_test(test_round_trip_description_all_tail_lengths),
        cmocka_unit_test(test_round_trip_utf8_description),
        cmocka_unit_test(test_round_trip_description_with_colons),
        cmocka_unit_test(test_round_trip_binaryish_description),
        cmocka_unit_test(test_round_trip_base64url_alphabet),
        cmocka_unit_test(test_round_trip_longest_name),
        cmocka_unit_test(test_round_trip_large_numbers),
        cmocka_unit_test(test_round_trip_largest_seq),
        cmocka_unit_test(test_negative_ctime_refused_or_round_trips),
        cmocka_unit_test(test_max_description_short_name),
        cmocka_unit_test(test_max_description_longest_name),
        cmocka_unit_test(test_max_description_shrinks_with_name),
        cmocka_unit_test(test_decode_malformed),
        cmocka_unit_test(test_decode_zero_is_a_number),
        cmocka_unit_test(test_decode_foreign),
        cmocka_unit_test(test_bitmap_is_ours),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_name_invalid),
        cmocka_unit_test(test_name_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
