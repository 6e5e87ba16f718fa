/* Push backups: QEMU itself copies the point-in-time view into qcow2
 * targets.  Checked byte for byte against a shadow model of every guest
 * write: a full push and a chain of incrementals restore exactly the disk
 * at each backup-begin, also while the guest writes during the copy; an
 * incremental target holds exactly the clusters written since its base
 * and names the previous backup as its backing file; targets passed as
 * descriptors work without --backup-dir; file targets outside it are
 * refused; and a cancelled push, a SIGTERM of the agent and a killed
 * agent leave no target, job, node, bitmap or fd set behind. */
#include "tests/qemu/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define K64 HQ_K64
#define DISK_SIZE HQ_MODEL_SIZE
#define NCL HQ_MODEL_NCL
/* Slow enough (16 MiB in about 4 s) that writes land during the copy. */
#define SLOW "4194304"

/* --- setup --- */

/* A VM with n disks; DIR/backups made and given as --backup-dir when
 * backup_dir; the agent's push jobs copy at speed bytes/s (NULL: at once). */
static struct hq_vm *
push_vm(int n, bool backup_dir, const char *speed)
{
    if (speed)
        setenv("CKPTD_DEBUG_PUSH_SPEED", speed, 1);
    else
        unsetenv("CKPTD_DEBUG_PUSH_SPEED");
    struct hq_vm *vm = hq_vm_scratch(n, DISK_SIZE, NULL, false);
    if (!vm)
        return NULL;
    CLEANUP_FREE char *dir = xasprintf("%s/backups", vm->dir);
    if (mkdir(dir, 0700) < 0 ||
        (backup_dir && (hq_agent_add_arg(vm, "--backup-dir") < 0 ||
                        hq_agent_add_arg(vm, dir) < 0)) ||
        hq_qemu_start(vm) < 0 || hq_agent_start(vm) < 0) {
        hq_fail("push VM setup");
        hq_vm_free(vm);
        return NULL;
    }
    /* The VM runs: QEMU 7.2 closes a removed fd set's descriptor only
     * while it does (monitor/fds.c; fixed in 9.1), and the tests assert
     * that no fd set of the agent's is left. */
    CLEANUP_JSON json_t *r = hq_cmd(vm->mon, "cont", NULL);
    if (!r) {
        hq_vm_free(vm);
        return NULL;
    }
    return vm;
}

static char *
bpath(struct hq_vm *vm, const char *leaf)
{
    return xasprintf("%s/backups/%s", vm->dir, leaf);
}

/* Waits for BACKUP_END of job; its status ("" when it never came). */
static const char *
wait_end(struct hq_vm *vm, json_t *job, char *buf, size_t len)
{
    double until = hq_now() + 60;
    snprintf(buf, len, "%s", "");
    while (hq_now() < until) {
        CLEANUP_JSON json_t *ev = hq_wait_event(vm->ctl, "BACKUP_END", until - hq_now());
        json_t *data = json_object_get(ev, "data");
        if (!ev)
            break;
        if (strcmp(hq_jstr(data, "id") ?: "", hq_jstr(job, "id") ?: "-") == 0) {
            snprintf(buf, len, "%s", hq_jstr(data, "status") ?: "?");
            break;
        }
    }
    return buf;
}

