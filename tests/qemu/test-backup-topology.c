/* Backups that stay right when the VM changes: a disk hot-plugged after
 * the base checkpoint, a raw disk, an external snapshot and a commit made
 * by another QMP client (the test monitor plays it), a backup's own
 * checkpoint deleted or re-created while it runs, device ids of every
 * device kind.  Every case checks the exported bytes and dirty maps
 * against a shadow model of each write, and after every step that each
 * disk has exactly one recording checkpoint bitmap. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>

#define K64 HQ_K64
#define SIZE HQ_MODEL_SIZE
#define NCL HQ_MODEL_NCL

static const char *
mode_of(json_t *job, const char *disk)
{
    return hq_jstr(hq_job_disk(job, disk), "mode");
}

/* A disk of the job that must be copied whole: mode full, no bitmap, a
 * reason containing why, and the model's bytes. */
static int
expect_full_disk(json_t *job, const struct hq_model *m, const char *why)
{
    json_t *d = hq_job_disk(job, m->disk);
    HQ_CHECK(d, "%s missing from the job: %s", m->disk, hq_str(job));
    HQ_CHECK(strcmp(hq_jstr(d, "mode"), "full") == 0 && !hq_jstr(d, "bitmap"),
             "%s should be full: %s", m->disk, hq_str(d));
    HQ_CHECK(!why || (hq_jstr(d, "reason") && strstr(hq_jstr(d, "reason"), why)),
             "%s's reason should say '%s': %s", m->disk, why, hq_str(d));
    CLEANUP_FREE uint8_t *got = xmalloc(SIZE);
    HQ_CHECK(hq_read_full(job, m->disk, got) == 0, "read %s", m->disk);
    int64_t x = hq_first_diff(got, m->data, SIZE);
    HQ_CHECK(x < 0, "%s's full export differs from the disk at byte %" PRId64,
             m->disk, x);
    return 0;
}

/* An incremental backup (args) in which disk is incremental and exact:
 * its dirty map is want and, applied to base, it gives expect. */
static int
incremental_exact(struct hq_vm *vm, const char *args, const char *disk,
                  const uint8_t *want, uint8_t *base, const uint8_t *expect)
{
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, args);
    HQ_CHECK(inc && mode_of(inc, disk) && strcmp(mode_of(inc, disk), "incremental") == 0,
             "%s in %s: %s", disk, args, hq_str(inc));
    if (hq_apply_incremental(inc, disk, want, base, expect) < 0)
        return -1;
    return hq_backup_end(vm, inc);
}

/* A full backup with checkpoint name of the listed disks: their bytes
 * become base[i]; slot starts counting for each model. */
static int
full_with_checkpoint(struct hq_vm *vm, const char *name, struct hq_model **m,
                     uint8_t **base, int n, int slot)
{
    CLEANUP_FREE char *args = xasprintf("{\"checkpoint\": {\"name\": \"%s\"}}", name);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
    HQ_CHECK(job, "full backup with %s", name);
    for (int i = 0; i < n; i++) {
        HQ_CHECK(hq_read_full(job, m[i]->disk, base[i]) == 0, "read %s", m[i]->disk);
        HQ_CHECK(hq_first_diff(base[i], m[i]->data, SIZE) < 0, "%s differs", m[i]->disk);
        hq_model_mark(m[i], slot);
    }
    return hq_backup_end(vm, job);
}

/* A disk attached after the base checkpoint is copied in full, then joins
 * the next checkpoint and is incremental from it. */
