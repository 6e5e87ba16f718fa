/* ckptctl output: errors, JSON, sizes, times and tables. */
#include "ckptctl/ckptctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Set by --json: then every line ckptctl writes on stderr is one JSON
 * object, so that a script reads errors the way it reads replies. */
static bool ctl_json_stderr;

void
ctl_set_json(struct ctl_ctx *ctx)
{
    ctx->json = true;
    ctl_json_stderr = true;
}

/* The class an exit code stands for: the agent's own classes (the codes
 * map one to one, but for GenericError and CommandNotFound, which share
 * 10), and ckptctl's own for what happens on this side. */
static const char *
ctl_class_for_exit(int code)
{
    switch (code) {
    case CTL_EXIT_NOT_CONNECTED: return "NotConnected";
    case CTL_EXIT_USAGE: return "InvalidParameter";
    case CTL_EXIT_UNREACHABLE: return "Unreachable";
    case CTL_EXIT_NOT_FOUND: return "NotFound";
    case CTL_EXIT_EXISTS: return "AlreadyExists";
    case CTL_EXIT_BUSY: return "Busy";
    case CTL_EXIT_UNSUPPORTED: return "Unsupported";
    case CTL_EXIT_INCONSISTENT: return "Inconsistent";
    case CTL_EXIT_QEMU: return "QemuError";
    case CTL_EXIT_LOCAL: return "LocalError";
    case CTL_EXIT_SIGINT: case CTL_EXIT_SIGTERM: return "Interrupted";
    default: return "GenericError";
    }
}

