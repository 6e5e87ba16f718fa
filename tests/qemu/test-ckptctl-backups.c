/* ckptctl's backup directory, end to end: real pulls from a real agent
 * into a directory, then what `backups`, `verify` and `restore` make of it
 * with files removed, bytes flipped and links replaced; and the client's
 * habits: --json errors on stderr, missing --output parents, `status`
 * while QEMU is away, `checkpoint create` naming the disks it skipped.
 *
 * backups:          per disk each backup's checkpoint, parent, mode, time,
 *                   size on disk and chain, table and --json alike; a
 *                   removed link marks the chains above it, naming the file
 * verify:           every file against the SHA-256 pull recorded: clean,
 *                   one flipped byte, a missing file, a file without a
 *                   record; --against a live disk as before
 * restore-messages: a missing or foreign link is named (checkpoint and
 *                   file) before qemu-img runs; a whole chain restores to
 *                   the disk's bytes, into directories made on the way
 * json-errors:      with --json every error is one JSON object on stderr,
 *                   same exit codes as the text
 * status-away:      checkpoints "unknown" (null) while QEMU is away
 * create-skipped:   the raw disk a default checkpoint left out, and why
 * progress:         on a terminal the progress line uses binary units only
 * changes:          `ckptctl changes` against writes of known extents, in
 *                   pages and between two past checkpoints (skipped while
 *                   the agent has no checkpoint-changes)
 */
#include "tests/qemu/harness.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define K64 (64 * 1024)
#define DISK_SIZE (16 * MiB)


/* Runs ckptctl --socket CTL ARGS...: its exit status, stdout in *out and
 * stderr in *err (both kept apart: --json errors must be alone there). */
static int
ctl(struct hq_vm *vm, char **out, char **err, const char *const *args)
{
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    CLEANUP_FREE char *errfile = xasprintf("%s/ctl.stderr", vm->dir);
    const char *argv[40] = { "sh", "-c", "exec \"$0\" \"$@\" 2>\"$HQ_CTL_ERR\"",
                             bin, "--socket", vm->ctl_sock };
    size_t n = 6;
    for (; *args && n + 1 < ARRAY_SIZE(argv); args++)
        argv[n++] = *args;
    argv[n] = NULL;
    setenv("HQ_CTL_ERR", errfile, 1);
    int rc = hq_run_cmd((char *const *) argv, out);
    char *e = hq_read_file(errfile);
    if (err)
        *err = e ? e : xstrdup("");
    else
        free(e);
    return rc;
}

#define CTL(vm, out, err, ...) ctl(vm, out, err, (const char *[]) { __VA_ARGS__, NULL })

static bool
exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Three pulls of both disks into dir: full c1, then c2 and c3 on top,
 * with disjoint writes before each. */
static int
pull3(struct hq_vm *vm, const char *dir)
{
    static const char *const names[] = { "c1", "c2", "c3" };
    for (int i = 0; i < 3; i++) {
        CLEANUP_FREE char *out = NULL;
        CLEANUP_FREE char *err = NULL;
        HQ_CHECK(hq_write(vm, "vda", 0x10 + i, (int64_t) i * 4 * K64, 2 * K64) == 0 &&
                 hq_write(vm, "vdb", 0x20 + i, (int64_t) (i * 4 + 1) * K64, K64) == 0,
                 "writes before %s", names[i]);
        int rc = i == 0
            ? CTL(vm, &out, &err, "pull", "--output", dir, "--checkpoint", names[i])
            : CTL(vm, &out, &err, "pull", "--output", dir, "--checkpoint", names[i],
                  "--incremental", names[i - 1]);
        HQ_CHECK(rc == 0, "pull %s: %d %s %s", names[i], rc, out, err);
    }
    return 0;
}

static json_t *
backups_json(struct hq_vm *vm, const char *dir, int *rc)
{
    CLEANUP_FREE char *out = NULL;
    CLEANUP_FREE char *err = NULL;
    *rc = CTL(vm, &out, &err, "--json", "backups", dir);
    return hq_json(out);
}

/* The backup entry of disk at checkpoint in a `backups --json` reply. */
static json_t *
find_backup(json_t *ret, const char *disk, const char *checkpoint)
{
    json_t *d = hq_jfind(json_object_get(ret, "disks"), "disk", disk);
    return hq_jfind(json_object_get(d, "backups"), "checkpoint", checkpoint);
}

static int
flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    unsigned char b;
    HQ_CHECK(fd >= 0 && pread(fd, &b, 1, off) == 1, "read %s", path);
    b ^= 0xff;
    HQ_CHECK(pwrite(fd, &b, 1, off) == 1, "write %s", path);
    close(fd);
    return 0;
}

static int64_t
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t) st.st_size : -1;
}

/* ------------------------------------------------------------ backups */

