/* ckptctl: what a backup directory holds, read without a VM.
 *
 * `ckptctl pull` writes, per disk D and checkpoint C, the image
 * DIR/D.C.full.qcow2 or DIR/D.C.inc.qcow2 (an .inc file's qcow2 backing
 * file is the previous backup of D, by a relative name) and, once the image
 * is complete and closed, its record DIR/D.C.KIND.qcow2.json: disk,
 * checkpoint, parent, mode, time, sizes and the SHA-256 of the image file's
 * bytes, plus the SHA-256 its backing file had when this one was taken.
 *
 * The checksum is over the qcow2 file as stored, not over the guest data:
 * one sequential read, the same value `sha256sum FILE` prints, and any
 * flipped byte (data, metadata or header) changes it.  The image is never
 * written after its record is (a later incremental only reads it), so the
 * value stays valid for the file's whole life.
 *
 * A chain is complete when every backing link is a backup of the same disk
 * in DIR that ends at a full backup; a link is foreign when the file is
 * there but is not the one the backup was taken on (another disk's, or a
 * different file under the same name, told by the recorded checksum).
 */
#include "ckptctl/ckptctl.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTL_RECORD_SUFFIX ".json"
#define CTL_RECORD_VERSION 1

/* --- names --- */

static const char *const ctl_kinds[] = { ".full.qcow2", ".inc.qcow2" };

/* Whether name ends like a backup image; *full says which kind. */
static bool
ctl_bk_suffix(const char *name, bool *full, size_t *suffix_len)
{
    size_t nl = strlen(name);

    for (size_t i = 0; i < ARRAY_SIZE(ctl_kinds); i++) {
        size_t sl = strlen(ctl_kinds[i]);
        if (nl > sl + 2 && strcmp(name + nl - sl, ctl_kinds[i]) == 0) {
            *full = i == 0;
            *suffix_len = sl;
            return true;
        }
    }
    return false;
}

/* The checkpoint in "D.C.full.qcow2" when it is a backup of `disk`. */
char *
ctl_bk_name_checkpoint(const char *disk, const char *name)
{
    size_t dl = strlen(disk), nl = strlen(name), sl;
    bool full;

    if (!ctl_bk_suffix(name, &full, &sl) || nl <= dl + 1 + sl ||
        strncmp(name, disk, dl) != 0 || name[dl] != '.')
        return NULL;
    return xasprintf("%.*s", (int) (nl - sl - dl - 1), name + dl + 1);
}

char *
ctl_bk_record_path(const char *image)
{
    return xasprintf("%s" CTL_RECORD_SUFFIX, image);
}

/* --- reading one file --- */

/* The backing file name in a qcow2 header, read directly: one small read
 * per file instead of a qemu-img process per file.  *qcow2 says whether
 * the file is a qcow2 image at all. */
static char *
ctl_qcow2_backing(int dirfd, const char *name, bool *qcow2, uint64_t *vsize)
{
    unsigned char hdr[32];
    uint64_t off, size;
    uint32_t len;
    char *backing = NULL;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

    *qcow2 = false;
    *vsize = 0;
    if (fd < 0)
        return NULL;
    if (pread(fd, hdr, sizeof hdr, 0) == (ssize_t) sizeof hdr &&
        memcmp(hdr, "QFI\xfb", 4) == 0) {
        *qcow2 = true;
        memcpy(&off, hdr + 8, 8);
        memcpy(&len, hdr + 16, 4);
        memcpy(&size, hdr + 24, 8);
        off = be64toh(off);
        len = be32toh(len);
        *vsize = be64toh(size);
        if (off && len && len <= 1023) {
            backing = xcalloc(1, len + 1);
            if (pread(fd, backing, len, (off_t) off) != (ssize_t) len) {
                free(backing);
                backing = NULL;
            }
        }
    }
    close(fd);
    return backing;
}

/* The record next to an image, or NULL when there is none or it is not a
 * record of ours (then the image counts as one without a checksum). */
