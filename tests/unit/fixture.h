/* Unit-test fixtures: a checkpoint tree from a compact description, built
 * through the same JSON QEMU 7.2 returns for query-block and
 * query-named-block-nodes (flat), and a compact rendering of transaction
 * action lists so that tests can compare them as one string.
 *
 * Include after <cmocka.h>.  Header-only: every function is static. */
#ifndef CKPTD_TEST_FIXTURE_H
#define CKPTD_TEST_FIXTURE_H

#include <inttypes.h>
#include <stdio.h>

#include "common/common.h"
#include "metadata/metadata.h"

/* Every record in a fixture has this creation time. */
#define FX_CTIME 1000

/* Not every test file uses every helper. */
#define FX_FN static __attribute__((unused))

enum {
    FX_REC = 1,         /* the data bitmap records (else disabled) */
    FX_BAD = 2,         /* inconsistent (QEMU crashed): data and record */
    FX_NODATA = 4,      /* only the record: the data bitmap is missing */
};

/* One bitmap on a disk.  seq > 0: a checkpoint member, i.e. the data
 * bitmap `name` plus its record "ckptd1:SEQ:1000:NAME".  seq == 0: one
 * plain bitmap named `name` (a user's, or any literal name). */
struct fx_bm {
    const char *name;
    unsigned seq;
    unsigned flags;
    uint64_t count;
};

/* One disk.  id: the device id (qdev "/machine/peripheral/ID/virtio-backend",
 * format node "ID-fmt"); for an anonymous device set qdev and node instead.
 * drv defaults to qcow2, compat to 1.1.  bms ends with a {NULL} entry (may
 * be NULL for none).  An array of disks ends with {NULL}. */
struct fx_disk {
    const char *id;
    const struct fx_bm *bms;
    const char *drv;
    bool ro;
    const char *compat;
    const char *qdev;
    const char *node;
};

#define FX_BMS(...) ((const struct fx_bm[]) { __VA_ARGS__, { .name = NULL } })
/* A checkpoint member or plain bitmap, count 0. */
#define FX_BM(name_, seq_, flags_) { .name = (name_), .seq = (seq_), .flags = (flags_) }
/* A disk with a device id and one or more bitmaps; for other settings
 * write the initializer, e.g. { .id = "vda", .drv = "raw" }. */
#define FX_DISK(id_, ...) { .id = (id_), .bms = FX_BMS(__VA_ARGS__) }
#define FX_DISKS(...) ((const struct fx_disk[]) { __VA_ARGS__, { .id = NULL } })

FX_FN char *
fx_node_name(const struct fx_disk *d)
{
    return d->node ? xstrdup(d->node) : xasprintf("%s-fmt", d->id);
}

FX_FN char *
fx_record_name(const char *name, unsigned seq)
{
    return xasprintf(META_RECORD_PREFIX "%u:%d:%s", seq, FX_CTIME, name);
}

FX_FN json_t *
fx_bitmap_json(const char *name, bool recording, bool inconsistent,
               uint64_t granularity, uint64_t count)
{
    json_t *b = json_pack("{s:s, s:b, s:b, s:b, s:I, s:I}",
                          "name", name, "recording", recording,
                          "persistent", 1, "busy", 0,
                          "granularity", (json_int_t) granularity,
                          "count", (json_int_t) count);
    assert_non_null(b);
    if (inconsistent)
        json_object_set_new(b, "inconsistent", json_true());
    return b;
}

/* The dirty-bitmaps list of one disk, newest first as QEMU lists them. */
FX_FN json_t *
fx_bitmaps_json(const struct fx_disk *d)
{
    json_t *list = json_array();
    for (const struct fx_bm *b = d->bms; b && b->name; b++) {
        bool bad = b->flags & FX_BAD;
        if (b->seq == 0) {
            json_array_insert_new(list, 0, fx_bitmap_json(b->name, b->flags & FX_REC,
                                                          bad, 65536, b->count));
            continue;
        }
        if (!(b->flags & FX_NODATA))
            json_array_insert_new(list, 0, fx_bitmap_json(b->name, b->flags & FX_REC,
                                                          bad, 65536, b->count));
        char *rec = fx_record_name(b->name, b->seq);
        json_array_insert_new(list, 0, fx_bitmap_json(rec, false, bad,
                                                      META_RECORD_GRANULARITY, 0));
        free(rec);
    }
    return list;
}

