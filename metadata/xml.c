/* libvirt's checkpoint and backup XML.
 *
 * Reading: libxml2 builds a tree from memory with the network off; a SAX
 * hook stops the parser at the first DOCTYPE, so no DTD (and so no entity
 * of any kind but the five predefined ones) is ever read.  libxml2's own
 * error printing is switched off for the parse and its first complaint
 * becomes our message.  The tree is then walked by hand: first checked
 * against what libvirt's schemas allow (libvirt validates every checkpoint
 * and backup document and refuses an element its schema does not know),
 * then the elements of known names are read.
 *
 * Writing: the layout virsh prints (two-space indent, attributes in single
 * quotes, the same attribute order as libvirt's formatters). */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

#include "metadata/metadata.h"
#include "metadata/xml.h"
#include "metadata/xmldl.h"

/* Every libxml2 call goes through the table loaded by xmldl_get (read_doc
 * sets X before anything else runs). */
static const struct xmldl *X;
#undef xmlStructuredError
#undef xmlStructuredErrorContext
#undef xmlGenericError
#undef xmlGenericErrorContext
#undef xmlFree
#define xmlInitParser X->InitParser
#define xmlNewParserCtxt X->NewParserCtxt
#define xmlCtxtReadMemory X->CtxtReadMemory
#define xmlStopParser X->StopParser
#define xmlCtxtGetLastError X->CtxtGetLastError
#define xmlFreeParserCtxt X->FreeParserCtxt
#define xmlFreeDoc X->FreeDoc
#define xmlDocGetRootElement X->DocGetRootElement
#define xmlStrEqual X->StrEqual
#define xmlNodeGetContent X->NodeGetContent
#define xmlGetNoNsProp X->GetNoNsProp
#define xmlSetStructuredErrorFunc X->SetStructuredErrorFunc
#define xmlSetGenericErrorFunc X->SetGenericErrorFunc
#define xmlStructuredError (*X->StructuredError())
#define xmlStructuredErrorContext (*X->StructuredErrorContext())
#define xmlGenericError (*X->GenericError())
#define xmlGenericErrorContext (*X->GenericErrorContext())
#define xmlFree (*X->Free)

#define INVALID CKPT_ERR_INVALID_PARAMETER

/* ---------- reading a document ---------- */

struct parse_state {
    bool doctype;           /* a DOCTYPE was met: the parser was stopped */
    bool have_error;
    int line;
    char error[256];        /* libxml2's first error, one line */
};

/* libxml2 2.12 made the error pointers const. */
#if LIBXML_VERSION >= 21200
typedef const xmlError *xml_error_ptr;
#else
typedef xmlErrorPtr xml_error_ptr;
#endif

/* libxml2's structured error handler, for this parse only. */
static void
on_error(void *data, xml_error_ptr err)
{
    struct parse_state *st = data;
    if (st->have_error || err == NULL || err->level == XML_ERR_WARNING)
        return;
    st->have_error = true;
    st->line = err->line;
    snprintf(st->error, sizeof st->error, "%s",
             err->message ? err->message : "unknown XML error");
    size_t n = strlen(st->error);
    while (n > 0 && (st->error[n - 1] == '\n' || st->error[n - 1] == ' '))
        st->error[--n] = '\0';
}

/* Some libxml2 paths print through the generic handler directly. */
static void
on_generic(void *ctx, const char *msg, ...)
{
    (void) ctx;
    (void) msg;
}

/* SAX internalSubset/externalSubset: called as soon as "<!DOCTYPE name"
 * has been read, before any declaration in it.  We refuse DTDs outright,
 * which rules out external entities and entity expansion bombs alike. */
static void
on_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id,
           const xmlChar *system_id)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_state *st = ctxt->_private;
    (void) name;
    (void) external_id;
    (void) system_id;
    if (st)
        st->doctype = true;
    xmlStopParser(ctxt);
}

static inline void
cleanup_doc(xmlDocPtr *d)
{
    if (*d)
        xmlFreeDoc(*d);
}
#define CLEANUP_DOC __attribute__((cleanup(cleanup_doc)))

/* Parses xml[0..len) into a tree.  NULL with e set on any failure. */
static xmlDocPtr
read_doc(const char *xml, size_t len, struct ckpt_error *e)
{
    if (len > META_XML_MAX_BYTES) {
        ckpt_fail(e, INVALID, "XML document of %zu bytes is over the limit of %d bytes",
                  len, META_XML_MAX_BYTES);
        return NULL;
    }
    if (xml == NULL && len > 0) {
        ckpt_fail(e, INVALID, "no XML document");
        return NULL;
    }
    if (xml == NULL)
        xml = "";
    if (!(X = xmldl_get(e)))
        return NULL;
    struct parse_state st = { 0 };
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        log_error("out of memory creating an XML parser");
        abort();
    }
    ctxt->_private = &st;
    ctxt->sax->internalSubset = on_doctype;
    ctxt->sax->externalSubset = on_doctype;

    /* Never XML_PARSE_NOENT (substitute entities) nor XML_PARSE_DTDLOAD;
     * XML_PARSE_HUGE stays off so libxml2's own limits (depth, text
     * node size) apply too. */
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
#if LIBXML_VERSION >= 21300
    opts |= XML_PARSE_NO_XXE;