static json_t *
ctl_bk_read_record(int dirfd, const char *name)
{
    CLEANUP_FREE char *rec = ctl_bk_record_path(name);
    json_error_t err;
    json_t *j;
    int fd = openat(dirfd, rec, O_RDONLY | O_CLOEXEC);
    FILE *fp = fd >= 0 ? fdopen(fd, "r") : NULL;

    if (!fp) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    j = json_loadf(fp, JSON_REJECT_DUPLICATES, &err);
    fclose(fp);
    if (j && (!json_is_object(j) ||
              !json_is_integer(json_object_get(j, "ckptctl-backup")) ||
              !json_is_string(json_object_get(j, "disk")) ||
              !json_is_string(json_object_get(j, "checkpoint")))) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static const char *
ctl_rec_str(const json_t *rec, const char *key)
{
    return json_string_value(json_object_get(rec, key));
}

/* Disk and checkpoint of a file: its record says; else the name, split
 * after `disk` when the caller knows the disk, else at the first dot. */
static void
ctl_bk_identity(struct ctl_bk *b, const char *disk)
{
    size_t sl, nl = strlen(b->file);
    bool full;
    const char *dot;

    if (b->record) {
        b->disk = xstrdup(ctl_rec_str(b->record, "disk"));
        b->checkpoint = xstrdup(ctl_rec_str(b->record, "checkpoint"));
        return;
    }
    if (disk && (b->checkpoint = ctl_bk_name_checkpoint(disk, b->file))) {
        b->disk = xstrdup(disk);
        return;
    }
    ctl_bk_suffix(b->file, &full, &sl);
    dot = strchr(b->file, '.');
    if (dot && (size_t) (dot - b->file) + 1 < nl - sl) {
        b->disk = xasprintf("%.*s", (int) (dot - b->file), b->file);
        b->checkpoint = xasprintf("%.*s", (int) (nl - sl - (size_t) (dot - b->file) - 1),
                                  dot + 1);
    } else {
        b->disk = xasprintf("%.*s", (int) (nl - sl), b->file);
        b->checkpoint = xstrdup("?");
    }
}

static int
ctl_bk_load_one(int dfd, const char *name, const char *disk, struct ctl_bk *b)
{
    struct stat st;
    size_t sl;

    *b = (struct ctl_bk) { .base = -1 };
    if (fstatat(dfd, name, &st, 0) < 0 || !S_ISREG(st.st_mode) ||
        !ctl_bk_suffix(name, &b->full, &sl))
        return -1;
    b->file = xstrdup(name);
    b->record = ctl_bk_read_record(dfd, name);
    b->backing = ctl_qcow2_backing(dfd, name, &b->qcow2, &b->virtual_size);
    b->mtime = st.st_mtim;
    b->file_size = (uint64_t) st.st_size;
    b->disk_usage = (uint64_t) st.st_blocks * 512;
    b->time = json_is_integer(json_object_get(b->record, "time"))
              ? json_integer_value(json_object_get(b->record, "time"))
              : (json_int_t) st.st_mtim.tv_sec;
    ctl_bk_identity(b, disk);
    return 0;
}

/* --- chains --- */

static ssize_t
ctl_bk_find_file(const struct ctl_bkdir *d, const char *name)
{
    for (size_t i = 0; i < d->bk.len; i++)
        if (strcmp(d->bk.ptr[i].file, name) == 0)
            return (ssize_t) i;
    return -1;
}

/* The checkpoint a backing link stands for: the record's parent, else the
 * backing file's own name. */
static char *
ctl_bk_parent_name(const struct ctl_bk *b, const char *base)
{
    const char *p = ctl_rec_str(b->record, "parent");
    char *c;

    if (p)
        return xstrdup(p);
    if (base && (c = ctl_bk_name_checkpoint(b->disk, base)))
        return c;
    return NULL;
}

static void
ctl_bk_set(struct ctl_bk *b, enum ctl_chain state, const char *missing_file,
           const char *missing_checkpoint, char *why)
{
    b->chain = state;
    free(b->why);
    b->why = why;
    free(b->missing_file);
    free(b->missing_checkpoint);
    b->missing_file = missing_file ? xstrdup(missing_file) : NULL;
    b->missing_checkpoint = missing_checkpoint ? xstrdup(missing_checkpoint) : NULL;
}

/* The backing link of b as a basename inside DIR, or NULL after marking b
 * foreign (a path that leaves DIR). */
static const char *
ctl_bk_link(const struct ctl_bkdir *d, struct ctl_bk *b)
{
    const char *slash = strrchr(b->backing, '/');
    CLEANUP_FREE char *full = NULL;
    CLEANUP_FREE char *parent = NULL;
    char real[PATH_MAX], dirreal[PATH_MAX];

    if (!slash)
        return b->backing;
    /* qemu-img resolves a relative name from the image's directory. */
    full = b->backing[0] == '/' ? xstrdup(b->backing)
                                : xasprintf("%s/%s", d->dir, b->backing);
    parent = xasprintf("%.*s", (int) (strrchr(full, '/') - full), full);
    if (realpath(*parent ? parent : "/", real) && realpath(d->dir, dirreal) &&
        strcmp(real, dirreal) == 0)
        return slash + 1;
    ctl_bk_set(b, CTL_CHAIN_FOREIGN, b->backing, NULL,
               xasprintf("%s is based on %s, outside %s", b->file, b->backing, d->dir));
    return NULL;
}

/* Whether `base` is the very file b was taken on: same disk, and the
 * checksum b recorded for it equals the one base records for itself. */
static char *
ctl_bk_foreign_why(const struct ctl_bk *b, const struct ctl_bk *base,
                   const char *parent)
{
    const char *want = ctl_rec_str(b->record, "backing-sha256");
    const char *have = ctl_rec_str(base->record, "sha256");

    if (strcmp(base->disk, b->disk) != 0)
        return xasprintf("%s is based on %s, a backup of disk %s, not of %s",
                         b->file, base->file, base->disk, b->disk);
    if (parent && strcmp(parent, base->checkpoint) != 0)
        return xasprintf("%s was taken on checkpoint %s, but %s is the backup at"
                         " checkpoint %s", b->file, parent, base->file,
                         base->checkpoint);
    if (want && have && strcmp(want, have) != 0)
        return xasprintf("%s is not the file %s was taken on: it was replaced"
                         " (its recorded SHA-256 differs)", base->file, b->file);
    if (b->virtual_size && base->virtual_size && b->virtual_size != base->virtual_size)
        return xasprintf("%s (%" PRIu64 " bytes) is not the size of %s (%" PRIu64
                         " bytes) it is based on", b->file, b->virtual_size,
                         base->file, base->virtual_size);
    return NULL;
}

static void ctl_bk_chain(struct ctl_bkdir *d, size_t i, size_t depth);

static void
ctl_bk_chain_inc(struct ctl_bkdir *d, struct ctl_bk *b, size_t depth)
{
    CLEANUP_FREE char *parent = NULL;
    const char *link;
    ssize_t j;
    char *why;

    if (!b->backing) {
        ctl_bk_set(b, CTL_CHAIN_BROKEN, NULL, NULL,
                   xasprintf("%s is incremental but has no backing file", b->file));
        return;
    }
    if (!(link = ctl_bk_link(d, b)))
        return;
    parent = ctl_bk_parent_name(b, link);
    b->parent = parent ? xstrdup(parent) : NULL;
    if ((j = ctl_bk_find_file(d, link)) < 0) {
        ctl_bk_set(b, CTL_CHAIN_MISSING, link, parent,
                   xasprintf("the backup of disk %s at checkpoint %s (%s), which %s"
                             " is based on, is missing from %s", b->disk,
                             parent ? parent : "?", link, b->file, d->dir));
        return;
    }
    if ((why = ctl_bk_foreign_why(b, &d->bk.ptr[j], parent))) {
        ctl_bk_set(b, CTL_CHAIN_FOREIGN, link, parent, why);
        return;
    }
    b->base = j;
    ctl_bk_chain(d, (size_t) j, depth + 1);
    if (d->bk.ptr[j].chain != CTL_CHAIN_COMPLETE)
        ctl_bk_set(b, d->bk.ptr[j].chain, d->bk.ptr[j].missing_file,
                   d->bk.ptr[j].missing_checkpoint, xstrdup(d->bk.ptr[j].why));
    else
        ctl_bk_set(b, CTL_CHAIN_COMPLETE, NULL, NULL, NULL);
}

static void
ctl_bk_chain(struct ctl_bkdir *d, size_t i, size_t depth)
{
    struct ctl_bk *b = &d->bk.ptr[i];

    if (b->chain_done)
        return;
    b->chain_done = true;
    if (depth > d->bk.len) {
        ctl_bk_set(b, CTL_CHAIN_BROKEN, NULL, NULL,
                   xasprintf("the backing files of %s form a loop", b->file));
        return;
    }
    if (!b->qcow2)
        ctl_bk_set(b, CTL_CHAIN_BROKEN, NULL, NULL,
                   xasprintf("%s is not a qcow2 image", b->file));
    else if (b->full && b->backing)
        ctl_bk_set(b, CTL_CHAIN_FOREIGN, b->backing, NULL,
                   xasprintf("%s is named a full backup but is based on %s",
                             b->file, b->backing));
    else if (b->full)
        ctl_bk_set(b, CTL_CHAIN_COMPLETE, NULL, NULL, NULL);
    else
        ctl_bk_chain_inc(d, b, depth);
}

/* --- the directory --- */

static int
ctl_bk_cmp(const void *pa, const void *pb)
{
    const struct ctl_bk *a = pa, *b = pb;
    int c = strcmp(a->disk, b->disk);

    if (c)
        return c;
    if (a->time != b->time)
        return a->time < b->time ? -1 : 1;
    return strcmp(a->file, b->file);
}

int
ctl_bkdir_load(const char *dir, const char *disk, struct ctl_bkdir *out)
{
    DIR *dp = opendir(dir);
    struct dirent *de;

    /* Empty on failure too, so that ctl_bkdir_free is always right and
     * never needed. */
    *out = (struct ctl_bkdir) { 0 };
    if (!dp)
        return ctl_fail(errno == ENOENT ? CTL_EXIT_NOT_FOUND : CTL_EXIT_LOCAL,
                        "cannot open backup directory %s: %s", dir, strerror(errno));
    out->dir = xstrdup(dir);
    while ((de = readdir(dp)) != NULL) {
        struct ctl_bk b;

        if (ctl_bk_load_one(dirfd(dp), de->d_name, disk, &b) == 0)
            ctl_bk_vec_append(&out->bk, b);
    }
    closedir(dp);
    if (out->bk.len)
        qsort(out->bk.ptr, out->bk.len, sizeof *out->bk.ptr, ctl_bk_cmp);
    for (size_t i = 0; i < out->bk.len; i++)
        ctl_bk_chain(out, i, 0);
    return CTL_EXIT_OK;
}

void
ctl_bkdir_free(struct ctl_bkdir *d)
{
    for (size_t i = 0; i < d->bk.len; i++) {
        struct ctl_bk *b = &d->bk.ptr[i];
        free(b->file);
        free(b->disk);
        free(b->checkpoint);
        free(b->backing);
        free(b->parent);
        free(b->why);
        free(b->missing_file);
        free(b->missing_checkpoint);
        json_decref(b->record);
    }
    ctl_bk_vec_reset(&d->bk);
    free(d->dir);
    *d = (struct ctl_bkdir) { 0 };
}

const char *
ctl_chain_name(enum ctl_chain c)
{
    switch (c) {
    case CTL_CHAIN_COMPLETE: return "complete";
    case CTL_CHAIN_MISSING: return "missing";
    case CTL_CHAIN_FOREIGN: return "foreign";
    case CTL_CHAIN_BROKEN: return "broken";
    }
    return "?";
}

/* --- checksums and records --- */

/* Is name an executable in $PATH? */
static bool
ctl_on_path(const char *name)
{
    const char *path = getenv("PATH");
    CLEANUP_FREE char *copy = xstrdup(path ? path : "/usr/bin:/bin");
    char *save = NULL;

    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        CLEANUP_FREE char *f = xasprintf("%s/%s", *d ? d : ".", name);
        if (access(f, X_OK) == 0)
            return true;
    }
    return false;
}

