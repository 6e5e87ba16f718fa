/* Every step of a change and of a backup job, failed in turn.
 *
 * tests/tools/qmp-inject sits between the agent and QEMU: it fails one
 * chosen QMP command, signals the agent just before one, closes the
 * connection right after one, or holds one while the test changes the
 * VM.  After each case the test compares, over QEMU's own monitor, the
 * checkpoints the agent lists with the bitmaps QEMU holds, checks that
 * every disk has exactly one recording checkpoint bitmap, and that no
 * temporary object or scratch file is left. */
#include "tests/qemu/harness.h"

#include <libnbd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define DISK_SIZE (8 * MiB)

static int
clean_and_whole(struct hq_vm *vm, const char *when)
{
    if (hq_tree_matches_qemu(vm, when) < 0)
        return -1;
    return hq_backup_expect_clean(vm, when);
}

static struct hq_vm *
inject_vm(int n)
{
    struct hq_vm *vm = hq_vm_scratch(n, DISK_SIZE, NULL, false);
    if (!vm || hq_qemu_start(vm) < 0 || hq_inject_start(vm) < 0 ||
        hq_agent_start(vm) < 0)
        return vm;
    return vm;
}

/* Which occurrence of seq[i] (counting from 1) step i is. */
static int
occurrence(json_t *seq, size_t i)
{
    const char *name = json_string_value(json_array_get(seq, i));
    int n = 0;
    for (size_t k = 0; k <= i; k++)
        n += strcmp(json_string_value(json_array_get(seq, k)), name) == 0;
    return n;
}

/* The QMP commands one request makes, recorded on a run without faults. */
static json_t *
record(struct hq_vm *vm, const char *cmd, const char *args, json_t **reply)
{
    hq_inject_mark(vm);
    json_t *r = hq_cmd(vm->ctl, cmd, args ? hq_json(args) : NULL);
    if (reply)
        *reply = r;
    else
        json_decref(r);
    json_t *seen = r ? hq_inject_seen(vm) : NULL;
    /* The schema is read once per connection, by a timer or by the first
     * begin, whichever comes first: no step of the command itself. */
    for (size_t i = json_array_size(seen); i-- > 0;)
        if (strcmp(json_string_value(json_array_get(seen, i)), "query-qmp-schema") == 0)
            json_array_remove(seen, i);
    return seen;
}

#define BEGIN_ARGS "{\"incremental\": \"c0\", \"checkpoint\": {\"name\": \"k1\"}}"

/* c0, then the QMP commands of one clean begin from it (its job ended and
 * its checkpoint k1 deleted again), or NULL with hq_fail. */
static json_t *
record_begin(struct hq_vm *vm)
{
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c0\"}")));
    json_t *job = NULL;
    json_t *seq = record(vm, "backup-begin", BEGIN_ARGS, &job);
    int r = seq && job ? hq_backup_end(vm, job) : -1;
    json_decref(job);
    json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"k1\"}")));
    if (r < 0) {
        json_decref(seq);
        return NULL;
    }
    return seq;
}

/* Bug: a backup-begin whose export step failed after QEMU accepted the
 * transaction left the tree without the new checkpoint while it recorded
 * on the disks.  The export fails here because another client already
 * exports a disk under the same name. */
static int
test_export_clash(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "vm");
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c0\"}")));
    CLEANUP_JSON json_t *a = hq_backup_begin(vm, "{\"disks\": [\"vda\"]}");
    HQ_CHECK(a, "first backup");
    json_decref(hq_cmd(vm->mon, "block-export-add",
        hq_json("{\"type\": \"nbd\", \"id\": \"theirs\", \"node-name\": \"vdb-fmt\","
                " \"name\": \"vdb\", \"writable\": false}")));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "QemuError", "backup-begin",
        hq_json("{\"disks\": [\"vdb\"], \"checkpoint\": {\"name\": \"k1\"}}"));
    HQ_CHECK(r, "the clashing begin must fail");
    if (hq_tree_matches_qemu(vm, "after the failed begin") < 0)
        return -1;
    CLEANUP_JSON json_t *k2 = hq_cmd(vm->ctl, "checkpoint-create",
                                     hq_json("{\"name\": \"k2\"}"));
    HQ_CHECK(k2, "create after the failed begin");
    HQ_CHECK(hq_jstr(k2, "parent") && strcmp(hq_jstr(k2, "parent"), "c0") == 0,
             "k2's parent is %s", hq_str(k2));
    if (hq_tree_matches_qemu(vm, "after k2") < 0)
        return -1;
    json_decref(hq_cmd(vm->mon, "block-export-del", hq_json("{\"id\": \"theirs\"}")));
    HQ_CHECK(hq_backup_end(vm, a) == 0, "end");
    return hq_backup_expect_clean(vm, "after the end");
}

