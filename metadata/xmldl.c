/* Loading libxml2 on first use; see xmldl.h for why. */
#include "metadata/xmldl.h"

#include <dlfcn.h>

#define XMLDL_SONAME "libxml2.so.2"

/* Loaded once, then read-only: configuration more than state. */
static struct xmldl table;
static bool loaded;

static bool
load(struct ckpt_error *e)
{
    void *h = dlopen(XMLDL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "XML needs %s, which cannot be "
                  "loaded: %s", XMLDL_SONAME, dlerror());
        return false;
    }
    struct { const char *name; void **slot; } syms[] = {
#define SYM(field, name) { name, (void **) &table.field }
        SYM(InitParser, "xmlInitParser"),
        SYM(NewParserCtxt, "xmlNewParserCtxt"),
        SYM(CtxtReadMemory, "xmlCtxtReadMemory"),
        SYM(StopParser, "xmlStopParser"),
        SYM(CtxtGetLastError, "xmlCtxtGetLastError"),
        SYM(FreeParserCtxt, "xmlFreeParserCtxt"),
        SYM(FreeDoc, "xmlFreeDoc"),
        SYM(DocGetRootElement, "xmlDocGetRootElement"),
        SYM(StrEqual, "xmlStrEqual"),
        SYM(NodeGetContent, "xmlNodeGetContent"),
        SYM(GetNoNsProp, "xmlGetNoNsProp"),
        SYM(SetStructuredErrorFunc, "xmlSetStructuredErrorFunc"),
        SYM(SetGenericErrorFunc, "xmlSetGenericErrorFunc"),
        SYM(StructuredError, "__xmlStructuredError"),
        SYM(StructuredErrorContext, "__xmlStructuredErrorContext"),
        SYM(GenericError, "__xmlGenericError"),
        SYM(GenericErrorContext, "__xmlGenericErrorContext"),
        SYM(Free, "xmlFree"),
#undef SYM
    };
    for (size_t i = 0; i < ARRAY_SIZE(syms); i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            ckpt_fail(e, CKPT_ERR_UNSUPPORTED, "%s has no %s", XMLDL_SONAME,
                      syms[i].name);
            dlclose(h);
            return false;
        }
    table.InitParser();
    return true;
}

const struct xmldl *
xmldl_get(struct ckpt_error *e)
{
    if (!loaded)
        loaded = load(e);
    return loaded ? &table : NULL;
}
