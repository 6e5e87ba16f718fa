/* ckptctl checkpoint commands: create, list, info, delete, dumpxml. */
#include "ckptctl/ckptctl.h"
#include "metadata/xml.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Long-only options; values above any character getopt may return. */
enum {
    OPT_DESCRIPTION = 256, OPT_DISK, OPT_QUIESCE, OPT_SIZE, OPT_FROM,
    OPT_CHILDREN, OPT_CHILDREN_ONLY, OPT_XML,
};

/* A Checkpoint object, checked against the protocol's shape.  The strings
 * point into the json_t it came from. */
struct ctl_ckpt {
    const char *name, *parent, *description;
    json_int_t created;
    json_t *disks;
};

static int
ctl_unpack_ckpt(json_t *j, struct ctl_ckpt *ck, json_error_t *err)
{
    size_t i;
    json_t *d;

    *ck = (struct ctl_ckpt) { 0 };
    if (json_unpack_ex(j, err, 0, "{s:s, s?s, s?s, s:I, s:o}", "name", &ck->name,
                       "parent", &ck->parent, "description", &ck->description,
                       "creation-time", &ck->created, "disks", &ck->disks) < 0)
        return -1;
    if (!json_is_array(ck->disks)) {
        snprintf(err->text, sizeof err->text, "\"disks\" of %s is not a list",
                 ck->name);
        return -1;
    }
    json_array_foreach(ck->disks, i, d) {
        if (json_unpack_ex(d, err, JSON_VALIDATE_ONLY, "{s:s, s:s, s:b, s?I}",
                           "disk", "bitmap", "consistent", "size") < 0)
            return -1;
    }
    return 0;
}

/* The changed bytes of one disk entry, or -1 when not asked for. */
static json_int_t
ctl_disk_size(json_t *d)
{
    json_t *size = json_object_get(d, "size");
    return json_is_integer(size) ? json_integer_value(size) : -1;
}

static const char *
ctl_disk_name(json_t *d)
{
    return json_string_value(json_object_get(d, "disk"));
}

static bool
ctl_disk_consistent(json_t *d)
{
    return json_is_true(json_object_get(d, "consistent"));
}

/* --- create --- */

static int
ctl_print_created(const char *command, json_t *ret, const void *opaque)
{
    struct ctl_ckpt ck;
    json_error_t err;

    json_t *skipped = json_object_get(ret, "skipped"), *d;
    size_t i;

    if (ctl_unpack_ckpt(ret, &ck, &err) < 0)
        return ctl_bad_reply(command, err.text);
    printf("checkpoint %s created\n", ck.name);
    json_array_foreach(skipped, i, d)
        printf("skipped disk %s: %s\n", ctl_disk_name(d),
               json_string_value(json_object_get(d, "reason")));
    return CTL_EXIT_OK;
}

/* Whether the request leaves the disks to the agent (every capable one):
 * no --disk, and no <disks> in the XML. */
static bool
ctl_create_default_disks(json_t *args)
{
    const char *xml = json_string_value(json_object_get(args, "xml"));
    struct meta_xml_ckpt c;
    struct ckpt_error e = { 0 };
    bool all;

    if (json_object_get(args, "disks"))
        return false;
    if (!xml)
        return true;
    /* The agent will say what is wrong with a bad document. */
    if (meta_xml_parse_checkpoint(xml, strlen(xml), &c, &e) < 0)
        return false;
    all = c.ndisks == 0;
    meta_xml_ckpt_clear(&c);
    return all;
}

/* The disks a default checkpoint left out and why, from query-disks taken
 * before the create: {"disk", "reason"} for each one not in the reply. */
static json_t *
ctl_skipped_disks(json_t *disks, json_t *ckpt)
{
    json_t *skipped = json_array(), *d, *m;
    size_t i, k;

    json_array_foreach(disks, i, d) {
        const char *name = ctl_disk_name(d);
        const char *reason = json_string_value(json_object_get(d, "reason"));
        bool member = false;

        if (!name)
            continue;
        json_array_foreach(json_object_get(ckpt, "disks"), k, m)
            member |= ctl_disk_name(m) && strcmp(ctl_disk_name(m), name) == 0;
        if (!member)
            json_array_append_new(skipped, json_pack(
                "{s:s, s:s}", "disk", name, "reason",
                reason ? reason : json_is_false(json_object_get(d, "checkpoints"))
                       ? "it cannot hold checkpoints" : "the agent left it out"));
    }
    return skipped;
}

