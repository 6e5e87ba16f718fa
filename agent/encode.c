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
    json_t *o = json_pack("{s:s}", "name", c->rec.name);
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
