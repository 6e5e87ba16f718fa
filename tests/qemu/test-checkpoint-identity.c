/* Checkpoint identity (issue 12): a checkpoint is its chain id and
 * sequence number, not its name.  A disk from another VM's agent is
 * reported and never joins this VM's chain (its bitmaps untouched); a
 * checkpoint deleted while a disk was detached does not come back with
 * the disk; a backup directory refuses an incremental from a checkpoint
 * deleted and made again; images of the previous record format load with
 * every checkpoint; the chain id survives an agent restart.  Every case
 * checks bitmaps in QEMU, and the incrementals check bytes and dirty maps
 * against the shadow model. */
#include "tests/qemu/harness.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define K64 HQ_K64
#define SIZE HQ_MODEL_SIZE
#define NCL HQ_MODEL_NCL

static json_t *
create(struct hq_vm *vm, const char *name)
{
    CLEANUP_FREE char *args = xasprintf("{\"name\": \"%s\"}", name);
    return hq_cmd(vm->ctl, "checkpoint-create", hq_json(args));
}

static int
delete(struct hq_vm *vm, const char *name)
{
    CLEANUP_FREE char *args = xasprintf("{\"name\": \"%s\"}", name);
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-delete", hq_json(args));
    return r ? 0 : -1;
}

/* The checkpoint's "id" (caller frees), or NULL with hq_fail. */
static char *
id_of(struct hq_vm *vm, const char *name)
{
    CLEANUP_JSON json_t *c = hq_ckpt_get(vm->ctl, name, false);
    const char *id = c ? hq_jstr(c, "id") : NULL;
    if (!id)
        hq_fail("checkpoint %s has no id: %s", name, hq_str(c));
    return id ? xstrdup(id) : NULL;
}

static json_t *
disk_entry(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    json_t *d = disks ? hq_jfind(disks, "disk", disk) : NULL;
    return d ? json_incref(d) : NULL;
}

/* Name, recording flag and dirty count of every bitmap on disk, as text:
 * to show that nothing on it changed. */
static char *
bitmap_state(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *bms = hq_bitmaps(vm, disk);
    char *s = xstrdup("");
    size_t i;
    json_t *b;
    json_array_foreach(bms, i, b) {
        char *more = xasprintf("%s%s rec=%d count=%" PRId64 "\n", s, hq_jstr(b, "name"),
                               hq_jbool(b, "recording"),
                               (int64_t) json_integer_value(json_object_get(b, "count")));
        free(s);
        s = more;
    }
    return s;
}

static int
is_listed(struct hq_vm *vm, const char *name)
{
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    if (!names)
        return -1;
    CLEANUP_FREE char *padded = xasprintf(",%s,", names);
    CLEANUP_FREE char *want = xasprintf(",%s,", name);
    return strstr(padded, want) != NULL;
}

/* Does any checkpoint's disk list name disk? */
static bool
in_any_checkpoint(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *list = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
        if (hq_jfind(json_object_get(c, "disks"), "disk", disk))
            return true;
    return false;
}

/* (1) A disk image with checkpoints, moved in from another VM's agent,
 * hot-plugged: reported with its chain and checkpoints, in no checkpoint
 * of this VM, its bitmaps untouched by creates and deletes here (also one
 * of the same name), copied in full by an incremental. */
