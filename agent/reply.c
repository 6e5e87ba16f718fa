/* The one way to answer a request (tmux's cmdq_error): a return value or
 * an error class with one sentence naming the object; and events.
 *
 * Every request gets exactly one reply.  Error texts are built by one
 * formatter (ckpt_vformat: cut at character boundaries, always valid
 * UTF-8), and a reply that cannot be built still goes out, as a
 * GenericError that says so: a client never waits for an answer that was
 * dropped. */
#include "agent/agent.h"

#include <stdio.h>
#include <sys/time.h>

/* Longest desc we send: room for a long path or two and a name. */
#define REQ_MAX_DESC 1024

/* Built from constant text only, so nothing but memory can make it fail
 * (and then xmalloc has already aborted). */
json_t *
req_unbuildable(json_t *id, const char *what)
{
    char desc[256];
    ckpt_format(desc, sizeof desc, "the agent could not build the reply to %s; "
                "see its log", what);
    json_t *err = json_object();
    json_object_set_new(err, "class", json_string(ckpt_err_class(CKPT_ERR_GENERIC)));
    json_object_set_new(err, "desc", json_string(desc));
    json_t *msg = json_object();
    json_object_set_new(msg, "error", err);
    if (id)
        json_object_set(msg, "id", id);
    return msg;
}

static void
finish(struct request *req, json_t *msg)
{
    if (!msg) {
        log_error("the reply to %s could not be built; sending a GenericError",
                  req->cmd->name);
        msg = req_unbuildable(req->id, req->cmd->name);
    }
    if (req->client)
        ctl_send(req->client, msg);
    else
        json_decref(msg);
    dispatch_request_done(req);
}

void
req_reply_value(struct request *req, json_t *ret, bool empty)
{
    if (!ret && !empty) {
        /* json_pack of a value with a NULL or non-UTF-8 string, a failed
         * encoder: never a silent {} that reads as success. */
        log_error("%s returned no value", req->cmd->name);
        finish(req, NULL);
        return;
    }
    json_t *msg = json_object();
    json_object_set_new(msg, "return", ret ? ret : json_object());
    if (req->id)
        json_object_set(msg, "id", req->id);
    finish(req, msg);
}

void
req_reply_text(struct request *req, const char *ret_text, size_t len)
{
    if (!ret_text) {
        log_error("%s returned no value", req->cmd->name);
        finish(req, NULL);
        return;
    }
    CLEANUP_FREE char *id = req->id ? json_dumps(req->id, JSON_COMPACT |
                                                 JSON_ENCODE_ANY) : NULL;
    if (req->id && !id) {
        finish(req, NULL);
        return;
    }
    size_t idlen = id ? strlen(id) : 0;
    char *line = xmalloc(len + idlen + 32), *p = line;
    p = mempcpy(p, "{\"return\":", 10);
    p = mempcpy(p, ret_text, len);
    if (id) {
        p = mempcpy(p, ",\"id\":", 6);
        p = mempcpy(p, id, idlen);
    }
    *p++ = '}';
    if (req->client)
        ctl_send_text(req->client, line, (size_t) (p - line));
    free(line);
    dispatch_request_done(req);
}

void
req_reply_ok(struct request *req)
{
    req_reply_value(req, json_object(), false);
}

json_t *
req_error_message(enum ckpt_err code, const char *desc, json_t *id)
{
    char text[REQ_MAX_DESC];
    ckpt_format(text, sizeof text, "%s", desc ? desc : "");
    json_t *msg = json_pack("{s:{s:s,s:s}}", "error", "class",
                            ckpt_err_class(code), "desc", text);
    if (!msg)
        return req_unbuildable(id, "this request");
    if (id)
        json_object_set(msg, "id", id);
    return msg;
}

void
req_error(struct request *req, enum ckpt_err code, const char *fmt, ...)
{
    char desc[REQ_MAX_DESC];
    va_list ap;
    va_start(ap, fmt);
    ckpt_vformat(desc, sizeof desc, fmt, ap);
    va_end(ap);
    log_debug("%s failed: %s: %s", req->cmd->name, ckpt_err_class(code), desc);
    finish(req, req_error_message(code, desc, req->id));
}

void
req_fail(struct request *req, const struct ckpt_error *e)
{
    req_error(req, e->code, "%s", e->msg);
}

/* what: the action, as "creating checkpoint 'c1'". */
void
req_qmp_error(struct request *req, const struct qmp_error *err, const char *what)
{
    if (strcmp(err->class, "GuestAgentError") == 0)
        req_error(req, CKPT_ERR_GUEST_AGENT, "cannot quiesce the guest for %s, "
                  "nothing was changed: %s", what, err->desc);
    else if (strcmp(err->class, "Disconnected") == 0)
        req_error(req, CKPT_ERR_NOT_CONNECTED,
                  "QEMU went away while %s; once it is back, check whether "
                  "that happened", what);
    else if (strcmp(err->class, "Timeout") == 0)
        req_error(req, CKPT_ERR_QEMU,
                  "QEMU did not answer in time while %s; the connection was "
                  "reset: once it is back, check whether that happened", what);
    else
        req_error(req, CKPT_ERR_QEMU, "%s failed in QEMU: %s", what, err->desc);
}

void
agent_event(struct agent *a, const char *event, json_t *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_t *msg = json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", event,
                            "data", data ? data : json_object(), "timestamp",
                            "seconds", (json_int_t) tv.tv_sec,
                            "microseconds", (json_int_t) tv.tv_usec);
    log_info("event %s", event);
    if (!msg) {
        log_error("event %s could not be built; not sent", event);
        return;
    }
    ctl_broadcast(a, msg);
}
