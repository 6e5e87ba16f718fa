/* Pull backups through ckptd's own copy-before-write filter
 * (agent/job-fleece.c), where QEMU offers on-cbw-error=break-snapshot:
 *
 * - a scratch directory too small for what the guest overwrites (a 4 MiB
 *   tmpfs): every guest write succeeds and reads back right (the disk
 *   against the shadow model), the view breaks (a read of the export is
 *   refused), the backup ends failed saying why, nothing is left;
 * - the same with the backup job (CKPTD_DEBUG_NO_FILTER, as on a QEMU
 *   without the filter's options): the guest's writes fail;
 * - writes in both gaps of the begin (after the transaction, before the
 *   device moves; after it moves, before the bitmap merge): the view is
 *   the disk when it moved, the exported map holds every write before
 *   that, the new checkpoint every write after its transaction;
 * - several disks: the filter while the guest does not run, the backup
 *   job (one instant for all disks) once it does; the device and node of
 *   a disk stay what they were during the backup (query-disks); a guest
 *   that starts running during such a begin fails it, leaving nothing.
 * On a QEMU without the filter's options each case SKIPs, saying so. */
#include "tests/qemu/harness.h"

#include <dirent.h>
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define K64 (64 * 1024)
#define DISK_SIZE HQ_MODEL_SIZE

static bool
own_filter(json_t *job)
{
    return strcmp(hq_jstr(job, "fleecing") ?: "", "filter") == 0;
}

/* A VM with n disks, the agent on --scratch-dir DIR/scratch (a tmpfs of
 * tmpfs_mib MiB when > 0, *mnt set) with --scratch-reserve 0, behind the
 * failure injector.  NULL with *skip set when no tmpfs can be mounted. */
static struct hq_vm *
filter_vm(int n, int tmpfs_mib, char **mnt, bool *skip)
{
    const char *extra[] = { "--scratch-reserve", "0", NULL };
    struct hq_vm *vm = hq_vm_scratch(n, DISK_SIZE, extra, false);
    if (!vm)
        return NULL;
    if (tmpfs_mib > 0) {
        CLEANUP_FREE char *sd = hq_scratch_dir(vm);
        char why[256];
        int r = hq_mount_tmpfs(sd, tmpfs_mib, why, sizeof why);
        if (r <= 0) {
            if (r == 0) {
                hq_skip("%s", why);
                *skip = true;
            }
            goto fail;
        }
        *mnt = xstrdup(sd);
    }
    if (hq_qemu_start(vm) < 0 || hq_inject_start(vm) < 0 || hq_agent_start(vm) < 0)
        goto fail;
    return vm;
fail:
    if (*mnt) {
        umount2(*mnt, MNT_DETACH);
        free(*mnt);
        *mnt = NULL;
    }
    hq_vm_free(vm);
    return NULL;
}

/* Skips (returns true) when the job uses the backup job although the
 * test did not ask for it: this QEMU has no filter options. */
static bool
skip_without_filter(json_t *job)
{
    if (own_filter(job) || getenv("CKPTD_DEBUG_NO_FILTER"))
        return false;
    hq_skip("this QEMU offers no copy-before-write on-cbw-error with "
            "snapshot-access: the backup fleeces through a backup job");
    return true;
}

/* Waits until the proxy holds a command (after it logged released, a
 * command sent only after the previous hold ended: before that, the old
 * hold's mark may still be there). */
static int
wait_held(struct hq_vm *vm, const char *what, const char *released)
{
    CLEANUP_FREE char *held = xasprintf("%s/inject.rules.held", vm->dir);
    for (double end = hq_now() + 30;; hq_sleep_ms(10)) {
        CLEANUP_JSON json_t *seen = hq_inject_seen(vm);
        bool sent = !released;
        size_t i;
        json_t *s;
        json_array_foreach(seen, i, s)
            sent |= released && strcmp(json_string_value(s), released) == 0;
        if (sent && access(held, F_OK) == 0)
            return 0;
        HQ_CHECK(hq_now() < end, "the agent never sent %s", what);
    }
}

/* QEMU's log says a guest write failed (qemu-io over HMP prints there). */
static bool
qemu_write_failed(struct hq_vm *vm)
{
    CLEANUP_FREE char *log = hq_read_file(vm->qemu_log);
    return log && strstr(log, "write failed");
}

static char *
dir_entries(const char *dir)
{
    char *s = xstrdup("");
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            char *t = xasprintf("%s %s", s, de->d_name);
            free(s);
            s = t;
        }
    if (d)
        closedir(d);
    return s;
}