/* checkpoint-create, and with the default disk set, which disks it
 * skipped and why (query-disks knows; the reply only lists members). */
static int
ctl_create(struct ctl_ctx *ctx, json_t *args)
{
    CLEANUP_JSON json_t *disks = NULL;
    CLEANUP_JSON json_t *ret = NULL;
    bool all = ctl_create_default_disks(args);
    int r;

    if (all && (r = ctl_call(ctx, "query-disks", NULL, &disks)) != CTL_EXIT_OK) {
        json_decref(args);
        return r;
    }
    if ((r = ctl_call(ctx, "checkpoint-create", args, &ret)) != CTL_EXIT_OK)
        return r;
    if (all && json_is_array(disks) && json_is_object(ret)) {
        json_t *skipped = ctl_skipped_disks(disks, ret);
        if (json_array_size(skipped) > 0)
            json_object_set_new(ret, "skipped", skipped);
        else
            json_decref(skipped);
    }
    return ctl_output(ctx, "checkpoint-create", ret, ctl_print_created, NULL);
}

static int
ctl_create_option(struct ctl_ctx *ctx, int c, json_t *args, json_t *disks)
{
    switch (c) {
    case OPT_DESCRIPTION: return ctl_add_string(ctx, args, "description", optarg);
    case OPT_DISK: return ctl_add_string(ctx, disks, "--disk", optarg);
    case OPT_QUIESCE:
        json_object_set_new(args, "quiesce", json_true());
        return CTL_EXIT_OK;
    case OPT_XML:
        if (json_object_get(args, "xml"))
            return ctl_usage_error(ctx, "--xml given twice");
        return ctl_xml_file_arg(ctx, args, "xml", optarg);
    default: return CTL_EXIT_USAGE;
    }
}

int
ctl_cmd_checkpoint_create(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "disk", required_argument, NULL, OPT_DISK },
        { "quiesce", no_argument, NULL, OPT_QUIESCE },
        { "xml", required_argument, NULL, OPT_XML },
        CTL_OPT_HELP, { 0 }
    };
    CLEANUP_JSON json_t *args = json_object();
    CLEANUP_JSON json_t *disks = json_array();
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return CTL_EXIT_OK;
        if ((r = ctl_create_option(ctx, c, args, disks)) != CTL_EXIT_OK)
            return r;
    }
    if ((r = ctl_operands(ctx, argc, argv, 0, 1)) != CTL_EXIT_OK)
        return r;
    /* The XML names the checkpoint, its description and its disks. */
    if (json_object_get(args, "xml") &&
        (optind < argc || json_object_get(args, "description") ||
         json_array_size(disks) > 0))
        return ctl_usage_error(ctx, "--xml excludes NAME, --description and --disk");
    if (optind < argc &&
        (r = ctl_add_string(ctx, args, "name", argv[optind])) != CTL_EXIT_OK)
        return r;
    /* Absent "disks" means every capable disk; an empty list would not. */
    if (json_array_size(disks) > 0)
        json_object_set(args, "disks", disks);
    return ctl_create(ctx, json_incref(args));
}

/* --- list --- */

/* Boolean options of checkpoint list.  Those marked `agent` become
 * arguments of the same name; the others only shape the output. */
struct ctl_list_opts {
    int tree, parent, size, roots, leaves, no_leaves, descendants, topological;
};

static const struct ctl_list_flag {
    const char *name;
    bool agent;
    size_t off;
} ctl_list_flags[] = {
    { "tree", false, offsetof(struct ctl_list_opts, tree) },
    { "parent", false, offsetof(struct ctl_list_opts, parent) },
    { "size", true, offsetof(struct ctl_list_opts, size) },
    { "roots", true, offsetof(struct ctl_list_opts, roots) },
    { "leaves", true, offsetof(struct ctl_list_opts, leaves) },
    { "no-leaves", true, offsetof(struct ctl_list_opts, no_leaves) },
    { "descendants", true, offsetof(struct ctl_list_opts, descendants) },
    { "topological", true, offsetof(struct ctl_list_opts, topological) },
};

static int *
ctl_list_flag_ptr(struct ctl_list_opts *o, size_t i)
{
    return (int *) ((char *) o + ctl_list_flags[i].off);
}