/* The image (and its backing chain) as raw bytes, DISK_SIZE of them. */
static int
read_image(const char *path, uint8_t *buf)
{
    CLEANUP_FREE char *raw = xasprintf("%s.raw", path);
    char *argv[] = { "qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                     (char *) path, raw, NULL };
    HQ_CHECK(hq_run_cmd(argv, NULL) == 0, "qemu-img convert %s", path);
    int fd = open(raw, O_RDONLY);
    HQ_CHECK(fd >= 0, "open %s", raw);
    ssize_t n = pread(fd, buf, DISK_SIZE, 0);
    close(fd);
    unlink(raw);
    HQ_CHECK(n == DISK_SIZE, "%s: read %zd bytes", raw, n);
    return 0;
}

static int
expect_image(const char *path, const uint8_t *want)
{
    CLEANUP_FREE uint8_t *buf = xmalloc(DISK_SIZE);
    if (read_image(path, buf) < 0)
        return -1;
    int64_t x = hq_first_diff(buf, want, DISK_SIZE);
    HQ_CHECK(x < 0, "%s: byte %" PRId64 " is 0x%02x, the disk at backup-begin "
             "held 0x%02x", path, x, buf[x < 0 ? 0 : x], want[x < 0 ? 0 : x]);
    return 0;
}

/* qemu-img info of the image alone: its backing file name ("" if none). */
static int
expect_backing(const char *path, const char *want)
{
    char *argv[] = { "qemu-img", "info", "--output=json", (char *) path, NULL };
    CLEANUP_FREE char *out = NULL;
    HQ_CHECK(hq_run_cmd(argv, &out) == 0, "qemu-img info %s", path);
    CLEANUP_JSON json_t *info = hq_json(out);
    const char *b = hq_jstr(info, "backing-filename") ?: "";
    HQ_CHECK(strcmp(hq_jstr(info, "format") ?: "", "qcow2") == 0 && strcmp(b, want) == 0,
             "%s: backing '%s', want '%s'", path, b, want);
    return 0;
}

/* The 64 KiB clusters the image itself holds (not its backing file) are
 * exactly want: an incremental target has only what changed. */
static int
expect_allocated(const char *path, const uint8_t *want)
{
    CLEANUP_FREE char *spec = xasprintf("json:{\"driver\": \"qcow2\", \"backing\": null, "
                                        "\"file\": {\"driver\": \"file\", "
                                        "\"filename\": \"%s\"}}", path);
    char *argv[] = { "qemu-img", "map", "--output=json", spec, NULL };
    CLEANUP_FREE char *out = NULL;
    HQ_CHECK(hq_run_cmd(argv, &out) == 0, "qemu-img map %s", path);
    CLEANUP_JSON json_t *map = hq_json(out);
    uint8_t got[NCL] = { 0 };
    size_t i;
    json_t *e;
    json_array_foreach(map, i, e) {
        /* Data, or a cluster the image itself marks as zeros. */
        bool own = json_is_true(json_object_get(e, "data")) ||
                   (json_is_true(json_object_get(e, "zero")) &&
                    hq_jint(e, "depth") == 0 && json_is_true(json_object_get(e, "present")));
        for (int64_t c = hq_jint(e, "start") / K64;
             own && c * K64 < hq_jint(e, "start") + hq_jint(e, "length"); c++)
            got[c] = 1;
    }
    for (int c = 0; c < NCL; c++)
        HQ_CHECK(got[c] == want[c], "%s: cluster %d is %s, the disk's bitmap "
                 "says %s", path, c, got[c] ? "in the image" : "not in it",
                 want[c] ? "written" : "clean");
    return 0;
}

/* Nothing of a push left: the pull leftovers (jobs, nodes, bitmaps,
 * exports, scratch files), no fd set of ours in QEMU, and no ckptd-*
 * file (a partial target) in the backup directory. */
static int
expect_clean(struct hq_vm *vm, const char *when)
{
    if (hq_backup_expect_clean(vm, when) < 0)
        return -1;
    CLEANUP_JSON json_t *sets = hq_cmd(vm->mon, "query-fdsets", NULL);
    size_t i, j;
    json_t *s, *f;
    json_array_foreach(sets, i, s)
        json_array_foreach(json_object_get(s, "fds"), j, f)
            HQ_CHECK(strncmp(hq_jstr(f, "opaque") ?: "", "ckptd-", 6) != 0,
                     "%s: fd set left: %s", when, hq_str(s));
    CLEANUP_FREE char *dir = xasprintf("%s/backups", vm->dir);
    char *argv[] = { "ls", "-a", dir, NULL };
    CLEANUP_FREE char *out = NULL;
    HQ_CHECK(hq_run_cmd(argv, &out) == 0, "ls %s", dir);
    HQ_CHECK(!strstr(out, "ckptd-"), "%s: partial target left in %s: %s", when, dir, out);
    return 0;
}

/* A zeroed range (a zero cluster in the disk's image, not zero bytes). */
static int
mzero(struct hq_vm *vm, struct hq_model *m, int64_t off, int64_t len)
{
    CLEANUP_FREE char *cmd = xasprintf("qemu-io -d %s/virtio-backend \"write -z %" PRId64
                                       " %" PRId64 "\"", m->disk, off, len);
    HQ_CHECK(hq_hmp(vm, cmd) == 0, "%s", cmd);
    memset(m->data + off, 0, (size_t) len);
    for (int s = 0; s < HQ_MODEL_SLOTS; s++)
        if (m->active[s])
            for (int64_t c = off / K64; c * K64 < off + len; c++)
                m->since[s][c] = 1;
    return 0;
}

/* getfd with the descriptor as SCM_RIGHTS on the control socket. */
static int
send_fd(struct hq_conn *c, const char *name, int fd)
{
    CLEANUP_FREE char *line = xasprintf("{\"execute\": \"getfd\", \"arguments\": "
                                        "{\"fdname\": \"%s\"}, \"id\": \"fd-%s\"}\n",
                                        name, name);
    HQ_CHECK(fd_send(c->fd, line, strlen(line), fd) == (ssize_t) strlen(line),
             "sendmsg: %s", strerror(errno));
    CLEANUP_JSON json_t *r = hq_read_reply(c, 10);
    HQ_CHECK(r && json_object_get(r, "return"), "getfd %s: %s", name, hq_str(r));
    return 0;
}

/* push_vm with the failure injector (tests/tools/qmp-inject, which passes
 * descriptors on) between the agent and QEMU. */
static struct hq_vm *
push_vm_inject(void)
{
    unsetenv("CKPTD_DEBUG_PUSH_SPEED");
    struct hq_vm *vm = hq_vm_scratch(1, DISK_SIZE, NULL, false);
    if (!vm)
        return NULL;
    CLEANUP_FREE char *dir = xasprintf("%s/backups", vm->dir);
    CLEANUP_JSON json_t *r = NULL;
    if (mkdir(dir, 0700) < 0 || hq_agent_add_arg(vm, "--backup-dir") < 0 ||
        hq_agent_add_arg(vm, dir) < 0 || hq_qemu_start(vm) < 0 ||
        hq_inject_start(vm) < 0 || hq_agent_start(vm) < 0 ||
        !(r = hq_cmd(vm->mon, "cont", NULL))) {
        hq_fail("push VM setup (inject)");
        hq_vm_free(vm);
        return NULL;
    }
    return vm;
}

/* --- cases --- */

/* A full push with checkpoint c1 while the guest writes during the copy:
 * the target is the disk at backup-begin, query-backup shows the copy
 * going on, and the job ends by itself, completed, with nothing left. */
static int
test_full_point_in_time(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, SLOW);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    if (hq_mwrite(vm, m, 0x11, 0, 5 * MiB) < 0 || hq_mwrite(vm, m, 0x12, 9 * MiB, 3 * K64) < 0 ||
        hq_mwrite(vm, m, 0x13, DISK_SIZE - K64, K64) < 0)
        return -1;
    CLEANUP_FREE char *target = bpath(vm, "vda.full.qcow2");
    CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"checkpoint\": "
                                        "{\"name\": \"c1\"}, \"targets\": {\"vda\": "
                                        "{\"file\": \"%s\"}}}", target);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
    HQ_CHECK(job, "push full");
    CLEANUP_FREE uint8_t *at_begin = xmalloc(DISK_SIZE);
    memcpy(at_begin, m->data, DISK_SIZE);
    json_t *d = hq_job_disk(job, "vda");
    HQ_CHECK(strcmp(hq_jstr(job, "mode") ?: "", "push") == 0 &&
             strcmp(hq_jstr(d, "mode") ?: "", "full") == 0 &&
             strcmp(hq_jstr(json_object_get(d, "target"), "file") ?: "", target) == 0 &&
             !json_object_get(d, "uri"), "job: %s", hq_str(job));
    /* While QEMU copies: over copied and not yet copied clusters. */
    if (hq_mwrite(vm, m, 0x21, 0, 2 * MiB) < 0 || hq_mwrite(vm, m, 0x22, 12 * MiB, MiB) < 0 ||
        hq_mwrite(vm, m, 0x23, DISK_SIZE - K64, K64) < 0)
        return -1;
    CLEANUP_JSON json_t *q = hq_cmd(vm->ctl, "query-backup",
                                    json_pack("{s:s}", "id", hq_jstr(job, "id")));
    json_t *p = json_object_get(hq_job_disk(q, "vda"), "progress");
    HQ_CHECK(q && strcmp(hq_jstr(q, "status") ?: "", "running") == 0 &&
             hq_jint(p, "total") == DISK_SIZE && hq_jint(p, "current") < DISK_SIZE,
             "the copy is not going on during the writes: %s", hq_str(q));
    HQ_CHECK(access(target, F_OK) < 0, "the target has its name before it is complete");
    char st[32];
    HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "completed") == 0, "BACKUP_END %s", st);
    if (expect_clean(vm, "after the push") < 0 || expect_image(target, at_begin) < 0 ||
        expect_backing(target, "") < 0)
        return -1;
    /* c1 is the point of the copy: it holds exactly the later writes. */
    CLEANUP_JSON json_t *c1 = hq_ckpt_get(vm->ctl, "c1", false);
    HQ_CHECK(c1, "c1 after the push");
    HQ_CHECK(hq_bitmap_dirty(vm, "vda", "c1") == 2 * MiB + MiB + K64, "c1 counts %" PRId64,
             hq_bitmap_dirty(vm, "vda", "c1"));
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotFound", "backup-end",
                                        json_pack("{s:s}", "id", hq_jstr(job, "id")));
    HQ_CHECK(r, "backup-end of a finished push");
    return 0;
}

