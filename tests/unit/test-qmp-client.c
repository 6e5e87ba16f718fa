/* qmp client against a scripted fake QMP server on a Unix socket in a
 * temporary directory, both driven by the same libev loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "qmp/qmp.h"
#include "fake-peer.h"

#define GREETING \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, " \
    "\"major\": 7}, \"package\": \"Debian 1:7.2\"}, \"capabilities\": [\"oob\"]}}\n"

/* What one qmp_send's callback saw, and what it should do then. */
struct rec {
    struct ctx *c;
    const char *name;
    int calls;
    json_t *ret;
    char class[64];
    char desc[256];
    bool free_q, disconnect, send_more;
};

struct ctx {
    struct ev_loop *loop;
    char dir[64];
    char path[128];
    struct fake_peer srv;   /* the fake QEMU (see fake_on_message) */
    struct qmp *q;
    int ups, downs;
    char reason[256];
    json_t *version;
    char log[1024];         /* "name:Class;" per callback, "up;" / "down;" */
    int events;
    char event_name[64];
    json_t *event_data;
    struct rec recs[8];
    struct rec extra;       /* sent from inside a callback */
};

#define ctx_log(c, ...) fake_log((c)->log, sizeof (c)->log, __VA_ARGS__)

/* --- fake server --- */

static json_int_t
fake_id(struct fake_peer *f, size_t i)
{
    return json_integer_value(json_object_get(json_array_get(f->got, i), "id"));
}

/* Replies to the i-th received command with a return value. */
static void
fake_return(struct fake_peer *f, size_t i, const char *ret_json)
{
    char *s = xasprintf("{\"return\": %s, \"id\": %lld}\n", ret_json,
                        (long long) fake_id(f, i));
    fake_write(f, s);
    free(s);
}

/* The fake QEMU greets on accept and answers qmp_capabilities by itself,
 * everything else as the test says. */
static void
fake_on_message(struct fake_peer *f, json_t *msg)
{
    const char *cmd = json_string_value(json_object_get(msg, "execute"));
    if (cmd && strcmp(cmd, "qmp_capabilities") == 0)
        fake_return(f, json_array_size(f->got) - 1, "{}");
}

/* --- client callbacks --- */

static void
on_state(struct qmp *q, bool connected, json_t *version, const char *reason,
         void *opaque)
{
    struct ctx *c = opaque;
    if (connected) {
        json_decref(c->version);
        c->version = json_deep_copy(version);
    }
    FAKE_KEEP_STATE(c, connected, reason);
}

static void
on_event(struct qmp *q, const char *event, json_t *data, void *opaque)
{
    struct ctx *c = opaque;
    c->events++;
    snprintf(c->event_name, sizeof c->event_name, "%s", event);
    json_decref(c->event_data);
    c->event_data = json_deep_copy(data);
}

static void rec_send(struct ctx *c, struct rec *r, const char *name);

static void
on_reply(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct rec *r = opaque;
    struct ctx *c = r->c;
    r->calls++;
    FAKE_KEEP_REPLY(r, ret, err);
    ctx_log(c, "%s:%s;", r->name, err ? err->class : "ok");
    if (r->send_more)
        rec_send(c, &c->extra, "extra");
    if (r->disconnect)
        qmp_disconnect(q, "bye");
    if (r->free_q) {
        qmp_free(q);
        c->q = NULL;
    }
}

static void
rec_send(struct ctx *c, struct rec *r, const char *name)
{
    r->c = c;
    r->name = name;
    qmp_send(c->q, name, json_pack("{s:s}", "name", name), on_reply, r);
}

/* --- loop helpers --- */

/* Runs the loop until cond holds; fails the test after 5 s. */
static void
run_until(struct ctx *c, bool (*cond)(struct ctx *c))
{
    FAKE_RUN_UNTIL(c->loop, cond(c));
}

