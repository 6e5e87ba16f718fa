/* Nothing temporary outlives a backup, however it ends: SIGTERM of the
 * agent (BACKUP_END cancelled, then exit 0), kill -9 of the agent (the
 * next agent sweeps before it reports QEMU connected), QEMU quitting
 * (BACKUP_END failed, scratch files removed), a refused or failed
 * backup-begin, and a scratch directory running full (BACKUP_END failed,
 * and the new checkpoint of the failed backup stays usable).  Every check
 * is made over QEMU's own monitor and in the scratch directory. */
#include "tests/qemu/harness.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define K64 (64 * KiB)
#define DISK_SIZE (16 * MiB)

/* A VM with n disks; the agent gets --scratch-dir DIR/scratch and the
 * extra arguments; with tmpfs_mib > 0 a tmpfs of that size is mounted
 * there first (*mnt set; NULL with *skip set when that cannot be done). */
static struct hq_vm *
backup_vm(int n, const char *const *extra, int tmpfs_mib, char **mnt,
          bool *skip)
{
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
    if (hq_qemu_start(vm) < 0 || hq_agent_start(vm) < 0)
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

static struct hq_vm *
simple_vm(int n)
{
    char *mnt = NULL;
    bool skip = false;
    return backup_vm(n, NULL, 0, &mnt, &skip);
}

/* Every entry of dir (a tmpfs must be empty again). */
static char *
dir_entries(const char *dir)
{
    char *s = xstrdup("");
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *t = xasprintf("%s %s", s, de->d_name);
        free(s);
        s = t;
    }
    if (d)
        closedir(d);
    return s;
}

/* The incremental with checkpoint c2 from c1 on every disk, after a write
 * to each, with a sanity check that its objects exist. */
static json_t *
busy_backup(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    if (!c1)
        return NULL;
    for (int i = 0; i < vm->ndisks; i++)
        if (hq_write(vm, vm->disks[i].name, 0x11 + i, (i + 1) * MiB, K64) < 0)
            return NULL;
    json_t *job = hq_backup_begin(vm, "{\"incremental\": \"c1\", "
                                  "\"checkpoint\": {\"name\": \"c2\"}}");
    if (!job)
        return NULL;
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *during = hq_backup_leftovers(vm, sd);
    if (!during || !strstr(during, "export") || !strstr(during, "ckptd:") ||
        !strstr(during, ".qcow2")) {
        hq_fail("the backup's objects are not all there: %s", during ? during : "");
        json_decref(job);
        return NULL;
    }
    return job;
}

/* SIGTERM during a backup: BACKUP_END cancelled reaches a client before
 * the agent exits (0), which leaves nothing behind. */
