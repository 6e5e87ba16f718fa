/* checkpoint-create, -list, -get, -delete.
 *
 * Changes run one at a time (CMD_CHANGE): the plan is computed from the
 * cached tree, sent as one transaction, and the tree is re-read from QEMU
 * before the reply, whether QEMU accepted the change or not. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <inttypes.h>
#include <time.h>

/* --- checkpoint-create --- */
static void
create_finish(struct change *ch)
{
    struct agent *a = ch->req->agent;
    char what[300];
    snprintf(what, sizeof what, "creating checkpoint '%s'", ch->name);
    if (change_reply_qemu_error(ch, what))
        return;
    ssize_t i = meta_tree_find_ckpt(&a->tree, ch->name);
    if (i < 0) {
        req_error(ch->req, CKPT_ERR_GENERIC,
                  "checkpoint '%s' was created but is not in the images any more",
                  ch->name);
        return;
    }
    json_t *ret = enc_checkpoint(&a->tree, (size_t) i, false);
    if (ch->quiesce) {
        /* The watchdog thawed the guest before QEMU answered: the
         * checkpoint exists, but it is only crash-consistent. */
        json_object_set_new(ret, "quiesced", json_boolean(!a->quiesce.watchdog_fired));
        json_object_set_new(ret, "frozen-ms", json_integer(a->quiesce.frozen_ms));
    }
    req_reply(ch->req, ret);
    agent_event(a, "CHECKPOINT_CREATED", json_pack("{s:s}", "name", ch->name));
}

static const char *
opt_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

static bool
opt_bool(json_t *args, const char *key)
{
    return json_is_true(json_object_get(args, key));
}

/* Plans a create from the request's arguments against the current tree. */
static enum ckpt_err
plan_create(struct request *req, const char *name, int64_t now, json_t *actions,
            struct ckpt_error *e)
{
    json_t *disks = json_object_get(req->args, "disks");
    size_t ndisks = json_array_size(disks);
    CLEANUP_FREE const char **names = xcalloc(ndisks + 1, sizeof *names);
    for (size_t i = 0; i < ndisks; i++)
        names[i] = json_string_value(json_array_get(disks, i));
    struct ckpt_create_req r = {
        .name = name, .description = opt_str(req->args, "description"),
        .now = now, .disks = disks ? names : NULL, .ndisks = ndisks,
    };
    return ckpt_plan_create(&req->agent->tree, &r, actions, e);
}

static enum ckpt_err
create_replan(struct change *ch, struct ckpt_error *e)
{
    json_t *scratch = json_array();
    enum ckpt_err err = plan_create(ch->req, ch->name, 0, scratch, e);
    json_decref(scratch);
    return err;
}

static enum ckpt_err
create_plan(struct change *ch, json_t *actions, struct ckpt_error *e)
{
    return plan_create(ch->req, ch->name, ch->now, actions, e);
}

static enum cmd_result
cmd_create(struct request *req)
{
    if (!xml_create_args(req))
        return CMD_DONE;
    int64_t now = (int64_t) time(NULL);
    char default_name[32];
    snprintf(default_name, sizeof default_name, "%" PRId64, now);
    const char *name = opt_str(req->args, "name") ? opt_str(req->args, "name")
                                                   : default_name;
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    if (plan_create(req, name, now, actions, &e)) {
        json_decref(actions);
        req_fail(req, &e);
        return CMD_DONE;
    }
    bool quiesce = opt_bool(req->args, "quiesce");
    if (quiesce && !quiesce_available(req->agent, &e)) {
        json_decref(actions);
        req_fail(req, &e);
        return CMD_DONE;
    }
    struct change *ch = change_new(req, name, create_finish);
    ch->replan = create_replan;
    ch->plan = create_plan;
    ch->now = now;
    ch->quiesce = quiesce;
    change_send(ch, actions);
    return CMD_WAIT;
}

/* --- checkpoint-delete --- */
static void
delete_finish(struct change *ch)
{
    char what[300];
    snprintf(what, sizeof what, "deleting checkpoint '%s'", ch->name);
    if (change_reply_qemu_error(ch, what))
        return;
    struct agent *a = ch->req->agent;
    req_reply_ok(ch->req);
    for (size_t i = 0; i < ch->names.len; i++)
        agent_event(a, "CHECKPOINT_DELETED",
                    json_pack("{s:s}", "name", ch->names.ptr[i]));
}

