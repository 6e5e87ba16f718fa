/* ckptctl: the command-line client of ckptd.
 *
 * The tool is a small blocking QMP client plus a table of commands.  Each
 * command family lives in its own file and is one or more entries of the
 * table in main.c; adding a command (backup begin, pull, restore...) is
 * adding a handler and an entry.
 */
#ifndef CKPTD_CKPTCTL_H
#define CKPTD_CKPTCTL_H

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>

#include "common/common.h"

/* Exit codes: documented in --help and contrib/ckptctl.md; a script may
 * rely on them, so they never change meaning. */
enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_NOT_CONNECTED = 1,  /* QEMU is not connected to the agent */
    CTL_EXIT_USAGE = 2,          /* bad command line, or InvalidParameter */
    CTL_EXIT_UNREACHABLE = 3,    /* cannot connect, no reply, connection lost */
    CTL_EXIT_NOT_FOUND = 4,
    CTL_EXIT_EXISTS = 5,
    CTL_EXIT_BUSY = 6,
    CTL_EXIT_UNSUPPORTED = 7,
    CTL_EXIT_INCONSISTENT = 8,
    CTL_EXIT_QEMU = 9,
    CTL_EXIT_OTHER = 10,         /* GenericError, unknown class, bad reply */
    CTL_EXIT_LOCAL = 11,         /* a local step failed: qemu-img, qemu-nbd,
                                  * an NBD transfer, a file or directory */
    CTL_EXIT_DIFFERENT = 1,      /* verify only: the images differ (as cmp) */
    CTL_EXIT_SIGINT = 130,       /* pull stopped by SIGINT (128 + 2) */
    CTL_EXIT_SIGTERM = 143,      /* pull stopped by SIGTERM (128 + 15) */
};

struct ctl_conn;
struct ctl_cmd;

/* Everything a command handler needs: global options and the connection,
 * which is opened on the first call so that help never touches the socket. */
struct ctl_ctx {
    const char *socket_path;
    const char *vm;                 /* --vm NAME: socket_path from it */
    int timeout_sec;
    bool json;
    uid_t trust_uids[8];            /* --trust-uid: besides root and our own */
    size_t ntrust_uids;
    const struct ctl_cmd *cmd;      /* the command being run */
    struct ctl_conn *conn;          /* NULL until the first ctl_call */
};

/* One entry of the command table.  `name` may be several words
 * ("checkpoint create"); `run` gets argv starting at the last word, so
 * argv[0] is the subcommand and getopt_long can parse the rest. */
struct ctl_cmd {
    const char *name;
    const char *args;               /* synopsis after the name, for usage */
    const char *help;               /* one line for the command list */
    const char *const *options;     /* NULL-terminated "--opt  text" lines */
    int (*run)(struct ctl_ctx *ctx, int argc, char **argv);
};

/* --- main.c --- */
/* Every subcommand accepts -h/--help; put this last before the {0}. */
#define CTL_OPT_HELP { "help", no_argument, NULL, 'h' }
/* Parses a subcommand's options; returns the option value, -1 at the end
 * (operands start at optind), or '?' after printing a usage error.  Help
 * (-h/--help) is handled here: it prints the command's usage and returns
 * 'h' so the handler can return CTL_EXIT_OK. */
int ctl_getopt(struct ctl_ctx *ctx, int argc, char **argv,
               const struct option *longopts);
