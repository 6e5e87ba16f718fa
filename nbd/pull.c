/* ckptd: the pull client's copy engine (see pull.h).
 *
 * Two phases per disk.  First the map: block status over the whole export,
 * in chunks, because a server may answer any prefix of what was asked
 * (QEMU caps the descriptors per reply); the answer becomes a list of
 * COPY and ZERO ops.  Then the copy: a fixed set of slots, each one
 * request at a time (read into its buffer, then write from it, or a
 * zero), driven by one poll() over the handles.  Completion callbacks
 * only record what happened; every new command is issued from the loop,
 * which keeps libnbd's rule of not calling into a handle from its own
 * callbacks and keeps the state in one place.
 *
 * The ops are first widened to whole clusters (the file is opened with
 * them: they fix its layout), and the writes go to one writer thread,
 * which owns the file (nbdx_qcow2_out_* and its writeback) while the
 * copy runs: writing the disk then overlaps reading the export instead
 * of following it (an incremental of 819 MiB: reads alone take 1.0 s,
 * writes alone 0.7 s, and in one thread they added up).  Behind it a
 * hasher thread feeds the stored slots, in the order stored, to the
 * file's checksum (nbdx_qcow2_out_hash).  The loop and the two threads
 * hand slots over under one mutex; an eventfd wakes the loop's poll().
 */
#include "nbd/pull.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Flag of the qemu:dirty-bitmap:* context: the block changed. */
#define NBDX_PULL_DIRTY 1u
/* Block status is asked for this much at a time (NBD counts are 32 bits). */
#define NBDX_PULL_STATUS_CHUNK (1ull << 30)
/* A zero request carries no data, so it may be large. */
#define NBDX_PULL_MAX_ZERO (1ull << 30)
/* Connections to an export that allows several (can_multi_conn): QEMU
 * serves each one's requests in its own coroutine queue, and more than
 * one keeps its socket busy while we write. */
#define NBDX_PULL_CONNS 4

static void __attribute__((format(printf, 3, 4)))
pull_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --- plans --- */

static void
plan_emit(struct nbdx_pull_op_vec *ops, uint64_t offset, uint64_t length,
          enum nbdx_pull_kind kind)
{
    struct nbdx_pull_op *last = ops->len ? &ops->ptr[ops->len - 1] : NULL;

    if (last && last->kind == kind && last->offset + last->length == offset)
        last->length += length;
    else
        nbdx_pull_op_vec_append(ops, (struct nbdx_pull_op) {
            .offset = offset, .length = length, .kind = kind });
}

/* A walk over one list of descriptors: `end` is where the current one
 * stops; a NULL list is one descriptor covering everything. */
struct plan_cursor {
    const struct nbdx_pull_extent *e;
    size_t n, i;
    uint64_t end;
    uint32_t flags;
};

/* Moves to the next descriptor; false when the list is used up. */
static bool
plan_advance(struct plan_cursor *c)
{
    if (c->i == c->n)
        return false;
    c->flags = c->e[c->i].flags;
    c->end += c->e[c->i].length;
    c->i++;
    return true;
}

uint64_t
nbdx_pull_plan_range(uint64_t offset, uint64_t len,
                     const struct nbdx_pull_extent *alloc, size_t nalloc,
                     const struct nbdx_pull_extent *dirty, size_t ndirty,
                     struct nbdx_pull_op_vec *ops)
{
    uint64_t end = offset + len, pos = offset;
    struct plan_cursor a = { alloc, nalloc, 0, alloc ? offset : end, 0 };
    struct plan_cursor d = { dirty, ndirty, 0, dirty ? offset : end,
                             NBDX_PULL_DIRTY };

    while (pos < end) {
        uint64_t stop;
        bool zero;

        /* Zero-length descriptors just advance again. */
        if (pos >= a.end) {
            if (!plan_advance(&a))
                break;
            continue;
        }
        if (pos >= d.end) {
            if (!plan_advance(&d))
                break;
            continue;
        }
        stop = a.end < d.end ? a.end : d.end;
        stop = stop < end ? stop : end;
        zero = a.flags & LIBNBD_STATE_ZERO;
        /* A HOLE without ZERO may still read as non-zero (NBD spec), so
         * only ZERO lets a range be skipped or zeroed instead of read. */
        if (d.flags & NBDX_PULL_DIRTY) {
            if (!dirty && !zero)
                plan_emit(ops, pos, stop - pos, NBDX_PULL_COPY);
            else if (dirty)
                plan_emit(ops, pos, stop - pos,
                          zero ? NBDX_PULL_ZERO : NBDX_PULL_COPY);
        }
        pos = stop;
    }
    return pos - offset;
}

