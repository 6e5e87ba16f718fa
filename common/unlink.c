/* Removing big files without stalling the event loop.
 *
 * Unlinking a multi-gigabyte file makes the file system free every
 * extent, which can take a noticeable time.  So the file is opened, its
 * name removed at once (cheap while a descriptor holds the inode: nothing
 * can open it any more and no directory listing shows it), and a
 * short-lived detached thread truncates it to free the blocks, then
 * closes it (Redis' bio.c does the same).  At exit the agent waits for
 * the threads still freeing blocks (unlink_wait), so that a launcher can
 * remove the directory after it; should the process die first, the
 * kernel frees the blocks as it closes the descriptor.  A file with
 * other names is only unlinked (that frees nothing).  A file that
 * cannot be opened goes the old way: renamed to a dot name that the
 * start-up sweep also recognises, and unlinked by the thread. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define TRASH_MARK ".trash-"

/* The threads still at work: the only state here, shared with them. */
static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pending_done = PTHREAD_COND_INITIALIZER;
static int pending;

/* What one thread frees: an open, already unlinked file (fd >= 0), or
 * the renamed file at path. */
struct doomed {
    int fd;
    char *path;
};

static void *
unlink_thread(void *arg)
{
    struct doomed *d = arg;
    if (d->fd >= 0) {
        if (ftruncate(d->fd, 0) < 0)
            log_warn("cannot free the blocks of %s: %m", d->path);
        close(d->fd);
    } else if (unlink(d->path) < 0 && errno != ENOENT) {
        log_warn("cannot remove %s: %m", d->path);
    }
    free(d->path);
    free(d);
    pthread_mutex_lock(&pending_lock);
    pending--;
    pthread_cond_broadcast(&pending_done);
    pthread_mutex_unlock(&pending_lock);
    return NULL;
}

void
unlink_wait(void)
{
    pthread_mutex_lock(&pending_lock);
    while (pending > 0)
        pthread_cond_wait(&pending_done, &pending_lock);
    pthread_mutex_unlock(&pending_lock);
}

char *
unlink_trash_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t) (slash - path + 1) : 0;
    return xasprintf("%.*s" TRASH_MARK "%s", (int) dirlen, path,
                     slash ? slash + 1 : path);
}

bool
unlink_is_trash(const char *leaf, const char **original)
{
    size_t n = strlen(TRASH_MARK);
    if (strncmp(leaf, TRASH_MARK, n) != 0)
        return false;
    if (original)
        *original = leaf + n;
    return true;
}

static void
free_later(struct doomed *d)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&pending_lock);
    pending++;
    pthread_mutex_unlock(&pending_lock);
    if (pthread_create(&t, &attr, unlink_thread, d) != 0)
        unlink_thread(d);       /* no thread: do it here */
    pthread_attr_destroy(&attr);
}

int
unlink_later(const char *path)
{
    struct doomed *d = xmalloc(sizeof *d);
    struct stat st;
    d->fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (d->fd >= 0 && (fstat(d->fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(d->fd);
        d->fd = -1;
        errno = EINVAL;         /* not a file to open: renamed instead */
    }
    /* Another name for the same blocks (a finished push target is linked
     * to its final name before the partial one goes): truncating would
     * empty that one too, and removing one name of several frees nothing,
     * so it is removed here and now. */
    if (d->fd >= 0 && st.st_nlink > 1) {
        close(d->fd);
        free(d);
        return unlink(path);
    }
    if (d->fd >= 0) {
        if (unlink(path) < 0) {
            int e = errno;
            close(d->fd);
            free(d);
            errno = e;
            return -1;
        }
        d->path = xstrdup(path);
        free_later(d);
        return 0;
    }
    if (errno == ENOENT) {
        free(d);
        return -1;
    }
    d->path = unlink_trash_name(path);
    if (rename(path, d->path) < 0) {
        int e = errno;
        free(d->path);
        free(d);
        errno = e;
        return -1;
    }
    free_later(d);
    return 0;
}
