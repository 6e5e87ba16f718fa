/* ckptd agent: the one context struct, clients, requests and the command
 * table.
 *
 * main.c:           signals, the loop
 * options.c:        opt_*      command line and config file
 * access.c:         access_*   safe directories, socket modes and group
 * lifecycle.c:      life_*     pidfile, readiness (file, sd_notify)
 * control.c:        ctl_*      the control socket: clients, framing, output
 * dispatch.c:       dispatch_* command table lookup, central argument
 *                              checks, per-client order, the change queue
 * reply.c:          req_*      replies, errors and events
 * vm.c:             vm_*       the QEMU connection: connect, reconnect, send
 * events.c:         vm_*       waiting for QEMU events
 * tree.c:           vm_*       the cached tree: re-read, replayed, lost
 * txn.c:            txn_*      the one path of every transaction
 * change.c:         change_*   a checkpoint change: transaction, reply
 * batch.c:          batch_*    several QMP commands, one completion
 * cmd-query.c:      query and negotiation commands
 * cmd-checkpoint.c: checkpoint-* commands
 * cmd-xml.c:        checkpoint-dumpxml, checkpoint-redefine (libvirt XML)
 * encode.c:         enc_*      checkpoint and disk objects as JSON
 * job.c:            job_*      a backup job's life: the state machine,
 *                              every ending, QEMU's events, the sweep
 * job-steps.c:      job_steps  the steps of a pull job, each with its undo
 * cmd-backup.c:     backup-begin (arguments), query-backup, backup-end
 * cmd-changes.c:    checkpoint-changes (extents, read through NBD)
 * cmd-fd.c:         getfd, closefd (descriptors passed on the control socket)
 * job-push.c:       push_*     the steps of a push job, each with its undo
 * quiesce.c:        quiesce_*  freeze, transaction, thaw (guest agent)
 * cmd-disk.c:       disk-snapshot, disk-commit (layers, bitmaps carried)
 * qemu-caps.c:      caps_*     what this QEMU offers (query-qmp-schema)
 * job-fleece.c:     fleece_*   the point-in-time view through ckptd's own
 *                              copy-before-write filter (steps, undos)
 */
#ifndef CKPTD_AGENT_H
#define CKPTD_AGENT_H

#include <ev.h>
#include <sys/types.h>

#include "common/common.h"
#include "metadata/metadata.h"
#include "qmp/qmp.h"

#define CTL_MAX_MESSAGE (1u << 20)      /* PROTOCOL.md: 1 MiB */
#define CTL_MAX_DEPTH 64
#define CTL_MAX_OUTPUT (16u << 20)      /* pending output before a client is dropped */
#define CTL_MAX_CLIENTS 256
#define CTL_MAX_FDS 16                  /* descriptors one client may hold */
#define CTL_HANDSHAKE_TIMEOUT 10.0      /* PROTOCOL.md: qmp_capabilities within 10 s */
#define QMP_RECONNECT_INTERVAL 0.5      /* seconds between connect attempts */
#define QMP_REPLY_TIMEOUT 60.0

struct agent;
struct client;
struct request;

/* --- the command table --- */
enum arg_type { ARG_STRING, ARG_BOOL, ARG_INT, ARG_STRING_LIST, ARG_OBJECT,
                ARG_OBJECT_LIST };

struct cmd_arg {
    const char *name;
    enum arg_type type;
    bool required;
};

enum cmd_flags {
    CMD_NEEDS_QEMU = 1 << 0,    /* NotConnected unless QEMU is ready */
    CMD_CHANGE     = 1 << 1,    /* goes through the one-at-a-time queue */
    CMD_BEFORE_CAPS = 1 << 2,   /* allowed before qmp_capabilities */
    CMD_FRESH      = 1 << 3,    /* a change planned on the tree read afresh */
    CMD_CAPS       = 1 << 4,    /* planned with the schema's caps (qemu-caps.c) */
};

enum cmd_result { CMD_DONE, CMD_WAIT };

/* Runs a validated request.  Either replies (req_reply/req_error) and
 * returns CMD_DONE, or returns CMD_WAIT and replies later from a callback. */
typedef enum cmd_result cmd_run_fn(struct request *req);

