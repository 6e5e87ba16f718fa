/* Agent crashes at every step: the agent is made to abort() before its
 * Nth QMP command (CKPTD_DEBUG_ABORT_AFTER=N) while it creates a
 * checkpoint, begins and ends an incremental backup with a new checkpoint,
 * and deletes a checkpoint.  After each crash a new agent on the same QMP
 * socket must, before it answers, have removed everything temporary the
 * dead one left (exports, jobs, nodes, bitmaps, scratch files), and the
 * tree must be whole: every checkpoint on every disk it was made on, each
 * with its data bitmap, and exactly one recording bitmap per disk. */
#include "tests/qemu/harness.h"

#include <stdio.h>
#include <stdlib.h>

#define MiB (1024 * 1024)

/* Sends a command; NULL (not a failure) when the agent died meanwhile. */
static json_t *
try_cmd(struct hq_conn *c, const char *cmd, json_t *args)
{
    json_t *msg = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(msg, "arguments", args);
    if (hq_send_json(c, msg) < 0)
        return NULL;
    json_t *r = hq_read_reply(c, 30);
    json_t *ret = r ? json_incref(json_object_get(r, "return")) : NULL;
    if (r && !ret)
        hq_note("%s: %s", cmd, hq_str(r));
    json_decref(r);
    return ret;
}

/* The crashing agent's script; returns true if it ran to the end. */
static bool
run_script(struct hq_vm *vm)
{
    struct hq_conn *c = vm->ctl;
    json_t *r;
    if (!(r = try_cmd(c, "checkpoint-create", json_pack("{s:s}", "name", "c2"))))
        return false;
    json_decref(r);
    hq_write(vm, "vda", 0x22, 2 * MiB, 65536);
    r = try_cmd(c, "backup-begin", json_pack("{s:s,s:{s:s}}", "incremental", "c1",
                                             "checkpoint", "name", "c3"));
    const char *id = r ? hq_jstr(r, "id") : NULL;
    json_t *end = id ? try_cmd(c, "backup-end", json_pack("{s:s}", "id", id)) : NULL;
    json_decref(r);
    if (!end)
        return false;
    json_decref(end);
    if (!(r = try_cmd(c, "checkpoint-delete", json_pack("{s:s}", "name", "c2"))))
        return false;
    json_decref(r);
    return true;
}

static int
check_no_leftovers(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        json_pack("{s:b}", "flat", 1));
    HQ_CHECK(json_array_size(ex) == 0, "exports left: %s", hq_str(ex));
    HQ_CHECK(json_array_size(jobs) == 0, "jobs left: %s", hq_str(jobs));
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const char *name = hq_jstr(n, "node-name");
        HQ_CHECK(name && strncmp(name, "ckptd-", 6) != 0, "node left: %s", name);
    }
    for (int d = 0; d < 2; d++) {
        const char *disk = d ? "vdb" : "vda";
        HQ_CHECK(hq_bitmap_count_prefix(vm, disk, "ckptd:") == 0,
                 "temporary bitmap left on %s: %s", disk, hq_bitmap_names(vm, disk));
    }
    HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 0, "scratch files left in %s", vm->dir);
    return 0;
}

/* Every checkpoint covers both disks with a usable bitmap; on each disk
 * exactly the newest checkpoint's bitmap records. */
static int
check_tree(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(json_array_size(l) >= 1, "no checkpoint left: %s", hq_str(l));
    size_t i;
    json_t *c;
    json_array_foreach(l, i, c) {
        json_t *disks = json_object_get(c, "disks");
        HQ_CHECK(json_array_size(disks) == 2, "checkpoint %s on %zu disks: %s",
                 hq_jstr(c, "name"), json_array_size(disks), hq_str(c));
        for (int d = 0; d < 2; d++) {
            const char *disk = d ? "vdb" : "vda";
            int rec = hq_bitmap_recording(vm, disk, hq_jstr(c, "name"));
            bool newest = i + 1 == json_array_size(l);
            HQ_CHECK(rec == (newest ? 1 : 0), "%s on %s: recording %d, newest %d",
                     hq_jstr(c, "name"), disk, rec, newest);
        }
    }
    return 0;
}

/* Back to the start: only c1, made now. */
static int
reset(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    const char *root = hq_jstr(json_array_get(l, 0), "name");
    if (root) {
        CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-delete",
                                        json_pack("{s:s,s:b}", "name", root,
                                                  "children", 1));
        HQ_CHECK(r, "cannot clear the tree");
    }
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "cannot create c1");
    return hq_write(vm, "vda", 0x11, 0, 65536);
}

static int
case_every_step(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(2, 64 * MiB, NULL);
    if (!vm || reset(vm) < 0 || hq_agent_stop(vm) < 0)
        return -1;
    int crashes = 0;
    for (int n = 1; n < 200 && !hq_failed(); n++) {
        char nbuf[16];
        snprintf(nbuf, sizeof nbuf, "%d", n);
        setenv("CKPTD_DEBUG_ABORT_AFTER", nbuf, 1);
        int spawned = hq_agent_spawn(vm);
        unsetenv("CKPTD_DEBUG_ABORT_AFTER");
        /* It may die during its start-up sweep: then the next agent checks. */
        bool finished = spawned == 0 && hq_agent_wait_qemu(vm, "connected", 10) == 0 &&
                        run_script(vm);
        hq_agent_kill(vm);
        if (hq_failed())
            return -1;
        if (hq_agent_start(vm) < 0 || check_no_leftovers(vm) < 0 || check_tree(vm) < 0) {
            hq_note("after a crash before QMP command %d", n);
            return -1;
        }
        if (finished) {
            hq_note("the script ran to the end after %d crash points", crashes);
            HQ_CHECK(crashes > 20, "only %d crash points were exercised", crashes);
            return hq_agent_stop(vm);
        }
        crashes++;
        if (reset(vm) < 0 || hq_agent_stop(vm) < 0)
            return -1;
    }
    hq_fail("the script never finished");
    return -1;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "crash-at-every-qmp-command", case_every_step },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
