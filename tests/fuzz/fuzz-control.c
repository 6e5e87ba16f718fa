/* libFuzzer harness: bytes from a control client, through the real
 * framing, negotiation, central argument checks and command table.
 * QEMU is not connected, so commands that need it answer NotConnected;
 * everything before that point is what hostile input can reach.
 * Input: the bytes are fed in pieces whose sizes come from the data. */
#include "agent/agent.h"

#include <sys/socket.h>
#include <unistd.h>

static struct agent *
fuzz_agent(void)
{
    static struct agent a;
    if (!a.loop) {
        a.loop = ev_loop_new(EVFLAG_AUTO);
        a.listen_fd = -1;
        a.next_job = 1;
        log_setup(LOG_ERROR, LOG_FORMAT_TEXT);
    }
    return &a;
}

static void
drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent *a = fuzz_agent();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    struct client *c = ctl_add_client(a, sv[0], 0);
    size_t off = 0;
    while (off < size && !c->closing) {
        size_t chunk = 1 + data[off] % 64;      /* piece sizes from the input */
        off++;
        if (chunk > size - off)
            chunk = size - off;
        qmp_stream_feed(&c->in, (const char *) data + off, chunk);
        dispatch_client_input(c);
        drain(sv[1]);
        off += chunk;
    }
    ctl_drop(c, "fuzz input done");
    ctl_reap(a);
    close(sv[1]);
    return 0;
}
