/* QEMU crashes and exits under the agent (issue 4, points 1, 2 and 4).
 *
 * kill-9: a checkpoint that reached the images (c1, saved by a clean quit)
 *   comes back inconsistent after QEMU is killed; one created after QEMU
 *   last started (c2) is gone and says why.  An incremental from c1 is
 *   refused, a full backup still holds the flushed guest data, deleting
 *   the broken chain clears bitmaps and records, and a new checkpoint made
 *   after the crash is consistent and exports exactly the later writes.
 * killed-during-backup: the job ends failed, its scratch files go, the
 *   agent says disconnected without burning CPU, and comes back by itself
 *   with the tree rebuilt when QEMU is started again.
 * quit-during-backup: a clean QEMU shutdown in the middle of a backup
 *   leaves images the next QEMU loads consistent: no temporary bitmap and
 *   no in-use flag in the files.
 */
#include "tests/qemu/harness.h"

#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define KiB 1024

/* ------------------------------------------------------------- helpers */

/* An NBD connection to uri (optionally asking for a meta context). */
static struct nbd_handle *
nbd_open_uri(const char *uri, const char *meta)
{
    struct nbd_handle *h = nbd_create();
    if (!h) {
        hq_fail("nbd_create: %s", nbd_get_error());
        return NULL;
    }
    if (meta && nbd_add_meta_context(h, meta) < 0) {
        hq_fail("nbd_add_meta_context %s: %s", meta, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    if (nbd_connect_uri(h, uri) < 0) {
        hq_fail("nbd_connect_uri %s: %s", uri, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    return h;
}

/* The export holds pattern at [off, off+len).  0 or -1 (hq_fail). */
static int
nbd_expect(struct nbd_handle *h, const char *what, int pattern,
           int64_t off, int64_t len)
{
    CLEANUP_FREE unsigned char *buf = xmalloc((size_t) len);
    if (nbd_pread(h, buf, (size_t) len, (uint64_t) off, 0) < 0) {
        hq_fail("%s: nbd_pread %" PRId64 "+%" PRId64 ": %s", what, off, len,
                nbd_get_error());
        return -1;
    }
    for (int64_t i = 0; i < len; i++)
        if (buf[i] != (unsigned char) pattern) {
            hq_fail("%s: byte %" PRId64 " is 0x%02x, expected 0x%02x", what,
                    off + i, buf[i], pattern & 0xff);
            return -1;
        }
    return 0;
}

/* Dirty extents of a qemu:dirty-bitmap context, merged, as "off+len,..." */
struct extents {
    char *s;
    uint64_t dirty_off, dirty_len;  /* the run being merged */
    uint64_t next;                  /* where the reply ended */
};

static void
extents_flush(struct extents *x)
{
    if (!x->dirty_len)
        return;
    char *t = xasprintf("%s%s%" PRIu64 "+%" PRIu64, x->s, *x->s ? "," : "",
                        x->dirty_off, x->dirty_len);
    free(x->s);
    x->s = t;
    x->dirty_len = 0;
}

static int
extent_cb(void *opaque, const char *meta, uint64_t offset, uint32_t *ents,
          size_t n, int *error)
{
    struct extents *x = opaque;
    (void) error;
    if (strncmp(meta, "qemu:dirty-bitmap:", 18) != 0)
        return 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (ents[i + 1] & 1) {
            if (x->dirty_len && x->dirty_off + x->dirty_len == offset)
                x->dirty_len += ents[i];
            else {
                extents_flush(x);
                x->dirty_off = offset;
                x->dirty_len = ents[i];
            }
        }
        offset += ents[i];
    }
    x->next = offset;
    return 0;
}

/* The dirty extents the export's bitmap shows over the whole disk;
 * caller frees; NULL with hq_fail. */
static char *
nbd_dirty(const char *uri, const char *bitmap)
{
    if (!uri || !bitmap) {
        hq_fail("no uri or bitmap");
        return NULL;
    }
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", bitmap);
    struct nbd_handle *h = nbd_open_uri(uri, ctx);
    if (!h)
        return NULL;
    if (nbd_can_meta_context(h, ctx) != 1) {
        hq_fail("%s: no meta context %s", uri, ctx);
        nbd_close(h);
        return NULL;
    }
    uint64_t size = (uint64_t) nbd_get_size(h);
    struct extents x = { .s = xstrdup("") };
    while (x.next < size) {
        uint64_t at = x.next;
        uint64_t chunk = size - at > (1u << 30) ? (1u << 30) : size - at;
        nbd_extent_callback cb = { .callback = extent_cb, .user_data = &x };
        if (nbd_block_status(h, chunk, at, cb, 0) < 0 || x.next <= at) {
            hq_fail("nbd_block_status at %" PRIu64 ": %s", at, nbd_get_error());
            free(x.s);
            nbd_close(h);
            return NULL;
        }
    }
    extents_flush(&x);
    nbd_close(h);
    return x.s;
}

/* utime + stime of pid in seconds, or -1. */
static double
proc_cpu(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    CLEANUP_FREE char *s = hq_read_file(path);
    char *p = s ? strrchr(s, ')') : NULL;
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* Fields after the command: state(3) ... utime(14) stime(15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2)
        return -1;
    return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

static int
check_status(struct hq_vm *vm, const char *qemu)
{
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(st && hq_jstr(st, "qemu") && strcmp(hq_jstr(st, "qemu"), qemu) == 0,
             "query-status: expected qemu=%s: %s", qemu, hq_str(st));
    return 0;
}

/* Waits for QEMU_DISCONNECTED (after QEMU went away) and for query-status
 * to agree. */
static int
wait_disconnected(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "QEMU_DISCONNECTED", 10);
    HQ_CHECK(ev, "no QEMU_DISCONNECTED event");
    return hq_agent_wait_qemu(vm, "disconnected", 5);
}

/* Starts QEMU again and waits until the agent is back on it. */
static int
restart_qemu(struct hq_vm *vm)
{
    if (hq_qemu_start(vm) < 0)
        return -1;
    CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "QEMU_CONNECTED", 15);
    HQ_CHECK(ev, "the agent did not reconnect to the new QEMU");
    return hq_agent_wait_qemu(vm, "connected", 5);
}

static int
flush(struct hq_vm *vm, const char *disk)
{
    CLEANUP_FREE char *cl = xasprintf("qemu-io -d %s/virtio-backend \"flush\"", disk);
    return hq_hmp(vm, cl);
}

/* The disk entry of a checkpoint object. */
static json_t *
ckpt_disk(json_t *ckpt, const char *disk)
{
    return hq_jfind(json_object_get(ckpt, "disks"), "disk", disk);
}

static const char *const DISKS[] = { "vda", "vdb" };

/* ---------------------------------------------------------------- cases */

static int
case_kill9(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(2, 64 * MiB, NULL);
    if (!vm)
        return -1;

    /* c1 reaches the images through a clean quit. */
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x11, 0, 64 * KiB) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x12, 0, 64 * KiB) == 0, "write");
    if (hq_qemu_quit(vm) < 0 || wait_disconnected(vm) < 0 || restart_qemu(vm) < 0)
        return -1;
    {
        CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, "c1", false);
        HQ_CHECK(g, "c1 gone after a clean restart");
        for (int d = 0; d < 2; d++)
            HQ_CHECK(hq_jbool(ckpt_disk(g, DISKS[d]), "consistent") == 1,
                     "c1 inconsistent on %s after a clean quit: %s", DISKS[d], hq_str(g));
    }

    /* c2 only lives in this QEMU; the data writes are flushed. */
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(c2, "checkpoint-create c2");
    HQ_CHECK(hq_write(vm, "vda", 0x21, 1 * MiB, 64 * KiB) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x22, 1 * MiB, 128 * KiB) == 0, "write");
    HQ_CHECK(flush(vm, "vda") == 0 && flush(vm, "vdb") == 0, "flush");
    hq_qemu_kill(vm);
    if (wait_disconnected(vm) < 0)
        return -1;
    /* The precondition, in the files: c1 flagged in-use, c2 never written. */
    for (int d = 0; d < 2; d++) {
        CLEANUP_JSON json_t *bm = hq_image_bitmaps(vm, DISKS[d]);
        json_t *b = hq_jfind(bm, "name", "c1");
        CLEANUP_FREE char *flags = xstrdup(hq_str(json_object_get(b, "flags")));
        HQ_CHECK(b && strstr(flags, "in-use"), "c1 in %s's image after the kill: %s",
                 DISKS[d], hq_str(bm));
        HQ_CHECK(!hq_jfind(bm, "name", "c2"), "c2 in %s's image: %s", DISKS[d], hq_str(bm));
    }
    if (restart_qemu(vm) < 0)
        return -1;

    /* QEMU itself says c1 is inconsistent; the agent agrees, per disk. */
    for (int d = 0; d < 2; d++) {
        CLEANUP_JSON json_t *b = hq_bitmap(vm, DISKS[d], "c1");
        HQ_CHECK(b && hq_jbool(b, "inconsistent") == 1,
                 "QEMU's c1 on %s is not inconsistent: %s", DISKS[d], hq_str(b));
        CLEANUP_JSON json_t *b2 = hq_bitmap(vm, DISKS[d], "c2");
        HQ_CHECK(!b2, "c2's bitmap survived the kill on %s: %s", DISKS[d], hq_str(b2));
    }
    {
        CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, "c1", false);
        HQ_CHECK(g, "c1 missing after the kill");
        for (int d = 0; d < 2; d++)
            HQ_CHECK(hq_jbool(ckpt_disk(g, DISKS[d]), "consistent") == 0,
                     "c1 on %s not reported inconsistent: %s", DISKS[d], hq_str(g));
        CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list", NULL);
        HQ_CHECK(json_array_size(l) == 1, "list after the kill: %s", hq_str(l));
        for (int d = 0; d < 2; d++)
            HQ_CHECK(hq_jbool(ckpt_disk(json_array_get(l, 0), DISKS[d]), "consistent") == 0,
                     "checkpoint-list: c1 on %s not inconsistent: %s", DISKS[d], hq_str(l));
    }
    {
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotFound", "checkpoint-get",
                                            json_pack("{s:s}", "name", "c2"));
        HQ_CHECK(r, "checkpoint-get c2 after the kill");
        const char *desc = hq_err_desc(r);
        HQ_CHECK(strstr(desc, "lost") && strstr(desc, "full backup"),
                 "c2 NotFound does not say it was lost / a full backup is needed: %s", desc);
    }
    {
        CLEANUP_JSON json_t *before = hq_snapshot(vm);
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Inconsistent", "backup-begin",
                                            json_pack("{s:s}", "incremental", "c1"));
        HQ_CHECK(r, "incremental from the inconsistent c1");
        HQ_CHECK(strstr(hq_err_desc(r), "full backup"),
                 "Inconsistent without 'full backup': %s", hq_err_desc(r));
        CLEANUP_JSON json_t *after = hq_snapshot(vm);
        HQ_CHECK(json_equal(before, after), "a refused backup changed bitmaps: %s",
                 hq_str(after));
        HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 0, "a refused backup left scratch files");
    }
    {
        /* An incremental from the lost c2 says lost, too. */
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotFound", "backup-begin",
                                            json_pack("{s:s}", "incremental", "c2"));
        HQ_CHECK(r && strstr(hq_err_desc(r), "full backup"),
                 "incremental from the lost c2: %s", hq_err_desc(r));
    }

    /* A full backup holds everything flushed before the kill. */
    {
        CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin", json_object());
        HQ_CHECK(job, "full backup after the kill");
        const char *id = hq_jstr(job, "id");
        HQ_CHECK(id && !json_object_get(job, "incremental"), "job: %s", hq_str(job));
        for (int d = 0; d < 2; d++) {
            json_t *jd = hq_jfind(json_object_get(job, "disks"), "disk", DISKS[d]);
            const char *uri = hq_jstr(jd, "uri");
            HQ_CHECK(uri, "no uri for %s: %s", DISKS[d], hq_str(job));
            struct nbd_handle *h = nbd_open_uri(uri, NULL);
            HQ_CHECK(h, "connect %s", uri);
            int r = nbd_expect(h, DISKS[d], d ? 0x12 : 0x11, 0, 64 * KiB);
            if (!r)
                r = nbd_expect(h, DISKS[d], d ? 0x22 : 0x21, 1 * MiB, d ? 128 * KiB : 64 * KiB);
            if (!r)
                r = nbd_expect(h, DISKS[d], 0, 2 * MiB, 256 * KiB);
            nbd_close(h);
            if (r)
                return -1;
        }
        CLEANUP_JSON json_t *e = hq_cmd(vm->ctl, "backup-end", json_pack("{s:s}", "id", id));
        HQ_CHECK(e, "backup-end");
        CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", 5);
        HQ_CHECK(ev && strcmp(hq_jstr(json_object_get(ev, "data"), "status"), "completed") == 0,
                 "BACKUP_END: %s", hq_str(ev));
        HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 0, "scratch files left after backup-end");
    }

    /* The broken chain goes at once, bitmaps and records too. */
    {
        CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-delete",
                                        json_pack("{s:s,s:b}", "name", "c1",
                                                  "children", 1));
        HQ_CHECK(r, "checkpoint-delete c1 children");
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        HQ_CHECK(names && !*names, "checkpoints left: %s", names);
        /* Only the chain's gone set stays (metadata/README.md). */
        for (int d = 0; d < 2; d++) {
            CLEANUP_JSON json_t *all = hq_bitmaps(vm, DISKS[d]);
            HQ_CHECK(all && json_array_size(all) ==
                     (size_t) hq_bitmap_count_prefix(vm, DISKS[d], "ckptd1:gone:"),
                     "bitmaps left on %s: %s", DISKS[d], hq_str(all));
        }
    }

    /* c3 after the crash: consistent, recorded, exact. */
    {
        CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-create",
                                         json_pack("{s:s}", "name", "c3"));
        HQ_CHECK(c3, "checkpoint-create c3");
        for (int d = 0; d < 2; d++) {
            HQ_CHECK(hq_jbool(ckpt_disk(c3, DISKS[d]), "consistent") == 1,
                     "c3 on %s: %s", DISKS[d], hq_str(c3));
            HQ_CHECK(hq_bitmap_recording(vm, DISKS[d], "c3") == 1,
                     "c3 not recording on %s", DISKS[d]);
            HQ_CHECK(hq_bitmap_count_prefix(vm, DISKS[d], "ckptd1:") >= 1,
                     "no record for c3 on %s", DISKS[d]);
            CLEANUP_JSON json_t *b = hq_bitmap(vm, DISKS[d], "c3");
            HQ_CHECK(hq_jbool(b, "persistent") == 1 && hq_jbool(b, "inconsistent") != 1,
                     "c3 bitmap on %s: %s", DISKS[d], hq_str(b));
        }
    }
    HQ_CHECK(hq_write(vm, "vda", 0x31, 3 * MiB, 64 * KiB) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x32, 5 * MiB, 128 * KiB) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x33, 7 * MiB, 64 * KiB) == 0, "write");
    {
        CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                          json_pack("{s:s}", "incremental", "c3"));
        HQ_CHECK(job, "incremental from c3");
        const char *expect[2] = { "3145728+65536", "5242880+131072,7340032+65536" };
        for (int d = 0; d < 2; d++) {
            json_t *jd = hq_jfind(json_object_get(job, "disks"), "disk", DISKS[d]);
            const char *uri = hq_jstr(jd, "uri"), *bm = hq_jstr(jd, "bitmap");
            HQ_CHECK(uri && bm, "disk %s of the job: %s", DISKS[d], hq_str(job));
            CLEANUP_FREE char *dirty = nbd_dirty(uri, bm);
            HQ_CHECK(dirty, "dirty extents of %s", DISKS[d]);
            HQ_CHECK(strcmp(dirty, expect[d]) == 0, "%s exports dirty %s, expected %s",
                     DISKS[d], dirty, expect[d]);
            struct nbd_handle *h = nbd_open_uri(uri, NULL);
            HQ_CHECK(h, "connect %s", uri);
            int r = d ? nbd_expect(h, "vdb", 0x32, 5 * MiB, 128 * KiB)
                      : nbd_expect(h, "vda", 0x31, 3 * MiB, 64 * KiB);
            if (!r && d)
                r = nbd_expect(h, "vdb", 0x33, 7 * MiB, 64 * KiB);
            nbd_close(h);
            if (r)
                return -1;
        }
        CLEANUP_JSON json_t *e = hq_cmd(vm->ctl, "backup-end",
                                        json_pack("{s:s}", "id", hq_jstr(job, "id")));
        HQ_CHECK(e, "backup-end");
        for (int d = 0; d < 2; d++)
            HQ_CHECK(hq_bitmap_count_prefix(vm, DISKS[d], "ckptd:") == 0,
                     "temporary bitmap left on %s", DISKS[d]);
    }
    return 0;
}