#endif

    void *old_sctx = xmlStructuredErrorContext;
    xmlStructuredErrorFunc old_s = xmlStructuredError;
    void *old_gctx = xmlGenericErrorContext;
    xmlGenericErrorFunc old_g = xmlGenericError;
    xmlSetStructuredErrorFunc(&st, on_error);
    xmlSetGenericErrorFunc(NULL, on_generic);

    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, xml, (int) len, NULL, NULL, opts);

    xmlSetStructuredErrorFunc(old_sctx, old_s);
    xmlSetGenericErrorFunc(old_gctx, old_g);

    if (!st.have_error) {
        /* In case the handler was bypassed: the context keeps the last. */
        xml_error_ptr last = xmlCtxtGetLastError(ctxt);
        if (last && last->code != XML_ERR_OK)
            on_error(&st, last);
    }
    xmlFreeParserCtxt(ctxt);

    if (st.doctype || (doc && (doc->intSubset || doc->extSubset))) {
        if (doc)
            xmlFreeDoc(doc);
        ckpt_fail(e, INVALID, "DTDs are not accepted: the XML document has a DOCTYPE");
        return NULL;
    }
    if (doc == NULL) {
        if (st.have_error)
            ckpt_fail(e, INVALID, "malformed XML (line %d): %s", st.line, st.error);
        else
            ckpt_fail(e, INVALID, "malformed XML");
        return NULL;
    }
    if (xmlDocGetRootElement(doc) == NULL) {
        xmlFreeDoc(doc);
        ckpt_fail(e, INVALID, "the XML document has no root element");
        return NULL;
    }
    return doc;
}

/* ---------- reading elements and attributes ---------- */

static bool
is_elem(xmlNodePtr n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && n->ns == NULL &&
           xmlStrEqual(n->name, BAD_CAST name);
}

/* The root must be one of the names given, without a namespace.
 * Returns the index of the name it matched, or -1 with e set. */
static int
check_root(xmlNodePtr root, const char *a, const char *b, struct ckpt_error *e)
{
    const char *got = (const char *) root->name;
    if (root->ns != NULL) {
        ckpt_fail(e, INVALID, "root element <%.64s> has a namespace ('%.128s'); "
                  "libvirt's documents have none", got,
                  root->ns->href ? (const char *) root->ns->href : "");
        return -1;
    }
    if (strcmp(got, a) == 0)
        return 0;
    if (b && strcmp(got, b) == 0)
        return 1;
    if (b)
        ckpt_fail(e, INVALID, "root element is <%.64s>, expected <%s> or <%s>", got, a, b);
    else
        ckpt_fail(e, INVALID, "root element is <%.64s>, expected <%s>", got, a);
    return -1;
}

/* The child element `name` of parent, NULL when absent.  -1 (e set) when
 * there are two: the schemas allow each known element once. */
static int
child(xmlNodePtr parent, const char *name, xmlNodePtr *out, struct ckpt_error *e)
{
    *out = NULL;
    for (xmlNodePtr n = parent->children; n; n = n->next) {
        if (!is_elem(n, name))
            continue;
        if (*out) {
            ckpt_fail(e, INVALID, "<%s> has more than one <%s>", (const char *) parent->name, name);
            return -1;
        }
        *out = n;
    }
    return 0;
}

/* All the text inside element n; NULL when n is NULL or the text is empty
 * (libvirt reads an empty element as an absent one). */
static char *
text_of(xmlNodePtr n)
{
    if (n == NULL)
        return NULL;
    xmlChar *t = xmlNodeGetContent(n);
    char *s = t && *t ? xstrdup((const char *) t) : NULL;
    xmlFree(t);
    return s;
}

/* Attribute `name` without a namespace, or NULL. */
static char *
attr_of(xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    if (v == NULL)
        return NULL;
    char *s = xstrdup((const char *) v);
    xmlFree(v);
    return s;
}

static bool
xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A decimal number <= max, XML whitespace allowed around it (schema
 * datatypes collapse it); no sign. */
static bool
parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    while (xml_space(*s))
        s++;
    if (*s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned) (*s - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    while (xml_space(*s))
        s++;
    if (*s)
        return false;
    *out = v;
    return true;
}

