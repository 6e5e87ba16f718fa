/* ckptd: a checkpoint and backup agent beside one QEMU process. */
#include "agent/agent.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static void
usage(FILE *f)
{
    fprintf(f,
        "Usage: ckptd --qmp PATH --control PATH [OPTION]...\n"
        "Checkpoints and backups for one QEMU, over its QMP socket.\n"
        "\n"
        "  --qmp PATH          QEMU's QMP socket; waited for, reconnected to\n"
        "  --control PATH      the control socket to create (mode 0600)\n"
        "  --log-level LEVEL   error, warning, info (default) or debug\n"
        "  --log-format FMT    text (default) or json, one line per event\n"
        "  --scratch-dir DIR   where backup scratch files go (default:\n"
        "                      $XDG_RUNTIME_DIR or /run/ckptd, then\n"
        "                      ckptd-scratch-HASH of the control path; mode 0700)\n"
        "  --nbd-socket PATH   the default NBD server socket (default: the\n"
        "                      control path with -nbd.sock for .sock)\n"
        "  --insecure-tcp      allow NBD exports over TCP without TLS\n"
        "  --help              this text\n"
        "  --version           print the version\n"
        "\n"
        "Stays in the foreground and logs to stderr.  SIGTERM or SIGINT:\n"
        "removes the control socket and exits 0.\n");
}

/* Derived from the control path, not the pid, so that a restarted agent
 * finds (and removes) what a crashed one left in its scratch directory. */
static void
set_defaults(struct agent_options *opt)
{
    if (!opt->scratch_dir) {
        uint32_t h = 2166136261u;           /* FNV-1a */
        for (const char *p = opt->control_path; *p; p++)
            h = (h ^ (unsigned char) *p) * 16777619u;
        const char *run = getenv("XDG_RUNTIME_DIR");
        opt->scratch_dir = xasprintf("%s/ckptd-scratch-%08x",
                                     run && *run == '/' ? run : "/run/ckptd", h);
    }
    if (!opt->nbd_socket) {
        size_t len = strlen(opt->control_path);
        bool dotsock = len > 5 && strcmp(opt->control_path + len - 5, ".sock") == 0;
        opt->nbd_socket = xasprintf("%.*s-nbd.sock", (int) (dotsock ? len - 5 : len),
                                    opt->control_path);
    }
}

static int
parse_args(int argc, char **argv, struct agent_options *opt)
{
    enum { O_QMP = 256, O_CONTROL, O_LEVEL, O_FORMAT, O_HELP, O_VERSION,
           O_SCRATCH, O_NBD_SOCKET, O_INSECURE_TCP };
    static const struct option longopts[] = {
        { "qmp", required_argument, NULL, O_QMP },
        { "control", required_argument, NULL, O_CONTROL },
        { "log-level", required_argument, NULL, O_LEVEL },
        { "log-format", required_argument, NULL, O_FORMAT },
        { "scratch-dir", required_argument, NULL, O_SCRATCH },
        { "nbd-socket", required_argument, NULL, O_NBD_SOCKET },
        { "insecure-tcp", no_argument, NULL, O_INSECURE_TCP },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 },
    };
    enum log_level level = LOG_INFO;
    enum log_format format = LOG_FORMAT_TEXT;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_QMP: opt->qmp_path = optarg; break;
        case O_CONTROL: opt->control_path = optarg; break;
        case O_LEVEL:
            if (log_level_parse(optarg, &level) < 0) {
                fprintf(stderr, "ckptd: unknown log level '%s'\n", optarg);
                return 2;
            }
            break;
        case O_FORMAT:
            if (strcmp(optarg, "text") && strcmp(optarg, "json")) {
                fprintf(stderr, "ckptd: unknown log format '%s'\n", optarg);
                return 2;
            }
            format = strcmp(optarg, "json") == 0 ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT;
            break;
        case O_SCRATCH: free(opt->scratch_dir); opt->scratch_dir = xstrdup(optarg); break;
        case O_NBD_SOCKET: free(opt->nbd_socket); opt->nbd_socket = xstrdup(optarg); break;
        case O_INSECURE_TCP: opt->insecure_tcp = true; break;
        case O_HELP: usage(stdout); exit(0);
        case O_VERSION: printf("ckptd %s\n", CKPTD_VERSION); exit(0);
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !opt->qmp_path || !opt->control_path) {
        fprintf(stderr, "ckptd: %s\n", optind < argc ? "unexpected argument"
                : "--qmp and --control are required");
        usage(stderr);
        return 2;
    }
    log_setup(level, format);
    set_defaults(opt);
    return 0;
}

static void
all_ended(struct agent *a)
{
    ev_break(a->loop, EVBREAK_ALL);
}

/* Backups are ended cleanly first: exports, jobs, nodes and scratch files
 * go; a second signal stops at once. */
static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct agent *a = w->data;
    if (a->shutting_down || !a->jobs) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    log_info("signal %d: ending %zu backups, then exiting", w->signum, backup_count(a));
    a->shutting_down = true;
    backup_end_all(a, all_ended);
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
    struct agent a = { .listen_fd = -1, .next_job = 1 };
    int r = parse_args(argc, argv, &a.opt);
    if (r)
        return r;
    a.loop = ev_default_loop(EVFLAG_AUTO);
    watch_signals(&a);
    if (ctl_listen(&a) < 0)
        return 1;
    vm_start(&a);
    ev_run(a.loop, 0);
    vm_stop(&a);
    ctl_close_listener(&a);
    ev_loop_destroy(a.loop);
    free(a.opt.scratch_dir);
    free(a.opt.nbd_socket);
    log_info("exited");
    return a.exit_code;
}
