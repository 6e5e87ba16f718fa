/* ckptctl backups and verify DIR: a backup directory looked at and
 * checked without a VM (the model is backupdir.c's). */
#include "ckptctl/ckptctl.h"

#include <stdio.h>
#include <string.h>

enum { OPT_DISK = 256 };

/* --- backups --- */

/* {"directory", "disks": [{"disk", "backups": [...]}]}: disks by name,
 * backups oldest first. */
static json_t *
ctl_backups_json(const struct ctl_bkdir *d, const char *only)
{
    json_t *disks = json_array(), *cur = NULL;
    const char *cur_disk = NULL;

    for (size_t i = 0; i < d->bk.len; i++) {
        const struct ctl_bk *b = &d->bk.ptr[i];
        json_t *j;

        if (only && strcmp(b->disk, only) != 0)
            continue;
        if (!cur_disk || strcmp(cur_disk, b->disk) != 0) {
            cur = json_array();
            json_array_append_new(disks, json_pack("{s:s, s:o}", "disk", b->disk,
                                                   "backups", cur));
            cur_disk = b->disk;
        }
        if ((j = ctl_bk_json(d, b)))
            json_array_append_new(cur, j);
    }
    return json_pack("{s:s, s:o}", "directory", d->dir, "disks", disks);
}

static int
ctl_print_backups(const char *command, json_t *ret, const void *opaque)
{
    static const char *const head[] = { "DISK", "CHECKPOINT", "PARENT", "TYPE",
                                        "TIME", "SIZE", "CHAIN", "FILE" };
    struct ctl_table t = { 0 };
    json_t *disk, *b;
    size_t i, k;

    ctl_table_head(&t, head, ARRAY_SIZE(head));
    json_array_foreach(json_object_get(ret, "disks"), i, disk) {
        json_array_foreach(json_object_get(disk, "backups"), k, b) {
            const char *parent = json_string_value(json_object_get(b, "parent"));
            json_t *missing = json_object_get(b, "missing");
            const char *chain = json_string_value(json_object_get(b, "chain"));
            char when[64], size[32];

            ctl_format_time(json_integer_value(json_object_get(b, "time")), when,
                            sizeof when);
            ctl_human_size((uint64_t) json_integer_value(json_object_get(b, "size")),
                           size, sizeof size);
            ctl_table_row(&t);
            ctl_table_cell(&t, "%s", json_string_value(json_object_get(disk, "disk")));
            ctl_table_cell(&t, "%s", json_string_value(json_object_get(b, "checkpoint")));
            ctl_table_cell(&t, "%s", parent ? parent : "-");
            ctl_table_cell(&t, "%s", strcmp(json_string_value(json_object_get(b, "mode")),
                                            "full") == 0 ? "full" : "inc");
            ctl_table_cell(&t, "%s", when);
            ctl_table_cell(&t, "%s", size);
            if (missing)
                ctl_table_cell(&t, "%s: %s", chain,
                               json_string_value(json_object_get(missing, "file")));
            else
                ctl_table_cell(&t, "%s", chain);
            ctl_table_cell(&t, "%s", json_string_value(json_object_get(b, "file")));
        }
    }
    if (t.rows.len == 0) {
        ctl_table_free(&t);
        printf("no backups in %s\n", json_string_value(json_object_get(ret, "directory")));
        return CTL_EXIT_OK;
    }
    ctl_table_print(&t);
    /* The reasons in full, under the table. */
    json_array_foreach(json_object_get(ret, "disks"), i, disk)
        json_array_foreach(json_object_get(disk, "backups"), k, b)
            if (json_object_get(b, "problem"))
                printf("%s: %s\n", json_string_value(json_object_get(b, "file")),
                       json_string_value(json_object_get(b, "problem")));
    return CTL_EXIT_OK;
}

int
ctl_cmd_backups(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "disk", required_argument, NULL, OPT_DISK },
        CTL_OPT_HELP, { 0 }
    };
    const char *disk = NULL;
    struct ctl_bkdir d;
    CLEANUP_JSON json_t *ret = NULL;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return CTL_EXIT_OK;
        if (c != OPT_DISK)
            return CTL_EXIT_USAGE;
        disk = optarg;
    }
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    if ((r = ctl_bkdir_load(argv[optind], disk, &d)) != CTL_EXIT_OK)
        return r;
    ret = ctl_backups_json(&d, disk);
    ctl_bkdir_free(&d);
    if (!ret)
        return ctl_fail(CTL_EXIT_OTHER, "a file name in %s is not valid UTF-8",
                        argv[optind]);
    return ctl_output(ctx, "backups", ret, ctl_print_backups, NULL);
}

/* --- verify DIR --- */

/* One file against its record: "ok", "corrupt" (checksum or size differ)
 * or "unrecorded" (no record: pulled by an older ckptctl, or the record
 * was lost). */