struct ckpt_cmd {
    const char *name;
    const struct cmd_arg *args;         /* NULL-name terminated; NULL = none */
    unsigned flags;
    cmd_run_fn *run;
};

extern const struct ckpt_cmd query_cmds[];
extern const struct ckpt_cmd checkpoint_cmds[];
extern const struct ckpt_cmd backup_cmds[];
extern const struct ckpt_cmd xml_cmds[];
extern const struct ckpt_cmd changes_cmds[];
extern const struct ckpt_cmd disk_cmds[];
extern const struct ckpt_cmd fd_cmds[];

/* --- one control connection --- */
struct client {
    struct agent *agent;
    int fd;
    uid_t uid;
    ev_io read_w, write_w;
    ev_timer hello_w;                   /* closes it if never negotiated */
    struct qmp_stream in;
    char *out;                          /* pending: out[out_sent, out_len) */
    size_t out_sent, out_len, out_cap;
    bool negotiated;
    bool closing;                       /* freed from the loop's prepare step */
    bool processing;                    /* inside dispatch_client_input */
    struct request *current;            /* the command being answered */
    int fds_in[CTL_MAX_FDS];            /* received (SCM_RIGHTS), not yet named */
    size_t nfds_in;
    struct ctl_named_fd {               /* getfd: named, until a backup takes it */
        char *name;
        int fd;
    } fds[CTL_MAX_FDS];
    size_t nfds;
    struct client *next;
};

/* --- one command being answered --- */
struct request {
    struct agent *agent;
    struct client *client;              /* NULL once the client went away */
    const struct ckpt_cmd *cmd;
    json_t *id;                         /* echoed verbatim; may be NULL */
    json_t *args;                       /* always an object */
    void *state;                        /* the command's own, freed by it */
    struct request *next;               /* in the change queue */
};

/* Debug hooks: the CKPTD_DEBUG_* variables, read once by opt_parse
 * (options.c) and nowhere else. */
struct agent_debug {
    long abort_after;                   /* CKPTD_DEBUG_ABORT_AFTER: abort()
                                         * before the Nth QMP command */
    bool verify_tree;                   /* CKPTD_DEBUG_VERIFY_TREE */
    double handshake_timeout;           /* CKPTD_DEBUG_HANDSHAKE_TIMEOUT:
                                         * seconds, instead of 10 */
    bool no_filter;                     /* CKPTD_DEBUG_NO_FILTER: fleece
                                         * through a backup job, as on a
                                         * QEMU without the filter's options */
    long long push_speed;               /* CKPTD_DEBUG_PUSH_SPEED: bytes/s
                                         * a push job copies at (tests:
                                         * writes land during the copy) */
};

/* --- the agent: all mutable state lives here --- */
struct agent_options {                  /* every string owned */
    char *qmp_path;
    char *control_path;
    char *scratch_dir;                  /* where scratch files may go */
    char *backup_dir;                   /* push {"file"} targets: NULL for none */
    char *nbd_socket;                   /* default NBD server socket */
    char *pidfile, *ready_file;         /* NULL: none */
    char *tls_dir;                      /* x509 files for NBD over TCP */
    char *qga_path;                     /* the guest agent's socket, or NULL */
    char tag[9];                        /* this VM's mark on shared files */
    bool insecure_tcp;                  /* allow TCP NBD without TLS */
    bool exit_with_qemu;
    double qmp_timeout;                 /* seconds QEMU has to answer */
    uint64_t scratch_reserve;           /* bytes kept free in scratch dirs */
    enum log_level log_level;
    enum log_format log_format;
    uid_t allow_uids[16];               /* besides our own and root */
    size_t nallow_uids;
    char *socket_group;                 /* --socket-group: NULL for none */
    gid_t socket_gid;                   /* its gid, when socket_group */
    struct agent_debug debug;
};

