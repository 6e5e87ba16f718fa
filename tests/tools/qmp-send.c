/* qmp-send: one QMP command to a QEMU (or ckptd) socket, for the demo and
 * shell tests.  Prints the reply's "return" as JSON; exits 1 on an error
 * reply (printing its desc), 2 on a connection problem.
 *   qmp-send SOCKET COMMAND ['{JSON-ARGS}']
 * An HMP "qemu-io" command that fails returns text; "--hmp-ok" makes
 * such non-empty text an error too. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <jansson.h>

static int fd = -1;
static char buf[1 << 20];
static size_t len;

/* Reads one newline-terminated JSON object, skipping events. */
static json_t *
read_msg(void)
{
    for (;;) {
        char *nl = memchr(buf, '\n', len);
        if (nl) {
            json_t *j = json_loadb(buf, (size_t) (nl - buf), 0, NULL);
            memmove(buf, nl + 1, len - (size_t) (nl + 1 - buf));
            len -= (size_t) (nl + 1 - buf);
            if (j && !json_object_get(j, "event"))
                return j;
            json_decref(j);
            continue;
        }
        struct pollfd p = { fd, POLLIN, 0 };
        if (len == sizeof buf || poll(&p, 1, 60000) <= 0)
            return NULL;
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n <= 0)
            return NULL;
        len += (size_t) n;
    }
}

static json_t *
execute(const char *cmd, json_t *args)
{
    json_t *m = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set(m, "arguments", args);
    char *s = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    size_t n = strlen(s);
    s[n] = '\n';
    ssize_t w = send(fd, s, n + 1, MSG_NOSIGNAL);
    free(s);
    return w == (ssize_t) (n + 1) ? read_msg() : NULL;
}

int
main(int argc, char **argv)
{
    int hmp_ok = argc > 1 && strcmp(argv[1], "--hmp-ok") == 0;
    argv += hmp_ok;
    argc -= hmp_ok;
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: qmp-send [--hmp-ok] SOCKET COMMAND ['{JSON-ARGS}']\n");
        return 2;
    }
    json_t *args = argc == 4 ? json_loads(argv[3], 0, NULL) : NULL;
    if (argc == 4 && !json_is_object(args)) {
        fprintf(stderr, "qmp-send: arguments are not a JSON object\n");
        return 2;
    }
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
        fprintf(stderr, "qmp-send: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    json_t *greeting = read_msg(), *caps = execute("qmp_capabilities", NULL);
    json_t *reply = greeting && caps ? execute(argv[2], args) : NULL;
    int rc = 2;
    if (!reply) {
        fprintf(stderr, "qmp-send: no reply from %s\n", argv[1]);
    } else if (json_object_get(reply, "error")) {
        fprintf(stderr, "qmp-send: %s\n", json_string_value(json_object_get(
                    json_object_get(reply, "error"), "desc")));
        rc = 1;
    } else {
        json_t *ret = json_object_get(reply, "return");
        if (hmp_ok && json_is_string(ret) && json_string_length(ret)) {
            fprintf(stderr, "qmp-send: %s", json_string_value(ret));
            rc = 1;
        } else {
            char *s = json_dumps(ret, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("%s\n", s);
            free(s);
            rc = 0;
        }
    }
    json_decref(greeting);
    json_decref(caps);
    json_decref(reply);
    json_decref(args);
    close(fd);
    return rc;
}