static json_t *
ctl_verify_file(const struct ctl_bkdir *d, const struct ctl_bk *b, int *r)
{
    const char *want = json_string_value(json_object_get(b->record, "sha256"));
    json_t *size = json_object_get(b->record, "file-size");
    json_t *j = json_pack("{s:s, s:s, s:s}", "file", b->file, "disk", b->disk,
                          "checkpoint", b->checkpoint);
    CLEANUP_FREE char *path = xasprintf("%s/%s", d->dir, b->file);
    char have[65];

    if (!want) {
        json_object_set_new(j, "status", json_string("unrecorded"));
        json_object_set_new(j, "problem", json_string("no checksum was recorded"));
        return j;
    }
    json_object_set_new(j, "expected", json_string(want));
    if (json_is_integer(size) && (uint64_t) json_integer_value(size) != b->file_size) {
        CLEANUP_FREE char *why = xasprintf("the file has %llu bytes, not the %lld"
                                           " recorded", (unsigned long long) b->file_size,
                                           (long long) json_integer_value(size));
        json_object_set_new(j, "status", json_string("corrupt"));
        json_object_set_new(j, "problem", json_string(why));
        return j;
    }
    if ((*r = ctl_sha256_file(path, have)) != CTL_EXIT_OK) {
        json_decref(j);
        return NULL;
    }
    bool same = strcmp(have, want) == 0;
    json_object_set_new(j, "actual", json_string(have));
    json_object_set_new(j, "status", json_string(same ? "ok" : "corrupt"));
    if (!same)
        json_object_set_new(j, "problem", json_string("the SHA-256 differs from the"
                                                      " recorded one"));
    return j;
}

/* Every file of the chains asked for, each once, plus a "missing" entry
 * for each link that is not there (or not the right file). */
static json_t *
ctl_verify_json(const struct ctl_bkdir *d, const char *disk, const char *checkpoint,
                int *r, bool *all_ok)
{
    CLEANUP_FREE bool *want = xcalloc(d->bk.len + 1, sizeof *want);
    json_t *files = json_array(), *links = json_array();

    *all_ok = true;
    for (size_t i = 0; i < d->bk.len; i++) {
        const struct ctl_bk *b = &d->bk.ptr[i];
        if ((disk && strcmp(b->disk, disk) != 0) ||
            (checkpoint && strcmp(b->checkpoint, checkpoint) != 0))
            continue;
        for (ssize_t k = (ssize_t) i; k >= 0; k = d->bk.ptr[k].base)
            want[k] = true;
        if (b->chain != CTL_CHAIN_COMPLETE) {
            json_t *link = json_pack("{s:s, s:s, s:s, s:s}", "file", b->file,
                                     "disk", b->disk, "status",
                                     ctl_chain_name(b->chain), "problem",
                                     b->why ? b->why : "");
            if (b->missing_file)
                json_object_set_new(link, "missing", json_pack(
                    "{s:s, s:o}", "file", b->missing_file, "checkpoint",
                    b->missing_checkpoint ? json_string(b->missing_checkpoint)
                                          : json_null()));
            json_array_append_new(links, link);
            *all_ok = false;
        }
    }
    for (size_t i = 0; i < d->bk.len && *r == CTL_EXIT_OK; i++) {
        json_t *j;
        if (!want[i])
            continue;
        if (!(j = ctl_verify_file(d, &d->bk.ptr[i], r)))
            break;
        *all_ok &= strcmp(json_string_value(json_object_get(j, "status")), "ok") == 0;
        json_array_append_new(files, j);
    }
    if (json_array_size(files) == 0 && *r == CTL_EXIT_OK)
        *r = checkpoint ? ctl_fail(CTL_EXIT_NOT_FOUND, "no backup%s%s at checkpoint"
                                   " %s in %s", disk ? " of disk " : "",
                                   disk ? disk : "", checkpoint, d->dir)
                        : ctl_fail(CTL_EXIT_NOT_FOUND, "no backup%s%s in %s",
                                   disk ? " of disk " : "", disk ? disk : "", d->dir);
    return json_pack("{s:s, s:b, s:o, s:o}", "directory", d->dir, "ok", *all_ok,
                     "files", files, "chains", links);
}

static int
ctl_print_verify_dir(const char *command, json_t *ret, const void *opaque)
{
    json_t *f;
    size_t i;

    json_array_foreach(json_object_get(ret, "files"), i, f) {
        const char *problem = json_string_value(json_object_get(f, "problem"));
        printf("%s: %s%s%s\n", json_string_value(json_object_get(f, "file")),
               json_string_value(json_object_get(f, "status")),
               problem ? ": " : "", problem ? problem : "");
    }
    json_array_foreach(json_object_get(ret, "chains"), i, f)
        printf("%s: chain %s: %s\n", json_string_value(json_object_get(f, "file")),
               json_string_value(json_object_get(f, "status")),
               json_string_value(json_object_get(f, "problem")));
    puts(json_is_true(json_object_get(ret, "ok")) ? "all files verified"
                                                  : "verification FAILED");
    return CTL_EXIT_OK;
}

int
ctl_verify_dir(struct ctl_ctx *ctx, const char *dir, const char *disk,
               const char *checkpoint)
{
    struct ctl_bkdir d;
    CLEANUP_JSON json_t *ret = NULL;
    bool ok;
    int r = ctl_bkdir_load(dir, disk, &d);

    if (r != CTL_EXIT_OK)
        return r;
    ret = ctl_verify_json(&d, disk, checkpoint, &r, &ok);
    ctl_bkdir_free(&d);
    if (r != CTL_EXIT_OK)
        return r;
    if (!ret)
        return ctl_fail(CTL_EXIT_OTHER, "a file name in %s is not valid UTF-8", dir);
    r = ctl_output(ctx, "verify", ret, ctl_print_verify_dir, NULL);
    return r != CTL_EXIT_OK ? r : ok ? CTL_EXIT_OK : CTL_EXIT_DIFFERENT;
}
