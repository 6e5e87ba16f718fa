/* ckptctl output: errors, JSON, sizes, times and tables. */
#include "ckptctl/ckptctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
ctl_fail(int code, const char *fmt, ...)
{
    va_list ap;

    /* stdout first, so text printed before the error keeps its order
     * when both go to one terminal or file. */
    fflush(stdout);
    fputs("ckptctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
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
