/* The control socket speaks QMP (PROTOCOL.md "Transport and framing"):
 * greeting, negotiation, ids, framing, caps, events to every client,
 * argument checks, SIGTERM, and an agent started before QEMU. */
#include "tests/qemu/harness.h"

#include <stdio.h>
#include <sys/stat.h>

#define MiB (1024 * 1024)

/* Sends text exactly as given and returns the next reply. */
static json_t *
raw_reply(struct hq_conn *c, const char *text)
{
    if (hq_send_raw(c, text, strlen(text)) < 0)
        return NULL;
    return hq_read_reply(c, 10);
}

static bool
is_int(json_t *obj, const char *key)
{
    return json_is_integer(json_object_get(obj, key));
}

static int
test_greeting(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *c = hq_conn_open_raw(vm->ctl_sock, 5);
    HQ_CHECK(c, "connect");
    json_t *qmp = json_object_get(c->greeting, "QMP");
    json_t *ver = json_object_get(qmp, "version");
    json_t *q = json_object_get(ver, "qemu");
    HQ_CHECK(is_int(q, "major") && is_int(q, "minor") && is_int(q, "micro"),
             "QMP.version.qemu lacks major/minor/micro: %s", hq_str(c->greeting));
    const char *pkg = hq_jstr(ver, "package");
    HQ_CHECK(pkg && strncmp(pkg, "ckptd", 5) == 0,
             "package is not ckptd: %s", hq_str(c->greeting));
    HQ_CHECK(json_is_array(json_object_get(qmp, "capabilities")),
             "no capabilities array: %s", hq_str(c->greeting));

    /* The greeting and query-version tell the same version. */
    CLEANUP_JSON json_t *caps = hq_cmd(c, "qmp_capabilities", NULL);
    HQ_CHECK(json_is_object(caps) && json_object_size(caps) == 0,
             "qmp_capabilities returned %s", hq_str(caps));
    CLEANUP_JSON json_t *v = hq_cmd(c, "query-version", NULL);
    HQ_CHECK(v, "query-version");
    const char *ck = hq_jstr(v, "ckptd");
    HQ_CHECK(ck, "query-version without ckptd: %s", hq_str(v));
    CLEANUP_FREE char *want = xasprintf("ckptd %s", ck);
    HQ_CHECK(strcmp(pkg, want) == 0, "greeting package '%s', query-version "
             "says '%s'", pkg, ck);
    json_t *vq = json_object_get(v, "qemu");
    HQ_CHECK(is_int(vq, "major") && is_int(vq, "minor") && is_int(vq, "micro"),
             "query-version qemu lacks major/minor/micro: %s", hq_str(v));

    /* Owner only (PROTOCOL.md: mode 0600). */
    struct stat st;
    HQ_CHECK(stat(vm->ctl_sock, &st) == 0 && S_ISSOCK(st.st_mode),
             "%s is not a socket", vm->ctl_sock);
    HQ_CHECK((st.st_mode & 0777) == 0600, "control socket mode %o",
             (unsigned) (st.st_mode & 0777));
    return 0;
}

static int
test_before_capabilities(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *c = hq_conn_open_raw(vm->ctl_sock, 5);
    HQ_CHECK(c, "connect");
    CLEANUP_JSON json_t *r1 = hq_cmd_err(c, "CommandNotFound",
                                         "query-status", NULL);
    HQ_CHECK(r1, "query-status before qmp_capabilities");
    CLEANUP_JSON json_t *r2 = hq_cmd_err(c, "CommandNotFound",
        "checkpoint-create", json_pack("{s:s}", "name", "early"));
    HQ_CHECK(r2, "checkpoint-create before qmp_capabilities");
    CLEANUP_FREE char *names = hq_bitmap_names(vm, "vda");
    HQ_CHECK(strcmp(names, "") == 0, "bitmaps appeared: %s", names);
    /* Negotiation still works after the refusals, and then commands do. */
    CLEANUP_JSON json_t *caps = hq_cmd(c, "qmp_capabilities", NULL);
    HQ_CHECK(caps, "qmp_capabilities");
    CLEANUP_JSON json_t *st = hq_cmd(c, "query-status", NULL);
    HQ_CHECK(hq_jstr(st, "qemu") && strcmp(hq_jstr(st, "qemu"), "connected") == 0,
             "query-status: %s", hq_str(st));
    HQ_CHECK(hq_jint(st, "checkpoints") == 0, "query-status: %s", hq_str(st));
    return 0;
}

static int
test_unknown_command(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "CommandNotFound",
                                        "no-such-command", NULL);
    HQ_CHECK(r, "unknown command");
    HQ_CHECK(strstr(hq_err_desc(r), "no-such-command"),
             "desc does not name the command: %s", hq_err_desc(r));
    /* A QEMU command is not an agent command. */
    CLEANUP_JSON json_t *r2 = hq_cmd_err(vm->ctl, "CommandNotFound",
                                         "query-block", NULL);
    HQ_CHECK(r2, "QEMU's query-block on the agent");
    return 0;
}

