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
        "  --help              this text\n"
        "  --version           print the version\n"
        "\n"
        "Stays in the foreground and logs to stderr.  SIGTERM or SIGINT:\n"
        "removes the control socket and exits 0.\n");
}

static int
parse_args(int argc, char **argv, struct agent_options *opt)
{
    enum { O_QMP = 256, O_CONTROL, O_LEVEL, O_FORMAT, O_HELP, O_VERSION };
    static const struct option longopts[] = {
        { "qmp", required_argument, NULL, O_QMP },
        { "control", required_argument, NULL, O_CONTROL },
        { "log-level", required_argument, NULL, O_LEVEL },
        { "log-format", required_argument, NULL, O_FORMAT },
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
    return 0;
}

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("signal %d: shutting down", w->signum);
    ev_break(loop, EVBREAK_ALL);
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
    log_info("exited");
    return a.exit_code;
}