/* The guest overwrites 12 MiB of 16 while a full backup keeps a 4 MiB
 * scratch image: more than the scratch holds. */
static int
overwrite_during_backup(struct hq_vm *vm, struct hq_model *m, json_t **jobp,
                        struct nbd_handle **hp, bool want_filter)
{
    HQ_CHECK(hq_mwrite(vm, m, 0xa1, 0, 8 * MiB) == 0, "write A");
    json_t *job = *jobp = hq_backup_begin(vm, NULL);
    HQ_CHECK(job, "backup-begin");
    if (want_filter && skip_without_filter(job))
        return 1;
    *hp = hq_nbd_open(hq_jstr(json_array_get(json_object_get(job, "disks"), 0), "uri"),
                      NULL);
    HQ_CHECK(*hp, "connect to the export");
    char buf[K64];
    HQ_CHECK(nbd_pread(*hp, buf, sizeof buf, 8 * MiB, 0) == 0, "a read of the view "
             "before the guest writes: %s", nbd_get_error());
    /* The export stays while the agent ends the job: the test reads it. */
    HQ_CHECK(hq_inject_rules(vm, "hold block-export-del 1\n") == 0, "rules");
    for (int i = 0; i < 12; i++)
        HQ_CHECK(hq_mwrite(vm, m, 0xb2, (int64_t) i * MiB, MiB) == 0,
                 "guest write %d", i);
    return 0;
}

