/* backup-begin, query-backup, backup-end.
 *
 * Beginning a pull backup is a chain of batches (see DESIGN.md):
 *   scratch files -> NBD server and protocol nodes -> qcow2 formatting
 *   jobs -> qcow2 scratch nodes over the disks -> the one transaction
 *   (temporary bitmaps, new checkpoint, copy-before-write jobs) -> exports.
 * A failure at any step hands the job to the sweep, which removes
 * whatever of it exists, and the request gets the first error. */
#include "agent/agent.h"
#include "nbd/nbdx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define BEGIN_EVENT_TIMEOUT 60.0

struct begin {
    struct request *req;
    struct backup_job *job;
    int step;
    char *scratch_dir;
    struct nbdx_disk *plan;
    size_t nplan;
    char *ckpt_desc;
    int64_t now;
    bool start_server;
    json_t *ckpt_disks;                 /* the new checkpoint's, if given */
    json_t *actions;                    /* the transaction, to replay */
    char *error;
    enum ckpt_err error_class;          /* of error: QemuError unless set */
};

static void begin_step(const char *err, void *opaque);

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

/* --- the job's steps --- */
static struct backup_job *
new_job(struct agent *a, const struct begin *b, json_t *server)
{
    struct backup_job *job = xcalloc(1, sizeof *job);
    job->agent = a;
    job->num = a->next_job++;
    job->id = xasprintf("backup-%d", job->num);
    job->server = server;
    job->state = BACKUP_STARTING;
    job->disks = xcalloc(b->nplan, sizeof *job->disks);
    job->ndisks = b->nplan;
    for (size_t k = 0; k < b->nplan; k++) {
        const struct meta_disk *d = &a->tree.disks[b->plan[k].disk];
        job->disks[k].disk = xstrdup(d->disk);
        job->disks[k].node = xstrdup(d->node);
        job->disks[k].size = d->virtual_size;
        if (b->plan[k].incremental)
            job->disks[k].bitmap = nbdx_bitmap_name(job->id, d->disk);
    }
    job->next = a->jobs;
    a->jobs = job;
    return job;
}

static int
create_scratch_files(struct begin *b, struct ckpt_error *e)
{
    struct backup_job *job = b->job;
    for (size_t k = 0; k < job->ndisks; k++) {
        char *path = nbdx_scratch_file(b->scratch_dir, job->id, job->disks[k].disk);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            ckpt_fail(e, CKPT_ERR_GENERIC, "cannot create scratch file %s: %s",
                      path, strerror(errno));
            free(path);
            return -1;
        }
        close(fd);
        job->disks[k].scratch = path;
    }
    return 0;
}

static json_t *
server_start_args(json_t *server)
{
    const char *transport = json_string_value(json_object_get(server, "transport"));
    if (strcmp(transport, "unix") == 0)
        return json_pack("{s:{s:s,s:{s:O}}}", "addr", "type", "unix", "data",
                         "path", json_object_get(server, "path"));
    json_t *args = json_pack("{s:{s:s,s:{s:O,s:O}}}", "addr", "type", "inet", "data",
                             "host", json_object_get(server, "host"),
                             "port", json_object_get(server, "port"));
    if (json_is_true(json_object_get(server, "tls")))
        json_object_set_new(args, "tls-creds", json_string(NBDX_TLS_ID));
    return args;
}

/* The server is ours from the moment QEMU says it started, so that any
 * failure after this, even in the same batch, stops it again. */
static void
server_started(json_t *ret, void *opaque)
{
    struct backup_job *job = opaque;
    struct agent *a = job->agent;
    json_decref(a->nbd_server);
    a->nbd_server = json_incref(job->server);
    const char *path = json_string_value(json_object_get(job->server, "path"));
    if (path && chmod(path, 0600) < 0)
        log_warn("cannot make %s private: %m", path);
}

