/* ckptctl: main, global options, the command table and dispatch.
 *
 * Global options come before the command ("+" in the optstring stops
 * getopt at the first operand), so each command parses its own options
 * and an option name can mean different things to different commands.
 */
#include "ckptctl/ckptctl.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTL_DEFAULT_SOCKET "/run/ckptd/control.sock"
#define CTL_DEFAULT_TIMEOUT 60

static int ctl_cmd_help(struct ctl_ctx *ctx, int argc, char **argv);

static const char *const create_options[] = {
    "--description TEXT  free text stored with the checkpoint",
    "--disk DISK         cover DISK (repeatable; default: every disk that",
    "                    can hold checkpoints)",
    "--quiesce           freeze the guest's file systems (its guest agent,",
    "                    ckptd --qga) around the checkpoint; fails, changing",
    "                    nothing, when they cannot be frozen",
    "--xml FILE          the checkpoint as libvirt <domaincheckpoint> XML",
    "                    (name, description, disks with checkpoint='bitmap'",
    "                    or 'no'); instead of NAME, --description and --disk",
    NULL
};

static const char *const snapshot_options[] = {
    "--checkpoint NAME   also create checkpoint NAME, in the same transaction",
    "--description TEXT  its description",
    NULL
};

static const char *const redefine_options[] = {
    "--xml FILE          a <domaincheckpoint> or a <checkpoints> list ('-':",
    "                    standard input); every bitmap must already be in the",
    "                    images, named like its checkpoint; all or nothing",
    NULL
};

static const char *const export_options[] = {
    "--output DIR        write DIR/NAME.xml per checkpoint (a",
    "                    <domaincheckpoint>; DIR made if missing, files never",
    "                    overwritten) and print, oldest first, the virsh",
    "                    checkpoint-create commands (in redefine mode) that",
    "                    give them to libvirt",
    "--domain NAME       with --output: the libvirt domain in those commands",
    "                    (default: the placeholder DOMAIN)",
    "--release           also hand the images back to libvirt's layout: every",
    "                    checkpoint's bitmap is made to cover all writes since",
    "                    it and records, ckptd's records are removed, and ckptd",
    "                    stops tracking the checkpoints (it lists none",
    "                    afterwards; `checkpoint adopt` takes them back)",
    NULL
};

static const char *const list_options[] = {
    "--tree              show the checkpoints as a tree under their parents",
    "--parent            add a PARENT column",
    "--size              add a SIZE column: bytes written since each one",
    "--roots             only checkpoints without a parent",
    "--leaves            only checkpoints without children",
    "--no-leaves         only checkpoints with children",
    "--from NAME         only the children of NAME",
    "--descendants       with --from: all descendants, not only children;",
    "                    alone: every checkpoint",
    "--topological       order parents before children",
    NULL
};

static const char *const size_options[] = {
    "--size              include the bytes written since the checkpoint",
    NULL
};

static const char *const delete_options[] = {
    "--children          also delete the checkpoint's descendants",
    "--children-only     delete the descendants but keep the checkpoint",
    NULL
};

static const char *const begin_options[] = {
    "--incremental C     export only what changed since checkpoint C (as",
    "                    the NBD meta context qemu:dirty-bitmap:BITMAP)",
    "--checkpoint NAME   create checkpoint NAME at the backup's point in time",
    "--description TEXT  with --checkpoint: stored with the checkpoint",
    "--disk DISK         back up DISK (repeatable; default: every disk, for",
    "                    --incremental too: a disk not in C, raw or not",
    "                    tracking is exported whole, with its reason)",
    "--strict            with --incremental: refuse if any disk would be",
    "                    exported whole",
    "--quiesce           freeze the guest's file systems around the backup's",
    "                    point in time (needs ckptd --qga)",
    "--scratch-dir DIR   fleecing scratch files go in DIR",
    "--server-socket PATH",
    "                    serve NBD on this Unix socket",
    "--tcp HOST:PORT     serve NBD over TCP (the agent must allow it)",
    "--xml FILE          the backup as libvirt <domainbackup mode='pull'> XML",
    "                    (<incremental>, <server>, <disks>), instead of the",
    "                    options above",
    "--checkpoint-xml FILE",
    "                    with --xml: a <domaincheckpoint> (name, description)",
    "                    created at the backup's point in time",
    NULL
};