/* Appends [off, end) of one kind to an aligned list whose last op may
 * overlap it by a cluster (both were widened to cluster boundaries):
 * a COPY wins the overlap, since it reads what is really there. */
static void
align_emit(struct nbdx_pull_op_vec *ops, uint64_t off, uint64_t end,
           enum nbdx_pull_kind kind)
{
    struct nbdx_pull_op *last = ops->len ? &ops->ptr[ops->len - 1] : NULL;

    if (last && last->offset + last->length > off) {
        if (last->kind == kind) {
            if (end > last->offset + last->length)
                last->length = end - last->offset;
            return;
        }
        if (kind == NBDX_PULL_ZERO) {
            off = last->offset + last->length;
        } else {
            last->length = off > last->offset ? off - last->offset : 0;
            if (last->length == 0)
                ops->len--;
        }
    }
    if (off < end)
        plan_emit(ops, off, end - off, kind);
}

void
nbdx_pull_plan_align(const struct nbdx_pull_op_vec *in, uint64_t cluster,
                     uint64_t size, struct nbdx_pull_op_vec *out)
{
    for (size_t i = 0; i < in->len; i++) {
        uint64_t off = in->ptr[i].offset, end = off + in->ptr[i].length;
        /* Outward for reads, inward for zeros; the disk's end counts as
         * a boundary (its last cluster may be short). */
        uint64_t lo = off / cluster * cluster;
        uint64_t hi = end % cluster ? (end / cluster + 1) * cluster : end;
        uint64_t zlo = off % cluster ? lo + cluster : off;
        uint64_t zhi = end == size ? end : end / cluster * cluster;

        hi = hi < size ? hi : size;
        if (in->ptr[i].kind == NBDX_PULL_COPY || zlo >= zhi) {
            align_emit(out, lo, hi, NBDX_PULL_COPY);
            continue;
        }
        if (lo < zlo)
            align_emit(out, lo, zlo, NBDX_PULL_COPY);
        align_emit(out, zlo, zhi, NBDX_PULL_ZERO);
        if (zhi < hi)
            align_emit(out, zhi, hi, NBDX_PULL_COPY);
    }
}

uint64_t
nbdx_pull_plan_bytes(const struct nbdx_pull_op_vec *ops, enum nbdx_pull_kind kind)
{
    uint64_t n = 0;

    for (size_t i = 0; i < ops->len; i++)
        if (ops->ptr[i].kind == kind)
            n += ops->ptr[i].length;
    return n;
}

/* --- connecting --- */

