/* libvirt compatibility against a real QEMU (issue 5): checkpoint and
 * backup XML, redefine, and moving images between libvirt and ckptd.
 *
 * adopt-libvirt: images laid out exactly as libvirt lays them out (c1 added
 *   to the qcow2 files with `qemu-img bitmap --add` and written offline,
 *   c2 and c3 added at run time with block-dirty-bitmap-add persistent:true,
 *   every bitmap left recording) are adopted from a shuffled <checkpoints>
 *   list: c1 <- c2 <- c3, only c3 records, times and descriptions as given;
 *   incremental backups from c1, c2 and c3 export exactly the clusters a
 *   shadow model says were written since, and every byte of each disk.
 * redefine-bad-entry: a list with one bad entry (a bitmap missing on vdb, a
 *   parent that does not exist, a name twice, a name already defined) is
 *   refused and changes nothing: the bitmaps of both disks (names, flags,
 *   counts) and checkpoint-list compared before and after.
 * dumpxml-create-xml: dumpxml parses back into what checkpoint-get says;
 *   create from XML with a description and checkpoint='no' on vdb.
 * export-release: checkpoint-export release:true gives the images back in
 *   libvirt's layout (every bitmap recording, c1 covering all since c1, no
 *   ckptd records, nothing listed); redefining the exported XML brings the
 *   same checkpoints back and incrementals from them are still exact.
 * backup-xml: backup-begin from <domainbackup mode='pull'> with a unix
 *   <server>, backup='no' on a disk and checkpoint-xml; query-backup xml
 *   parses back; <scratch file=> places the scratch file; hostile XML (an
 *   external entity, billion laughs, a wrong namespace, a 2 MiB message)
 *   to checkpoint-create, checkpoint-redefine and backup-begin is refused
 *   and changes nothing.
 * xml-schema: an element libvirt's schemas do not allow is refused by
 *   checkpoint-create, backup-begin (also in checkpoint-xml) and
 *   checkpoint-redefine, changing nothing; <domain>'s content is not.
 * xml-disk-by-path: <disk name='/path/image.qcow2'> names the disk whose
 *   file it is in redefine, create and backup XML; an unknown path is
 *   NotFound, a disk named both ways is given twice.
 * ckptctl: the client's XML commands end to end (create --xml, dumpxml,
 *   export-xml --output, --release, adopt --xml, backup begin --xml,
 *   backup info --xml).
 */
#include "tests/qemu/harness.h"
#include "metadata/xml.h"

#include <dirent.h>
#include <libgen.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1024 * 1024)
#define K64 (64 * 1024)
#define DISK_SIZE (64 * MiB)
#define NCL (DISK_SIZE / K64)

static const char *const DISKS[] = { "vda", "vdb" };

/* ------------------------------------------------------- shadow model */

/* What each 64 KiB cluster of each disk holds and when it was last
 * written.  Epoch k starts at the k-th checkpoint (epoch 0: before c1). */
struct shadow {
    int pat[NCL];               /* last pattern written; 0: never written */
    int epoch[NCL];             /* epoch of the last write; -1: never */
};
struct model {
    int epoch;
    struct shadow d[2];
};

static void
model_init(struct model *m)
{
    m->epoch = 0;
    for (size_t k = 0; k < 2; k++)
        for (int i = 0; i < NCL; i++) {
            m->d[k].pat[i] = 0;
            m->d[k].epoch[i] = -1;
        }
}

static struct shadow *
model_disk(struct model *m, const char *disk)
{
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
        if (strcmp(disk, DISKS[k]) == 0)
            return &m->d[k];
    return NULL;
}

static void
model_note(struct model *m, const char *disk, int pattern, int cl, int n)
{
    struct shadow *s = model_disk(m, disk);
    for (int i = cl; i < cl + n; i++) {
        s->pat[i] = pattern;
        s->epoch[i] = m->epoch;
    }
}

/* Bytes written since epoch `since` on disk, at 64 KiB granularity. */
static int64_t
model_since(struct model *m, const char *disk, int since)
{
    struct shadow *s = model_disk(m, disk);
    int64_t n = 0;
    for (int i = 0; i < NCL; i++)
        n += s->epoch[i] >= since;
    return n * K64;
}

/* A guest write through the device, noted in the model. */
static int
mwrite(struct hq_vm *vm, struct model *m, const char *disk, int pattern,
       int cl, int n)
{
    if (hq_write(vm, disk, pattern, (int64_t) cl * K64, (int64_t) n * K64) < 0) {
        hq_fail("write %s cluster %d", disk, cl);
        return -1;
    }
    model_note(m, disk, pattern, cl, n);
    return 0;
}

/* A write to the image file while QEMU is not running (qemu-io loads the
 * persistent bitmaps and the enabled ones record it, as in QEMU). */
static int
mwrite_offline(struct hq_vm *vm, struct model *m, const char *disk, int pattern,
               int cl, int n)
{
    CLEANUP_FREE char *cmd = xasprintf("write -P 0x%02x %d %d", pattern,
                                       cl * K64, n * K64);
    char *argv[] = { "qemu-io", "-f", "qcow2", "-c", cmd,
                     hq_vm_disk(vm, disk)->path, NULL };
    CLEANUP_FREE char *out = NULL;
    if (hq_run_cmd(argv, &out) != 0) {
        hq_fail("qemu-io %s: %s", cmd, out ? out : "");
        return -1;
    }
    model_note(m, disk, pattern, cl, n);
    return 0;
}

/* `qemu-img bitmap --add`, as a persistent enabled bitmap in the file. */
static int
image_bitmap_add(struct hq_vm *vm, const char *disk, const char *name)
{
    char *argv[] = { "qemu-img", "bitmap", "--add", hq_vm_disk(vm, disk)->path,
                     (char *) name, NULL };
    CLEANUP_FREE char *out = NULL;
    if (hq_run_cmd(argv, &out) != 0) {
        hq_fail("qemu-img bitmap --add %s: %s", name, out ? out : "");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- NBD */

static void
nbd_cleanup(struct nbd_handle **h)
{
    if (*h)
        nbd_close(*h);
}
#define CLEANUP_NBD __attribute__((cleanup(nbd_cleanup)))

struct dirtymap {
    bool dirty[NCL];
    uint64_t next;              /* where the reply ended */
    bool unaligned;
};

static int
dirty_cb(void *opaque, const char *meta, uint64_t offset, uint32_t *ents,
         size_t n, int *error)
{
    struct dirtymap *x = opaque;
    (void) error;
    if (strncmp(meta, "qemu:dirty-bitmap:", 18) != 0)
        return 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (offset % K64 || ents[i] % K64)
            x->unaligned = true;
        if (ents[i + 1] & 1)
            for (uint64_t o = offset; o < offset + ents[i] && o / K64 < NCL; o += K64)
                x->dirty[o / K64] = true;
        offset += ents[i];
    }
    x->next = offset;
    return 0;
}

/* Reads one disk's export: the dirty clusters must be exactly those the
 * model has written since epoch `since` (never fewer: a missing one is a
 * lost change; an extra one at this granularity is a wrong merge), and
 * every cluster must read as the model says. */
static int
check_export(const char *what, const char *uri, const char *bitmap,
             const struct shadow *s, int since)
{
    HQ_CHECK(uri && bitmap, "%s: no uri or bitmap", what);
    CLEANUP_FREE char *ctx = xasprintf("qemu:dirty-bitmap:%s", bitmap);
    CLEANUP_NBD struct nbd_handle *h = nbd_create();
    HQ_CHECK(h, "nbd_create: %s", nbd_get_error());
    HQ_CHECK(nbd_add_meta_context(h, ctx) == 0, "meta context: %s", nbd_get_error());
    HQ_CHECK(nbd_connect_uri(h, uri) == 0, "%s: connect %s: %s", what, uri,
             nbd_get_error());
    HQ_CHECK(nbd_can_meta_context(h, ctx) == 1, "%s: no %s", what, ctx);
    HQ_CHECK(nbd_get_size(h) == DISK_SIZE, "%s: size %" PRId64, what,
             nbd_get_size(h));

    CLEANUP_FREE struct dirtymap *x = xcalloc(1, sizeof *x);
    while (x->next < DISK_SIZE) {
        uint64_t at = x->next;
        nbd_extent_callback cb = { .callback = dirty_cb, .user_data = x };
        HQ_CHECK(nbd_block_status(h, DISK_SIZE - at, at, cb, 0) == 0 && x->next > at,
                 "%s: block status at %" PRIu64 ": %s", what, at, nbd_get_error());
    }
    HQ_CHECK(!x->unaligned, "%s: extents not at 64 KiB granularity", what);
    int written = 0, dirty = 0;
    for (int i = 0; i < NCL; i++) {
        bool want = s->epoch[i] >= since;
        written += want;
        dirty += x->dirty[i];
        HQ_CHECK(x->dirty[i] || !want, "%s: cluster %d (offset %d) was written "
                 "since the checkpoint but is not dirty", what, i, i * K64);
        HQ_CHECK(!x->dirty[i] || want, "%s: cluster %d (offset %d) is dirty but "
                 "was not written since the checkpoint (last written in epoch %d)",
                 what, i, i * K64, s->epoch[i]);
    }
    HQ_CHECK(written > 0 && dirty == written, "%s: %d dirty, %d written", what,
             dirty, written);

    /* Every byte of the disk, 1 MiB at a time. */
    CLEANUP_FREE unsigned char *buf = xmalloc(MiB);
    for (int off = 0; off < DISK_SIZE; off += MiB) {
        HQ_CHECK(nbd_pread(h, buf, MiB, (uint64_t) off, 0) == 0,
                 "%s: pread %d: %s", what, off, nbd_get_error());
        for (int c = 0; c < MiB / K64; c++) {
            int cl = off / K64 + c;
            for (int b = 0; b < K64; b++)
                HQ_CHECK(buf[c * K64 + b] == (unsigned char) s->pat[cl],
                         "%s: byte %d reads 0x%02x, 0x%02x was written last", what,
                         cl * K64 + b, buf[c * K64 + b], s->pat[cl]);
        }
    }
    return 0;
}

/* An incremental backup from `from` (made at epoch `since`) over every disk
 * of the checkpoint, checked disk by disk; a guest write after
 * backup-begin must not show in the export (it is noted in the model only
 * after the check). */
static int
check_incremental(struct hq_vm *vm, struct model *m, const char *from, int since)
{
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                      json_pack("{s:s}", "incremental", from));
    HQ_CHECK(job, "incremental from %s", from);
    const int late = 0xee, late_cl = NCL - 1;
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
        HQ_CHECK(hq_write(vm, DISKS[k], late, (int64_t) late_cl * K64, K64) == 0,
                 "write after backup-begin");
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(job, "disks"), i, d) {
        const char *disk = hq_jstr(d, "disk");
        CLEANUP_FREE char *what = xasprintf("incremental from %s, %s", from, disk);
        HQ_CHECK(disk && model_disk(m, disk), "job disk %s", hq_str(d));
        if (check_export(what, hq_jstr(d, "uri"), hq_jstr(d, "bitmap"),
                         model_disk(m, disk), since) < 0)
            return -1;
    }
    HQ_CHECK(json_array_size(json_object_get(job, "disks")) == ARRAY_SIZE(DISKS),
             "job disks: %s", hq_str(job));
    CLEANUP_JSON json_t *e = hq_cmd(vm->ctl, "backup-end",
                                    json_pack("{s:s}", "id", hq_jstr(job, "id")));
    HQ_CHECK(e, "backup-end");
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
        model_note(m, DISKS[k], late, late_cl, 1);
    return 0;
}

