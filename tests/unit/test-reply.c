/* One reply per request, and texts that always encode (issue 11 bug 2):
 * the reply path of the agent over a socketpair client, the UTF-8
 * helpers, and JSON log lines holding bytes that are not UTF-8. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/agent.h"

struct fixture {
    struct agent a;
    int peer;               /* the client's end */
    struct client *c;
};

static int
setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    int sv[2];
    f->a.loop = ev_loop_new(EVFLAG_AUTO);
    f->a.listen_fd = -1;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                0, sv), 0);
    f->peer = sv[1];
    f->c = ctl_add_client(&f->a, sv[0], 0);
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    ctl_drop(f->c, "test done");
    ctl_reap(&f->a);
    close(f->peer);
    ev_loop_destroy(f->a.loop);
    free(f);
    return 0;
}

/* Every line the agent wrote so far, parsed (NUL allowed). */
static json_t *
read_lines(struct fixture *f)
{
    static char buf[1 << 16];
    ssize_t n = read(f->peer, buf, sizeof buf - 1);
    json_t *lines = json_array();
    if (n <= 0)
        return lines;
    buf[n] = '\0';
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_t *j = json_loadb(p, (size_t) (nl - p), JSON_ALLOW_NUL, NULL);
        assert_non_null(j);
        json_array_append_new(lines, j);
        p = nl + 1;
    }
    return lines;
}

static struct request *
new_request(struct fixture *f, const char *cmd, json_int_t id)
{
    struct request *req = xcalloc(1, sizeof *req);
    req->agent = &f->a;
    req->client = f->c;
    req->cmd = dispatch_find(cmd);
    assert_non_null(req->cmd);
    req->id = json_integer(id);
    req->args = json_object();
    f->c->current = req;
    return req;
}

/* The one reply after the greeting. */
static json_t *
one_reply(struct fixture *f, bool skip_greeting)
{
    CLEANUP_JSON json_t *lines = read_lines(f);
    size_t first = skip_greeting ? 1 : 0;
    assert_int_equal(json_array_size(lines), first + 1);
    if (skip_greeting)
        assert_non_null(json_object_get(json_array_get(lines, 0), "QMP"));
    return json_incref(json_array_get(lines, first));
}

static void
test_null_value_is_an_error(void **state)
{
    struct fixture *f = *state;
    json_t *none = NULL;        /* a value the command failed to build */
    req_reply(new_request(f, "query-version", 7), none);
    CLEANUP_JSON json_t *r = one_reply(f, true);
    assert_null(json_object_get(r, "return"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"),
                                                          "class")), "GenericError");
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
}

static void
test_empty_reply(void **state)
{
    struct fixture *f = *state;
    req_reply_ok(new_request(f, "query-version", 8));
    CLEANUP_JSON json_t *r = one_reply(f, true);
    json_t *ret = json_object_get(r, "return");
    assert_true(json_is_object(ret) && json_object_size(ret) == 0);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 8);
}

/* Texts cut at every byte count, around two- three- and four-byte
 * characters: always one reply, always valid UTF-8, never too long. */
static void
test_error_cut_anywhere(void **state)
{
    struct fixture *f = *state;
    json_decref(read_lines(f));         /* the greeting */
    static const char *const chars[] = { "\xc3\xa9", "\xe2\x9c\x93", "\xf0\x9f\x92\xbe" };
    for (size_t k = 0; k < ARRAY_SIZE(chars); k++)
        for (size_t pad = 0; pad < 4; pad++) {
            char text[3000];
            memset(text, 'p', pad);
            text[pad] = '\0';
            while (strlen(text) + 5 < sizeof text)
                strcat(text, chars[k]);
            req_error(new_request(f, "query-version", (json_int_t) (k * 10 + pad)),
                      CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", text);
            CLEANUP_JSON json_t *r = one_reply(f, false);
            const char *desc = json_string_value(json_object_get(json_object_get(r, "error"),
                                                                 "desc"));
            assert_non_null(desc);
            assert_true(strlen(desc) < 1024);
            assert_true(utf8_valid(desc, strlen(desc)));
            assert_int_equal(json_integer_value(json_object_get(r, "id")),
                             (json_int_t) (k * 10 + pad));
        }
}

/* Bytes that are not UTF-8 in the text (a name cut with "%.5s"). */
static void
test_error_repaired(void **state)
{
    struct fixture *f = *state;
    json_decref(read_lines(f));         /* the greeting */
    req_error(new_request(f, "query-version", 9), CKPT_ERR_GENERIC,
              "the command %.5s has not been found", "abcd\xc3\xa9");
    CLEANUP_JSON json_t *r = one_reply(f, false);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"),
                                                          "desc")),
                        "the command abcd? has not been found");
}

/* The control stream's lenient mode: NUL kept, bad bytes in values as
 * NUL, in member names as U+FFFD, bad bytes outside strings refused. */