/* "vda, vdb (inconsistent)": the last column of the table. */
static char *
ctl_disks_cell(json_t *disks)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    size_t i;
    json_t *d;

    if (!fp) {
        fputs("ckptctl: out of memory\n", stderr);
        abort();
    }
    json_array_foreach(disks, i, d)
        fprintf(fp, "%s%s%s", i ? ", " : "", ctl_disk_name(d),
                ctl_disk_consistent(d) ? "" : " (inconsistent)");
    fclose(fp);
    return text;
}

static void
ctl_size_cell(struct ctl_table *t, json_t *disks)
{
    json_int_t total = 0;
    bool any = false;
    char human[32];
    size_t i;
    json_t *d;

    json_array_foreach(disks, i, d) {
        json_int_t s = ctl_disk_size(d);
        if (s >= 0) {
            total += s;
            any = true;
        }
    }
    ctl_human_size((uint64_t) total, human, sizeof human);
    ctl_table_cell(t, "%s", any ? human : "-");
}

static void
ctl_list_table(const struct ctl_list_opts *o, const struct ctl_ckpt *ck, size_t n)
{
    const char *head[5];
    size_t ncols = 0;
    struct ctl_table t = { 0 };

    head[ncols++] = "NAME";
    head[ncols++] = "CREATED";
    if (o->parent)
        head[ncols++] = "PARENT";
    if (o->size)
        head[ncols++] = "SIZE";
    head[ncols++] = "DISKS";
    ctl_table_head(&t, head, ncols);
    for (size_t i = 0; i < n; i++) {
        char when[64];
        CLEANUP_FREE char *disks = ctl_disks_cell(ck[i].disks);

        ctl_format_time(ck[i].created, when, sizeof when);
        ctl_table_row(&t);
        ctl_table_cell(&t, "%s", ck[i].name);
        ctl_table_cell(&t, "%s", when);
        if (o->parent)
            ctl_table_cell(&t, "%s", ck[i].parent ? ck[i].parent : "-");
        if (o->size)
            ctl_size_cell(&t, ck[i].disks);
        ctl_table_cell(&t, "%s", disks);
    }
    ctl_table_print(&t);
}

/* The shape of `virsh checkpoint-list --tree`: children under their
 * parent behind "+- ", "|" joining siblings, a blank line after each
 * subtree.  A checkpoint whose parent is not in the list is a root here.
 * A linear run (each checkpoint the only child of the one before) is
 * printed flat, one name a line in the same column: nesting it would
 * indent a chain of 10,000 ten thousand levels (399 MB of spaces). */
struct ctl_tree {
    const struct ctl_ckpt *ck;
    size_t n;
    size_t *parent;             /* index of the parent, or n for a root */
    size_t *first, *next;       /* children in list order: first child, next sibling */
    bool *seen;                 /* guards against a parent cycle */
    char *indent;
    size_t ilen;
};

static void
ctl_tree_blank(const struct ctl_tree *t)
{
    size_t len = t->ilen;

    while (len > 0 && t->indent[len - 1] == ' ')
        len--;
    printf("%.*s\n", (int) len, t->indent);
}

static void
ctl_tree_push(struct ctl_tree *t, const char *s)
{
    memcpy(t->indent + t->ilen, s, 2);
    t->ilen += 2;
}

/* The children of i not printed yet: how many, and the last one. */
static size_t
ctl_tree_children(const struct ctl_tree *t, size_t i, size_t *last)
{
    size_t count = 0;

    *last = t->n;
    for (size_t j = t->first[i]; j < t->n; j = t->next[j])
        if (!t->seen[j]) {
            count++;
            *last = j;
        }
    return count;
}

static void
ctl_tree_node(struct ctl_tree *t, size_t i, bool root, bool last)
{
    size_t last_child;
    bool run = false;

    t->seen[i] = true;
    printf("%.*s%s%s\n", (int) t->ilen, t->indent, root ? "" : "+- ", t->ck[i].name);
    while (ctl_tree_children(t, i, &last_child) == 1) {
        i = last_child;
        t->seen[i] = true;
        run = true;
        printf("%.*s%s%s\n", (int) t->ilen, t->indent,
               root ? "" : last ? "   " : "|  ", t->ck[i].name);
    }
    if (!root)
        ctl_tree_push(t, last ? "  " : "| ");
    if (last_child < t->n)
        printf("%.*s  |\n", (int) t->ilen, t->indent);
    ctl_tree_push(t, "  ");
    for (size_t j = t->first[i]; j < t->n; j = t->next[j])
        if (!t->seen[j])
            ctl_tree_node(t, j, false, j == last_child);
    t->ilen -= 2;
    /* A leaf that is a last child closes a subtree; the end of a run
     * was an only child. */
    if (last_child == t->n && (last || run))
        ctl_tree_blank(t);
    if (!root)
        t->ilen -= 2;
}