static int
case_backups(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    /* Two missing parents: pull makes them, as mkdir -p. */
    CLEANUP_FREE char *dir = xasprintf("%s/backups/vm1/disks", vm->dir);
    time_t t0 = time(NULL);
    if (pull3(vm, dir) < 0)
        return -1;
    time_t t1 = time(NULL);
    struct stat st;
    CLEANUP_FREE char *top = xasprintf("%s/backups", vm->dir);
    HQ_CHECK(stat(top, &st) == 0 && (st.st_mode & 0777) == 0700,
             "made parent %s: mode %o", top, st.st_mode & 0777);

    int rc;
    CLEANUP_JSON json_t *ret = backups_json(vm, dir, &rc);
    HQ_CHECK(rc == 0 && ret, "backups --json: %d", rc);
    HQ_CHECK(json_array_size(json_object_get(ret, "disks")) == 2, "disks: %s", hq_str(ret));
    static const char *const cks[] = { "c1", "c2", "c3" };
    for (int k = 0; k < 2; k++) {
        const char *disk = k ? "vdb" : "vda";
        json_t *d = hq_jfind(json_object_get(ret, "disks"), "disk", disk);
        HQ_CHECK(json_array_size(json_object_get(d, "backups")) == 3, "%s: %s", disk,
                 hq_str(d));
        for (int i = 0; i < 3; i++) {
            json_t *b = json_array_get(json_object_get(d, "backups"), (size_t) i);
            CLEANUP_FREE char *file = xasprintf("%s.%s.%s.qcow2", disk, cks[i],
                                                i ? "inc" : "full");
            CLEANUP_FREE char *path = xasprintf("%s/%s", dir, file);
            HQ_CHECK(stat(path, &st) == 0, "%s", path);
            json_t *parent = json_object_get(b, "parent");
            HQ_CHECK(!strcmp(hq_jstr(b, "checkpoint"), cks[i]) &&
                     !strcmp(hq_jstr(b, "file"), file) &&
                     !strcmp(hq_jstr(b, "mode"), i ? "incremental" : "full") &&
                     (i ? json_is_string(parent) &&
                         !strcmp(json_string_value(parent), cks[i - 1])
                        : json_is_null(parent)) &&
                     !strcmp(hq_jstr(b, "chain"), "complete") &&
                     hq_jbool(b, "checksum") == 1 &&
                     hq_jint(b, "size") == (int64_t) st.st_blocks * 512 &&
                     hq_jint(b, "size") > 0 &&
                     hq_jint(b, "file-size") == (int64_t) st.st_size &&
                     hq_jint(b, "time") >= t0 && hq_jint(b, "time") <= t1 &&
                     json_array_size(json_object_get(b, "chain-files")) == (size_t) i + 1,
                     "%s at %s: %s (blocks %lld size %lld, t0 %lld t1 %lld)", disk,
                     cks[i], hq_str(b), (long long) st.st_blocks, (long long) st.st_size,
                     (long long) t0, (long long) t1);
        }
    }

    /* The table shows the same rows. */
    CLEANUP_FREE char *out = NULL;
    CLEANUP_FREE char *err = NULL;
    rc = CTL(vm, &out, &err, "backups", dir);
    HQ_CHECK(rc == 0 && !strncmp(out, "DISK  CHECKPOINT  PARENT  TYPE", 30) &&
             strstr(out, "vdb.c3.inc.qcow2") && strstr(out, "  inc  ") &&
             strstr(out, "complete"), "table: %d %s", rc, out);

    /* A removed link: the backups above it name it, the rest stay complete. */
    CLEANUP_FREE char *c2 = xasprintf("%s/vda.c2.inc.qcow2", dir);
    HQ_CHECK(unlink(c2) == 0, "unlink %s", c2);
    CLEANUP_JSON json_t *ret2 = backups_json(vm, dir, &rc);
    json_t *b3 = find_backup(ret2, "vda", "c3");
    json_t *miss = json_object_get(b3, "missing");
    HQ_CHECK(rc == 0 && b3 && !strcmp(hq_jstr(b3, "chain"), "missing") &&
             !strcmp(hq_jstr(miss, "file"), "vda.c2.inc.qcow2") &&
             !strcmp(hq_jstr(miss, "checkpoint"), "c2") &&
             !strcmp(hq_jstr(b3, "parent"), "c2") &&
             find_backup(ret2, "vda", "c2") == NULL &&
             !strcmp(hq_jstr(find_backup(ret2, "vda", "c1"), "chain"), "complete") &&
             !strcmp(hq_jstr(find_backup(ret2, "vdb", "c3"), "chain"), "complete"),
             "after removing vda.c2: %d %s", rc, hq_str(ret2));
    /* No incremental on top of it: nothing begins, nothing is written. */
    CLEANUP_FREE char *e4 = NULL;
    rc = CTL(vm, NULL, &e4, "pull", "--output", dir, "--incremental", "c3",
             "--checkpoint", "c4");
    CLEANUP_FREE char *c4 = xasprintf("%s/vdb.c4.inc.qcow2", dir);
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(rc == 4 && strstr(e4, "vda.c2.inc.qcow2") && strstr(e4, "checkpoint c2") &&
             !exists(c4) && names && !strcmp(names, "c1,c2,c3"),
             "pull on a broken chain: %d %s (list %s)", rc, e4, names);
    CLEANUP_FREE char *out2 = NULL;
    rc = CTL(vm, &out2, NULL, "backups", dir, "--disk", "vda");
    HQ_CHECK(rc == 0 && strstr(out2, "missing: vda.c2.inc.qcow2") && !strstr(out2, "vdb"),
             "table --disk vda: %s", out2);

    /* pull --json: the summary carries each file's SHA-256, as recorded;
     * nothing but JSON on stderr (here: nothing at all). */
    CLEANUP_FREE char *o5 = NULL;
    CLEANUP_FREE char *e5 = NULL;
    rc = CTL(vm, &o5, &e5, "pull", "--json", "--output", dir, "--disk", "vdb",
             "--incremental", "c3", "--checkpoint", "c5");
    CLEANUP_JSON json_t *sum5 = hq_json(o5);
    json_t *d5 = json_array_get(json_object_get(sum5, "disks"), 0);
    CLEANUP_FREE char *rec5 = xasprintf("%s/vdb.c5.inc.qcow2.json", dir);
    CLEANUP_FREE char *rtext5 = hq_read_file(rec5);
    CLEANUP_JSON json_t *r5 = hq_json(rtext5);
    CLEANUP_FREE char *rec3 = xasprintf("%s/vdb.c3.inc.qcow2.json", dir);
    CLEANUP_FREE char *rtext3 = hq_read_file(rec3);
    CLEANUP_JSON json_t *r3 = hq_json(rtext3);
    HQ_CHECK(rc == 0 && !*e5 && d5 && r5 && r3 &&
             !strcmp(hq_jstr(d5, "sha256") ?: "", hq_jstr(r5, "sha256") ?: "-") &&
             !strcmp(hq_jstr(r5, "backing-sha256") ?: "", hq_jstr(r3, "sha256") ?: "-"),
             "pull --json: %d %s / %s / %s", rc, o5, e5, rtext5);

    /* An empty directory lists nothing; a missing one is NotFound. */
    CLEANUP_FREE char *empty = xasprintf("%s/empty", vm->dir);
    mkdir(empty, 0700);
    CLEANUP_FREE char *out3 = NULL;
    rc = CTL(vm, &out3, NULL, "backups", empty);
    HQ_CHECK(rc == 0 && strstr(out3, "no backups in"), "empty: %d %s", rc, out3);
    CLEANUP_FREE char *gone = xasprintf("%s/nonexistent", vm->dir);
    rc = CTL(vm, NULL, NULL, "backups", gone);
    HQ_CHECK(rc == 4, "missing directory: %d", rc);
    return 0;
}

