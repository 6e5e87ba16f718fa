/* A backup job's life: one state machine over the step table of
 * job-steps.c.
 *
 *   STARTING  steps run forward, one batch each: steps[0] ... steps[N-1]
 *   RUNNING   every step done: the exports serve the backup
 *   ENDING    the undos of every step begun run in reverse, from one place
 *
 * Every ending takes the same road, job_unwind: backup-end, a failed
 * step, a failed running job (scratch full, I/O error, lost fleecing
 * job), SIGTERM, QEMU leaving, and the start-up sweep (a job that stands
 * for every object of ours, with every step "begun").  A stop asked for
 * while a step's batch is out waits for that batch, then unwinds.
 * Undos find what to remove in QEMU's own listing, by the names of
 * bitmap/names.c, so they remove exactly what exists. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <errno.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <unistd.h>

static void job_advance(struct backup_job *job);
static void unwind_step(const char *err, void *opaque);

/* --- looking jobs up --- */
struct backup_job *
job_find(struct agent *a, const char *id)
{
    for (struct backup_job *j = a->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

size_t
job_count(const struct agent *a)
{
    size_t n = 0;
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        n++;
    return n;
}

bool
job_disk_busy(const struct agent *a, const char *disk)
{
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        for (size_t k = 0; k < j->ndisks; k++)
            if (strcmp(j->disks[k].disk, disk) == 0)
                return true;
    return false;
}

/* A running job's base and its own new checkpoint are held by it. */
const struct backup_job *
job_holding_checkpoint(const struct agent *a, const char *name)
{
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        if ((j->incremental && strcmp(j->incremental, name) == 0) ||
            (j->checkpoint && strcmp(j->checkpoint, name) == 0))
            return j;
    return NULL;
}

/* --- the JSON form --- */
static char *
disk_uri(const json_t *server, const char *export)
{
    const char *transport = json_string_value(json_object_get(server, "transport"));
    if (transport && strcmp(transport, "unix") == 0)
        return xasprintf("nbd+unix:///%s?socket=%s", export,
                         json_string_value(json_object_get(server, "path")));
    const char *host = json_string_value(json_object_get(server, "host"));
    const char *port = json_string_value(json_object_get(server, "port"));
    bool v6 = host && strchr(host, ':');
    bool tls = json_is_true(json_object_get(server, "tls"));
    return xasprintf("%s://%s%s%s:%s/%s", tls ? "nbds" : "nbd", v6 ? "[" : "",
                     host, v6 ? "]" : "", port, export);
}

static const char *const state_names[] = { "starting", "running", "ending" };

json_t *
job_encode(const struct backup_job *job)
{
    json_t *o = json_pack("{s:s,s:s,s:s}", "id", job->id,
                          "mode", job->push ? "push" : "pull",
                          "status", state_names[job->state]);
    if (job->incremental)
        json_object_set_new(o, "incremental", json_string(job->incremental));
    if (job->checkpoint)
        json_object_set_new(o, "checkpoint", json_string(job->checkpoint));
    json_t *disks = json_array();
    for (size_t k = 0; k < job->ndisks; k++) {
        const struct job_disk *d = &job->disks[k];
        json_t *jd;
        if (job->push) {
            jd = json_pack("{s:s,s:I}", "disk", d->disk, "size", (json_int_t) d->size);
            push_encode_disk(d, jd);
        } else {
            CLEANUP_FREE char *uri = disk_uri(job->server, d->disk);
            jd = json_pack("{s:s,s:s,s:s,s:I}", "disk", d->disk, "export",
                           d->disk, "uri", uri, "size", (json_int_t) d->size);
        }
        json_object_set_new(jd, "mode", json_string(d->bitmap ? "incremental" : "full"));
        if (d->bitmap)
            json_object_set_new(jd, "bitmap", json_string(d->bitmap));
        if (d->reason)
            json_object_set_new(jd, "reason", json_string(d->reason));
        json_array_append_new(disks, jd);
    }
    json_object_set_new(o, "disks", disks);
    json_object_set_new(o, "fleecing", json_string(job->own_filter ? "filter"
                                                                   : "backup-job"));
    if (job->quiesce) {
        json_object_set_new(o, "quiesced", json_boolean(job->quiesced));
        json_object_set_new(o, "frozen-ms", json_integer(job->frozen_ms));
    }
    return o;
}

/* --- creating and freeing --- */
struct backup_job *
job_new(struct agent *a)
{
    struct backup_job *job = xcalloc(1, sizeof *job);
    job->agent = a;
    /* Milliseconds since the epoch, above the last job's: an id no agent
     * of this VM has handed out before, so a client retrying backup-end
     * on a restarted agent cannot end another job. */
    long long now_ms = (long long) (ev_time() * 1000);
    job->num = a->last_job = now_ms > a->last_job ? now_ms : a->last_job + 1;
    job->id = xasprintf("backup-%lld", job->num);
    job->state = JOB_STARTING;
    job->steps = job_steps;
    job->nsteps = job_nsteps;
    return job;
}

void
job_free(struct backup_job *job)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        free(job->disks[k].disk);
        free(job->disks[k].node);
        free(job->disks[k].qdev);
        free(job->disks[k].scratch);
        free(job->disks[k].bitmap);
        free(job->disks[k].reason);
        free(job->disks[k].target);
        free(job->disks[k].fdname);
        free(job->disks[k].backing);
        free(job->disks[k].partial);
        if (job->disks[k].fd >= 0)
            close(job->disks[k].fd);
    }
    free(job->disks);
    free(job->id);
    free(job->incremental);
    free(job->checkpoint);
    free(job->ckpt_desc);
    json_decref(job->ckpt_disks);
    free(job->failure);
    free(job->error);
    free(job->end_status);
    free(job->undo_error);
    free(job->scratch_dir);
    str_vec_free_all(&job->files);
    json_decref(job->server);
    json_decref(job->exports);
    json_decref(job->qjobs);
    json_decref(job->nodes);
    json_decref(job->blocks);
    json_decref(job->graph);
    json_decref(job->fdsets);
    free(job);
}

