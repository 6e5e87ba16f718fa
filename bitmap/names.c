/* Names of a backup job's temporary objects.  See bitmap/plan.h for the list. */
#include "bitmap/plan.h"

#include <stdio.h>

char *
ckpt_tmp_node(char kind, long long job, size_t i)
{
    return xasprintf(CKPT_TMP_PREFIX "%c%lld-%zu", kind, job, i);
}

char *
ckpt_tmp_job(const char *job, const char *disk)
{
    return xasprintf(CKPT_TMP_PREFIX "%s-%s", job, disk);
}

char *
ckpt_tmp_bitmap(const char *job, const char *disk)
{
    return xasprintf("ckptd:%s:%s", job, disk);
}

char *
ckpt_tmp_scratch(const char *dir, const char *tag, const char *job, const char *disk)
{
    return xasprintf("%s/" CKPT_TMP_PREFIX "%s-%s-%s.qcow2", dir, tag, job, disk);
}

bool
ckpt_tmp_node_is_ours(const char *node, long long jobnum)
{
    size_t plen = strlen(CKPT_TMP_PREFIX);
    if (strncmp(node, CKPT_TMP_PREFIX, plen) != 0 || !strchr("sfcwatq", node[plen]) ||
        node[plen] == '\0')
        return false;
    const char *p = node + plen + 1;
    char *end;
    long long n = strtoll(p, &end, 10);
    if (end == p || *end != '-')
        return false;
    return jobnum < 0 || n == jobnum;
}

static bool
has_job_prefix(const char *name, const char *prefix, const char *job, char sep)
{
    size_t plen = strlen(prefix);
    if (strncmp(name, prefix, plen) != 0)
        return false;
    if (!job)
        return true;
    size_t jlen = strlen(job);
    return strncmp(name + plen, job, jlen) == 0 && name[plen + jlen] == sep;
}

bool
ckpt_tmp_id_is_ours(const char *id, const char *job)
{
    return has_job_prefix(id, CKPT_TMP_PREFIX, job, '-');
}

bool
ckpt_tmp_bitmap_is_ours(const char *bitmap, const char *job)
{
    return has_job_prefix(bitmap, "ckptd:", job, ':');
}

/* A scratch file of this agent's VM (tag), or the dot name it has while
 * being removed: another VM's agent may share the directory. */
bool
ckpt_tmp_file_is_ours(const char *leaf, const char *tag)
{
    const char *orig;
    if (unlink_is_trash(leaf, &orig))
        leaf = orig;
    size_t len = strlen(leaf), plen = strlen(CKPT_TMP_PREFIX), tlen = strlen(tag);
    return len > plen + tlen + 7 && strncmp(leaf, CKPT_TMP_PREFIX, plen) == 0 &&
           strncmp(leaf + plen, tag, tlen) == 0 && leaf[plen + tlen] == '-' &&
           strcmp(leaf + len - 6, ".qcow2") == 0;
}
