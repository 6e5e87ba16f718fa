/* backup-begin, query-backup, backup-end: the requests.  Everything that
 * can be checked is checked here, before anything is created; the job
 * itself is job.c's state machine over job-steps.c. */
#include "agent/agent.h"
#include "bitmap/plan.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* --- checking the request --- */

/* Is path directly inside the (real) directory that holds other? */
static bool
path_in_dir_of(const char *path, const char *other)
{
    CLEANUP_FREE char *p = xstrdup(path), *o = xstrdup(other);
    char *ps = strrchr(p, '/'), *os = strrchr(o, '/');
    if (!ps || !os || strcmp(ps + 1, "..") == 0 || strcmp(ps + 1, ".") == 0)
        return false;
    *ps = *os = '\0';
    char rp[PATH_MAX], ro[PATH_MAX];
    return realpath(*p ? p : "/", rp) && realpath(*o ? o : "/", ro) &&
           strcmp(rp, ro) == 0;
}

static json_t *
server_from_args(struct agent *a, json_t *arg, struct ckpt_error *e)
{
    if (!arg)
        return json_pack("{s:s,s:s}", "transport", "unix", "path", a->opt.nbd_socket);
    const char *transport = json_string_value(json_object_get(arg, "transport"));
    const char *key;
    json_t *v;
    json_object_foreach(arg, key, v)
        if (strcmp(key, "transport") && strcmp(key, "path") && strcmp(key, "host") &&
            strcmp(key, "port") && strcmp(key, "tls")) {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER, "server has no member '%s'", key);
            return NULL;
        }
    if (transport && strcmp(transport, "unix") == 0) {
        const char *path = json_string_value(json_object_get(arg, "path"));
        if (!path || path[0] != '/') {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                      "a unix server needs an absolute 'path'");
            return NULL;
        }
        if (!path_in_dir_of(path, a->opt.nbd_socket) &&
            !path_in_dir_of(path, a->opt.control_path)) {
            ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                      "the NBD socket '%s' must be in the directory of %s",
                      path, a->opt.nbd_socket);
            return NULL;
        }
        return json_pack("{s:s,s:s}", "transport", "unix", "path", path);
    }
    if (!transport || strcmp(transport, "tcp") != 0) {
        ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                  "server 'transport' must be \"unix\" or \"tcp\"");
        return NULL;
    }
    const char *host = json_string_value(json_object_get(arg, "host"));
    json_t *port = json_object_get(arg, "port");
    json_t *tls = json_object_get(arg, "tls");
    char portbuf[32];
    if (json_is_integer(port) && json_integer_value(port) > 0 &&
        json_integer_value(port) < 65536)
        snprintf(portbuf, sizeof portbuf, "%" JSON_INTEGER_FORMAT, json_integer_value(port));
    else if (json_is_string(port))
        snprintf(portbuf, sizeof portbuf, "%s", json_string_value(port));
    else
        portbuf[0] = '\0';
    if (!host || !*portbuf || (tls && !json_is_boolean(tls))) {
        ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                  "a tcp server needs 'host' and 'port' (and 'tls' is a boolean)");
        return NULL;
    }
    /* TLS is the default for TCP once it is configured; plain TCP must be
     * asked for twice: by the request and by the operator. */
    bool use_tls = tls ? json_is_true(tls) : a->opt.tls_dir != NULL;
    if (use_tls && !a->opt.tls_dir) {
        ckpt_fail(e, CKPT_ERR_UNSUPPORTED,
                  "NBD over TLS needs x509 files: start ckptd with --tls-dir");
        return NULL;
    }
    if (!use_tls && !a->opt.insecure_tcp) {
        ckpt_fail(e, CKPT_ERR_UNSUPPORTED,
                  "NBD over TCP without TLS lets anyone on the network read the "
                  "disks; use TLS (--tls-dir) or start ckptd with --insecure-tcp");
        return NULL;
    }
    return json_pack("{s:s,s:s,s:s,s:b}", "transport", "tcp", "host", host,
                     "port", portbuf, "tls", use_tls);
}

