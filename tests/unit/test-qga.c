/* qga client against a scripted fake guest agent on a Unix socket in a
 * temporary directory, both driven by the same libev loop.  The fake acts
 * like qemu-ga: 0xFF drops its partial input, guest-sync-delimited is
 * answered with 0xFF and the id; other commands get what the test put in
 * its script (or nothing). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "common/common.h"
#include "qmp/qmp.h"
#include "fake-peer.h"

struct fake {
    struct fake_peer peer;  /* with ff_resync */
    /* The script. */
    const char *pre_sync;   /* raw bytes sent before the next sync reply */
    bool mute_sync;         /* never answer guest-sync-delimited */
    const char *replies[8]; /* raw reply to the n-th other command; NULL:
                               silence */
    int ncmds;              /* other commands received */
    bool hangup_on_cmd;     /* close the connection on the next command */
};

struct rec {
    struct ctx *c;
    int calls;
    json_t *ret;
    char class[64];
    char desc[256];
    bool free_g;
};

struct ctx {
    struct ev_loop *loop;
    char dir[64];
    char path[128];
    struct fake srv;
    bool srv_up;
    struct qga *g;
    int ups, downs;
    char reason[256];
    char log[512];
    struct rec recs[4];
};

#define ctx_log(c, ...) fake_log((c)->log, sizeof (c)->log, __VA_ARGS__)

/* --- fake guest agent --- */

static json_int_t
got_sync_id(struct fake *f, size_t i)
{
    json_t *a = json_object_get(json_array_get(f->peer.got, i), "arguments");
    return json_integer_value(json_object_get(a, "id"));
}

static void
fake_on_message(struct fake_peer *p, json_t *msg)
{
    struct fake *f = (struct fake *) p;     /* peer is its first member */
    const char *cmd = json_string_value(json_object_get(msg, "execute"));
    if (cmd && strcmp(cmd, "guest-sync-delimited") == 0) {
        if (f->mute_sync)
            return;
        if (f->pre_sync) {
            fake_write(p, f->pre_sync);
            f->pre_sync = NULL;
        }
        json_int_t id = json_integer_value(
            json_object_get(json_object_get(msg, "arguments"), "id"));
        char *s = xasprintf("\xff{\"return\": %lld}\n", (long long) id);
        fake_write(p, s);
        free(s);
        return;
    }
    if (f->hangup_on_cmd) {
        f->hangup_on_cmd = false;
        fake_hangup(p);
        return;
    }
    int n = f->ncmds++;
    if (n < (int) ARRAY_SIZE(f->replies) && f->replies[n])
        fake_write(p, f->replies[n]);
}

/* A fresh fake (an empty script) on c->path. */
static void
srv_start(struct ctx *c)
{
    c->srv = (struct fake) { 0 };
    fake_start(&c->srv.peer, c->loop, c->path, fake_on_message);
    c->srv.peer.ff_resync = true;
    c->srv_up = true;
}

static void
srv_stop(struct ctx *c)
{
    if (!c->srv_up)
        return;
    fake_stop(&c->srv.peer);
    unlink(c->path);
    c->srv_up = false;
}

/* --- client callbacks --- */

static void
on_state(struct qga *g, bool connected, const char *reason, void *opaque)
{
    FAKE_KEEP_STATE((struct ctx *) opaque, connected, reason);
}

static void
on_reply(struct qga *g, json_t *ret, const struct qmp_error *err,
         void *opaque)
{
    struct rec *r = opaque;
    r->calls++;
    FAKE_KEEP_REPLY(r, ret, err);
    ctx_log(r->c, "%d:%s;", (int) (r - r->c->recs), err ? err->class : "ok");
    if (r->free_g) {
        qga_free(g);
        r->c->g = NULL;
    }
}

static void
exec(struct ctx *c, int i, const char *cmd, double timeout)
{
    c->recs[i].c = c;
    qga_exec(c->g, cmd, NULL, timeout, on_reply, &c->recs[i]);
}

/* --- loop helpers --- */