/* ------------------------------------------------------------- helpers */

/* A <domaincheckpoint> as libvirt writes it for vda and vdb. */
static char *
ckpt_xml(const char *name, const char *parent, long long ctime, const char *desc,
         bool vdb)
{
    CLEANUP_FREE char *p = parent ? xasprintf("  <parent>\n    <name>%s</name>\n"
                                              "  </parent>\n", parent) : xstrdup("");
    CLEANUP_FREE char *d = desc ? xasprintf("  <description>%s</description>\n", desc)
                                : xstrdup("");
    CLEANUP_FREE char *v = vdb ? xasprintf("    <disk name='vdb' checkpoint='bitmap'"
                                           " bitmap='%s'/>\n", name) : xstrdup("");
    return xasprintf("<domaincheckpoint>\n  <name>%s</name>\n%s%s"
                     "  <creationTime>%lld</creationTime>\n  <disks>\n"
                     "    <disk name='vda' checkpoint='bitmap' bitmap='%s'/>\n%s"
                     "  </disks>\n</domaincheckpoint>\n", name, d, p, ctime, name, v);
}

/* <checkpoints> around the given documents (taken). */
static char *
ckpts_xml(char **docs, size_t n)
{
    char *s = xstrdup("<checkpoints>\n");
    for (size_t i = 0; i < n; i++) {
        char *t = xasprintf("%s%s", s, docs[i]);
        free(s);
        free(docs[i]);
        s = t;
    }
    char *t = xasprintf("%s</checkpoints>\n", s);
    free(s);
    return t;
}

/* The bitmaps of both disks and the checkpoint list stay as they were. */
struct frozen {
    json_t *bitmaps;
    char *list;
};

static int
freeze(struct hq_vm *vm, struct frozen *f)
{
    f->bitmaps = hq_snapshot(vm);
    f->list = hq_ckpt_names(vm->ctl);
    HQ_CHECK(f->bitmaps && f->list, "snapshot");
    return 0;
}

static void
frozen_clear(struct frozen *f)
{
    json_decref(f->bitmaps);
    free(f->list);
    f->bitmaps = NULL;
    f->list = NULL;
}

static int
unchanged(struct hq_vm *vm, const struct frozen *f, const char *what)
{
    CLEANUP_JSON json_t *after = hq_snapshot(vm);
    CLEANUP_FREE char *list = hq_ckpt_names(vm->ctl);
    HQ_CHECK(after && json_equal(f->bitmaps, after), "%s changed bitmaps: %s -> %s",
             what, hq_str(f->bitmaps), hq_str(after));
    HQ_CHECK(list && strcmp(list, f->list) == 0, "%s changed the list: '%s' -> '%s'",
             what, f->list, list);
    return 0;
}

/* cmd must fail with cls (desc naming `name` when given) and change
 * nothing.  Steals args. */
static int
refused(struct hq_vm *vm, const char *what, const char *cls, const char *name,
        const char *cmd, json_t *args)
{
    struct frozen f = { 0 };
    if (freeze(vm, &f) < 0) {
        json_decref(args);
        frozen_clear(&f);
        return -1;
    }
    CLEANUP_JSON json_t *r = hq_cmd_err(vm->ctl, cls, cmd, args);
    int rc = 0;
    if (!r) {
        hq_fail("%s: %s not refused with %s", what, cmd, cls);
        rc = -1;
    } else if (name && !strstr(hq_err_desc(r), name)) {
        hq_fail("%s: desc does not name '%s': %s", what, name, hq_err_desc(r));
        rc = -1;
    } else {
        rc = unchanged(vm, &f, what);
    }
    frozen_clear(&f);
    return rc;
}

/* Each disk's bitmap `name`: present, and recording or not. */
static int
expect_recording(struct hq_vm *vm, const char *name, int recording)
{
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++) {
        int r = hq_bitmap_recording(vm, DISKS[k], name);
        HQ_CHECK(r == recording, "%s bitmap %s: recording %d, want %d", DISKS[k],
                 name, r, recording);
    }
    return 0;
}

/* libvirt's layout on both disks (QEMU running, agent not yet): c1 laid
 * into the files before QEMU starts and written offline, c2 and c3 added
 * by QMP as libvirt does, all recording, writes in every epoch.  Epochs:
 * 0 before c1, 1 after c1, 2 after c2, 3 after c3. */
static struct hq_vm *
libvirt_vm(struct model *m)
{
    struct hq_vm *vm = hq_vm_new();
    model_init(m);
    if (!vm)
        return NULL;
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
        if (hq_vm_add_disk(vm, DISKS[k], "qcow2", DISK_SIZE, false) < 0)
            goto fail;
    /* Epoch 0: before any checkpoint; never dirty in any backup. */
    if (mwrite_offline(vm, m, "vda", 0x0a, 100, 2) < 0 ||
        mwrite_offline(vm, m, "vdb", 0x0b, 200, 1) < 0)
        goto fail;
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
        if (image_bitmap_add(vm, DISKS[k], "c1") < 0)
            goto fail;
    m->epoch = 1;
    if (mwrite_offline(vm, m, "vda", 0x11, 0, 3) < 0 ||
        mwrite_offline(vm, m, "vdb", 0x12, 10, 1) < 0 ||
        hq_qemu_start(vm) < 0 ||
        mwrite(vm, m, "vda", 0x13, 20, 1) < 0)
        goto fail;
    const char *later[] = { "c2", "c3" };
    for (int c = 0; c < 2; c++) {
        for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
            if (hq_add_bitmap(vm, DISKS[k], later[c], true, false) < 0)
                goto fail;
        m->epoch++;
        int p = 0x20 + 0x10 * c;
        /* Overwrites of older clusters, and new ones, on both disks. */
        if (mwrite(vm, m, "vda", p, 1 + c, 1) < 0 ||
            mwrite(vm, m, "vda", p + 1, 30 + 10 * c, 2) < 0 ||
            mwrite(vm, m, "vdb", p + 2, 10, 1) < 0 ||
            mwrite(vm, m, "vdb", p + 3, 300 + c, 1) < 0)
            goto fail;
    }
    return vm;
fail:
    hq_vm_free(vm);
    return NULL;
}

/* c1 <- c2 <- c3 for libvirt_vm, shuffled: c3, c1, c2. */
static char *
libvirt_list_xml(void)
{
    char *docs[] = {
        ckpt_xml("c3", "c2", 1700000300, "third", true),
        ckpt_xml("c1", NULL, 1700000100, "first &amp; oldest", true),
        ckpt_xml("c2", "c1", 1700000200, NULL, true),
    };
    return ckpts_xml(docs, ARRAY_SIZE(docs));
}