static int
test_id_echo(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    const char *ids[] = { "\"abc\"", "42", "-7", "1.5",
                          "{\"a\": [1, {\"b\": \"c\"}], \"n\": null}",
                          "[\"x\", 2]", "\"\\u00e9t\\u00e9\"" };
    const char *cmds[] = { "query-status", "no-such-command" };
    for (size_t k = 0; k < ARRAY_SIZE(cmds); k++)
        for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
            CLEANUP_FREE char *line = xasprintf(
                "{\"execute\": \"%s\", \"id\": %s}\n", cmds[k], ids[i]);
            CLEANUP_JSON json_t *want = json_loads(ids[i], JSON_DECODE_ANY, NULL);
            CLEANUP_JSON json_t *r = raw_reply(vm->ctl, line);
            HQ_CHECK(r, "no reply to %s", line);
            HQ_CHECK(json_equal(json_object_get(r, "id"), want),
                     "sent id %s with %s, got reply %s", ids[i], cmds[k],
                     hq_str(r));
            HQ_CHECK(json_object_get(r, k ? "error" : "return"),
                     "reply to %s: %s", cmds[k], hq_str(r));
        }
    /* No id in, no id out. */
    CLEANUP_JSON json_t *r = raw_reply(vm->ctl, "{\"execute\": \"query-status\"}\n");
    HQ_CHECK(r && json_object_get(r, "return") && !json_object_get(r, "id"),
             "reply without id: %s", hq_str(r));
    return 0;
}

static int
test_bad_json(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *other = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(other, "second client");
    const char *bad[] = {
        "{\"execute\": \"query-status\",, \"id\": 1}\n",
        "{\"execute\" \"query-status\"}\n",
        "[1, 2]\n",
        "{\"id\": 5}\n",
        "{\"execute\": 5}\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CLEANUP_JSON json_t *r = raw_reply(vm->ctl, bad[i]);
        HQ_CHECK(r && hq_err_class(r), "no error reply to %s: got %s",
                 bad[i], hq_str(r));
        /* The same connection keeps answering, and so does another one. */
        CLEANUP_JSON json_t *r2 = raw_reply(vm->ctl,
            "{\"execute\": \"query-status\", \"id\": \"after\"}\n");
        const char *id = hq_jstr(r2, "id");
        HQ_CHECK(r2 && json_object_get(r2, "return") && id
                 && strcmp(id, "after") == 0,
                 "after %s: %s", bad[i], hq_str(r2));
        CLEANUP_JSON json_t *r3 = hq_cmd(other, "query-status", NULL);
        HQ_CHECK(r3, "other client after %s", bad[i]);
    }
    return 0;
}

static int
test_oversize(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    size_t pad = MiB + 4096;
    const char *head = "{\"execute\": \"checkpoint-create\", \"id\": \"big\", "
                       "\"arguments\": {\"name\": \"big\", \"description\": \"";
    const char *tail = "\"}}\n";
    size_t len = strlen(head) + pad + strlen(tail);
    CLEANUP_FREE char *msg = xmalloc(len + 1);
    strcpy(msg, head);
    memset(msg + strlen(head), 'x', pad);
    strcpy(msg + strlen(head) + pad, tail);
    HQ_CHECK(hq_send_raw(vm->ctl, msg, len) == 0, "send 1 MiB");
    const char *next = "{\"execute\": \"query-status\", \"id\": \"after\"}\n";
    HQ_CHECK(hq_send_raw(vm->ctl, next, strlen(next)) == 0, "send");
    /* One error for the big message, then the answer to the next one. */
    int errors = 0;
    for (;;) {
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
        HQ_CHECK(r, "no reply after a 1 MiB message (%d errors so far)", errors);
        const char *id = hq_jstr(r, "id");
        if (id && strcmp(id, "after") == 0) {
            HQ_CHECK(json_object_get(r, "return"), "query-status after a big "
                     "message: %s", hq_str(r));
            break;
        }
        HQ_CHECK(hq_err_class(r), "a big message was accepted: %s", hq_str(r));
        errors++;
        HQ_CHECK(errors < 5, "too many error replies for one big message");
    }
    HQ_CHECK(errors == 1, "%d error replies for one big message", errors);
    CLEANUP_FREE char *names = hq_bitmap_names(vm, "vda");
    HQ_CHECK(strcmp(names, "") == 0, "a checkpoint was created: %s", names);
    return 0;
}

