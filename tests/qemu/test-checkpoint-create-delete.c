/* checkpoint-create / -list / -get / -delete on two disks, checked against
 * the bitmaps QEMU reports: one recording bitmap per disk (the newest
 * checkpoint's), merges on delete so every survivor still covers every
 * write since it, and the same story per disk when checkpoints cover only
 * some disks. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define K64 (64 * KiB)

static const char *const desc1 = "nightly backup \xe2\x80\x93 \xc3\xa9t\xc3\xa9 \xe2\x9c\x93";
/* Quotes, backslash and control characters: the list is written as text
 * (agent/encode.c), and must escape them as JSON does. */
static const char *const desc3 = "  two  spaces \"quoted\" back\\slash\ttab\nline \x01\x1f ";

/* Bytes written by make_chain after c1, c2 and c3, per disk. */
static const int64_t w1[2] = { 64 * KiB, 64 * KiB };
static const int64_t w2[2] = { 128 * KiB, 64 * KiB };
static const int64_t w3[2] = { 64 * KiB, 192 * KiB };
static const char *const disks[2] = { "vda", "vdb" };

static json_t *
create(struct hq_vm *vm, const char *name, const char *desc,
       const char *disk_list)
{
    json_t *args = json_pack("{s:s}", "name", name);
    if (desc)
        json_object_set_new(args, "description", json_string(desc));
    if (disk_list)
        json_object_set_new(args, "disks", json_loads(disk_list, 0, NULL));
    return hq_cmd(vm->ctl, "checkpoint-create", args);
}

static int
delete(struct hq_vm *vm, const char *name, const char *flag)
{
    json_t *args = json_pack("{s:s}", "name", name);
    if (flag)
        json_object_set_new(args, flag, json_true());
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-delete", args);
    HQ_CHECK(json_is_object(r) && json_object_size(r) == 0,
             "checkpoint-delete %s returned %s", name, hq_str(r));
    return 0;
}

/* Asserts one bitmap: present, persistent, recording or not, and its dirty
 * byte count (unless count < 0). */
static int
expect_bitmap(struct hq_vm *vm, const char *disk, const char *name,
              int recording, int64_t count)
{
    CLEANUP_JSON json_t *b = hq_bitmap(vm, disk, name);
    HQ_CHECK(b, "%s: no bitmap %s", disk, name);
    HQ_CHECK(hq_jbool(b, "persistent") == 1, "%s/%s not persistent: %s",
             disk, name, hq_str(b));
    HQ_CHECK(hq_jbool(b, "recording") == recording, "%s/%s recording "
             "should be %d: %s", disk, name, recording, hq_str(b));
    if (count >= 0)
        HQ_CHECK(hq_jint(b, "count") == count, "%s/%s count should be %"
                 PRId64 ": %s", disk, name, count, hq_str(b));
    return 0;
}

static int
expect_no_bitmap(struct hq_vm *vm, const char *disk, const char *name)
{
    CLEANUP_JSON json_t *b = hq_bitmap(vm, disk, name);
    HQ_CHECK(!b, "%s: bitmap %s should be gone: %s", disk, name, hq_str(b));
    return 0;
}

/* The number of bitmaps that are not the agent's ("ckptd" prefix). */
static int
user_bitmaps(struct hq_vm *vm, const char *disk)
{
    CLEANUP_FREE char *names = hq_bitmap_names(vm, disk);
    int n = *names ? 1 : 0;
    for (char *p = names; *p; p++)
        n += *p == ',';
    return n;
}

static int
expect_names(struct hq_vm *vm, const char *want)
{
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, want) == 0, "checkpoint-list is '%s', "
             "want '%s'", names ? names : "?", want);
    return 0;
}

static int
expect_parent(struct hq_vm *vm, const char *name, const char *parent)
{
    CLEANUP_JSON json_t *c = hq_ckpt_get(vm->ctl, name, false);
    HQ_CHECK(c, "checkpoint-get %s", name);
    const char *p = hq_jstr(c, "parent");
    if (parent)
        HQ_CHECK(p && strcmp(p, parent) == 0, "%s parent should be %s: %s",
                 name, parent, hq_str(c));
    else
        HQ_CHECK(!json_object_get(c, "parent"), "%s should be a root: %s",
                 name, hq_str(c));
    return 0;
}

static int
expect_event(struct hq_vm *vm, const char *event, const char *name)
{
    CLEANUP_JSON json_t *ev = hq_wait_event_named(vm->ctl, event, name, 5);
    HQ_CHECK(ev, "no %s event for %s", event, name);
    return 0;
}