/* query-block and query-named-block-nodes (flat) for these disks. */
FX_FN void
fx_json(const struct fx_disk *disks, json_t **blocks, json_t **nodes)
{
    *blocks = json_array();
    *nodes = json_array();
    for (const struct fx_disk *d = disks; d->id || d->node; d++) {
        char *node = fx_node_name(d);
        char *file = xasprintf("/x/%s.%s", node, d->drv ? d->drv : "qcow2");
        char *qdev = d->qdev ? xstrdup(d->qdev)
                             : xasprintf("/machine/peripheral/%s/virtio-backend", d->id);
        char *proto = xasprintf("%s-file", node);
        const char *drv = d->drv ? d->drv : "qcow2";
        json_t *image = json_pack("{s:s, s:I, s:s}", "filename", file,
                                  "virtual-size", (json_int_t) 1073741824,
                                  "format", drv);
        assert_non_null(image);
        if (strcmp(drv, "qcow2") == 0)
            json_object_set_new(image, "format-specific",
                json_pack("{s:s, s:{s:s, s:b, s:i}}", "type", "qcow2", "data",
                          "compat", d->compat ? d->compat : "1.1",
                          "lazy-refcounts", 0, "refcount-bits", 16));
        json_t *inserted = json_pack("{s:s, s:s, s:b, s:s, s:i, s:b, s:O, s:o}",
                                     "node-name", node, "drv", drv, "ro", d->ro,
                                     "file", file, "encryption_key_missing", 0,
                                     "encrypted", 0, "image", image,
                                     "dirty-bitmaps", fx_bitmaps_json(d));
        assert_non_null(inserted);
        json_t *block = json_pack("{s:s, s:s, s:b, s:b, s:s, s:s, s:o}",
                                  "device", "", "qdev", qdev, "locked", 0,
                                  "removable", 0, "type", "unknown",
                                  "io-status", "ok", "inserted", inserted);
        assert_non_null(block);
        json_array_append_new(*blocks, block);

        /* The format node, then its protocol node, as QEMU lists them. */
        json_t *fmt = json_pack("{s:s, s:s, s:b, s:s, s:O, s:o}",
                                "node-name", node, "drv", drv, "ro", d->ro,
                                "file", file, "image", image,
                                "dirty-bitmaps", fx_bitmaps_json(d));
        json_t *prot = json_pack("{s:s, s:s, s:b, s:s, s:[]}",
                                 "node-name", proto, "drv", "file", "ro", d->ro,
                                 "file", file, "dirty-bitmaps");
        assert_non_null(fmt);
        assert_non_null(prot);
        json_array_append_new(*nodes, fmt);
        json_array_append_new(*nodes, prot);
        json_decref(image);
        free(node);
        free(file);
        free(qdev);
        free(proto);
    }
}

/* Builds t from raw JSON (takes ownership of blocks and nodes). */
FX_FN void
fx_build_json(json_t *blocks, json_t *nodes, struct meta_tree *t)
{
    struct ckpt_error e = { 0 };
    int r = meta_tree_build(blocks, nodes, t, &e);
    json_decref(blocks);
    json_decref(nodes);
    if (r != 0)
        fail_msg("meta_tree_build failed: %s", e.msg);
}

FX_FN void
fx_build(const struct fx_disk *disks, struct meta_tree *t)
{
    json_t *blocks, *nodes;
    fx_json(disks, &blocks, &nodes);
    fx_build_json(blocks, nodes, t);
}

/* --- action lists --- */

FX_FN const char *
fx_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : "(none)";
}

/* One action in short form:
 *   add NODE NAME       add, persistent, recording, default granularity
 *   addrec NODE NAME    add, persistent, disabled, granularity 2^31
 *   disable|enable|remove NODE NAME
 *   merge NODE TARGET < SRC SRC...
 * anything else (extra keys, other values) as "?" and its JSON. */