/* ------------------------------------------------------------- verify */

static json_t *
verify_json(struct hq_vm *vm, const char *dir, int *rc)
{
    CLEANUP_FREE char *out = NULL;
    *rc = CTL(vm, &out, NULL, "--json", "verify", dir);
    return hq_json(out);
}

static const char *
file_status(json_t *ret, const char *file)
{
    return hq_jstr(hq_jfind(json_object_get(ret, "files"), "file", file), "status");
}

static int
case_verify(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *dir = xasprintf("%s/b", vm->dir);
    if (pull3(vm, dir) < 0)
        return -1;

    /* The record holds the file's SHA-256, as sha256sum computes it. */
    CLEANUP_FREE char *c2 = xasprintf("%s/vda.c2.inc.qcow2", dir);
    CLEANUP_FREE char *rec = xasprintf("%s.json", c2);
    CLEANUP_FREE char *rtext = hq_read_file(rec);
    CLEANUP_JSON json_t *r = hq_json(rtext);
    CLEANUP_FREE char *sum = NULL;
    HQ_CHECK(hq_run_cmd((char *const[]) { "sha256sum", c2, NULL }, &sum) == 0, "sha256sum");
    HQ_CHECK(r && strlen(hq_jstr(r, "sha256")) == 64 &&
             !strncmp(sum, hq_jstr(r, "sha256"), 64) &&
             !strcmp(hq_jstr(r, "disk"), "vda") && !strcmp(hq_jstr(r, "parent"), "c1") &&
             !strcmp(hq_jstr(r, "backing"), "vda.c1.full.qcow2"),
             "record %s: %s (sha256sum %s)", rec, rtext, sum);

    int rc;
    CLEANUP_JSON json_t *v1 = verify_json(vm, dir, &rc);
    HQ_CHECK(rc == 0 && json_is_true(json_object_get(v1, "ok")) &&
             json_array_size(json_object_get(v1, "files")) == 6 &&
             json_array_size(json_object_get(v1, "chains")) == 0,
             "clean verify: %d %s", rc, hq_str(v1));
    CLEANUP_FREE char *t1 = NULL;
    rc = CTL(vm, &t1, NULL, "verify", dir);
    HQ_CHECK(rc == 0 && strstr(t1, "vda.c2.inc.qcow2: ok") && strstr(t1, "all files verified"),
             "text verify: %d %s", rc, t1);

    /* One flipped byte: that file, and only it, is corrupt; exit 1. */
    int64_t size = file_size(c2);
    if (flip_byte(c2, (off_t) (size / 2)) < 0)
        return -1;
    CLEANUP_JSON json_t *v2 = verify_json(vm, dir, &rc);
    HQ_CHECK(rc == 1 && json_is_false(json_object_get(v2, "ok")) &&
             !strcmp(file_status(v2, "vda.c2.inc.qcow2") ?: "", "corrupt") &&
             !strcmp(file_status(v2, "vda.c1.full.qcow2") ?: "", "ok") &&
             !strcmp(file_status(v2, "vda.c3.inc.qcow2") ?: "", "ok") &&
             !strcmp(file_status(v2, "vdb.c2.inc.qcow2") ?: "", "ok"),
             "flipped byte: %d %s", rc, hq_str(v2));
    /* Only the chain of vdb at c3 is asked for: vda's corruption is not in it. */
    CLEANUP_FREE char *t2 = NULL;
    rc = CTL(vm, &t2, NULL, "verify", dir, "--disk", "vdb", "--checkpoint", "c3");
    HQ_CHECK(rc == 0 && !strstr(t2, "vda"), "verify vdb c3: %d %s", rc, t2);
    if (flip_byte(c2, (off_t) (size / 2)) < 0)
        return -1;
    CLEANUP_JSON json_t *v3 = verify_json(vm, dir, &rc);
    HQ_CHECK(rc == 0, "byte flipped back: %d %s", rc, hq_str(v3));

    /* A missing file: the chains above it say which, with the checkpoint. */
    CLEANUP_FREE char *b1 = xasprintf("%s/vdb.c1.full.qcow2", dir);
    CLEANUP_FREE char *b1moved = xasprintf("%s/moved.qcow2", vm->dir);
    HQ_CHECK(rename(b1, b1moved) == 0, "move %s", b1);
    CLEANUP_JSON json_t *v4 = verify_json(vm, dir, &rc);
    json_t *link = hq_jfind(json_object_get(v4, "chains"), "file", "vdb.c2.inc.qcow2");
    json_t *miss = json_object_get(link, "missing");
    HQ_CHECK(rc == 1 && link && !strcmp(hq_jstr(link, "status"), "missing") &&
             !strcmp(hq_jstr(miss, "file"), "vdb.c1.full.qcow2") &&
             !strcmp(hq_jstr(miss, "checkpoint"), "c1") &&
             hq_jfind(json_object_get(v4, "chains"), "file", "vdb.c3.inc.qcow2"),
             "missing file: %d %s", rc, hq_str(v4));
    HQ_CHECK(rename(b1moved, b1) == 0, "move back");

    /* A file whose record is gone cannot be verified: exit 1 as well. */
    CLEANUP_FREE char *rec3 = xasprintf("%s/vdb.c3.inc.qcow2.json", dir);
    CLEANUP_FREE char *rec3moved = xasprintf("%s/moved.json", vm->dir);
    HQ_CHECK(rename(rec3, rec3moved) == 0, "move %s", rec3);
    CLEANUP_JSON json_t *v5 = verify_json(vm, dir, &rc);
    HQ_CHECK(rc == 1 && !strcmp(file_status(v5, "vdb.c3.inc.qcow2") ?: "", "unrecorded"),
             "no record: %d %s", rc, hq_str(v5));
    HQ_CHECK(rename(rec3moved, rec3) == 0, "move back");

    /* Against the disk, as before: the newest backup is the disk until the
     * guest writes again.  QEMU quits first so that the image file holds
     * every write (a running QEMU keeps some in its caches). */
    struct hq_disk *vda = hq_vm_disk(vm, "vda");
    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit");
    CLEANUP_FREE char *t6 = NULL;
    rc = CTL(vm, &t6, NULL, "verify", dir, "--disk", "vda", "--against", vda->path);
    HQ_CHECK(rc == 0 && strstr(t6, "identical"), "against the disk: %d %s", rc, t6);
    HQ_CHECK(hq_qemu_start(vm) == 0 && hq_agent_wait_qemu(vm, "connected", 30) == 0 &&
             hq_write(vm, "vda", 0x77, 10 * K64, K64) == 0 && hq_qemu_quit(vm) == 0,
             "write once more");
    CLEANUP_FREE char *t7 = NULL;
    rc = CTL(vm, &t7, NULL, "verify", dir, "--disk", "vda", "--against", vda->path);
    CLEANUP_FREE char *want7 = xasprintf("differ: first difference at offset %d\n",
                                         10 * K64);
    HQ_CHECK(rc == 1 && !strcmp(t7, want7), "against the written disk: %d %s", rc, t7);
    CLEANUP_FREE char *t8 = NULL;
    rc = CTL(vm, &t8, NULL, "verify", c2, "--against", vda->path);
    HQ_CHECK(rc == 1 && strstr(t8, "differ"), "image against the disk: %d %s", rc, t8);
    HQ_CHECK(hq_qemu_start(vm) == 0 && hq_agent_wait_qemu(vm, "connected", 30) == 0,
             "QEMU back");
    return 0;
}