static int
check_ckpt(struct hq_vm *vm, const char *name, const char *parent,
           long long ctime, const char *desc)
{
    CLEANUP_JSON json_t *c = hq_ckpt_get(vm->ctl, name, false);
    HQ_CHECK(c, "checkpoint-get %s", name);
    const char *p = hq_jstr(c, "parent"), *d = hq_jstr(c, "description");
    HQ_CHECK((!p && !parent) || (p && parent && !strcmp(p, parent)),
             "%s: parent %s", name, hq_str(c));
    HQ_CHECK((!d && !desc) || (d && desc && !strcmp(d, desc)),
             "%s: description %s", name, hq_str(c));
    HQ_CHECK(ctime < 0 || hq_jint(c, "creation-time") == ctime,
             "%s: creation-time %s", name, hq_str(c));
    json_t *disks = json_object_get(c, "disks");
    HQ_CHECK(json_array_size(disks) == 2 && hq_jfind(disks, "disk", "vda") &&
             hq_jfind(disks, "disk", "vdb"), "%s: disks %s", name, hq_str(c));
    return 0;
}

/* --------------------------------------------------------------- cases */

static int
case_adopt_libvirt(void)
{
    struct model m;
    CLEANUP_VM struct hq_vm *vm = libvirt_vm(&m);
    HQ_CHECK(vm, "setup");
    /* The layout is libvirt's: all three recording, each counting exactly
     * the writes since it (the offline writes reached c1 too). */
    const char *names[] = { "c1", "c2", "c3" };
    for (int c = 0; c < 3; c++) {
        if (expect_recording(vm, names[c], 1) < 0)
            return -1;
        for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++)
            HQ_CHECK(hq_bitmap_dirty(vm, DISKS[k], names[c]) ==
                     model_since(&m, DISKS[k], c + 1),
                     "setup: %s %s counts %" PRId64 ", want %" PRId64, DISKS[k],
                     names[c], hq_bitmap_dirty(vm, DISKS[k], names[c]),
                     model_since(&m, DISKS[k], c + 1));
    }
    HQ_CHECK(hq_agent_start(vm) == 0, "agent");
    CLEANUP_FREE char *none = hq_ckpt_names(vm->ctl);
    HQ_CHECK(none && !*none, "libvirt's bitmaps listed before adoption: %s", none);

    CLEANUP_FREE char *xml = libvirt_list_xml();
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-redefine",
                                    json_pack("{s:s}", "xml", xml));
    HQ_CHECK(r && json_array_size(r) == 3, "redefine: %s", hq_str(r));
    CLEANUP_JSON json_t *ev = hq_wait_event_named(vm->ctl, "CHECKPOINT_CREATED", "c3", 5);
    HQ_CHECK(ev, "no CHECKPOINT_CREATED for c3");
    CLEANUP_FREE char *list = hq_ckpt_names(vm->ctl);
    HQ_CHECK(list && !strcmp(list, "c1,c2,c3"), "list after adoption: %s", list);
    if (check_ckpt(vm, "c1", NULL, 1700000100, "first & oldest") < 0 ||
        check_ckpt(vm, "c2", "c1", 1700000200, NULL) < 0 ||
        check_ckpt(vm, "c3", "c2", 1700000300, "third") < 0)
        return -1;
    /* ckptd's chain: only the newest records; c3's count is untouched. */
    if (expect_recording(vm, "c1", 0) < 0 || expect_recording(vm, "c2", 0) < 0 ||
        expect_recording(vm, "c3", 1) < 0)
        return -1;
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++) {
        HQ_CHECK(hq_bitmap_dirty(vm, DISKS[k], "c3") == model_since(&m, DISKS[k], 3),
                 "%s c3 count %" PRId64, DISKS[k], hq_bitmap_dirty(vm, DISKS[k], "c3"));
        HQ_CHECK(hq_bitmap_count_prefix(vm, DISKS[k], "ckptd1:") == 3,
                 "%s: %d records", DISKS[k],
                 hq_bitmap_count_prefix(vm, DISKS[k], "ckptd1:"));
    }

    /* More writes after the adoption, into c3 only now. */
    if (mwrite(vm, &m, "vda", 0x51, 0, 1) < 0 || mwrite(vm, &m, "vda", 0x52, 500, 4) < 0 ||
        mwrite(vm, &m, "vdb", 0x53, 200, 1) < 0 || mwrite(vm, &m, "vdb", 0x54, 600, 1) < 0)
        return -1;
    if (check_incremental(vm, &m, "c1", 1) < 0 ||
        check_incremental(vm, &m, "c2", 2) < 0 ||
        check_incremental(vm, &m, "c3", 3) < 0)
        return -1;
    /* A checkpoint made afterwards chains on c3 as any other. */
    CLEANUP_JSON json_t *c4 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c4"));
    HQ_CHECK(c4 && !strcmp(hq_jstr(c4, "parent") ? hq_jstr(c4, "parent") : "", "c3"),
             "c4 after adoption: %s", hq_str(c4));
    m.epoch = 4;
    if (mwrite(vm, &m, "vdb", 0x61, 700, 1) < 0 || mwrite(vm, &m, "vda", 0x62, 1, 1) < 0)
        return -1;
    return check_incremental(vm, &m, "c2", 2);
}

static int
case_redefine_bad_entry(void)
{
    struct model m;
    CLEANUP_VM struct hq_vm *vm = libvirt_vm(&m);
    HQ_CHECK(vm, "setup");
    /* c4 only on vda: a list claiming it on vdb too has one missing bitmap. */
    HQ_CHECK(hq_add_bitmap(vm, "vda", "c4", true, false) == 0, "c4");
    HQ_CHECK(hq_agent_start(vm) == 0, "agent");

    {
        char *docs[] = { ckpt_xml("c1", NULL, 1700000100, NULL, true),
                         ckpt_xml("c2", "c1", 1700000200, NULL, true),
                         ckpt_xml("c3", "c2", 1700000300, NULL, true),
                         ckpt_xml("c4", "c3", 1700000400, NULL, true) };
        CLEANUP_FREE char *xml = ckpts_xml(docs, ARRAY_SIZE(docs));
        if (refused(vm, "missing bitmap on vdb", "NotFound", "c4",
                    "checkpoint-redefine", json_pack("{s:s}", "xml", xml)) < 0)
            return -1;
    }
    {
        char *docs[] = { ckpt_xml("c1", NULL, 1700000100, NULL, true),
                         ckpt_xml("c2", "nosuch", 1700000200, NULL, true),
                         ckpt_xml("c3", "c2", 1700000300, NULL, true) };
        CLEANUP_FREE char *xml = ckpts_xml(docs, ARRAY_SIZE(docs));
        if (refused(vm, "missing parent", "InvalidParameter", "nosuch",
                    "checkpoint-redefine", json_pack("{s:s}", "xml", xml)) < 0)
            return -1;
    }
    {
        char *docs[] = { ckpt_xml("c1", NULL, 1700000100, NULL, true),
                         ckpt_xml("c2", "c1", 1700000200, NULL, true),
                         ckpt_xml("c2", "c1", 1700000250, NULL, true) };
        CLEANUP_FREE char *xml = ckpts_xml(docs, ARRAY_SIZE(docs));
        if (refused(vm, "duplicate name", "InvalidParameter", "c2",
                    "checkpoint-redefine", json_pack("{s:s}", "xml", xml)) < 0)
            return -1;
    }
    /* A bitmap named differently from its checkpoint is refused too. */
    {
        CLEANUP_FREE char *xml = xstrdup(
            "<domaincheckpoint><name>c1</name><disks>"
            "<disk name='vda' checkpoint='bitmap' bitmap='c2'/>"
            "</disks></domaincheckpoint>");
        if (refused(vm, "bitmap named otherwise", "InvalidParameter", "c2",
                    "checkpoint-redefine", json_pack("{s:s}", "xml", xml)) < 0)
            return -1;
    }
    /* c1 alone is fine (a single <domaincheckpoint>)... */
    CLEANUP_FREE char *one = ckpt_xml("c1", NULL, 1700000100, NULL, true);
    CLEANUP_JSON json_t *r1 = hq_cmd(vm->ctl, "checkpoint-redefine",
                                     json_pack("{s:s}", "xml", one));
    HQ_CHECK(r1 && json_array_size(r1) == 1, "redefine c1: %s", hq_str(r1));
    if (expect_recording(vm, "c1", 1) < 0)
        return -1;
    /* ...and then a list naming c1 again changes nothing. */
    {
        char *docs[] = { ckpt_xml("c1", NULL, 1700000100, NULL, true),
                         ckpt_xml("c2", "c1", 1700000200, NULL, true),
                         ckpt_xml("c3", "c2", 1700000300, NULL, true) };
        CLEANUP_FREE char *xml = ckpts_xml(docs, ARRAY_SIZE(docs));
        if (refused(vm, "existing name", "AlreadyExists", "c1",
                    "checkpoint-redefine", json_pack("{s:s}", "xml", xml)) < 0)
            return -1;
    }
    /* The rest of the chain on top of c1, in a second step. */
    {
        char *docs[] = { ckpt_xml("c3", "c2", 1700000300, NULL, true),
                         ckpt_xml("c2", "c1", 1700000200, NULL, true) };
        CLEANUP_FREE char *xml = ckpts_xml(docs, ARRAY_SIZE(docs));
        CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-redefine",
                                        json_pack("{s:s}", "xml", xml));
        HQ_CHECK(r && json_array_size(r) == 2, "redefine c2, c3 on c1: %s", hq_str(r));
    }
    CLEANUP_FREE char *list = hq_ckpt_names(vm->ctl);
    HQ_CHECK(list && !strcmp(list, "c1,c2,c3"), "list: %s", list);
    if (expect_recording(vm, "c1", 0) < 0 || expect_recording(vm, "c2", 0) < 0 ||
        expect_recording(vm, "c3", 1) < 0)
        return -1;
    return check_incremental(vm, &m, "c1", 1);
}