/* Each QMP step of create, delete and backup-begin answered with an
 * error: the request fails, and the tree and QEMU agree. */
static int
test_each_step_fails(void)
{
    CLEANUP_VM struct hq_vm *vm = inject_vm(2);
    HQ_CHECK(vm && !hq_failed(), "vm");
    CLEANUP_JSON json_t *begin = record_begin(vm);
    HQ_CHECK(begin, "clean begin");
    hq_note("backup-begin makes %zu QMP commands: %s", json_array_size(begin),
            hq_str(begin));
    for (size_t i = 0; i < json_array_size(begin); i++) {
        const char *step = json_string_value(json_array_get(begin, i));
        char when[128];
        /* Queries are the tree verification's (CKPTD_DEBUG_VERIFY_TREE),
         * not steps of the begin. */
        if (strncmp(step, "query-", 6) == 0)
            continue;
        snprintf(when, sizeof when, "begin with %s #%d failed", step, occurrence(begin, i));
        HQ_CHECK(hq_inject_rules(vm, "fail %s %d\n", step, occurrence(begin, i)) == 0, "rules");
        CLEANUP_JSON json_t *r = hq_exec(vm->ctl, "backup-begin", hq_json(BEGIN_ARGS));
        HQ_CHECK(r && hq_err_class(r), "%s: the begin succeeded: %s", when, hq_str(r));
        HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
        if (clean_and_whole(vm, when) < 0)
            return -1;
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        HQ_CHECK(names && strcmp(names, "c0") == 0, "%s: checkpoints %s", when, names);
    }
    /* create and delete: one transaction each. */
    HQ_CHECK(hq_inject_rules(vm, "fail transaction 1\n") == 0, "rules");
    CLEANUP_JSON json_t *rc = hq_cmd_err(vm->ctl, "QemuError", "checkpoint-create",
                                         hq_json("{\"name\": \"c1\"}"));
    HQ_CHECK(hq_inject_rules(vm, "fail transaction 1\n") == 0, "rules");
    CLEANUP_JSON json_t *rd = hq_cmd_err(vm->ctl, "QemuError", "checkpoint-delete",
                                         hq_json("{\"name\": \"c0\"}"));
    HQ_CHECK(rc && rd, "create and delete must fail");
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
    return clean_and_whole(vm, "after failed create and delete");
}

/* QEMU's connection lost right after each step of a begin (QEMU has done
 * it, the agent never hears back): once the agent is connected again,
 * nothing of the job is left and the tree is QEMU's. */
static int
test_connection_lost(void)
{
    CLEANUP_VM struct hq_vm *vm = inject_vm(2);
    HQ_CHECK(vm && !hq_failed(), "vm");
    CLEANUP_JSON json_t *begin = record_begin(vm);
    HQ_CHECK(begin, "clean begin");
    for (size_t i = 0; i < json_array_size(begin); i++) {
        const char *step = json_string_value(json_array_get(begin, i));
        char when[128];
        snprintf(when, sizeof when, "connection lost after %s #%d", step,
                 occurrence(begin, i));
        HQ_CHECK(hq_inject_rules(vm, "close %s %d\n", step, occurrence(begin, i)) == 0,
                 "rules");
        CLEANUP_JSON json_t *r = hq_exec(vm->ctl, "backup-begin", hq_json(BEGIN_ARGS));
        HQ_CHECK(r && hq_err_class(r), "%s: the begin succeeded: %s", when, hq_str(r));
        HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
        HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 30) == 0, "%s: reconnect", when);
        if (clean_and_whole(vm, when) < 0)
            return -1;
        /* A transaction QEMU carried out stays done: k1 may exist. */
        CLEANUP_JSON json_t *k1 = hq_exec(vm->ctl, "checkpoint-get",
                                          hq_json("{\"name\": \"k1\"}"));
        if (k1 && !hq_err_class(k1))
            json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"k1\"}")));
    }
    return 0;
}