static void
job_unlink(struct agent *a, struct backup_job *job)
{
    for (struct backup_job **p = &a->jobs; *p; p = &(*p)->next)
        if (*p == job) {
            *p = job->next;
            return;
        }
}

/* --- forward --- */
void
job_start(struct backup_job *job)
{
    struct agent *a = job->agent;
    job->next = a->jobs;
    a->jobs = job;
    log_info("backup %s starting: %zu disks, %s%s", job->id, job->ndisks,
             job->incremental ? "incremental" : "full", job->push ? ", push" : "");
    job_advance(job);
}

static void
step_done(const char *err, void *opaque)
{
    struct backup_job *job = opaque;
    if (err && !job->error && strncmp(err, "nbd-server-start:", 17) == 0 &&
        strstr(err, "already"))
        job->error = xasprintf("QEMU already runs an NBD server that another QMP "
                               "client started (%s); ckptd neither stops nor shares "
                               "it: stop it, or end that client's exports first", err);
    else if (err && !job->error)
        job->error = xstrdup(err);
    job_advance(job);
}

static void
job_running(struct backup_job *job)
{
    struct agent *a = job->agent;
    job->state = JOB_RUNNING;
    job->committed = !job->push;        /* a push's checkpoint: once copied */
    job->announced = true;
    job_watch_scratch(a);
    struct request *req = job->begin_req;
    job->begin_req = NULL;
    log_info("backup %s running", job->id);
    if (req)
        req_reply(req, job_encode(job));
    if (job->checkpoint)
        agent_event(a, "CHECKPOINT_CREATED", json_pack("{s:s}", "name", job->checkpoint));
    agent_event(a, "BACKUP_BEGIN", json_pack("{s:s}", "id", job->id));
    if (job->push)
        push_check_done(job);       /* a tiny disk may be copied already */
}

static void
job_advance(struct backup_job *job)
{
    if (job->qemu_gone && !job->error)
        job->error = xstrdup("QEMU went away");
    if (!job->error && fleece_begin_invalid(job))
        job->error = xstrdup(fleece_begin_invalid(job));
    if (job->error || job->stop) {
        if (!job->end_status)
            job->end_status = xstrdup(job->stop ? "cancelled" : "failed");
        job_unwind(job);
        return;
    }
    if (job->started == job->nsteps) {
        job_running(job);
        return;
    }
    /* Steps up to the next barrier go out in one batch.  A command that
     * fails makes those after it fail too (their nodes are missing), and
     * the first failure is the one reported; the undos of every step
     * begun then remove whatever did reach QEMU. */
    struct batch *bt = batch_new(job->agent, step_done, job);
    while (job->started < job->nsteps && !job->error) {
        const struct job_step *s = &job->steps[job->started++];
        log_debug("backup %s: %s", job->id, s->name);
        int sent = bt->pending;
        s->run(job, bt);
        if (s->barrier && bt->pending != sent)
            break;
    }
    batch_arm(bt);
}