static int
test_packed_and_split(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    const char *packed = "{\"execute\": \"query-status\", \"id\": 1}"
                         "{\"execute\": \"no-such\", \"id\": 2}\n"
                         "{\"execute\": \"query-version\", \"id\": 3}\n";
    HQ_CHECK(hq_send_raw(vm->ctl, packed, strlen(packed)) == 0, "send");
    for (int i = 1; i <= 3; i++) {
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
        HQ_CHECK(r && hq_jint(r, "id") == i, "reply %d of 3 in order: %s",
                 i, hq_str(r));
        HQ_CHECK(json_object_get(r, i == 2 ? "error" : "return"),
                 "reply %d: %s", i, hq_str(r));
    }
    /* One object over several writes, split inside a key, inside a
     * two-byte UTF-8 character and across lines. */
    const char *pieces[] = { "{\"exec", "ute\": \"query-", "status\",\n \"id\"",
                             ": \"\xc3", "\xa9t\xc3\xa9\"\n", "}", "\n" };
    for (size_t i = 0; i < ARRAY_SIZE(pieces); i++) {
        HQ_CHECK(hq_send_raw(vm->ctl, pieces[i], strlen(pieces[i])) == 0, "send");
        hq_sleep_ms(60);
    }
    CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
    HQ_CHECK(r && json_object_get(r, "return"), "split message: %s", hq_str(r));
    const char *id = hq_jstr(r, "id");
    HQ_CHECK(id && strcmp(id, "\xc3\xa9t\xc3\xa9") == 0, "split id: %s",
             hq_str(r));
    return 0;
}

/* A command that waits for QEMU is still answered before the ones sent
 * after it on the same connection. */
static int
test_reply_order(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    const char *msgs =
        "{\"execute\": \"checkpoint-create\", \"arguments\": {\"name\": \"o1\"}, \"id\": 1}\n"
        "{\"execute\": \"query-version\", \"id\": 2}\n"
        "{\"execute\": \"checkpoint-create\", \"arguments\": {\"name\": \"o2\"}, \"id\": 3}\n"
        "{\"execute\": \"checkpoint-list\", \"id\": 4}\n";
    HQ_CHECK(hq_send_raw(vm->ctl, msgs, strlen(msgs)) == 0, "send");
    for (int i = 1; i <= 4; i++) {
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
        HQ_CHECK(r && hq_jint(r, "id") == i && json_object_get(r, "return"),
                 "reply %d of 4: %s", i, hq_str(r));
        if (i == 4) {
            /* The list was made after both creates had finished. */
            json_t *l = json_object_get(r, "return");
            HQ_CHECK(json_array_size(l) == 2, "list: %s", hq_str(r));
            const char *p = hq_jstr(json_array_get(l, 1), "parent");
            HQ_CHECK(p && !strcmp(p, "o1"), "o2 parent: %s", hq_str(r));
        }
    }
    HQ_CHECK(hq_bitmap_recording(vm, "vdb", "o1") == 0
             && hq_bitmap_recording(vm, "vdb", "o2") == 1, "vdb bitmaps");
    return 0;
}

static int
test_event_to_all_clients(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *b = hq_conn_open(vm->ctl_sock, 5);
    CLEANUP_CONN struct hq_conn *raw = hq_conn_open_raw(vm->ctl_sock, 5);
    HQ_CHECK(b && raw, "more clients");
    CLEANUP_JSON json_t *cp = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "ev1"));
    HQ_CHECK(cp, "checkpoint-create");
    struct hq_conn *both[] = { vm->ctl, b };
    for (size_t i = 0; i < ARRAY_SIZE(both); i++) {
        CLEANUP_JSON json_t *ev = hq_wait_event_named(both[i],
                                    "CHECKPOINT_CREATED", "ev1", 5);
        HQ_CHECK(ev, "client %zu got no CHECKPOINT_CREATED for ev1", i);
        json_t *ts = json_object_get(ev, "timestamp");
        HQ_CHECK(is_int(ts, "seconds") && is_int(ts, "microseconds"),
                 "event timestamp: %s", hq_str(ev));
    }
    /* A client that has not negotiated gets no events. */
    CLEANUP_JSON json_t *none = hq_read_msg(raw, 0.5);
    HQ_CHECK(!none, "an event before qmp_capabilities: %s", hq_str(none));
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "ev1") == 1, "bitmap ev1 on vda");
    return 0;
}

