/* ckptd: asynchronous QMP client on libev, and the JSON stream splitter
 * that both the QMP client and the agent's control socket use.
 *
 * stream.c: qmp_stream_*  split a byte stream into JSON objects
 *           (objects split over reads or lines, several per read, caps on
 *           message size and nesting depth).  Pure, no I/O.
 * client.c: qmp_*         one connection to one QEMU QMP socket.
 * action.c: qmp_action    helpers to build `transaction` action lists.
 * qga.c:    qga_*         one connection to a guest agent (qemu-ga) socket.
 * conn.c:   qmp_conn_*, qmp_list_*, qmp_req_*  what those two share: one
 *           non-blocking Unix stream socket on libev with an output
 *           buffer, framed input, deferred failures and the re-entrancy
 *           guard; and their request lists.  Internal to the module.
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

/* --- conn.c (for client.c and qga.c only) --- */
/* One command of either client.  Each client uses its own member of cb
 * and the fields its header comment names. */
struct qmp_req {
    struct qmp_req *next;
    json_int_t id;              /* QMP's "id"; 0 for the guest agent */
    char *cmd;                  /* for logs and the timeout message */
    char *line;                 /* encoded command; NULL once sent or if it
                                   cannot be encoded */
    union {
        qmp_reply_cb *qmp;
        qga_reply_cb *qga;
    } cb;
    void *opaque;
    double timeout;             /* guest agent: the command's own */
    ev_tstamp deadline;
    const char *fail_class;     /* for deferred failures (static strings) */
    const char *fail_desc;
    int fd;                     /* QMP: sent with the line (SCM_RIGHTS), or -1 */
};

/* FIFO of requests. */
struct qmp_list {
    struct qmp_req *head, *tail;
};

/* {"execute": cmd, "id": id (left out when 0), "arguments": args
 * (borrowed, may be NULL)} encoded into line; callback unset, fd -1. */
struct qmp_req *qmp_req_new(const char *cmd, json_t *args, json_int_t id);
/* Frees r, closing its descriptor if it still holds one. */
void qmp_req_free(struct qmp_req *r);
void qmp_list_push(struct qmp_list *l, struct qmp_req *r);
struct qmp_req *qmp_list_pop(struct qmp_list *l);
/* Takes r out of l if it is there. */
void qmp_list_remove(struct qmp_list *l, struct qmp_req *r);
/* Removes and returns the request with this id, or NULL. */
struct qmp_req *qmp_list_take(struct qmp_list *l, json_int_t id);
/* Moves all of src to the end of dst. */
void qmp_list_splice(struct qmp_list *dst, struct qmp_list *src);

/* What a client is to its connection: its limits, the words of its
 * reasons, and what the connection calls back into it with (opaque).
 * Every call runs inside qmp_conn_enter/leave. */
struct qmp_conn_ops {
    size_t max_msg;             /* framer caps (stream.c) */
    int max_depth;
    size_t read_size;           /* bytes a read, at most QMP_CONN_READ_MAX */
    const char *name;           /* "read from <name>: ..."; NULL: the path */
    const char *eof_reason;     /* the reason when the peer closes */
    bool connect_in_watcher;    /* see qmp_conn_connect */

    /* The connect finished; the socket is open and read. */
    void (*opened)(void *opaque);
    /* Bytes read, when the client splits them itself (else NULL: they go
     * to qmp_conn_feed). */
    void (*input)(void *opaque, const char *buf, size_t n);
    /* One complete message (borrowed). */
    void (*message)(void *opaque, json_t *msg);
    /* A framing error (why); the message was dropped. */
    void (*bad_input)(void *opaque, const char *why);
    /* EOF, a read/write error or a failed connect: the client closes. */
    void (*failed)(void *opaque, const char *reason);
    /* Run r's callback (cb.qmp or cb.qga) with ret or err; conn.c frees
     * r after. */
    void (*complete)(void *opaque, struct qmp_req *r, json_t *ret,
                     const struct qmp_error *err);
    /* The deadline set with qmp_conn_arm came. */
    void (*timer)(void *opaque);
    /* The last frame left a dying connection: free the client. */
    void (*destroy)(void *opaque);
};