static const char *const info_options[] = {
    "--xml               print the job as libvirt's backup-dumpxml would (a",
    "                    <domainbackup>; ID may be left out when one job runs)",
    NULL
};

static const char *const pull_options[] = {
    "--output DIR        write DIR/DISK.NAME.full.qcow2 (with --incremental:",
    "                    DIR/DISK.NAME.inc.qcow2 over the previous backup)",
    "--incremental C     copy only what changed since checkpoint C; needs",
    "                    DIR/DISK.C.full.qcow2 or DIR/DISK.C.inc.qcow2; a disk",
    "                    the agent exports whole (not in C, raw, not",
    "                    tracking) gets DIR/DISK.NAME.full.qcow2",
    "--strict            with --incremental: refuse if any disk would be",
    "                    copied whole",
    "--quiesce           freeze the guest's file systems around the backup's",
    "                    point in time (needs ckptd --qga)",
    "--checkpoint NAME   the new checkpoint (default: Unix time in seconds)",
    "--disk DISK         back up DISK (repeatable)",
    "--pull              copy over NBD from the agent's export, writing and",
    "                    checksumming the files as the data comes (the",
    "                    default: the fastest path measured, see BENCHMARKS.md)",
    "--push              have QEMU write the files instead: ckptctl opens them",
    "                    and passes them to the agent (getfd), no NBD; each",
    "                    file is then read once more for its checksum",
    "--requests N        over NBD: requests in flight (default 16, at",
    "                    most 256)",
    "--json              print the summary as JSON (as the global --json)",
    NULL
};

static const char *const restore_options[] = {
    "--disk DISK         the disk to restore (required)",
    "--checkpoint C      the backup at checkpoint C (default: the newest: of",
    "                    the files no other backup uses as backing file, the",
    "                    most recently modified)",
    "--output FILE       the image to write (required; never overwritten)",
    "--format FMT        raw or qcow2 (default qcow2)",
    NULL
};

static const char *const verify_options[] = {
    "--disk DISK         only the backups of DISK (with --against: the disk",
    "                    whose backup is compared)",
    "--checkpoint C      only the chain of the backup at checkpoint C (with",
    "                    --against: default the newest backup)",
    "--against OTHER     compare with an image file or an NBD URI instead of",
    "                    checking the recorded checksums (SHA-256 of each",
    "                    image file, as sha256sum prints it)",
    "--force-share       open images that are in use (qemu-img -U)",
    NULL
};

static const char *const changes_options[] = {
    "--from C            the checkpoint the changes are counted from (required)",
    "--to D              up to checkpoint D, a later one (default: up to now)",
    "--max-results N     extents per request to the agent (the list printed",
    "                    is always the whole one)",
    "--json              print {\"block-metadata\": [{\"byte-offset\",",
    "                    \"size-bytes\"}...], \"volume-capacity-bytes\"} (as",
    "                    the global --json)",
    NULL
};

static const char *const backups_options[] = {
    "--disk DISK         only the backups of DISK",
    NULL
};

