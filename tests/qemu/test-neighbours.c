/* Sharing a host: agents of two VMs share one scratch directory and
 * survive each other's restarts; an NBD server and export another QMP
 * client made survive the agent's start, restart and reconnect; a pull
 * that cannot finish leaves no checkpoint that no backup holds. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define K64 HQ_K64
#define SIZE HQ_MODEL_SIZE

static int
export_equals(json_t *job, const struct hq_model *m, const char *when)
{
    CLEANUP_FREE uint8_t *got = xmalloc(SIZE);
    HQ_CHECK(hq_read_full(job, m->disk, got) == 0, "%s: read %s", when, m->disk);
    int64_t x = hq_first_diff(got, m->data, SIZE);
    HQ_CHECK(x < 0, "%s: the export of %s differs at byte %" PRId64, when, m->disk, x);
    return 0;
}

/* Two VMs' agents with one scratch directory: backups at the same time,
 * one agent restarted during the other's backup, each backup ended in
 * turn; every export reads back its own point in time, and each agent
 * removes only its own files. */
static int
test_shared_scratch(void)
{
    CLEANUP_FREE char *shared = xstrdup("/tmp/ckptd-shared-XXXXXX");
    HQ_CHECK(mkdtemp(shared), "mkdtemp");
    const char *extra[] = { "--scratch-dir", shared, NULL };
    CLEANUP_VM struct hq_vm *vm1 = hq_vm_scratch(1, SIZE, extra, true);
    CLEANUP_VM struct hq_vm *vm2 = hq_vm_scratch(1, SIZE, extra, true);
    HQ_CHECK(vm1 && vm2, "two VMs");
    struct hq_model m1_, m2_;
    HQ_CLEANUP_MODEL struct hq_model *m1 = hq_model_init(&m1_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *m2 = hq_model_init(&m2_, "vda");
    HQ_CHECK(hq_mwrite(vm1, m1, 0x61, 0, 2 * K64) == 0 &&
             hq_mwrite(vm2, m2, 0x62, K64, 3 * K64) == 0, "writes");
    CLEANUP_JSON json_t *j1 = hq_backup_begin(vm1, NULL);
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm2, NULL);
    HQ_CHECK(j1 && j2, "both backups begin");
    CLEANUP_FREE char *f1 = hq_scratch_file(shared, hq_jstr(j1, "id"), "vda");
    CLEANUP_FREE char *f2 = hq_scratch_file(shared, hq_jstr(j2, "id"), "vda");
    HQ_CHECK(f1 && f2 && strcmp(f1, f2) != 0, "two scratch files: %s %s", f1, f2);
    /* Point in time: guest writes after the begin go to the scratch file. */
    struct hq_model at1 = *m1;
    at1.data = xmalloc(SIZE);
    memcpy(at1.data, m1->data, SIZE);
    int r = hq_mwrite(vm1, m1, 0x63, 0, 4 * K64);
    /* vm2's agent restarts during vm1's backup: its start-up sweep must
     * leave vm1's live scratch file alone. */
    if (r == 0 && (hq_agent_stop(vm2) < 0 || hq_agent_start(vm2) < 0))
        r = -1;
    if (r == 0 && access(f1, F_OK) != 0)
        r = -1, hq_fail("vm2's agent removed vm1's live scratch file %s", f1);
    if (r == 0 && access(f2, F_OK) == 0)
        r = -1, hq_fail("vm2's agent kept its own ended job's file %s", f2);
    if (r == 0)
        r = export_equals(j1, &at1, "vm1 after vm2's restart");
    free(at1.data);
    HQ_CHECK(r == 0, "vm1's backup across vm2's restart");
    /* A new backup on vm2; ending vm1's leaves vm2's file. */
    CLEANUP_JSON json_t *j3 = hq_backup_begin(vm2, NULL);
    HQ_CHECK(j3 && strcmp(hq_jstr(j3, "id"), hq_jstr(j2, "id")) != 0,
             "a restarted agent hands out a new job id: %s", hq_str(j3));
    CLEANUP_FREE char *f3 = hq_scratch_file(shared, hq_jstr(j3, "id"), "vda");
    HQ_CHECK(f3, "vm2's new scratch file");
    HQ_CHECK(hq_backup_end(vm1, j1) == 0, "end vm1's backup");
    HQ_CHECK(access(f3, F_OK) == 0, "vm1's backup-end removed vm2's file %s", f3);
    if (export_equals(j3, m2, "vm2 after vm1's end") < 0)
        return -1;
    /* An id of the other agent is not found here. */
    CLEANUP_JSON json_t *x = hq_cmd_err(vm1->ctl, "NotFound", "backup-end",
                                        json_pack("{s:s}", "id", hq_jstr(j3, "id")));
    HQ_CHECK(x, "vm1's agent must not know vm2's job");
    HQ_CHECK(hq_backup_end(vm2, j3) == 0, "end vm2's backup");
    CLEANUP_FREE char *left1 = hq_backup_leftovers(vm1, shared);
    HQ_CHECK(!left1, "left: %s", left1);
    rmdir(shared);
    return 0;
}