/* dumpxml of `name` parsed back equals checkpoint-get's fields. */
static int
dumpxml_matches(struct hq_vm *vm, const char *name)
{
    CLEANUP_JSON json_t *g = hq_ckpt_get(vm->ctl, name, true);
    CLEANUP_JSON json_t *x = hq_cmd(vm->ctl, "checkpoint-dumpxml",
                                    json_pack("{s:s, s:b}", "name", name, "size", 1));
    HQ_CHECK(g && x && hq_jstr(x, "xml"), "dumpxml %s: %s", name, hq_str(x));
    const char *xml = hq_jstr(x, "xml");
    struct meta_xml_ckpt c;
    struct ckpt_error e = { 0 };
    HQ_CHECK(meta_xml_parse_checkpoint(xml, strlen(xml), &c, &e) == 0,
             "dumpxml %s does not parse: %s: %s", name, e.msg, xml);
    int rc = -1;
    const char *p = hq_jstr(g, "parent"), *d = hq_jstr(g, "description");
    json_t *disks = json_object_get(g, "disks");
    if (!c.name || strcmp(c.name, name))
        hq_fail("%s: name %s", name, c.name);
    else if ((p || c.parent) && (!p || !c.parent || strcmp(p, c.parent)))
        hq_fail("%s: parent %s vs %s", name, c.parent, p);
    else if ((d || c.description) && (!d || !c.description || strcmp(d, c.description)))
        hq_fail("%s: description '%s' vs '%s'", name, c.description, d);
    else if (!c.has_ctime || c.ctime != hq_jint(g, "creation-time"))
        hq_fail("%s: creationTime %lld vs %s", name, (long long) c.ctime, hq_str(g));
    else if (c.ndisks != 2)
        hq_fail("%s: %zu disks in %s", name, c.ndisks, xml);
    else
        rc = 0;
    for (size_t k = 0; rc == 0 && k < c.ndisks; k++) {
        json_t *gd = hq_jfind(disks, "disk", c.disks[k].name);
        if (strcmp(c.disks[k].name, DISKS[k]))
            rc = -1, hq_fail("%s: disk %zu is %s", name, k, c.disks[k].name);
        else if (!gd != !c.disks[k].checkpoint)
            rc = -1, hq_fail("%s: %s checkpoint=%d vs %s", name, c.disks[k].name,
                             c.disks[k].checkpoint, hq_str(disks));
        else if (gd && (!c.disks[k].bitmap || strcmp(c.disks[k].bitmap,
                                                     hq_jstr(gd, "bitmap"))))
            rc = -1, hq_fail("%s: %s bitmap %s", name, c.disks[k].name,
                             c.disks[k].bitmap);
        else if (gd && (!c.disks[k].has_size ||
                        (int64_t) c.disks[k].size != hq_jint(gd, "size")))
            rc = -1, hq_fail("%s: %s size %llu vs %s", name, c.disks[k].name,
                             (unsigned long long) c.disks[k].size, hq_str(gd));
    }
    meta_xml_ckpt_clear(&c);
    return rc;
}

static int
case_dumpxml_create_xml(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    const char *x1 =
        "<domaincheckpoint>\n"
        "  <name>x1</name>\n"
        "  <description>first &amp; \"only vda\" &lt;here&gt;</description>\n"
        "  <disks>\n"
        "    <disk name='vda' checkpoint='bitmap' bitmap='x1'/>\n"
        "    <disk name='vdb' checkpoint='no'/>\n"
        "  </disks>\n"
        "</domaincheckpoint>\n";
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "xml", x1));
    HQ_CHECK(c1 && !strcmp(hq_jstr(c1, "name") ? hq_jstr(c1, "name") : "", "x1"),
             "create from XML: %s", hq_str(c1));
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "x1") == 1, "no x1 on vda");
    HQ_CHECK(hq_bitmap(vm, "vdb", "x1") == NULL, "x1 on vdb despite checkpoint='no'");
    HQ_CHECK(hq_bitmap_count_prefix(vm, "vdb", "ckptd") == 0, "a record on vdb");
    CLEANUP_JSON json_t *g1 = hq_ckpt_get(vm->ctl, "x1", false);
    HQ_CHECK(g1 && json_array_size(json_object_get(g1, "disks")) == 1 &&
             hq_jfind(json_object_get(g1, "disks"), "disk", "vda") &&
             !strcmp(hq_jstr(g1, "description"), "first & \"only vda\" <here>"),
             "x1: %s", hq_str(g1));
    HQ_CHECK(hq_write(vm, "vda", 0x31, 0, 2 * K64) == 0, "write");
    CLEANUP_JSON json_t *c2 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s, s:s}", "name", "x2",
                                               "description", "both"));
    HQ_CHECK(c2, "x2");
    HQ_CHECK(hq_write(vm, "vda", 0x32, 5 * K64, K64) == 0 &&
             hq_write(vm, "vdb", 0x33, 7 * K64, 3 * K64) == 0, "write");
    /* dumpxml of a partial checkpoint: vdb is listed with checkpoint='no'. */
    if (dumpxml_matches(vm, "x1") < 0 || dumpxml_matches(vm, "x2") < 0)
        return -1;
    /* Create from XML with no disks: every capable disk, as libvirt. */
    CLEANUP_JSON json_t *c3 = hq_cmd(vm->ctl, "checkpoint-create", json_pack("{s:s}",
        "xml", "<domaincheckpoint><name>x3</name></domaincheckpoint>"));
    HQ_CHECK(c3 && json_array_size(json_object_get(c3, "disks")) == 2, "x3: %s",
             hq_str(c3));
    if (dumpxml_matches(vm, "x3") < 0)
        return -1;
    /* What ckptd cannot do is refused, and nothing changes. */
    if (refused(vm, "bitmap named otherwise", "Unsupported", "other",
                "checkpoint-create", json_pack("{s:s}", "xml",
                "<domaincheckpoint><name>x4</name><disks><disk name='vda' "
                "bitmap='other'/></disks></domaincheckpoint>")) < 0 ||
        refused(vm, "xml with name", "InvalidParameter", NULL, "checkpoint-create",
                json_pack("{s:s, s:s}", "name", "x4", "xml",
                          "<domaincheckpoint><name>x4</name></domaincheckpoint>")) < 0 ||
        refused(vm, "unknown disk", "NotFound", "vdz", "checkpoint-create",
                json_pack("{s:s}", "xml", "<domaincheckpoint><name>x4</name><disks>"
                          "<disk name='vdz'/></disks></domaincheckpoint>")) < 0 ||
        refused(vm, "existing", "AlreadyExists", "x2", "checkpoint-create",
                json_pack("{s:s}", "xml",
                          "<domaincheckpoint><name>x2</name></domaincheckpoint>")) < 0)
        return -1;
    CLEANUP_JSON json_t *nf = hq_cmd_err(vm->ctl, "NotFound", "checkpoint-dumpxml",
                                         json_pack("{s:s}", "name", "nosuch"));
    HQ_CHECK(nf, "dumpxml of a missing checkpoint");
    return 0;
}