static int
test_sigterm(void)
{
    CLEANUP_VM struct hq_vm *vm = simple_vm(2);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *c2 = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(c2, "second client");
    CLEANUP_JSON json_t *job = busy_backup(vm);
    HQ_CHECK(job, "backup");
    const char *id = hq_jstr(job, "id");
    /* A reader still connected to an export. */
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(
        hq_jstr(json_array_get(json_object_get(job, "disks"), 0), "uri"), NULL);
    HQ_CHECK(h, "connect");
    CLEANUP_JSON json_t *bev = hq_wait_event(c2, "BACKUP_BEGIN", 5);
    HQ_CHECK(bev, "no BACKUP_BEGIN");
    /* Exit 0, socket removed, log clean: checked by hq_agent_stop. */
    if (hq_agent_stop(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *ev = hq_wait_event(c2, "BACKUP_END", 2);
    HQ_CHECK(ev, "no BACKUP_END before the agent exited");
    json_t *data = json_object_get(ev, "data");
    HQ_CHECK(strcmp(hq_jstr(data, "id") ?: "", id) == 0 &&
             strcmp(hq_jstr(data, "status") ?: "", "cancelled") == 0,
             "BACKUP_END: %s", hq_str(ev));
    if (hq_backup_expect_clean(vm, "after SIGTERM") < 0)
        return -1;
    /* The checkpoint of the cancelled backup stays (it marks a time). */
    CLEANUP_JSON json_t *b2 = hq_bitmap(vm, "vda", "c2");
    HQ_CHECK(b2 && hq_jbool(b2, "recording") == 1, "c2 bitmap: %s", hq_str(b2));
    return 0;
}

/* kill -9 during a backup, a new agent on the same QMP socket and scratch
 * directory: by the time it says QEMU is connected, it has removed what
 * the dead one left, and backups work again. */
static int
test_kill9_restart(void)
{
    CLEANUP_VM struct hq_vm *vm = simple_vm(2);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *job = busy_backup(vm);
    HQ_CHECK(job, "backup");
    hq_agent_kill(vm);
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *left = hq_backup_leftovers(vm, sd);
    HQ_CHECK(left && strstr(left, "export") && strstr(left, ".qcow2"),
             "kill -9 should leave things to sweep: %s", left ? left : "");
    if (hq_agent_start(vm) < 0)
        return -1;
    if (hq_backup_expect_clean(vm, "when the new agent reports QEMU connected") < 0)
        return -1;
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1,c2") == 0, "checkpoints: %s", names);
    /* A new incremental from c2 works (server, nodes, names all free). */
    HQ_CHECK(hq_write(vm, "vdb", 0x77, 0, K64) == 0, "write");
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    HQ_CHECK(j2, "backup-begin after the restart");
    HQ_CHECK(json_array_size(json_object_get(j2, "disks")) == 2, "job: %s",
             hq_str(j2));
    const char *uri = hq_jstr(hq_jfind(json_object_get(j2, "disks"), "disk", "vdb"),
                              "uri");
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, NULL);
    HQ_CHECK(h, "connect");
    uint8_t buf[K64];
    HQ_CHECK(hq_nbd_read(h, buf, 0, K64) == 0 && buf[0] == 0x77 &&
             buf[K64 - 1] == 0x77, "export data");
    hq_nbd_close(h);
    h = NULL;
    if (hq_backup_end(vm, j2) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "after the new backup");
}

/* QEMU quits during a backup: BACKUP_END failed with a reason, scratch
 * files removed, the agent reports disconnected; with a new QEMU over the
 * same images backups work again. */
static int
test_qemu_quit(void)
{
    CLEANUP_VM struct hq_vm *vm = simple_vm(2);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *job = busy_backup(vm);
    HQ_CHECK(job, "backup");
    const char *id = hq_jstr(job, "id");
    if (hq_qemu_quit(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", 5);
    HQ_CHECK(ev, "no BACKUP_END after QEMU quit");
    json_t *data = json_object_get(ev, "data");
    HQ_CHECK(strcmp(hq_jstr(data, "id") ?: "", id) == 0 &&
             strcmp(hq_jstr(data, "status") ?: "", "failed") == 0 &&
             hq_jstr(data, "error") && *hq_jstr(data, "error"),
             "BACKUP_END: %s", hq_str(ev));
    hq_note("BACKUP_END after quit: %s", hq_str(data));
    if (hq_agent_wait_qemu(vm, "disconnected", 5) < 0)
        return -1;
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "jobs") == 0, "query-status: %s", hq_str(st));
    if (hq_backup_expect_clean(vm, "after QEMU quit") < 0)
        return -1;
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotConnected", "backup-begin", NULL);
    HQ_CHECK(r, "backup-begin without QEMU");
    /* A new QEMU: the agent reconnects by itself; all is usable. */
    if (hq_qemu_start(vm) < 0 || hq_agent_wait_qemu(vm, "connected", 10) < 0)
        return -1;
    if (hq_backup_expect_clean(vm, "with the new QEMU") < 0)
        return -1;
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    HQ_CHECK(j2, "backup-begin with the new QEMU");
    if (hq_backup_end(vm, j2) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "after the new backup");
}

/* A refused backup-begin leaves bitmaps, checkpoints, QEMU and the
 * scratch directory as they were. */
static int
expect_refused(struct hq_vm *vm, const char *cls, const char *args)
{
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, cls, "backup-begin", hq_json(args));
    HQ_CHECK(r, "backup-begin %s", args);
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "%s: bitmaps changed: %s", args,
             hq_str(after));
    CLEANUP_FREE char *names2 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && names2 && strcmp(names, names2) == 0,
             "%s: checkpoints %s, were %s", args, names2, names);
    return hq_backup_expect_clean(vm, args);
}