/* --- one backup job (job.c, job-steps.c) --- */
struct job_disk {
    char *disk;                         /* the disk's name: never an index */
    char *node;                         /* its format node when planned */
    char *scratch;                      /* scratch file we created, or NULL */
    char *bitmap;                       /* temporary bitmap, or NULL (full) */
    char *reason;                       /* copied in full in an incremental: why */
    char *qdev;                         /* the device moved onto our filter */
    uint64_t size;
    uint64_t granularity;
    /* push only (job-push.c) */
    char *target;                       /* {"file"}: the final path, or NULL */
    char *fdname;                       /* {"fd"}: the client's name, or NULL */
    char *backing;                      /* backing file name for the header */
    char *partial;                      /* the file we write until it is done */
    int fd;                             /* the target, ours (-1: none) */
    long long fdset;                    /* QEMU's fd set for it, or -1 */
    uint64_t current, total;            /* progress, from query-jobs */
    bool copied;                        /* its block job completed */
};

enum job_state { JOB_STARTING, JOB_RUNNING, JOB_ENDING };

struct backup_job {
    struct agent *agent;
    char *id;                           /* "backup-N" */
    long long num;                      /* N (-1: the sweep) */
    enum job_state state;
    bool sweep;                         /* stands for every object of ours */
    int started;                        /* forward steps begun */
    bool stop;                          /* unwind once that batch is back */
    int undo_next;                      /* the next step to undo */
    int undo_again;
    bool relist;                        /* list QEMU again before it */
    char *end_status;                   /* completed, cancelled, failed */
    char *undo_error;                   /* the first undo QEMU refused */
    bool txn_accepted;                  /* the new checkpoint exists */
    bool quiesce, quiesced;             /* asked for; done */
    long frozen_ms;
    bool committed;                     /* it ran: the new checkpoint stays */
    bool own_filter;                    /* fleecing through our own
                                         * copy-before-write filter, not a
                                         * backup job (job-fleece.c) */
    bool watch_resume, vm_resumed;      /* RESUME seen while it began */
    char *incremental, *checkpoint;     /* NULL when absent */
    char *ckpt_desc;
    json_t *ckpt_disks;                 /* the new checkpoint's, if given */
    int64_t now;
    json_t *server;                     /* the NBD server it is exported on */
    bool start_server, server_started;
    struct job_disk *disks;
    size_t ndisks;
    char *scratch_dir;                  /* where its scratch files are */
    struct str_vec files;               /* scratch files to remove */
    json_t *exports, *qjobs, *nodes;    /* QEMU's listing, for the undos */
    json_t *blocks, *graph;             /* and, with our own filter, the
                                         * devices and the block graph */
    bool qemu_gone;                     /* QEMU went away mid-step */
    bool announced;                     /* BACKUP_BEGIN was sent */
    bool resume_vm;                     /* an I/O error paused the guest */
    char *failure;                      /* why it ended, for BACKUP_END */
    char *error;                        /* why it did not start */
    enum ckpt_err error_class;          /* of error: QemuError unless set */
    struct request *begin_req, *end_req;/* waiting for it, or NULL */
    bool undid;                         /* its undos sent QEMU commands */
    bool unexported;                    /* its exports asked to go, early */
    bool unexport_refused;              /* and QEMU refused one */
    void (*swept)(struct agent *a, void *opaque);   /* the sweep's end */
    void *swept_opaque;
    bool push;                          /* QEMU copies into targets */
    const struct job_step *steps;       /* job_steps or push_steps */
    int nsteps;
    json_t *fdsets;                     /* QEMU's listing, for the undos */
    struct backup_job *next;
};

/* One step of a job: run adds its QMP commands to the batch (or sets
 * job->error); undo adds the commands that remove what the step made.
 * Steps share one batch (one round trip: QEMU runs a connection's
 * commands in order) up to a barrier: a step whose answers the next one
 * reads, or whose end (an awaited event) the next one's commands need. */
enum undo_result {
    UNDO_DONE,                          /* the next undo may follow at once */
    UNDO_WAIT,                          /* the next undo waits for this batch */
    UNDO_AGAIN,                         /* list QEMU again, then run me again */
};
struct batch;
struct job_step {
    const char *name;
    bool barrier;                       /* when it sent anything */
    void (*run)(struct backup_job *job, struct batch *b);
    enum undo_result (*undo)(struct backup_job *job, struct batch *b);
};
extern const struct job_step job_steps[];
extern const int job_nsteps;
extern const struct job_step push_steps[];
extern const int push_nsteps;