static bool is_up(struct ctx *c) { return c->ups > 0; }
static bool is_down(struct ctx *c) { return c->downs > 0; }
static bool got2(struct ctx *c) { return json_array_size(c->srv.got) >= 2; }
static bool got3(struct ctx *c) { return json_array_size(c->srv.got) >= 3; }
static bool got4(struct ctx *c) { return json_array_size(c->srv.got) >= 4; }
static bool rec0_done(struct ctx *c) { return c->recs[0].calls > 0; }
static bool recs3_done(struct ctx *c)
{
    return c->recs[0].calls && c->recs[1].calls && c->recs[2].calls;
}
static bool one_event(struct ctx *c) { return c->events >= 1; }
static bool two_events(struct ctx *c) { return c->events >= 2; }
static bool extra_done(struct ctx *c) { return c->extra.calls > 0; }
static bool rec2_done(struct ctx *c) { return c->recs[2].calls > 0; }

static int
setup(void **state)
{
    struct ctx *c = xcalloc(1, sizeof *c);
    FAKE_TMPDIR(c, "test-qmp-client", "qmp.sock");
    c->loop = ev_loop_new(EVFLAG_AUTO);
    fake_start(&c->srv, c->loop, c->path, fake_on_message);
    c->srv.hello = GREETING;
    struct qmp_callbacks cb = { on_event, on_state, c };
    c->q = qmp_new(c->loop, c->path, &cb, 0);
    *state = c;
    return 0;
}

static int
teardown(void **state)
{
    struct ctx *c = *state;
    qmp_free(c->q);
    fake_stop(&c->srv);
    unlink(c->path);
    rmdir(c->dir);
    for (size_t i = 0; i < ARRAY_SIZE(c->recs); i++)
        json_decref(c->recs[i].ret);
    json_decref(c->extra.ret);
    json_decref(c->version);
    json_decref(c->event_data);
    ev_loop_destroy(c->loop);
    free(c);
    return 0;
}

/* Replaces the client by one with a reply timeout. */
static void
use_timeout(struct ctx *c, double timeout)
{
    qmp_free(c->q);
    struct qmp_callbacks cb = { on_event, on_state, c };
    c->q = qmp_new(c->loop, c->path, &cb, timeout);
}

static void
connect_and_wait(struct ctx *c)
{
    assert_int_equal(qmp_connect(c->q), 0);
    run_until(c, is_up);
    assert_true(qmp_is_connected(c->q));
}

/* --- tests --- */

static void
test_handshake(void **state)
{
    struct ctx *c = *state;

    assert_int_equal(qmp_connect(c->q), 0);
    assert_false(qmp_is_connected(c->q));
    /* Sent before negotiation: must go out after qmp_capabilities. */
    rec_send(c, &c->recs[0], "query-status");
    run_until(c, is_up);
    assert_int_equal(json_integer_value(json_object_get(
        json_object_get(c->version, "qemu"), "major")), 7);

    run_until(c, got2);
    assert_string_equal(fake_cmd(&c->srv, 0), "qmp_capabilities");
    assert_string_equal(fake_cmd(&c->srv, 1), "query-status");
    json_t *args = json_object_get(json_array_get(c->srv.got, 1), "arguments");
    assert_string_equal(json_string_value(json_object_get(args, "name")),
                        "query-status");
    assert_int_equal(c->recs[0].calls, 0);

    fake_return(&c->srv, 1, "{\"status\": \"running\"}");
    run_until(c, rec0_done);
    assert_int_equal(c->recs[0].calls, 1);
    assert_string_equal(json_string_value(json_object_get(c->recs[0].ret,
                                                          "status")),
                        "running");
    assert_string_equal(c->log, "up;query-status:ok;");
}

/* qmp_send_fd: the descriptor reaches QEMU with its own command's line
 * (add-fd takes the one that came with it), between commands without. */
static void
test_send_fd(void **state)
{
    struct ctx *c = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/target", c->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    connect_and_wait(c);
    rec_send(c, &c->recs[0], "before");
    c->recs[1] = (struct rec) { .c = c, .name = "add-fd" };
    qmp_send_fd(c->q, "add-fd", json_pack("{s:s}", "opaque", "x"), dup(fd), on_reply,
                &c->recs[1]);
    rec_send(c, &c->recs[2], "after");
    run_until(c, got4);
    assert_string_equal(fake_cmd(&c->srv, 2), "add-fd");
    /* A read ends with the message that carries descriptors (Linux), and
     * may start with earlier bytes: the descriptor came with add-fd's. */
    assert_true(c->srv.rfd >= 0);
    assert_true(c->srv.rfd_msg <= 2 && c->srv.rfd_end > 2);
    struct stat a, b;
    assert_int_equal(fstat(fd, &a), 0);
    assert_int_equal(fstat(c->srv.rfd, &b), 0);
    assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
    close(fd);
    unlink(path);
}