/* A checkpoint name read from the document: NULL or valid. */
static int
check_name(const char *what, const char *name, struct ckpt_error *e)
{
    if (name && !meta_name_valid(name)) {
        ckpt_fail(e, INVALID, "%s '%.64s%s' is not a valid checkpoint name "
                  "(1 to %d of A-Z a-z 0-9 _ - ., not starting with '.')",
                  what, name, strlen(name) > 64 ? "..." : "", META_NAME_MAX);
        return -1;
    }
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The first name given twice among names[0..n) (NULLs skipped), or NULL. */
static const char *
find_duplicate(const char **names, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (names[i])
            names[m++] = names[i];
    qsort(names, m, sizeof *names, cmp_str);
    for (size_t i = 1; i < m; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            return names[i];
    return NULL;
}

/* <disks> may name a disk once: disks is an array of n structs of `size`
 * bytes whose first member is the disk's name (both disk structs are). */
_Static_assert(offsetof(struct meta_xml_disk, name) == 0, "name first");
_Static_assert(offsetof(struct meta_xml_backup_disk, name) == 0, "name first");

static int
check_disks_unique(const void *disks, size_t n, size_t size, struct ckpt_error *e)
{
    CLEANUP_FREE const char **names = xcalloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = *(char *const *) ((const char *) disks + i * size);
    const char *dup = find_duplicate(names, n);
    if (dup) {
        ckpt_fail(e, INVALID, "disk '%.64s' is listed twice in <disks>", dup);
        return -1;
    }
    return 0;
}

static size_t
count_children(xmlNodePtr parent, const char *name)
{
    size_t n = 0;
    for (xmlNodePtr c = parent->children; c; c = c->next)
        if (is_elem(c, name))
            n++;
    return n;
}

/* libvirt validates every checkpoint and backup document against its
 * schema (domaincheckpoint.rng, domainbackup.rng) and refuses one with an
 * element the schema does not allow there.  Each known element lists the
 * children it may have (NULL: none, only text or attributes); <domain>
 * is the one whose content is left to domain.rng, i.e. not looked at. */
static int
check_children(xmlNodePtr parent, const char *const *known, struct ckpt_error *e)
{
    for (xmlNodePtr n = parent->children; n; n = n->next) {
        bool ok = false;
        if (n->type != XML_ELEMENT_NODE)
            continue;               /* text, comments, CDATA, PIs */
        for (const char *const *k = known; k && *k && !ok; k++)
            ok = is_elem(n, *k);
        if (ok)
            continue;
        if (n->ns)
            ckpt_fail(e, INVALID, "element <%.64s:%.64s> (namespace '%.128s') is not "
                      "allowed in <%s>: the document does not validate against "
                      "libvirt's schema",
                      n->ns->prefix ? (const char *) n->ns->prefix : "",
                      (const char *) n->name,
                      n->ns->href ? (const char *) n->ns->href : "",
                      (const char *) parent->name);
        else
            ckpt_fail(e, INVALID, "element <%.64s> is not allowed in <%s>: the "
                      "document does not validate against libvirt's schema",
                      (const char *) n->name, (const char *) parent->name);
        return -1;
    }
    return 0;
}

/* check_children of every element of `name` under parent. */
static int
check_each_child(xmlNodePtr parent, const char *name, const char *const *known,
                 struct ckpt_error *e)
{
    for (xmlNodePtr n = parent->children; n; n = n->next)
        if (is_elem(n, name) && check_children(n, known, e) < 0)
            return -1;
    return 0;
}

/* ---------- <domaincheckpoint> ---------- */

static const char *const ckpt_children[] = {
    "name", "description", "parent", "creationTime", "disks", "domain", NULL
};
static const char *const only_name[] = { "name", NULL };
static const char *const only_disk[] = { "disk", NULL };
static const char *const nothing[] = { NULL };

/* Everything of a <domaincheckpoint> but <domain>'s content. */
static int
check_ckpt_schema(xmlNodePtr root, struct ckpt_error *e)
{
    static const char *const leaves[] = { "name", "description", "creationTime", NULL };
    if (check_children(root, ckpt_children, e) < 0)
        return -1;
    for (const char *const *l = leaves; *l; l++)
        if (check_each_child(root, *l, nothing, e) < 0)
            return -1;
    if (check_each_child(root, "parent", only_name, e) < 0 ||
        check_each_child(root, "disks", only_disk, e) < 0)
        return -1;
    for (xmlNodePtr p = root->children; p; p = p->next) {
        if (is_elem(p, "parent") && check_each_child(p, "name", nothing, e) < 0)
            return -1;
        if (is_elem(p, "disks") && check_each_child(p, "disk", nothing, e) < 0)
            return -1;
    }
    return 0;
}

static int
parse_ckpt_disk(xmlNodePtr n, struct meta_xml_disk *d, struct ckpt_error *e)
{
    d->name = attr_of(n, "name");
    if (d->name == NULL || *d->name == '\0') {
        ckpt_fail(e, INVALID, "<disk> in <disks> needs a non-empty name= attribute");
        return -1;
    }
    CLEANUP_FREE char *mode = attr_of(n, "checkpoint");
    d->checkpoint = true;               /* absent: 'bitmap', as libvirt reads it */
    if (mode && strcmp(mode, "no") == 0)
        d->checkpoint = false;
    else if (mode && strcmp(mode, "bitmap") != 0) {
        ckpt_fail(e, INVALID, "disk '%.64s': checkpoint='%.64s' is neither 'bitmap' nor 'no'",
                  d->name, mode);
        return -1;
    }
    d->bitmap = attr_of(n, "bitmap");
    CLEANUP_FREE char *size = attr_of(n, "size");
    if (!d->checkpoint && (d->bitmap || size)) {
        ckpt_fail(e, INVALID, "disk '%.64s': bitmap= and size= need checkpoint='bitmap'",
                  d->name);
        return -1;
    }
    if (d->bitmap && (*d->bitmap == '\0' || strlen(d->bitmap) > META_BITMAP_NAME_MAX)) {
        ckpt_fail(e, INVALID, "disk '%.64s': bitmap= must be 1 to %d bytes",
                  d->name, META_BITMAP_NAME_MAX);
        return -1;
    }
    if (size) {
        if (!parse_uint(size, UINT64_MAX, &d->size)) {
            ckpt_fail(e, INVALID, "disk '%.64s': size='%.64s' is not a number of bytes",
                      d->name, size);
            return -1;
        }
        d->has_size = true;
    }
    return 0;
}

static int
parse_ckpt_node(xmlNodePtr root, struct meta_xml_ckpt *c, struct ckpt_error *e)
{
    xmlNodePtr n_name, n_desc, n_parent, n_ctime, n_disks;
    if (check_ckpt_schema(root, e) < 0 ||
        child(root, "name", &n_name, e) < 0 ||
        child(root, "description", &n_desc, e) < 0 ||
        child(root, "parent", &n_parent, e) < 0 ||
        child(root, "creationTime", &n_ctime, e) < 0 ||
        child(root, "disks", &n_disks, e) < 0)
        return -1;

    c->name = text_of(n_name);
    if (check_name("<name>", c->name, e) < 0)
        return -1;
    c->description = text_of(n_desc);
    if (n_parent) {
        xmlNodePtr n_pname;
        if (child(n_parent, "name", &n_pname, e) < 0)
            return -1;
        c->parent = text_of(n_pname);
        if (check_name("<parent><name>", c->parent, e) < 0)
            return -1;
    }
    if (n_ctime) {
        CLEANUP_FREE char *t = text_of(n_ctime);
        uint64_t v;
        if (t == NULL || !parse_uint(t, INT64_MAX, &v)) {
            ckpt_fail(e, INVALID, "<creationTime> '%.64s' is not a number of seconds",
                      t ? t : "");
            return -1;
        }
        c->has_ctime = true;
        c->ctime = (int64_t) v;
    }
    if (n_disks) {
        size_t max = count_children(n_disks, "disk");
        if (max)
            c->disks = xcalloc(max, sizeof *c->disks);
        for (xmlNodePtr n = n_disks->children; n; n = n->next) {
            if (!is_elem(n, "disk"))
                continue;
            if (parse_ckpt_disk(n, &c->disks[c->ndisks++], e) < 0)
                return -1;
        }
        if (check_disks_unique(c->disks, c->ndisks, sizeof *c->disks, e) < 0)
            return -1;
    }
    return 0;
}

int
meta_xml_parse_checkpoint(const char *xml, size_t len, struct meta_xml_ckpt *out,
                          struct ckpt_error *e)
{
    return meta_xml_parse_checkpoint_vm(xml, len, NULL, out, e);
}

int
meta_xml_parse_checkpoint_vm(const char *xml, size_t len, const struct meta_tree *vm,
                             struct meta_xml_ckpt *out, struct ckpt_error *e)
{
    memset(out, 0, sizeof *out);
    CLEANUP_DOC xmlDocPtr doc = read_doc(xml, len, e);
    if (doc == NULL)
        return -1;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (check_root(root, "domaincheckpoint", NULL, e) < 0)
        return -1;
    if (parse_ckpt_node(root, out, e) < 0 || meta_xml_ckpt_resolve_disks(out, vm, e) < 0) {
        meta_xml_ckpt_clear(out);
        return -1;
    }
    return 0;
}

int
meta_xml_parse_checkpoints(const char *xml, size_t len, struct meta_xml_ckpt **out,
                           size_t *n, struct ckpt_error *e)
{
    return meta_xml_parse_checkpoints_vm(xml, len, NULL, out, n, e);
}

int
meta_xml_parse_checkpoints_vm(const char *xml, size_t len, const struct meta_tree *vm,
                              struct meta_xml_ckpt **out, size_t *n, struct ckpt_error *e)
{
    *out = NULL;
    *n = 0;
    CLEANUP_DOC xmlDocPtr doc = read_doc(xml, len, e);
    if (doc == NULL)
        return -1;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int which = check_root(root, "domaincheckpoint", "checkpoints", e);
    if (which < 0)
        return -1;

    if (which == 0) {
        struct meta_xml_ckpt *c = xcalloc(1, sizeof *c);
        if (parse_ckpt_node(root, c, e) < 0 || meta_xml_ckpt_resolve_disks(c, vm, e) < 0) {
            meta_xml_ckpts_free(c, 1);
            return -1;
        }
        *out = c;
        *n = 1;
        return 0;
    }

    static const char *const only_ckpt[] = { "domaincheckpoint", NULL };
    if (check_children(root, only_ckpt, e) < 0)
        return -1;
    size_t max = count_children(root, "domaincheckpoint");
    if (max == 0)
        return 0;                       /* an empty list is a valid export */
    struct meta_xml_ckpt *list = xcalloc(max, sizeof *list);
    size_t got = 0;
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (!is_elem(c, "domaincheckpoint"))
            continue;
        got++;
        if (parse_ckpt_node(c, &list[got - 1], e) < 0 ||
            meta_xml_ckpt_resolve_disks(&list[got - 1], vm, e) < 0) {
            char why[sizeof e->msg];
            snprintf(why, sizeof why, "%s", e->msg);
            ckpt_fail(e, INVALID, "<checkpoints> entry %zu: %s", got, why);
            meta_xml_ckpts_free(list, got);
            return -1;
        }
    }
    CLEANUP_FREE const char **names = xcalloc(got + 1, sizeof *names);
    for (size_t i = 0; i < got; i++)
        names[i] = list[i].name;
    const char *dup = find_duplicate(names, got);
    if (dup) {
        ckpt_fail(e, INVALID, "checkpoint '%.64s' appears twice in <checkpoints>", dup);
        meta_xml_ckpts_free(list, got);
        return -1;
    }
    *out = list;
    *n = got;
    return 0;
}

void
meta_xml_ckpt_clear(struct meta_xml_ckpt *c)
{
    free(c->name);
    free(c->description);
    free(c->parent);
    for (size_t i = 0; i < c->ndisks; i++) {
        free(c->disks[i].name);
        free(c->disks[i].bitmap);
    }
    free(c->disks);
    memset(c, 0, sizeof *c);
}

void
meta_xml_ckpts_free(struct meta_xml_ckpt *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++)
        meta_xml_ckpt_clear(&c[i]);
    free(c);
}

