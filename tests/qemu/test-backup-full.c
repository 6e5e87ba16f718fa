/* Full pull backups: the export is the disk frozen at backup-begin while
 * the guest keeps writing (bytes compared with a shadow model of every
 * write), read-only, listed by query-backup, announced by events to every
 * client, and gone without a trace after backup-end; one backup per disk,
 * several disks in separate backups sharing one NBD server. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <sys/stat.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define K64 (64 * KiB)
#define DISK_SIZE (16 * MiB)

/* What the guest wrote where, per disk: the disk's contents as the test
 * expects them (zero where nothing was written). */
struct model {
    const char *disk;
    uint8_t *data;
};

static void
model_free(struct model *m)
{
    free(m->data);
}
#define CLEANUP_MODEL __attribute__((cleanup(model_free)))

static struct model
model_new(const char *disk)
{
    return (struct model) { disk, xcalloc(1, DISK_SIZE) };
}

static int
mwrite(struct hq_vm *vm, struct model *m, int pat, int64_t off, int64_t len)
{
    HQ_CHECK(hq_write(vm, m->disk, pat, off, len) == 0, "write %s 0x%02x "
             "%" PRId64 "+%" PRId64, m->disk, pat, off, len);
    memset(m->data + off, pat, (size_t) len);
    return 0;
}

static const char *
uri_of(json_t *job, const char *disk)
{
    return hq_jstr(hq_jfind(json_object_get(job, "disks"), "disk", disk), "uri");
}

/* Reads the whole export of disk in job and compares it with want. */
static int
expect_export(json_t *job, const char *disk, const uint8_t *want,
              const char *what)
{
    const char *uri = uri_of(job, disk);
    HQ_CHECK(uri, "no uri for %s in %s", disk, hq_str(job));
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, NULL);
    HQ_CHECK(h, "connect %s", uri);
    HQ_CHECK(nbd_get_size(h) == DISK_SIZE, "%s: export size %" PRId64,
             uri, nbd_get_size(h));
    CLEANUP_FREE uint8_t *got = xmalloc(DISK_SIZE);
    HQ_CHECK(hq_nbd_read(h, got, 0, DISK_SIZE) == 0, "read %s", uri);
    int64_t d = hq_first_diff(got, want, DISK_SIZE);
    HQ_CHECK(d < 0, "%s (%s): byte %" PRId64 " is 0x%02x, want 0x%02x", disk,
             what, d, got[d < 0 ? 0 : d], want[d < 0 ? 0 : d]);
    return 0;
}

/* hq_backup_expect_clean, and no job in query-status. */
static int
expect_clean(struct hq_vm *vm, const char *when)
{
    if (hq_backup_expect_clean(vm, when) < 0)
        return -1;
    CLEANUP_JSON json_t *st = hq_cmd(vm->ctl, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "jobs") == 0, "%s, query-status: %s", when, hq_str(st));
    return 0;
}

/* Pattern A, backup-begin, pattern B over part of A and over untouched
 * space while the export is being read: the export is all A. */
