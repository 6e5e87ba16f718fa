/* From a parsed message to a running command: the command table, the
 * checks every command needs (negotiation, argument names and types, QEMU
 * connected), answering each client in order, and the queue that lets one
 * change at a time reach QEMU. */
#include "agent/agent.h"

#include <stdio.h>

static const struct ckpt_cmd *const tables[] = {
    query_cmds, checkpoint_cmds, backup_cmds, xml_cmds, changes_cmds, disk_cmds, fd_cmds,
};

const struct ckpt_cmd *
dispatch_find(const char *name)
{
    for (size_t t = 0; t < ARRAY_SIZE(tables); t++)
        for (const struct ckpt_cmd *c = tables[t]; c->name; c++)
            if (strcmp(c->name, name) == 0)
                return c;
    return NULL;
}

void
dispatch_for_each(void (*fn)(const struct ckpt_cmd *, void *), void *opaque)
{
    for (size_t t = 0; t < ARRAY_SIZE(tables); t++)
        for (const struct ckpt_cmd *c = tables[t]; c->name; c++)
            fn(c, opaque);
}

static const char *
type_name(enum arg_type t)
{
    switch (t) {
    case ARG_STRING: return "a string";
    case ARG_BOOL: return "a boolean";
    case ARG_INT: return "an integer";
    case ARG_STRING_LIST: return "a list of strings";
    case ARG_OBJECT: return "an object";
    case ARG_OBJECT_LIST: return "a list of objects";
    }
    return "?";
}

static bool
type_ok(enum arg_type t, json_t *v)
{
    switch (t) {
    case ARG_STRING: return json_is_string(v);
    case ARG_BOOL: return json_is_boolean(v);
    case ARG_INT: return json_is_integer(v);
    case ARG_OBJECT: return json_is_object(v);
    case ARG_OBJECT_LIST: {
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            return false;
        json_array_foreach(v, i, e)
            if (!json_is_object(e))
                return false;
        return true;
    }
    case ARG_STRING_LIST: {
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            return false;
        json_array_foreach(v, i, e)
            if (!json_is_string(e))
                return false;
        return true;
    }
    }
    return false;
}

/* A string the agent can use: no NUL inside (jansson keeps "\u0000",
 * C code would cut there) and valid UTF-8.  Invalid UTF-8 reaches here
 * as NUL: the control stream turns each such byte into \u0000. */
static bool
string_ok(json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    return memchr(s, '\0', len) == NULL && utf8_valid(s, len);
}

/* Whether every string in v, at any depth, is string_ok. */
static bool
strings_ok(json_t *v)
{
    size_t i;
    const char *key;
    json_t *e;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return string_ok(v);
    case JSON_ARRAY:
        json_array_foreach(v, i, e)
            if (!strings_ok(e))
                return false;
        return true;
    case JSON_OBJECT:
        json_object_foreach(v, key, e)
            if (!strings_ok(e))
                return false;
        return true;
    default:
        return true;
    }
}

/* name for a message: at most max bytes, cut at a character boundary. */
static const char *
short_name(const char *name, char *buf, size_t size)
{
    ckpt_format(buf, size, "%s", name);
    return buf;
}

static const struct cmd_arg *
find_arg(const struct ckpt_cmd *cmd, const char *name)
{
    for (const struct cmd_arg *a = cmd->args; a && a->name; a++)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

/* Central argument checks: no unknown names, declared types, required
 * ones present.  Commands start from arguments of the right shape. */
static bool
check_args(const struct ckpt_cmd *cmd, json_t *args, struct ckpt_error *e)
{
    const char *key;
    json_t *v;
    char shown[128];
    json_object_foreach(args, key, v) {
        const struct cmd_arg *a = find_arg(cmd, key);
        if (!a) {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "%s has no argument '%s'",
                      cmd->name, short_name(key, shown, sizeof shown));
            return false;
        }
        if (!type_ok(a->type, v)) {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                      "argument '%s' of %s must be %s", key, cmd->name,
                      type_name(a->type));
            return false;
        }
        if (!strings_ok(v)) {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                      "argument '%s' of %s holds a NUL character or bytes that "
                      "are not UTF-8", key, cmd->name);
            return false;
        }
    }
    for (const struct cmd_arg *a = cmd->args; a && a->name; a++)
        if (a->required && !json_object_get(args, a->name)) {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                      "%s needs the argument '%s'", cmd->name, a->name);
            return false;
        }
    return true;
}

static void
reply_now(struct client *c, json_t *id, enum ckpt_err code, const char *desc)
{
    ctl_send(c, req_error_message(code, desc, id));
}

/* Starts queued changes, one at a time; a change that finishes at once
 * lets the next one start in the same loop, without recursion. */
static void
kick_changes(struct agent *a)
{
    if (a->kicking)
        return;
    a->kicking = true;
    while (!a->change_active && a->change_head) {
        struct request *req = a->change_head;
        a->change_head = req->next;
        if (!a->change_head)
            a->change_tail = NULL;
        a->change_active = req;
        if (!a->qemu_ready)
            req_error(req, CKPT_ERR_NOT_CONNECTED, "QEMU is not connected");
        else
            change_run(req);
    }
    a->kicking = false;
}