static int
test_foreign_disk(void)
{
    /* The other VM: checkpoints c1 (same name as ours) and o2. */
    CLEANUP_VM struct hq_vm *other = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(other, "the other VM");
    json_decref(create(other, "c1"));
    HQ_CHECK(hq_write(other, "vda", 0x31, 0, 2 * K64) == 0, "write");
    json_decref(create(other, "o2"));
    HQ_CHECK(hq_write(other, "vda", 0x32, 4 * K64, K64) == 0, "write");
    CLEANUP_JSON json_t *o2 = hq_ckpt_get(other->ctl, "o2", false);
    HQ_CHECK(o2, "o2");
    const char *oid = hq_jstr(o2, "id") ? hq_jstr(o2, "id") : "(none)";
    HQ_CHECK(hq_agent_stop(other) == 0 && hq_qemu_quit(other) == 0, "stop the other VM");

    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model ma_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    CLEANUP_JSON json_t *c1 = create(vm, "c1");
    HQ_CHECK(c1, "c1");
    hq_model_mark(ma, 0);
    HQ_CHECK(hq_mwrite(vm, ma, 0x11, K64, K64) == 0, "write");

    HQ_CHECK(hq_qemu_plug(vm, "vdf", other->disks[0].path) == 0, "plug the other disk");
    CLEANUP_FREE char *before = bitmap_state(vm, "vdf");
    CLEANUP_JSON json_t *d = disk_entry(vm, "vdf");
    HQ_CHECK(!in_any_checkpoint(vm, "vdf"), "vdf joined a checkpoint: %s",
             hq_str(hq_cmd(vm->ctl, "checkpoint-list", NULL)));
    HQ_CHECK(is_listed(vm, "o2") == 0, "o2 of the other VM is listed");
    json_t *f = json_object_get(d, "foreign");
    HQ_CHECK(d && hq_jbool(d, "checkpoints") == 0 && f, "vdf should be foreign: %s", hq_str(d));
    CLEANUP_FREE char *id1 = id_of(vm, "c1");
    HQ_CHECK(id1 && strncmp(id1, oid, 16) != 0, "two VMs share a chain: %s and %s", id1, oid);
    HQ_CHECK(hq_jstr(f, "chain") && strncmp(hq_jstr(f, "chain"), oid, 16) == 0 &&
             strstr(hq_jstr(d, "reason"), "another chain"),
             "vdf should name the other chain %.16s: %s", oid, hq_str(d));
    HQ_CHECK(json_array_size(json_object_get(f, "checkpoints")) == 2,
             "vdf's two checkpoints: %s", hq_str(f));
    CLEANUP_JSON json_t *e = hq_cmd_err(vm->ctl, "NotFound", "checkpoint-get",
                                        hq_json("{\"name\": \"o2\"}"));
    HQ_CHECK(e && strstr(hq_err_desc(e), "vdf"), "why o2 is not here: %s", hq_str(e));
    CLEANUP_JSON json_t *u = hq_cmd_err(vm->ctl, "Unsupported", "checkpoint-create",
                                        hq_json("{\"name\": \"x\", \"disks\": [\"vdf\"]}"));
    HQ_CHECK(u, "a checkpoint of vdf alone should be refused");

    /* Changes here leave vdf alone: a create, deleting c1 (vdf has a c1
     * of its own), deleting the newest. */
    CLEANUP_JSON json_t *c2 = create(vm, "c2");
    HQ_CHECK(c2 && !hq_jfind(json_object_get(c2, "disks"), "disk", "vdf"),
             "c2 should not cover vdf: %s", hq_str(c2));
    hq_model_mark(ma, 1);
    HQ_CHECK(hq_mwrite(vm, ma, 0x12, 3 * K64, K64) == 0, "write");
    HQ_CHECK(delete(vm, "c1") == 0, "delete c1");
    json_decref(create(vm, "c3"));
    HQ_CHECK(delete(vm, "c3") == 0, "delete c3");
    CLEANUP_FREE char *after = bitmap_state(vm, "vdf");
    HQ_CHECK(strcmp(before, after) == 0, "vdf's bitmaps changed:\n--- before\n%s--- after\n%s",
             before, after);

    /* An incremental from c2: vda exact, vdf in full with the reason. */
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    json_t *jf = hq_job_disk(job, "vdf");
    HQ_CHECK(jf && strcmp(hq_jstr(jf, "mode"), "full") == 0 && hq_jstr(jf, "reason") &&
             strstr(hq_jstr(jf, "reason"), "another chain"), "vdf in the job: %s", hq_str(job));
    CLEANUP_FREE uint8_t *base = xcalloc(1, SIZE);
    memcpy(base, ma->data, SIZE);
    memset(base + 3 * K64, 0, K64);     /* the disk at c2 */
    if (hq_apply_incremental(job, "vda", ma->since[1], base, ma->data) < 0)
        return -1;
    return hq_backup_end(vm, job);
}

/* Takes disk `name` out of the VM's command line: QEMU restarts without
 * it (a disk cannot leave a q35 root port without a guest).  Its image
 * path into path (caller frees). */