static bool
str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

bool
meta_xml_ckpt_equal(const struct meta_xml_ckpt *a, const struct meta_xml_ckpt *b)
{
    if (!str_eq(a->name, b->name) || !str_eq(a->description, b->description) ||
        !str_eq(a->parent, b->parent) || a->has_ctime != b->has_ctime ||
        (a->has_ctime && a->ctime != b->ctime) || a->ndisks != b->ndisks)
        return false;
    for (size_t i = 0; i < a->ndisks; i++) {
        const struct meta_xml_disk *x = &a->disks[i], *y = &b->disks[i];
        if (!str_eq(x->name, y->name) || x->checkpoint != y->checkpoint ||
            !str_eq(x->bitmap, y->bitmap) || x->has_size != y->has_size ||
            (x->has_size && x->size != y->size))
            return false;
    }
    return true;
}

/* ---------- <domainbackup> ---------- */

static int
parse_server(xmlNodePtr s, struct meta_xml_backup *b, struct ckpt_error *e)
{
    CLEANUP_FREE char *transport = attr_of(s, "transport");
    CLEANUP_FREE char *tls = attr_of(s, "tls");
    CLEANUP_FREE char *port = attr_of(s, "port");
    b->host = attr_of(s, "name");
    b->socket = attr_of(s, "socket");

    if (transport == NULL || strcmp(transport, "tcp") == 0) {
        b->transport = xstrdup("tcp");
        if (b->host == NULL || *b->host == '\0') {
            ckpt_fail(e, INVALID, "<server transport='tcp'> needs a name= (host)");
            return -1;
        }
        if (b->socket) {
            ckpt_fail(e, INVALID, "<server transport='tcp'> takes no socket=");
            return -1;
        }
        if (port) {
            uint64_t v;
            if (!parse_uint(port, 65535, &v)) {
                ckpt_fail(e, INVALID, "<server> port='%.64s' is not a TCP port number", port);
                return -1;
            }
            if (v)                      /* libvirt: port 0 means "pick one" */
                b->port = xasprintf("%" PRIu64, v);
        }
    } else if (strcmp(transport, "unix") == 0) {
        b->transport = xstrdup("unix");
        if (b->socket == NULL || b->socket[0] != '/') {
            ckpt_fail(e, INVALID, "<server transport='unix'> needs an absolute socket= path");
            return -1;
        }
        if (b->host || port) {
            ckpt_fail(e, INVALID, "<server transport='unix'> takes no name= or port=");
            return -1;
        }
    } else {
        ckpt_fail(e, INVALID, "<server> transport='%.64s' is not supported "
                  "(only 'tcp' and 'unix')", transport);
        return -1;
    }

    if (tls && strcmp(tls, "yes") == 0)
        b->tls = true;
    else if (tls && strcmp(tls, "no") != 0) {
        ckpt_fail(e, INVALID, "<server> tls='%.64s' is neither 'yes' nor 'no'", tls);
        return -1;
    }
    return 0;
}