/* The same digest sha256sum prints; computed by openssl when it is there
 * (it uses the CPU's SHA instructions: 5x faster here, 1.3 GB/s, which is
 * what a push backup's record costs after QEMU wrote the file), else by
 * sha256sum.  Both print the hex digest first. */
int
ctl_sha256_file(const char *path, char hex[65])
{
    CLEANUP_FREE char *local = path[0] == '-' ? xasprintf("./%s", path) : xstrdup(path);
    char *ossl[] = { "openssl", "dgst", "-sha256", "-r", local, NULL };
    char *argv[] = { "sha256sum", "--", (char *) path, NULL };
    CLEANUP_FREE char *out = NULL;
    const char *p;
    int status, r = ctl_run_capture(ctl_on_path("openssl") ? ossl : argv, &out, &status);

    if (r != CTL_EXIT_OK)
        return r;
    /* A name with a backslash or newline is printed with a leading '\'. */
    p = out[0] == '\\' ? out + 1 : out;
    if (status != 0 || strspn(p, "0123456789abcdef") < 64)
        return ctl_fail(CTL_EXIT_LOCAL, "cannot compute the SHA-256 of %s"
                        " (sha256sum exit status %d)", path, status);
    memcpy(hex, p, 64);
    hex[64] = '\0';
    return CTL_EXIT_OK;
}

