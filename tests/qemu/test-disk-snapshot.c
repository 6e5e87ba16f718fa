/* disk-snapshot and disk-commit: external snapshots through ckptd carry
 * the checkpoints into the new overlay, so that incrementals stay exact
 * to the cluster (dirty maps against the shadow model) and to the byte
 * (previous backup + incremental = the disk) across a snapshot and a
 * commit; after every step each disk has exactly one recording
 * checkpoint bitmap across all its layers.  Refused snapshots change
 * nothing (no node, no file), and an agent restart between the snapshot
 * and the commit keeps the tree. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define K64 HQ_K64
#define SIZE HQ_MODEL_SIZE

/* An incremental backup (args) of vda, exact: its dirty map is want and,
 * applied to base (the previous backup's bytes, updated), the disk. */
static int
incremental_exact(struct hq_vm *vm, const char *args, const uint8_t *want,
                  uint8_t *base, const struct hq_model *m)
{
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, args);
    const char *mode = hq_jstr(hq_job_disk(inc, "vda"), "mode");
    HQ_CHECK(inc && mode && strcmp(mode, "incremental") == 0, "%s: %s", args,
             hq_str(inc));
    if (hq_apply_incremental(inc, "vda", want, base, m->data) < 0)
        return -1;
    return hq_backup_end(vm, inc);
}

/* query-disks' entry of disk (new reference). */
static json_t *
disk_entry(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    json_t *d = hq_jfind(disks, "disk", disk);
    return d ? json_incref(d) : NULL;
}

/* vda tracks on node, with layers layers, and the agent's tree is QEMU's. */
static int
check_state(struct hq_vm *vm, const char *node, size_t layers, const char *when)
{
    CLEANUP_JSON json_t *d = disk_entry(vm, "vda");
    HQ_CHECK(d && hq_jbool(d, "tracking") == 1 && hq_jbool(d, "checkpoints") == 1 &&
             strcmp(hq_jstr(d, "node-name"), node) == 0, "%s: vda should track on %s: %s",
             when, node, hq_str(d));
    CLEANUP_JSON json_t *l = hq_disk_layers(vm, "vda");
    HQ_CHECK(l && json_array_size(l) == layers, "%s: vda should have %zu layers: %s",
             when, layers, hq_str(l));
    return hq_tree_matches_qemu(vm, when);
}

static json_t *
snapshot(struct hq_vm *vm, const char *file, const char *ckpt)
{
    json_t *args = json_pack("{s:[{s:s,s:s}]}", "disks", "disk", "vda", "file", file);
    if (ckpt)
        json_object_set_new(args, "checkpoint", json_pack("{s:s}", "name", ckpt));
    return hq_cmd(vm->ctl, "disk-snapshot", args);
}

/* checkpoint-changes of vda from `from` covers exactly the clusters want. */
static int
changes_exact(struct hq_vm *vm, const char *from, const uint8_t *want)
{
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-changes",
                                    json_pack("{s:s,s:s}", "disk", "vda", "from", from));
    HQ_CHECK(r, "checkpoint-changes from %s", from);
    uint8_t got[HQ_MODEL_NCL] = { 0 };
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "block-metadata"), i, e)
        for (int64_t o = hq_jint(e, "byte-offset");
             o < hq_jint(e, "byte-offset") + hq_jint(e, "size-bytes"); o += K64)
            got[o / K64] = 1;
    HQ_CHECK(memcmp(got, want, sizeof got) == 0, "changes from %s: %s", from, hq_str(r));
    return 0;
}

static bool
exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* c1, writes, snapshot, writes, c2, writes, incrementals from c1 and c2,
 * commit, writes, incrementals again; each backup applied to the previous
 * one gives the disk at that point. */