/* A non-empty attribute, or absent; "" is an error. */
static int
nonempty_attr(xmlNodePtr n, const char *disk, const char *name, char **out,
              struct ckpt_error *e)
{
    *out = attr_of(n, name);
    if (*out && **out == '\0') {
        ckpt_fail(e, INVALID, "disk '%.64s': %s= must not be empty", disk, name);
        return -1;
    }
    return 0;
}

static int
parse_backup_disk(xmlNodePtr n, bool pull, struct meta_xml_backup_disk *d,
                  struct ckpt_error *e)
{
    d->name = attr_of(n, "name");
    if (d->name == NULL || *d->name == '\0') {
        ckpt_fail(e, INVALID, "<disk> in <disks> needs a non-empty name= attribute");
        return -1;
    }
    CLEANUP_FREE char *backup = attr_of(n, "backup");
    d->backup = true;
    if (backup && strcmp(backup, "no") == 0)
        d->backup = false;
    else if (backup && strcmp(backup, "yes") != 0) {
        ckpt_fail(e, INVALID, "disk '%.64s': backup='%.64s' is neither 'yes' nor 'no'",
                  d->name, backup);
        return -1;
    }
    if (!d->backup)
        return 0;                       /* libvirt reads nothing else then */

    if (pull && (nonempty_attr(n, d->name, "exportname", &d->exportname, e) < 0 ||
                 nonempty_attr(n, d->name, "exportbitmap", &d->exportbitmap, e) < 0))
        return -1;

    CLEANUP_FREE char *mode = attr_of(n, "backupmode");
    if (mode && strcmp(mode, "full") == 0)
        d->backupmode = META_XML_BACKUPMODE_FULL;
    else if (mode && strcmp(mode, "incremental") == 0)
        d->backupmode = META_XML_BACKUPMODE_INCREMENTAL;
    else if (mode) {
        ckpt_fail(e, INVALID, "disk '%.64s': backupmode='%.64s' is neither 'full' "
                  "nor 'incremental'", d->name, mode);
        return -1;
    }
    d->incremental = attr_of(n, "incremental");
    if (d->incremental && !meta_name_valid(d->incremental)) {
        ckpt_fail(e, INVALID, "disk '%.64s': incremental='%.64s' is not a valid checkpoint name",
                  d->name, d->incremental);
        return -1;
    }

    CLEANUP_FREE char *type = attr_of(n, "type");
    if (type && strcmp(type, "block") == 0)
        d->block = true;
    else if (type && strcmp(type, "file") != 0) {
        ckpt_fail(e, INVALID, "disk '%.64s': type='%.64s' is neither 'file' nor 'block'",
                  d->name, type);
        return -1;
    }