static int
case_export_release(void)
{
    struct model m;
    model_init(&m);
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    if (mwrite(vm, &m, "vda", 0x01, 50, 1) < 0)
        return -1;
    const char *desc[] = { "first one", NULL, "third: <&>" };
    const char *names[] = { "c1", "c2", "c3" };
    for (int c = 0; c < 3; c++) {
        json_t *args = json_pack("{s:s}", "name", names[c]);
        if (desc[c])
            json_object_set_new(args, "description", json_string(desc[c]));
        CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-create", args);
        HQ_CHECK(r, "create %s", names[c]);
        m.epoch++;
        if (mwrite(vm, &m, "vda", 0x10 + c, c, 2) < 0 ||
            mwrite(vm, &m, "vdb", 0x20 + c, 10 * c, 1) < 0 ||
            mwrite(vm, &m, "vda", 0x30 + c, 100 + c, 1) < 0)
            return -1;
    }
    CLEANUP_JSON json_t *before = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(before && json_array_size(before) == 3, "list %s", hq_str(before));
    /* Without release: the list, nothing changes. */
    CLEANUP_JSON json_t *plain = hq_cmd(vm->ctl, "checkpoint-export", NULL);
    HQ_CHECK(plain && hq_jstr(plain, "xml"), "export: %s", hq_str(plain));
    struct frozen f = { 0 };
    if (freeze(vm, &f) < 0)
        return -1;
    int unch = unchanged(vm, &f, "export without release");
    frozen_clear(&f);
    if (unch < 0)
        return -1;

    CLEANUP_JSON json_t *rel = hq_cmd(vm->ctl, "checkpoint-export",
                                      json_pack("{s:b}", "release", 1));
    HQ_CHECK(rel && hq_jstr(rel, "xml"), "release: %s", hq_str(rel));
    HQ_CHECK(!strcmp(hq_jstr(rel, "xml"), hq_jstr(plain, "xml")),
             "release gave other XML: %s vs %s", hq_jstr(rel, "xml"),
             hq_jstr(plain, "xml"));
    const char *xml = hq_jstr(rel, "xml");
    struct meta_xml_ckpt *list = NULL;
    size_t n = 0;
    struct ckpt_error e = { 0 };
    HQ_CHECK(meta_xml_parse_checkpoints(xml, strlen(xml), &list, &n, &e) == 0,
             "export does not parse: %s", e.msg);
    int ok = n == 3;
    for (size_t i = 0; ok && i < n; i++)
        ok = list[i].name && !strcmp(list[i].name, names[i]) && list[i].ndisks == 2;
    meta_xml_ckpts_free(list, n);
    HQ_CHECK(ok, "export is not c1, c2, c3 oldest first: %s", xml);

    /* libvirt's layout: nothing listed, no records, all recording, and each
     * bitmap counts every write since its checkpoint. */
    CLEANUP_FREE char *none = hq_ckpt_names(vm->ctl);
    HQ_CHECK(none && !*none, "still listed after release: %s", none);
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++) {
        HQ_CHECK(hq_bitmap_count_prefix(vm, DISKS[k], "ckptd") == 0,
                 "%s keeps ckptd bitmaps: %s", DISKS[k],
                 hq_str(hq_bitmaps(vm, DISKS[k])));
        for (int c = 0; c < 3; c++) {
            HQ_CHECK(hq_bitmap_recording(vm, DISKS[k], names[c]) == 1,
                     "%s %s not recording", DISKS[k], names[c]);
            HQ_CHECK(hq_bitmap_dirty(vm, DISKS[k], names[c]) ==
                     model_since(&m, DISKS[k], c + 1),
                     "%s %s counts %" PRId64 ", want every write since: %" PRId64,
                     DISKS[k], names[c], hq_bitmap_dirty(vm, DISKS[k], names[c]),
                     model_since(&m, DISKS[k], c + 1));
        }
    }
    for (size_t k = 0; k < ARRAY_SIZE(DISKS); k++) {
        CLEANUP_JSON json_t *all = hq_bitmaps(vm, DISKS[k]);
        HQ_CHECK(all && json_array_size(all) == 3, "%s bitmaps: %s", DISKS[k],
                 hq_str(all));
    }
    /* Releasing nothing is no error and gives an empty list. */
    CLEANUP_JSON json_t *empty = hq_cmd(vm->ctl, "checkpoint-export",
                                        json_pack("{s:b}", "release", 1));
    HQ_CHECK(empty && hq_jstr(empty, "xml") && strstr(hq_jstr(empty, "xml"), "checkpoints")
             && !strstr(hq_jstr(empty, "xml"), "domaincheckpoint"),
             "empty export: %s", hq_str(empty));

    /* libvirt's time: writes reach every bitmap. */
    if (mwrite(vm, &m, "vda", 0x41, 400, 1) < 0 || mwrite(vm, &m, "vdb", 0x42, 0, 1) < 0)
        return -1;
    /* And back: the exported XML adopted again, c1 alone first (it must
     * record as the newest: the release enabled it), then the rest. */
    {
        struct meta_xml_ckpt *l = NULL;
        size_t ln = 0;
        struct ckpt_error pe = { 0 };
        HQ_CHECK(meta_xml_parse_checkpoints(xml, strlen(xml), &l, &ln, &pe) == 0 &&
                 ln == 3, "parse");
        CLEANUP_FREE char *first = meta_xml_format_checkpoint(&l[0]);
        CLEANUP_FREE char *rest = meta_xml_format_checkpoints(l + 1, 2);
        meta_xml_ckpts_free(l, ln);
        CLEANUP_JSON json_t *r1 = hq_cmd(vm->ctl, "checkpoint-redefine",
                                         json_pack("{s:s}", "xml", first));
        HQ_CHECK(r1 && json_array_size(r1) == 1, "redefine c1 of the export: %s",
                 hq_str(r1));
        if (expect_recording(vm, "c1", 1) < 0)
            return -1;
        CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-redefine",
                                        json_pack("{s:s}", "xml", rest));
        HQ_CHECK(r && json_array_size(r) == 2, "redefine c2, c3 of the export: %s",
                 hq_str(r));
    }
    CLEANUP_JSON json_t *after = hq_cmd(vm->ctl, "checkpoint-list", NULL);
    HQ_CHECK(after && json_equal(before, after), "checkpoints differ after the round "
             "trip: %s -> %s", hq_str(before), hq_str(after));
    if (expect_recording(vm, "c1", 0) < 0 || expect_recording(vm, "c2", 0) < 0 ||
        expect_recording(vm, "c3", 1) < 0)
        return -1;
    if (mwrite(vm, &m, "vda", 0x43, 401, 1) < 0)
        return -1;
    return check_incremental(vm, &m, "c1", 1) < 0 ? -1
           : check_incremental(vm, &m, "c2", 2);
}

/* The agent's scratch directory, from the <scratch file=> of a job. */
static char *
scratch_dir_of_job(struct hq_vm *vm)
{
    CLEANUP_JSON json_t *x = hq_cmd(vm->ctl, "query-backup",
                                    json_pack("{s:b}", "xml", 1));
    const char *xml = hq_jstr(x, "xml");
    struct meta_xml_backup b;
    struct ckpt_error e = { 0 };
    if (!xml || meta_xml_parse_backup(xml, strlen(xml), &b, &e) < 0) {
        hq_fail("query-backup xml: %s %s", hq_str(x), e.msg);
        return NULL;
    }
    char *dir = b.ndisks && b.disks[0].scratch ? xstrdup(b.disks[0].scratch) : NULL;
    meta_xml_backup_clear(&b);
    if (!dir) {
        hq_fail("no scratch file in %s", xml);
        return NULL;
    }
    *strrchr(dir, '/') = '\0';
    return dir;
}

