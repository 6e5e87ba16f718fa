/* JSON stream splitter: finds where each top-level JSON value ends in a
 * byte stream, then hands exactly that slice to jansson.
 *
 * jansson cannot parse a prefix of a stream and say "need more", so we
 * scan the bytes ourselves, tracking {} / [] depth and strings (a brace
 * inside "..." or after a backslash does not count).  Scanning is also
 * where the caps are enforced: a message is dropped as soon as it grows
 * past max_msg or max_depth, and its remaining bytes are skipped without
 * being stored, so a peer cannot make us buffer more than max_msg plus
 * one feed.
 *
 * Resync rules (see qmp/README.md):
 * - bytes at top level that are neither whitespace nor '{' / '[' are
 *   garbage: reported once as BAD_JSON, then skipped up to and including
 *   the next newline (QMP peers send one message per line, so the next
 *   line is the natural place to start again);
 * - a message that is too big or too deep is reported once, as soon as
 *   the cap is crossed, then skipped to its matching close bracket.
 */
#include "qmp/qmp.h"

#include <stdio.h>

#include "common/common.h"

/* Below this a drained buffer is kept for reuse; above, it is freed so a
 * single large message does not pin memory for the life of a connection. */
#define QMP_STREAM_KEEP_CAP (64 * 1024)

void
qmp_stream_init(struct qmp_stream *s, size_t max_msg, int max_depth)
{
    *s = (struct qmp_stream) { .max_msg = max_msg, .max_depth = max_depth };
}

void
qmp_stream_free(struct qmp_stream *s)
{
    bool lenient = s->lenient;
    free(s->buf);
    qmp_stream_init(s, s->max_msg, s->max_depth);
    s->lenient = lenient;
}

void
qmp_stream_lenient(struct qmp_stream *s)
{
    s->lenient = true;
}

/* The message text with each byte inside a string that is not part of a
 * valid UTF-8 character replaced (caller frees); NULL when there is none.
 * In a value it becomes \u0000, which dispatch refuses naming the
 * argument; in a member name (jansson allows no NUL there) it becomes
 * U+FFFD, so the name is still reported as unknown, with the request's
 * id.  Outside strings such bytes stay: jansson reports them. */
