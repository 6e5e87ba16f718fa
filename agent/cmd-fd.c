/* getfd and closefd: files a client opened itself, handed over on the
 * control socket with SCM_RIGHTS, as QMP's own getfd does.  A push backup
 * names one as its target ({"fd": NAME}), so neither the agent nor QEMU
 * needs to open the backup directory.  The descriptors belong to the
 * client until a backup takes one, and are closed when it disconnects. */
#include "agent/agent.h"

#include <unistd.h>

static enum cmd_result
cmd_getfd(struct request *req)
{
    struct client *c = req->client;
    const char *name = json_string_value(json_object_get(req->args, "fdname"));
    if (!c || c->nfds_in == 0) {
        req_error(req, CKPT_ERR_GENERIC, "getfd '%s': no file descriptor was "
                  "passed with the command (SCM_RIGHTS)", name);
        return CMD_DONE;
    }
    if (!*name || (name[0] >= '0' && name[0] <= '9')) {
        req_error(req, CKPT_ERR_INVALID_PARAMETER, "fdname '%s' must not be empty "
                  "nor start with a digit", name);
        return CMD_DONE;
    }
    /* The oldest descriptor not yet named: a client that sends several,
     * one per getfd, names them in order. */
    int fd = c->fds_in[0];
    memmove(c->fds_in, c->fds_in + 1, --c->nfds_in * sizeof *c->fds_in);
    int old = ctl_take_fd(c, name);     /* a name given again: replaced, as QMP */
    if (old >= 0)
        close(old);
    c->fds[c->nfds++] = (struct ctl_named_fd) { xstrdup(name), fd };
    req_reply_ok(req);
    return CMD_DONE;
}

static enum cmd_result
cmd_closefd(struct request *req)
{
    const char *name = json_string_value(json_object_get(req->args, "fdname"));
    int fd = ctl_take_fd(req->client, name);
    if (fd < 0) {
        req_error(req, CKPT_ERR_NOT_FOUND, "no file descriptor named '%s'", name);
        return CMD_DONE;
    }
    close(fd);
    req_reply_ok(req);
    return CMD_DONE;
}

static const struct cmd_arg fd_args[] = {
    { "fdname", ARG_STRING, true }, { NULL, 0, false },
};

const struct ckpt_cmd fd_cmds[] = {
    { "getfd", fd_args, 0, cmd_getfd },
    { "closefd", fd_args, 0, cmd_closefd },
    { NULL, NULL, 0, NULL },
};