/* scratch-dir must be an existing directory inside the agent's own. */
static int
test_bad_scratch_dir(void)
{
    CLEANUP_VM struct hq_vm *vm = simple_vm(1);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *sub = xasprintf("%s/sub", sd);
    CLEANUP_FREE char *link = xasprintf("%s/link", sd);
    CLEANUP_FREE char *out = xasprintf("%s/outside", vm->dir);
    HQ_CHECK(mkdir(sub, 0700) == 0 && mkdir(out, 0700) == 0 &&
             symlink(out, link) == 0, "set up directories");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    const char *bad[] = { out, vm->dir, link, "/tmp", "relative" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CLEANUP_FREE char *a = xasprintf("{\"scratch-dir\": \"%s\", \"incremental\": "
                                         "\"c1\", \"checkpoint\": {\"name\": \"c2\"}}",
                                         bad[i]);
        if (expect_refused(vm, "InvalidParameter", a) < 0)
            return -1;
    }
    CLEANUP_FREE char *a2 = xasprintf("{\"scratch-dir\": \"%s/none\"}", sd);
    if (expect_refused(vm, "InvalidParameter", a2) < 0)
        return -1;
    CLEANUP_FREE char *ls = dir_entries(out);
    HQ_CHECK(!*ls, "files outside the scratch directory:%s", ls);
    /* A subdirectory is fine, and the file goes there. */
    CLEANUP_FREE char *a3 = xasprintf("{\"scratch-dir\": \"%s\"}", sub);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, a3);
    HQ_CHECK(job, "backup-begin with scratch-dir %s", sub);
    CLEANUP_FREE char *f = hq_scratch_file(sub, hq_jstr(job, "id"), "vda");
    HQ_CHECK(f, "no scratch file of %s in %s", hq_jstr(job, "id"), sub);
    if (hq_backup_end(vm, job) < 0)
        return -1;
    HQ_CHECK(access(f, F_OK) != 0, "scratch file %s left", f);
    CLEANUP_FREE char *ls2 = dir_entries(sub);
    HQ_CHECK(!*ls2, "left in %s:%s", sub, ls2);
    return hq_backup_expect_clean(vm, "at the end");
}

/* QEMU refuses a step of backup-begin (the first scratch node, through
 * the failure injector; tests/qemu/test-job-steps.c fails every step):
 * an error, the requested checkpoint not created, nothing of the agent's
 * left; the next backup works. */
static int
test_qemu_refuses(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, false);
    HQ_CHECK(vm && hq_qemu_start(vm) == 0 && hq_inject_start(vm) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x42, 0, K64) == 0, "write");
    HQ_CHECK(hq_inject_rules(vm, "fail blockdev-add 1\n") == 0, "rules");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *r = hq_exec(vm->ctl, "backup-begin", hq_json(
        "{\"incremental\": \"c1\", \"checkpoint\": {\"name\": \"c2\"}}"));
    HQ_CHECK(r && hq_err_class(r), "backup-begin should fail: %s", hq_str(r));
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    hq_note("backup-begin with its first blockdev-add refused: %s: %s",
            hq_err_class(r), hq_err_desc(r));
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1") == 0, "checkpoints: %s", names);
    /* Not a return: what the next backup-begin does is worth seeing. */
    CLEANUP_FREE char *left = hq_backup_leftovers(vm, sd);
    if (left)
        hq_fail("after the failed begin, left behind: %s", left);
    CLEANUP_JSON json_t *bev = hq_wait_event(vm->ctl, "BACKUP_BEGIN", 0.2);
    HQ_CHECK(!bev, "BACKUP_BEGIN for a backup that did not begin: %s",
             hq_str(bev));
    CLEANUP_JSON json_t *eev = hq_wait_event(vm->ctl, "BACKUP_END", 0);
    hq_note("events after the failed begin: %s", eev ? hq_str(eev) : "none");
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "jobs") == 0, "query-status: %s", hq_str(st));
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{\"incremental\": \"c1\", "
                                                   "\"checkpoint\": {\"name\": \"c2\"}}");
    HQ_CHECK(job, "backup-begin after the failure");
    const char *uri = hq_jstr(json_array_get(json_object_get(job, "disks"), 0), "uri");
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s",
        hq_jstr(json_array_get(json_object_get(job, "disks"), 0), "bitmap"));
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, ctx);
    HQ_CHECK(h, "connect");
    uint8_t map[DISK_SIZE / K64];
    HQ_CHECK(hq_nbd_map(h, ctx, DISK_SIZE, K64, 1, false, map) == 0, "map");
    int dirty = 0;
    for (size_t i = 0; i < sizeof map; i++)
        dirty += map[i];
    HQ_CHECK(map[0] && dirty == 1, "dirty clusters: %d (cluster 0: %d)", dirty,
             map[0]);
    hq_nbd_close(h);
    h = NULL;
    if (hq_backup_end(vm, job) < 0)
        return -1;
    return hq_backup_expect_clean(vm, "at the end");
}

