/* ckptd: asynchronous QMP client on libev, and the JSON stream splitter
 * that both the QMP client and the agent's control socket use.
 *
 * stream.c: qmp_stream_*  split a byte stream into JSON objects
 *           (objects split over reads or lines, several per read, caps on
 *           message size and nesting depth).  Pure, no I/O.
 * client.c: qmp_*         one connection to one QEMU QMP socket.
 * action.c: qmp_action    helpers to build `transaction` action lists.
 * qga.c:    qga_*         one connection to a guest agent (qemu-ga) socket.
 */
#ifndef CKPTD_QMP_H
#define CKPTD_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <ev.h>

/* --- stream.c --- */
enum qmp_stream_result {
    QMP_STREAM_NEED_MORE,   /* no complete message buffered */
    QMP_STREAM_MESSAGE,     /* *msg holds a parsed JSON value (caller owns) */
    QMP_STREAM_BAD_JSON,    /* a complete but invalid message was dropped */
    QMP_STREAM_TOO_BIG,     /* a message over max_msg bytes was dropped */
    QMP_STREAM_TOO_DEEP,    /* a message nested deeper than max_depth was dropped */
};

/* Internal state; treat as opaque.  The buffer never holds more than
 * max_msg bytes of one message plus one read: a message that grows past
 * max_msg is skipped to its end without being stored. */
struct qmp_stream {
    char *buf;
    size_t len, cap;        /* bytes buffered */
    size_t scan;            /* how far buf has been scanned */
    size_t start;           /* where the current message starts in buf */
    size_t max_msg;
    int max_depth;
    int depth;              /* {} and [] nesting at scan */
    int max_seen_depth;
    bool in_string, escape;
    bool in_garbage;        /* top-level bytes that do not start a value */
    bool skipping;          /* current message over max_msg: discarding */
    size_t msg_bytes;       /* bytes of current message, counting skipped ones */
    bool lenient;           /* see qmp_stream_lenient */
};

void qmp_stream_init(struct qmp_stream *s, size_t max_msg, int max_depth);
void qmp_stream_free(struct qmp_stream *s);
/* Appends bytes.  Call qmp_stream_next until NEED_MORE after each feed. */
void qmp_stream_feed(struct qmp_stream *s, const char *data, size_t len);
/* For a peer whose strings are checked later, field by field (the
 * control socket): "\u0000" is kept in strings, and each byte inside a
 * string that is not UTF-8 becomes "\u0000" too, so that the message still
 * parses and the caller can say which argument was wrong. */
void qmp_stream_lenient(struct qmp_stream *s);
/* Returns the next result; for errors, a short reason goes to errbuf. */
enum qmp_stream_result qmp_stream_next(struct qmp_stream *s, json_t **msg,
                                       char *errbuf, size_t errlen);

/* --- client.c --- */
struct qmp;

/* The error a command callback gets.  class is QEMU's error class, or
 * "Disconnected" when the connection went away before the reply, or
 * "Timeout" when QEMU did not answer within the reply timeout. */
struct qmp_error {
    const char *class;
    const char *desc;
};

/* Exactly one call per qmp_send: ret (borrowed, may be any JSON value) on
 * success with err == NULL, or err on failure with ret == NULL. */
typedef void qmp_reply_cb(struct qmp *q, json_t *ret,
                          const struct qmp_error *err, void *opaque);
/* An asynchronous QEMU event; data and timestamp are borrowed. */
typedef void qmp_event_cb(struct qmp *q, const char *event, json_t *data,
                          void *opaque);
/* Connection state changes: connected (greeting read and capabilities
 * negotiated; version is QEMU's "version" object) or disconnected (reason).
 * After disconnect every pending command has had its callback already. */
typedef void qmp_state_cb(struct qmp *q, bool connected, json_t *version,
                          const char *reason, void *opaque);

struct qmp_callbacks {
    qmp_event_cb *event;
    qmp_state_cb *state;
    void *opaque;
};

struct qmp *qmp_new(struct ev_loop *loop, const char *path,
                    const struct qmp_callbacks *cb, double reply_timeout);
/* Starts a non-blocking connect.  Returns 0 if the connection attempt is
 * under way (state callback follows), -1 with errno if the socket could
 * not be connected now (e.g. ENOENT, ECONNREFUSED): the caller retries. */
int qmp_connect(struct qmp *q);
bool qmp_is_connected(const struct qmp *q);
/* Sends {"execute": cmd, "arguments": args, "id": N}.  Takes ownership of
 * args (may be NULL).  The callback always runs later, never inside
 * qmp_send itself, even when not connected (then err->class is
 * "Disconnected"). */