/* c1 <- c2 <- c3 over vda and vdb, with disjoint writes after each. */
static int
make_chain(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *c1 = create(vm, "c1", desc1, NULL);
    HQ_CHECK(c1, "create c1");
    HQ_CHECK(hq_write(vm, "vda", 0xa1, 1 * MiB, w1[0]) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0xb1, 1 * MiB, w1[1]) == 0, "write");
    CLEANUP_JSON json_t *c2 = create(vm, "c2", NULL, NULL);
    HQ_CHECK(c2, "create c2");
    HQ_CHECK(hq_write(vm, "vda", 0xa2, 3 * MiB, w2[0]) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0xb2, 3 * MiB, w2[1]) == 0, "write");
    CLEANUP_JSON json_t *c3 = create(vm, "c3", desc3, NULL);
    HQ_CHECK(c3, "create c3");
    HQ_CHECK(hq_write(vm, "vda", 0xa3, 6 * MiB, w3[0]) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0xb3, 6 * MiB, w3[1]) == 0, "write");
    return 0;
}

static struct hq_vm *
chain_vm(void)
{
    struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    if (vm && make_chain(vm) < 0) {
        hq_vm_free(vm);
        return NULL;
    }
    return vm;
}

static int
test_chain_bitmaps(void)
{
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    for (int d = 0; d < 2; d++) {
        if (expect_bitmap(vm, disks[d], "c1", 0, w1[d]) < 0
            || expect_bitmap(vm, disks[d], "c2", 0, w2[d]) < 0
            || expect_bitmap(vm, disks[d], "c3", 1, w3[d]) < 0)
            return -1;
        HQ_CHECK(user_bitmaps(vm, disks[d]) == 3, "%s: other bitmaps",
                 disks[d]);
    }
    /* The records: persistent, never recording, at least one per
     * checkpoint somewhere. */
    int records = 0;
    for (int d = 0; d < 2; d++) {
        CLEANUP_JSON json_t *all = hq_bitmaps(vm, disks[d]);
        size_t i;
        json_t *b;
        json_array_foreach(all, i, b) {
            const char *n = hq_jstr(b, "name");
            if (!n || strncmp(n, "ckptd1:", 7) != 0)
                continue;
            records++;
            HQ_CHECK(hq_jbool(b, "persistent") == 1 && hq_jbool(b, "recording") == 0,
                     "record bitmap flags: %s", hq_str(b));
        }
    }
    HQ_CHECK(records >= 3, "only %d ckptd1: record bitmaps for 3 checkpoints",
             records);
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "checkpoints") == 3, "query-status: %s", hq_str(st));
    return 0;
}

static int
check_members(json_t *c, const char *name)
{
    json_t *ds = json_object_get(c, "disks");
    HQ_CHECK(json_array_size(ds) == 2, "%s disks: %s", name, hq_str(c));
    for (int d = 0; d < 2; d++) {
        json_t *e = json_array_get(ds, d);
        CLEANUP_FREE char *node = xasprintf("%s-fmt", disks[d]);
        const char *dn = hq_jstr(e, "disk"), *nn = hq_jstr(e, "node-name");
        const char *bm = hq_jstr(e, "bitmap");
        HQ_CHECK(dn && strcmp(dn, disks[d]) == 0, "%s disk %d: %s", name, d,
                 hq_str(e));
        HQ_CHECK(nn && strcmp(nn, node) == 0, "%s node: %s", name, hq_str(e));
        HQ_CHECK(bm && strcmp(bm, name) == 0, "%s bitmap: %s", name, hq_str(e));
        HQ_CHECK(hq_jbool(e, "consistent") == 1, "%s: %s", name, hq_str(e));
        HQ_CHECK(!json_object_get(e, "size"), "%s: size not asked: %s",
                 name, hq_str(e));
    }
    return 0;
}