static void
step_nodes(struct begin *b, struct batch *bt)
{
    struct backup_job *job = b->job;
    if (b->start_server && json_is_true(json_object_get(job->server, "tls")))
        batch_send(bt, "object-add",
                   json_pack("{s:s,s:s,s:s,s:s,s:b}", "qom-type", "tls-creds-x509",
                             "id", NBDX_TLS_ID, "dir", job->agent->opt.tls_dir,
                             "endpoint", "server", "verify-peer", 0), NULL, NULL);
    if (b->start_server)
        batch_send(bt, "nbd-server-start", server_start_args(job->server),
                   server_started, job);
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *node = nbdx_node_name('s', job->num, k);
        batch_send(bt, "blockdev-add",
                   json_pack("{s:s,s:s,s:s}", "driver", "file", "node-name", node,
                             "filename", job->disks[k].scratch), NULL, NULL);
    }
}

static char *
create_job_id(const struct backup_job *job, size_t k)
{
    CLEANUP_FREE char *base = nbdx_job_name(job->id, job->disks[k].disk);
    return xasprintf("%s.create", base);
}

static void
step_format(struct begin *b, struct batch *bt)
{
    struct backup_job *job = b->job;
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *id = create_job_id(job, k);
        CLEANUP_FREE char *node = nbdx_node_name('s', job->num, k);
        batch_expect_event(bt, "JOB_STATUS_CHANGE",
                           json_pack("{s:s,s:s}", "id", id, "status", "concluded"),
                           BEGIN_EVENT_TIMEOUT);
        batch_send(bt, "blockdev-create",
                   json_pack("{s:s,s:{s:s,s:s,s:I}}", "job-id", id, "options",
                             "driver", "qcow2", "file", node,
                             "size", (json_int_t) job->disks[k].size), NULL, NULL);
    }
}

static void
step_dismiss(struct begin *b, struct batch *bt)
{
    for (size_t k = 0; k < b->job->ndisks; k++) {
        CLEANUP_FREE char *id = create_job_id(b->job, k);
        batch_send(bt, "job-dismiss", json_pack("{s:s}", "id", id), NULL, NULL);
    }
}

static void
step_overlays(struct begin *b, struct batch *bt)
{
    struct backup_job *job = b->job;
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *fmt = nbdx_node_name('f', job->num, k);
        CLEANUP_FREE char *file = nbdx_node_name('s', job->num, k);
        batch_send(bt, "blockdev-add",
                   json_pack("{s:s,s:s,s:s,s:s}", "driver", "qcow2", "node-name", fmt,
                             "file", file, "backing", job->disks[k].node), NULL, NULL);
    }
}

static void
fill_begin_req(const struct begin *b, struct nbdx_begin_req *r,
               struct ckpt_create_req *c)
{
    const struct backup_job *job = b->job;
    *c = (struct ckpt_create_req) {
        .name = job->checkpoint, .description = b->ckpt_desc, .now = b->now,
    };
    *r = (struct nbdx_begin_req) {
        .job = job->id, .jobnum = job->num, .incremental = job->incremental,
        .checkpoint = job->checkpoint ? c : NULL,
    };
}

/* The new checkpoint's disks: as given, else the backed-up disks that can
 * hold checkpoints (the point where this backup's data ends).  names has
 * room for the tree's disks and the given list. */
static size_t
checkpoint_disks(const struct agent *a, const struct begin *b, const char **names)
{
    size_t n = 0, i;
    json_t *d;
    if (b->ckpt_disks) {
        json_array_foreach(b->ckpt_disks, i, d)
            names[n++] = json_string_value(d);
        return n;
    }
    for (size_t k = 0; k < b->nplan; k++)
        if (a->tree.disks[b->plan[k].disk].can_checkpoint)
            names[n++] = a->tree.disks[b->plan[k].disk].disk;
    return n;
}

