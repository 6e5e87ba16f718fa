/* Disks and checkpoints as the JSON objects of PROTOCOL.md. */
#include "agent/agent.h"
#include "bitmap/plan.h"

json_t *
enc_disk(const struct meta_disk *d)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:b,s:b}", "disk", d->disk,
                          "node-name", d->active, "format", d->format,
                          "filename", d->filename,
                          "virtual-size", (json_int_t) d->virtual_size,
                          "checkpoints", d->can_checkpoint,
                          "tracking", d->tracking);
    if (d->reason)
        json_object_set_new(o, "reason", json_string(d->untracked ? d->untracked
                                                                  : d->reason));
    if (d->foreign) {
        json_t *names = json_array();
        for (size_t i = 0; i < d->foreign_names.len; i++)
            json_array_append_new(names, json_string(d->foreign_names.ptr[i]));
        json_object_set_new(o, "foreign", json_pack("{s:s?,s:o,s:s}", "chain",
                            d->foreign_chain[0] ? d->foreign_chain : NULL,
                            "checkpoints", names, "reason", d->foreign));
    }
    if (d->stale_names.len) {
        json_t *names = json_array();
        for (size_t i = 0; i < d->stale_names.len; i++)
            json_array_append_new(names, json_string(d->stale_names.ptr[i]));
        json_object_set_new(o, "stale", json_pack("{s:o,s:s}", "checkpoints", names,
            "reason", d->can_checkpoint
                ? "deleted while this disk was detached: not checkpoints any more; "
                  "their bitmaps still count in incrementals and are folded into "
                  "the older checkpoints by the next change"
                : "deleted while this disk was detached: not checkpoints any more; "
                  "their bitmaps still count in incrementals and stay until the "
                  "disk can hold checkpoints again"));
    }
    return o;
}

static json_t *
enc_member(const struct meta_tree *t, size_t i, const struct meta_member *m,
           bool with_size)
{
    const struct meta_disk *d = &t->disks[m->disk];
    bool consistent = m->bitmap && !ckpt_member_unusable(m);
    json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:b}", "disk", d->disk, "node-name",
                          d->node, "bitmap", t->ckpts[i].rec.name,
                          "consistent", consistent, "tracking", d->tracking);
    if (!d->tracking)
        json_object_set_new(o, "reason", json_string(d->untracked));
    if (with_size)
        json_object_set_new(o, "size",
                            json_integer((json_int_t) meta_tree_changed_since(t, i, m->disk)));
    return o;
}

json_t *
enc_checkpoint(const struct meta_tree *t, size_t i, bool with_size)
{
    const struct meta_ckpt *c = &t->ckpts[i];
    CLEANUP_FREE char *id = meta_tree_ckpt_id(t, i);
    json_t *o = json_pack("{s:s,s:s}", "name", c->rec.name, "id", id);
    ssize_t parent = meta_tree_parent(t, i);
    if (parent >= 0)
        json_object_set_new(o, "parent", json_string(t->ckpts[parent].rec.name));
    if (c->rec.description)
        json_object_set_new(o, "description", json_string(c->rec.description));
    json_object_set_new(o, "creation-time", json_integer(c->rec.ctime));
    json_t *disks = json_array();
    for (size_t k = 0; k < c->nmembers; k++)
        json_array_append_new(disks, enc_member(t, i, &c->members[k], with_size));
    json_object_set_new(o, "disks", disks);
    return o;
}