/* --- ending: every road leads here --- */
void
job_stop(struct backup_job *job, const char *status, char *why)
{
    if (why && !job->failure)
        job->failure = why;
    else
        free(why);
    if (job->state == JOB_ENDING || job->stop)
        return;
    free(job->end_status);
    job->end_status = xstrdup(status);
    if (job->state == JOB_STARTING) {
        job->stop = true;       /* the step in flight returns first */
        return;
    }
    job_unwind(job);
}

static void
keep_result(json_t *ret, void *opaque)
{
    json_t **slot = opaque;
    json_decref(*slot);
    *slot = json_incref(ret);
}

/* The nodes for one job's undos without listing every bitmap:
 * query-named-block-nodes costs about 10 us per bitmap in QEMU (20 ms
 * with 1,000 checkpoints, more than the rest of backup-end), and the only
 * bitmaps a job's undos look for are its temporary ones, on the disks'
 * nodes, which the cached tree holds (the begin's transaction put them
 * there).  So: every node's name from x-debug-query-block-graph (0.3 ms
 * whatever the bitmaps; query-blockstats with its statistics of every
 * node costs 1.4 ms), and for the disks' nodes their temporary bitmaps
 * from the tree.  The sweep, which looks for what a crashed agent left
 * anywhere, and a QEMU without that command list everything. */
static void
keep_nodes(json_t *ret, void *opaque)
{
    struct backup_job *job = opaque;
    const struct meta_tree *t = &job->agent->tree;
    json_t *nodes = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(ret, "nodes"), i, n) {
        const char *name = json_string_value(json_object_get(n, "name"));
        const char *type = json_string_value(json_object_get(n, "type"));
        if (!name || !type || strcmp(type, "block-driver") != 0)
            continue;
        json_t *bitmaps = json_array();
        for (size_t d = 0; d < t->ndisks; d++) {
            if (strcmp(t->disks[d].node, name) != 0)
                continue;
            for (size_t k = 0; k < t->disks[d].nbitmaps; k++) {
                const char *bm = t->disks[d].bitmaps[k].name;
                if (strncmp(bm, META_TEMP_PREFIX, strlen(META_TEMP_PREFIX)) == 0)
                    json_array_append_new(bitmaps, json_pack("{s:s}", "name", bm));
            }
        }
        json_array_append_new(nodes, json_pack("{s:s,s:o}", "node-name", name,
                                               "dirty-bitmaps", bitmaps));
    }
    json_decref(job->nodes);
    job->nodes = nodes;
    json_decref(job->graph);            /* the filter's undos read it too */
    job->graph = json_incref(ret);
}

static bool
job_of(const char *id, const void *opaque)
{
    return job_id_is_mine(opaque, id);
}

/* QEMU's listing of what exists: the undos remove only that.  Jobs are
 * listed only when QEMU may run one of this job's (qjobs.c): a pull job
 * through our own filter has none once it runs. */
void
job_list_qemu(struct backup_job *job, struct batch *b)
{
    batch_send(b, "query-block-exports", NULL, keep_result, &job->exports);
    if (job->sweep || qjobs_any(job->agent, job_of, job)) {
        batch_send(b, "query-jobs", NULL, keep_result, &job->qjobs);
    } else {
        json_decref(job->qjobs);
        job->qjobs = json_array();
    }
    if (job->sweep || !job->agent->caps.block_graph)
        batch_send(b, "query-named-block-nodes", json_pack("{s:b}", "flat", 1),
                   keep_result, &job->nodes);
    else
        batch_send(b, "x-debug-query-block-graph", NULL, keep_nodes, job);
    if (job->push || job->sweep)        /* only a push hands QEMU descriptors */
        batch_send(b, "query-fdsets", NULL, keep_result, &job->fdsets);
    fleece_list_qemu(job, b);
}