/* The control surface: one entry per command, one file per family. */
static const struct ctl_cmd ctl_commands[] = {
    { "status", "", "show whether the agent and QEMU are up",
      NULL, ctl_cmd_status },
    { "version", "", "show the versions of ckptctl, the agent and QEMU",
      NULL, ctl_cmd_version },
    { "disks", "", "list the VM's disks and whether they can hold checkpoints",
      NULL, ctl_cmd_disks },
    { "disk snapshot", "[--checkpoint NAME [--description TEXT]] DISK=FILE...",
      "put a new qcow2 overlay FILE (next to the disk's image) on each DISK,"
      " carrying its checkpoints",
      snapshot_options, ctl_cmd_disk_snapshot },
    { "disk commit", "DISK",
      "merge DISK's top overlay into its backing image, checkpoints included;"
      " returns once the overlay is gone (see --timeout)",
      NULL, ctl_cmd_disk_commit },
    { "checkpoint create",
      "[--description TEXT] [--disk DISK]... [--quiesce] [NAME]\n"
      "| --xml FILE [--quiesce]",
      "create a checkpoint (the agent picks NAME when it is omitted)",
      create_options, ctl_cmd_checkpoint_create },
    { "checkpoint list",
      "[--tree] [--parent] [--size] [--roots] [--leaves]\n"
      "[--no-leaves] [--from NAME] [--descendants] [--topological]",
      "list checkpoints, oldest first",
      list_options, ctl_cmd_checkpoint_list },
    { "checkpoint info", "[--size] NAME", "show one checkpoint",
      size_options, ctl_cmd_checkpoint_info },
    { "checkpoint delete", "[--children | --children-only] NAME",
      "delete a checkpoint; later backups stay correct",
      delete_options, ctl_cmd_checkpoint_delete },
    { "checkpoint dumpxml", "[--size] NAME",
      "print a checkpoint as libvirt <domaincheckpoint> XML",
      size_options, ctl_cmd_checkpoint_dumpxml },
    { "checkpoint redefine", "FILE",
      "recreate checkpoints whose bitmaps the images hold, from libvirt XML",
      redefine_options, ctl_cmd_checkpoint_redefine },
    { "checkpoint adopt", "--xml FILE",
      "take over a VM checkpointed by libvirt (as redefine); prints them",
      redefine_options, ctl_cmd_checkpoint_redefine },
    { "checkpoint export-xml", "[--output DIR [--domain NAME]] [--release]",
      "print the checkpoints as libvirt XML, or write one file each",
      export_options, ctl_cmd_checkpoint_export_xml },
    { "backup begin",
      "[--incremental C] [--checkpoint NAME [--description TEXT]]\n"
      "[--disk DISK]... [--strict] [--quiesce] [--scratch-dir DIR]\n"
      "[--server-socket PATH | --tcp HOST:PORT]\n"
      "| --xml FILE [--checkpoint-xml FILE]",
      "start a pull backup; prints the job id and each disk's NBD URI",
      begin_options, ctl_cmd_backup_begin },
    { "backup end", "ID",
      "end a backup job: its exports, scratch files and bitmaps go away",
      NULL, ctl_cmd_backup_end },
    { "backup info", "[--xml] [ID]", "show one backup job, or all of them",
      info_options, ctl_cmd_backup_info },
    { "pull",
      "--output DIR [--incremental C] [--checkpoint NAME]\n"
      "[--disk DISK]... [--strict] [--quiesce] [--pull [--requests N] | --push]\n"
      "[--json]",
      "back up into DIR: copied over NBD (or --push: QEMU writes the files)",
      pull_options, ctl_cmd_pull },
    { "restore",
      "DIR --disk DISK [--checkpoint C] --output FILE [--format FMT]",
      "write a standalone image of DISK as it was at a backup in DIR",
      restore_options, ctl_cmd_restore },
    { "changes", "DISK --from C [--to D] [--max-results N] [--json]",
      "list the extents written on DISK since checkpoint C (up to checkpoint D,"
      " or now), without an NBD client",
      changes_options, ctl_cmd_changes },
    { "backups", "DIR [--disk DISK]",
      "list the backups in DIR: per disk, checkpoint, parent, type, time, size"
      " and whether the chain is complete",
      backups_options, ctl_cmd_backups },
    { "verify", "DIR [--disk DISK] [--checkpoint C]\n"
      "DIR --disk DISK [--checkpoint C] --against OTHER [--force-share]\n"
      "IMAGE --against OTHER [--force-share]",
      "check every file of the chains in DIR against the checksums pull"
      " recorded (exit 1 on a bad, missing or unrecorded file), or compare a"
      " backup with an image or live disk: identical (exit 0) or the first"
      " difference (1)",
      verify_options, ctl_cmd_verify },
    { "raw", "COMMAND ['{JSON-ARGS}']",
      "send any agent command and print what it returns, as JSON",
      NULL, ctl_cmd_raw },
    { "help", "[COMMAND]", "show this help, or one command's",
      NULL, ctl_cmd_help },
};

