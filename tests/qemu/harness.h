/* ckptd integration tests: one shared helper that runs QEMU (no guest,
 * CPUs stopped) and the agent in a private temporary directory, talks QMP
 * to both, and kills and removes everything on exit, also when a test fails
 * or the test program is killed.  Synchronous and blocking on purpose: a
 * test reads like the sequence of commands it sends.
 *
 * Everything here is driven through public interfaces only: QEMU's QMP,
 * qemu-img/qemu-io, and the agent's control socket (PROTOCOL.md).
 *
 * runner:  hq_run, hq_fail, HQ_CHECK  - cases, results, the summary line
 * qmp:     hq_conn_*, hq_exec, ...     - a blocking QMP client
 * vm:      hq_vm_*, hq_qemu_*          - QEMU with N disks, two monitors
 * disk:    hq_write, hq_bitmaps, ...   - guest writes and bitmap read-back
 * agent:   hq_agent_*                  - start/stop/kill build/ckptd
 * guest:   hq_guest_*, hq_qga_*        - a real guest (tests/guest/) with
 *                                        qemu-ga and a file workload
 */
#ifndef CKPTD_TESTS_QEMU_HARNESS_H
#define CKPTD_TESTS_QEMU_HARNESS_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "common/common.h"

/* --- runner --- */

/* A test case returns 0 when every check passed; any hq_fail (from the test
 * or from the harness) makes it fail even if it returns 0. */
struct hq_case {
    const char *name;
    int (*fn)(void);
};

/* Runs the cases (all, or only the one named by $HQ_ONLY), prints
 * "PASS name" / "FAIL name: reason" per case and "N passed, N failed";
 * returns the exit status for main. */
int hq_run(const struct hq_case *cases, size_t n);

/* Records why the current case failed (the first reason wins). */
void hq_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool hq_failed(void);

