/* ckptctl commands about the agent itself: status, version, disks, raw. */
#include "ckptctl/ckptctl.h"

#include <stdio.h>
#include <string.h>

static const struct option ctl_no_options[] = { CTL_OPT_HELP, { 0 } };

/* For commands that take no options and no operands: CTL_EXIT_OK to go
 * on, -1 when help was printed (the command then exits 0), else the code. */
static int
ctl_no_args(struct ctl_ctx *ctx, int argc, char **argv)
{
    int c;

    while ((c = ctl_getopt(ctx, argc, argv, ctl_no_options)) != -1)
        return c == 'h' ? -1 : CTL_EXIT_USAGE;
    return ctl_operands(ctx, argc, argv, 0, 0);
}

/* --- status --- */

static int
ctl_print_status(const char *command, json_t *st, const void *opaque)
{
    const char *agent, *qemu, *vm = "-", *ga = NULL;
    json_int_t jobs;
    json_t *checkpoints = NULL;
    json_error_t err;

    /* "checkpoints" may be null or absent: unknown (see ctl_cmd_status). */
    if (json_unpack_ex(st, &err, 0, "{s:s, s:s, s?s, s?o, s:I, s?s}",
                       "ckptd", &agent, "qemu", &qemu, "vm", &vm,
                       "checkpoints", &checkpoints, "jobs", &jobs,
                       "guest-agent", &ga) < 0)
        return ctl_bad_reply(command, err.text);
    printf("agent: ckptd %s\nqemu: %s\nvm: %s\n", agent, qemu, vm);
    if (ga)
        printf("guest agent: %s\n", ga);
    if (json_is_integer(checkpoints))
        printf("checkpoints: %lld\n", (long long) json_integer_value(checkpoints));
    else
        printf("checkpoints: unknown (QEMU is %s: the checkpoints live in its"
               " images)\n", qemu);
    printf("jobs: %lld\n", (long long) jobs);
    return CTL_EXIT_OK;
}

/* query-status plus the agent's version from query-version, as one object
 * so that --json and the text show the same data. */
int
ctl_cmd_status(struct ctl_ctx *ctx, int argc, char **argv)
{
    CLEANUP_JSON json_t *version = NULL;
    CLEANUP_JSON json_t *status = NULL;
    json_t *ckptd;
    const char *qemu;
    int r;

    if ((r = ctl_no_args(ctx, argc, argv)) != CTL_EXIT_OK)
        return r < 0 ? CTL_EXIT_OK : r;
    if ((r = ctl_call(ctx, "query-version", NULL, &version)) != CTL_EXIT_OK ||
        (r = ctl_call(ctx, "query-status", NULL, &status)) != CTL_EXIT_OK)
        return r;
    ckptd = json_object_get(version, "ckptd");
    if (!json_is_string(ckptd))
        return ctl_bad_reply("query-version", "no string \"ckptd\"");
    if (json_unpack(status, "{s:s}", "qemu", &qemu) < 0)
        return ctl_bad_reply("query-status", "no string \"qemu\"");
    if (!json_object_get(status, "ckptd"))
        json_object_set(status, "ckptd", ckptd);
    /* The agent knows the checkpoints only from QEMU's images: while QEMU
     * is away its count says nothing (it answers 0), so say "unknown"
     * (null in JSON) rather than "no checkpoints". */
    if (strcmp(qemu, "connected") != 0)
        json_object_set_new(status, "checkpoints", json_null());
    r = ctl_output(ctx, "query-status", status, ctl_print_status, NULL);
    if (r != CTL_EXIT_OK)
        return r;
    if (strcmp(qemu, "connected") != 0)
        return ctl_fail(CTL_EXIT_NOT_CONNECTED, "qemu is %s", qemu);
    return CTL_EXIT_OK;
}

/* --- version --- */

