/* ckptd: a qcow2 file written in one pass, for the pull engine (pull.h).
 *
 * Why: the copy used to go through qemu-nbd serving the new qcow2, and
 * that socket hop (a second copy of every byte and a second process)
 * cost about half of what the machine can pull.  A backup file is
 * written once, front to back, by one writer, so the subset of qcow2 it
 * needs is small: data clusters appended in the order they arrive, L2
 * tables kept in memory, and at the end the L2 tables, the L1 table,
 * the refcounts (every cluster of the file is used exactly once) and
 * finally the header.  The result is a plain qcow2 v3 image (64 KiB
 * clusters, 16-bit refcounts, no compression, no snapshots) that
 * `qemu-img check` finds clean; restore and verify read it with qemu-img
 * as before.
 *
 * Writes must be cluster-aligned (the engine widens its reads, see
 * nbdx_pull_plan_align), so a cluster is never written in part and an
 * overlay never needs copy-on-write from its backing file.  A cluster
 * that reads as zeros is not stored: left unallocated in an image
 * without a backing file (it reads as zeros), marked as a zero cluster
 * in an overlay (it must hide the older data below).
 *
 * The file's SHA-256 (what `sha256sum` prints, for the backup's record)
 * is computed as the bytes go out, so the image is never read back.  A
 * hash runs from the first byte, so everything in front of the data
 * must be known before the first data cluster: the engine's plan says
 * how many clusters may be stored at most and which L2 tables are
 * needed, and the layout is fixed from that when the file is opened:
 *
 *   header | L1 table | refcount table | data (as many clusters as the
 *   plan copies) | L2 tables | refcount blocks
 *
 * Only the last two depend on what the data turned out to be.  Clusters
 * found to be zeros leave the end of the data area unused: a hole in the
 * file (refcount 0, nothing points at it), hashed as the zeros it reads.
 */
#include "nbd/pull.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <nettle/sha2.h>

#define C NBDX_QCOW2_CLUSTER
#define CLUSTER_BITS 16
#define L2_ENTRIES (C / 8)              /* one L2 table maps 512 MiB */
#define REFS_PER_BLOCK (C / 2)          /* 16-bit refcounts */
#define OFLAG_COPIED (1ull << 63)       /* refcount is exactly one */
#define OFLAG_ZERO 1ull                 /* L2: the cluster reads as zeros */
#define HEADER_LEN 104                  /* version 3 without optional fields */
#define EXT_BACKING_FORMAT 0xe2792acau
/* Writeback: started for every WB_STEP of new data, waited for and
 * dropped from the page cache WB_LAG behind (see q_writeback). */
#define WB_STEP (8ull << 20)
#define WB_LAG (32ull << 20)

/* The layout, fixed at open (see the top of this file); in clusters. */
struct q_layout {
    uint64_t l1_clusters, rt_clusters;
    uint64_t data, data_max;            /* first data cluster, how many */
    uint64_t l2, nl2;                   /* first L2 table, how many */
    uint64_t rb, nrb;                   /* first refcount block, how many */
    uint64_t total;
};

struct nbdx_qcow2_out {
    int fd;
    char *path;
    uint64_t size;                      /* virtual */
    char *backing;                      /* NULL: no backing file */
    uint64_t **l2;                      /* per L1 entry, NULL until used */
    uint64_t *l2_host;                  /* per L1 entry: its host cluster,
                                         * 0: no table (nothing planned) */
    uint64_t l1_size;
    struct q_layout lay;
    unsigned char *header;              /* C bytes, written last */
    size_t header_len;
    uint64_t next;                      /* next free host cluster */
    uint64_t wb_started, wb_done;       /* host bytes in writeback, on disk */
    /* The checksum's side (nbdx_qcow2_out_hash, perhaps on another
     * thread): of the file up to data cluster `hashed`. */
    struct sha256_ctx sha;
    uint64_t hashed;
};

static void __attribute__((format(printf, 3, 4)))
q_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int
q_pwrite(struct nbdx_qcow2_out *q, const void *buf, size_t len, uint64_t off,
         char *err, size_t errlen)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(q->fd, p, len, (off_t) off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            q_err(err, errlen, "cannot write %zu bytes at offset %llu of %s: %s",
                  len, (unsigned long long) off, q->path,
                  n < 0 ? strerror(errno) : "short write");
            return -1;
        }
        p += n;
        len -= (size_t) n;
        off += (uint64_t) n;
    }
    return 0;
}