static int
make_private_dir(const char *path)
{
    CLEANUP_FREE char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

/* A backup does not start where the scratch watch would end it at once. */
static char *
check_room(struct agent *a, const char *dir, struct ckpt_error *e)
{
    struct statvfs st;
    if (statvfs(dir, &st) == 0 &&
        (uint64_t) st.f_bavail * st.f_frsize < a->opt.scratch_reserve) {
        ckpt_fail(e, CKPT_ERR_GENERIC, "the scratch directory %s has less than "
                  "%llu MiB free (--scratch-reserve)", dir,
                  (unsigned long long) (a->opt.scratch_reserve >> 20));
        return NULL;
    }
    return xstrdup(dir);
}

/* A scratch directory from a request must lie inside the configured one. */
static char *
scratch_dir_from_args(struct agent *a, const char *arg, struct ckpt_error *e)
{
    if (make_private_dir(a->opt.scratch_dir) < 0) {
        ckpt_fail(e, CKPT_ERR_GENERIC, "cannot use scratch directory %s: %s",
                  a->opt.scratch_dir, strerror(errno));
        return NULL;
    }
    char base[PATH_MAX], want[PATH_MAX];
    if (!realpath(a->opt.scratch_dir, base))
        base[0] = '\0';
    if (!arg)
        return check_room(a, base, e);
    if (!realpath(arg, want) ||
        strncmp(want, base, strlen(base)) != 0 ||
        (want[strlen(base)] != '/' && want[strlen(base)] != '\0')) {
        ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                  "scratch-dir '%s' must be an existing directory inside %s",
                  arg, base);
        return NULL;
    }
    return check_room(a, want, e);
}

/* --- backup-begin: everything that can be checked is checked before
 * anything is created --- */
static enum ckpt_err
check_checkpoint_arg(json_t *arg, const char **name, const char **desc,
                     struct ckpt_error *e)
{
    const char *key;
    json_t *v;
    *name = *desc = NULL;
    if (!arg)
        return CKPT_OK;
    json_object_foreach(arg, key, v)
        if (strcmp(key, "name") && strcmp(key, "description") && strcmp(key, "disks"))
            return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                             "checkpoint has no member '%s'", key);
    json_t *disks = json_object_get(arg, "disks");
    size_t i;
    json_array_foreach(disks, i, v)
        if (!json_is_string(v))
            disks = NULL;
    if (json_object_get(arg, "disks") && !disks)
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                         "checkpoint 'disks' must be a list of disk names");
    *name = json_string_value(json_object_get(arg, "name"));
    *desc = json_string_value(json_object_get(arg, "description"));
    if (!*name || (json_object_get(arg, "description") && !*desc))
        return ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                         "checkpoint needs a string 'name' (and 'description' is a string)");
    return CKPT_OK;
}

/* The disks of the backup, checked against the tree: by name, copied
 * into the job, which never looks at a tree index again. */
static enum ckpt_err
plan_disks(struct agent *a, struct request *req, struct backup_job *job,
           struct ckpt_error *e)
{
    json_t *disks = json_object_get(req->args, "disks");
    size_t ndisks = json_array_size(disks);
    CLEANUP_FREE const char **names = xcalloc(ndisks + 1, sizeof *names);
    for (size_t i = 0; i < ndisks; i++)
        names[i] = json_string_value(json_array_get(disks, i));
    CLEANUP_FREE const char **busy = xcalloc(a->tree.ndisks + 1, sizeof *busy);
    size_t nbusy = 0;
    for (size_t d = 0; d < a->tree.ndisks; d++)
        if (job_disk_busy(a, a->tree.disks[d].disk))
            busy[nbusy++] = a->tree.disks[d].disk;
    struct ckpt_backup_req r = {
        .job = job->id, .jobnum = job->num, .incremental = job->incremental,
        .disks = disks ? names : NULL, .ndisks = ndisks, .busy = busy, .nbusy = nbusy,
        .strict = json_is_true(json_object_get(req->args, "strict")),
    };
    struct ckpt_backup_disk *plan = xcalloc(a->tree.ndisks + 1, sizeof *plan);
    size_t n = 0;
    enum ckpt_err err = ckpt_plan_backup_disks(&a->tree, &r, plan, &n, e);
    if (!err) {
        job->disks = xcalloc(n + 1, sizeof *job->disks);
        job->ndisks = n;
        for (size_t k = 0; k < n; k++) {
            const struct meta_disk *d =
                &a->tree.disks[meta_tree_find_disk(&a->tree, plan[k].disk)];
            job->disks[k] = (struct job_disk) {
                .disk = xstrdup(d->disk), .node = xstrdup(d->active),
                .size = d->virtual_size, .granularity = plan[k].granularity,
                .bitmap = plan[k].incremental ? ckpt_tmp_bitmap(job->id, d->disk) : NULL,
                .reason = plan[k].reason ? xstrdup(plan[k].reason) : NULL,
                .fd = -1, .fdset = -1,
            };
        }
    }
    ckpt_backup_disks_free(plan, n);
    if (err)
        return err;
    job->own_filter = fleece_choose(a, job);
    /* Dry run of the transaction: a bad checkpoint name fails here. */
    json_t *dry = json_array();
    err = job_plan_transaction(job, &a->tree, dry, e);
    json_decref(dry);
    return err;
}