/* SIGTERM while a begin or an end is half way: the agent exits 0 and
 * leaves nothing of the job in QEMU or in the scratch directory. */
static int
sigterm_at_each_step(struct hq_vm *vm, const char *what)
{
    bool end = strcmp(what, "backup-end") == 0;
    json_t *job = NULL;
    CLEANUP_JSON json_t *seq = end ? NULL : record(vm, "backup-begin", BEGIN_ARGS, &job);
    if (end) {
        job = hq_backup_begin(vm, BEGIN_ARGS);
        HQ_CHECK(job, "begin");
        CLEANUP_FREE char *args = xasprintf("{\"id\": \"%s\"}", hq_jstr(job, "id"));
        seq = record(vm, "backup-end", args, NULL);
    } else {
        HQ_CHECK(hq_backup_end(vm, job) == 0, "end");
    }
    json_decref(job);
    HQ_CHECK(seq, "clean %s", what);
    json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"k1\"}")));
    for (size_t i = 0; i < json_array_size(seq); i++) {
        const char *step = json_string_value(json_array_get(seq, i));
        char when[128];
        snprintf(when, sizeof when, "SIGTERM before %s #%d of %s", step,
                 occurrence(seq, i), what);
        CLEANUP_JSON json_t *j = end ? hq_backup_begin(vm, BEGIN_ARGS) : NULL;
        HQ_CHECK(!end || j, "%s: begin", when);
        HQ_CHECK(hq_inject_rules(vm, "signal %s %d %d %d\n", step, occurrence(seq, i),
                                 (int) vm->agent_pid, SIGTERM) == 0, "rules");
        if (end) {
            CLEANUP_FREE char *args = xasprintf("{\"id\": \"%s\"}", hq_jstr(j, "id"));
            json_decref(hq_exec(vm->ctl, "backup-end", hq_json(args)));
        } else {
            json_decref(hq_exec(vm->ctl, "backup-begin", hq_json(BEGIN_ARGS)));
        }
        int status;
        HQ_CHECK(waitpid(vm->agent_pid, &status, 0) == vm->agent_pid, "%s: wait", when);
        vm->agent_pid = 0;
        hq_conn_close(vm->ctl);
        vm->ctl = NULL;
        HQ_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "%s: the agent exited with status %d", when, status);
        HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
        CLEANUP_FREE char *sd = hq_scratch_dir(vm);
        CLEANUP_FREE char *left = hq_backup_leftovers(vm, sd);
        HQ_CHECK(!left, "%s: left behind: %s", when, left);
        HQ_CHECK(hq_agent_start(vm) == 0, "%s: restart", when);
        if (hq_tree_matches_qemu(vm, when) < 0)
            return -1;
        CLEANUP_JSON json_t *k1 = hq_exec(vm->ctl, "checkpoint-get",
                                          hq_json("{\"name\": \"k1\"}"));
        if (k1 && !hq_err_class(k1))
            json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"k1\"}")));
    }
    return 0;
}

/* Each QMP step of backup-end refused in turn: the end is still carried
 * through (every other undo runs), the reply says what QEMU refused
 * instead of a silent {}, and what was left goes at the agent's next
 * connection to QEMU.  A refusal the end recovers from (the early
 * export-del, asked again from the listing) may answer {}: then nothing
 * of the job may be left at once. */
