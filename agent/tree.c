/* The cached checkpoint tree: re-read from QEMU (query-blockstats, then
 * query-named-block-nodes), or replayed after a transaction QEMU
 * accepted.  The images are the truth; this is a cache of them. */
#include "agent/agent.h"

#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* What a change must not miss about the block graph, as text: the
 * devices and, per device, the node names from its root down through
 * file children and backing layers (query-blockstats, which QEMU answers
 * in a fraction of a millisecond whatever the number of bitmaps; the
 * queries that list bitmaps cost about 10 us per bitmap in QEMU, 20 ms
 * with 1,000 checkpoints).  A hot-plugged or unplugged disk, a medium
 * taken out or changed, an external snapshot, a commit, a mirror's
 * pivot, a filter put on top all change it.  Bitmaps are not in it: a
 * change's transaction names the bitmaps its plan relies on, and QEMU
 * refuses it when one is gone (change.c). */
static void
sig_node(FILE *sb, json_t *n)
{
    if (!json_is_object(n))
        return;
    const char *name = json_string_value(json_object_get(n, "node-name"));
    fprintf(sb, "%s", name ? name : "-");
    json_t *file = json_object_get(n, "parent"), *backing = json_object_get(n, "backing");
    if (file) {
        fprintf(sb, "(");
        sig_node(sb, file);
        fprintf(sb, ")");
    }
    if (backing) {
        fprintf(sb, "[");
        sig_node(sb, backing);
        fprintf(sb, "]");
    }
}

char *
vm_graph_signature(json_t *blockstats)
{
    if (!json_is_array(blockstats))
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *sb = open_memstream(&text, &len);
    if (!sb)
        return NULL;
    size_t i;
    json_t *dev;
    json_array_foreach(blockstats, i, dev) {
        const char *device = json_string_value(json_object_get(dev, "device"));
        const char *qdev = json_string_value(json_object_get(dev, "qdev"));
        fprintf(sb, "%s|%s|", device ? device : "", qdev ? qdev : "");
        sig_node(sb, dev);
        fprintf(sb, "\n");
    }
    fclose(sb);
    return text;
}

/* A re-read is two queries sent together and answered in order:
 * query-blockstats, the devices and their root nodes (and the graph's
 * signature: first, so that whatever changes while the second is
 * answered makes the next check differ: a re-read too many, never one
 * too few), then query-named-block-nodes, every node with its bitmaps.
 * query-block is not asked: its disks are the same node objects as
 * query-named-block-nodes', so they are taken from there by node name,
 * and it would list every bitmap of every disk a second time (20 ms in
 * QEMU with 1,000 checkpoints). */
struct refresh {
    struct agent *agent;
    vm_refresh_cb *cb;
    void *opaque;
    int pending;
    char *err_class, *err_desc;         /* the first failure */
    char *sig;
    json_t *stats;
    int rounds;                         /* both queries asked again when the
                                         * graph changed between answers */
};

#define REFRESH_ROUNDS 8

static void refresh_send(struct refresh *r);

static void
refresh_failed(struct refresh *r, const char *class, const char *desc)
{
    if (r->err_class)
        return;
    r->err_class = xstrdup(class);
    r->err_desc = xstrdup(desc);
}

/* The answers are parsed into many small objects, megabytes with
 * thousands of bitmaps: once they are freed (after the reply callbacks
 * return), the pages go back rather than keep the peak resident. */
static void
trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    malloc_trim(0);
}

void
vm_trim_soon(struct agent *a)
{
    if (ev_is_active(&a->trim_w))
        return;
    ev_timer_init(&a->trim_w, trim_cb, 0., 0.);
    ev_timer_start(a->loop, &a->trim_w);
}

