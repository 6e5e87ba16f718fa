/* Who may reach the agent's sockets, and which directories it trusts.
 *
 * Directories (tmux's socket directory check, OpenSSH's StrictModes): the
 * control, NBD socket and scratch directories, and every directory above
 * them, must be owned by root or the agent's user and must not be
 * writable by group or others unless the sticky bit is set.  Anyone who
 * could write one of them could swap a socket or a scratch file under the
 * agent.  A directory that does not exist yet is judged by its nearest
 * existing parent; the agent creates it private.
 *
 * Sockets: mode 0600, owner only; with --socket-group GROUP, mode 0660 and
 * that group (libvirt's unix_sock_group).  The kernel then lets the
 * group's members connect, and the agent's own peer check (SO_PEERCRED
 * against --allow-uid) decides who is served. */
#include "agent/agent.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* Why dir (which exists) is unsafe, or NULL. */
static const char *
unsafe_reason(const char *dir, const struct stat *st, char *why, size_t len)
{
    if (!S_ISDIR(st->st_mode)) {
        ckpt_format(why, len, "%s is not a directory", dir);
        return why;
    }
    if (st->st_uid != 0 && st->st_uid != geteuid()) {
        ckpt_format(why, len, "%s is owned by uid %u, neither root nor the "
                    "agent's user (uid %u)", dir, (unsigned) st->st_uid,
                    (unsigned) geteuid());
        return why;
    }
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISVTX)) {
        ckpt_format(why, len, "%s can be written by %s (mode %04o) and has no "
                    "sticky bit", dir, st->st_mode & S_IWOTH ? "other users" : "its group",
                    (unsigned) (st->st_mode & 07777));
        return why;
    }
    return NULL;
}

int
access_check_dir(const char *dir, char *why, size_t len)
{
    /* The nearest existing directory, then each one above it. */
    CLEANUP_FREE char *p = xstrdup(dir && *dir ? dir : ".");
    struct stat st;
    while (stat(p, &st) < 0) {
        if (errno != ENOENT) {
            ckpt_format(why, len, "%s: %s", p, strerror(errno));
            return -1;
        }
        char *slash = strrchr(p, '/');
        if (!slash) {
            strcpy(p, ".");
            break;
        }
        if (slash == p)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    char real[PATH_MAX];
    if (!realpath(p, real)) {
        ckpt_format(why, len, "%s: %s", p, strerror(errno));
        return -1;
    }
    for (;;) {
        if (stat(real, &st) < 0) {
            ckpt_format(why, len, "%s: %s", real, strerror(errno));
            return -1;
        }
        if (unsafe_reason(real, &st, why, len))
            return -1;
        char *slash = strrchr(real, '/');
        if (!slash || strcmp(real, "/") == 0)
            return 0;
        if (slash == real)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
}

static char *
dir_of(const char *path)
{
    char *d = xstrdup(path);
    char *slash = strrchr(d, '/');
    if (!slash)
        strcpy(d, ".");
    else if (slash == d)
        slash[1] = '\0';
    else
        *slash = '\0';
    return d;
}

int
access_check_dirs(const struct agent *a)
{
    const struct { const char *what; char *dir; } dirs[] = {
        { "control socket", dir_of(a->opt.control_path) },
        { "NBD socket", dir_of(a->opt.nbd_socket) },
        { "scratch", xstrdup(a->opt.scratch_dir) },
        { "backup", a->opt.backup_dir ? xstrdup(a->opt.backup_dir) : NULL },
    };
    int r = 0;
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        char why[PATH_MAX + 128];
        if (r == 0 && dirs[i].dir && access_check_dir(dirs[i].dir, why, sizeof why) < 0) {
            log_error("refusing the %s directory %s: %s", dirs[i].what,
                      dirs[i].dir, why);
            r = -1;
        }
        free(dirs[i].dir);
    }
    return r;
}

int
access_make_dir(const struct agent *a, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0)
        return 0;
    if (errno != ENOENT)
        return -1;
    CLEANUP_FREE char *p = xstrdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) < 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    /* Group members must reach the socket: search, but no listing. */
    mode_t mode = a->opt.socket_group ? 0710 : 0700;
    if (mkdir(p, mode) < 0)
        return errno == EEXIST ? 0 : -1;
    if (a->opt.socket_group &&
        (chown(p, (uid_t) -1, a->opt.socket_gid) < 0 || chmod(p, mode) < 0))
        return -1;
    log_info("created %s (mode %04o)", p, (unsigned) mode);
    return 0;
}

int
access_socket(const struct agent *a, const char *path)
{
    if (!a->opt.socket_group)
        return chmod(path, 0600);
    if (chown(path, (uid_t) -1, a->opt.socket_gid) < 0 || chmod(path, 0660) < 0)
        return -1;
    /* The group must also get through the directory, or the mode is moot. */
    CLEANUP_FREE char *dir = dir_of(path);
    struct stat st;
    if (stat(dir, &st) == 0 && !(st.st_mode & S_IXOTH) &&
        !(st.st_gid == a->opt.socket_gid && (st.st_mode & S_IXGRP)))
        log_warn("members of group %s cannot enter %s (mode %04o, gid %u): "
                 "chgrp %s and chmod g+x it", a->opt.socket_group, dir,
                 (unsigned) (st.st_mode & 07777), (unsigned) st.st_gid,
                 a->opt.socket_group);
    return 0;
}