static void
ctl_list_tree(const struct ctl_ckpt *ck, size_t n)
{
    CLEANUP_FREE size_t *parent = xcalloc(n, sizeof *parent);
    CLEANUP_FREE size_t *first = xcalloc(n, sizeof *first);
    CLEANUP_FREE size_t *next = xcalloc(n, sizeof *next);
    CLEANUP_FREE bool *seen = xcalloc(n, sizeof *seen);
    CLEANUP_FREE char *indent = xmalloc(4 * n + 4);     /* 4 per level */
    struct ctl_tree t = { ck, n, parent, first, next, seen, indent, 0 };

    for (size_t i = 0; i < n; i++) {
        parent[i] = n;
        first[i] = n;
        /* The list usually comes parent first: look just before, then
         * everywhere (n² strcmp over 10,000 takes a second). */
        if (ck[i].parent && i > 0 && strcmp(ck[i - 1].name, ck[i].parent) == 0)
            parent[i] = i - 1;
        for (size_t j = 0; j < n && ck[i].parent && parent[i] == n; j++)
            if (strcmp(ck[j].name, ck[i].parent) == 0)
                parent[i] = j;
    }
    /* Backwards, so that each list of children comes out in list order. */
    for (size_t i = n; i-- > 0;)
        if (parent[i] < n) {
            next[i] = first[parent[i]];
            first[parent[i]] = i;
        }
    for (size_t i = 0; i < n; i++)
        if (parent[i] == n)
            ctl_tree_node(&t, i, true, true);
}

static int
ctl_print_list(const char *command, json_t *ret, const void *opaque)
{
    const struct ctl_list_opts *o = opaque;
    size_t n = json_array_size(ret);
    CLEANUP_FREE struct ctl_ckpt *ck = xcalloc(n, sizeof *ck);
    json_error_t err;

    if (!json_is_array(ret))
        return ctl_bad_reply(command, "not a list");
    for (size_t i = 0; i < n; i++)
        if (ctl_unpack_ckpt(json_array_get(ret, i), &ck[i], &err) < 0) {
            CLEANUP_FREE char *what = xasprintf("checkpoint %zu: %s", i, err.text);
            return ctl_bad_reply(command, what);
        }
    if (o->tree)
        ctl_list_tree(ck, n);
    else
        ctl_list_table(o, ck, n);
    return CTL_EXIT_OK;
}

/* Parses the options of checkpoint list into `o` and the agent's args. */
static int
ctl_list_parse(struct ctl_ctx *ctx, int argc, char **argv,
               struct ctl_list_opts *o, json_t *args)
{
    enum { NFLAGS = ARRAY_SIZE(ctl_list_flags) };
    struct option opts[NFLAGS + 3] = {
        [NFLAGS] = { "from", required_argument, NULL, OPT_FROM },
        [NFLAGS + 1] = CTL_OPT_HELP,
    };
    int c, r;

    for (size_t i = 0; i < NFLAGS; i++)
        opts[i] = (struct option) { ctl_list_flags[i].name, no_argument,
                                    ctl_list_flag_ptr(o, i), 1 };
    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return -1;
        if (c == OPT_FROM) {
            if ((r = ctl_add_string(ctx, args, "from", optarg)) != CTL_EXIT_OK)
                return r;
        } else if (c != 0) {
            return CTL_EXIT_USAGE;
        }
    }
    if (o->tree && (o->parent || o->size))
        return ctl_usage_error(ctx, "--tree cannot be combined with --parent"
                               " or --size");
    for (size_t i = 0; i < NFLAGS; i++)
        if (ctl_list_flags[i].agent && *ctl_list_flag_ptr(o, i))
            json_object_set_new(args, ctl_list_flags[i].name, json_true());
    return ctl_operands(ctx, argc, argv, 0, 0);
}

int
ctl_cmd_checkpoint_list(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ctl_list_opts o = { 0 };
    CLEANUP_JSON json_t *args = json_object();
    int r = ctl_list_parse(ctx, argc, argv, &o, args);

    if (r != CTL_EXIT_OK)
        return r < 0 ? CTL_EXIT_OK : r;
    return ctl_call_print(ctx, "checkpoint-list", json_incref(args),
                          ctl_print_list, &o);
}