/* ---------------------------------------------------- restore messages */

static int
copy_file(const char *from, const char *to)
{
    CLEANUP_FREE char *out = NULL;
    HQ_CHECK(hq_run_cmd((char *const[]) { "cp", "--", (char *) from, (char *) to, NULL },
                        &out) == 0, "cp %s %s: %s", from, to, out);
    return 0;
}

static int
case_restore_messages(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *dir = xasprintf("%s/b", vm->dir);
    if (pull3(vm, dir) < 0)
        return -1;

    /* A whole chain: the disk's bytes, in directories made on the way. */
    CLEANUP_FREE char *img = xasprintf("%s/restored/a/vda.qcow2", vm->dir);
    CLEANUP_FREE char *o1 = NULL;
    CLEANUP_FREE char *e1 = NULL;
    int rc = CTL(vm, &o1, &e1, "restore", dir, "--disk", "vda", "--output", img);
    HQ_CHECK(rc == 0 && strstr(o1, "at checkpoint c3"), "restore: %d %s %s", rc, o1, e1);

    /* A missing link: named with its checkpoint, nothing written. */
    CLEANUP_FREE char *c2 = xasprintf("%s/vda.c2.inc.qcow2", dir);
    CLEANUP_FREE char *c2moved = xasprintf("%s/c2.qcow2", vm->dir);
    HQ_CHECK(rename(c2, c2moved) == 0, "move");
    CLEANUP_FREE char *img2 = xasprintf("%s/r2.qcow2", vm->dir);
    CLEANUP_FREE char *o2 = NULL;
    CLEANUP_FREE char *e2 = NULL;
    rc = CTL(vm, &o2, &e2, "restore", dir, "--disk", "vda", "--checkpoint", "c3",
             "--output", img2);
    HQ_CHECK(rc == 4 && strstr(e2, "checkpoint c2") && strstr(e2, "vda.c2.inc.qcow2") &&
             strstr(e2, "vda.c3.inc.qcow2") && !strstr(e2, "Could not open") &&
             !exists(img2), "missing link: %d %s", rc, e2);
    HQ_CHECK(rename(c2moved, c2) == 0, "move back");

    /* A foreign link: vdb's c1 (with its record) under vda's name. */
    CLEANUP_FREE char *a1 = xasprintf("%s/vda.c1.full.qcow2", dir);
    CLEANUP_FREE char *a1rec = xasprintf("%s.json", a1);
    CLEANUP_FREE char *b1 = xasprintf("%s/vdb.c1.full.qcow2", dir);
    CLEANUP_FREE char *b1rec = xasprintf("%s.json", b1);
    CLEANUP_FREE char *keep = xasprintf("%s/keep.qcow2", vm->dir);
    CLEANUP_FREE char *keeprec = xasprintf("%s/keep.json", vm->dir);
    if (copy_file(a1, keep) < 0 || copy_file(a1rec, keeprec) < 0 ||
        copy_file(b1, a1) < 0 || copy_file(b1rec, a1rec) < 0)
        return -1;
    CLEANUP_FREE char *o3 = NULL;
    CLEANUP_FREE char *e3 = NULL;
    rc = CTL(vm, &o3, &e3, "restore", dir, "--disk", "vda", "--checkpoint", "c2",
             "--output", img2);
    HQ_CHECK(rc == 11 && strstr(e3, "vda.c1.full.qcow2") && strstr(e3, "disk vdb") &&
             strstr(e3, "checkpoint c2") && !exists(img2), "vdb's file: %d %s", rc, e3);

    /* Another backup of vda at c1 under the right name and identity: the
     * checksum vda.c2 recorded for its base tells them apart. */
    CLEANUP_FREE char *dir2 = xasprintf("%s/b2", vm->dir);
    CLEANUP_FREE char *o4 = NULL;
    rc = CTL(vm, &o4, NULL, "pull", "--output", dir2, "--checkpoint", "x1", "--disk", "vda");
    HQ_CHECK(rc == 0, "second full: %d %s", rc, o4);
    CLEANUP_FREE char *x1 = xasprintf("%s/vda.x1.full.qcow2", dir2);
    CLEANUP_FREE char *x1rec = xasprintf("%s.json", x1);
    CLEANUP_FREE char *x1text = hq_read_file(x1rec);
    CLEANUP_JSON json_t *xr = hq_json(x1text);
    HQ_CHECK(xr, "record of x1: %s", x1text);
    json_object_set_new(xr, "checkpoint", json_string("c1"));
    HQ_CHECK(json_dump_file(xr, a1rec, 0) == 0 && copy_file(x1, a1) == 0, "replace c1");
    CLEANUP_FREE char *o5 = NULL;
    CLEANUP_FREE char *e5 = NULL;
    rc = CTL(vm, &o5, &e5, "restore", dir, "--disk", "vda", "--checkpoint", "c3",
             "--output", img2);
    HQ_CHECK(rc == 11 && strstr(e5, "vda.c1.full.qcow2 is not the file vda.c2.inc.qcow2"
                                " was taken on") && !exists(img2),
             "replaced c1: %d %s", rc, e5);
    CLEANUP_FREE char *o6 = NULL;
    rc = CTL(vm, &o6, NULL, "backups", dir, "--disk", "vda");
    HQ_CHECK(rc == 0 && strstr(o6, "foreign: vda.c1.full.qcow2"), "backups: %s", o6);

    /* The right files back: restore works again. */
    if (copy_file(keep, a1) < 0 || copy_file(keeprec, a1rec) < 0)
        return -1;
    CLEANUP_FREE char *o7 = NULL;
    CLEANUP_FREE char *e7 = NULL;
    rc = CTL(vm, &o7, &e7, "restore", dir, "--disk", "vda", "--checkpoint", "c2",
             "--output", img2, "--format", "raw");
    HQ_CHECK(rc == 0 && exists(img2), "restore after repair: %d %s %s", rc, o7, e7);

    /* The first restore is vda as it is (QEMU gone: its writes are all in
     * the file); the raw one at c2 lacks the writes made before c3. */
    struct hq_disk *vda = hq_vm_disk(vm, "vda");
    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit");
    CLEANUP_FREE char *cmp = NULL;
    HQ_CHECK(hq_run_cmd((char *const[]) { "qemu-img", "compare", img, vda->path, NULL },
                        &cmp) == 0, "restored image differs from vda: %s", cmp);
    CLEANUP_FREE char *cmp2 = NULL;
    CLEANUP_FREE char *want = xasprintf("Content mismatch at offset %d!", 8 * K64);
    rc = hq_run_cmd((char *const[]) { "qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                                      img2, vda->path, NULL }, &cmp2);
    HQ_CHECK(rc == 1 && strstr(cmp2, want), "restored c2 against vda: %d %s", rc, cmp2);
    HQ_CHECK(hq_qemu_start(vm) == 0 && hq_agent_wait_qemu(vm, "connected", 30) == 0,
             "QEMU back");
    return 0;
}

/* -------------------------------------------------------- json errors */

/* stderr holds exactly one line, a JSON object {"error": {class, desc}}. */
static int
json_error(const char *err, const char *cls, const char *needle)
{
    size_t len = strlen(err);
    HQ_CHECK(len > 0 && err[len - 1] == '\n' && !memchr(err, '\n', len - 1),
             "not one line on stderr: '%s'", err);
    CLEANUP_JSON json_t *j = hq_json(err);
    json_t *e = json_object_get(j, "error");
    HQ_CHECK(j && json_object_size(j) == 1 && json_object_size(e) == 2 &&
             !strcmp(hq_jstr(e, "class") ?: "", cls) &&
             strstr(hq_jstr(e, "desc") ?: "", needle),
             "stderr '%s': want class %s and '%s'", err, cls, needle);
    return 0;
}

static int
case_json_errors(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *dir = xasprintf("%s/b", vm->dir);

    /* An agent error: the agent's class, its exit code; stdout empty. */
    CLEANUP_FREE char *o1 = NULL;
    CLEANUP_FREE char *e1 = NULL;
    int rc = CTL(vm, &o1, &e1, "--json", "checkpoint", "info", "nosuch");
    HQ_CHECK(rc == 4 && !*o1, "info nosuch: %d '%s'", rc, o1);
    if (json_error(e1, "NotFound", "nosuch") < 0)
        return -1;
    /* The same without --json is text. */
    CLEANUP_FREE char *e1t = NULL;
    rc = CTL(vm, NULL, &e1t, "checkpoint", "info", "nosuch");
    HQ_CHECK(rc == 4 && !strncmp(e1t, "ckptctl: ", 9), "text: %d %s", rc, e1t);

    /* Usage errors: no usage text, one JSON line, exit 2. */
    CLEANUP_FREE char *e2 = NULL;
    rc = CTL(vm, NULL, &e2, "--json", "frobnicate");
    HQ_CHECK(rc == 2, "unknown command: %d", rc);
    if (json_error(e2, "InvalidParameter", "frobnicate") < 0)
        return -1;
    CLEANUP_FREE char *e3 = NULL;
    rc = CTL(vm, NULL, &e3, "--json", "checkpoint", "create", "--bogus");
    HQ_CHECK(rc == 2, "bad option: %d", rc);
    if (json_error(e3, "InvalidParameter", "--bogus") < 0)
        return -1;
    /* A key given twice in JSON-ARGS is refused, not the last one taken. */
    CLEANUP_FREE char *e4 = NULL;
    rc = CTL(vm, NULL, &e4, "--json", "raw", "checkpoint-create",
             "{\"name\": \"a1\", \"name\": \"a2\"}");
    HQ_CHECK(rc == 2, "duplicate key: %d", rc);
    if (json_error(e4, "InvalidParameter", "duplicate") < 0)
        return -1;
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !*names, "a checkpoint was created: %s", names);

    /* Local errors (files): ckptctl's own class, same exit codes. */
    CLEANUP_FREE char *o5 = NULL;
    CLEANUP_FREE char *e5 = NULL;
    rc = CTL(vm, &o5, &e5, "--json", "pull", "--output", dir, "--incremental", "nosuch");
    HQ_CHECK(rc == 4 && !*o5, "pull --incremental nosuch: %d %s", rc, o5);
    if (json_error(e5, "NotFound", "nosuch") < 0)
        return -1;
    CLEANUP_FREE char *e6 = NULL;
    rc = CTL(vm, NULL, &e6, "--json", "restore", dir, "--disk", "vda", "--output",
             "/proc/nonexistent/x.qcow2");
    HQ_CHECK(rc == 4, "restore from an empty directory: %d %s", rc, e6);
    if (json_error(e6, "NotFound", "no backup of disk vda") < 0)
        return -1;
    /* pull's own --json after the command. */
    CLEANUP_FREE char *o7 = NULL;
    CLEANUP_FREE char *e7 = NULL;
    rc = CTL(vm, &o7, &e7, "pull", "--json", "--output", "/proc/ckptctl-test/x");
    HQ_CHECK(rc == 11 && !*o7, "pull into /proc: %d %s", rc, o7);
    if (json_error(e7, "LocalError", "/proc/ckptctl-test") < 0)
        return -1;
    /* An unreachable agent. */
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    CLEANUP_FREE char *nosock = xasprintf("%s/none.sock", vm->dir);
    CLEANUP_FREE char *errfile = xasprintf("%s/ctl.stderr", vm->dir);
    setenv("HQ_CTL_ERR", errfile, 1);
    rc = hq_run_cmd((char *const[]) { "sh", "-c", "exec \"$0\" \"$@\" 2>\"$HQ_CTL_ERR\"",
                                      bin, "--json", "--socket", nosock, "status", NULL },
                    NULL);
    CLEANUP_FREE char *e8 = hq_read_file(errfile);
    HQ_CHECK(rc == 3 && e8, "unreachable: %d", rc);
    if (json_error(e8, "Unreachable", nosock) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------- status away */

static int
case_status_away(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c = hq_cmd(vm->ctl, "checkpoint-create",
                                    json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c, "create");
    CLEANUP_FREE char *o1 = NULL;
    int rc = CTL(vm, &o1, NULL, "status");
    HQ_CHECK(rc == 0 && strstr(o1, "checkpoints: 1\n"), "connected: %d %s", rc, o1);

    HQ_CHECK(hq_qemu_quit(vm) == 0, "quit");
    HQ_CHECK(hq_agent_wait_qemu(vm, "disconnected", 30) == 0, "agent sees QEMU gone");
    CLEANUP_FREE char *o2 = NULL;
    CLEANUP_FREE char *e2 = NULL;
    rc = CTL(vm, &o2, &e2, "status");
    HQ_CHECK(rc == 1 && strstr(o2, "checkpoints: unknown") &&
             !strstr(o2, "checkpoints: 0"), "away: %d %s %s", rc, o2, e2);
    CLEANUP_FREE char *o3 = NULL;
    rc = CTL(vm, &o3, NULL, "--json", "status");
    CLEANUP_JSON json_t *j = hq_json(o3);
    HQ_CHECK(rc == 1 && j && json_is_null(json_object_get(j, "checkpoints")) &&
             !strcmp(hq_jstr(j, "qemu"), "disconnected"), "away --json: %d %s", rc, o3);

    /* Back: the count again. */
    HQ_CHECK(hq_qemu_start(vm) == 0, "restart QEMU");
    HQ_CHECK(hq_agent_wait_qemu(vm, "connected", 30) == 0, "agent reconnects");
    CLEANUP_FREE char *o4 = NULL;
    rc = CTL(vm, &o4, NULL, "status");
    HQ_CHECK(rc == 0 && strstr(o4, "checkpoints: 1\n"), "back: %d %s", rc, o4);
    return 0;
}

/* ---------------------------------------------------- create skipped */

static int
case_create_skipped(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_new();
    HQ_CHECK(vm && hq_vm_add_disk(vm, "vda", "qcow2", DISK_SIZE, false) == 0 &&
             hq_vm_add_disk(vm, "vdb", "raw", DISK_SIZE, false) == 0 &&
             hq_qemu_start(vm) == 0 && hq_agent_start(vm) == 0, "setup");
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    const char *reason = hq_jstr(hq_jfind(disks, "disk", "vdb"), "reason");
    HQ_CHECK(reason && *reason, "query-disks gives no reason for vdb: %s", hq_str(disks));

    CLEANUP_FREE char *o1 = NULL;
    int rc = CTL(vm, &o1, NULL, "checkpoint", "create", "c1");
    CLEANUP_FREE char *want = xasprintf("checkpoint c1 created\nskipped disk vdb: %s\n",
                                        reason);
    HQ_CHECK(rc == 0 && !strcmp(o1, want), "create: %d '%s', want '%s'", rc, o1, want);
    CLEANUP_FREE char *o2 = NULL;
    rc = CTL(vm, &o2, NULL, "--json", "checkpoint", "create", "c2");
    CLEANUP_JSON json_t *j = hq_json(o2);
    json_t *sk = json_object_get(j, "skipped");
    HQ_CHECK(rc == 0 && json_array_size(sk) == 1 &&
             !strcmp(hq_jstr(json_array_get(sk, 0), "disk"), "vdb") &&
             !strcmp(hq_jstr(json_array_get(sk, 0), "reason"), reason) &&
             json_array_size(json_object_get(j, "disks")) == 1,
             "create --json: %d %s", rc, o2);
    /* export-xml --output makes the missing parents too. */
    CLEANUP_FREE char *exp = xasprintf("%s/export/a/b", vm->dir);
    CLEANUP_FREE char *expfile = xasprintf("%s/c1.xml", exp);
    CLEANUP_FREE char *o4 = NULL;
    rc = CTL(vm, &o4, NULL, "checkpoint", "export-xml", "--output", exp);
    HQ_CHECK(rc == 0 && exists(expfile), "export-xml --output %s: %d %s", exp, rc, o4);
    /* Disks asked for by name: nothing was skipped. */
    CLEANUP_FREE char *o3 = NULL;
    rc = CTL(vm, &o3, NULL, "checkpoint", "create", "c3", "--disk", "vda");
    HQ_CHECK(rc == 0 && !strcmp(o3, "checkpoint c3 created\n"), "--disk: %d %s", rc, o3);
    return 0;
}

/* ----------------------------------------------------------- progress */

static int
case_progress(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_write(vm, "vda", 0x33, 0, 4 * MiB) == 0, "write");
    if (access("/usr/bin/script", X_OK) != 0) {
        hq_skip("no script(1) to give ckptctl a terminal");
        return 0;
    }
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    CLEANUP_FREE char *dir = xasprintf("%s/b", vm->dir);
    CLEANUP_FREE char *cmd = xasprintf("'%s' --socket '%s' pull --output '%s'", bin,
                                       vm->ctl_sock, dir);
    CLEANUP_FREE char *out = NULL;
    /* script(1) runs the command on a pseudo-terminal: stderr is a tty. */
    int rc = hq_run_cmd((char *const[]) { "script", "-qec", cmd, "/dev/null", NULL }, &out);
    HQ_CHECK(rc == 0, "pull under script: %d %s", rc, out);
    HQ_CHECK(strstr(out, "vda: ") && strstr(out, "iB/s") && !strstr(out, "MB/s") &&
             !strstr(out, "kB/s") && strstr(out, "100%"),
             "progress line: %s", out);
    return 0;
}


/* ------------------------------------------------------------ changes */

/* ckptctl changes against writes whose extents are known exactly (64 KiB
 * aligned, at the bitmaps' granularity).  Skipped while the agent has no
 * checkpoint-changes. */
static int
expect_extents(json_t *ret, const int64_t (*want)[2], size_t n, const char *what)
{
    json_t *list = json_object_get(ret, "block-metadata");
    HQ_CHECK(json_array_size(list) == n && hq_jint(ret, "volume-capacity-bytes") == DISK_SIZE,
             "%s: %s", what, hq_str(ret));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        HQ_CHECK(hq_jint(e, "byte-offset") == want[i][0] &&
                 hq_jint(e, "size-bytes") == want[i][1],
                 "%s: extent %zu is %s, want %" PRId64 "+%" PRId64, what, i, hq_str(e),
                 want[i][0], want[i][1]);
    }
    HQ_CHECK(!json_object_get(ret, "next-offset"), "%s: next-offset left", what);
    return 0;
}

static int
case_changes(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(1, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *cmds = hq_cmd(vm->ctl, "query-commands", NULL);
    if (!hq_jfind(cmds, "name", "checkpoint-changes")) {
        hq_skip("the agent has no checkpoint-changes yet");
        return 0;
    }
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create", json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1 && hq_write(vm, "vda", 0x41, 0, K64) == 0 &&
             hq_write(vm, "vda", 0x42, 3 * K64, K64) == 0 &&
             hq_write(vm, "vda", 0x43, 4 * K64, K64) == 0 &&      /* joins 3 */
             hq_write(vm, "vda", 0x44, 100 * K64, K64) == 0, "c1 and writes");
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create", json_pack("{s:s}", "name", "c2"));
    HQ_CHECK(c2 && hq_write(vm, "vda", 0x45, 200 * K64, K64) == 0 &&
             hq_write(vm, "vda", 0x46, DISK_SIZE - K64, K64) == 0, "c2 and writes");
    static const int64_t since_c1[][2] = {
        { 0, K64 }, { 3 * K64, 2 * K64 }, { 100 * K64, K64 }, { 200 * K64, K64 },
        { DISK_SIZE - K64, K64 },
    };
    int rc;
    CLEANUP_FREE char *o1 = NULL;
    rc = CTL(vm, &o1, NULL, "--json", "changes", "vda", "--from", "c1");
    CLEANUP_JSON json_t *r1 = hq_json(o1);
    HQ_CHECK(rc == 0, "changes --from c1: %d %s", rc, o1);
    if (expect_extents(r1, since_c1, 5, "since c1") < 0)
        return -1;
    /* Page by page, joined into the same list. */
    CLEANUP_FREE char *o2 = NULL;
    rc = CTL(vm, &o2, NULL, "--json", "changes", "vda", "--from", "c1", "--max-results", "1");
    CLEANUP_JSON json_t *r2 = hq_json(o2);
    HQ_CHECK(rc == 0, "changes --max-results 1: %d %s", rc, o2);
    if (expect_extents(r2, since_c1, 5, "pages of one") < 0)
        return -1;
    /* Between two past checkpoints. */
    CLEANUP_FREE char *o3 = NULL;
    rc = CTL(vm, &o3, NULL, "changes", "vda", "--from", "c1", "--to", "c2", "--json");
    CLEANUP_JSON json_t *r3 = hq_json(o3);
    HQ_CHECK(rc == 0, "changes --to c2: %d %s", rc, o3);
    if (expect_extents(r3, since_c1, 3, "c1 to c2") < 0)
        return -1;
    CLEANUP_FREE char *o4 = NULL;
    rc = CTL(vm, &o4, NULL, "changes", "vda", "--from", "c2");
    HQ_CHECK(rc == 0 && !strncmp(o4, "disk vda, written since checkpoint c2 up to now: 2"
                                 " extents, 128 KiB of 16 MiB\nOFFSET", 84),
             "text: %d %s", rc, o4);
    rc = CTL(vm, NULL, NULL, "changes", "vda", "--from", "nosuch");
    HQ_CHECK(rc == 4, "unknown checkpoint: %d", rc);
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "backups", case_backups },
        { "verify", case_verify },
        { "restore-messages", case_restore_messages },
        { "json-errors", case_json_errors },
        { "status-away", case_status_away },
        { "create-skipped", case_create_skipped },
        { "progress", case_progress },
        { "changes", case_changes },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
