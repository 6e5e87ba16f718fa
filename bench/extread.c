/* extread: the plain libnbd reader of an incremental backup, the limit
 * `ckptctl pull --incremental` is measured against: block status of the
 * dirty-bitmap context over the whole export, then every dirty extent
 * read (16 reads of at most 256 KiB in flight on one connection) and
 * thrown away.  No zero detection, no planning, no hashing.
 *
 *   extread URI CONTEXT [OUT]
 *
 * With OUT, the bound for a pull that stores what it reads: OUT is
 * created (truncated, sized to the export), each read chunk is written at
 * its offset as it completes (pwrite in the completion callback, the
 * other reads staying in flight), and OUT is fdatasync'ed at the end.
 * Prints "read BYTES".  Compiled with -Wall -Wextra -Werror by the
 * Makefile's bench rules. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libnbd.h>

#define CHUNK (256u << 10)
#define INFLIGHT 16
#define STATUS_CHUNK (1ull << 30)

struct ext { uint64_t off, len; };
static struct ext *ext;
static size_t next_, cap;

static int
on_extent(void *opaque, const char *ctx, uint64_t offset, uint32_t *e,
          size_t n, int *error)
{
    uint64_t *pos = opaque;

    (void) offset;              /* the answers follow on from *pos */
    (void) error;
    if (strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
        return 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (e[i + 1] & 1) {
            if (next_ == cap) {
                cap = cap ? cap * 2 : 1024;
                ext = realloc(ext, cap * sizeof *ext);
                if (!ext)
                    abort();
            }
            ext[next_++] = (struct ext) { *pos, e[i] };
        }
        *pos += e[i];
    }
    return 0;
}

/* One buffer's read in flight, and where it goes in OUT. */
struct slot { int busy; char *buf; uint64_t off, len; };
static int out_fd = -1;

static int
on_read(void *opaque, int *error)
{
    struct slot *s = opaque;

    if (*error) {
        fprintf(stderr, "extread: read failed: %s\n", strerror(*error));
        exit(1);
    }
    for (uint64_t done = 0; out_fd >= 0 && done < s->len;) {
        ssize_t n = pwrite(out_fd, s->buf + done, s->len - done, (off_t) (s->off + done));
        if (n <= 0) {
            perror("extread: write");
            exit(1);
        }
        done += (uint64_t) n;
    }
    /* Writeback started as it goes, as ckptctl's writer does: otherwise
     * the whole incremental waits in the page cache for the final
     * fdatasync, and the limit measures the kernel's flusher instead. */
    if (out_fd >= 0)
        sync_file_range(out_fd, (off_t) s->off, (off_t) s->len, SYNC_FILE_RANGE_WRITE);
    s->busy = 0;
    return 1;                   /* retire the command */
}

int
main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: extread URI CONTEXT [OUT]\n");
        return 2;
    }
    struct nbd_handle *h = nbd_create();
    if (!h || nbd_add_meta_context(h, argv[2]) < 0 || nbd_connect_uri(h, argv[1]) < 0) {
        fprintf(stderr, "extread: %s\n", nbd_get_error());
        return 1;
    }
    int64_t size = nbd_get_size(h);
    if (argc == 4) {
        out_fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out_fd < 0 || ftruncate(out_fd, (off_t) size) < 0) {
            perror(argv[3]);
            return 1;
        }
    }
    for (uint64_t off = 0; off < (uint64_t) size;) {
        uint64_t pos = off, n = (uint64_t) size - off;
        nbd_extent_callback cb = { .callback = on_extent, .user_data = &pos };
        if (nbd_block_status(h, n < STATUS_CHUNK ? n : STATUS_CHUNK, off, cb, 0) < 0 ||
            pos == off) {
            fprintf(stderr, "extread: block status: %s\n", nbd_get_error());
            return 1;
        }
        off = pos;
    }
    char *buf = malloc((size_t) INFLIGHT * CHUNK);
    struct slot slot[INFLIGHT] = { { 0 } };
    uint64_t total = 0, done_off = 0;
    size_t i = 0;
    for (;;) {
        /* Every free buffer reads the next chunk of the dirty extents. */
        for (size_t b = 0; b < INFLIGHT && i < next_; b++) {
            struct slot *s = &slot[b];
            if (s->busy)
                continue;
            uint64_t len = ext[i].len - done_off < CHUNK ? ext[i].len - done_off : CHUNK;
            nbd_completion_callback cb = { .callback = on_read, .user_data = s };
            *s = (struct slot) { 1, buf + b * CHUNK, ext[i].off + done_off, len };
            if (nbd_aio_pread(h, s->buf, len, s->off, cb, 0) < 0) {
                fprintf(stderr, "extread: read: %s\n", nbd_get_error());
                return 1;
            }
            total += len;
            done_off += len;
            if (done_off == ext[i].len) {
                i++;
                done_off = 0;
            }
        }
        if (nbd_aio_in_flight(h) == 0 && i == next_)
            break;
        if (nbd_poll(h, -1) < 0) {
            fprintf(stderr, "extread: %s\n", nbd_get_error());
            return 1;
        }
    }
    if (out_fd >= 0 && (fdatasync(out_fd) < 0 || close(out_fd) < 0)) {
        perror(argv[3]);
        return 1;
    }
    printf("read %llu\n", (unsigned long long) total);
    nbd_shutdown(h, 0);
    nbd_close(h);
    free(buf);
    free(ext);
    return 0;
}