static int
test_hotplug(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model ma_, md_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    CLEANUP_FREE uint8_t *base_a = xcalloc(1, SIZE);
    HQ_CHECK(hq_mwrite(vm, ma, 0x21, 0, 3 * K64) == 0, "write");
    struct hq_model *ms[] = { ma };
    uint8_t *bs[] = { base_a };
    if (full_with_checkpoint(vm, "c0", ms, bs, 1, 0) < 0)
        return -1;
    HQ_CHECK(hq_qemu_hotplug(vm, "vdd", SIZE) == 0, "hot-plug vdd");
    HQ_CLEANUP_MODEL struct hq_model *md = hq_model_init(&md_, "vdd");
    HQ_CHECK(hq_mwrite(vm, ma, 0x22, 5 * K64, K64) == 0 &&
             hq_mwrite(vm, md, 0x23, K64, 2 * K64) == 0, "writes");
    uint8_t want_a[NCL];
    memcpy(want_a, ma->since[0], NCL);
    CLEANUP_FREE uint8_t *at_a = xmalloc(SIZE);
    memcpy(at_a, ma->data, SIZE);
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm,
        "{\"incremental\": \"c0\", \"checkpoint\": {\"name\": \"c1\"}}");
    HQ_CHECK(inc, "incremental from c0");
    hq_model_mark(ma, 1);
    hq_model_mark(md, 1);
    HQ_CHECK(hq_mwrite(vm, md, 0x24, 7 * K64, K64) == 0, "write during the backup");
    HQ_CHECK(mode_of(inc, "vda") && strcmp(mode_of(inc, "vda"), "incremental") == 0,
             "vda: %s", hq_str(inc));
    /* The export is the point in time of backup-begin: vdd without the
     * write made during the backup. */
    struct hq_model at_d = *md;
    at_d.data = xmalloc(SIZE);
    memcpy(at_d.data, md->data, SIZE);
    memset(at_d.data + 7 * K64, 0, K64);
    int r = expect_full_disk(inc, &at_d, "not in checkpoint 'c0'");
    free(at_d.data);
    if (r < 0 || hq_apply_incremental(inc, "vda", want_a, base_a, at_a) < 0)
        return -1;
    CLEANUP_FREE uint8_t *base_d = xmalloc(SIZE);
    HQ_CHECK(hq_read_full(inc, "vdd", base_d) == 0, "vdd base");
    HQ_CHECK(hq_backup_end(vm, inc) == 0, "end");
    if (hq_tree_matches_qemu(vm, "after c1") < 0)
        return -1;
    CLEANUP_JSON json_t *c1 = hq_ckpt_get(vm->ctl, "c1", false);
    HQ_CHECK(c1 && hq_jfind(json_object_get(c1, "disks"), "disk", "vdd"),
             "c1 should cover vdd: %s", hq_str(c1));
    /* From c1, vdd is incremental: exactly the write made after c1. */
    if (incremental_exact(vm, "{\"incremental\": \"c1\"}", "vdd", md->since[1],
                          base_d, md->data) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "at the end");
}

/* QEMU and the agent over a qcow2 vda and a writable raw vdc. */
static struct hq_vm *
raw_vm(void)
{
    struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, false);
    if (vm && (hq_vm_add_disk(vm, "vdc", "raw", SIZE, false) < 0 ||
               hq_qemu_start(vm) < 0 || hq_agent_start(vm) < 0))
        hq_fail("raw VM");
    return vm;
}

/* A writable raw disk is in every backup, in full, at the backup's own
 * point in time. */
static int
test_raw(void)
{
    CLEANUP_VM struct hq_vm *vm = raw_vm();
    HQ_CHECK(vm && !hq_failed(), "a VM with qcow2 vda and raw vdc");
    struct hq_model ma_, mc_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mc = hq_model_init(&mc_, "vdc");
    HQ_CHECK(hq_mwrite(vm, ma, 0x31, 0, K64) == 0 &&
             hq_mwrite(vm, mc, 0x32, 0, 4 * K64) == 0, "writes");
    CLEANUP_FREE uint8_t *base_a = xcalloc(1, SIZE), *base_c = xcalloc(1, SIZE);
    struct hq_model *ms[] = { ma, mc };
    uint8_t *bs[] = { base_a, base_c };
    if (full_with_checkpoint(vm, "p1", ms, bs, 2, 0) < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, ma, 0x33, 2 * K64, K64) == 0 &&
             hq_mwrite(vm, mc, 0x34, K64, K64) == 0, "writes after p1");
    /* strict refuses, and changes nothing */
    CLEANUP_JSON json_t *no = hq_cmd_err(vm->ctl, "Unsupported", "backup-begin",
        hq_json("{\"incremental\": \"p1\", \"strict\": true}"));
    HQ_CHECK(no && strstr(hq_err_desc(no), "vdc"), "strict: %s", hq_str(no));
    if (hq_backup_expect_clean(vm, "after the strict refusal") < 0)
        return -1;
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm,
        "{\"incremental\": \"p1\", \"checkpoint\": {\"name\": \"p2\"}}");
    HQ_CHECK(inc, "incremental from p1");
    if (expect_full_disk(inc, mc, "raw") < 0 ||
        hq_apply_incremental(inc, "vda", ma->since[0], base_a, ma->data) < 0)
        return -1;
    HQ_CHECK(hq_backup_end(vm, inc) == 0, "end");
    return hq_tree_matches_qemu(vm, "after p2");
}