/* The delete's actions on the current tree; ch->names the checkpoints
 * it removes. */
static enum ckpt_err
delete_plan(struct change *ch, json_t *actions, struct ckpt_error *e)
{
    struct agent *a = ch->req->agent;
    bool children = opt_bool(ch->req->args, "children");
    bool only = opt_bool(ch->req->args, "children-only");
    enum ckpt_delete_mode mode = children ? CKPT_DELETE_CHILDREN
                               : only ? CKPT_DELETE_CHILDREN_ONLY : CKPT_DELETE_ONE;
    str_vec_free_all(&ch->names);
    enum ckpt_err err = ckpt_plan_delete(&a->tree, ch->name, mode, actions,
                                         &ch->names, e);
    if (err)
        return err;
    for (size_t i = 0; i < ch->names.len; i++) {
        const struct backup_job *j = job_holding_checkpoint(a, ch->names.ptr[i]);
        if (j)
            return ckpt_fail(e, CKPT_ERR_BUSY, "checkpoint '%s' is %s of backup %s; "
                             "end the backup first", ch->names.ptr[i],
                             j->incremental && strcmp(j->incremental, ch->names.ptr[i]) == 0
                                 ? "the base" : "the new checkpoint", j->id);
    }
    return CKPT_OK;
}

static enum cmd_result
cmd_delete(struct request *req)
{
    const char *name = opt_str(req->args, "name");
    if (opt_bool(req->args, "children") && opt_bool(req->args, "children-only")) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER,
                  "'children' and 'children-only' cannot be used together");
        return CMD_DONE;
    }
    if (vm_reply_if_lost(req, name))
        return CMD_DONE;
    struct change *ch = change_new(req, name, delete_finish);
    ch->plan = delete_plan;
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    if (delete_plan(ch, actions, &e)) {
        json_decref(actions);
        change_free(ch);
        req_fail(req, &e);
        return CMD_DONE;
    }
    if (json_array_size(actions) == 0) {        /* children-only of a leaf */
        json_decref(actions);
        change_free(ch);
        req_reply_ok(req);
        return CMD_DONE;
    }
    change_send(ch, actions);
    return CMD_WAIT;
}

/* --- checkpoint-list and checkpoint-get: answered from the tree, re-read
 * first when sizes are asked for, since counts change with every write --- */
static enum cmd_result with_fresh_tree(struct request *req,
                                       void (*answer)(struct request *));

static bool
list_keeps(const struct meta_tree *t, size_t i, ssize_t from, json_t *args)
{
    bool leaf = i + 1 == t->nckpts;
    if (from >= 0) {
        bool descendants = opt_bool(args, "descendants");
        if (i <= (size_t) from || (!descendants && i != (size_t) from + 1))
            return false;
    }
    if (opt_bool(args, "roots") && meta_tree_parent(t, i) >= 0)
        return false;
    if (opt_bool(args, "leaves") && !leaf)
        return false;
    if (opt_bool(args, "no-leaves") && leaf)
        return false;
    return true;
}

static int
cmp_time_name(const void *x, const void *y)
{
    const struct meta_ckpt *a = *(const struct meta_ckpt *const *) x;
    const struct meta_ckpt *b = *(const struct meta_ckpt *const *) y;
    if (a->rec.ctime != b->rec.ctime)
        return a->rec.ctime < b->rec.ctime ? -1 : 1;
    return strcmp(a->rec.name, b->rec.name);
}

