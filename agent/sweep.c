/* Removing temporary objects by name.
 *
 * One routine serves backup-end, a failed backup-begin, a failed job,
 * SIGTERM and the start-up sweep after an agent crash: it asks QEMU what
 * exists, and removes whatever carries the job's mark (nbd/nbdx.h), in
 * the only order QEMU accepts: exports, block jobs, format nodes,
 * protocol nodes and bitmaps, files, and the NBD server last.  Every step
 * is quiet: a missing object is not an error when cleaning up. */
#include "agent/agent.h"
#include "nbd/nbdx.h"

#include <dirent.h>
#include <errno.h>
#include <unistd.h>

#define SWEEP_EVENT_TIMEOUT 30.0

struct sweep {
    struct agent *agent;
    char *job;                  /* NULL: every job */
    int jobnum;
    struct str_vec files;
    json_t *exports, *jobs, *nodes;
    int step;
    batch_done_cb *done;
    void *opaque;
};

static void sweep_step(const char *err, void *opaque);

static void
keep_result(json_t *ret, void *opaque)
{
    json_t **slot = opaque;
    *slot = json_incref(ret);
}

static struct batch *
quiet_batch(struct sweep *s)
{
    struct batch *b = batch_new(s->agent, sweep_step, s);
    b->quiet = true;
    return b;
}

static void
delete_exports(struct sweep *s, struct batch *b)
{
    size_t i;
    json_t *e;
    json_array_foreach(s->exports, i, e) {
        const char *id = json_string_value(json_object_get(e, "id"));
        if (!id || !nbdx_id_is_ours(id, s->job))
            continue;
        batch_expect_event(b, "BLOCK_EXPORT_DELETED", json_pack("{s:s}", "id", id),
                           SWEEP_EVENT_TIMEOUT);
        batch_send(b, "block-export-del", json_pack("{s:s,s:s}", "id", id,
                                                    "mode", "hard"), NULL, NULL);
    }
}

/* Backup jobs are cancelled and vanish (auto-dismiss); image-creation
 * jobs finish in milliseconds and are awaited, then dismissed. */
static void
cancel_jobs(struct sweep *s, struct batch *b)
{
    size_t i;
    json_t *j;
    json_array_foreach(s->jobs, i, j) {
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *status = json_string_value(json_object_get(j, "status"));
        const char *type = json_string_value(json_object_get(j, "type"));
        if (!id || !status || !nbdx_id_is_ours(id, s->job) ||
            strcmp(status, "concluded") == 0 || strcmp(status, "null") == 0)
            continue;
        bool create = type && strcmp(type, "create") == 0;
        batch_expect_event(b, "JOB_STATUS_CHANGE",
                           json_pack("{s:s,s:s}", "id", id,
                                     "status", create ? "concluded" : "null"),
                           SWEEP_EVENT_TIMEOUT);
        if (!create)
            batch_send(b, "job-cancel", json_pack("{s:s}", "id", id), NULL, NULL);
    }
}

static void
dismiss_jobs(struct sweep *s, struct batch *b)
{
    size_t i;
    json_t *j;
    json_array_foreach(s->jobs, i, j) {
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *status = json_string_value(json_object_get(j, "status"));
        if (id && status && nbdx_id_is_ours(id, s->job) &&
            strcmp(status, "concluded") == 0)
            batch_send(b, "job-dismiss", json_pack("{s:s}", "id", id), NULL, NULL);
    }
}

static void
delete_nodes(struct sweep *s, struct batch *b, char kind)
{
    size_t i;
    json_t *n;
    json_array_foreach(s->nodes, i, n) {
        const char *name = json_string_value(json_object_get(n, "node-name"));
        if (!name || !nbdx_node_is_ours(name, s->jobnum) ||
            name[strlen(NBDX_PREFIX)] != kind)
            continue;
        const char *file = json_string_value(json_object_get(n, "file"));
        if (kind == 's' && file)
            str_vec_append(&s->files, xstrdup(file));
        batch_send(b, "blockdev-del", json_pack("{s:s}", "node-name", name), NULL, NULL);
    }
}