static int
test_snapshot_commit(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model m_;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&m_, "vda");
    /* at_c1, at_c2, at_c3: the restored disk at each checkpoint. */
    CLEANUP_FREE uint8_t *at_c1 = xcalloc(1, SIZE), *at_c2 = xcalloc(1, SIZE);
    CLEANUP_FREE uint8_t *at_c3 = xcalloc(1, SIZE), *scratch = xcalloc(1, SIZE);
    HQ_CHECK(hq_mwrite(vm, m, 0x11, 0, 4 * K64) == 0, "first data");
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", at_c1) == 0, "full backup with c1");
    HQ_CHECK(hq_first_diff(at_c1, m->data, SIZE) < 0, "the full backup is the disk");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(m, 0);
    HQ_CHECK(hq_mwrite(vm, m, 0x12, 2 * K64, 3 * K64) == 0, "write before the snapshot");

    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    double t0 = hq_now();
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, NULL);
    hq_note("disk-snapshot took %.1f ms", (hq_now() - t0) * 1000);
    HQ_CHECK(snap && exists(ov), "disk-snapshot: %s", hq_str(snap));
    json_t *sd = hq_jfind(json_object_get(snap, "disks"), "disk", "vda");
    HQ_CHECK(sd && hq_jbool(sd, "tracking") == 1, "the reply: %s", hq_str(snap));
    CLEANUP_FREE char *ovnode = xstrdup(hq_jstr(sd, "node-name"));
    HQ_CHECK(strcmp(ovnode, "vda-fmt") != 0, "the disk's node is the overlay: %s",
             hq_str(sd));
    if (check_state(vm, ovnode, 2, "after the snapshot") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x13, 4 * K64, 2 * K64) == 0 &&
             hq_mwrite(vm, m, 0x14, 100 * K64, K64) == 0, "writes into the overlay");

    /* c2 in an incremental from c1: c2 lives on the overlay only. */
    CLEANUP_JSON json_t *b1 = hq_backup_begin(vm,
        "{\"incremental\": \"c1\", \"checkpoint\": {\"name\": \"c2\"}}");
    HQ_CHECK(b1, "incremental from c1 with c2");
    memcpy(at_c2, at_c1, SIZE);
    if (hq_apply_incremental(b1, "vda", m->since[0], at_c2, m->data) < 0)
        return -1;
    HQ_CHECK(hq_backup_end(vm, b1) == 0, "end");
    hq_model_mark(m, 1);
    if (check_state(vm, ovnode, 2, "after c2") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x15, 3 * K64, K64) == 0 &&
             hq_mwrite(vm, m, 0x16, 200 * K64, 2 * K64) == 0, "writes after c2");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    /* c3 in an incremental from c2: the chain c1 -> c2 -> c3 restores. */
    CLEANUP_JSON json_t *b2 = hq_backup_begin(vm,
        "{\"incremental\": \"c2\", \"checkpoint\": {\"name\": \"c3\"}}");
    HQ_CHECK(b2, "incremental from c2 with c3");
    memcpy(at_c3, at_c2, SIZE);
    if (hq_apply_incremental(b2, "vda", m->since[1], at_c3, m->data) < 0)
        return -1;
    HQ_CHECK(hq_backup_end(vm, b2) == 0, "end");
    hq_model_mark(m, 2);
    HQ_CHECK(hq_mwrite(vm, m, 0x17, 5 * K64, K64) == 0, "write after c3");
    if (check_state(vm, ovnode, 2, "after c3") < 0)
        return -1;

    /* A checkpoint kept on the read-only base cannot be deleted yet. */
    CLEANUP_JSON json_t *del1 = hq_cmd_err(vm->ctl, "Unsupported", "checkpoint-delete",
                                           hq_json("{\"name\": \"c1\"}"));
    HQ_CHECK(del1 && strstr(hq_err_desc(del1), "disk-commit"), "delete c1: %s",
             hq_str(del1));

    t0 = hq_now();
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    hq_note("disk-commit of a 16 MiB disk (about 0.6 MiB in the overlay) took %.1f ms",
            (hq_now() - t0) * 1000);
    HQ_CHECK(cm && hq_jbool(cm, "tracking") == 1 &&
             strcmp(hq_jstr(cm, "node-name"), "vda-fmt") == 0, "disk-commit: %s",
             hq_str(cm));
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        hq_json("{\"flat\": true}"));
    HQ_CHECK(nodes && !hq_jfind(nodes, "node-name", ovnode), "the overlay is gone: %s",
             hq_str(nodes));
    if (check_state(vm, "vda-fmt", 1, "after the commit") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x18, 7 * K64, 2 * K64) == 0 &&
             hq_mwrite(vm, m, 0x19, 2 * K64, K64) == 0, "writes after the commit");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    memcpy(scratch, at_c2, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c2\"}", m->since[1], scratch, m) < 0)
        return -1;
    memcpy(scratch, at_c3, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c3\"}", m->since[2], scratch, m) < 0)
        return -1;
    /* Now one layer: c2 goes, its writes kept in c1. */
    CLEANUP_JSON json_t *del2 = hq_cmd(vm->ctl, "checkpoint-delete",
                                       hq_json("{\"name\": \"c2\"}"));
    HQ_CHECK(del2, "delete c2 after the commit");
    if (check_state(vm, "vda-fmt", 1, "after deleting c2") < 0)
        return -1;
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0 ||
        hq_expect_disk(vm, m) < 0)
        return -1;
    /* A clean exit: under ASan, no leak on the snapshot and commit paths. */
    return hq_agent_stop(vm);
}

