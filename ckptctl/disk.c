/* ckptctl disk snapshot, disk commit: a disk's layers through the agent,
 * its checkpoints carried along (disk-snapshot, disk-commit). */
#include "ckptctl/ckptctl.h"

#include <stdio.h>
#include <string.h>

enum { OPT_CHECKPOINT = 256, OPT_DESCRIPTION };

static int
ctl_print_snapshot(const char *command, json_t *ret, const void *opaque)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(ret, "disks"), i, d)
        printf("%s: %s on %s (%s)\n", json_string_value(json_object_get(d, "disk")),
               json_string_value(json_object_get(d, "filename")),
               json_string_value(json_object_get(d, "node-name")),
               json_is_true(json_object_get(d, "tracking")) ? "tracking"
                                                            : "not tracking");
    json_t *c = json_object_get(ret, "checkpoint");
    if (c)
        printf("checkpoint: %s\n", json_string_value(json_object_get(c, "name")));
    return CTL_EXIT_OK;
}

int
ctl_cmd_disk_snapshot(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        CTL_OPT_HELP, { 0 }
    };
    const char *ckpt = NULL, *desc = NULL;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        switch (c) {
        case 'h': return CTL_EXIT_OK;
        case OPT_CHECKPOINT: ckpt = optarg; break;
        case OPT_DESCRIPTION: desc = optarg; break;
        default: return CTL_EXIT_USAGE;
        }
    }
    if ((r = ctl_operands(ctx, argc, argv, 1, 64)) != CTL_EXIT_OK)
        return r;
    if (desc && !ckpt)
        return ctl_usage_error(ctx, "--description goes with --checkpoint");
    json_t *args = json_object(), *disks = json_array();
    json_object_set_new(args, "disks", disks);
    for (int i = optind; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i] || !eq[1]) {
            json_decref(args);
            return ctl_usage_error(ctx, "'%s': DISK=FILE expected", argv[i]);
        }
        CLEANUP_FREE char *disk = strndup(argv[i], (size_t) (eq - argv[i]));
        json_t *one = json_object();
        json_array_append_new(disks, one);
        if ((r = ctl_add_string(ctx, one, "disk", disk)) != CTL_EXIT_OK ||
            (r = ctl_add_string(ctx, one, "file", eq + 1)) != CTL_EXIT_OK) {
            json_decref(args);
            return r;
        }
    }
    if (ckpt) {
        json_t *co = json_object();
        json_object_set_new(args, "checkpoint", co);
        if ((r = ctl_add_string(ctx, co, "name", ckpt)) != CTL_EXIT_OK ||
            (desc && (r = ctl_add_string(ctx, co, "description", desc)) != CTL_EXIT_OK)) {
            json_decref(args);
            return r;
        }
    }
    return ctl_call_print(ctx, "disk-snapshot", args, ctl_print_snapshot, NULL);
}

static int
ctl_print_commit(const char *command, json_t *d, const void *opaque)
{
    printf("%s: committed; now on %s (%s)\n",
           json_string_value(json_object_get(d, "disk")),
           json_string_value(json_object_get(d, "node-name")),
           json_string_value(json_object_get(d, "filename")));
    return CTL_EXIT_OK;
}

int
ctl_cmd_disk_commit(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { CTL_OPT_HELP, { 0 } };
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1)
        return c == 'h' ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    json_t *args = json_object();
    if ((r = ctl_add_string(ctx, args, "disk", argv[optind])) != CTL_EXIT_OK) {
        json_decref(args);
        return r;
    }
    return ctl_call_print(ctx, "disk-commit", args, ctl_print_commit, NULL);
}
