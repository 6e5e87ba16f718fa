/* Bitmaps the agent did not make belong to someone else: they are never
 * listed as checkpoints and never changed (recording state, persistence,
 * counts) by checkpoint create/delete or an agent restart. */
#include "tests/qemu/harness.h"

#include <ctype.h>

#include <stdio.h>

#define MiB (1024 * 1024)
#define K64 (64 * 1024)

static const char *const foreign[] = { "mine", "tmp1", "off", "late",
                                       "late-off" };

/* The hand-made bitmaps of both disks: {"vda": [...], "vdb": [...]}. */
static json_t *
foreign_snapshot(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *all = hq_snapshot(vm);
    if (!all)
        return NULL;
    json_t *out = json_object();
    const char *disk;
    json_t *bms;
    json_object_foreach(all, disk, bms) {
        json_t *keep = json_array();
        for (size_t i = 0; i < ARRAY_SIZE(foreign); i++) {
            json_t *b = hq_jfind(bms, "name", foreign[i]);
            if (b)
                json_array_append(keep, b);
        }
        json_object_set_new(out, disk, keep);
    }
    return out;
}

/* No checkpoint in the list has a hand-made name. */
static int
not_listed(struct hq_vm *vm)
{
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names, "checkpoint-list");
    for (size_t i = 0; i < ARRAY_SIZE(foreign); i++) {
        CLEANUP_FREE char *pat = xasprintf(",%s,", foreign[i]);
        CLEANUP_FREE char *hay = xasprintf(",%s,", names);
        HQ_CHECK(!strstr(hay, pat), "hand-made bitmap %s listed: %s",
                 foreign[i], names);
    }
    return 0;
}

/* Runs an agent command and asserts the hand-made bitmaps did not move. */
static int
unchanged_by(struct hq_vm *vm, const char *cmd, json_t *args)
{
    CLEANUP_JSON json_t *before = foreign_snapshot(vm);
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, cmd, args);
    HQ_CHECK(r, "%s", cmd);
    CLEANUP_JSON json_t *after = foreign_snapshot(vm);
    HQ_CHECK(before && json_equal(before, after), "%s changed hand-made "
             "bitmaps: %s", cmd, hq_str(after));
    return not_listed(vm);
}

static int
expect_foreign(struct hq_vm *vm, const char *disk, const char *name,
               int persistent, int recording, int64_t count)
{
    CLEANUP_JSON json_t *b = hq_bitmap(vm, disk, name);
    HQ_CHECK(b, "%s: hand-made bitmap %s is gone", disk, name);
    HQ_CHECK(hq_jbool(b, "persistent") == persistent
             && hq_jbool(b, "recording") == recording
             && hq_jint(b, "count") == count,
             "%s/%s should be persistent=%d recording=%d count=%" PRId64
             ": %s", disk, name, persistent, recording, count, hq_str(b));
    return 0;
}

static int
test_before_agent(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, false);
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_add_bitmap(vm, "vda", "mine", true, false) == 0
             && hq_add_bitmap(vm, "vda", "tmp1", false, false) == 0
             && hq_add_bitmap(vm, "vda", "off", true, true) == 0
             && hq_add_bitmap(vm, "vdb", "mine", true, false) == 0, "add");
    HQ_CHECK(hq_write(vm, "vda", 0x01, 0, K64) == 0, "write");
    HQ_CHECK(hq_agent_start(vm) == 0, "agent");
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "hand-made bitmaps listed: %s", names);
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "checkpoints") == 0, "query-status: %s", hq_str(st));

    if (unchanged_by(vm, "checkpoint-create", json_pack("{s:s}", "name", "c1")) < 0)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0x02, MiB, K64) == 0, "write");
    if (unchanged_by(vm, "checkpoint-create", json_pack("{s:s}", "name", "c2")) < 0
        || unchanged_by(vm, "checkpoint-delete", json_pack("{s:s}", "name", "c2")) < 0
        || unchanged_by(vm, "checkpoint-delete", json_pack("{s:s}", "name", "c1")) < 0)
        return -1;
    /* They kept doing their own job throughout. */
    if (expect_foreign(vm, "vda", "mine", 1, 1, 2 * K64) < 0
        || expect_foreign(vm, "vda", "tmp1", 0, 1, 2 * K64) < 0
        || expect_foreign(vm, "vda", "off", 1, 0, 0) < 0
        || expect_foreign(vm, "vdb", "mine", 1, 1, 0) < 0)
        return -1;
    /* And only they are left once the checkpoints are gone, with the
     * chain's gone set (metadata/README.md, "Identity"). */
    CLEANUP_FREE char *left = hq_bitmap_names(vm, "vda");
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vda", "ckptd")
             == hq_bitmap_count_prefix(vm, "vda", "ckptd1:gone:")
             && hq_bitmap_count_prefix(vm, "vdb", "ckptd")
             == hq_bitmap_count_prefix(vm, "vdb", "ckptd1:gone:"),
             "agent bitmaps left: %s", left);
    return 0;
}