static int
theirs_alive(struct hq_vm *vm, const char *sock, const char *when)
{
    CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
    HQ_CHECK(hq_jfind(ex, "id", "theirs"), "%s: the other client's export is gone: %s",
             when, hq_str(ex));
    CLEANUP_FREE char *uri = xasprintf("nbd+unix:///theirs?socket=%s", sock);
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, NULL);
    HQ_CHECK(h, "%s: the other client's NBD server does not serve", when);
    uint8_t buf[512];
    HQ_CHECK(hq_nbd_read(h, buf, 0, sizeof buf) == 0 && buf[0] == 0x71,
             "%s: the other client's export reads 0x%02x", when, buf[0]);
    return 0;
}

/* Another client's NBD server and export: the agent's start, restart and
 * reconnect to QEMU leave them as they are; a backup says why it cannot
 * use that server. */
static int
test_foreign_nbd_server(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, false);
    HQ_CHECK(vm && hq_qemu_start(vm) == 0, "vm");
    HQ_CHECK(hq_write(vm, "vda", 0x71, 0, K64) == 0, "write");
    CLEANUP_FREE char *sock = xasprintf("%s/theirs.sock", vm->dir);
    CLEANUP_JSON json_t *s = hq_cmd(vm->mon, "nbd-server-start",
        json_pack("{s:{s:s,s:{s:s}}}", "addr", "type", "unix", "data", "path", sock));
    CLEANUP_JSON json_t *e = hq_cmd(vm->mon, "block-export-add",
        hq_json("{\"type\": \"nbd\", \"id\": \"theirs\", \"node-name\": \"vda-fmt\","
                " \"name\": \"theirs\", \"writable\": false}"));
    HQ_CHECK(s && e, "the other client's server and export");
    HQ_CHECK(hq_inject_start(vm) == 0 && hq_agent_start(vm) == 0, "agent");
    if (theirs_alive(vm, sock, "after the agent started") < 0)
        return -1;
    HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "restart");
    if (theirs_alive(vm, sock, "after the agent restarted") < 0)
        return -1;
    /* The connection to QEMU drops after a query; the agent reconnects
     * and sweeps again. */
    HQ_CHECK(hq_inject_rules(vm, "close query-named-block-nodes 1\n") == 0, "rules");
    CLEANUP_JSON json_t *d = hq_exec(vm->ctl, "query-disks", NULL);
    HQ_CHECK(d && hq_err_class(d), "query-disks across the lost connection: %s",
             hq_str(d));
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 30) == 0, "reconnect");
    if (theirs_alive(vm, sock, "after a reconnect") < 0)
        return -1;
    CLEANUP_JSON json_t *b = hq_exec(vm->ctl, "backup-begin", NULL);
    HQ_CHECK(b && hq_err_class(b) && strstr(hq_err_desc(b), "another QMP client"),
             "a backup on QEMU's taken NBD server: %s", hq_str(b));
    if (theirs_alive(vm, sock, "after the refused backup") < 0)
        return -1;
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *left = hq_backup_leftovers(vm, sd);
    HQ_CHECK(left && strstr(left, "theirs") && !strstr(left, "ckptd"),
             "only the other client's export may be left: %s", left);
    return 0;
}

/* A pull onto a full disk fails, removes its files and takes back the
 * checkpoint it made: the next incremental from the previous checkpoint
 * works and is exact. */