static struct nbd_handle *
pull_connect_source(const struct nbdx_pull_opts *o, char *err, size_t errlen)
{
    struct nbd_handle *h = nbd_create();

    if (!h) {
        pull_err(err, errlen, "%s", nbd_get_error());
        return NULL;
    }
    /* libnbd zeroes every read buffer first unless told not to: 4 % of
     * a pull's CPU, for buffers that are only ever written from what
     * the server sent (a failed read fails the pull). */
    nbd_set_pread_initialize(h, false);
    if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        (o->bitmap && nbd_add_meta_context(h, o->bitmap) < 0) ||
        nbd_connect_uri(h, o->uri) < 0) {
        pull_err(err, errlen, "cannot connect to %s: %s", o->uri, nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    if (o->bitmap && nbd_can_meta_context(h, o->bitmap) != 1) {
        pull_err(err, errlen, "export %s does not offer the meta context %s",
                 o->uri, o->bitmap);
        nbd_close(h);
        return NULL;
    }
    return h;
}

/* --- the map --- */

struct pull_map {
    const char *bitmap;
    struct nbdx_pull_extent_vec alloc, dirty;
    bool bad;                   /* a descriptor list of odd length */
};

static void
map_append(struct nbdx_pull_extent_vec *v, uint64_t length, uint32_t flags)
{
    nbdx_pull_extent_vec_append(v, (struct nbdx_pull_extent) { length, flags });
}

static struct nbdx_pull_extent_vec *
map_list(struct pull_map *m, const char *metacontext)
{
    if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
        return &m->alloc;
    if (m->bitmap && strcmp(metacontext, m->bitmap) == 0)
        return &m->dirty;
    return NULL;
}

#ifdef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
static int
map_extent64(void *opaque, const char *metacontext, uint64_t offset,
             nbd_extent *entries, size_t n, int *error)
{
    struct nbdx_pull_extent_vec *v = map_list(opaque, metacontext);

    for (size_t i = 0; v && i < n; i++)
        map_append(v, entries[i].length, (uint32_t) entries[i].flags);
    return 0;
}
#else
static int
map_extent(void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t n, int *error)
{
    struct pull_map *m = opaque;
    struct nbdx_pull_extent_vec *v = map_list(m, metacontext);

    if (n % 2)
        m->bad = true;
    /* entries: (length, flags) pairs. */
    for (size_t i = 0; v && i + 1 < n; i += 2)
        map_append(v, entries[i], entries[i + 1]);
    return 0;
}
#endif

static int
map_block_status(struct nbd_handle *h, struct pull_map *m, uint64_t count,
                 uint64_t offset)
{
#ifdef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
    return nbd_block_status_64(h, count, offset,
                               (nbd_extent64_callback) { .callback = map_extent64,
                                                         .user_data = m }, 0);
#else
    return nbd_block_status(h, count, offset,
                            (nbd_extent_callback) { .callback = map_extent,
                                                    .user_data = m }, 0);
#endif
}

/* Block status over the whole export, chunk by chunk, into ops. */
static enum nbdx_pull_status
pull_map_export(struct nbd_handle *h, const struct nbdx_pull_opts *o,
                uint64_t size, struct nbdx_pull_op_vec *ops,
                char *err, size_t errlen)
{
    struct pull_map m = { .bitmap = o->bitmap };
    bool have_alloc = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    enum nbdx_pull_status st = NBDX_PULL_OK;

    for (uint64_t off = 0, got; off < size && st == NBDX_PULL_OK; off += got) {
        uint64_t count = size - off < NBDX_PULL_STATUS_CHUNK
                         ? size - off : NBDX_PULL_STATUS_CHUNK;

        got = count;
        if (!have_alloc && !o->bitmap) {
            nbdx_pull_plan_range(off, count, NULL, 0, NULL, 0, ops);
            continue;
        }
        m.alloc.len = m.dirty.len = 0;
        if (map_block_status(h, &m, count, off) < 0) {
            pull_err(err, errlen, "block status of %s at offset %llu failed: %s",
                     o->uri, (unsigned long long) off, nbd_get_error());
            st = NBDX_PULL_FAILED;
            break;
        }
        got = nbdx_pull_plan_range(off, count,
                                   have_alloc ? m.alloc.ptr : NULL, m.alloc.len,
                                   o->bitmap ? m.dirty.ptr : NULL, m.dirty.len,
                                   ops);
        if (got == 0 || m.bad) {
            pull_err(err, errlen, "%s sent an unusable block status at offset"
                     " %llu", o->uri, (unsigned long long) off);
            st = NBDX_PULL_FAILED;
        } else if (o->cancel && *o->cancel) {
            st = NBDX_PULL_CANCELLED;
        }
    }
    nbdx_pull_extent_vec_reset(&m.alloc);
    nbdx_pull_extent_vec_reset(&m.dirty);
    return st;
}

/* --- the copy --- */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ, SLOT_WRITING };

struct pull_slot {
    struct pull_copy *c;
    struct nbd_handle *src;     /* the connection this slot reads on */
    char *buf;                  /* NBDX_PULL_MAX_REQUEST, on first COPY */
    uint64_t offset, length;
    enum nbdx_pull_kind kind;
    enum slot_state state;
    int error;                  /* errno of a failed read or write */
    struct pull_slot *wnext;    /* in a to-do or the done list */
    bool wfailed;               /* the writer could not store it */
};

/* A first-in first-out list of slots. */
struct slot_fifo {
    struct pull_slot *head, **tail;
};

/* The writer's and the hasher's side (see the top of this file).
 * Everything here is under lock, except the threads and efd, which the
 * loop owns. */