static int
case_killed_during_backup(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(2, 64 * MiB, NULL);
    if (!vm)
        return -1;
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x41, 0, 64 * KiB) == 0, "write");
    if (hq_qemu_quit(vm) < 0 || wait_disconnected(vm) < 0 || restart_qemu(vm) < 0)
        return -1;

    HQ_CHECK(hq_write(vm, "vda", 0x42, 1 * MiB, 64 * KiB) == 0, "write");
    HQ_CHECK(flush(vm, "vda") == 0, "flush");
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                      json_pack("{s:s,s:{s:s}}", "incremental", "c1",
                                                "checkpoint", "name", "c2"));
    HQ_CHECK(job, "backup-begin incremental c1 + c2");
    const char *id = hq_jstr(job, "id");
    HQ_CHECK(id, "job without an id: %s", hq_str(job));
    HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 2, "expected 2 scratch files, found %d",
             hq_count_scratch(vm->dir, NULL));

    hq_qemu_kill(vm);
    {
        CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", 10);
        HQ_CHECK(ev, "no BACKUP_END after QEMU was killed");
        json_t *data = json_object_get(ev, "data");
        HQ_CHECK(hq_jstr(data, "id") && strcmp(hq_jstr(data, "id"), id) == 0 &&
                 hq_jstr(data, "status") && strcmp(hq_jstr(data, "status"), "failed") == 0,
                 "BACKUP_END: %s", hq_str(ev));
        hq_note("BACKUP_END error: %s", hq_jstr(data, "error") ? hq_jstr(data, "error") : "(none)");
    }
    if (wait_disconnected(vm) < 0)
        return -1;
    HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 0, "%d scratch files left after QEMU died",
             hq_count_scratch(vm->dir, NULL));
    {
        CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
        HQ_CHECK(st && hq_jint(st, "jobs") == 0, "jobs after QEMU died: %s", hq_str(st));
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotConnected", "checkpoint-create",
                                            json_pack("{s:s}", "name", "cx"));
        HQ_CHECK(r, "checkpoint-create while QEMU is down");
    }

    /* No busy loop while QEMU is away. */
    double cpu0 = proc_cpu(vm->agent_pid), t0 = hq_now();
    hq_sleep_ms(3000);
    double cpu1 = proc_cpu(vm->agent_pid), t1 = hq_now();
    HQ_CHECK(cpu0 >= 0 && cpu1 >= 0, "cannot read /proc/%d/stat", (int) vm->agent_pid);
    hq_note("agent CPU while QEMU was down: %.2f s in %.1f s", cpu1 - cpu0, t1 - t0);
    HQ_CHECK(cpu1 - cpu0 < 0.3, "the agent used %.2f s of CPU in %.1f s while QEMU "
             "was down", cpu1 - cpu0, t1 - t0);
    if (check_status(vm, "disconnected") < 0)
        return -1;

    if (restart_qemu(vm) < 0)
        return -1;
    {
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        HQ_CHECK(names && strcmp(names, "c1") == 0, "tree after restart: %s", names);
        CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, "c1", false);
        HQ_CHECK(hq_jbool(ckpt_disk(g, "vda"), "consistent") == 0,
                 "c1 on vda should be inconsistent after the kill: %s", hq_str(g));
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotFound", "checkpoint-get",
                                            json_pack("{s:s}", "name", "c2"));
        HQ_CHECK(r && strstr(hq_err_desc(r), "lost"), "c2: %s", hq_err_desc(r));
        for (int d = 0; d < 2; d++)
            HQ_CHECK(hq_bitmap_count_prefix(vm, DISKS[d], "ckptd:") == 0,
                     "temporary bitmap on %s in the new QEMU", DISKS[d]);
        CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
        HQ_CHECK(json_array_size(ex) == 0, "exports: %s", hq_str(ex));
    }
    /* A new backup works: full, with a new checkpoint. */
    {
        CLEANUP_JSON json_t *j2 = hq_cmd(vm->ctl, "backup-begin",
                                         json_pack("{s:{s:s}}", "checkpoint", "name", "c3"));
        HQ_CHECK(j2, "backup-begin after the restart");
        json_t *jd = hq_jfind(json_object_get(j2, "disks"), "disk", "vda");
        const char *uri = hq_jstr(jd, "uri");
        HQ_CHECK(uri, "job: %s", hq_str(j2));
        struct nbd_handle *h = nbd_open_uri(uri, NULL);
        HQ_CHECK(h, "connect");
        int r = nbd_expect(h, "vda", 0x41, 0, 64 * KiB);
        if (!r)
            r = nbd_expect(h, "vda", 0x42, 1 * MiB, 64 * KiB);
        nbd_close(h);
        if (r)
            return -1;
        CLEANUP_JSON json_t *e = hq_cmd(vm->ctl, "backup-end",
                                        json_pack("{s:s}", "id", hq_jstr(j2, "id")));
        HQ_CHECK(e, "backup-end");
        CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, "c3", false);
        HQ_CHECK(g && hq_jbool(ckpt_disk(g, "vda"), "consistent") == 1, "c3: %s", hq_str(g));
        HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 0, "scratch files left");
    }
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* In the image file: no ckptd: temporary bitmap, nothing flagged in-use. */
static int
check_image_clean(struct hq_vm *vm, const char *disk, const char *want)
{
    CLEANUP_JSON json_t *bm = hq_image_bitmaps(vm, disk);
    HQ_CHECK(bm, "qemu-img info %s", disk);
    size_t i;
    json_t *b;
    const char *names_v[64];
    size_t nnames = 0;
    json_array_foreach(bm, i, b) {
        const char *n = hq_jstr(b, "name");
        HQ_CHECK(n && strncmp(n, "ckptd:", 6) != 0, "temporary bitmap %s in %s's image",
                 n, disk);
        size_t k;
        json_t *f;
        json_array_foreach(json_object_get(b, "flags"), k, f)
            HQ_CHECK(!json_is_string(f) || strcmp(json_string_value(f), "in-use") != 0,
                     "bitmap %s in %s's image is in-use: %s", n, disk, hq_str(bm));
        if (strncmp(n, "ckptd", 5) != 0 && nnames < ARRAY_SIZE(names_v))
            names_v[nnames++] = n;
    }
    /* The order in the file is QEMU's business: compare sorted. */
    qsort(names_v, nnames, sizeof names_v[0], cmp_str);
    CLEANUP_FREE char *names = xstrdup("");
    for (size_t k = 0; k < nnames; k++) {
        char *t = xasprintf("%s%s%s", names, k ? "," : "", names_v[k]);
        free(names);
        names = t;
    }
    HQ_CHECK(strcmp(names, want) == 0, "%s's image holds bitmaps %s, expected %s",
             disk, names, want);
    return 0;
}