static int
test_after_agent(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "create c1");
    HQ_CHECK(hq_add_bitmap(vm, "vda", "late", true, false) == 0
             && hq_add_bitmap(vm, "vdb", "late-off", true, true) == 0, "add");
    HQ_CHECK(hq_write(vm, "vda", 0x01, 0, K64) == 0, "write");
    if (unchanged_by(vm, "checkpoint-create", json_pack("{s:s}", "name", "c2")) < 0)
        return -1;
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !strcmp(names, "c1,c2"), "list: %s", names);
    if (unchanged_by(vm, "checkpoint-delete", json_pack("{s:s}", "name", "c1")) < 0)
        return -1;
    /* A new agent reads the tree from QEMU and still ignores them. */
    CLEANUP_JSON json_t *before = foreign_snapshot(vm);
    HQ_CHECK(hq_agent_stop(vm) == 0 && hq_agent_start(vm) == 0, "restart");
    CLEANUP_JSON json_t *after = foreign_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "agent restart changed hand-made "
             "bitmaps: %s", hq_str(after));
    CLEANUP_FREE char *names2 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names2 && !strcmp(names2, "c2"), "list after restart: %s", names2);
    if (expect_foreign(vm, "vda", "late", 1, 1, K64) < 0
        || expect_foreign(vm, "vdb", "late-off", 1, 0, 0) < 0)
        return -1;
    return 0;
}

static int
test_name_clash(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_add_bitmap(vm, "vda", "mine", true, false) == 0, "add");
    HQ_CHECK(hq_add_bitmap(vm, "vdb", "mine", true, false) == 0, "add");
    HQ_CHECK(hq_write(vm, "vda", 0x01, 0, K64) == 0, "write");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "AlreadyExists",
        "checkpoint-create", json_pack("{s:s}", "name", "mine"));
    HQ_CHECK(r, "checkpoint-create over a hand-made bitmap");
    HQ_CHECK(strstr(hq_err_desc(r), "mine"), "desc does not name it: %s",
             hq_err_desc(r));
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    if (not_listed(vm) < 0)
        return -1;
    /* Deleting a name that is only a hand-made bitmap is NotFound, and the
     * bitmap stays. */
    CLEANUP_JSON json_t *d = hq_cmd_err(vm->ctl, "NotFound",
        "checkpoint-delete", json_pack("{s:s}", "name", "mine"));
    HQ_CHECK(d, "checkpoint-delete of a hand-made bitmap");
    CLEANUP_JSON json_t *g = hq_cmd_err(vm->ctl, "NotFound",
        "checkpoint-get", json_pack("{s:s}", "name", "mine"));
    HQ_CHECK(g, "checkpoint-get of a hand-made bitmap");
    CLEANUP_JSON json_t *after2 = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after2), "bitmaps changed: %s", hq_str(after2));
    return 0;
}

/* The name of checkpoint ckpt's record bitmap on disk, or NULL. */
static char *
record_of(struct hq_vm *vm, const char *disk, const char *ckpt)
{
    CLEANUP_JSON json_t *bms = hq_bitmaps(vm, disk);
    size_t i, lc = strlen(ckpt);
    json_t *b;
    /* ckptd1:SEQ:CTIME:NAME[:DESC[:CHAIN]]: the name is the fourth field. */
    json_array_foreach(bms, i, b) {
        const char *n = hq_jstr(b, "name"), *f = n;
        for (int k = 0; f && k < 3; k++)
            f = strchr(f, ':') ? strchr(f, ':') + 1 : NULL;
        if (strncmp(n, "ckptd1:", 7) == 0 && isdigit((unsigned char) n[7]) && f &&
            strncmp(f, ckpt, lc) == 0 && (f[lc] == ':' || f[lc] == '\0'))
            return xstrdup(n);
    }
    return NULL;
}

