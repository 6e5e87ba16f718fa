/* The shadow model of backup tests: see harness.h. */
#include "tests/qemu/harness.h"

#include <inttypes.h>
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>
#include <libgen.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K64 HQ_K64
#define DISK_SIZE HQ_MODEL_SIZE
#define NCL HQ_MODEL_NCL
#define SLOTS HQ_MODEL_SLOTS

void
hq_model_free(struct hq_model **m)
{
    if (*m)
        free((*m)->data);
}

struct hq_model *
hq_model_init(struct hq_model *m, const char *disk)
{
    memset(m, 0, sizeof *m);
    m->disk = disk;
    m->data = xcalloc(1, DISK_SIZE);
    return m;
}

/* From now on, slot records the clusters written. */
void
hq_model_mark(struct hq_model *m, int slot)
{
    memset(m->since[slot], 0, NCL);
    m->active[slot] = true;
}

int
hq_mwrite(struct hq_vm *vm, struct hq_model *m, int pat, int64_t off, int64_t len)
{
    HQ_CHECK(hq_write(vm, m->disk, pat, off, len) == 0, "write %s 0x%02x "
             "%" PRId64 "+%" PRId64, m->disk, pat, off, len);
    memset(m->data + off, pat, (size_t) len);
    for (int s = 0; s < SLOTS; s++)
        if (m->active[s])
            for (int64_t c = off / K64; c * K64 < off + len; c++)
                m->since[s][c] = 1;
    return 0;
}

json_t *
hq_job_disk(json_t *job, const char *disk)
{
    return hq_jfind(json_object_get(job, "disks"), "disk", disk);
}

/* A whole full export into buf. */
int
hq_read_full(json_t *job, const char *disk, uint8_t *buf)
{
    const char *uri = hq_jstr(hq_job_disk(job, disk), "uri");
    HQ_CHECK(uri, "no uri for %s: %s", disk, hq_str(job));
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, NULL);
    HQ_CHECK(h, "connect %s", uri);
    return hq_nbd_read(h, buf, 0, DISK_SIZE);
}

static char *
set_str(const uint8_t *set)
{
    char *s = xstrdup("");
    for (int c = 0; c < NCL; c++)
        if (set[c]) {
            char *t = xasprintf("%s%s%d", s, *s ? "," : "", c);
            free(s);
            s = t;
        }
    return s;
}

/* The incremental export of disk: its dirty map must be exactly want
 * (clusters), its bitmap named as the job says; the dirty clusters' data
 * are copied into base (the previous backup), which must then equal
 * expect (the disk at backup-begin). */
int
hq_apply_incremental(json_t *job, const char *disk, const uint8_t *want,
                  uint8_t *base, const uint8_t *expect)
{
    json_t *d = hq_job_disk(job, disk);
    const char *uri = hq_jstr(d, "uri"), *bitmap = hq_jstr(d, "bitmap");
    CLEANUP_FREE char *want_bitmap = xasprintf("ckptd:%s:%s", hq_jstr(job, "id"),
                                               disk);
    HQ_CHECK(uri && bitmap && strcmp(bitmap, want_bitmap) == 0,
             "disk entry %s (bitmap should be %s)", hq_str(d), want_bitmap);
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", bitmap);
    HQ_CLEANUP_NBD struct nbd_handle *h = hq_nbd_open(uri, ctx);
    HQ_CHECK(h, "connect %s with %s", uri, ctx);
    uint8_t dirty[NCL], full[NCL];
    HQ_CHECK(hq_nbd_map(h, ctx, DISK_SIZE, K64, 1, false, dirty) == 0, "map");
    /* The bitmap's own granularity is 64 KiB: no cluster half dirty. */
    HQ_CHECK(hq_nbd_map(h, ctx, DISK_SIZE, K64, 1, true, full) == 0, "map");
    HQ_CHECK(memcmp(dirty, full, NCL) == 0, "%s: partly dirty clusters", disk);
    if (memcmp(dirty, want, NCL) != 0) {
        CLEANUP_FREE char *g = set_str(dirty);
        CLEANUP_FREE char *w = set_str(want);
        HQ_CHECK(false, "%s: dirty clusters {%s}, want {%s}", disk, g, w);
    }
    for (int c = 0; c < NCL; c++)
        if (dirty[c])
            HQ_CHECK(hq_nbd_read(h, base + (int64_t) c * K64, (int64_t) c * K64,
                                 K64) == 0, "read cluster %d", c);
    int64_t x = hq_first_diff(base, expect, DISK_SIZE);
    HQ_CHECK(x < 0, "%s: previous backup + incremental differs from the disk at "
             "backup-begin at byte %" PRId64 " (cluster %" PRId64 "): 0x%02x, "
             "want 0x%02x", disk, x, x / K64, base[x < 0 ? 0 : x],
             expect[x < 0 ? 0 : x]);
    return 0;
}

