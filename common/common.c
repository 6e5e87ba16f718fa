/* Logging to stderr and allocation helpers. */
#include "common/common.h"

#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Set once by main before the loop starts. */
static enum log_level log_threshold = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;

static const char *const level_names[] = { "error", "warning", "info", "debug" };

void
log_setup(enum log_level level, enum log_format format)
{
    log_threshold = level;
    log_fmt = format;
}

int
log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level) i;
            return 0;
        }
    if (strcasecmp(s, "warn") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

/* msg with every byte that is not part of a valid UTF-8 character
 * written as the four characters \xNN (caller frees). */
static char *
log_escape_bytes(const char *msg)
{
    size_t len = strlen(msg), ok = utf8_valid_prefix(msg, len);
    if (ok == len)
        return xstrdup(msg);
    char *out = xmalloc(4 * len + 1), *o = out;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_valid_prefix(msg + i, len - i);
        memcpy(o, msg + i, n);
        o += n;
        i += n;
        if (i < len) {
            o += sprintf(o, "\\x%02x", (unsigned char) msg[i]);
            i++;
        }
    }
    *o = '\0';
    return out;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > log_threshold)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r >= (int) sizeof msg)          /* cut: drop a split last character */
        utf8_truncate(msg, sizeof msg - 2);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (log_fmt == LOG_FORMAT_JSON) {
        /* jansson refuses invalid UTF-8 (a name from a client, a path):
         * such bytes are written as \xNN, never dropped with the line. */
        CLEANUP_FREE char *clean = log_escape_bytes(msg);
        json_t *j = json_pack("{s:f, s:s, s:s}",
                              "time", ts.tv_sec + ts.tv_nsec / 1e9,
                              "level", level_names[level], "msg", clean);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s)
            fprintf(stderr, "%s\n", s);
        else
            fprintf(stderr, "{\"level\":\"error\",\"msg\":\"a log line could not "
                    "be encoded\"}\n");
        free(s);
        json_decref(j);
    } else {
        struct tm tm;
        char when[32];
        gmtime_r(&ts.tv_sec, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03ldZ ckptd[%d] %s: %s\n", when,
                ts.tv_nsec / 1000000, (int) getpid(), level_names[level], msg);
    }
}

static void *
check_alloc(void *p)
{
    if (!p) {
        fputs("ckptd: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *xmalloc(size_t n) { return check_alloc(malloc(n ? n : 1)); }
void *xcalloc(size_t n, size_t size) { return check_alloc(calloc(n ? n : 1, size ? size : 1)); }
void *xrealloc(void *p, size_t n) { return check_alloc(realloc(p, n ? n : 1)); }
char *xstrdup(const char *s) { return check_alloc(strdup(s)); }

char *
xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0)
        check_alloc(NULL);
    return s;
}

void
str_vec_free_all(struct str_vec *v)
{
    for (size_t i = 0; i < v->len; i++)
        free(v->ptr[i]);
    str_vec_reset(v);
}

const char *
ckpt_err_class(enum ckpt_err e)
{
    static const char *const names[] = {
        [CKPT_OK] = "OK",
        [CKPT_ERR_COMMAND_NOT_FOUND] = "CommandNotFound",
        [CKPT_ERR_INVALID_PARAMETER] = "InvalidParameter",
        [CKPT_ERR_NOT_FOUND] = "NotFound",
        [CKPT_ERR_ALREADY_EXISTS] = "AlreadyExists",
        [CKPT_ERR_BUSY] = "Busy",
        [CKPT_ERR_UNSUPPORTED] = "Unsupported",
        [CKPT_ERR_INCONSISTENT] = "Inconsistent",
        [CKPT_ERR_NOT_CONNECTED] = "NotConnected",
        [CKPT_ERR_QEMU] = "QemuError",
        [CKPT_ERR_GENERIC] = "GenericError",
        [CKPT_ERR_GUEST_AGENT] = "GuestAgentError",
    };
    return (size_t) e < ARRAY_SIZE(names) ? names[e] : "GenericError";
}

enum ckpt_err
ckpt_fail(struct ckpt_error *e, enum ckpt_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ckpt_vformat(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}