/* The scratch directory (a 16 MiB tmpfs, --scratch-reserve 8) fills up
 * while the guest overwrites 12 MiB during a backup: the backup ends
 * failed with a reason before the guest's writes fail, everything is
 * removed, and the checkpoint it created still covers every write. */
static int
test_scratch_full(void)
{
    char *mounted = NULL;
    bool skip = false;
    const char *extra[] = { "--scratch-reserve", "8", NULL };
    CLEANUP_VM struct hq_vm *vm = backup_vm(1, extra, 16, &mounted, &skip);
    /* Declared after vm: unmounted before the directory is removed. */
    HQ_CLEANUP_UMOUNT char *mnt = mounted;
    (void) mnt;
    if (skip)
        return 0;
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_CONN struct hq_conn *c2 = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(c2, "second client");
    HQ_CHECK(hq_write(vm, "vda", 0xa1, 0, 12 * MiB) == 0, "write A");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{\"incremental\": \"c1\", "
                                                   "\"checkpoint\": {\"name\": \"c2\"}}");
    HQ_CHECK(job, "backup-begin");
    const char *id = hq_jstr(job, "id");
    for (int i = 0; i < 12; i++)
        HQ_CHECK(hq_write(vm, "vda", 0xb2, (int64_t) i * MiB, MiB) == 0,
                 "guest write %d MiB into the backup failed", i);
    CLEANUP_JSON json_t *ev = hq_wait_event(c2, "BACKUP_END", 5);
    HQ_CHECK(ev, "no BACKUP_END while the scratch directory filled up");
    json_t *data = json_object_get(ev, "data");
    const char *err = hq_jstr(data, "error");
    HQ_CHECK(strcmp(hq_jstr(data, "id") ?: "", id) == 0 &&
             strcmp(hq_jstr(data, "status") ?: "", "failed") == 0 &&
             err && strstr(err, sd), "BACKUP_END: %s", hq_str(ev));
    hq_note("BACKUP_END: %s", hq_str(data));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotFound", "backup-end",
                                        json_pack("{s:s}", "id", id));
    HQ_CHECK(r, "backup-end of the failed job");
    if (hq_backup_expect_clean(vm, "after the failure") < 0)
        return -1;
    CLEANUP_FREE char *ls = dir_entries(sd);
    HQ_CHECK(!*ls, "left in the scratch tmpfs:%s", ls);
    /* c2 marks the failed backup's begin: an incremental from it covers
     * exactly the 12 MiB the guest wrote after that. */
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1,c2") == 0, "checkpoints: %s", names);
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c2") == 12 * MiB &&
             hq_bitmap_recording(vm, "vda", "c2") == 1, "c2: %" PRId64,
             hq_bitmap_dirty(vm, "vda", "c2"));
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, "{\"incremental\": \"c2\"}");
    HQ_CHECK(j2, "incremental from the failed backup's checkpoint");
    const char *bm = hq_jstr(json_array_get(json_object_get(j2, "disks"), 0), "bitmap");
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", bm ? bm : "");
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(
        hq_jstr(json_array_get(json_object_get(j2, "disks"), 0), "uri"), ctx);
    HQ_CHECK(h, "connect");
    uint8_t map[DISK_SIZE / K64];
    HQ_CHECK(hq_nbd_map(h, ctx, DISK_SIZE, K64, 1, false, map) == 0, "map");
    for (int c = 0; c < DISK_SIZE / K64; c++)
        HQ_CHECK(map[c] == (c < 12 * MiB / K64), "cluster %d dirty=%d", c, map[c]);
    CLEANUP_FREE uint8_t *buf = xmalloc(12 * MiB);
    HQ_CHECK(hq_nbd_read(h, buf, 0, 12 * MiB) == 0, "read");
    for (int64_t i = 0; i < 12 * MiB; i++)
        HQ_CHECK(buf[i] == 0xb2, "byte %" PRId64 " is 0x%02x", i, buf[i]);
    hq_nbd_close(h);
    h = NULL;
    if (hq_backup_end(vm, j2) < 0 || hq_backup_expect_clean(vm, "at the end") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* The scratch directory really full (a 4 MiB tmpfs, the watch off with
 * --scratch-reserve 0): QEMU refuses the guest write that would overwrite
 * data not yet copied, so the exported view stays right; the backup then
 * ends cleanly, also of its full scratch file.  If QEMU reports the
 * error as BLOCK_IO_ERROR (a device's write), the job must end failed
 * by itself. */
static int
test_scratch_enospc(void)
{
    char *mounted = NULL;
    bool skip = false;
    const char *extra[] = { "--scratch-reserve", "0", NULL };
    /* The backup job's filter (QEMU's own): ckptd's filter, where QEMU
     * offers it, breaks the backup instead (test-backup-filter.c). */
    setenv("CKPTD_DEBUG_NO_FILTER", "1", 1);
    CLEANUP_VM struct hq_vm *vm = backup_vm(1, extra, 4, &mounted, &skip);
    unsetenv("CKPTD_DEBUG_NO_FILTER");
    /* Declared after vm: unmounted before the directory is removed. */
    HQ_CLEANUP_UMOUNT char *mnt = mounted;
    (void) mnt;
    if (skip)
        return 0;
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    HQ_CHECK(hq_write(vm, "vda", 0xa1, 0, 8 * MiB) == 0, "write A");
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, NULL);
    HQ_CHECK(job, "backup-begin");
    const char *id = hq_jstr(job, "id");
    CLEANUP_JSON json_t *w = hq_cmd(vm->mon, "human-monitor-command",
        json_pack("{s:s}", "command-line",
                  "qemu-io -d vda/virtio-backend \"write -P 0xb2 0 8M\""));
    HQ_CHECK(json_is_string(w), "HMP: %s", hq_str(w));
    /* qemu-io prints its result on QEMU's stdout/stderr, not in the
     * reply: the last line about the write in QEMU's log. */
    hq_sleep_ms(50);
    CLEANUP_FREE char *qlog = hq_read_file(vm->qemu_log);
    char *wl = NULL;
    for (char *p = qlog ? strstr(qlog, "write") : NULL; p; p = strstr(p + 1, "write"))
        if (strncmp(p, "write failed", 12) == 0 || strncmp(p, "wrote 8388608", 13) == 0)
            wl = p;
    bool refused = wl && strncmp(wl, "write failed", 12) == 0;
    if (wl && strchr(wl, '\n'))
        *strchr(wl, '\n') = 0;
    hq_note("guest write of 8 MiB with a 4 MiB scratch: %s", wl ? wl : "(no output)");
    CLEANUP_JSON json_t *ioerr = hq_wait_event(vm->mon, "BLOCK_IO_ERROR", 0.5);
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", ioerr ? 5 : 0.5);
    if (ioerr) {
        HQ_CHECK(ev, "QEMU reported %s, yet the backup did not end",
                 hq_str(ioerr));
        json_t *data = json_object_get(ev, "data");
        HQ_CHECK(strcmp(hq_jstr(data, "status") ?: "", "failed") == 0 &&
                 hq_jstr(data, "error"), "BACKUP_END: %s", hq_str(ev));
    } else {
        HQ_CHECK(!ev, "BACKUP_END without an I/O error: %s", hq_str(ev));
        hq_note("HMP qemu-io writes raise no BLOCK_IO_ERROR, so the job "
                "ending by itself is not exercised here; checking the view "
                "and backup-end instead");
        /* Whatever QEMU did with the write, the export is still the
         * disk at backup-begin. */
        const char *uri = hq_jstr(json_array_get(json_object_get(job, "disks"), 0),
                                  "uri");
        HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, NULL);
        HQ_CHECK(h, "connect");
        CLEANUP_FREE uint8_t *buf = xmalloc(DISK_SIZE);
        HQ_CHECK(hq_nbd_read(h, buf, 0, DISK_SIZE) == 0, "read the export");
        for (int64_t i = 0; i < DISK_SIZE; i++)
            HQ_CHECK(buf[i] == (i < 8 * MiB ? 0xa1 : 0), "export byte %" PRId64
                     " is 0x%02x", i, buf[i]);
        hq_nbd_close(h);
        h = NULL;
        CLEANUP_JSON json_t *q = hq_cmd(vm->ctl, "query-backup",
                                        json_pack("{s:s}", "id", id));
        HQ_CHECK(q, "query-backup");
        if (hq_backup_end(vm, job) < 0)
            return -1;
    }
    if (hq_backup_expect_clean(vm, "at the end") < 0)
        return -1;
    CLEANUP_FREE char *ls = dir_entries(sd);
    HQ_CHECK(!*ls, "left in the scratch tmpfs:%s", ls);
    /* The disk holds the write only if QEMU said it was done. */
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, NULL);
    HQ_CHECK(j2, "full backup after the end");
    HQ_CLEANUP_NBD struct nbd_handle *h2 = hq_nbd_open(
        hq_jstr(json_array_get(json_object_get(j2, "disks"), 0), "uri"), NULL);
    HQ_CHECK(h2, "connect");
    uint8_t first[512];
    HQ_CHECK(hq_nbd_read(h2, first, 0, sizeof first) == 0, "read");
    hq_note("the disk now starts with 0x%02x", first[0]);
    HQ_CHECK(first[0] == (refused ? 0xa1 : 0xb2), "disk byte 0 is 0x%02x after "
             "a write QEMU %s", first[0], refused ? "refused" : "reported done");
    hq_nbd_close(h2);
    h2 = NULL;
    if (hq_backup_end(vm, j2) < 0 || hq_backup_expect_clean(vm, "after the last backup") < 0)
        return -1;
    return hq_agent_stop(vm);
}