struct agent;
typedef void quiesce_cb(struct agent *a, const struct qmp_error *err, void *opaque);

/* The guest's file systems frozen around a transaction (quiesce.c). */
struct quiesce_state {
    bool freezing, frozen, thawing;
    bool watchdog_fired;                /* thawed before the transaction's answer */
    double frozen_at;                   /* ev_now when the freeze returned */
    long frozen_ms;                     /* of the last freeze, once thawed */
    ev_timer watchdog;                  /* thaws after 10 s whatever happens */
    quiesce_cb *thaw_cb;
    void *thaw_opaque;
};

/* What this QEMU offers beyond 7.2's baseline (qemu-caps.c). */
struct qemu_caps {
    bool asked;                         /* the schema asked for, this connection */
    bool cbw_break;                     /* copy-before-write on-cbw-error */
    bool cbw_timeout;                   /* copy-before-write cbw-timeout */
    bool cbw_min_cluster;               /* copy-before-write min-cluster-size */
    bool snapshot_access;               /* the snapshot-access driver */
    bool qom_set;
    bool block_graph;                   /* x-debug-query-block-graph */
};

struct agent {
    struct ev_loop *loop;
    struct agent_options opt;
    int listen_fd;
    ev_io accept_w;
    ev_timer accept_pause_w;            /* out of fds: accept again later */
    ev_prepare reap_w;                  /* frees closing clients */
    ev_signal sigterm_w, sigint_w, sighup_w;
    ev_timer reconnect_w;
    ev_timer incoming_w;                /* polls an incoming migration's end */
    ev_timer trim_w;                    /* malloc_trim after a re-read */
    ev_timer caps_w;                    /* the schema, read soon after ready */
    bool incoming;                      /* a migration's destination, not yet run */
    ev_timer scratch_w;                 /* watches scratch space of backups */
    struct client *clients;
    size_t nclients;

    struct qmp *qmp;                    /* NULL while disconnected */
    bool connecting;                    /* a connect attempt is under way */
    bool qemu_ready;                    /* connected and tree read */
    bool qemu_shutting_down;            /* SHUTDOWN seen on this connection */
    bool stopping;
    json_t *qemu_version;
    struct qemu_caps caps;              /* of the QEMU connected now */
    struct meta_tree tree;
    char *tree_sig;                     /* the block graph the tree was read
                                         * from (vm_graph_signature) */
    char new_chain[META_CHAIN_LEN + 1]; /* the id a first checkpoint gets */
    struct event_waiter *waiters;
    struct str_vec live_jobs;           /* QEMU's job ids (qjobs.c) */
    bool live_jobs_known;               /* listed on this connection */
    struct str_vec known;               /* checkpoint names when QEMU left */
    struct str_vec lost;                /* known then, gone after it came back */
    struct qga *qga;                    /* the guest agent, or NULL */
    json_t *commands;                   /* query-commands' answer, built once */
    struct quiesce_state quiesce;
    long qmp_sent;                      /* commands sent, for CKPTD_DEBUG_ABORT_AFTER */
    struct backup_job *jobs;
    long long last_job;                 /* the newest job's number */
    json_t *nbd_server;                 /* the running server's address */

    struct request *change_active;      /* the change in flight */
    struct request *change_head, *change_tail;
    bool kicking;
    bool shutting_down;
    bool was_ready;                     /* readiness announced */
    int exit_code;
};

/* --- options.c --- */
int opt_parse(int argc, char **argv, struct agent_options *o);
void opt_free(struct agent_options *o);

/* --- access.c --- */
/* 0 when dir (or, while it does not exist, its nearest existing parent)
 * and every directory above it are owned by root or the agent's user and
 * not writable by group or others without the sticky bit; else -1 and
 * the reason in why. */
int access_check_dir(const char *dir, char *why, size_t len);
/* The control, NBD socket and scratch directories, checked at start-up;
 * -1 (reasons logged) when one is unsafe. */
int access_check_dirs(const struct agent *a);
/* Creates dir (and missing parents, 0755) when missing: 0700, or 0710
 * with the socket group. */
int access_make_dir(const struct agent *a, const char *dir);
/* Gives a socket the agent serves on (control, or the NBD socket QEMU
 * created) its mode: 0600, or 0660 and the --socket-group group. */