/* Fails the case and returns -1 from the calling function. */
#define HQ_CHECK(cond, ...)                                                 \
    do {                                                                    \
        if (!(cond)) {                                                      \
            hq_fail_at(__LINE__, #cond, __VA_ARGS__);                       \
            return -1;                                                      \
        }                                                                   \
    } while (0)
void hq_fail_at(int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Marks the current case skipped (it cannot run here: not root, ...):
 * unless it also failed, hq_run prints "SKIP name: reason" and counts it
 * as neither passed nor failed.  The case should return 0 right after. */
void hq_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A note in the output that is not a result line. */
void hq_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Seconds since the epoch as a double; monotonic helpers for waits. */
double hq_now(void);
void hq_sleep_ms(int ms);

/* --- qmp: a blocking QMP client for QEMU's test monitor and the agent --- */

struct hq_conn {
    int fd;
    char *path;
    char *buf;              /* bytes received, not yet parsed */
    size_t len, cap;
    json_t *greeting;       /* the first message, as received */
    json_t *events;         /* array of events not yet waited for */
    long next_id;
    bool eof;
};

/* Connects (retrying until the socket accepts or timeout seconds pass) and
 * reads the greeting; does NOT negotiate capabilities.  NULL on failure
 * (with hq_fail). */
struct hq_conn *hq_conn_open_raw(const char *path, double timeout);
/* hq_conn_open_raw plus qmp_capabilities. */
struct hq_conn *hq_conn_open(const char *path, double timeout);
void hq_conn_close(struct hq_conn *c);
/* One connect to a Unix socket, no retry: the fd, or -1 with errno. */
int hq_connect_unix(const char *path);
static inline void hq_conn_cleanup(struct hq_conn **c) { hq_conn_close(*c); }
#define CLEANUP_CONN __attribute__((cleanup(hq_conn_cleanup)))

/* Sends bytes exactly as given (for framing tests).  0 or -1. */
int hq_send_raw(struct hq_conn *c, const char *data, size_t len);
/* Sends one JSON value followed by a newline.  Steals msg. */
int hq_send_json(struct hq_conn *c, json_t *msg);
/* The next message of any kind (reply or event), or NULL on timeout/EOF.
 * Does not record a failure: tests use it to check for silence too. */
json_t *hq_read_msg(struct hq_conn *c, double timeout);
/* The next reply (an object with "return" or "error"), queueing events. */
json_t *hq_read_reply(struct hq_conn *c, double timeout);
/* Executes cmd with args (stolen; NULL for none) and returns the whole
 * reply object; NULL (with hq_fail) on timeout or EOF.  Checks that the
 * reply echoes the id it sent. */
json_t *hq_exec(struct hq_conn *c, const char *cmd, json_t *args);
/* hq_exec that must succeed: returns a new reference to "return", or NULL
 * with hq_fail naming the command and the error. */
json_t *hq_cmd(struct hq_conn *c, const char *cmd, json_t *args);
/* hq_exec that must fail with error class cls; returns the reply or NULL
 * with hq_fail. */
json_t *hq_cmd_err(struct hq_conn *c, const char *cls,
                   const char *cmd, json_t *args);
/* Waits for an event named name (queued or arriving); NULL on timeout. */
json_t *hq_wait_event(struct hq_conn *c, const char *name, double timeout);
/* The same, but only an event whose data.name equals data_name. */
json_t *hq_wait_event_named(struct hq_conn *c, const char *name,
                            const char *data_name, double timeout);
/* Reads whatever arrives within timeout into the event queue. */
void hq_drain(struct hq_conn *c, double timeout);

/* Reply helpers (reply may be NULL): error class or NULL, error desc or "". */
const char *hq_err_class(json_t *reply);
const char *hq_err_desc(json_t *reply);
/* A short printable form of any JSON value, for failure messages; static
 * buffer, valid until the next call. */
const char *hq_str(json_t *j);

/* --- vm: QEMU over disks in a private directory --- */

#define HQ_MAX_DISKS 8

struct hq_disk {
    char name[16];          /* device id: vda ... */
    char node[32];          /* format node: vda-fmt */
    char *path;             /* image file */
    char format[8];         /* qcow2 | raw */
    int64_t size;
    bool read_only;
    bool plugged;           /* hot-added: not on the command line */
};

struct hq_vm {
    char *dir;
    char *qmp_sock;         /* the agent's QEMU monitor */
    char *agent_qmp;        /* where the agent connects instead (the
                             * failure injector), or NULL */
    pid_t inject_pid;       /* tests/tools/qmp-inject, or 0 */
    char *test_sock;        /* the test's QEMU monitor */
    char *ctl_sock;         /* the agent's control socket */
    char *agent_log;
    char *qemu_log;
    pid_t qemu_pid;
    pid_t agent_pid;
    struct hq_conn *mon;    /* QEMU test monitor, negotiated */
    struct hq_conn *ctl;    /* agent control connection, negotiated */
    struct hq_disk disks[HQ_MAX_DISKS];
    int ndisks;
    int root_ports_used;
    /* Extra arguments for every later hq_agent_spawn (hq_agent_add_arg). */
    char *agent_args[16];
    int nagent_args;
    /* A real guest (hq_guest_vm): QEMU boots tests/guest/ under TCG. */
    bool guest;
    char *incoming;         /* QEMU's -incoming (a migration's destination), or NULL */
    char *qga_sock;         /* host side of the guest agent's channel */
    char *console_log;      /* the guest's serial console */
};

/* A new directory; the VM is registered for cleanup at exit. */
struct hq_vm *hq_vm_new(void);
/* Kills QEMU and the agent, removes the directory; prints the agent log
 * first when the current case has failed. */
void hq_vm_free(struct hq_vm *vm);
static inline void hq_vm_cleanup(struct hq_vm **vm) { if (*vm) hq_vm_free(*vm); }
#define CLEANUP_VM __attribute__((cleanup(hq_vm_cleanup)))

/* Creates an image (format "qcow2" or "raw") for the device id name; it
 * is attached at the next hq_qemu_start.  -1 on failure. */
int hq_vm_add_disk(struct hq_vm *vm, const char *name, const char *format,
                   int64_t size, bool read_only);
struct hq_disk *hq_vm_disk(struct hq_vm *vm, const char *name);

/* A new VM with n qcow2 disks vda, vdb, ... of size each, QEMU started and
 * (if agent) the agent started and connected.  NULL with hq_fail. */
struct hq_vm *hq_vm_simple(int n, int64_t size, bool agent);
/* hq_vm_simple(n, size, false), $XDG_RUNTIME_DIR set to the VM's directory
 * (the agent's default runtime directory), then the agent started with the
 * extra arguments (NULL-terminated, or NULL) and connected.  NULL with
 * hq_fail. */
struct hq_vm *hq_vm_with_agent(int n, int64_t size, const char *const *extra);

/* Starts QEMU (-S) over the disks and opens vm->mon.  0 or -1. */
int hq_qemu_start(struct hq_vm *vm);
/* `quit` over the test monitor and waits for exit.  0 if QEMU exited 0. */
int hq_qemu_quit(struct hq_vm *vm);
/* SIGKILL and reap. */
void hq_qemu_kill(struct hq_vm *vm);
/* Hot-adds a new qcow2 disk: qemu-img, blockdev-add, device_add on a spare
 * PCIe root port.  0 or -1. */
int hq_qemu_hotplug(struct hq_vm *vm, const char *name, int64_t size);
/* The same with an existing qcow2 image (a disk from another VM, or one
 * the test took out of this VM's command line).  0 or -1. */
int hq_qemu_plug(struct hq_vm *vm, const char *name, const char *path);

/* --- disk: guest writes and bitmaps --- */

/* Writes pattern at [offset, offset+len) through the device's own
 * BlockBackend, the path a guest write takes.  0 or -1. */
int hq_write(struct hq_vm *vm, const char *disk, int pattern,
             int64_t offset, int64_t len);
/* Runs an HMP command line; 0 when it printed nothing (success). */
int hq_hmp(struct hq_vm *vm, const char *cmdline);

/* The dirty-bitmaps array of the disk's format node (new reference; an
 * empty array when it has none), NULL on error. */
json_t *hq_bitmaps(struct hq_vm *vm, const char *disk);
/* One bitmap of the disk by name (new reference) or NULL. */
json_t *hq_bitmap(struct hq_vm *vm, const char *disk, const char *name);
/* Comma-separated names of the disk's bitmaps in QEMU's order, leaving
 * out those starting with "ckptd" (the agent's records and temporaries).
 * Caller frees. */
char *hq_bitmap_names(struct hq_vm *vm, const char *disk);
/* Number of the disk's bitmaps whose name starts with prefix. */
int hq_bitmap_count_prefix(struct hq_vm *vm, const char *disk,
                           const char *prefix);
/* Shorthands; -1 when the bitmap is missing. */
int64_t hq_bitmap_dirty(struct hq_vm *vm, const char *disk, const char *name);
int hq_bitmap_recording(struct hq_vm *vm, const char *disk, const char *name);
/* All bitmaps of all disks: {"vda": [...], ...}.  For before/after
 * comparisons around a command that must change nothing. */
json_t *hq_snapshot(struct hq_vm *vm);
/* Adds a bitmap by hand over the test monitor (not the agent's). */
int hq_add_bitmap(struct hq_vm *vm, const char *disk, const char *name,
                  bool persistent, bool disabled);

/* `qemu-img info --output=json` of the disk's image (QEMU must not be
 * running over it), or NULL. */
json_t *hq_image_info(struct hq_vm *vm, const char *disk);
/* The qcow2 bitmaps array from hq_image_info (new reference). */
json_t *hq_image_bitmaps(struct hq_vm *vm, const char *disk);
/* Checks with qemu-io (QEMU not running) that the image holds pattern at
 * [offset, offset+len).  0 when it does. */
int hq_image_verify(struct hq_vm *vm, const char *disk, int pattern,
                    int64_t offset, int64_t len);

/* --- agent --- */

/* $CKPTD, else $BUILD/ckptd, else build/ckptd. */
const char *hq_agent_path(void);
/* Starts the agent (stdout and stderr appended to vm->agent_log) and opens
 * vm->ctl (negotiated) once its control socket answers; does not wait for
 * QEMU.  0 or -1. */
int hq_agent_spawn(struct hq_vm *vm);
/* hq_agent_spawn, opens vm->ctl and waits until query-status says
 * "connected".  0 or -1. */
int hq_agent_start(struct hq_vm *vm);
/* Polls query-status on vm->ctl until "qemu" equals state. 0 or -1. */
int hq_agent_wait_qemu(struct hq_vm *vm, const char *state, double timeout);
/* SIGTERM; checks exit status 0, the control socket removed and no
 * sanitizer report in the log.  0 or -1 (with hq_fail). */
int hq_agent_stop(struct hq_vm *vm);
/* SIGKILL and reap. */
void hq_agent_kill(struct hq_vm *vm);
/* Appends one argument to the agent's command line for every later start
 * (e.g. "--scratch-dir", dir).  0, or -1 with hq_fail when full. */
int hq_agent_add_arg(struct hq_vm *vm, const char *arg);
/* Prints the agent's log as "# " lines. */
void hq_agent_dump_log(struct hq_vm *vm);

/* Names of checkpoint-list's checkpoints joined by ",", in list order
 * (caller frees), or NULL with hq_fail. */
char *hq_ckpt_names(struct hq_conn *ctl);
/* One checkpoint from checkpoint-get (new reference) or NULL. */
json_t *hq_ckpt_get(struct hq_conn *ctl, const char *name, bool size);

/* A shadow model of one disk for backup tests (hq-model.c): its bytes as
 * every write left them and, per slot (a checkpoint), the 64 KiB clusters
 * written since.  Disks of HQ_MODEL_SIZE bytes. */
#define HQ_K64 (64 * 1024)
#define HQ_MODEL_SIZE (16 * 1024 * 1024)
#define HQ_MODEL_NCL (HQ_MODEL_SIZE / HQ_K64)
#define HQ_MODEL_SLOTS 4
struct hq_model {
    const char *disk;
    uint8_t *data;
    uint8_t since[HQ_MODEL_SLOTS][HQ_MODEL_NCL];
    bool active[HQ_MODEL_SLOTS];
};
struct hq_model *hq_model_init(struct hq_model *m, const char *disk);
void hq_model_free(struct hq_model **m);
#define HQ_CLEANUP_MODEL __attribute__((cleanup(hq_model_free)))
/* From now on, slot records the clusters written. */
void hq_model_mark(struct hq_model *m, int slot);
/* A guest write, into the VM and the model.  0 or -1. */
int hq_mwrite(struct hq_vm *vm, struct hq_model *m, int pat, int64_t off, int64_t len);
/* The job's entry for disk, or NULL. */
json_t *hq_job_disk(json_t *job, const char *disk);
/* The whole export of disk (HQ_MODEL_SIZE bytes) into buf.  0 or -1. */
int hq_read_full(json_t *job, const char *disk, uint8_t *buf);
/* The incremental export of disk: its dirty map must be exactly want, the
 * dirty clusters copied into base must give expect.  0 or -1. */
int hq_apply_incremental(json_t *job, const char *disk, const uint8_t *want,
                         uint8_t *base, const uint8_t *expect);
/* The disk through a last full backup equals the model.  0 or -1. */
int hq_expect_disk(struct hq_vm *vm, const struct hq_model *m);
/* The agent's checkpoints against QEMU's bitmaps on every layer of each
 * disk's chain: every listed bitmap exists, every checkpoint bitmap is
 * listed, and a disk with checkpoints has exactly one recording across
 * its layers.  0 or -1. */
int hq_tree_matches_qemu(struct hq_vm *vm, const char *when);
/* The format nodes of disk's backing chain, active layer first
 * (query-named-block-nodes entries; new reference), or NULL. */
json_t *hq_disk_layers(struct hq_vm *vm, const char *disk);
/* ckptctl: $CKPTCTL, else beside the agent binary.  Caller frees. */
char *hq_ckptctl_path(void);
/* Runs ckptctl (beside the agent binary, or $CKPTCTL) --socket CTL
 * ARGS... (NULL-terminated); its exit status, and its output in *out. */
int hq_ckptctl(struct hq_vm *vm, char **out, const char *const *args);
/* The scratch file of job's disk in dir (ckptd-TAG-JOB-DISK.qcow2: the
 * tag is the agent's), or NULL.  Caller frees. */
char *hq_scratch_file(const char *dir, const char *job, const char *disk);
/* A tmpfs of mib MiB over dir, in a private mount namespace of the test
 * process (and so of the QEMU and agent it starts then).  1 mounted, 0
 * cannot here (not root...: the reason in why, for hq_skip), -1 error. */
int hq_mount_tmpfs(const char *dir, int mib, char *why, size_t wlen);
/* Unmounts (*path, freed) when the variable goes out of scope. */
void hq_umount_cleanup(char **path);
#define HQ_CLEANUP_UMOUNT __attribute__((cleanup(hq_umount_cleanup)))

/* --- inject: QEMU's failures, scripted (tests/tools/qmp-inject.c) ---
 * hq-inject.c.  hq_inject_start puts the proxy between the agent and
 * QEMU for every later hq_agent_spawn; rules as in qmp-inject.c. */
int hq_inject_start(struct hq_vm *vm);
void hq_inject_stop(struct hq_vm *vm);
/* Replaces the rules ("fail transaction 1\n", "" for none).  0 or -1. */
int hq_inject_rules(struct hq_vm *vm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Names of the commands the agent sent since the last hq_inject_mark,
 * in order (a JSON array of strings, new reference). */
json_t *hq_inject_seen(struct hq_vm *vm);
void hq_inject_mark(struct hq_vm *vm);
/* Forks and execs argv with stdout and stderr appended to log. */
pid_t hq_spawn(char *const argv[], const char *log);

/* --- small JSON accessors for assertions --- */
/* obj.key as a string, or NULL when absent or not a string. */
const char *hq_jstr(json_t *obj, const char *key);
/* obj.key as an integer, or -1 when absent or not an integer. */
int64_t hq_jint(json_t *obj, const char *key);
/* obj.key as a bool: 1, 0, or -1 when absent or not a bool. */
int hq_jbool(json_t *obj, const char *key);
/* The element of array arr whose member key equals the string val
 * (borrowed), or NULL. */
json_t *hq_jfind(json_t *arr, const char *key, const char *val);

/* --- backup: NBD exports read with libnbd, and the agent's leftovers --- */

struct nbd_handle;
/* Connects to an NBD URI with libnbd, asking for the meta context ctx
 * (e.g. "qemu:dirty-bitmap:NAME" or "base:allocation") when not NULL.
 * NULL with hq_fail. */
struct nbd_handle *hq_nbd_open(const char *uri, const char *ctx);
void hq_nbd_close(struct nbd_handle *h);
static inline void hq_nbd_cleanup(struct nbd_handle **h) { hq_nbd_close(*h); }
#define HQ_CLEANUP_NBD __attribute__((cleanup(hq_nbd_cleanup)))
/* Reads [off, off+len) into buf in chunks.  0 or -1 with hq_fail. */
int hq_nbd_read(struct nbd_handle *h, void *buf, int64_t off, int64_t len);
/* Walks the extents of meta context ctx over [0, size): for every
 * granule of gran bytes, sets map[i] to 1 if any part of it has one of
 * the flags in mask, else 0 (map holds size/gran entries, rounded up).
 * With all = true a granule is set only when ALL of it has those flags.
 * 0 or -1 with hq_fail. */
int hq_nbd_map(struct nbd_handle *h, const char *ctx, int64_t size,
               int64_t gran, uint32_t mask, bool all, uint8_t *map);
/* The default NBD socket of the VM's agent: the control path with
 * ".sock" replaced by "-nbd.sock".  Caller frees. */
char *hq_nbd_sock(struct hq_vm *vm);
/* True when something accepts connections on the Unix socket path. */
bool hq_sock_listening(const char *path);
/* What a backup may leave behind, checked over QEMU's test monitor and
 * in the scratch directory: exports, ckptd-* block jobs, ckptd-* nodes,
 * ckptd: bitmaps and anonymous bitmaps on any node, ckptd-* files in
 * scratch_dir (when not NULL), and a listening default NBD socket.
 * NULL when nothing is left, else a description (caller frees). */
char *hq_backup_leftovers(struct hq_vm *vm, const char *scratch_dir);
/* The VM's scratch directory for backups, DIR/scratch.  Caller frees. */
char *hq_scratch_dir(struct hq_vm *vm);
/* A new VM with n qcow2 disks vda, vdb, ... of size, DIR/scratch created
 * and given to the agent as --scratch-dir, then the extra agent arguments
 * (NULL-terminated, or NULL); with start, QEMU and the agent started and
 * connected.  NULL with hq_fail. */
struct hq_vm *hq_vm_scratch(int n, int64_t size, const char *const *extra,
                            bool start);
/* Files in the ckptd-scratch-* directories right under dir (the agent's
 * default scratch directories when $XDG_RUNTIME_DIR is dir), leaving out
 * dot files (being removed): those whose name contains substr, or all. */
int hq_count_scratch(const char *dir, const char *substr);
/* JSON text written by a test, parsed (new reference); NULL with hq_fail. */
json_t *hq_json(const char *text);
/* backup-begin on vm->ctl with arguments given as JSON text (NULL: none);
 * the job (new reference), or NULL with hq_fail. */
json_t *hq_backup_begin(struct hq_vm *vm, const char *args);
/* backup-end of job's id, which must return {}.  0 or -1 with hq_fail. */
int hq_backup_end(struct hq_vm *vm, json_t *job);
/* No hq_backup_leftovers in QEMU, DIR/scratch or the NBD socket and, when
 * vm->ctl is open, an empty query-backup; when names the moment in the
 * failure message.  0 or -1 with hq_fail. */
int hq_backup_expect_clean(struct hq_vm *vm, const char *when);
/* The first offset at which a and b differ over len bytes, or -1. */
int64_t hq_first_diff(const uint8_t *a, const uint8_t *b, int64_t len);

/* Reads a whole file (caller frees) or NULL. */
char *hq_read_file(const char *path);
/* Runs a shell-free argv; returns its exit status (or -1); collects
 * stdout into *out when out is not NULL. */
int hq_run_cmd(char *const argv[], char **out);

/* --- guest: a real guest (tests/guest/, built by make into $BUILD/guest) ---
 * Debian's kernel and a busybox initramfs running qemu-ga and, on every
 * ext4 disk, a workload that keeps writing new files and a manifest of
 * their sha256 (see tests/guest/init).  Boots under TCG only. */

/* $HQ_GUEST_DIR, else $BUILD/guest, else build/guest. */
const char *hq_guest_dir(void);
/* A VM with n qcow2 disks vda, vdb, ... of size bytes, each formatted
 * ext4 by the host, booting the guest with the guest agent's channel at
 * vm->qga_sock; QEMU started and the CPUs running, the workload running
 * on every disk (one step seen on the console), qemu-ga answering.  The
 * agent is not started.  NULL with hq_fail. */
struct hq_vm *hq_guest_vm(int n, int64_t size);
/* The same guest booted from copies of existing images (restored
 * backups, hq_guest_copy_start targets), one per disk vda, vdb, ...; the
 * images themselves are left as they are (QEMU runs on copies).  Each
 * disk's workload first checks what it finds (hq_guest_check), then goes
 * on from its newest step.  NULL with hq_fail. */
struct hq_vm *hq_guest_vm_from(int n, const char *const *images);
/* What the guest's own check of a disk at boot said: 1 every manifest
 * entry matched, 0 some did not, -1 no check printed (a fresh disk);
 * entries and newest (may be NULL) as it counted them. */
int hq_guest_check(struct hq_vm *vm, const char *disk, int *entries,
                   long *newest);
/* The workload's last completed step on disk per the console, or -1;
 * disk NULL: the cross-disk step (with two disks or more; hq_guest_vm
 * returns once it has done one). */
long hq_guest_seq(struct hq_vm *vm, const char *disk);
/* Waits until the console shows the text.  0, or -1 with hq_fail. */
int hq_guest_wait_console(struct hq_vm *vm, const char *text, double timeout);
/* Waits until the workload on disk completes a step after now (proof
 * that its file system is not frozen).  0, or -1 with hq_fail. */
int hq_guest_wait_progress(struct hq_vm *vm, const char *disk,
                           double timeout);

/* A blocking guest-agent client for tests.  Only one client at a time can
 * hold the channel (QEMU's chardev serves one connection): close it
 * before the agent connects with --qga.  NULL with hq_fail. */
struct hq_conn *hq_qga_open(struct hq_vm *vm, double timeout);
/* 0xFF, guest-sync-delimited with a random id, every reply up to that id
 * dropped.  0, or -1 (no hq_fail: callers retry while qemu-ga starts). */
int hq_qga_sync(struct hq_conn *c, double timeout);
/* hq_qga_sync, then cmd with args (stolen); the whole reply object, or
 * NULL with hq_fail. */
json_t *hq_qga_exec(struct hq_conn *c, const char *cmd, json_t *args);
/* hq_qga_exec that must succeed: a new reference to "return", or NULL
 * with hq_fail. */
json_t *hq_qga_cmd(struct hq_conn *c, const char *cmd, json_t *args);
/* guest-fsfreeze-status: "thawed", "frozen" (static strings) or NULL. */
const char *hq_qga_freeze_status(struct hq_conn *c);

/* A point-in-time copy of a disk, as a backup would take it:
 * blockdev-backup sync=full to a new qcow2 target over the test monitor.
 * hq_guest_copy_start returns once QEMU has fixed the point in time (the
 * command returned); hq_guest_copy_finish waits for the job and detaches
 * the target.  0, or -1 with hq_fail. */
int hq_guest_copy_start(struct hq_vm *vm, const char *disk,
                        const char *target);
int hq_guest_copy_finish(struct hq_vm *vm, const char *disk);

/* What a copy of a guest disk holds (QEMU not writing to it). */
struct hq_fs_check {
    bool needs_recovery;    /* the superblock's feature (dumpe2fs -h) */
    bool fsck_clean;        /* e2fsck -fn exited 0 */
    int entries;            /* lines in work/manifest */
    int bad;                /* entries whose file does not match */
    long newest;            /* highest N of the files fN listed, or 0 */
    long cross;             /* work/cross (the cross-disk step), or 0 */
    char detail[512];       /* e2fsck or sha256sum complaints, if any */
};
/* Reads an image (any format qemu-img knows) without mounting it, on a
 * raw scratch copy: dumpe2fs, e2fsck -fn, then (when recovery is pending)
 * e2fsck -fy to replay the journal as a mount would, then debugfs rdump
 * of work/ and sha256sum -c of its manifest.  0, or -1 with hq_fail when
 * a tool could not run. */
int hq_fs_check(const char *image, struct hq_fs_check *out);

#endif