static int
case_backup_xml(void)
{
    struct model m;
    model_init(&m);
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    if (mwrite(vm, &m, "vda", 0x01, 3, 1) < 0)
        return -1;
    CLEANUP_JSON json_t *c1 = hq_cmd(vm->ctl, "checkpoint-create",
                                     json_pack("{s:s}", "name", "c1"));
    HQ_CHECK(c1, "c1");
    m.epoch = 1;
    if (mwrite(vm, &m, "vda", 0x02, 8, 2) < 0 || mwrite(vm, &m, "vdb", 0x03, 9, 1) < 0)
        return -1;

    CLEANUP_FREE char *sock = xasprintf("%s/xml-nbd.sock", vm->dir);
    CLEANUP_FREE char *bx = xasprintf(
        "<domainbackup mode='pull'>\n"
        "  <incremental>c1</incremental>\n"
        "  <server transport='unix' socket='%s'/>\n"
        "  <disks>\n"
        "    <disk name='vda' backup='yes' type='file'/>\n"
        "    <disk name='vdb' backup='no'/>\n"
        "  </disks>\n"
        "</domainbackup>\n", sock);
    const char *cx = "<domaincheckpoint><name>c2</name>"
                     "<description>at the backup</description></domaincheckpoint>";
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin",
                                      json_pack("{s:s, s:s}", "xml", bx,
                                                "checkpoint-xml", cx));
    HQ_CHECK(job, "backup-begin from XML");
    m.epoch = 2;
    json_t *jd = json_object_get(job, "disks");
    json_t *vda = hq_jfind(jd, "disk", "vda");
    HQ_CHECK(json_array_size(jd) == 1 && vda && hq_jstr(vda, "bitmap") &&
             strstr(hq_jstr(vda, "uri"), sock) &&
             !strcmp(hq_jstr(job, "incremental"), "c1") &&
             !strcmp(hq_jstr(job, "checkpoint"), "c2"), "job: %s", hq_str(job));
    CLEANUP_JSON json_t *g2 = hq_ckpt_get(vm->ctl, "c2", false);
    HQ_CHECK(g2 && !strcmp(hq_jstr(g2, "parent"), "c1") &&
             !strcmp(hq_jstr(g2, "description"), "at the backup"), "c2: %s", hq_str(g2));

    /* backup-dumpxml: what the job is, as libvirt prints it. */
    CLEANUP_JSON json_t *qx = hq_cmd(vm->ctl, "query-backup",
                                     json_pack("{s:s, s:b}", "id", hq_jstr(job, "id"),
                                               "xml", 1));
    const char *dump = hq_jstr(qx, "xml");
    HQ_CHECK(dump, "query-backup xml: %s", hq_str(qx));
    struct meta_xml_backup b;
    struct ckpt_error e = { 0 };
    HQ_CHECK(meta_xml_parse_backup(dump, strlen(dump), &b, &e) == 0,
             "backup dumpxml does not parse: %s: %s", e.msg, dump);
    bool good = b.pull && b.incremental && !strcmp(b.incremental, "c1") &&
                b.transport && !strcmp(b.transport, "unix") && b.socket &&
                !strcmp(b.socket, sock) && b.ndisks == 1 &&
                !strcmp(b.disks[0].name, "vda") && b.disks[0].backup &&
                b.disks[0].exportname && !strcmp(b.disks[0].exportname, "vda") &&
                b.disks[0].exportbitmap &&
                !strcmp(b.disks[0].exportbitmap, hq_jstr(vda, "bitmap")) &&
                b.disks[0].scratch;
    meta_xml_backup_clear(&b);
    HQ_CHECK(good, "backup dumpxml: %s (job %s)", dump, hq_str(job));
    /* The export named there serves what changed since c1. */
    if (check_export("xml backup vda", hq_jstr(vda, "uri"), hq_jstr(vda, "bitmap"),
                     model_disk(&m, "vda"), 1) < 0)
        return -1;
    CLEANUP_FREE char *scratch = scratch_dir_of_job(vm);
    HQ_CHECK(scratch, "scratch dir");
    CLEANUP_JSON json_t *end = hq_cmd(vm->ctl, "backup-end",
                                      json_pack("{s:s}", "id", hq_jstr(job, "id")));
    HQ_CHECK(end, "backup-end");

    /* <scratch file=> in the agent's scratch directory is taken; elsewhere
     * it is refused; push mode and exportbitmap= are Unsupported. */
    {
        CLEANUP_FREE char *x = xasprintf(
            "<domainbackup mode='pull'><disks><disk name='vda'>"
            "<scratch file='%s/mine.qcow2'/></disk></disks></domainbackup>", scratch);
        CLEANUP_JSON json_t *j = hq_cmd(vm->ctl, "backup-begin",
                                        json_pack("{s:s}", "xml", x));
        HQ_CHECK(j && json_array_size(json_object_get(j, "disks")) == 1 &&
                 !hq_jstr(j, "incremental"), "full backup from XML: %s", hq_str(j));
        CLEANUP_JSON json_t *jend = hq_cmd(vm->ctl, "backup-end",
                                           json_pack("{s:s}", "id", hq_jstr(j, "id")));
        HQ_CHECK(jend, "backup-end");
    }
    if (refused(vm, "scratch elsewhere", "InvalidParameter", NULL, "backup-begin",
                json_pack("{s:s}", "xml", "<domainbackup mode='pull'><disks>"
                          "<disk name='vda'><scratch file='/tmp/x/y.qcow2'/></disk>"
                          "</disks></domainbackup>")) < 0 ||
        refused(vm, "push", "Unsupported", NULL, "backup-begin",
                json_pack("{s:s}", "xml", "<domainbackup><disks><disk name='vda'>"
                          "<target file='/tmp/t.qcow2'/></disk></disks>"
                          "</domainbackup>")) < 0 ||
        refused(vm, "exportbitmap", "Unsupported", "vda", "backup-begin",
                json_pack("{s:s}", "xml", "<domainbackup mode='pull'><incremental>c1"
                          "</incremental><disks><disk name='vda' exportbitmap='b'/>"
                          "</disks></domainbackup>")) < 0)
        return -1;

    /* Hostile documents: refused before anything happens. */
    const char *xxe =
        "<?xml version='1.0'?>\n<!DOCTYPE domaincheckpoint [\n"
        "  <!ENTITY x SYSTEM 'file:///etc/hostname'>\n]>\n"
        "<domaincheckpoint><name>&x;</name></domaincheckpoint>";
    const char *laughs =
        "<?xml version='1.0'?>\n<!DOCTYPE lolz [\n"
        " <!ENTITY lol 'lol'>\n"
        " <!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>\n"
        " <!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>\n"
        " <!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>\n"
        " <!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>\n"
        " <!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>\n"
        " <!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>\n"
        " <!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>\n"
        " <!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>\n"
        " <!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>\n"
        "]>\n<domaincheckpoint><name>c9</name><description>&lol9;</description>"
        "</domaincheckpoint>";
    const char *xxe_backup =
        "<?xml version='1.0'?>\n<!DOCTYPE domainbackup SYSTEM 'http://127.0.0.1:1/x.dtd'>\n"
        "<domainbackup mode='pull'><incremental>c1</incremental></domainbackup>";
    const char *ns = "<domaincheckpoint xmlns='http://example.com/not-libvirt'>"
                     "<name>c9</name></domaincheckpoint>";
    const char *broken = "<domaincheckpoint><name>c9</name>";
    const char *docs[] = { xxe, laughs, ns, broken };
    for (size_t i = 0; i < ARRAY_SIZE(docs); i++) {
        CLEANUP_FREE char *w1 = xasprintf("hostile %zu to checkpoint-create", i);
        CLEANUP_FREE char *w2 = xasprintf("hostile %zu to checkpoint-redefine", i);
        CLEANUP_FREE char *w3 = xasprintf("hostile %zu as checkpoint-xml", i);
        if (refused(vm, w1, "InvalidParameter", NULL, "checkpoint-create",
                    json_pack("{s:s}", "xml", docs[i])) < 0 ||
            refused(vm, w2, "InvalidParameter", NULL, "checkpoint-redefine",
                    json_pack("{s:s}", "xml", docs[i])) < 0 ||
            refused(vm, w3, "InvalidParameter", NULL, "backup-begin",
                    json_pack("{s:s, s:s}", "xml", "<domainbackup mode='pull'/>",
                              "checkpoint-xml", docs[i])) < 0)
            return -1;
    }
    if (refused(vm, "hostile backup", "InvalidParameter", NULL, "backup-begin",
                json_pack("{s:s}", "xml", xxe_backup)) < 0)
        return -1;
    /* A 2 MiB document: over the control socket's 1 MiB message limit, so
     * the transport refuses it (GenericError, PROTOCOL.md) before any XML
     * is read; the connection stays usable and nothing changed. */
    {
        struct frozen f = { 0 };
        if (freeze(vm, &f) < 0)
            return -1;
        size_t big = 2 * MiB;
        char *huge = xmalloc(big + 128);
        int len = sprintf(huge, "<domaincheckpoint><name>c9</name><description>");
        memset(huge + len, 'a', big);
        strcpy(huge + len + big, "</description></domaincheckpoint>");
        json_t *msg = json_pack("{s:s, s:{s:s}, s:i}", "execute", "checkpoint-create",
                                "arguments", "xml", huge, "id", 4242);
        free(huge);
        HQ_CHECK(hq_send_json(vm->ctl, msg) == 0, "send 2 MiB");
        CLEANUP_JSON json_t *rep = hq_read_reply(vm->ctl, 10);
        int rc = 0;
        if (!rep || !hq_err_class(rep))
            rc = -1, hq_fail("2 MiB document: %s", hq_str(rep));
        else
            hq_note("2 MiB document: %s: %s", hq_err_class(rep), hq_err_desc(rep));
        if (rc == 0)
            rc = unchanged(vm, &f, "2 MiB document");
        frozen_clear(&f);
        if (rc < 0)
            return -1;
    }
    /* And one just under the XML limit but with a description too long
     * for the record: InvalidParameter, nothing changed. */
    {
        size_t big = 900 * 1024;
        char *doc = xmalloc(big + 128);
        int len = sprintf(doc, "<domaincheckpoint><name>c9</name><description>");
        memset(doc + len, 'a', big);
        strcpy(doc + len + big, "</description></domaincheckpoint>");
        int rc = refused(vm, "900 KiB description", "InvalidParameter", NULL,
                         "checkpoint-create", json_pack("{s:s}", "xml", doc));
        free(doc);
        if (rc < 0)
            return -1;
    }
    CLEANUP_JSON json_t *jobs = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(jobs && json_array_size(jobs) == 0, "jobs left: %s", hq_str(jobs));
    CLEANUP_FREE char *list = hq_ckpt_names(vm->ctl);
    HQ_CHECK(list && !strcmp(list, "c1,c2"), "list: %s", list);
    /* A checkpoint-xml without <disks> covers every disk, as libvirt's
     * (virDomainCheckpointAlignDisks) and as checkpoint-create's xml do,
     * not only the disks the backup copies. */
    HQ_CHECK(json_array_size(json_object_get(g2, "disks")) == 2,
             "c2 from checkpoint-xml without <disks> does not cover vdb "
             "(backup='no' there): %s", hq_str(g2));
    return 0;
}


/* libvirt validates every document against its schema: an element the
 * schema does not know is refused (InvalidParameter) by each command that
 * takes XML, and nothing changes; <domain>'s content stays unchecked. */