/* Full, then three incrementals, each with the next checkpoint, each
 * written while the guest writes (an unaligned write, one across two
 * clusters, a zeroed range): each target names the previous one as its
 * backing file, holds only the clusters written since it, and its chain
 * is the disk at its backup-begin. */
static int
test_chain(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, NULL);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    if (hq_mwrite(vm, m, 0x01, 0, 6 * MiB) < 0)
        return -1;
    CLEANUP_FREE char *prev = xstrdup("");
    for (int i = 0; i < 4; i++) {
        CLEANUP_FREE char *leaf = xasprintf("vda.c%d.%s.qcow2", i + 1, i ? "inc" : "full");
        CLEANUP_FREE char *target = bpath(vm, leaf);
        CLEANUP_FREE char *backing = i ? xasprintf(", \"backing-file\": \"%s\"", prev)
                                       : xstrdup("");
        CLEANUP_FREE char *inc = i ? xasprintf("\"incremental\": \"c%d\", ", i) : xstrdup("");
        CLEANUP_FREE char *args = xasprintf(
            "{\"mode\": \"push\", %s\"checkpoint\": {\"name\": \"c%d\"}, "
            "\"targets\": {\"vda\": {\"file\": \"%s\"%s}}}", inc, i + 1, target, backing);
        uint8_t want[NCL];
        memcpy(want, m->since[(i + 3) % 4], NCL);
        CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
        HQ_CHECK(job, "push %d", i);
        HQ_CHECK(strcmp(hq_jstr(hq_job_disk(job, "vda"), "mode") ?: "",
                        i ? "incremental" : "full") == 0, "job: %s", hq_str(job));
        CLEANUP_FREE uint8_t *at_begin = xmalloc(DISK_SIZE);
        memcpy(at_begin, m->data, DISK_SIZE);
        hq_model_mark(m, i);
        if (hq_mwrite(vm, m, 0x20 + i, (int64_t) (2 + 3 * i) * MiB + 4 * KiB, 8 * KiB) < 0 ||
            hq_mwrite(vm, m, 0x30 + i, (int64_t) (1 + i) * MiB - KiB, 2 * KiB) < 0 ||
            mzero(vm, m, (int64_t) (4 + i) * MiB, 2 * K64) < 0)
            return -1;
        char st[32];
        HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "completed") == 0,
                 "push %d: BACKUP_END %s", i, st);
        if (expect_image(target, at_begin) < 0 || expect_backing(target, prev) < 0 ||
            (i && expect_allocated(target, want) < 0))
            return -1;
        free(prev);
        prev = xstrdup(leaf);
    }
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && strcmp(names, "c1,c2,c3,c4") == 0, "checkpoints: %s", names);
    return expect_clean(vm, "after the chain");
}

/* An incremental push copies a disk that is not in its base checkpoint
 * in full, saying why (as a pull does): its target is a whole image
 * with no backing file, the other disk's holds only what changed. */