/* --- info, dumpxml: NAME [--size] --- */

/* Parses "[--size] NAME" into {"name", "size"?}. */
static int
ctl_name_size_args(struct ctl_ctx *ctx, int argc, char **argv, json_t *args)
{
    static const struct option opts[] = {
        { "size", no_argument, NULL, OPT_SIZE }, CTL_OPT_HELP, { 0 }
    };
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return -1;
        if (c != OPT_SIZE)
            return CTL_EXIT_USAGE;
        json_object_set_new(args, "size", json_true());
    }
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    return ctl_add_string(ctx, args, "name", argv[optind]);
}

static void
ctl_print_info_disk(json_t *d, size_t i)
{
    json_int_t size = ctl_disk_size(d);
    char human[32];

    printf("%s%s (bitmap %s, %s", i ? "       " : "Disks: ", ctl_disk_name(d),
           json_string_value(json_object_get(d, "bitmap")),
           ctl_disk_consistent(d) ? "consistent" : "inconsistent");
    if (size >= 0) {
        ctl_human_size((uint64_t) size, human, sizeof human);
        printf(", %s changed", human);
    }
    puts(")");
}

static int
ctl_print_info(const char *command, json_t *ret, const void *opaque)
{
    struct ctl_ckpt ck;
    json_error_t err;
    char when[64];
    size_t i;
    json_t *d;

    if (ctl_unpack_ckpt(ret, &ck, &err) < 0)
        return ctl_bad_reply(command, err.text);
    ctl_format_time(ck.created, when, sizeof when);
    printf("Name: %s\nParent: %s\nCreated: %s\nDescription: %s\n", ck.name,
           ck.parent ? ck.parent : "-", when,
           ck.description ? ck.description : "-");
    json_array_foreach(ck.disks, i, d)
        ctl_print_info_disk(d, i);
    if (json_array_size(ck.disks) == 0)
        puts("Disks: -");
    return CTL_EXIT_OK;
}

int
ctl_cmd_checkpoint_info(struct ctl_ctx *ctx, int argc, char **argv)
{
    CLEANUP_JSON json_t *args = json_object();
    int r = ctl_name_size_args(ctx, argc, argv, args);

    if (r != CTL_EXIT_OK)
        return r < 0 ? CTL_EXIT_OK : r;
    return ctl_call_print(ctx, "checkpoint-get", json_incref(args),
                          ctl_print_info, NULL);
}

int
ctl_cmd_checkpoint_dumpxml(struct ctl_ctx *ctx, int argc, char **argv)
{
    CLEANUP_JSON json_t *args = json_object();
    int r = ctl_name_size_args(ctx, argc, argv, args);

    if (r != CTL_EXIT_OK)
        return r < 0 ? CTL_EXIT_OK : r;
    return ctl_call_print(ctx, "checkpoint-dumpxml", json_incref(args),
                          ctl_print_xml_reply, NULL);
}

/* --- delete --- */

static int
ctl_print_deleted(const char *command, json_t *ret, const void *opaque)
{
    const json_t *args = opaque;
    const char *name = json_string_value(json_object_get(args, "name"));

    if (json_object_get(args, "children"))
        printf("checkpoint %s and its descendants deleted\n", name);
    else if (json_object_get(args, "children-only"))
        printf("descendants of checkpoint %s deleted\n", name);
    else
        printf("checkpoint %s deleted\n", name);
    return CTL_EXIT_OK;
}

int
ctl_cmd_checkpoint_delete(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "children", no_argument, NULL, OPT_CHILDREN },
        { "children-only", no_argument, NULL, OPT_CHILDREN_ONLY },
        CTL_OPT_HELP, { 0 }
    };
    CLEANUP_JSON json_t *args = json_object();
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return CTL_EXIT_OK;
        if (c != OPT_CHILDREN && c != OPT_CHILDREN_ONLY)
            return CTL_EXIT_USAGE;
        json_object_set_new(args, c == OPT_CHILDREN ? "children" : "children-only",
                            json_true());
    }
    if (json_object_size(args) > 1)
        return ctl_usage_error(ctx, "--children and --children-only exclude"
                               " each other");
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK ||
        (r = ctl_add_string(ctx, args, "name", argv[optind])) != CTL_EXIT_OK)
        return r;
    return ctl_call_print(ctx, "checkpoint-delete", json_incref(args),
                          ctl_print_deleted, args);
}