static int
test_list(void)
{
    time_t t0 = time(NULL);
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    time_t t1 = time(NULL);
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(json_array_size(l) == 3, "checkpoint-list: %s", hq_str(l));
    const char *names[] = { "c1", "c2", "c3" };
    const char *parents[] = { NULL, "c1", "c2" };
    const char *descs[] = { desc1, NULL, desc3 };
    int64_t prev = 0;
    for (int i = 0; i < 3; i++) {
        json_t *c = json_array_get(l, i);
        const char *n = hq_jstr(c, "name"), *p = hq_jstr(c, "parent");
        HQ_CHECK(n && strcmp(n, names[i]) == 0, "entry %d: %s", i, hq_str(c));
        HQ_CHECK(parents[i] ? p && strcmp(p, parents[i]) == 0
                            : !json_object_get(c, "parent"),
                 "%s parent: %s", names[i], hq_str(c));
        int64_t t = hq_jint(c, "creation-time");
        HQ_CHECK(t >= t0 - 1 && t <= t1 + 1 && t >= prev, "%s creation-time "
                 "%" PRId64 " not in [%ld, %ld]", n, t, (long) t0, (long) t1);
        prev = t;
        if (descs[i]) {
            const char *d = hq_jstr(c, "description");
            HQ_CHECK(d && strcmp(d, descs[i]) == 0, "%s description "
                     "changed: %s", n, hq_str(c));
        } else {
            const char *d = hq_jstr(c, "description");
            HQ_CHECK(!d || !*d, "%s: a description from nowhere: %s", n,
                     hq_str(c));
        }
        if (check_members(c, names[i]) < 0)
            return -1;
        /* checkpoint-get tells the same as the list. */
        CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, names[i], false);
        HQ_CHECK(json_equal(g, c), "checkpoint-get %s: %s", n, hq_str(g));
    }
    return 0;
}

/* The size of name on disk d from a checkpoint object. */
static int64_t
size_of(json_t *c, int d)
{
    json_t *e = hq_jfind(json_object_get(c, "disks"), "disk", disks[d]);
    return hq_jint(e, "size");
}

static int
test_size(void)
{
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    const char *names[] = { "c1", "c2", "c3" };
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list",
                                    json_pack("{s:b}", "size", 1));
    HQ_CHECK(json_array_size(l) == 3, "checkpoint-list size: %s", hq_str(l));
    for (int i = 0; i < 3; i++) {
        CLEANUP_JSON json_t *c = hq_ckpt_get(vm->ctl, names[i], true);
        HQ_CHECK(c, "checkpoint-get %s size", names[i]);
        for (int d = 0; d < 2; d++) {
            /* Writes since names[i]: the chain from it to the newest. */
            int64_t writes = 0, counts = 0;
            const int64_t *w[] = { w1, w2, w3 };
            for (int k = i; k < 3; k++) {
                writes += w[k][d];
                counts += hq_bitmap_dirty(vm, disks[d], names[k]);
            }
            int64_t s = size_of(c, d);
            HQ_CHECK(s >= writes, "%s/%s size %" PRId64 " < %" PRId64
                     " bytes written since", names[i], disks[d], s, writes);
            HQ_CHECK(s == counts, "%s/%s size %" PRId64 " != %" PRId64
                     " (dirty in %s and newer)", names[i], disks[d], s,
                     counts, names[i]);
            int64_t ls = size_of(json_array_get(l, i), d);
            HQ_CHECK(ls == s, "%s/%s: list says %" PRId64 ", get says %"
                     PRId64, names[i], disks[d], ls, s);
        }
    }
    return 0;
}