static int
remove_by_hand(struct hq_vm *vm, const char *disk, const char *bitmap)
{
    struct hq_disk *d = hq_vm_disk(vm, disk);
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "block-dirty-bitmap-remove",
        json_pack("{s:s,s:s}", "node", d->node, "name", bitmap));
    HQ_CHECK(r, "removing %s by hand", bitmap);
    return 0;
}

/* Between two requests another QMP client removes bitmaps of ours; the
 * agent's next change is planned on its cached tree (the block graph did
 * not change), so only the transaction can notice (its guards), and the
 * change is planned again on the tree read afresh.  First the record of
 * the newest checkpoint c2 goes: c2 is no checkpoint any more and its
 * data bitmap someone else's, left recording; c1's bitmap stopped when c2
 * was made, so no bitmap of ours saw the writes since: vda does not
 * track, and a new checkpoint after c1 would hide those writes from an
 * incremental from c1.  The create is refused, saying so; deleting c1
 * lets the chain start again.  Then both bitmaps of the newest, c3, go:
 * no checkpoint is left, and the next create starts a new one. */
static int
test_ours_removed_between(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, 64 * MiB, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(c1 && c2, "create c1, c2");
    CLEANUP_FREE char *rec2 = record_of(vm, "vda", "c2");
    HQ_CHECK(rec2, "no record of c2");
    if (remove_by_hand(vm, "vda", rec2) < 0)
        return -1;
    HQ_CHECK(hq_write(vm, "vda", 0x01, 0, K64) == 0, "write");
    CLEANUP_JSON json_t *r3 = hq_cmd_err(vm->ctl, "Unsupported", "checkpoint-create",
                                         json_pack("{s:s}", "name", "c3"));
    HQ_CHECK(r3, "create c3 after c2's record went must be refused");
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    json_t *vda = hq_jfind(disks, "disk", "vda");
    HQ_CHECK(vda && hq_jbool(vda, "tracking") == 0 && hq_jstr(vda, "reason") &&
             strstr(hq_jstr(vda, "reason"), "c1"), "vda should not track, naming c1: %s",
             hq_str(vda));
    if (expect_foreign(vm, "vda", "c2", 1, 1, K64) < 0)
        return -1;
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !strcmp(names, "c1"), "list: %s", names);
    CLEANUP_JSON json_t *d1 = hq_cmd(vm->ctl, "checkpoint-delete", json_pack("{s:s}", "name", "c1"));
    CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c3"));
    HQ_CHECK(d1 && c3 && !hq_jstr(c3, "parent"), "delete c1, then c3 starts a chain: %s",
             hq_str(c3));

    CLEANUP_FREE char *rec3 = record_of(vm, "vda", "c3");
    HQ_CHECK(rec3, "no record of c3");
    if (remove_by_hand(vm, "vda", "c3") < 0 || remove_by_hand(vm, "vda", rec3) < 0)
        return -1;
    CLEANUP_JSON json_t *c4 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c4"));
    HQ_CHECK(c4 && !hq_jstr(c4, "parent"), "create c4 after c3 went: %s", hq_str(c4));
    CLEANUP_FREE char *names2 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names2 && !strcmp(names2, "c4"), "list: %s", names2);
    /* Deleting c4, whose record is gone behind our back too: NotFound,
     * said by the agent, not QEMU's text. */
    CLEANUP_FREE char *rec4 = record_of(vm, "vda", "c4");
    HQ_CHECK(rec4, "no record of c4");
    if (remove_by_hand(vm, "vda", rec4) < 0)
        return -1;
    CLEANUP_JSON json_t *d = hq_cmd_err(vm->ctl, "NotFound", "checkpoint-delete",
                                        json_pack("{s:s}", "name", "c4"));
    HQ_CHECK(d, "delete of c4 after its record went");
    if (expect_foreign(vm, "vda", "c2", 1, 1, K64) < 0)
        return -1;
    if (remove_by_hand(vm, "vda", "c2") < 0 || remove_by_hand(vm, "vda", "c4") < 0)
        return -1;
    CLEANUP_FREE char *names3 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names3 && !strcmp(names3, ""), "list: %s", names3);
    return hq_tree_matches_qemu(vm, "at the end");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "foreign-bitmaps-before-agent", test_before_agent },
        { "foreign-bitmaps-after-agent", test_after_agent },
        { "foreign-bitmap-name-clash", test_name_clash },
        { "ours-removed-between-requests", test_ours_removed_between },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