static void
test_lenient_stream(void **state)
{
    struct qmp_stream st;
    qmp_stream_init(&st, 1 << 20, 64);
    qmp_stream_lenient(&st);
    const char in[] = "{\"a\": \"x\\u0000y\", \"b\": [\"\xff\"], \"k\xc3\": {\"c\": \"\xc3\xa9\xed\xa0\x80\"}}\n"
                      "{\"a\": 1}\xff\n";
    qmp_stream_feed(&st, in, sizeof in - 1);
    json_t *m = NULL;
    char why[256];
    assert_int_equal(qmp_stream_next(&st, &m, why, sizeof why), QMP_STREAM_MESSAGE);
    json_t *a = json_object_get(m, "a");
    assert_int_equal(json_string_length(a), 3);
    assert_memory_equal(json_string_value(a), "x\0y", 3);
    json_t *b0 = json_array_get(json_object_get(m, "b"), 0);
    assert_int_equal(json_string_length(b0), 1);
    assert_int_equal(json_string_value(b0)[0], '\0');
    json_t *k = json_object_get(m, "k\xef\xbf\xbd");
    assert_non_null(k);
    json_t *c = json_object_get(k, "c");
    assert_int_equal(json_string_length(c), 2 + 3);
    assert_memory_equal(json_string_value(c), "\xc3\xa9\0\0\0", 5);
    json_decref(m);
    m = NULL;
    assert_int_equal(qmp_stream_next(&st, &m, why, sizeof why), QMP_STREAM_MESSAGE);
    json_decref(m);
    assert_int_equal(qmp_stream_next(&st, &m, why, sizeof why), QMP_STREAM_BAD_JSON);
    qmp_stream_free(&st);
}

static void
test_utf8_helpers(void **state)
{
    assert_int_equal(utf8_valid_prefix("ab\xc3\xa9", 4), 4);
    assert_int_equal(utf8_valid_prefix("ab\xc3", 3), 2);
    assert_int_equal(utf8_valid_prefix("\xc0\xaf", 2), 0);        /* overlong */
    assert_int_equal(utf8_valid_prefix("\xed\xa0\x80", 3), 0);    /* surrogate */
    assert_int_equal(utf8_valid_prefix("\xf4\x90\x80\x80", 4), 0); /* > U+10FFFF */
    char s[] = "xx\xe2\x9c\x93yy";
    utf8_truncate(s, 4);
    assert_string_equal(s, "xx");
    char t[] = "a\xff" "b\xc3";
    utf8_repair(t);
    assert_string_equal(t, "a?b?");
}

static void
test_json_log_keeps_bad_bytes(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(p[1], 2);
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    log_info("client sent name '%s'", "bad\xff" "byte\xc3");
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(p[1]);
    char buf[4096];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strchr(buf, '\n'));
    CLEANUP_JSON json_t *j = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "client sent name 'bad\\xffbyte\\xc3'");
}

/* Reads up to max bytes from fd, waiting up to a second for the first. */
static size_t
read_some(int fd, char *buf, size_t max)
{
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, 1000) <= 0)
        return 0;
    ssize_t n = read(fd, buf, max);
    return n > 0 ? (size_t) n : 0;
}

/* A slow reader of large replies: a partial send moves the sent offset,
 * not the bytes (the start of the buffer is untouched), and the reader
 * gets every byte of every reply, in order. */
static void
test_output_offset(void **state)
{
    struct fixture *f = *state;
    int small = 4096;
    setsockopt(f->c->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(f->peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    json_decref(read_lines(f));             /* the greeting */
    size_t n = 256 * 1024;
    char *big = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char) ('a' + i % 26);
    big[n] = '\0';
    CLEANUP_FREE char *want = xasprintf("[\"%s\"]\n[\"%s\"]\n", big, big);
    ctl_send(f->c, json_pack("[s]", big));
    assert_true(ctl_pending(f->c) > 0);     /* the socket took only part */
    char head[64];
    memcpy(head, f->c->out, sizeof head);
    size_t sent0 = f->c->out_sent;
    size_t total = strlen(want), got = 0;
    char *buf = xmalloc(total);
    got += read_some(f->peer, buf + got, 8192);
    ev_run(f->a.loop, EVRUN_NOWAIT);        /* the write watcher sends more */
    assert_true(f->c->out_sent > sent0);
    assert_memory_equal(f->c->out, head, sizeof head);
    /* A second reply queued behind the first. */
    ctl_send(f->c, json_pack("[s]", big));
    while (got < total) {
        size_t r = read_some(f->peer, buf + got, total - got);
        assert_true(r > 0);
        got += r;
        ev_run(f->a.loop, EVRUN_NOWAIT);
    }
    assert_memory_equal(buf, want, total);
    assert_int_equal(ctl_pending(f->c), 0);
    assert_int_equal(f->c->out_sent, 0);    /* rewound once drained */
    free(buf);
    free(big);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_null_value_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_cut_anywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_repaired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_offset, setup, teardown),
        cmocka_unit_test(test_utf8_helpers),
        cmocka_unit_test(test_lenient_stream),
        cmocka_unit_test(test_json_log_keeps_bad_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