static void
test_out_of_order(void **state)
{
    struct ctx *c = *state;
    static const char *const names[] = { "a", "b", "c" };

    connect_and_wait(c);
    for (size_t i = 0; i < 3; i++)
        rec_send(c, &c->recs[i], names[i]);
    run_until(c, got4);

    /* c, then a and b packed into one write. */
    fake_return(&c->srv, 3, "{\"name\": \"c\"}");
    char *both = xasprintf("{\"return\": {\"name\": \"a\"}, \"id\": %lld}"
                           "{\"id\": %lld, \"return\": {\"name\": \"b\"}}\n",
                           (long long) fake_id(&c->srv, 1),
                           (long long) fake_id(&c->srv, 2));
    fake_write(&c->srv, both);
    free(both);
    run_until(c, recs3_done);

    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(c->recs[i].calls, 1);
        assert_string_equal(json_string_value(json_object_get(c->recs[i].ret,
                                                              "name")),
                            names[i]);
    }
    assert_string_equal(c->log, "up;c:ok;a:ok;b:ok;");
}

static void
test_events(void **state)
{
    struct ctx *c = *state;

    connect_and_wait(c);
    /* Split over two writes. */
    fake_write(&c->srv, "{\"event\": \"JOB_STATUS_CHANGE\", \"data\": "
                        "{\"id\": \"j1\", \"st");
    ev_run(c->loop, EVRUN_NOWAIT);
    fake_write(&c->srv, "atus\": \"null\"}, \"timestamp\": {\"seconds\": 1, "
                        "\"microseconds\": 2}}\n");
    run_until(c, one_event);
    assert_string_equal(c->event_name, "JOB_STATUS_CHANGE");
    assert_string_equal(json_string_value(json_object_get(c->event_data,
                                                          "status")), "null");

    /* An event between a command and its reply, in one write. */
    rec_send(c, &c->recs[0], "query-jobs");
    run_until(c, got2);
    char *s = xasprintf("{\"event\": \"STOP\", \"timestamp\": {}}\n"
                        "{\"return\": [], \"id\": %lld}\n",
                        (long long) fake_id(&c->srv, 1));
    fake_write(&c->srv, s);
    free(s);
    run_until(c, rec0_done);
    assert_true(two_events(c));
    assert_string_equal(c->event_name, "STOP");
    assert_null(c->event_data);
    assert_true(json_is_array(c->recs[0].ret));
}

static void
test_qemu_error(void **state)
{
    struct ctx *c = *state;

    connect_and_wait(c);
    rec_send(c, &c->recs[0], "block-dirty-bitmap-add");
    run_until(c, got2);
    char *s = xasprintf("{\"error\": {\"class\": \"GenericError\", \"desc\": "
                        "\"Bitmap already exists: c1\"}, \"id\": %lld}\n",
                        (long long) fake_id(&c->srv, 1));
    fake_write(&c->srv, s);
    free(s);
    run_until(c, rec0_done);
    assert_int_equal(c->recs[0].calls, 1);
    assert_null(c->recs[0].ret);
    assert_string_equal(c->recs[0].class, "GenericError");
    assert_string_equal(c->recs[0].desc, "Bitmap already exists: c1");
    assert_true(qmp_is_connected(c->q));
}

static void
test_server_closes(void **state)
{
    struct ctx *c = *state;

    connect_and_wait(c);
    rec_send(c, &c->recs[0], "a");
    rec_send(c, &c->recs[1], "b");
    rec_send(c, &c->recs[2], "c");
    run_until(c, got4);
    fake_hangup(&c->srv);
    run_until(c, is_down);

    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(c->recs[i].calls, 1);
        assert_string_equal(c->recs[i].class, "Disconnected");
    }
    assert_string_equal(c->log,
                        "up;a:Disconnected;b:Disconnected;c:Disconnected;down;");
    assert_non_null(strstr(c->reason, "closed"));
    assert_false(qmp_is_connected(c->q));
}