/* Runs the loop until cond holds; fails the test after 5 s. */
static void
run_until(struct ctx *c, bool (*cond)(struct ctx *c))
{
    FAKE_RUN_UNTIL(c->loop, cond(c));
}

static bool is_up(struct ctx *c) { return c->ups > 0; }
static bool is_up2(struct ctx *c) { return c->ups > 1; }
static bool rec0_done(struct ctx *c) { return c->recs[0].calls > 0; }
static bool rec1_done(struct ctx *c) { return c->recs[1].calls > 0; }
static bool rec2_done(struct ctx *c) { return c->recs[2].calls > 0; }

static int
setup(void **state)
{
    struct ctx *c = xcalloc(1, sizeof *c);
    FAKE_TMPDIR(c, "test-qga", "qga.sock");
    c->loop = ev_loop_new(EVFLAG_AUTO);
    srv_start(c);
    c->g = qga_new(c->loop, c->path, on_state, c, 0.05);
    *state = c;
    return 0;
}

static int
teardown(void **state)
{
    struct ctx *c = *state;
    qga_free(c->g);
    srv_stop(c);
    rmdir(c->dir);
    for (size_t i = 0; i < ARRAY_SIZE(c->recs); i++)
        json_decref(c->recs[i].ret);
    ev_loop_destroy(c->loop);
    free(c);
    return 0;
}

static void
start_up(struct ctx *c)
{
    assert_int_equal(qga_state(c->g), QGA_STATE_DISCONNECTED);
    qga_start(c->g);
    assert_int_equal(c->ups, 0);            /* never from inside */
    run_until(c, is_up);
    assert_int_equal(qga_state(c->g), QGA_STATE_CONNECTED);
}

/* --- cases --- */

/* 0xFF, a sync with a random id, then the command; the reply is passed
 * through.  Two uses, two syncs with different ids. */
static void
test_sync_then_command(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.replies[0] = "{\"return\": \"thawed\"}\n";
    c->srv.replies[1] = "{\"return\": 1}\n";
    exec(c, 0, "guest-fsfreeze-status", 1);
    assert_int_equal(c->recs[0].calls, 0);
    run_until(c, rec0_done);
    assert_string_equal(json_string_value(c->recs[0].ret), "thawed");
    exec(c, 1, "guest-fsfreeze-freeze", 1);
    run_until(c, rec1_done);
    assert_int_equal(json_integer_value(c->recs[1].ret), 1);

    assert_int_equal(json_array_size(c->srv.peer.got), 4);
    assert_string_equal(fake_cmd(&c->srv.peer, 0), "guest-sync-delimited");
    assert_string_equal(fake_cmd(&c->srv.peer, 1), "guest-fsfreeze-status");
    assert_string_equal(fake_cmd(&c->srv.peer, 2), "guest-sync-delimited");
    assert_string_equal(fake_cmd(&c->srv.peer, 3), "guest-fsfreeze-freeze");
    assert_int_equal(c->srv.peer.ffs, 2);
    json_int_t a = got_sync_id(&c->srv, 0), b = got_sync_id(&c->srv, 2);
    assert_true(a > 0 && b > 0 && a != b);
    assert_true(a < ((json_int_t) 1 << 53) && b < ((json_int_t) 1 << 53));
    assert_int_equal((int) qga_syncs(c->g), 2);
    assert_string_equal(c->log, "up;0:ok;1:ok;");
}

/* Replies left on the channel (other ids, plain values, errors, a message
 * cut off by a guest reboot) are dropped until the sync's id. */
static void
test_stale_replies(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.pre_sync =
        "{\"return\": 42}\n"
        "{\"return\": \"frozen\"}\n"
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"stray\"}}\n"
        "{\"return\": {\"half\": \"a repl";
    c->srv.replies[0] = "{\"return\": \"thawed\"}\n";
    exec(c, 0, "guest-fsfreeze-status", 1);
    run_until(c, rec0_done);
    assert_string_equal(c->log, "up;0:ok;");
    assert_string_equal(json_string_value(c->recs[0].ret), "thawed");
}