static int
case_xml_schema(void)
{
    /* r1 as libvirt leaves it, there before the agent looks. */
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, false);
    HQ_CHECK(vm && hq_add_bitmap(vm, "vda", "r1", true, false) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    if (refused(vm, "create: unknown element", "InvalidParameter", "<frob>",
                "checkpoint-create", json_pack("{s:s}", "xml",
                "<domaincheckpoint><name>u1</name><frob/></domaincheckpoint>")) < 0 ||
        refused(vm, "create: element in <disk>", "InvalidParameter", "<disk>",
                "checkpoint-create", json_pack("{s:s}", "xml",
                "<domaincheckpoint><name>u1</name><disks><disk name='vda'>"
                "<bitmap/></disk></disks></domaincheckpoint>")) < 0 ||
        refused(vm, "create: foreign namespace", "InvalidParameter", "urn:x",
                "checkpoint-create", json_pack("{s:s}", "xml",
                "<domaincheckpoint xmlns:x='urn:x'><name>u1</name><x:y/>"
                "</domaincheckpoint>")) < 0 ||
        refused(vm, "backup: unknown element", "InvalidParameter", "<checkpoint>",
                "backup-begin", json_pack("{s:s}", "xml",
                "<domainbackup mode='pull'><checkpoint>u2</checkpoint>"
                "</domainbackup>")) < 0 ||
        refused(vm, "backup: <target> in a pull disk", "InvalidParameter", "<target>",
                "backup-begin", json_pack("{s:s}", "xml",
                "<domainbackup mode='pull'><disks><disk name='vda'>"
                "<target file='/tmp/x.qcow2'/></disk></disks></domainbackup>")) < 0 ||
        refused(vm, "backup: unknown element in checkpoint-xml", "InvalidParameter",
                "<frob>", "backup-begin", json_pack("{s:s, s:s}", "xml",
                "<domainbackup mode='pull'/>", "checkpoint-xml",
                "<domaincheckpoint><name>u3</name><frob/></domaincheckpoint>")) < 0)
        return -1;
    CLEANUP_JSON json_t *q = hq_cmd(vm->ctl, "query-backup", NULL);
    HQ_CHECK(q && json_array_size(q) == 0, "a job was left: %s", hq_str(q));
    if (refused(vm, "redefine: unknown element", "InvalidParameter", "<note>",
                "checkpoint-redefine", json_pack("{s:s}", "xml",
                "<checkpoints><domaincheckpoint><name>r1</name><disks>"
                "<disk name='vda'/></disks></domaincheckpoint><note/></checkpoints>")) < 0)
        return -1;
    /* What the schemas allow is still taken: <domain> with anything in it. */
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-redefine", json_pack("{s:s}",
        "xml", "<domaincheckpoint><name>r1</name><disks><disk name='vda'/></disks>"
        "<domain type='kvm'><name>g</name><devices><whatever/></devices></domain>"
        "</domaincheckpoint>"));
    HQ_CHECK(r && json_array_size(r) == 1, "redefine with <domain>: %s", hq_str(r));
    CLEANUP_FREE char *l = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l && !strcmp(l, "r1"), "list: %s", l);
    return 0;
}

/* libvirt takes a disk's source file for its name (<disk name='/path'>)
 * and resolves it to the disk, in checkpoint, redefine and backup XML. */
static int
case_xml_disk_by_path(void)
{
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, false);
    HQ_CHECK(vm && hq_add_bitmap(vm, "vda", "r1", true, false) == 0 &&
             hq_agent_start(vm) == 0, "setup");
    CLEANUP_JSON json_t *disks = hq_cmd(vm->ctl, "query-disks", NULL);
    const char *fa = hq_jstr(hq_jfind(disks, "disk", "vda"), "filename");
    const char *fb = hq_jstr(hq_jfind(disks, "disk", "vdb"), "filename");
    HQ_CHECK(fa && fb && !strcmp(fa, hq_vm_disk(vm, "vda")->path) &&
             !strcmp(fb, hq_vm_disk(vm, "vdb")->path), "filenames: %s", hq_str(disks));

    /* Adopting libvirt's bitmap of vda, the disk named by path. */
    CLEANUP_FREE char *rx = xasprintf("<domaincheckpoint><name>r1</name>"
                                      "<creationTime>1700000000</creationTime><disks>"
                                      "<disk name='%s'/><disk name='%s' checkpoint='no'/>"
                                      "</disks></domaincheckpoint>", fa, fb);
    CLEANUP_JSON json_t *r = hq_cmd(vm->ctl, "checkpoint-redefine",
                                    json_pack("{s:s}", "xml", rx));
    json_t *rd = json_object_get(json_array_get(r, 0), "disks");
    HQ_CHECK(r && json_array_size(rd) == 1 && !strcmp(hq_jstr(json_array_get(rd, 0),
             "disk"), "vda"), "redefine by path: %s", hq_str(r));

    /* Creating on vdb only, named by path. */
    CLEANUP_FREE char *cx = xasprintf("<domaincheckpoint><name>p1</name><disks>"
                                      "<disk name='vda' checkpoint='no'/>"
                                      "<disk name='%s' checkpoint='bitmap'/></disks>"
                                      "</domaincheckpoint>", fb);
    CLEANUP_JSON json_t *c = hq_cmd(vm->ctl, "checkpoint-create",
                                    json_pack("{s:s}", "xml", cx));
    json_t *cd = json_object_get(c, "disks");
    HQ_CHECK(c && json_array_size(cd) == 1 &&
             !strcmp(hq_jstr(json_array_get(cd, 0), "disk"), "vdb") &&
             hq_bitmap_recording(vm, "vdb", "p1") == 1 && !hq_bitmap(vm, "vda", "p1"),
             "create by path: %s", hq_str(c));

    /* A backup of vda named by path; vdb by path with backup='no'. */
    CLEANUP_FREE char *bx = xasprintf("<domainbackup mode='pull'><disks>"
                                      "<disk name='%s'/><disk name='%s' backup='no'/>"
                                      "</disks></domainbackup>", fa, fb);
    CLEANUP_JSON json_t *job = hq_cmd(vm->ctl, "backup-begin", json_pack("{s:s}", "xml", bx));
    json_t *jd = json_object_get(job, "disks");
    HQ_CHECK(job && json_array_size(jd) == 1 &&
             !strcmp(hq_jstr(json_array_get(jd, 0), "disk"), "vda"),
             "backup by path: %s", hq_str(job));
    if (hq_backup_end(vm, job) < 0)
        return -1;

    /* A path no disk has is still NotFound; one disk by both names twice. */
    CLEANUP_FREE char *nx = xasprintf("<domaincheckpoint><name>p2</name><disks>"
                                      "<disk name='%s.other'/></disks></domaincheckpoint>",
                                      fa);
    CLEANUP_FREE char *tx = xasprintf("<domaincheckpoint><name>p2</name><disks>"
                                      "<disk name='vda'/><disk name='%s'/></disks>"
                                      "</domaincheckpoint>", fa);
    if (refused(vm, "unknown path", "NotFound", ".other", "checkpoint-create",
                json_pack("{s:s}", "xml", nx)) < 0 ||
        refused(vm, "vda twice", "InvalidParameter", "vda", "checkpoint-create",
                json_pack("{s:s}", "xml", tx)) < 0)
        return -1;
    CLEANUP_FREE char *l = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l && !strcmp(l, "r1,p1"), "list: %s", l);
    return 0;
}

/* ------------------------------------------------------------- ckptctl */


/* Runs ckptctl --socket CTL ARGS...; returns its exit status, output
 * (stdout and stderr) in *out. */
static int
ctl(struct hq_vm *vm, char **out, const char *const *args)
{
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    const char *argv[24] = { bin, "--socket", vm->ctl_sock };
    size_t n = 3;
    for (; *args && n + 1 < ARRAY_SIZE(argv); args++)
        argv[n++] = *args;
    argv[n] = NULL;
    return hq_run_cmd((char *const *) argv, out);
}

static int
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    HQ_CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return 0;
}

