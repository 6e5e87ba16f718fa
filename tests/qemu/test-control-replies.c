/* One reply per request, whatever the request holds (issue 11 bug 2,
 * issue 13 item 8, PROTOCOL.md "Clients, names and ids").
 *
 * long-names:      command names of 190..210 bytes ending in a two-byte
 *                  character, before and after negotiation: each request
 *                  gets its CommandNotFound reply, with its id
 * long-arguments:  an unknown argument named by 400 'é', a checkpoint name
 *                  and a description of 400 'é': InvalidParameter, with id
 * nul-and-utf8:    \u0000 and raw invalid UTF-8 in string arguments (top
 *                  level, in a list, inside an object): InvalidParameter
 *                  naming the argument, no jansson internals in the text,
 *                  nothing created; a command name holding NUL is not run
 * pipelined:       all of the above sent in one write: exactly one reply
 *                  per id, in order, then a witness request
 * greeting:        the greeting's version is the build's (CKPTD_VERSION)
 */
#include "tests/qemu/harness.h"

#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define E_ACUTE "\xc3\xa9"

/* Sends text as it is, then reads messages until the reply whose id is
 * want (a JSON integer); every reply before it is a failure. */
static json_t *
reply_to(struct hq_conn *c, const char *text, json_int_t want)
{
    if (hq_send_raw(c, text, strlen(text)) < 0)
        return NULL;
    json_t *r = hq_read_reply(c, 10);
    if (!r) {
        hq_fail("no reply to request %" JSON_INTEGER_FORMAT " (%.80s...)", want, text);
        return NULL;
    }
    json_t *id = json_object_get(r, "id");
    if (!json_is_integer(id) || json_integer_value(id) != want) {
        hq_fail("request %" JSON_INTEGER_FORMAT " got the reply %s", want, hq_str(r));
        json_decref(r);
        return NULL;
    }
    return r;
}

/* {"execute": NAME, "id": ID, "arguments": ARGS} with NAME and ARGS
 * spliced in as JSON text (so that they may hold what jansson would not
 * encode). */
static char *
request(const char *name_json, const char *args_json, json_int_t id)
{
    if (args_json)
        return xasprintf("{\"execute\": %s, \"arguments\": %s, \"id\": %" JSON_INTEGER_FORMAT "}\n",
                         name_json, args_json, id);
    return xasprintf("{\"execute\": %s, \"id\": %" JSON_INTEGER_FORMAT "}\n", name_json, id);
}

static char *
repeat(const char *unit, size_t n)
{
    size_t len = strlen(unit);
    char *s = xmalloc(len * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * len, unit, len);
    s[len * n] = '\0';
    return s;
}

/* The command names of long-names: "xxx...x é" of len bytes in all. */
static char *
long_name(size_t len)
{
    char *s = xmalloc(len + 1);
    memset(s, 'x', len - 3);
    memcpy(s + len - 3, " " E_ACUTE, 3);
    s[len] = '\0';
    return s;
}

static int
check_error(json_t *r, const char *cls, const char *must_contain)
{
    HQ_CHECK(r, "no reply");
    HQ_CHECK(hq_err_class(r) && strcmp(hq_err_class(r), cls) == 0,
             "expected %s: %s", cls, hq_str(r));
    const char *desc = hq_err_desc(r);
    HQ_CHECK(*desc, "an empty desc: %s", hq_str(r));
    HQ_CHECK(!strstr(desc, "JSON_ALLOW_NUL") && !strstr(desc, "jansson"),
             "library internals in the text: %s", desc);
    HQ_CHECK(!must_contain || strstr(desc, must_contain),
             "the text does not name '%s': %s", must_contain, desc);
    return 0;
}

static int
case_long_names(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    /* Before negotiation, and after it. */
    CLEANUP_CONN struct hq_conn *raw = hq_conn_open_raw(vm->ctl_sock, 5);
    HQ_CHECK(raw, "connect");
    json_int_t id = 100;
    for (int pass = 0; pass < 2; pass++) {
        struct hq_conn *c = pass ? vm->ctl : raw;
        for (size_t len = 190; len <= 210; len++, id++) {
            CLEANUP_FREE char *name = long_name(len);
            CLEANUP_FREE char *qname = xasprintf("\"%s\"", name);
            CLEANUP_FREE char *line = request(qname, NULL, id);
            CLEANUP_JSON json_t *r = reply_to(c, line, id);
            if (!r)
                return -1;
            if (check_error(r, "CommandNotFound", "xxx") < 0)
                return -1;
        }
    }
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(st && hq_jstr(st, "qemu"), "the connection no longer works");
    return 0;
}

