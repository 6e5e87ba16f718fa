/* libxml2, loaded on first use.
 *
 * libxml2 brings ICU and libstdc++ with it: linked in, they are 2.4 MB of
 * the agent's 4.4 MB resident set on a VM that never sees XML.  So the
 * library is opened with dlopen the first time a document is read, and
 * xml.c calls it through this table; the prototypes are libxml2's own
 * (__typeof__), so the compiler still checks every call.
 *
 * Included by metadata/xml.c only, after the libxml2 headers. */
#ifndef CKPTD_XMLDL_H
#define CKPTD_XMLDL_H

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "common/common.h"

struct xmldl {
    __typeof__(&xmlInitParser) InitParser;
    __typeof__(&xmlNewParserCtxt) NewParserCtxt;
    __typeof__(&xmlCtxtReadMemory) CtxtReadMemory;
    __typeof__(&xmlStopParser) StopParser;
    __typeof__(&xmlCtxtGetLastError) CtxtGetLastError;
    __typeof__(&xmlFreeParserCtxt) FreeParserCtxt;
    __typeof__(&xmlFreeDoc) FreeDoc;
    __typeof__(&xmlDocGetRootElement) DocGetRootElement;
    __typeof__(&xmlStrEqual) StrEqual;
    __typeof__(&xmlNodeGetContent) NodeGetContent;
    __typeof__(&xmlGetNoNsProp) GetNoNsProp;
    __typeof__(&xmlSetStructuredErrorFunc) SetStructuredErrorFunc;
    __typeof__(&xmlSetGenericErrorFunc) SetGenericErrorFunc;
    __typeof__(&__xmlStructuredError) StructuredError;
    __typeof__(&__xmlStructuredErrorContext) StructuredErrorContext;
    __typeof__(&__xmlGenericError) GenericError;
    __typeof__(&__xmlGenericErrorContext) GenericErrorContext;
    xmlFreeFunc *Free;                  /* libxml2's variable */
};

/* The table, loading libxml2 the first time; NULL with e set when the
 * library cannot be loaded. */
const struct xmldl *xmldl_get(struct ckpt_error *e);

#endif