static int
test_full_disk_in_incremental(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(2, true, NULL);
    HQ_CHECK(vm, "setup");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    if (hq_mwrite(vm, ma, 0xa1, 0, 2 * MiB) < 0 || hq_mwrite(vm, mb, 0xa2, MiB, MiB) < 0)
        return -1;
    CLEANUP_FREE char *fa = bpath(vm, "vda.c1.full.qcow2");
    CLEANUP_FREE char *a1 = xasprintf("{\"mode\": \"push\", \"checkpoint\": {\"name\": "
                                      "\"c1\", \"disks\": [\"vda\"]}, \"targets\": "
                                      "{\"vda\": {\"file\": \"%s\"}}}", fa);
    CLEANUP_JSON json_t *j1 = hq_backup_begin(vm, a1);
    HQ_CHECK(j1, "full push of vda with c1 on vda only");
    char st[32];
    HQ_CHECK(strcmp(wait_end(vm, j1, st, sizeof st), "completed") == 0, "BACKUP_END %s", st);
    hq_model_mark(ma, 0);
    if (hq_mwrite(vm, ma, 0xa3, 5 * MiB, K64) < 0 || hq_mwrite(vm, mb, 0xa4, 7 * MiB, K64) < 0)
        return -1;
    CLEANUP_FREE char *ia = bpath(vm, "vda.c2.inc.qcow2"), *fb = bpath(vm, "vdb.c2.full.qcow2");
    CLEANUP_FREE char *a2 = xasprintf("{\"mode\": \"push\", \"incremental\": \"c1\", "
                                      "\"checkpoint\": {\"name\": \"c2\"}, \"targets\": "
                                      "{\"vda\": {\"file\": \"%s\", \"backing-file\": "
                                      "\"vda.c1.full.qcow2\"}, \"vdb\": \"%s\"}}", ia, fb);
    CLEANUP_JSON json_t *j2 = hq_backup_begin(vm, a2);
    HQ_CHECK(j2, "incremental push of both");
    json_t *db = hq_job_disk(j2, "vdb");
    HQ_CHECK(strcmp(hq_jstr(hq_job_disk(j2, "vda"), "mode") ?: "", "incremental") == 0 &&
             strcmp(hq_jstr(db, "mode") ?: "", "full") == 0 &&
             strstr(hq_jstr(db, "reason") ?: "", "not in checkpoint 'c1'"),
             "job: %s", hq_str(j2));
    CLEANUP_FREE uint8_t *a0 = xmalloc(DISK_SIZE), *b0 = xmalloc(DISK_SIZE);
    memcpy(a0, ma->data, DISK_SIZE);
    memcpy(b0, mb->data, DISK_SIZE);
    uint8_t want[NCL];
    memcpy(want, ma->since[0], NCL);
    HQ_CHECK(strcmp(wait_end(vm, j2, st, sizeof st), "completed") == 0, "BACKUP_END %s", st);
    if (expect_image(ia, a0) < 0 || expect_allocated(ia, want) < 0 ||
        expect_image(fb, b0) < 0 || expect_backing(fb, "") < 0)
        return -1;
    return expect_clean(vm, "after the pushes");
}

/* Targets the client opened itself and passed as descriptors, with no
 * --backup-dir at all: a full and an incremental of two disks. */
static int
test_fd_targets(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(2, false, NULL);
    HQ_CHECK(vm, "setup");
    struct hq_model ma_, mb_;
    HQ_CLEANUP_MODEL struct hq_model *ma = hq_model_init(&ma_, "vda");
    HQ_CLEANUP_MODEL struct hq_model *mb = hq_model_init(&mb_, "vdb");
    if (hq_mwrite(vm, ma, 0x41, MiB, 3 * MiB) < 0 || hq_mwrite(vm, mb, 0x42, 0, K64) < 0)
        return -1;
    const char *leaf[2][2] = { { "vda.full.qcow2", "vdb.full.qcow2" },
                               { "vda.inc.qcow2", "vdb.inc.qcow2" } };
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 2; k++) {
            CLEANUP_FREE char *path = bpath(vm, leaf[i][k]);
            int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            HQ_CHECK(fd >= 0, "create %s", path);
            int r = send_fd(vm->ctl, k ? "tb" : "ta", fd);
            close(fd);
            if (r < 0)
                return -1;
        }
        CLEANUP_FREE char *args = i
            ? xasprintf("{\"mode\": \"push\", \"incremental\": \"c1\", \"targets\": "
                        "{\"vda\": {\"fd\": \"ta\", \"backing-file\": \"%s\"}, "
                        "\"vdb\": {\"fd\": \"tb\", \"backing-file\": \"%s\"}}}",
                        leaf[0][0], leaf[0][1])
            : xstrdup("{\"mode\": \"push\", \"checkpoint\": {\"name\": \"c1\"}, "
                      "\"targets\": {\"vda\": {\"fd\": \"ta\"}, \"vdb\": {\"fd\": \"tb\"}}}");
        CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
        HQ_CHECK(job, "push %d with fd targets", i);
        HQ_CHECK(strcmp(hq_jstr(json_object_get(hq_job_disk(job, "vdb"), "target"), "fd")
                        ?: "", "tb") == 0, "job: %s", hq_str(job));
        CLEANUP_FREE uint8_t *a0 = xmalloc(DISK_SIZE), *b0 = xmalloc(DISK_SIZE);
        memcpy(a0, ma->data, DISK_SIZE);
        memcpy(b0, mb->data, DISK_SIZE);
        hq_model_mark(ma, 0);
        hq_model_mark(mb, 0);
        if (hq_mwrite(vm, ma, 0x50 + i, 8 * MiB, 2 * K64) < 0 ||
            hq_mwrite(vm, mb, 0x52 + i, 3 * MiB, K64) < 0)
            return -1;
        char st[32];
        HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "completed") == 0,
                 "push %d: BACKUP_END %s", i, st);
        CLEANUP_FREE char *pa = bpath(vm, leaf[i][0]), *pb = bpath(vm, leaf[i][1]);
        if (expect_image(pa, a0) < 0 || expect_image(pb, b0) < 0 ||
            expect_backing(pa, i ? leaf[0][0] : "") < 0)
            return -1;
    }
    /* A name that was never passed. */
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "NotFound", "backup-begin",
        hq_json("{\"mode\": \"push\", \"targets\": {\"vda\": {\"fd\": \"nope\"}}}"));
    HQ_CHECK(r, "push with an unknown fd");
    return expect_clean(vm, "after the fd pushes");
}