static int
case_long_arguments(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *e400 = repeat(E_ACUTE, 400);
    json_int_t id = 1;
    /* An unknown argument name, on several commands. */
    const char *cmds[] = { "query-status", "checkpoint-create", "checkpoint-list",
                           "backup-begin" };
    for (size_t i = 0; i < ARRAY_SIZE(cmds); i++, id++) {
        CLEANUP_FREE char *qname = xasprintf("\"%s\"", cmds[i]);
        CLEANUP_FREE char *args = xasprintf("{\"%s\": 1}", e400);
        CLEANUP_FREE char *line = request(qname, args, id);
        CLEANUP_JSON json_t *r = reply_to(vm->ctl, line, id);
        if (!r || check_error(r, "InvalidParameter", E_ACUTE E_ACUTE) < 0)
            return -1;
    }
    /* Long values that the commands themselves refuse. */
    char *values[] = {
        xasprintf("{\"name\": \"%s\"}", e400),
        xasprintf("{\"name\": \"n-%s\"}", e400),
        xasprintf("{\"name\": \"ok\", \"disks\": [\"%s\"]}", e400),
        xasprintf("{\"name\": \"checkpoint-%s\", \"description\": \"%s\"}", e400, e400),
    };
    for (size_t i = 0; i < ARRAY_SIZE(values); i++, id++) {
        CLEANUP_FREE char *args = values[i];
        CLEANUP_FREE char *line = request("\"checkpoint-create\"", args, id);
        CLEANUP_JSON json_t *r = reply_to(vm->ctl, line, id);
        if (!r)
            return -1;
        HQ_CHECK(hq_err_class(r), "accepted: %s", hq_str(r));
        hq_note("%s: %.60s", hq_err_class(r), hq_err_desc(r));
    }
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "checkpoints: %s", names);
    return 0;
}

/* Requests with NUL or invalid UTF-8 in a string argument, and the
 * argument the reply must name. */
static const struct bad_arg {
    const char *cmd, *args, *names;
} bad_args[] = {
    { "checkpoint-create", "{\"name\": \"a\\u0000b\"}", "'name'" },
    { "checkpoint-create", "{\"name\": \"c1\", \"description\": \"x\\u0000\"}", "'description'" },
    { "checkpoint-create", "{\"name\": \"c1\", \"disks\": [\"vda\", \"vda\\u0000x\"]}", "'disks'" },
    { "checkpoint-create", "{\"name\": \"a\xff" "b\"}", "'name'" },
    { "checkpoint-create", "{\"name\": \"c1\", \"description\": \"caf\xc3\"}", "'description'" },
    { "checkpoint-create", "{\"name\": \"c1\", \"disks\": [\"\xed\xa0\x80\"]}", "'disks'" },
    { "checkpoint-get", "{\"name\": \"\xc0\xaf\"}", "'name'" },
    { "checkpoint-delete", "{\"name\": \"\\u0000\"}", "'name'" },
    { "backup-begin", "{\"checkpoint\": {\"name\": \"k\\u0000\"}}", "'checkpoint'" },
    { "backup-begin", "{\"server\": {\"transport\": \"unix\", \"path\": \"/tmp/\xfe\"}}", "'server'" },
    { "backup-end", "{\"id\": \"backup-1\\u0000\"}", "'id'" },
    /* In an argument's name: no such argument, with the id. */
    { "query-status", "{\"k\xff\": 1}", "no argument 'k" },
    { "checkpoint-create", "{\"name\": \"c1\", \"desc\xc3ription\": \"d\"}", "no argument 'desc" },
};

/* The third line an agent sends after negotiation and a query-version
 * whose id is "a\u0000b", parsed with NUL allowed. */
static json_t *
nul_id_reply(struct hq_vm *vm)
{
    int fd = hq_connect_unix(vm->ctl_sock);
    if (fd < 0)
        return NULL;
    const char *req = "{\"execute\": \"qmp_capabilities\"}\n"
                      "{\"execute\": \"query-version\", \"id\": \"a\\u0000b\"}\n";
    char buf[8192];
    size_t len = 0;
    int lines = 0;
    double end = hq_now() + 10;
    if (write(fd, req, strlen(req)) != (ssize_t) strlen(req)) {
        close(fd);
        return NULL;
    }
    while (lines < 3 && len < sizeof buf - 1 && hq_now() < end) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 1000) <= 0)
            continue;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            lines += buf[len + (size_t) i] == '\n';
        len += (size_t) n;
    }
    close(fd);
    if (lines < 3)
        return NULL;
    buf[len] = '\0';
    char *third = strchr(strchr(buf, '\n') + 1, '\n') + 1;
    return json_loadb(third, strcspn(third, "\n"), JSON_ALLOW_NUL, NULL);
}