/* Exit codes as --help documents them; the enum in ckptctl.h is the source. */
static const struct { int code; const char *text; } ctl_exit_help[] = {
    { CTL_EXIT_OK, "success" },
    { CTL_EXIT_NOT_CONNECTED, "QEMU is not connected to the agent (NotConnected,"
      " or `status`\n       found qemu disconnected)" },
    { CTL_EXIT_USAGE, "usage error, or an argument the agent refused"
      " (InvalidParameter)" },
    { CTL_EXIT_UNREACHABLE, "the agent cannot be reached: no socket, not a ckptd"
      " socket,\n       no reply within the timeout, connection lost" },
    { CTL_EXIT_NOT_FOUND, "no such checkpoint, disk or job (NotFound)" },
    { CTL_EXIT_EXISTS, "the name is already taken (AlreadyExists)" },
    { CTL_EXIT_BUSY, "conflicts with a running backup job or another change"
      " (Busy)" },
    { CTL_EXIT_UNSUPPORTED, "the disk or QEMU cannot do it (Unsupported)" },
    { CTL_EXIT_INCONSISTENT, "a checkpoint's bitmap is inconsistent after a"
      " QEMU crash (Inconsistent)" },
    { CTL_EXIT_QEMU, "QEMU refused a command (QemuError)" },
    { CTL_EXIT_OTHER, "any other error (GenericError, CommandNotFound, a reply"
      " that ckptctl\n       does not understand, a failed write to stdout)" },
    { CTL_EXIT_LOCAL, "a local step failed: qemu-img or qemu-nbd, an NBD"
      " transfer, a file\n       or directory" },
    { CTL_EXIT_SIGINT, "pull was interrupted by SIGINT (the job was ended and"
      " its files removed)" },
    { CTL_EXIT_SIGTERM, "pull was stopped by SIGTERM (likewise)" },
};

/* --- usage and help --- */

/* Prints "PREFIX NAME ARGS"; a '\n' in ARGS continues under NAME. */
static void
ctl_print_synopsis(FILE *fp, const struct ctl_cmd *cmd, const char *prefix)
{
    int col = (int) (strlen(prefix) + strlen(cmd->name) + 1);

    fprintf(fp, "%s%s", prefix, cmd->name);
    if (*cmd->args)
        fputc(' ', fp);
    for (const char *p = cmd->args; *p; p++) {
        fputc(*p, fp);
        if (*p == '\n')
            fprintf(fp, "%*s", col, "");
    }
    fputc('\n', fp);
}

/* One command in the full help: synopsis, what it does, its options. */
static void
ctl_print_command_help(FILE *fp, const struct ctl_cmd *cmd)
{
    ctl_print_synopsis(fp, cmd, "  ");
    fprintf(fp, "      %s\n", cmd->help);
    for (const char *const *o = cmd->options; o && *o; o++)
        fprintf(fp, "        %s\n", *o);
}

/* `ckptctl CMD --help` and `ckptctl help CMD`. */
static void
ctl_print_usage(FILE *fp, const struct ctl_cmd *cmd)
{
    ctl_print_synopsis(fp, cmd, "Usage: ckptctl [GLOBAL-OPTIONS] ");
    fprintf(fp, "\n%c%s.\n", toupper((unsigned char) cmd->help[0]), cmd->help + 1);
    fputs("\nOptions:\n", fp);
    for (const char *const *o = cmd->options; o && *o; o++)
        fprintf(fp, "  %s\n", *o);
    fputs("  -h, --help          show this help\n"
          "\nSee 'ckptctl --help' for the global options and exit codes.\n", fp);
}

static void
ctl_print_help(FILE *fp)
{
    fputs("Usage: ckptctl [--socket PATH] [--json] [--timeout SEC] COMMAND [ARGS]...\n"
          "       ckptctl --help | --version\n"
          "\n"
          "Drives ckptd, the checkpoint and backup agent of a QEMU VM, through its\n"
          "control socket.\n"
          "\n"
          "Global options (before COMMAND):\n"
          "  -s, --socket PATH   the agent's control socket (default: $CKPTD_SOCKET,\n"
          "                      else the VM's of --vm or $CKPTD_VM, else\n"
          "                      " CTL_DEFAULT_SOCKET ")\n"
          "  -m, --vm NAME       the agent of VM NAME, where ckptd@NAME and\n"
          "                      launch-vm.sh put it: RUN/ckptd.sock with RUN\n"
          "                      $XDG_RUNTIME_DIR/ckptd/NAME, or /run/ckptd/NAME\n"
          "                      as root\n"
          "  -j, --json          print the agent's reply (its \"return\" value) as one\n"
          "                      line of compact JSON instead of text\n"
          "  -t, --timeout SEC   wait at most SEC seconds for each reply (default 60;\n"
          "                      0 waits forever)\n"
          "  --trust-uid UID     also talk to an agent running as UID (repeatable);\n"
          "                      by default only root's and your own are believed\n"
          "  -h, --help          show this help and exit\n"
          "  -V, --version       show ckptctl's version and exit\n"
          "\n"
          "Commands (each also takes -h/--help):\n", fp);
    for (size_t i = 0; i < ARRAY_SIZE(ctl_commands); i++)
        ctl_print_command_help(fp, &ctl_commands[i]);
    fputs("\n"
          "A checkpoint name that starts with '-' goes after '--', as in\n"
          "  ckptctl checkpoint delete -- -old\n"
          "\n"
          "Exit status:\n", fp);
    for (size_t i = 0; i < ARRAY_SIZE(ctl_exit_help); i++)
        fprintf(fp, "  %-3d  %s\n", ctl_exit_help[i].code, ctl_exit_help[i].text);
    fputs("  verify exits 1 when the images differ (as cmp does), or when a file\n"
          "  of a backup directory is corrupt, missing or has no checksum.\n", fp);
}

