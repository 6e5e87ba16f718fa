/* The real-guest rig (tests/guest/): a guest that boots under TCG, runs
 * qemu-ga and writes files with a checksummed manifest on ext4.  Pins
 * down what the quiesce tests rely on:
 *  - copies of both disks taken while qemu-ga holds the file systems
 *    frozen are clean (no journal recovery pending, e2fsck -fn clean,
 *    every manifest entry matches), hold every step done before and are
 *    of one moment across both disks (the cross-disk step); copies
 *    taken unfrozen need recovery (and after it, hold every fsync'd step);
 *    the frozen copies boot the same guest, which finds its files intact;
 *  - qmp/qga.c against the real qemu-ga: sync, freeze, status, thaw, a
 *    timed-out command's late reply skipped, disconnect when QEMU goes. */
#include "tests/qemu/harness.h"

#include <ev.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "qmp/qmp.h"

#define DISK_SIZE (64 * 1024 * 1024)

#define NDISKS 2
static const char *const disks[NDISKS] = { "vda", "vdb" };

/* One copy of every disk at the same moment (frozen or not) and what
 * each holds; seq[i] is the last step the console showed for disk i just
 * before the copies started. */
static int
copy_and_check(struct hq_vm *vm, struct hq_conn *qga, bool freeze, int round,
               struct hq_fs_check *fs, long *seq)
{
    char *target[NDISKS];
    for (int i = 0; i < NDISKS; i++)
        target[i] = xasprintf("%s/copy-%s-%s-%d.qcow2", vm->dir, disks[i],
                              freeze ? "frozen" : "live", round);
    int rc = -1;
    if (freeze) {
        CLEANUP_JSON json_t *n = hq_qga_cmd(qga, "guest-fsfreeze-freeze", NULL);
        if (json_integer_value(n) != NDISKS) {
            hq_fail("freeze froze %s file systems", hq_str(n));
            goto out;
        }
        const char *st = hq_qga_freeze_status(qga);
        if (!st || strcmp(st, "frozen") != 0) {
            hq_fail("status after freeze: %s", st ? st : "?");
            goto out;
        }
    }
    for (int i = 0; i < NDISKS; i++)
        seq[i] = hq_guest_seq(vm, disks[i]);
    for (int i = 0; i < NDISKS; i++)
        if (hq_guest_copy_start(vm, disks[i], target[i]) < 0)
            goto out;
    if (freeze) {
        CLEANUP_JSON json_t *n = hq_qga_cmd(qga, "guest-fsfreeze-thaw", NULL);
        if (json_integer_value(n) != NDISKS) {
            hq_fail("thaw thawed %s file systems", hq_str(n));
            goto out;
        }
        const char *st = hq_qga_freeze_status(qga);
        if (!st || strcmp(st, "thawed") != 0) {
            hq_fail("status after thaw: %s", st ? st : "?");
            goto out;
        }
    }
    for (int i = 0; i < NDISKS; i++)
        if (hq_guest_copy_finish(vm, disks[i]) < 0 ||
            hq_fs_check(target[i], &fs[i]) < 0)
            goto out;
    for (int i = 0; i < NDISKS; i++)
        hq_note("%s copy %d of %s: needs_recovery=%d fsck_clean=%d "
                "entries=%d bad=%d newest=f%ld (console at %ld) cross=%ld",
                freeze ? "frozen" : "live", round, disks[i],
                fs[i].needs_recovery, fs[i].fsck_clean, fs[i].entries,
                fs[i].bad, fs[i].newest, seq[i], fs[i].cross);
    /* Both disks of one moment: vda's cross step equals vdb's or is one
     * ahead (vda is written first; the guest was up once step 1 was
     * done). */
    if (fs[0].cross < 1 ||
        !(fs[0].cross == fs[1].cross || fs[0].cross == fs[1].cross + 1)) {
        hq_fail("%s copies %d are not of one moment: cross vda=%ld vdb=%ld",
                freeze ? "frozen" : "live", round, fs[0].cross, fs[1].cross);
        goto out;
    }
    /* The workloads run on: nothing stayed frozen. */
    for (int i = 0; i < NDISKS; i++)
        if (hq_guest_wait_progress(vm, disks[i], 30) < 0)
            goto out;
    rc = 0;
out:
    for (int i = 0; i < NDISKS; i++)
        free(target[i]);
    return rc;
}

