/* ckptctl restore and verify: local work on the files `ckptctl pull`
 * writes, plus the child-process helpers that pull uses too.
 *
 * A backup of disk D at checkpoint C is DIR/D.C.full.qcow2 or
 * DIR/D.C.inc.qcow2; an .inc file's backing file is the previous backup of
 * D (a relative name), so the newest file of a chain is the whole disk.
 */
#include "ckptctl/ckptctl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { OPT_DISK = 256, OPT_CHECKPOINT, OPT_OUTPUT, OPT_FORMAT, OPT_AGAINST,
       OPT_FORCE_SHARE };

/* --- child processes --- */

pid_t
ctl_spawn(char *const argv[], int out_fd)
{
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    sigset_t dfl, none;
    pid_t pid;
    int e;

    /* Own process group: a terminal's Ctrl-C goes to ckptctl alone, which
     * ends the backup and then stops its children itself.  Signals we
     * catch or ignore go back to their defaults in the child. */
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                             POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawn_file_actions_init(&fa);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (e != 0) {
        ctl_fail(CTL_EXIT_LOCAL, "cannot run %s: %s", argv[0], strerror(e));
        return -1;
    }
    return pid;
}

int
ctl_wait(pid_t pid, const char *name, int *status)
{
    int ws;

    /* EINTR: a signal for ckptctl (its flag is looked at later); the
     * child, in its own group, goes on and is waited for. */
    while (waitpid(pid, &ws, 0) < 0)
        if (errno != EINTR)
            return ctl_fail(CTL_EXIT_LOCAL, "waitpid %s: %s", name, strerror(errno));
    if (status)
        *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
        return CTL_EXIT_OK;
    if (WIFEXITED(ws) && status)
        return CTL_EXIT_LOCAL;  /* the caller judges the status */
    if (WIFEXITED(ws))
        return ctl_fail(CTL_EXIT_LOCAL, "%s failed (exit status %d)", name,
                        WEXITSTATUS(ws));
    return ctl_fail(CTL_EXIT_LOCAL, "%s was killed by signal %d", name,
                    WTERMSIG(ws));
}

int
ctl_run(char *const argv[])
{
    pid_t pid = ctl_spawn(argv, -1);

    return pid < 0 ? CTL_EXIT_LOCAL : ctl_wait(pid, argv[0], NULL);
}

int
ctl_run_capture(char *const argv[], char **out, int *status)
{
    char buf[4096];
    size_t len = 0, cap = 0;
    int p[2];
    ssize_t n;
    pid_t pid;

    *out = NULL;
    if (pipe2(p, O_CLOEXEC) < 0)
        return ctl_fail(CTL_EXIT_LOCAL, "pipe: %s", strerror(errno));
    pid = ctl_spawn(argv, p[1]);
    close(p[1]);
    while (pid >= 0 && ((n = read(p[0], buf, sizeof buf)) > 0 ||
                        (n < 0 && errno == EINTR))) {
        if (n < 0 || len + (size_t) n + 1 > 65536)
            continue;
        if (len + (size_t) n + 1 > cap)
            *out = xrealloc(*out, cap = len + (size_t) n + 1);
        memcpy(*out + len, buf, (size_t) n);
        len += (size_t) n;
    }
    close(p[0]);
    if (pid < 0)
        return CTL_EXIT_LOCAL;
    if (!*out)
        *out = xstrdup("");
    (*out)[len] = '\0';
    ctl_wait(pid, argv[0], status);
    return *status < 0 ? CTL_EXIT_LOCAL : CTL_EXIT_OK;
}

/* --- finding backups --- */

static bool
ctl_newer(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec != b->tv_sec ? a->tv_sec > b->tv_sec : a->tv_nsec > b->tv_nsec;
}

static bool
ctl_is_base_of_another(const struct ctl_bkdir *d, size_t i)
{
    for (size_t k = 0; k < d->bk.len; k++)
        if (d->bk.ptr[k].base == (ssize_t) i)
            return true;
    return false;
}

/* The newest backup of disk: among the files that no other backup uses as
 * its backing file (the ends of chains), the most recently modified.  The
 * chain test first, so that copying the directory without keeping times
 * still finds the end of a single chain. */
static const struct ctl_bk *
ctl_newest_backup(const struct ctl_bkdir *d, const char *disk)
{
    const struct ctl_bk *best = NULL;

    for (size_t i = 0; i < d->bk.len; i++) {
        const struct ctl_bk *f = &d->bk.ptr[i];
        if (strcmp(f->disk, disk) != 0 || ctl_is_base_of_another(d, i))
            continue;
        if (!best || ctl_newer(&f->mtime, &best->mtime) ||
            (!ctl_newer(&best->mtime, &f->mtime) && strcmp(f->file, best->file) > 0))
            best = f;
    }
    return best;
}

static const struct ctl_bk *
ctl_backup_at(const struct ctl_bkdir *d, const char *disk, const char *checkpoint)
{
    for (size_t i = 0; i < d->bk.len; i++) {
        const struct ctl_bk *b = &d->bk.ptr[i];
        if (strcmp(b->disk, disk) == 0 && strcmp(b->checkpoint, checkpoint) == 0)
            return b;
    }
    return NULL;
}