static int
case_nul_and_utf8(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    json_int_t id = 1;
    for (size_t i = 0; i < ARRAY_SIZE(bad_args); i++, id++) {
        CLEANUP_FREE char *qname = xasprintf("\"%s\"", bad_args[i].cmd);
        CLEANUP_FREE char *line = request(qname, bad_args[i].args, id);
        CLEANUP_JSON json_t *r = reply_to(vm->ctl, line, id);
        if (!r)
            return -1;
        if (check_error(r, "InvalidParameter", bad_args[i].names) < 0) {
            hq_fail("%s %s: %s", bad_args[i].cmd, bad_args[i].args, hq_str(r));
            return -1;
        }
    }
    /* A command name holding NUL is no command, even if its prefix is. */
    CLEANUP_FREE char *nul_cmd = request("\"checkpoint-create\\u0000x\"",
                                         "{\"name\": \"nul1\"}", id);
    CLEANUP_JSON json_t *r = reply_to(vm->ctl, nul_cmd, id++);
    if (!r || check_error(r, "CommandNotFound", NULL) < 0)
        return -1;
    CLEANUP_FREE char *bad_cmd = request("\"query-status\xff\"", NULL, id);
    CLEANUP_JSON json_t *r2 = reply_to(vm->ctl, bad_cmd, id++);
    if (!r2 || check_error(r2, "CommandNotFound", NULL) < 0)
        return -1;
    /* An id is echoed verbatim, NUL and all (read here, as the harness
     * refuses "\u0000"). */
    CLEANUP_JSON json_t *r3 = nul_id_reply(vm);
    json_t *rid = json_object_get(r3, "id");
    HQ_CHECK(r3 && json_object_get(r3, "return") && json_is_string(rid) &&
             json_string_length(rid) == 3 && memcmp(json_string_value(rid), "a\0b", 3) == 0,
             "id with NUL: %s", hq_str(r3));
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "checkpoints: %s", names);
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(json_is_array(jobs) && json_array_size(jobs) == 0, "jobs: %s", hq_str(jobs));
    return 0;
}

static int
case_pipelined(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *e400 = repeat(E_ACUTE, 400);
    size_t cap = 1 << 20, len = 0;
    CLEANUP_FREE char *all = xmalloc(cap);
    json_int_t id = 1;
#define ADD(line) do {                                                      \
        char *l_ = (line);                                                  \
        size_t n_ = strlen(l_);                                             \
        if (len + n_ + 1 > cap)                                             \
            all = xrealloc(all, cap *= 2);                                  \
        memcpy(all + len, l_, n_ + 1);                                      \
        len += n_;                                                          \
        free(l_);                                                           \
        id++;                                                               \
    } while (0)
    for (size_t n = 190; n <= 210; n++) {
        CLEANUP_FREE char *name = long_name(n);
        CLEANUP_FREE char *q = xasprintf("\"%s\"", name);
        ADD(request(q, NULL, id));
    }
    CLEANUP_FREE char *uargs = xasprintf("{\"%s\": 1}", e400);
    ADD(request("\"query-status\"", uargs, id));
    CLEANUP_FREE char *nargs = xasprintf("{\"name\": \"%s\"}", e400);
    ADD(request("\"checkpoint-create\"", nargs, id));
    for (size_t i = 0; i < ARRAY_SIZE(bad_args); i++) {
        CLEANUP_FREE char *q = xasprintf("\"%s\"", bad_args[i].cmd);
        ADD(request(q, bad_args[i].args, id));
    }
    ADD(request("\"query-version\"", NULL, id));
#undef ADD
    json_int_t last = id - 1;
    HQ_CHECK(hq_send_raw(vm->ctl, all, len) == 0, "send");
    for (json_int_t want = 1; want <= last; want++) {
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 10);
        HQ_CHECK(r, "no reply to request %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT,
                 want, last);
        json_t *rid = json_object_get(r, "id");
        HQ_CHECK(json_is_integer(rid) && json_integer_value(rid) == want,
                 "reply %" JSON_INTEGER_FORMAT " is %s", want, hq_str(r));
        HQ_CHECK((want == last) == (json_object_get(r, "return") != NULL),
                 "reply %" JSON_INTEGER_FORMAT ": %s", want, hq_str(r));
    }
    /* Nothing more: no reply came twice. */
    CLEANUP_JSON json_t *extra = hq_read_msg(vm->ctl, 0.5);
    HQ_CHECK(!extra, "an extra message: %s", hq_str(extra));
    return 0;
}

static int
case_greeting(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *c = hq_conn_open_raw(vm->ctl_sock, 5);
    HQ_CHECK(c, "connect");
    int major = -1, minor = -1, micro = -1;
    const char *pkg = NULL;
    HQ_CHECK(json_unpack(c->greeting, "{s:{s:{s:{s:i,s:i,s:i},s:s}}}", "QMP", "version",
                         "qemu", "major", &major, "minor", &minor, "micro", &micro,
                         "package", &pkg) == 0, "greeting %s", hq_str(c->greeting));
    CLEANUP_FREE char *want_pkg = xasprintf("ckptd %s", CKPTD_VERSION);
    CLEANUP_FREE char *got = xasprintf("%d.%d.%d", major, minor, micro);
    HQ_CHECK(strcmp(pkg, want_pkg) == 0, "package '%s', built as '%s'", pkg, want_pkg);
    HQ_CHECK(strncmp(CKPTD_VERSION, got, strlen(got)) == 0,
             "version.qemu says %s, the build is %s", got, CKPTD_VERSION);
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "long-names", case_long_names },
        { "long-arguments", case_long_arguments },
        { "nul-and-utf8", case_nul_and_utf8 },
        { "pipelined", case_pipelined },
        { "greeting", case_greeting },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
