/* The agent's options: command line and config file, one table.
 *
 * A config file (--config FILE) holds "name = value" lines with the long
 * options' names ("insecure-tcp" or "insecure-tcp = yes" for a flag; '#'
 * starts a comment).  It is applied first and the command line after it,
 * so the command line wins. */
#include "agent/agent.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

enum opt_id {
    O_QMP = 256, O_CONTROL, O_LEVEL, O_FORMAT, O_SCRATCH, O_NBD_SOCKET,
    O_INSECURE_TCP, O_EXIT_WITH_QEMU, O_PIDFILE, O_READY_FILE, O_ALLOW_UID,
    O_CONFIG, O_TLS_DIR, O_QMP_TIMEOUT, O_SCRATCH_RESERVE, O_SOCKET_GROUP,
    O_HELP, O_VERSION, O_QGA, O_BACKUP_DIR,
};

static const struct option longopts[] = {
    { "qmp", required_argument, NULL, O_QMP },
    { "qga", required_argument, NULL, O_QGA },
    { "control", required_argument, NULL, O_CONTROL },
    { "log-level", required_argument, NULL, O_LEVEL },
    { "log-format", required_argument, NULL, O_FORMAT },
    { "scratch-dir", required_argument, NULL, O_SCRATCH },
    { "nbd-socket", required_argument, NULL, O_NBD_SOCKET },
    { "insecure-tcp", no_argument, NULL, O_INSECURE_TCP },
    { "exit-with-qemu", no_argument, NULL, O_EXIT_WITH_QEMU },
    { "pidfile", required_argument, NULL, O_PIDFILE },
    { "ready-file", required_argument, NULL, O_READY_FILE },
    { "allow-uid", required_argument, NULL, O_ALLOW_UID },
    { "socket-group", required_argument, NULL, O_SOCKET_GROUP },
    { "config", required_argument, NULL, O_CONFIG },
    { "tls-dir", required_argument, NULL, O_TLS_DIR },
    { "qmp-timeout", required_argument, NULL, O_QMP_TIMEOUT },
    { "scratch-reserve", required_argument, NULL, O_SCRATCH_RESERVE },
    { "backup-dir", required_argument, NULL, O_BACKUP_DIR },
    { "help", no_argument, NULL, O_HELP },
    { "version", no_argument, NULL, O_VERSION },
    { NULL, 0, NULL, 0 },
};

static void
opt_usage(FILE *f)
{
    fprintf(f,
        "Usage: ckptd --qmp PATH --control PATH [OPTION]...\n"
        "Checkpoints and backups for one QEMU, over its QMP socket.\n"
        "\n"
        "  --qmp PATH          QEMU's QMP socket; waited for, reconnected to\n"
        "  --control PATH      the control socket to create (mode 0600); its\n"
        "                      directory, the NBD socket's and the scratch\n"
        "                      directory must be owned by root or the agent's\n"
        "                      user and not writable by others (or sticky)\n"
        "  --qga PATH          the host side of the guest agent's channel (a\n"
        "                      Unix socket); waited for, reconnected to; lets\n"
        "                      checkpoints and backups quiesce the guest\n"
        "  --log-level LEVEL   error, warning, info (default) or debug\n"
        "  --log-format FMT    text (default) or json: one line per event\n"
        "  --scratch-dir DIR   where backup scratch files go (default:\n"
        "                      $XDG_RUNTIME_DIR, else /var/lib/ckptd, then\n"
        "                      ckptd-scratch-HASH of the control path; mode 0700)\n"
        "  --scratch-reserve MIB  end a backup (failed) when its scratch\n"
        "                      directory has less than MIB MiB free, before a\n"
        "                      full scratch disk can fail guest writes\n"
        "                      (default 64; 0 turns the watch off)\n"
        "  --backup-dir DIR    push backups may write {\"file\": PATH} targets\n"
        "                      inside DIR (default: none; {\"fd\"} targets,\n"
        "                      files the client opened, need no directory)\n"
        "  --nbd-socket PATH   the default NBD server socket (default: the\n"
        "                      control path, its .sock replaced by -nbd.sock)\n"
        "  --tls-dir DIR       x509 files (ca-cert.pem, server-cert.pem,\n"
        "                      server-key.pem) for NBD over TCP with TLS\n"
        "  --insecure-tcp      allow NBD exports over TCP without TLS\n"
        "  --qmp-timeout SEC   a QMP command QEMU has not answered in SEC\n"
        "                      seconds fails, and the connection is reset\n"
        "                      (default 60)\n"
        "  --allow-uid UID     also accept control clients of this user\n"
        "                      (repeatable; the agent's own user and root are\n"
        "                      always accepted)\n"
        "  --socket-group GROUP  the control and NBD sockets get mode 0660 and\n"
        "                      this group, so that its members can connect\n"
        "                      (the agent still serves only --allow-uid users)\n"
        "  --exit-with-qemu    exit 0 when QEMU goes away after having been\n"
        "                      connected, instead of waiting for it\n"
        "  --pidfile PATH      write the agent's pid there (removed at exit)\n"
        "  --ready-file PATH   create PATH once the control socket accepts and\n"
        "                      QEMU is connected (removed at exit); under\n"
        "                      systemd (Type=notify) READY=1 is sent as well\n"
        "  --config FILE       read options from FILE: \"name = value\" lines\n"
        "                      with the names above; the command line wins\n"
        "  --help              this text\n"
        "  --version           print the version\n"
        "\n"
        "Stays in the foreground and logs to stderr.  SIGTERM or SIGINT end\n"
        "running backups cleanly, remove the control socket and exit 0.\n"
        "SIGHUP is ignored.\n");
}