/* The backup to restore, with a whole chain: a missing or foreign link is
 * named (checkpoint and file) here, before qemu-img would only say it
 * "could not open backing file". */
static int
ctl_find_backup(const char *dir, const char *disk, const char *checkpoint,
                char **path, char **found_checkpoint)
{
    struct ctl_bkdir d;
    const struct ctl_bk *f = NULL;
    int r = ctl_bkdir_load(dir, disk, &d);

    if (r == CTL_EXIT_OK)
        f = checkpoint ? ctl_backup_at(&d, disk, checkpoint) : ctl_newest_backup(&d, disk);
    if (r == CTL_EXIT_OK && !f)
        r = checkpoint
            ? ctl_fail(CTL_EXIT_NOT_FOUND, "no backup of disk %s at checkpoint"
                       " %s in %s (no %s.%s.full.qcow2 or .inc.qcow2)", disk,
                       checkpoint, dir, disk, checkpoint)
            : ctl_fail(CTL_EXIT_NOT_FOUND, "no backup of disk %s in %s", disk, dir);
    if (r == CTL_EXIT_OK && f->chain == CTL_CHAIN_MISSING)
        r = ctl_fail(CTL_EXIT_NOT_FOUND, "cannot restore disk %s at checkpoint %s:"
                     " %s", disk, f->checkpoint, f->why);
    else if (r == CTL_EXIT_OK && f->chain != CTL_CHAIN_COMPLETE)
        r = ctl_fail(CTL_EXIT_LOCAL, "cannot restore disk %s at checkpoint %s:"
                     " %s", disk, f->checkpoint, f->why);
    if (r == CTL_EXIT_OK) {
        *path = xasprintf("%s/%s", dir, f->file);
        *found_checkpoint = xstrdup(f->checkpoint);
    }
    ctl_bkdir_free(&d);
    return r;
}

/* --- restore --- */

struct ctl_restore_opts {
    const char *disk, *checkpoint, *output, *format;
};

static int
ctl_restore_option(struct ctl_ctx *ctx, int c, struct ctl_restore_opts *o)
{
    switch (c) {
    case OPT_DISK: o->disk = optarg; return CTL_EXIT_OK;
    case OPT_CHECKPOINT: o->checkpoint = optarg; return CTL_EXIT_OK;
    case OPT_OUTPUT: o->output = optarg; return CTL_EXIT_OK;
    case OPT_FORMAT:
        if (strcmp(optarg, "raw") != 0 && strcmp(optarg, "qcow2") != 0)
            return ctl_usage_error(ctx, "--format must be raw or qcow2");
        o->format = optarg;
        return CTL_EXIT_OK;
    default: return CTL_EXIT_USAGE;
    }
}

static int
ctl_print_restored(const char *command, json_t *ret, const void *opaque)
{
    printf("restored disk %s at checkpoint %s from %s to %s (%s)\n",
           json_string_value(json_object_get(ret, "disk")),
           json_string_value(json_object_get(ret, "checkpoint")),
           json_string_value(json_object_get(ret, "source")),
           json_string_value(json_object_get(ret, "output")),
           json_string_value(json_object_get(ret, "format")));
    return CTL_EXIT_OK;
}

/* O_EXCL claims the name, so an existing file is never overwritten even
 * if it appears after we looked; qemu-img then writes over our empty one. */
static int
ctl_claim_output(const char *path)
{
    int fd, r = ctl_make_dirs(path, false);

    if (r != CTL_EXIT_OK)
        return r;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return ctl_fail(errno == EEXIST ? CTL_EXIT_EXISTS : CTL_EXIT_LOCAL,
                        "cannot create %s: %s", path,
                        errno == EEXIST ? "file exists (not overwritten)"
                                        : strerror(errno));
    close(fd);
    return CTL_EXIT_OK;
}

static int
ctl_restore(struct ctl_ctx *ctx, const char *dir, const struct ctl_restore_opts *o)
{
    CLEANUP_FREE char *top = NULL;
    CLEANUP_FREE char *checkpoint = NULL;
    CLEANUP_JSON json_t *ret = NULL;
    int r = ctl_find_backup(dir, o->disk, o->checkpoint, &top, &checkpoint);

    if (r != CTL_EXIT_OK || (r = ctl_claim_output(o->output)) != CTL_EXIT_OK)
        return r;
    char *argv[] = { "qemu-img", "convert", "-O", (char *) o->format, "--",
                     top, (char *) o->output, NULL };
    if ((r = ctl_run(argv)) != CTL_EXIT_OK) {
        unlink(o->output);
        return r;
    }
    ret = json_pack("{s:s, s:s, s:s, s:s, s:s}", "disk", o->disk,
                    "checkpoint", checkpoint, "source", top,
                    "output", o->output, "format", o->format);
    if (!ret)
        return ctl_fail(CTL_EXIT_OTHER, "a file name is not valid UTF-8");
    return ctl_output(ctx, "restore", ret, ctl_print_restored, NULL);
}