/* A snapshot that makes a checkpoint in its own transaction, then the
 * delete of that checkpoint while the overlay is there: its writes go
 * into the older checkpoint, carried into the overlay. */
static int
test_snapshot_checkpoint(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model m_;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&m_, "vda");
    CLEANUP_FREE uint8_t *at_c1 = xcalloc(1, SIZE), *scratch = xcalloc(1, SIZE);
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", at_c1) == 0, "full backup with c1");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(m, 0);
    HQ_CHECK(hq_mwrite(vm, m, 0x21, 0, 2 * K64) == 0, "write before the snapshot");
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, "s1");
    HQ_CHECK(snap && json_object_get(snap, "checkpoint"), "disk-snapshot with s1: %s",
             hq_str(snap));
    hq_model_mark(m, 1);
    CLEANUP_FREE char *ovnode = xstrdup(hq_jstr(hq_jfind(json_object_get(snap, "disks"),
                                                         "disk", "vda"), "node-name"));
    if (check_state(vm, ovnode, 2, "after the snapshot with s1") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x22, K64, 3 * K64) == 0, "write into the overlay");
    if (changes_exact(vm, "c1", m->since[0]) < 0 || changes_exact(vm, "s1", m->since[1]) < 0)
        return -1;
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    CLEANUP_JSON json_t *del = hq_cmd(vm->ctl, "checkpoint-delete",
                                      hq_json("{\"name\": \"s1\"}"));
    HQ_CHECK(del, "delete s1 on the overlay");
    if (check_state(vm, ovnode, 2, "after deleting s1") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x23, 9 * K64, K64) == 0, "write after the delete");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(cm, "disk-commit");
    if (check_state(vm, "vda-fmt", 1, "after the commit") < 0)
        return -1;
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    return hq_expect_disk(vm, m);
}

/* Refused snapshots change nothing: a file outside the image's
 * directory, an existing file, an unknown disk, and a transaction QEMU
 * refuses (after the files and nodes were made: they go again). */