static int
case_ckptctl(void)
{
    struct model m;
    model_init(&m);
    CLEANUP_VM struct hq_vm *vm = hq_vm_simple(2, DISK_SIZE, true);
    HQ_CHECK(vm, "setup");
    CLEANUP_FREE char *bin = hq_ckptctl_path();
    HQ_CHECK(access(bin, X_OK) == 0, "no ckptctl at %s (set CKPTCTL)", bin);

    CLEANUP_FREE char *cfile = xasprintf("%s/k1.xml", vm->dir);
    if (write_file(cfile, "<domaincheckpoint><name>k1</name><description>from a "
                   "file</description><disks><disk name='vda'/>"
                   "<disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>\n") < 0)
        return -1;
    CLEANUP_FREE char *o1 = NULL;
    int rc = ctl(vm, &o1, (const char *[]) { "checkpoint", "create", "--xml", cfile, NULL });
    HQ_CHECK(rc == 0 && strstr(o1, "checkpoint k1 created"), "create --xml: %d %s", rc, o1);
    HQ_CHECK(hq_bitmap(vm, "vdb", "k1") == NULL && hq_bitmap_recording(vm, "vda", "k1") == 1,
             "k1 disks");
    CLEANUP_FREE char *o1b = NULL;
    rc = ctl(vm, &o1b, (const char *[]) { "checkpoint", "create", "--xml", cfile, "k9", NULL });
    HQ_CHECK(rc == 2, "create --xml with NAME: %d %s", rc, o1b);
    CLEANUP_FREE char *o1c = NULL;
    rc = ctl(vm, &o1c, (const char *[]) { "checkpoint", "create", "--xml",
                                          "/nonexistent/x.xml", NULL });
    HQ_CHECK(rc == 11, "create --xml of a missing file: %d %s", rc, o1c);
    CLEANUP_FREE char *o2 = NULL;
    rc = ctl(vm, &o2, (const char *[]) { "checkpoint", "create", "k2", NULL });
    HQ_CHECK(rc == 0, "create k2: %d %s", rc, o2);
    m.epoch = 2;
    if (mwrite(vm, &m, "vda", 0x71, 4, 1) < 0 || mwrite(vm, &m, "vdb", 0x72, 5, 1) < 0)
        return -1;

    CLEANUP_FREE char *o3 = NULL;
    rc = ctl(vm, &o3, (const char *[]) { "checkpoint", "dumpxml", "--size", "k1", NULL });
    HQ_CHECK(rc == 0 && strstr(o3, "<name>k1</name>") &&
             strstr(o3, "<description>from a file</description>") &&
             strstr(o3, "checkpoint='no'") && strstr(o3, "size='65536'"),
             "dumpxml: %d %s", rc, o3);

    /* backup begin --xml, backup info --xml, backup end. */
    CLEANUP_FREE char *bfile = xasprintf("%s/backup.xml", vm->dir);
    CLEANUP_FREE char *kfile = xasprintf("%s/k3.xml", vm->dir);
    if (write_file(bfile, "<domainbackup mode='pull'><incremental>k2</incremental>"
                   "<disks><disk name='vda'/><disk name='vdb' backup='no'/></disks>"
                   "</domainbackup>") < 0 ||
        write_file(kfile, "<domaincheckpoint><name>k3</name></domaincheckpoint>") < 0)
        return -1;
    CLEANUP_FREE char *o9 = NULL;
    rc = ctl(vm, &o9, (const char *[]) { "backup", "begin", "--xml", bfile,
                                         "--checkpoint-xml", kfile, NULL });
    HQ_CHECK(rc == 0 && !strncmp(o9, "backup-", 7) && strstr(o9, "vda nbd+unix://")
             && !strstr(o9, "vdb"), "backup begin --xml: %d %s", rc, o9);
    CLEANUP_FREE char *id = xasprintf("%.*s", (int) strcspn(o9, "\n"), o9);
    CLEANUP_FREE char *o10 = NULL;
    rc = ctl(vm, &o10, (const char *[]) { "backup", "info", "--xml", NULL });
    HQ_CHECK(rc == 0 && strstr(o10, "<domainbackup mode='pull'>") &&
             strstr(o10, "<incremental>k2</incremental>") &&
             strstr(o10, "exportname='vda'"), "backup info --xml: %d %s", rc, o10);
    CLEANUP_FREE char *o11 = NULL;
    rc = ctl(vm, &o11, (const char *[]) { "backup", "end", id, NULL });
    HQ_CHECK(rc == 0, "backup end %s: %d %s", id, rc, o11);
    CLEANUP_FREE char *l8 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l8 && !strcmp(l8, "k1,k2,k3"), "list after the XML backup: %s", l8);

    /* export-xml to a directory: one file per checkpoint, the commands. */
    CLEANUP_FREE char *dir = xasprintf("%s/export", vm->dir);
    CLEANUP_FREE char *o4 = NULL;
    rc = ctl(vm, &o4, (const char *[]) { "checkpoint", "export-xml", "--output", dir,
                                         "--domain", "vm 1", NULL });
    CLEANUP_FREE char *want4 = xasprintf(
        "virsh checkpoint-create 'vm 1' %s/k1.xml --redefine\n"
        "virsh checkpoint-create 'vm 1' %s/k2.xml --redefine\n"
        "virsh checkpoint-create 'vm 1' %s/k3.xml --redefine\n", dir, dir, dir);
    HQ_CHECK(rc == 0 && !strcmp(o4, want4), "export-xml --output: %d '%s'", rc, o4);
    for (int i = 1; i <= 3; i++) {
        CLEANUP_FREE char *path = xasprintf("%s/k%d.xml", dir, i);
        CLEANUP_FREE char *text = hq_read_file(path);
        CLEANUP_FREE char *name = xasprintf("k%d", i);
        CLEANUP_JSON json_t *d = hq_cmd(vm->ctl, "checkpoint-dumpxml",
                                        json_pack("{s:s}", "name", name));
        HQ_CHECK(text && d && !strcmp(text, hq_jstr(d, "xml")),
                 "%s differs from dumpxml: %s", path, text);
    }
    /* Never overwritten: exit 5 before anything happens (even --release). */
    CLEANUP_FREE char *o5 = NULL;
    rc = ctl(vm, &o5, (const char *[]) { "checkpoint", "export-xml", "--output", dir,
                                         "--release", NULL });
    CLEANUP_FREE char *l5 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(rc == 5 && l5 && !strcmp(l5, "k1,k2,k3"), "export over existing files: %d %s"
             " (list %s)", rc, o5, l5);

    /* --release: files written, checkpoints handed back. */
    CLEANUP_FREE char *dir2 = xasprintf("%s/release", vm->dir);
    CLEANUP_FREE char *o6 = NULL;
    rc = ctl(vm, &o6, (const char *[]) { "checkpoint", "export-xml", "--output", dir2,
                                         "--release", NULL });
    HQ_CHECK(rc == 0 && strstr(o6, "virsh checkpoint-create DOMAIN") &&
             strstr(o6, "no longer tracks"), "export-xml --release: %d %s", rc, o6);
    CLEANUP_FREE char *l6 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l6 && !*l6, "listed after --release: %s", l6);
    HQ_CHECK(hq_bitmap_recording(vm, "vda", "k1") == 1 &&
             hq_bitmap_recording(vm, "vda", "k2") == 1 &&
             hq_bitmap_count_prefix(vm, "vda", "ckptd") == 0, "libvirt layout");

    /* adopt: one file of the export after the other (oldest first, as the
     * virsh commands do; a list is also fine). */
    for (int i = 1; i <= 3; i++) {
        CLEANUP_FREE char *path = xasprintf("%s/k%d.xml", dir2, i);
        CLEANUP_FREE char *o = NULL;
        CLEANUP_FREE char *want = xasprintf("checkpoint k%d adopted", i);
        rc = ctl(vm, &o, (const char *[]) { "checkpoint", "adopt", "--xml", path, NULL });
        HQ_CHECK(rc == 0 && strstr(o, want), "adopt %s: %d %s", path, rc, o);
    }
    CLEANUP_FREE char *l7 = hq_ckpt_names(vm->ctl);
    HQ_CHECK(l7 && !strcmp(l7, "k1,k2,k3"), "list after adopt: %s", l7);
    CLEANUP_JSON json_t *k1 = hq_ckpt_get(vm->ctl, "k1", false);
    HQ_CHECK(k1 && !strcmp(hq_jstr(k1, "description"), "from a file") &&
             json_array_size(json_object_get(k1, "disks")) == 1, "k1: %s", hq_str(k1));
    CLEANUP_FREE char *o8 = NULL;
    CLEANUP_FREE char *p1 = xasprintf("%s/k1.xml", dir2);
    rc = ctl(vm, &o8, (const char *[]) { "checkpoint", "redefine", p1, NULL });
    HQ_CHECK(rc == 5, "redefine of an existing checkpoint: %d %s", rc, o8);

    /* Files over 1 MiB are not sent. */
    CLEANUP_FREE char *bigfile = xasprintf("%s/big.xml", vm->dir);
    FILE *f = fopen(bigfile, "w");
    HQ_CHECK(f, "big file");
    for (int i = 0; i < 1100; i++)
        fprintf(f, "%01023d\n", 0);
    fclose(f);
    CLEANUP_FREE char *o12 = NULL;
    rc = ctl(vm, &o12, (const char *[]) { "checkpoint", "redefine", bigfile, NULL });
    HQ_CHECK(rc == 2 && strstr(o12, "larger than"), "big file: %d %s", rc, o12);
    return 0;
}

int
main(void)
{
    static const struct hq_case cases[] = {
        { "adopt-libvirt", case_adopt_libvirt },
        { "redefine-bad-entry", case_redefine_bad_entry },
        { "dumpxml-create-xml", case_dumpxml_create_xml },
        { "export-release", case_export_release },
        { "backup-xml", case_backup_xml },
        { "ckptctl", case_ckptctl },
        { "xml-schema", case_xml_schema },
        { "xml-disk-by-path", case_xml_disk_by_path },
    };
    return hq_run(cases, ARRAY_SIZE(cases));
}