/* The job's temporary bitmaps are gone from QEMU (the undos removed them
 * with plain commands, not a transaction): from the cached tree too. */
static void
forget_temp_bitmaps(struct backup_job *job)
{
    json_t *actions = json_array();
    for (size_t k = 0; k < job->ndisks; k++) {
        ssize_t d = meta_tree_find_disk(&job->agent->tree, job->disks[k].disk);
        if (d >= 0 && job->disks[k].bitmap &&
            meta_disk_find_bitmap(&job->agent->tree.disks[d], job->disks[k].bitmap))
            json_array_append_new(actions, json_pack(
                "{s:s,s:{s:s,s:s}}", "type", "block-dirty-bitmap-remove", "data",
                "node", job->agent->tree.disks[d].node, "name", job->disks[k].bitmap));
    }
    if (json_array_size(actions) && meta_tree_apply(&job->agent->tree, actions) < 0)
        log_debug("backup %s: its temporary bitmaps stay in the cached tree", job->id);
    json_decref(actions);
}

void
job_unwind(struct backup_job *job)
{
    job->state = JOB_ENDING;
    job->undo_next = job->started - 1;
    log_debug("backup %s: undoing %d steps", job->id, job->started);
    struct batch *b = batch_new(job->agent, unwind_step, job);
    b->quiet = job->qemu_gone;
    job_unexport_early(job, b);
    job_list_qemu(job, b);
    batch_arm(b);
}

static void
emit_end(struct backup_job *job)
{
    if (!job->announced)
        return;
    json_t *data = json_pack("{s:s,s:s}", "id", job->id, "status", job->end_status);
    if (job->failure) {
        utf8_repair(job->failure);      /* names from QEMU may be any bytes */
        json_object_set_new(data, "error", json_string(job->failure));
    }
    agent_event(job->agent, "BACKUP_END", data);
}

static void sweep_push_table(struct backup_job *job);

static void
unwind_done(struct backup_job *job)
{
    struct agent *a = job->agent;
    job_remove_files(job);
    if (job->sweep && job->steps == job_steps) {
        sweep_push_table(job);
        return;
    }
    if (job->sweep) {
        void (*done)(struct agent *, void *) = job->swept;
        void *opaque = job->swept_opaque;
        job_free(job);
        done(a, opaque);
        return;
    }
    job_unlink(a, job);
    if (!job->undo_error && !job->qemu_gone)
        forget_temp_bitmaps(job);
    emit_end(job);
    log_info("backup %s ended: %s", job->id, job->end_status);
    if (job->resume_vm && a->qemu_ready) {
        log_info("resuming the guest, paused by the scratch I/O error");
        vm_send(a, "cont", NULL, NULL, NULL);
    }
    if (job->begin_req) {
        bool gone = job->qemu_gone || !a->qemu_ready;
        req_error(job->begin_req,
                  gone ? CKPT_ERR_NOT_CONNECTED
                       : job->error_class ? job->error_class : CKPT_ERR_QEMU,
                  "backup not started: %s", job->error ? job->error
                                                       : "the agent is shutting down");
    }
    if (job->end_req && job->undo_error)
        req_error(job->end_req, CKPT_ERR_QEMU, "backup %s ended, but QEMU refused to "
                  "remove some of its objects (%s); the agent removes them when it "
                  "next connects to QEMU", job->id, job->undo_error);
    else if (job->end_req)
        req_reply_ok(job->end_req);
    job_free(job);
    agent_maybe_exit(a);
}

/* Runs the undos from job->undo_next down to 0 in one batch, until one
 * says the rest must wait for what it sent (an export's or a job's end),
 * or asks for a fresh listing and to run again. */