static int
wait_job_event(struct hq_vm *vm, const char *event, const char *id)
{
    for (double end = hq_now() + 30;;) {
        CLEANUP_JSON json_t *ev = hq_wait_event(vm->mon, event, end - hq_now());
        HQ_CHECK(ev, "no %s for %s", event, id);
        const char *dev = hq_jstr(json_object_get(ev, "data"), "device");
        if (dev && strcmp(dev, id) == 0)
            return 0;
    }
}

/* An external snapshot taken by another client: the disk stops tracking
 * (said in query-disks and the checkpoints), incrementals copy it in full,
 * new checkpoints leave it out.  Once that client commits the overlay
 * back, QEMU's commit job has marked the committed writes in the base's
 * recording bitmap: tracking resumes and the incremental is exact. */
static int
test_outside_snapshot(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    CLEANUP_FREE uint8_t *base_a = xcalloc(1, SIZE), *base_b = xcalloc(1, SIZE);
    struct hq_model *ms[] = { ma, mb };
    uint8_t *bs[] = { base_a, base_b };
    if (full_with_checkpoint(vm, "h4", ms, bs, 2, 0) < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, ma, 0x41, 0, K64) == 0, "write before the snapshot");
    CLEANUP_FREE char *ov = xasprintf("%s/vda-ov.qcow2", vm->dir);
    CLEANUP_FREE char *sz = xasprintf("%d", SIZE);
    char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", ov, sz, NULL };
    HQ_CHECK(hq_run_cmd(argv, NULL) == 0, "qemu-img create");
    CLEANUP_JSON json_t *add = hq_cmd(vm->mon, "blockdev-add",
        json_pack("{s:s,s:s,s:{s:s,s:s},s:n}", "driver", "qcow2", "node-name", "vda-ov",
                  "file", "driver", "file", "filename", ov, "backing"));
    CLEANUP_JSON json_t *snap = hq_cmd(vm->mon, "blockdev-snapshot",
        hq_json("{\"node\": \"vda-fmt\", \"overlay\": \"vda-ov\"}"));
    HQ_CHECK(add && snap, "outside snapshot");
    HQ_CHECK(hq_mwrite(vm, ma, 0x42, 3 * K64, 2 * K64) == 0, "write into the overlay");
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    json_t *vda = hq_jfind(disks, "disk", "vda");
    HQ_CHECK(vda && hq_jbool(vda, "tracking") == 0 && hq_jstr(vda, "reason") &&
             strstr(hq_jstr(vda, "reason"), "outside ckptd"), "vda: %s", hq_str(vda));
    HQ_CHECK(hq_jbool(hq_jfind(disks, "disk", "vdb"), "tracking") == 1, "vdb tracks");
    CLEANUP_JSON json_t *h4 = hq_ckpt_get(vm->ctl, "h4", false);
    json_t *h4a = hq_jfind(json_object_get(h4, "disks"), "disk", "vda");
    HQ_CHECK(h4a && hq_jbool(h4a, "tracking") == 0, "h4 still lists vda, not "
             "tracking: %s", hq_str(h4));
    CLEANUP_JSON json_t *ch = hq_cmd_err(vm->ctl, "Inconsistent", "checkpoint-changes",
        hq_json("{\"disk\": \"vda\", \"from\": \"h4\"}"));
    HQ_CHECK(ch, "changes of a disk that does not track");
    /* The incremental copies vda whole, with the overlay's writes. */
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"h4\"}");
    HQ_CHECK(inc, "incremental from h4");
    if (expect_full_disk(inc, ma, "outside ckptd") < 0 ||
        hq_apply_incremental(inc, "vdb", mb->since[0], base_b, mb->data) < 0)
        return -1;
    HQ_CHECK(hq_backup_end(vm, inc) == 0, "end");
    /* New checkpoints leave vda out, and say so when asked for it. */
    CLEANUP_JSON json_t *bad = hq_cmd_err(vm->ctl, "Unsupported", "checkpoint-create",
        hq_json("{\"name\": \"s0\", \"disks\": [\"vda\"]}"));
    HQ_CHECK(bad, "a checkpoint across layers must be refused");
    CLEANUP_JSON json_t *s1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     hq_json("{\"name\": \"s1\"}"));
    HQ_CHECK(s1 && json_array_size(json_object_get(s1, "disks")) == 1 &&
             hq_jfind(json_object_get(s1, "disks"), "disk", "vdb"), "s1: %s", hq_str(s1));
    if (hq_tree_matches_qemu(vm, "after s1") < 0)
        return -1;
    CLEANUP_JSON json_t *ovb = hq_cmd(vm->mon, "query-named-block-nodes",
                                      hq_json("{\"flat\": true}"));
    json_t *ovn = hq_jfind(ovb, "node-name", "vda-ov");
    HQ_CHECK(ovn && json_array_size(json_object_get(ovn, "dirty-bitmaps")) == 0,
             "the overlay got bitmaps: %s", hq_str(ovn));
    /* The other client commits the overlay back into vda-fmt. */
    CLEANUP_JSON json_t *cm = hq_cmd(vm->mon, "block-commit",
        hq_json("{\"job-id\": \"outside-commit\", \"device\": \"vda-ov\"}"));
    HQ_CHECK(cm && wait_job_event(vm, "BLOCK_JOB_READY", "outside-commit") == 0, "commit");
    CLEANUP_JSON json_t *done = hq_cmd(vm->mon, "job-complete",
                                       hq_json("{\"id\": \"outside-commit\"}"));
    HQ_CHECK(done && wait_job_event(vm, "BLOCK_JOB_COMPLETED", "outside-commit") == 0,
             "commit complete");
    CLEANUP_JSON json_t *disks2 = hq_cmd(vm->ctl, "query-disks", NULL);
    HQ_CHECK(hq_jbool(hq_jfind(disks2, "disk", "vda"), "tracking") == 1,
             "vda tracks again after the commit: %s", hq_str(disks2));
    /* Every write since h4, before and inside the overlay, is in h4. */
    if (incremental_exact(vm, "{\"incremental\": \"h4\", \"disks\": [\"vda\"]}", "vda",
                          ma->since[0], base_a, ma->data) < 0)
        return -1;
    return hq_tree_matches_qemu(vm, "after the commit");
}