    xmlNodePtr n_driver, n_store;
    const char *store = pull ? "scratch" : "target";
    if (child(n, "driver", &n_driver, e) < 0 || child(n, store, &n_store, e) < 0)
        return -1;
    if (n_driver) {
        d->driver = attr_of(n_driver, "type");
        if (d->driver == NULL || *d->driver == '\0') {
            ckpt_fail(e, INVALID, "disk '%.64s': <driver> needs a type=", d->name);
            return -1;
        }
        if (pull && strcmp(d->driver, "qcow2") != 0) {
            ckpt_fail(e, INVALID, "disk '%.64s': <driver type='%.64s'>: a pull backup's "
                      "scratch is qcow2", d->name, d->driver);
            return -1;
        }
    }
    if (n_store) {
        const char *key = d->block ? "dev" : "file";
        char *path = attr_of(n_store, key);
        if (path == NULL || path[0] != '/') {
            free(path);
            ckpt_fail(e, INVALID, "disk '%.64s': <%s> needs an absolute %s= path",
                      d->name, store, key);
            return -1;
        }
        if (pull)
            d->scratch = path;
        else
            d->target = path;
        d->encryption = count_children(n_store, "encryption") > 0;
    }
    return 0;
}

/* As check_ckpt_schema, for <domainbackup>: a pull disk keeps its
 * scratch in <scratch>, a push disk writes to <target>; their content
 * (<seclabel>, <encryption>) belongs to libvirt's storage schema. */
static int
check_backup_schema(xmlNodePtr root, bool pull, struct ckpt_error *e)
{
    static const char *const top[] = { "incremental", "server", "disks", NULL };
    static const char *const pull_disk[] = { "driver", "scratch", NULL };
    static const char *const push_disk[] = { "driver", "target", NULL };
    static const char *const store[] = { "seclabel", "encryption", NULL };
    if (check_children(root, top, e) < 0 ||
        check_each_child(root, "incremental", nothing, e) < 0 ||
        check_each_child(root, "server", nothing, e) < 0 ||
        check_each_child(root, "disks", only_disk, e) < 0)
        return -1;
    for (xmlNodePtr ds = root->children; ds; ds = ds->next) {
        if (!is_elem(ds, "disks"))
            continue;
        for (xmlNodePtr d = ds->children; d; d = d->next) {
            if (!is_elem(d, "disk"))
                continue;
            if (check_children(d, pull ? pull_disk : push_disk, e) < 0 ||
                check_each_child(d, "driver", nothing, e) < 0 ||
                check_each_child(d, pull ? "scratch" : "target", store, e) < 0)
                return -1;
        }
    }
    return 0;
}

static int
parse_backup_node(xmlNodePtr root, struct meta_xml_backup *b, struct ckpt_error *e)
{
    CLEANUP_FREE char *mode = attr_of(root, "mode");
    b->pull = false;                    /* libvirt's default is push */
    if (mode && strcmp(mode, "pull") == 0)
        b->pull = true;
    else if (mode && strcmp(mode, "push") != 0) {
        ckpt_fail(e, INVALID, "<domainbackup> mode='%.64s' is neither 'push' nor 'pull'", mode);
        return -1;
    }

    xmlNodePtr n_inc, n_server, n_disks;
    if (check_backup_schema(root, b->pull, e) < 0 ||
        child(root, "incremental", &n_inc, e) < 0 ||
        child(root, "server", &n_server, e) < 0 ||
        child(root, "disks", &n_disks, e) < 0)
        return -1;

    b->incremental = text_of(n_inc);
    if (check_name("<incremental>", b->incremental, e) < 0)
        return -1;
    if (n_server) {
        if (!b->pull) {
            ckpt_fail(e, INVALID, "<server> needs <domainbackup mode='pull'>");
            return -1;
        }
        if (parse_server(n_server, b, e) < 0)
            return -1;
    }
    if (n_disks) {
        size_t max = count_children(n_disks, "disk");
        if (max)
            b->disks = xcalloc(max, sizeof *b->disks);
        for (xmlNodePtr n = n_disks->children; n; n = n->next) {
            if (!is_elem(n, "disk"))
                continue;
            if (parse_backup_disk(n, b->pull, &b->disks[b->ndisks++], e) < 0)
                return -1;
        }
        if (check_disks_unique(b->disks, b->ndisks, sizeof *b->disks, e) < 0)
            return -1;
    }
    return 0;
}

int
meta_xml_parse_backup(const char *xml, size_t len, struct meta_xml_backup *out,
                      struct ckpt_error *e)
{
    return meta_xml_parse_backup_vm(xml, len, NULL, out, e);
}

int
meta_xml_parse_backup_vm(const char *xml, size_t len, const struct meta_tree *vm,
                         struct meta_xml_backup *out, struct ckpt_error *e)
{
    memset(out, 0, sizeof *out);
    CLEANUP_DOC xmlDocPtr doc = read_doc(xml, len, e);
    if (doc == NULL)
        return -1;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (check_root(root, "domainbackup", NULL, e) < 0)
        return -1;
    if (parse_backup_node(root, out, e) < 0 || meta_xml_backup_resolve_disks(out, vm, e) < 0) {
        meta_xml_backup_clear(out);
        return -1;
    }
    return 0;
}

void
meta_xml_backup_clear(struct meta_xml_backup *b)
{
    free(b->incremental);
    free(b->transport);
    free(b->socket);
    free(b->host);
    free(b->port);
    for (size_t i = 0; i < b->ndisks; i++) {
        struct meta_xml_backup_disk *d = &b->disks[i];
        free(d->name);
        free(d->exportname);
        free(d->exportbitmap);
        free(d->scratch);
        free(d->target);
        free(d->driver);
        free(d->incremental);
    }
    free(b->disks);
    memset(b, 0, sizeof *b);
}