static int
case_quit_during_backup(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_with_agent(2, 64 * MiB, NULL);
    if (!vm)
        return -1;
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x51, 0, 64 * KiB) == 0, "write");
    HQ_CHECK(hq_write(vm, "vdb", 0x52, 0, 64 * KiB) == 0, "write");
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                      json_pack("{s:s,s:{s:s}}", "incremental", "c1",
                                                "checkpoint", "name", "c2"));
    HQ_CHECK(job, "backup-begin");
    HQ_CHECK(hq_write(vm, "vda", 0x53, 1 * MiB, 64 * KiB) == 0, "write");
    /* A client holds the export open, as a backup application would. */
    json_t *jd = hq_jfind(json_object_get(job, "disks"), "disk", "vda");
    struct nbd_handle *h = hq_jstr(jd, "uri") ? nbd_open_uri(hq_jstr(jd, "uri"), NULL) : NULL;
    HQ_CHECK(h, "connect to the export: %s", hq_str(job));

    if (hq_qemu_quit(vm) < 0) {
        nbd_close(h);
        return -1;
    }
    nbd_close(h);
    {
        CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", 10);
        HQ_CHECK(ev, "no BACKUP_END after QEMU quit");
        const char *st = hq_jstr(json_object_get(ev, "data"), "status");
        HQ_CHECK(st && strcmp(st, "failed") == 0, "BACKUP_END after quit: %s", hq_str(ev));
        /* README "Failure behaviour": failed ("QEMU shut down during the
         * backup").  Checked last so the rest of the case still runs. */
        const char *why = hq_jstr(json_object_get(ev, "data"), "error");
        if (!why || !strstr(why, "shut down"))
            hq_fail("BACKUP_END after a clean quit does not say QEMU shut down: %s",
                    why ? why : "(no error)");
    }
    if (wait_disconnected(vm) < 0)
        return -1;
    HQ_CHECK(hq_count_scratch(vm->dir, NULL) == 0, "scratch files left after quit");
    for (int d = 0; d < 2; d++)
        if (check_image_clean(vm, DISKS[d], "c1,c2") < 0)
            return -1;

    if (restart_qemu(vm) < 0)
        return -1;
    {
        CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "checkpoint-list", NULL);
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        HQ_CHECK(names && strcmp(names, "c1,c2") == 0, "tree after the quit: %s", names);
        size_t i;
        json_t *c;
        json_array_foreach(l, i, c)
            for (int d = 0; d < 2; d++)
                HQ_CHECK(hq_jbool(ckpt_disk(c, DISKS[d]), "consistent") == 1,
                         "%s on %s inconsistent after a clean quit: %s",
                         hq_jstr(c, "name"), DISKS[d], hq_str(c));
        for (int d = 0; d < 2; d++) {
            CLEANUP_JSON json_t *all = hq_bitmaps(vm, DISKS[d]);
            json_t *b;
            json_array_foreach(all, i, b)
                HQ_CHECK(hq_jbool(b, "inconsistent") != 1,
                         "bitmap on %s loaded inconsistent: %s", DISKS[d], hq_str(b));
            HQ_CHECK(hq_bitmap_recording(vm, DISKS[d], "c2") == 1 &&
                     hq_bitmap_recording(vm, DISKS[d], "c1") == 0,
                     "recording flags on %s: %s", DISKS[d], hq_str(all));
        }
    }
    /* And usable: the write made after backup-begin is in c2's bitmap. */
    {
        CLEANUP_JSON json_t *j2 = hq_cmd(vm->ctl, "backup-begin",
                                         json_pack("{s:s}", "incremental", "c2"));
        HQ_CHECK(j2, "incremental from c2 after the restart");
        json_t *d2 = hq_jfind(json_object_get(j2, "disks"), "disk", "vda");
        CLEANUP_FREE char *dirty = nbd_dirty(hq_jstr(d2, "uri"), hq_jstr(d2, "bitmap"));
        HQ_CHECK(dirty && strcmp(dirty, "1048576+65536") == 0,
                 "vda dirty since c2: %s", dirty);
        CLEANUP_JSON json_t *e = hq_cmd(vm->ctl, "backup-end",
                                        json_pack("{s:s}", "id", hq_jstr(j2, "id")));
        HQ_CHECK(e, "backup-end");
    }
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "kill9", case_kill9 },
        { "killed-during-backup", case_killed_during_backup },
        { "quit-during-backup", case_quit_during_backup },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
