/* query-disks and which disks can hold checkpoints: two qcow2 disks, a raw
 * one and a read-only qcow2 one, in that VM order. */
#include "tests/qemu/harness.h"

#include <stdio.h>
#include <strings.h>

#define MiB (1024 * 1024)

static struct hq_vm *
four_disks(void)
{
    struct hq_vm *vm = hq_vm_new();
    if (!vm)
        return NULL;
    if (hq_vm_add_disk(vm, "vda", "qcow2", 64 * MiB, false) < 0
        || hq_vm_add_disk(vm, "vdb", "qcow2", 128 * MiB, false) < 0
        || hq_vm_add_disk(vm, "vdc", "raw", 32 * MiB, false) < 0
        || hq_vm_add_disk(vm, "vdd", "qcow2", 16 * MiB, true) < 0
        || hq_qemu_start(vm) < 0 || hq_agent_start(vm) < 0) {
        hq_vm_free(vm);
        return NULL;
    }
    return vm;
}

/* True when no node of the VM has any bitmap. */
static bool
no_bitmaps(json_t *snap)
{
    const char *k;
    json_t *v;
    json_object_foreach(snap, k, v)
        if (json_array_size(v) != 0)
            return false;
    return true;
}

static int
check_disk(struct hq_vm *vm, json_t *e, struct hq_disk *d, bool capable)
{
    const char *name = hq_jstr(e, "disk");
    HQ_CHECK(name && strcmp(name, d->name) == 0, "expected %s, got %s",
             d->name, hq_str(e));
    const char *node = hq_jstr(e, "node-name");
    HQ_CHECK(node && strcmp(node, d->node) == 0, "%s node-name: %s",
             d->name, hq_str(e));
    const char *fmt = hq_jstr(e, "format");
    HQ_CHECK(fmt && strcmp(fmt, d->format) == 0, "%s format: %s",
             d->name, hq_str(e));
    const char *file = hq_jstr(e, "filename");
    HQ_CHECK(file && strcmp(file, d->path) == 0, "%s filename (want %s): %s",
             d->name, d->path, hq_str(e));
    HQ_CHECK(hq_jint(e, "virtual-size") == d->size, "%s virtual-size (want "
             "%" PRId64 "): %s", d->name, d->size, hq_str(e));
    HQ_CHECK(hq_jbool(e, "checkpoints") == capable, "%s checkpoints: %s",
             d->name, hq_str(e));
    const char *reason = hq_jstr(e, "reason");
    if (!capable)
        HQ_CHECK(reason && *reason, "%s: no reason why not: %s", d->name,
                 hq_str(e));
    return 0;
}

static int
test_query(void)
{
    CLEANUP_VM struct hq_vm *vm = four_disks();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "query-disks", NULL);
    HQ_CHECK(json_is_array(l) && json_array_size(l) == 4,
             "query-disks: %s", hq_str(l));
    bool capable[] = { true, true, false, false };
    for (int i = 0; i < 4; i++)
        if (check_disk(vm, json_array_get(l, i), &vm->disks[i], capable[i]) < 0)
            return -1;
    const char *raw_reason = hq_jstr(json_array_get(l, 2), "reason");
    HQ_CHECK(strcasestr(raw_reason, "raw"), "raw disk reason does not say "
             "raw: %s", raw_reason);
    const char *ro_reason = hq_jstr(json_array_get(l, 3), "reason");
    HQ_CHECK(strcasestr(ro_reason, "read"), "read-only disk reason does not "
             "say read-only: %s", ro_reason);
    return 0;
}

static int
test_incapable_refused(void)
{
    CLEANUP_VM struct hq_vm *vm = four_disks();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    HQ_CHECK(before && no_bitmaps(before), "bitmaps at start: %s",
             hq_str(before));
    /* Each alone, and each with a capable disk: all or nothing. */
    const char *sets[] = { "[\"vdc\"]", "[\"vdd\"]", "[\"vda\", \"vdc\"]",
                           "[\"vdd\", \"vdb\"]", "[]" };
    for (size_t i = 0; i < ARRAY_SIZE(sets); i++) {
        CLEANUP_JSON json_t *args = json_pack("{s:s, s:o}", "name", "c1",
                                              "disks", json_loads(sets[i], 0, NULL));
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Unsupported",
                                            "checkpoint-create", json_incref(args));
        HQ_CHECK(r, "checkpoint-create disks=%s", sets[i]);
        CLEANUP_JSON json_t *after = hq_snapshot(vm);
        HQ_CHECK(after && no_bitmaps(after), "disks=%s left bitmaps: %s",
                 sets[i], hq_str(after));
    }
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "checkpoints listed: %s", names);
    return 0;
}

static int
test_default_capable_only(void)
{
    CLEANUP_VM struct hq_vm *vm = four_disks();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *cp = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(cp, "checkpoint-create");
    json_t *disks = json_object_get(cp, "disks");
    HQ_CHECK(json_array_size(disks) == 2, "disks: %s", hq_str(cp));
    for (int i = 0; i < 2; i++) {
        json_t *d = json_array_get(disks, i);
        const char *n = hq_jstr(d, "disk"), *node = hq_jstr(d, "node-name");
        const char *bm = hq_jstr(d, "bitmap");
        HQ_CHECK(n && strcmp(n, vm->disks[i].name) == 0, "disk %d: %s", i,
                 hq_str(d));
        HQ_CHECK(node && strcmp(node, vm->disks[i].node) == 0, "node: %s",
                 hq_str(d));
        HQ_CHECK(bm && strcmp(bm, "c1") == 0, "bitmap: %s", hq_str(d));
        HQ_CHECK(hq_jbool(d, "consistent") == 1, "consistent: %s", hq_str(d));
        HQ_CHECK(!json_object_get(d, "size"), "size without asking: %s",
                 hq_str(d));
    }
    const char *want[] = { "c1", "c1", "", "" };
    for (int i = 0; i < 4; i++) {
        CLEANUP_FREE char *names = hq_bitmap_names(vm, vm->disks[i].name);
        HQ_CHECK(strcmp(names, want[i]) == 0, "%s bitmaps '%s', want '%s'",
                 vm->disks[i].name, names, want[i]);
    }
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "c1") == 1, "vda c1 recording");
    HQ_CHECK(hq_bitmap_recording(vm, "vdb", "c1") == 1, "vdb c1 recording");
    /* The agent's records live only on member disks. */
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vdc", "ckptd") == 0, "records on raw");
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vdd", "ckptd") == 0,
             "records on read-only");
    /* Writes to the raw disk do not disturb anything. */
    HQ_CHECK(hq_write(vm, "vdc", 0x11, 0, 65536) == 0, "write vdc");
    HQ_CHECK(hq_write(vm, "vdb", 0x22, 0, 65536) == 0, "write vdb");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c1") == 0, "vda c1 dirty");
    HQ_CHECK(hq_bitmap_dirty(vm, "vdb", "c1") == 65536, "vdb c1 dirty");
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "disks-query", test_query },
        { "disks-incapable-refused", test_incapable_refused },
        { "disks-default-capable-only", test_default_capable_only },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