bool
meta_xml_backup_equal(const struct meta_xml_backup *a, const struct meta_xml_backup *b)
{
    if (a->pull != b->pull || !str_eq(a->incremental, b->incremental) ||
        !str_eq(a->transport, b->transport) || !str_eq(a->socket, b->socket) ||
        !str_eq(a->host, b->host) || !str_eq(a->port, b->port) || a->tls != b->tls ||
        a->ndisks != b->ndisks)
        return false;
    for (size_t i = 0; i < a->ndisks; i++) {
        const struct meta_xml_backup_disk *x = &a->disks[i], *y = &b->disks[i];
        if (!str_eq(x->name, y->name) || x->backup != y->backup ||
            !str_eq(x->exportname, y->exportname) ||
            !str_eq(x->exportbitmap, y->exportbitmap) || !str_eq(x->scratch, y->scratch) ||
            x->block != y->block || !str_eq(x->target, y->target) ||
            !str_eq(x->driver, y->driver) || x->backupmode != y->backupmode ||
            !str_eq(x->incremental, y->incremental))
            return false;
    }
    return true;
}

/* ---------- disks named by their source file ---------- */

/* One disk name: a path equal to a disk's filename becomes its name. */
static void
resolve_names(char **name, const struct meta_tree *vm)
{
    if (!*name || (*name)[0] != '/')
        return;             /* a device id or node name never starts with '/' */
    for (size_t d = 0; d < vm->ndisks; d++) {
        const struct meta_disk *disk = &vm->disks[d];
        if (disk->filename && disk->disk && strcmp(disk->filename, *name) == 0) {
            free(*name);
            *name = xstrdup(disk->disk);
            return;
        }
    }
}

int
meta_xml_ckpt_resolve_disks(struct meta_xml_ckpt *c, const struct meta_tree *vm,
                            struct ckpt_error *e)
{
    if (!vm)
        return 0;
    for (size_t i = 0; i < c->ndisks; i++)
        resolve_names(&c->disks[i].name, vm);
    return check_disks_unique(c->disks, c->ndisks, sizeof *c->disks, e);
}

int
meta_xml_backup_resolve_disks(struct meta_xml_backup *b, const struct meta_tree *vm,
                              struct ckpt_error *e)
{
    if (!vm)
        return 0;
    for (size_t i = 0; i < b->ndisks; i++)
        resolve_names(&b->disks[i].name, vm);
    return check_disks_unique(b->disks, b->ndisks, sizeof *b->disks, e);
}

/* ---------- writing ---------- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 512;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
sb_puts(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void
sb_indent(struct sbuf *b, int n)
{
    static const char spaces[] = "                ";
    while (n > 0) {
        int k = n < (int) sizeof spaces - 1 ? n : (int) sizeof spaces - 1;
        sb_add(b, spaces, (size_t) k);
        n -= k;
    }
}

/* The UTF-8 sequence at s: its length when well formed (not overlong, no
 * surrogate, at most U+10FFFF), else 0; *ok tells whether XML 1.0 allows
 * the character it encodes. */
static size_t
utf8_len(const unsigned char *s, bool *ok)
{
    uint32_t c;
    size_t n;
    if (s[0] < 0x80) {
        c = s[0];
        n = 1;
    } else if ((s[0] & 0xE0) == 0xC0) {
        c = s[0] & 0x1F;
        n = 2;
    } else if ((s[0] & 0xF0) == 0xE0) {
        c = s[0] & 0x0F;
        n = 3;
    } else if ((s[0] & 0xF8) == 0xF0) {
        c = s[0] & 0x07;
        n = 4;
    } else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)      /* also stops at the NUL */
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (c < min[n] || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
        return 0;
    *ok = c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xFFFD && c != 0xFFFE) ||
          c >= 0x10000;
    return n;
}

/* s escaped for text or for a single-quoted attribute value.  What XML
 * cannot carry becomes U+FFFD: one per byte of malformed UTF-8, one per
 * character XML 1.0 forbids (controls, U+FFFE, U+FFFF). */
static void
sb_escape(struct sbuf *b, const char *s, bool attr)
{
    const unsigned char *p = (const unsigned char *) s;
    while (*p) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': rep = "&apos;"; break;
        case '"': rep = "&quot;"; break;
        case '\r': rep = "&#13;"; break;  /* a parser would turn it into \n */
        case '\n': rep = attr ? "&#10;" : NULL; break;   /* attribute values */
        case '\t': rep = attr ? "&#9;" : NULL; break;    /* are normalized */
        }
        if (rep) {
            sb_puts(b, rep);
            p++;
            continue;
        }
        bool ok = false;
        size_t n = utf8_len(p, &ok);
        if (n == 0) {                   /* each byte of a broken sequence */
            sb_puts(b, "\xEF\xBF\xBD");
            p++;
            continue;
        }
        if (ok)
            sb_add(b, (const char *) p, n);
        else                            /* one per character XML forbids */
            sb_puts(b, "\xEF\xBF\xBD");
        p += n;
    }
}

/* ind spaces, <tag>text</tag>, newline; nothing for NULL or "". */
static void
sb_text_elem(struct sbuf *b, int ind, const char *tag, const char *text)
{
    if (text == NULL || *text == '\0')
        return;
    sb_indent(b, ind);
    sb_puts(b, "<");
    sb_puts(b, tag);
    sb_puts(b, ">");
    sb_escape(b, text, false);
    sb_puts(b, "</");
    sb_puts(b, tag);
    sb_puts(b, ">\n");
}

