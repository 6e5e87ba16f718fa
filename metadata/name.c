/* Checkpoint names: libvirt's pattern, so names move between the two. */
#include "metadata/metadata.h"

static bool
name_char(char c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
        (c >= '0' && c <= '9') || c == '_' || c == '-')
        return true;
    return !first && c == '.';
}

bool
meta_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > META_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char(name[i], i == 0))
            return false;
    return true;
}