static int
restart_without(struct hq_vm *vm, const char *name, char **path)
{
    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "disconnected", 10) == 0, "agent sees QEMU go");
    for (int i = 0; i < vm->ndisks; i++)
        if (strcmp(vm->disks[i].name, name) == 0) {
            *path = vm->disks[i].path;
            memmove(&vm->disks[i], &vm->disks[i + 1],
                    (size_t) (vm->ndisks - i - 1) * sizeof vm->disks[0]);
            vm->ndisks--;
            break;
        }
    HQ_CHECK(*path, "no disk %s", name);
    HQ_CHECK(hq_qemu_start(vm) == 0, "start QEMU without %s", name);
    HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 10) == 0, "agent reconnects");
    return 0;
}

/* (2) vdb detached, c2 deleted, vdb attached again: c2 does not come
 * back, vdb reports it as stale, each disk has one recording bitmap, an
 * incremental from c1 is exact on both disks (c2's bitmap on vdb still
 * counts), and the next change folds c2's bitmaps away on vdb. */
static int
test_deleted_while_detached(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    HQ_CHECK(hq_mwrite(vm, ma, 0x01, 0, 4 * K64) == 0 &&
             hq_mwrite(vm, mb, 0x02, 0, 4 * K64) == 0, "first writes");
    json_decref(create(vm, "c1"));
    hq_model_mark(ma, 0);
    hq_model_mark(mb, 0);
    CLEANUP_FREE uint8_t *base_a = xmalloc(SIZE);
    CLEANUP_FREE uint8_t *base_b = xmalloc(SIZE);
    memcpy(base_a, ma->data, SIZE);
    memcpy(base_b, mb->data, SIZE);
    HQ_CHECK(hq_mwrite(vm, ma, 0x03, 8 * K64, K64) == 0 &&
             hq_mwrite(vm, mb, 0x04, 9 * K64, K64) == 0, "writes after c1");
    json_decref(create(vm, "c2"));
    /* Only in c2's bitmap on vdb: lost if c2's bitmap were dropped. */
    HQ_CHECK(hq_mwrite(vm, ma, 0x05, 12 * K64, K64) == 0 &&
             hq_mwrite(vm, mb, 0x06, 13 * K64, 2 * K64) == 0, "writes after c2");
    json_decref(create(vm, "c3"));
    HQ_CHECK(hq_mwrite(vm, mb, 0x07, 20 * K64, K64) == 0, "write after c3");

    CLEANUP_FREE char *path_b = NULL;
    if (restart_without(vm, "vdb", &path_b) < 0)
        return -1;
    HQ_CHECK(delete(vm, "c2") == 0, "delete c2 while vdb is away");
    HQ_CHECK(hq_mwrite(vm, ma, 0x08, 30 * K64, K64) == 0, "write on vda");
    HQ_CHECK(hq_qemu_plug(vm, "vdb", path_b) == 0, "vdb back");
    HQ_CHECK(hq_mwrite(vm, mb, 0x09, 31 * K64, K64) == 0, "write on vdb");

    /* query-disks reads the disks afresh (the agent sees the hot-plug). */
    CLEANUP_JSON json_t *d = disk_entry(vm, "vdb");
    /* Seen by this agent, and by a new one reading the images cold. */
    for (int pass = 0; pass < 2; pass++) {
        HQ_CHECK(is_listed(vm, "c2") == 0, "c2 came back with vdb: %s",
                 hq_ckpt_names(vm->ctl));
        HQ_CHECK(is_listed(vm, "c1") == 1 && is_listed(vm, "c3") == 1, "c1 and c3 listed");
        CLEANUP_JSON json_t *c3 = hq_ckpt_get(vm->ctl, "c3", false);
        HQ_CHECK(c3 && strcmp(hq_jstr(c3, "parent"), "c1") == 0 &&
                 hq_jfind(json_object_get(c3, "disks"), "disk", "vdb"),
                 "c3: parent c1, on vdb: %s", hq_str(c3));
        if (pass == 0)
            HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "restart the agent");
    }
    json_t *st = json_object_get(d, "stale");
    HQ_CHECK(st && json_array_size(json_object_get(st, "checkpoints")) == 1 &&
             hq_jbool(d, "checkpoints") == 1, "vdb should report c2 stale: %s", hq_str(d));
    CLEANUP_JSON json_t *e = hq_cmd_err(vm->ctl, "NotFound", "checkpoint-get",
                                        hq_json("{\"name\": \"c2\"}"));
    HQ_CHECK(e && strstr(hq_err_desc(e), "detached"), "why c2 is gone: %s", hq_str(e));
    HQ_CHECK(hq_bitmap_recording(vm, "vdb", "c3") == 1 &&
             hq_bitmap_recording(vm, "vdb", "c2") == 0 &&
             hq_bitmap_recording(vm, "vdb", "c1") == 0, "vdb: only c3 records");

    /* From c1: everything since, c2's writes on vdb included. */
    CLEANUP_JSON json_t *inc = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc, "incremental from c1");
    if (hq_apply_incremental(inc, "vda", ma->since[0], base_a, ma->data) < 0 ||
        hq_apply_incremental(inc, "vdb", mb->since[0], base_b, mb->data) < 0 ||
        hq_backup_end(vm, inc) < 0)
        return -1;

    /* The name c2 is still taken on vdb, by c2's leftover bitmap. */
    CLEANUP_JSON json_t *ae = hq_cmd_err(vm->ctl, "AlreadyExists", "checkpoint-create",
                                         hq_json("{\"name\": \"c2\"}"));
    HQ_CHECK(ae && strstr(hq_err_desc(ae), "checkpoint-delete"), "create c2: %s", hq_str(ae));
    /* The next change folds c2 on vdb into c1. */
    json_decref(create(vm, "c4"));
    HQ_CHECK(!hq_bitmap(vm, "vdb", "c2") &&
             hq_bitmap_count_prefix(vm, "vdb", "ckptd1:2:") == 0,
             "c2's bitmaps still on vdb: %s", hq_str(hq_bitmaps(vm, "vdb")));
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vdb", "ckptd1:gone:") == 1,
             "vdb should hold the gone set: %s", hq_str(hq_bitmaps(vm, "vdb")));
    if (hq_tree_matches_qemu(vm, "after c4") < 0)
        return -1;
    CLEANUP_FREE uint8_t *b2 = xmalloc(SIZE);
    memcpy(b2, base_b, SIZE);
    CLEANUP_JSON json_t *inc2 = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(inc2, "incremental from c1 after the fold");
    if (hq_apply_incremental(inc2, "vdb", mb->since[0], b2, mb->data) < 0)
        return -1;
    return hq_backup_end(vm, inc2);
}