/* File targets: inside --backup-dir (a subdirectory too) they work;
 * outside it, through a symlink out of it, over an existing file, or
 * with no --backup-dir they are refused, and nothing changes. */
static int
test_file_targets_confined(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, NULL);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *sub = bpath(vm, "sub");
    CLEANUP_FREE char *link = bpath(vm, "out");
    CLEANUP_FREE char *exists = bpath(vm, "exists.qcow2");
    HQ_CHECK(mkdir(sub, 0700) == 0 && symlink(vm->dir, link) == 0, "mkdir/symlink");
    int fd = open(exists, O_WRONLY | O_CREAT, 0600);
    HQ_CHECK(fd >= 0, "create %s", exists);
    close(fd);
    CLEANUP_JSON json_t *before = hq_snapshot(vm);
    struct { const char *prefix, *path, *cls; } bad[] = {
        { vm->dir, "/escaped.qcow2", "InvalidParameter" },      /* vm->dir itself */
        { vm->dir, "/backups/out/escaped.qcow2", "InvalidParameter" },
        { vm->dir, "/backups/nodir/vda.qcow2", "InvalidParameter" },
        { vm->dir, "/backups/exists.qcow2", "AlreadyExists" },
        { "", "backups/vda.qcow2", "InvalidParameter" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CLEANUP_FREE char *path = xasprintf("%s%s", bad[i].prefix, bad[i].path);
        CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"checkpoint\": "
                                            "{\"name\": \"x\"}, \"targets\": {\"vda\": "
                                            "{\"file\": \"%s\"}}}", path);
        CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, bad[i].cls, "backup-begin",
                                            hq_json(args));
        HQ_CHECK(r, "push to %s", path);
    }
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    HQ_CHECK(json_equal(before, after), "a refused push changed bitmaps: %s", hq_str(after));
    CLEANUP_FREE char *escaped = xasprintf("%s/escaped.qcow2", vm->dir);
    HQ_CHECK(access(escaped, F_OK) < 0, "a refused push wrote %s", escaped);
    CLEANUP_FREE char *ok = xasprintf("%s/vda.qcow2", sub);
    CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"targets\": {\"vda\": "
                                        "\"%s\"}}", ok);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
    HQ_CHECK(job, "push into a subdirectory");
    char st[32];
    HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "completed") == 0, "BACKUP_END %s", st);
    CLEANUP_FREE uint8_t *zero = xcalloc(1, DISK_SIZE);
    if (expect_image(ok, zero) < 0 || expect_clean(vm, "after the pushes") < 0)
        return -1;

    /* The same agent without --backup-dir: Unsupported. */
    CLEANUP_VM struct hq_vm *vm2 = push_vm(1, false, NULL);
    HQ_CHECK(vm2, "setup 2");
    CLEANUP_FREE char *t2 = bpath(vm2, "vda.qcow2");
    CLEANUP_FREE char *a2 = xasprintf("{\"mode\": \"push\", \"targets\": {\"vda\": "
                                      "{\"file\": \"%s\"}}}", t2);
    CLEANUP_JSON json_t *r2 = hq_cmd_err(vm2->ctl, "Unsupported", "backup-begin", hq_json(a2));
    HQ_CHECK(r2, "file target without --backup-dir");
    return 0;
}

/* backup-end during the copy cancels it: the reply comes once everything
 * is gone; BACKUP_END says cancelled; no target file (nor partial one),
 * an fd target emptied; no job, node, bitmap or fd set; the new
 * checkpoint taken back, so the older one still covers every write. */
static int
test_cancel(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, SLOW);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    hq_model_mark(m, 0);
    if (hq_mwrite(vm, m, 0x61, 0, 12 * MiB) < 0)
        return -1;
    for (int fdcase = 0; fdcase < 2; fdcase++) {
        CLEANUP_FREE char *target = bpath(vm, fdcase ? "vda.fd.qcow2" : "vda.inc.qcow2");
        CLEANUP_FREE char *tspec = NULL;
        if (fdcase) {
            int fd = open(target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            HQ_CHECK(fd >= 0, "create %s", target);
            int r = send_fd(vm->ctl, "t", fd);
            close(fd);
            if (r < 0)
                return -1;
            tspec = xstrdup("{\"fd\": \"t\"}");
        } else {
            tspec = xasprintf("{\"file\": \"%s\"}", target);
        }
        CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"incremental\": \"c1\", "
                                            "\"checkpoint\": {\"name\": \"c2\"}, "
                                            "\"targets\": {\"vda\": %s}}", tspec);
        CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
        HQ_CHECK(job, "push incremental");
        if (hq_mwrite(vm, m, 0x70 + fdcase, 13 * MiB + fdcase * K64, K64) < 0)
            return -1;
        CLEANUP_JSON json_t *q = hq_cmd(vm->ctl, "query-backup",
                                        json_pack("{s:s}", "id", hq_jstr(job, "id")));
        HQ_CHECK(q && strcmp(hq_jstr(q, "status") ?: "", "running") == 0,
                 "not running: %s", hq_str(q));
        if (hq_backup_end(vm, job) < 0)
            return -1;
        char st[32];
        HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "cancelled") == 0,
                 "BACKUP_END %s", st);
        if (expect_clean(vm, "after cancelling") < 0)
            return -1;
        struct stat sb;
        if (fdcase)
            HQ_CHECK(stat(target, &sb) == 0 && sb.st_size == 0,
                     "the fd target is not emptied: %lld bytes", (long long) sb.st_size);
        else
            HQ_CHECK(stat(target, &sb) < 0, "a cancelled push left %s", target);
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        HQ_CHECK(names && strcmp(names, "c1") == 0, "checkpoints: %s", names);
        HQ_CHECK(hq_bitmap_recording(vm, "vda", "c1") == 1 &&
                 hq_bitmap_dirty(vm, "vda", "c1") == 12 * MiB + (fdcase + 1) * K64,
                 "c1 counts %" PRId64, hq_bitmap_dirty(vm, "vda", "c1"));
    }
    return 0;
}

