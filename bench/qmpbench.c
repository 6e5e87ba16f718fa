/* qmpbench: times QMP commands over one persistent connection, to a QEMU
 * monitor or to ckptd's control socket (both speak QMP).
 *
 *   qmpbench SOCKET < SCRIPT
 *
 * The whole script is read before the connection is made (so whatever
 * generates it does not compete for the CPU while commands are timed).
 * One line per step:
 *
 *   TAG COMMAND [JSON-ARGUMENTS]   send, wait for the reply
 *   TAG @wait EVENT [KEY VALUE]    wait for an event (data.KEY == VALUE,
 *                                  a string); events that arrived since the
 *                                  previous @wait count
 *   TAG @sleep MS                  pause (for pacing; also timed)
 *
 * Consecutive lines with the same TAG form one sample: its time is the wall
 * clock from sending the first line to the end of the last.  For each sample
 * whose TAG is not "-", one line "NAME MS" goes to stdout, NAME being TAG
 * up to an optional '#' (so "c#1", "c#2" are two samples of "c").
 * A TAG starting with '?' accepts an error reply; otherwise an error (or a
 * non-empty HMP reply: human-monitor-command failures come back as text)
 * stops the script, exit 1.  In arguments, %ID% becomes the "id" string of
 * the latest reply that returned one (backup-begin's job id).
 * Compiled with -Wall -Wextra -Werror by the Makefile's bench rules. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

static int fd = -1;
static char *buf;
static size_t len, cap;
static json_t *events;          /* events seen since the last @wait */
static char last_id[256];

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

/* Next message (reply or event); NULL on EOF or timeout. */
static json_t *
read_msg(void)
{
    for (;;) {
        char *nl = len ? memchr(buf, '\n', len) : NULL;
        if (nl) {
            json_t *j = json_loadb(buf, (size_t) (nl - buf), 0, NULL);
            size_t used = (size_t) (nl + 1 - buf);
            memmove(buf, nl + 1, len - used);
            len -= used;
            if (j)
                return j;
            continue;
        }
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            buf = realloc(buf, cap);
            if (!buf)
                return NULL;
        }
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 600000) <= 0)
            return NULL;
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0)
            return NULL;
        len += (size_t) n;
    }
}

/* Reply to the command just sent; events on the way are kept. */
static json_t *
read_reply(void)
{
    for (;;) {
        json_t *j = read_msg();
        if (!j || !json_object_get(j, "event"))
            return j;
        json_array_append_new(events, j);
    }
}

static int
send_line(const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t) w;
    }
    return 0;
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
    char *line = malloc(n + 2);
    memcpy(line, s, n);
    line[n] = '\n';
    line[n + 1] = 0;
    free(s);
    int r = send_line(line);
    free(line);
    return r == 0 ? read_reply() : NULL;
}

static int
event_matches(json_t *ev, const char *name, const char *key, const char *val)
{
    if (strcmp(json_string_value(json_object_get(ev, "event")) ?: "", name))
        return 0;
    if (!key)
        return 1;
    json_t *v = json_object_get(json_object_get(ev, "data"), key);
    if (json_is_null(v) || !v)
        return strcmp(val, "null") == 0;
    return json_is_string(v) && strcmp(json_string_value(v), val) == 0;
}

static int
wait_event(const char *name, const char *key, const char *val)
{
    for (;;) {
        size_t i;
        json_t *ev;
        json_array_foreach(events, i, ev) {
            if (event_matches(ev, name, key, val)) {
                json_array_clear(events);
                return 0;
            }
        }
        json_array_clear(events);
        ev = read_msg();
        if (!ev)
            return -1;
        if (json_object_get(ev, "event"))
            json_array_append_new(events, ev);
        else
            json_decref(ev);
    }
}