int access_socket(const struct agent *a, const char *path);

/* --- lifecycle.c --- */
int life_write_pidfile(struct agent *a);
void life_ready(struct agent *a);       /* QEMU connected: once */
void life_cleanup(struct agent *a);

/* --- control.c --- */
int ctl_listen(struct agent *a);
void ctl_close_listener(struct agent *a);
void ctl_send(struct client *c, json_t *msg);       /* steals msg */
void ctl_send_text(struct client *c, const char *s, size_t len); /* one message */
size_t ctl_pending(const struct client *c);         /* output bytes not sent yet */
void ctl_drop(struct client *c, const char *why);
void ctl_resume(struct client *c);                  /* read again once idle */
/* Takes a connected socket as a client (accept, and the fuzz harness). */
struct client *ctl_add_client(struct agent *a, int fd, uid_t uid);
void ctl_reap(struct agent *a);                     /* frees closed clients */
void ctl_broadcast(struct agent *a, json_t *msg);   /* steals msg */
/* The descriptor a client named with getfd, now the caller's; -1 if none. */
int ctl_take_fd(struct client *c, const char *name);
/* The same, borrowed: the client keeps it. */
int ctl_find_fd(const struct client *c, const char *name);

/* --- dispatch.c --- */
void dispatch_client_input(struct client *c);
void dispatch_request_done(struct request *req);
const struct ckpt_cmd *dispatch_find(const char *name);
void dispatch_for_each(void (*fn)(const struct ckpt_cmd *, void *), void *opaque);

/* --- reply.c --- */
/* {"return": ret} (steals ret).  A NULL ret is a value the command could
 * not build: the client gets a GenericError saying so, never {}.  empty:
 * NULL stands for {} (see req_reply). */
void req_reply_value(struct request *req, json_t *ret, bool empty);
/* {"return": {}}: the command succeeded and has nothing to return. */
void req_reply_ok(struct request *req);
/* {"return": TEXT}: ret_text is the value already encoded as JSON (a
 * large list built as text).  NULL fails as req_reply(req, NULL) does. */
void req_reply_text(struct request *req, const char *ret_text, size_t len);
/* req_reply(req, v): a value that is NULL is a failure (a GenericError
 * reply, never a silent {}); a command with nothing to return says
 * req_reply_ok. */