static void
ctl_short_usage(FILE *fp, const struct ctl_cmd *cmd)
{
    if (cmd) {
        ctl_print_synopsis(fp, cmd, "Usage: ckptctl [GLOBAL-OPTIONS] ");
        fprintf(fp, "Try 'ckptctl %s --help' for more information.\n", cmd->name);
    } else {
        fputs("Usage: ckptctl [--socket PATH] [--json] [--timeout SEC] COMMAND [ARGS]...\n"
              "Try 'ckptctl --help' for more information.\n", fp);
    }
}

int
ctl_usage_error(const struct ctl_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    CLEANUP_FREE char *msg = NULL;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (ctl_json_errors())      /* one JSON line, no usage text */
        return ctl_fail(CTL_EXIT_USAGE, "%s%s%s", ctx && ctx->cmd ? ctx->cmd->name : "",
                        ctx && ctx->cmd ? ": " : "", msg);
    fputs("ckptctl: ", stderr);
    if (ctx && ctx->cmd)
        fprintf(stderr, "%s: ", ctx->cmd->name);
    fprintf(stderr, "%s\n", msg);
    ctl_short_usage(stderr, ctx ? ctx->cmd : NULL);
    return CTL_EXIT_USAGE;
}

/* The global options, also used to spot one misplaced after the command. */
static const struct option ctl_global_options[] = {
    { "socket", required_argument, NULL, 's' },
    { "vm", required_argument, NULL, 'm' },
    { "json", no_argument, NULL, 'j' },
    { "timeout", required_argument, NULL, 't' },
    { "trust-uid", required_argument, NULL, 'U' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { 0 }
};

/* Why an option was not recognized, when we can guess. */
static const char *
ctl_option_hint(const struct ctl_cmd *cmd, const char *bad)
{
    size_t len = strcspn(bad, "=");

    for (const struct option *o = ctl_global_options; o->name; o++)
        if (len > 2 && strncmp(bad, "--", 2) == 0 &&
            strlen(o->name) == len - 2 && strncmp(bad + 2, o->name, len - 2) == 0)
            return " (a global option: it goes before the command)";
    if (strstr(cmd->args, "NAME"))
        return " (a name that starts with '-' goes after '--')";
    return "";
}

int
ctl_getopt(struct ctl_ctx *ctx, int argc, char **argv,
           const struct option *longopts)
{
    /* ':' first so a missing argument is told apart from an unknown option;
     * no '+', so options may follow operands ("create c1 --disk vda"). */
    int c = getopt_long(argc, argv, ":h", longopts, NULL);
    const char *bad = optind > 0 && optind <= argc ? argv[optind - 1] : "?";

    switch (c) {
    case 'h':
        ctl_print_usage(stdout, ctx->cmd);
        return 'h';
    case ':':
        ctl_usage_error(ctx, "option '%s' needs an argument", bad);
        return '?';
    case '?':
        ctl_usage_error(ctx, "unrecognized option '%s'%s", bad,
                        ctl_option_hint(ctx->cmd, bad));
        return '?';
    default:
        return c;
    }
}

int
ctl_operands(const struct ctl_ctx *ctx, int argc, char **argv, int min, int max)
{
    int n = argc - optind;

    if (n < min)
        return ctl_usage_error(ctx, "missing operand");
    if (n > max)
        return ctl_usage_error(ctx, "unexpected operand '%s'", argv[optind + max]);
    return CTL_EXIT_OK;
}

int
ctl_add_string(const struct ctl_ctx *ctx, json_t *to, const char *key,
               const char *value)
{
    json_t *s = json_string(value);

    if (!s)
        return ctl_usage_error(ctx, "%s is not valid UTF-8", key);
    if (json_is_array(to))
        json_array_append_new(to, s);
    else
        json_object_set_new(to, key, s);
    return CTL_EXIT_OK;
}

/* --- the command table --- */

static size_t
ctl_word_count(const char *name)
{
    size_t n = 1;
    for (const char *p = name; *p; p++)
        n += *p == ' ';
    return n;
}

/* Whether the first n words of `name` are argv[0..n). */
static bool
ctl_words_equal(const char *name, size_t n, char **argv)
{
    const char *p = name;

    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(p, " ");
        if (strlen(argv[i]) != len || memcmp(argv[i], p, len) != 0)
            return false;
        p += len;
        if (*p == ' ')
            p++;
    }
    return true;
}