/* SIGTERM of the agent during a copy: it cancels the job, removes the
 * partial target and QEMU's objects, and exits 0; a killed agent's
 * leftovers are swept by the next agent. */
static int
test_agent_exit(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, SLOW);
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_write(vm, "vda", 0x71, 0, 8 * MiB) == 0, "write");
    for (int kill9 = 0; kill9 < 2; kill9++) {
        CLEANUP_FREE char *target = bpath(vm, kill9 ? "b.qcow2" : "a.qcow2");
        CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"targets\": "
                                            "{\"vda\": {\"file\": \"%s\"}}}", target);
        CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
        HQ_CHECK(job, "push");
        CLEANUP_JSON json_t *jobs = hq_cmd(vm->mon, "query-jobs", NULL);
        HQ_CHECK(json_array_size(jobs) == 1, "QEMU's jobs: %s", hq_str(jobs));
        if (kill9) {
            hq_agent_kill(vm);
        } else if (hq_agent_stop(vm) < 0) {
            return -1;
        }
        if (kill9 && hq_agent_start(vm) < 0)
            return -1;
        if (!kill9 && hq_agent_start(vm) < 0)
            return -1;
        if (expect_clean(vm, kill9 ? "after kill -9 and a restart" : "after SIGTERM") < 0)
            return -1;
        HQ_CHECK(access(target, F_OK) < 0, "%s exists", target);
    }
    return 0;
}

/* <domainbackup mode='push'> maps onto the same command, and the running
 * job prints back as one (query-backup xml). */
static int
test_xml(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, SLOW);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    if (hq_mwrite(vm, m, 0x81, 2 * MiB, 3 * K64) < 0)
        return -1;
    CLEANUP_FREE char *target = bpath(vm, "vda.xml.qcow2");
    CLEANUP_FREE char *xml = xasprintf(
        "<domainbackup mode='push'><disks><disk name='vda' type='file'>"
        "<target file='%s'/><driver type='qcow2'/></disk></disks></domainbackup>", target);
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                      json_pack("{s:s,s:s}", "xml", xml, "checkpoint-xml",
                                                "<domaincheckpoint><name>c1</name>"
                                                "</domaincheckpoint>"));
    HQ_CHECK(job && strcmp(hq_jstr(job, "mode") ?: "", "push") == 0, "xml push: %s",
             hq_str(job));
    CLEANUP_JSON json_t *dump = hq_cmd(vm->ctl, "query-backup",
                                       json_pack("{s:s,s:b}", "id", hq_jstr(job, "id"),
                                                 "xml", 1));
    CLEANUP_FREE char *want = xasprintf("<target file='%s'/>", target);
    const char *x = hq_jstr(dump, "xml") ?: "";
    HQ_CHECK(strstr(x, "mode='push'") && strstr(x, want) && strstr(x, "<driver type='qcow2'/>"),
             "backup-dumpxml of a push: %s", x);
    char st[32];
    HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "completed") == 0, "BACKUP_END %s", st);
    if (expect_image(target, m->data) < 0)
        return -1;
    CLEANUP_JSON json_t *c1 = hq_ckpt_get(vm->ctl, "c1", false);
    HQ_CHECK(c1, "c1 made by the XML push");
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, "Unsupported", "backup-begin",
        json_pack("{s:s}", "xml", "<domainbackup mode='push'><disks><disk name='vda' "
                  "type='file'><target file='/x.raw'/><driver type='raw'/></disk>"
                  "</disks></domainbackup>"));
    HQ_CHECK(r, "raw target");
    return expect_clean(vm, "after the XML push");
}

/* ckptctl pull --push: a push of files ckptctl opened itself (no
 * --backup-dir on the agent): a full and an incremental, with writes
 * during the copy, give the directory the NBD path gives: `backups` sees
 * the chain, `verify` checks the records' SHA-256, `restore` gives the
 * disk at each point. */
