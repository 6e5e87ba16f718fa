/* The one way to answer a request (tmux's cmdq_error): a return value or
 * an error class with one sentence naming the object; and events. */
#include "agent/agent.h"

#include <stdio.h>
#include <sys/time.h>

static void
finish(struct request *req, json_t *msg)
{
    if (req->client)
        ctl_send(req->client, msg);
    else
        json_decref(msg);
    dispatch_request_done(req);
}

void
req_reply(struct request *req, json_t *ret)
{
    json_t *msg = json_pack("{s:o}", "return", ret ? ret : json_object());
    if (req->id)
        json_object_set(msg, "id", req->id);
    finish(req, msg);
}

json_t *
req_error_message(enum ckpt_err code, const char *desc, json_t *id)
{
    json_t *msg = json_pack("{s:{s:s,s:s}}", "error", "class",
                            ckpt_err_class(code), "desc", desc);
    if (id)
        json_object_set(msg, "id", id);
    return msg;
}

void
req_error(struct request *req, enum ckpt_err code, const char *fmt, ...)
{
    char desc[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
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
    ctl_broadcast(a, msg);
}