static int
test_point_in_time(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_MODEL struct model m = model_new("vda");
    if (mwrite(vm, &m, 0xa1, 0, 4 * MiB) < 0 ||
        mwrite(vm, &m, 0xa2, 8 * MiB, 512 * KiB) < 0)
        return -1;
    CLEANUP_FREE uint8_t *at_begin = xmalloc(DISK_SIZE);
    memcpy(at_begin, m.data, DISK_SIZE);

    CLEANUP_JSON json_t *job = hq_backup_begin(vm, NULL);
    HQ_CHECK(job, "backup-begin");
    /* The Backup job object of a full backup without a checkpoint. */
    CLEANUP_FREE char *sock = hq_nbd_sock(vm);
    CLEANUP_FREE char *want_uri = xasprintf("nbd+unix:///vda?socket=%s", sock);
    const char *id = hq_jstr(job, "id");
    json_t *disks = json_object_get(job, "disks");
    json_t *d0 = json_array_get(disks, 0);
    HQ_CHECK(id && strncmp(id, "backup-", 7) == 0, "id: %s", hq_str(job));
    HQ_CHECK(strcmp(hq_jstr(job, "mode") ?: "", "pull") == 0 &&
             strcmp(hq_jstr(job, "status") ?: "", "running") == 0,
             "mode/status: %s", hq_str(job));
    HQ_CHECK(!json_object_get(job, "incremental") &&
             !json_object_get(job, "checkpoint"), "full backup: %s", hq_str(job));
    HQ_CHECK(json_array_size(disks) == 1, "disks: %s", hq_str(job));
    HQ_CHECK(strcmp(hq_jstr(d0, "disk") ?: "", "vda") == 0 &&
             strcmp(hq_jstr(d0, "export") ?: "", "vda") == 0 &&
             hq_jint(d0, "size") == DISK_SIZE && !json_object_get(d0, "bitmap"),
             "disk entry: %s", hq_str(d0));
    HQ_CHECK(strcmp(hq_jstr(d0, "uri") ?: "", want_uri) == 0,
             "uri %s, want %s", hq_jstr(d0, "uri"), want_uri);
    struct stat sb;
    HQ_CHECK(stat(sock, &sb) == 0 && (sb.st_mode & 0077) == 0,
             "NBD socket %s mode %o", sock, (unsigned) sb.st_mode & 0777);

    /* Read the first half, let the guest write, read everything. */
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(want_uri, "base:allocation");
    HQ_CHECK(h, "connect");
    CLEANUP_FREE uint8_t *got = xmalloc(DISK_SIZE);
    HQ_CHECK(hq_nbd_read(h, got, 0, DISK_SIZE / 2) == 0, "read");
    if (mwrite(vm, &m, 0xb1, 1 * MiB, 2 * MiB) < 0 ||        /* over A */
        mwrite(vm, &m, 0xb2, 10 * MiB, 1 * MiB) < 0 ||       /* over zeros */
        mwrite(vm, &m, 0xb3, 8 * MiB + 256 * KiB, 4 * KiB) < 0)
        return -1;
    HQ_CHECK(hq_nbd_read(h, got + DISK_SIZE / 2, DISK_SIZE / 2, DISK_SIZE / 2) == 0,
             "read");
    int64_t d = hq_first_diff(got, at_begin, DISK_SIZE);
    HQ_CHECK(d < 0, "export byte %" PRId64 " is 0x%02x, was 0x%02x at "
             "backup-begin", d, got[d < 0 ? 0 : d], at_begin[d < 0 ? 0 : d]);
    /* Read again after the writes: the first half too is still A. */
    HQ_CHECK(hq_nbd_read(h, got, 0, DISK_SIZE) == 0, "read");
    d = hq_first_diff(got, at_begin, DISK_SIZE);
    HQ_CHECK(d < 0, "re-read: export byte %" PRId64 " changed to 0x%02x", d,
             got[d < 0 ? 0 : d]);

    /* base:allocation never calls data zero, and reports the space never
     * written as zero (what a pull client skips). */
    int64_t ng = DISK_SIZE / K64;
    CLEANUP_FREE uint8_t *zero = xmalloc((size_t) ng);
    HQ_CHECK(hq_nbd_map(h, "base:allocation", DISK_SIZE, K64,
                        LIBNBD_STATE_ZERO, true, zero) == 0, "block status");
    for (int64_t g = 0; g < ng; g++) {
        bool data = false;
        for (int64_t i = g * K64; i < (g + 1) * K64 && !data; i++)
            data = at_begin[i] != 0;
        HQ_CHECK(!(zero[g] && data), "base:allocation says cluster %" PRId64
                 " is zero, it holds data", g);
    }
    HQ_CHECK(zero[12 * MiB / K64] && zero[ng - 1],
             "base:allocation: never-written space not reported as zero");

    /* Read-only: a write through the export fails, nothing changes. */
    HQ_CHECK(nbd_is_read_only(h) == 1, "export not flagged read-only");
    uint8_t junk[4096];
    memset(junk, 0xee, sizeof junk);
    HQ_CHECK(nbd_pwrite(h, junk, sizeof junk, 0, 0) == -1,
             "a write through the export succeeded");
    HQ_CHECK(hq_nbd_read(h, got, 0, DISK_SIZE) == 0, "read");
    HQ_CHECK(hq_first_diff(got, at_begin, DISK_SIZE) < 0, "export changed");
    hq_nbd_close(h);
    h = NULL;
    if (hq_backup_end(vm, job) < 0 || expect_clean(vm, "after backup-end") < 0)
        return -1;

    /* A second full backup sees the disk as it is now: B where written. */
    CLEANUP_JSON json_t *job2 = hq_backup_begin(vm, NULL);
    HQ_CHECK(job2, "second backup-begin");
    HQ_CHECK(strcmp(hq_jstr(job2, "id") ?: "", id) != 0, "same id again: %s",
             hq_str(job2));
    if (expect_export(job2, "vda", m.data, "second full backup") < 0 ||
        hq_backup_end(vm, job2) < 0 || expect_clean(vm, "after the second backup-end") < 0)
        return -1;
    return 0;
}

