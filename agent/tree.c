/* The cached checkpoint tree: re-read from QEMU (query-block, then
 * query-named-block-nodes), or replayed after a transaction QEMU
 * accepted.  The images are the truth; this is a cache of them. */
#include "agent/agent.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct refresh {
    struct agent *agent;
    vm_refresh_cb *cb;
    void *opaque;
    json_t *blocks;
};

static void
refresh_finish(struct refresh *r, const struct qmp_error *err)
{
    struct agent *a = r->agent;
    vm_refresh_cb *cb = r->cb;
    void *opaque = r->opaque;
    json_decref(r->blocks);
    free(r);
    cb(a, err, opaque);
}

static void
nodes_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct refresh *r = opaque;
    if (err) {
        refresh_finish(r, err);
        return;
    }
    struct meta_tree tree;
    struct ckpt_error e = { 0 };
    /* The chain known so far: a disk of another chain plugged in stays
     * foreign even when it holds more checkpoints than the VM's own. */
    if (meta_tree_build_in(r->blocks, ret, r->agent->tree.chain, &tree, &e) < 0) {
        struct qmp_error qe = { "GenericError", e.msg };
        refresh_finish(r, &qe);
        return;
    }
    meta_tree_free(&r->agent->tree);
    r->agent->tree = tree;
    vm_settle_chain(r->agent);
    refresh_finish(r, NULL);
}

static void
blocks_done(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct refresh *r = opaque;
    if (err) {
        refresh_finish(r, err);
        return;
    }
    r->blocks = json_incref(ret);
    vm_send(r->agent, "query-named-block-nodes",
            json_pack("{s:b}", "flat", 1), nodes_done, r);
}

void
vm_refresh(struct agent *a, vm_refresh_cb *cb, void *opaque)
{
    struct refresh *r = xcalloc(1, sizeof *r);
    *r = (struct refresh) { .agent = a, .cb = cb, .opaque = opaque };
    vm_send(a, "query-block", NULL, blocks_done, r);
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