static const struct ctl_cmd *
ctl_lookup(int argc, char **argv, size_t *words)
{
    for (size_t i = 0; i < ARRAY_SIZE(ctl_commands); i++) {
        size_t n = ctl_word_count(ctl_commands[i].name);
        if (n <= (size_t) argc && ctl_words_equal(ctl_commands[i].name, n, argv)) {
            *words = n;
            return &ctl_commands[i];
        }
    }
    return NULL;
}

/* Calls fn for each command whose name starts with the words argv[0..n);
 * returns how many there were. */
static size_t
ctl_each_prefixed(size_t n, char **argv,
                  void (*fn)(const struct ctl_cmd *cmd, void *opaque),
                  void *opaque)
{
    size_t found = 0;

    for (size_t i = 0; i < ARRAY_SIZE(ctl_commands); i++) {
        const struct ctl_cmd *cmd = &ctl_commands[i];
        if (ctl_word_count(cmd->name) > n && ctl_words_equal(cmd->name, n, argv)) {
            if (fn)
                fn(cmd, opaque);
            found++;
        }
    }
    return found;
}

static void
ctl_print_last_word(const struct ctl_cmd *cmd, void *opaque)
{
    fprintf(stderr, " %s", strrchr(cmd->name, ' ') + 1);
}

/* "checkpoint" alone or "checkpoint frob": name the family's commands. */
static int
ctl_unknown_command(int argc, char **argv)
{
    if (ctl_each_prefixed(1, argv, NULL, NULL) == 0)
        return ctl_usage_error(NULL, "unknown command '%s'", argv[0]);
    if (ctl_json_errors())
        return argc == 1 ? ctl_usage_error(NULL, "missing %s command", argv[0])
                         : ctl_usage_error(NULL, "unknown %s command '%s'",
                                           argv[0], argv[1]);
    if (argc == 1)
        fprintf(stderr, "ckptctl: missing %s command\n", argv[0]);
    else
        fprintf(stderr, "ckptctl: unknown %s command '%s'\n", argv[0], argv[1]);
    fprintf(stderr, "%s commands:", argv[0]);
    ctl_each_prefixed(1, argv, ctl_print_last_word, NULL);
    fputs("\nTry 'ckptctl --help' for more information.\n", stderr);
    return CTL_EXIT_USAGE;
}

static void
ctl_print_one_help(const struct ctl_cmd *cmd, void *opaque)
{
    ctl_print_command_help(stdout, cmd);
}

/* help [COMMAND...]: everything, one command, or one family. */
static int
ctl_cmd_help(struct ctl_ctx *ctx, int argc, char **argv)
{
    int c;
    size_t words;
    const struct ctl_cmd *cmd;
    static const struct option opts[] = { CTL_OPT_HELP, { 0 } };

    while ((c = ctl_getopt(ctx, argc, argv, opts)) != -1)
        return c == 'h' ? CTL_EXIT_OK : CTL_EXIT_USAGE;
    argc -= optind;
    argv += optind;
    if (argc == 0) {
        ctl_print_help(stdout);
        return CTL_EXIT_OK;
    }
    cmd = ctl_lookup(argc, argv, &words);
    if (cmd && words == (size_t) argc) {
        ctl_print_usage(stdout, cmd);
        return CTL_EXIT_OK;
    }
    if (ctl_each_prefixed((size_t) argc, argv, ctl_print_one_help, NULL) > 0)
        return CTL_EXIT_OK;
    return ctl_usage_error(ctx, "no command '%s'", argv[0]);
}

static int
ctl_dispatch(struct ctl_ctx *ctx, int argc, char **argv)
{
    size_t words;
    const struct ctl_cmd *cmd = ctl_lookup(argc, argv, &words);

    if (!cmd)
        return ctl_unknown_command(argc, argv);
    ctx->cmd = cmd;
    optind = 0;     /* GNU getopt: start afresh on the command's argv */
    return cmd->run(ctx, argc - (int) words + 1, argv + words - 1);
}