void qmp_send(struct qmp *q, const char *cmd, json_t *args,
              qmp_reply_cb *cb, void *opaque);
/* The same with a descriptor passed along (SCM_RIGHTS), for getfd and
 * add-fd: fd is owned by the client from the call on, and closed once
 * sent or when the command fails. */
void qmp_send_fd(struct qmp *q, const char *cmd, json_t *args, int fd,
                 qmp_reply_cb *cb, void *opaque);
/* Closes the connection: pending commands get "Disconnected", the state
 * callback runs with connected == false. */
void qmp_disconnect(struct qmp *q, const char *reason);
/* Frees; pending callbacks are called with "Disconnected" first. */
void qmp_free(struct qmp *q);

/* --- qga.c --- */
/* The host side of the guest agent's virtio-serial channel (a Unix socket
 * that QEMU serves: -chardev socket,id=qga0,path=P,server=on,wait=off
 * -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0).
 * Before each command the client resynchronises (0xFF, then
 * guest-sync-delimited with a random id, dropping every reply until that
 * id comes back), then sends the command; one command is on the wire at a
 * time, later ones queue.  It connects by itself and reconnects every
 * retry_interval while the socket is missing, refuses or was closed. */
struct qga;

enum qga_state {
    QGA_STATE_NONE,         /* no guest agent configured (qga == NULL) */
    QGA_STATE_DISCONNECTED, /* configured, socket not connected */
    QGA_STATE_CONNECTED,    /* socket connected (qemu-ga may still be
                               silent: only a command tells) */
};

/* Exactly one call per qga_exec: ret (borrowed) with err == NULL, or err
 * with ret == NULL.  err->class is the guest agent's error class (e.g.
 * "GenericError", desc is its own message), or "Disconnected" (not
 * connected, or the socket closed before the reply), or "Timeout" (no
 * reply within the command's timeout; the connection stays up and the
 * next command's sync skips the late reply). */
typedef void qga_reply_cb(struct qga *g, json_t *ret,
                          const struct qmp_error *err, void *opaque);
/* The socket connected (reason NULL) or went away (reason says why). */
typedef void qga_state_cb(struct qga *g, bool connected, const char *reason,
                          void *opaque);

/* retry_interval <= 0 means 1 s.  Nothing happens before qga_start. */
struct qga *qga_new(struct ev_loop *loop, const char *path, qga_state_cb *cb,
                    void *opaque, double retry_interval);
/* Starts connecting (and reconnecting for as long as the client lives).
 * Never calls back from inside. */
void qga_start(struct qga *g);
/* g may be NULL: QGA_STATE_NONE. */
enum qga_state qga_state(const struct qga *g);
/* "none" | "disconnected" | "connected", for query-status. */
const char *qga_state_name(enum qga_state s);
/* Runs cmd with args (stolen; NULL for none).  timeout (seconds, <= 0
 * means 10) counts from this call and covers the wait behind earlier
 * commands, the sync and the reply.  The callback always runs later,
 * never inside qga_exec; when not connected it gets "Disconnected".
 * After a guest-fsfreeze-freeze that timed out, send
 * guest-fsfreeze-thaw: the guest may still complete the freeze. */
void qga_exec(struct qga *g, const char *cmd, json_t *args, double timeout,
              qga_reply_cb *cb, void *opaque);
/* How many syncs were sent so far (for tests). */
unsigned long long qga_syncs(const struct qga *g);
/* Frees; pending callbacks get "Disconnected" first.  g may be NULL. */
void qga_free(struct qga *g);

/* --- action.c --- */
/* {"type": type, "data": data}; takes ownership of data. */
json_t *qmp_action(const char *type, json_t *data);
/* Shorthands for the bitmap actions: node and bitmap name. */
json_t *qmp_bitmap_action(const char *type, const char *node, const char *name);
json_t *qmp_bitmap_add(const char *node, const char *name, bool persistent,
                       bool disabled, unsigned long granularity /* 0 = default */);
/* block-dirty-bitmap-merge into node/target from bitmaps on the same node. */
json_t *qmp_bitmap_merge(const char *node, const char *target,
                         const char *const *sources, size_t nsources);
/* The same from a list of qmp_bitmap_ref sources (stolen): QEMU merges
 * bitmaps of other nodes too (a disk's layers). */
json_t *qmp_bitmap_merge_refs(const char *node, const char *target, json_t *sources);
/* A merge source: the name alone on target_node, else {"node", "name"}. */
json_t *qmp_bitmap_ref(const char *target_node, const char *node, const char *name);

#endif