static int
test_delete_middle_then_newest(void)
{
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    int records = hq_bitmap_count_prefix(vm, "vda", "ckptd1:")
                  + hq_bitmap_count_prefix(vm, "vdb", "ckptd1:");
    HQ_CHECK(delete(vm, "c2", NULL) == 0, "delete c2");
    if (expect_event(vm, "CHECKPOINT_DELETED", "c2") < 0)
        return -1;
    for (int d = 0; d < 2; d++) {
        /* c2's writes were merged into c1, c3 untouched. */
        if (expect_no_bitmap(vm, disks[d], "c2") < 0
            || expect_bitmap(vm, disks[d], "c1", 0, w1[d] + w2[d]) < 0
            || expect_bitmap(vm, disks[d], "c3", 1, w3[d]) < 0)
            return -1;
    }
    /* (A delete adds the chain's gone set, which is no record.) */
    int records2 = hq_bitmap_count_prefix(vm, "vda", "ckptd1:")
                   + hq_bitmap_count_prefix(vm, "vdb", "ckptd1:")
                   - hq_bitmap_count_prefix(vm, "vda", "ckptd1:gone:")
                   - hq_bitmap_count_prefix(vm, "vdb", "ckptd1:gone:");
    HQ_CHECK(records2 < records, "c2's records not removed (%d then %d)",
             records, records2);
    if (expect_names(vm, "c1,c3") < 0 || expect_parent(vm, "c3", "c1") < 0
        || expect_parent(vm, "c1", NULL) < 0)
        return -1;

    /* Deleting the newest makes its parent record again. */
    HQ_CHECK(delete(vm, "c3", NULL) == 0, "delete c3");
    for (int d = 0; d < 2; d++)
        if (expect_no_bitmap(vm, disks[d], "c3") < 0
            || expect_bitmap(vm, disks[d], "c1", 1, w1[d] + w2[d] + w3[d]) < 0)
            return -1;
    if (expect_names(vm, "c1") < 0 || expect_parent(vm, "c1", NULL) < 0)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0xa4, 10 * MiB, K64) == 0, "write");
    if (expect_bitmap(vm, "vda", "c1", 1, w1[0] + w2[0] + w3[0] + K64) < 0)
        return -1;
    /* The description survives the parent's rewrites. */
    CLEANUP_JSON json_t *c1 = hq_ckpt_get(vm->ctl, "c1", false);
    const char *d1 = hq_jstr(c1, "description");
    HQ_CHECK(d1 && strcmp(d1, desc1) == 0, "c1: %s", hq_str(c1));

    /* And the last one leaves nothing of the agent's behind but the
     * chain's gone set (one mark: a disk detached now cannot bring the
     * deleted checkpoints back; metadata/README.md, "Identity"). */
    HQ_CHECK(delete(vm, "c1", NULL) == 0, "delete c1");
    for (int d = 0; d < 2; d++) {
        CLEANUP_JSON json_t *all = hq_bitmaps(vm, disks[d]);
        HQ_CHECK(json_array_size(all) == 1 &&
                 hq_bitmap_count_prefix(vm, disks[d], "ckptd1:gone:") == 1,
                 "%s bitmaps left: %s", disks[d], hq_str(all));
    }
    return expect_names(vm, "");
}

static int
test_delete_root(void)
{
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    HQ_CHECK(delete(vm, "c1", NULL) == 0, "delete c1");
    for (int d = 0; d < 2; d++)
        if (expect_no_bitmap(vm, disks[d], "c1") < 0
            || expect_bitmap(vm, disks[d], "c2", 0, w2[d]) < 0
            || expect_bitmap(vm, disks[d], "c3", 1, w3[d]) < 0)
            return -1;
    if (expect_names(vm, "c2,c3") < 0 || expect_parent(vm, "c2", NULL) < 0
        || expect_parent(vm, "c3", "c2") < 0
        || expect_event(vm, "CHECKPOINT_DELETED", "c1") < 0)
        return -1;
    return 0;
}

/* c2 and c3 gone from the chain c1 <- c2 <- c3, their writes merged into
 * c1, now the recording one; a CHECKPOINT_DELETED event for each. */
static int
expect_c1_took_c2_c3(struct hq_vm *vm)
{
    for (int d = 0; d < 2; d++)
        if (expect_no_bitmap(vm, disks[d], "c2") < 0
            || expect_no_bitmap(vm, disks[d], "c3") < 0
            || expect_bitmap(vm, disks[d], "c1", 1, w1[d] + w2[d] + w3[d]) < 0)
            return -1;
    if (expect_names(vm, "c1") < 0
        || expect_event(vm, "CHECKPOINT_DELETED", "c2") < 0
        || expect_event(vm, "CHECKPOINT_DELETED", "c3") < 0)
        return -1;
    return 0;
}

static int
test_delete_children(void)
{
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    HQ_CHECK(delete(vm, "c2", "children") == 0, "delete c2 children");
    return expect_c1_took_c2_c3(vm);
}

static int
test_delete_children_only(void)
{
    CLEANUP_VM struct hq_vm *vm = chain_vm();
    HQ_CHECK(vm, "setup");
    HQ_CHECK(delete(vm, "c1", "children-only") == 0, "delete c1 children-only");
    if (expect_c1_took_c2_c3(vm) < 0)
        return -1;
    /* c1 itself was not deleted. */
    CLEANUP_JSON json_t *ev = hq_wait_event_named(vm->ctl,
                                  "CHECKPOINT_DELETED", "c1", 0.3);
    HQ_CHECK(!ev, "CHECKPOINT_DELETED for c1: %s", hq_str(ev));
    return 0;
}