static int
test_end_step_fails(void)
{
    CLEANUP_VM struct hq_vm *vm = inject_vm(2);
    HQ_CHECK(vm && !hq_failed(), "vm");
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c0\"}")));
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, BEGIN_ARGS);
    HQ_CHECK(job, "begin");
    CLEANUP_FREE char *args = xasprintf("{\"id\": \"%s\"}", hq_jstr(job, "id"));
    CLEANUP_JSON json_t *seq = record(vm, "backup-end", args, NULL);
    HQ_CHECK(seq, "clean end");
    json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"k1\"}")));
    hq_note("backup-end makes %zu QMP commands: %s", json_array_size(seq), hq_str(seq));
    for (size_t i = 0; i < json_array_size(seq); i++) {
        const char *step = json_string_value(json_array_get(seq, i));
        char when[128];
        snprintf(when, sizeof when, "end with %s #%d failed", step, occurrence(seq, i));
        CLEANUP_JSON json_t *j = hq_backup_begin(vm, BEGIN_ARGS);
        HQ_CHECK(j, "%s: begin", when);
        CLEANUP_FREE char *a = xasprintf("{\"id\": \"%s\"}", hq_jstr(j, "id"));
        HQ_CHECK(hq_inject_rules(vm, "fail %s %d\n", step, occurrence(seq, i)) == 0, "rules");
        CLEANUP_JSON json_t *r = hq_exec(vm->ctl, "backup-end", hq_json(a));
        HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
        bool recovered = r && json_object_get(r, "return");
        HQ_CHECK(recovered || (r && hq_err_class(r) && strstr(hq_err_desc(r), "refused")),
                 "%s: backup-end answered %s", when, hq_str(r));
        if (recovered && hq_backup_expect_clean(vm, when) < 0)
            return -1;
        if (recovered)
            hq_note("%s: recovered, nothing left", when);
        CLEANUP_JSON json_t *q = hq_exec(vm->ctl, "query-backup", hq_json(a));
        HQ_CHECK(q && hq_err_class(q), "%s: the job is still there: %s", when, hq_str(q));
        /* The next connection's sweep removes what is left. */
        HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "%s: restart", when);
        if (clean_and_whole(vm, when) < 0)
            return -1;
        json_decref(hq_cmd(vm->ctl, "checkpoint-delete", hq_json("{\"name\": \"k1\"}")));
    }
    return 0;
}

static int
test_sigterm_begin(void)
{
    CLEANUP_VM struct hq_vm *vm = inject_vm(2);
    HQ_CHECK(vm && !hq_failed(), "vm");
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c0\"}")));
    return sigterm_at_each_step(vm, "backup-begin");
}

static int
test_sigterm_end(void)
{
    CLEANUP_VM struct hq_vm *vm = inject_vm(2);
    HQ_CHECK(vm && !hq_failed(), "vm");
    json_decref(hq_cmd(vm->ctl, "checkpoint-create", hq_json("{\"name\": \"c0\"}")));
    return sigterm_at_each_step(vm, "backup-end");
}

/* A SCSI CD-ROM whose medium can be taken out while the CPUs are stopped:
 * the disk list shrinks in front of the disks behind it. */
static int
add_cdrom(struct hq_vm *vm)
{
    CLEANUP_FREE char *iso = xasprintf("%s/cd.raw", vm->dir);
    CLEANUP_FREE char *size = xstrdup("1M");
    char *argv[] = { "qemu-img", "create", "-q", "-f", "raw", iso, size, NULL };
    HQ_CHECK(hq_run_cmd(argv, NULL) == 0, "qemu-img");
    CLEANUP_FREE char *add = xasprintf(
        "{\"driver\": \"raw\", \"node-name\": \"cd0-fmt\", \"read-only\": true,"
        " \"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", iso);
    CLEANUP_JSON json_t *r1 = hq_cmd(vm->mon, "blockdev-add", hq_json(add));
    CLEANUP_FREE char *port = xasprintf("hq-rp%d", vm->root_ports_used++);
    CLEANUP_JSON json_t *r2 = hq_cmd(vm->mon, "device_add",
        json_pack("{s:s,s:s,s:s}", "driver", "virtio-scsi-pci", "id", "scsi0",
                  "bus", port));
    CLEANUP_JSON json_t *r3 = hq_cmd(vm->mon, "device_add",
        hq_json("{\"driver\": \"scsi-cd\", \"id\": \"cd0\", \"drive\": \"cd0-fmt\","
                " \"bus\": \"scsi0.0\"}"));
    HQ_CHECK(r1 && r2 && r3, "cd-rom");
    return 0;
}

/* Bug: a job held its disks as indices into the agent's disk list across
 * its steps, while any query can replace that list.  Here the list
 * shrinks in front of the backed-up disk between planning and the
 * transaction; the export must still be that disk's data. */