static void __attribute__((format(printf, 3, 0)))
ctl_vmessage(const char *cls, const char *key, const char *fmt, va_list ap)
{
    /* stdout first, so text printed before the error keeps its order
     * when both go to one terminal or file. */
    fflush(stdout);
    if (ctl_json_stderr) {
        CLEANUP_FREE char *msg = NULL;
        CLEANUP_FREE char *line = NULL;
        CLEANUP_JSON json_t *j = NULL;
        json_t *desc;

        if (vasprintf(&msg, fmt, ap) < 0)
            abort();
        /* json_string refuses invalid UTF-8 (a file name in the message). */
        if (!(desc = json_string(msg)))
            desc = json_string("(message not valid UTF-8)");
        j = cls ? json_pack("{s:{s:s, s:o}}", key, "class", cls, "desc", desc)
                : json_pack("{s:o}", key, desc);
        line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (line)
            fprintf(stderr, "%s\n", line);
        return;
    }
    fputs("ckptctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int
ctl_fail(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vmessage(ctl_class_for_exit(code), "error", fmt, ap);
    va_end(ap);
    return code;
}

int
ctl_fail_class(int code, const char *cls, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vmessage(cls ? cls : ctl_class_for_exit(code), "error", fmt, ap);
    va_end(ap);
    return code;
}

void
ctl_note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vmessage(NULL, "note", fmt, ap);
    va_end(ap);
}

bool
ctl_json_errors(void)
{
    return ctl_json_stderr;
}

int
ctl_bad_reply(const char *command, const char *what)
{
    return ctl_fail(CTL_EXIT_OTHER, "unexpected reply to %s: %s", command, what);
}

void
ctl_print_json(json_t *j, size_t flags)
{
    /* JSON_ENCODE_ANY: raw may return a bare string or number. */
    CLEANUP_FREE char *s = json_dumps(j, flags | JSON_ENCODE_ANY);

    if (s)
        puts(s);
}

int
ctl_output(const struct ctl_ctx *ctx, const char *command, json_t *ret,
           int (*print)(const char *command, json_t *ret, const void *opaque),
           const void *opaque)
{
    if (ctx->json) {
        ctl_print_json(ret, JSON_COMPACT);
        return CTL_EXIT_OK;
    }
    return print(command, ret, opaque);
}

int
ctl_call_print(struct ctl_ctx *ctx, const char *command, json_t *args,
               int (*print)(const char *command, json_t *ret,
                            const void *opaque),
               const void *opaque)
{
    CLEANUP_JSON json_t *ret = NULL;
    int r = ctl_call(ctx, command, args, &ret);

    if (r != CTL_EXIT_OK)
        return r;
    return ctl_output(ctx, command, ret, print, opaque);
}

void
ctl_human_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                         "PiB", "EiB" };
    double v = (double) bytes;
    size_t u = 0;

    if (bytes < 1024) {
        snprintf(buf, len, "%u B", (unsigned) bytes);
        return;
    }
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    /* 1023.7 KiB would print as "1024 KiB"; say "1.0 MiB" instead. */
    if (v >= 1023.5 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, v < 9.95 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

int
ctl_make_dirs(const char *path, bool leaf)
{
    CLEANUP_FREE char *p = xstrdup(path);
    size_t len = strlen(p);
    struct stat st;

    while (len > 1 && p[len - 1] == '/')
        p[--len] = '\0';
    if (!leaf) {
        char *slash = strrchr(p, '/');
        if (!slash || slash == p)
            return CTL_EXIT_OK;
        *slash = '\0';
    }
    /* Each prefix in turn, so that the error names the first one missing
     * that cannot be made. */
    for (char *s = p + 1;; s++) {
        bool end = *s == '\0';
        if (*s != '/' && !end)
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return ctl_fail(CTL_EXIT_LOCAL, "cannot create directory %s: %s", p,
                            strerror(errno));
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
            return ctl_fail(CTL_EXIT_LOCAL, "%s is not a directory", p);
        if (end)
            return CTL_EXIT_OK;
        *s = '/';
    }
}

void
ctl_format_time(json_int_t secs, char *buf, size_t len)
{
    time_t t = (time_t) secs;
    struct tm tm;

    if (!localtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, len, "%lld", (long long) secs);
}

/* --- tables --- */

void
ctl_table_head(struct ctl_table *t, const char *const *cols, size_t n)
{
    for (size_t i = 0; i < n; i++)
        str_vec_append(&t->head, xstrdup(cols[i]));
}

void
ctl_table_row(struct ctl_table *t)
{
    ctl_row_vec_append(&t->rows, (struct str_vec) { 0 });
}

void
ctl_table_cell(struct ctl_table *t, const char *fmt, ...)
{
    va_list ap;
    char *cell;

    va_start(ap, fmt);
    if (vasprintf(&cell, fmt, ap) < 0)
        cell = NULL;
    va_end(ap);
    if (!cell) {
        fputs("ckptctl: out of memory\n", stderr);
        abort();
    }
    str_vec_append(&t->rows.ptr[t->rows.len - 1], cell);
}

static void
ctl_print_row(const struct str_vec *row, const size_t *width, size_t ncols)
{
    size_t n = row->len < ncols ? row->len : ncols;

    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n)
            printf("%-*s  ", (int) width[i], row->ptr[i]);
        else
            puts(row->ptr[i]);
    }
}

void
ctl_table_print(struct ctl_table *t)
{
    size_t ncols = t->head.len;
    CLEANUP_FREE size_t *width = xcalloc(ncols, sizeof *width);

    for (size_t i = 0; i < ncols; i++)
        width[i] = strlen(t->head.ptr[i]);
    for (size_t r = 0; r < t->rows.len; r++)
        for (size_t i = 0; i < t->rows.ptr[r].len && i < ncols; i++) {
            size_t w = strlen(t->rows.ptr[r].ptr[i]);
            if (w > width[i])
                width[i] = w;
        }
    ctl_print_row(&t->head, width, ncols);
    for (size_t r = 0; r < t->rows.len; r++)
        ctl_print_row(&t->rows.ptr[r], width, ncols);
    ctl_table_free(t);
}

void
ctl_table_free(struct ctl_table *t)
{
    for (size_t r = 0; r < t->rows.len; r++)
        str_vec_free_all(&t->rows.ptr[r]);
    str_vec_free_all(&t->head);
    ctl_row_vec_reset(&t->rows);
}