/* The disk as it really is, through a last full backup, against the
 * model (so that the model itself is checked). */
int
hq_expect_disk(struct hq_vm *vm, const struct hq_model *m)
{
    CLEANUP_FREE char *args = xasprintf("{\"disks\": [\"%s\"]}", m->disk);
    CLEANUP_JSON json_t *job = hq_backup_begin(vm, args);
    HQ_CHECK(job, "final full backup");
    CLEANUP_FREE uint8_t *buf = xmalloc(DISK_SIZE);
    if (hq_read_full(job, m->disk, buf) < 0)
        return -1;
    int64_t x = hq_first_diff(buf, m->data, DISK_SIZE);
    HQ_CHECK(x < 0, "%s: disk byte %" PRId64 " is 0x%02x, model says 0x%02x",
             m->disk, x, buf[x < 0 ? 0 : x], m->data[x < 0 ? 0 : x]);
    return hq_backup_end(vm, job);
}


/* The format nodes of disk's chain, active layer first (query-block's
 * node, then each backing file's node), as a new array; NULL on error. */
json_t *
hq_disk_layers(struct hq_vm *vm, const char *disk)
{
    CLEANUP_JSON json_t *blocks = hq_cmd(vm->mon, "query-block", NULL);
    CLEANUP_JSON json_t *nodes = hq_cmd(vm->mon, "query-named-block-nodes",
                                        json_pack("{s:b}", "flat", 1));
    if (!blocks || !nodes)
        return NULL;
    const char *top = NULL;
    size_t i;
    json_t *b;
    json_array_foreach(blocks, i, b) {
        const char *qdev = hq_jstr(b, "qdev");
        json_t *ins = json_object_get(b, "inserted");
        CLEANUP_FREE char *want = xasprintf("/machine/peripheral/%s/", disk);
        if (ins && qdev && (strcmp(qdev, disk) == 0 ||
                            strncmp(qdev, want, strlen(want)) == 0))
            top = hq_jstr(ins, "node-name");
    }
    json_t *layers = json_array();
    json_t *n = top ? hq_jfind(nodes, "node-name", top) : NULL;
    /* Below a filter (a running backup's copy-before-write): the format
     * node that opens the same file. */
    for (int depth = 0; n && depth < 8 && strcmp(hq_jstr(n, "drv"), "qcow2") != 0 &&
                        strcmp(hq_jstr(n, "drv"), "raw") != 0; depth++) {
        json_t *below = NULL, *c;
        size_t k;
        json_array_foreach(nodes, k, c)
            if (hq_jstr(n, "file") && hq_jstr(c, "file") &&
                strcmp(hq_jstr(c, "file"), hq_jstr(n, "file")) == 0 &&
                (strcmp(hq_jstr(c, "drv"), "qcow2") == 0 ||
                 strcmp(hq_jstr(c, "drv"), "raw") == 0))
                below = c;
        n = below;
    }
    for (int depth = 0; n && depth < 16; depth++) {
        json_array_append(layers, n);
        const char *file = hq_jstr(json_object_get(n, "image"), "full-backing-filename");
        if (!file)
            file = hq_jstr(n, "backing_file");
        json_t *next = NULL, *c;
        size_t k;
        json_array_foreach(nodes, k, c)
            if (file && hq_jstr(c, "file") && strcmp(hq_jstr(c, "file"), file) == 0 &&
                strcmp(hq_jstr(c, "drv"), "file") != 0 && c != n)
                next = c;
        n = next;
    }
    return layers;
}

/* The agent's checkpoints against QEMU's bitmaps, disk by disk, over
 * every layer of the disk's chain: every listed checkpoint's bitmap
 * exists on a layer of each of its disks, every checkpoint bitmap QEMU
 * holds is listed, and a disk holding any has exactly one recording,
 * across all its layers. */