static int
test_ckptctl(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, false, NULL);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    if (hq_mwrite(vm, m, 0x91, 0, 4 * MiB) < 0)
        return -1;
    CLEANUP_FREE char *dir = xasprintf("%s/ckptctl", vm->dir);
    CLEANUP_FREE uint8_t *p1 = xmalloc(DISK_SIZE);
    memcpy(p1, m->data, DISK_SIZE);
    CLEANUP_FREE char *o1 = NULL;
    int rc = hq_ckptctl(vm, &o1, (const char *[]) { "pull", "--push", "--output",
                                                     dir, "--checkpoint", "p1", NULL });
    HQ_CHECK(rc == 0, "ckptctl pull (push): %d %s", rc, o1);
    if (hq_mwrite(vm, m, 0x92, 3 * MiB, 2 * MiB) < 0 || mzero(vm, m, 0, K64) < 0)
        return -1;
    CLEANUP_FREE uint8_t *p2 = xmalloc(DISK_SIZE);
    memcpy(p2, m->data, DISK_SIZE);
    CLEANUP_FREE char *o2 = NULL;
    rc = hq_ckptctl(vm, &o2, (const char *[]) { "--json", "pull", "--push", "--output",
                                                 dir, "--incremental", "p1", "--checkpoint",
                                                 "p2", NULL });
    HQ_CHECK(rc == 0, "ckptctl pull --incremental (push): %d %s", rc, o2);
    CLEANUP_JSON json_t *sum = hq_json(o2);
    json_t *d = json_array_get(json_object_get(sum, "disks"), 0);
    HQ_CHECK(strcmp(hq_jstr(d, "mode") ?: "", "incremental") == 0 &&
             strlen(hq_jstr(d, "sha256") ?: "") == 64, "summary: %s", o2);
    CLEANUP_FREE char *inc = xasprintf("%s/vda.p2.inc.qcow2", dir);
    if (expect_backing(inc, "vda.p1.full.qcow2") < 0)
        return -1;
    /* The agent logged pushes, and no NBD server ever ran. */
    CLEANUP_FREE char *log = hq_read_file(vm->agent_log);
    HQ_CHECK(log && strstr(log, "full, push") && strstr(log, "incremental, push") &&
             !strstr(log, "nbd-server-start"), "the agent's log shows no push");
    CLEANUP_FREE char *o3 = NULL;
    rc = hq_ckptctl(vm, &o3, (const char *[]) { "verify", dir, NULL });
    HQ_CHECK(rc == 0, "verify: %d %s", rc, o3);
    CLEANUP_FREE char *o4 = NULL;
    rc = hq_ckptctl(vm, &o4, (const char *[]) { "--json", "backups", dir, NULL });
    HQ_CHECK(rc == 0 && strstr(o4, "vda.p2.inc.qcow2") && strstr(o4, "complete"),
             "backups: %d %s", rc, o4);
    const char *ck[] = { "p1", "p2" };
    const uint8_t *want[] = { p1, p2 };
    for (int i = 0; i < 2; i++) {
        CLEANUP_FREE char *img = xasprintf("%s/restored-%s.qcow2", vm->dir, ck[i]);
        CLEANUP_FREE char *o5 = NULL;
        rc = hq_ckptctl(vm, &o5, (const char *[]) { "restore", dir, "--disk", "vda",
                                                     "--checkpoint", ck[i], "--output",
                                                     img, NULL });
        HQ_CHECK(rc == 0, "restore %s: %d %s", ck[i], rc, o5);
        if (expect_image(img, want[i]) < 0)
            return -1;
    }
    /* Flipping one byte of the incremental: verify says so. */
    int fd = open(inc, O_WRONLY);
    HQ_CHECK(fd >= 0 && pwrite(fd, "X", 1, 600) == 1, "corrupt %s", inc);
    close(fd);
    CLEANUP_FREE char *o6 = NULL;
    rc = hq_ckptctl(vm, &o6, (const char *[]) { "verify", dir, NULL });
    HQ_CHECK(rc == 1, "verify of a changed file: %d %s", rc, o6);
    return expect_clean(vm, "after ckptctl");
}

/* SIGINT during ckptctl's push: the job is cancelled, the files it
 * created are removed, the new checkpoint is gone; exit 130. */
static int
test_ckptctl_interrupt(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, false, SLOW);
    HQ_CHECK(vm, "setup");
    HQ_CHECK(hq_write(vm, "vda", 0x95, 0, 12 * MiB) == 0, "write");
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    CLEANUP_FREE char *dir = xasprintf("%s/ckptctl", vm->dir);
    CLEANUP_FREE char *log = xasprintf("%s/ckptctl.log", vm->dir);
    char *argv[] = { bin, "--socket", vm->ctl_sock, "pull", "--push", "--output", dir,
                     "--checkpoint", "i1", NULL };
    pid_t pid = hq_spawn(argv, log);
    HQ_CHECK(pid > 0, "spawn ckptctl");
    double until = hq_now() + 30;
    bool running = false;
    while (!running && hq_now() < until) {
        CLEANUP_JSON json_t *jobs = hq_cmd(vm->ctl, "query-backup", NULL);
        json_t *j = json_array_get(jobs, 0);
        running = j && strcmp(hq_jstr(j, "status") ?: "", "running") == 0;
        if (!running)
            hq_sleep_ms(20);
    }
    HQ_CHECK(running, "the push never ran");
    kill(pid, SIGINT);
    int st = 0;
    HQ_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    CLEANUP_FREE char *out = hq_read_file(log);
    HQ_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 130, "ckptctl exit %d: %s",
             WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
    CLEANUP_FREE char *full = xasprintf("%s/vda.i1.full.qcow2", dir);
    CLEANUP_FREE char *rec = xasprintf("%s/vda.i1.full.qcow2.json", dir);
    HQ_CHECK(access(full, F_OK) < 0 && access(rec, F_OK) < 0, "files left: %s", out);
    CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
    HQ_CHECK(names && !strcmp(names, ""), "checkpoints left: '%s' (%s)", names, out);
    return expect_clean(vm, "after SIGINT");
}

/* The agent aborted before each QMP command of an incremental push with
 * a new checkpoint (CKPTD_DEBUG_ABORT_AFTER=N): the next agent leaves no
 * partial target, job, node, bitmap or fd set, and the tree whole; a
 * target that got its name is the complete backup. */