static void
unwind_step(const char *err, void *opaque)
{
    struct backup_job *job = opaque;
    /* Every undo runs, whatever failed before it; the first failure is
     * kept for the reply (QEMU gone: nothing is left to remove). */
    if (err && !job->undo_error && !job->qemu_gone) {
        log_warn("backup %s: removing its objects: %s", job->id, err);
        job->undo_error = xstrdup(err);
    }
    if (job->undo_next < 0) {
        unwind_done(job);
        return;
    }
    struct batch *b = batch_new(job->agent, unwind_step, job);
    b->quiet = job->qemu_gone;
    if (job->relist) {
        job->relist = false;
        job_list_qemu(job, b);
        batch_arm(b);
        return;
    }
    while (job->undo_next >= 0) {
        const struct job_step *s = &job->steps[job->undo_next];
        enum undo_result r = s->undo(job, b);
        if (r == UNDO_AGAIN && job->undo_again++ < 2) {
            job->relist = true;     /* listed again once the waits end */
            break;
        }
        job->undo_again = 0;
        job->undo_next--;
        if (r != UNDO_DONE)
            break;
    }
    job->undid |= b->pending > 0;
    batch_arm(b);
}

/* --- the start-up sweep: the same undos, for every object of ours ---
 * The pull table first (its transaction undo cancels every block job of
 * ours, push ones too), then the push table for the nodes, fd sets and
 * partial targets only push jobs make: on the same listing when the pull
 * table's undos changed nothing in QEMU (the usual start, nothing of ours
 * left), since listing costs QEMU about 10 us a bitmap (0.2 s with 1,000
 * checkpoints on 8 disks). */
static void
sweep_push_table(struct backup_job *job)
{
    job->steps = push_steps;
    job->nsteps = job->started = push_nsteps;
    job->undo_next = push_nsteps - 1;
    job->relist = job->undid;
    job->undid = false;
    unwind_step(NULL, job);
}

void
job_sweep_all(struct agent *a, void (*done)(struct agent *, void *), void *opaque)
{
    struct backup_job *job = xcalloc(1, sizeof *job);
    job->agent = a;
    job->num = -1;
    job->id = xstrdup("sweep");
    job->sweep = true;
    job->steps = job_steps;
    job->nsteps = job->started = job_nsteps;
    job->swept = done;
    job->swept_opaque = opaque;
    job_unwind(job);
}

/* --- QEMU's side --- */
static void
fail_job(struct backup_job *job, char *why)
{
    log_error("backup %s failed: %s", job->id, why);
    job_stop(job, "failed", why);
}

/* QEMU 7.2's copy-before-write filter, as blockdev-backup sets it up,
 * fails the guest's write when it cannot copy the old data to the scratch
 * image: a full scratch disk would break the guest.  So the scratch space
 * is watched, and the backup ends (failed) while room is left.  statvfs
 * is one system call answered from the superblock (2.4 µs here, measured),
 * bounded and cheap at 4 calls a second per job. */
static void
scratch_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct agent *a = w->data;
    bool any = false;
    struct backup_job *job = a->jobs;
    while (job) {
        struct backup_job *next = job->next;
        struct statvfs st;
        if (job->state == JOB_RUNNING && job->scratch_dir) {
            any = true;
            uint64_t avail = statvfs(job->scratch_dir, &st) == 0
                             ? (uint64_t) st.f_bavail * st.f_frsize : UINT64_MAX;
            char *broken = fleece_broken(job, avail);
            if (broken)
                fail_job(job, broken);
            else if (avail < a->opt.scratch_reserve)
                fail_job(job, xasprintf(
                    "the scratch directory %s has less than %llu MiB free; the "
                    "backup was ended before a full scratch disk could %s; give "
                    "it more room (--scratch-dir)", job->scratch_dir,
                    (unsigned long long) (a->opt.scratch_reserve >> 20),
                    job->own_filter ? "break it" : "fail the guest's writes"));
        }
        job = next;
    }
    if (!any)
        ev_timer_stop(loop, w);
}

void
job_watch_scratch(struct agent *a)
{
    bool own_filter = false;
    for (const struct backup_job *j = a->jobs; j; j = j->next)
        own_filter |= j->own_filter;
    if ((!a->opt.scratch_reserve && !own_filter) || ev_is_active(&a->scratch_w))
        return;
    ev_timer_init(&a->scratch_w, scratch_tick, 0.25, 0.25);
    a->scratch_w.data = a;
    ev_timer_start(a->loop, &a->scratch_w);
}

static bool
job_has_node(const struct backup_job *job, const char *node)
{
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *filter = ckpt_tmp_node('c', job->num, k);
        if (strcmp(job->disks[k].node, node) == 0 || strcmp(filter, node) == 0)
            return true;
    }
    return false;
}