static int
test_events(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *e1 = create(vm, "e1", NULL, NULL);
    HQ_CHECK(e1, "create e1");
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "CHECKPOINT_CREATED", 5);
    HQ_CHECK(ev, "no CHECKPOINT_CREATED");
    json_t *data = json_object_get(ev, "data");
    HQ_CHECK(hq_jstr(data, "name") && !strcmp(hq_jstr(data, "name"), "e1"),
             "event: %s", hq_str(ev));
    HQ_CHECK(delete(vm, "e1", NULL) == 0, "delete e1");
    CLEANUP_JSON json_t *ev2 = hq_wait_event(vm->ctl, "CHECKPOINT_DELETED", 5);
    HQ_CHECK(ev2, "no CHECKPOINT_DELETED");
    data = json_object_get(ev2, "data");
    HQ_CHECK(hq_jstr(data, "name") && !strcmp(hq_jstr(data, "name"), "e1"),
             "event: %s", hq_str(ev2));
    /* A failed create sends nothing. */
    CLEANUP_JSON json_t *dup1 = create(vm, "e2", NULL, NULL);
    CLEANUP_JSON json_t *ev3 = hq_wait_event(vm->ctl, "CHECKPOINT_CREATED", 5);
    HQ_CHECK(dup1 && ev3, "create e2");
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "AlreadyExists",
        "checkpoint-create", json_pack("{s:s}", "name", "e2"));
    HQ_CHECK(r, "duplicate");
    CLEANUP_JSON json_t *ev4 = hq_wait_event(vm->ctl, "CHECKPOINT_CREATED", 0.3);
    HQ_CHECK(!ev4, "event for a failed create: %s", hq_str(ev4));
    return 0;
}

/* a1 on vda only; a2 on both; write; a3 on vdb only. */
static int
make_partial(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *a1 = create(vm, "a1", NULL, "[\"vda\"]");
    HQ_CHECK(a1 && json_array_size(json_object_get(a1, "disks")) == 1,
             "create a1 on vda: %s", hq_str(a1));
    HQ_CHECK(hq_write(vm, "vda", 0x01, 0, K64) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x01, 0, K64) == 0, "write");
    if (expect_bitmap(vm, "vda", "a1", 1, K64) < 0)
        return -1;
    HQ_CHECK(user_bitmaps(vm, "vdb") == 0, "vdb has bitmaps after a1");
    CLEANUP_JSON json_t *a2 = create(vm, "a2", NULL, NULL);
    HQ_CHECK(a2, "create a2");
    HQ_CHECK(hq_write(vm, "vda", 0x02, 1 * MiB, 2 * K64) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x02, 1 * MiB, 2 * K64) == 0, "write");
    CLEANUP_JSON json_t *a3 = create(vm, "a3", NULL, "[\"vdb\"]");
    HQ_CHECK(a3, "create a3 on vdb");
    HQ_CHECK(hq_write(vm, "vda", 0x03, 2 * MiB, 3 * K64) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x03, 2 * MiB, 3 * K64) == 0, "write");
    return 0;
}

static int
test_partial_disks(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    if (make_partial(vm) < 0)
        return -1;
    /* vda: a1 (1 write) then a2, still vda's newest, recording. */
    if (expect_bitmap(vm, "vda", "a1", 0, K64) < 0
        || expect_bitmap(vm, "vda", "a2", 1, 5 * K64) < 0
        || expect_no_bitmap(vm, "vda", "a3") < 0)
        return -1;
    /* vdb: a2 stopped when a3 covered vdb. */
    if (expect_no_bitmap(vm, "vdb", "a1") < 0
        || expect_bitmap(vm, "vdb", "a2", 0, 2 * K64) < 0
        || expect_bitmap(vm, "vdb", "a3", 1, 3 * K64) < 0)
        return -1;
    if (expect_names(vm, "a1,a2,a3") < 0 || expect_parent(vm, "a2", "a1") < 0
        || expect_parent(vm, "a3", "a2") < 0)
        return -1;
    const char *members[] = { "a1", "vda", "a2", "vda,vdb", "a3", "vdb" };
    for (int i = 0; i < 6; i += 2) {
        CLEANUP_JSON json_t *c = hq_ckpt_get(vm->ctl, members[i], false);
        json_t *ds = json_object_get(c, "disks");
        CLEANUP_FREE char *got = xstrdup("");
        size_t k;
        json_t *e;
        json_array_foreach(ds, k, e) {
            char *t = xasprintf("%s%s%s", got, k ? "," : "", hq_jstr(e, "disk"));
            free(got);
            got = t;
        }
        HQ_CHECK(strcmp(got, members[i + 1]) == 0, "%s disks '%s', want '%s'",
                 members[i], got, members[i + 1]);
    }
    /* Sizes: a1 on vda covers all three vda writes. */
    CLEANUP_JSON json_t *a1 = hq_ckpt_get(vm->ctl, "a1", true);
    json_t *e = json_array_get(json_object_get(a1, "disks"), 0);
    HQ_CHECK(hq_jint(e, "size") == 6 * K64, "a1 size on vda: %s", hq_str(a1));
    return 0;
}