static int
case_quiesce_tells_copies_apart(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_guest_vm(NDISKS, DISK_SIZE);
    HQ_CHECK(vm, "guest");
    CLEANUP_CONN struct hq_conn *qga = hq_qga_open(vm, 30);
    HQ_CHECK(qga, "guest agent");
    const char *st = hq_qga_freeze_status(qga);
    HQ_CHECK(st && strcmp(st, "thawed") == 0, "status at boot: %s",
             st ? st : "?");

    int live = 0, live_dirty = 0;
    long frozen_newest[NDISKS] = { 0 };
    for (int round = 0; round < 2; round++) {
        struct hq_fs_check fs[NDISKS];
        long seq[NDISKS];
        if (copy_and_check(vm, qga, true, round, fs, seq) < 0)
            return -1;
        for (int i = 0; i < NDISKS; i++) {
            HQ_CHECK(!fs[i].needs_recovery,
                     "frozen copy %d of %s needs journal recovery", round,
                     disks[i]);
            HQ_CHECK(fs[i].fsck_clean, "frozen copy %d of %s: %s", round,
                     disks[i], fs[i].detail);
            HQ_CHECK(fs[i].entries > 0 && fs[i].bad == 0,
                     "frozen copy %d of %s: %d of %d manifest entries do not "
                     "match: %s", round, disks[i], fs[i].bad, fs[i].entries,
                     fs[i].detail);
            /* Every step the console had reported before the freeze is in
             * the copy: it is of that moment, not older. */
            HQ_CHECK(fs[i].newest >= seq[i], "frozen copy %d of %s ends at "
                     "f%ld, the guest had completed step %ld", round,
                     disks[i], fs[i].newest, seq[i]);
            frozen_newest[i] = fs[i].newest;
        }

        if (copy_and_check(vm, qga, false, round, fs, seq) < 0)
            return -1;
        for (int i = 0; i < NDISKS; i++) {
            live++;
            live_dirty += fs[i].needs_recovery;
            /* Crash-consistent, yet after the journal replay every
             * fsync'd step is there and matches. */
            HQ_CHECK(fs[i].bad == 0 && fs[i].newest >= seq[i],
                     "live copy %d of %s after recovery: %d bad of %d, "
                     "newest f%ld, console at %ld: %s", round, disks[i],
                     fs[i].bad, fs[i].entries, fs[i].newest, seq[i],
                     fs[i].detail);
        }
    }
    HQ_CHECK(live_dirty * 2 > live, "only %d of %d live copies needed journal "
             "recovery: the check cannot tell quiesced copies from "
             "crash-consistent ones", live_dirty, live);

    /* The last frozen copies boot the same guest, which finds its files
     * as they were and carries on from there. */
    hq_conn_close(qga);
    qga = NULL;
    hq_qemu_kill(vm);
    char *imgs[NDISKS];
    for (int i = 0; i < NDISKS; i++)
        imgs[i] = xasprintf("%s/copy-%s-frozen-1.qcow2", vm->dir, disks[i]);
    struct hq_vm *vm2 = hq_guest_vm_from(NDISKS, (const char *const *) imgs);
    for (int i = 0; i < NDISKS; i++)
        free(imgs[i]);
    HQ_CHECK(vm2, "guest from the frozen copies");
    int rc = 0;
    for (int i = 0; i < NDISKS && rc == 0; i++) {
        int entries;
        long newest;
        int ok = hq_guest_check(vm2, disks[i], &entries, &newest);
        if (ok != 1 || newest != frozen_newest[i] || entries <= 0) {
            hq_fail("restored %s: check %d, %d entries, newest f%ld (the "
                    "copy ended at f%ld)", disks[i], ok, entries, newest,
                    frozen_newest[i]);
            rc = -1;
        } else if (hq_guest_wait_progress(vm2, disks[i], 30) < 0 ||
                   hq_guest_seq(vm2, disks[i]) <= frozen_newest[i]) {
            hq_fail("restored %s: the workload did not go on past f%ld",
                    disks[i], frozen_newest[i]);
            rc = -1;
        }
    }
    hq_vm_free(vm2);
    return rc;
}

/* --- qmp/qga.c on a libev loop against the real qemu-ga --- */

struct call {
    bool done;
    json_t *ret;
    char class[64];
    char desc[256];
};

struct qga_ctx {
    int ups, downs;
};

static void
on_state(struct qga *g, bool connected, const char *reason, void *opaque)
{
    struct qga_ctx *c = opaque;
    if (connected)
        c->ups++;
    else
        c->downs++;
}

static void
on_reply(struct qga *g, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct call *k = opaque;
    k->done = true;
    if (err) {
        snprintf(k->class, sizeof k->class, "%s", err->class);
        snprintf(k->desc, sizeof k->desc, "%s", err->desc);
    } else {
        k->ret = json_deep_copy(ret);
    }
}

static void
on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    *(bool *) w->data = true;
}

/* Runs the loop until *flag turns true or timeout passes; false then. */
static bool
run_until(struct ev_loop *loop, const bool *flag, const int *count,
          double timeout)
{
    bool expired = false;
    ev_timer guard;
    ev_timer_init(&guard, on_guard, timeout, 0);
    guard.data = &expired;
    ev_timer_start(loop, &guard);
    while (!expired && !(flag && *flag) && !(count && *count > 0))
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
    return !expired;
}