int
hq_tree_matches_qemu(struct hq_vm *vm, const char *when)
{
    CLEANUP_JSON json_t *list = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(list, "%s: checkpoint-list", when);
    for (int d = 0; d < vm->ndisks; d++) {
        const char *disk = vm->disks[d].name;
        CLEANUP_JSON json_t *layers = hq_disk_layers(vm, disk);
        HQ_CHECK(layers, "%s: layers of %s", when, disk);
        CLEANUP_JSON json_t *listed = json_array();
        size_t i, k;
        json_t *c, *cd, *layer;
        json_array_foreach(list, i, c)
            json_array_foreach(json_object_get(c, "disks"), k, cd)
                if (strcmp(hq_jstr(cd, "disk"), disk) == 0)
                    json_array_append_new(listed, json_string(hq_jstr(cd, "bitmap")));
        int recording = 0, ours = 0;
        CLEANUP_JSON json_t *seen = json_object();
        json_array_foreach(layers, k, layer) {
            json_t *bm;
            json_array_foreach(json_object_get(layer, "dirty-bitmaps"), i, bm) {
                const char *name = hq_jstr(bm, "name");
                if (!name || strncmp(name, "ckptd", 5) == 0)
                    continue;
                ours++;
                json_object_set_new(seen, name, json_true());
                if (hq_jbool(bm, "recording") == 1)
                    recording++;
                bool found = false;
                json_t *ln;
                size_t j;
                json_array_foreach(listed, j, ln)
                    found |= strcmp(json_string_value(ln), name) == 0;
                HQ_CHECK(found, "%s: QEMU holds bitmap '%s' on %s (%s), the agent "
                         "lists %s", when, name, disk, hq_jstr(layer, "node-name"),
                         hq_str(list));
            }
        }
        HQ_CHECK(json_object_size(seen) == json_array_size(listed),
                 "%s: %s: QEMU holds %zu checkpoint bitmaps, the agent lists %zu",
                 when, disk, json_object_size(seen), json_array_size(listed));
        HQ_CHECK(ours == 0 || recording == 1,
                 "%s: %s has %d recording checkpoint bitmaps across %zu layers", when,
                 disk, recording, json_array_size(layers));
    }
    return 0;
}


char *
hq_ckptctl_path(void)
{
    const char *env = getenv("CKPTCTL");
    if (env && *env)
        return xstrdup(env);
    CLEANUP_FREE char *agent = xstrdup(hq_agent_path());
    return xasprintf("%s/ckptctl", dirname(agent));
}

int
hq_ckptctl(struct hq_vm *vm, char **out, const char *const *args)
{
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    const char *argv[32] = { bin, "--socket", vm->ctl_sock };
    size_t n = 3;
    for (; *args && n + 1 < ARRAY_SIZE(argv); args++)
        argv[n++] = *args;
    argv[n] = NULL;
    return hq_run_cmd((char *const *) argv, out);
}

char *
hq_scratch_file(const char *dir, const char *job, const char *disk)
{
    CLEANUP_FREE char *tail = xasprintf("-%s-%s.qcow2", job, disk);
    DIR *d = opendir(dir);
    struct dirent *de;
    char *found = NULL;
    size_t tl = strlen(tail);
    while (d && !found && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (strncmp(de->d_name, "ckptd-", 6) == 0 && l > tl &&
            strcmp(de->d_name + l - tl, tail) == 0)
            found = xasprintf("%s/%s", dir, de->d_name);
    }
    if (d)
        closedir(d);
    return found;
}

/* A tmpfs over a scratch directory, mounted in a private mount namespace
 * of this test process (and so of the QEMU and agent it starts), unmounted
 * when the variable goes out of scope. */
void
hq_umount_cleanup(char **path)
{
    if (*path) {
        umount2(*path, MNT_DETACH);
        free(*path);
    }
}

/* 1: mounted; 0: cannot here (skip, reason in why); -1: error. */
int
hq_mount_tmpfs(const char *dir, int mib, char *why, size_t wlen)
{
    static bool private_ns;
    if (geteuid() != 0) {
        snprintf(why, wlen, "needs root to mount a small tmpfs");
        return 0;
    }
    if (!private_ns) {
        if (unshare(CLONE_NEWNS) < 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
            snprintf(why, wlen, "no private mount namespace: %s", strerror(errno));
            return 0;
        }
        private_ns = true;
    }
    CLEANUP_FREE char *opts = xasprintf("size=%dm,mode=0700", mib);
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
        snprintf(why, wlen, "mount tmpfs on %s: %s", dir, strerror(errno));
        return 0;
    }
    return 1;
}