static void
refresh_step(struct refresh *r)
{
    if (--r->pending > 0)
        return;
    struct agent *a = r->agent;
    vm_refresh_cb *cb = r->cb;
    void *opaque = r->opaque;
    struct qmp_error e = { r->err_class, r->err_desc };
    if (!r->err_class) {
        free(a->tree_sig);
        a->tree_sig = r->sig;
        r->sig = NULL;
    }
    json_decref(r->stats);
    free(r->sig);
    free(r);
    vm_trim_soon(a);
    cb(a, e.class ? &e : NULL, opaque);
    free((char *) e.class);
    free((char *) e.desc);
}

static void
stats_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct refresh *r = opaque;
    if (err)
        refresh_failed(r, err->class, err->desc);
    else {
        r->sig = vm_graph_signature(ret);
        r->stats = json_incref(ret);
    }
    refresh_step(r);
}

static json_t *
node_named(json_t *nodes, const char *name)
{
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const char *nn = json_string_value(json_object_get(n, "node-name"));
        if (nn && strcmp(nn, name) == 0)
            return n;
    }
    return NULL;
}

/* query-block's shape, from the devices of query-blockstats and their
 * root nodes' objects: {device, qdev, inserted}, no inserted for an
 * empty drive.  NULL when a device's root node is not among nodes: the
 * graph changed between the two answers (a block job ended and took its
 * implicit filter away, say), and a device would pass for empty. */
static json_t *
blocks_of(json_t *stats, json_t *nodes)
{
    json_t *blocks = json_array();
    size_t i;
    json_t *dev;
    json_array_foreach(stats, i, dev) {
        json_t *b = json_object();
        json_t *device = json_object_get(dev, "device");
        json_t *qdev = json_object_get(dev, "qdev");
        const char *root = json_string_value(json_object_get(dev, "node-name"));
        json_t *node = root ? node_named(nodes, root) : NULL;
        if (root && !node) {
            json_decref(b);
            json_decref(blocks);
            return NULL;
        }
        if (device)
            json_object_set(b, "device", device);
        if (qdev)
            json_object_set(b, "qdev", qdev);
        if (node)
            json_object_set(b, "inserted", node);
        json_array_append_new(blocks, b);
    }
    return blocks;
}

static void
nodes_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct refresh *r = opaque;
    struct meta_tree tree;
    struct ckpt_error e = { 0 };
    if (err)
        refresh_failed(r, err->class, err->desc);
    else if (r->stats && !r->err_class) {
        CLEANUP_JSON json_t *blocks = blocks_of(r->stats, ret);
        if (!blocks && ++r->rounds < REFRESH_ROUNDS) {
            log_debug("the block graph changed while it was read; reading it again");
            json_decref(r->stats);
            r->stats = NULL;
            free(r->sig);
            r->sig = NULL;
            refresh_send(r);
            return;
        }
        if (!blocks) {
            refresh_failed(r, "GenericError", "the block graph kept changing while "
                           "it was read");
            refresh_step(r);
            return;
        }
        /* The chain known so far: a disk of another chain plugged in
         * stays foreign even when it holds more checkpoints than the
         * VM's own. */
        if (meta_tree_build_in(blocks, ret, r->agent->tree.chain, &tree, &e) < 0)
            refresh_failed(r, "GenericError", e.msg);
        else {
            meta_tree_free(&r->agent->tree);
            r->agent->tree = tree;
            vm_settle_chain(r->agent);
        }
    }
    refresh_step(r);
}

void
vm_refresh(struct agent *a, vm_refresh_cb *cb, void *opaque)
{
    struct refresh *r = xcalloc(1, sizeof *r);
    *r = (struct refresh) { .agent = a, .cb = cb, .opaque = opaque };
    refresh_send(r);
}

static void
refresh_send(struct refresh *r)
{
    r->pending = 2;
    vm_send(r->agent, "query-blockstats", NULL, stats_done, r);
    vm_send(r->agent, "query-named-block-nodes", json_pack("{s:b}", "flat", 1),
            nodes_done, r);
}