static const char **
names_room(const struct agent *a, const struct begin *b)
{
    return xcalloc(a->tree.ndisks + json_array_size(b->ckpt_disks) + 1,
                   sizeof (const char *));
}

static void
step_transaction(struct begin *b, struct batch *bt)
{
    struct nbdx_begin_req r;
    struct ckpt_create_req c;
    struct ckpt_error e = { 0 };
    fill_begin_req(b, &r, &c);
    CLEANUP_FREE const char **names = names_room(b->job->agent, b);
    c.disks = names;
    c.ndisks = checkpoint_disks(b->job->agent, b, names);
    json_t *actions = json_array();
    if (nbdx_plan_begin(&b->job->agent->tree, &r, b->plan, b->nplan, actions, &e)) {
        json_decref(actions);
        b->error = xstrdup(e.msg);
        b->error_class = e.code;
        return;
    }
    b->actions = json_incref(actions);
    batch_send(bt, "transaction", json_pack("{s:o}", "actions", actions), NULL, NULL);
}

static void
step_exports(struct begin *b, struct batch *bt)
{
    struct backup_job *job = b->job;
    for (size_t k = 0; k < job->ndisks; k++) {
        CLEANUP_FREE char *id = nbdx_job_name(job->id, job->disks[k].disk);
        CLEANUP_FREE char *node = nbdx_node_name('f', job->num, k);
        json_t *args = json_pack("{s:s,s:s,s:s,s:s,s:b}", "type", "nbd", "id", id,
                                 "node-name", node, "name", job->disks[k].disk,
                                 "writable", 0);
        if (job->disks[k].bitmap)
            json_object_set_new(args, "bitmaps",
                json_pack("[{s:s,s:s}]", "node", job->disks[k].node,
                          "name", job->disks[k].bitmap));
        batch_send(bt, "block-export-add", args, NULL, NULL);
    }
}

static void
begin_free(struct begin *b)
{
    free(b->scratch_dir);
    free(b->plan);
    free(b->ckpt_desc);
    json_decref(b->ckpt_disks);
    json_decref(b->actions);
    free(b->error);
    free(b);
}

static void
begin_answered(struct agent *a, const struct qmp_error *err, void *opaque)
{
    struct begin *b = opaque;
    struct backup_job *job = b->job;
    job->state = BACKUP_RUNNING;
    job->announced = true;
    job->scratch_dir = xstrdup(b->scratch_dir);
    backup_watch_scratch(a);
    req_reply(b->req, backup_encode(job));
    log_info("backup %s running", job->id);
    if (job->checkpoint)
        agent_event(a, "CHECKPOINT_CREATED", json_pack("{s:s}", "name", job->checkpoint));
    agent_event(a, "BACKUP_BEGIN", json_pack("{s:s}", "id", job->id));
    begin_free(b);
}

static void
begin_failed_cleaned(const char *err, void *opaque)
{
    struct begin *b = opaque;
    req_error(b->req, b->error_class ? b->error_class : CKPT_ERR_QEMU,
              "backup not started: %s", b->error);
    begin_free(b);
}

static void
begin_fail(struct begin *b)
{
    struct backup_job *job = b->job;
    log_warn("backup %s not started: %s", job->id, b->error);
    if (job->qemu_gone) {
        for (size_t k = 0; k < job->ndisks; k++)
            if (job->disks[k].scratch)
                unlink(job->disks[k].scratch);
        backup_unlink(job->agent, job);
        backup_free(job);
        b->job = NULL;
        req_error(b->req, CKPT_ERR_NOT_CONNECTED,
                  "backup not started: QEMU went away (%s)", b->error);
        begin_free(b);
        return;
    }
    backup_end(job, "failed", begin_failed_cleaned, b);
}

