/* ckptctl backup commands: begin, end, info (pull jobs driven by hand;
 * `ckptctl pull` does all three and the copy). */
#include "ckptctl/ckptctl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Long-only options; values above any character getopt may return. */
enum {
    OPT_INCREMENTAL = 256, OPT_CHECKPOINT, OPT_DESCRIPTION, OPT_DISK,
    OPT_SCRATCH_DIR, OPT_SERVER_SOCKET, OPT_TCP, OPT_XML, OPT_CHECKPOINT_XML,
    OPT_STRICT, OPT_QUIESCE,
};

/* --- the Backup job object --- */

/* NULL if `job` has the shape PROTOCOL.md promises, else what is wrong. */
static const char *
ctl_job_problem(json_t *job, json_error_t *err)
{
    json_t *disks, *d;
    size_t i;

    if (json_unpack_ex(job, err, JSON_VALIDATE_ONLY,
                       "{s:s, s?s, s?s, s?s, s?s, s:o}", "id", "mode",
                       "status", "incremental", "checkpoint", "disks") < 0)
        return err->text;
    disks = json_object_get(job, "disks");
    if (!json_is_array(disks))
        return "\"disks\" is not a list";
    json_array_foreach(disks, i, d) {
        if (json_unpack_ex(d, err, JSON_VALIDATE_ONLY, "{s:s, s:s, s:I, s?s}",
                           "disk", "uri", "size", "bitmap") < 0)
            return err->text;
    }
    return NULL;
}

static const char *
ctl_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

int
ctl_backup_begin(struct ctl_ctx *ctx, json_t *args, json_t **job)
{
    json_error_t err;
    const char *problem;
    int r = ctl_call(ctx, "backup-begin", args, job);

    if (r != CTL_EXIT_OK)
        return r;
    if ((problem = ctl_job_problem(*job, &err)) != NULL) {
        /* The job exists even if we cannot read it: end it if we can. */
        const char *id = ctl_str(*job, "id");
        r = ctl_bad_reply("backup-begin", problem);
        if (id)
            ctl_backup_end(ctx, id);
        json_decref(*job);
        *job = NULL;
    }
    return r;
}

int
ctl_backup_end(struct ctl_ctx *ctx, const char *id)
{
    CLEANUP_JSON json_t *ret = NULL;
    int r = ctl_call(ctx, "backup-end", json_pack("{s:s}", "id", id), &ret);

    if (r == CTL_EXIT_UNREACHABLE) {
        ctl_note("retrying backup-end %s on a new connection", id);
        ctl_disconnect(ctx);
        r = ctl_call(ctx, "backup-end", json_pack("{s:s}", "id", id), &ret);
    }
    return r;
}

/* "vda nbd+unix:///vda?socket=... (bitmap qemu:dirty-bitmap:...)" */
static void
ctl_print_job_disk(json_t *d, const char *indent)
{
    const char *bitmap = ctl_str(d, "bitmap");

    printf("%s%s %s", indent, ctl_str(d, "disk"), ctl_str(d, "uri"));
    if (bitmap)
        printf(" (bitmap qemu:dirty-bitmap:%s)", bitmap);
    putchar('\n');
}

/* --- begin --- */

static int
ctl_print_begun(const char *command, json_t *job, const void *opaque)
{
    size_t i;
    json_t *d;

    printf("%s\n", ctl_str(job, "id"));
    json_array_foreach(json_object_get(job, "disks"), i, d)
        ctl_print_job_disk(d, "");
    return CTL_EXIT_OK;
}

/* "HOST:PORT", the host maybe "[v6]"; the agent takes the port as text. */
static int
ctl_tcp_server(const struct ctl_ctx *ctx, const char *arg, json_t *args)
{
    const char *colon = strrchr(arg, ':');
    const char *host = arg;
    int hostlen = (int) (colon - arg);
    CLEANUP_FREE char *h = NULL;
    char *end;
    long port;

    if (!colon || colon == arg)
        return ctl_usage_error(ctx, "--tcp '%s': HOST:PORT expected", arg);
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < 1 || port > 65535)
        return ctl_usage_error(ctx, "--tcp '%s': port 1 to 65535 expected", arg);
    if (hostlen > 2 && host[0] == '[' && host[hostlen - 1] == ']') {
        host++;
        hostlen -= 2;
    }
    h = xasprintf("%.*s", hostlen, host);
    json_object_set_new(args, "server",
                        json_pack("{s:s, s:s, s:I}", "transport", "tcp",
                                  "host", h, "port", (json_int_t) port));
    return json_object_get(args, "server") ? CTL_EXIT_OK
           : ctl_usage_error(ctx, "--tcp '%s' is not valid UTF-8", arg);
}