/* What a pull and a push begin take alike from their arguments. */
static void
begin_job_args(struct backup_job *job, json_t *args, const char *incremental,
               const char *ckpt_name, const char *ckpt_desc)
{
    job->now = (int64_t) time(NULL);
    job->incremental = incremental ? xstrdup(incremental) : NULL;
    job->checkpoint = ckpt_name ? xstrdup(ckpt_name) : NULL;
    job->ckpt_desc = ckpt_desc ? xstrdup(ckpt_desc) : NULL;
    job->ckpt_disks = json_incref(json_object_get(json_object_get(args, "checkpoint"),
                                                  "disks"));
    job->quiesce = json_is_true(json_object_get(args, "quiesce"));
}

static enum cmd_result
begin_refuse(struct request *req, struct backup_job *job, const struct ckpt_error *e)
{
    job_free(job);
    req_fail(req, e);
    return CMD_DONE;
}

/* A push backup: no NBD server, no scratch files; QEMU copies the
 * point-in-time view into the targets itself. */
static enum cmd_result
begin_push(struct request *req)
{
    struct agent *a = req->agent;
    json_t *args = req->args;
    struct ckpt_error e = { 0 };
    const char *ckpt_name, *ckpt_desc;
    for (const char *const *k = (const char *const[]) { "server", "scratch-dir", NULL };
         *k; k++)
        if (json_object_get(args, *k)) {
            req_error(req, CKPT_ERR_INVALID_PARAMETER, "a push backup takes no '%s'", *k);
            return CMD_DONE;
        }
    json_t *targets = json_object_get(args, "targets");
    if (!json_is_object(targets) || json_object_size(targets) == 0) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER, "a push backup needs 'targets': "
                  "{\"DISK\": {\"file\": PATH} or {\"fd\": NAME}, ...}");
        return CMD_DONE;
    }
    if (check_checkpoint_arg(json_object_get(args, "checkpoint"), &ckpt_name,
                             &ckpt_desc, &e)) {
        req_fail(req, &e);
        return CMD_DONE;
    }
    /* The disks are the targets' unless listed. */
    if (!json_object_get(args, "disks")) {
        json_t *disks = json_array();
        const char *key;
        json_t *v;
        json_object_foreach(targets, key, v)
            json_array_append_new(disks, json_string(key));
        json_object_set_new(args, "disks", disks);
    }
    const char *incremental = json_string_value(json_object_get(args, "incremental"));
    struct backup_job *job = job_new(a);
    job->push = true;
    job->steps = push_steps;
    job->nsteps = push_nsteps;
    begin_job_args(job, args, incremental, ckpt_name, ckpt_desc);
    if (job->quiesce && !quiesce_available(a, &e))
        return begin_refuse(req, job, &e);
    if (plan_disks(a, req, job, &e) || push_targets(req, job, &e))
        return begin_refuse(req, job, &e);
    job->begin_req = req;
    job_start(job);
    return CMD_WAIT;
}

static enum cmd_result
cmd_begin(struct request *req)
{
    struct agent *a = req->agent;
    json_t *args = req->args;
    struct ckpt_error e = { 0 };
    const char *ckpt_name, *ckpt_desc;
    if (!xml_backup_args(req))
        return CMD_DONE;
    const char *mode = json_string_value(json_object_get(args, "mode"));
    const char *incremental = json_string_value(json_object_get(args, "incremental"));
    if (vm_reply_if_lost(req, incremental))
        return CMD_DONE;
    bool push = mode && strcmp(mode, "push") == 0;
    if (mode && !push && strcmp(mode, "pull") != 0) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER,
                  "backup mode '%s' is not supported; use \"pull\" or \"push\"", mode);
        return CMD_DONE;
    }
    if (push)
        return begin_push(req);
    if (json_object_get(args, "targets")) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER, "'targets' needs mode \"push\"");
        return CMD_DONE;
    }
    if (check_checkpoint_arg(json_object_get(args, "checkpoint"), &ckpt_name,
                             &ckpt_desc, &e)) {
        req_fail(req, &e);
        return CMD_DONE;
    }
    json_t *server = server_from_args(a, json_object_get(args, "server"), &e);
    if (!server) {
        req_fail(req, &e);
        return CMD_DONE;
    }
    if (a->nbd_server && !json_equal(a->nbd_server, server)) {
        json_decref(server);
        req_error(req, CKPT_ERR_BUSY, "the NBD server of a running backup listens "
                  "elsewhere; use the same server or end that backup first");
        return CMD_DONE;
    }
    struct backup_job *job = job_new(a);
    job->server = server;
    job->start_server = !a->nbd_server;
    begin_job_args(job, args, incremental, ckpt_name, ckpt_desc);
    if (job->quiesce && !quiesce_available(a, &e))
        return begin_refuse(req, job, &e);
    if (plan_disks(a, req, job, &e))
        return begin_refuse(req, job, &e);
    job->scratch_dir = scratch_dir_from_args(
        a, json_string_value(json_object_get(args, "scratch-dir")), &e);
    if (!job->scratch_dir)
        return begin_refuse(req, job, &e);
    job->begin_req = req;
    job_start(job);
    return CMD_WAIT;
}