int
ctl_cmd_restore(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "disk", required_argument, NULL, OPT_DISK },
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "format", required_argument, NULL, OPT_FORMAT },
        CTL_OPT_HELP, { 0 }
    };
    struct ctl_restore_opts o = { .format = "qcow2" };
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        if (c == 'h')
            return CTL_EXIT_OK;
        if ((r = ctl_restore_option(ctx, c, &o)) != CTL_EXIT_OK)
            return r;
    }
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    if (!o.disk || !o.output)
        return ctl_usage_error(ctx, "--disk and --output are required");
    return ctl_restore(ctx, argv[optind], &o);
}

/* --- verify --- */

static int
ctl_print_verified(const char *command, json_t *ret, const void *opaque)
{
    json_t *off = json_object_get(ret, "offset");

    if (json_is_true(json_object_get(ret, "identical")))
        printf("identical%s\n", json_is_true(json_object_get(ret, "size-mismatch"))
               ? " (the sizes differ; the larger image's tail reads as zeros)" : "");
    else if (json_is_integer(off))
        printf("differ: first difference at offset %lld\n",
               (long long) json_integer_value(off));
    else
        printf("differ\n");
    return CTL_EXIT_OK;
}

/* qemu-img compare says "Images are identical." or "Content mismatch at
 * offset N!", after "Warning: Image size mismatch!" when sizes differ. */
static json_t *
ctl_compare_result(const char *out, int status)
{
    const char *m = strstr(out, "mismatch at offset ");
    json_t *ret = json_pack("{s:b, s:b}", "identical", status == 0,
                            "size-mismatch", strstr(out, "Image size mismatch") != NULL);

    if (status == 1 && m)
        json_object_set_new(ret, "offset",
                            json_integer(strtoll(m + strlen("mismatch at offset "),
                                                 NULL, 10)));
    return ret;
}

/* verify IMAGE --against OTHER: qemu-img compare, as before. */
static int
ctl_verify_compare(struct ctl_ctx *ctx, const char *image, const char *against,
                   bool share)
{
    CLEANUP_FREE char *out = NULL;
    CLEANUP_JSON json_t *ret = NULL;
    char *cmp[7];
    size_t n = 0;
    int r, status;

    cmp[n++] = "qemu-img";
    cmp[n++] = "compare";
    if (share)
        cmp[n++] = "-U";
    cmp[n++] = "--";            /* an image named "-x" is not an option */
    cmp[n++] = (char *) image;
    cmp[n++] = (char *) against;
    cmp[n] = NULL;
    if ((r = ctl_run_capture(cmp, &out, &status)) != CTL_EXIT_OK)
        return r;
    if (status != 0 && status != 1)
        return ctl_fail(CTL_EXIT_LOCAL, "cannot compare %s with %s (qemu-img"
                        " compare exit status %d)", image, against, status);
    ret = ctl_compare_result(out, status);
    r = ctl_output(ctx, "verify", ret, ctl_print_verified, NULL);
    return r != CTL_EXIT_OK ? r : status == 0 ? CTL_EXIT_OK : CTL_EXIT_DIFFERENT;
}

static bool
ctl_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int
ctl_cmd_verify(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "against", required_argument, NULL, OPT_AGAINST },
        { "force-share", no_argument, NULL, OPT_FORCE_SHARE },
        { "disk", required_argument, NULL, OPT_DISK },
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        CTL_OPT_HELP, { 0 }
    };
    const char *against = NULL, *disk = NULL, *checkpoint = NULL;
    bool share = false;
    CLEANUP_FREE char *top = NULL;
    CLEANUP_FREE char *found = NULL;
    int c, r;

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1) {
        switch (c) {
        case 'h': return CTL_EXIT_OK;
        case OPT_AGAINST: against = optarg; break;
        case OPT_FORCE_SHARE: share = true; break;
        case OPT_DISK: disk = optarg; break;
        case OPT_CHECKPOINT: checkpoint = optarg; break;
        default: return CTL_EXIT_USAGE;
        }
    }
    if ((r = ctl_operands(ctx, argc, argv, 1, 1)) != CTL_EXIT_OK)
        return r;
    if (!ctl_is_dir(argv[optind])) {
        if (!against)
            return ctl_usage_error(ctx, "%s is not a backup directory: an image"
                                   " file needs --against", argv[optind]);
        if (disk || checkpoint)
            return ctl_usage_error(ctx, "--disk and --checkpoint need a backup"
                                   " directory");
        return ctl_verify_compare(ctx, argv[optind], against, share);
    }
    if (!against)
        return ctl_verify_dir(ctx, argv[optind], disk, checkpoint);
    /* A directory against a live disk: the chain's newest file (or the one
     * at --checkpoint) reads as the whole disk. */
    if (!disk)
        return ctl_usage_error(ctx, "--against with a backup directory needs --disk");
    if ((r = ctl_find_backup(argv[optind], disk, checkpoint, &top, &found)) != CTL_EXIT_OK)
        return r;
    return ctl_verify_compare(ctx, top, against, share);
}