/* query-backup with and without id; BACKUP_BEGIN / BACKUP_END reach a
 * second client; query-status counts the job. */
static int
test_query_events(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_CONN struct hq_conn *c2 = hq_conn_open(vm->ctl_sock, 5);
    HQ_CHECK(c2, "second client");
    CLEANUP_JSON json_t *l0 = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(json_is_array(l0) && json_array_size(l0) == 0,
             "query-backup before: %s", hq_str(l0));
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, NULL);
    HQ_CHECK(job, "backup-begin");
    const char *id = hq_jstr(job, "id");
    CLEANUP_JSON json_t *ev = hq_wait_event(c2, "BACKUP_BEGIN", 5);
    HQ_CHECK(ev, "no BACKUP_BEGIN on the second client");
    HQ_CHECK(strcmp(hq_jstr(json_object_get(ev, "data"), "id") ?: "", id) == 0,
             "BACKUP_BEGIN data: %s", hq_str(ev));
    HQ_CHECK(json_object_get(ev, "timestamp"), "no timestamp: %s", hq_str(ev));
    CLEANUP_JSON json_t *l = hq_cmd(c2, "query-backup", NULL);
    HQ_CHECK(json_is_array(l) && json_array_size(l) == 1 &&
             json_equal(json_array_get(l, 0), job),
             "query-backup: %s, begin returned %s", hq_str(l), hq_str(job));
    CLEANUP_JSON json_t *one = hq_cmd(c2, "query-backup",
                                      json_pack("{s:s}", "id", id));
    HQ_CHECK(json_equal(one, job), "query-backup id: %s", hq_str(one));
    CLEANUP_JSON json_t *st = hq_cmd(c2, "query-status", NULL);
    HQ_CHECK(hq_jint(st, "jobs") == 1, "query-status: %s", hq_str(st));
    if (hq_backup_end(vm, job) < 0)
        return -1;
    CLEANUP_JSON json_t *ev2 = hq_wait_event(c2, "BACKUP_END", 5);
    HQ_CHECK(ev2, "no BACKUP_END on the second client");
    json_t *data = json_object_get(ev2, "data");
    HQ_CHECK(strcmp(hq_jstr(data, "id") ?: "", id) == 0 &&
             strcmp(hq_jstr(data, "status") ?: "", "completed") == 0 &&
             !json_object_get(data, "error"), "BACKUP_END data: %s", hq_str(ev2));
    /* The client that ended it gets it too. */
    CLEANUP_JSON json_t *ev3 = hq_wait_event(vm->ctl, "BACKUP_END", 5);
    HQ_CHECK(ev3, "no BACKUP_END on the first client");
    CLEANUP_JSON json_t *ev4 = hq_wait_event(c2, "BACKUP_END", 0.3);
    HQ_CHECK(!ev4, "a second BACKUP_END: %s", hq_str(ev4));
    return expect_clean(vm, "after backup-end");
}