static bool
call(struct ev_loop *loop, struct qga *g, const char *cmd, double timeout,
     struct call *k)
{
    json_decref(k->ret);
    *k = (struct call) { 0 };
    qga_exec(g, cmd, NULL, timeout, on_reply, k);
    return run_until(loop, &k->done, NULL, timeout + 5);
}

static int
case_qga_client_real_guest(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_guest_vm(1, DISK_SIZE);
    HQ_CHECK(vm, "guest");
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct qga_ctx ctx = { 0 };
    struct qga *g = qga_new(loop, vm->qga_sock, on_state, &ctx, 0.1);
    struct call k = { 0 };
    int rc = -1;

    qga_start(g);
    if (!run_until(loop, NULL, &ctx.ups, 10)) {
        hq_fail("qga.c did not connect to %s", vm->qga_sock);
        goto out;
    }
    if (qga_state(g) != QGA_STATE_CONNECTED) {
        hq_fail("state %s after connecting", qga_state_name(qga_state(g)));
        goto out;
    }

    /* A command given up on at once: under TCG qemu-ga cannot answer in
     * 1 ms, so its (late) replies stay on the channel for the next sync
     * to skip.  guest-info returns an object, the status a string, so a
     * reply handed to the wrong command shows. */
    if (!call(loop, g, "guest-info", 0.001, &k) ||
        strcmp(k.class, "Timeout") != 0) {
        hq_fail("guest-info with 1 ms: %s %s", k.class, hq_str(k.ret));
        goto out;
    }
    if (!call(loop, g, "guest-fsfreeze-status", 5, &k) || !k.ret ||
        !json_is_string(k.ret) || strcmp(json_string_value(k.ret), "thawed")) {
        hq_fail("status after a timed-out command: %s %s", k.class,
                hq_str(k.ret));
        goto out;
    }

    double t0 = hq_now();
    if (!call(loop, g, "guest-fsfreeze-freeze", 10, &k) ||
        json_integer_value(k.ret) != 1) {
        hq_fail("freeze: %s %s %s", k.class, k.desc, hq_str(k.ret));
        goto out;
    }
    if (!call(loop, g, "guest-fsfreeze-status", 5, &k) ||
        strcmp(json_string_value(k.ret) ? json_string_value(k.ret) : "",
               "frozen") != 0) {
        hq_fail("status while frozen: %s %s", k.class, hq_str(k.ret));
        goto out;
    }
    /* A file system command is refused while frozen: the guest agent's
     * own class and message come through. */
    if (!call(loop, g, "guest-fstrim", 5, &k) || k.ret || !k.class[0]) {
        hq_fail("guest-fstrim while frozen: %s", hq_str(k.ret));
        goto out;
    }
    hq_note("while frozen, guest-fstrim: %s: %s", k.class, k.desc);
    if (!call(loop, g, "guest-fsfreeze-thaw", 10, &k) ||
        json_integer_value(k.ret) != 1) {
        hq_fail("thaw: %s %s %s", k.class, k.desc, hq_str(k.ret));
        goto out;
    }
    hq_note("frozen for %.0f ms (freeze, status, fstrim, thaw, each "
            "after a sync)", (hq_now() - t0) * 1000);
    if (!call(loop, g, "guest-fsfreeze-status", 5, &k) ||
        strcmp(json_string_value(k.ret) ? json_string_value(k.ret) : "",
               "thawed") != 0) {
        hq_fail("status after thaw: %s %s", k.class, hq_str(k.ret));
        goto out;
    }
    if (hq_guest_wait_progress(vm, "vda", 30) < 0)
        goto out;
    if (qga_syncs(g) != 7) {
        hq_fail("%llu syncs for 7 commands", qga_syncs(g));
        goto out;
    }

    /* QEMU goes: pending commands fail "Disconnected", the state says so. */
    hq_qemu_kill(vm);
    if (!run_until(loop, NULL, &ctx.downs, 10) ||
        qga_state(g) != QGA_STATE_DISCONNECTED) {
        hq_fail("no disconnect after QEMU was killed");
        goto out;
    }
    if (!call(loop, g, "guest-fsfreeze-status", 1, &k) ||
        strcmp(k.class, "Disconnected") != 0) {
        hq_fail("command while QEMU is gone: %s", k.class);
        goto out;
    }
    rc = 0;
out:
    json_decref(k.ret);
    qga_free(g);
    ev_loop_destroy(loop);
    return rc;
}

int
main(void)
{
    /* qga.c's warnings (the timeout provoked on purpose) stay quiet. */
    log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct hq_case cases[] = {
        { "quiesce-tells-copies-apart", case_quiesce_tells_copies_apart },
        { "qga-client-real-guest", case_qga_client_real_guest },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
