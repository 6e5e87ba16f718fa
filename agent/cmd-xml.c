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
            xd->has_size = true;
            xd->size = meta_tree_changed_since(t, i, d);
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
    if (meta_xml_parse_checkpoints_vm(xml, strlen(xml), &a->tree, &list, &n, &e) < 0) {
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

/* --- checkpoint-export: every checkpoint as a <checkpoints> list, oldest
 * first, for `virsh checkpoint-create --redefine`; with release, the images
 * are turned back into libvirt's layout in the same step --- */
static char *
export_xml(const struct meta_tree *t)
{
    struct meta_xml_ckpt *list = xcalloc(t->nckpts + 1, sizeof *list);
    for (size_t i = 0; i < t->nckpts; i++)
        xml_from_tree(t, i, false, &list[i]);
    char *xml = meta_xml_format_checkpoints(list, t->nckpts);
    meta_xml_ckpts_free(list, t->nckpts);
    return xml;
}

static void
release_finish(struct change *ch)
{
    if (change_reply_qemu_error(ch, "handing the checkpoints back"))
        return;
    req_reply(ch->req, json_pack("{s:s}", "xml", ch->name));
}

static enum cmd_result
cmd_export(struct request *req)
{
    struct agent *a = req->agent;
    CLEANUP_FREE char *xml = export_xml(&a->tree);
    if (!json_is_true(json_object_get(req->args, "release"))) {
        req_reply(req, json_pack("{s:s}", "xml", xml));
        return CMD_DONE;
    }
    for (size_t i = 0; i < a->tree.nckpts; i++)
        if (job_holding_checkpoint(a, a->tree.ckpts[i].rec.name)) {
            req_error(req, CKPT_ERR_BUSY, "checkpoint '%s' is in use by a backup",
                      a->tree.ckpts[i].rec.name);
            return CMD_DONE;
        }
    struct ckpt_error e = { 0 };
    json_t *actions = json_array();
    if (ckpt_plan_release(&a->tree, actions, &e)) {
        json_decref(actions);
        req_fail(req, &e);
        return CMD_DONE;
    }
    if (json_array_size(actions) == 0) {
        json_decref(actions);
        req_reply(req, json_pack("{s:s}", "xml", xml));
        return CMD_DONE;
    }
    /* The XML is taken before the records go; it rides on the change. */
    change_send(change_new(req, xml, release_finish), actions);
    return CMD_WAIT;
}

static const struct cmd_arg export_args[] = {
    { "release", ARG_BOOL, false }, { NULL, 0, false },
};

static const struct cmd_arg dumpxml_args[] = {
    { "name", ARG_STRING, true }, { "size", ARG_BOOL, false }, { NULL, 0, false },
};
static const struct cmd_arg redefine_args[] = {
    { "xml", ARG_STRING, true }, { NULL, 0, false },
};

const struct ckpt_cmd xml_cmds[] = {
    { "checkpoint-dumpxml", dumpxml_args, CMD_NEEDS_QEMU, cmd_dumpxml },
    { "checkpoint-redefine", redefine_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH, cmd_redefine },
    { "checkpoint-export", export_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH, cmd_export },
    { NULL, NULL, 0, NULL },
};

/* --- XML arguments of checkpoint-create and backup-begin, turned into the
 * JSON arguments those commands already take, so there is one code path
 * after this point --- */

static bool
reply_conflict(struct request *req, const char *const *keys)
{
    for (; *keys; keys++)
        if (json_object_get(req->args, *keys)) {
            req_error(req, CKPT_ERR_INVALID_PARAMETER,
                      "'xml' and '%s' cannot be used together", *keys);
            return true;
        }
    return false;
}

/* A parsed <domaincheckpoint> as checkpoint-create's JSON arguments: name,
 * description, and "disks" only when the document lists them (those with
 * checkpoint='bitmap', whose bitmap must be named like the checkpoint). */
static json_t *
ckpt_args_from_xml(struct request *req, const struct meta_xml_ckpt *c)
{
    json_t *args = json_object();
    if (c->name)
        json_object_set_new(args, "name", json_string(c->name));
    if (c->description)
        json_object_set_new(args, "description", json_string(c->description));
    if (!c->ndisks)
        return args;
    json_t *disks = json_array();
    json_object_set_new(args, "disks", disks);
    for (size_t k = 0; k < c->ndisks; k++) {
        const struct meta_xml_disk *d = &c->disks[k];
        if (d->checkpoint && d->bitmap && c->name && strcmp(d->bitmap, c->name) != 0) {
            req_error(req, CKPT_ERR_UNSUPPORTED, "disk '%s': ckptd names each "
                      "checkpoint's bitmap like the checkpoint, not '%s'",
                      d->name, d->bitmap);
            json_decref(args);
            return NULL;
        }
        if (d->checkpoint)
            json_array_append_new(disks, json_string(d->name));
    }
    return args;
}

static json_t *
parse_ckpt_args(struct request *req, const char *xml)
{
    struct meta_xml_ckpt c;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_checkpoint_vm(xml, strlen(xml), &req->agent->tree, &c, &e) < 0) {
        req_fail(req, &e);
        return NULL;
    }
    json_t *args = ckpt_args_from_xml(req, &c);
    meta_xml_ckpt_clear(&c);
    return args;
}