/* A running backup's own new checkpoint and its base cannot be deleted
 * (and so not re-created under the same name) while it runs. */
static int
test_busy_checkpoints(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"b0\"}")));
    CLEANUP_JSON json_t *job = hq_backup_begin(vm,
        "{\"incremental\": \"b0\", \"checkpoint\": {\"name\": \"X\"}}");
    HQ_CHECK(job, "begin");
    CLEANUP_JSON json_t *d1 = hq_cmd_err(vm->ctl, "Busy", "checkpoint-delete",
                                         hq_json("{\"name\": \"X\"}"));
    CLEANUP_JSON json_t *d2 = hq_cmd_err(vm->ctl, "Busy", "checkpoint-delete",
                                         hq_json("{\"name\": \"b0\"}"));
    CLEANUP_JSON json_t *c = hq_cmd_err(vm->ctl, "AlreadyExists", "checkpoint-create",
                                        hq_json("{\"name\": \"X\"}"));
    HQ_CHECK(d1 && d2 && c, "X and b0 are held by the backup");
    HQ_CHECK(hq_backup_end(vm, job) == 0, "end");
    CLEANUP_JSON json_t *d3 = hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"X\"}"));
    HQ_CHECK(d3, "X can go once the backup ended");
    return hq_tree_matches_qemu(vm, "at the end");
}

