/* Names of a backup job's temporary objects.  See nbdx.h for the list. */
#include "nbd/nbdx.h"

#include <stdio.h>

char *
nbdx_node_name(char kind, int job, size_t i)
{
    return xasprintf(NBDX_PREFIX "%c%d-%zu", kind, job, i);
}

char *
nbdx_job_name(const char *job, const char *disk)
{
    return xasprintf(NBDX_PREFIX "%s-%s", job, disk);
}

char *
nbdx_bitmap_name(const char *job, const char *disk)
{
    return xasprintf("ckptd:%s:%s", job, disk);
}

char *
nbdx_scratch_file(const char *dir, const char *job, const char *disk)
{
    return xasprintf("%s/" NBDX_PREFIX "%s-%s.qcow2", dir, job, disk);
}

bool
nbdx_node_is_ours(const char *node, int jobnum)
{
    size_t plen = strlen(NBDX_PREFIX);
    if (strncmp(node, NBDX_PREFIX, plen) != 0 || !strchr("sfc", node[plen]) ||
        node[plen] == '\0')
        return false;
    const char *p = node + plen + 1;
    char *end;
    long n = strtol(p, &end, 10);
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
nbdx_id_is_ours(const char *id, const char *job)
{
    return has_job_prefix(id, NBDX_PREFIX, job, '-');
}

bool
nbdx_bitmap_is_ours(const char *bitmap, const char *job)
{
    return has_job_prefix(bitmap, "ckptd:", job, ':');
}