struct pull_writer {
    pthread_t thread, hasher;
    bool started, hstarted;
    pthread_mutex_t lock;
    pthread_cond_t wake, hwake;
    struct slot_fifo todo;      /* to store, in the order the loop read them */
    struct slot_fifo htodo;     /* stored, to hash, in the order stored */
    struct pull_slot *done;
    bool stop;
    int efd;                    /* counts finished slots: wakes the loop */
    char err[512];              /* the first failure */
    uint64_t sparse;            /* zero bytes found, not stored */
};

struct pull_copy {
    const struct nbdx_pull_opts *o;
    struct nbd_handle *src[NBDX_PULL_CONNS];   /* [0] maps the export */
    size_t nsrc;
    struct nbdx_qcow2_out *file;
    struct nbdx_pull_op_vec ops;
    size_t next;                /* the op being cut into requests */
    uint64_t next_done;         /* bytes of it already issued */
    uint64_t max_request;
    struct pull_slot *slots;
    size_t nslots;
    struct nbdx_pull_result *res;
    char *err;
    size_t errlen;
    struct pull_writer w;
};

static int
slot_read_done(void *opaque, int *error)
{
    struct pull_slot *s = opaque;

    s->error = *error;
    s->state = SLOT_READ;
    return 1;                   /* retire the command */
}

/* The writer stored slot s: count it, free the slot. */
static void
slot_stored(struct pull_slot *s)
{
    if (s->kind == NBDX_PULL_COPY)
        s->c->res->copied += s->length;
    else
        s->c->res->zeroed += s->length;
    s->state = SLOT_FREE;
}

/* Cuts the next request off the op list into slot s; false when none is
 * left. */
static bool
copy_take(struct pull_copy *c, struct pull_slot *s)
{
    const struct nbdx_pull_op *op;
    uint64_t max;

    if (c->next == c->ops.len)
        return false;
    op = &c->ops.ptr[c->next];
    max = op->kind == NBDX_PULL_COPY ? c->max_request : NBDX_PULL_MAX_ZERO;
    s->offset = op->offset + c->next_done;
    s->length = op->length - c->next_done < max ? op->length - c->next_done : max;
    s->kind = op->kind;
    c->next_done += s->length;
    if (c->next_done == op->length) {
        c->next++;
        c->next_done = 0;
    }
    return true;
}

static int
copy_fail_nbd(struct pull_copy *c, const char *what, const struct pull_slot *s)
{
    pull_err(c->err, c->errlen, "cannot %s %llu bytes at offset %llu: %s", what,
             (unsigned long long) s->length, (unsigned long long) s->offset,
             nbd_get_error());
    return -1;
}

/* --- the writer thread --- */

static int
writer_store(struct pull_copy *c, struct pull_slot *s, uint64_t *sparse,
             char *err, size_t errlen)
{
    return s->kind == NBDX_PULL_COPY
        ? nbdx_qcow2_out_write(c->file, s->buf, s->offset, s->length, sparse,
                               err, errlen)
        : nbdx_qcow2_out_zero(c->file, s->offset, s->length, err, errlen);
}

static void
fifo_push(struct slot_fifo *f, struct pull_slot *s)
{
    s->wnext = NULL;
    *f->tail = s;
    f->tail = &s->wnext;
}

static struct pull_slot *
fifo_pop(struct slot_fifo *f)
{
    struct pull_slot *s = f->head;

    if (s && !(f->head = s->wnext))
        f->tail = &f->head;
    return s;
}

/* Under lock: s is finished, back to the loop.  Only the first slot
 * on an empty list wakes it: the loop takes the whole list after it has
 * read the eventfd, so a later one is either taken with it or finds the
 * list empty again. */
static void
writer_done(struct pull_writer *w, struct pull_slot *s)
{
    uint64_t one = 1;
    bool wake = !w->done;

    s->wnext = w->done;
    w->done = s;
    if (wake && write(w->efd, &one, sizeof one) < 0) {
        /* Cannot happen short of 2^64 wakes; the loop polls anyway. */
    }
}

