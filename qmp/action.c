/* Builders for the actions of a QMP `transaction`.  Plans (bitmap/) are
 * lists of these, so they stay plain JSON that tests can compare. */
#include "qmp/qmp.h"

#include "common/common.h"

/* jansson returns NULL when out of memory or on a string that is not
 * UTF-8.  Names reaching here are validated ASCII or came from QEMU's own
 * (already UTF-8-checked) JSON, so either case is a bug: abort loudly,
 * like xmalloc. */
static json_t *
qmp_check(json_t *j)
{
    if (!j) {
        log_error("qmp: cannot build a QMP action (out of memory or "
                  "invalid UTF-8)");
        abort();
    }
    return j;
}

json_t *
qmp_action(const char *type, json_t *data)
{
    return qmp_check(json_pack("{s:s, s:o}", "type", type, "data", data));
}

json_t *
qmp_bitmap_action(const char *type, const char *node, const char *name)
{
    return qmp_action(type, qmp_check(json_pack("{s:s, s:s}", "node", node,
                                                "name", name)));
}

json_t *
qmp_bitmap_add(const char *node, const char *name, bool persistent,
               bool disabled, unsigned long granularity)
{
    json_t *data = qmp_check(json_pack("{s:s, s:s, s:b, s:b}",
                                       "node", node, "name", name,
                                       "persistent", persistent,
                                       "disabled", disabled));
    /* Absent means QEMU's default, which depends on the image's cluster
     * size; only an explicit choice is passed on. */
    if (granularity)
        json_object_set_new(data, "granularity",
                            qmp_check(json_integer((json_int_t) granularity)));
    return qmp_action("block-dirty-bitmap-add", data);
}

json_t *
qmp_bitmap_merge(const char *node, const char *target,
                 const char *const *sources, size_t nsources)
{
    json_t *bitmaps = qmp_check(json_array());
    for (size_t i = 0; i < nsources; i++)
        json_array_append_new(bitmaps, qmp_check(json_string(sources[i])));
    json_t *data = qmp_check(json_pack("{s:s, s:s, s:o}", "node", node,
                                       "target", target, "bitmaps", bitmaps));
    return qmp_action("block-dirty-bitmap-merge", data);
}

json_t *
qmp_bitmap_merge_refs(const char *node, const char *target, json_t *sources)
{
    json_t *data = qmp_check(json_pack("{s:s, s:s, s:o}", "node", node,
                                       "target", target, "bitmaps", sources));
    return qmp_action("block-dirty-bitmap-merge", data);
}

json_t *
qmp_bitmap_ref(const char *target_node, const char *node, const char *name)
{
    if (strcmp(target_node, node) == 0)
        return qmp_check(json_string(name));
    return qmp_check(json_pack("{s:s, s:s}", "node", node, "name", name));
}
