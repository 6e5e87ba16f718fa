/* The ids of the jobs QEMU runs, whoever started them: listed once per
 * connection (query-jobs), then followed by JOB_STATUS_CHANGE, which QEMU
 * sends every monitor for every job.  A change asks QEMU for its block
 * jobs (a mirror makes it wait, change.c) and a backup's end lists the
 * jobs its undos may have to end (job.c): both skip that query when no
 * job they care about exists, one QMP command fewer on each.
 *
 * Until the listing has answered, nothing is known and the callers ask
 * QEMU as before.  Events that arrive before that answer are already in
 * it: QEMU sends replies and events on one stream, in order. */
#include "agent/agent.h"

static void
jobs_listed(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct agent *a = opaque;
    size_t i;
    json_t *j;
    str_vec_free_all(&a->live_jobs);
    a->live_jobs_known = false;
    if (err) {
        log_debug("query-jobs: %s: the jobs are listed at each change", err->desc);
        return;
    }
    json_array_foreach(ret, i, j) {
        const char *id = json_string_value(json_object_get(j, "id"));
        if (id)
            str_vec_append(&a->live_jobs, xstrdup(id));
    }
    a->live_jobs_known = true;
}

void
qjobs_list(struct agent *a)
{
    qjobs_forget(a);
    vm_send(a, "query-jobs", NULL, jobs_listed, a);
}

void
qjobs_forget(struct agent *a)
{
    str_vec_free_all(&a->live_jobs);
    a->live_jobs_known = false;
}

static ssize_t
qjobs_find(const struct agent *a, const char *id)
{
    for (size_t i = 0; i < a->live_jobs.len; i++)
        if (strcmp(a->live_jobs.ptr[i], id) == 0)
            return (ssize_t) i;
    return -1;
}

void
qjobs_event(struct agent *a, const char *event, json_t *data)
{
    if (!a->live_jobs_known || strcmp(event, "JOB_STATUS_CHANGE") != 0)
        return;
    const char *id = json_string_value(json_object_get(data, "id"));
    const char *status = json_string_value(json_object_get(data, "status"));
    if (!id || !status)
        return;
    ssize_t i = qjobs_find(a, id);
    if (strcmp(status, "null") == 0 && i >= 0) {
        free(a->live_jobs.ptr[i]);
        a->live_jobs.ptr[i] = a->live_jobs.ptr[--a->live_jobs.len];
    } else if (strcmp(status, "null") != 0 && i < 0) {
        str_vec_append(&a->live_jobs, xstrdup(id));
    }
}

/* Whether QEMU may run a job for which match says true: unknown counts
 * as yes. */
bool
qjobs_any(const struct agent *a, bool (*match)(const char *id, const void *opaque),
          const void *opaque)
{
    if (!a->live_jobs_known)
        return true;
    for (size_t i = 0; i < a->live_jobs.len; i++)
        if (match(a->live_jobs.ptr[i], opaque))
            return true;
    return false;
}
