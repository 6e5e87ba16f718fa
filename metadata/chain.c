/* The chain id and the chain's gone set.  See README.md ("Identity").
 *
 * The gone set is what lets a disk come back: a disk detached while one
 * of its checkpoints was deleted still holds that checkpoint's records,
 * and nothing in them says it is gone.  The disks that stayed say so. */
#include "metadata/metadata.h"

#include <inttypes.h>
#include <stdio.h>

bool
meta_chain_valid(const char *s)
{
    size_t i;
    for (i = 0; i < META_CHAIN_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[i] == '\0';
}

/* FNV-1a, 64 bits: stable across builds and hosts, which is all an id
 * derived from a record needs (it is no secret). */
void
meta_chain_derive(const struct meta_record *oldest, char out[META_CHAIN_LEN + 1])
{
    CLEANUP_FREE char *key = xasprintf("%" PRIu64 ":%" PRId64 ":%s", oldest->seq,
                                       oldest->ctime, oldest->name);
    uint64_t h = 14695981039346656037u;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char) *p) * 1099511628211u;
    snprintf(out, META_CHAIN_LEN + 1, "%016" PRIx64, h);
}

/* --- sets of sequence numbers --- */

void
meta_seqs_add_range(struct meta_seqs *s, uint64_t lo, uint64_t hi)
{
    /* Keep the ranges sorted, merged where they overlap or touch. */
    size_t i = 0;
    while (i < s->n && s->r[i].hi != UINT64_MAX && s->r[i].hi + 1 < lo)
        i++;
    size_t j = i;
    while (j < s->n && (hi == UINT64_MAX || s->r[j].lo <= hi + 1)) {
        lo = s->r[j].lo < lo ? s->r[j].lo : lo;
        hi = s->r[j].hi > hi ? s->r[j].hi : hi;
        j++;
    }
    /* Ranges [i, j) are replaced by one. */
    if (j == i) {
        s->r = xrealloc(s->r, (s->n + 1) * sizeof *s->r);
        memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
        s->n++;
    } else {
        memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof *s->r);
        s->n -= j - i - 1;
    }
    s->r[i] = (struct meta_seq_range) { lo, hi };
}

void
meta_seqs_add(struct meta_seqs *s, uint64_t seq)
{
    meta_seqs_add_range(s, seq, seq);
}

bool
meta_seqs_has(const struct meta_seqs *s, uint64_t seq)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].hi < seq)
            lo = mid + 1;
        else if (s->r[mid].lo > seq)
            hi = mid;
        else
            return true;
    }
    return false;
}

uint64_t
meta_seqs_max(const struct meta_seqs *s)
{
    return s->n ? s->r[s->n - 1].hi : 0;
}

bool
meta_seqs_equal(const struct meta_seqs *a, const struct meta_seqs *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->r, b->r, a->n * sizeof *a->r) == 0);
}

void
meta_seqs_free(struct meta_seqs *s)
{
    free(s->r);
    s->r = NULL;
    s->n = 0;
}

/* --- gone marks --- */

void
meta_gone_encode(const char *chain, const struct meta_seqs *s, struct str_vec *out)
{
    size_t i = 0;
    while (i < s->n) {
        char name[META_BITMAP_NAME_MAX + 1];
        int len = snprintf(name, sizeof name, META_GONE_PREFIX "%s:", chain);
        const char *sep = "";
        /* A range is at most 41 bytes: 20 digits, '-', 20 digits. */
        for (; i < s->n && (size_t) len + 42 <= META_BITMAP_NAME_MAX; i++, sep = ",") {
            const struct meta_seq_range *r = &s->r[i];
            if (r->lo == r->hi)
                len += snprintf(name + len, sizeof name - (size_t) len, "%s%" PRIu64,
                                sep, r->lo);
            else
                len += snprintf(name + len, sizeof name - (size_t) len,
                                "%s%" PRIu64 "-%" PRIu64, sep, r->lo, r->hi);
        }
        str_vec_append(out, xstrdup(name));
    }
}

bool
meta_gone_decode(const char *bitmap, char chain[META_CHAIN_LEN + 1], struct meta_seqs *s)
{
    size_t plen = strlen(META_GONE_PREFIX);
    if (strncmp(bitmap, META_GONE_PREFIX, plen) != 0 ||
        strlen(bitmap) < plen + META_CHAIN_LEN + 2 || bitmap[plen + META_CHAIN_LEN] != ':')
        return false;
    char id[META_CHAIN_LEN + 1];
    memcpy(id, bitmap + plen, META_CHAIN_LEN);
    id[META_CHAIN_LEN] = '\0';
    if (!meta_chain_valid(id))
        return false;
    /* Parse the whole list before adding any of it: a malformed mark is
     * not ours to read, and adds nothing. */
    struct meta_seqs parsed = { 0 };
    const char *p = bitmap + plen + META_CHAIN_LEN + 1;
    for (;;) {
        uint64_t lo, hi;
        if (!meta_parse_u64(&p, &lo))
            break;
        hi = lo;
        if (*p == '-' && (p++, !meta_parse_u64(&p, &hi) || hi < lo))
            break;
        meta_seqs_add_range(&parsed, lo, hi);
        if (*p == '\0') {
            memcpy(chain, id, sizeof id);
            for (size_t i = 0; s && i < parsed.n; i++)
                meta_seqs_add_range(s, parsed.r[i].lo, parsed.r[i].hi);
            meta_seqs_free(&parsed);
            return true;
        }
        if (*p++ != ',')
            break;
    }
    meta_seqs_free(&parsed);
    return false;
}
