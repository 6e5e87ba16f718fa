/* ckptd: asynchronous QMP client on libev, and the JSON stream splitter
 * that both the QMP client and the agent's control socket use.
 *
 * stream.c: qmp_stream_*  split a byte stream into JSON objects
 *           (objects split over reads or lines, several per read, caps on
 *           message size and nesting depth).  Pure, no I/O.
 * client.c: qmp_*         one connection to one QEMU QMP socket.
 * action.c: qmp_action    helpers to build `transaction` action lists.
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
/* Closes the connection: pending commands get "Disconnected", the state
 * callback runs with connected == false. */
void qmp_disconnect(struct qmp *q, const char *reason);
/* Frees; pending callbacks are called with "Disconnected" first. */
void qmp_free(struct qmp *q);

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

#endif
