/* What launchers watch: the pidfile, and readiness — a file that appears,
 * and systemd's READY=1 — once the control socket accepts and QEMU is
 * connected.  The notify protocol is one datagram on $NOTIFY_SOCKET, so it
 * is spoken here directly instead of linking libsystemd. */
#include "agent/agent.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
life_write_pidfile(struct agent *a)
{
    if (!a->opt.pidfile)
        return 0;
    FILE *f = fopen(a->opt.pidfile, "we");
    if (!f || fprintf(f, "%d\n", (int) getpid()) < 0 || fclose(f) != 0) {
        log_error("cannot write pidfile %s: %m", a->opt.pidfile);
        return -1;
    }
    return 0;
}

static void
sd_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if (len >= sizeof sun.sun_path)
        return;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')                 /* abstract namespace */
        sun.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t alen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *) &sun, alen) < 0)
        log_warn("cannot notify systemd at %s: %m", path);
    close(fd);
}

void
life_ready(struct agent *a)
{
    if (a->was_ready)
        return;
    a->was_ready = true;
    if (a->opt.ready_file) {
        int fd = open(a->opt.ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            log_error("cannot create ready file %s: %m", a->opt.ready_file);
        else
            close(fd);
    }
    sd_notify("READY=1\nSTATUS=QEMU connected");
    log_info("ready");
}

void
life_cleanup(struct agent *a)
{
    sd_notify("STOPPING=1");
    if (a->opt.ready_file && a->was_ready)
        unlink(a->opt.ready_file);
    if (a->opt.pidfile)
        unlink(a->opt.pidfile);
}

/* SIGTERM: the loop ends once every job has unwound and the guest is
 * thawed (job.c and quiesce.c call this as they finish). */
void
agent_maybe_exit(struct agent *a)
{
    const struct quiesce_state *q = &a->quiesce;
    if (a->shutting_down && !a->jobs && !q->frozen && !q->freezing && !q->thawing)
        ev_break(a->loop, EVBREAK_ALL);
}