/* Every kind of temporary object exists during an incremental backup with
 * a new checkpoint on two disks, with an NBD client still connected at
 * backup-end; afterwards none is left and the checkpoints are intact. */
static int
test_end_leaves_nothing(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *sd = hq_scratch_dir(vm);
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    HQ_CHECK(hq_write(vm, "vda", 0x11, 0, K64) == 0 &&
             hq_write(vm, "vdb", 0x22, MiB, 2 * K64) == 0, "writes");
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{\"incremental\": \"c1\", "
                                                   "\"checkpoint\": {\"name\": \"c2\"}}");
    HQ_CHECK(job, "backup-begin");
    const char *id = hq_jstr(job, "id");
    /* While it runs: exports, jobs, nodes, bitmaps, files, the server. */
    CLEANUP_FREE char *during = hq_backup_leftovers(vm, sd);
    HQ_CHECK(during, "nothing to see during the backup");
    /* The fleecing job and its filter, or the agent's own filter and
     * the view over it (job-fleece.c), where QEMU offers that. */
    bool own = strcmp(hq_jstr(job, "fleecing") ?: "", "filter") == 0;
    const char *expect[] = { "export", own ? "node ckptd-a" : "\"type\":\"backup\"",
                             "node ckptd-s", "node ckptd-f",
                             own ? "node ckptd-w" : "node ckptd-c", "ckptd:",
                             "-vda.qcow2", "-vdb.qcow2", "NBD server" };
    for (size_t i = 0; i < ARRAY_SIZE(expect); i++)
        HQ_CHECK(strstr(during, expect[i]), "during the backup, no '%s' in: %s",
                 expect[i], during);
    CLEANUP_FREE char *f = hq_scratch_file(sd, id, "vda");
    struct stat sb;
    HQ_CHECK(f && stat(f, &sb) == 0 && (sb.st_mode & 0077) == 0,
             "scratch file %s (mode %o)", f, (unsigned) sb.st_mode & 0777);
    HQ_CLEANUP_NBD struct nbd_handle *ha = hq_nbd_open(uri_of(job, "vda"), NULL);
    HQ_CLEANUP_NBD struct nbd_handle *hb = hq_nbd_open(uri_of(job, "vdb"), NULL);
    HQ_CHECK(ha && hb, "connect");
    if (hq_backup_end(vm, job) < 0 || expect_clean(vm, "after backup-end with clients "
                                                   "connected") < 0)
        return -1;
    char buf[512];
    HQ_CHECK(nbd_pread(ha, buf, sizeof buf, 0, 0) == -1,
             "a read from an ended export succeeded");
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1,c2") == 0, "checkpoints: %s", names);
    for (int i = 0; i < 2; i++) {
        const char *disk = i ? "vdb" : "vda";
        HQ_CHECK(hq_bitmap_recording(vm, disk, "c1") == 0 &&
                 hq_bitmap_recording(vm, disk, "c2") == 1,
                 "%s: c1/c2 bitmaps", disk);
        HQ_CHECK(hq_bitmap_dirty(vm, disk, "c1") == (i ? 2 : 1) * K64,
                 "%s: c1 count %" PRId64, disk, hq_bitmap_dirty(vm, disk, "c1"));
        HQ_CHECK(hq_bitmap_dirty(vm, disk, "c2") == 0, "%s: c2 count", disk);
    }
    return 0;
}

