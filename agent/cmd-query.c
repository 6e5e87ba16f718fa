/* Negotiation and the queries that need no change: qmp_capabilities,
 * query-version, query-status, query-commands, query-disks. */
#include "agent/agent.h"

static enum cmd_result
cmd_capabilities(struct request *req)
{
    if (req->client->negotiated) {
        req_error(req, CKPT_ERR_COMMAND_NOT_FOUND,
                  "capabilities negotiation is already complete");
        return CMD_DONE;
    }
    req->client->negotiated = true;
    req_reply_ok(req);
    return CMD_DONE;
}

static enum cmd_result
cmd_version(struct request *req)
{
    json_t *ret = json_pack("{s:s}", "ckptd", CKPTD_VERSION);
    json_t *q = json_object_get(req->agent->qemu_version, "qemu");
    if (q)
        json_object_set(ret, "qemu", q);
    req_reply(req, ret);
    return CMD_DONE;
}

static void
status_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    struct agent *a = req->agent;
    const char *vm = err ? "unknown" : json_string_value(json_object_get(ret, "status"));
    req_reply(req, json_pack("{s:s,s:s,s:I,s:I,s:s}", "qemu",
                             a->qemu_ready ? "connected" : "disconnected",
                             "vm", vm ? vm : "unknown",
                             "checkpoints", (json_int_t) a->tree.nckpts,
                             "jobs", (json_int_t) job_count(a),
                             "guest-agent", qga_state_name(qga_state(a->qga))));
}

static enum cmd_result
cmd_status(struct request *req)
{
    struct agent *a = req->agent;
    if (!a->qemu_ready) {
        req_reply(req, json_pack("{s:s,s:s,s:i,s:i,s:s}", "qemu", "disconnected",
                                 "vm", "unknown", "checkpoints", 0, "jobs", 0,
                                 "guest-agent", qga_state_name(qga_state(a->qga))));
        return CMD_DONE;
    }
    vm_send(a, "query-status", NULL, status_done, req);
    return CMD_WAIT;
}

static const char *const arg_type_names[] = {
    [ARG_STRING] = "str", [ARG_BOOL] = "bool", [ARG_INT] = "int",
    [ARG_STRING_LIST] = "[str]", [ARG_OBJECT] = "object", [ARG_OBJECT_LIST] = "[object]",
};

/* The table is the description: each command with its arguments, their
 * types and whether they are required, as the dispatcher checks them. */
static void
add_command(const struct ckpt_cmd *cmd, void *opaque)
{
    json_t *args = json_array();
    for (const struct cmd_arg *a = cmd->args; a && a->name; a++)
        json_array_append_new(args, json_pack("{s:s,s:s,s:b}", "name", a->name,
                                              "type", arg_type_names[a->type],
                                              "required", a->required));
    json_array_append_new(opaque, json_pack("{s:s,s:o}", "name", cmd->name,
                                            "arguments", args));
}

static enum cmd_result
cmd_commands(struct request *req)
{
    /* The table never changes: built once, shared by every reply (a
     * client may well ask for it thousands of times in a row). */
    struct agent *a = req->agent;
    if (!a->commands) {
        a->commands = json_array();
        dispatch_for_each(add_command, a->commands);
    }
    req_reply(req, json_incref(a->commands));
    return CMD_DONE;
}

static void
disks_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    if (err) {
        req_qmp_error(req, err, "reading the disks");
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < a->tree.ndisks; i++)
        json_array_append_new(list, enc_disk(&a->tree.disks[i]));
    req_reply(req, list);
}

/* Disks can be hot-plugged behind our back: always read them afresh. */
static enum cmd_result
cmd_disks(struct request *req)
{
    vm_refresh(req->agent, disks_done, req);
    return CMD_WAIT;
}

const struct ckpt_cmd query_cmds[] = {
    { "qmp_capabilities", NULL, CMD_BEFORE_CAPS, cmd_capabilities },
    { "query-version", NULL, 0, cmd_version },
    { "query-status", NULL, 0, cmd_status },
    { "query-commands", NULL, 0, cmd_commands },
    { "query-disks", NULL, CMD_NEEDS_QEMU, cmd_disks },
    { NULL, NULL, 0, NULL },
};