static int
test_refused(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, false);
    HQ_CHECK(vm && hq_qemu_start(vm) == 0 && hq_inject_start(vm) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c1\"}"));
    HQ_CHECK(c1, "c1");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *nodes0 = hq_cmd(vm->mon, "query-named-block-nodes",
                                         hq_json("{\"flat\": true}"));
    CLEANUP_FREE char *sub = xasprintf("%s/elsewhere", vm->dir);
    HQ_CHECK(mkdir(sub, 0700) == 0, "mkdir");
    CLEANUP_FREE char *bad = xasprintf("%s/ov.qcow2", sub);
    CLEANUP_JSON json_t *r1 = hq_exec(vm->ctl, "disk-snapshot", json_pack(
        "{s:[{s:s,s:s}]}", "disks", "disk", "vda", "file", bad));
    HQ_CHECK(r1 && strcmp(hq_err_class(r1) ? hq_err_class(r1) : "", "InvalidParameter") == 0 &&
             strstr(hq_err_desc(r1), "vda") && !exists(bad), "elsewhere: %s", hq_str(r1));
    CLEANUP_FREE char *taken = xasprintf("%s/taken.qcow2", vm->dir);
    FILE *f = fopen(taken, "w");
    HQ_CHECK(f && fputs("precious", f) >= 0 && fclose(f) == 0, "existing file");
    CLEANUP_JSON json_t *r2 = hq_exec(vm->ctl, "disk-snapshot", json_pack(
        "{s:[{s:s,s:s}]}", "disks", "disk", "vda", "file", taken));
    struct stat st;
    HQ_CHECK(r2 && strcmp(hq_err_class(r2) ? hq_err_class(r2) : "", "AlreadyExists") == 0 &&
             stat(taken, &st) == 0 && st.st_size == 8, "existing file: %s", hq_str(r2));
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov.qcow2", vm->dir);
    CLEANUP_JSON json_t *r3 = hq_cmd_err(vm->ctl, "NotFound", "disk-snapshot", json_pack(
        "{s:[{s:s,s:s}]}", "disks", "disk", "vdz", "file", ov));
    HQ_CHECK(r3 && !exists(ov), "unknown disk");
    CLEANUP_JSON json_t *r4 = hq_cmd_err(vm->ctl, "Unsupported", "disk-commit",
                                         hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(r4 && strstr(hq_err_desc(r4), "no overlay"), "commit without overlay: %s",
             hq_str(r4));
    HQ_CHECK(hq_inject_rules(vm, "fail transaction 1\n") == 0, "rules");
    CLEANUP_JSON json_t *r5 = hq_cmd_err(vm->ctl, "QemuError", "disk-snapshot", json_pack(
        "{s:[{s:s,s:s}]}", "disks", "disk", "vda", "file", ov));
    HQ_CHECK(r5 && !exists(ov), "refused transaction leaves no file: %s", hq_str(r5));
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    CLEANUP_JSON json_t *nodes1 = hq_cmd(vm->mon, "query-named-block-nodes",
                                         hq_json("{\"flat\": true}"));
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    HQ_CHECK(json_array_size(nodes0) == json_array_size(nodes1), "nodes left: %s",
             hq_str(nodes1));
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
    HQ_CHECK(jobs && json_array_size(jobs) == 0, "jobs left: %s", hq_str(jobs));
    if (check_state(vm, "vda-fmt", 1, "after the refusals") < 0)
        return -1;
    /* And the same snapshot works once QEMU accepts it. */
    CLEANUP_JSON json_t *ok = snapshot(vm, ov, NULL);
    HQ_CHECK(ok && exists(ov), "the snapshot afterwards");
    if (hq_tree_matches_qemu(vm, "after the snapshot") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* A new agent between the snapshot and the commit reads the same tree
 * from the layers, and the commit and incrementals work with it. */
static int
test_restart(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model m_;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&m_, "vda");
    CLEANUP_FREE uint8_t *at_c1 = xcalloc(1, SIZE), *scratch = xcalloc(1, SIZE);
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", at_c1) == 0, "full backup with c1");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(m, 0);
    HQ_CHECK(hq_mwrite(vm, m, 0x31, 0, K64) == 0, "write");
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, NULL);
    HQ_CHECK(snap, "snapshot");
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c2\"}"));
    HQ_CHECK(c2, "c2 on the overlay");
    hq_model_mark(m, 1);
    HQ_CHECK(hq_mwrite(vm, m, 0x32, 6 * K64, K64) == 0, "write");
    CLEANUP_JSON json_t *list0 = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    CLEANUP_JSON json_t *disk0 = disk_entry(vm, "vda");
    HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "restart the agent");
    CLEANUP_JSON json_t *list1 = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    CLEANUP_JSON json_t *disk1 = disk_entry(vm, "vda");
    HQ_CHECK(json_equal(list0, list1), "checkpoints before %s, after %s", hq_str(list0),
             hq_str(list1));
    HQ_CHECK(json_equal(disk0, disk1), "vda before %s, after %s", hq_str(disk0),
             hq_str(disk1));
    if (check_state(vm, hq_jstr(disk1, "node-name"), 2, "after the restart") < 0)
        return -1;
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(cm, "disk-commit");
    if (check_state(vm, "vda-fmt", 1, "after the commit") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x33, 8 * K64, K64) == 0, "write");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    return hq_expect_disk(vm, m);
}