static int
count_files(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* (3) pull at X, X deleted and made again: pull --incremental X refuses,
 * naming X and the directory, and creates nothing (no file, no
 * checkpoint); a new full backup at the new X takes incrementals again. */
static int
test_pull_recreated(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    CLEANUP_FREE char *dir = xasprintf("%s/backups", vm->dir);
    HQ_CHECK(hq_write(vm, "vda", 0x41, 0, K64) == 0, "write");
    CLEANUP_FREE char *out = NULL;
    const char *full[] = { "pull", "--output", dir, "--checkpoint", "x", NULL };
    HQ_CHECK(hq_ckptctl(vm, &out, full) == 0, "full pull: %s", out);
    CLEANUP_JSON json_t *x_old = hq_ckpt_get(vm->ctl, "x", false);
    HQ_CHECK(delete(vm, "x") == 0, "delete x");
    json_decref(create(vm, "x"));
    HQ_CHECK(hq_write(vm, "vda", 0x42, 2 * K64, K64) == 0, "write");

    int files = count_files(dir);
    CLEANUP_FREE char *err = NULL;
    const char *inc[] = { "pull", "--output", dir, "--checkpoint", "y",
                          "--incremental", "x", NULL };
    int st = hq_ckptctl(vm, &err, inc);
    HQ_CHECK(st != 0, "the incremental from the re-created x should be refused: %s", err);
    HQ_CHECK(err && strstr(err, "checkpoint x") && strstr(err, dir) &&
             strstr(err, "deleted and created again"), "the refusal: %s", err);
    HQ_CHECK(count_files(dir) == files, "the refused pull left files in %s", dir);
    HQ_CHECK(is_listed(vm, "y") == 0, "the refused pull made checkpoint y");
    const char *id_old = x_old ? hq_jstr(x_old, "id") : NULL;
    CLEANUP_FREE char *id_new = id_of(vm, "x");
    HQ_CHECK(id_old && id_new && strcmp(id_old, id_new) != 0,
             "the new x has the old one's id %s", id_new);

    /* The record holds the identity; backups shows it. */
    CLEANUP_FREE char *list = NULL;
    const char *bk[] = { "--json", "backups", dir, NULL };
    HQ_CHECK(hq_ckptctl(vm, &list, bk) == 0 && strstr(list, id_old),
             "backups should show x's id %s: %s", id_old, list);

    /* After a full backup at the new x, its incremental works. */
    const char *full2[] = { "pull", "--output", dir, "--checkpoint", "x2", NULL };
    CLEANUP_FREE char *o2 = NULL;
    HQ_CHECK(hq_ckptctl(vm, &o2, full2) == 0, "full pull x2: %s", o2);
    const char *inc2[] = { "pull", "--output", dir, "--checkpoint", "y2",
                           "--incremental", "x2", NULL };
    CLEANUP_FREE char *o3 = NULL;
    HQ_CHECK(hq_ckptctl(vm, &o3, inc2) == 0, "incremental from x2: %s", o3);
    return 0;
}

static int
qemu_img(const char *const *args)
{
    const char *argv[16] = { "qemu-img" };
    size_t n = 1;
    for (; *args && n + 1 < ARRAY_SIZE(argv); args++)
        argv[n++] = *args;
    CLEANUP_FREE char *out = NULL;
    int st = hq_run_cmd((char *const *) argv, &out);
    if (st != 0)
        hq_fail("qemu-img %s: %s", argv[1], out ? out : "");
    return st == 0 ? 0 : -1;
}

static int
qemu_io_write(const char *path, int pat, int64_t off, int64_t len)
{
    CLEANUP_FREE char *cmd = xasprintf("write -P 0x%02x %" PRId64 " %" PRId64, pat, off, len);
    char *argv[] = { "qemu-io", "-f", "qcow2", "-c", cmd, (char *) path, NULL };
    CLEANUP_FREE char *out = NULL;
    int st = hq_run_cmd(argv, &out);
    if (st != 0)
        hq_fail("qemu-io %s: %s", cmd, out ? out : "");
    return st == 0 ? 0 : -1;
}

/* (4) An image as the previous version left it: records without a chain
 * id ("ckptd1:SEQ:CTIME:NAME[:DESC]"), made here with qemu-img.  Every
 * checkpoint loads, with parent and description; incrementals from each
 * are exact; the first change writes the id into the old records and the
 * ids the agent showed before it stay the same. */
static int
test_old_format(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, false);
    HQ_CHECK(vm, "vm");
    const char *img = vm->disks[0].path;
    const char *g2 = "2147483648";
    /* c1, then writes A; c2 (described "nightly"), then writes B. */
    const char *s1[] = { "bitmap", "--add", img, "c1", NULL };
    const char *s2[] = { "bitmap", "--add", "--disable", "-g", g2, img,
                         "ckptd1:1:1700000000:c1", NULL };
    const char *s3[] = { "bitmap", "--disable", img, "c1", NULL };
    const char *s4[] = { "bitmap", "--add", img, "c2", NULL };
    const char *s5[] = { "bitmap", "--add", "--disable", "-g", g2, img,
                         "ckptd1:2:1700000100:c2:bmlnaHRseQ", NULL };
    HQ_CHECK(qemu_img(s1) == 0 && qemu_img(s2) == 0, "c1");
    HQ_CHECK(qemu_io_write(img, 0x51, 0, 2 * K64) == 0, "writes A");
    HQ_CHECK(qemu_img(s3) == 0 && qemu_img(s4) == 0 && qemu_img(s5) == 0, "c2");
    HQ_CHECK(qemu_io_write(img, 0x52, 5 * K64, K64) == 0, "writes B");
    HQ_CHECK(hq_qemu_start(vm) == 0 && hq_agent_start(vm) == 0, "start");

    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1,c2") == 0, "checkpoints: %s", names);
    CLEANUP_JSON json_t *c2 = hq_ckpt_get(vm->ctl, "c2", false);
    HQ_CHECK(c2 && strcmp(hq_jstr(c2, "parent"), "c1") == 0 &&
             strcmp(hq_jstr(c2, "description"), "nightly") == 0, "c2: %s", hq_str(c2));
    CLEANUP_FREE char *id1 = id_of(vm, "c1");
    CLEANUP_FREE char *id2 = id_of(vm, "c2");
    HQ_CHECK(id1 && id2, "ids");

    /* Exact incrementals: from c1 A and B, from c2 B. */
    uint8_t want1[NCL] = { 0 }, want2[NCL] = { 0 };
    want1[0] = want1[1] = want1[5] = 1;
    want2[5] = 1;
    CLEANUP_FREE uint8_t *now = xcalloc(1, SIZE);
    memset(now, 0x51, 2 * K64);
    memset(now + 5 * K64, 0x52, K64);
    CLEANUP_FREE uint8_t *at1 = xcalloc(1, SIZE);
    CLEANUP_FREE uint8_t *at2 = xcalloc(1, SIZE);
    memset(at2, 0x51, 2 * K64);
    CLEANUP_JSON json_t *j1 = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    if (!j1 || hq_apply_incremental(j1, "vda", want1, at1, now) < 0 || hq_backup_end(vm, j1) < 0)
        return -1;
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    if (!j2 || hq_apply_incremental(j2, "vda", want2, at2, now) < 0 || hq_backup_end(vm, j2) < 0)
        return -1;

    /* The first change adopts them: ids written, the same as shown. */
    json_decref(create(vm, "c3"));
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vda", "ckptd1:1:1700000000:c1::") == 1 &&
             hq_bitmap_count_prefix(vm, "vda", "ckptd1:2:1700000100:c2:bmlnaHRseQ:") == 1 &&
             !hq_bitmap(vm, "vda", "ckptd1:1:1700000000:c1"),
             "the old records should carry the chain id now: %s",
             hq_str(hq_bitmaps(vm, "vda")));
    CLEANUP_FREE char *id1b = id_of(vm, "c1");
    CLEANUP_FREE char *id3 = id_of(vm, "c3");
    HQ_CHECK(id1b && strcmp(id1, id1b) == 0, "c1's id changed: %s, then %s", id1, id1b);
    HQ_CHECK(id3 && strncmp(id3, id1, 16) == 0, "c3 in another chain: %s vs %s", id3, id1);
    CLEANUP_FREE char *names2 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names2 && strcmp(names2, "c1,c2,c3") == 0, "checkpoints: %s", names2);
    return hq_tree_matches_qemu(vm, "after c3");
}