/* Restores a disk at a checkpoint from DIR with ckptctl as raw bytes and
 * compares them with want. */
static int
restore_equals(struct hq_vm *vm, const char *dir, const char *disk, const char *ckpt,
               const uint8_t *want)
{
    CLEANUP_FREE char *out = xasprintf("%s/restored-%s-%s.raw", vm->dir, disk, ckpt);
    CLEANUP_FREE char *text = NULL;
    const char *args[] = { "restore", dir, "--disk", disk, "--checkpoint", ckpt,
                           "--output", out, "--format", "raw", NULL };
    int r = hq_ckptctl(vm, &text, args);
    HQ_CHECK(r == 0, "restore %s at %s: %d: %s", disk, ckpt, r, text);
    CLEANUP_FREE char *got = hq_read_file(out);
    HQ_CHECK(got, "read %s", out);
    int64_t x = hq_first_diff((const uint8_t *) got, want, SIZE);
    HQ_CHECK(x < 0, "%s restored at %s differs from the disk then at byte %" PRId64,
             disk, ckpt, x);
    return 0;
}

/* ckptctl pull of a VM with a raw disk: the incremental backup holds the
 * raw disk whole, so restoring every disk at the newer point gives that
 * point, not a mix of two. */
static int
test_pull_raw_restore(void)
{
    CLEANUP_VM struct hq_vm *vm = raw_vm();
    HQ_CHECK(vm && !hq_failed(), "a VM with qcow2 vda and raw vdc");
    struct hq_model ma_, mc_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mc = hq_model_init(&mc_, "vdc");
    HQ_CHECK(hq_mwrite(vm, ma, 0x51, 0, K64) == 0 &&
             hq_mwrite(vm, mc, 0x52, 0, 2 * K64) == 0, "writes");
    CLEANUP_FREE char *dir = xasprintf("%s/backups", vm->dir);
    CLEANUP_FREE char *out = NULL;
    const char *full[] = { "pull", "--output", dir, "--checkpoint", "p1", NULL };
    HQ_CHECK(hq_ckptctl(vm, &out, full) == 0, "pull p1: %s", out);
    CLEANUP_FREE uint8_t *a1 = xmalloc(SIZE), *c1 = xmalloc(SIZE);
    memcpy(a1, ma->data, SIZE);
    memcpy(c1, mc->data, SIZE);
    HQ_CHECK(hq_mwrite(vm, ma, 0x53, 4 * K64, K64) == 0 &&
             hq_mwrite(vm, mc, 0x54, K64, 3 * K64) == 0, "writes after p1");
    CLEANUP_FREE char *out2 = NULL;
    const char *inc[] = { "--json", "pull", "--output", dir, "--incremental", "p1",
                          "--checkpoint", "p2", NULL };
    HQ_CHECK(hq_ckptctl(vm, &out2, inc) == 0, "pull p2: %s", out2);
    CLEANUP_JSON json_t *sum = hq_json(out2);
    json_t *vdc = hq_jfind(json_object_get(sum, "disks"), "disk", "vdc");
    HQ_CHECK(vdc && strcmp(hq_jstr(vdc, "mode"), "full") == 0 &&
             strstr(hq_jstr(vdc, "file"), "vdc.p2.full.qcow2") && hq_jstr(vdc, "reason"),
             "vdc in the incremental pull: %s", out2);
    if (restore_equals(vm, dir, "vdc", "p2", mc->data) < 0 ||
        restore_equals(vm, dir, "vda", "p2", ma->data) < 0 ||
        restore_equals(vm, dir, "vdc", "p1", c1) < 0 ||
        restore_equals(vm, dir, "vda", "p1", a1) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "after the pulls");
}

/* Deleting the newest checkpoint does not hand its sequence number out
 * again, not even to a new agent on the same images. */