/* --- query-backup and backup-end --- */
static enum cmd_result query_answer(struct request *req);

/* A push job's progress is QEMU's: query-jobs first, then the answer. */
static void
query_progress(struct qmp *q, json_t *ret, const struct qmp_error *err, void *opaque)
{
    struct request *req = opaque;
    if (!err)
        push_progress(req->agent, ret);
    query_answer(req);              /* replies, and so frees req */
}

static enum cmd_result
cmd_query(struct request *req)
{
    struct agent *a = req->agent;
    bool push = false;
    for (struct backup_job *j = a->jobs; j; j = j->next)
        push = push || (j->push && j->state == JOB_RUNNING);
    if (push && a->qemu_ready) {
        vm_send(a, "query-jobs", NULL, query_progress, req);
        return CMD_WAIT;
    }
    return query_answer(req);
}

static enum cmd_result
query_answer(struct request *req)
{
    struct agent *a = req->agent;
    const char *id = json_string_value(json_object_get(req->args, "id"));
    bool xml = json_is_true(json_object_get(req->args, "xml"));
    if (xml && !id && a->jobs && !a->jobs->next)
        id = a->jobs->id;               /* the one job there is */
    if (id) {
        struct backup_job *job = job_find(a, id);
        if (!job) {
            req_error(req, CKPT_ERR_NOT_FOUND, "no backup job '%s'", id);
        } else if (xml) {
            CLEANUP_FREE char *doc = xml_backup_dump(job);
            req_reply(req, json_pack("{s:s}", "xml", doc));
        } else {
            req_reply(req, job_encode(job));
        }
        return CMD_DONE;
    }
    if (xml) {
        req_error(req, a->jobs ? CKPT_ERR_INVALID_PARAMETER : CKPT_ERR_NOT_FOUND,
                  a->jobs ? "'xml' needs 'id' when several backups run"
                          : "no backup job is running");
        return CMD_DONE;
    }
    json_t *list = json_array();
    for (struct backup_job *j = a->jobs; j; j = j->next)
        json_array_insert_new(list, 0, job_encode(j));
    req_reply(req, list);
    return CMD_DONE;
}

static enum cmd_result
cmd_end(struct request *req)
{
    const char *id = json_string_value(json_object_get(req->args, "id"));
    struct backup_job *job = job_find(req->agent, id);
    if (!job) {
        req_error(req, CKPT_ERR_NOT_FOUND, "no backup job '%s'", id);
        return CMD_DONE;
    }
    /* A push finishing on its own (or being cancelled): the reply waits
     * for its end, as if this backup-end had ended it. */
    if (job->push && job->state == JOB_ENDING && !job->end_req && !job->sweep) {
        job->end_req = req;
        return CMD_WAIT;
    }
    if (job->state != JOB_RUNNING) {
        req_error(req, CKPT_ERR_BUSY, "backup job '%s' is %s", id,
                  job->state == JOB_STARTING ? "still starting" : "already ending");
        return CMD_DONE;
    }
    job->end_req = req;
    /* A push that has not finished copying is cancelled: its targets go. */
    job_stop(job, job->push ? "cancelled" : "completed", NULL);
    return CMD_WAIT;
}

static const struct cmd_arg begin_args[] = {
    { "mode", ARG_STRING, false }, { "incremental", ARG_STRING, false },
    { "checkpoint", ARG_OBJECT, false }, { "disks", ARG_STRING_LIST, false },
    { "server", ARG_OBJECT, false }, { "scratch-dir", ARG_STRING, false },
    { "targets", ARG_OBJECT, false }, { "xml", ARG_STRING, false },
    { "checkpoint-xml", ARG_STRING, false }, { "strict", ARG_BOOL, false },
    { "quiesce", ARG_BOOL, false },
    { NULL, 0, false },
};
static const struct cmd_arg query_args[] = {
    { "id", ARG_STRING, false }, { "xml", ARG_BOOL, false }, { NULL, 0, false },
};
static const struct cmd_arg end_args[] = {
    { "id", ARG_STRING, true }, { NULL, 0, false },
};

const struct ckpt_cmd backup_cmds[] = {
    { "backup-begin", begin_args, CMD_NEEDS_QEMU | CMD_CHANGE | CMD_FRESH | CMD_CAPS,
      cmd_begin },
    { "query-backup", query_args, 0, cmd_query },
    { "backup-end", end_args, CMD_CHANGE, cmd_end },
    { NULL, NULL, 0, NULL },
};
