/* qmp_stream: splitting a byte stream into JSON messages, caps, resync. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/common.h"
#include "qmp/qmp.h"

#define MAX_RESULTS 16

/* Everything qmp_stream_next returned until NEED_MORE, across feeds. */
struct results {
    size_t n;
    enum qmp_stream_result r[MAX_RESULTS];
    json_t *msg[MAX_RESULTS];
    char err[MAX_RESULTS][256];
};

static void
results_free(struct results *res)
{
    for (size_t i = 0; i < res->n; i++)
        json_decref(res->msg[i]);
    res->n = 0;
}

static void
drain(struct qmp_stream *s, struct results *res)
{
    for (;;) {
        json_t *msg;
        char err[256];
        enum qmp_stream_result r = qmp_stream_next(s, &msg, err, sizeof err);
        if (r == QMP_STREAM_NEED_MORE) {
            assert_null(msg);
            return;
        }
        assert_true(res->n < MAX_RESULTS);
        res->r[res->n] = r;
        res->msg[res->n] = msg;
        strcpy(res->err[res->n], err);
        if (r == QMP_STREAM_MESSAGE)
            assert_non_null(msg);
        else
            assert_true(msg == NULL && err[0] != '\0');
        res->n++;
    }
}

static void
feed(struct qmp_stream *s, struct results *res, const char *data, size_t len)
{
    qmp_stream_feed(s, data, len);
    drain(s, res);
}

static void
feed_str(struct qmp_stream *s, struct results *res, const char *str)
{
    feed(s, res, str, strlen(str));
}

static void
assert_msg(struct results *res, size_t i, const char *expect_json)
{
    assert_true(i < res->n);
    assert_int_equal(res->r[i], QMP_STREAM_MESSAGE);
    json_t *expect = json_loads(expect_json, 0, NULL);
    assert_non_null(expect);
    assert_true(json_equal(res->msg[i], expect));
    json_decref(expect);
}

static const char two_msgs[] =
    "{\"execute\": \"a\", \"arguments\": {\"s\": \"x}{\\\"y]\"}}\n"
    "{\"b\": [1, 2, {\"c\": 3}], \"d\": \"\\\\\"}";
static const char two_msgs_1[] =
    "{\"execute\": \"a\", \"arguments\": {\"s\": \"x}{\\\"y]\"}}";
static const char two_msgs_2[] = "{\"b\": [1, 2, {\"c\": 3}], \"d\": \"\\\\\"}";

static void
test_split_every_boundary(void **state)
{
    size_t len = strlen(two_msgs);
    for (size_t i = 0; i <= len; i++) {
        struct qmp_stream s;
        struct results res = { 0 };
        qmp_stream_init(&s, 4096, 64);
        feed(&s, &res, two_msgs, i);
        feed(&s, &res, two_msgs + i, len - i);
        assert_int_equal(res.n, 2);
        assert_msg(&res, 0, two_msgs_1);
        assert_msg(&res, 1, two_msgs_2);
        results_free(&res);
        qmp_stream_free(&s);
    }
}

static void
test_byte_by_byte(void **state)
{
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    for (size_t i = 0; two_msgs[i]; i++) {
        feed(&s, &res, &two_msgs[i], 1);
        assert_true(res.n <= 2);
    }
    assert_int_equal(res.n, 2);
    assert_msg(&res, 0, two_msgs_1);
    assert_msg(&res, 1, two_msgs_2);
    results_free(&res);
    qmp_stream_free(&s);
}

static void
test_several_per_feed(void **state)
{
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    feed_str(&s, &res, "{\"a\":1}{\"b\":2} \t{\"c\":3}\r\n[4]\n{\n  \"d\":\n"
                       "  [\n 5\n ]\n}\n{\"e\"");
    assert_int_equal(res.n, 5);
    assert_msg(&res, 0, "{\"a\":1}");
    assert_msg(&res, 1, "{\"b\":2}");
    assert_msg(&res, 2, "{\"c\":3}");
    assert_msg(&res, 3, "[4]");
    assert_msg(&res, 4, "{\"d\":[5]}");
    feed_str(&s, &res, ":6}");
    assert_int_equal(res.n, 6);
    assert_msg(&res, 5, "{\"e\":6}");
    results_free(&res);
    qmp_stream_free(&s);
}

static void
test_garbage_then_valid(void **state)
{
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    /* Garbage is reported once, even when it spans feeds, and skipped to
     * the end of its line. */
    feed_str(&s, &res, "hello {\"x\": 1} ");
    feed_str(&s, &res, "world }]\n{\"a\":1}\n");
    assert_int_equal(res.n, 2);
    assert_int_equal(res.r[0], QMP_STREAM_BAD_JSON);
    assert_msg(&res, 1, "{\"a\":1}");
    /* Stray closers and top-level scalars are garbage too. */
    results_free(&res);
    feed_str(&s, &res, "}\n\"str\"\n42\n{\"b\":2}");
    assert_int_equal(res.n, 4);
    assert_int_equal(res.r[0], QMP_STREAM_BAD_JSON);
    assert_int_equal(res.r[1], QMP_STREAM_BAD_JSON);
    assert_int_equal(res.r[2], QMP_STREAM_BAD_JSON);
    assert_msg(&res, 3, "{\"b\":2}");
    results_free(&res);
    qmp_stream_free(&s);
}

static void
test_invalid_then_valid(void **state)
{
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    feed_str(&s, &res, "{\"a\":}{\"a\" 1}\n{\"a\":[1,]}{\"a\"]{\"ok\":1}");
    assert_int_equal(res.n, 5);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(res.r[i], QMP_STREAM_BAD_JSON);
        assert_true(strlen(res.err[i]) > 0);
    }
    assert_msg(&res, 4, "{\"ok\":1}");
    results_free(&res);
    qmp_stream_free(&s);
}