#define req_reply(req, ret) req_reply_value((req), (ret), false)
/* A GenericError reply saying that the reply to what could not be built. */
json_t *req_unbuildable(json_t *id, const char *what);
void req_error(struct request *req, enum ckpt_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void req_fail(struct request *req, const struct ckpt_error *e);
/* Maps a QMP failure to our class: QemuError, NotConnected or timeout. */
void req_qmp_error(struct request *req, const struct qmp_error *err,
                   const char *what);
json_t *req_error_message(enum ckpt_err code, const char *desc, json_t *id);
void agent_event(struct agent *a, const char *event, json_t *data); /* steals */

/* --- vm.c --- */
void vm_start(struct agent *a);
void vm_stop(struct agent *a);
/* Gives freed pages back once the current callbacks return (tree.c):
 * after parsing a large answer. */
void vm_trim_soon(struct agent *a);
/* qjobs.c: the jobs QEMU runs, followed by events */
void qjobs_list(struct agent *a);
void qjobs_forget(struct agent *a);
void qjobs_event(struct agent *a, const char *event, json_t *data);
bool qjobs_any(const struct agent *a, bool (*match)(const char *id, const void *opaque),
               const void *opaque);
/* Sends a command; a thin wrapper that fails at once when disconnected. */
void vm_send(struct agent *a, const char *cmd, json_t *args,
             qmp_reply_cb *cb, void *opaque);
/* The same with a descriptor for QEMU (add-fd), owned by it from now on. */
void vm_send_fd(struct agent *a, const char *cmd, json_t *args, int fd,
                qmp_reply_cb *cb, void *opaque);

/* --- tree.c --- */
/* Re-reads disks, bitmaps and checkpoints from QEMU, then calls cb with
 * the tree updated (err == NULL) or the QMP error. */
typedef void vm_refresh_cb(struct agent *a, const struct qmp_error *err,
                           void *opaque);
void vm_refresh(struct agent *a, vm_refresh_cb *cb, void *opaque);
/* The devices and their node chains in query-blockstats' answer, as
 * text: when it equals a->tree_sig, the tree's disks are the VM's. */
char *vm_graph_signature(json_t *blockstats);
/* After a transaction QEMU accepted: its actions replayed on the tree (no
 * round trip), or, when they cannot be replayed or actions is NULL, the
 * tree re-read.  Under CKPTD_DEBUG_VERIFY_TREE every replay is checked
 * against a re-read, and a difference aborts. */
void vm_tree_after(struct agent *a, json_t *actions, vm_refresh_cb *cb,
                   void *opaque);
/* Gives the tree a chain id to write when the images have none yet: the
 * one derived from an earlier ckptd's records, else a new random one
 * (written with the first checkpoint).  After every tree update. */
void vm_settle_chain(struct agent *a);
/* Checkpoints known before QEMU left and missing after it came back. */
void vm_note_lost(struct agent *a);
/* Answers NotFound, saying why, when name is a checkpoint that vanished
 * in a QEMU crash; returns true if it did. */
bool vm_reply_if_lost(struct request *req, const char *name);


/* --- events.c --- */
/* Waits for a QEMU event whose data has every member of match (stolen);
 * cb gets the data, or NULL after timeout seconds or on disconnect. */
typedef void vm_event_cb(struct agent *a, json_t *data, void *opaque);
struct event_waiter *vm_wait_event(struct agent *a, const char *event,
                                   json_t *match, double timeout,
                                   vm_event_cb *cb, void *opaque);
/* Forgets a waiter that has not fired; its callback never runs. */
void vm_cancel_wait(struct agent *a, struct event_waiter *w);
/* Fires the waiters of event (all of them with NULL when event is NULL:
 * QEMU went away). */
void vm_fire_waiters(struct agent *a, const char *event, json_t *data);

/* --- txn.c --- */
/* Sends a transaction (steals actions); when cb runs, the cached tree is
 * what QEMU holds (err: QEMU's refusal, or the connection lost). */
typedef void txn_done_cb(struct agent *a, const struct qmp_error *err,
                         void *opaque);
void txn_send(struct agent *a, json_t *actions, txn_done_cb *cb, void *opaque);

/* --- batch.c --- */
/* err is NULL when every command succeeded, else the first failure. */
typedef void batch_done_cb(const char *err, void *opaque);
typedef void batch_reply_cb(json_t *ret, void *opaque);
struct batch {
    struct agent *agent;
    int pending;
    bool armed, settled;
    bool quiet;                 /* failures are logged, not reported */
    char *err_desc;
    batch_done_cb *done;
    void *opaque;
};
struct batch *batch_new(struct agent *a, batch_done_cb *done, void *opaque);
void batch_send(struct batch *b, const char *cmd, json_t *args,
                batch_reply_cb *cb, void *opaque);
void batch_send_fd(struct batch *b, const char *cmd, json_t *args, int fd,
                   batch_reply_cb *cb, void *opaque);
/* A command whose refusal is no failure of the batch (logged only). */
void batch_send_optional(struct batch *b, const char *cmd, json_t *args,
                         batch_reply_cb *cb, void *opaque);
void batch_expect_event(struct batch *b, const char *event, json_t *match,
                        double timeout);
/* cmd and the event it causes; no wait when QEMU refuses cmd. */
void batch_send_expect(struct batch *b, const char *cmd, json_t *args,
                       const char *event, json_t *match, double timeout);
/* The same, where a refusal only sets *refused. */
void batch_send_expect_optional(struct batch *b, const char *cmd, json_t *args,
                                const char *event, json_t *match, double timeout,
                                bool *refused);
/* Something else the batch waits for: one hold, one release. */
void batch_hold(struct batch *b);
void batch_release(struct batch *b, const char *err);
/* No more commands: done runs once all have answered (at once if none
 * is pending). */
void batch_arm(struct batch *b);

/* --- job.c --- */
struct backup_job *job_new(struct agent *a);        /* not yet in a->jobs */
void job_free(struct backup_job *job);
/* Adds the job to a->jobs and runs its steps; the begin request (if
 * set) is answered when it runs or has failed and unwound. */
void job_start(struct backup_job *job);
/* Ends a job wherever it is: status for BACKUP_END, why (stolen, may be
 * NULL) its error.  A job already ending goes on as it is. */
void job_stop(struct backup_job *job, const char *status, char *why);
void job_unwind(struct backup_job *job);
void job_list_qemu(struct backup_job *job, struct batch *b);
struct backup_job *job_find(struct agent *a, const char *id);
size_t job_count(const struct agent *a);
bool job_disk_busy(const struct agent *a, const char *disk);
const struct backup_job *job_holding_checkpoint(const struct agent *a,
                                                const char *name);
json_t *job_encode(const struct backup_job *job);
void job_qemu_event(struct agent *a, const char *event, json_t *data);
void job_qemu_gone(struct agent *a);
void job_watch_scratch(struct agent *a);
/* SIGTERM: ends every job; the loop stops once the last is gone. */
void job_end_all(struct agent *a);
/* Removes every temporary object and scratch file of ours (start-up,
 * reconnect), with the same undos; then done. */
void job_sweep_all(struct agent *a, void (*done)(struct agent *, void *),
                   void *opaque);

/* --- quiesce.c --- */
/* Can the guest be frozen now?  Else false with e set (Unsupported). */
bool quiesce_available(const struct agent *a, struct ckpt_error *e);
void quiesce_freeze(struct agent *a, quiesce_cb *cb, void *opaque);
/* Idempotent; cb (may be NULL) once thawed, or at once if not frozen. */
void quiesce_thaw(struct agent *a, quiesce_cb *cb, void *opaque);
/* txn_send between a freeze and a thaw: cb runs after the thaw, with the
 * transaction's error, or GuestAgentError when the freeze failed (then
 * the transaction was not sent). */
void quiesce_txn_send(struct agent *a, json_t *actions, txn_done_cb *cb,
                      void *opaque);

/* --- lifecycle.c (continued) --- */
/* SIGTERM: exits the loop once no job runs and the guest is thawed. */
void agent_maybe_exit(struct agent *a);

/* --- job-steps.c --- */
/* The begin transaction of job against tree t. */
enum ckpt_err job_plan_transaction(const struct backup_job *job,
                                   const struct meta_tree *t, json_t *actions,
                                   struct ckpt_error *e);

/* --- qemu-caps.c --- */
/* Asks for the schema once per connection; its answer fills a->caps
 * (none of them when QEMU cannot say), before the answer to anything
 * sent after it. */
void caps_probe(struct agent *a);
/* What query-qmp-schema's answer offers (pure: unit-tested). */
void caps_from_schema(struct qemu_caps *c, json_t *schema);
/* Pull backups may fleece through ckptd's own copy-before-write filter. */
bool caps_own_filter(const struct agent *a);

/* --- job-fleece.c --- */
/* Whether job (its disks chosen) fleeces through its own filter. */
bool fleece_choose(const struct agent *a, const struct backup_job *job);
/* The listing the filter's undos need (job_list_qemu). */
void fleece_list_qemu(struct backup_job *job, struct batch *b);
void fleece_run_state(struct backup_job *job, struct batch *b);
enum undo_result fleece_undo_state(struct backup_job *job, struct batch *b);
/* Why a begin of several disks cannot go on (the guest ran), or NULL. */
const char *fleece_begin_invalid(const struct backup_job *job);
void fleece_run_filters(struct backup_job *job, struct batch *b);
enum undo_result fleece_undo_filters(struct backup_job *job, struct batch *b);
void fleece_run_switch(struct backup_job *job, struct batch *b);
enum undo_result fleece_undo_switch(struct backup_job *job, struct batch *b);
void fleece_run_view(struct backup_job *job, struct batch *b);
enum undo_result fleece_undo_view(struct backup_job *job, struct batch *b);
void fleece_run_unexported(struct backup_job *job, struct batch *b);
enum undo_result fleece_undo_unexported(struct backup_job *job, struct batch *b);
/* A running job whose scratch directory has free bytes left: the reason
 * the view broke (caller frees), or NULL. */
char *fleece_broken(const struct backup_job *job, uint64_t free_bytes);
/* Shared with the push steps (job-push.c). */
bool job_id_is_mine(const struct backup_job *job, const char *id);
/* The image-creation job of disk k (new string), and the step that
 * dismisses every disk's. */
char *job_create_job_id(const struct backup_job *job, size_t k);
void job_run_dismiss(struct backup_job *job, struct batch *b);
void job_remove_files(struct backup_job *job);
void job_unexport_early(struct backup_job *job, struct batch *b);
bool job_listed(const struct backup_job *job, json_t *entry, const char **id,
                const char **status, const char **type);
bool job_node_is_mine(const struct backup_job *job, const char *node, char kind);
void job_delete_nodes(struct backup_job *job, struct batch *b, char kind);
void job_send_transaction(struct backup_job *job, struct batch *b, json_t *actions);
enum undo_result job_undo_transaction(struct backup_job *job, struct batch *b);
enum undo_result job_undo_create_jobs(struct backup_job *job, struct batch *b);
void job_find_stale_files(struct backup_job *job, const char *dir);

/* --- job-push.c --- */
/* backup-begin mode=push: the targets argument checked and taken into
 * job (files inside --backup-dir, or descriptors the client passed). */
enum ckpt_err push_targets(struct request *req, struct backup_job *job,
                           struct ckpt_error *e);
/* A push job's block job ended (BLOCK_JOB_COMPLETED/CANCELLED) on disk k. */
void push_job_event(struct backup_job *job, size_t k, const char *event,
                    json_t *data);
/* Every disk copied: the job ends, completed. */
void push_check_done(struct backup_job *job);
/* Fills the push jobs' progress from query-jobs. */
void push_progress(struct agent *a, json_t *qjobs);
void push_encode_disk(const struct job_disk *d, json_t *jd);

/* --- change.c --- */
struct change {
    struct request *req;
    char *name;                         /* the checkpoint created, or asked */
    struct str_vec names;               /* deleted or redefined */
    char *qemu_class, *qemu_desc;       /* QEMU's refusal, kept for the reply */
    void (*finish)(struct change *ch);  /* replies once the tree is fresh */
    /* Optional: plans again on the fresh tree after QEMU refused, to name
     * the cause (a bitmap added behind our back) with our own class. */
    bool quiesce;                       /* freeze the guest around it */
    enum ckpt_err (*replan)(struct change *ch, struct ckpt_error *e);
    /* Optional: plans the change into actions on the current tree.  Set,
     * it runs again once when QEMU refused the first plan (the tree was
     * stale: change.c), and the second plan is sent. */
    enum ckpt_err (*plan)(struct change *ch, json_t *actions,
                          struct ckpt_error *e);
    bool retried;
    json_t *planned;                    /* the plan sent, without guards */
    int64_t now;                        /* the creation time planned */
};
struct change *change_new(struct request *req, const char *name,
                          void (*finish)(struct change *ch));
/* Sends the transaction (steals actions); finish runs, then ch is freed. */
void change_send(struct change *ch, json_t *actions);
/* True, and the request answered, when QEMU refused the change. */
bool change_reply_qemu_error(struct change *ch, const char *what);
void change_free(struct change *ch);
/* Runs a queued change: CMD_FRESH ones once the tree is read again. */
void change_run(struct request *req);

/* --- cmd-xml.c --- */
/* Turn an "xml" argument into the command's JSON arguments; false when
 * the request was answered with an error. */
bool xml_create_args(struct request *req);
bool xml_backup_args(struct request *req);
char *xml_backup_dump(const struct backup_job *job);

/* --- encode.c --- */
json_t *enc_disk(const struct meta_disk *d);
json_t *enc_checkpoint(const struct meta_tree *t, size_t i, bool with_size);
/* JSON text being built: p[0, len) NUL-terminated; bad when a string was
 * not UTF-8 (the text must not be sent). */
struct enc_buf {
    char *p;
    size_t len, cap;
    bool bad;
};
void enc_raw(struct enc_buf *b, const char *s, size_t n);
/* Appends checkpoint i as the text of enc_checkpoint's object. */
void enc_checkpoint_text(struct enc_buf *b, const struct meta_tree *t, size_t i,
                         bool with_size);

#endif