static void
list_answer(struct request *req)
{
    const struct meta_tree *t = &req->agent->tree;
    json_t *args = req->args;
    const char *from_name = opt_str(args, "from");
    ssize_t from = from_name ? meta_tree_find_ckpt(t, from_name) : -1;
    if (from_name && from < 0) {
        req_error(req, CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", from_name);
        return;
    }
    /* Topological order is the chain's own (seq) order; the default is
     * creation time, then name, so the same images give the same list. */
    CLEANUP_FREE const struct meta_ckpt **order =
        xcalloc(t->nckpts + 1, sizeof *order);
    for (size_t i = 0; i < t->nckpts; i++)
        order[i] = &t->ckpts[i];
    if (!opt_bool(args, "topological"))
        qsort(order, t->nckpts, sizeof order[0], cmp_time_name);
    /* Built as text (encode.c): 1,000 checkpoints are 150 KB. */
    bool with_size = opt_bool(args, "size");
    struct enc_buf b = { 0 };
    enc_raw(&b, "[", 1);
    bool first = true;
    for (size_t k = 0; k < t->nckpts; k++) {
        size_t i = (size_t) (order[k] - t->ckpts);
        if (!list_keeps(t, i, from, args))
            continue;
        if (!first)
            enc_raw(&b, ",", 1);
        first = false;
        enc_checkpoint_text(&b, t, i, with_size);
    }
    enc_raw(&b, "]", 1);
    req_reply_text(req, b.bad ? NULL : b.p, b.len);
    free(b.p);
}

static enum cmd_result
cmd_list(struct request *req)
{
    json_t *args = req->args;
    if (opt_bool(args, "leaves") && opt_bool(args, "no-leaves")) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER,
                  "'leaves' and 'no-leaves' cannot be used together");
        return CMD_DONE;
    }
    if (vm_reply_if_lost(req, opt_str(args, "from")))
        return CMD_DONE;
    if (opt_str(args, "from") && opt_bool(args, "roots")) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER,
                  "'from' and 'roots' cannot be used together");
        return CMD_DONE;
    }
    return with_fresh_tree(req, list_answer);
}

static void
get_answer(struct request *req)
{
    const struct meta_tree *t = &req->agent->tree;
    const char *name = opt_str(req->args, "name");
    ssize_t i = meta_tree_find_ckpt(t, name);
    CLEANUP_FREE char *why = i < 0 ? meta_tree_why_absent(t, name) : NULL;
    if (why)
        req_error(req, CKPT_ERR_NOT_FOUND, "%s", why);
    else if (i < 0)
        req_error(req, CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", name);
    else
        req_reply(req, enc_checkpoint(t, (size_t) i, opt_bool(req->args, "size")));
}

static enum cmd_result
cmd_get(struct request *req)
{
    if (vm_reply_if_lost(req, opt_str(req->args, "name")))
        return CMD_DONE;
    return with_fresh_tree(req, get_answer);
}

struct fresh {
    struct request *req;
    void (*answer)(struct request *);
};

static void
fresh_done(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct fresh f = *(struct fresh *) opaque;
    free(opaque);
    if (err)
        req_qmp_error(f.req, err, "reading bitmap sizes");
    else
        f.answer(f.req);
}

static enum cmd_result
with_fresh_tree(struct request *req, void (*answer)(struct request *))
{
    if (!opt_bool(req->args, "size")) {
        answer(req);
        return CMD_DONE;
    }
    struct fresh *f = xmalloc(sizeof *f);
    *f = (struct fresh) { req, answer };
    vm_refresh(req->agent, fresh_done, f);
    return CMD_WAIT;
}

static const struct cmd_arg create_args[] = {
    { "name", ARG_STRING, false }, { "description", ARG_STRING, false },
    { "disks", ARG_STRING_LIST, false }, { "quiesce", ARG_BOOL, false },
    { "xml", ARG_STRING, false }, { NULL, 0, false },
};
static const struct cmd_arg list_args[] = {
    { "from", ARG_STRING, false }, { "descendants", ARG_BOOL, false },
    { "roots", ARG_BOOL, false }, { "leaves", ARG_BOOL, false },
    { "no-leaves", ARG_BOOL, false }, { "topological", ARG_BOOL, false },
    { "size", ARG_BOOL, false }, { NULL, 0, false },
};
static const struct cmd_arg get_args[] = {
    { "name", ARG_STRING, true }, { "size", ARG_BOOL, false }, { NULL, 0, false },
};
static const struct cmd_arg delete_args[] = {
    { "name", ARG_STRING, true }, { "children", ARG_BOOL, false },
    { "children-only", ARG_BOOL, false }, { NULL, 0, false },
};

const struct ckpt_cmd checkpoint_cmds[] = {
    { "checkpoint-create", create_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH, cmd_create },
    { "checkpoint-list", list_args, CMD_NEEDS_QEMU, cmd_list },
    { "checkpoint-get", get_args, CMD_NEEDS_QEMU, cmd_get },
    { "checkpoint-delete", delete_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH, cmd_delete },
    { NULL, NULL, 0, NULL },
};