static int
ctl_print_version(const char *command, json_t *v, const void *opaque)
{
    const char *ckptd;
    json_int_t major, minor, micro;
    json_t *qemu = NULL;
    json_error_t err;

    if (json_unpack_ex(v, &err, 0, "{s:s, s?o}", "ckptd", &ckptd,
                       "qemu", &qemu) < 0)
        return ctl_bad_reply(command, err.text);
    printf("ckptctl %s\nckptd %s\n", CKPTD_VERSION, ckptd);
    /* The protocol does not say what "qemu" holds while QEMU is away. */
    if (json_unpack(qemu, "{s:I, s:I, s:I}", "major", &major,
                    "minor", &minor, "micro", &micro) == 0)
        printf("qemu %lld.%lld.%lld\n", (long long) major, (long long) minor,
               (long long) micro);
    else
        puts("qemu unknown");
    return CTL_EXIT_OK;
}

int
ctl_cmd_version(struct ctl_ctx *ctx, int argc, char **argv)
{
    int r;

    if ((r = ctl_no_args(ctx, argc, argv)) != CTL_EXIT_OK)
        return r < 0 ? CTL_EXIT_OK : r;
    return ctl_call_print(ctx, "query-version", NULL, ctl_print_version, NULL);
}

/* --- disks --- */

static int
ctl_disk_row(struct ctl_table *t, json_t *d, json_error_t *err)
{
    const char *disk, *node, *format, *file, *reason = NULL;
    json_int_t size;
    int capable;
    char human[32];

    if (json_unpack_ex(d, err, 0, "{s:s, s:s, s:s, s:s, s:I, s:b, s?s}",
                       "disk", &disk, "node-name", &node, "format", &format,
                       "filename", &file, "virtual-size", &size,
                       "checkpoints", &capable, "reason", &reason) < 0)
        return -1;
    ctl_human_size((uint64_t) size, human, sizeof human);
    ctl_table_row(t);
    ctl_table_cell(t, "%s", disk);
    ctl_table_cell(t, "%s", node);
    ctl_table_cell(t, "%s", format);
    ctl_table_cell(t, "%s", human);
    if (capable)
        ctl_table_cell(t, "yes");
    else
        ctl_table_cell(t, "no (%s)", reason ? reason : "no reason given");
    ctl_table_cell(t, "%s", file);
    return 0;
}

static int
ctl_print_disks(const char *command, json_t *disks, const void *opaque)
{
    static const char *const head[] = { "DISK", "NODE", "FORMAT", "SIZE",
                                        "CHECKPOINTS", "FILE" };
    struct ctl_table t = { 0 };
    json_error_t err;
    size_t i;
    json_t *d;

    if (!json_is_array(disks))
        return ctl_bad_reply(command, "not a list");
    ctl_table_head(&t, head, ARRAY_SIZE(head));
    json_array_foreach(disks, i, d) {
        if (ctl_disk_row(&t, d, &err) < 0) {
            CLEANUP_FREE char *what = xasprintf("disk %zu: %s", i, err.text);
            ctl_table_free(&t);
            return ctl_bad_reply(command, what);
        }
    }
    ctl_table_print(&t);
    return CTL_EXIT_OK;
}

int
ctl_cmd_disks(struct ctl_ctx *ctx, int argc, char **argv)
{
    int r;

    if ((r = ctl_no_args(ctx, argc, argv)) != CTL_EXIT_OK)
        return r < 0 ? CTL_EXIT_OK : r;
    return ctl_call_print(ctx, "query-disks", NULL, ctl_print_disks, NULL);
}

/* --- raw --- */

static int
ctl_print_raw(const char *command, json_t *ret, const void *opaque)
{
    ctl_print_json(ret, JSON_INDENT(2));
    return CTL_EXIT_OK;
}

int
ctl_cmd_raw(struct ctl_ctx *ctx, int argc, char **argv)
{
    json_t *args = NULL;
    json_error_t err;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, ctl_no_options)) != -1)
        return c == 'h' ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    if ((r = ctl_operands(ctx, argc, argv, 1, 2)) != CTL_EXIT_OK)
        return r;
    if (argc - optind == 2) {
        /* A key given twice is refused, not "last one wins". */
        args = json_loads(argv[optind + 1], JSON_REJECT_DUPLICATES, &err);
        if (!args)
            return ctl_usage_error(ctx, "JSON-ARGS is not JSON: %s", err.text);
        if (!json_is_object(args)) {
            json_decref(args);
            return ctl_usage_error(ctx, "JSON-ARGS must be a JSON object");
        }
    }
    return ctl_call_print(ctx, argv[optind], args, ctl_print_raw, NULL);
}