static void
test_send_not_connected(void **state)
{
    struct ctx *c = *state;

    rec_send(c, &c->recs[0], "query-status");
    rec_send(c, &c->recs[1], "query-version");
    /* Never from inside qmp_send. */
    assert_int_equal(c->recs[0].calls, 0);
    assert_int_equal(c->recs[1].calls, 0);
    run_until(c, rec0_done);
    ev_run(c->loop, EVRUN_NOWAIT);
    assert_int_equal(c->recs[0].calls, 1);
    assert_int_equal(c->recs[1].calls, 1);
    assert_string_equal(c->recs[0].class, "Disconnected");
    assert_string_equal(c->log,
                        "query-status:Disconnected;query-version:Disconnected;");
    assert_int_equal(c->downs, 0);

    /* A callback that sends again gets its own callback on a later turn. */
    c->recs[2].send_more = true;
    rec_send(c, &c->recs[2], "again");
    run_until(c, extra_done);
    assert_int_equal(c->recs[2].calls, 1);
    assert_int_equal(c->extra.calls, 1);
}

static void
test_timeout(void **state)
{
    struct ctx *c = *state;

    use_timeout(c, 0.2);
    connect_and_wait(c);
    rec_send(c, &c->recs[0], "hang");
    rec_send(c, &c->recs[1], "other");
    run_until(c, got2);
    run_until(c, is_down);

    assert_string_equal(c->recs[0].class, "Timeout");
    assert_non_null(strstr(c->recs[0].desc, "hang"));
    assert_string_equal(c->recs[1].class, "Disconnected");
    assert_string_equal(c->log, "up;hang:Timeout;other:Disconnected;down;");
    assert_non_null(strstr(c->reason, "hang"));
}

/* A reply that comes in time resets the clock for the next command. */
static void
test_timeout_not_hit(void **state)
{
    struct ctx *c = *state;

    use_timeout(c, 0.3);
    connect_and_wait(c);
    rec_send(c, &c->recs[0], "quick");
    run_until(c, got2);
    fake_return(&c->srv, 1, "{}");
    run_until(c, rec0_done);
    assert_string_equal(c->log, "up;quick:ok;");

    /* Idle connection: nothing pending, no timeout. */
    fake_run_for(c->loop, 0.5);
    assert_true(qmp_is_connected(c->q));
    assert_int_equal(c->downs, 0);
}

static void
test_greeting_timeout(void **state)
{
    struct ctx *c = *state;

    use_timeout(c, 0.2);
    c->srv.hello = NULL;
    assert_int_equal(qmp_connect(c->q), 0);
    rec_send(c, &c->recs[0], "early");      /* queued, never sent */
    run_until(c, is_down);
    assert_non_null(strstr(c->reason, "greeting"));
    assert_string_equal(c->log, "early:Disconnected;down;");
}

static void
test_bad_framing(void **state)
{
    struct ctx *c = *state;

    connect_and_wait(c);
    rec_send(c, &c->recs[0], "a");
    run_until(c, got2);
    fake_write(&c->srv, "this is not JSON\n");
    run_until(c, is_down);
    assert_string_equal(c->log, "up;a:Disconnected;down;");
    assert_non_null(strstr(c->reason, "framing"));
}

static void
test_connect_fails(void **state)
{
    struct ctx *c = *state;

    char *missing = xasprintf("%s/missing.sock", c->dir);
    struct qmp *q = qmp_new(c->loop, missing, NULL, 0);
    errno = 0;
    assert_int_equal(qmp_connect(q), -1);
    assert_int_equal(errno, ENOENT);
    qmp_free(q);

    /* A socket file nobody listens on. */
    char *dead = xasprintf("%s/dead.sock", c->dir);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, dead);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
    close(fd);
    q = qmp_new(c->loop, dead, NULL, 0);
    errno = 0;
    assert_int_equal(qmp_connect(q), -1);
    assert_int_equal(errno, ECONNREFUSED);
    qmp_free(q);
    unlink(dead);
    free(dead);
    free(missing);
}