/* A disk with no checkpoint yet: the first one is made on the overlay;
 * the commit adds it (bitmap and record) to the base, which held none. */
static int
test_first_checkpoint_on_overlay(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model m_;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&m_, "vda");
    CLEANUP_FREE uint8_t *at_c1 = xcalloc(1, SIZE), *scratch = xcalloc(1, SIZE);
    HQ_CHECK(hq_mwrite(vm, m, 0x41, 0, 2 * K64) == 0, "write on the base");
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, NULL);
    HQ_CHECK(snap, "snapshot of a disk without checkpoints");
    CLEANUP_FREE char *ovnode = xstrdup(hq_jstr(hq_jfind(json_object_get(snap, "disks"),
                                                         "disk", "vda"), "node-name"));
    HQ_CHECK(hq_mwrite(vm, m, 0x42, 5 * K64, K64) == 0, "write on the overlay");
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", at_c1) == 0, "full backup with c1");
    HQ_CHECK(hq_first_diff(at_c1, m->data, SIZE) < 0, "the full backup is the disk");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(m, 0);
    if (check_state(vm, ovnode, 2, "c1 on the overlay") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x43, 6 * K64, 2 * K64) == 0, "write after c1");
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(cm, "disk-commit");
    if (check_state(vm, "vda-fmt", 1, "after the commit") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x44, 0, K64) == 0, "write after the commit");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    return hq_expect_disk(vm, m);
}

/* A commit that QEMU refuses half way, at the merge and at the
 * completion: the overlay stays the active layer, the disk tracks with
 * one recording bitmap, incrementals stay exact, and a commit afterwards
 * works. */