static int
parse_bool(const char *v, bool *out)
{
    if (!v || !strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1"))
        *out = true;
    else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0"))
        *out = false;
    else
        return -1;
    return 0;
}

static void
set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = xstrdup(v);
}

/* Applies one option; where names the source for error messages. */
static int
apply(struct agent_options *o, int id, const char *v, const char *where)
{
    char *end;
    switch (id) {
    case O_QMP: set_str(&o->qmp_path, v); return 0;
    case O_QGA: set_str(&o->qga_path, v); return 0;
    case O_CONTROL: set_str(&o->control_path, v); return 0;
    case O_SCRATCH: set_str(&o->scratch_dir, v); return 0;
    case O_BACKUP_DIR: set_str(&o->backup_dir, v); return 0;
    case O_NBD_SOCKET: set_str(&o->nbd_socket, v); return 0;
    case O_PIDFILE: set_str(&o->pidfile, v); return 0;
    case O_READY_FILE: set_str(&o->ready_file, v); return 0;
    case O_TLS_DIR: set_str(&o->tls_dir, v); return 0;
    case O_INSECURE_TCP:
        if (parse_bool(v, &o->insecure_tcp) == 0)
            return 0;
        break;
    case O_EXIT_WITH_QEMU:
        if (parse_bool(v, &o->exit_with_qemu) == 0)
            return 0;
        break;
    case O_LEVEL:
        if (log_level_parse(v, &o->log_level) == 0)
            return 0;
        break;
    case O_FORMAT:
        if (strcmp(v, "text") == 0 || strcmp(v, "json") == 0) {
            o->log_format = v[0] == 'j' ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT;
            return 0;
        }
        break;
    case O_QMP_TIMEOUT: {
        double t = strtod(v, &end);
        if (*v && !*end && t > 0 && t <= 86400) {
            o->qmp_timeout = t;
            return 0;
        }
        break;
    }
    case O_SCRATCH_RESERVE: {
        errno = 0;
        unsigned long long mib = strtoull(v, &end, 10);
        if (!errno && *v && !*end && mib < (1ull << 40)) {
            o->scratch_reserve = (uint64_t) mib << 20;
            return 0;
        }
        break;
    }
    case O_SOCKET_GROUP: {
        struct group *g = getgrnam(v);
        errno = 0;
        unsigned long gid = strtoul(v, &end, 10);
        if (!g && *v && !*end && !errno)
            g = getgrgid((gid_t) gid);
        if (g) {
            set_str(&o->socket_group, g->gr_name);
            o->socket_gid = g->gr_gid;
            return 0;
        }
        fprintf(stderr, "ckptd: %s: no group '%s'\n", where, v);
        return -1;
    }
    case O_ALLOW_UID: {
        errno = 0;
        unsigned long uid = strtoul(v, &end, 10);
        if (!errno && *v && !*end && uid < (unsigned long) (uid_t) -1 &&
            o->nallow_uids < ARRAY_SIZE(o->allow_uids)) {
            o->allow_uids[o->nallow_uids++] = (uid_t) uid;
            return 0;
        }
        break;
    }
    }
    fprintf(stderr, "ckptd: %s: invalid value '%s'\n", where, v ? v : "");
    return -1;
}