/* A command that gets no answer times out; the connection stays; its late
 * reply, arriving before the next sync's, does not reach the next one. */
static void
test_timeout_late_reply(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.replies[0] = NULL;               /* freeze: silence */
    c->srv.replies[1] = "{\"return\": \"thawed\"}\n";
    exec(c, 0, "guest-fsfreeze-freeze", 0.2);
    run_until(c, rec0_done);
    assert_string_equal(c->recs[0].class, "Timeout");
    assert_non_null(strstr(c->recs[0].desc, "guest-fsfreeze-freeze"));
    assert_int_equal(c->downs, 0);
    assert_int_equal(qga_state(c->g), QGA_STATE_CONNECTED);

    c->srv.pre_sync = "{\"return\": 1}\n";  /* the freeze's late reply */
    exec(c, 1, "guest-fsfreeze-status", 1);
    run_until(c, rec1_done);
    assert_string_equal(json_string_value(c->recs[1].ret), "thawed");
    assert_int_equal(c->srv.peer.accepts, 1);
    assert_string_equal(c->log, "up;0:Timeout;1:ok;");
}

/* A guest that never answers the sync: the command itself never goes out
 * (a freeze must not reach an agent we have given up on). */
static void
test_sync_timeout(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.mute_sync = true;
    exec(c, 0, "guest-fsfreeze-freeze", 0.2);
    run_until(c, rec0_done);
    assert_string_equal(c->recs[0].class, "Timeout");
    assert_non_null(strstr(c->recs[0].desc, "guest-sync"));
    assert_int_equal(json_array_size(c->srv.peer.got), 1);
    assert_string_equal(fake_cmd(&c->srv.peer, 0), "guest-sync-delimited");
    assert_int_equal(c->srv.ncmds, 0);
}

/* The guest agent's own error class and message come through. */
static void
test_guest_error(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.replies[0] = "{\"error\": {\"class\": \"GenericError\", "
                        "\"desc\": \"failed to freeze /mnt: Device busy\"}}\n";
    exec(c, 0, "guest-fsfreeze-freeze", 1);
    run_until(c, rec0_done);
    assert_string_equal(c->recs[0].class, "GenericError");
    assert_string_equal(c->recs[0].desc, "failed to freeze /mnt: Device busy");
    assert_null(c->recs[0].ret);
}

/* Commands queue; each one gets its own sync and its own reply, in
 * order. */
static void
test_queue(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.replies[0] = "{\"return\": 1}\n";
    c->srv.replies[1] = "{\"return\": \"frozen\"}\n";
    c->srv.replies[2] = "{\"return\": 1}\n";
    exec(c, 0, "guest-fsfreeze-freeze", 1);
    exec(c, 1, "guest-fsfreeze-status", 1);
    exec(c, 2, "guest-fsfreeze-thaw", 1);
    run_until(c, rec2_done);
    assert_string_equal(c->log, "up;0:ok;1:ok;2:ok;");
    assert_string_equal(json_string_value(c->recs[1].ret), "frozen");
    assert_int_equal(json_array_size(c->srv.peer.got), 6);
    for (size_t i = 0; i < 6; i += 2)
        assert_string_equal(fake_cmd(&c->srv.peer, i), "guest-sync-delimited");
    assert_string_equal(fake_cmd(&c->srv.peer, 5), "guest-fsfreeze-thaw");
}

/* The socket closes with a command pending: "Disconnected", a state
 * change, then a reconnect by itself and the next command works. */
static void
test_disconnect_reconnect(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.hangup_on_cmd = true;
    exec(c, 0, "guest-fsfreeze-freeze", 2);
    run_until(c, rec0_done);
    assert_string_equal(c->recs[0].class, "Disconnected");
    assert_int_equal(c->downs, 1);
    run_until(c, is_up2);
    assert_int_equal(c->srv.peer.accepts, 2);
    c->srv.replies[0] = "{\"return\": \"thawed\"}\n";
    exec(c, 1, "guest-fsfreeze-status", 1);
    run_until(c, rec1_done);
    assert_string_equal(json_string_value(c->recs[1].ret), "thawed");
    assert_string_equal(c->log, "up;0:Disconnected;down;up;1:ok;");
}

