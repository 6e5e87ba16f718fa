/* Removing big files without stalling the event loop.
 *
 * Unlinking a multi-gigabyte file makes the file system free every
 * extent, which can take a noticeable time.  The name goes at once (a
 * rename in the same directory, to a dot name that the start-up sweep
 * also recognises), so nothing can open it any more; the blocks are
 * freed by a short-lived detached thread (Redis' bio.c does the same).
 * At exit the agent waits for the threads still freeing blocks
 * (unlink_wait), so that a launcher can remove the directory after it;
 * should the process die first, the next start's sweep finds the dot
 * file. */
#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define TRASH_MARK ".trash-"

/* The threads still at work: the only state here, shared with them. */
static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pending_done = PTHREAD_COND_INITIALIZER;
static int pending;

static void *
unlink_thread(void *arg)
{
    char *path = arg;
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("cannot remove %s: %m", path);
    free(path);
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

int
unlink_later(const char *path)
{
    char *trash = unlink_trash_name(path);
    if (rename(path, trash) < 0) {
        int e = errno;
        free(trash);
        errno = e;
        return -1;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&pending_lock);
    pending++;
    pthread_mutex_unlock(&pending_lock);
    if (pthread_create(&t, &attr, unlink_thread, trash) != 0)
        unlink_thread(trash);   /* no thread: do it here */
    pthread_attr_destroy(&attr);
    return 0;
}