/* Written next to the image under a temporary name and renamed, so a
 * record is either whole or absent. */
int
ctl_bk_write_record(const char *image, json_t *rec)
{
    CLEANUP_FREE char *path = ctl_bk_record_path(image);
    CLEANUP_FREE char *tmp = xasprintf("%s.tmp", path);
    CLEANUP_FREE char *text = json_dumps(rec, JSON_INDENT(2) | JSON_SORT_KEYS);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = text ? strlen(text) : 0;
    bool ok;

    if (fd < 0 || !text)
        return ctl_fail(CTL_EXIT_LOCAL, "cannot write %s: %s", tmp,
                        fd < 0 ? strerror(errno) : "cannot encode");
    ok = write(fd, text, len) == (ssize_t) len && write(fd, "\n", 1) == 1 &&
         fsync(fd) == 0;
    if (close(fd) < 0)
        ok = false;
    if (!ok || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return ctl_fail(CTL_EXIT_LOCAL, "cannot write %s: %s", path, strerror(e));
    }
    return CTL_EXIT_OK;
}

/* The sha256 that the record of DIR/name holds, or NULL. */
char *
ctl_bk_recorded_sha256(const char *dir, const char *name)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    json_t *rec = dfd >= 0 ? ctl_bk_read_record(dfd, name) : NULL;
    const char *s = ctl_rec_str(rec, "sha256");
    char *out = s ? xstrdup(s) : NULL;

    if (dfd >= 0)
        close(dfd);
    json_decref(rec);
    return out;
}