static int
ctl_checkpoint_arg(const struct ctl_ctx *ctx, json_t *args, const char *key,
                   const char *value)
{
    json_t *ck = json_object_get(args, "checkpoint");

    if (!ck) {
        ck = json_object();
        json_object_set_new(args, "checkpoint", ck);
    }
    return ctl_add_string(ctx, ck, key, value);
}

static int
ctl_begin_option(struct ctl_ctx *ctx, int c, json_t *args, json_t *disks)
{
    switch (c) {
    case OPT_INCREMENTAL: return ctl_add_string(ctx, args, "incremental", optarg);
    case OPT_CHECKPOINT: return ctl_checkpoint_arg(ctx, args, "name", optarg);
    case OPT_DESCRIPTION: return ctl_checkpoint_arg(ctx, args, "description", optarg);
    case OPT_DISK: return ctl_add_string(ctx, disks, "--disk", optarg);
    case OPT_SCRATCH_DIR: return ctl_add_string(ctx, args, "scratch-dir", optarg);
    case OPT_STRICT:
        json_object_set_new(args, "strict", json_true());
        return CTL_EXIT_OK;
    case OPT_QUIESCE:
        json_object_set_new(args, "quiesce", json_true());
        return CTL_EXIT_OK;
    case OPT_SERVER_SOCKET:
        if (json_object_get(args, "server"))
            return ctl_usage_error(ctx, "--server-socket and --tcp exclude each other");
        json_object_set_new(args, "server", json_pack("{s:s}", "transport", "unix"));
        return ctl_add_string(ctx, json_object_get(args, "server"), "path", optarg);
    case OPT_TCP:
        if (json_object_get(args, "server"))
            return ctl_usage_error(ctx, "--server-socket and --tcp exclude each other");
        return ctl_tcp_server(ctx, optarg, args);
    case OPT_XML:
    case OPT_CHECKPOINT_XML: {
        const char *key = c == OPT_XML ? "xml" : "checkpoint-xml";
        if (json_object_get(args, key))
            return ctl_usage_error(ctx, "--%s given twice", key);
        return ctl_xml_file_arg(ctx, args, key, optarg);
    }
    default: return CTL_EXIT_USAGE;
    }
}

int
ctl_cmd_backup_begin(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "incremental", required_argument, NULL, OPT_INCREMENTAL },
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "disk", required_argument, NULL, OPT_DISK },
        { "scratch-dir", required_argument, NULL, OPT_SCRATCH_DIR },
        { "server-socket", required_argument, NULL, OPT_SERVER_SOCKET },
        { "tcp", required_argument, NULL, OPT_TCP },
        { "xml", required_argument, NULL, OPT_XML },
        { "checkpoint-xml", required_argument, NULL, OPT_CHECKPOINT_XML },
        { "strict", no_argument, NULL, OPT_STRICT },
        { "quiesce", no_argument, NULL, OPT_QUIESCE },
        CTL_OPT_HELP, { 0 }
    };
    CLEANUP_JSON json_t *args = json_object();
    CLEANUP_JSON json_t *disks = json_array();
    CLEANUP_JSON json_t *job = NULL;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return CTL_EXIT_OK;
        if ((r = ctl_begin_option(ctx, c, args, disks)) != CTL_EXIT_OK)
            return r;
    }
    if ((r = ctl_operands(ctx, argc, argv, 0, 0)) != CTL_EXIT_OK)
        return r;
    if (json_object_get(args, "checkpoint") &&
        !json_object_get(json_object_get(args, "checkpoint"), "name"))
        return ctl_usage_error(ctx, "--description needs --checkpoint");
    /* The <domainbackup> says everything the other options would. */
    if (json_object_get(args, "checkpoint-xml") && !json_object_get(args, "xml"))
        return ctl_usage_error(ctx, "--checkpoint-xml needs --xml");
    if (json_object_get(args, "xml") &&
        (json_object_size(args) > (json_object_get(args, "checkpoint-xml") ? 2u : 1u) ||
         json_array_size(disks) > 0))
        return ctl_usage_error(ctx, "--xml excludes the other options except"
                               " --checkpoint-xml");
    if (json_array_size(disks) > 0)
        json_object_set(args, "disks", disks);
    if ((r = ctl_backup_begin(ctx, json_incref(args), &job)) != CTL_EXIT_OK)
        return r;
    return ctl_output(ctx, "backup-begin", job, ctl_print_begun, NULL);
}