/* checkpoint-create {xml}. */
bool
xml_create_args(struct request *req)
{
    static const char *const own[] = { "name", "description", "disks", NULL };
    const char *xml = json_string_value(json_object_get(req->args, "xml"));
    if (!xml)
        return true;
    if (reply_conflict(req, own))
        return false;
    json_t *args = parse_ckpt_args(req, xml);
    if (!args)
        return false;
    json_object_del(req->args, "xml");
    json_object_update(req->args, args);
    json_decref(args);
    return true;
}

/* One disk of a <domainbackup>: what ckptd cannot do is refused, not
 * silently ignored.  Returns the disk's scratch directory (or NULL). */
static const char *
check_backup_disk(struct request *req, const struct meta_xml_backup_disk *d,
                  bool *ok)
{
    const char *why = NULL;
    if (d->block)
        why = "block device scratch images are not supported";
    else if (d->encryption)
        why = "encrypted scratch images are not supported";
    else if (d->exportname && strcmp(d->exportname, d->name) != 0)
        why = "exports are named like their disk";
    else if (d->exportbitmap)
        why = "the exported bitmap's name is chosen by ckptd (see query-backup)";
    else if (d->backupmode != META_XML_BACKUPMODE_DEFAULT || d->incremental)
        why = "per-disk backup modes are not supported";
    if (why) {
        req_error(req, CKPT_ERR_UNSUPPORTED, "disk '%s': %s", d->name, why);
        *ok = false;
    }
    return d->scratch;
}

static json_t *
xml_server(const struct meta_xml_backup *b)
{
    if (!b->transport)
        return NULL;
    if (strcmp(b->transport, "unix") == 0)
        return json_pack("{s:s,s:s}", "transport", "unix", "path", b->socket);
    json_t *s = json_pack("{s:s,s:s,s:b}", "transport", "tcp", "host", b->host,
                          "tls", b->tls);
    json_object_set_new(s, "port", json_string(b->port ? b->port : "10809"));
    return s;
}

/* All of a job's scratch files go in one directory: the <scratch file=>
 * names must agree on it (the file names themselves are ckptd's). */
static bool
scratch_dir_of(struct request *req, const struct meta_xml_backup *b, json_t **dir)
{
    bool ok = true;
    *dir = NULL;
    for (size_t k = 0; k < b->ndisks && ok; k++) {
        if (!b->disks[k].backup)
            continue;
        const char *file = check_backup_disk(req, &b->disks[k], &ok);
        const char *slash = file ? strrchr(file, '/') : NULL;
        if (!ok || !slash)
            continue;
        json_t *d = json_stringn(file, (size_t) (slash - file));
        if (*dir && !json_equal(*dir, d)) {
            req_error(req, CKPT_ERR_UNSUPPORTED, "the scratch files of one backup "
                      "must be in one directory");
            ok = false;
        }
        json_decref(*dir);
        *dir = d;
    }
    if (!ok) {
        json_decref(*dir);
        *dir = NULL;
    }
    return ok;
}

/* <domainbackup mode='push'>: each disk's <target file=> becomes its
 * {"file"} target (inside --backup-dir, as for JSON requests). */
static bool
xml_push_targets(struct request *req, const struct meta_xml_backup *b, json_t *targets)
{
    for (size_t k = 0; k < b->ndisks; k++) {
        const struct meta_xml_backup_disk *d = &b->disks[k];
        const char *why = NULL;
        if (!d->backup)
            continue;
        if (d->block)
            why = "block device targets are not supported";
        else if (d->encryption)
            why = "encrypted targets are not supported";
        else if (d->scratch)
            why = "a push backup has no scratch image";
        else if (d->driver && strcmp(d->driver, "qcow2") != 0)
            why = "targets are qcow2 images";
        else if (d->backupmode != META_XML_BACKUPMODE_DEFAULT || d->incremental)
            why = "per-disk backup modes are not supported";
        else if (!d->target)
            why = "a push backup needs <target file='...'/>";
        if (why) {
            req_error(req, CKPT_ERR_UNSUPPORTED, "disk '%s': %s", d->name, why);
            return false;
        }
        json_object_set_new(targets, d->name, json_pack("{s:s}", "file", d->target));
    }
    return true;
}

