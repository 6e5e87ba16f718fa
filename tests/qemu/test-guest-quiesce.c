/* Application-consistent backups through ckptd, on the real guest of
 * tests/guest/ (TCG, two ext4 disks, qemu-ga, a workload that keeps
 * writing files and a checksummed manifest).  ckptd drives the guest
 * agent itself (--qga):
 *  - ckptctl pull --quiesce, full and incremental: the restored images
 *    need no journal recovery, e2fsck -fn finds them clean, every manifest
 *    entry matches, and both disks are of one moment; a pull without
 *    quiesce needs recovery (the test can tell the two apart);
 *  - the guest is thawed after every path: success, a transaction QEMU
 *    refuses after the freeze, a name clash, SIGTERM of the agent while
 *    the guest is frozen; the frozen time is reported and small;
 *  - the restored incremental boots the same guest, which finds its files
 *    as they were. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DISK_SIZE (64 * 1024 * 1024)
#define NDISKS 2
static const char *const disks[NDISKS] = { "vda", "vdb" };

/* The guest with the agent on its guest-agent channel, through the
 * failure injector. */
static struct hq_vm *
guest_with_agent(void)
{
    struct hq_vm *vm = hq_guest_vm(NDISKS, DISK_SIZE);
    if (!vm)
        return NULL;
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    if (mkdir(sd, 0700) < 0 || hq_agent_add_arg(vm, "--scratch-dir") < 0 ||
        hq_agent_add_arg(vm, sd) < 0 || hq_agent_add_arg(vm, "--qga") < 0 ||
        hq_agent_add_arg(vm, vm->qga_sock) < 0 || hq_inject_start(vm) < 0 ||
        hq_agent_start(vm) < 0) {
        hq_fail("agent");
        return vm;
    }
    for (double end = hq_now() + 30;; hq_sleep_ms(50)) {
        CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
        const char *ga = hq_jstr(st, "guest-agent");
        if (ga && strcmp(ga, "connected") == 0)
            break;
        if (hq_now() > end) {
            hq_fail("the agent did not connect to the guest agent: %s", hq_str(st));
            break;
        }
    }
    return vm;
}

/* The workloads go on on every disk: no file system stayed frozen. */
static int
thawed(struct hq_vm *vm, const char *when)
{
    for (int i = 0; i < NDISKS; i++)
        HQ_CHECK(hq_guest_wait_progress(vm, disks[i], 60) == 0,
                 "%s: %s stays frozen", when, disks[i]);
    return 0;
}

/* ckptctl restore of every disk at ckpt from dir, then what each image
 * holds; the images' paths into img[] (caller frees). */
static int
restore_and_check(struct hq_vm *vm, const char *dir, const char *ckpt,
                  struct hq_fs_check *fs, char **img)
{
    for (int i = 0; i < NDISKS; i++) {
        img[i] = xasprintf("%s/restored-%s-%s.qcow2", vm->dir, disks[i], ckpt);
        CLEANUP_FREE char *out = NULL;
        const char *args[] = { "restore", dir, "--disk", disks[i], "--checkpoint",
                               ckpt, "--output", img[i], NULL };
        HQ_CHECK(hq_ckptctl(vm, &out, args) == 0, "restore %s at %s: %s",
                 disks[i], ckpt, out);
        HQ_CHECK(hq_fs_check(img[i], &fs[i]) == 0, "check %s", img[i]);
        hq_note("%s at %s: needs_recovery=%d fsck_clean=%d entries=%d bad=%d "
                "newest=f%ld cross=%ld", disks[i], ckpt, fs[i].needs_recovery,
                fs[i].fsck_clean, fs[i].entries, fs[i].bad, fs[i].newest, fs[i].cross);
    }
    return 0;
}

static int
consistent(const struct hq_fs_check *fs, const char *what)
{
    for (int i = 0; i < NDISKS; i++) {
        HQ_CHECK(!fs[i].needs_recovery, "%s: %s needs journal recovery", what, disks[i]);
        HQ_CHECK(fs[i].fsck_clean, "%s: %s: %s", what, disks[i], fs[i].detail);
        HQ_CHECK(fs[i].entries > 0 && fs[i].bad == 0, "%s: %s: %d of %d manifest "
                 "entries do not match: %s", what, disks[i], fs[i].bad,
                 fs[i].entries, fs[i].detail);
    }
    /* vda is written first in each cross step: one moment for both. */
    HQ_CHECK(fs[0].cross >= 1 && (fs[0].cross == fs[1].cross ||
                                  fs[0].cross == fs[1].cross + 1),
             "%s: the disks are not of one moment: cross vda=%ld vdb=%ld", what,
             fs[0].cross, fs[1].cross);
    return 0;
}