enum qmp_conn_state {
    QMP_CONN_CLOSED,
    QMP_CONN_CONNECTING,        /* non-blocking connect in progress */
    QMP_CONN_OPEN,
};

/* A descriptor waiting in the output buffer: it goes out with the byte at
 * off, the first of its command's line, as QEMU's getfd/add-fd expect. */
struct qmp_out_fd {
    size_t off;
    int fd;
};
#define QMP_MAX_OUT_FDS 64

/* Set up by qmp_conn_init; the client reads state, gen and dying, and
 * sets dying. */
struct qmp_conn {
    struct ev_loop *loop;
    char *path;                 /* the socket's path (owned) */
    const char *name;           /* ops->name or the path */
    const struct qmp_conn_ops *ops;
    void *opaque;

    enum qmp_conn_state state;
    int fd;
    ev_io rio, wio;
    ev_idle idle;               /* deferred failures */
    ev_timer timer;             /* the client's deadline (ops->timer) */
    struct qmp_stream in;
    char *out;
    size_t out_len, out_off, out_cap;
    struct qmp_out_fd out_fds[QMP_MAX_OUT_FDS]; /* in offset order */
    size_t nout_fds;
    struct qmp_list deferred;   /* failed at once, called from idle */

    unsigned gen;               /* bumped by every close */
    int busy;                   /* callback frames on the stack */
    bool dying;                 /* freed when !busy */
};
#define QMP_CONN_READ_MAX (64 * 1024)

void qmp_conn_init(struct qmp_conn *c, struct ev_loop *loop, const char *path,
                   const struct qmp_conn_ops *ops, void *opaque);
/* Starts a non-blocking connect to path.  Returns 0 when under way
 * (state CONNECTING; the write watcher finishes it with ops->opened or
 * ops->failed) or done at once (state OPEN, nothing called back);
 * ops->connect_in_watcher makes even that finish from the watcher and
 * counts EAGAIN (a full backlog) as under way.  Returns -1 with errno if no
 * socket could be made (ENAMETOOLONG for a long path), -2 with errno if
 * connect refused now (ENOENT, ECONNREFUSED...). */
int qmp_conn_connect(struct qmp_conn *c);
/* Closes the socket, stops the timer, drops buffered input and output
 * (and descriptors waiting to go), bumps gen.  Returns false if it was
 * closed already. */
bool qmp_conn_close(struct qmp_conn *c);
/* Queues line and a newline; fd (when >= 0 and there is room) goes with
 * its first byte and belongs to the connection then: *fd becomes -1. */
void qmp_conn_write(struct qmp_conn *c, const char *line, int *fd);
/* Drops the output not yet handed to the socket. */
void qmp_conn_drop_output(struct qmp_conn *c);
/* Feeds bytes to the framer and hands out each message (ops->message,
 * ops->bad_input) until it runs dry or a callback closed the connection
 * or freed the client. */
void qmp_conn_feed(struct qmp_conn *c, const char *buf, size_t n);
/* Starts the framer over (partial input dropped). */
void qmp_conn_reset_input(struct qmp_conn *c);
/* ops->timer runs at deadline (now if it is past); disarm stops it. */
void qmp_conn_arm(struct qmp_conn *c, ev_tstamp deadline);
void qmp_conn_disarm(struct qmp_conn *c);
/* Runs r's one callback (ops->complete) and frees it; r is off every
 * list.  ret is borrowed. */
void qmp_conn_complete(struct qmp_conn *c, struct qmp_req *r, json_t *ret,
                       const struct qmp_error *err);
void qmp_conn_fail(struct qmp_conn *c, struct qmp_req *r, const char *class,
                   const char *desc);
/* r fails later, from the loop, with class and desc (static strings):
 * never inside the caller's frame. */
void qmp_conn_defer(struct qmp_conn *c, struct qmp_req *r, const char *class,
                    const char *desc);
/* Callback frames.  A client that is freed under one sets dying; when
 * the last frame leaves, the deferred requests fail and ops->destroy
 * frees the client (the tmux "client lost, free later" pattern). */
void qmp_conn_enter(struct qmp_conn *c);
void qmp_conn_leave(struct qmp_conn *c);

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