static int
test_disks_move(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, false);
    HQ_CHECK(vm, "vm");
    HQ_CHECK(hq_qemu_start(vm) == 0, "qemu");
    if (add_cdrom(vm) < 0)
        return -1;
    HQ_CHECK(hq_qemu_hotplug(vm, "vdz", DISK_SIZE) == 0, "vdz");
    HQ_CHECK(hq_qemu_hotplug(vm, "vdy", DISK_SIZE) == 0, "vdy");
    HQ_CHECK(hq_write(vm, "vdz", 0x5a, 0, MiB) == 0 &&
             hq_write(vm, "vdy", 0x79, 0, MiB) == 0, "writes");
    HQ_CHECK(hq_inject_start(vm) == 0 && hq_agent_start(vm) == 0, "agent");
    /* Held: the scratch image's creation, the last wait before the batch
     * in which the agent builds its transaction. */
    HQ_CHECK(hq_inject_rules(vm, "hold blockdev-create 1\n") == 0, "rules");
    CLEANUP_JSON json_t *sent = json_pack("{s:s,s:{s:[s]}}", "execute", "backup-begin",
                                          "arguments", "disks", "vdz");
    HQ_CHECK(hq_send_json(vm->ctl, json_incref(sent)) == 0, "send");
    /* The proxy marks a held command with a file. */
    CLEANUP_FREE char *held = xasprintf("%s/inject.rules.held", vm->dir);
    for (double end = hq_now() + 30; access(held, F_OK) != 0; hq_sleep_ms(20))
        HQ_CHECK(hq_now() < end, "the begin did not reach its overlay");
    CLEANUP_JSON json_t *o1 = hq_cmd(vm->mon, "blockdev-open-tray",
                                     hq_json("{\"id\": \"cd0\", \"force\": true}"));
    CLEANUP_JSON json_t *o2 = hq_cmd(vm->mon, "blockdev-remove-medium",
                                     hq_json("{\"id\": \"cd0\"}"));
    HQ_CHECK(o1 && o2, "medium out");
    CLEANUP_CONN struct hq_conn *other = hq_conn_open(vm->ctl_sock, 10);
    HQ_CHECK(other, "second client");
    CLEANUP_JSON json_t *disks = hq_cmd(other, "query-disks", NULL);
    HQ_CHECK(disks && !hq_jfind(disks, "disk", "cd0"), "cd0 still listed: %s", hq_str(disks));
    HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "release");
    CLEANUP_JSON json_t *reply = hq_read_reply(vm->ctl, 60);
    HQ_CHECK(reply && json_object_get(reply, "return"), "begin: %s", hq_str(reply));
    json_t *job = json_object_get(reply, "return");
    json_t *d = json_array_get(json_object_get(job, "disks"), 0);
    HQ_CHECK(d && strcmp(hq_jstr(d, "disk"), "vdz") == 0, "job disks %s", hq_str(job));
    /* A guest write after the begin must not reach the export: the
     * fleecing job has to be on vdz, not on the disk that took its place
     * in the list. */
    HQ_CHECK(hq_write(vm, "vdz", 0x11, 0, MiB) == 0, "write after begin");
    struct nbd_handle *h = hq_nbd_open(hq_jstr(d, "uri"), NULL);
    HQ_CHECK(h, "nbd");
    uint8_t *buf = xmalloc(MiB);
    int rr = hq_nbd_read(h, buf, 0, MiB);
    bool ok = rr == 0;
    for (int64_t k = 0; ok && k < MiB; k++)
        ok = buf[k] == 0x5a;
    uint8_t first = buf[0];
    free(buf);
    hq_nbd_close(h);
    HQ_CHECK(ok, "the export of vdz holds 0x%02x, not vdz's 0x5a", first);
    HQ_CHECK(hq_backup_end(vm, job) == 0, "end");
    return hq_backup_expect_clean(vm, "after the end");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "export-clash-tree", test_export_clash },
        { "each-step-fails", test_each_step_fails },
        { "connection-lost", test_connection_lost },
        { "end-step-fails", test_end_step_fails },
        { "sigterm-begin", test_sigterm_begin },
        { "sigterm-end", test_sigterm_end },
        { "disks-move", test_disks_move },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