static void *
writer_main(void *opaque)
{
    struct pull_copy *c = opaque;
    struct pull_writer *w = &c->w;
    uint64_t sparse = 0;
    char err[512];

    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct pull_slot *s = fifo_pop(&w->todo);
        bool failed;

        if (!s) {
            pthread_cond_wait(&w->wake, &w->lock);
            continue;
        }
        failed = w->err[0] != 0;
        pthread_mutex_unlock(&w->lock);
        /* After a failure nothing more is stored: the file is lost. */
        err[0] = 0;
        failed = failed || writer_store(c, s, &sparse, err, sizeof err) < 0;
        pthread_mutex_lock(&w->lock);
        if (failed && !w->err[0])
            snprintf(w->err, sizeof w->err, "%s", err[0] ? err : "write failed");
        s->wfailed = failed;
        w->sparse = sparse;
        if (!failed && s->kind == NBDX_PULL_COPY) {
            fifo_push(&w->htodo, s);
            pthread_cond_signal(&w->hwake);
        } else {
            writer_done(w, s);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* The checksum runs a step behind the writes, on a thread of its own:
 * SHA-256 of every byte costs as much CPU as storing it, and in one
 * thread the two added up. */
static void *
hasher_main(void *opaque)
{
    struct pull_copy *c = opaque;
    struct pull_writer *w = &c->w;

    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct pull_slot *s = fifo_pop(&w->htodo);

        if (!s) {
            pthread_cond_wait(&w->hwake, &w->lock);
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        nbdx_qcow2_out_hash(c->file, s->buf, s->length);
        pthread_mutex_lock(&w->lock);
        writer_done(w, s);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static int
writer_start(struct pull_copy *c)
{
    struct pull_writer *w = &c->w;
    int e;

    w->todo.tail = &w->todo.head;
    w->htodo.tail = &w->htodo.head;
    if ((w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        pull_err(c->err, c->errlen, "cannot create an eventfd: %s", strerror(errno));
        return -1;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->hwake, NULL);
    if ((e = pthread_create(&w->thread, NULL, writer_main, c)) == 0) {
        w->started = true;
        if ((e = pthread_create(&w->hasher, NULL, hasher_main, c)) == 0)
            w->hstarted = true;
    }
    if (e != 0) {
        pull_err(c->err, c->errlen, "cannot start the writer threads: %s", strerror(e));
        return -1;
    }
    return 0;
}

/* Stops the threads after their current slot (what is queued is
 * dropped: this is the end of the copy, or its failure). */
static void
writer_stop(struct pull_copy *c)
{
    struct pull_writer *w = &c->w;

    if (w->started) {
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_cond_signal(&w->wake);
        pthread_cond_signal(&w->hwake);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
        if (w->hstarted)
            pthread_join(w->hasher, NULL);
        pthread_cond_destroy(&w->wake);
        pthread_cond_destroy(&w->hwake);
        pthread_mutex_destroy(&w->lock);
        w->started = w->hstarted = false;
    }
    if (w->efd >= 0)
        close(w->efd);
    w->efd = -1;
}

/* Hands slot s (read done, or a zero) to the writer. */
static void
writer_queue(struct pull_copy *c, struct pull_slot *s)
{
    struct pull_writer *w = &c->w;

    s->state = SLOT_WRITING;
    pthread_mutex_lock(&w->lock);
    fifo_push(&w->todo, s);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

/* Takes back what the writer finished; -1 after a failure (in c->err). */
static int
writer_collect(struct pull_copy *c)
{
    struct pull_writer *w = &c->w;
    struct pull_slot *s;
    uint64_t n;
    int r = 0;

    if (read(w->efd, &n, sizeof n) < 0 && errno != EAGAIN)
        return 0;
    pthread_mutex_lock(&w->lock);
    s = w->done;
    w->done = NULL;
    c->res->sparse = w->sparse;
    if (w->err[0]) {
        pull_err(c->err, c->errlen, "%s", w->err);
        r = -1;
    }
    pthread_mutex_unlock(&w->lock);
    for (; s; s = s->wnext) {
        if (!s->wfailed)
            slot_stored(s);
        else
            s->state = SLOT_FREE;
    }
    return r;
}

/* Starts the slot's next command: a read or zero for a free slot, the
 * write for a slot whose read finished. */
static int
copy_issue(struct pull_copy *c, struct pull_slot *s)
{
    nbd_completion_callback rd = { .callback = slot_read_done, .user_data = s };

    if (s->state == SLOT_READ) {
        writer_queue(c, s);
        return 0;
    }
    if (s->state != SLOT_FREE || !copy_take(c, s))
        return 0;
    if (s->kind == NBDX_PULL_ZERO) {
        writer_queue(c, s);
        return 0;
    }
    if (!s->buf)
        s->buf = xmalloc(c->max_request);
    s->state = SLOT_READING;
    if (nbd_aio_pread(s->src, s->buf, s->length, s->offset, rd, 0) < 0)
        return copy_fail_nbd(c, "read", s);
    return 0;
}

/* Issues what can be issued; -1 on error, else the number of busy slots. */
static int
copy_step(struct pull_copy *c)
{
    int busy = 0;

    if (writer_collect(c) < 0)
        return -1;
    for (size_t i = 0; i < c->nslots; i++) {
        struct pull_slot *s = &c->slots[i];

        if (s->error) {
            pull_err(c->err, c->errlen, "cannot %s %llu bytes at offset %llu: %s",
                     s->state == SLOT_READ ? "read" : "write",
                     (unsigned long long) s->length,
                     (unsigned long long) s->offset, strerror(s->error));
            return -1;
        }
        if (copy_issue(c, s) < 0)
            return -1;
        busy += s->state != SLOT_FREE;
    }
    return busy;
}

static void
poll_prepare(struct nbd_handle *h, struct pollfd *p)
{
    unsigned dir = nbd_aio_get_direction(h);

    p->fd = nbd_aio_get_fd(h);
    p->events = (dir & LIBNBD_AIO_DIRECTION_READ ? POLLIN : 0) |
                (dir & LIBNBD_AIO_DIRECTION_WRITE ? POLLOUT : 0);
    p->revents = 0;
}

/* What nbd_poll does, for one handle. */
static int
poll_notify(struct nbd_handle *h, const struct pollfd *p)
{
    if (p->revents & (POLLIN | POLLHUP))
        return nbd_aio_notify_read(h);
    if (p->revents & POLLOUT)
        return nbd_aio_notify_write(h);
    if (p->revents & (POLLERR | POLLNVAL)) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* Waits for the handles (or a signal: EINTR lets the caller look at
 * the cancel flag) and lets libnbd move on. */
static int
copy_poll(struct pull_copy *c)
{
    struct pollfd p[NBDX_PULL_CONNS + 1];
    nfds_t n = c->nsrc;
    int bad = 0;

    for (size_t i = 0; i < c->nsrc; i++)
        poll_prepare(c->src[i], &p[i]);
    p[n++] = (struct pollfd) { .fd = c->w.efd, .events = POLLIN };
    if (poll(p, n, 500) < 0)
        return errno == EINTR ? 0 : -1;
    for (size_t i = 0; i < c->nsrc && !bad; i++)
        bad = poll_notify(c->src[i], &p[i]) < 0;
    if (bad) {
        pull_err(c->err, c->errlen, "NBD connection failed: %s", nbd_get_error());
        return -1;
    }
    return 0;
}

static enum nbdx_pull_status
copy_run(struct pull_copy *c)
{
    uint64_t total = nbdx_pull_plan_bytes(&c->ops, NBDX_PULL_COPY);
    int busy;

    while ((busy = copy_step(c)) != 0) {
        if (busy < 0)
            return NBDX_PULL_FAILED;
        if (c->o->cancel && *c->o->cancel)
            return NBDX_PULL_CANCELLED;
        if (c->o->progress)
            c->o->progress(c->o->opaque, c->res->copied, total);
        if (copy_poll(c) < 0)
            return NBDX_PULL_FAILED;
    }
    /* Every slot is free: the writer waits for work and the file is
     * the loop's again. */
    return nbdx_qcow2_out_finish(c->file, c->res->sha256, c->err, c->errlen) < 0
           ? NBDX_PULL_FAILED : NBDX_PULL_OK;
}

/* Requests are whole clusters (see pull.h), as large as the server
 * takes. */
static uint64_t
pull_max_request(struct nbd_handle *src)
{
    uint64_t max = NBDX_PULL_MAX_REQUEST;
    int64_t a = nbd_get_block_size(src, LIBNBD_SIZE_MAXIMUM);

    if (a > 0 && (uint64_t) a < max)
        max = (uint64_t) a;
    if (max >= NBDX_QCOW2_CLUSTER)
        max -= max % NBDX_QCOW2_CLUSTER;
    return max;
}

/* More connections to the export where it allows them (o->connections,
 * capped); the slots take turns over them. */
static int
copy_open_more(struct pull_copy *c)
{
    unsigned want = c->o->connections ? c->o->connections : NBDX_PULL_CONNS;

    if (want > NBDX_PULL_CONNS)
        want = NBDX_PULL_CONNS;
    if (want > c->nslots)
        want = (unsigned) c->nslots;
    if (nbd_can_multi_conn(c->src[0]) != 1)
        want = 1;
    while (c->nsrc < want) {
        if (!(c->src[c->nsrc] = pull_connect_source(c->o, c->err, c->errlen)))
            return -1;
        c->nsrc++;
    }
    for (size_t i = 0; i < c->nslots; i++)
        c->slots[i].src = c->src[i % c->nsrc];
    return 0;
}

/* Connects to the export. */
static enum nbdx_pull_status
copy_open(struct pull_copy *c)
{
    int64_t size;

    if ((c->src[0] = pull_connect_source(c->o, c->err, c->errlen)))
        c->nsrc = 1;
    if (!c->nsrc || copy_open_more(c) < 0)
        return c->o->cancel && *c->o->cancel ? NBDX_PULL_CANCELLED
                                             : NBDX_PULL_FAILED;
    if ((size = nbd_get_size(c->src[0])) < 0) {
        pull_err(c->err, c->errlen, "cannot get the size: %s", nbd_get_error());
        return NBDX_PULL_FAILED;
    }
    c->res->size = (uint64_t) size;
    c->max_request = pull_max_request(c->src[0]);
    if (c->max_request % NBDX_QCOW2_CLUSTER) {
        pull_err(c->err, c->errlen, "%s: requests of at most %llu bytes do not"
                 " fill a cluster", c->o->uri, (unsigned long long) c->max_request);
        return NBDX_PULL_FAILED;
    }
    return NBDX_PULL_OK;
}

/* The map, on cluster boundaries, and the file laid out for it. */
static enum nbdx_pull_status
copy_plan(struct pull_copy *c)
{
    struct nbdx_pull_op_vec ops = { 0 };
    enum nbdx_pull_status st = pull_map_export(c->src[0], c->o, c->res->size,
                                               &ops, c->err, c->errlen);

    if (st == NBDX_PULL_OK)
        nbdx_pull_plan_align(&ops, NBDX_QCOW2_CLUSTER, c->res->size, &c->ops);
    nbdx_pull_op_vec_reset(&ops);
    if (st == NBDX_PULL_OK &&
        (nbdx_qcow2_out_open(c->o->target_file, c->res->size, c->o->target_backing,
                             &c->ops, &c->file, c->err, c->errlen) < 0 ||
         writer_start(c) < 0))
        st = NBDX_PULL_FAILED;
    return st;
}

/* Stops the writer and closes the handles, then frees the buffers
 * in-flight requests used. */
static void
copy_close(struct pull_copy *c, bool clean)
{
    writer_stop(c);
    for (size_t i = 0; i < c->nsrc && clean; i++)
        nbd_shutdown(c->src[i], 0);
    for (size_t i = 0; i < c->nsrc; i++)
        nbd_close(c->src[i]);
    nbdx_qcow2_out_free(c->file);
    for (size_t i = 0; i < c->nslots; i++)
        free(c->slots[i].buf);
    free(c->slots);
    nbdx_pull_op_vec_reset(&c->ops);
}

enum nbdx_pull_status
nbdx_pull_copy(const struct nbdx_pull_opts *o, struct nbdx_pull_result *res,
               char *err, size_t errlen)
{
    struct pull_copy c = {
        .o = o, .res = res, .err = err, .errlen = errlen,
        .nslots = o->requests ? o->requests : 1,
        .w = { .efd = -1 },
    };
    enum nbdx_pull_status st;

    *res = (struct nbdx_pull_result) { 0 };
    c.slots = xcalloc(c.nslots, sizeof *c.slots);
    for (size_t i = 0; i < c.nslots; i++)
        c.slots[i].c = &c;
    st = copy_open(&c);
    if (st == NBDX_PULL_OK)
        st = copy_plan(&c);
    if (st == NBDX_PULL_OK)
        st = copy_run(&c);
    copy_close(&c, st == NBDX_PULL_OK);
    return st;
}