json_t *
ctl_bk_json(const struct ctl_bkdir *d, const struct ctl_bk *b)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:s}",
                          "disk", b->disk, "checkpoint", b->checkpoint,
                          "mode", b->full ? "full" : "incremental", "file", b->file,
                          "time", b->time, "size", (json_int_t) b->disk_usage,
                          "file-size", (json_int_t) b->file_size,
                          "checksum", ctl_rec_str(b->record, "sha256") != NULL,
                          "chain", ctl_chain_name(b->chain));
    json_t *files = json_array();

    if (!j) {
        json_decref(files);
        return NULL;
    }
    json_object_set_new(j, "parent", b->full ? json_null()
                        : b->parent ? json_string(b->parent) : json_null());
    if (b->backing)
        json_object_set_new(j, "backing", json_string(b->backing));
    if (b->why)
        json_object_set_new(j, "problem", json_string(b->why));
    if (b->missing_file)
        json_object_set_new(j, "missing", json_pack(
            "{s:s, s:o}", "file", b->missing_file, "checkpoint",
            b->missing_checkpoint ? json_string(b->missing_checkpoint) : json_null()));
    /* The chain from the full backup up to this one. */
    for (ssize_t i = b - d->bk.ptr; i >= 0; i = d->bk.ptr[i].base)
        json_array_insert_new(files, 0, json_string(d->bk.ptr[i].file));
    json_object_set_new(j, "chain-files", files);
    return j;
}
