/* libvirt's XML: checkpoint-dumpxml and checkpoint-redefine (adopting
 * images checkpointed by libvirt).  The XML itself is metadata/xml.c's. */
#include "agent/agent.h"
#include "bitmap/plan.h"
#include "metadata/xml.h"

#include <time.h>

/* A checkpoint of the tree as libvirt describes it: every disk of the VM
 * is listed, with checkpoint='no' where the checkpoint does not cover it. */
static void
xml_from_tree(const struct meta_tree *t, size_t i, bool with_size,
              struct meta_xml_ckpt *out)
{
    const struct meta_ckpt *c = &t->ckpts[i];
    ssize_t parent = meta_tree_parent(t, i);
    *out = (struct meta_xml_ckpt) {
        .name = xstrdup(c->rec.name),
        .description = c->rec.description ? xstrdup(c->rec.description) : NULL,
        .parent = parent >= 0 ? xstrdup(t->ckpts[parent].rec.name) : NULL,
        .has_ctime = true, .ctime = c->rec.ctime,
        .disks = xcalloc(t->ndisks + 1, sizeof *out->disks), .ndisks = t->ndisks,
    };
    for (size_t d = 0; d < t->ndisks; d++) {
        struct meta_xml_disk *xd = &out->disks[d];
        xd->name = xstrdup(t->disks[d].disk);
        xd->checkpoint = meta_ckpt_member(c, d) != NULL;
        if (!xd->checkpoint)
            continue;
        xd->bitmap = xstrdup(c->rec.name);
        if (with_size) {
            uint64_t sum = 0;
            for (size_t j = i; j < t->nckpts; j++) {
                const struct meta_member *m = meta_ckpt_member(&t->ckpts[j], d);
                if (m && m->bitmap)
                    sum += m->bitmap->count;
            }
            xd->has_size = true;
            xd->size = sum;
        }
    }
}

/* --- checkpoint-dumpxml --- */
static void
dumpxml_answer(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    const char *name = json_string_value(json_object_get(req->args, "name"));
    bool size = json_is_true(json_object_get(req->args, "size"));
    ssize_t i = meta_tree_find_ckpt(&a->tree, name);
    if (err) {
        req_qmp_error(req, err, "reading bitmap sizes");
        return;
    }
    if (i < 0) {
        req_error(req, CKPT_ERR_NOT_FOUND, "checkpoint '%s' not found", name);
        return;
    }
    struct meta_xml_ckpt x;
    xml_from_tree(&a->tree, (size_t) i, size, &x);
    char *xml = meta_xml_format_checkpoint(&x);
    meta_xml_ckpt_clear(&x);
    req_reply(req, json_pack("{s:s}", "xml", xml));
    free(xml);
}

static enum cmd_result
cmd_dumpxml(struct request *req)
{
    if (vm_reply_if_lost(req, json_string_value(json_object_get(req->args, "name"))))
        return CMD_DONE;
    if (json_is_true(json_object_get(req->args, "size"))) {
        vm_refresh(req->agent, dumpxml_answer, req);
        return CMD_WAIT;
    }
    dumpxml_answer(req->agent, NULL, req);
    return CMD_DONE;
}

/* --- checkpoint-redefine --- */
static void
redefine_finish(struct change *ch)
{
    struct agent *a = ch->req->agent;
    if (change_reply_qemu_error(ch, "redefining checkpoints"))
        return;
    json_t *list = json_array();
    for (size_t k = 0; k < ch->names.len; k++) {
        ssize_t i = meta_tree_find_ckpt(&a->tree, ch->names.ptr[k]);
        if (i >= 0)
            json_array_append_new(list, enc_checkpoint(&a->tree, (size_t) i, false));
    }
    req_reply(ch->req, list);
    for (size_t k = 0; k < ch->names.len; k++)
        agent_event(a, "CHECKPOINT_CREATED", json_pack("{s:s}", "name", ch->names.ptr[k]));
}

static enum cmd_result
cmd_redefine(struct request *req)
{
    struct agent *a = req->agent;
    const char *xml = json_string_value(json_object_get(req->args, "xml"));
    struct meta_xml_ckpt *list = NULL;
    size_t n = 0;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_checkpoints(xml, strlen(xml), &list, &n, &e) < 0) {
        req_fail(req, &e);
        return CMD_DONE;
    }
    json_t *actions = json_array();
    if (ckpt_plan_redefine(&a->tree, list, n, (int64_t) time(NULL), actions, &e)) {
        json_decref(actions);
        meta_xml_ckpts_free(list, n);
        req_fail(req, &e);
        return CMD_DONE;
    }
    struct change *ch = change_new(req, NULL, redefine_finish);
    for (size_t i = 0; i < n; i++)
        str_vec_append(&ch->names, xstrdup(list[i].name));
    meta_xml_ckpts_free(list, n);
    change_send(ch, actions);
    return CMD_WAIT;
}

static const struct cmd_arg dumpxml_args[] = {
    { "name", ARG_STRING, true }, { "size", ARG_BOOL, false }, { NULL, 0, false },
};
static const struct cmd_arg redefine_args[] = {
    { "xml", ARG_STRING, true }, { NULL, 0, false },
};

const struct ckpt_cmd xml_cmds[] = {
    { "checkpoint-dumpxml", dumpxml_args, CMD_NEEDS_QEMU, cmd_dumpxml },
    { "checkpoint-redefine", redefine_args, CMD_NEEDS_QEMU | CMD_CHANGE, cmd_redefine },
    { NULL, NULL, 0, NULL },
};
