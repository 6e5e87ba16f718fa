/* The images are the only truth: a new agent, a new QEMU, or both, over the
 * same images report the same checkpoints (names, parents, times,
 * descriptions, disks, sizes), and the records are really in the qcow2
 * files. */
#include "tests/qemu/harness.h"

#include <stdio.h>

#define MiB (1024 * 1024)
#define K64 (64 * 1024)

static const char *const desc1 = "first: \xc3\xbc" "n\xc3\xaf" "c\xc3\xb6" "de & <xml>";
static const char *const desc2 = "second one";

/* c1 (desc1), writes, c2 (desc2), writes, on vda and vdb. */
static struct hq_vm *
two_checkpoints(void)
{
    struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    if (!vm)
        return NULL;
    json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create", json_pack("{s:s, s:s}",
                        "name", "c1", "description", desc1));
    int r = c1 ? 0 : -1;
    json_decref(c1);
    if (r == 0)
        r = hq_write(vm, "vda", 0xa1, 0, K64) | hq_write(vm, "vdb", 0xb1, 0, 2 * K64);
    json_t *c2 = r == 0 ? hq_cmd(vm->ctl, "checkpoint-create",
                                 json_pack("{s:s, s:s}", "name", "c2",
                                           "description", desc2)) : NULL;
    if (!c2)
        r = -1;
    json_decref(c2);
    if (r == 0)
        r = hq_write(vm, "vda", 0xa2, MiB, 3 * K64) | hq_write(vm, "vdb", 0xb2, MiB, K64);
    if (r != 0) {
        hq_vm_free(vm);
        return NULL;
    }
    return vm;
}

static json_t *
full_list(struct hq_vm *vm)
{
    return hq_cmd(vm->ctl, "checkpoint-list", json_pack("{s:b}", "size", 1));
}

/* The list must say what two_checkpoints made, not just stay equal. */
static int
check_list(json_t *l)
{
    HQ_CHECK(json_array_size(l) == 2, "list: %s", hq_str(l));
    json_t *c1 = json_array_get(l, 0), *c2 = json_array_get(l, 1);
    const char *n1 = hq_jstr(c1, "name"), *n2 = hq_jstr(c2, "name");
    HQ_CHECK(n1 && n2 && !strcmp(n1, "c1") && !strcmp(n2, "c2"), "names: %s",
             hq_str(l));
    const char *p2 = hq_jstr(c2, "parent");
    HQ_CHECK(!json_object_get(c1, "parent") && p2 && !strcmp(p2, "c1"),
             "parents: %s", hq_str(l));
    const char *d1 = hq_jstr(c1, "description"), *d2 = hq_jstr(c2, "description");
    HQ_CHECK(d1 && !strcmp(d1, desc1) && d2 && !strcmp(d2, desc2),
             "descriptions: %s", hq_str(l));
    HQ_CHECK(json_array_size(json_object_get(c1, "disks")) == 2
             && json_array_size(json_object_get(c2, "disks")) == 2,
             "disks: %s", hq_str(l));
    /* c1 covers everything since c1: vda 64k+192k, vdb 128k+64k. */
    json_t *c1a = hq_jfind(json_object_get(c1, "disks"), "disk", "vda");
    json_t *c1b = hq_jfind(json_object_get(c1, "disks"), "disk", "vdb");
    HQ_CHECK(hq_jint(c1a, "size") == 4 * K64 && hq_jint(c1b, "size") == 3 * K64,
             "c1 sizes: %s", hq_str(c1));
    return 0;
}

static int
test_agent_sigterm(void)
{
    CLEANUP_VM struct hq_vm *vm = two_checkpoints();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *l1 = full_list(vm);
    if (check_list(l1) < 0)
        return -1;
    CLEANUP_JSON json_t *s1 = hq_snapshot(vm);
    HQ_CHECK(hq_agent_stop(vm) == 0, "SIGTERM");
    HQ_CHECK(hq_agent_start(vm) == 0, "new agent");
    CLEANUP_JSON json_t *l2 = full_list(vm);
    HQ_CHECK(json_equal(l1, l2), "list changed across agent restart:\n#  "
             "before %s", hq_str(l1));
    CLEANUP_JSON json_t *s2 = hq_snapshot(vm);
    HQ_CHECK(json_equal(s1, s2), "bitmaps changed across agent restart: %s",
             hq_str(s2));
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "checkpoints") == 2, "query-status: %s", hq_str(st));
    return 0;
}

static int
test_agent_kill9(void)
{
    CLEANUP_VM struct hq_vm *vm = two_checkpoints();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *l1 = full_list(vm);
    if (check_list(l1) < 0)
        return -1;
    CLEANUP_JSON json_t *s1 = hq_snapshot(vm);
    hq_agent_kill(vm);
    /* The dead agent's socket is still there; the new one must cope. */
    HQ_CHECK(hq_agent_start(vm) == 0, "new agent after kill -9");
    CLEANUP_JSON json_t *l2 = full_list(vm);
    HQ_CHECK(json_equal(l1, l2), "list changed across kill -9:\n#  before %s",
             hq_str(l1));
    CLEANUP_JSON json_t *s2 = hq_snapshot(vm);
    HQ_CHECK(json_equal(s1, s2), "bitmaps changed across kill -9: %s",
             hq_str(s2));
    return 0;
}

static bool
has_flag(json_t *bm, const char *flag)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(bm, "flags"), i, f)
        if (json_is_string(f) && !strcmp(json_string_value(f), flag))
            return true;
    return false;
}