static int
test_scratch_full_filter(void)
{
    char *mounted = NULL;
    bool skip = false;
    CLEANUP_VM struct hq_vm *vm = filter_vm(1, 4, &mounted, &skip);
    HQ_CLEANUP_UMOUNT char *mnt = mounted;     /* unmounted before vm goes */
    (void) mnt;
    if (skip)
        return 0;
    HQ_CHECK(vm, "setup");
    struct hq_model model;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&model, "vda");
    CLEANUP_JSON json_t *job = NULL;
    HQ_CLEANUP_NBD struct nbd_handle *h = NULL;
    int r = overwrite_during_backup(vm, m, &job, &h, true);
    if (r)
        return r > 0 ? 0 : -1;
    HQ_CHECK(!qemu_write_failed(vm), "a guest write failed with the filter");
    CLEANUP_JSON json_t *ioerr = hq_wait_event(vm->mon, "BLOCK_IO_ERROR", 0.2);
    HQ_CHECK(!ioerr, "guest I/O error: %s", hq_str(ioerr));
    /* The agent sees the full scratch directory and ends the job: its
     * export-del is held, so the broken view can be read. */
    HQ_CHECK(wait_held(vm, "block-export-del", NULL) == 0, "no end of the broken backup");
    char buf[K64];
    int rr = nbd_pread(h, buf, sizeof buf, 8 * MiB, 0);
    int err = nbd_get_errno();
    hq_note("read of the broken view: %d (%s)", rr, rr ? nbd_get_error() : "ok");
    /* QEMU's NBD server sends the filter's EACCES as EINVAL. */
    HQ_CHECK(rr == -1 && (err == EINVAL || err == EPERM || err == EACCES),
             "a read of the broken view gave %d (%s)", rr, strerror(err));
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "release");
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", 10);
    HQ_CHECK(ev, "no BACKUP_END");
    json_t *data = json_object_get(ev, "data");
    HQ_CHECK(strcmp(hq_jstr(data, "status") ?: "", "failed") == 0 &&
             strstr(hq_jstr(data, "error") ?: "", "view broke"), "BACKUP_END: %s",
             hq_str(ev));
    hq_note("BACKUP_END: %s", hq_jstr(data, "error"));
    nbd_close(h);
    h = NULL;
    if (hq_backup_expect_clean(vm, "after the broken backup") < 0)
        return -1;
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *ls = dir_entries(sd);
    HQ_CHECK(!*ls, "left in the scratch tmpfs:%s", ls);
    /* Every byte the guest wrote is on the disk. */
    if (hq_expect_disk(vm, m) < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* The same with the backup job: QEMU fails the guest's writes. */
static int
test_scratch_full_backup_job(void)
{
    char *mounted = NULL;
    bool skip = false;
    setenv("CKPTD_DEBUG_NO_FILTER", "1", 1);
    CLEANUP_VM struct hq_vm *vm = filter_vm(1, 4, &mounted, &skip);
    unsetenv("CKPTD_DEBUG_NO_FILTER");
    HQ_CLEANUP_UMOUNT char *mnt = mounted;
    (void) mnt;
    if (skip)
        return 0;
    HQ_CHECK(vm, "setup");
    struct hq_model model;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&model, "vda");
    CLEANUP_JSON json_t *job = NULL;
    HQ_CLEANUP_NBD struct nbd_handle *h = NULL;
    HQ_CHECK(overwrite_during_backup(vm, m, &job, &h, false) == 0, "writes");
    HQ_CHECK(!own_filter(job), "CKPTD_DEBUG_NO_FILTER, yet: %s", hq_str(job));
    HQ_CHECK(qemu_write_failed(vm), "no guest write failed with the backup job");
    hq_note("with the backup job, QEMU failed the guest's write");
    nbd_close(h);
    h = NULL;
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    if (hq_backup_end(vm, job) < 0 || hq_backup_expect_clean(vm, "at the end") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* Writes in both gaps of the begin: X after the transaction, before the
 * device moves to the filter; Y after it moved, before the merge. */
static int
test_begin_gaps(void)
{
    char *mounted = NULL;
    bool skip = false;
    CLEANUP_VM struct hq_vm *vm = filter_vm(1, 0, &mounted, &skip);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x11, 1 * K64, K64) == 0, "write W");
    HQ_CHECK(hq_inject_rules(vm, "hold-rest qom-set 1\n") == 0, "rules");
    HQ_CHECK(hq_send_json(vm->ctl, hq_json(
        "{\"execute\": \"backup-begin\", \"arguments\": {\"incremental\": \"c1\", "
        "\"checkpoint\": {\"name\": \"c2\"}}}")) == 0, "send");
    if (wait_held(vm, "qom-set", NULL) < 0) {
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 5);
        if (r && json_object_get(r, "return") &&
            skip_without_filter(json_object_get(r, "return")))
            return 0;
        return -1;
    }
    HQ_CHECK(hq_write(vm, "vda", 0x33, 3 * K64, K64) == 0, "write X");
    /* Released, qom-set reaches QEMU unlogged; the view's blockdev-add
     * after it is logged, and then the merge is held. */
    hq_inject_mark(vm);
    HQ_CHECK(hq_inject_rules(vm, "hold-rest block-dirty-bitmap-merge 1\n") == 0, "rules");
    if (wait_held(vm, "block-dirty-bitmap-merge", "blockdev-add") < 0)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0x55, 5 * K64, K64) == 0, "write Y");
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "release");
    CLEANUP_JSON json_t *reply = hq_read_reply(vm->ctl, 30);
    json_t *job = json_object_get(reply, "return");
    HQ_CHECK(job && own_filter(job), "begin: %s", hq_str(reply));
    json_t *d = json_array_get(json_object_get(job, "disks"), 0);
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", hq_jstr(d, "bitmap"));
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(hq_jstr(d, "uri"), ctx);
    HQ_CHECK(h, "connect");
    uint8_t map[DISK_SIZE / K64];
    HQ_CHECK(hq_nbd_map(h, ctx, DISK_SIZE, K64, 1, false, map) == 0, "map");
    for (int c = 0; c < DISK_SIZE / K64; c++)
        HQ_CHECK(map[c] == (c == 1 || c == 3 || c == 5), "cluster %d dirty=%d "
                 "(W=1 and X=3 must be, Y=5 may be)", c, map[c]);
    /* The view: W and X, not Y (written after the device moved). */
    CLEANUP_FREE uint8_t *buf = xmalloc(6 * K64);
    HQ_CHECK(hq_nbd_read(h, buf, 0, 6 * K64) == 0, "read");
    for (int64_t i = 0; i < 6 * K64; i++) {
        int c = (int) (i / K64);
        int want = c == 1 ? 0x11 : c == 3 ? 0x33 : 0;
        HQ_CHECK(buf[i] == want, "view byte %" PRId64 " is 0x%02x, not 0x%02x",
                 i, buf[i], want);
    }
    /* c2 began at the transaction: it holds X and Y, not W. */
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c2") == 2 * K64, "c2 count %" PRId64,
             hq_bitmap_dirty(vm, "vda", "c2"));
    hq_nbd_close(h);
    h = NULL;
    if (hq_backup_end(vm, job) < 0)
        return -1;
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    HQ_CHECK(j2, "incremental from c2");
    json_t *d2 = json_array_get(json_object_get(j2, "disks"), 0);
    CLEANUP_FREE char *ctx2 = xasprintf("qemu:dirty-bitmap:%s", hq_jstr(d2, "bitmap"));
    HQ_CLEANUP_NBD struct nbd_handle *h2 = hq_nbd_open(hq_jstr(d2, "uri"), ctx2);
    HQ_CHECK(h2 && hq_nbd_map(h2, ctx2, DISK_SIZE, K64, 1, false, map) == 0, "map 2");
    for (int c = 0; c < DISK_SIZE / K64; c++)
        HQ_CHECK(map[c] == (c == 3 || c == 5), "from c2: cluster %d dirty=%d", c, map[c]);
    hq_nbd_close(h2);
    h2 = NULL;
    if (hq_backup_end(vm, j2) < 0 || hq_backup_expect_clean(vm, "at the end") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* How many devices point at a node of ours (-1 on error). */
static int
devices_on_filter(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *blocks = hq_cmd(vm->mon, "query-block", NULL);
    size_t i;
    json_t *b;
    int n = 0;
    if (!blocks)
        return -1;
    json_array_foreach(blocks, i, b) {
        const char *node = hq_jstr(json_object_get(b, "inserted"), "node-name");
        n += node && strncmp(node, "ckptd-w", 7) == 0;
    }
    return n;
}

/* Two disks: the filter while the guest does not run; the device's
 * disk keeps its name, node and tracking during the backup; once the
 * guest runs, a backup job (one instant for both disks). */
static int
test_two_disks(void)
{
    char *mounted = NULL;
    bool skip = false;
    CLEANUP_VM struct hq_vm *vm = filter_vm(2, 0, &mounted, &skip);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(job, "backup-begin");
    if (skip_without_filter(job))
        return 0;
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "vdb" : "vda";
        json_t *qd = hq_jfind(disks, "disk", name);
        HQ_CHECK(qd && hq_jbool(qd, "tracking") == 1 &&
                 strcmp(hq_jstr(qd, "node-name") ?: "", hq_vm_disk(vm, name)->node) == 0,
                 "%s during the backup: %s", name, hq_str(qd));
    }
    HQ_CHECK(devices_on_filter(vm) == 2, "devices on the filter: %d",
             devices_on_filter(vm));
    if (hq_backup_end(vm, job) < 0 || hq_backup_expect_clean(vm, "after the first") < 0)
        return -1;
    HQ_CHECK(devices_on_filter(vm) == 0, "devices still on the filter: %d",
             devices_on_filter(vm));
    CLEANUP_JSON json_t *cont = hq_cmd(vm->mon, "cont", NULL);
    HQ_CHECK(cont, "cont");
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, "{\"incremental\": \"c1\"}");
    HQ_CHECK(j2 && !own_filter(j2), "a running guest's two disks: %s", hq_str(j2));
    CLEANUP_JSON json_t *j3 = NULL;
    if (hq_backup_end(vm, j2) < 0)
        return -1;
    j3 = hq_backup_begin(vm, "{\"disks\": [\"vda\"]}");
    HQ_CHECK(j3 && own_filter(j3), "a running guest's one disk: %s", hq_str(j3));
    if (hq_backup_end(vm, j3) < 0 || hq_backup_expect_clean(vm, "at the end") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* The guest starts running while two disks switch one after the other:
 * the begin fails (the views might not be one instant) and leaves
 * nothing, the devices back on their disks. */
static int
test_resume_during_begin(void)
{
    char *mounted = NULL;
    bool skip = false;
    CLEANUP_VM struct hq_vm *vm = filter_vm(2, 0, &mounted, &skip);
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_inject_rules(vm, "hold-rest qom-set 1\n") == 0, "rules");
    HQ_CHECK(hq_send_json(vm->ctl, hq_json("{\"execute\": \"backup-begin\"}")) == 0,
             "send");
    if (wait_held(vm, "qom-set", NULL) < 0) {
        CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 5);
        if (r && json_object_get(r, "return") &&
            skip_without_filter(json_object_get(r, "return")))
            return 0;
        return -1;
    }
    CLEANUP_JSON json_t *cont = hq_cmd(vm->mon, "cont", NULL);
    HQ_CHECK(cont, "cont");
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "release");
    CLEANUP_JSON json_t *reply = hq_read_reply(vm->ctl, 30);
    HQ_CHECK(reply && strstr(hq_err_desc(reply), "started running"),
             "begin while the guest started: %s", hq_str(reply));
    if (hq_backup_expect_clean(vm, "after the refused begin") < 0)
        return -1;
    HQ_CHECK(devices_on_filter(vm) == 0, "devices still on the filter: %d",
             devices_on_filter(vm));
    return hq_agent_stop(vm);
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "filter-scratch-full-guest-writes-go-on", test_scratch_full_filter },
        { "backup-job-scratch-full-fails-guest-writes", test_scratch_full_backup_job },
        { "filter-begin-gaps-exact", test_begin_gaps },
        { "filter-two-disks", test_two_disks },
        { "filter-two-disks-resume-during-begin", test_resume_during_begin },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