static void
enqueue_change(struct request *req)
{
    struct agent *a = req->agent;
    if (a->change_tail)
        a->change_tail->next = req;
    else
        a->change_head = req;
    a->change_tail = req;
    kick_changes(a);
}

static void
start_request(struct client *c, const struct ckpt_cmd *cmd, json_t *id,
              json_t *args)
{
    struct request *req = xcalloc(1, sizeof *req);
    req->agent = c->agent;
    req->client = c;
    req->cmd = cmd;
    req->id = json_incref(id);
    req->args = args ? json_incref(args) : json_object();
    c->current = req;
    if (cmd->flags & CMD_CHANGE)
        enqueue_change(req);
    else
        cmd->run(req);
}

static void
handle_message(struct client *c, json_t *msg)
{
    struct ckpt_error e = { 0 };
    json_t *id = json_object_get(msg, "id");
    if (!json_is_object(msg)) {
        reply_now(c, NULL, CKPT_ERR_GENERIC, "a request must be a JSON object");
        return;
    }
    json_t *exec = json_object_get(msg, "execute");
    json_t *args = json_object_get(msg, "arguments");
    const char *key;
    json_t *v;
    json_object_foreach(msg, key, v)
        if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
            char shown[128];
            ckpt_format(e.msg, sizeof e.msg, "a request has no member '%s'",
                        short_name(key, shown, sizeof shown));
            reply_now(c, id, CKPT_ERR_GENERIC, e.msg);
            return;
        }
    if (!json_is_string(exec)) {
        reply_now(c, id, CKPT_ERR_GENERIC, "a request needs 'execute' with a command name");
        return;
    }
    if (args && !json_is_object(args)) {
        reply_now(c, id, CKPT_ERR_GENERIC, "'arguments' must be an object");
        return;
    }
    const char *name = json_string_value(exec);
    char shown[256];
    short_name(name, shown, sizeof shown);
    /* "checkpoint-create\u0000x" is no name of ours, even if C would read
     * it as one. */
    const struct ckpt_cmd *cmd = string_ok(exec) ? dispatch_find(name) : NULL;
    if (!cmd || (!c->negotiated && !(cmd->flags & CMD_BEFORE_CAPS))) {
        ckpt_format(e.msg, sizeof e.msg,
                    cmd ? "expecting capabilities negotiation with 'qmp_capabilities' before '%s'"
                        : "the command %s has not been found", shown);
        reply_now(c, id, CKPT_ERR_COMMAND_NOT_FOUND, e.msg);
        return;
    }
    json_t *empty = NULL;
    if (!args)
        args = empty = json_object();
    bool ok = check_args(cmd, args, &e);
    if (!ok)
        reply_now(c, id, e.code, e.msg);
    else if ((cmd->flags & CMD_NEEDS_QEMU) && !c->agent->qemu_ready &&
             !(cmd->flags & CMD_CHANGE))
        reply_now(c, id, CKPT_ERR_NOT_CONNECTED,
                  "QEMU is not connected; try again once it is");
    else
        start_request(c, cmd, id, args);
    json_decref(empty);
}

static void
report_stream_error(struct client *c, enum qmp_stream_result r, const char *why)
{
    char desc[600];
    if (r == QMP_STREAM_TOO_BIG)
        ckpt_format(desc, sizeof desc, "message over %u bytes ignored", CTL_MAX_MESSAGE);
    else if (r == QMP_STREAM_TOO_DEEP)
        ckpt_format(desc, sizeof desc, "message nested deeper than %d levels ignored",
                    CTL_MAX_DEPTH);
    else
        ckpt_format(desc, sizeof desc, "JSON parse error: %s", why);
    reply_now(c, NULL, CKPT_ERR_GENERIC, desc);
}

/* Handles buffered messages until one must wait for QEMU: replies go out
 * in request order, as QMP clients expect. */
void
dispatch_client_input(struct client *c)
{
    if (c->processing)
        return;
    c->processing = true;
    while (!c->closing && !c->current) {
        json_t *msg = NULL;
        char why[256] = "";
        enum qmp_stream_result r = qmp_stream_next(&c->in, &msg, why, sizeof why);
        if (r == QMP_STREAM_NEED_MORE)
            break;
        if (r == QMP_STREAM_MESSAGE)
            handle_message(c, msg);
        else
            report_stream_error(c, r, why);
        json_decref(msg);
    }
    c->processing = false;
}

void
dispatch_request_done(struct request *req)
{
    struct agent *a = req->agent;
    struct client *c = req->client;
    bool was_change = a->change_active == req;
    json_decref(req->id);
    json_decref(req->args);
    free(req);
    if (was_change)
        a->change_active = NULL;
    if (c) {
        c->current = NULL;
        dispatch_client_input(c);
        ctl_resume(c);
    }
    kick_changes(a);
}