/* A guest write failed on a disk in a backup: most likely the scratch
 * image (see scratch_tick).  End the backup so the guest can write again,
 * and resume the guest if the error paused it. */
static void
io_error(struct agent *a, json_t *data)
{
    const char *node = json_string_value(json_object_get(data, "node-name"));
    const char *action = json_string_value(json_object_get(data, "action"));
    const char *reason = json_string_value(json_object_get(data, "reason"));
    for (struct backup_job *job = a->jobs; node && job; job = job->next)
        if (job->state == JOB_RUNNING && job_has_node(job, node)) {
            job->resume_vm = action && strcmp(action, "stop") == 0;
            fail_job(job, xasprintf("a guest write to node '%s' failed during the "
                                    "backup (%s), most likely in the scratch image; "
                                    "the backup was ended so the guest can write",
                                    node, reason ? reason : "I/O error"));
            return;
        }
}

static struct backup_job *
job_of_block_job(struct agent *a, const char *id, const char **disk)
{
    for (struct backup_job *j = a->jobs; j; j = j->next)
        for (size_t k = 0; k < j->ndisks; k++) {
            CLEANUP_FREE char *name = ckpt_tmp_job(j->id, j->disks[k].disk);
            if (strcmp(name, id) == 0) {
                *disk = j->disks[k].disk;
                return j;
            }
        }
    return NULL;
}

/* A fleecing job ending on its own means the point-in-time view is gone
 * (scratch full, I/O error): the backup has failed. */
void
job_qemu_event(struct agent *a, const char *event, json_t *data)
{
    /* QEMU persists its bitmaps as it closes; ours are not persistent and
     * the scratch nodes go with the process, so only the reason changes:
     * the jobs end when the connection does. */
    if (strcmp(event, "SHUTDOWN") == 0) {
        a->qemu_shutting_down = true;
        for (struct backup_job *j = a->jobs; j; j = j->next)
            if (!j->failure)
                j->failure = xstrdup("QEMU shut down during the backup");
        return;
    }
    if (a->qemu_shutting_down)
        return;                 /* QEMU cancels the jobs as it closes */
    if (strcmp(event, "RESUME") == 0)
        for (struct backup_job *j = a->jobs; j; j = j->next)
            j->vm_resumed |= j->state == JOB_STARTING && j->watch_resume;
    if (strcmp(event, "BLOCK_IO_ERROR") == 0) {
        io_error(a, data);
        return;
    }
    if (strcmp(event, "BLOCK_JOB_COMPLETED") != 0 &&
        strcmp(event, "BLOCK_JOB_CANCELLED") != 0)
        return;
    const char *id = json_string_value(json_object_get(data, "device"));
    const char *disk = NULL;
    struct backup_job *job = id ? job_of_block_job(a, id, &disk) : NULL;
    if (job && job->push && job->state != JOB_ENDING) {
        for (size_t k = 0; k < job->ndisks; k++)
            if (strcmp(job->disks[k].disk, disk) == 0)
                push_job_event(job, k, event, data);
        return;
    }
    if (!job || job->state != JOB_RUNNING)
        return;
    const char *why = json_string_value(json_object_get(data, "error"));
    fail_job(job, xasprintf("the point-in-time view of disk '%s' was lost: %s; "
                            "the backup must be taken again", disk,
                            why ? why : "its block job stopped"));
}

/* QEMU is gone and took every export, job and node with it: each job
 * unwinds (its QMP commands fail at once) and so removes its files. */
void
job_qemu_gone(struct agent *a)
{
    json_decref(a->nbd_server);
    a->nbd_server = NULL;
    struct backup_job *job = a->jobs;
    while (job) {
        struct backup_job *next = job->next;
        job->qemu_gone = true;
        job_stop(job, "failed", xstrdup("QEMU exited during the backup"));
        job = next;
    }
}

/* SIGTERM: every job ends, wherever it is; the loop stops after the last. */
void
job_end_all(struct agent *a)
{
    a->shutting_down = true;
    struct backup_job *j = a->jobs;
    while (j) {
        struct backup_job *next = j->next;
        job_stop(j, "cancelled", xstrdup("the agent is shutting down"));
        j = next;
    }
    agent_maybe_exit(a);
}