static int
test_partial_delete(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    if (make_partial(vm) < 0)
        return -1;
    HQ_CHECK(delete(vm, "a2", NULL) == 0, "delete a2");
    /* On vda a2 was the newest: a1 takes its writes and records again. */
    if (expect_no_bitmap(vm, "vda", "a2") < 0
        || expect_bitmap(vm, "vda", "a1", 1, 6 * K64) < 0)
        return -1;
    /* On vdb nothing older than a2 exists: a3 carries on alone. */
    if (expect_no_bitmap(vm, "vdb", "a2") < 0
        || expect_bitmap(vm, "vdb", "a3", 1, 3 * K64) < 0
        || expect_no_bitmap(vm, "vdb", "a1") < 0)
        return -1;
    if (expect_names(vm, "a1,a3") < 0 || expect_parent(vm, "a3", "a1") < 0)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0x04, 8 * MiB, K64) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x04, 8 * MiB, K64) == 0, "write");
    if (expect_bitmap(vm, "vda", "a1", 1, 7 * K64) < 0
        || expect_bitmap(vm, "vdb", "a3", 1, 4 * K64) < 0)
        return -1;
    return 0;
}

static int
test_hotplug(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c1 = create(vm, "c1", NULL, NULL);
    HQ_CHECK(c1, "create c1");
    HQ_CHECK(hq_qemu_hotplug(vm, "vdc", 32 * MiB) == 0, "hot-add vdc");
    /* The agent may learn of the new disk a little later. */
    json_t *vdc = NULL;
    CLEANUP_JSON json_t *l = NULL;
    for (double end = hq_now() + 5; !vdc && hq_now() < end; hq_sleep_ms(50)) {
        json_decref(l);
        l = hq_cmd(vm->ctl, "query-disks", NULL);
        HQ_CHECK(l, "query-disks");
        vdc = hq_jfind(l, "disk", "vdc");
    }
    HQ_CHECK(vdc, "query-disks does not list vdc: %s", hq_str(l));
    HQ_CHECK(hq_jbool(vdc, "checkpoints") == 1, "vdc: %s", hq_str(vdc));
    HQ_CHECK(json_array_size(l) == 3 && vdc == json_array_get(l, 2),
             "query-disks order: %s", hq_str(l));
    HQ_CHECK(hq_write(vm, "vdc", 0x0c, 0, K64) == 0, "write vdc");
    CLEANUP_JSON json_t *c2 = create(vm, "c2", NULL, NULL);
    HQ_CHECK(c2, "create c2");
    HQ_CHECK(json_array_size(json_object_get(c2, "disks")) == 3,
             "c2 disks: %s", hq_str(c2));
    HQ_CHECK(hq_write(vm, "vdc", 0x0c, MiB, K64) == 0, "write vdc");
    if (expect_bitmap(vm, "vdc", "c2", 1, K64) < 0
        || expect_no_bitmap(vm, "vdc", "c1") < 0
        || expect_bitmap(vm, "vda", "c1", 0, 0) < 0
        || expect_bitmap(vm, "vda", "c2", 1, 0) < 0
        || expect_parent(vm, "c2", "c1") < 0)
        return -1;
    CLEANUP_JSON json_t *g1 = hq_ckpt_get(vm->ctl, "c1", false);
    HQ_CHECK(json_array_size(json_object_get(g1, "disks")) == 2,
             "c1 disks changed: %s", hq_str(g1));
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "checkpoint-chain-bitmaps", test_chain_bitmaps },
        { "checkpoint-list-fields", test_list },
        { "checkpoint-size", test_size },
        { "checkpoint-delete-middle-then-newest", test_delete_middle_then_newest },
        { "checkpoint-delete-root", test_delete_root },
        { "checkpoint-delete-children", test_delete_children },
        { "checkpoint-delete-children-only", test_delete_children_only },
        { "checkpoint-events", test_events },
        { "checkpoint-partial-disks", test_partial_disks },
        { "checkpoint-partial-delete", test_partial_delete },
        { "checkpoint-hotplug-disk", test_hotplug },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