/* One backup per disk: Busy for a second one on the same disk. */
static int
test_busy(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, "{\"disks\": [\"vda\"]}");
    HQ_CHECK(job, "backup-begin vda");
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    CLEANUP_JSON json_t *r1 = hq_cmd_err(vm->ctl, "Busy", "backup-begin",
                                         json_pack("{s:[s]}", "disks", "vda"));
    HQ_CHECK(r1, "second backup of vda");
    CLEANUP_JSON json_t *r2 = hq_cmd_err(vm->ctl, "Busy", "backup-begin", NULL);
    HQ_CHECK(r2, "backup of every disk while vda is busy");
    CLEANUP_JSON json_t *r3 = hq_cmd_err(vm->ctl, "Busy", "backup-begin",
        json_pack("{s:[s,s]}", "disks", "vdb", "vda"));
    HQ_CHECK(r3, "backup of vdb and vda");
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "bitmaps changed: %s", hq_str(after));
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(json_array_size(l) == 1, "query-backup: %s", hq_str(l));
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        json_pack("{s:b}", "flat", 1));
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const char *nn = hq_jstr(n, "node-name");
        /* Only the running job's own nodes (its number, disk 0). */
        const char *num = strchr(hq_jstr(job, "id"), '-') + 1;
        CLEANUP_FREE char *mine = xasprintf("%s-0", num);
        HQ_CHECK(!nn || strncmp(nn, "ckptd-", 6) != 0 ||
                 strstr(nn, mine), "a refused begin left node %s", nn);
    }
    if (hq_backup_end(vm, job) < 0)
        return -1;
    /* Once it has ended the disk is free again. */
    CLEANUP_JSON json_t *job2 = hq_backup_begin(vm, "{\"disks\": [\"vda\"]}");
    HQ_CHECK(job2, "backup-begin vda after the end");
    if (hq_backup_end(vm, job2) < 0)
        return -1;
    return expect_clean(vm, "at the end");
}

static int
test_not_found(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *r1 = hq_cmd_err(vm->ctl, "NotFound", "query-backup",
                                         json_pack("{s:s}", "id", "backup-1"));
    HQ_CHECK(r1, "query-backup of no job");
    CLEANUP_JSON json_t *r2 = hq_cmd_err(vm->ctl, "NotFound", "backup-end",
                                         json_pack("{s:s}", "id", "backup-1"));
    HQ_CHECK(r2, "backup-end of no job");
    CLEANUP_JSON json_t *r3 = hq_cmd_err(vm->ctl, "NotFound", "backup-begin",
                                         json_pack("{s:[s]}", "disks", "vdz"));
    HQ_CHECK(r3, "backup of no disk");
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, NULL);
    HQ_CHECK(job, "backup-begin");
    CLEANUP_JSON json_t *r4 = hq_cmd_err(vm->ctl, "NotFound", "backup-end",
                                         json_pack("{s:s}", "id", "backup-99"));
    HQ_CHECK(r4, "backup-end of an unknown id");
    CLEANUP_JSON json_t *r5 = hq_cmd_err(vm->ctl, "NotFound", "query-backup",
                                         json_pack("{s:s}", "id", "backup-99"));
    HQ_CHECK(r5, "query-backup of an unknown id");
    CLEANUP_JSON json_t *q = hq_cmd(vm->ctl, "query-backup",
                                    json_pack("{s:s}", "id", hq_jstr(job, "id")));
    HQ_CHECK(json_equal(q, job), "the real job: %s", hq_str(q));
    if (hq_backup_end(vm, job) < 0)
        return -1;
    /* Ended jobs are gone. */
    CLEANUP_JSON json_t *r6 = hq_cmd_err(vm->ctl, "NotFound", "backup-end",
                                         json_pack("{s:s}", "id", hq_jstr(job, "id")));
    HQ_CHECK(r6, "backup-end twice");
    return expect_clean(vm, "at the end");
}

/* Two backups on different disks at once: both exports right, one NBD
 * server, which stays up until the last backup ends. */