/* (5) The chain id is in the images: a new agent (and a new QEMU) shows
 * the same ids, and its next checkpoint is in the same chain. */
static int
test_restart_keeps_chain(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    json_decref(create(vm, "a"));
    CLEANUP_FREE char *ida = id_of(vm, "a");
    HQ_CHECK(ida && strlen(ida) == 18 && strcmp(ida + 16, ":1") == 0, "a's id: %s", ida);
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(l && strcmp(hq_jstr(json_array_get(l, 0), "id"), ida) == 0,
             "checkpoint-list's id: %s", hq_str(l));
    HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "restart the agent");
    CLEANUP_FREE char *ida2 = id_of(vm, "a");
    HQ_CHECK(ida2 && strcmp(ida, ida2) == 0, "a's id changed: %s, then %s", ida, ida2);
    HQ_CHECK(hq_agent_stop(vm) == 0 && hq_qemu_quit(vm) == 0 && hq_qemu_start(vm) == 0 &&
             hq_agent_start(vm) == 0, "restart both");
    json_decref(create(vm, "b"));
    CLEANUP_FREE char *idb = id_of(vm, "b");
    HQ_CHECK(idb && strncmp(idb, ida, 17) == 0 && strcmp(idb + 16, ":2") == 0,
             "b should follow a in its chain: %s, %s", ida, idb);
    return hq_tree_matches_qemu(vm, "at the end");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "identity-foreign-disk", test_foreign_disk },
        { "identity-deleted-while-detached", test_deleted_while_detached },
        { "identity-pull-recreated", test_pull_recreated },
        { "identity-old-format", test_old_format },
        { "identity-restart-keeps-chain", test_restart_keeps_chain },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