static int
test_seq_never_reused(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    const char *names[] = { "a", "b" };
    for (int i = 0; i < 2; i++) {
        CLEANUP_FREE char *args = xasprintf("{\"name\": \"%s\"}", names[i]);
        json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json(args)));
    }
    CLEANUP_JSON json_t *d = hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"b\"}"));
    HQ_CHECK(d, "delete b");
    HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "restart the agent");
    CLEANUP_JSON json_t *c = hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"b\"}"));
    HQ_CHECK(c, "create b again");
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vda", "ckptd1:3:") == 1 &&
             hq_bitmap_count_prefix(vm, "vda", "ckptd1:2:") == 0 &&
             hq_bitmap_count_prefix(vm, "vda", "ckptd1:next:") == 0,
             "the new b should have sequence 3 and the mark be gone: %s",
             hq_str(hq_bitmaps(vm, "vda")));
    return hq_tree_matches_qemu(vm, "at the end");
}

/* A qcow2 image with an external raw data file (how KubeVirt and libvirt
 * make raw volumes trackable) holds checkpoints like any qcow2: the data
 * lands in the raw file, the bitmaps in the qcow2, and the incremental is
 * exact. */
static int
test_data_file(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(0, SIZE, NULL, false);
    HQ_CHECK(vm, "vm");
    HQ_CHECK(hq_vm_add_disk(vm, "vdx", "qcow2", SIZE, false) == 0, "disk");
    CLEANUP_FREE char *data = xasprintf("%s/vdx.data", vm->dir);
    CLEANUP_FREE char *opt = xasprintf("data_file=%s,data_file_raw=on", data);
    CLEANUP_FREE char *sz = xasprintf("%d", SIZE);
    char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-o", opt,
                     hq_vm_disk(vm, "vdx")->path, sz, NULL };
    HQ_CHECK(hq_run_cmd(argv, NULL) == 0, "qemu-img create with a data file");
    HQ_CHECK(hq_qemu_start(vm) == 0 && hq_agent_start(vm) == 0, "start");
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    HQ_CHECK(hq_jbool(hq_jfind(disks, "disk", "vdx"), "checkpoints") == 1,
             "vdx cannot hold checkpoints: %s", hq_str(disks));
    struct hq_model mx_;
    HQ_CLEANUP_MODEL struct hq_model *mx = hq_model_init(&mx_, "vdx");
    HQ_CHECK(hq_mwrite(vm, mx, 0x91, 0, 3 * K64) == 0, "write");
    CLEANUP_FREE uint8_t *base = xcalloc(1, SIZE);
    struct hq_model *ms[] = { mx };
    uint8_t *bs[] = { base };
    if (full_with_checkpoint(vm, "d1", ms, bs, 1, 0) < 0)
        return -1;
    HQ_CHECK(hq_mwrite(vm, mx, 0x92, 5 * K64, 2 * K64) == 0, "write after d1");
    if (incremental_exact(vm, "{\"incremental\": \"d1\"}", "vdx", mx->since[0], base,
                          mx->data) < 0)
        return -1;
    /* The guest's bytes are in the raw data file itself. */
    CLEANUP_FREE char *raw = hq_read_file(data);
    HQ_CHECK(raw && (uint8_t) raw[5 * K64] == 0x92, "the data file does not hold the write");
    return hq_tree_matches_qemu(vm, "at the end");
}

/* checkpoint-changes against the dirty map an incremental backup of the
 * same range exports: equal after a delete in the middle, in pages of
 * one, and nothing of the agent's left afterwards; a disk that does not
 * track is Inconsistent. */
static int
changes_map(struct hq_vm *vm, const char *from, uint8_t *map)
{
    memset(map, 0, NCL);
    int64_t at = 0;
    for (int page = 0; page < 1000; page++) {
        CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-changes",
            json_pack("{s:s,s:s,s:I,s:i}", "disk", "vda", "from", from,
                      "starting-offset", (json_int_t) at, "max-results", 1));
        HQ_CHECK(r && hq_jint(r, "volume-capacity-bytes") == SIZE, "changes: %s", hq_str(r));
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(r, "block-metadata"), i, e) {
            int64_t off = hq_jint(e, "byte-offset"), len = hq_jint(e, "size-bytes");
            HQ_CHECK(off >= at && len > 0 && off % K64 == 0 && len % K64 == 0,
                     "extent %s after %" PRId64, hq_str(e), at);
            for (int64_t c = off / K64; c < (off + len) / K64; c++)
                map[c] = 1;
            at = off + len;
        }
        if (!json_object_get(r, "next-offset"))
            return 0;
        at = hq_jint(r, "next-offset");
    }
    HQ_CHECK(false, "more than 1000 pages");
}

