/* Every refused checkpoint command gets the right error class and leaves
 * QEMU exactly as it was: the bitmaps of both disks are compared before and
 * after each error, and the checkpoint list too. */
#include "tests/qemu/harness.h"

#include <stdio.h>

#define MiB (1024 * 1024)
#define K64 (64 * 1024)

/* Two disks with c1 on both and a write after it. */
static struct hq_vm *
vm_with_c1(void)
{
    struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    if (!vm)
        return NULL;
    json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                        json_pack("{s:s}", "name", "c1"));
    if (!c1 || hq_write(vm, "vda", 0x01, 0, K64) < 0) {
        json_decref(c1);
        hq_vm_free(vm);
        return NULL;
    }
    json_decref(c1);
    return vm;
}

/* cmd must fail with cls and change nothing; when name is given, desc
 * must mention it.  Steals args. */
static int
refused(struct hq_vm *vm, const char *cls, const char *name,
        const char *cmd, json_t *args)
{
    CLEANUP_JSON json_t *what = json_incref(args);
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_FREE char *list_before = hq_ckpt_names(vm->ctl);
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, cls, cmd, args);
    HQ_CHECK(r, "%s %s", cmd, hq_str(what));
    if (name)
        HQ_CHECK(strstr(hq_err_desc(r), name), "%s %s: desc does not name "
                 "'%s': %s", cmd, hq_str(what), name, hq_err_desc(r));
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(before && json_equal(before, after), "%s %s changed bitmaps: %s",
             cmd, hq_str(what), hq_str(after));
    CLEANUP_FREE char *list_after = hq_ckpt_names(vm->ctl);
    HQ_CHECK(list_before && list_after && !strcmp(list_before, list_after),
             "%s changed the list: '%s' -> '%s'", cmd, list_before, list_after);
    return 0;
}

static int
test_duplicate(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    if (refused(vm, "AlreadyExists", "c1", "checkpoint-create",
                json_pack("{s:s}", "name", "c1")) < 0
        || refused(vm, "AlreadyExists", "c1", "checkpoint-create",
                   json_pack("{s:s, s:[s]}", "name", "c1", "disks", "vdb")) < 0)
        return -1;
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c1") == K64, "c1 lost its writes");
    return 0;
}

static int
test_invalid_names(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    char long_name[202];
    memset(long_name, 'n', 201);
    long_name[201] = 0;
    const char *bad[] = { "", ".x", "a/b", "a:b", "a b", long_name,
                          "\xc3\xa9t\xc3\xa9", "a+b", "tab\there", "nl\n",
                          ".", ".." };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (refused(vm, "InvalidParameter", NULL, "checkpoint-create",
                    json_pack("{s:s}", "name", bad[i])) < 0)
            return -1;
    /* The edges of the pattern are accepted: they are libvirt names. */
    long_name[200] = 0;
    const char *good[] = { "x", "A_b-c.d", "-dash", "9", "x.", long_name };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        CLEANUP_JSON json_t *c = hq_cmd(vm->ctl, "checkpoint-create",
                                        json_pack("{s:s}", "name", good[i]));
        HQ_CHECK(c, "valid name '%s' refused", good[i]);
        HQ_CHECK(hq_bitmap_recording(vm, "vda", good[i]) == 1
                 && hq_bitmap_recording(vm, "vdb", good[i]) == 1,
                 "no recording bitmap '%s'", good[i]);
        CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, good[i], false);
        const char *n = hq_jstr(g, "name");
        HQ_CHECK(n && !strcmp(n, good[i]), "get '%s': %s", good[i], hq_str(g));
    }
    return 0;
}

static int
test_unknown_disk(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    if (refused(vm, "NotFound", "vdz", "checkpoint-create",
                json_pack("{s:s, s:[s]}", "name", "c2", "disks", "vdz")) < 0
        || refused(vm, "NotFound", "vdz", "checkpoint-create",
                   json_pack("{s:s, s:[s,s]}", "name", "c2", "disks", "vda",
                             "vdz")) < 0)
        return -1;
    /* A node name that is not a disk's is no disk either. */
    if (refused(vm, "NotFound", "vda-file", "checkpoint-create",
                json_pack("{s:s, s:[s]}", "name", "c2", "disks", "vda-file")) < 0)
        return -1;
    return 0;
}