/* " key='value'"; nothing for NULL. */
static void
sb_attr(struct sbuf *b, const char *key, const char *value)
{
    if (value == NULL)
        return;
    sb_puts(b, " ");
    sb_puts(b, key);
    sb_puts(b, "='");
    sb_escape(b, value, true);
    sb_puts(b, "'");
}

static void
format_ckpt(struct sbuf *b, const struct meta_xml_ckpt *c, int ind)
{
    char num[32];
    sb_indent(b, ind);
    sb_puts(b, "<domaincheckpoint>\n");
    sb_text_elem(b, ind + 2, "name", c->name);
    sb_text_elem(b, ind + 2, "description", c->description);
    if (c->parent && *c->parent) {
        sb_indent(b, ind + 2);
        sb_puts(b, "<parent>\n");
        sb_text_elem(b, ind + 4, "name", c->parent);
        sb_indent(b, ind + 2);
        sb_puts(b, "</parent>\n");
    }
    if (c->has_ctime) {
        snprintf(num, sizeof num, "%" PRId64, c->ctime);
        sb_text_elem(b, ind + 2, "creationTime", num);
    }
    if (c->ndisks) {
        sb_indent(b, ind + 2);
        sb_puts(b, "<disks>\n");
        for (size_t i = 0; i < c->ndisks; i++) {
            const struct meta_xml_disk *d = &c->disks[i];
            if (d->name == NULL)        /* as libvirt: a disk without a name is skipped */
                continue;
            sb_indent(b, ind + 4);
            sb_puts(b, "<disk");
            sb_attr(b, "name", d->name);
            sb_attr(b, "checkpoint", d->checkpoint ? "bitmap" : "no");
            if (d->checkpoint) {
                sb_attr(b, "bitmap", d->bitmap);
                if (d->has_size) {
                    snprintf(num, sizeof num, "%" PRIu64, d->size);
                    sb_attr(b, "size", num);
                }
            }
            sb_puts(b, "/>\n");
        }
        sb_indent(b, ind + 2);
        sb_puts(b, "</disks>\n");
    }
    sb_indent(b, ind);
    sb_puts(b, "</domaincheckpoint>\n");
}

char *
meta_xml_format_checkpoint(const struct meta_xml_ckpt *c)
{
    struct sbuf b = { 0 };
    format_ckpt(&b, c, 0);
    return b.p;
}

char *
meta_xml_format_checkpoints(const struct meta_xml_ckpt *c, size_t n)
{
    struct sbuf b = { 0 };
    if (n == 0) {
        sb_puts(&b, "<checkpoints/>\n");
        return b.p;
    }
    sb_puts(&b, "<checkpoints>\n");
    for (size_t i = 0; i < n; i++)
        format_ckpt(&b, &c[i], 2);
    sb_puts(&b, "</checkpoints>\n");
    return b.p;
}

static void
format_backup_disk(struct sbuf *b, const struct meta_xml_backup_disk *d, bool pull)
{
    sb_indent(b, 4);
    sb_puts(b, "<disk");
    sb_attr(b, "name", d->name);
    sb_attr(b, "backup", d->backup ? "yes" : "no");
    if (!d->backup) {
        sb_puts(b, "/>\n");
        return;
    }
    sb_attr(b, "type", d->block ? "block" : "file");
    if (d->backupmode == META_XML_BACKUPMODE_FULL)
        sb_attr(b, "backupmode", "full");
    else if (d->backupmode == META_XML_BACKUPMODE_INCREMENTAL)
        sb_attr(b, "backupmode", "incremental");
    sb_attr(b, "incremental", d->incremental);
    if (pull) {
        sb_attr(b, "exportname", d->exportname);
        sb_attr(b, "exportbitmap", d->exportbitmap);
    }
    const char *store = pull ? d->scratch : d->target;
    if (d->driver == NULL && store == NULL) {
        sb_puts(b, "/>\n");
        return;
    }
    sb_puts(b, ">\n");
    if (d->driver) {
        sb_indent(b, 6);
        sb_puts(b, "<driver");
        sb_attr(b, "type", d->driver);
        sb_puts(b, "/>\n");
    }
    if (store) {
        sb_indent(b, 6);
        sb_puts(b, pull ? "<scratch" : "<target");
        sb_attr(b, d->block ? "dev" : "file", store);
        sb_puts(b, "/>\n");
    }
    sb_indent(b, 4);
    sb_puts(b, "</disk>\n");
}

char *
meta_xml_format_backup(const struct meta_xml_backup *bk)
{
    struct sbuf b = { 0 };
    sb_puts(&b, "<domainbackup");
    sb_attr(&b, "mode", bk->pull ? "pull" : "push");
    sb_puts(&b, ">\n");
    sb_text_elem(&b, 2, "incremental", bk->incremental);
    if (bk->pull && bk->transport) {
        bool unix_socket = strcmp(bk->transport, "unix") == 0;
        sb_indent(&b, 2);
        sb_puts(&b, "<server");
        sb_attr(&b, "transport", bk->transport);
        if (bk->tls)
            sb_attr(&b, "tls", "yes");
        if (unix_socket)
            sb_attr(&b, "socket", bk->socket);
        else {
            sb_attr(&b, "name", bk->host);
            sb_attr(&b, "port", bk->port);
        }
        sb_puts(&b, "/>\n");
    }
    if (bk->ndisks) {
        sb_puts(&b, "  <disks>\n");
        for (size_t i = 0; i < bk->ndisks; i++)
            if (bk->disks[i].name)
                format_backup_disk(&b, &bk->disks[i], bk->pull);
        sb_puts(&b, "  </disks>\n");
    }
    sb_puts(&b, "</domainbackup>\n");
    return b.p;
}
