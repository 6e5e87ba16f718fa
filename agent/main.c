/* ckptd: a checkpoint and backup agent beside one QEMU process. */
#include "agent/agent.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

/* Backups are ended cleanly first (exports, jobs, nodes and scratch files
 * go) and a frozen guest is thawed; a second signal stops at once. */
static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct agent *a = w->data;
    if (a->shutting_down) {
        log_info("signal %d: exiting", w->signum);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    log_info("signal %d: ending %zu backups, then exiting", w->signum, job_count(a));
    a->shutting_down = true;
    if (a->quiesce.frozen || a->quiesce.freezing)
        quiesce_thaw(a, NULL, NULL);
    job_end_all(a);
}

static void
qga_changed(struct qga *g, bool connected, const char *reason, void *opaque)
{
    if (connected)
        log_info("guest agent channel connected");
    else
        log_info("guest agent channel disconnected: %s", reason ? reason : "");
}

static void
hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("SIGHUP ignored: ckptd has no files to reopen");
}

static void
watch_signals(struct agent *a)
{
    ev_signal_init(&a->sigterm_w, stop_cb, SIGTERM);
    ev_signal_init(&a->sigint_w, stop_cb, SIGINT);
    a->sigterm_w.data = a->sigint_w.data = a;
    ev_signal_init(&a->sighup_w, hup_cb, SIGHUP);
    ev_signal_start(a->loop, &a->sigterm_w);
    ev_signal_start(a->loop, &a->sigint_w);
    ev_signal_start(a->loop, &a->sighup_w);
    signal(SIGPIPE, SIG_IGN);
}

int
main(int argc, char **argv)
{
    struct agent a = { .listen_fd = -1 };
    /* One malloc arena: the agent's threads (scratch-file unlinks, the
     * changes reader) are rare and short, and each would otherwise get an
     * arena of its own whose freed memory the loop cannot reuse. */
    mallopt(M_ARENA_MAX, 1);
    int r = opt_parse(argc, argv, &a.opt);
    if (r) {
        opt_free(&a.opt);
        return r;
    }
    log_setup(a.opt.log_level, a.opt.log_format);
    a.loop = ev_default_loop(EVFLAG_AUTO);
    watch_signals(&a);
    if (access_check_dirs(&a) < 0 || ctl_listen(&a) < 0 ||
        life_write_pidfile(&a) < 0) {
        opt_free(&a.opt);
        return 1;
    }
    vm_start(&a);
    if (a.opt.qga_path) {
        a.qga = qga_new(a.loop, a.opt.qga_path, qga_changed, &a, 1.0);
        qga_start(a.qga);
    }
    ev_run(a.loop, 0);
    unlink_wait();
    ev_timer_stop(a.loop, &a.quiesce.watchdog);
    qga_free(a.qga);
    a.qga = NULL;
    json_decref(a.commands);
    vm_stop(&a);
    ctl_close_listener(&a);
    life_cleanup(&a);
    ev_loop_destroy(a.loop);
    opt_free(&a.opt);
    log_info("exited");
    return a.exit_code;
}