static int
test_commit_fails(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, false);
    HQ_CHECK(vm && hq_qemu_start(vm) == 0 && hq_inject_start(vm) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    struct hq_model m_;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&m_, "vda");
    CLEANUP_FREE uint8_t *at_c1 = xcalloc(1, SIZE), *scratch = xcalloc(1, SIZE);
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", at_c1) == 0, "full backup with c1");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(m, 0);
    HQ_CHECK(hq_mwrite(vm, m, 0x51, 0, K64) == 0, "write");
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, "c2");
    HQ_CHECK(snap, "snapshot with c2");
    CLEANUP_FREE char *ovnode = xstrdup(hq_jstr(hq_jfind(json_object_get(snap, "disks"),
                                                         "disk", "vda"), "node-name"));
    HQ_CHECK(hq_mwrite(vm, m, 0x52, 3 * K64, K64) == 0, "write into the overlay");
    static const char *const rules[] = { "fail transaction 1\n",
                                         "fail block-job-complete 1\n" };
    for (size_t i = 0; i < ARRAY_SIZE(rules); i++) {
        HQ_CHECK(hq_inject_rules(vm, "%s", rules[i]) == 0, "rules");
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "QemuError", "disk-commit",
                                            hq_json("{\"disk\": \"vda\"}"));
        HQ_CHECK(r && strstr(hq_err_desc(r), "vda"), "%s: %s", rules[i], hq_str(r));
        HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
        if (check_state(vm, ovnode, 2, rules[i]) < 0)
            return -1;
        CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
        HQ_CHECK(jobs && json_array_size(jobs) == 0, "jobs left: %s", hq_str(jobs));
        HQ_CHECK(hq_mwrite(vm, m, 0x53 + (int) i, (5 + (int64_t) i) * K64, K64) == 0,
                 "write");
        memcpy(scratch, at_c1, SIZE);
        if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
            return -1;
    }
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(cm, "disk-commit once QEMU accepts it");
    if (check_state(vm, "vda-fmt", 1, "after the commit") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x58, 9 * K64, K64) == 0, "write");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    if (hq_expect_disk(vm, m) < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* Two disks in one snapshot with a new checkpoint: both or neither.  A
 * second disk whose file exists stops the whole snapshot before anything
 * is made (the first disk's file is not created either). */
static int
test_two_disks(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    CLEANUP_FREE uint8_t *a1 = xcalloc(1, SIZE), *b1 = xcalloc(1, SIZE);
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", a1) == 0 && hq_read_full(full, "vdb", b1) == 0,
             "full backup with c1");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(ma, 0);
    hq_model_mark(mb, 0);
    HQ_CHECK(hq_mwrite(vm, ma, 0x61, 0, K64) == 0 && hq_mwrite(vm, mb, 0x62, K64, K64) == 0,
             "writes");
    CLEANUP_FREE char *oa = xasprintf("%s/vda-ov.qcow2", vm->dir);
    CLEANUP_FREE char *ob = xasprintf("%s/vdb-ov.qcow2", vm->dir);
    FILE *f = fopen(ob, "w");
    HQ_CHECK(f && fclose(f) == 0, "vdb's file exists");
    CLEANUP_JSON json_t *bad = hq_cmd_err(vm->ctl, "AlreadyExists", "disk-snapshot",
        json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "disks", "disk", "vda", "file", oa,
                  "disk", "vdb", "file", ob));
    HQ_CHECK(bad && !exists(oa), "the refused pair leaves no vda file: %s", hq_str(bad));
    HQ_CHECK(unlink(ob) == 0, "unlink");
    CLEANUP_JSON json_t *snap = hq_cmd(vm->ctl, "disk-snapshot",
        json_pack("{s:[{s:s,s:s},{s:s,s:s}],s:{s:s}}", "disks", "disk", "vda", "file", oa,
                  "disk", "vdb", "file", ob, "checkpoint", "name", "c2"));
    HQ_CHECK(snap && json_array_size(json_object_get(snap, "disks")) == 2 &&
             json_array_size(json_object_get(json_object_get(snap, "checkpoint"), "disks")) == 2,
             "both disks: %s", hq_str(snap));
    hq_model_mark(ma, 1);
    hq_model_mark(mb, 1);
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    HQ_CHECK(hq_jbool(hq_jfind(disks, "disk", "vda"), "tracking") == 1 &&
             hq_jbool(hq_jfind(disks, "disk", "vdb"), "tracking") == 1, "both track: %s",
             hq_str(disks));
    if (hq_tree_matches_qemu(vm, "after the snapshot of both") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, ma, 0x63, 4 * K64, K64) == 0 && hq_mwrite(vm, mb, 0x64, 0, K64) == 0,
             "writes into the overlays");
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc, "incremental from c1");
    if (hq_apply_incremental(inc, "vda", ma->since[0], a1, ma->data) < 0 ||
        hq_apply_incremental(inc, "vdb", mb->since[0], b1, mb->data) < 0)
        return -1;
    HQ_CHECK(hq_backup_end(vm, inc) == 0, "end");
    CLEANUP_JSON json_t *ca = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    CLEANUP_JSON json_t *cb = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vdb\"}"));
    HQ_CHECK(ca && cb, "commit both");
    return hq_tree_matches_qemu(vm, "after both commits");
}

/* A raw disk takes a qcow2 overlay, which can hold checkpoints; the
 * commit back into the raw image, which cannot, is refused while one is
 * there, and works once it is deleted. */
static int
test_raw_base(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm && hq_vm_add_disk(vm, "vda", "raw", SIZE, false) == 0 &&
             hq_qemu_start(vm) == 0 && hq_agent_start(vm) == 0, "setup");
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, NULL);
    HQ_CHECK(snap, "snapshot of a raw disk");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c1\"}"));
    HQ_CHECK(c1, "c1 on the qcow2 overlay");
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Unsupported", "disk-commit",
                                        hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(r && strstr(hq_err_desc(r), "c1"), "commit into raw: %s", hq_str(r));
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
    HQ_CHECK(jobs && json_array_size(jobs) == 0, "no job started: %s", hq_str(jobs));
    CLEANUP_JSON json_t *del = hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"c1\"}"));
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(del && cm && strcmp(hq_jstr(cm, "format"), "raw") == 0, "commit: %s", hq_str(cm));
    return hq_tree_matches_qemu(vm, "after the commit into raw");
}