static void
test_free_in_callback(void **state)
{
    struct ctx *c = *state;

    connect_and_wait(c);
    c->recs[0].free_q = true;
    c->recs[1].send_more = true;   /* sends while the client is dying */
    rec_send(c, &c->recs[0], "a");
    rec_send(c, &c->recs[1], "b");
    rec_send(c, &c->recs[2], "c");
    run_until(c, got4);
    fake_return(&c->srv, 1, "{}");
    run_until(c, rec0_done);

    assert_null(c->q);
    assert_string_equal(c->log, "up;a:ok;b:Disconnected;c:Disconnected;"
                                "extra:Disconnected;");
    assert_int_equal(c->downs, 0);
}

static void
test_disconnect_in_callback_then_reconnect(void **state)
{
    struct ctx *c = *state;

    connect_and_wait(c);
    c->recs[0].disconnect = true;
    rec_send(c, &c->recs[0], "a");
    rec_send(c, &c->recs[1], "b");
    run_until(c, got3);
    /* Both replies in one write: the second must not reach a closed
     * connection's callbacks. */
    char *s = xasprintf("{\"return\": {}, \"id\": %lld}\n"
                        "{\"return\": {}, \"id\": %lld}\n",
                        (long long) fake_id(&c->srv, 1),
                        (long long) fake_id(&c->srv, 2));
    fake_write(&c->srv, s);
    free(s);
    run_until(c, is_down);
    assert_string_equal(c->log, "up;a:ok;b:Disconnected;down;");
    assert_string_equal(c->reason, "bye");

    /* The same client connects again. */
    json_array_clear(c->srv.got);
    c->ups = 0;
    connect_and_wait(c);
    assert_int_equal(c->srv.accepts, 2);
    rec_send(c, &c->recs[2], "again");
    run_until(c, got2);
    fake_return(&c->srv, 1, "{}");
    run_until(c, rec2_done);
    assert_string_equal(c->recs[2].class, "");
    assert_int_equal(c->recs[0].calls + c->recs[1].calls, 2);
}

/* The transaction action builders (action.c) are tested here too: they
 * are what this client sends inside `transaction`. */
static void
assert_json(json_t *j, const char *expect_json)
{
    json_t *expect = json_loads(expect_json, 0, NULL);
    assert_non_null(expect);
    assert_true(json_equal(j, expect));
    json_decref(expect);
    json_decref(j);
}

static void
test_actions(void **state)
{
    static const char *const srcs[] = { "c1", "c2" };

    assert_json(qmp_action("abort", json_object()),
                "{\"type\": \"abort\", \"data\": {}}");
    assert_json(qmp_bitmap_action("block-dirty-bitmap-disable", "disk0", "c1"),
                "{\"type\": \"block-dirty-bitmap-disable\", "
                "\"data\": {\"node\": \"disk0\", \"name\": \"c1\"}}");
    assert_json(qmp_bitmap_add("disk0", "c3", true, false, 0),
                "{\"type\": \"block-dirty-bitmap-add\", \"data\": "
                "{\"node\": \"disk0\", \"name\": \"c3\", "
                "\"persistent\": true, \"disabled\": false}}");
    assert_json(qmp_bitmap_add("disk0", "t", false, true, 65536),
                "{\"type\": \"block-dirty-bitmap-add\", \"data\": "
                "{\"node\": \"disk0\", \"name\": \"t\", "
                "\"persistent\": false, \"disabled\": true, "
                "\"granularity\": 65536}}");
    assert_json(qmp_bitmap_merge("disk0", "t", srcs, 2),
                "{\"type\": \"block-dirty-bitmap-merge\", \"data\": "
                "{\"node\": \"disk0\", \"target\": \"t\", "
                "\"bitmaps\": [\"c1\", \"c2\"]}}");
    assert_json(qmp_bitmap_merge("disk0", "t", NULL, 0),
                "{\"type\": \"block-dirty-bitmap-merge\", \"data\": "
                "{\"node\": \"disk0\", \"target\": \"t\", "
                "\"bitmaps\": []}}");
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_handshake),
        T(test_out_of_order),
        T(test_send_fd),
        T(test_events),
        T(test_qemu_error),
        T(test_server_closes),
        T(test_send_not_connected),
        T(test_timeout),
        T(test_timeout_not_hit),
        T(test_greeting_timeout),
        T(test_bad_framing),
        T(test_connect_fails),
        T(test_free_in_callback),
        T(test_disconnect_in_callback_then_reconnect),
        cmocka_unit_test(test_actions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