int ctl_usage_error(const struct ctl_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Adds a string to an object under `key`, or to an array (key then only
 * names the argument in the message).  json_string() refuses invalid
 * UTF-8, and an argument must never vanish silently: usage error. */
int ctl_add_string(const struct ctl_ctx *ctx, json_t *to, const char *key,
                   const char *value);
/* Checks the operand count after options; prints a usage error if off. */
int ctl_operands(const struct ctl_ctx *ctx, int argc, char **argv,
                 int min, int max);

/* --- conn.c --- */
/* Sends one agent command and waits for its reply.  `args` (may be NULL)
 * is consumed.  On success returns CTL_EXIT_OK and a new reference in *ret;
 * otherwise the error is already on stderr and the exit code is returned. */
int ctl_call(struct ctl_ctx *ctx, const char *command, json_t *args,
             json_t **ret);
/* The same with a descriptor passed along (SCM_RIGHTS), for getfd; the
 * caller keeps its own. */
int ctl_call_fd(struct ctl_ctx *ctx, const char *command, json_t *args, int fd,
                json_t **ret);
/* Waits up to ms for the event name whose data.id is id (also one that
 * came while a reply was awaited): *data (new reference), or NULL when
 * none came in time or a signal interrupted.  Needs a connection. */
int ctl_wait_event(struct ctl_ctx *ctx, const char *name, const char *id, int ms,
                   json_t **data);
void ctl_disconnect(struct ctl_ctx *ctx);
int ctl_exit_for_class(const char *error_class);

/* --- output.c --- */
/* The one way to fail: "ckptctl: MSG" on stderr; returns `code`.  After
 * ctl_set_json, the line is {"error": {"class": C, "desc": MSG}} instead,
 * C being the class the exit code stands for (see ctl_fail_class). */
int ctl_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* ctl_fail with the class known (an agent's error reply): NULL means the
 * exit code's. */
int ctl_fail_class(int code, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Something the user should know that is not an error: "ckptctl: MSG",
 * or {"note": MSG} with --json. */
void ctl_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* --json: output and errors as JSON from here on. */
void ctl_set_json(struct ctl_ctx *ctx);
bool ctl_json_errors(void);
/* A reply that does not have the shape the protocol promises. */
int ctl_bad_reply(const char *command, const char *what);
/* --json prints the reply as is; otherwise `print` renders it, with
 * `opaque` for the command's display options.  Both outputs come from the
 * same json_t, so they can never disagree. */
int ctl_output(const struct ctl_ctx *ctx, const char *command, json_t *ret,
               int (*print)(const char *command, json_t *ret,
                            const void *opaque),
               const void *opaque);
/* The usual command: ctl_call, then ctl_output of its reply. */
int ctl_call_print(struct ctl_ctx *ctx, const char *command, json_t *args,
                   int (*print)(const char *command, json_t *ret,
                                const void *opaque),
                   const void *opaque);
void ctl_print_json(json_t *j, size_t flags);
/* "512 B", "192 KiB", "1.0 GiB": one decimal below 10, none above. */
void ctl_human_size(uint64_t bytes, char *buf, size_t len);
/* Creates the missing directories of path (mode 0700: backups hold the
 * guest's disks): its parents, and path itself when `leaf`.  An error
 * names the directory that could not be made. */
int ctl_make_dirs(const char *path, bool leaf);
/* Local time as "YYYY-MM-DD HH:MM:SS". */
void ctl_format_time(json_int_t secs, char *buf, size_t len);

/* A table of left-aligned columns separated by two spaces; the last
 * column is not padded so lines carry no trailing blanks. */
DEFINE_VECTOR(ctl_row_vec, struct str_vec)
struct ctl_table {
    struct str_vec head;
    struct ctl_row_vec rows;
};
void ctl_table_head(struct ctl_table *t, const char *const *cols, size_t n);
void ctl_table_row(struct ctl_table *t);    /* starts a new row */
void ctl_table_cell(struct ctl_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctl_table_print(struct ctl_table *t);  /* prints and frees */
void ctl_table_free(struct ctl_table *t);

/* --- query.c --- */
int ctl_cmd_status(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_version(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_disks(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_raw(struct ctl_ctx *ctx, int argc, char **argv);

/* --- disk.c --- */
int ctl_cmd_disk_snapshot(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_disk_commit(struct ctl_ctx *ctx, int argc, char **argv);

/* --- checkpoint.c --- */
int ctl_cmd_checkpoint_create(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_checkpoint_list(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_checkpoint_info(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_checkpoint_delete(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_checkpoint_dumpxml(struct ctl_ctx *ctx, int argc, char **argv);

/* --- backup.c --- */
int ctl_cmd_backup_begin(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_backup_end(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_backup_info(struct ctl_ctx *ctx, int argc, char **argv);
/* backup-begin with `args` (consumed); *job is the reply, checked to be a
 * Backup job whose disks all have "disk", "uri" and "size". */
int ctl_backup_begin(struct ctl_ctx *ctx, json_t *args, json_t **job);
/* backup-end; tried once more on a new connection when the first one was
 * lost, because a job left running pins exports and scratch files. */
int ctl_backup_end(struct ctl_ctx *ctx, const char *id);

/* --- xml.c --- */
int ctl_cmd_checkpoint_redefine(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_checkpoint_export_xml(struct ctl_ctx *ctx, int argc, char **argv);
/* Reads the XML file `path` ("-": standard input), at most 1 MiB of UTF-8
 * without NUL bytes, into args[key].  Usage error (2) for a file that is
 * too large, empty or not UTF-8; CTL_EXIT_LOCAL when it cannot be read. */
int ctl_xml_file_arg(const struct ctl_ctx *ctx, json_t *args, const char *key,
                     const char *path);
/* Prints a {"xml": TEXT} reply as is, ending with a newline. */
int ctl_print_xml_reply(const char *command, json_t *ret, const void *opaque);

/* --- pull.c --- */
int ctl_cmd_pull(struct ctl_ctx *ctx, int argc, char **argv);

/* --- push.c: pull's default path, QEMU writing the files itself --- */
struct ctl_push_disk {
    char *disk;                     /* owned, like the strings below */
    char *file;                     /* DIR/D.C.{full,inc}.qcow2 */
    char *previous;                 /* the backing file's basename, or NULL */
    bool created;                   /* ours to remove if the backup fails */
    uint64_t copied;                /* bytes the file holds, once written */
    double seconds;
};
struct ctl_push {
    struct ctl_ctx *ctx;
    json_t *args;                   /* backup-begin's, without the targets */
    struct ctl_push_disk *disks;
    size_t n;
    volatile sig_atomic_t *stop;    /* a signal came: cancel */
    time_t begun;                   /* when backup-begin returned */
};
/* Creates the files, passes them to the agent, runs the push to its end
 * (*job: the begin's reply, or NULL).  CTL_EXIT_OK once every file is
 * written and flushed. */
int ctl_push_run(struct ctl_push *p, json_t **job);
void ctl_push_free(struct ctl_push *p);

/* --- restore.c --- */
int ctl_cmd_restore(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_verify(struct ctl_ctx *ctx, int argc, char **argv);
/* Child processes (qemu-img, qemu-nbd): found on PATH, run without a
 * shell, in their own process group so that Ctrl-C reaches only ckptctl,
 * which then cleans up in order.  ctl_spawn returns the pid or -1 (error
 * printed); stdout goes to out_fd unless it is -1. */
pid_t ctl_spawn(char *const argv[], int out_fd);
/* Waits for pid; CTL_EXIT_OK if it exited 0, else CTL_EXIT_LOCAL with a
 * message naming `name`.  With `status`, it gets the exit status (or -1
 * when killed) and a nonzero exit is the caller's to report. */
int ctl_wait(pid_t pid, const char *name, int *status);
/* ctl_spawn + ctl_wait. */
int ctl_run(char *const argv[]);
/* Runs argv with stdout into *out (NUL-terminated, at most 64 KiB kept);
 * *status as ctl_wait.  Nonzero exits are the caller's to judge. */
int ctl_run_capture(char *const argv[], char **out, int *status);

/* --- backupdir.c: a backup directory, read without a VM --- */
enum ctl_chain {
    CTL_CHAIN_COMPLETE,         /* every link there, ending at a full backup */
    CTL_CHAIN_MISSING,          /* a backing file is not in the directory */
    CTL_CHAIN_FOREIGN,          /* a backing file is not the one it was taken on */
    CTL_CHAIN_BROKEN,           /* not qcow2, no backing file, a loop */
};
/* One backup image DIR/D.C.{full,inc}.qcow2 and its record. */
struct ctl_bk {
    char *file;                 /* basename */
    char *disk, *checkpoint;    /* from the record, else from the name */
    bool full, qcow2;
    char *backing;              /* the qcow2 backing file name, or NULL */
    char *parent;               /* the checkpoint the backing link stands for */
    json_t *record;             /* FILE.json, NULL when absent */
    json_int_t time;            /* the record's, else the file's mtime */
    struct timespec mtime;
    uint64_t file_size, disk_usage, virtual_size;
    ssize_t base;               /* index of the backing backup, or -1 */
    bool chain_done;
    enum ctl_chain chain;
    char *why;                  /* one sentence when the chain is not complete */
    char *missing_file, *missing_checkpoint;    /* the first bad link */
};
DEFINE_VECTOR(ctl_bk_vec, struct ctl_bk)
struct ctl_bkdir {
    char *dir;
    struct ctl_bk_vec bk;       /* by disk, then time, then name */
};
/* Reads every backup image of dir and resolves the chains.  `disk` (may
 * be NULL) tells how to split names of images without a record. */
int ctl_bkdir_load(const char *dir, const char *disk, struct ctl_bkdir *out);
void ctl_bkdir_free(struct ctl_bkdir *d);
const char *ctl_chain_name(enum ctl_chain c);
/* The checkpoint in "D.C.full.qcow2" / "D.C.inc.qcow2" for disk D, or NULL. */
char *ctl_bk_name_checkpoint(const char *disk, const char *name);
char *ctl_bk_record_path(const char *image);
/* The JSON of one backup, as `backups --json` prints it. */
json_t *ctl_bk_json(const struct ctl_bkdir *d, const struct ctl_bk *b);
/* SHA-256 of a file's bytes (as sha256sum prints it), 64 hex digits. */
int ctl_sha256_file(const char *path, char hex[65]);
/* Writes image's record (IMAGE.json) atomically. */
int ctl_bk_write_record(const char *image, json_t *rec);
/* The "sha256" in the record of dir/name, or NULL. */
char *ctl_bk_recorded_sha256(const char *dir, const char *name);
char *ctl_bk_recorded_id(const char *dir, const char *name);

/* --- changes.c --- */
int ctl_cmd_changes(struct ctl_ctx *ctx, int argc, char **argv);

/* --- backups.c --- */
int ctl_cmd_backups(struct ctl_ctx *ctx, int argc, char **argv);
/* verify DIR: every file of every chain against its record. */
int ctl_verify_dir(struct ctl_ctx *ctx, const char *dir, const char *disk,
                   const char *checkpoint);

#endif
