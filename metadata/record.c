/* One checkpoint record <-> one bitmap name.  See README.md.
 *
 * The record bitmap is written once, when the checkpoint is created, and
 * removed with it: parents are not stored but derived from the sequence
 * numbers, so deleting a checkpoint never has to rewrite another's record. */
#include "metadata/metadata.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t
b64_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static void
b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t) in[i] << 16;
        if (i + 1 < n) v |= (uint32_t) in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        for (size_t k = 0; k < chars; k++)
            out[o++] = b64url[(v >> (18 - 6 * k)) & 63];
    }
    out[o] = '\0';
}

static int
b64_value(char c)
{
    const char *p = c ? strchr(b64url, c) : NULL;
    return p ? (int) (p - b64url) : -1;
}

/* Returns a new NUL-terminated string, or NULL if s is not base64url or
 * decodes to bytes containing NUL. */
static char *
b64_decode(const char *s)
{
    size_t n = strlen(s);
    if (n % 4 == 1)
        return NULL;
    char *out = xmalloc(n / 4 * 3 + 3);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        size_t chars = n - i >= 4 ? 4 : n - i;
        for (size_t k = 0; k < 4; k++) {
            int d = k < chars ? b64_value(s[i + k]) : 0;
            if (d < 0) {
                free(out);
                return NULL;
            }
            v |= (uint32_t) d << (18 - 6 * k);
        }
        for (size_t k = 0; k + 1 < chars; k++)
            out[o++] = (char) ((v >> (16 - 8 * k)) & 0xff);
    }
    out[o] = '\0';
    if (strlen(out) != o) {
        free(out);
        return NULL;
    }
    return out;
}

/* Worst case of the fixed part: prefix, 20-digit seq, 20-digit time,
 * name, the chain id, and four ':' separators.  Sized for a record with
 * a chain id, which every record this version writes has. */
static size_t
fixed_len(size_t name_len)
{
    return strlen(META_RECORD_PREFIX) + 20 + 1 + 20 + 1 + name_len + 1 + 1 +
           META_CHAIN_LEN;
}

size_t
meta_record_max_description(size_t name_len)
{
    size_t room = META_BITMAP_NAME_MAX - fixed_len(name_len);
    return room / 4 * 3;
}

char *
meta_record_encode(const struct meta_record *r, struct ckpt_error *e)
{
    const char *desc = r->description ? r->description : "";
    size_t dlen = strlen(desc);
    if (r->ctime < 0) {
        ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                  "checkpoint '%s' cannot have a creation time before 1970", r->name);
        return NULL;
    }
    if (dlen > meta_record_max_description(strlen(r->name))) {
        ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                  "the description of checkpoint '%s' is %zu bytes; at most %zu fit in the image",
                  r->name, dlen, meta_record_max_description(strlen(r->name)));
        return NULL;
    }
    if (r->chain[0] && !meta_chain_valid(r->chain)) {
        ckpt_fail(e, CKPT_ERR_INVALID_PARAMETER,
                  "checkpoint '%s' has a malformed chain id '%s'", r->name, r->chain);
        return NULL;
    }
    CLEANUP_FREE char *enc = xmalloc(b64_len(dlen) + 1);
    b64_encode((const unsigned char *) desc, dlen, enc);
    /* With a chain id the description field is always there, maybe
     * empty, so that the id is always the sixth field. */
    if (r->chain[0])
        return xasprintf(META_RECORD_PREFIX "%" PRIu64 ":%" PRId64 ":%s:%s:%s",
                         r->seq, r->ctime, r->name, enc, r->chain);
    if (dlen)
        return xasprintf(META_RECORD_PREFIX "%" PRIu64 ":%" PRId64 ":%s:%s",
                         r->seq, r->ctime, r->name, enc);
    return xasprintf(META_RECORD_PREFIX "%" PRIu64 ":%" PRId64 ":%s",
                     r->seq, r->ctime, r->name);
}

/* Parses a decimal number up to ':' or the end; no sign, no leading 0s. */
bool
meta_parse_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        uint64_t digit = (uint64_t) (*s - '0');
        if (v > UINT64_MAX / 10 || (v == UINT64_MAX / 10 && digit > UINT64_MAX % 10))
            return false;
        v = v * 10 + digit;
    }
    *out = v;
    *p = s;
    return true;
}

int
meta_record_decode(const char *bitmap, struct meta_record *out)
{
    size_t plen = strlen(META_RECORD_PREFIX);
    if (strncmp(bitmap, META_RECORD_PREFIX, plen) != 0 ||
        strncmp(bitmap, META_NEXT_PREFIX, strlen(META_NEXT_PREFIX)) == 0 ||
        strncmp(bitmap, META_GONE_PREFIX, strlen(META_GONE_PREFIX)) == 0)
        return 0;
    const char *p = bitmap + plen;
    uint64_t seq, ctime;
    if (!meta_parse_u64(&p, &seq) || *p++ != ':' ||
        !meta_parse_u64(&p, &ctime) || *p++ != ':' || ctime > INT64_MAX)
        return -1;
    const char *colon = strchr(p, ':');
    size_t nlen = colon ? (size_t) (colon - p) : strlen(p);
    char *name = strndup(p, nlen);
    if (!name || !meta_name_valid(name)) {
        free(name);
        return -1;
    }
    /* After the name: nothing (no description, no chain: an earlier
     * ckptd's), DESC (the same), or DESC:CHAIN (DESC maybe empty). */
    char *desc = NULL;
    const char *chain = colon ? strchr(colon + 1, ':') : NULL;
    if (chain && !meta_chain_valid(chain + 1)) {
        free(name);
        return -1;
    }
    if (colon) {
        CLEANUP_FREE char *field = strndup(colon + 1, chain ? (size_t) (chain - colon - 1)
                                                            : strlen(colon + 1));
        if (!field || !(desc = b64_decode(field))) {
            free(name);
            return -1;
        }
    }
    *out = (struct meta_record) {
        .name = name, .seq = seq, .ctime = (int64_t) ctime,
        .description = desc && *desc ? desc : NULL,
    };
    if (chain)
        memcpy(out->chain, chain + 1, META_CHAIN_LEN + 1);
    if (desc && !*desc)
        free(desc);
    return 1;
}

void
meta_record_clear(struct meta_record *r)
{
    free(r->name);
    free(r->description);
    memset(r, 0, sizeof *r);
}

bool
meta_bitmap_is_ours(const char *bitmap)
{
    /* Records start "ckptd1:" (a version digit, then ':'); temporary
     * bitmaps start "ckptd:".  Neither can be a checkpoint name, since a
     * checkpoint name has no ':'. */
    if (strncmp(bitmap, "ckptd", 5) != 0)
        return false;
    const char *p = bitmap + 5;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == ':';
}

/* The sequence high-water mark: "ckptd1:next:N", the next sequence
 * number to hand out, kept where the newest checkpoint was deleted (its
 * record, which held the highest number, is gone). */
char *
meta_next_encode(uint64_t next)
{
    return xasprintf(META_NEXT_PREFIX "%llu", (unsigned long long) next);
}

bool
meta_next_decode(const char *bitmap, uint64_t *next)
{
    size_t plen = strlen(META_NEXT_PREFIX);
    if (strncmp(bitmap, META_NEXT_PREFIX, plen) != 0)
        return false;
    const char *p = bitmap + plen;
    return meta_parse_u64(&p, next) && *p == '\0';
}