static int
test_missing(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    if (refused(vm, "NotFound", "nosuch", "checkpoint-delete",
                json_pack("{s:s}", "name", "nosuch")) < 0
        || refused(vm, "NotFound", "nosuch", "checkpoint-get",
                   json_pack("{s:s}", "name", "nosuch")) < 0)
        return -1;
    /* Gone after a delete means gone. */
    CLEANUP_JSON json_t *d = hq_cmd(vm->ctl, "checkpoint-delete",
                                    json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(d, "delete c1");
    if (refused(vm, "NotFound", "c1", "checkpoint-get",
                json_pack("{s:s}", "name", "c1")) < 0
        || refused(vm, "NotFound", "c1", "checkpoint-delete",
                   json_pack("{s:s}", "name", "c1")) < 0)
        return -1;
    return 0;
}

static int
test_children_conflict(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(c2, "create c2");
    if (refused(vm, "InvalidParameter", NULL, "checkpoint-delete",
                json_pack("{s:s, s:b, s:b}", "name", "c1", "children", 1,
                          "children-only", 1)) < 0)
        return -1;
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !strcmp(names, "c1,c2"), "list: %s", names);
    return 0;
}

static int
test_qemu_refuses(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    /* A bitmap named like the next checkpoint on vdb only: the transaction
     * cannot succeed there, so vda must not get it either. */
    HQ_CHECK(hq_add_bitmap(vm, "vdb", "c2", true, false) == 0, "add vdb/c2");
    HQ_CHECK(hq_write(vm, "vdb", 0x02, MiB, K64) == 0, "write vdb");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *r = hq_exec(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(r && hq_err_class(r), "checkpoint-create c2 over vdb's own c2 "
             "succeeded: %s", hq_str(r));
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "not all-or-nothing: %s",
             hq_str(after));
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c2") == -1, "vda got c2");
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "c1") == 1
             && hq_bitmap_recording(vm, "vdb", "c1") == 1,
             "c1 stopped recording");
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !strcmp(names, "c1"), "list: %s", names);
    /* The agent is not wedged: the next create works and is c1's child. */
    CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c3"));
    const char *p = hq_jstr(c3, "parent");
    HQ_CHECK(p && !strcmp(p, "c1"), "c3: %s", hq_str(c3));
    HQ_CHECK(hq_bitmap_dirty(vm, "vdb", "c2") == K64
             && hq_bitmap_recording(vm, "vdb", "c2") == 1,
             "vdb's own c2 was touched");
    return 0;
}

static int
test_not_connected(void)
{
    CLEANUP_VM struct hq_vm *vm = vm_with_c1();
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "disconnected", 5) == 0, "disconnect");
    CLEANUP_JSON json_t *img_a = hq_image_bitmaps(vm, "vda");
    CLEANUP_JSON json_t *img_b = hq_image_bitmaps(vm, "vdb");
    HQ_CHECK(hq_jfind(img_a, "name", "c1") && hq_jfind(img_b, "name", "c1"),
             "c1 not in the images: %s", hq_str(img_a));
    CLEANUP_JSON json_t *r1 = hq_cmd_err(vm->ctl, "NotConnected",
        "checkpoint-create", json_pack("{s:s}", "name", "c2"));
    CLEANUP_JSON json_t *r2 = hq_cmd_err(vm->ctl, "NotConnected",
        "checkpoint-delete", json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(r1 && r2, "commands while QEMU is gone");
    CLEANUP_JSON json_t *img_a2 = hq_image_bitmaps(vm, "vda");
    CLEANUP_JSON json_t *img_b2 = hq_image_bitmaps(vm, "vdb");
    HQ_CHECK(json_equal(img_a, img_a2) && json_equal(img_b, img_b2),
             "images changed: %s", hq_str(img_a2));
    /* Nothing was queued behind the error: a new QEMU shows only c1. */
    HQ_CHECK(hq_qemu_start(vm) == 0, "new QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 10) == 0, "reconnect");
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !strcmp(names, "c1"), "list: %s", names);
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c2") == -1, "c2 appeared later");
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "errors-duplicate-name", test_duplicate },
        { "errors-invalid-names", test_invalid_names },
        { "errors-unknown-disk", test_unknown_disk },
        { "errors-missing-checkpoint", test_missing },
        { "errors-children-and-children-only", test_children_conflict },
        { "errors-qemu-refuses-all-or-nothing", test_qemu_refuses },
        { "errors-not-connected", test_not_connected },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