/* The agent dies during a commit, after the merge into the base and
 * before the completion: the commit job waits READY with the overlay
 * still the active layer (and busy: no backup could start).  The next
 * agent's sweep cancels that job; the disk tracks on the overlay,
 * backups work, and disk-commit commits: one recording bitmap, exact
 * incrementals. */
static int
test_agent_dies_in_commit(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, false);
    HQ_CHECK(vm && hq_qemu_start(vm) == 0 && hq_inject_start(vm) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    struct hq_model m_;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&m_, "vda");
    CLEANUP_FREE uint8_t *at_c1 = xcalloc(1, SIZE), *scratch = xcalloc(1, SIZE);
    CLEANUP_JSON json_t *full = hq_backup_begin(vm, "{\"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(full && hq_read_full(full, "vda", at_c1) == 0, "full backup with c1");
    HQ_CHECK(hq_backup_end(vm, full) == 0, "end");
    hq_model_mark(m, 0);
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_JSON json_t *snap = snapshot(vm, ov, NULL);
    HQ_CHECK(snap, "snapshot");
    CLEANUP_FREE char *ovnode = xstrdup(hq_jstr(hq_jfind(json_object_get(snap, "disks"),
                                                         "disk", "vda"), "node-name"));
    HQ_CHECK(hq_mwrite(vm, m, 0x71, 2 * K64, K64) == 0, "write into the overlay");
    HQ_CHECK(hq_inject_rules(vm, "hold block-job-complete 1\n") == 0, "rules");
    CLEANUP_FREE char *held = xasprintf("%s/inject.rules.held", vm->dir);
    HQ_CHECK(hq_send_json(vm->ctl, json_pack("{s:s,s:{s:s}}", "execute", "disk-commit",
                                             "arguments", "disk", "vda")) == 0, "send");
    for (double end = hq_now() + 30; !exists(held); hq_sleep_ms(10))
        HQ_CHECK(hq_now() < end, "the commit never reached block-job-complete");
    hq_agent_kill(vm);
    hq_conn_close(vm->ctl);
    vm->ctl = NULL;
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
    HQ_CHECK(jobs && json_array_size(jobs) == 1, "the commit job waits: %s", hq_str(jobs));
    HQ_CHECK(hq_agent_start(vm) == 0, "a new agent");
    CLEANUP_JSON json_t *jobs2 = hq_cmd(vm->mon, "query-jobs", NULL);
    HQ_CHECK(jobs2 && json_array_size(jobs2) == 0, "the sweep ended it: %s", hq_str(jobs2));
    CLEANUP_JSON json_t *d = disk_entry(vm, "vda");
    HQ_CHECK(d && hq_jbool(d, "tracking") == 1 && strcmp(hq_jstr(d, "node-name"), ovnode) == 0,
             "vda still tracks on the overlay: %s", hq_str(d));
    HQ_CHECK(hq_mwrite(vm, m, 0x72, 4 * K64, K64) == 0, "write");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(cm, "disk-commit after the restart");
    if (check_state(vm, "vda-fmt", 1, "after the second commit") < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, m, 0x73, 8 * K64, K64) == 0, "write");
    memcpy(scratch, at_c1, SIZE);
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", m->since[0], scratch, m) < 0)
        return -1;
    return hq_expect_disk(vm, m);
}

