/* ckptctl changes: the extents written on a disk since a checkpoint, from
 * the agent's checkpoint-changes (PROTOCOL.md, "Changed blocks without an
 * NBD client"), all pages of it joined into one list. */
#include "ckptctl/ckptctl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum { OPT_FROM = 256, OPT_TO, OPT_MAX_RESULTS };

struct ctl_changes {
    const char *disk, *from, *to;
    json_int_t max_results;     /* per request; 0: the agent's default */
};

/* Appends one page's extents to all, merging one that starts where the
 * last one ends (a page boundary may fall inside a run). */
static int
ctl_changes_take(json_t *all, json_t *page, json_int_t *end)
{
    json_t *list = json_object_get(page, "block-metadata"), *e;
    size_t i;

    if (!json_is_array(list))
        return ctl_bad_reply("checkpoint-changes", "no \"block-metadata\" list");
    json_array_foreach(list, i, e) {
        json_int_t off, len;
        json_t *last = json_array_get(all, json_array_size(all) - 1);

        if (json_unpack(e, "{s:I, s:I}", "byte-offset", &off, "size-bytes", &len) < 0 ||
            len <= 0 || off < *end)
            return ctl_bad_reply("checkpoint-changes", "extents not increasing");
        if (last && off == *end)
            json_object_set_new(last, "size-bytes", json_integer(
                json_integer_value(json_object_get(last, "size-bytes")) + len));
        else
            json_array_append_new(all, json_pack("{s:I, s:I}", "byte-offset", off,
                                                 "size-bytes", len));
        *end = off + len;
    }
    return CTL_EXIT_OK;
}

/* Every page, following next-offset; *ret is the first page's object
 * with the whole list and without next-offset. */
static int
ctl_changes_fetch(struct ctl_ctx *ctx, const struct ctl_changes *o, json_t **ret)
{
    json_t *all = json_array();
    json_int_t at = 0, end = 0;
    int r;

    *ret = NULL;
    for (;;) {
        json_t *args = json_pack("{s:s, s:s}", "disk", o->disk, "from", o->from);
        json_t *page = NULL, *next;


        if (o->to)
            json_object_set_new(args, "to", json_string(o->to));
        if (at)
            json_object_set_new(args, "starting-offset", json_integer(at));
        if (o->max_results)
            json_object_set_new(args, "max-results", json_integer(o->max_results));
        if ((r = ctl_call(ctx, "checkpoint-changes", args, &page)) != CTL_EXIT_OK ||
            (r = ctl_changes_take(all, page, &end)) != CTL_EXIT_OK) {
            json_decref(page);
            break;
        }
        next = json_object_get(page, "next-offset");
        bool more = next != NULL;
        json_int_t next_at = json_integer_value(next);
        bool bad = more && (!json_is_integer(next) || next_at <= at);
        if (!*ret)
            *ret = json_incref(page);
        json_decref(page);
        if (!more)
            break;
        /* A next-offset that does not move on would loop forever. */
        if (bad) {
            r = ctl_bad_reply("checkpoint-changes", "next-offset does not advance");
            break;
        }
        at = next_at;
    }
    if (r != CTL_EXIT_OK) {
        json_decref(all);
        json_decref(*ret);
        *ret = NULL;
        return r;
    }
    json_object_del(*ret, "next-offset");
    json_object_set_new(*ret, "block-metadata", all);
    return CTL_EXIT_OK;
}

static int
ctl_print_changes(const char *command, json_t *ret, const void *opaque)
{
    static const char *const head[] = { "OFFSET", "LENGTH" };
    const struct ctl_changes *o = opaque;
    json_t *list = json_object_get(ret, "block-metadata"), *e;
    json_int_t total = 0;
    struct ctl_table t = { 0 };
    char sum[32], cap[32];
    size_t i;

    json_array_foreach(list, i, e)
        total += json_integer_value(json_object_get(e, "size-bytes"));
    ctl_human_size((uint64_t) total, sum, sizeof sum);
    ctl_human_size((uint64_t) json_integer_value(json_object_get(ret,
                   "volume-capacity-bytes")), cap, sizeof cap);
    printf("disk %s, written since checkpoint %s%s%s: %zu extent%s, %s of %s\n",
           o->disk, o->from, o->to ? " up to checkpoint " : " up to now",
           o->to ? o->to : "", json_array_size(list),
           json_array_size(list) == 1 ? "" : "s", sum, cap);
    if (json_array_size(list) == 0)
        return CTL_EXIT_OK;
    /* Exact byte numbers: they are for tools as much as for people. */
    ctl_table_head(&t, head, ARRAY_SIZE(head));
    json_array_foreach(list, i, e) {
        ctl_table_row(&t);
        ctl_table_cell(&t, "%lld", (long long) json_integer_value(
                           json_object_get(e, "byte-offset")));
        ctl_table_cell(&t, "%lld", (long long) json_integer_value(
                           json_object_get(e, "size-bytes")));
    }
    ctl_table_print(&t);
    return CTL_EXIT_OK;
}

static int
ctl_parse_max_results(const struct ctl_ctx *ctx, const char *s, json_int_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1)
        return ctl_usage_error(ctx, "invalid --max-results '%s': a positive"
                               " number expected", s);
    *out = (json_int_t) v;
    return CTL_EXIT_OK;
}

int
ctl_cmd_changes(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "from", required_argument, NULL, OPT_FROM },
        { "to", required_argument, NULL, OPT_TO },
        { "max-results", required_argument, NULL, OPT_MAX_RESULTS },
        { "json", no_argument, NULL, 'j' },
        CTL_OPT_HELP, { 0 }
    };
    struct ctl_changes o = { 0 };
    CLEANUP_JSON json_t *ret = NULL;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        switch (c) {
        case 'h': return CTL_EXIT_OK;
        case OPT_FROM: o.from = optarg; break;
        case OPT_TO: o.to = optarg; break;
        case 'j': ctl_set_json(ctx); break;
        case OPT_MAX_RESULTS:
            if ((r = ctl_parse_max_results(ctx, optarg, &o.max_results)) != CTL_EXIT_OK)
                return r;
            break;
        default: return CTL_EXIT_USAGE;
        }
    }
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    if (!o.from)
        return ctl_usage_error(ctx, "--from C is required");
    o.disk = argv[optind];
    if ((r = ctl_changes_fetch(ctx, &o, &ret)) != CTL_EXIT_OK)
        return r;
    return ctl_output(ctx, "checkpoint-changes", ret, ctl_print_changes, &o);
}