static int
test_changes_equal_backup_map(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    const int64_t w[][2] = { { 0, K64 }, { 5 * K64, 3 * K64 }, { 40 * K64, K64 },
                             { 41 * K64, K64 }, { SIZE - K64, K64 } };
    const char *c[] = { "c1", "c2", "c3" };
    for (int i = 0; i < 3; i++) {
        CLEANUP_FREE char *a = xasprintf("{\"name\": \"%s\"}", c[i]);
        json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json(a)));
        for (int k = i; k < 5; k += 2)
            HQ_CHECK(hq_write(vm, "vda", 0x10 + k, w[k][0], w[k][1]) == 0, "write");
    }
    json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"c2\"}")));
    uint8_t got[NCL], want[NCL];
    if (changes_map(vm, "c1", got) < 0)
        return -1;
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc, "incremental from c1");
    const char *bitmap = hq_jstr(hq_job_disk(inc, "vda"), "bitmap");
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", bitmap);
    {
        HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(hq_jstr(hq_job_disk(inc, "vda"), "uri"), ctx);
        HQ_CHECK(h && hq_nbd_map(h, ctx, SIZE, K64, 1, false, want) == 0, "map");
    }
    HQ_CHECK(hq_backup_end(vm, inc) == 0, "end");
    HQ_CHECK(memcmp(got, want, NCL) == 0, "checkpoint-changes differs from the "
             "incremental's dirty map");
    HQ_CHECK(want[0] && want[NCL - 1] && want[40] && want[41] && want[5], "the map "
             "misses writes");
    CLEANUP_JSON json_t *bad = hq_cmd_err(vm->ctl, "InvalidParameter", "checkpoint-changes",
        hq_json("{\"disk\": \"vda\", \"from\": \"c3\", \"to\": \"c1\"}"));
    HQ_CHECK(bad, "to older than from");
    return hq_backup_expect_clean(vm, "after checkpoint-changes");
}

/* Another QMP client grows the disk between two requests, and the guest
 * writes past the old end: checkpoint-changes, planned on the cached tree
 * (the block graph did not change), must still report that write, over
 * the disk's new size. */
static int
test_resize_then_changes(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c1\"}")));
    CLEANUP_JSON json_t *rs = hq_cmd(vm->mon, "block_resize",
        json_pack("{s:s,s:I}", "node-name", hq_vm_disk(vm, "vda")->node,
                  "size", (json_int_t) (2 * SIZE)));
    HQ_CHECK(rs, "block_resize");
    HQ_CHECK(hq_write(vm, "vda", 0x42, SIZE + K64, K64) == 0, "write past the old end");
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-changes",
        json_pack("{s:s,s:s}", "disk", "vda", "from", "c1"));
    HQ_CHECK(r && hq_jint(r, "volume-capacity-bytes") == 2 * SIZE,
             "changes over the grown disk: %s", hq_str(r));
    bool seen = false;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "block-metadata"), i, e) {
        int64_t off = hq_jint(e, "byte-offset"), len = hq_jint(e, "size-bytes");
        seen = seen || (off <= SIZE + K64 && off + len >= SIZE + 2 * K64);
    }
    HQ_CHECK(seen, "the write past the old end is missing: %s", hq_str(r));
    return hq_backup_expect_clean(vm, "after checkpoint-changes");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "resize-then-changes", test_resize_then_changes },
        { "hotplug-disk-full-then-incremental", test_hotplug },
        { "raw-disk-in-every-backup", test_raw },
        { "outside-snapshot-and-commit", test_outside_snapshot },
        { "busy-checkpoints", test_busy_checkpoints },
        { "pull-raw-restore-each-point", test_pull_raw_restore },
        { "seq-never-reused", test_seq_never_reused },
        { "qcow2-with-data-file", test_data_file },
        { "changes-equal-backup-map", test_changes_equal_backup_map },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