static void
free_imgs(char **img)
{
    for (int i = 0; i < NDISKS; i++)
        free(img[i]);
}

static int
pull(struct hq_vm *vm, const char *dir, const char *inc, const char *ckpt,
     bool quiesce)
{
    const char *args[12] = { "pull", "--output", dir, "--checkpoint", ckpt };
    int n = 5;
    if (inc) {
        args[n++] = "--incremental";
        args[n++] = inc;
    }
    if (quiesce)
        args[n++] = "--quiesce";
    args[n] = NULL;
    CLEANUP_FREE char *out = NULL;
    HQ_CHECK(hq_ckptctl(vm, &out, args) == 0, "pull %s: %s", ckpt, out);
    return 0;
}

static int
case_quiesced_backups(void)
{
    CLEANUP_VM struct hq_vm *vm = guest_with_agent();
    HQ_CHECK(vm && !hq_failed(), "guest");
    CLEANUP_FREE char *dir = xasprintf("%s/backups", vm->dir);
    CLEANUP_FREE char *live = xasprintf("%s/live", vm->dir);
    struct hq_fs_check fs[NDISKS];
    char *img[NDISKS] = { 0 };

    /* Full, quiesced. */
    if (pull(vm, dir, NULL, "q1", true) < 0 || thawed(vm, "after pull q1") < 0 ||
        restore_and_check(vm, dir, "q1", fs, img) < 0 || consistent(fs, "q1") < 0)
        return -1;
    long q1_newest = fs[0].newest;
    free_imgs(img);
    /* Without quiesce: a copy of mounted file systems, recovery pending. */
    if (pull(vm, live, NULL, "n1", false) < 0 ||
        restore_and_check(vm, live, "n1", fs, img) < 0)
        return -1;
    free_imgs(img);
    HQ_CHECK(fs[0].needs_recovery || fs[1].needs_recovery, "an unquiesced pull "
             "looks quiesced: the check cannot tell the two apart");
    /* Incremental, quiesced: later and as clean. */
    HQ_CHECK(hq_guest_wait_progress(vm, "vda", 60) == 0, "progress");
    if (pull(vm, dir, "q1", "q2", true) < 0 || thawed(vm, "after pull q2") < 0 ||
        restore_and_check(vm, dir, "q2", fs, img) < 0 || consistent(fs, "q2") < 0)
        return -1;
    HQ_CHECK(fs[0].newest > q1_newest, "q2 holds nothing newer than q1 (f%ld)",
             q1_newest);
    long q2_newest[NDISKS] = { fs[0].newest, fs[1].newest };

    /* The frozen time is reported, and small. */
    CLEANUP_JSON json_t *q3 = hq_cmd(vm->ctl, "checkpoint-create",
                                     hq_json("{\"name\": \"q3\", \"quiesce\": true}"));
    HQ_CHECK(q3 && hq_jbool(q3, "quiesced") == 1 && hq_jint(q3, "frozen-ms") >= 0 &&
             hq_jint(q3, "frozen-ms") < 5000, "q3: %s", hq_str(q3));
    hq_note("checkpoint-create q3 froze the guest for %" PRId64 " ms",
            hq_jint(q3, "frozen-ms"));
    if (thawed(vm, "after q3") < 0)
        return -1;
    /* One disk of a running guest, quiesced: its view is taken in the
     * frozen transaction, by a backup job; ckptd's own filter would move
     * the device only after the thaw (job-fleece.c). */
    CLEANUP_JSON json_t *one = hq_backup_begin(vm, "{\"disks\": [\"vda\"], "
                                                   "\"quiesce\": true}");
    HQ_CHECK(one && strcmp(hq_jstr(one, "fleecing") ?: "", "backup-job") == 0 &&
             hq_jbool(one, "quiesced") == 1, "one disk, quiesced: %s", hq_str(one));
    if (hq_backup_end(vm, one) < 0 || thawed(vm, "after the one-disk backup") < 0)
        return -1;
    /* A name clash is found before anything is frozen. */
    CLEANUP_JSON json_t *clash = hq_cmd_err(vm->ctl, "AlreadyExists", "checkpoint-create",
                                            hq_json("{\"name\": \"q3\", \"quiesce\": true}"));
    HQ_CHECK(clash, "name clash");
    if (thawed(vm, "after the name clash") < 0)
        return -1;
    /* QEMU refuses the transaction while the guest is frozen: thawed all
     * the same, and nothing changed. */
    HQ_CHECK(hq_inject_rules(vm, "fail transaction 1\n") == 0, "rules");
    CLEANUP_JSON json_t *refused = hq_cmd_err(vm->ctl, "QemuError", "checkpoint-create",
                                              hq_json("{\"name\": \"x1\", \"quiesce\": true}"));
    HQ_CHECK(refused, "refused transaction");
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    if (thawed(vm, "after a refused transaction") < 0)
        return -1;
    CLEANUP_JSON json_t *x1 = hq_exec(vm->ctl, "checkpoint-get", hq_json("{\"name\": \"x1\"}"));
    HQ_CHECK(x1 && hq_err_class(x1), "x1 exists: %s", hq_str(x1));

    /* QEMU does not answer the transaction for 12 s: the watchdog thaws
     * the guest after 10, and the reply says the checkpoint is not
     * quiesced. */
    HQ_CHECK(hq_inject_rules(vm, "hold transaction 1\n") == 0, "rules");
    CLEANUP_JSON json_t *wreq = json_pack("{s:s,s:{s:s,s:b},s:i}", "execute",
        "checkpoint-create", "arguments", "name", "w1", "quiesce", 1, "id", 4242);
    HQ_CHECK(hq_send_json(vm->ctl, json_incref(wreq)) == 0, "send");
    CLEANUP_FREE char *held = xasprintf("%s/inject.rules.held", vm->dir);
    for (double end = hq_now() + 30; access(held, F_OK) != 0; hq_sleep_ms(20))
        HQ_CHECK(hq_now() < end, "the transaction was not held");
    double held_at = hq_now();
    if (thawed(vm, "with the transaction held") < 0)
        return -1;
    double thawed_after = hq_now() - held_at;
    hq_note("the watchdog thawed the guest %.1f s after the freeze", thawed_after);
    HQ_CHECK(thawed_after > 5 && thawed_after < 30, "thawed after %.1f s", thawed_after);
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "release");
    CLEANUP_JSON json_t *wr = hq_read_reply(vm->ctl, 30);
    json_t *w1 = json_object_get(wr, "return");
    HQ_CHECK(w1 && hq_jbool(w1, "quiesced") == 0, "w1 after the watchdog: %s", hq_str(wr));

    /* SIGTERM while the guest is frozen (just before the transaction): the
     * agent thaws it, then exits 0. */
    HQ_CHECK(hq_inject_rules(vm, "signal transaction 1 %d %d\n", (int) vm->agent_pid,
                             SIGTERM) == 0, "rules");
    json_decref(hq_exec(vm->ctl, "checkpoint-create",
                        hq_json("{\"name\": \"q4\", \"quiesce\": true}")));
    int status;
    HQ_CHECK(waitpid(vm->agent_pid, &status, 0) == vm->agent_pid, "wait for the agent");
    vm->agent_pid = 0;
    hq_conn_close(vm->ctl);
    vm->ctl = NULL;
    HQ_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "agent status %d", status);
    {
        CLEANUP_CONN struct hq_conn *qga = hq_qga_open(vm, 30);
        HQ_CHECK(qga, "guest agent");
        const char *st = hq_qga_freeze_status(qga);
        HQ_CHECK(st && strcmp(st, "thawed") == 0, "after SIGTERM the guest is %s",
                 st ? st : "?");
    }
    if (thawed(vm, "after SIGTERM") < 0)
        return -1;

    /* The restored incremental boots the same guest. */
    hq_qemu_kill(vm);
    struct hq_vm *vm2 = hq_guest_vm_from(NDISKS, (const char *const *) img);
    HQ_CHECK(vm2, "guest from the restored q2");
    int rc = 0;
    for (int i = 0; i < NDISKS && rc == 0; i++) {
        int entries;
        long newest;
        if (hq_guest_check(vm2, disks[i], &entries, &newest) != 1 ||
            newest != q2_newest[i]) {
            hq_fail("the guest booted from q2 finds %s at f%ld (restored f%ld)",
                    disks[i], newest, q2_newest[i]);
            rc = -1;
        }
    }
    hq_vm_free(vm2);
    free_imgs(img);
    return rc;
}

/* Without a guest agent (or one not connected), quiesce is refused with
 * the reason and nothing changes. */
static int
case_no_guest_agent(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, 16 * 1024 * 1024, NULL, true);
    HQ_CHECK(vm, "vm");
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(st && strcmp(hq_jstr(st, "guest-agent"), "none") == 0, "%s", hq_str(st));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Unsupported", "checkpoint-create",
                                        hq_json("{\"name\": \"q\", \"quiesce\": true}"));
    CLEANUP_JSON json_t *b = hq_cmd_err(vm->ctl, "Unsupported", "backup-begin",
                                        hq_json("{\"quiesce\": true}"));
    HQ_CHECK(r && strstr(hq_err_desc(r), "--qga") && b, "refusals");
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "checkpoints: %s", names);
    return hq_backup_expect_clean(vm, "after the refusals");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "quiesce-no-guest-agent", case_no_guest_agent },
        { "quiesced-backups-real-guest", case_quiesced_backups },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