static int
test_bad_arguments(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    struct { const char *cmd; const char *args; } cases[] = {
        { "checkpoint-create", "{\"name\": 5}" },
        { "checkpoint-create", "{\"name\": \"x\", \"bogus\": 1}" },
        { "checkpoint-create", "{\"name\": \"x\", \"disks\": \"vda\"}" },
        { "checkpoint-create", "{\"name\": \"x\", \"disks\": [5]}" },
        { "checkpoint-create", "{\"name\": \"x\", \"description\": true}" },
        { "checkpoint-create", "{\"name\": \"x\", \"quiesce\": \"yes\"}" },
        { "checkpoint-get", "{}" },
        { "checkpoint-get", "{\"name\": [\"x\"]}" },
        { "checkpoint-delete", "{\"name\": \"x\", \"children\": 1}" },
        { "checkpoint-list", "{\"bogus\": true}" },
        { "query-status", "{\"bogus\": true}" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "InvalidParameter",
            cases[i].cmd, json_loads(cases[i].args, 0, NULL));
        HQ_CHECK(r, "%s %s", cases[i].cmd, cases[i].args);
    }
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s",
             hq_str(after));
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "") == 0, "checkpoints: %s", names);
    return 0;
}

static int
test_query_commands(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "query-commands", NULL);
    HQ_CHECK(json_is_array(l), "query-commands: %s", hq_str(l));
    const char *need[] = { "query-version", "query-status", "query-commands",
                           "query-disks", "checkpoint-create", "checkpoint-list",
                           "checkpoint-get", "checkpoint-delete" };
    for (size_t i = 0; i < ARRAY_SIZE(need); i++)
        HQ_CHECK(hq_jfind(l, "name", need[i]), "%s not listed: %s", need[i],
                 hq_str(l));
    /* Every entry has a name and its arguments with their types, the
     * ones the agent checks: a required argument left out is refused. */
    size_t i;
    json_t *e;
    json_array_foreach(l, i, e) {
        const char *n = hq_jstr(e, "name");
        HQ_CHECK(n, "entry without name: %s", hq_str(e));
        HQ_CHECK(json_is_array(json_object_get(e, "arguments")),
                 "%s has no argument list: %s", n, hq_str(e));
    }
    json_t *get = hq_jfind(l, "name", "checkpoint-get");
    json_t *name = hq_jfind(json_object_get(get, "arguments"), "name", "name");
    HQ_CHECK(name && strcmp(hq_jstr(name, "type"), "str") == 0 &&
             hq_jbool(name, "required") == 1, "checkpoint-get name: %s", hq_str(get));
    json_t *size = hq_jfind(json_object_get(get, "arguments"), "name", "size");
    HQ_CHECK(size && strcmp(hq_jstr(size, "type"), "bool") == 0 &&
             hq_jbool(size, "required") == 0, "checkpoint-get size: %s", hq_str(get));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "InvalidParameter", "checkpoint-get", NULL);
    HQ_CHECK(r, "checkpoint-get without its required name");
    return 0;
}

static int
test_sigterm(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *c = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(c, "client");
    CLEANUP_JSON json_t *cp = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "t1"));
    HQ_CHECK(cp, "checkpoint-create");
    HQ_CHECK(hq_agent_stop(vm) == 0, "SIGTERM");
    /* Clients see the connection close; the checkpoint stays in QEMU. */
    hq_drain(c, 2);
    HQ_CHECK(c->eof, "client connection still open after agent exit");
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "t1") == 1,
             "t1 bitmap gone or not recording after agent exit");
    return 0;
}

static int
test_start_before_qemu(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_vm_add_disk(vm, "vda", "qcow2", 64 * MiB, false) == 0, "disk");
    HQ_CHECK(hq_agent_spawn(vm) == 0, "agent without QEMU");
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    const char *q = hq_jstr(st, "qemu");
    HQ_CHECK(q && strcmp(q, "disconnected") == 0, "query-status: %s",
             hq_str(st));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotConnected",
        "checkpoint-create", json_pack("{s:s}", "name", "early"));
    HQ_CHECK(r, "checkpoint-create without QEMU");
    /* Still waiting a while later, then QEMU appears. */
    hq_sleep_ms(500);
    HQ_CHECK(hq_qemu_start(vm) == 0, "QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 10) == 0, "connect");
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "QEMU_CONNECTED", 5);
    HQ_CHECK(ev, "no QEMU_CONNECTED event");
    CLEANUP_JSON json_t *cp = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "late"));
    HQ_CHECK(cp, "checkpoint-create after connect");
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "late") == 1, "bitmap late");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "early") == -1, "bitmap early exists");
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "protocol-greeting", test_greeting },
        { "protocol-before-capabilities", test_before_capabilities },
        { "protocol-unknown-command", test_unknown_command },
        { "protocol-id-echo", test_id_echo },
        { "protocol-bad-json", test_bad_json },
        { "protocol-oversize", test_oversize },
        { "protocol-packed-and-split", test_packed_and_split },
        { "protocol-reply-order", test_reply_order },
        { "protocol-event-to-all-clients", test_event_to_all_clients },
        { "protocol-bad-arguments", test_bad_arguments },
        { "protocol-query-commands", test_query_commands },
        { "protocol-sigterm", test_sigterm },
        { "protocol-start-before-qemu", test_start_before_qemu },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