FX_FN void
fx_render_one(FILE *f, json_t *a)
{
    const char *type = fx_str(a, "type");
    json_t *data = json_object_get(a, "data");
    size_t keys = json_object_size(data);
    const char *node = fx_str(data, "node");
    if (json_object_size(a) != 2 || !json_is_object(data))
        goto other;
    if (strcmp(type, "block-dirty-bitmap-add") == 0) {
        bool persistent = json_is_true(json_object_get(data, "persistent"));
        bool disabled = json_is_true(json_object_get(data, "disabled"));
        json_t *gran = json_object_get(data, "granularity");
        if (!json_is_boolean(json_object_get(data, "disabled")) || !persistent)
            goto other;
        if (!disabled && !gran && keys == 4) {
            fprintf(f, "add %s %s", node, fx_str(data, "name"));
            return;
        }
        if (disabled && keys == 5 && json_is_integer(gran) &&
            json_integer_value(gran) == (json_int_t) META_RECORD_GRANULARITY) {
            fprintf(f, "addrec %s %s", node, fx_str(data, "name"));
            return;
        }
        goto other;
    }
    static const char *const simple[][2] = {
        { "block-dirty-bitmap-disable", "disable" },
        { "block-dirty-bitmap-enable", "enable" },
        { "block-dirty-bitmap-remove", "remove" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(simple); i++)
        if (strcmp(type, simple[i][0]) == 0) {
            if (keys != 2)
                goto other;
            fprintf(f, "%s %s %s", simple[i][1], node, fx_str(data, "name"));
            return;
        }
    if (strcmp(type, "block-dirty-bitmap-merge") == 0) {
        json_t *srcs = json_object_get(data, "bitmaps");
        if (keys != 3 || !json_is_array(srcs))
            goto other;
        fprintf(f, "merge %s %s <", node, fx_str(data, "target"));
        size_t i;
        json_t *s;
        json_array_foreach(srcs, i, s) {
            if (!json_is_string(s))
                goto other;
            fprintf(f, " %s", json_string_value(s));
        }
        return;
    }
other:;
    char *dump = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
    fprintf(f, "? %s", dump ? dump : "(null)");
    free(dump);
}

/* The whole list, actions separated by "; ".  Caller frees. */
FX_FN char *
fx_render(json_t *actions)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_true(json_is_array(actions));
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a) {
        if (i)
            fputs("; ", f);
        fx_render_one(f, a);
    }
    fclose(f);
    return buf;
}

/* Does the list render as expected?  Prints both when not, so a test can
 * free what it holds before failing. */
FX_FN bool
fx_actions_match(json_t *actions, const char *expected)
{
    char *got = fx_render(actions);
    bool ok = strcmp(got, expected) == 0;
    if (!ok)
        print_error("actions:\n  got:      %s\n  expected: %s\n", got, expected);
    free(got);
    return ok;
}

#define fx_assert_actions(actions, expected) \
    assert_true(fx_actions_match((actions), (expected)))

/* On every node, no merge, enable, disable or add after the first remove:
 * a transaction must not touch a bitmap after removing one. */
FX_FN bool
fx_removes_last(json_t *actions)
{
    size_t i, j;
    json_t *a, *b;
    json_array_foreach(actions, i, a) {
        if (strcmp(fx_str(a, "type"), "block-dirty-bitmap-remove") != 0)
            continue;
        const char *node = fx_str(json_object_get(a, "data"), "node");
        json_array_foreach(actions, j, b) {
            if (j <= i)
                continue;
            if (strcmp(fx_str(json_object_get(b, "data"), "node"), node) == 0 &&
                strcmp(fx_str(b, "type"), "block-dirty-bitmap-remove") != 0) {
                print_error("action %zu (%s) on %s comes after a remove\n", j,
                            fx_str(b, "type"), node);
                return false;
            }
        }
    }
    return true;
}

/* The strings of a str_vec joined with " ". Caller frees. */
FX_FN char *
fx_join(const struct str_vec *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    for (size_t i = 0; i < v->len; i++)
        fprintf(f, "%s%s", i ? " " : "", v->ptr[i]);
    fclose(f);
    return buf;
}

#endif