/* checkpoint-xml of backup-begin: as libvirt, a checkpoint without <disks>
 * covers every disk that can hold one, whether or not the backup reads it. */
static json_t *
xml_checkpoint_arg(struct request *req, const char *xml, bool *ok)
{
    if (!xml)
        return NULL;
    json_t *arg = parse_ckpt_args(req, xml);
    if (!arg) {
        *ok = false;
        return NULL;
    }
    const struct meta_tree *t = &req->agent->tree;
    if (!json_object_get(arg, "disks")) {
        json_t *disks = json_array();
        for (size_t d = 0; d < t->ndisks; d++)
            if (t->disks[d].can_checkpoint)
                json_array_append_new(disks, json_string(t->disks[d].disk));
        json_object_set_new(arg, "disks", disks);
    }
    return arg;
}

/* backup-begin {xml, checkpoint-xml?}. */
bool
xml_backup_args(struct request *req)
{
    static const char *const own[] = { "mode", "incremental", "disks", "server",
                                       "scratch-dir", "checkpoint", "targets", NULL };
    const char *xml = json_string_value(json_object_get(req->args, "xml"));
    const char *cxml = json_string_value(json_object_get(req->args, "checkpoint-xml"));
    if (!xml) {
        if (!cxml)
            return true;
        req_error(req, CKPT_ERR_INVALID_PARAMETER, "'checkpoint-xml' needs 'xml'");
        return false;
    }
    if (reply_conflict(req, own))
        return false;
    struct meta_xml_backup b;
    struct ckpt_error e = { 0 };
    if (meta_xml_parse_backup_vm(xml, strlen(xml), &req->agent->tree, &b, &e) < 0) {
        req_fail(req, &e);
        return false;
    }
    bool ok = true;
    json_t *dir = NULL, *disks = json_array(), *targets = json_object();
    json_t *ckpt = xml_checkpoint_arg(req, cxml, &ok);
    if (b.pull)
        ok = ok && scratch_dir_of(req, &b, &dir);
    else
        ok = ok && xml_push_targets(req, &b, targets);
    for (size_t k = 0; ok && k < b.ndisks; k++)
        if (b.disks[k].backup)
            json_array_append_new(disks, json_string(b.disks[k].name));
    if (ok) {
        json_object_del(req->args, "xml");
        json_object_del(req->args, "checkpoint-xml");
        json_object_set_new(req->args, "mode", json_string(b.pull ? "pull" : "push"));
        if (!b.pull)
            json_object_set(req->args, "targets", targets);
        if (b.incremental)
            json_object_set_new(req->args, "incremental", json_string(b.incremental));
        if (b.ndisks)
            json_object_set(req->args, "disks", disks);
        if (b.transport)
            json_object_set_new(req->args, "server", xml_server(&b));
        if (dir)
            json_object_set(req->args, "scratch-dir", dir);
        if (ckpt)
            json_object_set(req->args, "checkpoint", ckpt);
    }
    json_decref(dir);
    json_decref(disks);
    json_decref(targets);
    json_decref(ckpt);
    meta_xml_backup_clear(&b);
    return ok;
}

/* query-backup {xml: true}: the job as libvirt's backup-dumpxml prints it. */
char *
xml_backup_dump(const struct backup_job *job)
{
    struct meta_xml_backup b = {
        .pull = !job->push, .incremental = job->incremental,
        .tls = json_is_true(json_object_get(job->server, "tls")),
        .ndisks = job->ndisks,
    };
    const char *transport = json_string_value(json_object_get(job->server, "transport"));
    b.transport = (char *) transport;
    b.socket = (char *) json_string_value(json_object_get(job->server, "path"));
    b.host = (char *) json_string_value(json_object_get(job->server, "host"));
    b.port = (char *) json_string_value(json_object_get(job->server, "port"));
    b.disks = xcalloc(job->ndisks + 1, sizeof *b.disks);
    for (size_t k = 0; k < job->ndisks; k++)
        b.disks[k] = (struct meta_xml_backup_disk) {
            .name = job->disks[k].disk, .backup = true,
            .exportname = job->disks[k].disk, .exportbitmap = job->disks[k].bitmap,
            .scratch = job->disks[k].scratch,
            /* push: the file target (an fd target has no path to show) */
            .target = job->disks[k].target, .driver = job->push ? (char *) "qcow2" : NULL,
        };
    char *xml = meta_xml_format_backup(&b);
    free(b.disks);                      /* the strings are the job's */
    return xml;
}
