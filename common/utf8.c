/* UTF-8 text that leaves the agent: checked, cut at character boundaries,
 * repaired.  jansson refuses to encode a string that is not valid UTF-8,
 * so a message cut in the middle of a character used to vanish instead
 * of being sent (issue 11). */
#include "common/common.h"

#include <stdio.h>

/* Bytes of the valid character at s[0, len), or 0 when it is not one. */
static size_t
utf8_char_len(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if (len < n)
        return 0;
    unsigned cp = c & (0x3f >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

size_t
utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *) s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_char_len(u + i, len - i);
        if (!n)
            break;
        i += n;
    }
    return i;
}

void
utf8_truncate(char *s, size_t max)
{
    size_t len = strlen(s);
    if (len <= max)
        return;
    /* Back up over continuation bytes to the start of the cut character. */
    size_t cut = max;
    while (cut > 0 && max - cut < 3 && ((unsigned char) s[cut] & 0xc0) == 0x80)
        cut--;
    s[cut] = '\0';
}

void
utf8_repair(char *s)
{
    unsigned char *u = (unsigned char *) s;
    size_t len = strlen(s), i = 0;
    while (i < len) {
        size_t n = utf8_char_len(u + i, len - i);
        if (n) {
            i += n;
        } else {
            u[i] = '?';
            i++;
        }
    }
}

void
ckpt_vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
    static const char more[] = "...";
    if (size == 0)
        return;
    int r = vsnprintf(buf, size, fmt, ap);
    if (r < 0) {
        snprintf(buf, size, "(message could not be formatted)");
        return;
    }
    if ((size_t) r >= size && size > sizeof more) {
        utf8_truncate(buf, size - sizeof more);
        strcat(buf, more);
    }
    utf8_repair(buf);
}

void
ckpt_format(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ckpt_vformat(buf, size, fmt, ap);
    va_end(ap);
}