/* --- the tree after a transaction --- */
struct replay_check {
    char *replayed;
    vm_refresh_cb *cb;
    void *opaque;
};

static void
verify_replay(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct replay_check *rc = opaque;
    CLEANUP_FREE char *read_back = err ? NULL : meta_tree_signature(&a->tree);
    if (read_back && strcmp(read_back, rc->replayed) != 0) {
        log_error("replayed tree differs from QEMU's:\n--- replayed\n%s--- QEMU\n%s",
                  rc->replayed, read_back);
        abort();
    }
    vm_refresh_cb *cb = rc->cb;
    void *cb_opaque = rc->opaque;
    free(rc->replayed);
    free(rc);
    cb(a, err, cb_opaque);
}

void
vm_tree_after(struct agent *a, json_t *actions, vm_refresh_cb *cb, void *opaque)
{
    if (!actions || meta_tree_apply(&a->tree, actions) < 0) {
        vm_refresh(a, cb, opaque);
        return;
    }
    vm_settle_chain(a);
    if (!a->opt.debug.verify_tree) {
        cb(a, NULL, opaque);
        return;
    }
    struct replay_check *rc = xmalloc(sizeof *rc);
    *rc = (struct replay_check) { meta_tree_signature(&a->tree), cb, opaque };
    vm_refresh(a, verify_replay, rc);
}

/* --- the chain id --- */
void
vm_settle_chain(struct agent *a)
{
    struct meta_tree *t = &a->tree;
    if (t->chain[0])
        return;
    /* Records of an earlier ckptd only: their id is derived until the
     * first change writes it, so it is the same for every agent. */
    const struct meta_record *oldest = NULL;
    if (t->nckpts)
        oldest = &t->ckpts[0].rec;
    if (t->nstale && (!oldest || t->stale[0].rec.seq < oldest->seq))
        oldest = &t->stale[0].rec;
    if (oldest) {
        meta_chain_derive(oldest, t->chain);
        return;
    }
    if (!a->new_chain[0]) {
        uint64_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t) sizeof r) {
            /* No entropy at all is no reason to refuse checkpoints:
             * time and pid still tell two VMs apart in practice. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            r = ((uint64_t) ts.tv_sec << 32) ^ (uint64_t) ts.tv_nsec ^
                ((uint64_t) getpid() << 16);
        }
        snprintf(a->new_chain, sizeof a->new_chain, "%016" PRIx64, r);
    }
    memcpy(t->chain, a->new_chain, sizeof t->chain);
}

/* --- checkpoints lost in a QEMU crash --- */
static bool
str_vec_has(const struct str_vec *v, const char *s)
{
    for (size_t i = 0; i < v->len; i++)
        if (strcmp(v->ptr[i], s) == 0)
            return true;
    return false;
}

/* Checkpoints known before QEMU went away and missing now were created
 * after that QEMU started and never reached the images (a crash). */
void
vm_note_lost(struct agent *a)
{
    for (size_t i = 0; i < a->known.len; i++)
        if (meta_tree_find_ckpt(&a->tree, a->known.ptr[i]) < 0 &&
            !str_vec_has(&a->lost, a->known.ptr[i])) {
            log_warn("checkpoint '%s' is gone: QEMU stopped before saving it",
                     a->known.ptr[i]);
            str_vec_append(&a->lost, xstrdup(a->known.ptr[i]));
        }
    str_vec_free_all(&a->known);
}

bool
vm_reply_if_lost(struct request *req, const char *name)
{
    struct agent *a = req->agent;
    if (!name || meta_tree_find_ckpt(&a->tree, name) >= 0 || !str_vec_has(&a->lost, name))
        return false;
    req_error(req, CKPT_ERR_NOT_FOUND,
              "checkpoint '%s' was lost: it was created after QEMU last started, "
              "and QEMU stopped without saving its bitmaps; a full backup is needed",
              name);
    return true;
}