/* --- global options --- */

static int
ctl_parse_timeout(const char *s, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    /* The bound keeps SEC * 1000 inside poll()'s int milliseconds. */
    if (errno || end == s || *end || v < 0 || v > INT_MAX / 1000)
        return ctl_usage_error(NULL, "invalid --timeout '%s': seconds from 0"
                               " to %d expected", s, INT_MAX / 1000);
    *out = (int) v;
    return CTL_EXIT_OK;
}

/* --trust-uid: a number, or a user name. */
static int
ctl_parse_uid(const char *s, struct ctl_ctx *ctx)
{
    char *end;
    unsigned long v;
    struct passwd *pw;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (*s && !*end && !errno && v < (unsigned long) (uid_t) -1)
        ;
    else if ((pw = getpwnam(s)))
        v = pw->pw_uid;
    else
        return ctl_usage_error(NULL, "invalid --trust-uid '%s': a uid or a user"
                               " name expected", s);
    if (ctx->ntrust_uids == ARRAY_SIZE(ctx->trust_uids))
        return ctl_usage_error(NULL, "at most %zu --trust-uid options",
                               ARRAY_SIZE(ctx->trust_uids));
    ctx->trust_uids[ctx->ntrust_uids++] = (uid_t) v;
    return CTL_EXIT_OK;
}

/* Returns -1 to go on with the command, else the exit code. */
static int
ctl_parse_global(struct ctl_ctx *ctx, int argc, char **argv)
{
    int c, r;

    opterr = 0;     /* our own messages, each followed by a usage line */
    while ((c = getopt_long(argc, argv, "+:s:m:jt:hV", ctl_global_options,
                            NULL)) != -1) {
        switch (c) {
        case 's': ctx->socket_path = optarg; ctx->vm = NULL; break;
        case 'm': ctx->vm = optarg; break;
        case 'j': ctl_set_json(ctx); break;
        case 't':
            if ((r = ctl_parse_timeout(optarg, &ctx->timeout_sec)) != CTL_EXIT_OK)
                return r;
            break;
        case 'U':
            if ((r = ctl_parse_uid(optarg, ctx)) != CTL_EXIT_OK)
                return r;
            break;
        case 'h': ctl_print_help(stdout); return CTL_EXIT_OK;
        case 'V': puts("ckptctl " CKPTD_VERSION); return CTL_EXIT_OK;
        case ':':
            return ctl_usage_error(NULL, "option '%s' needs an argument",
                                   argv[optind - 1]);
        default:
            return ctl_usage_error(NULL, "unrecognized option '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return ctl_usage_error(NULL, "missing command");
    return -1;
}

/* A full disk or a closed pipe must not look like success to a script. */
static int
ctl_finish_output(int r)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = ctl_fail(CTL_EXIT_OTHER, "cannot write output: %s", strerror(errno));
        return r == CTL_EXIT_OK ? e : r;
    }
    return r;
}

/* The control socket of VM name, where the systemd unit and launch-vm.sh
 * put it (the launcher's non-root fallback is under /tmp). */
static void
ctl_vm_socket(const char *name, char *buf, size_t len)
{
    const char *run = getenv("XDG_RUNTIME_DIR");
    if (run && *run == '/')
        snprintf(buf, len, "%s/ckptd/%s/ckptd.sock", run, name);
    else
        snprintf(buf, len, "/run/ckptd/%s/ckptd.sock", name);
}

int
main(int argc, char **argv)
{
    const char *env = getenv("CKPTD_SOCKET"), *vm = getenv("CKPTD_VM");
    static char vm_path[4096];
    struct ctl_ctx ctx = {
        .socket_path = env && *env ? env : CTL_DEFAULT_SOCKET,
        .vm = !(env && *env) && vm && *vm ? vm : NULL,
        .timeout_sec = CTL_DEFAULT_TIMEOUT,
    };
    int r = ctl_parse_global(&ctx, argc, argv);
    if (ctx.vm) {
        ctl_vm_socket(ctx.vm, vm_path, sizeof vm_path);
        ctx.socket_path = vm_path;
    }

    if (r < 0) {
        r = ctl_dispatch(&ctx, argc - optind, argv + optind);
        ctl_disconnect(&ctx);
    }
    return ctl_finish_output(r);
}