static char *
qmp_stream_mark_bad_utf8(const char *text, size_t len, size_t *out_len)
{
    if (utf8_valid(text, len))
        return NULL;
    char *out = xmalloc(6 * len + 1);
    size_t o = 0, i = 0;
    bool in_string = false, escape = false, is_key = false, expect_key = false;
    bool is_object[128];            /* container kinds; deeper ones count as arrays */
    int depth = 0;
    while (i < len) {
        unsigned char c = (unsigned char) text[i];
        if (in_string && !escape && c >= 0x80) {
            size_t n = utf8_valid_prefix(text + i, len - i);
            if (n == 0) {
                const char *mark = is_key ? "\xef\xbf\xbd" : "\\u0000";
                memcpy(out + o, mark, strlen(mark));
                o += strlen(mark);
                i++;
                continue;
            }
            /* Copy the valid run up to the next ASCII byte. */
            size_t run = 0;
            while (run < n && ((unsigned char) text[i + run] >= 0x80))
                run++;
            if (run == 0)
                run = 1;
            memcpy(out + o, text + i, run);
            o += run;
            i += run;
            continue;
        }
        bool in_object = depth > 0 && depth <= (int) sizeof is_object && is_object[depth - 1];
        if (in_string) {
            if (escape)
                escape = false;
            else if (c == '\\')
                escape = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
            is_key = in_object && expect_key;
        } else if (c == '{' || c == '[') {
            if (depth < (int) sizeof is_object)
                is_object[depth] = c == '{';
            depth++;
            expect_key = c == '{';
        } else if (c == '}' || c == ']') {
            depth -= depth > 0;
            expect_key = false;
        } else if (c == ',') {
            expect_key = in_object;
        } else if (c == ':') {
            expect_key = false;
        }
        out[o++] = (char) c;
        i++;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* Drops the consumed bytes buf[0, start). */
static void
qmp_stream_compact(struct qmp_stream *s)
{
    if (s->start == 0)
        return;
    memmove(s->buf, s->buf + s->start, s->len - s->start);
    s->len -= s->start;
    s->scan -= s->start;
    s->start = 0;
    if (s->len == 0 && s->cap > QMP_STREAM_KEEP_CAP) {
        free(s->buf);
        s->buf = NULL;
        s->cap = 0;
    }
}

void
qmp_stream_feed(struct qmp_stream *s, const char *data, size_t len)
{
    qmp_stream_compact(s);
    if (len == 0)
        return;
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + len)
            cap *= 2;
        s->buf = xrealloc(s->buf, cap);
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
}

static void
qmp_stream_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
qmp_stream_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (!errbuf || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static bool
qmp_stream_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Resets the per-message state once a message (or its skipped tail) ends. */
static void
qmp_stream_end_message(struct qmp_stream *s)
{
    s->start = s->scan;
    s->depth = 0;
    s->max_seen_depth = 0;
    s->in_string = s->escape = false;
    s->skipping = false;
    s->msg_bytes = 0;
}

/* Advances over one byte of a message; returns true at its final byte. */
static bool
qmp_stream_step(struct qmp_stream *s, char c)
{
    s->scan++;
    s->msg_bytes++;
    if (s->in_string) {
        if (s->escape)
            s->escape = false;
        else if (c == '\\')
            s->escape = true;
        else if (c == '"')
            s->in_string = false;
        return false;
    }
    switch (c) {
    case '"':
        s->in_string = true;
        return false;
    case '{': case '[':
        s->depth++;
        if (s->depth > s->max_seen_depth)
            s->max_seen_depth = s->depth;
        return false;
    case '}': case ']':
        /* Mismatched pairs such as {] still end the message here; jansson
         * then reports them, which is all a resync needs. */
        return --s->depth == 0;
    default:
        return false;
    }
}

static enum qmp_stream_result
qmp_stream_parse(struct qmp_stream *s, json_t **msg, char *errbuf,
                 size_t errlen)
{
    json_error_t err;
    const char *text = s->buf + s->start;
    size_t len = s->scan - s->start;
    CLEANUP_FREE char *marked = NULL;
    if (s->lenient && (marked = qmp_stream_mark_bad_utf8(text, len, &len)))
        text = marked;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | (s->lenient ? JSON_ALLOW_NUL : 0),
                           &err);
    qmp_stream_end_message(s);
    if (!j) {
        /* A member name holding NUL (escaped, or bytes that are not UTF-8)
         * is said in our words, not jansson's. */
        if (s->lenient && strstr(err.text, "NUL"))
            qmp_stream_err(errbuf, errlen, "a member name holds a NUL character "
                           "or bytes that are not UTF-8");
        else
            qmp_stream_err(errbuf, errlen, "%s", err.text);
        return QMP_STREAM_BAD_JSON;
    }
    *msg = j;
    return QMP_STREAM_MESSAGE;
}

/* Scans the message that starts at s->start.  Returns NEED_MORE if the
 * buffer ends before the message does. */
static enum qmp_stream_result
qmp_stream_scan_message(struct qmp_stream *s, json_t **msg, char *errbuf,
                        size_t errlen)
{
    while (s->scan < s->len) {
        bool end = qmp_stream_step(s, s->buf[s->scan]);
        if (s->skipping) {
            /* Already reported: forget the bytes as we go. */
            s->start = s->scan;
            if (end) {
                qmp_stream_end_message(s);
                return QMP_STREAM_NEED_MORE;
            }
            continue;
        }
        if (s->msg_bytes > s->max_msg) {
            qmp_stream_err(errbuf, errlen, "message over %zu bytes",
                           s->max_msg);
            s->start = s->scan;
            if (end)
                qmp_stream_end_message(s);
            else
                s->skipping = true;
            return QMP_STREAM_TOO_BIG;
        }
        if (s->depth > s->max_depth) {
            qmp_stream_err(errbuf, errlen, "message nested deeper than %d "
                           "levels", s->max_depth);
            s->start = s->scan;
            s->skipping = true;
            return QMP_STREAM_TOO_DEEP;
        }
        if (end)
            return qmp_stream_parse(s, msg, errbuf, errlen);
    }
    return QMP_STREAM_NEED_MORE;
}

enum qmp_stream_result
qmp_stream_next(struct qmp_stream *s, json_t **msg, char *errbuf,
                size_t errlen)
{
    *msg = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';

    while (s->scan < s->len) {
        if (s->depth > 0 || s->skipping) {
            enum qmp_stream_result r =
                qmp_stream_scan_message(s, msg, errbuf, errlen);
            if (r != QMP_STREAM_NEED_MORE)
                return r;
            continue;
        }

        char c = s->buf[s->scan];
        if (s->in_garbage) {
            s->scan++;
            s->start = s->scan;
            if (c == '\n')
                s->in_garbage = false;
        } else if (qmp_stream_is_space(c)) {
            s->scan++;
            s->start = s->scan;
        } else if (c == '{' || c == '[') {
            s->start = s->scan;
            enum qmp_stream_result r =
                qmp_stream_scan_message(s, msg, errbuf, errlen);
            if (r != QMP_STREAM_NEED_MORE)
                return r;
        } else {
            s->in_garbage = true;
            s->scan++;
            s->start = s->scan;
            qmp_stream_err(errbuf, errlen,
                           "unexpected byte 0x%02x outside an object or "
                           "array; skipped to the end of the line",
                           (unsigned char) c);
            return QMP_STREAM_BAD_JSON;
        }
    }
    qmp_stream_compact(s);
    return QMP_STREAM_NEED_MORE;
}