/* The same through ckptctl. */
static int
test_ckptctl(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c1\"}"));
    HQ_CHECK(c1, "c1");
    CLEANUP_FREE char *arg = xasprintf("vda=%s/vda-ov1.qcow2", vm->dir);
    CLEANUP_FREE char *out1 = NULL, *out2 = NULL, *out3 = NULL;
    int rc = hq_ckptctl(vm, &out1, (const char *const[]) { "disk", "snapshot", "--checkpoint",
                                                            "c2", arg, NULL });
    HQ_CHECK(rc == 0 && strstr(out1, "vda-ov1.qcow2") && strstr(out1, "tracking") &&
             strstr(out1, "checkpoint: c2"), "disk snapshot: %d %s", rc, out1);
    CLEANUP_JSON json_t *d = disk_entry(vm, "vda");
    if (check_state(vm, hq_jstr(d, "node-name"), 2, "after ckptctl disk snapshot") < 0)
        return -1;
    rc = hq_ckptctl(vm, &out2, (const char *const[]) { "disk", "snapshot", "vda", NULL });
    HQ_CHECK(rc == 2, "DISK without =FILE is a usage error: %d %s", rc, out2);
    rc = hq_ckptctl(vm, &out3, (const char *const[]) { "disk", "commit", "vda", NULL });
    HQ_CHECK(rc == 0 && strstr(out3, "committed") && strstr(out3, "vda-fmt"),
             "disk commit: %d %s", rc, out3);
    if (check_state(vm, "vda-fmt", 1, "after ckptctl disk commit") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* The chain's marks go down with a commit: a checkpoint deleted while
 * only the overlay held it stays deleted (its number in the gone mark on
 * the base, so a disk detached meanwhile cannot bring it back), and its
 * number is never handed out again. */
static int
test_commit_keeps_marks(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm && hq_vm_add_disk(vm, "vda", "qcow2", SIZE, false) == 0 &&
             hq_qemu_start(vm) == 0 && hq_agent_start(vm) == 0, "setup");
    const char *names[] = { "c1", NULL, "c2", "c3" };
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov1.qcow2", vm->dir);
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        CLEANUP_JSON json_t *r = names[i]
            ? hq_cmd(vm->ctl, "checkpoint-create", json_pack("{s:s}", "name", names[i]))
            : snapshot(vm, ov, NULL);
        HQ_CHECK(r, "step %zu (%s)", i, names[i] ? names[i] : "disk-snapshot");
    }
    CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-get", hq_json("{\"name\": \"c3\"}"));
    const char *id3 = hq_jstr(c3, "id");
    HQ_CHECK(id3 && strchr(id3, ':'), "c3's id: %s", hq_str(c3));
    CLEANUP_FREE char *chain = xasprintf("%.*s", (int) (strchr(id3, ':') - id3), id3);
    CLEANUP_JSON json_t *del = hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"c3\"}"));
    CLEANUP_JSON json_t *cm = hq_cmd(vm->ctl, "disk-commit", hq_json("{\"disk\": \"vda\"}"));
    HQ_CHECK(del && cm, "delete c3, then commit: %s", hq_str(cm));
    if (check_state(vm, "vda-fmt", 1, "after the commit") < 0)
        return -1;
    CLEANUP_FREE char *mark = xasprintf("ckptd1:gone:%s:3", chain);
    CLEANUP_JSON json_t *b = hq_bitmaps(vm, "vda");
    HQ_CHECK(hq_jfind(b, "name", mark), "the base should hold %s: %s", mark, hq_str(b));
    CLEANUP_JSON json_t *c4 = hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c4\"}"));
    CLEANUP_JSON json_t *g4 = hq_cmd(vm->ctl, "checkpoint-get", hq_json("{\"name\": \"c4\"}"));
    CLEANUP_FREE char *want4 = xasprintf("%s:4", chain);
    HQ_CHECK(c4 && g4 && hq_jstr(g4, "id") && strcmp(hq_jstr(g4, "id"), want4) == 0,
             "c4 should be %s: %s", want4, hq_str(g4));
    return hq_tree_matches_qemu(vm, "after c4");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "snapshot-commit", test_snapshot_commit },
        { "snapshot-checkpoint", test_snapshot_checkpoint },
        { "refused", test_refused },
        { "restart", test_restart },
        { "first-checkpoint-on-overlay", test_first_checkpoint_on_overlay },
        { "commit-fails", test_commit_fails },
        { "two-disks", test_two_disks },
        { "raw-base", test_raw_base },
        { "agent-dies-in-commit", test_agent_dies_in_commit },
        { "ckptctl", test_ckptctl },
        { "commit-keeps-marks", test_commit_keeps_marks },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