/* What `qemu-img info` finds in one image after a clean QEMU exit. */
static int
check_image(struct hq_vm *vm, const char *disk, int *records)
{
    CLEANUP_JSON json_t *b = hq_image_bitmaps(vm, disk);
    HQ_CHECK(b, "qemu-img info %s", disk);
    json_t *c1 = hq_jfind(b, "name", "c1"), *c2 = hq_jfind(b, "name", "c2");
    HQ_CHECK(c1 && c2, "%s image lacks c1 or c2: %s", disk, hq_str(b));
    HQ_CHECK(!has_flag(c1, "auto") && !has_flag(c1, "in-use"),
             "%s c1 flags: %s", disk, hq_str(c1));
    HQ_CHECK(has_flag(c2, "auto") && !has_flag(c2, "in-use"),
             "%s c2 flags: %s", disk, hq_str(c2));
    size_t i;
    json_t *e;
    json_array_foreach(b, i, e) {
        const char *n = hq_jstr(e, "name");
        if (!n || strncmp(n, "ckptd1:", 7) != 0)
            continue;
        (*records)++;
        HQ_CHECK(!has_flag(e, "auto") && !has_flag(e, "in-use"),
                 "%s record flags: %s", disk, hq_str(e));
    }
    HQ_CHECK(json_array_size(b) >= 2, "%s: %s", disk, hq_str(b));
    return 0;
}

static int
test_qemu_restart(void)
{
    CLEANUP_VM struct hq_vm *vm = two_checkpoints();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *l1 = full_list(vm);
    if (check_list(l1) < 0)
        return -1;
    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "disconnected", 5) == 0, "disconnect");
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "QEMU_DISCONNECTED", 5);
    HQ_CHECK(ev && hq_jstr(json_object_get(ev, "data"), "reason"),
             "QEMU_DISCONNECTED with a reason: %s", hq_str(ev));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotConnected",
        "checkpoint-create", json_pack("{s:s}", "name", "c3"));
    HQ_CHECK(r, "checkpoint-create while QEMU is gone");

    int records = 0;
    if (check_image(vm, "vda", &records) < 0 || check_image(vm, "vdb", &records) < 0)
        return -1;
    HQ_CHECK(records >= 2, "%d ckptd1: records in the images", records);
    HQ_CHECK(hq_image_verify(vm, "vda", 0xa2, MiB, 3 * K64) == 0, "vda data");
    HQ_CHECK(hq_image_verify(vm, "vdb", 0xb1, 0, 2 * K64) == 0, "vdb data");

    /* A new QEMU over the same images: the agent finds it by itself. */
    HQ_CHECK(hq_qemu_start(vm) == 0, "new QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 10) == 0, "reconnect");
    CLEANUP_JSON json_t *ev2 = hq_wait_event(vm->ctl, "QEMU_CONNECTED", 5);
    HQ_CHECK(ev2, "no QEMU_CONNECTED event");
    CLEANUP_JSON json_t *l2 = full_list(vm);
    HQ_CHECK(json_equal(l1, l2), "list changed across QEMU restart:\n#  "
             "before %s", hq_str(l1));

    CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c3"));
    const char *p = hq_jstr(c3, "parent");
    HQ_CHECK(p && !strcmp(p, "c2"), "c3: %s", hq_str(c3));
    const char *disks[] = { "vda", "vdb" };
    for (int d = 0; d < 2; d++) {
        HQ_CHECK(hq_bitmap_recording(vm, disks[d], "c2") == 0, "%s c2 still "
                 "recording", disks[d]);
        HQ_CHECK(hq_bitmap_recording(vm, disks[d], "c3") == 1, "%s c3 not "
                 "recording", disks[d]);
        HQ_CHECK(hq_bitmap_recording(vm, disks[d], "c1") == 0, "%s c1",
                 disks[d]);
    }
    HQ_CHECK(hq_write(vm, "vda", 0xa3, 2 * MiB, K64) == 0, "write");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c3") == K64, "c3 count");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c2") == 3 * K64, "c2 count kept");
    return 0;
}

static int
test_both_restart(void)
{
    CLEANUP_VM struct hq_vm *vm = two_checkpoints();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *l1 = full_list(vm);
    if (check_list(l1) < 0)
        return -1;
    HQ_CHECK(hq_agent_stop(vm) == 0, "stop agent");
    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit QEMU");
    HQ_CHECK(hq_qemu_start(vm) == 0, "new QEMU");
    HQ_CHECK(hq_agent_start(vm) == 0, "new agent");
    CLEANUP_JSON json_t *l2 = full_list(vm);
    HQ_CHECK(json_equal(l1, l2), "list changed:\n#  before %s", hq_str(l1));
    /* Deleting after the restart still merges: c1 takes c2's writes. */
    CLEANUP_JSON json_t *d = hq_cmd(vm->ctl, "checkpoint-delete",
                                    json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(d, "delete c2");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c1") == 4 * K64, "vda c1 count");
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "c1") == 1, "vda c1 recording");
    CLEANUP_JSON json_t *c1 = hq_ckpt_get(vm->ctl, "c1", false);
    const char *d1 = hq_jstr(c1, "description");
    HQ_CHECK(d1 && !strcmp(d1, desc1), "c1: %s", hq_str(c1));
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "restart-agent-sigterm", test_agent_sigterm },
        { "restart-agent-kill9", test_agent_kill9 },
        { "restart-qemu", test_qemu_restart },
        { "restart-agent-and-qemu", test_both_restart },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
