/* Disks and checkpoints as the JSON objects of PROTOCOL.md.
 *
 * Checkpoints are written as text directly, one encoder for every reply:
 * checkpoint-list of 1,000 checkpoints is 150 KB, and building it as
 * jansson objects and then dumping them cost 20 times what appending the
 * text does (perf: json_pack, json_dumps and malloc were 75 % of the
 * agent's time answering it).  A single checkpoint (create, get) is that
 * text parsed back, so both are the same bytes. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <inttypes.h>
#include <stdio.h>

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

/* --- text --- */
static void
grow(struct enc_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void
enc_raw(struct enc_buf *b, const char *s, size_t n)
{
    grow(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
enc_lit(struct enc_buf *b, const char *s)
{
    enc_raw(b, s, strlen(s));
}

/* A JSON string as jansson writes it (UTF-8 kept, control characters
 * escaped).  Text that is not UTF-8 cannot be sent: b->bad. */
static void
enc_str(struct enc_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (!utf8_valid(s, n))
        b->bad = true;
    grow(b, n + 2);
    b->p[b->len++] = '"';
    const char *run = s;
    for (const char *q = s; ; q++) {
        unsigned char ch = (unsigned char) *q;
        if (ch && ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        enc_raw(b, run, (size_t) (q - run));
        if (!ch)
            break;
        char esc[8];
        switch (ch) {
        case '"': enc_lit(b, "\\\""); break;
        case '\\': enc_lit(b, "\\\\"); break;
        case '\b': enc_lit(b, "\\b"); break;
        case '\f': enc_lit(b, "\\f"); break;
        case '\n': enc_lit(b, "\\n"); break;
        case '\r': enc_lit(b, "\\r"); break;
        case '\t': enc_lit(b, "\\t"); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            enc_lit(b, esc);
        }
        run = q + 1;
    }
    enc_raw(b, "\"", 1);
}

static void
enc_key_str(struct enc_buf *b, const char *key, const char *val)
{
    enc_lit(b, key);
    enc_str(b, val);
}

static void
enc_member_text(struct enc_buf *b, const struct meta_tree *t, size_t i,
                const struct meta_member *m, bool with_size)
{
    const struct meta_disk *d = &t->disks[m->disk];
    bool consistent = m->bitmap && !ckpt_member_unusable(m);
    enc_key_str(b, "{\"disk\":", d->disk);
    enc_key_str(b, ",\"node-name\":", d->node);
    enc_key_str(b, ",\"bitmap\":", t->ckpts[i].rec.name);
    enc_lit(b, consistent ? ",\"consistent\":true" : ",\"consistent\":false");
    enc_lit(b, d->tracking ? ",\"tracking\":true" : ",\"tracking\":false");
    if (!d->tracking)
        enc_key_str(b, ",\"reason\":", d->untracked ? d->untracked : "");
    if (with_size) {
        char num[32];
        snprintf(num, sizeof num, ",\"size\":%" PRIu64,
                 meta_tree_changed_since(t, i, m->disk));
        enc_lit(b, num);
    }
    enc_raw(b, "}", 1);
}

void
enc_checkpoint_text(struct enc_buf *b, const struct meta_tree *t, size_t i,
                    bool with_size)
{
    const struct meta_ckpt *c = &t->ckpts[i];
    CLEANUP_FREE char *id = meta_tree_ckpt_id(t, i);
    enc_key_str(b, "{\"name\":", c->rec.name);
    enc_key_str(b, ",\"id\":", id);
    ssize_t parent = meta_tree_parent(t, i);
    if (parent >= 0)
        enc_key_str(b, ",\"parent\":", t->ckpts[parent].rec.name);
    if (c->rec.description)
        enc_key_str(b, ",\"description\":", c->rec.description);
    char num[40];
    snprintf(num, sizeof num, ",\"creation-time\":%" PRId64 ",\"disks\":[",
             c->rec.ctime);
    enc_lit(b, num);
    for (size_t k = 0; k < c->nmembers; k++) {
        if (k)
            enc_raw(b, ",", 1);
        enc_member_text(b, t, i, &c->members[k], with_size);
    }
    enc_raw(b, "]}", 2);
}

json_t *
enc_checkpoint(const struct meta_tree *t, size_t i, bool with_size)
{
    struct enc_buf b = { 0 };
    enc_checkpoint_text(&b, t, i, with_size);
    json_t *o = b.bad ? NULL : json_loadb(b.p, b.len, 0, NULL);
    free(b.p);
    return o;
}
