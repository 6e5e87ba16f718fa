/* Loading libnbd on first use; see nbddl.h for why. */
#include "agent/nbddl.h"

#include <dlfcn.h>

#define NBDDL_SONAME "libnbd.so.0"

/* Loaded once, then read-only: configuration more than state. */
static struct nbddl table;
static bool loaded;

static bool
load(struct ckpt_error *e)
{
    void *h = dlopen(NBDDL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "reading changes needs %s, which "
                  "cannot be loaded: %s", NBDDL_SONAME, dlerror());
        return false;
    }
    struct { const char *name; void **slot; } syms[] = {
#define SYM(field) { "nbd_" #field, (void **) &table.field }
        SYM(create), SYM(add_meta_context), SYM(connect_uri), SYM(get_size),
        SYM(block_status), SYM(shutdown), SYM(close), SYM(get_error),
#undef SYM
    };
    for (size_t i = 0; i < ARRAY_SIZE(syms); i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "%s has no %s", NBDDL_SONAME,
                      syms[i].name);
            dlclose(h);
            return false;
        }
    return true;
}

const struct nbddl *
nbddl_get(struct ckpt_error *e)
{
    if (!loaded)
        loaded = load(e);
    return loaded ? &table : NULL;
}
