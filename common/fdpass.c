/* Sending a descriptor with bytes over a Unix socket (SCM_RIGHTS), the way
 * QMP's getfd and add-fd take them: the agent to QEMU, ckptctl to the
 * agent, the failure injector passing them on. */
#include "common/common.h"

#include <string.h>
#include <sys/socket.h>

ssize_t
fd_send(int sock, const void *data, size_t len, int fd)
{
    if (fd < 0)
        return send(sock, data, len, MSG_NOSIGNAL);
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { (void *) data, len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    return sendmsg(sock, &mh, MSG_NOSIGNAL);
}