static int
test_two_concurrent(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_scratch(2, DISK_SIZE, NULL, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_MODEL struct model ma = model_new("vda");
    CLEANUP_MODEL struct model mb = model_new("vdb");
    if (mwrite(vm, &ma, 0xa1, 0, 2 * MiB) < 0 || mwrite(vm, &mb, 0xb1, MiB, 2 * MiB) < 0)
        return -1;
    CLEANUP_FREE uint8_t *a0 = xmalloc(DISK_SIZE);
    memcpy(a0, ma.data, DISK_SIZE);
    CLEANUP_JSON json_t *ja = hq_backup_begin(vm, "{\"disks\": [\"vda\"]}");
    HQ_CHECK(ja, "backup-begin vda");
    if (mwrite(vm, &ma, 0xa2, MiB, 2 * MiB) < 0 || mwrite(vm, &mb, 0xb2, 0, 2 * MiB) < 0)
        return -1;
    CLEANUP_FREE uint8_t *b0 = xmalloc(DISK_SIZE);
    memcpy(b0, mb.data, DISK_SIZE);
    CLEANUP_JSON json_t *jb = hq_backup_begin(vm, "{\"disks\": [\"vdb\"]}");
    HQ_CHECK(jb, "backup-begin vdb");
    HQ_CHECK(strcmp(hq_jstr(ja, "id"), hq_jstr(jb, "id")) != 0, "same ids");
    HQ_CHECK(json_array_size(json_object_get(ja, "disks")) == 1 &&
             json_array_size(json_object_get(jb, "disks")) == 1 &&
             !uri_of(ja, "vdb") && !uri_of(jb, "vda"), "disks: %s / %s",
             hq_str(ja), hq_str(jb));
    CLEANUP_FREE char *sock = hq_nbd_sock(vm);
    CLEANUP_FREE char *ua = xasprintf("nbd+unix:///vda?socket=%s", sock);
    CLEANUP_FREE char *ub = xasprintf("nbd+unix:///vdb?socket=%s", sock);
    HQ_CHECK(strcmp(uri_of(ja, "vda"), ua) == 0 && strcmp(uri_of(jb, "vdb"), ub) == 0,
             "uris %s %s", uri_of(ja, "vda"), uri_of(jb, "vdb"));
    if (mwrite(vm, &ma, 0xa3, 0, 4 * MiB) < 0 || mwrite(vm, &mb, 0xb3, 0, 4 * MiB) < 0)
        return -1;
    CLEANUP_JSON json_t *l = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(json_array_size(l) == 2, "query-backup: %s", hq_str(l));
    if (expect_export(ja, "vda", a0, "backup of vda") < 0 ||
        expect_export(jb, "vdb", b0, "backup of vdb") < 0)
        return -1;
    if (hq_backup_end(vm, ja) < 0)
        return -1;
    HQ_CHECK(hq_sock_listening(sock), "the NBD server stopped while vdb's "
             "backup still runs");
    CLEANUP_JSON json_t *ex = hq_cmd(vm->mon, "query-block-exports", NULL);
    HQ_CHECK(json_array_size(ex) == 1 && hq_jstr(json_array_get(ex, 0), "id") &&
             strstr(hq_jstr(json_array_get(ex, 0), "id"), "vdb"),
             "exports after ending vda's backup: %s", hq_str(ex));
    if (expect_export(jb, "vdb", b0, "backup of vdb after the other ended") < 0 ||
        hq_backup_end(vm, jb) < 0)
        return -1;
    return expect_clean(vm, "after both ended");
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "backup-full-point-in-time", test_point_in_time },
        { "backup-full-query-events", test_query_events },
        { "backup-end-leaves-nothing", test_end_leaves_nothing },
        { "backup-busy", test_busy },
        { "backup-not-found", test_not_found },
        { "backup-two-concurrent", test_two_concurrent },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