/* A message of exactly max_msg bytes passes; one byte more does not. */
static void
test_size_limit_exact(void **state)
{
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 16, 64);
    feed_str(&s, &res, "{\"a\":\"123456789\"}");   /* 17 bytes */
    feed_str(&s, &res, "{\"a\":\"12345678\"}");    /* 16 bytes */
    assert_int_equal(res.n, 2);
    assert_int_equal(res.r[0], QMP_STREAM_TOO_BIG);
    assert_msg(&res, 1, "{\"a\":\"12345678\"}");
    results_free(&res);
    qmp_stream_free(&s);
}

static void
test_too_big_then_valid(void **state)
{
    enum { MAX = 1024, CHUNK = 1000, CHUNKS = 1000 };
    struct qmp_stream s;
    struct results res = { 0 };
    char chunk[CHUNK];

    qmp_stream_init(&s, MAX, 64);
    /* Braces inside the huge string must not end the skip early. */
    memset(chunk, 'x', sizeof chunk);
    memcpy(chunk + 10, "}]{[\\\"", 6);
    feed_str(&s, &res, "{\"a\": [\"");
    for (int i = 0; i < CHUNKS; i++) {
        feed(&s, &res, chunk, sizeof chunk);
        /* Bounded: at most max_msg plus one feed, never the whole 1 MB. */
        assert_true(s.len <= MAX + CHUNK);
        assert_true(s.cap <= 4096 + 2 * (MAX + CHUNK));
    }
    assert_int_equal(res.n, 1);
    assert_int_equal(res.r[0], QMP_STREAM_TOO_BIG);
    feed_str(&s, &res, "\"]}\n{\"ok\": 1}\n");
    assert_int_equal(res.n, 2);
    assert_msg(&res, 1, "{\"ok\": 1}");
    assert_int_equal(s.len, 0);
    results_free(&res);
    qmp_stream_free(&s);
}

static void
test_too_deep_then_valid(void **state)
{
    enum { N = 100000 };
    struct qmp_stream s;
    struct results res = { 0 };
    char *open = xmalloc(N), *close = xmalloc(N);

    memset(open, '[', N);
    memset(close, ']', N);
    qmp_stream_init(&s, 1 << 20, 64);
    feed(&s, &res, open, N);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.r[0], QMP_STREAM_TOO_DEEP);
    assert_true(s.len < 1000);
    feed(&s, &res, close, N);
    feed_str(&s, &res, "{\"ok\": [[[1]]]}");
    assert_int_equal(res.n, 2);
    assert_msg(&res, 1, "{\"ok\": [[[1]]]}");
    results_free(&res);

    /* Exactly max_depth is fine. */
    qmp_stream_free(&s);
    qmp_stream_init(&s, 1 << 20, 3);
    feed_str(&s, &res, "[[[1]]][[[[1]]]]{\"a\":{\"b\":{}}}");
    assert_int_equal(res.n, 3);
    assert_msg(&res, 0, "[[[1]]]");
    assert_int_equal(res.r[1], QMP_STREAM_TOO_DEEP);
    assert_msg(&res, 2, "{\"a\":{\"b\":{}}}");
    results_free(&res);
    qmp_stream_free(&s);
    free(open);
    free(close);
}

static void
test_nul_bytes(void **state)
{
    static const char in[] =
        "{\"a\":\"x\0y\"}\n"         /* NUL inside a string */
        "{\"a\":\0 1}\n"             /* NUL between tokens */
        "\0\0\n"                     /* NUL at top level */
        "{\"ok\":1}";
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    feed(&s, &res, in, sizeof in - 1);
    assert_int_equal(res.n, 4);
    assert_int_equal(res.r[0], QMP_STREAM_BAD_JSON);
    assert_int_equal(res.r[1], QMP_STREAM_BAD_JSON);
    assert_int_equal(res.r[2], QMP_STREAM_BAD_JSON);
    assert_msg(&res, 3, "{\"ok\":1}");
    results_free(&res);
    qmp_stream_free(&s);
}

static void
test_strings_with_brackets(void **state)
{
    static const char in[] =
        "{\"a\": \"}}]]\\\"{{[\", \"b\": \"\\\\\", \"c\": \"\\\\\\\"}\"}";
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    feed_str(&s, &res, in);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.r[0], QMP_STREAM_MESSAGE);
    assert_string_equal(json_string_value(json_object_get(res.msg[0], "a")),
                        "}}]]\"{{[");
    assert_string_equal(json_string_value(json_object_get(res.msg[0], "b")),
                        "\\");
    assert_string_equal(json_string_value(json_object_get(res.msg[0], "c")),
                        "\\\"}");
    results_free(&res);
    qmp_stream_free(&s);
}

/* Consumed bytes do not pile up over a long-lived stream. */
static void
test_compaction(void **state)
{
    struct qmp_stream s;
    struct results res = { 0 };
    qmp_stream_init(&s, 4096, 64);
    for (int i = 0; i < 10000; i++) {
        feed_str(&s, &res, "{\"execute\": \"query-status\"}\n{\"a\"");
        feed_str(&s, &res, ": 1}\n");
        assert_int_equal(res.n, 2);
        results_free(&res);
        assert_true(s.len < 64);
    }
    assert_true(s.cap <= 4096);
    qmp_stream_free(&s);
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_every_boundary),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_several_per_feed),
        cmocka_unit_test(test_garbage_then_valid),
        cmocka_unit_test(test_invalid_then_valid),
        cmocka_unit_test(test_size_limit_exact),
        cmocka_unit_test(test_too_big_then_valid),
        cmocka_unit_test(test_too_deep_then_valid),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_strings_with_brackets),
        cmocka_unit_test(test_compaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