static void
remove_bitmaps(struct sweep *s, struct batch *b)
{
    size_t i, k;
    json_t *n, *bm;
    json_array_foreach(s->nodes, i, n) {
        const char *node = json_string_value(json_object_get(n, "node-name"));
        json_array_foreach(json_object_get(n, "dirty-bitmaps"), k, bm) {
            const char *name = json_string_value(json_object_get(bm, "name"));
            if (node && name && nbdx_bitmap_is_ours(name, s->job))
                batch_send(b, "block-dirty-bitmap-remove",
                           json_pack("{s:s,s:s}", "node", node, "name", name),
                           NULL, NULL);
        }
    }
}

/* The start-up sweep: no job of ours is alive, so every scratch file in
 * the scratch directory is a leftover. */
static void
list_stale_files(struct sweep *s)
{
    DIR *dir = opendir(s->agent->opt.scratch_dir);
    struct dirent *de;
    if (!dir)
        return;
    while ((de = readdir(dir))) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, NBDX_PREFIX, strlen(NBDX_PREFIX)) == 0 &&
            len > 6 && strcmp(de->d_name + len - 6, ".qcow2") == 0)
            str_vec_append(&s->files, xasprintf("%s/%s", s->agent->opt.scratch_dir,
                                                de->d_name));
    }
    closedir(dir);
}

static void
unlink_files(struct sweep *s)
{
    for (size_t i = 0; i < s->files.len; i++) {
        if (unlink(s->files.ptr[i]) == 0)
            log_info("removed scratch file %s", s->files.ptr[i]);
        else if (errno != ENOENT)
            log_warn("cannot remove scratch file %s: %m", s->files.ptr[i]);
    }
}

static bool
server_still_needed(struct sweep *s)
{
    for (struct backup_job *j = s->agent->jobs; j; j = j->next)
        if (!s->job || strcmp(j->id, s->job) != 0)
            return true;
    return false;
}

/* After the last job (or, at start-up, whatever a dead agent started). */
static void
stop_server(struct sweep *s, struct batch *b)
{
    struct agent *a = s->agent;
    if (server_still_needed(s) || (!a->nbd_server && s->job))
        return;
    bool tls = !s->job || json_is_true(json_object_get(a->nbd_server, "tls"));
    batch_send(b, "nbd-server-stop", NULL, NULL, NULL);
    if (tls)
        batch_send(b, "object-del", json_pack("{s:s}", "id", NBDX_TLS_ID), NULL, NULL);
    json_decref(a->nbd_server);
    a->nbd_server = NULL;
}

static void
sweep_finish(struct sweep *s)
{
    batch_done_cb *done = s->done;
    void *opaque = s->opaque;
    json_decref(s->exports);
    json_decref(s->jobs);
    json_decref(s->nodes);
    str_vec_free_all(&s->files);
    free(s->job);
    free(s);
    done(NULL, opaque);
}

static void
sweep_step(const char *err, void *opaque)
{
    struct sweep *s = opaque;
    if (s->step == 6) {
        sweep_finish(s);
        return;
    }
    struct batch *b = quiet_batch(s);
    switch (s->step++) {
    case 0:
        batch_send(b, "query-block-exports", NULL, keep_result, &s->exports);
        batch_send(b, "query-jobs", NULL, keep_result, &s->jobs);
        break;
    case 1:
        delete_exports(s, b);
        cancel_jobs(s, b);
        break;
    case 2:
        json_decref(s->jobs);
        s->jobs = NULL;
        batch_send(b, "query-jobs", NULL, keep_result, &s->jobs);
        batch_send(b, "query-named-block-nodes", json_pack("{s:b}", "flat", 1),
                   keep_result, &s->nodes);
        break;
    case 3:
        /* QEMU runs one connection's commands in order, so one batch can
         * remove the format nodes before the protocol nodes under them. */
        dismiss_jobs(s, b);
        delete_nodes(s, b, 'f');
        remove_bitmaps(s, b);
        delete_nodes(s, b, 's');
        if (!s->job)
            list_stale_files(s);
        unlink_files(s);
        stop_server(s, b);
        s->step = 6;
        break;
    }
    batch_arm(b);
}

void
sweep_run(struct agent *a, const char *job, int jobnum,
          const struct str_vec *files, batch_done_cb *done, void *opaque)
{
    struct sweep *s = xcalloc(1, sizeof *s);
    *s = (struct sweep) {
        .agent = a, .job = job ? xstrdup(job) : NULL, .jobnum = jobnum,
        .done = done, .opaque = opaque,
    };
    for (size_t i = 0; files && i < files->len; i++)
        str_vec_append(&s->files, xstrdup(files->ptr[i]));
    sweep_step(NULL, s);
}