/* The scratch image in sd (the one file the begin made), or NULL. */
static char *
scratch_file(const char *sd)
{
    DIR *d = opendir(sd);
    struct dirent *de;
    char *path = NULL;
    while (d && (de = readdir(d)))
        if (!path && strstr(de->d_name, ".qcow2") && de->d_name[0] != '.')
            path = xasprintf("%s/%s", sd, de->d_name);
    if (d)
        closedir(d);
    return path;
}

/* The end removes a scratch file only once QEMU has closed it: removed
 * before, QEMU's close would free its blocks (gigabytes after a long
 * backup) on QEMU's main loop.  The scratch node's blockdev-del is held:
 * until it reaches QEMU the file is still there under its name. */
static int
test_files_after_qemu(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, false);
    HQ_CHECK(vm && hq_qemu_start(vm) == 0 && hq_inject_start(vm) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{}");
    HQ_CHECK(job, "backup-begin");
    CLEANUP_FREE char *file = scratch_file(sd);
    HQ_CHECK(file, "no scratch file in %s", sd);
    /* The nodes go view, filter, overlay, scratch (our own filter), or
     * overlay, scratch (a backup job): the scratch node's is the last. */
    const char *fleecing = hq_jstr(job, "fleecing");
    int nth = fleecing && strcmp(fleecing, "filter") == 0 ? 4 : 2;
    HQ_CHECK(hq_inject_rules(vm, "hold blockdev-del %d\n", nth) == 0, "rules");
    CLEANUP_FREE char *args = xasprintf("{\"id\": \"%s\"}", hq_jstr(job, "id"));
    HQ_CHECK(hq_send_json(vm->ctl, json_pack("{s:s,s:o}", "execute", "backup-end",
                                             "arguments", hq_json(args))) == 0, "send");
    CLEANUP_FREE char *held = xasprintf("%s/inject.rules.held", vm->dir);
    for (double end = hq_now() + 30; access(held, F_OK) != 0; hq_sleep_ms(10))
        HQ_CHECK(hq_now() < end, "the end never reached the scratch node");
    struct stat st;
    bool there = stat(file, &st) == 0;
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "release");
    CLEANUP_JSON json_t *r = hq_read_reply(vm->ctl, 30);
    HQ_CHECK(r && json_object_get(r, "return"), "backup-end: %s", hq_str(r));
    HQ_CHECK(there, "%s was removed before QEMU closed it", file);
    HQ_CHECK(stat(file, &st) < 0 && errno == ENOENT, "%s is still there after the end", file);
    return hq_backup_expect_clean(vm, "after the end");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "cleanup-files-after-qemu", test_files_after_qemu },
        { "cleanup-sigterm", test_sigterm },
        { "cleanup-kill9-restart", test_kill9_restart },
        { "cleanup-qemu-quit", test_qemu_quit },
        { "cleanup-begin-bad-scratch-dir", test_bad_scratch_dir },
        { "cleanup-begin-qemu-refuses", test_qemu_refuses },
        { "cleanup-scratch-full", test_scratch_full },
        { "cleanup-scratch-enospc", test_scratch_enospc },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