/* The arguments text with %ID% replaced. */
static char *
substitute(const char *s)
{
    size_t idl = strlen(last_id), n = strlen(s);
    char *out = malloc(n * (idl + 1) + 1), *o = out;
    while (*s) {
        if (strncmp(s, "%ID%", 4) == 0) {
            memcpy(o, last_id, idl);
            o += idl;
            s += 4;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
    return out;
}

static void
emit(const char *tag, double ms)
{
    if (strcmp(tag, "-") == 0 || strcmp(tag, "?-") == 0)
        return;
    const char *t = tag[0] == '?' ? tag + 1 : tag;
    int n = (int) strcspn(t, "#");
    printf("%.*s %.3f\n", n, t, ms);
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: qmpbench SOCKET < SCRIPT\n");
        return 2;
    }
    /* The whole script first. */
    size_t slen = 0, scap = 1 << 16;
    char *script = malloc(scap);
    for (;;) {
        if (slen + 1 >= scap)
            script = realloc(script, scap *= 2);
        size_t n = fread(script + slen, 1, scap - slen - 1, stdin);
        if (!n)
            break;
        slen += n;
    }
    script[slen] = 0;

    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
        fprintf(stderr, "qmpbench: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    events = json_array();
    json_t *greeting = read_msg(), *caps = greeting ? execute("qmp_capabilities", NULL) : NULL;
    if (!caps || json_object_get(caps, "error")) {
        fprintf(stderr, "qmpbench: %s: no QMP greeting or negotiation\n", argv[1]);
        return 2;
    }
    json_decref(greeting);
    json_decref(caps);
    json_array_clear(events);

    char tag[256] = "", cur[256] = "";
    double t0 = 0, t1 = 0;
    int lineno = 0, rc = 0;
    for (char *line = strtok(script, "\n"); line; line = strtok(NULL, "\n")) {
        lineno++;
        char cmd[256];
        int off = 0;
        if (line[0] == '\n' || line[0] == 0)
            continue;
        if (sscanf(line, "%255s %255s %n", tag, cmd, &off) < 2) {
            fprintf(stderr, "qmpbench: line %d: TAG COMMAND expected\n", lineno);
            return 2;
        }
        const char *rest = line + off;
        if (strcmp(tag, cur) != 0) {
            if (cur[0])
                emit(cur, t1 - t0);
            snprintf(cur, sizeof cur, "%s", tag);
            t0 = now_ms();
        }
        if (strcmp(cmd, "@wait") == 0) {
            char ev[128], key[128], val[256];
            int k = sscanf(rest, "%127s %127s %255s", ev, key, val);
            if (k < 1 || wait_event(ev, k >= 3 ? key : NULL, k >= 3 ? val : NULL) < 0) {
                fprintf(stderr, "qmpbench: line %d: no event %s\n", lineno, k >= 1 ? ev : "?");
                rc = 1;
                break;
            }
        } else if (strcmp(cmd, "@sleep") == 0) {
            usleep((useconds_t) (atof(rest) * 1000));
        } else {
            json_t *args = NULL;
            if (*rest) {
                char *s = substitute(rest);
                json_error_t e;
                args = json_loads(s, 0, &e);
                free(s);
                if (!json_is_object(args)) {
                    fprintf(stderr, "qmpbench: line %d: bad JSON: %s\n", lineno, e.text);
                    return 2;
                }
            }
            json_t *r = execute(cmd, args);
            json_decref(args);
            if (!r) {
                fprintf(stderr, "qmpbench: line %d: %s: no reply\n", lineno, cmd);
                rc = 1;
                break;
            }
            json_t *ret = json_object_get(r, "return");
            json_t *err = json_object_get(r, "error");
            const char *bad = err ? json_string_value(json_object_get(err, "desc"))
                : json_is_string(ret) && json_string_length(ret) ? json_string_value(ret) : NULL;
            if (bad && tag[0] != '?') {
                fprintf(stderr, "qmpbench: line %d: %s: %s\n", lineno, cmd, bad);
                json_decref(r);
                rc = 1;
                break;
            }
            if (json_is_string(json_object_get(ret, "id")))
                snprintf(last_id, sizeof last_id, "%s",
                         json_string_value(json_object_get(ret, "id")));
            json_decref(r);
        }
        t1 = now_ms();
    }
    if (!rc && cur[0])
        emit(cur, t1 - t0);
    fflush(stdout);
    close(fd);
    json_decref(events);
    free(script);
    free(buf);
    return rc;
}