static const struct option *
find_option(const char *name)
{
    for (const struct option *o = longopts; o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    return NULL;
}

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && strchr(" \t\r\n", s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int
config_line(struct agent_options *o, char *line, const char *file, int lineno)
{
    char where[512];
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *eq = strchr(line, '=');
    if (eq)
        *eq = '\0';
    char *key = trim(line), *value = eq ? trim(eq + 1) : NULL;
    if (!*key)
        return 0;
    snprintf(where, sizeof where, "%s:%d: %s", file, lineno, key);
    const struct option *opt = find_option(key);
    if (!opt || opt->val == O_CONFIG || opt->val == O_HELP || opt->val == O_VERSION) {
        fprintf(stderr, "ckptd: %s:%d: unknown option '%s'\n", file, lineno, key);
        return -1;
    }
    if (opt->has_arg == required_argument && (!value || !*value)) {
        fprintf(stderr, "ckptd: %s: needs a value\n", where);
        return -1;
    }
    return apply(o, opt->val, value, where);
}

static int
read_config(struct agent_options *o, const char *file)
{
    FILE *f = fopen(file, "re");
    if (!f) {
        fprintf(stderr, "ckptd: cannot read config %s: %s\n", file, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, r = 0;
    while (r == 0 && getline(&line, &cap, f) > 0)
        r = config_line(o, line, file, ++lineno);
    free(line);
    fclose(f);
    return r;
}

/* The config file goes first, wherever --config stands on the line. */
static int
find_config(int argc, char **argv, struct agent_options *o)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            return read_config(o, argv[i + 1]);
        if (strncmp(argv[i], "--config=", 9) == 0)
            return read_config(o, argv[i] + 9);
    }
    return 0;
}

/* Derived from the control path, not the pid, so that a restarted agent
 * finds (and removes) what a crashed one left in its scratch directory. */
static void
set_defaults(struct agent_options *opt)
{
    uint32_t h = 2166136261u;               /* FNV-1a */
    for (const char *p = opt->control_path; *p; p++)
        h = (h ^ (unsigned char) *p) * 16777619u;
    snprintf(opt->tag, sizeof opt->tag, "%08x", h);
    if (!opt->scratch_dir) {
        /* On disk, not in /run: copy-before-write data can be as large as
         * the guest's writes during a backup.  A user session's runtime
         * directory is used when there is one. */
        const char *run = getenv("XDG_RUNTIME_DIR");
        opt->scratch_dir = xasprintf("%s/ckptd-scratch-%08x",
                                     run && *run == '/' ? run : "/var/lib/ckptd", h);
    }
    if (!opt->nbd_socket) {
        size_t len = strlen(opt->control_path);
        bool dotsock = len > 5 && strcmp(opt->control_path + len - 5, ".sock") == 0;
        opt->nbd_socket = xasprintf("%.*s-nbd.sock", (int) (dotsock ? len - 5 : len),
                                    opt->control_path);
    }
}

/* The one place that reads the CKPTD_DEBUG_* hooks, once, at start. */
static int
read_debug_hooks(struct agent_debug *d)
{
    const char *v;
    char *end;
    *d = (struct agent_debug) { .handshake_timeout = CTL_HANDSHAKE_TIMEOUT };
    if ((v = getenv("CKPTD_DEBUG_ABORT_AFTER")) && *v) {
        errno = 0;
        d->abort_after = strtol(v, &end, 10);
        if (errno || *end || d->abort_after < 0) {
            fprintf(stderr, "ckptd: CKPTD_DEBUG_ABORT_AFTER: invalid value '%s'\n", v);
            return -1;
        }
    }
    d->verify_tree = (v = getenv("CKPTD_DEBUG_VERIFY_TREE")) && *v && strcmp(v, "0") != 0;
    d->no_filter = (v = getenv("CKPTD_DEBUG_NO_FILTER")) && *v && strcmp(v, "0") != 0;
    if ((v = getenv("CKPTD_DEBUG_PUSH_SPEED")) && *v) {
        errno = 0;
        d->push_speed = strtoll(v, &end, 10);
        if (errno || *end || d->push_speed < 0) {
            fprintf(stderr, "ckptd: CKPTD_DEBUG_PUSH_SPEED: invalid value '%s'\n", v);
            return -1;
        }
    }
    if ((v = getenv("CKPTD_DEBUG_HANDSHAKE_TIMEOUT")) && *v) {
        d->handshake_timeout = strtod(v, &end);
        if (*end || !(d->handshake_timeout > 0 && d->handshake_timeout <= 3600)) {
            fprintf(stderr, "ckptd: CKPTD_DEBUG_HANDSHAKE_TIMEOUT: invalid value '%s'\n", v);
            return -1;
        }
    }
    return 0;
}

/* getopt_long takes any unique prefix of a long option: "--socket" would
 * be --socket-group, and "--control" mistyped as a prefix would pass.  A
 * daemon's command line is written once and read often, so only whole
 * names count. */
static int
check_whole_names(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return 0;
        if (strncmp(a, "--", 2) != 0)
            continue;
        size_t len = strcspn(a + 2, "=");
        const struct option *hit = NULL;
        for (const struct option *p = longopts; p->name; p++)
            if (strlen(p->name) == len && strncmp(p->name, a + 2, len) == 0)
                hit = p;
        if (!hit) {
            for (const struct option *p = longopts; p->name; p++)
                if (strncmp(p->name, a + 2, len) == 0) {
                    fprintf(stderr, "ckptd: unknown option '%.*s' (did you mean "
                            "--%s?)\n", (int) len + 2, a, p->name);
                    return -1;
                }
            continue;               /* getopt_long says it is unknown */
        }
        if (hit->has_arg == required_argument && !a[2 + len])
            i++;                    /* its value */
    }
    return 0;
}

int
opt_parse(int argc, char **argv, struct agent_options *o)
{
    if (read_debug_hooks(&o->debug) < 0)
        return 2;
    o->log_level = LOG_INFO;
    o->qmp_timeout = QMP_REPLY_TIMEOUT;
    o->scratch_reserve = (uint64_t) 64 << 20;
    if (check_whole_names(argc, argv) < 0) {
        opt_usage(stderr);
        return 2;
    }
    if (find_config(argc, argv, o) < 0)
        return 2;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char where[64];
        switch (c) {
        case O_CONFIG: break;               /* already read */
        case O_HELP: opt_usage(stdout); exit(0);
        case O_VERSION: printf("ckptd %s\n", CKPTD_VERSION); exit(0);
        case '?': opt_usage(stderr); return 2;
        default:
            snprintf(where, sizeof where, "--%s", longopts[0].name);
            for (const struct option *p = longopts; p->name; p++)
                if (p->val == c)
                    snprintf(where, sizeof where, "--%s", p->name);
            if (apply(o, c, optarg, where) < 0)
                return 2;
        }
    }
    if (optind < argc || !o->qmp_path || !o->control_path) {
        fprintf(stderr, "ckptd: %s\n", optind < argc ? "unexpected argument"
                : "--qmp and --control are required");
        opt_usage(stderr);
        return 2;
    }
    set_defaults(o);
    return 0;
}

void
opt_free(struct agent_options *o)
{
    free(o->qmp_path);
    free(o->qga_path);
    free(o->control_path);
    free(o->scratch_dir);
    free(o->backup_dir);
    free(o->nbd_socket);
    free(o->pidfile);
    free(o->ready_file);
    free(o->tls_dir);
    free(o->socket_group);
}