/* --- end --- */

static int
ctl_print_ended(const char *command, json_t *ret, const void *opaque)
{
    printf("backup %s ended\n", (const char *) opaque);
    return CTL_EXIT_OK;
}

int
ctl_cmd_backup_end(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { CTL_OPT_HELP, { 0 } };
    CLEANUP_JSON json_t *ret = NULL;
    const char *id;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1)
        return c == 'h' ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    id = argv[optind];
    if ((r = ctl_backup_end(ctx, id)) != CTL_EXIT_OK)
        return r;
    /* --json: backup-end returns {} */
    ret = json_object();
    return ctl_output(ctx, "backup-end", ret, ctl_print_ended, id);
}

/* --- info --- */

static void
ctl_print_job(json_t *job)
{
    const char *inc = ctl_str(job, "incremental");
    const char *ck = ctl_str(job, "checkpoint");
    size_t i;
    json_t *d;

    printf("Job: %s\nMode: %s\nStatus: %s\nIncremental: %s\nCheckpoint: %s\n",
           ctl_str(job, "id"), ctl_str(job, "mode") ? ctl_str(job, "mode") : "-",
           ctl_str(job, "status") ? ctl_str(job, "status") : "-",
           inc ? inc : "- (full)", ck ? ck : "-");
    json_array_foreach(json_object_get(job, "disks"), i, d) {
        char size[32];

        ctl_human_size((uint64_t) json_integer_value(json_object_get(d, "size")),
                       size, sizeof size);
        printf("%s", i ? "       " : "Disks: ");
        printf("%s %s, %s", ctl_str(d, "disk"), ctl_str(d, "uri"), size);
        if (ctl_str(d, "bitmap"))
            printf(", bitmap qemu:dirty-bitmap:%s", ctl_str(d, "bitmap"));
        putchar('\n');
    }
}

static int
ctl_print_jobs(const char *command, json_t *ret, const void *opaque)
{
    json_error_t err;
    const char *problem;
    size_t i;
    json_t *job;

    if (!json_is_array(ret)) {
        if ((problem = ctl_job_problem(ret, &err)) != NULL)
            return ctl_bad_reply(command, problem);
        ctl_print_job(ret);
        return CTL_EXIT_OK;
    }
    json_array_foreach(ret, i, job)
        if ((problem = ctl_job_problem(job, &err)) != NULL)
            return ctl_bad_reply(command, problem);
    if (json_array_size(ret) == 0)
        puts("no backup jobs");
    json_array_foreach(ret, i, job) {
        if (i)
            putchar('\n');
        ctl_print_job(job);
    }
    return CTL_EXIT_OK;
}

int
ctl_cmd_backup_info(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "xml", no_argument, NULL, OPT_XML }, CTL_OPT_HELP, { 0 }
    };
    json_t *args = NULL;
    bool xml = false;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c != OPT_XML)
            return c == 'h' ? CTL_EXIT_OK : CTL_EXIT_USAGE;
        xml = true;
    }
    if ((r = ctl_operands(ctx, argc, argv, 0, 1)) != CTL_EXIT_OK)
        return r;
    if (optind < argc || xml) {
        args = json_object();
        if (xml)
            json_object_set_new(args, "xml", json_true());
        if (optind < argc &&
            (r = ctl_add_string(ctx, args, "id", argv[optind])) != CTL_EXIT_OK) {
            json_decref(args);
            return r;
        }
    }
    /* --xml: libvirt's backup-dumpxml of the job (ID may be left out when
     * only one job runs). */
    return ctl_call_print(ctx, "query-backup", args,
                          xml ? ctl_print_xml_reply : ctl_print_jobs, NULL);
}
