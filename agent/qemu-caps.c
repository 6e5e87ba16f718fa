/* What this QEMU offers beyond 7.2's baseline, read once per connection
 * from query-qmp-schema.  The schema is large (30-90 ms for QEMU to build
 * and for us to parse, and QEMU answers nothing else meanwhile), so it is
 * asked for half a second after the agent is ready (vm.c), or sooner by
 * the first change that plans with it (CMD_CAPS: a backup's begin), ahead
 * of that change's first queries: QEMU answers in order, so the caps are
 * in when the change is planned.  The start-up sweep needs
 * none of it (job-fleece.c).
 *
 * The schema names types by opaque numbers, but command names, union
 * cases and member names are plain: blockdev-add's argument type is the
 * BlockdevOptions union, whose "copy-before-write" case lists the
 * filter's options, and whose "snapshot-access" case exists when the
 * driver does.  A QEMU that cannot answer just has none of them. */
#include "agent/agent.h"

/* The schema entry named name, or NULL. */
static json_t *
schema_find(json_t *schema, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(schema, i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && strcmp(n, name) == 0)
            return e;
    }
    return NULL;
}

static bool
has_member(json_t *object, const char *name)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(object, "members"), i, m) {
        const char *n = json_string_value(json_object_get(m, "name"));
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

/* The object type of one case of a union, or NULL. */
static json_t *
union_case(json_t *schema, json_t *object, const char *tag)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(object, "variants"), i, v) {
        const char *c = json_string_value(json_object_get(v, "case"));
        const char *type = json_string_value(json_object_get(v, "type"));
        if (c && type && strcmp(c, tag) == 0)
            return schema_find(schema, type);
    }
    return NULL;
}

void
caps_from_schema(struct qemu_caps *c, json_t *schema)
{
    json_t *add = schema_find(schema, "blockdev-add");
    const char *arg = json_string_value(json_object_get(add, "arg-type"));
    json_t *opts = arg ? schema_find(schema, arg) : NULL;
    json_t *cbw = opts ? union_case(schema, opts, "copy-before-write") : NULL;
    c->cbw_break = cbw && has_member(cbw, "on-cbw-error");
    c->cbw_timeout = cbw && has_member(cbw, "cbw-timeout");
    c->cbw_min_cluster = cbw && has_member(cbw, "min-cluster-size");
    c->snapshot_access = opts && union_case(schema, opts, "snapshot-access");
    c->qom_set = schema_find(schema, "qom-set") != NULL;
    c->block_graph = schema_find(schema, "x-debug-query-block-graph") != NULL;
}

bool
caps_own_filter(const struct agent *a)
{
    const struct qemu_caps *c = &a->caps;
    return c->cbw_break && c->snapshot_access && c->qom_set && c->block_graph &&
           !a->opt.debug.no_filter;
}

static void
schema_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct agent *a = opaque;
    if (q != a->qmp)
        return;                 /* an old connection's answer */
    memset(&a->caps, 0, sizeof a->caps);
    a->caps.asked = true;
    if (err)
        log_warn("cannot read QEMU's schema (%s): using what QEMU 7.2 offers",
                 err->desc);
    else
        caps_from_schema(&a->caps, ret);
    vm_trim_soon(a);                    /* the schema is large: 0.3 MB */
    log_info("QEMU offers: copy-before-write on-cbw-error %s, cbw-timeout %s, "
             "min-cluster-size %s, snapshot-access %s; pull backups fleece %s",
             a->caps.cbw_break ? "yes" : "no", a->caps.cbw_timeout ? "yes" : "no",
             a->caps.cbw_min_cluster ? "yes" : "no",
             a->caps.snapshot_access ? "yes" : "no",
             caps_own_filter(a) ? "through ckptd's own filter (a full scratch "
                                  "breaks the backup, not the guest's writes)"
                                : "through a backup job");
}

void
caps_probe(struct agent *a)
{
    if (a->caps.asked)
        return;
    a->caps.asked = true;
    vm_send(a, "query-qmp-schema", NULL, schema_done, a);
}