static int
test_failed_pull_checkpoint(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    CLEANUP_FREE char *out = xasprintf("%s/small", vm->dir);
    HQ_CHECK(mkdir(out, 0700) == 0, "mkdir");
    char why[256];
    int m = hq_mount_tmpfs(out, 1, why, sizeof why);
    if (m == 0) {
        hq_skip("%s", why);
        return 0;
    }
    HQ_CHECK(m == 1, "tmpfs");
    HQ_CLEANUP_UMOUNT char *mnt = xstrdup(out);
    (void) mnt;                 /* unmounted when the case returns */
    CLEANUP_FREE char *good = xasprintf("%s/backups", vm->dir);
    struct hq_model ma_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CHECK(hq_mwrite(vm, ma, 0x81, 0, 4 * 1024 * 1024) == 0, "4 MiB of data");
    CLEANUP_FREE char *o1 = NULL, *o2 = NULL, *o3 = NULL;
    const char *p1[] = { "pull", "--output", good, "--checkpoint", "g1", NULL };
    HQ_CHECK(hq_ckptctl(vm, &o1, p1) == 0, "pull g1: %s", o1);
    HQ_CHECK(hq_mwrite(vm, ma, 0x82, 0, 2 * 1024 * 1024) == 0, "write");
    const char *p2[] = { "pull", "--output", out, "--checkpoint", "f1", NULL };
    int r = hq_ckptctl(vm, &o2, p2);
    HQ_CHECK(r != 0, "a pull onto a full disk succeeded: %s", o2);
    hq_note("the failed pull said: %s", o2);
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "g1") == 0, "checkpoints after the failed pull: %s",
             names);
    if (hq_tree_matches_qemu(vm, "after the failed pull") < 0)
        return -1;
    const char *p3[] = { "pull", "--output", good, "--incremental", "g1",
                         "--checkpoint", "g2", NULL };
    HQ_CHECK(hq_ckptctl(vm, &o3, p3) == 0, "the incremental from g1: %s", o3);
    CLEANUP_FREE char *img = xasprintf("%s/vda-g2.raw", vm->dir);
    CLEANUP_FREE char *o4 = NULL;
    const char *rs[] = { "restore", good, "--disk", "vda", "--checkpoint", "g2",
                         "--output", img, "--format", "raw", NULL };
    HQ_CHECK(hq_ckptctl(vm, &o4, rs) == 0, "restore g2: %s", o4);
    CLEANUP_FREE char *got = hq_read_file(img);
    HQ_CHECK(got && hq_first_diff((const uint8_t *) got, ma->data, SIZE) < 0,
             "the restored g2 differs from the disk");
    return hq_backup_expect_clean(vm, "at the end");
}

/* After a host crash, the scratch files in a subdirectory of the scratch
 * directory are swept by the next agent, and only its own: a neighbour's
 * file with another tag in the same subdirectory stays. */
static int
test_sweep_subdirectory(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_FREE char *sub = xasprintf("%s/deep/er", sd);
    CLEANUP_FREE char *mid = xasprintf("%s/deep", sd);
    HQ_CHECK(mkdir(mid, 0700) == 0 && mkdir(sub, 0700) == 0, "subdirectories");
    CLEANUP_FREE char *theirs = xasprintf("%s/ckptd-0badc0de-backup-1-vda.qcow2", sub);
    FILE *f = fopen(theirs, "w");
    HQ_CHECK(f && fclose(f) == 0, "a neighbour's file");
    CLEANUP_FREE char *args = xasprintf("{\"scratch-dir\": \"%s\"}", sub);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
    HQ_CHECK(job, "backup into the subdirectory");
    CLEANUP_FREE char *mine = hq_scratch_file(sub, hq_jstr(job, "id"), "vda");
    HQ_CHECK(mine, "its scratch file");
    /* A host crash: agent and QEMU gone, so nothing in QEMU names the
     * file any more; the new agent must find it in the directory. */
    hq_agent_kill(vm);
    hq_qemu_kill(vm);
    HQ_CHECK(access(mine, F_OK) == 0, "the file is there after the crash");
    HQ_CHECK(hq_qemu_start(vm) == 0 && hq_agent_start(vm) == 0, "QEMU and a new agent");
    HQ_CHECK(access(mine, F_OK) != 0, "the new agent left %s", mine);
    HQ_CHECK(access(theirs, F_OK) == 0, "the new agent removed the neighbour's %s", theirs);
    unlink(theirs);
    rmdir(sub);
    rmdir(mid);
    return hq_backup_expect_clean(vm, "after the sweep");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "shared-scratch-dir", test_shared_scratch },
        { "foreign-nbd-server", test_foreign_nbd_server },
        { "failed-pull-takes-back-checkpoint", test_failed_pull_checkpoint },
        { "sweep-subdirectory-own-files", test_sweep_subdirectory },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