static int
test_crash_points(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm(1, true, NULL);
    HQ_CHECK(vm, "setup");
    struct hq_model mm;
    HQ_CLEANUP_MODEL struct hq_model *m = hq_model_init(&mm, "vda");
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "checkpoint-create c1");
    if (hq_mwrite(vm, m, 0xb1, MiB, 3 * K64) < 0 || hq_agent_stop(vm) < 0)
        return -1;
    CLEANUP_FREE char *target = bpath(vm, "vda.c2.inc.qcow2");
    CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"incremental\": \"c1\", "
                                        "\"checkpoint\": {\"name\": \"c2\"}, \"targets\": "
                                        "{\"vda\": {\"file\": \"%s\"}}}", target);
    int crashes = 0;
    for (int n = 1; n < 100; n++) {
        char nbuf[16];
        snprintf(nbuf, sizeof nbuf, "%d", n);
        setenv("CKPTD_DEBUG_ABORT_AFTER", nbuf, 1);
        int spawned = hq_agent_spawn(vm);
        unsetenv("CKPTD_DEBUG_ABORT_AFTER");
        bool finished = false;
        if (spawned == 0 && hq_agent_wait_qemu(vm, "connected", 10) == 0) {
            /* Not hq_exec: a reply that never comes is the crash. */
            json_t *msg = json_pack("{s:s,s:o}", "execute", "backup-begin",
                                    "arguments", hq_json(args));
            CLEANUP_JSON json_t *job = hq_send_json(vm->ctl, msg) == 0
                                       ? hq_read_reply(vm->ctl, 30) : NULL;
            char st[32] = "";
            if (job && json_object_get(job, "return"))
                finished = strcmp(wait_end(vm, json_object_get(job, "return"), st,
                                           sizeof st), "completed") == 0;
        }
        /* A crash shows up as a lost connection: not this case's failure. */
        hq_agent_kill(vm);
        if (finished && hq_failed())
            return -1;
        if (hq_agent_start(vm) < 0 || expect_clean(vm, "after a crash") < 0 ||
            hq_tree_matches_qemu(vm, "after a crash") < 0) {
            hq_note("after a crash before QMP command %d", n);
            return -1;
        }
        if (access(target, F_OK) == 0 && expect_image(target, m->data) < 0)
            return -1;
        if (finished) {
            hq_note("the push ran to the end after %d crash points", crashes);
            HQ_CHECK(crashes > 10, "only %d crash points were exercised", crashes);
            return 0;
        }
        crashes++;
        /* Back to c1 alone: a crash after the transaction keeps c2 (no
         * agent is left to take it back; c1 covers its writes again). */
        unlink(target);
        json_decref(hq_exec(vm->ctl, "checkpoint-delete",
                            json_pack("{s:s}", "name", "c2")));
        if (hq_agent_stop(vm) < 0)
            return -1;
    }
    hq_fail("the push never finished");
    return -1;
}

/* Each QMP step of a push's begin answered with an error: the begin
 * fails naming it, and nothing is left: no target, partial file, job,
 * node, bitmap or fd set, and no new checkpoint. */
static int
test_step_fails(void)
{
    CLEANUP_VM struct hq_vm *vm = push_vm_inject();
    HQ_CHECK(vm, "setup");
    CLEANUP_JSON json_t *c0 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c0"));
    HQ_CHECK(c0 && hq_write(vm, "vda", 0xc1, 0, MiB) == 0, "c0, write");
    CLEANUP_FREE char *target = bpath(vm, "vda.k1.inc.qcow2");
    CLEANUP_FREE char *args = xasprintf("{\"mode\": \"push\", \"incremental\": \"c0\", "
                                        "\"checkpoint\": {\"name\": \"k1\"}, \"targets\": "
                                        "{\"vda\": {\"file\": \"%s\"}}}", target);
    hq_inject_mark(vm);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
    HQ_CHECK(job, "a clean push through the injector");
    CLEANUP_JSON json_t *seen = hq_inject_seen(vm);
    char st[32];
    HQ_CHECK(strcmp(wait_end(vm, job, st, sizeof st), "completed") == 0, "BACKUP_END %s", st);
    HQ_CHECK(unlink(target) == 0, "the clean push wrote no %s", target);
    json_decref(hq_cmd(vm->ctl, "checkpoint-delete", json_pack("{s:s}", "name", "k1")));
    /* The begin's steps: up to its transaction. */
    size_t nsteps = 0, i;
    json_t *cmd;
    json_array_foreach(seen, i, cmd) {
        nsteps = i + 1;
        if (strcmp(json_string_value(cmd), "transaction") == 0)
            break;
    }
    hq_note("a push begin makes %zu QMP commands: %s", nsteps, hq_str(seen));
    HQ_CHECK(nsteps > 5, "too few steps seen");
    for (i = 0; i < nsteps; i++) {
        const char *step = json_string_value(json_array_get(seen, i));
        int occ = 0;
        for (size_t k = 0; k <= i; k++)
            occ += strcmp(json_string_value(json_array_get(seen, k)), step) == 0;
        if (strncmp(step, "query-", 6) == 0)
            continue;
        char when[128];
        snprintf(when, sizeof when, "push begin with %s #%d failed", step, occ);
        HQ_CHECK(hq_inject_rules(vm, "fail %s %d\n", step, occ) == 0, "rules");
        CLEANUP_JSON json_t *r = hq_exec(vm->ctl, "backup-begin", hq_json(args));
        HQ_CHECK(r && hq_err_class(r) && strstr(hq_err_desc(r), step),
                 "%s: %s", when, hq_str(r));
        HQ_CHECK(hq_inject_rules(vm, "%s", "") == 0, "rules");
        if (expect_clean(vm, when) < 0 || hq_tree_matches_qemu(vm, when) < 0)
            return -1;
        CLEANUP_FREE char *names = hq_ckpt_names(vm->ctl);
        HQ_CHECK(names && strcmp(names, "c0") == 0, "%s: checkpoints %s", when, names);
        HQ_CHECK(access(target, F_OK) < 0, "%s: %s exists", when, target);
    }
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "push-full-point-in-time", test_full_point_in_time },
        { "push-incremental-chain", test_chain },
        { "push-incremental-full-disk", test_full_disk_in_incremental },
        { "push-fd-targets", test_fd_targets },
        { "push-file-targets-confined", test_file_targets_confined },
        { "push-cancel-leaves-nothing", test_cancel },
        { "push-agent-exit-unwinds", test_agent_exit },
        { "push-xml", test_xml },
        { "push-crash-points", test_crash_points },
        { "push-step-fails", test_step_fails },
        { "ckptctl-push", test_ckptctl },
        { "ckptctl-push-interrupt", test_ckptctl_interrupt },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