static void
begin_step(const char *err, void *opaque)
{
    struct begin *b = opaque;
    if (err && !b->error)
        b->error = xstrdup(err);
    if (b->error || b->job->qemu_gone) {
        if (!b->error)
            b->error = xstrdup("QEMU went away");
        begin_fail(b);
        return;
    }
    if (b->step == 6) {
        vm_tree_after(b->job->agent, b->actions, begin_answered, b);
        return;
    }
    struct batch *bt = batch_new(b->job->agent, begin_step, b);
    switch (b->step++) {
    case 0: step_nodes(b, bt); break;
    case 1: step_format(b, bt); break;
    case 2: step_dismiss(b, bt); break;
    case 3: step_overlays(b, bt); break;
    case 4: step_transaction(b, bt); break;
    case 5: step_exports(b, bt); break;
    }
    batch_arm(bt);
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

static enum ckpt_err
plan_request(struct agent *a, struct request *req, struct begin *b,
             struct backup_job *probe, struct ckpt_error *e)
{
    json_t *args = req->args;
    json_t *disks = json_object_get(args, "disks");
    size_t ndisks = json_array_size(disks);
    CLEANUP_FREE const char **names = xcalloc(ndisks + 1, sizeof *names);
    for (size_t i = 0; i < ndisks; i++)
        names[i] = json_string_value(json_array_get(disks, i));
    CLEANUP_FREE bool *busy = xcalloc(a->tree.ndisks + 1, sizeof *busy);
    for (size_t d = 0; d < a->tree.ndisks; d++)
        busy[d] = backup_disk_busy(a, a->tree.disks[d].disk);
    struct nbdx_begin_req r = {
        .job = probe->id, .jobnum = probe->num, .incremental = probe->incremental,
        .disks = disks ? names : NULL, .ndisks = ndisks, .busy = busy,
    };
    b->plan = xcalloc(a->tree.ndisks + 1, sizeof *b->plan);
    enum ckpt_err err = nbdx_plan_disks(&a->tree, &r, b->plan, &b->nplan, e);
    if (err)
        return err;
    /* Dry run of the transaction: a bad checkpoint name fails here. */
    struct ckpt_create_req c = { .name = probe->checkpoint,
                                 .description = b->ckpt_desc, .now = b->now };
    CLEANUP_FREE const char **cnames = names_room(a, b);
    c.disks = cnames;
    c.ndisks = checkpoint_disks(a, b, cnames);
    r.checkpoint = probe->checkpoint ? &c : NULL;
    json_t *dry = json_array();
    err = nbdx_plan_begin(&a->tree, &r, b->plan, b->nplan, dry, e);
    json_decref(dry);
    return err;
}

static enum cmd_result
cmd_begin(struct request *req)
{
    struct agent *a = req->agent;
    json_t *args = req->args;
    struct ckpt_error e = { 0 };
    const char *mode = json_string_value(json_object_get(args, "mode"));
    const char *ckpt_name, *ckpt_desc;
    if (!xml_backup_args(req))
        return CMD_DONE;
    if (vm_reply_if_lost(req, json_string_value(json_object_get(args, "incremental"))))
        return CMD_DONE;
    if (mode && strcmp(mode, "pull") != 0) {
        req_error(req, strcmp(mode, "push") == 0 ? CKPT_ERR_UNSUPPORTED
                                                 : CKPT_ERR_INVALID_PARAMETER,
                  "backup mode '%s' is not supported; use \"pull\"", mode);
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
    struct begin *b = xcalloc(1, sizeof *b);
    b->req = req;
    b->now = (int64_t) time(NULL);
    b->ckpt_desc = ckpt_desc ? xstrdup(ckpt_desc) : NULL;
    b->ckpt_disks = json_incref(json_object_get(json_object_get(args, "checkpoint"), "disks"));
    b->start_server = !a->nbd_server;
    /* A stand-in job carries the names for planning before the real one. */
    struct backup_job probe = {
        .id = xasprintf("backup-%d", a->next_job), .num = a->next_job,
        .incremental = (char *) json_string_value(json_object_get(args, "incremental")),
        .checkpoint = (char *) ckpt_name,
    };
    enum ckpt_err err = plan_request(a, req, b, &probe, &e);
    free(probe.id);
    if (!err && !(b->scratch_dir = scratch_dir_from_args(
                      a, json_string_value(json_object_get(args, "scratch-dir")), &e)))
        err = e.code;
    if (err) {
        json_decref(server);
        begin_free(b);
        req_fail(req, &e);
        return CMD_DONE;
    }
    b->job = new_job(a, b, server);
    b->job->incremental = probe.incremental ? xstrdup(probe.incremental) : NULL;
    b->job->checkpoint = ckpt_name ? xstrdup(ckpt_name) : NULL;
    if (create_scratch_files(b, &e) < 0) {
        b->error = xstrdup(e.msg);
        b->error_class = e.code;
        begin_fail(b);
        return CMD_WAIT;
    }
    log_info("backup %s starting: %zu disks, %s", b->job->id, b->job->ndisks,
             b->job->incremental ? "incremental" : "full");
    begin_step(NULL, b);
    return CMD_WAIT;
}

/* --- query-backup and backup-end --- */
static enum cmd_result
cmd_query(struct request *req)
{
    struct agent *a = req->agent;
    const char *id = json_string_value(json_object_get(req->args, "id"));
    bool xml = json_is_true(json_object_get(req->args, "xml"));
    if (xml && !id && a->jobs && !a->jobs->next)
        id = a->jobs->id;               /* the one job there is */
    if (id) {
        struct backup_job *job = backup_find(a, id);
        if (!job) {
            req_error(req, CKPT_ERR_NOT_FOUND, "no backup job '%s'", id);
        } else if (xml) {
            CLEANUP_FREE char *doc = xml_backup_dump(job);
            req_reply(req, json_pack("{s:s}", "xml", doc));
        } else {
            req_reply(req, backup_encode(job));
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
        json_array_insert_new(list, 0, backup_encode(j));
    req_reply(req, list);
    return CMD_DONE;
}

static void
end_done(const char *err, void *opaque)
{
    req_reply(opaque, NULL);
}

static enum cmd_result
cmd_end(struct request *req)
{
    const char *id = json_string_value(json_object_get(req->args, "id"));
    struct backup_job *job = backup_find(req->agent, id);
    if (!job) {
        req_error(req, CKPT_ERR_NOT_FOUND, "no backup job '%s'", id);
        return CMD_DONE;
    }
    if (job->state != BACKUP_RUNNING) {
        req_error(req, CKPT_ERR_BUSY, "backup job '%s' is %s", id,
                  job->state == BACKUP_STARTING ? "still starting" : "already ending");
        return CMD_DONE;
    }
    backup_end(job, "completed", end_done, req);
    return CMD_WAIT;
}

static const struct cmd_arg begin_args[] = {
    { "mode", ARG_STRING, false }, { "incremental", ARG_STRING, false },
    { "checkpoint", ARG_OBJECT, false }, { "disks", ARG_STRING_LIST, false },
    { "server", ARG_OBJECT, false }, { "scratch-dir", ARG_STRING, false },
    { "targets", ARG_OBJECT, false }, { "xml", ARG_STRING, false },
    { "checkpoint-xml", ARG_STRING, false }, { NULL, 0, false },
};
static const struct cmd_arg query_args[] = {
    { "id", ARG_STRING, false }, { "xml", ARG_BOOL, false }, { NULL, 0, false },
};
static const struct cmd_arg end_args[] = {
    { "id", ARG_STRING, true }, { NULL, 0, false },
};

const struct ckpt_cmd backup_cmds[] = {
    { "backup-begin", begin_args, CMD_NEEDS_QEMU | CMD_CHANGE, cmd_begin },
    { "query-backup", query_args, 0, cmd_query },
    { "backup-end", end_args, CMD_CHANGE, cmd_end },
    { NULL, NULL, 0, NULL },
};
