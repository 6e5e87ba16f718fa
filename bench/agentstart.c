/* agentstart: how long ckptd takes from exec to its first useful answer.
 *
 *   agentstart COUNT CONTROL-SOCKET CKPTD [ARG]...
 *
 * COUNT times: spawn the agent (QEMU already running), connect to
 * CONTROL-SOCKET as soon as it exists, negotiate, and send query-status
 * until it answers "qemu": "connected"; print "start MS" (fork to that
 * answer) and, once the agent has settled for 200 ms, "rss KIB" (its
 * VmRSS idle, no client, no checkpoint work); then SIGTERM and wait.
 * Compiled with -Wall -Wextra -Werror by the Makefile's bench rules. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

/* Reads until `n` newlines arrived (or EOF / 10 s): the greeting and
 * replies are one line each.  Returns what was read, NUL-terminated. */
static int
read_lines(int fd, char *buf, size_t cap, int n)
{
    size_t len = 0;
    int seen = 0;
    while (seen < n && len + 1 < cap) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 10000) <= 0)
            return -1;
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0)
            return -1;
        for (ssize_t k = 0; k < r; k++)
            seen += buf[len + (size_t) k] == '\n';
        len += (size_t) r;
    }
    buf[len] = 0;
    return 0;
}

static long
rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

int
main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: agentstart COUNT CONTROL-SOCKET CKPTD [ARG]...\n");
        return 2;
    }
    int count = atoi(argv[1]);
    const char *path = argv[2];
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    static const char caps[] = "{\"execute\":\"qmp_capabilities\"}\n";
    static const char status[] = "{\"execute\":\"query-status\"}\n";
    char buf[8192];

    for (int k = 0; k < count; k++) {
        unlink(path);
        double t0 = now_ms();
        pid_t pid = fork();
        if (pid == 0) {
            execvp(argv[3], argv + 3);
            perror(argv[3]);
            _exit(127);
        }
        int fd = -1, ok = 0;
        while (!ok && now_ms() - t0 < 10000) {
            if (fd < 0) {
                fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (connect(fd, (struct sockaddr *) &sun, sizeof sun) < 0
                    || read_lines(fd, buf, sizeof buf, 1) < 0
                    || send(fd, caps, sizeof caps - 1, MSG_NOSIGNAL) < 0
                    || read_lines(fd, buf, sizeof buf, 1) < 0) {
                    close(fd);
                    fd = -1;
                    usleep(200);
                    continue;
                }
            }
            if (send(fd, status, sizeof status - 1, MSG_NOSIGNAL) < 0
                || read_lines(fd, buf, sizeof buf, 1) < 0) {
                close(fd);
                fd = -1;
                continue;
            }
            /* Events (QEMU_CONNECTED) may come first: read on until the
             * reply line. */
            while (strstr(buf, "\"event\"") && !strstr(buf, "\"return\"")
                   && read_lines(fd, buf, sizeof buf, 1) == 0)
                ;
            ok = strstr(buf, "\"qemu\": \"connected\"") || strstr(buf, "\"qemu\":\"connected\"");
            if (!ok)
                usleep(200);
        }
        double t1 = now_ms();
        if (fd >= 0)
            close(fd);
        if (!ok) {
            fprintf(stderr, "agentstart: no \"connected\" answer within 10 s\n");
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
            return 1;
        }
        printf("start %.3f\n", t1 - t0);
        usleep(200000);
        printf("rss %ld\n", rss_kib(pid));
        fflush(stdout);
        kill(pid, SIGTERM);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
    return 0;
}