/* Hashes n bytes of zeros: a hole, or the rest of a short cluster. */
static void
q_hash_zeros(struct nbdx_qcow2_out *q, uint64_t n)
{
    static const uint8_t zeros[4096];

    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t) n : sizeof zeros;

        sha256_update(&q->sha, k, zeros);
        n -= k;
    }
}

/* Hashes whole clusters; the last one may be short: it is padded with
 * the zeros the file reads there. */
static void
q_hash_clusters(struct nbdx_qcow2_out *q, const void *buf, size_t len)
{
    sha256_update(&q->sha, len, buf);
    if (len % C)
        q_hash_zeros(q, C - len % C);
}

/* Hashes and writes metadata clusters at host cluster `at`, the next one
 * the hash has not seen. */
static int
q_put(struct nbdx_qcow2_out *q, const void *buf, size_t len, uint64_t at,
      char *err, size_t errlen)
{
    q_hash_clusters(q, buf, len);
    return q_pwrite(q, buf, len, at * C, err, errlen);
}

static void
put_be16(unsigned char *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static void
put_be32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void
put_be64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

/* Header, backing format extension, end of extensions, backing name;
 * the rest of the cluster zeros. */
static size_t
q_header(const struct nbdx_qcow2_out *q, unsigned char *h)
{
    size_t pos = HEADER_LEN;

    memset(h, 0, C);
    memcpy(h, "QFI\xfb", 4);
    put_be32(h + 4, 3);
    put_be32(h + 20, CLUSTER_BITS);
    put_be64(h + 24, q->size);
    put_be32(h + 36, (uint32_t) q->l1_size);
    put_be64(h + 40, 1 * C);            /* the L1 table follows the header */
    put_be64(h + 48, (1 + q->lay.l1_clusters) * C);
    put_be32(h + 56, (uint32_t) q->lay.rt_clusters);
    put_be32(h + 96, 4);                /* refcount_order: 16 bits */
    put_be32(h + 100, HEADER_LEN);
    if (q->backing) {
        /* As `qemu-img create -F qcow2 -b NAME` writes it. */
        put_be32(h + pos, EXT_BACKING_FORMAT);
        put_be32(h + pos + 4, 5);
        memcpy(h + pos + 8, "qcow2", 5);
        pos += 16;
    }
    pos += 8;                           /* end of extensions: type 0, length 0 */
    if (q->backing) {
        size_t n = strlen(q->backing);
        put_be64(h + 8, pos);
        put_be32(h + 16, (uint32_t) n);
        memcpy(h + pos, q->backing, n);
        pos += n;
    }
    return pos;
}

/* From the plan: how many data clusters at most, which L1 entries get
 * an L2 table (a COPY's; a ZERO's only in an overlay, where the zero
 * flag needs an entry), and so where everything goes. */
static int
q_layout(struct nbdx_qcow2_out *q, const struct nbdx_pull_op_vec *plan,
         char *err, size_t errlen)
{
    struct q_layout *l = &q->lay;
    const uint64_t span = (uint64_t) C * L2_ENTRIES;
    uint64_t k = 0;

    for (size_t i = 0; i < plan->len; i++) {
        uint64_t off = plan->ptr[i].offset, end = off + plan->ptr[i].length;
        bool copy = plan->ptr[i].kind == NBDX_PULL_COPY;

        if (end > q->size || end < off) {
            q_err(err, errlen, "the plan for %s goes past the disk's end", q->path);
            return -1;
        }
        if (end == off)
            continue;
        if (copy)
            l->data_max += (end + C - 1) / C - off / C;
        if (copy || q->backing)
            for (uint64_t t = off / span; t <= (end - 1) / span; t++)
                q->l2_host[t] = 1;
    }
    for (uint64_t t = 0; t < q->l1_size; t++)
        l->nl2 += q->l2_host[t] != 0;
    l->l1_clusters = (q->l1_size * 8 + C - 1) / C;
    if (!l->l1_clusters)
        l->l1_clusters = 1;
    /* The refcount blocks count every cluster, themselves included, and
     * the table in front grows with them. */
    l->rt_clusters = 1;
    for (;;) {
        uint64_t total = 1 + l->l1_clusters + l->rt_clusters + l->data_max +
                         l->nl2 + l->nrb;
        uint64_t nrb = (total + REFS_PER_BLOCK - 1) / REFS_PER_BLOCK;
        uint64_t rt = (nrb * 8 + C - 1) / C;

        if (nrb == l->nrb && rt == l->rt_clusters)
            break;
        l->nrb = nrb;
        l->rt_clusters = rt;
    }
    l->data = 1 + l->l1_clusters + l->rt_clusters;
    l->l2 = l->data + l->data_max;
    l->rb = l->l2 + l->nl2;
    l->total = l->rb + l->nrb;
    for (uint64_t t = 0; t < q->l1_size; t++)
        if (q->l2_host[t])
            q->l2_host[t] = l->l2 + k++;
    return 0;
}

/* Header (kept for the end), L1 table and refcount table: all fixed by
 * the layout, so hashed now and, but for the header, written now. */
static int
q_front(struct nbdx_qcow2_out *q, char *err, size_t errlen)
{
    const struct q_layout *l = &q->lay;
    size_t n = (size_t) ((l->l1_clusters + l->rt_clusters) * C);
    CLEANUP_FREE unsigned char *buf = xcalloc(1, n);
    unsigned char *rt = buf + l->l1_clusters * C;

    for (uint64_t t = 0; t < q->l1_size; t++)
        if (q->l2_host[t])
            put_be64(buf + t * 8, (q->l2_host[t] * C) | OFLAG_COPIED);
    for (uint64_t b = 0; b < l->nrb; b++)
        put_be64(rt + b * 8, (l->rb + b) * C);
    q->header = xmalloc(C);
    q->header_len = q_header(q, q->header);
    sha256_update(&q->sha, C, q->header);
    return q_put(q, buf, n, 1, err, errlen);
}

int
nbdx_qcow2_out_open(const char *path, uint64_t size, const char *backing,
                    const struct nbdx_pull_op_vec *plan,
                    struct nbdx_qcow2_out **out, char *err, size_t errlen)
{
    struct nbdx_qcow2_out *q;
    int fd;

    if (backing && strlen(backing) > 1023) {
        q_err(err, errlen, "backing file name of %s is too long", path);
        return -1;
    }
    /* No O_TRUNC: the caller claimed the name (O_EXCL) and it is empty. */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        q_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    q = xcalloc(1, sizeof *q);
    q->fd = fd;
    q->path = xstrdup(path);
    q->size = size;
    q->backing = backing ? xstrdup(backing) : NULL;
    q->l1_size = (size + (uint64_t) C * L2_ENTRIES - 1) / ((uint64_t) C * L2_ENTRIES);
    q->l2 = xcalloc(q->l1_size ? q->l1_size : 1, sizeof *q->l2);
    q->l2_host = xcalloc(q->l1_size ? q->l1_size : 1, sizeof *q->l2_host);
    sha256_init(&q->sha);
    if (q_layout(q, plan, err, errlen) < 0 || q_front(q, err, errlen) < 0) {
        nbdx_qcow2_out_free(q);
        return -1;
    }
    q->next = q->lay.data;
    /* The data area in one piece up front: the writes then fill
     * allocated blocks instead of allocating as they go.  Advice only:
     * a file system without fallocate allocates as before. */
    if (q->lay.data_max)
        (void) fallocate(q->fd, 0, (off_t) (q->lay.data * C),
                         (off_t) (q->lay.data_max * C));
    *out = q;
    return 0;
}

void
nbdx_qcow2_out_free(struct nbdx_qcow2_out *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    for (uint64_t i = 0; i < q->l1_size; i++)
        free(q->l2[i]);
    free(q->l2);
    free(q->l2_host);
    free(q->header);
    free(q->backing);
    free(q->path);
    free(q);
}

/* The L2 entry of a guest cluster; NULL where the plan has no table. */
static uint64_t *
q_entry(struct nbdx_qcow2_out *q, uint64_t guest_cluster)
{
    uint64_t i = guest_cluster / L2_ENTRIES;

    if (!q->l2_host[i])
        return NULL;
    if (!q->l2[i])
        q->l2[i] = xcalloc(L2_ENTRIES, sizeof **q->l2);
    return &q->l2[i][guest_cluster % L2_ENTRIES];
}

/* Word by word: the compiler vectorises it, and data clusters usually
 * differ from zero in their first bytes. */
static bool
q_is_zero(const char *buf, size_t len)
{
    const uint64_t *w = (const uint64_t *) buf;
    size_t n = len / 8;
    uint64_t acc = 0;

    for (size_t i = 0; i < n; i += 64) {
        size_t end = i + 64 < n ? i + 64 : n;
        for (size_t j = i; j < end; j++)
            acc |= w[j];
        if (acc)
            return false;
    }
    for (size_t i = n * 8; i < len; i++)
        if (buf[i])
            return false;
    return true;
}

static int
q_check_range(const struct nbdx_qcow2_out *q, uint64_t off, uint64_t len,
              char *err, size_t errlen)
{
    if (off % C || (len % C && off + len != q->size) || off + len > q->size ||
        off + len < off) {
        q_err(err, errlen, "unaligned write of %llu bytes at offset %llu to %s",
              (unsigned long long) len, (unsigned long long) off, q->path);
        return -1;
    }
    return 0;
}

static int
q_unplanned(const struct nbdx_qcow2_out *q, uint64_t off, char *err, size_t errlen)
{
    q_err(err, errlen, "write at offset %llu of %s is outside the plan",
          (unsigned long long) off, q->path);
    return -1;
}

/* Data clusters are appended, so what is behind q->next is final: start
 * its writeback now and then, and wait for (and drop from the page
 * cache) what is well behind.  Without this the whole backup sits dirty
 * in the page cache until the final fdatasync, which then takes a third
 * of the time, and a backup evicts what the host was caching. */
static void
q_writeback(struct nbdx_qcow2_out *q)
{
    uint64_t end = q->next * C;

    if (end - q->wb_started < WB_STEP)
        return;
    /* Advice only: an error here leaves the work to fdatasync. */
    (void) sync_file_range(q->fd, (off_t) q->wb_started,
                           (off_t) (end - q->wb_started), SYNC_FILE_RANGE_WRITE);
    q->wb_started = end;
    if (q->wb_started - q->wb_done < WB_LAG + WB_STEP)
        return;
    end = q->wb_started - WB_LAG;
    (void) sync_file_range(q->fd, (off_t) q->wb_done, (off_t) (end - q->wb_done),
                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                           SYNC_FILE_RANGE_WAIT_AFTER);
    (void) posix_fadvise(q->fd, (off_t) q->wb_done, (off_t) (end - q->wb_done),
                         POSIX_FADV_DONTNEED);
    q->wb_done = end;
}

/* Consecutive data clusters of one request go to consecutive host
 * clusters, in one pwrite per run of them. */
int
nbdx_qcow2_out_write(struct nbdx_qcow2_out *q, const void *buf, uint64_t off,
                     uint64_t len, uint64_t *zero_bytes, char *err, size_t errlen)
{
    const char *p = buf;
    uint64_t run_start = 0, run_host = 0, run_len = 0;

    if (q_check_range(q, off, len, err, errlen) < 0)
        return -1;
    for (uint64_t pos = 0; pos < len; pos += C) {
        uint64_t n = len - pos < C ? len - pos : C;
        uint64_t *e = q_entry(q, (off + pos) / C);

        if (!e)
            return q_unplanned(q, off + pos, err, errlen);
        if (*e & ~OFLAG_ZERO) {
            q_err(err, errlen, "cluster at offset %llu of %s written twice",
                  (unsigned long long) (off + pos), q->path);
            return -1;
        }
        if (q_is_zero(p + pos, (size_t) n)) {
            /* Unallocated reads as zeros only where nothing lies below. */
            *e = q->backing ? OFLAG_ZERO : 0;
            *zero_bytes += n;
            continue;
        }
        if (q->next == q->lay.data + q->lay.data_max)
            return q_unplanned(q, off + pos, err, errlen);
        /* A zero cluster in between ends the run: the buffer has a gap
         * there, the host clusters do not. */
        if (run_len && run_start + run_len != pos) {
            if (q_pwrite(q, p + run_start, (size_t) run_len, run_host * C,
                         err, errlen) < 0)
                return -1;
            run_len = 0;
        }
        if (!run_len) {
            run_start = pos;
            run_host = q->next;
        }
        *e = (q->next * C) | OFLAG_COPIED;
        q->next++;
        run_len += n;
    }
    if (run_len && q_pwrite(q, p + run_start, (size_t) run_len, run_host * C,
                            err, errlen) < 0)
        return -1;
    q_writeback(q);
    return 0;
}

/* The clusters of buf that nbdx_qcow2_out_write stored (those that are
 * not zeros), in the order it stored them. */
void
nbdx_qcow2_out_hash(struct nbdx_qcow2_out *q, const void *buf, uint64_t len)
{
    const char *p = buf;
    uint64_t run_start = 0, run_len = 0;

    for (uint64_t pos = 0; pos < len; pos += C) {
        uint64_t n = len - pos < C ? len - pos : C;

        if (q_is_zero(p + pos, (size_t) n)) {
            if (run_len)
                q_hash_clusters(q, p + run_start, (size_t) run_len);
            run_len = 0;
            continue;
        }
        if (!run_len)
            run_start = pos;
        run_len += n;
        q->hashed++;
    }
    if (run_len)
        q_hash_clusters(q, p + run_start, (size_t) run_len);
}

int
nbdx_qcow2_out_zero(struct nbdx_qcow2_out *q, uint64_t off, uint64_t len,
                    char *err, size_t errlen)
{
    if (q_check_range(q, off, len, err, errlen) < 0)
        return -1;
    for (uint64_t pos = 0; pos < len; pos += C) {
        uint64_t *e = q_entry(q, (off + pos) / C);

        /* Without a backing file an unmapped cluster reads as zeros. */
        if (!e && !q->backing)
            continue;
        if (!e)
            return q_unplanned(q, off + pos, err, errlen);
        if (*e & ~OFLAG_ZERO) {
            q_err(err, errlen, "cluster at offset %llu of %s written twice",
                  (unsigned long long) (off + pos), q->path);
            return -1;
        }
        *e = q->backing ? OFLAG_ZERO : 0;
    }
    return 0;
}

/* After the data: the unused end of the data area (a hole), the L2
 * tables, the refcount blocks (1 for every cluster but the hole's). */
static int
q_tail(struct nbdx_qcow2_out *q, char *err, size_t errlen)
{
    const struct q_layout *l = &q->lay;
    uint64_t hole = q->next, hole_end = l->data + l->data_max;
    CLEANUP_FREE unsigned char *buf = xmalloc(C);

    q_hash_zeros(q, (hole_end - hole) * C);
    /* Give back what open allocated for the hole (it reads as zeros
     * either way). */
    if (hole < hole_end)
        (void) fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         (off_t) (hole * C), (off_t) ((hole_end - hole) * C));
    for (uint64_t t = 0; t < q->l1_size; t++) {
        if (!q->l2_host[t])
            continue;
        memset(buf, 0, C);
        for (size_t j = 0; q->l2[t] && j < L2_ENTRIES; j++)
            put_be64(buf + j * 8, q->l2[t][j]);
        if (q_put(q, buf, C, q->l2_host[t], err, errlen) < 0)
            return -1;
    }
    for (uint64_t b = 0; b < l->nrb; b++) {
        uint64_t first = b * REFS_PER_BLOCK;

        memset(buf, 0, C);
        for (uint64_t k = first; k < l->total && k < first + REFS_PER_BLOCK; k++)
            if (k < hole || k >= hole_end)
                put_be16(buf + (k - first) * 2, 1);
        if (q_put(q, buf, C, l->rb + b, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int
nbdx_qcow2_out_finish(struct nbdx_qcow2_out *q, char sha256[65],
                      char *err, size_t errlen)
{
    uint8_t d[SHA256_DIGEST_SIZE];
    int r;

    if (q->hashed != q->next - q->lay.data) {
        q_err(err, errlen, "the checksum of %s missed %lld of its data clusters",
              q->path, (long long) (q->next - q->lay.data - q->hashed));
        return -1;
    }
    r = q_tail(q, err, errlen);

    /* The header last: until it is written the file is no image at all. */
    if (r == 0)
        r = q_pwrite(q, q->header, q->header_len, 0, err, errlen);
    if (r == 0 && ftruncate(q->fd, (off_t) (q->lay.total * C)) < 0) {
        q_err(err, errlen, "cannot set the size of %s: %s", q->path, strerror(errno));
        r = -1;
    }
    if (r == 0 && fdatasync(q->fd) < 0) {
        q_err(err, errlen, "cannot flush %s: %s", q->path, strerror(errno));
        r = -1;
    }
    if (r == 0 && close(q->fd) < 0) {
        q->fd = -1;
        q_err(err, errlen, "cannot close %s: %s", q->path, strerror(errno));
        return -1;
    }
    if (r != 0)
        return r;
    q->fd = -1;
    sha256_digest(&q->sha, sizeof d, d);
    for (size_t i = 0; i < sizeof d; i++)
        snprintf(sha256 + 2 * i, 3, "%02x", d[i]);
    return 0;
}