/* No socket yet: commands fail with "Disconnected" (later, not inside
 * qga_exec); the client keeps trying and connects once it appears. */
static void
test_waits_for_socket(void **state)
{
    struct ctx *c = *state;
    srv_stop(c);
    qga_start(c->g);
    exec(c, 0, "guest-ping", 1);
    assert_int_equal(c->recs[0].calls, 0);
    run_until(c, rec0_done);
    assert_string_equal(c->recs[0].class, "Disconnected");
    assert_int_equal(qga_state(c->g), QGA_STATE_DISCONNECTED);
    srv_start(c);
    run_until(c, is_up);
    c->srv.replies[0] = "{\"return\": {}}\n";
    exec(c, 1, "guest-ping", 1);
    run_until(c, rec1_done);
    assert_true(json_is_object(c->recs[1].ret));
    assert_string_equal(c->log, "0:Disconnected;up;1:ok;");
}

/* Freed from a reply callback: the queued commands still get their one
 * callback ("Disconnected"), no state callback after the free. */
static void
test_free_in_callback(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.replies[0] = "{\"return\": 1}\n";
    c->recs[0].free_g = true;
    exec(c, 0, "guest-fsfreeze-freeze", 1);
    exec(c, 1, "guest-fsfreeze-status", 1);
    exec(c, 2, "guest-fsfreeze-thaw", 1);
    run_until(c, rec0_done);
    assert_null(c->g);
    assert_string_equal(c->log, "up;0:ok;1:Disconnected;2:Disconnected;");
}

/* A command waiting behind a slow one times out on its own deadline and
 * never reaches the guest; the slow one times out later on its own. */
static void
test_queued_timeout(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.replies[0] = NULL;               /* the first never answers */
    exec(c, 0, "guest-fsfreeze-freeze", 0.6);
    exec(c, 1, "guest-fsfreeze-status", 0.1);
    run_until(c, rec1_done);
    assert_string_equal(c->recs[1].class, "Timeout");
    assert_non_null(strstr(c->recs[1].desc, "busy with earlier commands"));
    assert_int_equal(c->recs[0].calls, 0);
    run_until(c, rec0_done);
    assert_string_equal(c->log, "up;1:Timeout;0:Timeout;");
    assert_int_equal(c->srv.ncmds, 1);
    assert_string_equal(fake_cmd(&c->srv.peer, 1), "guest-fsfreeze-freeze");
}

/* Bytes that are no JSON, before the sync reply, are skipped. */
static void
test_garbage(void **state)
{
    struct ctx *c = *state;
    start_up(c);
    c->srv.pre_sync = "xyz}]{\"a\": tru}\n@@@\n";
    c->srv.replies[0] = "{\"return\": \"thawed\"}\n";
    exec(c, 0, "guest-fsfreeze-status", 1);
    run_until(c, rec0_done);
    assert_string_equal(c->log, "up;0:ok;");
    assert_string_equal(json_string_value(c->recs[0].ret), "thawed");
}

static void
test_state_names(void **state)
{
    assert_int_equal(qga_state(NULL), QGA_STATE_NONE);
    assert_string_equal(qga_state_name(QGA_STATE_NONE), "none");
    assert_string_equal(qga_state_name(QGA_STATE_DISCONNECTED), "disconnected");
    assert_string_equal(qga_state_name(QGA_STATE_CONNECTED), "connected");
    qga_free(NULL);
}

int
main(void)
{
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_sync_then_command),
        T(test_stale_replies),
        T(test_timeout_late_reply),
        T(test_sync_timeout),
        T(test_guest_error),
        T(test_queue),
        T(test_disconnect_reconnect),
        T(test_waits_for_socket),
        T(test_free_in_callback),
        T(test_queued_timeout),
        T(test_garbage),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
